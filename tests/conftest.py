"""Shared fixtures: real corpus files from tests/data and a real WordPiece tokenizer trained on them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"  # the real data the tests read, shipped with them (see its README.md)
CORPUS = DATA / "corpus"
# The 55 inaugural addresses, 1789-2005 (C-Span corpus, public domain): the package's bundled sample.
INAUGURAL = ROOT / "spanbert_cli" / "data" / "sample" / "inaugural"
SQUAD = DATA / "squad"


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module's in-process runs: like each launched process, and because two
    threads on two busy cores only fight the other processes for them (several times slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def small_corpus() -> list[Path]:
    """A few real documents: inaugural addresses (small) and one State of the Union."""
    inaugural = sorted(INAUGURAL.glob("*.txt"))
    return [*inaugural[-6:], CORPUS / "state_union" / "2006-GWBush.txt"]


@pytest.fixture(scope="session")
def tokenizer_json(tmp_path_factory: pytest.TempPathFactory, small_corpus: list[Path]) -> Path:
    """A real WordPiece tokenizer trained by spanbert on the small corpus (vocabulary 3000)."""
    from spanbert_cli.text.wordpiece import train_wordpiece, write_tokenizer_files

    tok = train_wordpiece((p.read_text(encoding="utf-8") for p in small_corpus), 3000, cased=True)
    d = tmp_path_factory.mktemp("tokenizer")
    write_tokenizer_files(tok, d)
    return d / "tokenizer.json"


@pytest.fixture(scope="session")
def speech_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three real speeches, a 2,000-piece vocabulary trained on them, 64-token sequences (320 train)."""
    from spanbert_cli.shards.pack import ShardConfig, shard
    from spanbert_cli.text.tokenize import TokenizeConfig, tokenize

    files = [
        INAUGURAL / "2001-Bush.txt",
        INAUGURAL / "2005-Bush.txt",
        CORPUS / "state_union" / "2006-GWBush.txt",
    ]
    root = tmp_path_factory.mktemp("speech-shards")
    tok = tokenize([str(f) for f in files], TokenizeConfig(vocab_size=2000, workers=1), out=root / "tok")
    result = shard([str(tok.artifact.path)], ShardConfig(max_seq_len=64, valid_docs=3), out=root / "shards")
    return result.artifact.path


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run `spanbert ARGS...` in-process; return exit code, stdout and stderr."""
    from spanbert_cli.cli import main

    def run(*args: str | os.PathLike) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def assert_one_line_error(result: CliResult, *fragments: str, code: int | None = None) -> None:
    """The error contract: non-zero exit, one line on stderr starting with 'error:', no traceback."""
    assert result.code != 0, result.err
    if code is not None:
        assert result.code == code, (result.code, result.err)
    lines = [ln for ln in result.err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error:"), lines[0]
    assert "Traceback" not in result.err
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])


def one_token_span_loss(model: torch.nn.Module, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """`model`'s pretraining loss with an MLM and an SBO target at each of `positions` (flat indices into
    ids; each target its own one-token span, its neighbours the boundaries)."""
    out = model(
        ids,
        None,
        mlm_positions=positions,
        mlm_labels=ids.view(-1)[positions],
        sbo_left=positions - 1,
        sbo_right=positions + 1,
        sbo_rel_pos=torch.zeros(len(positions), dtype=torch.long),
        sbo_labels=ids.view(-1)[positions],
    )
    return out["loss"]


def read_documents(artifact):
    """The record batches of a tokenize artifact, in order (to look at what tokenize wrote)."""
    import pyarrow as pa

    for f in artifact.files_under("data/"):
        with pa.memory_map(str(artifact.file(f.path))) as source:
            yield from pa.ipc.open_stream(source)


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG file's header, after checking its signature and first chunk (IHDR)."""
    import struct

    head = Path(path).read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG file"
    assert head[12:16] == b"IHDR", f"{path}: the first chunk is not IHDR"
    return struct.unpack(">II", head[16:24])
