"""The shard stage: tokenized documents → `[CLS] block [SEP]` sequences (docs/algorithm.md §1).

Output artifact (`spanbert/shards`):

    tokenizer.json, vocab.txt          the tokenizer, copied from the (first) tokenize artifact
    train/part-00000.arrow, …          Arrow IPC streams of at most `shard_bytes` each, one row per sequence:
    valid/part-00000.arrow, …              input_ids  list<uint16|uint32>  [CLS] block [SEP]
                                           doc        int64                global document index
    manifest.json                      rows per file; extra: tokenizer (sha256, vocab_size, special_ids),
                                       max_seq_len, id_type, batch_rows, documents_per_input

Every record batch holds `batch_rows` sequences except the last one of a split, so a reader can locate
sequence `i` of a file from its batch number alone (`spanbert_cli.shards.reader`). A split with no
sequences still has one (empty) file, so both directories always open.

Packing: a block is built greedily from whole sentences of one document, up to `max_seq_len - 2` tokens
(`pack_blocks`); a sentence longer than that is cut into pieces of exactly the limit (its remainder then
starts the next block), so no token is ever dropped. Documents are processed a whole record batch at a
time with numpy: the greedy walk advances every document of the batch at once, one block per step.

Split: each document gets a 64-bit key, a hash of the seed and its token ids (`document_keys`); it goes to
`valid` when `key / 2**64 < valid_fraction`. The decision depends on nothing but the document itself, so
appending documents never moves an existing one. With `valid_docs = N` the N documents with the smallest
keys (ties broken by document index) are held out instead: exactly N, but an appended document with a
smaller key displaces one, so that mode is not append-stable.

Memory stays bounded whatever the corpus size: inputs are streamed one record batch at a time (read, not
memory-mapped, so that finished input pages do not accumulate in the process) and outputs leave in batches
of `batch_rows` sequences.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from spanbert_cli import artifacts, kinds
from spanbert_cli.artifacts import locks
from spanbert_cli.errors import ArtifactError, DataError, UsageError, naming_io_errors
from spanbert_cli.options import option
from spanbert_cli.progress import NullReporter, Reporter
from spanbert_cli.shards.arrow_io import (
    ARROW_READ_ERRORS,
    NUMPY_TYPES,
    RollingStreamWriter,
    arrow_array,
    id_type,
    numpy_view,
    read_failure,
    schema_mismatch,
)
from spanbert_cli.text.wordpiece import copy_tokenizer_files

KIND = kinds.SHARDS
PACKING_VERSION = 1  # bump when the packing or the split changes what is written
SPLITS = ("train", "valid")
MIN_SEQ_LEN, MAX_SEQ_LEN = 8, 8192
COMPRESSIONS = ("zstd",)
_BATCH_BYTES = 1 << 20  # target size of one output record batch (a shard holds at least ~8 of them)
_FRAMING_SLACK = 1024  # bytes of IPC framing per record batch and stream end, at most
_U64 = np.uint64


@dataclass(frozen=True)
class ShardConfig:
    """Parameters of the shard stage (all of them enter the fingerprint)."""

    max_seq_len: int = option(512, "Tokens per sequence, [CLS] and [SEP] included (8 to 8192).")
    valid_fraction: float = option(
        0.005, "Share of documents held out for validation, chosen by content hash."
    )
    valid_docs: int | None = option(
        None, "Hold out exactly this many documents instead of --valid-fraction.", show_default=False
    )
    seed: int = option(0, "Salts the document hash that decides the split.")
    # On the command line in MB (`--shard-size`) and "none" for no compression (`--compression`).
    shard_bytes: int = option(256 * 1024 * 1024, "Bound on each Arrow file, in bytes.", cli=False)
    compression: str | None = option(None, "None (memory-mappable without copies) or zstd.", cli=False)

    def validate(self) -> None:
        """Raise one `UsageError` listing every problem."""
        problems = []
        if not MIN_SEQ_LEN <= self.max_seq_len <= MAX_SEQ_LEN:
            problems.append(
                f"--max-seq-len must be between {MIN_SEQ_LEN} and {MAX_SEQ_LEN}, got {self.max_seq_len}"
            )
        if not 0.0 <= self.valid_fraction < 1.0:
            problems.append(f"--valid-fraction must be at least 0 and below 1, got {self.valid_fraction}")
        if self.valid_docs is not None and self.valid_docs < 0:
            problems.append(f"--valid-docs must be at least 0, got {self.valid_docs}")
        if self.shard_bytes < 1 << 16:
            problems.append(f"--shard-size must be at least 64 KB, got {self.shard_bytes} bytes")
        if self.compression not in (None, *COMPRESSIONS):
            problems.append(f"--compression must be none or zstd, got {self.compression!r}")
        if problems:
            raise UsageError("; ".join(problems))

    @property
    def max_block(self) -> int:
        return self.max_seq_len - 2

    def fingerprint_params(self) -> dict[str, Any]:
        return {
            "max_seq_len": self.max_seq_len,
            # only the split rule in force enters the fingerprint
            "valid_fraction": None if self.valid_docs is not None else self.valid_fraction,
            "valid_docs": self.valid_docs,
            "seed": self.seed,
            "shard_bytes": self.shard_bytes,
            "compression": self.compression,
            "packing": PACKING_VERSION,
        }


@dataclass
class ShardResult:
    artifact: artifacts.Artifact
    cached: bool


# --------------------------------------------------------------------------------------------------
# packing (pure functions)


def pack_blocks(doc_offsets: np.ndarray, sentence_ends: np.ndarray, max_block: int) -> tuple[np.ndarray, int]:
    """Greedy packing of whole sentences into blocks of at most `max_block` tokens, for many documents.

    `doc_offsets` (D+1,): where each document starts and ends in the concatenated token stream.
    `sentence_ends` (S,): absolute stream offsets where sentences end (each document's last one is its
    end). Returns the absolute end offset of every block, increasing (blocks tile the stream from
    `doc_offsets[0]`, so each block starts where the previous one ends), and the number of sentences
    longer than `max_block`, which are cut into pieces of exactly `max_block` tokens; the remainder of a
    cut sentence starts a new block that whole sentences may join. No block crosses a document boundary.
    """
    if max_block < 1:
        raise ValueError(f"max_block must be positive, got {max_block}")
    doc_offsets = np.asarray(doc_offsets, dtype=np.int64)
    # Sentence boundaries plus document boundaries (robust to a document whose last end is missing).
    bounds = np.sort(np.concatenate([doc_offsets, np.asarray(sentence_ends, dtype=np.int64)]), kind="stable")
    bounds = bounds[np.concatenate([[True], bounds[1:] != bounds[:-1]])]  # np.unique, minus its imports
    seg_start, seg_len = bounds[:-1], np.diff(bounds)
    long = seg_len > max_block
    n_cut = int(np.count_nonzero(long))
    candidates = bounds
    if n_cut:
        # Cut points a+M, a+2M, … inside every long sentence [a, a+L): ceil(L/M) - 1 of them each.
        starts, lengths = seg_start[long], seg_len[long]
        per = (lengths - 1) // max_block
        step = np.arange(int(per.sum()), dtype=np.int64) - np.repeat(np.cumsum(per) - per, per) + 1
        cuts = np.repeat(starts, per) + step * max_block
        candidates = np.sort(np.concatenate([bounds, cuts]), kind="stable")  # two sorted runs: merge
    # Every gap between candidates is now <= max_block: from a block start p, the block ends at the last
    # candidate <= p + max_block, or at the document end. All documents advance together, one block a step.
    pos = doc_offsets[:-1].copy()
    end = doc_offsets[1:]
    active = np.flatnonzero(pos < end)
    ends: list[np.ndarray] = []
    while active.size:
        p = pos[active]
        nxt = candidates[np.searchsorted(candidates, p + max_block, side="right") - 1]
        nxt = np.minimum(nxt, end[active])
        ends.append(nxt)
        pos[active] = nxt
        active = active[nxt < end[active]]
    block_ends = np.sort(np.concatenate(ends)) if ends else np.zeros(0, np.int64)
    return block_ends, n_cut


def pack_document(sentence_ends: np.ndarray, max_block: int) -> tuple[np.ndarray, int]:
    """`pack_blocks` for one document whose sentences end at `sentence_ends` (the last = its length)."""
    ends = np.asarray(sentence_ends, dtype=np.int64)
    n = int(ends[-1]) if ends.size else 0
    return pack_blocks(np.array([0, n]), ends, max_block)


def frame(
    tokens: np.ndarray, block_starts: np.ndarray, block_ends: np.ndarray, cls_id: int, sep_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated `[CLS] tokens[s:e] [SEP]` for contiguous blocks tiling `tokens`; returns (values, lengths).

    Offsets are relative to `tokens` (the first block starts at 0, each next one where the last ended).
    """
    lengths = (block_ends - block_starts) + 2
    seq_offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=seq_offsets[1:])
    out = np.empty(int(seq_offsets[-1]), dtype=tokens.dtype)
    special = np.zeros(out.size, dtype=bool)
    special[seq_offsets[:-1]] = True
    special[seq_offsets[1:] - 1] = True
    out[~special] = tokens
    out[seq_offsets[:-1]] = cls_id
    out[seq_offsets[1:] - 1] = sep_id
    return out, lengths


# --------------------------------------------------------------------------------------------------
# split (pure functions)


def _splitmix64(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The splitmix64 finaliser, elementwise (in place when `out` is `x`); uint64 arrays wrap silently."""
    x = np.add(x, _U64(0x9E3779B97F4A7C15), out=out)
    x ^= x >> _U64(30)
    x *= _U64(0xBF58476D1CE4E5B9)
    x ^= x >> _U64(27)
    x *= _U64(0x94D049BB133111EB)
    x ^= x >> _U64(31)
    return x


def document_keys(values: np.ndarray, offsets: np.ndarray, seed: int) -> np.ndarray:
    """A 64-bit hash of (seed, token ids) for each document `values[offsets[i]:offsets[i+1]]`.

    key = mix(Σ_t mix((position_t << 32 | id_t) ^ salt) ^ mix(length ^ mix(salt))), with `mix` =
    splitmix64 and the sum modulo 2**64: order-sensitive, independent of the id dtype and of where the
    document sits in its batch, vectorised over all documents. Equal documents get equal keys, so
    duplicates always land in the same split.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    o0 = offsets[0]
    lengths = np.diff(offsets)
    rel = offsets - o0
    n = int(rel[-1])
    salt = _splitmix64(np.array([seed % (1 << 64)], dtype=np.uint64))
    x = np.arange(n, dtype=np.uint64)
    x -= np.repeat(rel[:-1].astype(np.uint64), lengths)  # position inside the document
    x <<= _U64(32)
    x |= values[o0 : offsets[-1]]
    x ^= salt
    _splitmix64(x, out=x)
    csum = np.empty(n + 1, dtype=np.uint64)
    csum[0] = 0
    np.cumsum(x, out=csum[1:])
    sums = csum[rel[1:]] - csum[rel[:-1]]
    return _splitmix64(sums ^ _splitmix64(lengths.astype(np.uint64) ^ _splitmix64(salt)))


def fraction_threshold(fraction: float) -> np.uint64:
    """The key bound of `key < threshold` ⇔ `key / 2**64 < fraction`."""
    return _U64(min(int(fraction * 2.0**64), (1 << 64) - 1))


@dataclass(frozen=True)
class _SplitRule:
    """Document → valid? Either `key < threshold`, or `(key, index) <= (threshold, last_index)`."""

    threshold: np.uint64
    last_index: int | None = None  # set in --valid-docs mode

    def valid(self, keys: np.ndarray, doc_index: np.ndarray) -> np.ndarray:
        if self.last_index is None:
            return keys < self.threshold
        return (keys < self.threshold) | ((keys == self.threshold) & (doc_index <= self.last_index))


# --------------------------------------------------------------------------------------------------
# inputs


def resolve_tokenized(
    paths: Sequence[str | os.PathLike],
    workspace: str | os.PathLike | None = None,
    reporter: Reporter | None = None,
) -> list[artifacts.Artifact]:
    """Open the tokenize artifacts (the newest one in the workspace when none is named) and check them."""
    rep = reporter or NullReporter()
    if not paths:
        latest = artifacts.find_latest(kinds.TOKENIZED, workspace)
        if latest is None:
            root = artifacts.workspace_root(workspace) / artifacts.kind_dir(kinds.TOKENIZED)
            raise UsageError(
                f"no tokenize artifact named and none in {root}; run `spanbert tokenize CORPUS` first"
            )
        rep.log(f"using the newest tokenize artifact: {latest.path}")
        found = [latest]
    else:
        found = [artifacts.open_artifact(p, kinds.TOKENIZED) for p in paths]
    first = found[0]
    first_tok = _tokenizer_meta(first)
    seen: dict[str, artifacts.Artifact] = {}
    for a in found:
        tok = _tokenizer_meta(a)
        if tok["sha256"] != first_tok["sha256"]:
            raise DataError(
                f"{first.path} and {a.path} were tokenized with different tokenizers "
                f"(sha256 {first_tok['sha256'][:12]} vs {tok['sha256'][:12]}); shard only artifacts made "
                "with one tokenizer (tokenize --tokenizer)"
            )
        if a.fingerprint in seen:
            raise UsageError(
                f"{seen[a.fingerprint].path} and {a.path} are the same tokenize artifact "
                f"({a.fingerprint[:12]}); its documents would be duplicated"
            )
        seen[a.fingerprint] = a
    return found


def _tokenizer_meta(a: artifacts.Artifact) -> dict[str, Any]:
    tok = a.manifest.extra.get("tokenizer")
    if not isinstance(tok, dict) or not {"sha256", "vocab_size", "special_ids"} <= tok.keys():
        raise ArtifactError(f"{a.path}: the manifest lacks the tokenizer record; re-create the artifact")
    if "cls" not in tok["special_ids"] or "sep" not in tok["special_ids"]:
        raise ArtifactError(f"{a.path}: the tokenizer has no [CLS] or [SEP] id")
    return tok


def _input_batches(a: artifacts.Artifact, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """The record batches of a tokenize artifact, read (not memory-mapped) so resident memory stays flat.

    Each file's schema is checked first and a damaged file is named: the manifest's hashes only say that
    a file is the one written, not that what was written (or re-hashed after an edit) is readable."""
    fields = _input_fields(a, columns)
    for f in a.files_under("data/"):
        path = a.file(f.path)
        read = 0
        try:
            with pa.OSFile(str(path)) as source:
                reader = pa.ipc.open_stream(source)
                problem = schema_mismatch(reader.schema, fields)
                if problem:
                    raise ArtifactError(f"{path}: {problem}; re-create the artifact")
                for batch in reader:
                    yield batch.select(list(columns))
                    read += 1
        except ARROW_READ_ERRORS as e:
            raise read_failure(path, e, f"record batch {read}") from None


def _input_fields(a: artifacts.Artifact, columns: Sequence[str]) -> list[pa.Field]:
    """The columns the tokenize stage writes, with their types (input_ids by the vocabulary's size)."""
    types = {
        "input_ids": pa.list_(id_type(int(_tokenizer_meta(a)["vocab_size"]))),
        "sentence_ends": pa.list_(pa.uint32()),
    }
    return [pa.field(c, types[c]) for c in columns]


def _list_parts(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, values) of a list array as numpy, offsets indexing `values` directly."""
    if arr.null_count or arr.values.null_count:
        raise ArtifactError("a tokenize artifact holds null values; re-create it")
    if arr.type.value_type not in NUMPY_TYPES:
        raise ArtifactError(f"a tokenize artifact holds {arr.type} values; re-create it")
    return numpy_view(arr.offsets).astype(np.int64), numpy_view(arr.values)


# --------------------------------------------------------------------------------------------------
# output


class _SplitSink:
    """Collect sequences of one split; write them in record batches of exactly `batch_rows` rows."""

    def __init__(self, directory: Path, root: Path, schema: pa.Schema, config: ShardConfig, batch_rows: int):
        self.directory, self.root, self.schema = directory, root, schema
        # The writer bounds the bytes written so far plus the next batch's buffers; the slack covers that
        # batch's IPC framing (metadata, padding) and the end-of-stream marker, so files stay within bound.
        self.writer = RollingStreamWriter(
            directory,
            schema,
            config.shard_bytes - _FRAMING_SLACK,
            prefix="part",
            compression=config.compression,
            root=root,
        )
        self.batch_rows = batch_rows
        self.value_type = schema.field("input_ids").type.value_type
        self._values: list[np.ndarray] = []
        self._lengths: list[np.ndarray] = []
        self._docs: list[np.ndarray] = []
        self._pending = 0
        self.sequences = 0
        self.tokens = 0
        self.documents = 0
        self.length_counts = np.zeros(config.max_seq_len + 1, dtype=np.int64)

    def add(self, values: np.ndarray, lengths: np.ndarray, docs: np.ndarray) -> None:
        if not lengths.size:
            return
        self._values.append(values)
        self._lengths.append(lengths)
        self._docs.append(docs)
        self._pending += lengths.size
        self.sequences += lengths.size
        self.tokens += int(values.size)
        self.length_counts += np.bincount(lengths, minlength=self.length_counts.size)
        if self._pending >= self.batch_rows:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self._pending:
            return
        values = np.concatenate(self._values)
        lengths = np.concatenate(self._lengths)
        docs = np.concatenate(self._docs)
        offsets = np.zeros(lengths.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        r = self.batch_rows
        full = lengths.size if final else lengths.size // r * r
        for lo in range(0, full, r):
            hi = min(lo + r, full)
            self.writer.write(self._batch(values[offsets[lo] : offsets[hi]], lengths[lo:hi], docs[lo:hi]))
        rest = slice(full, None)
        self._values = [values[offsets[full] :].copy()] if full < lengths.size else []
        self._lengths = [lengths[rest].copy()] if full < lengths.size else []
        self._docs = [docs[rest].copy()] if full < lengths.size else []
        self._pending = lengths.size - full

    def _batch(self, values: np.ndarray, lengths: np.ndarray, docs: np.ndarray) -> pa.RecordBatch:
        offsets = np.zeros(lengths.size + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        ids = pa.ListArray.from_arrays(arrow_array(offsets, pa.int32()), arrow_array(values, self.value_type))
        return pa.record_batch([ids, arrow_array(docs, pa.int64())], schema=self.schema)

    def close(self) -> dict[str, int]:
        """Flush and close; an empty split still gets one (schema-only) file. Returns rows per file."""
        try:
            self._flush(final=True)
        finally:
            files = self.writer.close()
        if not files:
            path = self.directory / "part-00000.arrow"
            with naming_io_errors(path):
                self.directory.mkdir(parents=True, exist_ok=True)
                with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, self.schema):
                    pass
            files = {path.relative_to(self.root).as_posix(): 0}
        return files

    def abort(self) -> None:
        self.writer.close()


def batch_rows_for(config: ShardConfig, vocab_size: int) -> int:
    """Sequences per record batch: about 1 MB of full-length sequences, and at least 8 batches per shard."""
    itemsize = id_type(vocab_size).byte_width
    target = min(_BATCH_BYTES, config.shard_bytes // 8)
    return max(1, target // (config.max_seq_len * itemsize))


def schema_for(vocab_size: int) -> pa.Schema:
    return pa.schema([("input_ids", pa.list_(id_type(vocab_size))), ("doc", pa.int64())])


# --------------------------------------------------------------------------------------------------
# the stage


@dataclass(frozen=True)
class _Prepared:
    plan: artifacts.Plan
    inputs: list[artifacts.Artifact]
    tokenizer: dict[str, Any]


def _prepare(
    tokenized: Sequence[str | os.PathLike],
    config: ShardConfig,
    out: str | os.PathLike | None,
    workspace: str | os.PathLike | None,
    rep: Reporter,
) -> _Prepared:
    config.validate()
    inputs = resolve_tokenized(tokenized, workspace, rep)
    tok = _tokenizer_meta(inputs[0])
    total_docs = sum(int(a.manifest.stats.get("documents", 0)) for a in inputs)
    if config.valid_docs is not None and config.valid_docs >= total_docs:
        raise UsageError(
            f"--valid-docs {config.valid_docs} would leave the train split empty "
            f"(the input has {total_docs:,} documents)"
        )
    refs = [artifacts.InputRef.from_artifact(a) for a in inputs]
    name = re.sub(r"-[0-9a-f]{12}$", "", inputs[0].path.resolve().name) or "corpus"
    plan = artifacts.plan(
        KIND,
        config.fingerprint_params(),
        refs,
        out=out,
        name=f"{name}-{config.max_seq_len}",
        workspace=workspace,
    )
    return _Prepared(plan, inputs, tok)


def plan_shard(
    tokenized: Sequence[str | os.PathLike],
    config: ShardConfig,
    *,
    out: str | os.PathLike | None = None,
    workspace: str | os.PathLike | None = None,
    reporter: Reporter | None = None,
) -> artifacts.Plan:
    """The fingerprint and output directory a shard run would have (reads manifests only)."""
    return _prepare(tokenized, config, out, workspace, reporter or NullReporter()).plan


def shard(
    tokenized: Sequence[str | os.PathLike],
    config: ShardConfig,
    *,
    out: str | os.PathLike | None = None,
    workspace: str | os.PathLike | None = None,
    force: bool = False,
    reporter: Reporter | None = None,
) -> ShardResult:
    """Run the shard stage on tokenize artifacts (the workspace's newest when none is named)."""
    rep = reporter or NullReporter()
    prep = _prepare(tokenized, config, out, workspace, rep)
    plan, inputs, tok = prep.plan, prep.inputs, prep.tokenizer
    with locks.exclusive(plan.out):
        if (hit := artifacts.existing(plan, force)) is not None:
            return ShardResult(hit, cached=True)

        t0 = time.perf_counter()
        with artifacts.ArtifactWriter(plan) as w:
            copy_tokenizer_files(inputs[0].path, w.dir)
            rule = _split_rule(inputs, config, rep)
            stats, rows = _write_sequences(inputs, config, rule, tok, w.dir, rep)
            stats["seconds"] = round(time.perf_counter() - t0, 3)
            extra = {
                "tokenizer": tok,
                "max_seq_len": config.max_seq_len,
                "id_type": str(id_type(tok["vocab_size"])),
                "batch_rows": batch_rows_for(config, tok["vocab_size"]),
                "packing": PACKING_VERSION,
                # `doc` numbers the documents of the inputs in order: input i starts after these counts
                "documents_per_input": [int(a.manifest.stats.get("documents", 0)) for a in inputs],
            }
            with naming_io_errors(w.dir / artifacts.MANIFEST):
                artifact = w.finalize(stats, rows=rows, extra=extra)
        return ShardResult(artifact, cached=False)


def _split_rule(inputs: Sequence[artifacts.Artifact], config: ShardConfig, rep: Reporter) -> _SplitRule:
    if config.valid_docs is None:
        return _SplitRule(fraction_threshold(config.valid_fraction))
    n = config.valid_docs
    if n == 0:
        return _SplitRule(_U64(0), last_index=-1)
    # A first pass keeps the n smallest (key, index) pairs: memory O(n), not O(documents).
    best_keys = np.zeros(0, dtype=np.uint64)
    best_idx = np.zeros(0, dtype=np.int64)
    base = 0
    rep.start("choosing validation documents")
    for a in inputs:
        for batch in _input_batches(a, ["input_ids"]):
            offsets, values = _list_parts(batch.column(0))
            keys = document_keys(values, offsets, config.seed)
            idx = np.arange(base, base + keys.size, dtype=np.int64)
            base += keys.size
            k = np.concatenate([best_keys, keys])
            i = np.concatenate([best_idx, idx])
            order = np.lexsort((i, k))[:n]
            best_keys, best_idx = k[order], i[order]
    rep.finish()
    return _SplitRule(best_keys[-1], last_index=int(best_idx[-1]))


def _write_sequences(
    inputs: Sequence[artifacts.Artifact],
    config: ShardConfig,
    rule: _SplitRule,
    tok: dict[str, Any],
    root: Path,
    rep: Reporter,
) -> tuple[dict[str, Any], dict[str, int]]:
    vocab_size = int(tok["vocab_size"])
    cls_id, sep_id = int(tok["special_ids"]["cls"]), int(tok["special_ids"]["sep"])
    dtype = np.dtype(np.uint16 if id_type(vocab_size).byte_width == 2 else np.uint32)
    schema = schema_for(vocab_size)
    rows_per_batch = batch_rows_for(config, vocab_size)
    sinks = {s: _SplitSink(root / s, root, schema, config, rows_per_batch) for s in SPLITS}
    total_tokens = sum(int(a.manifest.stats.get("tokens", 0)) for a in inputs)
    counts = {"documents": 0, "sentences": 0, "sentences_cut": 0, "input_tokens": 0}
    rep.start("sharding", total=total_tokens or None, unit="tokens")
    rows: dict[str, int] = {}
    try:
        for a in inputs:
            for batch in _input_batches(a, ["input_ids", "sentence_ends"]):
                _shard_batch(batch, config, rule, cls_id, sep_id, dtype, sinks, counts)
                rep.update(counts["input_tokens"], sequences=sum(s.sequences for s in sinks.values()))
        for s in SPLITS:
            rows.update(sinks[s].close())
    finally:
        for s in sinks.values():
            s.abort()
        rep.finish()

    train, valid = sinks["train"], sinks["valid"]
    if train.sequences + valid.sequences == 0:
        raise DataError(f"{inputs[0].path}: the documents hold no tokens; nothing to shard")
    if train.sequences == 0:
        what = (
            f"--valid-fraction {config.valid_fraction}"
            if config.valid_docs is None
            else f"--valid-docs {config.valid_docs}"
        )
        raise UsageError(
            f"{what} put all {counts['documents']:,} documents in the valid split, leaving train empty; "
            "hold out fewer documents"
        )
    sequences = train.sequences + valid.sequences
    tokens = train.tokens + valid.tokens
    length_counts = train.length_counts + valid.length_counts
    edges = np.linspace(0, config.max_seq_len, 9).round().astype(np.int64)
    csum = np.concatenate([[0], np.cumsum(length_counts)])
    hist = (csum[edges[1:] + 1] - csum[edges[:-1] + 1]).tolist()  # lengths in (lo, hi]
    itemsize = dtype.itemsize
    stats = {
        "documents": counts["documents"],
        "sentences": counts["sentences"],
        "sentences_cut": counts["sentences_cut"],
        "input_tokens": counts["input_tokens"],
        "sequences": sequences,
        "tokens": tokens,  # [CLS] and [SEP] included
        "mean_length": tokens / sequences,
        "fill_rate": tokens / (sequences * config.max_seq_len),
        "length_histogram": {"edges": edges.tolist(), "counts": hist},
        "token_bytes": tokens * itemsize,
        "files": len(rows),
        "splits": {
            s: {"documents": k.documents, "sequences": k.sequences, "tokens": k.tokens}
            for s, k in sinks.items()
        },
        "vocab_size": vocab_size,
    }
    return stats, rows


def _shard_batch(
    batch: pa.RecordBatch,
    config: ShardConfig,
    rule: _SplitRule,
    cls_id: int,
    sep_id: int,
    dtype: np.dtype,
    sinks: dict[str, _SplitSink],
    counts: dict[str, int],
) -> None:
    """Pack, frame and split one record batch of documents."""
    doc_offsets, values = _list_parts(batch.column(0))
    sent_offsets, sent_values = _list_parts(batch.column(1))
    n_docs = doc_offsets.size - 1
    if n_docs == 0:
        return
    o0 = doc_offsets[0]
    tokens = np.asarray(values[o0 : doc_offsets[-1]], dtype=dtype)
    rel_docs = doc_offsets - o0
    # sentence ends are per document: shift them to the batch's token stream
    n_sent = np.diff(sent_offsets)
    sent_ends = sent_values[sent_offsets[0] : sent_offsets[-1]].astype(np.int64)
    sent_ends += np.repeat(rel_docs[:-1], n_sent)
    if sent_ends.size and (np.any(sent_ends > np.repeat(rel_docs[1:], n_sent))):
        raise ArtifactError("a tokenize artifact has sentence ends past its document's end; re-create it")
    block_ends, n_cut = pack_blocks(rel_docs, sent_ends, config.max_block)
    block_starts = np.concatenate([[0], block_ends[:-1]]).astype(np.int64)
    block_doc = np.searchsorted(rel_docs, block_starts, side="right") - 1

    doc_index = np.arange(counts["documents"], counts["documents"] + n_docs, dtype=np.int64)
    valid_doc = rule.valid(document_keys(values, doc_offsets, config.seed), doc_index)
    counts["documents"] += n_docs
    counts["sentences"] += int(n_sent.sum())
    counts["sentences_cut"] += n_cut
    counts["input_tokens"] += int(tokens.size)
    has_tokens = np.diff(rel_docs) > 0
    sinks["valid"].documents += int(np.count_nonzero(valid_doc & has_tokens))
    sinks["train"].documents += int(np.count_nonzero(~valid_doc & has_tokens))

    seq_values, seq_lengths = frame(tokens, block_starts, block_ends, cls_id, sep_id)
    seq_docs = doc_index[block_doc]
    seq_valid = valid_doc[block_doc]
    if not seq_valid.any():
        sinks["train"].add(seq_values, seq_lengths, seq_docs)
        return
    token_valid = np.repeat(seq_valid, seq_lengths)
    sinks["valid"].add(seq_values[token_valid], seq_lengths[seq_valid], seq_docs[seq_valid])
    sinks["train"].add(seq_values[~token_valid], seq_lengths[~seq_valid], seq_docs[~seq_valid])


__all__ = [
    "KIND",
    "ShardConfig",
    "ShardResult",
    "document_keys",
    "fraction_threshold",
    "frame",
    "pack_blocks",
    "pack_document",
    "resolve_tokenized",
    "shard",
]
