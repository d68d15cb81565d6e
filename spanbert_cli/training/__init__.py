"""Pretraining: `PretrainConfig` → `pretrain(shards, config)` → a run artifact (kind ``spanbert/run``).

config.py       every setting, validated at once; which of them determine the weights
data.py         the global data order, steps and micro-batches, the masked data loaders
setup.py        everything resolved and checked before training: shards, device, architecture, resume
loop.py         pretrain = setup → main (build, resume) → fit (the loop, the step, validation, saving)
context.py      `DistributedContext`: who this process is among the training processes
device.py       device and precision resolution, out-of-memory detection
optim.py        AdamW with BERT's weight-decay rule, warm-up then linear decay
validation.py   the objective on fixed masks (validation and eval mlm), shard verification
precision.py    autocast, or bf16 weights with fp32 master weights (`--precision bf16-master`)
checkpoint.py   checkpoints: atomic save, verification, RNG state, pruning
metrics.py      metrics.jsonl and TensorBoard behind one small logger protocol
run.py          the run directory's manifest, rewritten as training goes on
"""

from __future__ import annotations

from typing import Any

from spanbert_cli.training.config import PretrainConfig

__all__ = [
    "KIND",
    "DistributedContext",
    "PretrainConfig",
    "PretrainResult",
    "TrainingError",
    "plan_pretrain",
    "pretrain",
]

# The loop needs torch; importing the package (for PretrainConfig, as the command line does) must not.
_LAZY = {
    "DistributedContext": "spanbert_cli.training.context",
    "PretrainResult": "spanbert_cli.training.setup",
    "TrainingError": "spanbert_cli.training.loop",
    "pretrain": "spanbert_cli.training.loop",
    "plan_pretrain": "spanbert_cli.training.setup",
    "KIND": "spanbert_cli.training.run",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
