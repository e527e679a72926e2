"""The client's v5 group calls (api/groups.py) against the emulator: groups of one server and run, one
group, its members (each naming its group), a job, whether the region offers groups; and the count-less
lists paged to their first short page."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from orchestrator.api import evs, groups
from orchestrator.deleter import Ended, delete
from orchestrator.emulator import ManualClock, RunningEmulator, SeedVolume
from orchestrator.errors import RouteClosed
from tests.helpers import PROJECT, QUICK, SERVER, call, routed, stand_in, volume_ids

Start = Callable[..., Awaitable[RunningEmulator]]
DISKS = volume_ids(3, seed=0x6A2)
OTHER_SERVER = "1e2d3c4b-5a69-4788-9a0b-1c2d3e4f5a6b"
RUN, OTHER_RUN = "20261207T060000Z-abc123", "20261207T050000Z-def456"


def disks() -> tuple[SeedVolume, ...]:
    return (
        SeedVolume(volume_id=DISKS[0], server_id=SERVER, device="/dev/vdb"),
        SeedVolume(volume_id=DISKS[1], server_id=SERVER, device="/dev/vdc"),
        SeedVolume(volume_id=DISKS[2], server_id=OTHER_SERVER),
    )


async def make_group(http: aiohttp.ClientSession, emu: RunningEmulator, server: str, run: str) -> str:
    body = {"snapshot_group": {"server_id": server, "name": "g", "tags": {"evs_snapshot_run": run}}}
    status, answer, _ = await call(http, emu, "POST", f"/v5/{PROJECT}/snapshot-groups", body=body)
    assert status == 202, answer
    return str(answer["snapshot_group_id"])


async def test_groups_members_and_jobs(
    clocked: Start, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    """list_groups picks by server and run marker; show_group, group_members and show_job read the
    answers as views; a gone group or job reads as None."""
    emu = await clocked(volumes=disks(), creating_seconds=1)
    mine = await make_group(http, emu, SERVER, RUN)
    clock.advance(1)
    await make_group(http, emu, SERVER, OTHER_RUN)
    await make_group(http, emu, OTHER_SERVER, RUN)
    async with routed(emu.url) as route:
        found = await groups.list_groups(route, QUICK, server_id=SERVER, run_id=RUN)
        assert [(g.id, g.server_id, g.marker, g.status) for g in found] == [(mine, SERVER, RUN, "available")]
        assert len(await groups.list_groups(route, QUICK)) == 3
        shown = await groups.show_group(route, mine, QUICK)
        assert shown is not None
        assert shown.marked(RUN)
        assert not shown.marked(OTHER_RUN)
        assert await groups.show_group(route, DISKS[0], QUICK) is None
        members = await groups.group_members(route, mine, QUICK)
        assert sorted(m.volume_id for m in members) == DISKS[:2]
        assert {m.snapshot_group_id for m in members} == {mine}
        assert await groups.show_job(route, DISKS[0], QUICK) is None
        assert await groups.groups_offered(route, QUICK)
    job = emu.world.jobs
    job_id = next(iter(job))
    async with routed(emu.url) as route:
        state = await groups.show_job(route, job_id, QUICK)
        assert state is not None
        assert (state.status, state.done, state.fail_reason) == ("SUCCESS", True, None)


async def test_a_region_without_groups(emulator: Callable[..., Awaitable[RunningEmulator]]) -> None:
    """groups_offered is False on the gateway's 404 APIGW.0101 (and the route is closed); another
    refusal still raises."""
    emu = await emulator(volumes=disks(), no_snapshot_groups=True)
    async with routed(emu.url) as route:
        assert not await groups.groups_offered(route, QUICK)
    emu = await emulator(volumes=disks(), deny=("evs:snapshots:list",))
    async with routed(emu.url) as route:
        with pytest.raises(RouteClosed):
            await groups.groups_offered(route, QUICK)


async def test_count_less_lists_page_to_the_first_short_page() -> None:
    """The group list has no count: a full page (1000) asks for the next; a shorter one ends it."""
    offsets: list[str | None] = []

    async def groups_page(request: web.Request) -> web.Response:
        offsets.append(request.query.get("offset"))
        count = evs.PAGE if request.query.get("offset") is None else 2
        items = [
            {"id": f"g{i}", "server_id": SERVER, "tags": {"evs_snapshot_run": RUN}} for i in range(count)
        ]
        return web.json_response({"snapshot_groups": items})

    async with (
        stand_in({f"GET /v5/{PROJECT}/snapshot-groups/detail": groups_page}) as (url, _),
        routed(url) as route,
    ):
        found = await groups.list_groups(route, QUICK, run_id=RUN)
    assert len(found) == evs.PAGE + 2
    assert offsets == [None, str(evs.PAGE)]


async def test_a_group_delete_goes_through_the_one_deleter(
    clocked: Start, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    """deleter.delete(group=True): a group still creating is refused (EVS.1047, looked into: creating);
    an available one is deleted; a second DELETE meets EVS.1047 on a group deleting: done; once gone,
    its 404 EVS.5404 is done too."""
    emu = await clocked(volumes=disks(), creating_seconds=1, deleting_seconds=1)
    group_id = await make_group(http, emu, SERVER, RUN)
    async with routed(emu.url) as route:
        refused = await delete(route, group_id, QUICK, group=True)
        assert (refused.ended, refused.state) == (Ended.REJECTED, "creating")
        clock.advance(1)
        assert (await delete(route, group_id, QUICK, group=True)).ended is Ended.DONE
        again = await delete(route, group_id, QUICK, group=True)
        assert (again.ended, again.gone) == (Ended.DONE, False)
        clock.advance(1)
        gone = await delete(route, group_id, QUICK, group=True)
        assert (gone.ended, gone.gone) == (Ended.DONE, True)
