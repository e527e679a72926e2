"""Polling accepted snapshots until each is ``available`` or ``error`` (or gone), or the wait times out.

Each round costs about N/1000 requests per project for N snapshots pending: the first unfiltered page
of the project's list (1000 items) tells how many snapshots the project has; when paging through all
of them is cheaper than asking by id (100 ids a request), the round pages, else it asks by id. A
snapshot missing from a listing is confirmed with one GET (offset paging can skip an item while new
snapshots are created) before it is recorded as gone.

A snapshot-group member (a record with a ``snapshot_group_id``, from ``create --consistency server``)
is settled by its group, never by the v2 list (whether members appear there is unverified,
evs-api.md 10): each round asks for the group (``GET /v5/.../snapshot-groups/{id}``) and its member list
(``GET /v5/.../snapshots/detail?snapshot_group_id=``), two requests per group. A group still
``creating`` leaves its members pending; a group that ended ``error`` ends each member
``snapshot_error`` (``GROUP_ERROR``); a group gone, or a member absent from its group's list, is
``snapshot_error`` (``SNAPSHOT_NOT_FOUND``); otherwise the member's own status settles it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from orchestrator.api import evs
from orchestrator.api.groups import group_members, show_group
from orchestrator.api.safe import ONE_TRY, Page, show_snapshot, snapshot_pages
from orchestrator.api.views import Snapshot
from orchestrator.config import WaitPlan
from orchestrator.errors import ListingFailed
from orchestrator.models import Outcome, Record, utc_iso, utc_now
from orchestrator.report import ReportWriter
from orchestrator.retry import polling
from orchestrator.tally import Tally

if TYPE_CHECKING:
    from orchestrator.api.routes import Route, Router

PAGE = evs.PAGE
ID_CHUNK = 100
SETTLED = {
    "available": Outcome.AVAILABLE,
    "error": Outcome.SNAPSHOT_ERROR,
    "error_deleting": Outcome.SNAPSHOT_ERROR,
}


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
        # group members: (region, project) -> group id -> member snapshot id -> record
        self.grouped: defaultdict[tuple[str | None, str], dict[str, dict[str, Record]]] = defaultdict(dict)
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
                where = (record.region, record.project_id)
                if record.snapshot_group_id:
                    members = self.grouped[where].setdefault(record.snapshot_group_id, {})
                    members[record.snapshot_id] = record
                else:
                    self.pending[where][record.snapshot_id] = record
            else:
                self.tally.add_previous(record.outcome, record.row)

    @property
    def waiting(self) -> int:
        singles = sum(len(group) for group in self.pending.values())
        return singles + sum(len(m) for groups in self.grouped.values() for m in groups.values())

    async def run(self) -> None:
        """Poll until nothing is pending or the wait times out; then record what is left as wait_timeout.

        The rounds are passes of the one polling loop: a round that leaves snapshots pending is followed
        by another while the wait has time left, after a pause that grows by half up to its maximum.
        """
        last_seen: dict[str, str] = {}
        plan = self.plan
        async for _ in polling(first=plan.interval, factor=1.5, cap=plan.max_interval, timeout=plan.timeout):
            if self.waiting:
                await self._round(last_seen)
            if not self.waiting:
                break
        left = [*self.pending.values(), *(m for groups in self.grouped.values() for m in groups.values())]
        for group in left:
            for snapshot_id, record in group.items():
                self._emit(
                    record, Outcome.WAIT_TIMEOUT, last_seen.get(snapshot_id, record.snapshot_status), None
                )
        self.pending.clear()
        self.grouped.clear()

    async def _round(self, last_seen: dict[str, str]) -> None:
        """One poll of every pending snapshot; records those that settled."""
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
        for (region, project), groups in list(self.grouped.items()):
            route = self.router.route_at(region, project)
            for group_id, members in list(groups.items()):
                requests += await self._group_round(route, group_id, members, last_seen)
                if not members:
                    del groups[group_id]
            if not groups:
                del self.grouped[(region, project)]
        self.round_requests.append(requests)
        if self.on_round is not None:
            self.on_round(requests, self.waiting)

    async def _group_round(
        self, route: Route, group_id: str, members: dict[str, Record], last_seen: dict[str, str]
    ) -> int:
        """One look at a group and its member list; settles the members it can. Returns requests used."""
        try:
            group = await show_group(route, group_id, ONE_TRY, kind=evs.Kind.POLL)
            listed = (
                [] if group is None else await group_members(route, group_id, ONE_TRY, kind=evs.Kind.POLL)
            )
        except ListingFailed:
            return 1  # looked at again next round
        statuses = {member.id: member.status or "" for member in listed}
        for snapshot_id in list(members):
            status = statuses.get(snapshot_id)
            last_seen[snapshot_id] = status or "gone"
            if group is None or (status is None and group.status != "creating"):
                why = "snapshot group" if group is None else "snapshot (a member of its group)"
                self._emit(
                    members.pop(snapshot_id),
                    Outcome.SNAPSHOT_ERROR,
                    None,
                    (
                        "SNAPSHOT_NOT_FOUND",
                        f"the {why} {group_id if group is None else snapshot_id} no longer exists",
                    ),
                )
            elif group.status == "error":
                self._emit(
                    members.pop(snapshot_id),
                    Outcome.SNAPSHOT_ERROR,
                    status or None,
                    ("GROUP_ERROR", f"its snapshot group {group_id} ended in error"),
                )
            elif group.status != "creating" and status in SETTLED:
                self._settle(members.pop(snapshot_id), status)
        return 1 if group is None else 2

    async def _statuses(self, route: Route, ids: set[str]) -> tuple[dict[str, str | None], int]:
        """Status of each id that this round could learn (``None``: confirmed gone), and requests used."""
        found: dict[str, str] = {}
        used = 0
        by_id = False
        listing = snapshot_pages(route, ONE_TRY, kind=evs.Kind.POLL)
        try:
            async with contextlib.aclosing(listing):
                async for page in listing:
                    used += 1
                    if used == 1 and math.ceil(page.total / PAGE) > math.ceil(len(ids) / ID_CHUNK):
                        by_id = True  # asking by id costs fewer requests than paging the project
                        break
                    found.update(_statuses_of(page))
        except ListingFailed:
            used += 1
            if used == 1:
                return {}, used
            return {k: v for k, v in found.items() if k in ids and v}, used
        if by_id:
            ordered = sorted(ids)
            for start in range(0, len(ordered), ID_CHUNK):
                chunk = ordered[start : start + ID_CHUNK]
                used += 1
                try:
                    page = await self._by_id(route, chunk)
                except ListingFailed:
                    continue
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

    async def _by_id(self, route: Route, chunk: list[str]) -> Page[Snapshot]:
        """The snapshots of a chunk of ids: one request (a chunk is far smaller than a page)."""
        query = [("id", snapshot_id) for snapshot_id in chunk]
        listing = snapshot_pages(route, ONE_TRY, query=query, kind=evs.Kind.POLL)
        async with contextlib.aclosing(listing):
            return await anext(listing)  # a listing yields at least one page

    async def _confirm_gone(self, route: Route, snapshot_id: str) -> str | None:
        """One GET: ``""`` when it says 404, the status when the snapshot exists, ``None`` when unknown."""
        try:
            snapshot = await show_snapshot(route, snapshot_id, ONE_TRY, kind=evs.Kind.POLL)
        except ListingFailed:
            return None
        if snapshot is None:
            return ""
        return snapshot.status or None

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


def _statuses_of(page: Page[Snapshot]) -> dict[str, str]:
    return {snapshot.id: snapshot.status or "" for snapshot in page if snapshot.id}
