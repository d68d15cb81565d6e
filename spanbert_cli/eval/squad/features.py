"""SQuAD features: `[CLS] question [SEP] context window [SEP]`, with offsets back into the context text.

Each context is tokenized once (most have several questions) with the run's own fast tokenizer, which
gives every token its character span in the original text; each question is tokenized and cut to
`max_query_length` tokens. A context longer than what is left of `max_seq_length` is covered by windows
that start every `doc_stride` tokens (BERT's and SpanBERT's meaning of the stride: the step between
window starts, not the overlap), the last one ending at the context's end.

Nothing is stored per window but where it starts and how long it is: the token ids of a batch are
assembled when the batch is drawn (`Features.batch`), padded to the batch's longest window, so memory
does not grow with `max_seq_length` and short windows cost short compute.

Labels (training): an answer's character span maps to the first token ending after its start and the
last token starting before its end. In a window that holds the whole answer, the labels are its token
positions in the window; in a window that does not, and for an unanswerable (v2.0) question, both point
at [CLS] (position 0). Decoding a label, `context[offset(start).begin : offset(end).end]`, gives back the
answer text up to SQuAD normalisation unless an answer boundary falls inside a word piece.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spanbert_cli.errors import DataError, UsageError
from spanbert_cli.eval.squad.data import SquadData
from spanbert_cli.progress import NullReporter, Reporter

CLS_POSITION = 0
_ENCODE_CHUNK = 2048  # texts per encode_batch call (progress granularity)


@dataclass(frozen=True)
class FeatureConfig:
    max_seq_length: int = 384
    doc_stride: int = 128
    max_query_length: int = 64

    def problems(self) -> list[str]:
        out = []
        for flag, value, low in (
            ("--max-seq-length", self.max_seq_length, 8),
            ("--doc-stride", self.doc_stride, 1),
            ("--max-query-length", self.max_query_length, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                out.append(f"{flag} must be an integer >= {low}, got {value!r}")
        if not out and self.max_seq_length - self.max_query_length - 3 < 1:
            out.append(
                f"--max-seq-length {self.max_seq_length} leaves no room for context after a question of "
                f"--max-query-length {self.max_query_length} tokens and 3 special tokens"
            )
        return out


@dataclass
class FeatureStats:
    questions: int = 0
    windows: int = 0
    truncated_questions: int = 0  # questions longer than max_query_length tokens (cut)
    unanswerable: int = 0
    windows_with_answer: int = 0  # training: windows whose labels point at the answer
    windows_without_answer: int = 0  # training: windows labelled [CLS] (no answer, or not inside)
    untokenizable_answers: int = 0  # training: answers that cover no token (left out)
    inexact_labels: int = 0  # training: answers whose boundaries fall inside a word piece

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class Features:
    """Windows over a data set's questions; token ids are assembled per batch (`batch`)."""

    data: SquadData
    config: FeatureConfig
    cls_id: int
    sep_id: int
    pad_id: int
    query_ids: list[np.ndarray]  # per question, cut to max_query_length
    context_ids: list[np.ndarray]  # per context
    context_offsets: list[np.ndarray]  # per context: [n_tokens, 2] character spans in the context text
    example: np.ndarray  # [W] question index of each window
    doc_start: np.ndarray  # [W] first context token of the window
    doc_len: np.ndarray  # [W] context tokens in the window
    start_positions: np.ndarray  # [W] label: position in the window's sequence (0 = [CLS]); training only
    end_positions: np.ndarray  # [W]
    stats: FeatureStats = field(default_factory=FeatureStats)

    def __len__(self) -> int:
        return len(self.example)

    def query_len(self, w: int) -> int:
        return len(self.query_ids[self.example[w]])

    def context_offset(self, w: int) -> int:
        """Position of the window's first context token in its sequence: after [CLS] question [SEP]."""
        return self.query_len(w) + 2

    def seq_len(self, w: int) -> int:
        return self.query_len(w) + int(self.doc_len[w]) + 3

    def lengths(self) -> np.ndarray:
        q = np.fromiter((len(x) for x in self.query_ids), dtype=np.int64, count=len(self.query_ids))
        return q[self.example] + self.doc_len + 3

    def window(self, w: int, type_vocab_size: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """Window w's input ids, `[CLS] question [SEP] context part [SEP]`, and its segment ids."""
        q = self.query_ids[self.example[w]]
        ctx = self.context_ids[self.data.questions[self.example[w]].context]
        s, n = int(self.doc_start[w]), int(self.doc_len[w])
        k = len(q) + 2
        ids = np.empty(k + n + 1, dtype=np.int64)
        ids[0], ids[1 : k - 1], ids[k - 1] = self.cls_id, q, self.sep_id
        ids[k : k + n], ids[k + n] = ctx[s : s + n], self.sep_id
        types = np.zeros(len(ids), dtype=np.int64)
        if type_vocab_size > 1:
            types[k:] = 1
        return ids, types

    def packed_batch(self, windows: Sequence[int], type_vocab_size: int = 2) -> dict[str, np.ndarray]:
        """The windows unpadded, as the encoder takes them: input_ids, token_type_ids [N], their layout
        (`masking.batches.packed_layout`: cu_seqlens, position_ids, padded_index, max_seqlen) and the
        labels [B]."""
        from spanbert_cli.masking.batches import packed_layout

        parts = [self.window(w, type_vocab_size) for w in windows]
        return {
            "input_ids": np.concatenate([ids for ids, _ in parts]),
            "token_type_ids": np.concatenate([types for _, types in parts]),
            **packed_layout(np.array([len(ids) for ids, _ in parts])),
            "start_positions": self.start_positions[list(windows)],
            "end_positions": self.end_positions[list(windows)],
        }

    def batch(
        self, windows: Sequence[int], type_vocab_size: int = 2, multiple: int = 1
    ) -> dict[str, np.ndarray]:
        """Padded (the reference layout): input_ids, token_type_ids, attention_mask [B, T] and the labels
        [B]. T is the longest window, rounded up to a `multiple` unless that passes max_seq_length."""
        lens = [self.seq_len(w) for w in windows]
        T = max(lens)
        T = max(T, min(-(-T // multiple) * multiple, self.config.max_seq_length))
        ids = np.full((len(windows), T), self.pad_id, dtype=np.int64)
        types = np.zeros((len(windows), T), dtype=np.int64)
        mask = np.zeros((len(windows), T), dtype=bool)
        for b, w in enumerate(windows):
            ids[b, : lens[b]], types[b, : lens[b]] = self.window(w, type_vocab_size)
            mask[b, : lens[b]] = True
        return {
            "input_ids": ids,
            "token_type_ids": types,
            "attention_mask": mask,
            "start_positions": self.start_positions[list(windows)],
            "end_positions": self.end_positions[list(windows)],
        }

    def windows_of(self) -> list[np.ndarray]:
        """For each question, the indices of its windows (in order)."""
        order = np.argsort(self.example, kind="stable")
        bounds = np.searchsorted(self.example[order], np.arange(len(self.data.questions) + 1))
        return [order[bounds[i] : bounds[i + 1]] for i in range(len(self.data.questions))]

    def label_text(self, w: int) -> str | None:
        """The context text the window's labels point at (None when they point at [CLS])."""
        s, e = int(self.start_positions[w]), int(self.end_positions[w])
        if s == CLS_POSITION:
            return None
        q = self.data.questions[self.example[w]]
        k = self.context_offset(w) - int(self.doc_start[w])
        offsets = self.context_offsets[q.context]
        return self.data.contexts[q.context][offsets[s - k][0] : offsets[e - k][1]]


def _encode(tok: Any, texts: list[str], rep: Reporter, done: int, total: int) -> tuple[list, int]:
    out = []
    for i in range(0, len(texts), _ENCODE_CHUNK):
        out.extend(tok.encode_batch(texts[i : i + _ENCODE_CHUNK], add_special_tokens=False))
        done += len(texts[i : i + _ENCODE_CHUNK])
        rep.update(done)
    return out, done


def _plain(tok: Any) -> Any:
    """A copy of the tokenizer with no truncation or padding (a tokenizer.json may carry either)."""
    from tokenizers import Tokenizer

    plain = Tokenizer.from_str(tok.to_str())
    plain.no_truncation()
    plain.no_padding()
    return plain


def special_token_ids(tok: Any) -> tuple[int, int, int]:
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:
        raise DataError("the run's tokenizer has no [CLS] or [SEP] token; a BERT-style vocabulary is needed")
    pad_id = tok.token_to_id("[PAD]")
    return cls_id, sep_id, 0 if pad_id is None else pad_id


def window_starts(n_tokens: int, room: int, stride: int) -> list[tuple[int, int]]:
    """(start, length) of the windows covering `n_tokens` context tokens, `room` tokens at most each."""
    out = []
    start = 0
    while True:
        length = min(n_tokens - start, room)
        out.append((start, length))
        if start + length >= n_tokens:
            return out
        start += min(length, stride)


def answer_token_span(offsets: np.ndarray, start_char: int, end_char: int) -> tuple[int, int] | None:
    """(first, last) context token of the character span [start_char, end_char); None if it covers none."""
    if len(offsets) == 0:
        return None
    first = int(np.searchsorted(offsets[:, 1], start_char, side="right"))  # first token ending after start
    last = int(np.searchsorted(offsets[:, 0], end_char, side="left")) - 1  # last token starting before end
    if first >= len(offsets) or last < first:
        return None
    return first, last


def build_features(
    data: SquadData,
    tok: Any,
    config: FeatureConfig,
    *,
    training: bool,
    reporter: Reporter | None = None,
) -> Features:
    """Windows for every question of `data`. With `training`, labels from each question's first answer
    (answers whose offsets were checked by `data.align_answers`); otherwise labels are all [CLS]."""
    if problems := config.problems():
        raise UsageError("; ".join(problems))
    rep = reporter or NullReporter()
    tok = _plain(tok)
    cls_id, sep_id, pad_id = special_token_ids(tok)
    stats = FeatureStats(questions=len(data.questions))
    total = len(data.contexts) + len(data.questions)
    rep.start("building features", total=total)
    ctx_encs, done = _encode(tok, data.contexts, rep, 0, total)
    context_ids = [np.asarray(e.ids, dtype=np.int64) for e in ctx_encs]
    context_offsets = [np.asarray(e.offsets, dtype=np.int64).reshape(-1, 2) for e in ctx_encs]
    del ctx_encs
    q_encs, done = _encode(tok, [q.question for q in data.questions], rep, done, total)
    query_ids = []
    for e in q_encs:
        ids = np.asarray(e.ids, dtype=np.int64)
        if len(ids) > config.max_query_length:
            stats.truncated_questions += 1
            ids = ids[: config.max_query_length]
        query_ids.append(ids)
    del q_encs

    example: list[int] = []
    starts: list[int] = []
    lens: list[int] = []
    start_pos: list[int] = []
    end_pos: list[int] = []
    for qi, q in enumerate(data.questions):
        offsets = context_offsets[q.context]
        room = config.max_seq_length - len(query_ids[qi]) - 3
        span = None
        if not q.answers:
            stats.unanswerable += 1
        elif training:
            a = q.answers[0]
            if a.start is not None:
                span = answer_token_span(offsets, a.start, a.start + len(a.text))
            if span is None:
                stats.untokenizable_answers += 1
                continue  # nothing to learn from: not even a [CLS] label would be right
            got = data.contexts[q.context][offsets[span[0]][0] : offsets[span[1]][1]]
            if got.strip() != a.text.strip():
                stats.inexact_labels += 1
        k = len(query_ids[qi]) + 2
        for s, n in window_starts(len(offsets), room, config.doc_stride):
            example.append(qi)
            starts.append(s)
            lens.append(n)
            if span is not None and s <= span[0] and span[1] < s + n:
                start_pos.append(span[0] - s + k)
                end_pos.append(span[1] - s + k)
                stats.windows_with_answer += training
            else:
                start_pos.append(CLS_POSITION)
                end_pos.append(CLS_POSITION)
                stats.windows_without_answer += training
    rep.finish()
    stats.windows = len(example)
    return Features(
        data=data,
        config=config,
        cls_id=cls_id,
        sep_id=sep_id,
        pad_id=pad_id,
        query_ids=query_ids,
        context_ids=context_ids,
        context_offsets=context_offsets,
        example=np.asarray(example, dtype=np.int64),
        doc_start=np.asarray(starts, dtype=np.int64),
        doc_len=np.asarray(lens, dtype=np.int64),
        start_positions=np.asarray(start_pos, dtype=np.int64),
        end_positions=np.asarray(end_pos, dtype=np.int64),
        stats=stats,
    )


def max_context_owner(windows: Sequence[tuple[int, int]], n_tokens: int) -> np.ndarray:
    """For each context token, the window (index into `windows`) where it has the most context on both
    sides: BERT's score min(left, right) + 0.01 * window length, first window on ties; -1 if none."""
    best = np.full(n_tokens, -np.inf)
    owner = np.full(n_tokens, -1, dtype=np.int64)
    for i, (s, n) in enumerate(windows):
        if n <= 0:
            continue
        pos = np.arange(s, s + n)
        score = np.minimum(pos - s, s + n - 1 - pos) + 0.01 * n
        better = score > best[s : s + n]
        best[s : s + n][better] = score[better]
        owner[s : s + n][better] = i
    return owner
