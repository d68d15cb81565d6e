"""Ctrl-C and SIGTERM: failures that unwind, then one line saying what stopped and how to go on.

`handling()` (entered by the command line, and by every launched training process) makes SIGINT and
SIGTERM raise `Interrupted`, a `BaseException` like KeyboardInterrupt: no ``except Exception`` swallows
it, and every ``finally`` and context manager on the way out runs, so temporary directories, half-saved
checkpoints and locks go. SIGTERM needs this most: by default it kills the process on the spot.

The process exits with 128 + the signal's number (130, 143), as a shell reports a process killed by it,
so ``spanbert tokenize … && spanbert shard`` stops. The code that is running says what it is doing with
`activity(...)`; the handler keeps a copy of that stack in the exception, because by the time the line
is printed the stack has unwound.

Only the first signal interrupts: later ones (a second Ctrl-C, or the launcher's SIGTERM to a training
process that the terminal's SIGINT already reached) are ignored, so the cleanup they would cut short
finishes. Processes forked from the one that entered `handling()` (tokenizer pool and data-loader
workers) inherit the handler; they ignore SIGINT, which the terminal sends to the whole process group
while their parent stops them anyway, end quietly on SIGTERM, and print nothing when their parent
goes away in the middle of handing data over.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)

NOTHING_KEPT = "nothing half-written was kept; re-run the command"


@dataclass(frozen=True)
class Activity:
    """What the code inside `activity(...)` does, for the line an interruption prints.

    what: a phrase after "while", e.g. "pretraining runs/x"; None adds nothing to say.
    kept: for work that survives an interruption (a run's checkpoints): the checkpoint to go on from,
        asked once the cleanup is done; None from it means nothing was saved yet.
    resume: the command line that goes on from a checkpoint, given the interrupted command line.
    argv: the interrupted command line (set by the command-line entry point).
    """

    what: str | None = None
    kept: Callable[[], Path | None] | None = None
    resume: Callable[[Sequence[str], Path], Sequence[str]] | None = None
    argv: tuple[str, ...] | None = None


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; carries the signal and the activities it interrupted."""

    def __init__(self, signum: int, frames: Sequence[Activity] = ()):
        self.signum = int(signum)
        self.frames = tuple(frames)
        super().__init__(f"interrupted ({signal_name(self.signum)})")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def within(self, *frames: Activity) -> Interrupted:
        """The same interruption, as seen from deeper activities (those of a launched process)."""
        return Interrupted(self.signum, (*self.frames, *frames))


_stack: list[Activity] = []
_owner: int | None = None  # the process that entered `handling()`; forked children differ
_raised: Interrupted | None = None  # the interruption of this process, once it happened


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


@contextlib.contextmanager
def activity(
    what: str | None = None,
    *,
    kept: Callable[[], Path | None] | None = None,
    resume: Callable[[Sequence[str], Path], Sequence[str]] | None = None,
    argv: Sequence[str] | None = None,
) -> Iterator[None]:
    """Say what the block does, for the line printed if it is interrupted (see `Activity`)."""
    _stack.append(Activity(what, kept, resume, tuple(argv) if argv is not None else None))
    try:
        yield
    finally:
        _stack.pop()


def current() -> tuple[Activity, ...]:
    return tuple(_stack)


def _handle(signum: int, frame: Any) -> None:
    global _raised
    if os.getpid() != _owner:  # a forked worker: its parent stops it
        if signum == signal.SIGTERM:
            os._exit(128 + signum)
        return
    if _raised is not None:  # already unwinding: let the cleanup finish
        return
    expect_children_to_exit()  # the workers end on the same SIGTERM
    _raised = Interrupted(signum, _stack)
    raise _raised


def _ignore(signum: int, frame: Any) -> None:
    pass


def _worker_excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    # The thread of a worker that hands tensors' file descriptors to its parent (multiprocessing's
    # resource sharer) loses the connection when the parent is interrupted in mid-hand-over; the
    # parent says what happened.
    if not issubclass(kind, ConnectionError):
        sys.__excepthook__(kind, value, tb)


def _after_fork_in_child() -> None:
    if _owner is not None:  # forked by a process inside `handling()`: a worker
        sys.excepthook = _worker_excepthook


os.register_at_fork(after_in_child=_after_fork_in_child)


def expect_children_to_exit() -> None:
    """From now on the end of a worker process is no error: torch's data loader would otherwise raise
    "worker exited unexpectedly" from its SIGCHLD handler, in the middle of the cleanup. (A Python
    handler that does nothing rather than SIG_DFL: CPython warns about a SIGCHLD already pending for
    a handler that is no longer Python's.)"""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, _ignore)


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """Inside the block, SIGINT and SIGTERM raise `Interrupted` (see the module docstring). An error
    that the cleanup of an interruption raises instead leaves as that interruption: it is a
    consequence (a worker pool broken by the same signal, a peer process gone)."""
    global _owner, _raised
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    saved = {s: signal.getsignal(s) for s in SIGNALS}
    outer = (_owner, _raised)
    _owner, _raised = os.getpid(), None
    for s in SIGNALS:
        signal.signal(s, _handle)
    try:
        yield
        if _raised is not None:  # something swallowed it: an interrupted command has still failed
            raise _raised
    except BaseException as e:
        if _raised is not None and not isinstance(e, Interrupted):
            raise _raised from None
        raise
    finally:
        # After an interruption the handlers stay: a repeated Ctrl-C while the interpreter exits would
        # print a KeyboardInterrupt traceback.
        if _raised is None:
            for s, h in saved.items():
                signal.signal(s, h)
            _owner, _raised = outer


# --------------------------------------------------------------------------------------------------
# the line


def _innermost(frames: Sequence[Activity], field: str) -> Any:
    for f in reversed(frames):
        value = getattr(f, field)
        if value is not None:
            return value
    return None


def summary(e: Interrupted) -> dict[str, Any]:
    """What was interrupted and what of it is kept, as plain data (a launched process records it for
    the launching process, which then names it: see `frame_from_summary`)."""
    kept = _innermost(e.frames, "kept")
    checkpoint = None
    if kept is not None:
        with contextlib.suppress(OSError):  # a run directory that went away meanwhile kept nothing
            checkpoint = kept()
    return {
        "what": _innermost(e.frames, "what"),
        "resumable": kept is not None,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
    }


def frame_from_summary(record: dict[str, Any]) -> Activity:
    checkpoint = record.get("checkpoint")
    kept = (lambda: Path(checkpoint) if checkpoint else None) if record.get("resumable") else None
    return Activity(what=record.get("what"), kept=kept)


def message(e: Interrupted) -> str:
    """``interrupted (SIGINT) while <what>; <how to go on>``: the error line of an interruption."""
    info = summary(e)
    what = info["what"] or "running spanbert"
    if info["checkpoint"]:
        resume = _innermost(e.frames, "resume")
        argv = _innermost(e.frames, "argv")
        if resume is not None and argv is not None:
            how = f"continue with `{shlex.join(resume(argv, Path(info['checkpoint'])))}`"
        else:
            how = "re-run the command with --resume to continue from it"
        advice = f"the last checkpoint is {info['checkpoint']}; {how}"
    elif info["resumable"]:
        advice = "no checkpoint was saved yet, so nothing was kept; re-run the command"
    else:
        advice = NOTHING_KEPT
    return f"interrupted ({signal_name(e.signum)}) while {what}; {advice}"
