"""bench/report.py's load sampler: what the benches use to tell a quiet machine from a busy one."""
import importlib.util
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("report", os.path.join(HERE, "..", "bench", "report.py"))
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)

SPIN = "import time\nt = time.monotonic() + 30\nwhile time.monotonic() < t:\n    pass\n"


def test_others_runnable_counts_a_spinning_process():
    child = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        time.sleep(0.5)
        seen = [report.others_runnable(own_pids={os.getpid()}) for _ in range(20)]
        assert max(seen) >= 1, seen  # the child spins: it is runnable whenever it is sampled
    finally:
        child.kill()
        child.wait()
