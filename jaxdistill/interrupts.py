"""Ctrl-C on the command line: exit 130 within moments, at any phase, with nothing half-written taken as done.

Python runs signal handlers in the main thread between bytecodes, so a KeyboardInterrupt waits for an XLA
compile or a device step to return, can crash XLA's thread pools at exit, and its `finally` blocks then wait
for an async checkpoint save. Instead, `exit_on_interrupt()` asks Python's C-level handler to write the
signal number to a pipe (`signal.set_wakeup_fd`); a watcher thread blocked on that pipe wakes at once, runs
the registered cleanups (releasing the workdir lock), prints one line and ends the process with
`os._exit(130)`.

Ending at any instant is safe because everything jaxdistill writes is published atomically: an orbax save in
flight stays a `<step>.orbax-checkpoint-tmp*` directory that the next run ignores, an export in flight
stays `<dir>.partial`, JSON files are written to a temporary name and renamed. A rerun resumes from the last
finished checkpoint. SIGTERM (preemption) is not handled here: the train loop saves and exits 0 on it.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Callable, List

from jaxdistill.errors import EXIT_INTERRUPTED

INTERRUPTED_MESSAGE = "jaxdistill: error: interrupted; a distill run resumes from its last checkpoint when rerun"

_cleanups: List[Callable[[], None]] = []


@contextlib.contextmanager
def run_on_interrupt(cleanup: Callable[[], None]):
    """Runs `cleanup` if the process is interrupted inside the block (only under `exit_on_interrupt`)."""
    _cleanups.append(cleanup)
    try:
        yield
    finally:
        if cleanup in _cleanups:
            _cleanups.remove(cleanup)


def exit_now(message: str = INTERRUPTED_MESSAGE, code: int = EXIT_INTERRUPTED) -> None:
    """Runs the cleanups, prints `message` to stderr and ends the process at once with `code`."""
    for cleanup in reversed(list(_cleanups)):
        try:
            cleanup()
        except Exception:  # noqa: BLE001  (nothing may stop the exit)
            pass
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    with contextlib.suppress(Exception):
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
    os._exit(code)


def watch(read_fd: int) -> None:
    """The watcher thread: waits for SIGINT's byte on the wakeup pipe (other signals' bytes are ignored)
    and returns when the pipe closes, closing its end."""
    try:
        while True:
            try:
                data = os.read(read_fd, 64)
            except InterruptedError:
                continue
            if not data:
                return
            if signal.SIGINT in data:
                exit_now()
    except OSError:
        return
    finally:
        with contextlib.suppress(OSError):
            os.close(read_fd)


@contextlib.contextmanager
def exit_on_interrupt():
    """Inside the block, Ctrl-C (SIGINT) ends the process within moments with exit code 130.

    A no-op outside the main thread (signal handlers can only be set there).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    previous_handler = signal.signal(signal.SIGINT, lambda signum, frame: None)  # the watcher acts, not Python
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    threading.Thread(target=watch, args=(read_fd,), name="jaxdistill-interrupt-watcher", daemon=True).start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        signal.signal(signal.SIGINT, previous_handler)
        os.close(write_fd)  # the watcher reads EOF and returns; it closes nothing itself
