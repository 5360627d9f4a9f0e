"""Collect what `gpu_check.sh` finished into `$OUT/gpu_check.json` and print the summary.

    python benchmarks/gpu_summary.py <OUT> [--dry-run 0|1] [--wall-s N]

Reads only files the stages wrote as they finished (stages.tsv, pretrain/summary.json, the sweep report of
the CPT runs in cpt_report/report.json, overhead_<shape>.json), so it also summarises a study cut short by
its time budget: a missing stage is reported as missing, never filled in.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

CONTROLS = ("full_cpt", "full_restart_cpt")


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def collect(out: Path, dry: bool, wall_s: float | None) -> dict[str, Any]:
    """The study's record: how every stage ended, the base, the CPT report's numbers, the overhead tables."""
    stages = {}
    if (out / "stages.tsv").is_file():
        with (out / "stages.tsv").open() as f:
            for row in csv.DictReader(f, delimiter="\t"):
                stages[row["stage"]] = {"rc": row["rc"], "wall_s": int(row["wall_s"])}
    pre = _json(out / "pretrain" / "summary.json") or {}
    report = _json(out / "cpt_report" / "report.json")
    overhead = {p.stem.removeprefix("overhead_"): _json(p) for p in sorted(out.glob("overhead_*.json"))}
    errors = [name for name, s in stages.items() if s["rc"] not in ("0", "skipped")]
    return {"dry_run": dry, "wall_s": wall_s, "stages": stages, "errors": errors,
            "pretrain": {k: pre.get(k) for k in ("final_val_ppl", "final_val_loss", "tokens_seen", "tokens_per_s",
                                                 "total_params", "train_time_s")},
            "cpt_report": report, "overhead": overhead}


def cpt_lines(report: dict[str, Any]) -> list[str]:
    """Final val ppl per arm and the paired deltas against both controls, per seed."""
    lines = []
    for name, v in report["variants"].items():
        st = v["stats"]
        ppl, sh = st["final_val_ppl"], st.get("eval/ppl/shakespeare", {})
        lines.append(f"CPT {name:<40} n={ppl['n']} final val ppl {_fmt(ppl['mean'])} ± {_fmt(ppl['std'], 2)}; "
                     f"Shakespeare ppl {_fmt(sh.get('mean'))}; seeds {v['seeds']}")
    for control, rows in report["deltas"]["final_val_ppl"].items():
        for name, d in rows.items():
            pairs = ", ".join(f"s{s}: {x:+.3g}" for s, x in d["pairs"].items())
            lines.append(f"  Δ ppl {name} − {control}: paired {_fmt(d['paired'])} ± {_fmt(d['paired_std'], 2)} "
                         f"({pairs})")
    for name, r in report.get("reach", {}).items():
        lines.append(f"  tokens to {report['baseline']}'s final ppl, {name}: ratio {_fmt(r['ratio'], 3)} "
                     f"(step tokens only {_fmt(r['step_ratio'], 3)})")
    return lines


def print_summary(res: dict[str, Any], out: Path) -> None:
    print("\n==== gpu_check summary ====")
    for name, s in res["stages"].items():
        print(f"stage {name:<16} rc={s['rc']:<8} {s['wall_s']} s")
    pre = res["pretrain"]
    if pre.get("final_val_ppl") is not None:
        print(f"pretrain: {(pre['total_params'] or 0) / 1e6:.1f}M params, {pre['tokens_seen']} tokens, "
              f"{_fmt(pre['tokens_per_s'])} tok/s, Shakespeare val ppl {_fmt(pre['final_val_ppl'])}")
    if res["cpt_report"]:
        print("\n".join(cpt_lines(res["cpt_report"])))
        print(f"CPT report: {out / 'cpt_report' / 'report.md'}")
    for shape, table in res["overhead"].items():
        if table:
            from bench_overhead import format_table

            print(f"\n-- overhead {shape} --\n{format_table(table)}")
    for name in res["errors"]:
        print(f"ERROR in stage {name}: see {out / (name + '.log')}")
    print(f"total {res['wall_s']} s; JSON: {out / 'gpu_check.json'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--dry-run", default="0")
    p.add_argument("--wall-s", type=float, default=None)
    a = p.parse_args(argv)
    res = collect(a.out, a.dry_run not in ("", "0"), a.wall_s)
    (a.out / "gpu_check.json").write_text(json.dumps(res, indent=1))
    print_summary(res, a.out)
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
