#!/usr/bin/env bash
# Cloud TPU pod slice: create it, install jaxdistill on every worker, run a distillation on all workers, and
# relaunch (resuming from the newest checkpoint) after a preemption or a worker failure.
#
#   launch/tpu_pod.sh create     # TPU VM (or a queued resource with QUEUED=1 / SPOT=1)
#   launch/tpu_pod.sh install    # copy this checkout to every worker and pip install it
#   launch/tpu_pod.sh run [jaxdistill distill args...]   # default: the homodistil tiny preset
#   launch/tpu_pod.sh delete
#
# Settings (environment): TPU_NAME (jaxdistill-pod), ZONE (us-central2-b), ACCELERATOR (v4-32),
# RUNTIME (tpu-ubuntu2204-base), PROJECT (gcloud's default), QUEUED=1 (create through queued-resources),
# SPOT=1 (spot capacity; implies queued), WORKDIR (a gs:// bucket path or a shared filesystem path every worker
# sees: orbax checkpoints are written by every worker), MAX_RESTARTS (20), REMOTE_DIR (~/jaxdistill).
set -euo pipefail

TPU_NAME=${TPU_NAME:-jaxdistill-pod}
ZONE=${ZONE:-us-central2-b}
ACCELERATOR=${ACCELERATOR:-v4-32}
RUNTIME=${RUNTIME:-tpu-ubuntu2204-base}
QUEUED=${QUEUED:-0}
SPOT=${SPOT:-0}
WORKDIR=${WORKDIR:-gs://YOUR_BUCKET/jaxdistill/${TPU_NAME}}
MAX_RESTARTS=${MAX_RESTARTS:-20}
REMOTE_DIR=${REMOTE_DIR:-jaxdistill}
PROJECT_FLAG=()
if [[ -n "${PROJECT:-}" ]]; then PROJECT_FLAG=(--project "$PROJECT"); fi
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

tpu() { gcloud compute tpus tpu-vm "$@" --zone "$ZONE" "${PROJECT_FLAG[@]}"; }
on_all_workers() { tpu ssh "$TPU_NAME" --worker=all --command "$1"; }

create() {
  if [[ "$QUEUED" == 1 || "$SPOT" == 1 ]]; then
    local extra=()
    if [[ "$SPOT" == 1 ]]; then extra+=(--spot); fi
    gcloud compute tpus queued-resources create "${TPU_NAME}-qr" --node-id "$TPU_NAME" --zone "$ZONE" \
      "${PROJECT_FLAG[@]}" --accelerator-type "$ACCELERATOR" --runtime-version "$RUNTIME" "${extra[@]}"
    echo "waiting for the queued resource to become ACTIVE ..."
    until [[ "$(gcloud compute tpus queued-resources describe "${TPU_NAME}-qr" --zone "$ZONE" \
                "${PROJECT_FLAG[@]}" --format='value(state.state)')" == "ACTIVE" ]]; do
      sleep 60
    done
  else
    tpu create "$TPU_NAME" --accelerator-type "$ACCELERATOR" --version "$RUNTIME"
  fi
}

install() {
  # Ship this checkout (not a PyPI release) so every worker runs exactly the tested code.
  local tarball
  tarball=$(mktemp /tmp/jaxdistill-XXXXXX.tar.gz)
  git -C "$REPO_ROOT" archive --format=tar.gz -o "$tarball" HEAD
  tpu scp "$tarball" "$TPU_NAME":jaxdistill.tar.gz --worker=all
  rm -f "$tarball"
  on_all_workers "set -e; rm -rf ${REMOTE_DIR}; mkdir -p ${REMOTE_DIR}; tar -xzf jaxdistill.tar.gz -C ${REMOTE_DIR}; \
    python3 -m venv ~/jaxdistill-venv; . ~/jaxdistill-venv/bin/activate; pip install -q -U pip; \
    pip install -q -e ${REMOTE_DIR} 'jax[tpu]==0.10.2' \
      -f https://storage.googleapis.com/jax-releases/libtpu_releases.html; \
    python -c 'import jax; print(jax.process_index(), jax.local_device_count(), jax.device_count())'"
}

run() {
  local args=("$@")
  if [[ ${#args[@]} -eq 0 ]]; then
    args=(distill --config configs/homodistil.py:tiny --config.train.accum_steps=1)
  fi
  local quoted
  printf -v quoted '%q ' "${args[@]}" --workdir "$WORKDIR" --config.multihost.initialize=True
  local attempt=0
  while true; do
    attempt=$((attempt + 1))
    echo "=== attempt $attempt: jaxdistill $quoted"
    local log
    log=$(mktemp /tmp/jaxdistill-run-XXXXXX.log)
    set +e
    # Every worker runs the same command; jax.distributed.initialize() discovers the pod on Cloud TPU.
    on_all_workers "cd ${REMOTE_DIR} && . ~/jaxdistill-venv/bin/activate && jaxdistill $quoted" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    set -e
    if [[ $rc -eq 0 ]]; then
      # A run that got a preemption notice saves a checkpoint and exits 0 with "status: preempted".
      if grep -q "status: preempted" "$log"; then
        rm -f "$log"
        echo "=== preempted after saving: resuming"
        wait_until_ready
        continue
      fi
      rm -f "$log"
      echo "=== finished"
      return 0
    fi
    rm -f "$log"
    # 2 = usage/config, 3 = data/model, 4 = non-finite loss: relaunching would fail the same way.
    # 75 = a storage failure (retryable: unreachable, bucket missing, permission denied; a relaunch fails again
    # within seconds until it is fixed, and MAX_RESTARTS bounds the attempts), 1 or a signal = a worker died:
    # wait and resume.
    if [[ $rc -eq 2 || $rc -eq 3 || $rc -eq 4 ]]; then
      echo "=== jaxdistill failed with exit code $rc (not retryable); see the log above" >&2
      return "$rc"
    fi
    if [[ $attempt -ge $MAX_RESTARTS ]]; then
      echo "=== giving up after $attempt attempts" >&2
      return "$rc"
    fi
    echo "=== exit code $rc (preempted or a worker failed): waiting for the TPU and resuming"
    wait_until_ready
  done
}

wait_until_ready() {
  while true; do
    local state
    state=$(tpu describe "$TPU_NAME" --format='value(state)' 2>/dev/null || echo MISSING)
    case "$state" in
      READY) return 0 ;;
      PREEMPTED|TERMINATED|MISSING)
        echo "TPU state $state: recreating it"
        if [[ "$state" != MISSING ]]; then tpu delete "$TPU_NAME" --quiet || true; fi
        if [[ "$QUEUED" == 1 || "$SPOT" == 1 ]]; then
          gcloud compute tpus queued-resources delete "${TPU_NAME}-qr" --zone "$ZONE" "${PROJECT_FLAG[@]}" \
            --quiet --force || true
        fi
        create
        install ;;
      *) sleep 30 ;;
    esac
  done
}

delete() {
  tpu delete "$TPU_NAME" --quiet
  if [[ "$QUEUED" == 1 || "$SPOT" == 1 ]]; then
    gcloud compute tpus queued-resources delete "${TPU_NAME}-qr" --zone "$ZONE" "${PROJECT_FLAG[@]}" --quiet || true
  fi
}

cmd=${1:-}
if [[ $# -gt 0 ]]; then shift; fi
case "$cmd" in
  create) create ;;
  install) install ;;
  run) run "$@" ;;
  delete) delete ;;
  *) echo "usage: $0 create|install|run [jaxdistill args...]|delete" >&2; exit 2 ;;
esac
