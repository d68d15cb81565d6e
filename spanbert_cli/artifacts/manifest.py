"""The manifest: what an artifact is made of and from, its fingerprint, and the checks a manifest read
from disk must pass (every field of its type, every listed file inside the artifact)."""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spanbert_cli import __version__
from spanbert_cli.errors import ArtifactError

if TYPE_CHECKING:
    from spanbert_cli.artifacts.store import Artifact

MANIFEST = "manifest.json"
_HASH_CHUNK = 1 << 20

_ANNOTATIONS: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "annotations", default=None
)


@contextlib.contextmanager
def annotate(values: Mapping[str, Any]) -> Iterator[None]:
    """Record `values` in the `extra` of every manifest written inside this block (e.g. the recipe that
    ran a stage). Annotations describe how an artifact was made; they never enter its fingerprint."""
    token = _ANNOTATIONS.set({**current_annotations(), **values})
    try:
        yield
    finally:
        _ANNOTATIONS.reset(token)


def current_annotations() -> dict[str, Any]:
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
    here = Path(__file__).resolve().parents[2]  # the repository of a source checkout
    if not (here / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
