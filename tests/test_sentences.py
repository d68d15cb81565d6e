"""Sentence boundaries on token ids (a pure function), checked on hand-made and real text."""

from __future__ import annotations

import numpy as np
from tokenizers import Tokenizer

from spanbert_cli.text.sentences import sentence_ends, sentence_table


def split(tok: Tokenizer, texts: list[str], cased: bool = True) -> list[list[str]]:
    encs = [tok.encode(t, add_special_tokens=False).ids for t in texts]
    ids = np.array([i for e in encs for i in e], dtype=np.uint32)
    lengths = np.array([len(e) for e in encs])
    ends, counts = sentence_ends(ids, lengths, sentence_table(tok.get_vocab(), cased))
    out, k = [], 0
    for e, n in zip(encs, counts, strict=True):
        start, sents = 0, []
        for end in ends[k : k + n]:
            sents.append(tok.decode(e[start:end]))
            start = int(end)
        out.append(sents)
        k += n
    return out


def test_rules_on_constructed_text(tokenizer_json) -> None:
    tok = Tokenizer.from_file(str(tokenizer_json))
    got = split(
        tok,
        [
            'Mr. Smith went to Washington. He said "Hi!" Then J. Adams spoke. It cost 3.5 dollars.',
            "No end mark here",
            "",
            "Is it? Yes! (Really.) Fine.",
        ],
    )
    assert got[0] == [
        "Mr. Smith went to Washington.",
        'He said " Hi! "',
        "Then J. Adams spoke.",
        "It cost 3. 5 dollars.",
    ]
    assert got[1] == ["No end mark here"]
    assert got[2] == []
    assert got[3] == ["Is it?", "Yes!", "( Really. )", "Fine."]


def test_uncased_vocabulary_splits_before_lowercase_words(tokenizer_json) -> None:
    tok = Tokenizer.from_file(str(tokenizer_json))
    text = "we met. then we left. j. smith stayed."
    assert split(tok, [text], cased=False)[0] == ["we met.", "then we left.", "j. smith stayed."]
