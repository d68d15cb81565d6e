"""What training will see: masked examples and masking statistics over real shards.

The functions here call exactly the masking library that pretraining's data loader calls
(`masking.mask_batch` with the same seed, epoch and global sequence index), so a preview is a faithful
picture of the training data, not a re-implementation of it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spanbert_cli.artifacts import atomic_file
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
from spanbert_cli.masking.spans import _P_MASK, _P_MASK_OR_RANDOM

REPLACEMENT_NAMES = {REPLACE_MASK: "mask", REPLACE_RANDOM: "random", REPLACE_KEEP: "keep"}
#: BERT's rule, which the masking draws by (per merged span; per token for the ``token`` scheme).
EXPECTED_REPLACEMENT = {"mask": _P_MASK, "random": _P_MASK_OR_RANDOM - _P_MASK, "keep": 1 - _P_MASK_OR_RANDOM}
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
    - merged: drawn spans that merged into a neighbour; sbo_targets_per_sequence;
    - positions: per position of the sequence ([CLS] at 0), the share of its non-special tokens that are
      targets (`rate`, None where no sequence has a non-special token there) and how many there were
      (`tokens`): flat near mask_ratio when masking does not favour any part of a sequence.
    """
    theory = span_length_distribution(config)
    hist = np.zeros(len(theory) + 1, dtype=np.int64)
    repl = np.zeros(3, dtype=np.int64)
    seqs = tokens = targets = drawn = merged_spans = sbo = 0
    special = np.zeros(vocab.vocab_size, dtype=bool)
    special[list(vocab.special_ids)] = True
    at_position = np.zeros(0, dtype=np.int64)  # non-special tokens at each position
    masked_at = np.zeros(0, dtype=np.int64)  # of which targets
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
            real = ~special[ids]
            tokens += int(np.count_nonzero(real))
            if len(ids) > len(at_position):
                at_position = np.pad(at_position, (0, len(ids) - len(at_position)))
                masked_at = np.pad(masked_at, (0, len(ids) - len(masked_at)))
            at_position[: len(ids)] += real
            np.add.at(masked_at, np.asarray(m.mlm_positions, dtype=np.int64), 1)
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
        "scheme": config.scheme,
        "span_lengths": {
            "observed": [round(float(x), 6) for x in observed],
            "theoretical": [round(float(x), 6) for x in theory],
            "mean_observed": round(mean_observed, 4),
            "mean_theoretical": round(mean_theory, 4),
            "drawn": drawn,
        },
        "replacement": {REPLACEMENT_NAMES[k]: float(repl[k] / total_spans) for k in range(3)},
        "expected_replacement": dict(EXPECTED_REPLACEMENT),
        "replacement_units": int(repl.sum()),
        "positions": {
            "rate": [
                round(float(m / n), 6) if n else None for m, n in zip(masked_at, at_position, strict=True)
            ],
            "tokens": at_position.tolist(),
        },
        "spans": merged_spans,
        "merged": drawn - merged_spans if config.scheme != "token" else 0,
        "sbo_targets_per_sequence": sbo / seqs,
        "targets_per_sequence": targets / seqs,
    }


def position_buckets(stats: dict[str, Any], buckets: int = 8) -> list[tuple[int, int, float | None]]:
    """The per-position masking rate in `buckets` ranges of positions: (first, last, rate), the rate over
    all the non-special tokens of the range (None where it has none)."""
    pos = stats["positions"]
    n = len(pos["tokens"])
    if n == 0:
        return []
    size = max(1, math.ceil(n / buckets))
    out = []
    for lo in range(0, n, size):
        hi = min(n, lo + size)
        tokens = sum(pos["tokens"][lo:hi])
        masked = sum(
            r * t for r, t in zip(pos["rate"][lo:hi], pos["tokens"][lo:hi], strict=True) if r is not None
        )
        out.append((lo, hi - 1, masked / tokens if tokens else None))
    return out


def check_plot_path(path: Path) -> None:
    """A --plot that is a directory, or lies under a file, is refused before any statistics are drawn."""
    if path.is_dir():
        raise DataError(f"--plot {path}: is a directory; name a PNG file, e.g. {path / 'masking.png'}")
    blocker = next((q for q in path.parents if q.exists() and not q.is_dir()), None)
    if blocker is not None:
        raise DataError(f"--plot {path}: {blocker} is a file, not a directory; choose another --plot")


def plot_stats(stats: dict[str, Any], config: MaskingConfig, path: Path) -> None:
    """The statistics as a PNG (matplotlib, Agg backend): span lengths against the distribution they are
    drawn from, replacement fractions against 80/10/10, and the masking rate along the sequence. Raises
    ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    check_plot_path(path)
    fig, (lengths, repl, rate) = plt.subplots(
        1, 3, figsize=(15, 4.4), dpi=110, layout="constrained", width_ratios=(1.2, 0.8, 1.6)
    )
    sl = stats["span_lengths"]
    n = np.arange(1, len(sl["observed"]) + 1)
    lengths.bar(n, sl["observed"], color="C0", alpha=0.8, label=f"drawn ({sl['drawn']:,} spans)")
    lengths.plot(n, sl["theoretical"], "o-", color="C3", markersize=4, label=_theory_label(config))
    lengths.set_xticks(n)
    lengths.set_xlabel("span length (words)" if config.scheme != "token" else "span length (tokens)")
    lengths.set_title(f"span lengths: mean {sl['mean_observed']:.2f} (expected {sl['mean_theoretical']:.2f})")
    lengths.legend(fontsize=9, frameon=False)

    names = list(EXPECTED_REPLACEMENT)
    x = np.arange(len(names))
    bars = repl.bar(x - 0.2, [stats["replacement"][k] for k in names], 0.4, color="C0", label="realised")
    repl.bar_label(bars, labels=[f"{100 * stats['replacement'][k]:.1f}%" for k in names], fontsize=8)
    repl.bar(x + 0.2, [EXPECTED_REPLACEMENT[k] for k in names], 0.4, color="C3", alpha=0.6, label="80/10/10")
    repl.set_xticks(x, ["[MASK]", "random", "kept"])
    unit = "tokens" if config.scheme == "token" else "spans"
    repl.set_title(f"replacement of {stats['replacement_units']:,} {unit}")
    repl.legend(fontsize=9, frameon=False)

    pos = stats["positions"]
    xs = [i for i, r in enumerate(pos["rate"]) if r is not None]
    rate.plot(xs, [pos["rate"][i] for i in xs], color="C0", linewidth=1.2, label="realised")
    rate.axhline(
        stats["target_mask_ratio"],
        color="C3",
        linestyle="--",
        label=f"mask ratio {100 * stats['target_mask_ratio']:g}%",
    )
    rate.set_ylim(bottom=0)
    rate.set_xlabel("position in the sequence ([CLS] = 0)")
    rate.set_title("share of the tokens at each position that are masked")
    rate.legend(fontsize=9, frameon=False)
    for ax in (lengths, repl, rate):
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(
        f"masking statistics over {stats['sequences']:,} sequences ({_scheme_label(config)})", fontsize=12
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def _scheme_label(config: MaskingConfig) -> str:
    if config.scheme != "span":
        return f"{config.scheme} masking"
    if config.span_len is not None:
        return f"spans of {config.span_len} words"
    return f"span masking, Geo({config.geometric_p:g}) up to {config.max_span_len} words"


def _theory_label(config: MaskingConfig) -> str:
    if config.scheme == "span" and config.span_len is None:
        return f"Geo({config.geometric_p:g}) truncated to {config.max_span_len}"
    return "expected"
