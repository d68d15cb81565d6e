"""Benchmark: span masking throughput against Hugging Face's whole-word-mask collator.

Both sides get the same 512-token sequences of real text (the shared corpus, WordPiece vocabulary of
8,000 trained on it) and produce padded PyTorch tensors for a micro-batch, in one process:

* ``spanbert masking + collate``: `MaskedDataset.__getitems__` for the micro-batch, then `collate` (what
  a PyTorch DataLoader does in pretraining), and the same with `__getitem__` one sequence at a time;
* ``spanbert mask_batch``: the masking alone;
* ``transformers whole-word mask``: ``DataCollatorForLanguageModeling(mlm=True, whole_word_mask=True)``
  (``DataCollatorForWholeWordMask`` on older releases), given offsets and special-token masks so that
  it spends no time re-tokenizing.

Run from the repository root::

    python benchmarks/bench_masking.py [--batch-size 32] [--batches 40] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from spanbert_cli.masking import MaskedDataset, MaskingConfig, VocabInfo, collate, mask_batch

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_tokenizer(files: list[Path]):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train(
        [str(f) for f in files], trainers.WordPieceTrainer(vocab_size=8000, special_tokens=SPECIAL_TOKENS)
    )
    return tok


def build_sequences(tok, files: list[Path], seq_len: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Full ``[CLS] block [SEP]`` sequences of one document each, with the character offsets of each token."""
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    body = seq_len - 2
    seqs, offsets = [], []
    for enc in tok.encode_batch(texts, add_special_tokens=False):
        ids = np.asarray(enc.ids, dtype=np.int64)
        offs = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
        for start in range(0, len(ids) - body + 1, body):
            seqs.append(np.concatenate([[cls], ids[start : start + body], [sep]]))
            offsets.append(np.concatenate([[[0, 0]], offs[start : start + body], [[0, 0]]]))
    return seqs, offsets


def hf_collator(tok):
    import transformers

    hf_tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
    )
    with warnings.catch_warnings():
        # transformers 5 warns that whole-word masking only replaces with [MASK]; that is its behaviour.
        warnings.simplefilter("ignore")
        try:
            return transformers.DataCollatorForLanguageModeling(
                hf_tok, mlm=True, whole_word_mask=True, seed=0
            )
        except TypeError:
            return transformers.DataCollatorForWholeWordMask(hf_tok, mlm=True)


def best_rate(step: Callable[[int], object], n_batches: int, batch_size: int, repeats: int) -> float:
    """Sequences per second, best of `repeats` passes (the least disturbed by other load)."""
    step(0)  # warm-up: imports, caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for b in range(n_batches):
            step(b)
        best = min(best, time.perf_counter() - start)
    return n_batches * batch_size / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpus",
        type=Path,
        default=Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "corpus",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args()

    import torch

    # Single process; one thread by default so that neither side gains from the machine's core count.
    torch.set_num_threads(args.threads)
    files = sorted(args.corpus.glob("state_union/*.txt")) + sorted(args.corpus.glob("inaugural/*.txt"))
    if not files:
        raise SystemExit(f"no corpus files under {args.corpus}")
    tok = train_tokenizer(files)
    vocab = VocabInfo.from_tokenizer(tok)
    seqs, offsets = build_sequences(tok, files, args.seq_len)
    bs = args.batch_size
    n_batches = min(args.batches, len(seqs) // bs)
    config = MaskingConfig()

    class Reader:
        def __len__(self) -> int:
            return len(seqs)

        def __getitem__(self, i: int) -> np.ndarray:
            return seqs[i]

    dataset = MaskedDataset(Reader(), seed=1, config=config, vocab=vocab)
    collate_fn = functools.partial(collate, pad_id=vocab.pad_id)

    def ours_full(b: int) -> object:
        # What a DataLoader does with a map-style dataset that has `__getitems__`.
        return collate_fn(dataset.__getitems__(list(range(b * bs, (b + 1) * bs))))

    def ours_single(b: int) -> object:
        return collate_fn([dataset[i] for i in range(b * bs, (b + 1) * bs)])

    def ours_mask_only(b: int) -> object:
        return mask_batch(
            seqs[b * bs : (b + 1) * bs],
            seed=1,
            epoch=0,
            indices=range(b * bs, (b + 1) * bs),
            config=config,
            vocab=vocab,
        )

    examples = [
        {
            "input_ids": s.tolist(),
            "offset_mapping": o.tolist(),
            "special_tokens_mask": [1] + [0] * (s.size - 2) + [1],
        }
        for s, o in zip(seqs, offsets, strict=True)
    ]
    collator = hf_collator(tok)

    def hf(b: int) -> object:
        return collator(examples[b * bs : (b + 1) * bs])

    import transformers

    print(
        f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, {os.cpu_count()} CPUs, {args.threads} torch thread(s)"
    )
    print(
        f"{len(seqs)} sequences of {args.seq_len} tokens from {len(files)} files; "
        f"{n_batches} batches of {bs}, best of {args.repeats}"
    )
    ours = best_rate(ours_full, n_batches, bs, args.repeats)
    mask_only = best_rate(ours_mask_only, n_batches, bs, args.repeats)
    single = best_rate(ours_single, n_batches, bs, args.repeats)
    theirs = best_rate(hf, n_batches, bs, args.repeats)
    print(f"spanbert span masking + collate (batched fetch)  : {ours:8.0f} sequences/s")
    print(f"spanbert span masking + collate (one at a time)  : {single:8.0f} sequences/s")
    print(f"spanbert mask_batch only                         : {mask_only:8.0f} sequences/s")
    print(f"transformers whole-word mask collator            : {theirs:8.0f} sequences/s")
    print(
        f"speed-up vs transformers: {ours / theirs:.1f}x batched fetch, {single / theirs:.1f}x one at a time"
    )
    print(
        "(transformers' whole-word mode draws words by Bernoulli, replaces with [MASK] only and builds no "
        "SBO targets; spanbert does all three)"
    )


if __name__ == "__main__":
    main()
