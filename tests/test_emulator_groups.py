"""The emulator's v5 snapshot groups (evs-api.md 8.7, 10): the official SDK's calls read its answers
(create, job, show, list with filters, members, delete); its limits; ``--no-snapshot-groups``; and the
create faults (drops, late commits) applied to group creates."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest

from orchestrator.emulator import EmulatorSettings, EmulatorThread, ManualClock, RunningEmulator, SeedVolume
from orchestrator.emulator.settings import DEFAULT_AK, DEFAULT_SK
from tests.helpers import PROJECT, SERVER, call, requests_of, state_of, volume_ids

Start = Callable[..., Awaitable[RunningEmulator]]
GROUPS = f"/v5/{PROJECT}/snapshot-groups"
MEMBERS = f"/v5/{PROJECT}/snapshots/detail"
DISKS = volume_ids(4, seed=0x6A0)
OTHER_SERVER = "0d9c8b7a-6f5e-4d3c-8b2a-1f0e9d8c7b6a"
MARK = {"evs_snapshot_run": "20261207T060000Z-abc123"}


def server_disks(count: int = 3, *, zone: str | None = None, server: str = SERVER) -> list[SeedVolume]:
    return [
        SeedVolume(volume_id=disk, server_id=server, device=f"/dev/vd{chr(98 + i)}", availability_zone=zone)
        for i, disk in enumerate(DISKS[:count])
    ]


def group_body(**fields: object) -> dict[str, object]:
    return {"snapshot_group": {"server_id": SERVER, "name": "g", "tags": MARK, **fields}}


def test_the_official_sdk_reads_the_group_api() -> None:
    """create_snapshot_group, show_job, show/list_snapshot_group (server and tag filters),
    list_snapshots_details by group, delete_snapshot_group: the SDK parses every answer, the group
    goes creating -> available with its job RUNNING -> SUCCESS, and deleting it takes its members."""
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkevs.v2 import (
        CreateSnapshotGroupRequest,
        CreateSnapshotGroupRequestBody,
        DeleteSnapshotGroupRequest,
        EvsClient,
        ListSnapshotGroupRequest,
        ListSnapshotsDetailsRequest,
        ShowJobRequest,
        ShowSnapshotGroupRequest,
        SnapshotGroup,
    )

    clock = ManualClock()
    settings = EmulatorSettings(
        volumes=(*server_disks(2), SeedVolume(volume_id=DISKS[3])), deleting_seconds=0.5
    )
    with EmulatorThread(settings, clock) as emu:
        client = (
            EvsClient.new_builder()
            .with_credentials(BasicCredentials(DEFAULT_AK, DEFAULT_SK, PROJECT))
            .with_endpoints([emu.url])
            .build()
        )
        spec = SnapshotGroup(server_id=SERVER, volume_ids=DISKS[:2], name="pre-maint", tags=MARK)
        created = client.create_snapshot_group(
            CreateSnapshotGroupRequest(body=CreateSnapshotGroupRequestBody(snapshot_group=spec))
        )
        assert created.status_code == 202
        assert created.job_id
        assert created.snapshot_group_id
        group_id = created.snapshot_group_id
        assert client.show_job(ShowJobRequest(job_id=created.job_id)).status == "RUNNING"
        shown = client.show_snapshot_group(ShowSnapshotGroupRequest(snapshot_group_id=group_id))
        assert (shown.snapshot_group.status, shown.snapshot_group.server_id) == ("creating", SERVER)
        assert shown.snapshot_group.tags == MARK
        clock.advance(2)
        assert client.show_job(ShowJobRequest(job_id=created.job_id)).status == "SUCCESS"
        tags = orjson.dumps([{"key": "evs_snapshot_run", "value": MARK["evs_snapshot_run"]}]).decode()
        listed = client.list_snapshot_group(ListSnapshotGroupRequest(server_id=SERVER, tags=tags))
        assert [(g.id, g.status) for g in listed.snapshot_groups] == [(group_id, "available")]
        other = orjson.dumps([{"key": "evs_snapshot_run", "value": "other"}]).decode()
        assert client.list_snapshot_group(ListSnapshotGroupRequest(tags=other)).snapshot_groups == []
        assert (
            client.list_snapshot_group(ListSnapshotGroupRequest(server_id=OTHER_SERVER)).snapshot_groups == []
        )
        members = client.list_snapshots_details(ListSnapshotsDetailsRequest(snapshot_group_id=group_id))
        assert sorted(m.volume_id for m in members.snapshots) == sorted(DISKS[:2])
        assert {(m.snapshot_group_id, m.status) for m in members.snapshots} == {(group_id, "available")}
        deleted = client.delete_snapshot_group(DeleteSnapshotGroupRequest(snapshot_group_id=group_id))
        assert deleted.status_code == 202
        assert deleted.job_id
        state = emu.state()
        assert [g["status"] for g in state["snapshot_groups"]] == ["deleting"]
        assert {s["status"] for s in state["snapshots"]} == {"deleting"}
        clock.advance(0.5)
        state = emu.state()
        assert state["snapshot_groups"] == []
        assert state["snapshots"] == []


async def test_group_state_members_job_and_rollback(
    clocked: Start, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    """The state lists a group (id, server, disks, tags, status); its members are snapshots that also
    show in the v2 list; a member rolls back as the v2 rollback does, answered with a job."""
    emu = await clocked(volumes=tuple(server_disks(3)), creating_seconds=1, rollback_seconds=1)
    status, body, _ = await call(http, emu, "POST", GROUPS, body=group_body())
    assert status == 202, body
    state = await state_of(http, emu)
    assert state["snapshot_groups"] == [
        {
            "id": body["snapshot_group_id"],
            "server_id": SERVER,
            "volume_ids": DISKS[:3],
            "tags": MARK,
            "status": "creating",
        }
    ]
    status, listed, _ = await call(http, emu, "GET", f"/v2/{PROJECT}/cloudsnapshots/detail")
    assert listed["count"] == 3
    clock.advance(1)
    _, members, _ = await call(
        http, emu, "GET", MEMBERS, query=[("snapshot_group_id", body["snapshot_group_id"])]
    )
    member = members["snapshots"][0]
    rollback = f"/v5/{PROJECT}/snapshots/{member['id']}/rollback"
    status, refused, _ = await call(
        http, emu, "POST", rollback, body={"rollback": {"volume_id": member["volume_id"]}}
    )
    assert (status, refused["error"]["code"]) == (400, "EVS.5400")  # the disk is attached (in-use)
    async with http.post(f"{emu.url}/_emulator/volumes/{member['volume_id']}/detach"):
        pass
    status, answer, _ = await call(
        http, emu, "POST", rollback, body={"rollback": {"volume_id": member["volume_id"]}}
    )
    assert status == 202
    assert answer["job_id"]
    status, job, _ = await call(http, emu, "GET", f"/v1/{PROJECT}/jobs/{answer['job_id']}")
    assert (status, job["status"], job["job_type"]) == (200, "SUCCESS", "rollbackSnapshot")
    assert (await state_of(http, emu))["rollbacks"][0]["snapshot_id"] == member["id"]
    status, missing, _ = await call(http, emu, "GET", f"/v1/{PROJECT}/jobs/{DISKS[0]}")
    assert (status, missing["error"]["code"]) == (404, "EVS.5404")
    status, _, _ = await call(http, emu, "GET", f"{GROUPS}/{DISKS[0]}")
    assert status == 404


@pytest.mark.parametrize(
    ("volumes", "body", "reason"),
    [
        (
            [SeedVolume(volume_id=d, server_id=SERVER) for d in volume_ids(65, seed=0x6A1)],
            {},
            "at most 64 disks",
        ),
        (
            [*server_disks(1, zone="cn-north-4a"), *server_disks(2, zone="cn-north-4b")[1:]],
            {},
            "one availability zone",
        ),
        (
            server_disks(2),
            {"server_id": None, "volume_ids": [*DISKS[:1], DISKS[3]]},
            "attached to one server",
        ),
        (server_disks(1), {"volume_ids": [DISKS[3]]}, f"attached to server {SERVER}"),
        (server_disks(1), {"server_id": None, "volume_ids": None}, "cannot both be empty"),
        (server_disks(1), {"server_id": DISKS[2]}, "has no disks attached"),
        (server_disks(1), {"tags": {"k": 1}}, "tags must map strings"),
        (server_disks(1), {"name": "n" * 256}, "at most 255 bytes"),
    ],
)
async def test_group_limits(
    emulator: Callable[..., Any],
    http: aiohttp.ClientSession,
    volumes: list[SeedVolume],
    body: dict[str, object],
    reason: str,
) -> None:
    """64 disks, one availability zone, one server's disks: refused with 400 naming the reason."""
    extra = [SeedVolume(volume_id=DISKS[3], server_id=OTHER_SERVER)]
    emu = await emulator(volumes=(*volumes, *extra))
    status, answer, _ = await call(http, emu, "POST", GROUPS, body=group_body(**body))
    assert (status, answer["error"]["code"]) == (400, "EVS.5400")
    assert reason in answer["error"]["message"]
    assert (await state_of(http, emu))["snapshot_groups"] == []


async def test_a_disk_with_a_snapshot_creating_refuses_a_group(
    clocked: Start, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    """400 EVS.2409 while a member disk has a snapshot creating (one made alone, or a group's)."""
    emu = await clocked(volumes=tuple(server_disks(2)), creating_seconds=2)
    status, _, _ = await call(
        http,
        emu,
        "POST",
        f"/v2/{PROJECT}/cloudsnapshots",
        body={"snapshot": {"volume_id": DISKS[1], "force": True}},
    )
    assert status == 202
    status, answer, _ = await call(http, emu, "POST", GROUPS, body=group_body())
    assert (status, answer["error"]["code"]) == (400, "EVS.2409")
    clock.advance(2)
    status, _, _ = await call(http, emu, "POST", GROUPS, body=group_body())
    assert status == 202
    status, answer, _ = await call(http, emu, "POST", GROUPS, body=group_body())
    assert (status, answer["error"]["code"]) == (400, "EVS.2409")
    status, malformed, _ = await call(http, emu, "POST", GROUPS, body=group_body(volume_ids="x"))
    assert (status, malformed["error"]["code"]) == (400, "EVS.5400")


async def test_no_snapshot_groups_answers_404_on_every_v5_path(
    emulator: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    """--no-snapshot-groups: a region without them, 404 APIGW.0101 on each v5 path; v2 still works."""
    emu = await emulator(volumes=tuple(server_disks(1)), no_snapshot_groups=True)
    for method, path in [
        ("POST", GROUPS),
        ("GET", f"{GROUPS}/detail"),
        ("GET", f"{GROUPS}/{DISKS[0]}"),
        ("DELETE", f"{GROUPS}/{DISKS[0]}"),
        ("GET", MEMBERS),
        ("POST", f"/v5/{PROJECT}/snapshots/{DISKS[0]}/rollback"),
    ]:
        status, answer, _ = await call(
            http, emu, method, path, body=group_body() if method == "POST" else None
        )
        assert (status, answer["error_code"]) == (404, "APIGW.0101"), path
    status, _, _ = await call(http, emu, "GET", f"/v2/{PROJECT}/cloudsnapshots/detail")
    assert status == 200


async def test_group_list_filters_and_paging(
    emulator: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    """tag_key, tags, name, status, id; limit and offset; a malformed tags filter is refused."""
    emu = await emulator(volumes=(*server_disks(1), SeedVolume(volume_id=DISKS[3], server_id=OTHER_SERVER)))
    _, first, _ = await call(http, emu, "POST", GROUPS, body=group_body())
    _, second, _ = await call(
        http, emu, "POST", GROUPS, body=group_body(server_id=OTHER_SERVER, tags={}, name="h")
    )

    async def ids(*query: tuple[str, str]) -> list[str]:
        status, body, _ = await call(http, emu, "GET", f"{GROUPS}/detail", query=list(query))
        assert status == 200, body
        return [g["id"] for g in body["snapshot_groups"]]

    assert await ids() == [second["snapshot_group_id"], first["snapshot_group_id"]]
    assert await ids(("tag_key", "evs_snapshot_run")) == [first["snapshot_group_id"]]
    assert (
        await ids(("name", "h"))
        == await ids(("id", second["snapshot_group_id"]))
        == [second["snapshot_group_id"]]
    )
    assert await ids(("status", "available")) == []
    assert await ids(("limit", "1"), ("offset", "1")) == [first["snapshot_group_id"]]
    status, refused, _ = await call(http, emu, "GET", f"{GROUPS}/detail", query=[("tags", quote("{"))])
    assert (status, refused["error"]["code"]) == (400, "EVS.5400")


@pytest.mark.parametrize(
    ("switch", "dropped", "recorded"),
    [
        ("fault_drop_before", True, False),
        ("fault_drop_after", True, True),
        ("fault_late_commit", False, True),
    ],
)
async def test_create_faults_apply_to_group_creates(
    clocked: Start,
    clock: ManualClock,
    http: aiohttp.ClientSession,
    switch: str,
    dropped: bool,
    recorded: bool,
) -> None:
    """A dropped group create (before or after EVS records it), and a late commit (504 APIG.0203 now,
    the group and its members --late-commit-seconds later)."""
    emu = await clocked(volumes=tuple(server_disks(2)), late_commit_seconds=3, **{switch: 1.0})
    if dropped:
        with pytest.raises(aiohttp.ClientError):
            await call(http, emu, "POST", GROUPS, body=group_body())
    else:
        status, answer, _ = await call(http, emu, "POST", GROUPS, body=group_body())
        assert (status, answer["error_code"]) == (504, "APIG.0203")
        assert (await state_of(http, emu))["snapshot_groups"] == []
        clock.advance(3)
    state = await state_of(http, emu)
    assert len(state["snapshot_groups"]) == int(recorded)
    assert len(state["snapshots"]) == 2 * int(recorded)


async def test_a_dropped_group_delete_still_deletes(
    clocked: Start, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    """--fault-delete-drop-after: the answer is lost, the group and its members are deleting; a group
    still creating cannot be deleted (400 EVS.1047)."""
    emu = await clocked(volumes=tuple(server_disks(2)), fault_delete_drop_after=1.0, creating_seconds=1)
    _, created, _ = await call(http, emu, "POST", GROUPS, body=group_body())
    path = f"{GROUPS}/{created['snapshot_group_id']}"
    status, refused, _ = await call(http, emu, "DELETE", path)
    assert (status, refused["error"]["code"]) == (400, "EVS.1047")
    clock.advance(1)
    with contextlib.suppress(aiohttp.ClientError):  # aiohttp resends a dropped DELETE once: then 400
        await call(http, emu, "DELETE", path)
    state = await state_of(http, emu)
    assert [g["status"] for g in state["snapshot_groups"]] == ["deleting"]
    assert {s["status"] for s in state["snapshots"]} == {"deleting"}
    assert requests_of(state, "DELETE /v5/{project_id}/snapshot-groups/{snapshot_group_id}")["dropped"] == 1
