#!/usr/bin/env bash
# Every GPU figure in one command (benchmarks/gpu_suite.py has the details):
#   bash benchmarks/gpu_suite.sh            # a lent GPU machine: JSON to $OUT/gpu_suite.json
#   bash benchmarks/gpu_suite.sh --dry      # the CPU, tiny sizes, seconds (CI runs it)
# Runs from any folder; the repository root goes first on PYTHONPATH, so this tree's code runs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" "$root/benchmarks/gpu_suite.py" "$@"
