"""Each setting is declared once, on its config field: the command line, the recipes and the configs agree."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import tomllib
import typer.main

from spanbert_cli.cli import app
from spanbert_cli.cli.options import cli_fields
from spanbert_cli.eval.config import MlmEvalConfig, SquadConfig
from spanbert_cli.masking import MaskingConfig
from spanbert_cli.options import flag_of
from spanbert_cli.pipeline.recipe import LAUNCH_KEYS, LAUNCH_SECTIONS, stage_types
from spanbert_cli.shards.pack import ShardConfig
from spanbert_cli.text.tokenize import TokenizeConfig
from spanbert_cli.training.config import PretrainConfig

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {
    ("tokenize",): TokenizeConfig,
    ("shard",): ShardConfig,
    ("mask-preview",): MaskingConfig,
    ("pretrain",): PretrainConfig,
    ("eval", "squad"): SquadConfig,
    ("eval", "mlm"): MlmEvalConfig,
}


def _command(path: tuple[str, ...]):
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


@pytest.mark.parametrize("path", list(COMMANDS), ids=[" ".join(p) for p in COMMANDS])
def test_every_config_field_is_an_option_with_its_default_and_help(path: tuple[str, ...]) -> None:
    cls = COMMANDS[path]
    params = {p.name: p for p in _command(path).params}
    for f in cli_fields(cls):
        assert f.name in params, f"{' '.join(path)}: {cls.__name__}.{f.name} is not an option"
        p = params[f.name]
        assert p.default == _default(f), (f.name, p.default, _default(f))
        assert p.help == f.metadata["help"] and p.help, f.name
        assert flag_of(cls, f.name).split("/")[0] in p.opts, (f.name, p.opts)


def test_the_masking_options_read_the_same_everywhere() -> None:
    """mask-preview, pretrain and eval mlm take the masking settings from MaskingConfig's fields."""
    for f in dataclasses.fields(MaskingConfig):
        helps = {
            " ".join(path): {p.name: p for p in _command(path).params}[f.name].help
            for path in (("mask-preview",), ("pretrain",), ("eval", "mlm"))
        }
        base = f.metadata["help"]
        assert all(h.startswith(base) for h in helps.values()), helps
        assert getattr(PretrainConfig(), f.name) == getattr(MaskingConfig(), f.name)


def test_every_recipe_key_is_a_config_field() -> None:
    """The shipped recipes use only keys that their section's config declares (recipe validation also
    rejects unknown keys; this keeps the shipped ones honest)."""
    types = stage_types()
    for recipe in sorted((ROOT / "pipelines").glob("*.toml")):
        data = tomllib.loads(recipe.read_text())
        sections = {k: v for k, v in data.items() if k != "recipe"}
        sections.update({f"eval.{k}": v for k, v in data.get("eval", {}).items()})
        sections.pop("eval", None)
        for name, table in sections.items():
            fields = {f.name for f in dataclasses.fields(types[name])}
            launch = set(LAUNCH_KEYS) if name in LAUNCH_SECTIONS else set()
            keys = set(table) - {"variants", "train", "dev"} - launch
            assert keys <= fields, (recipe.name, name, keys - fields)
            for variant in table.get("variants", {}).values():
                assert set(variant) - launch <= fields, (recipe.name, name, set(variant) - fields)


def test_the_recipe_keys_of_processes_are_the_launch_options_declared_once() -> None:
    """`gpus` / `procs` in a recipe are `spanbert run`'s --gpus / --procs, the very options of `spanbert
    pretrain` and `spanbert eval squad`, and no config's field (they are not parameters)."""
    commands = [("run",), ("pretrain",), ("eval", "squad")]
    for key in LAUNCH_KEYS:
        options = [{p.name: p for p in _command(path).params}[key] for path in commands]
        faces = {(tuple(o.opts), o.help, o.default) for o in options}
        assert faces == {((f"--{key}",), options[0].help, None)} and options[0].help, faces
        for name in LAUNCH_SECTIONS:
            assert key not in {f.name for f in dataclasses.fields(stage_types()[name])}, (name, key)


def test_settings_the_cli_shows_differently_are_not_options_twice() -> None:
    """A config field the command line presents in other units (MB, "none", "all cores") is marked
    cli=False, and the command declares that face once: no option appears twice."""
    for path in COMMANDS:
        params = [p.name for p in _command(path).params]
        assert len(params) == len(set(params)), path
