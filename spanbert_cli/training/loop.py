"""`spanbert pretrain`: ``setup`` (resolve and check everything) → ``main`` (build, resume) → ``fit`` (the loop).

The same code runs in every training process. What differs between one process and many sits behind a
`DistributedContext` (rank, world size, device, the reductions, the DDP wrapper; the real one is
`spanbert_cli.training.distributed.TorchDistributedContext`), and the data each rank reads is a function of
(seed, step, micro-batch) only (`spanbert_cli.training.data`). Only rank 0 writes (run directory, metrics,
checkpoints, export); the other ranks report nothing.

The arithmetic of one optimizer step, for batch size B and micro-batch size m:

* the step's B sequences are cut into B/m micro-batches, B/(m·W) of them on each of the W processes; the
  loss of the step is the mean MLM loss over *all* masked tokens of the step plus ``sbo_weight`` × the
  mean SBO loss over all its SBO targets, so each micro-batch contributes ``CE_sum / step_count`` (the
  counts are known before the forward passes, from the labels, and summed over the processes) and the
  result depends neither on how the step is cut nor on the number of processes (DDP averages the
  gradients over the processes, so each process scales its share by W);
* the dropout of micro-batch j of step s is seeded from (seed, s, j);
* gradients are clipped to a global norm of 1.0, then AdamW steps and the learning rate moves on.

Resumption restores the weights, the optimizer, the scheduler, the grad scaler and the RNG states, and
restarts the data stream at the checkpoint's step; on CPU the result is bit-identical to an uninterrupted
run. A checkpoint holds nothing per process, so a run may resume on another number of processes (with the
same global batch and micro-batch size).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from spanbert_cli import artifacts, interrupts, kinds
from spanbert_cli.errors import ArtifactError, DataError
from spanbert_cli.model.flops import peak_tflops, training_flops
from spanbert_cli.model.spanbert import SpanBert, encoder_inputs, targets
from spanbert_cli.progress import Reporter
from spanbert_cli.training import data as D
from spanbert_cli.training.checkpoint import (
    CHECKPOINTS_DIR,
    MODEL_FILE,
    Checkpoint,
    Checkpointer,
    capture_rng_state,
    latest_checkpoint,
    list_checkpoints,
    load_model_state,
    load_training_state,
    read_meta,
    restore_rng_state,
)
from spanbert_cli.training.config import PretrainConfig
from spanbert_cli.training.context import DistributedContext
from spanbert_cli.training.device import is_out_of_memory
from spanbert_cli.training.metrics import (
    METRICS_FILE,
    MetricLogger,
    MultiLogger,
    StepMeter,
    open_loggers,
    tracked_config,
    truncate_metrics,
)
from spanbert_cli.training.optim import adamw, lr_factor, warmup_then_linear
from spanbert_cli.training.precision import MASTER, MasterWeights, autocast
from spanbert_cli.training.run import EXPORT_DIR, RunDir
from spanbert_cli.training.setup import PretrainResult, Setup, setup
from spanbert_cli.training.validation import masked_lm_sums, summarize, verify_shards

SHARDS_KIND = kinds.SHARDS


class TrainingError(DataError):
    """Training had to stop: the loss diverged, or the device ran out of memory."""


def build_optimizer(
    model: torch.nn.Module, config: PretrainConfig, device: torch.device
) -> torch.optim.AdamW:
    return adamw(
        model,
        lr=config.lr,
        weight_decay=config.weight_decay,
        device=device,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_eps,
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: PretrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    return warmup_then_linear(optimizer, config.resolved_warmup_steps, config.max_steps)


def pretrain(
    shards: str | os.PathLike | None,
    config: PretrainConfig,
    *,
    out: str | os.PathLike | None = None,
    workspace: str | os.PathLike | None = None,
    resume: bool = False,
    resume_from: str | os.PathLike | None = None,
    force: bool = False,
    reporter: Reporter | None = None,
    ctx: DistributedContext | None = None,
) -> PretrainResult:
    """Pretrain SpanBERT on a shard artifact (the workspace's newest when `shards` is None) into a run
    artifact; return it (an existing complete run with the same fingerprint is returned as is)."""
    s = setup(
        shards,
        config,
        out=out,
        workspace=workspace,
        resume=resume,
        resume_from=resume_from,
        force=force,
        reporter=reporter,
        ctx=ctx,
    )
    if isinstance(s, PretrainResult):
        return s
    return main(s)


# --------------------------------------------------------------------------------------------------
# main: build the model and the optimizer, resume, run the loop, export


@dataclass
class TrainState:
    model: SpanBert
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    master: MasterWeights | None = None  # --precision bf16-master: the bf16 copy that runs the steps
    step: int = 0
    elapsed: float = 0.0  # training wall time, all sessions together
    tokens: int = 0  # real tokens trained on, all sessions together
    last_train: dict[str, Any] = field(default_factory=dict)
    last_valid: dict[str, Any] = field(default_factory=dict)

    @property
    def runner(self) -> SpanBert:
        """The module forward and backward run through: the model, or its bf16 copy (bf16-master)."""
        return self.master.compute if self.master is not None else self.model


def main(s: Setup) -> PretrainResult:
    """Train, holding the run directory's lock; a run that fails (or is interrupted) before its first
    checkpoint leaves no run directory behind, since there is nothing in it to resume."""
    doing = interrupts.activity(
        f"pretraining {s.plan.out}", kept=functools.partial(_last_checkpoint, s.plan.out)
    )
    with s.lock, doing:
        try:
            return _main(s)
        except BaseException:
            if s.fresh and s.ctx.is_main and latest_checkpoint(s.plan.out) is None:
                with contextlib.suppress(OSError):
                    RunDir.wipe(s.plan.out)
            raise


def _last_checkpoint(run_dir: Path) -> Path | None:
    last = latest_checkpoint(run_dir)
    return last.path if last is not None else None


def build_state(s: Setup) -> TrainState:
    """The model (fresh from the seed, or `--init-from` weights), its bf16 copy under bf16-master, the
    optimizer, the schedule and the loss scaler; compiled with `--compile`. (A resume restores it later.)"""
    cfg = s.config
    torch.manual_seed(cfg.seed)
    model = SpanBert(s.model_config)
    if s.init is not None and s.resume_from is None:
        from spanbert_cli.model.weights import read_weights

        _, weights = read_weights(s.init)
        loaded = model.load_hf_weights(weights)
        fresh_heads = sorted({k.split(".")[0] for k in loaded.initialized})
        s.reporter.log(
            f"initialised from {s.init.path}"
            + (f" (new: {', '.join(fresh_heads)} head)" if fresh_heads else "")
        )
    model.to(s.device)
    master = MasterWeights(model) if s.precision == MASTER else None
    optimizer = build_optimizer(model, cfg, s.device)
    scheduler = build_scheduler(optimizer, cfg)
    scaler = torch.amp.GradScaler(s.device.type, enabled=s.precision == "fp16")
    state = TrainState(model, optimizer, scheduler, scaler, master)
    if cfg.compile:
        # The whole model, heads and losses included (their fp32 cross-entropy over the vocabulary is
        # worth fusing); in place, so parameter names, and so checkpoints, stay the same.
        if master is not None:  # (no effect without DDP; `--gpus 1` runs one DDP process)
            # Dynamo splits a graph under DDP at the gradient buckets; with bf16 buckets, dropout and
            # dynamic target counts, inductor (torch 2.13, CPU) then fails to generate code. One graph
            # instead: the gradients are all-reduced after the backward pass rather than during it.
            torch._dynamo.config.optimize_ddp = False
        state.runner.compile()
    return state


def _main(s: Setup) -> PretrainResult:
    cfg, rep, device = s.config, s.reporter, s.device
    t0 = time.perf_counter()
    main_process = s.ctx.is_main  # only the main process writes the run directory
    run = RunDir(s.plan, s.extra)
    s.ctx.barrier()  # every process has read the run directory (setup) before the main one changes it
    if s.fresh and main_process:
        if s.plan.out.exists():
            RunDir.wipe(s.plan.out)
            run.created = ""
        run.write("running", {"step": 0, "max_steps": cfg.max_steps}, [])
    elif main_process:  # leftovers of a writer that was killed: partial checkpoints, manifests
        artifacts.sweep_temp_dirs(s.plan.out / CHECKPOINTS_DIR)
        artifacts.sweep_temp_dirs(s.plan.out)
    s.ctx.barrier()

    state = build_state(s)

    run_dir = s.plan.out
    checkpointer = Checkpointer(
        run_dir,
        keep_last=cfg.keep_last,
        model_config=s.model_config,
        tokenizer_dir=s.shards.path,
        meta={"run_fingerprint": s.plan.fingerprint},
    )
    if s.resume_from is not None:
        _restore(state, s.resume_from)
        if main_process:
            removed = checkpointer.remove_after(state.step)
            if removed:
                rep.log(
                    f"removed {len(removed)} checkpoint(s) after step {state.step}, "
                    "from the abandoned continuation"
                )
            truncate_metrics(run_dir / METRICS_FILE, state.step)
            rep.log(f"resuming from {s.resume_from.path} (step {state.step})")
            run.write("running", {"step": state.step, "max_steps": cfg.max_steps}, checkpointer.kept())
        s.ctx.barrier()
    start_step, start_tokens = state.step, state.tokens

    logger = MultiLogger([])
    if main_process:
        tracked = functools.partial(tracked_config, cfg, s.plan.params, s.plan.fingerprint, run_dir)
        logger = open_loggers(run_dir, cfg, fresh=s.fresh, tracked=tracked, log=rep.log)
    try:
        fit(s, state, checkpointer, logger, run)
    finally:
        logger.close()
        rep.finish()

    from spanbert_cli.model.weights import write_hf_dir_atomic

    export_dir = run_dir / EXPORT_DIR
    if main_process:
        final = latest_checkpoint(run_dir)
        write_hf_dir_atomic(
            export_dir,
            state.model.state_dict(),
            s.model_config,
            s.shards.path,
            {
                "run_fingerprint": s.plan.fingerprint,
                "step": state.step,
                "checkpoint": str(final.path) if final else None,
                "weights_sha256": _weights_sha(final),
            },
        )
        artifact = run.write("complete", _run_stats(s, state), checkpointer.kept())
    s.ctx.barrier()
    if not main_process:
        artifact = artifacts.Artifact(run_dir, artifacts.read_manifest(run_dir))
    return PretrainResult(
        artifact,
        cached=False,
        step=state.step,
        start_step=start_step,
        export_dir=export_dir,
        train=state.last_train,
        valid=state.last_valid,
        seconds=time.perf_counter() - t0,
        tokens=state.tokens - start_tokens,
        device=str(device),
        precision=s.precision,
        world_size=s.ctx.world_size,
    )


def _weights_sha(ckpt: Checkpoint | None) -> str | None:
    if ckpt is None:
        return None
    return read_meta(ckpt.path)["files"][MODEL_FILE]["sha256"]


def _restore(state: TrainState, ckpt: Checkpoint) -> None:
    ts = load_training_state(ckpt.path)
    weights = load_model_state(ckpt.path)
    try:
        state.model.load_state_dict(weights, strict=True)
        state.optimizer.load_state_dict(ts["optimizer"])
        state.scheduler.load_state_dict(ts["scheduler"])
        if ts.get("scaler"):
            state.scaler.load_state_dict(ts["scaler"])
    except (RuntimeError, KeyError, ValueError) as e:
        raise ArtifactError(
            f"{ckpt.path}: does not fit this model ({str(e).splitlines()[0][:200]})"
        ) from None
    if state.master is not None:
        state.master.refresh()
    restore_rng_state(ts["rng"])
    state.step = int(ts["step"])
    state.elapsed = float(ts.get("elapsed_s", 0.0))
    state.tokens = int(ts.get("tokens", 0))


def _run_stats(s: Setup, state: TrainState) -> dict[str, Any]:
    cfg = s.config
    return {
        "step": state.step,
        "max_steps": cfg.max_steps,
        "epochs": state.step * cfg.batch_size / max(1, len(s.train)),
        "tokens": state.tokens,
        "elapsed_s": round(state.elapsed, 3),
        "parameters": state.model.num_parameters(),
        "train": state.last_train,
        "valid": state.last_valid,
    }


# --------------------------------------------------------------------------------------------------
# fit: the loop


def fit(s: Setup, state: TrainState, checkpointer: Checkpointer, logger: MetricLogger, run: RunDir) -> None:
    cfg, ctx, rep, device = s.config, s.ctx, s.reporter, s.device
    B, m = cfg.batch_size, cfg.resolved_micro_batch_size
    # With sbo_weight 0 the SBO head takes no part in the forward pass: DDP must be told.
    model = ctx.wrap_model(state.runner, find_unused_parameters=cfg.sbo_weight == 0)
    order = D.GlobalOrder(len(s.train), cfg.seed)
    sampler = D.StepSampler(order, B, m, state.step, cfg.max_steps, ctx.rank, ctx.world_size)
    loader = D.train_loader(
        s.train,
        seed=cfg.seed,
        masking=cfg.masking,
        vocab=s.vocab,
        max_sbo_positions=s.model_config.sbo_num_positions,
        sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
    )
    micro_indices = list(sampler.micro_indices)
    meter = StepMeter()
    peak = _peak_tflops(device, s.precision)
    rep.start("pretraining", total=cfg.max_steps, unit="steps")
    rep.update(state.step)
    fields: dict[str, Any] = {}
    session_start, elapsed_before = time.perf_counter(), state.elapsed
    interval_start = session_start
    batches: Iterator[dict[str, Any]] = iter(loader)
    model.train()

    for step in range(state.step, cfg.max_steps):
        micro = [next(batches) for _ in micro_indices]
        for batch in micro:
            D.raise_if_error(batch)
        try:
            lr = train_step(s, state, model, micro, micro_indices, step, meter)
        except Exception as e:
            if is_out_of_memory(e):
                raise _oom_error(s, step, micro) from None
            raise
        state.step = step + 1
        meter.steps += 1
        state.elapsed = elapsed_before + (time.perf_counter() - session_start)

        if state.step % cfg.log_every == 0 or state.step == cfg.max_steps:
            now = time.perf_counter()
            summary = _reduce_summary(meter, ctx, cfg.sbo_weight)
            seconds = max(now - interval_start, 1e-9)
            record = {
                "split": "train",
                **summary,
                "lr": lr,
                "tokens_per_s": meter.tokens / seconds,
                "model_tflops_per_s": meter.flops / seconds / 1e12,  # all processes together
                **({"mfu": meter.flops / seconds / (peak * 1e12 * ctx.world_size)} if peak else {}),
                "elapsed_s": round(state.elapsed, 3),
            }
            state.last_train = {"step": state.step, **record}
            if ctx.is_main:
                logger.log_dict(record, state.step)
            fields = {
                "loss": record["loss"],
                "mlm": record["mlm_loss"],
                "sbo": record["sbo_loss"],
                "acc": record["mlm_acc"],
                "lr": lr,
                "tok/s": int(record["tokens_per_s"]),
                **({"mfu": f"{100 * record['mfu']:.1f}%"} if peak else {}),
            }
            meter.reset()
            interval_start = now
        rep.update(state.step, **fields)

        last = state.step == cfg.max_steps
        paused = time.perf_counter()
        if len(s.valid) and (
            (cfg.eval_every > 0 and state.step % cfg.eval_every == 0) or (last and cfg.eval_every >= 0)
        ):
            try:
                record = evaluate(s, state.runner)
            except Exception as e:
                if is_out_of_memory(e):
                    raise _oom_error(s, step, micro) from None
                raise
            record["elapsed_s"] = round(elapsed_before + (time.perf_counter() - session_start), 3)
            state.last_valid = {"step": state.step, **record}
            if ctx.is_main:
                logger.log_dict(record, state.step)
                rep.log(
                    f"step {state.step:,}: valid loss {record['loss']:.4f}  mlm acc {record['mlm_acc']:.3f}"
                )
        if state.step % cfg.save_every == 0 or last:
            state.elapsed = elapsed_before + (time.perf_counter() - session_start)
            if ctx.is_main:
                _save(s, state, checkpointer, run, order)
            ctx.barrier()
        interval_start += time.perf_counter() - paused  # evaluation and saving do not count in tokens/s
    rep.finish()


def _peak_tflops(device: torch.device, precision: str) -> float | None:
    """The device's dense 16-bit peak, for MFU: GPUs we know, training in bf16/fp16 (fp32 and TF32 run
    against other, lower peaks, so an MFU against the 16-bit one would mislead)."""
    if device.type != "cuda" or precision == "fp32":
        return None
    return peak_tflops(torch.cuda.get_device_name(device))


def train_step(
    s: Setup,
    state: TrainState,
    model: torch.nn.Module,
    micro: list[dict[str, Any]],
    micro_indices: list[int],
    step: int,
    meter: StepMeter,
) -> float:
    """One optimizer step over this rank's micro-batches (collated: unpadded, or padded for the
    reference layout); returns the learning rate it used. `benchmarks/bench_train.py` times this."""
    cfg, ctx, device = s.config, s.ctx, s.device
    lengths = [sequence_lengths(b) for b in micro]  # real tokens of each sequence
    tokens_here = [sum(n) for n in lengths]
    counts = torch.tensor(
        [
            sum(len(b["mlm_labels"]) for b in micro),
            sum(len(b["sbo_labels"]) for b in micro),
            sum(tokens_here),
        ],
        dtype=torch.float64,
    )
    counts = ctx.all_reduce_sum(counts)  # the whole step's counts, over all processes
    total_mlm, total_sbo = max(float(counts[0]), 1.0), max(float(counts[1]), 1.0)
    state.tokens += int(counts[2])
    lr = state.scheduler.get_last_lr()[0]
    step_loss = torch.zeros((), dtype=torch.float32, device=device)
    # bf16-master accumulates in fp32 on the master. With one micro-batch a step, DDP averages it during
    # the backward pass (in fp32: `fp32_allreduce_hook`); with several, they stay local and the master's
    # gradients are averaged once, in fp32, after the last (DDP would have to accumulate them in bf16).
    reduce_after = state.master is not None and len(micro) > 1
    for k, (j, batch) in enumerate(zip(micro_indices, micro, strict=True)):
        n_mlm, n_sbo = len(batch["mlm_labels"]), len(batch["sbo_labels"])
        meter.tokens += tokens_here[k]  # this process's; summed over the processes when logged
        meter.flops += training_flops(s.model_config, lengths[k], n_mlm, n_sbo if cfg.sbo_weight != 0 else 0)
        torch.manual_seed(D.micro_batch_seed(cfg.seed, step, j))
        b = {key: v.to(device, non_blocking=True) for key, v in batch.items() if key != "index"}
        sync = k == len(micro) - 1 and not reduce_after
        with ctx.no_sync(model, sync=sync), autocast(device, s.precision):
            out = model(**encoder_inputs(batch, b), **targets(b), sbo_weight=cfg.sbo_weight)
            # Each micro-batch's share of the step's token-weighted means (see the module docstring).
            loss = out["mlm_loss"] * (n_mlm / total_mlm) + cfg.sbo_weight * out["sbo_loss"] * (
                n_sbo / total_sbo
            )
            state.scaler.scale(loss * ctx.world_size).backward()
        if state.master is not None:
            state.master.grads_to_master()
        step_loss += loss.detach()
        meter.add(
            mlm_loss_sum=out["mlm_loss"].detach() * n_mlm,
            sbo_loss_sum=out["sbo_loss"].detach() * n_sbo,
            mlm_correct=out["mlm_correct"],
            mlm_count=n_mlm,
            sbo_correct=out["sbo_correct"],
            sbo_count=n_sbo,
        )
    if reduce_after and ctx.world_size > 1:
        ctx.all_reduce_mean_([p.grad for p in state.model.parameters() if p.grad is not None])
    step_loss = ctx.all_reduce_sum(step_loss)
    if state.scaler.is_enabled():
        state.scaler.unscale_(state.optimizer)
    max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(state.model.parameters(), max_norm)
    loss_value, norm_value = float(step_loss), float(grad_norm)
    bad = None
    if not math.isfinite(loss_value):
        bad = f"the loss became {loss_value}"
    elif not math.isfinite(norm_value) and not state.scaler.is_enabled():
        bad = f"the gradient norm became {norm_value}"
    if bad:
        raise _diverged_error(s, step, bad)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    if state.master is not None:
        state.master.refresh()
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    meter.add(grad_norm=norm_value)
    return lr


def sequence_lengths(batch: dict[str, Any]) -> list[int]:
    """The real tokens of each sequence of a collated micro-batch, unpadded or padded."""
    if "cu_seqlens" in batch:
        return batch["cu_seqlens"].diff().tolist()
    return batch["attention_mask"].sum(dim=1).tolist()


def _reduce_summary(meter: StepMeter, ctx: DistributedContext, sbo_weight: float) -> dict[str, float]:
    if ctx.world_size > 1:
        keys = sorted(meter.sums)
        own = [float(meter.sums[k]) for k in keys] + [float(meter.tokens), meter.flops]
        *values, tokens, flops = ctx.all_reduce_sum(torch.tensor(own, dtype=torch.float64)).tolist()
        meter.sums = dict(zip(keys, values, strict=True))
        meter.sums["grad_norm"] /= ctx.world_size  # the same on every rank
        meter.tokens, meter.flops = int(tokens), flops
    return meter.summary(sbo_weight)


def _diverged_error(s: Setup, step: int, what: str) -> TrainingError:
    last = latest_checkpoint(s.plan.out)
    kept = f"the last good checkpoint is {last.path}" if last else "no checkpoint was saved yet"
    return TrainingError(
        f"{what} at step {step + 1}; training stopped without saving, {kept} "
        "(try a lower --lr, a longer --warmup-steps, or --precision bf16/fp32)"
    )


def _oom_error(s: Setup, step: int, micro: list[dict[str, Any]]) -> TrainingError:
    m = s.config.resolved_micro_batch_size
    longest = max(max(sequence_lengths(b)) for b in micro)
    hint = f"lower --micro-batch-size (e.g. --micro-batch-size {m // 2})" if m > 1 else "use a smaller model"
    if s.precision == "fp32" and s.device.type == "cuda":
        hint += " or use --precision bf16"
    return TrainingError(
        f"out of memory on {s.device} at step {step + 1} with micro-batches of {m} sequences of up to "
        f"{longest} tokens; {hint} (the batch size, and so the training, stays the same)"
    )


@torch.no_grad()
def evaluate(s: Setup, model: SpanBert) -> dict[str, Any]:
    """Losses and accuracies on the valid split (fixed masks: epoch 0), token-weighted over the split."""
    cfg, ctx, device = s.config, s.ctx, s.device
    n = len(s.valid) if cfg.eval_sequences == 0 else min(cfg.eval_sequences, len(s.valid))
    loader = D.eval_loader(
        s.valid,
        seed=cfg.seed,
        masking=cfg.masking,
        vocab=s.vocab,
        max_sbo_positions=s.model_config.sbo_num_positions,
        batches=D.eval_batches(n, cfg.resolved_micro_batch_size, ctx.rank, ctx.world_size),
        num_workers=min(cfg.num_workers, 2),
        pin_memory=device.type == "cuda",
    )
    model.eval()
    try:
        sums = masked_lm_sums(model, loader, device, s.precision, cfg.sbo_weight)
    finally:
        model.train()
    m = summarize(ctx.all_reduce_sum(sums).tolist(), cfg.sbo_weight, n)
    if cfg.sbo_weight == 0:  # no SBO head in the forward pass: nothing measured
        m["sbo_loss"] = m["sbo_acc"] = 0.0
    keys = ("loss", "mlm_loss", "sbo_loss", "mlm_acc", "sbo_acc", "sequences")
    return {"split": "valid", **{k: m[k] for k in keys}}


def _save(s: Setup, state: TrainState, checkpointer: Checkpointer, run: RunDir, order: D.GlobalOrder) -> None:
    cfg = s.config
    position = state.step * cfg.batch_size
    training_state = {
        "format": 1,
        "step": state.step,
        "epoch": order.epoch_at(position),
        "position": position,
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict() if state.scaler.is_enabled() else {},
        "rng": capture_rng_state(),
        "elapsed_s": state.elapsed,
        "tokens": state.tokens,
        "params": artifacts.canonical_json(s.plan.params),
        "inputs": artifacts.canonical_json([ref.identity() for ref in s.plan.inputs]),
        "fingerprint": s.plan.fingerprint,
    }
    ckpt = checkpointer.save(
        state.step,
        state.model.state_dict(),
        training_state,
        # The world size is a record only: a checkpoint resumes on any number of processes.
        meta={"epoch": order.epoch_at(position), "position": position, "world_size": s.ctx.world_size},
    )
    # The manifest first lists only the checkpoints that stay, then the others go: a kill in between
    # leaves unlisted directories, never a manifest naming missing files.
    run.write("running", _run_stats(s, state), checkpointer.kept())
    checkpointer.prune()
    s.reporter.log(f"saved {ckpt.path}")


__all__ = [
    "DistributedContext",
    "PretrainResult",
    "Setup",
    "TrainState",
    "TrainingError",
    "build_optimizer",
    "build_scheduler",
    "build_state",
    "evaluate",
    "fit",
    "list_checkpoints",
    "lr_factor",
    "main",
    "pretrain",
    "setup",
    "train_step",
    "verify_shards",
]
