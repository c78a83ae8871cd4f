"""One run per workdir: a lock file naming the run that holds it, kept alive by a heartbeat (a lease).

`<workdir>/.jaxdistill.lock` is a small JSON record: a random token, the host, pid and command of the holder,
when it started, its last heartbeat and the lease it promised to renew within. A second run on the same
workdir reads the record and stops with `WorkdirInUseError` (exit code 5) naming the holder, before it writes
anything. A lock whose holder is gone is taken over: at once when the holder ran on this host and its process
no longer exists (a SIGKILLed run relaunched on the same machine), otherwise once its heartbeat is older than
its lease (a dead host, a preempted VM).

The protocol needs only three storage operations, which is what keeps it portable to object stores:

  create_if_absent(record)            local: open(O_CREAT | O_EXCL)    gs://: write with if_generation_match=0
  read() -> record or None            local: read the file              gs://: read, remembering the generation
  swap_if_held_by(token, record|None) replace (or delete, None) only if the record still carries `token`
                                      local: under an flock of a guard   gs://: write/delete with
                                      file, then an atomic os.replace     if_generation_match=<generation read>

`LocalLockStore` implements them for local (and NFS-free shared) disks; `GcsLockStore` implements the same
three methods with generation preconditions. Heartbeats and take-overs are both `swap_if_held_by`, so two
contenders can never both believe they hold the lock: the one whose swap lands second sees a changed token.
A run that loses its lock (it stalled past its lease and another run took over) finds out at its next
`check()`, which the train loop calls before every checkpoint save.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from typing import Optional

from jaxdistill import storage, storage_retry
from jaxdistill.errors import StorageError, WorkdirInUseError

log = logging.getLogger(__name__)

LOCK_NAME = ".jaxdistill.lock"
DEFAULT_LEASE_S = 60.0
RELEASE_RETRY_S = 10.0  # retry budget of the release, at most (a storage outage must not hold up the exit)


class LocalLockStore:
    """The lock record as a local file; every change but the first creation is a compare-and-swap."""

    def __init__(self, path: str):
        self.path = path
        self.guard_path = path + ".guard"

    def create_if_absent(self, record: dict) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        return True

    def read(self) -> Optional[dict]:
        try:
            with open(self.path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}  # written by a holder that died mid-creation: no token, no heartbeat, so stale

    def swap_if_held_by(self, token: Optional[str], record: Optional[dict]) -> bool:
        """Replaces the record with `record` (deletes it when None) only if it still carries `token`."""
        with self._guarded():
            current = self.read()
            if current is None or current.get("token") != token:
                return False
            if record is None:
                os.unlink(self.path)
                return True
            tmp = f"{self.path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump(record, f)
            os.replace(tmp, self.path)
            return True

    @contextlib.contextmanager
    def _guarded(self):
        with open(self.guard_path, "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(guard, fcntl.LOCK_UN)


class GcsLockStore:
    """The lock record as one GCS object; every change is conditional on the object's generation
    (`ifGenerationMatch`), which GCS checks atomically: 0 to create it only when absent, the generation read
    to replace or delete it only when nobody changed it since (a compare-and-swap)."""

    def __init__(self, url: str):
        self.path = url
        bucket, self.key = storage.split_bucket(url)
        self.bucket = storage.gcs_client().bucket(bucket)

    def create_if_absent(self, record: dict) -> bool:
        from google.api_core.exceptions import PreconditionFailed
        try:
            self.bucket.blob(self.key).upload_from_string(json.dumps(record), if_generation_match=0,
                                                          **storage_retry.gcs_call_options())
        except PreconditionFailed:
            return False
        return True

    def read_with_generation(self):
        """(record, generation), or (None, None) when there is no lock object."""
        from google.api_core.exceptions import NotFound, PreconditionFailed
        for _ in range(5):  # the object may change between reading its generation and its content
            blob = self.bucket.get_blob(self.key, **storage_retry.gcs_call_options())
            if blob is None:
                return None, None
            try:
                data = blob.download_as_bytes(if_generation_match=blob.generation, **storage_retry.gcs_call_options())
            except (NotFound, PreconditionFailed):
                continue
            try:
                return json.loads(data), blob.generation
            except (json.JSONDecodeError, UnicodeDecodeError):
                return {}, blob.generation
        return None, None

    def read(self) -> Optional[dict]:
        return self.read_with_generation()[0]

    def swap_if_held_by(self, token: Optional[str], record: Optional[dict]) -> bool:
        """Replaces the record with `record` (deletes it when None) only if it still carries `token` and
        nobody wrote it between this read and this write."""
        from google.api_core.exceptions import NotFound, PreconditionFailed
        current, generation = self.read_with_generation()
        if current is None or current.get("token") != token:
            return False
        blob = self.bucket.blob(self.key)
        try:
            if record is None:
                blob.delete(if_generation_match=generation, **storage_retry.gcs_call_options())
            else:
                blob.upload_from_string(json.dumps(record), if_generation_match=generation,
                                        **storage_retry.gcs_call_options())
        except (NotFound, PreconditionFailed):
            return False
        return True


def lock_store_for(workdir: str):
    """The lock store of `workdir`: a GCS object for a gs:// workdir, a local file otherwise."""
    path = storage.join(workdir, LOCK_NAME)
    return GcsLockStore(path) if storage.is_remote(workdir) else LocalLockStore(path)


def process_start_ticks(pid: int) -> Optional[str]:
    """The start time of process `pid` in clock ticks since boot (Linux), which tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_is_alive(pid: int, start_ticks: Optional[str]) -> bool:
    """Whether process `pid` on this host exists and is the same process that was recorded."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    current = process_start_ticks(pid)
    return start_ticks is None or current is None or current == start_ticks


def describe_holder(record: dict) -> str:
    """'pid 123 on host h (`jaxdistill distill ...`), started ..., last heartbeat 4 s ago'."""
    age = time.time() - float(record.get("heartbeat", 0))
    return (f"pid {record.get('pid')} on host {record.get('host')} (`{record.get('command', '?')}`), started "
            f"{record.get('started', '?')}, last heartbeat {age:.0f} s ago")


def stale_reason(record: dict, now: float) -> Optional[str]:
    """Why the holder recorded in `record` no longer holds the lock, or None while it does."""
    if not record.get("token"):
        return "the lock file is unreadable (its writer died while creating it)"
    if record.get("host") == socket.gethostname() and not process_is_alive(int(record.get("pid", -1)),
                                                                           record.get("start_ticks")):
        return f"its process {record.get('pid')} on this host has ended"
    lease = float(record.get("lease_s", DEFAULT_LEASE_S))
    if now - float(record.get("heartbeat", 0)) > lease:
        return f"its heartbeat is older than its {lease:.0f} s lease"
    return None


class WorkdirLock:
    """Holds `<workdir>/.jaxdistill.lock` for one run: `acquire()`, `check()` while running, `release()`.

    lease_s: how long the record stays valid without a heartbeat (others wait at most this long after this
    process dies on another host). The heartbeat renews it every lease_s / 4 from a daemon thread.
    """

    def __init__(self, workdir: str, lease_s: float = DEFAULT_LEASE_S, store=None):
        self.workdir = workdir
        self.lease_s = float(lease_s)
        self.store = store or lock_store_for(workdir)
        self.token = uuid.uuid4().hex
        self.lost = False
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def record(self, started: Optional[str] = None) -> dict:
        return {"token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                "start_ticks": process_start_ticks(os.getpid()), "command": " ".join(sys.argv)[:300],
                "started": started or time.strftime("%Y-%m-%d %H:%M:%S %Z"), "heartbeat": time.time(),
                "lease_s": self.lease_s}

    def acquire(self) -> "WorkdirLock":
        """Takes the lock (or a stale one over) or raises WorkdirInUseError naming its holder."""
        try:
            storage.makedirs(self.workdir)
        except OSError as e:
            raise StorageError(f"cannot create the workdir {self.workdir!r} ({e.strerror}); fix its parent's "
                               "permissions or free space, then rerun") from e
        with storage.storage_errors(f"taking the lock {self.store.path} of the workdir"):
            self.take()
        self._thread = threading.Thread(target=self._heartbeat, name="jaxdistill-lock-heartbeat", daemon=True)
        self._thread.start()
        return self

    def take(self) -> None:
        """Creates the lock record, or takes a stale one over; raises WorkdirInUseError while it is held."""
        for _ in range(3):  # a holder may release or a contender may win between our read and our write
            if self.store.create_if_absent(self.record()):
                break
            held = self.store.read()
            if held is None:
                continue
            reason = stale_reason(held, time.time())
            if reason is None:
                raise WorkdirInUseError(
                    f"workdir {self.workdir!r} is in use by another run: {describe_holder(held)}. Wait for it "
                    f"to finish, or stop it; a lock whose holder died is taken over after its lease "
                    f"({float(held.get('lease_s', DEFAULT_LEASE_S)):.0f} s). Lock file: {self.store.path}")
            if self.store.swap_if_held_by(held.get("token"), self.record()):
                log.warning("took over the lock of %s: %s (%s)", self.workdir, describe_holder(held), reason)
                break
        else:
            raise WorkdirInUseError(f"could not take the lock of workdir {self.workdir!r}: other runs keep "
                                    f"changing it ({self.store.path})")

    def _heartbeat(self) -> None:
        started = None
        while not self._stop.wait(self.lease_s / 4):
            try:
                started = started or (self.store.read() or {}).get("started")
                if not self.store.swap_if_held_by(self.token, self.record(started)):
                    self.lost = True
                    log.error("lost the lock of %s to another run", self.workdir)
                    return
            except Exception as e:  # a storage hiccup: the next beat retries within the lease
                if storage.describe_failure(e) is None:
                    raise
                log.warning("could not renew the lock of %s (%s)", self.workdir, e)

    def check(self) -> None:
        """Raises WorkdirInUseError when another run has taken the lock over (this run stalled too long)."""
        if self.lost:
            held = self.store.read() or {}
            raise WorkdirInUseError(f"this run lost the lock of workdir {self.workdir!r} to {describe_holder(held)}"
                                    " after missing its heartbeats; stopping without saving")

    def release(self) -> None:
        """Stops the heartbeat and deletes the lock if this run still holds it. Safe to call twice."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        try:
            with storage_retry.retry_budget(RELEASE_RETRY_S):  # a lock left behind is taken over: do not hold the exit
                self.store.swap_if_held_by(self.token, None)
        except Exception as e:  # noqa: BLE001  (storage errors of either store)
            if storage.describe_failure(e) is None:
                raise
            log.warning("could not remove the lock file %s (%s); the next run takes it over", self.store.path, e)

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
