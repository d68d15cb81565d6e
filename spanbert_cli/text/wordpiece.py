"""WordPiece tokenizers: train one on a corpus, or load an existing `tokenizer.json` or BERT `vocab.txt`."""

from __future__ import annotations

import hashlib
import heapq
import itertools
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from spanbert_cli.errors import DataError, naming_io_errors

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


def _bert_pipeline(tok: Tokenizer, cased: bool) -> Tokenizer:
    # BERT's own text handling: cased models keep accents, uncased ones lowercase and strip them.
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=not cased, lowercase=not cased
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def _add_post_processor(tok: Tokenizer) -> Tokenizer:
    # Registered as special tokens, "[CLS]" in text is one token (not "[", "CL", "##S", "]") and
    # transformers knows them as such.
    tok.add_special_tokens([t for t in SPECIAL_TOKENS if tok.token_to_id(t) is not None])
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:
        raise DataError("the tokenizer has no [CLS] or [SEP] token; spanbert needs a BERT-style vocabulary")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tok


def train_wordpiece(texts: Iterable[str], vocab_size: int, cased: bool, min_frequency: int = 2) -> Tokenizer:
    """Train a BERT WordPiece vocabulary on the given documents, deterministically.

    `tokenizers`' own trainer breaks ties between equally frequent merges by hash-map order, so two runs
    can produce different vocabularies; reproducible artifacts need the same vocabulary every time, so the
    merges are computed here with ties broken by the pieces' text.
    """
    tok = _bert_pipeline(Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100)), cased)
    counts: Counter[str] = Counter()
    for text in texts:
        normalized = tok.normalizer.normalize_str(text)
        counts.update(w for w, _ in tok.pre_tokenizer.pre_tokenize_str(normalized))
    vocab = wordpiece_vocab(counts, vocab_size, min_frequency)
    tok.model = models.WordPiece(
        {t: i for i, t in enumerate(vocab)}, unk_token="[UNK]", max_input_chars_per_word=100
    )
    return _add_post_processor(tok)


def wordpiece_vocab(
    word_counts: Mapping[str, int], vocab_size: int, min_frequency: int = 2, max_word_chars: int = 100
) -> list[str]:
    """A WordPiece vocabulary by frequency-greedy merges (the scheme of BERT-style trainers).

    Every word starts as its first character followed by `##`-prefixed continuation characters; the most
    frequent adjacent pair is merged until the vocabulary is full or no pair reaches `min_frequency`. The
    result is the special tokens, the sorted alphabet, then the merged pieces in merge order.
    """
    words = [(w, c) for w, c in sorted(word_counts.items()) if 0 < len(w) <= max_word_chars]
    alphabet = sorted({w[0] for w, _ in words} | {"##" + ch for w, _ in words for ch in w[1:]})
    vocab = list(SPECIAL_TOKENS) + [t for t in alphabet if t not in SPECIAL_TOKENS]
    index = {t: i for i, t in enumerate(vocab)}
    seqs = [[index[w[0]], *(index["##" + ch] for ch in w[1:])] for w, _ in words]
    freqs = [c for _, c in words]

    pair_counts: defaultdict[tuple[int, int], int] = defaultdict(int)
    where: defaultdict[tuple[int, int], set[int]] = defaultdict(set)
    for wi, seq in enumerate(seqs):
        for pair in itertools.pairwise(seq):
            pair_counts[pair] += freqs[wi]
            where[pair].add(wi)
    # Max-heap on count; ties go to the lexicographically smallest pair of piece texts.
    heap = [(-c, vocab[a], vocab[b], a, b) for (a, b), c in pair_counts.items()]
    heapq.heapify(heap)

    while len(vocab) < vocab_size and heap:
        neg, _, _, a, b = heapq.heappop(heap)
        count = pair_counts.get((a, b), 0)
        if count != -neg:  # a stale entry; the current count was pushed again when it changed
            continue
        if count < min_frequency:
            break
        piece = vocab[a] + (vocab[b][2:] if vocab[b].startswith("##") else vocab[b])
        new = index.get(piece)
        if new is None:
            new = index[piece] = len(vocab)
            vocab.append(piece)
        changed: set[tuple[int, int]] = set()
        for wi in sorted(where.pop((a, b))):
            seq, f = seqs[wi], freqs[wi]
            out: list[int] = []
            i = 0
            while i < len(seq):
                if i + 1 < len(seq) and seq[i] == a and seq[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            for pair in itertools.pairwise(seq):
                pair_counts[pair] -= f
                changed.add(pair)
            for pair in itertools.pairwise(out):
                pair_counts[pair] += f
                where[pair].add(wi)
                changed.add(pair)
            seqs[wi] = out
        pair_counts.pop((a, b), None)
        for pair in sorted(changed):
            c = pair_counts.get(pair, 0)
            if c <= 0:
                pair_counts.pop(pair, None)
                where.pop(pair, None)
            elif pair != (a, b):
                heapq.heappush(heap, (-c, vocab[pair[0]], vocab[pair[1]], *pair))
    return vocab


def load_tokenizer(path: str | Path, cased: bool = True) -> Tokenizer:
    """Load `tokenizer.json`, a BERT `vocab.txt`, or a directory holding either."""
    p = Path(path)
    if p.is_dir():
        for name in ("tokenizer.json", "vocab.txt"):
            if (p / name).is_file():
                return load_tokenizer(p / name, cased)
        raise DataError(f"{p}: no tokenizer.json or vocab.txt in this directory")
    if not p.is_file():
        raise DataError(f"{p}: tokenizer file not found")
    try:
        if p.suffix == ".txt":
            vocab = {}
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines()):
                token = line.rstrip("\n")
                if token and token not in vocab:
                    vocab[token] = i
            if "[UNK]" not in vocab:
                raise DataError(f"{p}: vocab.txt has no [UNK] token; is this a BERT vocabulary?")
            tok = _bert_pipeline(Tokenizer(models.WordPiece(vocab, unk_token="[UNK]")), cased)
        else:
            tok = Tokenizer.from_file(str(p))
    except DataError:
        raise
    except Exception as e:
        raise DataError(
            f"{p}: unreadable tokenizer ({str(e).splitlines()[0][:200]}); pass a tokenizer.json or vocab.txt"
        ) from None
    missing = [t for t in SPECIAL_TOKENS if t != "[PAD]" and tok.token_to_id(t) is None]
    if missing:
        raise DataError(
            f"{p}: the tokenizer lacks {', '.join(missing)}; spanbert needs a BERT-style vocabulary"
        )
    if tok.post_processor is None:
        _add_post_processor(tok)
    return tok


def tokenizer_sha256(tok: Tokenizer) -> str:
    return hashlib.sha256(tok.to_str().encode()).hexdigest()


def special_ids(tok: Tokenizer) -> dict[str, int]:
    return {
        t.strip("[]").lower(): tok.token_to_id(t) for t in SPECIAL_TOKENS if tok.token_to_id(t) is not None
    }


def is_cased(tok: Tokenizer) -> bool:
    norm = tok.normalizer
    state = norm.__getstate__() if norm is not None else None
    return not (state and b'"lowercase":true' in state)


def write_tokenizer_files(tok: Tokenizer, directory: Path) -> None:
    """`tokenizer.json` (tokenizers, transformers) and `vocab.txt` (BERT), ordered by id."""
    directory.mkdir(parents=True, exist_ok=True)
    with naming_io_errors(directory / "tokenizer.json"):
        tok.save(str(directory / "tokenizer.json"))
    vocab = tok.get_vocab(with_added_tokens=True)
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    with naming_io_errors(directory / "vocab.txt"):
        (directory / "vocab.txt").write_text("".join(f"{t}\n" for t, _ in by_id), encoding="utf-8")


def copy_tokenizer_files(source: str | Path, destination: str | Path) -> None:
    """Copy the tokenizer files an artifact carries (those present) from one directory to another."""
    for name in TOKENIZER_FILES:
        src = Path(source) / name
        if src.is_file():
            with naming_io_errors(Path(destination) / name):
                shutil.copyfile(src, Path(destination) / name)
