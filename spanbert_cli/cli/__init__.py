"""The `spanbert` command: a thin typer layer over the stage modules.

Each command lives in its own module and only parses options, builds the stage's config, calls the
stage and shows the result. Errors from the library arrive as `SpanbertError`s and leave as one line on
stderr with an exit code (0 ok, 1 data or runtime error, 2 usage error, 130 or 143 when Ctrl-C or
SIGTERM interrupted it: see `spanbert_cli.interrupts`); `--debug` or SPANBERT_DEBUG=1 shows the
traceback instead.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from typing import Annotated, Any

import typer
import typer.core

try:  # typer >= 0.20 carries its own copy of click; older ones use click itself
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover
    from click import exceptions as click_exc

from spanbert_cli import __version__, interrupts
from spanbert_cli.artifacts import locks
from spanbert_cli.errors import SpanbertError, io_failure

# `spanbert --help` lists the stages in pipeline order, then the tools (typer would put groups last).
COMMAND_ORDER = (
    "tokenize",
    "shard",
    "mask-preview",
    "pretrain",
    "eval",
    "run",
    "report",
    "export",
    "verify",
    "lineage",
)


class _OrderedGroup(typer.core.TyperGroup):
    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        rank = {n: i for i, n in enumerate(COMMAND_ORDER)}
        return sorted(names, key=lambda n: (rank.get(n, len(rank)), names.index(n)))


app = typer.Typer(
    name="spanbert",
    cls=_OrderedGroup,
    help="From a raw text corpus to a pretrained SpanBERT encoder and its SQuAD score, reproducibly.\n\n"
    "Stages chain through versioned artifacts: tokenize → shard → mask-preview → pretrain → eval.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

_debug = False


def _version(value: bool) -> None:
    if value:
        typer.echo(f"spanbert {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
) -> None:
    global _debug
    _debug = debug or _debug
    locks.reset_wait()  # a --wait of an earlier command in this process ends with it


def _register() -> None:
    # Registration order is the order of `spanbert --help`: the pipeline order, then the tools.
    from spanbert_cli.cli import inspect as inspect_cmds
    from spanbert_cli.cli import mask_preview, pretrain, report, run, shard, tokenize

    tokenize.register(app)
    shard.register(app)
    mask_preview.register(app)
    pretrain.register(app)
    from spanbert_cli.cli.eval import app as eval_app

    app.add_typer(eval_app, name="eval")
    pretrain.register_export(app)  # after eval's line, before the tools
    run.register(app)
    report.register(app)
    inspect_cmds.register(app)


_register()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    global _debug
    _debug = os.environ.get("SPANBERT_DEBUG", "") not in ("", "0")
    args = sys.argv[1:] if argv is None else argv
    if "--debug" in args:
        _debug = True
    doing = f"running spanbert {_command_name(args)}".rstrip()
    try:
        with interrupts.handling(), interrupts.activity(doing, argv=("spanbert", *args)):
            code = app(args=args, prog_name="spanbert", standalone_mode=False)
    except interrupts.Interrupted as e:
        return _interrupted(e)
    except SpanbertError as e:
        return _fail(e, e.exit_code)
    except typer.Exit as e:
        return e.exit_code
    except click_exc.ClickException as e:
        # Usage errors: click's message as our one line, with where to read the usage.
        ctx = getattr(e, "ctx", None)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        message = " ".join(e.format_message().split())
        print(f"error: {message}{where}", file=sys.stderr)
        return e.exit_code
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # raised by hand (the handler makes a signal raise Interrupted)
        return _interrupted(interrupts.Interrupted(signal.SIGINT, [interrupts.Activity(doing)]))
    except BrokenPipeError:
        return 1
    except MemoryError as e:
        return _fail(e, 1, "out of memory")
    except OSError as e:  # disk full, read-only, no permission: one line naming the file and the fix
        return _fail(io_failure(e, action=None) or e, 1)
    except Exception as e:
        return _fail(e, 1, f"unexpected {type(e).__name__}")
    # Without standalone mode typer returns, rather than raises, the code of a typer.Exit, and makes
    # one of a KeyboardInterrupt it caught itself.
    if code == 130:
        return _interrupted(interrupts.Interrupted(signal.SIGINT, [interrupts.Activity(doing)]))
    return code if isinstance(code, int) else 0


def _command_name(args: list[str]) -> str:
    """The command's words in a command line (`tokenize`, `eval squad`), for messages."""
    words = [a for a in args if not a.startswith("-")]
    groups = {g.name for g in app.registered_groups}
    return " ".join(words[:2] if words and words[0] in groups else words[:1])


def _interrupted(e: interrupts.Interrupted) -> int:
    if _debug:
        traceback.print_exception(e, file=sys.stderr)
    print(f"error: {interrupts.message(e)}", file=sys.stderr)
    # The process is ending: a repeated Ctrl-C must not kill it on the way out (the interpreter resets
    # Python-level handlers to the default while it finalises, which would turn exit 130 into a death
    # by SIGINT); an ignored signal stays ignored.
    if threading.current_thread() is threading.main_thread():
        for s in interrupts.SIGNALS:
            signal.signal(s, signal.SIG_IGN)
    return e.exit_code


def _fail(e: BaseException, code: int, prefix: str | None = None) -> int:
    if _debug:
        traceback.print_exception(e, file=sys.stderr)
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if prefix:
        msg = f"{prefix}: {msg} (run with --debug for the traceback)"
    print(f"error: {msg}", file=sys.stderr)
    return code
