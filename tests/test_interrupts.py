"""Ctrl-C and SIGTERM are failures: exit 130 / 143, one line saying what stopped and how to go on, no
traceback (workers included), nothing half-written left, no process left running.

The commands run as real processes in their own session, and the signal goes to their whole process
group, as a terminal's Ctrl-C does (a background job of a non-interactive shell ignores SIGINT, so
``cmd &`` would prove nothing). Each test first waits for a sign that the command is at work: a
temporary directory with data in it, a checkpoint, a lock held for a while.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, SQUAD

from spanbert_cli import interrupts
from spanbert_cli.artifacts import locks
from spanbert_cli.cli import _command_name
from spanbert_cli.cli.pretrain import resume_argv
from spanbert_cli.training.checkpoint import latest_checkpoint, list_checkpoints

PRETRAIN = (
    "--model tiny --batch-size 8 --micro-batch-size 4 --lr 2e-3 --warmup-steps 2 --log-every 1 "
    "--eval-every -1 --save-every 2 --keep-last 2 --max-steps 100000 --quiet"
)
CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


# --------------------------------------------------------------------------------------------------
# real processes


def start(*args: object, cwd: Path) -> subprocess.Popen[str]:
    """`spanbert ARGS` in `cwd` (where a default workspace would be), in a session of its own."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("SPANBERT_DEBUG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "spanbert_cli", *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, which the signal then reaches as a whole
    )


def wait_for(proc: subprocess.Popen[str], ready: Callable[[], bool], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"ended before the signal (exit {proc.returncode}): {proc.communicate()[1]}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"not at work after {timeout_s} s: {proc.communicate()[1]}")
        time.sleep(0.02)


def interrupt(proc: subprocess.Popen[str], sig: int, *, again: bool = False) -> str:
    """Signal the process group (twice with `again`: a second Ctrl-C while it cleans up); its stderr."""
    os.killpg(proc.pid, sig)
    if again:
        time.sleep(0.05)
        os.killpg(proc.pid, sig)
    try:
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return err


def assert_interrupted(proc: subprocess.Popen[str], err: str, sig: int, *fragments: str) -> str:
    assert proc.returncode == CODES[sig], (proc.returncode, err)
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith(f"error: interrupted ({signal.Signals(sig).name}) while "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


def assert_nothing_half_written(*roots: Path) -> None:
    left = [p for root in roots if root.exists() for p in root.rglob(".tmp-*")]
    assert not left, left


def live_in_session(sid: int) -> list[str]:
    """The processes of the session `sid` still running (zombies already ended; the reaping by pid 1
    of those orphaned by the session leader is not ours)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, pgrp, session
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(text[: text.rindex(")") + 1])
    return found


def assert_all_gone(proc: subprocess.Popen[str], within_s: float = 10) -> None:
    deadline = time.monotonic() + within_s
    while (left := live_in_session(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, left


def cpu_seconds(pid: int) -> float:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def advised_command(line: str) -> list[str]:
    m = re.search(r"continue with `([^`]+)`", line)
    assert m, line
    return shlex.split(m.group(1))


pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")


# --------------------------------------------------------------------------------------------------
# tokenize: a worker pool, interrupted while encoding


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory: pytest.TempPathFactory, small_corpus: list[Path]) -> Path:
    """The small corpus twelve times over (about 5 MB): encoding it takes a few seconds."""
    text = "\n\n".join(p.read_text(encoding="utf-8") for p in small_corpus)
    path = tmp_path_factory.mktemp("big") / "corpus.txt"
    path.write_text("\n\n".join([text] * 12), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("sig", "again"),
    [(signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["SIGINT", "SIGINT-twice", "SIGTERM"],
)
def test_tokenize(big_corpus: Path, tokenizer_json: Path, tmp_path: Path, sig: int, again: bool) -> None:
    out = tmp_path / "tok"
    proc = start(
        "tokenize",
        big_corpus,
        "--tokenizer",
        tokenizer_json,
        "--workers",
        2,
        "--out",
        out,
        "--quiet",
        cwd=tmp_path,
    )
    wait_for(proc, lambda: any(tmp_path.glob(".tmp-tok-*/data/*")))  # the pool is encoding
    err = interrupt(proc, sig, again=again)
    assert_interrupted(
        proc, err, sig, "spanbert tokenize", "nothing half-written was kept; re-run the command"
    )
    assert not out.exists()
    assert_nothing_half_written(tmp_path)
    assert_all_gone(proc)


# --------------------------------------------------------------------------------------------------
# pretrain: the last checkpoint and the command that continues from it


def test_pretrain_names_the_checkpoint_and_the_advice_resumes(speech_shards: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = start("pretrain", speech_shards, "--out", run, *PRETRAIN.split(), "--num-workers", 1, cwd=tmp_path)
    wait_for(proc, lambda: bool(list_checkpoints(run)))
    err = interrupt(proc, signal.SIGINT)
    last = latest_checkpoint(run)
    assert last is not None
    line = assert_interrupted(
        proc, err, signal.SIGINT, f"pretraining {run}", f"the last checkpoint is {last.path};"
    )
    advice = advised_command(line)
    assert advice[:2] == ["spanbert", "pretrain"] and advice[-1] == "--resume", advice
    assert_nothing_half_written(tmp_path)
    assert_all_gone(proc)

    # What the line says to run continues the run (SIGTERM this time, once it saved a newer checkpoint).
    resumed = start(*advice[1:], cwd=tmp_path)
    wait_for(resumed, lambda: any(c.step > last.step for c in list_checkpoints(run)))
    err = interrupt(resumed, signal.SIGTERM)
    newer = latest_checkpoint(run)
    assert newer is not None and newer.step > last.step
    assert_interrupted(resumed, err, signal.SIGTERM, f"the last checkpoint is {newer.path};", "--resume`")
    steps = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[0] == 1 and steps == sorted(steps)  # continued, not started over
    assert_nothing_half_written(tmp_path)
    assert_all_gone(resumed)


def test_pretrain_before_its_first_checkpoint_keeps_nothing(speech_shards: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = start(
        "pretrain",
        speech_shards,
        "--out",
        run,
        *PRETRAIN.split(),
        "--save-every",
        1000,
        "--num-workers",
        0,
        cwd=tmp_path,
    )
    wait_for(proc, lambda: (run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").stat().st_size > 0)
    err = interrupt(proc, signal.SIGTERM)
    assert_interrupted(proc, err, signal.SIGTERM, "no checkpoint was saved yet, so nothing was kept; re-run")
    assert not run.exists()
    assert_nothing_half_written(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_pretrain_on_two_processes_stops_every_rank(speech_shards: Path, tmp_path: Path, sig: int) -> None:
    run = tmp_path / "run"
    proc = start(
        *("pretrain", speech_shards, "--out", run, *PRETRAIN.split(), "--num-workers", 1),
        *("--procs", 2, "--device", "cpu"),
        cwd=tmp_path,
    )
    wait_for(proc, lambda: bool(list_checkpoints(run)))
    err = interrupt(proc, sig)
    last = latest_checkpoint(run)
    assert last is not None
    line = assert_interrupted(proc, err, sig, f"pretraining {run}", f"the last checkpoint is {last.path};")
    assert advised_command(line)[-5:] == ["--procs", "2", "--device", "cpu", "--resume"]
    assert_nothing_half_written(tmp_path)
    assert_all_gone(proc)  # both ranks and their data-loader workers


# --------------------------------------------------------------------------------------------------
# eval squad: interrupted while fine-tuning


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory, tokenizer_json: Path) -> Path:
    """A tiny Hugging Face-style BERT directory with the session's tokenizer."""
    import torch
    from safetensors.torch import save_file

    from spanbert_cli.model.spanbert import ModelConfig, SpanBert, hf_config_dict, to_hf_state_dict
    from spanbert_cli.text.wordpiece import load_tokenizer, write_tokenizer_files

    tok = load_tokenizer(tokenizer_json)
    d = tmp_path_factory.mktemp("tiny-bert")
    cfg = ModelConfig.from_preset("tiny", tok.get_vocab_size())
    torch.manual_seed(0)
    hf, _ = to_hf_state_dict(SpanBert(cfg))
    save_file({k: v.contiguous() for k, v in hf.items()}, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps(hf_config_dict(cfg)))
    write_tokenizer_files(tok, d)
    return d


def test_eval_squad_while_fine_tuning(tiny_bert: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    proc = start(
        "eval", "squad", tiny_bert, "--train", SQUAD / "train-v2.0-first10.json.gz",
        "--dev", SQUAD / "xquad-en-v1.1.json.gz", "--out", out,
        "--max-steps", 100000, "--max-seq-length", 128, "--doc-stride", 64, "--max-eval-examples", 20,
        "--batch-size", 8, "--quiet", cwd=tmp_path,
    )  # fmt: skip
    wait_for(proc, locks.lock_path(out).exists)  # past loading the data: the model, features, training
    busy = cpu_seconds(proc.pid)
    wait_for(proc, lambda: cpu_seconds(proc.pid) > busy + 1.5)
    err = interrupt(proc, signal.SIGTERM)
    assert_interrupted(proc, err, signal.SIGTERM, "spanbert eval squad", "nothing half-written was kept")
    assert not out.exists()
    assert_nothing_half_written(tmp_path)
    assert_all_gone(proc)


# --------------------------------------------------------------------------------------------------
# spanbert run: the pretraining stage of a recipe


def test_run_names_the_checkpoint_and_says_to_run_the_recipe_again(
    small_corpus: list[Path], tmp_path: Path
) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        f"""[recipe]
name = "interrupted"
corpus = {json.dumps([str(p) for p in small_corpus])}

[tokenize]
vocab_size = 2000

[shard]
max_seq_len = 64
valid_docs = 2

[pretrain]
model = "tiny"
max_steps = 100000
batch_size = 8
warmup_steps = 2
eval_every = -1
save_every = 2
log_every = 1
num_workers = 1
"""
    )
    out = tmp_path / "pipe"
    proc = start("run", recipe, "--out", out, "--quiet", cwd=tmp_path)
    wait_for(proc, lambda: bool(list_checkpoints(out / "pretrain")))
    err = interrupt(proc, signal.SIGINT, again=True)
    last = latest_checkpoint(out / "pretrain")
    assert last is not None
    line = assert_interrupted(proc, err, signal.SIGINT, f"the last checkpoint is {last.path};")
    assert advised_command(line) == ["spanbert", "run", str(recipe), "--out", str(out), "--quiet"]
    assert_nothing_half_written(tmp_path)
    assert_all_gone(proc)
    status = json.loads(
        start("run", recipe, "--out", out, "--dry-run", "--json", cwd=tmp_path).communicate()[0]
    )
    assert [s["state"] for s in status["stages"]] == ["up to date", "up to date", "resume"]


# --------------------------------------------------------------------------------------------------
# the line


def test_message_parts() -> None:
    ckpt = Path("runs/x/checkpoints/step-0000004")
    argv = ("spanbert", "pretrain", "shards", "--out", "runs/x")
    frames = [
        interrupts.Activity("running spanbert pretrain", argv=argv),
        interrupts.Activity(resume=resume_argv),
        interrupts.Activity("pretraining runs/x", kept=lambda: ckpt),
    ]
    assert interrupts.message(interrupts.Interrupted(signal.SIGINT, frames)) == (
        "interrupted (SIGINT) while pretraining runs/x; the last checkpoint is "
        f"{ckpt}; continue with `spanbert pretrain shards --out runs/x --resume`"
    )
    frames[-1] = interrupts.Activity("pretraining runs/x", kept=lambda: None)
    assert interrupts.message(interrupts.Interrupted(signal.SIGTERM, frames)).endswith(
        "no checkpoint was saved yet, so nothing was kept; re-run the command"
    )
    e = interrupts.Interrupted(signal.SIGTERM, frames[:1])
    assert e.exit_code == 143
    assert interrupts.message(e) == (
        "interrupted (SIGTERM) while running spanbert pretrain; nothing half-written was kept; re-run the command"
    )
    # As a launched process records it, and its launcher tells it.
    record = interrupts.summary(interrupts.Interrupted(signal.SIGINT, [frames[0], frames[2]]))
    assert record == {"what": "pretraining runs/x", "resumable": True, "checkpoint": None}
    assert interrupts.frame_from_summary(record).kept() is None


@pytest.mark.parametrize(
    ("args", "advice"),
    [
        ("pretrain s --out r", "pretrain s --out r --resume"),
        ("pretrain s --out r --force", "pretrain s --out r --resume"),  # --force started it over
        ("pretrain s --resume --force", "pretrain s --resume --force"),  # --force resumed a changed run
        ("pretrain s --resume-from old/step-2", "pretrain s --resume-from CKPT"),
        ("pretrain s --resume-from=old/step-2", "pretrain s --resume-from=CKPT"),
    ],
)
def test_resume_argv(args: str, advice: str) -> None:
    assert resume_argv(args.split(), Path("CKPT")) == advice.split()


def test_command_name() -> None:
    assert _command_name(["--debug", "tokenize", "a.txt", "--workers", "2"]) == "tokenize"
    assert _command_name(["eval", "squad", "runs/x"]) == "eval squad"
    assert _command_name([]) == ""
