"""The emulator's snapshot rules beyond create: late commits, list faults, the per-disk count, the project
quota, delete and rollback (evs-api.md 8 and 9), also through the official SDK."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import anyio
import pytest

from orchestrator.emulator import (
    EmulatorSettings,
    EmulatorThread,
    ManualClock,
    RunningEmulator,
    SeedSnapshot,
    SeedVolume,
)
from orchestrator.emulator.settings import DEFAULT_AK, DEFAULT_SK
from tests.helpers import PROJECT, call, create_body, seeds, state_of, volume_ids

Start = Callable[..., Awaitable[RunningEmulator]]
SNAPSHOTS = f"/v2/{PROJECT}/cloudsnapshots"
QUOTA = f"/v2/{PROJECT}/os-quota-sets/{PROJECT}"
VOLUME, OTHER = volume_ids(2)
SNAP_IDS = volume_ids(12, seed=9)
NOT_FOUND = {
    "error": {"code": "EVS.5404", "message": "Resource(Volume, Snapshot, Backup .etc) cound not be found."}
}


def seeded(index: int, status: str = "available", name: str | None = None, **fields: Any) -> SeedSnapshot:
    return SeedSnapshot(id=SNAP_IDS[index], volume_id=VOLUME, status=status, name=name, **fields)


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
async def test_late_commit_appears_later(
    clocked: Start, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    """A late commit answers 504 APIG.0203 at once; its snapshot is invisible (list, show, count, state)
    until --late-commit-seconds later, then creating, then available."""
    emu = await clocked(
        volumes=seeds([VOLUME]), fault_late_commit=1.0, late_commit_seconds=3, creating_seconds=2
    )
    for _ in range(8):  # invisible snapshots do not count against the limit of 7
        status, body, _ = await call(http, emu, "POST", SNAPSHOTS, body=create_body(name="late"))
        assert status == 504
        assert body == {
            "error_code": "APIG.0203",
            "error_msg": "Backend timeout.",
            "request_id": body["request_id"],
        }
    _, listed, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/detail")
    assert listed["count"] == 0
    assert (await state_of(http, emu))["snapshots"] == []
    clock.advance(2.9)
    _, listed, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/detail", query=[("volume_id", VOLUME)])
    assert listed["count"] == 0
    clock.advance(0.1)
    _, listed, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/detail", query=[("volume_id", VOLUME)])
    assert listed["count"] == 8
    assert {s["status"] for s in listed["snapshots"]} == {"creating"}
    status, shown, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/{listed['snapshots'][0]['id']}")
    assert (status, shown["snapshot"]["name"]) == (200, "late")
    status, _, _ = await call(http, emu, "POST", SNAPSHOTS, body=create_body())
    assert status == 400  # now visible, they count
    clock.advance(2)
    assert {s["status"] for s in (await state_of(http, emu))["snapshots"]} == {"available"}


async def test_create_is_carried_out_when_the_client_gives_up(
    emulator: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    """A client that times out before --latency-ms closes its connection; the create still happens."""
    emu = await emulator(volumes=seeds([VOLUME]), latency_ms=150)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.05)) as impatient:
        with pytest.raises(TimeoutError):
            await call(impatient, emu, "POST", SNAPSHOTS, body=create_body(name="given-up"))
    for _ in range(250):  # the latency is real time, not the world's clock
        state = await state_of(http, emu)
        if state["snapshots"]:
            break
        await anyio.sleep(0.02)
    assert [s["name"] for s in state["snapshots"]] == ["given-up"]
    assert state["requests"]["POST /v2/{project_id}/cloudsnapshots"] == {"dropped": 1}


async def test_fault_list_replaces_list_answers(
    emulator: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    """--fault-list 1 makes every snapshot list a 503 EVS.5503; other calls are untouched."""
    emu = await emulator(volumes=seeds([VOLUME]), fault_list=1.0)
    status, created, _ = await call(http, emu, "POST", SNAPSHOTS, body=create_body())
    assert status == 202
    status, body, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/detail", query=[("volume_id", VOLUME)])
    assert (status, body) == (503, {"error": {"code": "EVS.5503", "message": "Service unavailable."}})
    status, _, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/{created['snapshot']['id']}")
    assert status == 200
    assert (await state_of(http, emu))["requests"]["GET /v2/{project_id}/cloudsnapshots/detail"] == {"503": 1}


async def test_per_disk_limit_counts_as_the_service(
    clocked: Start, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    """Backup-made names and deleting snapshots do not count toward the 7; everything else does."""
    emu = await clocked(
        volumes=seeds([VOLUME]),
        snapshots=(
            *(seeded(index, name=f"manual-{index}") for index in range(5)),
            seeded(5, status="error"),
            seeded(6, name="autobk_snapshot_vbs_1"),
            seeded(7, name="manualbk_snapshot_csbs_2"),
            seeded(8, name="autobk_snapshot_3"),
        ),
    )
    status, _, _ = await call(http, emu, "POST", SNAPSHOTS, body=create_body())
    assert status == 202  # the seventh
    status, body, _ = await call(http, emu, "POST", SNAPSHOTS, body=create_body())
    message = f"Invalid volume: the number of snapshots of volume {VOLUME} reached the limit 7."
    assert (status, body) == (400, {"error": {"code": "EVS.5400", "message": message}})
    status, _, _ = await call(http, emu, "DELETE", f"{SNAPSHOTS}/{SNAP_IDS[0]}")
    assert status == 202
    status, _, _ = await call(http, emu, "POST", SNAPSHOTS, body=create_body())
    assert status == 202  # the deleting one no longer counts
    _, listed, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/detail")
    assert listed["count"] == 11


async def test_project_quota(emulator: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    """os-quota-sets reports in_use and limit; a create over --snapshot-quota is 413 EVS.5413."""
    emu = await emulator(volumes=seeds([VOLUME, OTHER], status="available"), snapshot_quota=2)
    status, body, _ = await call(http, emu, "GET", QUOTA, query=[("usage", "True")])
    assert status == 200
    assert body["quota_set"]["id"] == PROJECT
    assert body["quota_set"]["snapshots"] == {"in_use": 0, "limit": 2, "reserved": 0, "allocated": 0}
    assert body["quota_set"]["gigabytes"] == {"in_use": 80, "limit": -1, "reserved": 0, "allocated": 0}
    for volume_id in (VOLUME, OTHER):
        status, _, _ = await call(http, emu, "POST", SNAPSHOTS, body=create_body(volume_id))
        assert status == 202
    status, body, _ = await call(http, emu, "POST", SNAPSHOTS, body=create_body())
    assert (status, body) == (413, {"error": {"code": "EVS.5413", "message": "Insufficient volume quota."}})
    _, body, _ = await call(http, emu, "GET", QUOTA, query=[("usage", "True")])
    assert body["quota_set"]["snapshots"]["in_use"] == 2
    unlimited = await emulator()
    _, body, _ = await call(http, unlimited, "GET", QUOTA, query=[("usage", "True")])
    assert body["quota_set"]["snapshots"]["limit"] == -1
    status, body, _ = await call(http, emu, "GET", f"/v2/{PROJECT}/os-quota-sets/{'f' * 32}")
    assert (status, body["error"]["code"]) == (400, "EVS.0001")


async def test_delete_per_the_docs(clocked: Start, clock: ManualClock, http: aiohttp.ClientSession) -> None:
    """202 empty, deleting, then 404; only available/error (EVS.1047); error_deleting is 500 EVS.2019."""
    emu = await clocked(
        volumes=seeds([VOLUME]),
        snapshots=(
            seeded(0),
            seeded(1, status="error"),
            seeded(2, status="error_deleting"),
            seeded(3, status="creating"),
            seeded(4, status="backing-up"),
        ),
    )
    for index in (0, 1):
        status, body, headers = await call(http, emu, "DELETE", f"{SNAPSHOTS}/{SNAP_IDS[index]}")
        assert (status, body) == (202, None)
        assert headers["X-Request-Id"]
    _, shown, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/{SNAP_IDS[0]}")
    assert shown["snapshot"]["status"] == "deleting"
    status, body, _ = await call(http, emu, "DELETE", f"{SNAPSHOTS}/{SNAP_IDS[0]}")
    assert (status, body["error"]["code"]) == (400, "EVS.1047")
    status, body, _ = await call(http, emu, "DELETE", f"{SNAPSHOTS}/{SNAP_IDS[2]}")
    assert (status, body) == (500, {"error": {"code": "EVS.2019", "message": "snapshot is error_deleting!"}})
    wrong_state = {
        "error": {
            "code": "EVS.1047",
            "message": "snapshot status must be available or error when delete snapshot!",
        }
    }
    for index in (3, 4):
        status, body, _ = await call(http, emu, "DELETE", f"{SNAPSHOTS}/{SNAP_IDS[index]}")
        assert (status, body) == (400, wrong_state)
    clock.advance(0.5)
    for index in (0, 1, 11):
        status, body, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/{SNAP_IDS[index]}")
        assert (status, body) == (404, NOT_FOUND)
        status, body, _ = await call(http, emu, "DELETE", f"{SNAPSHOTS}/{SNAP_IDS[index]}")
        assert (status, body) == (404, NOT_FOUND)
    state = await state_of(http, emu)
    assert sorted(s["id"] for s in state["snapshots"]) == sorted(SNAP_IDS[2:5])


async def test_rollback_lifecycle(clocked: Start, clock: ManualClock, http: aiohttp.ClientSession) -> None:
    """Rollback: 202, disk and snapshot rollbacking for --rollback-seconds, then available; recorded."""
    emu = await clocked(volumes=seeds([VOLUME]), snapshots=(seeded(0),), rollback_seconds=2)
    path = f"{SNAPSHOTS}/{SNAP_IDS[0]}/rollback"
    body = {"rollback": {"volume_id": VOLUME, "name": "restored"}}
    status, answer, _ = await call(http, emu, "POST", path, body=body)
    assert (status, answer) == (202, {"rollback": {"volume_id": VOLUME}})
    _, shown, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/{SNAP_IDS[0]}")
    _, volume, _ = await call(http, emu, "GET", f"/v2/{PROJECT}/cloudvolumes/{VOLUME}")
    assert (shown["snapshot"]["status"], volume["volume"]["status"]) == ("rollbacking", "rollbacking")
    status, again, _ = await call(http, emu, "POST", path, body=body)
    assert (status, again) == (
        400,
        {"error": {"code": "EVS.5400", "message": "Must specify a valid status."}},
    )
    status, refused, _ = await call(http, emu, "DELETE", f"{SNAPSHOTS}/{SNAP_IDS[0]}")
    assert (status, refused["error"]["code"]) == (400, "EVS.1047")
    clock.advance(2)
    _, shown, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/{SNAP_IDS[0]}")
    _, volume, _ = await call(http, emu, "GET", f"/v2/{PROJECT}/cloudvolumes/{VOLUME}")
    assert (shown["snapshot"]["status"], volume["volume"]["status"]) == ("available", "available")
    assert volume["volume"]["name"] == "restored"
    state = await state_of(http, emu)
    assert [(r["snapshot_id"], r["volume_id"]) for r in state["rollbacks"]] == [(SNAP_IDS[0], VOLUME)]
    assert set(state["rollbacks"][0]) == {"snapshot_id", "volume_id", "at"}
    status, _, _ = await call(http, emu, "POST", path, body={"rollback": {"volume_id": VOLUME}})
    assert status == 202  # the same snapshot may be used again
    assert state["requests"]["POST /v2/{project_id}/cloudsnapshots/{snapshot_id}/rollback"] == {
        "202": 1,
        "400": 1,
    }


@pytest.mark.parametrize(
    ("snapshot", "volume", "body", "status", "code"),
    [
        (seeded(0), SeedVolume(volume_id=VOLUME), {"rollback": {"volume_id": OTHER}}, 400, "EVS.5400"),
        (seeded(0, status="creating"), SeedVolume(volume_id=VOLUME), None, 400, "EVS.5400"),
        (seeded(0, status="error"), SeedVolume(volume_id=VOLUME), None, 400, "EVS.5400"),
        (seeded(0), SeedVolume(volume_id=VOLUME, status="in-use"), None, 400, "EVS.5400"),
        (seeded(0), SeedVolume(volume_id=VOLUME, server_id="srv-1"), None, 400, "EVS.5400"),
        (seeded(0), SeedVolume(volume_id=VOLUME, status="error_rollbacking"), None, 202, None),
        (seeded(0), SeedVolume(volume_id=VOLUME), {"rollback": {}}, 400, "EVS.5400"),
        (seeded(0), SeedVolume(volume_id=VOLUME), {"nothing": 1}, 400, "EVS.5400"),
        (seeded(1), SeedVolume(volume_id=VOLUME), None, 404, "EVS.5404"),
        (seeded(0), SeedVolume(volume_id=OTHER), None, 404, "EVS.5404"),
    ],
)
async def test_rollback_refusals(
    emulator: Callable[..., Any],
    http: aiohttp.ClientSession,
    snapshot: SeedSnapshot,
    volume: SeedVolume,
    body: object,
    status: int,
    code: str | None,
) -> None:
    """Rollback only to the snapshot's own disk, from an available snapshot, to an available or
    error_rollbacking disk; unknown snapshots or disks are 404."""
    emu = await emulator(volumes=(volume,), snapshots=(snapshot,))
    body = body or {"rollback": {"volume_id": VOLUME}}
    got, answer, _ = await call(http, emu, "POST", f"{SNAPSHOTS}/{SNAP_IDS[0]}/rollback", body=body)
    assert got == status
    if code is not None:
        assert answer["error"]["code"] == code


async def test_rollback_error_fault(clocked: Start, clock: ManualClock, http: aiohttp.ClientSession) -> None:
    """--fault-rollback-error 1 leaves the disk error_rollbacking, from which a rollback may be retried."""
    emu = await clocked(volumes=seeds([VOLUME]), snapshots=(seeded(0),), fault_rollback_error=1.0)
    path = f"{SNAPSHOTS}/{SNAP_IDS[0]}/rollback"
    status, _, _ = await call(http, emu, "POST", path, body={"rollback": {"volume_id": VOLUME}})
    assert status == 202
    clock.advance(2)
    state = await state_of(http, emu)
    assert state["volumes"][0]["status"] == "error_rollbacking"
    assert state["snapshots"][0]["status"] == "available"
    status, _, _ = await call(http, emu, "POST", path, body={"rollback": {"volume_id": VOLUME}})
    assert status == 202


def test_official_sdk_delete_rollback_quota() -> None:
    """The official SDK's rollback_snapshot, delete_snapshot and cinder_list_quotas read the emulator's
    answers, and its errors carry the emulator's codes."""
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException, ServerResponseException
    from huaweicloudsdkevs.v2 import (
        CinderListQuotasRequest,
        DeleteSnapshotRequest,
        EvsClient,
        RollbackSnapshotOption,
        RollbackSnapshotRequest,
        RollbackSnapshotRequestBody,
        ShowSnapshotRequest,
    )

    clock = ManualClock()
    settings = EmulatorSettings(
        volumes=seeds([VOLUME]),
        snapshots=(seeded(0, metadata={"evs_snapshot_run": "r1"}), seeded(1, status="error_deleting")),
        snapshot_quota=10,
    )
    with EmulatorThread(settings, clock) as emu:
        client = (
            EvsClient.new_builder()
            .with_credentials(BasicCredentials(DEFAULT_AK, DEFAULT_SK, PROJECT))
            .with_endpoints([emu.url])
            .build()
        )
        option = RollbackSnapshotOption(volume_id=VOLUME, name="restored")
        answer = client.rollback_snapshot(
            RollbackSnapshotRequest(
                snapshot_id=SNAP_IDS[0], body=RollbackSnapshotRequestBody(rollback=option)
            )
        )
        assert answer.rollback.volume_id == VOLUME
        shown = client.show_snapshot(ShowSnapshotRequest(snapshot_id=SNAP_IDS[0]))
        assert shown.snapshot.status == "rollbacking"
        assert shown.snapshot.metadata == {"evs_snapshot_run": "r1"}
        with pytest.raises(ClientRequestException) as refused:
            client.delete_snapshot(DeleteSnapshotRequest(snapshot_id=SNAP_IDS[0]))
        assert (refused.value.status_code, refused.value.error_code) == (400, "EVS.1047")
        clock.advance(2)
        deleted = client.delete_snapshot(DeleteSnapshotRequest(snapshot_id=SNAP_IDS[0]))
        assert deleted.status_code == 202
        with pytest.raises(ServerResponseException) as failed:
            client.delete_snapshot(DeleteSnapshotRequest(snapshot_id=SNAP_IDS[1]))
        assert (failed.value.status_code, failed.value.error_code) == (500, "EVS.2019")
        quota = client.cinder_list_quotas(CinderListQuotasRequest(target_project_id=PROJECT, usage="True"))
        assert (quota.quota_set.snapshots.in_use, quota.quota_set.snapshots.limit) == (2, 10)
        assert quota.quota_set.id == PROJECT
        clock.advance(0.5)
        with pytest.raises(ClientRequestException) as gone:
            client.show_snapshot(ShowSnapshotRequest(snapshot_id=SNAP_IDS[0]))
        assert (gone.value.status_code, gone.value.error_code) == (404, "EVS.5404")
