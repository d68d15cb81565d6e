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


def _bar(value: float, scale: float, width: int = 30) -> str:
    return "█" * round(width * value / scale) if scale > 0 else ""


def _marked_bar(value: float, expected: float, scale: float, width: int = 30) -> Text:
    """A bar of `value` with a red mark where `expected` would end it."""
    cells = _bar(value, scale, width).ljust(width + 1)
    mark = min(width, round(width * expected / scale)) if scale > 0 and expected > 0 else -1
    text = Text()
    for i, c in enumerate(cells):
        text.append("│", style="bold red") if i == mark else text.append(c)
    text.rstrip()
    return text


def _stats_tables(stats: dict[str, Any]) -> list[Table]:
    from spanbert_cli.masking.preview import position_buckets

    summary = Table(title="masking statistics", show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    summary.add_row("sequences", f"{stats['sequences']:,}")
    summary.add_row(
        "realised mask ratio",
        f"{100 * stats['mask_ratio']:.2f} % (target {100 * stats['target_mask_ratio']:.0f} %)",
    )
    summary.add_row("merged spans", f"{stats['merged']:,} of {stats['span_lengths']['drawn']:,} drawn")
    summary.add_row("SBO targets per sequence", f"{stats['sbo_targets_per_sequence']:.1f}")
    summary.add_row("MLM targets per sequence", f"{stats['targets_per_sequence']:.1f}")

    sl = stats["span_lengths"]
    hist = Table(title="span length in words: as drawn, and expected", title_justify="left")
    hist.add_column("words", justify="right")
    hist.add_column("observed", justify="right")
    hist.add_column("expected", justify="right")
    hist.add_column(Text.assemble("drawn █, expected ", ("│", "bold red")), no_wrap=True)
    scale = max([*sl["observed"], *sl["theoretical"], 1e-12])
    for n, (o, t) in enumerate(zip(sl["observed"], sl["theoretical"], strict=True), start=1):
        hist.add_row(str(n), f"{100 * o:.2f} %", f"{100 * t:.2f} %", _marked_bar(o, t, scale))
    hist.add_row("mean", f"{sl['mean_observed']:.2f}", f"{sl['mean_theoretical']:.2f}", "")

    unit = "tokens" if stats.get("scheme") == "token" else "spans"
    repl = Table(title=f"replacement of {stats['replacement_units']:,} masked {unit}", title_justify="left")
    repl.add_column("by")
    repl.add_column("realised", justify="right")
    repl.add_column("expected", justify="right")
    for k, v in stats["replacement"].items():
        repl.add_row(
            {"mask": "[MASK]", "random": "random token", "keep": "kept"}[k],
            f"{100 * v:.1f} %",
            f"{100 * stats['expected_replacement'][k]:.0f} %",
        )

    target = 100 * stats["target_mask_ratio"]
    rate = Table(title=f"masked along the sequence (target {target:g} %)", title_justify="left")
    rate.add_column("positions", justify="right")
    rate.add_column("tokens", justify="right")
    rate.add_column("masked", justify="right")
    rate.add_column("", no_wrap=True)
    buckets = position_buckets(stats)
    top = max([r for _, _, r in buckets if r is not None] + [stats["target_mask_ratio"]])
    tokens = stats["positions"]["tokens"]
    for lo, hi, r in buckets:
        shown = "–" if r is None else f"{100 * r:.1f} %"
        rate.add_row(f"{lo}–{hi}", f"{sum(tokens[lo : hi + 1]):,}", shown, _bar(r or 0.0, top, 24))
    # The word and token schemes draw no lengths: every unit is one word or one token.
    return [summary, hist, repl, rate] if stats.get("scheme", "span") == "span" else [summary, repl, rate]


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
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Also draw the --stats as a PNG file.", show_default=False),
    ] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Show masked examples exactly as pretraining will see them, or masking statistics."""
    from spanbert_cli.errors import UsageError
    from spanbert_cli.masking import VocabInfo, preview
    from spanbert_cli.shards.reader import ShardReader
    from spanbert_cli.training.config import installed

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
    if plot is not None and stats <= 0:
        problems.append("--plot draws the statistics: give --stats N too")
    if plot is not None and not installed("matplotlib"):
        problems.append("--plot needs matplotlib: pip install matplotlib")
    if problems:
        raise UsageError("; ".join(problems))
    if plot is not None:
        preview.check_plot_path(plot)
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
        if plot is not None:
            preview.plot_stats(result, config, plot)
            if not (quiet or as_json):
                err.print(f"plot: {plot}", soft_wrap=True)  # a path stays whole, to copy
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.command("mask-preview")(mask_preview)
