"""Start-up: what ``--help`` and a one-row dry run import, and the command list ``--help`` shows.

``benchmarks startup`` measures how long they take (no wall-clock thresholds here); these tests bound
what they load, so a top-level import of the HTTP client or the emulator cannot creep back unseen.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pytest

from orchestrator.cli import COMMANDS, main
from tests.helpers import PROJECT, csv_manifest, volume_ids

COMMANDS_DIR = Path(__file__).resolve().parent.parent / "orchestrator" / "commands"
CLIENT = ("aiohttp", "orchestrator.api.routes", "orchestrator.api.session", "orchestrator.api.iam")
EMULATOR = ("orchestrator.emulator", "orchestrator.demo")
# What a dry run needs none of: an event loop, the HTTP client's URLs, the run's machinery, the API
# calls, the hooks' subprocesses (benchmarks startup).
RUN = (
    "asyncio",
    "yarl",
    "email",
    "subprocess",
    "orchestrator.creating",
    "orchestrator.runner",
    "orchestrator.api",
    "orchestrator.hooks",
    "orchestrator.servers",
)


# The CLI as ``python -m orchestrator`` runs it; at exit, the names in ``sys.modules`` go to a file.
CHILD = """
import atexit, sys
from pathlib import Path
listed = Path(sys.argv.pop(1))
sys.argv[0] = "evs-snapshot"
atexit.register(lambda: listed.write_text("\\n".join(sorted(sys.modules))))
from orchestrator.__main__ import main
main()
"""


def _imported(tmp_path: Path, *args: str) -> set[str]:
    """Every module a real ``evs-snapshot ARGS`` process has imported when it exits."""
    listed = tmp_path / "modules.txt"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(listed), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OS_AUTH_TOKEN": "", "HUAWEICLOUD_SDK_AK": "", "HUAWEICLOUD_SDK_SK": ""},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return set(listed.read_text(encoding="utf-8").split())


def _under(modules: set[str], *packages: str) -> set[str]:
    return {name for name in modules if any(name == p or name.startswith(f"{p}.") for p in packages)}


def test_help_loads_no_command_no_anyio_and_no_client(tmp_path: Path) -> None:
    """``--help`` lists the commands without importing one, nor anyio, asyncio, yarl, aiohttp or the emulator."""
    modules = _imported(tmp_path, "--help")
    assert "click" in modules  # the walk sees the process's imports at all
    assert not _under(modules, "anyio", "asyncio", "yarl", *CLIENT, *EMULATOR, "orchestrator.commands")
    assert _under(modules, "orchestrator") <= {
        "orchestrator",
        "orchestrator.__main__",
        "orchestrator.cli",
        "orchestrator.console",
        "orchestrator.errors",
        "orchestrator.models",
    }


def test_a_dry_run_loads_no_client_no_emulator_and_no_other_command(
    write: Callable[[str, str | bytes], Path], tmp_path: Path
) -> None:
    """A one-row ``create --dry-run`` imports ``create`` alone of the commands, no aiohttp or emulator, and
    nothing of a run that sends (``RUN``: no event loop, worker pool, API call or hook process)."""
    manifest = csv_manifest(write, volume_ids(1))
    report = tmp_path / "r.jsonl"
    modules = _imported(
        tmp_path,
        "create",
        str(manifest),
        "--dry-run",
        "--project-id",
        PROJECT,
        "--region",
        "cn-north-4",
        "--report",
        str(report),
    )
    assert report.exists()
    assert "orchestrator.planning" in modules
    assert not _under(modules, *CLIENT, *EMULATOR, *RUN)
    assert _under(modules, "orchestrator.commands") == {
        "orchestrator.commands",
        "orchestrator.commands.create",
    }


def test_the_command_list_is_every_command() -> None:
    """``COMMANDS`` names each module under ``orchestrator/commands/`` (a new command cannot be left out)."""
    modules = {path.stem for path in COMMANDS_DIR.glob("*.py") if path.stem != "__init__"}
    assert set(COMMANDS) == modules


@pytest.mark.parametrize("name", sorted(COMMANDS))
@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_the_command_list_says_each_commands_own_help(name: str) -> None:
    """Each line of ``COMMANDS`` is the first sentence of the command's own help, as click reads it."""
    command = importlib.import_module(f"orchestrator.commands.{name}").command
    assert command.name == name
    assert not command.hidden
    assert not command.deprecated
    assert command.short_help is None  # click would show it instead of the help's first sentence
    assert command.get_short_help_str(limit=10_000) == COMMANDS[name]


@pytest.mark.parametrize("width", [50, 80, 110])
def test_help_shows_what_the_commands_themselves_would_show(width: int) -> None:
    """The list ``--help`` prints from ``COMMANDS`` is the one click prints from the imported commands."""
    ctx = click.Context(main, info_name="evs-snapshot")
    ours, clicks = click.HelpFormatter(width=width), click.HelpFormatter(width=width)
    main.format_commands(ctx, ours)
    click.Group.format_commands(main, ctx, clicks)
    assert ours.getvalue() == clicks.getvalue()
    assert ours.getvalue().startswith("Commands:\n  create ")
