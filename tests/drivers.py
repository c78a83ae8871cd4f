"""Subprocess entry points for engine tests (a real process per run, so it can be killed or multi-host).

    python drivers.py distill CONFIG.json WORKDIR          train_and_evaluate; prints SUMMARY {json}
    python drivers.py steps CONFIG.json N OUT.npz           N steps via build_run; process 0 writes OUT.npz
    python drivers.py cli FAULT ARGS...                     the `jaxdistill` command (it owns the process),
                                                            with a signal sent to itself at a fault point
FAULT is `none` or SIGNAL@POINT: SIGINT/SIGTERM/SIGKILL at `compile` (0.3 s into the first step, whose call
compiles it), `step:N` (as step N+1 starts), `save:N` (just after the async save of step N started) or
`export` (when the finished export is about to be renamed into place). It prints `FAULT <point> <time>` to
stderr when it sends the signal (and `FAULT late` if the compile was over by then).
"""
import json
import sys

import numpy as np


def _config(path):
    import ml_collections
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def distill(config_path, workdir):
    from jaxdistill.train import train_and_evaluate
    summary = train_and_evaluate(_config(config_path), workdir)
    print("SUMMARY " + json.dumps({k: v for k, v in summary.items() if k in ("status", "step", "export_format")}),
          flush=True)


def steps(config_path, n, out):
    import jax
    from jaxdistill import sharding
    from jaxdistill.train import build_run, to_host
    config = _config(config_path)
    sharding.maybe_initialize_distributed(config.get("multihost"))
    run = build_run(config)
    losses = []
    for step in range(int(n)):
        m = run.step(run.data.batch(step, jax.process_index(), jax.process_count()))
        losses.append(float(jax.device_get(m["loss"])))
    student = to_host(run.state.params["student"])
    masks = to_host(run.state.masks)
    if jax.process_index() == 0:
        flat = {"loss": np.array(losses)}
        for path, leaf in jax.tree_util.tree_leaves_with_path({"student": student, "masks": masks}):
            flat[jax.tree_util.keystr(path)] = np.asarray(leaf)
        np.savez(out, **flat)
    print("DONE", jax.process_index(), jax.process_count(), flush=True)


def send_at(point_spec):
    """Patches the engine so that the signal of `point_spec` (SIGNAL@POINT) is sent at that point."""
    import os
    import signal
    import threading
    import time
    from jaxdistill import checkpoint
    from jaxdistill.models import hf
    from jaxdistill.train import loop
    sig_name, point = point_spec.split("@")
    sig = getattr(signal, sig_name)

    def fire():
        print(f"FAULT {point} {time.time():.3f}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), sig)

    kind, _, arg = point.partition(":")
    if kind in ("compile", "step"):
        original_step, calls = loop.Run.step, []

        def step(self, local):
            calls.append(1)
            if kind == "compile" and len(calls) == 1:
                done = threading.Event()

                def later():
                    time.sleep(0.3)
                    if done.is_set():
                        print("FAULT late", file=sys.stderr, flush=True)
                    fire()
                threading.Thread(target=later, daemon=True).start()
                try:
                    return original_step(self, local)
                finally:
                    done.set()
            if kind == "step" and self.host_step == int(arg):
                fire()
            return original_step(self, local)
        loop.Run.step = step
    elif kind == "save":
        original_save = checkpoint.Checkpointer.save

        def save(self, step, *a, **k):
            out = original_save(self, step, *a, **k)
            if step == int(arg):
                fire()
                time.sleep(5)  # the signal must end the process while the save is in flight
            return out
        checkpoint.Checkpointer.save = save
    elif kind == "export":
        original_publish = hf.publish

        def publish(partial, out_dir):
            fire()
            time.sleep(5)
            return original_publish(partial, out_dir)
        hf.publish = publish
    else:
        raise SystemExit(f"unknown fault point {point!r}")


def cli(fault, *argv):
    from jaxdistill import cli as cli_lib
    if fault != "none":
        send_at(fault)
    sys.argv = ["jaxdistill", *argv]
    sys.exit(cli_lib.main())


if __name__ == "__main__":
    import logging
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:%(name)s:%(message)s")
    kind = sys.argv[1]
    {"distill": distill, "steps": steps, "cli": cli}[kind](*sys.argv[2:])
