"""Safe calls (GETs) of the v5 snapshot-group API, each answer a typed view (evs-api.md 8.7, 10).

The group list (``GET /v5/{pid}/snapshot-groups/detail``) and the member list (``GET
/v5/{pid}/snapshots/detail?snapshot_group_id=``) answer without a count: ``safe._pages`` pages them by
``offset`` and stops at the first page shorter than the 1000 asked for. A group's marker is its
``evs_snapshot_run`` tag; the list is asked for it (``tags``) and every group is checked again here,
so a region that ignores the filter cannot hand over another run's group. Group creates are
``runner``'s and group deletes ``deleter``'s, like single snapshots.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

import orjson

from orchestrator.api import evs
from orchestrator.api.safe import Page, _paged, _pages, fetch_json
from orchestrator.api.views import Job, Snapshot, SnapshotGroup
from orchestrator.defaults import RUN_MARKER_KEY
from orchestrator.errors import RouteClosed
from orchestrator.models import NO_SUCH_API
from orchestrator.retry import RetryPolicy

if TYPE_CHECKING:
    from orchestrator.api.routes import Route


def marker_filter(run_id: str) -> tuple[str, str]:
    """The list's ``tags`` query for one run's marker (URL-encoded JSON ``[{"key", "value"}]``)."""
    return ("tags", orjson.dumps([{"key": RUN_MARKER_KEY, "value": run_id}]).decode())


async def group_pages(
    route: Route,
    policy: RetryPolicy,
    *,
    server_id: str | None = None,
    run_id: str | None = None,
    kind: evs.Kind = evs.Kind.LIST,
    optional: bool = False,
) -> AsyncGenerator[Page[SnapshotGroup], None]:
    """A project's snapshot groups (of one server, carrying one run's marker, when given), a page at a
    time; raises ``ListingFailed`` rather than guess (``optional``: ``ApiMissing`` when the region has
    no group API, and the route stays open)."""
    query: list[tuple[str, str]] = []
    if server_id is not None:
        query.append(("server_id", server_id))
    if run_id is not None:
        query.append(marker_filter(run_id))

    def call(offset: int) -> evs.Call:
        return evs.list_snapshot_groups(
            route.project_id, [*_paged(offset), *query], kind=kind, optional=optional
        )

    async for page in _pages(route, policy, call, key="snapshot_groups", total=None):
        groups = [SnapshotGroup.parse(item) for item in page]
        yield Page(
            (
                group
                for group in groups
                if (server_id is None or group.server_id == server_id)
                and (run_id is None or group.marked(run_id))
            ),
            page.total,
        )


async def list_groups(
    route: Route,
    policy: RetryPolicy,
    *,
    server_id: str | None = None,
    run_id: str | None = None,
    kind: evs.Kind = evs.Kind.LIST,
    optional: bool = False,
) -> list[SnapshotGroup]:
    """Every group ``group_pages`` yields, in one list."""
    pages = group_pages(route, policy, server_id=server_id, run_id=run_id, kind=kind, optional=optional)
    return [group async for page in pages for group in page]


async def show_group(
    route: Route, group_id: str, policy: RetryPolicy, *, kind: evs.Kind = evs.Kind.CHECK
) -> SnapshotGroup | None:
    """One group, ``None`` once it is gone; raises ``ListingFailed`` when it cannot be read."""
    body = await fetch_json(
        route, evs.show_snapshot_group(route.project_id, group_id, kind=kind), policy, missing_ok=True
    )
    if not body:
        return None
    return SnapshotGroup.from_body(body) or SnapshotGroup(id=group_id)


async def group_members(
    route: Route, group_id: str, policy: RetryPolicy, *, kind: evs.Kind = evs.Kind.LIST
) -> list[Snapshot]:
    """A group's member snapshots (each with its ``snapshot_group_id``), from the v5 snapshot list."""

    def call(offset: int) -> evs.Call:
        query = [*_paged(offset), ("snapshot_group_id", group_id)]
        return evs.list_group_members(route.project_id, query, kind=kind)

    members = [
        Snapshot.parse(item)
        async for page in _pages(route, policy, call, key="snapshots", total=None)
        for item in page
    ]
    return [member for member in members if member.snapshot_group_id == group_id]


async def show_job(route: Route, job_id: str, policy: RetryPolicy) -> Job | None:
    """A job's state, ``None`` when the service does not know it."""
    body = await fetch_json(route, evs.show_job(route.project_id, job_id), policy, missing_ok=True)
    return Job.parse(body) if body else None


async def groups_offered(route: Route, policy: RetryPolicy) -> bool:
    """Whether the region answers the v5 group list: ``False`` on the gateway's 404 ``APIGW.0101``
    (which closes ``route``: probe on a route of its own, or before nothing else is to be sent)."""
    try:
        await fetch_json(
            route, evs.list_snapshot_groups(route.project_id, [("limit", "1")], kind=evs.Kind.CHECK), policy
        )
    except RouteClosed as exc:
        if exc.answer is not None and exc.answer.status == 404 and exc.answer.error()[0] in NO_SUCH_API:
            return False
        raise
    return True
