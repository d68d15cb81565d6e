"""tokenize on every corpus format: Parquet, Arrow IPC, `datasets` directories, gzip/bzip2/xz, the Hub.

Every file here is written from the shipped corpus with the real libraries (pyarrow, datasets, gzip, bz2,
lzma). "The same documents give identical token data" means: the same `input_ids` and `sentence_ends`
for every document, in the same order (and the same `source.doc` where the layout is one file of one
document per record), and a byte-identical tokenizer when one is trained. The `source.file` column names
each format's own file, and the fingerprint differs: it identifies the input files by their bytes.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import INAUGURAL, assert_one_line_error, read_documents
from test_tokenize import data_bytes, paragraphs

from spanbert_cli import artifacts
from spanbert_cli.errors import DataError
from spanbert_cli.text import corpus, hub, tables
from spanbert_cli.text.tokenize import TokenizeConfig, plan_tokenize, tokenize

COMPRESSORS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches the Hub: offline as the machines are, whatever the environment says."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def texts(small_corpus: list[Path]) -> list[str]:
    return [p.read_text(encoding="utf-8") for p in small_corpus[:3]]


@pytest.fixture(scope="module")
def docs(texts: list[str]) -> list[str]:
    return [d for t in texts for d in paragraphs(t)]


def _table(docs: list[str]) -> pa.Table:
    # Other columns around the text, as real dumps have them: only the text column is read.
    return pa.table({"id": list(range(len(docs))), "text": docs, "chars": [len(d) for d in docs]})


def _write_arrow(path: Path, table: pa.Table, stream: bool, batch_rows: int = 25) -> None:
    with pa.OSFile(str(path), "wb") as sink:
        new = pa.ipc.new_stream if stream else pa.ipc.new_file
        with new(sink, table.schema) as w:
            for b in table.to_batches(max_chunksize=batch_rows):
                w.write_batch(b)


@pytest.fixture(scope="module")
def formats(tmp_path_factory: pytest.TempPathFactory, texts: list[str], docs: list[str]) -> dict[str, Path]:
    """The same documents in every format: {variant: path}."""
    import datasets

    datasets.disable_progress_bars()
    root = tmp_path_factory.mktemp("formats")
    jsonl = "".join(json.dumps({"id": k, "text": d}) + "\n" for k, d in enumerate(docs)).encode()
    out: dict[str, Path] = {"jsonl": root / "docs.jsonl"}
    out["jsonl"].write_bytes(jsonl)
    for suffix, compress in COMPRESSORS.items():
        out[f"jsonl{suffix}"] = root / f"docs.jsonl{suffix}"
        out[f"jsonl{suffix}"].write_bytes(compress(jsonl))
        d = root / f"txt{suffix}"
        d.mkdir()
        for i, t in enumerate(texts):
            (d / f"{i}.txt{suffix}").write_bytes(compress(t.encode()))
        out[f"txt{suffix}"] = d
    (root / "txt").mkdir()
    for i, t in enumerate(texts):
        (root / "txt" / f"{i}.txt").write_text(t, encoding="utf-8")
    out["txt"] = root / "txt"
    table = _table(docs)
    out["parquet"] = root / "docs.parquet"
    pq.write_table(table, out["parquet"], row_group_size=20)  # several row groups
    (root / "parquet-dir").mkdir()
    half = len(docs) // 2
    pq.write_table(table.slice(0, half), root / "parquet-dir" / "train-00000-of-00002.parquet")
    pq.write_table(table.slice(half), root / "parquet-dir" / "train-00001-of-00002.parquet")
    out["parquet-dir"] = root / "parquet-dir"
    out["arrow-file"] = root / "docs-file.arrow"
    _write_arrow(out["arrow-file"], table, stream=False)
    out["arrow-stream"] = root / "docs-stream.arrow"
    _write_arrow(out["arrow-stream"], table, stream=True)
    ds = datasets.Dataset.from_dict({"text": docs, "id": list(range(len(docs)))})
    ds.save_to_disk(str(root / "saved"), num_shards=3)
    out["save_to_disk"] = root / "saved"
    return out


def token_data(path: Path) -> tuple[list, list, list]:
    """(input_ids, sentence_ends, source.doc) of a tokenize artifact, row by row."""
    a = artifacts.open_artifact(path, "spanbert/tokenized")
    table = pa.Table.from_batches(list(read_documents(a)))
    return (
        table.column("input_ids").to_pylist(),
        table.column("sentence_ends").to_pylist(),
        [s["doc"] for s in table.column("source").to_pylist()],
    )


def test_every_format_gives_identical_token_data(
    tmp_path: Path, formats: dict[str, Path], docs: list[str], tokenizer_json: Path, cli
) -> None:
    ref = tmp_path / "out-jsonl"
    r = cli("tokenize", formats["jsonl"], "--tokenizer", tokenizer_json, "--out", ref, "--workers", "1", "-q")
    assert r.code == 0, r.err
    ids, ends, ordinals = token_data(ref)
    assert len(ids) == len(docs) > 80 and ordinals == list(range(len(docs)))
    one_file = {"jsonl.gz", "jsonl.bz2", "jsonl.xz", "parquet", "arrow-file", "arrow-stream"}
    fingerprints = set()
    for name, path in formats.items():
        out = tmp_path / f"out-{name}"
        r = cli("tokenize", path, "--tokenizer", tokenizer_json, "--out", out, "--workers", "1", "--json")
        assert r.code == 0, (name, r.err)
        assert "skipped" not in r.err, (name, r.err)  # a datasets directory's JSON files are no corpus
        got = token_data(out)
        assert got[:2] == (ids, ends), name
        if name in one_file:
            assert got[2] == ordinals, name
        m = json.loads(r.out)
        fingerprints.add(m["fingerprint"])
        assert m["stats"]["documents"] == len(docs), name
        sources = {i.name for i in artifacts.open_artifact(out).manifest.inputs if i.role == "input"}
        if name == "save_to_disk":
            assert sources == {f"data-0000{k}-of-00003.arrow" for k in range(3)}
    assert len(fingerprints) == len(formats)  # each is known by its own files' bytes


def test_a_trained_tokenizer_is_the_same_from_text_jsonl_gz_and_parquet(
    tmp_path: Path, formats: dict[str, Path]
) -> None:
    results = {
        name: tokenize([str(formats[name])], TokenizeConfig(vocab_size=800, workers=1), out=tmp_path / name)
        for name in ("txt", "jsonl.gz", "parquet")
    }
    tokenizers = {(r.artifact.path / "tokenizer.json").read_bytes() for r in results.values()}
    assert len(tokenizers) == 1
    data = [token_data(r.artifact.path)[:2] for r in results.values()]
    assert data[0] == data[1] == data[2]


def test_same_bytes_for_any_number_of_workers(tmp_path: Path, docs: list[str], tokenizer_json: Path) -> None:
    many = docs * 6  # enough for several output files under the smallest size bound
    inputs = {"parquet": tmp_path / "many.parquet", "jsonl.gz": tmp_path / "many.jsonl.gz"}
    pq.write_table(_table(many), inputs["parquet"], row_group_size=50)
    inputs["jsonl.gz"].write_bytes(
        gzip.compress("".join(json.dumps({"text": d}) + "\n" for d in many).encode())
    )
    for name, path in inputs.items():
        runs = [
            tokenize(
                [str(path)],
                TokenizeConfig(tokenizer=str(tokenizer_json), workers=w, max_file_bytes=1 << 16),
                out=tmp_path / f"{name}-{w}",
            )
            for w in (1, 2)
        ]
        assert runs[0].artifact.fingerprint == runs[1].artifact.fingerprint, name
        assert data_bytes(runs[0].artifact.path) == data_bytes(runs[1].artifact.path), name
        assert len(runs[0].artifact.files_under("data/")) > 1, name  # the size bound rolled over
        assert runs[0].artifact.manifest.stats["documents"] == len(many)


def test_parts_split_a_parquet_file_by_row_group(
    tmp_path: Path, formats: dict[str, Path], docs: list[str], tokenizer_json: Path
) -> None:
    parquet = formats["parquet"]
    groups = pq.ParquetFile(parquet).num_row_groups
    assert groups >= 4
    small = INAUGURAL / "1789-Washington.txt"  # a text file beside it takes a share too
    rows, fingerprints, taken = [], set(), []
    for i in (1, 2, 3):
        r = tokenize(
            [str(parquet), str(small)],
            TokenizeConfig(tokenizer=str(tokenizer_json), part=f"{i}/3", workers=1),
            out=tmp_path / f"p{i}",
        )
        fingerprints.add(r.artifact.fingerprint)
        m = r.artifact.manifest
        a = artifacts.open_artifact(r.artifact.path)
        for batch in read_documents(a):
            rows += [s for s in batch.column("source").to_pylist() if s["file"] == parquet.name]
        (shared,) = m.params["row_groups"]  # each part takes some of the file's row groups
        assert m.inputs[shared["input"]].name == parquet.name and shared["row_groups"]
        taken += shared["row_groups"]
    assert len(fingerprints) == 3
    assert sorted(taken) == list(range(groups))  # each row group in exactly one part
    assert sorted(s["doc"] for s in rows) == list(range(len(docs)))  # each document exactly once
    # Without --part nothing about row groups enters the parameters.
    whole = plan_tokenize(
        [str(parquet)], TokenizeConfig(tokenizer=str(tokenizer_json), workers=1), out=tmp_path / "w"
    )
    assert "row_groups" not in whole.params


def test_memory_is_bounded_by_the_row_group(tmp_path: Path, docs: list[str], monkeypatch) -> None:
    """The first document comes out having read only the footer and the first row group's text column."""
    path = tmp_path / "big.parquet"
    table = _table(docs * 8)
    pq.write_table(table, path, row_group_size=len(docs))
    meta = pq.read_metadata(path)
    f = tables.inspect([corpus.InputFile(path, path.name, path.stat().st_size)], "text")[0]
    read_at: list[int] = []
    original = tables.VerifiedFile.read

    def recording(self, n: int = -1) -> bytes:
        read_at.append(self.tell())
        return original(self, n)

    monkeypatch.setattr(tables.VerifiedFile, "read", recording)  # records where, then reads
    it = corpus.iter_documents(f, docs="blank-line")
    assert next(it).text == docs[0]
    rg0 = meta.row_group(0)
    first_group_end = max(
        rg0.column(c).data_page_offset + rg0.column(c).total_compressed_size for c in range(meta.num_columns)
    )
    footer_start = path.stat().st_size - (64 << 10)
    assert read_at and all(p < first_group_end or p >= footer_start for p in read_at), read_at
    assert first_group_end < footer_start  # the file is larger than what was read
    assert sum(1 for _ in it) == len(docs) * 8 - 1


def test_a_table_changed_while_read_fails(tmp_path: Path, docs: list[str]) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(_table(docs), path, row_group_size=20, compression="none")
    f = corpus.InputFile(path, path.name, path.stat().st_size)
    ref = artifacts.InputRef.from_file(path, name=path.name)
    f = tables.inspect([corpus.InputFile(path, path.name, f.size, sha256=ref.sha256)], "text")[0]
    it = corpus.iter_documents(f, docs="blank-line")
    next(it)
    # The user edits a later row group (same size) after the run was planned.
    data = bytearray(path.read_bytes())
    at = data.index(docs[-1].encode()[:40])
    data[at] = ord("X") if data[at] != ord("X") else ord("Y")
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"t\.parquet: the file changed while spanbert read it"):
        list(it)
    # Unchanged, the same reading passes its check.
    pq.write_table(_table(docs), path, row_group_size=20, compression="none")
    ref = artifacts.InputRef.from_file(path, name=path.name)
    f = tables.inspect([corpus.InputFile(path, path.name, path.stat().st_size, sha256=ref.sha256)], "text")[0]
    assert [d.text for d in corpus.iter_documents(f, docs="blank-line")] == docs


def test_datasets_dict_directory_reads_the_split(
    tmp_path: Path, docs: list[str], tokenizer_json: Path, cli
) -> None:
    import datasets

    datasets.disable_progress_bars()
    train = datasets.Dataset.from_dict({"text": docs[:40]})
    test = datasets.Dataset.from_dict({"text": docs[40:50]})
    d = tmp_path / "dict"
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(d))
    # A cache file beside the data (what .map leaves behind) is not part of the dataset.
    (d / "train" / "cache-0123456789abcdef.arrow").write_bytes(
        (d / "test" / "data-00000-of-00001.arrow").read_bytes()
    )
    for split, n in (("train", 40), ("test", 10)):
        out = tmp_path / split
        args = ["--tokenizer", tokenizer_json, "--out", out, "--workers", "1", "--json"]
        r = cli("tokenize", d, *([] if split == "train" else ["--split", split]), *args)
        assert r.code == 0, r.err
        assert json.loads(r.out)["stats"]["documents"] == n
        assert "skipped" not in r.err
    bad = cli("tokenize", d, "--split", "validation", "--tokenizer", tokenizer_json, "--out", tmp_path / "v")
    assert_one_line_error(bad, "no split 'validation'", "train, test", "--split", code=2)


def test_the_sample_corpus_licence_is_skipped_without_a_note(tmp_path: Path, cli) -> None:
    sample = INAUGURAL.parent
    assert (sample / "LICENSE.md").is_file()
    with corpus.resolve_inputs([str(sample)]) as inset:
        assert inset.skipped == [] and "LICENSE.md" not in {f.name for f in inset.files}
    # Another file that is not text is still said to be skipped.
    d = tmp_path / "c"
    d.mkdir()
    (d / "a.txt").write_text("Some text.\n")
    (d / "README").write_text("about\n")
    (d / "LICENSE-CC-BY-4.0.md").write_text("licence\n")
    (d / "table.csv").write_text("a,b\n")
    with corpus.resolve_inputs([str(d)]) as inset:
        assert [f.name for f in inset.files] == ["a.txt"]
        assert [Path(s).name for s in inset.skipped] == ["table.csv"]
    r = cli("tokenize", d, "--vocab-size", "100", "--out", tmp_path / "o", "--workers", "1")
    assert r.code == 0 and "skipped 1 files that are not corpus text" in r.err and "table.csv" in r.err
    (d / "table.csv").unlink()
    r = cli("tokenize", d, "--vocab-size", "100", "--out", tmp_path / "o2", "--workers", "1")
    assert r.code == 0 and "skipped" not in r.err, r.err
    # spanbert's own Arrow output inside a corpus directory is no corpus table (skipped, as always).
    shutil.copytree(tmp_path / "o", d / "old-run")
    with corpus.resolve_inputs([str(d)]) as inset:
        assert "old-run/data/part-00000.arrow" not in {f.name for f in inset.files}
        assert str(d / "old-run" / "data" / "part-00000.arrow") in inset.skipped


# --------------------------------------------------------------------------------------------------
# bad input: one line naming the file and the row group, record batch or line


def _parquet(path: Path, table: pa.Table, **kw) -> Path:
    pq.write_table(table, path, **kw)
    return path


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _corrupted(data: bytes) -> bytes:
    b = bytearray(data)
    mid = len(b) // 2
    b[mid : mid + 64] = bytes(64)
    return bytes(b)


def _bad_inputs(root: Path, texts: list[str], docs: list[str]) -> dict[str, tuple[Path, list[str]]]:
    table = _table(docs)
    cases = {
        "no-column": (
            _parquet(root / "nocol.parquet", table.drop(["text"])),
            ["nocol.parquet", "no column 'text'", "id, chars", "--text-field"],
        ),
        "not-string": (
            _parquet(root / "num.parquet", pa.table({"text": [1, 2]})),
            ["num.parquet", "column 'text' is int64, not a string"],
        ),
        "null": (
            _parquet(root / "null.parquet", pa.table({"text": ["fine", "also", None]}), row_group_size=2),
            ["null.parquet: row group 1, row 2", "null"],
        ),
        "bad-utf8": (
            _parquet(
                root / "cp.parquet",
                pa.table(
                    {"text": pa.array([b"ok", "caf\xe9".encode("cp1252")], pa.binary()).view(pa.string())}
                ),
            ),
            ["cp.parquet: row group 0, row 1", "invalid UTF-8", "--errors replace"],
        ),
        "compressed-table": (root / "t.parquet.gz", ["t.parquet.gz", "decompress it first"]),
        "arrow-no-column": (root / "nocol.arrow", ["nocol.arrow", "no column 'text'"]),
    }
    _write_arrow(root / "nocol.arrow", table.drop(["text"]), stream=True)
    good = root / "good.parquet"
    pq.write_table(table, good, row_group_size=40, compression="zstd")
    (root / "t.parquet.gz").write_bytes(gzip.compress(good.read_bytes()))
    (root / "trunc.parquet").write_bytes(_truncated(good.read_bytes()))
    cases["truncated-parquet"] = (
        root / "trunc.parquet",
        ["trunc.parquet", "not a readable Parquet file", "truncated"],
    )
    stream = root / "s.arrow"
    _write_arrow(stream, table, stream=True, batch_rows=20)
    (root / "trunc.arrow").write_bytes(_truncated(stream.read_bytes()))
    cases["truncated-arrow"] = (
        root / "trunc.arrow",
        ["trunc.arrow: record batch ", "unreadable Arrow IPC data"],
    )
    text = "\n\n".join(texts).encode()
    for suffix, compress in COMPRESSORS.items():
        codec = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz"}[suffix]
        (root / f"trunc.txt{suffix}").write_bytes(_truncated(compress(text)))
        cases[f"truncated{suffix}"] = (
            root / f"trunc.txt{suffix}",
            [f"trunc.txt{suffix}: truncated {codec} data"],
        )
        (root / f"corrupt.txt{suffix}").write_bytes(_corrupted(compress(text)))
        cases[f"corrupt{suffix}"] = (
            root / f"corrupt.txt{suffix}",
            [f"corrupt.txt{suffix}: corrupt {codec} data, found "],
        )
    return cases


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory, texts: list[str], docs: list[str]):
    return _bad_inputs(tmp_path_factory.mktemp("bad"), texts, docs)


BAD = [
    "no-column",
    "not-string",
    "null",
    "bad-utf8",
    "compressed-table",
    "arrow-no-column",
    "truncated-parquet",
    "truncated-arrow",
    *(f"{k}{s}" for s in COMPRESSORS for k in ("truncated", "corrupt")),
]


@pytest.mark.parametrize("name", BAD)
def test_bad_table_or_stream_one_line_and_no_artifact(
    name: str, bad_inputs, tmp_path: Path, tokenizer_json: Path, cli
) -> None:
    path, fragments = bad_inputs[name]
    out = tmp_path / "out"
    r = cli("tokenize", path, "--tokenizer", tokenizer_json, "--out", out, "--workers", "2")
    assert_one_line_error(r, *fragments, code=1)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_a_corrupt_parquet_row_group_is_named(
    tmp_path: Path, docs: list[str], tokenizer_json: Path, cli
) -> None:
    path = tmp_path / "rg.parquet"
    pq.write_table(_table(docs), path, row_group_size=40, write_page_checksum=True)
    meta = pq.read_metadata(path)
    col = meta.schema.to_arrow_schema().get_field_index("text")
    chunk = meta.row_group(1).column(col)
    data = bytearray(path.read_bytes())
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    at = start + chunk.total_compressed_size // 2
    data[at : at + 8] = bytes(b ^ 0xFF for b in data[at : at + 8])
    path.write_bytes(bytes(data))
    r = cli("tokenize", path, "--tokenizer", tokenizer_json, "--out", tmp_path / "out", "--workers", "1")
    assert_one_line_error(r, "rg.parquet: row group 1: unreadable Parquet data", code=1)


def test_invalid_utf8_in_a_table_is_replaced_and_counted(tmp_path: Path, tokenizer_json: Path, cli) -> None:
    raw = ["Plain words.", "caf\xe9 au lait, na\xefve".encode("cp1252"), b"fine"]
    values = [v if isinstance(v, bytes) else v.encode() for v in raw]
    path = _parquet(
        tmp_path / "cp.parquet", pa.table({"text": pa.array(values, pa.binary()).view(pa.string())})
    )
    r = cli(
        "tokenize",
        path,
        "--tokenizer",
        tokenizer_json,
        "--out",
        tmp_path / "o",
        "--errors",
        "replace",
        "--json",
    )
    assert r.code == 0, r.err
    s = json.loads(r.out)["stats"]
    assert s["replaced_invalid_utf8"] == 2 and s["documents"] == 3


# --------------------------------------------------------------------------------------------------
# the Hub


def test_hub_offline_says_how_to_pass_files(tmp_path: Path, cli) -> None:
    r = cli("tokenize", "--hf-dataset", "Salesforce/wikitext:wikitext-103-raw-v1", "--out", tmp_path / "o")
    assert_one_line_error(r, "Hub cannot be reached", "HF_HUB_OFFLINE", "hf download", ".parquet", code=1)
    assert not (tmp_path / "o").exists()
    both = cli("tokenize", INAUGURAL, "--hf-dataset", "x/y", "--out", tmp_path / "o")
    assert_one_line_error(both, "either corpus files or --hf-dataset", code=2)
    assert_one_line_error(
        cli("tokenize", "--hf-dataset", "a b", "--out", tmp_path / "o"), "NAME[:CONFIG]", code=2
    )
    assert_one_line_error(cli("tokenize", "--out", tmp_path / "o"), "no corpus given", "--hf-dataset", code=2)


def test_hub_rows_become_documents_and_parts_cover_them(docs: list[str]) -> None:
    """What a stream from the Hub goes through, on a real `datasets.IterableDataset` built locally."""
    import datasets

    ds = datasets.Dataset.from_dict({"text": docs}).to_iterable_dataset(num_shards=4)
    got = list(hub.iter_documents(hub.share(ds, None), "hf:local/train", "text"))
    assert [d.text for d in got] == docs and [d.ordinal for d in got] == list(range(len(docs)))
    parts = [[d.text for d in hub.iter_documents(hub.share(ds, (i, 2)), "x", "text")] for i in (1, 2)]
    assert sorted(parts[0] + parts[1]) == sorted(docs) and parts[0] and parts[1]
    assert parts[0] == [d.text for d in hub.iter_documents(hub.share(ds, (1, 2)), "x", "text")]
    with pytest.raises(DataError, match="hf:local/train: row 0: no column 'body'"):
        next(hub.iter_documents(ds, "hf:local/train", "body"))
    src = hub.HubSource("Salesforce/wikitext", "wikitext-2-raw-v1", "train", "a" * 40)
    assert src.name == "hf:Salesforce/wikitext:wikitext-2-raw-v1/train"
    assert src.identity() == {
        "name": "Salesforce/wikitext",
        "config": "wikitext-2-raw-v1",
        "split": "train",
        "revision": "a" * 40,
    }
    assert hub.parse_spec("Salesforce/wikitext:wikitext-2-raw-v1@main") == (
        "Salesforce/wikitext",
        "wikitext-2-raw-v1",
        "main",
    )


def test_fingerprints_of_text_inputs_did_not_change(tmp_path: Path) -> None:
    """Tables and new codecs add nothing to the fingerprint of a text corpus (the quick start's stays)."""
    config = TokenizeConfig(vocab_size=8000, docs="file", workers=1)  # pipelines/quickstart.toml's
    plan = plan_tokenize([str(INAUGURAL.parent)], config, out=tmp_path / "q")
    assert plan.fingerprint == "e8199856939650d7ff5d27c98aa6e4663dfd3c2fd45e787d02e26fe939718de7"
    assert {"hf_dataset", "split", "row_groups"}.isdisjoint(plan.params)
