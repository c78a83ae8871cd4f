"""Importing jaxdistill must stay light: no torch, no tensorflow."""
import subprocess
import sys


def test_import_does_not_pull_torch_or_tensorflow():
    code = ("import sys, jaxdistill, jaxdistill.models; "
            "bad = [m for m in ('torch', 'tensorflow') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
