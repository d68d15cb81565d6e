"""`spanbert run` on several processes (CPU, gloo): `--procs N` or a recipe's `procs` key runs
pretraining and SQuAD fine-tuning as `spanbert pretrain --procs N` does, with the fingerprints and weights
of one process; a request that cannot be met is refused before anything runs, a failing rank fails its
stage in one line, and an interrupt stops every process."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
import torch
from conftest import INAUGURAL, SQUAD, assert_one_line_error
from safetensors.torch import load_file
from test_interrupts import (
    advised_command,
    assert_all_gone,
    assert_interrupted,
    assert_nothing_half_written,
    interrupt,
    start,
    wait_for,
)

from spanbert_cli.training.checkpoint import latest_checkpoint, list_checkpoints

STEPS = 4
# Two speeches, a tiny model, micro-batches given (their default is a share of the batch per process,
# and the micro-batch is a parameter of the run: see README), both stages forced onto the CPU.
RECIPE = """[recipe]
name = "two-processes"
corpus = {corpus}

[tokenize]
vocab_size = 600
workers = 1

[shard]
max_seq_len = 64
valid_docs = 1

[pretrain]
model = "tiny"
device = "cpu"
max_steps = {steps}
batch_size = 8
micro_batch_size = 4
lr = 2e-3
warmup_steps = 1
eval_every = 0
save_every = {steps}
log_every = 1
num_workers = 0

[eval.squad]
train = "{squad}/train-v2.0-first10.json.gz"
dev = "{squad}/xquad-en-v1.1.json.gz"
device = "cpu"
max_train_examples = 16
max_eval_examples = 8
max_steps = 2
batch_size = 8
micro_batch_size = 4
max_seq_length = 64
doc_stride = 32
max_query_length = 16
eval_batch_size = 16
"""
STAGES = ["tokenize", "shard", "pretrain", "eval-squad"]


def write_recipe(path: Path, steps: int = STEPS) -> Path:
    corpus = [str(INAUGURAL / f"{year}-Bush.txt") for year in (2001, 2005)]
    path.write_text(RECIPE.format(corpus=json.dumps(corpus), steps=steps, squad=SQUAD))
    return path


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_recipe(tmp_path_factory.mktemp("recipe") / "two.toml")


@pytest.fixture(scope="module")
def one(recipe: Path, tmp_path_factory: pytest.TempPathFactory, one_thread) -> Path:
    """The recipe run by one process, without a process group."""
    from spanbert_cli.cli import main

    out = tmp_path_factory.mktemp("one") / "pipe"
    assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 0
    return out


def fingerprints(result: dict) -> dict[str, str]:
    return {s["stage"]: s["fingerprint"] for s in result["stages"]}


def only_upstream(one: Path, to: Path) -> Path:
    """A copy of the finished pipeline with its tokenize and shard stages only."""
    shutil.copytree(one, to, ignore=shutil.ignore_patterns("pretrain", "eval-squad"))
    return to


@pytest.mark.slow
def test_two_processes_give_the_fingerprints_and_weights_of_one(
    one: Path, recipe: Path, tmp_path: Path, cli
) -> None:
    # The number of processes is not a parameter: the finished pipeline is up to date for --procs 2.
    planned = cli("run", recipe, "--out", one, "--procs", 2, "--dry-run", "--json")
    assert planned.code == 0, planned.err
    states = json.loads(planned.out)["stages"]
    assert [s["state"] for s in states] == ["up to date"] * len(STAGES)

    # Run by two processes, asked for by the recipe's own keys this time.
    two = only_upstream(one, tmp_path / "two")
    r = cli("run", recipe, "--out", two, "--set", "pretrain.procs=2", "--set", "eval.squad.procs=2", "--json")
    assert r.code == 0, r.err
    result = json.loads(r.out)
    assert result["ran"] == ["pretrain", "eval-squad"]
    assert fingerprints(result) == fingerprints(json.loads(planned.out))
    for stage in ("pretrain", "eval-squad"):
        m = json.loads((two / stage / "manifest.json").read_text())
        assert m["extra"]["runtime"]["world_size"] == 2, stage
        assert m["extra"]["recipe"]["content"]["pretrain"]["procs"] == 2  # rank 0 recorded the recipe
    ckpt = f"pretrain/checkpoints/step-{STEPS:07d}/model.safetensors"
    wa, wb = load_file(str(one / ckpt)), load_file(str(two / ckpt))
    assert wa.keys() == wb.keys()
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-5, atol=1e-7) for k in wa)
    preds = [json.loads((d / "eval-squad" / "predictions.json").read_text()) for d in (one, two)]
    assert len(preds[0]) == 8 and preds[0] == preds[1]


def test_the_command_line_wins_and_a_request_that_cannot_be_met_stops_before_anything_runs(
    one: Path, recipe: Path, tmp_path: Path, cli
) -> None:
    gpus = ("--set", "pretrain.gpus=2")  # on GPUs, while the recipe puts pretraining on the CPU
    assert_one_line_error(
        cli("run", recipe, "--out", one, *gpus, "--dry-run"), "pretrain.gpus = 2: --gpus runs on GPUs", code=2
    )
    r = cli("run", recipe, "--out", one, *gpus, "--procs", 2, "--dry-run", "--json")
    assert r.code == 0, r.err
    assert {s["state"] for s in json.loads(r.out)["stages"]} == {"up to date"}

    fresh = tmp_path / "fresh"
    r = cli("run", recipe, "--out", fresh, "--procs", 2, "--set", "pretrain.batch_size=12")
    assert_one_line_error(r, "pretrain on 2 processes (--procs 2): --batch-size 12 (global)", code=2)
    r = cli("run", recipe, "--out", fresh, "--set", "eval.squad.procs=0", "--set", "pretrain.procs=true")
    assert_one_line_error(r, "pretrain.procs: expected a number of processes", "eval.squad.procs", code=2)
    assert_one_line_error(
        cli("run", recipe, "--out", fresh, *gpus, "--set", "pretrain.procs=2"), "give gpus or procs", code=2
    )
    assert not fresh.exists()  # tokenize did not run


def test_run_refuses_to_be_one_of_several_ranks(recipe: Path, tmp_path: Path, cli, monkeypatch) -> None:
    """Under torchrun each rank would run the whole pipeline into the same directory."""
    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    r = cli("run", recipe, "--out", tmp_path / "pipe", "--procs", 2)
    assert_one_line_error(r, "spanbert run is rank 1 of 2 processes", "--procs N", code=2)
    assert not (tmp_path / "pipe").exists()


@pytest.mark.slow
def test_a_failing_rank_fails_its_stage_in_one_line(one: Path, recipe: Path, tmp_path: Path, cli) -> None:
    """Shards whose content changed but not their size: planning passes (it checks sizes), the ranks
    hash the shards before training and fail."""
    out = only_upstream(one, tmp_path / "broken")
    shard = sorted((out / "shard").rglob("*.arrow"))[0]
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF
    shard.write_bytes(bytes(data))
    r = cli("run", recipe, "--out", out, "--procs", 2, "--quiet")
    assert_one_line_error(r, "stage pretrain failed: rank", f"{shard.name}: sha256 differs", "re-run")
    assert not (out / "pretrain").exists()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_an_interrupt_stops_every_process_and_the_same_command_resumes(one: Path, tmp_path: Path) -> None:
    long = write_recipe(tmp_path / "long.toml", steps=100_000)
    out = only_upstream(one, tmp_path / "pipe")
    run = out / "pretrain"
    command = ("run", long, "--out", out, "--procs", 2, "--set", "pretrain.save_every=2", "--quiet")
    proc = start(*command, cwd=tmp_path)
    wait_for(proc, lambda: bool(list_checkpoints(run)))
    err = interrupt(proc, signal.SIGINT, again=True)  # a second Ctrl-C while it stops
    last = latest_checkpoint(run)
    assert last is not None
    line = assert_interrupted(proc, err, signal.SIGINT, f"pretraining {run}", f"{last.path};")
    advice = advised_command(line)
    assert advice == ["spanbert", *map(str, command)]
    assert_nothing_half_written(tmp_path)
    assert_all_gone(proc)  # the launching process, both ranks

    resumed = start(*advice[1:], cwd=tmp_path)
    wait_for(resumed, lambda: any(c.step > last.step for c in list_checkpoints(run)))
    err = interrupt(resumed, signal.SIGTERM)
    assert_interrupted(resumed, err, signal.SIGTERM, f"pretraining {run}", "the last checkpoint is")
    steps = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[0] == 1 and steps == sorted(steps)  # continued, not started over
    assert_nothing_half_written(tmp_path)
    assert_all_gone(resumed)
