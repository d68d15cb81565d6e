"""The vectorised masking against the plain reference of `masking_reference` (SPANBERT.md §3, §4).

The two draw from different generators (numpy vs `random.Random`), so they never give the same masks:
what must agree are the distributions, measured the same way on both from their outputs, on real
sequences (a real WordPiece tokenizer, State of the Union addresses and Moby-Dick, 128-512 tokens, with
the interior [UNK]s the text produces and [PAD] tails). Each of the 300 sequences is masked under 16
(seed, epoch) keys: 4,800 masked sequences and about 43,000 merged spans per side.

The inputs are fixed, so every statistic below is deterministic; the thresholds are still set as tests
at about p = 0.001 for that sample size, so a correct implementation passes with room to spare and a
wrong one (shown by feeding the reference a wrong parameter) fails by far.
"""

from __future__ import annotations

import functools
import math
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import masking_reference as ref
import numpy as np
import pytest
from conftest import CORPUS

from spanbert_cli.masking import MaskingConfig, VocabInfo, mask_batch

N_SEQUENCES = 300
KEYS = [(seed, epoch) for seed in (11, 12) for epoch in range(8)]  # 16 masks of every sequence
Z_CRIT = 3.29  # two-sided normal quantile for p = 0.001
MIXED = 3  # an observed replacement that is none of the three: some tokens [MASK], some not


def chi2_critical(dof: int, z: float = 3.09) -> float:
    """The chi-square quantile at upper tail p = 0.001 (z = 3.09), Wilson-Hilferty approximation: a
    hair above the exact value (14.1 for 13.8 at 2 degrees of freedom, 28.1 for 27.9 at 9, 40.9 for
    40.8 at 17), so about p = 0.0008."""
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


# --------------------------------------------------------------------------------------------------------
# Real inputs


@pytest.fixture(scope="module")
def tok(tokenizer_json: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tokenizer_json))


@pytest.fixture(scope="module")
def token_strings(tok) -> list[str]:
    return [tok.id_to_token(i) for i in range(tok.get_vocab_size(with_added_tokens=True))]


@pytest.fixture(scope="module")
def ref_vocab(tok, token_strings) -> ref.RefVocab:
    """The reference's view of the vocabulary, read from the token strings, not from `VocabInfo`."""
    special = frozenset(
        {tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]")}
        | {i for i, added in tok.get_added_tokens_decoder().items() if added.special}
    )
    cont = frozenset(i for i, s in enumerate(token_strings) if s.startswith("##") and i not in special)
    others = tuple(i for i in range(len(token_strings)) if i not in special)
    return ref.RefVocab(special, cont, tok.token_to_id("[MASK]"), others)


@pytest.fixture(scope="module")
def vocab(tok) -> VocabInfo:
    return VocabInfo.from_tokenizer(tok)


@pytest.fixture(scope="module")
def sequences(tok) -> list[list[int]]:
    """300 blocks of 128-512 tokens cut from real documents; every fifth padded to 512 with [PAD]."""
    files = [*sorted(CORPUS.glob("state_union/*.txt"))[::4], CORPUS / "gutenberg" / "melville-moby_dick.txt"]
    texts = [f.read_text(encoding="utf-8")[:150_000] for f in files]
    cls, sep, pad = (tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]"))
    rng = random.Random(0)
    out: list[list[int]] = []
    for enc in tok.encode_batch(texts[::-1], add_special_tokens=False):  # Moby-Dick first: its [UNK]s
        ids, at = enc.ids, 0
        while at + 126 <= len(ids) and len(out) < N_SEQUENCES:
            length = rng.randint(128, 512)
            block = [cls, *ids[at : at + length - 2], sep]
            at += length - 2
            out.append(block + [pad] * (512 - len(block)) if len(out) % 5 == 0 else block)
    assert len(out) == N_SEQUENCES
    return out


@pytest.fixture(scope="module")
def words(sequences, token_strings, ref_vocab) -> list[list[int]]:
    """The word index of every position of every sequence (see `word_ids`)."""
    return [word_ids(ids, token_strings, ref_vocab.special) for ids in sequences]


@dataclass
class Sample:
    """One masked sequence, from either implementation, in the same plain form."""

    index: int  # of the sequence in `sequences`
    ids: list[int]
    corrupted: list[int]
    positions: list[int]
    kinds: list[int]  # declared replacement per unit
    raw_lengths: list[int]
    sbo: list[tuple[int, int, int, int]]


@pytest.fixture(scope="module")
def real(sequences, vocab):
    """`real(scheme)`: every sequence masked by spanbert_cli.masking under every key."""

    @functools.cache
    def run(scheme: str) -> list[Sample]:
        arrays = [np.array(s, dtype=np.int64) for s in sequences]
        out = []
        for seed, epoch in KEYS:
            masked = mask_batch(
                arrays,
                seed=seed,
                epoch=epoch,
                indices=range(len(arrays)),
                config=MaskingConfig(scheme=scheme),
                vocab=vocab,
            )
            for index, (ids, m) in enumerate(zip(sequences, masked, strict=True)):
                sbo_arrays = (m.sbo_positions, m.sbo_left, m.sbo_right, m.sbo_rel_pos)
                sbo = zip(*(a.tolist() for a in sbo_arrays), strict=True)
                np.testing.assert_array_equal(m.sbo_labels, np.array(ids)[m.sbo_positions])
                out.append(
                    Sample(
                        index,
                        ids,
                        m.input_ids.tolist(),
                        m.mlm_positions.tolist(),
                        m.replacement.tolist(),
                        m.raw_span_lengths.tolist(),
                        list(sbo),
                    )
                )
        return out

    return run


@pytest.fixture(scope="module")
def reference(sequences, ref_vocab):
    """`reference(scheme, keys=KEYS, **params)`: the same sequences and keys through the reference."""

    @functools.cache
    def run(scheme: str, keys: tuple[tuple[int, int], ...] = tuple(KEYS), **params: float) -> list[Sample]:
        out = []
        for seed, epoch in keys:
            for index, ids in enumerate(sequences):
                rng = random.Random(f"{seed}/{epoch}/{index}")  # a pure function of (seed, epoch, index)
                m = ref.mask(ids, ref_vocab, rng, scheme=scheme, **params)
                out.append(Sample(index, ids, m.input_ids, m.positions, m.kinds, m.raw_lengths, m.sbo))
        return out

    return run


# --------------------------------------------------------------------------------------------------------
# Measurements, the same for both implementations


def word_ids(ids: list[int], token_strings: list[str], special: frozenset[int]) -> list[int]:
    """The word each position belongs to: a new word at every non-`##` piece or after a special token."""
    out, word, after_special = [], -1, True
    for tid in ids:
        if tid in special or after_special or not token_strings[tid].startswith("##"):
            word += 1
        after_special = tid in special
        out.append(word)
    return out


def observed_kind(ids: list[int], corrupted: list[int], s: int, e: int, mask_id: int) -> int:
    got, orig = corrupted[s : e + 1], ids[s : e + 1]
    if all(t == mask_id for t in got):
        return ref.MASK
    if mask_id in got:
        return MIXED
    # A random span that redraws its own tokens reads as kept (chance 1/2995 per token: negligible).
    return ref.KEEP if got == orig else ref.RANDOM


def realised_lengths(samples: list[Sample], words: list[list[int]] | None) -> Counter[int]:
    """Histogram of merged-span lengths in words (tokens where `words` is None)."""
    counts: Counter[int] = Counter()
    for smp in samples:
        unit = range(len(smp.ids)) if words is None else words[smp.index]
        for s, e in ref.runs(smp.positions):
            counts[unit[e] - unit[s] + 1] += 1
    return counts


def pooled_bins(a: Counter[int], b: Counter[int], min_count: int = 20) -> tuple[list[int], list[int]]:
    """Both histograms over the same bins, lengths merged from the top until each bin holds at least
    `min_count` spans of the two together (so that every expected count is large enough for chi-square)."""
    lengths = sorted(set(a) | set(b))
    bins_a, bins_b, acc_a, acc_b = [], [], 0, 0
    for length in reversed(lengths):
        acc_a, acc_b = acc_a + a[length], acc_b + b[length]
        if acc_a + acc_b >= min_count:
            bins_a.append(acc_a)
            bins_b.append(acc_b)
            acc_a = acc_b = 0
    if acc_a + acc_b:
        bins_a[-1] += acc_a
        bins_b[-1] += acc_b
    return bins_a[::-1], bins_b[::-1]


def chi2_homogeneity(a: list[int], b: list[int]) -> float:
    """Two-sample chi-square: do the counts `a` and `b` come from the same distribution?"""
    na, nb = sum(a), sum(b)
    stat = 0.0
    for x, y in zip(a, b, strict=True):
        pooled = (x + y) / (na + nb)
        if pooled:
            stat += (x - na * pooled) ** 2 / (na * pooled) + (y - nb * pooled) ** 2 / (nb * pooled)
    return stat


def chi2_fit(counts: list[int], probs: list[float]) -> float:
    n = sum(counts)
    return sum((c - n * q) ** 2 / (n * q) for c, q in zip(counts, probs, strict=True))


def total_variation(a: list[int], b: list[int]) -> float:
    return 0.5 * sum(abs(x / sum(a) - y / sum(b)) for x, y in zip(a, b, strict=True))


def two_proportion_z(k1: int, n1: int, k2: int, n2: int) -> float:
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return 0.0 if se == 0 else (k1 / n1 - k2 / n2) / se


# --------------------------------------------------------------------------------------------------------
# Span lengths


def test_drawn_span_lengths_follow_the_truncated_geometric(real, reference):
    """Every length drawn, the final (budget-cut) span included, by both, against Geo(0.2) on 1..10.

    Each length is drawn before and independently of the stopping rule, so the pooled lengths are an
    unbiased sample (Wald's identity). About 48,000 lengths a side; 9 degrees of freedom, p = 0.001.
    """
    probs = ref.truncated_geometric(0.2, 10)
    crit = chi2_critical(9)
    for name, samples in (("real", real("span")), ("reference", reference("span"))):
        counts = Counter(length for smp in samples for length in smp.raw_lengths)
        assert set(counts) <= set(range(1, 11)), name
        observed = [counts[k] for k in range(1, 11)]
        assert sum(observed) > 40_000
        stat = chi2_fit(observed, probs)
        assert stat < crit, (name, stat, crit)
        mean = sum(k * c for k, c in counts.items()) / sum(observed)
        # The paper's mean of 3.8 words (3.797 exactly); the standard deviation of a length is 2.55, so
        # the standard error is 2.55 / sqrt(48,000) = 0.012 and 0.05 is about 4 of them.
        expected = sum(k * q for k, q in enumerate(probs, start=1))
        assert mean == pytest.approx(expected, abs=0.05), (name, mean)


def test_realised_span_lengths_agree_with_the_reference(real, reference, words):
    """The merged spans as placed, measured in words from the masks, against the reference.

    This is what training sees: drawn lengths shortened by [SEP], [UNK] and the budget cut, lengthened
    by merges. Two-sample chi-square over 1, 2, ..., with the sparse long tail pooled (18 bins, so 17
    degrees of freedom, critical value 40.8 at p = 0.001); the total-variation distance is bounded
    too. The test has power: the reference with p = 0.3 (the reference code's default) or without the
    clip at 10 words fails the same criterion against the same real masks by far.
    """
    got = realised_lengths(real("span"), words)
    results = {}
    # The wrong ones on half the keys (for time): a smaller sample makes failing harder, not easier.
    half = tuple(KEYS[::2])
    for label, params in (
        ("spec", {}),
        ("p=0.3", {"p": 0.3, "keys": half}),
        ("no clip", {"max_len": 200, "keys": half}),
    ):
        bins_real, bins_ref = pooled_bins(got, realised_lengths(reference("span", **params), words))
        stat = chi2_homogeneity(bins_real, bins_ref)
        results[label] = (stat, chi2_critical(len(bins_real) - 1), total_variation(bins_real, bins_ref))
    stat, crit, tv = results["spec"]
    assert stat < crit, results
    # About 43,000 spans a side over 18 bins: sampling noise alone gives an expected TV of 0.008 (half the
    # sum over bins of sqrt(2/pi) * sqrt(2 q (1 - q) / 43,000)); p = 0.3 gives 0.12, no clip 0.08.
    assert tv < 0.02, results
    for wrong in ("p=0.3", "no clip"):
        stat, crit, tv = results[wrong]
        assert stat > 3 * crit and tv > 0.02, (wrong, results)


@pytest.mark.parametrize("scheme", ["word", "token"])
def test_realised_lengths_of_the_ablation_schemes(scheme, real, reference, words):
    """Single words (word) or single tokens (token) that happen to touch merge: the run lengths must
    be distributed alike (words for word, tokens for token; same chi-square criterion)."""
    unit = words if scheme == "word" else None
    bins_real, bins_ref = pooled_bins(
        realised_lengths(real(scheme), unit), realised_lengths(reference(scheme), unit)
    )
    assert len(bins_real) >= 3
    stat = chi2_homogeneity(bins_real, bins_ref)
    assert stat < chi2_critical(len(bins_real) - 1), (stat, bins_real, bins_ref)


# --------------------------------------------------------------------------------------------------------
# Budget and placement


@pytest.mark.parametrize("scheme", ["span", "word", "token"])
def test_budget_is_exact_on_every_sequence(scheme, real, reference, ref_vocab, sequences):
    """ceil(0.15 n) tokens, n = the non-special tokens, in every masked sequence of both."""
    n_of = [sum(t not in ref_vocab.special for t in ids) for ids in sequences]
    fractions = []
    for a, b in zip(real(scheme), reference(scheme), strict=True):
        n = n_of[a.index]
        assert len(a.positions) == len(b.positions) == ref.budget(n, 0.15)
        assert len(set(a.positions)) == len(a.positions)
        fractions.append(len(a.positions) / n)
    # The rounding up adds at most one token: the mean fraction lies in [0.15, 0.15 + 1/126].
    assert 0.15 <= float(np.mean(fractions)) < 0.15 + 1 / 126


def test_span_placement_agrees_with_the_reference(real, reference, words, tok):
    """Where the spans fall and how many are drawn, against the reference.

    * where merged spans start along the block, in tenths of its length: a start that is not uniform
      over the unmasked words (or spans that pile up at the edges) shows here (chi-square, 9 dof,
      p = 0.001). Span starts, not masked tokens: tokens come in clusters of ~4.7 (a span), so token
      counts are overdispersed and their chi-square runs several times its nominal value even between
      two runs of the same implementation (26-68 measured, against 5-11 for span starts);
    * spans drawn per sequence (about 10; standard error of the mean ~0.06 on 4,800 sequences): |z| < 3.29;
    * sequences whose last span is cut inside a word (the budget rule), two-proportion |z| < 3.29.
    """
    sep = tok.token_to_id("[SEP]")
    tenths: dict[str, list[int]] = {}
    drawn: dict[str, list[int]] = {}
    cut_inside: dict[str, int] = {}
    for name, samples in (("real", real("span")), ("reference", reference("span"))):
        counts = [0] * 10
        cuts = 0
        for smp in samples:
            body = smp.ids.index(sep) - 1  # the tokens between [CLS] and [SEP]
            for s, _ in ref.runs(smp.positions):
                counts[min(9, 10 * (s - 1) // body)] += 1
            w = words[smp.index]
            cuts += any(e + 1 < len(w) and w[e + 1] == w[e] for _, e in ref.runs(smp.positions))
        tenths[name], cut_inside[name] = counts, cuts
        drawn[name] = [len(smp.raw_lengths) for smp in samples]
    stat = chi2_homogeneity(tenths["real"], tenths["reference"])
    assert stat < chi2_critical(9), (stat, tenths)
    a, b = np.array(drawn["real"]), np.array(drawn["reference"])
    z = (a.mean() - b.mean()) / math.sqrt(a.var() / a.size + b.var() / b.size)
    assert abs(z) < Z_CRIT, (a.mean(), b.mean(), z)
    n = len(real("span"))
    assert cut_inside["real"] > 100  # the mid-word cut happens, so the comparison means something
    z = two_proportion_z(cut_inside["real"], n, cut_inside["reference"], n)
    assert abs(z) < Z_CRIT, (cut_inside, z)


# --------------------------------------------------------------------------------------------------------
# Replacement


def span_kinds(samples: list[Sample], mask_id: int) -> list[int]:
    """The replacement each merged span shows in the corrupted ids (and check it matches the declared
    kind, where the declaration is per merged span)."""
    kinds = []
    for smp in samples:
        spans = ref.runs(smp.positions)
        seen = [observed_kind(smp.ids, smp.corrupted, s, e, mask_id) for s, e in spans]
        if len(smp.kinds) == len(spans):
            assert all(
                o == d or (d, o) == (ref.RANDOM, ref.KEEP) for o, d in zip(seen, smp.kinds, strict=True)
            )
        kinds += seen
    return kinds


@pytest.mark.parametrize("scheme", ["span", "word"])
def test_replacement_is_80_10_10_per_span(scheme, real, reference, ref_vocab):
    """Each merged span is all [MASK], all random or all unchanged, never a mix; the three kinds come
    80/10/10 (chi-square fit, 2 dof, critical 13.8 at p = 0.001, on ~43,000 spans: the fractions are
    then within about ±0.007 of 0.8 and ±0.005 of 0.1), for both and alike between them."""
    crit = chi2_critical(2)
    counts = {}
    for name, samples in (("real", real(scheme)), ("reference", reference(scheme))):
        kinds = Counter(span_kinds(samples, ref_vocab.mask_id))
        assert kinds[MIXED] == 0, name
        counts[name] = [kinds[ref.MASK], kinds[ref.RANDOM], kinds[ref.KEEP]]
        assert sum(counts[name]) > 30_000
        stat = chi2_fit(counts[name], [0.8, 0.1, 0.1])
        assert stat < crit, (name, stat, counts[name])
        # Random replacements come from the non-special vocabulary.
        for smp in samples:
            assert all(smp.corrupted[p] not in ref_vocab.special - {ref_vocab.mask_id} for p in smp.positions)
    assert chi2_homogeneity(counts["real"], counts["reference"]) < crit, counts


def test_token_scheme_decides_per_token(real, reference, ref_vocab):
    """The token scheme (BERT) decides per token, so runs of adjacent targets can mix kinds: the check
    above that span-scheme spans never mix does detect per-token replacement. The share of mixed
    multi-token runs must agree between the two (two-proportion |z| < 3.29), and the per-token kinds
    come 80/10/10 (chi-square fit, 2 dof)."""
    mixed, runs_seen = {}, {}
    for name, samples in (("real", real("token")), ("reference", reference("token"))):
        tokens = Counter()
        mixed[name] = runs_seen[name] = 0
        for smp in samples:
            assert len(smp.kinds) == len(smp.positions)
            tokens.update(smp.kinds)
            for s, e in ref.runs(smp.positions):
                if e > s:
                    runs_seen[name] += 1
                    mixed[name] += observed_kind(smp.ids, smp.corrupted, s, e, ref_vocab.mask_id) == MIXED
        assert chi2_fit(
            [tokens[k] for k in (ref.MASK, ref.RANDOM, ref.KEEP)], [0.8, 0.1, 0.1]
        ) < chi2_critical(2)
    assert mixed["real"] > 500
    z = two_proportion_z(mixed["real"], runs_seen["real"], mixed["reference"], runs_seen["reference"])
    assert abs(z) < Z_CRIT, (mixed, runs_seen, z)


# --------------------------------------------------------------------------------------------------------
# SBO, special tokens, whole words


@pytest.mark.parametrize("scheme", ["span", "word", "token"])
def test_sbo_targets_equal_the_reference_on_the_real_masks(scheme, real, ref_vocab, tok):
    """The reference derives the SBO targets from the real mask alone; they must be exactly the real
    ones: every target's boundaries are the unmasked tokens just outside its merged span ([CLS] / [SEP]
    at the block edges), its relative position is its offset in the span, below 15."""
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    edges = beyond_15 = 0
    for smp in real(scheme):
        assert smp.sbo == ref.sbo_targets(smp.positions, 15)
        masked = set(smp.positions)
        for left, right in {(left, right) for _, left, right, _ in smp.sbo}:
            # Boundaries unmasked, everything between them masked: exactly one merged span.
            assert left not in masked and right not in masked
            assert all(i in masked for i in range(left + 1, right))
            assert smp.ids[left] == cls if left == 0 else smp.ids[left] not in (cls, sep)
            edges += (left == 0) + (smp.ids[right] == sep)
        assert all(left < pos < right and pos - left - 1 == rel < 15 for pos, left, right, rel in smp.sbo)
        beyond_15 += len(smp.positions) - len(smp.sbo)
    assert edges > 0  # spans at the block edges keep their SBO targets
    if scheme == "span":
        assert beyond_15 > 0  # merged spans longer than 15 tokens occur and lose their tail targets


@pytest.mark.parametrize("scheme", ["span", "word", "token"])
def test_specials_and_unk_are_never_masked(scheme, real, reference, ref_vocab, tok):
    unk, pad = tok.token_to_id("[UNK]"), tok.token_to_id("[PAD]")
    seqs = real(scheme)[:N_SEQUENCES]
    assert sum(s.ids[1:-1].count(unk) for s in seqs) > 20  # interior [UNK]s from the real text
    assert sum(s.ids.count(pad) for s in seqs) > 1000
    for name, samples in (("real", real(scheme)), ("reference", reference(scheme))):
        for smp in samples:
            assert not any(smp.ids[p] in ref_vocab.special for p in smp.positions), name
            # Outside the targets nothing changes (so no special token is ever corrupted either).
            changed = np.flatnonzero(np.array(smp.ids) != np.array(smp.corrupted))
            assert set(changed.tolist()) <= set(smp.positions), name


@pytest.mark.parametrize("scheme", ["span", "word", "token"])
def test_whole_words_only(scheme, real, reference, words):
    """span and word: every merged span starts at a word start and ends at a word end, but for at most
    one per sequence, the budget cut. token: targets inside words are common (a positive control)."""
    for name, samples in (("real", real(scheme)), ("reference", reference(scheme))):
        inside = 0
        for smp in samples:
            w = words[smp.index]
            spans = ref.runs(smp.positions)
            starts_inside = sum(w[s - 1] == w[s] for s, _ in spans)
            ends_inside = sum(w[e + 1] == w[e] for _, e in spans)
            if scheme != "token":
                assert starts_inside == 0 and ends_inside <= 1, name
            inside += starts_inside
        if scheme == "token":
            assert inside > 1000, name
