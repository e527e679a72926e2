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
``--again`` (see ``orchestrator.restore.earlier_rollbacks``).

Exit codes: 0 when every row of the create run was rolled back (or, when planning, has no blocker);
1 when a row is blocked, refused, rejected, failed, ``rollback_failed`` or has no record (or, when
planning, has a blocker, or was rolled back before and ``--again`` is not given); 2 usage (also: a
report of a ``--dry-run`` or of ``--emulator``, and ``--apply`` of rows rolled back before without
``--again``); 3 credentials, project or endpoint refused (rows not reached have no record:
``--resume``); 75 lock held; 130/143 signals.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from orchestrator import defaults, options
from orchestrator.cli import run

ROLLBACK_GRACE = 60.0  # a rollback sent is watched to its end: the disk is unusable while it runs

if TYPE_CHECKING:
    from collections.abc import Callable

    from orchestrator.actions import Action, ActionRecord
    from orchestrator.api.routes import Route, Router
    from orchestrator.config import Connection
    from orchestrator.console import Console
    from orchestrator.frame import Frame as ActionRun
    from orchestrator.models import Record
    from orchestrator.restore import Finding, RestorePlan, Watch
    from orchestrator.retry import RetryPolicy
    from orchestrator.waiter import WaitPlan


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
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


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Chosen:
    """The rows a rollback acts on, and how many rows of the create run have no record at all."""

    run_id: str
    rows: list[Record]
    total: int  # the create run's rows, as its header says (0: no header)
    unrecorded: int  # rows of the header without a record (counted when every row is chosen)
    first_unrecorded: list[int]


async def rollback(settings: RollbackSettings, *, console: Console) -> int:
    """Plan or apply the rollback of the chosen rows; returns the exit code (see the module docstring)."""
    import contextlib  # noqa: PLC0415

    from orchestrator.actions import Action  # noqa: PLC0415
    from orchestrator.frame import Frame  # noqa: PLC0415
    from orchestrator.lock import run_locks  # noqa: PLC0415
    from orchestrator.restore import RestorePlan  # noqa: PLC0415
    from orchestrator.tally import Counting, Tally  # noqa: PLC0415

    chosen = chosen_rows(settings)
    source_run, rows = chosen.run_id, chosen.rows
    shape = {"source_report": str(settings.source.resolve()), "source_run": source_run}
    _check_resume(settings, source_run)
    before = _rolled_back_before(settings, chosen, console)
    stopping: list[Callable[[], bool]] = []
    plan = RestorePlan(
        source_run=source_run,
        policy=settings.policy,
        settle=settings.settle,
        wait=settings.wait,
        stopping=lambda: any(stop() for stop in stopping),
    )
    frame = Frame(
        command="rollback",
        console=console,
        report=settings.report,
        tally=Tally(counting=Counting.records("rollback", frozenset({Action.PLANNED, Action.ROLLED_BACK}))),
        grace=ROLLBACK_GRACE,
        drain=f"sending no more rollbacks; those already sent are watched to their end for up to "
        f"{ROLLBACK_GRACE:g}s (longer than other commands' 10s: a disk must not be left mid-rollback "
        "without a record)",
    )
    async with frame:
        frame.lock(run_locks(source_run, settings.lock_file))
        frame.open_actions(
            source=str(settings.source), shape=shape, resume=settings.resume, nothing="nothing was done"
        )
        stopping.append(frame.stopping)
        router = await frame.connect(settings.connection)
        with frame.draining() if settings.apply else contextlib.nullcontext():  # a plan stops at once
            finals, skipped = await _restore_all(frame, router, rows, plan, apply=settings.apply)
        counts = router.counts()
        _notes(frame, finals, counts, apply=settings.apply, skipped=skipped, chosen=chosen, before=before)
        frame.at_least = 1 if chosen.unrecorded or before else _exit_code(finals, apply=settings.apply)
    return frame.exit_code


def chosen_rows(settings: RollbackSettings) -> Chosen:
    """The create run's id, the last record of each chosen row in row order, and the rows of the run
    that have no record (exit 2 when the report is unusable)."""
    from orchestrator.createrun import check_create_run  # noqa: PLC0415
    from orchestrator.errors import UsageError  # noqa: PLC0415
    from orchestrator.report import check_report_path, final_records, read_header  # noqa: PLC0415
    from orchestrator.tally import first_without_record  # noqa: PLC0415

    path = settings.source
    check_report_path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such report")
    if settings.report != "-" and Path(settings.report).resolve() == path.resolve():
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


def _rolled_back_before(settings: RollbackSettings, chosen: Chosen, console: Console) -> bool:
    """True when an earlier rollback report of this create run rolled back chosen rows (not asked on
    ``--resume``): ``--apply`` without ``--again`` is refused then (exit 2); a plan warns."""
    from orchestrator.errors import UsageError  # noqa: PLC0415
    from orchestrator.restore import earlier_rollbacks  # noqa: PLC0415

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


def _check_resume(settings: RollbackSettings, source_run: str) -> None:
    from orchestrator.errors import ResumeMismatch  # noqa: PLC0415
    from orchestrator.report import read_header  # noqa: PLC0415

    path = Path(settings.report)
    if not settings.resume or settings.report == "-" or not path.is_file():
        return
    header = read_header(path)
    if header is not None and header.shape.get("source_run") not in (None, source_run):
        raise ResumeMismatch(
            f"--resume: {path} rolls back run {header.shape.get('source_run')}, not run {source_run} "
            f"of {settings.source}; nothing was sent"
        )


async def _restore_all(
    action: ActionRun, router: Router, rows: list[Record], plan: RestorePlan, *, apply: bool
) -> tuple[dict[int, tuple[Action, str | None]], int]:
    """Every chosen row through a fixed pool of workers that check and send; the rollbacks under way
    are watched meanwhile, together (``rollback_watch.Watcher``), and each row is recorded as it ends. Returns
    the last outcome (and code) of each row, and how many rows an earlier run of the report had
    finished."""
    import time  # noqa: PLC0415

    import anyio  # noqa: PLC0415
    from anyio.abc import ObjectReceiveStream  # noqa: PLC0415

    from orchestrator.actions import now_iso  # noqa: PLC0415
    from orchestrator.restore import RowStopped  # noqa: PLC0415
    from orchestrator.rollback_watch import Watcher  # noqa: PLC0415

    finals: dict[int, tuple[Action, str | None]] = {}
    begun: dict[int, tuple[str | None, str, float]] = {}  # row -> project, started_at, monotonic start
    skipped = 0

    def stopped() -> bool:
        return action.stopping() or bool(router.closures())

    def ended(row: Record, finding: Finding) -> None:
        record = _record(action, row, finding, plan, *begun.pop(row.row))
        action.write(record)
        finals[row.row] = (record.outcome, record.error_code)

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
    send, receive = anyio.create_memory_object_stream["Record"](workers)
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
                            skipped += 1
                            continue
                        if stopped():
                            break
                        await send.send(row)
        finally:
            watcher.close()
    return finals, skipped


async def _one(
    router: Router, row: Record, plan: RestorePlan, *, apply: bool
) -> tuple[str | None, Finding | tuple[Route, Record, Watch]]:
    """The row's project and either its finding or (applying) the rollback under way, to be watched."""
    from orchestrator.actions import Action  # noqa: PLC0415
    from orchestrator.errors import ProjectLookupFailed, RouteClosed  # noqa: PLC0415
    from orchestrator.restore import Finding, plan_row, start_row, unusable  # noqa: PLC0415

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


def _record(
    action: ActionRun,
    row: Record,
    finding: Finding,
    plan: RestorePlan,
    project: str | None,
    started: str,
    clock: float,
) -> ActionRecord:
    import time  # noqa: PLC0415

    from orchestrator.actions import ActionRecord, now_iso  # noqa: PLC0415

    snapshot: dict[str, Any] = dict(finding.snapshot or {})
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
        snapshot_name=snapshot.get("name"),
        created_at=snapshot.get("created_at"),
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


def _notes(
    action: ActionRun,
    finals: dict[int, tuple[Action, str | None]],
    counts: dict[str, int],
    *,
    apply: bool,
    skipped: int,
    chosen: Chosen,
    before: bool,
) -> None:
    """Summary lines: rows without a record, blockers found while planning, rows skipped on resume,
    requests by kind. Each row's blocker is counted once, by the tally, as its record is written."""
    from orchestrator.actions import Action  # noqa: PLC0415

    tally = action.tally
    if chosen.unrecorded:
        shown = ", ".join(map(str, chosen.first_unrecorded))
        more = "" if chosen.unrecorded <= len(chosen.first_unrecorded) else ", ..."
        tally.notes.append(
            f"{chosen.unrecorded} of {chosen.total} rows have no record: their disks have no snapshot of "
            f"this run to roll back to (rows {shown}{more}); before the maintenance, `create --resume` of "
            "the create report snapshots them"
        )
        tally.failing += chosen.unrecorded  # the summary's exit code is the command's
    if not apply:
        planned = [code for outcome, code in finals.values() if outcome is Action.PLANNED]
        blockers = sum(1 for code in planned if code)
        tally.notes.append(
            f"plan only, nothing was sent: {len(planned) - blockers} of {len(planned) + chosen.unrecorded} "
            "rows can be rolled back"
            + (f", {blockers} have a blocker" if blockers else "")
            + (f", {chosen.unrecorded} have no record" if chosen.unrecorded else "")
            + "; --apply rolls back"
        )
    if before:
        tally.notes.append("rolled back before: --apply needs --again (see the warning above)")
        tally.failing += 1
    if skipped:
        tally.notes.append(f"{skipped} rows were finished by an earlier run of this report (skipped)")
    if counts:
        tally.notes.append("requests: " + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())))


def _exit_code(finals: dict[int, tuple[Action, str | None]], *, apply: bool) -> int:
    from orchestrator.actions import Action  # noqa: PLC0415

    if apply:
        return 0 if all(outcome is Action.ROLLED_BACK for outcome, _ in finals.values()) else 1
    good = {Action.PLANNED, Action.ROLLED_BACK}
    return 0 if all(outcome in good and not code for outcome, code in finals.values()) else 1


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
    connection: Connection,
    policy: RetryPolicy,
    wait_plan: WaitPlan,
    settle: float,
    lock_file: Path | None,
    log_format: str,
) -> NoReturn:
    """Restore each row's disk from the snapshot the create run in REPORT made; plans unless --apply."""
    from orchestrator.console import Console  # noqa: PLC0415
    from orchestrator.models import utc_now  # noqa: PLC0415

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
    )
    raise SystemExit(run(lambda: rollback(settings, console=console), console=console))
