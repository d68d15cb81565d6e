"""Sentence boundaries found on token ids, vectorised over a whole batch of documents.

`shard` packs whole sentences into blocks, so tokenize stores where each sentence ends. Working on ids
rather than characters lets the tokenizer skip offset tracking, and costs a few numpy passes per batch
instead of a regular-expression scan per document.

A sentence ends after terminal punctuation (`.`, `!`, `?`, or runs of them), optionally followed by a
closing quote or bracket, when the next token can start a sentence (a capitalised word in a cased
vocabulary, any word in an uncased one, or an opening quote or bracket). A period after a known
abbreviation (`Mr`, `Dr`, `St`, months, …) or a single letter (initials, `U.S.`) does not end one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

_CLOSERS = frozenset({")", "]", "}", "”", "’", "»"})
_QUOTES = frozenset({'"', "'"})  # open or close: decided by context
_OPENERS = frozenset({"(", "[", "“", "‘", "«"})
ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "st",
        "jr",
        "sr",
        "prof",
        "gen",
        "col",
        "capt",
        "lt",
        "sgt",
        "rev",
        "hon",
        "gov",
        "sen",
        "rep",
        "vs",
        "etc",
        "no",
        "vol",
        "fig",
        "mt",
        "ft",
        "co",
        "inc",
        "ltd",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
    ]
)


@dataclass(frozen=True)
class SentenceTable:
    """Per-vocabulary-id flags used to find sentence ends."""

    terminal: np.ndarray  # . ! ? and runs of them
    period: np.ndarray  # terminal containing a period (abbreviations only matter there)
    closer: np.ndarray  # closing quotes and brackets, including the ambiguous " and '
    quote: np.ndarray  # " and '
    start: np.ndarray  # tokens that can begin a sentence
    abbrev: np.ndarray  # abbreviations and single letters


def sentence_table(vocab: Mapping[str, int], cased: bool) -> SentenceTable:
    size = max(vocab.values()) + 1
    flags = {name: np.zeros(size, dtype=bool) for name in SentenceTable.__dataclass_fields__}
    for tok, i in vocab.items():
        if not tok or tok.startswith("##"):
            continue
        if set(tok) <= {".", "!", "?"}:
            flags["terminal"][i] = True
            flags["period"][i] = "." in tok
        if tok in _CLOSERS or tok in _QUOTES:
            flags["closer"][i] = True
        if tok in _QUOTES:
            flags["quote"][i] = True
        first = tok[0]
        if tok in _OPENERS or (first.isupper() if cased else first.isalpha()):
            flags["start"][i] = True
        if tok.lower() in ABBREVIATIONS or (len(tok) == 1 and tok.isalpha()):
            flags["abbrev"][i] = True
    return SentenceTable(**flags)


def _shift(a: np.ndarray, k: int) -> np.ndarray:
    """a[i - k] at position i (k > 0 looks back, k < 0 looks ahead), False past the edges."""
    out = np.zeros_like(a)
    if k > 0:
        out[k:] = a[:-k]
    else:
        out[:k] = a[-k:]
    return out


def sentence_ends(
    ids: np.ndarray, lengths: np.ndarray, table: SentenceTable
) -> tuple[np.ndarray, np.ndarray]:
    """Sentence ends of documents whose ids are concatenated in `ids` with the given lengths.

    Returns (ends, counts): each document's sentence end offsets relative to its own start, the last one
    being its length, concatenated; and the number of sentences of each document (0 for an empty one).
    """
    ids = np.asarray(ids, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    doc_end = np.cumsum(lengths)
    doc_start = doc_end - lengths
    if len(ids) == 0:
        return np.zeros(0, np.uint32), np.zeros(len(lengths), np.int64)
    term, period, closer = table.terminal[ids], table.period[ids], table.closer[ids]
    quote, start, abbrev = table.quote[ids], table.start[ids], table.abbrev[ids]
    next_start, next_quote = _shift(start, -1), _shift(quote, -1)
    # A quote right after terminal punctuation closes the sentence; it is handled by the closer rule.
    after_term = term & ~(period & _shift(abbrev, 1)) & next_start & ~next_quote
    after_close = (
        closer & _shift(term, 1) & ~(_shift(period, 1) & _shift(abbrev, 2)) & (next_start | next_quote)
    )
    boundary = after_term | after_close
    nonempty = lengths > 0
    boundary[doc_end[nonempty] - 1] = False  # the document's own end is added below
    boundary[doc_start[nonempty]] &= ~after_close[
        doc_start[nonempty]
    ]  # no look-back into the previous document
    ends = np.concatenate([np.flatnonzero(boundary) + 1, doc_end[nonempty]])
    ends.sort(kind="stable")
    doc = np.searchsorted(doc_end, ends, side="left")
    return (ends - doc_start[doc]).astype(np.uint32), np.bincount(doc, minlength=len(lengths)).astype(
        np.int64
    )
