"""The stages a recipe chains, in one registry, each behind the same two entry points.

    plan(given)                  -> Plan       the fingerprint and directory it would produce; no work
    run(given, resume, reporter) -> Artifact   produce it (or return the up-to-date one)

`given` is a `StageInput`: the stage's section of the recipe (its typed config), its directory, and its
upstream artifacts in the order the stage names them. The functions behind each entry are the stages'
own public API (`plan_tokenize`/`tokenize`, `plan_shard`/`shard`, ...), so a stage run by `spanbert run`
is the same code, and the same fingerprint, as the command that runs it alone. Heavy modules (torch) are
imported only when a stage of theirs is planned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spanbert_cli import artifacts, kinds
from spanbert_cli.pipeline.recipe import Recipe
from spanbert_cli.progress import Reporter


@dataclass(frozen=True)
class StageInput:
    """What one stage of a recipe is given."""

    config: Any  # the section's config: TokenizeConfig, ShardConfig, PretrainConfig, SquadConfig, ...
    out: Path
    upstream: list[artifacts.Artifact]  # in the order of StageType.upstream
    recipe: Recipe


@dataclass(frozen=True)
class StageType:
    """A kind of stage: its recipe section, the artifact kind it writes, the kinds it reads, its two entries."""

    section: str
    kind: str
    upstream: tuple[str, ...]  # the artifact kinds it reads
    plan: Callable[[StageInput], artifacts.Plan]
    run: Callable[[StageInput, bool, Reporter], artifacts.Artifact]  # (given, resume, reporter)


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
    from spanbert_cli.training import pretrain

    return pretrain(
        g.upstream[0].path, g.config, out=g.out, resume=resume, force=not resume, reporter=rep
    ).artifact


def _squad_data(g: StageInput) -> tuple[str | None, str | None]:
    return g.recipe.squad_data.get("train"), g.recipe.squad_data.get("dev")


def _plan_squad(g: StageInput) -> artifacts.Plan:
    from spanbert_cli.eval.squad.finetune import plan_finetune_squad

    return plan_finetune_squad(g.upstream[0].path, *_squad_data(g), g.config, out=g.out)


def _run_squad(g: StageInput, resume: bool, rep: Reporter) -> artifacts.Artifact:
    from spanbert_cli.eval.squad.finetune import finetune_squad

    return finetune_squad(
        g.upstream[0].path, *_squad_data(g), g.config, out=g.out, force=True, reporter=rep
    ).artifact


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
