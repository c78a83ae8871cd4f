"""Give a BERT encoder a trained MLM head: fit the head alone, or adapt the whole encoder (`fit_mlm_head`).

Prediction-layer distillation (Hinton KD on MLM logits, HomoDistil's prediction term) needs a teacher with a
meaningful MLM head. Encoders such as all-MiniLM-L6-v2 ship without one, and `hf.load` gives them a fresh
random one. Two modes:

- "head": the encoder stays frozen and only the head (`mlm_transform` d -> d, `mlm_LayerNorm`, `mlm_bias` [V];
  decoder tied to the frozen word embeddings) trains, on encoder features cached once, so later epochs cost
  only the head. The head runs at the masked positions only (about 15 % of the tokens), which makes the
  [d, V] decoder matmul ~7x cheaper. Cheap, but bounded by what the last layer still knows about tokens: a
  sentence-embedding model's last layer plateaus low (about 11 % held-out accuracy for all-MiniLM-L6-v2).
- "encoder" (teacher adaptation): MLM training of encoder and head together, checkpointed and resumable,
  with the held-out masked-token loss and accuracy logged every `eval_every` steps.

The result is written with `hf.export` as a standard `BertForMaskedLM` directory (tokenizer copied) with
`fit_mlm_head.json` (settings, held-out curve); `BertForMaskedLM` has no pooler, so the teacher's pooler is
not part of the output (jaxdistill recreates one when a pooler is needed).
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any, Dict, Mapping, Optional, Tuple

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


def _has_mlm_head(directory: str) -> bool:
    path = os.path.join(directory, "model.safetensors")
    if not os.path.exists(path):
        return False
    from safetensors import safe_open
    with safe_open(path, framework="numpy") as f:
        return any("predictions.transform" in k for k in f.keys())



def _split(params: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    head = {k: params[k] for k in HEAD_KEYS}
    rest = {k: v for k, v in params.items() if k not in HEAD_KEYS}
    return head, rest


class _Fns:
    """The jitted pieces of both modes, for one BertConfig and optimizer.

    `features(rest, batch, idx)` -> the encoder's last hidden state at flat positions idx: float32 [K, d].
    `head_step(state, word_emb, h, lab, w)`: one AdamW step of the head alone on cached features h [K, d].
    `encoder_step(state, batch, idx, lab, w)`: one step of the whole model (encoder with dropout, and head).
    `eval_step(params, batch, idx, lab, w)` -> (sum of CE, number correct, number of targets) over the K slots.
    Losses are the mean cross-entropy over the real targets (weights w, float32 [K]).
    """

    def __init__(self, config: BertConfig, tx):
        encoder = Bert(config.replace(with_mlm_head=False, with_pooler=False, num_labels=0))
        head_model = MlmHead(config)

        def hidden(rest, batch, idx, rng=None):
            out = encoder.apply({"params": rest}, batch["input_ids"], batch["attention_mask"],
                                batch["token_type_ids"], deterministic=rng is None,
                                rngs=None if rng is None else {"dropout": rng})
            h = out.last_hidden_state
            return h.reshape(-1, h.shape[-1])[idx]

        def scores(head, word_emb, h, lab, w):
            logits = head_model.apply({"params": head}, h, word_emb).astype(jnp.float32)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, lab)
            correct = (jnp.argmax(logits, axis=-1) == lab).astype(jnp.float32)
            return jnp.sum(ce * w), jnp.sum(correct * w)

        def apply_grads(state, grads):
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                                 opt_state=opt_state)

        def head_step(state, word_emb, h, lab, w):
            n = jnp.maximum(jnp.sum(w), 1.0)

            def loss_fn(params):
                ce, correct = scores(params["student"], word_emb, h, lab, w)
                return ce / n, correct / n

            (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
            return apply_grads(state, grads), {"loss": loss, "accuracy": acc}

        def encoder_step(state, batch, idx, lab, w):
            n = jnp.maximum(jnp.sum(w), 1.0)
            rng = jax.random.fold_in(state.rng, state.step)

            def loss_fn(params):
                head, rest = _split(params["student"])
                h = hidden(rest, batch, idx, rng)
                ce, correct = scores(head, rest["embeddings"]["word_embeddings"]["embedding"], h, lab, w)
                return ce / n, correct / n

            (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
            return apply_grads(state, grads), {"loss": loss, "accuracy": acc}

        def eval_step(params, batch, idx, lab, w):
            head, rest = _split(params)
            ce, correct = scores(head, rest["embeddings"]["word_embeddings"]["embedding"], hidden(rest, batch, idx),
                                 lab, w)
            return ce, correct, jnp.sum(w)

        self.features = jax.jit(hidden)
        self.head_step = jax.jit(head_step, donate_argnums=(0,))
        self.encoder_step = jax.jit(encoder_step, donate_argnums=(0,))
        self.eval_step = jax.jit(eval_step)


def _inputs(batch):
    return {n: batch[n] for n in ("input_ids", "attention_mask", "token_type_ids")}


def _evaluate(fns: _Fns, params, data, num_batches: int, batch_size: int, k: int) -> Tuple[float, float]:
    """(mean cross-entropy per target token, accuracy) over held-out batches 0..num_batches-1."""
    ce = correct = count = 0.0
    for i in range(num_batches):
        b = data.eval_batch(i, batch_size)
        for idx, lab, w in gather_targets(b["mlm_labels"], k):
            c, a, n = jax.device_get(fns.eval_step(params, _inputs(b), idx, lab, w))
            ce, correct, count = ce + float(c), correct + float(a), count + float(n)
    if count == 0:
        raise DataError("the held-out batches have no MLM targets; use a larger corpus or data.holdout_sequences")
    return ce / count, correct / count


MODES = ("head", "encoder")
RECORD = "fit_mlm_head.json"


def fit_mlm_head(teacher_path: str, data_cfg, out_dir: str, *, mode: str = "head", steps: int = 300,
                 batch_size: int = 32, lr: float = 1e-3, warmup_steps: int = 30, seed: int = 0,
                 overwrite: bool = False, eval_batches: int = 4, eval_every: Optional[int] = None,
                 feature_batches: Optional[int] = None, workdir: Optional[str] = None, checkpoint_every: int = 200,
                 weight_decay: float = 0.01, progress: bool = True) -> dict:
    """Gives the teacher at `teacher_path` a trained MLM head and exports it to `out_dir`.

    Modes:
      "head": the encoder is frozen. Its last hidden states at the masked positions of the first
        `feature_batches` training batches are computed once (one encoder forward each) and cached in memory;
        the head (`mlm_transform`, `mlm_LayerNorm`, `mlm_bias`; decoder tied to the frozen word embeddings)
        then trains `steps` steps cycling over them, so epochs after the first cost only the head.
        The output's encoder is bit-identical to the input's.
      "encoder" (teacher adaptation): MLM training of the whole model, encoder (with its dropout) and head
        together, one fresh batch per step; a sentence-embedding encoder such as all-MiniLM-L6-v2 regains
        token identity this way. With `workdir` it checkpoints every `checkpoint_every` steps there and a
        rerun resumes from the newest checkpoint (batches are a pure function of the step).

    Args:
      teacher_path: a BERT directory (Hugging Face or jaxdistill format; local or gs://); if it has an MLM
        head, training continues from it, otherwise the head starts fresh from `seed`.
      data_cfg: the data section (`jaxdistill.data.default_data_config()`); `holdout_sequences` must be > 0
        when `eval_batches` > 0.
      out_dir: where the teacher with its head is written (a BertForMaskedLM directory, tokenizer copied, and
        `fit_mlm_head.json` recording the settings and the held-out curve). When it already holds a
        finished result with the same settings, that result is returned without training (a cache). Local or
        gs://; probed for writing before the training (`storage.check_writable`).
      steps, batch_size (sequences per step), lr (peak; linear warm-up over `warmup_steps`, then linear decay
        to 0), weight_decay (AdamW, kernels only), seed (fresh head, dropout).
      eval_batches: held-out batches (of `batch_size`) measured before, every `eval_every` steps (None: only
        before and after) and after training: mean CE per masked token and masked-token accuracy.
      feature_batches: "head" mode's cached batches (None: min(steps, 256)).
      overwrite: allow writing into a non-empty `out_dir` that holds something else.
    Returns {"mode", "mlm_loss_before", "mlm_loss_after", "mlm_accuracy_before", "mlm_accuracy_after",
      "curve" (list of {"step", "mlm_loss", "mlm_accuracy", "seconds"}), "train_loss_last", "steps",
      "out_dir", "seconds" (this call), "train_seconds" (training, compilation included, summed over
      resumed runs), "cached" (True when read from a finished `out_dir`)}.
    """
    from jaxdistill.data import build_pretraining_data

    t_start = time.perf_counter()
    problems = [f"{n} must be positive (got {v})" for n, v in
                (("steps", steps), ("batch_size", batch_size), ("lr", lr), ("checkpoint_every", checkpoint_every))
                if not v > 0]
    problems += [f"{n} must be >= 0 (got {v})" for n, v in
                 (("warmup_steps", warmup_steps), ("eval_batches", eval_batches)) if v < 0]
    problems += [f"{n} must be positive or None (got {v})" for n, v in
                 (("eval_every", eval_every), ("feature_batches", feature_batches)) if v is not None and v <= 0]
    if mode not in MODES:
        problems.append(f"mode={mode!r} is not one of {MODES} ('head': frozen encoder, 'encoder': adapt the "
                        "whole model)")
    if eval_batches and int(data_cfg.get("holdout_sequences", 0) or 0) <= 0:
        problems.append("data.holdout_sequences must be > 0 to measure the held-out MLM loss (or eval_batches=0)")
    if problems:
        raise ConfigError("fit_mlm_head: " + "; ".join(problems))
    settings = dict(mode=mode, teacher=str(teacher_path), steps=int(steps), batch_size=int(batch_size), lr=float(lr),
                    warmup_steps=int(warmup_steps), seed=int(seed), weight_decay=float(weight_decay),
                    eval_batches=int(eval_batches), eval_every=eval_every, feature_batches=feature_batches,
                    data=_data_key(data_cfg))
    cached = _cached_result(out_dir, settings)
    if cached is not None:
        log.info("fit_mlm_head: %s already holds this result; reusing it", out_dir)
        return dict(cached, cached=True, seconds=time.perf_counter() - t_start)
    hf.check_out_dir(out_dir, overwrite)
    if storage.is_remote(teacher_path):  # a gs:// teacher: its local mirror (downloaded once)
        teacher_path = hf.resolve_path(teacher_path)
    if not os.path.isdir(teacher_path):
        raise FileNotFoundError(f"teacher directory {teacher_path!r} does not exist; pass the directory that holds "
                                "config.json and model.safetensors")
    storage.check_writable(out_dir, "the output directory")  # before the training, not after it
    base = hf.load_config(teacher_path)
    data = build_pretraining_data(data_cfg, teacher_path, int(batch_size), vocab_size=base.vocab_size,
                                  max_positions=base.max_position_embeddings)
    if _has_mlm_head(teacher_path):
        log.info("%s already has an MLM head; training continues from it", teacher_path)
    config, params = hf.load(teacher_path, with_mlm_head=True, with_pooler=False, seed=int(seed),
                             dtype="float32", remat=False)
    tx = make_optimizer(OptimizerConfig(lr=float(lr), steps=int(steps), warmup_steps=int(warmup_steps),
                                        decay="linear", grad_clip=1.0, weight_decay=float(weight_decay)))
    fns = _Fns(config, tx)
    device = jax.devices()[:1]
    mesh = shard_lib.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=device)
    rules = shard_lib.rules_from_config(None)
    k = max_targets(int(batch_size), data.seq_len, float(data_cfg.get("mlm_probability", 0.15)))
    evaluate = (lambda p: _evaluate(fns, p, data, eval_batches, batch_size, k)) if eval_batches else (
        lambda p: (None, None))
    run = _HeadRun if mode == "head" else _EncoderRun
    trained, curve, last, train_seconds = run(fns, config, params, tx, mesh, rules, data, k, evaluate, settings,
                                              workdir, checkpoint_every, progress).train()
    result = {"mode": mode, "mlm_loss_before": curve[0]["mlm_loss"], "mlm_accuracy_before": curve[0]["mlm_accuracy"],
              "mlm_loss_after": curve[-1]["mlm_loss"], "mlm_accuracy_after": curve[-1]["mlm_accuracy"],
              "curve": curve, "train_loss_last": last.get("loss"), "steps": int(steps), "out_dir": out_dir,
              "train_seconds": train_seconds, "settings": settings}
    hf.export(config.replace(with_mlm_head=True, with_pooler=False), trained, out_dir, tokenizer_from=teacher_path,
              overwrite=True)
    storage.write_json(storage.join(out_dir, RECORD), result, indent=2, sort_keys=True, default=str)
    result.update(cached=False, seconds=time.perf_counter() - t_start)
    log.info("fit_mlm_head (%s): held-out MLM loss %s -> %s, accuracy %s -> %s in %.1fs", mode, *[
        f"{v:.3f}" if v is not None else "-" for v in (result["mlm_loss_before"], result["mlm_loss_after"],
                                                        result["mlm_accuracy_before"], result["mlm_accuracy_after"])],
        result["seconds"])
    return result


def _data_key(data_cfg) -> Dict[str, Any]:
    """The data settings that decide the batches (for the cache check)."""
    d = data_cfg.to_dict() if hasattr(data_cfg, "to_dict") else dict(data_cfg)
    return {k: d.get(k) for k in ("corpus", "seq_len", "seed", "mlm_probability", "holdout_sequences",
                                  "whole_word_masking")}


def _cached_result(out_dir: str, settings: Mapping[str, Any]) -> Optional[dict]:
    path = storage.join(out_dir, RECORD)
    if not storage.exists(path):
        return None
    record = storage.read_json(path)
    if json.loads(json.dumps(record.get("settings"), default=str)) != json.loads(json.dumps(settings, default=str)):
        return None
    return record


class _HeadRun:
    """Frozen encoder: cache features, then train the head over them."""

    def __init__(self, fns, config, params, tx, mesh, rules, data, k, evaluate, settings, workdir, checkpoint_every,
                 progress):
        self.__dict__.update(locals())
        del self.__dict__["self"]

    def train(self):
        fns, data, k, settings = self.fns, self.data, self.k, self.settings
        head, rest = _split(self.params)
        specs = {n: v for n, v in logical_axes(self.config).items() if n in HEAD_KEYS}
        state, _ = create_state(self.config, head, self.tx, self.mesh, self.rules, settings["seed"],
                                student_specs=specs)
        rest = jax.device_put(rest, jax.devices()[0])
        word_emb = rest["embeddings"]["word_embeddings"]["embedding"]
        steps = settings["steps"]
        n_feat = settings["feature_batches"] or min(steps, 256)
        t0 = time.perf_counter()
        curve = [_point(0, self.evaluate(dict(rest, **head)), 0.0)]
        features, dropped = [], 0
        for _, b in data.iterator(0, end_step=n_feat):
            chunks = gather_targets(b["mlm_labels"], k)
            dropped += int(sum(c[2].sum() for c in chunks[1:]))
            idx, lab, w = chunks[0]
            features.append((fns.features(rest, _inputs(b), idx), lab, w))
        if dropped:
            log.info("fit_mlm_head: %d MLM targets beyond the %d slots per batch were skipped", dropped, k)
        writer = metrics_lib.MetricWriter(None, steps, progress=self.progress, desc="fit MLM head")
        last = {}
        try:
            for step in range(steps):
                h, lab, w = features[step % n_feat]
                state, m = fns.head_step(state, word_emb, h, lab, w)
                done = step + 1
                if done % 10 == 0 or done == steps:
                    last = {n: float(v) for n, v in jax.device_get(m).items()}
                    metrics_lib.check_finite(done, last, "Lower --lr.")
                    writer.write(done, last)
                if settings["eval_every"] and done % settings["eval_every"] == 0 and done != steps:
                    curve.append(_point(done, self.evaluate(dict(rest, **state.student)), time.perf_counter() - t0))
                writer.advance(done)
            jax.block_until_ready(state)
        finally:
            writer.close()
        head = jax.tree.map(np.asarray, jax.device_get(state.student))
        trained = dict(jax.tree.map(np.asarray, jax.device_get(rest)), **head)
        seconds = time.perf_counter() - t0
        curve.append(_point(steps, self.evaluate(trained), seconds))
        return trained, curve, last, seconds


class _EncoderRun(_HeadRun):
    """Teacher adaptation: MLM training of the whole model, checkpointed in `workdir` and resumable."""

    def train(self):
        from jaxdistill.checkpoint import Checkpointer
        from jaxdistill.train.state import abstract_like
        fns, data, k, settings = self.fns, self.data, self.k, self.settings
        steps, every = settings["steps"], settings["eval_every"]
        state, shardings = create_state(self.config, self.params, self.tx, self.mesh, self.rules, settings["seed"])
        start, curve, spent = 0, None, 0.0
        ckpt = Checkpointer(storage.join(self.workdir, "checkpoints"), keep=2) if self.workdir else None
        if ckpt is not None:
            restored = ckpt.restore_latest(abstract_like(state, shardings))
            if restored is not None:
                start, state, meta = restored
                if meta.get("settings") != json.loads(json.dumps(settings, default=str)):
                    raise ConfigError(f"{self.workdir} holds a teacher adaptation with other settings "
                                      f"({meta.get('settings')}); use a new --workdir or the same settings")
                curve, spent = meta["curve"], float(meta["train_seconds"])
                log.info("fit_mlm_head: resuming the teacher adaptation from step %d of %d", start, steps)
        t0 = time.perf_counter()
        elapsed = lambda: spent + time.perf_counter() - t0
        if curve is None:
            curve = [_point(0, self.evaluate(self.params), 0.0)]
        writer = metrics_lib.MetricWriter(self.workdir, steps, start_step=start, progress=self.progress,
                                          desc="adapt teacher (MLM)", drop_after=start, tensorboard=False)
        last, dropped = {}, 0
        try:
            for step, b in data.iterator(start, end_step=steps):
                chunks = gather_targets(b["mlm_labels"], k)
                dropped += int(sum(c[2].sum() for c in chunks[1:]))
                idx, lab, w = chunks[0]
                state, m = fns.encoder_step(state, _inputs(b), idx, lab, w)
                done = step + 1
                if done % 10 == 0 or done == steps:
                    last = {n: float(v) for n, v in jax.device_get(m).items()}
                    metrics_lib.check_finite(done, last, "Lower --lr.")
                    writer.write(done, last)
                if every and done % every == 0 and done != steps:
                    point = _point(done, self.evaluate(state.student), elapsed())
                    curve.append(point)
                    writer.write(done, {"eval/mlm_loss": point["mlm_loss"], "eval/mlm_accuracy": point["mlm_accuracy"]})
                if ckpt is not None and done % self.checkpoint_every == 0 and done != steps:
                    ckpt.save(done, state, {"settings": json.loads(json.dumps(settings, default=str)),
                                            "curve": curve, "train_seconds": elapsed()})
                writer.advance(done)
            jax.block_until_ready(state)
        finally:
            writer.close()
            if ckpt is not None:
                ckpt.close()
        if dropped:
            log.info("fit_mlm_head: %d MLM targets beyond the %d slots per batch were skipped", dropped, k)
        trained = jax.tree.map(np.asarray, jax.device_get(state.student))
        seconds = elapsed()
        curve.append(_point(steps, self.evaluate(trained), seconds))
        return trained, curve, last, seconds


def _point(step: int, measured: Tuple[Optional[float], Optional[float]], seconds: float) -> Dict[str, Any]:
    return {"step": int(step), "mlm_loss": measured[0], "mlm_accuracy": measured[1], "seconds": round(seconds, 2)}
