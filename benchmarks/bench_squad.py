"""Benchmark: official SQuAD scoring speed, and fine-tuning throughput against Hugging Face.

1. Scoring: the full SQuAD v2.0 dev set (11,873 questions) with the shared leaderboard predictions and
   no-answer probabilities (seeded random numbers: the search costs the same whatever they are), through
   `score_files` (read, validate, score, best-threshold search) in this process, and through the CLI
   (`spanbert eval squad --predictions ... --na-probs ... --json`) in a fresh process, interpreter start-up
   included. Target: under 2 s.

2. Fine-tuning: one optimizer step (forward, backward, AdamW with BERT's parameter groups) of our
   `QuestionAnswering` and of `transformers.BertForQuestionAnswering` with the same dimensions, the same
   weights and the same batches of real SQuAD windows (train-v2.0-first10, a WordPiece vocabulary trained on
   the shared corpus), alternating between the two so that machine noise hits both alike. Reported:
   windows/s of each and the ratio.

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
    tensors = []
    for b in batches:
        arrays = feats.batch(b, multiple=PAD_MULTIPLE)  # what fine-tuning feeds the model
        tensors.append({k: torch.from_numpy(v).to(device) for k, v in arrays.items()})
    real_tokens = sum(int(t["attention_mask"].sum()) for t in tensors)

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

    def step_ours(b: dict) -> None:
        with autocast():
            s, e = ours(b["input_ids"], b["attention_mask"], b["token_type_ids"])
        loss = qa_loss(s, e, b["start_positions"], b["end_positions"], len(b["input_ids"]))
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

    def timed(step) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for b in tensors:
            step(b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    step_ours(tensors[0])  # warm-up (allocator, kernels)
    step_theirs(tensors[0])
    ours_t, theirs_t = [], []
    for _ in range(args.repeats):
        ours_t.append(timed(step_ours))
        theirs_t.append(timed(step_theirs))
    windows = args.steps * args.batch_size
    a, b = statistics.median(ours_t), statistics.median(theirs_t)
    print(
        f"fine-tuning, {args.model} ({cfg.num_layers} layers, hidden {cfg.hidden_size}), batch {args.batch_size}, "
        f"max_seq_length {args.max_seq_length}, {args.precision} on {device}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"  {args.steps} steps x {args.repeats} repeats, {real_tokens / windows:.0f} real tokens per window"
    )
    print(
        f"  spanbert QuestionAnswering          {windows / a:8.2f} windows/s  ({a / args.steps * 1000:.0f} ms/step)"
    )
    print(
        f"  transformers BertForQuestionAnswering {windows / b:6.2f} windows/s  ({b / args.steps * 1000:.0f} ms/step)"
    )
    print(f"  ratio (ours / theirs, throughput): {b / a:.3f}")


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
