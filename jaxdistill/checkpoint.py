"""Orbax checkpoints of the TrainState, with resume, a fallback past damaged checkpoints, and preemption.

A checkpoint step directory holds two items: `state` (the TrainState pytree, sharded arrays written by every
process) and `meta` (JSON: the data position, i.e. the step, and the run's config). Saves are asynchronous,
atomic (orbax writes to a temporary directory and renames it) and keep the newest `keep` checkpoints.
The run's config is also written once to `<workdir>/config.json`; a later run in the same workdir whose config
changes what the checkpoint means (model shapes, recipe, pruning targets) is refused before anything runs.
"""
from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
from typing import Any, Iterable, Mapping, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from jaxdistill import storage, storage_retry
from jaxdistill.errors import (CheckpointError, ConfigError, ResumeError,  # noqa: F401  (ResumeError re-exported)
                               StorageError)

log = logging.getLogger(__name__)

# Config entries whose change makes an existing checkpoint meaningless for the new run.
RESUME_CRITICAL = ("teacher.path", "student", "recipe.name", "pruning", "data.seq_len", "train.batch_size",
                   "train.seed", "data.seed")
# On object stores orbax writes a step in place (no rename) and marks it finished with this file.
GCS_COMMIT_FILE = "commit_success.txt"



def _get(tree: Mapping[str, Any], dotted: str):
    for part in dotted.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return None
        tree = tree[part]
    return tree


def check_compatible(workdir: str, config_dict: Mapping[str, Any]) -> None:
    """Refuses to resume a workdir whose saved config disagrees on a resume-critical entry."""
    path = storage.join(workdir, "config.json")
    if not storage.exists(path):
        return
    saved = storage.read_json(path)
    new = json.loads(json.dumps(config_dict, default=str))
    diffs = [(k, _get(saved, k), _get(new, k)) for k in RESUME_CRITICAL if _get(saved, k) != _get(new, k)]
    if diffs:
        lines = "; ".join(f"{k}: saved {a!r} vs new {b!r}" for k, a, b in diffs)
        raise ResumeError(
            f"workdir {workdir!r} holds a run with a different config ({lines}). Its checkpoints cannot be "
            "resumed with this config: use a new --workdir, or restore the old settings.")


def write_config(workdir: str, config_dict: Mapping[str, Any]) -> None:
    if jax.process_index() != 0:
        return
    storage.write_json(storage.join(workdir, "config.json"), config_dict, indent=2, sort_keys=True, default=str)


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` for `{state, meta}` checkpoints."""

    def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
        self.directory = storage.absolute(directory)
        if storage.is_remote(self.directory):
            storage.configure()
            configure_tensorstore_retries()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save)
        with self.storage_errors("opening the checkpoints"):
            self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def steps(self) -> Tuple[int, ...]:
        with self.storage_errors("listing the checkpoints"):
            return tuple(sorted(self.manager.all_steps()))

    def save(self, step: int, state: Any, meta: Mapping[str, Any], force: bool = False) -> bool:
        """Starts saving `state` and `meta` as step `step` (asynchronously unless async_save=False).
        A failure to write raises StorageError (retryable: nothing saved before is lost)."""
        with self.storage_errors(f"saving the checkpoint of step {step}"):
            return self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta))), force=force)

    @contextlib.contextmanager
    def storage_errors(self, what: str):
        """Turns a storage failure inside the block (an OSError, or tensorstore's ValueError with a status
        such as RESOURCE_EXHAUSTED) into a StorageError naming `what`, the directory and the fix."""
        try:
            yield
        except (OSError, ValueError) as e:
            cause = storage.describe_failure(e)
            if cause is None:
                raise
            advice = storage.failure_advice(storage.failure_kind(e), resume=True,
                                            remote=storage.is_remote(self.directory))
            raise StorageError(f"{what} in {self.directory} failed: {cause}. The checkpoints saved before are "
                               f"intact; {advice}") from e

    def restore_latest(self, abstract_state: Any, restart_from_scratch: bool = False
                       ) -> Optional[Tuple[int, Any, dict]]:
        """Restores the newest readable checkpoint into `abstract_state`'s shapes and shardings.

        A checkpoint that fails to restore (truncated or corrupted files) is skipped with a warning in
        favour of the one before it, and moved aside to `<directory>.damaged/<step>` (kept, not deleted) so
        the resumed run can save that step again. A checkpoint that cannot be read for lack of permission
        is not damage: StorageError. When every checkpoint is damaged, nothing is moved and CheckpointError
        says so, unless `restart_from_scratch` (then they are moved aside and None is returned).
        Returns (step, state, meta), or None when there is none.
        """
        damaged = []
        for step in reversed(self.steps()):
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
            except Exception as e:  # orbax raises several types for damaged files
                raise_if_unreadable(e, f"the checkpoint of step {step} in {self.directory}")
                log.warning("checkpoint at step %d in %s could not be restored (%s); trying the one before",
                            step, self.directory, storage.first_line(e))
                damaged.append(step)
                continue
            self._set_aside(damaged)
            return step, restored["state"], dict(restored["meta"])
        if damaged and not restart_from_scratch:
            raise CheckpointError(
                f"every checkpoint in {self.directory} is damaged (steps {sorted(damaged)}), so there is nothing "
                "to resume from; they were left in place. Rerun with --restart-from-scratch to move them to "
                f"{self.directory}.damaged and start over from step 0, or put back good copies of them")
        if damaged:
            log.warning("every checkpoint in %s is damaged; restarting from step 0 as asked", self.directory)
        self._set_aside(damaged)
        return None

    def _set_aside(self, steps) -> None:
        if not steps:
            return
        aside = self.directory + ".damaged"
        if jax.process_index() == 0:
            for step in steps:
                target = storage.join(aside, str(step))
                if storage.exists(target):
                    target += f".{int(time.time())}"
                source = storage.join(self.directory, str(step))
                try:
                    storage.move_tree(source, target)
                except Exception as e:  # noqa: BLE001  (OSError locally, the client's errors on gs://)
                    if storage.describe_failure(e) is None:
                        raise
                    raise StorageError(
                        f"could not move the damaged checkpoint {source} aside to {target} "
                        f"({getattr(e, 'strerror', None) or e}); fix the permissions of {self.directory} (or move "
                        "that folder away yourself) and rerun the same command") from e
                log.warning("moved the damaged checkpoint of step %d to %s", step, target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("jaxdistill_checkpoint_set_aside")
        self.manager.reload()

    def wait(self) -> None:
        with self.storage_errors("finishing a checkpoint save"):
            self.manager.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self.manager.close()


def raise_if_unreadable(error: BaseException, what: str) -> None:
    """Raises StorageError when `error` came from missing permissions or a storage that does not answer:
    neither is damage, and no fallback to an older checkpoint can fix it."""
    kind = storage.failure_kind(error)
    if kind in (storage.PERMISSION, storage.UNREACHABLE):
        advice = storage.failure_advice(kind, writing=False, remote=storage.REMOTE_PREFIX in what)
        raise StorageError(f"cannot read {what}: {storage.describe_failure(error)}; {advice}") from error


def configure_tensorstore_retries() -> None:
    """Bounds tensorstore's retries of gs:// requests by JAXDISTILL_STORAGE_RETRY_S
    (`storage_retry.tensorstore_retries`; its own default retries for about a quarter of an hour). Orbax builds every tensorstore context from two
    module-level dicts and offers no option for this, so the resource is added to those."""
    try:
        from orbax.checkpoint._src.serialization import tensorstore_utils as ts_utils
        contexts = [ts_utils._BASE_TS_CONTEXT, ts_utils._DEFAULT_OCDBT_TS_CONTEXT]
    except (ImportError, AttributeError):  # another orbax layout: tensorstore keeps its own retry policy
        log.debug("orbax's tensorstore contexts not found; gs:// checkpoint requests keep tensorstore's retries")
        return
    retries = storage_retry.tensorstore_retries()
    for context in contexts:
        if isinstance(context, dict):
            context["gcs_request_retries"] = dict(retries)


def read_state(directory: str, step: Optional[int] = None) -> Tuple[int, Any]:
    """Reads the TrainState saved in a checkpoint directory as plain arrays, without a target (for export
    and inspection, not for resuming): the newest readable finalized step, or exactly `step`.

    A damaged newest checkpoint is skipped with a warning in favour of the one before it; a damaged `step`
    asked for by name raises CheckpointError naming the steps that remain. Returns (step, state dict).
    """
    directory = storage.absolute(directory)
    with storage.reading(directory):
        steps = sorted(int(d) for d in storage.listdir(directory) if d.isdigit())
        if storage.is_remote(directory):  # orbax saves in place on GCS and commits with this file, written last
            configure_tensorstore_retries()
            steps = [s for s in steps if storage.exists(storage.join(directory, str(s), GCS_COMMIT_FILE))]
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {directory}; the run has not saved one yet")
    if step is not None and int(step) not in steps:
        raise ConfigError(f"no checkpoint for step {step} in {directory}; available steps: {steps}")
    candidates = [int(step)] if step is not None else list(reversed(steps))
    for candidate in candidates:
        path = storage.join(directory, str(candidate), "state")
        try:
            return candidate, ocp.StandardCheckpointer().restore(path)
        except Exception as e:  # orbax raises several types for damaged files
            raise_if_unreadable(e, f"the checkpoint {path}")
            others = [s for s in steps if s != candidate]
            if step is not None:
                raise CheckpointError(f"the checkpoint of step {candidate} ({path}) is damaged and cannot be "
                                      f"read ({storage.first_line(e)}); pick another with --step (available: {others})"
                                      ) from None
            log.warning("the checkpoint of step %d (%s) is damaged (%s); trying the one before",
                        candidate, path, storage.first_line(e))
    raise CheckpointError(f"every checkpoint in {directory} is damaged (steps {steps}); nothing can be read")


class PreemptionWatcher:
    """Turns SIGTERM (and JAX's preemption sync point on Cloud TPU) into a flag the train loop polls.

    On a preemption notice the loop saves a checkpoint and returns cleanly; the relaunched job resumes.
    """

    def __init__(self, signals: Iterable[int] = (signal.SIGTERM,)):
        self._event = threading.Event()
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in signals:
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        log.warning("received signal %d: will save a checkpoint and stop after this step", signum)
        self._event.set()

    def should_stop(self, step: int, sync_every: int = 10) -> bool:
        """Whether to save and stop after `step`. With several processes, every process must agree: the
        flags (and JAX's TPU preemption sync point) are combined across processes every `sync_every` steps."""
        if jax.process_count() == 1:
            return self._event.is_set()
        if step % sync_every:
            return False
        from jax.experimental import multihost_utils
        try:
            notice = bool(multihost_utils.reached_preemption_sync_point(step))
        except Exception:  # no preemption service outside Cloud TPU
            notice = False
        flags = multihost_utils.process_allgather(np.int32(self._event.is_set() or notice))
        return bool(np.max(flags))

    def close(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
