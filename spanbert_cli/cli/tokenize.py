"""`spanbert tokenize`: raw corpus → tokenized documents."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from spanbert_cli.cli._common import (
    ForceOpt,
    JsonOpt,
    OutOpt,
    QuietOpt,
    RichReporter,
    WaitOpt,
    WorkspaceOpt,
    report_artifact,
)
from spanbert_cli.cli.options import config_options
from spanbert_cli.text.corpus import default_workers
from spanbert_cli.text.tokenize import TokenizeConfig


@config_options(config=TokenizeConfig)
def tokenize(
    corpus: Annotated[
        list[str] | None,
        typer.Argument(
            help="Files, directories (recursive), globs, or - for stdin (none with --hf-dataset).",
            show_default=False,
        ),
    ] = None,
    out: OutOpt = None,
    config: TokenizeConfig = TokenizeConfig(workers=1),
    max_file_size: Annotated[int, typer.Option(help="Bound on each Arrow file, in MB.")] = 256,
    workers: Annotated[
        int | None, typer.Option(help="Encoding processes (default: all cores).", show_default=False)
    ] = None,
    workspace: WorkspaceOpt = None,
    force: ForceOpt = False,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Tokenize a raw corpus into documents of WordPiece ids with sentence boundaries."""
    from spanbert_cli.text.tokenize import tokenize as run

    config = dataclasses.replace(
        config,
        max_file_bytes=max_file_size * 1024 * 1024,
        workers=default_workers() if workers is None else workers,
    )
    result = run(
        corpus or [], config, out=out, workspace=workspace, force=force, reporter=RichReporter(quiet)
    )
    s = result.artifact.manifest.stats
    summary = {
        "documents": s["documents"],
        "sentences": s["sentences"],
        "tokens": s["tokens"],
        "unknown-token rate": f"{100 * s['unk_rate']:.3f} %",
        "invalid UTF-8 replaced": s["replaced_invalid_utf8"],
        "vocabulary": s["vocab_size"],
        "time": f"{s['seconds']:.1f} s",
        "throughput": f"{s['input_bytes'] / 1e6 / max(s['seconds'], 1e-9):.2f} MB/s",
    }
    report_artifact(
        result.artifact, cached=result.cached, as_json=as_json, quiet=quiet, title="tokenize", summary=summary
    )


def register(app: typer.Typer) -> None:
    app.command("tokenize")(tokenize)
