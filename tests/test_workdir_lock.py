"""One run per workdir (jaxdistill.workdir_lock): the lock refuses a second holder naming the first, writes
nothing when it loses, is taken over when its holder's process is gone or its lease expired, heartbeats, and
notices when it was taken over. All in-process and cheap (no JAX work)."""
import json
import os
import socket
import subprocess
import time

import pytest

from jaxdistill import errors
from jaxdistill.workdir_lock import LOCK_NAME, WorkdirLock


def listing(root):
    return sorted((os.path.relpath(os.path.join(d, f), root), os.path.getmtime(os.path.join(d, f)))
                  for d, _, fs in os.walk(root) for f in fs)


def write_record(workdir, **fields):
    record = {"token": "other", "host": socket.gethostname(), "pid": os.getpid(), "command": "jaxdistill distill",
              "started": "earlier", "heartbeat": time.time(), "lease_s": 60.0}
    record.update(fields)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, LOCK_NAME), "w") as f:
        json.dump(record, f)
    return record


def dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_second_run_is_refused_naming_the_holder_and_writes_nothing(tmp_path):
    work = str(tmp_path / "w")
    with WorkdirLock(work):
        before = listing(work)
        with pytest.raises(errors.WorkdirInUseError) as e:
            WorkdirLock(work).acquire()
        assert listing(work) == before, "the refused run must not write anything"
    message = str(e.value)
    assert e.value.exit_code == errors.EXIT_LOCKED == 5 and errors.exit_code_for(e.value) == 5
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in message and "in use by another run" in message
    assert "lease" in message and LOCK_NAME in message
    assert not os.path.exists(os.path.join(work, LOCK_NAME)), "released at the end of the with-block"


def test_a_lock_whose_process_ended_is_taken_over_at_once(tmp_path):
    work = str(tmp_path / "w")
    write_record(work, pid=dead_pid())
    with WorkdirLock(work) as lock:
        assert json.load(open(os.path.join(work, LOCK_NAME)))["token"] == lock.token


def test_another_hosts_lock_holds_until_its_lease_expires(tmp_path):
    work = str(tmp_path / "w")
    write_record(work, host="elsewhere", pid=1, heartbeat=time.time(), lease_s=60)
    with pytest.raises(errors.WorkdirInUseError, match="on host elsewhere"):
        WorkdirLock(work).acquire()
    write_record(work, host="elsewhere", pid=1, heartbeat=time.time() - 61, lease_s=60)
    with WorkdirLock(work) as lock:
        assert json.load(open(os.path.join(work, LOCK_NAME)))["host"] == socket.gethostname()
        assert lock.lost is False


def test_heartbeat_renews_and_a_taken_over_lock_is_noticed(tmp_path):
    work = str(tmp_path / "w")
    lock = WorkdirLock(work, lease_s=0.2).acquire()
    try:
        first = json.load(open(os.path.join(work, LOCK_NAME)))["heartbeat"]
        time.sleep(0.3)
        assert json.load(open(os.path.join(work, LOCK_NAME)))["heartbeat"] > first
        lock.check()
        write_record(work, token="thief", host="elsewhere")  # another run took it over
        time.sleep(0.3)
        with pytest.raises(errors.WorkdirInUseError, match="lost the lock"):
            lock.check()
    finally:
        lock.release()
    assert json.load(open(os.path.join(work, LOCK_NAME)))["token"] == "thief", "never deletes another's lock"


def test_an_unreadable_lock_file_is_stale(tmp_path):
    work = str(tmp_path / "w")
    os.makedirs(work)
    with open(os.path.join(work, LOCK_NAME), "w") as f:
        f.write('{"tok')  # its writer died mid-creation
    with WorkdirLock(work):
        pass
