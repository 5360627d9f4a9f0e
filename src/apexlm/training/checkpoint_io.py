"""Writing checkpoints atomically, and never with non-finite weights.

`AtomicCheckpointIO` writes to a temp file in the target's own folder, fsyncs and `os.replace`s it (Lightning's
own writer stages the bytes in the system temp dir, which is only atomic when that is on the same file system);
it refuses to write non-finite weights, so the last good checkpoint survives a divergence.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


def nonfinite_tensors(state: Mapping[str, Any]) -> list[str]:
    """Names of floating tensors in a state dict that hold NaN or Inf."""
    return [k for k, v in state.items()
            if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to `<dir>/.<name>.tmp-<pid>`, fsync, os.replace: a reader sees the old file or the new one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        from apexlm.callbacks.guard import NonFiniteError

        bad = nonfinite_tensors(checkpoint.get("state_dict", {}))
        if bad:
            raise NonFiniteError(
                f"refusing to save a checkpoint with non-finite weights ({bad[0]}, {len(bad)} tensors) at step "
                f"{checkpoint.get('global_step')}; the previous checkpoint is kept; lower optim.lr")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        try:  # make the rename itself durable
            fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass
