"""One writer per artifact: an exclusive lock beside every output directory.

A stage that writes `DIR` first takes `.DIR.lock` in DIR's parent (a POSIX record lock, `fcntl.lockf`,
on that file), and holds it until its artifact is published or its temporary files are gone. A second
writer is refused at once with the holder's PID, host and command, or waits for it (`--wait`, or
SPANBERT_LOCK_WAIT=1).

The kernel releases the lock when its process ends, however it ends (SIGKILL included), so a lock of a
dead process is taken over by simply taking it: there is no stale-lock guessing by PID or age. Record
locks rather than `flock`: a flock is shared with forked children (data-loader and tokenizer workers),
which would keep a killed writer's lock alive until they noticed. Record locks are per process, so this
module never opens a held lock file a second time (closing that would release it). The lock
file is removed by its holder on release; a writer that opened a file just unlinked by the previous
holder notices that the path now names another file (or none) and tries again, so two writers can never
both hold "the" lock.

Locks are re-entrant within a process (a pipeline may take the lock of a stage it then runs), and the
processes launched by a holder (the ranks of `pretrain --procs N`) inherit it through the environment:
only their ancestor could be holding it for them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spanbert_cli.errors import IOFailure, SpanbertError, describe_os_error, error_code

WAIT_ENV = "SPANBERT_LOCK_WAIT"
_HELD_ENV = "SPANBERT_HELD_LOCKS"  # lock files held by an ancestor process (os.pathsep-separated)

_UNSET: Any = object()
_env_before: Any = _UNSET  # SPANBERT_LOCK_WAIT before --wait set it
_held: dict[str, int] = {}  # lock file → re-entry count, in this process


class LockedError(SpanbertError):
    """Another live process is writing the same artifact."""

    exit_code = 1


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file of an output: a hidden file beside it (never inside, which may not exist yet)."""
    t = Path(os.path.abspath(target))
    return t.parent / f".{t.name}.lock"


def set_wait(wait: bool) -> None:
    """`--wait`: from now on (and in the processes this one launches, through the environment), wait
    for a busy lock instead of refusing. `reset_wait` undoes it when the command ends."""
    global _env_before
    if wait and _env_before is _UNSET:
        _env_before = os.environ.get(WAIT_ENV)
        os.environ[WAIT_ENV] = "1"


def reset_wait() -> None:
    global _env_before
    if _env_before is not _UNSET:
        _restore_env(WAIT_ENV, _env_before)
        _env_before = _UNSET


def _should_wait() -> bool:
    return os.environ.get(WAIT_ENV, "") not in ("", "0")


@contextlib.contextmanager
def exclusive(target: str | os.PathLike, *, what: str = "artifact") -> Iterator[None]:
    """Hold the exclusive lock of `target` for the duration of the block."""
    path = lock_path(target)
    key = str(path)
    if key in _held or key in os.environ.get(_HELD_ENV, "").split(os.pathsep):
        _held[key] = _held.get(key, 0) + 1
        try:
            yield
        finally:
            _held[key] -= 1
            if _held[key] == 0:
                del _held[key]
        return
    fd = _acquire(path, Path(target), what)
    _held[key] = 1
    before = os.environ.get(_HELD_ENV)
    os.environ[_HELD_ENV] = os.pathsep.join(p for p in (before, key) if p)
    try:
        yield
    finally:
        _restore_env(_HELD_ENV, before)
        del _held[key]
        # Unlink while still holding it: a waiter that opened this file sees it was replaced and retries.
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def holds(target: str | os.PathLike) -> bool:
    """True when this process holds `target`'s lock."""
    return str(lock_path(target)) in _held


def is_free(target: str | os.PathLike) -> bool:
    """True when no live process holds `target`'s lock (checked by taking it for an instant)."""
    path = lock_path(target)
    if str(path) in _held:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)  # closing releases the probe's lock
    return True


def clear_stale(target: str | os.PathLike) -> bool:
    """Remove `target`'s lock file when no process holds it (its holder was killed); True if removed."""
    path = lock_path(target)
    if str(path) in _held or not path.is_file():
        return False
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    removed = _same_file(fd, path)
    if removed:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while holding it, as `exclusive` does on release
    os.close(fd)
    return removed


def _acquire(path: Path, target: Path, what: str) -> int:
    wait = _should_wait()
    announced = False
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # the first write of every stage: name the output, not the lock file
            bare = OSError(e.errno, e.strerror)  # without the lock file's name, so the output is named
            raise IOFailure(describe_os_error(bare, target), error_code(e), str(target)) from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            holder = _describe_holder(fd)
            if not wait:
                os.close(fd)
                raise LockedError(
                    f"{target}: another spanbert process is writing this {what} ({holder}); wait for it "
                    "to finish, pass --wait to queue behind it, or choose another --out"
                ) from None
            if not announced:
                print(f"waiting for {holder} to finish writing {target} ...", file=sys.stderr, flush=True)
                announced = True
            fcntl.lockf(fd, fcntl.LOCK_EX)  # blocks; Ctrl-C interrupts it
        if _same_file(fd, path):
            break
        os.close(fd)  # the previous holder removed this lock file on release: take the new one
        time.sleep(0.01)
    _write_holder(fd)
    return fd


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _write_holder(fd: int) -> None:
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(["spanbert", *sys.argv[1:]]) if sys.argv else "spanbert",
        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    data = (json.dumps(info) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _describe_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "a process that is starting"
    cmd = str(info.get("command", "?"))
    if len(cmd) > 120:
        cmd = cmd[:117] + "..."
    return f"PID {info['pid']} on {info.get('host', '?')}, `{cmd}`, since {info.get('since', '?')}"


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
