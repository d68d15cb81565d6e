"""bf16 weights with fp32 master weights (`--precision bf16-master`): the transfers between the two copies."""

from __future__ import annotations

import torch
from conftest import one_token_span_loss

from spanbert_cli.model.spanbert import ModelConfig, SpanBert
from spanbert_cli.training.precision import MasterWeights, autocast


def tiny_model() -> SpanBert:
    torch.manual_seed(0)
    return SpanBert(ModelConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2))


def loss_of(model: SpanBert, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return one_token_span_loss(model, torch.randint(5, 50, (2, 8), generator=g), torch.tensor([2, 3, 11]))


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


def _bf16_gradient_mean(ctx) -> float:
    """A launched rank: one bf16 weight whose gradient is this rank's input, averaged by DDP."""
    layer = torch.nn.Linear(1, 1, bias=False).to(torch.bfloat16)
    model = ctx.wrap_model(layer)
    from spanbert_cli.training.precision import fp32_allreduce_hook

    # gloo happens to sum bf16 exactly; NCCL adds in bf16 at each hop. So check the hook is in place too.
    assert [hook for hook, _ in model._comm_hooks] == [fp32_allreduce_hook]
    x = [1.0, 2**-8, 2**-8][ctx.rank]
    model(torch.tensor([[x]], dtype=torch.bfloat16)).sum().backward()
    return float(layer.weight.grad)


def test_ddp_averages_bf16_gradients_in_fp32() -> None:
    """Three real processes (gloo). Added in bf16 (NCCL does, hop by hop), 1 + 2**-8 rounds back to 1
    and the small gradients vanish; the hook sums in fp32 and rounds the mean once."""
    from spanbert_cli.training import distributed, launcher

    plan = distributed.plan_launch(procs=3, device="cpu")
    results = launcher.launch(plan, _bf16_gradient_mean)
    expected = torch.tensor((1 + 2**-7) / 3).to(torch.bfloat16).item()
    assert expected != torch.tensor(1 / 3).to(torch.bfloat16).item()
    assert [results[r] for r in range(3)] == [expected] * 3
