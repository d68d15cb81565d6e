"""The lineage of several artifacts as one graph: each artifact once, the raw input files summarised.

`store.lineage` answers for one artifact with a tree, in which an artifact that two others read (the
shards read by a run and by its MLM evaluation, the tokenizer of four ablation runs) appears once under
each of them. A report of a pipeline directory wants the graph instead: every artifact once, in the order
the data flows (upstream first), each naming its inputs by fingerprint; and the raw files an artifact read
(55 corpus files) as a count and a size rather than a list.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spanbert_cli.artifacts.store import lineage


@dataclass(frozen=True)
class FileGroup:
    """The raw input files of one role (corpus, train, dev, init) of one artifact."""

    role: str
    count: int
    bytes: int
    where: str  # the one file, or the directory that holds them all

    def describe(self) -> str:
        """Like "55 files, 1.2 MB in corpus/"; or the one file's name and its size."""
        if self.count == 1:
            return f"{Path(self.where).name} ({human_bytes(self.bytes)})"
        return f"{self.count} files, {human_bytes(self.bytes)} in {_shown_path(self.where)}"


@dataclass
class GraphNode:
    fingerprint: str
    kind: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    inputs: list[str] = field(default_factory=list)  # fingerprints of the input artifacts, as recorded
    files: list[FileGroup] = field(default_factory=list)
    state: str = ""  # "", "missing" (not found anywhere) or "stale" (its directory was re-made since)

    @property
    def name(self) -> str:
        """The directory name: the stage's name in a pipeline directory (`tokenize`, `pretrain-span`)."""
        return Path(self.path).name


def _shown_path(path: str) -> str:
    """Relative to the working directory when inside it (shorter), else as recorded."""
    try:
        rel = Path(os.path.abspath(path)).relative_to(Path.cwd())
    except ValueError:
        return path
    return str(rel) if str(rel) != "." else "."


def human_bytes(n: int) -> str:
    """Decimal units, one decimal place from kB on: 1.2 MB."""
    if n < 1000:
        return f"{n} B"
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def _file_groups(refs: list[dict[str, Any]]) -> list[FileGroup]:
    by_role: dict[str, list[dict[str, Any]]] = {}
    for ref in refs:
        by_role.setdefault(ref.get("role") or "file", []).append(ref)
    groups = []
    for role, members in by_role.items():
        paths = [str(m["path"]) for m in members]
        if len(paths) == 1:
            where = paths[0]
        else:
            try:
                where = os.path.commonpath(paths)
            except ValueError:  # absolute and relative paths mixed
                where = os.path.dirname(paths[0])
        total = sum(int(m.get("bytes") or 0) for m in members)
        groups.append(FileGroup(role, len(members), total, where))
    return groups


def _add(tree: dict[str, Any], graph: dict[str, GraphNode]) -> str:
    """Add a `store.lineage` tree to `graph` (inputs before the node: upstream first); its fingerprint."""
    fp = tree["fingerprint"]
    if fp in graph:
        return fp
    children = [c for c in tree.get("inputs", []) if c.get("kind") != "file"]
    inputs = [_add(c, graph) for c in children]
    # Files inside an input artifact (an evaluation names the checkpoint's weights it read) are part of
    # that artifact, whose manifest hashes them: not raw inputs of their own.
    homes = [Path(os.path.abspath(c["path"])) for c in children]
    raw = [
        c
        for c in tree.get("inputs", [])
        if c.get("kind") == "file" and not any(_inside(Path(os.path.abspath(c["path"])), h) for h in homes)
    ]
    graph[fp] = GraphNode(
        fingerprint=fp,
        kind=tree["kind"],
        path=str(tree["path"]),
        params=dict(tree.get("params") or {}),
        created=str(tree.get("created") or ""),
        inputs=inputs,
        files=_file_groups(raw),
        state="missing" if tree.get("missing") else "stale" if tree.get("stale") else "",
    )
    return fp


def _inside(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def lineage_graph(paths: Iterable[str | os.PathLike]) -> dict[str, GraphNode]:
    """The artifacts at `paths` and everything upstream of them, by fingerprint, upstream first."""
    graph: dict[str, GraphNode] = {}
    for p in paths:
        _add(lineage(p), graph)
    return graph


def graph_json(graph: dict[str, GraphNode]) -> list[dict[str, Any]]:
    """The graph as JSON: one object per artifact, upstream first."""
    return [asdict(node) for node in graph.values()]
