"""Model FLOPs of a SpanBERT training step, and model FLOPs utilisation (MFU).

Training FLOPs of a micro-batch (matrix multiplications only; a multiply-add is 2 FLOPs; the backward
pass is twice the forward, so training is 3 x forward), for L layers, hidden size H, feed-forward size F,
vocabulary V, SBO position width D, sequences of t real tokens, M MLM targets and N SBO targets::

    3 x [ sum over sequences of L·(8·t·H² + 4·t·H·F + 4·t²·H)    Q, K, V, output; feed-forward; QKᵀ and AV
          + 2·M·(H² + H·V)                                      MLM head at the M masked positions
          + 2·N·((2H + D)·H + H² + H·V) ]                       SBO head at the N SBO targets

Padding is work the device does but not model FLOPs, so only real tokens count. MFU is model FLOPs per
second over the device's dense bf16/fp16 tensor-core peak (`peak_tflops`).
"""

from __future__ import annotations

from collections.abc import Sequence

from spanbert_cli.model.spanbert import ModelConfig

# Dense bf16/fp16 tensor-core peaks in TFLOP/s, matched against the device name in this order (the more
# specific names first). Unknown devices have no MFU.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("H200", 989.4),
    ("H800", 989.4),
    ("A100", 312.0),
    ("A10G", 125.0),
    ("L4", 121.0),
)


def encoder_flops(cfg: ModelConfig, lengths: Sequence[int]) -> float:
    """Forward FLOPs of the encoder over sequences of these real lengths."""
    H, F, L = cfg.hidden_size, cfg.intermediate_size or 4 * cfg.hidden_size, cfg.num_layers
    tokens = sum(int(t) for t in lengths)
    squares = sum(int(t) * int(t) for t in lengths)
    return L * ((8 * H * H + 4 * H * F) * tokens + 4 * H * squares)


def head_flops(cfg: ModelConfig, n_mlm: int, n_sbo: int) -> float:
    """Forward FLOPs of the MLM and SBO heads at their targets (they run nowhere else)."""
    H, V, D = cfg.hidden_size, cfg.vocab_size, cfg.sbo_position_dim
    return 2 * n_mlm * (H * H + H * V) + 2 * n_sbo * ((2 * H + D) * H + H * H + H * V)


def training_flops(cfg: ModelConfig, lengths: Sequence[int], n_mlm: int, n_sbo: int) -> float:
    """Model FLOPs of forward + backward over one micro-batch (see the module docstring)."""
    return 3.0 * (encoder_flops(cfg, lengths) + head_flops(cfg, n_mlm, n_sbo))


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU from its name (`torch.cuda.get_device_name`), or None if unknown."""
    for key, value in PEAK_TFLOPS:
        if all(part in device_name for part in key.split()):
            return value
    return None
