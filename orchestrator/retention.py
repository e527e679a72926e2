"""What ``prune``, ``cleanup`` and ``audit`` share: whose snapshots they are, which disks are selected,
listing them, and deleting with confirmation.

The safety rules live here, once:

- **Owned**: a snapshot carrying the ``evs_snapshot_run`` marker or, with an explicit ``--name-prefix``,
  named with that prefix. A backup-made name (``autobk_snapshot_*``, ``manualbk_snapshot_*``) is never
  owned, whatever it carries.
- **Deletable**: owned, of a disk in the selection, and ``available`` or ``error`` (the only states the
  service deletes from).
- **Listing**: each project's snapshots are paged 1000 a request (at most N/1000 + 1 requests per
  project, never one per disk), every project before anything is deleted; a listing that fails or is
  refused raises ``ListingFailed`` (exit 3). It never means "nothing there".
- **Deleting**: a DELETE answered 404 is a success (already gone); with waiting, a deletion ends when the
  snapshot is gone (``deleting``, then 404). Deletions are confirmed while others are still being sent:
  by paging the project's list while many are pending (a snapshot absent from it is gone), by parallel
  GETs while few are; each record is written when its deletion ends.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio

from orchestrator.actions import Action, ActionRecord, now_iso
from orchestrator.api import evs
from orchestrator.api.safe import (
    DELETING,
    NOT_YET_DELETABLE,
    list_all,
    list_all_volumes,
    snapshot_pages,
    snapshot_status,
)
from orchestrator.config import PROJECT_RE, REGION_RE
from orchestrator.duplicates import UUID_RE
from orchestrator.errors import ListingFailed, ProjectLookupFailed, RouteClosed, TransportError, UsageError
from orchestrator.manifest import ManifestSource, read_rows
from orchestrator.retry import RetryPolicy, Verdict

if TYPE_CHECKING:
    from pathlib import Path

    from orchestrator.api.routes import Route, Router
    from orchestrator.console import Console
    from orchestrator.finish import Closing

from orchestrator.api.evs import BACKUP_PREFIXES

DELETABLE = frozenset({"available", "error"})
FIRST_POLL = 0.2
MAX_POLL = 5.0


# --- whose snapshots -------------------------------------------------------------------------
def is_backup(snapshot: dict[str, Any]) -> bool:
    return str(snapshot.get("name") or "").startswith(BACKUP_PREFIXES)


def check_name_prefix(prefix: str | None) -> str | None:
    """``--name-prefix``: not empty (it would own everything), not a backup service's prefix."""
    if prefix is None:
        return None
    if not prefix.strip():
        raise UsageError("--name-prefix must not be empty: it would make every snapshot the tool's own")
    if prefix.startswith(BACKUP_PREFIXES):  # shorter prefixes are harmless: backup names are never owned
        raise UsageError(f"--name-prefix {prefix!r} names backup-made snapshots, which are never deleted")
    return prefix


@dataclasses.dataclass(frozen=True, slots=True)
class Ownership:
    """Which snapshots are the tool's own: the run marker, or an explicit name prefix; never a backup's."""

    name_prefix: str | None = None

    def owns(self, snapshot: dict[str, Any]) -> bool:
        if is_backup(snapshot):
            return False
        if evs.marked(snapshot):
            return True
        return self.name_prefix is not None and str(snapshot.get("name") or "").startswith(self.name_prefix)


def source_run(snapshot: dict[str, Any]) -> str | None:
    """The run whose marker the snapshot carries (``None``: none, or an empty one, which is not ours)."""
    return evs.marker_of(snapshot)


def created(snapshot: dict[str, Any]) -> datetime | None:
    """``created_at`` as a UTC instant (EVS writes it without a zone), or ``None`` when unreadable."""
    text = snapshot.get("created_at")
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def age(snapshot: dict[str, Any], now: datetime) -> float | None:
    moment = created(snapshot)
    return None if moment is None else (now - moment).total_seconds()


def duration_text(seconds: float, *, units: int = 4) -> str:
    """``604800`` -> ``7d``, ``5400`` -> ``1h30m``; ``units`` caps the parts shown (2: ``2d23h``)."""
    left = max(0, round(seconds))
    parts: list[tuple[int, str]] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, left = divmod(left, size)
        if count or parts:
            parts.append((count, unit))
    shown = [f"{count}{unit}" for count, unit in parts[:units] if count]
    return "".join(shown) or "0s"


def newest_first(snapshots: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """By ``created_at``, newest first; an unreadable ``created_at`` counts as newest (so it is kept)."""
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(snapshots, key=lambda s: (created(s) or far, str(s.get("id"))), reverse=True)


# --- the selection ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """A disk of the selection, as the manifest names it (project or region may be missing)."""

    volume_id: str
    project_id: str | None
    region: str | None
    row: int


def read_targets(
    source: ManifestSource,
    *,
    project_id: str | None,
    region: str | None,
    warn: Callable[[str], None],
) -> tuple[list[Target], int]:
    """The disks a manifest names (each once) and the number of rows that name none (each warned).

    Only ``volume_id``, ``project_id`` and ``region`` matter here; names and metadata are ``create``'s.
    """
    display = "<stdin>" if source.path == "-" else source.path
    targets: list[Target] = []
    seen: set[tuple[str, str]] = set()
    bad = 0
    for raw in read_rows(source, display=display, warn=warn):
        where = f"{display}: row {raw.row} (line {raw.line})"
        fields = raw.fields or {}
        volume = str(fields.get("volume_id") or "").strip().lower()
        project = str(fields.get("project_id") or "").strip() or project_id
        row_region = str(fields.get("region") or "").strip() or region
        problem = None
        if raw.fields is None or raw.problem is not None:
            problem = raw.problem or "not a row object"
        elif not UUID_RE.match(volume):
            problem = f"volume_id {fields.get('volume_id')!r} is not a UUID"
        elif project is not None and not PROJECT_RE.match(project):
            problem = f"project_id {project!r} is not 32 lower-case hex characters"
        elif row_region is not None and not REGION_RE.match(row_region):
            problem = f"region {row_region!r} is not a region id like cn-north-4"
        elif project is None and row_region is None:
            problem = "no project_id (row or --project-id) and no region to look it up by"
        if problem is not None:
            bad += 1
            warn(f"{where}: skipped: {problem}")
            continue
        key = (volume, project or f"region:{row_region}")
        if key not in seen:
            seen.add(key)
            targets.append(Target(volume, project, row_region, raw.row))
    return targets, bad


@dataclasses.dataclass(eq=False, slots=True)
class Scope:
    """One project of the selection: its route, and its selected disks (volume id -> manifest row)."""

    route: Route
    region: str | None
    volumes: dict[str, int] = dataclasses.field(default_factory=dict)


async def scopes_of(router: Router, targets: Iterable[Target], *, outcome: str) -> list[Scope]:
    """Group the selected disks by project, looking projects up (once per region) where rows lack one."""
    scopes: dict[int, Scope] = {}
    for target in targets:
        try:
            route = await router.route_for(target.project_id, target.region)
        except (ProjectLookupFailed, RouteClosed) as exc:
            raise ListingFailed(
                f"cannot find the project of region {target.region}: {exc}; {outcome}"
            ) from None
        except TransportError as exc:
            raise ListingFailed(f"cannot reach IAM to find a project: {exc}; {outcome}") from None
        scope = scopes.setdefault(id(route), Scope(route, target.region))
        scope.volumes.setdefault(target.volume_id, target.row)
    return list(scopes.values())


async def add_all_volumes(scope: Scope, policy: RetryPolicy, *, outcome: str) -> None:
    """``--all-volumes``: every disk of the scope's project joins the selection (1000 a request)."""
    try:
        volumes = await list_all_volumes(scope.route, policy)
    except RouteClosed as exc:
        raise ListingFailed(f"cannot list the disks of {scope.route.name}: {exc}; {outcome}") from None
    for volume in volumes:
        scope.volumes.setdefault(str(volume.get("id") or "").lower(), 0)


async def list_scope(scope: Scope, policy: RetryPolicy, *, outcome: str) -> list[dict[str, Any]]:
    """Every snapshot of the scope's project (1000 a request); a failure raises ``ListingFailed``."""
    try:
        return await list_all(scope.route, policy)
    except (ListingFailed, RouteClosed) as exc:
        raise ListingFailed(f"cannot list the snapshots of {scope.route.name}: {exc}; {outcome}") from None


# --- deleting --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Job:
    """One snapshot to delete: its route and its record so far; ``sent``: a DELETE already went out."""

    route: Route
    record: ActionRecord
    sent: bool = False


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


# --- the end of a run ------------------------------------------------------------------------
def write_side_files(
    closing: Closing,
    *,
    command: str,
    summary: dict[str, Any],
    families: list[tuple[str, str, list[str]]],
    exit_code: int,
    console: Console,
) -> None:
    """``--summary-json`` and ``--metrics-file`` (this command's series; other commands' are kept)."""
    import orjson  # noqa: PLC0415

    from orchestrator import metrics  # noqa: PLC0415

    writes: list[tuple[str, Path, Callable[[], bytes]]] = []
    if closing.summary_json is not None:
        options = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
        writes.append(("--summary-json", closing.summary_json, lambda: orjson.dumps(summary, option=options)))
    if closing.metrics_file is not None:
        path = closing.metrics_file

        def text() -> bytes:
            try:
                existing = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                existing = ""
            now = time.time()
            last_success = now if exit_code == 0 else metrics.previous_success(existing, command)
            fixed: list[tuple[str, str, float | None]] = [
                ("exit_code", "Exit code of the last run (0 = every row succeeded).", exit_code),
                ("last_run_timestamp_seconds", "When the last run ended (Unix time).", now),
                ("last_success_timestamp_seconds", "When a run last succeeded (Unix time).", last_success),
            ]
            label = f'command="{command}"'
            every = families + [
                (f"{metrics.PREFIX}_{name}", about, [f"{metrics.PREFIX}_{name}{{{label}}} {value:.3f}"])
                for name, about, value in fixed
                if value is not None
            ]
            return metrics.merge(existing, metrics.render_families(every), command).encode()

        writes.append(("--metrics-file", path, text))
    for option, target, data in writes:
        try:
            metrics.write_atomically(target, data())
        except OSError as exc:
            console.error(f"{option}: cannot write {target}: {exc.strerror}")
