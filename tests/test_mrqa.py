"""MRQA shared-task files (`spanbert eval squad --train/--dev`): read from their content, scored as MRQA's
official evaluation scores them (SQuAD v1.1's EM / F1 over the `answers` strings), fine-tuned on end to
end. The MRQA files are made here from the shipped SQuAD data (MRQA's SQuAD split is SQuAD v1.1)."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest
import torch
from conftest import SQUAD, assert_one_line_error
from safetensors.torch import save_file

from spanbert_cli import artifacts
from spanbert_cli.errors import DataError
from spanbert_cli.eval.squad import data as sd
from spanbert_cli.eval.squad import scoring
from spanbert_cli.model.spanbert import ModelConfig, SpanBert, hf_config_dict, to_hf_state_dict
from spanbert_cli.text.wordpiece import load_tokenizer, write_tokenizer_files

# The official v1.1 script on the leaderboard predictions (tests/data/squad/README.md).
OFFICIAL_V1 = {"exact_match": 86.20624408703878, "f1": 92.19557978351145}

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------------
# SQuAD -> MRQA, as the MRQA shared task laid its files out


def _tokens(text: str) -> list[list]:
    """Whitespace tokens with their character offsets (MRQA's `context_tokens` / `question_tokens`)."""
    return [[m.group(), m.start()] for m in re.finditer(r"\S+", text)]


def _token_span(tokens: list[list], start: int, end: int) -> list[int]:
    """The tokens that characters start..end (inclusive) touch."""
    inside = [i for i, (tok, off) in enumerate(tokens) if off <= end and off + len(tok) > start]
    return [inside[0], inside[-1]]


def mrqa_lines(data: sd.SquadData, split: str) -> list[dict]:
    """`data` (offsets checked by `align_answers`) as MRQA lines: a header, then one line per context
    with its answerable questions (MRQA has no unanswerable ones); the SQuAD ids become the qids."""
    lines: list[dict] = [{"header": {"dataset": "SQuAD", "split": split}}]
    by_context: dict[int, dict] = {}
    for q in data.questions:
        if not q.answers:
            continue
        context = data.contexts[q.context]
        line = by_context.get(q.context)
        if line is None:
            line = {
                "id": f"ctx{q.context}",
                "context": context,
                "context_tokens": _tokens(context),
                "qas": [],
            }
            by_context[q.context] = line
            lines.append(line)
        detected: dict[str, dict] = {}
        for a in q.answers:
            assert a.start is not None
            span = [a.start, a.start + len(a.text) - 1]
            det = detected.setdefault(a.text, {"text": a.text, "char_spans": [], "token_spans": []})
            if span not in det["char_spans"]:
                det["char_spans"].append(span)
                det["token_spans"].append(_token_span(line["context_tokens"], *span))
        line["qas"].append(
            {
                "id": q.id,
                "qid": q.id,
                "question": q.question,
                "question_tokens": _tokens(q.question),
                "answers": [a.text for a in q.answers],
                "detected_answers": list(detected.values()),
            }
        )
    return lines


def write_mrqa(path: Path, lines: list[dict]) -> Path:
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
    path.write_bytes(gzip.compress(text, mtime=0) if path.name.endswith(".gz") else text)
    return path


@pytest.fixture(scope="module")
def dev_v1() -> sd.SquadData:
    data, stats = sd.align_answers(sd.load_squad(SQUAD / "dev-v1.1.json.gz"))
    assert stats.unmatched == 0
    return data


@pytest.fixture(scope="module")
def dev_mrqa(tmp_path_factory: pytest.TempPathFactory, dev_v1: sd.SquadData) -> Path:
    return write_mrqa(tmp_path_factory.mktemp("mrqa") / "SQuAD-dev.jsonl.gz", mrqa_lines(dev_v1, "dev"))


# --------------------------------------------------------------------------------------------------
# reading and scoring


def test_mrqa_dev_scores_like_squad_to_the_digit(dev_mrqa: Path, dev_v1: sd.SquadData) -> None:
    mrqa = sd.load_squad(dev_mrqa)
    assert mrqa.format == "mrqa" and mrqa.version == "1.1" and len(mrqa) == len(dev_v1) == 10570
    assert mrqa.gold() == dev_v1.gold()  # the `answers` strings, duplicates and order kept
    assert [q.id for q in mrqa.questions] == [q.id for q in dev_v1.questions]
    preds = sd.load_predictions(SQUAD / "predictions" / "v1.1-bert-ensemble.json.gz")
    assert scoring.score(mrqa.gold(), preds, mrqa.version).metrics == OFFICIAL_V1
    # training reads the detected spans: distinct, in the order given, exactly the context's text
    q = mrqa.questions[0]
    assert all(mrqa.contexts[q.context][a.start :].startswith(a.text) for a in q.answers)
    assert len({(a.text, a.start) for a in q.answers}) == len(q.answers)


def test_mrqa_is_told_by_content_not_name(tmp_path: Path, dev_v1: sd.SquadData) -> None:
    lines = mrqa_lines(dev_v1.head(40), "dev")
    for name in ("dev.jsonl", "dev.json", "dev.json.gz", "dev.txt"):
        data = sd.load_squad(write_mrqa(tmp_path / name, lines))
        assert data.format == "mrqa" and data.gold() == dev_v1.head(40).gold(), name
    # without the header line (a file cut from a bigger one) it is still MRQA
    assert sd.load_squad(write_mrqa(tmp_path / "body.jsonl", lines[1:])).format == "mrqa"
    # concatenated files keep their headers
    both = [*lines[:3], {"header": {"dataset": "SQuAD", "split": "dev"}}, *lines[3:]]
    assert len(sd.load_squad(write_mrqa(tmp_path / "cat.jsonl", both))) == 40
    assert sd.load_squad(write_mrqa(tmp_path / "v2.jsonl", lines), version="2.0").version == "2.0"


def test_cli_scores_predictions_against_mrqa(cli, dev_mrqa: Path) -> None:
    preds = SQUAD / "predictions" / "v1.1-bert-ensemble.json.gz"
    r = cli("eval", "squad", "--predictions", preds, "--data", dev_mrqa, "--json", "--quiet")
    assert r.code == 0, r.err
    assert json.loads(r.out) == OFFICIAL_V1


def _bad(lines: list[dict], line: int, edit) -> list[dict]:
    out = json.loads(json.dumps(lines))
    edit(out[line - 1])
    return out


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (lambda ln: ln["qas"][1].pop("qid"), ["line 3: qas[1]", "'qid' must be a non-empty string"]),
        (
            lambda ln: ln["qas"][0].update(answers="Denver"),
            ["line 3: qas[0]", "'answers' must be a non-empty"],
        ),
        (lambda ln: ln["qas"][0].update(answers=[]), ["line 3: qas[0]", "'answers' must be a non-empty"]),
        (lambda ln: ln["qas"][0]["answers"].append(7), ["line 3: qas[0].answers[3]", "must be a string"]),
        (
            lambda ln: ln["qas"][2].update(detected_answers=[]),
            ["line 3: qas[2]", "'detected_answers' must be a non-empty list"],
        ),
        (
            lambda ln: ln["qas"][2]["detected_answers"][0]["char_spans"][0].__setitem__(1, 10**6),
            ["line 3: qas[2].detected_answers[0].char_spans[0]", "0 <= start <= end <", "[291, 1000000]"],
        ),
        (
            lambda ln: ln["qas"][2]["detected_answers"][0].update(char_spans=[["291", 294]]),
            ["line 3: qas[2].detected_answers[0].char_spans[0]", "must be [start, end]"],
        ),
        (lambda ln: ln.pop("qas"), ["line 3", "must be a header or have 'context' and 'qas'"]),
        (lambda ln: ln.update(context=None), ["line 3", "'context' must be a string"]),
        (lambda ln: ln.update(qas={}), ["line 3", "'qas' must be a list"]),
    ],
)
def test_bad_mrqa_names_file_line_and_field(tmp_path: Path, dev_v1: sd.SquadData, edit, fragments) -> None:
    lines = mrqa_lines(dev_v1.head(40), "dev")
    assert lines[2]["qas"][2]["detected_answers"][0]["char_spans"][0] == [291, 294]  # what the case edits
    path = write_mrqa(tmp_path / "bad.jsonl.gz", _bad(lines, 3, edit))
    with pytest.raises(DataError) as e:
        sd.load_squad(path)
    assert str(e.value).startswith(f"{path}: ")
    for frag in fragments:
        assert frag in str(e.value), (frag, str(e.value))


def test_cli_bad_mrqa_is_one_line(cli, tmp_path: Path, dev_v1: sd.SquadData) -> None:
    lines = mrqa_lines(dev_v1.head(40), "dev")
    path = write_mrqa(tmp_path / "bad.jsonl", lines)
    path.write_text(path.read_text().replace('"qas": [', '"qas": [oops', 1))  # line 2 is not JSON
    preds = SQUAD / "predictions" / "v1.1-bert-ensemble.json.gz"
    r = cli("eval", "squad", "--predictions", preds, "--data", path)
    assert_one_line_error(r, "bad.jsonl", "line 2 is not valid JSON", code=1)
    path = write_mrqa(tmp_path / "dup.jsonl", _bad(lines, 3, lambda ln: ln["qas"].append(ln["qas"][0])))
    r = cli("eval", "squad", "--predictions", preds, "--data", path)
    assert_one_line_error(r, "dup.jsonl", "line 3: qas[", "duplicate question id", code=1)


# --------------------------------------------------------------------------------------------------
# fine-tuning on MRQA files, end to end


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_json: Path) -> Path:
    """A tiny Hugging Face-style BERT directory with spanbert's real WordPiece tokenizer."""
    tok = load_tokenizer(tokenizer_json)
    d = tmp_path_factory.mktemp("tiny-bert")
    cfg = ModelConfig.from_preset("tiny", tok.get_vocab_size())
    torch.manual_seed(0)
    hf, _ = to_hf_state_dict(SpanBert(cfg))
    save_file({k: v.contiguous() for k, v in hf.items()}, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps(hf_config_dict(cfg)))
    write_tokenizer_files(tok, d)
    return d


QUICK = ["--max-steps", "3", "--batch-size", "8", "--max-seq-length", "128", "--doc-stride", "64"]
QUICK += ["--eval-batch-size", "32", "--quiet", "--json"]


def test_cli_fine_tunes_on_mrqa_as_on_the_same_squad(
    cli, model_dir: Path, tmp_path: Path, dev_v1: sd.SquadData
) -> None:
    """MRQA train / dev made from SQuAD train / dev: the run ends like the run on the SQuAD files (same
    windows, labels, predictions, metrics); only the input files, and so the fingerprint, differ."""
    train_v2, _ = sd.align_answers(sd.load_squad(SQUAD / "train-v2.0-first10.json.gz"))
    answerable = [q for q in train_v2.questions if q.answers][:48]
    train = sd.SquadData(train_v2.source, "1.1", train_v2.contexts, answerable, train_v2.titles)
    train = train.head(len(answerable))
    dev = dev_v1.head(40)
    squad_files = []
    for data, name in ((train, "train"), (dev, "dev")):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(sd.dumps_official(data)))
        squad_files.append(path)
    mrqa_files = [
        write_mrqa(tmp_path / "SQuAD-train.jsonl.gz", mrqa_lines(train, "train")),
        write_mrqa(tmp_path / "SQuAD-dev.jsonl.gz", mrqa_lines(dev, "dev")),
    ]
    results = []
    for (tr, dv), out in ((mrqa_files, tmp_path / "e-mrqa"), (squad_files, tmp_path / "e-squad")):
        r = cli("eval", "squad", model_dir, "--train", tr, "--dev", dv, "--out", out, *QUICK)
        assert r.code == 0, r.err
        results.append(json.loads(r.out))
    mrqa, squad = results
    assert mrqa["metrics"] == squad["metrics"] and mrqa["fingerprint"] != squad["fingerprint"]
    assert mrqa["stats"]["train"]["questions"] == 48 and mrqa["stats"]["dev"]["questions"] == 40
    out = tmp_path / "e-mrqa"
    preds = json.loads((out / "predictions.json").read_text())
    assert preds == json.loads((tmp_path / "e-squad" / "predictions.json").read_text())
    assert list(preds) == [q.id for q in dev.questions]
    assert mrqa["metrics"] == scoring.score(sd.load_squad(mrqa_files[1]).gold(), preds, "1.1").metrics
    assert artifacts.verify(out) == []
    r = cli("eval", "squad", "--predictions", out / "predictions.json", "--data", mrqa_files[1], "--json")
    assert r.code == 0 and json.loads(r.out) == mrqa["metrics"]
