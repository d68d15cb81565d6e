"""What every command shares: options, the stderr console, progress bars and result printing."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from spanbert_cli.artifacts import Artifact, locks

# Human output and progress go to stderr so that `--json` output on stdout can be piped.
err = Console(stderr=True, highlight=False)

OutOpt = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Output artifact directory (default: under the workspace)."),
]
WorkspaceOpt = Annotated[
    Path | None,
    typer.Option(
        "--workspace",
        envvar="SPANBERT_WORKSPACE",
        help="Root of default artifact paths (default: ./artifacts).",
        show_default=False,
    ),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary on stderr.")]
ForceOpt = Annotated[
    bool,
    typer.Option("--force", help="Replace a different spanbert artifact at --out (never other files)."),
]


def _wait(value: bool) -> bool:
    locks.set_wait(value)  # before the command runs: its locks, and those of the processes it launches
    return value


WaitOpt = Annotated[
    bool,
    typer.Option(
        "--wait",
        callback=_wait,
        help="When another spanbert process is writing the same output, wait for it instead of stopping.",
    ),
]


class RichReporter:
    """A `Reporter` drawing one rich progress bar at a time on stderr."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self._progress: Progress | None = None
        self._task: Any = None

    def start(self, description: str, total: float | None = None, unit: str = "") -> None:
        self.finish()
        # Live bars only on a terminal: redirected to a file or a CI log they would print blank frames.
        if self.quiet or not err.is_terminal:
            return
        if unit == "bytes":
            columns = [
                SpinnerColumn(),
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
            ]
        else:
            columns = [
                SpinnerColumn(),
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
            ]
        # Transient: an error or the summary table replaces the bar, so a failure prints one line.
        self._progress = Progress(*columns, console=err, transient=True)
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, info="")

    def update(self, completed: float, **fields: Any) -> None:
        if self._progress is None:
            return
        info = "  ".join(f"{k} {_fmt(v)}" for k, v in fields.items())
        self._progress.update(self._task, completed=completed, info=info)

    def log(self, message: str) -> None:
        if self.quiet:
            return
        (self._progress.console if self._progress else err).print(message)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def say(message: str, quiet: bool = False) -> None:
    if not quiet:
        err.print(message)


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def stats_table(title: str, rows: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for k, v in rows.items():
        table.add_row(k, _fmt(v))
    return table


def report_artifact(
    artifact: Artifact, *, cached: bool, as_json: bool, quiet: bool, title: str, summary: dict[str, Any]
) -> None:
    """The end of every stage: a summary on stderr, and the result as JSON on stdout with --json."""
    if cached:
        say(f"[green]up to date[/]: {artifact.path} ({artifact.kind} {artifact.fingerprint[:12]})", quiet)
    elif not quiet:
        err.print(stats_table(title, summary))
        err.print(f"[green]wrote[/] {artifact.path} ({artifact.kind} {artifact.fingerprint[:12]})")
    if as_json:
        emit_json(
            {
                "path": str(artifact.path),
                "kind": artifact.kind,
                "fingerprint": artifact.fingerprint,
                "cached": cached,
                "stats": artifact.manifest.stats,
            }
        )


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
