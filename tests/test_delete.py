"""The sweep's delete (``api.safe.delete_snapshot``) against the emulator: 400 EVS.1047 is looked into."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from orchestrator.api.safe import delete_snapshot
from orchestrator.emulator import ManualClock, SeedSnapshot, SeedVolume
from orchestrator.retry import RetryPolicy
from tests.test_edges_core import AKSK, answers, router_for

VOLUME = str(uuid.UUID(int=0xDE00, version=4))
DELETING, ROLLBACKING, AVAILABLE = (str(uuid.UUID(int=0xDE01 + index, version=4)) for index in range(3))
DELETE = "DELETE /v2/{project_id}/cloudsnapshots/{snapshot_id}"
SHOW = "GET /v2/{project_id}/cloudsnapshots/{snapshot_id}"
QUICK = RetryPolicy(max_attempts=2, initial_wait=0.01, max_wait=0.02)


async def test_a_snapshot_already_deleting_counts_as_deleted_at_once(
    emulator: Callable[..., Any], clock: ManualClock
) -> None:
    """An earlier DELETE whose answer was lost got through: the next one is refused EVS.1047, the
    snapshot is looked at, and ``deleting`` means done (no waiting out the patience, no failure)."""
    emu = await emulator(
        clock=clock,
        volumes=(SeedVolume(volume_id=VOLUME),),
        snapshots=(
            SeedSnapshot(id=DELETING, volume_id=VOLUME, status="deleting"),
            SeedSnapshot(id=AVAILABLE, volume_id=VOLUME),
        ),
    )
    async with router_for(emu.url, AKSK) as router:
        route = router.route_at(None, emu.world.settings.project_id)
        assert await delete_snapshot(route, DELETING, QUICK, patience=600.0) == (True, None)
        assert await delete_snapshot(route, AVAILABLE, QUICK, patience=600.0) == (True, None)
    assert answers(emu, DELETE) == {"400": 1, "202": 1}
    assert answers(emu, SHOW) == {"200": 1}


async def test_a_snapshot_in_another_state_fails_with_its_status(
    emulator: Callable[..., Any], clock: ManualClock
) -> None:
    """EVS.1047 for a snapshot that is neither creating nor deleting: one look, then failed, saying why."""
    emu = await emulator(
        clock=clock,
        volumes=(SeedVolume(volume_id=VOLUME),),
        snapshots=(SeedSnapshot(id=ROLLBACKING, volume_id=VOLUME, status="rollbacking"),),
    )
    async with router_for(emu.url, AKSK) as router:
        route = router.route_at(None, emu.world.settings.project_id)
        deleted, why = await delete_snapshot(route, ROLLBACKING, QUICK, patience=600.0)
    assert not deleted
    assert why is not None
    assert why.startswith("400 EVS.1047")
    assert why.endswith("(the snapshot is rollbacking)")
    assert answers(emu, DELETE) == {"400": 1}
