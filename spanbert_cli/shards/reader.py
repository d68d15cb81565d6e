"""Random access to the sequences of a shard artifact, by global index, through memory maps.

`ShardReader(artifact, split)` is what pretraining and mask-preview read::

    reader = ShardReader("artifacts/shards/corpus-512-0123456789ab")
    len(reader)          # sequences in the split
    reader[123]          # np.ndarray of ids, [CLS] … [SEP] included (a read-only view of the mapped file)

Nothing is loaded up front but the manifest: the row count of every file comes from it, and the position
of each record batch inside a file is found by walking that file's message headers the first time it is
touched (the bodies are not read). Batches hold `batch_rows` sequences each (the last of a split may hold
fewer), so sequence → (file, batch, row) is arithmetic. At most `max_open_files` files stay mapped and a
fixed number of decoded batches are cached, so resident memory does not grow with the data set.

The reader pickles without its maps (DataLoader workers reopen them lazily in their own process).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from spanbert_cli import artifacts
from spanbert_cli.errors import ArtifactError, DataError, UsageError
from spanbert_cli.shards.arrow_io import ARROW_READ_ERRORS, numpy_view, read_failure, schema_mismatch
from spanbert_cli.shards.pack import KIND, SPLITS, schema_for


class SequenceIndexError(DataError, IndexError):
    """An index outside the split (also an `IndexError`, so Python's sequence protocols work)."""


class _MappedFile:
    """One mapped shard file: the whole-file buffer and the byte offset of each record batch message."""

    def __init__(self, path: Path, batch_offsets: np.ndarray | None):
        self.map = pa.memory_map(str(path))
        self.buffer = self.map.read_buffer()
        if batch_offsets is None:
            batch_offsets = _scan_batches(self.buffer)
        self.batch_offsets = batch_offsets


def _scan_batches(buffer: pa.Buffer) -> np.ndarray:
    """Byte offsets of the record-batch messages of an IPC stream (headers only, no decoding)."""
    source = pa.BufferReader(buffer)
    reader = pa.ipc.MessageReader.open_stream(source)
    offsets = []
    while True:
        pos = source.tell()
        try:
            message = reader.read_next_message()
        except StopIteration:
            break
        if message.type == "record batch":
            offsets.append(pos)
    return np.asarray(offsets, dtype=np.int64)


class ShardReader:
    """Random access by global sequence index over the files of one split of a shard artifact."""

    def __init__(
        self,
        path_or_artifact: str | os.PathLike | artifacts.Artifact,
        split: str = "train",
        *,
        max_open_files: int = 8,
        cached_batches: int | None = None,
    ):
        if split not in SPLITS:
            raise UsageError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if isinstance(path_or_artifact, artifacts.Artifact):
            artifact = path_or_artifact
            if artifact.kind != KIND:
                raise ArtifactError(f"{artifact.path}: is a {artifact.kind} artifact, expected {KIND}")
        else:
            artifact = artifacts.open_artifact(path_or_artifact, KIND)
        m = artifact.manifest
        self.path = artifact.path
        self.split = split
        self.max_open_files = max(1, int(max_open_files))
        if cached_batches is None:
            # A decoded batch of an uncompressed file is a few views of the map (a few hundred bytes of
            # objects); a decompressed one is ~1 MB of memory.
            cached_batches = 4 if m.params.get("compression") else 256
        self.cached_batches = max(1, int(cached_batches))
        try:
            tok = m.extra["tokenizer"]
            self.vocab_size = int(tok["vocab_size"])
            self.special_ids: dict[str, int] = {k: int(v) for k, v in tok["special_ids"].items()}
            self.tokenizer_sha256: str = tok["sha256"]
            self.max_seq_len = int(m.extra["max_seq_len"])
            self.batch_rows = int(m.extra["batch_rows"])
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"{self.path}: the manifest lacks {e}; re-create the artifact") from None
        # part-00000 … part-99999, then part-100000: by length first keeps the numeric order
        files = sorted(artifact.files_under(f"{split}/"), key=lambda f: (len(f.path), f.path))
        if any(f.rows is None for f in files):
            raise ArtifactError(f"{self.path}: the manifest has no row counts; re-create the artifact")
        self.files = [f.path for f in files]
        self._starts = np.zeros(len(files) + 1, dtype=np.int64)  # first global index of each file
        np.cumsum([f.rows for f in files], out=self._starts[1:])
        self._reset()

    # ---- pickling: drop the maps, keep the index --------------------------------------------------

    def _reset(self) -> None:
        self._open: OrderedDict[int, _MappedFile] = OrderedDict()
        self._batches: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()
        self._offsets: dict[int, np.ndarray] = {}  # batch offsets per file, kept once scanned
        self._schema: pa.Schema | None = None
        self._tokenizer: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for k in ("_open", "_batches", "_offsets", "_schema", "_tokenizer"):
            state.pop(k)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    # ---- sequence protocol -------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> np.ndarray:
        """The ids of sequence `index` ([CLS] … [SEP]); a read-only view when the shards are uncompressed."""
        return self._locate(index)[0]

    def document(self, index: int) -> int:
        """The global document index (across the input tokenize artifacts) of sequence `index`."""
        return self._locate(index)[1]

    def __iter__(self) -> Iterator[np.ndarray]:
        """All sequences in order, one file and one batch at a time."""
        for rel in self.files:
            path = self.path / rel
            read = 0
            try:
                with pa.memory_map(str(path)) as source:
                    stream = pa.ipc.open_stream(source)
                    self._check_schema(path, stream.schema)
                    for batch in stream:
                        offsets, values, _ = _columns(batch)
                        for i in range(batch.num_rows):
                            yield values[offsets[i] : offsets[i + 1]]
                        read += 1
            except ARROW_READ_ERRORS as e:
                raise read_failure(path, e, f"record batch {read}") from None

    def validate(self) -> None:
        """Open every file of the split: schema, record batches and their number checked (message headers
        only, no batch is decoded). A re-hashed manifest can vouch for a damaged or foreign file."""
        for f in range(len(self.files)):
            self._file(f)

    def _locate(self, index: int) -> tuple[np.ndarray, int]:
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            where = "past the end of" if int(index) >= 0 else "before the start of"
            raise SequenceIndexError(
                f"index {int(index)} is {where} the {self.split} split ({n:,} sequences)"
            )
        f = int(np.searchsorted(self._starts, i, side="right")) - 1
        local = i - int(self._starts[f])
        b, row = divmod(local, self.batch_rows)
        offsets, values, docs = self._batch(f, b)
        return values[offsets[row] : offsets[row + 1]], int(docs[row])

    # ---- files and batches ---------------------------------------------------------------------------

    def _file(self, f: int) -> _MappedFile:
        mf = self._open.get(f)
        if mf is not None:
            self._open.move_to_end(f)
            return mf
        path = self.path / self.files[f]
        try:
            mf = _MappedFile(path, self._offsets.get(f))
            schema = pa.ipc.open_stream(mf.buffer).schema
        except ARROW_READ_ERRORS as e:
            raise read_failure(path, e) from None
        self._check_schema(path, schema)
        expected = -(-(int(self._starts[f + 1]) - int(self._starts[f])) // self.batch_rows)
        if len(mf.batch_offsets) != expected:
            raise ArtifactError(
                f"{path}: {len(mf.batch_offsets)} record batches where {expected} were expected; "
                "re-create the artifact"
            )
        if self._schema is None:
            self._schema = schema
        self._offsets[f] = mf.batch_offsets
        self._open[f] = mf
        while len(self._open) > self.max_open_files:
            self._open.popitem(last=False)  # the map closes when its last view is gone
        return mf

    def _batch(self, f: int, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        key = (f, b)
        hit = self._batches.get(key)
        if hit is not None:
            self._batches.move_to_end(key)
            return hit
        mf = self._file(f)
        try:
            message = pa.ipc.read_message(mf.buffer.slice(int(mf.batch_offsets[b])))
            cols = _columns(pa.ipc.read_record_batch(message, self._schema))
        except ARROW_READ_ERRORS as e:
            raise read_failure(self.path / self.files[f], e, f"record batch {b}") from None
        self._batches[key] = cols
        while len(self._batches) > self.cached_batches:
            self._batches.popitem(last=False)
        return cols

    def _check_schema(self, path: Path, schema: pa.Schema) -> None:
        # The columns are read by position (input_ids, doc) and their buffers viewed as the types written.
        problem = schema_mismatch(schema, list(schema_for(self.vocab_size)), in_order=True)
        if problem:
            raise ArtifactError(f"{path}: {problem}; re-create the artifact")

    # ---- metadata ------------------------------------------------------------------------------------

    @property
    def cls_id(self) -> int:
        return self.special_ids["cls"]

    @property
    def sep_id(self) -> int:
        return self.special_ids["sep"]

    @property
    def tokenizer(self) -> Any:
        """The `tokenizers.Tokenizer` the sequences were made with (stored in the artifact)."""
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            path = self.path / "tokenizer.json"
            if not path.is_file():
                raise ArtifactError(f"{self.path}: no tokenizer.json in the artifact")
            self._tokenizer = Tokenizer.from_file(str(path))
        return self._tokenizer

    def __repr__(self) -> str:
        return f"ShardReader({str(self.path)!r}, split={self.split!r}, sequences={len(self)})"


def _columns(batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets, values, docs) of a shard record batch; values index directly with offsets."""
    ids = batch.column(0)
    return numpy_view(ids.offsets), numpy_view(ids.values), numpy_view(batch.column(1))
