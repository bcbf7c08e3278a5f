#!/usr/bin/env bash
# CamClone training on a multi-host Cloud TPU VM slice: runs the same command on every worker
# with `gcloud compute tpus tpu-vm ssh --worker=all`; camclone_jax.distributed.initialize()
# then lets JAX discover the slice (CAMCLONE_DISTRIBUTED=auto: TPU metadata server).
#
#   launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.key=value ...]
#   PROJECT=my-project REPO_DIR='~/camclone_jax' launch/tpu_pod.sh my-v5p-64 us-east5-a \
#       configs/X.py gs://my-bucket/runs/X
#   SETUP=1 launch/tpu_pod.sh ...    # first: `pip install -e .` on every worker
#
# REPO_DIR (default ~/camclone_jax) must hold the same checkout on every worker; WORKDIR should
# be a gs:// path (or another filesystem every worker sees). Output of worker 0 and the others
# is streamed back, prefixed by gcloud. Set LIBTPU_INIT_ARGS to replace the default XLA TPU
# flags below.
set -euo pipefail

if [[ $# -lt 4 ]]; then
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
tpu="$1"
zone="$2"
config="$3"
workdir="$4"
shift 4

repo_dir="${REPO_DIR:-~/camclone_jax}"
project_flag=()
if [[ -n "${PROJECT:-}" ]]; then project_flag=(--project="$PROJECT"); fi

# Async collective fusion and compute/communication overlap for FSDP-style sharding.
libtpu_args="${LIBTPU_INIT_ARGS:---xla_tpu_enable_async_collective_fusion=true \
--xla_tpu_enable_async_collective_fusion_fuse_all_gather=true \
--xla_tpu_enable_async_collective_fusion_multiple_steps=true \
--xla_tpu_overlap_compute_collective_tc=true --xla_enable_async_all_gather=true}"

quoted_args=""
for arg in "$@"; do quoted_args+=" $(printf '%q' "$arg")"; done

remote="set -euo pipefail; cd ${repo_dir}"
if [[ "${SETUP:-0}" == 1 ]]; then
  remote+="; python -m pip install -q -e ."
fi
remote+="; export CAMCLONE_DISTRIBUTED=auto LIBTPU_INIT_ARGS=$(printf '%q' "$libtpu_args")"
remote+="; python -u -m camclone_jax.train --config=$(printf '%q' "$config")"
remote+=" --workdir=$(printf '%q' "$workdir")${quoted_args}"

echo "tpu_pod.sh: ${tpu} (${zone}), all workers: ${remote}" >&2
exec gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" "${project_flag[@]}" --worker=all \
  --command="$remote"
