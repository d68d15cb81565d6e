"""Arrow IPC stream files of bounded size, the on-disk format of tokenized documents and shards.

IPC *stream* files are what `datasets.Dataset.from_file` opens and what can be memory-mapped without
copying when uncompressed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from spanbert_cli.errors import ArtifactError, SpanbertError, io_failure, naming_io_errors


def id_type(vocab_size: int) -> pa.DataType:
    """The narrowest unsigned integer type that holds every token id."""
    return pa.uint16() if vocab_size <= 1 << 16 else pa.uint32()


NUMPY_TYPES = {pa.uint16(): np.uint16, pa.uint32(): np.uint32, pa.int32(): np.int32, pa.int64(): np.int64}


def numpy_view(arr: pa.Array) -> np.ndarray:
    """A zero-copy numpy view of a null-free integer array (`Array.to_numpy` would import pandas)."""
    dtype = np.dtype(NUMPY_TYPES[arr.type])
    buf = arr.buffers()[1]
    return np.frombuffer(buf, dtype=dtype, count=len(arr), offset=arr.offset * dtype.itemsize)


def arrow_array(values: np.ndarray, type_: pa.DataType) -> pa.Array:
    """A zero-copy Arrow array over a numpy integer array (`pa.array` would import pandas)."""
    values = np.ascontiguousarray(values, dtype=NUMPY_TYPES[type_])
    return pa.Array.from_buffers(type_, values.size, [None, pa.py_buffer(values)])


def string_array(values: list[str]) -> pa.StringArray:
    """A string array built from its buffers (`pa.array` would import pandas, half a second)."""
    data = [v.encode() for v in values]
    offsets = np.zeros(len(data) + 1, dtype=np.int32)
    np.cumsum([len(b) for b in data], out=offsets[1:])
    return pa.StringArray.from_buffers(len(data), pa.py_buffer(offsets), pa.py_buffer(b"".join(data)))


def list_array(values: np.ndarray, lengths: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    """A list column from concatenated values and per-row lengths, without per-row Python work."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] < 1 << 31:
        return pa.ListArray.from_arrays(arrow_array(offsets, pa.int32()), arrow_array(values, value_type))
    return pa.LargeListArray.from_arrays(arrow_array(offsets, pa.int64()), arrow_array(values, value_type))


class RollingStreamWriter:
    """Write record batches into `prefix-00000.arrow`, `prefix-00001.arrow`, … of at most `max_bytes` each.

    A file is closed before a batch would take it past `max_bytes` (a single batch larger than the limit
    gets a file of its own). `close()` returns each file's relative name and row count.
    """

    def __init__(
        self,
        directory: Path,
        schema: pa.Schema,
        max_bytes: int,
        prefix: str = "part",
        compression: str | None = None,
        root: Path | None = None,
    ):
        self.directory = directory
        self.schema = schema
        self.max_bytes = max_bytes
        self.prefix = prefix
        self.options = pa.ipc.IpcWriteOptions(compression=compression)
        self.root = root or directory
        self.files: dict[str, int] = {}
        self._sink: pa.OSFile | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._name = ""
        self._bytes = 0

    def _open(self) -> None:
        path = self.directory / f"{self.prefix}-{len(self.files):05d}.arrow"
        self._name = path.relative_to(self.root).as_posix()
        self.files[self._name] = 0
        with naming_io_errors(path):
            self.directory.mkdir(parents=True, exist_ok=True)
            self._sink = pa.OSFile(str(path), "wb")
            self._writer = pa.ipc.new_stream(self._sink, self.schema, options=self.options)
        self._bytes = 0

    @property
    def _path(self) -> Path:
        return self.root / self._name

    def _close_file(self) -> None:
        # Forgotten before closing: a close that fails (disk full) is not retried by the next close.
        writer, sink = self._writer, self._sink
        self._writer = self._sink = None
        if writer is None:
            return
        with naming_io_errors(self._path):
            try:
                writer.close()
            finally:
                sink.close()

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if self._writer is not None and self._bytes + batch.nbytes > self.max_bytes and self._bytes > 0:
            self._close_file()
        if self._writer is None:
            self._open()
        with naming_io_errors(self._path):
            self._writer.write_batch(batch)
            self._bytes = self._sink.tell()
        self.files[self._name] += batch.num_rows

    def close(self) -> dict[str, int]:
        self._close_file()
        return dict(self.files)

    def __enter__(self) -> RollingStreamWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close_file()


def schema_mismatch(schema: pa.Schema, expected: Sequence[pa.Field], *, in_order: bool = False) -> str | None:
    """What keeps `schema` from holding the `expected` columns with their types (the first columns, in
    that order, with `in_order`), or None. A list column matches by its value type (either offset width)."""
    for i, want in enumerate(expected):
        index = schema.get_field_index(want.name)
        if index < 0:
            return f"has no column {want.name}"
        if in_order and index != i:
            return f"has column {want.name} in position {index + 1}, expected {i + 1}"
        got = schema.field(index).type
        if not _same_type(got, want.type):
            return f"column {want.name} is {got}, expected {want.type}"
    return None


def _same_type(got: pa.DataType, want: pa.DataType) -> bool:
    if pa.types.is_list(want) or pa.types.is_large_list(want):
        is_list = pa.types.is_list(got) or pa.types.is_large_list(got)
        return is_list and got.value_type.equals(want.value_type)
    return got.equals(want)


ARROW_READ_ERRORS = (OSError, pa.ArrowInvalid, pa.ArrowTypeError)  # what pyarrow raises on a damaged file


def read_failure(path: Path, e: Exception, where: str = "") -> SpanbertError:
    """One line for a failure reading an Arrow file of an artifact: the system's (permissions, I/O), or
    the file's own (truncated, not Arrow), at `where` (e.g. "record batch 3")."""
    if isinstance(e, OSError) and e.errno:  # pyarrow sets errno only when the system refused
        return io_failure(e, path, "reading") or ArtifactError(f"{path}: {e}")
    detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    at = f"{where}: " if where else ""
    return ArtifactError(f"{path}: damaged Arrow file ({at}{detail}); re-create the artifact")
