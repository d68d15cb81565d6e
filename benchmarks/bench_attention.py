"""Benchmark: variable-length attention on CPU, the candidates side by side on real sequence lengths.

The unpadded encoder lays a micro-batch's real tokens end to end (q, k, v: [N, heads, head_dim]); on
CUDA FlashAttention's varlen kernels attend within each sequence directly. On CPU there is no such
kernel, and these are the ways to get the same result:

* ``pad``: scatter q, k, v into [B, T] (T = the longest sequence), one SDPA call with a key mask, gather
  the real rows back: the attention alone is padded;
* ``loop``: one SDPA call per sequence, no mask;
* ``buckets``: one SDPA call per distinct length, no mask;
* ``groups``: sequences sorted by length and cut into a few groups, each padded to its own longest;
* ``nested``: jagged nested tensors (`torch.nested`, layout=torch.jagged) into SDPA;
* ``blockdiag``: all N tokens as one sequence with a block-diagonal mask.

The lengths are real: the sequences of the shard artifact bench_train.py builds (128 tokens, the `mini`
preset's heads) and the windows of real SQuAD questions (384 tokens, the `small` preset's heads).
Forward + backward, with attention dropout 0.1 as in training and without it (evaluation); the sides
alternate, the best of ``--repeats`` is kept, and every time is printed relative to ``pad``::

    python benchmarks/bench_attention.py
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from spanbert_cli.model.spanbert import Packed, _sdpa, pack, padded_attention, per_sequence_attention

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, list[int], float], torch.Tensor]


def _packed(lengths: list[int]) -> Packed:
    _, p = pack(
        torch.zeros(len(lengths), max(lengths), dtype=torch.long),
        torch.arange(max(lengths)) < torch.tensor(lengths)[:, None],
    )
    return p


def pad(q, k, v, lengths, p):
    """The model's own padded attention (`spanbert.padded_attention`: under compile, on GPUs without flash)."""
    return padded_attention(q, k, v, _packed(lengths), p)


def loop(q, k, v, lengths, p):
    """The model's own CPU attention (`spanbert.per_sequence_attention`)."""
    return per_sequence_attention(q, k, v, _packed(lengths), p)


def _grouped(q, k, v, lengths, p, groups: list[list[int]]):
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    out = torch.empty_like(q)
    for rows in groups:
        sub = [lengths[r] for r in rows]
        index = torch.from_numpy(np.concatenate([starts[r] + np.arange(lengths[r]) for r in rows]))
        a = pad(q[index], k[index], v[index], sub, p)
        out = out.index_copy(0, index, a)
    return out


def buckets(q, k, v, lengths, p):
    by_length: dict[int, list[int]] = {}
    for r, n in enumerate(lengths):
        by_length.setdefault(n, []).append(r)
    return _grouped(q, k, v, lengths, p, list(by_length.values()))


def groups(q, k, v, lengths, p, n_groups: int = 3):
    order = np.argsort(lengths, kind="stable")
    return _grouped(
        q, k, v, lengths, p, [g.tolist() for g in np.array_split(order, min(n_groups, len(order)))]
    )


def nested(q, k, v, lengths, p):
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]))

    def jagged(x):
        return torch.nested.nested_tensor_from_jagged(x, offsets).transpose(1, 2)

    a = F.scaled_dot_product_attention(jagged(q), jagged(k), jagged(v), dropout_p=p)
    return a.transpose(1, 2).values()


def blockdiag(q, k, v, lengths, p):
    seq = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    mask = seq[:, None] == seq[None, :]
    return _sdpa(q[None], k[None], v[None], mask, p)[0]  # the model's [B, T, nh, hd] SDPA call


CANDIDATES: dict[str, Attention] = {
    "pad": pad,
    "loop": loop,
    "buckets": buckets,
    "groups": groups,
    "nested": nested,
    "blockdiag": blockdiag,
}


def shard_lengths(n: int) -> list[int]:
    """Sequence lengths of the shard artifact bench_train.py makes (made here if missing)."""
    from bench_train import SHARED as CORPUS
    from bench_train import real_shards

    from spanbert_cli import artifacts
    from spanbert_cli.shards.reader import ShardReader

    path = real_shards(CORPUS, Path(tempfile.gettempdir()) / "spanbert-bench", 30522, 128)
    reader = ShardReader(artifacts.open_artifact(path), "train")
    return [len(reader[i]) for i in range(min(n, len(reader)))]


def squad_lengths() -> list[int]:
    from spanbert_cli.eval.squad import data as sd
    from spanbert_cli.eval.squad.features import FeatureConfig, build_features
    from spanbert_cli.text.wordpiece import train_wordpiece

    corpus = sorted((SHARED / "corpus" / "state_union").glob("*.txt"))
    tok = train_wordpiece((p.read_text(encoding="utf-8") for p in corpus), 8000, cased=True)
    data, _ = sd.align_answers(sd.load_squad(SHARED / "squad" / "train-v2.0-first10.json.gz"))
    return build_features(data, tok, FeatureConfig(max_seq_length=384), training=True).lengths().tolist()


def measure(
    name: str, lengths: list[int], batch: int, heads: int, head_dim: int, repeats: int, n_batches: int
) -> None:
    rng = np.random.default_rng(0)
    batches = [rng.choice(lengths, batch).tolist() for _ in range(n_batches)]
    fill = np.mean([sum(b) / (len(b) * max(b)) for b in batches])
    print(f"\n{name}: {n_batches} batches of {batch} sequences, {heads} heads x {head_dim}, fill {fill:.3f}")
    for dropout in (0.1, 0.0):
        inputs = []
        for b in batches:
            n = sum(b)
            inputs.append((b, [torch.randn(n, heads, head_dim, requires_grad=True) for _ in range(3)]))
        best = dict.fromkeys(CANDIDATES, float("inf"))
        for _ in range(repeats):
            for key, fn in CANDIDATES.items():
                start = time.perf_counter()
                for b, (q, k, v) in inputs:
                    fn(q, k, v, b, dropout).sum().backward()
                best[key] = min(best[key], time.perf_counter() - start)
        base = best["pad"]
        row = ", ".join(f"{k} {v / n_batches * 1e3:.1f} ms ({v / base:.2f}x)" for k, v in best.items())
        print(f"  dropout {dropout}: {row}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=6)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads")
    # Correctness first: every candidate equals one sequence at a time (no dropout).
    torch.manual_seed(0)
    lengths = [5, 1, 12, 7]
    q, k, v = (torch.randn(sum(lengths), 2, 8) for _ in range(3))
    reference = loop(q, k, v, lengths, 0.0)
    for key, fn in CANDIDATES.items():
        err = (fn(q, k, v, lengths, 0.0) - reference).abs().max().item()
        assert err < 1e-5, (key, err)
    measure("pretraining shards (128)", shard_lengths(4000), 16, 4, 64, args.repeats, args.batches)
    measure("SQuAD windows (384)", squad_lengths(), 8, 8, 64, args.repeats, args.batches)


if __name__ == "__main__":
    main()
