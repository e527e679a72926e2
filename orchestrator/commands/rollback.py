"""``evs-snapshot rollback REPORT``: restore each row's disk from the snapshot that create run made.

REPORT is a ``create`` report. Without ``--apply`` every chosen row gets one ``planned`` record naming
its blocker, if any, and nothing is sent; with ``--apply`` each row is checked, rolled back and
waited for (``orchestrator.restore`` holds the rules). ``--rows 3,7-9`` and ``--volume ID`` choose a
subset. The run has its own report (one record per row, key ``row:N``), a lock per create report,
and ``--resume`` (rows already rolled back or refused are skipped; the others are looked at again,
their disks first).

Exit codes: 0 when every chosen row was rolled back (or, when planning, has no blocker); 1 when a
row is blocked, refused, rejected, failed or ``rollback_failed`` (or, when planning, has a blocker);
2 usage; 3 credentials, project or endpoint refused (rows not reached have no record: ``--resume``);
75 lock held; 130/143 signals.
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

    from orchestrator.actions import Action, ActionRecord, ActionRun
    from orchestrator.api.routes import Router
    from orchestrator.config import Connection
    from orchestrator.console import Console
    from orchestrator.models import Record
    from orchestrator.restore import Finding, RestorePlan
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
    rows: frozenset[int] | None = None
    volumes: frozenset[str] | None = None
    lock_file: Path | None = None


async def rollback(settings: RollbackSettings, *, console: Console) -> int:
    """Plan or apply the rollback of the chosen rows; returns the exit code (see the module docstring)."""
    import contextlib  # noqa: PLC0415

    from orchestrator.actions import Action, action_run  # noqa: PLC0415
    from orchestrator.api.routes import connect  # noqa: PLC0415
    from orchestrator.restore import RestorePlan  # noqa: PLC0415

    source_run, rows = chosen_rows(settings)
    shape = {"source_report": str(settings.source.resolve()), "source_run": source_run}
    _check_resume(settings, source_run)
    stopping: list[Callable[[], bool]] = []
    plan = RestorePlan(
        source_run=source_run,
        policy=settings.policy,
        settle=settings.settle,
        wait=settings.wait,
        stopping=lambda: any(stop() for stop in stopping),
    )
    async with action_run(
        command="rollback",
        report=settings.report,
        source=str(settings.source),
        shape=shape,
        resume=settings.resume,
        lock_key=str(settings.source),
        lock_file=settings.lock_file,
        console=console,
        success=frozenset({Action.PLANNED, Action.ROLLED_BACK}),
        grace=ROLLBACK_GRACE,
        drain=f"sending no more rollbacks; those already sent are watched to their end for up to "
        f"{ROLLBACK_GRACE:g}s (longer than other commands' 10s: a disk must not be left mid-rollback "
        "without a record)",
    ) as action:
        stopping.append(action.stopping)
        async with contextlib.AsyncExitStack() as stack:
            router = await connect(stack, settings.connection)
            with action.draining() if settings.apply else contextlib.nullcontext():  # a plan stops at once
                finals, skipped = await _restore_all(action, router, rows, plan, apply=settings.apply)
            closures = router.closures()
            counts = router.counts()
        _notes(action, finals, counts, apply=settings.apply, skipped=skipped)
    if closures:
        for closure in closures:
            console.error(closure.message, code=closure.code)
        return 3
    return _exit_code(finals, apply=settings.apply)


def chosen_rows(settings: RollbackSettings) -> tuple[str, list[Record]]:
    """The create run's id and the last record of each chosen row, in row order (exit 2 when unusable)."""
    from orchestrator.errors import UsageError  # noqa: PLC0415
    from orchestrator.report import check_report_path, final_records, read_header  # noqa: PLC0415

    path = settings.source
    check_report_path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such report")
    if settings.report != "-" and Path(settings.report).resolve() == path.resolve():
        raise UsageError("--report must not be the create report: rollback writes a report of its own")
    header = read_header(path)
    if header is not None and header.command != "create":
        raise UsageError(f"{path} is a {header.command} report; rollback reads the report of a create run")
    run_id = None if header is None else header.run_id
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
    if settings.rows is not None and settings.rows - seen_rows:
        missing = ", ".join(str(row) for row in sorted(settings.rows - seen_rows)[:10])
        raise UsageError(f"--rows: {path} has no record of row {missing}; nothing was sent")
    if settings.volumes is not None and settings.volumes - seen_volumes:
        missing = ", ".join(sorted(settings.volumes - seen_volumes)[:10])
        raise UsageError(f"--volume: no row of {path} is disk {missing}; nothing was sent")
    if not rows:
        raise UsageError("--rows and --volume together choose no row; nothing was sent")
    return run_id, sorted(rows, key=lambda record: record.row)


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
    """Every chosen row through a fixed pool of workers: the last outcome (and code) of each row, and
    how many rows an earlier run of the report had finished."""
    import anyio  # noqa: PLC0415
    from anyio.abc import ObjectReceiveStream  # noqa: PLC0415

    from orchestrator.restore import RowStopped  # noqa: PLC0415

    finals: dict[int, tuple[Action, str | None]] = {}
    skipped = 0

    def stopped() -> bool:
        return action.stopping() or bool(router.closures())

    async def worker(stream: ObjectReceiveStream[Record]) -> None:
        async with stream:
            async for row in stream:
                if stopped():
                    continue  # not reached: no record, so --resume takes it up
                try:
                    record = await _one(action, router, row, plan, apply=apply)
                except RowStopped:
                    continue  # stopped before its rollback was sent: no record, --resume takes it up
                action.write(record)
                finals[row.row] = (record.outcome, record.error_code)

    workers = min(len(rows), router.limits.concurrency)
    send, receive = anyio.create_memory_object_stream["Record"](workers)
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
    return finals, skipped


async def _one(
    action: ActionRun, router: Router, row: Record, plan: RestorePlan, *, apply: bool
) -> ActionRecord:
    import time  # noqa: PLC0415

    from orchestrator.actions import Action, ActionRecord, now_iso  # noqa: PLC0415
    from orchestrator.errors import ProjectLookupFailed, RouteClosed  # noqa: PLC0415
    from orchestrator.restore import Finding, plan_row, restore_row, unusable  # noqa: PLC0415

    started, clock = now_iso(), time.monotonic()
    project = row.project_id
    finding: Finding | None = unusable(row)
    if finding is not None and not apply:
        finding = dataclasses.replace(finding, outcome=Action.PLANNED)
    if finding is None:
        try:
            route = await router.route_for(row.project_id, row.region)
            project = route.project_id
            finding = await (restore_row if apply else plan_row)(route, row, plan)
        except (RouteClosed, ProjectLookupFailed) as exc:
            finding = Finding(outcome=Action.FAILED, code=exc.code, message=exc.message)
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
) -> None:
    """Summary lines: blockers found while planning, rows skipped on resume, requests by kind."""
    from orchestrator.actions import Action  # noqa: PLC0415

    tally = action.tally
    if not apply:
        planned = [code for outcome, code in finals.values() if outcome is Action.PLANNED]
        blockers = [code for code in planned if code]
        tally.codes.update(blockers)
        tally.notes.append(
            f"plan only, nothing was sent: {len(planned) - len(blockers)} of {len(planned)} rows can be "
            "rolled back" + (f", {len(blockers)} have a blocker" if blockers else "") + "; --apply rolls back"
        )
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


def _row_spec(_ctx: click.Context, _param: click.Parameter, value: str | None) -> frozenset[int] | None:
    """``3,7-9`` as {3, 7, 8, 9}."""
    if value is None:
        return None
    rows: set[int] = set()
    for part in value.split(","):
        first, _, last = part.strip().partition("-")
        if not first.isdigit() or (last and not last.isdigit()) or int(first) < 1:
            raise click.BadParameter(f"{value!r}: use row numbers and ranges such as 3,7-9")
        end = int(last) if last else int(first)
        if end < int(first):
            raise click.BadParameter(f"{part.strip()!r}: a range must go up (7-9, not 9-7)")
        rows.update(range(int(first), end + 1))
    return frozenset(rows)


@click.command("rollback")
@click.argument("source", metavar="REPORT", type=click.Path(path_type=Path, dir_okay=True))
@click.option("--apply", "apply_changes", is_flag=True, help="Roll back (default: plan only, send nothing).")
@click.option("--rows", "row_spec", callback=_row_spec, default=None, help="Only these rows: 3,7-9.")
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
@options.CONNECTION
@options.RETRIES
@options.WAITING
@click.option(
    "--settle",
    callback=options.duration,
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
    row_spec: frozenset[int] | None,
    volume_ids: tuple[str, ...],
    report_path: str | None,
    resume: bool,
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
    )
    raise SystemExit(run(lambda: rollback(settings, console=console), console=console))
