#!/usr/bin/env bash
# The small-scale reproduction of CamCloneMaster (issue #11), the whole chain, on CPU or GPU:
#   stage 1  configs/small_base.py      tiny I2V/T2V base DiT from scratch (pixel space)
#   stage 2  configs/small_camclone.py  CamClone fine-tuning of its 3D attention
#   ablations configs/small_{channel,blocks,nocam}.py  (same budget as stage 2)
#   eval     benchmarks/reproduce_eval.py  held-out I2V and V2V, true-pose camera errors
#
#   bash benchmarks/reproduce.sh [RUN_DIR]        (default runs/small)
#
# Every stage resumes when re-run (training resumes from its checkpoints; a finished stage
# only re-exports). Wall times go to RUN_DIR/times.txt, the table to RUN_DIR/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/small}
mkdir -p "$RUN"
DATA="$RUN/data"
TIMES="$RUN/times.txt"
echo "# $(date -u +%FT%TZ) $(python -c 'import jax; print(jax.devices()[0].device_kind, jax.device_count())')" >> "$TIMES"

stage() {  # stage NAME CMD...: runs CMD, logs to RUN/NAME.log, appends its wall time
  local name=$1; shift
  local t0=$SECONDS
  echo "== $name: $*"
  "$@" > "$RUN/$name.log" 2>&1 || { echo "stage $name failed; see $RUN/$name.log"; tail -20 "$RUN/$name.log"; exit 1; }
  echo "$name $((SECONDS - t0)) s" | tee -a "$TIMES"
}

stage base python -m camclone_jax.train --config=configs/small_base.py --workdir="$RUN/base" \
  --config.data.synthetic_dir="$DATA"
for name in camclone channel blocks nocam; do
  stage "$name" python -m camclone_jax.train --config="configs/small_$name.py" \
    --workdir="$RUN/$name" --config.base_checkpoint="$RUN/base/export" \
    --config.data.synthetic_dir="$DATA"
done
stage eval python benchmarks/reproduce_eval.py --run "$RUN" --split "$DATA/val"
cat "$RUN/results.md"
