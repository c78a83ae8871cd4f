"""Hugging Face export/load round trips and the loader's errors."""
import json
import logging
import os

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from jaxdistill.models import Bert, BertConfig, hf, init_params
from tiny import tiny_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _batch(config, B=3, L=11, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, config.vocab_size, size=(B, L))
    mask = np.ones((B, L), np.int64)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    types = np.zeros((B, L), np.int64)
    types[0, 6:] = 1
    return ids, mask, types


@pytest.fixture(scope="module")
def tiny():
    config = tiny_config()
    params = init_params(config, jax.random.key(1))
    # make LayerNorms and biases non-trivial so a swapped tensor cannot go unnoticed
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    leaves = [leaf + 0.05 * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)]
    return config, jax.tree.unflatten(tree, leaves)


def test_export_loads_in_transformers_with_same_logits(tiny, tmp_path):
    config, params = tiny
    out = str(tmp_path / "student")
    assert hf.export(config, params, out)["format"] == "hf"
    model, info = transformers.BertForMaskedLM.from_pretrained(out, output_loading_info=True,
                                                              attn_implementation="eager")
    # nothing missing; the pooler (kept for AutoModel) is the one part BertForMaskedLM has no place for
    assert not info["missing_keys"] and info["unexpected_keys"] <= {"bert.pooler.dense.weight",
                                                                      "bert.pooler.dense.bias"}, info
    ids, mask, types = _batch(config)
    with torch.no_grad():
        ref = model.eval()(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                           token_type_ids=torch.tensor(types)).logits.numpy()
    ours = Bert(config).apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types))
    np.testing.assert_allclose(np.asarray(ours.mlm_logits), ref, atol=1e-5, rtol=0)


def test_load_of_export_is_bit_exact(tiny, tmp_path):
    config, params = tiny
    out = str(tmp_path / "student")
    hf.export(config, params, out)
    config2, params2 = hf.load(out)
    assert config2 == config.replace(num_labels=0)
    # the pooler is kept in MLM exports too, so every tensor comes back exactly
    assert jax.tree.structure(params) == jax.tree.structure(params2)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_loader_names_the_part_it_creates(tiny, tmp_path, caplog):
    config, params = tiny
    out = str(tmp_path / "nopooler")
    hf.export(config.replace(with_pooler=False), {k: v for k, v in params.items() if k != "pooler"}, out)
    with caplog.at_level(logging.WARNING):
        _, loaded = hf.load(out)
    assert "has no pooler (bert.pooler.*); created a new one from seed 0" in caplog.text
    assert "MLM" not in caplog.text and "tied" not in caplog.text
    assert loaded["pooler"]["kernel"].shape == (config.hidden_size, config.hidden_size)


def test_classifier_and_encoder_only_round_trip(tmp_path):
    for config in (tiny_config(num_labels=3), tiny_config(with_mlm_head=False)):
        params = init_params(config, jax.random.key(3))
        out = str(tmp_path / f"m{config.num_labels}{config.with_mlm_head}")
        hf.export(config, params, out)
        config2, params2 = hf.load(out, with_mlm_head=config.with_mlm_head)
        assert config2 == config
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
            assert np.array_equal(np.asarray(a), np.asarray(b))
    ids, mask, types = _batch(config)
    model = transformers.BertForSequenceClassification.from_pretrained(str(tmp_path / "m3True"),
                                                                       attn_implementation="eager").eval()
    config = tiny_config(num_labels=3)
    _, params = hf.load(str(tmp_path / "m3True"))
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    ours = Bert(config).apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(ours.logits), ref, atol=1e-5, rtol=0)


def test_checkpoint_without_mlm_head_gets_one_and_reports_it(minilm_path, caplog):
    with caplog.at_level(logging.WARNING):
        config, params = hf.load(minilm_path)
    assert "no MLM head" in caplog.text
    assert params["mlm_bias"].shape == (config.vocab_size,)
    # the decoder is tied: the logits are the transform output against the word embeddings
    assert "mlm_decoder" not in params
    # reproducible: the fresh head comes from the seed
    _, again = hf.load(minilm_path)
    assert np.array_equal(params["mlm_transform"]["kernel"], again["mlm_transform"]["kernel"])


def test_keys_with_and_without_bert_prefix(tiny, tmp_path):
    config, params = tiny
    out = tmp_path / "noprefix"
    hf.export(config.replace(with_mlm_head=False), {k: v for k, v in params.items()
                                                     if not k.startswith("mlm")}, str(out))
    from safetensors.numpy import load_file
    assert all(not k.startswith("bert.") for k in load_file(str(out / "model.safetensors")))
    config2, params2 = hf.load(str(out), with_mlm_head=False)
    assert np.array_equal(params2["layer_1"]["output"]["kernel"], np.asarray(params["layer_1"]["output"]["kernel"]))


def test_pytorch_bin_is_read(tiny, tmp_path):
    config, params = tiny
    out = tmp_path / "bin"
    hf.export(config, params, str(out))
    from safetensors.torch import load_file
    torch.save(load_file(str(out / "model.safetensors")), str(out / "pytorch_model.bin"))
    os.remove(out / "model.safetensors")
    _, params2 = hf.load(str(out))
    assert np.array_equal(params2["embeddings"]["word_embeddings"]["embedding"],
                          np.asarray(params["embeddings"]["word_embeddings"]["embedding"]))


# ------------------------------------------------------------------------------------------------ errors
def _write_config(path, **fields):
    os.makedirs(path, exist_ok=True)
    cfg = tiny_config().to_hf_dict()
    cfg.update(fields)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)


def test_error_on_non_bert_model_type(tmp_path):
    _write_config(tmp_path / "gpt", model_type="gpt2")
    with pytest.raises(hf.CheckpointError, match=r"model_type 'gpt2' .* is not BERT"):
        hf.load(str(tmp_path / "gpt"))


def test_error_on_missing_files(tmp_path):
    with pytest.raises(hf.CheckpointError, match="does not exist"):
        hf.load(str(tmp_path / "nowhere"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(hf.CheckpointError, match="no config.json"):
        hf.load(str(tmp_path / "empty"))
    _write_config(tmp_path / "noweights")
    with pytest.raises(hf.CheckpointError, match="no weights .* model.safetensors"):
        hf.load(str(tmp_path / "noweights"))


def test_error_names_the_tensor_with_the_wrong_shape(tiny, tmp_path):
    config, params = tiny
    out = str(tmp_path / "m")
    hf.export(config, params, out)
    _write_config(out, intermediate_size=40)
    with pytest.raises(hf.CheckpointError,
                       match=r"'bert\.encoder\.layer\.0\.intermediate\.dense\.weight' has shape \(48, 32\) "
                             r"but config\.json implies \(40, 32\)"):
        hf.load(out)


def test_export_refuses_non_empty_directory(tiny, tmp_path):
    config, params = tiny
    out = tmp_path / "taken"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty.*overwrite=True"):
        hf.export(config, params, str(out))
    assert (out / "precious.txt").read_text() == "keep me"
    assert not (out / "model.safetensors").exists()
    hf.export(config, params, str(out), overwrite=True)
    assert (out / "model.safetensors").exists()


def test_export_copies_tokenizer(tiny, tmp_path, minilm_path):
    config, params = tiny
    hf.export(config, params, str(tmp_path / "t"), tokenizer_from=minilm_path)
    assert (tmp_path / "t" / "vocab.txt").exists() and (tmp_path / "t" / "tokenizer.json").exists()


def test_non_standard_shapes_export_as_standard_bert_unless_own_format(tmp_path):
    config = tiny_config(head_dim=5, attention_scale_dim=8)  # 4 heads x 5 != 32: see test_hf_standard.py
    assert not config.is_standard
    params = init_params(config, jax.random.key(0))
    info = hf.export(config, params, str(tmp_path / "std"))
    assert info["format"] == "hf" and info["padding_params"] > 0
    assert hf.export(config, params, str(tmp_path / "own"), own_format=True)["format"] == "jaxdistill"
    ids, mask, types = _batch(config)
    a = Bert(config).apply({"params": params}, ids, mask).mlm_logits
    for name in ("std", "own"):
        config2, params2 = hf.load(str(tmp_path / name))
        assert config2.is_standard == (name == "std")
        b = Bert(config2).apply({"params": params2}, ids, mask).mlm_logits
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=0)


def test_config_validation_errors():
    with pytest.raises(ValueError, match="not divisible by num_attention_heads"):
        BertConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="hidden_act 'mish' is not supported"):
        BertConfig(hidden_act="mish")
    assert BertConfig.from_hf_dict(BertConfig().to_hf_dict()) == BertConfig()
