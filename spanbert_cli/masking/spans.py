"""SpanBERT span masking: which tokens a sequence hides, how they are corrupted, and the SBO targets.

The masks are a pure function of ``(seed, epoch, index, config, ids)``: every call builds its own
generator as ``np.random.default_rng([seed, epoch, index])`` and touches no global random state, so the
``mask-preview`` command, a training run with any number of data-loader workers and a resumed run all see
the same masks for the same sequence.

Algorithm (docs/algorithm.md §2), per sequence with ``n`` non-special tokens:

* the budget is exactly ``ceil(mask_ratio * n)`` tokens;
* units are words (a start piece plus its ``##`` pieces) for the ``span`` and ``word`` schemes, single
  subword tokens for the ``token`` scheme; a unit never contains a special token, and a span never
  crosses one (so it never crosses [SEP], nor an interior [UNK]);
* until the budget is spent: draw a length ``l`` (truncated geometric, or ``--span-len``, or 1), pick a
  start uniformly among the units not yet masked, take ``l`` whole units (fewer at a special token) and
  cut the span if it would pass the budget;
* overlapping or touching spans merge; each merged span is replaced as a whole: 80 % [MASK], 10 % random
  tokens a text can contain (neither special nor BERT's ``[unusedN]`` placeholders), 10 % kept (the
  ``token`` scheme decides per token, as BERT does);
* every target whose position inside its merged span is below ``max_sbo_positions`` gets an SBO target
  with the tokens just outside the span as boundaries ([CLS] / [SEP] at the block edges).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from spanbert_cli.errors import DataError, UsageError
from spanbert_cli.options import option

if TYPE_CHECKING:
    import tokenizers


SCHEMES: tuple[str, ...] = ("span", "word", "token")
_PANEL = "Masking"  # where `--help` lists the masking options

# Codes of the `replacement` array.
REPLACE_MASK = 0
REPLACE_RANDOM = 1
REPLACE_KEEP = 2

# BERT's 80/10/10 split, as cumulative thresholds on one uniform draw per replacement unit.
_P_MASK = 0.8
_P_MASK_OR_RANDOM = 0.9

_CORE_SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]")
#: BERT's reserved vocabulary entries (99 in the cased vocabulary, 994 in the uncased one): no text
#: tokenizes to them (the pre-tokenizer splits off the brackets), so a random replacement must not either.
_UNUSED_TOKEN = re.compile(r"\[unused\d+\]")


# --------------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class MaskingConfig:
    """The masking parameters; the field names map to the CLI flags ``--scheme``, ``--mask-ratio``, ...

    ``span_len`` fixes every span to exactly that many words (an ablation); it only applies to the
    ``span`` scheme and then overrides the geometric distribution (``geometric_p`` and ``max_span_len``
    are ignored).
    """

    scheme: str = option(
        "span", "Masking scheme: span (SpanBERT), word or token (the paper's ablations).", panel=_PANEL
    )
    mask_ratio: float = option(0.15, "Share of the non-special tokens masked in each sequence.", panel=_PANEL)
    geometric_p: float = option(
        0.2, "p of the geometric span-length distribution (span scheme).", panel=_PANEL
    )
    max_span_len: int = option(10, "Longest span, in words (span scheme).", panel=_PANEL)
    span_len: int | None = option(
        None,
        "Fix every span to this many words instead of drawing the length (span scheme).",
        panel=_PANEL,
        show_default=False,
    )

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


#: The settings of a `MaskingConfig`, for configs that carry them as fields of their own.
MASKING_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(MaskingConfig))


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

    ``special_ids`` are never masked and never drawn as random replacements; ``unused_ids`` (placeholders
    such as BERT's ``[unusedN]``, which no text contains) are never drawn either; ``is_continuation``
    marks WordPiece ``##`` pieces, which continue the word before them. ``eq=False`` because array fields
    make the generated ``__eq__`` meaningless.
    """

    vocab_size: int
    cls_id: int
    sep_id: int
    pad_id: int
    mask_id: int
    special_ids: tuple[int, ...]
    is_continuation: np.ndarray
    unused_ids: tuple[int, ...] = ()
    _special_lut: np.ndarray = field(init=False, repr=False)
    _random_ids: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        size = int(self.vocab_size)
        if size < 1:
            raise DataError(f"vocabulary size must be >= 1, got {size}")
        cont = np.asarray(self.is_continuation, dtype=bool)
        if cont.shape != (size,):
            raise DataError(f"is_continuation must have shape ({size},), got {cont.shape}")
        specials = tuple(
            sorted({int(i) for i in (*self.special_ids, self.cls_id, self.sep_id, self.pad_id, self.mask_id)})
        )
        bad = [i for i in specials if not 0 <= i < size]
        if bad:
            raise DataError(f"special token ids {bad} are outside the vocabulary of {size}")
        unused = tuple(sorted({int(i) for i in self.unused_ids}))
        bad = [i for i in unused if not 0 <= i < size]
        if bad:
            raise DataError(f"unused token ids {bad} are outside the vocabulary of {size}")
        lut = np.zeros(size, dtype=bool)
        lut[list(specials)] = True
        drawable = ~lut
        drawable[list(unused)] = False
        random_ids = np.flatnonzero(drawable).astype(np.int64)
        if random_ids.size == 0:
            raise DataError(
                "the vocabulary has no token to use as a random replacement (all are special or [unusedN])"
            )
        # Frozen: the derived tables are set once here and never change.
        object.__setattr__(self, "special_ids", specials)
        object.__setattr__(self, "unused_ids", unused)
        object.__setattr__(self, "is_continuation", cont)
        object.__setattr__(self, "_special_lut", lut)
        object.__setattr__(self, "_random_ids", random_ids)

    @classmethod
    def from_tokenizer(cls, tok: tokenizers.Tokenizer, continuation_prefix: str | None = None) -> VocabInfo:
        """Read the ids of [CLS] [SEP] [PAD] [MASK] [UNK], every added special token, the ``[unusedN]``
        placeholders (BERT's vocabularies have them, ours do not) and the ``##`` pieces.

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
        unused = []
        for token, tid in tok.get_vocab(with_added_tokens=True).items():
            if token.startswith(continuation_prefix) and len(token) > len(continuation_prefix):
                cont[tid] = True
            elif _UNUSED_TOKEN.fullmatch(token) and tid not in specials:
                unused.append(tid)
        cont[list(specials)] = False
        return cls(
            vocab_size=size,
            cls_id=ids["[CLS]"],
            sep_id=ids["[SEP]"],
            pad_id=ids["[PAD]"],
            mask_id=ids["[MASK]"],
            special_ids=tuple(sorted(specials)),
            is_continuation=cont,
            unused_ids=tuple(sorted(unused)),
        )


# --------------------------------------------------------------------------------------------------------
# Masking


@dataclass
class MaskedSequence:
    """One masked sequence. Positions index the full input, [CLS] at 0.

    ``spans``/``replacement`` list the replacement units: the merged spans for the ``span`` and ``word``
    schemes; for ``token``, whose 80/10/10 rule is per token, one single-token span per target. The SBO
    arrays always use the merged spans (maximal runs of masked tokens), for every scheme.
    ``raw_span_lengths`` are the lengths as drawn, in sampling order, final span included; the span placed
    can be shorter where a special token ends it or the budget cuts it.

    The arrays of the sequences of one `mask_batch` call may be views into shared batch buffers (disjoint
    regions); copy them before keeping one sequence for long if the batch memory matters.
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
    """``ceil(mask_ratio * n)``, immune to float noise (0.07 * 100 is 7.000000000000001)."""
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
    return mask_batch(
        [ids],
        seed=seed,
        epoch=epoch,
        indices=[index],
        config=config,
        vocab=vocab,
        max_sbo_positions=max_sbo_positions,
    )[0]


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
    """`mask_sequence` over many sequences; ``out[i]`` equals ``mask_sequence(seqs[i], index=indices[i])``.

    The per-token work runs once over the concatenated batch, so this is several times faster per
    sequence than single calls. Only the random draws are per sequence, each from its own generator.
    """
    if len(seqs) != len(indices):
        raise ValueError(f"got {len(seqs)} sequences but {len(indices)} indices")
    cdf = _length_cdf(config)
    _check_sbo_positions(max_sbo_positions)
    if not seqs:
        return []
    keys = [int(i) for i in indices]
    if seed < 0 or epoch < 0 or min(keys) < 0:
        # np.random.SeedSequence only takes non-negative entropy.
        raise UsageError(
            f"--seed, the epoch and sequence indices must be >= 0, got seed {seed}, epoch {epoch}, "
            f"smallest index {min(keys)}"
        )
    arrs = [_as_ids(s) for s in seqs]
    rngs = [np.random.default_rng([seed, epoch, i]) for i in keys]
    return _mask_many(arrs, rngs, keys, config, cdf, vocab, max_sbo_positions)


def _check_sbo_positions(max_sbo_positions: int) -> None:
    if not _is_int(max_sbo_positions) or max_sbo_positions < 0:
        raise UsageError(f"max_sbo_positions must be an integer >= 0, got {max_sbo_positions!r}")


def _as_ids(ids: np.ndarray) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise DataError(f"a sequence must be a 1-D array of token ids, got shape {arr.shape}")
    if arr.dtype != np.int64:
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise DataError(f"token ids must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
    return arr


def _segments(bounds: np.ndarray) -> list[tuple[int, int]]:
    """``[(bounds[i], bounds[i + 1])]`` as Python ints, for cheap slicing."""
    return list(itertools.pairwise(bounds.tolist()))


def _mask_many(
    arrs: list[np.ndarray],
    rngs: list[np.random.Generator],
    indices: list[int],
    config: MaskingConfig,
    cdf: np.ndarray,
    vocab: VocabInfo,
    max_sbo_positions: int,
) -> list[MaskedSequence]:
    """Mask a batch laid end to end in one flat array.

    Nothing leaks between sequences: every sequence that gets masked starts and ends with a special
    token, and units, spans and runs of masked tokens never contain a special token. Each sequence's
    generator is called in the same order as if it were masked alone (placement, then replacement
    kinds, then random ids), so a sequence's masks do not depend on its batch.
    """
    count = len(arrs)
    seq_start = np.zeros(count + 1, dtype=np.int64)
    np.cumsum([a.shape[0] for a in arrs], out=seq_start[1:])
    flat = np.concatenate(arrs) if count > 1 else arrs[0]
    if flat.size and (flat.min() < 0 or flat.max() >= vocab.vocab_size):
        bad = int(flat.min()) if flat.min() < 0 else int(flat.max())
        raise DataError(f"token id {bad} is outside the vocabulary of {vocab.vocab_size}")
    seq_bounds = _segments(seq_start)

    special = vocab._special_lut[flat]
    specials_before = np.zeros(flat.shape[0] + 1, dtype=np.int64)
    np.cumsum(special, out=specials_before[1:])
    n_tokens = np.diff(seq_start) - np.diff(specials_before[seq_start])
    budgets = [mask_budget(n, config.mask_ratio) if n else 0 for n in n_tokens.tolist()]
    for i, (a, b) in enumerate(seq_bounds):
        if budgets[i] and not (special[a] and special[b - 1]):
            # Without a special token at each edge an SBO boundary would fall outside the sequence.
            raise DataError(f"sequence {indices[i]} must start and end with special tokens ([CLS] ... [SEP])")

    # Units tile the non-special tokens: a unit starts at every non-special token that is not a `##`
    # piece, or whose predecessor is special (a stray `##` right after [CLS] still starts a word).
    if config.scheme == "token":
        unit_start = ~special
    else:
        prev_special = np.empty_like(special)
        prev_special[1:] = special[:-1]
        prev_special[seq_start[:-1][np.diff(seq_start) > 0]] = True
        unit_start = ~special & (~vocab.is_continuation[flat] | prev_special)
    starts = np.flatnonzero(unit_start)
    nonspecial_pos = np.flatnonzero(~special)
    # A unit's length is the gap between the ranks of consecutive unit starts among non-special tokens.
    start_rank = np.searchsorted(nonspecial_pos, starts)
    unit_len = np.empty_like(start_rank)
    np.subtract(start_rank[1:], start_rank[:-1], out=unit_len[:-1])
    unit_len[-1:] = nonspecial_pos.shape[0] - start_rank[-1:]
    unit_bounds = _segments(np.searchsorted(starts, seq_start))

    if config.scheme == "span":
        unit_cov, cuts, raw = _place_spans(
            rngs, budgets, unit_bounds, special, starts, unit_len, specials_before, cdf
        )
    else:
        unit_cov, cuts, raw = _place_units(rngs, budgets, unit_bounds, starts, unit_len)

    mask = np.zeros(flat.shape[0], dtype=bool)
    mask[nonspecial_pos] = np.repeat(unit_cov, unit_len)
    for a, b in cuts:
        mask[a:b] = True
    pos = np.flatnonzero(mask)
    labels = flat[pos]
    m = pos.shape[0]
    tgt_bounds = _segments(np.searchsorted(pos, seq_start))

    # Merged spans are the maximal runs of masked positions: spans that overlap or touch fuse.
    run_first = np.empty(m, dtype=bool)
    run_first[:1] = True
    np.not_equal(pos[1:], pos[:-1] + 1, out=run_first[1:])
    first_idx = np.flatnonzero(run_first)
    last_idx = np.empty_like(first_idx)
    np.subtract(first_idx[1:], 1, out=last_idx[:-1])
    last_idx[-1:] = m - 1
    span_start = pos[first_idx]
    span_end = pos[last_idx]
    span_of = np.cumsum(run_first) - 1
    rel = np.arange(m, dtype=np.int64) - first_idx[span_of]
    span_bounds = _segments(np.searchsorted(first_idx, [a for a, _ in tgt_bounds] + [m]))

    # Replacement: one uniform draw per replacement unit (merged span; target for `token`).
    repl_bounds = tgt_bounds if config.scheme == "token" else span_bounds
    u = np.concatenate([rng.random(b - a) for rng, (a, b) in zip(rngs, repl_bounds, strict=True)])
    kinds = (u >= _P_MASK).astype(np.int8) + (u >= _P_MASK_OR_RANDOM).astype(np.int8)
    target_kind = kinds if config.scheme == "token" else kinds[span_of]

    corrupted = flat.copy()
    corrupted[pos[target_kind == REPLACE_MASK]] = vocab.mask_id
    is_random = target_kind == REPLACE_RANDOM
    random_before = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(is_random, out=random_before[1:])
    random_counts = [int(random_before[b] - random_before[a]) for a, b in tgt_bounds]
    if random_before[-1]:
        draws = np.concatenate(
            [
                rng.integers(0, vocab._random_ids.shape[0], size=c)
                for rng, c in zip(rngs, random_counts, strict=True)
                if c
            ]
        )
        corrupted[pos[is_random]] = vocab._random_ids[draws]

    # Back to per-sequence coordinates.
    target_seq_start = np.repeat(seq_start[:-1], np.diff([a for a, _ in tgt_bounds] + [m]))
    local_pos = pos - target_seq_start
    span_seq_start = target_seq_start[first_idx]
    local_start = span_start - span_seq_start
    local_end = span_end - span_seq_start
    if config.scheme == "token":
        spans = np.stack([local_pos, local_pos], axis=1)
    else:
        spans = np.stack([local_start, local_end], axis=1)
    sbo = np.flatnonzero(rel < max_sbo_positions)
    sbo_span = span_of[sbo]
    sbo_pos = local_pos[sbo]
    sbo_left = local_start[sbo_span] - 1
    sbo_right = local_end[sbo_span] + 1
    sbo_rel = rel[sbo]
    sbo_labels = labels[sbo]
    sbo_bounds = _segments(np.searchsorted(sbo, [a for a, _ in tgt_bounds] + [m]))

    out = []
    for i, ((sa, sb), (ta, tb), (ra, rb), (ka, kb)) in enumerate(
        zip(seq_bounds, tgt_bounds, repl_bounds, sbo_bounds, strict=True)
    ):
        out.append(
            MaskedSequence(
                input_ids=corrupted[sa:sb],
                mlm_positions=local_pos[ta:tb],
                mlm_labels=labels[ta:tb],
                spans=spans[ra:rb],
                replacement=kinds[ra:rb],
                sbo_positions=sbo_pos[ka:kb],
                sbo_left=sbo_left[ka:kb],
                sbo_right=sbo_right[ka:kb],
                sbo_rel_pos=sbo_rel[ka:kb],
                sbo_labels=sbo_labels[ka:kb],
                raw_span_lengths=raw[i],
            )
        )
    return out


Cut = tuple[int, int]


def _place_units(
    rngs: list[np.random.Generator],
    budgets: list[int],
    unit_bounds: list[tuple[int, int]],
    starts: np.ndarray,
    unit_len: np.ndarray,
) -> tuple[np.ndarray, list[Cut], list[np.ndarray]]:
    """Single-unit spans (``word`` and ``token``): no loop over spans.

    Picking, one at a time, a unit uniformly among those not yet masked is the same as walking a
    uniformly random permutation of the units, so a sequence's draw is one permutation plus a cumsum.
    """
    unit_cov = np.zeros(unit_len.shape[0], dtype=bool)
    cuts: list[Cut] = []
    raw: list[np.ndarray] = []
    for rng, budget, (u0, u1) in zip(rngs, budgets, unit_bounds, strict=True):
        if not budget:
            raw.append(np.zeros(0, dtype=np.int64))
            continue
        order = rng.permutation(u1 - u0) + u0
        filled = np.cumsum(unit_len[order])
        # Whole units that fit in the budget; the next one is cut unless the budget is already exact.
        whole = int(np.searchsorted(filled, budget, side="right"))
        unit_cov[order[:whole]] = True
        done = int(filled[whole - 1]) if whole else 0
        taken = whole
        if done < budget:
            first = int(starts[order[whole]])
            cuts.append((first, first + budget - done))
            taken += 1
        raw.append(np.ones(taken, dtype=np.int64))
    return unit_cov, cuts, raw


def _place_spans(
    rngs: list[np.random.Generator],
    budgets: list[int],
    unit_bounds: list[tuple[int, int]],
    special: np.ndarray,
    starts: np.ndarray,
    unit_len: np.ndarray,
    specials_before: np.ndarray,
    cdf: np.ndarray,
) -> tuple[np.ndarray, list[Cut], list[np.ndarray]]:
    """Multi-unit spans (``span`` scheme); the loop runs once per span (about 20 for 512 tokens).

    A start drawn uniformly over all units and rejected when already masked is uniform over the
    unmasked ones. Starts and lengths are drawn in bulk and consumed in order; each length is drawn
    independently of whether the process is still running, so the lengths of all spans placed, the final
    one included, are an unbiased sample of the length distribution (Wald's identity).
    """
    n_units = unit_len.shape[0]
    # A span may not run past the special token that ends its segment ([SEP], or an interior [UNK]).
    # Segments are numbered by the count of special tokens before them.
    seg_of_unit = specials_before[starts]
    n_segments = int(np.count_nonzero(seg_of_unit[1:] != seg_of_unit[:-1])) + (1 if n_units else 0)
    active = sum(1 for b in budgets if b)
    seg_end = (
        None if n_segments == active else np.searchsorted(seg_of_unit, seg_of_unit, side="right").tolist()
    )
    # Prefix sums in tokens: a span free of already-masked units costs O(1), and len(w) is a difference.
    prefix = [0, *np.cumsum(unit_len).tolist()]

    covered = bytearray(n_units)
    cuts: list[Cut] = []
    raw: list[np.ndarray] = []
    for rng, budget, (u0, u1) in zip(rngs, budgets, unit_bounds, strict=True):
        remaining = budget
        raw_lengths: list[int] = []
        chunk = max(8, budget // 2 + 8)
        candidates: list[int] = []
        lengths: list[int] = []
        c = k = 0
        while remaining > 0:
            if c == len(candidates):
                candidates = rng.integers(u0, u1, size=chunk).tolist()
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
            limit = u1 if seg_end is None else seg_end[u]
            if end > limit:
                end = limit
            if covered.find(1, u, end) < 0:
                new = prefix[end] - prefix[u]
            else:
                new = sum(prefix[w + 1] - prefix[w] for w in range(u, end) if not covered[w])
            if new < remaining:
                covered[u:end] = b"\x01" * (end - u)
                remaining -= new
                continue
            # The final span: mask up to the token where the budget runs out (maybe mid-word); words it
            # passes over that were already masked cost nothing.
            for w in range(u, end):
                if covered[w]:
                    continue
                size = prefix[w + 1] - prefix[w]
                if size >= remaining:
                    cuts.append((int(starts[u]), int(starts[w]) + remaining))
                    break
                remaining -= size
            remaining = 0
        raw.append(np.array(raw_lengths, dtype=np.int64))
    unit_cov = np.frombuffer(bytes(covered), dtype=np.uint8).astype(bool)
    return unit_cov, cuts, raw
