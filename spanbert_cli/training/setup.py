"""`spanbert pretrain`'s setup: everything resolved and checked before the first tensor is allocated.

The shards (opened, their vocabulary checked against the tokenizer), the device and precision, the
architecture (a preset, a JSON file or `--init-from` weights), the plan of the run directory, and what to
do with what is there (`_decide`: start, resume from a checkpoint, or return the run that is up to date).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from spanbert_cli import artifacts, kinds
from spanbert_cli.artifacts import locks
from spanbert_cli.errors import ArtifactError, DataError, OutputExistsError, UsageError
from spanbert_cli.masking import VocabInfo
from spanbert_cli.model.config import NUMERICS_VERSION
from spanbert_cli.model.spanbert import ModelConfig
from spanbert_cli.progress import NullReporter, Reporter
from spanbert_cli.training import data as D
from spanbert_cli.training.checkpoint import (
    Checkpoint,
    is_checkpoint_dir,
    latest_checkpoint,
    load_config,
    load_training_state,
    read_meta,
    verify_checkpoint,
)
from spanbert_cli.training.config import DEFAULT_PRESET, PretrainConfig, differing_keys
from spanbert_cli.training.context import DistributedContext
from spanbert_cli.training.device import resolve_device, resolve_precision
from spanbert_cli.training.run import EXPORT_DIR, KIND
from spanbert_cli.training.validation import verify_shards

SHARDS_KIND = kinds.SHARDS


@dataclass
class Setup:
    config: PretrainConfig
    shards: artifacts.Artifact
    train: Any  # ShardReader
    valid: Any
    vocab: VocabInfo
    model_config: ModelConfig
    init: Any  # export.WeightsSource | None
    device: torch.device
    precision: str
    plan: artifacts.Plan
    extra: dict[str, Any]
    resume_from: Checkpoint | None
    fresh: bool  # start a new run in plan.out (wiping what --force allowed to replace)
    ctx: DistributedContext
    reporter: Reporter
    lock: contextlib.ExitStack  # the run directory's lock (main process), released when `main` ends


@dataclass
class PretrainResult:
    artifact: artifacts.Artifact
    cached: bool
    step: int
    start_step: int = 0
    export_dir: Path | None = None
    train: dict[str, Any] = field(default_factory=dict)  # the last logged training metrics
    valid: dict[str, Any] = field(default_factory=dict)  # the last evaluation
    seconds: float = 0.0  # wall time of this invocation
    tokens: int = 0  # tokens trained on in this invocation, all processes together
    device: str = ""
    precision: str = ""
    world_size: int = 1  # training processes


@dataclass
class _Prepared:
    """A run resolved up to its plan: what `setup` goes on from, and all a plan needs."""

    config: PretrainConfig
    shards: artifacts.Artifact
    train: Any  # ShardReader
    valid: Any
    vocab: VocabInfo
    model_config: ModelConfig
    init: Any
    source: dict[str, Any]
    device: torch.device
    precision: str
    plan: artifacts.Plan
    resume: bool
    checkpoint: Path | None  # --resume-from
    ctx: DistributedContext
    reporter: Reporter


def _prepare(
    shards: str | os.PathLike | None,
    config: PretrainConfig,
    *,
    out: str | os.PathLike | None,
    workspace: str | os.PathLike | None,
    resume: bool,
    resume_from: str | os.PathLike | None,
    reporter: Reporter | None,
    ctx: DistributedContext | None,
) -> _Prepared:
    from spanbert_cli.shards.reader import ShardReader

    if ctx is not None and ctx.world_size != config.world_size:
        config = dataclasses.replace(config, world_size=ctx.world_size)  # the batch is global
    config.validate()
    # Only the main process reports (and writes, below).
    rep = (reporter or NullReporter()) if ctx is None or ctx.is_main else NullReporter()
    # Sizes are checked on opening; the full content hash waits until training will really start, so a
    # plan, a dry run or an up-to-date run never re-reads gigabytes of shards.
    shard_art = _open_shards(shards, workspace, rep)
    train, valid = ShardReader(shard_art, "train"), ShardReader(shard_art, "valid")
    vocab = _vocab(shard_art, train)

    # A multi-process launcher hands over its context, which knows this process's device.
    device = torch.device(ctx.device) if ctx is not None else resolve_device(config.device)
    ctx = ctx or DistributedContext(device=str(device))
    precision = resolve_precision(config.precision, device)
    model_config, init, source = _model_config(config, train, vocab)
    if model_config.max_position_embeddings < train.max_seq_len:
        raise DataError(
            f"the shards hold sequences of up to {train.max_seq_len} tokens but the model has only "
            f"{model_config.max_position_embeddings} positions; re-shard with --max-seq-len "
            f"{model_config.max_position_embeddings} or use a larger max_position_embeddings"
        )

    params = {
        **config.fingerprint_params(),
        "precision": precision,
        "model": model_config.to_dict(),
        "data_order": D.DATA_ORDER_VERSION,
        "numerics": NUMERICS_VERSION,
        # BERT vocabularies' [unusedN] are never drawn as replacements: their masks differ from before
        **({"unused_excluded": True} if vocab.unused_ids else {}),
    }
    inputs = [artifacts.InputRef.from_artifact(shard_art)]
    if init is not None:
        from spanbert_cli.model.weights import weights_file

        wf = weights_file(init)
        inputs.append(artifacts.InputRef.from_file(wf, name=f"init/{wf.name}", role="init"))
    shards_name = re.sub(r"-[0-9a-f]{12}$", "", shard_art.path.resolve().name) or "shards"
    model_name = "init" if init else "custom" if config.model_config else config.model or DEFAULT_PRESET
    name = f"{shards_name}-{model_name}"  # the default run directory is workspace/run/NAME-FINGERPRINT

    ckpt_given = None
    if resume_from is not None:
        ckpt_given = Path(resume_from)
        if not is_checkpoint_dir(ckpt_given):
            raise UsageError(f"--resume-from {ckpt_given}: not a checkpoint directory (no checkpoint.json)")
        if out is None and (ckpt_given.parent.parent / artifacts.MANIFEST).is_file():
            out = ckpt_given.parent.parent
        resume = True
    plan = artifacts.plan(KIND, params, inputs, out=out, name=name, workspace=workspace)
    if resume and out is None and not (plan.out / artifacts.MANIFEST).is_file():
        # Parameters changed since the run started, so its default directory is another one: take the
        # newest run in the workspace (the parameter check below names what changed).
        newest = artifacts.find_latest(KIND, workspace, complete_only=False)
        latest = newest.path if newest is not None else None
        if latest is not None:
            rep.log(f"resuming the newest run in the workspace: {latest}")
            plan = artifacts.plan(KIND, params, inputs, out=latest, name=name, workspace=workspace)

    return _Prepared(
        config, shard_art, train, valid, vocab, model_config, init, source, device, precision, plan,
        resume, ckpt_given, ctx, rep,
    )  # fmt: skip


def plan_pretrain(
    shards: str | os.PathLike | None,
    config: PretrainConfig,
    *,
    out: str | os.PathLike | None = None,
    workspace: str | os.PathLike | None = None,
    resume: bool = False,
    resume_from: str | os.PathLike | None = None,
    reporter: Reporter | None = None,
) -> artifacts.Plan:
    """The fingerprint and directory this run would have, without training (shard sizes checked only)."""
    return _prepare(
        shards, config, out=out, workspace=workspace, resume=resume, resume_from=resume_from,
        reporter=reporter, ctx=None,
    ).plan  # fmt: skip


def setup(
    shards: str | os.PathLike | None,
    config: PretrainConfig,
    *,
    out: str | os.PathLike | None = None,
    workspace: str | os.PathLike | None = None,
    resume: bool = False,
    resume_from: str | os.PathLike | None = None,
    force: bool = False,
    reporter: Reporter | None = None,
    ctx: DistributedContext | None = None,
) -> Setup | PretrainResult:
    """Resolve and check everything, take the run directory's lock and decide: a `Setup` to train from,
    or the up-to-date run as a `PretrainResult`."""
    p = _prepare(
        shards, config, out=out, workspace=workspace, resume=resume, resume_from=resume_from,
        reporter=reporter, ctx=ctx,
    )  # fmt: skip
    config, shard_art, train, valid, vocab = p.config, p.shards, p.train, p.valid, p.vocab
    model_config, init, source, device, precision = p.model_config, p.init, p.source, p.device, p.precision
    plan, resume, ckpt_given, ctx, rep = p.plan, p.resume, p.checkpoint, p.ctx, p.reporter
    extra = {
        "tokenizer": shard_art.manifest.extra.get("tokenizer"),
        "max_seq_len": train.max_seq_len,
        "sequences": {"train": len(train), "valid": len(valid)},
        "model_source": source,
        "runtime": config.runtime_params(),
        "device": str(device),
    }
    lock = contextlib.ExitStack()
    if ctx.is_main:  # one writer per run directory, taken before anything is decided about it
        lock.enter_context(locks.exclusive(plan.out, what="run"))
    try:
        decision = _decide(plan, resume=resume, force=force, checkpoint=ckpt_given, rep=rep)
        if not isinstance(decision, artifacts.Artifact):
            if ctx.local_rank == 0:  # one process per node checks (an error there ends the job)
                verify_shards(shard_art, rep, (train, valid))
            if decision[1] is not None:
                _check_resumable(decision[1], plan, force)
    except BaseException:
        lock.close()
        raise
    if isinstance(decision, artifacts.Artifact):
        lock.close()
        st = decision.manifest.stats
        return PretrainResult(
            decision,
            cached=True,
            step=int(st.get("step", 0)),
            start_step=int(st.get("step", 0)),
            export_dir=decision.path / EXPORT_DIR,
            train=st.get("train", {}),
            valid=st.get("valid", {}),
            device=str(device),
            precision=precision,
            world_size=ctx.world_size,
        )
    fresh, ckpt = decision
    return Setup(
        config,
        shard_art,
        train,
        valid,
        vocab,
        model_config,
        init,
        device,
        precision,
        plan,
        extra,
        ckpt,
        fresh,
        ctx,
        rep,
        lock,
    )


def _open_shards(shards: str | os.PathLike | None, workspace: Any, rep: Reporter) -> artifacts.Artifact:
    if shards is None:
        latest = artifacts.find_latest(SHARDS_KIND, workspace)
        if latest is None:
            root = artifacts.workspace_root(workspace) / artifacts.kind_dir(SHARDS_KIND)
            raise UsageError(f"no shard artifact named and none in {root}; run `spanbert shard` first")
        rep.log(f"using the newest shard artifact: {latest.path}")
        art = latest
    else:
        art = artifacts.open_artifact(shards, SHARDS_KIND)
    return art


def _vocab(shard_art: artifacts.Artifact, train: Any) -> VocabInfo:
    tok = train.tokenizer
    vocab = VocabInfo.from_tokenizer(tok)
    if vocab.vocab_size != train.vocab_size:
        raise ArtifactError(
            f"{shard_art.path}: tokenizer.json has {vocab.vocab_size} entries but the shards were made with a "
            f"vocabulary of {train.vocab_size}; re-create the artifact"
        )
    for name, tid in (
        ("cls", vocab.cls_id),
        ("sep", vocab.sep_id),
        ("pad", vocab.pad_id),
        ("mask", vocab.mask_id),
    ):
        recorded = train.special_ids.get(name)
        if recorded is not None and recorded != tid:
            raise ArtifactError(
                f"{shard_art.path}: tokenizer.json has [{name.upper()}] = {tid} but the shards use {recorded}; "
                "re-create the artifact"
            )
    return vocab


def _model_config(
    config: PretrainConfig, train: Any, vocab: VocabInfo
) -> tuple[ModelConfig, Any, dict[str, Any]]:
    """The architecture: from --init-from, --model-config or a preset; the vocabulary always the shards'."""
    v = train.vocab_size
    if config.init_from is not None:
        from spanbert_cli.model.weights import resolve_source, tokenizer_vocab

        init = resolve_source(config.init_from)
        cfg = load_config(init.path)
        if cfg.vocab_size != v:
            raise DataError(
                f"--init-from {config.init_from}: the model has a vocabulary of {cfg.vocab_size} but the shards' "
                f"has {v}; tokenize the corpus with that model's vocab.txt (tokenize --tokenizer)"
            )
        theirs = tokenizer_vocab(init.path)
        if theirs is not None:
            ours = train.tokenizer.get_vocab(with_added_tokens=True)
            if theirs != ours:
                differ = sum(1 for t, i in ours.items() if theirs.get(t) != i)
                raise DataError(
                    f"--init-from {config.init_from}: its tokenizer differs from the shards' ({differ} of {v} "
                    "token ids differ); tokenize the corpus with that model's vocab.txt (tokenize --tokenizer)"
                )
        if cfg.pad_token_id != vocab.pad_id:
            cfg = ModelConfig.from_dict({**cfg.to_dict(), "pad_token_id": vocab.pad_id})
        return cfg, init, {"init_from": str(config.init_from), "kind": init.kind, "step": init.step}
    if config.model_config is not None:
        path = Path(config.model_config)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raw = {}  # from_json_file reports it in its own words
        if isinstance(raw, dict):
            given = raw.get("vocab_size")
            if given is not None and given != v:
                raise DataError(
                    f"model config {path} has vocab_size {given} but the shards' vocabulary has {v} tokens; "
                    "drop vocab_size from the file (it is taken from the shards) or use matching shards"
                )
        cfg = ModelConfig.from_json_file(path, vocab_size=v, pad_token_id=vocab.pad_id)
        return cfg, None, {"model_config": str(path)}
    preset = config.model or DEFAULT_PRESET
    return ModelConfig.from_preset(preset, v, pad_token_id=vocab.pad_id), None, {"preset": preset}


def _decide(
    plan: artifacts.Plan, *, resume: bool, force: bool, checkpoint: Path | None, rep: Reporter
) -> artifacts.Artifact | tuple[bool, Checkpoint | None]:
    """What to do with plan.out: (start fresh?, checkpoint to resume from), or the up-to-date run."""
    run = plan.out
    if checkpoint is None:
        artifacts.refuse_foreign(run)  # a directory spanbert did not write is never replaced
    manifest = artifacts.read_manifest(run) if (run / artifacts.MANIFEST).is_file() else None
    if manifest is not None and manifest.kind != KIND:
        if not force:
            raise OutputExistsError(
                f"{run}: holds a {manifest.kind} artifact; use --force to replace it or choose another --out"
            )
        return True, None
    if (
        manifest is not None
        and manifest.fingerprint == plan.fingerprint
        and manifest.stats.get("status") == "complete"
        and not (force and not resume)
        and checkpoint is None
    ):
        try:
            return artifacts.open_artifact(run, KIND)
        except ArtifactError:
            if not force:
                raise
    if resume:
        ckpt = (
            Checkpoint(checkpoint, _step_of(checkpoint)) if checkpoint is not None else latest_checkpoint(run)
        )
        if ckpt is None:
            rep.log(f"{run}: no checkpoint to resume from; starting at step 0")
            return True, None
        return False, ckpt
    if manifest is None:
        return True, None
    last = latest_checkpoint(run)
    if force or (last is None and manifest.fingerprint == plan.fingerprint):
        return True, None
    if last is None and manifest.stats.get("status") != "complete":
        # A run that ended before its first checkpoint (its writer is gone: we hold the lock): nothing of
        # it can be resumed, so it is replaced like an empty directory.
        return True, None
    if last is not None:
        raise OutputExistsError(
            f"{run}: holds a run with checkpoints up to step {last.step}; pass --resume to continue it, or "
            "--force to start over"
        )
    raise OutputExistsError(
        f"{run}: holds a different run ({manifest.short}); use --force to replace it or choose another --out"
    )


def _step_of(path: Path) -> int:
    return int(read_meta(path)["step"])


def _check_resumable(ckpt: Checkpoint, plan: artifacts.Plan, force: bool) -> None:
    """The checkpoint is intact, and was made with the same parameters and inputs (or --force)."""
    verify_checkpoint(ckpt.path)
    state = load_training_state(ckpt.path)
    old = {**json.loads(state["params"]), "inputs": json.loads(state["inputs"])}
    new = {**plan.params, "inputs": [ref.identity() for ref in plan.inputs]}
    diffs = [
        "inputs (the shards or the --init-from weights)" if d == "inputs" else d
        for d in differing_keys(old, new)
    ]
    if diffs and not force:
        shown = ", ".join(diffs[:8]) + (" …" if len(diffs) > 8 else "")
        raise UsageError(
            f"{ckpt.path}: was trained with different parameters ({shown}); resume with the original "
            "settings, or pass --force to continue with the new ones"
        )
