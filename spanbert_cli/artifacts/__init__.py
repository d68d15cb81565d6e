"""Versioned artifacts: the provenance spine every stage writes and reads.

An artifact is a directory holding its output files and a `manifest.json` that records what made it:
the stage (`kind`) and its schema version, the fully resolved parameters, the inputs (an upstream
artifact's fingerprint, or a raw file's sha256 and size), every output file with its size and sha256,
and statistics. The `fingerprint` is a hash over exactly what determines the output (kind, schema
version, parameters, the inputs' fingerprints) and nothing that does not (paths, timestamps, worker
counts), so "same fingerprint" means "same bytes" and a stage can skip work it has already done.

Artifacts are written atomically: a stage builds into a temporary directory beside the target and
renames it into place only after the manifest is written, so a crash never leaves half an artifact.

manifest.py   what an artifact records: kind, schema version, fingerprint, inputs, files; the checks
store.py      reading: open and check, verify, the workspace, lineage
writer.py     writing: plan, what may be replaced, the atomic writer
temp.py       temporary directories, atomic replacement, leftovers of writers that are gone
"""

from spanbert_cli.artifacts.manifest import (
    MANIFEST,
    FileEntry,
    InputRef,
    Manifest,
    ManifestError,
    annotate,
    canonical_json,
    check_manifest,
    current_annotations,
    fingerprint,
    is_inside_path,
    relative_stored_path,
    remembered_input_hashes,
    resolve_stored_path,
    sha256_file,
    tool_info,
)
from spanbert_cli.artifacts.store import (
    Artifact,
    default_out,
    find_latest,
    find_upstream,
    kind_dir,
    lineage,
    open_artifact,
    read_manifest,
    verify,
    workspace_root,
)
from spanbert_cli.artifacts.temp import (
    TEMP_MARK,
    atomic_file,
    make_temp_dir,
    publish_dir,
    release_temp_dir,
    remove_dir,
    sweep_temp_dirs,
)
from spanbert_cli.artifacts.writer import (
    ArtifactWriter,
    Plan,
    build_manifest,
    check_out_apart,
    existing,
    plan,
    refuse_foreign,
)
from spanbert_cli.errors import ArtifactError

__all__ = [
    "MANIFEST",
    "TEMP_MARK",
    "Artifact",
    "ArtifactError",
    "ArtifactWriter",
    "FileEntry",
    "InputRef",
    "Manifest",
    "ManifestError",
    "Plan",
    "annotate",
    "atomic_file",
    "build_manifest",
    "canonical_json",
    "check_manifest",
    "check_out_apart",
    "current_annotations",
    "default_out",
    "existing",
    "find_latest",
    "find_upstream",
    "fingerprint",
    "is_inside_path",
    "kind_dir",
    "lineage",
    "make_temp_dir",
    "open_artifact",
    "plan",
    "publish_dir",
    "read_manifest",
    "refuse_foreign",
    "relative_stored_path",
    "release_temp_dir",
    "remembered_input_hashes",
    "remove_dir",
    "resolve_stored_path",
    "sha256_file",
    "sweep_temp_dirs",
    "tool_info",
    "verify",
    "workspace_root",
]
