"""Writing artifacts: the plan (fingerprint and target resolved before any work), what may be replaced at
the target (only spanbert's own artifacts), and the writer that builds in a temporary directory and
publishes atomically."""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spanbert_cli.artifacts.manifest import (
    MANIFEST,
    FileEntry,
    InputRef,
    Manifest,
    _is_local,
    canonical_json,
    current_annotations,
    fingerprint,
    sha256_file,
    tool_info,
)
from spanbert_cli.artifacts.store import Artifact, default_out, open_artifact, read_manifest
from spanbert_cli.artifacts.temp import TEMP_MARK, make_temp_dir, publish_dir
from spanbert_cli.errors import ArtifactError, OutputExistsError, SpanbertError, UsageError
from spanbert_cli.kinds import SCHEMA_VERSIONS

# --------------------------------------------------------------------------------------------------
# writing


@dataclass
class Plan:
    """What a stage is about to write: resolved before any work, so a cache hit costs nothing."""

    kind: str
    params: dict[str, Any]
    inputs: list[InputRef]
    out: Path
    fingerprint: str
    schema_version: int

    @property
    def short(self) -> str:
        return self.fingerprint[:12]


def plan(
    kind: str,
    params: Mapping[str, Any],
    inputs: Sequence[InputRef],
    *,
    out: str | os.PathLike | None,
    name: str,
    workspace: str | os.PathLike | None = None,
    sources: Sequence[str | os.PathLike] = (),
) -> Plan:
    """Resolve the fingerprint and the output directory (the workspace default when `out` is None).

    An output that is, contains or lies inside one of the inputs (or of `sources`, the input files and
    directories as the user named them) is refused: writing it would replace or mix with the input."""
    version = SCHEMA_VERSIONS[kind]
    params = json.loads(canonical_json(dict(params)))  # normalise tuples/paths exactly as they are stored
    fp = fingerprint(kind, version, params, inputs)
    target = Path(out) if out is not None else default_out(kind, name, fp, workspace)
    check_out_apart(target, [*sources, *(r.path for r in inputs if _is_local(r.path))])
    return Plan(kind, params, list(inputs), target, fp, version)


def check_out_apart(out: Path, inputs: Sequence[str | os.PathLike]) -> None:
    """Refuse an output directory that is, contains or lies inside one of `inputs`."""
    o = Path(os.path.realpath(out))
    for given in inputs:
        i = Path(os.path.realpath(given))
        if o == i or i in o.parents or o in i.parents:
            how = "is" if o == i else "lies inside" if i in o.parents else "contains"
            raise UsageError(f"{out}: the output {how} the input {given}; choose an --out outside the inputs")


def refuse_foreign(out: Path) -> Manifest | None:
    """spanbert replaces only what it wrote: refuse a non-empty directory that is not an artifact (a
    manifest spanbert can read). Returns the manifest of the artifact at `out`, if there is one."""
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: the output path is a file; choose another --out")
    if not out.is_dir() or not any(out.iterdir()):
        return None
    if not (out / MANIFEST).is_file():
        raise OutputExistsError(
            f"{out}: exists, is not empty and is not a spanbert artifact; spanbert never replaces files it "
            "did not write: choose another --out, or empty the directory yourself"
        )
    try:
        return read_manifest(out)
    except ArtifactError:
        raise OutputExistsError(
            f"{out}: holds an unreadable {MANIFEST}, so spanbert cannot tell it wrote it; choose another "
            "--out, or remove the directory yourself"
        ) from None


def existing(plan_: Plan, force: bool = False) -> Artifact | None:
    """Return the artifact at the target if it is this plan's (up to date); refuse anything else there.

    With `force`, a different artifact at the target is allowed (it is replaced when the new one is
    done); a directory that is not an artifact is never replaced, `force` or not. Call it holding the
    target's lock (`locks.exclusive(plan.out)`), so that no other writer can change the answer."""
    out = plan_.out
    m = refuse_foreign(out)
    if m is None:
        return None
    if m.fingerprint == plan_.fingerprint and m.kind == plan_.kind:
        try:
            return open_artifact(out, plan_.kind)
        except ArtifactError:
            if not force:
                raise
            return None
    if not force:
        raise OutputExistsError(
            f"{out}: holds a different {m.kind} artifact ({m.short}); use --force to replace it or choose "
            "another --out"
        )
    return None


def build_manifest(
    plan_: Plan,
    files: Sequence[FileEntry],
    stats: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    created: str | None = None,
) -> Manifest:
    """The manifest of a plan's artifact: the one place manifests are made (annotations included)."""
    return Manifest(
        kind=plan_.kind,
        schema_version=plan_.schema_version,
        fingerprint=plan_.fingerprint,
        params=plan_.params,
        inputs=plan_.inputs,
        files=list(files),
        stats=json.loads(canonical_json(dict(stats or {}))),
        extra=json.loads(canonical_json({**dict(extra or {}), **current_annotations()})),
        created=created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds"),
        tool=tool_info(),
    )


class ArtifactWriter:
    """Build an artifact in a temporary directory beside the target; publish it atomically.

    Usage::

        with ArtifactWriter(plan) as w:
            write files under w.dir ...
            artifact = w.finalize(stats={...}, rows={"data/part-00000.arrow": 1234})

    Leaving the block without `finalize` (an exception, Ctrl-C) removes the temporary directory.
    """

    def __init__(self, plan_: Plan):
        self.plan = plan_
        self.dir = plan_.out.parent  # set to the temporary directory on entering
        self._done = False

    def __enter__(self) -> ArtifactWriter:
        self.dir = make_temp_dir(self.plan.out)
        return self

    def __exit__(self, kind: object, error: BaseException | None, tb: object) -> None:
        if not self._done:
            shutil.rmtree(self.dir, ignore_errors=True)
            # A message naming a file of the temporary directory (disk full while writing it) names the
            # file of the artifact instead: the temporary directory is gone, the user knows the --out.
            if isinstance(error, SpanbertError) and error.args and str(self.dir) in str(error.args[0]):
                error.args = (str(error.args[0]).replace(str(self.dir), str(self.plan.out)), *error.args[1:])

    def path(self, rel: str) -> Path:
        p = self.dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def finalize(
        self,
        stats: Mapping[str, Any] | None = None,
        *,
        rows: Mapping[str, int] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Artifact:
        rows = dict(rows or {})
        files = []
        for fp in sorted(p for p in self.dir.rglob("*") if p.is_file()):
            rel = fp.relative_to(self.dir).as_posix()
            if rel in (MANIFEST, TEMP_MARK):
                continue
            files.append(FileEntry(rel, fp.stat().st_size, sha256_file(fp), rows.get(rel)))
        manifest = build_manifest(self.plan, files, stats, extra)
        (self.dir / MANIFEST).write_text(manifest.to_json(self.plan.out))
        publish_dir(self.dir, self.plan.out)
        self._done = True
        return Artifact(self.plan.out, manifest)
