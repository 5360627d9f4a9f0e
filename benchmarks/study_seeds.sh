#!/usr/bin/env bash
# The seed study (docs/results.md, "CPU seed study"): the questions the 3-seed CPU study left open, at its
# budget (60 steps per run, val every 15 steps on 8 batches, the same eval), with >= 8 seeds paired by seed.
#   CPT arms: cpt_control (full_restart_cpt: the restart-only control), cpt_x30 (apex_cpt, mixer LR x30, restarts)
#   IT arms:  it_full (full_it), it_x1 (apex_it, official mixer LR), it_x30 (apex_it_mixer_lr_scale_30), it_s2 (s2_it)
# Every run is its own train.py process and is kept as it finishes (its dir holds summary.json): a timeout or
# a kill loses only the runs in flight, and rerunning the same command with OUT_DIR=<that dir> runs only the
# missing ones. Runs go study by study (CPT, then IT), seed by seed within each (all arms of seed 1, then
# seed 2, ...), so a partial study is still paired by seed.
# Reproducibility (docs/results.md): one torch thread per run and for the base (a free variable of the
# floats otherwise), a base built by one fixed command (BASE below, built when missing), and the base's
# fingerprint (sha256 of its weights, its val ppl, the tokenizer fingerprint and corpus hashes of the prepared
# data it was trained on) written to $OUT_DIR/base.json: a rebuild that differs says where.
# Usage:  nice -n 19 bash benchmarks/study_seeds.sh [run|base|report]   (base: build/fingerprint the base only)
# Knobs (env): SEEDS="1 2 3 4 5 6 7 8" ARMS="cpt_control cpt_x30 it_full it_x1 it_x30 it_s2" JOBS=2 (runs in
# parallel) STEPS=60 EVAL_ITEMS=20 BASE=data/base/tiny_study_v2 BASE_STEPS=600 OUT_DIR=logs/study_seeds/<time>
# STOP_AT=<unix time> (start no run after it), DRY=1 (print the commands only).
set -euo pipefail
SELF=$(realpath "$0")
cd "${STUDY_ROOT:-$(dirname "$SELF")/..}"  # workers run a frozen copy of this script (below), from the repo root
PY=${PY:-.venv/bin/python}
WHAT=${1:-run}
SEEDS=${SEEDS:-1 2 3 4 5 6 7 8}
ARMS=${ARMS:-cpt_control cpt_x30 it_full it_x1 it_x30 it_s2}
JOBS=${JOBS:-2}
STEPS=${STEPS:-60}
BASE=${BASE:-data/base/tiny_study_v2}
BASE_STEPS=${BASE_STEPS:-600}
OUT_DIR=${OUT_DIR:-logs/study_seeds/$(date +%Y%m%d-%H%M%S)}
export PYTHONHASHSEED=0 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

# The one command that builds the study base (pinned: seed, steps, threads; the rest is pretrain_tiny's config).
base_cmd() {
  echo "$PY train.py experiment=pretrain_tiny trainer.max_steps=$BASE_STEPS seed=42 threads=1 paths.base_dir=$BASE" \
    "logger=csv trainer.enable_progress_bar=false hydra.run.dir=logs/base/$(basename "$BASE")"
}

# One run's command: common budget + the arm's experiment. $1 arm, $2 seed, $3 run dir.
run_cmd() {
  local common="seed=$2 paths.base_dir=$BASE trainer.max_steps=$STEPS trainer.val_check_interval=15
    trainer.limit_val_batches=8 trainer.enable_progress_bar=false callbacks.checkpoint.enabled=false logger=csv
    threads=1 eval.enabled=true"
  local cpt="hparams_search=apex_mixer_lr_sweep_cpt experiment_name=study_cpt hydra.sweep.dir=$3
    eval.exact_match=false eval.multiple_choice=false"  # ppl on both domains (forgetting), as in study_cpu.sh
  local it="experiment_name=study_it hydra.run.dir=$3 eval.max_items_per_task=${EVAL_ITEMS:-20}"
  case $1 in
    cpt_control) echo "$PY train.py $cpt +hparams_search/mixer_arm=full_restart_cpt $common" ;;
    cpt_x30) echo "$PY train.py $cpt +hparams_search/mixer_arm=x30_restart $common" ;;
    it_full) echo "$PY train.py experiment=full_it $it $common" ;;
    it_x1) echo "$PY train.py experiment=apex_it $it $common" ;;
    it_x30) echo "$PY train.py experiment=apex_it_mixer_lr_scale_30 $it $common" ;;
    it_s2) echo "$PY train.py experiment=s2_it $it $common" ;;
    *) echo "unknown arm $1 (arms: cpt_control cpt_x30 it_full it_x1 it_x30 it_s2)" >&2; return 2 ;;
  esac
}

run_dir() { echo "$OUT_DIR/${1%%_*}/$1/s$2"; }  # cpt_x30 3 -> $OUT_DIR/cpt/cpt_x30/s3

one() {  # one <arm> <seed>: run it unless it finished already; append "arm seed rc wall_s" to runs.tsv
  local dir cmd t0 rc
  dir=$(run_dir "$1" "$2")
  if [[ -n $(find "$dir" -name summary.json 2>/dev/null) ]]; then return 0; fi
  if [[ -n ${STOP_AT:-} && $(date +%s) -ge $STOP_AT ]]; then echo "skip $1 s$2 (past STOP_AT)"; return 0; fi
  cmd=$(run_cmd "$1" "$2" "$dir")
  if [[ -n ${DRY:-} ]]; then echo "$cmd"; return 0; fi
  rm -rf "$dir" && mkdir -p "$dir"
  t0=$(date +%s)
  rc=0; $cmd >"$dir.log" 2>&1 || rc=$?
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$rc" "$(($(date +%s) - t0))" >>"$OUT_DIR/runs.tsv"
  echo "$(date +%H:%M:%S) $1 s$2 rc=$rc wall_s=$(($(date +%s) - t0))"
}

base() {  # build the base when missing, then write its fingerprint to $OUT_DIR/base.json
  if [[ ! -f $BASE/config.json ]]; then
    echo "building the study base: $(base_cmd)"
    if [[ -n ${DRY:-} ]]; then return 0; fi
    $(base_cmd)
  fi
  [[ -n ${DRY:-} ]] && return 0
  $PY - "$BASE" "$OUT_DIR/base.json" "$(base_cmd)" "logs/base/$(basename "$BASE")" <<'EOF'
import hashlib, json, pathlib, sys
base, out, cmd, run = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3], pathlib.Path(sys.argv[4])
weights = sorted(base.glob("*.safetensors"))
digest = hashlib.sha256(b"".join(p.read_bytes() for p in weights)).hexdigest()
summary = run / "summary.json"
info = json.loads(summary.read_text()) if summary.is_file() else {}
import os
data = pathlib.Path(os.environ.get("APEXLM_DATA_DIR") or "data") / "manifest.json"
manifest = json.loads(data.read_text()) if data.is_file() else {}
sources = manifest.get("sources", {})
record = {"base": str(base), "weights_sha256": digest, "command": cmd,
          "final_val_ppl": info.get("final_val_ppl"), "steps": info.get("optimizer_steps"),
          "tokens": info.get("tokens_seen"),
          "tokenizer_fingerprint": sources.get("tokenizer", {}).get("fingerprint"),
          "corpus_sha256": {k: v["sha256"][:16] for src in sources.values() for k, v in src.get("files", {}).items()
                            if k.startswith("text/")}}
out.write_text(json.dumps(record, indent=1))
print("study base:", json.dumps(record))
EOF
}

report() {  # the sweep report of each half (paired deltas with 95 % t-intervals, per-seed values)
  if [[ -d $OUT_DIR/cpt ]]; then
    $PY -m apexlm.analysis.report "$OUT_DIR/cpt" --baseline full_restart_cpt --controls full_restart_cpt \
      >"$OUT_DIR/cpt.report.log" 2>&1 || echo "cpt report failed: $OUT_DIR/cpt.report.log"
  fi
  if [[ -d $OUT_DIR/it ]]; then
    $PY -m apexlm.analysis.report "$OUT_DIR/it" --baseline full_it --controls full_it,apex_it,s2_it \
      >"$OUT_DIR/it.report.log" 2>&1 || echo "it report failed: $OUT_DIR/it.report.log"
  fi
  echo "reports: $OUT_DIR/cpt/report.md $OUT_DIR/it/report.md"
}

if [[ $WHAT == _one ]]; then one "$2" "$3"; exit 0; fi
mkdir -p "$OUT_DIR"
T0=$(date +%s)
case $WHAT in
  run)
    base
    cp "$SELF" "$OUT_DIR/study_seeds.sh"  # the script the runs used, kept with them (edits here do not leak in)
    for study in cpt it; do  # the CPT question first (the one the 3-seed study left open), then IT
      for s in $SEEDS; do for a in $ARMS; do [[ $a == "$study"_* ]] && echo "$a $s"; done; done
    done |
      xargs -P "$JOBS" -n 2 env OUT_DIR="$OUT_DIR" STUDY_ROOT="$PWD" bash "$OUT_DIR/study_seeds.sh" _one
    [[ -n ${DRY:-} ]] || report ;;
  base) base ;;
  report) report ;;
  *) echo "usage: bash benchmarks/study_seeds.sh [run|base|report]" >&2; exit 2 ;;
esac
echo "study_dir=$OUT_DIR study_wall_s=$(($(date +%s) - T0))"
