"""The emulator's EVS snapshot core: create, show, list, delete, validation, disk rules, faults, the state
hook, and the official SDK against it (auth and IAM: test_emulator_auth.py)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import anyio
import orjson
import pytest

from orchestrator.emulator import ManualClock, RunningEmulator, SeedSnapshot, SeedVolume
from orchestrator.emulator.settings import DEFAULT_AK, DEFAULT_SK
from tests.helpers import API_IDS, PROJECT, call, create_body, seeds, volume_ids

SNAPSHOTS = f"/v2/{PROJECT}/cloudsnapshots"
VOLUME = volume_ids(1)[0]
EVS_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$")


Start = Callable[..., Awaitable[RunningEmulator]]


async def test_create_show_list_delete_lifecycle(
    clocked: Start, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    """A snapshot is 202 creating, then available; show and list reflect it; delete gives 202 then 404."""
    emu = await clocked(volumes=seeds([VOLUME]), creating_seconds=2)
    status, body, headers = await call(
        http, emu, "POST", SNAPSHOTS, body=create_body(name="s1", description="d")
    )
    assert status == 202
    assert headers["X-Request-Id"]
    snap = body["snapshot"]
    assert snap["status"] == "creating"
    assert snap["volume_id"] == VOLUME
    assert snap["name"] == "s1"
    assert snap["size"] == 40
    assert EVS_TIME.match(snap["created_at"])
    assert snap["os-extended-snapshot-attributes:project_id"] == PROJECT
    status, shown, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/{snap['id']}")
    assert (status, shown["snapshot"]["status"]) == (200, "creating")
    clock.advance(2)
    status, shown, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/{snap['id']}")
    assert shown["snapshot"]["status"] == "available"
    assert shown["snapshot"]["os-extended-snapshot-attributes:progress"] == "100%"
    status, listed, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/detail")
    assert listed["count"] == 1
    assert listed["snapshots"][0]["service_type"] == "EVS"
    status, deleted, _ = await call(http, emu, "DELETE", f"{SNAPSHOTS}/{snap['id']}")
    assert (status, deleted) == (202, None)
    _, shown, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/{snap['id']}")
    assert shown["snapshot"]["status"] == "deleting"
    clock.advance(0.5)
    status, missing, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/{snap['id']}")
    assert status == 404
    assert missing["error"]["code"] == "EVS.5404"


async def test_delete_while_creating_is_refused(
    emulator: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    """Delete is allowed only from available or error (EVS.1047)."""
    emu = await emulator(volumes=seeds([VOLUME]), creating_seconds=30)
    _, body, _ = await call(http, emu, "POST", SNAPSHOTS, body=create_body())
    status, error, _ = await call(http, emu, "DELETE", f"{SNAPSHOTS}/{body['snapshot']['id']}")
    assert (status, error["error"]["code"]) == (400, "EVS.1047")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (None, 400, "EVS.5400"),
        ({"snapshot": "x"}, 400, "EVS.5400"),
        (create_body("not-a-uuid"), 400, "EVS.1002"),
        (create_body(volume_ids(2)[1]), 404, "EVS.5404"),
        (create_body(force="yes"), 400, "EVS.5400"),
        (create_body(name="n" * 65), 400, "EVS.5400"),
        (create_body(name=""), 400, "EVS.5400"),
        (create_body(name="autobk_snapshot_x"), 400, "EVS.5400"),
        (create_body(description="d" * 86), 400, "EVS.5400"),
        (create_body(metadata={"a": 1}), 400, "EVS.5400"),
        (create_body(metadata={"a": {"b": "c"}}), 400, "EVS.5400"),
        (create_body(metadata={"__system__encrypted": "1"}), 403, "EVS.5403"),
    ],
)
async def test_create_validation(
    emulator: Callable[..., Any], http: aiohttp.ClientSession, body: object, status: int, code: str
) -> None:
    """Bad create requests get the status and EVS error code the real service gives."""
    emu = await emulator(volumes=seeds([VOLUME]))
    raw = b"{not json" if body is None else None
    got, error, _ = await call(http, emu, "POST", SNAPSHOTS, body=body, raw_body=raw)
    assert (got, error["error"]["code"]) == (status, code)
    assert error["error"]["message"]


@pytest.mark.parametrize(
    ("volume_status", "force", "status", "code"),
    [
        ("available", False, 202, None),
        ("in-use", True, 202, None),
        ("in-use", False, 400, "EVS.5400"),
        ("attaching", True, 400, "EVS.5400"),
        ("extending", False, 400, "EVS.5400"),
        ("error", True, 500, "EVS.2024"),
    ],
)
async def test_disk_status_rules(
    emulator: Callable[..., Any],
    http: aiohttp.ClientSession,
    volume_status: str,
    force: bool,
    status: int,
    code: str | None,
) -> None:
    """available is fine, in-use needs force, any other disk state is refused."""
    emu = await emulator(volumes=(SeedVolume(volume_id=VOLUME, status=volume_status),))
    got, body, _ = await call(http, emu, "POST", SNAPSHOTS, body=create_body(force=force))
    assert got == status
    if code is not None:
        assert body["error"]["code"] == code


async def test_seven_snapshots_per_disk(emulator: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    """The eighth snapshot of one disk is refused with the documented EVS.5400 body."""
    emu = await emulator(volumes=seeds([VOLUME]))
    for _ in range(7):
        status, _, _ = await call(http, emu, "POST", SNAPSHOTS, body=create_body())
        assert status == 202
    status, body, _ = await call(http, emu, "POST", SNAPSHOTS, body=create_body())
    message = f"Invalid volume: the number of snapshots of volume {VOLUME} reached the limit 7."
    assert (status, body) == (400, {"error": {"code": "EVS.5400", "message": message}})


async def test_any_volume_and_volume_lookup(
    emulator: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    """--any-volume makes every UUID an available disk; the volume lookup shows status and size."""
    emu = await emulator(any_volume=True, volumes=(SeedVolume(volume_id=VOLUME, status="in-use", size=80),))
    other = volume_ids(3)[2]
    status, body, _ = await call(http, emu, "GET", f"/v2/{PROJECT}/cloudvolumes/{other}")
    assert (status, body["volume"]["status"], body["volume"]["attachments"]) == (200, "available", [])
    status, body, _ = await call(http, emu, "GET", f"/v2/{PROJECT}/cloudvolumes/{VOLUME}")
    assert (body["volume"]["status"], body["volume"]["size"]) == ("in-use", 80)
    assert len(body["volume"]["attachments"]) == 1
    status, body, _ = await call(http, emu, "GET", f"/v2/{PROJECT}/cloudvolumes/not-a-uuid")
    assert status == 404


async def test_list_pagination_and_filters(emulator: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    """offset/limit pages, count of all matches, links only when more remain, and every filter."""
    ids = volume_ids(25)
    emu = await emulator(volumes=seeds(ids), creating_seconds=60)
    created = []
    for index, volume_id in enumerate(ids):
        _, body, _ = await call(
            http, emu, "POST", SNAPSHOTS, body=create_body(volume_id, name=f"n{index % 5}")
        )
        created.append(body["snapshot"]["id"])
    seen: list[str] = []
    offset = 0
    while True:
        status, page, _ = await call(
            http, emu, "GET", f"{SNAPSHOTS}/detail", query=[("limit", "10"), ("offset", str(offset))]
        )
        assert status == 200
        assert page["count"] == 25
        seen += [snap["id"] for snap in page["snapshots"]]
        offset += len(page["snapshots"])
        if offset < 25:
            assert page["snapshots_links"][0]["rel"] == "next"
            assert f"marker={page['snapshots'][-1]['id']}" in page["snapshots_links"][0]["href"]
        else:
            assert "snapshots_links" not in page
            break
    assert sorted(seen) == sorted(created)
    _, page, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/detail", query=[("name", "n3")])
    assert page["count"] == 5
    _, page, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/detail", query=[("volume_id", ids[4])])
    assert [s["id"] for s in page["snapshots"]] == [created[4]]
    _, page, _ = await call(
        http, emu, "GET", f"{SNAPSHOTS}/detail", query=[("id", created[0]), ("id", created[7])]
    )
    assert sorted(s["id"] for s in page["snapshots"]) == sorted([created[0], created[7]])
    _, page, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/detail", query=[("status", "available")])
    assert page["count"] == 0


@pytest.mark.parametrize(
    ("limit", "code"), [("1001", "EVS.2142"), ("0", "EVS.5400"), ("-1", "EVS.5400"), ("ten", "EVS.5400")]
)
async def test_list_limit_rules(
    emulator: Callable[..., Any], http: aiohttp.ClientSession, limit: str, code: str
) -> None:
    """limit must be a positive integer no greater than 1000."""
    emu = await emulator()
    status, body, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/detail", query=[("limit", limit)])
    assert (status, body["error"]["code"]) == (400, code)


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
async def test_faults_are_seeded_and_counted(
    emulator: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    """5xx faults hit about the asked share, reproducibly for one seed, and show in the counters."""
    outcomes = []
    for _ in range(2):
        emu = await emulator(any_volume=True, fault_5xx=0.3, seed=7)
        statuses = []
        for volume_id in volume_ids(60, seed=1):
            status, _, _ = await call(http, emu, "POST", SNAPSHOTS, body=create_body(volume_id))
            statuses.append(status)
        outcomes.append(statuses)
        async with http.get(f"{emu.url}/_emulator/state") as response:
            state = orjson.loads(await response.read())
        counts = state["requests"]["POST /v2/{project_id}/cloudsnapshots"]
        assert sum(counts.values()) == 60
        assert counts.get("202", 0) == statuses.count(202)
    assert outcomes[0] == outcomes[1]
    failures = sum(1 for status in outcomes[0] if status >= 500)
    assert 8 <= failures <= 30
    assert {status for status in outcomes[0] if status >= 500} <= {500, 502, 503}


async def test_dropped_connections(emulator: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    """Drop-before records nothing; drop-after records the snapshot; both lose the answer."""
    for knob, recorded in (("fault_drop_before", 0), ("fault_drop_after", 1)):
        emu = await emulator(volumes=seeds([VOLUME]), **{knob: 1.0})
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await call(http, emu, "POST", SNAPSHOTS, body=create_body())
        async with http.get(f"{emu.url}/_emulator/state") as response:
            state = orjson.loads(await response.read())
        assert len(state["snapshots"]) == recorded
        assert state["requests"]["POST /v2/{project_id}/cloudsnapshots"] == {"dropped": 1}


async def test_snapshot_error_fault(clocked: Start, clock: ManualClock, http: aiohttp.ClientSession) -> None:
    """With fault_snapshot_error=1 every snapshot ends in error after creating."""
    emu = await clocked(volumes=seeds([VOLUME]), creating_seconds=2, fault_snapshot_error=1.0)
    _, body, _ = await call(http, emu, "POST", SNAPSHOTS, body=create_body())
    clock.advance(2)
    _, shown, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/{body['snapshot']['id']}")
    assert shown["snapshot"]["status"] == "error"


async def test_latency_and_max_in_flight(emulator: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    """Latency delays answers; the state reports the most requests seen in flight at once."""
    emu = await emulator(any_volume=True, latency_ms=200)
    started = anyio.current_time()

    async def create(volume_id: str) -> None:
        await call(http, emu, "POST", SNAPSHOTS, body=create_body(volume_id))

    async with anyio.create_task_group() as group:
        for volume_id in volume_ids(6):
            group.start_soon(create, volume_id)
    assert anyio.current_time() - started >= 0.2
    async with http.get(f"{emu.url}/_emulator/state") as response:
        state = orjson.loads(await response.read())
    assert state["max_in_flight"] == 6
    assert len(state["snapshots"]) == 6
    assert set(state["snapshots"][0]) == {
        "id",
        "volume_id",
        "project_id",
        "name",
        "status",
        "created_at",
        "metadata",
    }
    assert set(state["volumes"][0]) == {"volume_id", "status", "size", "attachments"}


async def test_unknown_route_is_gateway_404(
    emulator: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    """A path the emulator does not serve answers in the gateway shape, with a request id."""
    emu = await emulator()
    async with http.get(f"{emu.url}/v9/nothing") as response:
        body = orjson.loads(await response.read())
        assert response.status == 404
        assert body["error_code"] == "APIGW.0101"
        assert response.headers["X-Request-Id"]


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_official_sdk_against_emulator(emulator_thread: Callable[..., Any]) -> None:
    """The official huaweicloudsdkevs client, signing with AK/SK, creates, shows, lists and deletes."""
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
    from huaweicloudsdkevs.v2 import (
        CreateSnapshotOption,
        CreateSnapshotRequest,
        CreateSnapshotRequestBody,
        DeleteSnapshotRequest,
        EvsClient,
        ListSnapshotsRequest,
        ShowSnapshotRequest,
    )

    emu = emulator_thread(volumes=seeds([VOLUME]), creating_seconds=0.0)
    client = (
        EvsClient.new_builder()
        .with_credentials(BasicCredentials(DEFAULT_AK, DEFAULT_SK, PROJECT))
        .with_endpoints([emu.url])
        .build()
    )
    option = CreateSnapshotOption(
        volume_id=VOLUME, force=False, name="sdk-snap", description="via sdk", metadata={"k": "v"}
    )
    created = client.create_snapshot(CreateSnapshotRequest(body=CreateSnapshotRequestBody(snapshot=option)))
    assert created.snapshot.status == "creating"
    shown = client.show_snapshot(ShowSnapshotRequest(snapshot_id=created.snapshot.id))
    assert shown.snapshot.name == "sdk-snap"
    assert shown.snapshot.status == "available"
    listed = client.list_snapshots(ListSnapshotsRequest(limit=1, name="sdk-snap"))
    assert listed.count == 1
    assert listed.snapshots[0].id == created.snapshot.id
    client.delete_snapshot(DeleteSnapshotRequest(snapshot_id=created.snapshot.id))
    bad = CreateSnapshotOption(volume_id=volume_ids(2)[1])
    with pytest.raises(ClientRequestException) as refused:
        client.create_snapshot(CreateSnapshotRequest(body=CreateSnapshotRequestBody(snapshot=bad)))
    assert refused.value.status_code == 404
    assert refused.value.error_code == "EVS.5404"
    assert refused.value.request_id


async def test_state_is_open_without_auth(emulator: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    """/_emulator/state needs no credentials and is not counted as API traffic."""
    emu = await emulator()
    async with http.get(f"{emu.url}/_emulator/state") as response:
        state = orjson.loads(await response.read())
    assert state == {
        "volumes": [],
        "snapshots": [],
        "rollbacks": [],
        "requests": {},
        "unlike_sdk": {},
        "in_flight": 0,
        "max_in_flight": 0,
        "snapshot_groups": [],
    }
    async with http.get(f"{emu.url}/_emulator/state") as response:
        again = orjson.loads(await response.read())
    assert again["requests"] == {}


async def test_emulator_refuses_malformed_queries_and_bodies(
    emulator: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    """A negative offset, a rollback name out of bounds, a bad `matches` filter, detaching an unknown disk."""
    snapshot = SeedSnapshot(id=volume_ids(1, seed=78)[0], volume_id=API_IDS[0])
    emu = await emulator(volumes=(), any_volume=False, snapshots=(snapshot,))
    status, body, _ = await call(
        http, emu, "GET", f"/v2/{PROJECT}/cloudsnapshots/detail", query=[("offset", "-1")]
    )
    assert (status, body["error"]) == (400, {"code": "EVS.5400", "message": "offset param must be positive."})
    for name in ("", "x" * 300, 7):
        status, body, _ = await call(
            http,
            emu,
            "POST",
            f"/v2/{PROJECT}/cloudsnapshots/{snapshot.id}/rollback",
            body={"rollback": {"volume_id": API_IDS[0], "name": name}},
        )
        assert (status, body["error"]["code"]) == (400, "EVS.5400"), body
        assert "name must be 1 to" in body["error"]["message"]
    assert emu.world.rollbacks == []
    action = f"/v2/{PROJECT}/cloudvolumes/resource_instances/action"
    for matches, message in (
        ("resource_name", "matches must be a list"),
        (["resource_name"], "each match needs a key and a value"),
        ([{"key": "resource_name", "value": 3}], "each match needs a key and a value"),
    ):
        status, body, _ = await call(http, emu, "POST", action, body={"action": "count", "matches": matches})
        assert (status, body["error"]["code"]) == (400, "EVS.5400"), body
        assert message in body["error"]["message"]
    status, body, _ = await call(http, emu, "POST", f"/_emulator/volumes/{API_IDS[1]}/detach", auth=False)
    assert status == 404


async def test_emulator_name_match_skips_other_keys(
    emulator: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    """`matches` items with another key are passed over; the resource_name item after them filters."""
    emu = await emulator(
        volumes=(
            SeedVolume(volume_id=API_IDS[0], name="web-1"),
            SeedVolume(volume_id=API_IDS[1], name="db-1"),
        )
    )
    action = f"/v2/{PROJECT}/cloudvolumes/resource_instances/action"
    other = {"key": "resource_id", "value": API_IDS[1]}
    status, body, _ = await call(http, emu, "POST", action, body={"action": "count", "matches": [other]})
    assert (status, body) == (200, {"total_count": 2})
    named = [other, {"key": "resource_name", "value": "web"}]
    status, body, _ = await call(http, emu, "POST", action, body={"action": "filter", "matches": named})
    assert status == 200
    assert [item["resource_id"] for item in body["resources"]] == [API_IDS[0]]
