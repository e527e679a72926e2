"""The emulator's disks: full volume fields, the detail list and its filters, the tag search, the
attach/detach test hooks, also through the official SDK."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest

from orchestrator.api.credentials import AkSkAuth
from orchestrator.emulator import SeedVolume
from orchestrator.emulator.settings import DEFAULT_AK, DEFAULT_SK
from tests.helpers import PROJECT, call, volume_ids

VOLUMES = f"/v2/{PROJECT}/cloudvolumes"
BY_TAGS = f"{VOLUMES}/resource_instances/action"
IDS = volume_ids(6, seed=3)
SERVER = "9c0f4ad1-0000-4000-8000-00000000a001"
DISKS = (
    SeedVolume(
        volume_id=IDS[0],
        name="web-system",
        server_id=SERVER,
        device="/dev/vda",
        bootable=True,
        availability_zone="cn-north-4b",
        metadata={"role": "system", "tier": "web"},
        tags={"env": "prod", "app": "web"},
        size=40,
    ),
    SeedVolume(
        volume_id=IDS[1],
        name="web-data",
        server_id=SERVER,
        device="/dev/vdb",
        metadata={"role": "data", "tier": "web"},
        tags={"env": "prod", "app": "web", "backup": ""},
        size=100,
    ),
    SeedVolume(
        volume_id=IDS[2], name="db-data", metadata={"role": "data"}, tags={"env": "staging", "app": "db"}
    ),
    SeedVolume(volume_id=IDS[3], name="scratch", status="error", tags={"env": "dev"}),
    SeedVolume(volume_id=IDS[4], name="spare"),
)
ATTACHMENT_KEYS = {"server_id", "device", "attachment_id", "attached_at", "host_name", "volume_id", "id"}


async def test_volume_fields(emulator: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    """One disk carries name, attachments, bootable as a string, AZ, metadata and a tag map."""
    emu = await emulator(volumes=DISKS)
    status, body, _ = await call(http, emu, "GET", f"{VOLUMES}/{IDS[0]}")
    volume = body["volume"]
    assert status == 200
    assert (volume["id"], volume["name"], volume["status"], volume["size"]) == (
        IDS[0],
        "web-system",
        "in-use",
        40,
    )
    assert (volume["bootable"], volume["availability_zone"]) == ("true", "cn-north-4b")
    assert volume["metadata"] == {"role": "system", "tier": "web"}
    assert volume["tags"] == {"env": "prod", "app": "web"}
    [attachment] = volume["attachments"]
    assert set(attachment) == ATTACHMENT_KEYS
    assert (attachment["server_id"], attachment["device"], attachment["volume_id"]) == (
        SERVER,
        "/dev/vda",
        IDS[0],
    )
    _, spare, _ = await call(http, emu, "GET", f"{VOLUMES}/{IDS[4]}")
    assert (spare["volume"]["bootable"], spare["volume"]["availability_zone"]) == ("false", "cn-north-4a")
    assert (spare["volume"]["status"], spare["volume"]["attachments"]) == ("available", [])
    async with http.get(f"{emu.url}/_emulator/state") as response:
        state = orjson.loads(await response.read())
    assert set(state["volumes"][0]["attachments"][0]) == ATTACHMENT_KEYS
    assert state["volumes"][4]["attachments"] == []


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ([], IDS[:5]),
        ([("server_id", SERVER)], IDS[:2]),
        ([("metadata", '{"role": "data"}')], [IDS[1], IDS[2]]),
        ([("metadata", '{"role": "data", "tier": "web"}')], [IDS[1]]),
        ([("availability_zone", "cn-north-4b")], [IDS[0]]),
        ([("status", "error")], [IDS[3]]),
        ([("name", "db-data")], [IDS[2]]),
        ([("server_id", SERVER), ("name", "web-data")], [IDS[1]]),
        ([("limit", "2"), ("offset", "3")], IDS[3:5]),
    ],
)
async def test_volume_list_filters(
    emulator: Callable[..., Any],
    http: aiohttp.ClientSession,
    query: list[tuple[str, str]],
    expected: list[str],
) -> None:
    """GET cloudvolumes/detail filters by server, metadata (all pairs), AZ, status, name; pages by offset."""
    emu = await emulator(volumes=DISKS)
    status, body, _ = await call(http, emu, "GET", f"{VOLUMES}/detail", query=query)
    assert status == 200
    assert [v["id"] for v in body["volumes"]] == expected
    assert body["count"] == (5 if ("limit", "2") in query else len(expected))
    assert all(set(v["attachments"][0]) == ATTACHMENT_KEYS for v in body["volumes"] if v["attachments"])


async def test_volume_list_limits_and_links(
    emulator: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    """limit above 1000 is 400 EVS.2142; a bad metadata filter is EVS.1058; links only when more remain."""
    emu = await emulator(volumes=DISKS)
    status, body, _ = await call(http, emu, "GET", f"{VOLUMES}/detail", query=[("limit", "1001")])
    assert (status, body) == (
        400,
        {"error": {"code": "EVS.2142", "message": "invalid filter limit, can not greater than 1000."}},
    )
    status, body, _ = await call(http, emu, "GET", f"{VOLUMES}/detail", query=[("metadata", "role=data")])
    assert (status, body["error"]["code"]) == (400, "EVS.1058")
    _, body, _ = await call(http, emu, "GET", f"{VOLUMES}/detail", query=[("limit", "2")])
    assert body["volumes_links"][0]["rel"] == "next"
    _, body, _ = await call(http, emu, "GET", f"{VOLUMES}/detail", query=[("limit", "2"), ("offset", "4")])
    assert "volumes_links" not in body


@pytest.mark.parametrize(
    ("request_body", "expected"),
    [
        ({"action": "filter", "tags": [{"key": "env", "values": ["prod"]}]}, IDS[:2]),
        ({"action": "filter", "tags": [{"key": "env", "values": ["prod", "staging"]}]}, IDS[:3]),
        (
            {
                "action": "filter",
                "tags": [{"key": "env", "values": ["prod"]}, {"key": "backup", "values": []}],
            },
            [IDS[1]],
        ),
        ({"action": "filter", "tags": [{"key": "app", "values": []}]}, IDS[:3]),
        ({"action": "filter", "tags": [{"key": "env", "values": []}], "limit": 2, "offset": 1}, IDS[1:3]),
        ({"action": "filter", "tags": [], "matches": [{"key": "resource_name", "value": "data"}]}, IDS[1:3]),
        ({"action": "filter", "tags": [{"key": "nothing", "values": []}]}, []),
    ],
)
async def test_volumes_by_tags(
    emulator: Callable[..., Any],
    http: aiohttp.ClientSession,
    request_body: dict[str, Any],
    expected: list[str],
) -> None:
    """Tag keys are ANDed, values ORed, empty values match any value; resource_name matches fuzzily."""
    emu = await emulator(volumes=DISKS)
    status, body, _ = await call(http, emu, "POST", BY_TAGS, body=request_body)
    assert status == 200
    assert [r["resource_id"] for r in body["resources"]] == expected
    for resource in body["resources"]:
        assert resource["resource_name"] == resource["resource_detail"]["name"]
        assert {t["key"]: t["value"] for t in resource["tags"]} == resource["resource_detail"]["tags"]
    status, counted, _ = await call(http, emu, "POST", BY_TAGS, body={**request_body, "action": "count"})
    assert (status, set(counted)) == (200, {"total_count"})
    assert counted["total_count"] == body["total_count"]


@pytest.mark.parametrize(
    "request_body",
    [
        {"action": "delete", "tags": []},
        {"action": "filter", "tags": [], "limit": 0},
        {"action": "filter", "tags": [], "limit": 1001},
        {"action": "filter", "tags": [], "offset": -1},
        {"action": "filter", "tags": [{"key": "k"}] * 11},
        {"action": "filter", "tags": [{"values": ["v"]}]},
        {"action": "filter", "tags": "env=prod"},
    ],
)
async def test_volumes_by_tags_refusals(
    emulator: Callable[..., Any], http: aiohttp.ClientSession, request_body: dict[str, Any]
) -> None:
    """A bad action, limit outside 1..1000, a negative offset or malformed tags are 400 EVS.5400."""
    emu = await emulator(volumes=DISKS)
    status, body, _ = await call(http, emu, "POST", BY_TAGS, body=request_body)
    assert (status, body["error"]["code"]) == (400, "EVS.5400")


async def test_attach_detach_hooks(emulator: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    """The unauthenticated hooks detach (available, no attachments) and attach (in-use); not counted."""
    emu = await emulator(volumes=DISKS)
    async with http.post(f"{emu.url}/_emulator/volumes/{IDS[0]}/detach") as response:
        assert response.status == 200
    _, body, _ = await call(http, emu, "GET", f"{VOLUMES}/{IDS[0]}")
    assert (body["volume"]["status"], body["volume"]["attachments"]) == ("available", [])
    attach = {"server_id": "srv-2", "device": "/dev/vdc"}
    async with http.post(
        f"{emu.url}/_emulator/volumes/{IDS[4]}/attach", data=orjson.dumps(attach)
    ) as response:
        assert response.status == 200
    _, body, _ = await call(http, emu, "GET", f"{VOLUMES}/{IDS[4]}")
    assert body["volume"]["status"] == "in-use"
    assert [(a["server_id"], a["device"]) for a in body["volume"]["attachments"]] == [("srv-2", "/dev/vdc")]
    async with http.post(
        f"{emu.url}/_emulator/volumes/{IDS[5]}/attach", data=orjson.dumps(attach)
    ) as response:
        assert response.status == 404
    async with http.post(f"{emu.url}/_emulator/volumes/{IDS[4]}/attach", data=b"{}") as response:
        assert response.status == 400
    async with http.get(f"{emu.url}/_emulator/state") as response:
        state = orjson.loads(await response.read())
    assert set(state["requests"]) == {"GET /v2/{project_id}/cloudvolumes/{volume_id}"}


async def test_new_routes_are_authenticated_throttled_and_counted(
    emulator: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    """Volume list, tag search, quota and rollback need credentials, share the bucket and are counted."""
    emu = await emulator(volumes=DISKS, rate_limit=1, burst=4)
    routes = [
        ("GET", f"{VOLUMES}/detail", None),
        ("POST", BY_TAGS, {"action": "count", "tags": []}),
        ("GET", f"/v2/{PROJECT}/os-quota-sets/{PROJECT}", None),
        ("POST", f"/v2/{PROJECT}/cloudsnapshots/{IDS[5]}/rollback", {"rollback": {"volume_id": IDS[0]}}),
    ]
    for method, path, body in routes:
        status, answer, _ = await call(http, emu, method, path, body=body, auth=False)
        assert (status, answer["error_code"]) == (401, "APIGW.0301")
    signed = AkSkAuth(DEFAULT_AK, DEFAULT_SK)
    statuses = [(await call(http, emu, m, p, body=b, auth=signed))[0] for m, p, b in routes]
    assert statuses == [200, 200, 200, 404]
    status, answer, _ = await call(http, emu, "GET", f"{VOLUMES}/detail", auth=signed)
    assert (status, answer["error_code"]) == (429, "APIGW.0308")
    async with http.get(f"{emu.url}/_emulator/state") as response:
        requests = orjson.loads(await response.read())["requests"]
    assert requests["GET /v2/{project_id}/cloudvolumes/detail"] == {"401": 1, "200": 1, "429": 1}
    assert requests["POST /v2/{project_id}/cloudvolumes/resource_instances/action"] == {"401": 1, "200": 1}
    assert requests["GET /v2/{project_id}/os-quota-sets/{target_project_id}"] == {"401": 1, "200": 1}


@pytest.mark.no_cover
def test_official_sdk_volume_calls(emulator_thread: Callable[..., Any]) -> None:
    """The official SDK's list_volumes, show_volume and list_volumes_by_tags read the emulator's answers."""
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
    from huaweicloudsdkevs.v2 import (
        EvsClient,
        ListVolumesByTagsRequest,
        ListVolumesByTagsRequestBody,
        ListVolumesRequest,
        ShowVolumeRequest,
        TagsForListVolumes,
    )

    emu = emulator_thread(volumes=DISKS)
    client = (
        EvsClient.new_builder()
        .with_credentials(BasicCredentials(DEFAULT_AK, DEFAULT_SK, PROJECT))
        .with_endpoints([emu.url])
        .build()
    )
    listed = client.list_volumes(ListVolumesRequest(server_id=SERVER, metadata='{"tier": "web"}', limit=10))
    assert listed.count == 2
    first = listed.volumes[0]
    assert (first.id, first.name, first.bootable, first.tags) == (IDS[0], "web-system", "true", DISKS[0].tags)
    assert (first.attachments[0].server_id, first.attachments[0].device) == (SERVER, "/dev/vda")
    shown = client.show_volume(ShowVolumeRequest(volume_id=IDS[2]))
    assert (shown.volume.status, shown.volume.metadata) == ("available", {"role": "data"})
    body = ListVolumesByTagsRequestBody(
        action="filter", tags=[TagsForListVolumes(key="env", values=["prod"])], limit=10, offset=0
    )
    found = client.list_volumes_by_tags(ListVolumesByTagsRequest(body=body))
    assert found.total_count == 2
    assert [r.resource_id for r in found.resources] == IDS[:2]
    assert found.resources[0].resource_detail.name == "web-system"
    assert {"key": "env", "value": "prod"} in found.resources[0].tags
    with pytest.raises(ClientRequestException) as refused:
        client.list_volumes(ListVolumesRequest(limit=1001))
    assert (refused.value.status_code, refused.value.error_code) == (400, "EVS.2142")
