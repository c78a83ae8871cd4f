"""Exit codes live on the exceptions (jaxdistill.errors); the CLI reads them, never class names."""
import errno
import os

import pytest

from jaxdistill import errors


@pytest.mark.parametrize("cls,code", [
    (errors.ConfigError, 2), (errors.UsageError, 2), (errors.OutputExistsError, 2), (errors.ResumeError, 2),
    (errors.DataError, 3), (errors.CorpusError, 3), (errors.TokenizerError, 3), (errors.TaskError, 3),
    (errors.ModelError, 3), (errors.CheckpointError, 3), (errors.NonFiniteError, 4),
    (errors.WorkdirInUseError, 5), (errors.StorageError, 75),
])
def test_each_error_carries_its_documented_exit_code(cls, code):
    assert cls("x").exit_code == code
    assert errors.exit_code_for(cls("x")) == code


def test_builtin_exceptions_and_interrupts():
    assert errors.exit_code_for(KeyboardInterrupt()) == 130
    assert errors.exit_code_for(FileNotFoundError(errno.ENOENT, "gone", "/x")) == 3
    assert errors.exit_code_for(ValueError("deep bug")) == 1  # a bare ValueError is a bug, not a usage error
    assert errors.exit_code_for(RuntimeError("boom")) == 1


def test_errors_keep_the_builtin_bases_callers_catch():
    assert issubclass(errors.ConfigError, ValueError) and issubclass(errors.DataError, ValueError)
    assert issubclass(errors.NonFiniteError, FloatingPointError) and issubclass(errors.StorageError, OSError)
    assert issubclass(errors.OutputExistsError, FileExistsError)


def test_the_cli_returns_the_attribute_of_whatever_a_command_raises(monkeypatch, capsys):
    from jaxdistill import cli

    class Renamed(errors.StorageError):  # a subclass with any name keeps its parent's code
        pass

    def boom(args, overrides):
        raise Renamed("writing gs://bucket/run/checkpoints/10 failed")

    monkeypatch.setitem(cli.COMMANDS, "export", boom)
    assert cli.main(["export", "--workdir", "w", "--out", "o"]) == 75
    assert "gs://bucket/run/checkpoints/10" in capsys.readouterr().err


def test_a_checkpoint_write_failure_is_retryable(tmp_path):
    """Orbax failing to write (here: the checkpoint folder was replaced by a file) -> StorageError naming it."""
    import jax.numpy as jnp
    from jaxdistill.checkpoint import Checkpointer
    ckpt = Checkpointer(str(tmp_path / "ckpt"), keep=2, async_save=False)
    os.rmdir(tmp_path / "ckpt")
    (tmp_path / "ckpt").write_text("not a folder")
    with pytest.raises(errors.StorageError, match=r"saving the checkpoint of step 1 in .*ckpt failed") as e:
        ckpt.save(1, {"w": jnp.ones(3)}, {"step": 1})
        ckpt.wait()
    assert e.value.exit_code == 75
