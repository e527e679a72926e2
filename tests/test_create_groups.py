"""``create --consistency server``: one v5 snapshot group per server, each row's record naming its member
and group; the refusals before anything is sent (exit 2); identity before a resend; the sweep of a
second group; a region without groups."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.emulator import ManualClock, SeedSnapshot, SeedVolume
from tests.helpers import (
    CLOSED_PORT,
    PROJECT,
    LeapingClock,
    cli_args,
    create_args,
    header,
    in_flight,
    invoke,
    journal,
    kill_when,
    last_per_row,
    once_seen,
    records,
    requests_of,
    run_process,
    volume_ids,
)

GROUP_CREATE = "POST /v5/{project_id}/snapshot-groups"
GROUP_LIST = "GET /v5/{project_id}/snapshot-groups/detail"
SERVERS = [str(uuid.UUID(int=0x5E00 + index, version=4)) for index in range(4)]
DISKS = volume_ids(12, seed=0x6A3)
QUICK = ("--max-attempts", "6", "--backoff-initial", "0.01", "--backoff-max", "0.05", "--settle", "0.3")
QUICK += ("--timeout", "1")


def server_disks(servers: int = 2, per: int = 2, zone: str | None = None) -> tuple[SeedVolume, ...]:
    return tuple(
        SeedVolume(
            volume_id=DISKS[s * per + d],
            server_id=SERVERS[s],
            device=f"/dev/vd{chr(98 + d)}",
            availability_zone=zone,
        )
        for s in range(servers)
        for d in range(per)
    )


def manifest(
    write: Callable[..., Path], rows: list[tuple[str, str]], *, zones: list[str] | None = None
) -> Path:
    """A manifest as ``select`` writes it (volume_id, server_id, availability_zone when given)."""
    if zones is None:
        text = "volume_id,server_id\n" + "".join(f"{v},{s}\n" for v, s in rows)
    else:
        text = "volume_id,server_id,availability_zone\n" + "".join(
            f"{v},{s},{z}\n" for (v, s), z in zip(rows, zones, strict=True)
        )
    return write("m.csv", text)


def rows_of(volumes: tuple[SeedVolume, ...]) -> list[tuple[str, str]]:
    return [(v.volume_id, str(v.server_id)) for v in volumes]


def groups_per_server(state: dict[str, Any], run_id: str) -> Counter[str]:
    """Live groups (not deleting) carrying the run's marker, by server."""
    return Counter(
        g["server_id"]
        for g in state["snapshot_groups"]
        if g["tags"].get("evs_snapshot_run") == run_id and g["status"] != "deleting"
    )


def group_args(url: str, source: Path, report: Path, *extra: str, **flags: object) -> list[str]:
    return create_args(url, source, report, "--consistency", "server", *QUICK, *extra, **flags)


def test_one_group_per_server(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Two servers, two disks each: two group creates, each row's record names its member and group;
    the group carries the run's marker and the metadata as tags; --wait sees the members available."""
    volumes = server_disks()
    emu = emulator_thread(volumes=volumes, creating_seconds=0.05)
    report = tmp_path / "r.jsonl"
    result = invoke(
        group_args(
            emu.url,
            manifest(write, rows_of(volumes)),
            report,
            "--metadata",
            "team=db",
            wait=True,
            poll_interval=0.05,
        )
    )
    assert result.exit_code == 0, result.output + result.stderr
    run_id = header(report)["run_id"]
    assert header(report)["shape"]["consistency"] == "server"
    state = emu.state()
    assert groups_per_server(state, run_id) == {SERVERS[0]: 1, SERVERS[1]: 1}
    assert {g["tags"]["team"] for g in state["snapshot_groups"]} == {"db"}
    assert requests_of(state, GROUP_CREATE) == {"202": 2}
    final = last_per_row(report)
    assert {r["outcome"] for r in final.values()} == {"available"}
    members = {s["id"]: s["volume_id"] for s in state["snapshots"]}
    by_group = {g["id"]: g for g in state["snapshot_groups"]}
    for record in final.values():
        assert members[record["snapshot_id"]] == record["volume_id"]
        assert record["volume_id"] in by_group[record["snapshot_group_id"]]["volume_ids"]
    assert len(journal(report)) == 4  # one sending line per row, before its group's create


def test_rows_without_a_server_are_a_usage_error(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A row without server_id: exit 2 naming the rows, nothing sent."""
    volumes = server_disks(1)
    emu = emulator_thread(volumes=volumes)
    source = write("m.csv", f"volume_id,server_id\n{DISKS[0]},{SERVERS[0]}\n{DISKS[1]},\n")
    result = invoke(group_args(emu.url, source, tmp_path / "r.jsonl"))
    assert result.exit_code == 2
    assert "rows 2 have no server_id" in result.stderr
    assert emu.state()["requests"] == {}


@pytest.mark.parametrize(
    ("disks", "zones", "reason"),
    [(65, None, "at most 64 disks"), (2, ["cn-north-4a", "cn-north-4b"], "2 availability zones")],
)
def test_servers_no_group_takes_are_refused(
    emulator_thread: Callable[..., Any],
    write: Callable[..., Path],
    tmp_path: Path,
    disks: int,
    zones: list[str] | None,
    reason: str,
) -> None:
    """More than 64 disks, or two zones (from the manifest's column): exit 2 with the reason, nothing sent."""
    ids = volume_ids(disks, seed=0x6A4)
    emu = emulator_thread(volumes=tuple(SeedVolume(volume_id=v, server_id=SERVERS[0]) for v in ids))
    result = invoke(
        group_args(
            emu.url, manifest(write, [(v, SERVERS[0]) for v in ids], zones=zones), tmp_path / "r.jsonl"
        )
    )
    assert result.exit_code == 2, result.output + result.stderr
    assert reason in result.stderr
    assert emu.state()["requests"] == {}


def test_zones_learned_from_the_disk_list(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Without an availability_zone column, one disk list by server_id learns the zones: two, exit 2
    before any create."""
    volumes = (
        SeedVolume(volume_id=DISKS[0], server_id=SERVERS[0], availability_zone="cn-north-4a"),
        SeedVolume(volume_id=DISKS[1], server_id=SERVERS[0], availability_zone="cn-north-4b"),
    )
    emu = emulator_thread(volumes=volumes)
    result = invoke(group_args(emu.url, manifest(write, rows_of(volumes)), tmp_path / "r.jsonl"))
    assert result.exit_code == 2, result.output + result.stderr
    assert "2 availability zones" in result.stderr
    state = emu.state()
    assert requests_of(state, "GET /v2/{project_id}/cloudvolumes/detail") == {"200": 1}
    assert requests_of(state, GROUP_CREATE) == {}


def test_a_region_without_groups(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--no-snapshot-groups: exit 2 before any create, telling to use --consistency disk with hooks."""
    volumes = server_disks(1)
    emu = emulator_thread(volumes=volumes, no_snapshot_groups=True)
    report = tmp_path / "r.jsonl"
    result = invoke(group_args(emu.url, manifest(write, rows_of(volumes)), report))
    assert result.exit_code == 2, result.output + result.stderr
    assert "--consistency disk" in result.stderr
    assert "--pre-hook" in result.stderr
    state = emu.state()
    assert requests_of(state, GROUP_LIST) == {"404": 1}
    assert requests_of(state, GROUP_CREATE) == {}
    assert not report.exists()


# --settle: how long an uncertain group create is looked up before it is sent again. Only a late commit
# makes a group appear after its answer; a group the other faults let EVS make is there at once.
@pytest.mark.parametrize(
    ("switch", "knobs", "settle"),
    [
        ("fault_drop_before", {"fault_drop_before": 0.5}, "0.05"),
        ("fault_drop_after", {"fault_drop_after": 1.0}, "0.05"),
        ("fault_late_commit", {"fault_late_commit": 1.0, "late_commit_seconds": 0.1}, "0.3"),
        ("fault_5xx", {"fault_5xx": 0.3}, "0.05"),
    ],
)
def test_each_fault_switch_leaves_one_group_per_server(
    emulator_thread: Callable[..., Any],
    write: Callable[..., Path],
    tmp_path: Path,
    switch: str,
    knobs: dict[str, Any],
    settle: str,
) -> None:
    """Drops before and after EVS records the group, late commits, 5xx: every row accepted, exactly one
    group per server, uncertain creates found by tag and server (reconciled) instead of sent again."""
    volumes = server_disks(3)
    emu = emulator_thread(volumes=volumes, seed=7, creating_seconds=0.05, deleting_seconds=0.05, **knobs)
    report = tmp_path / "r.jsonl"
    source = manifest(write, rows_of(volumes))
    result = invoke(group_args(emu.url, source, report, "--max-attempts", "12", "--settle", settle))
    assert result.exit_code == 0, result.output + result.stderr
    run_id = header(report)["run_id"]
    state = emu.state()
    assert groups_per_server(state, run_id) == dict.fromkeys(SERVERS[:3], 1)
    final = last_per_row(report)
    assert {r["outcome"] for r in final.values()} == {"accepted"}
    assert all(r["snapshot_group_id"] and r["snapshot_id"] for r in final.values())
    creates = requests_of(state, GROUP_CREATE)
    if switch in ("fault_drop_after", "fault_late_commit"):  # EVS acted: found, never sent again
        assert any(r["reconciled"] for r in final.values()), switch
    assert sum(creates.values()) > creates["202"], (switch, creates)  # the fault really happened


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_a_second_group_is_swept(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path, clock: ManualClock
) -> None:
    """A late commit that outlasts --settle makes the group twice; once it appears, the sweep of a
    --resume deletes the second group whole (members too) and says so in side records."""
    volumes = server_disks(1)
    emu = emulator_thread(
        clock=clock,
        volumes=volumes,
        fault_late_commit=1.0,
        late_commit_seconds=0.5,
        creating_seconds=0.05,
        deleting_seconds=0.05,
    )
    report = tmp_path / "r.jsonl"
    args = group_args(emu.url, manifest(write, rows_of(volumes)), report)

    def late(count: int) -> Callable[[dict[str, Any]], bool]:
        return lambda state: requests_of(state, GROUP_CREATE)["504"] >= count

    # The emulator's time moves only at the 504s: the first create (appearing at 0.5) is still absent
    # when --settle has passed, so it is sent again (appearing at 0.75); the second 504 moves the clock
    # to 0.5: the first group appears while the second create is looked up, and the second only when
    # the test moves the clock past 0.75 (and its creating), after the create and its sweep ended.
    with (
        once_seen(emu, late(1), lambda: clock.advance(0.25)) as first,
        once_seen(emu, late(2), lambda: clock.advance(0.25)) as second,
    ):
        result = invoke(args)
    assert first == second == [True]
    assert result.exit_code == 0, result.output + result.stderr
    run_id = header(report)["run_id"]
    assert groups_per_server(emu.state(), run_id) == {SERVERS[0]: 1}
    clock.advance(0.3)  # the second create's late commit lands, and is made (deletable)
    assert groups_per_server(emu.state(), run_id) == {SERVERS[0]: 2}
    result = invoke([*args, "--resume"])
    assert result.exit_code == 0, result.output + result.stderr
    assert "1 extra snapshot groups of this run found, 1 deleted" in result.stderr
    state = emu.state()
    assert groups_per_server(state, run_id) == {SERVERS[0]: 1}
    kept = {r["snapshot_group_id"] for r in last_per_row(report).values()}
    assert {g["id"] for g in state["snapshot_groups"] if g["status"] != "deleting"} == kept
    sides = [r for r in records(report) if r["outcome"] == "duplicate_deleted"]
    assert len(sides) == 2
    assert {r["snapshot_group_id"] for r in sides} - kept
    assert len([s for s in state["snapshots"] if s["status"] != "deleting"]) == 2  # the kept group's


CHAOS = {
    "fault_5xx": 0.15,  # with drops and late commits: about half the group creates meet a fault
    "fault_drop_before": 0.15,
    "fault_drop_after": 0.15,
    "fault_late_commit": 0.25,
    "late_commit_seconds": 0.5,  # longer than --settle: some groups are made twice, then swept
    "latency_ms": 10,  # a group create is out long enough for the kill to find one in flight
    "creating_seconds": 0.1,
    "deleting_seconds": 0.05,
}


def test_chaos_with_a_kill_and_a_resume(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Groups under late commits, drops and 5xx, a SIGKILL while a group create is out, then --resume
    (twice: the second after the last late commits landed, to sweep them): exactly one group per
    server of the run, from the emulator's state, and each row names its member of that group."""
    servers = 8
    volumes = tuple(
        SeedVolume(
            volume_id=volume_ids(servers * 2, seed=0x6A5)[s * 2 + d], server_id=SERVERS[0][:-4] + f"{s:04x}"
        )
        for s in range(servers)
        for d in range(2)
    )
    clock = LeapingClock()  # real time, but the wait for the last late commits is a leap
    emu = emulator_thread(clock=clock, volumes=volumes, seed=23, **CHAOS)
    report = tmp_path / "r.jsonl"
    # Four servers at a time: with two, the resume's settle windows (0.3 s each) after a fault ran
    # mostly one after another (3-4 s under load, against 1-1.7 s).
    args = group_args(
        emu.url, manifest(write, rows_of(volumes)), report, "--max-attempts", "12", concurrency=4
    )
    kill_when(report, run_process(args), lambda data: bool(in_flight(data)))
    assert in_flight(report.read_bytes())  # killed with a group create out
    result = invoke([*args, "--resume"])
    assert result.exit_code == 0, result.output + result.stderr
    clock.leap(CHAOS["late_commit_seconds"] + 0.1)
    result = invoke([*args, "--resume"])
    assert result.exit_code == 0, result.output + result.stderr
    run_id = header(report)["run_id"]
    state = emu.state()
    expected = {str(v.server_id) for v in volumes}
    assert groups_per_server(state, run_id) == dict.fromkeys(expected, 1)
    live = {g["id"]: g for g in state["snapshot_groups"] if g["status"] != "deleting"}
    members = {s["id"]: s for s in state["snapshots"]}
    for record in last_per_row(report).values():
        assert record["outcome"] == "accepted", record
        assert record["snapshot_group_id"] in live
        assert members[record["snapshot_id"]]["volume_id"] == record["volume_id"]
    creates = requests_of(state, GROUP_CREATE)
    assert sum(creates.values()) > creates["202"], creates  # faults really happened


def test_a_server_with_an_invalid_row_is_not_sent(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """An invalid row leaves its server unsent (GROUP_INCOMPLETE on the others); other servers go."""
    volumes = server_disks(2)
    emu = emulator_thread(volumes=volumes)
    rows = rows_of(volumes)
    rows[1] = ("not-a-uuid", rows[1][1])
    report = tmp_path / "r.jsonl"
    result = invoke(group_args(emu.url, manifest(write, rows), report))
    assert result.exit_code == 1, result.output + result.stderr
    final = last_per_row(report)
    assert (final[1]["outcome"], final[1]["error_code"]) == ("failed", "GROUP_INCOMPLETE")
    assert final[2]["outcome"] == "invalid"
    assert {final[3]["outcome"], final[4]["outcome"]} == {"accepted"}
    assert groups_per_server(emu.state(), header(report)["run_id"]) == {SERVERS[1]: 1}


def test_busy_disks_are_sent_again_and_refusals_are_final(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """400 EVS.2409 (a snapshot of a member disk is creating) is sent again until the attempts are
    spent, then failed; a disk not attached to the row's server is rejected at once."""
    volumes = server_disks(2)
    busy = SeedSnapshot(id=str(uuid.UUID(int=0xB5, version=4)), volume_id=DISKS[0], status="creating")
    emu = emulator_thread(volumes=volumes, snapshots=(busy,))
    rows = rows_of(volumes)
    rows[3] = (rows[3][0], SERVERS[2])  # attached to SERVERS[1], named under another server
    report = tmp_path / "r.jsonl"
    result = invoke(group_args(emu.url, manifest(write, rows), report, "--max-attempts", "3"))
    assert result.exit_code == 1, result.output + result.stderr
    final = last_per_row(report)
    assert {(final[r]["outcome"], final[r]["error_code"], final[r]["attempts"]) for r in (1, 2)} == {
        ("failed", "EVS.2409", 3)
    }
    assert final[3]["outcome"] == "accepted"
    assert (final[4]["outcome"], final[4]["error_code"]) == ("rejected", "EVS.5400")


def test_dry_run_plans_and_hold_and_tags(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--dry-run writes planned records, sending nothing; a --hold that is no valid tag value exits 2;
    metadata that are no valid tags are left out of the group's tags with a warning."""
    volumes = server_disks(1)
    emu = emulator_thread(volumes=volumes)
    source = manifest(write, rows_of(volumes))
    planned = invoke(group_args(emu.url, source, tmp_path / "p.jsonl", dry_run=True))
    assert planned.exit_code == 0, planned.output + planned.stderr
    assert {r["outcome"] for r in last_per_row(tmp_path / "p.jsonl").values()} == {"planned"}
    refused = invoke(group_args(emu.url, source, tmp_path / "h.jsonl", hold="change CHG 1"))
    assert refused.exit_code == 2
    assert "tag value" in refused.stderr
    report = tmp_path / "r.jsonl"
    result = invoke(group_args(emu.url, source, report, "--metadata", "note=two words", hold="CHG-1"))
    assert result.exit_code == 0, result.output + result.stderr
    assert "left out of the snapshot group's tags" in result.stderr
    (group,) = emu.state()["snapshot_groups"]
    assert group["tags"] == {"evs_snapshot_run": header(report)["run_id"], "evs_snapshot_hold": "CHG-1"}


@pytest.mark.no_cover
def test_a_resume_in_the_other_mode_is_refused(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """consistency is part of the run's shape: --resume without --consistency server exits 2, naming it."""
    volumes = server_disks(1)
    emu = emulator_thread(volumes=volumes)
    source = manifest(write, rows_of(volumes))
    report = tmp_path / "r.jsonl"
    assert invoke(group_args(emu.url, source, report)).exit_code == 0
    result = invoke([*create_args(emu.url, source, report, *QUICK), "--resume"])
    assert result.exit_code == 2, result.output + result.stderr
    assert "consistency is 'disk'; the report's run used 'server'" in result.stderr
    assert requests_of(emu.state(), GROUP_CREATE) == {"202": 1}


def test_hooks_freeze_each_server_around_its_group_create(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Groups and hooks together: each server's pre-hook runs before its group create and its post-hook
    after it is answered; a server whose pre-hook fails gets no group and its rows end PRE_HOOK_FAILED."""
    volumes = server_disks()
    emu = emulator_thread(volumes=volumes, creating_seconds=0.05)
    log = tmp_path / "hooks.log"
    state_url = f"{emu.url}/_emulator/state"
    # Each hook writes its server and how many group creates the emulator had answered at that moment.
    count = (
        f"python3 -c \"import json,sys,urllib.request;s=json.load(urllib.request.urlopen('{state_url}'));"
        "print(sum(s['requests'].get('POST /v5/{project_id}/snapshot-groups', {}).values()))\""
    )
    pre = f"echo pre {{server_id}} $({count}) >> {log}; test {{server_id}} != {SERVERS[1]}"
    post = f"echo post {{server_id}} $EVS_SNAPSHOT_OUTCOME $({count}) >> {log}"
    report = tmp_path / "r.jsonl"
    args = group_args(emu.url, manifest(write, rows_of(volumes)), report, concurrency=1)
    result = invoke([*args, "--hook-per-server", "--pre-hook", pre, "--post-hook", post])
    assert result.exit_code == 1, result.output + result.stderr  # the second server's rows failed
    lines = log.read_text().splitlines()
    assert [line for line in lines if SERVERS[0] in line] == [
        f"pre {SERVERS[0]} 0",
        f"post {SERVERS[0]} ok 1",
    ]
    assert [line for line in lines if SERVERS[1] in line] == [
        f"pre {SERVERS[1]} 1",
        f"post {SERVERS[1]} failed 1",
    ]
    state = emu.state()
    assert groups_per_server(state, header(report)["run_id"]) == {SERVERS[0]: 1}
    final = last_per_row(report)
    failed = {r["volume_id"] for r in final.values() if r.get("error_code") == "PRE_HOOK_FAILED"}
    assert failed == {v.volume_id for v in volumes if v.server_id == SERVERS[1]}
    assert all(r["attempts"] == 0 for r in final.values() if r["volume_id"] in failed)


def test_wait_sweeps_a_second_group_committed_after_the_create_ended(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path, clock: ManualClock
) -> None:
    """Group creates answered 504 commit later than --settle and the create's own sweep: the resent
    creates made a second group of those servers. The next `wait` deletes each second group whole."""
    volumes = server_disks(servers=4)
    # The emulator's clock stands still during the create: no late commit lands while it settles or
    # sweeps, however short --settle is or slow the machine; the test moves the clock once it ended.
    late = {"fault_late_commit": 0.5, "late_commit_seconds": 1.0}
    emu = emulator_thread(clock=clock, volumes=volumes, seed=5, creating_seconds=0.05, **late)
    report = tmp_path / "r.jsonl"
    result = invoke(group_args(emu.url, manifest(write, rows_of(volumes)), report, "--settle", "0.05"))
    assert result.exit_code == 0, result.output + result.stderr
    run_id = header(report)["run_id"]
    clock.advance(1.2)  # the late commits land, and every group is made
    doubled = groups_per_server(emu.state(), run_id)
    assert max(doubled.values()) > 1, doubled  # the fault really made second groups
    result = invoke(["wait", str(report), "--endpoint", emu.url, "--poll-interval", "0.05", *QUICK[:6]])
    assert result.exit_code == 0, result.output + result.stderr
    assert "extra snapshot groups of this run found" in result.stderr
    state = emu.state()
    assert groups_per_server(state, run_id) == {str(v.server_id): 1 for v in volumes}
    live = {g["id"] for g in state["snapshot_groups"] if g["status"] != "deleting"}
    assert {r["snapshot_group_id"] for r in last_per_row(report).values()} <= live


def test_a_server_id_that_is_not_a_uuid_is_a_usage_error(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--consistency server: a server_id that is not a UUID is exit 2 naming the row, nothing sent."""
    emu = emulator_thread(volumes=server_disks(1))
    source = write("m.csv", f"volume_id,server_id\n{DISKS[0]},{SERVERS[0]}\n{DISKS[1]},db-1; reboot\n")
    result = invoke(group_args(emu.url, source, tmp_path / "r.jsonl"))
    assert result.exit_code == 2
    assert "rows 2 have a server_id that is not a server's id" in result.stderr
    assert emu.state()["requests"] == {}


def test_a_member_list_the_gateway_refuses_leaves_the_made_group_accepted(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """The group create is answered 202, then the gateway answers 404 APIGW.0101 on the member list: the
    route closes (exit 3), but the rows of the group that was made are `accepted` with its id, never
    `failed` "not sent"."""
    volumes = server_disks(1)
    emu = emulator_thread(volumes=volumes, gateway_404=("/snapshots/detail",))
    report = tmp_path / "r.jsonl"
    result = invoke(group_args(emu.url, manifest(write, rows_of(volumes)), report))
    assert result.exit_code == 3, result.output + result.stderr
    groups = [g["id"] for g in emu.state()["snapshot_groups"]]
    assert len(groups) == 1
    final = last_per_row(report)
    assert {(r["outcome"], r["snapshot_group_id"]) for r in final.values()} == {("accepted", groups[0])}


def test_a_hold_that_cannot_be_a_group_tag_exits_2_before_reading(tmp_path: Path) -> None:
    """--consistency server --hold with a value no group tag takes: exit 2, nothing read or sent."""
    result = invoke(
        cli_args(
            "create",
            tmp_path / "none.csv",
            consistency="server",
            hold="frozen for maintenance!",
            endpoint=CLOSED_PORT,
            project_id=PROJECT,
            report=tmp_path / "r.jsonl",
        )
    )
    assert result.exit_code == 2
    assert "with --consistency server the hold is a tag of the snapshot group" in result.output
    assert not (tmp_path / "r.jsonl").exists()
