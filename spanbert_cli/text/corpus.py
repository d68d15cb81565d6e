"""Reading a raw corpus: input resolution, formats, documents and sentences.

Inputs are files, directories (recursive, sorted), globs or `-` for stdin; formats are plain text and
JSONL, either one compressed with zstd, gzip, bzip2 or xz, and the tables of `tables.py` (Parquet, Arrow
IPC, `datasets` `save_to_disk` directories). Everything streams: memory stays bounded by the largest
document (a table's: by its row group).
"""

from __future__ import annotations

import bz2
import codecs
import glob
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import sys
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from spanbert_cli.errors import DataError, UsageError, io_failure

DOC_MODES = ("blank-line", "file", "line")
ERROR_MODES = ("strict", "replace")
# Compressed text and JSONL: suffix → codec (the name said in messages).
CODECS = {".zst": "zstd", ".gz": "gzip", ".bz2": "bzip2", ".xz": "xz"}
TEXT_SUFFIXES = (".txt", ".text", ".jsonl")
TABLE_SUFFIXES = {".parquet": "parquet", ".arrow": "arrow"}
# In a directory, only files that look like corpus text are taken (the first six as before compression
# beyond zstd and tables were read: their order is kept for the message that lists them).
CORPUS_SUFFIXES = (
    ".txt",
    ".text",
    ".jsonl",
    ".txt.zst",
    ".jsonl.zst",
    ".text.zst",
    *(base + c for c in CODECS if c != ".zst" for base in TEXT_SUFFIXES),
    *TABLE_SUFFIXES,
)
_LOOKED_FOR = ".txt, .text, .jsonl (plain or .zst, .gz, .bz2, .xz), .parquet, .arrow"
# Files every corpus folder carries beside its text: skipped in a directory without the "skipped" note.
# (A `.txt` among them, such as README.txt, is still read as text, as it always was.)
_COMPANION = re.compile(r"(readme|licen[cs]e|copying|notice|authors|citation|changelog)([-_.].*)?", re.I)
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class InputFile:
    """One input file: where it is, and the name it is known by (relative to the argument that named it)."""

    path: Path
    name: str
    size: int
    sha256: str | None = None  # when set, reading checks the bytes read against it
    pieces: tuple[int, ...] = ()  # a Parquet file's row groups, by their bytes: what --part may split
    row_groups: tuple[int, ...] | None = None  # the row groups to read (None: all)

    @property
    def codec(self) -> str | None:
        """The compression of a text or JSONL file, from its name (None: not compressed)."""
        for suffix, codec in CODECS.items():
            if self.name.endswith(suffix) or self.path.name.endswith(suffix):
                return codec
        return None

    @property
    def compressed(self) -> bool:
        return self.codec is not None

    @property
    def base_name(self) -> str:
        """The name without its compression suffix."""
        for suffix in CODECS:
            if self.name.endswith(suffix):
                return self.name[: -len(suffix)]
        return self.name

    @property
    def jsonl(self) -> bool:
        return self.base_name.endswith((".jsonl", ".ndjson"))

    @property
    def table(self) -> str | None:
        """The kind of table, "parquet" or "arrow" (one document per row); None for text and JSONL."""
        return next(
            (kind for suffix, kind in TABLE_SUFFIXES.items() if self.base_name.endswith(suffix)), None
        )


@dataclass
class InputSet:
    files: list[InputFile]
    skipped: list[str] = field(default_factory=list)  # files in directories that are not corpus text
    _spool: Path | None = None  # stdin copied to a temporary file, removed by close()

    def close(self) -> None:
        if self._spool is not None:
            shutil.rmtree(self._spool.parent, ignore_errors=True)
            self._spool = None

    def __enter__(self) -> InputSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def resolve_inputs(
    specs: Sequence[str], stdin: io.BufferedReader | None = None, split: str = "train"
) -> InputSet:
    """Expand the command-line inputs into a sorted, de-duplicated list of files (`split`: the split a
    `datasets` DatasetDict directory is read from)."""
    from spanbert_cli.text import tables  # pyarrow only once inputs are read: `--help` stays fast

    if not specs:
        raise UsageError(
            "no corpus given; name files, directories, globs or - for stdin, or pass --hf-dataset"
        )
    files: list[InputFile] = []
    skipped: list[str] = []
    spool: Path | None = None
    for spec in specs:
        if spec == "-":
            if spool is not None:
                raise UsageError("- (stdin) given twice")
            spool = Path(tempfile.mkdtemp(prefix="spanbert-stdin-")) / "stdin.txt"
            with open(spool, "wb") as f:
                shutil.copyfileobj(stdin or sys.stdin.buffer, f)
            files.append(InputFile(spool, "-", spool.stat().st_size))
            continue
        p = Path(spec)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and not _hidden(q.relative_to(p)))
            datasets = tables.DatasetDirs(p, split)
            artifact_dirs: dict[Path, bool] = {}
            for q in found:
                rel = q.relative_to(p).as_posix()
                if (listed := datasets.files(q)) is not None:
                    # A `datasets` directory: its data files in the order it lists them, nothing else.
                    files += [InputFile(d, d.relative_to(p).as_posix(), d.stat().st_size) for d in listed]
                elif datasets.owns(q) or _companion(q.name):
                    continue
                elif q.name.endswith(CORPUS_SUFFIXES) and not _artifact_arrow(q, p, artifact_dirs):
                    files.append(InputFile(q, rel, q.stat().st_size))
                else:
                    skipped.append(str(q))
        elif p.is_file():
            files.append(InputFile(p, p.name, p.stat().st_size))
        elif glob.has_magic(spec):
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True) if Path(m).is_file())
            if not matches:
                raise DataError(f"{spec}: the pattern matches no file")
            files.extend(InputFile(m, m.name, m.stat().st_size) for m in matches)
        else:
            raise DataError(f"{spec}: no such file or directory")
    seen: set[tuple[int, int]] = set()
    unique = []
    for f in files:
        st = f.path.stat()
        key = (st.st_dev, st.st_ino)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    if not unique:
        raise DataError(f"{' '.join(specs)}: no corpus files found (looked for {_LOOKED_FOR})")
    return InputSet(unique, skipped, spool)


def _artifact_arrow(q: Path, root: Path, memo: dict[Path, bool]) -> bool:
    """An .arrow file inside a spanbert artifact (its manifest.json beside or above it): spanbert's own
    output, not a corpus table, skipped as it was before tables were read."""
    if not q.name.endswith(".arrow"):
        return False
    for d in q.parents:
        if d not in memo:
            memo[d] = (d / "manifest.json").is_file()
        if memo[d]:
            return True
        if d == root:
            return False
    return False


def _companion(name: str) -> bool:
    """A README, licence and the like beside the text: skipped without a note."""
    return bool(_COMPANION.fullmatch(name)) and not name.endswith(CORPUS_SUFFIXES)


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def parse_part(part: str | None) -> tuple[int, int] | None:
    """`i/N` (1-based) → (i, N)."""
    if part is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", part)
    if not m:
        raise UsageError(f"--part {part!r}: expected i/N, e.g. 1/4")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= i <= n:
        raise UsageError(f"--part {part}: i must be between 1 and N (got i={i}, N={n})")
    return i, n


def select_part(files: Sequence[InputFile], part: tuple[int, int] | None) -> list[InputFile]:
    """A deterministic 1/N of the files, balanced by size, each part keeping the sorted order. A Parquet
    file of several row groups is split by row group (the chosen ones in `row_groups`)."""
    if part is None:
        return list(files)
    i, n = part
    # Units: (file index, row group or -1 for a whole file, bytes).
    units = [
        (k, g, size)
        for k, f in enumerate(files)
        for g, size in (enumerate(f.pieces) if len(f.pieces) > 1 else [(-1, f.size)])
    ]
    loads = [0] * n
    owned: dict[int, list[int]] = {}
    # Largest first onto the lightest part: a greedy balance that depends only on names and sizes (for
    # text files, the same order and parts as before row groups were split).
    for k, g, size in sorted(units, key=lambda u: (-u[2], files[u[0]].name, u[1])):
        target = min(range(n), key=lambda j: (loads[j], j))
        loads[target] += size
        if target == i - 1:
            owned.setdefault(k, []).append(g)
    chosen = []
    for k, f in enumerate(files):
        groups = sorted(owned.get(k, []))
        if not groups:
            continue
        whole = groups == [-1] or len(groups) == len(f.pieces)
        chosen.append(f if whole else replace(f, row_groups=tuple(groups)))
    if not chosen:
        raise UsageError(f"--part {i}/{n} selects no input file: there are only {len(files)} files")
    return chosen


def part_bytes(f: InputFile) -> int:
    """The bytes of `f` a part reads (its row groups' when it holds only some)."""
    return f.size if f.row_groups is None else sum(f.pieces[g] for g in f.row_groups)


# --------------------------------------------------------------------------------------------------
# decoding


class _Decoder:
    """Incremental UTF-8 decoding that reports the byte offset of invalid input and counts replacements."""

    def __init__(self, name: str, errors: str):
        self.name = name
        self.errors = errors
        self.replacements = 0
        self.offset = 0  # bytes consumed before the current chunk
        handler = "strict" if errors == "strict" else "spanbert-count"
        self._dec = codecs.getincrementaldecoder("utf-8")(errors=handler)

    def decode(self, chunk: bytes, final: bool = False) -> str:
        if b"\x00" in chunk:
            at = self.offset + chunk.index(b"\x00")
            raise DataError(
                f"{self.name}: NUL byte at byte offset {at}; this looks like a binary file, not text"
            )
        pending = len(self._dec.getstate()[0])
        try:
            text = self._dec.decode(chunk, final)
        except UnicodeDecodeError as e:
            # e.start counts from the bytes still pending from the previous chunk.
            at = self.offset - pending + e.start
            raise DataError(
                f"{self.name}: invalid UTF-8 at byte offset {at}; convert the file to UTF-8 or pass --errors replace"
            ) from None
        self.offset += len(chunk)
        self.replacements += _COUNT.pop()
        return text

    def decode_value(self, data: bytes) -> str:
        """One whole value (a table's cell); under strict, the UnicodeDecodeError is the caller's to place."""
        if self.errors == "strict":
            return data.decode("utf-8")
        text = data.decode("utf-8", errors="spanbert-count")
        self.replacements += _COUNT.pop()
        return text


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def pop(self) -> int:
        n, self.n = self.n, 0
        return n


_COUNT = _Counter()


def _count_replace(e: UnicodeError) -> tuple[str, int]:
    assert isinstance(e, UnicodeDecodeError)
    _COUNT.n += 1
    return "\ufffd", e.end


codecs.register_error("spanbert-count", _count_replace)


def _raw_chunks(f: InputFile) -> Iterator[tuple[bytes, int]]:
    """Yield (decompressed bytes, input bytes consumed so far); at the end, check the bytes read against
    `f.sha256` (the hash the artifact's fingerprint was made from)."""
    with open(f.path, "rb") as fh:
        if f.sha256 is None:
            yield from _decoded_chunks(f, fh)
            return
        digest = hashlib.sha256()
        hashed = _HashingReader(fh, digest)
        yield from _decoded_chunks(f, hashed)
        while rest := hashed.read(_READ_CHUNK):  # bytes after the end of a compressed stream
            del rest
        if digest.hexdigest() != f.sha256:
            raise changed_while_read(f.name)


def changed_while_read(name: str) -> DataError:
    return DataError(
        f"{name}: the file changed while spanbert read it (its content no longer matches the hash "
        "taken when the run started); nothing was written: re-run once the file is stable"
    )


class _HashingReader:
    """A binary file that hashes what is read from it."""

    def __init__(self, fh: io.BufferedReader, digest: Any):
        self._fh, self._digest = fh, digest

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self._digest.update(data)
        return data

    def tell(self) -> int:
        return self._fh.tell()


class _StreamError(Exception):
    """A compressed stream that cannot be read; `iter_lines` names the line where it stopped."""

    def __init__(self, codec: str, detail: str, truncated: bool):
        super().__init__(detail)
        self.codec, self.detail, self.truncated = codec, detail, truncated


# The standard library's streaming readers (multi-member gzip, multi-stream bzip2 and xz included).
_STDLIB_READERS: dict[str, Any] = {
    "gzip": lambda fh: gzip.GzipFile(fileobj=fh, mode="rb"),
    "bzip2": bz2.BZ2File,
    "xz": lzma.LZMAFile,
}


def _decoded_chunks(f: InputFile, fh: Any) -> Iterator[tuple[bytes, int]]:
    codec = f.codec
    if codec is None:
        while chunk := fh.read(_READ_CHUNK):
            yield chunk, fh.tell()
        return
    if codec == "zstd":
        yield from _zstd_chunks(fh)
        return
    stream = _STDLIB_READERS[codec](fh)
    while True:
        try:
            # read1: at most this much (memory stays bounded on any ratio), and output as soon as one
            # block decompresses, so that a fault is placed after the lines before it.
            out = stream.read1(_READ_CHUNK)
        except EOFError as e:
            raise _StreamError(codec, str(e), truncated=True) from None
        except (OSError, zlib.error, lzma.LZMAError) as e:
            if isinstance(e, OSError) and e.errno and (failure := io_failure(e, f.path, "reading")):
                raise failure from e  # the disk, not the data
            raise _StreamError(codec, str(e), truncated=False) from None
        if not out:
            return
        yield out, fh.tell()


def _zstd_chunks(fh: Any) -> Iterator[tuple[bytes, int]]:
    import zstandard  # only for .zst inputs

    dctx = zstandard.ZstdDecompressor()
    dobj = dctx.decompressobj()
    in_frame = False
    while raw := fh.read(_READ_CHUNK):
        while raw:
            try:
                out = dobj.decompress(raw)
            except zstandard.ZstdError as e:
                raise _StreamError("zstd", str(e), truncated=False) from None
            in_frame = not dobj.eof
            if out:
                yield out, fh.tell()
            # A file may hold several frames (e.g. from parallel compressors): continue with the next.
            raw = dobj.unused_data if dobj.eof else b""
            if dobj.eof:
                dobj = dctx.decompressobj()
    if in_frame:
        raise _StreamError("zstd", "the last frame is incomplete", truncated=True)


def iter_lines(f: InputFile, errors: str, decoder: _Decoder | None = None) -> Iterator[tuple[str, int]]:
    """Decoded lines of a file without their line end (\\n, \\r\\n), with the input bytes consumed."""
    dec = decoder or _Decoder(f.name, errors)
    tail = ""
    consumed = 0
    got_any = False
    lines_done = 0
    chunks = _raw_chunks(f)
    while True:
        try:
            chunk, consumed = next(chunks)
        except StopIteration:
            break
        except _StreamError as e:
            raise DataError(_stream_problem(f, e, lines_done)) from None
        got_any = True
        text = tail + dec.decode(chunk)
        lines = text.split("\n")
        tail = lines.pop()
        for line in lines:
            yield line.removesuffix("\r"), consumed
        lines_done += len(lines)
    text = tail + dec.decode(b"", final=True) if got_any else tail
    if f.compressed and got_any is False and f.size > 0:
        raise DataError(f"{f.name}: truncated or empty {f.codec} stream; re-create the file")
    if text:
        yield text.removesuffix("\r"), consumed


def _stream_problem(f: InputFile, e: _StreamError, lines_done: int) -> str:
    where = f"after line {lines_done}" if lines_done else "within the first line"
    if e.truncated:
        return f"{f.name}: truncated {e.codec} data: it ends {where} ({e.detail}); re-create or re-download the file"
    return f"{f.name}: corrupt {e.codec} data, found {where} ({e.detail}); re-create or re-download the file"


@dataclass
class Document:
    text: str
    ordinal: int  # the document's index within its file
    consumed: int  # input bytes read so far (for progress)


def iter_documents(
    f: InputFile,
    *,
    docs: str,
    text_field: str = "text",
    errors: str = "strict",
    decoder: _Decoder | None = None,
) -> Iterator[Document]:
    """The documents of one file. JSONL: one per record; a table: one per row (`ordinal`: the row's
    index in the file); text: per `docs` (blank-line, file or line)."""
    if f.table is not None:
        from spanbert_cli.text import tables

        yield from tables.iter_documents(f, text_field, decoder or _Decoder(f.name, errors))
        return
    ordinal = 0
    if f.jsonl:
        for lineno, (line, consumed) in enumerate(iter_lines(f, errors, decoder), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{f.name}:{lineno}: not valid JSON ({e.msg}); fix or remove the line"
                ) from None
            if not isinstance(record, dict) or text_field not in record:
                raise DataError(
                    f"{f.name}:{lineno}: record has no {text_field!r} field; pass --text-field with the right name"
                )
            text = record[text_field]
            if not isinstance(text, str):
                raise DataError(
                    f"{f.name}:{lineno}: field {text_field!r} is {type(text).__name__}, not a string"
                )
            if text.strip():
                yield Document(text, ordinal, consumed)
                ordinal += 1
        return
    if docs == "file":
        pairs = list(iter_lines(f, errors, decoder))
        text = "\n".join(line for line, _ in pairs)
        consumed = pairs[-1][1] if pairs else 0
        if text.strip():
            yield Document(text, 0, consumed)
        return
    if docs == "line":
        for line, consumed in iter_lines(f, errors, decoder):
            if line.strip():
                yield Document(line, ordinal, consumed)
                ordinal += 1
        return
    buf: list[str] = []
    consumed = 0
    for line, consumed in iter_lines(f, errors, decoder):
        if line.strip():
            buf.append(line)
        elif buf:
            yield Document("\n".join(buf), ordinal, consumed)
            ordinal += 1
            buf = []
    if buf:
        yield Document("\n".join(buf), ordinal, consumed)


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
