"""Every error a user can cause or meet exits with its documented code and one line naming the file and the
fix (issue 15): corrupt weights, rejected pickles, full disks, permission denied (simulated by patching:
tests run as root), damaged and unreadable checkpoints, a workdir that is a file. Also the small fixes:
0644 exports published atomically, metrics.jsonl past a restored step, relative checkpoint paths, byte
offsets of bad UTF-8. In-process and cheap: nothing here compiles a train step."""
import argparse
import errno
import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from engine_helpers import tiny_setup
from jaxdistill import cli, errors
from jaxdistill.checkpoint import Checkpointer, read_state
from jaxdistill.storage import describe_failure
from jaxdistill.models import hf
from tiny import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "homodistil.py:smoke")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("messages"))
    teacher, corpus = tiny_setup(root)
    return dict(root=root, teacher=teacher, corpus=corpus, cache=os.path.join(root, "cache"))


def distill(env, capsys, workdir, teacher=None, *flags):
    argv = ["distill", "--config", SMOKE, "--workdir", str(workdir), *flags,
            f"--config.teacher.path={teacher or env['teacher']}", "--config.data.corpus.source=text",
            f"--config.data.corpus.path={env['corpus']}", f"--config.data.cache_dir={env['cache']}",
            "--config.pruning.hidden=24", "--config.pruning.ffn=32", "--config.pruning.head_dim=6",
            "--config.train.steps=4"]
    code = cli.main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


def copy_teacher(env, tmp_path):
    broken = str(tmp_path / "teacher")
    shutil.copytree(env["teacher"], broken)
    return broken


def test_truncated_weights_exit_3_naming_the_file(env, capsys, tmp_path):
    broken = copy_teacher(env, tmp_path)
    weights = os.path.join(broken, "model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    code, err = distill(env, capsys, tmp_path / "w", broken)
    assert code == 3, err
    assert err[-1].startswith("jaxdistill: error: ") and weights in err[-1] and "truncated or corrupt" in err[-1]


def test_a_rejected_pickle_exits_3_without_unsafe_advice(env, capsys, tmp_path):
    torch = pytest.importorskip("torch")
    broken = copy_teacher(env, tmp_path)
    os.remove(os.path.join(broken, "model.safetensors"))
    binary = os.path.join(broken, "pytorch_model.bin")
    torch.save({"w": torch.zeros(2), "args": argparse.Namespace(lr=1)}, binary)
    code, err = distill(env, capsys, tmp_path / "w", broken)
    assert code == 3, err
    assert binary in err[-1] and "safetensors" in err[-1]
    assert "weights_only" not in "\n".join(err)


def test_a_workdir_that_is_a_file_exits_2(env, capsys, tmp_path):
    path = tmp_path / "afile"
    path.write_text("x")
    code, err = distill(env, capsys, path)
    assert code == 2 and err == [f"jaxdistill: error: --workdir {str(path)!r} is a file, not a directory; pass "
                                 "a directory (it is created when missing)"]


def test_verbose_and_its_debug_alias_print_the_traceback(env, capsys, tmp_path):
    path = tmp_path / "afile"
    path.write_text("x")
    for flag in ("--verbose", "--debug"):
        code, err = distill(env, capsys, path, None, flag)
        assert code == 2 and err[0] == "Traceback (most recent call last):" and "is a file" in err[-1]


# ------------------------------------------------------------------------------------------- exports
def tiny_export_args():
    import jax
    from jaxdistill.models import init_params
    config = tiny_config()
    return config, init_params(config, jax.random.key(0))


def test_export_is_published_whole_and_weights_are_0644(tmp_path, monkeypatch):
    import safetensors.numpy
    config, params = tiny_export_args()
    out = str(tmp_path / "out")
    real_save = safetensors.numpy.save_file

    def disk_full(tensors, path, metadata=None):
        real_save(tensors, path, metadata=metadata)
        raise OSError(errno.ENOSPC, "No space left on device", path)
    monkeypatch.setattr(safetensors.numpy, "save_file", disk_full)
    with pytest.raises(errors.StorageError, match=r"exporting the model to .*out failed writing .*model.safetensors "
                                                  r"\(No space left on device\)") as e:
        hf.export(config, params, out)
    assert errors.exit_code_for(e.value) == 75
    assert not os.path.exists(out), "a failed export leaves nothing at its destination"

    def denied(tensors, path, metadata=None):
        raise PermissionError(errno.EACCES, "Permission denied", path)
    monkeypatch.setattr(safetensors.numpy, "save_file", denied)
    with pytest.raises(errors.StorageError, match="Permission denied"):
        hf.export(config, params, out)

    monkeypatch.setattr(safetensors.numpy, "save_file", real_save)
    hf.export(config, params, out)  # the rerun replaces the partial export
    assert not os.path.exists(out + ".partial")
    modes = {n: oct(os.stat(os.path.join(out, n)).st_mode & 0o777) for n in os.listdir(out)}
    assert modes["model.safetensors"] == modes["config.json"] == "0o644", modes


# --------------------------------------------------------------------------------------- checkpoints
def small_checkpoints(directory, steps=(1, 2)):
    ckpt = Checkpointer(str(directory), keep=5, async_save=False)
    for step in steps:
        ckpt.save(step, {"w": jnp.full(4, float(step))}, {"step": step})
    ckpt.wait()
    return ckpt


def damage(directory, step):
    for d, _, files in os.walk(os.path.join(str(directory), str(step), "state")):
        for f in files:
            with open(os.path.join(d, f), "r+b") as fh:
                fh.truncate(1)


def test_read_state_takes_relative_paths_and_falls_back_past_a_damaged_step(tmp_path, monkeypatch, caplog):
    small_checkpoints(tmp_path / "ck")
    monkeypatch.chdir(tmp_path)
    step, state = read_state("ck")
    assert step == 2 and np.array_equal(state["w"], np.full(4, 2.0))
    damage(tmp_path / "ck", 2)
    step, state = read_state("ck")
    assert step == 1 and "step 2" in caplog.text and "damaged" in caplog.text
    with pytest.raises(errors.CheckpointError, match=r"step 2 .* is damaged .* pick another with --step "
                                                     r"\(available: \[1\]\)"):
        read_state("ck", step=2)


def test_every_checkpoint_damaged_is_refused_unless_restarting(tmp_path):
    ckpt = small_checkpoints(tmp_path / "ck")
    damage(tmp_path / "ck", 1)
    damage(tmp_path / "ck", 2)
    target = {"w": jnp.zeros(4)}
    with pytest.raises(errors.CheckpointError, match=r"every checkpoint .* is damaged \(steps \[1, 2\]\).*"
                                                     r"--restart-from-scratch") as e:
        ckpt.restore_latest(target)
    assert e.value.exit_code == 3 and ckpt.steps() == (1, 2), "nothing moved without the flag"
    assert ckpt.restore_latest(target, restart_from_scratch=True) is None
    assert ckpt.steps() == () and sorted(os.listdir(tmp_path / "ck.damaged")) == ["1", "2"]


def test_unreadable_checkpoints_are_storage_errors_not_damage(tmp_path, monkeypatch):
    import orbax.checkpoint as ocp
    from jaxdistill import checkpoint
    ckpt = small_checkpoints(tmp_path / "ck")
    target = {"w": jnp.zeros(4)}

    def denied(self, step, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", f"{tmp_path}/ck/{step}/state")
    monkeypatch.setattr(ocp.CheckpointManager, "restore", denied)
    with pytest.raises(errors.StorageError, match=r"cannot read the checkpoint of step 2 .*permission denied.*"
                                                  r"fix its permissions") as e:
        ckpt.restore_latest(target)
    assert e.value.exit_code == 75 and ckpt.steps() == (1, 2)
    monkeypatch.undo()

    damage(tmp_path / "ck", 2)  # damaged, and the folder it would be moved to cannot be written

    def cannot_move(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied", dst)
    monkeypatch.setattr(checkpoint.storage, "move_tree", cannot_move)
    with pytest.raises(errors.StorageError, match=r"could not move the damaged checkpoint .*ck/2 aside .*"
                                                  r"\(Permission denied\); fix the permissions"):
        ckpt.restore_latest(target)


def test_tensorstore_full_disk_is_a_storage_failure():
    assert "disk (or quota) is full" in describe_failure(ValueError('RESOURCE_EXHAUSTED: Error writing "w/0"'))
    assert describe_failure(ValueError("shape mismatch")) is None


# --------------------------------------------------------------------------------------- small fixes
def test_metrics_lines_past_the_restored_step_are_dropped(tmp_path):
    from jaxdistill.metrics import MetricWriter
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (2, 4, 6)) + '{"step": 8, "lo')
    MetricWriter(str(tmp_path), 8, 4, tensorboard=False, progress=False, drop_after=4).close()
    assert [json.loads(line)["step"] for line in open(path)] == [2, 4]
    MetricWriter(str(tmp_path), 8, 0, tensorboard=False, progress=False, drop_after=0).close()
    assert path.read_text() == ""


def test_non_utf8_corpus_reports_the_byte_offset_in_the_file(tmp_path):
    from jaxdistill.data.corpus import CorpusSpec, TextCorpus
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"good words here.\n" * 6000 + "\u00e9".encode() + b"\xff bad\n")  # past the first chunks
    corpus = TextCorpus(CorpusSpec(source="text", path=str(path)))
    with pytest.raises(errors.CorpusError, match=r"invalid start byte at byte 102002 of the file"):
        list(corpus.documents())
