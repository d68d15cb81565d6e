"""`spanbert report DIR`: what a pipeline directory holds and how its runs compare.

Three views, each a pure function of what `collect` reads, so that the command line only draws them:

* the lineage as one graph (`downstream`): every artifact once, from the corpus down to the evaluations,
  each under the input it was made from, its other inputs referred to by name (the shards an MLM
  evaluation reads beside its run) and raw input files summarised ("55 files, 1.2 MB");
* the runs and their evaluations as a table (`comparison_rows`), laid out to fit the terminal
  (`table_blocks`): one row per run when it fits, else one column per run and one row per metric;
* PNG plots (`write_plots`, matplotlib with the Agg backend): loss, MLM and SBO accuracy, learning rate,
  every run in the same axes (the schemes of the masking ablation side by side).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spanbert_cli import artifacts, kinds
from spanbert_cli.artifacts.graph import GraphNode, lineage_graph
from spanbert_cli.errors import ArtifactError, DataError
from spanbert_cli.training.metrics import METRICS_FILE, read_metrics

# The metrics shown per evaluation kind, in order: (key in metrics.json, title).
SQUAD_KEYS = (("exact_match", "EM"), ("exact", "EM"), ("f1", "F1"), ("best_f1", "best F1"))
MLM_KEYS = (
    ("mlm_loss", "MLM loss"),
    ("mlm_acc", "MLM acc"),
    ("mlm_ppl", "MLM ppl"),
    ("sbo_loss", "SBO loss"),
    ("sbo_acc", "SBO acc"),
)
SCHEME_KEYS = ("scheme", "span_len", "geometric_p", "sbo_weight")
RUN_PREFIX = "pretrain-"  # a recipe's variant runs are DIR/pretrain-<variant>
PLOTS_DIR = "plots"  # the default --plots, inside the pipeline directory
INSTALL_MATPLOTLIB = "pip install matplotlib"


@dataclass
class RunSummary:
    """One pretraining run of the pipeline and the evaluations made from it."""

    name: str  # the run's directory name (`pretrain`, `pretrain-span-sbo`)
    path: Path
    params: dict[str, Any]
    stats: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl
    squad: dict[str, Any] = field(default_factory=dict)
    mlm: dict[str, Any] = field(default_factory=dict)
    created: str = ""  # when the run started (its manifest's first write)

    @property
    def label(self) -> str:
        """The variant's name where the recipe has variants (`span-sbo`), else the directory's."""
        return self.name.removeprefix(RUN_PREFIX) if self.name.startswith(RUN_PREFIX) else self.name

    def series(self, split: str, key: str) -> list[tuple[int, float]]:
        """(step, value) of one metric of one split, finite values only."""
        out = []
        for row in self.records:
            v = row.get(key)
            if row.get("split", "train") != split or isinstance(v, bool) or not isinstance(v, int | float):
                continue
            if math.isfinite(v):
                out.append((int(row.get("step", 0)), float(v)))
        return out

    @property
    def curve(self) -> list[tuple[int, float]]:
        return self.series("train", "loss")

    @property
    def valid_curve(self) -> list[tuple[int, float]]:
        return self.series("valid", "loss")


@dataclass
class Report:
    directory: Path
    runs: list[RunSummary]
    found: list[artifacts.Artifact]  # the artifacts in the directory, by name
    graph: dict[str, GraphNode]  # theirs and everything upstream, each once, upstream first


def _metrics(path: Path) -> dict[str, Any]:
    f = path / "metrics.json"
    if not f.is_file():
        return {}
    try:
        data = json.loads(f.read_text())
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def collect(directory: Path) -> Report:
    """The runs (with their evaluations), the artifacts and their lineage graph of a pipeline directory."""
    if directory.exists() and not directory.is_dir():
        raise ArtifactError(
            f"{directory}: is a file; name a pipeline directory (the --out of `spanbert run`)"
        )
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: no such pipeline directory")
    if (directory / artifacts.MANIFEST).is_file():
        kind = artifacts.read_manifest(directory).kind
        raise ArtifactError(
            f"{directory}: is a {kind} artifact, not a pipeline directory; name the directory that holds "
            "the stages (the --out of `spanbert run`), or use `spanbert lineage` on one artifact"
        )
    # A damaged artifact is an error, not something to skip: the report would silently leave it out.
    found = [
        artifacts.Artifact(d, artifacts.read_manifest(d))
        for d in sorted(directory.iterdir())
        if (d / artifacts.MANIFEST).is_file()
    ]
    if not found:
        raise ArtifactError(
            f"{directory}: holds no artifacts; run `spanbert run RECIPE --out {directory}` first"
        )
    runs: dict[str, RunSummary] = {}
    for a in found:
        if a.kind == kinds.RUN:
            runs[a.fingerprint] = RunSummary(
                a.path.name,
                a.path,
                a.manifest.params,
                a.manifest.stats,
                read_metrics(a.path / METRICS_FILE),
                created=a.manifest.created,
            )
    for a in found:
        if a.kind not in (kinds.EVAL_SQUAD, kinds.EVAL_MLM):
            continue
        for ref in a.manifest.inputs:
            if ref.fingerprint in runs:
                target = runs[ref.fingerprint]
                if a.kind == kinds.EVAL_SQUAD:
                    target.squad = _metrics(a.path)
                else:
                    target.mlm = _metrics(a.path)
    # In the order they were made, which is the recipe's order of its variants (token, word, span, ...).
    ordered = sorted(runs.values(), key=lambda r: (r.created, r.name))
    return Report(directory, ordered, found, lineage_graph(a.path for a in found))


# --------------------------------------------------------------------------------------------------
# the lineage graph, drawn downstream


@dataclass
class Branch:
    """An artifact in the downstream drawing: under the input it was made from (its last in data-flow
    order), with the other inputs it read named, not drawn again."""

    node: GraphNode
    also: list[GraphNode] = field(default_factory=list)
    children: list[Branch] = field(default_factory=list)


def downstream(graph: dict[str, GraphNode]) -> list[Branch]:
    """The graph as a forest from its sources (artifacts made from raw files) to the final artifacts:
    each artifact exactly once."""
    order = {fp: i for i, fp in enumerate(graph)}  # upstream first
    branches = {fp: Branch(node) for fp, node in graph.items()}
    roots = []
    for fp, node in graph.items():
        parents = sorted((p for p in dict.fromkeys(node.inputs) if p in graph), key=order.__getitem__)
        if not parents:
            roots.append(branches[fp])
            continue
        primary = parents[-1]  # an MLM evaluation reads its run and the run's shards: it hangs under the run
        branches[primary].children.append(branches[fp])
        branches[fp].also = [graph[p] for p in parents[:-1]]
    for b in branches.values():  # siblings in the order they were made (a recipe's order)
        b.children.sort(key=lambda c: (c.node.created, c.node.name))
    return roots


# Parameters worth a glance per kind (the rest are in `spanbert lineage` and the manifests).
KEY_PARAMS = {
    kinds.TOKENIZED: ("vocab_size", "cased", "docs", "tokenizer"),
    kinds.SHARDS: ("max_seq_len", "valid_fraction", "valid_docs"),
    kinds.RUN: ("scheme", "span_len", "sbo_weight", "max_steps", "batch_size", "lr"),
    kinds.EVAL_SQUAD: ("epochs", "lr", "batch_size", "max_seq_length"),
    kinds.EVAL_MLM: ("scheme", "sbo_weight", "max_sequences"),
}
_SHOWN_BY_DEFAULT = 5


def key_params(node: GraphNode) -> list[str]:
    """`k=v` of a node's notable scalar parameters (a run's architecture as layers x hidden)."""
    p = node.params
    names = (
        KEY_PARAMS.get(node.kind)
        or [k for k, v in p.items() if not isinstance(v, dict | list)][:_SHOWN_BY_DEFAULT]
    )
    shown = [f"{k}={_fmt(p[k])}" for k in names if k in p and p[k] is not None]
    model = p.get("model")
    if node.kind == kinds.RUN and isinstance(model, dict) and "num_layers" in model:
        shown += [f"layers={model['num_layers']}", f"hidden={model.get('hidden_size', '?')}"]
    return shown


# --------------------------------------------------------------------------------------------------
# the table


def comparison_rows(runs: list[RunSummary]) -> tuple[list[str], list[list[str]]]:
    """A table: one row per run, its masking parameters, final losses and evaluation scores. Columns that
    no run has a value for are left out."""
    header = ["run", *SCHEME_KEYS, "steps", "train loss", "valid loss"]
    squad_cols = [(k, t) for k, t in SQUAD_KEYS if any(k in r.squad for r in runs)]
    mlm_cols = [(k, t) for k, t in MLM_KEYS if any(k in r.mlm for r in runs)]
    header += [f"SQuAD {t}" for _, t in squad_cols] + [f"eval {t}" for _, t in mlm_cols]
    rows = []
    for r in runs:
        row = [r.label] + [_fmt(r.params.get(k)) for k in SCHEME_KEYS]
        row.append(_fmt(r.stats.get("step")))
        row.append(_fmt(r.curve[-1][1] if r.curve else None))
        row.append(_fmt(r.valid_curve[-1][1] if r.valid_curve else None))
        row += [_fmt(r.squad.get(k)) for k, _ in squad_cols]
        row += [_fmt(r.mlm.get(k)) for k, _ in mlm_cols]
        rows.append(row)
    keep = [i for i in range(len(header)) if i == 0 or any(row[i] != _NONE for row in rows)]
    return [header[i] for i in keep], [[row[i] for i in keep] for row in rows]


_NONE = "–"


def _fmt(v: Any) -> str:
    if v is None:
        return _NONE
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:.1f}"
    return str(v)


def table_width(header: list[str], rows: list[list[str]]) -> int:
    """The width of a boxed table (a rule and one space each side of every cell) drawn without wrapping."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    return sum(w + 3 for w in widths) + 1


def table_blocks(
    header: list[str], rows: list[list[str]], width: int
) -> tuple[bool, list[tuple[list[str], list[list[str]]]]]:
    """How to draw the table in `width` columns with no header cut: (transposed?, tables).

    One row per run when that fits; otherwise one row per metric and one column per run, in as many
    tables side by side as it takes (a table per group of runs) to fit."""
    if table_width(header, rows) <= width or not rows:
        return False, [(header, rows)]
    names = [r[0] for r in rows]
    metric_rows = [[h] + [r[i] for r in rows] for i, h in enumerate(header) if i > 0]
    blocks: list[tuple[list[str], list[list[str]]]] = []
    start = 0
    while start < len(names):
        end = start + 1  # at least one run per table, however narrow the terminal
        while end < len(names):
            cols = [0, *range(start + 1, end + 2)]
            if (
                table_width(
                    [(["metric", *names])[c] for c in cols], [[m[c] for c in cols] for m in metric_rows]
                )
                > width
            ):
                break
            end += 1
        cols = [0, *range(start + 1, end + 1)]
        blocks.append(([(["metric", *names])[c] for c in cols], [[m[c] for c in cols] for m in metric_rows]))
        start = end
    return True, blocks


_BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 48) -> str:
    """A loss curve as one line of block characters (for terminals without a plot)."""
    if not values:
        return ""
    if len(values) > width:
        step = len(values) / width
        values = [values[int(i * step)] for i in range(width)]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return "".join(_BLOCKS[min(len(_BLOCKS) - 1, int((v - lo) / span * (len(_BLOCKS) - 1)))] for v in values)


# --------------------------------------------------------------------------------------------------
# the plots


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def check_plots_dir(path: Path) -> None:
    """A --plots that is a file, or lies under one, is refused before anything is drawn."""
    if path.exists() and not path.is_dir():
        raise DataError(f"--plots {path}: is a file; name a directory for the PNG plots")
    blocker = next((q for q in path.parents if q.exists() and not q.is_dir()), None)
    if blocker is not None:
        raise DataError(f"--plots {path}: {blocker} is a file, not a directory; choose another --plots")


PLOTS = ("loss.png", "accuracy.png", "lr.png")
PLOTS_MARKER = ".spanbert-plots"  # beside the PNGs: spanbert wrote them, so it may replace them


def check_plots_replaceable(out: Path) -> None:
    """Refuse to replace a PNG of ours by name that spanbert did not write (no marker beside it)."""
    if (out / PLOTS_MARKER).is_file():
        return
    theirs = [name for name in PLOTS if os.path.lexists(out / name)]
    if theirs:
        raise DataError(
            f"--plots {out}: {theirs[0]} is there and spanbert did not write it; "
            "choose another --plots directory (nothing was replaced)"
        )


def write_plots(runs: list[RunSummary], out: Path) -> list[Path]:
    """loss.png, accuracy.png and lr.png in `out`, every run in the same axes; the files written (none
    without runs that logged anything). Raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, none opened
    import matplotlib.pyplot as plt

    check_plots_dir(out)
    check_plots_replaceable(out)
    runs = [r for r in runs if r.records]
    if not runs:
        return []
    colours = {r.name: f"C{i % 10}" for i, r in enumerate(runs)}
    title = "" if len(runs) == 1 else f" — {len(runs)} runs"
    figures = {
        "loss.png": _figure(
            plt,
            runs,
            colours,
            [("loss", "loss = MLM + w·SBO"), ("mlm_loss", "MLM loss")],
            f"pretraining loss (cross-entropy){title}",
        ),
        "accuracy.png": _figure(
            plt,
            runs,
            colours,
            [("mlm_acc", "MLM accuracy"), ("sbo_acc", "SBO accuracy")],
            f"accuracy on the masked tokens{title}",
            percent=True,
        ),
        "lr.png": _lr_figure(plt, runs, colours, f"learning rate{title}"),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / PLOTS_MARKER).write_text(
        "PNG plots written by `spanbert report`; it replaces them on its next run\n"
    )
    written = []
    for name, fig in figures.items():
        with artifacts.atomic_file(out / name, "wb") as f:
            fig.savefig(f, format="png")
        plt.close(fig)
        written.append(out / name)
    return written


def _figure(
    plt: Any,
    runs: list[RunSummary],
    colours: dict[str, str],
    panels: list[tuple[str, str]],
    title: str,
    percent: bool = False,
) -> Any:
    """One figure, a panel per metric side by side: each run's colour, training solid, validation dashed
    with dots; a run that did not train SBO (weight 0) is left out of the SBO panels."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    fig, axes = plt.subplots(
        1, len(panels), figsize=(6.4 * len(panels), 4.4), dpi=110, squeeze=False, layout="constrained"
    )
    has_valid = False
    for ax, (key, name) in zip(axes[0], panels, strict=True):
        untrained = [r.label for r in runs if key.startswith("sbo") and r.params.get("sbo_weight") == 0]
        if untrained:
            name += f" (no SBO: {', '.join(untrained)})"
        for r in runs:
            if r.label in untrained:
                continue
            train, valid = r.series("train", key), r.series("valid", key)
            if train:
                ax.plot(*zip(*train, strict=True), color=colours[r.name], linewidth=1.6)
            if valid:
                has_valid = True
                ax.plot(*zip(*valid, strict=True), "o--", color=colours[r.name], linewidth=1.2, markersize=4)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))
        if len(panels) > 1:
            ax.set_title(name, fontsize=11)
        else:
            ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if percent:
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    # Colours name the runs (one run needs no name); line styles name the splits.
    handles = [Line2D([], [], color=colours[r.name], linewidth=2, label=r.label) for r in runs]
    handles = handles if len(runs) > 1 else []
    if has_valid:
        handles += [
            Line2D([], [], color="0.3", linewidth=1.6, label="train"),
            Line2D([], [], color="0.3", linestyle="--", marker="o", markersize=4, label="valid"),
        ]
    fig.suptitle(title, fontsize=12)
    if handles:
        fig.legend(handles=handles, loc="outside right center", fontsize=9, frameon=False)
    return fig


def _lr_figure(plt: Any, runs: list[RunSummary], colours: dict[str, str], title: str) -> Any:
    """The learning rate against the step: one line per distinct schedule (the runs of an ablation share
    theirs, and identical lines would hide all but the last), labelled with the runs that follow it."""
    from matplotlib.ticker import MaxNLocator

    schedules: dict[tuple[tuple[int, float], ...], list[RunSummary]] = {}
    for r in runs:
        schedules.setdefault(tuple(r.series("train", "lr")), []).append(r)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110, layout="constrained")
    for points, group in schedules.items():
        if points:
            label = ", ".join(r.label for r in group) if len(runs) > 1 else None
            ax.plot(*zip(*points, strict=True), color=colours[group[0].name], linewidth=1.6, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.grid(alpha=0.3)
    if len(runs) > 1:
        ax.legend(fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=12)
    return fig
