"""Deleting snapshots: the one DELETE loop (``delete``), for ``prune``, ``cleanup`` (``Deleter``) and
create's end-of-run sweeps (``delete_snapshot``; a second snapshot group of a server: ``delete`` with
``group=True``, the whole group); what is deleted is chosen elsewhere (``retention``, ``cleanup_pass``,
``sweep``, ``groupsweep``).

Every answer is handled the same way, whoever deletes:

- 2xx: the deletion is under way; the snapshot's own 404 (``Answer.gone``): already gone. Both are a
  success. A gateway 404 closes the route (``routes``): nothing is recorded as deleted.
- 400 ``EVS.1047`` ("wrong state") is looked into: a snapshot already ``deleting`` (an earlier
  attempt whose answer was lost got through) or gone is a success; one still ``creating``, or
  ``available`` or ``error`` by now, is sent again while the caller's ``patience`` lasts (the
  sweep's; ``prune`` and ``cleanup`` have none), else the deletion is refused, naming the state.
- Another final answer (4xx, a 5xx with a final EVS code) refuses the deletion; throttling, other
  5xx and transport errors are retried under the policy (and on while the patience lasts); a
  refusal of the credentials or project closes the route and raises ``RouteClosed``.

With waiting (``Deleter``), a deletion ends when the snapshot is gone (``deleting``, then 404).
Deletions are confirmed while later DELETEs are still being sent: by paging the project's list while
many are pending (a snapshot absent from it is gone), by parallel GETs while few are (404: gone);
each record is written when its deletion ends.

Before each DELETE of ``Deleter``, its last look (``lastlook``): the snapshot (group) is read again, one
GET; one gone, held or carrying another marker since the listing ends there, with no DELETE and no
``sending`` line. Then its ``sending`` line (the record it will end in, as ``Action.SENDING``; a
group's: one per member) is written to the report (``journal``); a line that cannot be written stops
the run (``ReportUnwritable``) and that DELETE is not sent. So a kill between a DELETE and its record
leaves a line naming the snapshot: ``--resume`` settles each such send (``Frame.sent``): a snapshot
the listing no longer shows is looked up (``look_again``) and, gone, gets its ``deleted`` record
(``EARLIER_DELETE``); one still there is judged again, as listed ones are.

A snapshot group (v5) is deleted the same way, whole: one ``DELETE /v5/.../snapshot-groups/{id}``
(``delete(..., group=True)``), confirmed by GETs of the group (404, or ``deleted``: gone). Its job
(``Job.members``) holds one record per member, and each member gets its record when the group's
deletion ends: the members go with their group, never one by one.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import random
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import anyio

from orchestrator.actions import Action, ActionRecord, now_iso
from orchestrator.api import evs
from orchestrator.api.groups import show_group
from orchestrator.api.safe import show_snapshot, snapshot_pages, snapshot_status
from orchestrator.errors import ListingFailed, RouteClosed, RunAborted, TransportError
from orchestrator.lastlook import OnHold, last_look
from orchestrator.retry import RetryPolicy, TryAgain, Verdict, polling, retrying

if TYPE_CHECKING:
    from orchestrator.api.routes import Route
    from orchestrator.api.views import Snapshot

NOT_YET_DELETABLE = "EVS.1047"  # 400 "wrong state": creating, or already deleting
DELETING = "deleting"
DELETABLE = frozenset({"available", "error"})  # the only states the service deletes from
# States an EVS.1047 may be sent again from: not deletable yet (creating), or deletable by now.
SETTLING = frozenset({"creating", *DELETABLE})
WRONG_STATE_PAUSE = 0.2  # seconds added to the backoff while a state is waited out
FIRST_POLL = 0.2
MAX_POLL = 5.0


class Ended(enum.Enum):
    """How one deletion's requests ended."""

    DONE = "done"  # accepted (2xx), or found deleting already, or gone
    REJECTED = "rejected"  # a final answer: the service will not delete it (as it is)
    FAILED = "failed"  # retries spent, or an EVS.1047 whose snapshot could not be looked at


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Deletion:
    """The end of ``delete``: how it ended, whether the snapshot is surely gone, and the last answer
    (``code``, ``message``: its error, or the transport error's)."""

    ended: Ended
    gone: bool = False
    attempts: int = 0
    http_status: int | None = None
    request_id: str | None = None
    code: str | None = None
    message: str | None = None
    state: str | None = None  # the snapshot's status, when an EVS.1047 was looked into
    unreadable: bool = False  # an EVS.1047 whose snapshot could not be looked at
    transport: bool = False  # the last attempt got no answer

    @property
    def why(self) -> str | None:
        """One line on why it did not succeed (``None`` when it did)."""
        if self.ended is Ended.DONE:
            return None
        if self.transport:
            return self.message
        text = f"{self.http_status} {self.code}: {self.message or 'no message'}"
        if self.unreadable:
            return f"{text} (and its status could not be read)"
        return text if self.state is None else f"{text} (the snapshot is {self.state})"


async def delete(
    route: Route, snapshot_id: str, policy: RetryPolicy, *, patience: float = 0.0, group: bool = False
) -> Deletion:
    """Delete one snapshot (with ``group``: one v5 snapshot group, its members with it), handling each
    answer as the module docstring says; raises ``RouteClosed`` when the route refuses."""
    if group:
        call = evs.delete_snapshot_group(route.project_id, snapshot_id)
    else:
        call = evs.delete_snapshot(route.project_id, snapshot_id)
    loop = retrying(policy, patience=patience, pause=_pause(policy), reraise=False)
    last = Deletion(ended=Ended.FAILED)
    async for attempt in loop:
        with attempt:
            try:
                reply = await route.send(call)
            except TransportError as exc:
                last = Deletion(  # the last answer's status stays on the record
                    ended=Ended.FAILED,
                    attempts=attempt.number,
                    http_status=last.http_status,
                    request_id=last.request_id,
                    code=exc.code,
                    message=str(exc),
                    transport=True,
                )
                raise TryAgain(str(exc)) from None
            answer = reply.answer
            code, message = answer.error() if not answer.ok else (None, None)
            last = Deletion(
                ended=Ended.FAILED,
                attempts=attempt.number,
                http_status=answer.status,
                request_id=answer.request_id,
                code=code,
                message=message,
            )
            if reply.verdict is Verdict.SUCCESS or answer.gone:
                return dataclasses.replace(last, ended=Ended.DONE, gone=answer.gone, code=None, message=None)
            if code == NOT_YET_DELETABLE:
                last = await _wrong_state(route, snapshot_id, policy, last, group=group)
                if last.ended is Ended.DONE or last.unreadable:
                    return last
                if last.state not in SETTLING or loop.waited >= patience:
                    return last
                raise TryAgain(
                    str(last.why), wait=policy.backoff(min(attempt.number, 6), loop.rng) + WRONG_STATE_PAUSE
                )
            if reply.verdict is Verdict.FINAL:
                return dataclasses.replace(last, ended=Ended.REJECTED)
            raise TryAgain(f"{answer.status} {code}")
    return last


def _pause(policy: RetryPolicy) -> Callable[[int, random.Random], float]:
    """The policy's backoff; past its attempts (while a patience lasts), at least WRONG_STATE_PAUSE."""

    def pause(number: int, rng: random.Random) -> float:
        if number < policy.max_attempts:
            return policy.backoff(number, rng)
        return policy.backoff(min(number, 6), rng) + WRONG_STATE_PAUSE

    return pause


async def _wrong_state(
    route: Route, snapshot_id: str, policy: RetryPolicy, last: Deletion, *, group: bool = False
) -> Deletion:
    """An EVS.1047 looked into: gone or ``deleting`` is done; any other state refuses (for now)."""
    try:
        status = await (group_status if group else snapshot_status)(route, snapshot_id, policy)
    except ListingFailed:
        return dataclasses.replace(last, unreadable=True)
    if status is None or status == DELETING:
        return dataclasses.replace(last, ended=Ended.DONE, gone=status is None, code=None, message=None)
    return dataclasses.replace(last, ended=Ended.REJECTED, state=status)


async def group_status(route: Route, group_id: str, policy: RetryPolicy) -> str | None:
    """A group's status, ``None`` once it is gone; raises ``ListingFailed`` when it cannot be read."""
    group = await show_group(route, group_id, policy)
    return None if group is None else str(group.status)


async def delete_snapshot(
    route: Route, snapshot_id: str, policy: RetryPolicy, *, patience: float
) -> tuple[bool, str | None]:
    """``delete`` as the sweep records it: ``(True, None)`` when it is going or gone, else
    ``(False, why)``."""
    deletion = await delete(route, snapshot_id, policy, patience=patience)
    return deletion.ended is Ended.DONE, deletion.why


@dataclasses.dataclass(frozen=True, slots=True, eq=False, repr=False)
class Job:
    """One snapshot to delete: its route and its record so far; ``sent``: a DELETE already went out.
    With ``members``, a snapshot group (``record.key`` is the group's id): each member's record is
    written with the outcome of the group's deletion."""

    route: Route
    record: ActionRecord
    sent: bool = False
    members: tuple[ActionRecord, ...] = ()


@dataclasses.dataclass(slots=True, eq=False, repr=False)
class Pending:
    """An accepted deletion not yet seen gone: its record, when its job began, when its wait ends."""

    record: ActionRecord
    started: float
    until: float
    members: tuple[ActionRecord, ...] = ()


NOT_WAITED = "deletion accepted (202); not waited for: the run stopped"


class Deleter:
    """Sends the DELETEs with a fixed pool of workers and meanwhile (unless ``wait_timeout`` is
    ``None``) confirms that each accepted deletion is gone: by listing the project (1000 a page) while
    more are pending than one wave of GETs (the in-flight limit) or than the list has pages, else by
    parallel GETs (404: gone). Every request goes through the route, under the connection's in-flight
    limit. Every job ends in exactly one record, written through ``write`` as soon as its deletion
    ends; jobs not started when ``stopping()`` turns true, or whose route closed, get none
    (``--resume``). Each job not yet sent takes its last look first (``lastlook``; a held one ends in
    ``on_hold``'s record), and each DELETE is journaled first, through ``journal`` (module docstring)."""

    def __init__(
        self,
        *,
        policy: RetryPolicy,
        concurrency: int,
        wait_timeout: float | None,
        write: Callable[[ActionRecord], None],
        stopping: Callable[[], bool],
        on_hold: OnHold,
        journal: Callable[[ActionRecord], None] | None = None,
    ) -> None:
        self.policy = policy
        self.on_hold = on_hold
        self.concurrency = concurrency
        self.wait_timeout = wait_timeout
        self.write = write
        self.stopping = stopping
        self.journal = journal
        self._pending: dict[Route, dict[str, Pending]] = {}
        self._pages: dict[Route, int] = {}  # list pages a route's project took, at the last listing
        self._sending = False
        self._arrived = False  # deletions accepted since the last round

    async def run(self, jobs: Iterable[Job]) -> None:
        self._sending = True
        async with anyio.create_task_group() as outer:
            if self.wait_timeout is not None:
                outer.start_soon(self._confirm)
            try:
                await self._send_all(jobs)
            finally:
                self._sending = False
        self._flush(Action.DELETED, None, NOT_WAITED)  # a stop left these behind the confirmation

    async def _send_all(self, jobs: Iterable[Job]) -> None:
        send, receive = anyio.create_memory_object_stream[Job](2 * self.concurrency)
        async with anyio.create_task_group() as group:
            async with receive:
                for _ in range(self.concurrency):
                    group.start_soon(self._worker, receive.clone())
            async with send:
                for job in jobs:
                    if self.stopping():
                        break
                    await send.send(job)

    async def _worker(self, stream: anyio.abc.ObjectReceiveStream[Job]) -> None:
        async with stream:
            async for job in stream:
                if self.stopping() or job.route.closed is not None:
                    continue  # no record: --resume lists it again
                started = time.monotonic()
                record, gone = dataclasses.replace(job.record, outcome=Action.DELETED), False
                if not job.sent:
                    try:
                        ended = await last_look(
                            job.route, job.record, self.policy, self.on_hold, group=bool(job.members)
                        )
                        if ended is None and self.stopping():
                            continue  # no record, no line: --resume lists it again
                        if ended is None:
                            self._journal(job)  # on disk before the DELETE leaves; raises when it cannot be
                            record, gone = await self._delete(job.route, job.record, group=bool(job.members))
                        else:
                            record, gone = ended, True  # ended without a DELETE
                    except RouteClosed as exc:
                        record = job.record.ending(Action.FAILED, exc.code, exc.message)
                if record.outcome is Action.DELETED and not gone and self.wait_timeout is not None:
                    until = time.monotonic() + self.wait_timeout
                    self._pending.setdefault(job.route, {})[record.key] = Pending(
                        record, started, until, job.members
                    )
                    self._arrived = True
                else:
                    self._finish(record, started, job.members)

    def _journal(self, job: Job) -> None:
        """The ``sending`` line of each record the job ends in (a group's members', else its own)."""
        if self.journal is None:
            return
        stamp = now_iso()
        for record in job.members or (job.record,):
            self.journal(dataclasses.replace(record, outcome=Action.SENDING, finished_at=stamp))

    async def _delete(
        self, route: Route, record: ActionRecord, *, group: bool = False
    ) -> tuple[ActionRecord, bool]:
        """One ``delete`` (no patience): the record and whether the snapshot (group) is surely gone."""
        deletion = await delete(route, record.key, self.policy, group=group)
        record = dataclasses.replace(record, attempts=deletion.attempts)
        if deletion.http_status is not None:
            record = dataclasses.replace(
                record, http_status=deletion.http_status, request_id=deletion.request_id
            )
        if deletion.ended is Ended.DONE:
            return record.ending(Action.DELETED), deletion.gone
        message = deletion.message
        if deletion.state is not None:
            message = f"{message} (the snapshot is {deletion.state})"
        outcome = Action.REJECTED if deletion.ended is Ended.REJECTED else Action.FAILED
        return record.ending(outcome, deletion.code, message), False

    async def _confirm(self) -> None:
        """Rounds of status checks, while DELETEs are still being sent and after, until every accepted
        deletion is gone or out of time, or the run stops. The pause between rounds starts at
        ``FIRST_POLL`` again whenever new deletions were accepted, and grows to ``MAX_POLL`` otherwise."""
        if not (self._sending or self._pending):
            return
        rounds = polling(first=FIRST_POLL, factor=1.5, cap=MAX_POLL, lead=True, sleep=self._pause)
        rounds.within(self._time_left())
        async for _ in rounds:
            if self.stopping():
                self._flush(Action.DELETED, None, NOT_WAITED)
                return
            self._expire()
            fresh, self._arrived = self._arrived, False
            if self._pending:
                async with anyio.create_task_group() as group:
                    for route in list(self._pending):
                        group.start_soon(self._check, route)
            if fresh or not self._pending:
                rounds.reset()
            if not (self._sending or self._pending):
                return
            rounds.within(self._time_left())

    def _time_left(self) -> float:
        """Seconds until the first pending deletion runs out of time (``MAX_POLL`` when none is pending)."""
        soonest = min((p.until for items in self._pending.values() for p in items.values()), default=None)
        return MAX_POLL if soonest is None else max(0.0, soonest - time.monotonic())

    def _expire(self) -> None:
        now = time.monotonic()
        for route, items in list(self._pending.items()):
            for snapshot_id, pending in list(items.items()):
                if pending.until <= now:
                    why = "deletion accepted (202); not gone in time"
                    self._end(
                        route, snapshot_id, pending.record.ending(Action.FAILED, "DELETE_WAIT_TIMEOUT", why)
                    )

    async def _check(self, route: Route) -> None:
        """One round for one route: its pending deletions that are gone end (or ``error_deleting``)."""
        pending = self._pending.get(route, {})
        groups = [key for key, item in pending.items() if item.members]
        ids = [key for key, item in pending.items() if not item.members]
        try:
            if len(ids) > max(self.concurrency, self._pages.get(route, 1)):
                await self._by_listing(route, set(ids))
                ids = []
            async with anyio.create_task_group() as group:
                for snapshot_id in [*ids, *groups]:
                    group.start_soon(self._by_get, route, snapshot_id)
        except (ListingFailed, RouteClosed) as exc:
            why = f"deletion accepted (202) but could not be confirmed: {exc}"
            self._flush(Action.FAILED, "DELETE_UNCONFIRMED", why, only=route)

    async def _by_listing(self, route: Route, ids: set[str]) -> None:
        """Page the whole project: a pending snapshot absent from it is gone. A stop mid-way decides
        nothing (an unfinished listing proves no absence)."""
        seen: dict[str, str] = {}
        pages = 0
        async for page in snapshot_pages(route, self.policy, overlap=True):
            if self.stopping():
                return
            pages += 1
            for item in page:
                if item.id in ids:
                    seen[item.id] = item.status or ""
        self._pages[route] = pages
        for snapshot_id in ids:
            self._judge(route, snapshot_id, seen.get(snapshot_id))

    async def _by_get(self, route: Route, snapshot_id: str) -> None:
        """One GET (404: gone); a GET that keeps failing leaves this deletion unconfirmed."""
        pending = self._pending.get(route, {}).get(snapshot_id)
        group = pending is not None and bool(pending.members)
        try:
            status = await (group_status if group else snapshot_status)(route, snapshot_id, self.policy)
        except ListingFailed as exc:
            pending = self._pending.get(route, {}).get(snapshot_id)
            if pending is not None:
                why = f"deletion accepted (202) but could not be confirmed: {exc}"
                self._end(route, snapshot_id, pending.record.ending(Action.FAILED, "DELETE_UNCONFIRMED", why))
            return
        except RouteClosed as exc:
            why = f"deletion accepted (202) but could not be confirmed: {exc}"
            self._flush(Action.FAILED, "DELETE_UNCONFIRMED", why, only=route)
            return
        self._judge(route, snapshot_id, status)

    def _judge(self, route: Route, snapshot_id: str, status: str | None) -> None:
        """``None`` (gone) ends the deletion; ``error_deleting`` fails it; anything else waits on."""
        pending = self._pending.get(route, {}).get(snapshot_id)
        if pending is None:
            return  # ended meanwhile (out of time, or a stop)
        if status is None or (pending.members and status == "deleted"):
            self._end(route, snapshot_id, pending.record)
        elif status == "error_deleting":
            why = "the snapshot ended error_deleting; ask the provider's support"
            self._end(route, snapshot_id, pending.record.ending(Action.FAILED, "ERROR_DELETING", why))

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, in slices, so that a stop is noticed within a tenth of a second."""
        slices = max(1, math.ceil(seconds / 0.1))
        for _ in range(slices):
            if self.stopping():
                return
            await anyio.sleep(seconds / slices)

    def _end(self, route: Route, snapshot_id: str, record: ActionRecord) -> None:
        items = self._pending.get(route, {})
        pending = items.pop(snapshot_id)
        if not items:
            self._pending.pop(route, None)
        self._finish(record, pending.started, pending.members)

    def _flush(self, outcome: Action, code: str | None, message: str, *, only: Route | None = None) -> None:
        for route in [only] if only is not None else list(self._pending):
            for pending in self._pending.pop(route, {}).values():
                self._finish(pending.record.ending(outcome, code, message), pending.started, pending.members)

    def _finish(self, record: ActionRecord, started: float, members: tuple[ActionRecord, ...] = ()) -> None:
        """Write the record (a group's: each member's, with the group's outcome and answer)."""
        elapsed = round((time.monotonic() - started) * 1000)
        record = dataclasses.replace(record, finished_at=now_iso(), elapsed_ms=elapsed)
        if not members:
            self.write(record)
            return
        answer = {
            name: getattr(record, name)
            for name in (
                "outcome",
                "rule",
                "http_status",
                "error_code",
                "error_message",
                "request_id",
                "attempts",
            )
        }
        for member in members:
            self.write(
                dataclasses.replace(member, **answer, finished_at=record.finished_at, elapsed_ms=elapsed)
            )


# --resume: a snapshot whose DELETE an earlier run sent (its sending line) and never recorded deleted
EARLIER_DELETE = "an earlier run sent its DELETE (its sending line) and recorded no deletion; gone now (404)"
EARLIER_UNDER_WAY = (
    "an earlier run sent its DELETE (its sending line) and recorded no deletion; it was under way"
)


async def look_again(
    route: Route, sent: Iterable[ActionRecord], policy: RetryPolicy
) -> tuple[list[ActionRecord], list[Snapshot]]:
    """DELETEs an earlier run sent (their ``sending`` lines, ``Frame.sent``) whose snapshots a listing of
    ``route`` did not show, each looked up once (GETs in parallel, under the route's in-flight limit):
    the ``deleted`` records of those gone (404: ``EARLIER_DELETE``), and the snapshots still there (a
    listing that lagged, or deleting by now), to be judged as listed ones are. Raises ``ListingFailed``
    when one cannot be read (as a listing that fails)."""
    lines = list(sent)
    seen: dict[str, Snapshot | None] = {}
    failed: list[RunAborted] = []

    async def look(key: str) -> None:
        try:
            seen[key] = await show_snapshot(route, key, policy)
        except (ListingFailed, RouteClosed) as exc:  # raised as itself below, not in a group
            failed.append(exc)

    async with anyio.create_task_group() as group:
        for line in lines:
            group.start_soon(look, line.key)
    if failed:
        raise failed[0]
    gone: list[ActionRecord] = []
    for line in lines:
        if seen[line.key] is not None:
            continue
        stamp = now_iso()
        gone.append(
            dataclasses.replace(
                line.ending(Action.DELETED, None, EARLIER_DELETE),
                http_status=404,
                request_id=None,
                attempts=0,
                started_at=stamp,
                finished_at=stamp,
                elapsed_ms=0,
            )
        )
    return gone, [snapshot for snapshot in seen.values() if snapshot is not None]
