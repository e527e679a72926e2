"""Listings page through the one paging loop (``api.safe``) and give typed views; a refused request
raises ``RouteClosed`` with its answer, and a create row refused so keeps the refusal's status."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from yarl import URL

from orchestrator.api import evs
from orchestrator.api.routes import connect
from orchestrator.api.safe import (
    ONE_TRY,
    list_all_volumes,
    show_snapshot,
    show_volume,
    snapshot_pages,
    volume_snapshots,
    volumes_by_tags,
)
from orchestrator.api.views import Snapshot, Volume
from orchestrator.config import Connection, Endpoints
from orchestrator.emulator import SeedSnapshot, SeedVolume
from orchestrator.errors import ListingFailed, RouteClosed
from orchestrator.report import ReportWriter
from orchestrator.runner import Runner, RunPlan
from orchestrator.tally import Tally
from tests.helpers import AKSK_ENV, PROJECT, QUICK, hits, routed, snapshot_request, volume_ids

pytestmark = pytest.mark.anyio

WRONG = {**AKSK_ENV, "HUAWEICLOUD_SDK_SK": "not-the-secret-key-000000000000000000000"}
BY_TAGS = "POST /v2/{project_id}/cloudvolumes/resource_instances/action"
VOLUMES = "GET /v2/{project_id}/cloudvolumes/detail"
SNAPSHOTS = "GET /v2/{project_id}/cloudsnapshots/detail"


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
async def test_tagged_disks_page_by_the_offset_in_the_body(emulator: Callable[..., Any]) -> None:
    """1001 tagged disks: two POSTs (offset 0, then 1000), every disk once, as a ``Volume``."""
    disks = tuple(SeedVolume(volume_id=i, tags={"batch": "p"}) for i in volume_ids(evs.PAGE + 1, seed=31))
    emu = await emulator(volumes=disks)
    async with routed(emu.url) as route:
        found = await volumes_by_tags(route, {"batch": ("p",)}, QUICK)
    assert all(isinstance(volume, Volume) for volume in found)
    assert sorted(volume.id for volume in found) == sorted(disk.volume_id for disk in disks)
    assert found[0].tags == {"batch": "p"}
    assert hits(emu, BY_TAGS) == {"200": 2}


@pytest.mark.no_cover
async def test_disks_page_by_the_offset_in_the_query(emulator: Callable[..., Any]) -> None:
    """1001 disks: two list requests; the views read the attachment the emulator made."""
    server = str(uuid.UUID(int=0x5E, version=4))
    ids = volume_ids(evs.PAGE + 1, seed=32)
    disks = (SeedVolume(volume_id=ids[0], server_id=server), *(SeedVolume(volume_id=i) for i in ids[1:]))
    emu = await emulator(volumes=disks)
    async with routed(emu.url) as route:
        found = await list_all_volumes(route, QUICK)
        shown = await show_volume(route, ids[0], QUICK)
        missing = await show_volume(route, str(uuid.UUID(int=0xDEAD, version=4)), QUICK)
    assert sorted(volume.id for volume in found) == sorted(ids)
    assert shown is not None
    assert (shown.servers, shown.status) == ([server], "in-use")
    assert missing is None
    assert hits(emu, VOLUMES) == {"200": 2}


async def test_snapshot_pages_say_the_total_and_an_empty_listing_is_one_page(
    emulator: Callable[..., Any],
) -> None:
    """Each page carries the count the service gives; a project without snapshots is one empty page."""
    disk = volume_ids(1, seed=33)[0]
    seeded = tuple(
        SeedSnapshot(id=i, volume_id=disk, metadata={evs.RUN_MARKER_KEY: "run-7"})
        for i in volume_ids(3, seed=34)
    )
    emu = await emulator(snapshots=seeded)
    async with routed(emu.url) as route:
        pages = [page async for page in snapshot_pages(route, QUICK)]
        one = await volume_snapshots(route, disk, QUICK)
        shown = await show_snapshot(route, seeded[0].id, QUICK)
        gone = await show_snapshot(route, str(uuid.UUID(int=0xBEEF, version=4)), QUICK)
    assert [(len(page), page.total) for page in pages] == [(3, 3)]
    assert {snapshot.id for snapshot in one} == {seed.id for seed in seeded}
    assert all(snapshot.marked("run-7") and snapshot.volume_id == disk for snapshot in one)
    assert isinstance(shown, Snapshot)
    assert shown.id == seeded[0].id
    assert gone is None
    empty = await emulator()
    async with routed(empty.url) as route:
        assert [(len(page), page.total) for page in [p async for p in snapshot_pages(route, QUICK)]] == [
            (0, 0)
        ]
    assert hits(empty, SNAPSHOTS) == {"200": 1}


async def test_snapshot_pages_of_a_smaller_size_page_through_the_same_loop(
    emulator: Callable[..., Any],
) -> None:
    """``size=2`` (doctor's paging check): five snapshots in three pages of at most two, each once."""
    disk = volume_ids(1, seed=35)[0]
    seeded = tuple(SeedSnapshot(id=i, volume_id=disk) for i in volume_ids(5, seed=36))
    emu = await emulator(snapshots=seeded)
    async with routed(emu.url) as route:
        pages = [page async for page in snapshot_pages(route, QUICK, size=2)]
    assert [(len(page), page.total) for page in pages] == [(2, 5), (2, 5), (1, 5)]
    assert sorted(snapshot.id for page in pages for snapshot in page) == sorted(seed.id for seed in seeded)
    assert hits(emu, SNAPSHOTS) == {"200": 3}


async def test_a_refused_request_raises_with_its_answer_and_later_ones_without(
    emulator: Callable[..., Any],
) -> None:
    """A wrong secret key: the first request raises ``RouteClosed`` holding the 401; the next is not
    sent and raises without an answer; a listing raises it too, never ``ListingFailed``."""
    emu = await emulator()
    async with routed(emu.url, WRONG) as route:
        with pytest.raises(RouteClosed) as first:
            await route.send(evs.show_volume(PROJECT, volume_ids(1)[0]))
        with pytest.raises(RouteClosed) as later:
            await route.send(evs.show_volume(PROJECT, volume_ids(1)[0]))
        with pytest.raises(RouteClosed):
            await volume_snapshots(route, volume_ids(1)[0], ONE_TRY)
    assert first.value.answer is not None
    assert first.value.answer.status == 401
    assert later.value.answer is None
    assert later.value.code == first.value.code
    assert hits(emu, "GET /v2/{project_id}/cloudvolumes/{volume_id}") == {"401": 1}


async def test_a_listing_that_keeps_failing_raises_listing_failed(emulator: Callable[..., Any]) -> None:
    """Every answer a 500: the attempts are spent, and the listing raises rather than look empty."""
    emu = await emulator(fault_5xx=1.0)
    async with routed(emu.url) as route:
        with pytest.raises(ListingFailed):
            [page async for page in snapshot_pages(route, QUICK)]
    assert sum(hits(emu, SNAPSHOTS).values()) == QUICK.max_attempts


async def test_a_create_refused_for_the_credentials_keeps_the_refusal_in_its_record(
    emulator: Callable[..., Any], tmp_path: Path
) -> None:
    """The route refuses the row's create (401): its record is failed with that status and code, one
    attempt; the next row is not sent and says so."""
    emu = await emulator(any_volume=True)
    first, second = volume_ids(2, seed=35)
    connection = Connection(endpoints=Endpoints(evs=URL(emu.url)), environ=WRONG)
    report = tmp_path / "r.jsonl"
    async with contextlib.AsyncExitStack() as stack:
        router = await connect(stack, connection)
        with ReportWriter(str(report)) as writer:
            runner = Runner(
                RunPlan(run_id="run-8", concurrency=1), router=router, writer=writer, tally=Tally()
            )
            await runner.run([snapshot_request(first), snapshot_request(second, row=2)])
    rows = [orjson.loads(line) for line in report.read_bytes().splitlines() if line.strip()]
    by_row = {row["row"]: row for row in rows if row.get("row") is not None}
    refused, unsent = by_row[1], by_row[2]
    assert (refused["outcome"], refused["http_status"], refused["attempts"]) == ("failed", 401, 1)
    assert refused["error_code"] == "APIGW.0301"
    assert (unsent["outcome"], unsent["http_status"], unsent["attempts"]) == ("failed", None, 0)
    assert unsent["error_message"].startswith("not sent: ")
    assert hits(emu, "POST /v2/{project_id}/cloudsnapshots") == {"401": 1}


async def test_a_listing_by_marker_gives_only_that_runs_snapshots(emulator: Callable[..., Any]) -> None:
    """Two snapshots of run-9, one of another run, one unmarked: the pages hold the two, the total all."""
    disk = volume_ids(1, seed=36)[0]
    ids = volume_ids(4, seed=37)
    markers = (
        {evs.RUN_MARKER_KEY: "run-9"},
        {evs.RUN_MARKER_KEY: "run-9"},
        {evs.RUN_MARKER_KEY: "run-1"},
        {},
    )
    seeded = tuple(
        SeedSnapshot(id=i, volume_id=disk, metadata=marker) for i, marker in zip(ids, markers, strict=True)
    )
    emu = await emulator(snapshots=seeded)
    async with routed(emu.url) as route:
        pages = [page async for page in snapshot_pages(route, QUICK, marker="run-9")]
    assert [page.total for page in pages] == [4]
    assert sorted(snapshot.id for page in pages for snapshot in page) == sorted(ids[:2])
