"""The distillation run: `build_run(experiment)` places everything on the mesh; `train_and_evaluate` loops.

`train_and_evaluate(config, workdir)` resumes from the newest readable checkpoint in `workdir`, saves on a
cadence and on preemption (SIGTERM: save, return status "preempted"), stops with `NonFiniteError` on a
NaN/inf loss before anything non-finite is saved, logs every loss term, the held-out teacher-student KL,
remaining widths, throughput and MFU, and exports the (compacted) student at the end.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Optional, Union

import jax
import numpy as np
import optax

from jaxdistill import checkpoint as ckpt_lib
from jaxdistill import interrupts
from jaxdistill import metrics as metrics_lib
from jaxdistill import pruning
from jaxdistill import sharding as shard_lib
from jaxdistill import storage
from jaxdistill import task_distill
from jaxdistill.data import build_pretraining_data
from jaxdistill.errors import ConfigError, NonFiniteError, OutputExistsError
from jaxdistill.experiment import Experiment, resolve
from jaxdistill.hosts import process_slice
from jaxdistill.models import logical_axes
from jaxdistill.optimizer import make_lr_schedule, make_optimizer
from jaxdistill.train.export import card_metadata, export_student
from jaxdistill.train.models import load_models
from jaxdistill.train.state import TrainState, abstract_like, create_state, put_global, to_host
from jaxdistill.train.step import Placement, StepFns, build_step_fns
from jaxdistill.workdir_lock import WorkdirLock

log = logging.getLogger(__name__)

MAX_PARAM_GROWTH = 100.0  # default train.max_param_growth: see param_norm_limit


@dataclasses.dataclass
class Run:
    """A distillation run, built and placed on its mesh: what `train_and_evaluate` loops over.

    `state` is replaced on every `step`; the jitted functions in `fns` are compiled on first use.
    """

    experiment: Experiment
    data: Any
    placement: Placement
    fns: StepFns
    state: TrainState
    teacher_params: Any
    host_step: int = 0  # steps completed, tracked on the host so the loop never waits on the device

    @property
    def mesh(self):
        return self.placement.mesh

    @property
    def teacher_config(self):
        return self.experiment.teacher_config

    @property
    def student_config(self):
        return self.experiment.student_config

    @property
    def pruning_config(self):
        return self.experiment.pruning

    @property
    def recipe(self):
        return self.experiment.recipe

    @property
    def tokenizer_dir(self):
        return self.experiment.tokenizer_dir

    def global_batch(self, local_batch):
        """This process's slice of a batch -> global arrays sharded over (data, fsdp)."""
        return shard_lib.global_batch(local_batch, self.mesh)

    def step(self, local_batch):
        """One distill step on this process's slice of the batch, then the prune update on its cadence."""
        self.state, metrics = self.fns.distill_step(self.state, self.teacher_params, self.global_batch(local_batch))
        self.host_step += 1
        if self.fns.prune_step is not None and bool(pruning.on_cadence(self.host_step, self.pruning_config)):
            self.state = self.fns.prune_step(self.state)
        return metrics

    def evaluate(self, num_batches: int, batch_size: int) -> dict:
        """Held-out metrics (eval/kl: teacher-student KL on MLM predictions) averaged over batches; with
        `train.eval_per_batch` also "<name>/batches": the per-batch values of eval/kl and eval/mlm (lists,
        batch i = held-out rows i*batch_size.., the same for every run on the same data)."""
        scores = []
        for i in range(num_batches):
            local = process_slice(self.data.eval_batch(i, batch_size))
            scores.append(jax.device_get(self.fns.eval_step(self.state, self.teacher_params,
                                                            self.global_batch(local))))
        out = {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
        if self.experiment.config.train.get("eval_per_batch", False):
            out.update({f"{k}/batches": [float(s[k]) for s in scores] for k in ("eval/kl", "eval/mlm") if k in out})
        return out


def prepare_data(exp: Experiment):
    """The run's batch source; the corpus is tokenized and packed once, each process packing its share of the
    shards into the shared cache (`jaxdistill.data.cache`). `jaxdistill prepare-data` runs only this. Task data
    (`data.kind="task"`) is read, label-checked against the teacher and augmented (`data.task_data`)."""
    if exp.data_kind == "task":
        from jaxdistill.data.task_data import build_task_data
        return build_task_data(exp.data, exp.tokenizer_dir, exp.batch_size, exp.teacher_config.max_position_embeddings,
                               exp.teacher_labels, exp.teacher_config.num_labels)
    return build_pretraining_data(exp.config.data, exp.tokenizer_dir, exp.batch_size,
                                  vocab_size=exp.teacher_config.vocab_size,
                                  max_positions=min(exp.teacher_config.max_position_embeddings,
                                                    exp.student_config.max_position_embeddings),
                                  process_index=jax.process_index(), process_count=jax.process_count())


def build_run(config_or_experiment: Union[Any, Experiment], devices=None, data=None) -> Run:
    """Loads teacher and student, builds the data, mesh, sharded TrainState and the jitted step functions.

    Takes a config (resolved here against `devices`, default all) or an already resolved `Experiment`.
    data: a batch source to use instead of the config's (`prepare_data`), e.g. synthetic batches in a
    benchmark: anything with `batch(step) -> {input_ids, attention_mask, token_type_ids, mlm_labels: [B, L]}`.
    """
    devices = list(devices) if devices is not None else jax.devices()
    exp = config_or_experiment
    if not isinstance(exp, Experiment) or exp.mesh_shape is None:
        exp = resolve(exp.config if isinstance(exp, Experiment) else exp, num_devices=len(devices),
                      process_count=jax.process_count())
    t = exp.config.train
    teacher_params, student_params = load_models(exp)
    data = prepare_data(exp) if data is None else data
    mesh = shard_lib.make_mesh(exp.mesh_sizes, devices=devices)
    tx = make_optimizer(exp.optimizer)
    projections = jax.tree.map(np.asarray, exp.recipe.init_projections(jax.random.PRNGKey(int(t.seed) + 1)))
    state, state_sh = create_state(exp.student_config, student_params, tx, mesh, exp.rules, int(t.seed),
                                   projections=projections, pruning_config=exp.pruning,
                                   student_specs=task_distill.student_param_specs(exp, student_params))
    teacher_sh = shard_lib.logical_to_shardings(logical_axes(exp.teacher_config), teacher_params, mesh, exp.rules)
    placement = Placement(mesh, exp.rules, state_sh, teacher_sh)
    debug = exp.config.get("debug") or {}
    fns = build_step_fns(exp.teacher_config, exp.student_config, exp.recipe, tx, exp.pruning, placement,
                         accum_steps=int(t.get("accum_steps", 1)), dropout=bool(t.get("dropout", True)),
                         nan_at_step=debug.get("nan_at_step"), student_model=task_distill.student_module(exp),
                         vocab_chunk_tokens=exp.vocab_chunk_tokens)
    return Run(exp, data, placement, fns, state, put_global(teacher_params, teacher_sh))


def log_scalars(run: Run, window: list, meter: metrics_lib.Throughput, done: int, lr_at) -> dict:
    """The log line's scalars: the means of every metric over `window` (the steps since the last log),
    remaining widths, lr, tokens/s, TFLOP/s and MFU (the student counted at its effective width)."""
    keys = window[-1].keys()
    scalars = {k: float(np.mean([float(m[k]) for m in window])) for k in keys}
    widths = pruning.remaining_widths(jax.device_get(run.state.masks)) if run.pruning_config else None
    exp = run.experiment
    seq_len = int(exp.data["seq_len"])
    flops = task_distill.step_flops(exp, seq_len, widths)
    scalars.update(meter.update(len(window), exp.batch_size * seq_len, flops))
    scalars["train/lr"] = float(lr_at(done - 1))
    if widths:
        scalars.update({"width/hidden": widths["hidden"], "width/ffn": float(np.mean(widths["ffn"])),
                        "width/attn": float(np.mean(widths["head_dims"]))})
    return scalars


def check_workdir(workdir: str) -> str:
    """The absolute workdir (a gs:// URL as given); a path that exists and is not a directory is a ConfigError
    naming it."""
    workdir = storage.absolute(workdir)
    if storage.isfile(workdir):
        raise ConfigError(f"--workdir {workdir!r} is a file, not a directory; pass a directory (it is created "
                          "when missing)")
    return workdir


def export_is_finished(export_dir: str) -> bool:
    """Whether `export_dir` holds a finished export (it is renamed into place complete, as the last act)."""
    return all(storage.isfile(storage.join(export_dir, name)) for name in ("config.json", "model.safetensors"))


def export_dir_of(workdir: str, export_dir: Optional[str]) -> Optional[str]:
    """Where the run exports: `export_dir` itself when absolute or a URL, else relative to the workdir."""
    if export_dir is None:
        return None
    if storage.is_remote(export_dir) or os.path.isabs(export_dir):
        return export_dir
    return storage.join(workdir, export_dir)


def train_and_evaluate(config_or_experiment: Union[Any, Experiment], workdir: str,
                       restart_from_scratch: bool = False) -> dict:
    """Runs (or resumes) the distillation in `workdir`; returns a summary dict.

    Holds the workdir's lock (`jaxdistill.workdir_lock`) for the whole run: a second run on the same workdir
    raises WorkdirInUseError before writing anything. Resumes from the newest readable checkpoint in
    `<workdir>/checkpoints` (when every checkpoint is damaged it refuses unless `restart_from_scratch`);
    saves every `train.checkpoint_every` steps, at the end and on preemption; writes `metrics.jsonl` (lines
    past the restored step are dropped) and TensorBoard events; exports the (compacted) student to
    `<workdir>/<export.dir>`. A finished run is one whose export exists: a rerun after an interrupted export
    redoes it. Returns {"status": "completed" | "preempted" | "already_complete", "step", "workdir",
    "metrics" (the last logged scalars), and after an export "export_dir", "export_format", and for a pruned
    student "widths", "params"}.
    """
    exp = config_or_experiment
    if not isinstance(exp, Experiment) or exp.mesh_shape is None:
        config = exp.config if isinstance(exp, Experiment) else exp
        shard_lib.maybe_initialize_distributed(config.get("multihost"))
        exp = resolve(config, num_devices=jax.device_count(), process_count=jax.process_count())
    workdir = check_workdir(workdir)
    lock = WorkdirLock(workdir) if jax.process_index() == 0 else None
    if lock is None:
        return run_in_workdir(exp, workdir, None, restart_from_scratch)
    with lock, interrupts.run_on_interrupt(lock.release):
        return run_in_workdir(exp, workdir, lock, restart_from_scratch)


def run_in_workdir(exp: Experiment, workdir: str, lock: Optional[WorkdirLock], restart_from_scratch: bool) -> dict:
    """`train_and_evaluate` once the workdir is this run's (see there)."""
    config = exp.config
    config_dict = config.to_dict()
    ckpt_lib.check_compatible(workdir, config_dict)
    t = config.train
    total = exp.steps
    export_dir = export_dir_of(workdir, exp.export_dir)
    checkpointer = ckpt_lib.Checkpointer(storage.join(workdir, "checkpoints"),
                                         keep=int(t.get("keep_checkpoints", 3)),
                                         async_save=bool(t.get("async_checkpoint", True)))
    if export_dir and storage.listdir(export_dir) and not exp.export_overwrite:
        if export_is_finished(export_dir) and checkpointer.steps() and checkpointer.steps()[-1] >= total:
            log.info("%s already holds a finished run (step %d) and its export; nothing to do", workdir, total)
            return {"status": "already_complete", "step": checkpointer.steps()[-1], "workdir": workdir,
                    "export_dir": export_dir, "metrics": {}}
        raise OutputExistsError(
            f"export directory {export_dir!r} already holds files from an earlier run; pass "
            "--config.export.overwrite=True to replace them, or set --config.export.dir to a new place")
    if export_dir and jax.process_index() == 0 and not export_dir.startswith(workdir.rstrip("/") + "/"):
        storage.check_writable(export_dir, "the export directory")  # elsewhere: the lock did not probe it

    run = build_run(exp)
    restored = checkpointer.restore_latest(abstract_like(run.state, run.placement.state_shardings),
                                           restart_from_scratch=restart_from_scratch)
    start = 0
    if restored is not None:
        start, run.state, _ = restored
        run.host_step = start
        log.info("resumed from step %d in %s", start, checkpointer.directory)
    ckpt_lib.write_config(workdir, config_dict)
    status, done, last = loop(run, checkpointer, workdir, start, lock)
    summary = {"status": status, "step": done, "workdir": workdir, "metrics": last}
    checkpointer.close()
    if status != "completed":
        return summary
    masks = to_host(run.state.masks) if run.pruning_config is not None else {}
    student = to_host(run.state.student)
    if masks:
        summary["widths"] = pruning.remaining_widths(masks)
        summary["params"] = pruning.count_params(run.student_config, masks)
    if exp.data_kind == "task":  # validation metrics on the task, then a classifier export
        summary.update(task_distill.finish(exp, run.data, student, export_dir, card_metadata(config, done, last)))
        return summary
    if export_dir and jax.process_index() == 0:
        result = export_student(run.student_config, student, masks, export_dir, run.experiment.tokenizer_dir,
                                overwrite=exp.export_overwrite, own_format=exp.export_own_format,
                                metadata=card_metadata(config, done, last))
        summary.update(export_format=result["format"], export_dir=export_dir)
    return summary


def param_norm_limit(run: Run) -> float:
    """The student's parameter norm past which a step counts as exploded: `train.max_param_growth` (default
    100) times its norm at the start of this run. No sane step grows a distilled student's weights 100-fold."""
    start_norm = float(jax.device_get(optax.tree.norm(run.state.params["student"])))
    return float(run.experiment.config.train.get("max_param_growth", MAX_PARAM_GROWTH)) * max(start_norm, 1e-6)


def check_step(step: int, scalars: dict, norm_limit: float) -> None:
    """Raises NonFiniteError when step `step` had a non-finite metric or left the parameters exploded."""
    metrics_lib.check_finite(step, scalars, "")
    norm = float(scalars.get("train/param_norm", 0.0))
    if norm > norm_limit:
        raise NonFiniteError(f"the student's parameters exploded at step {step} (parameter norm {norm:.3g}, over "
                             f"the limit {norm_limit:.3g}: train.max_param_growth x its norm at the start).")


def resume_advice(checkpointer, config) -> str:
    """What to do after a NonFiniteError: which step the rerun resumes from, and with what change."""
    steps = checkpointer.steps()
    lr = float(config.train.lr)
    change = (f"a lower learning rate (e.g. --config.train.lr={lr / 10:.3g}) or gradient clipping "
              "(--config.train.grad_clip=1.0), or check the data")
    if not steps:
        return (f" Nothing was saved from this step on and no earlier checkpoint exists: rerun the same command "
                f"with {change}; it starts from step 0.")
    return (f" Nothing was saved from this step on; the newest checkpoint, step {steps[-1]}, is finite and sane: "
            f"rerun the same command with {change} to resume from step {steps[-1]}.")


def fetch_checked(pending: list, norm_limit: float = float("inf")) -> list:
    """Fetches the pending (step, metrics) pairs and raises NonFiniteError at the first bad one (a non-finite
    metric, or parameters past `norm_limit`)."""
    if not pending:
        return []
    fetched = jax.device_get([m for _, m in pending])
    for (step, _), m in zip(pending, fetched):
        check_step(step, m, norm_limit)
    return fetched


def loop(run: Run, checkpointer, workdir: str, start: int, lock: Optional[WorkdirLock] = None):
    """The train loop from step `start`: returns (status, steps done, the last logged scalars).

    Every step's metrics are checked (`check_step`) before the state after it is saved, so a checkpoint only
    ever holds finite parameters that were not exploding; a NonFiniteError says which step a rerun resumes
    from. `lock` is checked before every save (a run that lost its workdir stops without saving).
    """
    try:
        return loop_steps(run, checkpointer, workdir, start, lock)
    except NonFiniteError as e:
        raise NonFiniteError(str(e).rstrip() + resume_advice(checkpointer, run.experiment.config)) from None


def loop_steps(run: Run, checkpointer, workdir: str, start: int, lock: Optional[WorkdirLock]):
    """`loop` without the resume advice on a NonFiniteError."""
    exp, config = run.experiment, run.experiment.config
    t, total = config.train, exp.steps
    metrics_cfg = config.get("metrics") or {}
    writer = metrics_lib.MetricWriter(workdir, total, start, tensorboard=metrics_cfg.get("tensorboard", True),
                                      progress=metrics_cfg.get("progress", True), drop_after=start)
    norm_limit = param_norm_limit(run)
    meter = metrics_lib.Throughput(metrics_lib.device_peak_flops(override=metrics_cfg.get("peak_flops")),
                                   jax.device_count())
    watcher = ckpt_lib.PreemptionWatcher()
    log_every, ckpt_every = int(t.log_every), int(t.checkpoint_every)
    eval_every, eval_batches = int(t.get("eval_every", 0) or 0), int(t.get("eval_batches", 2))
    lr_at = make_lr_schedule(exp.optimizer)
    pending, window, status, last, done = [], [], "completed", {}, start
    try:
        if start == 0 and eval_every:
            writer.write(0, run.evaluate(eval_batches, exp.batch_size))
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
            window += fetch_checked(pending, norm_limit)
            pending = []
            evaluated = {}
            if is_eval:
                t_eval = time.perf_counter()
                evaluated = run.evaluate(eval_batches, exp.batch_size)
                meter.exclude(time.perf_counter() - t_eval)
            if is_log:
                last = dict(log_scalars(run, window, meter, done, lr_at), **evaluated)
                writer.write(done, last)
                window = []
                meter.reset()
            elif evaluated:
                writer.write(done, evaluated)
                last = dict(last, **evaluated)
            writer.advance(done)
            if is_ckpt or stop:
                if lock is not None:
                    lock.check()
                checkpointer.save(done, run.state, {"step": int(done), "data_seed": int(config.data.seed)},
                                  force=stop)
            if stop and done < total:
                status = "preempted"
                log.warning("preemption: saved step %d; relaunch the same command to resume", done)
                break
    finally:
        checkpointer.wait()
        watcher.close()
        writer.close()
    return status, done, last
