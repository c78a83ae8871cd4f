"""Subprocess entry points for engine tests (a real process per run, so it can be killed or multi-host).

    python drivers.py distill CONFIG.json WORKDIR          train_and_evaluate; prints SUMMARY {json}
    python drivers.py steps CONFIG.json N OUT.npz           N steps via build_run; process 0 writes OUT.npz
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


if __name__ == "__main__":
    import logging
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:%(name)s:%(message)s")
    kind = sys.argv[1]
    {"distill": distill, "steps": steps}[kind](*sys.argv[2:])
