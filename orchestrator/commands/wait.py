"""``evs-snapshot wait REPORT``: poll the snapshots a report accepted until each settles.

It first sweeps the run's projects for extra snapshots of the run (as ``create`` does at its end),
then polls; rows that timed out waiting before are waited for again, never sent again.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import anyio
import click

from orchestrator import options
from orchestrator.console import Console
from orchestrator.createrun import check_create_run
from orchestrator.entry import run
from orchestrator.errors import UsageError
from orchestrator.frame import Frame
from orchestrator.groupsweep import servers_of_run, sweep_run
from orchestrator.lock import run_locks
from orchestrator.report import ResumeBook, check_report_path, final_records, read_header
from orchestrator.signals import cancel_on_signal
from orchestrator.sweep import sweep_policy
from orchestrator.tally import Tally
from orchestrator.waiter import Waiter

if TYPE_CHECKING:
    from orchestrator.api.routes import Router
    from orchestrator.config import Connection, WaitPlan
    from orchestrator.console import Console
    from orchestrator.frame import Closing
    from orchestrator.models import RunHeader
    from orchestrator.report import ReportWriter
    from orchestrator.retry import RetryPolicy
    from orchestrator.tally import Tally


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class WaitSettings:
    report: Path
    connection: Connection
    plan: WaitPlan
    closing: Closing
    policy: RetryPolicy
    lock_file: Path | None = None
    keep_duplicates: bool = False


async def wait(settings: WaitSettings, *, console: Console) -> int:
    """Sweep, then poll the report's accepted snapshots and append their final states."""

    report = settings.report
    check_report_path(report)
    if not report.is_file():
        raise UsageError(f"{report}: no such report")
    header = read_header(report)
    if header is None:
        raise UsageError(f"{report}: the report holds no records; nothing to wait for")
    check_create_run(report, header, "wait", "wait for")
    frame = Frame(
        command="wait",
        console=console,
        report=str(report),
        closing=settings.closing,
        create_report=str(report),
        tally=Tally(manifest_rows=header.rows),
        advice="run wait again to go on",
    )
    async with frame:
        # The run's lock: no create --resume, cleanup, rollback or other wait of the run meanwhile.
        frame.lock(run_locks(header.run_id, settings.lock_file))
        router = await frame.connect(settings.connection, settings.policy)
        writer = frame.open_report(None, resume=True)
        frame.run_id = header.run_id  # for the notifications
        waiter = Waiter(
            settings.plan, router=router, writer=writer, tally=frame.tally, on_round=console.wait_round
        )
        waiter.load(final_records(report))
        async with anyio.create_task_group() as group:
            group.start_soon(cancel_on_signal, group.cancel_scope, frame.signals)
            await _sweep_then_wait(settings, header, router, writer, waiter, frame.tally, console)
            group.cancel_scope.cancel()
    return frame.exit_code


async def _sweep_then_wait(
    settings: WaitSettings,
    header: RunHeader | None,
    router: Router,
    writer: ReportWriter,
    waiter: Waiter,
    tally: Tally,
    console: Console,
) -> None:
    """The sweep (when the report names its run and something is in doubt: a row still waited for, or
    one the journal shows sent twice or failed after its send, or a report without a journal), then
    the polls, each counted as a phase."""

    started = time.monotonic()
    book = ResumeBook.load(settings.report) if header is not None and not waiter.waiting else None
    if header is not None and (waiter.waiting or (book is not None and book.doubted)):
        policy, patience = sweep_policy(settings.policy), settings.plan.interval * 4
        servers = None
        if header.shape.get("consistency") == "server":  # a second group of a server goes whole
            servers = await servers_of_run(
                router, final_records(settings.report), run_id=header.run_id, policy=policy
            )
        what = "snapshots" if servers is None else "snapshot groups"
        found = await sweep_run(
            router,
            servers,
            run_id=header.run_id,
            report=settings.report,
            writer=writer,
            tally=tally,
            policy=policy,
            keep_duplicates=settings.keep_duplicates,
            patience=patience,
        )
        if found.found:
            console.warn(f"sweep: {found.found} extra {what} of this run found, {found.removed} deleted")
        tally.phase("sweep", time.monotonic() - started, router.counts())
        started = time.monotonic()
    console.event("waiting", f"waiting for {waiter.waiting} snapshots", pending=waiter.waiting)
    try:
        await waiter.run()
    finally:
        tally.phase("wait", time.monotonic() - started, router.counts())


@click.command("wait")
@click.argument("report", type=click.Path(path_type=Path, dir_okay=True))
@options.CONNECTION
@options.WAITING
@options.RETRIES
@click.option(
    "--keep-duplicates", is_flag=True, help="Report, but do not delete, extra snapshots of the report's run."
)
@click.option(
    "--lock-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Another lock held while waiting; a second holder exits 75 (the run's own lock, in the per-user "
    "lock directory, is always held).",
)
@options.CLOSING
@options.LOG_FORMAT
@options.DEBUG
def command(
    *,
    report: Path,
    connection: Connection,
    wait_plan: WaitPlan,
    policy: RetryPolicy,
    keep_duplicates: bool,
    lock_file: Path | None,
    closing: Closing,
    log_format: str,
) -> NoReturn:
    """Poll the snapshots a report accepted until each is available or error; append their final states."""

    console = Console(sys.stderr, json=log_format == "json")
    settings = WaitSettings(
        report=report,
        connection=connection,
        plan=wait_plan,
        closing=closing,
        policy=policy,
        lock_file=lock_file,
        keep_duplicates=keep_duplicates,
    )
    raise SystemExit(run(lambda: wait(settings, console=console), console=console))
