"""wait, cleanup, prune, rollback and audit with snapshot-group members (create --consistency server):
members settled and found through the v5 API, groups deleted whole or not at all, rolled back member
by member, incomplete groups reported."""

from __future__ import annotations

import dataclasses
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestrator.api.views import Snapshot, SnapshotGroup
from orchestrator.config import WaitPlan
from orchestrator.emulator import ManualClock, SeedVolume
from orchestrator.freshness import Stale
from orchestrator.ownership import (
    GROUP_NOT_THIS_RUN,
    OTHER_GROUP,
    OTHER_VOLUME,
    Ownership,
    group_refusal,
    member_refusal,
)
from orchestrator.report import ReportWriter
from orchestrator.tally import Tally
from orchestrator.waiter import Waiter
from tests.helpers import (
    ACTION_RETRIES,
    FAST,
    FAST_WAIT,
    MARKER,
    PROJECT,
    TOKEN,
    cleanup,
    cli_args,
    edge_record,
    invoke,
    last_per_row,
    lines,
    prune,
    records,
    requests_of,
    router_for,
    run_id_of,
    volume_ids,
)

pytestmark = pytest.mark.usefixtures("quick_deletion_polls")

SERVERS = ["5a0e1c2d-3b4f-4a6b-8c7d-9e0f1a2b3c01", "5a0e1c2d-3b4f-4a6b-8c7d-9e0f1a2b3c02"]
DISKS = volume_ids(4, seed=0x9A7)  # two per server
RUN = run_id_of("grouped")
GROUP_SHOW = "GET /v5/{project_id}/snapshot-groups/{snapshot_group_id}"
GROUP_DELETE = "DELETE /v5/{project_id}/snapshot-groups/{snapshot_group_id}"
MEMBER_LIST = "GET /v5/{project_id}/snapshots/detail"
V2_DELETE = "DELETE /v2/{project_id}/cloudsnapshots/{snapshot_id}"
HOLD = "evs_snapshot_hold"


def _http(emu: Any, method: str, path: str, body: object = None) -> Any:
    request = urllib.request.Request(  # noqa: S310 - the test's loopback emulator
        f"{emu.url}{path}",
        data=None if body is None else orjson.dumps(body),
        method=method,
        headers={"X-Auth-Token": TOKEN, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as answer:  # noqa: S310
        raw = answer.read()
    return orjson.loads(raw) if raw else None


def server_of(disk: str) -> str:
    return SERVERS[DISKS.index(disk) // 2]


def world(emulator_thread: Callable[..., Any], **knobs: Any) -> tuple[Any, ManualClock]:
    """Two servers with two attached disks each; groups become available at once, deletions end at once."""
    clock = ManualClock()
    volumes = tuple(
        SeedVolume(volume_id=disk, server_id=server_of(disk), device=f"/dev/vd{'bc'[i % 2]}")
        for i, disk in enumerate(DISKS)
    )
    knobs = {"creating_seconds": 0.0, "deleting_seconds": 0.0, "rollback_seconds": 0.0, **knobs}
    return emulator_thread(clock, volumes=volumes, **knobs), clock


def make_groups(
    emu: Any, run_id: str, disks: list[str] = DISKS, *, hold: str | None = None
) -> dict[str, dict[str, str]]:
    """One group per server of ``disks``, tagged with ``run_id`` (and held for ``hold``, as create --hold
    tags it): group id -> {disk: member id}."""
    made: dict[str, dict[str, str]] = {}
    for server in dict.fromkeys(server_of(d) for d in disks):
        mine = [d for d in disks if server_of(d) == server]
        tags = {MARKER: run_id} if hold is None else {MARKER: run_id, HOLD: hold}
        body = {"snapshot_group": {"server_id": server, "volume_ids": mine, "name": "g", "tags": tags}}
        group_id = _http(emu, "POST", f"/v5/{PROJECT}/snapshot-groups", body)["snapshot_group_id"]
        listed = _http(emu, "GET", f"/v5/{PROJECT}/snapshots/detail?snapshot_group_id={group_id}")
        made[group_id] = {item["volume_id"]: item["id"] for item in listed["snapshots"]}
    return made


def report_of(path: Path, run_id: str, made: dict[str, dict[str, str]], outcome: str = "accepted") -> Path:
    """The create report of a --consistency server run that made ``made``."""
    rows = [(group, disk, member) for group, members in made.items() for disk, member in members.items()]
    head = {
        "type": "run",
        "run_id": run_id,
        "command": "create",
        "manifest": "m.csv",
        "rows": len(rows),
        "digest": "sha256:00",
        "shape": {"consistency": "server"},
        "started_at": "2026-12-07T06:00:00.000Z",
    }
    lines = [head]
    for number, (group, disk, member) in enumerate(rows, start=1):
        lines.append(
            {
                "run_id": run_id,
                "row": number,
                "volume_id": disk,
                "project_id": PROJECT,
                "region": None,
                "name": f"pre-maint-{number}",
                "outcome": outcome,
                "http_status": 202,
                "snapshot_id": member,
                "snapshot_status": "creating",
                "snapshot_group_id": group,
                "started_at": "2026-12-07T06:00:00.100Z",
                "finished_at": "2026-12-07T06:00:00.200Z",
                "elapsed_ms": 100,
            }
        )
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path


def manifest(write: Callable[..., Path], disks: list[str], name: str = "m.csv") -> Path:
    body = "volume_id,server_id\n" + "".join(f"{d},{server_of(d)}\n" for d in disks)
    return write(name, body)


def groups_left(emu: Any) -> set[str]:
    return {group["id"] for group in emu.state()["snapshot_groups"]}


def members_left(emu: Any) -> set[str]:
    return {s["id"] for s in emu.state()["snapshots"] if s["status"] != "deleting"}


def test_wait_settles_members_by_their_group_when_the_v2_list_hides_them(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """--group-members-unlisted: the v2 list and show know no member, yet wait settles every row
    ``available`` from the group and its member list (two requests per group a round)."""
    emu, _ = world(emulator_thread, group_members_unlisted=True)
    made = make_groups(emu, RUN)
    member = next(iter(made[next(iter(made))].values()))
    with pytest.raises(urllib.error.HTTPError):  # the switch: v2 does not show a member
        _http(emu, "GET", f"/v2/{PROJECT}/cloudsnapshots/{member}")
    listed = _http(emu, "GET", f"/v2/{PROJECT}/cloudsnapshots/detail")
    assert listed["snapshots"] == []
    report = report_of(tmp_path / "create.jsonl", RUN, made)
    result = invoke([*cli_args("wait", report, endpoint=emu.url), *FAST_WAIT])
    assert result.exit_code == 0, result.output
    final = last_per_row(report)
    assert {r["outcome"] for r in final.values()} == {"available"}
    assert all(r["snapshot_group_id"] for r in final.values())
    state = emu.state()
    assert sum(requests_of(state, GROUP_SHOW).values()) == len(made)
    assert sum(requests_of(state, MEMBER_LIST).values()) >= len(made)


def test_wait_ends_members_of_a_failed_group_and_of_a_gone_one(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """A group that ended error: its rows snapshot_error GROUP_ERROR; a group deleted meanwhile: its
    rows snapshot_error SNAPSHOT_NOT_FOUND."""
    emu, _ = world(emulator_thread, fault_snapshot_error=1.0)
    made = make_groups(emu, RUN)
    failed, gone = list(made)
    _http(emu, "DELETE", f"/v5/{PROJECT}/snapshot-groups/{gone}")
    report = report_of(tmp_path / "create.jsonl", RUN, made)
    result = invoke([*cli_args("wait", report, endpoint=emu.url), *FAST_WAIT])
    assert result.exit_code == 1, result.output
    codes = {r["snapshot_group_id"]: r["error_code"] for r in last_per_row(report).values()}
    assert codes == {failed: "GROUP_ERROR", gone: "SNAPSHOT_NOT_FOUND"}


@pytest.mark.no_cover
def test_cleanup_deletes_each_group_whole_with_one_delete(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """A plan writes one planned record per member; --apply sends one group DELETE per group and no
    member DELETE; every member's record is deleted, with its group's id; nothing of the run is left."""
    emu, _ = world(emulator_thread)
    made = make_groups(emu, RUN)
    other = make_groups(emu, run_id_of("another"), DISKS[:2])
    report = report_of(tmp_path / "create.jsonl", RUN, made)
    plan = cleanup(emu, report, tmp_path / "plan.jsonl")
    assert plan.exit_code == 0, plan.output
    planned = records(tmp_path / "plan.jsonl")
    assert {r["outcome"] for r in planned} == {"planned"}
    assert {r["snapshot_id"] for r in planned} == {m for ms in made.values() for m in ms.values()}
    done = cleanup(emu, report, tmp_path / "done.jsonl", "--apply")
    assert done.exit_code == 0, done.output
    deleted = records(tmp_path / "done.jsonl")
    assert {(r["outcome"], r["snapshot_group_id"]) for r in deleted} == {("deleted", g) for g in made}
    assert len(deleted) == len(DISKS)
    journal = [line for line in lines(tmp_path / "done.jsonl") if line.get("outcome") == "sending"]
    assert sorted(line["snapshot_id"] for line in journal) == sorted(r["snapshot_id"] for r in deleted)
    state = emu.state()
    assert sum(requests_of(state, GROUP_DELETE).values()) == len(made)
    assert not requests_of(state, V2_DELETE)
    assert groups_left(emu) == set(other)


def test_one_held_member_holds_its_whole_group_in_cleanup(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """A hold on one member blocks every member of its group (HELD), the other group goes; with
    --include-held the held group goes too."""
    emu, _ = world(emulator_thread)
    made = make_groups(emu, RUN)
    held_group, free_group = list(made)
    held = next(iter(made[held_group].values()))
    _http(emu, "POST", f"/v2/{PROJECT}/snapshots/{held}/metadata", {"metadata": {HOLD: "audit"}})
    report = report_of(tmp_path / "create.jsonl", RUN, made)
    first = cleanup(emu, report, tmp_path / "c1.jsonl", "--apply")
    assert first.exit_code == 1, first.output
    outcomes = {
        (r["snapshot_group_id"], r["outcome"], r["error_code"]) for r in records(tmp_path / "c1.jsonl")
    }
    assert outcomes == {(held_group, "blocked", "HELD"), (free_group, "deleted", None)}
    assert groups_left(emu) == {held_group}
    second = cleanup(emu, report, tmp_path / "c2.jsonl", "--apply", "--include-held")
    assert second.exit_code == 0, second.output
    assert groups_left(emu) == set()


def test_cleanup_refuses_a_named_group_of_another_run_and_counts_a_gone_one_deleted(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """A record naming a group that carries another run's tag: its members refused GROUP_NOT_THIS_RUN
    and the group stays (not the run's: exit 0, as for a single snapshot); a record naming a group
    already gone: deleted (404)."""
    emu, _ = world(emulator_thread)
    foreign = make_groups(emu, run_id_of("another"), DISKS[:2])
    ours = make_groups(emu, RUN, DISKS[2:])
    gone = next(iter(ours))
    _http(emu, "DELETE", f"/v5/{PROJECT}/snapshot-groups/{gone}")
    report = report_of(tmp_path / "create.jsonl", RUN, {**foreign, **ours})
    result = cleanup(emu, report, tmp_path / "c.jsonl", "--apply")
    assert result.exit_code == 0, result.output
    seen = {(r["snapshot_group_id"], r["outcome"], r["error_code"]) for r in records(tmp_path / "c.jsonl")}
    assert seen == {(next(iter(foreign)), "refused", GROUP_NOT_THIS_RUN), (gone, "deleted", None)}
    assert groups_left(emu) == set(foreign)
    again = cleanup(emu, report, tmp_path / "c.jsonl", "--apply", "--resume")  # settled: nothing new
    assert again.exit_code == 0, again.output
    assert len(records(tmp_path / "c.jsonl")) == len(DISKS)


@pytest.mark.no_cover
def test_prune_keeps_or_drops_each_group_as_one_unit(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Three runs a day apart; --keep-last 1 keeps the newest groups; an older group a hold keeps (one
    held member) stays whole, its other member kept "with" it; the rest go with one DELETE each."""
    emu, clock = world(emulator_thread)
    old = make_groups(emu, run_id_of("old"))
    clock.advance(86400)
    middle = make_groups(emu, run_id_of("middle"))
    clock.advance(86400)
    new = make_groups(emu, run_id_of("new"))
    kept_group = next(iter(middle))
    held = next(iter(middle[kept_group].values()))
    _http(emu, "POST", f"/v2/{PROJECT}/snapshots/{held}/metadata", {"metadata": {HOLD: "legal"}})
    source = manifest(write, DISKS)
    result = prune(emu, source, tmp_path / "p.jsonl", "--keep-last", "1", "--apply", "--verbose")
    assert result.exit_code == 0, result.output
    final = {r["snapshot_id"]: r for r in records(tmp_path / "p.jsonl")}
    for group in old:
        assert {final[m]["outcome"] for m in old[group].values()} == {"deleted"}
    rules = {final[m]["rule"] for m in middle[kept_group].values()}
    assert "hold: legal" in "".join(rules)
    assert any(rule.startswith(f"group {kept_group}: kept with member {held}") for rule in rules)
    assert groups_left(emu) == {*new, kept_group}
    assert sum(requests_of(emu.state(), GROUP_DELETE).values()) == len(old) + len(middle) - 1
    assert not requests_of(emu.state(), V2_DELETE)


def test_prune_keeps_a_group_held_by_its_tag(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A group whose own evs_snapshot_hold tag is set (create --hold) is kept whole by prune, each member
    with rule hold: REASON, while the old group without one goes; cleanup blocks it (HELD)."""
    emu, clock = world(emulator_thread)
    old = make_groups(emu, run_id_of("old"), DISKS[:2], hold="CHG-3")
    old |= make_groups(emu, run_id_of("old"), DISKS[2:])
    clock.advance(86400)
    make_groups(emu, run_id_of("new"))
    held_group, free_group = list(old)
    result = prune(
        emu, manifest(write, DISKS), tmp_path / "p.jsonl", "--keep-last", "1", "--apply", "--verbose"
    )
    assert result.exit_code == 0, result.output
    final = {r["snapshot_id"]: r for r in records(tmp_path / "p.jsonl")}
    assert {(final[m]["outcome"], final[m]["rule"]) for m in old[held_group].values()} == {
        ("kept", "hold: CHG-3")
    }
    assert {final[m]["outcome"] for m in old[free_group].values()} == {"deleted"}
    assert held_group in groups_left(emu)
    assert free_group not in groups_left(emu)
    source = report_of(tmp_path / "create.jsonl", run_id_of("old"), {held_group: old[held_group]})
    plan = cleanup(emu, source, tmp_path / "c.jsonl")  # cleanup blocks it by the group's tag too
    assert plan.exit_code == 1, plan.output
    assert {(r["outcome"], r["error_code"]) for r in records(tmp_path / "c.jsonl")} == {("blocked", "HELD")}


@pytest.mark.parametrize("command", ["prune", "cleanup"])
def test_a_group_held_after_its_listing_is_not_deleted(
    command: str, emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--hold-at-delete 1: the second group is held (its tag) when the first group's DELETE arrives;
    it is read again before its DELETE: prune keeps its members (hold: REASON), cleanup blocks them
    (HELD); one group DELETE is sent."""
    emu, clock = world(emulator_thread, hold_at_delete=1)
    old = make_groups(emu, RUN)
    clock.advance(86400)
    report = tmp_path / "r.jsonl"
    if command == "prune":
        make_groups(emu, run_id_of("new"))
        result = prune(
            emu, manifest(write, DISKS), report, "--keep-last", "1", "--apply", "--concurrency", "1"
        )
        expected = {("deleted", "keep-last 1", None), ("kept", "hold: emulator", None)}
    else:
        source = report_of(tmp_path / "create.jsonl", RUN, old)
        result = cleanup(emu, source, report, "--apply", "--concurrency", "1")
        expected = {("deleted", None, None), ("blocked", None, "HELD")}
    assert result.exit_code == (0 if command == "prune" else 1), result.output
    final = {r["snapshot_id"]: r for r in records(report)}
    ended = {
        group: {(final[m]["outcome"], final[m]["rule"], final[m]["error_code"]) for m in members.values()}
        for group, members in old.items()
    }
    assert sorted(map(len, ended.values())) == [1, 1]  # each group ends whole
    assert {next(iter(e)) for e in ended.values()} == expected
    kept = next(group for group, e in ended.items() if next(iter(e))[0] != "deleted")
    assert kept in groups_left(emu)
    assert sum(requests_of(emu.state(), GROUP_DELETE).values()) == 1


def test_prune_keeps_a_group_with_a_member_outside_the_selection(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A manifest naming one disk of a server: that server's groups are kept whole (the rules did not
    judge the other member); a plan of the other server's old group plans each member."""
    emu, clock = world(emulator_thread)
    old = make_groups(emu, run_id_of("old"))
    clock.advance(86400)
    make_groups(emu, run_id_of("new"))
    source = manifest(write, [DISKS[0], *DISKS[2:]])
    result = prune(emu, source, tmp_path / "p.jsonl", "--keep-last", "1", "--verbose")
    assert result.exit_code == 0, result.output
    final = {r["snapshot_id"]: r for r in records(tmp_path / "p.jsonl")}
    first, second = list(old)
    assert final[old[first][DISKS[0]]]["outcome"] == "kept"
    assert "outside the selection" in final[old[first][DISKS[0]]]["rule"]
    assert {final[m]["outcome"] for m in old[second].values()} == {"planned"}
    assert {final[m]["snapshot_group_id"] for m in old[second].values()} == {second}


def test_prune_blocks_a_group_whose_state_cannot_be_deleted_and_says_a_region_lacks_groups(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A group still creating: each member blocked SNAPSHOT_BUSY, nothing sent; a region without the
    v5 API (--no-snapshot-groups): prune runs as before and says so, its route still open."""
    emu, clock = world(emulator_thread, creating_seconds=3600.0)
    make_groups(emu, run_id_of("old"))
    clock.advance(60)
    result = prune(
        emu, manifest(write, DISKS), tmp_path / "p.jsonl", "--keep-last", "0", "--allow-none", "--apply"
    )
    assert result.exit_code == 1, result.output
    assert {(r["outcome"], r["error_code"]) for r in records(tmp_path / "p.jsonl")} == {
        ("blocked", "SNAPSHOT_BUSY")
    }
    assert not requests_of(emu.state(), GROUP_DELETE)
    bare, _ = world(emulator_thread, no_snapshot_groups=True)
    plain = prune(bare, manifest(write, DISKS, "n.csv"), tmp_path / "n.jsonl", "--keep-last", "1")
    assert plain.exit_code == 0, plain.output
    assert "has no snapshot groups" in plain.output


def test_rollback_restores_member_by_member_onto_each_disk(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """No group rollback: each row's member is rolled back once onto its own disk, by the v5 rollback,
    even when the v2 API does not show members."""
    emu, _ = world(emulator_thread, group_members_unlisted=True)
    made = make_groups(emu, RUN)
    for disk in DISKS:
        _http(emu, "POST", f"/_emulator/volumes/{disk}/detach")
    report = report_of(tmp_path / "create.jsonl", RUN, made, outcome="available")
    args = cli_args("rollback", report, endpoint=emu.url, report=tmp_path / "b.jsonl", apply=True)
    # rollbacks end at once and the clock stands (the disks' updated_at never moves): each row counts
    # once --settle has passed
    result = invoke([*args, *FAST, *FAST_WAIT, "--settle", "0.1"])
    assert result.exit_code == 0, result.output
    rolled = last_per_row(tmp_path / "b.jsonl")
    assert {r["outcome"] for r in rolled.values()} == {"rolled_back"}
    state = emu.state()
    pairs = sorted((item["snapshot_id"], item["volume_id"]) for item in state["rollbacks"])
    assert pairs == sorted((m, d) for ms in made.values() for d, m in ms.items())
    assert sum(requests_of(state, "POST /v5/{project_id}/snapshots/{snapshot_id}/rollback").values()) == 4


def test_rollback_refuses_a_member_of_another_runs_group(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """A record whose group carries another run's tag: refused GROUP_NOT_THIS_RUN; nothing is sent."""
    emu, _ = world(emulator_thread)
    made = make_groups(emu, run_id_of("another"), DISKS[:2])
    for disk in DISKS[:2]:
        _http(emu, "POST", f"/_emulator/volumes/{disk}/detach")
    report = report_of(tmp_path / "create.jsonl", RUN, made, outcome="available")
    args = cli_args("rollback", report, endpoint=emu.url, report=tmp_path / "b.jsonl", apply=True)
    result = invoke([*args, *FAST, *FAST_WAIT])
    assert result.exit_code == 1, result.output
    assert {r["error_code"] for r in last_per_row(tmp_path / "b.jsonl").values()} == {GROUP_NOT_THIS_RUN}
    assert emu.state()["rollbacks"] == []


def test_audit_counts_members_and_reports_an_incomplete_group(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Members of the tool's groups count for their disks (the v2 list hiding them); the newest group of
    a server that lacks a disk the manifest puts on that server is one line and exit 1."""
    emu, _ = world(emulator_thread, group_members_unlisted=True)
    make_groups(emu, RUN, [*DISKS[:2], DISKS[2]])  # server 2's group misses DISKS[3]
    elsewhere = write("x.csv", f"volume_id,server_id\n{DISKS[0]},{SERVERS[0]}\n{DISKS[1]},no-group-server\n")
    args = ["audit", str(elsewhere), "--endpoint", emu.url, "--project-id", PROJECT]
    whole = invoke([*args, "--max-age", "1d", *ACTION_RETRIES])
    assert whole.exit_code == 0, whole.output
    args[1] = str(manifest(write, DISKS, "all.csv"))
    summary = tmp_path / "s.json"
    metrics = tmp_path / "m.prom"
    partial = invoke(
        [
            *args,
            "--max-age",
            "1d",
            "--summary-json",
            str(summary),
            "--metrics-file",
            str(metrics),
            *ACTION_RETRIES,
        ]
    )
    assert partial.exit_code == 1, partial.output
    assert f"is incomplete: no member of disk {DISKS[3]}" in partial.output
    assert f"volume {DISKS[3]}" in partial.output  # and that disk has no snapshot at all
    incomplete = orjson.loads(summary.read_bytes())["groups_incomplete"]
    assert [item["missing_volume_ids"] for item in incomplete] == [[DISKS[3]]]
    assert 'evs_snapshot_audit_groups_incomplete{command="audit"} 1' in metrics.read_text()


def test_ownership_of_groups_and_members_one_code_per_reason() -> None:
    """The judgement of ownership.py: a group by its marker tag, a member by its group and record."""
    group = SnapshotGroup(id="g1", server_id=SERVERS[0], status="available", marker=RUN)
    member = Snapshot(id="s1", volume_id=DISKS[0], snapshot_group_id="g1")
    assert Ownership.owns_group(group)
    assert not Ownership.owns_group(SnapshotGroup(id="g2", marker="by-hand"))
    assert group_refusal(group, run_id=RUN) is None
    assert member_refusal(member, group, run_id=RUN, volume_id=DISKS[0]) is None
    other = run_id_of("another")
    refused = [
        group_refusal(group, run_id=other),
        member_refusal(member, group, run_id=other, volume_id=DISKS[0]),
        member_refusal(member, group, run_id=RUN, volume_id=DISKS[1]),
        member_refusal(member, group, run_id=RUN, volume_id=DISKS[0], group_id="g9"),
        member_refusal(
            Snapshot(id="s2", volume_id=DISKS[0], name="autobk_snapshot_x", snapshot_group_id="g1"),
            group,
            run_id=RUN,
            volume_id=DISKS[0],
        ),
    ]
    assert [r.code if r else None for r in refused] == [
        GROUP_NOT_THIS_RUN,
        GROUP_NOT_THIS_RUN,
        OTHER_VOLUME,
        OTHER_GROUP,
        "BACKUP_SNAPSHOT",
    ]


def test_wait_leaves_members_of_a_creating_group_pending_until_it_times_out(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """A group still creating (its clock held): its rows stay pending, then wait_timeout with the
    last status seen; no row is settled from the member's own status while the group creates."""
    emu, _ = world(emulator_thread, creating_seconds=3600.0)
    made = make_groups(emu, RUN)
    report = report_of(tmp_path / "create.jsonl", RUN, made)
    args = cli_args("wait", report, endpoint=emu.url, poll_interval="0.05", wait_timeout="0.3s")
    result = invoke(args)
    assert result.exit_code == 1, result.output
    final = last_per_row(report)
    assert {(r["outcome"], r["snapshot_status"]) for r in final.values()} == {("wait_timeout", "creating")}


def test_cleanup_refuses_a_run_group_with_a_member_on_a_disk_the_run_does_not_name(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """A group carrying the run's tag whose disks no record names (and no row lacks a record): every
    member refused OTHER_VOLUME, the group stays, exit 1; the named group goes."""
    emu, _ = world(emulator_thread)
    made = make_groups(emu, RUN)
    named, stray = list(made)
    report = report_of(tmp_path / "create.jsonl", RUN, {named: made[named]})
    result = cleanup(emu, report, tmp_path / "c.jsonl", "--apply")
    assert result.exit_code == 1, result.output
    seen = {(r["snapshot_group_id"], r["outcome"], r["error_code"]) for r in records(tmp_path / "c.jsonl")}
    assert seen == {(named, "deleted", None), (stray, "refused", OTHER_VOLUME)}
    assert groups_left(emu) == {stray}
    again = cleanup(emu, report, tmp_path / "c.jsonl", "--apply", "--resume")  # settled: nothing new
    assert again.exit_code == 1, again.output
    assert len(records(tmp_path / "c.jsonl")) == len(DISKS)
    assert sum(requests_of(emu.state(), GROUP_DELETE).values()) == 1


def test_rollback_of_a_member_whose_group_is_gone_is_blocked(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """The row's group no longer exists: blocked SNAPSHOT_NOT_FOUND, naming the group; nothing sent."""
    emu, _ = world(emulator_thread)
    made = make_groups(emu, RUN, DISKS[:2])
    _http(emu, "DELETE", f"/v5/{PROJECT}/snapshot-groups/{next(iter(made))}")
    report = report_of(tmp_path / "create.jsonl", RUN, made, outcome="available")
    result = rollback_plan(emu, report, tmp_path / "b.jsonl")
    assert result.exit_code == 1, result.output
    final = last_per_row(tmp_path / "b.jsonl").values()
    assert {(r["outcome"], r["error_code"]) for r in final} == {("planned", "SNAPSHOT_NOT_FOUND")}
    assert all(next(iter(made)) in r["error_message"] for r in final)


def rollback_plan(emu: Any, report: Path, out: Path) -> Any:
    return invoke([*cli_args("rollback", report, endpoint=emu.url, report=out), *FAST, *FAST_WAIT])


def test_the_lifecycle_reads_what_create_consistency_server_wrote(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """create --consistency server (members hidden from the v2 API), then wait, audit and cleanup
    --apply on what it wrote: every row available, every disk fresh, both groups deleted whole."""
    emu, _ = world(emulator_thread, group_members_unlisted=True)
    source = manifest(write, DISKS)
    report = tmp_path / "create.jsonl"
    made = invoke(
        [
            *cli_args("create", source, endpoint=emu.url, project_id=PROJECT, report=report),
            "--consistency",
            "server",
            *FAST,
        ]
    )
    assert made.exit_code == 0, made.output
    waited = invoke([*cli_args("wait", report, endpoint=emu.url), *FAST_WAIT])
    assert waited.exit_code == 0, waited.output
    assert {r["outcome"] for r in last_per_row(report).values()} == {"available"}
    audited = invoke(
        ["audit", str(source), "--endpoint", emu.url, "--project-id", PROJECT, "--max-age", "1d"]
    )
    assert audited.exit_code == 0, audited.output
    cleaned = cleanup(emu, report, tmp_path / "c.jsonl", "--apply")
    assert cleaned.exit_code == 0, cleaned.output
    assert groups_left(emu) == set()
    assert not requests_of(emu.state(), V2_DELETE)


def test_cleanup_waits_out_a_group_already_deleting(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """A run's group whose deletion an earlier cleanup sent (it is deleting): a plan counts it as going
    (exit 0, no record); --apply records its members deleted without a second DELETE."""
    emu, _ = world(emulator_thread, deleting_seconds=3600.0)
    made = make_groups(emu, RUN, DISKS[:2])
    _http(emu, "DELETE", f"/v5/{PROJECT}/snapshot-groups/{next(iter(made))}")
    report = report_of(tmp_path / "create.jsonl", RUN, made)
    plan = cleanup(emu, report, tmp_path / "plan.jsonl")
    assert plan.exit_code == 0, plan.output
    done = cleanup(emu, report, tmp_path / "done.jsonl", "--apply", "--no-wait")
    assert done.exit_code == 0, done.output
    assert {r["outcome"] for r in records(tmp_path / "done.jsonl")} == {"deleted"}
    assert sum(requests_of(emu.state(), GROUP_DELETE).values()) == 1


async def test_a_group_that_cannot_be_read_leaves_its_rows_pending(
    emulator: Callable[..., Any], tmp_path: Path
) -> None:
    """Every answer a 5xx: the group's look fails each round, so its row is looked at again, never
    settled from nothing, and ends wait_timeout."""
    emu = await emulator(fault_5xx=1.0)
    row = edge_record(1, snapshot_id="m1", snapshot_group_id="g1", snapshot_status="creating")
    path = tmp_path / "w.jsonl"
    async with router_for(emu.url, {"OS_AUTH_TOKEN": TOKEN}) as router:
        with ReportWriter(str(path)) as writer:
            waiter = Waiter(WaitPlan(timeout=0.2, interval=0.05), router=router, writer=writer, tally=Tally())
            waiter.load([row])
            await waiter.run()
    assert [(r["outcome"], r["snapshot_status"]) for r in records(path)] == [("wait_timeout", "creating")]


def test_prune_stops_when_a_group_member_list_fails(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """The member list refused (the gateway's 404 on it, not on the group list): prune stops, exit 3,
    before anything is deleted, naming the groups it could not list."""
    emu, clock = world(emulator_thread, gateway_404=("/snapshots/detail",))
    for run in ("old", "new"):  # made by hand: make_groups reads the member list this test refuses
        tags = {MARKER: run_id_of(run)}
        spec = {"server_id": SERVERS[0], "volume_ids": DISKS[:2], "name": "g", "tags": tags}
        _http(emu, "POST", f"/v5/{PROJECT}/snapshot-groups", {"snapshot_group": spec})
        clock.advance(60)
    result = prune(emu, manifest(write, DISKS[:2]), tmp_path / "p.jsonl", "--keep-last", "1", "--apply")
    assert result.exit_code == 3, result.output
    assert "cannot list the snapshot groups" in result.output
    assert not requests_of(emu.state(), GROUP_DELETE)


def test_a_stale_line_names_the_group_of_a_member() -> None:
    """audit's line about a disk whose newest snapshot is a group member names the group."""
    member = Snapshot(
        id="s1", volume_id=DISKS[0], status="available", created_at="2026-01-01T00:00:00.000000"
    )
    member = dataclasses.replace(member, snapshot_group_id="g1")
    stale = Stale(volume_id=DISKS[0], project_id=PROJECT, region=None, newest_available=member, newest=member)
    assert "s1 (" in stale.line(datetime.now(UTC))
    assert "member of snapshot group g1)" in stale.line(datetime.now(UTC))
