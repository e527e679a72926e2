"""Holds: ``hold`` and ``release`` set or remove the ``evs_snapshot_hold`` metadata key on the tool's own
snapshots, so that ``prune`` never deletes them and ``cleanup`` only with ``--include-held``.

Which snapshots (``named``): those a ``create`` report's rows name (``--rows``, ``--volume`` choose some),
or the ``--snapshot ID`` given. Each is looked at (one GET) and judged by ``ownership.hold_refusal``
before anything is sent: a snapshot not the tool's (or, from a report, not the run's snapshot of the
row's disk) is ``refused`` and left alone. One already in the wanted state needs no request.

The change is one request of the snapshot metadata API (evs-api.md 8.x, "Adding metadata of an EVS
snapshot"): ``hold`` adds the key (``POST .../snapshots/{id}/metadata``, the other keys stay, the run
marker among them), ``release`` deletes it (``DELETE .../metadata/evs_snapshot_hold``; a 404 there means
there was no hold to remove). Both are idempotent, so throttling, 5xx and transport errors are
retried under the policy.

Records (``actions.ActionRecord``, ``rule`` = ``hold: REASON``): ``planned`` without ``--apply``;
``held`` / ``released`` (final: ``--resume`` skips them), ``refused``, ``rejected`` (the API refused,
or the snapshot is gone), ``failed`` (retries spent). Exit 1 when a record is not ``planned``,
``held`` or ``released``, or when rows of the create run have no record (their snapshots are unknown).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from orchestrator.actions import FINAL, Action, ActionRecord, now_iso
from orchestrator.api import evs
from orchestrator.api.safe import show_snapshot
from orchestrator.api.views import Snapshot
from orchestrator.createrun import run_of
from orchestrator.defaults import HOLD_KEY
from orchestrator.errors import ListingFailed, RouteClosed, TransportError, UsageError
from orchestrator.frame import Frame, default_report
from orchestrator.lock import given_lock, run_locks, scope_lock
from orchestrator.ownership import hold_refusal
from orchestrator.report import writes_to
from orchestrator.retry import TryAgain, Verdict, retrying
from orchestrator.tally import Counting, Tally

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio.abc import ObjectReceiveStream

    from orchestrator.api.routes import Route, Router
    from orchestrator.config import Connection
    from orchestrator.console import Console
    from orchestrator.frame import Closing, Frame
    from orchestrator.models import Answer
    from orchestrator.options import Choice, RowRanges
    from orchestrator.retry import RetryPolicy

HOLD = "hold"
RELEASE = "release"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class HoldSettings:
    command: str  # HOLD or RELEASE
    reason: str | None  # hold's REASON (None for release)
    source: Path | None  # a create report, or None with --snapshot
    snapshot_ids: tuple[str, ...]  # --snapshot
    rows: RowRanges | None
    volumes: frozenset[str] | None
    project_id: str | None  # of --snapshot IDs
    apply: bool
    connection: Connection
    policy: RetryPolicy
    report: str
    resume: bool
    lock_file: Path | None
    closing: Closing

    def shape(self) -> dict[str, str]:
        """What the report header records: a ``--resume`` with other choices is refused."""
        return {
            "hold": self.reason or "",
            "create_report": "" if self.source is None else str(self.source),
            "snapshots": ",".join(self.snapshot_ids),
            "rows": "" if self.rows is None else str(self.rows),
            "volumes": ",".join(sorted(self.volumes or ())),
        }


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Named:
    """One snapshot to act on, and what named it: a create report's row (``run_id``, ``row`` and the
    row's disk), or ``--snapshot ID``."""

    snapshot_id: str
    project_id: str | None
    region: str | None
    row: int | None = None
    volume_id: str | None = None
    name: str | None = None
    run_id: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Chosen:
    """The snapshots named, the create run's id (from a report), and notes on rows left out."""

    named: list[Named]
    run_id: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    incomplete: bool = False  # rows of the run have no record: their snapshots are unknown


def choose(settings: HoldSettings, warn: Callable[[str], None]) -> Chosen:
    """The snapshots ``hold`` or ``release`` acts on (exit 2 when none, or a choice names nothing)."""
    if settings.source is None:
        ids = list(dict.fromkeys(settings.snapshot_ids))
        region = settings.connection.endpoints.home_region
        if settings.project_id is None and region is None:
            raise UsageError("--snapshot needs --project-id or --region to name the snapshots' project")
        return Chosen(
            named=[Named(snapshot_id=i, project_id=settings.project_id, region=region) for i in ids]
        )
    run_ = run_of(settings.source, warn, command=settings.command, verb=settings.command)
    if run_.header.shape.get("consistency") == "server":  # its members carry no marker, nor a hold
        raise UsageError(
            f"{settings.source} is a --consistency server run: its snapshots are members of snapshot "
            "groups, whose hold is a tag of the group, set when it is made (create --hold REASON); "
            f"{settings.command} cannot change a group's tags; nothing was sent"
        )
    rows = settings.rows
    if rows is not None and rows.last > run_.header.rows:
        raise UsageError(
            f"--rows {rows}: row {rows.last} is beyond the {run_.header.rows} rows of the run in "
            f"{settings.source}; nothing was sent"
        )
    named: list[Named] = []
    without = 0
    volumes_seen: set[str] = set()
    for record in run_.sent:
        volume = str(record.volume_id or "").lower()
        volumes_seen.add(volume)
        if rows is not None and record.row not in rows:
            continue
        if settings.volumes is not None and volume not in settings.volumes:
            continue
        if not record.snapshot_id:
            without += 1
            continue
        named.append(
            Named(
                snapshot_id=record.snapshot_id,
                project_id=record.project_id,
                region=record.region,
                row=record.row,
                volume_id=volume,
                name=record.name,
                run_id=run_.run_id,
            )
        )
    if settings.volumes is not None and settings.volumes - volumes_seen:
        missing = ", ".join(sorted(settings.volumes - volumes_seen)[:10])
        raise UsageError(f"--volume: no row of {settings.source} is disk {missing}; nothing was sent")
    notes = []
    if without:
        notes.append(
            f"{without} chosen rows have no snapshot (their create did not succeed): "
            f"nothing to {settings.command}"
        )
    unrecorded, text = run_.unrecorded()
    every = rows is None and settings.volumes is None
    if unrecorded and every:
        notes.append(
            f"{unrecorded} of {run_.header.rows} rows of run {run_.run_id} have no record ({text}): their "
            f"snapshots, if any, are unknown to this {settings.command}; exit 1"
        )
    if not named and not without:
        raise UsageError(f"{settings.source}: the rows chosen name no snapshot; nothing was sent")
    return Chosen(named=named, run_id=run_.run_id, notes=notes, incomplete=bool(unrecorded and every))


async def act_all(settings: HoldSettings, frame: Frame, router: Router, named: list[Named]) -> None:
    """Judge and (with ``--apply``) change each named snapshot, a fixed pool of workers at a time."""
    concurrency = settings.connection.limits.concurrency
    send, receive = anyio.create_memory_object_stream[Named](2 * concurrency)
    async with anyio.create_task_group() as group:
        async with receive:
            for _ in range(concurrency):
                group.start_soon(_worker, settings, frame, router, receive.clone())
        async with send:
            for item in named:
                if frame.stopping():
                    break
                if frame.book.last.get(item.snapshot_id) in FINAL:  # --resume: already settled
                    continue
                await send.send(item)


async def _worker(
    settings: HoldSettings, frame: Frame, router: Router, stream: ObjectReceiveStream[Named]
) -> None:
    async with stream:
        async for item in stream:
            if frame.stopping():
                continue  # no record: --resume looks at it again
            try:
                route = await router.route_for(item.project_id, item.region)
                record = await _one(settings, frame, route, item)
            except RouteClosed:
                continue  # no record; the frame names the closed route (exit 3)
            frame.write(record)


async def _one(settings: HoldSettings, frame: Frame, route: Route, item: Named) -> ActionRecord:
    """The record of one snapshot: looked at, judged, and with ``--apply`` changed."""
    started, stamp = time.monotonic(), now_iso()
    wanted = settings.reason  # None: release
    try:
        snapshot = await show_snapshot(route, item.snapshot_id, settings.policy)
    except ListingFailed as exc:
        return _record(
            settings, frame, route, item, None, stamp, started, Action.FAILED, error_message=str(exc)
        )

    def record(outcome: Action, **fields: Any) -> ActionRecord:
        return _record(settings, frame, route, item, snapshot, stamp, started, outcome, **fields)

    if snapshot is None:
        return record(Action.REJECTED, http_status=404, error_message=f"no snapshot {item.snapshot_id} (404)")
    refused = hold_refusal(snapshot, run_id=item.run_id, volume_id=item.volume_id)
    if refused is not None:
        return record(Action.REFUSED, error_code=refused.code, error_message=f"{refused.message}; left alone")
    done = Action.HELD if wanted is not None else Action.RELEASED
    if snapshot.hold == wanted:
        already = f"already held ({wanted})" if wanted is not None else "not held"
        return record(done, error_message=f"{already}; nothing to send")
    if not settings.apply:
        return record(Action.PLANNED)
    if wanted is not None:
        change = evs.add_snapshot_metadata(route.project_id, snapshot.id, {HOLD_KEY: wanted})
    else:
        change = evs.delete_snapshot_metadata(route.project_id, snapshot.id, HOLD_KEY)
    # On disk before the request leaves: a kill then leaves a line naming the change (``summary`` names
    # it and its command applies; ``--resume`` looks at the snapshot again, as for any row not final).
    frame.journal(record(Action.SENDING))
    answer, attempts, why = await _send(route, change, settings.policy)
    if answer is None:
        return record(Action.FAILED, attempts=attempts, error_message=why)
    fields: dict[str, Any] = {
        "attempts": attempts,
        "http_status": answer.status,
        "request_id": answer.request_id,
    }
    if answer.ok:
        return record(done, **fields)
    code, message = answer.error()
    if wanted is None and answer.status == 404:
        return record(done, **fields, error_message=f"no hold to remove ({answer.status} {code})")
    if why is not None:  # retries spent on throttling or 5xx
        return record(Action.FAILED, **fields, error_code=code, error_message=message)
    return record(Action.REJECTED, **fields, error_code=code, error_message=message)


async def _send(route: Route, call: evs.Call, policy: RetryPolicy) -> tuple[Answer | None, int, str | None]:
    """Send an idempotent call, retrying throttling, 5xx and transport errors under ``policy``: the last
    answer (``None``: none came), the attempts, and why it was given up (``None``: a final answer)."""
    answer: Answer | None = None
    attempts = 0
    why = "no attempt"
    async for attempt in retrying(policy, reraise=False):
        with attempt:
            attempts = attempt.number
            try:
                reply = await route.send(call)
            except TransportError as exc:
                why = str(exc)
                raise TryAgain(why) from None
            answer = reply.answer
            if reply.verdict in (Verdict.SUCCESS, Verdict.FINAL):
                return answer, attempts, None
            code, _ = answer.error()
            why = f"{answer.status} {code}"
            raise TryAgain(why)
    return answer, attempts, why


def _record(
    settings: HoldSettings,
    frame: Frame,
    route: Route,
    item: Named,
    snapshot: Snapshot | None,
    stamp: str,
    started: float,
    outcome: Action,
    **fields: Any,
) -> ActionRecord:
    reason = settings.reason if settings.reason is not None else (snapshot.hold if snapshot else None)
    return ActionRecord(
        run_id=frame.run_id,
        command=settings.command,
        key=item.snapshot_id,
        outcome=outcome,
        row=item.row,
        volume_id=(snapshot.volume_id if snapshot is not None else None) or item.volume_id,
        project_id=route.project_id,
        region=item.region,
        snapshot_id=item.snapshot_id,
        snapshot_name=(snapshot.name if snapshot is not None else None) or item.name,
        created_at=None if snapshot is None else snapshot.created_at,
        rule=None if reason is None else f"hold: {reason}",
        source_run=None if snapshot is None else snapshot.marker,
        started_at=stamp,
        finished_at=now_iso(),
        elapsed_ms=round((time.monotonic() - started) * 1000),
        **fields,
    )


async def run_holds(settings: HoldSettings, *, console: Console) -> int:
    """``hold`` or ``release`` through the run frame: locks, report, judge and change, summary, exit."""

    chosen = choose(settings, console.warn)
    if chosen.run_id is not None:
        locks = run_locks(chosen.run_id, settings.lock_file)  # no create, wait, cleanup of the run meanwhile
    elif settings.lock_file is not None:
        locks = [given_lock(settings.lock_file)]
    else:
        locks = [scope_lock("snapshots " + ",".join(sorted(n.snapshot_id for n in chosen.named)))]
    frame = Frame(
        command=settings.command,
        console=console,
        report=settings.report,
        closing=settings.closing,
        create_report=str(settings.source or ""),
        tally=Tally(counting=Counting.of_command(settings.command)),
    )
    async with frame:
        frame.lock(locks)  # before anything is sent
        router = await frame.connect(settings.connection, settings.policy)
        frame.open_actions(
            source=str(settings.source or "--snapshot"),
            shape=settings.shape(),
            resume=settings.resume,
            apply=settings.apply,
            nothing="nothing was changed",
            connection=settings.connection,  # where it sent its requests: the command that finishes it
        )
        with frame.draining() if settings.apply else contextlib.nullcontext():
            await act_all(settings, frame, router, chosen.named)
        frame.tally.notes += chosen.notes
        if chosen.incomplete:
            frame.at_least = 1
    return frame.exit_code


def settings_of(
    command: str,
    reason: str | None,
    choice: Choice,
    *,
    connection: Connection,
    policy: RetryPolicy,
    closing: Closing,
) -> HoldSettings:
    """The settings of ``hold`` or ``release`` (exit 2 when its report would be the create report)."""

    report = default_report(command, choice.report_path)
    if choice.source is not None and writes_to(report, choice.source):
        raise UsageError(f"{command} writes its own report: give a --report other than the create report")
    return HoldSettings(
        command=command,
        reason=reason,
        source=choice.source,
        snapshot_ids=choice.snapshot_ids,
        rows=choice.rows,
        volumes=choice.volumes,
        project_id=choice.project_id,
        apply=choice.apply,
        connection=connection,
        policy=policy,
        report=report,
        resume=choice.resume,
        lock_file=choice.lock_file,
        closing=closing,
    )
