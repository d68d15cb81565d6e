"""Random replacement never draws a token no text contains: BERT vocabularies' `[unusedN]` placeholders
(99 in the cased vocabulary, 994 in the uncased one) are left out like the special tokens. Checked on a
BERT-cased-style vocab.txt (specials and `[unused1]`..`[unused99]` where BERT has them, then the pieces of
a WordPiece vocabulary trained on real speeches), through tokenize, shard and mask-preview."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import CORPUS, INAUGURAL

from spanbert_cli.masking import MaskedDataset, MaskingConfig, VocabInfo
from spanbert_cli.shards.pack import ShardConfig, shard
from spanbert_cli.shards.reader import ShardReader
from spanbert_cli.text.tokenize import TokenizeConfig, tokenize
from spanbert_cli.text.wordpiece import load_tokenizer

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
N_UNUSED = 99  # BERT-cased


def bert_cased_layout(pieces: list[str]) -> list[str]:
    """BERT-cased's vocab.txt layout: [PAD], [unused1]..[unused99], [UNK] [CLS] [SEP] [MASK], pieces."""
    return ["[PAD]", *(f"[unused{i}]" for i in range(1, N_UNUSED + 1)), *SPECIALS[1:], *pieces]


@pytest.fixture(scope="module")
def bert_vocab(tmp_path_factory: pytest.TempPathFactory, tokenizer_json: Path) -> Path:
    tok = load_tokenizer(tokenizer_json)
    vocab = tok.get_vocab(with_added_tokens=True)
    pieces = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if t not in SPECIALS]
    assert not any(t.startswith("[unused") for t in pieces)  # ours have none
    path = tmp_path_factory.mktemp("bert-vocab") / "vocab.txt"
    path.write_text("".join(t + "\n" for t in bert_cased_layout(pieces)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bert_shards(tmp_path_factory: pytest.TempPathFactory, bert_vocab: Path) -> Path:
    """Real speeches tokenized with the BERT-style vocab.txt, in 128-token sequences."""
    names = [INAUGURAL / "2001-Bush.txt", INAUGURAL / "2005-Bush.txt"]
    names += [CORPUS / "state_union" / "2005-GWBush.txt", CORPUS / "state_union" / "2006-GWBush.txt"]
    files = [str(f) for f in names]
    root = tmp_path_factory.mktemp("bert-shards")
    tok = tokenize(files, TokenizeConfig(tokenizer=str(bert_vocab), workers=1), out=root / "tok")
    result = shard([str(tok.artifact.path)], ShardConfig(max_seq_len=128, valid_docs=1), out=root / "shards")
    return result.artifact.path


def test_vocab_info_finds_the_unused_placeholders(bert_vocab: Path, tokenizer_json: Path) -> None:
    tok = load_tokenizer(bert_vocab)
    info = VocabInfo.from_tokenizer(tok)
    assert info.unused_ids == tuple(range(1, N_UNUSED + 1))
    assert [tok.id_to_token(i) for i in (1, 99, 100, 103)] == ["[unused1]", "[unused99]", "[UNK]", "[MASK]"]
    drawable = set(info._random_ids.tolist())
    assert drawable.isdisjoint(info.unused_ids) and drawable.isdisjoint(info.special_ids)
    assert len(drawable) == info.vocab_size - N_UNUSED - len(SPECIALS)
    # Our own tokenizers have no placeholders: every non-special token stays drawable, as before.
    ours = VocabInfo.from_tokenizer(load_tokenizer(tokenizer_json))
    assert ours.unused_ids == ()
    assert ours._random_ids.tolist() == sorted(set(range(ours.vocab_size)) - set(ours.special_ids))
    # A literal "[unused5]" in a text is split by the pre-tokenizer: text never yields a placeholder id.
    ids = tok.encode("He typed [unused5] and [unused99] into the form.").ids
    assert not set(ids) & set(info.unused_ids)


def test_random_replacement_never_draws_unused(cli, bert_shards: Path) -> None:
    """mask-preview over every train sequence: each random span holds only drawable tokens, and the
    preview is what training masks (the same code, the same vocabulary)."""
    reader = ShardReader(bert_shards)
    vocab = VocabInfo.from_tokenizer(reader.tokenizer)
    assert len(vocab.unused_ids) == N_UNUSED
    n = len(reader)
    assert n >= 250
    corpus_ids = np.concatenate([np.asarray(reader[i]) for i in range(n)])
    assert not np.isin(corpus_ids, vocab.unused_ids).any()  # what a corpus can contain

    r = cli("mask-preview", bert_shards, "--num", str(n), "--seed", "5", "--json", "--quiet")
    assert r.code == 0, r.err
    examples = [json.loads(line) for line in r.out.splitlines()]
    assert len(examples) == n
    drawn = []
    for e in examples:
        masked = np.array(e["masked_input_ids"])
        for (s, t), kind in zip(e["spans"], e["replacement"], strict=True):
            if kind == "random":
                drawn.extend(masked[s : t + 1].tolist())
    # Enough draws that a uniform draw over the whole vocabulary (99 of ~3,100 tokens unused) would
    # have hit a placeholder: P(no hit in 300 draws) < 1e-4.
    assert len(drawn) > 300, len(drawn)
    assert not set(drawn) & set(vocab.unused_ids)
    assert not set(drawn) & set(vocab.special_ids)

    ds = MaskedDataset(reader, seed=5, config=MaskingConfig(), vocab=vocab)
    assert [ds[i]["input_ids"].tolist() for i in range(n)] == [e["masked_input_ids"] for e in examples]

    # The control: the same masks with the placeholders left in the pool (as before) do draw them.
    fields = ("vocab_size", "cls_id", "sep_id", "pad_id", "mask_id", "special_ids", "is_continuation")
    naive = VocabInfo(**{f: getattr(vocab, f) for f in fields})
    ds = MaskedDataset(reader, seed=5, config=MaskingConfig(), vocab=naive)
    naive_ids = np.concatenate([ds[i]["input_ids"] for i in range(n)])
    assert np.isin(naive_ids, vocab.unused_ids).any()


def test_a_vocabulary_of_only_placeholders_is_refused() -> None:
    from spanbert_cli.errors import DataError

    with pytest.raises(DataError, match=r"no token to use as a random replacement"):
        VocabInfo(
            vocab_size=7,
            cls_id=0,
            sep_id=1,
            pad_id=2,
            mask_id=3,
            special_ids=(4,),
            is_continuation=np.zeros(7, dtype=bool),
            unused_ids=(5, 6),
        )
    with pytest.raises(DataError, match=r"unused token ids \[9\] are outside the vocabulary of 7"):
        VocabInfo(
            vocab_size=7,
            cls_id=0,
            sep_id=1,
            pad_id=2,
            mask_id=3,
            special_ids=(),
            is_continuation=np.zeros(7, dtype=bool),
            unused_ids=(9,),
        )
