#!/usr/bin/env bash
# The one prepared GPU study (H100/H200, <= 10 minutes), through the real pipeline (train.py: Hydra + Lightning):
#   1. pretrain  a ~91M LLaMA (768 hidden, 12 layers, 12 heads, ffn 2048, vocab 8192) on Shakespeare, bf16;
#   2. cpt_s<N>  continued pre-training on pycode from that base, one Hydra multirun per seed: vanilla
#                (full_cpt), restart-only control (full_restart_cpt), APEX mixer LR x1 and x30 (restarts), at
#                equal optimizer-step tokens; after each seed the sweep report (deltas against both controls);
#   3. overhead  benchmarks/bench_overhead.py at the 125m and 1b shapes (step time, memory; vs full FT), then
#                125m again with every prepared model compiled (inductor);
#   4. fsdp      OPTIONAL: benchmarks/gpu_fsdp_check.sh, only if that file exists.
# Order: pretrain -> cpt_s1 -> overhead_125m -> cpt_s2 -> overhead_1b -> cpt_s3 -> overhead_125m_compiled
# -> cost_model -> fsdp. Every stage is its own process under `timeout`, skipped when the budget left is below its estimate, and writes what it finished
# under $OUT as it goes (run dirs, reports, JSON); $OUT/stages.tsv says how each stage ended. A timeout or a
# failing stage keeps everything finished before it.
#   bash benchmarks/gpu_check.sh            # GPU; carry benchmarks/gpu_data (pack_gpu_data.py) and .whl/
#   bash benchmarks/gpu_check.sh --dry-run  # (or DRY_RUN=1) the same stages on CPU, micro shapes, few steps
# Env: OUT (default ./gpu_out), WORK (large files: the base; default /tmp/apexlm_gpu_check), TOTAL_S (570;
# dry 300), SEEDS ("1 2 3"; dry "1"), PRE_STEPS (600), CPT_STEPS (240), GPU_DATA_DIR (benchmarks/gpu_data when
# present, else the usual data dir), PYTHON.
set -euo pipefail
cd "$(dirname "$(realpath "$0")")/.."
source benchmarks/dry_run_args.sh
[[ $DRY == 0 ]] || DRY=1
OUT=$(realpath -m "${OUT:-./gpu_out}"); WORK=$(realpath -m "${WORK:-/tmp/apexlm_gpu_check}")
mkdir -p "$OUT" "$WORK"
if [[ -x .venv/bin/python ]]; then PY="${PYTHON:-.venv/bin/python}"; else PY="${PYTHON:-python3}"; fi
T0=$(date +%s)
TOTAL_S=${TOTAL_S:-$([[ $DRY == 1 ]] && echo 300 || echo 570)}
log() { echo "[$(($(date +%s) - T0))s] $*"; }
left() { echo $((TOTAL_S - ($(date +%s) - T0))); }

# ---- 0. environment: carried wheels (never the network), data, threads ---------------------------------------
if ! "$PY" -c "import hydra, omegaconf" 2>/dev/null; then
  if ! compgen -G ".whl/*.whl" >/dev/null; then
    echo "gpu_check.sh: hydra-core/omegaconf are missing and .whl/ holds no wheels: carry .whl/ (benchmarks/README.md)" >&2
    exit 2
  fi
  log "installing the carried wheels (.whl/) into $WORK/site"
  "$PY" -m pip install -q --no-index --no-deps --target "$WORK/site" .whl/*.whl
  export PYTHONPATH="$WORK/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:$PWD/benchmarks:${PYTHONPATH:-}"
export TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1
GPU_DATA_DIR=${GPU_DATA_DIR:-$([[ -f benchmarks/gpu_data/manifest.json ]] && echo benchmarks/gpu_data || true)}
if [[ -n $GPU_DATA_DIR ]]; then export APEXLM_DATA_DIR=$(realpath "$GPU_DATA_DIR"); fi
log "data: ${APEXLM_DATA_DIR:-<default data dir>}; out: $OUT; work: $WORK; dry run: $DRY; budget ${TOTAL_S}s"

if [[ $DRY == 1 ]]; then  # micro shapes, a handful of steps, one thread: the same commands, on CPU
  SEEDS=${SEEDS:-1}; PRE_STEPS=${PRE_STEPS:-8}; CPT_STEPS=${CPT_STEPS:-6}
  RUN="trainer=cpu threads=1 data.block_size=64 data.batch_size=4 data.eval_batch_size=4"
  MODEL="model.hidden_size=64 model.num_hidden_layers=2 model.num_attention_heads=8 model.num_key_value_heads=8
    model.intermediate_size=128 model.max_position_embeddings=64"
  PRE_VAL="trainer.val_check_interval=4 trainer.limit_val_batches=2"
  CPT_VAL="trainer.val_check_interval=3 trainer.limit_val_batches=2 eval.max_ppl_batches=2"  # APEX assesses on method.assess_samples=256 (its default)
  OVERHEAD_SHAPES="micro"; OVERHEAD_ARGS="--quick --steps 2 --warmup 1 --threads 1"
  COMPILE_SHAPE="micro"; COMPILE_BACKEND="aot_eager"; EST_OVH_C=40   # no code generation on the CPU run
  EST_PRE=60 EST_CPT=90 EST_OVH=40
else
  SEEDS=${SEEDS:-1 2 3}; PRE_STEPS=${PRE_STEPS:-600}; CPT_STEPS=${CPT_STEPS:-240}
  RUN="trainer=gpu data.block_size=512 data.batch_size=16 data.eval_batch_size=32"  # 8,192 tokens per step
  MODEL="model.hidden_size=768 model.num_hidden_layers=12 model.num_attention_heads=12 model.num_key_value_heads=12
    model.intermediate_size=2048 model.max_position_embeddings=512"
  PRE_VAL="trainer.val_check_interval=100 trainer.limit_val_batches=20"
  CPT_VAL="trainer.val_check_interval=40 trainer.limit_val_batches=16 eval.max_ppl_batches=16"  # APEX: assess_samples=256 (default)
  OVERHEAD_SHAPES="125m 1b"; OVERHEAD_ARGS="--device cuda --steps 8"
  COMPILE_SHAPE="125m"; COMPILE_BACKEND="inductor"; EST_OVH_C=180   # 4 models × ~40 s of compilation
  EST_PRE=150 EST_CPT=150 EST_OVH=90
fi
COMMON="logger=csv trainer.enable_progress_bar=false callbacks.checkpoint.enabled=false"
BASE="$WORK/base"
printf 'stage\trc\twall_s\n' >"$OUT/stages.tsv"

stage() {  # stage <name> <estimate_s> <cmd...>: run under timeout unless the budget left is below the estimate
  local name=$1 est=$2 t rc=0; shift 2
  if (($(left) < est)); then
    log "skip $name: $(left)s left, needs ~${est}s"; printf '%s\tskipped\t0\n' "$name" >>"$OUT/stages.tsv"; return 0
  fi
  log "stage $name"; t=$(date +%s)
  timeout -k 10 "$(($(left) - 5))" bash -c '"$@"' _ "$@" >"$OUT/$name.log" 2>&1 || rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t))" >>"$OUT/stages.tsv"
  log "stage $name rc=$rc ($(($(date +%s) - t))s; log $OUT/$name.log)"
  if ((rc != 0)); then tail -5 "$OUT/$name.log" | sed 's/^/    /'; fi
  return 0
}

pretrain() {  # the base: experiment=pretrain_tiny at the ~91M sizes; exported to $BASE (refused if it exists)
  rm -rf "$BASE" "$WORK/pretrain"
  # shellcheck disable=SC2086
  "$PY" train.py experiment=pretrain_tiny $RUN $MODEL $PRE_VAL $COMMON seed=0 trainer.max_steps="$PRE_STEPS" \
    optim.lr=6e-4 "paths.base_dir=$BASE" "hydra.run.dir=$WORK/pretrain"
  mkdir -p "$OUT/pretrain" && cp -r "$WORK/pretrain/summary.json" "$WORK/pretrain/csv" "$WORK/pretrain/.hydra" "$OUT/pretrain/"
}

cpt() {  # cpt <seed>: the four arms from the base, equal tokens (one multirun: each job kept as it finishes)
  [[ -f $BASE/config.json ]] || { echo "no base at $BASE (the pretrain stage did not finish)"; return 3; }
  # shellcheck disable=SC2086
  "$PY" train.py hparams_search=apex_mixer_lr_sweep_cpt experiment_name=gpu_cpt \
    +hparams_search/mixer_arm=full_cpt,full_restart_cpt,x1_restart,x30_restart "seed=$1" \
    $RUN $CPT_VAL $COMMON trainer.max_steps="$CPT_STEPS" "paths.base_dir=$BASE" "hydra.sweep.dir=$OUT/cpt/s$1" \
    eval.enabled=true eval.exact_match=false eval.multiple_choice=false
  "$PY" -m apexlm.analysis.report "$OUT/cpt" --out "$OUT/cpt_report" --baseline full_cpt \
    --controls full_cpt,full_restart_cpt >/dev/null
}

overhead() {  # overhead <shape>: the overhead table (APEX / LoRA / S2 vs full FT on the same batches)
  # shellcheck disable=SC2086
  "$PY" benchmarks/bench_overhead.py --shape "$1" $OVERHEAD_ARGS --json "$OUT/overhead_$1.json"
}

overhead_compiled() {  # overhead_compiled <shape>: the same table with every prepared model compiled
  # shellcheck disable=SC2086
  "$PY" benchmarks/bench_overhead.py --shape "$1" $OVERHEAD_ARGS --compile "$COMPILE_BACKEND" \
    --methods full,apex_it,apex_cpt,s2 --json "$OUT/overhead_$1_compiled.json"
}

export -f pretrain cpt overhead overhead_compiled  # each stage runs in its own process (bash -c) under timeout
export PY RUN MODEL PRE_VAL CPT_VAL COMMON BASE WORK OUT PRE_STEPS CPT_STEPS OVERHEAD_ARGS COMPILE_BACKEND
stage pretrain "$EST_PRE" pretrain
seeds=($SEEDS); shapes=($OVERHEAD_SHAPES)
for i in "${!seeds[@]}"; do  # cpt_s1, overhead_125m, cpt_s2, overhead_1b, cpt_s3
  stage "cpt_s${seeds[$i]}" "$EST_CPT" cpt "${seeds[$i]}"
  if ((i < ${#shapes[@]})); then stage "overhead_${shapes[$i]}" "$EST_OVH" overhead "${shapes[$i]}"; fi
done
for ((i = ${#seeds[@]}; i < ${#shapes[@]}; i++)); do stage "overhead_${shapes[$i]}" "$EST_OVH" overhead "${shapes[$i]}"; done
stage "overhead_${COMPILE_SHAPE}_compiled" "$EST_OVH_C" overhead_compiled "$COMPILE_SHAPE"
if [[ $DRY == 0 ]]; then  # the roofline cost model, beside the measured overhead (GPU only)
  stage cost_model 20 bash -c '"$0" benchmarks/gpu_cost_model.py --json "$1/gpu_cost_model.json"' "$PY" "$OUT"
fi
# ---- OPTIONAL stage: the FSDP check, added by another script when it exists (GPU only) ----------------------
if [[ $DRY == 0 && -f benchmarks/gpu_fsdp_check.sh ]]; then
  stage fsdp 60 env OUT="$OUT/fsdp" bash benchmarks/gpu_fsdp_check.sh
fi
"$PY" benchmarks/gpu_summary.py "$OUT" --dry-run "$DRY" --wall-s "$(($(date +%s) - T0))"
