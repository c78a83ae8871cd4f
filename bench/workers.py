"""A study's independent runs in parallel processes, one per core, each pinned to its core.

On a few CPU cores, a BERT-mini-size run is hundreds of small XLA ops per step that leave XLA's intra-op
threads idle much of the time; two single-core processes finish two fine-tunings sooner than one process on
both cores one after the other (two of `bench/ablation.py`'s fine-tunings on 2 cores: 77 s side by side
against 113 s in turn).

Numerics: a process pinned to one core runs XLA's reductions on one thread, which may sum in another order
than on several, so a run's numbers match a run made with another worker count to float rounding (about 1e-8
in the loss), not bit for bit.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterable, List, Sequence

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def available_cores() -> List[int]:
    """The CPU cores this process may run on (its affinity, which a container or `taskset` may restrict; all of
    them where the OS has no affinity call)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def pin_worker(cores) -> None:
    """Pool initializer: binds the new worker to the next free core from the queue `cores`."""
    os.sched_setaffinity(0, {cores.get()})
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)


def run_pinned(fn: Callable[..., Any], calls: Iterable[Sequence[Any]], workers: int) -> List[Any]:
    """`[fn(*args) for args in calls]`, in call order.

    workers <= 1: in this process, one call after another (XLA then uses every core for each run).
    workers > 1: a pool of min(workers, cores, calls) fresh (spawned) processes, each pinned to its own core;
    `fn` and its arguments must be picklable (a module-level function). The first run that raises stops the
    calls not started yet, and its exception is raised here.
    """
    calls = [tuple(c) for c in calls]
    if workers <= 1 or not calls:
        return [fn(*c) for c in calls]
    cores = available_cores()
    n = min(workers, len(cores), len(calls))
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited XLA thread pools
    queue = ctx.Queue()
    for core in cores[:n]:
        queue.put(core)
    with ProcessPoolExecutor(n, mp_context=ctx, initializer=pin_worker, initargs=(queue,)) as pool:
        futures = [pool.submit(fn, *c) for c in calls]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise
