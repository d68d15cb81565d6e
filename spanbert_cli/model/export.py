"""`spanbert export`: one checkpoint of a run as a Hugging Face BERT directory, as an artifact.

The directory's layout and the reading of weights are `spanbert_cli.model.weights`; this module is the stage:
an artifact of kind ``spanbert/export`` whose lineage leads back to the run.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from spanbert_cli import artifacts, kinds
from spanbert_cli.artifacts import locks
from spanbert_cli.errors import UsageError, naming_io_errors
from spanbert_cli.model.weights import EXPORT_FORMAT, resolve_source, write_hf_dir
from spanbert_cli.progress import NullReporter, Reporter
from spanbert_cli.training.checkpoint import (
    MODEL_FILE,
    load_config,
    load_model_state,
    verify_checkpoint,
)

if TYPE_CHECKING:
    pass

KIND = kinds.EXPORT
RUN_KIND = kinds.RUN


@dataclass
class ExportResult:
    artifact: artifacts.Artifact
    cached: bool
    step: int | None
    source: Path


def export(
    source: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    step: int | None = None,
    workspace: str | os.PathLike | None = None,
    force: bool = False,
    reporter: Reporter | None = None,
) -> ExportResult:
    """Export a run's checkpoint (the latest, or `step`) or a checkpoint directory as a `spanbert/export`
    artifact: a Hugging Face BERT directory."""
    rep = reporter or NullReporter()
    src = resolve_source(source, step)
    if src.kind != "checkpoint":
        raise UsageError(
            f"{source}: export takes a run or a checkpoint directory; this is already an exported model"
        )
    meta = verify_checkpoint(src.path)
    weights_sha = meta["files"][MODEL_FILE]["sha256"]
    if src.run is not None:
        m = artifacts.read_manifest(src.run)
        inputs = [artifacts.InputRef(path=str(src.run), role="run", fingerprint=m.fingerprint, kind=m.kind)]
        name = re.sub(r"-[0-9a-f]{12}$", "", src.run.resolve().name) or "run"
        run_fp: str | None = m.fingerprint
    else:
        inputs = [artifacts.InputRef.from_file(src.path / MODEL_FILE, name=MODEL_FILE, role="checkpoint")]
        name = "checkpoint"
        run_fp = meta.get("run_fingerprint")
    params = {"step": src.step, "weights_sha256": weights_sha, "format": EXPORT_FORMAT}
    plan = artifacts.plan(KIND, params, inputs, out=out, name=f"{name}-step-{src.step}", workspace=workspace)
    with locks.exclusive(plan.out):
        if (hit := artifacts.existing(plan, force)) is not None:
            return ExportResult(hit, cached=True, step=src.step, source=src.path)
        rep.log(f"exporting {src.path}")
        cfg, state = load_config(src.path), load_model_state(src.path)
        with artifacts.ArtifactWriter(plan) as w:
            info = {
                "run_fingerprint": run_fp,
                "step": src.step,
                "checkpoint": str(src.path),
                "weights_sha256": weights_sha,
            }
            write_hf_dir(w.dir, state, cfg, src.path, info)
            stats = {
                "step": src.step,
                "parameters": int(sum(v.numel() for v in state.values())),
                "vocab_size": cfg.vocab_size,
                "hidden_size": cfg.hidden_size,
                "num_layers": cfg.num_layers,
            }
            with naming_io_errors(w.dir / artifacts.MANIFEST):
                artifact = w.finalize(stats)
        return ExportResult(artifact, cached=False, step=src.step, source=src.path)
