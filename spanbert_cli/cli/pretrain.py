"""`spanbert pretrain`: shards → a trained run; `spanbert export`: a run's checkpoint → a Hugging Face directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spanbert_cli.cli._common import (
    JsonOpt,
    OutOpt,
    QuietOpt,
    RichReporter,
    SeedOpt,
    WorkspaceOpt,
    emit_json,
    err,
    report_artifact,
    say,
    stats_table,
)

_MODEL = "Model"
_OPTIM = "Optimisation"
_MASK = "Masking"
_RUN = "Logging, checkpoints, resumption"


def pretrain(
    shards: Annotated[
        Path | None,
        typer.Argument(help="A shard artifact (default: the newest in the workspace).", show_default=False),
    ] = None,
    out: OutOpt = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Model preset: tiny, mini, small, base or large (default: base).",
            show_default=False,
            rich_help_panel=_MODEL,
        ),
    ] = None,
    model_config: Annotated[
        Path | None,
        typer.Option(
            help="Architecture from a JSON file (our keys or a Hugging Face config.json).",
            show_default=False,
            rich_help_panel=_MODEL,
        ),
    ] = None,
    init_from: Annotated[
        Path | None,
        typer.Option(
            help="Start from these weights: a run, checkpoint, export or Hugging Face BERT directory.",
            show_default=False,
            rich_help_panel=_MODEL,
        ),
    ] = None,
    lr: Annotated[float, typer.Option(help="Peak learning rate.", rich_help_panel=_OPTIM)] = 1e-4,
    warmup_steps: Annotated[
        int | None,
        typer.Option(
            help="Linear warm-up steps (default: min(10000, max-steps / 10)).",
            show_default=False,
            rich_help_panel=_OPTIM,
        ),
    ] = None,
    max_steps: Annotated[
        int,
        typer.Option(help="Optimizer steps; the learning rate decays linearly to 0.", rich_help_panel=_OPTIM),
    ] = 2_400_000,
    batch_size: Annotated[
        int, typer.Option(help="Sequences per optimizer step.", rich_help_panel=_OPTIM)
    ] = 256,
    micro_batch_size: Annotated[
        int | None,
        typer.Option(
            help="Sequences per forward pass (gradient accumulation) (default: --batch-size).",
            show_default=False,
            rich_help_panel=_OPTIM,
        ),
    ] = None,
    precision: Annotated[
        str,
        typer.Option(
            help="auto (fp32 on CPU, bf16 or fp16 on GPU), bf16, fp16 or fp32.", rich_help_panel=_OPTIM
        ),
    ] = "auto",
    weight_decay: Annotated[
        float, typer.Option(help="AdamW weight decay (not on biases and LayerNorm).", rich_help_panel=_OPTIM)
    ] = 0.01,
    grad_clip: Annotated[
        float, typer.Option(help="Clip the gradient to this global norm (0: off).", rich_help_panel=_OPTIM)
    ] = 1.0,
    scheme: Annotated[
        str, typer.Option(help="Masking scheme: span, word or token.", rich_help_panel=_MASK)
    ] = "span",
    span_len: Annotated[
        int | None,
        typer.Option(
            help="Fixed span length in words (span scheme).", show_default=False, rich_help_panel=_MASK
        ),
    ] = None,
    geometric_p: Annotated[
        float, typer.Option(help="p of the geometric span-length distribution.", rich_help_panel=_MASK)
    ] = 0.2,
    max_span_len: Annotated[int, typer.Option(help="Longest span, in words.", rich_help_panel=_MASK)] = 10,
    mask_ratio: Annotated[float, typer.Option(help="Share of tokens masked.", rich_help_panel=_MASK)] = 0.15,
    sbo_weight: Annotated[
        float, typer.Option(help="Weight of the span boundary objective (0: off).", rich_help_panel=_MASK)
    ] = 1.0,
    seed: SeedOpt = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    num_workers: Annotated[int, typer.Option(help="Data-loader worker processes.")] = 2,
    compile_model: Annotated[
        bool, typer.Option("--compile", help="torch.compile the encoder (GPU; slow first steps).")
    ] = False,
    log_every: Annotated[int, typer.Option(help="Steps between metric lines.", rich_help_panel=_RUN)] = 10,
    eval_every: Annotated[
        int,
        typer.Option(help="Steps between validations (0: at the end only, -1: never).", rich_help_panel=_RUN),
    ] = 1000,
    eval_sequences: Annotated[
        int, typer.Option(help="Valid sequences per validation (0: all).", rich_help_panel=_RUN)
    ] = 0,
    save_every: Annotated[int, typer.Option(help="Steps between checkpoints.", rich_help_panel=_RUN)] = 1000,
    keep_last: Annotated[int, typer.Option(help="Checkpoints kept (0: all).", rich_help_panel=_RUN)] = 3,
    tensorboard: Annotated[
        bool, typer.Option("--tensorboard", help="Also log to RUN/tensorboard.", rich_help_panel=_RUN)
    ] = False,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue from the latest checkpoint in RUN.", rich_help_panel=_RUN),
    ] = False,
    resume_from: Annotated[
        Path | None,
        typer.Option(
            help="Continue from this checkpoint directory.", show_default=False, rich_help_panel=_RUN
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace a different run at --out, or resume with changed parameters.",
            rich_help_panel=_RUN,
        ),
    ] = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Pretrain SpanBERT (span masking + span boundary objective) on a shard artifact."""
    from spanbert_cli.training import PretrainConfig
    from spanbert_cli.training import pretrain as run

    config = PretrainConfig(
        model=model,
        model_config=str(model_config) if model_config else None,
        init_from=str(init_from) if init_from else None,
        lr=lr,
        warmup_steps=warmup_steps,
        max_steps=max_steps,
        batch_size=batch_size,
        micro_batch_size=micro_batch_size,
        weight_decay=weight_decay,
        grad_clip=grad_clip,
        precision=precision,
        scheme=scheme,
        mask_ratio=mask_ratio,
        geometric_p=geometric_p,
        max_span_len=max_span_len,
        span_len=span_len,
        sbo_weight=sbo_weight,
        seed=seed,
        device=device,
        num_workers=num_workers,
        log_every=log_every,
        eval_every=eval_every,
        eval_sequences=eval_sequences,
        save_every=save_every,
        keep_last=keep_last,
        tensorboard=tensorboard,
        compile=compile_model,
    )
    result = run(
        shards,
        config,
        out=out,
        workspace=workspace,
        resume=resume,
        resume_from=resume_from,
        force=force,
        reporter=RichReporter(quiet),
    )
    a = result.artifact
    if result.cached:
        say(f"[green]up to date[/]: {a.path} ({a.kind} {a.fingerprint[:12]}, step {result.step:,})", quiet)
    elif not quiet:
        rows = {
            "steps": f"{result.start_step:,} → {result.step:,}" if result.start_step else f"{result.step:,}",
            "tokens (this session)": result.tokens,
            "train loss": result.train.get("loss", float("nan")),
            "train mlm acc": result.train.get("mlm_acc", float("nan")),
        }
        if result.valid:
            rows["valid loss"] = result.valid["loss"]
            rows["valid mlm acc"] = result.valid["mlm_acc"]
        rows["device / precision"] = f"{result.device} / {result.precision}"
        rows["time"] = f"{result.seconds:.1f} s"
        rows["overall throughput"] = f"{result.tokens / max(result.seconds, 1e-9):,.0f} tokens/s"
        err.print(stats_table("pretrain", rows))
        err.print(
            f"[green]wrote[/] {a.path} ({a.kind} {a.fingerprint[:12]}); Hugging Face model in {result.export_dir}"
        )
    if as_json:
        emit_json(
            {
                "path": str(a.path),
                "kind": a.kind,
                "fingerprint": a.fingerprint,
                "cached": result.cached,
                "step": result.step,
                "export": str(result.export_dir) if result.export_dir else None,
                "train": result.train,
                "valid": result.valid,
                "stats": a.manifest.stats,
            }
        )


def export(
    run: Annotated[
        Path,
        typer.Argument(
            help="A run directory (its latest checkpoint) or a checkpoint directory.", show_default=False
        ),
    ],
    out: OutOpt = None,
    step: Annotated[
        int | None, typer.Option(help="Export this step's checkpoint of the run.", show_default=False)
    ] = None,
    workspace: WorkspaceOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a different artifact at --out.")] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Export a checkpoint as a Hugging Face BERT directory (transformers' AutoModelForMaskedLM loads it)."""
    from spanbert_cli.export import export as run_export

    result = run_export(
        run, out=out, step=step, workspace=workspace, force=force, reporter=RichReporter(quiet)
    )
    s = result.artifact.manifest.stats
    summary = {
        "checkpoint": str(result.source),
        "step": s["step"],
        "parameters": s["parameters"],
        "layers / hidden": f"{s['num_layers']} / {s['hidden_size']}",
        "vocabulary": s["vocab_size"],
    }
    report_artifact(
        result.artifact, cached=result.cached, as_json=as_json, quiet=quiet, title="export", summary=summary
    )


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain)


def register_export(app: typer.Typer) -> None:
    app.command("export")(export)
