"""Safe calls (GETs) sent through a route and retried under the policy (DELETE is ``deleter``'s).

Throttling, 5xx and transport errors are retried with backoff (the route's limiter paces and adapts);
a refusal closes the route and raises ``RouteClosed``; retries spent raise ``ListingFailed``, so a
listing that failed is never taken for an empty one. Every answer leaves this module as a typed view
(``views.Snapshot``, ``views.Volume``), and every list call pages through the one ``_pages`` loop.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from orchestrator.api import evs
from orchestrator.api.views import Snapshot, Volume, marker_in
from orchestrator.errors import ActionDenied, ApiMissing, ListingFailed, TransportError
from orchestrator.models import NO_SUCH_API
from orchestrator.retry import RetryPolicy, TryAgain, Verdict, retrying

if TYPE_CHECKING:
    from orchestrator.api.routes import Route

ONE_TRY = RetryPolicy(max_attempts=1)  # for callers that handle a failed call themselves (a poll, a lookup)

T = TypeVar("T")


class Page(list[T]):
    """One page of a listing (its items, as views) and the ``total`` the service says the listing holds."""

    __slots__ = ("total",)

    def __init__(self, items: Iterable[T], total: int) -> None:
        super().__init__(items)
        self.total = total


async def _pages(
    route: Route,
    policy: RetryPolicy,
    call: Callable[[int], evs.Call],
    *,
    key: str,
    total: str | None = "count",
    overlap: bool = False,
    size: int = evs.PAGE,
) -> AsyncGenerator[Page[dict[str, Any]], None]:
    """The one paging loop: ``call(offset)`` for each page of ``size`` items (1000), until the total
    is reached or a page comes back empty (every page is yielded, an empty last one too). A list whose
    answer has no total (``total=None``: the v5 group and member lists) ends at the first page shorter
    than the ``size`` asked for; each page's ``total`` is then the count seen so far.

    The lists page by offset: an item that leaves a list between two pages (a deletion ending) moves
    the later ones up, and one may slip past the page boundary unseen. With ``overlap``, a page whose
    total is smaller than the page before's is fetched again from that many items earlier, so nothing
    that was listed is missed (as long as nothing joins the list mid-way); an item may then come
    twice. Without it, each listed item comes once.
    """
    offset = 0
    last_count: int | None = None
    while True:
        body = await fetch_json(route, call(offset), policy)
        items = [item for item in body.get(key) or [] if isinstance(item, dict)]
        if total is None:
            yield Page(items, offset + len(items))
            if len(items) < size:
                return
            offset += len(items)
            continue
        count = int(body.get(total) or 0)
        yield Page(items, count)
        shrank = 0 if last_count is None else last_count - count
        last_count = count
        if overlap and shrank > 0 and offset > 0:
            offset = max(0, offset - shrank)
            continue
        offset += len(items)
        if not items or offset >= count:
            return


def _paged(offset: int, size: int = evs.PAGE) -> list[tuple[str, str]]:
    """A list page's ``limit`` and ``offset``; a first page has no ``offset``, as the SDK and Terraform
    send it (the docs say an offset is "greater than 0")."""
    return [("limit", str(size)), *((("offset", str(offset)),) if offset else ())]


async def snapshot_pages(
    route: Route,
    policy: RetryPolicy,
    *,
    query: Iterable[tuple[str, str]] = (),
    overlap: bool = False,
    kind: evs.Kind = evs.Kind.LIST,
    marker: str | None = None,
    size: int = evs.PAGE,
) -> AsyncGenerator[Page[Snapshot], None]:
    """A project's snapshots one page (``size``, 1000) at a time, so a caller keeps only what it needs
    (``overlap``: see ``_pages``); raises ``ListingFailed`` rather than guess.

    With ``marker``, a page holds only the snapshots carrying that run's marker, picked before they
    are parsed (a project's list is mostly snapshots of other runs and tools).
    """
    query = tuple(query)

    def call(offset: int) -> evs.Call:
        return evs.list_snapshots(route.project_id, [*_paged(offset, size), *query], kind=kind)

    async for page in _pages(route, policy, call, key="snapshots", overlap=overlap, size=size):
        items = page if marker is None else [i for i in page if marker_in(i.get("metadata")) == marker]
        yield Page(map(Snapshot.parse, items), page.total)


async def list_all(
    route: Route, policy: RetryPolicy, *, query: Iterable[tuple[str, str]] = ()
) -> list[Snapshot]:
    """Every snapshot of a route's project, 1000 a page; raises ``ListingFailed`` rather than guess."""
    return [snapshot async for page in snapshot_pages(route, policy, query=query) for snapshot in page]


async def volume_snapshots(
    route: Route, volume_id: str, policy: RetryPolicy, *, kind: evs.Kind = evs.Kind.LOOKUP
) -> list[Snapshot]:
    """The snapshots of one disk (one request: a disk holds far fewer than a page)."""
    query = [("volume_id", volume_id), ("limit", str(evs.PAGE))]
    call = evs.list_snapshots(route.project_id, query, kind=kind)
    return Snapshot.listed(await fetch_json(route, call, policy))


async def show_snapshot(
    route: Route, snapshot_id: str, policy: RetryPolicy, *, kind: evs.Kind = evs.Kind.CHECK
) -> Snapshot | None:
    """One snapshot, ``None`` once it is gone; raises ``ListingFailed`` when it cannot be read."""
    call = evs.show_snapshot(route.project_id, snapshot_id, kind=kind)
    body = await fetch_json(route, call, policy, missing_ok=True)
    if not body:
        return None
    return Snapshot.from_body(body) or Snapshot(id=snapshot_id)  # an answer without one: status unknown


async def fetch_json(
    route: Route, call: evs.Call, policy: RetryPolicy, *, missing_ok: bool = False
) -> dict[str, Any]:
    """A safe call's JSON body, retrying throttling, 5xx and transport errors under ``policy``.

    Raises ``RouteClosed`` when the route refuses, ``ListingFailed`` when retries are spent or the
    service refuses the call itself: ``ActionDenied`` for a 403 (a permission missing).
    """
    why, denied = "", False
    async for attempt in retrying(policy, reraise=False):
        with attempt:
            try:
                reply = await route.send(call)
            except TransportError as exc:
                why = str(exc)
                raise TryAgain(why) from None
            answer = reply.answer
            if reply.verdict is Verdict.SUCCESS and isinstance(answer.body, dict):
                return answer.body
            if missing_ok and answer.gone:
                return {}
            code, message = answer.error()
            why = f"{answer.status} {code}: {message or 'no message'}"
            if call.optional and answer.status == 404 and code in NO_SUCH_API:
                raise ApiMissing(f"{call.method} {call.path} on {route.name}: no such API here ({why})")
            if reply.verdict is Verdict.FINAL:
                denied = answer.status == 403
                break
            raise TryAgain(why)
    message = f"{call.method} {call.path} on {route.name} failed ({why}); nothing was decided from it"
    if denied:
        raise ActionDenied(message, method=call.method, path=call.path)
    raise ListingFailed(message)


async def list_all_volumes(
    route: Route, policy: RetryPolicy, query: Iterable[tuple[str, str]] = ()
) -> list[Volume]:
    """Every disk of a route's project that matches ``query``, 1000 a page."""
    query = tuple(query)

    def call(offset: int) -> evs.Call:
        return evs.list_volumes(route.project_id, [*_paged(offset), *query])

    return [Volume.parse(item) async for page in _pages(route, policy, call, key="volumes") for item in page]


async def volumes_by_tags(
    route: Route, tags: Mapping[str, Sequence[str]], policy: RetryPolicy
) -> list[Volume]:
    """The disks carrying the tags, 1000 a page (``resource_detail`` is the disk, as in the list; a
    resource without one is shown by its id)."""

    def call(offset: int) -> evs.Call:
        return evs.volumes_by_tags(route.project_id, tags, offset=offset)

    volumes: list[Volume] = []
    async for page in _pages(route, policy, call, key="resources", total="total_count"):
        for resource in page:
            detail = resource.get("resource_detail")
            if isinstance(detail, dict) and detail.get("id"):
                volumes.append(Volume.parse(detail))
            else:
                shown = await show_volume(route, str(resource.get("resource_id")), policy, missing_ok=False)
                volumes.append(shown or Volume(id=""))  # id "": the caller skips it
    return volumes


async def show_volume(
    route: Route,
    volume_id: str,
    policy: RetryPolicy,
    *,
    missing_ok: bool = True,
    kind: evs.Kind = evs.Kind.CHECK,
) -> Volume | None:
    """One disk, ``None`` when it does not exist; raises ``ListingFailed`` when it cannot be read."""
    call = evs.show_volume(route.project_id, volume_id, kind=kind)
    body = await fetch_json(route, call, policy, missing_ok=missing_ok)
    if not body:
        return None
    return Volume.from_body(body) or Volume(id="")  # an answer without one: nothing known of it


async def snapshot_status(
    route: Route, snapshot_id: str, policy: RetryPolicy, *, kind: evs.Kind = evs.Kind.CHECK
) -> str | None:
    """A snapshot's status, ``None`` once it is gone; raises ``ListingFailed`` when it cannot be read."""
    snapshot = await show_snapshot(route, snapshot_id, policy, kind=kind)
    return None if snapshot is None else str(snapshot.status)


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
