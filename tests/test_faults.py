"""Every fault is named: a full disk, a read-only output, a damaged or foreign Arrow file, tampered shards.

Each failure is real: disks are small tmpfs mounts (the tests skip where mounting needs a root they do
not have), files are edited and their manifests re-hashed so that only the content gives them away. Each
ends in one `error:` line naming the file and the fix, and leaves nothing at --out.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import assert_one_line_error

from spanbert_cli import artifacts
from spanbert_cli.shards.arrow_io import string_array

pytestmark = pytest.mark.usefixtures("one_thread")

PAGE = os.sysconf("SC_PAGE_SIZE")  # tmpfs allocates whole pages
RUN_ARGS = [
    *("--model", "tiny", "--max-steps", "2", "--batch-size", "8", "--save-every", "2"),
    *("--eval-every", "0", "--log-every", "1", "--num-workers", "0", "--quiet"),
]


# ---- fixtures: real artifacts, small disks ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenized(
    tmp_path_factory: pytest.TempPathFactory, small_corpus: list[Path], tokenizer_json: Path
) -> Path:
    from spanbert_cli.text.tokenize import TokenizeConfig, tokenize

    out = tmp_path_factory.mktemp("faults-tok") / "tok"
    config = TokenizeConfig(tokenizer=str(tokenizer_json), workers=1)
    return tokenize([str(f) for f in small_corpus], config, out=out).artifact.path


@pytest.fixture(scope="module")
def sharded(tokenized: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from spanbert_cli.shards.pack import ShardConfig, shard

    out = tmp_path_factory.mktemp("faults-shards") / "shards"
    return shard([str(tokenized)], ShardConfig(max_seq_len=64), out=out).artifact.path


@pytest.fixture(scope="module")
def run(speech_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-step tiny run with one checkpoint (step 2)."""
    from spanbert_cli.cli import main

    out = tmp_path_factory.mktemp("faults-run") / "run"
    assert main(["pretrain", str(speech_shards), "--out", str(out), *RUN_ARGS]) == 0
    return out


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """`tmpfs(bytes)`: a fresh tmpfs of that size (rounded up to pages); `tmpfs(read_only=True)`: a
    read-only one. Unmounted at teardown."""
    mounted: list[Path] = []

    def mount(size: int = PAGE, *, read_only: bool = False) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        d = tmp_path / f"mnt{len(mounted)}"
        d.mkdir()
        options = "ro" if read_only else f"size={-(-size // PAGE) * PAGE}"
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(d)], capture_output=True, text=True
        )
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
        mounted.append(d)
        return d

    yield mount
    for d in reversed(mounted):
        if subprocess.run(["umount", str(d)], capture_output=True).returncode != 0:
            gc.collect()  # a file left open by a test that failed midway keeps the mount busy
            subprocess.run(["umount", "--lazy", str(d)], capture_output=True)


def pages(*files: Path) -> int:
    """Bytes the files take on a tmpfs."""
    return sum(-(-f.stat().st_size // PAGE) * PAGE for f in files)


# Written beside every output before its files: the lock, and the temporary directory's mark.
OVERHEAD = 2 * PAGE


def assert_nothing_left(out: Path) -> None:
    """No output, no temporary directory, no lock beside it, no file of this process open there (a
    removed file still open keeps its space)."""
    assert not out.exists(), sorted(out.rglob("*"))
    leftovers = [p.name for p in out.parent.iterdir() if out.name in p.name]
    assert leftovers == [], leftovers
    fds = Path("/proc/self/fd")
    if fds.is_dir():
        open_there = [
            t for t in (os.path.realpath(fd) for fd in fds.iterdir()) if t.startswith(str(out.parent))
        ]
        assert open_there == [], open_there


def rehash(artifact: Path, rel: str) -> None:
    """Record a file's new size and sha256 in its artifact's manifest, as a careless tool would."""
    path = artifact / artifacts.MANIFEST
    manifest = json.loads(path.read_text())
    (entry,) = [e for e in manifest["files"] if e["path"] == rel]
    entry["bytes"] = (artifact / rel).stat().st_size
    entry["sha256"] = artifacts.sha256_file(artifact / rel)
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    assert artifacts.verify(artifact) == []


def copy_artifact(source: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(source, tmp_path / source.name))


def assert_no_unexpected(result) -> None:
    assert "unexpected" not in result.err and "Traceback" not in result.err, result.err


# ---- disk full -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["tokenizer.json", "data/part-00000.arrow"])
def test_disk_full_while_tokenizing(cli, tmpfs, tokenized: Path, small_corpus, tokenizer_json, where) -> None:
    if where == "tokenizer.json":  # the first file written (tokenizers says only "os error 28")
        size = OVERHEAD + pages(tokenized / "tokenizer.json") // 2
    else:  # the tokenizer fits, the Arrow data does not (pyarrow names no file)
        tok_files = pages(tokenized / "tokenizer.json", tokenized / "vocab.txt")
        size = OVERHEAD + tok_files + pages(tokenized / where) // 2
    out = tmpfs(size) / "tok"
    r = cli("tokenize", *small_corpus, "--tokenizer", tokenizer_json, "--workers", 1, "--out", out, "-q")
    assert_one_line_error(
        r, "error: no space left on device while writing", str(out.parent), where, "free space"
    )
    assert_no_unexpected(r)
    assert_nothing_left(out)


@pytest.mark.parametrize("where", ["tokenizer.json", "train/part-00000.arrow"])
def test_disk_full_while_sharding(cli, tmpfs, tokenized: Path, sharded: Path, where) -> None:
    if where == "tokenizer.json":  # copied from the input (shutil names the input first)
        size = OVERHEAD + pages(sharded / "tokenizer.json") // 2
    else:
        tok_files = pages(sharded / "tokenizer.json", sharded / "vocab.txt")
        size = OVERHEAD + tok_files + pages(sharded / where) // 2
    out = tmpfs(size) / "shards"
    r = cli("shard", tokenized, "--max-seq-len", 64, "--out", out, "-q")
    assert_one_line_error(r, "error: no space left on device while writing", str(out.parent), where)
    assert str(tokenized) not in r.err  # the input is not what failed
    assert_no_unexpected(r)
    assert_nothing_left(out)


def test_disk_full_while_exporting(cli, tmpfs, run: Path) -> None:
    out = tmpfs(OVERHEAD + pages(run / "hf" / "model.safetensors") // 2) / "export"
    r = cli("export", run, "--out", out, "-q")
    assert_one_line_error(
        r, "error: no space left on device while writing", str(out.parent), "model.safetensors"
    )
    assert_no_unexpected(r)
    assert_nothing_left(out)


def test_disk_full_while_saving_a_checkpoint(cli, tmpfs, run: Path, speech_shards: Path) -> None:
    """The weights fit, the optimizer state does not: torch.save says only "enforce fail at
    inline_container.cc"; the run, which has no checkpoint to resume from, is removed."""
    ckpt = next((run / "checkpoints").iterdir())
    written_first = [ckpt / n for n in ("model.safetensors", "config.json", "tokenizer.json", "vocab.txt")]
    # manifest (twice while it is replaced), metrics.jsonl, lock, mark, and a few pages to spare
    size = 8 * PAGE + pages(*written_first) + pages(ckpt / "training_state.pt") // 2
    out = tmpfs(size) / "run"
    r = cli("pretrain", speech_shards, "--out", out, *RUN_ARGS)
    assert_one_line_error(r, "error: no space left on device while writing", "training_state.pt", "--resume")
    assert str(out / "checkpoints") in r.err
    assert_no_unexpected(r)
    assert_nothing_left(out)


# ---- read-only output ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["tokenize", "shard", "export"])
def test_read_only_output(cli, tmpfs, command, small_corpus, tokenizer_json, tokenized, run) -> None:
    out = tmpfs(read_only=True) / "out"
    args = {
        "tokenize": ["tokenize", *small_corpus, "--tokenizer", tokenizer_json, "--workers", 1],
        "shard": ["shard", tokenized, "--max-seq-len", 64],
        "export": ["export", run],
    }[command]
    r = cli(*args, "--out", out, "-q")
    assert_one_line_error(r, str(out.parent), "read-only file system", "choose a writable --out")
    assert_no_unexpected(r)
    assert not out.exists()


# ---- Arrow files that pass the hash check but are not what was written ---------------------------------------


def _rewrite_column(path: Path, name: str, make: Callable[[pa.Array], pa.Array]) -> None:
    table = pa.ipc.open_stream(pa.py_buffer(path.read_bytes())).read_all()  # not mapped: rewritten below
    index = table.schema.get_field_index(name)
    column = make(table.column(name).combine_chunks())
    table = table.set_column(index, pa.field(name, column.type), column)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


def _as_strings(arr: pa.Array) -> pa.Array:
    return string_array([" ".join(map(str, row)) for row in arr.to_pylist()])


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_tokenized_file_with_a_string_column(cli, tokenized: Path, tmp_path: Path) -> None:
    tok = copy_artifact(tokenized, tmp_path)
    rel = "data/part-00000.arrow"
    _rewrite_column(tok / rel, "input_ids", _as_strings)
    rehash(tok, rel)
    out = tmp_path / "shards"
    r = cli("shard", tok, "--max-seq-len", 64, "--out", out, "-q")
    assert_one_line_error(r, str(tok / rel), "column input_ids is string", "re-create the artifact")
    assert_no_unexpected(r)
    assert_nothing_left(out)


def test_truncated_tokenized_file(cli, tokenized: Path, tmp_path: Path) -> None:
    tok = copy_artifact(tokenized, tmp_path)
    rel = "data/part-00000.arrow"
    _truncate(tok / rel)
    rehash(tok, rel)
    out = tmp_path / "shards"
    r = cli("shard", tok, "--max-seq-len", 64, "--out", out, "-q")
    assert_one_line_error(r, str(tok / rel), "damaged Arrow file", "record batch 0", "re-create the artifact")
    assert_no_unexpected(r)
    assert_nothing_left(out)


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (
            lambda p: _rewrite_column(p, "doc", lambda a: string_array([str(v) for v in a.to_pylist()])),
            "column doc is string, expected int64",
        ),
        (
            lambda p: _rewrite_column(p, "input_ids", lambda a: a.cast(pa.list_(pa.int64()))),
            "column input_ids is list<item: int64>, expected list<item: uint16>",
        ),
        (_truncate, "damaged Arrow file"),
    ],
    ids=["doc-string", "ids-int64", "truncated"],
)
def test_damaged_shard_file_stops_pretraining(
    cli, speech_shards: Path, tmp_path: Path, damage, fragment
) -> None:
    shards = copy_artifact(speech_shards, tmp_path)
    rel = "train/part-00000.arrow"
    damage(shards / rel)
    rehash(shards, rel)
    out = tmp_path / "run"
    r = cli("pretrain", shards, "--out", out, *RUN_ARGS)
    assert_one_line_error(r, str(shards / rel), fragment, "re-create the artifact")
    assert_no_unexpected(r)
    assert_nothing_left(out)


def test_shard_reader_checks_each_file_it_opens(speech_shards: Path, tmp_path: Path) -> None:
    """Read without `validate` (mask-preview, a DataLoader worker): the same one-line error at first use."""
    from spanbert_cli.errors import ArtifactError
    from spanbert_cli.shards.reader import ShardReader

    shards = copy_artifact(speech_shards, tmp_path)
    rel = "valid/part-00000.arrow"
    _rewrite_column(shards / rel, "input_ids", _as_strings)
    rehash(shards, rel)
    reader = ShardReader(shards, "valid")
    with pytest.raises(ArtifactError, match="column input_ids is string") as info:
        reader[0]
    assert str(shards / rel) in str(info.value)
    with pytest.raises(ArtifactError, match="column input_ids is string"):
        next(iter(reader))


# ---- eval mlm re-hashes its shards, as pretraining does ---------------------------------------------------------


def test_eval_mlm_detects_tampered_shards(cli, run: Path, speech_shards: Path, tmp_path: Path) -> None:
    shards = copy_artifact(speech_shards, tmp_path)
    rel = "valid/part-00000.arrow"
    data = bytearray((shards / rel).read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0xFF  # same size: only the hash can tell
    (shards / rel).write_bytes(bytes(data))
    out = tmp_path / "eval"
    r = cli("eval", "mlm", run, shards, "--out", out, "--num-workers", 0, "-q")
    assert_one_line_error(r, str(shards), rel, "sha256 differs", "re-create it")
    assert_no_unexpected(r)
    assert_nothing_left(out)


def test_eval_mlm_checks_the_files_it_reads(cli, run: Path, speech_shards: Path, tmp_path: Path) -> None:
    shards = copy_artifact(speech_shards, tmp_path)
    rel = "valid/part-00000.arrow"
    _truncate(shards / rel)
    rehash(shards, rel)
    out = tmp_path / "eval"
    r = cli("eval", "mlm", run, shards, "--out", out, "--num-workers", 0, "-q")
    assert_one_line_error(r, str(shards / rel), "damaged Arrow file", "re-create the artifact")
    assert_no_unexpected(r)
    assert_nothing_left(out)


# ---- the messages themselves ----------------------------------------------------------------------------------


def test_os_errors_are_described_with_the_file_and_the_fix(tmp_path: Path) -> None:
    import errno

    from spanbert_cli.errors import describe_os_error, io_failure

    f = tmp_path / "x.arrow"
    cases = {
        errno.ENOSPC: f"no space left on device while writing {f}; free space or choose another --out",
        errno.EDQUOT: f"disk quota exceeded while writing {f}; free space or choose another --out",
        errno.EROFS: f"{f}: read-only file system; choose a writable --out",
        errno.EACCES: f"{f}: permission denied; choose a writable --out",
        errno.EMFILE: f"too many open files while writing {f}; raise the limit (ulimit -n) or use fewer --workers",
        errno.ENAMETOOLONG: f"{f}: file name too long; choose a shorter path",
    }
    for code, message in cases.items():
        assert describe_os_error(OSError(code, os.strerror(code)), f) == message
    # The file an OSError names wins; for a copy, that is its destination.
    copy = OSError(errno.ENOSPC, "No space left on device", "/in/tokenizer.json", None, str(f))
    assert str(f) in describe_os_error(copy, None) and "/in/" not in describe_os_error(copy, None)
    # Library messages carrying an errno, and one that names none.
    assert io_failure(Exception("No space left on device (os error 28)"), f).code == errno.ENOSPC
    assert (
        io_failure(OSError(28, "Error writing bytes to file. Detail: [errno 28] No space left"), f).code == 28
    )
    assert (
        io_failure(RuntimeError("open file failed with strerror: Read-only file system"), f).code
        == errno.EROFS
    )
    generic = describe_os_error(OSError(errno.ENOENT, "No such file or directory"), f, "reading")
    assert generic == f"reading {f} failed: no such file or directory"
    assert io_failure(ValueError("not an I/O problem"), f) is None
    # torch's cause-less write failure is a full disk only when the disk is full.
    torch_error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    failure = io_failure(torch_error, f)
    assert failure is not None and failure.code is None and str(f) in str(failure)


def test_main_names_an_os_error_no_stage_caught(cli, tmp_path: Path, small_corpus) -> None:
    """A file where a directory must be made: the OSError from deep inside comes out as one line."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = cli(
        "tokenize",
        small_corpus[0],
        "--vocab-size",
        100,
        "--workers",
        1,
        "--out",
        blocker / "sub" / "tok",
        "-q",
    )
    assert_one_line_error(r, str(blocker))
    assert_no_unexpected(r)
