"""What ``prune``, ``cleanup`` and ``audit`` share: whose snapshots they are, which disks are selected,
and listing them (``orchestrator.deleter`` deletes them, with confirmation).

The safety rules live here, once:

- **Owned**: a snapshot carrying the ``evs_snapshot_run`` marker (not empty) or, with an explicit
  ``--name-prefix``, named with that prefix. A backup-made name (``autobk_snapshot_*``,
  ``manualbk_snapshot_*``) is never owned, whatever it carries.
- **Deletable**: owned, of a disk in the selection, and ``available`` or ``error`` (the only states the
  service deletes from).
- **Listing**: each project's snapshots are paged 1000 a request (at most N/1000 + 1 requests per
  project, never one per disk), every project before anything is deleted; a listing that fails or is
  refused raises ``ListingFailed`` (exit 3). It never means "nothing there".
- **Deleting** (``orchestrator.deleter``): a DELETE answered 404 is a success (already gone); with
  waiting, a deletion ends when the snapshot is gone (``deleting``, then 404).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from orchestrator.actions import ActionRecord
from orchestrator.api import evs
from orchestrator.api.safe import (
    list_all,
    list_all_volumes,
)
from orchestrator.config import PROJECT_RE, REGION_RE
from orchestrator.duplicates import UUID_RE
from orchestrator.errors import ListingFailed, ProjectLookupFailed, RouteClosed, TransportError, UsageError
from orchestrator.manifest import ManifestSource, read_rows
from orchestrator.retry import RetryPolicy

if TYPE_CHECKING:
    from orchestrator.api.routes import Route, Router

from orchestrator.api.evs import BACKUP_PREFIXES

DELETABLE = frozenset({"available", "error"})


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
