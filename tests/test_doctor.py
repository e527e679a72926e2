"""``evs-snapshot doctor``: every check passes against the default emulator; each emulator switch that
breaks an assumption makes the check that proves it fail, naming the cause and the fix, with the
documented exit code, no traceback, and nothing created unless ``--live`` is given."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import Result

from orchestrator.api.clock import gateway_offset
from orchestrator.emulator import EmulatorThread, SeedSnapshot, SeedVolume
from orchestrator.emulator.settings import DEFAULT_AK, DEFAULT_SK
from tests.helpers import CREATE_ROUTE, NO_CREDENTIALS, PROJECT, cli_args, invoke, requests_of, volume_ids

Start = Callable[..., EmulatorThread]
VOLUME, TAGGED, OTHER_EP_VOLUME = volume_ids(3, seed=2001)
SNAP_IDS = volume_ids(12, seed=2002)
FAST = ("--max-attempts", "2", "--backoff-initial", "0.01", "--backoff-max", "0.05", "--timeout", "5")
DISKS = (
    SeedVolume(volume_id=VOLUME),
    SeedVolume(volume_id=TAGGED, tags={"env": "prod"}),
    SeedVolume(volume_id=OTHER_EP_VOLUME, tags={"env": "prod"}, enterprise_project_id="ep-0c1d2e3f"),
)


def doctor(emu: EmulatorThread, *extra: str, **flags: object) -> Result:
    """``doctor`` against one emulator (endpoint and project given), with short retries."""
    return invoke([*cli_args("doctor", endpoint=emu.url, project_id=PROJECT, **flags), *FAST, *extra])


def table(result: Result) -> dict[str, str]:
    """Each check's row of the table: its name -> the rest of its lines."""
    rows: dict[str, str] = {}
    name = ""
    for line in result.stdout.splitlines()[1:-1]:
        if line.startswith(" "):
            rows[name] += " " + line.strip()
            continue
        name, _, rest = line.partition("  ")
        name = name.strip()
        rows[name] = rest.strip()
    return rows


def sound(result: Result, code: int) -> None:
    """The documented exit code, and no traceback anywhere."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output + result.stderr


def created(emu: EmulatorThread) -> int:
    return sum(requests_of(emu.state(), CREATE_ROUTE).values())


def test_the_default_emulator_passes_every_check(emulator_thread: Start) -> None:
    """All pass (or are information), exit 0; GETs only, and one tag search."""
    emu = emulator_thread(volumes=DISKS)
    result = doctor(emu)
    sound(result, 0)
    rows = table(result)
    for name in ("clock", "credentials", "project", "permissions: snapshot list", "permissions: volume list"):
        assert rows[name].startswith("PASS"), rows[name]
    assert rows["permissions: quota"].startswith("PASS")
    assert rows["permissions: tag search"].startswith("PASS")
    assert rows["enterprise projects: tag search"].startswith("PASS")
    assert "3 with all_granted_eps, 2 without" in rows["enterprise projects: volume list"]
    assert "FAIL" not in result.stdout
    assert "every read-only check passes" in result.stdout.splitlines()[-1]
    methods = {route.split(" ")[0] for route in emu.state()["requests"]}
    assert methods <= {"GET", "POST"}
    assert created(emu) == 0


def test_json_names_what_each_check_sent_and_proves(emulator_thread: Start) -> None:
    """``--json``: one object; each check with its result, the calls it sent and the assumptions."""
    emu = emulator_thread(volumes=DISKS)
    result = doctor(emu, "--json")
    sound(result, 0)
    data = orjson.loads(result.stdout)
    assert data["exit_code"] == 0
    assert data["project_id"] == PROJECT
    checks = {check["check"]: check for check in data["checks"]}
    assert checks["permissions: snapshot list"]["sent"] == ["GET /v2/{project_id}/cloudsnapshots/detail"]
    assert checks["clock"]["proves"] == [8]
    assert checks["enterprise projects: snapshot list"]["proves"] == [1]


@pytest.mark.parametrize(
    ("offset", "code", "result", "said"),
    [
        (120, 0, "WARN", "ahead of"),
        (-700, 1, "FAIL", "behind"),
        (1000, 3, "FAIL", "ahead of"),
    ],
)
def test_a_skewed_clock_is_named_in_seconds(
    emulator_thread: Start, offset: int, code: int, result: str, said: str
) -> None:
    """Warn above a minute, fail above ten, and past the gateway's 15 minutes the credentials stop it."""
    emu = emulator_thread(clock_offset=offset, volumes=DISKS)
    ran = doctor(emu)
    sound(ran, code)
    rows = table(ran)
    assert rows["clock"].startswith(result), rows["clock"]
    assert said in rows["clock"]
    assert "15 minutes" in rows["clock"]
    seconds = re.search(r"clock is (\d+)s ", rows["clock"])
    assert seconds is not None
    assert abs(int(seconds[1]) - abs(offset)) <= 2
    if code == 3:
        assert rows["credentials"].startswith("STOP")
        assert "APIGW.0303" in rows["credentials"]
        assert "clock" in rows["credentials"]  # the fix: set the clock right
        assert sum(requests_of(emu.state(), "GET /v2/{project_id}/cloudsnapshots/detail").values()) == 1
    assert created(emu) == 0


@pytest.mark.parametrize(
    ("action", "check"),
    [
        ("evs:snapshots:list", "permissions: snapshot list"),
        ("evs:volumes:list", "permissions: volume list"),
        ("evs:quotas:get", "permissions: quota"),
        ("evs:volumeTags:list", "permissions: tag search"),
    ],
)
def test_a_denied_action_is_named_with_the_commands_that_need_it(
    emulator_thread: Start, action: str, check: str
) -> None:
    """A 403 fails its check (exit 1), naming the IAM action to grant; the other checks still run."""
    emu = emulator_thread(deny=(action,), volumes=DISKS)
    result = doctor(emu)
    sound(result, 1)
    rows = table(result)
    assert rows[check].startswith("FAIL")
    assert f"grant the IAM action {action}" in rows[check]
    assert rows["credentials"].startswith("PASS")  # a 403 is authorization, not authentication
    others = [name for name, row in rows.items() if row.startswith("FAIL") and name != check]
    assert others == []
    assert created(emu) == 0


def test_a_scoped_tag_search_is_an_enterprise_project_difference(emulator_thread: Start) -> None:
    """``--tags-default-ep-only``: the tag search finds fewer disks than the volume list; exit 1."""
    emu = emulator_thread(tags_default_ep_only=True, volumes=DISKS)
    result = doctor(emu)
    sound(result, 1)
    row = table(result)["enterprise projects: tag search"]
    assert row.startswith("FAIL")
    assert "finds 1 disks tagged 'env', the volume list with all_granted_eps 2" in row
    assert "select --tag" in row  # the fix


def test_a_list_that_shifts_between_pages_fails_the_paging_check(emulator_thread: Start) -> None:
    """``--list-shift``: offset paging misses snapshots; the check says so and exits 1."""
    snapshots = tuple(SeedSnapshot(id=snap, volume_id=VOLUME) for snap in SNAP_IDS[:10])
    emu = emulator_thread(list_shift=2, volumes=DISKS, snapshots=snapshots)
    result = doctor(emu)
    sound(result, 1)
    row = table(result)["paging: snapshot list"]
    assert row.startswith("FAIL")
    assert "of the 10 the list counts" in row
    assert "volume_id lookup" in row
    assert len(emu.state()["snapshots"]) == 10


def test_a_still_list_passes_the_paging_check(emulator_thread: Start) -> None:
    """Without the switch, each snapshot comes exactly once."""
    snapshots = tuple(SeedSnapshot(id=snap, volume_id=VOLUME) for snap in SNAP_IDS[:10])
    emu = emulator_thread(volumes=DISKS, snapshots=snapshots)
    result = doctor(emu)
    sound(result, 0)
    assert "each of the 10 snapshots" in table(result)["paging: snapshot list"]


def test_a_gateway_404_is_an_api_missing_in_the_region(emulator_thread: Start) -> None:
    """``--gateway-404``: the probe's check names APIGW.0101 (never 'gone'); exit 1."""
    emu = emulator_thread(gateway_404=("os-quota-sets",), volumes=DISKS)
    result = doctor(emu)
    sound(result, 1)
    row = table(result)["permissions: quota"]
    assert row.startswith("FAIL")
    assert "APIGW.0101" in row
    assert "--endpoint/--region" in row


def test_a_gateway_404_on_the_snapshot_list_stops_the_doctor(emulator_thread: Start) -> None:
    """The first signed GET meets no API: nothing is proven about the credentials; exit 3."""
    emu = emulator_thread(gateway_404=("cloudsnapshots",), volumes=DISKS)
    result = doctor(emu)
    sound(result, 3)
    assert table(result)["credentials"].startswith("STOP")
    assert "doctor stopped at credentials" in result.stdout.splitlines()[-1]


def test_refused_credentials_stop_after_one_request(emulator_thread: Start) -> None:
    """A wrong secret key: exit 3 after one signed request (the gateway locks an AK after five)."""
    emu = emulator_thread(volumes=DISKS)
    env = {**NO_CREDENTIALS, "HUAWEICLOUD_SDK_AK": DEFAULT_AK, "HUAWEICLOUD_SDK_SK": DEFAULT_SK + "x"}
    result = invoke([*cli_args("doctor", endpoint=emu.url, project_id=PROJECT), *FAST], base=env)
    sound(result, 3)
    assert table(result)["credentials"].startswith("STOP")
    assert sum(sum(counts.values()) for counts in emu.state()["requests"].values()) == 1


@pytest.mark.parametrize(("deny", "via"), [(False, "GET /v3/projects"), (True, "GET /v3/auth/projects")])
def test_the_project_check_names_the_iam_request_that_found_it(
    emulator_thread: Start, deny: bool, via: str
) -> None:
    """No --project-id: IAM resolves the region's project, and the check says which request did."""
    emu = emulator_thread(iam_deny_list_projects=deny, volumes=DISKS)
    args = cli_args("doctor", endpoint=emu.url, iam_endpoint=emu.url, region="cn-north-4")
    result = invoke([*args, *FAST])
    sound(result, 0)
    row = table(result)["project"]
    assert row.startswith("PASS")
    assert PROJECT in row
    assert f"resolved by {via}" in row


def test_a_manifest_gets_each_disks_room(emulator_thread: Start, tmp_path: Path) -> None:
    """With a MANIFEST: a disk at the per-disk limit (7) fails the quota check, named."""
    snapshots = tuple(SeedSnapshot(id=snap, volume_id=TAGGED) for snap in SNAP_IDS[:7])
    emu = emulator_thread(volumes=DISKS, snapshots=snapshots)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"volume_id\n{VOLUME}\n{TAGGED}\n", encoding="utf-8")
    result = invoke([*cli_args("doctor", manifest, endpoint=emu.url, project_id=PROJECT), *FAST])
    sound(result, 1)
    rows = table(result)
    assert rows["quota"].startswith("PASS")
    assert rows["quota: per disk"].startswith("FAIL")
    assert f"{TAGGED} (7)" in rows["quota: per disk"]


def test_a_quota_too_small_for_the_manifest_fails(emulator_thread: Start, tmp_path: Path) -> None:
    """The project's snapshot quota is read; fewer left than the manifest's disks fails."""
    emu = emulator_thread(volumes=DISKS, snapshot_quota=1)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"volume_id\n{VOLUME}\n{TAGGED}\n", encoding="utf-8")
    result = invoke([*cli_args("doctor", manifest, endpoint=emu.url, project_id=PROJECT), *FAST])
    sound(result, 1)
    row = table(result)["quota"]
    assert row.startswith("FAIL")
    assert "1 snapshots left" in row
    assert "names 2 disks" in row


def live_state(emu: EmulatorThread) -> dict[str, Any]:
    state: dict[str, Any] = emu.state()
    return state


def test_live_makes_exactly_one_snapshot_and_leaves_none(emulator_thread: Start, tmp_path: Path) -> None:
    """``--live``: one create, read back, looked up, deleted, then 404 EVS.5404; exit 0."""
    emu = emulator_thread(volumes=DISKS, creating_seconds=0.1)
    report = tmp_path / "probe.jsonl"
    result = doctor(emu, live=VOLUME, live_report=report)
    sound(result, 0)
    rows = table(result)
    for name in ("live: create", "live: metadata", "live: lookup", "live: gone"):
        assert rows[name].startswith("PASS"), rows[name]
    assert "EVS.5404" in rows["live: gone"]
    assert result.stdout.splitlines()[-1].startswith(
        "the assumptions evs-snapshot's exactly-once promise rests on hold in"
    )
    assert requests_of(live_state(emu), CREATE_ROUTE) == {"202": 1}
    assert live_state(emu)["snapshots"] == []
    assert "cleanup" not in result.stderr


def test_live_rollback_rolls_the_disk_back(emulator_thread: Start, tmp_path: Path) -> None:
    """``--live-rollback``: the disk is rolled back to the probe, then the probe is deleted."""
    emu = emulator_thread(volumes=DISKS, creating_seconds=0.1, rollback_seconds=0.1)
    result = doctor(emu, "--live-rollback", live=VOLUME, live_report=tmp_path / "probe.jsonl")
    sound(result, 0)
    assert table(result)["live: rollback"].startswith("PASS")
    assert [item["volume_id"] for item in live_state(emu)["rollbacks"]] == [VOLUME]
    assert live_state(emu)["snapshots"] == []


def test_live_says_the_marker_did_not_survive_rewritten_keys(emulator_thread: Start, tmp_path: Path) -> None:
    """``--metadata-rewrite lower``: the metadata check fails (exit 1); the probe is still deleted."""
    emu = emulator_thread(volumes=DISKS, creating_seconds=0.1, metadata_rewrite="lower")
    result = doctor(emu, live=VOLUME, live_report=tmp_path / "probe.jsonl")
    sound(result, 1)
    row = table(result)["live: metadata"]
    assert row.startswith("FAIL")
    assert "the marker did not survive" in row
    assert "evs_snapshot_doctor_probe" in row
    assert requests_of(live_state(emu), CREATE_ROUTE) == {"202": 1}
    assert live_state(emu)["snapshots"] == []


def test_live_stopped_halfway_prints_the_cleanup_command(emulator_thread: Start, tmp_path: Path) -> None:
    """A denied delete leaves the probe: the cleanup command that removes it is printed, and works."""
    emu = emulator_thread(volumes=DISKS, creating_seconds=0.1, deny=("evs:snapshots:delete",))
    report = tmp_path / "probe.jsonl"
    result = doctor(emu, live=VOLUME, live_report=report)
    sound(result, 1)
    assert table(result)["live: delete"].startswith("FAIL")
    command = f"evs-snapshot cleanup {report} --apply --endpoint {emu.url} --project-id {PROJECT}"
    assert command in result.stderr
    left = live_state(emu)["snapshots"]
    assert len(left) == 1
    plan = invoke(
        cli_args("cleanup", report, endpoint=emu.url, project_id=PROJECT, report=tmp_path / "c.jsonl")
    )
    assert plan.exit_code == 0, plan.output
    planned = [orjson.loads(line) for line in (tmp_path / "c.jsonl").read_bytes().splitlines()]
    assert [rec.get("snapshot_id") for rec in planned if rec.get("outcome") == "planned"] == [left[0]["id"]]


def test_read_only_with_rewritten_metadata_creates_nothing(emulator_thread: Start) -> None:
    """Without ``--live`` nothing is created, whatever the switch."""
    emu = emulator_thread(volumes=DISKS, metadata_rewrite="lower")
    sound(doctor(emu), 0)
    assert created(emu) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--live-rollback"], "--live-rollback and --live-report go with --live"),
        (["--live", "not-a-disk"], "is not a disk id"),
    ],
)
def test_usage_errors_exit_2(emulator_thread: Start, args: list[str], message: str) -> None:
    """Options that do not fit: exit 2, nothing sent."""
    emu = emulator_thread()
    result = doctor(emu, *args)
    sound(result, 2)
    assert message in result.stderr
    assert emu.state()["requests"] == {}


def test_the_skew_is_read_from_the_refusal_or_the_date_header() -> None:
    """``api.clock.gateway_offset``: an APIGW.0303 message gives it exactly; a Date header, about."""
    message = "signature expired, signature time:20261207T040000Z,server time:20261207T042000Z"
    sent = datetime(2026, 12, 7, 4, 0, 0, tzinfo=UTC)
    assert gateway_offset(message=message, sent=sent) == 1200.0
    assert gateway_offset(date="Mon, 07 Dec 2026 03:58:00 GMT", sent=sent) == -120.0
    assert gateway_offset(date="not a date", sent=sent) is None
    assert gateway_offset(sent=sent) is None


def test_tls_that_fails_stops_the_doctor(emulator_thread: Start) -> None:
    """TLS to a plain-http port fails: the endpoint check names TLS and --ca-bundle; exit 3, nothing sent."""
    emu = emulator_thread()
    result = invoke(
        [*cli_args("doctor", endpoint=emu.url.replace("http://", "https://"), project_id=PROJECT), *FAST]
    )
    sound(result, 3)
    row = next(row for name, row in table(result).items() if name.startswith("endpoint"))
    assert row.startswith("STOP")
    assert "TLS failed" in row
    assert "--ca-bundle" in row
    assert emu.state()["requests"] == {}


def test_an_existing_live_report_is_refused_before_anything_is_sent(
    emulator_thread: Start, tmp_path: Path
) -> None:
    """``--live-report`` names a file that exists: exit 2 at once."""
    emu = emulator_thread(volumes=DISKS)
    report = tmp_path / "probe.jsonl"
    report.write_text('{"type": "run"}\n', encoding="utf-8")
    result = doctor(emu, live=VOLUME, live_report=report)
    sound(result, 2)
    assert "already holds records" in result.stderr
    assert emu.state()["requests"] == {}


PASSWORD_ENV = {
    **NO_CREDENTIALS,
    "OS_USERNAME": "operator",
    "OS_PASSWORD": "emulator-password",
    "OS_USER_DOMAIN_NAME": "emulator-domain",
}


@pytest.mark.parametrize(("password", "code"), [("emulator-password", 0), ("wrong", 3)])
def test_a_password_user_gets_its_project_from_a_token(
    emulator_thread: Start, password: str, code: int
) -> None:
    """An IAM password: the project comes from a token scoped by the region; a wrong one stops (exit 3)."""
    emu = emulator_thread(volumes=DISKS)
    args = cli_args("doctor", endpoint=emu.url, iam_endpoint=emu.url, region="cn-north-4")
    result = invoke([*args, *FAST], base={**PASSWORD_ENV, "OS_PASSWORD": password})
    sound(result, code)
    rows = table(result)
    if code == 0:
        assert "POST /v3/auth/tokens" in rows["project"]
        assert "an IAM password" in rows["credentials"]
        assert "h left" in rows["credentials"]
    else:
        assert rows["credentials"].startswith("STOP")
        assert "IAM" in rows["credentials"]


@pytest.mark.parametrize(
    ("knobs", "code", "shown", "said"),
    [
        ({}, 0, "PASS", "create --consistency server can make one"),
        ({"no_snapshot_groups": True}, 0, "INFO", "no snapshot groups here"),
        ({"deny": ("evs:snapshots:list",)}, 1, "WARN", "was refused"),
    ],
)
def test_the_snapshot_group_check(
    emulator_thread: Start, knobs: dict[str, Any], code: int, shown: str, said: str
) -> None:
    """Whether the region answers the v5 group list: pass; without groups (--no-snapshot-groups) "no
    snapshot groups here", which fails nothing; a refusal is a warning."""
    emu = emulator_thread(volumes=DISKS, **knobs)
    result = doctor(emu)
    sound(result, code)
    row = table(result)["snapshot groups"]
    assert row.startswith(shown), row
    assert said in row
    assert requests_of(emu.state(), "GET /v5/{project_id}/snapshot-groups/detail")
