"""What training will see: masked examples and masking statistics over real shards.

The functions here call exactly the masking library that pretraining's data loader calls
(`masking.mask_batch` with the same seed, epoch and global sequence index), so a preview is a faithful
picture of the training data, not a re-implementation of it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spanbert_cli.errors import DataError, UsageError
from spanbert_cli.masking import (
    REPLACE_KEEP,
    REPLACE_MASK,
    REPLACE_RANDOM,
    MaskedSequence,
    MaskingConfig,
    VocabInfo,
    mask_batch,
    span_length_distribution,
)

REPLACEMENT_NAMES = {REPLACE_MASK: "mask", REPLACE_RANDOM: "random", REPLACE_KEEP: "keep"}
_STATS_BATCH = 256


@dataclass
class Example:
    index: int
    epoch: int
    input_ids: np.ndarray
    masked: MaskedSequence

    def to_json(self) -> dict[str, Any]:
        """The `--json` record of one example (span ends inclusive, positions in the full sequence)."""
        return {
            "index": self.index,
            "epoch": self.epoch,
            "input_ids": self.input_ids.tolist(),
            "masked_input_ids": self.masked.input_ids.tolist(),
            "spans": self.masked.spans.tolist(),
            "replacement": [REPLACEMENT_NAMES[int(r)] for r in self.masked.replacement],
        }


def check_range(reader: Sequence, index: int, split: str) -> None:
    n = len(reader)
    if index < 0:
        raise UsageError(f"--index must be at least 0, got {index}")
    if index >= n:
        raise DataError(f"--index {index} is past the end of the {split} split ({n} sequences)")


def examples(
    reader: Sequence,
    *,
    start: int,
    num: int,
    seed: int,
    epoch: int,
    config: MaskingConfig,
    vocab: VocabInfo,
    max_sbo_positions: int = 15,
) -> list[Example]:
    """Masked examples `start`, `start + 1`, … (at most `num`, fewer at the end of the split)."""
    indices = list(range(start, min(start + num, len(reader))))
    seqs = [np.asarray(reader[i]) for i in indices]
    masked = mask_batch(
        seqs,
        seed=seed,
        epoch=epoch,
        indices=indices,
        config=config,
        vocab=vocab,
        max_sbo_positions=max_sbo_positions,
    )
    return [Example(i, epoch, s, m) for i, s, m in zip(indices, seqs, masked, strict=True)]


def _batches(reader: Sequence, start: int, count: int) -> Iterator[tuple[list[int], list[np.ndarray]]]:
    end = min(start + count, len(reader))
    for lo in range(start, end, _STATS_BATCH):
        idx = list(range(lo, min(lo + _STATS_BATCH, end)))
        yield idx, [np.asarray(reader[i]) for i in idx]


def mask_stats(
    reader: Sequence,
    *,
    start: int,
    count: int,
    seed: int,
    epoch: int,
    config: MaskingConfig,
    vocab: VocabInfo,
    max_sbo_positions: int = 15,
) -> dict[str, Any]:
    """Statistics of the masks of `count` sequences from `start`, reduced on the fly.

    - mask_ratio: targets / non-special tokens, over all sequences (the budget rounds up per sequence);
    - span_lengths: lengths in words of the spans as drawn (before merging and before the final
      budget cut), beside the theoretical truncated geometric distribution;
    - replacement: fractions of merged spans replaced by [MASK], random tokens, or kept;
    - merged: drawn spans that merged into a neighbour; sbo_targets_per_sequence.
    """
    theory = span_length_distribution(config)
    hist = np.zeros(len(theory) + 1, dtype=np.int64)
    repl = np.zeros(3, dtype=np.int64)
    seqs = tokens = targets = drawn = merged_spans = sbo = 0
    special = np.zeros(vocab.vocab_size, dtype=bool)
    special[list(vocab.special_ids)] = True
    for idx, batch in _batches(reader, start, count):
        out = mask_batch(
            batch,
            seed=seed,
            epoch=epoch,
            indices=idx,
            config=config,
            vocab=vocab,
            max_sbo_positions=max_sbo_positions,
        )
        for ids, m in zip(batch, out, strict=True):
            seqs += 1
            tokens += int(np.count_nonzero(~special[ids]))
            targets += len(m.mlm_positions)
            lengths = np.minimum(m.raw_span_lengths, len(theory))
            hist += np.bincount(lengths, minlength=len(hist))[: len(hist)]
            drawn += len(m.raw_span_lengths)
            merged_spans += len(m.spans)
            repl += np.bincount(m.replacement.astype(np.int64), minlength=3)[:3]
            sbo += len(m.sbo_positions)
    if seqs == 0:
        raise DataError("no sequences to compute statistics over")
    total_spans = max(1, int(repl.sum()))
    observed = hist[1:] / max(1, hist[1:].sum())
    mean_theory = float(np.dot(np.arange(1, len(theory) + 1), theory))
    mean_observed = float(np.dot(np.arange(1, len(theory) + 1), observed))
    return {
        "sequences": seqs,
        "tokens": tokens,
        "targets": targets,
        "mask_ratio": targets / max(1, tokens),
        "target_mask_ratio": config.mask_ratio,
        "span_lengths": {
            "observed": [round(float(x), 6) for x in observed],
            "theoretical": [round(float(x), 6) for x in theory],
            "mean_observed": round(mean_observed, 4),
            "mean_theoretical": round(mean_theory, 4),
            "drawn": drawn,
        },
        "replacement": {REPLACEMENT_NAMES[k]: float(repl[k] / total_spans) for k in range(3)},
        "spans": merged_spans,
        "merged": drawn - merged_spans if config.scheme != "token" else 0,
        "sbo_targets_per_sequence": sbo / seqs,
        "targets_per_sequence": targets / seqs,
    }
