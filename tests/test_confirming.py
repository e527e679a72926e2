"""Deletions and rollbacks are confirmed concurrently, under the in-flight limit, and each is recorded as
it ends: by listing where many are pending, by parallel GETs where few are."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
from yarl import URL

from orchestrator.actions import Action, ActionRecord
from orchestrator.api.routes import Route, connect
from orchestrator.api.safe import snapshot_pages
from orchestrator.config import Connection, Endpoints, Limits
from orchestrator.deleter import Job
from orchestrator.emulator import ManualClock, SeedSnapshot, SeedVolume
from tests.helpers import (
    AKSK,
    DELETE,
    LIST,
    PROJECT,
    QUICK,
    SHOW,
    hits,
    planned,
    quick_deleter,
    until,
    volume_ids,
)

COUNT = 30

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def limited(url: str, concurrency: int) -> AsyncIterator[Route]:
    """The test project's route on ``url`` with an in-flight limit of ``concurrency`` requests."""
    connection = Connection(
        endpoints=Endpoints(evs=URL(url)), environ=AKSK, limits=Limits(concurrency=concurrency)
    )
    async with contextlib.AsyncExitStack() as stack:
        router = await connect(stack, connection)
        yield await router.route_for(PROJECT, None)


def seeded(count: int, seed: int) -> list[SeedSnapshot]:
    disks = volume_ids(count, seed=seed)
    return [
        SeedSnapshot(id=str(uuid.uuid5(uuid.NAMESPACE_OID, f"confirm/{disk}")), volume_id=disk)
        for disk in disks
    ]


@pytest.mark.usefixtures("quick_deletion_polls")
@pytest.mark.no_cover
async def test_each_deletion_is_recorded_as_it_ends_while_others_are_sent(
    emulator: Callable[..., Any], clock: ManualClock
) -> None:
    """30 deletions, limit 3: a record is written once its snapshot is gone, while later DELETEs are
    still going out (not all at the end); requests in flight stay within the limit. (The deleter's
    first pause between rounds of confirming is a quarter of the product's, as is the latency: 25 ms.)"""
    snapshots = seeded(COUNT, seed=961)
    emu = await emulator(
        clock=clock,
        latency_ms=25,
        deleting_seconds=1.0,
        volumes=tuple(SeedVolume(volume_id=s.volume_id) for s in snapshots),
        snapshots=tuple(snapshots),
    )
    written: list[tuple[ActionRecord, int]] = []

    def write(record: ActionRecord) -> None:
        assert emu.world.find(str(record.snapshot_id)) is None, "recorded before it was gone"
        written.append((record, hits(emu, DELETE)["202"]))

    async def drive() -> None:
        """Deletions end in batches: the clock moves 1 s (the deleting time) for every 3 accepted."""
        advanced = 0
        with anyio.fail_after(30):
            while len(written) < COUNT:
                accepted = hits(emu, DELETE)["202"]
                if accepted >= advanced + 3 or (accepted == COUNT and advanced < COUNT):
                    clock.advance(1.0)
                    advanced = accepted
                await anyio.sleep(0.01)

    async with limited(emu.url, 3) as route, anyio.create_task_group() as group:
        group.start_soon(drive)
        deleter = quick_deleter(write, concurrency=3, wait_timeout=60.0)
        await deleter.run([Job(route, planned(s.id)) for s in snapshots])
    assert len(written) == COUNT
    assert {record.outcome for record, _ in written} == {Action.DELETED}
    early = [record for record, accepted in written if accepted < COUNT]
    assert len(early) >= COUNT // 3, "records must be written as deletions end, not after the last DELETE"
    assert 1 < emu.world.max_in_flight <= 3


async def test_many_pending_deletions_are_confirmed_by_listing(
    emulator: Callable[..., Any], clock: ManualClock
) -> None:
    """30 accepted deletions pending, limit 4: the project is listed (one page a round), never one GET
    per deletion; nothing is recorded while they are still deleting, all once they are gone."""
    snapshots = seeded(COUNT, seed=962)
    emu = await emulator(
        clock=clock,
        latency_ms=10,
        deleting_seconds=5.0,
        volumes=tuple(SeedVolume(volume_id=s.volume_id) for s in snapshots),
        snapshots=tuple(snapshots),
    )
    for snapshot in snapshots:  # DELETEs accepted by an earlier run: all pending at once
        emu.world.delete_snapshot(emu.world.snapshots[snapshot.id])
    written: list[ActionRecord] = []

    async def drive() -> None:
        await until(lambda: hits(emu, LIST)["200"] >= 2)
        assert written == []  # listed twice, every one still deleting
        clock.advance(5.0)

    sent = [dataclasses.replace(planned(s.id), outcome=Action.DELETED) for s in snapshots]
    async with limited(emu.url, 4) as route, anyio.create_task_group() as group:
        group.start_soon(drive)
        deleter = quick_deleter(written.append, concurrency=4, wait_timeout=60.0)
        await deleter.run([Job(route, record, sent=True) for record in sent])
    assert {record.outcome for record in written} == {Action.DELETED}
    assert len(written) == COUNT
    assert not hits(emu, SHOW)
    assert 3 <= hits(emu, LIST)["200"] <= 10


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
@pytest.mark.parametrize("overlap", [True, False])
async def test_a_listing_that_shrinks_between_pages_misses_nothing_with_overlap(
    emulator: Callable[..., Any], clock: ManualClock, overlap: bool
) -> None:
    """100 snapshots of the first page go between page 1 and page 2: with overlap, page 2 starts 100
    earlier and every remaining snapshot is seen; without, the 100 that moved up are missed."""
    snapshots = seeded(1500, seed=963)
    emu = await emulator(clock=clock, deleting_seconds=0.0, snapshots=tuple(snapshots))
    seen: set[str] = set()
    async with limited(emu.url, 4) as route:
        pages = snapshot_pages(route, QUICK, overlap=overlap)
        first = await anext(pages)
        for item in first[:100]:
            emu.world.delete_snapshot(emu.world.snapshots[item.id])
        seen.update(item.id for item in first[100:])
        async for page in pages:
            seen.update(item.id for item in page)
    gone = {item.id for item in first[:100]}
    missed = {s.id for s in snapshots} - gone - seen
    assert len(missed) == (0 if overlap else 100)
    assert hits(emu, LIST)["200"] == (3 if overlap else 2)
