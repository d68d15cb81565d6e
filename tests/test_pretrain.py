"""`spanbert pretrain` and `spanbert export` on real shards: learning, exact resume, Hugging Face export,
continued pretraining, and every bad input as one line."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error
from safetensors.torch import load_file

from spanbert_cli import artifacts
from spanbert_cli.errors import DataError, UsageError
from spanbert_cli.masking import MaskedDataset, MaskingConfig, VocabInfo, collate
from spanbert_cli.model.spanbert import ModelConfig, SpanBert, encoder_inputs, pack, targets
from spanbert_cli.training import data as D
from spanbert_cli.training.checkpoint import list_checkpoints
from spanbert_cli.training.config import PretrainConfig
from spanbert_cli.training.loop import build_optimizer, build_scheduler, lr_factor
from spanbert_cli.training.metrics import read_metrics

ROOT = Path(__file__).resolve().parent.parent


# ---- fixtures: real tokenize → shard artifacts ---------------------------------------------------------


@pytest.fixture(scope="module")
def shards(speech_shards: Path) -> Path:
    """Three real speeches, 64-token sequences (the session's shared shards)."""
    from spanbert_cli import artifacts

    stats = artifacts.read_manifest(speech_shards).stats["splits"]
    assert stats["train"]["sequences"] > 100 and stats["valid"]["sequences"] > 0
    return speech_shards


FAST = (
    "--model tiny --batch-size 8 --micro-batch-size 4 --lr 2e-3 --warmup-steps 2 --log-every 2 "
    "--eval-every 4 --save-every 4 --keep-last 2 --num-workers 0 --quiet"
)


def args(shards: Path, out: Path, *extra: object, steps: int = 8) -> list[object]:
    """A small, fast run: tiny model, 8 sequences per step in micro-batches of 4 (later options win)."""
    return ["pretrain", shards, "--out", out, *FAST.split(), "--max-steps", steps, *extra]


@pytest.fixture(scope="module")
def run(shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One complete 24-step run shared by the read-only tests."""
    from spanbert_cli.cli import main

    out = tmp_path_factory.mktemp("run") / "run"
    assert main([str(a) for a in args(shards, out, steps=24)]) == 0
    return out


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


# ---- the data order and the schedule -------------------------------------------------------------------


def test_global_order_is_a_function_of_seed_and_epoch() -> None:
    order = D.GlobalOrder(10, seed=3)
    keys = order.keys(0, 25)
    assert [e for e, _ in keys] == [0] * 10 + [1] * 10 + [2] * 5
    for epoch in range(2):
        idx = [i for e, i in keys if e == epoch]
        assert sorted(idx) == list(range(10))
        assert idx == np.random.default_rng([3, epoch]).permutation(10).tolist()
    assert D.GlobalOrder(10, seed=3).keys(13, 17) == keys[13:17]  # any window, no state

    # Each rank takes every world_size-th micro-batch; together they are the single-process stream.
    single = list(D.StepSampler(order, 8, 2, start_step=1, stop_step=3))
    ranks = [list(D.StepSampler(order, 8, 2, 1, 3, rank=r, world_size=2)) for r in range(2)]
    assert sorted(map(tuple, (k for r in ranks for mb in r for k in mb))) == sorted(
        tuple(k) for mb in single for k in mb
    )
    assert single[0] == order.keys(8, 10) and ranks[1][0] == order.keys(10, 12)
    assert D.micro_batch_seed(0, 5, 1) == D.micro_batch_seed(0, 5, 1) != D.micro_batch_seed(0, 5, 2)


def test_learning_rate_schedule() -> None:
    factors = [lr_factor(s, 4, 12) for s in range(12)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4:] == pytest.approx([(12 - s) / 8 for s in range(4, 12)])
    assert lr_factor(12, 4, 12) == 0.0 and all(f > 0 for f in factors)
    assert PretrainConfig(max_steps=50).resolved_warmup_steps == 5
    assert PretrainConfig().resolved_warmup_steps == 10_000


def test_config_problems_are_reported_together() -> None:
    with pytest.raises(UsageError) as info:
        PretrainConfig(
            lr=-1, max_steps=0, batch_size=10, micro_batch_size=3, precision="fp8", scheme="x"
        ).validate()
    msg = str(info.value)
    for flag in ("--lr", "--max-steps", "--micro-batch-size", "--precision", "--scheme"):
        assert flag in msg
    assert "\n" not in msg


# ---- learning ------------------------------------------------------------------------------------------


def test_overfitting_one_batch_drives_the_loss_near_zero(shards: Path) -> None:
    from spanbert_cli.shards.reader import ShardReader

    reader = ShardReader(shards)
    vocab = VocabInfo.from_tokenizer(reader.tokenizer)
    ds = MaskedDataset(reader, seed=0, config=MaskingConfig(), vocab=vocab)
    batch = collate([ds[i] for i in range(4)], pad_id=vocab.pad_id)
    cfg = ModelConfig.from_preset("tiny", reader.vocab_size, hidden_dropout=0.0, attention_dropout=0.0)
    torch.manual_seed(0)
    model = SpanBert(cfg)
    config = PretrainConfig(lr=3e-3, warmup_steps=10, max_steps=150)
    opt = build_optimizer(model, config, torch.device("cpu"))
    sched = build_scheduler(opt, config)
    losses = []
    for _ in range(150):
        out = model(**encoder_inputs(batch), **targets(batch))
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out["loss"].item())
    assert losses[0] > 14  # 2 x ln(2000) at initialisation
    assert losses[-1] < 0.05, losses[-10:]
    assert out["mlm_correct"] == out["mlm_count"] and out["sbo_correct"] == out["sbo_count"]


def test_loss_falls_and_everything_is_logged(run: Path) -> None:
    lines = read_metrics(run / "metrics.jsonl")
    train = [x for x in lines if x["split"] == "train"]
    valid = [x for x in lines if x["split"] == "valid"]
    assert [x["step"] for x in train] == list(range(2, 25, 2))
    assert [x["step"] for x in valid] == [4, 8, 12, 16, 20, 24]
    keys = {
        "step",
        "loss",
        "mlm_loss",
        "sbo_loss",
        "mlm_acc",
        "sbo_acc",
        "lr",
        "grad_norm",
        "tokens_per_s",
        "elapsed_s",
    }
    assert all(keys <= set(x) for x in train)
    assert all(x["loss"] == pytest.approx(x["mlm_loss"] + x["sbo_loss"], rel=1e-4) for x in train)
    assert train[-1]["loss"] < train[0]["loss"] - 1.0, [x["loss"] for x in train]
    assert valid[-1]["loss"] < valid[0]["loss"]
    assert train[0]["lr"] == pytest.approx(2e-3) and train[-1]["lr"] < 2e-4  # warm-up ends at step 2
    assert all(x["tokens_per_s"] > 0 and 0 <= x["mlm_acc"] <= 1 for x in train)

    # Model FLOPs per real token (spanbert_cli.model.flops): the encoder's linear layers, plus attention over at
    # most 64 tokens and the two heads at ~15% of the tokens each. No MFU on CPU (no known peak).
    cfg = ModelConfig(**artifacts.read_manifest(run).params["model"])
    H, F, V, L = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_layers
    linear = 3 * L * (8 * H * H + 4 * H * F)
    at_most = linear + 3 * L * 4 * H * 64 + 3 * 0.25 * 2 * (3 * H * H + 2 * H * V + 2 * H * H)
    for x in train:
        assert linear < x["model_tflops_per_s"] * 1e12 / x["tokens_per_s"] < at_most
        assert "mfu" not in x


def test_run_artifact_checkpoints_and_lineage(run: Path, shards: Path, cli) -> None:
    art = artifacts.open_artifact(run, "spanbert/run")
    m = art.manifest
    assert m.stats["status"] == "complete" and m.stats["step"] == 24
    shard_fp = artifacts.read_manifest(shards).fingerprint
    assert [(i.kind, i.fingerprint) for i in m.inputs] == [("spanbert/shards", shard_fp)]
    p = m.params
    assert (p["batch_size"], p["micro_batch_size"], p["precision"], p["model"]["hidden_size"]) == (
        8,
        4,
        "fp32",
        128,
    )
    assert p["model"]["vocab_size"] == artifacts.read_manifest(shards).extra["tokenizer"]["vocab_size"]
    assert "num_workers" not in p and m.extra["runtime"]["num_workers"] == 0

    # --keep-last 2: only the two newest checkpoints stay, each complete.
    ckpts = list_checkpoints(run)
    assert [c.step for c in ckpts] == [20, 24] and ckpts[-1].path.name == "step-0000024"
    files = {f.name for f in ckpts[-1].path.iterdir()}
    assert files == {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "vocab.txt",
        "training_state.pt",
        "checkpoint.json",
    }
    state = torch.load(ckpts[-1].path / "training_state.pt", weights_only=True)
    assert (state["step"], state["position"]) == (24, 24 * 8)
    assert {"optimizer", "scheduler", "rng", "epoch", "params"} <= set(state)
    assert set(weights(ckpts[-1].path)) == set(SpanBert(ModelConfig(**p["model"])).state_dict())

    r = cli("verify", run)
    assert r.code == 0, r.err
    r = cli("lineage", run, "--json")
    tree = json.loads(r.out)
    kinds = []
    while tree:
        kinds.append(tree["kind"])
        tree = next((c for c in tree["inputs"] if c["kind"] != "file"), None)
    assert kinds == ["spanbert/run", "spanbert/shards", "spanbert/tokenized"]


def test_same_run_again_is_up_to_date(run: Path, shards: Path, cli) -> None:
    before = (run / "manifest.json").read_bytes()
    r = cli(*args(shards, run, "--json", steps=24))
    assert r.code == 0, r.err
    assert json.loads(r.out)["cached"] is True
    assert (run / "manifest.json").read_bytes() == before


# ---- exact resumption ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(shards: Path, tmp_path: Path) -> None:
    def command(out: Path, *extra: object) -> list[str]:
        return [sys.executable, "-m", "spanbert_cli", *map(str, args(shards, out, *extra, steps=24))]

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    reference = tmp_path / "reference"
    subprocess.run(command(reference), check=True, env=env, timeout=300)

    killed = tmp_path / "killed"
    # Data-loader workers in the killed run: the data cannot depend on them.
    proc = subprocess.Popen(command(killed, "--num-workers", "2"), env=env)
    first = killed / "checkpoints" / "step-0000004"
    deadline = time.monotonic() + 240
    while not first.is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    stopped_at = max(c.step for c in list_checkpoints(killed))
    assert 4 <= stopped_at < 24
    assert artifacts.read_manifest(killed).stats["status"] == "running"

    subprocess.run(command(killed, "--resume", "--num-workers", "2"), check=True, env=env, timeout=300)
    a = weights(reference / "checkpoints" / "step-0000024")
    b = weights(killed / "checkpoints" / "step-0000024")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    # The resumed run's metrics continue where the checkpoint was, without duplicated steps.
    steps = [x["step"] for x in read_metrics(killed / "metrics.jsonl") if x["split"] == "train"]
    assert steps == list(range(2, 25, 2))
    assert (killed / "hf" / "model.safetensors").is_file()


def test_resume_refuses_changed_parameters_unless_forced(
    run: Path, shards: Path, tmp_path: Path, cli
) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    r = cli(*args(shards, copy, "--resume", "--lr", 1e-3, "--batch-size", 4, steps=28))
    assert_one_line_error(r, "different parameters", "batch_size", "lr", "max_steps", code=2)
    # Runtime settings may change freely; --force continues with the new parameters.
    r = cli(*args(shards, copy, "--resume", "--force", "--log-every", 1, "--num-workers", 1, steps=26))
    assert r.code == 0, r.err
    m = artifacts.read_manifest(copy)
    assert m.stats["step"] == 26 and m.params["max_steps"] == 26
    steps = [x["step"] for x in read_metrics(copy / "metrics.jsonl") if x["split"] == "train"]
    assert steps[-3:] == [24, 25, 26]


def test_unfinished_run_needs_resume_or_force(run: Path, shards: Path, tmp_path: Path, cli) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "checkpoints" / "step-0000024")
    r = cli(*args(shards, copy, "--max-steps", 30, steps=24))
    assert_one_line_error(r, "--resume", "--force")


def test_micro_batch_size_only_changes_accumulation(shards: Path, tmp_path: Path, cli) -> None:
    """The step loss is token-weighted over the whole batch: cutting it differently gives the same step."""
    cfg = tmp_path / "model.json"
    cfg.write_text(
        json.dumps(
            {
                "hidden_size": 64,
                "num_layers": 1,
                "num_heads": 2,
                "hidden_dropout": 0.0,
                "attention_dropout": 0.0,
            }
        )
    )
    first_steps = []
    for micro in (8, 2):
        out = tmp_path / f"micro{micro}"
        a = args(shards, out, "--log-every", 1, "--warmup-steps", 0, steps=1)
        a[a.index("--model") : a.index("--model") + 2] = ["--model-config", cfg]
        a[a.index("--micro-batch-size") + 1] = micro
        r = cli(*a)
        assert r.code == 0, r.err
        first_steps.append(read_metrics(out / "metrics.jsonl")[0])
    one, four = first_steps
    for key in ("loss", "mlm_loss", "sbo_loss", "grad_norm"):  # grad_norm: of the accumulated gradient
        assert one[key] == pytest.approx(four[key], rel=1e-5), key


def test_bf16_master_weights_track_fp32_and_resume_exactly(shards: Path, tmp_path: Path, cli) -> None:
    """--precision bf16-master: bf16 forward and backward, fp32 master weights. It follows the fp32 run
    closely (but not exactly: it really runs in bf16), saves fp32 weights and resumes bit-identically."""
    runs = {}
    for precision in ("fp32", "bf16-master"):
        runs[precision] = tmp_path / precision
        r = cli(*args(shards, runs[precision], "--precision", precision, steps=12))
        assert r.code == 0, r.err
    fp32, master = (read_metrics(runs[p] / "metrics.jsonl") for p in ("fp32", "bf16-master"))
    assert [(x["step"], x["split"]) for x in fp32] == [(x["step"], x["split"]) for x in master]
    for a, b in zip(fp32, master, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3) and b["loss"] != a["loss"], a["step"]
    assert artifacts.read_manifest(runs["bf16-master"]).params["precision"] == "bf16-master"

    final = weights(runs["bf16-master"] / "checkpoints" / "step-0000012")
    assert all(v.dtype == torch.float32 for v in final.values())
    # Master weights are not bf16 weights widened: updates below bf16's spacing were kept.
    assert sum(not torch.equal(v, v.bfloat16().float()) for v in final.values()) > len(final) // 2

    resumed = tmp_path / "resumed"
    shutil.copytree(runs["bf16-master"], resumed)
    step8 = resumed / "checkpoints" / "step-0000008"
    r = cli(*args(shards, resumed, "--precision", "bf16-master", "--resume-from", step8, steps=12))
    assert r.code == 0, r.err
    again = weights(resumed / "checkpoints" / "step-0000012")
    assert all(torch.equal(final[k], again[k]) for k in final)


@pytest.mark.slow
def test_compiled_model_trains_like_the_eager_one(shards: Path, tmp_path: Path, cli) -> None:
    """--compile (torch.compile of the whole model, heads and losses included: the bf16 copy under
    bf16-master) gives the eager run's losses; without dropout, whose compiled random stream differs."""
    cfg = tmp_path / "model.json"
    no_dropout = {"hidden_dropout": 0.0, "attention_dropout": 0.0}
    cfg.write_text(json.dumps({"hidden_size": 64, "num_layers": 1, "num_heads": 2, **no_dropout}))
    got = {}
    for extra in ([], ["--compile"]):
        out = tmp_path / ("compiled" if extra else "eager")
        a = args(
            shards, out, "--precision", "bf16-master", "--log-every", 1, "--eval-every", -1, *extra, steps=3
        )
        a[a.index("--model") : a.index("--model") + 2] = ["--model-config", cfg]
        r = cli(*a)
        assert r.code == 0, r.err
        got[bool(extra)] = read_metrics(out / "metrics.jsonl")
    assert [x["step"] for x in got[True]] == [1, 2, 3]
    for a, b in zip(got[False], got[True], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=2e-3), a["step"]


def test_sbo_weight_zero_trains_mlm_only(shards: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "run"
    r = cli(*args(shards, out, "--sbo-weight", 0, steps=4))
    assert r.code == 0, r.err
    lines = read_metrics(out / "metrics.jsonl")
    assert all(x["sbo_loss"] == 0 and x["sbo_acc"] == 0 for x in lines)
    assert all(x["loss"] == pytest.approx(x["mlm_loss"]) for x in lines)
    trained = weights(out / "checkpoints" / "step-0000004")
    torch.manual_seed(0)
    fresh = SpanBert(ModelConfig(**artifacts.read_manifest(out).params["model"])).state_dict()
    sbo = [k for k in trained if k.startswith("sbo.")]
    assert sbo and all(torch.equal(trained[k], fresh[k]) for k in sbo)  # no gradient, no decay
    assert not torch.equal(trained["cls.predictions.bias"], fresh["cls.predictions.bias"])


# ---- Hugging Face export and load_pretrained -----------------------------------------------------------


def test_hugging_face_export_loads_in_transformers(run: Path, shards: Path) -> None:
    transformers = pytest.importorskip("transformers")
    import spanbert_cli
    from spanbert_cli.shards.reader import ShardReader

    hf = run / "hf"
    assert {p.name for p in hf.iterdir()} >= {
        "config.json",
        "model.safetensors",
        "sbo_head.safetensors",
        "tokenizer.json",
        "vocab.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
    }
    model, info = transformers.AutoModelForMaskedLM.from_pretrained(hf, output_loading_info=True)
    assert type(model).__name__ == "BertForMaskedLM"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    tok = transformers.AutoTokenizer.from_pretrained(hf)
    reader = ShardReader(shards)
    text = "And so, my fellow Americans: ask not what your country can do for you."
    assert tok(text)["input_ids"] == reader.tokenizer.encode(text).ids

    ours = spanbert_cli.load_pretrained(run)
    assert not ours.training
    rows = [reader[i].astype(np.int64) for i in (0, 1)]
    ids = torch.zeros((2, max(map(len, rows))), dtype=torch.long)  # [PAD] is 0
    for b, row in enumerate(rows):
        ids[b, : len(row)] = torch.from_numpy(row)
    mask = ids != 0
    model.eval()
    with torch.no_grad():
        theirs = model(input_ids=ids, attention_mask=mask.long())
        hidden = ours(ids, mask)["hidden_states"]
        flat = hidden.reshape(-1, hidden.shape[-1])[mask.reshape(-1)]
        assert torch.allclose(ours.mlm_logits(flat), theirs.logits[mask], atol=1e-4)
        packed_ids, packed = pack(ids, mask)  # unpadded, as it trains: the same logits
        states = ours(packed_ids, packed=packed)["hidden_states"]
        assert torch.allclose(ours.mlm_logits(states), theirs.logits[mask], atol=1e-4)

    # The SBO head rides along in its own file; the run, its checkpoint and the export are the same model.
    sbo = load_file(str(hf / "sbo_head.safetensors"))
    assert sbo and all(k.startswith("sbo.") for k in sbo)
    final = run / "checkpoints" / "step-0000024"
    for source in (final, hf):
        other = spanbert_cli.load_pretrained(source).state_dict()
        assert all(torch.equal(v, other[k]) for k, v in ours.state_dict().items())
    older = spanbert_cli.load_pretrained(run, step=20).state_dict()
    assert not torch.equal(older["sbo.bias"], ours.state_dict()["sbo.bias"])


def test_export_command(run: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "export"
    r = cli("export", run, "--step", 20, "--out", out, "--json")
    assert r.code == 0, r.err
    result = json.loads(r.out)
    assert result["kind"] == "spanbert/export" and result["stats"]["step"] == 20
    a = weights(run / "checkpoints" / "step-0000020")
    b = load_file(str(out / "model.safetensors")) | load_file(str(out / "sbo_head.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert cli("verify", out).code == 0
    lineage = json.loads(cli("lineage", out, "--json").out)
    assert lineage["inputs"][0]["kind"] == "spanbert/run"
    r = cli("export", run, "--step", 20, "--out", out, "--json")
    assert json.loads(r.out)["cached"] is True
    assert_one_line_error(cli("export", run, "--step", 3, "--out", tmp_path / "x"), "no checkpoint of step 3")
    assert_one_line_error(cli("export", tmp_path / "absent"), "no such directory")


# ---- continued pretraining -----------------------------------------------------------------------------


def test_init_from_a_hugging_face_bert_directory(shards: Path, tmp_path: Path, cli) -> None:
    transformers = pytest.importorskip("transformers")
    vocab_size = artifacts.read_manifest(shards).extra["tokenizer"]["vocab_size"]
    bert_dir = tmp_path / "bert"
    config = transformers.BertConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
    )
    torch.manual_seed(1)
    transformers.BertForMaskedLM(config).save_pretrained(bert_dir)
    shutil.copyfile(shards / "vocab.txt", bert_dir / "vocab.txt")
    start = load_file(str(bert_dir / "model.safetensors"))

    out = tmp_path / "continued"
    a = args(shards, out, steps=2)
    del a[a.index("--model") : a.index("--model") + 2]
    r = cli(*a, "--init-from", bert_dir, "--lr", 1e-7)
    assert r.code == 0, r.err
    trained = weights(out / "checkpoints" / "step-0000002")
    assert trained["bert.encoder.layer.1.output.dense.weight"].shape == (64, 128)
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.allclose(trained[key], start[key], atol=1e-5)
    m = artifacts.read_manifest(out)
    assert [i.role for i in m.inputs] == ["input", "init"]

    # An earlier run of ours works the same way (its SBO head comes along).
    r = cli(
        *[x for x in args(shards, tmp_path / "again", steps=2) if x not in ("--model", "tiny")],
        "--init-from",
        out,
        "--lr",
        1e-7,
    )
    assert r.code == 0, r.err


def test_init_from_with_another_vocabulary_is_refused(shards: Path, tmp_path: Path, cli) -> None:
    transformers = pytest.importorskip("transformers")
    bert_dir = tmp_path / "bert"
    config = transformers.BertConfig(
        vocab_size=500, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    transformers.BertForMaskedLM(config).save_pretrained(bert_dir)
    a = [x for x in args(shards, tmp_path / "out", steps=2) if x not in ("--model", "tiny")]
    assert_one_line_error(cli(*a, "--init-from", bert_dir), "vocabulary of 500", "tokenize --tokenizer")

    # Same size, different tokens: the tokenizers are compared, not just counted.
    vocab_size = artifacts.read_manifest(shards).extra["tokenizer"]["vocab_size"]
    config.vocab_size = vocab_size
    transformers.BertForMaskedLM(config).save_pretrained(bert_dir)
    lines = (shards / "vocab.txt").read_text(encoding="utf-8").splitlines()
    lines[100], lines[101] = lines[101], lines[100]
    (bert_dir / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert_one_line_error(cli(*a, "--init-from", bert_dir), "tokenizer differs", "2 of")
    assert_one_line_error(cli(*args(shards, tmp_path / "o", "--init-from", bert_dir)), "--init-from", code=2)


# ---- bad input and faults: one line each ---------------------------------------------------------------


def test_batch_size_not_divisible(shards: Path, tmp_path: Path, cli) -> None:
    a = args(shards, tmp_path / "out")
    a[a.index("--batch-size") + 1] = 10
    assert_one_line_error(cli(*a), "--batch-size 10 is not divisible by --micro-batch-size 4", code=2)
    assert not (tmp_path / "out").exists()


def test_vocabulary_of_model_config_must_match(shards: Path, tmp_path: Path, cli) -> None:
    cfg = tmp_path / "model.json"
    cfg.write_text(json.dumps({"vocab_size": 999, "hidden_size": 64, "num_layers": 1, "num_heads": 2}))
    a = [x for x in args(shards, tmp_path / "out") if x not in ("--model", "tiny")]
    assert_one_line_error(cli(*a, "--model-config", cfg), "vocab_size 999", "shards' vocabulary")


def test_missing_and_tampered_shards(shards: Path, tmp_path: Path, cli) -> None:
    assert_one_line_error(cli(*args(tmp_path / "absent", tmp_path / "out")), "no such artifact")
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    part = copy / "train" / "part-00000.arrow"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    assert_one_line_error(cli(*args(copy, tmp_path / "out")), "sha256", "modified")
    part.write_bytes(bytes(data[:-100]))
    assert_one_line_error(cli(*args(copy, tmp_path / "out")), "tampered or truncated")
    part.unlink()
    assert_one_line_error(cli(*args(copy, tmp_path / "out")), "missing")
    assert_one_line_error(cli(*args(tmp_path, tmp_path / "out")), "not an artifact")


def test_no_shards_named_uses_the_workspace(shards: Path, tmp_path: Path, cli) -> None:
    ws = tmp_path / "ws"
    r = cli(*[x for x in args(shards, "x") if x not in (shards, "--out", "x")], "--workspace", ws)
    assert_one_line_error(r, "run `spanbert shard` first", code=2)
    shutil.copytree(shards, ws / "shards" / "speeches")
    r = cli(
        "pretrain",
        "--workspace",
        ws,
        "--model",
        "tiny",
        "--max-steps",
        2,
        "--batch-size",
        4,
        "--num-workers",
        0,
        "--json",
    )
    assert r.code == 0, r.err
    assert "using the newest shard artifact" in r.err
    path = Path(json.loads(r.out)["path"])
    assert path.parent == ws / "run" and path.name.startswith("speeches-tiny-")


def test_corrupt_checkpoint_is_refused(run: Path, shards: Path, tmp_path: Path, cli) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    f = copy / "checkpoints" / "step-0000024" / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-10] ^= 0x01
    f.write_bytes(bytes(data))
    r = cli(*args(shards, copy, "--resume", "--max-steps", 28, "--force", steps=24))
    assert_one_line_error(r, "step-0000024", "corrupt checkpoint", "model.safetensors")
    r = cli("export", copy, "--out", tmp_path / "export")
    assert_one_line_error(r, "corrupt checkpoint")
    (copy / "checkpoints" / "step-0000020" / "checkpoint.json").write_text("{not json")
    r = cli(*args(shards, copy, "--resume-from", copy / "checkpoints" / "step-0000020"))
    assert_one_line_error(r, "corrupt checkpoint")


def test_nan_loss_stops_with_last_good_checkpoint_kept(
    shards: Path, tmp_path: Path, cli, monkeypatch
) -> None:
    forward = SpanBert.forward
    calls = {"n": 0}

    def poisoned(self, *a, **k):
        out = forward(self, *a, **k)
        if self.training:
            calls["n"] += 1
            if calls["n"] > 2 * 5:  # from step 6 on (two micro-batches a step)
                out["loss"] = out["loss"] * math.nan
                out["mlm_loss"] = out["mlm_loss"] * math.nan
        return out

    monkeypatch.setattr(SpanBert, "forward", poisoned)
    out = tmp_path / "run"
    r = cli(*args(shards, out, steps=12))
    assert_one_line_error(r, "loss became nan at step 6", "step-0000004", "--lr")
    assert [c.step for c in list_checkpoints(out)] == [4]
    assert artifacts.read_manifest(out).stats["status"] == "running"


def test_out_of_memory_suggests_micro_batches(shards: Path, tmp_path: Path, cli, monkeypatch) -> None:
    def oom(self, *a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(SpanBert, "forward", oom)
    r = cli(*args(shards, tmp_path / "run"))
    assert_one_line_error(r, "out of memory", "--micro-batch-size 2")


def test_device_and_precision_checks(shards: Path, tmp_path: Path, cli) -> None:
    assert_one_line_error(
        cli(*args(shards, tmp_path / "o", "--precision", "fp16", "--device", "cpu")), "fp16", code=2
    )
    if not torch.cuda.is_available():
        assert_one_line_error(cli(*args(shards, tmp_path / "o", "--device", "cuda")), "no CUDA GPU", code=2)
    assert_one_line_error(cli(*args(shards, tmp_path / "o", "--device", "tpu")), "--device", code=2)


def test_masking_errors_leave_the_data_loader_as_one_line() -> None:
    """A data-loader worker would re-raise a masking error under a multi-line 'Caught … in worker' text."""

    class Ids:
        def __len__(self) -> int:
            return 3

        def __getitem__(self, i: int) -> np.ndarray:
            return np.array([2, 7, 8, 9, 99, 3])

    vocab = VocabInfo(
        vocab_size=20,
        cls_id=2,
        sep_id=3,
        pad_id=0,
        mask_id=4,
        special_ids=(0, 1, 2, 3, 4),
        is_continuation=np.zeros(20, dtype=bool),
    )
    ds = D.KeyedMaskedDataset(MaskedDataset(Ids(), seed=0, config=MaskingConfig(), vocab=vocab))
    loader = D._loader(ds, [[(0, 1), (1, 2)]], pad_id=0, num_workers=1, pin_memory=False)
    with pytest.raises(DataError, match=r"^the train split: token id 99 is outside the vocabulary of 20$"):
        for batch in loader:
            D.raise_if_error(batch)
