"""Arrow IPC stream files of bounded size, the on-disk format of tokenized documents and shards.

IPC *stream* files are what `datasets.Dataset.from_file` opens and what can be memory-mapped without
copying when uncompressed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa


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
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{self.prefix}-{len(self.files):05d}.arrow"
        self._name = path.relative_to(self.root).as_posix()
        self.files[self._name] = 0
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_stream(self._sink, self.schema, options=self.options)
        self._bytes = 0

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if self._writer is not None and self._bytes + batch.nbytes > self.max_bytes and self._bytes > 0:
            self._close_file()
        if self._writer is None:
            self._open()
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
