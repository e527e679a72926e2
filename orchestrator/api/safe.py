"""Safe calls (GETs) sent through a route and retried under the policy (DELETE is ``deleter``'s).

Throttling, 5xx and transport errors are retried with backoff (the route's limiter paces and adapts);
a refusal closes the route and raises ``RouteClosed``; retries spent raise ``ListingFailed``, so a
listing that failed is never taken for an empty one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

from orchestrator.api import evs
from orchestrator.errors import ListingFailed, TransportError
from orchestrator.retry import RetryPolicy, TryAgain, Verdict, retrying

if TYPE_CHECKING:
    from orchestrator.api.routes import Route


async def snapshot_pages(
    route: Route, policy: RetryPolicy, *, query: Iterable[tuple[str, str]] = (), overlap: bool = False
) -> AsyncIterator[list[dict[str, Any]]]:
    """A project's snapshots one page (1000) at a time, so a caller keeps only what it needs.

    The list pages by offset: a snapshot that leaves it between two pages (a deletion ending) moves
    the later ones up, and one may slip past the page boundary unseen. With ``overlap``, a page whose
    ``count`` is smaller than the page before's is fetched again from that many items earlier, so
    nothing that was listed is missed (as long as no snapshot joins the list mid-way); a snapshot
    may then come twice. Without it, each listed item comes once.
    """
    offset = 0
    last_count: int | None = None
    while True:
        page_query = [("limit", str(evs.PAGE)), ("offset", str(offset)), *query]
        body = await fetch_json(route, evs.list_snapshots(route.project_id, page_query), policy)
        items = [item for item in body.get("snapshots") or [] if isinstance(item, dict)]
        count = int(body.get("count") or 0)
        if items:
            yield items
        shrank = 0 if last_count is None else last_count - count
        last_count = count
        if overlap and shrank > 0 and offset > 0:
            offset = max(0, offset - shrank)
            continue
        offset += len(items)
        if not items or offset >= count:
            return


async def list_all(
    route: Route, policy: RetryPolicy, *, query: Iterable[tuple[str, str]] = ()
) -> list[dict[str, Any]]:
    """Every snapshot of a route's project, 1000 a page; raises ``ListingFailed`` rather than guess."""
    snapshots: list[dict[str, Any]] = []
    offset = 0
    while True:
        page_query = [("limit", str(evs.PAGE)), ("offset", str(offset)), *query]
        body = await fetch_json(route, evs.list_snapshots(route.project_id, page_query), policy)
        items = [item for item in body.get("snapshots") or [] if isinstance(item, dict)]
        snapshots.extend(items)
        offset += len(items)
        if not items or offset >= int(body.get("count") or 0):
            return snapshots


async def fetch_json(
    route: Route, call: evs.Call, policy: RetryPolicy, *, missing_ok: bool = False
) -> dict[str, Any]:
    """A safe call's JSON body, retrying throttling, 5xx and transport errors under ``policy``.

    Raises ``RouteClosed`` when the route refuses, ``ListingFailed`` when retries are spent or the
    service refuses the call itself (a 403 for a permission, say).
    """
    why = ""
    async for attempt in retrying(policy, reraise=False):
        with attempt:
            try:
                reply = await route.send(call)
            except TransportError as exc:
                why = str(exc)
                raise TryAgain(why) from None
            if reply.verdict is Verdict.REFUSED:
                route.check_open()
            answer = reply.answer
            if reply.verdict is Verdict.SUCCESS and isinstance(answer.body, dict):
                return answer.body
            if missing_ok and answer.status == 404:
                return {}
            code, message = answer.error()
            why = f"{answer.status} {code}: {message or 'no message'}"
            if reply.verdict is Verdict.FINAL:
                break
            raise TryAgain(why)
    raise ListingFailed(
        f"{call.method} {call.path} on {route.name} failed ({why}); nothing was decided from it"
    )


async def list_all_volumes(
    route: Route, policy: RetryPolicy, query: Iterable[tuple[str, str]] = ()
) -> list[dict[str, Any]]:
    """Every disk of a route's project that matches ``query``, 1000 a page."""
    volumes: list[dict[str, Any]] = []
    offset = 0
    while True:
        page_query = [("limit", str(evs.PAGE)), ("offset", str(offset)), *query]
        body = await fetch_json(route, evs.list_volumes(route.project_id, page_query), policy)
        items = [item for item in body.get("volumes") or [] if isinstance(item, dict)]
        volumes.extend(items)
        offset += len(items)
        if not items or offset >= int(body.get("count") or 0):
            return volumes


async def snapshot_status(
    route: Route, snapshot_id: str, policy: RetryPolicy, *, kind: evs.Kind = evs.Kind.CHECK
) -> str | None:
    """A snapshot's status, ``None`` once it is gone; raises ``ListingFailed`` when it cannot be read."""
    call = evs.show_snapshot(route.project_id, snapshot_id, kind=kind)
    body = await fetch_json(route, call, policy, missing_ok=True)
    return str((body.get("snapshot") or {}).get("status")) if body else None


async def remaining_quota(route: Route, policy: RetryPolicy) -> int | None:
    """Snapshots the project may still create (``None``: unlimited, or the service does not say)."""
    body = await fetch_json(route, evs.quota(route.project_id), policy)
    snapshots = (body.get("quota_set") or {}).get("snapshots")
    if not isinstance(snapshots, dict):
        return None
    try:
        limit = int(snapshots.get("limit", -1))
        used = int(snapshots.get("in_use", 0)) + int(snapshots.get("reserved", 0) or 0)
    except (TypeError, ValueError):
        return None
    return None if limit < 0 else max(0, limit - used)
