"""Benchmark: pretraining throughput on real shards, unpadded vs the padded layout vs `BertForMaskedLM`.

The data is what `spanbert pretrain` reads: the shared corpus (Gutenberg books, State of the Union and
inaugural addresses) tokenized by `spanbert tokenize --docs file --vocab-size 30522` and packed by
`spanbert shard --max-seq-len 128` (512 on GPU), cached under `--cache`; real shards are not all full, so
batches carry the padding real training has. The micro-batches are drawn by the training sampler and
masked by spanbert's span masking, and all sides train on the same ones, side by side in one process:

* ``unpadded``: the step `spanbert pretrain` runs (`training.loop.train_step`, built by `setup` and
  `build_state` from a `PretrainConfig`), on micro-batches collated without padding (real tokens end to
  end, variable-length attention);
* ``padded``: the same step on the same micro-batches padded to their longest sequence, with an
  attention mask (`masking.collate(..., padded=True)`): what training did before it was unpadded;
* ``transformers``: ``BertForMaskedLM`` of the same dimensions with SDPA attention, on the same batches
  padded to their longest sequence with their attention mask and the masked positions' labels (it
  computes logits over the vocabulary at every position; it has no SBO head, so it does less work). Its
  step is forward, backward, clipping at 1.0 and the same AdamW (`training.optim.adamw`).

Throughput is real tokens per second on every side (padding is not counted as work). The sides
alternate (each first in turn), each timed pass starts with one untimed step (the caches hold the previous side's tensors),
and each side reports the best of ``--repeats`` passes (these machines are noisy). Targets
(issue 14): unpadded >= 0.9 / fill x padded, and >= 2.4x transformers at the 30,522 vocabulary on CPU.

CPU (the default): the ``mini`` preset, 128 tokens, 16 sequences a micro-batch, fp32::

    python benchmarks/bench_train.py

GPU: BERT-base at 512 tokens in bf16, with model FLOPs utilisation (`benchmarks/gpu_check.sh`)::

    python benchmarks/bench_train.py --device cuda --batch-size 32            # eager
    python benchmarks/bench_train.py --device cuda --batch-size 32 --compile  # torch.compile'd, all sides
    python benchmarks/bench_train.py --device cuda --batch-size 32 --precision bf16-master [--compile]

Model FLOPs: `spanbert_cli.model.flops` on real tokens (the numbers `spanbert pretrain` logs as
``model_tflops_per_s`` and ``mfu``); for ``transformers`` its own head, the vocabulary projection at
every real position, is counted instead of the two sparse heads. MFU = model FLOPs per second / the
device's dense bf16 peak (H100 SXM / H200: 989 TFLOP/s; `--peak-tflops` to override).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from spanbert_cli.masking import MaskedDataset, collate
from spanbert_cli.model import flops
from spanbert_cli.model.spanbert import hf_config_dict
from spanbert_cli.training import data as D
from spanbert_cli.training.config import PretrainConfig
from spanbert_cli.training.loop import build_state, sequence_lengths, train_step
from spanbert_cli.training.metrics import StepMeter
from spanbert_cli.training.optim import adamw
from spanbert_cli.training.precision import MASTER, MasterWeights, autocast
from spanbert_cli.training.setup import Setup, setup

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "corpus"
Step = list[dict[str, Any]]  # the micro-batches of one optimizer step


def real_shards(corpus: Path, cache: Path, vocab_size: int, seq_len: int) -> Path:
    """The shard artifact of the corpus (made once: an up-to-date artifact is reused)."""
    from spanbert_cli.shards.pack import ShardConfig, shard
    from spanbert_cli.text.tokenize import TokenizeConfig, tokenize

    files = sorted(
        str(f) for sub in ("gutenberg", "state_union", "inaugural") for f in (corpus / sub).glob("*.txt")
    )
    if not files:
        raise SystemExit(f"no corpus files under {corpus}")
    tok = tokenize(files, TokenizeConfig(docs="file", vocab_size=vocab_size), out=cache / f"tok-{vocab_size}")
    out = cache / f"shards-{vocab_size}-{seq_len}"
    return shard([str(tok.artifact.path)], ShardConfig(max_seq_len=seq_len), out=out).artifact.path


def draw_steps(s: Setup, n_steps: int) -> tuple[list[Step], list[Step]]:
    """`n_steps` optimizer steps of micro-batches as training draws them: (unpadded, padded) collations
    of the same masked sequences."""
    cfg = s.config
    masked = MaskedDataset(
        s.train,
        seed=cfg.seed,
        config=cfg.masking,
        vocab=s.vocab,
        max_sbo_positions=s.model_config.sbo_num_positions,
    )
    data = D.KeyedMaskedDataset(masked)
    sampler = D.StepSampler(
        D.GlobalOrder(len(s.train), cfg.seed), cfg.batch_size, cfg.resolved_micro_batch_size, 0, n_steps
    )
    per_step = len(sampler.micro_indices)
    unpadded: list[dict[str, Any]] = []
    padded: list[dict[str, Any]] = []
    for keys in sampler:
        items = data.__getitems__(keys)
        unpadded.append(collate(items, s.vocab.pad_id))
        padded.append(collate(items, s.vocab.pad_id, padded=True))
    split = lambda xs: [xs[i : i + per_step] for i in range(0, len(xs), per_step)]  # noqa: E731
    return split(unpadded), split(padded)


def spanbert_step(s: Setup) -> Callable[[int, Step], None]:
    """Pretraining's own step on a freshly built state (the model from `--seed`)."""
    state = build_state(s)
    meter = StepMeter()
    micro_indices = list(range(s.config.batch_size // s.config.resolved_micro_batch_size))
    state.runner.train()

    def step(i: int, micro: Step) -> None:
        train_step(s, state, state.runner, micro, micro_indices, i, meter)

    return step


def hf_labels(batch: dict[str, Any]) -> torch.Tensor:
    labels = torch.full_like(batch["input_ids"], -100)
    labels.view(-1)[batch["mlm_positions"]] = batch["mlm_labels"]
    return labels


def transformers_step(s: Setup, compile_: bool) -> Callable[[int, Step], None]:
    """BertForMaskedLM (SDPA) of the same dimensions: forward, backward, clip, the same AdamW."""
    import transformers

    device, precision = s.device, s.precision
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_cfg = transformers.BertConfig(**hf_config_dict(s.model_config), attn_implementation="sdpa")
        torch.manual_seed(0)
        model = transformers.BertForMaskedLM(hf_cfg).to(device)
    opt = adamw(model, lr=1e-4, weight_decay=0.01, device=device)
    master = MasterWeights(model) if precision == MASTER else None
    runner = master.compute if master else model
    if compile_:
        runner.compile()
    runner.train()

    def step(i: int, micro: Step) -> None:
        for batch in micro:
            b = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "index"}
            mask = None if bool(batch["attention_mask"].all()) else b["attention_mask"].long()
            with autocast(device, precision):
                loss = runner(input_ids=b["input_ids"], attention_mask=mask, labels=hf_labels(b)).loss
            (loss / len(micro)).backward()
            if master:
                master.grads_to_master()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if master:
            master.refresh()
        opt.zero_grad(set_to_none=True)

    return step


def timed_pass(
    step: Callable[[int, Step], None], steps: list[Step], first: int, device: torch.device
) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i, micro in enumerate(steps):
        step(first + i, micro)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def step_flops(s: Setup, micro: Step, hf: bool) -> float:
    cfg = s.model_config
    total = 0.0
    for b in micro:
        lengths = sequence_lengths(b)
        if hf:  # its vocabulary projection at every real position instead of the two sparse heads
            n, H, V = sum(lengths), cfg.hidden_size, cfg.vocab_size
            total += 3.0 * (flops.encoder_flops(cfg, lengths) + 2 * n * (H * H + H * V))
        else:
            total += flops.training_flops(cfg, lengths, len(b["mlm_labels"]), len(b["sbo_labels"]))
    return total


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=SHARED)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "spanbert-bench")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--preset", default=None, help="model preset [default: mini on CPU, base on GPU]")
    parser.add_argument(
        "--seq-len", type=int, default=None, help="shards' length [default: 128 on CPU, 512 on GPU]"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per micro-batch")
    parser.add_argument("--accumulate", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument(
        "--precision",
        default=None,
        choices=["fp32", "bf16", "fp16", MASTER],
        help="[default: fp32 on CPU, bf16 on GPU]",
    )
    parser.add_argument("--vocab-size", type=int, default=30522)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per pass")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation, caches)")
    parser.add_argument("--repeats", type=int, default=4, help="timed passes per side (the best is kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads [default: torch's]")
    parser.add_argument("--sides", default="unpadded,padded,transformers", help="which sides to time")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile every side (pretrain --compile)"
    )
    args = parser.parse_args()

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    seq_len = args.seq_len or (512 if gpu else 128)
    if args.threads:
        torch.set_num_threads(args.threads)
    shards = real_shards(args.corpus, args.cache, args.vocab_size, seq_len)
    config = PretrainConfig(
        model=args.preset or ("base" if gpu else "mini"),
        batch_size=args.batch_size * args.accumulate,
        micro_batch_size=args.batch_size,
        precision=args.precision or ("bf16" if gpu else "fp32"),
        device=args.device,
        max_steps=1_000_000,  # the schedule only: a long warm-up, so the weights barely move
        num_workers=0,
        compile=args.compile,
    )
    sides = args.sides.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        s = setup(shards, config, out=Path(tmp) / "run")
        assert isinstance(s, Setup)
        with s.lock:
            run(s, sides, args, device)


def run(s: Setup, sides: list[str], args: argparse.Namespace, device: torch.device) -> None:
    n = args.warmup + args.steps
    unpadded, padded = draw_steps(s, n)
    data = {"unpadded": unpadded, "padded": padded, "transformers": padded}
    steps = {"unpadded": spanbert_step(s) if "unpadded" in sides else None}
    if "padded" in sides:
        steps["padded"] = spanbert_step(s)
    if "transformers" in sides:
        steps["transformers"] = transformers_step(s, args.compile)
    steps = {k: v for k, v in steps.items() if v is not None}

    cfg = s.model_config
    real = sum(sum(sequence_lengths(b)) for step in unpadded[args.warmup :] for b in step)
    slots = sum(b["input_ids"].numel() for step in padded[args.warmup :] for b in step)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{os.cpu_count()} CPUs ({cpu_name()})"
    )
    print(
        f"python {platform.python_version()}, torch {torch.__version__}; {name}, {torch.get_num_threads()} torch threads"
    )
    print(
        f"{s.config.model} (L={cfg.num_layers}, H={cfg.hidden_size}, V={cfg.vocab_size}), shards of "
        f"{s.train.max_seq_len} tokens ({s.shards.path}); {args.accumulate} x {args.batch_size} sequences a step, "
        f"{s.precision}{', compiled' if args.compile else ''}; {args.steps} timed steps, best of {args.repeats}; "
        f"fill {real / slots:.3f} ({real:,} real tokens of {slots:,} padded)"
    )
    for key, step in steps.items():
        for i, micro in enumerate(data[key][: args.warmup]):
            step(i, micro)
    best = dict.fromkeys(steps, float("inf"))
    order = list(steps)
    for r in range(args.repeats):  # interleaved, each side first in turn: all see the same machine load
        for key in order[r % len(order) :] + order[: r % len(order)]:
            best[key] = min(best[key], timed_pass(steps[key], data[key][args.warmup :], args.warmup, device))
    peak = args.peak_tflops or (
        flops.peak_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    )
    rates = {}
    for key in steps:
        rates[key] = real / best[key]
        tflops = (
            sum(step_flops(s, micro, key == "transformers") for micro in data[key][args.warmup :])
            / best[key]
            / 1e12
        )
        mfu = f", MFU {100 * tflops / peak:.1f}% of {peak:.0f} TFLOP/s" if peak else ""
        print(
            f"{key:13s}: {rates[key]:10,.0f} real tokens/s, {best[key] / args.steps * 1e3:8.1f} ms/step, {tflops:7.2f} model TFLOP/s{mfu}"
        )
    if "unpadded" in rates and "padded" in rates:
        ratio, target = rates["unpadded"] / rates["padded"], 0.9 * slots / real
        print(f"unpadded / padded      : {ratio:.2f}x (target >= 0.9 / fill = {target:.2f}x)")
    if "unpadded" in rates and "transformers" in rates:
        print(
            f"unpadded / transformers: {rates['unpadded'] / rates['transformers']:.2f}x (target >= 2.4x; spanbert also trains the SBO head)"
        )


if __name__ == "__main__":
    main()
