#!/usr/bin/env bash
# The one prepared GPU check (H100/H200, <= 8 minutes). Run from anywhere:
#   bash benchmarks/gpu_check.sh            # GPU: pretrain ~91M base, vanilla vs APEX CPT, overhead 125m/1b
#   bash benchmarks/gpu_check.sh --dry-run  # or DRY_RUN=1: CPU, micro model, every stage in < 60 s
# Carry (git-ignored) benchmarks/gpu_data (python benchmarks/pack_gpu_data.py) and, if present, .whl/.
# Writes $OUT/gpu_check.json (OUT defaults to ./gpu_out) and prints a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY="${DRY_RUN:-0}"
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    *) echo "gpu_check.sh: unknown argument $arg (use --dry-run)" >&2; exit 2 ;;
  esac
done
export OUT="${OUT:-./gpu_out}"
mkdir -p "$OUT"
if [ -x .venv/bin/python ]; then PY="${PYTHON:-.venv/bin/python}"; else PY="${PYTHON:-python3}"; fi

# (i) carried wheels (hydra-core, omegaconf, ...): not needed by this check, installed for later runs
if [ "$DRY" != 1 ] && compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:$PWD/benchmarks:${PYTHONPATH:-}"
export TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled PYTHONUNBUFFERED=1

if [ "$DRY" = 1 ]; then
  "$PY" benchmarks/gpu_check.py --dry-run --out "$OUT/gpu_check.json"
else
  # (ii)-(v): data from benchmarks/gpu_data, pretrain, CPT comparison, overhead; 450 s budget inside
  timeout -k 10 470 "$PY" benchmarks/gpu_check.py --out "$OUT/gpu_check.json"
fi
[ "$DRY" = 1 ] || "$PY" benchmarks/gpu_cost_model.py --json "$OUT/gpu_cost_model.json" > "$OUT/gpu_cost_model.txt" || true  # issue 13: roofline estimate beside the measured overhead
