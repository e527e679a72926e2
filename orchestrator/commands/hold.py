"""``evs-snapshot hold [REPORT] --reason REASON``: set the ``evs_snapshot_hold`` key on the tool's own
snapshots, so that ``prune`` never deletes them (and ``cleanup`` only with ``--include-held``).

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


@click.command("hold")
@options.HOLDING
@click.option(
    "--reason",
    required=True,
    metavar="REASON",
    help="Why the snapshots are kept (an incident, a change ticket): the value of evs_snapshot_hold.",
)
@options.CONNECTION
@options.RETRIES
@options.CLOSING
@options.LOG_FORMAT
@options.DEBUG
def command(
    *,
    choice: Choice,
    reason: str,
    connection: Connection,
    policy: RetryPolicy,
    closing: Closing,
    log_format: str,
) -> NoReturn:
    """Hold the tool's own snapshots: prune never deletes them (plans unless --apply)."""
    from orchestrator.console import Console  # noqa: PLC0415
    from orchestrator.holds import HOLD, run_holds, settings_of  # noqa: PLC0415
    from orchestrator.rules import check_hold_reason  # noqa: PLC0415

    console = Console(sys.stderr, json=log_format == "json")
    settings = settings_of(
        HOLD,
        check_hold_reason(reason, "--reason"),
        choice,
        connection=connection,
        policy=policy,
        closing=closing,
    )
    raise SystemExit(run(lambda: run_holds(settings, console=console), console=console))
