"""`spanbert eval mlm RUN SHARDS`: held-out MLM / SBO figures equal the run's own validation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import assert_one_line_error

from spanbert_cli import artifacts
from spanbert_cli.eval.mlm import LazyBatches, MlmEvalConfig, evaluate_mlm, resolve_masking

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory, small_corpus: list[Path], tokenizer_json: Path) -> Path:
    from spanbert_cli.shards.pack import ShardConfig, shard
    from spanbert_cli.text.tokenize import TokenizeConfig, tokenize

    root = tmp_path_factory.mktemp("mlm-data")
    tok = tokenize(
        [str(f) for f in small_corpus],
        TokenizeConfig(tokenizer=str(tokenizer_json), workers=1),
        out=root / "tok",
    )
    return shard(
        [str(tok.artifact.path)], ShardConfig(max_seq_len=64, valid_docs=3), out=root / "shards"
    ).artifact.path


@pytest.fixture(scope="module")
def run(shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 6-step run that validates on the whole valid split at its end."""
    from spanbert_cli.cli import main

    out = tmp_path_factory.mktemp("mlm-run") / "run"
    args = [
        "pretrain",
        shards,
        "--out",
        out,
        "--model",
        "tiny",
        "--max-steps",
        "6",
        "--batch-size",
        "8",
        "--lr",
        "2e-3",
        "--warmup-steps",
        "1",
        "--mask-ratio",
        "0.2",
        "--seed",
        "3",
        "--eval-every",
        "0",
        "--save-every",
        "6",
        "--num-workers",
        "0",
        "--quiet",
    ]
    assert main([str(a) for a in args]) == 0
    return out


def _valid_record(run: Path) -> dict:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r.get("split") == "valid"][-1]


def test_eval_mlm_equals_the_runs_own_validation(cli, run: Path, shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "mlm"
    r = cli("eval", "mlm", run, shards, "--out", out, "--num-workers", "0", "--batch-size", "5", "--json")
    assert r.code == 0, r.err
    got = json.loads(r.out)
    m, want = got["metrics"], _valid_record(run)
    for key in ("loss", "mlm_loss", "sbo_loss", "mlm_acc", "sbo_acc", "sequences"):
        assert m[key] == pytest.approx(want[key], rel=1e-5), key
    assert m["mlm_ppl"] == pytest.approx(math.exp(m["mlm_loss"])) and m["sbo_ppl"] == pytest.approx(
        math.exp(m["sbo_loss"])
    )
    assert m["mlm_targets"] > 0 and m["sbo_targets"] > 0
    assert json.loads((out / "metrics.json").read_text()) == m
    manifest = artifacts.read_manifest(out)
    assert manifest.kind == "spanbert/eval-mlm" and manifest.params["masking"]["mask_ratio"] == 0.2
    assert manifest.params["seed"] == 3 and {i.role for i in manifest.inputs} >= {"run", "weights", "shards"}
    assert artifacts.verify(out) == []
    # the Hugging Face export the run wrote finds the same parameters through the run
    r = cli("eval", "mlm", run / "hf", shards, "--out", tmp_path / "hf", "--num-workers", "0", "--json", "-q")
    assert r.code == 0, r.err
    assert json.loads(r.out)["metrics"]["mlm_loss"] == pytest.approx(m["mlm_loss"], rel=1e-5)
    # again: up to date (the batch size is not part of the result)
    r = cli("eval", "mlm", run, shards, "--out", out, "--num-workers", "0", "--batch-size", "7")
    assert r.code == 0 and "up to date" in r.err


def test_overridden_masking_is_another_evaluation(run: Path, shards: Path, tmp_path: Path) -> None:
    base = evaluate_mlm(run, shards, MlmEvalConfig(num_workers=0), out=tmp_path / "a")
    more = evaluate_mlm(
        run, shards, MlmEvalConfig(num_workers=0, mask_ratio=0.4, max_sequences=5), out=tmp_path / "b"
    )
    assert more.artifact.fingerprint != base.artifact.fingerprint
    assert more.metrics["sequences"] == 5
    assert more.metrics["mlm_targets"] / 5 > base.metrics["mlm_targets"] / base.metrics["sequences"]
    masking, weight, seed = resolve_masking(
        MlmEvalConfig(scheme="word"), {"scheme": "span", "span_len": 3, "sbo_weight": 0.0, "seed": 9}
    )
    assert masking.scheme == "word" and masking.span_len is None and weight == 0.0 and seed == 9


def test_batches_are_made_lazily() -> None:
    batches = LazyBatches(10**12, 4)  # a list of this many keys would not fit in memory
    assert len(batches) == 25 * 10**10
    first = next(iter(batches))
    assert first == [(0, 0), (0, 1), (0, 2), (0, 3)]


def test_bad_input(cli, run: Path, shards: Path, tmp_path: Path, tokenizer_json: Path, small_corpus) -> None:
    r = cli("eval", "mlm", run, tmp_path / "nothing")
    assert_one_line_error(r, "nothing", code=1)
    r = cli("eval", "mlm", shards, shards)
    assert_one_line_error(r, "not a run, checkpoint or exported model", code=1)
    r = cli("eval", "mlm", run, run)
    assert_one_line_error(r, "spanbert/run", "spanbert/shards", code=1)
    r = cli("eval", "mlm", run, shards, "--split", "test", "--mask-ratio", "0.9")
    assert_one_line_error(r, "--split", code=2)
    r = cli("eval", "mlm", run, shards, "--mask-ratio", "0.9", "--out", tmp_path / "m")
    assert_one_line_error(r, "--mask-ratio", code=2)

    # shards made with another tokenizer
    from spanbert_cli.shards.pack import ShardConfig, shard
    from spanbert_cli.text.tokenize import TokenizeConfig, tokenize

    tok = tokenize(
        [str(f) for f in small_corpus[:3]], TokenizeConfig(vocab_size=500, workers=1), out=tmp_path / "tok"
    )
    other = shard([str(tok.artifact.path)], ShardConfig(max_seq_len=64, valid_docs=1), out=tmp_path / "sh")
    r = cli("eval", "mlm", run, other.artifact.path, "--out", tmp_path / "x")
    assert_one_line_error(r, "another tokenizer", code=1)
