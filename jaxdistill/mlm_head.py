"""Fit an MLM head onto a frozen BERT encoder that ships without one (e.g. sentence-transformers models).

Prediction-layer distillation (Hinton KD on MLM logits, HomoDistil's prediction term) needs a teacher
with a meaningful MLM head. Encoders such as all-MiniLM-L6-v2 have none, and `hf.load` gives them a fresh
random one. `fit_mlm_head` trains only that head, `mlm_transform` (dense d -> d), `mlm_LayerNorm` and
`mlm_bias` [V], on masked-language-model batches, with everything else frozen: the decoder stays tied to
the (frozen) word embeddings, and the encoder's last hidden state is computed outside the differentiated
function, so each step costs one encoder forward plus the head's forward and backward. The head runs only
at the masked positions (about 15 % of the tokens), which makes the [d, V] decoder matmul ~7x cheaper.

The result is written with `hf.export` as a standard `BertForMaskedLM` directory (tokenizer copied): its
encoder and word embeddings are bit-identical to the input's. `BertForMaskedLM` has no pooler, so the
teacher's pooler is not part of the output (jaxdistill recreates one when a pooler is needed).
"""
from __future__ import annotations

import logging
import math
import os
import time
from typing import Any, Dict, Mapping, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdistill import metrics as metrics_lib
from jaxdistill import storage
from jaxdistill import sharding as shard_lib
from jaxdistill.errors import ConfigError, DataError
from jaxdistill.models import Bert, BertConfig, hf, logical_axes
from jaxdistill.models.bert import MlmHead
from jaxdistill.optimizer import OptimizerConfig, make_optimizer
from jaxdistill.train.state import create_state

log = logging.getLogger(__name__)

HEAD_KEYS = ("mlm_transform", "mlm_LayerNorm", "mlm_bias")
IGNORE_INDEX = -100


def max_targets(batch_size: int, seq_len: int, mlm_probability: float) -> int:
    """Static number K of MLM target slots per batch: 1.25x the expected count plus 32, at most B*L.

    A batch with more targets (far in the tail for B*L in the hundreds or more) trains on the first K of them.
    """
    return int(min(batch_size * seq_len, math.ceil(1.25 * mlm_probability * batch_size * seq_len) + 32))


def gather_targets(mlm_labels: np.ndarray, k: int) -> Tuple[np.ndarray, ...]:
    """Host-side: flat positions of MLM targets in chunks of `k`.

    mlm_labels: int [B, L] (-100 = not a target). Returns a tuple of (positions int32 [k], labels int32 [k],
    weights float32 [k]) chunks covering every target; unused slots have weight 0 (and position/label 0).
    """
    flat = np.asarray(mlm_labels).reshape(-1)
    pos = np.flatnonzero(flat != IGNORE_INDEX)
    chunks = []
    for start in range(0, max(len(pos), 1), k):
        p = pos[start:start + k]
        idx = np.zeros(k, np.int32)
        lab = np.zeros(k, np.int32)
        w = np.zeros(k, np.float32)
        idx[:len(p)], lab[:len(p)], w[:len(p)] = p, flat[p], 1.0
        chunks.append((idx, lab, w))
    return tuple(chunks)


def _split(params: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    head = {k: params[k] for k in HEAD_KEYS}
    frozen = {k: v for k, v in params.items() if k not in HEAD_KEYS}
    return head, frozen


def _has_mlm_head(directory: str) -> bool:
    path = os.path.join(directory, "model.safetensors")
    if not os.path.exists(path):
        return False
    from safetensors import safe_open
    with safe_open(path, framework="numpy") as f:
        return any("predictions.transform" in k for k in f.keys())


def _build_fns(config: BertConfig, tx):
    """Jitted train_step(state, frozen, batch, positions, labels, weights) -> (state, metrics), with the head
    as the TrainState's student, and eval_step(head, frozen, batch, positions, labels, weights)."""
    encoder = Bert(config.replace(with_mlm_head=False, with_pooler=False, num_labels=0))

    def hidden_at(frozen, batch, idx):
        out = encoder.apply({"params": frozen}, batch["input_ids"], batch["attention_mask"],
                            batch["token_type_ids"], deterministic=True)
        h = jax.lax.stop_gradient(out.last_hidden_state)  # [B, L, d], frozen
        return h.reshape(-1, h.shape[-1])[idx]  # [K, d]

    def scores(head, frozen, h, lab, w):
        logits = MlmHead(config).apply({"params": head}, h, frozen["embeddings"]["word_embeddings"]["embedding"])
        logits = logits.astype(jnp.float32)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, lab)
        correct = (jnp.argmax(logits, axis=-1) == lab).astype(jnp.float32)
        return jnp.sum(ce * w), jnp.sum(correct * w)

    def train_step(state, frozen, batch, idx, lab, w):
        h = hidden_at(frozen, batch, idx)
        n = jnp.maximum(jnp.sum(w), 1.0)

        def loss_fn(params):
            ce, correct = scores(params["student"], frozen, h, lab, w)
            return ce / n, correct / n

        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                            opt_state=opt_state)
        return new, {"loss": loss, "accuracy": acc}

    def eval_step(head, frozen, batch, idx, lab, w):
        ce, correct = scores(head, frozen, hidden_at(frozen, batch, idx), lab, w)
        return ce, correct, jnp.sum(w)

    return jax.jit(train_step, donate_argnums=(0,)), jax.jit(eval_step)


def _evaluate(eval_step, head, frozen, data, num_batches: int, batch_size: int, k: int) -> Tuple[float, float]:
    """(mean cross-entropy per target token, accuracy) over held-out batches 0..num_batches-1."""
    ce = correct = count = 0.0
    for i in range(num_batches):
        b = data.eval_batch(i, batch_size)
        inputs = {n: b[n] for n in ("input_ids", "attention_mask", "token_type_ids")}
        for idx, lab, w in gather_targets(b["mlm_labels"], k):
            c, a, n = jax.device_get(eval_step(head, frozen, inputs, idx, lab, w))
            ce, correct, count = ce + float(c), correct + float(a), count + float(n)
    if count == 0:
        raise DataError("the held-out batches have no MLM targets; use a larger corpus or data.holdout_sequences")
    return ce / count, correct / count


def fit_mlm_head(teacher_path: str, data_cfg, out_dir: str, *, steps: int = 300, batch_size: int = 32,
                 lr: float = 1e-3, warmup_steps: int = 30, seed: int = 0, overwrite: bool = False,
                 eval_batches: int = 4, weight_decay: float = 0.01, progress: bool = True) -> dict:
    """Fits an MLM head on the frozen teacher at `teacher_path` and exports it to `out_dir`.

    Args:
      teacher_path: a BERT directory (Hugging Face or jaxdistill format; local or gs://), usually one without
        an MLM head; if it has one, fitting continues from it.
      data_cfg: the data section (`jaxdistill.data.default_data_config()`): corpus, seq_len, masking;
        `holdout_sequences` must be > 0 when `eval_batches` > 0.
      out_dir: where the teacher with its fitted head is written (a BertForMaskedLM directory; local or
        gs://). It is probed for writing before the training (`storage.check_writable`).
      steps, batch_size (sequences per step), lr (peak, linear warm-up over `warmup_steps`, then linear decay
        to 0), weight_decay (AdamW; transform kernel only), seed (the fresh head's init).
      overwrite: allow writing into a non-empty `out_dir`.
      eval_batches: held-out batches (of `batch_size`) measured before and after fitting.
    Returns {"mlm_loss_before", "mlm_loss_after" (mean cross-entropy per masked token on the held-out
      batches), "mlm_accuracy_before", "mlm_accuracy_after", "train_loss_last", "steps", "out_dir",
      "seconds" (the whole call), "train_seconds" (the training loop, compilation included)}.
    """
    from jaxdistill.data import build_pretraining_data

    t_start = time.perf_counter()
    problems = [f"{n} must be positive (got {v})" for n, v in
                (("steps", steps), ("batch_size", batch_size), ("lr", lr)) if not v > 0]
    problems += [f"{n} must be >= 0 (got {v})" for n, v in
                 (("warmup_steps", warmup_steps), ("eval_batches", eval_batches)) if v < 0]
    if eval_batches and int(data_cfg.get("holdout_sequences", 0) or 0) <= 0:
        problems.append("data.holdout_sequences must be > 0 to measure the held-out MLM loss (or eval_batches=0)")
    if problems:
        raise ConfigError("fit_mlm_head: " + "; ".join(problems))
    hf.check_out_dir(out_dir, overwrite)
    storage.check_writable(out_dir, "the output directory")  # before the training, not after it
    if storage.is_remote(teacher_path):  # a gs:// teacher: its local mirror (downloaded once)
        teacher_path = hf.resolve_path(teacher_path)
    if not os.path.isdir(teacher_path):
        raise FileNotFoundError(f"teacher directory {teacher_path!r} does not exist; pass the directory that holds "
                                "config.json and model.safetensors")
    base = hf.load_config(teacher_path)
    data = build_pretraining_data(data_cfg, teacher_path, int(batch_size), vocab_size=base.vocab_size,
                                  max_positions=base.max_position_embeddings)
    if _has_mlm_head(teacher_path):
        log.warning("%s already has an MLM head; fitting continues from it", teacher_path)
    config, params = hf.load(teacher_path, with_mlm_head=True, with_pooler=False, seed=int(seed),
                             dtype="float32", remat=False)
    head, frozen = _split(params)
    tx = make_optimizer(OptimizerConfig(lr=float(lr), steps=int(steps), warmup_steps=int(warmup_steps),
                                        decay="linear", grad_clip=1.0, weight_decay=float(weight_decay)))
    train_step, eval_step = _build_fns(config, tx)
    device = jax.devices()[:1]
    mesh = shard_lib.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=device)
    rules = shard_lib.rules_from_config(None)
    specs = {k: v for k, v in logical_axes(config).items() if k in HEAD_KEYS}
    state, _ = create_state(config, head, tx, mesh, rules, int(seed), student_specs=specs)
    frozen = jax.device_put(frozen, device[0])
    k = max_targets(int(batch_size), data.seq_len, float(data_cfg.get("mlm_probability", 0.15)))

    before = (_evaluate(eval_step, state.student, frozen, data, eval_batches, batch_size, k) if eval_batches
              else (None, None))
    t_train, dropped, last = time.perf_counter(), 0, {}
    writer = metrics_lib.MetricWriter(None, int(steps), progress=progress, desc="fit MLM head")
    try:
        for step, b in data.iterator(0, end_step=int(steps)):
            chunks = gather_targets(b["mlm_labels"], k)
            dropped += int(sum(c[2].sum() for c in chunks[1:]))
            idx, lab, w = chunks[0]
            inputs = {n: b[n] for n in ("input_ids", "attention_mask", "token_type_ids")}
            state, m = train_step(state, frozen, inputs, idx, lab, w)
            if (step + 1) % 10 == 0 or step + 1 == steps:
                last = {n: float(v) for n, v in jax.device_get(m).items()}
                metrics_lib.check_finite(step + 1, last, "Lower --lr.")
                writer.write(step + 1, last)
            writer.advance(step + 1)
        jax.block_until_ready(state)
    finally:
        writer.close()
    train_seconds = time.perf_counter() - t_train
    if dropped:
        log.info("fit_mlm_head: %d MLM targets beyond the %d slots per batch were skipped", dropped, k)
    head = jax.tree.map(np.asarray, jax.device_get(state.student))
    after = _evaluate(eval_step, head, frozen, data, eval_batches, batch_size, k) if eval_batches else (None, None)

    fitted = dict(jax.tree.map(np.asarray, jax.device_get(frozen)), **head)
    hf.export(config.replace(with_mlm_head=True, with_pooler=False), fitted, out_dir, tokenizer_from=teacher_path,
              overwrite=overwrite)
    result = {"mlm_loss_before": before[0], "mlm_loss_after": after[0], "mlm_accuracy_before": before[1],
              "mlm_accuracy_after": after[1], "train_loss_last": last.get("loss"), "steps": int(steps),
              "out_dir": out_dir, "seconds": time.perf_counter() - t_start, "train_seconds": train_seconds}
    log.info("fit_mlm_head: held-out MLM loss %s -> %s, accuracy %s -> %s in %.1fs", *[
        f"{v:.3f}" if v is not None else "-" for v in (before[0], after[0], before[1], after[1])],
        result["seconds"])
    return result
