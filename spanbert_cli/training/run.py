"""The run directory as an artifact (kind ``spanbert/run``), written while training goes on.

Unlike the other stages, a run cannot be built in a temporary directory and renamed at the end: it lives
for days and must be resumable from its checkpoints. So the manifest is written at the start (status
``running``) and rewritten, atomically, after every checkpoint and at the end (status ``complete``). At
each point it lists only files that are final: the kept checkpoints while running (with the sizes and
hashes recorded when they were saved), and everything at the end (metrics, checkpoints, the Hugging Face
export). `spanbert verify RUN` and `spanbert lineage RUN` therefore work at any time.

    RUN/manifest.json           kind spanbert/run; inputs: the shard artifact (and --init-from weights);
                                params: the resolved configuration that determines the weights
    RUN/metrics.jsonl           one line per logging step and per evaluation
    RUN/checkpoints/step-NNNNNNN/
    RUN/hf/                     the Hugging Face export of the final step
    RUN/tensorboard/            with --tensorboard
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spanbert_cli import artifacts, kinds
from spanbert_cli.training.checkpoint import CHECKPOINTS_DIR, META_FILE, Checkpoint, read_meta

KIND = kinds.RUN
EXPORT_DIR = "hf"


class RunDir:
    """Writes the manifest of a run directory."""

    def __init__(self, plan: artifacts.Plan, extra: Mapping[str, Any]):
        self.plan = plan
        self.path = plan.out
        self.extra = dict(extra)
        self.created = ""
        if (self.path / artifacts.MANIFEST).is_file():
            try:
                self.created = artifacts.read_manifest(self.path).created
            except artifacts.ArtifactError:
                self.created = ""

    @staticmethod
    def wipe(path: Path) -> None:
        """Remove a run directory (--force, or a run that failed before its first checkpoint)."""
        artifacts.remove_dir(path)

    def write(
        self, status: str, stats: Mapping[str, Any], checkpoints: list[Checkpoint]
    ) -> artifacts.Artifact:
        files = [] if status != "complete" else self._other_files()
        for c in checkpoints:
            meta = read_meta(c.path)
            rel = f"{CHECKPOINTS_DIR}/{c.path.name}"
            for name, entry in sorted(meta["files"].items()):
                files.append(artifacts.FileEntry(f"{rel}/{name}", int(entry["bytes"]), entry["sha256"]))
            mpath = c.path / META_FILE
            files.append(
                artifacts.FileEntry(f"{rel}/{META_FILE}", mpath.stat().st_size, artifacts.sha256_file(mpath))
            )
        files.sort(key=lambda f: f.path)
        manifest = artifacts.build_manifest(
            self.plan, files, {"status": status, **dict(stats)}, self.extra, created=self.created or None
        )
        self.created = manifest.created
        self.path.mkdir(parents=True, exist_ok=True)
        with artifacts.atomic_file(self.path / artifacts.MANIFEST) as f:
            f.write(manifest.to_json(self.path))
        return artifacts.Artifact(self.path, manifest)

    def _other_files(self) -> list[artifacts.FileEntry]:
        out = []
        for p in sorted(self.path.rglob("*")):
            rel = p.relative_to(self.path)
            if (
                not p.is_file()
                or rel.as_posix() == artifacts.MANIFEST
                or rel.parts[0] == CHECKPOINTS_DIR
                or any(part.startswith(".") for part in rel.parts)
            ):
                continue
            out.append(artifacts.FileEntry(rel.as_posix(), p.stat().st_size, artifacts.sha256_file(p)))
        return out
