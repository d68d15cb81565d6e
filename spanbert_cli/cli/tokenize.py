"""`spanbert tokenize`: raw corpus → tokenized documents."""

from __future__ import annotations

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
from spanbert_cli.corpus import default_workers


def tokenize(
    corpus: Annotated[
        list[str],
        typer.Argument(help="Files, directories (recursive), globs, or - for stdin.", show_default=False),
    ],
    out: OutOpt = None,
    docs: Annotated[
        str, typer.Option(help="What makes a document in plain text: blank-line, file or line.")
    ] = "blank-line",
    text_field: Annotated[str, typer.Option(help="Field holding the text in JSONL records.")] = "text",
    errors: Annotated[
        str, typer.Option(help="Invalid UTF-8: strict (stop) or replace (U+FFFD, counted).")
    ] = "strict",
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="An existing tokenizer.json or BERT vocab.txt (default: train WordPiece on the corpus)."
        ),
    ] = None,
    vocab_size: Annotated[int, typer.Option(help="Vocabulary size of a trained tokenizer.")] = 30522,
    cased: Annotated[bool, typer.Option("--cased/--uncased", help="Keep case (SpanBERT is cased).")] = True,
    part: Annotated[
        str | None, typer.Option(help="Take the deterministic share i/N of the input files (1-based).")
    ] = None,
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
    from spanbert_cli.tokenizing import TokenizeConfig
    from spanbert_cli.tokenizing import tokenize as run

    config = TokenizeConfig(
        docs=docs,
        text_field=text_field,
        errors=errors,
        tokenizer=tokenizer,
        vocab_size=vocab_size,
        cased=cased,
        part=part,
        max_file_bytes=max_file_size * 1024 * 1024,
        workers=workers or default_workers(),
    )
    result = run(corpus, config, out=out, workspace=workspace, force=force, reporter=RichReporter(quiet))
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
