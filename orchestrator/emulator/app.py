"""The emulator's aiohttp.web application: the routes, wired to one world behind the gateway.

``gateway`` plays the API gateway (request ids, counters, latency, authentication, throttling, 5xx
faults); ``snapshots``, ``volumes`` and ``iam`` play EVS and IAM; ``/_emulator/...`` are test hooks
that need no credentials and are not counted.
"""

from __future__ import annotations

import time

from aiohttp import web

from orchestrator.emulator.answers import json_response
from orchestrator.emulator.clock import Clock
from orchestrator.emulator.gateway import Gateway, Handler
from orchestrator.emulator.groups import GroupRoutes
from orchestrator.emulator.iam import IamRoutes
from orchestrator.emulator.settings import EmulatorSettings
from orchestrator.emulator.snapshots import SnapshotRoutes
from orchestrator.emulator.state import World
from orchestrator.emulator.volumes import VolumeRoutes

WORLD: web.AppKey[World] = web.AppKey("world", World)


def build_app(settings: EmulatorSettings, clock: Clock | None = None) -> web.Application:
    """The emulator as an aiohttp application; ``clock`` (monotonic seconds) drives all its time."""
    world = World(settings, clock or time.monotonic)
    snapshots, volumes, iam = SnapshotRoutes(world), VolumeRoutes(world), IamRoutes(world)
    groups = GroupRoutes(world, snapshots)

    async def state(_request: web.Request) -> web.StreamResponse:
        return json_response(200, {**world.state(), "snapshot_groups": groups.state()})

    v2, v5 = "/v2/{project_id}", "/v5/{project_id}"
    # Each EVS route with the IAM action it needs (evs-api.md section 10; ``--deny`` refuses it). The v5
    # group API (``emulator.groups``) asks for the snapshot actions: its own are not published.
    evs_routes: list[tuple[str, str, Handler, str]] = [
        ("POST", f"{v2}/cloudsnapshots", snapshots.create, "evs:snapshots:create"),
        ("GET", f"{v2}/cloudsnapshots/detail", snapshots.list, "evs:snapshots:list"),
        ("GET", f"{v2}/cloudsnapshots/{{snapshot_id}}", snapshots.show, "evs:snapshots:get"),
        ("DELETE", f"{v2}/cloudsnapshots/{{snapshot_id}}", snapshots.delete, "evs:snapshots:delete"),
        (
            "POST",
            f"{v2}/cloudsnapshots/{{snapshot_id}}/rollback",
            snapshots.rollback,
            "evs:snapshots:rollback",
        ),
        ("POST", f"{v2}/snapshots/{{snapshot_id}}/metadata", snapshots.add_metadata, "evs:snapshots:update"),
        (
            "PUT",
            f"{v2}/snapshots/{{snapshot_id}}/metadata",
            snapshots.update_metadata,
            "evs:snapshots:update",
        ),
        (
            "DELETE",
            f"{v2}/snapshots/{{snapshot_id}}/metadata/{{key}}",
            snapshots.delete_metadata,
            "evs:snapshots:update",
        ),
        ("GET", f"{v2}/os-quota-sets/{{target_project_id}}", snapshots.quota, "evs:quotas:get"),
        ("GET", f"{v2}/cloudvolumes/detail", volumes.list, "evs:volumes:list"),
        ("POST", f"{v2}/cloudvolumes/resource_instances/action", volumes.by_tags, "evs:volumeTags:list"),
        ("GET", f"{v2}/cloudvolumes/{{volume_id}}", volumes.show, "evs:volumes:get"),
        ("POST", f"{v5}/snapshot-groups", groups.create, "evs:snapshots:create"),
        ("GET", f"{v5}/snapshot-groups/detail", groups.list, "evs:snapshots:list"),
        ("GET", f"{v5}/snapshot-groups/{{snapshot_group_id}}", groups.show, "evs:snapshots:get"),
        ("DELETE", f"{v5}/snapshot-groups/{{snapshot_group_id}}", groups.delete, "evs:snapshots:delete"),
        ("GET", f"{v5}/snapshots/detail", groups.members, "evs:snapshots:list"),
        ("POST", f"{v5}/snapshots/{{snapshot_id}}/rollback", groups.rollback, "evs:snapshots:rollback"),
        ("GET", "/v1/{project_id}/jobs/{job_id}", groups.job, "evs:snapshots:get"),
    ]
    actions = {f"{method} {path}": action for method, path, _, action in evs_routes}
    app = web.Application(middlewares=[Gateway(world, actions).middleware], client_max_size=1024 * 1024)
    app[WORLD] = world
    router = app.router
    router.add_post("/v3/auth/tokens", iam.issue_token)
    router.add_get("/v3/projects", iam.list_projects)
    router.add_get("/v3/auth/projects", iam.auth_projects)
    for method, path, handler, _ in evs_routes:
        if method == "GET":
            router.add_get(path, handler)  # with HEAD, as before
        else:
            router.add_route(method, path, handler)
    router.add_get("/_emulator/state", state)
    router.add_post("/_emulator/volumes/{volume_id}/attach", volumes.attach)
    router.add_post("/_emulator/volumes/{volume_id}/detach", volumes.detach)
    return app
