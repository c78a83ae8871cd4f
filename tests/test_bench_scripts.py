"""Every module in bench/ imports and every script there has a main(): a helper renamed in one module must not
leave another script broken until someone runs it on a quiet machine (bench/throughput.py once imported a
`load_avg` that no longer existed)."""
import glob
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "bench", "*.py")))

IMPORT_ALL = """
import importlib.util, os, sys
sys.path.insert(0, os.path.join({root!r}, "bench"))
failed = []
for path in {scripts!r}:
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        failed.append(f"{{name}}: {{type(e).__name__}}: {{e}}")
    else:
        script = "__main__" in open(path).read()
        if script and not callable(getattr(module, "main", None)):
            failed.append(f"{{name}}: a script without main()")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_bench_module_imports_and_every_script_has_a_main():
    assert len(SCRIPTS) >= 10, SCRIPTS
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", IMPORT_ALL.format(root=ROOT, scripts=SCRIPTS)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
