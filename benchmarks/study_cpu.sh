#!/usr/bin/env bash
# The CPU reproduction study (docs/results.md): continued pre-training and instruction tuning of the tiny base,
# 3 seeds per arm, each study one Hydra multirun + the sweep report.
#   CPT arms: vanilla (full_cpt), restart-only control (full_restart_cpt), APEX official (mixer LR x1, restarts),
#             APEX with mixer LR x30 (restarts).
#   IT arms:  full, LoRA (r matched to low-budget APEX), HFT, APEX (official IT knobs), low-budget APEX, S2-only.
# Reproducible to the printed digits (docs/results.md, "Reproducing the CPU studies"): every run and the base
# use ONE torch thread (the 2026-11-27 tables mixed 2-thread `cpt` runs, 1-thread `all` runs and a base built
# at torch's default thread count), and the base is the one benchmarks/study_seeds.sh builds
# (data/base/tiny_study_v2: experiment=pretrain_tiny, 600 steps, seed 42, threads=1; built by that script's
# command when missing) and fingerprints (sha256 of its weights, tokenizer fingerprint, corpus hashes).
# Usage: bash benchmarks/study_cpu.sh [cpt|it|all]   (all = both studies side by side)
# Knobs (env): SEEDS=1,2,3 CPT_STEPS=60 IT_STEPS=60 IT_ARMS=... EVAL_ITEMS=20 BASE=data/base/tiny_study_v2
# Each study's console output goes to logs/study_<cpt|it>/<time>.log; the script prints the wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WHAT=${1:-all}
STAMP=$(date +%Y%m%d-%H%M%S)
CPT_STEPS=${CPT_STEPS:-60}
IT_STEPS=${IT_STEPS:-60}

BASE=${BASE:-data/base/tiny_study_v2}
T0=$SECONDS
# The base, pinned: built (when missing) and fingerprinted by the seed study's own command, so both studies
# start from the same weights.
BASE=$BASE OUT_DIR=logs/study_base/$STAMP bash benchmarks/study_seeds.sh base

cpt() {
  $PY train.py hparams_search=apex_mixer_lr_sweep_cpt experiment_name=study_cpt \
    +hparams_search/mixer_arm=full_cpt,full_restart_cpt,x1_restart,x30_restart seed=${SEEDS:-1,2,3} \
    "hydra.sweep.dir=logs/study_cpt/$STAMP" "paths.base_dir=$BASE" \
    trainer.max_steps=$CPT_STEPS trainer.val_check_interval=15 trainer.limit_val_batches=8 \
    trainer.enable_progress_bar=false callbacks.checkpoint.enabled=false logger=csv threads=1 \
    eval.enabled=true eval.exact_match=false eval.multiple_choice=false  # ppl on both domains: forgetting
  $PY -m apexlm.analysis.report "logs/study_cpt/$STAMP" --baseline full_cpt \
    --controls full_cpt,full_restart_cpt
}

it() {
  $PY train.py -m experiment=${IT_ARMS:-full_it,lora_it,hft_it,apex_it,apex_lowbudget_it,s2_it} seed=${SEEDS:-1,2,3} \
    experiment_name=study_it "hydra.sweep.dir=logs/study_it/$STAMP" "paths.base_dir=$BASE" \
    trainer.max_steps=$IT_STEPS trainer.val_check_interval=15 trainer.limit_val_batches=8 \
    trainer.enable_progress_bar=false callbacks.checkpoint.enabled=false logger=csv threads=1 \
    eval.enabled=true eval.max_items_per_task=${EVAL_ITEMS:-20}
  $PY -m apexlm.analysis.report "logs/study_it/$STAMP" --baseline full_it --controls full_it
}

run() {  # run <study>: its output to logs/study_<study>/<time>.log
  mkdir -p "logs/study_$1"
  echo "study $1 -> logs/study_$1/$STAMP (log: logs/study_$1/$STAMP.log)"
  "$1" >"logs/study_$1/$STAMP.log" 2>&1
}

case $WHAT in
  cpt | it) run "$WHAT" ;;
  all) run cpt & c=$!; run it & i=$!; wait $c; wait $i ;;
  *) echo "usage: bash benchmarks/study_cpu.sh [cpt|it|all]" >&2; exit 2 ;;
esac
echo "study_wall_s=$((SECONDS - T0))"

