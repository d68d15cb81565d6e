"""The official SQuAD v1.1 and v2.0 metrics (docs/algorithm.md §4), reproduced to the last printed digit.

Written from the definition, not from the official scripts' code; the tests hold it to the official
figures on two public leaderboard prediction files.

Both versions normalise an answer the same way: lowercase, delete every ASCII punctuation character,
replace the articles `a`, `an`, `the` (as whole words) by a space, collapse whitespace. Exact match (EM) is
equality of normalised strings; F1 is the F1 of the two bags of normalised tokens. A question scores the
maximum over its gold answers, and totals are percentages of the number of questions.

Where the versions differ:

- v1.1 (`score_v1`): a gold answer that normalises to nothing is kept (it can only ever give F1 0).
  Output keys `exact_match`, `f1`.
- v2.0 (`score_v2`): gold answers that normalise to nothing are dropped; a question left without any
  (an unanswerable one) has the gold answer `""`. When the prediction or the gold answer is empty, F1 is
  1 if both are and 0 otherwise. Output keys `exact`, `f1`, `total`, then `HasAns_*` and `NoAns_*` for the
  answerable and unanswerable questions. With no-answer probabilities (`na_probs`), a prediction whose
  probability exceeds the threshold becomes `""`, and `best_threshold` searches the threshold that
  maximises EM and F1 (`best_exact`, `best_exact_thresh`, `best_f1`, `best_f1_thresh`).

Two details that decide the last digits: sums run sequentially in data order (a compensated or pairwise
sum differs in the 15th digit), and a percentage is `100.0 * sum / count`, in that order.

The threshold search has two modes (`THRESHOLD_SEARCHES`):

- `official` (the default): what the v2.0 script does, and so what papers and leaderboards report. The
  questions are taken one at a time in increasing no-answer probability (equal probabilities in the order
  of the `na_probs` mapping, i.e. of its file), and the best running total is kept. Within a run of equal
  probabilities this can report a total reached halfway through the run, which no threshold gives (a
  threshold switches all of them or none).
- `tie-aware`: the same walk, but a total counts only once a whole run of equal probabilities is in, so
  the best is always a score some threshold actually gives. With distinct probabilities the two agree
  to the digit; with ties, `tie-aware` is never above `official`.

Where this module departs from the scripts, on purpose: a question without a prediction scores 0 in both
versions and stays in the denominator (the v1.1 script does this; the v2.0 script crashes on it).
Predictions for ids that are not in the data are ignored. Both lists are returned so the caller can
report them.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from spanbert_cli.errors import DataError, UsageError

VERSIONS = ("1.1", "2.0")
#: How `best_threshold` treats equal no-answer probabilities (see the module docstring).
THRESHOLD_SEARCHES = ("official", "tie-aware")

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


@lru_cache(maxsize=1 << 16)
def normalize_answer(text: str) -> str:
    """Lowercase, drop ASCII punctuation, replace the articles a/an/the by a space, collapse whitespace."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def answer_tokens(text: str) -> list[str]:
    """The normalised tokens of an answer (empty for an empty or all-punctuation answer)."""
    return normalize_answer(text).split()


def exact_match(prediction: str, gold: str) -> int:
    """1 when the normalised strings are equal, else 0."""
    return int(normalize_answer(prediction) == normalize_answer(gold))


def _overlap_f1(pred: list[str], gold: list[str]) -> float:
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0
    precision = common / len(pred)
    recall = common / len(gold)
    return (2 * precision * recall) / (precision + recall)


def f1_v1(prediction: str, gold: str) -> float:
    """Token-bag F1 (v1.1): 0 when nothing is shared, including when either side is empty."""
    return _overlap_f1(answer_tokens(prediction), answer_tokens(gold))


def f1_v2(prediction: str, gold: str) -> float:
    """Token-bag F1 (v2.0): when either side is empty, 1 if both are, else 0."""
    pred, ref = answer_tokens(prediction), answer_tokens(gold)
    if not pred or not ref:
        return int(pred == ref)
    return _overlap_f1(pred, ref)


def _percent(total: float, count: int) -> float:
    return 100.0 * total / count if count else 0.0


def _sequential_sum(values: Sequence[float]) -> float:
    """Left-to-right float sum: what the official scripts compute (Python >= 3.12's `sum` compensates)."""
    total: float = 0
    for v in values:
        total += v
    return total


@dataclass
class ScoreResult:
    """Official metrics (`metrics`, in the official key order) and what the scripts would print aside."""

    version: str
    metrics: dict[str, Any]
    missing: list[str] = field(default_factory=list)  # question ids without a prediction (scored 0)
    unknown: list[str] = field(default_factory=list)  # predicted ids that are not in the data (ignored)
    exact: dict[str, float] = field(default_factory=dict)  # per question, after the threshold (v2.0)
    f1: dict[str, float] = field(default_factory=dict)


def _check_inputs(gold: Mapping[str, Sequence[str]], predictions: Mapping[str, str]) -> tuple[list, list]:
    missing = [qid for qid in gold if qid not in predictions]
    unknown = [qid for qid in predictions if qid not in gold]
    return missing, unknown


def score_v1(gold: Mapping[str, Sequence[str]], predictions: Mapping[str, str]) -> ScoreResult:
    """SQuAD v1.1: `{"exact_match", "f1"}` over every question of `gold` (id -> gold answer texts, in
    data order); a missing prediction scores 0."""
    missing, unknown = _check_inputs(gold, predictions)
    exact: dict[str, float] = {}
    f1: dict[str, float] = {}
    for qid, answers in gold.items():
        if qid not in predictions:
            exact[qid] = f1[qid] = 0
            continue
        pred = predictions[qid]
        refs = list(answers) or [""]  # a v1.1 question always has answers; an empty list scores like ""
        exact[qid] = max(exact_match(pred, a) for a in refs)
        f1[qid] = max(f1_v1(pred, a) for a in refs)
    n = len(gold)
    metrics = {
        "exact_match": _percent(_sequential_sum(list(exact.values())), n),
        "f1": _percent(_sequential_sum(list(f1.values())), n),
    }
    return ScoreResult("1.1", metrics, missing, unknown, exact, f1)


def v2_gold(answers: Sequence[str]) -> list[str]:
    """The v2.0 gold answers of a question: those that normalise to something, else `[""]`."""
    kept = [a for a in answers if normalize_answer(a)]
    return kept or [""]


def raw_scores_v2(
    gold: Mapping[str, Sequence[str]], predictions: Mapping[str, str]
) -> tuple[dict[str, int], dict[str, float]]:
    """Per-question EM and F1 (v2.0) of the questions that have a prediction, in data order."""
    exact: dict[str, int] = {}
    f1: dict[str, float] = {}
    for qid, answers in gold.items():
        if qid not in predictions:
            continue
        pred, refs = predictions[qid], v2_gold(answers)
        exact[qid] = max(exact_match(pred, a) for a in refs)
        f1[qid] = max(f1_v2(pred, a) for a in refs)
    return exact, f1


def apply_threshold(
    scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    has_answer: Mapping[str, bool],
    threshold: float,
) -> dict[str, float]:
    """A question whose no-answer probability exceeds `threshold` is predicted unanswerable: it scores
    1 when it has no answer and 0 when it has one."""
    return {
        qid: (float(not has_answer[qid]) if na_probs[qid] > threshold else s) for qid, s in scores.items()
    }


def best_threshold(
    predictions: Mapping[str, str],
    scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    has_answer: Mapping[str, bool],
    total: int | None = None,
    search: str = "official",
) -> tuple[float, float]:
    """The threshold on `na_probs` that maximises the total score, and that score (a percentage).

    Start with every question predicted unanswerable (the score is the number of unanswerable
    questions), then lower the bar one no-answer probability at a time, in increasing order: an
    answerable question switched to its prediction gains its score, an unanswerable one loses 1 if the
    prediction is not empty. `search` says when a running total may become the best: after every
    question (`official`, as the v2.0 script) or only after the last of a run of equal probabilities
    (`tie-aware`). The first (lowest) threshold reaching the maximum wins; when answering nothing is
    best, the threshold is 0.0, as in the official script. `scores` holds the questions with a
    prediction; `total` (default: their number) is the denominator.
    """
    check_threshold_search(search)
    per_question = search == "official"
    order = sorted(na_probs, key=na_probs.__getitem__)  # stable: ties keep the mapping's (file's) order
    current: float = sum(1 for qid in scores if not has_answer[qid])
    best, best_thresh = current, 0.0
    for i, qid in enumerate(order):
        prob = na_probs[qid]
        if qid in scores:
            if has_answer[qid]:
                current += scores[qid]
            elif predictions[qid]:
                current += -1
        run_ends = i + 1 == len(order) or na_probs[order[i + 1]] != prob
        if (per_question or run_ends) and current > best:
            best, best_thresh = current, prob
    return _percent(best, len(scores) if total is None else total), best_thresh


def check_threshold_search(search: str) -> str:
    """`search` when it is one of `THRESHOLD_SEARCHES`, else a UsageError naming the flag."""
    if search not in THRESHOLD_SEARCHES:
        raise UsageError(f"--threshold-search must be one of {', '.join(THRESHOLD_SEARCHES)}, got {search!r}")
    return search


def score_v2(
    gold: Mapping[str, Sequence[str]],
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
    threshold_search: str = "official",
) -> ScoreResult:
    """SQuAD v2.0: `exact, f1, total, HasAns_*, NoAns_*` and, with `na_probs`, the best-threshold search
    (`threshold_search`: `official` or `tie-aware`, see the module docstring).

    A question is answerable when it has at least one gold answer (of any normalised length). Without
    `na_probs`, every no-answer probability is 0 and the threshold changes nothing. `na_probs` must
    cover every predicted question that is in the data.
    """
    missing, unknown = _check_inputs(gold, predictions)
    has_answer = {qid: bool(answers) for qid, answers in gold.items()}
    raw_exact, raw_f1 = raw_scores_v2(gold, predictions)
    probs: Mapping[str, float] = na_probs if na_probs is not None else {qid: 0.0 for qid in predictions}
    lacking = [qid for qid in raw_exact if qid not in probs]
    if lacking:
        raise DataError(
            f"the no-answer probabilities lack {len(lacking)} predicted question(s), e.g. {lacking[0]}"
        )
    exact = apply_threshold(raw_exact, probs, has_answer, na_prob_thresh)
    f1 = apply_threshold(raw_f1, probs, has_answer, na_prob_thresh)
    for qid in missing:  # counted as wrong, in data order
        exact[qid] = f1[qid] = 0
    exact = {qid: exact[qid] for qid in gold}
    f1 = {qid: f1[qid] for qid in gold}

    def block(qids: list[str], prefix: str) -> dict[str, Any]:
        return {
            f"{prefix}exact": _percent(_sequential_sum([exact[q] for q in qids]), len(qids)),
            f"{prefix}f1": _percent(_sequential_sum([f1[q] for q in qids]), len(qids)),
            f"{prefix}total": len(qids),
        }

    metrics = block(list(gold), "")
    has_ans = [qid for qid, yes in has_answer.items() if yes]
    no_ans = [qid for qid, yes in has_answer.items() if not yes]
    if has_ans:
        metrics.update(block(has_ans, "HasAns_"))
    if no_ans:
        metrics.update(block(no_ans, "NoAns_"))
    if na_probs is not None:
        present = {qid: p for qid, p in probs.items() if qid in raw_exact}
        total = len(gold)
        metrics["best_exact"], metrics["best_exact_thresh"] = best_threshold(
            predictions, raw_exact, present, has_answer, total, threshold_search
        )
        metrics["best_f1"], metrics["best_f1_thresh"] = best_threshold(
            predictions, raw_f1, present, has_answer, total, threshold_search
        )
    return ScoreResult("2.0", metrics, missing, unknown, exact, f1)


def score(
    gold: Mapping[str, Sequence[str]],
    predictions: Mapping[str, str],
    version: str,
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
    threshold_search: str = "official",
) -> ScoreResult:
    """Score with the official metrics of `version` ("1.1" or "2.0"); na_probs and the threshold search
    apply to v2.0 only."""
    check_threshold_search(threshold_search)
    if version == "1.1":
        if na_probs is not None:
            raise UsageError(
                "no-answer probabilities apply to SQuAD v2.0 only; drop --na-probs or use --version 2.0"
            )
        return score_v1(gold, predictions)
    if version == "2.0":
        if not math.isfinite(na_prob_thresh):
            raise UsageError(f"--na-prob-thresh must be a finite number, got {na_prob_thresh}")
        return score_v2(gold, predictions, na_probs, na_prob_thresh, threshold_search)
    raise UsageError(f"unknown SQuAD version {version!r} (choose from {', '.join(VERSIONS)})")
