"""Training on several processes (CPU, gloo, 2 processes): the same training as one process accumulating,
every sequence once per epoch, only rank 0 writing, resumption on another world size, failures that end
the job as one line naming the rank, and who launches what."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SQUAD, assert_one_line_error
from safetensors.torch import load_file

from spanbert_cli import artifacts
from spanbert_cli.errors import UsageError
from spanbert_cli.training import data as D
from spanbert_cli.training import distributed, launcher
from spanbert_cli.training.checkpoint import list_checkpoints
from spanbert_cli.training.config import PretrainConfig
from spanbert_cli.training.distributed import DistributedError, RankInfo, from_environment, plan_launch
from spanbert_cli.training.metrics import read_metrics

ROOT = Path(__file__).resolve().parent.parent
STEPS = 42  # one epoch of the 320 train sequences is 40 steps of 8: the run crosses into epoch 1
FAST = (
    "--model tiny --batch-size 8 --micro-batch-size 4 --lr 2e-3 --warmup-steps 2 --log-every 1 "
    "--eval-every 21 --save-every 4 --keep-last 2 --num-workers 0 --quiet"
)


@pytest.fixture(scope="module")
def shards(speech_shards: Path) -> Path:
    """Three real speeches, 64-token sequences (the session's shared shards)."""
    from spanbert_cli import artifacts

    stats = artifacts.read_manifest(speech_shards).stats["splits"]
    assert stats["train"]["sequences"] == 320
    return speech_shards


def args(shards: Path, out: Path, *extra: object, steps: int = STEPS) -> list[str]:
    return [str(a) for a in ["pretrain", shards, "--out", out, *FAST.split(), "--max-steps", steps, *extra]]


@pytest.fixture(scope="module")
def reference(shards: Path, tmp_path_factory: pytest.TempPathFactory, one_thread) -> Path:
    """1 process, micro-batches of 4, accumulation 2."""
    from spanbert_cli.cli import main

    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(args(shards, out)) == 0
    return out


# ---- what each launched process runs in the tests: the real worker, traced ------------------------------


def _traced_worker(ctx, trace: str, out: str, *worker_args):
    """`spanbert pretrain`'s worker, recording (1) the train sequences this rank reads and (2) every file
    this rank writes or removes under the run directory (Python's audit hooks see every open for
    writing, mkdir, rename and removal)."""
    from spanbert_cli.cli.pretrain import _pretrain_worker

    keys: list[list[list[int]]] = []
    writes: list[str] = []
    original = D.KeyedMaskedDataset.__getitems__

    def getitems(self, batch_keys):
        if self.split == "train":
            keys.append([list(map(int, k)) for k in batch_keys])
        return original(self, batch_keys)

    D.KeyedMaskedDataset.__getitems__ = getitems
    root = os.path.realpath(out)

    def hook(event: str, event_args: tuple) -> None:
        if event == "open":
            path, mode, flags = [*event_args, None, None][:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            )
        else:
            path, writing = (
                (event_args[0] if event_args else None),
                event
                in (
                    "os.mkdir",
                    "os.rename",
                    "os.replace",
                    "os.remove",
                    "os.rmdir",
                    "shutil.rmtree",
                ),
            )
        if writing and isinstance(path, (str, bytes, os.PathLike)):
            p = os.fsdecode(path)
            if os.path.realpath(p).startswith(root):
                writes.append(f"{event} {p}")

    sys.addaudithook(hook)
    result = _pretrain_worker(ctx, *worker_args)
    Path(trace, f"rank-{ctx.rank}.json").write_text(json.dumps({"keys": keys, "writes": writes}))
    return result


def _failing_worker(ctx, fail_rank: int):
    t = torch.ones(4)
    for i in range(1000):
        t = ctx.all_reduce_sum(t) / ctx.world_size
        if ctx.rank == fail_rank and i == 3:
            raise UsageError("--lr must be in (0, 1], got 7.0")
        time.sleep(0.005)
    return "finished"


@pytest.fixture(scope="module")
def two(shards: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """2 processes (gloo) through the launcher, micro-batches of 4: the same global batch of 8."""
    tmp = tmp_path_factory.mktemp("two")
    out, trace = tmp / "run", tmp / "trace"
    trace.mkdir()
    config = PretrainConfig(
        model="tiny",
        batch_size=8,
        micro_batch_size=4,
        lr=2e-3,
        warmup_steps=2,
        max_steps=STEPS,
        log_every=1,
        eval_every=21,
        save_every=4,
        keep_last=2,
        num_workers=0,
        device="cpu",
    )
    plan = plan_launch(procs=2, device="cpu")
    assert plan is not None and plan.world_size == 2 and plan.backend == "gloo"
    options = {"out": out, "workspace": None, "resume": False, "resume_from": None, "force": False}
    results = launcher.launch(plan, _traced_worker, str(trace), str(out), shards, config, options, True)
    assert sorted(results) == [0, 1]
    assert results[0].world_size == 2 and results[0].step == STEPS and not results[0].cached
    return out, trace, results


# ---- the same training, whatever the number of processes -------------------------------------------------


@pytest.mark.slow
def test_two_processes_train_like_one_process_accumulating(reference: Path, two) -> None:
    out, _, results = two
    ref, got = read_metrics(reference / "metrics.jsonl"), read_metrics(out / "metrics.jsonl")
    assert [(x["step"], x["split"]) for x in ref] == [(x["step"], x["split"]) for x in got]
    assert len([x for x in got if x["split"] == "train"]) == STEPS
    for a, b in zip(ref, got, strict=True):
        for key in ("loss", "mlm_loss", "sbo_loss", "mlm_acc"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (a["step"], key, a[key], b[key])
    assert got[-1]["loss"] < got[0]["loss"] - 1.0  # it learns

    wa = load_file(str(reference / "checkpoints" / f"step-{STEPS:07d}" / "model.safetensors"))
    wb = load_file(str(out / "checkpoints" / f"step-{STEPS:07d}" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-5) for k in wa)

    # One run, whatever the number of processes: same fingerprint, global token count.
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (reference, out))
    assert ma["fingerprint"] == mb["fingerprint"] and mb["stats"]["status"] == "complete"
    assert ma["stats"]["tokens"] == mb["stats"]["tokens"] == results[0].tokens
    assert mb["extra"]["runtime"]["world_size"] == 2 and "world_size" not in mb["params"]


@pytest.mark.slow
def test_each_rank_reads_its_slice_every_sequence_once_per_epoch(two) -> None:
    _, trace, _ = two
    per_rank = {r: json.loads((trace / f"rank-{r}.json").read_text())["keys"] for r in (0, 1)}
    assert all(len(per_rank[r]) == STEPS for r in (0, 1))  # one micro-batch per step on each rank
    order = D.GlobalOrder(320, seed=0)
    for step in range(STEPS):
        for r in (0, 1):  # rank r reads micro-batch r of each step of the global order
            expected = order.keys(step * 8 + r * 4, step * 8 + (r + 1) * 4)
            assert [tuple(k) for k in per_rank[r][step]] == expected
    read = [tuple(k) for r in (0, 1) for mb in per_rank[r] for k in mb]
    epoch0 = sorted(i for e, i in read if e == 0)
    assert epoch0 == list(range(320))  # every sequence once: none twice, none skipped
    assert len([1 for e, _ in read if e == 1]) == (STEPS - 40) * 8


@pytest.mark.slow
def test_only_rank_0_writes(two) -> None:
    out, trace, results = two
    writes = {r: json.loads((trace / f"rank-{r}.json").read_text())["writes"] for r in (0, 1)}
    assert writes[1] == [], writes[1][:5]
    joined = "\n".join(writes[0])
    for name in ("manifest.json", "metrics.jsonl", "checkpoint.json", ".tmp-hf-"):
        assert name in joined, name
    assert [c.step for c in list_checkpoints(out)] == [40, STEPS]
    assert results[1].artifact.path == out  # the other ranks read what rank 0 wrote


@pytest.mark.slow
def test_resume_two_processes_onto_one(two, shards: Path, tmp_path: Path, cli, one_thread) -> None:
    out, _, _ = two
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    r = cli(*args(shards, copy, "--resume-from", copy / "checkpoints" / "step-0000040"))
    assert r.code == 0, r.err
    a = load_file(str(out / "checkpoints" / f"step-{STEPS:07d}" / "model.safetensors"))
    b = load_file(str(copy / "checkpoints" / f"step-{STEPS:07d}" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5) for k in a)
    two_procs, resumed = read_metrics(out / "metrics.jsonl"), read_metrics(copy / "metrics.jsonl")
    assert [x["step"] for x in resumed if x["split"] == "train"] == list(range(1, STEPS + 1))
    for x, y in zip(two_procs, resumed, strict=True):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5)
    m = json.loads((copy / "manifest.json").read_text())
    assert m["stats"]["status"] == "complete" and m["extra"]["runtime"]["world_size"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("micro", [4, 2])
def test_bf16_master_weights_on_two_processes(
    micro: int, shards: Path, tmp_path: Path, cli, one_thread
) -> None:
    """bf16 weights, fp32 master weights, two processes train like one process accumulating: with one
    micro-batch per process and step (micro 4), DDP averages the bf16 gradients in fp32 (a comm hook);
    with two (micro 2), they accumulate in fp32 and the master gradients are averaged after the last."""
    got = {}
    for procs in (1, 2):
        out = tmp_path / f"procs{procs}"
        a = args(
            shards, out, "--precision", "bf16-master", "--procs", procs, "--micro-batch-size", micro, steps=6
        )
        r = cli(*a)
        assert r.code == 0, r.err
        got[procs] = read_metrics(out / "metrics.jsonl")
    assert [x["step"] for x in got[1]] == [x["step"] for x in got[2]]
    for a, b in zip(got[1], got[2], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3), a["step"]
        if a["split"] == "train":  # the gradient's scale (Adam's updates would hide a wrong one)
            assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-2), a["step"]
    wa, wb = (
        load_file(str(tmp_path / d / "checkpoints/step-0000006/model.safetensors"))
        for d in ("procs1", "procs2")
    )
    # Adam flips a few near-zero updates between the two roundings; on average the weights agree.
    mean_diff = sum(float((wa[k] - wb[k]).abs().sum()) for k in wa) / sum(v.numel() for v in wa.values())
    assert mean_diff < 1e-4


@pytest.mark.slow
def test_compiled_bf16_master_on_two_processes(shards: Path, tmp_path: Path, cli, one_thread) -> None:
    """torch.compile under DDP with bf16 weights and dropout: inductor failed on the graph DDP splits at
    its buckets, so the loop compiles one graph there. It trains like the eager run (not exactly: the
    compiled dropout draws another random stream)."""
    got = {}
    for extra in ([], ["--compile"]):
        out = tmp_path / ("compiled" if extra else "eager")
        r = cli(
            *args(
                shards, out, "--precision", "bf16-master", "--procs", 2, "--eval-every", -1, *extra, steps=4
            )
        )
        assert r.code == 0, r.err
        got[bool(extra)] = read_metrics(out / "metrics.jsonl")
    assert [x["step"] for x in got[True]] == [1, 2, 3, 4]
    for a, b in zip(got[False], got[True], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=0.02), a["step"]


@pytest.mark.slow
def test_squad_fine_tuning_on_two_processes(two, tmp_path: Path, cli, one_thread) -> None:
    """`spanbert eval squad --procs 2` fine-tunes like one process (153 windows: the last batch of 1
    leaves rank 1 without a micro-batch, it runs a zero-weight one) and rank 0 alone writes."""
    run, _, _ = two
    squad = SQUAD
    common = [
        *("eval", "squad", run, "--train", squad / "train-v2.0-first10.json.gz"),
        *("--dev", squad / "xquad-en-v1.1.json.gz", "--max-train-examples", 29, "--max-eval-examples", 10),
        *("--epochs", 1, "--batch-size", 8, "--micro-batch-size", 4, "--max-seq-length", 128),
        *("--doc-stride", 64, "--eval-batch-size", 16, "--lr", 1e-3, "--quiet", "--json"),
    ]
    one = cli(*common, "--out", tmp_path / "one")
    assert one.code == 0, one.err
    r = cli(*common, "--out", tmp_path / "two", "--procs", 2, "--device", "cpu")
    assert r.code == 0, r.err
    a, b = json.loads(one.out), json.loads(r.out)
    assert a["fingerprint"] == b["fingerprint"]
    ta, tb = a["stats"]["train"], b["stats"]["train"]
    assert ta["features"]["windows"] == 153 and ta["steps"] == tb["steps"] == 20
    for key in ("first_loss", "loss"):
        assert tb[key] == pytest.approx(ta[key], rel=1e-5)
    preds = [json.loads((tmp_path / d / "predictions.json").read_text()) for d in ("one", "two")]
    assert preds[0] == preds[1]
    assert artifacts.read_manifest(tmp_path / "two").extra["runtime"]["world_size"] == 2


# ---- failures: one line naming the rank, nothing left running --------------------------------------------


@pytest.mark.slow
def test_a_failing_rank_ends_the_job_with_its_message() -> None:
    plan = plan_launch(procs=2, device="cpu")
    t0 = time.monotonic()
    with pytest.raises(DistributedError) as info:
        launcher.launch(plan, _failing_worker, 1)
    assert str(info.value) == "rank 1 failed: --lr must be in (0, 1], got 7.0"
    assert info.value.exit_code == 2  # the rank's own exit code (a usage error)
    assert time.monotonic() - t0 < 60


@pytest.mark.slow
def test_errors_of_every_rank_leave_the_command_as_one_line(tmp_path: Path, shards: Path, cli) -> None:
    r = cli(*args(tmp_path / "absent", tmp_path / "out"), "--procs", 2, "--device", "cpu")
    # Both ranks fail alike ("ranks 0, 1 failed: …"), unless the agent stopped one before it got there.
    assert_one_line_error(r, "failed:", "no such artifact")
    assert r.err.startswith(("error: ranks 0, 1 failed:", "error: rank 0 failed:", "error: rank 1 failed:"))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_killing_a_rank_ends_the_job_within_a_minute(shards: Path, tmp_path: Path) -> None:
    tmp, out = tmp_path / "tmp", tmp_path / "run"
    tmp.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp)}
    command = [
        sys.executable,
        "-m",
        "spanbert_cli",
        *args(shards, out, "--procs", 2, "--device", "cpu", "--save-every", 2, steps=100_000),
    ]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list_checkpoints(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        (status,) = tmp.glob("spanbert-dist-*")  # the launcher's status directory
        pids = {r: json.loads((status / f"rank-{r}.start.json").read_text())["pid"] for r in (0, 1)}
        t0 = time.monotonic()
        os.kill(pids[1], signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert elapsed < 60
    assert proc.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    # Killed by SIGKILL (or, if the agent saw rank 0's lost connection first: died without a word).
    assert lines[0].startswith("error: rank 1 failed: it "), lines[0]
    assert "killed by signal SIGKILL" in lines[0] or "died" in lines[0], lines[0]
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)  # rank 0 was stopped too
    assert not list(tmp.glob("spanbert-dist-*"))  # the status directory is cleaned up
    assert list_checkpoints(out)  # what was saved stays, for --resume


def test_the_first_failure_is_named_not_its_consequences(tmp_path: Path) -> None:
    """Which rank the agent reports is a race; the status records decide."""

    class Failure:
        def __init__(self, exitcode: int, pid: int = 0):
            self.exitcode, self.pid = exitcode, pid

    def record(rank: int, kind: str, **body: object) -> None:
        (tmp_path / f"rank-{rank}.{kind}.json").write_text(json.dumps(body))

    for r in (0, 1, 2):
        record(r, "start", pid=100 + r)
    lost = "an all-reduce with the other processes failed: Connection closed by peer"
    record(0, "error", message=lost, time=2.0, exit_code=1, consequence=True)
    record(1, "error", message=lost, time=2.1, exit_code=1, consequence=True)
    # Rank 2 was killed (no record), the agent happened to report rank 0.
    e = launcher._explain(tmp_path, {0: Failure(1)})
    assert str(e) == (
        f"rank 2 failed: it died or stopped responding without reporting an error (rank 0: {lost}); "
        "the other processes were stopped"
    )
    e = launcher._explain(tmp_path, {2: Failure(-9, pid=102)})
    assert (
        str(e) == "rank 2 failed: it was killed by signal SIGKILL (pid 102); the other processes were stopped"
    )
    # Rank 2 had failed with its own error before rank 0 lost contact.
    record(2, "error", message="out of memory: ...", time=1.0, exit_code=1, consequence=False)
    e = launcher._explain(tmp_path, {0: Failure(1)})
    assert str(e) == "rank 2 failed: out of memory: ..."
    # Only consequences (a process on another node failed).
    (tmp_path / "rank-2.error.json").unlink()
    (tmp_path / "rank-2.start.json").unlink()
    e = launcher._explain(tmp_path, {0: Failure(1)})
    assert str(e).startswith(f"rank 0 failed: {lost} (a process on another node")


# ---- who launches: flags, outside launchers --------------------------------------------------------------


def test_gpus_without_gpus_names_procs(shards: Path, tmp_path: Path, cli) -> None:
    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has 2 GPUs")
    r = cli(*args(shards, tmp_path / "out"), "--gpus", 2)
    assert_one_line_error(r, "--gpus 2", "--procs 2 --device cpu", code=2)
    assert not (tmp_path / "out").exists()


def test_the_global_batch_must_split_over_the_processes(shards: Path, tmp_path: Path, cli) -> None:
    r = cli(*args(shards, tmp_path / "out", "--batch-size", 12), "--procs", 2, "--device", "cpu")
    assert_one_line_error(r, "--batch-size 12", "2 processes", "--micro-batch-size 4", code=2)
    r = cli(*args(shards, tmp_path / "out"), "--micro-batch-size", 8, "--procs", 2, "--device", "cpu")
    assert_one_line_error(r, "--batch-size 8", "2 processes", code=2)
    assert not (tmp_path / "out").exists()
    # Without --micro-batch-size, each process takes batch / world (no accumulation).
    assert PretrainConfig(batch_size=8, world_size=2).resolved_micro_batch_size == 4
    assert PretrainConfig(batch_size=16, micro_batch_size=4, world_size=2).grad_accumulation == 2
    with pytest.raises(ValueError, match="split evenly"):
        D.StepSampler(D.GlobalOrder(10, 0), 12, 4, 0, 1, rank=0, world_size=2)


def test_launch_flags() -> None:
    assert plan_launch() is None  # one process, no process group
    plan = plan_launch(procs=4, device="cpu", nnodes=2, node_rank=1, master_addr="10.0.0.1")
    assert (plan.world_size, plan.backend, plan.node_rank, plan.master_port) == (8, "gloo", 1, None)
    plan = plan_launch(procs=2, device="cpu", nnodes=3, rdzv_endpoint="head:29400")
    assert plan.world_size == 6 and plan.node_rank is None
    problems = [
        (dict(nnodes=2), "need --gpus N"),
        (dict(procs=2, device="cpu", nnodes=2), "--master-addr"),
        (dict(procs=2, device="cpu", nnodes=2, master_addr="h"), "--node-rank"),
        (dict(procs=2, device="cpu", nnodes=2, master_addr="h", node_rank=2), "--node-rank must be in 0..1"),
        (dict(procs=2, device="cpu", rdzv_endpoint="h:1", node_rank=0), "drop --node-rank"),
        (dict(procs=0, device="cpu"), "--procs must be an integer >= 1"),
        (dict(gpus=2, procs=4), "not both"),
        (dict(gpus=1, device="cpu"), "--procs 1 --device cpu"),
        (dict(procs=2, device="cpu", master_addr="h", master_port=70000), "--master-port"),
    ]
    for kwargs, fragment in problems:
        with pytest.raises(UsageError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
            plan_launch(**kwargs)


def test_rank_from_the_environment() -> None:
    assert from_environment({}) is None
    torchrun = {
        "RANK": "3",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "node7",
        "MASTER_PORT": "29500",
    }
    assert from_environment(torchrun) == RankInfo(3, 8, 1, 2, "node7", 29500, "env")

    srun = {
        "SLURM_JOB_ID": "4242",
        "SLURM_STEP_ID": "0",
        "SLURM_PROCID": "5",
        "SLURM_STEP_NUM_TASKS": "8",
        "SLURM_NTASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_STEP_TASKS_PER_NODE": "4(x2)",
        "SLURM_STEP_NODELIST": "gpu[07-08]",
    }
    info = from_environment(srun)
    assert (info.rank, info.world_size, info.local_rank, info.local_world_size, info.source) == (
        5,
        8,
        1,
        4,
        "slurm",
    )
    assert info.master_port == from_environment(srun).master_port  # every task derives the same port
    if shutil.which("scontrol") is None:  # else scontrol answers
        assert info.master_addr == "gpu07"
        assert distributed.slurm_first_host("gpu[03-05,09],cpu1") == "gpu03"
        assert distributed.slurm_first_host("n1,n2") == "n1"
    assert from_environment({**srun, "MASTER_ADDR": "head", "MASTER_PORT": "1234"}).master_addr == "head"
    # The batch script of `sbatch --ntasks 8` is not a rank: only srun's steps are.
    batch = {k: v for k, v in srun.items() if not k.startswith("SLURM_STEP")}
    assert from_environment(batch) is None
    assert from_environment({**batch, "SLURM_STEP_ID": "4294967291"}) is None
    assert from_environment({**srun, "SLURM_STEP_NUM_TASKS": "1"}) is None  # a single task: not distributed
    with pytest.raises(UsageError, match="RANK"):
        from_environment({"RANK": "x", "WORLD_SIZE": "2"})


def test_under_an_outside_launcher_nothing_is_launched_again(
    shards: Path, tmp_path: Path, cli, monkeypatch, one_thread
) -> None:
    """As torchrun's rank 0 of 1: --procs does not start processes, this process trains as the rank."""
    env = {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)

    def no_launch(*a, **k):
        raise AssertionError("launched again")

    monkeypatch.setattr(launcher, "launch", no_launch)
    r = cli(*args(shards, tmp_path / "run", steps=2), "--procs", 2, "--device", "cpu", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["step"] == 2
    assert not torch.distributed.is_initialized()  # the process group is gone again
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert m["extra"]["runtime"]["world_size"] == 1


def test_micro_batch_seeds_do_not_depend_on_the_world_size() -> None:
    """The dropout of global micro-batch (step, j) is seeded the same wherever it runs."""
    one = [D.micro_batch_seed(0, s, j) for s in range(3) for j in range(2)]
    ranks = {r: [D.micro_batch_seed(0, s, j) for s in range(3) for j in range(r, 2, 2)] for r in (0, 1)}
    assert sorted(one) == sorted(ranks[0] + ranks[1])
    assert len(set(one)) == len(one)
    assert np.all(np.array(one) >= 0)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (for a rendezvous this test sets up by hand)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
