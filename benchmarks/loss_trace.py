"""Step-by-step training losses of a short micro-model run, to check that an operator rewrite keeps them.

    python benchmarks/loss_trace.py --experiment apex_it --out before_it.json      # record
    python benchmarks/loss_trace.py --experiment apex_it --compare before_it.json  # compare (exit 1 if off)

Runs `train.py`'s pipeline in process (the micro model of tests/conftest.py, fp32, CPU, 1 thread, 8 steps,
2+ stages) and reads train/loss per step from the CSV logger. `--compare` prints the largest relative
difference and fails above --rtol (default 1e-5).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))


def losses(experiment: str, steps: int, extra: list[str]) -> list[float]:
    """train/loss of every optimizer step of a short run of `experiment` on the micro model."""
    from tests.support.runs import MICRO, run_in_process

    with tempfile.TemporaryDirectory() as tmp:
        over = [f"experiment={experiment}", "debug=fdr", *MICRO, f"trainer.max_steps={steps}",
                "trainer.val_check_interval=1000", "trainer.limit_val_batches=0", f"paths.log_dir={tmp}/logs",
                "logger=csv", "seed=0", *extra]
        run_in_process(over, Path(tmp) / "run")
        rows = []
        for f in Path(tmp).rglob("metrics.csv"):
            with open(f) as fh:
                rows += [r for r in csv.DictReader(fh) if r.get("train/loss")]
        by_step = {int(r["step"]): float(r["train/loss"]) for r in rows}
        return [by_step[s] for s in sorted(by_step)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", required=True)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--out", default=None)
    p.add_argument("--compare", default=None)
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("extra", nargs="*", help="more Hydra overrides")
    a = p.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    got = losses(a.experiment, a.steps, a.extra)
    print(f"{a.experiment}: {len(got)} steps, losses {[round(x, 6) for x in got]}")
    if a.out:
        Path(a.out).write_text(json.dumps({"experiment": a.experiment, "losses": got}))
    if a.compare:
        ref = json.loads(Path(a.compare).read_text())["losses"]
        if len(ref) != len(got):
            print(f"loss_trace: {len(got)} steps vs {len(ref)} in {a.compare}")
            return 1
        rel = max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(got, ref, strict=True))
        print(f"max relative loss difference vs {a.compare}: {rel:.3e} (tolerance {a.rtol:g})")
        return 0 if rel <= a.rtol else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
