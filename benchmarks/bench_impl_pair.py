"""The span form against the pre-issue-13 weight-side wrappers on the same prepared model, paired.

    python benchmarks/bench_impl_pair.py [--shape tiny] [--steps 8]

For APEX IT and CPT (configs/method/apex.yaml, configs/experiment/apex_cpt.yaml) the model is prepared
once; a copy gets the weight-side oracle modules (tests/apex/oracle_wrappers.py) holding equal values;
both train (fwd + bwd + AdamW) on the same batches, steps interleaved, one thread, process CPU time.
Prints the median per-step span / weight-side ratio with its min–max.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "src")]

import torch  # noqa: E402
from bench_common import (  # noqa: E402
    SHAPES,
    build_model,
    experiment_method,
    method_config,
    random_batches,
    train_step,
)

from apexlm.methods import build_method  # noqa: E402
from tests.apex.test_oracle import _to_oracle  # noqa: E402


def pair(shape_name: str, steps: int) -> list[str]:
    shape, dev = SHAPES[shape_name], torch.device("cpu")
    batches = random_batches(4, shape, dev, seed=1)
    it = method_config("apex", assess_samples=shape.batch)
    lines = []
    for name, cfg in (("apex_it", it), ("apex_cpt", {**it, **experiment_method("apex_cpt")})):
        method = build_method(cfg, seed=0)
        model = method.prepare(build_model(shape, dev, 0), assess_batches=batches)
        runs = {}
        for tag, m in (("span", model), ("weight", _to_oracle(model))):
            opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
            train_step(m, batches[0], opt, dev)
            runs[tag] = (m, opt, [])
        for i in range(steps):
            for tag in ("span", "weight") if i % 2 == 0 else ("weight", "span"):
                m, opt, ts = runs[tag]
                c0 = time.process_time()
                train_step(m, batches[i % len(batches)], opt, dev)
                ts.append(time.process_time() - c0)
        r = [a / b for a, b in zip(runs["span"][2], runs["weight"][2], strict=True)]
        lines.append(f"{name}: span {1e3 * statistics.median(runs['span'][2]):.0f} ms, weight-side "
                     f"{1e3 * statistics.median(runs['weight'][2]):.0f} ms (CPU time); span / weight-side "
                     f"{statistics.median(r):.3f} (min {min(r):.3f}, max {max(r):.3f})")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    p.add_argument("--steps", type=int, default=8)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    print("\n".join(pair(a.shape, a.steps)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
