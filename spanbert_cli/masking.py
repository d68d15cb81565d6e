"""SpanBERT span masking: which tokens a sequence hides, how they are corrupted, and the SBO targets.

The masks are a pure function of ``(seed, epoch, index, config, ids)``: every call builds its own
generator as ``np.random.default_rng([seed, epoch, index])`` and touches no global random state, so the
``mask-preview`` command, a training run with any number of data-loader workers and a resumed run all see
the same masks for the same sequence.

Algorithm (SPANBERT.md §3), per sequence with ``n`` non-special tokens:

* the budget is exactly ``ceil(mask_ratio * n)`` tokens;
* units are words (a start piece plus its ``##`` pieces) for the ``span`` and ``word`` schemes, single
  subword tokens for the ``token`` scheme; a unit never contains a special token, and a span never
  crosses one (so it never crosses [SEP], nor an interior [UNK]);
* until the budget is spent: draw a length ``l`` (truncated geometric, or ``--span-len``, or 1), pick a
  start uniformly among the units not yet masked, take ``l`` whole units (fewer at a special token) and
  cut the span if it would pass the budget;
* overlapping or touching spans merge; each merged span is replaced as a whole: 80 % [MASK], 10 % random
  non-special tokens, 10 % kept (the ``token`` scheme decides per token, as BERT does);
* every target whose position inside its merged span is below ``max_sbo_positions`` gets an SBO target
  with the tokens just outside the span as boundaries ([CLS] / [SEP] at the block edges).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from spanbert_cli.errors import DataError, UsageError

if TYPE_CHECKING:
    import tokenizers
    import torch

__all__ = [
    "REPLACE_KEEP",
    "REPLACE_MASK",
    "REPLACE_RANDOM",
    "SCHEMES",
    "MaskedDataset",
    "MaskedSequence",
    "MaskingConfig",
    "VocabInfo",
    "collate",
    "mask_batch",
    "mask_sequence",
    "span_length_distribution",
]

SCHEMES: tuple[str, ...] = ("span", "word", "token")

# Codes of the `replacement` array.
REPLACE_MASK = 0
REPLACE_RANDOM = 1
REPLACE_KEEP = 2

# BERT's 80/10/10 split, as cumulative thresholds on one uniform draw per replacement unit.
_P_MASK = 0.8
_P_MASK_OR_RANDOM = 0.9

_CORE_SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]")


# --------------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class MaskingConfig:
    """The masking parameters; the field names map to the CLI flags ``--scheme``, ``--mask-ratio``, ...

    ``span_len`` fixes every span to exactly that many words (an ablation); it only applies to the
    ``span`` scheme and then overrides the geometric distribution (``geometric_p`` and ``max_span_len``
    are ignored).
    """

    scheme: str = "span"
    mask_ratio: float = 0.15
    geometric_p: float = 0.2
    max_span_len: int = 10
    span_len: int | None = None

    def validate(self) -> None:
        """Raise one `UsageError` that lists every invalid parameter by its flag."""
        problems: list[str] = []
        if self.scheme not in SCHEMES:
            problems.append(f"--scheme must be one of {', '.join(SCHEMES)}, got {self.scheme!r}")
        if not _is_real(self.mask_ratio) or not 0.0 < self.mask_ratio <= 0.5:
            problems.append(f"--mask-ratio must be in (0, 0.5], got {self.mask_ratio!r}")
        if not _is_real(self.geometric_p) or not 0.0 < self.geometric_p <= 1.0:
            problems.append(f"--geometric-p must be in (0, 1], got {self.geometric_p!r}")
        if not _is_int(self.max_span_len) or self.max_span_len < 1:
            problems.append(f"--max-span-len must be an integer >= 1, got {self.max_span_len!r}")
        if self.span_len is not None:
            if not _is_int(self.span_len) or self.span_len < 1:
                problems.append(f"--span-len must be an integer >= 1, got {self.span_len!r}")
            elif self.scheme in SCHEMES and self.scheme != "span":
                problems.append(f"--span-len only applies to --scheme span, got --scheme {self.scheme}")
        if problems:
            raise UsageError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the parameters (for run manifests and previews)."""
        return dataclasses.asdict(self)


def _is_real(value: object) -> bool:
    # bool is an int subclass; `--mask-ratio True` is a mistake, not 1.0.
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def span_length_distribution(config: MaskingConfig) -> np.ndarray:
    """Theoretical ``P(length = 1..L)`` of a sampled span, in units (words, or tokens for ``token``).

    ``span``: Geo(p) truncated to ``1..max_span_len`` and renormalised, or all mass on ``span_len``;
    ``word`` and ``token``: always 1. Index ``i`` holds ``P(length = i + 1)``.
    """
    config.validate()
    return _length_pmf(config).copy()


@functools.lru_cache(maxsize=64)
def _length_pmf(config: MaskingConfig) -> np.ndarray:
    if config.scheme != "span":
        return np.ones(1)
    if config.span_len is not None:
        pmf = np.zeros(config.span_len)
        pmf[-1] = 1.0
        return pmf
    p = float(config.geometric_p)
    pmf = p * (1.0 - p) ** np.arange(config.max_span_len, dtype=np.float64)
    return pmf / pmf.sum()


@functools.lru_cache(maxsize=64)
def _length_cdf(config: MaskingConfig) -> np.ndarray:
    """Validated once per config; inverse-CDF sampling is far cheaper than `Generator.choice(p=...)`."""
    config.validate()
    cdf = np.cumsum(_length_pmf(config))
    # Rounding may leave the last value a hair under 1 and let a draw of 0.99999999 fall off the end.
    cdf[-1] = 1.0
    return cdf


# --------------------------------------------------------------------------------------------------------
# Vocabulary


@dataclass(frozen=True, eq=False)
class VocabInfo:
    """What masking needs to know about the vocabulary.

    ``special_ids`` are never masked and never drawn as random replacements; ``is_continuation`` marks
    WordPiece ``##`` pieces, which continue the word before them. ``eq=False`` because array fields make
    the generated ``__eq__`` meaningless.
    """

    vocab_size: int
    cls_id: int
    sep_id: int
    pad_id: int
    mask_id: int
    special_ids: tuple[int, ...]
    is_continuation: np.ndarray
    _special_lut: np.ndarray = field(init=False, repr=False)
    _random_ids: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        size = int(self.vocab_size)
        if size < 1:
            raise DataError(f"vocabulary size must be >= 1, got {size}")
        cont = np.asarray(self.is_continuation, dtype=bool)
        if cont.shape != (size,):
            raise DataError(f"is_continuation must have shape ({size},), got {cont.shape}")
        specials = tuple(sorted({int(i) for i in (*self.special_ids, self.cls_id, self.sep_id,
                                                   self.pad_id, self.mask_id)}))
        bad = [i for i in specials if not 0 <= i < size]
        if bad:
            raise DataError(f"special token ids {bad} are outside the vocabulary of {size}")
        lut = np.zeros(size, dtype=bool)
        lut[list(specials)] = True
        random_ids = np.flatnonzero(~lut).astype(np.int64)
        if random_ids.size == 0:
            raise DataError("the vocabulary has no non-special token to use as a random replacement")
        # Frozen: the derived tables are set once here and never change.
        object.__setattr__(self, "special_ids", specials)
        object.__setattr__(self, "is_continuation", cont)
        object.__setattr__(self, "_special_lut", lut)
        object.__setattr__(self, "_random_ids", random_ids)

    @classmethod
    def from_tokenizer(cls, tok: tokenizers.Tokenizer, continuation_prefix: str | None = None) -> VocabInfo:
        """Read the ids of [CLS] [SEP] [PAD] [MASK] [UNK], every added special token, and the ``##`` pieces.

        The continuation prefix is the WordPiece model's own (``##`` by default).
        """
        ids: dict[str, int] = {}
        for token in _CORE_SPECIAL_TOKENS:
            tid = tok.token_to_id(token)
            if tid is None:
                raise DataError(f"the tokenizer has no {token} token")
            ids[token] = tid
        specials = set(ids.values())
        specials.update(i for i, added in tok.get_added_tokens_decoder().items() if added.special)
        if continuation_prefix is None:
            continuation_prefix = getattr(tok.model, "continuing_subword_prefix", None) or "##"
        size = tok.get_vocab_size(with_added_tokens=True)
        cont = np.zeros(size, dtype=bool)
        for token, tid in tok.get_vocab(with_added_tokens=True).items():
            if token.startswith(continuation_prefix) and len(token) > len(continuation_prefix):
                cont[tid] = True
        cont[list(specials)] = False
        return cls(
            vocab_size=size,
            cls_id=ids["[CLS]"],
            sep_id=ids["[SEP]"],
            pad_id=ids["[PAD]"],
            mask_id=ids["[MASK]"],
            special_ids=tuple(sorted(specials)),
            is_continuation=cont,
        )


# --------------------------------------------------------------------------------------------------------
# Masking one sequence


@dataclass
class MaskedSequence:
    """One masked sequence. Positions index the full input, [CLS] at 0.

    ``spans``/``replacement`` list the replacement units: the merged spans for the ``span`` and ``word``
    schemes; for ``token``, whose 80/10/10 rule is per token, one single-token span per target. The SBO
    arrays always use the merged spans (maximal runs of masked tokens), for every scheme.
    ``raw_span_lengths`` are the lengths as drawn, in sampling order, final span included; the span placed
    can be shorter where a special token ends it or the budget cuts it.
    """

    input_ids: np.ndarray
    mlm_positions: np.ndarray
    mlm_labels: np.ndarray
    spans: np.ndarray
    replacement: np.ndarray
    sbo_positions: np.ndarray
    sbo_left: np.ndarray
    sbo_right: np.ndarray
    sbo_rel_pos: np.ndarray
    sbo_labels: np.ndarray
    raw_span_lengths: np.ndarray


def mask_budget(n: int, mask_ratio: float) -> int:
    """``ceil(mask_ratio * n)``, immune to float noise (0.15 * 20 is 3.0000000000000004)."""
    return math.ceil(round(mask_ratio * n, 9))


def mask_sequence(
    ids: np.ndarray,
    *,
    seed: int,
    epoch: int,
    index: int,
    config: MaskingConfig,
    vocab: VocabInfo,
    max_sbo_positions: int = 15,
) -> MaskedSequence:
    """Mask one ``[CLS] ... [SEP]`` sequence; a pure function of its arguments."""
    cdf = _length_cdf(config)
    _check_sbo_positions(max_sbo_positions)
    arr = _as_ids(ids, vocab)
    rng = np.random.default_rng([seed, epoch, index])
    return _mask_one(arr, rng, config, cdf, vocab, max_sbo_positions)


def mask_batch(
    seqs: Sequence[np.ndarray],
    *,
    seed: int,
    epoch: int,
    indices: Sequence[int],
    config: MaskingConfig,
    vocab: VocabInfo,
    max_sbo_positions: int = 15,
) -> list[MaskedSequence]:
    """`mask_sequence` over many sequences; ``out[i]`` equals ``mask_sequence(seqs[i], index=indices[i])``."""
    if len(seqs) != len(indices):
        raise ValueError(f"got {len(seqs)} sequences but {len(indices)} indices")
    cdf = _length_cdf(config)
    _check_sbo_positions(max_sbo_positions)
    return [
        _mask_one(_as_ids(s, vocab), np.random.default_rng([seed, epoch, int(i)]), config, cdf, vocab,
                  max_sbo_positions)
        for s, i in zip(seqs, indices, strict=True)
    ]


def _check_sbo_positions(max_sbo_positions: int) -> None:
    if not _is_int(max_sbo_positions) or max_sbo_positions < 0:
        raise UsageError(f"max_sbo_positions must be an integer >= 0, got {max_sbo_positions!r}")


def _as_ids(ids: np.ndarray, vocab: VocabInfo) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise DataError(f"a sequence must be a 1-D array of token ids, got shape {arr.shape}")
    if arr.dtype != np.int64:
        arr = arr.astype(np.int64)
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= vocab.vocab_size:
            raise DataError(f"token id {lo if lo < 0 else hi} is outside the vocabulary of {vocab.vocab_size}")
    return arr


def _mask_one(
    ids: np.ndarray,
    rng: np.random.Generator,
    config: MaskingConfig,
    cdf: np.ndarray,
    vocab: VocabInfo,
    max_sbo_positions: int,
) -> MaskedSequence:
    length = ids.shape[0]
    special = vocab._special_lut[ids]
    nonspecial_pos = np.flatnonzero(~special)
    n = nonspecial_pos.shape[0]
    budget = mask_budget(n, config.mask_ratio) if n else 0
    if budget == 0:
        return _empty_result(ids)
    if not (special[0] and special[-1]):
        # Without a special token at each edge an SBO boundary would fall outside the sequence.
        raise DataError("a sequence must start and end with special tokens ([CLS] ... [SEP])")

    # Units tile the non-special tokens: a unit starts at every non-special token that is not a `##`
    # piece, or whose predecessor is special (a stray `##` right after [CLS] still starts a word).
    if config.scheme == "token":
        unit_start = ~special
    else:
        prev_special = np.empty_like(special)
        prev_special[0] = True
        prev_special[1:] = special[:-1]
        unit_start = ~special & (~vocab.is_continuation[ids] | prev_special)
    starts = np.flatnonzero(unit_start)
    # Units are contiguous runs in the list of non-special tokens, so their lengths are the gaps between
    # the ranks of consecutive unit starts in that list.
    start_rank = np.searchsorted(nonspecial_pos, starts)
    unit_len = np.empty_like(start_rank)
    np.subtract(start_rank[1:], start_rank[:-1], out=unit_len[:-1])
    unit_len[-1] = n - start_rank[-1]

    if config.scheme == "span":
        unit_cov, cut, raw_lengths = _place_spans(rng, special, starts, unit_len, budget, cdf)
    else:
        unit_cov, cut, raw_lengths = _place_units(rng, starts, unit_len, budget)

    mask = np.zeros(length, dtype=bool)
    mask[nonspecial_pos] = np.repeat(unit_cov, unit_len)
    if cut is not None:
        mask[cut[0]:cut[1]] = True
    pos = np.flatnonzero(mask)
    labels = ids[pos]
    m = pos.shape[0]

    # Merged spans are the maximal runs of masked positions: spans that overlap or touch fuse.
    run_first = np.empty(m, dtype=bool)
    run_first[0] = True
    np.not_equal(pos[1:], pos[:-1] + 1, out=run_first[1:])
    first_idx = np.flatnonzero(run_first)
    last_idx = np.empty_like(first_idx)
    np.subtract(first_idx[1:], 1, out=last_idx[:-1])
    last_idx[-1] = m - 1
    span_start = pos[first_idx]
    span_end = pos[last_idx]
    span_of = np.cumsum(run_first) - 1
    rel = np.arange(m, dtype=np.int64) - first_idx[span_of]

    if config.scheme == "token":
        kinds = _draw_kinds(rng, m)
        target_kind = kinds
        spans = np.empty((m, 2), dtype=np.int64)
        spans[:, 0] = pos
        spans[:, 1] = pos
    else:
        kinds = _draw_kinds(rng, first_idx.shape[0])
        target_kind = kinds[span_of]
        spans = np.empty((first_idx.shape[0], 2), dtype=np.int64)
        spans[:, 0] = span_start
        spans[:, 1] = span_end

    corrupted = ids.copy()
    corrupted[pos[target_kind == REPLACE_MASK]] = vocab.mask_id
    random_pos = pos[target_kind == REPLACE_RANDOM]
    if random_pos.shape[0]:
        draws = rng.integers(0, vocab._random_ids.shape[0], size=random_pos.shape[0])
        corrupted[random_pos] = vocab._random_ids[draws]

    sbo = np.flatnonzero(rel < max_sbo_positions)
    sbo_span = span_of[sbo]
    return MaskedSequence(
        input_ids=corrupted,
        mlm_positions=pos,
        mlm_labels=labels,
        spans=spans,
        replacement=kinds,
        sbo_positions=pos[sbo],
        sbo_left=span_start[sbo_span] - 1,
        sbo_right=span_end[sbo_span] + 1,
        sbo_rel_pos=rel[sbo],
        sbo_labels=labels[sbo],
        raw_span_lengths=raw_lengths,
    )


def _draw_kinds(rng: np.random.Generator, count: int) -> np.ndarray:
    u = rng.random(count)
    return (u >= _P_MASK).astype(np.int8) + (u >= _P_MASK_OR_RANDOM).astype(np.int8)


def _empty_result(ids: np.ndarray) -> MaskedSequence:
    def empty() -> np.ndarray:
        return np.zeros(0, dtype=np.int64)

    return MaskedSequence(
        input_ids=ids.copy(),
        mlm_positions=empty(),
        mlm_labels=empty(),
        spans=np.zeros((0, 2), dtype=np.int64),
        replacement=np.zeros(0, dtype=np.int8),
        sbo_positions=empty(),
        sbo_left=empty(),
        sbo_right=empty(),
        sbo_rel_pos=empty(),
        sbo_labels=empty(),
        raw_span_lengths=empty(),
    )


Cut = tuple[int, int]


def _place_units(
    rng: np.random.Generator, starts: np.ndarray, unit_len: np.ndarray, budget: int
) -> tuple[np.ndarray, Cut | None, np.ndarray]:
    """Single-unit spans (``word`` and ``token``): no Python loop needed.

    Picking, one at a time, a unit uniformly among those not yet masked is the same as walking a
    uniformly random permutation of the units, so the whole draw is one permutation plus a cumsum.
    """
    n_units = starts.shape[0]
    order = rng.permutation(n_units)
    filled = np.cumsum(unit_len[order])
    # Whole units that fit in the budget; the next one is cut unless the budget is already exact.
    whole = int(np.searchsorted(filled, budget, side="right"))
    unit_cov = np.zeros(n_units, dtype=bool)
    unit_cov[order[:whole]] = True
    done = int(filled[whole - 1]) if whole else 0
    cut: Cut | None = None
    taken = whole
    if done < budget:
        first = int(starts[order[whole]])
        cut = (first, first + budget - done)
        taken += 1
    return unit_cov, cut, np.ones(taken, dtype=np.int64)


def _place_spans(
    rng: np.random.Generator,
    special: np.ndarray,
    starts: np.ndarray,
    unit_len: np.ndarray,
    budget: int,
    cdf: np.ndarray,
) -> tuple[np.ndarray, Cut | None, np.ndarray]:
    """Multi-unit spans (``span`` scheme); the loop runs once per span (about 20 for 512 tokens).

    A start drawn uniformly over all units and rejected when already masked is uniform over the
    unmasked ones. Starts and lengths are drawn in bulk and consumed in order; each length is drawn
    independently of whether the process is still running, so the lengths of all spans placed, the final
    one included, are an unbiased sample of the length distribution (Wald's identity).
    """
    n_units = starts.shape[0]
    # A span may not run past the special token that ends its segment (e.g. [SEP]).
    seg_of_unit = np.cumsum(special)[starts]
    single_segment = seg_of_unit[0] == seg_of_unit[-1]
    seg_end = None if single_segment else np.searchsorted(seg_of_unit, seg_of_unit, side="right").tolist()
    len_list = unit_len.tolist()
    first_tok = starts.tolist()
    # Prefix sums in tokens, so a span free of already-masked units costs O(1).
    prefix = [0, *np.cumsum(unit_len).tolist()]

    chunk = max(8, budget // 2 + 8)
    covered = bytearray(n_units)
    remaining = budget
    raw_lengths: list[int] = []
    cut: Cut | None = None
    candidates: list[int] = []
    lengths: list[int] = []
    c = k = 0
    while remaining > 0:
        if c == len(candidates):
            candidates = rng.integers(0, n_units, size=chunk).tolist()
            c = 0
        u = candidates[c]
        c += 1
        if covered[u]:
            continue
        if k == len(lengths):
            lengths = (np.searchsorted(cdf, rng.random(chunk), side="right") + 1).tolist()
            k = 0
        span_len = lengths[k]
        k += 1
        raw_lengths.append(span_len)
        end = u + span_len
        limit = n_units if seg_end is None else seg_end[u]
        if end > limit:
            end = limit
        if covered.find(1, u, end) < 0:
            new = prefix[end] - prefix[u]
        else:
            new = sum(len_list[w] for w in range(u, end) if not covered[w])
        if new < remaining:
            covered[u:end] = b"\x01" * (end - u)
            remaining -= new
            continue
        # The final span: mask up to the token where the budget runs out (maybe mid-word); words it
        # passes over that were already masked cost nothing.
        for w in range(u, end):
            if covered[w]:
                continue
            if len_list[w] >= remaining:
                cut = (first_tok[u], first_tok[w] + remaining)
                break
            remaining -= len_list[w]
        remaining = 0
    unit_cov = np.frombuffer(bytes(covered), dtype=np.uint8).astype(bool)
    return unit_cov, cut, np.asarray(raw_lengths, dtype=np.int64)


# --------------------------------------------------------------------------------------------------------
# Dataset and collation for pretraining


class SequenceReader(Protocol):
    """Random access to the ``[CLS] ... [SEP]`` id sequences of a pretraining data set."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> np.ndarray: ...


class MaskedDataset:
    """Map-style dataset (``__len__`` + ``__getitem__``) yielding masked sequences for pretraining.

    The masks are `mask_sequence` of ``(seed, epoch, index)``, so they are the same whatever the number
    of data-loader workers and equal what ``mask-preview`` shows. Call `set_epoch` before creating the
    epoch's data-loader iterator: worker processes copy the dataset when the iterator starts (with
    ``persistent_workers=True`` they would keep the old epoch).
    """

    def __init__(
        self,
        reader: SequenceReader,
        *,
        seed: int,
        config: MaskingConfig,
        vocab: VocabInfo,
        max_sbo_positions: int = 15,
        epoch: int = 0,
    ) -> None:
        _length_cdf(config)  # validate now rather than in a worker
        _check_sbo_positions(max_sbo_positions)
        self.reader = reader
        self.seed = int(seed)
        self.config = config
        self.vocab = vocab
        self.max_sbo_positions = int(max_sbo_positions)
        self.epoch = int(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < len(self.reader):
            raise IndexError(f"sequence index {index} out of range for {len(self.reader)} sequences")
        masked = mask_sequence(
            self.reader[index],
            seed=self.seed,
            epoch=self.epoch,
            index=index,
            config=self.config,
            vocab=self.vocab,
            max_sbo_positions=self.max_sbo_positions,
        )
        return {
            "index": index,
            "input_ids": masked.input_ids,
            "mlm_positions": masked.mlm_positions,
            "mlm_labels": masked.mlm_labels,
            "sbo_positions": masked.sbo_positions,
            "sbo_left": masked.sbo_left,
            "sbo_right": masked.sbo_right,
            "sbo_rel_pos": masked.sbo_rel_pos,
            "sbo_labels": masked.sbo_labels,
        }


def collate(batch: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a micro-batch to its longest sequence and flatten the target positions into ``[B * T]``.

    Positions come out as ``b * T + pos`` so the model can gather just the target rows of its
    ``[B * T, H]`` hidden states instead of running the heads over every token.
    Use with ``functools.partial(collate, pad_id=vocab.pad_id)`` as a DataLoader ``collate_fn``.
    """
    import torch

    if not batch:
        raise ValueError("cannot collate an empty batch")
    lengths = np.array([item["input_ids"].shape[0] for item in batch], dtype=np.int64)
    n_rows, width = len(batch), int(lengths.max())
    input_ids = np.full((n_rows, width), pad_id, dtype=np.int64)
    for row, item in enumerate(batch):
        input_ids[row, : lengths[row]] = item["input_ids"]
    attention = np.arange(width)[None, :] < lengths[:, None]
    offsets = np.arange(n_rows, dtype=np.int64) * width

    def flat(key: str) -> torch.Tensor:
        parts = [item[key] + offsets[row] for row, item in enumerate(batch)]
        return torch.from_numpy(np.concatenate(parts).astype(np.int64, copy=False))

    def cat(key: str) -> torch.Tensor:
        return torch.from_numpy(np.concatenate([item[key] for item in batch]).astype(np.int64, copy=False))

    return {
        "index": torch.tensor([int(item["index"]) for item in batch], dtype=torch.int64),
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(attention),
        "mlm_positions": flat("mlm_positions"),
        "mlm_labels": cat("mlm_labels"),
        "sbo_positions": flat("sbo_positions"),
        "sbo_left": flat("sbo_left"),
        "sbo_right": flat("sbo_right"),
        "sbo_rel_pos": cat("sbo_rel_pos"),
        "sbo_labels": cat("sbo_labels"),
    }
