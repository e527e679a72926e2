"""The rollbacks under way, watched together until each ends (``rollback --apply``).

The workers of ``rollback_run`` check and send (``restore.start_row``) and hand each rollback
under way to the ``Watcher``; one look at a disk is judged by ``restore.judge``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from orchestrator.actions import Action
from orchestrator.api import evs
from orchestrator.api.safe import list_all_volumes
from orchestrator.errors import ListingFailed, RouteClosed
from orchestrator.restore import Finding, RestorePlan, Watch, judge, poll

if TYPE_CHECKING:
    from orchestrator.api.routes import Route
    from orchestrator.models import Record


class Watcher:
    """Watches the rollbacks under way, beside the workers that send more, and calls ``done`` as each
    ends. Disks due for a look are listed (1000 a page) when more are due on a route than one wave of
    GETs (the in-flight limit) or than the list has pages, else looked at by parallel GETs (disk and
    snapshot); a disk absent from a listing is looked at by GET before anything is concluded. Every
    request goes through the route, under the connection's in-flight limit."""

    def __init__(
        self, plan: RestorePlan, *, concurrency: int, done: Callable[[Record, Finding], None]
    ) -> None:
        self.plan = plan
        self.concurrency = concurrency
        self.done = done
        self._pending: dict[Route, dict[int, tuple[Record, Watch]]] = {}
        self._pages: dict[Route, int] = {}
        self._open = True
        self._wake = anyio.Event()

    def add(self, route: Route, row: Record, watch: Watch) -> None:
        self._pending.setdefault(route, {})[row.row] = (row, watch)
        self._wake.set()

    def close(self) -> None:
        """No more rollbacks will be added: ``run`` returns once the pending ones have ended."""
        self._open = False
        self._wake.set()

    async def run(self) -> None:
        while self._open or self._pending:
            now = anyio.current_time()
            soonest = min(
                (w.due for items in self._pending.values() for _, w in items.values()), default=None
            )
            if soonest is None or soonest > now:
                with anyio.move_on_after(60.0 if soonest is None else soonest - now):
                    await self._wake.wait()
                self._wake = anyio.Event()
                continue
            async with anyio.create_task_group() as group:
                for route in list(self._pending):
                    group.start_soon(self._round, route)

    async def _round(self, route: Route) -> None:
        now = anyio.current_time()
        due = [key for key, (_, watch) in self._pending.get(route, {}).items() if watch.due <= now]
        if len(due) > max(self.concurrency, self._pages.get(route, 1)):
            due = await self._by_listing(route, due)
        async with anyio.create_task_group() as group:
            for key in due:
                row, watch = self._pending[route][key]
                group.start_soon(self._by_get, route, row, watch)

    async def _by_listing(self, route: Route, due: list[int]) -> list[int]:
        """Judge the route's rows from one listing of the project's disks (every row, due or not: the
        listing shows them all, and their next looks then fall due together); the due rows whose disk
        it lacks are returned, to be looked at by GET."""
        try:
            volumes = await list_all_volumes(route, self.plan.reads)
        except (ListingFailed, RouteClosed):
            return due  # each is looked at by GET instead, which says what is wrong
        self._pages[route] = len(volumes) // evs.PAGE + 1
        listed = {volume.id: volume for volume in volumes}
        absent = []
        for key, (row, watch) in list(self._pending.get(route, {}).items()):
            volume = listed.get(str(row.volume_id).lower())
            if volume is not None:
                self._judged(route, key, judge(row, self.plan, watch, volume, None))
            elif key in due:
                absent.append(key)
        return absent

    async def _by_get(self, route: Route, row: Record, watch: Watch) -> None:
        try:
            ended = await poll(route, row, self.plan, watch)
        except RouteClosed as exc:
            ended = dataclasses.replace(watch.sent, outcome=Action.FAILED, code=exc.code, message=exc.message)
        self._judged(route, row.row, ended)

    def _judged(self, route: Route, key: int, ended: Finding | None) -> None:
        if ended is None:
            return
        items = self._pending.get(route, {})
        row, _ = items.pop(key)
        if not items:
            self._pending.pop(route, None)
        self.done(row, ended)
