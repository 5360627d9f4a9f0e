#!/usr/bin/env bash
# Real train.py on one GPU: trainer=gpu and trainer=fsdp (FSDP2, world size 1) x apex_cpt / apex_it at ~125M,
# bf16, 3 stages (two in-place transitions) and export; peak memory beside the memory plan's figure.
#   bash benchmarks/gpu_fsdp_check.sh            # GPU (~4 runs x <1 min after imports)
#   bash benchmarks/gpu_fsdp_check.sh --dry-run  # or DRY_RUN=1: CPU, micro shapes, same four runs (FSDP on
#                                                # 2 gloo processes: one CPU process is refused)
# gpu_check.sh calls it with one line:  bash benchmarks/gpu_fsdp_check.sh "$@"
# Writes $OUT/gpu_fsdp_check.json (OUT defaults to ./gpu_out) and prints one row per run. The plan column is
# `python -m apexlm.budget ... --memory` (last line per_device_gb=...); "n/a" where that CLI is not available.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/dry_run_args.sh
export OUT="${OUT:-./gpu_out}"
mkdir -p "$OUT"
if [ -x .venv/bin/python ]; then PY="${PYTHON:-.venv/bin/python}"; else PY="${PYTHON:-python3}"; fi
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}"
export TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore

if [ "$DRY" = 1 ]; then   # CPU, the micro model of tests/conftest.py
  SHAPE=(model.hidden_size=64 model.num_hidden_layers=2 model.num_attention_heads=4 model.num_key_value_heads=2
         model.intermediate_size=96 model.max_position_embeddings=256 data.block_size=64 threads=1)
  RUN=(trainer.max_steps=6 data.batch_size=2 data.max_train_samples=64 trainer.limit_val_batches=2
       trainer.val_check_interval=3 method.assess_samples=8)
  GPU_TRAINER=(trainer=cpu)
  FSDP_TRAINER=(trainer=fsdp trainer.accelerator=cpu trainer.devices=2)   # FSDP on CPU needs >= 2 gloo ranks
  FSDP_DEVICES=2; SEQ=64; MB=2
else                      # ~125M LLaMA (12 x 768, d_ff 3072, vocab 8192), bf16
  SHAPE=(model.hidden_size=768 model.num_hidden_layers=12 model.num_attention_heads=12 model.num_key_value_heads=12
         model.intermediate_size=3072 model.max_position_embeddings=1024 data.block_size=512 threads=4)
  RUN=(trainer.max_steps=60 data.batch_size=8 trainer.limit_val_batches=8 trainer.val_check_interval=30
       method.assess_samples=64)
  GPU_TRAINER=(trainer=gpu trainer.precision=bf16-mixed)
  FSDP_TRAINER=(trainer=fsdp trainer.devices=1 trainer.precision=bf16-mixed)
  FSDP_DEVICES=1; SEQ=512; MB=8
fi
COMMON=(model=tiny model.pretrained=null "${SHAPE[@]}" "${RUN[@]}" method.stages=3 export=true logger=csv
        callbacks.checkpoint.enabled=false callbacks.rich_progress=false trainer.enable_progress_bar=false)

rows=()
for exp in apex_cpt apex_it; do
  for strat in gpu fsdp; do
    if [ "$strat" = gpu ]; then T=("${GPU_TRAINER[@]}"); PLAN_STRATEGY=ddp; NDEV=1
    else T=("${FSDP_TRAINER[@]}"); PLAN_STRATEGY=fsdp; NDEV=$FSDP_DEVICES; fi
    dir="$OUT/fsdp_check/${exp}_${strat}"
    rm -rf "$dir"; mkdir -p "$dir"
    t0=$(date +%s)
    status=0
    "$PY" train.py "experiment=$exp" "${COMMON[@]}" "${T[@]}" "paths.log_dir=$dir/logs" > "$dir/train.log" 2>&1 || status=$?
    plan=$("$PY" -m apexlm.budget model=tiny model.pretrained=null "${SHAPE[@]}" "experiment=$exp" --memory \
             --devices "$NDEV" --strategy "$PLAN_STRATEGY" --seq "$SEQ" --micro-batch "$MB" 2>/dev/null \
           | sed -n 's/^per_device_gb=//p' | tail -1) || true
    rows+=("$exp $strat $status $(( $(date +%s) - t0 )) ${plan:-n/a} $dir")
  done
done

printf '%s\n' "${rows[@]}" > "$OUT/fsdp_check/rows.txt"
"$PY" - "$OUT/fsdp_check/rows.txt" "$OUT/gpu_fsdp_check.json" <<'EOF'
"""Collect the four runs: peak memory vs plan, stages, export loads in plain transformers."""
import glob
import json
import sys

rows = []
for line in open(sys.argv[1]).read().split("\n"):
    if not line.strip():
        continue
    exp, strat, status, wall, plan, run_dir = line.split(" ", 5)
    row = {"experiment": exp, "trainer": strat, "exit": int(status), "wall_s": int(wall),
           "plan_gb": None if plan == "n/a" else float(plan)}
    found = glob.glob(f"{run_dir}/logs/**/summary.json", recursive=True)
    if found:
        s = json.load(open(found[0]))
        row.update({"peak_gb": (s.get("peak_mem_mb") or 0) / 1024, "stages_completed": s.get("stages_completed"),
                    "optimizer_steps": s.get("optimizer_steps"), "final_val_loss": s.get("final_val_loss"),
                    "tokens_per_s": s.get("tokens_per_s")})
        export = glob.glob(f"{run_dir}/logs/**/export", recursive=True)
        if export:
            from transformers import AutoModelForCausalLM
            model = AutoModelForCausalLM.from_pretrained(export[0])
            row["export_loads"] = True
            row["export_params"] = sum(p.numel() for p in model.parameters())
    if row.get("plan_gb") and row.get("peak_gb"):
        row["peak_over_plan"] = row["peak_gb"] / row["plan_gb"]
    rows.append(row)
json.dump(rows, open(sys.argv[2], "w"), indent=1)
print(f"{'run':18} {'exit':>4} {'stages':>6} {'peak GB':>8} {'plan GB':>8} {'val loss':>9} {'export':>7}")
for r in rows:
    plan = "n/a" if r["plan_gb"] is None else f"{r['plan_gb']:.3f}"
    val = r.get("final_val_loss")
    print(f"{r['experiment'] + '/' + r['trainer']:18} {r['exit']:>4} {str(r.get('stages_completed')):>6} "
          f"{r.get('peak_gb', 0):8.3f} {plan:>8} {'-' if val is None else f'{val:.4f}':>9} "
          f"{str(r.get('export_loads', False)):>7}")
bad = [r for r in rows if r["exit"] != 0 or r.get("stages_completed") != 3 or not r.get("export_loads")]
sys.exit(1 if bad else 0)
EOF
