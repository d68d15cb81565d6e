"""SQuAD features, post-processing and fine-tuning (`spanbert eval squad RUN`) on real SQuAD data with a
tiny model and a real WordPiece tokenizer; every bad input as one line."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SQUAD, assert_one_line_error
from safetensors.torch import save_file

from spanbert_cli import artifacts
from spanbert_cli.eval.squad import data as sd
from spanbert_cli.eval.squad import scoring
from spanbert_cli.eval.squad.features import (
    CLS_POSITION,
    FeatureConfig,
    answer_token_span,
    build_features,
    max_context_owner,
    window_starts,
)
from spanbert_cli.eval.squad.finetune import (
    QuestionAnswering,
    SquadConfig,
    finetune_squad,
    postprocess,
    qa_inputs,
    qa_loss,
    train_qa,
)
from spanbert_cli.model.spanbert import ModelConfig, SpanBert, hf_config_dict, to_hf_state_dict
from spanbert_cli.model.weights import load_encoder, resolve_run
from spanbert_cli.text.wordpiece import load_tokenizer, write_tokenizer_files

CONFIGS = [FeatureConfig(), FeatureConfig(max_seq_length=128, doc_stride=32, max_query_length=16)]
QUICK = [
    "--max-steps",
    "4",
    "--batch-size",
    "8",
    "--max-seq-length",
    "128",
    "--doc-stride",
    "64",
    "--eval-batch-size",
    "16",
    "--quiet",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok(tokenizer_json: Path):
    return load_tokenizer(tokenizer_json)


@pytest.fixture(scope="module")
def squad() -> Path:
    return SQUAD


@pytest.fixture(scope="module")
def train_v2(squad: Path) -> sd.SquadData:
    data, stats = sd.align_answers(sd.load_squad(squad / "train-v2.0-first10.json.gz"))
    assert stats.matched == stats.answers  # official offsets
    return data


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tok) -> Path:
    """A tiny Hugging Face-style BERT directory: config.json, model.safetensors, tokenizer.json, vocab.txt."""
    d = tmp_path_factory.mktemp("tiny-bert")
    cfg = ModelConfig.from_preset("tiny", tok.get_vocab_size())
    torch.manual_seed(0)
    hf, _ = to_hf_state_dict(SpanBert(cfg))
    save_file({k: v.contiguous() for k, v in hf.items()}, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps(hf_config_dict(cfg)))
    write_tokenizer_files(tok, d)
    return d


def slice_file(tmp_path: Path, data: sd.SquadData, n: int, name: str) -> tuple[Path, sd.SquadData]:
    part = data.head(n)
    path = tmp_path / name
    path.write_text(json.dumps(sd.dumps_official(part)))
    return path, part


# --------------------------------------------------------------------------------------------------
# windows and labels


@pytest.mark.parametrize("config", CONFIGS, ids=["384-128-64", "128-32-16"])
def test_windows_cover_every_context_within_the_limits(train_v2: sd.SquadData, tok, config) -> None:
    f = build_features(train_v2, tok, config, training=True)
    assert f.stats.questions == len(train_v2) and f.stats.windows == len(f)
    assert int(f.lengths().max()) <= config.max_seq_length
    assert all(len(q) <= config.max_query_length for q in f.query_ids)
    for qi, windows in enumerate(f.windows_of()):
        n = len(f.context_offsets[train_v2.questions[qi].context])
        starts = f.doc_start[windows]
        ends = starts + f.doc_len[windows]
        assert starts[0] == 0 and ends[-1] == n
        assert (np.diff(starts) == config.doc_stride).all()  # BERT's stride: between window starts
        assert (ends[:-1] >= starts[1:]).all()  # no gap
    assert window_starts(10, 4, 3) == [(0, 4), (3, 4), (6, 4)]
    assert window_starts(0, 4, 3) == [(0, 0)]


@pytest.mark.parametrize("config", CONFIGS, ids=["384-128-64", "128-32-16"])
def test_every_labelled_span_decodes_to_its_answer(train_v2: sd.SquadData, tok, config) -> None:
    """For each training answer inside a window, the labelled span's text is the answer (normalised)."""
    f = build_features(train_v2, tok, config, training=True)
    inexact: set[str] = set()
    labelled: set[str] = set()
    for w in range(len(f)):
        q = train_v2.questions[f.example[w]]
        text = f.label_text(w)
        if not q.answers:
            assert text is None  # unanswerable: [CLS]
            continue
        if text is None:
            continue
        labelled.add(q.id)
        answer = q.answers[0].text
        if scoring.normalize_answer(text) != scoring.normalize_answer(answer):
            # Only when an answer boundary falls inside a word piece ("Rober" of "Roberson").
            assert answer.strip() in text, (answer, text)
            inexact.add(q.id)
    assert len(inexact) == f.stats.inexact_labels <= 0.005 * len(train_v2)
    # Every answer that fits in a window is labelled in at least one.
    for qi, q in enumerate(train_v2.questions):
        if not q.answers:
            continue
        a = q.answers[0]
        first, last = answer_token_span(f.context_offsets[q.context], a.start, a.start + len(a.text))
        room = config.max_seq_length - len(f.query_ids[qi]) - 3
        if last - first + 1 <= room - config.doc_stride:
            assert q.id in labelled, q.id
    assert f.stats.windows_with_answer + f.stats.windows_without_answer == len(f)


def test_batch_is_the_tokenizers_pair_encoding(train_v2: sd.SquadData, tok) -> None:
    f = build_features(train_v2.head(20), tok, FeatureConfig(), training=True)
    windows = [
        w
        for w in range(len(f))
        if f.doc_len[w] == len(f.context_offsets[train_v2.questions[f.example[w]].context])
    ]
    b = f.batch(windows[:8])
    for row, w in enumerate(windows[:8]):
        q = train_v2.questions[f.example[w]]
        enc = tok.encode(q.question, train_v2.contexts[q.context])  # [CLS] q [SEP] c [SEP], types 0 / 1
        n = len(enc.ids)
        assert b["input_ids"][row, :n].tolist() == enc.ids
        assert b["token_type_ids"][row, :n].tolist() == enc.type_ids
        assert b["attention_mask"][row].sum() == n and not b["attention_mask"][row, n:].any()
        assert (b["input_ids"][row, n:] == f.pad_id).all()


def test_answer_outside_a_window_points_at_cls(train_v2: sd.SquadData, tok) -> None:
    f = build_features(train_v2, tok, CONFIGS[1], training=True)
    outside = [
        w
        for w in range(len(f))
        if train_v2.questions[f.example[w]].answers and f.start_positions[w] == CLS_POSITION
    ]
    assert outside and all(f.end_positions[w] == CLS_POSITION for w in outside)
    dev = build_features(train_v2.head(50), tok, CONFIGS[1], training=False)
    assert (dev.start_positions == CLS_POSITION).all()  # prediction features carry no labels


def test_max_context_owner() -> None:
    # Token 7 has 2 tokens of context on its short side in both windows: the first wins the tie.
    assert max_context_owner([(0, 10), (5, 10)], 15).tolist() == [0] * 8 + [1] * 7
    assert max_context_owner([(0, 4)], 6).tolist() == [0, 0, 0, 0, -1, -1]


# --------------------------------------------------------------------------------------------------
# post-processing


def _label_logits(f) -> list[np.ndarray]:
    """Logits a perfect model would give: 10 at the labelled start and end (at [CLS] when none)."""
    out = []
    for w in range(len(f)):
        lg = np.zeros((2, f.seq_len(w)), dtype=np.float32)
        lg[0, f.start_positions[w]] = lg[1, f.end_positions[w]] = 10.0
        out.append(lg)
    return out


def test_postprocess_turns_perfect_logits_into_the_answers(train_v2: sd.SquadData, tok) -> None:
    f = build_features(train_v2, tok, FeatureConfig(), training=True)
    answers = postprocess(f, _label_logits(f), with_null=True)
    assert list(answers.predictions) == [q.id for q in train_v2.questions]
    wrong = []
    for q in train_v2.questions:
        pred, prob = answers.predictions[q.id], answers.na_probs[q.id]
        if not q.answers:
            assert pred == "" and prob > 0.5
            continue
        a = q.answers[0]
        first, last = answer_token_span(f.context_offsets[q.context], a.start, a.start + len(a.text))
        if scoring.normalize_answer(pred) != scoring.normalize_answer(a.text):
            wrong.append(q.id)
            assert last - first + 1 > 30 or a.text.strip() in pred  # too long, or inside a word piece
        else:
            assert prob < 0.5 and answers.best_spans[q.id] == pred
    assert len(wrong) < 0.01 * len(train_v2)


def test_postprocess_n_best_and_max_answer_length(tok) -> None:
    context = " ".join(str(i % 10) for i in range(40))  # one token per digit
    obj = {
        "version": "1.1",
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {"id": "q", "question": "which", "answers": [{"text": "2", "answer_start": 4}]}
                        ],
                    }
                ],
            }
        ],
    }
    data = sd.parse_squad(obj, "mem")
    f = build_features(data, tok, FeatureConfig(), training=False)
    assert len(f) == 1
    k = f.context_offset(0)
    lg = np.zeros((2, f.seq_len(0)), dtype=np.float32)
    lg[0, k + 2] = 5.0  # best start: the 3rd digit
    lg[1, k + 38] = 9.0  # best end: 37 tokens away, too long
    lg[1, k + 1] = 8.0  # next best end: before the start
    lg[1, k + 5] = 7.0  # then: a valid 4-token span
    answers = postprocess(f, [lg], n_best=20, max_answer_length=30)
    assert answers.predictions["q"] == "2 3 4 5"
    assert postprocess(f, [lg], n_best=20, max_answer_length=40).predictions["q"].endswith("8")  # k + 38
    # With n_best 2 the third-best end is not a candidate: the best valid pair starts elsewhere.
    assert postprocess(f, [lg], n_best=2, max_answer_length=30).predictions["q"] != "2 3 4 5"


# --------------------------------------------------------------------------------------------------
# the model and the training loop


def test_qa_model_matches_hugging_face_bert_for_question_answering(model_dir: Path, train_v2, tok) -> None:
    transformers = pytest.importorskip("transformers")
    pre = resolve_run(model_dir)
    torch.manual_seed(1)
    ours = QuestionAnswering(load_encoder(pre)).eval()
    cfg = json.loads((model_dir / "config.json").read_text())
    theirs = transformers.BertForQuestionAnswering(transformers.BertConfig(**cfg)).eval()
    missing, unexpected = theirs.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and all("position_ids" in k or "token_type_ids" in k for k in missing)
    f = build_features(train_v2.head(6), tok, CONFIGS[1], training=False)
    windows = list(range(min(6, len(f))))
    b = {k: torch.from_numpy(v) for k, v in f.batch(windows).items()}
    with torch.no_grad():
        s1, e1 = ours(**qa_inputs(f.packed_batch(windows), torch.device("cpu")))  # unpadded, as it runs
        out = theirs(
            input_ids=b["input_ids"],
            attention_mask=b["attention_mask"].long(),
            token_type_ids=b["token_type_ids"],
        )
    real = b["attention_mask"]
    assert s1.shape == real.shape and (s1[~real] == -1e9).all()
    torch.testing.assert_close(s1[real], out.start_logits[real], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(e1[real], out.end_logits[real], atol=1e-4, rtol=1e-4)


def test_unpadded_qa_equals_the_padded_layout(model_dir: Path, train_v2, tok) -> None:
    """Start and end logits, the loss and every gradient of the unpadded windows equal the padded
    reference (fp32, dropout off) to 1e-5: only the [B, T] logits are padded, never the encoder."""
    pre = resolve_run(model_dir)
    torch.manual_seed(1)
    model = QuestionAnswering(load_encoder(pre)).eval()  # eval: no dropout
    f = build_features(train_v2.head(8), tok, CONFIGS[1], training=True)
    windows = list(range(min(8, len(f))))
    assert len(set(f.lengths()[windows].tolist())) > 1  # windows of different lengths
    cpu = torch.device("cpu")

    def run(arrays: dict) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad()
        start, end = model(**qa_inputs(arrays, cpu))
        labels = [torch.from_numpy(arrays[k]) for k in ("start_positions", "end_positions")]
        qa_loss(start, end, *labels, len(windows)).backward()
        return start, end, {n: p.grad.clone() for n, p in model.named_parameters()}

    s1, e1, g1 = run(f.packed_batch(windows))
    s2, e2, g2 = run(f.batch(windows))  # no rounding up: the same T
    torch.testing.assert_close(s1, s2, atol=1e-5, rtol=0)
    torch.testing.assert_close(e1, e2, atol=1e-5, rtol=0)
    for name in g2:
        torch.testing.assert_close(g1[name], g2[name], atol=1e-5, rtol=1e-4, msg=name)


def test_fine_tuning_learns(model_dir: Path, tok, squad: Path) -> None:
    data, _ = sd.align_answers(sd.load_squad(squad / "train-v2.0-first10.json.gz").head(12))
    config = SquadConfig(
        max_seq_length=96,
        doc_stride=48,
        batch_size=8,
        lr=1e-3,
        epochs=100,
        max_steps=30,
        warmup_ratio=0.0,
        log_every=5,
    )
    f = build_features(data, tok, config.features, training=True)
    torch.manual_seed(0)
    model = QuestionAnswering(load_encoder(resolve_run(model_dir)))
    out = train_qa(model, f, config, torch.device("cpu"), "fp32")
    assert out["steps"] == 30 and out["warmup_steps"] == 0
    assert out["loss"] < 0.6 * out["first_loss"], out


# --------------------------------------------------------------------------------------------------
# end to end


def test_cli_fine_tunes_and_writes_a_valid_eval_artifact(
    cli, model_dir: Path, squad: Path, tmp_path: Path
) -> None:
    """Fine-tune on part of the v2.0 train sample (bad offsets planted), predict a slice of XQuAD (v1.1)."""
    obj = json.loads(gzip.decompress((squad / "train-v2.0-first10.json.gz").read_bytes()))
    qas = obj["data"][0]["paragraphs"][0]["qas"]
    qas[0]["answers"][0]["answer_start"] += 3  # found again by search
    qas[1]["answers"][0]["text"] = "words that are not in the paragraph"  # dropped
    train = tmp_path / "train.json"
    train.write_text(json.dumps(obj))
    dev_path, dev = slice_file(tmp_path, sd.load_squad(squad / "xquad-en-v1.1.json.gz"), 30, "xquad-30.json")
    out = tmp_path / "eval"
    finetune = ["eval", "squad", model_dir, "--train", train, "--dev", squad / "xquad-en-v1.1.json.gz"]
    finetune += ["--max-train-examples", "64", "--max-eval-examples", "30", "--out", out]
    r = cli(*finetune, "--json", *QUICK)
    assert r.code == 0, r.err
    result = json.loads(r.out)
    assert result["kind"] == "spanbert/eval-squad" and not result["cached"]

    preds = json.loads((out / "predictions.json").read_text())
    assert list(preds) == [q.id for q in dev.questions] and all(isinstance(v, str) for v in preds.values())
    assert not (out / "na_probs.json").exists()  # a v1.1 dev set
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == result["metrics"] == scoring.score(dev.gold(), preds, "1.1").metrics
    assert artifacts.verify(out) == []
    roles = [i.role for i in artifacts.read_manifest(out).inputs]
    assert roles == ["weights", "model-config", "tokenizer", "train", "dev"]
    stats = result["stats"]
    assert stats["train"]["answers"]["relocated"] == 1 and stats["train"]["answers"]["unmatched"] == 1
    assert stats["train"]["answers"]["questions_dropped"] == 1 and stats["train"]["questions"] == 63
    assert stats["train"]["steps"] == 4 and stats["dev"]["questions"] == 30

    # scoring the artifact's predictions gives metrics.json again
    r = cli("eval", "squad", "--predictions", out / "predictions.json", "--data", dev_path, "--json")
    assert r.code == 0 and json.loads(r.out) == metrics
    # the same run again is up to date; another setting is another artifact
    r = cli(*finetune, *QUICK[:-1])
    assert r.code == 0 and "up to date" in r.err
    r = cli("eval", "squad", model_dir, "--train", train, "--dev", dev_path, "--out", out, *QUICK)
    assert_one_line_error(r, "--force", code=1)


def test_v2_dev_gets_na_probs_and_the_threshold_search(model_dir: Path, squad: Path, tmp_path: Path) -> None:
    dev_path, dev = slice_file(tmp_path, sd.load_squad(squad / "dev-v2.0.json.gz"), 40, "dev-40.json")
    assert dev.num_unanswerable > 0
    config = SquadConfig(
        max_seq_length=128,
        doc_stride=64,
        batch_size=8,
        max_steps=3,
        max_train_examples=48,
        eval_batch_size=16,
    )
    result = finetune_squad(
        model_dir, str(squad / "train-v2.0-first10.json.gz"), str(dev_path), config, out=tmp_path / "eval"
    )
    a = result.artifact
    preds = json.loads(a.file("predictions.json").read_text())
    probs = json.loads(a.file("na_probs.json").read_text())
    spans = json.loads(a.file("best_spans.json").read_text())
    assert list(preds) == list(probs) == list(spans) == [q.id for q in dev.questions]
    assert all(0.0 <= p <= 1.0 for p in probs.values())
    assert all((preds[q] == "") == (probs[q] > 0.5) or spans[q] == "" for q in preds)
    metrics = json.loads(a.file("metrics.json").read_text())
    assert list(metrics) == [
        *scoring.score_v2({"a": ["x"], "b": []}, {"a": "", "b": ""}, {"a": 0, "b": 0}).metrics
    ]
    plain = sd.score_files(a.file("predictions.json"), dev_path).result.metrics
    searched = sd.score_files(
        a.file("best_spans.json"), dev_path, na_probs=a.file("na_probs.json")
    ).result.metrics
    assert {k: metrics[k] for k in plain} == plain
    assert {k: metrics[k] for k in metrics if k.startswith("best_")} == {
        k: v for k, v in searched.items() if k.startswith("best_")
    }


# --------------------------------------------------------------------------------------------------
# bad input


def test_run_without_a_tokenizer(cli, model_dir: Path, tmp_path: Path, squad: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(model_dir, bare)
    (bare / "tokenizer.json").unlink()
    (bare / "vocab.txt").unlink()
    r = cli(
        "eval",
        "squad",
        bare,
        "--train",
        squad / "train-v2.0-first10.json.gz",
        "--dev",
        squad / "xquad-en-v1.1.json.gz",
        "--out",
        tmp_path / "e",
    )
    assert_one_line_error(r, "bare", "no tokenizer", code=1)
    r = cli("eval", "squad", tmp_path / "nowhere", "--train", squad / "train-v2.0-first10.json.gz")
    assert_one_line_error(r, "nowhere", code=1)


def test_bad_data_files(cli, model_dir: Path, tmp_path: Path, squad: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text('{"version": "1.1", "data": []}')
    r = cli("eval", "squad", model_dir, "--train", empty, "--dev", squad / "xquad-en-v1.1.json.gz")
    assert_one_line_error(r, "empty.json", "no questions", code=1)
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [{"paragraphs": [{"context": "x", "qas": [{"id": 1.5}]}]}]}')
    r = cli("eval", "squad", model_dir, "--train", squad / "train-v2.0-first10.json.gz", "--dev", bad)
    assert_one_line_error(r, "bad.json", "data[0].paragraphs[0].qas[0]", "'id'", code=1)


def test_offline_hub_names_the_files_to_pass(cli, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: fails at once
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    r = cli("eval", "squad", model_dir)  # the design card's example: SQuAD v1.1 from the hub
    assert_one_line_error(r, "rajpurkar/squad", "--train FILE --dev FILE", "train-sample.json", code=1)


def test_plain_command_needs_a_run_in_the_workspace(cli, tmp_path: Path) -> None:
    r = cli("eval", "squad", "--workspace", tmp_path / "ws")
    assert_one_line_error(r, "no pretrain run", "RUN", code=2)


def test_bad_options(cli, model_dir: Path, squad: Path, tmp_path: Path) -> None:
    data = ["--train", squad / "train-v2.0-first10.json.gz", "--dev", squad / "xquad-en-v1.1.json.gz"]
    r = cli(
        "eval",
        "squad",
        model_dir,
        *data,
        "--lr",
        "0",
        "--batch-size",
        "6",
        "--micro-batch-size",
        "4",
        "--max-answer-length",
        "0",
    )
    assert_one_line_error(r, "--lr", "--micro-batch-size 4", "--max-answer-length", code=2)
    r = cli("eval", "squad", model_dir, *data, "--max-seq-length", "600", "--out", tmp_path / "e")
    assert_one_line_error(r, "--max-seq-length 600", "512 positions", code=2)
    r = cli("eval", "squad", model_dir, "--predictions", tmp_path / "p.json", "--data", data[1])
    assert_one_line_error(r, "drop RUN", code=2)
    r = cli("eval", "squad", model_dir, "--data", data[1])
    assert_one_line_error(r, "--data goes with --predictions", code=2)


def test_bundled_sample_is_valid_squad() -> None:
    root = Path(sd.__file__).resolve().parents[2] / "data" / "squad"
    train, dev = sd.load_squad(root / "train-sample.json"), sd.load_squad(root / "dev-sample.json")
    assert train.version == dev.version == "1.1" and len(train) >= 300 and len(dev) >= 100
    assert sd.align_answers(train)[1].matched == len(train)  # official offsets, one answer each
    assert {q.id for q in train.questions}.isdisjoint(q.id for q in dev.questions)
    assert (root / "LICENSE-CC-BY-SA-4.0.txt").is_file() and "Rajpurkar" in (root / "README.md").read_text()
    assert sum(p.stat().st_size for p in root.iterdir()) < 1_000_000
