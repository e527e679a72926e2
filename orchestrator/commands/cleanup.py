"""``evs-snapshot cleanup REPORT``: delete the snapshots one ``create`` run made.

The search and the pass are ``orchestrator.cleanup_pass``'s (which snapshots are the run's, and how it
finds those no record names). The report: rows without a record are counted against the header's
``rows`` and named in the summary; a torn last line (a writer killed mid-line) is named ``file:line``
and skipped; a file that holds two run headers, or records of two runs (two reports joined), is
refused by the report reader (exit 2, naming both run ids).

The exit: 0 only when nothing of the run is left: every snapshot of the run that was found ended
``deleted`` (with ``--apply``, after the wait for it to be gone; ``--no-wait`` counts the accepted
DELETE) or, in a plan, ``planned``. A snapshot still ``creating`` (``blocked``), a held one without
``--include-held`` (``blocked``, ``HELD``), a deletion that failed, or a marked snapshot refused,
makes it 1.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from orchestrator import options
from orchestrator.cleanup_pass import CleanupSettings, Pass, Search, until_quiet
from orchestrator.config import check_project_id
from orchestrator.console import Console
from orchestrator.createrun import run_of
from orchestrator.entry import run
from orchestrator.errors import UsageError
from orchestrator.frame import Frame, default_report
from orchestrator.lock import run_locks
from orchestrator.report import writes_to

if TYPE_CHECKING:
    from orchestrator.cleanup_pass import CleanupSettings
    from orchestrator.config import Connection
    from orchestrator.console import Console
    from orchestrator.frame import Closing
    from orchestrator.retry import RetryPolicy


async def cleanup(settings: CleanupSettings, *, console: Console) -> int:
    """Plan (and with ``--apply``, carry out) the deletion of one create run's snapshots."""

    run_ = run_of(settings.source, console.warn)
    search = Search.of(settings, run_)
    if search.anywhere is not None:
        console.warn(search.anywhere)
    shape = {"create_report": str(settings.source), "create_run": run_.run_id}
    frame = Frame(
        command="cleanup",
        console=console,
        report=settings.report,
        closing=settings.closing,
        create_report=str(settings.source),
    )
    async with frame:
        # The create run's lock, before anything is sent: no create, wait or rollback of the run meanwhile.
        frame.lock(run_locks(run_.run_id, settings.lock_file))
        frame.open_actions(
            source=str(settings.source),
            shape=shape,
            resume=settings.resume,
            apply=settings.apply,
            nothing="nothing was deleted",
            connection=settings.connection,
        )
        router = await frame.connect(settings.connection, settings.policy)
        # Only a run that may go on waits: a refused report or credentials exit 2 before, at once.
        unsettled = await until_quiet(settings, run_, console)
        left = await Pass(settings, frame, run_.run_id).run(router, run_, search)
        frame.tally.notes += search.notes(run_.run_id)
        if unsettled:
            frame.tally.notes.append(unsettled)
        if left:
            still = "are still there" if settings.apply else "would be left by this plan"
            why = (  # a signal's drain: the run's exit is 130/143, and --resume goes on
                "(not reached: the run was stopped; --resume finishes it)"
                if frame.stopping()
                else "(blocked, refused or failed: see the records); exit 1"
            )
            frame.tally.notes.append(
                f"{left} snapshot{'s' if left > 1 else ''} of run {run_.run_id} {still} {why}"
            )
        if left or unsettled:
            frame.at_least = 1
        missing, _ = run_.unrecorded()
        frame.summary.update(rows_without_record=missing, snapshots_left=left)
    return frame.exit_code


@click.command("cleanup")
@click.argument("source", metavar="REPORT", type=click.Path(path_type=Path, dir_okay=True))
@options.DELETING
@click.option(
    "--include-held",
    is_flag=True,
    help="Delete the run's held snapshots too (evs_snapshot_hold set); without it they are blocked (HELD).",
)
@options.PROJECT_OF_ROWS
@options.CONNECTION
@options.RETRIES
@options.CLOSING
@options.LOG_FORMAT
@options.DEBUG
def command(
    *,
    source: Path,
    project_id: str | None,
    apply: bool,
    wait_for_gone: bool,
    wait_timeout: float,
    report_path: str | None,
    resume: bool,
    lock_file: Path | None,
    include_held: bool,
    connection: Connection,
    policy: RetryPolicy,
    closing: Closing,
    log_format: str,
) -> NoReturn:
    """Delete the snapshots one create run made, each after checking its marker (plans unless --apply)."""

    report = default_report("cleanup", report_path)
    if writes_to(report, source):
        raise UsageError("cleanup writes its own report: give a --report other than the create report")

    console = Console(sys.stderr, json=log_format == "json")
    settings = CleanupSettings(
        source=source.resolve(),
        project_id=check_project_id(project_id, option="--project-id"),
        apply=apply,
        wait_timeout=wait_timeout if wait_for_gone else None,
        connection=connection,
        policy=policy,
        report=report,
        resume=resume,
        lock_file=lock_file,
        closing=closing,
        include_held=include_held,
    )
    raise SystemExit(run(lambda: cleanup(settings, console=console), console=console))
