"""`trainer.compile`: compile the model in place once training starts, and stop compiling when it ends.

`trainer.compile: true` uses the default backend (inductor); a string names another registered backend
(e.g. `aot_eager`, or a counting backend in tests). `nn.Module.compile` keeps the module tree and its
state-dict keys; APEX's stage transitions change tensors in place only, and the score hooks keep their
per-step state in tensors (method §1), so a run compiles once per stage at most (tests/training/
test_compile.py counts it).
"""

from __future__ import annotations

from typing import Any

import lightning as L

from apexlm.errors import ConfigError


def compile_backend(setting: Any) -> str:
    """The backend name of a `trainer.compile` value; unknown names stop the run with one line."""
    import torch._dynamo

    backend = "inductor" if setting is True else str(setting)
    known = torch._dynamo.list_backends(exclude_tags=())
    if backend not in known:
        raise ConfigError(f"trainer.compile={setting!r}: unknown backend; use true (inductor) or one of "
                          f"{', '.join(sorted(known))}")
    return backend


class CompileModel(L.Callback):
    """Compiles `pl_module.model` before the first training batch: after restore, device placement, sharding
    and the method's start (APEX's assessment pass and first selection run eagerly, so they cost no graph)."""

    def __init__(self, setting: Any) -> None:
        self.backend = compile_backend(setting)
        self._compiled = False

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if not self._compiled:
            pl_module.model.compile(backend=self.backend)
            self._compiled = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.model._compiled_call_impl = None      # export / eval run the model eagerly again
        self._compiled = False
