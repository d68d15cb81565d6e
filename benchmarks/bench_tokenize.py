"""Benchmark: `spanbert tokenize` against the raw tokenizer and against the `datasets.map` path.

    python benchmarks/bench_tokenize.py [CORPUS_DIR] [--workers 2]

All three tokenize the same documents (blank-line paragraphs of CORPUS_DIR, default ../shared/data/corpus)
with the same WordPiece tokenizer, in the same run:

- spanbert: `spanbert tokenize CORPUS --tokenizer T --workers N` end to end (reading, decoding, sentence
  boundaries, Arrow files, manifest), as a subprocess whose whole process tree's memory is sampled;
- encode_batch: `tokenizers.Tokenizer.encode_batch` over the documents already in memory (the limit);
- datasets.map: the run_mlm-style path, `load_dataset("text", sample_by="paragraph")` then
  `.map(tokenizer(...), batched=True, num_proc=N)` with a `PreTrainedTokenizerFast`.

Prints MB/s of input text, the ratios and spanbert's peak memory (resident set of all its processes).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "corpus"


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants."""
    total = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            with open(f"/proc/{p}/task/{p}/children") as f:
                pids.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def run_sampled(cmd: list[str]) -> tuple[float, int]:
    """Run a command; return (seconds, peak resident bytes of its process tree)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - t0
    done.set()
    t.join()
    if proc.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{err.decode()}")
    return seconds, peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus", nargs="?", default=str(DEFAULT_CORPUS))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--vocab-size", type=int, default=30522)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each path, interleaved; the best counts")
    args = ap.parse_args()

    from spanbert_cli.text import corpus as corpus_mod
    from spanbert_cli.text.wordpiece import train_wordpiece, write_tokenizer_files

    files = corpus_mod.resolve_inputs([args.corpus]).files
    total_bytes = sum(f.size for f in files)
    docs = [d.text for f in files for d in corpus_mod.iter_documents(f, docs="blank-line")]
    mb = total_bytes / 1e6
    print(f"corpus: {args.corpus}: {len(files)} files, {mb:.2f} MB, {len(docs):,} documents")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        tok = train_wordpiece(docs, args.vocab_size, cased=True)
        print(f"(WordPiece training, not timed below: {time.perf_counter() - t0:.1f} s)")
        write_tokenizer_files(tok, tmp / "tok")
        tok_json = tmp / "tok" / "tokenizer.json"

        import datasets
        from transformers import PreTrainedTokenizerFast

        datasets.disable_progress_bars()
        fast = PreTrainedTokenizerFast(
            tokenizer_file=str(tok_json),
            unk_token="[UNK]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            pad_token="[PAD]",
            mask_token="[MASK]",
        )
        txt_files = [str(f.path) for f in files]
        sp_s = eb_s = dm_s = float("inf")
        sp_peak = 0
        # Interleaved repeats, best of each: the machine may be shared, and the least disturbed run is the
        # closest to what each path costs.
        for r in range(args.repeat):
            # spanbert, end to end, as a user runs it (a fresh output directory: no cache hit).
            cmd = [
                sys.executable,
                "-m",
                "spanbert_cli",
                "tokenize",
                args.corpus,
                "--tokenizer",
                str(tok_json),
                "--workers",
                str(args.workers),
                "--out",
                str(tmp / f"out{r}"),
                "--quiet",
            ]
            s, peak = run_sampled(cmd)
            sp_s, sp_peak = min(sp_s, s), max(sp_peak, peak)

            # The limit: encode_batch over documents already in memory.
            t0 = time.perf_counter()
            tok.encode_batch(docs, add_special_tokens=False)
            eb_s = min(eb_s, time.perf_counter() - t0)

            # run_mlm-style datasets path (its own cache directory each time: no cache hit either).
            t0 = time.perf_counter()
            ds = datasets.load_dataset(
                "text",
                data_files=txt_files,
                sample_by="paragraph",
                split="train",
                cache_dir=str(tmp / f"hf-cache{r}"),
            )
            ds = ds.map(
                lambda b: fast(b["text"], return_special_tokens_mask=True),
                batched=True,
                num_proc=args.workers,
                remove_columns=["text"],
            )
            dm_s = min(dm_s, time.perf_counter() - t0)

    rows = [("spanbert tokenize", sp_s), ("encode_batch (limit)", eb_s), ("datasets.map", dm_s)]
    print(f"\n{'path':<24}{'seconds':>10}{'MB/s':>10}")
    for name, s in rows:
        print(f"{name:<24}{s:>10.2f}{mb / s:>10.2f}")
    print(f"\nspanbert / encode_batch throughput: {eb_s / sp_s:.2f}x   (target >= 0.8x)")
    print(f"spanbert / datasets.map throughput: {dm_s / sp_s:.2f}x   (target >= 1.5x)")
    print(f"spanbert peak memory (all processes): {sp_peak / 2**20:.0f} MB   (target < 500 MB)")
    print(f"workers: {args.workers}, cores: {os.cpu_count()}, best of {args.repeat} interleaved runs")


if __name__ == "__main__":
    main()
