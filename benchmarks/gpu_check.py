"""The one prepared GPU check (run through gpu_check.sh): pre-train a ~91M base, compare vanilla vs APEX
continued pre-training at equal tokens, and run the overhead benchmark at the 125m and 1b shapes.

    bash benchmarks/gpu_check.sh              # on the H100/H200 machine (carry benchmarks/gpu_data and .whl)
    bash benchmarks/gpu_check.sh --dry-run    # CPU, micro model, every stage in < 60 s

Stages, in priority order, each guarded by the time budget and by try/except (a failing stage is recorded
and the next one runs): pretrain (Shakespeare, bf16, ~100 s, best-val weights kept) → CPT seed 0
(vanilla, APEX CPT mixer_lr_scale 1, APEX CPT mixer_lr_scale 30; pycode; equal tokens) → overhead 125m →
overhead 1b → CPT seed 1. The JSON at --out is rewritten after every stage, so a timeout keeps what finished.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from bench_common import SHAPES, machine_info, machine_line  # noqa: E402
from bench_overhead import format_table, run_overhead  # noqa: E402
from gpu_train import cpt_run, load_tokens, match_fraction, pretrain, synthetic_tokens  # noqa: E402

VARIANTS = ("vanilla", "apex_mls1", "apex_mls30")


def settings(dry: bool) -> dict[str, Any]:
    """Sizes and budgets of the real check and of the CPU dry run."""
    if dry:
        return {"base": "micro", "overhead": ["micro"], "overhead_steps": 2, "pretrain_s": 8, "pretrain_epochs": 1,
                "pretrain_max_steps": 6, "cpt_run_s": 3, "cpt_max_steps": 9, "cpt_epochs": 1, "assess": 4,
                "eval_batches": 2, "seeds": 2, "est": {"cpt": 3, "micro": 10}}
    return {"base": "base100m", "overhead": ["125m", "1b"], "overhead_steps": 8, "pretrain_s": 100,
            "pretrain_epochs": 8, "pretrain_max_steps": None, "cpt_run_s": 25, "cpt_max_steps": None,
            "cpt_epochs": 3, "assess": 256, "eval_batches": None, "seeds": 2,
            "est": {"cpt": 35, "125m": 45, "1b": 110}}


class Check:
    """Budget keeping, JSON writing and fault isolation for the stages."""

    def __init__(self, out: Path, budget_s: float, dry: bool) -> None:
        self.out, self.t0, self.budget, self.dry = out, time.perf_counter(), budget_s, dry
        self.res: dict[str, Any] = {"dry_run": dry, "budget_s": budget_s, "stages": {}, "skipped": [],
                                    "errors": {}}

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0)

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.1f}s] {msg}", flush=True)

    def save(self) -> None:
        self.res["elapsed_s"] = time.perf_counter() - self.t0
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.res, indent=1, default=str))
        tmp.replace(self.out)

    def stage(self, name: str, need_s: float, fn, record=lambda value: value) -> Any:
        if self.left() < need_s:
            self.log(f"skip {name}: {self.left():.0f} s left, needs ~{need_s:.0f} s")
            self.res["skipped"].append(name)
            self.save()
            return None
        self.log(f"stage {name}")
        t = time.perf_counter()
        try:
            value = fn()
            self.res["stages"][name] = record(value)
            return value
        except Exception as err:  # a failing stage must not cost the others
            self.res["errors"][name] = "".join(traceback.format_exception(err)[-6:])
            self.log(f"stage {name} FAILED: {err!r}")
            return None
        finally:
            self.res.setdefault("stage_s", {})[name] = time.perf_counter() - t
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.save()


def cpt_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per variant: median val ppl over seeds; APEX's token fraction to reach vanilla's final ppl."""
    out: dict[str, Any] = {}
    for v in VARIANTS:
        mine = [r for r in runs if r["variant"] == v]
        if not mine:
            continue
        ppl = sorted(r["val_ppl"] for r in mine)
        out[v] = {"seeds": [r["seed"] for r in mine], "val_ppl": ppl, "val_ppl_mean": sum(ppl) / len(ppl),
                  "val_ppl_fused": [r["val_ppl_fused"] for r in mine],
                  "shakespeare_val_ppl": [r["shakespeare_val_ppl"] for r in mine],
                  "tokens_per_s": [r["tokens_per_s"] for r in mine]}
        van = {r["seed"]: r for r in runs if r["variant"] == "vanilla"}
        if v != "vanilla":
            out[v]["fraction_to_match_vanilla"] = [
                match_fraction(van[r["seed"]]["val_ppl"], r["curve"], r["tokens"]) if r["seed"] in van else None
                for r in mine]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, micro model, a handful of steps (also DRY_RUN=1)")
    p.add_argument("--out", default=None, help="JSON path (default $OUT/gpu_check.json, OUT=./gpu_out)")
    p.add_argument("--data-dir", default=os.environ.get("GPU_DATA_DIR") or str(Path(__file__).resolve().parent / "gpu_data"),
                   help="packed data from pack_gpu_data.py (default $GPU_DATA_DIR or benchmarks/gpu_data)")
    p.add_argument("--budget-s", type=float, default=None, help="total seconds (default 450; dry run 55)")
    a = p.parse_args(argv)
    dry = a.dry_run or os.environ.get("DRY_RUN", "") not in ("", "0")
    out = Path(a.out or Path(os.environ.get("OUT") or "gpu_out") / "gpu_check.json")
    s = settings(dry)
    chk = Check(out, a.budget_s or (55.0 if dry else 450.0), dry)
    device = torch.device("cuda" if torch.cuda.is_available() and not dry else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif dry:
        torch.set_num_threads(1)                                  # robust to a busy 2-core machine
    chk.res["machine"] = machine_info(device)
    chk.log(machine_line(chk.res["machine"]))
    base = SHAPES[s["base"]]
    loaded = load_tokens(Path(a.data_dir))
    if loaded is None:
        chk.log(f"no packed data at {a.data_dir}: using random tokens (run benchmarks/pack_gpu_data.py)")
        data, vocab = synthetic_tokens(base.vocab, 40 * base.batch * base.seq), base.vocab
        chk.res["data"] = {"kind": "synthetic", "vocab": vocab}
    else:
        data, meta = loaded
        vocab = int(meta["vocab_size"])
        chk.res["data"] = {"kind": "packed", "dir": a.data_dir, **meta}
    chk.save()

    got = chk.stage("pretrain", 20, lambda: pretrain(
        data, base, vocab, device, min(s["pretrain_s"], chk.left() * 0.3), s["pretrain_epochs"], 6e-4,
        chk.log, s["pretrain_max_steps"], s["eval_batches"]), record=lambda got: got[1])
    runs: list[dict[str, Any]] = []
    base_sd, steps = None, 0
    if got is not None:
        base_sd, rec = got
        per_step = rec["step_s_probe"] * 1.3                        # APEX CPT costs more than plain steps
        epoch_steps = len(data["pycode_train"]) // (base.batch * base.seq)
        steps = max(6, min(int(s["cpt_epochs"] * epoch_steps), int(s["cpt_run_s"] / per_step)))
        steps = min(steps, s["cpt_max_steps"] or steps)
        chk.res["cpt_plan"] = {"steps": steps, "tokens": steps * base.batch * base.seq,
                               "epochs": steps / max(1, epoch_steps)}
        chk.log(f"CPT plan: {steps} steps = {steps * base.batch * base.seq} tokens per run")

    def cpt_seed(seed: int) -> None:
        """vanilla and both APEX CPT variants from the same base, equal tokens, one seed."""
        if base_sd is None:
            return
        if seed > 0 and chk.left() < len(VARIANTS) * s["est"]["cpt"]:     # a partial seed compares nothing
            chk.log(f"skip CPT seed {seed}: {chk.left():.0f} s left")
            chk.res["skipped"].append(f"cpt_seed{seed}")
            return
        for v in VARIANTS:
            r = chk.stage(f"cpt_{v}_seed{seed}", s["est"]["cpt"], lambda v=v: cpt_run(
                base_sd, v, seed, data, base, vocab, device, steps, 3e-4, s["assess"], chk.log, s["eval_batches"]))
            if r is not None:
                runs.append(r)
        chk.res["cpt_summary"] = cpt_summary(runs)
        chk.save()

    cpt_seed(0)
    for shape in s["overhead"]:
        chk.stage(f"overhead_{shape}", s["est"][shape], lambda shape=shape: run_overhead(
            shape, device, s["overhead_steps"], 1 if dry else 3, log=chk.log))
    for seed in range(1, s["seeds"]):
        cpt_seed(seed)
    print_summary(chk)
    chk.save()
    return 1 if chk.res["errors"] else 0


def print_summary(chk: Check) -> None:
    r = chk.res
    print("\n==== gpu_check summary ====")
    print(machine_line(r["machine"]))
    pre = r["stages"].get("pretrain")
    if pre:
        print(f"pretrain: {pre['params'] / 1e6:.1f}M params, {pre['steps']} steps, {pre['epochs']:.2f} epochs, "
              f"{pre['tokens_per_s']:.0f} tok/s, best Shakespeare val ppl {pre['best_val_ppl']:.2f}, "
              f"pycode val ppl {pre['pycode_val_ppl']:.2f}")
    for v, x in r.get("cpt_summary", {}).items():
        extra = f", fraction of tokens to reach vanilla {x['fraction_to_match_vanilla']}" if v != "vanilla" else ""
        print(f"CPT {v:<11} val ppl {', '.join(f'{p:.3f}' for p in x['val_ppl'])} (seeds {x['seeds']}), "
              f"fused {', '.join(f'{p:.3f}' for p in x['val_ppl_fused'])}, tok/s "
              f"{', '.join(f'{t:.0f}' for t in x['tokens_per_s'])}{extra}")
    for name, res in r["stages"].items():
        if name.startswith("overhead_"):
            print(f"\n-- {name} --\n{format_table(res)}")
    if r["skipped"]:
        print(f"skipped (time budget): {', '.join(r['skipped'])}")
    for name, err in r["errors"].items():
        print(f"ERROR in {name}: {err.strip().splitlines()[-1]}")
    print(f"total {time.perf_counter() - chk.t0:.1f} s; JSON: {chk.out}")


if __name__ == "__main__":
    raise SystemExit(main())
