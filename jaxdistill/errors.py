"""Every exception jaxdistill raises on purpose, each carrying the exit code the command line returns for it.

The command line (`jaxdistill.cli`) reads `error.exit_code`; it never matches class names. Codes (stable, for
scripts and launchers):

  0    done, or preempted after a save (rerun the same command to resume)         -> `Preempted`
  1    an unexpected internal error (a bug)                                       -> anything not below
  2    usage or config error: flags, config fields, overrides, an output that would be overwritten, a
       workdir that holds an incompatible run                                    -> `ConfigError`
  3    data or model error: missing or corrupt teacher/model/checkpoint, empty or unreadable corpus, bad
       task file, tokenizer mismatch                                              -> `DataError`, `ModelError`
  4    the loss or the gradients became non-finite, or the parameters exploded     -> `NonFiniteError`
  5    the workdir is in use: another run holds its lock (wait for it, or rerun once its lease has
       expired)                                                                   -> `WorkdirInUseError`
  75   a retryable storage failure (storage unreachable after JAXDISTILL_STORAGE_RETRY_S seconds of retries,
       bucket missing, permission denied, disk or quota full), while writing, or while reading gs:// or a
       run's own checkpoints: nothing is lost, fixing the storage and relaunching the same command
       resumes                                                                    -> `StorageError`
       A missing bucket or a denied permission (HTTP 403) is in this class on purpose, not a code of its own:
       both are fixed outside the job (and IAM grants take minutes to propagate), after which the same
       command resumes; every command probes its outputs before the heavy work, so a relaunch that still
       fails costs seconds, and the launchers bound their relaunches (MAX_RESTARTS, MAX_REQUEUES). The
       message says which it is and the fix (`storage.failure_advice`).
  130  interrupted (Ctrl-C)

Every class also derives from the built-in exception its callers would naturally catch (`ValueError` for
bad settings and bad data, `OSError` for storage, `FloatingPointError` for non-finite values), so library
users keep their usual `except` clauses.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_NONFINITE = 4
EXIT_LOCKED = 5
EXIT_RETRYABLE = 75  # sysexits.h EX_TEMPFAIL: try again later
EXIT_INTERRUPTED = 130


class JaxdistillError(Exception):
    """Base class of jaxdistill's own errors; `exit_code` is what the command line returns."""

    exit_code = EXIT_INTERNAL


class ConfigError(JaxdistillError, ValueError):
    """A config field, preset, override or flag that cannot be used. The message names the field and the fix."""

    exit_code = EXIT_USAGE


class UsageError(ConfigError):
    """Bad command-line usage (flags and arguments rather than config fields)."""


class OutputExistsError(ConfigError, FileExistsError):
    """An output (export directory, model directory) already holds files that would be overwritten."""


class ResumeError(ConfigError):
    """A workdir holds a run whose config is incompatible with the one given."""


class DataError(JaxdistillError, ValueError):
    """Input data that cannot be used: an empty or unreadable corpus, a bad task file, a tokenizer mismatch."""

    exit_code = EXIT_DATA


class CorpusError(DataError):
    """A pre-training corpus that is missing, empty, unreadable or of an unknown kind."""


class TokenizerError(DataError):
    """A tokenizer that cannot be loaded or does not fit the teacher's vocabulary."""


class TaskError(DataError):
    """A downstream task (GLUE name or local file) that cannot be loaded or has bad columns/labels."""


class ModelError(JaxdistillError, ValueError):
    """A model, teacher or checkpoint that is missing, corrupt or of a shape jaxdistill cannot use."""

    exit_code = EXIT_DATA


class CheckpointError(ModelError):
    """Weights that cannot be read or do not fit the config (a Hugging Face directory or a saved state)."""


class NonFiniteError(JaxdistillError, FloatingPointError):
    """The loss or the gradients became NaN/inf; nothing from that step on was saved."""

    exit_code = EXIT_NONFINITE


class WorkdirInUseError(JaxdistillError, RuntimeError):
    """Another run holds the workdir's lock; the message names it (host, pid, command, last heartbeat)."""

    exit_code = EXIT_LOCKED


class StorageError(JaxdistillError, OSError):
    """The storage failed (unreachable, bucket missing, permission denied, full) in a way a relaunch resumes
    from once it is fixed; the message names the path, what went wrong and the fix."""

    exit_code = EXIT_RETRYABLE


def exit_code_for(error: BaseException) -> int:
    """The documented exit code of any exception (see the module docstring).

    jaxdistill's own errors carry theirs. Of the built-in ones: Ctrl-C is 130; an `OSError` that reached
    the top unwrapped (a missing or unreadable input) is a data error (3): writes that a relaunch may fix
    are wrapped in `StorageError` (75) where they happen; everything else is an internal error (1).
    """
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, JaxdistillError):
        return error.exit_code
    if isinstance(error, OSError):
        return EXIT_DATA
    return EXIT_INTERNAL
