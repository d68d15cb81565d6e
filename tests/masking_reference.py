"""A plain, loop-based reference of SpanBERT span masking, written from the specification.

It follows SPANBERT.md §3 and §4 (docs/algorithm.md §2 and §3) step by step, with Python lists and
`random.Random` only, so that `tests/test_masking_reference.py` can use it as an independent oracle for
the *distributions* of the vectorised `spanbert_cli.masking` (which draws from numpy generators, so the
two never produce the same masks). Positions index the full ``[CLS] ... [SEP] [PAD]*`` input.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass
from fractions import Fraction

# Replacement kinds; the same codes as spanbert_cli.masking.REPLACE_*.
MASK, RANDOM, KEEP = 0, 1, 2


@dataclass(frozen=True, eq=False)  # hashed by identity, for the cache of `units`
class RefVocab:
    special: frozenset[int]  # [CLS] [SEP] [PAD] [MASK] [UNK] and any added special token
    continuation: frozenset[int]  # WordPiece `##` pieces
    mask_id: int
    random_ids: tuple[int, ...]  # the non-special vocabulary, where random replacements come from


@dataclass
class RefMasked:
    input_ids: list[int]  # the corrupted sequence
    positions: list[int]  # every masked position (all are prediction targets), ascending
    spans: list[tuple[int, int]]  # merged spans, inclusive (start, end)
    kinds: list[int]  # one per replacement unit: merged span (span, word) or target (token)
    raw_lengths: list[int]  # span lengths as drawn, in units, final (cut) span included
    sbo: list[tuple[int, int, int, int]]  # (position, left boundary, right boundary, position in span)


def truncated_geometric(p: float, max_len: int) -> list[float]:
    """P(l) ∝ p (1-p)^(l-1) for l = 1..max_len, renormalised so the truncated mass is spread back."""
    weights = [p * (1 - p) ** (k - 1) for k in range(1, max_len + 1)]
    total = sum(weights)
    return [w / total for w in weights]


def budget(n: int, ratio: float) -> int:
    """ceil(ratio * n) in exact arithmetic: 0.07 * 100 must give 7, not 8."""
    return math.ceil(Fraction(str(ratio)) * n)


@functools.lru_cache(maxsize=4096)  # the tests mask each sequence under many keys; the result is read-only
def units(ids: tuple[int, ...], vocab: RefVocab, scheme: str) -> tuple[list[list[int]], list[int]]:
    """The masking units and the segment of each: words (a start piece plus its `##` pieces) for the
    span and word schemes, single tokens for token. Special tokens ([UNK] included) belong to no unit
    and end a segment, so that no span can cross them."""
    out: list[list[int]] = []
    segment_of: list[int] = []
    segment, after_special = 0, True
    for pos, tid in enumerate(ids):
        if tid in vocab.special:
            segment, after_special = segment + 1, True
            continue
        # A `##` piece continues the word before it, unless a special token came first (then it has
        # nothing to continue and starts a word: masking.py's documented choice, the spec is silent).
        if scheme == "token" or after_special or tid not in vocab.continuation:
            out.append([pos])
            segment_of.append(segment)
        else:
            out[-1].append(pos)
        after_special = False
    return out, segment_of


def runs(positions: list[int]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive positions: spans that overlap or touch are one merged span."""
    merged: list[tuple[int, int]] = []
    for p in positions:
        if merged and merged[-1][1] == p - 1:
            merged[-1] = (merged[-1][0], p)
        else:
            merged.append((p, p))
    return merged


def sbo_targets(positions: list[int], max_positions: int = 15) -> list[tuple[int, int, int, int]]:
    """SBO targets computed from the mask alone: the boundaries of a target are the tokens just outside
    its merged span (s-1 and e+1: [CLS] or [SEP] at the block edges), its position is i - s; targets at
    position max_positions or further get only the MLM loss."""
    return [
        (i, s - 1, e + 1, i - s) for s, e in runs(positions) for i in range(s, e + 1) if i - s < max_positions
    ]


def mask(
    ids: list[int],
    vocab: RefVocab,
    rng: random.Random,
    *,
    scheme: str = "span",
    ratio: float = 0.15,
    p: float = 0.2,
    max_len: int = 10,
    span_len: int | None = None,
) -> RefMasked:
    """Mask one sequence: spans of whole units until exactly the budget is masked, then corrupt them."""
    unit_list, segment_of = units(tuple(ids), vocab, scheme)
    # The budget counts only the tokens that can be masked: specials excluded, and [UNK] with them (it is
    # a special token of the tokenizer; masking.py's documented reading, see `units`).
    remaining = budget(sum(map(len, unit_list)), ratio)
    lengths = list(range(1, max_len + 1))
    probs = truncated_geometric(p, max_len)
    covered = [False] * len(unit_list)
    masked: list[int] = []
    raw: list[int] = []
    while remaining > 0:
        # 1. A length in units: Geo(p) truncated to 1..max_len for span (or the fixed --span-len), 1 else.
        if scheme != "span":
            length = 1
        elif span_len is not None:
            length = span_len
        else:
            length = rng.choices(lengths, weights=probs)[0]
        raw.append(length)
        # 2. A start chosen uniformly among the units not yet masked: draw among all units and draw
        #    again while the one drawn is masked (the accepted draw is uniform over the unmasked ones).
        start = rng.randrange(len(unit_list))
        while covered[start]:
            start = rng.randrange(len(unit_list))
        # 3. `length` whole units from there, fewer where a special token or the block's end comes first
        #    (the spec names only the block's end; stopping at an interior [UNK] is the documented choice).
        #    Units already masked are passed over at no cost (the spans merge). The exact budget is met
        #    as masking.py documents it: the span is cut at the token where the budget runs out, and
        #    only this last cut may fall inside a word.
        u = start
        while u < min(start + length, len(unit_list)) and segment_of[u] == segment_of[start] and remaining:
            if not covered[u]:
                taken = unit_list[u][:remaining]
                masked += taken
                remaining -= len(taken)
                covered[u] = True
            u += 1
    positions = sorted(masked)
    spans = runs(positions)

    # Replacement, decided once per merged span (per token for the token scheme, as BERT does), from
    # one uniform draw: 80 % [MASK], 10 % random non-special tokens, 10 % unchanged.
    replacement_units = [(i, i) for i in positions] if scheme == "token" else spans
    corrupted = list(ids)
    kinds: list[int] = []
    for s, e in replacement_units:
        draw = rng.random()
        kind = MASK if draw < 0.8 else RANDOM if draw < 0.9 else KEEP
        kinds.append(kind)
        for i in range(s, e + 1):
            if kind == MASK:
                corrupted[i] = vocab.mask_id
            elif kind == RANDOM:
                corrupted[i] = rng.choice(vocab.random_ids)
    return RefMasked(corrupted, positions, spans, kinds, raw, sbo_targets(positions))
