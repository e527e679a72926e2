"""The ``evs-snapshot`` command line: the click group, its commands, and the one error boundary.

Every command module builds typed settings from its options and runs one job through ``entry.run``
(create's dry run: ``entry.run_now``), but one: ``emulator`` serves under its own signal handlers and
exits 0 on SIGINT/SIGTERM (``emulator.serve_forever``; ``entry.run`` would make that 130/143).
``Main.main`` is the only place an error becomes a message and an exit code: our errors carry their
code; click's usage errors exit 2; anything else is a bug (exit 70, one line, the traceback only with
``--debug`` or ``EVS_SNAPSHOT_DEBUG=1``).

A command's module is imported only when the command runs (or shows its own help): ``--help`` lists
the commands from ``COMMANDS``, so it loads no command, no anyio and no aiohttp (``benchmarks startup``).
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from orchestrator import __version__
from orchestrator.console import Console
from orchestrator.errors import INTERNAL_ERROR, STOPPED_ADVICE, EvsSnapshotError, first_error

# Each command and its help's first sentence, in the order ``--help`` lists them; tests/test_startup.py
# checks each against the command's own help, so the list cannot drift from the commands.
COMMANDS = {
    "create": "Create one snapshot per manifest row and write a JSON-lines report.",
    "wait": "Poll the snapshots a report accepted until each is available or error; append their final "
    "states.",
    "validate": "Check a manifest (offline, or --online against the API) without creating anything.",
    "summary": "Summarize a create, prune, cleanup or rollback report (last record per row): outcomes, error "
    "codes, next steps; --format markdown gives a change-ticket block.",
    "prune": "Delete the tool's own snapshots beyond --keep-last / --keep-within / the calendar rules (plans "
    "unless --apply).",
    "cleanup": "Delete the snapshots one create run made, each after checking its marker (plans unless "
    "--apply).",
    "audit": "Exit 1 when a disk has no available snapshot of the tool younger than --max-age (GETs only).",
    "select": "Write a manifest (CSV, JSON or JSON Lines) of the disks that match every selector.",
    "rollback": "Restore each row's disk from the snapshot the create run in REPORT made; plans unless "
    "--apply.",
    "hold": "Hold the tool's own snapshots: prune never deletes them (plans unless --apply).",
    "release": "Remove the hold from the tool's own snapshots (plans unless --apply).",
    "doctor": "Check endpoint, clock, credentials, project, permissions, enterprise projects and quota "
    "(read-only).",
    "emulator": "Serve the local EVS emulator until SIGINT/SIGTERM (tests, demos, runbook rehearsal).",
}


def _wants(args: Sequence[str], flag: str, value: str | None = None) -> bool:
    if value is None:
        return flag in args
    return any(
        (arg == flag and index + 1 < len(args) and args[index + 1] == value) or arg == f"{flag}={value}"
        for index, arg in enumerate(args)
    )


class Main(click.Group):
    """The group; its ``main`` is the error boundary of every command."""

    def main(  # type: ignore[override]
        self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any
    ) -> NoReturn:
        argv = list(sys.argv[1:] if args is None else args)
        console = Console(sys.stderr, json=_wants(argv, "--log-format", "json"))
        debug = _wants(argv, "--debug") or os.environ.get("EVS_SNAPSHOT_DEBUG", "") not in ("", "0")
        try:
            code = super().main(argv, prog_name, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            code = exc.exit_code
        except click.ClickException as exc:
            _usage_error(console, exc)
            code = exc.exit_code
        except click.exceptions.Abort as exc:  # click's form of KeyboardInterrupt, and of an EOFError
            if isinstance(exc.__cause__, EOFError):  # the tool asks nothing: a fault (a cut-short .pyc)
                code = _internal(console, exc.__cause__, debug=debug)
            else:
                code = _interrupted(console)
        except KeyboardInterrupt:
            code = _interrupted(console)
        except BaseException as exc:
            error = first_error(exc)
            if isinstance(error, SystemExit):
                raise error from None
            if isinstance(error, EvsSnapshotError):
                console.error(str(error), exit_code=error.exit_code)
                code = error.exit_code
            elif isinstance(error, KeyboardInterrupt):
                code = _interrupted(console)
            else:
                code = _internal(console, exc, shown=error, debug=debug)
        _flush()
        sys.exit(code if isinstance(code, int) else 0)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """A command's module is imported when it is named: ``create`` does not pay for the others."""
        if cmd_name not in COMMANDS:
            return None

        command: click.Command = importlib.import_module(f"orchestrator.commands.{cmd_name}").command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``--help``, shortened as click shortens it, from ``COMMANDS`` alone."""
        limit = formatter.width - 6 - max(map(len, COMMANDS))
        rows = [
            (name, click.Command(name, help=first).get_short_help_str(limit))
            for name, first in COMMANDS.items()
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _internal(
    console: Console, exc: BaseException, *, shown: BaseException | None = None, debug: bool
) -> int:
    """A fault of the tool (not of the input): one line, exit 70; the traceback only with ``--debug``."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    error = exc if shown is None else shown
    what = f"{type(error).__name__}: {error}"
    console.error(f"internal error: {what}; run with --debug for the traceback", exit_code=INTERNAL_ERROR)
    return INTERNAL_ERROR


def _interrupted(console: Console) -> int:
    """SIGINT before a command's receiver is in place (parsing options): say so, exit 130."""

    console.error(f"stopped by SIGINT; {STOPPED_ADVICE}", exit_code=130)
    return 130


def _usage_error(console: Console, exc: click.ClickException) -> None:
    if not console.json:
        exc.show()
        return
    message = exc.format_message()
    if isinstance(exc, click.UsageError) and exc.ctx is not None:
        message = f"{message} (usage: {exc.ctx.command_path} --help)"
    console.error(message, exit_code=exc.exit_code)


def _version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``--version``: ours, and the Python and aiohttp versions (a bug report needs all three)."""
    if not value or ctx.resilient_parsing:
        return

    from importlib.metadata import version  # noqa: PLC0415 - 23 ms of every start-up (results.md, session 13)

    python = sys.version.split()[0]  # platform.python_version() without platform's import
    click.echo(f"evs-snapshot, version {__version__} (Python {python}, aiohttp {version('aiohttp')})")
    ctx.exit()


def _flush() -> None:
    """Flush stdout now, so a reader that went away (``| head``) costs a quiet exit, not a traceback."""
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError, OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


@click.group(cls=Main, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_version,
    help="Show the version (with Python's and aiohttp's) and exit.",
)
def main() -> None:
    """Create Huawei Cloud EVS snapshots in bulk: never twice, never silently skipped."""
