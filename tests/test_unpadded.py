"""The unpadded encoder: on real masked batches of mixed lengths it computes what the padded layout
computes (fp32, dropout off) — hidden states, MLM and SBO losses, every parameter's gradient — and only
on real tokens; `pack`/`unpack` for callers with padded tensors; torch.compile without a recompilation
per step although every micro-batch has another number of tokens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spanbert_cli.masking import MaskedDataset, MaskingConfig, VocabInfo, collate
from spanbert_cli.model.spanbert import (
    ModelConfig,
    Packed,
    SpanBert,
    encoder_inputs,
    key_mask_of,
    pack,
    targets,
    unpack,
    varlen_attention,
)
from spanbert_cli.shards.reader import ShardReader

LENGTHS = [64, 17, 40, 64, 9, 33, 51, 64]  # the longest first and last, one of 9 tokens


@pytest.fixture(scope="module")
def real(speech_shards: Path):
    """Real sequences of the speech shards cut to LENGTHS (each still ends with [SEP]), masked."""
    reader = ShardReader(speech_shards)
    vocab = VocabInfo.from_tokenizer(reader.tokenizer)
    full = [s for s in (np.asarray(reader[i]) for i in range(len(reader))) if len(s) == max(LENGTHS)]
    seqs = [
        np.concatenate([s[: n - 1], [vocab.sep_id]]).astype(s.dtype)
        for s, n in zip(full[: len(LENGTHS)], LENGTHS, strict=True)
    ]
    ds = MaskedDataset(seqs, seed=3, config=MaskingConfig(), vocab=vocab)
    items = ds.__getitems__(list(range(len(seqs))))
    cfg = ModelConfig.from_preset("tiny", reader.vocab_size, hidden_dropout=0.0, attention_dropout=0.0)
    return items, vocab, cfg, seqs


def _run(model: SpanBert, batch: dict) -> tuple[dict, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    out = model(**encoder_inputs(batch), **targets(batch))
    out["loss"].backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_unpadded_equals_the_padded_layout(real) -> None:
    items, vocab, cfg, _ = real
    packed, padded = collate(items, vocab.pad_id), collate(items, vocab.pad_id, padded=True)
    assert packed["input_ids"].shape == (sum(LENGTHS),)  # real tokens only
    assert padded["input_ids"].shape == (len(LENGTHS), max(LENGTHS))
    torch.manual_seed(0)
    model = SpanBert(cfg).train()  # dropout is off in the config: train mode takes the training path

    out_u, grads_u = _run(model, packed)
    out_p, grads_p = _run(model, padded)
    assert out_u["mlm_count"] > 10 and out_u["sbo_count"] > 10
    for key in ("mlm_loss", "sbo_loss", "loss"):
        torch.testing.assert_close(out_u[key], out_p[key], atol=1e-5, rtol=0, msg=key)
    for key in ("mlm_correct", "mlm_count", "sbo_correct", "sbo_count"):
        assert int(out_u[key]) == int(out_p[key]), key
    assert (
        grads_u.keys()
        == grads_p.keys()
        == {n for n, _ in model.named_parameters()} - {"bert.embeddings.token_type_embeddings.weight"}
        or grads_u.keys() == grads_p.keys()
    )
    for name, g in grads_p.items():
        torch.testing.assert_close(grads_u[name], g, atol=1e-5, rtol=1e-4, msg=name)

    with torch.no_grad():
        h_u = model.encode(**encoder_inputs(packed))  # [N, H]
        h_p = model.encode(**encoder_inputs(padded))  # [B, T, H]
    assert h_u.shape == (sum(LENGTHS), cfg.hidden_size)
    torch.testing.assert_close(h_u, h_p[padded["attention_mask"]], atol=1e-5, rtol=0)


def test_the_heads_never_see_a_padding_row(real) -> None:
    """Target rows index the packed tokens: each MLM label is the original token at its row."""
    items, vocab, _, seqs = real
    packed = collate(items, vocab.pad_id)
    original = torch.from_numpy(np.concatenate(seqs).astype(np.int64))
    assert packed["input_ids"].shape == original.shape and (packed["input_ids"] != vocab.pad_id).all()
    assert torch.equal(original[packed["mlm_positions"]], packed["mlm_labels"])
    assert torch.equal(original[packed["sbo_positions"]], packed["sbo_labels"])
    # the boundaries of every SBO target lie inside its own sequence
    seq_of = torch.repeat_interleave(torch.arange(len(seqs)), torch.tensor([len(s) for s in seqs]))
    assert torch.equal(seq_of[packed["sbo_left"]], seq_of[packed["sbo_positions"]])
    assert torch.equal(seq_of[packed["sbo_right"]], seq_of[packed["sbo_positions"]])


def test_batch_without_padding_takes_the_mask_free_kernel(real) -> None:
    items, vocab, cfg, _ = real
    full = [it for it, n in zip(items, LENGTHS, strict=True) if n == max(LENGTHS)]
    packed, padded = collate(full, vocab.pad_id), collate(full, vocab.pad_id, padded=True)
    p = encoder_inputs(packed)["packed"]
    assert key_mask_of(p) is None
    torch.manual_seed(0)
    model = SpanBert(cfg).eval()
    with torch.no_grad():
        a, b = (
            model(**encoder_inputs(packed), **targets(packed)),
            model(**encoder_inputs(padded), **targets(padded)),
        )
    torch.testing.assert_close(a["loss"], b["loss"], atol=1e-6, rtol=0)


def test_varlen_attention_matches_one_sequence_at_a_time() -> None:
    torch.manual_seed(0)
    lengths = [5, 1, 12, 7]
    N, nh, hd = sum(lengths), 2, 8
    q, k, v = (torch.randn(N, nh, hd) for _ in range(3))
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    _, p = pack(ids, mask)
    out = varlen_attention(q, k, v, p, 0.0)
    start = 0
    for n in lengths:
        one = torch.nn.functional.scaled_dot_product_attention(
            *(x[start : start + n].transpose(0, 1) for x in (q, k, v))
        ).transpose(0, 1)
        torch.testing.assert_close(out[start : start + n], one, atol=1e-6, rtol=0)
        start += n


def test_pack_and_unpack_for_padded_callers(real) -> None:
    items, vocab, cfg, _ = real
    padded = collate(items, vocab.pad_id, padded=True)
    torch.manual_seed(0)
    model = SpanBert(cfg).eval()
    ids, p = pack(padded["input_ids"], padded["attention_mask"])
    assert isinstance(p, Packed) and ids.shape == (sum(LENGTHS),)
    assert p.cu_seqlens.tolist() == np.concatenate([[0], np.cumsum(LENGTHS)]).tolist()
    with torch.no_grad():
        states = unpack(model(ids, packed=p)["hidden_states"], p)
        reference = model(padded["input_ids"], padded["attention_mask"])["hidden_states"]
    mask = padded["attention_mask"]
    torch.testing.assert_close(states[mask], reference[mask], atol=1e-5, rtol=0)
    assert (states[~mask] == 0).all()
    left_padded = padded["attention_mask"].flip(1)
    with pytest.raises(ValueError, match="right padding"):
        pack(padded["input_ids"], left_padded)


def test_compiled_model_does_not_recompile_for_every_token_count(real) -> None:
    """Every micro-batch has another number of tokens (and of targets, and often another longest
    sequence); once a size has changed, dynamo makes it symbolic, so the graphs stop multiplying."""
    items, vocab, cfg, _ = real
    torch.manual_seed(0)
    model = SpanBert(cfg).train()
    graphs = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend)
    # Sizes change one kind at a time: the token count, then the longest sequence too.
    windows = [(0, 3), (1, 5), (4, 7), (2, 6), (5, 8), (3, 5), (0, 2), (6, 8)]
    batches = [collate(items[a:b], vocab.pad_id) for a, b in windows]
    assert len({b["input_ids"].shape[0] for b in batches}) == len(batches)
    assert len({int(b["max_seqlen"]) for b in batches}) >= 2
    for b in batches[:4]:
        compiled(**encoder_inputs(b), **targets(b))["loss"].backward()
    warm = len(graphs)
    assert 1 <= warm <= 3
    for b in batches[4:]:  # new token counts, target counts and longest sequences
        compiled(**encoder_inputs(b), **targets(b))["loss"].backward()
    assert len(graphs) == warm, f"recompiled: {len(graphs)} graphs for {len(batches)} micro-batches"
    torch._dynamo.reset()
