#!/usr/bin/env bash
# Runs N jaxdistill processes on this machine, talking over loopback: a multi-host job without the hosts.
#
#   launch/local_multihost.sh N [jaxdistill args...]
#   launch/local_multihost.sh 2 distill --config configs/homodistil.py:smoke --workdir /tmp/mh
#
# There is no cluster here for jax.distributed to detect, so each process i gets the explicit overrides
# --config.multihost.coordinator_address=127.0.0.1:PORT (a free port) --config.multihost.num_processes=N
# --config.multihost.process_id=i appended to its arguments (so the command must take --config: distill),
# plus JAX_PLATFORMS=cpu and DEVICES_PER_PROCESS (default 2) fake CPU devices, so the global mesh has
# N * DEVICES_PER_PROCESS devices. Output lines are prefixed with "[i] ". All processes share
# the workdir (orbax needs every process); only process 0 writes logs and exports.
# Environment: PYTHON (default: python), DEVICES_PER_PROCESS (2), TIMEOUT_S (1800; 0 = none), PORT (free).
# Exit status: 0 when every process succeeds; otherwise the first failing process's status (124 on timeout),
# after the other processes are stopped.
set -u -o pipefail

if [[ $# -lt 1 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 N [jaxdistill args...]   (N = number of processes, >= 1)" >&2
  exit 2
fi
N=$1
shift
PYTHON=${PYTHON:-python}
DEVICES_PER_PROCESS=${DEVICES_PER_PROCESS:-2}
TIMEOUT_S=${TIMEOUT_S:-1800}

free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
PORT=${PORT:-$(free_port)}

pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

XLA_FLAGS_ALL="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${DEVICES_PER_PROCESS}"
for ((i = 0; i < N; i++)); do
  JAX_PLATFORMS=cpu XLA_FLAGS="$XLA_FLAGS_ALL" \
    "$PYTHON" -u -m jaxdistill "$@" --config.multihost.coordinator_address="127.0.0.1:${PORT}" \
    --config.multihost.num_processes="$N" --config.multihost.process_id="$i" > >(sed -u "s/^/[$i] /") 2>&1 &
  pids+=("$!")
done

start=$(date +%s)
status=0
remaining=$N
declare -A done_pids=()
while ((remaining > 0)); do
  for idx in "${!pids[@]}"; do
    pid=${pids[$idx]}
    [[ -n "${done_pids[$pid]:-}" ]] && continue
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid"
      rc=$?
      done_pids[$pid]=1
      remaining=$((remaining - 1))
      if ((rc != 0 && status == 0)); then
        status=$rc
        echo "local_multihost: process $idx exited with status $rc; stopping the others" >&2
        cleanup
      fi
    fi
  done
  if ((TIMEOUT_S > 0 && $(date +%s) - start > TIMEOUT_S && remaining > 0)); then
    echo "local_multihost: timed out after ${TIMEOUT_S}s; stopping all processes" >&2
    status=124
    cleanup
    sleep 2
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    break
  fi
  sleep 0.5
done
wait 2>/dev/null
exit "$status"
