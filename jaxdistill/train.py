"""The distillation engine: TrainState, the jitted distill step, the prune update, and the train loop.

`distill_step(state, teacher_params, batch) -> (state, metrics)` is a pure function: teacher forward under
stop_gradient, student forward with the HomoDistil masks, the recipe's objective, gradients (optionally
accumulated over micro-batches with `lax.scan`), an optax update and the importance update. It is jitted once
with in/out shardings from the logical-axis rules and donates the state (argument 0), never the teacher.

`train_and_evaluate(config, workdir)` runs a whole distillation: it resumes from the newest checkpoint in
`workdir`, saves on a cadence and on preemption, stops with a clear error on a non-finite loss, logs
throughput and MFU, and exports the (compacted) student as a Hugging Face directory at the end.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxdistill import checkpoint as ckpt_lib
from jaxdistill import metrics as metrics_lib
from jaxdistill import sharding as shard_lib
from jaxdistill.models import Bert, BertConfig, hf, init_params, logical_axes
from jaxdistill.errors import ConfigError, NonFiniteError, OutputExistsError  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


@struct.dataclass
class TrainState:
    """Everything a distillation run carries from step to step, as one pytree.

    step: int32 scalar, steps completed. params: {"student": Bert params, "projections": dict}.
    opt_state: optax state of params. masks: HomoDistil masks ({} when not pruning). importance: PLATON
    statistics ({} when not pruning). rng: uint32[2] key for dropout.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    masks: Any
    importance: Any
    rng: jax.Array



# ---------------------------------------------------------------------------------------------- optimizer
def make_lr_schedule(train_cfg) -> optax.Schedule:
    """Linear warm-up to `lr`, then `decay` ("linear" to 0, "cosine" to 0, or "constant")."""
    lr, warmup, steps = float(train_cfg.lr), int(train_cfg.warmup_steps), int(train_cfg.steps)
    decay_steps = max(steps - warmup, 1)
    decay = train_cfg.get("decay", "linear")
    if decay == "linear":
        after = optax.linear_schedule(lr, 0.0, decay_steps)
    elif decay == "cosine":
        after = optax.cosine_decay_schedule(lr, decay_steps)
    elif decay == "constant":
        after = optax.constant_schedule(lr)
    else:
        raise ConfigError(f"train.decay {decay!r} is not one of 'linear', 'cosine', 'constant'")
    if warmup <= 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def make_optimizer(train_cfg) -> optax.GradientTransformation:
    """AdamW (no decay on biases and LayerNorm) after global-norm clipping."""
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
    parts = []
    if train_cfg.get("grad_clip", 0.0):
        parts.append(optax.clip_by_global_norm(float(train_cfg.grad_clip)))
    parts.append(optax.adamw(make_lr_schedule(train_cfg), b1=float(train_cfg.b1), b2=float(train_cfg.b2),
                             eps=float(train_cfg.eps), weight_decay=float(train_cfg.weight_decay),
                             mask=decay_mask))
    return optax.chain(*parts)


# ----------------------------------------------------------------------------------------------- the step
@dataclasses.dataclass(frozen=True)
class StepFns:
    """The jitted functions of a run and what they need to know about it."""

    distill_step: Callable
    prune_step: Optional[Callable]
    eval_step: Callable
    state_shardings: Any
    teacher_shardings: Any


def _kl_metric(student_logits, teacher_logits, attention_mask):
    """Mean over real tokens of KL(teacher || student) on MLM predictions (T=1), in float32."""
    from jaxdistill.losses import soft_kl
    return soft_kl(student_logits, teacher_logits, temperature=1.0, mask=attention_mask)


def build_step_fns(teacher_config: BertConfig, student_config: BertConfig, recipe, tx, pruning_cfg,
                   mesh, rules, state_shardings, teacher_shardings, accum_steps: int = 1,
                   dropout: bool = True, nan_at_step: Optional[int] = None) -> StepFns:
    """Builds and jits distill_step / prune_step / eval_step for one run."""
    from jaxdistill import pruning

    teacher, student = Bert(teacher_config), Bert(student_config)
    needs = bool(recipe.needs_intermediates)
    pruning_on = pruning_cfg is not None

    def forward_teacher(teacher_params, batch):
        out = teacher.apply({"params": teacher_params}, batch["input_ids"], batch["attention_mask"],
                            batch["token_type_ids"], deterministic=True, output_intermediates=needs)
        return jax.lax.stop_gradient(out)

    def student_loss(params, masks, teacher_out, batch, step, rng, deterministic):
        """The recipe's loss and terms for the student's forward; plus the MLM teacher-student KL (T=1)
        under "teacher_student_kl" when both models have an MLM head."""
        out = student.apply({"params": params["student"]}, batch["input_ids"], batch["attention_mask"],
                            batch["token_type_ids"], masks=masks if pruning_on else None,
                            deterministic=deterministic, output_intermediates=needs, rngs={"dropout": rng})
        loss, terms = recipe.objective(out, teacher_out, batch, step, params["projections"])
        if out.mlm_logits is not None and teacher_out.mlm_logits is not None:
            terms = dict(terms, teacher_student_kl=_kl_metric(out.mlm_logits, teacher_out.mlm_logits,
                                                              batch["attention_mask"]))
        return loss, terms

    def loss_fn(params, masks, teacher_out, batch, step, rng):
        loss, terms = student_loss(params, masks, teacher_out, batch, step, rng, deterministic=not dropout)
        if nan_at_step is not None:  # fault injection for tests of the non-finite guard
            loss = jnp.where(step + 1 == nan_at_step, jnp.nan, loss)  # nan_at_step counts updates from 1
        kl = terms.pop("teacher_student_kl", jnp.float32(0))
        return loss, dict(terms, **{"train/teacher_student_kl": kl})

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def distill_step(state: TrainState, teacher_params, batch):
        rng, step_rng = jax.random.split(state.rng)
        if accum_steps == 1:
            teacher_out = forward_teacher(teacher_params, batch)
            (loss, terms), grads = grad_fn(state.params, state.masks, teacher_out, batch, state.step, step_rng)
        else:
            # micro-batch i takes rows i, i+k, i+2k, ...: every device keeps an equal share of each micro-batch
            micro = jax.tree.map(lambda x: x.reshape((-1, accum_steps) + x.shape[1:]).swapaxes(0, 1), batch)

            def micro_step(i):
                mb = jax.tree.map(lambda x: x[i], micro)
                (l, t), g = grad_fn(state.params, state.masks, forward_teacher(teacher_params, mb), mb,
                                    state.step, jax.random.fold_in(step_rng, i))
                return l, t, g

            def body(carry, i):
                return jax.tree.map(jnp.add, carry, micro_step(i)), None

            (loss, terms, grads), _ = jax.lax.scan(body, micro_step(0), jnp.arange(1, accum_steps))
            loss, terms, grads = jax.tree.map(lambda x: x / accum_steps, (loss, terms, grads))
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        if recipe.update_scale is not None:
            scale = recipe.update_scale(state.params, state.step)
            if scale is not None:
                updates = jax.tree.map(lambda u, s: u * s, updates, scale)
        params = optax.apply_updates(state.params, updates)
        importance = state.importance
        if pruning_on:
            importance = pruning.update_importance(importance, state.params["student"], grads["student"],
                                                   state.step, pruning_cfg)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                                  importance=importance, rng=rng)
        metrics = dict(terms, loss=loss, **{"train/grad_norm": grad_norm,
                                           "train/finite": jnp.isfinite(loss) & jnp.isfinite(grad_norm)})
        return new_state, metrics

    def prune_step(state: TrainState):
        masks, params, opt_state = pruning.prune_update(state.masks, state.importance, state.params,
                                                        state.opt_state, state.step, pruning_cfg)
        return state.replace(masks=masks, params=params, opt_state=opt_state)

    def eval_step(state: TrainState, teacher_params, batch):
        loss, terms = student_loss(state.params, state.masks, forward_teacher(teacher_params, batch), batch,
                                   state.step, state.rng, deterministic=True)
        res = {"eval/loss": loss}
        if "teacher_student_kl" in terms:
            res["eval/kl"] = terms.pop("teacher_student_kl")
        res.update({"eval/" + k.split("/", 1)[-1]: v for k, v in terms.items()})
        return res

    batch_sh = shard_lib.batch_sharding(mesh)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def with_rules(fn):
        @functools.wraps(fn)
        def wrapped(*args):
            import flax.linen as nn
            with nn.logical_axis_rules(rules):
                return fn(*args)
        return wrapped

    jit_distill = jax.jit(with_rules(distill_step), in_shardings=(state_shardings, teacher_shardings, batch_sh),
                          out_shardings=(state_shardings, replicated), donate_argnums=(0,))
    jit_prune = (jax.jit(prune_step, in_shardings=(state_shardings,), out_shardings=state_shardings,
                         donate_argnums=(0,)) if pruning_on else None)
    jit_eval = jax.jit(with_rules(eval_step), in_shardings=(state_shardings, teacher_shardings, batch_sh),
                       out_shardings=replicated)
    return StepFns(jit_distill, jit_prune, jit_eval, state_shardings, teacher_shardings)


# ------------------------------------------------------------------------------------------ models, state
def build_models(config):
    """Loads the teacher and builds the student from `config.teacher` / `config.student`.

    student.init: "copy" (HomoDistil: an exact copy of the teacher), "layers" (copy the teacher layers
    `student.layers`, 0-indexed, e.g. DistilBERT's [0, 2, 4, 7, 9, 11]) or "random" (a fresh model with
    `student.overrides` applied to the teacher's config). Returns (teacher_cfg, teacher_params,
    student_cfg, student_params) as float32 NumPy trees.
    """
    dtype = config.train.get("dtype", "float32")
    remat = bool(config.train.get("remat", False))
    teacher_cfg, teacher_params = hf.load(config.teacher.path, with_mlm_head=True, with_pooler=True,
                                          dtype=dtype, remat=False)
    init = config.student.get("init", "copy")
    overrides = dict(config.student.get("overrides", None) or {})
    if init == "copy":
        student_cfg = teacher_cfg.replace(remat=remat, **overrides)
        student_params = jax.tree.map(np.array, teacher_params)
    elif init == "layers":
        from jaxdistill.layer_map import init_student_from_teacher
        student_cfg, student_params = init_student_from_teacher(
            teacher_cfg, teacher_params, layers=list(config.student.layers), **overrides)
        student_cfg = student_cfg.replace(remat=remat)
    elif init == "random":
        student_cfg = teacher_cfg.replace(remat=remat, **overrides)
        student_params = jax.tree.map(np.asarray, init_params(student_cfg, jax.random.PRNGKey(config.train.seed)))
    else:
        raise ConfigError(f"student.init {init!r} is not one of 'copy', 'layers', 'random'")
    return teacher_cfg, teacher_params, student_cfg, student_params


def _put(tree, shardings):
    """Host NumPy tree -> global arrays with `shardings` (safe on many hosts: each writes its own shards)."""
    def one(x, s):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])
    return jax.tree.map(one, tree, shardings)


def create_state(student_config: BertConfig, student_params, projections, tx, pruning_cfg, mesh, rules,
                 seed: int):
    """Builds the TrainState directly in its sharded layout; returns (state, state_shardings)."""
    from jaxdistill import pruning

    P = jax.sharding.PartitionSpec
    pruning_on = pruning_cfg is not None

    def init(student, projections, rng):
        params = {"student": student, "projections": projections}
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                          masks=pruning.init_masks(student_config) if pruning_on else {},
                          importance=pruning.init_importance(student) if pruning_on else {}, rng=rng)

    rng = jax.random.PRNGKey(seed)
    abstract = jax.eval_shape(init, student_params, projections, rng)
    student_specs = logical_axes(student_config)
    params_specs = {"student": student_specs, "projections": jax.tree.map(lambda _: P(), projections)}
    specs = TrainState(
        step=P(), params=params_specs,
        opt_state=shard_lib.specs_like(abstract.opt_state, abstract.params, params_specs),
        masks=jax.tree.map(lambda _: P(), abstract.masks),
        importance=shard_lib.specs_like(abstract.importance, abstract.params["student"], student_specs),
        rng=P())
    shardings = shard_lib.logical_to_shardings(specs, abstract, mesh, rules)
    student = _put(student_params, shardings.params["student"])
    projections = _put(projections, shardings.params["projections"])
    state = jax.jit(init, out_shardings=shardings)(student, projections, _put(rng, shardings.rng))
    return state, shardings


def abstract_like(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def to_host(tree):
    """Fetches a (possibly multi-host sharded) tree to NumPy on every process."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
    return jax.tree.map(np.asarray, jax.device_get(tree))


# --------------------------------------------------------------------------------------------- the loop
def validate_config(config) -> None:
    """Errors that need no model or data: checked before anything is loaded or compiled."""
    t = config.train
    problems = []
    for name in ("steps", "batch_size", "log_every", "checkpoint_every"):
        if int(t.get(name, 1)) <= 0:
            problems.append(f"train.{name} must be positive (got {t.get(name)})")
    accum = int(t.get("accum_steps", 1))
    if accum <= 0 or int(t.batch_size) % accum:
        problems.append(f"train.accum_steps {accum} must be positive and divide train.batch_size {t.batch_size}")
    if float(t.lr) <= 0:
        problems.append(f"train.lr must be positive (got {t.lr})")
    if t.get("dtype", "float32") not in ("float32", "bfloat16", "float16"):
        problems.append(f"train.dtype {t.get('dtype')!r} is not one of float32, bfloat16, float16")
    if not config.teacher.get("path"):
        problems.append("teacher.path is empty: give a Hugging Face BERT directory (or hub id when online)")
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))


def _drain(pending):
    """Fetches pending per-step metrics and stops on the first non-finite one; returns the fetched dicts."""
    if not pending:
        return []
    fetched = jax.device_get([m for _, m in pending])
    for (step, _), m in zip(pending, fetched):
        if not bool(m["train/finite"]):
            terms = ", ".join(f"{k}={float(v):.4g}" for k, v in sorted(m.items()) if k != "train/finite")
            raise NonFiniteError(
                f"non-finite loss or gradients at step {step} ({terms}). Nothing from this step on was saved; "
                "the last good checkpoint is kept. Lower train.lr, enable train.grad_clip, or check the data.")
    return fetched


def _mean(fetched) -> dict:
    keys = [k for k in fetched[-1] if k != "train/finite"]
    return {k: float(np.mean([float(m[k]) for m in fetched])) for k in keys}


def _export_dir(config, workdir):
    d = config.get("export", {}).get("dir", "export") if config.get("export") else "export"
    return d if os.path.isabs(d) else os.path.join(workdir, d)


@dataclasses.dataclass
class Run:
    """A distillation run, built and placed on its mesh: what `train_and_evaluate` loops over.

    `state` is replaced on every `step`; the jitted functions in `fns` are compiled on first use.
    """

    config: Any
    teacher_config: BertConfig
    student_config: BertConfig
    recipe: Any
    pruning_config: Any
    data: Any
    mesh: Any
    fns: StepFns
    state: TrainState
    teacher_params: Any
    tokenizer_dir: str
    host_step: int = 0  # steps completed, tracked on the host so the loop never waits on the device

    def global_batch(self, local_batch):
        return shard_lib.global_batch(local_batch, self.mesh)

    def step(self, local_batch):
        """One distill step on this process's slice of the batch, then the prune update on its cadence."""
        from jaxdistill import pruning
        self.state, metrics = self.fns.distill_step(self.state, self.teacher_params, self.global_batch(local_batch))
        self.host_step += 1
        if self.fns.prune_step is not None and bool(pruning.on_cadence(self.host_step, self.pruning_config)):
            self.state = self.fns.prune_step(self.state)
        return metrics

    def evaluate(self, num_batches: int, batch_size: int) -> dict:
        """Held-out metrics (eval/kl: teacher-student KL on MLM predictions) averaged over batches."""
        pi, pc = jax.process_index(), jax.process_count()
        scores = []
        for i in range(num_batches):
            b = self.data.eval_batch(i, batch_size)
            local = {k: v[pi * len(v) // pc:(pi + 1) * len(v) // pc] for k, v in b.items()}
            scores.append(jax.device_get(self.fns.eval_step(self.state, self.teacher_params,
                                                            self.global_batch(local))))
        return {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}


def build_run(config, devices=None) -> Run:
    """Loads teacher and student, builds recipe, pruning, data, mesh, the sharded state and the step fns."""
    from jaxdistill import objectives, pruning
    from jaxdistill.data import build_pretraining_data

    validate_config(config)
    t = config.train
    total = int(t.steps)
    teacher_cfg, teacher_params, student_cfg, student_params = build_models(config)
    recipe = objectives.build_recipe(config.recipe, teacher_cfg, student_cfg)
    pcfg = (pruning.PruningConfig.from_config(config.pruning, student_cfg, total)
            if config.get("pruning") and config.pruning.get("enabled", False) else None)
    tokenizer_dir = config.teacher.get("tokenizer") or config.teacher.path
    data = build_pretraining_data(config.data, tokenizer_dir, int(t.batch_size),
                                  vocab_size=teacher_cfg.vocab_size,
                                  max_positions=min(teacher_cfg.max_position_embeddings,
                                                    student_cfg.max_position_embeddings))
    mesh = shard_lib.make_mesh(dict(config.get("mesh", {}) or {}), devices=devices)
    rules = shard_lib.rules_from_config(config.get("sharding_rules"))
    shard_lib.check_batch_divisible(int(t.batch_size), mesh)
    tx = make_optimizer(t)
    projections = jax.tree.map(np.asarray, recipe.init_projections(jax.random.PRNGKey(int(t.seed) + 1)))
    state, state_sh = create_state(student_cfg, student_params, projections, tx, pcfg, mesh, rules, int(t.seed))
    teacher_sh = shard_lib.logical_to_shardings(logical_axes(teacher_cfg), teacher_params, mesh, rules)
    teacher_dev = _put(teacher_params, teacher_sh)
    debug = config.get("debug") or {}
    fns = build_step_fns(teacher_cfg, student_cfg, recipe, tx, pcfg, mesh, rules, state_sh, teacher_sh,
                         accum_steps=int(t.get("accum_steps", 1)), dropout=bool(t.get("dropout", True)),
                         nan_at_step=debug.get("nan_at_step"))
    return Run(config, teacher_cfg, student_cfg, recipe, pcfg, data, mesh, fns, state, teacher_dev, tokenizer_dir)


def train_and_evaluate(config, workdir: str) -> dict:
    """Runs (or resumes) the distillation described by `config` in `workdir`; returns a summary dict.

    Resumes from the newest readable checkpoint in `<workdir>/checkpoints`; saves every
    `train.checkpoint_every` steps, at the end and on preemption (SIGTERM: save, return status
    "preempted"); raises NonFiniteError on a NaN/inf loss before anything non-finite is saved; writes
    `metrics.jsonl` and TensorBoard events; exports the (compacted) student to `<workdir>/export`.
    """
    from jaxdistill import pruning

    validate_config(config)
    shard_lib.maybe_initialize_distributed(config.get("multihost"))
    workdir = os.path.abspath(workdir)
    config_dict = config.to_dict()
    ckpt_lib.check_compatible(workdir, config_dict)
    t = config.train
    total = int(t.steps)
    export_cfg = config.get("export") or {}
    export_on, overwrite_export = bool(export_cfg.get("enabled", True)), bool(export_cfg.get("overwrite", False))
    export_dir = _export_dir(config, workdir)
    checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                         keep=int(t.get("keep_checkpoints", 3)),
                                         async_save=bool(t.get("async_checkpoint", True)))
    if export_on and os.path.isdir(export_dir) and os.listdir(export_dir) and not overwrite_export:
        if checkpointer.steps() and checkpointer.steps()[-1] >= total:
            log.info("%s already holds a finished run (step %d) and its export; nothing to do", workdir, total)
            return {"status": "already_complete", "step": checkpointer.steps()[-1], "workdir": workdir,
                    "export_dir": export_dir, "metrics": {}}
        raise OutputExistsError(
            f"export directory {export_dir!r} already holds files from an earlier run; pass "
            "--config.export.overwrite=True to replace them, or set --config.export.dir to a new place")

    run = build_run(config)
    restored = checkpointer.restore_latest(abstract_like(run.state, run.fns.state_shardings))
    start = 0
    if restored is not None:
        start, run.state, _ = restored
        run.host_step = start
        log.info("resumed from step %d in %s", start, checkpointer.directory)
    ckpt_lib.write_config(workdir, config_dict)

    metrics_cfg = config.get("metrics") or {}
    writer = metrics_lib.MetricWriter(workdir, total, start, tensorboard=metrics_cfg.get("tensorboard", True),
                                      progress=metrics_cfg.get("progress", True))
    meter = metrics_lib.Throughput(metrics_lib.device_peak_flops(override=metrics_cfg.get("peak_flops")),
                                   jax.device_count())
    seq_len, batch_size = int(config.data.seq_len), int(t.batch_size)
    watcher = ckpt_lib.PreemptionWatcher()
    log_every, ckpt_every = int(t.log_every), int(t.checkpoint_every)
    eval_every, eval_batches = int(t.get("eval_every", 0) or 0), int(t.get("eval_batches", 2))
    lr_at = make_lr_schedule(t)
    pending, window, status, last, done = [], [], "completed", {}, start

    def save(step, force=False):
        checkpointer.save(step, run.state, {"step": int(step), "data_seed": int(config.data.seed)}, force=force)

    try:
        if start == 0 and eval_every:
            writer.write(0, run.evaluate(eval_batches, batch_size))
        meter.reset()
        for step, local in run.data.iterator(start, jax.process_index(), jax.process_count()):
            if step >= total:
                break
            pending.append((step + 1, run.step(local)))
            done = step + 1
            is_log = done % log_every == 0 or done == total
            is_ckpt = done % ckpt_every == 0 or done == total
            is_eval = bool(eval_every) and (done % eval_every == 0 or done == total)
            stop = watcher.should_stop(done)
            if not (is_log or is_ckpt or is_eval or stop):
                continue
            window += _drain(pending)
            pending = []
            evaluated = {}
            if is_eval:
                t_eval = time.perf_counter()
                evaluated = run.evaluate(eval_batches, batch_size)
                meter.exclude(time.perf_counter() - t_eval)
            if is_log:
                scalars = _mean(window)
                widths = (pruning.remaining_widths(jax.device_get(run.state.masks))
                          if run.pruning_config else None)
                flops = metrics_lib.distill_step_flops(run.teacher_config, run.student_config, batch_size,
                                                       seq_len, widths)
                scalars.update(meter.update(len(window), batch_size * seq_len, flops))
                scalars["train/lr"] = float(lr_at(done - 1))
                if widths:
                    scalars.update({"width/hidden": widths["hidden"], "width/ffn": float(np.mean(widths["ffn"])),
                                    "width/attn": float(np.mean(widths["head_dims"]))})
                scalars.update(evaluated)
                writer.write(done, scalars)
                last, window = scalars, []
                meter.reset()
            elif evaluated:
                writer.write(done, evaluated)
                last = dict(last, **evaluated)
            writer.advance(done)
            if is_ckpt or stop:
                save(done, force=stop)
            if stop and done < total:
                status = "preempted"
                log.warning("preemption: saved step %d; relaunch the same command to resume", done)
                break
    finally:
        checkpointer.wait()
        watcher.close()
        writer.close()

    summary = {"status": status, "step": done, "workdir": workdir, "metrics": last}
    checkpointer.close()
    if status != "completed":
        return summary
    student = to_host(run.state.params["student"])
    out_cfg = run.student_config.replace(dtype="float32", remat=False)
    if run.pruning_config is not None:
        masks = to_host(run.state.masks)
        summary["widths"] = pruning.remaining_widths(masks)
        summary["params"] = pruning.count_params(run.student_config, masks)
        out_cfg, student = pruning.compact(out_cfg, student, masks)
    if export_on and jax.process_index() == 0:
        summary["export_format"] = hf.export(out_cfg, student, export_dir, tokenizer_from=run.tokenizer_dir,
                                             overwrite=overwrite_export)
        summary["export_dir"] = export_dir
    return summary


def _config_from_params(base: BertConfig, params) -> BertConfig:
    """The BertConfig whose shapes are those of `params`; other fields (eps, activation, ...) from `base`."""
    d_vocab = np.shape(params["embeddings"]["word_embeddings"]["embedding"])
    q = np.shape(params["layer_0"]["attention"]["query"]["kernel"])  # [d, H, d_h]
    n = sum(1 for k in params if k.startswith("layer_"))
    head_dim = q[2] if q[1] * q[2] != d_vocab[1] else None
    return base.replace(vocab_size=d_vocab[0], hidden_size=d_vocab[1], num_hidden_layers=n,
                        num_attention_heads=q[1], head_dim=head_dim,
                        intermediate_size=np.shape(params["layer_0"]["intermediate"]["kernel"])[1],
                        with_mlm_head="mlm_bias" in params, with_pooler="pooler" in params,
                        dtype="float32", remat=False)


def export_from_workdir(workdir: str, out_dir: str, step: Optional[int] = None, overwrite: bool = False) -> dict:
    """Exports the student of a distillation workdir (its newest checkpoint, or `step`) to `out_dir`.

    The masked student is compacted first (HomoDistil), then written as a Hugging Face directory (or in
    jaxdistill's own format when its shapes need it) with the teacher's tokenizer files.
    Returns {"step", "format", "out_dir", "params"}.
    """
    import json as _json

    from jaxdistill import pruning

    cfg_path = os.path.join(workdir, "config.json")
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"{workdir!r} is not a jaxdistill workdir (no config.json); pass the --workdir "
                                "of a `jaxdistill distill` run")
    hf._check_out_dir(out_dir, overwrite)
    with open(cfg_path) as f:
        config = _json.load(f)
    step, state = ckpt_lib.read_state(os.path.join(os.path.abspath(workdir), "checkpoints"), step)
    student = jax.tree.map(np.asarray, state["params"]["student"])
    teacher_path = config["teacher"]["path"]
    tokenizer = config["teacher"].get("tokenizer") or teacher_path
    base = hf.load_config(teacher_path) if os.path.isdir(teacher_path) else BertConfig()
    out_cfg = _config_from_params(base, student)
    masks = state.get("masks") or {}
    if masks:
        masks = jax.tree.map(np.asarray, masks)
        out_cfg, student = pruning.compact(out_cfg, student, masks)
    fmt = hf.export(out_cfg, student, out_dir, tokenizer_from=tokenizer if os.path.isdir(tokenizer) else None,
                    overwrite=overwrite)
    return {"step": step, "format": fmt, "out_dir": out_dir,
            "params": int(sum(np.size(x) for x in jax.tree.leaves(student)))}
