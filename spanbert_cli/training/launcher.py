"""Launching the training processes: torch's elastic agent in this process, one worker per GPU (or CPU
process), and failures explained as one line naming the rank that failed first.

How a failure is reported, and how an interruption stops every rank, is described in
`spanbert_cli.training.distributed`'s docstring; this module is that mechanism.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from spanbert_cli import interrupts
from spanbert_cli.errors import SpanbertError
from spanbert_cli.training.distributed import (
    CollectiveError,
    DistributedError,
    LaunchPlan,
    RankInfo,
    _clean,
    _first_line,
    _set_cpu_threads,
    destroy_process_group,
    from_environment,
    init_process_group,
    is_consequence,
)

DEFAULT_MASTER_PORT = 29500  # torchrun's
MONITOR_INTERVAL_S = 0.2  # how often the elastic agent looks at its processes
SHUTDOWN_TIMEOUT_S = 10  # SIGTERM → SIGKILL grace for the surviving processes of a failed job
CONSEQUENCE_LINGER_S = 5 * MONITOR_INTERVAL_S  # see _entry


@dataclasses.dataclass(frozen=True)
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    status_dir: str
    device: str
    timeout_s: float
    debug: bool = False


def launch(plan: LaunchPlan, fn: Callable[..., Any], *args: Any, debug: bool = False) -> dict[int, Any]:
    """Run ``fn(ctx, *args)`` in the plan's processes of this node and return their results by global rank.

    `fn` and `args` must be picklable (the processes are spawned): a module-level function. A failure of
    any rank stops every process and raises one `DistributedError` naming the rank that failed first.
    """
    from torch.distributed.elastic.multiprocessing.api import DefaultLogsSpecs, SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    status = Path(tempfile.mkdtemp(prefix="spanbert-dist-"))
    if plan.rdzv_endpoint is not None:
        backend, endpoint, configs = "c10d", plan.rdzv_endpoint, {}
        run_id, local_addr = "spanbert", None
    elif plan.master_addr is not None or plan.master_port is not None:
        addr, port = plan.master_addr or "127.0.0.1", plan.master_port or DEFAULT_MASTER_PORT
        backend, endpoint = "static", f"{addr}:{port}"
        configs = {"rank": plan.node_rank or 0}
        run_id, local_addr = "spanbert", None
    else:  # one node: meet on a free port of localhost, chosen by the rendezvous itself (port 0)
        backend, endpoint, configs = "c10d", "localhost:0", {}
        run_id, local_addr = f"spanbert-{os.getpid()}-{status.name}", "127.0.0.1"
    options = dict(
        min_nodes=plan.nnodes,
        max_nodes=plan.nnodes,
        nproc_per_node=plan.nprocs,
        run_id=run_id,
        rdzv_backend=backend,
        rdzv_endpoint=endpoint,
        rdzv_configs={**configs, "timeout": int(plan.timeout_s)},
        max_restarts=0,
        monitor_interval=MONITOR_INTERVAL_S,
        start_method="spawn",
        logs_specs=DefaultLogsSpecs(log_dir=str(status / "elastic")),
        local_addr=local_addr,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        # SIGINT and SIGTERM stay ours (they raise interrupts.Interrupted): the agent then stops the
        # processes on the way out, and a second Ctrl-C cannot cut that short.
        signals_to_handle="SIGHUP,SIGQUIT",
    )
    # Older torch releases (e.g. 2.11) lack some of these settings; they then keep their defaults.
    known = {f.name for f in dataclasses.fields(LaunchConfig)}
    config = LaunchConfig(**{k: v for k, v in options.items() if k in known})
    job = _Job(fn, tuple(args), str(status), plan.device, plan.timeout_s, debug)
    try:
        with _quiet_torch_logs(), _restored_signals(), _restored_env("TORCHELASTIC_SIGNALS_TO_HANDLE"):
            try:
                return elastic_launch(config, _entry)(job)
            except interrupts.Interrupted as e:
                raise e.within(*_interrupted_rank(status)) from None
            except ChildFailedError as e:
                raise _stopped(status, e.failures) or _explain(status, e.failures) from None
            except SignalException as e:
                sig = signal.Signals(e.sigval)
                raise DistributedError(
                    f"interrupted ({sig.name}): every training process was stopped", exit_code=128 + sig.value
                ) from None
            except RendezvousError as e:
                raise DistributedError(
                    f"the {plan.nnodes} nodes did not meet at {endpoint} ({backend} rendezvous): "
                    f"{(str(e).strip().splitlines() or [type(e).__name__])[0]}"
                ) from None
    finally:
        shutil.rmtree(status, ignore_errors=True)


def _entry(job: _Job) -> Any:
    """The first function of every launched process (RANK, WORLD_SIZE, … are set by the elastic agent)."""
    info = from_environment()
    if info is None:  # pragma: no cover (the agent always sets them)
        raise SystemExit(3)
    status = Path(job.status_dir)
    _write_json(status / f"rank-{info.rank}.start.json", {"pid": os.getpid(), "host": socket.gethostname()})
    _exit_with_parent()
    try:
        with interrupts.handling():
            _set_cpu_threads(job.device, info.local_world_size)
            ctx = init_process_group(info, job.device, job.timeout_s)
            result = job.fn(ctx, *job.args)
            destroy_process_group()
    except BaseException as e:  # everything becomes a record and an exit code
        code = _record_failure(status, info, e, job.debug)
        _end_children()
        if is_consequence(e):
            # Let the process whose failure caused this one be the first the agent sees ending (it
            # reports only one): a killed rank is then reported as killed, with its signal.
            time.sleep(CONSEQUENCE_LINGER_S)
        # No traceback: the launching process reports the error. And no interpreter shutdown either: with
        # a process group whose peers are gone, the destructors of its threads abort noisily ("terminate
        # called without an active exception"); `_end_children` has stopped the data-loader workers.
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    _write_json(status / f"rank-{info.rank}.done.json", {"time": time.time()})
    return result


def _exit_with_parent(interval_s: float = 1.0) -> None:
    """End this process when the launching process is gone (killed with SIGKILL, it cannot stop us): an
    orphan would train on, then wait forever to hand its result over."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="spanbert-parent-watch", daemon=True).start()


def _end_children() -> None:
    """Stop the data-loader workers of a failed rank before it exits without an interpreter shutdown:
    they would outlive it by up to the 5 s of their parent watchdog. They hold nothing to save, so they
    are killed. Then what the interpreter's exit does for multiprocessing: its finalizers unlink the
    loaders' semaphores, which the resource tracker would otherwise report as leaked (a warning on the
    launcher's stderr)."""
    import multiprocessing
    import multiprocessing.util

    interrupts.expect_children_to_exit()
    children = multiprocessing.active_children()
    for p in children:
        p.kill()
    deadline = time.monotonic() + 1.0
    for p in children:
        p.join(max(0.0, deadline - time.monotonic()))
    finalize = getattr(multiprocessing.util, "_run_finalizers", None)  # CPython's, since 2.6
    if finalize is not None:
        with contextlib.suppress(Exception):
            finalize(0)


def _interrupted_rank(status: Path) -> list[interrupts.Activity]:
    """What the interrupted training was doing, as the lowest rank that recorded its interruption saw
    it (rank 0: the one that writes checkpoints)."""
    errors, _, _ = _read_status(status)
    for rank in sorted(errors):
        if "interrupted" in errors[rank]:
            return [interrupts.frame_from_summary(errors[rank]["interrupted"])]
    return []


def _stopped(status: Path, failures: Mapping[int, Any]) -> interrupts.Interrupted | None:
    """The interruption that made the first rank fail, when one did (a signal that reached the ranks
    but not this process)."""
    errors, _, _ = _read_failure(status, failures)
    causes = sorted(
        (e.get("time", 0), r, e) for r, e in errors.items() if not e.get("consequence") and "exit_code" in e
    )
    if not causes or "interrupted" not in causes[0][2]:
        return None
    signum = int(causes[0][2]["exit_code"]) - 128
    return interrupts.Interrupted(signum, [*interrupts.current(), *_interrupted_rank(status)])


def _record_failure(status: Path, info: RankInfo, e: BaseException, debug: bool) -> int:
    extra: dict[str, Any] = {}
    if isinstance(e, interrupts.Interrupted):
        message, code = "interrupted", e.exit_code
        extra["interrupted"] = interrupts.summary(e)
    elif isinstance(e, KeyboardInterrupt):
        message, code = "interrupted", 130
    elif is_consequence(e):
        message, code = _lost_contact(e), 1
    elif isinstance(e, SystemExit):
        message = f"exited with code {e.code}"
        code = e.code if isinstance(e.code, int) and e.code != 0 else 1
    elif isinstance(e, SpanbertError):
        message, code = _first_line(e), e.exit_code
    elif isinstance(e, MemoryError):
        message, code = f"out of memory: {_first_line(e)}", 1
    else:
        message, code = f"unexpected {type(e).__name__}: {_first_line(e)}", 1
    if debug:
        traceback.print_exception(e, file=sys.stderr)
    with contextlib.suppress(OSError):
        _write_json(
            status / f"rank-{info.rank}.error.json",
            {
                "rank": info.rank,
                "local_rank": info.local_rank,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "time": time.time(),
                "message": message,
                "exit_code": code,
                "consequence": is_consequence(e),
                **extra,
            },
        )
    return code


def _lost_contact(e: BaseException) -> str:
    """A collective's error without gloo's source location and advice ("[…/pair.cc:537] Read error …:
    Connection reset by peer. This is typically caused by …")."""
    if isinstance(e, CollectiveError):
        return _first_line(e)
    return f"lost contact with the other processes: {_clean(_first_line(e))}"


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def _read_status(status: Path) -> tuple[dict[int, dict[str, Any]], set[int], set[int]]:
    errors: dict[int, dict[str, Any]] = {}
    started: set[int] = set()
    done: set[int] = set()
    for f in status.glob("rank-*.json"):
        m = re.fullmatch(r"rank-(\d+)\.(start|error|done)\.json", f.name)
        if not m:
            continue
        rank = int(m.group(1))
        if m.group(2) == "start":
            started.add(rank)
        elif m.group(2) == "done":
            done.add(rank)
        else:
            try:
                errors[rank] = json.loads(f.read_text())
            except (OSError, ValueError):
                errors[rank] = {"message": "failed (its error record is unreadable)", "time": 0.0}
    return errors, started, done


def _read_failure(
    status: Path, failures: Mapping[int, Any]
) -> tuple[dict[int, dict[str, Any]], set[int], set[int]]:
    """`_read_status` after a failed job, the interruptions the agent caused marked as consequences:
    when a rank ends without a record (killed, crashed), the agent stops the others with SIGTERM, and
    they record that as an interruption. It is the silent rank's end that is the cause."""
    errors, started, done = _read_status(status)
    silent = {r for r, f in failures.items() if r not in errors and getattr(f, "exitcode", 1) != 0}
    if silent or started - set(errors) - done:
        for e in errors.values():
            if e.get("message") == "interrupted":
                e["consequence"] = True
    return errors, started, done


def _explain(status: Path, failures: Mapping[int, Any]) -> DistributedError:
    """One error naming the rank that failed first (see the module docstring)."""
    errors, started, done = _read_failure(status, failures)
    causes = sorted(
        ((r, e) for r, e in errors.items() if not e.get("consequence")),
        key=lambda x: (x[1].get("time", 0), x[0]),
    )
    if causes:
        first = causes[0][1]
        same = sorted(r for r, e in causes if e.get("message") == first.get("message"))
        return DistributedError(
            f"{_ranks(same)} failed: {first.get('message')}", exit_code=int(first.get("exit_code", 1) or 1)
        )
    # A rank that ended without a record: killed (SIGKILL, the OOM killer) or crashed hard.
    silent = sorted(
        (rank, f) for rank, f in failures.items() if rank not in errors and getattr(f, "exitcode", 1) != 0
    )
    if not silent:
        silent = [(rank, None) for rank in sorted(started - set(errors) - done)]
    consequences = sorted(errors.items(), key=lambda x: (x[1].get("time", 0), x[0]))
    if silent:
        rank, f = silent[0]
        how = "died or stopped responding without reporting an error"
        if f is None and consequences:  # what the others saw: the connection closed, or a timeout
            c_rank, c = consequences[0]
            how += f" (rank {c_rank}: {c.get('message')})"
        if f is not None:
            code = getattr(f, "exitcode", None)
            if isinstance(code, int) and code < 0:
                try:
                    how = f"was killed by signal {signal.Signals(-code).name}"
                except ValueError:
                    how = f"was killed by signal {-code}"
            elif isinstance(code, int):
                how = f"exited with code {code} without reporting an error"
        pid = getattr(f, "pid", None)
        where = f" (pid {pid})" if isinstance(pid, int) and pid > 0 else ""
        return DistributedError(f"rank {rank} failed: it {how}{where}; the other processes were stopped")
    if consequences:
        rank, e = consequences[0]
        return DistributedError(
            f"rank {rank} failed: {e.get('message')} (a process on another node may have failed first)",
            exit_code=int(e.get("exit_code", 1) or 1),
        )
    ranks = sorted(failures) or [0]
    return DistributedError(f"{_ranks(ranks)} failed without reporting an error")


def _ranks(ranks: list[int]) -> str:
    if len(ranks) == 1:
        return f"rank {ranks[0]}"
    shown = ", ".join(map(str, ranks[:4])) + (f", … ({len(ranks)} in all)" if len(ranks) > 4 else "")
    return f"ranks {shown}"


@contextlib.contextmanager
def _quiet_torch_logs() -> Iterator[None]:
    """The elastic agent logs every stage and failure (with tracebacks) on stderr: the error we raise
    says it in one line instead."""
    import importlib

    for module in (  # their loggers exist once they are imported
        "torch.distributed.elastic.agent.server.api",
        "torch.distributed.elastic.multiprocessing.api",
        "torch.distributed.launcher.api",
        "torch.multiprocessing.spawn",
    ):
        importlib.import_module(module)

    saved = {}
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.startswith(
            ("torch.distributed.elastic", "torch.distributed.launcher", "torch.multiprocessing")
        ):
            saved[name] = logger.disabled
            logger.disabled = True
    try:
        yield
    finally:
        for name, disabled in saved.items():
            logging.getLogger(name).disabled = disabled


@contextlib.contextmanager
def _restored_signals() -> Iterator[None]:
    """The agent installs handlers for SIGTERM, SIGINT, SIGHUP and SIGQUIT (to stop its processes)."""
    names = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")
    saved = {}
    for name in names:
        sig = getattr(signal, name, None)
        if sig is not None:
            with contextlib.suppress(ValueError, OSError):
                saved[sig] = signal.getsignal(sig)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, handler)


@contextlib.contextmanager
def _restored_env(*names: str) -> Iterator[None]:
    saved = {n: os.environ.get(n) for n in names}
    try:
        yield
    finally:
        for n, v in saved.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v
