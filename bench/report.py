"""Shared pieces of the bench scripts' generated reports: the machine, the commit, a section of a Markdown file."""
from __future__ import annotations

import os
import platform
import subprocess
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_average() -> List[float]:
    """The 1, 5 and 15-minute load averages ([] where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def call_times(fn, n: int) -> List[float]:
    """Wall seconds of `n` successive calls of `fn()` (the caller warms up first)."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def load_text() -> str:
    """The load averages as printed in the reports: "1.02 0.87 0.66" ("?" where the OS has none)."""
    return " ".join(f"{x:.2f}" for x in load_average()) or "?"


def machine_info() -> Dict[str, str]:
    """uname, CPU model, cores, jax version and backend, Python, load average (1, 5, 15 min) now."""
    import jax
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return dict(uname=" ".join(platform.uname()), cpu=cpu, cores=str(os.cpu_count()), jax=jax.__version__,
                backend=f"{jax.default_backend()} x {jax.device_count()}", python=platform.python_version(),
                load=load_text())


def git_rev() -> str:
    """The checkout's short commit, with "+dirty" when tracked files differ from it."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip() or "?"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def write_section(path: str, start: str, end: str, section: str) -> None:
    """Replaces the text between the markers `start` and `end` of the Markdown file `path` by `section` (which
    carries both markers), or appends it; other sections are kept. Written atomically."""
    old = open(path).read() if os.path.exists(path) else "# Results\n"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if start in old and end in old:
        a, b = old.index(start), old.index(end) + len(end)
        new = old[:a] + section.rstrip("\n") + old[b:]
    else:
        new = old.rstrip("\n") + "\n\n" + section
    with open(path + ".tmp", "w") as f:
        f.write(new if new.endswith("\n") else new + "\n")
    os.replace(path + ".tmp", path)


def others_runnable(own_pids=None) -> int:
    """Threads of other processes that are runnable (state R) right now, from /proc (0 where there is none).

    A bench running its own threads cannot read "is the machine quiet" off the load average, which counts
    the bench itself; sampling this between timed steps counts only the competition. `own_pids`: process ids
    to leave out (default: this process and its children)."""
    own = set(own_pids) if own_pids is not None else {os.getpid()}
    if own_pids is None:
        try:
            with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as f:
                own.update(int(p) for p in f.read().split())
        except OSError:
            pass
    count = 0
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return 0
    for pid in pids:
        if pid in own:
            continue
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if stat[stat.rindex(")") + 2:].startswith("R"):
                count += 1
    return count
