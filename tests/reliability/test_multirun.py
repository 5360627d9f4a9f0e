"""A sweep in which jobs fail still runs the others to completion, and every W&B run it opened is finished."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from tests.support.runs import MICRO, train_cli

BLOCK, HEADER = 32768, 7  # the .wandb file is a LevelDB-style log: 32 KiB blocks of CRC|len|type chunks
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def wandb_record_types(path: Path) -> list[str]:
    """Record types (run, history, exit, ...) of an offline run's .wandb file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, types = path.read_bytes(), []
    assert data[:4] == b":W&B", path
    pos, buf = HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # block trailer padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0:
            break
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        buf = chunk if kind in (FULL, FIRST) else buf + chunk
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(buf)
            types.append(record.WhichOneof("record_type") or "")
    return types


@pytest.mark.slow
def test_failing_jobs_do_not_stop_the_sweep_and_wandb_runs_finish(tmp_path: Path) -> None:
    # job 0 trains; job 1 diverges mid-training (after W&B started); job 2 is a bad config (before W&B)
    res = train_cli(["-m", "experiment=full_it", "debug=fdr", *MICRO, "threads=1", "logger=wandb",
                     "trainer.limit_val_batches=0", "optim.lr=3e-4,1e30,-1"], tmp_path,
                    env={"WANDB_MODE": "offline"}, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    logs = tmp_path / "logs"
    jobs = {int(p.name): p for p in (logs / "full_it" / "multiruns").glob("*/*") if p.name.isdigit()}
    assert sorted(jobs) == [0, 1, 2]
    assert (jobs[0] / "summary.json").exists() and not (jobs[0] / "failed.json").exists()
    failed = {i: json.loads((jobs[i] / "failed.json").read_text()) for i in (1, 2)}
    assert "non-finite" in failed[1]["error"] and "optim.lr=-1" in failed[2]["error"]
    runs = sorted(logs.rglob("run-*.wandb"))
    assert len(runs) == 2, runs  # jobs 0 and 1 opened a W&B run, job 2 stopped before
    for run in runs:
        types = wandb_record_types(run)
        assert "run" in types and "exit" in types, (run, types[-5:])
