"""Polling accepted snapshots until each is ``available`` or ``error`` (or gone), or the wait times out.

Each round costs about N/1000 requests per project for N snapshots pending: the first unfiltered page
of the project's list (1000 items) tells how many snapshots the project has; when paging through all
of them is cheaper than asking by id (100 ids a request), the round pages, else it asks by id. A
snapshot missing from a listing is confirmed with one GET (offset paging can skip an item while new
snapshots are created) before it is recorded as gone.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio

from orchestrator import defaults
from orchestrator.api import evs
from orchestrator.errors import TransportError
from orchestrator.models import Answer, Outcome, Record, utc_iso, utc_now
from orchestrator.report import ReportWriter
from orchestrator.retry import Verdict
from orchestrator.tally import Tally

if TYPE_CHECKING:
    from orchestrator.api.routes import Route, Router

PAGE = 1000
ID_CHUNK = 100
SETTLED = {
    "available": Outcome.AVAILABLE,
    "error": Outcome.SNAPSHOT_ERROR,
    "error_deleting": Outcome.SNAPSHOT_ERROR,
}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WaitPlan:
    """How long to wait in all, and how often to look (the interval grows by half up to its maximum)."""

    timeout: float = defaults.WAIT_TIMEOUT
    interval: float = defaults.POLL_INTERVAL
    max_interval: float = 60.0


class Waiter:
    """Waits for the accepted rows of a report and appends a record for each as it settles."""

    def __init__(
        self,
        plan: WaitPlan,
        *,
        router: Router,
        writer: ReportWriter,
        tally: Tally,
        on_round: Callable[[int, int], None] | None = None,
    ) -> None:
        self.plan = plan
        self.on_round = on_round
        self.router = router
        self.writer = writer
        self.tally = tally
        self.pending: defaultdict[tuple[str | None, str], dict[str, Record]] = defaultdict(dict)
        self.round_requests: list[int] = []

    def load(self, records: Iterable[Record]) -> None:
        """Take the last record of every row: accepted (or timed-out) ones are waited for, the rest counted.

        Every route is built before the first poll, so a report that cannot be routed (rows without a
        region, and no --endpoint) is a usage error before anything is sent.
        """
        for record in records:
            waitable = record.outcome in (Outcome.ACCEPTED, Outcome.WAIT_TIMEOUT)
            if waitable and record.snapshot_id and record.project_id:
                self.router.route_at(record.region, record.project_id)
                self.pending[(record.region, record.project_id)][record.snapshot_id] = record
            else:
                self.tally.add_previous(record.outcome, record.row)

    @property
    def waiting(self) -> int:
        return sum(len(group) for group in self.pending.values())

    async def run(self) -> None:
        """Poll until nothing is pending or the wait times out; then record what is left as wait_timeout."""
        deadline = time.monotonic() + self.plan.timeout
        interval = self.plan.interval
        last_seen: dict[str, str] = {}
        while self.waiting:
            requests = 0
            for (region, project), group in list(self.pending.items()):
                route = self.router.route_at(region, project)
                statuses, used = await self._statuses(route, set(group))
                requests += used
                for snapshot_id, status in statuses.items():
                    last_seen[snapshot_id] = status or "gone"
                    if status is None or status in SETTLED:
                        self._settle(group.pop(snapshot_id), status)
                if not group:
                    del self.pending[(region, project)]
            self.round_requests.append(requests)
            if self.on_round is not None:
                self.on_round(requests, self.waiting)
            remaining = deadline - time.monotonic()
            if not self.waiting or remaining <= 0:
                break
            await anyio.sleep(min(interval, remaining))
            interval = min(self.plan.max_interval, interval * 1.5)
        for group in self.pending.values():
            for snapshot_id, record in group.items():
                self._emit(
                    record, Outcome.WAIT_TIMEOUT, last_seen.get(snapshot_id, record.snapshot_status), None
                )
        self.pending.clear()

    async def _statuses(self, route: Route, ids: set[str]) -> tuple[dict[str, str | None], int]:
        """Status of each id that this round could learn (``None``: confirmed gone), and requests used."""
        found: dict[str, str] = {}
        first = await self._list(route, [("limit", str(PAGE)), ("offset", "0")])
        used = 1
        if first is None:
            return {}, used
        total = int(first.body.get("count") or 0)
        if math.ceil(total / PAGE) <= math.ceil(len(ids) / ID_CHUNK):
            found.update(_statuses_of(first))
            offset = len(first.body.get("snapshots") or [])
            while offset < total:
                page = await self._list(route, [("limit", str(PAGE)), ("offset", str(offset))])
                used += 1
                if page is None:
                    return {k: v for k, v in found.items() if k in ids and v}, used
                items = len(page.body.get("snapshots") or [])
                found.update(_statuses_of(page))
                if items == 0:
                    break
                offset += items
        else:
            ordered = sorted(ids)
            for start in range(0, len(ordered), ID_CHUNK):
                chunk = ordered[start : start + ID_CHUNK]
                page = await self._list(route, [("limit", str(PAGE)), *(("id", i) for i in chunk)])
                used += 1
                if page is not None:
                    found.update(_statuses_of(page))
                    found.update({i: "" for i in chunk if i not in found})  # absent from an exact query
        result: dict[str, str | None] = {}
        for snapshot_id in ids:
            status = found.get(snapshot_id)
            if status:
                result[snapshot_id] = status
                continue
            gone = await self._confirm_gone(route, snapshot_id)
            used += 1
            if gone is not None:
                result[snapshot_id] = gone or None
        return result, used

    async def _confirm_gone(self, route: Route, snapshot_id: str) -> str | None:
        """One GET: ``""`` when it says 404, the status when the snapshot exists, ``None`` when unknown."""
        try:
            reply = await route.send(evs.show_snapshot(route.project_id, snapshot_id))
        except TransportError:
            return None
        answer = reply.answer
        if reply.verdict is Verdict.REFUSED:
            route.check_open()
        if answer.status == 404:
            return ""
        snapshot = answer.body.get("snapshot") if isinstance(answer.body, dict) else None
        if answer.status == 200 and isinstance(snapshot, dict):
            return str(snapshot.get("status") or "") or None
        return None

    async def _list(self, route: Route, query: list[tuple[str, str]]) -> Answer | None:
        try:
            reply = await route.send(evs.list_snapshots(route.project_id, query, kind=evs.Kind.POLL))
        except TransportError:
            return None
        if reply.verdict is Verdict.REFUSED:
            route.check_open()  # raises the route's closure: a refused wait stops (exit 3)
        if reply.verdict is not Verdict.SUCCESS or not isinstance(reply.answer.body, dict):
            return None
        return reply.answer

    def _settle(self, record: Record, status: str | None) -> None:
        if status is None:
            self._emit(
                record, Outcome.SNAPSHOT_ERROR, None, ("SNAPSHOT_NOT_FOUND", "the snapshot no longer exists")
            )
        elif SETTLED[status] is Outcome.AVAILABLE:
            self._emit(record, Outcome.AVAILABLE, status, None)
        else:
            self._emit(
                record, Outcome.SNAPSHOT_ERROR, status, ("SNAPSHOT_ERROR", f"the snapshot ended in {status}")
            )

    def _emit(
        self, record: Record, outcome: Outcome, status: str | None, error: tuple[str, str] | None
    ) -> None:
        now = utc_now()
        try:
            began = datetime.strptime(record.started_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            elapsed = round((now - began).total_seconds() * 1000)
        except ValueError:
            elapsed = record.elapsed_ms
        settled = dataclasses.replace(
            record,
            outcome=outcome,
            snapshot_status=status,
            http_status=200 if status else record.http_status,
            error_code=None if error is None else error[0],
            error_message=None if error is None else error[1],
            finished_at=utc_iso(now),
            elapsed_ms=elapsed,
        )
        self.writer.write(settled)
        self.tally.add(settled)


def _statuses_of(answer: Answer) -> dict[str, str]:
    return {
        str(item["id"]): str(item.get("status") or "")
        for item in answer.body.get("snapshots") or []
        if isinstance(item, dict) and item.get("id")
    }
