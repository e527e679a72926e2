"""The one error boundary: each foreseeable error is one line and its exit code; a bug is exit 70."""

from __future__ import annotations

import click
import orjson
import pytest
from click.testing import CliRunner

from orchestrator.cli import Main
from tests.helpers import invoke


class Boundary(Main):
    """The real error boundary (``Main.main``) around commands that fail in ways no real command does."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.commands)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self.commands.get(cmd_name)


@click.group(cls=Boundary)
def boundary() -> None:
    """Test commands."""


@boundary.command("crash")
@click.option("--debug", is_flag=True)
def crash(debug: bool) -> None:
    raise RuntimeError("a bug")


@boundary.command("interrupted")
def interrupted() -> None:
    raise BaseExceptionGroup("workers", [KeyboardInterrupt()])


@boundary.command("unreadable")
@click.option("--log-format", default="human")
def unreadable(log_format: str) -> None:
    raise click.FileError("rows.csv", hint="gone")


@pytest.mark.parametrize(
    ("args", "env", "traceback"),
    [
        pytest.param(["crash"], {}, False, id="plain"),
        pytest.param(["crash", "--debug"], {}, True, id="debug-flag"),
        pytest.param(["crash"], {"EVS_SNAPSHOT_DEBUG": "1"}, True, id="debug-env"),
    ],
)
def test_an_unexpected_error_is_an_internal_error(
    args: list[str], env: dict[str, str], traceback: bool
) -> None:
    """A bug: exit 70 and one line naming it; the traceback only with --debug or EVS_SNAPSHOT_DEBUG=1."""
    result = CliRunner().invoke(boundary, args, env={"EVS_SNAPSHOT_DEBUG": "", **env})
    assert result.exit_code == 70, result.output
    assert "evs-snapshot: error: internal error: RuntimeError: a bug; run with --debug" in result.stderr
    assert ("Traceback (most recent call last)" in result.stderr) is traceback


def test_an_interrupt_inside_a_task_group_exits_130() -> None:
    """A KeyboardInterrupt raised inside a task group: exit 130 'stopped by SIGINT', not an internal error."""
    result = CliRunner().invoke(boundary, ["interrupted"])
    assert result.exit_code == 130, result.output
    assert "stopped by SIGINT" in result.stderr
    assert "internal error" not in result.stderr


def test_a_click_error_that_is_not_a_usage_error_under_log_format_json() -> None:
    """A click error with no usage context: one JSON line, no 'usage:' hint."""
    result = CliRunner().invoke(boundary, ["unreadable", "--log-format", "json"])
    assert result.exit_code == 1, result.output
    [line] = result.stderr.splitlines()
    event = orjson.loads(line)
    assert (event["level"], event["exit_code"]) == ("error", 1)
    assert "rows.csv" in event["message"]
    assert "usage:" not in event["message"]


def test_an_unknown_command_is_a_usage_error() -> None:
    """The real group knows only its commands: another name is a usage error (exit 2)."""
    result = invoke(["snapshot-everything"])
    assert result.exit_code == 2, result.output
    assert "No such command 'snapshot-everything'" in result.stderr
