"""Which device and precision a run uses, and what running out of memory looks like there.

Shared by pretraining, `eval mlm` and SQuAD fine-tuning.
"""

from __future__ import annotations

import torch

from spanbert_cli.errors import UsageError
from spanbert_cli.training.precision import MASTER


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is available to this process (torch sees none)")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    if name == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if name == "fp16" and device.type != "cuda":
        raise UsageError(
            "--precision fp16 needs a GPU (its grad scaler is CUDA-only here); use bf16 or fp32 on CPU"
        )
    if name in ("bf16", MASTER) and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError(f"--precision {name}: this GPU does not support bfloat16; use fp16")
    return name


def is_out_of_memory(e: BaseException) -> bool:
    if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(e, RuntimeError) and (
        "out of memory" in str(e) or "can't allocate memory" in str(e) or "not enough memory" in str(e)
    )
