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
from orchestrator.emulator.gateway import Gateway
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

    app = web.Application(middlewares=[Gateway(world).middleware], client_max_size=1024 * 1024)
    app[WORLD] = world
    base = "/v2/{project_id}"
    router = app.router
    router.add_post("/v3/auth/tokens", iam.issue_token)
    router.add_get("/v3/projects", iam.list_projects)
    router.add_get("/v3/auth/projects", iam.auth_projects)
    router.add_post(base + "/cloudsnapshots", snapshots.create)
    router.add_get(base + "/cloudsnapshots/detail", snapshots.list)
    router.add_get(base + "/cloudsnapshots/{snapshot_id}", snapshots.show)
    router.add_delete(base + "/cloudsnapshots/{snapshot_id}", snapshots.delete)
    router.add_post(base + "/cloudsnapshots/{snapshot_id}/rollback", snapshots.rollback)
    router.add_get(base + "/os-quota-sets/{target_project_id}", snapshots.quota)
    router.add_get(base + "/cloudvolumes/detail", volumes.list)
    router.add_post(base + "/cloudvolumes/resource_instances/action", volumes.by_tags)
    router.add_get(base + "/cloudvolumes/{volume_id}", volumes.show)
    router.add_get("/_emulator/state", state)
    router.add_post("/_emulator/volumes/{volume_id}/attach", volumes.attach)
    router.add_post("/_emulator/volumes/{volume_id}/detach", volumes.detach)
    return app
