"""The error hierarchy of spanbert.

Library code raises these; only the CLI turns them into one line on stderr and an exit code.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import traceback
from collections.abc import Iterator
from pathlib import Path


class SpanbertError(Exception):
    """Base class: a problem the user can fix, reported as one line without a traceback."""

    exit_code = 1


class UsageError(SpanbertError):
    """Bad parameters or command-line usage (exit code 2)."""

    exit_code = 2


class DataError(SpanbertError):
    """Bad or unreadable input data, or a failure while processing it (exit code 1)."""

    exit_code = 1


class ArtifactError(DataError):
    """An artifact that is missing, of the wrong kind, of a newer schema, or tampered with."""


class OutputExistsError(SpanbertError):
    """The output directory holds something else; `--force` replaces it."""

    exit_code = 1


class IOFailure(SpanbertError):
    """A file the system would not let spanbert write or read: disk full, read-only, no permission, ..."""

    exit_code = 1

    def __init__(self, message: str, code: int | None = None, path: str | None = None):
        super().__init__(message)
        self.code = code  # the errno, when known
        self.path = path


# What to say for each OS error worth a fix of its own; {path} is the file, {verb} "writing" or "reading".
_SPACE_FIX = "free space or choose another --out"
# A run that could not save keeps its earlier checkpoints: the fix is space and --resume, not a new --out
# (with no checkpoint yet, --resume starts at step 0).
RESUME_FIX = "free space, then run again with --resume"
_MESSAGES: dict[int, str] = {
    errno.ENOSPC: "no space left on device while writing {path}; {space_fix}",
    errno.EDQUOT: "disk quota exceeded while writing {path}; {space_fix}",
    errno.EROFS: "{path}: read-only file system; choose a writable --out",
    errno.EACCES: "{path}: permission denied; {access_fix}",
    errno.EPERM: "{path}: operation not permitted; {access_fix}",
    errno.EMFILE: "too many open files while {verb} {path}; raise the limit (ulimit -n) or use fewer --workers",
    errno.ENFILE: "the system has too many open files while {verb} {path}; close other programs and retry",
    errno.ENAMETOOLONG: "{path}: file name too long; choose a shorter path",
    errno.EIO: "input/output error while {verb} {path}; check the disk (dmesg) and retry",
}
_ACCESS_FIXES = {
    "writing": "choose a writable --out",
    "reading": "make it readable",
    None: "check its permissions (outputs need a writable --out)",
}
# Rust libraries (tokenizers, safetensors) say "(os error 28)", Arrow "[errno 28]"; torch only gives the
# strerror text ("open file failed with strerror: Read-only file system").
_ERRNO_TEXT = re.compile(r"\(os error (\d+)\)|\[errno (\d+)\]", re.IGNORECASE)
_STRERRORS = {os.strerror(code).lower(): code for code in _MESSAGES}
_WRITE_ONLY = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # errors that only a write can meet
# torch.save reports a failed write without its cause: "[enforce fail at inline_container.cc:...]
# unexpected pos ..." or "PytorchStreamWriter failed writing file ...".
_TORCH_WRITE_FAILURE = ("inline_container.cc", "PytorchStreamWriter failed")
_NEARLY_FULL = 1 << 20  # free bytes below which a write that failed without a cause is taken for ENOSPC


def error_code(e: BaseException) -> int | None:
    """The errno behind an error: an OSError's own, or the one a library's message names."""
    if isinstance(e, OSError) and e.errno:
        return e.errno
    text = str(e)
    if m := _ERRNO_TEXT.search(text):
        return int(m.group(1) or m.group(2))
    lowered = text.lower()
    # Longest first: "too many open files in system" before "too many open files".
    for strerror in sorted(_STRERRORS, key=len, reverse=True):
        if strerror in lowered:
            return _STRERRORS[strerror]
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def _disk_nearly_full(path: str | os.PathLike) -> bool:
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free < _NEARLY_FULL
    except OSError:
        return False


def describe_os_error(
    e: BaseException,
    path: str | os.PathLike | None = None,
    action: str | None = "writing",
    space_fix: str = _SPACE_FIX,
) -> str:
    """One line naming the file and the fix for an OS-level failure (`action`: "writing", "reading" or
    None when unknown). The file is the one the error names, else `path`."""
    code = error_code(e)
    if isinstance(e, OSError):
        # A copy or a rename names its destination second: that is the file being written.
        writing = action == "writing" or (action is None and code in _WRITE_ONLY)
        named = (e.filename2 or e.filename) if writing else (e.filename or e.filename2)
        path = named if named is not None else path
    shown = str(path) if path is not None else "a file (run with --debug to see which)"
    verb = action or "accessing"
    if code in _MESSAGES:
        return _MESSAGES[code].format(
            path=shown,
            verb=verb,
            space_fix=space_fix,
            access_fix=_ACCESS_FIXES.get(action, _ACCESS_FIXES[None]),
        )
    reason = e.strerror if isinstance(e, OSError) and e.strerror else _first_line(e)
    return f"{verb} {shown} failed: {reason[:1].lower()}{reason[1:]}"


def io_failure(
    e: BaseException,
    path: str | os.PathLike | None = None,
    action: str | None = "writing",
    space_fix: str = _SPACE_FIX,
) -> IOFailure | None:
    """`e` as an `IOFailure` when it is an OS-level failure (an OSError, a library error naming an errno,
    a torch write failure), else None."""
    code = error_code(e)
    described = e
    if not isinstance(e, OSError) and code is None:
        if action != "writing" or not any(s in str(e) for s in _TORCH_WRITE_FAILURE):
            return None
        if path is not None and _disk_nearly_full(path):
            code = errno.ENOSPC
            described = OSError(code, os.strerror(code))
    failure = IOFailure(describe_os_error(described, path, action, space_fix), code, _str(path))
    failure.__cause__ = e  # --debug shows the original error's traceback
    return failure


def _str(path: str | os.PathLike | None) -> str | None:
    return None if path is None else str(path)


@contextlib.contextmanager
def naming_io_errors(
    path: str | os.PathLike, action: str = "writing", space_fix: str = _SPACE_FIX
) -> Iterator[None]:
    """Inside this block an OS-level failure becomes an `IOFailure` naming `path` (or the file the error
    names): pyarrow, safetensors, tokenizers and torch report a full disk without the file's name."""
    try:
        yield
    except SpanbertError:
        raise
    except Exception as e:
        failure = io_failure(e, path, action, space_fix)
        if failure is None:
            raise
        _release_frames(e)
        raise failure from e


def _release_frames(e: BaseException) -> None:
    """Drop the locals of the frames an error (and the errors it chains) went through: a failed writer
    (torch's, say) lives on there with its file open, so removing the partial file would not give its
    space back until the garbage collector breaks the cycle. The tracebacks still print."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [e]
    while stack:
        err = stack.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        traceback.clear_frames(err.__traceback__)
        stack += [err.__context__, err.__cause__]
