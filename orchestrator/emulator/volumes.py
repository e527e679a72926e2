"""EVS volume routes: list with details, show one, find by tags; and the attach/detach test hooks.

Volume fields follow evs-api.md 8.4 (``bootable`` is the string ``"true"``/``"false"``, ``tags`` a
map); the tag search follows 8.5 (keys ANDed, values ORed, empty values match any value). Under
``--tags-default-ep-only`` the tag search sees only the default enterprise project's disks (a scoping
the docs neither promise nor rule out: evs-api.md 10).
"""

from __future__ import annotations

import orjson
from aiohttp import web

from orchestrator.emulator.answers import (
    LIST_LIMIT_MAX,
    evs_error,
    json_body,
    json_response,
    not_found,
    page_params,
)
from orchestrator.emulator.settings import ALL_ENTERPRISE_PROJECTS
from orchestrator.emulator.state import Volume, World, attachment_json, listed_in

TAG_KEYS_MAX = 10


class VolumeRoutes:
    """Handlers over one ``World``."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.settings = world.settings

    async def show(self, request: web.Request) -> web.StreamResponse:
        volume = self.world.volume(request.match_info["volume_id"])
        if volume is None:
            raise not_found()
        return json_response(200, {"volume": self.volume_json(volume)})

    async def list(self, request: web.Request) -> web.StreamResponse:
        offset, limit, limited = page_params(request)
        query = request.query
        metadata: object = {}
        if "metadata" in query:
            try:
                metadata = orjson.loads(query["metadata"])
            except orjson.JSONDecodeError:
                metadata = None
        if not isinstance(metadata, dict):
            raise evs_error(400, "EVS.1058", "invalid metadata filter!")
        wanted = {key: query.get(key) for key in ("server_id", "availability_zone", "status", "name")}
        enterprise_project = query.get("enterprise_project_id")
        matches = [
            volume
            for volume in self.world.all_volumes()
            if listed_in(enterprise_project, volume.enterprise_project_id)
            and (wanted["status"] is None or volume.status == wanted["status"])
            and (wanted["name"] is None or volume.name == wanted["name"])
            and (
                wanted["availability_zone"] is None or volume.availability_zone == wanted["availability_zone"]
            )
            and (
                wanted["server_id"] is None
                or any(a.server_id == wanted["server_id"] for a in volume.attachments)
            )
            and all(volume.metadata.get(str(key)) == str(value) for key, value in metadata.items())
        ]
        page = matches[offset : offset + limit]
        body: dict[str, object] = {"count": len(matches), "volumes": [self.volume_json(v) for v in page]}
        if limited and page and offset + len(page) < len(matches):
            project = request.match_info["project_id"]
            href = (
                f"{request.url.origin()}/v2/{project}/cloudvolumes/detail?limit={limit}&marker={page[-1].id}"
            )
            body["volumes_links"] = [{"href": href, "rel": "next"}]
        return json_response(200, body)

    async def by_tags(self, request: web.Request) -> web.StreamResponse:
        """``POST /v2/{project_id}/cloudvolumes/resource_instances/action`` (filter or count)."""
        body = await json_body(request)
        action = body.get("action")
        if action not in ("filter", "count"):
            raise evs_error(400, "EVS.5400", "Invalid input: action must be filter or count.")
        tags = _tag_filters(body.get("tags", []))
        matches_filter = _name_match(body.get("matches", []))
        limit = body.get("limit", LIST_LIMIT_MAX)
        offset = body.get("offset", 0)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= LIST_LIMIT_MAX:
            raise evs_error(400, "EVS.5400", "Invalid input: limit must be 1 to 1000.")
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise evs_error(400, "EVS.5400", "Invalid input: offset must not be negative.")
        # --tags-default-ep-only: the search scoped as a list without enterprise_project_id
        scope = None if self.settings.tags_default_ep_only else ALL_ENTERPRISE_PROJECTS
        found = [
            volume
            for volume in self.world.all_volumes()
            if listed_in(scope, volume.enterprise_project_id)
            and all(key in volume.tags and (not values or volume.tags[key] in values) for key, values in tags)
            and (matches_filter is None or matches_filter in volume.name)
        ]
        if action == "count":
            return json_response(200, {"total_count": len(found)})
        resources = [
            {
                "resource_id": volume.id,
                "resource_name": volume.name,
                "resource_detail": self.volume_json(volume),
                "tags": [{"key": key, "value": value} for key, value in volume.tags.items()],
            }
            for volume in found[offset : offset + limit]
        ]
        return json_response(200, {"total_count": len(found), "resources": resources})

    # --- test hooks (no authentication) -----------------------------------------------------
    async def attach(self, request: web.Request) -> web.StreamResponse:
        """``POST /_emulator/volumes/{volume_id}/attach`` with ``{"server_id", "device"}``: in-use."""
        volume = self.world.volume(request.match_info["volume_id"])
        if volume is None:
            raise not_found()
        body = await json_body(request)
        server_id, device = body.get("server_id"), body.get("device")
        if not isinstance(server_id, str) or not server_id or not isinstance(device, str | None):
            raise evs_error(400, "EVS.5400", "Invalid input: attach needs a server_id (and a device).")
        self.world.attach(volume, server_id, device)
        return json_response(200, {"volume": self.volume_json(volume)})

    async def detach(self, request: web.Request) -> web.StreamResponse:
        """``POST /_emulator/volumes/{volume_id}/detach``: no attachments, available."""
        volume = self.world.volume(request.match_info["volume_id"])
        if volume is None:
            raise not_found()
        self.world.detach(volume)
        return json_response(200, {"volume": self.volume_json(volume)})

    def volume_json(self, volume: Volume) -> dict[str, object]:
        """A disk in the EVS shape (``VolumeDetail``)."""
        project = self.settings.project_id
        return {
            "id": volume.id,
            "name": volume.name,
            "status": volume.status,
            "size": volume.size,
            "availability_zone": volume.availability_zone,
            "bootable": "true" if volume.bootable else "false",
            "metadata": volume.metadata,
            "tags": volume.tags,
            "volume_type": "SSD",
            "attachments": [attachment_json(volume, attachment) for attachment in volume.attachments],
            "created_at": volume.created_at,
            "updated_at": volume.updated_at or volume.created_at,
            "description": "",
            "multiattach": False,
            "shareable": "false",
            "encrypted": False,
            "service_type": "EVS",
            "enterprise_project_id": volume.enterprise_project_id,
            "os-vol-tenant-attr:tenant_id": project,
            "links": [{"href": f"/v2/{project}/cloudvolumes/{volume.id}", "rel": "self"}],
        }


def _tag_filters(raw: object) -> list[tuple[str, set[str]]]:
    if not isinstance(raw, list) or len(raw) > TAG_KEYS_MAX:
        raise evs_error(400, "EVS.5400", f"Invalid input: tags must be a list of at most {TAG_KEYS_MAX}.")
    filters = []
    for item in raw:
        key = item.get("key") if isinstance(item, dict) else None
        values = item.get("values", []) if isinstance(item, dict) else None
        if (
            not isinstance(key, str)
            or not isinstance(values, list)
            or not all(isinstance(v, str) for v in values)
        ):
            raise evs_error(400, "EVS.5400", "Invalid input: each tag needs a key and a list of values.")
        filters.append((key, set(values)))
    return filters


def _name_match(raw: object) -> str | None:
    if not isinstance(raw, list):
        raise evs_error(400, "EVS.5400", "Invalid input: matches must be a list.")
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("value"), str):
            raise evs_error(400, "EVS.5400", "Invalid input: each match needs a key and a value.")
        if item.get("key") == "resource_name":
            return str(item["value"])
    return None
