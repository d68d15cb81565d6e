"""`spanbert eval squad` (score predictions, or fine-tune a run and score it) and `spanbert eval mlm`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from spanbert_cli.cli._common import (
    ForceOpt,
    JsonOpt,
    OutOpt,
    QuietOpt,
    RichReporter,
    WaitOpt,
    WorkspaceOpt,
    emit_json,
    err,
    say,
)
from spanbert_cli.cli.options import config_options
from spanbert_cli.cli.pretrain import (
    DistTimeoutOpt,
    GpusOpt,
    MasterAddrOpt,
    MasterPortOpt,
    NnodesOpt,
    NodeRankOpt,
    ProcsOpt,
    RdzvEndpointOpt,
    run_distributed,
)
from spanbert_cli.errors import UsageError
from spanbert_cli.eval.config import DATA, SCORE, MlmEvalConfig, SquadConfig

app = typer.Typer(
    name="eval",
    help="Measure a pretrained run: SQuAD fine-tuning and official scoring, held-out MLM / SBO loss.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _value(v: Any) -> str:
    """Every digit, as the official scripts print them (repr of the float)."""
    return repr(v) if isinstance(v, (int, float)) else str(v)


def metrics_table(
    title: str, metrics: dict[str, Any], rows: dict[str, Any] | None = None, caption: str | None = None
) -> Table:
    table = Table(
        title=title, caption=caption, show_header=False, title_justify="left", caption_justify="left"
    )
    table.add_column(style="bold")
    table.add_column(justify="right")
    for k, v in metrics.items():
        table.add_row(k, _value(v))
    for k, v in (rows or {}).items():
        table.add_row(k, v if isinstance(v, str) else _value(v))
    return table


def _ids(ids: list[str]) -> str:
    shown = ", ".join(ids[:3])
    return shown + (f", … ({len(ids) - 3} more)" if len(ids) > 3 else "")


@app.command("squad")
@config_options(config=SquadConfig)
def squad(
    run: Annotated[
        Path | None,
        typer.Argument(
            help="A pretrain run, one of its checkpoints, or a Hugging Face BERT directory "
            "(default: the newest run in the workspace).",
            show_default=False,
        ),
    ] = None,
    predictions: Annotated[
        Path | None,
        typer.Option(
            help="Score this {id: answer} file (.json / .json.gz) instead of fine-tuning.",
            show_default=False,
            rich_help_panel=SCORE,
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            help="The SQuAD or MRQA file (or datasets name) the predictions answer.",
            show_default=False,
            rich_help_panel=SCORE,
        ),
    ] = None,
    na_probs: Annotated[
        Path | None,
        typer.Option(
            help="v2.0: {id: no-answer probability}; adds the best-threshold search.",
            show_default=False,
            rich_help_panel=SCORE,
        ),
    ] = None,
    na_prob_thresh: Annotated[
        float, typer.Option(help="v2.0: predict no answer above this probability.", rich_help_panel=SCORE)
    ] = 1.0,
    train: Annotated[
        str | None,
        typer.Option(
            help="Training data: a SQuAD or MRQA file, or a datasets name (default: rajpurkar/squad).",
            show_default=False,
            rich_help_panel=DATA,
        ),
    ] = None,
    dev: Annotated[
        str | None,
        typer.Option(
            help="Dev data to predict and score: a SQuAD or MRQA file, or a datasets name "
            "(default: rajpurkar/squad, validation).",
            show_default=False,
            rich_help_panel=DATA,
        ),
    ] = None,
    out: OutOpt = None,
    config: SquadConfig = SquadConfig(),
    gpus: GpusOpt = None,
    procs: ProcsOpt = None,
    nnodes: NnodesOpt = 1,
    node_rank: NodeRankOpt = None,
    master_addr: MasterAddrOpt = None,
    master_port: MasterPortOpt = None,
    rdzv_endpoint: RdzvEndpointOpt = None,
    dist_timeout: DistTimeoutOpt = 1800.0,
    workspace: WorkspaceOpt = None,
    force: ForceOpt = False,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fine-tune a pretrained run on SQuAD and score it; or score a predictions file (--predictions).

    Scoring is the official SQuAD v1.1 / v2.0 evaluation, to the digit. Fine-tuning follows the paper (lr 2e-5, batch 32, 4 epochs, 10% warm-up) and writes an EVAL artifact: predictions.json, na_probs.json (v2.0), metrics.json. With --gpus / --procs (or under torchrun / srun) several processes fine-tune with a global --batch-size, as in `spanbert pretrain`; rank 0 predicts and writes.
    """
    if predictions is not None:
        extra = [
            flag
            for flag, value in (("RUN", run), ("--train", train), ("--dev", dev), ("--out", out))
            if value is not None
        ]
        if extra:
            raise UsageError(
                f"--predictions scores a file: drop {', '.join(extra)} (they are for fine-tuning)"
            )
        if data is None:
            raise UsageError("--predictions needs --data, the SQuAD file the predictions answer")
        _score(predictions, data, config, na_probs, na_prob_thresh, as_json, quiet)
        return
    if data is not None or na_probs is not None:
        flag = "--data" if data is not None else "--na-probs"
        raise UsageError(f"{flag} goes with --predictions; to fine-tune, give RUN, --train and --dev")

    launch = {
        "gpus": gpus,
        "procs": procs,
        "device": config.device,
        "nnodes": nnodes,
        "node_rank": node_rank,
        "master_addr": master_addr,
        "master_port": master_port,
        "rdzv_endpoint": rdzv_endpoint,
        "timeout_s": dist_timeout,
    }
    options = {"out": out, "workspace": workspace, "force": force}
    result = run_distributed(_squad_worker, config, launch, run, train, dev, config, options, quiet)
    if result is None:  # not rank 0: rank 0 reports
        return
    a, s = result.artifact, result.artifact.manifest.stats
    if result.cached:
        say(f"[green]up to date[/]: {a.path} ({a.kind} {a.fingerprint[:12]})", quiet)
    elif not quiet:
        t = s["train"]
        rows = {
            "train questions / windows": f"{t['questions']:,} / {t['features']['windows']:,}",
            "steps (epochs)": f"{t['steps']:,} ({t['epochs']:g})",
            "train loss": f"{t['first_loss']:.4f} → {t['loss']:.4f}",
            "dev questions / windows": f"{s['dev']['questions']:,} / {s['dev']['windows']:,}",
            "device / precision": f"{s['device']}{_procs(a)} / {s['precision']}",
            "fine-tuning": f"{t['seconds']:.1f} s, {t['windows_per_s']:.1f} windows/s",
        }
        err.print(metrics_table(f"SQuAD v{s['version']} dev (official metrics)", result.metrics, rows))
        err.print(f"[green]wrote[/] {a.path} ({a.kind} {a.fingerprint[:12]})")
    if as_json:
        emit_json(
            {
                "path": str(a.path),
                "kind": a.kind,
                "fingerprint": a.fingerprint,
                "cached": result.cached,
                "metrics": result.metrics,
                "stats": s,
            }
        )


def _procs(a: Any) -> str:
    world = a.manifest.extra.get("runtime", {}).get("world_size", 1)
    return f" x {world} processes" if world > 1 else ""


def _squad_worker(
    ctx: Any,
    run: Path | None,
    train: str | None,
    dev: str | None,
    config: Any,
    options: dict[str, Any],
    quiet: bool,
) -> Any:
    """What every fine-tuning process runs (module level: launched processes import it by name)."""
    from spanbert_cli.eval.squad.finetune import finetune_squad

    main = ctx is None or ctx.is_main
    return finetune_squad(
        run, train, dev, config, reporter=RichReporter(quiet) if main else None, ctx=ctx, **options
    )


def _score(
    predictions: Path,
    data: str,
    config: SquadConfig,
    na_probs: Path | None,
    thresh: float,
    as_json: bool,
    quiet: bool,
) -> None:
    from spanbert_cli.eval.squad.data import score_files

    scored = score_files(
        predictions,
        data,
        version=config.version,
        na_probs=na_probs,
        na_prob_thresh=thresh,
        threshold_search=config.threshold_search,
    )
    r = scored.result
    # Reported whatever --quiet says: they change what the figures mean.
    if r.missing:
        err.print(f"warning: {len(r.missing)} question(s) without a prediction score 0: {_ids(r.missing)}")
    if r.unknown:
        err.print(
            f"warning: {len(r.unknown)} prediction(s) for ids not in the data were ignored: {_ids(r.unknown)}"
        )
    if not quiet:
        title = f"SQuAD v{r.version}, official metrics"
        err.print(
            metrics_table(
                title, r.metrics, caption=f"{Path(scored.data.source).name}: {len(scored.data):,} questions"
            )
        )
    if as_json:
        emit_json(r.metrics)


_MASK = "Masking (default: the run's own)"


@app.command("mlm")
@config_options(config=MlmEvalConfig)
def mlm(
    run: Annotated[
        Path,
        typer.Argument(
            help="A pretrain run, one of its checkpoints, or an exported model.", show_default=False
        ),
    ],
    shards: Annotated[Path, typer.Argument(help="A shard artifact (its valid split).", show_default=False)],
    out: OutOpt = None,
    config: MlmEvalConfig = MlmEvalConfig(),
    workspace: WorkspaceOpt = None,
    force: ForceOpt = False,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Held-out MLM and SBO loss, accuracy and perplexity, masked as pretraining masks (an EVAL artifact)."""
    from spanbert_cli.eval.mlm import evaluate_mlm

    result = evaluate_mlm(
        run, shards, config, out=out, workspace=workspace, force=force, reporter=RichReporter(quiet)
    )
    a, s = result.artifact, result.artifact.manifest.stats
    if result.cached:
        say(f"[green]up to date[/]: {a.path} ({a.kind} {a.fingerprint[:12]})", quiet)
    elif not quiet:
        rows = {
            "masking from": s["masking_from"],
            "device / precision": f"{s['device']} / {s['precision']}",
            "time": f"{s['seconds']:.1f} s, {s['sequences_per_s']:.1f} sequences/s",
        }
        err.print(metrics_table(f"held-out MLM / SBO ({config.split})", result.metrics, rows))
        err.print(f"[green]wrote[/] {a.path} ({a.kind} {a.fingerprint[:12]})")
    if as_json:
        emit_json(
            {
                "path": str(a.path),
                "kind": a.kind,
                "fingerprint": a.fingerprint,
                "cached": result.cached,
                "metrics": result.metrics,
                "stats": s,
            }
        )
