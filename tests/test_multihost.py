"""Multi-host start: jax.distributed.initialize() with JAX's own cluster detection; explicit overrides."""
import os
import subprocess
import sys

import pytest

from engine_helpers import env_with, free_port
from jaxdistill.errors import ConfigError
from jaxdistill.sharding import distributed_arguments

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START = ("from jaxdistill import sharding; import jax; "
         "started = sharding.maybe_initialize_distributed({'initialize': True}); "
         "print('PROCESS', started, jax.process_index(), jax.process_count(), flush=True)")


def test_distributed_arguments_pass_only_what_is_set():
    assert distributed_arguments(None) is None
    assert distributed_arguments({"initialize": False, "coordinator_address": "", "num_processes": None}) is None
    assert distributed_arguments({"initialize": True}) == {}  # jax.distributed.initialize(): JAX detects all
    assert distributed_arguments({"initialize": True, "process_id": 0, "local_device_ids": [0, 1]}) == \
        {"process_id": 0, "local_device_ids": [0, 1]}
    explicit = {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3}
    assert distributed_arguments(explicit) == explicit  # overrides alone ask for it
    assert distributed_arguments({"initialize": False, "coordinator_address": "", "num_processes": 0,
                                  "process_id": 0}) is None  # the older defaults
    with pytest.raises(ConfigError, match=r"multihost\.num_processes must be >= 1"):
        distributed_arguments({"num_processes": -3})


@pytest.mark.slow
def test_initialize_detects_a_slurm_job_and_no_cluster_is_a_config_error():
    """Two processes with the variables srun sets (on loopback) start with no explicit address, count or id."""
    port = free_port()
    procs = []
    for i in range(2):
        env = env_with(JAX_PLATFORMS="cpu", SLURM_JOB_ID="4242", SLURM_STEP_NODELIST="localhost", SLURM_NTASKS=2,
                       SLURM_PROCID=i, SLURM_LOCALID=i, JAX_COORDINATOR_PORT=port, PYTHONPATH=ROOT)
        procs.append(subprocess.Popen([sys.executable, "-c", START], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    for i, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0 and f"PROCESS True {i} 2" in out, out[-2000:]
    bare = {k: v for k, v in env_with(JAX_PLATFORMS="cpu", PYTHONPATH=ROOT).items() if not k.startswith("SLURM_")}
    r = subprocess.run([sys.executable, "-c", START], env=bare, cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0 and "ConfigError" in r.stderr and "--config.multihost.coordinator_address" in r.stderr
