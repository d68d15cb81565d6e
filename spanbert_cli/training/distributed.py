"""Training on several processes: launching them, telling each its rank, the process group, failures.

A training process comes to be in one of three ways:

* ``spanbert pretrain --gpus N`` (or ``--procs N``): this process launches N processes on this node with
  torch.distributed's elastic agent run in-process (`elastic_launch`, as torchtune's ``tune run`` does) and
  waits for them. On one node they meet on a free port of localhost (c10d rendezvous on port 0, like
  ``torchrun --standalone``); with ``--nnodes``, the agents of the nodes meet at ``--master-addr`` /
  ``--master-port`` (static rendezvous, ``--node-rank`` given) or at ``--rdzv-endpoint`` (c10d rendezvous,
  node ranks assigned on arrival).
* an outside launcher (``torchrun``, SLURM's ``srun``) started this process as one rank: `from_environment`
  reads the rank from the environment and nothing is launched (`run_in_process`).
* neither: one process and no process group (the default `DistributedContext` of the training loop).

Every rank runs the same function with a `TorchDistributedContext` (all-reduce, barrier, DDP). GPUs use
NCCL, one process per GPU (``cuda:LOCAL_RANK``); CPU processes use gloo, for debugging and tests.

Failures. Each launched rank records, in a status directory of the launching process, its pid when it
starts and its error (one line, its exit code, and whether it is only the consequence of another rank
going away, like gloo's "Connection closed by peer") when it fails, then exits without a traceback. The
elastic agent notices the first process to end badly within ``MONITOR_INTERVAL_S``, stops the others
(SIGTERM, then SIGKILL after ``SHUTDOWN_TIMEOUT_S``) and reports one failure, not necessarily the first
(`torch.multiprocessing` picks any of the processes that ended in the same interval); `_explain` therefore
reads the status directory to name the rank that failed first: the earliest error that is not a
consequence, else a rank killed by a signal (which cannot record anything), else a consequence. The
launching process raises it as a `DistributedError`, which the command line prints as one line ("error:
rank 1 failed: ..."). A rank that hangs rather than dies is caught by the process group's timeout
(``init_process_group(timeout=...)``, ``--dist-timeout``), which also bounds how long the ranks of other
nodes wait for a node that died. A rank whose error is only a consequence waits ``CONSEQUENCE_LINGER_S``
before exiting, so that the agent sees the cause end first; and a launched process ends itself within a
second when the launching process is gone (killed with SIGKILL, it could not stop them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from spanbert_cli import interrupts
from spanbert_cli.errors import SpanbertError, UsageError
from spanbert_cli.training.loop import DistributedContext

DEFAULT_TIMEOUT_S = 1800.0  # collectives and rendezvous; torch's own default for gloo
DEFAULT_MASTER_PORT = 29500  # torchrun's
MONITOR_INTERVAL_S = 0.2  # how often the elastic agent looks at its processes
SHUTDOWN_TIMEOUT_S = 10  # SIGTERM → SIGKILL grace for the surviving processes of a failed job
CONSEQUENCE_LINGER_S = 5 * MONITOR_INTERVAL_S  # see _entry
DEVICE_KINDS = ("cpu", "cuda")


class DistributedError(SpanbertError):
    """A rank of a multi-process job failed (or the processes could not be started or could not meet)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class CollectiveError(SpanbertError):
    """A collective operation failed: usually because another process went away (or hung) first."""


# --------------------------------------------------------------------------------------------------
# Who am I: the environment of an outside launcher


@dataclasses.dataclass(frozen=True)
class RankInfo:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str | None = None
    master_port: int | None = None
    source: str = "env"  # "env" (torchrun, our own launcher, any launcher setting RANK/WORLD_SIZE) or "slurm"


def from_environment(env: Mapping[str, str] | None = None) -> RankInfo | None:
    """The rank of this process when an outside launcher started it, else None.

    * ``RANK`` and ``WORLD_SIZE`` set (torchrun, torch's elastic agent, accelerate, deepspeed): those, with
      ``LOCAL_RANK``/``LOCAL_WORLD_SIZE`` and ``MASTER_ADDR``/``MASTER_PORT``;
    * else a SLURM job step of more than one task (``srun``; an ``sbatch`` script itself is not a step):
      ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS`` (or ``SLURM_NTASKS``), ``SLURM_LOCALID``; the master is
      ``MASTER_ADDR`` or the first host of the step's node list, the port ``MASTER_PORT`` or one derived
      from the job and step ids (the same in every task, free of any communication).
    """
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE")
        local = _int(env, "LOCAL_RANK", 0)
        return RankInfo(
            rank=rank,
            world_size=world,
            local_rank=local,
            local_world_size=_int(env, "LOCAL_WORLD_SIZE", 0) or max(local + 1, 1),
            master_addr=env.get("MASTER_ADDR"),
            master_port=_int(env, "MASTER_PORT") if env.get("MASTER_PORT") else None,
            source="env",
        )
    if "SLURM_PROCID" not in env or not _is_slurm_step(env):
        return None
    world = (
        _int(env, "SLURM_STEP_NUM_TASKS") if "SLURM_STEP_NUM_TASKS" in env else _int(env, "SLURM_NTASKS", 1)
    )
    if world <= 1:
        return None
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    addr = env.get("MASTER_ADDR") or (slurm_first_host(nodelist) if nodelist else None)
    if env.get("MASTER_PORT"):
        port = _int(env, "MASTER_PORT")
    else:
        job = int(env.get("SLURM_JOB_ID", "0") or 0)
        step = env.get("SLURM_STEP_ID") or env.get("SLURM_STEPID") or "0"
        port = 20000 + (job * 31 + (int(step) if step.isdigit() else 0)) % 30000
    tasks_per_node = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or ""
    m = re.match(r"(\d+)", tasks_per_node)
    local = _int(env, "SLURM_LOCALID", 0)
    return RankInfo(
        rank=_int(env, "SLURM_PROCID"),
        world_size=world,
        local_rank=local,
        local_world_size=int(m.group(1)) if m else local + 1,
        master_addr=addr,
        master_port=port,
        source="slurm",
    )


def _is_slurm_step(env: Mapping[str, str]) -> bool:
    if "SLURM_STEP_NUM_TASKS" in env:  # set by srun for its job step only
        return True
    step = env.get("SLURM_STEP_ID") or env.get("SLURM_STEPID")
    # The batch script and the "extern" step carry special ids (0xfffffffX); srun's steps count from 0.
    return step is not None and step.isdigit() and int(step) < 0xFFFFFFF0


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    value = env.get(name)
    if value is None or value == "":
        if default is None:
            raise UsageError(f"the environment variable {name} is not set")
        return default
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"the environment variable {name} is not an integer: {value!r}") from None


def slurm_first_host(nodelist: str) -> str:
    """The first host of a SLURM node list ("gpu[03-05,09],cpu1" → "gpu03"): ``scontrol show hostnames``
    when scontrol is installed, else parsed here."""
    scontrol = shutil.which("scontrol")
    if scontrol:
        try:
            out = subprocess.run(
                [scontrol, "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30
            )
            hosts = out.stdout.split()
            if out.returncode == 0 and hosts:
                return hosts[0]
        except (OSError, subprocess.SubprocessError):
            pass
    first = re.match(r"([^,\[]*)(?:\[([^\]]*)\])?", nodelist.strip())
    if not first or not (first.group(1) or first.group(2)):
        raise UsageError(f"cannot read the SLURM node list {nodelist!r}; set MASTER_ADDR")
    prefix, ranges = first.group(1), first.group(2)
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the launch itself uses a race-free port 0 rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------------------------
# What to launch: the command-line flags, checked


@dataclasses.dataclass(frozen=True)
class LaunchPlan:
    nprocs: int  # processes on this node
    device: str  # "cpu" (gloo) or "cuda" (NCCL, one GPU per process)
    nnodes: int = 1
    node_rank: int | None = None  # static rendezvous (--master-addr); None with --rdzv-endpoint
    master_addr: str | None = None
    master_port: int | None = None
    rdzv_endpoint: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def world_size(self) -> int:
        return self.nprocs * self.nnodes

    @property
    def backend(self) -> str:
        return backend_for(self.device)


def backend_for(device_kind: str) -> str:
    return "nccl" if device_kind == "cuda" else "gloo"


def plan_launch(
    *,
    gpus: int | None = None,
    procs: int | None = None,
    device: str = "auto",
    nnodes: int = 1,
    node_rank: int | None = None,
    master_addr: str | None = None,
    master_port: int | None = None,
    rdzv_endpoint: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> LaunchPlan | None:
    """The processes to launch for these flags, or None for a single process without a process group.

    Raises one `UsageError` for an impossible combination, e.g. ``--gpus 8`` where torch sees fewer GPUs.
    """
    multi = nnodes != 1 or node_rank is not None or master_addr or master_port or rdzv_endpoint
    if gpus is None and procs is None:
        if multi:
            raise UsageError(
                "--nnodes, --node-rank, --master-addr, --master-port and --rdzv-endpoint need --gpus N "
                "(or --procs N): the processes to start on each node"
            )
        return None
    if gpus is not None and procs is not None and gpus != procs:
        raise UsageError(f"give --gpus or --procs, not both (--gpus {gpus}, --procs {procs})")
    n = gpus if gpus is not None else procs
    flag = "--gpus" if gpus is not None else "--procs"
    if not isinstance(n, int) or n < 1:
        raise UsageError(f"{flag} must be an integer >= 1, got {n!r}")
    if not isinstance(nnodes, int) or nnodes < 1:
        raise UsageError(f"--nnodes must be an integer >= 1, got {nnodes!r}")
    if timeout_s is None or not timeout_s > 0:
        raise UsageError(f"--dist-timeout must be a positive number of seconds, got {timeout_s!r}")

    if gpus is not None:
        if device == "cpu":
            raise UsageError(f"--gpus runs on GPUs; for processes on the CPU use --procs {gpus} --device cpu")
        if device not in ("auto", "cuda"):
            raise UsageError(f"--device must be one of auto, cpu, cuda, got {device!r}")
        kind = "cuda"
    elif device == "auto":
        kind = "cuda" if _cuda_count() > 0 else "cpu"
    elif device in DEVICE_KINDS:
        kind = device
    else:
        raise UsageError(f"--device must be one of auto, cpu, cuda, got {device!r}")
    if kind == "cuda":
        have = _cuda_count()
        if have < n:
            seen = "no CUDA GPU" if have == 0 else f"only {have} CUDA GPU{'s' if have > 1 else ''}"
            raise UsageError(
                f"{flag} {n}: torch sees {seen} on this machine; to run {n} processes on the CPU "
                f"(gloo) use --procs {n} --device cpu"
            )

    if rdzv_endpoint is not None:
        if node_rank is not None or master_addr is not None:
            raise UsageError(
                "--rdzv-endpoint assigns the node ranks itself; drop --node-rank and --master-addr"
            )
        if not re.fullmatch(r"[^\s:]+(:\d+)?|\[[0-9a-fA-F:.]+\](:\d+)?", rdzv_endpoint):
            raise UsageError(f"--rdzv-endpoint must be HOST or HOST:PORT, got {rdzv_endpoint!r}")
    elif nnodes > 1:
        if master_addr is None:
            raise UsageError(
                f"--nnodes {nnodes}: give --master-addr (node 0's address) and --node-rank, or "
                "--rdzv-endpoint HOST:PORT"
            )
        if node_rank is None:
            raise UsageError(f"--nnodes {nnodes} with --master-addr: give --node-rank (0 to {nnodes - 1})")
    if node_rank is not None and not (isinstance(node_rank, int) and 0 <= node_rank < nnodes):
        raise UsageError(f"--node-rank must be in 0..{nnodes - 1} (--nnodes {nnodes}), got {node_rank!r}")
    if master_port is not None and not (isinstance(master_port, int) and 0 < master_port < 65536):
        raise UsageError(f"--master-port must be a TCP port (1-65535), got {master_port!r}")
    return LaunchPlan(
        nprocs=n,
        device=kind,
        nnodes=nnodes,
        node_rank=node_rank if rdzv_endpoint is None else None,
        master_addr=master_addr,
        master_port=master_port,
        rdzv_endpoint=rdzv_endpoint,
        timeout_s=float(timeout_s),
    )


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def device_kind(device: str, gpus: int | None = None) -> str:
    """ "cpu" or "cuda" for a process started by an outside launcher (--device auto: cuda when present)."""
    if gpus is not None or device == "cuda":
        if _cuda_count() == 0:
            raise UsageError("no CUDA GPU is available to this process (torch sees none); use --device cpu")
        return "cuda"
    if device == "auto":
        return "cuda" if _cuda_count() > 0 else "cpu"
    if device == "cpu":
        return "cpu"
    raise UsageError(f"--device must be one of auto, cpu, cuda, got {device!r}")


# --------------------------------------------------------------------------------------------------
# The process group


@dataclasses.dataclass(frozen=True)
class TorchDistributedContext(DistributedContext):
    """One rank of a torch.distributed process group (gloo on CPU, NCCL on GPUs)."""

    backend: str = "gloo"

    @property
    def _device_ids(self) -> list[int] | None:
        return [int(self.device.split(":")[1])] if self.device.startswith("cuda:") else None

    def all_reduce_sum(self, tensor: Any) -> Any:
        import torch.distributed as dist

        # NCCL reduces tensors on this process's GPU, gloo on the CPU.
        t = tensor.to(self.device) if self.backend == "nccl" else tensor.cpu()
        try:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        except Exception as e:
            raise _collective_error("an all-reduce", e) from None
        return t.to(tensor.device)

    def all_reduce_mean_(self, tensors: list[Any]) -> None:
        import torch.distributed as dist
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        if not tensors:
            return
        flat = _flatten_dense_tensors(tensors)
        try:
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        except Exception as e:
            raise _collective_error("an all-reduce", e) from None
        flat /= self.world_size
        for t, mean in zip(tensors, _unflatten_dense_tensors(flat, tensors), strict=True):
            t.copy_(mean)

    def barrier(self) -> None:
        import torch.distributed as dist

        try:
            dist.barrier(device_ids=self._device_ids) if self._device_ids else dist.barrier()
        except Exception as e:
            raise _collective_error("a barrier", e) from None

    def wrap_model(self, model: Any, find_unused_parameters: bool = False) -> Any:
        import torch
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(
            model,
            device_ids=self._device_ids,
            find_unused_parameters=find_unused_parameters,
            gradient_as_bucket_view=True,
        )
        if any(p.dtype in (torch.bfloat16, torch.float16) for p in model.parameters()):
            from spanbert_cli.training.precision import fp32_allreduce_hook

            ddp.register_comm_hook(None, fp32_allreduce_hook)  # bf16 weights: sum the gradients in fp32
        return ddp

    def no_sync(self, model: Any, sync: bool) -> contextlib.AbstractContextManager:
        if sync or not hasattr(model, "no_sync"):
            return contextlib.nullcontext()
        return model.no_sync()  # accumulate locally; the step's last micro-batch all-reduces


def _collective_error(what: str, e: BaseException) -> CollectiveError:
    return CollectiveError(f"{what} with the other processes failed: {_clean(_first_line(e))}")


_COLLECTIVE_TEXT = re.compile(
    r"gloo|nccl|connection (closed|reset|refused)|broken pipe|processgroup|c10d|timed out|timeout|"
    r"socket|peer",
    re.IGNORECASE,
)


def is_consequence(e: BaseException) -> bool:
    """Whether an error only says that another process went away (a collective or the store failed)."""
    if isinstance(e, CollectiveError):
        return True
    try:
        import torch.distributed as dist

        if isinstance(e, getattr(dist, "DistError", ())):
            return True
    except ImportError:  # pragma: no cover
        pass
    return (
        isinstance(e, RuntimeError)
        and not isinstance(e, SpanbertError)
        and bool(_COLLECTIVE_TEXT.search(str(e)))
    )


def init_process_group(
    info: RankInfo, kind: str, timeout_s: float = DEFAULT_TIMEOUT_S
) -> TorchDistributedContext:
    """Join the process group of `info` (env:// rendezvous) on this rank's device; return its context."""
    import torch
    import torch.distributed as dist

    if kind == "cuda":
        count = _cuda_count()
        if count > info.local_rank:
            index = info.local_rank
        elif count == 1:  # the launcher gave each process its own GPU (CUDA_VISIBLE_DEVICES)
            index = 0
        else:
            raise UsageError(
                f"rank {info.rank} (local rank {info.local_rank}) has no GPU: torch sees {count} on this node"
            )
        torch.cuda.set_device(index)
        device = f"cuda:{index}"
    else:
        device = "cpu"
    defaults = {
        "RANK": info.rank,
        "WORLD_SIZE": info.world_size,
        "LOCAL_RANK": info.local_rank,
        "MASTER_ADDR": info.master_addr,
        "MASTER_PORT": info.master_port,
    }
    for name, value in defaults.items():  # srun sets none of these
        if name not in os.environ and value is not None:
            os.environ[name] = str(value)
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise UsageError(f"rank {info.rank}: {name} is not set, so the processes cannot meet; set it")
    backend = backend_for(kind)
    kwargs: dict[str, Any] = {}
    if kind == "cuda":
        kwargs["device_id"] = torch.device(device)
    if not dist.is_initialized():
        try:
            dist.init_process_group(
                backend, timeout=datetime.timedelta(seconds=timeout_s), init_method="env://", **kwargs
            )
        except Exception as e:
            raise DistributedError(
                f"rank {info.rank} could not join the process group at "
                f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} ({backend}): "
                f"{(str(e).strip().splitlines() or [type(e).__name__])[0]}"
            ) from None
    return TorchDistributedContext(
        rank=info.rank,
        world_size=info.world_size,
        local_rank=info.local_rank,
        device=device,
        local_world_size=info.local_world_size,
        backend=backend,
    )


def destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _set_cpu_threads(kind: str, local_world_size: int) -> None:
    """Share the cores between the processes of a node (torchrun sets OMP_NUM_THREADS=1 for the same)."""
    if kind != "cpu" or local_world_size <= 1 or "OMP_NUM_THREADS" in os.environ:
        return
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (not Linux)
        cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // local_world_size))


def run_in_process(info: RankInfo, kind: str, timeout_s: float, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(ctx, *args)`` as the rank an outside launcher (torchrun, srun) made of this process.

    Errors leave as one line naming the rank; the outside launcher ends the other ranks (or the process
    group's timeout does)."""
    _set_cpu_threads(kind, info.local_world_size)
    ctx = init_process_group(info, kind, timeout_s)
    try:
        result = fn(ctx, *args)
    except SpanbertError as e:
        if info.world_size > 1:
            raise DistributedError(f"rank {info.rank}: {e}", exit_code=e.exit_code) from None
        raise
    destroy_process_group()
    return result


# --------------------------------------------------------------------------------------------------
# Launching: elastic agent in this process, one worker per GPU (or CPU process), failures explained


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
                raise _stopped(status) or _explain(status, e.failures) from None
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


def _stopped(status: Path) -> interrupts.Interrupted | None:
    """The interruption that made the first rank fail, when one did (a signal that reached the ranks
    but not this process)."""
    errors, _, _ = _read_status(status)
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


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _lost_contact(e: BaseException) -> str:
    """A collective's error without gloo's source location and advice ("[…/pair.cc:537] Read error …:
    Connection reset by peer. This is typically caused by …")."""
    if isinstance(e, CollectiveError):
        return _first_line(e)
    return f"lost contact with the other processes: {_clean(_first_line(e))}"


def _clean(text: str) -> str:
    text = re.sub(r"\[[^\]\s]*\.(?:cc|cpp|h|hpp):\d+\]\s*", "", text)
    return re.split(r"\.\s+This is typically caused", text)[0].strip()


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


def _explain(status: Path, failures: Mapping[int, Any]) -> DistributedError:
    """One error naming the rank that failed first (see the module docstring)."""
    errors, started, done = _read_status(status)
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
