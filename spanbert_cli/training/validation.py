"""The pretraining objective measured on fixed masks: pretraining's validation and `spanbert eval mlm`.

Both reduce the same six token-weighted sums (`masked_lm_sums`) and turn them into the same figures
(`summarize`), so a run's logged validation and a later `eval mlm` of it agree; and both re-hash the shards
before reading them (`verify_shards`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from spanbert_cli import artifacts
from spanbert_cli.errors import ArtifactError
from spanbert_cli.model.spanbert import SpanBert, encoder_inputs, targets
from spanbert_cli.progress import Reporter
from spanbert_cli.training import data as D
from spanbert_cli.training.precision import autocast


def masked_lm_sums(
    model: SpanBert,
    batches: Iterable[dict[str, Any]],
    device: torch.device,
    precision: str,
    sbo_weight: float,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Token-weighted sums over masked batches, reduced on the fly (memory does not grow with the split):
    [MLM cross-entropy sum, MLM correct, MLM targets, SBO cross-entropy sum, SBO correct, SBO targets]."""
    sums = torch.zeros(6, dtype=torch.float64, device=device)
    with torch.no_grad():
        for batch in batches:
            D.raise_if_error(batch)
            b = {key: v.to(device, non_blocking=True) for key, v in batch.items() if key != "index"}
            with autocast(device, precision):
                out = model(**encoder_inputs(batch, b), **targets(b), sbo_weight=sbo_weight)
            sums += torch.stack(
                [
                    out["mlm_loss"].double() * out["mlm_count"],
                    out["mlm_correct"].double(),
                    out["mlm_count"].double(),
                    out["sbo_loss"].double() * out["sbo_count"],
                    out["sbo_correct"].double(),
                    out["sbo_count"].double(),
                ]
            )
            if on_batch is not None:
                on_batch(int(batch["index"].shape[0]))
    return sums


def _exp(x: float) -> float:
    return math.exp(x) if x < 700 else math.inf


def summarize(sums: list[float], sbo_weight: float, sequences: int) -> dict[str, Any]:
    """The metrics from the six running sums (MLM CE sum, correct, count; SBO CE sum, correct, count)."""
    mlm_sum, mlm_ok, mlm_n, sbo_sum, sbo_ok, sbo_n = sums
    mlm_loss = mlm_sum / max(mlm_n, 1)
    sbo_loss = sbo_sum / max(sbo_n, 1)
    return {
        "loss": mlm_loss + sbo_weight * sbo_loss,
        "mlm_loss": mlm_loss,
        "mlm_acc": mlm_ok / max(mlm_n, 1),
        "mlm_ppl": _exp(mlm_loss),
        "sbo_loss": sbo_loss,
        "sbo_acc": sbo_ok / max(sbo_n, 1),
        "sbo_ppl": _exp(sbo_loss),
        "mlm_targets": int(mlm_n),
        "sbo_targets": int(sbo_n),
        "sequences": sequences,
        "sbo_weight": sbo_weight,
    }


def verify_shards(
    art: artifacts.Artifact, rep: Reporter, readers: Sequence[Any] = (), split: str | None = None
) -> None:
    """Re-hash the shards once per run (a few seconds per GB) before training reads them, then open each
    file of `readers` (ShardReaders): a manifest re-hashed after an edit passes the hash check. With
    `split`, only that split's files and the shared ones (the tokenizer) are read."""
    rep.start("verifying shards")
    from spanbert_cli.shards.pack import SPLITS

    others = set(SPLITS) - {split}
    problems = artifacts.verify(
        art.path, None if split is None else lambda rel: rel.split("/")[0] not in others
    )
    rep.finish()
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ArtifactError(f"{art.path}: {problems[0]}{more}: the shard artifact was modified; re-create it")
    for reader in readers:
        reader.validate()
