"""`spanbert report DIR`: the lineage graph, the runs and evaluations side by side, and PNG plots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.tree import Tree

from spanbert_cli.cli._common import JsonOpt, emit_json, err


def _label(branch: Any, directory: Path) -> str:
    from spanbert_cli.pipeline import report as rp

    node = branch.node
    inside = Path(node.path).parent.resolve() == directory.resolve()
    name = node.name if inside else node.path  # an artifact outside DIR is named by its path
    label = f"[bold]{name}[/]  {node.kind} [yellow]{node.fingerprint[:12]}[/]"
    if node.state == "missing":
        return label + " [red](missing)[/]"
    if node.state == "stale":
        label += " [red](re-made since)[/]"
    reads = [f"{g.role}: {g.describe()}" for g in node.files]
    reads += [f"also {other.name} [yellow]{other.fingerprint[:12]}[/]" for other in branch.also]
    if reads:
        label += "\n[dim]← " + "; ".join(reads) + "[/]"
    params = rp.key_params(node)
    if params:
        label += "\n[dim]" + "  ".join(params) + "[/]"
    return label


def _draw(branch: Any, parent: Tree, directory: Path) -> None:
    child = parent.add(_label(branch, directory))
    for b in branch.children:
        _draw(b, child, directory)


def _table(header: list[str], rows: list[list[str]]) -> Table:
    table = Table()
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def report(
    directory: Annotated[Path, typer.Argument(help="A pipeline directory written by `spanbert run`.")],
    plots: Annotated[
        Path | None,
        typer.Option("--plots", help="Directory for the PNG plots (default: DIR/plots).", show_default=False),
    ] = None,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Write no PNG plots.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Lineage, runs and evaluations side by side, and plots (loss, accuracy, learning rate) of a pipeline
    directory."""
    from spanbert_cli.artifacts.graph import graph_json
    from spanbert_cli.pipeline import report as rp

    plots_dir = plots if plots is not None else directory / rp.PLOTS_DIR
    rep = rp.collect(directory)
    if not no_plots:
        rp.check_plots_dir(plots_dir)
    header, rows = rp.comparison_rows(rep.runs)
    written: list[Path] = []
    missing_matplotlib = False
    if not no_plots and rep.runs:
        try:
            written = rp.write_plots(rep.runs, plots_dir)
        except ImportError:
            missing_matplotlib = True
    if as_json:
        emit_json(
            {
                "artifacts": [
                    {"path": str(a.path), "kind": a.kind, "fingerprint": a.fingerprint} for a in rep.found
                ],
                "graph": graph_json(rep.graph),
                "runs": [dict(zip(header, row, strict=True)) for row in rows],
                "plots": [str(p) for p in written],
            }
        )
        return
    tree = Tree(f"[bold]{directory}[/]")
    for root in rp.downstream(rep.graph):
        _draw(root, tree, directory)
    err.print(tree)
    if rows:
        transposed, blocks = rp.table_blocks(header, rows, err.width)
        # The title on a line of its own: a table's title wraps at the table's width, however narrow.
        err.print("[bold]runs and evaluations[/]" + (" (a column per run)" if transposed else ""))
        for h, r in blocks:
            err.print(_table(h, r))
    width = max((len(r.label) for r in rep.runs), default=0)
    for r in rep.runs:
        if r.curve:
            first, last = r.curve[0][1], r.curve[-1][1]
            spark = rp.sparkline([v for _, v in r.curve], width=max(8, min(48, err.width - width - 24)))
            err.print(f"{r.label:<{width}}  loss {first:7.3f} {spark} {last:7.3f}")
    if written:
        err.print(f"plots: {', '.join(str(p) for p in written)}", soft_wrap=True)  # paths stay whole
    elif missing_matplotlib:
        err.print(f"no plots: matplotlib is not installed ({rp.INSTALL_MATPLOTLIB})")


def register(app: typer.Typer) -> None:
    app.command("report")(report)
