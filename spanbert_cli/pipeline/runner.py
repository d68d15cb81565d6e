"""`spanbert run RECIPE`: the whole chain of stages as one reproducible command.

Every stage writes its artifact to `DIR/<stage>` (`DIR/pretrain-<variant>` etc. when a recipe compares
variants). Before running a stage, the runner computes the fingerprint the stage would produce — from
its parameters and its upstream artifacts' fingerprints — and skips it when `DIR/<stage>` already holds
that artifact. So re-running a finished recipe does nothing, changing a masking parameter re-runs only
pretraining and evaluation, and after a failure a re-run continues where it stopped (pretraining from
its last checkpoint). The processes of the stages that can run on several (`stages.plan_processes`) are
settled when the stages are built, before the first one runs.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spanbert_cli import artifacts, interrupts
from spanbert_cli.artifacts import locks
from spanbert_cli.errors import ArtifactError, OutputExistsError, SpanbertError, UsageError
from spanbert_cli.pipeline.recipe import Recipe, is_glob, local_inputs
from spanbert_cli.pipeline.stages import STAGES, StageInput, StageType, plan_processes
from spanbert_cli.progress import NullReporter, Reporter

UP_TO_DATE = "up to date"
RUN = "run"
RESUME = "resume"


@dataclass
class Stage:
    """One node of the pipeline: its artifact directory, its recipe section and config, its inputs."""

    name: str  # the directory under DIR, e.g. "pretrain-token"
    section: str  # tokenize, shard, pretrain, eval.squad or eval.mlm
    variant: str
    config: Any
    upstream: list[str]
    out: Path
    launch: Any = None  # the processes that run it (see StageInput); None: this process
    debug: bool = False

    @property
    def stage_type(self) -> StageType:
        return STAGES[self.section]

    @property
    def recipe_key(self) -> str:
        """Its key in `Recipe.sections` (pretrain/VARIANT, eval.squad, ...)."""
        return f"pretrain/{self.variant}" if self.section == "pretrain" else self.section

    def _given(self, ups: dict[str, artifacts.Artifact], recipe: Recipe) -> StageInput:
        ins = [ups[u] for u in self.upstream]
        kinds_in = tuple(a.manifest.kind for a in ins)
        if kinds_in != self.stage_type.upstream:  # the registry and the recipe's graph must agree
            raise ArtifactError(
                f"stage {self.name}: its inputs are {kinds_in}, expected {self.stage_type.upstream}"
            )
        return StageInput(self.config, self.out, ins, recipe, self.launch, self.debug)

    def plan(self, ups: dict[str, artifacts.Artifact], recipe: Recipe) -> artifacts.Plan:
        """The fingerprint this stage would produce from these upstream artifacts (no work done)."""
        return self.stage_type.plan(self._given(ups, recipe))

    def run(
        self, ups: dict[str, artifacts.Artifact], recipe: Recipe, resume: bool, rep: Reporter
    ) -> artifacts.Artifact:
        return self.stage_type.run(self._given(ups, recipe), resume, rep)


@dataclass
class StageStatus:
    stage: Stage
    state: str  # up to date / run / resume
    reason: str
    fingerprint: str | None = None


@dataclass
class PipelineResult:
    statuses: list[StageStatus]
    artifacts: dict[str, artifacts.Artifact] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)


class StageFailed(SpanbertError):
    """A stage failed; the message names it and keeps the stage's own exit code."""

    def __init__(self, stage: str, error: SpanbertError):
        super().__init__(f"stage {stage} failed: {error}; fix it and re-run (finished stages are kept)")
        self.exit_code = error.exit_code


# --------------------------------------------------------------------------------------------------
# the pipeline directory


def _file_in_the_way(out: Path) -> Path | None:
    """The file at `out` or above it, where creating the directory would fail; None when there is none."""
    for q in (out, *out.parents):
        if os.path.lexists(q):
            return None if q.is_dir() else q
    return None


def _overlap(out: Path, path: str) -> str | None:
    """How `out` overlaps the input `path` (is, lies inside, contains), after symlinks; None if apart."""
    o, i = Path(os.path.realpath(out)), Path(os.path.realpath(path))
    if o == i:
        return "is"
    if i in o.parents:
        return "lies inside"
    return "contains" if o in i.parents else None


def _glob_reaches(pattern: str, out: Path) -> bool:
    """Whether the corpus pattern could match files below `out` (what the stages write there), part by
    part: only a pattern that goes on below `out`, or a `**` on the way there, reaches into it."""
    pat, o = Path(os.path.abspath(pattern)).parts, Path(os.path.abspath(out)).parts
    for i, part in enumerate(pat):
        if part == "**" or i == len(o):
            return True
        if not fnmatch.fnmatchcase(o[i], part):
            return False
    return False


def check_out(recipe: Recipe, out: Path, flag: str = "--out") -> None:
    """Refuse, before anything is read or written, a pipeline directory that cannot be made (a file is in
    the way) or that is, contains or lies inside one of the recipe's inputs: its stages would write into
    their own inputs, and a re-run would read what they wrote (a directory corpus takes every .txt)."""
    blocking = _file_in_the_way(out)
    if blocking is not None:
        where = "is a file" if blocking == out else f"lies under the file {blocking}"
        raise OutputExistsError(f"{out}: {flag} {where}; choose a directory")
    for key, path in local_inputs(recipe):
        if is_glob(path):
            if _glob_reaches(path, out):
                raise UsageError(
                    f"{out}: {flag} lies where the input pattern {path} ({key}) finds files; choose a "
                    f"directory outside the recipe's inputs for {flag}"
                )
            continue
        how = _overlap(out, path)
        if how:
            raise UsageError(
                f"{out}: {flag} {how} the input {path} ({key}); choose a directory outside the recipe's "
                f"inputs for {flag}"
            )


# --------------------------------------------------------------------------------------------------
# the stages of a recipe


def build_stages(recipe: Recipe, out: Path, *, debug: bool = False) -> list[Stage]:
    """The recipe's stages in the order they run, each with the processes that will run it (a request
    they cannot have fails here, before anything runs); `debug`: launched ranks print tracebacks."""
    stages = _stages(recipe, out)
    for st in stages:
        processes = recipe.processes.get(st.recipe_key)
        st.config, st.launch = plan_processes(st.section, st.config, processes, st.name)
        st.debug = debug
    return stages


def _stages(recipe: Recipe, out: Path) -> list[Stage]:
    cfg = recipe.sections
    stages = [
        Stage("tokenize", "tokenize", "", cfg["tokenize"], [], out / "tokenize"),
        Stage("shard", "shard", "", cfg["shard"], ["tokenize"], out / "shard"),
    ]
    for variant in recipe.variants:
        key = f"pretrain/{variant}"
        if key not in cfg:
            continue
        suffix = f"-{variant}" if variant else ""
        run = f"pretrain{suffix}"
        stages.append(Stage(run, "pretrain", variant, cfg[key], ["shard"], out / run))
        if "eval.squad" in cfg:
            stages.append(
                Stage(
                    f"eval-squad{suffix}",
                    "eval.squad",
                    variant,
                    cfg["eval.squad"],
                    [run],
                    out / f"eval-squad{suffix}",
                )
            )
        if "eval.mlm" in cfg:
            stages.append(
                Stage(
                    f"eval-mlm{suffix}",
                    "eval.mlm",
                    variant,
                    cfg["eval.mlm"],
                    [run, "shard"],
                    out / f"eval-mlm{suffix}",
                )
            )
    return stages


# --------------------------------------------------------------------------------------------------
# status: what is up to date, what will run, and why


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): d}


def explain(plan: artifacts.Plan, existing: artifacts.Manifest) -> str:
    """Why an existing artifact is not this plan's: the parameters and inputs that changed."""
    old, new = _flatten(existing.params), _flatten(plan.params)
    changed = [
        f"{k} {old.get(k, '(unset)')!r} → {new.get(k, '(unset)')!r}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]
    old_in = {(i.role, i.name or i.kind): i.fingerprint or i.sha256 for i in existing.inputs}
    new_in = {(i.role, i.name or i.kind): i.fingerprint or i.sha256 for i in plan.inputs}
    inputs = [
        f"{r} {n}"
        for (r, n) in sorted(set(old_in) | set(new_in), key=str)
        if old_in.get((r, n)) != new_in.get((r, n))
    ]
    parts = []
    if changed:
        parts.append("parameters changed: " + ", ".join(changed[:6]) + (" …" if len(changed) > 6 else ""))
    if inputs:
        parts.append("inputs changed: " + ", ".join(inputs[:4]) + (" …" if len(inputs) > 4 else ""))
    return "; ".join(parts) or "the artifact differs"


def status_of(stage: Stage, ups: dict[str, artifacts.Artifact], recipe: Recipe) -> StageStatus:
    plan = stage.plan(ups, recipe)
    target = plan.out
    if not (target / artifacts.MANIFEST).is_file():
        return StageStatus(stage, RUN, "no artifact yet", plan.fingerprint)
    try:
        m = artifacts.read_manifest(target)
    except SpanbertError:
        return StageStatus(stage, RUN, "the artifact there is unreadable", plan.fingerprint)
    if m.fingerprint == plan.fingerprint:
        if m.stats.get("status", "complete") == "complete":
            return StageStatus(stage, UP_TO_DATE, "same fingerprint", plan.fingerprint)
        step = m.stats.get("step")
        return StageStatus(
            stage, RESUME, f"interrupted at step {step}; resumes from its last checkpoint", plan.fingerprint
        )
    return StageStatus(stage, RUN, explain(plan, m), plan.fingerprint)


def statuses(recipe: Recipe, out: Path, out_flag: str = "--out") -> list[StageStatus]:
    """Each stage's status; a stage below one that must run will run too (its inputs will change).
    `out_flag` is the option that chose `out`, for messages."""
    check_out(recipe, out, out_flag)
    stages = build_stages(recipe, out)
    result: list[StageStatus] = []
    pending: set[str] = set()
    ups: dict[str, artifacts.Artifact] = {}
    for st in stages:
        waiting = [u for u in st.upstream if u in pending]
        if waiting:
            result.append(StageStatus(st, RUN, f"after {', '.join(waiting)}"))
            pending.add(st.name)
            continue
        s = status_of(st, ups, recipe)
        result.append(s)
        if s.state == UP_TO_DATE:
            ups[st.name] = artifacts.open_artifact(out / st.name, st.stage_type.kind)
        else:
            pending.add(st.name)
    return result


# --------------------------------------------------------------------------------------------------
# running


def _check_not_a_rank() -> None:
    """Refuse to be one of several ranks of an outside launcher (torchrun, srun): each would run the
    whole pipeline into the same directory. The pipeline launches its stages' processes itself."""
    if not ({"RANK", "SLURM_PROCID"} & set(os.environ)):
        return  # the common case, without importing torch
    from spanbert_cli.training.distributed import from_environment

    info = from_environment()
    if info is not None and info.world_size > 1:
        raise UsageError(
            f"spanbert run is rank {info.rank} of {info.world_size} processes started by a launcher "
            "(torchrun, srun); run it as one process and give it --gpus N or --procs N: it starts the "
            "processes of pretraining and fine-tuning itself"
        )


@contextlib.contextmanager
def _recording(recipe: Recipe) -> Iterator[None]:
    with artifacts.annotate(
        {"recipe": {"path": str(recipe.path), "name": recipe.name, "content": recipe.resolved}}
    ):
        yield


def run_pipeline(
    recipe: Recipe,
    out: Path,
    *,
    reporter: Reporter | None = None,
    on_stage: Callable[[StageStatus], None] | None = None,
    out_flag: str = "--out",
    debug: bool = False,
) -> PipelineResult:
    """Run every stage that is not up to date, in order; stop at the first failure, naming the stage.
    `out_flag` is the option that chose `out`, for messages; `debug`: launched ranks print tracebacks."""
    check_out(recipe, out, out_flag)
    _check_not_a_rank()
    rep = reporter or NullReporter()
    stages = build_stages(recipe, out, debug=debug)
    result = PipelineResult([])
    ups: dict[str, artifacts.Artifact] = {}
    # One pipeline per directory at a time (each stage also locks its own artifact).
    with (
        locks.exclusive(out, what="pipeline directory"),
        _recording(recipe),
        artifacts.remembered_input_hashes(),
    ):
        out.mkdir(parents=True, exist_ok=True)
        for st in stages:
            try:
                s = status_of(st, ups, recipe)
                if on_stage:
                    on_stage(s)
                result.statuses.append(s)
                if s.state == UP_TO_DATE:
                    ups[st.name] = artifacts.open_artifact(out / st.name, st.stage_type.kind)
                    continue
                with interrupts.activity(f"running stage {st.name} of {recipe.path}"):
                    ups[st.name] = st.run(ups, recipe, s.state == RESUME, rep)
                result.ran.append(st.name)
            except SpanbertError as e:
                rep.finish()
                raise StageFailed(st.name, e) from e
    result.artifacts = ups
    return result
