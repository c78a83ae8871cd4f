"""Fitting an MLM head onto a frozen encoder that has none (tiny random BERT; optionally real MiniLM)."""
import os
import time

import numpy as np
import pytest

from tests.tiny import write_tiny_teacher


def _write_corpus(path, n_docs=60, seed=0):
    """Templated English-like sentences: the head can learn the word distribution and some context."""
    rng = np.random.default_rng(seed)
    subj, adj = ["film", "movie", "story", "plot", "music", "scene"], ["good", "bad", "great", "dull", "funny"]
    docs = []
    for _ in range(n_docs):
        sents = [f"the {rng.choice(subj)} was {rng.choice(adj)} and the {rng.choice(subj)} was not "
                 f"{rng.choice(adj)}." for _ in range(rng.integers(2, 5))]
        docs.append(" ".join(sents))
    with open(path, "w") as f:
        f.write("\n\n".join(docs) + "\n")
    return str(path)


def _data_cfg(corpus, cache, seq_len=32):
    from jaxdistill.data import default_data_config
    c = default_data_config()
    c.corpus.source = "text"
    c.corpus.path = str(corpus)
    c.seq_len = seq_len
    c.holdout_sequences = 16
    c.cache_dir = str(cache)
    c.num_proc = 1
    c.progress = False
    return c


def _tensors(directory):
    from safetensors.numpy import load_file
    t = load_file(os.path.join(directory, "model.safetensors"))
    return {k[len("bert."):] if k.startswith("bert.") else k: v for k, v in t.items()}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    from jaxdistill.mlm_head import fit_mlm_head
    d = tmp_path_factory.mktemp("mlmhead")
    write_tiny_teacher(d / "teacher", with_mlm_head=False)
    cfg = _data_cfg(_write_corpus(d / "corpus.txt"), d / "cache")
    res = fit_mlm_head(str(d / "teacher"), cfg, str(d / "out"), steps=200, batch_size=16, lr=3e-2,
                       warmup_steps=10, eval_batches=2, progress=False)
    return d, cfg, res


def test_fitting_lowers_held_out_loss(fitted):
    _, _, r = fitted
    assert r["steps"] == 200 and r["out_dir"].endswith("out")
    assert r["mlm_loss_before"] > 4.0  # a random head is near uniform over ~100 ids: ln(104) = 4.64
    assert r["mlm_loss_after"] < 0.6 * r["mlm_loss_before"], r  # about 2.6: the template's word distribution
    assert r["mlm_accuracy_after"] > r["mlm_accuracy_before"] + 0.1, r


def test_encoder_is_bit_identical_and_output_loads_in_transformers(fitted):
    import transformers
    d, _, r = fitted
    src, out = _tensors(d / "teacher"), _tensors(r["out_dir"])
    head = {k for k in out if k.startswith("cls.")}
    assert head == {"cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias",
                    "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias",
                    "cls.predictions.bias"}
    encoder = [k for k in src if not k.startswith("pooler.")]
    assert set(out) - head == set(encoder)  # BertForMaskedLM has no pooler
    for k in encoder:
        assert src[k].dtype == out[k].dtype and np.array_equal(src[k], out[k]), k
    model, info = transformers.BertForMaskedLM.from_pretrained(r["out_dir"], output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert os.path.exists(os.path.join(r["out_dir"], "vocab.txt"))


def test_head_logits_equal_the_models_head(fitted):
    """The MLM head applied alone (as fit_mlm_head trains it) on the encoder's output == Bert's MLM logits."""
    import jax
    from jaxdistill.mlm_head import HEAD_KEYS
    from jaxdistill.models import Bert, hf
    from jaxdistill.models.bert import MlmHead
    _, _, r = fitted
    config, params = hf.load(r["out_dir"], with_pooler=False)
    ids = np.random.default_rng(0).integers(5, config.vocab_size, (2, 12)).astype(np.int32)
    full = Bert(config).apply({"params": params}, ids)
    head = {k: params[k] for k in HEAD_KEYS}
    mine = MlmHead(config).apply({"params": head}, full.last_hidden_state,
                                 params["embeddings"]["word_embeddings"]["embedding"])
    np.testing.assert_allclose(np.asarray(mine), np.asarray(full.mlm_logits), rtol=1e-5, atol=1e-5)
    assert jax.numpy.abs(full.mlm_logits).max() > 1.0  # a fitted head, not a near-zero random one


def test_refuses_non_empty_out_dir_and_bad_arguments(fitted, tmp_path):
    from jaxdistill.mlm_head import fit_mlm_head
    d, cfg, r = fitted
    t0 = time.perf_counter()
    with pytest.raises(FileExistsError, match="is not empty"):
        fit_mlm_head(str(d / "teacher"), cfg, r["out_dir"], steps=1)
    with pytest.raises(ValueError, match="steps must be positive"):
        fit_mlm_head(str(d / "teacher"), cfg, str(tmp_path / "o"), steps=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fit_mlm_head(str(tmp_path / "none"), cfg, str(tmp_path / "o"), steps=1)
    bad = _data_cfg(cfg.corpus.path, cfg.cache_dir)
    bad.holdout_sequences = 0
    with pytest.raises(ValueError, match="holdout_sequences must be > 0"):
        fit_mlm_head(str(d / "teacher"), bad, str(tmp_path / "o"), steps=1)
    assert time.perf_counter() - t0 < 5  # refused before any loading or compilation
    assert not os.path.exists(tmp_path / "o")


def test_gather_targets_covers_every_target():
    from jaxdistill.mlm_head import gather_targets
    labels = np.full((3, 5), -100, np.int32)
    labels[0, 1], labels[1, 4], labels[2, 0], labels[2, 3] = 7, 8, 9, 10
    chunks = gather_targets(labels, 3)
    assert len(chunks) == 2
    pos = np.concatenate([c[0][c[2] > 0] for c in chunks])
    lab = np.concatenate([c[1][c[2] > 0] for c in chunks])
    assert pos.tolist() == [1, 9, 10, 13] and lab.tolist() == [7, 8, 9, 10]
    assert chunks[1][2].tolist() == [1.0, 0.0, 0.0]


def test_real_minilm_head_starts_learning(minilm_path, tmp_path):
    """A few steps on all-MiniLM-L6-v2 (no MLM head) already lower the held-out loss."""
    from jaxdistill.mlm_head import fit_mlm_head
    corpus = tmp_path / "c.txt"
    import pydoc_data.topics
    corpus.write_text("\n\n".join(v.strip() for _, v in sorted(pydoc_data.topics.topics.items())[:40]) + "\n")
    cfg = _data_cfg(corpus, tmp_path / "cache", seq_len=32)
    cfg.holdout_sequences = 4
    r = fit_mlm_head(minilm_path, cfg, str(tmp_path / "out"), steps=5, batch_size=4, lr=1e-3, warmup_steps=0,
                     eval_batches=1, progress=False)
    assert r["mlm_loss_after"] < r["mlm_loss_before"] - 0.05, r


# ------------------------------------------------------------------------------ encoder mode (teacher adaptation)
class _Stop(Exception):
    pass


def _adapt(d, cfg, out, workdir, **kw):
    from jaxdistill.mlm_head import fit_mlm_head
    args = dict(mode="encoder", steps=6, batch_size=8, lr=3e-3, warmup_steps=1, eval_batches=1, eval_every=2,
                checkpoint_every=2, progress=False)
    args.update(kw)
    return fit_mlm_head(str(d / "teacher"), cfg, str(out), workdir=str(workdir), **args)


def test_encoder_mode_trains_the_encoder_logs_a_curve_and_is_cached(fitted, tmp_path):
    d, cfg, _ = fitted
    r = _adapt(d, cfg, tmp_path / "out", tmp_path / "work")
    assert [p["step"] for p in r["curve"]] == [0, 2, 4, 6] and r["mode"] == "encoder" and not r["cached"]
    assert r["mlm_loss_after"] < r["mlm_loss_before"], r
    src, out = _tensors(d / "teacher"), _tensors(r["out_dir"])
    changed = [k for k in src if k in out and not k.startswith("pooler.") and not np.array_equal(src[k], out[k])]
    assert any("encoder.layer.0.attention" in k for k in changed), changed  # the encoder itself moved
    import json
    lines = [json.loads(x) for x in open(tmp_path / "work" / "metrics.jsonl")]
    assert [x["step"] for x in lines if "eval/mlm_accuracy" in x] == [2, 4]
    t0 = time.perf_counter()
    again = _adapt(d, cfg, tmp_path / "out", tmp_path / "work")
    assert again["cached"] and again["curve"] == r["curve"] and time.perf_counter() - t0 < 5
    from jaxdistill.errors import OutputExistsError
    with pytest.raises(OutputExistsError, match="is not empty"):  # other settings never overwrite silently
        _adapt(d, cfg, tmp_path / "out", tmp_path / "work2", lr=1e-3)


def test_encoder_mode_resumes_bit_exactly(fitted, tmp_path, monkeypatch):
    """Interrupted after its step-2 checkpoint, a rerun resumes there and ends where an uninterrupted run does."""
    from jaxdistill import mlm_head
    d, cfg, _ = fitted
    whole = _adapt(d, cfg, tmp_path / "whole", tmp_path / "w1")
    real_point = mlm_head._point

    def stop_at_4(step, measured, seconds):
        if step == 4:
            raise _Stop()
        return real_point(step, measured, seconds)

    monkeypatch.setattr(mlm_head, "_point", stop_at_4)
    with pytest.raises(_Stop):
        _adapt(d, cfg, tmp_path / "resumed", tmp_path / "w2")
    monkeypatch.setattr(mlm_head, "_point", real_point)
    assert not os.path.exists(tmp_path / "resumed" / "model.safetensors")
    resumed = _adapt(d, cfg, tmp_path / "resumed", tmp_path / "w2")
    a, b = _tensors(whole["out_dir"]), _tensors(resumed["out_dir"])
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert [p["step"] for p in resumed["curve"]] == [0, 2, 4, 6]
