"""bench/task_distill.py --quick end to end in a temporary folder: the stages at toy size (data split, teacher
fine-tuning, students of each kind, inference timing, the report section), a rerun that skips every finished
stage, and every arm's config validated. To stay near a minute, the HomoDistil student is a given stand-in
(`--homodistil-student`); the demo's HomoDistil stage itself runs in `--quick` without that flag (~1 min more)."""
import importlib.util
import json
import os
import subprocess
import sys

from tiny import write_tiny_task_csv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "task_distill.py")
# one arm per code path: two runs from a layer copy (TinyBERT), the BiLSTM on augmented data, a pretrained BERT
# student with a fresh classifier (HomoDistil's); the other arms differ only in their config, checked below
ARMS = ["bert3_tinybert", "bilstm_mse_aug", "homodistil_hinton"]


def bench_module():
    spec = importlib.util.spec_from_file_location("task_distill_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_homodistil_stand_in(path) -> None:
    """A tiny BERT on all-MiniLM-L6-v2's vocabulary (the teacher's), with no classifier, like a HomoDistil export."""
    import jax
    from jaxdistill.configs.common import offline_teacher_path
    from jaxdistill.models import BertConfig, hf, init_params
    config = BertConfig(vocab_size=30522, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=64, with_mlm_head=False)
    hf.export(config, init_params(config, jax.random.key(1)), str(path), tokenizer_from=offline_teacher_path())


def test_quick_study_runs_every_stage_and_resumes(tmp_path):
    write_homodistil_stand_in(tmp_path / "homodistil")
    data = tmp_path / "sentences.csv"
    write_tiny_task_csv(str(data), rows=80)
    out = tmp_path / "results.md"
    out.write_text("# Results\n\nother sections stay\n")
    work, results = tmp_path / "work", tmp_path / "results"
    cmd = [sys.executable, SCRIPT, "--quick", "--data-csv", str(data), "--work", str(work), "--results", str(results),
           "--out", str(out), "--homodistil-student", str(tmp_path / "homodistil"), "--arms", *ARMS]
    env = dict(os.environ, PYTHONPATH=ROOT, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one CPU device, as the study runs (not the test suite's 8 fake ones)
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# Results\n\nother sections stay\n")
    assert text.count("<!-- task_distill:start -->") == 1 and text.rstrip().endswith("<!-- task_distill:end -->")
    for name in ["teacher", "timing"] + [f"{a}-seed0" for a in ARMS]:
        assert (results / f"{name}.json").exists(), name
    for arm in ARMS:
        r = json.loads((results / f"{arm}-seed0.json").read_text())
        assert 0.0 <= r["test"]["accuracy"] <= 1.0 and r["params"] > 0 and r["settings"]["arm"] == arm
    timing = json.loads((results / "timing.json").read_text())["models"]
    assert set(timing) == {"teacher", "bert3", "bilstm", "homodistil"}
    assert "| BiLSTM | logit MSE + augmentation |" in text and "| 3-layer copy | Hinton KD | - |" in text

    # a rerun finds every stage done: nothing is trained again, and the section is rewritten alike
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "fine-tuning" not in again.stdout and "steps" not in again.stdout.split("<!--")[0]
    strip = lambda t: [line for line in t.splitlines() if not line.startswith(("**Command", "**Commit"))]  # noqa: E731
    assert strip(out.read_text()) == strip(text)

    # every arm's config (the ones not trained above too) passes the engine's validation
    from jaxdistill.experiment import resolve
    td = bench_module()
    s = td.settings(type("A", (), dict(quick=True, steps=0, seeds=None))())
    paths = {k: str(work / "data" / f"{k}.csv") for k in ("train", "validation", "test")}
    paths["teacher"] = str(work / "teacher" / "model")
    for arm in td.ARMS:
        student = str(tmp_path / "homodistil") if arm.startswith("homodistil") else \
            str(work / "runs" / "bert3_tinybert-intermediate-seed0" / "export")
        phase = "prediction" if arm == "bert3_tinybert" else ""
        resolve(td.arm_config(arm, s, paths, 0, str(tmp_path / "x"), phase=phase, student_path=student))
