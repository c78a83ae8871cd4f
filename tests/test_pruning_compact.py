"""HomoDistil masks in the forward pass, compaction, parameter accounting and export of the compacted model."""
import functools

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from jaxdistill import compaction, pruning
from jaxdistill.models import Bert, hf, init_params
from tiny import tiny_config


def _random_masks(rng, config, hidden, ffn, attn, mode="head_dim"):
    """Balanced random masks: `hidden` dims, `ffn` neurons per layer, `attn` dims per head or heads per layer."""
    n, H, dh = config.num_hidden_layers, config.num_attention_heads, config.attention_head_size
    pick = lambda size, k: np.isin(np.arange(size), rng.choice(size, k, replace=False)).astype(np.float32)
    masks = {"hidden": pick(config.hidden_size, hidden),
             "ffn": np.stack([pick(config.intermediate_size, ffn) for _ in range(n)])}
    if mode == "head_dim":
        masks["attn"] = np.stack([np.stack([pick(dh, attn) for _ in range(H)]) for _ in range(n)])
    else:
        masks["attn"] = np.stack([np.repeat(pick(H, attn)[:, None], dh, 1) for _ in range(n)])
    return {k: jnp.asarray(v) for k, v in masks.items()}


def _batch(rng, config, B=3, L=10):
    ids = rng.integers(1, config.vocab_size, (B, L)).astype(np.int32)
    att = np.ones((B, L), np.int32)
    att[1, 7:] = 0
    att[2, 4:] = 0
    tt = (np.arange(L)[None] >= 5).astype(np.int32).repeat(B, 0)
    return jnp.asarray(ids), jnp.asarray(att), jnp.asarray(tt)


def _fields(out):
    names = ("last_hidden_state", "pooled", "mlm_logits", "logits")
    res = {n: getattr(out, n) for n in names if getattr(out, n) is not None}
    for n in ("hidden_states", "attention_scores", "attention_probs", "queries", "keys", "values"):
        for i, x in enumerate(getattr(out, n) or ()):
            res[f"{n}[{i}]"] = x
    return res


@pytest.mark.parametrize("jit", [False, True])
def test_all_ones_masks_are_bit_identical_to_unmasked_model(jit):
    """Op by op the all-ones masked model is bit-identical. Under jit, XLA CPU may emit a fused reduction
    differently for the two graphs at some tiny shapes (hidden 32: <= 1 ulp-level, ~5e-7); at real sizes
    (MiniLM, below) the jitted outputs are bit-identical too."""
    config = tiny_config(num_labels=3)
    params = init_params(config, jax.random.key(1))
    ids, att, tt = _batch(np.random.default_rng(0), config)
    fwd = lambda p, m, *batch: Bert(config).apply({"params": p}, *batch, masks=m, output_intermediates=True)
    fwd = jax.jit(fwd) if jit else fwd
    plain, masked = fwd(params, None, ids, att, tt), fwd(params, pruning.init_masks(config), ids, att, tt)
    a, b = _fields(plain), _fields(masked)
    assert a.keys() == b.keys() and len(a) > 10
    for k in a:
        if jit:
            np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), atol=1e-6, rtol=0, err_msg=k)
        else:
            assert np.array_equal(np.asarray(a[k]), np.asarray(b[k])), k


def test_all_ones_masks_bit_identical_on_minilm(minilm, minilm_batch):
    """Jitted, on the real model: all-ones masks give bit-identical MLM logits."""
    config, params = minilm
    enc = minilm_batch
    plain, ones = _run(config, params, enc), _run(config, params, enc, pruning.init_masks(config))
    assert np.array_equal(np.asarray(plain.mlm_logits), np.asarray(ones.mlm_logits))


@pytest.mark.parametrize("mode", ["head_dim", "heads"])
def test_masked_equals_compacted_tiny(mode):
    config = tiny_config(num_labels=2)
    params = init_params(config, jax.random.key(2))
    rng = np.random.default_rng(3)
    masks = _random_masks(rng, config, hidden=20, ffn=30, attn=5 if mode == "head_dim" else 2, mode=mode)
    ids, att, tt = _batch(rng, config)
    masked = Bert(config).apply({"params": params}, ids, att, tt, masks=masks, output_intermediates=True)
    c2, p2 = pruning.compact(config, params, masks)
    dense = Bert(c2).apply({"params": p2}, ids, att, tt, output_intermediates=True)
    if mode == "head_dim":
        assert (c2.hidden_size, c2.intermediate_size, c2.num_attention_heads, c2.attention_head_size,
                c2.attention_scale_dim) == (20, 30, 4, 5, 8)
        assert not c2.is_standard  # 4 x 5 == 20 but the attention scale stays 1/sqrt(8)
    else:
        assert (c2.hidden_size, c2.intermediate_size, c2.num_attention_heads, c2.attention_head_size) == (20, 30, 2, 8)
        assert c2.head_dim == 8 and c2.scale_dim == 8 and not c2.is_standard  # 2 x 8 != 20
    valid = np.asarray(att).astype(bool)
    hid = np.flatnonzero(np.asarray(masks["hidden"]))
    for name in ("mlm_logits", "logits", "pooled"):
        a, b = np.asarray(getattr(masked, name)), np.asarray(getattr(dense, name))
        if name == "pooled":
            a = a[:, hid]
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0, err_msg=name)
    for i, (a, b) in enumerate(zip(masked.hidden_states, dense.hidden_states)):
        np.testing.assert_allclose(np.asarray(a)[..., hid][valid], np.asarray(b)[valid], atol=1e-5, rtol=0,
                                   err_msg=f"hidden state {i}")
        assert np.all(np.delete(np.asarray(a), hid, axis=-1) == 0), "pruned hidden dims must be exactly zero"
    counts = pruning.count_params(config, masks)
    assert counts["compact_total"] == compaction.leaf_count(p2)
    assert counts["total"] == counts["compact_total"]  # balanced masks: nothing padded


def test_compact_pads_non_uniform_masks_exactly():
    """Hand-made masks with different widths per layer/head: padding units are zeroed, outputs still equal."""
    config = tiny_config()
    params = init_params(config, jax.random.key(4))
    rng = np.random.default_rng(5)
    attn = (rng.random((2, 4, 8)) < 0.5).astype(np.float32)
    attn[0, 1] = 0.0  # a whole head pruned in layer 0 only
    ffn = (rng.random((2, 48)) < 0.6).astype(np.float32)
    hidden = (rng.random(32) < 0.7).astype(np.float32)
    masks = {"hidden": jnp.asarray(hidden), "attn": jnp.asarray(attn), "ffn": jnp.asarray(ffn)}
    ids, att, tt = _batch(rng, config)
    masked = Bert(config).apply({"params": params}, ids, att, tt, masks=masks)
    c2, p2 = pruning.compact(config, params, masks)
    dense = Bert(c2).apply({"params": p2}, ids, att, tt)
    np.testing.assert_allclose(np.asarray(masked.mlm_logits), np.asarray(dense.mlm_logits), atol=1e-5, rtol=0)
    assert c2.intermediate_size == int(ffn.sum(1).max())
    assert c2.num_attention_heads == 4 and c2.head_dim == int(attn.sum(-1).max())
    counts = pruning.count_params(config, masks)
    assert counts["compact_total"] == compaction.leaf_count(p2)
    assert counts["total"] < counts["compact_total"]  # padding makes the dense model larger than the masked one


def test_count_params_matches_elementwise_reference():
    """Effective count == number of parameter entries whose removal multiplier is 1 (an elementwise count)."""
    config = tiny_config(num_labels=3)
    params = init_params(config, jax.random.key(0))
    rng = np.random.default_rng(6)
    for mode, attn in (("head_dim", 3), ("heads", 3)):
        masks = _random_masks(rng, config, hidden=17, ffn=11, attn=attn, mode=mode)
        mults = pruning.param_multipliers(masks, params)
        kept = 0
        for path, leaf in jax.tree_util.tree_leaves_with_path(params):
            m = mults
            for key in path:
                m = m.get(key.key) if isinstance(m, dict) else None
            kept += leaf.size if m is None else int(np.broadcast_to(np.asarray(m), leaf.shape).sum())
        counts = pruning.count_params(config, masks)
        assert counts["total"] == kept, mode
        assert counts["total"] == counts["backbone"] + counts["heads"]
        emb = (97 + 64 + 2) * 17 + 2 * 17
        assert counts["embeddings"] == emb
    full = pruning.count_params(config, pruning.init_masks(config))
    assert full["total"] == full["full_total"] == compaction.leaf_count(params)


def test_remaining_widths():
    config = tiny_config()
    masks = _random_masks(np.random.default_rng(0), config, hidden=20, ffn=13, attn=3, mode="heads")
    w = pruning.remaining_widths(masks)
    assert w == {"hidden": 20, "ffn": [13, 13], "head_dims": [24, 24], "heads": [3, 3]}


def test_compact_rejects_bad_inputs():
    config = tiny_config()
    params = init_params(config, jax.random.key(0))
    masks = pruning.init_masks(config)
    with pytest.raises(ValueError, match="pass params\\['student'\\]"):
        pruning.compact(config, {"student": params, "projections": {}}, masks)
    with pytest.raises(ValueError, match="do not match the config"):
        pruning.compact(config, params, pruning.init_masks(tiny_config(hidden_size=16)))
    with pytest.raises(ValueError, match="keeps no dimension"):
        pruning.compact(config, params, dict(masks, hidden=jnp.zeros(32)))


# ------------------------------------------------------------------------------------ real weights + export
@pytest.fixture(scope="module")
def minilm_batch(minilm_tokenizer, sentences):
    enc = minilm_tokenizer(sentences, padding=True, return_tensors="np")
    assert (enc["attention_mask"] == 0).any()
    return enc


@functools.lru_cache(maxsize=None)
def _forward(config):
    return jax.jit(lambda p, ids, att, tt, masks: Bert(config).apply({"params": p}, ids, att, tt, masks=masks))


def _run(config, params, enc, masks=None):
    return _forward(config)(params, jnp.asarray(enc["input_ids"]), jnp.asarray(enc["attention_mask"]),
                            jnp.asarray(enc["token_type_ids"]), masks)


def test_minilm_head_dim_masks_compact_and_own_format_export(minilm, minilm_batch, tmp_path):
    config, params = minilm
    masks = _random_masks(np.random.default_rng(7), config, hidden=300, ffn=1000, attn=20, mode="head_dim")
    masked = np.asarray(_run(config, params, minilm_batch, masks).mlm_logits)
    c2, p2 = pruning.compact(config, params, masks)
    assert (c2.hidden_size, c2.intermediate_size, c2.num_attention_heads, c2.attention_head_size, c2.scale_dim) == \
        (300, 1000, 12, 20, 32)
    dense = np.asarray(_run(c2, p2, minilm_batch).mlm_logits)
    valid = minilm_batch["attention_mask"].astype(bool)
    np.testing.assert_allclose(masked[valid], dense[valid], atol=1e-5, rtol=0)
    assert pruning.count_params(config, masks)["compact_total"] == compaction.leaf_count(p2)
    fmt = hf.export(c2, p2, str(tmp_path / "own"), own_format=True)["format"]
    assert fmt == "jaxdistill"
    c3, p3 = hf.load(str(tmp_path / "own"))
    assert c3.attention_head_size == 20 and c3.scale_dim == 32
    np.testing.assert_allclose(np.asarray(_run(c3, p3, minilm_batch).mlm_logits)[valid], dense[valid], atol=1e-6, rtol=0)


def test_minilm_whole_head_masks_export_as_standard_hf(minilm, minilm_batch, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config, params = minilm
    masks = _random_masks(np.random.default_rng(8), config, hidden=256, ffn=900, attn=8, mode="heads")
    masked = np.asarray(_run(config, params, minilm_batch, masks).mlm_logits)
    c2, p2 = pruning.compact(config, params, masks)
    assert c2.is_standard and (c2.hidden_size, c2.num_attention_heads, c2.intermediate_size) == (256, 8, 900)
    assert c2.head_dim is None and c2.attention_scale_dim is None
    assert hf.export(c2, p2, str(tmp_path / "std"))["format"] == "hf"
    model = transformers.BertForMaskedLM.from_pretrained(str(tmp_path / "std"), attn_implementation="eager").eval()
    with torch.no_grad():
        ref = model(**{k: torch.tensor(v) for k, v in minilm_batch.items()}).logits.numpy()
    valid = minilm_batch["attention_mask"].astype(bool)
    np.testing.assert_allclose(ref[valid], masked[valid], atol=1e-5, rtol=0)
