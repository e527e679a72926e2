"""A rollback run's rows (``rollback``): the rows chosen from the create report (``chosen_rows``; rows
rolled back by an earlier rollback report are not rolled back again without ``--again``), a fixed
pool of workers that checks and sends each row's rollback (``restore``) while the
``rollback_watch.Watcher`` watches those under way, one record per row as it ends, then the
summary's notes and the exit code.

A row not reached when the run stops (a signal, a route closed) gets no record, so ``--resume``
takes it up; so does a row stopped before its rollback was sent (``restore.RowStopped``).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from anyio.abc import ObjectReceiveStream

from orchestrator.actions import Action, ActionRecord, now_iso
from orchestrator.createrun import check_create_run
from orchestrator.errors import ProjectLookupFailed, RouteClosed, UsageError
from orchestrator.models import Record
from orchestrator.report import Outcomes, check_report_path, epoch, final_records, read_header, writes_to
from orchestrator.restore import (
    Finding,
    RestorePlan,
    RowStopped,
    Sent,
    Watch,
    earlier_rollbacks,
    plan_row,
    start_row,
    unusable,
)
from orchestrator.rollback_watch import Watcher
from orchestrator.tally import first_without_record

if TYPE_CHECKING:
    from orchestrator import options
    from orchestrator.api.routes import Route, Router
    from orchestrator.config import Connection, WaitPlan
    from orchestrator.console import Console
    from orchestrator.frame import Closing, Frame
    from orchestrator.retry import RetryPolicy


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class RollbackSettings:
    source: Path  # the create report
    report: str  # this run's report, or "-"
    connection: Connection
    policy: RetryPolicy
    wait: WaitPlan
    settle: float
    apply: bool = False
    resume: bool = False
    rows: options.RowRanges | None = None  # --rows
    volumes: frozenset[str] | None = None
    lock_file: Path | None = None
    again: bool = False  # roll back rows that an earlier rollback report shows rolled back
    retry_failed: bool = False  # send again for rows last recorded rollback_failed (error_rollbacking)
    closing: Closing | None = None  # its notifications (--ping-url, --webhook)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Chosen:
    """The rows a rollback acts on, and how many rows of the create run have no record at all."""

    run_id: str
    rows: list[Record]
    total: int  # the create run's rows, as its header says (0: no header)
    unrecorded: int  # rows of the header without a record (counted when every row is chosen)
    first_unrecorded: list[int]


def chosen_rows(settings: RollbackSettings) -> Chosen:
    """The create run's id, the last record of each chosen row in row order, and the rows of the run
    that have no record (exit 2 when the report is unusable)."""

    path = settings.source
    check_report_path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such report")
    if writes_to(settings.report, path):
        raise UsageError("--report must not be the create report: rollback writes a report of its own")
    header = read_header(path)
    if header is not None:
        check_create_run(path, header, "rollback", "roll back")
    run_id = None if header is None else header.run_id
    if settings.rows is not None and header is not None and settings.rows.last > header.rows:
        raise UsageError(
            f"--rows {settings.rows}: row {settings.rows.last} is beyond the {header.rows} rows of the run "
            f"in {path}; nothing was sent"
        )
    rows, seen_rows, seen_volumes = [], set(), set()
    for record in final_records(path):
        run_id = run_id or record.run_id
        volume = (record.volume_id or "").lower()
        seen_rows.add(record.row)
        seen_volumes.add(volume)
        if settings.rows is not None and record.row not in settings.rows:
            continue
        if settings.volumes is not None and volume not in settings.volumes:
            continue
        rows.append(record)
    if run_id is None or not seen_rows:
        raise UsageError(f"{path} holds no records of a create run; nothing to roll back")
    absent = [] if settings.rows is None else settings.rows.absent(seen_rows, limit=10)
    if absent:
        missing = ", ".join(str(row) for row in absent)
        raise UsageError(f"--rows: {path} has no record of row {missing}; nothing was sent")
    total = 0 if header is None else header.rows
    unrecorded = total - sum(1 for row in seen_rows if isinstance(row, int) and 1 <= row <= total)
    if settings.volumes is not None and settings.volumes - seen_volumes:
        missing = ", ".join(sorted(settings.volumes - seen_volumes)[:10])
        gap = f" ({unrecorded} of {total} rows of the create run have no record)" if unrecorded else ""
        raise UsageError(f"--volume: no row of {path} is disk {missing}{gap}; nothing was sent")
    if not rows:
        raise UsageError("--rows and --volume together choose no row; nothing was sent")
    every = settings.rows is None and settings.volumes is None
    return Chosen(
        run_id=run_id,
        rows=sorted(rows, key=lambda record: record.row),
        total=total,
        unrecorded=unrecorded if every else 0,
        first_unrecorded=first_without_record(total, seen_rows.__contains__) if every else [],
    )


def retried_rows(last: Outcomes[str, Action], rows: list[Record]) -> frozenset[int]:
    """The chosen rows whose last record in the report being resumed is ``rollback_failed``: with
    ``--retry-failed``, their disks may be rolled back from ``error_rollbacking``."""
    return frozenset(row.row for row in rows if last.get(f"row:{row.row}") is Action.ROLLBACK_FAILED)


def sent_rows(sent: dict[str, ActionRecord], *, window: float) -> dict[int, Sent]:
    """The rollback report's sends in doubt (``Frame.sent``, by key ``row:N``), by row: the disk's
    updated_at before each, and until when (this process's anyio clock) the request may still arrive:
    ``window`` (``--timeout`` + ``--settle``, a resumed create row's window) after its ``sending``
    line's ``finished_at`` (an unreadable stamp counts as now: the longest wait, ``report.epoch``)."""
    offset = anyio.current_time() - time.time()  # wall clock -> the clock the rollback's waits use
    return {
        int(key[4:]): Sent(line.disk_updated_at, quiet=epoch(line.finished_at) + offset + window)
        for key, line in sent.items()
        if key.startswith("row:")
    }


def rolled_back_before(settings: RollbackSettings, chosen: Chosen, console: Console) -> bool:
    """True when an earlier rollback report of this create run rolled back chosen rows (not asked on
    ``--resume``): ``--apply`` without ``--again`` is refused then (exit 2); a plan warns."""

    if settings.resume:
        return False
    this = None if settings.report == "-" else Path(settings.report)
    places = [settings.source.parent, Path("reports"), *([] if this is None else [this.parent])]
    wanted = {record.row for record in chosen.rows}
    found = {
        report: len(rows & wanted)
        for report, rows in earlier_rollbacks(chosen.run_id, places, skip=this).items()
        if rows & wanted
    }
    if not found:
        return False
    where = "; ".join(f"{count} of its rows by {report}" for report, count in sorted(found.items()))
    told = (
        f"run {chosen.run_id} was rolled back before ({where}): rolling back again restores the "
        "snapshots' data once more and loses what was written to those disks since"
    )
    if settings.apply and not settings.again:
        raise UsageError(f"{told}; pass --again to do it; nothing was sent")
    console.warn(f"{told}; " + ("--again: rolling back again" if settings.again else "--apply needs --again"))
    return not settings.again


@dataclasses.dataclass(eq=False, repr=False)
class Restored:
    """What ``restore_all`` has ended so far: the last outcome (and code) of each row, and how many
    rows an earlier run of the report had finished. The caller holds it, so that it stays whole when a
    drain's grace runs out and cancels the rollbacks still watched."""

    finals: dict[int, tuple[Action, str | None]] = dataclasses.field(default_factory=dict)
    skipped: int = 0
    under_way: int = 0  # rollbacks sent and not ended when it stopped: no record, --resume looks again


async def restore_all(
    action: Frame, router: Router, rows: list[Record], plan: RestorePlan, *, apply: bool, into: Restored
) -> None:
    """Every chosen row through a fixed pool of workers that check and send; the rollbacks under way
    are watched meanwhile, together (``rollback_watch.Watcher``), and each row is recorded as it ends,
    and noted ``into``."""

    finals = into.finals
    begun: dict[int, tuple[str | None, str, float]] = {}  # row -> project, started_at, monotonic start

    def stopped() -> bool:
        return action.stopping() or bool(router.closures())

    def ended(row: Record, finding: Finding) -> None:
        record = record_of(action, row, finding, plan, *begun.pop(row.row))
        action.write(record)
        finals[row.row] = (record.outcome, record.error_code)

    source = plan.source_run
    plan = dataclasses.replace(
        plan, sending=lambda row, at: action.journal(sending(action.run_id, source, row, at))
    )
    watcher = Watcher(plan, concurrency=router.limits.concurrency, done=ended)

    async def worker(stream: ObjectReceiveStream[Record]) -> None:
        async with stream:
            async for row in stream:
                if stopped():
                    continue  # not reached: no record, so --resume takes it up
                started, clock = now_iso(), time.monotonic()
                try:
                    project, found = await _one(router, row, plan, apply=apply)
                except RowStopped:
                    continue  # stopped before its rollback was sent: no record, --resume takes it up
                begun[row.row] = (project, started, clock)
                if isinstance(found, tuple):
                    watcher.add(*found)
                else:
                    ended(row, found)

    workers = min(len(rows), router.limits.concurrency)
    send, receive = anyio.create_memory_object_stream[Record](workers)
    try:
        async with anyio.create_task_group() as outer:
            outer.start_soon(watcher.run)
            try:
                async with anyio.create_task_group() as group:
                    async with receive:
                        for _ in range(workers):
                            group.start_soon(worker, receive.clone())
                    async with send:
                        for row in rows:
                            key = f"row:{row.row}"
                            if action.book.finished(key):
                                finals[row.row] = (action.book.last[key], None)
                                into.skipped += 1
                                continue
                            if stopped():
                                break
                            await send.send(row)
            finally:
                watcher.close()
    finally:  # the watching ended, or a drain's grace cut it short: what was sent and never ended
        into.under_way = len(begun)


async def _one(
    router: Router, row: Record, plan: RestorePlan, *, apply: bool
) -> tuple[str | None, Finding | tuple[Route, Record, Watch]]:
    """The row's project and either its finding or (applying) the rollback under way, to be watched."""

    project = row.project_id
    finding: Finding | None = unusable(row)
    if finding is not None:
        return project, finding if apply else dataclasses.replace(finding, outcome=Action.PLANNED)
    try:
        route = await router.route_for(row.project_id, row.region)
        project = route.project_id
        if not apply:
            return project, await plan_row(route, row, plan)
        found = await start_row(route, row, plan)
    except (RouteClosed, ProjectLookupFailed) as exc:
        return project, Finding(outcome=Action.FAILED, code=exc.code, message=exc.message)
    return project, found if isinstance(found, Finding) else (route, row, found)


def sending(run_id: str, source_run: str, row: Record, updated: str | None) -> ActionRecord:
    """The ``sending`` line written before a row's rollback leaves: the disk's updated_at as looked at."""
    now = now_iso()
    return ActionRecord(
        run_id=run_id,
        command="rollback",
        key=f"row:{row.row}",
        outcome=Action.SENDING,
        row=row.row,
        volume_id=row.volume_id,
        project_id=row.project_id,
        region=row.region,
        snapshot_id=row.snapshot_id,
        source_run=source_run,
        started_at=now,
        finished_at=now,
        disk_updated_at=updated,
    )


def record_of(
    action: Frame,
    row: Record,
    finding: Finding,
    plan: RestorePlan,
    project: str | None,
    started: str,
    clock: float,
) -> ActionRecord:

    snapshot = finding.snapshot
    return ActionRecord(
        run_id=action.run_id,
        command="rollback",
        key=f"row:{row.row}",
        outcome=finding.outcome,
        row=row.row,
        volume_id=row.volume_id,
        project_id=project,
        region=row.region,
        snapshot_id=row.snapshot_id,
        snapshot_name=None if snapshot is None else snapshot.name,
        created_at=None if snapshot is None else snapshot.created_at,
        source_run=plan.source_run,
        http_status=finding.http_status,
        error_code=finding.code,
        error_message=finding.message,
        request_id=finding.request_id,
        attempts=finding.attempts,
        started_at=started,
        finished_at=now_iso(),
        elapsed_ms=round((time.monotonic() - clock) * 1000),
    )


def notes(
    action: Frame,
    restored: Restored,
    *,
    apply: bool,
    chosen: Chosen,
    before: bool,
) -> None:
    """Summary lines: rows without a record, blockers found while planning, rollbacks still under way
    when the run stopped, rows skipped on resume (the tally's own line gives the requests by kind).
    Each row's blocker is counted once, by the tally, as its record is written."""

    tally = action.tally
    finals = restored.finals
    if chosen.unrecorded:
        shown = ", ".join(map(str, chosen.first_unrecorded))
        more = "" if chosen.unrecorded <= len(chosen.first_unrecorded) else ", ..."
        tally.notes.append(
            f"{chosen.unrecorded} of {chosen.total} rows have no record (rows {shown}{more}): the create "
            "run stopped before it knew their snapshots (one may exist), so they are not rolled back; "
            "before the maintenance, `create --resume` of the create report finishes them"
        )
        tally.failing += chosen.unrecorded  # the summary's exit code is the command's
    if not apply:
        planned = [code for outcome, code in finals.values() if outcome is Action.PLANNED]
        blockers = sum(1 for code in planned if code)
        tally.notes.append(
            f"plan only, nothing was sent: {len(planned) - blockers} of {len(planned) + chosen.unrecorded} "
            "rows can be rolled back"
            + (f", {blockers} {_have(blockers)} a blocker" if blockers else "")
            + (f", {chosen.unrecorded} {_have(chosen.unrecorded)} no record" if chosen.unrecorded else "")
            + "; --apply rolls back"
        )
    if before:
        tally.notes.append("rolled back before: --apply needs --again (see the warning above)")
        tally.failing += 1
    if restored.under_way:
        tally.notes.append(
            f"{restored.under_way} rollbacks sent were still under way when the run stopped: they have no "
            "record; --resume looks at them again before acting"
        )
    if restored.skipped:
        tally.notes.append(
            f"{restored.skipped} rows were finished by an earlier run of this report (skipped)"
        )


def exit_code(finals: dict[int, tuple[Action, str | None]], *, apply: bool) -> int:

    if apply:
        return 0 if all(outcome is Action.ROLLED_BACK for outcome, _ in finals.values()) else 1
    good = {Action.PLANNED, Action.ROLLED_BACK}
    return 0 if all(outcome in good and not code for outcome, code in finals.values()) else 1


def _have(count: int) -> str:
    """The verb after a count of rows: "1 has", "2 have"."""
    return "has" if count == 1 else "have"
