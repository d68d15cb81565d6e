"""The SpanBERT model and where its weights come from.

spanbert.py   the model, top-down: config, BERT encoder, MLM and SBO heads and losses, Hugging Face names
flops.py      training FLOPs of real tokens (MFU)
weights.py    runs, checkpoints, exports and Hugging Face directories: resolve, read, write, load
export.py     the export stage: one checkpoint as a `spanbert/export` artifact
"""

from spanbert_cli.model.spanbert import (
    IGNORE_INDEX,
    PRESETS,
    TARGET_KEYS,
    ModelConfig,
    SpanBert,
    from_hf_state_dict,
    hf_config_dict,
    load_hf_weights,
    targets,
    to_hf_state_dict,
)

__all__ = [
    "IGNORE_INDEX",
    "PRESETS",
    "TARGET_KEYS",
    "ModelConfig",
    "SpanBert",
    "from_hf_state_dict",
    "hf_config_dict",
    "load_hf_weights",
    "targets",
    "to_hf_state_dict",
]
