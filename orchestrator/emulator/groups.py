"""EVS v5 snapshot groups (crash-consistent sets: evs-api.md 8.7 and 10), their members and jobs.

Shapes are the official SDK's (``huaweicloudsdkevs`` ``v2/evs_client.py`` and its models):

- ``POST /v5/{project_id}/snapshot-groups`` with ``{"snapshot_group": {server_id, volume_ids, name,
  description, tags, instant_access, enterprise_project_id, incremental}}`` answers 202
  ``{"job_id", "snapshot_group_id"}``; the group is ``creating``, then ``available`` (``error`` when a
  member ends in error); its members are snapshots made together, each carrying ``snapshot_group_id``.
- ``GET /v5/{project_id}/snapshot-groups/detail`` (filters ``id``, ``name``, ``status``, ``server_id``,
  ``tag_key``, ``tags`` = URL-encoded JSON ``[{"key", "value"}]``, ``limit``, ``offset``) answers
  ``{"snapshot_groups": [...]}``: no count, as the SDK's ``ListSnapshotGroupResponse``.
- ``GET`` / ``DELETE /v5/{project_id}/snapshot-groups/{id}``: ``{"snapshot_group": {...}}``; 202
  ``{"job_id"}``. Deleting a group deletes its members with it: the Huawei page says nothing of the
  members, and the peers' documented rule is that the group's snapshots go with it (Alibaba's
  ``DeleteSnapshotGroup``, NetApp's ``DeleteGroupSnapshot`` by default). The tool deletes a group only
  when every member is to go, so it is safe under either rule.
- ``GET /v5/{project_id}/snapshots/detail?snapshot_group_id=...``: the member list (``SnapshotDetailV5``,
  ``{"snapshots": [...]}``, no count). Members also appear in the v2 snapshot list and show (whether
  the cloud's v2 list shows them is unverified: evs-api.md 10), without metadata.
- ``POST /v5/{project_id}/snapshots/{id}/rollback``: one member rolled back as the v2 rollback does,
  answered 202 ``{"job_id"}``.
- ``GET /v1/{project_id}/jobs/{job_id}`` (the SDK's path; Terraform polls ``/v2/``): ``INIT``,
  ``RUNNING``, ``SUCCESS`` or ``FAIL`` with ``fail_reason``.

Limits (400 ``EVS.5400``, words inferred): at most 64 disks, of one availability zone, of one server
(attached to ``server_id`` when given). 400 ``EVS.2409`` while a member disk has a snapshot
``creating``. Faults: ``--fault-drop-before``, ``--fault-drop-after`` and ``--fault-late-commit`` apply
to group creates as to single creates; ``--no-snapshot-groups`` answers 404 ``APIGW.0101`` on every
``/v5/`` path (the gateway), as a region without them.
"""

from __future__ import annotations

import orjson
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
from orchestrator.emulator.clock import evs_time
from orchestrator.emulator.snapshots import SnapshotRoutes
from orchestrator.emulator.state import Job, Snapshot, SnapshotGroup, Volume, World, listed_in

GROUP_DISKS_MAX = 64
GROUP_TEXT_MAX = 255


class GroupRoutes:
    """Handlers over one ``World`` (which holds ``groups`` and ``jobs``)."""

    def __init__(self, world: World, snapshots: SnapshotRoutes) -> None:
        self.world = world
        self.settings = world.settings
        self.snapshots = snapshots

    # --- create ----------------------------------------------------------------------------
    async def create(self, request: web.Request) -> web.StreamResponse:
        spec = await json_body(request, "snapshot_group")
        server_id = spec.get("server_id")
        volume_ids = spec.get("volume_ids")
        name = spec.get("name") or ""
        description = spec.get("description") or ""
        tags = spec.get("tags") or {}
        if server_id is not None and not isinstance(server_id, str):
            raise malformed()
        if volume_ids is not None and (
            not isinstance(volume_ids, list) or not all(isinstance(v, str) for v in volume_ids)
        ):
            raise malformed()
        if not server_id and not volume_ids:
            raise evs_error(400, "EVS.5400", "Invalid input: server_id and volume_ids cannot both be empty.")
        if not isinstance(name, str) or not isinstance(description, str):
            raise malformed()
        if len(name.encode()) > GROUP_TEXT_MAX or len(description.encode()) > GROUP_TEXT_MAX:
            raise evs_error(
                400, "EVS.5400", f"Invalid input: name and description are at most {GROUP_TEXT_MAX} bytes."
            )
        if not isinstance(tags, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
        ):
            raise evs_error(400, "EVS.5400", "Invalid input: tags must map strings to strings.")
        volumes = self._members(server_id, volume_ids)
        server = server_id or volumes[0].attachments[0].server_id
        world = self.world
        if world.chance(self.settings.fault_drop_before):
            return drop(request)
        late = world.chance(self.settings.fault_late_commit)
        group, job = self._record(
            request.match_info["project_id"],
            server,
            volumes,
            name=name,
            description=description,
            tags=tags,
            delay=self.settings.late_commit_seconds if late else 0.0,
        )
        if late:
            raise gateway_error(504, "APIG.0203", "Backend timeout.")
        if world.chance(self.settings.fault_drop_after):
            return drop(request)
        return json_response(202, {"job_id": job.id, "snapshot_group_id": group.id})

    def _members(self, server_id: str | None, volume_ids: list[str] | None) -> list[Volume]:
        """The disks a create names, checked against the group's limits."""
        world = self.world
        if volume_ids:
            volumes = []
            for volume_id in dict.fromkeys(v.lower() for v in volume_ids):
                volume = world.volume(volume_id)
                if volume is None:
                    raise not_found()
                volumes.append(volume)
        else:
            volumes = [v for v in world.all_volumes() if any(a.server_id == server_id for a in v.attachments)]
            if not volumes:
                raise evs_error(400, "EVS.5400", f"Invalid input: server {server_id} has no disks attached.")
        if len(volumes) > GROUP_DISKS_MAX:
            raise evs_error(
                400, "EVS.5400", f"Invalid input: a snapshot group holds at most {GROUP_DISKS_MAX} disks."
            )
        zones = {volume.availability_zone for volume in volumes}
        if len(zones) > 1:
            raise evs_error(
                400,
                "EVS.5400",
                "Invalid input: the disks of a snapshot group must be in one availability zone.",
            )
        servers = {a.server_id for volume in volumes for a in volume.attachments}
        attached_to = {frozenset(a.server_id for a in volume.attachments) for volume in volumes}
        if server_id:
            if any(server_id not in servers_of for servers_of in attached_to):
                raise evs_error(
                    400, "EVS.5400", f"Invalid input: every disk must be attached to server {server_id}."
                )
        elif len(servers) != 1 or any(not servers_of for servers_of in attached_to):
            raise evs_error(400, "EVS.5400", "Invalid input: the disks must be attached to one server.")
        for volume in volumes:
            if volume.status not in ("available", "in-use"):
                raise evs_error(
                    400,
                    "EVS.5400",
                    f"Invalid volume: Volume {volume.id} status must be available or in-use, "
                    f"but current status is: {volume.status}.",
                )
            if world.creating_on(volume.id):
                raise evs_error(
                    400,
                    "EVS.2409",
                    f"A snapshot of volume {volume.id} is being created; try again later.",
                )
        return volumes

    def _record(
        self,
        project_id: str,
        server_id: str,
        volumes: list[Volume],
        *,
        name: str,
        description: str,
        tags: dict[str, str],
        delay: float,
    ) -> tuple[SnapshotGroup, Job]:
        world = self.world
        appears = world.clock() + delay
        group = SnapshotGroup(
            id=world.new_id(),
            project_id=project_id,
            server_id=server_id,
            volume_ids=[volume.id for volume in volumes],
            name=name,
            description=description,
            tags=dict(tags),
            enterprise_project_id=volumes[0].enterprise_project_id,
            created_at=evs_time(world.timeline.wall(appears)),
            visible_from=appears,
            creating_until=appears + self.settings.creating_seconds,
        )
        for volume in volumes:
            world.create_snapshot(
                volume=volume,
                name=name or None,
                description=description or None,
                metadata={},
                delay=delay,
                group_id=group.id,
            )
        world.groups[group.id] = group
        return group, self._job("createSnapshotGroup", group.id, appears)

    def _job(self, job_type: str, subject: str, begin: float | None = None) -> Job:
        world = self.world
        job = Job(world.new_id(), job_type, world.clock() if begin is None else begin, subject)
        world.jobs[job.id] = job
        return job

    # --- read ------------------------------------------------------------------------------
    def status(self, group: SnapshotGroup) -> str | None:
        """A group's status now, ``None`` before a late commit appears or once its deletion is over."""
        world = self.world
        now = world.clock()
        if now < group.visible_from:
            return None
        if group.deleted_mono is not None:
            return "deleting" if now - group.deleted_mono < self.settings.deleting_seconds else None
        if now < group.creating_until:
            return "creating"
        members = [found for found in map(world.find, self._member_ids(group)) if found is not None]
        return "error" if any(status == "error" for _, status in members) else "available"

    def _member_ids(self, group: SnapshotGroup) -> list[str]:
        return [snap.id for snap in self.world.snapshots.values() if snap.group_id == group.id]

    def live(self, project_id: str | None = None) -> list[tuple[SnapshotGroup, str]]:
        """Visible groups with their status, newest first; forgets the ones whose deletion is over."""
        shown = []
        for group in reversed(list(self.world.groups.values())):
            status = self.status(group)
            if status is None:
                if group.deleted_mono is not None and self.world.clock() >= group.visible_from:
                    del self.world.groups[group.id]
                continue
            if project_id is None or group.project_id == project_id:
                shown.append((group, status))
        return shown

    def state(self) -> list[dict[str, object]]:
        """The ``snapshot_groups`` of ``GET /_emulator/state``, oldest first."""
        return [
            {
                "id": group.id,
                "server_id": group.server_id,
                "volume_ids": list(group.volume_ids),
                "tags": dict(group.tags),
                "status": status,
            }
            for group, status in reversed(self.live())
        ]

    def _find(self, request: web.Request) -> tuple[SnapshotGroup, str]:
        group = self.world.groups.get(request.match_info["snapshot_group_id"])
        status = None if group is None else self.status(group)
        if group is None or status is None or group.project_id != request.match_info["project_id"]:
            raise not_found()
        return group, status

    async def show(self, request: web.Request) -> web.StreamResponse:
        return json_response(200, {"snapshot_group": group_json(*self._find(request))})

    async def list(self, request: web.Request) -> web.StreamResponse:
        offset, limit, _ = page_params(request)
        query = request.query
        tag_pairs = _tag_filter(query.get("tags"))
        wanted = {key: query.get(key) for key in ("id", "name", "status", "server_id", "tag_key")}
        enterprise_project = query.get("enterprise_project_id")
        matches = [
            (group, status)
            for group, status in self.live(request.match_info["project_id"])
            if listed_in(enterprise_project, group.enterprise_project_id)
            and (wanted["id"] is None or group.id == wanted["id"])
            and (wanted["name"] is None or group.name == wanted["name"])
            and (wanted["status"] is None or status == wanted["status"])
            and (wanted["server_id"] is None or group.server_id == wanted["server_id"])
            and (wanted["tag_key"] is None or wanted["tag_key"] in group.tags)
            and all(group.tags.get(key) == value for key, value in tag_pairs)
        ]
        page = matches[offset : offset + limit]
        return json_response(200, {"snapshot_groups": [group_json(g, s) for g, s in page]})

    async def members(self, request: web.Request) -> web.StreamResponse:
        """``GET /v5/{project_id}/snapshots/detail`` (filters ``snapshot_group_id``, ``volume_id``,
        ``id``, ``status``, ``name``, ``limit``, ``offset``)."""
        offset, limit, _ = page_params(request)
        query = request.query
        wanted = {key: query.get(key) for key in ("snapshot_group_id", "volume_id", "id", "status", "name")}
        project = request.match_info["project_id"]
        matches = [
            (snap, status)
            for snap, status in self.world.project_snapshots(project)
            if (wanted["snapshot_group_id"] is None or snap.group_id == wanted["snapshot_group_id"])
            and (wanted["volume_id"] is None or snap.volume_id == wanted["volume_id"].lower())
            and (wanted["id"] is None or snap.id == wanted["id"])
            and (wanted["status"] is None or status == wanted["status"])
            and (wanted["name"] is None or snap.name == wanted["name"])
        ]
        page = matches[offset : offset + limit]
        return json_response(200, {"snapshots": [self._member_json(snap, status) for snap, status in page]})

    def _member_json(self, snap: Snapshot, status: str) -> dict[str, object]:
        """A snapshot in the v5 shape (``SnapshotDetailV5``)."""
        volume = self.world.volumes.get(snap.volume_id)
        group = self.world.groups.get(snap.group_id or "")
        return {
            "id": snap.id,
            "name": snap.name,
            "description": snap.description,
            "created_at": snap.created_at,
            "updated_at": snap.updated_at,
            "volume_id": snap.volume_id,
            "size": snap.size,
            "status": status,
            "project_id": snap.project_id,
            "enterprise_project_id": snap.enterprise_project_id,
            "encrypted": False,
            "category": "standard",
            "availability_zone": volume.availability_zone if volume is not None else None,
            "tags": {} if group is None else dict(group.tags),
            "instant_access": False,
            "incremental": False,
            "snapshot_type": "manual",
            "progress": "100%" if status == "available" else "0%",
            "snapshot_group_id": snap.group_id,
        }

    # --- delete, rollback, jobs ------------------------------------------------------------
    async def delete(self, request: web.Request) -> web.StreamResponse:
        self.world.delete_arrived(request.match_info["snapshot_group_id"])
        group, status = self._find(request)
        if status not in ("available", "error"):
            raise evs_error(
                400, "EVS.1047", "snapshot group status must be available or error when delete it!"
            )
        world = self.world
        lost = world.chance(self.settings.fault_delete_drop_after)
        group.deleted_mono = world.clock()
        for member_id in self._member_ids(group):
            found = world.find(member_id)
            if found is not None and found[1] != "deleting":
                world.delete_snapshot(found[0])
        job = self._job("deleteSnapshotGroup", group.id)
        if lost:  # EVS started the deletion; the answer is lost
            return drop(request)
        return json_response(202, {"job_id": job.id})

    async def rollback(self, request: web.Request) -> web.StreamResponse:
        """A member's rollback (``POST /v5/{pid}/snapshots/{id}/rollback``): the v2 rules, a job id."""
        answer = await self.snapshots.rollback(request)
        if answer.status != 202:
            return answer  # a drop
        return json_response(
            202, {"job_id": self._job("rollbackSnapshot", request.match_info["snapshot_id"]).id}
        )

    async def job(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/{project_id}/jobs/{job_id}`` (``ShowJobResponse``)."""
        job = self.world.jobs.get(request.match_info["job_id"])
        if job is None or self.world.clock() < job.begin:
            raise evs_error(404, "EVS.5404", NOT_A_JOB)
        status, fail_reason = self._job_status(job)
        timeline = self.world.timeline
        return json_response(
            200,
            {
                "job_id": job.id,
                "job_type": job.job_type,
                "status": status,
                "entities": {"name": job.subject} if status != "FAIL" else {},
                "begin_time": evs_time(timeline.wall(job.begin)),
                "end_time": self.world.now_text() if status in ("SUCCESS", "FAIL") else None,
                "error_code": "EVS.2410" if status == "FAIL" else None,
                "fail_reason": fail_reason,
            },
        )

    def _job_status(self, job: Job) -> tuple[str, str | None]:
        if job.job_type != "createSnapshotGroup":
            return "SUCCESS", None
        group = self.world.groups.get(job.subject)
        status = None if group is None else self.status(group)
        if status == "creating":
            return "RUNNING", None
        if status == "error":
            return "FAIL", "a snapshot of the group ended in error"
        return "SUCCESS", None


NOT_A_JOB = "Job could not be found."


def group_json(group: SnapshotGroup, status: str) -> dict[str, object]:
    """A group in the SDK's ``SnapshotGroupDetail`` shape."""
    return {
        "id": group.id,
        "project_id": group.project_id,
        "created_at": group.created_at,
        "updated_at": group.created_at,
        "status": status,
        "name": group.name,
        "description": group.description,
        "enterprise_project_id": group.enterprise_project_id,
        "tags": dict(group.tags),
        "server_id": group.server_id,
    }


def _tag_filter(raw: str | None) -> list[tuple[str, str]]:
    """The ``tags`` query: URL-encoded JSON ``[{"key": ..., "value": ...}]`` (the SDK's list request)."""
    if raw is None:
        return []
    try:
        pairs = orjson.loads(raw)
    except orjson.JSONDecodeError:
        pairs = None
    if not isinstance(pairs, list) or not all(
        isinstance(p, dict) and isinstance(p.get("key"), str) and isinstance(p.get("value"), str)
        for p in pairs
    ):
        raise evs_error(400, "EVS.5400", 'Invalid input: tags must be [{"key": ..., "value": ...}].')
    return [(p["key"], p["value"]) for p in pairs]
