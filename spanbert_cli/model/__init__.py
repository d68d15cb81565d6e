"""The SpanBERT model and where its weights come from.

config.py     the architecture: `ModelConfig`, the presets (torch-free)
spanbert.py   the model, top-down: the unpadded BERT encoder, MLM and SBO heads and losses, Hugging Face names
flops.py      training FLOPs of real tokens (MFU)
weights.py    runs, checkpoints, exports and Hugging Face directories: resolve, read, write, load
export.py     the export stage: one checkpoint as a `spanbert/export` artifact
"""

from spanbert_cli.model.config import PRESETS, ModelConfig
from spanbert_cli.model.spanbert import (
    IGNORE_INDEX,
    TARGET_KEYS,
    Packed,
    SpanBert,
    encoder_inputs,
    from_hf_state_dict,
    hf_config_dict,
    load_hf_weights,
    pack,
    targets,
    to_hf_state_dict,
    unpack,
)

__all__ = [
    "IGNORE_INDEX",
    "PRESETS",
    "TARGET_KEYS",
    "ModelConfig",
    "Packed",
    "SpanBert",
    "encoder_inputs",
    "from_hf_state_dict",
    "hf_config_dict",
    "load_hf_weights",
    "pack",
    "targets",
    "to_hf_state_dict",
    "unpack",
]
