"""What a resumed run finds in the cloud: the run's snapshots in each project, listed once.

A resumed row that some earlier attempt may have created is not looked up on its own: the first such
row of a project lists that project's snapshots once (1000 a request, N/1000 + 1 requests) and keeps,
for each volume, the snapshot carrying this run's marker. A row whose settle window had closed when
the listing began is then decided by the listing alone: its snapshot is there (the row is accepted,
reconciled), or it is not, and it cannot appear any more (the row is sent). Only rows still inside
their window are looked up one by one, as during a run.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio

from orchestrator.api.safe import snapshot_pages
from orchestrator.api.views import Snapshot
from orchestrator.errors import ListingFailed
from orchestrator.retry import RetryPolicy

if TYPE_CHECKING:
    from orchestrator.api.routes import Route

GONE_STATUSES = frozenset({"deleting", "error_deleting"})


class Listing:
    """One project's snapshots of the run: ``volume_id -> (snapshot id, status)``, and when it began.

    Two strings a volume, not the view: a resumed run of many rows keeps one entry per row.
    """

    def __init__(self, began: float, found: dict[str, tuple[str, str | None]]) -> None:
        self.began = began
        self.found = found

    def snapshot(self, volume_id: str) -> Snapshot | None:
        hit = self.found.get(volume_id)
        return None if hit is None else Snapshot(id=hit[0], volume_id=volume_id, status=hit[1])


class RunIndex:
    """The run's snapshots per route, each route listed at most once, when a resumed row first asks."""

    def __init__(self, run_id: str, policy: RetryPolicy) -> None:
        self.run_id = run_id
        self.policy = policy
        self.listings: dict[int, Listing | None] = {}  # None: the listing failed (rows fall back to lookups)
        self._locks: dict[int, anyio.Lock] = {}

    async def listing(self, route: Route) -> Listing | None:
        """The route's listing (made now if it is the first ask); ``None`` when it could not be made.

        Raises ``RouteClosed`` when the route refuses (the row is then handled as any closed route's).
        """
        key = id(route)
        lock = self._locks.setdefault(key, anyio.Lock())
        async with lock:
            if key not in self.listings:
                self.listings[key] = await self._list(route)
            return self.listings[key]

    async def _list(self, route: Route) -> Listing | None:
        began = time.monotonic()
        found: dict[str, tuple[str, str | None]] = {}
        try:
            async for page in snapshot_pages(route, self.policy, marker=self.run_id):
                for snapshot in page:
                    if snapshot.marked(self.run_id) and snapshot.status not in GONE_STATUSES:
                        found.setdefault(snapshot.volume_id, (snapshot.id, snapshot.status))
        except ListingFailed:  # a RouteClosed (its sibling) goes up: see the docstring above
            return None
        return Listing(began, found)
