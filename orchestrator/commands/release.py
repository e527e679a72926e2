"""``evs-snapshot release [REPORT]``: remove the ``evs_snapshot_hold`` key from the tool's own
snapshots, so that ``prune`` judges them by its rules again.

The snapshots are those a create REPORT's rows name (``--rows``, ``--volume``), or ``--snapshot ID``.
The rules, the records and the exit code are ``orchestrator.holds``'s; plans unless ``--apply``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, NoReturn

import click

from orchestrator import options
from orchestrator.entry import run

if TYPE_CHECKING:
    from orchestrator.config import Connection
    from orchestrator.frame import Closing
    from orchestrator.options import Choice
    from orchestrator.retry import RetryPolicy


@click.command("release")
@options.HOLDING
@options.CONNECTION
@options.RETRIES
@options.CLOSING
@options.LOG_FORMAT
@options.DEBUG
def command(
    *,
    choice: Choice,
    connection: Connection,
    policy: RetryPolicy,
    closing: Closing,
    log_format: str,
) -> NoReturn:
    """Remove the hold from the tool's own snapshots (plans unless --apply)."""
    from orchestrator.console import Console  # noqa: PLC0415
    from orchestrator.holds import RELEASE, run_holds, settings_of  # noqa: PLC0415

    console = Console(sys.stderr, json=log_format == "json")
    settings = settings_of(RELEASE, None, choice, connection=connection, policy=policy, closing=closing)
    raise SystemExit(run(lambda: run_holds(settings, console=console), console=console))
