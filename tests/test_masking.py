"""Tests of span masking on real text with a real WordPiece vocabulary (docs/algorithm.md §2, §3).

The expectations are computed here independently of `spanbert_cli.masking`: the budget with exact
fractions, word boundaries from the token strings, merged spans and SBO boundaries from the mask itself,
the replacement kind of a span from the corrupted ids.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import CORPUS, INAUGURAL

from spanbert_cli.errors import DataError, UsageError
from spanbert_cli.masking import (
    REPLACE_KEEP,
    REPLACE_MASK,
    REPLACE_RANDOM,
    MaskedDataset,
    MaskedSequence,
    MaskingConfig,
    VocabInfo,
    collate,
    mask_batch,
    mask_sequence,
    span_length_distribution,
)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SEQ_LEN = 512
N_MASKED = 10_000  # sequences masked for the statistical tests
SEED = 20240917
# Chi-square critical value, 9 degrees of freedom, p = 0.001.
CHI2_CRIT_9DOF = 27.88


# --------------------------------------------------------------------------------------------------------
# Fixtures: a tokenizer trained on real text, real sequences, one big masking run


@pytest.fixture(scope="session")
def corpus_files() -> list[Path]:
    files = sorted(CORPUS.glob("state_union/*.txt")) + sorted(INAUGURAL.glob("*.txt"))
    assert len(files) == 65 + 55  # the State of the Union addresses, then the inaugural addresses
    return files


@pytest.fixture(scope="session")
def tokenizer(corpus_files):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=8000, special_tokens=SPECIAL_TOKENS)
    tok.train([str(f) for f in corpus_files], trainer)
    return tok


@pytest.fixture(scope="session")
def vocab(tokenizer) -> VocabInfo:
    return VocabInfo.from_tokenizer(tokenizer)


@pytest.fixture(scope="session")
def ids_of(tokenizer) -> dict[str, int]:
    return {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}


@pytest.fixture(scope="session")
def sequences(tokenizer, corpus_files, ids_of) -> list[np.ndarray]:
    """Blocks of one document each: full 512-token blocks, each document's short tail, and tiny ones."""
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in corpus_files]
    cls, sep = ids_of["[CLS]"], ids_of["[SEP]"]
    body = SEQ_LEN - 2
    out: list[np.ndarray] = []
    tails: list[np.ndarray] = []
    for enc in tokenizer.encode_batch(texts, add_special_tokens=False):
        ids = np.asarray(enc.ids, dtype=np.int64)
        for start in range(0, len(ids), body):
            chunk = ids[start : start + body]
            (out if len(chunk) == body else tails).append(np.concatenate([[cls], chunk, [sep]]))
    rng = np.random.default_rng(0)
    tiny = [np.concatenate([[cls], s[1 : 1 + int(rng.integers(1, 40))], [sep]]) for s in out[:60]]
    assert len(out) > 1000
    return out + tails + tiny


@pytest.fixture(scope="session")
def token_strings(tokenizer, vocab) -> np.ndarray:
    return np.array([tokenizer.id_to_token(i) for i in range(vocab.vocab_size)], dtype=object)


@pytest.fixture(scope="session")
def special_set(ids_of) -> np.ndarray:
    return np.array(sorted(ids_of.values()))


def run_masks(sequences, vocab, config: MaskingConfig, count: int, seed: int = SEED):
    """Mask `count` sequences (the real ones, reused under different indices so that masks differ).

    Goes through `mask_batch` for speed; `test_batches_equal_single_calls` ties it to `mask_sequence`.
    """
    pairs = []
    for first in range(0, count, 64):
        indices = list(range(first, min(first + 64, count)))
        seqs = [sequences[i % len(sequences)] for i in indices]
        masked = mask_batch(seqs, seed=seed, epoch=0, indices=indices, config=config, vocab=vocab)
        pairs += zip(seqs, masked, strict=True)
    return pairs


@pytest.fixture(scope="session")
def span_run(sequences, vocab):
    return run_masks(sequences, vocab, MaskingConfig(), N_MASKED)


# --------------------------------------------------------------------------------------------------------
# Independent helpers


def expected_budget(n: int, ratio: float) -> int:
    return math.ceil(Fraction(str(ratio)) * n)


def word_starts(ids: np.ndarray, token_strings: np.ndarray, special_set: np.ndarray) -> np.ndarray:
    """A word starts at a non-special token that is not a `##` piece, or that follows a special token."""
    special = np.isin(ids, special_set)
    cont = np.array([s.startswith("##") for s in token_strings[ids]], dtype=bool)
    prev_special = np.concatenate([[True], special[:-1]])
    return ~special & (~cont | prev_special)


def runs(positions: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of consecutive positions, as inclusive (start, end)."""
    if positions.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(positions) != 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [positions.size - 1]])
    return list(zip(positions[starts].tolist(), positions[ends].tolist(), strict=True))


def observed_kind(original: np.ndarray, corrupted: np.ndarray, mask_id: int) -> int:
    if np.all(corrupted == mask_id):
        return REPLACE_MASK
    if np.array_equal(corrupted, original):
        return REPLACE_KEEP
    return REPLACE_RANDOM


def truncated_geometric(p: float, max_len: int) -> np.ndarray:
    w = np.array([p * (1 - p) ** (k - 1) for k in range(1, max_len + 1)])
    return w / w.sum()


def chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def assert_same(a: MaskedSequence, b: MaskedSequence) -> None:
    for name in MaskedSequence.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


# --------------------------------------------------------------------------------------------------------
# The span scheme on 10,000 real sequences


def test_budget_is_exact_and_specials_never_masked(span_run, special_set, vocab):
    assert len(span_run) >= 10_000
    for ids, m in span_run:
        special = np.isin(ids, special_set)
        n = int((~special).sum())
        assert m.mlm_positions.size == expected_budget(n, 0.15)
        assert np.all(np.diff(m.mlm_positions) > 0)
        assert not special[m.mlm_positions].any()
        np.testing.assert_array_equal(m.mlm_labels, ids[m.mlm_positions])
        # Nothing outside the targets changes.
        untouched = np.ones(ids.size, dtype=bool)
        untouched[m.mlm_positions] = False
        np.testing.assert_array_equal(m.input_ids[untouched], ids[untouched])
        assert m.input_ids.dtype == np.int64 and m.input_ids.shape == ids.shape


def test_budget_float_edge_cases(vocab, sequences, special_set):
    """0.07 * 100 is 7.000000000000001 in floating point: the budget must still be 7."""
    base = sequences[0]
    cases = [
        (20, 0.15, 3),
        (100, 0.15, 15),
        (7, 0.5, 4),
        (1, 0.15, 1),
        (3, 0.1, 1),
        (100, 0.07, 7),
        (50, 0.14, 7),
        (25, 0.28, 7),
        (300, 0.17, 51),
        (150, 0.34, 51),
    ]
    for n, ratio, want in cases:
        ids = np.concatenate([base[: n + 1], [base[-1]]])
        assert int((~np.isin(ids, special_set)).sum()) == n
        m = mask_sequence(ids, seed=1, epoch=0, index=0, config=MaskingConfig(mask_ratio=ratio), vocab=vocab)
        assert m.mlm_positions.size == want == expected_budget(n, ratio)


def test_span_lengths_follow_truncated_geometric(span_run):
    """Chi-square of the drawn span lengths against Geo(0.2) truncated to 1..10.

    All drawn spans are pooled, the final (budget-cut) one included: each length is drawn independently
    of the stopping rule, so the pooled counts are unbiased (Wald's identity). Leaving out the last span
    would bias them (the span that crosses the budget tends to be long): on 10,000 sequences that bias
    alone gives a chi-square near 200.
    """
    counts = np.zeros(10)
    for _, m in span_run:
        assert m.raw_span_lengths.min() >= 1 and m.raw_span_lengths.max() <= 10
        counts += np.bincount(m.raw_span_lengths - 1, minlength=10)
    probs = truncated_geometric(0.2, 10)
    assert counts.sum() > 100_000
    assert chi_square(counts, probs) < CHI2_CRIT_9DOF
    # The test has power: a neighbouring distribution is rejected by far.
    assert chi_square(counts, truncated_geometric(0.22, 10)) > 10 * CHI2_CRIT_9DOF
    mean = float((np.arange(1, 11) * counts).sum() / counts.sum())
    assert mean == pytest.approx(3.8, abs=0.05)  # the paper's mean span length


def test_span_length_distribution_matches_spec():
    probs = span_length_distribution(MaskingConfig())
    np.testing.assert_allclose(probs, truncated_geometric(0.2, 10))
    assert float((np.arange(1, 11) * probs).sum()) == pytest.approx(3.8, abs=0.01)
    np.testing.assert_allclose(
        span_length_distribution(MaskingConfig(geometric_p=0.4, max_span_len=5)), truncated_geometric(0.4, 5)
    )
    np.testing.assert_array_equal(span_length_distribution(MaskingConfig(span_len=4)), [0, 0, 0, 1])
    np.testing.assert_array_equal(span_length_distribution(MaskingConfig(scheme="word")), [1])
    np.testing.assert_array_equal(span_length_distribution(MaskingConfig(scheme="token")), [1])


def test_replacement_is_80_10_10_per_span(span_run, vocab, special_set):
    kinds = []
    random_tokens = []
    for ids, m in span_run:
        merged = runs(m.mlm_positions)
        assert m.spans.tolist() == [list(r) for r in merged]
        assert m.replacement.shape == (len(merged),) and m.replacement.dtype == np.int8
        for (s, e), declared in zip(merged, m.replacement.tolist(), strict=True):
            kind = observed_kind(ids[s : e + 1], m.input_ids[s : e + 1], vocab.mask_id)
            # A random span may, by chance, redraw its own original tokens: then it reads as "keep".
            assert kind == declared or (declared == REPLACE_RANDOM and kind == REPLACE_KEEP)
            kinds.append(declared)
            if declared == REPLACE_RANDOM:
                random_tokens.append(m.input_ids[s : e + 1])
    frac = np.bincount(np.array(kinds), minlength=3) / len(kinds)
    assert len(kinds) > 100_000
    assert abs(frac[REPLACE_MASK] - 0.8) < 0.015
    assert abs(frac[REPLACE_RANDOM] - 0.1) < 0.015
    assert abs(frac[REPLACE_KEEP] - 0.1) < 0.015
    # Random tokens: never special, spread uniformly over the non-special vocabulary.
    drawn = np.concatenate(random_tokens)
    assert not np.isin(drawn, special_set).any()
    non_special = np.setdiff1d(np.arange(vocab.vocab_size), special_set)
    assert abs(drawn.mean() - non_special.mean()) < 0.02 * non_special.mean()
    assert np.unique(drawn).size > 0.9 * non_special.size


def test_spans_are_whole_words_except_the_budget_cut(span_run, token_strings, special_set):
    cut_inside_word = 0
    for ids, m in span_run:
        starts = word_starts(ids, token_strings, special_set)
        boundary_after = np.concatenate([starts[1:] | np.isin(ids[1:], special_set), [True]])
        bad_ends = 0
        for s, e in m.spans.tolist():
            assert starts[s], "a span must start at a word start"
            bad_ends += not boundary_after[e]
        assert bad_ends <= 1, "only the budget cut may end inside a word"
        cut_inside_word += bad_ends
    assert cut_inside_word > 100  # the cut does happen, so the check above is exercised


def test_sbo_targets_and_boundaries(span_run, special_set, ids_of):
    edge_left = edge_right = 0
    for ids, m in span_run:
        targets = set(m.mlm_positions.tolist())
        expected = []
        for s, e in runs(m.mlm_positions):
            expected += [(p, s - 1, e + 1, p - s) for p in range(s, min(e + 1, s + 15))]
        got = list(
            zip(
                m.sbo_positions.tolist(),
                m.sbo_left.tolist(),
                m.sbo_right.tolist(),
                m.sbo_rel_pos.tolist(),
                strict=True,
            )
        )
        assert got == expected
        np.testing.assert_array_equal(m.sbo_labels, ids[m.sbo_positions])
        # Boundaries sit just outside the span: never targets themselves, inside the sequence.
        assert not targets & set(m.sbo_left.tolist()) and not targets & set(m.sbo_right.tolist())
        assert m.sbo_left.min() >= 0 and m.sbo_right.max() <= ids.size - 1
        edge_left += int((m.sbo_left == 0).sum())
        edge_right += int((m.sbo_right == ids.size - 1).sum())
        assert np.all(ids[m.sbo_left[m.sbo_left == 0]] == ids_of["[CLS]"])
        assert np.all(ids[m.sbo_right[m.sbo_right == ids.size - 1]] == ids_of["[SEP]"])
    assert edge_left > 0 and edge_right > 0  # spans at the block edges keep SBO targets


def test_max_sbo_positions_limits_targets(sequences, vocab):
    cfg = MaskingConfig(span_len=12, max_span_len=12)
    saw_long = False
    for index in range(200):
        m = mask_sequence(
            sequences[index], seed=3, epoch=0, index=index, config=cfg, vocab=vocab, max_sbo_positions=4
        )
        assert m.sbo_rel_pos.size == 0 or m.sbo_rel_pos.max() < 4
        lengths = m.spans[:, 1] - m.spans[:, 0] + 1
        assert m.sbo_positions.size == int(np.minimum(lengths, 4).sum())
        saw_long |= bool((lengths > 4).any())
    assert saw_long
    m = mask_sequence(sequences[0], seed=3, epoch=0, index=0, config=cfg, vocab=vocab, max_sbo_positions=0)
    assert m.sbo_positions.size == 0 and m.mlm_positions.size > 0


# --------------------------------------------------------------------------------------------------------
# Other parameters and schemes


def test_fixed_span_len_gives_four_word_spans(sequences, vocab, token_strings, special_set):
    cfg = MaskingConfig(span_len=4)
    exactly_four = total = 0
    for ids, m in run_masks(sequences, vocab, cfg, 2000):
        assert np.all(m.raw_span_lengths == 4)
        starts = word_starts(ids, token_strings, special_set)
        word_id = np.cumsum(starts)
        short_inside = 0
        for s, e in m.spans.tolist():
            words = int(word_id[e] - word_id[s] + 1)
            # Overlapping or touching 4-word spans merge into longer ones; fewer than 4 words only where
            # [SEP] ends a span or where the budget cuts the last one.
            if words < 4 and not np.isin(ids[e + 1], special_set):
                short_inside += 1
            total += 1
            exactly_four += words == 4
        assert short_inside <= 1
    assert exactly_four / total > 0.6


def test_word_scheme_masks_single_whole_words(sequences, vocab, token_strings, special_set):
    cfg = MaskingConfig(scheme="word")
    span_words = []
    for ids, m in run_masks(sequences, vocab, cfg, 2000):
        special = np.isin(ids, special_set)
        assert m.mlm_positions.size == expected_budget(int((~special).sum()), 0.15)
        assert np.all(m.raw_span_lengths == 1)
        starts = word_starts(ids, token_strings, special_set)
        word_id = np.cumsum(starts)
        boundary_after = np.concatenate([starts[1:] | special[1:], [True]])
        assert all(starts[s] for s, _ in m.spans.tolist())
        assert sum(not boundary_after[e] for _, e in m.spans.tolist()) <= 1
        assert m.replacement.shape == (m.spans.shape[0],)
        span_words += [int(word_id[e] - word_id[s] + 1) for s, e in m.spans.tolist()]
    # Single words rarely touch: most merged spans are one word long (15 % of words are chosen).
    assert np.mean(np.array(span_words) == 1) > 0.7


def test_token_scheme_is_bert_masking(sequences, vocab, token_strings, special_set):
    cfg = MaskingConfig(scheme="token")
    kinds = []
    starts_inside_word = 0
    for ids, m in run_masks(sequences, vocab, cfg, 2000):
        special = np.isin(ids, special_set)
        assert m.mlm_positions.size == expected_budget(int((~special).sum()), 0.15)
        assert not special[m.mlm_positions].any()
        # The replacement is decided per token: one single-token "span" per target.
        np.testing.assert_array_equal(m.spans, np.stack([m.mlm_positions, m.mlm_positions], axis=1))
        assert m.replacement.shape == m.mlm_positions.shape
        for p, declared in zip(m.mlm_positions.tolist(), m.replacement.tolist(), strict=True):
            kind = observed_kind(ids[p : p + 1], m.input_ids[p : p + 1], vocab.mask_id)
            assert kind == declared or (declared == REPLACE_RANDOM and kind == REPLACE_KEEP)
            kinds.append(declared)
        # SBO still uses the merged runs of adjacent targets.
        expected = [(p, s - 1, e + 1) for s, e in runs(m.mlm_positions) for p in range(s, min(e + 1, s + 15))]
        assert (
            list(zip(m.sbo_positions.tolist(), m.sbo_left.tolist(), m.sbo_right.tolist(), strict=True))
            == expected
        )
        starts_inside_word += int((~word_starts(ids, token_strings, special_set)[m.mlm_positions]).sum())
    frac = np.bincount(np.array(kinds), minlength=3) / len(kinds)
    np.testing.assert_allclose(frac, [0.8, 0.1, 0.1], atol=0.015)
    assert starts_inside_word > 1000  # subword units: `##` pieces are masked on their own


def test_schemes_differ_in_span_length(sequences, vocab):
    mean_len = {}
    for scheme in ("span", "word", "token"):
        lengths = []
        for _, m in run_masks(sequences[:300], vocab, MaskingConfig(scheme=scheme), 300):
            lengths.append(m.mlm_positions.size / max(1, len(runs(m.mlm_positions))))
        mean_len[scheme] = float(np.mean(lengths))
    assert mean_len["span"] > 3.0 > mean_len["word"] > mean_len["token"]


@pytest.mark.parametrize("scheme", ["span", "word", "token"])
@pytest.mark.parametrize("ratio", [0.15, 0.5])
def test_tiny_sequences_stop_gracefully(scheme, ratio, vocab, sequences, ids_of, special_set):
    cls, sep = ids_of["[CLS]"], ids_of["[SEP]"]
    cfg = MaskingConfig(scheme=scheme, mask_ratio=ratio)
    empty = mask_sequence(np.array([cls, sep]), seed=0, epoch=0, index=0, config=cfg, vocab=vocab)
    assert empty.mlm_positions.size == 0 and empty.spans.shape == (0, 2) and empty.sbo_positions.size == 0
    np.testing.assert_array_equal(empty.input_ids, [cls, sep])
    for length in range(1, 12):
        ids = np.concatenate([[cls], sequences[5][1 : 1 + length], [sep]])
        for index in range(30):
            m = mask_sequence(ids, seed=1, epoch=0, index=index, config=cfg, vocab=vocab)
            assert m.mlm_positions.size == expected_budget(length, ratio)
            assert m.sbo_left.min() >= 0 and m.sbo_right.max() <= length + 1


def test_continuation_piece_after_cls_and_interior_specials(vocab, tokenizer, ids_of, sequences):
    cls, sep, unk, pad = ids_of["[CLS]"], ids_of["[SEP]"], ids_of["[UNK]"], ids_of["[PAD]"]
    piece = tokenizer.token_to_id(next(t for t in tokenizer.get_vocab() if t.startswith("##") and len(t) > 3))
    body = sequences[0][1:40]
    # A `##` piece right after [CLS] starts a word; an interior [UNK] and trailing [PAD]s are never masked.
    ids = np.concatenate([[cls, piece], body[:15], [unk], body[15:], [sep, pad, pad]])
    n = ids.size - 5
    first_masked = 0
    for index in range(300):
        m = mask_sequence(ids, seed=2, epoch=0, index=index, config=MaskingConfig(), vocab=vocab)
        assert m.mlm_positions.size == expected_budget(n, 0.15)
        assert not np.isin(m.mlm_positions, [0, 17, ids.size - 3, ids.size - 2, ids.size - 1]).any()
        first_masked += int(m.mlm_positions[0] == 1)
        if m.mlm_positions[0] == 1:
            assert m.sbo_left[0] == 0
    assert first_masked > 0


def test_spans_stop_at_an_interior_special_token(vocab, tokenizer, ids_of):
    """[CLS] x [UNK] y*40 [SEP], 10-word spans, budget 7: a span starting at x covers x alone.

    Were spans to jump over [UNK], a span from x would take x and six y's and spend the whole budget
    by itself; stopping at [UNK] leaves it one token, so at least one more span must be drawn.
    """
    cls, sep, unk = ids_of["[CLS]"], ids_of["[SEP]"], ids_of["[UNK]"]
    x, y = tokenizer.token_to_id("people"), tokenizer.token_to_id("the")
    ids = np.array([cls, x, unk] + [y] * 40 + [sep])
    cfg = MaskingConfig(span_len=10)
    x_masked = 0
    for index in range(2000):
        m = mask_sequence(ids, seed=4, epoch=0, index=index, config=cfg, vocab=vocab)
        assert m.mlm_positions.size == 7
        if m.mlm_positions[0] == 1:
            x_masked += 1
            assert m.spans[0].tolist() == [1, 1]
            assert m.raw_span_lengths.size >= 2
    assert x_masked > 50


def test_added_special_tokens_are_never_masked(tokenizer, sequences):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer.to_str())
    tok.add_special_tokens(["[EXTRA]"])
    extra = tok.token_to_id("[EXTRA]")
    info = VocabInfo.from_tokenizer(tok)
    assert extra in info.special_ids and info.vocab_size == tokenizer.get_vocab_size() + 1
    for name in ("cls", "sep", "pad", "mask"):
        assert getattr(info, f"{name}_id") == tok.token_to_id(f"[{name.upper()}]")
    assert all(
        info.is_continuation[tok.token_to_id(t)] == t.startswith("##") for t in list(tok.get_vocab())[:500]
    )
    seq = sequences[1].copy()
    seq[10:500:7] = extra
    for index in range(50):
        m = mask_sequence(seq, seed=0, epoch=0, index=index, config=MaskingConfig(), vocab=info)
        assert not np.isin(m.input_ids[m.mlm_positions], [extra]).any()
        assert not np.isin(m.mlm_positions, np.flatnonzero(seq == extra)).any()


# --------------------------------------------------------------------------------------------------------
# Determinism and the training data path


def test_masks_are_a_pure_function_of_seed_epoch_index(sequences, vocab):
    cfg = MaskingConfig()
    ids = sequences[3]
    ref = mask_sequence(ids, seed=11, epoch=2, index=7, config=cfg, vocab=vocab)
    np.random.seed(123)  # the global RNG must play no part
    np.random.random(10)
    assert_same(ref, mask_sequence(ids.copy(), seed=11, epoch=2, index=7, config=cfg, vocab=vocab))
    assert_same(ref, mask_sequence(ids.astype(np.int32), seed=11, epoch=2, index=7, config=cfg, vocab=vocab))
    for change in ({"index": 8}, {"epoch": 3}, {"seed": 12}):
        args = {"seed": 11, "epoch": 2, "index": 7, **change}
        other = mask_sequence(ids, config=cfg, vocab=vocab, **args)
        assert not np.array_equal(other.mlm_positions, ref.mlm_positions), change
    batch = mask_batch(sequences[:20], seed=11, epoch=2, indices=range(100, 120), config=cfg, vocab=vocab)
    for i, got in enumerate(batch):
        assert_same(
            got, mask_sequence(sequences[i], seed=11, epoch=2, index=100 + i, config=cfg, vocab=vocab)
        )


@pytest.mark.parametrize("scheme", ["span", "word", "token"])
def test_batches_equal_single_calls(scheme, sequences, vocab, ids_of):
    """A sequence's masks do not depend on the batch it is masked in (composition, order, neighbours)."""
    cls, sep, unk, pad = ids_of["[CLS]"], ids_of["[SEP]"], ids_of["[UNK]"], ids_of["[PAD]"]
    odd = [
        np.array([cls, sep]),
        np.array([cls, sep, pad, pad]),
        np.zeros(0, dtype=np.int64),
        np.concatenate([[cls], sequences[2][1:30], [unk], sequences[2][30:80], [unk, sep, pad]]),
        sequences[-1],
    ]
    seqs = [*sequences[:12], *odd, *sequences[-20:-10]]
    indices = [1000 + 7 * i for i in range(len(seqs))]
    cfg = MaskingConfig(scheme=scheme)
    singles = [
        mask_sequence(s, seed=9, epoch=4, index=i, config=cfg, vocab=vocab)
        for s, i in zip(seqs, indices, strict=True)
    ]
    order = np.random.default_rng(0).permutation(len(seqs))
    for chunk in (len(seqs), 5, 1):
        for first in range(0, len(seqs), chunk):
            part = order[first : first + chunk].tolist()
            got = mask_batch(
                [seqs[j] for j in part],
                seed=9,
                epoch=4,
                indices=[indices[j] for j in part],
                config=cfg,
                vocab=vocab,
            )
            for j, m in zip(part, got, strict=True):
                assert_same(m, singles[j])
    assert singles[len(sequences[:12])].mlm_positions.size == 0
    assert mask_batch([], seed=0, epoch=0, indices=[], config=cfg, vocab=vocab) == []


class ListReader:
    def __init__(self, seqs: list[np.ndarray]) -> None:
        self.seqs = seqs

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.seqs[i]


@pytest.mark.parametrize(("workers", "padded"), [(0, False), (1, False), (2, False), (0, True), (2, True)])
def test_dataloader_batches_equal_mask_sequence(workers, padded, sequences, vocab):
    import torch

    # Mixed lengths so that dynamic padding (or the packed layout) and the flattened positions are exercised.
    seqs = [sequences[i] for i in range(8)] + sequences[-12:] + [s[:50].copy() for s in sequences[8:12]]
    for s in seqs[-4:]:
        s[-1] = vocab.sep_id
    cfg = MaskingConfig()
    dataset = MaskedDataset(ListReader(seqs), seed=5, config=cfg, vocab=vocab, epoch=1)
    assert len(dataset) == len(seqs)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=5,
        shuffle=True,
        num_workers=workers,
        collate_fn=functools.partial(collate, pad_id=vocab.pad_id, padded=padded),
        generator=torch.Generator().manual_seed(0),
    )
    seen = []
    for batch in loader:
        indices = batch["index"].tolist()
        lengths = [seqs[i].size for i in indices]
        width = max(lengths)
        expected = [
            mask_sequence(seqs[i], seed=5, epoch=1, index=i, config=cfg, vocab=vocab) for i in indices
        ]
        if padded:
            assert batch["input_ids"].shape == (len(indices), width)
            offsets = [row * width for row in range(len(indices))]
            for row, (length, m) in enumerate(zip(lengths, expected, strict=True)):
                np.testing.assert_array_equal(batch["input_ids"][row, :length].numpy(), m.input_ids)
                assert torch.all(batch["input_ids"][row, length:] == vocab.pad_id)
                assert batch["attention_mask"][row].sum().item() == length
                assert batch["attention_mask"].dtype == torch.bool
        else:  # the real tokens end to end, nothing else
            assert "attention_mask" not in batch
            offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist()
            np.testing.assert_array_equal(
                batch["input_ids"].numpy(), np.concatenate([m.input_ids for m in expected])
            )
            assert batch["cu_seqlens"].dtype == torch.int32
            assert batch["cu_seqlens"].tolist() == [*offsets, sum(lengths)]
            assert int(batch["max_seqlen"]) == width
            np.testing.assert_array_equal(
                batch["position_ids"].numpy(), np.concatenate([np.arange(n) for n in lengths])
            )
            np.testing.assert_array_equal(
                batch["padded_index"].numpy(),
                np.concatenate([row * width + np.arange(n) for row, n in enumerate(lengths)]),
            )
        for key in ("mlm_positions", "sbo_positions", "sbo_left", "sbo_right"):
            want = np.concatenate([getattr(m, key) + off for off, m in zip(offsets, expected, strict=True)])
            np.testing.assert_array_equal(batch[key].numpy(), want, err_msg=key)
        for key in ("mlm_labels", "sbo_rel_pos", "sbo_labels"):
            np.testing.assert_array_equal(
                batch[key].numpy(), np.concatenate([getattr(m, key) for m in expected])
            )
        # The flattened positions gather the labels from the uncorrupted batch.
        flat_orig = np.full(offsets[-1] + width, -1)
        for off, i in zip(offsets, indices, strict=True):
            flat_orig[off : off + seqs[i].size] = seqs[i]
        np.testing.assert_array_equal(flat_orig[batch["mlm_positions"].numpy()], batch["mlm_labels"].numpy())
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(len(seqs)))

    before = dataset[3]
    dataset.set_epoch(2)
    after = dataset[3]
    assert not np.array_equal(before["mlm_positions"], after["mlm_positions"])
    np.testing.assert_array_equal(
        after["input_ids"],
        mask_sequence(seqs[3], seed=5, epoch=2, index=3, config=cfg, vocab=vocab).input_ids,
    )


# --------------------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"geometric_p": 1.5}, "--geometric-p"),
        ({"geometric_p": 0.0}, "--geometric-p"),
        ({"geometric_p": -0.2}, "--geometric-p"),
        ({"geometric_p": float("nan")}, "--geometric-p"),
        ({"mask_ratio": 0.0}, "--mask-ratio"),
        ({"mask_ratio": 0.51}, "--mask-ratio"),
        ({"mask_ratio": -0.1}, "--mask-ratio"),
        ({"max_span_len": 0}, "--max-span-len"),
        ({"max_span_len": -3}, "--max-span-len"),
        ({"span_len": 0}, "--span-len"),
        ({"span_len": -1}, "--span-len"),
        ({"scheme": "ner"}, "--scheme"),
        ({"scheme": "word", "span_len": 3}, "--span-len"),
    ],
)
def test_invalid_config_is_a_usage_error(kwargs, flag, sequences, vocab):
    cfg = MaskingConfig(**kwargs)
    with pytest.raises(UsageError) as info:
        cfg.validate()
    message = str(info.value)
    assert message.startswith(flag) and "\n" not in message
    assert info.value.exit_code == 2
    with pytest.raises(UsageError):
        mask_sequence(sequences[0], seed=0, epoch=0, index=0, config=cfg, vocab=vocab)
    with pytest.raises(UsageError):
        MaskedDataset(ListReader(sequences[:2]), seed=0, config=cfg, vocab=vocab)
    with pytest.raises(UsageError):
        span_length_distribution(cfg)


def test_validation_reports_every_problem_at_once():
    with pytest.raises(UsageError) as info:
        MaskingConfig(mask_ratio=0.9, geometric_p=1.5, max_span_len=0, span_len=0).validate()
    message = str(info.value)
    assert message == (
        "--mask-ratio must be in (0, 0.5], got 0.9; --geometric-p must be in (0, 1], got 1.5; "
        "--max-span-len must be an integer >= 1, got 0; --span-len must be an integer >= 1, got 0"
    )


def test_boundary_values_are_valid(sequences, vocab):
    for cfg in (
        MaskingConfig(mask_ratio=0.5),
        MaskingConfig(geometric_p=1.0),
        MaskingConfig(max_span_len=1),
        MaskingConfig(span_len=1),
    ):
        cfg.validate()
        m = mask_sequence(sequences[0], seed=0, epoch=0, index=0, config=cfg, vocab=vocab)
        assert m.mlm_positions.size == expected_budget(510, cfg.mask_ratio)
    # p = 1 means every span is one word long.
    assert np.all(
        mask_sequence(
            sequences[0], seed=0, epoch=0, index=0, config=MaskingConfig(geometric_p=1.0), vocab=vocab
        ).raw_span_lengths
        == 1
    )
    assert MaskingConfig().to_dict() == {
        "scheme": "span",
        "mask_ratio": 0.15,
        "geometric_p": 0.2,
        "max_span_len": 10,
        "span_len": None,
    }


def test_bad_sequences_are_data_errors(sequences, vocab):
    cfg = MaskingConfig()
    with pytest.raises(DataError, match="special tokens"):
        mask_sequence(sequences[0][1:], seed=0, epoch=0, index=0, config=cfg, vocab=vocab)
    bad = sequences[0].copy()
    bad[5] = vocab.vocab_size
    with pytest.raises(DataError, match="outside the vocabulary"):
        mask_sequence(bad, seed=0, epoch=0, index=0, config=cfg, vocab=vocab)
    with pytest.raises(UsageError, match="--seed"):
        mask_sequence(sequences[0], seed=-1, epoch=0, index=0, config=cfg, vocab=vocab)
    with pytest.raises(UsageError, match="--seed"):
        mask_sequence(sequences[0], seed=0, epoch=0, index=-3, config=cfg, vocab=vocab)
    with pytest.raises(DataError, match="integers"):
        mask_sequence(sequences[0].astype(float), seed=0, epoch=0, index=0, config=cfg, vocab=vocab)
    with pytest.raises(UsageError, match="max_sbo_positions"):
        mask_sequence(sequences[0], seed=0, epoch=0, index=0, config=cfg, vocab=vocab, max_sbo_positions=-1)
