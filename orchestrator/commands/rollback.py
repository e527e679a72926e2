"""``evs-snapshot rollback REPORT``: restore each row's disk from the snapshot that create run made.

REPORT is a ``create`` report. Without ``--apply`` every chosen row gets one ``planned`` record naming
its blocker, if any, and nothing is sent; with ``--apply`` each row is checked, rolled back and
waited for (``orchestrator.restore`` holds the rules). ``--rows 3,7-9`` and ``--volume ID`` choose a
subset. The run has its own report (one record per row, key ``row:N``), the create run's lock,
and ``--resume`` (rows already rolled back or refused are skipped; the others are looked at again,
their disks first).

Go/no-go is counted against the create report's header: rows of the create run without a record
(an interrupted create) have no snapshot the report names, so they cannot be rolled back; they are
counted and named, and the exit is 1. A run that a rollback report found beside this one (or beside
the create report, or in ``reports/``) already rolled back is not rolled back again without
``--again`` (see ``orchestrator.restore.earlier_rollbacks``). A row whose last record in the report
``--resume`` continues is ``rollback_failed`` (its disk left ``error_rollbacking``) stays blocked;
``--retry-failed`` sends its rollback again (the API allows a rollback from that state).

Exit codes: 0 when every row of the create run was rolled back (or, when planning, has no blocker);
1 when a row is blocked, refused, rejected, failed, ``rollback_failed`` or has no record (or, when
planning, has a blocker, or was rolled back before and ``--again`` is not given); 2 usage (also: a
report of a ``--dry-run`` or of ``--emulator``, and ``--apply`` of rows rolled back before without
``--again``); 3 credentials, project or endpoint refused (rows not reached have no record:
``--resume``); 75 lock held; 130/143 signals.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from orchestrator import defaults, options
from orchestrator.console import Console
from orchestrator.entry import run
from orchestrator.errors import ResumeMismatch
from orchestrator.frame import Frame
from orchestrator.lock import run_locks
from orchestrator.models import utc_now
from orchestrator.report import read_header
from orchestrator.restore import RestorePlan
from orchestrator.rollback_run import (
    Restored,
    RollbackSettings,
    chosen_rows,
    exit_code,
    notes,
    restore_all,
    retried_rows,
    rolled_back_before,
    sent_rows,
)
from orchestrator.tally import Counting, Tally

ROLLBACK_GRACE = 60.0  # a rollback sent is watched to its end: the disk is unusable while it runs

if TYPE_CHECKING:
    from collections.abc import Callable

    from orchestrator.config import Connection, WaitPlan
    from orchestrator.console import Console
    from orchestrator.frame import Closing
    from orchestrator.retry import RetryPolicy
    from orchestrator.rollback_run import RollbackSettings


async def rollback(settings: RollbackSettings, *, console: Console) -> int:
    """Plan or apply the rollback of the chosen rows; returns the exit code (see the module docstring)."""

    chosen = chosen_rows(settings)
    source_run, rows = chosen.run_id, chosen.rows
    stopping: list[Callable[[], bool]] = []
    frame = Frame(
        command="rollback",
        console=console,
        report=settings.report,
        closing=settings.closing,
        create_report=str(settings.source),
        tally=Tally(counting=Counting.of_command("rollback")),
        grace=ROLLBACK_GRACE,
        drain=f"sending no more rollbacks; those already sent are watched to their end for up to "
        f"{ROLLBACK_GRACE:g}s (longer than other commands' 10s: a disk must not be left mid-rollback "
        "without a record)",
    )
    async with frame:
        frame.lock(run_locks(source_run, settings.lock_file))
        # Read the reports only under the lock: a run under way is "another run holds it" (75), not its
        # report's rollbacks "rolled back before" (2).
        shape = {"source_report": str(settings.source.resolve()), "source_run": source_run}
        shape |= _check_resume(settings, source_run)
        before = rolled_back_before(settings, chosen, console)
        frame.open_actions(
            source=str(settings.source),
            shape=shape,
            resume=settings.resume,
            apply=settings.apply,
            nothing="nothing was done",
            connection=settings.connection,
        )
        stopping.append(frame.stopping)
        plan = RestorePlan(
            source_run=source_run,
            policy=settings.policy,
            settle=settings.settle,
            wait=settings.wait,
            stopping=lambda: any(stop() for stop in stopping),
            retry=retried_rows(frame.book.last, rows) if settings.retry_failed else frozenset(),
            sent=sent_rows(frame.sent, window=settings.connection.limits.timeout + settings.settle),
        )
        router = await frame.connect(settings.connection, settings.policy)
        restored = Restored()  # kept whole when the drain's grace runs out and cuts the watching short
        with frame.draining() if settings.apply else contextlib.nullcontext():  # a plan stops at once
            await restore_all(frame, router, rows, plan, apply=settings.apply, into=restored)
        notes(frame, restored, apply=settings.apply, chosen=chosen, before=before)
        frame.at_least = (
            1 if chosen.unrecorded or before else exit_code(restored.finals, apply=settings.apply)
        )
    return frame.exit_code


def _check_resume(settings: RollbackSettings, source_run: str) -> dict[str, str]:
    """The rows (``--rows``) and disks (``--volume``) the report's run chose, as its header records them
    (a new report: this run's choice). A --resume may choose fewer, never more: it would roll back disks
    the run was told to leave alone (exit 2, nothing sent). A report written before the choice was
    recorded has neither key, and is not judged by it."""
    chosen = {} if settings.rows is None else {"rows": str(settings.rows)}
    chosen |= {"volumes": ",".join(sorted(settings.volumes))} if settings.volumes else {}
    path = Path(settings.report)
    if not settings.resume or settings.report == "-" or not path.is_file():
        return chosen
    header = read_header(path)
    if header is None:
        return chosen
    if header.shape.get("source_run") not in (None, source_run):
        raise ResumeMismatch(
            f"--resume: {path} rolls back run {header.shape.get('source_run')}, not run {source_run} "
            f"of {settings.source}; nothing was sent"
        )
    recorded = {key: header.shape[key] for key in ("rows", "volumes") if key in header.shape}
    wider = None
    rows = options.RowRanges.parse(recorded["rows"]) if "rows" in recorded else None
    if rows is not None and (settings.rows is None or not settings.rows.within(rows)):
        wider = f"--rows {recorded['rows']}"
    elif "volumes" in recorded and not (settings.volumes or {""}) <= set(recorded["volumes"].split(",")):
        wider = "--volume " + " --volume ".join(recorded["volumes"].split(","))
    if wider is not None:
        raise ResumeMismatch(
            f"--resume: {path}'s run chose {wider}, and this one chooses rows outside it; resume with "
            "those rows (or fewer), or roll the others back in a new report; nothing was sent"
        )
    return recorded


@click.command("rollback")
@click.argument("source", metavar="REPORT", type=click.Path(path_type=Path, dir_okay=True))
@click.option("--apply", "apply_changes", is_flag=True, help="Roll back (default: plan only, send nothing).")
@click.option(
    "--rows",
    "row_spec",
    callback=options.row_ranges,
    default=None,
    metavar="ROWS",
    help="Only these rows: 3,7-9 (from 1, ranges with both ends, up to the run's rows).",
)
@click.option(
    "--volume", "volume_ids", multiple=True, metavar="ID", help="Only the rows of this disk (repeatable)."
)
@click.option(
    "--report",
    "report_path",
    default=None,
    help="This run's report, or - for standard output.  "
    "[default: reports/evs-snapshot-rollback-{datetime}.jsonl]",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the rollback recorded in --report: skip rows rolled back or refused, look at the "
    "others' disks before sending anything again.",
)
@click.option(
    "--again",
    is_flag=True,
    help="Roll back rows that an earlier rollback report of the same create run shows rolled back "
    "(found beside --report, beside REPORT and in reports/).",
)
@click.option(
    "--retry-failed",
    is_flag=True,
    help="With --resume: send the rollback again for rows whose last record is rollback_failed and whose "
    "disk is error_rollbacking (without it those rows stay blocked).",
)
@options.CONNECTION
@options.RETRIES
@options.WAITING
@click.option(
    "--settle",
    type=options.Duration(),
    default=f"{defaults.SETTLE:g}s",
    show_default=True,
    help="How long a disk is watched after an answer that may have been lost, before the rollback may "
    "be sent again.",
)
@options.LOCK_FILE
@options.CLOSING
@options.LOG_FORMAT
@options.DEBUG
def command(
    *,
    source: Path,
    apply_changes: bool,
    row_spec: options.RowRanges | None,
    volume_ids: tuple[str, ...],
    report_path: str | None,
    resume: bool,
    again: bool,
    retry_failed: bool,
    connection: Connection,
    policy: RetryPolicy,
    wait_plan: WaitPlan,
    settle: float,
    lock_file: Path | None,
    closing: Closing,
    log_format: str,
) -> NoReturn:
    """Restore each row's disk from the snapshot the create run in REPORT made; plans unless --apply."""

    console = Console(sys.stderr, json=log_format == "json")
    settings = RollbackSettings(
        source=source,
        report=report_path or f"reports/evs-snapshot-rollback-{utc_now():%Y%m%dT%H%M%SZ}.jsonl",
        connection=connection,
        policy=policy,
        wait=wait_plan,
        settle=settle,
        apply=apply_changes,
        resume=resume,
        rows=row_spec,
        volumes=frozenset(volume.strip().lower() for volume in volume_ids) or None,
        lock_file=lock_file,
        again=again,
        retry_failed=retry_failed,
        closing=closing,
    )
    raise SystemExit(run(lambda: rollback(settings, console=console), console=console))
