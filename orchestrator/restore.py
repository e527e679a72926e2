"""Restoring one disk from the snapshot a create run made (evs-api.md 8.3): look, send once, wait.

Before anything is sent, ``look`` checks, in this order (the first that fails is the row's blocker):

1. the create run made a snapshot for the row: its last record is ``accepted`` or ``available``;
2. the snapshot exists; it is not backup-made (``autobk_snapshot_*``, ``manualbk_snapshot_*``), it
   carries the run's ``evs_snapshot_run`` marker and it belongs to the row's disk; otherwise the row
   is ``refused`` (``ownership.refusal`` judges, and names the code): the tool restores only from a
   snapshot it can prove is the run's own;
3. the disk exists and is detached (an attached disk is ``blocked`` with ``VOLUME_ATTACHED`` and its
   server ids); the snapshot and the disk are ``available``.

A disk and snapshot both ``rollbacking`` mean a rollback from this very snapshot is under way (say,
sent by a run that died before recording it): ``restore`` waits for it instead of sending another.
A row whose rollback a stopped run of the report sent (its ``sending`` line) is first told by its disk
and snapshot, and every read of them before a send is judged by one rule (``since_sent``) against
that line's ``updated_at``, never against a fresh read: a rollback that ends between two reads is
waited for or recorded, never sent again and never blocked. A disk unchanged since a line younger than
``--timeout`` plus ``--settle`` (create's window of a row in flight at a kill) is read again until that
window has passed before anything is sent: the request may still arrive (``_wait_out``).

Sending: throttled answers and connections that surely never left are resent after a backoff. An
answer that may have been lost (5xx, reset, timeout) is never resent blindly: the disk is watched for
``settle`` seconds, the row's snapshot first: a snapshot that turns ``rollbacking`` took the request
(it rolls back onto its own disk only; a disk rolling back from another snapshot is not ours); one
that stays ``available``
is looked at again (every check above) before the one resend. A rollback that completed unseen and is
sent again restores the same data again: the disk is detached, and a snapshot may be used for rollback
more than once (8.3). A 4xx after an uncertain attempt is checked the same way before it counts.
Without resends (``RestorePlan.resend``, ``doctor --live-rollback``'s probe) a disk whose ``updated_at``
moved since the look counts as taken too, and one that shows nothing ends the row ``UNCONFIRMED``
(``LOST_UNSEEN``): not sent again.

Waiting: after the 202 the disk and the snapshot are polled until neither is ``rollbacking``; a disk
that ends ``error_rollbacking`` is ``rollback_failed``. A rollback that ended before the first poll
shows as a disk ``available`` again whose ``updated_at`` moved since it was looked at: it is recorded
at that poll, not after the settle window.

Retried (``--retry-failed``): a row whose last record in the report being resumed is
``rollback_failed`` may be rolled back from a disk in ``error_rollbacking`` (the API allows it, 8.3);
without it that disk blocks the row (``VOLUME_NOT_AVAILABLE``).

Group members (a row whose record names a ``snapshot_group_id``, from ``create --consistency server``):
there is no group rollback, so each row rolls its own member back onto its own disk, as any row. The
member is read with the v5 show (``GET /v5/.../snapshots/{id}``) and rolled back with the v5 rollback
(``POST /v5/.../snapshots/{id}/rollback``); it is the run's when its group carries the run's marker tag
and it is still a member of the group the record names (``ownership.member_refusal``); a group gone
blocks the row (``SNAPSHOT_NOT_FOUND``).

Rolled back before: nothing the EVS API shows tells that a disk was rolled back (afterwards it is
``available``, its snapshot unchanged), so the evidence is the rollback reports themselves
(``earlier_rollbacks``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import orjson

from orchestrator.actions import Action, read_actions
from orchestrator.api import evs
from orchestrator.api.groups import group_members, show_group
from orchestrator.api.safe import show_snapshot, show_volume
from orchestrator.api.views import Snapshot, Volume
from orchestrator.config import WaitPlan
from orchestrator.errors import ListingFailed, TransportError, UsageError
from orchestrator.models import UNCONFIRMED, Outcome, Record, RunHeader
from orchestrator.ownership import member_refusal, refusal
from orchestrator.report import same_file
from orchestrator.retry import RetryPolicy, TryAgain, Verdict, polling, retrying

if TYPE_CHECKING:
    from orchestrator.api.routes import Route

USABLE = frozenset({Outcome.ACCEPTED, Outcome.AVAILABLE})
SETTLE_STEP = 1.0  # seconds between looks at a disk while an uncertain rollback settles
LOST_UNSEEN = "the rollback's answer was lost and no rollback was seen: not sent again"
HEADER_MAX = 65536  # bytes of a file's first line read to tell whether it is a rollback report


class RowStopped(Exception):
    """The run is stopping (a signal) before this row's rollback was sent: the row gets no record."""


@dataclasses.dataclass(frozen=True, slots=True)
class Sent:
    """A rollback an earlier run of the report sent and never saw end, as its ``sending`` line tells."""

    updated: str | None  # the disk's updated_at as that run looked at it, before the send
    # anyio time until which that request may still arrive (the line's time, plus --timeout and
    # --settle: a resumed create row's window, ``rollback_run.sent_rows``); 0: long since
    quiet: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class RestorePlan:
    """How a rollback run works: the create run it restores, its retries, settle window and waits."""

    source_run: str
    policy: RetryPolicy
    settle: float
    wait: WaitPlan
    stopping: Callable[[], bool] = lambda: False  # a signal: send no rollback that is not out yet
    retry: frozenset[int] = frozenset()  # rows whose failed rollback is sent again (--retry-failed)
    sent: Mapping[int, Sent] = dataclasses.field(default_factory=dict)  # rows an earlier run sent
    sending: Callable[[Record, str | None], None] = lambda row, updated: None  # the journal's line
    # False (doctor --live-rollback): a rollback whose answer may have been lost is never sent again; the
    # disk is watched for ``settle`` seconds, a moved ``updated_at`` counting as taken (a scratch disk
    # nobody else touches: the command, which may resend, does not count it, an attach and a detach
    # meanwhile would pass for it), and nothing seen ends the row UNCONFIRMED (``LOST_UNSEEN``)
    resend: bool = True

    @property
    def reads(self) -> RetryPolicy:
        """GETs are safe: at least three tries each, even with ``--max-attempts 1`` (as create's lookups)."""
        return dataclasses.replace(self.policy, max_attempts=self.policy.max_lookups)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Finding:
    """What became of a row, or (when planning) what stands in its way (``code`` names the blocker)."""

    outcome: Action
    code: str | None = None
    message: str | None = None
    snapshot: Snapshot | None = None
    http_status: int | None = None
    request_id: str | None = None
    attempts: int = 0


@dataclasses.dataclass(frozen=True, slots=True, eq=False, repr=False)
class Look:
    """The snapshot and disk as found, and the blocker (``None``: the rollback may be sent)."""

    snapshot: Snapshot | None
    blocker: Finding | None
    running: bool = False  # a rollback from this snapshot is under way
    disk_updated: str | None = None  # the disk's updated_at as looked at (before anything is sent)
    retried: bool = False  # the disk is error_rollbacking and the row's failed rollback is sent again
    ended: Finding | None = None  # the row's finding: the rollback a run that stopped sent has ended


async def plan_row(route: Route, row: Record, plan: RestorePlan) -> Finding:
    """One ``planned`` finding, naming the blocker when there is one; sends nothing."""
    try:
        found = await look(route, row, plan)
    except ListingFailed as exc:
        return Finding(outcome=Action.PLANNED, code="CHECK_FAILED", message=str(exc))
    if found.ended is not None:
        told = f"{found.ended.message}; --apply records it, and sends nothing"
        return dataclasses.replace(found.ended, outcome=Action.PLANNED, message=told)
    if found.blocker is not None:
        return dataclasses.replace(found.blocker, outcome=Action.PLANNED)
    message = "a rollback from this snapshot is under way; --apply waits for it" if found.running else None
    left = _in_flight(row, plan)
    if left > 0 and not found.running:
        message = (
            f"the rollback a run that stopped sent may still arrive for {left:.0f}s (--timeout + --settle "
            "after its sending line); --apply watches the disk until then, and sends only if it never came"
        )
    return Finding(outcome=Action.PLANNED, message=message, snapshot=found.snapshot)


async def start_row(route: Route, row: Record, plan: RestorePlan) -> Finding | Watch:
    """Check and send the rollback (at most once unless it surely did not arrive): the row's finding
    when it ends here (blocked, refused, rejected, failed), or a ``Watch`` of the rollback under way."""
    try:
        found = await look(route, row, plan)
        if found.blocker is None and found.ended is None and not found.running and _in_flight(row, plan) > 0:
            found = await _wait_out(route, row, plan)
    except ListingFailed as exc:
        return Finding(outcome=Action.FAILED, code="CHECK_FAILED", message=str(exc))
    if found.ended is not None:
        return found.ended
    if found.blocker is not None:
        return found.blocker
    sent = Finding(outcome=Action.ROLLED_BACK, snapshot=found.snapshot)
    if not found.running:
        sent = await _send(route, row, plan, found)
        if sent.outcome is not Action.ROLLED_BACK:
            return sent
    now = anyio.current_time()
    return Watch(
        sent, seen=found.running, before=found.disk_updated, started=now, due=now, retried=found.retried
    )


async def look(route: Route, row: Record, plan: RestorePlan) -> Look:
    """The checks of the module docstring, in order; raises ``ListingFailed`` when a GET fails."""
    blocked = unusable(row)
    if blocked is not None:
        return Look(None, blocked)
    journaled = row.row in plan.sent and row.row not in plan.retry
    if journaled:  # told by the disk (then the snapshot) before any other check
        told = await _told(route, row, plan, evs.Kind.CHECK)
        if told is not None:
            return told
    group = None
    if row.snapshot_group_id:  # the group first: gone, it took its members with it
        group = await show_group(route, row.snapshot_group_id, plan.reads, kind=evs.Kind.CHECK)
    gone = row.snapshot_group_id and group is None
    snapshot = None if gone else await _snapshot(route, row, plan.reads, evs.Kind.CHECK)
    if snapshot is None:
        of = f" (a member of snapshot group {row.snapshot_group_id})" if row.snapshot_group_id else ""
        why = f"snapshot {row.snapshot_id}{of} no longer exists" + (" (the group is gone)" if gone else "")
        return Look(None, _blocked("SNAPSHOT_NOT_FOUND", why))
    if group is not None:
        refused = member_refusal(
            snapshot,
            group,
            run_id=plan.source_run,
            volume_id=str(row.volume_id),
            group_id=row.snapshot_group_id,
        )
    else:
        refused = refusal(snapshot, run_id=plan.source_run, volume_id=str(row.volume_id))
    if refused is not None:
        finding = Finding(
            outcome=Action.REFUSED, code=refused.code, message=refused.message, snapshot=snapshot
        )
        return Look(snapshot, finding)
    volume = await _volume(route, row, plan.reads, evs.Kind.CHECK)
    if volume is None:
        return Look(
            snapshot, _blocked("VOLUME_NOT_FOUND", f"disk {row.volume_id} no longer exists", snapshot)
        )
    if journaled:  # read again: the rollback may have started or ended since the first reads
        told = since_sent(row, plan, volume, snapshot)
        if told is not None:
            return told
    disk, status, updated = volume.status, snapshot.status, volume.updated_at
    if disk == "rollbacking" and status == "rollbacking":
        return Look(snapshot, None, running=True, disk_updated=updated)
    servers = volume.servers
    if servers or disk == "in-use":
        shown = ", ".join(servers) or "a server"
        return Look(
            snapshot,
            _blocked(
                "VOLUME_ATTACHED",
                f"disk {row.volume_id} is attached to {shown} ({disk}): detach it first, attach it again "
                "after the rollback",
                snapshot,
            ),
        )
    if status != "available":
        return Look(
            snapshot,
            _blocked(
                "SNAPSHOT_NOT_AVAILABLE", f"snapshot {row.snapshot_id} is {status}, not available", snapshot
            ),
        )
    retried = disk == "error_rollbacking" and row.row in plan.retry
    if disk != "available" and not retried:
        hint = (
            " (--retry-failed --resume sends a failed rollback again)" if disk == "error_rollbacking" else ""
        )
        return Look(
            snapshot,
            _blocked(
                "VOLUME_NOT_AVAILABLE", f"disk {row.volume_id} is {disk}, not available{hint}", snapshot
            ),
        )
    return Look(snapshot, None, disk_updated=updated, retried=retried)


async def _told(route: Route, row: Record, plan: RestorePlan, kind: evs.Kind) -> Look | None:
    """One read of the disk, then of the snapshot, judged by ``since_sent`` (``None``: nothing shows the
    rollback an earlier run sent, or the disk is gone)."""
    volume = await _volume(route, row, plan.reads, kind)
    if volume is None:
        return None
    return since_sent(row, plan, volume, await _snapshot(route, row, plan.reads, kind))


def _in_flight(row: Record, plan: RestorePlan) -> float:
    """Seconds the rollback an earlier run sent for the row may still take to arrive (0: none may)."""
    sent = plan.sent.get(row.row)
    if sent is None or row.row in plan.retry:
        return 0.0
    return max(0.0, sent.quiet - anyio.current_time())


async def _wait_out(route: Route, row: Record, plan: RestorePlan) -> Look:
    """The row's disk is unchanged since the ``sending`` line of an earlier run, and that line is younger
    than its window (``Sent.quiet``): the request may still be on its way. The disk and the snapshot are
    read every ``SETTLE_STEP`` seconds until the window has passed, each read judged by ``since_sent``: a
    rollback that shows up is that request (under way, ended or failed), never sent again. After the
    window, every check again (``look``). Raises ``RowStopped`` on a signal meanwhile (nothing sent, no
    record: ``--resume`` looks again)."""

    async def pause(seconds: float) -> None:
        if plan.stopping():
            raise RowStopped
        await anyio.sleep(seconds)

    steps = polling(
        first=SETTLE_STEP,
        factor=1.0,
        cap=SETTLE_STEP,
        timeout=_in_flight(row, plan),
        lead=True,
        clock=anyio.current_time,
        sleep=pause,
    )
    async for _ in steps:
        told = await _told(route, row, plan, evs.Kind.LOOKUP)
        if told is not None:
            return told
    return await look(route, row, plan)


def since_sent(row: Record, plan: RestorePlan, volume: Volume, snapshot: Snapshot | None) -> Look | None:
    """What one read of the disk and of the snapshot tells of the rollback an earlier run of the report
    sent and never saw end (its ``sending`` line, which holds the disk's ``updated_at`` as that run
    looked at it); ``None``: nothing shows it arrived, so the usual checks, then (once the line's window
    has passed, ``_wait_out``) the send.

    The one rule, applied to every such read of the row (``look``), so a rollback that starts or ends
    between two reads is never taken for a new baseline: a disk or snapshot ``rollbacking`` is that
    rollback under way (watched to its end against the line's time, never sent again, never blocked);
    a disk ``error_rollbacking`` is it failed; a disk whose ``updated_at`` differs from the line's took
    it (as for a watched one, ``judge``), and whatever came after (attached again, say) does not make
    it a second time. Without both times nothing tells: not sent again (``UNCONFIRMED``)."""
    before, now = plan.sent[row.row].updated, volume.updated_at
    if volume.status == "error_rollbacking":
        return Look(
            snapshot,
            None,
            ended=Finding(
                outcome=Action.ROLLBACK_FAILED,
                code="VOLUME_ERROR_ROLLBACKING",
                snapshot=snapshot,
                message=f"disk {row.volume_id} ended error_rollbacking: the rollback a run that stopped "
                "sent failed (--retry-failed --resume sends it again)",
            ),
        )
    if "rollbacking" in (volume.status, None if snapshot is None else snapshot.status):
        return Look(snapshot, None, running=True, disk_updated=before)
    if before is not None and now is not None and now == before:
        return None  # the disk has not changed since: the request has not arrived (yet: ``_wait_out``)
    if before is not None and now is not None:
        ended = Finding(
            outcome=Action.ROLLED_BACK,
            snapshot=snapshot,
            message="sent by a run that stopped before it recorded the end; the disk has changed since "
            f"(updated_at {before} -> {now}): not sent again",
        )
    else:
        ended = Finding(
            outcome=Action.FAILED,
            code=UNCONFIRMED,
            snapshot=snapshot,
            message="a run that stopped had sent this rollback, and the disk shows no time of change to "
            "tell whether it ran: not sent again; roll it back with a new report and --again to send it "
            "anyway",
        )
    return Look(snapshot, None, ended=ended)


def unusable(row: Record) -> Finding | None:
    """The blocker of a row for which the create run made no snapshot (``None``: it made one)."""
    if row.outcome in USABLE and row.snapshot_id and row.volume_id:
        return None
    hint = ""
    if row.outcome is Outcome.WAIT_TIMEOUT:
        hint = "; run `evs-snapshot wait` on the create report first"
    return _blocked(
        "NO_USABLE_SNAPSHOT",
        f"the create run's last record of row {row.row} is {row.outcome.value}: no snapshot to restore "
        f"from{hint}",
    )


_MAY_HAVE_ROLLED_BACK = frozenset({Action.ROLLED_BACK, Action.SENDING})  # a request left: it may have run


def earlier_rollbacks(run_id: str, places: Iterable[Path], *, skip: Path | None) -> dict[Path, set[int]]:
    """The rollback reports in the folders ``places`` that rolled back rows of create run ``run_id``,
    each with the rows it shows ``rolled_back`` or sent (a ``sending`` line: the request left, and may
    have run, whatever that run recorded after) (``skip``: the report of this run, under any of its
    names: ``report.same_file``); the ``--resume`` of that report tells which ran.

    Only each file's first line is read, unless it is the header of such a report. The evidence
    travels with the folder (copy it with the create report to another machine); a rollback report
    written elsewhere, or to standard output, is not seen.
    """
    found: dict[Path, set[int]] = {}
    seen = set()  # a folder named twice (REPORT's is reports/) is read once
    for place in places:
        try:
            entries = sorted(place.iterdir()) if place.is_dir() else []
        except OSError:
            continue
        for path in entries:
            resolved = path.resolve()
            if resolved in seen or not path.is_file():  # not a FIFO: opening one would block
                continue
            seen.add(resolved)
            if skip is not None and same_file(path, skip):  # a hard link of this run's report, too
                continue
            header = _first_header(path)
            if header is None or header.command != "rollback" or header.shape.get("source_run") != run_id:
                continue
            try:
                rows = {r.row for r in read_actions(path) if r.outcome in _MAY_HAVE_ROLLED_BACK and r.row}
            except (UsageError, OSError):
                continue  # a damaged report of another run: its own commands say what is wrong
            if rows:
                found[path] = rows
    return found


def _first_header(path: Path) -> RunHeader | None:
    try:
        with path.open("rb") as handle:
            data = orjson.loads(handle.readline(HEADER_MAX))
        return RunHeader.from_dict(data) if isinstance(data, dict) and data.get("type") == "run" else None
    except (OSError, ValueError):  # orjson.JSONDecodeError is a ValueError
        return None


def _blocked(code: str, message: str, snapshot: Snapshot | None = None) -> Finding:
    return Finding(outcome=Action.BLOCKED, code=code, message=message, snapshot=snapshot)


async def _volume(route: Route, row: Record, policy: RetryPolicy, kind: evs.Kind) -> Volume | None:
    """The row's disk as shown (``None``: gone)."""
    return await show_volume(route, str(row.volume_id), policy, kind=kind)


async def _snapshot(route: Route, row: Record, policy: RetryPolicy, kind: evs.Kind) -> Snapshot | None:
    """The row's snapshot as shown (``None``: gone); a group member as its group's member list shows it
    (one request: a group has at most 64 members)."""
    if not row.snapshot_group_id:
        return await show_snapshot(route, str(row.snapshot_id), policy, kind=kind)
    members = await group_members(route, row.snapshot_group_id, policy, kind=kind)
    return next((member for member in members if member.id == row.snapshot_id), None)


async def _send(route: Route, row: Record, plan: RestorePlan, found: Look) -> Finding:
    """POST the rollback; ``ROLLED_BACK`` here means accepted (or found taken), to be waited for.

    When the disk cannot be looked at after a request went out, the row is ``UNCONFIRMED`` with the
    requests it really sent (``attempts``, the last status), so ``--resume`` looks before resending.
    """
    sent: list[Finding] = [Finding(outcome=Action.FAILED, snapshot=found.snapshot)]
    try:
        return await _send_until_settled(route, row, plan, found, sent)
    except ListingFailed as exc:
        return dataclasses.replace(
            sent[0],
            outcome=Action.FAILED,
            code=UNCONFIRMED,
            message=f"the disk could not be looked at after the rollback was sent ({exc}); "
            "--resume looks at it before anything is sent again",
        )


async def _send_until_settled(
    route: Route, row: Record, plan: RestorePlan, found: Look, sent: list[Finding]
) -> Finding:
    """The sends, under the policy's retries: an attempt whose answer may have been lost is followed by
    a watch of the disk (``_taken``, then every check again) instead of a pause, before the one resend.
    ``sent[0]`` keeps the last attempt's finding (what ``_send`` records when a look fails)."""
    call = evs.rollback_snapshot(
        route.project_id, str(row.snapshot_id), str(row.volume_id), member=bool(row.snapshot_group_id)
    )
    uncertain = doubtful = False  # doubtful: some attempt may have arrived without an answer
    before = None if plan.resend else found.disk_updated  # a moved updated_at counts (``RestorePlan``)
    journaled = False
    last = sent[0]
    loop = retrying(plan.policy, reraise=False)
    async for attempt in loop:
        with attempt:
            if uncertain:
                sends = attempt.number - 1
                if await _taken(route, row, plan, patience=plan.settle, before=before):
                    return dataclasses.replace(last, outcome=Action.ROLLED_BACK, attempts=sends)
                if not plan.resend:
                    return _lost_unseen(last, plan)
                again = await look(route, row, plan)  # every check again, before the one resend
                if again.blocker is not None:
                    return dataclasses.replace(again.blocker, attempts=sends)
                if again.running or again.ended is not None:  # (ended: the earlier run's ran; watched)
                    return dataclasses.replace(last, outcome=Action.ROLLED_BACK, attempts=sends)
                uncertain = False
            if plan.stopping():
                raise RowStopped  # not sent (again): no record, --resume looks at the disk first
            if not journaled:  # before the first request leaves: --resume then looks before resending
                plan.sending(row, found.disk_updated)
                journaled = True
            try:
                reply = await route.send(call)
            except TransportError as exc:
                uncertain = exc.may_have_arrived
                doubtful = doubtful or uncertain
                last = sent[0] = dataclasses.replace(
                    last, code=exc.code, message=str(exc), http_status=None, attempts=attempt.number
                )
                raise TryAgain(str(exc), wait=0.0 if uncertain else None) from None
            answer = reply.answer
            code, message = answer.error() if not answer.ok else (None, None)
            last = sent[0] = dataclasses.replace(
                last,
                code=code,
                message=message,
                http_status=answer.status,
                request_id=answer.request_id,
                attempts=attempt.number,
            )
            if reply.verdict is Verdict.SUCCESS:
                return dataclasses.replace(last, outcome=Action.ROLLED_BACK)
            if reply.verdict is Verdict.FINAL:
                if doubtful and await _taken(route, row, plan, patience=0.0):
                    return dataclasses.replace(last, outcome=Action.ROLLED_BACK, code=None, message=None)
                return dataclasses.replace(last, outcome=Action.REJECTED)
            uncertain = reply.verdict is Verdict.UNCERTAIN
            doubtful = doubtful or uncertain
            # an answer that may be lost is watched for (above), not waited out
            raise TryAgain(f"{answer.status} {code}", wait=0.0 if uncertain else None)
    if uncertain and await _taken(route, row, plan, patience=plan.settle, before=before):
        return dataclasses.replace(last, outcome=Action.ROLLED_BACK, code=None, message=None)
    if uncertain and not plan.resend:
        return _lost_unseen(last, plan)
    return dataclasses.replace(
        last,
        message=f"gave up after {loop.number} attempts ({last.message or last.code}); --resume looks at the "
        "disk before anything is sent again",
    )


def _lost_unseen(last: Finding, plan: RestorePlan) -> Finding:
    why = last.message or last.code or last.http_status
    return dataclasses.replace(
        last, code=UNCONFIRMED, message=f"{LOST_UNSEEN} (the disk was watched {plan.settle:g}s; {why})"
    )


async def _taken(
    route: Route, row: Record, plan: RestorePlan, *, patience: float, before: str | None = None
) -> bool:
    """True when the disk shows this row's rollback (running from its snapshot, or failed) within
    ``patience`` seconds. A disk rolling back from another snapshot (another run's) is not ours. With
    ``before`` (the disk's ``updated_at`` before the send), an available disk changed since took it too
    (the rollback ran and ended between two looks)."""
    policy = plan.reads
    async for _ in polling(first=SETTLE_STEP, factor=1.0, cap=SETTLE_STEP, patience=patience):
        snapshot = await _snapshot(route, row, policy, evs.Kind.LOOKUP)
        if snapshot is not None and snapshot.status == "rollbacking":
            return True  # a snapshot rolls back onto its own disk only: this row's request was taken
        volume = await _volume(route, row, policy, evs.Kind.LOOKUP)
        disk = None if volume is None else volume.status
        if disk == "error_rollbacking" and row.row not in plan.retry:  # (a retried one started there)
            return True
        updated = None if volume is None else volume.updated_at
        if before is not None and disk == "available" and updated not in (None, before):
            return True
        # rollbacking here is another snapshot's rollback: watch on (ours may still start)
        if disk not in ("available", "rollbacking"):
            return False
    return False


@dataclasses.dataclass(slots=True, eq=False, repr=False)
class Watch:
    """A rollback sent (or found under way) whose end is not seen yet, and when to look next."""

    sent: Finding
    seen: bool  # ``rollbacking`` was seen
    before: str | None  # the disk's updated_at before the send
    started: float  # anyio time the watch began
    due: float  # anyio time of the next look
    interval: float | None = None  # None: the plan's first interval
    retried: bool = False  # sent from error_rollbacking: that state alone does not end it at first


async def poll(route: Route, row: Record, plan: RestorePlan, watch: Watch) -> Finding | None:
    """One look at the disk and the snapshot: the row's finding once its rollback has ended, else
    ``None`` (``watch.due`` then says when to look again)."""
    try:
        volume = await _volume(route, row, plan.reads, evs.Kind.POLL)
        snapshot = await _snapshot(route, row, plan.reads, evs.Kind.POLL)
    except ListingFailed as exc:  # a rollback may have been sent: its disk is looked at again first
        return unconfirmed(watch, exc)
    return judge(row, plan, watch, volume, None if snapshot is None else snapshot.status)


def unconfirmed(watch: Watch, exc: Exception) -> Finding:
    return dataclasses.replace(
        watch.sent,
        outcome=Action.FAILED,
        code=UNCONFIRMED,
        message=f"the disk could not be looked at after the rollback was sent ({exc}); "
        "--resume looks at it before anything is sent again",
    )


def judge(
    row: Record, plan: RestorePlan, watch: Watch, volume: Volume | None, status: str | None
) -> Finding | None:
    """What one look at the disk (and the snapshot's ``status``, when looked at) says; the disk's status
    gives the outcome. ``None``: still under way, and ``watch.due`` moves on (the interval grows by half
    up to the plan's maximum).

    A disk that still shows ``available`` right after the 202 may not have started yet: it counts as
    done once ``rollbacking`` was seen, or once its ``updated_at`` differs from ``watch.before`` (the
    value looked at before the send: the disk changed since, so the rollback ran and ended before this
    look), or after ``settle`` seconds.
    """
    sent = watch.sent
    now = anyio.current_time()
    elapsed = now - watch.started
    disk = None if volume is None else volume.status
    updated = None if volume is None else volume.updated_at
    changed = watch.before is not None and updated is not None and updated != watch.before
    # A retried rollback starts from error_rollbacking: only once it moved (rollbacking seen, the disk
    # updated) or the settle time passed does that state mean this rollback failed too.
    unmoved = watch.retried and not (watch.seen or changed) and elapsed < plan.settle
    if disk == "error_rollbacking" and not unmoved:
        return dataclasses.replace(
            sent,
            outcome=Action.ROLLBACK_FAILED,
            code="VOLUME_ERROR_ROLLBACKING",
            message=f"disk {row.volume_id} ended error_rollbacking: the rollback failed",
        )
    if disk is None:
        return dataclasses.replace(
            sent,
            outcome=Action.FAILED,
            code="VOLUME_NOT_FOUND",
            message=f"disk {row.volume_id} disappeared during the rollback",
        )
    if "rollbacking" in (disk, status):
        watch.seen = True
    elif disk in ("available", "in-use", "attaching") and (watch.seen or changed or elapsed >= plan.settle):
        return dataclasses.replace(sent, outcome=Action.ROLLED_BACK, code=None, message=None)
    if elapsed >= plan.wait.timeout:
        return dataclasses.replace(
            sent,
            outcome=Action.FAILED,
            code="ROLLBACK_TIMEOUT",
            message=f"disk {row.volume_id} is still {disk} after {elapsed:.0f}s; --resume waits again",
        )
    interval = plan.wait.interval if watch.interval is None else watch.interval
    watch.due = now + min(interval, max(0.0, plan.wait.timeout - elapsed))
    watch.interval = min(interval * 1.5, plan.wait.max_interval)
    return None
