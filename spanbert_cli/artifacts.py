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
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from spanbert_cli import __version__, locks
from spanbert_cli.errors import ArtifactError, OutputExistsError, UsageError
from spanbert_cli.kinds import SCHEMA_VERSIONS

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
    def from_dict(cls, d: Any, base: Path | None = None) -> Manifest:
        """A manifest from its JSON form, checked field by field (`ManifestError` names the first bad
        one). Input paths are stored relative to the artifact; with `base` (the artifact's directory)
        they are resolved against it."""
        check_manifest(d)
        inputs = [InputRef(**i) for i in d.get("inputs", [])]
        if base is not None:
            inputs = [replace(i, path=resolve_stored_path(base, i.path)) for i in inputs]
        return cls(
            kind=d["kind"],
            schema_version=d["schema_version"],
            fingerprint=d["fingerprint"],
            params=dict(d.get("params", {})),
            inputs=inputs,
            files=[FileEntry(**f) for f in d.get("files", [])],
            stats=dict(d.get("stats", {})),
            extra=dict(d.get("extra", {})),
            created=d.get("created", ""),
            tool=dict(d.get("tool", {})),
        )

    def to_json(self, directory: Path) -> str:
        """The manifest file's text for an artifact at `directory`: input paths relative to it, so the
        lineage survives moving or copying the whole tree and reading it from another directory."""
        d = self.to_dict()
        d["inputs"] = [{**i, "path": relative_stored_path(i["path"], directory)} for i in d["inputs"]]
        return json.dumps(d, indent=2) + "\n"

    @property
    def short(self) -> str:
        return self.fingerprint[:12]


class ManifestError(ArtifactError):
    """A manifest.json that is not what spanbert writes (wrong types, paths outside the artifact)."""


_FP = re.compile(r"[0-9a-f]{64}")
_INPUT_FIELDS = {
    "path": str,
    "role": str,
    "fingerprint": str,
    "kind": str,
    "sha256": str,
    "bytes": int,
    "name": str,
}
_FILE_FIELDS = {"path": str, "bytes": int, "sha256": str, "rows": int}


def _type_ok(value: Any, typ: type) -> bool:
    return isinstance(value, typ) and not (typ is int and isinstance(value, bool))


def _check_record(record: Any, fields: Mapping[str, type], required: Sequence[str], where: str) -> None:
    if not isinstance(record, dict):
        raise ManifestError(f"{where} must be an object, got {type(record).__name__}")
    for key, value in record.items():
        if key not in fields:
            raise ManifestError(f"{where}.{key} is not a manifest field")
        if value is not None and not _type_ok(value, fields[key]):
            raise ManifestError(f"{where}.{key} must be {fields[key].__name__}, got {type(value).__name__}")
    for key in required:
        if record.get(key) is None:
            raise ManifestError(f"{where}.{key} is missing")


def check_manifest(d: Any) -> None:
    """Check a manifest's JSON form: every field of the right type, a known schema version, and every
    listed file a relative path inside the artifact (never `..`, never absolute)."""
    if not isinstance(d, dict):
        raise ManifestError(f"must be a JSON object, got {type(d).__name__}")
    for key in ("kind", "fingerprint"):
        if not isinstance(d.get(key), str) or not d[key]:
            raise ManifestError(f"{key} must be a non-empty string")
    if not _FP.fullmatch(d["fingerprint"]):
        raise ManifestError("fingerprint must be 64 lowercase hex digits")
    version = d.get("schema_version")
    if not _type_ok(version, int) or version < 1:
        raise ManifestError(f"schema_version must be an integer >= 1, got {version!r}")
    for key, typ in (("params", dict), ("stats", dict), ("extra", dict), ("tool", dict), ("created", str)):
        if key in d and not isinstance(d[key], typ):
            raise ManifestError(f"{key} must be {'an object' if typ is dict else 'a string'}")
    for key in ("inputs", "files"):
        if not isinstance(d.get(key, []), list):
            raise ManifestError(f"{key} must be a list")
    for n, ref in enumerate(d.get("inputs", [])):
        _check_record(ref, _INPUT_FIELDS, ("path",), f"inputs[{n}]")
    for n, entry in enumerate(d.get("files", [])):
        _check_record(entry, _FILE_FIELDS, ("path", "bytes", "sha256"), f"files[{n}]")
        if not is_inside_path(entry["path"]):
            raise ManifestError(
                f"files[{n}].path {entry['path']!r} is not a relative path inside the artifact"
            )
        if entry["bytes"] < 0:
            raise ManifestError(f"files[{n}].bytes must not be negative")


def is_inside_path(rel: str) -> bool:
    """True for a relative, normalised path that stays inside its directory ("a/b.arrow", not "../x")."""
    if not rel or rel.startswith(("/", "\\")) or "\\" in rel or "\x00" in rel:
        return False
    parts = rel.split("/")
    return all(part not in ("", ".", "..") for part in parts) and not re.match(r"^[A-Za-z]:", rel)


def _is_local(path: str) -> bool:
    # "-" is stdin, "hf:NAME" a Hugging Face dataset: names, not paths to rebase.
    return path != "-" and not path.startswith("hf:")


def relative_stored_path(path: str, directory: Path) -> str:
    """How a manifest at `directory` records an input path: relative to the artifact itself."""
    if not _is_local(path):
        return path
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(directory))).as_posix()


def resolve_stored_path(base: Path, stored: str) -> str:
    """An input path of the manifest at `base`, as a path usable from here. Manifests record paths
    relative to the artifact; older ones recorded them relative to the writer's working directory, which
    is tried when the artifact-relative path does not exist."""
    if not _is_local(stored) or os.path.isabs(stored):
        return stored
    rebased = os.path.normpath(os.path.join(base, stored))
    if not os.path.exists(rebased) and os.path.exists(stored):
        return stored
    return rebased


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
        data = json.loads(mpath.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:
        raise ArtifactError(f"{mpath}: unreadable manifest (not JSON: {e}); re-create the artifact") from None
    except OSError as e:
        raise ArtifactError(f"{mpath}: cannot read the manifest ({e.strerror or e})") from None
    try:
        return Manifest.from_dict(data, base=p)
    except ManifestError as e:
        raise ArtifactError(f"{mpath}: malformed manifest: {e}; re-create the artifact") from None


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
    return Artifact(p, m)


def _member(root: Path, rel: str) -> Path:
    """A listed file of an artifact, refused when a link leads it outside the artifact."""
    fp = root / rel
    if fp.is_symlink() or any((root / q).is_symlink() for q in Path(rel).parents if q != Path(".")):
        real, base = fp.resolve(), root.resolve()
        if base not in real.parents:
            raise ArtifactError(f"{root}: file {rel} is a link to {real}, outside the artifact; re-create it")
    return fp


def verify(path: str | os.PathLike, include: Callable[[str], bool] | None = None) -> list[str]:
    """Re-hash every file (or those whose relative path `include` accepts) against the manifest; return
    the problems found (empty when intact)."""
    p = Path(path)
    m = read_manifest(p)
    problems = []
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


def is_artifact_dir(path: Path) -> bool:
    """True when `path` holds a manifest spanbert can read: a directory spanbert wrote."""
    if not (path / MANIFEST).is_file():
        return False
    try:
        read_manifest(path)
    except ArtifactError:
        return False
    return True


def refuse_foreign(out: Path) -> None:
    """spanbert replaces only what it wrote: refuse a non-empty directory that is not an artifact."""
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: the output path is a file; choose another --out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if (out / MANIFEST).is_file() and not is_artifact_dir(out):
        raise OutputExistsError(
            f"{out}: holds an unreadable {MANIFEST}, so spanbert cannot tell it wrote it; choose another "
            "--out, or remove the directory yourself"
        )
    if not (out / MANIFEST).is_file():
        raise OutputExistsError(
            f"{out}: exists, is not empty and is not a spanbert artifact; spanbert never replaces files it "
            "did not write: choose another --out, or empty the directory yourself"
        )


def existing(plan_: Plan, force: bool = False) -> Artifact | None:
    """Return the artifact at the target if it is this plan's (up to date); refuse anything else there.

    With `force`, a different artifact at the target is allowed (it is replaced when the new one is
    done); a directory that is not an artifact is never replaced, `force` or not. Call it holding the
    target's lock (`locks.exclusive(plan.out)`), so that no other writer can change the answer."""
    out = plan_.out
    refuse_foreign(out)
    if not (out / MANIFEST).is_file():
        return None
    m = read_manifest(out)
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
        self.dir = plan_.out.parent  # set to the temporary directory on entering
        self._done = False

    def __enter__(self) -> ArtifactWriter:
        self.dir = make_temp_dir(self.plan.out)
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
            if rel in (MANIFEST, TEMP_MARK):
                continue
            files.append(FileEntry(rel, fp.stat().st_size, sha256_file(fp), rows.get(rel)))
        manifest = build_manifest(self.plan, files, stats, extra)
        (self.dir / MANIFEST).write_text(manifest.to_json(self.plan.out))
        publish_dir(self.dir, self.plan.out)
        self._done = True
        return Artifact(self.plan.out, manifest)


def _publish(tmp: Path, out: Path) -> None:
    """Move a finished directory into place; an artifact already there is replaced only at the end."""
    if out.exists():
        old = _set_aside(out)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def publish_dir(tmp: Path, out: Path) -> None:
    """`_publish` for a directory made by `make_temp_dir` (a checkpoint, an export inside a run)."""
    release_temp_dir(tmp)
    _publish(tmp, out)


def remove_dir(path: Path) -> None:
    """Delete a directory spanbert wrote: out of sight at once (renamed), then removed; if the removal
    is interrupted, the next writer there finishes it."""
    if path.exists():
        shutil.rmtree(_set_aside(path), ignore_errors=True)


def _set_aside(path: Path) -> Path:
    (path / TEMP_MARK).write_text(f"{os.getpid()} {platform.node()}\n")
    old = path.parent / f"{_OLD_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}"
    os.replace(path, old)
    return old


# --------------------------------------------------------------------------------------------------
# temporary directories: spanbert's own, and removed when their writer is gone

TEMP_MARK = ".spanbert-temp"  # inside each temporary directory while it is being written
_TEMP_NAME = re.compile(r"^\.(?:tmp|old)-(?P<target>.+)-[0-9a-f]{8}$")
_LOCK_NAME = re.compile(r"^\.(?P<target>.+)\.lock$")


def make_temp_dir(target: Path) -> Path:
    """A new temporary directory beside `target`, marked as spanbert's, where `target` is built before it
    is renamed into place. Leftovers of writers that are gone (killed, the machine rebooted) are removed
    first; call it holding `target`'s lock."""
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_temp_dirs(target.parent)
    d = target.parent / f"{_TMP_PREFIX}{target.name}-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    (d / TEMP_MARK).write_text(f"{os.getpid()} {platform.node()}\n")
    return d


def release_temp_dir(d: Path) -> None:
    """Remove the mark before the directory is published (it is not part of the artifact)."""
    with contextlib.suppress(FileNotFoundError):
        (d / TEMP_MARK).unlink()


def sweep_temp_dirs(parent: Path) -> list[Path]:
    """Remove what writers that are gone left in `parent`: spanbert's temporary directories (marked as
    spanbert's, `.tmp-` and `.old-`) whose target's lock is free, and lock files no process holds. A live
    writer holds its target's lock, so its directory is never touched. Returns what was removed."""
    removed: list[Path] = []
    try:
        entries = sorted(parent.iterdir())
    except OSError:
        return removed
    for d in entries:
        if (lock := _LOCK_NAME.match(d.name)) is not None and d.is_file():
            if locks.clear_stale(parent / lock.group("target")):
                removed.append(d)
            continue
        m = _TEMP_NAME.match(d.name)
        if m is None or d.is_symlink():
            continue
        if d.is_dir():
            mark = d / TEMP_MARK
            if not mark.is_file():
                continue  # not one of ours (or one about to be published)
            mine = mark.read_text().split()[:1] == [str(os.getpid())]
        elif d.is_file() and d.name.startswith(_TMP_PREFIX) and (parent / MANIFEST).is_file():
            mine = False  # an `atomic_file` inside an artifact: written and renamed within one call
        else:
            continue
        writer = _writer_of(parent / m.group("target"))
        if writer == "other" or (writer == "us" and mine):
            continue  # a live writer's
        if d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
        else:
            d.unlink(missing_ok=True)
        removed.append(d)
    return removed


def _writer_of(target: Path) -> str:
    """Who may be writing `target`: "us", "other" (a live process holds its lock, or the lock of a
    directory above it, such as the run of a checkpoint), or "none"."""
    t0 = Path(os.path.abspath(target))
    for t in (t0, *t0.parents):
        if not t.name:
            break
        if locks.holds(t):
            return "us"
        if not locks.is_free(t):
            return "other"
    return "none"


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
