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
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from typing import Any

from spanbert_cli.errors import SpanbertError, UsageError
from spanbert_cli.training.loop import DistributedContext

DEFAULT_TIMEOUT_S = 1800.0  # collectives and rendezvous; torch's own default for gloo
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


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _clean(text: str) -> str:
    text = re.sub(r"\[[^\]\s]*\.(?:cc|cpp|h|hpp):\d+\]\s*", "", text)
    return re.split(r"\.\s+This is typically caused", text)[0].strip()
