"""`trainer=fsdp`: FSDP2 (`fully_shard` per decoder layer + root) through Lightning's ModelParallelStrategy.

Lightning's FSDPStrategy is FSDP1 and refuses CPU; `ModelParallelStrategy` runs the module's
`configure_model` (where `apexlm.models.sharding.shard_model` applies `fully_shard`) after the process group
exists, on GPU (NCCL) and on CPU (gloo), so CI exercises the same code. `Fsdp2Strategy` only fixes the mesh to
pure data parallelism (every process one data-parallel rank, no tensor parallelism) and carries the
MixedPrecisionPolicy for `configure_model`.

Precision: on GPU the policy computes in `trainer.fsdp.param_dtype` (bf16) and reduces gradients in
`trainer.fsdp.reduce_dtype` (fp32) while the sharded master weights and AdamW stay fp32, so Lightning's own
precision plugin is `32-true` (no autocast on top). On CPU everything is fp32.

Checkpoints are distributed-checkpoint folders (`last.ckpt/` holding one shard file per rank and `meta.pt`);
`ckpt_path=<that folder>` resumes into the already-sharded model (Lightning restores after `configure_model`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch.strategies import ModelParallelStrategy

FSDP_NAMES = ("fsdp", "fsdp2")


class Fsdp2Strategy(ModelParallelStrategy):
    """ModelParallelStrategy with data_parallel = world size, tensor_parallel = 1, and a precision policy."""

    def __init__(self, mp_policy: Any = None, **kwargs: Any) -> None:
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1, save_distributed_checkpoint=True,
                         **kwargs)
        self.mp_policy = mp_policy

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes  # every process is a data-parallel rank
        super().setup_environment()

    @property
    def data_parallel_mesh(self) -> Any:
        """The 1-D mesh `fully_shard` shards over."""
        return self.device_mesh["data_parallel"]


def is_fsdp(strategy: Any) -> bool:
    """Whether a `trainer.strategy` value asks for FSDP2."""
    return str(strategy).lower() in FSDP_NAMES


def build_fsdp(trainer_cfg: Mapping[str, Any]) -> tuple[Fsdp2Strategy, str]:
    """(strategy, Lightning precision) for `trainer=fsdp`, from the trainer config."""
    from apexlm.models.sharding import mixed_precision

    on_cpu = str(trainer_cfg.get("accelerator", "auto")) == "cpu"
    opts = trainer_cfg.get("fsdp") or {}
    precision = str(trainer_cfg.get("precision", "32-true"))
    policy = None
    if not on_cpu and precision.startswith("bf16"):
        policy = mixed_precision(opts.get("param_dtype", "bf16"), opts.get("reduce_dtype", "fp32"))
    return Fsdp2Strategy(mp_policy=policy), "32-true"
