"""Benchmark: official SQuAD scoring speed, and fine-tuning throughput against Hugging Face.

1. Scoring: the full SQuAD v2.0 dev set (11,873 questions) with the shared leaderboard predictions and
   no-answer probabilities (seeded random numbers: the search costs the same whatever they are), through
   `score_files` (read, validate, score, best-threshold search) in this process, and through the CLI
   (`spanbert eval squad --predictions ... --na-probs ... --json`) in a fresh process, interpreter start-up
   included. Target: under 2 s.

2. Fine-tuning: one optimizer step (forward, backward, AdamW with BERT's parameter groups) of our
   `QuestionAnswering` and of `transformers.BertForQuestionAnswering` with the same dimensions, the same
   weights and the same batches of real SQuAD windows (train-v2.0-first10, a WordPiece vocabulary trained on
   the shared corpus), alternating so that machine noise hits all alike. Ours runs as `spanbert eval
   squad` does: unpadded (`Features.packed_batch`, only the real tokens of each window). Transformers'
   `BertForQuestionAnswering` gets the same windows padded to `--max-seq-length`, as its `run_qa.py`
   example does by default (`pad_to_max_length`), and, as a second reference, padded only to the batch's
   longest window (rounded up to 8; `--pad_to_max_length False`). Reported: windows/s of each and the
   ratios. Target (issue 14): at least 1.5x the first.

Run from the repository root::

    python benchmarks/bench_squad.py [--model small] [--batch-size 8] [--max-seq-length 384] [--steps 5]
                                     [--repeats 3] [--device cpu] [--precision fp32] [--threads N]
                                     [--skip-scoring] [--skip-training]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SPANBERT_SHARED_DATA", ROOT.parent / "shared" / "data"))
SQUAD = SHARED / "squad"


def bench_scoring(repeats: int) -> None:
    from spanbert_cli.eval.squad.data import score_files

    preds_path = SQUAD / "predictions" / "v2.0-nlnet-single.json.gz"
    dev = SQUAD / "dev-v2.0.json.gz"
    preds = json.loads(gzip.decompress(preds_path.read_bytes()))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="eval-bench-") as tmp:
        na_path = Path(tmp) / "na_probs.json"
        na_path.write_text(
            json.dumps({qid: float(p) for qid, p in zip(preds, rng.random(len(preds)), strict=True)})
        )
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            result = score_files(preds_path, dev, na_probs=na_path).result
            times.append(time.perf_counter() - t0)
        m = result.metrics
        print(
            f"scoring v2.0 dev ({m['total']:,} questions) + best-threshold search, in process: "
            f"median {statistics.median(times):.3f} s, min {min(times):.3f} s over {repeats}"
        )
        print(f"  exact {m['exact']!r}  f1 {m['f1']!r}  best_f1 {m['best_f1']!r} @ {m['best_f1_thresh']!r}")
        cmd = [
            sys.executable,
            "-m",
            "spanbert_cli",
            "eval",
            "squad",
            "--predictions",
            str(preds_path),
            "--data",
            str(dev),
            "--na-probs",
            str(na_path),
            "--json",
            "--quiet",
        ]
        walls = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            walls.append(time.perf_counter() - t0)
        assert json.loads(out.stdout) == m
        print(
            f"  CLI, fresh process (start-up included): median {statistics.median(walls):.3f} s, "
            f"min {min(walls):.3f} s"
        )


def bench_training(args: argparse.Namespace) -> None:
    import torch
    import transformers

    from spanbert_cli.eval.squad import data as sd
    from spanbert_cli.eval.squad.features import FeatureConfig, build_features
    from spanbert_cli.eval.squad.finetune import (
        PAD_MULTIPLE,
        QuestionAnswering,
        SquadConfig,
        build_optimizer,
        qa_inputs,
        qa_loss,
    )
    from spanbert_cli.model.spanbert import ModelConfig, SpanBert, hf_config_dict
    from spanbert_cli.text.wordpiece import train_wordpiece

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    corpus = sorted((SHARED / "corpus" / "state_union").glob("*.txt"))
    tok = train_wordpiece((p.read_text(encoding="utf-8") for p in corpus), 8000, cased=True)
    data, _ = sd.align_answers(sd.load_squad(SQUAD / "train-v2.0-first10.json.gz"))
    feats = build_features(data, tok, FeatureConfig(max_seq_length=args.max_seq_length), training=True)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(feats))
    batches = [
        order[i : i + args.batch_size].tolist()
        for i in range(0, args.steps * args.batch_size, args.batch_size)
    ]
    packed = [feats.packed_batch(b) for b in batches]  # what fine-tuning feeds our model

    def padded(b: list[int], multiple: int) -> dict:
        return {k: torch.from_numpy(v).to(device) for k, v in feats.batch(b, multiple=multiple).items()}

    full = [padded(b, args.max_seq_length) for b in batches]  # run_qa.py's default: every window 384
    dynamic = [padded(b, PAD_MULTIPLE) for b in batches]
    real_tokens = sum(len(p["input_ids"]) for p in packed)

    cfg = ModelConfig.from_preset(args.model, tok.get_vocab_size(), max_position_embeddings=512)
    torch.manual_seed(0)
    ours = QuestionAnswering(SpanBert(cfg)).to(device).train()
    hf_cfg = transformers.BertConfig(**hf_config_dict(cfg))
    hf_cfg._attn_implementation = "sdpa"
    theirs = transformers.BertForQuestionAnswering(hf_cfg).to(device).train()
    theirs.load_state_dict(ours.state_dict(), strict=False)
    sq = SquadConfig()
    opt_ours, opt_theirs = build_optimizer(ours, sq, device), build_optimizer(theirs, sq, device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)

    def autocast():
        return (
            torch.autocast(device.type, dtype=dtype) if dtype else torch.autocast(device.type, enabled=False)
        )

    def step_ours(arrays: dict) -> None:
        labels = [torch.from_numpy(arrays[k]).to(device) for k in ("start_positions", "end_positions")]
        with autocast():
            s, e = ours(**qa_inputs(arrays, device))
        loss = qa_loss(s, e, *labels, len(labels[0]))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ours.parameters(), 1.0)
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)

    def step_theirs(b: dict) -> None:
        with autocast():
            out = theirs(
                input_ids=b["input_ids"],
                attention_mask=b["attention_mask"].long(),
                token_type_ids=b["token_type_ids"],
                start_positions=b["start_positions"],
                end_positions=b["end_positions"],
            )
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
        opt_theirs.step()
        opt_theirs.zero_grad(set_to_none=True)

    def timed(step, data: list) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for b in data:
            step(b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    sides = {
        "spanbert QuestionAnswering, unpadded": (step_ours, packed),
        f"transformers, padded to {args.max_seq_length}": (step_theirs, full),
        "transformers, padded to the batch's longest": (step_theirs, dynamic),
    }
    for step, data in sides.values():  # warm-up (allocator, kernels)
        step(data[0])
    best = dict.fromkeys(sides, float("inf"))
    for _ in range(args.repeats):  # interleaved; the best pass of each
        for key, (step, data) in sides.items():
            best[key] = min(best[key], timed(step, data))
    windows = args.steps * args.batch_size
    print(
        f"fine-tuning, {args.model} ({cfg.num_layers} layers, hidden {cfg.hidden_size}), batch {args.batch_size}, "
        f"max_seq_length {args.max_seq_length}, {args.precision} on {device}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"  {args.steps} steps, best of {args.repeats}, {real_tokens / windows:.0f} real tokens per window "
        f"(of {args.max_seq_length}; {sum(int(d['input_ids'].numel()) for d in dynamic) / windows:.0f} padded to the batch's longest)"
    )
    ours_t = best["spanbert QuestionAnswering, unpadded"]
    for key, t in best.items():
        print(f"  {key:45s} {windows / t:8.2f} windows/s  ({t / args.steps * 1000:.0f} ms/step)")
    a = best[f"transformers, padded to {args.max_seq_length}"] / ours_t
    d = best["transformers, padded to the batch's longest"] / ours_t
    print(
        f"  ratio (ours / transformers, windows/s): {a:.2f}x padded to {args.max_seq_length} (target >= 1.5x), {d:.2f}x padded to the longest"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="small", help="tiny, mini, small, base or large")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-seq-length", type=int, default=384)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--skip-scoring", action="store_true")
    p.add_argument("--skip-training", action="store_true")
    args = p.parse_args()
    print(f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    if not args.skip_scoring:
        bench_scoring(args.repeats)
    if not args.skip_training:
        bench_training(args)


if __name__ == "__main__":
    main()
