"""Official SQuAD scoring (docs/algorithm.md §4) and SQuAD data loading: figures to the digit, bad input."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest
from conftest import SQUAD, assert_one_line_error

from spanbert_cli.errors import DataError, UsageError
from spanbert_cli.eval.squad import data as sd
from spanbert_cli.eval.squad import scoring

# The official scripts' output on the leaderboard predictions in tests/data/squad (its README.md).
OFFICIAL_V1 = {"exact_match": 86.20624408703878, "f1": 92.19557978351145}
OFFICIAL_V2 = {
    "exact": 75.82750779078582,
    "f1": 78.77776770381462,
    "total": 11873,
    "HasAns_exact": 69.61875843454791,
    "HasAns_f1": 75.52773885752187,
    "HasAns_total": 5928,
    "NoAns_exact": 82.01850294365012,
    "NoAns_f1": 82.01850294365012,
    "NoAns_total": 5945,
}
# The official v2.0 script's threshold search on v2.0-nlnet-single with the no-answer probabilities of
# `made_na_probs` (tests/data/squad/README.md): (best_exact, its threshold, best_f1, its threshold).
OFFICIAL_BEST = {
    "distinct": (75.82750779078582, 0.49988703255662303, 78.77776770381435, 0.4999177912487195),
    "hard": (75.82750779078582, 0.0, 78.77776770381439, 0.0),
    "rounded": (75.8443527330919, 0.5, 78.78848721255459, 0.5),
}
# The tie-aware search on the one case whose ties change the result: the scores the threshold 0.5 gives.
TIE_AWARE_ROUNDED = (75.82750779078582, 0.5, 78.77776770381435, 0.5)
BEST_KEYS = ("best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh")


@pytest.fixture(scope="module")
def squad_dir() -> Path:
    return SQUAD


def write_json(path: Path, obj: object, gz: bool = False) -> Path:
    data = json.dumps(obj).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


# --------------------------------------------------------------------------------------------------
# the official figures


def test_official_v11_figures_to_the_digit(squad_dir: Path) -> None:
    data = sd.load_squad(squad_dir / "dev-v1.1.json.gz")
    preds = sd.load_predictions(squad_dir / "predictions" / "v1.1-bert-ensemble.json.gz")
    assert data.version == "1.1" and len(data) == 10570
    result = scoring.score(data.gold(), preds, data.version)
    assert result.metrics == OFFICIAL_V1  # == on floats: every digit
    assert list(result.metrics) == list(OFFICIAL_V1)
    assert result.missing == [] and result.unknown == []


def test_official_v20_figures_to_the_digit(squad_dir: Path) -> None:
    data = sd.load_squad(squad_dir / "dev-v2.0.json.gz")
    preds = sd.load_predictions(squad_dir / "predictions" / "v2.0-nlnet-single.json.gz")
    assert data.version == "2.0" and data.num_unanswerable == 5945
    result = scoring.score(data.gold(), preds, data.version)
    assert result.metrics == OFFICIAL_V2
    assert list(result.metrics) == list(OFFICIAL_V2)  # the official key order


def made_na_probs(predictions: dict[str, str], kind: str) -> dict[str, float]:
    """No-answer probabilities for a leaderboard's predictions (it published none), in its file order.

    `distinct`: from a hash of the id, in [0.5, 1) for an empty prediction and in [0, 0.5) otherwise;
    `hard`: 1.0 for an empty prediction, else 0.0 (two runs of ties); `rounded`: `distinct` rounded to
    two decimals (101 values, ties everywhere, some mixing both kinds of prediction at 0.5)."""

    def unit(qid: str) -> float:
        return int(hashlib.sha256(qid.encode()).hexdigest()[:13], 16) / 16**13

    distinct = {q: (0.5 + unit(q) / 2 if p == "" else unit(q) / 2) for q, p in predictions.items()}
    if kind == "distinct":
        return distinct
    if kind == "hard":
        return {q: 1.0 if p == "" else 0.0 for q, p in predictions.items()}
    assert kind == "rounded"
    return {q: round(v, 2) for q, v in distinct.items()}


@pytest.mark.parametrize("kind", list(OFFICIAL_BEST))
def test_official_threshold_search_to_the_digit(squad_dir: Path, kind: str) -> None:
    """The default search is the v2.0 script's, ties included; tie-aware differs only where ties cut."""
    data = sd.load_squad(squad_dir / "dev-v2.0.json.gz")
    preds = sd.load_predictions(squad_dir / "predictions" / "v2.0-nlnet-single.json.gz")
    na = made_na_probs(preds, kind)
    assert len(set(na.values())) == {"distinct": len(na), "hard": 2, "rounded": 101}[kind]
    metrics = scoring.score(data.gold(), preds, "2.0", na).metrics
    assert metrics == {**OFFICIAL_V2, **dict(zip(BEST_KEYS, OFFICIAL_BEST[kind], strict=True))}
    assert list(metrics) == [*OFFICIAL_V2, *BEST_KEYS]  # the official key order
    tie_aware = scoring.score(data.gold(), preds, "2.0", na, threshold_search="tie-aware").metrics
    best = tuple(tie_aware[k] for k in BEST_KEYS)
    assert best == (TIE_AWARE_ROUNDED if kind == "rounded" else OFFICIAL_BEST[kind])
    # tie-aware reports what its threshold gives (to float noise: the sums run in another order)
    at = scoring.score(data.gold(), preds, "2.0", na, na_prob_thresh=best[1]).metrics
    assert at["exact"] == pytest.approx(best[0], abs=1e-9)
    if kind == "rounded":  # the official figure is half a run of ties: no threshold gives it
        assert metrics["best_exact"] > at["exact"] + 0.01


def test_cli_reproduces_official_figures(cli, squad_dir: Path) -> None:
    preds = squad_dir / "predictions"
    r = cli(
        "eval",
        "squad",
        "--predictions",
        preds / "v1.1-bert-ensemble.json.gz",
        "--data",
        squad_dir / "dev-v1.1.json.gz",
        "--json",
    )
    assert r.code == 0, r.err
    assert json.loads(r.out) == OFFICIAL_V1
    assert "86.20624408703878" in r.err and "92.19557978351145" in r.err  # the table shows every digit

    r = cli(
        "eval",
        "squad",
        "--predictions",
        preds / "v2.0-nlnet-single.json.gz",
        "--data",
        squad_dir / "dev-v2.0.json.gz",
        "--json",
        "--quiet",
    )
    assert r.code == 0, r.err
    assert json.loads(r.out) == OFFICIAL_V2 and r.err == ""


def test_cli_threshold_search_flag(cli, squad_dir: Path, tmp_path: Path) -> None:
    preds = squad_dir / "predictions" / "v2.0-nlnet-single.json.gz"
    na = write_json(tmp_path / "na.json", made_na_probs(sd.load_predictions(preds), "rounded"))
    score = ["eval", "squad", "--predictions", preds, "--data", squad_dir / "dev-v2.0.json.gz"]
    score += ["--na-probs", na, "--json", "--quiet"]
    for flags, expected in (
        ([], OFFICIAL_BEST["rounded"]),
        (["--threshold-search", "official"], OFFICIAL_BEST["rounded"]),
        (["--threshold-search", "tie-aware"], TIE_AWARE_ROUNDED),
    ):
        r = cli(*score, *flags)
        assert r.code == 0, r.err
        assert tuple(json.loads(r.out)[k] for k in BEST_KEYS) == expected
    r = cli(*score, "--threshold-search", "ties")
    assert_one_line_error(r, "--threshold-search", "official, tie-aware", code=2)


def test_flattened_rows_score_like_the_official_format(tmp_path: Path, squad_dir: Path) -> None:
    """Hugging Face's flattened rows (JSON list, JSON Lines) give the same data and the same figures."""
    data = sd.load_squad(squad_dir / "dev-v1.1.json.gz")
    rows = [
        {
            "id": q.id,
            "title": data.titles[q.context],
            "context": data.contexts[q.context],
            "question": q.question,
            "answers": {"text": [a.text for a in q.answers], "answer_start": [a.start for a in q.answers]},
        }
        for q in data.questions
    ]
    as_list = write_json(tmp_path / "rows.json", rows)
    as_lines = tmp_path / "rows.jsonl"
    as_lines.write_text("".join(json.dumps(r) + "\n" for r in rows))
    preds = sd.load_predictions(squad_dir / "predictions" / "v1.1-bert-ensemble.json.gz")
    for path in (as_list, as_lines):
        flat = sd.load_squad(path)
        assert flat.version == "1.1" and flat.gold() == data.gold()
        assert len(flat.contexts) == len(data.contexts)
        assert scoring.score(flat.gold(), preds, flat.version).metrics == OFFICIAL_V1


def test_dumps_official_round_trips(tmp_path: Path, squad_dir: Path) -> None:
    data = sd.load_squad(squad_dir / "train-v2.0-first10.json.gz").head(300)
    again = sd.load_squad(write_json(tmp_path / "t.json", sd.dumps_official(data)))
    assert again.version == "2.0" and again.questions == data.questions and again.contexts == data.contexts


# --------------------------------------------------------------------------------------------------
# the definitions, on small cases


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("The Denver Broncos!", "denver broncos"),
        ("an  apple, a pear", "apple pear"),
        ("Theatre of the absurd", "theatre of absurd"),
        ("U.S.-based", "usbased"),
        ("  «Naïve»  ", "«naïve»"),  # only ASCII punctuation is removed
        ("...", ""),
    ],
)
def test_normalize_answer(text: str, normalised: str) -> None:
    assert scoring.normalize_answer(text) == normalised


def test_f1_versions_differ_only_on_empty_answers() -> None:
    assert scoring.f1_v1("blue", "blue sky") == scoring.f1_v2("blue", "blue sky") == pytest.approx(2 / 3)
    assert scoring.f1_v1("", "") == 0 and scoring.f1_v2("", "") == 1
    assert scoring.f1_v2("the", "") == 1  # normalises to nothing on both sides
    assert scoring.f1_v2("x", "") == 0 and scoring.f1_v2("", "x") == 0


def test_v2_gold_drops_answers_that_normalise_to_nothing() -> None:
    assert scoring.v2_gold(["The", "a cat"]) == ["a cat"]
    assert scoring.v2_gold(["the"]) == [""]
    gold = {"q": ["the"]}  # answerable by the data, but its only gold normalises to ""
    assert scoring.score_v2(gold, {"q": ""}).metrics["HasAns_exact"] == 100.0


# A small constructed v2.0 case: three answerable, three unanswerable questions.
GOLD = {
    "q1": ["red car"],
    "q2": ["blue sky"],
    "q3": [],
    "q4": [],
    "q5": ["dog"],
    "q6": [],
}
PREDS = {"q1": "red car", "q2": "blue", "q3": "x", "q4": "", "q5": "cat", "q6": "y"}
NA = {"q1": 0.1, "q2": 0.2, "q3": 0.3, "q4": 0.9, "q5": 0.7, "q6": 0.8}


def test_threshold_search_hand_computed() -> None:
    # All unanswered: 3 of 6 right (q3, q4, q6). Lowering the threshold through the sorted
    # probabilities: q1 (0.1) +1 -> EM 4, F1 4; q2 (0.2) +0 / +2/3 -> EM 4, F1 4 2/3; q3 (0.3) -1;
    # q5 (0.7) +0; q6 (0.8) -1; q4 (0.9) 0 (its prediction is empty).
    m = scoring.score_v2(GOLD, PREDS, NA).metrics
    assert m["best_exact"] == pytest.approx(100 * 4 / 6, abs=1e-12)
    assert m["best_exact_thresh"] == 0.1  # the lowest threshold reaching the best
    assert m["best_f1"] == pytest.approx(100 * (4 + 2 / 3) / 6, abs=1e-12)
    assert m["best_f1_thresh"] == 0.2
    # The default threshold (1.0) changes nothing: right are q1 and q4; q2 has F1 2/3.
    assert m["exact"] == pytest.approx(100 * 2 / 6) and m["f1"] == pytest.approx(100 * (2 + 2 / 3) / 6)
    assert m["HasAns_exact"] == pytest.approx(100 / 3) and m["HasAns_f1"] == pytest.approx(100 * (5 / 3) / 3)
    assert m["NoAns_exact"] == pytest.approx(100 / 3) and m["total"] == 6
    assert list(m)[-4:] == ["best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"]


def test_na_prob_thresh_turns_predictions_into_no_answer() -> None:
    # Above 0.5: q5 (answerable: 0), q6 and q4 (unanswerable: 1); q3 (0.3) keeps its answer.
    m = scoring.score_v2(GOLD, PREDS, NA, na_prob_thresh=0.5).metrics
    assert m["exact"] == pytest.approx(100 * 3 / 6)
    assert m["f1"] == pytest.approx(100 * (3 + 2 / 3) / 6)
    assert m["NoAns_exact"] == pytest.approx(200 / 3)  # q3 (0.3) keeps its wrong answer


def test_tie_aware_search_is_the_best_achievable_threshold() -> None:
    """Brute force: every candidate threshold applied in full; ties switch together."""
    tied = {**NA, "q3": 0.2}  # q2 and q3 now share 0.2: both switch, or neither

    def brute(key: str) -> float:
        best = scoring.score_v2(GOLD, PREDS, tied, na_prob_thresh=-1.0).metrics[key]
        for t in set(tied.values()):
            best = max(best, scoring.score_v2(GOLD, PREDS, tied, na_prob_thresh=t).metrics[key])
        return best

    m = scoring.score_v2(GOLD, PREDS, tied, threshold_search="tie-aware").metrics
    assert m["best_exact"] == pytest.approx(brute("exact"))
    assert m["best_f1"] == pytest.approx(brute("f1")) == pytest.approx(100 * 4 / 6)  # not 4 2/3
    assert m["best_f1_thresh"] == 0.1


def test_official_search_counts_half_a_run_of_ties() -> None:
    """The v2.0 script's walk: q1 (0.1) +1, q2 (0.2) +2/3, then q3 (0.2) -1; it keeps 4 2/3 at 0.2, a
    score no threshold gives (at 0.2 both q2 and q3 switch: 3 2/3)."""
    tied = {**NA, "q3": 0.2}
    m = scoring.score_v2(GOLD, PREDS, tied).metrics  # the default is the official search
    assert m == scoring.score_v2(GOLD, PREDS, tied, threshold_search="official").metrics
    assert m["best_f1"] == pytest.approx(100 * (4 + 2 / 3) / 6, abs=1e-12) and m["best_f1_thresh"] == 0.2
    at = scoring.score_v2(GOLD, PREDS, tied, na_prob_thresh=0.2).metrics["f1"]
    assert at == pytest.approx(100 * (3 + 2 / 3) / 6) and at < m["best_f1"]
    # Ties in the other order (q3 before q2 in the mapping, as in a file): the walk sees q3 first.
    reordered = {"q1": 0.1, "q3": 0.2, "q2": 0.2, "q4": 0.9, "q5": 0.7, "q6": 0.8}
    m2 = scoring.score_v2(GOLD, PREDS, reordered).metrics
    assert m2["best_f1"] == pytest.approx(100 * 4 / 6) and m2["best_f1_thresh"] == 0.1
    with pytest.raises(UsageError, match="--threshold-search must be one of official, tie-aware"):
        scoring.score(GOLD, PREDS, "2.0", tied, threshold_search="ties")


def test_all_unanswered_is_best_gives_threshold_zero() -> None:
    gold, preds = {"a": [], "b": ["x"]}, {"a": "junk", "b": "wrong"}
    m = scoring.score_v2(gold, preds, {"a": 0.4, "b": 0.6}).metrics
    assert m["best_exact"] == 50.0 and m["best_exact_thresh"] == 0.0


def test_missing_predictions_count_as_wrong_and_unknown_ids_are_ignored() -> None:
    gold = {"a": ["x"], "b": ["y"], "c": []}
    r1 = scoring.score(gold, {"a": "x", "zzz": "?"}, "1.1")
    assert r1.missing == ["b", "c"] and r1.unknown == ["zzz"]
    assert r1.metrics["exact_match"] == pytest.approx(100 / 3)
    r2 = scoring.score(gold, {"a": "x", "zzz": "?"}, "2.0")  # the v2.0 script would crash here
    assert r2.missing == ["b", "c"] and r2.metrics["total"] == 3
    assert r2.metrics["exact"] == pytest.approx(100 / 3) and r2.metrics["NoAns_exact"] == 0.0
    r3 = scoring.score(gold, {"a": "x", "c": ""}, "2.0", {"a": 0.1, "c": 0.9})
    assert r3.metrics["best_exact"] == pytest.approx(200 / 3) and r3.metrics["total"] == 3


def test_scoring_bad_arguments() -> None:
    with pytest.raises(DataError, match="lack 1 predicted question"):
        scoring.score({"a": ["x"], "b": []}, {"a": "x", "b": ""}, "2.0", {"a": 0.5})
    with pytest.raises(UsageError, match=r"v2\.0 only"):
        scoring.score({"a": ["x"]}, {"a": "x"}, "1.1", {"a": 0.5})
    with pytest.raises(UsageError, match="version"):
        scoring.score({"a": ["x"]}, {"a": "x"}, "3.0")


# --------------------------------------------------------------------------------------------------
# loading and bad input


def _tiny_official(version: str = "1.1") -> dict:
    qa = {"id": "q0", "question": "Who?", "answers": [{"text": "Ann", "answer_start": 0}]}
    return {
        "version": version,
        "data": [{"title": "T", "paragraphs": [{"context": "Ann ran.", "qas": [qa]}]}],
    }


def test_version_detection_and_override(tmp_path: Path) -> None:
    assert sd.load_squad(write_json(tmp_path / "a.json", _tiny_official("1.1"))).version == "1.1"
    assert sd.load_squad(write_json(tmp_path / "b.json.gz", _tiny_official("v2.0"), gz=True)).version == "2.0"
    obj = _tiny_official("")
    assert sd.load_squad(write_json(tmp_path / "c.json", obj)).version == "1.1"
    obj["data"][0]["paragraphs"][0]["qas"].append(
        {"id": "q1", "question": "?", "answers": [], "is_impossible": True}
    )
    assert sd.load_squad(write_json(tmp_path / "d.json", obj)).version == "2.0"  # has an unanswerable
    assert sd.load_squad(tmp_path / "a.json", version="2.0").version == "2.0"
    with pytest.raises(UsageError, match="--version"):
        sd.load_squad(tmp_path / "a.json", version="3")


def _corrupt(obj: dict, where: tuple, value: object) -> dict:
    node = obj
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    return obj


@pytest.mark.parametrize(
    ("where", "value", "fragments"),
    [
        (("data", 0, "paragraphs"), {}, ["data[0]", "'paragraphs' must be a list"]),
        (("data", 0, "paragraphs", 0, "context"), 5, ["data[0].paragraphs[0]", "'context'"]),
        (("data", 0, "paragraphs", 0, "qas", 0, "id"), None, ["data[0].paragraphs[0].qas[0]", "'id'"]),
        (("data", 0, "paragraphs", 0, "qas", 0, "answers"), "Ann", ["qas[0]", "'answers' must be a list"]),
        (
            ("data", 0, "paragraphs", 0, "qas", 0, "answers", 0, "answer_start"),
            "0",
            ["qas[0].answers[0]", "'answer_start' must be an integer"],
        ),
        (("data", 0, "paragraphs", 0, "qas", 0, "answers", 0, "text"), 7, ["answers[0]", "'text'"]),
        (("data", 0, "paragraphs", 0, "qas", 0, "is_impossible"), True, ["is_impossible"]),
        (("data",), [], ["no questions"]),
    ],
)
def test_malformed_squad_names_file_and_record(tmp_path: Path, where, value, fragments) -> None:
    path = write_json(tmp_path / "bad.json", _corrupt(_tiny_official(), where, value))
    with pytest.raises(DataError) as e:
        sd.load_squad(path)
    for frag in ["bad.json", *fragments]:
        assert frag in str(e.value)


def test_malformed_record_deep_in_real_data(tmp_path: Path, squad_dir: Path) -> None:
    obj = json.loads(gzip.decompress((squad_dir / "dev-v1.1.json.gz").read_bytes()))
    del obj["data"][3]["paragraphs"][7]["qas"][2]["question"]
    obj["data"][3]["paragraphs"][7]["qas"][2]["question"] = ["not", "text"]
    path = write_json(tmp_path / "dev.json.gz", obj, gz=True)
    with pytest.raises(DataError, match=r"data\[3\]\.paragraphs\[7\]\.qas\[2\]: 'question' must be a string"):
        sd.load_squad(path)
    obj["data"][3]["paragraphs"][7]["qas"][2] = dict(obj["data"][3]["paragraphs"][7]["qas"][1])
    path = write_json(tmp_path / "dup.json", obj)
    with pytest.raises(
        DataError, match=r"qas\[2\]: duplicate question id .*first at data\[3\]\.paragraphs\[7\]\.qas\[1\]"
    ):
        sd.load_squad(path)


def test_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"data": [')
    (tmp_path / "bad.json.gz").write_bytes(b"\x1f\x8bnot gzip at all")
    (tmp_path / "rows.jsonl").write_text('{"id": "a", "context": "c", "question": "q"}\n{oops\n')
    (tmp_path / "other.json").write_text('{"articles": []}')
    cases = [
        ("bad.json", "not valid JSON (line 1"),
        ("bad.json.gz", "unreadable"),
        ("rows.jsonl", "line 2 is not valid JSON"),
        ("other.json", "not SQuAD JSON"),
        ("absent.json", "not found"),
    ]
    for name, frag in cases:
        with pytest.raises(DataError, match=frag.replace("(", r"\(")):
            sd.load_squad(tmp_path / name)


def test_bad_predictions_and_na_probs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="must be a JSON object"):
        sd.load_predictions(write_json(tmp_path / "p.json", ["a"]))
    with pytest.raises(DataError, match="prediction for 'q1' must be a string, got int 3"):
        sd.load_predictions(write_json(tmp_path / "p.json", {"q0": "x", "q1": 3}))
    with pytest.raises(DataError, match="no-answer probability of 'q1' must be a finite number"):
        sd.load_na_probs(write_json(tmp_path / "n.json", {"q0": 0.5, "q1": "0.3"}))
    for bad in ("true", "NaN", "null"):
        (tmp_path / "n.json").write_text(f'{{"q0": {bad}}}')
        with pytest.raises(DataError, match="'q0' must be a finite number"):
            sd.load_na_probs(tmp_path / "n.json")
    assert sd.load_na_probs(write_json(tmp_path / "n.json", {"q0": 1, "q1": 0.25})) == {"q0": 1.0, "q1": 0.25}


def test_answer_start_mismatch_is_found_by_search_or_dropped_and_counted() -> None:
    obj = _tiny_official()
    qas = obj["data"][0]["paragraphs"][0]["qas"]
    obj["data"][0]["paragraphs"][0]["context"] = "Ann met Bob. Then Ann ran."
    qas[0]["answers"] = [{"text": "Ann", "answer_start": 16}]  # off by two: nearest occurrence is 18
    qas.append({"id": "q1", "question": "?", "answers": [{"text": "Bob", "answer_start": 8}]})  # right
    qas.append({"id": "q2", "question": "?", "answers": [{"text": "Carl", "answer_start": 0}]})  # absent
    qas.append({"id": "q3", "question": "?", "answers": [{"text": " Bob.", "answer_start": 99}]})
    data = sd.parse_squad(obj, "mem")
    aligned, stats = sd.align_answers(data)
    assert stats.to_dict() == {
        "answers": 4,
        "matched": 1,
        "relocated": 2,
        "unmatched": 1,
        "questions_dropped": 1,
    }
    got = {q.id: q.answers for q in aligned.questions}
    assert got["q0"][0].start == 18 and "q2" not in got
    assert got["q3"][0] == sd.Answer("Bob.", 8)


# --------------------------------------------------------------------------------------------------
# the CLI's one-line errors


def test_cli_scoring_bad_input(cli, tmp_path: Path, squad_dir: Path) -> None:
    dev = squad_dir / "dev-v2.0.json.gz"
    r = cli("eval", "squad", "--predictions", write_json(tmp_path / "p.json", [1, 2]), "--data", dev)
    assert_one_line_error(r, "p.json", "JSON object", code=1)
    r = cli("eval", "squad", "--predictions", write_json(tmp_path / "p.json", {"a": None}), "--data", dev)
    assert_one_line_error(r, "'a' must be a string", code=1)
    preds = write_json(tmp_path / "p.json", {"56ddde6b9a695914005b9628": "France"})
    r = cli(
        "eval",
        "squad",
        "--predictions",
        preds,
        "--data",
        dev,
        "--na-probs",
        write_json(tmp_path / "n.json", {"56ddde6b9a695914005b9628": "high"}),
    )
    assert_one_line_error(r, "n.json", "finite number", code=1)
    bad = write_json(tmp_path / "d.json", _corrupt(_tiny_official(), ("data", 0, "paragraphs", 0, "qas"), 3))
    r = cli("eval", "squad", "--predictions", preds, "--data", bad)
    assert_one_line_error(r, "d.json", "data[0].paragraphs[0]", "'qas' must be a list", code=1)
    r = cli("eval", "squad", "--predictions", preds)
    assert_one_line_error(r, "--data", code=2)


def test_cli_reports_missing_and_unknown_predictions(cli, tmp_path: Path) -> None:
    obj = _tiny_official()
    obj["data"][0]["paragraphs"][0]["qas"].append(
        {"id": "q1", "question": "?", "answers": [{"text": "ran", "answer_start": 4}]}
    )
    data = write_json(tmp_path / "d.json", obj)
    r = cli(
        "eval",
        "squad",
        "--predictions",
        write_json(tmp_path / "p.json", {"q0": "Ann", "zz": "x"}),
        "--data",
        data,
        "--json",
    )
    assert r.code == 0, r.err
    assert json.loads(r.out) == {"exact_match": 50.0, "f1": 50.0}
    assert "1 question(s) without a prediction score 0" in r.err and "q1" in r.err
    assert "1 prediction(s) for ids not in the data were ignored" in r.err and "zz" in r.err


def test_cli_v2_with_na_probs(cli, tmp_path: Path) -> None:
    rows = [
        {
            "id": qid,
            "context": "red car blue sky dog",
            "question": "?",
            "answers": {"text": ans, "answer_start": [0] * len(ans)},
        }
        for qid, ans in GOLD.items()
    ]
    data = write_json(tmp_path / "rows.json", rows)
    preds = write_json(tmp_path / "p.json", PREDS)
    na = write_json(tmp_path / "na.json", NA)
    r = cli(
        "eval",
        "squad",
        "--predictions",
        preds,
        "--data",
        data,
        "--na-probs",
        na,
        "--na-prob-thresh",
        "0.5",
        "--json",
    )
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out == scoring.score_v2(GOLD, PREDS, NA, 0.5).metrics
    assert out["best_f1_thresh"] == 0.2 and "best_f1" in r.err
    r = cli("eval", "squad", "--predictions", preds, "--data", data, "--version", "1.1", "--na-probs", na)
    assert_one_line_error(r, "v2.0 only", code=2)
