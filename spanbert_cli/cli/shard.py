"""`spanbert shard`: tokenized documents → pretraining sequences in Arrow shards."""

from __future__ import annotations

import dataclasses
from pathlib import Path
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
from spanbert_cli.shards.pack import ShardConfig


@config_options(config=ShardConfig)
def shard(
    tokenized: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Tokenize artifacts, all made with one tokenizer (default: the newest in the workspace).",
            show_default=False,
        ),
    ] = None,
    out: OutOpt = None,
    config: ShardConfig = ShardConfig(),
    shard_size: Annotated[float, typer.Option(help="Bound on each Arrow file, in MB.")] = 256,
    compression: Annotated[
        str, typer.Option(help="none (memory-mappable without copies) or zstd (smaller files).")
    ] = "none",
    workspace: WorkspaceOpt = None,
    force: ForceOpt = False,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Pack tokenized documents into [CLS] block [SEP] sequences, split train/valid, write Arrow shards."""
    from spanbert_cli.shards.pack import shard as run

    config = dataclasses.replace(
        config,
        shard_bytes=int(shard_size * 1024 * 1024),
        compression=None if compression == "none" else compression,
    )
    result = run(
        [str(p) for p in tokenized or []],
        config,
        out=out,
        workspace=workspace,
        force=force,
        reporter=RichReporter(quiet),
    )
    s = result.artifact.manifest.stats
    train, valid = s["splits"]["train"], s["splits"]["valid"]
    hist = s["length_histogram"]
    summary = {
        "documents (train / valid)": f"{train['documents']:,} / {valid['documents']:,}",
        "sequences (train / valid)": f"{train['sequences']:,} / {valid['sequences']:,}",
        "tokens": s["tokens"],
        "mean length": f"{s['mean_length']:.1f}",
        "fill rate": f"{100 * s['fill_rate']:.1f} %",
        f"lengths by {hist['edges'][1]}s": " ".join(f"{c:,}" for c in hist["counts"]),
        "sentences cut": s["sentences_cut"],
        "files": s["files"],
        "time": f"{s['seconds']:.2f} s",
        "throughput": f"{s['token_bytes'] / 1e6 / max(s['seconds'], 1e-9):.1f} MB/s",
    }
    report_artifact(
        result.artifact, cached=result.cached, as_json=as_json, quiet=quiet, title="shard", summary=summary
    )


def register(app: typer.Typer) -> None:
    app.command("shard")(shard)
