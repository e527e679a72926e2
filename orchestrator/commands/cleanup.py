"""``evs-snapshot cleanup REPORT``: delete the snapshots one ``create`` run made.

The search and the pass are ``orchestrator.cleanup_pass``'s (which snapshots are the run's, and how it
finds those no record names). The report: rows without a record are counted against the header's
``rows`` and named in the summary; a torn last line (a writer killed mid-line) is named ``file:line``
and skipped; a file that holds two run headers, or records of two runs (two reports joined), is
refused by the report reader (exit 2, naming both run ids).

The exit: 0 only when nothing of the run is left: every snapshot of the run that was found ended
``deleted`` (with ``--apply``, after the wait for it to be gone; ``--no-wait`` counts the accepted
DELETE) or, in a plan, ``planned``. A snapshot still ``creating`` (``blocked``), a deletion that
failed, or a marked snapshot refused, makes it 1.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from orchestrator import options
from orchestrator.entry import run

if TYPE_CHECKING:
    from orchestrator.actions import ActionRun
    from orchestrator.cleanup_pass import CleanupSettings
    from orchestrator.config import Connection
    from orchestrator.console import Console
    from orchestrator.finish import Closing
    from orchestrator.retry import RetryPolicy


async def cleanup(settings: CleanupSettings, *, console: Console) -> int:
    """Plan (and with ``--apply``, carry out) the deletion of one create run's snapshots."""
    from orchestrator.actions import action_run  # noqa: PLC0415
    from orchestrator.api.routes import connect  # noqa: PLC0415
    from orchestrator.cleanup_pass import Pass, Search, until_quiet  # noqa: PLC0415
    from orchestrator.createrun import run_of  # noqa: PLC0415
    from orchestrator.lock import holding, run_locks  # noqa: PLC0415

    run_ = run_of(settings.source, console.warn)
    search = Search.of(settings, run_)
    if search.anywhere is not None:
        console.warn(search.anywhere)
    shape = {"create_report": str(settings.source), "create_run": run_.run_id}
    # The create run's lock, before anything is sent: no create, wait or rollback of the run meanwhile.
    locks = run_locks(run_.run_id, settings.lock_file)
    with holding(locks, "cleanup"), recording_aborts(settings.closing, "cleanup", console):
        unsettled = await until_quiet(settings, run_, console)
        async with contextlib.AsyncExitStack() as stack:
            router = await connect(stack, settings.connection)
            async with action_run(
                command="cleanup",
                report=settings.report,
                source=str(settings.source),
                shape=shape,
                resume=settings.resume,
                console=console,
                nothing="nothing was deleted",
            ) as action:
                left = await Pass(settings, action, run_.run_id).run(router, run_, search)
                action.tally.notes += search.notes(run_.run_id)
                if unsettled:
                    action.tally.notes.append(unsettled)
                if left:
                    still = "are still there" if settings.apply else "would be left by this plan"
                    action.tally.notes.append(
                        f"{left} snapshot{'s' if left > 1 else ''} of run {run_.run_id} {still} "
                        "(blocked, refused or failed: see the records); exit 1"
                    )
            closures = router.closures()
    for closure in closures:
        console.error(closure.message, code=closure.code)
    code = 3 if closures else max(action.tally.exit_code, 1 if left or unsettled else 0)
    missing, _ = run_.unrecorded()
    action_side_files(
        settings.closing, "cleanup", action, code, console, rows_without_record=missing, snapshots_left=left
    )
    return code


@contextlib.contextmanager
def recording_aborts(closing: Closing, command: str, console: Console) -> Iterator[None]:
    """A run stopped with exit 3 (a listing failed or was refused) still writes exit code 3 to the side
    files, so an alert on ``evs_snapshot_exit_code`` fires."""
    from orchestrator.errors import RunAborted  # noqa: PLC0415
    from orchestrator.retention import write_side_files  # noqa: PLC0415

    try:
        yield
    except* RunAborted as group:
        summary = {"command": command, "exit_code": 3, "error": str(group.exceptions[0])}
        write_side_files(closing, command=command, summary=summary, families=[], exit_code=3, console=console)
        raise


def action_side_files(
    closing: Closing,
    command: str,
    action: ActionRun,
    code: int,
    console: Console,
    *,
    kept: int = 0,
    **extra: Any,
) -> None:
    """The summary JSON and the metrics of prune and cleanup: snapshots by outcome (and kept)."""
    from collections import Counter  # noqa: PLC0415

    from orchestrator.metrics import PREFIX  # noqa: PLC0415
    from orchestrator.retention import write_side_files  # noqa: PLC0415

    label = f'command="{command}"'
    outcomes = action.tally.outcomes + Counter(kept=kept)
    samples = [f'{PREFIX}_snapshots{{{label},outcome="{o}"}} {n}' for o, n in sorted(outcomes.items())]
    write_side_files(
        closing,
        command=command,
        summary={"command": command, **action.tally.to_dict(), "exit_code": code, **extra},
        families=[(f"{PREFIX}_snapshots", "Snapshots the last run acted on (or kept), by outcome.", samples)],
        exit_code=code,
        console=console,
    )


def default_report(command: str, path: str | None) -> str:
    from orchestrator.models import utc_now  # noqa: PLC0415

    return path or f"reports/evs-snapshot-{command}-{utc_now():%Y%m%dT%H%M%SZ}.jsonl"


DELETING_OPTIONS = options.apply(
    click.option("--apply", is_flag=True, help="Delete for real; without it, write planned records only."),
    click.option(
        "--wait/--no-wait",
        "wait_for_gone",
        default=True,
        show_default=True,
        help="Wait until each deleted snapshot is gone (deleting, then 404); --no-wait ends at the 202.",
    ),
    click.option(
        "--wait-timeout",
        type=options.Duration(),
        default="10m",
        show_default=True,
        help="How long to wait for deletions to finish (90s, 15m, 2h).",
    ),
    click.option(
        "--report",
        "report_path",
        default=None,
        help="Report path, or - for standard output.  "
        "[default: reports/evs-snapshot-COMMAND-{datetime}.jsonl]",
    ),
    click.option(
        "--resume", is_flag=True, help="Continue the run in --report: finished snapshots are skipped."
    ),
    options.LOCK_FILE,
)


@click.command("cleanup")
@click.argument("source", metavar="REPORT", type=click.Path(path_type=Path, dir_okay=True))
@DELETING_OPTIONS
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
    connection: Connection,
    policy: RetryPolicy,
    closing: Closing,
    log_format: str,
) -> NoReturn:
    """Delete the snapshots one create run made, each after checking its marker (plans unless --apply)."""
    from orchestrator.console import Console  # noqa: PLC0415
    from orchestrator.errors import UsageError  # noqa: PLC0415

    report = default_report("cleanup", report_path)
    if report != "-" and Path(report).resolve() == source.resolve():
        raise UsageError("cleanup writes its own report: give a --report other than the create report")
    from orchestrator.cleanup_pass import CleanupSettings  # noqa: PLC0415
    from orchestrator.config import check_project_id  # noqa: PLC0415

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
    )
    raise SystemExit(run(lambda: cleanup(settings, console=console), console=console))
