"""The tokenize stage: a raw corpus → WordPiece ids per document, with sentence boundaries, in Arrow.

Output artifact (`spanbert/tokenized`):

    tokenizer.json, vocab.txt          the tokenizer (trained on the corpus unless one was given)
    data/part-00000.arrow, …           Arrow IPC streams, one row per document:
        input_ids      list<uint16|uint32>   ids without special tokens
        sentence_ends  list<uint32>          token offset where each sentence ends (last = len)
        source         struct<file, doc>     the input file's name and the document's ordinal in it (a
                                             table's row index; hf:NAME[:CONFIG]/SPLIT for --hf-dataset)

Documents are read and grouped into chunks in the main process and encoded by `workers` processes;
chunks are cut by content alone and written in input order, so the output does not depend on the number
of workers.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from spanbert_cli import artifacts, kinds
from spanbert_cli.artifacts import locks
from spanbert_cli.errors import DataError, SpanbertError, UsageError, naming_io_errors
from spanbert_cli.options import option
from spanbert_cli.progress import NullReporter, Reporter
from spanbert_cli.shards.arrow_io import RollingStreamWriter, arrow_array, id_type, list_array, string_array
from spanbert_cli.text import corpus, hub, tables
from spanbert_cli.text.sentences import SentenceTable, sentence_ends, sentence_table
from spanbert_cli.text.wordpiece import (
    is_cased,
    load_tokenizer,
    special_ids,
    tokenizer_sha256,
    train_wordpiece,
    write_tokenizer_files,
)

KIND = kinds.TOKENIZED
SENTENCE_SPLITTER_VERSION = 2
_CHUNK_CHARS = 1 << 18  # documents are sent to workers in chunks of about this many characters
_CHUNK_DOCS = 4096


@dataclass(frozen=True)
class TokenizeConfig:
    """Parameters of the tokenize stage (all of them enter the fingerprint, except `workers`)."""

    docs: str = option("blank-line", "What makes a document in plain text: blank-line, file or line.")
    text_field: str = option(
        "text", "Field holding the text in JSONL records, column in Parquet, Arrow and datasets tables."
    )
    errors: str = option("strict", "Invalid UTF-8: strict (stop) or replace (U+FFFD, counted).")
    tokenizer: str | None = option(
        None,
        "An existing tokenizer.json or BERT vocab.txt, or a directory holding one (default: train WordPiece "
        "on the corpus).",
        show_default=False,
    )
    vocab_size: int = option(30522, "Vocabulary size of a trained tokenizer.")
    cased: bool = option(True, "Keep case (SpanBERT is cased).", flag="--cased/--uncased")
    part: str | None = option(
        None, "Take the deterministic share i/N of the input files (1-based).", show_default=False
    )
    # On the command line in MB (`--max-file-size`) and as "all cores" by default (`--workers`).
    max_file_bytes: int = option(256 * 1024 * 1024, "Bound on each Arrow file, in bytes.", cli=False)
    workers: int = option(
        default_factory=corpus.default_workers, help="Encoding processes (default: all cores).", cli=False
    )
    hf_dataset: str | None = option(
        None,
        "A Hugging Face Hub dataset to stream instead of corpus files: NAME, NAME:CONFIG, optionally "
        "@REVISION (needs the Hub; offline, pass its downloaded Parquet files).",
        show_default=False,
    )
    split: str = option("train", "The split of --hf-dataset, or of a datasets DatasetDict directory.")

    def validate(self) -> None:
        problems = []
        if self.docs not in corpus.DOC_MODES:
            problems.append(f"--docs must be one of {', '.join(corpus.DOC_MODES)}, got {self.docs!r}")
        if self.errors not in corpus.ERROR_MODES:
            problems.append(f"--errors must be strict or replace, got {self.errors!r}")
        if not 32 <= self.vocab_size <= 1 << 22:
            problems.append(f"--vocab-size must be between 32 and 4194304, got {self.vocab_size}")
        if self.workers < 1:
            problems.append(f"--workers must be at least 1, got {self.workers}")
        if self.max_file_bytes < 1 << 16:
            problems.append(f"--max-file-size must be at least 64 KB, got {self.max_file_bytes}")
        if not self.split.strip():
            problems.append("--split must not be empty")
        if problems:
            raise UsageError("; ".join(problems))
        corpus.parse_part(self.part)
        if self.hf_dataset is not None:
            hub.parse_spec(self.hf_dataset)

    def fingerprint_params(self, trained: bool) -> dict[str, Any]:
        # Where the corpus comes from enters through its inputs (files by content, or `hf_dataset`'s commit
        # added by the stage): the two settings themselves would only change every existing fingerprint.
        skip = ("workers", "tokenizer", "hf_dataset", "split")
        p = {k: v for k, v in asdict(self).items() if k not in skip}
        if not trained:
            p.pop("vocab_size")  # a given tokenizer enters as an input, by content
        p["tokenizer"] = "train" if trained else "given"
        p["sentence_splitter"] = SENTENCE_SPLITTER_VERSION
        return p


@dataclass
class TokenizeResult:
    artifact: artifacts.Artifact
    cached: bool


@dataclass
class _Prepared:
    plan: artifacts.Plan
    files: list[Any]  # corpus.InputFile, or the one hub.HubSource
    tok: Any  # the given tokenizer, or None to train one


@contextlib.contextmanager
def _prepare(
    inputs: Sequence[str],
    config: TokenizeConfig,
    *,
    out: str | os.PathLike | None,
    workspace: str | os.PathLike | None,
    stdin: Any = None,
    reporter: Reporter | None = None,
) -> Iterator[_Prepared]:
    """Resolve inputs and the tokenizer and compute the fingerprint, before any expensive work."""
    config.validate()
    rep = reporter or NullReporter()
    if config.hf_dataset is not None and inputs:
        raise UsageError("give either corpus files or --hf-dataset, not both")
    with contextlib.ExitStack() as stack:
        params: dict[str, Any] = {}
        skipped: list[str] = []
        if config.hf_dataset is not None:
            source = hub.resolve(config.hf_dataset, config.split)
            files: list[Any] = [source]
            refs: list[artifacts.InputRef] = []
            params["hf_dataset"] = source.identity()
            name = source.dataset.rsplit("/", 1)[-1]
            sources: list[str] = []
        else:
            inset = stack.enter_context(corpus.resolve_inputs(inputs, stdin=stdin, split=config.split))
            skipped = inset.skipped
            # Tables are checked (column, type) and their row groups listed before anything is hashed.
            found = tables.inspect(inset.files, config.text_field)
            files = corpus.select_part(found, corpus.parse_part(config.part))
            refs = [artifacts.InputRef.from_file(f.path, name=f.name) for f in files]
            # Reading checks each file against the hash the fingerprint was made from (edited meanwhile?).
            files = [replace(f, sha256=r.sha256) for f, r in zip(files, refs, strict=True)]
            refs = [replace(r, path="-") if f.name == "-" else r for r, f in zip(refs, files, strict=True)]
            # Row groups a part takes of a file shared with other parts (absent when none is shared, as
            # before Parquet: text files' fingerprints do not change).
            shared = [
                {"input": k, "row_groups": list(f.row_groups)}
                for k, f in enumerate(files)
                if f.row_groups is not None
            ]
            if shared:
                params["row_groups"] = shared
            name = files[0].name if len(files) == 1 else Path(inputs[0].rstrip("/")).name or "corpus"
            sources = [i for i in inputs if i != "-" and Path(i).exists()]
        tok = None
        if config.tokenizer is not None:
            tok = load_tokenizer(config.tokenizer, config.cased)
            tok_ref = artifacts.InputRef(
                path=str(config.tokenizer), role="tokenizer", sha256=tokenizer_sha256(tok), name="tokenizer"
            )
            refs.append(tok_ref)
        name = Path(name).name.split(".")[0] or "corpus"
        if config.part:
            name += "-part" + config.part.replace("/", "of")
        plan = artifacts.plan(
            KIND,
            {**config.fingerprint_params(tok is None), **params},
            refs,
            out=out,
            name=name,
            workspace=workspace,
            sources=sources,
        )
        if skipped:  # said once the plan stands: a refused command prints only its error
            rep.log(f"skipped {len(skipped)} files that are not corpus text (e.g. {skipped[0]})")
        yield _Prepared(plan, files, tok)


def plan_tokenize(
    inputs: Sequence[str],
    config: TokenizeConfig,
    *,
    out: str | os.PathLike | None = None,
    workspace: str | os.PathLike | None = None,
) -> artifacts.Plan:
    """The fingerprint and output directory a tokenize run would have (hashes the inputs, no tokenizing)."""
    with _prepare(inputs, config, out=out, workspace=workspace) as prep:
        return prep.plan


def tokenize(
    inputs: Sequence[str],
    config: TokenizeConfig,
    *,
    out: str | os.PathLike | None = None,
    workspace: str | os.PathLike | None = None,
    force: bool = False,
    reporter: Reporter | None = None,
    stdin: Any = None,
) -> TokenizeResult:
    """Run the tokenize stage; return the artifact (an existing one when it is up to date)."""
    rep = reporter or NullReporter()
    with _prepare(inputs, config, out=out, workspace=workspace, stdin=stdin, reporter=rep) as prep:
        plan, files, tok = prep.plan, prep.files, prep.tok
        with locks.exclusive(plan.out):
            if (hit := artifacts.existing(plan, force)) is not None:
                return TokenizeResult(hit, cached=True)
            with artifacts.ArtifactWriter(plan) as w:
                if tok is None:
                    tok = _train(files, config, rep)
                write_tokenizer_files(tok, w.dir)
                stats, rows = _encode_all(files, tok, config, w.path("data"), w.dir, rep)
                extra = {
                    "tokenizer": {
                        "sha256": tokenizer_sha256(tok),
                        "vocab_size": tok.get_vocab_size(),
                        "special_ids": special_ids(tok),
                        "cased": is_cased(tok),
                    },
                    "run": {"workers": config.workers},
                }
                with naming_io_errors(w.dir / artifacts.MANIFEST):
                    artifact = w.finalize(stats, rows=rows, extra=extra)
        return TokenizeResult(artifact, cached=False)


def _documents(files: Sequence[Any], config: TokenizeConfig, decoders: list) -> Iterator[tuple]:
    """(file, document, bytes consumed across all files before this file) in input order."""
    base = 0
    for f in files:
        if isinstance(f, hub.HubSource):
            rows = hub.stream(f, corpus.parse_part(config.part))
            for doc in hub.iter_documents(rows, f.name, config.text_field):
                yield f, doc, base
            continue
        dec = corpus._Decoder(f.name, config.errors)
        decoders.append(dec)
        for doc in corpus.iter_documents(f, docs=config.docs, text_field=config.text_field, decoder=dec):
            yield f, doc, base
        base += corpus.part_bytes(f)


def _total_bytes(files: Sequence[Any]) -> int | None:
    """The bytes the run reads (None for a stream from the Hub: not known before it is read)."""
    if any(isinstance(f, hub.HubSource) for f in files):
        return None
    return sum(corpus.part_bytes(f) for f in files)


def _train(files: Sequence[corpus.InputFile], config: TokenizeConfig, rep: Reporter):
    total = _total_bytes(files)
    rep.start("training WordPiece", total=total, unit="bytes")
    failure: list[SpanbertError] = []
    decoders: list = []

    def texts() -> Iterator[str]:
        try:
            for n, (_, doc, base) in enumerate(_documents(files, config, decoders)):
                if n % 256 == 0:
                    rep.update(base + doc.consumed)
                yield doc.text
        except SpanbertError as e:  # surfaced after training, not lost inside the trainer
            failure.append(e)

    tok = train_wordpiece(texts(), config.vocab_size, config.cased)
    rep.finish()
    if failure:
        raise failure[0]
    return tok


# --------------------------------------------------------------------------------------------------
# encoding (runs in worker processes)

_worker_tok = None
_last_table: tuple[Any, SentenceTable] | None = None


def _init_worker(tokenizer_json: str) -> None:
    global _worker_tok
    # One process per core: the tokenizer's own thread pool would only oversubscribe the cores.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from tokenizers import Tokenizer

    _worker_tok = Tokenizer.from_str(tokenizer_json)


def _table(tok) -> SentenceTable:
    """The sentence table of `tok`, built once per tokenizer object. The object itself is kept with its
    table: an id alone could be reused by the next tokenizer once this one is freed."""
    global _last_table
    if _last_table is None or _last_table[0] is not tok:
        _last_table = (tok, sentence_table(tok.get_vocab(with_added_tokens=True), is_cased(tok)))
    return _last_table[1]


def encode_chunk(tok, texts: list[str], unk_id: int) -> dict[str, Any]:
    """Encode documents: concatenated ids, per-document lengths and sentence ends (from the ids)."""
    # Offsets are not needed, so skip computing them where the tokenizers version allows.
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    encs = encode(texts, add_special_tokens=False)
    lengths = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
    ids = np.fromiter(
        itertools.chain.from_iterable(e.ids for e in encs), dtype=np.uint32, count=int(lengths.sum())
    )
    ends, counts = sentence_ends(ids, lengths, _table(tok))
    return {
        "ids": ids,
        "lengths": lengths,
        "sentence_ends": ends,
        "sentence_counts": counts,
        "unk": int(np.count_nonzero(ids == unk_id)),
    }


def _encode_in_worker(texts: list[str], unk_id: int) -> dict[str, Any]:
    return encode_chunk(_worker_tok, texts, unk_id)


def _chunks(docs: Iterator[tuple], max_chars: int) -> Iterator[list[tuple]]:
    chunk: list[tuple] = []
    chars = 0
    for item in docs:
        chunk.append(item)
        chars += len(item[1].text)
        if chars >= max_chars or len(chunk) >= _CHUNK_DOCS:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


def _encode_all(
    files: Sequence[corpus.InputFile], tok, config: TokenizeConfig, data_dir: Path, root: Path, rep: Reporter
) -> tuple[dict[str, Any], dict[str, int]]:
    vocab_size = tok.get_vocab_size()
    unk_id = tok.token_to_id("[UNK]")
    ids_type = id_type(vocab_size)
    schema = pa.schema(
        [
            ("input_ids", pa.list_(ids_type)),
            ("sentence_ends", pa.list_(pa.uint32())),
            ("source", pa.struct([("file", pa.string()), ("doc", pa.int64())])),
        ]
    )
    total_bytes = _total_bytes(files)
    rep.start("tokenizing", total=total_bytes, unit="bytes")
    read_bytes = 0  # what a stream (no size known before) turned out to hold
    decoders: list = []
    docs = _documents(files, config, decoders)
    counts = {"documents": 0, "sentences": 0, "tokens": 0, "unk": 0}
    t0 = time.perf_counter()

    pool = None
    if config.workers > 1:
        pool = ProcessPoolExecutor(
            config.workers,
            mp_context=get_context("fork" if "fork" in get_all_start_methods() else "spawn"),
            initializer=_init_worker,
            initargs=(tok.to_str(),),
        )
    pending: deque[tuple[list[tuple], Future | dict]] = deque()
    window = 2 * config.workers  # bounded in-flight chunks keep memory flat on any corpus size
    writer = RollingStreamWriter(data_dir, schema, config.max_file_bytes, root=root)

    def drain_one() -> None:
        chunk, fut = pending.popleft()
        res = fut.result() if isinstance(fut, Future) else fut
        batch = pa.record_batch(
            [
                list_array(res["ids"], res["lengths"], ids_type),
                list_array(res["sentence_ends"], res["sentence_counts"], pa.uint32()),
                pa.StructArray.from_arrays(
                    [
                        string_array([f.name for f, _, _ in chunk]),
                        arrow_array(np.array([d.ordinal for _, d, _ in chunk], dtype=np.int64), pa.int64()),
                    ],
                    names=["file", "doc"],
                ),
            ],
            schema=schema,
        )
        writer.write(batch)
        counts["documents"] += len(chunk)
        counts["sentences"] += int(res["sentence_counts"].sum())
        counts["tokens"] += int(res["lengths"].sum())
        counts["unk"] += res["unk"]
        nonlocal read_bytes
        _, d, base = chunk[-1]
        read_bytes = base + d.consumed
        rep.update(read_bytes, docs=counts["documents"], tokens=counts["tokens"])

    try:
        # A chunk's Arrow batch is about half its text size: a quarter of the file bound keeps files bounded.
        for chunk in _chunks(docs, min(_CHUNK_CHARS, config.max_file_bytes // 4)):
            texts = [d.text for _, d, _ in chunk]
            if pool is None:
                pending.append((chunk, encode_chunk(tok, texts, unk_id)))
            else:
                pending.append((chunk, pool.submit(_encode_in_worker, texts, unk_id)))
            while len(pending) > window or (pool is None and pending):
                drain_one()
        while pending:
            drain_one()
    finally:
        writer.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        rep.finish()

    if counts["documents"] == 0:
        names = ", ".join(f.name for f in files[:3]) + (" …" if len(files) > 3 else "")
        raise DataError(f"{names}: no documents found (the input is empty or only whitespace)")
    seconds = time.perf_counter() - t0
    stats = {
        "files": len(files),
        "input_bytes": read_bytes if total_bytes is None else total_bytes,
        "documents": counts["documents"],
        "sentences": counts["sentences"],
        "tokens": counts["tokens"],
        "unk_tokens": counts["unk"],
        "unk_rate": counts["unk"] / max(1, counts["tokens"]),
        "replaced_invalid_utf8": sum(d.replacements for d in decoders),
        "vocab_size": vocab_size,
    }
    stats["seconds"] = round(seconds, 3)
    return stats, writer.files
