"""spanbert_cli.model.spanbert: config, BERT equivalence with Hugging Face, heads at target positions only, losses."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from conftest import INAUGURAL, one_token_span_loss
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from spanbert_cli.errors import ArtifactError, UsageError
from spanbert_cli.model.spanbert import (
    IGNORE_INDEX,
    PRESETS,
    ModelConfig,
    SpanBert,
    from_hf_state_dict,
    hf_config_dict,
    to_hf_state_dict,
)

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD, CLS, SEP, MASK = 0, 2, 3, 4


# ---- fixtures: a real WordPiece vocabulary and real sentences ------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    files = sorted(INAUGURAL.glob("*.txt"))[:3]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train([str(f) for f in files], trainers.WordPieceTrainer(vocab_size=2000, special_tokens=SPECIALS))
    assert [tok.token_to_id(s) for s in SPECIALS] == [0, 1, 2, 3, 4]
    return tok


@pytest.fixture(scope="module")
def sentences():
    text = " ".join(sorted(INAUGURAL.glob("*.txt"))[0].read_text(encoding="utf-8").split())
    return [s for s in re.split(r"(?<=[.;])\s+", text) if len(s.split()) >= 12]


def encode_batch(tokenizer, sentences, max_len):
    """[CLS] piece ... [SEP], right-padded -> input_ids [B, T] long, attention_mask [B, T] bool."""
    rows = [[CLS, *tokenizer.encode(s).ids[: max_len - 2], SEP] for s in sentences]
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), PAD, dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = torch.tensor(row)
    return ids, ids != PAD


def span_targets(ids, mask, spans_per_row, num_positions=15):
    """Mask whole spans (given as (start, end) inclusive per row) and build the forward() target tensors."""
    T = ids.shape[1]
    inputs = ids.clone()
    mlm_pos, sbo_left, sbo_right, sbo_rel = [], [], [], []
    for b, spans in enumerate(spans_per_row):
        for s, e in spans:
            assert 1 <= s <= e < int(mask[b].sum()) - 1, "span must lie inside [CLS] ... [SEP]"
            for i in range(s, e + 1):
                inputs[b, i] = MASK
                mlm_pos.append(b * T + i)
                if i - s < num_positions:
                    sbo_left.append(b * T + s - 1)
                    sbo_right.append(b * T + e + 1)
                    sbo_rel.append(i - s)
    mlm_pos = torch.tensor(mlm_pos)
    flat = ids.reshape(-1)
    sbo_target_pos = torch.tensor([left + 1 + rel for left, rel in zip(sbo_left, sbo_rel, strict=True)])
    return dict(
        input_ids=inputs,
        attention_mask=mask,
        mlm_positions=mlm_pos,
        mlm_labels=flat[mlm_pos],
        sbo_positions=sbo_target_pos,
        sbo_left=torch.tensor(sbo_left),
        sbo_right=torch.tensor(sbo_right),
        sbo_rel_pos=torch.tensor(sbo_rel),
        sbo_labels=flat[sbo_target_pos],
    )


def perturb(model, seed=1):
    """Make every parameter non-trivial (LayerNorm weights != 1, biases != 0) so swaps would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def tiny_config(tokenizer, **overrides):
    return ModelConfig.from_preset("tiny", tokenizer.get_vocab_size(), **overrides)


def hf_model(cfg, cls_name="BertForMaskedLM"):
    hf_cfg = transformers.BertConfig(**hf_config_dict(cfg), attn_implementation="eager")
    return getattr(transformers, cls_name)(hf_cfg).eval()


# ---- configuration -------------------------------------------------------------------------------------


def test_presets_and_overrides():
    for name, (layers, hidden, heads) in PRESETS.items():
        cfg = ModelConfig.from_preset(name, 30522)
        assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads) == (layers, hidden, heads)
        assert cfg.intermediate_size == 4 * hidden
    cfg = ModelConfig.from_preset(
        "tiny", 2000, hidden_dropout=0.0, sbo_num_positions=10, attention_dropout=None
    )
    assert (cfg.hidden_dropout, cfg.attention_dropout, cfg.sbo_num_positions) == (0.0, 0.1, 10)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert json.loads(json.dumps(cfg.to_dict())) == cfg.to_dict()
    with pytest.raises(UsageError, match="unknown model preset 'huge'"):
        ModelConfig.from_preset("huge", 2000)
    with pytest.raises(UsageError, match=r"unknown key.*hiden_size"):
        ModelConfig.from_preset("tiny", 2000, hiden_size=64)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hidden_size": 130, "num_heads": 4}, "hidden_size 130 is not divisible by num_heads 4"),
        ({"num_layers": 0}, "num_layers must be >= 1"),
        ({"vocab_size": 10.0}, "vocab_size must be an integer"),
        ({"num_heads": True}, "num_heads must be an integer"),
        ({"pad_token_id": 5000}, "pad_token_id 5000 is outside the vocabulary"),
        ({"hidden_dropout": 1.0}, r"hidden_dropout must be in \[0, 1\)"),
        ({"attention_dropout": -0.1}, r"attention_dropout must be in \[0, 1\)"),
        ({"layer_norm_eps": 0}, "layer_norm_eps must be > 0"),
        ({"initializer_range": "0.02"}, "initializer_range must be a number"),
        ({"sbo_num_positions": 0}, "sbo_num_positions must be >= 1"),
    ],
)
def test_validation_errors(overrides, message):
    data = {**ModelConfig.from_preset("tiny", 2000).to_dict(), **overrides}
    with pytest.raises(UsageError, match=message) as info:
        ModelConfig.from_dict(data)
    assert "\n" not in str(info.value)


def test_from_json_file(tmp_path):
    own = tmp_path / "own.json"
    own.write_text(json.dumps({"hidden_size": 64, "num_layers": 1, "num_heads": 2}))
    cfg = ModelConfig.from_json_file(own, vocab_size=2000)
    assert (cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size) == (2000, 64, 256)
    with pytest.raises(UsageError, match=r"missing key.*vocab_size"):
        ModelConfig.from_json_file(own)

    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "vocab_size": 100,
                "hidden_size": 64,
                "num_layers": 1,
                "num_heads": 2,
                "dropout": 0.1,
                "heads": 2,
            }
        )
    )
    with pytest.raises(UsageError, match=r"unknown key\(s\) dropout, heads"):
        ModelConfig.from_json_file(bad)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        ModelConfig.from_json_file(tmp_path / "broken.json")
    with pytest.raises(UsageError, match="cannot read model config"):
        ModelConfig.from_json_file(tmp_path / "absent.json")

    # A Hugging Face config.json is accepted too (continued pretraining from a BERT checkpoint).
    hf = tmp_path / "config.json"
    transformers.BertConfig(
        vocab_size=500,
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=100,
        hidden_dropout_prob=0.05,
    ).to_json_file(hf)
    cfg = ModelConfig.from_json_file(hf)
    assert (cfg.vocab_size, cfg.num_layers, cfg.num_heads, cfg.intermediate_size, cfg.hidden_dropout) == (
        500,
        3,
        4,
        100,
        0.05,
    )
    with pytest.raises(UsageError, match="hidden_act 'relu'"):
        ModelConfig.from_hf_config({**json.loads(hf.read_text()), "hidden_act": "relu"})


def test_hf_config_round_trip():
    cfg = ModelConfig.from_preset("mini", 28996, sbo_num_positions=10, attention_dropout=0.0)
    hf = transformers.BertConfig(**hf_config_dict(cfg))
    assert ModelConfig.from_hf_config(hf.to_dict()) == cfg
    assert hf.architectures == ["BertForMaskedLM"] and hf.hidden_act == "gelu"


# ---- structure and initialisation ----------------------------------------------------------------------


def test_state_dict_keys_are_hugging_face_keys():
    cfg = ModelConfig(vocab_size=300, hidden_size=32, num_layers=2, num_heads=2)
    ours = SpanBert(cfg).state_dict()
    theirs = hf_model(cfg).state_dict()
    tied = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    assert {k for k in ours if not k.startswith("sbo.")} == set(theirs) - tied
    assert all(ours[k].shape == theirs[k].shape for k in ours if k in theirs)
    hf_state, sbo_state = to_hf_state_dict(SpanBert(cfg))
    assert set(hf_state) == set(theirs) - tied and all(k.startswith("sbo.") for k in sbo_state)


def test_init_is_bert_like_and_seeded():
    cfg = ModelConfig.from_preset("tiny", 2000)
    torch.manual_seed(123)
    a = SpanBert(cfg).state_dict()
    torch.manual_seed(123)
    b = SpanBert(cfg).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for key, value in a.items():
        if "LayerNorm" in key and key.endswith(".weight"):
            assert torch.all(value == 1), key
        elif key.endswith("bias"):
            assert torch.all(value == 0), key
        else:
            assert abs(value.std().item() - 0.02) < 0.004, key
    assert torch.all(a["bert.embeddings.word_embeddings.weight"][cfg.pad_token_id] == 0)


# ---- numerical equivalence with Hugging Face (eval, fp32, padding in the batch) -------------------------


def _compare(ours, theirs, ids, mask, masked_positions):
    with torch.no_grad():
        hidden = ours.encode(ids, mask)
        out = theirs(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True)
        assert (hidden - out.hidden_states[-1]).abs().max().item() <= 1e-5
        flat = hidden.reshape(-1, hidden.shape[-1])
        ours_logits = ours.mlm_logits(flat[masked_positions])
        theirs_logits = out.logits.reshape(-1, out.logits.shape[-1])[masked_positions]
        assert (ours_logits - theirs_logits).abs().max().item() <= 1e-5


def test_our_weights_in_hugging_face(tokenizer, sentences, tmp_path):
    cfg = tiny_config(tokenizer)
    torch.manual_seed(0)
    ours = SpanBert(cfg).eval()
    perturb(ours)
    ids, mask = encode_batch(tokenizer, sentences[:4], max_len=48)
    assert not mask.all(), "the batch must contain padding"
    batch = span_targets(ids, mask, [[(2, 4)], [(5, 9)], [(1, 1), (6, 7)], [(3, 5)]])

    theirs = hf_model(cfg)
    hf_state, _ = to_hf_state_dict(ours, include_tied=True)
    theirs.load_state_dict(hf_state, strict=True)
    _compare(ours, theirs, batch["input_ids"], mask, batch["mlm_positions"])

    # The on-disk form: config.json + model.safetensors that from_pretrained reads without complaint.
    from safetensors.torch import save_file

    hf_state, _ = to_hf_state_dict(ours)
    save_file({k: v.contiguous() for k, v in hf_state.items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(hf_config_dict(cfg)))
    loaded, info = transformers.BertForMaskedLM.from_pretrained(
        tmp_path, attn_implementation="eager", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    _compare(ours, loaded.eval(), batch["input_ids"], mask, batch["mlm_positions"])


def test_hugging_face_weights_in_ours(tokenizer, sentences):
    cfg = tiny_config(tokenizer)
    torch.manual_seed(1)
    theirs = hf_model(cfg)
    perturb(theirs, seed=2)
    ids, mask = encode_batch(tokenizer, sentences[4:9], max_len=40)
    assert not mask.all()
    positions = torch.tensor([1, 7, ids.shape[1] + 3, 3 * ids.shape[1] + 2])

    torch.manual_seed(5)
    ours = from_hf_state_dict(theirs.state_dict(), cfg).eval()
    _compare(ours, theirs, ids, mask, positions)

    # A plain BertModel (no "bert." prefix, a pooler, no MLM head): the encoder loads, the heads stay fresh.
    plain = transformers.BertModel(
        transformers.BertConfig(**hf_config_dict(cfg), attn_implementation="eager")
    )
    perturb(plain, seed=3)
    ours = SpanBert(cfg).eval()
    fresh_bias = ours.cls["predictions"].bias.clone()
    result = ours.load_hf_weights(plain.state_dict())
    assert set(result.initialized) == {k for k in ours.state_dict() if k.startswith(("cls.", "sbo."))}
    assert result.ignored == ["pooler.dense.weight", "pooler.dense.bias"]
    assert torch.equal(ours.cls["predictions"].bias, fresh_bias)
    with torch.no_grad():
        diff = (
            ours.encode(ids, mask) - plain.eval()(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        )
    assert diff.abs().max().item() <= 1e-5


def test_load_old_style_checkpoint_and_errors():
    cfg = ModelConfig(vocab_size=300, hidden_size=32, num_layers=2, num_heads=2)
    torch.manual_seed(0)
    source = SpanBert(cfg)
    perturb(source)
    hf_state, sbo_state = to_hf_state_dict(source, include_tied=True)
    # TF-era names, a position_ids buffer, an NSP head, and the MLM bias only as decoder.bias.
    old = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in hf_state.items()
        if k != "cls.predictions.bias"
    }
    old["bert.embeddings.position_ids"] = torch.arange(512)[None]
    old["cls.seq_relationship.weight"] = torch.zeros(2, 32)
    target = SpanBert(cfg)
    result = target.load_hf_weights({**old, **sbo_state})
    assert result.initialized == []
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in source.state_dict().items())

    def without(fragment):
        return {k: v for k, v in hf_state.items() if fragment not in k}

    def state_of(**shape):
        return to_hf_state_dict(SpanBert(ModelConfig(**{**cfg.to_dict(), **shape})))[0]

    with pytest.raises(ArtifactError, match=r"lacks bert\.encoder\.layer\.1\.output\.dense\.weight"):
        SpanBert(cfg).load_hf_weights(without("layer.1.output.dense.weight"))
    with pytest.raises(ArtifactError, match=r"bert\.encoder\.layer\.2\..*has no place"):
        SpanBert(cfg).load_hf_weights(state_of(num_layers=3))
    with pytest.raises(ArtifactError, match=r"word_embeddings\.weight has shape \(310, 32\)"):
        SpanBert(cfg).load_hf_weights(state_of(vocab_size=310))
    with pytest.raises(ArtifactError, match=r"lacks cls\.predictions\.transform\.dense\.weight"):
        SpanBert(cfg).load_hf_weights(without("predictions.transform.dense.weight"))


# ---- the losses ----------------------------------------------------------------------------------------


def test_overfits_one_batch(tokenizer, sentences):
    cfg = tiny_config(tokenizer, hidden_dropout=0.0, attention_dropout=0.0)
    torch.manual_seed(0)
    model = SpanBert(cfg).train()
    ids, mask = encode_batch(tokenizer, sentences[:4], max_len=32)
    batch = span_targets(ids, mask, [[(2, 4), (9, 12)], [(1, 3)], [(5, 5), (7, 10)], [(3, 8)]])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    first = None
    for _step in range(200):
        out = model(**batch)
        first = first if first is not None else out["loss"].item()
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        if out["mlm_loss"].item() < 0.02 and out["sbo_loss"].item() < 0.02:
            break
    assert first > 2 * math.log(cfg.vocab_size) * 0.8  # starts near chance for both heads
    assert out["mlm_loss"].item() < 0.05 and out["sbo_loss"].item() < 0.05
    assert out["mlm_correct"] == out["mlm_count"] == len(batch["mlm_labels"])
    assert out["sbo_correct"] == out["sbo_count"] == len(batch["sbo_labels"])


def test_loss_is_mean_ce_and_ignores_padding_slots(tokenizer, sentences):
    cfg = tiny_config(tokenizer)
    torch.manual_seed(0)
    model = SpanBert(cfg).eval()
    ids, mask = encode_batch(tokenizer, sentences[:2], max_len=24)
    batch = span_targets(ids, mask, [[(2, 4)], [(5, 7)]])
    out = model(**batch, sbo_weight=0.5)
    hidden = out_hidden = model(batch["input_ids"], mask)["hidden_states"]
    assert out_hidden.shape == (*ids.shape, cfg.hidden_size)
    flat = hidden.reshape(-1, cfg.hidden_size)
    mlm = F.cross_entropy(model.mlm_logits(flat[batch["mlm_positions"]]), batch["mlm_labels"])
    sbo = F.cross_entropy(
        model.sbo_logits(flat[batch["sbo_left"]], flat[batch["sbo_right"]], batch["sbo_rel_pos"]),
        batch["sbo_labels"],
    )
    torch.testing.assert_close(out["mlm_loss"], mlm)
    torch.testing.assert_close(out["sbo_loss"], sbo)
    torch.testing.assert_close(out["loss"], mlm + 0.5 * sbo)
    assert "hidden_states" not in out

    # Fixed-size target tensors padded with IGNORE_INDEX labels give the same numbers.
    padded = dict(batch)
    for key, fill in (
        ("mlm_positions", 0),
        ("mlm_labels", IGNORE_INDEX),
        ("sbo_left", 0),
        ("sbo_right", 0),
        ("sbo_rel_pos", 0),
        ("sbo_labels", IGNORE_INDEX),
    ):
        padded[key] = torch.cat([batch[key], torch.full((5,), fill)])
    again = model(**padded, sbo_weight=0.5)
    torch.testing.assert_close(again["loss"], out["loss"])
    assert again["mlm_count"] == len(batch["mlm_labels"]) and again["sbo_count"] == len(batch["sbo_labels"])


def test_sbo_weight_zero_and_no_sbo_targets(tokenizer, sentences):
    cfg = tiny_config(tokenizer)
    torch.manual_seed(0)
    model = SpanBert(cfg).train()
    ids, mask = encode_batch(tokenizer, sentences[:2], max_len=24)
    batch = span_targets(ids, mask, [[(2, 4)], [(5, 7)]])
    calls = []
    model.sbo.register_forward_hook(lambda *_: calls.append(1))

    out = model(**batch, sbo_weight=0.0)
    out["loss"].backward()
    assert calls == [] and out["sbo_loss"].item() == 0 and out["sbo_count"] == 0
    assert all(p.grad is None for p in model.sbo.parameters())
    assert all(p.grad is not None for n, p in model.named_parameters() if not n.startswith("sbo."))
    torch.testing.assert_close(out["loss"], out["mlm_loss"])

    # No SBO target in the batch (e.g. every span longer than sbo_num_positions): SBO loss 0, finite step.
    model.zero_grad(set_to_none=True)
    empty = {
        **batch,
        **{k: batch[k][:0] for k in ("sbo_positions", "sbo_left", "sbo_right", "sbo_rel_pos", "sbo_labels")},
    }
    out = model(**empty)
    out["loss"].backward()
    assert calls == [1] and out["sbo_loss"].item() == 0 and out["sbo_count"] == 0
    assert torch.isfinite(out["loss"]) and out["loss"].item() == pytest.approx(out["mlm_loss"].item())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


class _ShapeRecorder(TorchDispatchMode):
    """Records the shape of every tensor any aten op produces, forward and backward."""

    def __init__(self):
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.shapes += [tuple(t.shape) for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        return out


def _vocab_sized(shapes, vocab, hidden, max_rows):
    """Shapes [..., V] holding more than max_rows rows of vocabulary logits ([H, V] is E^T, allowed)."""
    return [
        s
        for s in shapes
        if len(s) >= 2 and s[-1] == vocab and math.prod(s[:-1]) > max_rows and s != (hidden, vocab)
    ]


def test_no_full_vocabulary_logits(tokenizer, sentences):
    cfg = tiny_config(tokenizer)
    V = cfg.vocab_size
    torch.manual_seed(0)
    model = SpanBert(cfg).train()
    ids, mask = encode_batch(tokenizer, sentences[:3], max_len=40)
    batch = span_targets(ids, mask, [[(2, 4)], [(5, 7)], [(1, 2)]])
    M, N = len(batch["mlm_labels"]), len(batch["sbo_labels"])
    assert ids.numel() > 4 * max(M, N) and ids.numel() != cfg.hidden_size

    with _ShapeRecorder() as rec:
        model(**batch)["loss"].backward()
    assert (M, V) in rec.shapes and (N, V) in rec.shapes  # the recorder does see the head outputs
    assert _vocab_sized(rec.shapes, V, cfg.hidden_size, max(M, N)) == []

    # The check can fail: a naive head over every position is caught.
    with _ShapeRecorder() as rec:
        hidden = model.encode(batch["input_ids"], mask)
        model.mlm_logits(hidden)
    assert (*ids.shape, V) in _vocab_sized(rec.shapes, V, cfg.hidden_size, max(M, N))


def test_autocast_keeps_losses_fp32(tokenizer, sentences):
    cfg = tiny_config(tokenizer)
    torch.manual_seed(0)
    model = SpanBert(cfg)
    ids, mask = encode_batch(tokenizer, sentences[:2], max_len=24)
    batch = span_targets(ids, mask, [[(2, 4)], [(5, 7)]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch)
        assert model.mlm_logits(torch.randn(3, cfg.hidden_size)).dtype == torch.bfloat16
    assert out["loss"].dtype == out["mlm_loss"].dtype == out["sbo_loss"].dtype == torch.float32
    out["loss"].backward()
    assert torch.isfinite(out["loss"])


def test_dropout_only_in_training(tokenizer, sentences):
    cfg = tiny_config(tokenizer, attention_dropout=0.5, hidden_dropout=0.0)
    model = SpanBert(cfg)
    ids, mask = encode_batch(tokenizer, sentences[:2], max_len=24)
    model.train()
    assert not torch.equal(model.encode(ids, mask), model.encode(ids, mask))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.encode(ids, mask), model.encode(ids, mask))
    with pytest.raises(UsageError, match="exceeds max_position_embeddings 512"):
        model.encode(torch.zeros(1, 513, dtype=torch.long), None)


def test_training_flops_are_what_torch_counts() -> None:
    """spanbert_cli.model.flops against torch's FlopCounterMode over a real forward + backward: equal on whole
    sequences, and padding never counts (two lengths run apart add up to the formula on both)."""
    from torch.utils.flop_counter import FlopCounterMode

    from spanbert_cli.model import flops

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=97, hidden_size=32, num_layers=2, num_heads=4)
    model = SpanBert(cfg)

    def counted(batch: int, length: int, targets: int) -> int:
        ids = torch.randint(5, 97, (batch, length))
        pos = torch.arange(1, 1 + targets)
        with FlopCounterMode(display=False) as counter:
            one_token_span_loss(model, ids, pos).backward()
        return counter.get_total_flops()

    assert counted(3, 10, 4) == flops.training_flops(cfg, [10, 10, 10], 4, 4)
    assert counted(1, 10, 2) + counted(1, 6, 3) == flops.training_flops(cfg, [10, 6], 5, 5)
    assert flops.peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert flops.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert flops.peak_tflops("Some Future GPU") is None
