"""Deletions and rollbacks are confirmed concurrently, under the in-flight limit, and each is recorded as
it ends: by listing where many are pending, by parallel GETs where few are."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from yarl import URL

from orchestrator.actions import Action, ActionRecord
from orchestrator.api.routes import Route, connect
from orchestrator.api.safe import snapshot_pages
from orchestrator.config import Connection, Endpoints, Limits
from orchestrator.deleter import Deleter, Job
from orchestrator.emulator import ManualClock, SeedSnapshot, SeedVolume
from orchestrator.retry import RetryPolicy
from tests.helpers import (
    AKSK,
    DELETE,
    LIST,
    PROJECT,
    SNAPS,
    create_report,
    hits,
    marker,
    planned,
    records,
    requests_note,
    requests_of,
    rollback,
    rollbacks_per_snapshot,
    until,
    volume_ids,
    world,
)

SHOW = "GET /v2/{project_id}/cloudsnapshots/{snapshot_id}"
VOLUME_GET = "GET /v2/{project_id}/cloudvolumes/{volume_id}"
VOLUME_LIST = "GET /v2/{project_id}/cloudvolumes/detail"
QUICK = RetryPolicy(max_attempts=2, initial_wait=0.01, max_wait=0.02)
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


async def test_each_deletion_is_recorded_as_it_ends_while_others_are_sent(
    emulator: Callable[..., Any], clock: ManualClock
) -> None:
    """30 deletions, limit 3: a record is written once its snapshot is gone, while later DELETEs are
    still going out (not all at the end); requests in flight stay within the limit."""
    snapshots = seeded(COUNT, seed=961)
    emu = await emulator(
        clock=clock,
        latency_ms=100,
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
        deleter = Deleter(policy=QUICK, concurrency=3, wait_timeout=60.0, write=write, stopping=lambda: False)
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
        deleter = Deleter(
            policy=QUICK, concurrency=4, wait_timeout=60.0, write=written.append, stopping=lambda: False
        )
        await deleter.run([Job(route, record, sent=True) for record in sent])
    assert {record.outcome for record in written} == {Action.DELETED}
    assert len(written) == COUNT
    assert not hits(emu, SHOW)
    assert 3 <= hits(emu, LIST)["200"] <= 10


def test_a_rollback_that_ends_before_the_first_poll_is_recorded_at_that_poll(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """Rollbacks over before the first poll (the disk available again, its updated_at moved): each row
    is rolled_back after one poll of its disk and snapshot, not after polling out the settle window."""
    rows = 6
    emu = emulator_thread(rollback_seconds=0.0, latency_ms=30, **world(rows))
    source = create_report(tmp_path / "create.jsonl", [{} for _ in range(rows)])
    report = tmp_path / "rollback.jsonl"
    result = rollback(emu, source, report, "--apply", "--settle", "5s", "--concurrency", "4")
    assert result.exit_code == 0, result.output
    assert {r["outcome"] for r in records(report)} == {"rolled_back"}
    assert len(records(report)) == rows
    assert rollbacks_per_snapshot(emu.state()) == {SNAPS[i]: 1 for i in range(rows)}
    assert requests_note(result.output)["polls"] == 2 * rows  # one look at the disk, one at the snapshot
    assert 1 < emu.state()["max_in_flight"] <= 4


def test_many_rollbacks_under_way_are_watched_by_listing_the_disks(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """40 rollbacks under way, limit 4: after each disk's first look, they are watched by listing the
    disks (1000 a page), not by a GET of each disk a round; requests in flight stay within the limit."""
    rows, clock = 40, ManualClock()
    volumes = tuple(SeedVolume(volume_id=str(uuid.UUID(int=0xE000 + i, version=4))) for i in range(rows))
    snapshots = tuple(
        SeedSnapshot(id=str(uuid.UUID(int=0xF000 + i, version=4)), volume_id=v.volume_id, metadata=marker())
        for i, v in enumerate(volumes)
    )
    emu = emulator_thread(
        clock=clock, rollback_seconds=10.0, latency_ms=20, volumes=volumes, snapshots=snapshots
    )
    lines = [{"volume_id": v.volume_id, "snapshot_id": s.id} for v, s in zip(volumes, snapshots, strict=True)]
    source = create_report(tmp_path / "create.jsonl", [{"index": 0, **line} for line in lines])
    done = threading.Event()

    def release() -> None:
        """Once every rollback runs and the disks were listed 3 times, the clock moves past their end."""
        while not done.wait(0.01):
            state = emu.state()
            if len(state["rollbacks"]) == rows and sum(requests_of(state, VOLUME_LIST).values()) >= 3:
                clock.advance(10.0)
                return

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    try:
        result = rollback(emu, source, tmp_path / "rollback.jsonl", "--apply", "--concurrency", "4")
    finally:
        done.set()
        thread.join(timeout=10)
    assert result.exit_code == 0, result.output
    assert {r["outcome"] for r in records(tmp_path / "rollback.jsonl")} == {"rolled_back"}
    state = emu.state()
    assert sum(requests_of(state, VOLUME_LIST).values()) >= 3
    # a look and a first poll each, and a few more before the rows fall due together: not one a round
    assert sum(requests_of(state, VOLUME_GET).values()) <= 3 * rows
    assert 1 < state["max_in_flight"] <= 4


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
