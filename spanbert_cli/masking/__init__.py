"""Span masking: which tokens a sequence hides, how they are corrupted, and the SBO targets.

spans.py     the algorithm (docs/algorithm.md §2, §3): settings, span lengths, vocabulary, masks
batches.py   masked sequences as a dataset, collated into padded training batches
"""

from spanbert_cli.masking.batches import MaskedDataset, SequenceReader, collate
from spanbert_cli.masking.spans import (
    MASKING_FIELDS,
    REPLACE_KEEP,
    REPLACE_MASK,
    REPLACE_RANDOM,
    SCHEMES,
    MaskedSequence,
    MaskingConfig,
    VocabInfo,
    mask_batch,
    mask_budget,
    mask_sequence,
    span_length_distribution,
)

__all__ = [
    "MASKING_FIELDS",
    "REPLACE_KEEP",
    "REPLACE_MASK",
    "REPLACE_RANDOM",
    "SCHEMES",
    "MaskedDataset",
    "MaskedSequence",
    "MaskingConfig",
    "SequenceReader",
    "VocabInfo",
    "collate",
    "mask_batch",
    "mask_budget",
    "mask_sequence",
    "span_length_distribution",
]
