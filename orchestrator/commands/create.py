"""``evs-snapshot create MANIFEST``: the command's options, wired to ``creating.create`` (the run), or
to ``planning.plan`` (a dry run that needs no event loop)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from orchestrator import options
from orchestrator.console import Console
from orchestrator.defaults import SETTLE
from orchestrator.entry import run, run_now
from orchestrator.hookplan import HookPlan
from orchestrator.models import utc_now
from orchestrator.planning import CreateSettings, plan
from orchestrator.rules import check_hold_reason

if TYPE_CHECKING:
    from orchestrator.config import Connection, RowDefaults, WaitPlan
    from orchestrator.console import Console
    from orchestrator.frame import Closing
    from orchestrator.manifest import ManifestSource
    from orchestrator.retry import RetryPolicy


@click.command("create")
@options.MANIFEST
@options.ROWS
@click.option(
    "--hold",
    "hold_reason",
    default=None,
    metavar="REASON",
    help="Hold every snapshot made (the evs_snapshot_hold key = REASON, in the create request itself): "
    "prune never deletes it, cleanup only with --include-held; `release` removes it.",
)
@click.option(
    "--consistency",
    type=click.Choice(["disk", "server"]),
    default="disk",
    show_default=True,
    help="disk: one snapshot per row, each at its own moment. server: one v5 snapshot group per server "
    "(rows grouped by the server_id column `select` writes): its disks' snapshots share one point in "
    "time; exits 2 where the region has no snapshot groups.",
)
@options.CONNECTION
@options.HOOKS
@click.option(
    "--report",
    "report_path",
    default=None,
    help="Report path, or - for standard output.  [default: reports/evs-snapshot-{datetime}.jsonl]",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in --report (same manifest and naming options): skip finished rows, "
    "look up uncertain ones before sending them again.",
)
@options.LOCK_FILE
@options.RETRIES
@click.option(
    "--deadline",
    type=options.Duration(positive=True),
    default=None,
    help="Time for the whole run (90s, 15m, 2h); rows not sent by then end failed with DEADLINE_EXCEEDED, "
    "rows in flight are cancelled and end UNCONFIRMED (--resume looks them up).",
)
@click.option(
    "--settle",
    type=options.Duration(),
    default=f"{SETTLE:g}s",
    show_default=True,
    help="How long an uncertain row (5xx, timeout, reset) is looked up before it may be sent again; "
    "covers the gateway's 60 s backend timeout.",
)
@click.option(
    "--keep-duplicates",
    is_flag=True,
    help="Report, but do not delete, extra snapshots of this run that the end-of-run sweep finds.",
)
@click.option("--dry-run", is_flag=True, help="Validate and write planned records; send nothing.")
@click.option(
    "--wait",
    "wait_for_snapshots",
    is_flag=True,
    help="After creating, wait until every snapshot is available or error (see wait).",
)
@options.WAITING
@click.option(
    "--progress/--no-progress", default=None, help="Progress line.  [default: on when stderr is a terminal]"
)
@options.CLOSING
@options.LOG_FORMAT
@click.option(
    "--emulator",
    "use_emulator",
    is_flag=True,
    help="Start an in-process emulator seeded with the manifest's volumes and use it (demo mode).",
)
@options.DEBUG
def command(
    *,
    source: ManifestSource,
    rows: RowDefaults,
    hold_reason: str | None,
    consistency: str,
    connection: Connection,
    hook_plan: HookPlan,
    report_path: str | None,
    resume: bool,
    lock_file: Path | None,
    policy: RetryPolicy,
    deadline: float | None,
    settle: float,
    keep_duplicates: bool,
    dry_run: bool,
    wait_for_snapshots: bool,
    wait_plan: WaitPlan,
    progress: bool | None,
    closing: Closing,
    log_format: str,
    use_emulator: bool,
) -> NoReturn:
    """Create one snapshot per manifest row and write a JSON-lines report."""

    console = Console(sys.stderr, json=log_format == "json")
    settings = CreateSettings(
        source=source,
        report=report_path or f"reports/evs-snapshot-{utc_now():%Y%m%dT%H%M%SZ}.jsonl",
        defaults=dataclasses.replace(
            rows, region=connection.endpoints.home_region, hold=check_hold_reason(hold_reason)
        ),
        connection=connection,
        closing=closing,
        policy=policy,
        dry_run=dry_run,
        progress=sys.stderr.isatty() if progress is None else progress,
        emulator=use_emulator,
        resume=resume,
        lock_file=lock_file,
        deadline=deadline,
        settle=settle,
        keep_duplicates=keep_duplicates,
        wait=wait_plan if wait_for_snapshots else None,
        hooks=hook_plan,
        consistency=consistency,
    )
    if settings.loopless:
        raise SystemExit(run_now(lambda: plan(settings, console=console), console=console))
    # The run and its machinery (worker pool, sweep, wait, groups): 119 M instructions a dry run, which
    # needs none of it, does not load (results.md, session 13's function-level imports).
    from orchestrator.creating import create  # noqa: PLC0415 - see above

    raise SystemExit(run(lambda: create(settings, console=console), console=console))
