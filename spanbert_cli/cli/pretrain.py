"""`spanbert pretrain`: shards → a trained run; `spanbert export`: a run's checkpoint → a Hugging Face directory."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from spanbert_cli import interrupts
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
    report_artifact,
    say,
    stats_table,
)
from spanbert_cli.cli.options import config_options
from spanbert_cli.training.config import RUN as RUN_PANEL
from spanbert_cli.training.config import PretrainConfig

_RUN = RUN_PANEL  # resumption beside the logging and checkpoint settings
_DIST = "Several processes (DDP)"

GpusOpt = Annotated[
    int | None,
    typer.Option(
        "--gpus",
        help="Train on N GPUs of this node: N processes, one per GPU, NCCL, DDP (per node with --nnodes).",
        show_default=False,
        rich_help_panel=_DIST,
    ),
]
ProcsOpt = Annotated[
    int | None,
    typer.Option(
        "--procs",
        help="Start N processes on this node on --device; with --device cpu they use gloo (debugging).",
        show_default=False,
        rich_help_panel=_DIST,
    ),
]
NnodesOpt = Annotated[int, typer.Option("--nnodes", help="Nodes of the job.", rich_help_panel=_DIST)]
NodeRankOpt = Annotated[
    int | None,
    typer.Option(
        "--node-rank",
        help="This node's rank, 0 to nnodes-1 (with --master-addr).",
        show_default=False,
        rich_help_panel=_DIST,
    ),
]
MasterAddrOpt = Annotated[
    str | None,
    typer.Option(
        "--master-addr", help="Address of node 0 (multi-node).", show_default=False, rich_help_panel=_DIST
    ),
]
MasterPortOpt = Annotated[
    int | None,
    typer.Option(
        "--master-port",
        help="Port on node 0 (default 29500; on one node without it: a free port).",
        show_default=False,
        rich_help_panel=_DIST,
    ),
]
RdzvEndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--rdzv-endpoint",
        help="HOST:PORT of a c10d rendezvous, instead of --master-addr and --node-rank.",
        show_default=False,
        rich_help_panel=_DIST,
    ),
]
DistTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--dist-timeout",
        help="Seconds a process waits for the others (collectives, rendezvous) before the job fails.",
        rich_help_panel=_DIST,
    ),
]


@config_options(config=PretrainConfig)
def pretrain(
    shards: Annotated[
        Path | None,
        typer.Argument(help="A shard artifact (default: the newest in the workspace).", show_default=False),
    ] = None,
    out: OutOpt = None,
    config: PretrainConfig = PretrainConfig(),
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
    wait: WaitOpt = False,
    gpus: GpusOpt = None,
    procs: ProcsOpt = None,
    nnodes: NnodesOpt = 1,
    node_rank: NodeRankOpt = None,
    master_addr: MasterAddrOpt = None,
    master_port: MasterPortOpt = None,
    rdzv_endpoint: RdzvEndpointOpt = None,
    dist_timeout: DistTimeoutOpt = 1800.0,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Pretrain SpanBERT (span masking + span boundary objective) on a shard artifact.

    --batch-size is global: with W processes each accumulates batch / (W x micro-batch) micro-batches per
    step, and the training does not depend on W. Under torchrun or srun, each process is one rank.
    """
    options = {
        "out": out,
        "workspace": workspace,
        "resume": resume,
        "resume_from": resume_from,
        "force": force,
    }
    launch = dict(
        gpus=gpus,
        procs=procs,
        device=config.device,
        nnodes=nnodes,
        node_rank=node_rank,
        master_addr=master_addr,
        master_port=master_port,
        rdzv_endpoint=rdzv_endpoint,
        timeout_s=dist_timeout,
    )
    with interrupts.activity(resume=resume_argv):
        result = run_distributed(_pretrain_worker, config, launch, shards, config, options, quiet)
    if result is None:  # a rank other than 0, or a node other than node 0: rank 0 reports
        return
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
        procs_note = f" x {result.world_size} processes" if result.world_size > 1 else ""
        rows["device / precision"] = f"{result.device}{procs_note} / {result.precision}"
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
    force: ForceOpt = False,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Export a checkpoint as a Hugging Face BERT directory (transformers' AutoModelForMaskedLM loads it)."""
    from spanbert_cli.model.export import export as run_export

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


def resume_argv(argv: Sequence[str], checkpoint: Path) -> list[str]:
    """The command line that continues an interrupted `spanbert pretrain` from `checkpoint`: the same one
    with --resume, or with `checkpoint` as its --resume-from; a --force that started the run over goes
    (it would start over again), one that resumed despite changed parameters stays."""
    args = list(argv)
    resuming = any(a == "--resume" or a.split("=")[0] == "--resume-from" for a in args)
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--resume-from":
            out += [a, str(checkpoint)]
            i += 2
            continue
        if a.startswith("--resume-from="):
            out.append(f"--resume-from={checkpoint}")
        elif a != "--force" or resuming:
            out.append(a)
        i += 1
    return out if resuming else [*out, "--resume"]


def _pretrain_worker(ctx: Any, shards: Path | None, config: Any, options: dict[str, Any], quiet: bool) -> Any:
    """What every training process runs (module level: launched processes import it by name)."""
    from spanbert_cli.training import pretrain as run

    main = ctx is None or ctx.is_main  # only rank 0 reports
    return run(shards, config, reporter=RichReporter(quiet) if main else None, ctx=ctx, **options)


def run_distributed(worker: Any, config: Any, launch: dict[str, Any], *args: Any) -> Any:
    """Run ``worker(ctx, *args)`` as the flags in `launch` say; return rank 0's result (None elsewhere).

    * started by torchrun or srun (RANK/WORLD_SIZE or a SLURM step of several tasks): this process is one
      rank, nothing is launched;
    * --gpus N / --procs N: N processes on this node (and --nnodes nodes);
    * else: this process alone, no process group.

    `config` (a dataclass with ``world_size`` and ``validate``) is checked for the world size before
    anything starts, so a batch that does not split over the processes fails at once, as one line.
    """
    from spanbert_cli.cli import _debug
    from spanbert_cli.training import distributed, launcher

    info = distributed.from_environment()
    if info is not None:
        kind = distributed.device_kind(launch.get("device", "auto"), launch.get("gpus"))
        dataclasses.replace(config, world_size=info.world_size).validate()
        result = distributed.run_in_process(
            info, kind, launch.get("timeout_s", distributed.DEFAULT_TIMEOUT_S), worker, *args
        )
        return result if info.rank == 0 else None
    plan = distributed.plan_launch(**launch)
    if plan is None:
        return worker(None, *args)  # one process: the training resolves its device itself
    dataclasses.replace(config, world_size=plan.world_size).validate()
    results = launcher.launch(plan, worker, *args, debug=_debug)
    return results.get(0)


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain)


def register_export(app: typer.Typer) -> None:
    app.command("export")(export)
