"""Corpus tables: Parquet files, Arrow IPC files and streams, `datasets` `save_to_disk` directories.

One row is one document, its text in one string column (`--text-field`, default `text`). A Parquet file is
read one row group at a time and an Arrow file one record batch at a time, only the text column, so memory
stays bounded by a row group whatever the file's size. The bytes pyarrow reads are hashed as they are read
(`VerifiedFile`), as text files are, and checked against the hash the run's fingerprint was made from.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from spanbert_cli.errors import DataError, UsageError, error_code, io_failure
from spanbert_cli.text.corpus import Document, InputFile, _Decoder, changed_while_read

_BATCH_ROWS = 4096  # rows turned into Python strings at a time (a row group may hold millions)
_AHEAD_LIMIT = 64 << 20  # bytes read ahead of the hashed prefix kept until hashed (the footer, in practice)
_HASH_CHUNK = 1 << 20
_ARROW_FILE_MAGIC = b"ARROW1"
_DATASET_STATE = "state.json"  # what `datasets.Dataset.save_to_disk` writes beside its .arrow files
_DATASET_DICT = "dataset_dict.json"  # ... and `DatasetDict.save_to_disk` above one directory per split


# --------------------------------------------------------------------------------------------------
# `datasets` directories


class DatasetDirs:
    """The `datasets` `save_to_disk` directories met while walking `root`.

    A Dataset directory (its `state.json` lists its .arrow files) is read as the files it lists, in its
    order; of a DatasetDict directory (`dataset_dict.json`) only the `split` subdirectory is read. Their
    JSON files, caches (`cache-*.arrow`) and other splits are skipped without a note: they are not text.
    """

    def __init__(self, root: Path, split: str):
        self.root, self.split = root, split
        self._listings: dict[Path, list[Path] | None] = {}
        self._splits: dict[Path, list[str] | None] = {}
        self._emitted: set[Path] = set()

    def files(self, q: Path) -> list[Path] | None:
        """The data files of the Dataset directory `q` lies in, the first time one of its files is met."""
        d = q.parent
        if self._other_split(q) or d in self._emitted or (listing := self._listing(d)) is None:
            return None
        self._emitted.add(d)
        return listing

    def owns(self, q: Path) -> bool:
        """Whether `q` belongs to a `datasets` directory (read through `files`, or not at all)."""
        return self._other_split(q) or self._listing(q.parent) is not None

    def _listing(self, d: Path) -> list[Path] | None:
        if d not in self._listings:
            self._listings[d] = _dataset_listing(d)
        return self._listings[d]

    def _other_split(self, q: Path) -> bool:
        """Whether `q` lies in a DatasetDict directory outside the split asked for."""
        for a in q.parents:
            if a not in self._splits:
                self._splits[a] = _dict_splits(a)
            splits = self._splits[a]
            if splits is not None:
                if self.split not in splits:
                    raise UsageError(
                        f"{a}: this DatasetDict has no split {self.split!r} (it has {', '.join(splits)}); "
                        "pass --split"
                    )
                return not q.is_relative_to(a / self.split)
            if a == self.root:
                return False
        return False


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # not a `datasets` file: the directory is walked as any other


def _dataset_listing(d: Path) -> list[Path] | None:
    """The .arrow files a `save_to_disk` directory's state.json lists (None: not such a directory)."""
    state_path = d / _DATASET_STATE
    if not state_path.is_file():
        return None
    state = _read_json(state_path)
    entries = state.get("_data_files") if isinstance(state, dict) else None
    if not isinstance(entries, list) or not entries:
        return None
    files = []
    for e in entries:
        name = e.get("filename") if isinstance(e, dict) else None
        if not isinstance(name, str) or Path(name).name != name:
            raise DataError(f"{state_path}: _data_files holds {e!r}, not a file name; re-save the dataset")
        if not (d / name).is_file():
            raise DataError(f"{state_path}: lists {name}, which is missing; re-save or re-copy the dataset")
        files.append(d / name)
    return files


def _dict_splits(d: Path) -> list[str] | None:
    info = _read_json(d / _DATASET_DICT) if (d / _DATASET_DICT).is_file() else None
    splits = info.get("splits") if isinstance(info, dict) else None
    if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
        return None
    return splits


# --------------------------------------------------------------------------------------------------
# reading while hashing


class VerifiedFile(io.RawIOBase):
    """A read-only file for pyarrow that hashes each byte once, in file order, as pyarrow reads it.

    pyarrow opens a Parquet or Arrow file by reading its footer (or a stream's schema), then reads the
    parts it needs in increasing order. What it reads while opening (until `opened()`) is kept, unhashed,
    until the hashed prefix reaches it, and every later read that overlaps it must agree with it: the
    footer's read may cover data that is read again. A gap (columns or row groups not read) is hashed from
    the disk. `finish` hashes the rest and checks the whole against `expected` (None: nothing is hashed).
    """

    def __init__(self, path: Path, expected: str | None):
        self._fh = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by close())
        self._fd = self._fh.fileno()
        self._end = os.fstat(self._fd).st_size
        self._pos = 0
        self._expected = expected
        self._digest = hashlib.sha256()
        self._hashed = 0  # bytes [0, _hashed) are in the digest
        self._kept: list[tuple[int, bytes]] = []  # (offset, bytes) read while opening
        self._opening = True
        self.changed = False  # two reads of the same bytes disagreed

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._end}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = max(0, self._end - self._pos)
        data = os.pread(self._fd, n, self._pos)
        if self._expected is not None:
            self._account(self._pos, data)
        self._pos += len(data)
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._fh.close()
        super().close()

    def opened(self) -> None:
        """pyarrow has read the footer or schema: from now on reads are hashed in order."""
        self._opening = False

    def finish(self, name: str) -> None:
        """Hash the bytes not read yet and check the whole file against the expected hash."""
        if self._expected is None:
            return
        self._advance(self._end)
        while chunk := os.pread(self._fd, _HASH_CHUNK, self._hashed):  # the file grew meanwhile
            self._take(chunk)
        if self.changed or self._digest.hexdigest() != self._expected:
            raise changed_while_read(name)

    def _account(self, start: int, data: bytes) -> None:
        end = start + len(data)
        for s, b in self._kept:
            lo, hi = max(s, start), min(s + len(b), end)
            if lo < hi and b[lo - s : hi - s] != data[lo - start : hi - start]:
                self.changed = True
        if self._opening and sum(len(b) for _, b in self._kept) + len(data) <= _AHEAD_LIMIT:
            self._kept.append((start, data))
            return
        if end <= self._hashed:
            return  # hashed already (pyarrow reads no data twice when it reads in order)
        self._advance(start)
        self._take(data[self._hashed - start :])

    def _advance(self, target: int) -> None:
        """Hash [_hashed, target): from the bytes kept where they cover it, else from the disk."""
        while self._hashed < target:
            here = self._hashed
            kept = next(((s, b) for s, b in self._kept if s <= here < s + len(b)), None)
            if kept is not None:
                s, b = kept
                self._take(b[here - s : target - s])
                continue
            upto = min([target, here + _HASH_CHUNK] + [s for s, _ in self._kept if s > here])
            chunk = os.pread(self._fd, upto - here, here)
            if not chunk:
                self.changed = True  # the file is shorter than it was
                return
            self._take(chunk)

    def _take(self, data: bytes) -> None:
        self._digest.update(data)
        self._hashed += len(data)


# --------------------------------------------------------------------------------------------------
# schemas and layout


def _open_error(f: InputFile, what: str, e: BaseException) -> Exception:
    """A file pyarrow cannot open as `what`: the disk's fault named as such, else the data's."""
    if error_code(e) is not None and (failure := io_failure(e, f.path, "reading")) is not None:
        return failure
    return DataError(
        f"{f.name}: not a readable {what} file ({_first_line(e)}); it may be truncated or not {what}: "
        "re-create or re-download it"
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


def _check_column(f: InputFile, schema: pa.Schema, text_field: str) -> None:
    if text_field not in schema.names:
        shown = ", ".join(schema.names[:12]) + (" …" if len(schema.names) > 12 else "")
        raise DataError(
            f"{f.name}: no column {text_field!r} (its columns: {shown or 'none'}); "
            "pass --text-field with the right name"
        )
    t = schema.field(text_field).type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or _is_string_view(t)):
        raise DataError(
            f"{f.name}: column {text_field!r} is {schema.field(text_field).type}, not a string; "
            "pass --text-field with a column of text"
        )


def inspect(files: Sequence[InputFile], text_field: str) -> list[InputFile]:
    """Check that each table has a string column `text_field` and record a Parquet file's row groups
    (for --part); other files are returned as they are. Reads only footers and schemas."""
    out = []
    for f in files:
        if f.table is not None and f.codec is not None:
            raise DataError(
                f"{f.name}: a {f.codec}-compressed {f.table} file is not read; decompress it first "
                "(Parquet and Arrow compress their own data)"
            )
        if f.table == "parquet":
            try:
                meta = pq.read_metadata(f.path)
                schema = meta.schema.to_arrow_schema()
            except (pa.ArrowException, OSError) as e:
                raise _open_error(f, "Parquet", e) from e
            _check_column(f, schema, text_field)
            sizes = tuple(
                sum(meta.row_group(g).column(c).total_compressed_size for c in range(meta.num_columns))
                for g in range(meta.num_row_groups)
            )
            out.append(replace(f, pieces=sizes))
        elif f.table == "arrow":
            try:
                with pa.OSFile(str(f.path)) as src:
                    schema = _open_arrow(src).schema
            except (pa.ArrowException, OSError) as e:
                raise _open_error(f, "Arrow IPC", e) from e
            _check_column(f, schema, text_field)
            out.append(f)
        else:
            out.append(f)
    return out


def _open_arrow(src: Any) -> Any:
    """An Arrow IPC file (random access, footer) or stream (what `datasets` writes), by its magic."""
    head = src.read(len(_ARROW_FILE_MAGIC))
    src.seek(0)
    return pa.ipc.open_file(src) if head == _ARROW_FILE_MAGIC else pa.ipc.open_stream(src)


# --------------------------------------------------------------------------------------------------
# documents


def iter_documents(f: InputFile, text_field: str, decoder: _Decoder) -> Iterator[Document]:
    """The documents of a table, one per row with text (`ordinal`: the row's index in the file)."""
    with VerifiedFile(f.path, f.sha256) as vf:
        if f.table == "parquet":
            yield from _parquet_documents(f, vf, text_field, decoder)
        else:
            yield from _arrow_documents(f, vf, text_field, decoder)
        vf.finish(f.name)


def _parquet_documents(
    f: InputFile, vf: VerifiedFile, text_field: str, decoder: _Decoder
) -> Iterator[Document]:
    try:
        pf = pq.ParquetFile(vf, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as e:
        raise _open_error(f, "Parquet", e) from e
    vf.opened()
    _check_column(f, pf.schema_arrow, text_field)
    meta = pf.metadata
    first_rows = [0]
    for g in range(meta.num_row_groups):
        first_rows.append(first_rows[-1] + meta.row_group(g).num_rows)
    groups = range(meta.num_row_groups) if f.row_groups is None else f.row_groups
    consumed = 0
    for g in groups:
        if g >= meta.num_row_groups:  # planned on another version of the file
            raise changed_while_read(f.name)
        where = f"row group {g}"
        row = first_rows[g]
        consumed += meta.row_group(g).total_compressed_size if not f.pieces else f.pieces[g]
        batches = pf.iter_batches(
            batch_size=_BATCH_ROWS, row_groups=[g], columns=[text_field], use_threads=False
        )
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except (pa.ArrowException, OSError) as e:
                raise _read_error(f, vf, where, "Parquet", e) from e
            for text in _cells(f, batch.column(0), decoder, where, row, text_field):
                if text is not None:
                    yield Document(text, row, consumed)
                row += 1
            if vf.changed:
                raise changed_while_read(f.name)


def _arrow_documents(
    f: InputFile, vf: VerifiedFile, text_field: str, decoder: _Decoder
) -> Iterator[Document]:
    try:
        reader = _open_arrow(vf)
    except (pa.ArrowException, OSError) as e:
        raise _open_error(f, "Arrow IPC", e) from e
    vf.opened()
    _check_column(f, reader.schema, text_field)
    index = reader.schema.get_field_index(text_field)
    if isinstance(reader, pa.ipc.RecordBatchFileReader):
        batches: Iterator[pa.RecordBatch] = (reader.get_batch(k) for k in range(reader.num_record_batches))
    else:
        batches = iter(reader)
    row = 0
    k = 0
    while True:
        where = f"record batch {k}"
        try:
            batch = next(batches)
        except StopIteration:
            break
        except (pa.ArrowException, OSError) as e:
            raise _read_error(f, vf, where, "Arrow IPC", e) from e
        for text in _cells(f, batch.column(index), decoder, where, row, text_field):
            if text is not None:
                yield Document(text, row, vf.tell())
            row += 1
        if vf.changed:
            raise changed_while_read(f.name)
        k += 1


def _read_error(f: InputFile, vf: VerifiedFile, where: str, what: str, e: BaseException) -> Exception:
    if vf.changed:
        return changed_while_read(f.name)
    if error_code(e) is not None and (failure := io_failure(e, f.path, "reading")) is not None:
        return failure
    return DataError(
        f"{f.name}: {where}: unreadable {what} data ({_first_line(e)}); re-create or re-download the file"
    )


def _cells(
    f: InputFile, column: pa.Array, decoder: _Decoder, where: str, first_row: int, text_field: str
) -> list[str | None]:
    """The column's texts, None for the rows that are only whitespace; a null is refused."""
    if column.null_count:
        row = first_row + next(i for i, v in enumerate(column.is_null().to_pylist()) if v)
        raise DataError(
            f"{f.name}: {where}, row {row}: {text_field!r} is null; drop or fill the rows without text"
        )
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    try:
        values = column.to_pylist()
    except UnicodeDecodeError:
        values = []
        for i, raw in enumerate(column.cast(_binary_of(column.type)).to_pylist()):
            try:
                values.append(decoder.decode_value(raw))
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{f.name}: {where}, row {first_row + i}: invalid UTF-8 at byte {e.start} of "
                    f"{text_field!r}; fix the data or pass --errors replace"
                ) from None
    return [v if v.strip() else None for v in values]


def _is_string_view(t: pa.DataType) -> bool:
    return bool(getattr(pa.types, "is_string_view", lambda _: False)(t))  # pyarrow >= 16


def _binary_of(t: pa.DataType) -> pa.DataType:
    if pa.types.is_large_string(t):
        return pa.large_binary()
    if _is_string_view(t):
        return pa.binary_view()
    return pa.binary()
