"""Stage settings declared once: each config field carries its default and its help.

A stage's config is a dataclass (`TokenizeConfig`, `PretrainConfig`, ...). Its fields are declared with
`option(default, help)`, and everything that shows or reads a setting takes it from there: the command
line (`spanbert_cli.cli.options.config_options` turns every field into a `--flag`), the recipe sections
(one key per field) and the manifests. So a default and a help text are written once, where the field is,
as litgpt does with its dataclass arguments.
"""

from __future__ import annotations

import dataclasses
from typing import Any

_MISSING: Any = dataclasses.MISSING


def option(
    default: Any = _MISSING,
    help: str = "",
    *,
    default_factory: Any = _MISSING,
    flag: str | None = None,
    short: str | None = None,
    panel: str | None = None,
    show_default: bool = True,
    cli: bool = True,
) -> Any:
    """A config field with its command-line face.

    flag: the option's name when it is not `--field-name` (e.g. `--compile` for `compile_model`);
    short: a one-letter alias (`-n`); panel: the group `--help` lists it under; show_default: False for
    defaults that mean "decided later" (None); cli: False for a setting that is not a command-line option
    (e.g. the world size, which the launcher sets).
    """
    metadata = {"help": help, "flag": flag, "short": short, "panel": panel, "show_default": show_default}
    metadata["cli"] = cli
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag_of(cls: type, name: str) -> str:
    """The command-line flag of a config field (`--mask-ratio`)."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return f.metadata.get("flag") or "--" + name.replace("_", "-")


def same_option(cls: type, name: str, default: Any = _MISSING, also: str = "") -> Any:
    """A field of another config declared again with its help (and its default unless given; `also` is
    added to the help): for a config that embeds another's settings, such as the masking settings of
    `PretrainConfig`, so the masking options read the same in every command."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    meta = {k: v for k, v in f.metadata.items() if k in ("flag", "short", "panel", "show_default", "cli")}
    if default is not _MISSING:
        meta["show_default"] = default is not None and meta.get("show_default", True)
    help_ = f.metadata.get("help", "") + (f" {also}" if also else "")
    return option(f.default if default is _MISSING else default, help_, **meta)
