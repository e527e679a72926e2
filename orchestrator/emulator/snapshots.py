"""EVS snapshot routes (``/v2/{project_id}/cloudsnapshots...``) and the project quota.

Create, show, list with details, delete and rollback follow evs-api.md sections 2, 3 and 8; the
per-disk limit counts as the service counts (section 9). Faults here: drops (of creates and of
rollbacks, before or after EVS acts; of deletes, after), late commits (504 ``APIG.0203`` now, the
snapshot later), list answers replaced by 503, rollbacks ending in error. Switches that break an
assumption: ``--list-shift`` (the list's order changes between pages), ``--metadata-rewrite lower``.
Snapshots a backup service made (``autobk_snapshot_*``, ``manualbk_snapshot_*``) are neither deleted nor
rolled back (evs-api.md 8.2, 10; the refusal's code and words are inferred).

The snapshot metadata API (the Cinder paths ``/v2/{project_id}/snapshots/{snapshot_id}/metadata``):
``POST`` adds keys (a key already there takes the new value), ``PUT`` replaces the user's keys with the
body's, ``DELETE .../metadata/{key}`` removes one key (404 when it is not there); ``POST`` and ``PUT``
answer 200 with the whole map, ``DELETE`` 200 with no body. A ``__system__*`` key in a body, or named
by a ``DELETE``, is refused with 403 ``EVS.5403`` ("metadata can not be operated."); the metadata is
kept as sent (``--metadata-rewrite`` changes only what answers show).
"""

from __future__ import annotations

from aiohttp import web

from orchestrator.emulator.answers import (
    drop,
    evs_error,
    gateway_error,
    json_body,
    json_response,
    malformed,
    not_found,
    page_params,
)
from orchestrator.emulator.state import (
    BACKUP_NAME_PREFIXES,
    UUID_RE,
    Snapshot,
    Volume,
    World,
    listed_in,
)

NAME_MAX = 64
DESCRIPTION_MAX = 85
RESERVED_NAME_PREFIX = "autobk_snapshot_"
SYSTEM_PREFIX = "__system__"


class SnapshotRoutes:
    """Handlers over one ``World``."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.settings = world.settings

    async def create(self, request: web.Request) -> web.StreamResponse:
        spec = await json_body(request, "snapshot")
        volume_id = spec.get("volume_id")
        if not isinstance(volume_id, str) or not UUID_RE.match(volume_id):
            raise evs_error(400, "EVS.1002", "invalid volume id!")
        force = spec.get("force", False)
        name = spec.get("name")
        description = spec.get("description")
        metadata = spec.get("metadata") or {}
        if not isinstance(force, bool):
            raise malformed()
        if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= NAME_MAX):
            raise evs_error(400, "EVS.5400", f"Invalid input: name must be 1 to {NAME_MAX} characters.")
        if isinstance(name, str) and name.startswith(RESERVED_NAME_PREFIX):
            raise evs_error(400, "EVS.5400", f"Invalid input: name cannot start with {RESERVED_NAME_PREFIX}.")
        if description is not None and (
            not isinstance(description, str) or len(description) > DESCRIPTION_MAX
        ):
            raise evs_error(
                400, "EVS.5400", f"Invalid input: description exceeds {DESCRIPTION_MAX} characters."
            )
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise evs_error(400, "EVS.5400", "Invalid input: metadata must map strings to strings.")
        if any(key.startswith(SYSTEM_PREFIX) for key in metadata):
            raise evs_error(403, "EVS.5403", "metadata can not be operated.")
        volume = self.world.volume(volume_id)
        if volume is None:
            raise not_found()
        self._check_volume(volume, force=force)
        self._check_quota()
        world = self.world
        if world.chance(self.settings.fault_drop_before):
            return drop(request)
        if world.chance(self.settings.fault_late_commit):
            world.create_snapshot(
                volume=volume,
                name=name,
                description=description,
                metadata=metadata,
                delay=self.settings.late_commit_seconds,
            )
            raise gateway_error(504, "APIG.0203", "Backend timeout.")
        snap = world.create_snapshot(volume=volume, name=name, description=description, metadata=metadata)
        if world.chance(self.settings.fault_drop_after):
            return drop(request)
        return json_response(202, {"snapshot": self._json(snap, "creating")})

    def _check_volume(self, volume: Volume, *, force: bool) -> None:
        if volume.status == "error":
            raise evs_error(500, "EVS.2024", "volume is error!")
        if volume.status == "in-use" and not force:
            raise evs_error(
                400,
                "EVS.5400",
                f"Invalid volume: Volume {volume.id} status must be available, "
                "but current status is: in-use.",
            )
        if volume.status not in ("available", "in-use"):
            raise evs_error(
                400,
                "EVS.5400",
                f"Invalid volume: Volume {volume.id} status must be available or in-use, "
                f"but current status is: {volume.status}.",
            )
        limit = self.settings.max_snapshots_per_volume
        if self.world.snapshot_count(volume.id) >= limit:
            raise evs_error(
                400,
                "EVS.5400",
                f"Invalid volume: the number of snapshots of volume {volume.id} reached the limit {limit}.",
            )

    def _check_quota(self) -> None:
        quota = self.settings.snapshot_quota
        if quota is not None and len(self.world.project_snapshots(self.settings.project_id)) >= quota:
            raise evs_error(413, "EVS.5413", "Insufficient volume quota.")

    def _find(self, request: web.Request) -> tuple[Snapshot, str]:
        found = self.world.find(request.match_info["snapshot_id"], request.match_info["project_id"])
        if found is None:
            raise not_found()
        return found

    def _json(self, snap: Snapshot, status: str, *, listed: bool = False) -> dict[str, object]:
        data = snapshot_json(snap, status, listed=listed)
        data["metadata"] = self._shown(snap.metadata)
        return data

    def _shown(self, metadata: dict[str, str]) -> dict[str, str]:
        """Metadata as answers show it (``--metadata-rewrite lower``: keys lower-cased)."""
        if self.settings.metadata_rewrite == "lower":
            return {key.lower(): value for key, value in metadata.items()}
        return metadata

    @staticmethod
    def _refuse_backup_made(snap: Snapshot, doing: str) -> None:
        """A snapshot a backup service made belongs to it: 400 (code and words inferred)."""
        if (snap.name or "").startswith(BACKUP_NAME_PREFIXES):
            raise evs_error(
                400,
                "EVS.5400",
                f"Invalid snapshot: snapshot {snap.id} is created by the backup service and "
                f"cannot be {doing}.",
            )

    @staticmethod
    async def _metadata_body(request: web.Request) -> dict[str, str]:
        """A metadata body's map: strings to strings, no ``__system__`` key (403 ``EVS.5403``)."""
        metadata = await json_body(request, "metadata")
        if not all(isinstance(k, str) and k and isinstance(v, str) for k, v in metadata.items()):
            raise evs_error(400, "EVS.5400", "Invalid input: metadata must map strings to strings.")
        if any(key.startswith(SYSTEM_PREFIX) for key in metadata):
            raise evs_error(403, "EVS.5403", "metadata can not be operated.")
        return metadata

    async def add_metadata(self, request: web.Request) -> web.StreamResponse:
        snap, _ = self._find(request)
        snap.metadata.update(await self._metadata_body(request))
        return json_response(200, {"metadata": self._shown(snap.metadata)})

    async def update_metadata(self, request: web.Request) -> web.StreamResponse:
        snap, _ = self._find(request)
        metadata = await self._metadata_body(request)
        system = {k: v for k, v in snap.metadata.items() if k.startswith(SYSTEM_PREFIX)}
        snap.metadata = {**system, **metadata}
        return json_response(200, {"metadata": self._shown(snap.metadata)})

    async def delete_metadata(self, request: web.Request) -> web.StreamResponse:
        snap, _ = self._find(request)
        key = request.match_info["key"]
        if key.startswith(SYSTEM_PREFIX):
            raise evs_error(403, "EVS.5403", "metadata can not be operated.")
        if key not in snap.metadata:
            raise evs_error(404, "EVS.5404", f"Metadata item was not found: {key}.")
        del snap.metadata[key]
        return web.Response(status=200)

    async def show(self, request: web.Request) -> web.StreamResponse:
        snap, status = self._find(request)
        if snap.group_id and self.settings.group_members_unlisted:
            raise not_found()  # the v2 API does not know v5 group members here
        return json_response(200, {"snapshot": self._json(snap, status)})

    async def delete(self, request: web.Request) -> web.StreamResponse:
        self.world.delete_arrived(request.match_info["snapshot_id"])
        snap, status = self._find(request)
        self._refuse_backup_made(snap, "deleted")
        if status == "error_deleting":
            raise evs_error(500, "EVS.2019", "snapshot is error_deleting!")
        if status not in ("available", "error"):
            raise evs_error(
                400, "EVS.1047", "snapshot status must be available or error when delete snapshot!"
            )
        if self.world.chance(self.settings.fault_delete_drop_after):
            self.world.delete_snapshot(snap)  # EVS started the deletion; the answer is lost
            return drop(request)
        self.world.delete_snapshot(snap)
        return web.Response(status=202)

    async def rollback(self, request: web.Request) -> web.StreamResponse:
        spec = await json_body(request, "rollback")
        volume_id = spec.get("volume_id")
        name = spec.get("name")
        if not isinstance(volume_id, str) or not volume_id:
            raise evs_error(400, "EVS.5400", "Invalid input: rollback needs a volume_id.")
        if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= NAME_MAX):
            raise evs_error(400, "EVS.5400", f"Invalid input: name must be 1 to {NAME_MAX} characters.")
        snap, status = self._find(request)
        self._refuse_backup_made(snap, "rolled back")
        if status != "available":
            raise evs_error(400, "EVS.5400", "Must specify a valid status.")
        if snap.volume_id != volume_id.lower():
            raise evs_error(
                400,
                "EVS.5400",
                f"Invalid input: snapshot {snap.id} can only be rolled back to its source volume "
                f"{snap.volume_id}.",
            )
        volume = self.world.volume(volume_id)
        if volume is None:
            raise not_found()
        if volume.status not in ("available", "error_rollbacking"):
            raise evs_error(
                400,
                "EVS.5400",
                f"Invalid volume: Volume {volume.id} status must be available or error_rollbacking, "
                f"but current status is: {volume.status}.",
            )
        if self.world.chance(self.settings.fault_rollback_drop_before):
            return drop(request)
        self.world.rollback(snap, volume, name)
        if self.world.chance(self.settings.fault_rollback_drop_after):
            return drop(request)
        return json_response(202, {"rollback": {"volume_id": volume.id}})

    async def list(self, request: web.Request) -> web.StreamResponse:
        if self.world.chance(self.settings.fault_list):
            raise evs_error(503, "EVS.5503", "Service unavailable.")
        offset, limit, limited = page_params(request)
        query = request.query
        ids = set(query.getall("id", []))
        name = query.get("name")
        status_filter = query.get("status")
        volume_id = query.get("volume_id")
        enterprise_project = query.get("enterprise_project_id")
        project = request.match_info["project_id"]
        matches = [
            (snap, status)
            for snap, status in self.world.project_snapshots(project)
            if listed_in(enterprise_project, snap.enterprise_project_id)
            and (not ids or snap.id in ids)
            and (name is None or snap.name == name)
            and (status_filter is None or status == status_filter)
            and (volume_id is None or snap.volume_id == volume_id.lower())
            and not (snap.group_id and self.settings.group_members_unlisted)
        ]
        matches = self.world.listing_order(matches)
        shift = self.settings.list_shift
        if shift and offset:  # a later page: snapshots before it move away, later ones slide past it
            self.world.demote(matches[max(0, offset - shift) : offset])
            matches = self.world.listing_order(matches)
        page = matches[offset : offset + limit]
        body: dict[str, object] = {
            "count": len(matches),
            "snapshots": [self._json(snap, status, listed=True) for snap, status in page],
        }
        if limited and page and offset + len(page) < len(matches):
            href = (
                f"{request.url.origin()}/v2/{project}/snapshots/detail?limit={limit}&marker={page[-1][0].id}"
            )
            body["snapshots_links"] = [{"href": href, "rel": "next"}]
        return json_response(200, body)

    async def quota(self, request: web.Request) -> web.StreamResponse:
        """``GET /v2/{project_id}/os-quota-sets/{target_project_id}[?usage=True]``."""
        project = request.match_info["project_id"]
        if request.match_info["target_project_id"] != project:
            raise evs_error(400, "EVS.0001", "invalid tenant id!")
        snapshots = self.world.project_snapshots(project)
        snapshot_limit = -1 if self.settings.snapshot_quota is None else self.settings.snapshot_quota
        gigabytes = sum(v.size for v in self.world.all_volumes()) + sum(s.size for s, _ in snapshots)
        if request.query.get("usage", "").lower() != "true":
            return json_response(
                200, {"quota_set": {"id": project, "snapshots": snapshot_limit, "gigabytes": -1}}
            )
        return json_response(
            200,
            {
                "quota_set": {
                    "id": project,
                    "snapshots": _usage(len(snapshots), snapshot_limit),
                    "gigabytes": _usage(gigabytes, -1),
                }
            },
        )


def _usage(in_use: int, limit: int) -> dict[str, int]:
    return {"in_use": in_use, "limit": limit, "reserved": 0, "allocated": 0}


def snapshot_json(snap: Snapshot, status: str, *, listed: bool = False) -> dict[str, object]:
    """A snapshot in the EVS shape (``SnapshotDetails``; list items add ``SnapshotList`` fields)."""
    data: dict[str, object] = {
        "id": snap.id,
        "status": status,
        "name": snap.name,
        "description": snap.description,
        "created_at": snap.created_at,
        "updated_at": snap.updated_at,
        "metadata": snap.metadata,
        "volume_id": snap.volume_id,
        "size": snap.size,
        "os-extended-snapshot-attributes:project_id": snap.project_id,
        "os-extended-snapshot-attributes:progress": "100%" if status == "available" else "0%",
        "enterprise_project_id": snap.enterprise_project_id,
    }
    if listed:
        data.update(service_type="EVS", dedicated_storage_id=None, dedicated_storage_name=None)
    return data
