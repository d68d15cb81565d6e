"""Tests of the shard stage and the shard reader on real tokenize artifacts (docs/algorithm.md §1).

Expectations are computed here independently of `spanbert_cli.shards.pack`: blocks come from a plain
sentence-by-sentence greedy packer written below, documents and sentences from the tokenize artifacts,
sequences from the Arrow files read with pyarrow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import INAUGURAL as INAUGURAL_DIR
from conftest import read_documents

from spanbert_cli import artifacts
from spanbert_cli.cli import main
from spanbert_cli.errors import DataError, UsageError
from spanbert_cli.shards.pack import KIND, ShardConfig, pack_blocks, pack_document, schema_for, shard
from spanbert_cli.shards.reader import ShardReader
from spanbert_cli.text.tokenize import TokenizeConfig, tokenize

INAUGURAL = sorted(INAUGURAL_DIR.glob("*.txt"))
N_FIRST = 30  # files of the first tokenize artifact; the rest are "appended"


# --------------------------------------------------------------------------------------------------------
# fixtures: real tokenize artifacts


@pytest.fixture(scope="session")
def tok_root(tmp_path_factory):
    assert len(INAUGURAL) == 55
    return tmp_path_factory.mktemp("tokenized")


def _tokenize(files, out, **kw):
    config = TokenizeConfig(vocab_size=kw.pop("vocab_size", 4000), workers=1, **kw)
    return tokenize([str(f) for f in files], config, out=out).artifact


@pytest.fixture(scope="session")
def tok_a(tok_root):
    """The first 30 inaugural addresses, one document per paragraph, with a tokenizer trained on them."""
    return _tokenize(INAUGURAL[:N_FIRST], tok_root / "a")


@pytest.fixture(scope="session")
def tok_b(tok_root, tok_a):
    """The remaining addresses, with the tokenizer of `tok_a`."""
    return _tokenize(INAUGURAL[N_FIRST:], tok_root / "b", tokenizer=str(tok_a.file("tokenizer.json")))


@pytest.fixture(scope="session")
def tok_ab(tok_root, tok_a):
    """All addresses in one artifact: `tok_a`'s documents with the others appended."""
    return _tokenize(INAUGURAL, tok_root / "ab", tokenizer=str(tok_a.file("tokenizer.json")))


@pytest.fixture(scope="session")
def tok_files(tok_root, tok_a):
    """Whole addresses as documents (thousands of tokens each): many blocks per document."""
    return _tokenize(
        INAUGURAL[:12], tok_root / "files", docs="file", tokenizer=str(tok_a.file("tokenizer.json"))
    )


@pytest.fixture(scope="session")
def tok_other(tok_root):
    """A different tokenizer (another vocabulary size)."""
    return _tokenize(INAUGURAL[:3], tok_root / "other", vocab_size=3000)


@pytest.fixture(scope="session")
def tok_single(tok_root, tok_a):
    """One document only."""
    return _tokenize(
        INAUGURAL[1:2], tok_root / "single", docs="file", tokenizer=str(tok_a.file("tokenizer.json"))
    )


@pytest.fixture(scope="session")
def out_root(tmp_path_factory):
    return tmp_path_factory.mktemp("shards")


def _documents(*arts):
    """[(ids, sentence_ends)] of every document, in input order."""
    docs = []
    for a in arts:
        for batch in read_documents(a):
            for ids, ends in zip(
                batch.column("input_ids").to_pylist(), batch.column("sentence_ends").to_pylist(), strict=True
            ):
                docs.append((ids, ends))
    return docs


def _rows(artifact, split):
    """(input_ids, doc) of every sequence of a split, read with pyarrow from the files in name order."""
    seqs, docs = [], []
    for f in sorted(artifact.files_under(f"{split}/"), key=lambda f: f.path):
        with pa.memory_map(str(artifact.file(f.path))) as src:
            table = pa.ipc.open_stream(src).read_all()
        assert table.num_rows == f.rows
        seqs += table.column("input_ids").to_pylist()
        docs += table.column("doc").to_pylist()
    return seqs, docs


def ref_pack(sentence_ends: list[int], max_block: int) -> tuple[list[int], int]:
    """Sentence-by-sentence greedy packing: the block ends (in document offsets) and sentences cut."""
    pieces, cut, prev = [], 0, 0
    for end in sentence_ends:
        if end - prev > max_block:
            cut += 1
            pieces += [min(max_block, end - s) for s in range(prev, end, max_block)]
        else:
            pieces.append(end - prev)
        prev = end
    ends, pos, cur = [], 0, 0
    for n in pieces:
        if cur and cur + n > max_block:
            ends.append(pos)
            cur = 0
        cur += n
        pos += n
    if cur:
        ends.append(pos)
    return ends, cut


@pytest.fixture(scope="session")
def sharded(tok_a, tok_files, out_root):
    """Paragraph documents and whole-address documents together, short sequences, small files."""
    config = ShardConfig(max_seq_len=32, valid_fraction=0.05, shard_bytes=1 << 16, seed=7)
    return shard([tok_a.path, tok_files.path], config, out=out_root / "main"), config


# --------------------------------------------------------------------------------------------------------
# packing


def test_pack_document_small_example():
    # sentences of 3, 4, 12, 2 tokens with blocks of 5: [3] [4] [5 of 12] [5 of 12] [2 of 12 + 2]
    ends, cut = pack_document(np.array([3, 7, 19, 21]), 5)
    assert ends.tolist() == [3, 7, 12, 17, 21]
    assert cut == 1
    ends, cut = pack_document(np.array([2, 4, 7]), 5)
    assert ends.tolist() == [4, 7] and cut == 0
    ends, cut = pack_document(np.array([2, 4, 5]), 5)
    assert ends.tolist() == [5] and cut == 0
    ends, cut = pack_document(np.array([], dtype=np.int64), 5)
    assert ends.tolist() == [] and cut == 0


@pytest.mark.parametrize("max_block", [1, 3, 6, 30, 510])
def test_pack_blocks_matches_reference(max_block):
    rng = np.random.default_rng(max_block)
    docs, all_ends, offsets, base = [], [], [0], 0
    for _ in range(300):
        lengths = rng.geometric(1 / 12, size=int(rng.integers(0, 12)))  # some documents empty
        lengths[rng.random(lengths.size) < 0.05] *= 40  # a few very long sentences
        ends = np.cumsum(lengths).tolist()
        docs.append(ends)
        all_ends += [base + e for e in ends]
        base += ends[-1] if ends else 0
        offsets.append(base)
    got, got_cut = pack_blocks(np.array(offsets), np.array(all_ends, dtype=np.int64), max_block)
    want, want_cut = [], 0
    for start, ends in zip(offsets, docs, strict=False):
        e, c = ref_pack(ends, max_block)
        want += [start + x for x in e]
        want_cut += c
    assert got.tolist() == want
    assert got_cut == want_cut


# --------------------------------------------------------------------------------------------------------
# sequences on real data


def test_sequences_framed_and_within_limit(sharded):
    result, config = sharded
    art = result.artifact
    special = art.manifest.extra["tokenizer"]["special_ids"]
    cls_id, sep_id = special["cls"], special["sep"]
    for split in ("train", "valid"):
        seqs, _ = _rows(art, split)
        assert seqs
        for s in seqs:
            assert 3 <= len(s) <= config.max_seq_len
            assert s[0] == cls_id and s[-1] == sep_id
            assert cls_id not in s[1:-1] and sep_id not in s[1:-1]


def test_tokens_preserved_and_sentences_whole(sharded, tok_a, tok_files):
    result, config = sharded
    art = result.artifact
    docs = _documents(tok_a, tok_files)
    per_doc: dict[int, list[list[int]]] = {}
    for split in ("train", "valid"):
        seqs, doc_ids = _rows(art, split)
        assert doc_ids == sorted(doc_ids)  # in document order within a split
        for s, d in zip(seqs, doc_ids, strict=True):
            per_doc.setdefault(d, []).append(s[1:-1])
    total_cut = 0
    for d, (ids, ends) in enumerate(docs):
        blocks = per_doc.pop(d, [])
        # nothing lost, nothing duplicated, no block from another document
        assert [t for b in blocks for t in b] == ids
        # block boundaries are exactly those of greedy whole-sentence packing
        want_ends, cut = ref_pack(ends, config.max_seq_len - 2)
        assert np.cumsum([len(b) for b in blocks]).tolist() == want_ends
        total_cut += cut
        boundaries = set(ends) | {0}
        long_sentences = [(a, b) for a, b in zip([0, *ends], ends, strict=False) if b - a > config.max_block]
        for e in want_ends:  # a block ends at a sentence end unless inside a cut sentence
            assert e in boundaries or any(a < e < b for a, b in long_sentences)
    assert not per_doc  # no sequence of an unknown document
    stats = art.manifest.stats
    assert stats["sentences_cut"] == total_cut > 0
    assert stats["documents"] == len(docs)
    assert stats["input_tokens"] == sum(len(ids) for ids, _ in docs)


def test_manifest_records_tokenizer_and_stats(sharded, tok_a):
    result, config = sharded
    m = result.artifact.manifest
    assert m.kind == KIND
    assert m.extra["tokenizer"]["sha256"] == tok_a.manifest.extra["tokenizer"]["sha256"]
    assert m.extra["tokenizer"]["vocab_size"] == 4000
    assert m.extra["tokenizer"]["special_ids"] == tok_a.manifest.extra["tokenizer"]["special_ids"]
    assert m.extra["id_type"] == "uint16"
    assert (result.artifact.path / "tokenizer.json").read_bytes() == tok_a.file("tokenizer.json").read_bytes()
    assert (result.artifact.path / "vocab.txt").is_file()
    lengths = []
    for split in ("train", "valid"):
        lengths += [len(s) for s in _rows(result.artifact, split)[0]]
    s = m.stats
    assert s["sequences"] == len(lengths)
    assert s["tokens"] == sum(lengths)
    assert s["mean_length"] == pytest.approx(sum(lengths) / len(lengths))
    assert s["fill_rate"] == pytest.approx(sum(lengths) / (len(lengths) * config.max_seq_len))
    hist = s["length_histogram"]
    assert sum(hist["counts"]) == len(lengths)
    assert hist["edges"][0] == 0 and hist["edges"][-1] == config.max_seq_len
    assert s["splits"]["train"]["sequences"] + s["splits"]["valid"]["sequences"] == len(lengths)
    assert len(result.artifact.files_under("train/")) > 1  # small --shard-size: several files
    for f in result.artifact.files_under("train/"):
        assert f.bytes <= config.shard_bytes
    assert artifacts.verify(result.artifact.path) == []
    upstream = artifacts.lineage(result.artifact.path)["inputs"]
    assert [n["kind"] for n in upstream] == ["spanbert/tokenized", "spanbert/tokenized"]


def test_byte_identical_across_runs_and_cache(tok_a, tok_files, out_root, sharded):
    result, config = sharded
    again = shard([tok_a.path, tok_files.path], config, out=out_root / "again")
    assert not again.cached

    def hashes(a):
        return {f.path: f.sha256 for f in a.manifest.files}

    assert hashes(again.artifact) == hashes(result.artifact)
    for f in result.artifact.manifest.files:
        assert (out_root / "again" / f.path).read_bytes() == result.artifact.file(f.path).read_bytes()
    hit = shard([tok_a.path, tok_files.path], config, out=out_root / "again")
    assert hit.cached and hit.artifact.fingerprint == result.artifact.fingerprint


def test_split_stable_when_documents_are_appended(tok_a, tok_b, tok_ab, out_root):
    config = ShardConfig(max_seq_len=128, valid_fraction=0.1, seed=3)
    n_a = tok_a.manifest.stats["documents"]

    def valid_docs(result):
        _, docs = _rows(result.artifact, "valid")
        _, train = _rows(result.artifact, "train")
        assert not set(docs) & set(train)
        return sorted(set(docs))

    only_a = valid_docs(shard([tok_a.path], config, out=out_root / "split-a"))
    a_then_b = valid_docs(shard([tok_a.path, tok_b.path], config, out=out_root / "split-a-b"))
    appended = valid_docs(shard([tok_ab.path], config, out=out_root / "split-ab"))
    assert only_a and len(only_a) < n_a
    assert [d for d in a_then_b if d < n_a] == only_a
    assert [d for d in appended if d < n_a] == only_a
    assert a_then_b == appended
    # about the requested fraction, and the seed matters
    n_ab = tok_ab.manifest.stats["documents"]
    assert 0.05 < len(appended) / n_ab < 0.15
    other_config = ShardConfig(max_seq_len=128, valid_fraction=0.1, seed=4)
    other_seed = valid_docs(shard([tok_ab.path], other_config, out=out_root / "split-seed4"))
    assert other_seed != appended


def test_valid_docs_exact(tok_a, out_root):
    result = shard([tok_a.path], ShardConfig(max_seq_len=64, valid_docs=7), out=out_root / "vd")
    _, docs = _rows(result.artifact, "valid")
    assert len(set(docs)) == 7
    assert result.artifact.manifest.stats["splits"]["valid"]["documents"] == 7
    none = shard([tok_a.path], ShardConfig(max_seq_len=64, valid_docs=0), out=out_root / "vd0")
    assert none.artifact.manifest.stats["splits"]["valid"]["sequences"] == 0
    assert len(ShardReader(none.artifact, "valid")) == 0  # an empty split still has a file that opens


def test_shards_open_with_datasets(sharded, tmp_path):
    import datasets

    result, _ = sharded
    art = result.artifact
    files = [str(art.file(f.path)) for f in sorted(art.files_under("train/"), key=lambda f: f.path)]
    seqs, docs = _rows(art, "train")
    ds = datasets.Dataset.from_file(files[0])
    assert ds.num_rows == art.files_under("train/")[0].rows
    assert ds[0]["input_ids"] == seqs[0]
    assert str(ds.features["input_ids"].feature.dtype) == "uint16"
    loaded = datasets.load_dataset("arrow", data_files={"train": files}, cache_dir=str(tmp_path))["train"]
    assert loaded.num_rows == len(seqs)
    assert loaded[len(seqs) - 1]["input_ids"] == seqs[-1]
    assert loaded[len(seqs) - 1]["doc"] == docs[-1]


def test_uint32_ids_for_large_vocabularies():
    assert schema_for(30522).field("input_ids").type == pa.list_(pa.uint16())
    assert schema_for(70000).field("input_ids").type == pa.list_(pa.uint32())


# --------------------------------------------------------------------------------------------------------
# reader


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_reader_random_access_matches_full_read(sharded, tok_a, tok_files, out_root, compression):
    result, config = sharded
    if compression:
        config = dataclasses.replace(config, compression=compression)
        result = shard([tok_a.path, tok_files.path], config, out=out_root / "zstd")
        plain = sharded[0].artifact
        assert sum(f.bytes for f in result.artifact.manifest.files if f.path.endswith(".arrow")) < sum(
            f.bytes for f in plain.manifest.files if f.path.endswith(".arrow")
        )
    for split in ("train", "valid"):
        seqs, docs = _rows(result.artifact, split)
        reader = ShardReader(result.artifact.path, split, max_open_files=2, cached_batches=2)
        assert len(reader) == len(seqs)
        rng = np.random.default_rng(0)
        for i in [*rng.permutation(len(seqs))[:400].tolist(), 0, len(seqs) - 1]:
            got = reader[i]
            assert got.dtype == np.uint16
            assert got.tolist() == seqs[i]
            assert reader.document(i) == docs[i]
        assert reader[-1].tolist() == seqs[-1]
        assert [s.tolist() for s in reader] == seqs
        assert len(reader._open) <= 2 and len(reader._batches) <= 2  # bounded, whatever the data size
        clone = pickle.loads(pickle.dumps(reader))
        assert not clone._open
        assert clone[len(seqs) // 2].tolist() == seqs[len(seqs) // 2]
    if compression is None:
        view = ShardReader(result.artifact.path)[5]
        assert not view.flags.writeable and not view.flags.owndata  # a view of the mapped file


def test_reader_metadata_and_errors(sharded, tok_a):
    result, config = sharded
    reader = ShardReader(result.artifact)
    assert reader.vocab_size == 4000
    assert reader.special_ids == tok_a.manifest.extra["tokenizer"]["special_ids"]
    assert reader.max_seq_len == config.max_seq_len
    assert reader.tokenizer.get_vocab_size() == 4000
    text = reader.tokenizer.decode(reader[0].tolist(), skip_special_tokens=True)
    assert text.strip()
    n = len(reader)
    with pytest.raises(DataError, match=f"index {n} is past the end of the train split"):
        reader[n]
    with pytest.raises(IndexError):
        reader[-n - 1]
    with pytest.raises(UsageError):
        ShardReader(result.artifact, "test")
    with pytest.raises(DataError, match="expected spanbert/shards"):
        ShardReader(tok_a.path)


# --------------------------------------------------------------------------------------------------------
# CLI


def _run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_cli_writes_summary_and_json(tok_a, tmp_path, capsys):
    out = tmp_path / "s"
    code, stdout, err = _run(["shard", tok_a.path, "--out", out, "--max-seq-len", 64, "--json"], capsys)
    assert code == 0, err
    res = json.loads(stdout)
    assert res["kind"] == KIND and res["cached"] is False and res["stats"]["sequences"] > 0
    assert "fill rate" in err and "sentences cut" in err and "wrote" in err
    code, stdout, err = _run(["shard", tok_a.path, "--out", out, "--max-seq-len", 64], capsys)
    assert code == 0 and "up to date" in err
    code, _, err = _run(["shard", tok_a.path, "--out", tmp_path / "z", "--compression", "zstd", "-q"], capsys)
    assert code == 0 and err == ""
    assert artifacts.read_manifest(tmp_path / "z").params["compression"] == "zstd"


def test_cli_takes_newest_tokenize_artifact_of_workspace(tok_a, tmp_path, capsys):
    ws = tmp_path / "ws"
    code, _, err = _run(["shard", "--workspace", ws], capsys)
    assert code == 2
    assert err.startswith("error:") and "spanbert tokenize CORPUS" in err and len(err.splitlines()) == 1
    shutil.copytree(tok_a.path, ws / "tokenized" / "inaugural-abc")
    code, stdout, err = _run(["shard", "--workspace", ws, "--max-seq-len", 64, "--json"], capsys)
    assert code == 0, err
    flat = err.replace("\n", "")  # rich wraps long paths
    assert "using the newest tokenize artifact" in flat and "tokenized/inaugural-abc" in flat
    path = Path(json.loads(stdout)["path"])
    assert path.parent == ws / "shards" and path.name.startswith("inaugural-abc-64-")


def _bad(args, capsys, *, code_is=None):
    code, _, err = _run(["shard", *args], capsys)
    assert code != 0
    if code_is is not None:
        assert code == code_is
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


def _assert_nothing_written(parent: Path, name: str):
    assert not (parent / name).exists()
    assert not [p for p in parent.iterdir() if p.name.startswith(".tmp-")]


def test_bad_inputs(tok_a, tok_other, tok_single, sharded, tmp_path, capsys):
    out = tmp_path / "out"
    # missing
    msg = _bad([tmp_path / "nope", "--out", out], capsys)
    assert "nope" in msg and "no such artifact" in msg
    # another kind
    msg = _bad([sharded[0].artifact.path, "--out", out], capsys)
    assert "expected spanbert/tokenized" in msg
    # tampered: a data file of another size
    tampered = tmp_path / "tampered"
    shutil.copytree(tok_a.path, tampered)
    with open(tampered / "data" / "part-00000.arrow", "ab") as f:
        f.write(b"\0" * 10)
    msg = _bad([tampered, "--out", out], capsys)
    assert "tampered" in msg and "part-00000.arrow" in msg
    # newer schema
    newer = tmp_path / "newer"
    shutil.copytree(tok_a.path, newer)
    m = json.loads((newer / "manifest.json").read_text())
    m["schema_version"] = 99
    (newer / "manifest.json").write_text(json.dumps(m))
    msg = _bad([newer, "--out", out], capsys)
    assert "newer" in msg and "upgrade" in msg
    # mixed tokenizers: both artifacts named
    msg = _bad([tok_a.path, tok_other.path, "--out", out], capsys)
    assert str(tok_a.path) in msg and str(tok_other.path) in msg and "different tokenizers" in msg
    # the same artifact twice
    msg = _bad([tok_a.path, tok_a.path, "--out", out], capsys, code_is=2)
    assert "same tokenize artifact" in msg
    # sequence length out of range
    for n in (7, 8193):
        msg = _bad([tok_a.path, "--out", out, "--max-seq-len", n], capsys, code_is=2)
        assert "--max-seq-len must be between 8 and 8192" in msg
    # all problems of a config at once
    msg = _bad([tok_a.path, "--out", out, "--max-seq-len", 4, "--valid-fraction", 1.5], capsys, code_is=2)
    assert "--max-seq-len" in msg and "--valid-fraction" in msg
    msg = _bad([tok_a.path, "--out", out, "--compression", "lz9"], capsys, code_is=2)
    assert "--compression" in msg
    # a split that leaves train empty: known up front, and found while writing
    n_docs = tok_a.manifest.stats["documents"]
    msg = _bad([tok_a.path, "--out", out, "--valid-docs", n_docs], capsys, code_is=2)
    assert "train split empty" in msg
    msg = _bad([tok_single.path, "--out", out, "--valid-fraction", 0.9999999], capsys, code_is=2)
    assert "leaving train empty" in msg
    # an output path that is a file
    afile = tmp_path / "a-file"
    afile.write_text("x")
    msg = _bad([tok_a.path, "--out", afile], capsys)
    assert "is a file" in msg
    assert afile.read_text() == "x"
    _assert_nothing_written(tmp_path, "out")


def test_library_refuses_mixed_tokenizers(tok_a, tok_other, tmp_path):
    with pytest.raises(DataError, match="different tokenizers"):
        shard([tok_a.path, tok_other.path], ShardConfig(), out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_shard_files_hash_like_the_manifest(sharded):
    art = sharded[0].artifact
    for f in art.manifest.files:
        assert hashlib.sha256(art.file(f.path).read_bytes()).hexdigest() == f.sha256
