"""Start-up: what ``--help`` and a one-row dry run import, and the command list ``--help`` shows.

``benchmarks startup`` measures how long they take (no wall-clock thresholds here); these tests bound
what they load, so a top-level import of the HTTP client or the emulator cannot creep back unseen.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click
import pytest

from orchestrator.cli import COMMANDS, main
from tests.helpers import AKSK_ENV, PROJECT, cli_args, copying_stdin, csv_manifest, run_process, volume_ids

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


# The CLI as ``python -m orchestrator`` runs it; at exit, the names in ``sys.modules`` go to a file,
# and a last line says whether the garbage collector is on and how many objects it has frozen.
CHILD = """
import atexit, gc, sys
from pathlib import Path
listed = Path(sys.argv.pop(1))
sys.argv[0] = "evs-snapshot"
atexit.register(lambda: listed.write_text("\\n".join([*sorted(sys.modules), f"#gc {gc.isenabled()} {gc.get_freeze_count()}"])))
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
    *modules, collector = listed.read_text(encoding="utf-8").split("\n")
    # The command ran with the collector on; what the import made (and what lived at exit) is frozen.
    _, enabled, frozen = collector.split()
    assert enabled == "True"
    assert int(frozen) > 10_000
    return set(modules)


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


def _seen(pid: int) -> dict[str, object]:
    """What a process looks like from outside: its signal masks, what it holds open (by kind), and where
    it runs. (Its environment as ``/proc`` shows it is the one it was exec'd with: a forked child's is the
    launcher's, though ``os.environ`` and ``getenv`` are the test's, as every launched run that takes its
    credentials from the environment shows.)"""
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    kinds = {"/": "a file", "pipe:": "a pipe", "socket:": "a socket", "anon_inode:": "an event queue"}
    held = sorted(
        next(kind for start, kind in kinds.items() if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(start))
        for fd in os.listdir(f"/proc/{pid}/fd")
    )
    return {
        **{mask: status[mask] for mask in ("SigBlk", "SigIgn", "SigCgt")},
        "held": held,
        "cwd": os.readlink(f"/proc/{pid}/cwd"),
    }


@pytest.mark.parametrize("sigint_ignored", [False, True])
def test_the_tests_launcher_starts_the_cli_as_exec_does(sigint_ignored: bool, tmp_path: Path) -> None:
    """``helpers.run_process`` forks the CLI from a launcher that has imported it (docs/development.md):
    a create that reads its manifest from a stalled standard input, started that way and by exec,
    holds the same kinds of files with the same signal dispositions (a SIGINT inherited ignored stays
    so) in the same working folder, and both end alike on SIGTERM."""

    def args(name: str) -> list[str]:
        report = tmp_path / f"{name}.jsonl"
        return cli_args(
            "create", "-", format="csv", endpoint="http://127.0.0.1:9", project_id=PROJECT, report=report
        )

    forked = run_process(args("forked"), stdin=subprocess.PIPE, sigint_ignored=sigint_ignored)
    execed = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args("execed")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **AKSK_ENV},
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None,  # noqa: PLW1509 - a test's child only
    )
    try:
        for process in (forked, execed):
            assert process.stdin is not None
            process.stdin.write(b"volume_id\n")  # then nothing more, and the pipe stays open
            process.stdin.flush()
        stop = time.monotonic() + 30
        while not (copying_stdin(forked.pid) and copying_stdin(execed.pid)):
            assert forked.poll() is None
            assert execed.poll() is None
            assert time.monotonic() < stop, "never copying"
            time.sleep(0.01)
        seen = _seen(forked.pid)
        assert seen == _seen(execed.pid)
        assert seen["cwd"] == os.getcwd()
        ignored = int(str(seen["SigIgn"]), 16) >> (signal.SIGINT - 1) & 1
        assert ignored == sigint_ignored
        ended = []
        for process, name in ((forked, "forked"), (execed, "execed")):
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=30)
            ended.append((process.returncode, out, err.replace(name.encode(), b"NAME")))
        assert ended[0] == ended[1]
        assert ended[0][0] == 143
    finally:
        for process in (forked, execed):
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=30)
