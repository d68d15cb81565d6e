"""`spanbert report DIR`: what a pipeline directory holds, its key metrics side by side, and loss curves."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spanbert_cli import artifacts, kinds
from spanbert_cli.errors import ArtifactError, DataError
from spanbert_cli.training.metrics import METRICS_FILE, read_metrics

# The metrics shown per evaluation kind, in order: (key in metrics.json, column title).
SQUAD_KEYS = (("exact_match", "EM"), ("exact", "EM"), ("f1", "F1"), ("best_f1", "best F1"))
MLM_KEYS = (
    ("mlm_loss", "MLM loss"),
    ("mlm_acc", "MLM acc"),
    ("mlm_ppl", "MLM ppl"),
    ("sbo_loss", "SBO loss"),
    ("sbo_acc", "SBO acc"),
)
SCHEME_KEYS = ("scheme", "span_len", "geometric_p", "sbo_weight")


@dataclass
class RunSummary:
    """One pretraining run of the pipeline and the evaluations made from it."""

    name: str
    path: Path
    params: dict[str, Any]
    stats: dict[str, Any]
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, training loss)
    valid_curve: list[tuple[int, float]] = field(default_factory=list)
    squad: dict[str, Any] = field(default_factory=dict)
    mlm: dict[str, Any] = field(default_factory=dict)


def _metrics(path: Path) -> dict[str, Any]:
    f = path / "metrics.json"
    if not f.is_file():
        return {}
    try:
        data = json.loads(f.read_text())
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _curves(run: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    train, valid = [], []
    for row in read_metrics(run / METRICS_FILE):
        loss = row.get("loss")
        if not isinstance(loss, (int, float)) or not math.isfinite(loss):
            continue
        (valid if row.get("split") == "valid" else train).append((int(row.get("step", 0)), float(loss)))
    return train, valid


def collect(directory: Path) -> tuple[list[RunSummary], list[artifacts.Artifact]]:
    """The runs (with their evaluations) and all artifacts found in a pipeline directory."""
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
    by_fp = {a.fingerprint: a for a in found}
    runs: dict[str, RunSummary] = {}
    for a in found:
        if a.kind == kinds.RUN:
            train, valid = _curves(a.path)
            runs[a.fingerprint] = RunSummary(
                a.path.name, a.path, a.manifest.params, a.manifest.stats, train, valid
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
    del by_fp
    return list(runs.values()), found


def comparison_rows(runs: list[RunSummary]) -> tuple[list[str], list[list[str]]]:
    """A table: one row per run, its masking parameters, final losses and evaluation scores."""
    header = ["run", *SCHEME_KEYS, "steps", "train loss", "valid loss"]
    squad_cols = [(k, t) for k, t in SQUAD_KEYS if any(k in r.squad for r in runs)]
    mlm_cols = [(k, t) for k, t in MLM_KEYS if any(k in r.mlm for r in runs)]
    header += [f"SQuAD {t}" for _, t in squad_cols] + [f"eval {t}" for _, t in mlm_cols]
    rows = []
    for r in runs:
        row = [r.name] + [_fmt(r.params.get(k)) for k in SCHEME_KEYS]
        row.append(_fmt(r.stats.get("step")))
        row.append(_fmt(r.curve[-1][1] if r.curve else None))
        row.append(_fmt(r.valid_curve[-1][1] if r.valid_curve else None))
        row += [_fmt(r.squad.get(k)) for k, _ in squad_cols]
        row += [_fmt(r.mlm.get(k)) for k, _ in mlm_cols]
        rows.append(row)
    return header, rows


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:.1f}"
    return str(v)


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


def plot_png(runs: list[RunSummary], path: Path) -> bool:
    """Loss curves as a PNG; False when matplotlib is not installed (`pip install spanbert[plot]`)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for r in runs:
        if r.curve:
            line = ax.plot(*zip(*r.curve, strict=True), label=f"{r.name} (train)")[0]
            if r.valid_curve:
                ax.plot(
                    *zip(*r.valid_curve, strict=True),
                    "o--",
                    color=line.get_color(),
                    label=f"{r.name} (valid)",
                )
    ax.set_xlabel("step")
    ax.set_ylabel("loss (MLM + SBO)")
    ax.set_title("pretraining loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    blocker = next((q for q in (path, *path.parents) if q.exists() and not q.is_dir()), None)
    if path.is_dir():
        raise DataError(f"--png {path}: is a directory; name a file, e.g. {path / 'report.png'}")
    if blocker is not None and blocker != path:
        raise DataError(f"--png {path}: {blocker} is a file, not a directory; choose another --png")
    path.parent.mkdir(parents=True, exist_ok=True)
    with artifacts.atomic_file(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return True
