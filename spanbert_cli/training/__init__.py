"""Pretraining: `PretrainConfig` → `pretrain(shards, config)` → a run artifact (kind ``spanbert/run``).

config.py       every setting, validated at once; which of them determine the weights
data.py         the global data order, steps and micro-batches, the masked data loaders
loop.py         setup → main → fit, the training step, evaluation, `DistributedContext`
precision.py    autocast, or bf16 weights with fp32 master weights (`--precision bf16-master`)
checkpoint.py   checkpoints: atomic save, verification, RNG state, pruning
metrics.py      metrics.jsonl and TensorBoard behind one small logger protocol
run.py          the run directory's manifest, rewritten as training goes on
"""

from __future__ import annotations

from spanbert_cli.training.config import PretrainConfig
from spanbert_cli.training.loop import DistributedContext, PretrainResult, TrainingError, pretrain
from spanbert_cli.training.run import KIND

__all__ = ["KIND", "DistributedContext", "PretrainConfig", "PretrainResult", "TrainingError", "pretrain"]
