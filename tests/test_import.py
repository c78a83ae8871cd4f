"""Importing jaxdistill must stay light: no torch or tensorflow (nor transformers/datasets) at import time."""
import subprocess
import sys

MODULES = ("jaxdistill", "jaxdistill.models", "jaxdistill.train", "jaxdistill.data", "jaxdistill.pruning",
           "jaxdistill.objectives", "jaxdistill.losses", "jaxdistill.cli", "jaxdistill.finetune",
           "jaxdistill.mlm_head", "jaxdistill.demo")


def test_import_does_not_pull_torch_or_tensorflow():
    code = (f"import sys, importlib; [importlib.import_module(m) for m in {MODULES!r}]; "
            "bad = [m for m in ('torch', 'tensorflow', 'transformers', 'datasets') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
