"""Versioned artifacts: the provenance spine every stage writes and reads.

An artifact is a directory holding its output files and a `manifest.json` that records what made it:
the stage (`kind`) and its schema version, the fully resolved parameters, the inputs (an upstream
artifact's fingerprint, or a raw file's sha256 and size), every output file with its size and sha256,
and statistics. The `fingerprint` is a hash over exactly what determines the output (kind, schema
version, parameters, the inputs' fingerprints) and nothing that does not (paths, timestamps, worker
counts), so "same fingerprint" means "same bytes" and a stage can skip work it has already done.

Artifacts are written atomically: a stage builds into a temporary directory beside the target and
renames it into place only after the manifest is written, so a crash never leaves half an artifact.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spanbert_cli import __version__
from spanbert_cli.errors import ArtifactError, OutputExistsError

MANIFEST = "manifest.json"
_TMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"
_HASH_CHUNK = 1 << 20

_ANNOTATIONS: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "annotations", default=None
)


@contextlib.contextmanager
def annotate(values: Mapping[str, Any]) -> Iterator[None]:
    """Record `values` in the `extra` of every manifest written inside this block (e.g. the recipe that
    ran a stage). Annotations describe how an artifact was made; they never enter its fingerprint."""
    token = _ANNOTATIONS.set({**annotations(), **values})
    try:
        yield
    finally:
        _ANNOTATIONS.reset(token)


def annotations() -> dict[str, Any]:
    return dict(_ANNOTATIONS.get() or {})


#: Schema version of each artifact kind; bump when a stage's output format changes.
SCHEMA_VERSIONS: dict[str, int] = {}


def register_kind(kind: str, schema_version: int) -> str:
    """Declare an artifact kind and its current schema version (each stage module does this once)."""
    SCHEMA_VERSIONS[kind] = schema_version
    return kind


# --------------------------------------------------------------------------------------------------
# hashing


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


_INPUT_HASHES: contextvars.ContextVar[dict[tuple, str] | None] = contextvars.ContextVar(
    "input_hashes", default=None
)


@contextlib.contextmanager
def remembered_input_hashes() -> Iterator[None]:
    """Inside this block, an input file is hashed once while it stays the same file with the same size
    and modification time (a pipeline checks a stage's fingerprint, then runs it: one read of the
    corpus, not two). Only raw inputs (`InputRef.from_file`); artifact verification always re-reads."""
    outer = _INPUT_HASHES.get()
    token = _INPUT_HASHES.set({} if outer is None else outer)  # nested blocks share the outer memo
    try:
        yield
    finally:
        _INPUT_HASHES.reset(token)


def _input_sha256(path: Path) -> str:
    memo = _INPUT_HASHES.get()
    if memo is None:
        return sha256_file(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in memo:
        memo[key] = sha256_file(path)
    return memo[key]


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the byte form that fingerprints hash."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def fingerprint(kind: str, schema_version: int, params: Mapping[str, Any], inputs: Sequence[InputRef]) -> str:
    """sha256 over what determines an artifact's content, chained from its inputs' fingerprints."""
    payload = {
        "kind": kind,
        "schema_version": schema_version,
        "params": params,
        "inputs": [ref.identity() for ref in inputs],
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


# --------------------------------------------------------------------------------------------------
# manifest


@dataclass(frozen=True)
class InputRef:
    """One input of an artifact: an upstream artifact (by fingerprint) or a raw file (by content)."""

    path: str
    role: str = "input"
    fingerprint: str | None = None  # set for artifact inputs
    kind: str | None = None
    sha256: str | None = None  # set for raw-file inputs
    bytes: int | None = None
    name: str | None = None  # a raw file's name relative to its input root (part of its identity)

    @classmethod
    def from_artifact(cls, artifact: Artifact, role: str = "input") -> InputRef:
        m = artifact.manifest
        return cls(path=str(artifact.path), role=role, fingerprint=m.fingerprint, kind=m.kind)

    @classmethod
    def from_file(cls, path: str | os.PathLike, name: str | None = None, role: str = "input") -> InputRef:
        p = Path(path)
        return cls(path=str(p), role=role, sha256=_input_sha256(p), bytes=p.stat().st_size, name=name)

    def identity(self) -> dict[str, Any]:
        """The part of this reference that enters the fingerprint: never the path."""
        if self.fingerprint is not None:
            return {"role": self.role, "kind": self.kind, "fingerprint": self.fingerprint}
        return {"role": self.role, "name": self.name, "sha256": self.sha256, "bytes": self.bytes}

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the artifact directory, with "/" separators
    bytes: int
    sha256: str
    rows: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Manifest:
    kind: str
    schema_version: int
    fingerprint: str
    params: dict[str, Any]
    inputs: list[InputRef]
    files: list[FileEntry] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # stage-specific metadata (e.g. tokenizer ids)
    created: str = ""
    tool: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "schema_version": self.schema_version,
            "fingerprint": self.fingerprint,
            "created": self.created,
            "tool": self.tool,
            "params": self.params,
            "inputs": [i.to_dict() for i in self.inputs],
            "files": [f.to_dict() for f in self.files],
            "stats": self.stats,
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Manifest:
        return cls(
            kind=d["kind"],
            schema_version=int(d["schema_version"]),
            fingerprint=d["fingerprint"],
            params=dict(d.get("params", {})),
            inputs=[InputRef(**i) for i in d.get("inputs", [])],
            files=[FileEntry(**f) for f in d.get("files", [])],
            stats=dict(d.get("stats", {})),
            extra=dict(d.get("extra", {})),
            created=d.get("created", ""),
            tool=dict(d.get("tool", {})),
        )

    @property
    def short(self) -> str:
        return self.fingerprint[:12]


def tool_info() -> dict[str, Any]:
    """Versions of the tools that made an artifact (recorded, never fingerprinted)."""
    info: dict[str, Any] = {"spanbert": __version__, "python": platform.python_version()}
    for dist in ("torch", "tokenizers", "pyarrow", "numpy"):
        # Package metadata, not an import: importing torch alone would cost a second per stage.
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            info[dist] = importlib.metadata.version(dist)
    commit = _git_commit()
    if commit:
        info["git_commit"] = commit
    return info


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent.parent
    if not (here / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


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
        return Manifest.from_dict(json.loads(mpath.read_text()))
    except (ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"{mpath}: unreadable manifest ({e}); re-create the artifact") from None


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
    current = SCHEMA_VERSIONS.get(m.kind)
    if current is not None and m.schema_version > current:
        raise ArtifactError(
            f"{p}: {m.kind} schema version {m.schema_version} is newer than this spanbert supports "
            f"({current}); upgrade spanbert"
        )
    for f in m.files:
        fp = p / f.path
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
    return Artifact(p, m)


def verify(path: str | os.PathLike) -> list[str]:
    """Re-hash every file against the manifest; return the problems found (empty when intact)."""
    p = Path(path)
    m = read_manifest(p)
    problems = []
    for f in m.files:
        fp = p / f.path
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


def find_latest(kind: str, workspace: str | os.PathLike | None = None) -> Artifact | None:
    """The newest complete artifact of a kind in the workspace (by manifest creation time)."""
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
        if a.manifest.stats.get("status", "complete") != "complete":
            continue  # a run still training (or stopped): not a complete artifact
        key = (a.manifest.created, str(d))
        if best is None or key > (best[0], str(best[1].path)):
            best = (a.manifest.created, a)
    return best[1] if best else None


def lineage(path: str | os.PathLike) -> dict[str, Any]:
    """The tree of upstream artifacts: each node's kind, fingerprint, path, key params and its inputs."""
    p = Path(path)
    m = read_manifest(p)
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
            up = Path(ref.path)
            if (up / MANIFEST).is_file():
                child = lineage(up)
                if child["fingerprint"] != ref.fingerprint:
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
) -> Plan:
    """Resolve the fingerprint and the output directory (the workspace default when `out` is None)."""
    version = SCHEMA_VERSIONS[kind]
    params = json.loads(canonical_json(dict(params)))  # normalise tuples/paths exactly as they are stored
    fp = fingerprint(kind, version, params, inputs)
    target = Path(out) if out is not None else default_out(kind, name, fp, workspace)
    return Plan(kind, params, list(inputs), target, fp, version)


def existing(plan_: Plan, force: bool = False) -> Artifact | None:
    """Return the artifact at the target if it is this plan's (up to date); refuse anything else there.

    With `force`, a different artifact at the target is allowed (it is replaced when the new one is done).
    """
    out = plan_.out
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: output path is a file; choose another --out")
    if not out.exists():
        return None
    if (out / MANIFEST).is_file():
        try:
            m = read_manifest(out)
        except ArtifactError:
            m = None
        if m is not None and m.fingerprint == plan_.fingerprint and m.kind == plan_.kind:
            try:
                return open_artifact(out, plan_.kind)
            except ArtifactError:
                if not force:
                    raise
                return None
        if not force:
            what = f"a different {m.kind} artifact ({m.short})" if m else "an unreadable artifact"
            raise OutputExistsError(f"{out}: holds {what}; use --force to replace it or choose another --out")
        return None
    if any(out.iterdir()) and not force:
        raise OutputExistsError(f"{out}: exists and is not an artifact; use --force to replace it")
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
        extra=json.loads(canonical_json({**dict(extra or {}), **annotations()})),
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
        self.dir = plan_.out.parent / f"{_TMP_PREFIX}{plan_.out.name}-{uuid.uuid4().hex[:8]}"
        self._done = False

    def __enter__(self) -> ArtifactWriter:
        self.plan.out.parent.mkdir(parents=True, exist_ok=True)
        self.dir.mkdir()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._done:
            shutil.rmtree(self.dir, ignore_errors=True)

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
            if rel == MANIFEST:
                continue
            files.append(FileEntry(rel, fp.stat().st_size, sha256_file(fp), rows.get(rel)))
        manifest = build_manifest(self.plan, files, stats, extra)
        (self.dir / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n")
        _publish(self.dir, self.plan.out)
        self._done = True
        return Artifact(self.plan.out, manifest)


def _publish(tmp: Path, out: Path) -> None:
    """Move a finished directory into place; an artifact already there is replaced only at the end."""
    if out.exists():
        old = out.parent / f"{_OLD_PREFIX}{out.name}-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Write a single file atomically (temporary name beside it, then rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.parent / f"{_TMP_PREFIX}{p.name}-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, mode) as f:
            yield f
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
