"""One writer per artifact: real processes contending for real outputs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from spanbert_cli import artifacts
from spanbert_cli.artifacts import locks

SPANBERT = [sys.executable, "-m", "spanbert_cli"]


def spanbert(*args: object, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*SPANBERT, *map(str, args)], capture_output=True, text=True, timeout=300, **kw)


def start(*args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [*SPANBERT, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(condition, what: str, proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended before {what}: {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr
    assert "Traceback" not in stderr and "unexpected" not in stderr
    return lines[0]


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory: pytest.TempPathFactory, small_corpus: list[Path]) -> Path:
    """A corpus large enough that training a vocabulary on it takes a few seconds."""
    d = tmp_path_factory.mktemp("big")
    text = "\n\n".join(p.read_text(encoding="utf-8") for p in small_corpus)
    (d / "big.txt").write_text("\n\n".join([text] * 6), encoding="utf-8")
    return d / "big.txt"


def _holding(target: Path, *, fork_child: bool = False, temp_dir: bool = False) -> subprocess.Popen:
    """A process that takes `target`'s lock (optionally forks a child, or starts writing `target` in a
    temporary directory), says so on stdout, then sleeps until killed."""
    code = textwrap.dedent(
        f"""
        import os, sys, time
        from pathlib import Path
        from spanbert_cli import artifacts
        from spanbert_cli.artifacts import locks
        with locks.exclusive({str(target)!r}):
            if {temp_dir!r}:
                artifacts.make_temp_dir(Path({str(target)!r}))
            if {fork_child!r} and os.fork() == 0:
                time.sleep(60)
                os._exit(0)
            print("locked", flush=True)
            time.sleep(60)
        """
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "locked"
    return p


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path: Path) -> None:
    target = tmp_path / "out"
    holder = _holding(target)
    try:
        with pytest.raises(locks.LockedError) as e, locks.exclusive(target):
            pass
        assert f"PID {holder.pid}" in str(e.value) and "--wait" in str(e.value)
        assert not locks.is_free(target)
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()


@pytest.mark.parametrize("fork_child", [False, True])
def test_the_lock_of_a_killed_process_is_taken_over(tmp_path: Path, fork_child: bool) -> None:
    """SIGKILL ends the holder; its lock is free at once, even while a child it forked (a data-loader
    worker, say) still runs."""
    target = tmp_path / "out"
    holder = _holding(target, fork_child=fork_child)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    try:
        assert locks.is_free(target)
        with locks.exclusive(target):
            assert locks.holds(target)
        assert not locks.lock_path(target).exists()  # released and removed
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(holder.pid, signal.SIGKILL)  # the forked child, if any


def test_tokenize_refuses_or_waits_while_another_process_writes_its_out(
    tmp_path: Path, small_corpus: list[Path]
) -> None:
    out = tmp_path / "tok"
    holder = _holding(out)
    try:
        refused = spanbert("tokenize", small_corpus[0], "--vocab-size", "500", "--workers", "1", "--out", out)
        assert refused.returncode == 1
        line = one_error_line(refused.stderr)
        assert f"PID {holder.pid}" in line and "--wait" in line
        assert not out.exists()

        waiting = start(
            "tokenize",
            small_corpus[0],
            "--vocab-size",
            "500",
            "--workers",
            "1",
            "--out",
            out,
            "--wait",
            "--quiet",
        )
        assert waiting.stderr is not None
        assert "waiting for PID" in waiting.stderr.readline()
        time.sleep(0.5)
        assert waiting.poll() is None and not out.exists()  # still queued
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    _, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, err
    assert artifacts.verify(out) == []


def test_two_tokenize_runs_into_one_out_leave_one_artifact(tmp_path: Path, big_corpus: Path) -> None:
    """Real contention: whichever comes second is refused (or, if the first is already done, finds a
    different artifact there and is refused for that): never two 'wrote' lines for one directory."""
    out = tmp_path / "tok"
    first = start("tokenize", big_corpus, "--vocab-size", "3000", "--workers", "1", "--out", out, "--quiet")
    wait_for(lambda: locks.lock_path(out).exists() or out.exists(), "the first run's lock", first)
    second = spanbert("tokenize", big_corpus, "--vocab-size", "2000", "--workers", "1", "--out", out)
    first.wait(timeout=300)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 1
    one_error_line(second.stderr)
    assert artifacts.verify(out) == []
    assert artifacts.read_manifest(out).params["vocab_size"] == 3000


def test_two_pretrain_runs_into_one_run_directory(tmp_path: Path, speech_shards: Path) -> None:
    out = tmp_path / "run"
    fast = ["--model", "tiny", "--batch-size", "4", "--num-workers", "0", "--log-every", "1", "--quiet"]
    first = start(
        "pretrain", speech_shards, "--out", out, *fast, "--max-steps", "400", "--save-every", "1000"
    )
    try:
        wait_for(lambda: (out / "metrics.jsonl").is_file(), "the first run's metrics", first)
        second = spanbert(
            "pretrain", speech_shards, "--out", out, *fast, "--max-steps", "400", "--save-every", "1000"
        )
        assert second.returncode == 1
        line = one_error_line(second.stderr)
        assert f"PID {first.pid}" in line and "this run" in line
        lines_before = (out / "metrics.jsonl").read_text().count("\n")
        assert lines_before > 0
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    # Every step was logged once: by the one writer.
    steps = [line for line in (out / "metrics.jsonl").read_text().splitlines() if '"split": "train"' in line]
    assert len(steps) == len({s.split('"step": ')[1].split(",")[0] for s in steps})


def test_leftovers_of_a_killed_tokenize_are_removed_by_the_next_writer(
    tmp_path: Path, big_corpus: Path
) -> None:
    ws = tmp_path / "tokenized"
    killed = start(
        "tokenize", big_corpus, "--vocab-size", "3000", "--workers", "1", "--out", ws / "a", "--quiet"
    )
    wait_for(
        lambda: any(p.name.startswith(".tmp-a-") for p in ws.iterdir()) if ws.is_dir() else False,
        "a temporary directory",
        killed,
    )
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    leftover = [p for p in ws.iterdir() if p.name.startswith(".tmp-a-")]
    assert leftover

    # A live writer's temporary directory is never touched by another command writing beside it.
    live = _holding(ws / "b", temp_dir=True)
    try:
        small = big_corpus.parent / "small.txt"
        small.write_text(big_corpus.read_text(encoding="utf-8")[:20000], encoding="utf-8")
        r = spanbert("tokenize", small, "--vocab-size", "500", "--workers", "1", "--out", ws / "c", "--quiet")
        assert r.returncode == 0, r.stderr
        names = {p.name for p in ws.iterdir()}
        assert any(n.startswith(".tmp-b-") for n in names), names  # the live writer's: kept
    finally:
        os.killpg(live.pid, signal.SIGKILL)
        live.wait()
    # Everything of the dead writers (their temporary directories, their lock files) is gone.
    r = spanbert("tokenize", small, "--vocab-size", "600", "--workers", "1", "--out", ws / "d", "--quiet")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in ws.iterdir()) == ["c", "d"]


def test_a_directory_not_marked_as_spanbert_temporary_is_never_swept(tmp_path: Path) -> None:
    (tmp_path / ".tmp-mine-0123abcd").mkdir()
    (tmp_path / ".tmp-mine-0123abcd" / "notes.txt").write_text("mine")
    (tmp_path / ".old-x-89abcdef").mkdir()
    assert artifacts.sweep_temp_dirs(tmp_path) == []
    assert (tmp_path / ".tmp-mine-0123abcd" / "notes.txt").read_text() == "mine"
    assert (tmp_path / ".old-x-89abcdef").is_dir()


def test_a_partial_checkpoint_of_a_killed_run_is_removed_on_resume(
    tmp_path: Path, speech_shards: Path
) -> None:
    out = tmp_path / "run"
    fast = ["--model", "tiny", "--batch-size", "4", "--num-workers", "0", "--quiet", "--save-every", "2"]
    first = start("pretrain", speech_shards, "--out", out, *fast, "--max-steps", "12")
    wait_for(lambda: (out / "checkpoints" / "step-0000002").is_dir(), "the first checkpoint", first)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    # As if it had been killed while saving a checkpoint: a partial one, marked as spanbert's.
    code = (
        "from pathlib import Path; import os, signal; from spanbert_cli import artifacts; "
        f"artifacts.make_temp_dir(Path({str(out / 'checkpoints' / 'step-0000098')!r})); "
        "os.kill(os.getpid(), signal.SIGKILL)"
    )
    subprocess.run([sys.executable, "-c", code], timeout=60)
    assert [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".tmp-step-0000098-")]
    # While a live process holds the run's lock, nobody touches it.
    holder = _holding(out)
    try:
        assert artifacts.sweep_temp_dirs(out / "checkpoints") == []
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    r = spanbert("pretrain", speech_shards, "--out", out, *fast, "--max-steps", "12", "--resume")
    assert r.returncode == 0, r.stderr
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_two_pipelines_into_one_directory(tmp_path: Path, small_corpus: list[Path]) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        f'[recipe]\nname = "r"\ncorpus = ["{small_corpus[0]}"]\n[tokenize]\nvocab_size = 500\nworkers = 1\n'
    )
    out = tmp_path / "D"
    holder = _holding(out)
    try:
        r = spanbert("run", recipe, "--out", out)
        assert r.returncode == 1
        line = one_error_line(r.stderr)
        assert f"PID {holder.pid}" in line and "pipeline directory" in line
        assert not out.exists()
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    r = spanbert("run", recipe, "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
