"""``evs-snapshot cleanup REPORT``: delete the snapshots one ``create`` run made.

A row's snapshot is the one on the row's volume with the run's ``evs_snapshot_run`` marker (SPEC,
"Snapshot identity"), and the one its last record names (``accepted``, ``available``, ...). Each project
is listed once (1000 snapshots a request) before anything is deleted. A snapshot is deleted only when
the listing shows it carries that run's marker and belongs to the row's volume; otherwise the row is
``refused`` and the snapshot left alone. So a snapshot that a late commit made for a ``failed`` row, or
a duplicate kept by ``--keep-duplicates``, goes too. A recorded snapshot the listing does not show is
looked up once (GET): a 404 means it is already gone, which counts as deleted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from orchestrator import options
from orchestrator.cli import run

if TYPE_CHECKING:
    from orchestrator.actions import ActionRecord, ActionRun
    from orchestrator.api.routes import Router
    from orchestrator.config import Connection
    from orchestrator.console import Console
    from orchestrator.finish import Closing
    from orchestrator.models import Record
    from orchestrator.retention import Job, Scope
    from orchestrator.retry import RetryPolicy


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CleanupSettings:
    source: Path  # the create report
    apply: bool
    wait_timeout: float | None  # None: --no-wait
    connection: Connection
    policy: RetryPolicy
    report: str
    resume: bool
    lock_file: Path | None
    closing: Closing


def run_of(report: Path) -> tuple[str, list[Record]]:
    """The create run's id and the last record of each row that was sent (not ``invalid`` or ``planned``)."""
    from orchestrator.errors import UsageError  # noqa: PLC0415
    from orchestrator.models import Outcome  # noqa: PLC0415
    from orchestrator.report import check_report_path, final_records, read_header  # noqa: PLC0415

    check_report_path(report)
    if not report.is_file():
        raise UsageError(f"{report}: no such report")
    header = read_header(report)
    if header is not None and header.command != "create":
        raise UsageError(f"{report} is a {header.command} report; cleanup reads the report of a create run")
    rows = list(final_records(report))
    run_id = header.run_id if header is not None else next((r.run_id for r in rows), None)
    if run_id is None:
        raise UsageError(f"{report}: the report holds no records; nothing to clean up")
    unsent = (Outcome.INVALID, Outcome.PLANNED)
    return run_id, [r for r in rows if r.volume_id and r.outcome not in unsent and r.run_id == run_id]


async def cleanup(settings: CleanupSettings, *, console: Console) -> int:
    """Plan (and with ``--apply``, carry out) the deletion of one create run's snapshots."""
    import os  # noqa: PLC0415

    from orchestrator.actions import action_run  # noqa: PLC0415
    from orchestrator.api.routes import connect  # noqa: PLC0415
    from orchestrator.lock import holding, lock_for  # noqa: PLC0415

    run_id, rows = run_of(settings.source)
    shape = {"create_report": str(settings.source), "create_run": run_id}
    # The create report's own lock: no create --resume or wait may run on it meanwhile.
    lock = lock_for("report", str(settings.source), os.environ)
    with holding([lock]), recording_aborts(settings.closing, "cleanup", console):
        async with contextlib.AsyncExitStack() as stack:
            router = await connect(stack, settings.connection)
            async with action_run(
                command="cleanup",
                report=settings.report,
                source=str(settings.source),
                shape=shape,
                resume=settings.resume,
                lock_key=str(settings.source),
                lock_file=settings.lock_file,
                console=console,
                nothing="nothing was deleted",
            ) as action:
                await _cleanup(settings, router, run_id, rows, action)
            closures = router.closures()
    for closure in closures:
        console.error(closure.message, code=closure.code)
    code = 3 if closures else action.tally.exit_code
    action_side_files(settings.closing, "cleanup", action, code, console)
    return code


async def _cleanup(
    settings: CleanupSettings, router: Router, run_id: str, rows: list[Record], action: ActionRun
) -> None:
    from orchestrator.actions import Action  # noqa: PLC0415
    from orchestrator.api import evs  # noqa: PLC0415
    from orchestrator.retention import Deleter, Target, list_scope, scopes_of  # noqa: PLC0415

    outcome = "nothing was deleted" if settings.apply else "nothing was planned"
    targets = [Target(str(row.volume_id), row.project_id, row.region, row.row) for row in rows]
    scopes = await scopes_of(router, targets, outcome=outcome)
    listed: dict[tuple[int, str], dict[str, Any]] = {}
    ours: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for scope in scopes:
        for item in await list_scope(scope, settings.policy, outcome=outcome):
            listed[(id(scope.route), str(item.get("id")))] = item
            if evs.marked(item, run_id):
                ours.setdefault((id(scope.route), str(item.get("volume_id") or "").lower()), []).append(item)
    by_route = {id(scope.route): scope for scope in scopes}
    done = (Action.DELETED, Action.REFUSED)
    jobs: list[Job] = []
    for row in rows:
        scope = by_route[id(await router.route_for(row.project_id, row.region))]  # known by now: no request
        found = {str(s.get("id")): s for s in ours.get((id(scope.route), str(row.volume_id)), [])}
        candidates: dict[str, dict[str, Any] | None] = dict(found)
        if row.snapshot_id and row.snapshot_id not in found:  # the recorded one, checked like the others
            candidates[row.snapshot_id] = listed.get((id(scope.route), row.snapshot_id))
        for snapshot_id, snapshot in candidates.items():
            if action.book.last.get(snapshot_id) not in done:
                job = await _judge_row(settings, action, run_id, scope, row, snapshot_id, snapshot)
                jobs += [job] if job is not None else []
    if jobs:
        deleter = Deleter(
            policy=settings.policy,
            concurrency=settings.connection.limits.concurrency,
            wait_timeout=settings.wait_timeout,
            write=action.write,
            stopping=action.stopping,
        )
        with action.draining():
            await deleter.run(jobs)


async def _judge_row(
    settings: CleanupSettings,
    action: ActionRun,
    run_id: str,
    scope: Scope,
    row: Record,
    snapshot_id: str,
    snapshot: dict[str, Any] | None,
) -> Job | None:
    """Write the row's record (planned, refused, blocked, or deleted when already gone) or return its job."""
    from orchestrator.actions import Action, ActionRecord, now_iso  # noqa: PLC0415
    from orchestrator.api import evs  # noqa: PLC0415
    from orchestrator.api.safe import DELETING, fetch_json  # noqa: PLC0415
    from orchestrator.retention import DELETABLE, Job, is_backup, source_run  # noqa: PLC0415

    route = scope.route
    if snapshot is None:  # not listed: a GET tells gone (404) from a listing that lags
        call = evs.show_snapshot(route.project_id, snapshot_id, kind=evs.Kind.CHECK)
        body = await fetch_json(route, call, settings.policy, missing_ok=True)
        snapshot = body.get("snapshot") if isinstance(body.get("snapshot"), dict) else None
    stamp = now_iso()

    def record(outcome: Action, **fields: Any) -> ActionRecord:
        shown = snapshot or {}
        return ActionRecord(
            run_id=action.run_id,
            command="cleanup",
            key=snapshot_id,
            outcome=outcome,
            row=row.row,
            volume_id=row.volume_id,
            project_id=route.project_id,
            region=row.region,
            snapshot_id=snapshot_id,
            snapshot_name=str(shown.get("name") or row.name or "") or None,
            created_at=None if shown.get("created_at") is None else str(shown.get("created_at")),
            source_run=source_run(shown) if snapshot is not None else run_id,
            started_at=stamp,
            finished_at=stamp,
            **fields,
        )

    if snapshot is None:
        action.write(record(Action.DELETED, http_status=404, error_message="already gone (404)"))
        return None
    volume_id = str(snapshot.get("volume_id") or "").lower()
    problem = None
    if is_backup(snapshot):
        problem = ("BACKUP_SNAPSHOT", "the snapshot was made by a backup service; it is never deleted")
    elif not evs.marked(snapshot, run_id):
        problem = (
            "NOT_THIS_RUN",
            f"the snapshot does not carry run {run_id}'s marker (it carries {source_run(snapshot)!r}); "
            "left alone",
        )
    elif volume_id != str(row.volume_id).lower():
        problem = ("OTHER_VOLUME", f"the snapshot belongs to volume {volume_id}, not the row's; left alone")
    if problem is not None:
        action.write(record(Action.REFUSED, error_code=problem[0], error_message=problem[1]))
        return None
    status = snapshot.get("status")
    if status == DELETING:
        return Job(route, record(Action.DELETED), sent=True) if settings.apply else None
    if status not in DELETABLE:
        message = (
            f"the snapshot is {status}; only available or error snapshots can be deleted (run again later)"
        )
        action.write(record(Action.BLOCKED, error_code="SNAPSHOT_BUSY", error_message=message))
        return None
    if not settings.apply:
        action.write(record(Action.PLANNED))
        return None
    return Job(route, record(Action.PLANNED))


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
        callback=options.duration,
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
@options.CONNECTION
@options.RETRIES
@options.CLOSING
@options.LOG_FORMAT
@options.DEBUG
def command(
    *,
    source: Path,
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
    console = Console(sys.stderr, json=log_format == "json")
    settings = CleanupSettings(
        source=source.resolve(),
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
