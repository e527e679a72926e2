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

    async def state(_request: web.Request) -> web.StreamResponse:
        return json_response(200, world.state())

    base = "/v2/{project_id}"
    # Each EVS route with the IAM action it needs (evs-api.md section 10; ``--deny`` refuses it).
    evs_routes: list[tuple[str, str, Handler, str]] = [
        ("POST", "/cloudsnapshots", snapshots.create, "evs:snapshots:create"),
        ("GET", "/cloudsnapshots/detail", snapshots.list, "evs:snapshots:list"),
        ("GET", "/cloudsnapshots/{snapshot_id}", snapshots.show, "evs:snapshots:get"),
        ("DELETE", "/cloudsnapshots/{snapshot_id}", snapshots.delete, "evs:snapshots:delete"),
        ("POST", "/cloudsnapshots/{snapshot_id}/rollback", snapshots.rollback, "evs:snapshots:rollback"),
        ("POST", "/snapshots/{snapshot_id}/metadata", snapshots.add_metadata, "evs:snapshots:update"),
        ("PUT", "/snapshots/{snapshot_id}/metadata", snapshots.update_metadata, "evs:snapshots:update"),
        (
            "DELETE",
            "/snapshots/{snapshot_id}/metadata/{key}",
            snapshots.delete_metadata,
            "evs:snapshots:update",
        ),
        ("GET", "/os-quota-sets/{target_project_id}", snapshots.quota, "evs:quotas:get"),
        ("GET", "/cloudvolumes/detail", volumes.list, "evs:volumes:list"),
        ("POST", "/cloudvolumes/resource_instances/action", volumes.by_tags, "evs:volumeTags:list"),
        ("GET", "/cloudvolumes/{volume_id}", volumes.show, "evs:volumes:get"),
    ]
    actions = {f"{method} {base}{path}": action for method, path, _, action in evs_routes}
    app = web.Application(middlewares=[Gateway(world, actions).middleware], client_max_size=1024 * 1024)
    app[WORLD] = world
    router = app.router
    router.add_post("/v3/auth/tokens", iam.issue_token)
    router.add_get("/v3/projects", iam.list_projects)
    router.add_get("/v3/auth/projects", iam.auth_projects)
    for method, path, handler, _ in evs_routes:
        if method == "GET":
            router.add_get(base + path, handler)  # with HEAD, as before
        else:
            router.add_route(method, base + path, handler)
    router.add_get("/_emulator/state", state)
    router.add_post("/_emulator/volumes/{volume_id}/attach", volumes.attach)
    router.add_post("/_emulator/volumes/{volume_id}/detach", volumes.detach)
    return app
