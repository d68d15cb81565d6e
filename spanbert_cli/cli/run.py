"""`spanbert run RECIPE`: the whole pipeline (`spanbert report DIR` shows what it produced)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from spanbert_cli import interrupts
from spanbert_cli.cli._common import (
    JsonOpt,
    QuietOpt,
    RichReporter,
    WaitOpt,
    WorkspaceOpt,
    emit_json,
    err,
    say,
)
from spanbert_cli.cli.pretrain import GpusOpt, ProcsOpt

_STATE_STYLE = {"up to date": "green", "run": "yellow", "resume": "cyan"}


def _status_table(rows: list[Any], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("stage", style="bold")
    table.add_column("status")
    table.add_column("why")
    table.add_column("fingerprint", style="dim")
    for s in rows:
        style = _STATE_STYLE.get(s.state, "")
        state = "will run" if s.state == "run" else "will resume" if s.state == "resume" else s.state
        table.add_row(s.stage.name, f"[{style}]{state}[/]", s.reason, (s.fingerprint or "")[:12])
    return table


def _as_json(rows: list[Any]) -> list[dict[str, Any]]:
    return [
        {"stage": s.stage.name, "state": s.state, "reason": s.reason, "fingerprint": s.fingerprint}
        for s in rows
    ]


def run(
    recipe: Annotated[Path, typer.Argument(help="A recipe TOML file, e.g. pipelines/quickstart.toml.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Pipeline directory (default: WORKSPACE/pipelines/<recipe name>)."),
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a parameter: stage.key=value (repeatable).", show_default=False),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what is up to date and what would run.")
    ] = False,
    gpus: GpusOpt = None,
    procs: ProcsOpt = None,
    workspace: WorkspaceOpt = None,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run a recipe: every stage whose artifact is not up to date, in order.

    --gpus N / --procs N run pretraining and SQuAD fine-tuning on N processes, as `spanbert pretrain` does,
    in place of the recipe's own `gpus` / `procs` keys; the number of processes is not fingerprinted.
    """
    from spanbert_cli import artifacts
    from spanbert_cli.cli import _debug
    from spanbert_cli.pipeline.recipe import Processes, load_recipe, with_processes
    from spanbert_cli.pipeline.runner import run_pipeline, statuses

    rec = with_processes(load_recipe(recipe, sets or []), Processes(gpus, procs))
    directory = out if out is not None else artifacts.workspace_root(workspace) / "pipelines" / rec.name
    out_flag = "--out" if out is not None else "--workspace"
    if dry_run:
        rows = statuses(rec, directory, out_flag)
        if as_json:
            emit_json({"out": str(directory), "dry_run": True, "stages": _as_json(rows)})
        elif not quiet:
            err.print(_status_table(rows, f"plan of {rec.path} → {directory}"))
        return

    def on_stage(s: Any) -> None:
        if s.state == "up to date":
            say(f"[green]✓[/] {s.stage.name}: up to date", quiet)
        else:
            say(
                f"[yellow]▶[/] {s.stage.name}: {'resuming' if s.state == 'resume' else 'running'} ({s.reason})",
                quiet,
            )

    # Re-running the recipe resumes an interrupted pretraining stage from its last checkpoint.
    with interrupts.activity(resume=lambda argv, checkpoint: list(argv)):
        result = run_pipeline(
            rec,
            directory,
            reporter=RichReporter(quiet),
            on_stage=on_stage,
            out_flag=out_flag,
            debug=_debug,
        )
    if as_json:
        emit_json(
            {"out": str(directory), "dry_run": False, "ran": result.ran, "stages": _as_json(result.statuses)}
        )
    say(
        f"[green]done[/]: {directory} ({len(result.ran)} stage{'s' if len(result.ran) != 1 else ''} ran, "
        f"{len(result.statuses) - len(result.ran)} up to date); see `spanbert report {directory}`",
        quiet,
    )


def register(app: typer.Typer) -> None:
    app.command("run")(run)
