"""What HomoDistil adds, isolated: one objective, equal budgets, ablated arms, confidence intervals (issue 13).

Teacher: all-MiniLM-L6-v2 made a genuine MLM teacher in two cached stages of `jaxdistill fit-mlm-head`: a head
fitted on the frozen encoder's cached features, then MLM training of the whole encoder with that head
("teacher adaptation"). Distillation corpus: the 1,500 Pang & Lee movie reviews; downstream task: the 4,000
Pang & Lee review sentences, split once (seeded) into train / validation / test. Both are fetched at run time
(`jaxdistill.data.offline`; personal-use licence, never committed).

Every arm uses HomoDistil's objective (MLM + prediction KL + hidden MSE, `configs/homodistil.py:recipe`), the
same batches, steps, learning rate and schedule, at two budgets (about 38 % and 15 % of the teacher's
backbone parameters):
  A  iterative + PLATON          HomoDistil: teacher copy, cubic schedule, PLATON importance
  B  one-shot + PLATON           every group cut to its target at the first pruning step (same warm-up)
  C  random init, compact shape  a random student of the final shape, no pruning
  D  iterative + magnitude       |theta| instead of PLATON
  E  iterative + PLATON, MLM only   no distillation terms (prediction KL and hidden MSE weights 0)

Measured per arm: the held-out teacher-student KL every `eval_every` steps (curve, area, maximum), the
held-out MLM loss on the true tokens, and fine-tuned test accuracy over seeds x learning rates, the learning
rate chosen per (arm, seed) on the validation split; paired bootstrap 95 % CIs of A-B, A-C, A-D, A-E.

    python bench/ablation.py                  # the study; resumable stage by stage
    python bench/ablation.py --stages teacher # only the teacher
    python bench/ablation.py --stages report  # the report from the fine-tunings finished so far
    python bench/ablation.py --quick --teacher DIR --corpus FILE --task-file CSV --cache DIR  # toy sizes (tests)

Time on 2 idle cores (2 Xeon vCPUs): the teacher stages ~1.5 h once (cached; 25 % held-out accuracy after ~50
min), then the 10 distillations and 60 fine-tunings 1.7 h, two at a time (`--workers`, default one process
per core, each pinned to its core: `bench/workers.py`).

Writes the section between `<!-- ablation:start -->` and `<!-- ablation:end -->` of `docs/results.md` and
`docs/ablation_kl.png`. Everything else (data, teachers, runs, markers) goes to `--cache`
(default `./jaxdistill-ablation`); each finished stage leaves a marker holding its settings, a rerun skips it,
and an interrupted distillation resumes from its checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from workers import LOG_FORMAT, available_cores, run_pinned  # noqa: E402

# Fixed before any result was seen, the same for every arm.
FULL = dict(seq_len=128, holdout=256,                                       # the teacher stages' data
            head_steps=150, head_batch=32, head_lr=1e-3, feature_batches=50,
            adapt_steps=800, adapt_batch=16, adapt_lr=1e-4, adapt_warmup=50, adapt_eval_every=50,
            teacher_eval_batches=8,
            distill_seq_len=64, distill_holdout=256, distill_batch=8, distill_steps=200, distill_lr=2e-4,
            eval_every=20, eval_batches=8, prune_every=10, budgets=(0.38, 0.15),
            ft_seeds=(0, 1, 2), ft_lrs=(1e-4, 3e-4), ft_epochs=2.0, ft_max_length=48, ft_batch=32,
            split_seed=1234, split=(0.7, 0.1, 0.2), bootstrap=10000)
QUICK = dict(FULL, seq_len=32, holdout=8,
             head_steps=4, head_batch=4, feature_batches=2, adapt_steps=4, adapt_batch=4, adapt_warmup=1,
             adapt_eval_every=2, teacher_eval_batches=1,
             distill_seq_len=32, distill_holdout=8, distill_batch=4, distill_steps=12, eval_every=4, eval_batches=2,
             prune_every=2, budgets=(0.5,), ft_seeds=(0,), ft_lrs=(3e-4,), ft_epochs=1.0,
             ft_max_length=16, ft_batch=8, bootstrap=200)

ARMS = {
    "A": dict(label="iterative + PLATON (HomoDistil)", init="copy", schedule="iterative", importance="platon"),
    "B": dict(label="one-shot + PLATON", init="copy", schedule="oneshot", importance="platon"),
    "C": dict(label="random init, compact shape", init="compact_random"),
    "D": dict(label="iterative + magnitude", init="copy", schedule="iterative", importance="magnitude"),
    "E": dict(label="iterative + PLATON, MLM loss only", init="copy", schedule="iterative", importance="platon",
              mlm_only=True),
}
COMPARISONS = ("B", "C", "D", "E")  # each against A
START, END = "<!-- ablation:start -->", "<!-- ablation:end -->"


def data_config(s, corpus, cache, seq_len=None, holdout=None):
    from jaxdistill.data import default_data_config
    c = default_data_config()
    c.corpus.source = "text"
    c.corpus.path = corpus
    c.seq_len = seq_len or s["seq_len"]
    c.holdout_sequences = holdout or s["holdout"]
    c.cache_dir = os.path.join(cache, "data-cache")
    c.num_proc = 0
    c.progress = False
    return c


def read_marker(path, want):
    if not os.path.exists(path):
        return None
    info = json.load(open(path))
    return info if json.loads(json.dumps(info.get("settings"))) == json.loads(json.dumps(want)) else None


def write_marker(path, info):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(info, f, indent=1, default=float)
    os.replace(path + ".tmp", path)
    return info


# ------------------------------------------------------------------------------------------------ teacher
def stage_teacher(s, base_teacher, corpus, cache):
    """The adapted teacher's directory, and both stages' results (cached by fit_mlm_head itself)."""
    from jaxdistill import mlm_head
    data_cfg = data_config(s, corpus, cache)
    head_dir, adapted_dir = os.path.join(cache, "teacher-head"), os.path.join(cache, "teacher-adapted")
    print(f"[teacher] head on frozen features: {s['head_steps']} steps", flush=True)
    head = mlm_head.fit_mlm_head(base_teacher, data_cfg, head_dir, mode="head", steps=s["head_steps"],
                                 batch_size=s["head_batch"], lr=s["head_lr"], warmup_steps=max(s["head_steps"] // 20, 1),
                                 feature_batches=s["feature_batches"], eval_batches=s["teacher_eval_batches"],
                                 overwrite=True, progress=False)
    print(f"[teacher] head: held-out accuracy {head['mlm_accuracy_before']:.4f} -> {head['mlm_accuracy_after']:.4f}",
          flush=True)
    print(f"[teacher] adapting the encoder: {s['adapt_steps']} steps", flush=True)
    adapted = mlm_head.fit_mlm_head(head_dir, data_cfg, adapted_dir, mode="encoder", steps=s["adapt_steps"],
                                    batch_size=s["adapt_batch"], lr=s["adapt_lr"], warmup_steps=s["adapt_warmup"],
                                    eval_every=s["adapt_eval_every"], eval_batches=s["teacher_eval_batches"],
                                    workdir=os.path.join(cache, "teacher-adapt-work"), overwrite=True,
                                    progress=False)
    print(f"[teacher] adapted: held-out accuracy {adapted['mlm_accuracy_before']:.4f} -> "
          f"{adapted['mlm_accuracy_after']:.4f} in {adapted['train_seconds']:.0f} s", flush=True)
    return adapted_dir, head, adapted


# ------------------------------------------------------------------------------------------------ distill
def backbone_params(model_dir: str) -> int:
    """Embeddings + encoder parameters of an exported model (no pooler, MLM or task head)."""
    from jaxdistill.compaction import full_param_count
    from jaxdistill.models import hf
    return int(full_param_count(hf.load_config(model_dir))["backbone"])


def distill_settings(s):
    keys = ("distill_seq_len", "distill_holdout", "distill_batch", "distill_steps", "distill_lr", "eval_every",
            "eval_batches", "prune_every")
    return {k: s[k] for k in keys}


def distill_config(s, arm: str, budget: float, teacher: str, corpus: str, cache: str, workdir: str):
    """HomoDistil's experiment (objective, copy init, pruning) with this arm's one change."""
    from jaxdistill.compaction import full_param_count
    from jaxdistill.configs import homodistil
    from jaxdistill.models import hf
    spec = ARMS[arm]
    c = homodistil.base_experiment()
    c.teacher.path = teacher
    c.data = data_config(s, corpus, cache, s["distill_seq_len"], s["distill_holdout"])
    steps = s["distill_steps"]
    c.train.update(dict(steps=steps, batch_size=s["distill_batch"], lr=s["distill_lr"],
                        warmup_steps=max(steps // 10, 1), decay="linear", dropout=False, seed=0,
                        log_every=s["eval_every"], eval_every=s["eval_every"], eval_batches=s["eval_batches"],
                        eval_per_batch=True, checkpoint_every=max(steps // 4, 1)))
    total = full_param_count(hf.load_config(teacher))["backbone"]
    c.pruning.update(dict(target_params=int(round(budget * total)), params_scope="backbone",
                          attn_structure="head_dim", every=s["prune_every"], window=s["prune_every"],
                          schedule=spec.get("schedule", "iterative"), importance=spec.get("importance", "platon")))
    if spec["init"] == "compact_random":
        c.student.init = "compact_random"
        c.pruning.enabled = False
    if spec.get("mlm_only"):
        c.recipe.weights.soft = 0.0
        for m in c.recipe.matches:
            m["weight"] = 0.0
    c.export.dir = os.path.join(workdir, "student")
    c.export.overwrite = True
    c.export.own_format = True  # the budgets' widths (e.g. hidden 191, 12 heads x 16) have no standard BERT form
    c.metrics.progress = False
    c.metrics.tensorboard = False
    return c


def read_evals(workdir: str):
    """[(step, {"kl", "mlm", "kl_batches", "mlm_batches"})] from a run's metrics.jsonl (last write per step)."""
    points = {}
    for line in open(os.path.join(workdir, "metrics.jsonl")):
        r = json.loads(line)
        if "eval/kl/batches" in r:
            points[int(r["step"])] = dict(kl=r["eval/kl"], mlm=r["eval/mlm"], kl_batches=r["eval/kl/batches"],
                                          mlm_batches=r["eval/mlm/batches"])
    return sorted(points.items())


def run_key(arm, budget) -> str:
    """"A-38": the arm at its budget in percent (names the run's folder and marker)."""
    return f"{arm}-{round(budget * 100)}"


def run_times(started: float) -> dict:
    """A finished run's marker fields for the Time line: started / finished (epoch s), time_s, and the cores
    its process could use."""
    finished = time.time()
    return dict(time_s=finished - started, started=started, finished=finished, cores=len(available_cores()))


def distill_marker(cache, arm, budget) -> str:
    return os.path.join(cache, "runs", run_key(arm, budget) + ".json")


def distill_one(s, arm, budget, teacher, corpus, cache) -> None:
    """One arm at one budget, to its marker (a run interrupted earlier with the same config resumes)."""
    from jaxdistill import train
    marker, key = distill_marker(cache, arm, budget), run_key(arm, budget)
    workdir = os.path.join(cache, "runs", key)
    if os.path.isdir(workdir) and not read_marker_compatible(workdir, s, arm, budget, teacher, corpus, cache):
        shutil.rmtree(workdir)
    print(f"[distill] {key}: {ARMS[arm]['label']}, budget {budget:.0%}", flush=True)
    started = time.time()
    summary = train.train_and_evaluate(distill_config(s, arm, budget, teacher, corpus, cache, workdir), workdir)
    if summary.get("status") not in ("completed", "already_complete"):
        raise RuntimeError(f"{key}: distillation ended with status {summary.get('status')}")
    student = os.path.join(workdir, "student")
    write_marker(marker,
                 dict(settings=dict(distill_settings(s), teacher=teacher, arm=ARMS[arm], budget=budget),
                      student=student, params=backbone_params(student), evals=read_evals(workdir),
                      **run_times(started)))


def stage_distill(s, teacher, corpus, cache, workers: int = 1):
    want = dict(distill_settings(s), teacher=teacher)
    jobs = [(arm, budget) for budget in s["budgets"] for arm in ARMS]
    missing = [(arm, budget) for arm, budget in jobs
               if read_marker(distill_marker(cache, arm, budget), dict(want, arm=ARMS[arm], budget=budget)) is None]
    if missing and workers > 1:  # tokenized once here, not by several workers into the same cache at once
        from jaxdistill.experiment import resolve
        from jaxdistill.train import prepare_data
        arm, budget = missing[0]  # any arm: they share the data settings (the workdir is only named, not made)
        prepare_data(resolve(distill_config(s, arm, budget, teacher, corpus, cache, os.path.join(cache, "runs", arm))))
    run_pinned(distill_one, [(s, arm, budget, teacher, corpus, cache) for arm, budget in missing], workers)
    out = {}
    for arm, budget in jobs:
        key = run_key(arm, budget)
        info = read_marker(distill_marker(cache, arm, budget), dict(want, arm=ARMS[arm], budget=budget))
        ev = info["evals"]
        print(f"[distill] {key}: {info['params'] / 1e6:.2f}M, KL {ev[0][1]['kl']:.4f} -> {ev[-1][1]['kl']:.4f}, "
              f"MLM {ev[0][1]['mlm']:.3f} -> {ev[-1][1]['mlm']:.3f} ({info['time_s']:.0f} s)", flush=True)
        out[key] = info
    return out


def read_marker_compatible(workdir, s, arm, budget, teacher, corpus, cache) -> bool:
    """Whether an unfinished run in `workdir` was started with this config (then it resumes)."""
    from jaxdistill import checkpoint as ckpt_lib
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        return False
    try:
        ckpt_lib.check_compatible(workdir, distill_config(s, arm, budget, teacher, corpus, cache, workdir).to_dict())
        return True
    except Exception:  # noqa: BLE001 - other settings: start over
        return False


# ------------------------------------------------------------------------------------------------ finetune
def split_task(s, task_csv: str, folder: str):
    """train / validation / test CSVs (sentence,label), split once with `split_seed`; the test split is read
    only to report, never to choose."""
    import csv
    import numpy as np
    paths = {k: os.path.join(folder, f"{k}.csv") for k in ("train", "validation", "test")}
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    with open(task_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    order = np.random.default_rng(s["split_seed"]).permutation(len(rows))
    n_train, n_val = int(s["split"][0] * len(rows)), int(s["split"][1] * len(rows))
    parts = {"train": order[:n_train], "validation": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
    os.makedirs(folder, exist_ok=True)
    for k, idx in parts.items():
        with open(paths[k] + ".tmp", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["sentence", "label"])
            w.writeheader()
            for i in idx:
                w.writerow({"sentence": rows[i]["sentence"], "label": rows[i]["label"]})
        os.replace(paths[k] + ".tmp", paths[k])
    return paths


def finetune_config(s, model: str, splits, seed: int, lr: float):
    from jaxdistill.finetune import default_finetune_config
    c = default_finetune_config()
    c.model = model
    c.task.name = "csv"
    c.task.train_file = splits["train"]
    c.task.validation_file = splits["validation"]
    c.task.text_fields = ("sentence",)
    c.task.label_field = "label"
    c.max_length = s["ft_max_length"]
    c.batch_size = s["ft_batch"]
    c.epochs = s["ft_epochs"]
    c.lr = lr
    c.seed = seed
    c.save_model = True
    c.overwrite = True
    c.progress = False
    c.tensorboard = False
    return c


def test_correct(s, model_dir: str, splits) -> list:
    """Per-example 0/1 correctness on the test split (in file order)."""
    import numpy as np
    from jaxdistill.data import load_task
    from jaxdistill.finetune import default_finetune_config, predict_logits
    from jaxdistill.models import hf
    task_cfg = default_finetune_config().task
    task_cfg.name = "csv"
    task_cfg.train_file = splits["train"]
    task_cfg.validation_file = splits["test"]
    task_cfg.text_fields = ("sentence",)
    task_cfg.label_field = "label"
    config, params = hf.load(model_dir, with_mlm_head=False, with_pooler=True)
    task = load_task(task_cfg, model_dir, s["ft_max_length"], max_positions=config.max_position_embeddings)
    logits = predict_logits(config, params, task.validation, 128)
    return (np.argmax(logits, -1) == task.validation["labels"]).astype(int).tolist()


FT_SETTINGS = ("ft_epochs", "ft_max_length", "ft_batch", "split_seed", "split")


def finetune_marker(cache, name) -> str:
    return os.path.join(cache, "finetune", name + ".json")


def finetune_one(s, name, student, splits, cache, seed, lr) -> None:
    """One fine-tuning of one distilled student (`student`: its distillation marker), to its marker."""
    from jaxdistill import finetune
    print(f"[finetune] {name}", flush=True)
    wd = os.path.join(cache, "finetune", name)
    shutil.rmtree(wd, ignore_errors=True)
    started = time.time()
    r = finetune.finetune_and_evaluate(finetune_config(s, student["student"], splits, seed, lr), wd)
    correct = test_correct(s, r["model_dir"], splits)
    write_marker(finetune_marker(cache, name),
                 dict(settings=dict({k: s[k] for k in FT_SETTINGS}, seed=seed, lr=lr, student=student["settings"]),
                      validation=r["metrics"]["accuracy"], test=sum(correct) / len(correct), test_correct=correct,
                      **run_times(started)))
    shutil.rmtree(wd, ignore_errors=True)  # the markers keep what the report needs


def stage_finetune(s, students, splits, cache, run_missing: bool = True, workers: int = 1):
    """Fine-tunes every student at every seed and lr (cached per run); with run_missing=False only reads the
    finished runs (the report of a study still running elsewhere)."""
    want = {k: s[k] for k in FT_SETTINGS}
    # Seed-major order: an interrupted study has every arm at the same seeds (a balanced partial report).
    jobs = [(f"{key}-seed{seed}-lr{lr:g}", key, seed, lr)
            for seed in s["ft_seeds"] for key in students for lr in s["ft_lrs"]]

    def finished(name, key, seed, lr):
        return read_marker(finetune_marker(cache, name), dict(want, seed=seed, lr=lr, student=students[key]["settings"]))

    if run_missing:
        run_pinned(finetune_one, [(s, name, students[key], splits, cache, seed, lr)
                                  for name, key, seed, lr in jobs if finished(name, key, seed, lr) is None], workers)
    out = {}
    for name, key, seed, lr in jobs:
        res = finished(name, key, seed, lr)
        if res is not None:
            print(f"[finetune] {name}: validation {res['validation']:.4f}", flush=True)
            out.setdefault(key, {}).setdefault(seed, {})[lr] = res
    return out


# ------------------------------------------------------------------------------------------------ analysis
def kl_area(evals, per_batch: bool = False):
    """Trapezoid area under the held-out KL curve over the distillation steps (per held-out batch, or of the
    mean), divided by the number of steps: the run's average KL."""
    import numpy as np
    steps = np.array([st for st, _ in evals], float)
    span = steps[-1] - steps[0]
    if per_batch:
        kl = np.array([e["kl_batches"] for _, e in evals], float)  # [points, batches]
        return np.trapezoid(kl, steps, axis=0) / span
    return float(np.trapezoid([e["kl"] for _, e in evals], steps) / span)


def chosen(ft_key):
    """Per seed, the learning rate with the best validation accuracy (ties: the smaller lr)."""
    return {seed: min(runs.items(), key=lambda kv: (-kv[1]["validation"], kv[0])) for seed, runs in ft_key.items()}


def paired_bootstrap(a, b, n: int, seed: int = 0):
    """Mean of a - b and its 95 % percentile interval over `n` paired resamples of the units (rows)."""
    import numpy as np
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = a - b
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n, len(d)))
    means = d[idx].mean(axis=1)
    return float(d.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def train_seconds(student_dir: str) -> float:
    """Seconds of distillation steps from the run's metrics.jsonl (the logged mean step time x the steps it
    covers), so that a run resumed after an interruption is not reported as the time of its last leg."""
    total, last = 0.0, 0
    for line in open(os.path.join(os.path.dirname(student_dir), "metrics.jsonl")):
        r = json.loads(line)
        if "perf/step_time_s" in r:
            total += r["perf/step_time_s"] * max(int(r["step"]) - last, 0)
            last = int(r["step"])
    return total


def finished_seeds(s, distilled, ft) -> list:
    """The fine-tuning seeds finished at every learning rate for every distilled student: the only ones the
    report uses, so that a partial study compares every arm on the same seeds."""
    done = [{seed for seed, runs in ft.get(key, {}).items() if len(runs) == len(s["ft_lrs"])} for key in distilled]
    return sorted(set.intersection(*done)) if done else []


def analyse(s, distilled, ft):
    import numpy as np
    rows, cis = {}, {}
    seeds = finished_seeds(s, distilled, ft)
    for key, info in distilled.items():
        ev = info["evals"]
        row = dict(params=info["params"], kl_area=kl_area(ev), kl_max=max(e["kl"] for _, e in ev),
                   kl_final=ev[-1][1]["kl"], mlm_start=ev[0][1]["mlm"], mlm_final=ev[-1][1]["mlm"],
                   time_s=train_seconds(info["student"]))
        if seeds:
            pick = chosen({seed: ft[key][seed] for seed in seeds})
            accs = [r["test"] for _, r in pick.values()]
            row.update(test_mean=float(np.mean(accs)), test_std=float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
                       lrs=[lr for lr, _ in pick.values()], val=[r["validation"] for _, r in pick.values()],
                       correct=np.mean([r["test_correct"] for _, r in pick.values()], axis=0).tolist())
        rows[key] = row
    for budget in s["budgets"]:
        b = round(budget * 100)
        a_key = f"A-{b}"
        if a_key not in rows:
            continue
        for arm in COMPARISONS:
            x_key = f"{arm}-{b}"
            if x_key not in rows:
                continue
            ci = dict(kl=paired_bootstrap(kl_area(distilled[a_key]["evals"], True),
                                          kl_area(distilled[x_key]["evals"], True), s["bootstrap"]))
            if "correct" in rows[a_key] and "correct" in rows[x_key]:
                ci["acc"] = paired_bootstrap(rows[a_key]["correct"], rows[x_key]["correct"], s["bootstrap"])
            cis[f"A-{arm} @{b}%"] = ci
    return rows, cis


# ------------------------------------------------------------------------------------------------ report
def plot(s, distilled, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    budgets = s["budgets"]
    fig, axes = plt.subplots(1, len(budgets), figsize=(6.5 * len(budgets), 4.2), squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        b = round(budget * 100)
        for arm, spec in ARMS.items():
            info = distilled.get(f"{arm}-{b}")
            if info is None:
                continue
            steps = [st for st, _ in info["evals"]]
            ax.plot(steps, [max(e["kl"], 1e-4) for _, e in info["evals"]], marker="o", ms=3,
                    label=f"{arm}: {spec['label']} ({info['params'] / 1e6:.1f}M)")
        ax.set_yscale("log")
        ax.set_xlabel("distillation step")
        ax.set_ylabel("held-out KL(teacher || student)")
        ax.set_title(f"budget {budget:.0%} of the teacher's backbone", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ci(t, nd=4, pct=False):
    mean, lo, hi = t
    f = (lambda v: f"{100 * v:+.1f}") if pct else (lambda v: f"{v:+.{nd}f}")
    return f"{f(mean)} [{f(lo)}, {f(hi)}]"


def conclusions(cis, rows):
    """Plain statements generated from the intervals and the per-arm rows (nothing about who wins is written by
    hand): the KL-area and accuracy intervals, and where an arm ends with a lower KL or MLM loss than A (single
    end points, no interval)."""
    out = []
    for name, ci in cis.items():
        arm = name.split()[0].split("-")[1]
        budget = name.split("@")[1].rstrip("%")
        a_row, x_row = rows[f"A-{budget}"], rows[f"{arm}-{budget}"]
        what = ARMS[arm]["label"]
        kl = ci["kl"]
        if kl[2] < 0:
            s = f"{name}: HomoDistil (A) keeps a lower average held-out KL than {what} ({arm})"
        elif kl[1] > 0:
            s = f"{name}: {what} ({arm}) keeps a lower average held-out KL than HomoDistil (A)"
        else:
            s = f"{name}: no clear difference in average held-out KL between A and {what} ({arm})"
        if "acc" in ci:
            acc = ci["acc"]
            if acc[1] > 0:
                s += "; A's fine-tuned test accuracy is higher"
            elif acc[2] < 0:
                s += f"; {arm}'s fine-tuned test accuracy is higher"
            else:
                s += "; test accuracy ties (the interval includes 0)"
        ends = [f"{label} ({x_row[k]:.3f} vs A's {a_row[k]:.3f})"
                for k, label in (("kl_final", "final held-out KL"), ("mlm_final", "final held-out MLM loss"))
                if x_row[k] < a_row[k]]
        if ends:
            s += f"; but {arm} ends lower in " + " and ".join(ends)
        out.append(s + ".")
    for budget in sorted({k.split("-")[1] for k in rows}, key=int, reverse=True):
        rose = [k.split("-")[0] for k, r in sorted(rows.items())
                if k.endswith(f"-{budget}") and r["mlm_final"] > r["mlm_start"]]
        fell = [k.split("-")[0] for k, r in sorted(rows.items())
                if k.endswith(f"-{budget}") and r["mlm_final"] <= r["mlm_start"]]
        if rose:
            out.append(f"At {budget} %, the held-out MLM loss ends above its start for {', '.join(rose)} (pruned from "
                       "the teacher's weights, the students lose part of its MLM ability in these steps)"
                       + (f" and falls for {', '.join(fell)}." if fell else "."))
    return out


def busy_seconds(markers) -> float:
    """Wall seconds during which at least one of these runs was running: the union of their [started,
    finished] intervals, so runs side by side count once; a marker without them (written before the
    markers recorded them) adds its own time_s."""
    total = sum(float(m.get("time_s", 0.0)) for m in markers if "started" not in m)
    end = float("-inf")
    for start, finish in sorted((m["started"], m["finished"]) for m in markers if "started" in m):
        if finish > end:
            total += finish - max(start, end)
            end = finish
    return total


def most_side_by_side(markers) -> int:
    """The largest number of these runs that were running at the same moment (from started / finished)."""
    events = sorted([(m["started"], 1) for m in markers if "started" in m]
                    + [(m["finished"], -1) for m in markers if "started" in m])
    most = running = 0
    for _, change in events:  # at equal times a finish (-1) sorts before a start: back-to-back runs do not overlap
        running += change
        most = max(most, running)
    return most


def study_time(adapted, distilled, ft) -> str:
    """One line: the wall time of each stage from its markers, and the total."""
    runs = [r for per in ft.values() for by_lr in per.values() for r in by_lr.values()]
    t_teacher = float(adapted.get("train_seconds", 0.0))
    t_distill, t_ft = busy_seconds(distilled.values()), busy_seconds(runs)
    each = sum(float(r.get("time_s", 0.0)) for r in runs) / len(runs) / 60 if runs else 0.0
    markers = list(distilled.values()) + runs
    cores = sorted({int(m["cores"]) for m in markers if "cores" in m})
    side = most_side_by_side(markers)
    how = (f" (up to {side} runs side by side, each on {' or '.join(map(str, cores))} core(s))" if side > 1 else
           f" (one run at a time, each on {' or '.join(map(str, cores))} cores)" if cores else "")
    return (f"**Time (wall, from the stage markers){how}:** teacher adaptation {t_teacher / 60:.0f} min of "
            f"training; {len(distilled)} distillations {t_distill / 60:.0f} min; {len(runs)} fine-tunings "
            f"{t_ft / 60:.0f} min ({each:.1f} min each); in all {(t_teacher + t_distill + t_ft) / 3600:.1f} h, "
            f"{(t_distill + t_ft) / 3600:.1f} h without the cached teacher.")


def report(s, args, teacher_info, distilled, ft, path):
    from report import git_rev, machine_info, write_section
    rows, cis = analyse(s, distilled, ft)
    head, adapted = teacher_info
    m = machine_info()
    expected = len(s["budgets"]) * len(ARMS)
    done_ft = sum(len(runs) for per in ft.values() for runs in per.values())
    partial = len(distilled) < expected or done_ft < expected * len(s["ft_seeds"]) * len(s["ft_lrs"])
    cmd = "python bench/ablation.py" + (" " + " ".join(args) if args else "")
    L = [START, "## What HomoDistil adds: an ablation at equal budgets", "",
         "Generated by `bench/ablation.py`; do not edit by hand (rerun the script).", ""]
    if s is QUICK:
        L += ["**Quick pipeline check (`--quick`): toy sizes, the numbers mean nothing.**", ""]
    if partial:
        L += [f"**Partial: {len(distilled)} of {expected} distillations and {done_ft} of "
              f"{expected * len(s['ft_seeds']) * len(s['ft_lrs'])} fine-tunings are finished; rerun the command to "
              "continue (finished stages are kept). Test accuracies use the fine-tuning seeds finished for every "
              f"arm: {finished_seeds(s, distilled, ft) or 'none yet'}.**", ""]
    L += [f"**Command:** `{cmd}`  ", f"**Commit:** {git_rev()}; report written {time.strftime('%Y-%m-%d %H:%M %Z')}  ",
          f"**Machine:** `{m['uname']}`; CPU {m['cpu']}, {m['cores']} cores; jax {m['jax']} ({m['backend']}); "
          f"load average when the report was written {m['load']}.", ""]
    L += [study_time(adapted, distilled, ft), ""]
    curve = adapted["curve"]
    reach = next((p for p in curve if p["mlm_accuracy"] is not None and p["mlm_accuracy"] >= 0.25), None)
    L += ["### Teacher", "",
          "all-MiniLM-L6-v2 has no MLM head and its last layer was trained for sentence embeddings. Two cached "
          "stages of `jaxdistill fit-mlm-head` make it an MLM teacher on the 1,500 Pang & Lee reviews "
          f"({s['seq_len']}-token sequences, {s['holdout']} held out):", "",
          f"1. `--mode head` (encoder frozen, features of {s['feature_batches']} batches cached): {s['head_steps']} "
          f"steps of {s['head_batch']} sequences, lr {s['head_lr']:g}: held-out masked-token accuracy "
          f"{head['mlm_accuracy_before']:.1%} -> {head['mlm_accuracy_after']:.1%}, loss {head['mlm_loss_after']:.3f}.",
          f"2. `--mode encoder` (teacher adaptation: encoder and head trained by MLM): {s['adapt_steps']} steps of "
          f"{s['adapt_batch']} sequences, lr {s['adapt_lr']:g} (warm-up {s['adapt_warmup']}, linear decay): "
          f"{adapted['mlm_accuracy_before']:.1%} -> {adapted['mlm_accuracy_after']:.1%} held-out accuracy, loss "
          f"{adapted['mlm_loss_before']:.3f} -> {adapted['mlm_loss_after']:.3f}, in {adapted['train_seconds'] / 60:.0f} "
          "min of training on the shared machine. " + (
              f"The 25 % target was first reached at step {reach['step']} ({reach['seconds'] / 60:.0f} min)."
              if reach else "The 25 % target was not reached in these steps."), "",
          "| step | " + " | ".join(str(p["step"]) for p in curve) + " |",
          "|---|" + "---|" * len(curve),
          "| held-out accuracy | " + " | ".join(f"{p['mlm_accuracy']:.1%}" for p in curve) + " |",
          "| held-out loss | " + " | ".join(f"{p['mlm_loss']:.2f}" for p in curve) + " |",
          "| minutes | " + " | ".join(f"{p['seconds'] / 60:.0f}" for p in curve) + " |", ""]
    L += ["### Setup (fixed before any result; the same for every arm)", "",
          "- Objective for every arm: HomoDistil's (`configs/homodistil.py:recipe`: MLM + 1 x prediction KL (T = 1, "
          "every real token) + 1 x hidden MSE over embeddings and every layer through identity-initialised "
          "projections); arm E sets the KL and MSE weights to 0.",
          f"- Distillation: {s['distill_steps']} steps of {s['distill_batch']} x {s['distill_seq_len']} tokens from "
          f"the reviews, the same batches for every arm; AdamW lr {s['distill_lr']:g}, 10 % warm-up, linear decay; no "
          f"dropout; pruning warm-up t_i = 10 %, final t_f = 20 % of the steps, masks updated every "
          f"{s['prune_every']} steps (window {s['prune_every']}); budgets by `pruning.target_params` over the "
          "backbone (embeddings + encoder), widths solved with one shared ratio, head dimensions pruned.",
          f"- Held-out: {s['eval_batches']} batches of {s['distill_batch']} sequences ({s['distill_holdout']} held "
          f"out), every {s['eval_every']} steps: teacher-student KL on MLM predictions (every token) and the MLM "
          "loss on the true tokens (15 % masked). KL area = the trapezoid area under the KL curve / steps (the run's "
          "average KL).",
          f"- Fine-tuning on the 4,000 Pang & Lee sentences, split once (seed {s['split_seed']}) into "
          f"{s['split'][0]:.0%} train / {s['split'][1]:.0%} validation / {s['split'][2]:.0%} test: {s['ft_epochs']:g} "
          f"epoch(s), batch {s['ft_batch']}, max length {s['ft_max_length']}, seeds {list(s['ft_seeds'])} x lr "
          f"{list(s['ft_lrs'])}; per seed the lr with the best validation accuracy is kept and its test "
          "accuracy reported; the test split is used for nothing else.",
          f"- CIs: paired bootstrap ({s['bootstrap']} resamples, 95 % percentile intervals) of A minus the arm: "
          "KL area over the held-out batches (the same batches for both), test accuracy over the test sentences "
          "(each sentence's correctness averaged over the seeds). One distillation seed per arm: the KL intervals "
          "cover held-out sampling, not distillation-seed variance.", ""]
    for budget in s["budgets"]:
        b = round(budget * 100)
        L += [f"### Budget {budget:.0%} of the teacher's backbone parameters", "",
              "| arm | backbone params | KL area | max KL | final KL | held-out MLM loss (start -> end) | "
              "test accuracy (mean +- sd over seeds) | lr chosen per seed | distill steps' time |",
              "|---|---|---|---|---|---|---|---|---|"]
        for arm, spec in ARMS.items():
            r = rows.get(f"{arm}-{b}")
            if r is None:
                L.append(f"| {arm}: {spec['label']} | not run yet | | | | | | | |")
                continue
            acc = (f"{r['test_mean']:.1%} +- {100 * r['test_std']:.1f}" if "test_mean" in r else "not run yet")
            lrs = ", ".join(f"{x:g}" for x in r.get("lrs", [])) or "-"
            L.append(f"| {arm}: {spec['label']} | {r['params'] / 1e6:.3g}M | {r['kl_area']:.4f} | {r['kl_max']:.4f} | "
                     f"{r['kl_final']:.4f} | {r['mlm_start']:.3f} -> {r['mlm_final']:.3f} | {acc} | {lrs} | "
                     f"{r['time_s'] / 60:.0f} min |")
        L.append("")
    if cis:
        L += ["### Differences (A minus arm) with paired bootstrap 95 % CIs", "",
              "| comparison | KL area | test accuracy (points) |", "|---|---|---|"]
        for name, ci in cis.items():
            L.append(f"| {name} | {_ci(ci['kl'])} | {_ci(ci['acc'], pct=True) if 'acc' in ci else 'not run yet'} |")
        L += ["", "### What the numbers say", ""] + [f"- {c}" for c in conclusions(cis, rows)] + [""]
    L += ["![held-out KL curves](ablation_kl.png)", "", END]
    plot(s, distilled, os.path.join(os.path.dirname(path), "ablation_kl.png"))
    write_section(path, START, END, "\n".join(L))
    print("\n".join(L), flush=True)


def without_stages(argv) -> list:
    """The command-line arguments less `--stages ...` (the report names the study's command)."""
    out, skipping = [], False
    for a in argv:
        if a.startswith("--stages"):
            skipping = "=" not in a
            continue
        if skipping and not a.startswith("--"):
            continue
        skipping = False
        out.append(a)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", default="jaxdistill-ablation")
    p.add_argument("--quick", action="store_true", help="every stage at toy size (a pipeline check for tests)")
    p.add_argument("--teacher", default=None, help="base teacher (default: the offline all-MiniLM-L6-v2)")
    p.add_argument("--corpus", default=None, help="distillation corpus .txt (default: the Pang & Lee reviews)")
    p.add_argument("--task-file", default=None, help="sentence,label CSV (default: the Pang & Lee sentences)")
    p.add_argument("--results", default=os.path.join(ROOT, "docs", "results.md"))
    p.add_argument("--stages", nargs="+", default=["teacher", "distill", "finetune", "report"],
                   choices=["teacher", "distill", "finetune", "report"],
                   help="the stages to run; earlier stages are read from the cache (or run when missing), "
                        "and without `finetune` the report uses only the fine-tunings already finished")
    p.add_argument("--workers", type=int, default=len(available_cores()),
                   help="distillations and fine-tunings run side by side in this many processes, each pinned to "
                        "one core (default: one per core this process may use; 1: one after another, each on "
                        "every core)")
    raw = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(raw)
    if args.workers < 1:
        p.error(f"--workers {args.workers}: give at least 1 (1 runs the distillations and fine-tunings one "
                "after another)")
    flags = os.environ.get("XLA_FLAGS", "")
    if args.quick and "xla_backend_optimization_level" not in flags:  # toy models: compile time dominates
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    import logging
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    s = QUICK if args.quick else FULL
    cache = os.path.abspath(args.cache)
    os.makedirs(cache, exist_ok=True)
    corpus, task_csv = args.corpus, args.task_file
    if corpus is None or task_csv is None:
        from jaxdistill.demo import prepare_data
        c, t = prepare_data(os.path.join(cache, "data"))
        corpus, task_csv = corpus or c, task_csv or t
    from jaxdistill.configs.common import offline_teacher_path
    base_teacher = args.teacher or offline_teacher_path()
    t0 = time.time()
    teacher, head, adapted = stage_teacher(s, base_teacher, corpus, cache)
    distilled, ft = {}, {}
    if {"distill", "finetune", "report"} & set(args.stages):
        distilled = stage_distill(s, teacher, corpus, cache, args.workers)
    if {"finetune", "report"} & set(args.stages):
        ft = stage_finetune(s, distilled, split_task(s, task_csv, os.path.join(cache, "splits")), cache,
                            run_missing="finetune" in args.stages, workers=args.workers)
    if "report" in args.stages:
        report(s, without_stages(raw), (head, adapted), distilled, ft, args.results)
    print(f"[done] {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
