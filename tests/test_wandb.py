"""`spanbert pretrain --wandb` for real, in W&B's offline mode: what the offline run file holds, and that
`--resume` continues the same W&B run."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import assert_one_line_error

from spanbert_cli import artifacts
from spanbert_cli.training.metrics import WANDB_RUN_FILE, read_metrics

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2  # noqa: E402

TINY = (
    "--model tiny --batch-size 8 --micro-batch-size 4 --lr 2e-3 --warmup-steps 2 --log-every 2 "
    "--eval-every 4 --eval-sequences 16 --save-every 4 --num-workers 0 --quiet"
)

# The framing of a .wandb file (LevelDB's log format behind a 7-byte header): 32 KiB blocks of records,
# each a 7-byte header (crc32, length, type) and a piece of one protobuf `Record`.
_HEADER, _BLOCK, _RECORD_HEADER = 7, 32768, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def wandb_records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    """The records of an offline run's `run-ID.wandb`, decoded with W&B's own protobuf schema."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:8]
    pos, pending = _HEADER, b""
    while pos + _RECORD_HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _RECORD_HEADER:  # a block's tail too short for a record header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _RECORD_HEADER])
        pending += data[pos + _RECORD_HEADER : pos + _RECORD_HEADER + length]
        pos += _RECORD_HEADER + length
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def history(run_file: Path) -> list[dict]:
    rows = []
    for r in wandb_records(run_file):
        if r.WhichOneof("record_type") == "history":
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
    return rows


def run_config(run_file: Path) -> dict:
    for r in wandb_records(run_file):
        if r.WhichOneof("record_type") == "run":
            return {u.key: json.loads(u.value_json) for u in r.run.config.update}
    raise AssertionError(f"{run_file}: no run record")


@pytest.fixture
def offline(tmp_path: Path, monkeypatch) -> Path:
    root = tmp_path / "wandb-dir"
    root.mkdir()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(root))
    monkeypatch.setenv("WANDB_SILENT", "true")
    return root


def pretrain(cli, shards: Path, out: Path, steps: int, *extra: str):
    r = cli("pretrain", shards, "--out", out, *TINY.split(), "--max-steps", steps, "--wandb", *extra)
    assert r.code == 0, r.err
    return r


def test_wandb_logs_the_metrics_and_resume_continues_the_run(
    cli, speech_shards: Path, tmp_path: Path, offline: Path, one_thread
) -> None:
    run = tmp_path / "run"
    pretrain(cli, speech_shards, run, 4, "--wandb-project", "ablations")
    record = json.loads((run / WANDB_RUN_FILE).read_text())
    assert record["project"] == "ablations" and record["last_step"] == 4
    [first] = (offline / "wandb").glob(f"offline-run-*-{record['id']}/run-{record['id']}.wandb")
    rows = history(first)
    logged = read_metrics(run / "metrics.jsonl")
    # Every line of metrics.jsonl is a row of the W&B run, under its split, against our step.
    assert [(r["step"], "valid/loss" in r) for r in rows] == [
        (m["step"], m["split"] == "valid") for m in logged
    ]
    for row, m in zip(rows, logged, strict=True):
        assert row[f"{m['split']}/loss"] == pytest.approx(m["loss"])
        assert row[f"{m['split']}/mlm_acc"] == pytest.approx(m["mlm_acc"])
    assert "train/lr" in rows[0]

    manifest = artifacts.read_manifest(run)
    config = run_config(first)
    assert config["fingerprint"] == manifest.fingerprint
    assert config["settings"]["max_steps"] == 4 and config["params"]["model"]["hidden_size"] > 0
    lineage = {n["fingerprint"]: n for n in config["lineage"]}
    assert artifacts.read_manifest(speech_shards).fingerprint in lineage
    assert [n["kind"] for n in config["lineage"]][-3:] == [
        "spanbert/tokenized",
        "spanbert/shards",
        "spanbert/run",
    ]
    assert WANDB_RUN_FILE in {f.path for f in manifest.files}  # the run artifact records its W&B run

    # --resume (--force: max-steps grows) continues the same W&B run from the checkpoint at step 4.
    pretrain(cli, speech_shards, run, 8, "--resume", "--force")
    again = json.loads((run / WANDB_RUN_FILE).read_text())
    assert again["id"] == record["id"] and again["last_step"] == 8
    second = [p for p in (offline / "wandb").glob(f"offline-run-*-{record['id']}/*.wandb") if p != first]
    assert len(second) == 1, "the resumed session is a second offline session of the same run id"
    assert [r["step"] for r in history(second[0])] == [6, 8, 8]  # train 6, train 8, valid 8


def test_without_wandb_installed_the_flag_says_how_to_get_it(
    cli, speech_shards: Path, tmp_path: Path, monkeypatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)  # what an absent package looks like to an import
    r = cli(
        "pretrain", speech_shards, "--out", tmp_path / "run", *TINY.split(), "--max-steps", "2", "--wandb"
    )
    assert_one_line_error(r, "--wandb", "pip install 'spanbert[wandb]'", code=2)
    assert not (tmp_path / "run").exists()


def test_a_bad_project_name_is_refused(cli, speech_shards: Path, tmp_path: Path) -> None:
    r = cli("pretrain", speech_shards, "--out", tmp_path / "run", "--wandb", "--wandb-project", "a/b")
    assert_one_line_error(r, "--wandb-project", code=2)
