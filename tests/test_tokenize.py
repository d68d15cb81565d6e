"""The tokenize stage on real corpus files: ids, formats, determinism, caching and every bad input."""

from __future__ import annotations

import gzip
import io
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
import zstandard
from conftest import CORPUS, DATA, assert_one_line_error, read_documents
from tokenizers import Tokenizer

from spanbert_cli import artifacts
from spanbert_cli.text.tokenize import TokenizeConfig, tokenize

MOBY_DICK = CORPUS / "gutenberg" / "melville-moby_dick.txt"  # CRLF line ends


def paragraphs(text: str) -> list[str]:
    """BERT's convention, written out independently: blank lines end documents."""
    docs, buf = [], []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.strip():
            buf.append(line)
        elif buf:
            docs.append("\n".join(buf))
            buf = []
    if buf:
        docs.append("\n".join(buf))
    return docs


def rows(path: Path) -> list[dict]:
    a = artifacts.open_artifact(path, "spanbert/tokenized")
    out = []
    for batch in read_documents(a):
        out.extend(batch.to_pylist())
    return out


def data_bytes(path: Path) -> dict[str, bytes]:
    return {
        p.relative_to(path).as_posix(): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


@pytest.fixture(scope="module")
def moby_tokenized(tmp_path_factory, tokenizer_json: Path) -> Path:
    out = tmp_path_factory.mktemp("tok") / "moby"
    # Moby-Dick has CRLF line ends: a real-world wrinkle for document splitting.
    src = MOBY_DICK
    tokenize([str(src)], TokenizeConfig(tokenizer=str(tokenizer_json), workers=2), out=out)
    return out


def test_ids_equal_the_tokenizer_on_real_documents(moby_tokenized: Path) -> None:
    src = MOBY_DICK
    docs = paragraphs(src.read_text(encoding="utf-8"))
    tok = Tokenizer.from_file(str(moby_tokenized / "tokenizer.json"))
    got = rows(moby_tokenized)
    assert len(got) == len(docs) > 1000
    for i in range(0, len(docs), 7):  # every 7th document keeps this quick but spread over the book
        assert got[i]["input_ids"] == tok.encode(docs[i], add_special_tokens=False).ids
        assert got[i]["source"] == {"file": src.name, "doc": i}
        ends = got[i]["sentence_ends"]
        assert ends[-1] == len(got[i]["input_ids"]) and ends == sorted(set(ends))


def test_sentence_boundaries_fall_between_sentences(moby_tokenized: Path) -> None:
    tok = Tokenizer.from_file(str(moby_tokenized / "tokenizer.json"))
    got = rows(moby_tokenized)
    multi = [r for r in got if len(r["sentence_ends"]) > 2]
    assert len(multi) > 100
    for r in multi[:200]:
        start = 0
        for end in r["sentence_ends"][:-1]:
            last = tok.id_to_token(r["input_ids"][end - 1])
            assert last in {".", "!", "?", '"', "'", ")", "”", "’", "]"}, (
                last,
                tok.decode(r["input_ids"][start:end]),
            )
            start = end


def test_manifest_records_everything(moby_tokenized: Path, tokenizer_json: Path) -> None:
    m = json.loads((moby_tokenized / "manifest.json").read_text())
    assert m["kind"] == "spanbert/tokenized" and m["schema_version"] == 1
    assert len(m["fingerprint"]) == 64
    for key in ("spanbert", "python", "torch", "tokenizers", "pyarrow"):
        assert key in m["tool"]
    assert m["params"]["docs"] == "blank-line"
    roles = {i["role"] for i in m["inputs"]}
    assert roles == {"input", "tokenizer"}
    files = {f["path"]: f for f in m["files"]}
    assert {"tokenizer.json", "vocab.txt", "data/part-00000.arrow"} <= set(files)
    assert files["data/part-00000.arrow"]["rows"] == m["stats"]["documents"]
    for f in m["files"]:
        assert f["bytes"] == (moby_tokenized / f["path"]).stat().st_size
    assert m["stats"]["unk_rate"] < 0.01
    # The artifact's tokenizer loads with transformers too.
    transformers = pytest.importorskip("transformers")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(moby_tokenized / "tokenizer.json"))
    assert fast("Call me Ishmael.")["input_ids"][0] == m["extra"]["tokenizer"]["special_ids"]["cls"]


def test_every_input_format_gives_the_same_ids(
    tmp_path: Path, small_corpus: list[Path], tokenizer_json: Path, cli
) -> None:
    texts = [p.read_text(encoding="utf-8") for p in small_corpus[:3]]
    docs = [d for t in texts for d in paragraphs(t)]
    cctx = zstandard.ZstdCompressor()
    (tmp_path / "txt").mkdir()
    for i, t in enumerate(texts):
        (tmp_path / "txt" / f"{i}.txt").write_text(t)
    (tmp_path / "zst").mkdir()
    for i, t in enumerate(texts):
        (tmp_path / "zst" / f"{i}.txt.zst").write_bytes(cctx.compress(t.encode()))
    jsonl = "".join(json.dumps({"id": k, "body": d}) + "\n" for k, d in enumerate(docs))
    (tmp_path / "docs.jsonl").write_text(jsonl)
    (tmp_path / "docs.jsonl.zst").write_bytes(cctx.compress(jsonl.encode()))

    tok = Tokenizer.from_file(str(tokenizer_json))
    expected = [tok.encode(d, add_special_tokens=False).ids for d in docs]
    variants = {
        "dir": [tmp_path / "txt"],
        "zst": [tmp_path / "zst"],
        "glob": [str(tmp_path / "txt" / "*.txt")],
        "jsonl": [tmp_path / "docs.jsonl", "--text-field", "body"],
        "jsonl.zst": [tmp_path / "docs.jsonl.zst", "--text-field", "body"],
    }
    for name, args in variants.items():
        r = cli(
            "tokenize",
            *args,
            "--tokenizer",
            tokenizer_json,
            "--out",
            tmp_path / f"out-{name}",
            "--workers",
            "1",
            "--quiet",
        )
        assert r.code == 0, (name, r.err)
        assert [x["input_ids"] for x in rows(tmp_path / f"out-{name}")] == expected, name


def test_stdin_and_document_modes(
    tmp_path: Path, small_corpus: list[Path], tokenizer_json: Path, monkeypatch
) -> None:
    text = small_corpus[0].read_text(encoding="utf-8")
    tok = Tokenizer.from_file(str(tokenizer_json))
    stdin = io.BytesIO(text.encode())
    res = tokenize(
        ["-"], TokenizeConfig(tokenizer=str(tokenizer_json), workers=1), out=tmp_path / "stdin", stdin=stdin
    )
    got = rows(res.artifact.path)
    assert [r["input_ids"] for r in got] == [
        tok.encode(d, add_special_tokens=False).ids for d in paragraphs(text)
    ]
    assert got[0]["source"]["file"] == "-"
    assert res.artifact.manifest.inputs[0].path == "-"

    whole = tokenize(
        [str(small_corpus[0])],
        TokenizeConfig(docs="file", tokenizer=str(tokenizer_json), workers=1),
        out=tmp_path / "file",
    )
    got = rows(whole.artifact.path)
    assert len(got) == 1
    assert got[0]["input_ids"] == tok.encode(text.rstrip("\n"), add_special_tokens=False).ids

    lines = tokenize(
        [str(small_corpus[0])],
        TokenizeConfig(docs="line", tokenizer=str(tokenizer_json), workers=1),
        out=tmp_path / "line",
    )
    assert lines.artifact.manifest.stats["documents"] == sum(1 for ln in text.splitlines() if ln.strip())


def test_same_bytes_across_runs_and_worker_counts(tmp_path: Path, small_corpus: list[Path]) -> None:
    paths = [str(p) for p in small_corpus]
    a = tokenize(
        paths, TokenizeConfig(vocab_size=2000, workers=1, max_file_bytes=1 << 16), out=tmp_path / "a"
    )
    b = tokenize(
        paths, TokenizeConfig(vocab_size=2000, workers=2, max_file_bytes=1 << 16), out=tmp_path / "b"
    )
    assert a.artifact.fingerprint == b.artifact.fingerprint
    assert data_bytes(a.artifact.path) == data_bytes(b.artifact.path)
    assert len(a.artifact.files_under("data/")) > 1  # the size bound rolled over to several files
    for f in a.artifact.files_under("data/"):
        assert f.bytes <= 1 << 16
    # Changing a parameter changes the fingerprint.
    c = tokenize(
        paths, TokenizeConfig(vocab_size=2001, workers=2, max_file_bytes=1 << 16), out=tmp_path / "c"
    )
    assert c.artifact.fingerprint != a.artifact.fingerprint


def test_cache_hit_force_and_workspace_default(
    tmp_path: Path, small_corpus: list[Path], tokenizer_json: Path, cli, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["tokenize", small_corpus[0], "--tokenizer", tokenizer_json, "--workers", "1"]
    first = cli(*args, "--json")
    assert first.code == 0, first.err
    info = json.loads(first.out)
    assert info["cached"] is False
    path = Path(info["path"])
    assert path.parent == Path("artifacts/tokenized") and path.name.endswith(info["fingerprint"][:12])
    again = cli(*args, "--json")
    assert again.code == 0 and json.loads(again.out)["cached"] is True
    assert "up to date" in again.err
    # Another corpus into the same --out is refused, then replaced with --force.
    other = cli("tokenize", small_corpus[1], "--tokenizer", tokenizer_json, "--out", path, "--workers", "1")
    assert_one_line_error(other, "--force", code=1)
    assert json.loads((path / "manifest.json").read_text())["fingerprint"] == info["fingerprint"]
    forced = cli(
        "tokenize",
        small_corpus[1],
        "--tokenizer",
        tokenizer_json,
        "--out",
        path,
        "--workers",
        "1",
        "--force",
        "--json",
    )
    assert forced.code == 0 and json.loads(forced.out)["fingerprint"] != info["fingerprint"]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]
    # A leftover temporary directory from a crash does not break the next run.
    (path.parent / ".tmp-crashed-1234").mkdir()
    assert (
        cli("tokenize", small_corpus[2], "--tokenizer", tokenizer_json, "--workers", "1", "--quiet").code == 0
    )


def test_parts_cover_the_corpus(tmp_path: Path, small_corpus: list[Path], tokenizer_json: Path) -> None:
    paths = [str(p) for p in small_corpus]
    seen = []
    for i in (1, 2, 3):
        r = tokenize(
            paths,
            TokenizeConfig(tokenizer=str(tokenizer_json), part=f"{i}/3", workers=1),
            out=tmp_path / f"p{i}",
        )
        seen += [ref.name for ref in r.artifact.manifest.inputs if ref.role == "input"]
    assert sorted(seen) == sorted(p.name for p in small_corpus)


def test_verify_and_lineage(tmp_path: Path, small_corpus: list[Path], tokenizer_json: Path, cli) -> None:
    out = tmp_path / "t"
    assert cli("tokenize", small_corpus[0], "--tokenizer", tokenizer_json, "--out", out, "--quiet").code == 0
    ok = cli("verify", out)
    assert ok.code == 0 and "ok" in ok.err
    lin = cli("lineage", out, "--json")
    node = json.loads(lin.out)
    assert node["kind"] == "spanbert/tokenized" and node["inputs"][0]["kind"] == "file"
    assert "spanbert/tokenized" in cli("lineage", out).err
    # Flip one byte without changing the size: only the full hash finds it.
    part = out / "data" / "part-00000.arrow"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    bad = cli("verify", out)
    assert_one_line_error(bad, "data/part-00000.arrow", "sha256", code=1)


# --------------------------------------------------------------------------------------------------
# bad input: one line, non-zero exit, nothing left behind


def _nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp-")]


def test_bad_encoding_is_refused_with_offset_or_replaced(tmp_path: Path, tokenizer_json: Path, cli) -> None:
    bad = DATA / "bad-encodings" / "inaugural--2005-Bush.txt"  # cp1252, as published
    raw = bad.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        offset = e.start
    out = tmp_path / "bad"
    r = cli("tokenize", bad, "--tokenizer", tokenizer_json, "--out", out)
    assert_one_line_error(r, bad.name, f"byte offset {offset}", "--errors replace", code=1)
    _nothing_written(out)
    ok = cli("tokenize", bad, "--tokenizer", tokenizer_json, "--out", out, "--errors", "replace", "--json")
    assert ok.code == 0, ok.err
    expected = raw.decode("utf-8", errors="replace").count("\ufffd")
    assert json.loads(ok.out)["stats"]["replaced_invalid_utf8"] == expected > 0


def _zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


_NUMBERS = " ".join(str(i * 7919 % 100003) for i in range(20000)).encode()
BAD_INPUTS = {
    "missing": (None, "no such file"),
    "nul": (b"hello world\x00 binary\n", "NUL byte at byte offset 11"),
    "empty": (b"", "no documents"),
    "blank": (b"\n   \n\t\n", "no documents"),
    "corrupt.txt.zst": (b"\x28\xb5\x2f\xfd" + b"garbage" * 20, "zstd"),
    "truncated.txt.zst": (_zst(_NUMBERS)[: len(_zst(_NUMBERS)) // 2], "truncated zstd"),
    "notjson.jsonl": (b'{"text": "fine"}\n{"text": oops}\n', "notjson.jsonl:2: not valid JSON"),
    "nofield.jsonl": (b'{"text": "fine"}\n{"body": "x"}\n', "nofield.jsonl:2: record has no 'text' field"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_one_line_and_no_artifact(name: str, tmp_path: Path, tokenizer_json: Path, cli) -> None:
    content, fragment = BAD_INPUTS[name]
    src = tmp_path / name
    if content is not None:
        src.write_bytes(content)
    out = tmp_path / "out"
    r = cli("tokenize", src, "--tokenizer", tokenizer_json, "--out", out, "--workers", "2")
    assert_one_line_error(r, fragment)
    _nothing_written(out)


def test_bad_tokenizer_and_part(tmp_path: Path, small_corpus: list[Path], tokenizer_json: Path, cli) -> None:
    junk = tmp_path / "tokenizer.json"
    junk.write_text('{"this is": "not a tokenizer"}')
    out = tmp_path / "out"
    r = cli("tokenize", small_corpus[0], "--tokenizer", junk, "--out", out)
    assert_one_line_error(r, str(junk), "unreadable tokenizer", code=1)
    gz = tmp_path / "vocab.gz"
    gz.write_bytes(gzip.compress(b"x"))
    assert_one_line_error(
        cli("tokenize", small_corpus[0], "--tokenizer", tmp_path / "nope.json", "--out", out), "not found"
    )
    assert_one_line_error(cli("tokenize", small_corpus[0], "--part", "4/3", "--out", out), "--part", code=2)
    assert_one_line_error(cli("tokenize", small_corpus[0], "--part", "x", "--out", out), "--part", code=2)
    assert_one_line_error(
        cli("tokenize", *small_corpus[:2], "--part", "3/3", "--tokenizer", tokenizer_json, "--out", out),
        "selects no input file",
        code=2,
    )
    assert_one_line_error(cli("tokenize", small_corpus[0], "--docs", "para", "--out", out), "--docs", code=2)
    _nothing_written(out)


def test_output_path_is_a_file(tmp_path: Path, small_corpus: list[Path], tokenizer_json: Path, cli) -> None:
    target = tmp_path / "taken"
    target.write_text("precious")
    r = cli("tokenize", small_corpus[0], "--tokenizer", tokenizer_json, "--out", target)
    assert_one_line_error(r, "is a file", code=1)
    assert target.read_text() == "precious"


def test_interrupted_run_leaves_nothing(
    tmp_path: Path, small_corpus: list[Path], tokenizer_json: Path, monkeypatch
) -> None:
    from spanbert_cli.text import tokenize as tokenizing

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(tokenizing, "encode_chunk", boom)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        tokenize([str(small_corpus[0])], TokenizeConfig(tokenizer=str(tokenizer_json), workers=1), out=out)
    _nothing_written(out)


def test_arrow_files_open_with_datasets(moby_tokenized: Path) -> None:
    datasets = pytest.importorskip("datasets")
    files = sorted(str(p) for p in (moby_tokenized / "data").glob("*.arrow"))
    ds = datasets.Dataset.from_file(files[0])
    assert ds.features["input_ids"].feature.dtype in ("uint16", "uint32")
    with pa.memory_map(files[0]) as src:
        table = pa.ipc.open_stream(src).read_all()
    assert ds.num_rows == table.num_rows
    assert ds[0]["input_ids"] == table.column("input_ids")[0].as_py()


def test_cli_help_and_version(cli) -> None:
    r = cli("--help")
    assert r.code == 0
    text = r.out
    order = [text.index(c) for c in ("tokenize", "verify", "lineage")]
    assert order == sorted(order)
    v = cli("--version")
    assert v.code == 0 and v.out.startswith("spanbert ")
    bad = cli("tokenize", "--no-such-flag")
    assert bad.code == 2


def test_debug_shows_traceback(tmp_path: Path, cli, monkeypatch) -> None:
    r = cli("--debug", "tokenize", tmp_path / "missing.txt")
    assert r.code == 1 and "Traceback" in r.err
    monkeypatch.setenv("SPANBERT_DEBUG", "1")
    assert "Traceback" in cli("tokenize", tmp_path / "missing.txt").err


def test_copy_of_artifact_still_verifies(moby_tokenized: Path, tmp_path: Path, cli) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(moby_tokenized, copy)
    assert cli("verify", copy).code == 0
