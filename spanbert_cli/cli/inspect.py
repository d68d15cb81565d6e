"""`spanbert verify` and `spanbert lineage`: look into any artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.tree import Tree

from spanbert_cli import artifacts
from spanbert_cli.cli._common import JsonOpt, QuietOpt, emit_json, err, say
from spanbert_cli.errors import ArtifactError

ArtifactArg = Annotated[Path, typer.Argument(help="An artifact directory.", show_default=False)]


def verify(path: ArtifactArg, as_json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Re-hash every file of an artifact against its manifest."""
    m = artifacts.read_manifest(path)
    problems = artifacts.verify(path)
    if as_json:
        emit_json(
            {
                "path": str(path),
                "kind": m.kind,
                "fingerprint": m.fingerprint,
                "ok": not problems,
                "files": len(m.files),
                "problems": problems,
            }
        )
    if problems:
        raise ArtifactError(
            f"{path}: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
        )
    say(f"[green]ok[/]: {path} ({m.kind} {m.short}, {len(m.files)} files verified)", quiet)


_KEY_PARAMS = 6


def _label(node: dict[str, Any]) -> str:
    if node["kind"] == "file":
        size = f" {node['bytes']:,} B" if node.get("bytes") is not None else ""
        return (
            f"[cyan]{node.get('role', 'file')}[/] {node['path']} [dim]sha256 {node['sha256'][:12]}{size}[/]"
        )
    label = f"[bold]{node['kind']}[/] [yellow]{node['fingerprint'][:12]}[/] {node['path']}"
    if node.get("missing"):
        return label + " [red](missing)[/]"
    if node.get("stale"):
        label += " [red](re-made since)[/]"
    params = node.get("params") or {}
    shown = [f"{k}={v}" for k, v in params.items() if not isinstance(v, dict | list)][:_KEY_PARAMS]
    if shown:
        label += "\n[dim]" + ", ".join(shown) + "[/]"
    return label


def _tree(node: dict[str, Any], tree: Tree | None = None) -> Tree:
    branch = Tree(_label(node)) if tree is None else tree.add(_label(node))
    files = [c for c in node.get("inputs", []) if c["kind"] == "file"]
    for child in node.get("inputs", []):
        if child["kind"] != "file":
            _tree(child, branch)
    if len(files) > 8:
        for f in files[:3]:
            branch.add(_label(f))
        branch.add(f"[dim]… {len(files) - 3} more input files[/]")
    else:
        for f in files:
            branch.add(_label(f))
    return branch


def lineage(path: ArtifactArg, as_json: JsonOpt = False) -> None:
    """Show the chain of upstream artifacts (kind, fingerprint, key parameters)."""
    node = artifacts.lineage(path)
    if as_json:
        emit_json(node)
    else:
        err.print(_tree(node))


def register(app: typer.Typer) -> None:
    app.command("verify")(verify)
    app.command("lineage")(lineage)
