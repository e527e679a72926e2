"""The sweep's delete (``deleter.delete_snapshot``) against the emulator: 400 EVS.1047 is looked into."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from orchestrator.deleter import delete_snapshot
from orchestrator.emulator import ManualClock, SeedSnapshot, SeedVolume
from orchestrator.retry import RetryPolicy
from tests.helpers import (
    AKSK,
    FAST_RETRIES,
    answers,
    create_args,
    csv_manifest,
    invoke,
    last_per_row,
    records,
    requests_of,
    router_for,
    until,
    volume_ids,
)

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


def test_the_sweep_counts_a_deletion_whose_answer_was_lost_as_done(
    emulator_thread: Callable[..., Any], write: Callable[..., Any], tmp_path: Path
) -> None:
    """Doubles from commits later than --settle are deleted by the sweep; every DELETE's answer is lost
    after EVS acted. The resend is refused EVS.1047 (already deleting): that is a deletion, not a failure."""
    ids = volume_ids(20, seed=106)
    emu = emulator_thread(
        any_volume=True,
        seed=106,
        fault_late_commit=0.3,
        late_commit_seconds=0.6,
        creating_seconds=0.2,
        deleting_seconds=60.0,  # still deleting when the DELETE is sent again
        fault_delete_drop_after=1.0,
        rate_limit=1000,
    )
    report = tmp_path / "r.jsonl"
    args = create_args(emu.url, csv_manifest(write, ids), report, *FAST_RETRIES)
    result = invoke([*args, "--settle", "0.1", "--max-rps", "20", "--concurrency", "2"])
    assert result.exit_code == 0, result.output
    side = [r for r in records(report) if r["outcome"].startswith("duplicate")]
    assert side, "with a settle window shorter than the backend lag, doubles must appear and be swept"
    assert {r["outcome"] for r in side} == {"duplicate_deleted"}
    deletes = requests_of(emu.state(), DELETE)
    assert deletes["dropped"] == len(side)
    assert deletes["400"] == len(side)  # each resend refused: the snapshot was deleting already
    # The snapshot each row names was kept (a commit later than the sweep itself is wait's to catch).
    kept = {r["snapshot_id"] for r in last_per_row(report).values()}
    alive = {s["id"] for s in emu.state()["snapshots"] if s["status"] != "deleting"}
    assert kept <= alive


async def test_a_duplicate_that_finishes_creating_meanwhile_is_deleted_on_the_next_try(
    emulator: Callable[..., Any], clock: ManualClock
) -> None:
    """DELETE refused EVS.1047 while the snapshot is creating; it is available by the status read:
    the DELETE is sent again at once (not given up), and the snapshot goes."""
    emu = await emulator(
        clock=clock, creating_seconds=2.0, latency_ms=30, volumes=(SeedVolume(volume_id=VOLUME),)
    )
    snapshot = emu.world.create_snapshot(
        volume=emu.world.volumes[VOLUME], name=None, description=None, metadata={}
    )
    found: list[tuple[bool, str | None]] = []

    async def delete() -> None:
        async with router_for(emu.url, AKSK) as router:
            route = router.route_at(None, emu.world.settings.project_id)
            found.append(await delete_snapshot(route, snapshot.id, QUICK, patience=600.0))

    async with anyio.create_task_group() as group:
        group.start_soon(delete)
        await until(lambda: answers(emu, DELETE)["400"] >= 1)
        clock.advance(5)  # created: available by the time the status is read
    assert found == [(True, None)]
    assert answers(emu, DELETE) == {"400": 1, "202": 1}
    assert answers(emu, SHOW) == {"200": 1}
