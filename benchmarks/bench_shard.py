"""Benchmark of `spanbert shard` against Hugging Face run_mlm's `group_texts` (a `datasets.map`).

    python benchmarks/bench_shard.py [--corpus DIR] [--workdir DIR] [--replicas 10] [--json]

Setup (cached in --workdir between runs): the corpus is tokenized once (WordPiece trained on it), and a
copy replicated `--replicas` times is tokenized with that tokenizer. Then each case runs in a fresh
process, so that its peak memory (VmHWM) is its own:

- `shard`: `spanbert_cli.shards.pack.shard` (pack whole sentences, [CLS]/[SEP], train/valid split, Arrow
  shards, manifest with hashes).
- `group_texts`: the tokenized documents opened with `datasets.Dataset.from_file`, then run_mlm's
  `group_texts` through `Dataset.map(batched=True)` into an Arrow cache file: concatenate everything and
  cut it into chunks of `max_seq_len` (crossing documents, no framing).
- `read`: `ShardReader` over the shards written by `shard`: 200,000 random accesses, then a full pass.

Throughput is MB of token data written per second: output tokens × 2 bytes (both write uint16 ids here;
"file MB" is what landed on disk). group_texts writes no [CLS]/[SEP] and drops the tail of each map batch
that does not fill a whole chunk, so it writes slightly fewer tokens.
Time is measured around the work only, after imports (both children import torch first, because the
artifact layer records its version). Memory is the process's peak resident set, with the resident set
after imports (`base`) shown beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CORPUS = Path(
    os.environ.get(
        "SPANBERT_BENCH_CORPUS", Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "corpus"
    )
)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


# --------------------------------------------------------------------------------------------------
# children: one case each, reporting one JSON line


def child_shard(tokenized: str, out: str, max_seq_len: int) -> dict:
    import torch  # noqa: F401  (imported by the artifact layer's tool record; keep it out of the timing)

    from spanbert_cli.shards.pack import ShardConfig, shard

    shutil.rmtree(out, ignore_errors=True)  # an artifact already there would be a cache hit
    base = _status_kb("VmRSS")
    t0 = time.perf_counter()
    result = shard([tokenized], ShardConfig(max_seq_len=max_seq_len), out=out)
    seconds = time.perf_counter() - t0
    assert not result.cached
    s = result.artifact.manifest.stats
    files = [f for f in result.artifact.manifest.files if f.path.endswith(".arrow")]
    return {
        "seconds": seconds,
        "sequences": s["sequences"],
        "tokens": s["tokens"],
        "file_bytes": sum(f.bytes for f in files),
        "fill_rate": s["fill_rate"],
        "base_kb": base,
    }


def child_group_texts(tokenized: str, out: str, max_seq_len: int) -> dict:
    from itertools import chain

    import datasets
    import torch  # noqa: F401  (same imports as the shard child)

    from spanbert_cli import artifacts

    datasets.disable_progress_bars()
    art = artifacts.open_artifact(tokenized)
    files = [str(art.file(f.path)) for f in art.files_under("data/")]
    base = _status_kb("VmRSS")
    t0 = time.perf_counter()
    ds = datasets.concatenate_datasets([datasets.Dataset.from_file(f) for f in files])
    ds = ds.select_columns(["input_ids"])

    # Hugging Face transformers examples/pytorch/language-modeling/run_mlm.py
    def group_texts(examples):
        concatenated_examples = {k: list(chain(*examples[k])) for k in examples}
        total_length = len(concatenated_examples[next(iter(examples.keys()))])
        total_length = (total_length // max_seq_len) * max_seq_len
        return {
            k: [t[i : i + max_seq_len] for i in range(0, total_length, max_seq_len)]
            for k, t in concatenated_examples.items()
        }

    Path(out).mkdir(parents=True, exist_ok=True)
    grouped = ds.map(
        group_texts,
        batched=True,
        cache_file_name=str(Path(out) / "grouped.arrow"),
        load_from_cache_file=False,
    )
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "sequences": grouped.num_rows,
        "tokens": grouped.num_rows * max_seq_len,
        "file_bytes": (Path(out) / "grouped.arrow").stat().st_size,
        "fill_rate": 1.0,
        "base_kb": base,
    }


def child_read(shards: str, accesses: int) -> dict:
    import numpy as np

    from spanbert_cli.shards.reader import ShardReader

    base = _status_kb("VmRSS")
    t0 = time.perf_counter()
    reader = ShardReader(shards)
    rng = np.random.default_rng(0)
    total = 0
    for i in rng.integers(0, len(reader), size=accesses).tolist():
        total += int(reader[i].size)
    random_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    tokens = sum(int(s.size) for s in reader)
    return {
        "seconds": random_seconds,
        "pass_seconds": time.perf_counter() - t1,
        "sequences": len(reader),
        "tokens": tokens,
        "base_kb": base,
        "rss_anon_kb": _status_kb("RssAnon"),
    }


# --------------------------------------------------------------------------------------------------
# parent


def _run_child(*args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    if proc.returncode != 0:
        raise SystemExit(f"child {args[0]} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _setup(corpus: Path, workdir: Path, replicas: int, vocab_size: int, workers: int) -> tuple[str, str]:
    from spanbert_cli.text.tokenize import TokenizeConfig, tokenize

    one = tokenize(
        [str(corpus)], TokenizeConfig(vocab_size=vocab_size, workers=workers), out=workdir / "tokenized-1x"
    )
    rep_dir = workdir / f"corpus-{replicas}x"
    if not rep_dir.is_dir():
        tmp = workdir / f".tmp-corpus-{replicas}x"
        shutil.rmtree(tmp, ignore_errors=True)
        for r in range(replicas):
            shutil.copytree(corpus, tmp / f"rep{r:02d}")
        tmp.rename(rep_dir)
    many = tokenize(
        [str(rep_dir)],
        TokenizeConfig(tokenizer=str(one.artifact.file("tokenizer.json")), workers=workers),
        out=workdir / f"tokenized-{replicas}x",
    )
    return str(one.artifact.path), str(many.artifact.path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/spanbert-bench-shard"))
    ap.add_argument("--replicas", type=int, default=10)
    ap.add_argument("--max-seq-len", type=int, default=512)
    ap.add_argument("--vocab-size", type=int, default=30522)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--accesses", type=int, default=200_000, help="random reads in the reader case")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the fastest is reported")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        kind, *rest = args.child
        if kind == "shard":
            res = child_shard(rest[0], rest[1], int(rest[2]))
        elif kind == "group_texts":
            res = child_group_texts(rest[0], rest[1], int(rest[2]))
        else:
            res = child_read(rest[0], int(rest[1]))
        res["peak_kb"] = _status_kb("VmHWM")
        print(json.dumps(res))
        return

    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"setup: tokenizing {args.corpus} (1× and {args.replicas}×) into {args.workdir} …", file=sys.stderr)
    cases = dict(
        zip(
            ("1x", f"{args.replicas}x"),
            _setup(args.corpus, args.workdir, args.replicas, args.vocab_size, args.workers),
            strict=True,
        )
    )
    results: dict[str, dict[str, dict]] = {}
    for name, tokenized in cases.items():
        results[name] = {}
        for method in ("shard", "group_texts"):
            out = str(args.workdir / f"out-{method}-{name}")
            runs = [_run_child(method, tokenized, out, str(args.max_seq_len)) for _ in range(args.repeat)]
            best = min(runs, key=lambda r: r["seconds"])
            best["peak_kb"] = max(r["peak_kb"] for r in runs)
            best["mb_s"] = best["tokens"] * 2 / 1e6 / best["seconds"]
            results[name][method] = best
        results[name]["read"] = _run_child(
            "read", str(args.workdir / f"out-shard-{name}"), str(args.accesses)
        )

    if args.json:
        print(json.dumps(results, indent=2))
        return
    names = list(results)
    print(f"\nshard vs group_texts, max_seq_len {args.max_seq_len} ({sys.platform}, {os.cpu_count()} cores)")
    header = f"{'case':<6} {'method':<12} {'sequences':>10} {'tokens':>11} {'seconds':>8} {'MB/s':>8} "
    header += f"{'file MB':>8} {'fill':>6} {'peak MB':>8} {'base MB':>8}"
    print(header)
    for name in names:
        for method in ("shard", "group_texts"):
            r = results[name][method]
            print(
                f"{name:<6} {method:<12} {r['sequences']:>10,} {r['tokens']:>11,} {r['seconds']:>8.3f} "
                f"{r['mb_s']:>8.1f} {r['file_bytes'] / 1e6:>8.1f} {r['fill_rate']:>6.3f} "
                f"{r['peak_kb'] / 1024:>8.1f} {r['base_kb'] / 1024:>8.1f}"
            )
    print("\nShardReader: random accesses, then one full pass")
    for name in names:
        r = results[name]["read"]
        print(
            f"{name:<6} {args.accesses:,} random reads {r['seconds']:.2f} s "
            f"({args.accesses / r['seconds'] / 1e3:.0f} k/s), full pass {r['pass_seconds']:.2f} s; "
            f"peak {r['peak_kb'] / 1024:.1f} MB (base {r['base_kb'] / 1024:.1f} MB), "
            f"anonymous {r['rss_anon_kb'] / 1024:.1f} MB at the end"
        )
    small, big = results[names[0]]["shard"], results[names[1]]["shard"]
    print("\ntargets")
    for name in names:
        ratio = results[name]["shard"]["mb_s"] / results[name]["group_texts"]["mb_s"]
        print(
            f"  {name}: shard is {ratio:.1f}× the throughput of group_texts ({'ok' if ratio > 1 else 'MISSED'})"
        )
    ratio = big["peak_kb"] / small["peak_kb"]
    print(
        f"  shard peak memory {names[1]} / {names[0]}: {ratio:.3f} (target ≤ 1.2: {'ok' if ratio <= 1.2 else 'MISSED'})"
    )
    inc = (big["peak_kb"] - big["base_kb"]) / max(1, small["peak_kb"] - small["base_kb"])
    print(f"  shard peak above imports {names[1]} / {names[0]}: {inc:.2f}")


if __name__ == "__main__":
    main()
