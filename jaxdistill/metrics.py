"""Metric writers (console progress bar, JSONL, TensorBoard), throughput, FLOPs and MFU accounting.

FLOPs count multiply-adds as 2 FLOPs and include only the matrix work of the model (embeddings lookups,
LayerNorms and softmaxes are ignored, as usual for MFU). A distillation step costs one teacher forward plus
one student forward and backward (3x a forward), with the student counted at its current *effective* width
(kept hidden dims, FFN neurons and head dims), which is the work a compacted model of that width would do.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from typing import Any, Mapping, Optional

import jax
import numpy as np

from jaxdistill import storage, structures
from jaxdistill.errors import NonFiniteError

log = logging.getLogger(__name__)

# Peak dense matmul FLOP/s per device (bf16 unless noted), from vendor spec sheets.
PEAK_FLOPS = {
    "TPU v2": 45e12, "TPU v3": 123e12, "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12,
    "TPU v5p": 459e12, "TPU v5": 459e12, "TPU v6 lite": 918e12, "TPU v6e": 918e12,
    "NVIDIA A100": 312e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12, "NVIDIA B200": 2250e12,
    "NVIDIA L4": 121e12, "NVIDIA A10": 125e12, "NVIDIA V100": 125e12,
}


def device_peak_flops(device: Optional[jax.Device] = None, override: Optional[float] = None) -> Optional[float]:
    """Per-device peak FLOP/s: `override` if given, else looked up by device kind; None if unknown (CPU)."""
    if override:
        return float(override)
    kind = (device or jax.devices()[0]).device_kind
    for name in sorted(PEAK_FLOPS, key=len, reverse=True):
        if kind.lower().startswith(name.lower()) or name.lower() in kind.lower():
            return PEAK_FLOPS[name]
    return None


def bert_forward_flops(config, seq_len: int, widths: Optional[Mapping[str, Any]] = None,
                       mlm_head: bool = True) -> float:
    """Matmul FLOPs of one BERT forward pass over one sequence of `seq_len` tokens L.

    widths: effective widths as `pruning.remaining_widths(masks)` gives them ({"hidden": d, "ffn": [F per
    layer], "head_dims": [H * d_h kept per layer], ...}); defaults to the config's full widths.
    The parameter side comes from `structures.kept_sizes` (kept entries per parameter at these widths):
    2 L x (kept entries of every kernel applied to each token: the encoder's and, with `mlm_head`, the MLM
    transform's and the tied decoder = word-embedding table [V, d]); plus the attention activations
    2 L^2 a x 2 (scores and context) per layer of a kept head dims. The pooler and classifier (one token per
    sequence), lookups, LayerNorms and softmaxes are ignored.
    """
    model = config.replace(with_mlm_head=bool(mlm_head))
    units = structures.full_units(model) if not widths else \
        {"hidden": widths["hidden"], "attn": widths["head_dims"], "ffn": widths["ffn"]}
    per_token = 0
    for path, n in structures.kept_sizes(model, units).items():
        kernel = path[-1] == "kernel" and (structures.layer_of(path) is not None or path[0] == "mlm_transform")
        decoder = mlm_head and path == ("embeddings", "word_embeddings", "embedding")
        per_token += n if kernel or decoder else 0
    attention = sum(2 * seq_len * seq_len * int(a) * 2 for a in units["attn"])
    return float(2 * seq_len * per_token + attention)


def distill_step_flops(teacher_config, student_config, batch_size: int, seq_len: int,
                       student_widths: Optional[Mapping[str, Any]] = None, mlm_head: bool = True) -> float:
    """FLOPs of one distillation step: teacher forward + student forward and backward (3x)."""
    teacher = bert_forward_flops(teacher_config, seq_len, mlm_head=mlm_head)
    student = bert_forward_flops(student_config, seq_len, student_widths, mlm_head=mlm_head)
    return batch_size * (teacher + 3 * student)


def check_finite(step: int, scalars: Mapping[str, Any], advice: str) -> None:
    """Raises NonFiniteError when any scalar of `scalars` (the metrics of step `step`) is NaN or inf.

    The message names the step, lists every scalar, and ends with `advice` (what the user can do).
    """
    values = {k: float(v) for k, v in scalars.items() if np.ndim(v) == 0}
    if all(math.isfinite(v) for v in values.values()):
        return
    terms = ", ".join(f"{k}={v:.4g}" for k, v in sorted(values.items()))
    raise NonFiniteError(f"non-finite loss or gradients at step {step} ({terms}). {advice}")


class Throughput:
    """Tokens/s, TFLOP/s and MFU between two calls of `update`."""

    def __init__(self, peak_flops_per_device: Optional[float], num_devices: int):
        self.peak = peak_flops_per_device * num_devices if peak_flops_per_device else None
        self._t = time.perf_counter()

    def reset(self):
        self._t = time.perf_counter()

    def exclude(self, seconds: float) -> None:
        """Leaves `seconds` (e.g. an evaluation) out of the current interval."""
        self._t += seconds

    def update(self, steps: int, tokens_per_step: int, flops_per_step: float) -> dict:
        now = time.perf_counter()
        dt, self._t = max(now - self._t, 1e-9), now
        flops_s = steps * flops_per_step / dt
        out = {"perf/step_time_s": dt / max(steps, 1), "perf/tokens_per_s": steps * tokens_per_step / dt,
               "perf/tflops_per_s": flops_s / 1e12}
        if self.peak:
            out["perf/mfu"] = flops_s / self.peak
        return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def drop_lines_after(path: str, step: int) -> int:
    """Rewrites the JSONL file `path` without its lines for steps after `step` (all of them when `step` is 0)
    and without a torn last line; atomic (temporary file, then rename). Returns how many lines were dropped."""
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            row_step = int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue  # a line torn by a kill mid-write
        if step > 0 and row_step <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    if len(kept) == len(lines):
        return 0
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(kept)
    os.replace(tmp, path)
    log.info("dropped %d line(s) of %s past the restored step %d", len(lines) - len(kept), path, step)
    return len(lines) - len(kept)


# How often TensorBoard event files of a gs:// workdir are uploaded (and at close).
TENSORBOARD_SYNC_S = 60.0


class MetricWriter:
    """Writes scalar metrics to `<workdir>/metrics.jsonl`, TensorBoard event files and the console.

    Only process 0 writes; other processes get a writer that does nothing. With `workdir=None` it writes
    only to the console (log lines and the progress bar named `desc`).

    A gs:// workdir is written through a local staging folder (tensorboardX cannot write gs:// without
    TensorFlow): its `metrics.jsonl` is downloaded first, and uploaded whole after every log line; the
    TensorBoard event files are uploaded every TENSORBOARD_SYNC_S seconds and at close. A run killed between
    uploads loses at most the lines since its last log line, which the resumed run writes again.
    """

    def __init__(self, workdir: Optional[str], total_steps: int, start_step: int = 0, tensorboard: bool = True,
                 progress: bool = True, desc: str = "distill", drop_after: Optional[int] = None):
        """drop_after: a resumed run's restored step; lines of `metrics.jsonl` past it (written by the run that
        was interrupted, and about to be written again) are dropped first; 0 drops them all."""
        self.active = jax.process_index() == 0
        self.total = total_steps
        self._jsonl = self._tb = self._bar = None
        self.workdir, self._staging, self._tb_synced = workdir, None, time.monotonic()
        if not self.active:
            return
        if workdir is not None:
            local = self._stage(workdir) if storage.is_remote(workdir) else workdir
            os.makedirs(local, exist_ok=True)
            if drop_after is not None:
                drop_lines_after(os.path.join(local, "metrics.jsonl"), drop_after)
            self._jsonl = open(os.path.join(local, "metrics.jsonl"), "a")
            if tensorboard:
                from tensorboardX import SummaryWriter
                self._tb = SummaryWriter(os.path.join(local, "tensorboard"))
        if progress:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=total_steps, initial=start_step, desc=desc, unit="step",
                             dynamic_ncols=True, mininterval=1.0)

    def _stage(self, workdir: str) -> str:
        """A local folder standing in for the gs:// `workdir`, holding a copy of its metrics.jsonl."""
        self._staging = tempfile.mkdtemp(prefix="jaxdistill-metrics-")
        remote = storage.join(workdir, "metrics.jsonl")
        if storage.exists(remote):
            with open(os.path.join(self._staging, "metrics.jsonl"), "wb") as f:
                f.write(storage.read_bytes(remote))
        return self._staging

    def sync(self, tensorboard: bool = False) -> None:
        """Uploads the staged metrics.jsonl (and with `tensorboard` the event files) to a gs:// workdir."""
        if self._staging is None:
            return
        if self._jsonl is not None and not self._jsonl.closed:
            self._jsonl.flush()
        staged = os.path.join(self._staging, "metrics.jsonl")
        if os.path.exists(staged):
            with open(staged, "rb") as f:
                storage.write_bytes(storage.join(self.workdir, "metrics.jsonl"), f.read())
        events = os.path.join(self._staging, "tensorboard")
        if tensorboard and os.path.isdir(events):
            storage.upload_dir(events, storage.join(self.workdir, "tensorboard"))
            self._tb_synced = time.monotonic()

    def write(self, step: int, scalars: Mapping[str, Any]) -> None:
        if not self.active:
            return
        clean = {k: (float(v) if np.ndim(v) == 0 else np.asarray(v).tolist()) for k, v in scalars.items()}
        if self._jsonl is not None:
            self._jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
            self._jsonl.flush()
        if self._tb is not None:
            for k, v in clean.items():
                if isinstance(v, float) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()
        keys = ("loss", "train/loss", "accuracy", "eval/kl", "train/teacher_student_kl", "perf/tokens_per_s",
                "perf/mfu")
        short = {k.split("/")[-1]: _fmt(clean[k]) for k in keys if k in clean}
        if self._bar is not None:
            self._bar.set_postfix(short, refresh=False)
        line = " ".join(f"{k}={_fmt(v)}" for k, v in clean.items() if not isinstance(v, list))
        log.info("step %d/%d %s", step, self.total, line)
        self.sync(tensorboard=time.monotonic() - self._tb_synced > TENSORBOARD_SYNC_S)

    def advance(self, step: int) -> None:
        if self._bar is not None:
            self._bar.n = step
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        try:
            self.sync(tensorboard=True)
        finally:
            if self._staging is not None:
                shutil.rmtree(self._staging, ignore_errors=True)
                self._staging = None
