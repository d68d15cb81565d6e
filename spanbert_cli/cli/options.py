"""Command-line options built from config dataclasses (`spanbert_cli.options.option` fields).

    @config_options(masking=MaskingConfig)
    def mask_preview(shards: ShardsArg = None, masking: MaskingConfig = MaskingConfig(), ...) -> None:
        ...

The command's parameter `masking` becomes one option per field of `MaskingConfig` (`--scheme`,
`--mask-ratio`, ...), with the field's default and help; the command receives the config instance built
from them. Typer reads the command's signature, so the generated signature is all it sees.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer


def field_parameter(cls: type, f: dataclasses.Field, hints: dict[str, Any]) -> inspect.Parameter:
    """The typer parameter of one config field."""
    meta = f.metadata
    decls = [meta.get("flag") or "--" + f.name.replace("_", "-")]
    if meta.get("short"):
        decls.append(meta["short"])
    hint = hints[f.name]
    if hint is bool and len(decls) == 1 and "/" not in decls[0]:
        decls[0] = f"{decls[0]}/--no-{decls[0][2:]}"
    info = typer.Option(
        *decls,
        help=meta.get("help") or None,
        show_default=meta.get("show_default", True),
        rich_help_panel=meta.get("panel"),
    )
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        raise TypeError(f"{cls.__name__}.{f.name} has no default: a command-line option needs one")
    return inspect.Parameter(
        f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=Annotated[hint, info]
    )


def cli_fields(cls: type, exclude: Sequence[str] = ()) -> list[dataclasses.Field]:
    """The fields of `cls` that are command-line options."""
    return [
        f for f in dataclasses.fields(cls) if f.init and f.metadata.get("cli", True) and f.name not in exclude
    ]


def config_options(
    exclude: Sequence[str] = (), **configs: type
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Replace each parameter named in `configs` by the options of that config class (see the module
    docstring); `exclude` names fields left out of the command line (they keep their defaults)."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn, eval_str=True)
        params: list[inspect.Parameter] = []
        groups: dict[str, tuple[type, list[str]]] = {}
        for p in sig.parameters.values():
            if p.name not in configs:
                params.append(p)
                continue
            cls = configs[p.name]
            hints = typing.get_type_hints(cls)
            fields = cli_fields(cls, exclude)
            clash = [f.name for f in fields if f.name in sig.parameters]
            if clash:
                raise TypeError(
                    f"{fn.__name__}: {', '.join(clash)} both a parameter and a {cls.__name__} field"
                )
            groups[p.name] = (cls, [f.name for f in fields])
            params += [field_parameter(cls, f, hints) for f in fields]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            for name, (cls, names) in groups.items():
                kwargs[name] = cls(**{n: kwargs.pop(n) for n in names})
            return fn(**kwargs)

        # Typer reads the signature and, for unannotated parameters, the annotations: both generated.
        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__  # type: ignore[attr-defined]
        return command

    return decorate


def option_defaults(command: Callable[..., Any]) -> dict[str, Any]:
    """{parameter: default} of a command as typer sees it (for the test that CLI and configs agree)."""
    return {
        p.name: p.default
        for p in inspect.signature(command).parameters.values()
        if p.default is not inspect.Parameter.empty
    }
