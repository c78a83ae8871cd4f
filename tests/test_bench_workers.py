"""bench/workers.py: a study's runs side by side, one process per core, results in call order."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import workers  # noqa: E402


def test_each_worker_is_pinned_to_its_own_core_and_results_keep_call_order():
    cores = workers.available_cores()
    if len(cores) < 2:
        pytest.skip("needs 2 cores")
    got = workers.run_pinned(os.sched_getaffinity, [(0,)] * 6, workers=2)
    assert len(got) == 6 and all(len(a) == 1 for a in got)  # every call ran on exactly one core
    assert {c for a in got for c in a} <= set(cores[:2])
    assert workers.run_pinned(divmod, [(7, 2), (9, 4), (1, 1)], workers=2) == [(3, 1), (2, 1), (1, 0)]


def test_one_worker_runs_in_this_process_and_an_error_reaches_the_caller():
    assert workers.run_pinned(os.getpid, [(), ()], workers=1) == [os.getpid()] * 2
    with pytest.raises(ZeroDivisionError):
        workers.run_pinned(divmod, [(1, 1), (1, 0), (2, 1)], workers=2)
