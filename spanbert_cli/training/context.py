"""Who this process is among the training processes: the single-process default.

Pretraining, SQuAD fine-tuning and the launcher share it; `spanbert_cli.training.distributed.TorchDistributedContext`
is the real one for several processes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistributedContext:
    """Who this process is among the training processes. The default is the only one.

    Multi-process training replaces the reductions (all-reduce over the process group), wraps the model
    (DDP) and skips gradient synchronisation on all but the last micro-batch of a step (`no_sync`).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    local_world_size: int = 1  # processes on this node

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over the processes (a CPU or device tensor; the result is on the same device)."""
        return tensor

    def all_reduce_mean_(self, tensors: list[torch.Tensor]) -> None:
        """Average same-dtype tensors over the processes, in place (one collective for all of them)."""

    def barrier(self) -> None:
        pass

    def wrap_model(self, model: torch.nn.Module, find_unused_parameters: bool = False) -> torch.nn.Module:
        """The module to run forward/backward through (DDP: synchronises the gradients)."""
        return model

    def no_sync(self, model: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()
