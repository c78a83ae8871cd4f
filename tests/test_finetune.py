"""Fine-tuning and evaluation on a tiny random BERT and a synthetic sentiment task (learnable from one word)."""
import csv
import json
import os

import numpy as np
import pytest

from tests.tiny import WORDS, write_tiny_teacher

NEUTRAL = [w for w in WORDS if w not in ("good", "bad", "great", "dull", "funny")]


def _write_task(path, n, seed, regression=False):
    """Sentences of random neutral words with "good" or "bad" inserted; label = which one (or, for
    regression, the number of "good" minus the number of "bad", in -2..2)."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sentence", "label"])
        for _ in range(n):
            words = list(rng.choice(NEUTRAL, size=rng.integers(3, 8)))
            if regression:
                k_good, k_bad = rng.integers(0, 3), rng.integers(0, 3)
                extra, label = ["good"] * k_good + ["bad"] * k_bad, float(k_good - k_bad)
            else:
                pos = bool(rng.integers(0, 2))
                extra, label = ["good" if pos else "bad"], ("positive" if pos else "negative")
            for e in extra:
                words.insert(int(rng.integers(0, len(words) + 1)), e)
            w.writerow([" ".join(words), label])
    return str(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("ft")
    write_tiny_teacher(d / "teacher", with_mlm_head=False)
    files = {"train": _write_task(d / "train.csv", 256, 0), "validation": _write_task(d / "val.csv", 100, 1),
             "reg_train": _write_task(d / "rtrain.csv", 192, 2, regression=True),
             "reg_validation": _write_task(d / "rval.csv", 64, 3, regression=True)}
    return d, files


def _config(d, files, regression=False, **over):
    from jaxdistill.finetune import default_finetune_config
    c = default_finetune_config()
    c.model = str(d / "teacher")
    c.task.name = "csv"
    c.task.train_file = files["reg_train" if regression else "train"]
    c.task.validation_file = files["reg_validation" if regression else "validation"]
    c.task.regression = regression
    c.max_length = 16
    c.batch_size = 32
    c.eval_batch_size = 48  # not a divisor of 100 rows: the last batch is padded
    c.steps = 48
    c.lr = 3e-3
    c.warmup_ratio = 0.1
    c.log_every = 8
    c.progress = False
    for k, v in over.items():
        setattr(c, k, v)
    return c


@pytest.fixture(scope="module")
def first_run(setup):
    from jaxdistill.finetune import finetune_and_evaluate
    d, files = setup
    return finetune_and_evaluate(_config(d, files, save_model=True), str(d / "run1"))


def test_learns_the_task_and_loss_falls(first_run, setup):
    d, _ = setup
    r = first_run
    assert r["steps"] == 48 and r["train_time_s"] > 0
    assert r["metrics"]["accuracy"] > 0.9, r["history"]  # chance is ~0.5
    losses = [h["train/loss"] for h in r["history"]]
    assert losses[-1] < 0.5 * losses[0], losses
    # eval_every=0: validation at the end of each epoch (256 rows / 32 = 8 steps) and at the end
    assert [h["step"] for h in r["history"] if "eval/accuracy" in h] == [8, 16, 24, 32, 40, 48]
    lines = [json.loads(x) for x in open(d / "run1" / "metrics.jsonl")]
    assert [x["step"] for x in lines] == [h["step"] for h in r["history"]]
    assert lines[-1]["eval/accuracy"] == r["metrics"]["accuracy"]


def test_same_seed_same_metrics_and_evaluate_reproduces(first_run, setup):
    from jaxdistill.finetune import evaluate, finetune_and_evaluate
    d, files = setup
    again = finetune_and_evaluate(_config(d, files, eval_every=24), str(d / "run2"))
    # every logged training loss (steps 8, 16, ..., 48) is bit-identical, and so are the final metrics
    loss = lambda r: [(h["step"], h["train/loss"]) for h in r["history"]]
    assert loss(again) == loss(first_run) and len(loss(again)) == 6
    assert again["metrics"] == first_run["metrics"]
    assert [h["step"] for h in again["history"] if "eval/accuracy" in h] == [24, 48]
    # the saved model (with its head and label names) scores the same on the validation split
    saved = first_run["model_dir"]
    cfg = json.load(open(os.path.join(saved, "config.json")))
    assert cfg["id2label"] == {"0": "negative", "1": "positive"}
    ev = evaluate(saved, _config(d, files).task, max_length=16, batch_size=40)
    assert ev["num_examples"] == 100
    assert ev["metrics"]["accuracy"] == pytest.approx(first_run["metrics"]["accuracy"], abs=1e-12)


def test_regression_reports_correlations(setup):
    from jaxdistill.finetune import evaluate, finetune_and_evaluate
    d, files = setup
    cfg = _config(d, files, regression=True, steps=36, lr=2e-3, save_model=True)
    r = finetune_and_evaluate(cfg, str(d / "reg"))
    assert r["num_labels"] == 1
    assert set(r["metrics"]) == {"pearson", "spearman", "mse"}
    assert r["metrics"]["pearson"] > 0.5, r["history"]
    # continuous metrics of the saved model match the run's final ones (other batch size, padded last batch)
    ev = evaluate(r["model_dir"], cfg.task, max_length=16, batch_size=24)
    for k in ("pearson", "spearman", "mse"):
        assert ev["metrics"][k] == pytest.approx(r["metrics"][k], rel=1e-5, abs=1e-6), k


def test_errors_before_any_work(setup, tmp_path):
    from jaxdistill.data import TaskError
    from jaxdistill.finetune import evaluate, finetune_and_evaluate
    d, files = setup
    with pytest.raises(FileNotFoundError, match="does not exist"):
        finetune_and_evaluate(_config(d, files, model=str(tmp_path / "nope")), str(tmp_path / "w"))
    with pytest.raises(ValueError, match="num_labels=3 but task"):
        finetune_and_evaluate(_config(d, files, num_labels=3), str(tmp_path / "w"))
    with pytest.raises(ValueError, match="max_length=128 is above the model's max_position_embeddings=64"):
        finetune_and_evaluate(_config(d, files, max_length=128), str(tmp_path / "w"))
    with pytest.raises(ValueError, match="not divisible by data x fsdp = 8"):
        finetune_and_evaluate(_config(d, files, batch_size=12), str(tmp_path / "w"))
    with pytest.raises(ValueError, match="lr must be positive"):
        finetune_and_evaluate(_config(d, files, lr=0.0), str(tmp_path / "w"))
    cfg = _config(d, files)
    cfg.task.train_file = str(tmp_path / "missing.csv")
    with pytest.raises(TaskError, match="does not exist"):
        finetune_and_evaluate(cfg, str(tmp_path / "w"))
    with pytest.raises(ValueError, match="has no classification head"):
        evaluate(str(d / "teacher"), _config(d, files).task, max_length=16)
    os.makedirs(tmp_path / "w2" / "model")
    open(tmp_path / "w2" / "model" / "x", "w").close()
    with pytest.raises(FileExistsError, match="already holds a model"):
        finetune_and_evaluate(_config(d, files, save_model=True), str(tmp_path / "w2"))


def test_benchmark_inference(setup):
    from jaxdistill.finetune import benchmark_inference
    d, _ = setup
    t = benchmark_inference(str(d / "teacher"), batch_size=4, seq_len=16, iters=3)
    assert 0 < t < 5
    with pytest.raises(ValueError, match="seq_len=65 is above"):
        benchmark_inference(str(d / "teacher"), batch_size=4, seq_len=65, iters=1)


def test_own_format_student_is_saved_in_own_format(setup, tmp_path):
    """A pruned shape with no standard BERT form (4 heads x 6 in hidden 23, read from jaxdistill's own format)
    is fine-tuned and saved in that format again (a standard export of it is impossible), and reloads."""
    import jax
    from jaxdistill.finetune import finetune_and_evaluate
    from jaxdistill.models import hf, init_params
    d, files = setup
    config, _ = hf.load(str(d / "teacher"), with_mlm_head=False)
    student = config.replace(hidden_size=23, head_dim=6, intermediate_size=20)
    src = tmp_path / "student"
    assert hf.export(student, init_params(student, jax.random.key(0)), str(src), own_format=True,
                     tokenizer_from=str(d / "teacher"))["format"] == "jaxdistill"
    out = finetune_and_evaluate(_config(d, files, model=str(src), steps=2, save_model=True), str(tmp_path / "ft"))
    assert json.load(open(os.path.join(out["model_dir"], "config.json")))["model_type"] == hf.OWN_MODEL_TYPE
    loaded, _ = hf.load(out["model_dir"], with_mlm_head=False)
    assert (loaded.hidden_size, loaded.num_attention_heads, loaded.attention_head_size) == (23, 4, 6)
