"""How a training step runs in reduced precision: autocast, or bf16 weights with fp32 master weights.

``--precision`` picks one of:

* ``fp32``: no reduced precision (the CPU default).
* ``bf16`` / ``fp16`` (autocast): the parameters stay fp32 and autocast casts weights and activations to
  16 bits around each matrix multiplication (fp16 adds a grad scaler). Robust, and what most recipes use,
  but on a GPU the casts are not free: LayerNorm and the residual stream stay fp32 under autocast, so
  every linear layer re-casts its input, and in a BERT-base step at 512 tokens the casts and their
  backward took about 18 % of the GPU time (profiled on an H200).
* ``bf16-master``: the way Megatron-LM and DeepSpeed train in bf16. Forward and backward run on a bf16
  *copy* of the model (weights, activations and gradients all bf16, no casts), while the model the
  optimizer steps stays fp32: after each backward the bf16 gradients are added into fp32 gradients
  (accumulation over micro-batches is fp32), clipping and AdamW work on fp32, and the bf16 copy is
  refreshed from the updated fp32 weights. Small updates survive: a bf16 weight of 0.02 rounds away any
  change below about 6e-5 (bf16 keeps 8 bits of mantissa), the size of an AdamW step at lr 1e-4.
  Checkpoints, exports and resumption see only the fp32 model, exactly as with the other precisions.

With several processes, `fp32_allreduce_hook` makes DDP sum the bf16 gradients in fp32 (one rounding
instead of one per addition in the collective); when a step has several micro-batches per process, the
training loop keeps them local and averages the fp32 master gradients once after the last.
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

#: The ``--precision`` values that run forward and backward under autocast, with their dtype.
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
MASTER = "bf16-master"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast region of a forward pass for `precision` (none for fp32 and bf16-master)."""
    dtype = AUTOCAST_DTYPES.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class MasterWeights:
    """A bf16 compute copy of an fp32 model, and the two transfers between them.

    `master` is the model that is optimized, saved and exported; `compute` runs forward and backward.
    A training step is: backward on `compute` → `grads_to_master()` (after every micro-batch) → clip and
    step on `master` → `refresh()`. Parameters are paired by name, so tied weights stay tied in both.
    """

    def __init__(self, master: nn.Module, dtype: torch.dtype = torch.bfloat16):
        self.master = master
        self.compute = copy.deepcopy(master).to(dtype)
        compute_params = dict(self.compute.named_parameters())
        self._master_params = [p for _, p in master.named_parameters()]
        self._compute_params = [compute_params[name] for name, _ in master.named_parameters()]

    @torch.no_grad()
    def grads_to_master(self) -> None:
        """Add the compute copy's gradients into the master's (fp32) and release them.

        Parameters without a gradient (a head the step did not use) keep none on the master either, so
        the optimizer skips them as it would in fp32.
        """
        for m, c in zip(self._master_params, self._compute_params, strict=True):
            if c.grad is None:
                continue
            if m.grad is None:
                m.grad = c.grad.to(m.dtype)
            else:
                m.grad.add_(c.grad)
            c.grad = None

    @torch.no_grad()
    def refresh(self) -> None:
        """Copy the master weights into the compute copy (rounding to its dtype)."""
        if hasattr(torch, "_foreach_copy_"):
            # One fused launch per dtype/device group instead of one copy per tensor.
            torch._foreach_copy_(self._compute_params, self._master_params)
        else:
            for m, c in zip(self._master_params, self._compute_params, strict=True):
                c.copy_(m)


# Unannotated on purpose: DDP rejects a hook whose annotations are not exactly its own types (and
# `from __future__ import annotations` would turn them into strings).
def fp32_allreduce_hook(process_group, bucket):
    """DDP communication hook: average a bucket of low-precision gradients in fp32.

    NCCL would otherwise add bf16 values in bf16 at every hop of the ring; here each rank widens its
    bucket, the sum runs in fp32, and the mean is rounded back to the bucket's dtype once.
    """
    import torch.distributed as dist

    group = process_group if process_group is not None else dist.group.WORLD
    buffer = bucket.buffer()
    wide = buffer.to(torch.float32).div_(dist.get_world_size(group))
    future = dist.all_reduce(wide, group=group, async_op=True).get_future()

    def narrow(fut: torch.futures.Future) -> torch.Tensor:
        buffer.copy_(fut.value()[0])
        return buffer

    return future.then(narrow)
