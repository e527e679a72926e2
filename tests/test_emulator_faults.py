"""The emulator breaks, one switch at a time, each assumption the tool's promises rest on (issue 20):
a skewed gateway clock, a denied IAM action, a tag search scoped to the default enterprise project, a
snapshot list whose order changes between pages, an API missing in the region, metadata keys rewritten;
and it refuses to delete or roll back snapshots a backup service made."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from orchestrator.api.credentials import AkSkAuth
from orchestrator.emulator import (
    EmulatorSettings,
    EmulatorThread,
    RunningEmulator,
    SeedSnapshot,
    SeedVolume,
    read_snapshots,
)
from orchestrator.emulator.settings import DEFAULT_AK, DEFAULT_SK, IAM_ACTIONS
from tests.helpers import PROJECT, call, cli_args, invoke, requests_of, settings_as_commanded, volume_ids

Start = Callable[..., Awaitable[RunningEmulator]]
BASE = f"/v2/{PROJECT}"
SNAPSHOTS = f"{BASE}/cloudsnapshots"
TAGS = f"{BASE}/cloudvolumes/resource_instances/action"
VOLUME, OTHER_VOLUME = volume_ids(2, seed=31)
SNAP_IDS = volume_ids(10, seed=32)
OTHER_EP = "ep-5a6b7c8d"
AKSK = AkSkAuth(DEFAULT_AK, DEFAULT_SK)
VOLUME_LIST = "GET /v2/{project_id}/cloudvolumes/detail"


def seeded_snapshots(count: int) -> tuple[SeedSnapshot, ...]:
    """``count`` snapshots of ``VOLUME``, one a minute apart (the list shows the newest first)."""
    return tuple(
        SeedSnapshot(id=SNAP_IDS[index], volume_id=VOLUME, created_at=f"2026-12-01T00:{index:02d}:00.000000")
        for index in range(count)
    )


def test_the_switches_are_options() -> None:
    """Each switch is an option of `evs-snapshot emulator`; --deny and --gateway-404 repeat; all off by default."""
    settings = settings_as_commanded(
        *("--clock-offset", "-1200", "--deny", "evs:snapshots:list", "--deny", "evs:quotas:get"),
        *("--tags-default-ep-only", "--list-shift", "2", "--gateway-404", "resource_instances"),
        *("--gateway-404", "os-quota-sets", "--metadata-rewrite", "lower"),
    )
    assert (
        settings.clock_offset,
        settings.deny,
        settings.tags_default_ep_only,
        settings.list_shift,
        settings.gateway_404,
        settings.metadata_rewrite,
    ) == (
        -1200.0,
        ("evs:snapshots:list", "evs:quotas:get"),
        True,
        2,
        ("resource_instances", "os-quota-sets"),
        "lower",
    )
    default = EmulatorSettings()
    assert (default.clock_offset, default.deny, default.tags_default_ep_only) == (0.0, (), False)
    assert (default.list_shift, default.gateway_404, default.metadata_rewrite) == (0, (), "none")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--deny", "evs:snapshots:lst"], "evs:snapshots:lst"),
        (["--list-shift", "-1"], "--list-shift"),
        (["--metadata-rewrite", "upper"], "upper"),
        (["--clock-offset", "nan"], "--clock-offset"),
    ],
)
def test_bad_switch_values_are_usage_errors(args: list[str], message: str) -> None:
    """An unknown IAM action, a negative shift, an unknown rewrite or a non-finite offset exits 2."""
    result = invoke(["emulator", *args])
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output + result.stderr


# --- --clock-offset ------------------------------------------------------------------------------
async def test_clock_offset_moves_the_date_header_and_created_at(
    emulator: Start, http: aiohttp.ClientSession
) -> None:
    """The gateway's Date header and the timestamps it writes run --clock-offset ahead of real time."""
    emu = await emulator(clock_offset=1800, volumes=(SeedVolume(volume_id=VOLUME),))
    status, body, headers = await call(http, emu, "POST", SNAPSHOTS, body={"snapshot": {"volume_id": VOLUME}})
    assert status == 202
    told = parsedate_to_datetime(headers["Date"])
    assert abs((told - datetime.now(UTC)).total_seconds() - 1800) < 5
    created = datetime.fromisoformat(body["snapshot"]["created_at"]).replace(tzinfo=UTC)
    assert abs((created - datetime.now(UTC)).total_seconds() - 1800) < 5


@pytest.mark.parametrize("offset", [16 * 60, -16 * 60, 14 * 60, -14 * 60, 0])
async def test_signatures_are_checked_against_the_gateway_clock(
    emulator: Start, http: aiohttp.ClientSession, offset: int
) -> None:
    """A correct signature dated now is accepted within 15 minutes of the gateway's clock (which the
    Date header tells), and beyond them refused 401 APIGW.0303 with both times."""
    emu = await emulator(clock_offset=offset)
    status, body, headers = await call(http, emu, "GET", f"{SNAPSHOTS}/detail", auth=AKSK)
    now = datetime.now(UTC)
    assert abs((parsedate_to_datetime(headers["Date"]) - now).total_seconds() - offset) < 5
    if abs(offset) < 15 * 60:
        assert (status, body["count"]) == (200, 0)
        return
    assert (status, body["error_code"], body["request_id"]) == (401, "APIGW.0303", headers["X-Request-Id"])
    prefix = "Incorrect IAM authentication information: signature expired, signature time:"
    assert body["error_msg"].startswith(prefix)
    signed, _, server = body["error_msg"].removeprefix(prefix).partition(",server time:")
    times = [datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) for text in (signed, server)]
    assert abs((times[0] - now).total_seconds()) < 5
    assert abs((times[1] - now).total_seconds() - offset) < 5


async def test_tokens_do_not_care_about_the_clock(emulator: Start, http: aiohttp.ClientSession) -> None:
    """Only AK/SK signatures carry a date: a token is accepted whatever the skew."""
    emu = await emulator(clock_offset=3600)
    status, _, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/detail")
    assert status == 200


@pytest.mark.no_cover
def test_a_skewed_gateway_refuses_the_tools_signature(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """Through the real CLI: the signature the tool makes is refused; the run stops with exit 3."""
    emu = emulator_thread(clock_offset=20 * 60, volumes=(SeedVolume(volume_id=VOLUME),))
    out = tmp_path / "m.csv"
    result = invoke(
        cli_args("select", "--status", "available", endpoint=emu.url, project_id=PROJECT, output=out)
    )
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output + result.stderr
    assert not out.exists()
    assert requests_of(emu.state(), VOLUME_LIST) == {"401": 1}


# --- --deny ---------------------------------------------------------------------------------------
CALLS = {
    "evs:snapshots:create": ("POST", SNAPSHOTS, {"snapshot": {"volume_id": VOLUME}}),
    "evs:snapshots:list": ("GET", f"{SNAPSHOTS}/detail", None),
    "evs:snapshots:get": ("GET", f"{SNAPSHOTS}/{SNAP_IDS[0]}", None),
    "evs:snapshots:delete": ("DELETE", f"{SNAPSHOTS}/{SNAP_IDS[0]}", None),
    "evs:snapshots:rollback": (
        "POST",
        f"{SNAPSHOTS}/{SNAP_IDS[0]}/rollback",
        {"rollback": {"volume_id": VOLUME}},
    ),
    "evs:volumes:list": ("GET", f"{BASE}/cloudvolumes/detail", None),
    "evs:volumes:get": ("GET", f"{BASE}/cloudvolumes/{VOLUME}", None),
    "evs:quotas:get": ("GET", f"{BASE}/os-quota-sets/{PROJECT}", None),
    "evs:volumeTags:list": ("POST", TAGS, {"action": "filter", "tags": []}),
}


def test_every_action_has_a_call() -> None:
    assert set(CALLS) == set(IAM_ACTIONS)


@pytest.mark.parametrize("action", IAM_ACTIONS)
@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
async def test_a_denied_action_answers_403_naming_it(
    emulator: Start, http: aiohttp.ClientSession, action: str
) -> None:
    """The call needing the denied action is 403 EVS.5403 naming it, after authentication; nothing is done."""
    emu = await emulator(
        deny=(action,), volumes=(SeedVolume(volume_id=VOLUME),), snapshots=seeded_snapshots(1)
    )
    method, path, body = CALLS[action]
    status, answer, headers = await call(http, emu, method, path, body=body, auth=AKSK)
    assert status == 403
    assert answer == {
        "error": {"code": "EVS.5403", "message": f"Policy doesn't allow {action} to be performed."}
    }
    assert headers["X-Request-Id"]
    state = emu.world.state()
    assert [snap["id"] for snap in state["snapshots"]] == [SNAP_IDS[0]]
    assert state["rollbacks"] == []
    unauthenticated, _, _ = await call(http, emu, method, path, body=body, auth=False)
    assert unauthenticated == 401  # the gateway authenticates before the policy is checked


async def test_other_actions_still_work(emulator: Start, http: aiohttp.ClientSession) -> None:
    """Denying the delete leaves the list, the show and the create allowed."""
    emu = await emulator(
        deny=("evs:snapshots:delete",), volumes=(SeedVolume(volume_id=VOLUME),), snapshots=seeded_snapshots(1)
    )
    for action in ("evs:snapshots:list", "evs:snapshots:get", "evs:snapshots:create", "evs:volumes:list"):
        method, path, body = CALLS[action]
        status, _, _ = await call(http, emu, method, path, body=body)
        assert status in (200, 202), action


def test_a_denied_volume_list_stops_select(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """Through the real CLI: select cannot list the disks; it fails without a traceback or a manifest."""
    emu = emulator_thread(deny=("evs:volumes:list",), volumes=(SeedVolume(volume_id=VOLUME),))
    out = tmp_path / "m.csv"
    result = invoke(
        cli_args("select", "--status", "available", endpoint=emu.url, project_id=PROJECT, output=out)
    )
    assert result.exit_code != 0
    assert "evs:volumes:list" in result.stderr  # the service's message names the action to grant
    assert "Traceback" not in result.output + result.stderr
    assert not out.exists()
    assert requests_of(emu.state(), VOLUME_LIST)["403"] >= 1


# --- --tags-default-ep-only -----------------------------------------------------------------------
async def test_tag_search_scoped_to_the_default_enterprise_project(
    emulator: Start, http: aiohttp.ClientSession
) -> None:
    """With the switch the tag search (filter and count) leaves out disks of other enterprise
    projects; the volume list with all_granted_eps still shows them."""
    volumes = (
        SeedVolume(volume_id=VOLUME, tags={"env": "prod"}),
        SeedVolume(volume_id=OTHER_VOLUME, tags={"env": "prod"}, enterprise_project_id=OTHER_EP),
    )
    search = {"action": "filter", "tags": [{"key": "env", "values": ["prod"]}]}
    count = {"action": "count", "tags": [{"key": "env", "values": ["prod"]}]}
    plain = await emulator(volumes=volumes)
    scoped = await emulator(volumes=volumes, tags_default_ep_only=True)
    for emu, expected in ((plain, {VOLUME, OTHER_VOLUME}), (scoped, {VOLUME})):
        status, body, _ = await call(http, emu, "POST", TAGS, body=search)
        assert status == 200
        assert {item["resource_id"] for item in body["resources"]} == expected
        assert body["total_count"] == len(expected)
        _, counted, _ = await call(http, emu, "POST", TAGS, body=count)
        assert counted == {"total_count": len(expected)}
    status, listed, _ = await call(
        http,
        scoped,
        "GET",
        f"{BASE}/cloudvolumes/detail",
        query=[("enterprise_project_id", "all_granted_eps")],
    )
    assert {volume["id"] for volume in listed["volumes"]} == {VOLUME, OTHER_VOLUME}
    assert {volume["enterprise_project_id"] for volume in listed["volumes"]} == {"0", OTHER_EP}


# --- --list-shift ---------------------------------------------------------------------------------
async def naive_paging(http: aiohttp.ClientSession, emu: RunningEmulator, limit: int) -> list[str]:
    """Every id a client paging by offset sees, in order (pages until one comes back short)."""
    seen: list[str] = []
    offset = 0
    while True:
        query = [("limit", str(limit))] + ([("offset", str(offset))] if offset else [])
        status, body, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/detail", query=query)
        assert status == 200
        assert body["count"] == len(SNAP_IDS)  # the count never changes: nothing is deleted
        seen += [snap["id"] for snap in body["snapshots"]]
        if len(body["snapshots"]) < limit:
            return seen
        offset += limit


async def test_naive_offset_paging_sees_everything_without_the_switch(
    emulator: Start, http: aiohttp.ClientSession
) -> None:
    emu = await emulator(volumes=(SeedVolume(volume_id=VOLUME),), snapshots=seeded_snapshots(10))
    assert await naive_paging(http, emu, 4) == SNAP_IDS[::-1]  # newest first


async def test_list_shift_makes_naive_offset_paging_skip(
    emulator: Start, http: aiohttp.ClientSession
) -> None:
    """Before each later page, the N snapshots before its offset move to the end of the order: a client
    paging by offset skips N per page (and sees the moved ones again at the end)."""
    emu = await emulator(
        volumes=(SeedVolume(volume_id=VOLUME),), snapshots=seeded_snapshots(10), list_shift=2
    )
    seen = await naive_paging(http, emu, 4)
    newest_first = SNAP_IDS[::-1]
    # page 1: 9 8 7 6; then 7 6 move to the end, page 2 (offset 4): 3 2 1 0 (5 and 4 are skipped);
    # then 1 0 move to the end, page 3 (offset 8): the last two of 9 8 5 4 3 2 7 6 1 0 are 1 0.
    assert seen == [*newest_first[:4], *newest_first[6:10], newest_first[8], newest_first[9]]
    assert set(newest_first) - set(seen) == {newest_first[4], newest_first[5]}
    assert len(emu.world.state()["snapshots"]) == 10  # nothing was deleted


async def test_list_shift_spares_first_pages_and_lookups(
    emulator: Start, http: aiohttp.ClientSession
) -> None:
    """A first page (no offset), such as a volume_id lookup, is complete and moves nothing."""
    emu = await emulator(
        volumes=(SeedVolume(volume_id=VOLUME),), snapshots=seeded_snapshots(10), list_shift=3
    )
    for _ in range(3):
        status, body, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/detail", query=[("volume_id", VOLUME)])
        assert status == 200
        assert [snap["id"] for snap in body["snapshots"]] == SNAP_IDS[::-1]


# --- --gateway-404 --------------------------------------------------------------------------------
async def test_gateway_404_closes_the_matching_api(emulator: Start, http: aiohttp.ClientSession) -> None:
    """Paths containing the text are 404 APIGW.0101 from the gateway, before authentication; others work."""
    emu = await emulator(
        gateway_404=("resource_instances",), volumes=(SeedVolume(volume_id=VOLUME, tags={"env": "prod"}),)
    )
    for auth in (AKSK, False):
        status, body, headers = await call(
            http, emu, "POST", TAGS, body={"action": "filter", "tags": []}, auth=auth
        )
        assert status == 404
        assert body == {
            "error_code": "APIGW.0101",
            "error_msg": "The API does not exist or has not been published in the environment",
            "request_id": headers["X-Request-Id"],
        }
    status, body, _ = await call(http, emu, "GET", f"{BASE}/cloudvolumes/detail", auth=AKSK)
    assert (status, body["count"]) == (200, 1)


async def test_a_gateway_404_is_not_the_resources_404(emulator: Start, http: aiohttp.ClientSession) -> None:
    """A snapshot's DELETE under a gateway 404 is not EVS.5404, and the snapshot stays."""
    emu = await emulator(
        gateway_404=("cloudsnapshots/",),
        volumes=(SeedVolume(volume_id=VOLUME),),
        snapshots=seeded_snapshots(1),
    )
    status, body, _ = await call(http, emu, "DELETE", f"{SNAPSHOTS}/{SNAP_IDS[0]}")
    assert (status, body["error_code"]) == (404, "APIGW.0101")
    assert [snap["status"] for snap in emu.world.state()["snapshots"]] == ["available"]


# --- --metadata-rewrite ---------------------------------------------------------------------------
async def test_metadata_keys_come_back_lower_cased(emulator: Start, http: aiohttp.ClientSession) -> None:
    """Create, show and list answer the keys lower-cased (values unchanged); what was sent is kept."""
    emu = await emulator(metadata_rewrite="lower", volumes=(SeedVolume(volume_id=VOLUME),))
    metadata = {"EVS_Snapshot_Run": "20261207T010203Z-AbC123", "Probe": "Kept"}
    lowered = {"evs_snapshot_run": "20261207T010203Z-AbC123", "probe": "Kept"}
    status, created, _ = await call(
        http, emu, "POST", SNAPSHOTS, body={"snapshot": {"volume_id": VOLUME, "metadata": metadata}}
    )
    assert (status, created["snapshot"]["metadata"]) == (202, lowered)
    snapshot_id = created["snapshot"]["id"]
    _, shown, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/{snapshot_id}")
    _, listed, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/detail")
    assert shown["snapshot"]["metadata"] == lowered
    assert [snap["metadata"] for snap in listed["snapshots"]] == [lowered]
    assert [snap["metadata"] for snap in emu.world.state()["snapshots"]] == [metadata]


async def test_metadata_keys_are_kept_by_default(emulator: Start, http: aiohttp.ClientSession) -> None:
    emu = await emulator(volumes=(SeedVolume(volume_id=VOLUME),))
    metadata = {"EVS_Snapshot_Run": "x"}
    _, created, _ = await call(
        http, emu, "POST", SNAPSHOTS, body={"snapshot": {"volume_id": VOLUME, "metadata": metadata}}
    )
    _, shown, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/{created['snapshot']['id']}")
    assert shown["snapshot"]["metadata"] == metadata


# --- backup-made snapshots ------------------------------------------------------------------------
BACKUP_NAMES = ("autobk_snapshot_vbs_1a2b", "manualbk_snapshot_csbs_3c4d")


async def test_backup_made_snapshots_are_neither_deleted_nor_rolled_back(
    emulator: Start, http: aiohttp.ClientSession, write: Callable[..., Path]
) -> None:
    """Snapshots seeded (from a --snapshots file) with backup-made names: DELETE and rollback are 400
    EVS.5400 and nothing changes; an ordinary snapshot of the same disk is deleted as usual."""
    seed_file = write(
        "snapshots.csv",
        "id,volume_id,name\n"
        + "".join(f"{SNAP_IDS[i]},{VOLUME},{name}\n" for i, name in enumerate(BACKUP_NAMES))
        + f"{SNAP_IDS[2]},{VOLUME},nightly\n",
    )
    emu = await emulator(volumes=(SeedVolume(volume_id=VOLUME),), snapshots=read_snapshots(seed_file))
    for index in range(len(BACKUP_NAMES)):
        snapshot_id = SNAP_IDS[index]
        status, body, _ = await call(http, emu, "DELETE", f"{SNAPSHOTS}/{snapshot_id}")
        assert (status, body["error"]["code"]) == (400, "EVS.5400")
        assert body["error"]["message"] == (
            f"Invalid snapshot: snapshot {snapshot_id} is created by the backup service and cannot be deleted."
        )
        status, body, _ = await call(
            http, emu, "POST", f"{SNAPSHOTS}/{snapshot_id}/rollback", body={"rollback": {"volume_id": VOLUME}}
        )
        assert (status, body["error"]["code"]) == (400, "EVS.5400")
        assert "cannot be rolled back" in body["error"]["message"]
    status, _, _ = await call(http, emu, "DELETE", f"{SNAPSHOTS}/{SNAP_IDS[2]}")
    assert status == 202
    state = emu.world.state()
    assert state["rollbacks"] == []
    assert {(snap["name"], snap["status"]) for snap in state["snapshots"]} >= {
        (name, "available") for name in BACKUP_NAMES
    }
    volumes: Any = state["volumes"]
    assert [volume["status"] for volume in volumes] == ["available"]
