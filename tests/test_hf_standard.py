"""Every student the engine can produce exports as a standard BERT that transformers loads with equal outputs.

Random whole-head and per-head-dim masks on a tiny teacher are compacted (`pruning.compact`), exported by
default (`hf.export`), and loaded by `AutoModelForMaskedLM`, `AutoModel` and `pipeline("fill-mask")`: no
missing weights, logits / hidden states / pooler equal to jaxdistill's within 1e-5.
"""
import json
import os

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from jaxdistill import pruning
from jaxdistill.errors import ModelError
from jaxdistill.models import Bert, hf, init_params
from jaxdistill.models.standard_bert import standard_heads
from tiny import tiny_config, write_tiny_tokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

N, H, DH, F, D = 2, 4, 8, 48, 32  # the tiny teacher: layers, heads, head dim, FFN, hidden
# name -> (hidden kept, heads kept, dims kept per head, FFN kept); None = the unpruned teacher
CASES = {
    "unpruned": None,
    "head_dims": (24, 4, 3, 40),        # 4 x 3 != 24: each head padded 3 -> 6, scale 1/sqrt(8) folded
    "whole_heads": (32, 3, 8, 48),      # 3 heads do not divide 32: one zero head added, no fold
    "heads_and_dims": (20, 3, 5, 30),   # both: 4 heads x 5, fold sqrt(5 / 8)
}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    tok = str(tmp_path_factory.mktemp("tok"))
    config = tiny_config(vocab_size=write_tiny_tokenizer(tok))
    params = init_params(config, jax.random.key(1))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))  # non-trivial LayerNorms and biases
    params = jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    return config, jax.tree.map(np.asarray, params), tok


def random_masks(rng, hidden, heads, dims, ffn):
    """Uniform-width masks keeping `heads` random heads with `dims` random dimensions each, per layer."""
    m = {"hidden": np.zeros(D, np.float32), "attn": np.zeros((N, H, DH), np.float32),
         "ffn": np.zeros((N, F), np.float32)}
    m["hidden"][rng.choice(D, hidden, replace=False)] = 1
    for i in range(N):
        for h in rng.choice(H, heads, replace=False):
            m["attn"][i, h, rng.choice(DH, dims, replace=False)] = 1
        m["ffn"][i, rng.choice(F, ffn, replace=False)] = 1
    return m


def _inputs(vocab):
    rng = np.random.default_rng(0)
    ids = rng.integers(5, vocab, size=(3, 11))
    mask = np.ones((3, 11), np.int64)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    types = np.zeros((3, 11), np.int64)
    types[0, 6:] = 1
    return ids, mask, types


def _torch(ids, mask, types):
    return dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types))


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_student_exports_as_standard_bert_with_equal_outputs(teacher, case, tmp_path):
    config, params, tok = teacher
    masks = None if CASES[case] is None else random_masks(np.random.default_rng(len(case)), *CASES[case])
    student_cfg, student = (config, params) if masks is None else pruning.compact(config, params, masks)
    out = str(tmp_path / case)
    info = hf.export(student_cfg, student, out, tokenizer_from=tok)
    saved = json.load(open(os.path.join(out, "config.json")))
    assert info["format"] == "hf" and saved["model_type"] == "bert" and "head_dim" not in saved
    a = H * DH if masks is None else CASES[case][1] * CASES[case][2]
    d = student_cfg.hidden_size
    assert info["padding_params"] == N * (4 * d * (d - a) + 3 * (d - a))  # zero Q/K/V columns + output rows
    assert info["params"] == sum(np.size(x) for x in jax.tree.leaves(student)) + info["padding_params"]

    ids, mask, types = _inputs(config.vocab_size)
    ours = Bert(student_cfg).apply({"params": student}, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types))
    mlm, loaded = transformers.AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True,
                                                                   attn_implementation="eager")
    assert not loaded["missing_keys"] and loaded["unexpected_keys"] <= {"bert.pooler.dense.weight",
                                                                          "bert.pooler.dense.bias"}
    base, loaded = transformers.AutoModel.from_pretrained(out, output_loading_info=True, attn_implementation="eager")
    assert not loaded["missing_keys"], loaded  # the pooler is kept
    assert all(k.startswith("cls.predictions.") for k in loaded["unexpected_keys"]), loaded
    with torch.no_grad():
        logits = mlm.eval()(**_torch(ids, mask, types)).logits.numpy()
        encoded = base.eval()(**_torch(ids, mask, types))
    np.testing.assert_allclose(logits, np.asarray(ours.mlm_logits), atol=1e-5, rtol=0)
    np.testing.assert_allclose(encoded.last_hidden_state.numpy(), np.asarray(ours.last_hidden_state), atol=1e-5, rtol=0)
    np.testing.assert_allclose(encoded.pooler_output.numpy(), np.asarray(ours.pooled), atol=1e-5, rtol=0)
    if masks is not None:  # and the masked student the engine trained computes the same (on real tokens)
        masked = Bert(config).apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types),
                                    masks=masks).mlm_logits
        valid = mask.astype(bool)
        np.testing.assert_allclose(logits[valid], np.asarray(masked)[valid], atol=1e-5, rtol=0)

    fill = transformers.pipeline("fill-mask", model=out, top_k=1)
    enc = fill.tokenizer("the [MASK] of the film.", return_tensors="np")
    at = int(np.flatnonzero(enc["input_ids"][0] == fill.tokenizer.mask_token_id)[0])
    ours = Bert(student_cfg).apply({"params": student}, jnp.asarray(enc["input_ids"]))
    assert fill("the [MASK] of the film.")[0]["token"] == int(np.argmax(np.asarray(ours.mlm_logits)[0, at]))


def test_own_format_only_when_asked(teacher, tmp_path):
    config, params, _ = teacher
    student_cfg, student = pruning.compact(config, params, random_masks(np.random.default_rng(3), 24, 4, 3, 40))
    info = hf.export(student_cfg, student, str(tmp_path / "own"), own_format=True)
    assert info["format"] == "jaxdistill" and info["padding_params"] == 0
    assert json.load(open(tmp_path / "own" / "config.json"))["model_type"] == "jaxdistill-bert"
    loaded_cfg, loaded = hf.load(str(tmp_path / "own"))
    assert loaded_cfg.attention_head_size == 3 and loaded_cfg.scale_dim == 8
    ids, mask, _ = _inputs(config.vocab_size)
    a = Bert(student_cfg).apply({"params": student}, ids, mask).mlm_logits
    b = Bert(loaded_cfg).apply({"params": loaded}, ids, mask).mlm_logits
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_no_standard_form_is_a_clear_error(tmp_path):
    config = tiny_config(hidden_size=16, num_attention_heads=4, head_dim=8)  # 4 x 8 = 32 > 16
    params = init_params(config, jax.random.key(0))
    with pytest.raises(ModelError, match=r"4 heads x 8 dimensions in hidden 16 .*--own-format"):
        hf.export(config, params, str(tmp_path / "x"))
    assert hf.export(config, params, str(tmp_path / "own"), own_format=True)["format"] == "jaxdistill"
    assert standard_heads(256, 12, 16) == (16, 16) and standard_heads(768, 12, 32) == (12, 64)


def test_export_of_boxed_params_from_bert_init(tmp_path):
    config = tiny_config()
    boxed = Bert(config).init({"params": jax.random.key(0)}, jnp.zeros((1, 8), jnp.int32))["params"]
    info = hf.export(config, boxed, str(tmp_path / "boxed"))
    _, loaded = hf.load(str(tmp_path / "boxed"))
    plain = init_params(config, jax.random.key(0))
    assert info["params"] == sum(np.size(x) for x in jax.tree.leaves(plain))
    for x, y in zip(jax.tree.leaves(plain), jax.tree.leaves(loaded)):
        np.testing.assert_array_equal(np.asarray(x), y)


def test_model_card(teacher, tmp_path):
    config, params, _ = teacher
    masks = random_masks(np.random.default_rng(5), 24, 4, 3, 40)
    from jaxdistill.train import export_student
    meta = {"teacher": "bert-base-uncased", "recipe": "homodistil", "steps": 28000, "held_out_kl": 0.1234,
            "command": "jaxdistill distill --config configs/homodistil.py:tiny --workdir runs/tiny"}
    info = export_student(config, params, masks, str(tmp_path / "s"), None, metadata=meta)
    card = (tmp_path / "s" / "README.md").read_text()
    for text in ("bert-base-uncased", "homodistil", "28000", "0.1234", meta["command"], "pipeline_tag: fill-mask",
                 f"{info['params']:,}", f"{info['padding_params']:,}", "zero padding", '"hidden": 24'):
        assert text in card, text
