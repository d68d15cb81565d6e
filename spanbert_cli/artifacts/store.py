"""Reading artifacts: opening and checking them, verifying their files, finding them in a workspace, and
following their lineage (upstream artifacts are found after a tree is moved, by fingerprint)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spanbert_cli import kinds
from spanbert_cli.artifacts.manifest import (
    MANIFEST,
    FileEntry,
    InputRef,
    Manifest,
    ManifestError,
    sha256_file,
)
from spanbert_cli.errors import ArtifactError
from spanbert_cli.kinds import SCHEMA_VERSIONS

# --------------------------------------------------------------------------------------------------
# reading


@dataclass
class Artifact:
    """A complete artifact on disk."""

    path: Path
    manifest: Manifest

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def fingerprint(self) -> str:
        return self.manifest.fingerprint

    def file(self, rel: str) -> Path:
        return self.path / rel

    def files_under(self, prefix: str) -> list[FileEntry]:
        return [f for f in self.manifest.files if f.path.startswith(prefix)]


def read_manifest(path: str | os.PathLike) -> Manifest:
    p = Path(path)
    mpath = p / MANIFEST
    if not p.exists():
        raise ArtifactError(f"{p}: no such artifact directory")
    if not p.is_dir():
        raise ArtifactError(f"{p}: not an artifact directory (it is a file)")
    if not mpath.is_file():
        raise ArtifactError(f"{p}: not an artifact (no {MANIFEST}); name a directory written by spanbert")
    try:
        data = json.loads(mpath.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:
        raise ArtifactError(f"{mpath}: unreadable manifest (not JSON: {e}); re-create the artifact") from None
    except OSError as e:
        raise ArtifactError(f"{mpath}: cannot read the manifest ({e.strerror or e})") from None
    try:
        m = Manifest.from_dict(data, base=p)
    except ManifestError as e:
        raise ArtifactError(f"{mpath}: malformed manifest: {e}; re-create the artifact") from None
    current = SCHEMA_VERSIONS.get(m.kind)
    if current is not None and m.schema_version > current:
        raise ArtifactError(
            f"{p}: {m.kind} schema version {m.schema_version} is newer than this spanbert supports "
            f"({current}); upgrade spanbert"
        )
    return m


def open_artifact(path: str | os.PathLike, kind: str | Sequence[str] | None = None) -> Artifact:
    """Open an artifact and check it before use: kind, schema version, every file present at its size.

    Full content hashes are checked by `verify` (hashing gigabytes on every read would be slow).
    """
    p = Path(path)
    m = read_manifest(p)
    kinds = [kind] if isinstance(kind, str) else list(kind or [])
    if kinds and m.kind not in kinds:
        want = " or ".join(kinds)
        raise ArtifactError(f"{p}: is a {m.kind} artifact, expected {want}")
    for f in m.files:
        fp = _member(p, f.path)
        if not fp.is_file():
            raise ArtifactError(
                f"{p}: file {f.path} listed in the manifest is missing; re-create the artifact"
            )
        size = fp.stat().st_size
        if size != f.bytes:
            raise ArtifactError(
                f"{p}: file {f.path} has {size} bytes, the manifest says {f.bytes} (tampered or truncated); "
                "re-create the artifact"
            )
    a = Artifact(p, m)
    check_rows(a)
    return a


def _member(root: Path, rel: str) -> Path:
    """A listed file of an artifact, refused when a link leads it outside the artifact."""
    fp = root / rel
    if fp.is_symlink() or any((root / q).is_symlink() for q in Path(rel).parents if q != Path(".")):
        real, base = fp.resolve(), root.resolve()
        if base not in real.parents:
            raise ArtifactError(f"{root}: file {rel} is a link to {real}, outside the artifact; re-create it")
    return fp


def row_counts(m: Manifest) -> list[tuple[str, int, str]]:
    """What the stats of a manifest say its listed files hold: (path prefix, rows, what they are)."""
    if m.kind == kinds.TOKENIZED and "documents" in m.stats:
        return [("data/", m.stats["documents"], "documents")]
    if m.kind == kinds.SHARDS and isinstance(m.stats.get("splits"), dict):
        return [(f"{k}/", v.get("sequences"), f"{k} sequences") for k, v in sorted(m.stats["splits"].items())]
    return []


def check_rows(a: Artifact) -> None:
    """Refuse an artifact whose listed files hold fewer (or more) rows than its stats count: a file taken
    out of the manifest's list, which the hashes alone cannot notice."""
    for prefix, expected, what in row_counts(a.manifest):
        listed = sum(f.rows or 0 for f in a.files_under(prefix))
        if isinstance(expected, int) and listed != expected:
            raise ArtifactError(
                f"{a.path}: the manifest's files under {prefix} hold {listed:,} {what} but its stats count "
                f"{expected:,}: the manifest was edited; re-create the artifact"
            )


def verify(path: str | os.PathLike, include: Callable[[str], bool] | None = None) -> list[str]:
    """Re-hash every file (or those whose relative path `include` accepts) against the manifest; return
    the problems found (empty when intact)."""
    p = Path(path)
    m = read_manifest(p)
    problems = []
    try:
        check_rows(Artifact(p, m))
    except ArtifactError as e:
        problems.append(str(e).removeprefix(f"{p}: "))
    for f in m.files:
        if include is not None and not include(f.path):
            continue
        fp = _member(p, f.path)
        if not fp.is_file():
            problems.append(f"{f.path}: missing")
            continue
        size = fp.stat().st_size
        if size != f.bytes:
            problems.append(f"{f.path}: {size} bytes, manifest says {f.bytes}")
        elif sha256_file(fp) != f.sha256:
            problems.append(f"{f.path}: sha256 differs from the manifest")
    return problems


# --------------------------------------------------------------------------------------------------
# workspace


def workspace_root(workspace: str | os.PathLike | None = None) -> Path:
    """The root of default artifact paths: `--workspace`, else $SPANBERT_WORKSPACE, else ./artifacts."""
    if workspace:
        return Path(workspace)
    return Path(os.environ.get("SPANBERT_WORKSPACE") or "artifacts")


def kind_dir(kind: str) -> str:
    return kind.split("/", 1)[-1]


def default_out(kind: str, name: str, fp: str, workspace: str | os.PathLike | None = None) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-.") or "artifact"
    return workspace_root(workspace) / kind_dir(kind) / f"{safe}-{fp[:12]}"


def find_latest(
    kind: str, workspace: str | os.PathLike | None = None, complete_only: bool = True
) -> Artifact | None:
    """The newest artifact of a kind in the workspace (by manifest creation time); with `complete_only`,
    runs still training (or stopped) do not count."""
    root = workspace_root(workspace) / kind_dir(kind)
    if not root.is_dir():
        return None
    best: tuple[str, Artifact] | None = None
    for d in root.iterdir():
        if d.name.startswith(".") or not (d / MANIFEST).is_file():
            continue
        try:
            a = open_artifact(d, kind)
        except ArtifactError:
            continue
        if complete_only and a.manifest.stats.get("status", "complete") != "complete":
            continue  # a run still training (or stopped): not a complete artifact
        key = (a.manifest.created, str(d))
        if best is None or key > (best[0], str(best[1].path)):
            best = (a.manifest.created, a)
    return best[1] if best else None


def lineage(path: str | os.PathLike, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The tree of upstream artifacts: each node's kind, fingerprint, path, key params and its inputs.

    An upstream artifact is looked for at its recorded path (relative to the artifact that names it)
    and, when that directory is gone or now holds something else, by fingerprint near the artifact (its
    siblings, and the workspace's kind directories above it): a moved or copied tree keeps its lineage."""
    p = Path(path)
    m = read_manifest(p)
    if m.fingerprint in _seen:
        raise ArtifactError(f"{p}: the manifests' inputs form a cycle; re-create the artifacts")
    seen = (*_seen, m.fingerprint)
    node: dict[str, Any] = {
        "path": str(p),
        "kind": m.kind,
        "fingerprint": m.fingerprint,
        "created": m.created,
        "params": m.params,
        "inputs": [],
    }
    for ref in m.inputs:
        if ref.fingerprint is not None:
            up = find_upstream(p, ref)
            if up is not None:
                child = lineage(up, seen)
            elif (Path(ref.path) / MANIFEST).is_file():
                child = lineage(ref.path, seen)
                child["stale"] = True  # the upstream directory was re-made since
            else:
                child = {"path": ref.path, "kind": ref.kind, "fingerprint": ref.fingerprint, "missing": True}
            child["role"] = ref.role
            node["inputs"].append(child)
        else:
            node["inputs"].append(
                {"path": ref.path, "kind": "file", "sha256": ref.sha256, "bytes": ref.bytes, "role": ref.role}
            )
    return node


def _fingerprint_at(d: Path) -> str | None:
    try:
        return read_manifest(d).fingerprint if (d / MANIFEST).is_file() else None
    except ArtifactError:
        return None


def find_upstream(artifact: str | os.PathLike, ref: InputRef) -> Path | None:
    """The directory holding the upstream artifact `ref` of `artifact` (fingerprint checked), or None."""
    recorded = Path(ref.path)
    if _fingerprint_at(recorded) == ref.fingerprint:
        return recorded
    here = Path(os.path.abspath(artifact))
    # A pipeline directory holds its stages side by side; a workspace holds KIND/NAME directories.
    for root in (here.parent, here.parent.parent):
        candidates = [root / recorded.name]
        if root.is_dir():
            candidates += sorted(root.iterdir())
            candidates += sorted(q for d in root.iterdir() if d.is_dir() for q in d.iterdir())
        for d in candidates:
            if d.name.startswith(".") or d == here or not d.is_dir():
                continue
            if _fingerprint_at(d) == ref.fingerprint:
                return d
    return None
