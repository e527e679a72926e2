"""``evs-snapshot doctor``: every check passes against the default emulator; each emulator switch that
breaks an assumption makes the check that proves it fail, naming the cause and the fix, with the
documented exit code, no traceback, and nothing created unless ``--live`` is given."""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import Result
from yarl import URL

from orchestrator import live_probe
from orchestrator.api.clock import gateway_offset
from orchestrator.api.routes import connect
from orchestrator.config import Connection, Endpoints
from orchestrator.doctor import Doctor
from orchestrator.emulator import EmulatorThread, SeedSnapshot, SeedVolume
from orchestrator.emulator.settings import DEFAULT_AK, DEFAULT_PASSWORD, DEFAULT_SK
from orchestrator.findings import Result as CheckResult
from orchestrator.findings import groups_check
from orchestrator.models import Answer
from orchestrator.retry import RetryPolicy
from tests.helpers import (
    AKSK,
    CLOSED_PORT,
    CREATE_ROUTE,
    NO_CREDENTIALS,
    PASSWORD_ENV,
    PROJECT,
    ROLLBACK,
    TOKEN,
    TOKEN_ENV,
    cli_args,
    invoke,
    requests_of,
    volume_ids,
)

Start = Callable[..., EmulatorThread]
VOLUME, TAGGED, OTHER_EP_VOLUME = volume_ids(3, seed=2001)
SNAP_IDS = volume_ids(12, seed=2002)
FAST = ("--max-attempts", "2", "--backoff-initial", "0.01", "--backoff-max", "0.05", "--timeout", "5")
DISKS = (
    SeedVolume(volume_id=VOLUME),
    SeedVolume(volume_id=TAGGED, tags={"env": "prod"}),
    SeedVolume(volume_id=OTHER_EP_VOLUME, tags={"env": "prod"}, enterprise_project_id="ep-0c1d2e3f"),
)


@pytest.fixture(autouse=True)
def quick_probe_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """The live probe's first pause between two looks at its snapshot or disk is 0.2 s (doubling), and
    no option sets it: a tenth of it here, where the emulator's states last a tenth of a second."""
    monkeypatch.setattr("orchestrator.live_probe.POLL_FIRST", 0.02)
    monkeypatch.setattr("orchestrator.live_probe.SETTLE", 0.1)


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


@pytest.mark.no_cover
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


def test_nothing_to_compare_or_a_refused_list_is_not_checked(emulator_thread: Start, tmp_path: Path) -> None:
    """No snapshot at all: the enterprise-project check of the snapshot list is INFO 'not checked' (0
    and 0 compare nothing), not a PASS; the snapshot list denied: 'quota: per disk' is one clean INFO
    line naming the denied action, not a FAIL calling the 403 'credentials refused'."""
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"volume_id\n{VOLUME}\n{TAGGED}\n", encoding="utf-8")
    args = [*cli_args("doctor", manifest, project_id=PROJECT), *FAST]
    empty = invoke([*args, "--endpoint", emulator_thread(volumes=DISKS).url])
    sound(empty, 0)
    rows = table(empty)
    assert rows["enterprise projects: snapshot list"] == (
        "INFO    not checked: no snapshot is listed, with all_granted_eps or without: nothing to compare"
    )
    assert rows["enterprise projects: volume list"].startswith("PASS")
    denied = invoke([*args, "--endpoint", emulator_thread(volumes=DISKS, deny=("evs:snapshots:list",)).url])
    sound(denied, 1)
    rows = table(denied)
    assert rows["quota: per disk"] == (
        "INFO    not checked: the snapshot list was refused (the IAM action evs:snapshots:list is "
        "missing; see permissions: snapshot list)"
    )
    assert [name for name, row in rows.items() if row.startswith("FAIL")] == ["permissions: snapshot list"]


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
    emu = emulator_thread(volumes=DISKS, creating_seconds=0.1, deleting_seconds=0.1)
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
    emu = emulator_thread(volumes=DISKS, creating_seconds=0.1, rollback_seconds=0.1, deleting_seconds=0.1)
    result = doctor(emu, "--live-rollback", live=VOLUME, live_report=tmp_path / "probe.jsonl")
    sound(result, 0)
    assert table(result)["live: rollback"].startswith("PASS")
    assert [item["volume_id"] for item in live_state(emu)["rollbacks"]] == [VOLUME]
    assert live_state(emu)["snapshots"] == []


@pytest.mark.parametrize(
    "rollback_seconds",
    [pytest.param(0.3, id="seen-rollbacking"), pytest.param(0.0, id="ended-unseen-disk-updated")],
)
def test_live_rollback_whose_answer_was_lost_is_seen_and_never_sent_again(
    emulator_thread: Start, tmp_path: Path, rollback_seconds: float
) -> None:
    """The rollback took effect and its answer was lost (drop-after): the disk is watched, the rollback
    seen (rollbacking, or ended already: the disk's updated_at moved since the look before the send) and
    waited for; one POST, the check passes saying so, the probe is deleted; exit 0."""
    emu = emulator_thread(
        volumes=DISKS,
        creating_seconds=0.05,
        rollback_seconds=rollback_seconds,
        deleting_seconds=0.05,
        fault_rollback_drop_after=1.0,
    )
    result = doctor(emu, "--live-rollback", live=VOLUME, live_report=tmp_path / "probe.jsonl")
    sound(result, 0)
    rows = table(result)
    assert rows["live: rollback"].startswith("PASS"), rows
    assert "answer was lost" in rows["live: rollback"]
    assert "not sent again" in rows["live: rollback"]
    assert rows["live: gone"].startswith("PASS"), rows
    assert requests_of(live_state(emu), ROLLBACK) == {"dropped": 1}
    assert [item["volume_id"] for item in live_state(emu)["rollbacks"]] == [VOLUME]
    assert live_state(emu)["snapshots"] == []


def test_live_rollback_lost_and_never_seen_fails_and_is_not_sent_again(
    emulator_thread: Start, tmp_path: Path
) -> None:
    """The rollback's answer was lost before EVS acted (drop-before): nothing is seen in the window, the
    check fails without blaming the account, nothing is sent again, and the probe is deleted; exit 1."""
    emu = emulator_thread(
        volumes=DISKS, creating_seconds=0.05, deleting_seconds=0.05, fault_rollback_drop_before=1.0
    )
    result = doctor(emu, "--live-rollback", live=VOLUME, live_report=tmp_path / "probe.jsonl")
    sound(result, 1)
    rows = table(result)
    row = rows["live: rollback"]
    assert row.startswith("FAIL"), rows
    assert "the rollback's answer was lost and no rollback was seen: not sent again" in row
    assert "grant" not in row
    assert rows["live: gone"].startswith("PASS"), rows
    assert requests_of(live_state(emu), ROLLBACK) == {"dropped": 1}
    assert live_state(emu)["rollbacks"] == []
    assert live_state(emu)["snapshots"] == []


def test_live_delete_of_a_snapshot_still_rollbacking_names_the_state(
    emulator_thread: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rollback that outlasts the probe's patience: the rollback check fails, the delete is refused
    with EVS.1047 and its fix names the state (not a permission); the cleanup command is printed."""
    live_settings = functools.partial(live_probe.LiveSettings, patience=0.2)
    monkeypatch.setattr("orchestrator.commands.doctor.LiveSettings", live_settings)
    emu = emulator_thread(volumes=DISKS, creating_seconds=0.05, rollback_seconds=600)
    report = tmp_path / "probe.jsonl"
    result = doctor(emu, "--live-rollback", live=VOLUME, live_report=report)
    sound(result, 1)
    rows = table(result)
    assert rows["live: rollback"].startswith("FAIL"), rows
    assert "still rollbacking after 0.2s" in rows["live: rollback"]
    delete = rows["live: delete"]
    assert delete.startswith("FAIL"), rows
    assert "EVS.1047" in delete
    assert "fix: the snapshot is rollbacking" in delete
    assert "grant" not in delete
    assert f"evs-snapshot cleanup {report} --apply" in result.stderr
    assert requests_of(live_state(emu), ROLLBACK) == {"202": 1}


def test_live_says_the_marker_did_not_survive_rewritten_keys(emulator_thread: Start, tmp_path: Path) -> None:
    """``--metadata-rewrite lower``: the metadata check fails (exit 1); the probe is still deleted."""
    emu = emulator_thread(volumes=DISKS, creating_seconds=0.1, deleting_seconds=0.1, metadata_rewrite="lower")
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


@pytest.mark.parametrize(("password", "code"), [(DEFAULT_PASSWORD, 0), ("wrong", 3)])
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


def test_a_wrong_password_with_a_project_stops_before_evs(emulator_thread: Start) -> None:
    """--project-id and a wrong IAM password: IAM refuses the token, so no request reaches EVS (exit 3)."""
    emu = emulator_thread(volumes=DISKS)
    args = cli_args("doctor", endpoint=emu.url, iam_endpoint=emu.url, project_id=PROJECT)
    result = invoke([*args, *FAST], base={**PASSWORD_ENV, "OS_PASSWORD": "wrong"})
    sound(result, 3)
    row = table(result)["credentials"]
    assert row.startswith("STOP")
    assert "an IAM password" in row
    assert "refused by IAM (password token)" in row
    assert not any(route.startswith("GET /v2/") for route in emu.state()["requests"])


def test_a_fixed_token_is_named_as_one_that_cannot_be_renewed(emulator_thread: Start) -> None:
    """OS_AUTH_TOKEN: the credentials check names the source and says a fixed token is not renewed;
    disks without tags leave the tag search nothing to compare (information, exit 0)."""
    emu = emulator_thread(token=TOKEN, volumes=(SeedVolume(volume_id=VOLUME),))
    result = invoke([*cli_args("doctor", endpoint=emu.url, project_id=PROJECT), *FAST], base=TOKEN_ENV)
    sound(result, 0)
    rows = table(result)
    assert rows["credentials"].startswith("PASS")
    assert "a fixed IAM token (OS_AUTH_TOKEN)" in rows["credentials"]
    assert "a fixed token cannot be renewed" in rows["credentials"]
    tags = rows["enterprise projects: tag search"]
    assert tags.startswith("INFO")
    assert "no disk of the 1 listed carries a tag: nothing to compare" in tags


def test_no_project_and_no_region_stops_at_the_project(emulator_thread: Start) -> None:
    """Without --project-id and --region there is no project to look up: exit 3 at the project check."""
    emu = emulator_thread(volumes=DISKS)
    args = cli_args("doctor", endpoint=emu.url, iam_endpoint=emu.url)
    result = invoke([*args, *FAST], {"OS_REGION_NAME": ""})
    sound(result, 3)
    row = table(result)["project"]
    assert row.startswith("STOP")
    assert "no --project-id and no --region" in row
    assert emu.state()["requests"] == {}


def test_an_iam_endpoint_out_of_reach_stops_before_a_request(emulator_thread: Start) -> None:
    """The project is IAM's to find, and IAM's endpoint (another port) cannot be reached: its endpoint
    check stops the doctor (exit 3) and nothing is sent."""
    emu = emulator_thread(volumes=DISKS)
    args = cli_args("doctor", endpoint=emu.url, iam_endpoint=CLOSED_PORT, region="cn-north-4")
    result = invoke([*args, *FAST])
    sound(result, 3)
    rows = table(result)
    assert rows[f"endpoint 127.0.0.1:{emu.url.rsplit(':', 1)[1]}"].startswith("PASS")
    assert rows["endpoint 127.0.0.1:1"].startswith("STOP")
    assert emu.state()["requests"] == {}


def test_a_region_iam_does_not_know_stops_at_the_project(emulator_thread: Start) -> None:
    """IAM has no project named after the region: the project check fails (exit 3), fix: --project-id."""
    emu = emulator_thread(volumes=DISKS)
    result = invoke([*cli_args("doctor", endpoint=emu.url, iam_endpoint=emu.url, region="eu-west-0"), *FAST])
    sound(result, 3)
    row = table(result)["project"]
    assert row.startswith("STOP")
    assert "pass --project-id" in row
    assert CREATE_ROUTE not in emu.state()["requests"]


def test_a_skewed_clock_refused_by_iam_is_measured_from_the_refusal(emulator_thread: Start) -> None:
    """The project lookup's signature is refused for the clock (APIGW.0303): the clock check still gives
    the skew, read from the refusal, and the credentials stop the doctor (exit 3)."""
    emu = emulator_thread(clock_offset=1000, volumes=DISKS)
    result = invoke([*cli_args("doctor", endpoint=emu.url, iam_endpoint=emu.url, region="cn-north-4"), *FAST])
    sound(result, 3)
    rows = table(result)
    assert rows["clock"].startswith("FAIL")
    seconds = re.search(r"clock is (\d+)s ahead of", rows["clock"])
    assert seconds is not None
    assert abs(int(seconds[1]) - 1000) <= 2
    assert rows["credentials"].startswith("STOP")
    assert "IAM's project lookup" in rows["credentials"]
    assert "set this machine's clock right" in rows["credentials"]


def test_a_gateway_that_never_answers_in_time_stops_at_the_credentials(emulator_thread: Start) -> None:
    """The endpoint is reached but no signed GET is answered within --timeout: the credentials are not
    proven (exit 3), and the fix names the network and --timeout."""
    emu = emulator_thread(volumes=DISKS, latency_ms=300)
    args = cli_args("doctor", endpoint=emu.url, project_id=PROJECT)
    result = invoke([*args, "--max-attempts", "2", "--backoff-initial", "0.01", "--timeout", "0.1"])
    sound(result, 3)
    row = table(result)["credentials"]
    assert row.startswith("STOP")
    assert "no answer to a signed GET" in row
    assert "--timeout" in row


def test_a_snapshot_list_that_always_fails_is_named_in_every_check_that_needs_it(
    emulator_thread: Start, tmp_path: Path
) -> None:
    """``--fault-list 1``: the list's permission check shows the 503, paging is not checked, and each
    manifest disk whose snapshots cannot be read fails the per-disk check as unread (exit 1)."""
    emu = emulator_thread(volumes=DISKS, fault_list=1.0)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"volume_id\n{VOLUME}\n{TAGGED}\n", encoding="utf-8")
    result = invoke([*cli_args("doctor", manifest, endpoint=emu.url, project_id=PROJECT), *FAST])
    sound(result, 1)
    rows = table(result)
    assert rows["permissions: snapshot list"].startswith("FAIL")
    assert "answered 503 EVS.5503" in rows["permissions: snapshot list"]
    assert rows["paging: snapshot list"].startswith("INFO")
    assert "the snapshot list was refused" in rows["paging: snapshot list"]
    assert rows["enterprise projects: snapshot list"].startswith("INFO")
    room = rows["quota: per disk"]
    assert room.startswith("FAIL")
    assert "2 could not be read" in room
    assert VOLUME in room
    assert created(emu) == 0


@pytest.mark.parametrize(
    ("disk", "extra", "knobs", "check", "said"),
    [
        pytest.param(SNAP_IDS[11], (), {}, "disk", "cannot be read (404", id="unknown-disk"),
        pytest.param(
            OTHER_EP_VOLUME,
            ("--live-rollback",),
            {"volumes": (SeedVolume(volume_id=OTHER_EP_VOLUME, status="in-use"),)},
            "disk",
            "is in-use; it must be available (detached) for --live-rollback",
            id="attached-disk-rollback",
        ),
        pytest.param(
            VOLUME,
            (),
            {"deny": ("evs:snapshots:create",)},
            "create",
            "the create did not succeed (failed: EVS.5403",
            id="create-denied",
        ),
    ],
)
def test_live_stops_before_making_anything_when_it_cannot(
    emulator_thread: Start,
    tmp_path: Path,
    disk: str,
    extra: tuple[str, ...],
    knobs: dict[str, Any],
    check: str,
    said: str,
) -> None:
    """``--live`` on a disk that cannot be read, is not in a state to roll back, or a denied create: that
    check fails (exit 1), the rest of the round trip is skipped, and no snapshot is left."""
    emu = emulator_thread(**{"volumes": DISKS, **knobs})
    result = doctor(emu, *extra, live=disk, live_report=tmp_path / "probe.jsonl")
    sound(result, 1)
    rows = table(result)
    assert rows[f"live: {check}"].startswith("FAIL"), rows
    assert said in rows[f"live: {check}"]
    assert "live: delete" not in rows
    assert live_state(emu)["snapshots"] == []


@pytest.mark.parametrize(
    ("extra", "knobs", "check", "said"),
    [
        pytest.param((), {"fault_snapshot_error": 1.0}, "read back", "is error, not available", id="error"),
        pytest.param(
            (),
            {"fault_list": 1.0},
            "lookup",
            "with all_granted_eps does not show the snapshot",
            id="unlisted",
        ),
        pytest.param(
            ("--live-rollback",),
            {"deny": ("evs:snapshots:rollback",), "rollback_seconds": 0.1},
            "rollback",
            "EVS.5403",
            id="rollback-denied",
        ),
    ],
)
def test_live_names_the_step_that_fails_and_still_deletes_the_probe(
    emulator_thread: Start,
    tmp_path: Path,
    extra: tuple[str, ...],
    knobs: dict[str, Any],
    check: str,
    said: str,
) -> None:
    """A probe that ends in error, a list that does not show it, or a refused rollback: that check fails
    (exit 1), and the probe is deleted all the same (one create, nothing left)."""
    emu = emulator_thread(volumes=DISKS, creating_seconds=0.05, deleting_seconds=0.05, **knobs)
    result = doctor(emu, *extra, live=VOLUME, live_report=tmp_path / "probe.jsonl")
    sound(result, 1)
    rows = table(result)
    assert rows[f"live: {check}"].startswith("FAIL"), rows
    assert said in rows[f"live: {check}"]
    assert rows["live: gone"].startswith("PASS")
    assert requests_of(live_state(emu), CREATE_ROUTE) == {"202": 1}
    assert live_state(emu)["snapshots"] == []


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


def test_a_server_error_on_the_group_list_is_not_read_as_a_missing_grant() -> None:
    """Only a 403 names the grant; a 502 says the list did not answer and to run doctor again."""
    sent = ("GET /v5/{project_id}/snapshot-groups/detail",)
    error = {"error": {"code": "APIGW.0101", "message": "bad gateway"}}
    broken = groups_check(Answer(status=502, body=error, request_id=None), sent)
    assert broken.result is CheckResult.WARN
    assert "did not answer" in broken.meaning
    assert broken.fix is not None
    assert "grant evs" not in broken.fix
    denied = {"error": {"code": "EVS.0403", "message": "denied"}}
    refused = groups_check(Answer(status=403, body=denied, request_id=None), sent)
    assert refused.fix is not None
    assert "grant evs:snapshots:list" in refused.fix


@pytest.mark.anyio
async def test_a_paging_check_whose_first_page_is_refused_is_not_a_pass(emulator: Callable[..., Any]) -> None:
    """The list counted 10 snapshots, then its first small page is refused: nothing was compared, so
    the check is INFO "not checked" (it said PASS, "each of the 10 snapshots (the first 0)")."""
    emu = await emulator(deny=("evs:snapshots:list",), volumes=DISKS)
    connection = Connection(endpoints=Endpoints(evs=URL(emu.url), iam=URL(emu.url)), environ=AKSK)
    async with contextlib.AsyncExitStack() as stack:
        doctor = Doctor(await connect(stack, connection), connection, RetryPolicy(max_attempts=1))
        doctor.project_id = PROJECT
        await doctor.paging({"snapshot list": Answer(status=200, body={"count": 10}, request_id=None)})
    (check,) = doctor.checks
    assert check.result is CheckResult.INFO
    assert check.meaning.startswith("not checked: the first page was refused"), check.meaning
