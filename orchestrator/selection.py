"""What a command acts on: the disks a manifest names (``Target``), grouped by project (``Scope``),
and each project's snapshots, listed (``prune``, ``cleanup``, ``audit``).

- **Selection**: each disk once, by ``volume_id`` and project (``--project-id``, or looked up by
  region, once per region); a row that names no usable disk is warned about and counted.
- **Listing**: each project's snapshots are paged 1000 a request (at most N/1000 + 1 requests per
  project, never one per disk), every project before anything is deleted; a listing that fails or is
  refused raises ``ListingFailed`` (exit 3). It never means "nothing there".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from orchestrator.api.safe import list_all, list_all_volumes
from orchestrator.api.views import Snapshot
from orchestrator.config import PROJECT_RE, REGION_RE
from orchestrator.duplicates import volume_id_of
from orchestrator.errors import ListingFailed, ProjectLookupFailed, RouteClosed, TransportError
from orchestrator.manifest import ManifestSource, manifest_digest, read_rows, spooled
from orchestrator.retry import RetryPolicy
from orchestrator.signals import in_thread

if TYPE_CHECKING:
    from orchestrator.api.routes import Route, Router


@dataclasses.dataclass(frozen=True, slots=True, eq=False, repr=False)
class Target:
    """A disk of the selection, as the manifest names it (project or region may be missing)."""

    volume_id: str
    project_id: str | None
    region: str | None
    row: int
    server_id: str | None = None  # the manifest's ``server_id`` column (``select`` writes it), if any


def read_targets(
    source: ManifestSource,
    *,
    project_id: str | None,
    region: str | None,
    warn: Callable[[str], None],
) -> tuple[list[Target], int]:
    """The disks a manifest names (each once) and the number of rows that name none (each warned).

    Only ``volume_id``, ``project_id``, ``region`` and ``server_id`` matter here; names and metadata are
    ``create``'s.
    """
    display = source.shown
    targets: list[Target] = []
    seen: set[tuple[str, str]] = set()
    bad = 0
    for raw in read_rows(source, display=display, warn=warn):
        where = f"{display}: row {raw.row} (line {raw.line})"
        fields = raw.fields or {}
        volume = volume_id_of(fields.get("volume_id"))
        project = str(fields.get("project_id") or "").strip() or project_id
        row_region = str(fields.get("region") or "").strip() or region
        problem = None
        if raw.fields is None or raw.problem is not None:
            problem = raw.problem or "not a row object"
        elif volume is None:
            problem = f"volume_id {fields.get('volume_id')!r} is not a UUID"
        elif project is not None and not PROJECT_RE.match(project):
            problem = f"project_id {project!r} is not 32 lower-case hex characters"
        elif row_region is not None and not REGION_RE.match(row_region):
            problem = f"region {row_region!r} is not a region id like cn-north-4"
        elif project is None and row_region is None:
            problem = "no project_id (row or --project-id) and no region to look it up by"
        if problem is not None or volume is None:  # volume is None only with a problem (for mypy)
            bad += 1
            warn(f"{where}: skipped: {problem}")
            continue
        key = (volume, project or f"region:{row_region}")
        if key not in seen:
            seen.add(key)
            server = str(fields.get("server_id") or "").strip() or None
            targets.append(Target(volume, project, row_region, raw.row, server))
    return targets, bad


@dataclasses.dataclass(eq=False, slots=True, repr=False)
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
        scope.volumes.setdefault(volume.id, 0)


async def list_scope(scope: Scope, policy: RetryPolicy, *, outcome: str) -> list[Snapshot]:
    """Every snapshot of the scope's project (1000 a request); a failure raises ``ListingFailed``."""
    try:
        return await list_all(scope.route, policy)
    except (ListingFailed, RouteClosed) as exc:
        raise ListingFailed(f"cannot list the snapshots of {scope.route.name}: {exc}; {outcome}") from None


async def manifest_selection(
    source: ManifestSource | None, *, project_id: str | None, region: str | None, warn: Callable[[str], None]
) -> tuple[str, list[Target], int, str]:
    """What a run covers (for the lock and header), its disks, the rows skipped, and the manifest's
    digest. Without a manifest (``--all-volumes`` alone): one scope, whose disks are listed later."""
    if source is None:
        return f"all-volumes:{project_id or region}", [Target("", project_id, region, 0)], 0, ""
    with spooled(source) as spool:

        def read() -> tuple[list[Target], int, str]:
            found = read_targets(spool, project_id=project_id, region=region, warn=warn)
            return (*found, manifest_digest(spool))

        targets, bad, digest = await in_thread(read)  # a signal stops a long manifest pass promptly
    return source.shown, targets, bad, digest
