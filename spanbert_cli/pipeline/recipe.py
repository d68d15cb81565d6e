"""Recipes: a TOML file naming the corpus and each stage's parameters, checked before anything runs.

    [recipe]
    name = "quickstart"
    corpus = ["spanbert:sample"]          # paths (relative to the working directory) or spanbert:<bundled data>

    [tokenize]                             # fields of TokenizeConfig
    vocab_size = 8000
    [shard]                                # fields of ShardConfig
    max_seq_len = 128
    [pretrain]                             # fields of PretrainConfig, shared by every variant
    model = "tiny"
    [pretrain.variants.token]              # optional: one run per variant, overriding the shared fields
    scheme = "token"
    [eval.squad]                           # fields of SquadConfig: fine-tune and score each run
    [eval.mlm]                             # fields of MlmEvalConfig: held-out MLM/SBO loss of each run

Each section maps one-to-one onto the stage's config dataclass, except for the keys that say how many
processes run a stage that can run on several (`gpus` or `procs` in [pretrain], a variant or
[eval.squad]: `spanbert run`'s `--gpus N` / `--procs N`, which win over them): they are the stage's
launch, not its parameters, and no fingerprint depends on them. An unknown section or key and a value of
the wrong type are reported together, each by its dotted name, before any stage starts; so are names
that could not be one directory name and paths that name nothing (a missing file, a glob matching none).
"""

from __future__ import annotations

import copy
import dataclasses
import glob
import os
import re
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spanbert_cli.errors import DataError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PACKAGE_PREFIX = "spanbert:"


def package_data(name: str) -> Path:
    """`spanbert:sample` → the bundled sample corpus; `spanbert:squad/dev.json` → bundled SQuAD data."""
    from spanbert_cli.data import SAMPLE_CORPUS

    root = SAMPLE_CORPUS.parent
    return SAMPLE_CORPUS if name == "sample" else root / name


def resolve_path(value: str) -> str:
    """Expand `spanbert:NAME` (bundled data) and `~`; other paths stay as written (relative to the
    working directory, as on the command line) and names like `rajpurkar/squad` stay names."""
    if value.startswith(PACKAGE_PREFIX):
        return str(package_data(value[len(PACKAGE_PREFIX) :]))
    return str(Path(value).expanduser()) if value.startswith("~") else value


#: The recipe sections whose stage can run on several processes, and the keys that say how many: those of
#: `spanbert run --gpus N` / `--procs N` (declared there, in spanbert_cli.cli.pretrain), not fields of the
#: stage's config, since the number of processes changes how a stage runs, not what it computes.
LAUNCH_SECTIONS = ("pretrain", "eval.squad")
LAUNCH_KEYS = ("gpus", "procs")


@dataclass(frozen=True)
class Processes:
    """How many processes run a stage: `gpus` (one per GPU of this node) or `procs` (on the stage's
    device); neither: this process alone, without a process group."""

    gpus: int | None = None
    procs: int | None = None
    where: str = ""  # the recipe section that asked for them ("pretrain.variants.x"); "" for the command line

    @property
    def requested(self) -> bool:
        return self.gpus is not None or self.procs is not None

    def named(self) -> str:
        """How they were asked for, for messages: `--procs 2` or `pretrain.procs = 2`."""
        key, n = ("gpus", self.gpus) if self.gpus is not None else ("procs", self.procs)
        return f"{self.where}.{key} = {n}" if self.where else f"--{key} {n}"


@dataclass
class Recipe:
    """A loaded, overridden and type-checked recipe."""

    path: Path
    name: str
    corpus: list[str]
    sections: dict[str, Any]  # stage name → config instance (pretrain/eval: per variant, see below)
    variants: dict[str, dict[str, Any]]  # variant name → pretrain overrides ({"": {}} when none)
    squad_data: dict[str, str | None] = field(default_factory=dict)  # eval.squad's train and dev files
    resolved: dict[str, Any] = field(default_factory=dict)  # the recipe's content after --set
    # The processes of each stage that can run on several, by its key in `sections` (pretrain/VARIANT,
    # eval.squad).
    processes: dict[str, Processes] = field(default_factory=dict)

    @property
    def has_variants(self) -> bool:
        return list(self.variants) != [""]


def stage_types() -> dict[str, type]:
    """The config dataclass of each recipe section (imported lazily: torch comes with pretrain)."""
    from spanbert_cli.eval.mlm import MlmEvalConfig
    from spanbert_cli.eval.squad.finetune import SquadConfig
    from spanbert_cli.shards.pack import ShardConfig
    from spanbert_cli.text.tokenize import TokenizeConfig
    from spanbert_cli.training.config import PretrainConfig

    return {
        "tokenize": TokenizeConfig,
        "shard": ShardConfig,
        "pretrain": PretrainConfig,
        "eval.squad": SquadConfig,
        "eval.mlm": MlmEvalConfig,
    }


# Keys of a section that name files or directories: resolved like the corpus (`spanbert:NAME`, `~`, else
# relative to the working directory) and checked before any stage runs (see `path_problem`).
PATH_KEYS = {
    "tokenize": {"tokenizer"},
    "pretrain": {"model_config", "init_from"},
    "eval.squad": {"train", "dev"},
}


# A recipe's name and its variants' names each become one directory (WORKSPACE/pipelines/NAME,
# DIR/pretrain-NAME) that the pipeline writes and replaces: a separator or `..` would put it elsewhere.
_PLAIN_NAME = re.compile(r"\w[\w.-]{0,99}")
PLAIN_NAME_RULE = (
    "use letters, digits, '_', '-' and '.', not starting with '-' or '.', at most 100 characters"
)


def name_problem(key: str, name: str, directory: str, note: str = "") -> str | None:
    """Why `name` cannot be the single directory name it becomes in `directory` (None when it can)."""
    if _PLAIN_NAME.fullmatch(name):
        return None
    return f"{key}: {name!r} cannot name the directory {directory}{note}: {PLAIN_NAME_RULE}"


_MISSING = "no such file or directory"


def is_glob(path: str) -> bool:
    """Whether a corpus entry is a pattern: as in corpus.resolve_inputs, an existing path never is."""
    return glob.has_magic(path) and not os.path.lexists(path)


def _corpus_problem(value: str) -> str | None:
    # The rules of corpus.resolve_inputs: a directory, a file, a glob matching a file, or - (stdin).
    path = resolve_path(value)
    if value == "-" or Path(path).is_dir() or Path(path).is_file():
        return None
    if is_glob(path):
        # The first match answers: a glob over a large corpus is not listed twice.
        if any(Path(m).is_file() for m in glob.iglob(path, recursive=True)):
            return None
        return "the pattern matches no file"
    return _MISSING


def _tokenizer_problem(value: str) -> str | None:
    p = Path(resolve_path(value))
    if p.is_file():
        return None
    if p.is_dir():
        has = any((p / n).is_file() for n in ("tokenizer.json", "vocab.txt"))
        return None if has else "no tokenizer.json or vocab.txt in this directory"
    return _MISSING


def _file_problem(value: str) -> str | None:
    p = Path(resolve_path(value))
    if p.is_file():
        return None
    return "is a directory (name a JSON file)" if p.is_dir() else _MISSING


def _directory_problem(value: str) -> str | None:
    p = Path(resolve_path(value))
    if p.is_dir():
        return None
    return "not a directory (name a run, a checkpoint or an exported model)" if p.exists() else _MISSING


def _squad_problem(value: str) -> str | None:
    from spanbert_cli.eval.squad.data import looks_like_hub_name

    path = resolve_path(value)
    # A data set name (`rajpurkar/squad`) is the stage's to load: whether the hub answers is its question.
    if looks_like_hub_name(path) or Path(path).is_file():
        return None
    if Path(path).is_dir():
        return "is a directory (name a SQuAD JSON file)"
    return f"{_MISSING} (name a SQuAD JSON file, or a datasets name such as rajpurkar/squad)"


# What each path key must name, by the last part of its dotted name.
_PATH_CHECKS = {
    "corpus": _corpus_problem,
    "tokenizer": _tokenizer_problem,
    "model_config": _file_problem,
    "init_from": _directory_problem,
    "train": _squad_problem,
    "dev": _squad_problem,
}


def path_problem(key: str, value: str) -> str | None:
    """Why the path `value` of the dotted `key` names nothing the stage can read (None when it does)."""
    reason = _PATH_CHECKS[key.rsplit(".", 1)[-1]](value)
    return None if reason is None else f"{key}: {value}: {reason}"


def named_paths(recipe: Recipe) -> list[tuple[str, str]]:
    """(dotted key, path) of every path the recipe names, in recipe order; a variant's path is named by the
    key it was written under (its own, or the shared [pretrain] one)."""
    named = [("recipe.corpus", c) for c in recipe.corpus]
    tokenizer = getattr(recipe.sections.get("tokenize"), "tokenizer", None)
    if isinstance(tokenizer, str):
        named.append(("tokenize.tokenizer", tokenizer))
    for v, overrides in recipe.variants.items():
        cfg = recipe.sections.get(f"pretrain/{v}")
        for key in sorted(PATH_KEYS["pretrain"]):
            value = getattr(cfg, key, None)
            if isinstance(value, str):
                named.append(
                    (f"pretrain.variants.{v}.{key}" if key in overrides else f"pretrain.{key}", value)
                )
    named += [(f"eval.squad.{k}", v) for k, v in recipe.squad_data.items() if isinstance(v, str)]
    return list(dict.fromkeys(named))  # variants sharing one path: named once


def input_problems(recipe: Recipe) -> list[str]:
    """Every path of the recipe that names nothing a stage can read, each by its dotted key."""
    return [m for key, value in named_paths(recipe) if (m := path_problem(key, value))]


def local_inputs(recipe: Recipe) -> list[tuple[str, str]]:
    """(dotted key, path) of the files, directories and corpus patterns (see `is_glob`) the recipe reads;
    stdin and data set names, which are not paths, left out."""
    from spanbert_cli.eval.squad.data import looks_like_hub_name

    return [
        (key, resolve_path(value))
        for key, value in named_paths(recipe)
        if value != "-" and not (key.startswith("eval.squad.") and looks_like_hub_name(resolve_path(value)))
    ]


def processes_of(values: Mapping[str, Any], where: str, problems: list[str]) -> Processes:
    """The `gpus` / `procs` keys of a recipe section, recording a value that is not a number of processes."""
    given = {k: values[k] for k in LAUNCH_KEYS if k in values}
    bad = [
        f"{where}.{k}: expected a number of processes (an integer >= 1), got {v!r}"
        for k, v in given.items()
        if not isinstance(v, int) or isinstance(v, bool) or v < 1
    ]
    if len(given) == 2:
        bad.append(f"{where}: give gpus or procs, not both")
    problems += bad
    if bad:
        return Processes(where=where)
    return Processes(given.get("gpus"), given.get("procs"), where)


def with_processes(recipe: Recipe, processes: Processes) -> Recipe:
    """The recipe with `processes` (the command line's --gpus / --procs) for each stage that can run on
    several: the command line wins over the recipe's keys. Unchanged when none are asked for."""
    if not processes.requested:
        return recipe
    return dataclasses.replace(recipe, processes=dict.fromkeys(recipe.processes, processes))


def parse_value(text: str) -> Any:
    """A `--set` value as TOML (numbers, booleans, strings in quotes, arrays); a bare word is a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_set(data: dict[str, Any], assignment: str) -> None:
    """Apply `section.key=value` (dotted, e.g. `pretrain.variants.token.scheme=word`)."""
    if "=" not in assignment:
        raise UsageError(f"--set {assignment!r}: expected section.key=value")
    dotted, _, raw = assignment.partition("=")
    parts = [p.strip() for p in dotted.strip().split(".") if p.strip()]
    if len(parts) < 2:
        raise UsageError(f"--set {assignment!r}: name a section and a key, e.g. pretrain.max_steps=100")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise UsageError(f"--set {assignment!r}: {p} is not a section")
    node[parts[-1]] = parse_value(raw.strip())


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence):
        return isinstance(value, list)
    return True


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def build_config(cls: type, values: Mapping[str, Any], where: str, problems: list[str]) -> Any:
    """Instantiate a config dataclass from a TOML table, recording unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            problems.append(f"{where}.{key}: unknown key (known: {', '.join(sorted(names))})")
        elif not _type_ok(value, hints[key]):
            problems.append(
                f"{where}.{key}: expected {_type_name(hints[key])}, got {type(value).__name__} {value!r}"
            )
        else:
            kwargs[key] = float(value) if hints[key] is float and isinstance(value, int) else value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        problems.append(f"{where}: {e}")
        return None


def load_recipe(path: str | Path, sets: Sequence[str] = (), *, check_inputs: bool = True) -> Recipe:
    """Load a recipe, apply `--set` overrides and check it whole; one error lists every problem.

    With `check_inputs`, every path it names is checked too (a recipe shipped as a template, whose corpus
    is a parameter, loads without)."""
    p = Path(path)
    if not p.is_file():
        what = "is a directory, not a recipe file" if p.is_dir() else "no such recipe file"
        raise UsageError(f"{p}: {what}; name a recipe TOML file, e.g. pipelines/quickstart.toml")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{p}: not valid TOML ({e})") from None
    for s in sets:
        apply_set(data, s)
    resolved = copy.deepcopy(data)
    problems: list[str] = []
    types_ = stage_types()

    head = data.pop("recipe", {})
    if not isinstance(head, dict):
        problems.append("recipe: must be a table")
        head = {}
    for key in head:
        if key not in ("name", "corpus", "description"):
            problems.append(f"recipe.{key}: unknown key (known: corpus, description, name)")
    corpus = head.get("corpus")
    if isinstance(corpus, str):
        corpus = [corpus]
    if not isinstance(corpus, list) or not corpus or not all(isinstance(c, str) for c in corpus):
        problems.append("recipe.corpus: expected a path or a list of paths")
        corpus = []
    corpus = [resolve_path(c) for c in corpus]
    recipe_name = str(head.get("name") or p.stem)
    note = "" if head.get("name") else " (taken from the recipe's file name, so set recipe.name)"
    if bad := name_problem("recipe.name", recipe_name, "WORKSPACE/pipelines/NAME", note):
        problems.append(bad)

    sections: dict[str, Any] = {}
    squad_data: dict[str, str | None] = {}
    variants: dict[str, dict[str, Any]] = {"": {}}
    evals = data.pop("eval", {})
    flat = dict(data)
    if isinstance(evals, dict):
        for k, v in evals.items():
            flat[f"eval.{k}"] = v
    else:
        problems.append("eval: must hold tables such as [eval.squad] and [eval.mlm]")
    for name, table in flat.items():
        if name not in types_:
            problems.append(f"{name}: unknown stage (known: recipe, {', '.join(types_)})")
            continue
        if not isinstance(table, dict):
            problems.append(f"{name}: must be a table")
            continue
        table = dict(table)
        if name == "pretrain" and "variants" in table:
            vs = table.pop("variants")
            if not isinstance(vs, dict) or not vs or not all(isinstance(v, dict) for v in vs.values()):
                problems.append("pretrain.variants: expected tables such as [pretrain.variants.NAME]")
            else:
                variants = {k: dict(v) for k, v in vs.items()}
                for v in variants:
                    if bad := name_problem("pretrain.variants", v, "DIR/pretrain-NAME"):
                        problems.append(bad)
        for key in PATH_KEYS.get(name, ()):
            if isinstance(table.get(key), str):
                table[key] = resolve_path(table[key])
        if name == "eval.squad":
            # The data files are arguments of the stage, not fields of its config.
            for key in ("train", "dev"):
                value = table.pop(key, None)
                if value is not None and not isinstance(value, str):
                    problems.append(f"eval.squad.{key}: expected a path, got {type(value).__name__}")
                squad_data[key] = value if isinstance(value, str) else None
            if not squad_data.get("dev"):
                problems.append("eval.squad.dev: name the SQuAD dev file to score")
        sections[name] = table
    for required in ("tokenize", "shard"):
        sections.setdefault(required, {})

    configs: dict[str, Any] = {}
    processes: dict[str, Processes] = {}
    for name, table in sections.items():
        if name == "pretrain":
            for v, overrides in variants.items():
                for key in PATH_KEYS["pretrain"]:
                    if isinstance(overrides.get(key), str):
                        overrides[key] = resolve_path(overrides[key])
                where = f"pretrain.variants.{v}" if v else "pretrain"
                # A variant that names its processes replaces the shared ones (both would be refused).
                own = any(k in overrides for k in LAUNCH_KEYS)
                launch = overrides if own else table
                processes[f"pretrain/{v}"] = processes_of(launch, where if own else "pretrain", problems)
                values = {k: x for k, x in {**table, **overrides}.items() if k not in LAUNCH_KEYS}
                configs[f"pretrain/{v}"] = build_config(types_[name], values, where, problems)
        elif name in LAUNCH_SECTIONS:
            processes[name] = processes_of(table, name, problems)
            values = {k: x for k, x in table.items() if k not in LAUNCH_KEYS}
            configs[name] = build_config(types_[name], values, name, problems)
        else:
            configs[name] = build_config(types_[name], table, name, problems)
    problems = list(dict.fromkeys(problems))  # a shared key's problem, once for all the variants
    if any(k.startswith("eval.") for k in configs) and not any(k.startswith("pretrain/") for k in configs):
        problems.append("eval: evaluations need a [pretrain] section")
    for key, cfg in configs.items():
        if cfg is None:
            continue
        try:
            cfg.validate()
        except UsageError as e:
            problems.append(f"{key.replace('/', '.').rstrip('.')}: {e}")
    recipe = Recipe(p, recipe_name, corpus, configs, variants, squad_data, resolved, processes)
    missing = input_problems(recipe) if check_inputs else []
    if problems or missing:
        # A missing input alone is a data error, as when a stage finds it; anything else makes it usage.
        raise (UsageError if problems else DataError)(f"{p}: " + "; ".join(problems + missing))
    return recipe
