"""`spanbert mask-preview` on real shards: the JSON contract, preview == training, stats, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, png_size

from spanbert_cli.masking import MaskedDataset, MaskingConfig, VocabInfo, collate
from spanbert_cli.shards.pack import ShardConfig, shard
from spanbert_cli.shards.reader import ShardReader
from spanbert_cli.text.tokenize import TokenizeConfig, tokenize


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, small_corpus: list[Path], tokenizer_json: Path) -> Path:
    ws = tmp_path_factory.mktemp("ws")
    tok = tokenize(
        [str(p) for p in small_corpus],
        TokenizeConfig(tokenizer=str(tokenizer_json), docs="file", workers=1),
        workspace=ws,
    )
    shard([tok.artifact.path], ShardConfig(max_seq_len=128, valid_fraction=0.2), workspace=ws)
    return ws


@pytest.fixture(scope="module")
def shards(workspace: Path) -> Path:
    return next((workspace / "shards").iterdir())


def preview_json(cli, *args) -> tuple[list[dict], dict | None]:
    r = cli("mask-preview", *args, "--json")
    assert r.code == 0, r.err
    objs = [json.loads(line) for line in r.out.splitlines()]
    stats = [o["stats"] for o in objs if "stats" in o]
    return [o for o in objs if "stats" not in o], (stats[0] if stats else None)


def test_json_contract(cli, shards: Path) -> None:
    reader = ShardReader(shards)
    vocab = VocabInfo.from_tokenizer(reader.tokenizer)
    examples, stats = preview_json(cli, shards, "--num", "20", "--index", "5", "--seed", "3")
    assert stats is None
    assert [e["index"] for e in examples] == list(range(5, 25))
    for e in examples:
        ids, masked = np.array(e["input_ids"]), np.array(e["masked_input_ids"])
        assert ids.tolist() == reader[e["index"]].tolist()
        assert len(e["spans"]) == len(e["replacement"]) > 0
        inside = np.zeros(len(ids), dtype=bool)
        prev_end = -2
        for (s, t), kind in zip(e["spans"], e["replacement"], strict=True):
            assert 1 <= s <= t <= len(ids) - 2 and s > prev_end + 1  # in order, merged, specials untouched
            prev_end = t
            inside[s : t + 1] = True
            if kind == "mask":
                assert (masked[s : t + 1] == vocab.mask_id).all()
            elif kind == "keep":
                assert (masked[s : t + 1] == ids[s : t + 1]).all()
            else:
                assert kind == "random" and not np.isin(masked[s : t + 1], vocab.special_ids).any()
        assert (masked[~inside] == ids[~inside]).all()
        n = int((~np.isin(ids, vocab.special_ids)).sum())
        assert inside.sum() == int(np.ceil(0.15 * n - 1e-9))


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_preview_equals_training(cli, shards: Path, workers: int) -> None:
    torch = pytest.importorskip("torch")
    examples, _ = preview_json(
        cli, shards, "--num", "12", "--index", "3", "--seed", "7", "--epoch", "2", "--geometric-p", "0.3"
    )
    reader = ShardReader(shards)
    vocab = VocabInfo.from_tokenizer(reader.tokenizer)
    ds = MaskedDataset(reader, seed=7, config=MaskingConfig(geometric_p=0.3), vocab=vocab, epoch=2)
    sub = torch.utils.data.Subset(ds, list(range(3, 15)))
    loader = torch.utils.data.DataLoader(
        sub, batch_size=4, num_workers=workers, collate_fn=lambda b: collate(b, vocab.pad_id)
    )
    seen = {}
    for batch in loader:
        cu = batch["cu_seqlens"].tolist()  # the training layout: unpadded
        for row, index in enumerate(batch["index"].tolist()):
            seen[index] = batch["input_ids"][cu[row] : cu[row + 1]].tolist()
    assert seen == {e["index"]: e["masked_input_ids"] for e in examples}


def test_design_card_example_uses_the_workspace(cli, workspace: Path, monkeypatch) -> None:
    monkeypatch.setenv("SPANBERT_WORKSPACE", str(workspace))
    r = cli("mask-preview", "--span-len", "4")
    assert r.code == 0, r.err
    assert "using the newest shard artifact" in r.err and "[MASK]" in r.err
    examples, _ = preview_json(cli, "--span-len", "4", "--num", "50", "--quiet")
    reader = ShardReader(next((workspace / "shards").iterdir()))
    cont = VocabInfo.from_tokenizer(reader.tokenizer).is_continuation
    lengths = []
    for e in examples:
        ids = np.array(e["input_ids"])
        for s, t in e["spans"]:
            words = 1 + int(np.count_nonzero(~cont[ids[s + 1 : t + 1]]))
            lengths.append(words)
    # Merged spans are whole multiples of 4 words except where the budget cut the last one.
    assert np.mean([n % 4 == 0 for n in lengths]) > 0.6


def test_stats(cli, shards: Path) -> None:
    _, stats = preview_json(cli, shards, "--num", "0", "--stats", "150")
    assert stats["sequences"] == 150
    assert 0.15 <= stats["mask_ratio"] < 0.17
    assert abs(sum(stats["span_lengths"]["theoretical"]) - 1) < 1e-6
    assert abs(stats["span_lengths"]["mean_theoretical"] - 3.8) < 0.05
    assert set(stats["replacement"]) == {"mask", "random", "keep"}
    human = cli("mask-preview", shards, "--num", "1", "--stats", "200", "--split", "valid")
    assert human.code == 0 and "span length in words" in human.err and "realised mask ratio" in human.err


def test_stats_against_what_the_masking_draws_from(cli, shards: Path, tmp_path: Path) -> None:
    _, stats = preview_json(cli, shards, "--num", "0", "--stats", "300")
    assert stats["expected_replacement"] == pytest.approx({"mask": 0.8, "random": 0.1, "keep": 0.1})
    assert stats["replacement_units"] == stats["spans"]  # span masking: one decision per merged span
    for k in ("mask", "random", "keep"):  # hundreds of spans: within a few points of 80/10/10
        assert abs(stats["replacement"][k] - stats["expected_replacement"][k]) < 0.06
    pos = stats["positions"]
    reader = ShardReader(shards)
    assert len(pos["rate"]) == len(pos["tokens"]) == max(len(reader[i]) for i in range(stats["sequences"]))
    assert pos["rate"][0] is None and pos["tokens"][0] == 0  # [CLS] is never a target
    assert sum(pos["tokens"]) == stats["tokens"]
    masked = sum(r * n for r, n in zip(pos["rate"], pos["tokens"], strict=True) if r is not None)
    assert round(masked) == stats["targets"]
    middle = [r for r in pos["rate"][10:100] if r is not None]
    assert 0.1 < sum(middle) / len(middle) < 0.2  # away from the edges: about the mask ratio

    png = tmp_path / "figs" / "masking.png"
    r = cli("mask-preview", shards, "--num", "0", "--stats", "300", "--plot", png)
    assert r.code == 0, r.err
    for title in ("span length in words", "replacement of", "masked along the sequence"):
        assert title in r.err, title
    assert "80 %" in r.err and f"plot: {png}" in r.err
    width, height = png_size(png)
    assert 1000 <= width <= 2500 and 300 <= height <= 800 and png.stat().st_size > 20_000

    assert_one_line_error(cli("mask-preview", shards, "--plot", png), "--plot", "--stats", code=2)
    assert_one_line_error(
        cli("mask-preview", shards, "--stats", "10", "--plot", tmp_path), "is a directory", code=1
    )


@pytest.mark.parametrize(
    ("args", "fragment", "code"),
    [
        (["--geometric-p", "0"], "--geometric-p", 2),
        (["--geometric-p", "1.5"], "--geometric-p", 2),
        (["--span-len", "0"], "--span-len", 2),
        (["--max-span-len", "0"], "--max-span-len", 2),
        (["--mask-ratio", "0.6"], "--mask-ratio", 2),
        (["--mask-ratio", "0"], "--mask-ratio", 2),
        (["--index", "100000"], "past the end of the train split", 1),
        (["--split", "test"], "split", 2),
    ],
)
def test_bad_input(cli, shards: Path, args: list[str], fragment: str, code: int) -> None:
    assert_one_line_error(cli("mask-preview", shards, *args), fragment, code=code)


def test_not_a_shard_artifact(cli, workspace: Path, tmp_path: Path, monkeypatch) -> None:
    tokenized = next((workspace / "tokenized").iterdir())
    assert_one_line_error(cli("mask-preview", tokenized), "expected spanbert/shards", code=1)
    assert_one_line_error(cli("mask-preview", tmp_path / "nothing"), "no such artifact", code=1)
    monkeypatch.setenv("SPANBERT_WORKSPACE", str(tmp_path / "empty"))
    assert_one_line_error(cli("mask-preview"), "spanbert shard", code=2)  # as shard and pretrain say it
