"""`spanbert eval squad`'s defaults: the paper's 512-token windows (the model's own length when it has
fewer positions), the official threshold search, and fingerprints that stay what they were."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SQUAD, assert_one_line_error
from safetensors.torch import save_file

from spanbert_cli.errors import UsageError
from spanbert_cli.eval.config import SquadConfig
from spanbert_cli.eval.squad.finetune import plan_finetune_squad
from spanbert_cli.model.spanbert import ModelConfig, SpanBert, hf_config_dict, to_hf_state_dict
from spanbert_cli.pipeline.recipe import load_recipe
from spanbert_cli.text.wordpiece import load_tokenizer, write_tokenizer_files

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_bert(directory: Path, tokenizer_json: Path, positions: int) -> Path:
    """A tiny Hugging Face-style BERT directory with `positions` position embeddings."""
    tok = load_tokenizer(tokenizer_json)
    cfg = ModelConfig.from_preset("tiny", tok.get_vocab_size(), max_position_embeddings=positions)
    torch.manual_seed(0)
    hf, _ = to_hf_state_dict(SpanBert(cfg))
    directory.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in hf.items()}, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(hf_config_dict(cfg)))
    write_tokenizer_files(tok, directory)
    return directory


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tokenizer_json: Path) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("models")
    return {n: tiny_bert(root / f"p{n}", tokenizer_json, n) for n in (512, 256, 64)}


def test_max_seq_length_defaults_to_512_or_the_models_positions() -> None:
    config = SquadConfig()
    assert config.max_seq_length is None and config.features.max_seq_length == 512
    assert config.for_model(512).max_seq_length == 512
    assert config.for_model(4096).max_seq_length == 512  # the paper's, not the model's longest
    assert config.for_model(256).max_seq_length == 256
    assert SquadConfig(max_seq_length=384).for_model(512).max_seq_length == 384  # a set value stays
    with pytest.raises(UsageError, match=r"^--max-seq-length 384 exceeds the model's 256 positions$"):
        SquadConfig(max_seq_length=384).for_model(256)
    with pytest.raises(UsageError, match=r"leaves no room.*defaults to the model's 64 positions"):
        config.for_model(64)  # 64 positions, a 64-token question: no room
    assert SquadConfig(max_query_length=32).for_model(64).max_seq_length == 64


def test_planned_fingerprint_records_the_resolved_length(models: dict[int, Path], tmp_path: Path) -> None:
    train, dev = str(SQUAD / "train-v2.0-first10.json.gz"), str(SQUAD / "xquad-en-v1.1.json.gz")
    plans = {
        n: plan_finetune_squad(models[n], train, dev, SquadConfig(), out=tmp_path / "e") for n in (512, 256)
    }
    assert plans[512].params["max_seq_length"] == 512 and plans[256].params["max_seq_length"] == 256
    # The default resolved to 512 is the same evaluation as --max-seq-length 512
    explicit = plan_finetune_squad(
        models[512], train, dev, SquadConfig(max_seq_length=512), out=tmp_path / "e"
    )
    assert explicit.fingerprint == plans[512].fingerprint
    # A v1.1 dev set leaves the threshold search out of the fingerprint; a v2.0 one records it.
    assert "threshold_search" not in plans[512].params
    v2 = str(SQUAD / "dev-v2.0.json.gz")
    official = plan_finetune_squad(models[512], train, v2, SquadConfig(), out=tmp_path / "e")
    tie_aware = plan_finetune_squad(
        models[512], train, v2, SquadConfig(threshold_search="tie-aware"), out=tmp_path / "e"
    )
    assert official.params["threshold_search"] == "official" and official.fingerprint != tie_aware.fingerprint


def test_cli_refuses_a_length_the_model_cannot_take(cli, models: dict[int, Path], tmp_path: Path) -> None:
    data = ["--train", SQUAD / "train-v2.0-first10.json.gz", "--dev", SQUAD / "xquad-en-v1.1.json.gz"]
    r = cli("eval", "squad", models[256], *data, "--max-seq-length", "384", "--out", tmp_path / "e")
    assert_one_line_error(r, "--max-seq-length 384 exceeds the model's 256 positions", code=2)
    r = cli("eval", "squad", models[64], *data, "--out", tmp_path / "e")
    assert_one_line_error(r, "--max-seq-length 64 leaves no room", "the model's 64 positions", code=2)
    r = cli("eval", "squad", models[512], *data, "--threshold-search", "best", "--out", tmp_path / "e")
    assert_one_line_error(r, "--threshold-search must be one of official, tie-aware", code=2)


def test_quickstart_squad_fingerprint_parameters_are_unchanged() -> None:
    """The quick start sets max_seq_length and scores a v1.1 sample: its SQuAD parameters (and so its
    fingerprint) are what they were before the defaults changed."""
    config = load_recipe(ROOT / "pipelines" / "quickstart.toml", check_inputs=False).sections["eval.squad"]
    assert config.for_model(512).fingerprint_params("1.1") == {
        "adam_eps": 1e-08,
        "batch_size": 16,
        "doc_stride": 64,
        "epochs": 4,
        "grad_clip": 1.0,
        "lr": 0.0005,
        "max_answer_length": 30,
        "max_eval_examples": None,
        "max_query_length": 32,
        "max_seq_length": 128,
        "max_steps": None,
        "max_train_examples": None,
        "micro_batch_size": 16,
        "n_best": 20,
        "postprocess": 1,
        "precision": "auto",
        "seed": 0,
        "train_order": 2,
        "version": None,
        "warmup_ratio": 0.1,
        "weight_decay": 0.01,
    }
