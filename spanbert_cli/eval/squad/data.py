"""SQuAD data: load, validate and flatten SQuAD v1.1 / v2.0 and MRQA files, predictions and no-answer
probabilities.

Accepted inputs (`.json`, or the same gzip-compressed as `.json.gz`):

- the official format: `{"version": ..., "data": [{"title", "paragraphs": [{"context", "qas": [{"id",
  "question", "answers": [{"text", "answer_start"}], "is_impossible"?}]}]}]}`;
- Hugging Face's flattened rows (`rajpurkar/squad`, `rajpurkar/squad_v2`): one object per question with
  `id`, `title`, `context`, `question` and `answers: {"text": [...], "answer_start": [...]}`, as a JSON list,
  JSON Lines (`.jsonl`), or an object whose `data` list holds such rows;
- the MRQA shared task's JSON Lines (`.jsonl.gz`, `.jsonl`, or any name: told by the content): a header
  line `{"header": {"dataset", "split"}}`, then one line per context `{"context", "qas": [{"qid",
  "question", "answers": [text, ...], "detected_answers": [{"text", "char_spans": [[start, end]], ...}]}]}`
  (`end` inclusive). Training takes the detected spans; scoring takes the `answers` strings, with the
  SQuAD v1.1 metrics, as MRQA's official evaluation does (every MRQA question has an answer);
- a `datasets` data set by name (e.g. `rajpurkar/squad`), loaded from the hub when it can be reached.

Errors name the file and the path of the bad record (`data[3].paragraphs[7].qas[2]`, or `[12]` / `line 13`
for rows, `line 13: qas[2].detected_answers[0]` for MRQA). The version comes from the file's `version`
field, else from the data (any question without an answer makes it v2.0; MRQA is v1.1); `version=` forces
it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import re
import socket
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from spanbert_cli.artifacts import canonical_json
from spanbert_cli.errors import DataError, UsageError
from spanbert_cli.eval.squad.scoring import VERSIONS

#: What a `datasets` name looks like (`squad`, `rajpurkar/squad_v2`), as opposed to a file path.
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_FILE_SUFFIXES = (".json", ".gz", ".jsonl", ".txt")


@dataclass(frozen=True)
class Answer:
    text: str
    start: int | None  # character offset into the context; None when the file gives none


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    context: int  # index into SquadData.contexts
    answers: tuple[Answer, ...]  # empty for an unanswerable (v2.0) question
    path: str  # where it is in its file, for messages: data[3].paragraphs[7].qas[2]
    # The answer strings scoring takes when they are not the answers' texts: MRQA's `answers` (its
    # `detected_answers` are the spans in `answers`, what training takes). None: the answers' texts.
    gold: tuple[str, ...] | None = None

    @property
    def has_answer(self) -> bool:
        return bool(self.answers)


@dataclass
class SquadData:
    """A SQuAD data set, flattened: contexts once each, questions in file order."""

    source: str
    version: str  # "1.1" or "2.0"
    contexts: list[str]
    questions: list[Question]
    titles: list[str] = field(default_factory=list)  # one per context
    format: str = "squad"  # "squad" (official or flattened rows) or "mrqa"

    def __len__(self) -> int:
        return len(self.questions)

    @property
    def num_unanswerable(self) -> int:
        return sum(not q.has_answer for q in self.questions)

    def gold(self) -> dict[str, list[str]]:
        """Question id -> gold answer texts, in data order: what `scoring` takes."""
        return {
            q.id: list(q.gold) if q.gold is not None else [a.text for a in q.answers] for q in self.questions
        }

    def head(self, n: int | None) -> SquadData:
        """The first `n` questions (all when n is None), with only the contexts they use."""
        if n is None or n >= len(self.questions):
            return self
        keep = self.questions[:n]
        used = sorted({q.context for q in keep})
        remap = {old: new for new, old in enumerate(used)}
        return replace(
            self,
            contexts=[self.contexts[i] for i in used],
            questions=[replace(q, context=remap[q.context]) for q in keep],
            titles=[self.titles[i] for i in used] if self.titles else [],
        )

    def content_sha256(self) -> str:
        """A hash of what the data says (for inputs that are not files, e.g. a hub data set)."""
        h = hashlib.sha256(self.version.encode())
        for q in self.questions:
            row = [q.id, q.question, self.contexts[q.context], [[a.text, a.start] for a in q.answers]]
            if q.gold is not None:  # only then: the hashes of SQuAD data stay what they were
                row.append(list(q.gold))
            h.update(canonical_json(row).encode())
        return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# reading JSON


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """A JSON value from `.json` / `.json.gz`; JSON Lines (one value per line) become a list."""
    return _read_json(Path(path), what)[0]


def _read_json(p: Path, what: str) -> tuple[Any, list[int] | None]:
    """(value, None) for JSON; (list of values, their 1-based line numbers) for JSON Lines."""
    if not p.exists():
        raise DataError(f"{p}: {what} not found")
    if p.is_dir():
        raise DataError(f"{p}: is a directory; name a {what} (.json or .json.gz)")
    try:
        raw = p.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8-sig")
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"{p}: unreadable {what} ({e})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not UTF-8 text (byte offset {e.start}); a {what} must be UTF-8 JSON") from None
    if not p.name.endswith((".jsonl", ".jsonl.gz")):
        try:
            return json.loads(text), None
        except json.JSONDecodeError as e:
            if e.msg != "Extra data" or e.lineno < 2:  # not several JSON values on separate lines
                raise DataError(f"{p}: not valid JSON (line {e.lineno} column {e.colno}: {e.msg})") from None
    rows, numbers = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DataError(f"{p}: line {n} is not valid JSON ({e.msg} at column {e.colno})") from None
        numbers.append(n)
    return rows, numbers


# --------------------------------------------------------------------------------------------------
# parsing SQuAD


def _fail(source: str, where: str, message: str) -> DataError:
    return DataError(f"{source}: {where}: {message}" if where else f"{source}: {message}")


def _type(value: Any) -> str:
    return (
        "null"
        if value is None
        else {dict: "object", list: "list", str: "string"}.get(type(value), type(value).__name__)
    )


class _Builder:
    """Collects questions and contexts while checking each record."""

    def __init__(self, source: str):
        self.source = source
        self.contexts: list[str] = []
        self.titles: list[str] = []
        self.questions: list[Question] = []
        self.seen: dict[str, str] = {}
        self.impossible = False

    def context(self, text: Any, title: Any, where: str) -> int:
        if not isinstance(text, str):
            raise _fail(self.source, where, f"'context' must be a string, got {_type(text)}")
        self.contexts.append(text)
        self.titles.append(title if isinstance(title, str) else "")
        return len(self.contexts) - 1

    def question(
        self,
        qa: Any,
        ctx: int,
        where: str,
        answers: Iterable[tuple[Any, Any, str]],
        impossible: Any,
        id_key: str = "id",
        gold: tuple[str, ...] | None = None,
    ) -> None:
        qid, text = qa.get(id_key), qa.get("question")
        if isinstance(qid, int) and not isinstance(qid, bool):
            qid = str(qid)
        if not isinstance(qid, str) or not qid:
            raise _fail(self.source, where, f"'{id_key}' must be a non-empty string, got {qid!r}")
        if not isinstance(text, str):
            raise _fail(self.source, where, f"'question' must be a string, got {_type(text)}")
        if qid in self.seen:
            raise _fail(self.source, where, f"duplicate question id {qid!r} (first at {self.seen[qid]})")
        parsed = []
        for a_text, a_start, a_where in answers:
            if not isinstance(a_text, str):
                raise _fail(self.source, a_where, f"answer 'text' must be a string, got {_type(a_text)}")
            if a_start is not None and (not isinstance(a_start, int) or isinstance(a_start, bool)):
                raise _fail(self.source, a_where, f"'answer_start' must be an integer, got {a_start!r}")
            parsed.append(Answer(a_text, a_start))
        if impossible not in (None, True, False):
            raise _fail(self.source, where, f"'is_impossible' must be true or false, got {impossible!r}")
        if impossible and parsed:
            raise _fail(self.source, where, "'is_impossible' is true but the question has answers")
        self.impossible |= bool(impossible) or not parsed
        self.seen[qid] = where
        self.questions.append(Question(qid, text, ctx, tuple(parsed), where, gold))


def _official(obj: dict, source: str, b: _Builder) -> None:
    data = obj["data"]
    for i, article in enumerate(data):
        where = f"data[{i}]"
        if not isinstance(article, dict):
            raise _fail(source, where, f"an article must be an object, got {_type(article)}")
        paragraphs = article.get("paragraphs")
        if not isinstance(paragraphs, list):
            raise _fail(source, where, f"'paragraphs' must be a list, got {_type(paragraphs)}")
        for j, para in enumerate(paragraphs):
            pwhere = f"{where}.paragraphs[{j}]"
            if not isinstance(para, dict):
                raise _fail(source, pwhere, f"a paragraph must be an object, got {_type(para)}")
            ctx = b.context(para.get("context"), article.get("title"), pwhere)
            qas = para.get("qas")
            if not isinstance(qas, list):
                raise _fail(source, pwhere, f"'qas' must be a list, got {_type(qas)}")
            for k, qa in enumerate(qas):
                qwhere = f"{pwhere}.qas[{k}]"
                if not isinstance(qa, dict):
                    raise _fail(source, qwhere, f"a question must be an object, got {_type(qa)}")
                answers = qa.get("answers", [])
                if not isinstance(answers, list):
                    raise _fail(source, qwhere, f"'answers' must be a list, got {_type(answers)}")
                items = []
                for m, ans in enumerate(answers):
                    awhere = f"{qwhere}.answers[{m}]"
                    if not isinstance(ans, dict):
                        raise _fail(source, awhere, f"an answer must be an object, got {_type(ans)}")
                    items.append((ans.get("text"), ans.get("answer_start"), awhere))
                b.question(qa, ctx, qwhere, items, qa.get("is_impossible"))


def _rows(rows: list, source: str, b: _Builder, lines: list[int] | None, prefix: str = "") -> None:
    last: tuple[Any, Any] | None = None
    ctx = -1
    for i, row in enumerate(rows):
        where = f"line {lines[i]}" if lines is not None else f"{prefix}[{i}]"
        if not isinstance(row, dict):
            raise _fail(source, where, f"a row must be an object, got {_type(row)}")
        key = (row.get("title"), row.get("context"))
        if key != last:  # consecutive rows of one paragraph share its context
            ctx = b.context(row.get("context"), row.get("title"), where)
            last = key
        answers = row.get("answers", {"text": [], "answer_start": []})
        if isinstance(answers, list):  # a list of {"text", "answer_start"}, as in the official format
            items = []
            for m, ans in enumerate(answers):
                if not isinstance(ans, dict):
                    raise _fail(
                        source, f"{where}.answers[{m}]", f"an answer must be an object, got {_type(ans)}"
                    )
                items.append((ans.get("text"), ans.get("answer_start"), f"{where}.answers[{m}]"))
        elif isinstance(answers, dict):
            texts, starts = answers.get("text", []), answers.get("answer_start")
            if not isinstance(texts, list):
                raise _fail(source, where, f"'answers.text' must be a list, got {_type(texts)}")
            if starts is None:
                starts = [None] * len(texts)
            if not isinstance(starts, list) or len(starts) != len(texts):
                raise _fail(source, where, "'answers.answer_start' must be a list as long as 'answers.text'")
            items = [
                (t, s, f"{where}.answers.text[{m}]")
                for m, (t, s) in enumerate(zip(texts, starts, strict=True))
            ]
        else:
            raise _fail(source, where, f"'answers' must be an object or a list, got {_type(answers)}")
        b.question(row, ctx, where, items, row.get("is_impossible"))


def is_mrqa(obj: Any) -> bool:
    """MRQA JSON Lines, told by the content: a header line first, or context lines with `qas`."""
    first = obj[0] if isinstance(obj, list) and obj else obj
    return isinstance(first, dict) and ("header" in first or ("qas" in first and "context" in first))


def _mrqa_answers(
    qa: dict, context: str, source: str, where: str
) -> tuple[list[tuple[str, int, str]], tuple[str, ...]]:
    """(the detected spans as (text, start, where), the `answers` strings) of one MRQA question."""
    answers = qa.get("answers")
    if not isinstance(answers, list) or not answers:
        raise _fail(source, where, f"'answers' must be a non-empty list of strings, got {_short(answers)}")
    for m, text in enumerate(answers):
        if not isinstance(text, str):
            raise _fail(source, f"{where}.answers[{m}]", f"an answer must be a string, got {_type(text)}")
    detected = qa.get("detected_answers")
    if not isinstance(detected, list) or not detected:
        raise _fail(
            source,
            where,
            f"'detected_answers' must be a non-empty list (every MRQA question has its answer in the "
            f"context), got {_short(detected)}",
        )
    spans: list[tuple[str, int, str]] = []
    for m, det in enumerate(detected):
        dwhere = f"{where}.detected_answers[{m}]"
        if not isinstance(det, dict):
            raise _fail(source, dwhere, f"a detected answer must be an object, got {_type(det)}")
        char_spans = det.get("char_spans")
        if not isinstance(char_spans, list) or not char_spans:
            raise _fail(source, dwhere, f"'char_spans' must be a non-empty list, got {_short(char_spans)}")
        for n, span in enumerate(char_spans):
            ok = (
                isinstance(span, list)
                and len(span) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) for x in span)
                and 0 <= span[0] <= span[1] < len(context)
            )
            if not ok:
                raise _fail(
                    source,
                    f"{dwhere}.char_spans[{n}]",
                    f"must be [start, end] with 0 <= start <= end < {len(context)} (the context's length; "
                    f"end is inclusive), got {_short(span)}",
                )
            # The context's own characters: what a span-extraction model can reproduce exactly.
            spans.append((context[span[0] : span[1] + 1], span[0], f"{dwhere}.char_spans[{n}]"))
    return spans, tuple(answers)


def _mrqa(rows: list, source: str, b: _Builder, lines: list[int] | None) -> None:
    """MRQA lines: headers (any number: concatenated files keep theirs) and contexts with their `qas`."""
    dataset = ""
    for i, row in enumerate(rows):
        where = f"line {lines[i]}" if lines is not None else f"[{i}]"
        if not isinstance(row, dict):
            raise _fail(source, where, f"an MRQA line must be an object, got {_type(row)}")
        if "header" in row:
            header = row["header"]
            if not isinstance(header, dict):
                raise _fail(source, where, f"'header' must be an object, got {_type(header)}")
            dataset = header.get("dataset") if isinstance(header.get("dataset"), str) else ""
            continue
        if "context" not in row or "qas" not in row:
            raise _fail(
                source,
                where,
                "an MRQA line must be a header or have 'context' and 'qas' (keys here: "
                f"{', '.join(sorted(map(str, row))[:5]) or 'none'})",
            )
        ctx = b.context(row.get("context"), dataset, where)
        context = b.contexts[ctx]
        qas = row["qas"]
        if not isinstance(qas, list):
            raise _fail(source, where, f"'qas' must be a list, got {_type(qas)}")
        for k, qa in enumerate(qas):
            qwhere = f"{where}: qas[{k}]"
            if not isinstance(qa, dict):
                raise _fail(source, qwhere, f"a question must be an object, got {_type(qa)}")
            spans, gold = _mrqa_answers(qa, context, source, qwhere)
            b.question(qa, ctx, qwhere, spans, None, id_key="qid", gold=gold)


def _normalise_version(value: Any) -> str | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        v = value.strip().lower().lstrip("v")
        if v in ("1.1", "1", "1.0"):
            return "1.1"
        if v in ("2.0", "2"):
            return "2.0"
    return None


def check_version(version: str | None) -> str | None:
    if version is None:
        return None
    v = _normalise_version(version)
    if v is None:
        raise UsageError(f"--version must be 1.1 or 2.0, got {version!r}")
    return v


def parse_squad(
    obj: Any, source: str, version: str | None = None, lines: list[int] | None = None
) -> SquadData:
    """Validate a parsed SQuAD JSON value (official or flattened rows) and flatten it.

    `lines`: the line number of each row, when `obj` came from JSON Lines (for messages)."""
    forced = check_version(version)
    b = _Builder(source)
    declared = None
    fmt = "squad"
    if is_mrqa(obj):
        _mrqa(obj if isinstance(obj, list) else [obj], source, b, lines)
        fmt, declared = "mrqa", "1.1"  # MRQA's evaluation is SQuAD v1.1's
    elif isinstance(obj, dict) and isinstance(obj.get("data"), list):
        declared = _normalise_version(obj.get("version"))
        given = obj.get("version")
        if declared is None and given not in (None, "") and forced is None:
            raise DataError(
                f"{source}: declares SQuAD version {obj['version']!r}, which is neither 1.1 nor 2.0; fix the "
                "file's 'version' field, or say which it is with --version"
            )
        data = obj["data"]
        if data and isinstance(data[0], dict) and "paragraphs" not in data[0] and "context" in data[0]:
            _rows(data, source, b, None, prefix="data")
        else:
            _official(obj, source, b)
    elif isinstance(obj, list):
        _rows(obj, source, b, lines)
    elif isinstance(obj, dict):
        raise DataError(
            f"{source}: not SQuAD JSON: expected an object with a 'data' list (the official format) or "
            f"a list of rows with 'context', 'question' and 'answers'; got an object with keys "
            f"{', '.join(sorted(map(str, obj))[:5]) or 'none'}"
        )
    else:
        raise DataError(f"{source}: not SQuAD JSON: expected an object with a 'data' list, got {_type(obj)}")
    if not b.questions:
        raise DataError(f"{source}: the data set has no questions")
    resolved = forced or declared or ("2.0" if b.impossible else "1.1")
    assert resolved in VERSIONS
    return SquadData(source, resolved, b.contexts, b.questions, b.titles, fmt)


def load_squad(path: str | os.PathLike, version: str | None = None) -> SquadData:
    """Load and validate a SQuAD file (`.json`, `.json.gz`, `.jsonl`) or an MRQA file (`.jsonl.gz`)."""
    p = Path(path)
    obj, lines = _read_json(p, "SQuAD file")
    return parse_squad(obj, str(p), version, lines)


def looks_like_hub_name(spec: str) -> bool:
    """`rajpurkar/squad` or `squad`: a data set name rather than a path (which would exist, or end in .json)."""
    return (
        not Path(spec).exists() and bool(_HUB_NAME.match(spec)) and not spec.lower().endswith(_FILE_SUFFIXES)
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _proxied() -> bool:
    """Behind a proxy a direct connection says nothing: let `datasets` try (and fail) itself."""
    return any(
        os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")
    )


def _offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def load_hub(name: str, split: str, version: str | None = None, hint: str | None = None) -> SquadData:
    """A `datasets` data set by name (Hugging Face's flattened rows), when the hub or the cache has it.

    Offline (the hub unreachable), one DataError says so at once instead of retrying for half a minute;
    `hint` says what to do instead."""
    hint = hint or ("pass a SQuAD JSON file instead, or set HF_DATASETS_OFFLINE=1 to use a cached copy")
    if not _offline() and not _proxied() and not _hub_reachable():
        raise DataError(f"cannot reach the Hugging Face hub to load {name!r} (offline?); {hint}")
    try:
        import datasets

        ds = datasets.load_dataset(name, split=split)
    except Exception as e:
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise DataError(f"cannot load data set {name!r} split {split!r} ({msg}); {hint}") from None
    return parse_squad(list(ds), f"{name}[{split}]", version)


def load_any(spec: str, split: str, version: str | None = None, hint: str | None = None) -> SquadData:
    """A file path, or a `datasets` name (see `looks_like_hub_name`)."""
    if looks_like_hub_name(spec):
        return load_hub(spec, split, version, hint)
    return load_squad(spec, version)


# --------------------------------------------------------------------------------------------------
# predictions and no-answer probabilities


def load_predictions(path: str | os.PathLike) -> dict[str, str]:
    """`{question id: answer text}`; anything else is a DataError naming the first bad entry."""
    obj = read_json(path, "predictions file")
    if not isinstance(obj, dict):
        raise DataError(f"{path}: predictions must be a JSON object {{id: answer text}}, got {_type(obj)}")
    for qid, text in obj.items():
        if not isinstance(text, str):
            raise DataError(
                f"{path}: the prediction for {qid!r} must be a string, got {_type(text)} {_short(text)}"
            )
    return obj


def load_na_probs(path: str | os.PathLike) -> dict[str, float]:
    """`{question id: no-answer probability}` (finite numbers)."""
    obj = read_json(path, "no-answer probabilities file")
    if not isinstance(obj, dict):
        raise DataError(
            f"{path}: no-answer probabilities must be a JSON object {{id: number}}, got {_type(obj)}"
        )
    out: dict[str, float] = {}
    for qid, value in obj.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise DataError(
                f"{path}: the no-answer probability of {qid!r} must be a finite number, got {_short(value)}"
            )
        out[qid] = float(value)
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --------------------------------------------------------------------------------------------------
# answer offsets


@dataclass
class AlignStats:
    """What `align_answers` did to answers whose `answer_start` does not point at their text."""

    answers: int = 0
    matched: int = 0  # answer_start pointed at the text
    relocated: int = 0  # found elsewhere in the context (the occurrence nearest answer_start)
    unmatched: int = 0  # not in the context at all: dropped
    questions_dropped: int = 0  # answerable questions left without any answer: not trained on

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _occurrences(context: str, text: str) -> Iterator[int]:
    i = context.find(text)
    while i >= 0:
        yield i
        i = context.find(text, i + 1)


def locate(context: str, answer: Answer) -> int | None:
    """The character offset of `answer` in `context`: its answer_start when that points at the text,
    else the occurrence nearest it (the first when it has none), else None."""
    text = answer.text
    if not text:
        return None
    if answer.start is not None and answer.start >= 0 and context.startswith(text, answer.start):
        return answer.start
    stripped = text.strip()
    if stripped != text and stripped:
        return locate(context, Answer(stripped, answer.start))
    best = None
    for i in _occurrences(context, text):
        if best is None or abs(i - (answer.start or 0)) < abs(best - (answer.start or 0)):
            best = i
    return best


def align_answers(data: SquadData) -> tuple[SquadData, AlignStats]:
    """Check every answer_start against its answer text: keep, relocate (by search) or drop, counting each.

    Never raises: a training set with a few bad offsets (e.g. rebuilt from HTML) stays usable. An
    answerable question whose answers are all dropped is left out and counted.
    """
    stats = AlignStats()
    questions = []
    for q in data.questions:
        if not q.answers:
            questions.append(q)
            continue
        context = data.contexts[q.context]
        kept = []
        for a in q.answers:
            stats.answers += 1
            start = locate(context, a)
            if start is None:
                stats.unmatched += 1
                continue
            text = a.text if context.startswith(a.text, start) else a.text.strip()
            if start == a.start and text == a.text:
                stats.matched += 1
            else:
                stats.relocated += 1
            kept.append(Answer(text, start))
        if kept:
            questions.append(replace(q, answers=tuple(kept)))
        else:
            stats.questions_dropped += 1
    return replace(data, questions=questions), stats


def dumps_official(data: SquadData) -> dict[str, Any]:
    """The official nested form of `data` (articles by title, paragraphs in order)."""
    articles: list[dict[str, Any]] = []
    by_context: dict[int, dict[str, Any]] = {}
    for q in data.questions:
        para = by_context.get(q.context)
        if para is None:
            title = data.titles[q.context] if data.titles else ""
            if not articles or articles[-1]["title"] != title:
                articles.append({"title": title, "paragraphs": []})
            para = {"context": data.contexts[q.context], "qas": []}
            articles[-1]["paragraphs"].append(para)
            by_context[q.context] = para
        qa: dict[str, Any] = {
            "id": q.id,
            "question": q.question,
            "answers": [{"text": a.text, "answer_start": a.start} for a in q.answers],
        }
        if data.version == "2.0":
            qa["is_impossible"] = not q.answers
        para["qas"].append(qa)
    return {"version": "v2.0" if data.version == "2.0" else "1.1", "data": articles}


# --------------------------------------------------------------------------------------------------
# scoring files


@dataclass
class FileScore:
    data: SquadData
    result: Any  # scoring.ScoreResult


def score_files(
    predictions: str | os.PathLike,
    data: str | os.PathLike,
    *,
    version: str | None = None,
    na_probs: str | os.PathLike | None = None,
    na_prob_thresh: float = 1.0,
    threshold_search: str = "official",
) -> FileScore:
    """Score a predictions file against a SQuAD or MRQA file (or `datasets` name) with the official
    metrics."""
    from spanbert_cli.eval.squad import scoring

    scoring.check_threshold_search(threshold_search)
    gold = load_any(str(data), "validation", version)
    preds = load_predictions(predictions)
    probs = load_na_probs(na_probs) if na_probs is not None else None
    result = scoring.score(gold.gold(), preds, gold.version, probs, na_prob_thresh, threshold_search)
    return FileScore(gold, result)
