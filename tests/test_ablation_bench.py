"""bench/ablation.py --quick: every stage (teacher head + adaptation, five arms, fine-tuning, report) at toy size."""
import os
import subprocess
import sys

from engine_helpers import HERE, env_with
from tiny import write_tiny_corpus, write_tiny_task_csv, write_tiny_teacher

ROOT = os.path.dirname(HERE)


def test_quick_study_runs_every_stage_and_reports(tmp_path):
    write_tiny_teacher(tmp_path / "teacher", with_mlm_head=False)
    write_tiny_corpus(tmp_path / "corpus.txt", num_docs=60)
    write_tiny_task_csv(tmp_path / "task.csv", rows=80)
    results = tmp_path / "results.md"
    results.write_text("# Results\n\nkept section\n")
    cmd = [sys.executable, os.path.join(ROOT, "bench", "ablation.py"), "--quick", "--cache", str(tmp_path / "cache"),
           "--teacher", str(tmp_path / "teacher"), "--corpus", str(tmp_path / "corpus.txt"),
           "--task-file", str(tmp_path / "task.csv"), "--results", str(results)]
    out = subprocess.run(cmd, env=env_with(XLA_FLAGS=""), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = results.read_text()
    assert "kept section" in text and "<!-- ablation:start -->" in text and "Quick pipeline check" in text
    assert "Partial" not in text
    for arm in ("A: iterative + PLATON", "B: one-shot", "C: random init", "D: iterative + magnitude", "E: "):
        assert arm in text, arm
    for comparison in ("A-B @50%", "A-C @50%", "A-D @50%", "A-E @50%"):
        assert comparison in text, comparison
    assert (tmp_path / "ablation_kl.png").exists()
    # the arms differ where they should: C is smaller-born, A and C reach the same budget
    import json
    runs = {k: json.load(open(tmp_path / "cache" / "runs" / f"{k}-50.json")) for k in ("A", "B", "C", "D", "E")}
    assert abs(runs["A"]["params"] - runs["C"]["params"]) <= 0.02 * runs["A"]["params"]
    assert len({r["params"] for r in runs.values()}) == 1  # every arm ends at the same budget
    if len(os.sched_getaffinity(0)) >= 2:  # the default --workers ran them side by side, one core each
        assert {r["cores"] for r in runs.values()} == {1}
    # a rerun finds every stage finished and recomputes nothing
    again = subprocess.run(cmd, env=env_with(XLA_FLAGS=""), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "[distill] A-50: iterative" not in again.stdout, again.stdout[-2000:]


def _ablation():
    import importlib.util
    spec = importlib.util.spec_from_file_location("ablation", os.path.join(ROOT, "bench", "ablation.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_kl_area_lr_choice_and_paired_bootstrap_by_hand():
    import numpy as np
    ab = _ablation()
    evals = [(0, dict(kl=1.0, kl_batches=[1.0, 1.0])), (10, dict(kl=0.5, kl_batches=[0.0, 1.0])),
             (30, dict(kl=0.25, kl_batches=[0.5, 0.0]))]
    # trapezoids: (1 + .5) / 2 * 10 + (.5 + .25) / 2 * 20 = 7.5 + 7.5 = 15, over 30 steps
    assert ab.kl_area(evals) == 0.5
    np.testing.assert_allclose(ab.kl_area(evals, per_batch=True), [(5 + 2.5 * 2) / 30, (10 + 10) / 30])
    runs = {0: {1e-4: dict(validation=0.7), 3e-4: dict(validation=0.8)},
            1: {1e-4: dict(validation=0.8), 3e-4: dict(validation=0.8)}}
    pick = ab.chosen(runs)
    assert pick[0][0] == 3e-4 and pick[1][0] == 1e-4  # ties go to the smaller lr
    mean, lo, hi = ab.paired_bootstrap([1, 1, 1, 0], [0, 1, 1, 0], 2000)
    assert mean == 0.25 and 0.0 <= lo <= 0.25 <= hi <= 0.75
    same = ab.paired_bootstrap([0.3, 0.5, 0.9], [0.3, 0.5, 0.9], 500)
    assert same == (0.0, 0.0, 0.0)  # paired: identical arms differ by exactly 0 in every resample
    rows = {"A-38": dict(kl_final=0.8, mlm_start=4.7, mlm_final=6.0),
            "B-38": dict(kl_final=0.7, mlm_start=4.7, mlm_final=6.1)}
    assert ab.conclusions({"A-B @38%": dict(kl=(-0.1, -0.2, -0.05), acc=(0.01, -0.02, 0.04))}, rows) == [
        "A-B @38%: HomoDistil (A) keeps a lower average held-out KL than one-shot + PLATON (B); test accuracy "
        "ties (the interval includes 0); but B ends lower in final held-out KL (0.700 vs A's 0.800).",
        "At 38 %, the held-out MLM loss ends above its start for A, B (pruned from the teacher's weights, the "
        "students lose part of its MLM ability in these steps)."]


def test_partial_report_uses_the_seeds_every_arm_finished():
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import ablation
    s = dict(ft_lrs=(1e-4, 3e-4))
    run = dict(validation=0.5)
    ft = {"A-38": {0: {1e-4: run, 3e-4: run}, 1: {1e-4: run, 3e-4: run}},
          "B-38": {0: {1e-4: run, 3e-4: run}, 1: {1e-4: run}}}  # B's seed 1 lacks an lr: not comparable yet
    assert ablation.finished_seeds(s, {"A-38": {}, "B-38": {}}, ft) == [0]
    assert ablation.finished_seeds(s, {"A-38": {}, "B-38": {}, "C-38": {}}, ft) == []
    assert ablation.without_stages(["--cache", "x", "--stages", "finetune", "report", "--quick"]) == ["--cache", "x",
                                                                                                      "--quick"]


def test_study_time_sums_the_stage_markers():
    ab = _ablation()
    distilled = {"A-38": dict(time_s=600.0), "B-38": dict(time_s=480.0)}
    ft = {"A-38": {0: {1e-4: dict(time_s=120.0), 3e-4: dict(time_s=60.0)}}, "B-38": {0: {1e-4: dict(time_s=180.0)}}}
    # 2160 + (600 + 480) + (120 + 60 + 180) = 3600 s; without the teacher 1440 s
    assert ab.study_time(dict(train_seconds=2160.0), distilled, ft) == (
        "**Time (wall, from the stage markers):** teacher adaptation 36 min of training; 2 distillations 18 min; "
        "3 fine-tunings 6 min (2.0 min each); in all 1.0 h, 0.4 h without the cached teacher.")


def test_busy_seconds_counts_runs_side_by_side_once():
    ab = _ablation()
    side_by_side = [dict(started=0.0, finished=10.0), dict(started=2.0, finished=6.0),
                    dict(started=8.0, finished=15.0), dict(started=20.0, finished=21.0)]
    assert ab.busy_seconds(side_by_side) == 15.0 + 1.0  # [0, 15] and [20, 21]
    assert ab.busy_seconds([dict(time_s=7.0), dict(started=1.0, finished=3.0)]) == 9.0  # older markers: time_s
    assert ab.most_side_by_side(side_by_side) == 2
    assert ab.most_side_by_side([dict(started=0.0, finished=5.0), dict(started=5.0, finished=9.0)]) == 1
    distilled = {"A-38": dict(started=0.0, finished=600.0, cores=1), "B-38": dict(started=0.0, finished=300.0, cores=1)}
    ft = {"A-38": {0: {1e-4: dict(started=600.0, finished=660.0, time_s=60.0, cores=1),
                       3e-4: dict(started=600.0, finished=720.0, time_s=120.0, cores=1)}}}
    line = ab.study_time(dict(train_seconds=1800.0), distilled, ft)
    assert "(up to 2 runs side by side, each on 1 core(s))" in line and "2 distillations 10 min" in line and "2 fine-tunings 2 min (1.5 min each)" in line
    assert "in all 0.7 h, 0.2 h without the cached teacher" in line
