"""`spanbert mask-preview`: show exactly what pretraining will see."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from spanbert_cli.cli._common import JsonOpt, QuietOpt, SeedOpt, WorkspaceOpt, err, say
from spanbert_cli.cli.options import config_options
from spanbert_cli.masking import MaskingConfig

_STYLES = {
    "mask": "bold white on red",
    "random": "bold black on yellow",
    "keep": "bold black on green",
}
_BOUNDARY = "bold cyan underline"


def resolve_shards(shards: Path | None, workspace: Path | None, quiet: bool):
    """The named shard artifact, or the newest one in the workspace (saying which)."""
    from spanbert_cli import artifacts
    from spanbert_cli.errors import UsageError
    from spanbert_cli.shards.pack import KIND

    if shards is not None:
        return artifacts.open_artifact(shards, KIND)
    latest = artifacts.find_latest(KIND, workspace)
    if latest is None:
        root = artifacts.workspace_root(workspace)
        raise UsageError(
            f"no shard artifact named and none in {root}; run `spanbert tokenize CORPUS` and `spanbert shard`, "
            "or name SHARDS"
        )
    say(f"using the newest shard artifact: {latest.path}", quiet)
    return latest


def _pieces(tok: Any, ids: list[int]) -> list[str]:
    return [tok.id_to_token(int(i)) or f"<{int(i)}>" for i in ids]


def _append_piece(text: Text, piece: str, style: str = "", first: bool = False) -> None:
    if piece.startswith("##"):
        text.append(piece[2:], style=style)
    else:
        if not first:
            text.append(" ")
        text.append(piece, style=style)


def render(example: Any, tok: Any) -> Text:
    """Words with each masked span shown as training sees it, its original words, and its SBO boundaries."""
    ids = example.input_ids.tolist()
    corrupted = _pieces(tok, example.masked.input_ids.tolist())
    original = _pieces(tok, ids)
    spans = example.masked.spans.tolist()
    kinds = [("mask", "random", "keep")[int(r)] for r in example.masked.replacement]
    starts = {s: (e, k) for (s, e), k in zip(spans, kinds, strict=True)}
    boundaries = {p for s, e in spans for p in (s - 1, e + 1)}
    text = Text()
    i, first = 0, True
    while i < len(ids):
        if i in starts:
            end, kind = starts[i]
            if not first:
                text.append(" ")
            text.append("⟦", style="dim")
            for j in range(i, end + 1):
                _append_piece(text, corrupted[j], _STYLES[kind], first=j == i)
            text.append("⟧", style="dim")
            words = Text()
            for j in range(i, end + 1):
                _append_piece(words, original[j], first=j == i)
            text.append(f"({kind}: {words.plain})", style="italic dim")
            i, first = end + 1, False
            continue
        _append_piece(text, original[i], _BOUNDARY if i in boundaries else "", first=first)
        i, first = i + 1, False
    return text


def _stats_tables(stats: dict[str, Any]) -> list[Table]:
    summary = Table(title="masking statistics", show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    summary.add_row("sequences", f"{stats['sequences']:,}")
    summary.add_row(
        "realised mask ratio",
        f"{100 * stats['mask_ratio']:.2f} % (target {100 * stats['target_mask_ratio']:.0f} %)",
    )
    for k, v in stats["replacement"].items():
        summary.add_row(f"spans replaced: {k}", f"{100 * v:.1f} %")
    summary.add_row("merged spans", f"{stats['merged']:,} of {stats['span_lengths']['drawn']:,} drawn")
    summary.add_row("SBO targets per sequence", f"{stats['sbo_targets_per_sequence']:.1f}")
    summary.add_row("MLM targets per sequence", f"{stats['targets_per_sequence']:.1f}")
    hist = Table(title="span length in words (as drawn)", title_justify="left")
    hist.add_column("words", justify="right")
    hist.add_column("observed", justify="right")
    hist.add_column("theoretical", justify="right")
    hist.add_column("")
    sl = stats["span_lengths"]
    for n, (o, t) in enumerate(zip(sl["observed"], sl["theoretical"], strict=True), start=1):
        hist.add_row(str(n), f"{100 * o:.2f} %", f"{100 * t:.2f} %", "█" * round(40 * o))
    hist.add_row("mean", f"{sl['mean_observed']:.2f}", f"{sl['mean_theoretical']:.2f}", "")
    return [summary, hist]


@config_options(masking=MaskingConfig)
def mask_preview(
    shards: Annotated[
        Path | None,
        typer.Argument(help="A shard artifact (default: the newest in the workspace).", show_default=False),
    ] = None,
    num: Annotated[int, typer.Option("--num", "-n", help="Number of examples.")] = 3,
    index: Annotated[int, typer.Option("--index", "-i", help="First global sequence index.")] = 0,
    split: Annotated[str, typer.Option("--split", help="train or valid.")] = "train",
    epoch: Annotated[int, typer.Option("--epoch", help="Epoch (masks are redrawn every epoch).")] = 0,
    seed: SeedOpt = 0,
    masking: MaskingConfig = MaskingConfig(),
    stats: Annotated[
        int, typer.Option("--stats", help="Statistics over N sequences from --index (0: none).")
    ] = 0,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Show masked examples exactly as pretraining will see them, or masking statistics."""
    from spanbert_cli.errors import UsageError
    from spanbert_cli.masking import VocabInfo, preview
    from spanbert_cli.shards.reader import ShardReader

    config = masking
    problems = []
    try:
        config.validate()
    except UsageError as e:
        problems.append(str(e))
    if num < 0:
        problems.append(f"--num must be at least 0, got {num}")
    if stats < 0:
        problems.append(f"--stats must be at least 0, got {stats}")
    if problems:
        raise UsageError("; ".join(problems))
    artifact = resolve_shards(shards, workspace, quiet or as_json)
    reader = ShardReader(artifact, split)
    preview.check_range(reader, index, split)
    tok = reader.tokenizer
    vocab = VocabInfo.from_tokenizer(tok)
    common = {"seed": seed, "epoch": epoch, "config": config, "vocab": vocab}

    shown = preview.examples(reader, start=index, num=num, **common)
    for ex in shown:
        if as_json:
            sys.stdout.write(json.dumps(ex.to_json()) + "\n")
        else:
            n_spans = len(ex.masked.spans)
            err.rule(
                f"{split} #{ex.index}  epoch {epoch}  {len(ex.input_ids)} tokens  "
                f"{len(ex.masked.mlm_positions)} masked in {n_spans} span{'s' if n_spans != 1 else ''}",
                align="left",
            )
            err.print(render(ex, tok))
    if not as_json and shown:
        legend = Text("legend: ")
        for kind, style in _STYLES.items():
            legend.append(f" {kind} ", style=style)
            legend.append(" ")
        legend.append("SBO boundary", style=_BOUNDARY)
        err.print(legend)
    if stats:
        result = preview.mask_stats(reader, start=index, count=stats, **common)
        if as_json:
            sys.stdout.write(json.dumps({"stats": result}) + "\n")
        else:
            for table in _stats_tables(result):
                err.print(table)
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.command("mask-preview")(mask_preview)
