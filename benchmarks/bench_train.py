"""Benchmark: pretraining throughput of spanbert's model against Hugging Face `BertForMaskedLM`.

Both sides train on the same batches, side by side in one process: real text (the shared corpus, a
WordPiece vocabulary trained on it) cut into full ``[CLS] block [SEP]`` sequences, masked by spanbert's
span masking. A step is what `spanbert pretrain` does per optimizer step: forward, backward, gradient
clipping at 1.0, AdamW.

* ``spanbert``: `SpanBert` with its MLM and SBO heads, run only at the masked positions;
* ``transformers``: ``BertForMaskedLM`` of the same dimensions with SDPA attention, given the same
  corrupted inputs and the masked positions' labels (it computes logits over the vocabulary at every
  position, then the loss at the labelled ones; it has no SBO head, so it does less work than spanbert).

Both use a BERT-sized output vocabulary (``--vocab-size``, default 30,522, BERT uncased's size), and the ids
come from a WordPiece vocabulary of that size trained on the corpus. Tokens per second count every token of the batch (there is no
padding). The two sides alternate, and each reports the best of ``--repeats`` timed passes (the one least
disturbed by other load on the machine).

CPU (the default): the ``mini`` preset, 128 tokens, 16 sequences a step, fp32::

    python benchmarks/bench_train.py

GPU: BERT-base at 512 tokens in bf16, with model FLOPs utilisation::

    python benchmarks/bench_train.py --device cuda --preset base --seq-len 512 --batch-size 32 --precision bf16
    python benchmarks/bench_train.py --device cuda --batch-size 32 --compile   # the same, torch.compile'd
    python benchmarks/bench_train.py --device cuda --batch-size 32 --precision bf16-master [--compile]
    python benchmarks/bench_train.py --device cuda --batch-size 32 --accumulate 8 ...  # the paper's 256 a step

``--precision bf16`` is autocast (fp32 weights); ``bf16-master`` runs both models on bf16 copies with fp32
master weights, as `spanbert pretrain --precision bf16-master` does (`spanbert_cli.training.precision`).

Model FLOPs per optimizer step: `spanbert_cli.model.flops` (the formula is in its docstring; the same numbers
`spanbert pretrain` logs as ``model_tflops_per_s`` and ``mfu``), for B sequences of T tokens, L layers,
hidden size H, feed-forward size F, vocabulary V, SBO position width D, and M MLM / N SBO targets::

    3 x [ B·L·(8·T·H² + 4·T·H·F + 4·T²·H)        encoder: Q, K, V, output; feed-forward; QKᵀ and AV
          + 2·M·(H² + H·V)                        MLM head at the M masked positions
          + 2·N·((2H + D)·H + H² + H·V) ]         SBO head at the N SBO targets

MFU = model FLOPs per second / the device's dense bf16 peak (H100 SXM / H200: 989 TFLOP/s, H100 PCIe:
756; `--peak-tflops` to override). Hugging Face's FLOPs are counted with its own vocabulary projection at
every position (2·B·T·(H² + H·V) for its head).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spanbert_cli.masking import MaskingConfig, VocabInfo, collate, mask_batch
from spanbert_cli.model import flops
from spanbert_cli.model.spanbert import ModelConfig, SpanBert, hf_config_dict, targets
from spanbert_cli.training.optim import adamw
from spanbert_cli.training.precision import MASTER, MasterWeights, autocast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_tokenizer(files: list[Path], vocab_size: int) -> Any:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train(
        [str(f) for f in files],
        trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS),
    )
    return tok


def build_batches(
    tok: Any, files: list[Path], seq_len: int, batch_size: int, n_batches: int, vocab: VocabInfo
) -> list[dict[str, torch.Tensor]]:
    """`n_batches` collated batches of full-length, span-masked sequences, plus HF-style labels."""
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    body = seq_len - 2
    seqs: list[np.ndarray] = []
    for enc in tok.encode_batch(texts, add_special_tokens=False):
        ids = np.asarray(enc.ids, dtype=np.int64)
        for start in range(0, len(ids) - body + 1, body):
            seqs.append(np.concatenate([[vocab.cls_id], ids[start : start + body], [vocab.sep_id]]))
    need = batch_size * n_batches
    if len(seqs) < need:
        raise SystemExit(f"only {len(seqs)} sequences of {seq_len} tokens in the corpus; {need} needed")
    masked = mask_batch(
        seqs[:need], seed=0, epoch=0, indices=range(need), config=MaskingConfig(), vocab=vocab
    )
    batches = []
    for b in range(n_batches):
        items = []
        for i in range(b * batch_size, (b + 1) * batch_size):
            m = masked[i]
            items.append(
                {
                    "index": i,
                    **{
                        k: getattr(m, k)
                        for k in (
                            "input_ids",
                            "mlm_positions",
                            "mlm_labels",
                            "sbo_positions",
                            "sbo_left",
                            "sbo_right",
                            "sbo_rel_pos",
                            "sbo_labels",
                        )
                    },
                }
            )
        batch = collate(items, pad_id=vocab.pad_id)
        labels = torch.full_like(batch["input_ids"], -100)
        labels.view(-1)[batch["mlm_positions"]] = batch["mlm_labels"]
        batch["labels"] = labels
        batches.append(batch)
    return batches


def model_flops(cfg: ModelConfig, batch: dict[str, torch.Tensor], hf: bool) -> float:
    """Training FLOPs of one micro-batch (see the module docstring)."""
    B, T = batch["input_ids"].shape
    if not hf:
        return flops.training_flops(cfg, [T] * B, len(batch["mlm_labels"]), len(batch["sbo_labels"]))
    H, V = cfg.hidden_size, cfg.vocab_size
    return 3.0 * (flops.encoder_flops(cfg, [T] * B) + 2 * B * T * (H * H + H * V))


def make_step(
    model: torch.nn.Module, hf: bool, device: torch.device, precision: str, compile_: bool = False
) -> Callable[[list], None]:
    """One optimizer step as `spanbert pretrain` takes it, for `precision` (see training/precision.py)."""
    opt = adamw(model, lr=1e-4, weight_decay=0.01, device=device)  # pretraining's, for both models
    master = MasterWeights(model) if precision == MASTER else None
    runner = master.compute if master else model  # bf16-master: forward and backward on the bf16 copy
    if compile_:
        runner.compile()
    runner.train()

    def step(micro_batches: list[dict[str, torch.Tensor]]) -> None:
        for batch in micro_batches:  # gradient accumulation, as pretrain's --micro-batch-size
            with autocast(device, precision):
                if hf:
                    # No padding in these batches: no attention mask, as spanbert's loop passes none either.
                    loss = runner(input_ids=batch["input_ids"], labels=batch["labels"]).loss
                else:
                    loss = runner(
                        batch["input_ids"],
                        None,
                        **targets(batch),
                    )["loss"]
            (loss / len(micro_batches)).backward()
            if master:
                master.grads_to_master()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if master:
            master.refresh()
        opt.zero_grad(set_to_none=True)

    return step


def timed_pass(step: Callable[[list], None], batches: list[list[dict]], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    return flops.peak_tflops(torch.cuda.get_device_name(device))


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpus",
        type=Path,
        default=Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "corpus",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--preset", default=None, help="model preset [default: mini on CPU, base on GPU]")
    parser.add_argument("--seq-len", type=int, default=None, help="[default: 128 on CPU, 512 on GPU]")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per micro-batch")
    parser.add_argument(
        "--accumulate", type=int, default=1, help="micro-batches per optimizer step (gradient accumulation)"
    )
    parser.add_argument(
        "--precision",
        default=None,
        choices=["fp32", "bf16", "fp16", MASTER],
        help="[default: fp32 on CPU, bf16 on GPU]; bf16-master: bf16 weights, fp32 master weights",
    )
    parser.add_argument("--vocab-size", type=int, default=30522, help="output vocabulary of both models")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per pass")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per side (best is kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads [default: torch's]")
    parser.add_argument("--no-hf", action="store_true", help="time spanbert only")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="then profile N spanbert steps (top operators)"
    )
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile both models (pretrain --compile)"
    )
    args = parser.parse_args()

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    preset = args.preset or ("base" if gpu else "mini")
    seq_len = args.seq_len or (512 if gpu else 128)
    precision = args.precision or ("bf16" if gpu else "fp32")
    if args.threads:
        torch.set_num_threads(args.threads)

    files = sorted(args.corpus.glob("gutenberg/*.txt")) + sorted(args.corpus.glob("state_union/*.txt"))
    if not files:
        raise SystemExit(f"no corpus files under {args.corpus}")
    tok = train_tokenizer(files, args.vocab_size)
    vocab = VocabInfo.from_tokenizer(tok)
    acc = args.accumulate
    micro = build_batches(tok, files, seq_len, args.batch_size, (args.warmup + args.steps) * acc, vocab)
    micro = [{k: v.to(device) for k, v in b.items()} for b in micro]
    batches = [micro[i : i + acc] for i in range(0, len(micro), acc)]  # one list per optimizer step
    warm, timed = batches[: args.warmup], batches[args.warmup :]

    cfg = ModelConfig.from_preset(preset, args.vocab_size)
    torch.manual_seed(0)
    ours = SpanBert(cfg).to(device)
    sides: dict[str, tuple[Callable[[list], None], bool]] = {
        "spanbert": (make_step(ours, False, device, precision, args.compile), False)
    }
    if not args.no_hf:
        import transformers

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf_cfg = transformers.BertConfig(**hf_config_dict(cfg), attn_implementation="sdpa")
            theirs = transformers.BertForMaskedLM(hf_cfg).to(device)
        sides["transformers"] = (make_step(theirs, True, device, precision, args.compile), True)

    name = torch.cuda.get_device_name(device) if gpu else f"{os.cpu_count()} CPUs ({cpu_name()})"
    print(
        f"python {platform.python_version()}, torch {torch.__version__}"
        + ("" if args.no_hf else f", transformers {__import__('transformers').__version__}")
        + f"; {name}, {torch.get_num_threads()} torch threads"
    )
    print(
        f"{preset} (L={cfg.num_layers}, H={cfg.hidden_size}, V={cfg.vocab_size}, {ours.num_parameters() / 1e6:.1f}M "
        f"parameters), {acc} x {args.batch_size} x {seq_len} tokens a step, {precision}; {args.steps} timed steps, "
        f"best of {args.repeats}; tokenizer vocabulary {vocab.vocab_size}"
        + ("; compiled" if args.compile else "")
    )
    best = dict.fromkeys(sides, float("inf"))
    for step, _ in sides.values():
        for batch in warm:
            step(batch)
    for _ in range(args.repeats):  # alternate, so that both sides see the same machine load
        for key, (step, _) in sides.items():
            best[key] = min(best[key], timed_pass(step, timed, device))
    tokens = sum(b["input_ids"].numel() for step in timed for b in step)
    peak = peak_tflops(device, args.peak_tflops)
    rates = {}
    for key, (_, hf) in sides.items():
        rates[key] = tokens / best[key]
        flops = sum(model_flops(cfg, b, hf) for step in timed for b in step) / best[key]
        mfu = f", MFU {100 * flops / (peak * 1e12):.1f}% of {peak:.0f} TFLOP/s" if peak else ""
        print(
            f"{key:13s}: {rates[key]:10,.0f} tokens/s, {best[key] / len(timed) * 1e3:8.1f} ms/step, "
            f"{flops / 1e12:7.2f} model TFLOP/s{mfu}"
        )
    if "transformers" in rates:
        print(
            f"speed-up: {rates['spanbert'] / rates['transformers']:.2f}x transformers' tokens/s "
            "(spanbert also trains the SBO head)"
        )
    if args.profile:
        profile_steps(sides["spanbert"][0], timed[: args.profile], device)


def profile_steps(step: Callable[[list], None], batches: list[list[dict]], device: torch.device) -> None:
    """Where a step's time goes: torch.profiler's operators, by device time (CPU time on CPU)."""
    from torch.profiler import ProfilerActivity, profile

    gpu = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with profile(activities=activities) as prof:
        for batch in batches:
            step(batch)
        if gpu:
            torch.cuda.synchronize()
    key = "cuda_time_total" if gpu else "cpu_time_total"
    print(f"\nspanbert, {len(batches)} steps under torch.profiler, by {key}:")
    print(prof.key_averages().table(sort_by=key, row_limit=30, max_name_column_width=70))


if __name__ == "__main__":
    main()
