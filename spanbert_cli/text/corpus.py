"""Reading a raw corpus: input resolution, formats, documents and sentences.

Inputs are files, directories (recursive, sorted), globs or `-` for stdin; formats are plain text, JSONL
and either one zstd-compressed. Everything streams: memory stays bounded by the largest document.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spanbert_cli.errors import DataError, UsageError

DOC_MODES = ("blank-line", "file", "line")
ERROR_MODES = ("strict", "replace")
# In a directory, only files that look like corpus text are taken (READMEs, licences etc. are skipped).
CORPUS_SUFFIXES = (".txt", ".text", ".jsonl", ".txt.zst", ".jsonl.zst", ".text.zst")
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class InputFile:
    """One input file: where it is, and the name it is known by (relative to the argument that named it)."""

    path: Path
    name: str
    size: int
    sha256: str | None = None  # when set, reading checks the bytes read against it

    @property
    def compressed(self) -> bool:
        return self.name.endswith(".zst") or self.path.name.endswith(".zst")

    @property
    def jsonl(self) -> bool:
        base = self.name[: -len(".zst")] if self.name.endswith(".zst") else self.name
        return base.endswith((".jsonl", ".ndjson"))


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


def resolve_inputs(specs: Sequence[str], stdin: io.BufferedReader | None = None) -> InputSet:
    """Expand the command-line inputs into a sorted, de-duplicated list of files."""
    if not specs:
        raise UsageError("no corpus given; name files, directories, globs or - for stdin")
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
            for q in found:
                rel = q.relative_to(p).as_posix()
                if q.name.endswith(CORPUS_SUFFIXES):
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
        raise DataError(f"{' '.join(specs)}: no corpus files found (looked for {', '.join(CORPUS_SUFFIXES)})")
    return InputSet(unique, skipped, spool)


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
    """A deterministic 1/N of the files, balanced by size, each part keeping the sorted order."""
    if part is None:
        return list(files)
    i, n = part
    loads = [0] * n
    owner: dict[int, int] = {}
    # Largest files first onto the lightest part: a greedy balance that depends only on names and sizes.
    for idx in sorted(range(len(files)), key=lambda k: (-files[k].size, files[k].name)):
        target = min(range(n), key=lambda j: (loads[j], j))
        owner[idx] = target
        loads[target] += files[idx].size
    chosen = [f for k, f in enumerate(files) if owner[k] == i - 1]
    if not chosen:
        raise UsageError(f"--part {i}/{n} selects no input file: there are only {len(files)} files")
    return chosen


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
            raise DataError(
                f"{f.name}: the file changed while spanbert read it (its content no longer matches the hash "
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


def _decoded_chunks(f: InputFile, fh: Any) -> Iterator[tuple[bytes, int]]:
    if not f.compressed:
        while chunk := fh.read(_READ_CHUNK):
            yield chunk, fh.tell()
        return
    import zstandard  # only for .zst inputs

    dctx = zstandard.ZstdDecompressor()
    dobj = dctx.decompressobj()
    in_frame = False
    while raw := fh.read(_READ_CHUNK):
        while raw:
            try:
                out = dobj.decompress(raw)
            except zstandard.ZstdError as e:
                raise DataError(
                    f"{f.name}: corrupt zstd data ({e}); re-create or re-download the file"
                ) from None
            in_frame = not dobj.eof
            if out:
                yield out, fh.tell()
            # A file may hold several frames (e.g. from parallel compressors): continue with the next.
            raw = dobj.unused_data if dobj.eof else b""
            if dobj.eof:
                dobj = dctx.decompressobj()
    if in_frame:
        raise DataError(f"{f.name}: truncated zstd data (the last frame is incomplete); re-create the file")


def iter_lines(f: InputFile, errors: str, decoder: _Decoder | None = None) -> Iterator[tuple[str, int]]:
    """Decoded lines of a file without their line end (\\n, \\r\\n), with the input bytes consumed."""
    dec = decoder or _Decoder(f.name, errors)
    tail = ""
    consumed = 0
    got_any = False
    for chunk, consumed in _raw_chunks(f):
        got_any = True
        text = tail + dec.decode(chunk)
        lines = text.split("\n")
        tail = lines.pop()
        for line in lines:
            yield line.removesuffix("\r"), consumed
    text = tail + dec.decode(b"", final=True) if got_any else tail
    if f.compressed and got_any is False and f.size > 0:
        raise DataError(f"{f.name}: truncated or empty zstd stream")
    if text:
        yield text.removesuffix("\r"), consumed


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
    """The documents of one file. JSONL: one per record; text: per `docs` (blank-line, file or line)."""
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
