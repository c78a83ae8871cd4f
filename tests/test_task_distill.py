"""Task-specific distillation: task batches, Tang et al.'s augmentation, the BiLSTM student, label checks,
the task presets (their docstring commands dry-run as written), and the three preset bugs that issue 14 fixed."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill import cli, losses, objectives
from jaxdistill.configs import logit_mse, pkd, tinybert
from jaxdistill.data.augment import IGNORE_LABEL, AugmentSpec, augment_split
from jaxdistill.errors import ConfigError, TaskError
from jaxdistill.experiment import resolve
from jaxdistill.models import bilstm
from tiny import TASK_LABELS, tiny_config, write_task_preset_inputs, write_tiny_classifier

# ------------------------------------------------------------------------------------ preset bugs (issue 14)


def classifier_output(logits):
    """A model output with classifier logits only (no MLM head), as `Recipe.prediction_values` reads it."""
    return type("O", (), {"logits": logits, "mlm_logits": None, "mlm_predictor": None})()


def test_logit_mse_preset_uses_the_official_reduction():
    """Bug: configs/logit_mse.py promised d-bert's mean over batch x classes but summed over classes."""
    r = objectives.build_recipe(logit_mse.recipe(data="task"), tiny_config(num_labels=4), tiny_config(num_labels=4))
    zs, zt = jnp.arange(8.0).reshape(2, 4), jnp.zeros((2, 4))
    out = objectives.Recipe.prediction_values(r, classifier_output(zs), classifier_output(zt),
                                              {"labels": jnp.zeros(2, jnp.int32), "attention_mask": None}, 0)
    assert float(out["logit_mse"]) == pytest.approx(float(jnp.mean(jnp.square(zs))))


def test_pkd_patience_uses_the_reduction_beta_100_was_tuned_for():
    """Bug: beta = 100 (official grid, mean over batch x layers x hidden) was applied to the paper-form sum."""
    (m,) = pkd.recipe(data="task").matches
    assert m["loss_kwargs"]["reduction"] == "official" and m["weight"] == 100.0
    s, t = jax.random.normal(jax.random.key(0), (2, 3, 8)), jax.random.normal(jax.random.key(1), (2, 3, 8))
    official = losses.pkd_patience(s, t, **m["loss_kwargs"])
    assert float(losses.pkd_patience(s, t, normalize=True)) == pytest.approx(float(official) * 3 * 8, rel=1e-5)


def test_tinybert_task_stage_is_two_runs():
    """Bug: the task stage trained attention, hidden and prediction terms together; the official code runs the
    intermediate terms, then the prediction soft CE (optionally its mean over batch x classes), separately."""
    with pytest.raises(ConfigError, match="two runs"):
        tinybert.recipe(stage="task")
    inter, pred = tinybert.recipe(stage="task_intermediate"), tinybert.recipe(stage="task_prediction")
    assert [m["name"] for m in inter.matches] == ["att", "hid"] and not any(inter.weights.values())
    assert list(pred.matches) == [] and pred.weights.soft == 1.0 and pred.temperature == 1.0
    official = tinybert.recipe(stage="task_prediction", soft_ce_reduction="official")
    zs, zt = jax.random.normal(jax.random.key(0), (4, 3)), jax.random.normal(jax.random.key(1), (4, 3))
    ls, pt = jax.nn.log_softmax(zs), jax.nn.softmax(zt)
    r = objectives.build_recipe(official, tiny_config(num_labels=3), tiny_config(num_labels=3))
    out = r.prediction_values(classifier_output(zs), classifier_output(zt), {}, 0)
    assert float(out["soft_ce"]) == pytest.approx(float(jnp.mean(-pt * ls)), rel=1e-5)


def test_teacher_student_kl_of_task_models_reads_their_classifiers():
    """Task models have no MLM head: the monitored KL (train/teacher_student_kl, eval/kl) is on the classifier
    outputs, KL(softmax(z_t) || softmax(z_s)) averaged over examples, not a constant 0."""
    r = objectives.build_recipe(logit_mse.recipe(data="task"), tiny_config(num_labels=3), tiny_config(num_labels=3))
    zs, zt = jnp.array([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0]]), jnp.array([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    out = r.prediction_values(classifier_output(zs), classifier_output(zt),
                              {"labels": jnp.zeros(2, jnp.int32), "attention_mask": None}, 0, teacher_student_kl=True)
    pt, ps = jax.nn.softmax(zt), jax.nn.softmax(zs)
    want = jnp.mean(jnp.sum(pt * (jnp.log(pt) - jnp.log(ps)), axis=-1))
    assert float(out["teacher_student_kl"]) == pytest.approx(float(want), rel=1e-5) and float(want) > 0.5


# -------------------------------------------------------------------------------------------- augmentation


def test_augmentation_masks_words_samples_ngrams_and_drops_hard_labels():
    vocab = {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[MASK]": 3, "good": 4, "film": 5, "##s": 6, "bad": 7}
    ids = np.array([[1, 4, 5, 6, 7, 2, 0, 0]], np.int32)
    arrays = dict(input_ids=ids, attention_mask=(ids > 0).astype(np.int32), token_type_ids=np.zeros_like(ids),
                  labels=np.array([1], np.int32))
    spec = AugmentSpec(copies=30, p_mask=0.5, p_ng=0.5, max_ngram=2, seed=0)
    out = augment_split(arrays, spec, vocab=vocab, cls_id=1, sep_id=2, pad_id=0, mask_id=3)
    assert out["input_ids"].shape == (31, 8) and list(out["labels"]) == [1] + [IGNORE_LABEL] * 30
    rows = [list(r[: m.sum()]) for r, m in zip(out["input_ids"][1:], out["attention_mask"][1:])]
    assert all(r[0] == 1 and r[-1] == 2 for r in rows)
    assert any(3 in r for r in rows) and any(len(r) < 6 for r in rows)
    assert not any(r[1:-1] and r[1] == 6 for r in rows)  # a word's ## piece never starts a copy
    np.testing.assert_array_equal(out["input_ids"], augment_split(arrays, spec, vocab=vocab, cls_id=1, sep_id=2,
                                                                  pad_id=0, mask_id=3)["input_ids"])
    assert float(losses.cross_entropy(jnp.zeros((2, 2)), jnp.array([IGNORE_LABEL, IGNORE_LABEL]))) == 0.0


# -------------------------------------------------------------------------------------------- BiLSTM student


def test_bilstm_ignores_padding_and_round_trips(tmp_path):
    c = bilstm.BiLSTMConfig(vocab_size=30, num_labels=2, embedding_size=6, hidden_size=5, dense_size=4)
    teacher_emb = np.random.default_rng(0).normal(size=(30, 12))
    p = bilstm.init_params(c, jax.random.key(0), teacher_embeddings=teacher_emb)
    assert p["embeddings"]["embedding"].shape == (30, 6)
    ids = np.array([[1, 5, 7, 2, 0, 0], [1, 9, 2, 0, 0, 0]], np.int32)
    mask = (ids > 0).astype(np.int32)
    z = bilstm.BiLSTM(c).apply({"params": p}, ids, mask).logits
    z_junk = bilstm.BiLSTM(c).apply({"params": p}, np.where(mask > 0, ids, 11), mask).logits
    np.testing.assert_allclose(z, z_junk, atol=1e-6)
    bilstm.save(c, p, str(tmp_path / "s"), None, TASK_LABELS)
    c2, p2, labels = bilstm.load(str(tmp_path / "s"))
    assert c2 == c and labels == list(TASK_LABELS)
    np.testing.assert_allclose(bilstm.predict_logits(c2, p2, dict(input_ids=ids, attention_mask=mask), 4), z,
                               atol=1e-6)


# ------------------------------------------------------------------------------------ the engine, end to end


@pytest.fixture(scope="module")
def task_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("task"))
    write_task_preset_inputs(root)
    return root


def run_distill(root, spec, workdir, *extra):
    old = os.getcwd()
    os.chdir(root)
    try:
        return cli.main(["distill", "--config", spec, "--workdir", workdir, *extra])
    finally:
        os.chdir(old)


@pytest.mark.parametrize("spec,extra", [
    ("logit_mse:bilstm_task_smoke", ["--config.data.augment.enabled=True", "--config.data.augment.copies=2",
                                     "--config.student.bilstm.embedding_size=8", "--config.student.bilstm.hidden_size=8",
                                     "--config.student.bilstm.dense_size=8"]),
    ("pkd:task_smoke", []),
], ids=["bilstm-augmented", "pkd-bert"])
def test_task_distill_runs_evaluates_and_exports(task_root, spec, extra, capsys):
    work = os.path.join(task_root, "runs", spec.replace(":", "-"))
    assert run_distill(task_root, spec, work, *extra) == 0
    summary = json.load(open(os.path.join(work, "summary.json")))
    assert summary["status"] == "completed" and 0.0 <= summary["validation"]["accuracy"] <= 1.0
    export = os.path.join(work, "export")
    cfg = json.load(open(os.path.join(export, "config.json")))
    assert [cfg["id2label"][str(i)] for i in range(2)] == list(TASK_LABELS)
    capsys.readouterr()
    code = cli.main(["evaluate", "--model", export, "--task-file",
                     os.path.join(task_root, "runs/task-smoke/task.csv"), "--validation-fraction", "0.25",
                     "--max-length", "32"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["metrics"]["accuracy"] == pytest.approx(summary["validation"]["accuracy"])
    if "bilstm" in spec:
        assert cfg["model_type"] == bilstm.MODEL_TYPE
    else:
        assert cfg["architectures"] == ["BertForSequenceClassification"] and cfg["num_hidden_layers"] == 3
    # `jaxdistill export --workdir` writes the same student in the same format, which `evaluate` scores alike
    again = os.path.join(work, "export-again")
    old = os.getcwd()
    os.chdir(task_root)  # the presets name the teacher relative to the directory the run started in
    try:
        assert cli.main(["export", "--workdir", work, "--out", again]) == 0
    finally:
        os.chdir(old)
    cfg2 = json.load(open(os.path.join(again, "config.json")))
    assert {k: cfg2.get(k) for k in ("model_type", "architectures", "id2label")} == \
        {k: cfg.get(k) for k in ("model_type", "architectures", "id2label")}
    from safetensors.numpy import load_file
    ours, theirs = load_file(os.path.join(again, "model.safetensors")), load_file(os.path.join(export, "model.safetensors"))
    assert sorted(ours) == sorted(theirs) and all(np.array_equal(ours[k], theirs[k]) for k in ours)
    capsys.readouterr()
    assert cli.main(["evaluate", "--model", again, "--task-file", os.path.join(task_root, "runs/task-smoke/task.csv"),
                     "--validation-fraction", "0.25", "--max-length", "32"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == result["metrics"]


def test_label_order_mismatch_is_an_error_before_compiling(task_root, tmp_path):
    swapped = str(tmp_path / "swapped")
    write_tiny_classifier(swapped, labels=TASK_LABELS[::-1], num_hidden_layers=6)
    code = run_distill(task_root, "hinton:task_smoke", str(tmp_path / "w"), f"--config.teacher.path={swapped}")
    assert code == TaskError.exit_code
    old = os.getcwd()
    os.chdir(task_root)
    try:
        from jaxdistill.config_loader import load_config
        c = load_config("tinybert:task_smoke_prediction", [f"--config.student.path={swapped}"])
        with pytest.raises(ConfigError, match="must agree"):
            resolve(c)
    finally:
        os.chdir(old)
