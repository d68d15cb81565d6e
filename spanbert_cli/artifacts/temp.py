"""spanbert's temporary directories: made beside their target, renamed into place when complete, and
removed by the next writer when the process that made them is gone (never while a live one holds the
target's lock)."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spanbert_cli.artifacts import locks
from spanbert_cli.artifacts.manifest import MANIFEST

_TMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"


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
