"""A console a newcomer can read: each log line once, no advertising, a progress bar that counts steps.

Lightning attaches its own stream handler to `lightning.pytorch` / `lightning.fabric` when it is imported
before logging is configured (and stops propagation); Hydra then configures the root logger, and depending on
import order a line is printed by both. `tidy_logging` routes Lightning's records through the root logger only
(Hydra's console format and the run's train.log), and drops Lightning's product tips.
"""

from __future__ import annotations

import logging
import warnings

from lightning.pytorch.callbacks import RichProgressBar

LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).lstrip().startswith("💡 Tip")


def tidy_logging() -> None:
    """Lightning's records go to the root handlers only (once), without tips. Idempotent."""
    # Lightning's own use of a deprecated torch pytree API warns on every fit; nothing a user can act on
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # validation metrics are already reduced over ranks by the module (all_gather of sums and counts)
    warnings.filterwarnings("ignore", message=r".*It is recommended to use `self.log\(.*sync_dist=True.*")
    warnings.filterwarnings("ignore", message=r".*torch.distributed.nn.functional.all_gather is deprecated.*")
    root_has_handlers = logging.getLogger().hasHandlers()
    for name in LIGHTNING_LOGGERS:
        lg = logging.getLogger(name)
        if root_has_handlers:
            for h in list(lg.handlers):
                if type(h) is logging.StreamHandler:
                    lg.removeHandler(h)
            lg.propagate = True
        if not any(isinstance(f, _DropTips) for f in lg.filters):
            lg.addFilter(_DropTips())
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        lg = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in lg.filters):
            lg.addFilter(_DropTips())


class StepProgressBar(RichProgressBar):
    """The run is step-bounded (max_epochs=-1): the bar names the epoch and the run's step budget instead of
    Lightning's `Epoch 0/-2`; the per-epoch bar itself counts the epoch's batches."""

    def get_metrics(self, trainer, pl_module):  # noqa: ANN001, ANN201 - Lightning's signature
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items

    def _get_train_description(self, current_epoch: int) -> str:
        text = f"epoch {current_epoch} of a {self.trainer.max_steps}-step run"
        return f"{text:{len(self.validation_description)}}"
