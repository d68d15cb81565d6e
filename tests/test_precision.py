"""bf16 weights with fp32 master weights (`--precision bf16-master`): the transfers between the two copies."""

from __future__ import annotations

import torch

from spanbert_cli.model import ModelConfig, SpanBert
from spanbert_cli.training.precision import MasterWeights, autocast


def tiny_model() -> SpanBert:
    torch.manual_seed(0)
    return SpanBert(ModelConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2))


def loss_of(model: SpanBert, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 50, (2, 8), generator=g)
    positions = torch.tensor([2, 3, 11])
    out = model(
        ids,
        None,
        mlm_positions=positions,
        mlm_labels=ids.view(-1)[positions],
        sbo_left=positions - 1,
        sbo_right=positions + 1,
        sbo_rel_pos=torch.zeros(3, dtype=torch.long),
        sbo_labels=ids.view(-1)[positions],
    )
    return out["loss"]


def test_the_compute_copy_is_bf16_and_keeps_the_weights_tied() -> None:
    model = tiny_model()
    mw = MasterWeights(model)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.dtype == torch.bfloat16 for p in mw.compute.parameters())
    assert mw.compute.word_embeddings is mw.compute.bert.embeddings.word_embeddings.weight
    for (name, m), (_, c) in zip(model.named_parameters(), mw.compute.named_parameters(), strict=True):
        assert torch.equal(c, m.to(torch.bfloat16)), name


def test_gradients_accumulate_in_fp32_on_the_master() -> None:
    model = tiny_model()
    mw = MasterWeights(model)
    expected: dict[str, torch.Tensor] = {}
    for seed in (1, 2):  # two micro-batches
        loss_of(mw.compute, seed).backward()
        for name, c in mw.compute.named_parameters():
            if c.grad is not None:
                expected[name] = expected.get(name, 0) + c.grad.float()
        mw.grads_to_master()
        assert all(c.grad is None for c in mw.compute.parameters())  # released after each transfer
    got = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys() and len(got) > 10
    assert all(got[k].dtype == torch.float32 and torch.equal(got[k], expected[k]) for k in got)


def test_small_updates_survive_on_the_master_and_reach_the_copy_rounded() -> None:
    model = tiny_model()
    mw = MasterWeights(model)
    w = model.bert.embeddings.LayerNorm.weight  # all ones: bf16's spacing there is 2**-7
    before = mw.compute.bert.embeddings.LayerNorm.weight.clone()
    for _ in range(3):
        with torch.no_grad():
            w.add_(2**-9)  # below half the spacing: a bf16 weight would round each update away
        mw.refresh()
    assert torch.equal(w, torch.full_like(w, 1 + 3 * 2**-9))
    copy = mw.compute.bert.embeddings.LayerNorm.weight
    assert torch.equal(copy, w.to(torch.bfloat16)) and not torch.equal(copy, before)


def test_no_autocast_for_fp32_and_bf16_master() -> None:
    x = torch.ones(2, 2)
    for precision in ("fp32", "bf16-master"):
        with autocast(torch.device("cpu"), precision):
            assert (x @ x).dtype == torch.float32
    with autocast(torch.device("cpu"), "bf16"):
        assert (x @ x).dtype == torch.bfloat16
