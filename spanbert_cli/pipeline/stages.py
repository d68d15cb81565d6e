"""The stages a recipe chains, in one registry, each behind the same two entry points.

    plan(given)                  -> Plan       the fingerprint and directory it would produce; no work
    run(given, resume, reporter) -> Artifact   produce it (or return the up-to-date one)

`given` is a `StageInput`: the stage's section of the recipe (its typed config), its directory, its
upstream artifacts in the order the stage names them, and the processes that run it. The functions behind
each entry are the stages' own public API (`plan_tokenize`/`tokenize`, `plan_shard`/`shard`, ...), so a
stage run by `spanbert run` is the same code, and the same fingerprint, as the command that runs it alone.
Heavy modules (torch) are imported only when a stage of theirs is planned.

Pretraining and SQuAD fine-tuning can run on several processes (`gpus` / `procs`, see
`recipe.Processes`): `plan_processes` turns the request into the launcher's plan before any stage runs,
and their `run` then starts the processes as `spanbert pretrain --procs N` does (`training.launcher`),
rank 0 writing the artifact. Their batch is global, so the number of processes is no parameter.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spanbert_cli import artifacts, kinds
from spanbert_cli.errors import UsageError
from spanbert_cli.pipeline.recipe import LAUNCH_SECTIONS, Processes, Recipe
from spanbert_cli.progress import Reporter


@dataclass(frozen=True)
class StageInput:
    """What one stage of a recipe is given."""

    config: Any  # the section's config: TokenizeConfig, ShardConfig, PretrainConfig, SquadConfig, ...
    out: Path
    upstream: list[artifacts.Artifact]  # in the order of StageType.upstream
    recipe: Recipe
    # The processes to launch (a training.distributed.LaunchPlan; `config` has their world size), or None
    # for this process alone; `debug`: the launched ranks print their tracebacks.
    launch: Any = None
    debug: bool = False


@dataclass(frozen=True)
class StageType:
    """A kind of stage: its recipe section, the artifact kind it writes, the kinds it reads, its two entries."""

    section: str
    kind: str
    upstream: tuple[str, ...]  # the artifact kinds it reads
    plan: Callable[[StageInput], artifacts.Plan]
    run: Callable[[StageInput, bool, Reporter], artifacts.Artifact]  # (given, resume, reporter)


def plan_processes(
    section: str, config: Any, processes: Processes | None, stage: str | None = None
) -> tuple[Any, Any]:
    """(config, launch plan) of a stage of `section` run on `processes`: the config with their world size
    (the batch is global, and the default micro-batch, which is fingerprinted, is a share of it) and the
    launcher's plan; (config, None) for this process alone. Meant to be called before any stage runs:
    one UsageError naming the stage (`stage`, default `section`) and where the processes were asked for,
    e.g. for GPUs that are not there or a batch that does not split over the processes."""
    if processes is None or not processes.requested or section not in LAUNCH_SECTIONS:
        return config, None
    from spanbert_cli.training import distributed

    stage = stage or section
    n = processes.gpus if processes.gpus is not None else processes.procs
    try:
        plan = distributed.plan_launch(gpus=processes.gpus, procs=processes.procs, device=config.device)
    except UsageError as e:
        if not processes.where:
            raise UsageError(f"{stage}: {e}") from None
        flag = f"--{'gpus' if processes.gpus is not None else 'procs'} {n}"
        # Named as the recipe names it, not as the launcher's flag.
        raise UsageError(f"{processes.named()}: {str(e).removeprefix(f'{flag}: ')}") from None
    assert plan is not None  # processes were asked for
    resolved = dataclasses.replace(config, world_size=plan.world_size)
    try:
        resolved.validate()
    except UsageError as e:
        raise UsageError(f"{stage} on {n} processes ({processes.named()}): {e}") from None
    return resolved, plan


def _launch(g: StageInput, rep: Reporter, worker: Callable[..., Any], *args: Any) -> artifacts.Artifact:
    """Run ``worker(ctx, annotations, reporter, *args)`` on the processes of `g.launch`; rank 0's artifact.
    The annotations (the recipe the manifest records) and the reporter travel to the spawned ranks."""
    from spanbert_cli.training import launcher

    rep.finish()  # rank 0 draws the progress from here on
    results = launcher.launch(
        g.launch, worker, artifacts.current_annotations(), _portable(rep), *args, debug=g.debug
    )
    return results[0]


def _portable(rep: Reporter) -> Reporter | None:
    """`rep` when it can be pickled to a spawned process; else None, and rank 0 reports nothing (progress
    is no part of the result)."""
    try:
        pickle.dumps(rep)
    except (pickle.PicklingError, TypeError, AttributeError):
        return None
    return rep


# The pipeline owns its directory: a stale artifact of a stage is replaced (force), and an interrupted
# pretraining resumes from its last checkpoint instead.


def _plan_tokenize(g: StageInput) -> artifacts.Plan:
    from spanbert_cli.text.tokenize import plan_tokenize

    return plan_tokenize(g.recipe.corpus, g.config, out=g.out)


def _run_tokenize(g: StageInput, resume: bool, rep: Reporter) -> artifacts.Artifact:
    from spanbert_cli.text.tokenize import tokenize

    return tokenize(g.recipe.corpus, g.config, out=g.out, force=True, reporter=rep).artifact


def _plan_shard(g: StageInput) -> artifacts.Plan:
    from spanbert_cli.shards.pack import plan_shard

    return plan_shard([g.upstream[0].path], g.config, out=g.out)


def _run_shard(g: StageInput, resume: bool, rep: Reporter) -> artifacts.Artifact:
    from spanbert_cli.shards.pack import shard

    return shard([g.upstream[0].path], g.config, out=g.out, force=True, reporter=rep).artifact


def _plan_pretrain(g: StageInput) -> artifacts.Plan:
    from spanbert_cli.training.setup import plan_pretrain

    return plan_pretrain(g.upstream[0].path, g.config, out=g.out)


def _run_pretrain(g: StageInput, resume: bool, rep: Reporter) -> artifacts.Artifact:
    if g.launch is not None:
        return _launch(g, rep, _pretrain_rank, g.upstream[0].path, g.config, g.out, resume)
    from spanbert_cli.training import pretrain

    return pretrain(
        g.upstream[0].path, g.config, out=g.out, resume=resume, force=not resume, reporter=rep
    ).artifact


def _pretrain_rank(
    ctx: Any,
    annotations: dict[str, Any],
    rep: Reporter | None,
    shards: Path,
    config: Any,
    out: Path,
    resume: bool,
) -> artifacts.Artifact | None:
    """What each process of a launched pretraining stage runs (module level: spawned processes import it)."""
    from spanbert_cli.training import pretrain

    with artifacts.annotate(annotations):
        result = pretrain(
            shards,
            config,
            out=out,
            resume=resume,
            force=not resume,
            reporter=rep if ctx.is_main else None,
            ctx=ctx,
        )
    return result.artifact if ctx.is_main else None


def _squad_data(g: StageInput) -> tuple[str | None, str | None]:
    return g.recipe.squad_data.get("train"), g.recipe.squad_data.get("dev")


def _plan_squad(g: StageInput) -> artifacts.Plan:
    from spanbert_cli.eval.squad.finetune import plan_finetune_squad

    return plan_finetune_squad(g.upstream[0].path, *_squad_data(g), g.config, out=g.out)


def _run_squad(g: StageInput, resume: bool, rep: Reporter) -> artifacts.Artifact:
    if g.launch is not None:
        return _launch(g, rep, _squad_rank, g.upstream[0].path, *_squad_data(g), g.config, g.out)
    from spanbert_cli.eval.squad.finetune import finetune_squad

    return finetune_squad(
        g.upstream[0].path, *_squad_data(g), g.config, out=g.out, force=True, reporter=rep
    ).artifact


def _squad_rank(
    ctx: Any,
    annotations: dict[str, Any],
    rep: Reporter | None,
    run: Path,
    train: str | None,
    dev: str | None,
    config: Any,
    out: Path,
) -> artifacts.Artifact | None:
    """What each process of a launched fine-tuning stage runs (module level: spawned processes import it)."""
    from spanbert_cli.eval.squad.finetune import finetune_squad

    with artifacts.annotate(annotations):
        result = finetune_squad(
            run, train, dev, config, out=out, force=True, reporter=rep if ctx.is_main else None, ctx=ctx
        )
    return result.artifact if ctx.is_main else None


def _plan_mlm(g: StageInput) -> artifacts.Plan:
    from spanbert_cli.eval.mlm import plan_evaluate_mlm

    return plan_evaluate_mlm(g.upstream[0].path, g.upstream[1].path, g.config, out=g.out)


def _run_mlm(g: StageInput, resume: bool, rep: Reporter) -> artifacts.Artifact:
    from spanbert_cli.eval.mlm import evaluate_mlm

    return evaluate_mlm(
        g.upstream[0].path, g.upstream[1].path, g.config, out=g.out, force=True, reporter=rep
    ).artifact


STAGES: dict[str, StageType] = {
    t.section: t
    for t in (
        StageType("tokenize", kinds.TOKENIZED, (), _plan_tokenize, _run_tokenize),
        StageType("shard", kinds.SHARDS, (kinds.TOKENIZED,), _plan_shard, _run_shard),
        StageType("pretrain", kinds.RUN, (kinds.SHARDS,), _plan_pretrain, _run_pretrain),
        StageType("eval.squad", kinds.EVAL_SQUAD, (kinds.RUN,), _plan_squad, _run_squad),
        StageType("eval.mlm", kinds.EVAL_MLM, (kinds.RUN, kinds.SHARDS), _plan_mlm, _run_mlm),
    )
}
