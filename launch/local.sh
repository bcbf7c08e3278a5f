#!/usr/bin/env bash
# Runs one multi-process JAX job on this machine: N CPU processes with D fake devices each,
# wired together through camclone_jax.distributed (COORDINATOR_ADDRESS / NUM_PROCESSES /
# PROCESS_ID). The way to try multi-host code paths (global batches, sharded checkpoints,
# process-0-only logging) without a cluster.
#
#   launch/local.sh [-n PROCESSES] [-d DEVICES_PER_PROCESS] [-p PORT] [-m MODULE] [-- ARGS...]
#   launch/local.sh -n 2 -d 4 -- --config=configs/demo.py --workdir=/tmp/camclone_local
#   launch/local.sh -n 2 -m camclone_jax.distributed        # connectivity check only
#
# Every output line is prefixed with "[process i]". The script waits for all processes; when
# one fails it stops the others and exits with the failed process's status.
set -euo pipefail

processes=2
devices=4
port="${COORDINATOR_PORT:-}"
module="camclone_jax.train"

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
while getopts "n:d:p:m:h" opt; do
  case "$opt" in
    n) processes="$OPTARG" ;;
    d) devices="$OPTARG" ;;
    p) port="$OPTARG" ;;
    m) module="$OPTARG" ;;
    h) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))  # getopts also consumes a "--"; the rest goes to the module

for value in "$processes" "$devices"; do
  if ! [[ "$value" =~ ^[1-9][0-9]*$ ]]; then
    echo "local.sh: process and device counts must be positive integers, got '$value'" >&2
    exit 2
  fi
done
if [[ -z "$port" ]]; then  # a free port, chosen by the kernel
  port="$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi

set -m  # every process in its own process group, so a failure can stop it with its children
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
}
trap 'stop_all; exit 130' INT TERM

echo "local.sh: ${processes} processes x ${devices} CPU devices, coordinator 127.0.0.1:${port}," \
     "python -m ${module} $*" >&2
for ((i = 0; i < processes; i++)); do
  (
    set -o pipefail
    export COORDINATOR_ADDRESS="127.0.0.1:${port}" NUM_PROCESSES="$processes" PROCESS_ID="$i"
    export JAX_PLATFORMS=cpu JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo
    export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=${devices}"
    python -u -m "$module" "$@" 2>&1 | sed -u "s/^/[process $i] /"
  ) &
  pids+=("$!")
done

status=0
for ((left = processes; left > 0; left--)); do
  if wait -n; then
    continue
  else
    status=$?
    echo "local.sh: a process exited with status ${status}; stopping the others" >&2
    stop_all
    { wait; } 2>/dev/null || true  # reap them quietly (no job-control notices)
    break
  fi
done
exit "$status"
