"""``create --consistency server``: one v5 snapshot group (a crash-consistent set) per server.

``groupplan`` decides, before anything is sent, which rows go together (one server's). Identity is
the group's: each group carries the tag ``evs_snapshot_run`` = the run id and is found by (server,
run) with the group list's ``server_id`` and ``tags`` filters, never by name. A create whose answer is
uncertain (5xx, no answer, cut off, or sent by an earlier process of a resumed run) is looked up by tag
and server until the group is found or ``--settle`` has passed since the send; only then may it be sent
again. ``400 EVS.2409`` (a snapshot of a member disk is being created) is sent again after a pause.
Each row's record names its member (``snapshot_id``, from the member list) and ``snapshot_group_id``.
A server with an ``invalid`` row is not sent: its other rows end ``failed`` ``GROUP_INCOMPLETE`` (a
group that leaves out one of the server's disks is not the consistent set asked for). The group's
name and description are the server's first row's. ``groupsweep`` deletes a second group of a server.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING

import anyio

from orchestrator.api import evs
from orchestrator.api.groups import group_members, list_groups
from orchestrator.api.safe import ONE_TRY
from orchestrator.api.views import Snapshot, SnapshotGroup
from orchestrator.errors import ListingFailed, ProjectLookupFailed, RouteClosed, TransportError, UsageError
from orchestrator.groupplan import BUSY, GONE, Server, group_tags
from orchestrator.models import UNCONFIRMED, Answer, Outcome, Record, SnapshotRequest, utc_iso, utc_now
from orchestrator.report import ReportWriter, ResumeBook
from orchestrator.retry import TryAgain, Verdict, retry_after, retrying
from orchestrator.runner import Gate, RunPlan, Stopped, Unconfirmed, row_record, settle
from orchestrator.tally import Tally

if TYPE_CHECKING:
    from orchestrator.api.routes import Route, Router


@dataclasses.dataclass(slots=True, eq=False, repr=False)
class _Unit:
    """One server's rows to send together, and the state of their tries."""

    server: str
    requests: list[SnapshotRequest]
    attempts: int = 0
    uncertain_since: float | None = None  # monotonic time of the attempt that may have acted
    maybe_sent: bool = False
    resumed: bool = False  # an earlier process may have made the group: look it up before sending
    answer: Answer | None = None
    error: tuple[str, str | None] | None = None
    started: datetime = dataclasses.field(default_factory=utc_now)
    clock: float = dataclasses.field(default_factory=time.monotonic)


class GroupRunner:
    """Sends one group create per server (``concurrency`` at a time) and writes one record per row."""

    def __init__(
        self,
        plan: RunPlan,
        *,
        servers: dict[str, Server],
        router: Router | None,
        writer: ReportWriter,
        tally: Tally,
        resume: ResumeBook[int, Outcome] | None = None,
        warn: Callable[[str], None] | None = None,
        gate: Gate | None = None,
    ) -> None:
        self.plan = plan
        self.router = router
        self.writer = writer
        self.tally = tally
        self.resume = resume
        self.warn = warn
        self.gate = gate  # create's freeze hooks: a server's pre-hook before its group create
        self.server_of = {row: server for server, entry in servers.items() for row in entry.rows}
        self.random = random.Random()
        self.stopping = False
        self.in_doubt = resume is not None and resume.doubted

    def emit(self, record: Record) -> None:
        self.writer.write(record)
        self.tally.add(record)

    def stop(self) -> None:
        self.stopping = True
        if self.gate is not None:
            self.gate.stop()

    def _pass(self, queued: set[int]) -> None:
        """Tell the gate (the freeze hooks) every row taken, in manifest order, and which will be sent."""
        if self.gate is not None:
            for row in sorted(self.server_of):
                self.gate.passed(row, queued=row in queued)
            self.gate.closed()

    def _done(self, unit: _Unit, records: Iterable[Record] | None) -> None:
        """Tell the gate a unit's rows ended (``None``: without records, the run is stopping)."""
        if self.gate is not None:
            ended = {} if records is None else {record.row: record for record in records}
            for request in unit.requests:
                self.gate.done(request.row, ended.get(request.row))

    def gather(self, items: Iterable[SnapshotRequest | Record]) -> list[_Unit]:
        """The servers' units; records of invalid rows are written, finished rows of a resume counted.
        A server with an invalid row sends nothing: its other rows end ``GROUP_INCOMPLETE``."""
        units: dict[str, list[SnapshotRequest]] = defaultdict(list)
        invalid: dict[str, int] = {}
        done: set[str] = set()  # servers with a row an earlier process finished: their group exists
        for item in items:
            server = self.server_of[item.row]
            previous = None if self.resume is None else self.resume.outcome(item.row)
            if self.resume is not None and self.resume.finished(item.row) and previous is not None:
                self.tally.add_previous(previous, item.row)
                done.add(server)
            elif isinstance(item, Record):
                self.emit(item)
                invalid.setdefault(server, item.row)
            else:
                units[server].append(item)
        ready = []
        sent: set[int] = set()
        for server, requests in units.items():
            unit = _Unit(server, requests)
            if server in invalid:
                why = (
                    f"row {invalid[server]} of server {server} is invalid: a group without one of the "
                    "server's disks is not the consistent set asked for; fix the row and --resume"
                )
                for request in requests:
                    self.emit(self._record(request, unit, Outcome.FAILED, error=("GROUP_INCOMPLETE", why)))
                continue
            if self.resume is not None:
                since = [self.resume.uncertain_since(request.row) for request in requests]
                known = [moment for moment in since if moment is not None]
                if known:
                    unit.uncertain_since = max(known) + self.plan.timeout
                    unit.maybe_sent = unit.resumed = True
                if server in done:  # its group was made: found by lookups, never sent for part of it
                    unit.uncertain_since = max(unit.uncertain_since or 0.0, time.monotonic())
                    unit.maybe_sent = unit.resumed = True
            ready.append(unit)
            sent.update(request.row for request in requests)
        self._pass(set() if self.plan.dry_run else sent)  # a dry run freezes nothing
        return ready

    async def run(self, items: Iterable[SnapshotRequest | Record]) -> None:
        """Every server's group, ``concurrency`` at a time; returns when every record is written."""
        units = self.gather(items)
        if self.plan.dry_run:
            for unit in units:
                for request in unit.requests:
                    self.emit(self._record(request, unit, Outcome.PLANNED))
            return
        limiter = anyio.CapacityLimiter(self.plan.concurrency)

        async def one(unit: _Unit) -> None:
            async with limiter:
                if self.stopping:
                    self._done(unit, None)
                    return  # no records: --resume picks the rows up
                await self._unit(unit)

        async with anyio.create_task_group() as group:
            for unit in units:
                group.start_soon(one, unit)

    async def _unit(self, unit: _Unit) -> None:
        records: list[Record] | None = None
        try:
            if self.plan.deadline is None:
                records = await self._process(unit)
            else:
                with anyio.move_on_after(self.plan.deadline - time.monotonic()) as scope:
                    records = await self._process(unit)
                if scope.cancelled_caught:
                    records = self._deadline(unit)
        except Stopped:
            self._done(unit, None)
            return
        for record in records or []:
            self.emit(record)
        self._done(unit, records or [])

    async def _process(self, unit: _Unit) -> list[Record]:
        if self.router is None:
            raise UsageError("a dry run sends nothing")
        first = unit.requests[0]
        if self.gate is not None:  # the server's (or the run's) pre-hook, before its group is sent
            refused = await self.gate.enter(first.row)
            if self.stopping:
                raise Stopped
            if refused is not None:
                return self._failed(unit, ("PRE_HOOK_FAILED", refused))
        try:
            route = await self.router.route_for(first.project_id, first.region)
        except (ProjectLookupFailed, RouteClosed) as exc:
            return self._failed(unit, (exc.code, exc.message))
        except TransportError as exc:
            return self._failed(unit, (exc.code, str(exc)))
        unit.requests = [r._replace(project_id=route.project_id) for r in unit.requests]
        try:
            return await self._attempts(unit, route)
        except RouteClosed as exc:
            if unit.maybe_sent:
                return self._unconfirmed(unit, f"stopped sending ({exc.code})")
            return self._failed(unit, (exc.code, f"not sent: {exc.message}"))
        except Unconfirmed:
            return self._unconfirmed(unit, "lookups kept failing")

    async def _attempts(self, unit: _Unit, route: Route) -> list[Record]:
        policy = self.plan.policy
        tries = retrying(
            policy,
            pause=lambda _number, rng: policy.backoff(max(1, unit.attempts), rng),
            rng=self.random,
            sleep=self._pause,
            reraise=False,
        )
        async for attempt in tries:
            with attempt:
                found = await self._identity(unit, route)
                if found is not None:
                    return await self._accepted(unit, route, found, reconciled=True)
                if self.stopping:
                    raise Stopped
                return await self._send_once(unit, route)
        found = await self._identity(unit, route)  # the last attempt may have acted
        if found is not None:
            return await self._accepted(unit, route, found, reconciled=True)
        return self._records(unit, Outcome.FAILED)

    async def _identity(self, unit: _Unit, route: Route) -> SnapshotGroup | None:
        """Before a send: the group an earlier attempt (or process) made, looked up until found or until
        the settle window has passed; ``None`` when the server's rows may be sent."""
        if unit.resumed:
            unit.resumed = False
            found = await self._look_up(unit, route)
            if isinstance(found, SnapshotGroup):
                return found
        since = unit.uncertain_since
        if since is None:
            return None
        found = await settle(
            lambda: self._look_up(unit, route),
            since=since,
            plan=self.plan,
            stopping=lambda: self.stopping,
            pause=self._pause,
        )
        if found is None:
            unit.uncertain_since = None  # nothing appeared in the whole window: safe to send again
        return found

    async def _look_up(self, unit: _Unit, route: Route) -> SnapshotGroup | bool | None:
        """This run's group of the server (the oldest alive), ``False`` when absent, ``None`` unknown."""
        try:
            found = await list_groups(
                route, ONE_TRY, server_id=unit.server, run_id=self.plan.run_id, kind=evs.Kind.LOOKUP
            )
        except ListingFailed:
            return None
        alive = sorted((g for g in found if g.status not in GONE), key=lambda g: g.created_at or "")
        return alive[0] if alive else False

    async def _send_once(self, unit: _Unit, route: Route) -> list[Record]:
        unit.attempts += 1
        first = unit.requests[0]
        if unit.maybe_sent:
            self.in_doubt = True
        call = evs.create_snapshot_group(
            route.project_id,
            server_id=unit.server,
            volume_ids=[request.volume_id for request in unit.requests],
            name=first.name,
            description=first.description,
            tags=group_tags(self.plan.run_id, unit.requests, self.warn if unit.attempts == 1 else None),
            before=(lambda: self._journal(unit)) if self.writer.resumable else None,
        )
        try:
            reply = await route.send(call)
        except RouteClosed as exc:
            if exc.answer is None:
                unit.attempts -= 1
                raise
            self.in_doubt = True
            unit.answer, unit.error = exc.answer, exc.answer.error()
            return self._records(unit, Outcome.FAILED)
        except TransportError as exc:
            self.in_doubt = True
            unit.answer, unit.error = None, (exc.code, str(exc))
            if exc.may_have_arrived:
                unit.maybe_sent, unit.uncertain_since = True, time.monotonic()
                raise TryAgain(str(exc), wait=0.0) from None
            raise TryAgain(str(exc)) from None
        answer = unit.answer = reply.answer
        unit.error = None if answer.ok else answer.error()
        if reply.verdict is Verdict.SUCCESS:
            group = SnapshotGroup.created(answer.body, server_id=unit.server)
            return await self._accepted(unit, route, group, reconciled=False)
        if reply.verdict is Verdict.FINAL and (unit.error or ("",))[0] != BUSY:
            return self._records(unit, Outcome.REJECTED)
        why = f"{answer.status} {unit.error[0] if unit.error else ''}"
        if reply.verdict is Verdict.UNCERTAIN:
            self.in_doubt = True
            unit.maybe_sent, unit.uncertain_since = True, time.monotonic()
            raise TryAgain(why, wait=0.0)
        raise TryAgain(why, wait=retry_after(answer.retry_after))

    def _journal(self, unit: _Unit) -> None:
        """A ``sending`` line for each row of the server, before the group create leaves."""
        at = utc_iso(utc_now())
        for request in unit.requests:
            self.writer.write_line(
                Record.sending_line(request, run_id=self.plan.run_id, attempts=unit.attempts, at=at)
            )

    async def _accepted(
        self, unit: _Unit, route: Route, group: SnapshotGroup, *, reconciled: bool
    ) -> list[Record]:
        """The rows' records from the group's members (each row's member on its disk)."""
        members: dict[str, Snapshot] = {}
        if group.id:
            try:
                listed = await group_members(route, group.id, self.plan.policy)
            except (ListingFailed, RouteClosed):  # the group exists all the same: its rows are accepted
                listed = []
            members = {member.volume_id: member for member in listed}
        return [
            self._record(
                request,
                unit,
                Outcome.ACCEPTED,
                snapshot=members.get(request.volume_id),
                group_id=group.id or None,
                reconciled=reconciled,
            )
            for request in unit.requests
        ]

    async def _pause(self, seconds: float) -> None:
        if self.plan.deadline is not None:
            seconds = min(seconds, max(0.0, self.plan.deadline - time.monotonic()))
        await anyio.sleep(seconds)

    def _deadline(self, unit: _Unit) -> list[Record]:
        if unit.maybe_sent:
            return self._unconfirmed(unit, "the run's --deadline passed")
        return self._failed(unit, ("DEADLINE_EXCEEDED", "the run's --deadline passed before it was sent"))

    def _unconfirmed(self, unit: _Unit, why: str) -> list[Record]:
        self.in_doubt = True
        last = unit.error[0] if unit.error else "none"
        message = (
            f"{why}; could not confirm whether server {unit.server}'s snapshot group exists "
            f"(last error: {last}); --resume looks again before sending"
        )
        return self._failed(unit, (UNCONFIRMED, message))

    def _failed(self, unit: _Unit, error: tuple[str, str | None]) -> list[Record]:
        unit.error = error
        return self._records(unit, Outcome.FAILED)

    def _records(self, unit: _Unit, outcome: Outcome) -> list[Record]:
        return [self._record(request, unit, outcome) for request in unit.requests]

    def _record(
        self,
        request: SnapshotRequest,
        unit: _Unit,
        outcome: Outcome,
        *,
        snapshot: Snapshot | None = None,
        group_id: str | None = None,
        reconciled: bool = False,
        error: tuple[str, str | None] | None = None,
    ) -> Record:
        return row_record(
            self.plan.run_id,
            request,
            outcome,
            answer=unit.answer,
            error=error or (None if outcome in (Outcome.ACCEPTED, Outcome.PLANNED) else unit.error),
            attempts=unit.attempts,
            started_at=utc_iso(unit.started),
            clock=unit.clock,
            snapshot=snapshot,
            group_id=group_id,
            reconciled=reconciled,
        )
