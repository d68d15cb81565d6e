"""`spanbert eval mlm RUN SHARDS`: held-out masked-LM and span-boundary loss, accuracy and perplexity.

The valid split of a shard artifact is masked exactly as pretraining masks it (docs/algorithm.md §2: the
masks are a pure function of the seed, the epoch, the sequence index and the masking parameters; epoch 0,
as the run's own validation uses), with the run's masking parameters and seed unless overridden, and scored by the
model's MLM and SBO heads. The figures are token-weighted over the whole split:

    mlm_loss   mean cross-entropy over every masked token          mlm_ppl = exp(mlm_loss)
    sbo_loss   mean cross-entropy over every SBO target            sbo_ppl = exp(sbo_loss)
    loss       mlm_loss + sbo_weight * sbo_loss (the pretraining objective)
    mlm_acc, sbo_acc   share of targets whose arg-max is the original token

Batches are reduced as they come (six running sums), and the batches themselves are drawn lazily: memory
does not grow with the number of sequences.

Output artifact (`spanbert/eval-mlm`): `metrics.json` and the manifest (inputs: the model, by fingerprint
and content, and the shard artifact).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spanbert_cli import artifacts, kinds
from spanbert_cli.artifacts import locks
from spanbert_cli.errors import ArtifactError, DataError, naming_io_errors
from spanbert_cli.eval.config import MlmEvalConfig
from spanbert_cli.masking import MASKING_FIELDS, MaskingConfig, VocabInfo
from spanbert_cli.model.config import NUMERICS_VERSION
from spanbert_cli.model.weights import PretrainedRun, load_encoder, resolve_run
from spanbert_cli.progress import NullReporter, Reporter

KIND = kinds.EVAL_MLM
SHARDS_KIND = kinds.SHARDS
RUN_KIND = kinds.RUN


@dataclass
class MlmEvalResult:
    artifact: artifacts.Artifact
    cached: bool
    metrics: dict[str, Any] = field(default_factory=dict)


def run_params(pre: PretrainedRun) -> tuple[dict[str, Any], str]:
    """The pretraining parameters of the run the model comes from (masking, SBO weight, seed), and
    where they were found; ({}, reason) when the model has no run (e.g. a Hugging Face directory)."""
    candidates = []
    if pre.source.run is not None:
        candidates.append(Path(pre.source.run))
    candidates.append(pre.source.path.parent)  # RUN/hf, the export a run writes at its end
    info = pre.source.path / "spanbert_export.json"
    if info.is_file():
        try:
            ckpt = json.loads(info.read_text()).get("checkpoint")
        except (OSError, ValueError):
            ckpt = None
        if ckpt:
            candidates.append(Path(ckpt).parent.parent)
    for d in candidates:
        if (d / artifacts.MANIFEST).is_file():
            try:
                m = artifacts.read_manifest(d)
            except ArtifactError:
                continue
            if m.kind == RUN_KIND:
                return m.params, str(d)
    return {}, "the paper's defaults (no pretrain run found for this model)"


def resolve_masking(config: MlmEvalConfig, params: dict[str, Any]) -> tuple[MaskingConfig, float, int]:
    """(masking, SBO weight, seed): each setting from the config, else the run's, else the default."""
    defaults = MaskingConfig()
    values = {}
    for name in MASKING_FIELDS:
        given = getattr(config, name)
        if given is not None:
            values[name] = given
        elif params.get(name) is not None:
            values[name] = params[name]
        else:
            values[name] = getattr(defaults, name)
    if config.span_len is None and config.scheme is not None and config.scheme != "span":
        values["span_len"] = None  # a run's fixed span length does not carry over to another scheme
    masking = MaskingConfig(**values)
    masking.validate()
    sbo_weight = config.sbo_weight if config.sbo_weight is not None else float(params.get("sbo_weight", 1.0))
    seed = config.seed if config.seed is not None else int(params.get("seed", 0))
    return masking, sbo_weight, seed


class LazyBatches:
    """Micro-batches of (epoch 0, index) keys over the first `n` sequences, made as they are drawn."""

    def __init__(self, n: int, batch_size: int):
        self.n, self.batch_size = n, batch_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for start in range(0, self.n, self.batch_size):
            yield [(0, i) for i in range(start, min(start + self.batch_size, self.n))]

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)


@dataclass
class _Prepared:
    """What an evaluation is made of, resolved before anything heavy is read."""

    plan: artifacts.Plan
    pre: PretrainedRun
    shard_art: artifacts.Artifact
    reader: Any  # ShardReader
    vocab: VocabInfo
    masking: MaskingConfig
    sbo_weight: float
    seed: int
    sequences: int
    device: Any  # torch.device
    precision: str
    found_in: str


def _prepare(
    run: str | os.PathLike,
    shards: str | os.PathLike,
    config: MlmEvalConfig,
    out: str | os.PathLike | None,
    workspace: str | os.PathLike | None,
    rep: Reporter,
) -> _Prepared:
    from spanbert_cli.shards.reader import ShardReader
    from spanbert_cli.training.device import resolve_device, resolve_precision

    config.validate()
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    pre = resolve_run(run, workspace, rep, require_tokenizer=False)
    shard_art = artifacts.open_artifact(shards, SHARDS_KIND)
    reader = ShardReader(shard_art, config.split)
    vocab = VocabInfo.from_tokenizer(reader.tokenizer)
    if pre.tokenizer is not None:
        theirs = pre.tokenizer.get_vocab(with_added_tokens=True)
        ours = reader.tokenizer.get_vocab(with_added_tokens=True)
        if theirs != ours:
            differ = sum(1 for t, i in ours.items() if theirs.get(t) != i)
            raise DataError(
                f"{shards}: the shards were made with another tokenizer than the model's ({differ} of "
                f"{len(ours)} token ids differ); evaluate on shards of the model's own corpus/tokenizer"
            )
    params, found_in = run_params(pre)
    masking, sbo_weight, seed = resolve_masking(config, params)
    n = len(reader) if config.max_sequences is None else min(config.max_sequences, len(reader))
    if n == 0:
        raise DataError(
            f"{shards}: the {config.split} split has no sequences (shard with a valid fraction > 0)"
        )

    plan_params = {
        "split": config.split,
        "sequences": n,
        "masking": masking.to_dict(),
        "sbo_weight": sbo_weight,
        "seed": seed,
        "epoch": 0,
        "precision": precision,
        "numerics": NUMERICS_VERSION,
        **({"unused_excluded": True} if vocab.unused_ids else {}),
    }
    inputs = [*pre.inputs, artifacts.InputRef.from_artifact(shard_art, role="shards")]
    plan = artifacts.plan(
        KIND, plan_params, inputs, out=out, name=f"{pre.name}-{config.split}", workspace=workspace
    )
    return _Prepared(
        plan, pre, shard_art, reader, vocab, masking, sbo_weight, seed, n, device, precision, found_in
    )


def plan_evaluate_mlm(
    run: str | os.PathLike,
    shards: str | os.PathLike,
    config: MlmEvalConfig,
    *,
    out: str | os.PathLike | None = None,
    workspace: str | os.PathLike | None = None,
    reporter: Reporter | None = None,
) -> artifacts.Plan:
    """The fingerprint and output directory this evaluation would have, without running it."""
    return _prepare(run, shards, config, out, workspace, reporter or NullReporter()).plan


def evaluate_mlm(
    run: str | os.PathLike,
    shards: str | os.PathLike,
    config: MlmEvalConfig,
    *,
    out: str | os.PathLike | None = None,
    workspace: str | os.PathLike | None = None,
    force: bool = False,
    reporter: Reporter | None = None,
) -> MlmEvalResult:
    """MLM and SBO loss / accuracy / perplexity of RUN's model on a split of SHARDS, as an artifact."""
    from spanbert_cli.training.data import eval_loader
    from spanbert_cli.training.validation import masked_lm_sums, summarize, verify_shards

    rep = reporter or NullReporter()
    p = _prepare(run, shards, config, out, workspace, rep)
    plan, pre, shard_art, reader, vocab = p.plan, p.pre, p.shard_art, p.reader, p.vocab
    masking, sbo_weight, seed, n = p.masking, p.sbo_weight, p.seed, p.sequences
    device, precision, found_in = p.device, p.precision, p.found_in
    with locks.exclusive(plan.out):
        if (hit := artifacts.existing(plan, force)) is not None:
            return MlmEvalResult(hit, True, json.loads(hit.file("metrics.json").read_text()))

        # As pretraining does, and only now that the evaluation will run: a plan or a hit reads nothing.
        verify_shards(shard_art, rep, (reader,), split=config.split)
        model = load_encoder(pre)
        cfg = model.config
        if cfg.vocab_size < vocab.vocab_size:
            raise DataError(
                f"{run}: the model has {cfg.vocab_size} embeddings but the shards' tokenizer {vocab.vocab_size} tokens"
            )
        if cfg.max_position_embeddings < reader.max_seq_len:
            raise DataError(
                f"{shards}: sequences of up to {reader.max_seq_len} tokens, the model has "
                f"{cfg.max_position_embeddings} positions"
            )
        model = model.to(device).eval()
        loader = eval_loader(
            reader,
            seed=seed,
            masking=masking,
            vocab=vocab,
            max_sbo_positions=cfg.sbo_num_positions,
            batches=LazyBatches(n, config.batch_size),
            num_workers=config.num_workers,
            pin_memory=device.type == "cuda",
            split=config.split,
        )
        rep.start(f"evaluating ({config.split})", total=n)
        t0 = time.perf_counter()
        done = [0]

        def progress(rows: int) -> None:
            done[0] += rows
            rep.update(done[0])

        # The same reduction as pretraining's own validation, so the figures agree with the run's.
        sums = masked_lm_sums(model, loader, device, precision, 1.0, on_batch=progress)
        rep.finish()
        seconds = time.perf_counter() - t0
        metrics = summarize(sums.tolist(), sbo_weight, n)

        stats = {
            "metrics": metrics,
            "seconds": seconds,
            "sequences_per_s": n / max(seconds, 1e-9),
            "device": str(device),
            "precision": precision,
            "masking_from": found_in,
        }
        with artifacts.ArtifactWriter(plan) as w:
            with naming_io_errors(w.dir / "metrics.json"):
                w.path("metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
            extra = {
                "model": {"source": pre.description, "step": pre.source.step},
                "runtime": {"batch_size": config.batch_size, "num_workers": config.num_workers},
            }
            with naming_io_errors(w.dir / artifacts.MANIFEST):
                artifact = w.finalize(stats, extra=extra)
        return MlmEvalResult(artifact, False, metrics)


__all__ = ["KIND", "MlmEvalConfig", "MlmEvalResult", "evaluate_mlm", "plan_evaluate_mlm"]
