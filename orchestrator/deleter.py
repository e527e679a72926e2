"""Deleting with confirmation, for ``prune`` and ``cleanup`` (``retention`` chooses what goes).

A DELETE answered 404 is a success (already gone); 400 ``EVS.1047`` on a snapshot already ``deleting``
is one too (an earlier attempt whose answer was lost got through). With waiting, a deletion ends when
the snapshot is gone (``deleting``, then 404). Deletions are confirmed while later DELETEs are still
being sent: by paging the project's list while many are pending (a snapshot absent from it is gone),
by parallel GETs while few are (404: gone); each record is written when its deletion ends.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import anyio

from orchestrator.actions import Action, ActionRecord, now_iso
from orchestrator.api import evs
from orchestrator.api.safe import DELETING, NOT_YET_DELETABLE, snapshot_pages, snapshot_status
from orchestrator.errors import ListingFailed, RouteClosed, TransportError
from orchestrator.retention import Job
from orchestrator.retry import RetryPolicy, Verdict

if TYPE_CHECKING:
    from orchestrator.api.routes import Route

FIRST_POLL = 0.2
MAX_POLL = 5.0


@dataclasses.dataclass(slots=True)
class Pending:
    """An accepted deletion not yet seen gone: its record, when its job began, when its wait ends."""

    record: ActionRecord
    started: float
    until: float


NOT_WAITED = "deletion accepted (202); not waited for: the run stopped"


class Deleter:
    """Sends the DELETEs with a fixed pool of workers and meanwhile (unless ``wait_timeout`` is
    ``None``) confirms that each accepted deletion is gone: by listing the project (1000 a page) while
    more are pending than one wave of GETs (the in-flight limit) or than the list has pages, else by
    parallel GETs (404: gone). Every request goes through the route, under the connection's in-flight
    limit. Every job ends in exactly one record, written through ``write`` as soon as its deletion
    ends; jobs not started when ``stopping()`` turns true, or whose route closed, get none
    (``--resume``)."""

    def __init__(
        self,
        *,
        policy: RetryPolicy,
        concurrency: int,
        wait_timeout: float | None,
        write: Callable[[ActionRecord], None],
        stopping: Callable[[], bool],
    ) -> None:
        self.policy = policy
        self.concurrency = concurrency
        self.wait_timeout = wait_timeout
        self.write = write
        self.stopping = stopping
        self._pending: dict[Route, dict[str, Pending]] = {}
        self._pages: dict[Route, int] = {}  # list pages a route's project took, at the last listing
        self._sending = False
        self._arrived = False  # deletions accepted since the last round
        self._rng = random.Random()

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
                        record, gone = await self._delete(job.route, job.record)
                    except RouteClosed as exc:
                        record = _with(job.record, Action.FAILED, exc.code, exc.message)
                if record.outcome is Action.DELETED and not gone and self.wait_timeout is not None:
                    until = time.monotonic() + self.wait_timeout
                    self._pending.setdefault(job.route, {})[str(record.snapshot_id)] = Pending(
                        record, started, until
                    )
                    self._arrived = True
                else:
                    self._finish(record, started)

    async def _delete(self, route: Route, record: ActionRecord) -> tuple[ActionRecord, bool]:
        """One DELETE, retried under the policy: the record and whether the snapshot is surely gone.

        404 counts as done; so does EVS.1047 ("wrong state") when the snapshot is ``deleting`` already,
        because an earlier attempt whose answer was lost got through.
        """
        call = evs.delete_snapshot(route.project_id, str(record.snapshot_id))
        for attempt in range(1, self.policy.max_attempts + 1):
            record = dataclasses.replace(record, attempts=attempt)
            try:
                reply = await route.send(call)
            except TransportError as exc:
                record = _with(record, Action.FAILED, exc.code, str(exc))
            else:
                if reply.verdict is Verdict.REFUSED:
                    route.check_open()
                answer = reply.answer
                record = dataclasses.replace(record, http_status=answer.status, request_id=answer.request_id)
                if reply.verdict is Verdict.SUCCESS or answer.status == 404:
                    return _with(record, Action.DELETED, None, None), answer.status == 404
                record = _with(record, Action.FAILED, *answer.error())
                if record.error_code == NOT_YET_DELETABLE:
                    return await self._wrong_state(route, record)
                if reply.verdict is Verdict.FINAL:
                    return _with(record, Action.REJECTED, record.error_code, record.error_message), False
            if attempt < self.policy.max_attempts:
                await anyio.sleep(self.policy.backoff(attempt, self._rng))
        return record, False

    async def _wrong_state(self, route: Route, record: ActionRecord) -> tuple[ActionRecord, bool]:
        try:
            status = await snapshot_status(route, str(record.snapshot_id), self.policy)
        except ListingFailed:
            return record, False
        if status is None or status == DELETING:
            return _with(record, Action.DELETED, None, None), status is None
        message = f"{record.error_message} (the snapshot is {status})"
        return _with(record, Action.REJECTED, record.error_code, message), False

    async def _confirm(self) -> None:
        """Rounds of status checks, while DELETEs are still being sent and after, until every accepted
        deletion is gone or out of time, or the run stops. The pause between rounds starts at
        ``FIRST_POLL`` again whenever new deletions were accepted, and grows to ``MAX_POLL`` otherwise."""
        interval = FIRST_POLL
        while self._sending or self._pending:
            await self._pause(min(interval, self._time_left()))
            if self.stopping():
                self._flush(Action.DELETED, None, NOT_WAITED)
                return
            self._expire()
            fresh, self._arrived = self._arrived, False
            if self._pending:
                async with anyio.create_task_group() as group:
                    for route in list(self._pending):
                        group.start_soon(self._check, route)
            interval = FIRST_POLL if fresh or not self._pending else min(MAX_POLL, interval * 1.5)

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
                        route, snapshot_id, _with(pending.record, Action.FAILED, "DELETE_WAIT_TIMEOUT", why)
                    )

    async def _check(self, route: Route) -> None:
        """One round for one route: its pending deletions that are gone end (or ``error_deleting``)."""
        ids = list(self._pending.get(route, {}))
        try:
            if len(ids) > max(self.concurrency, self._pages.get(route, 1)):
                await self._by_listing(route, set(ids))
            else:
                async with anyio.create_task_group() as group:
                    for snapshot_id in ids:
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
                snapshot_id = str(item.get("id"))
                if snapshot_id in ids:
                    seen[snapshot_id] = str(item.get("status") or "")
        self._pages[route] = pages
        for snapshot_id in ids:
            self._judge(route, snapshot_id, seen.get(snapshot_id))

    async def _by_get(self, route: Route, snapshot_id: str) -> None:
        """One GET (404: gone); a GET that keeps failing leaves this deletion unconfirmed."""
        try:
            status = await snapshot_status(route, snapshot_id, self.policy)
        except ListingFailed as exc:
            pending = self._pending.get(route, {}).get(snapshot_id)
            if pending is not None:
                why = f"deletion accepted (202) but could not be confirmed: {exc}"
                self._end(route, snapshot_id, _with(pending.record, Action.FAILED, "DELETE_UNCONFIRMED", why))
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
        if status is None:
            self._end(route, snapshot_id, pending.record)
        elif status == "error_deleting":
            why = "the snapshot ended error_deleting; ask the provider's support"
            self._end(route, snapshot_id, _with(pending.record, Action.FAILED, "ERROR_DELETING", why))

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
        self._finish(record, pending.started)

    def _flush(self, outcome: Action, code: str | None, message: str, *, only: Route | None = None) -> None:
        for route in [only] if only is not None else list(self._pending):
            for pending in self._pending.pop(route, {}).values():
                self._finish(_with(pending.record, outcome, code, message), pending.started)

    def _finish(self, record: ActionRecord, started: float) -> None:
        elapsed = round((time.monotonic() - started) * 1000)
        self.write(dataclasses.replace(record, finished_at=now_iso(), elapsed_ms=elapsed))


def _with(record: ActionRecord, outcome: Action, code: str | None, message: str | None) -> ActionRecord:
    return dataclasses.replace(record, outcome=outcome, error_code=code, error_message=message)
