"""Holds: create --hold, hold and release, and what prune and cleanup do with a held snapshot."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
import orjson
import pytest

from orchestrator.emulator import SeedSnapshot
from orchestrator.lock import RunLock
from tests.helpers import (
    ACTION_RETRIES,
    CLOSED_PORT,
    DELETE,
    FAST_RETRIES,
    MARKER,
    PROJECT,
    RUN,
    SHOW,
    SNAPS,
    VOLUMES,
    WRONG,
    Handler,
    answering,
    cleanup,
    create_args,
    create_report,
    csv_manifest,
    hang_up,
    header,
    invoke,
    journal,
    last_per_row,
    live,
    prune,
    records,
    requests_of,
    snap,
    stand_in,
    start,
    volume_ids,
    world,
)

pytestmark = pytest.mark.usefixtures("quick_deletion_polls")

HOLD = "evs_snapshot_hold"
CREATE = "POST /v2/{project_id}/cloudsnapshots"
ADD = "POST /v2/{project_id}/snapshots/{snapshot_id}/metadata"
REMOVE = "DELETE /v2/{project_id}/snapshots/{snapshot_id}/metadata/{key}"


def seeded(volume: str, days: float, *, hold: str | None = None, **fields: Any) -> SeedSnapshot:
    """``helpers.snap``, held for ``hold`` when given."""
    made = snap(volume, days, **fields)
    return made if hold is None else dataclasses.replace(made, metadata={**made.metadata, HOLD: hold})


def command(emu: Any, name: str, *args: str, report: Path) -> Any:
    return invoke([name, *args, "--endpoint", emu.url, "--report", str(report), *ACTION_RETRIES])


def created(
    emulator_thread: Callable[..., Any],
    write: Callable[..., Path],
    tmp_path: Path,
    count: int,
    seed: int,
    *extra: str,
    **knobs: Any,
) -> tuple[Any, Path, list[str]]:
    disks = volume_ids(count, seed=seed)
    emu = start(emulator_thread, disks, [], creating_seconds=0.0, **knobs)
    report = tmp_path / "create.jsonl"
    short = ("--settle", "0.1s", "--timeout", "0.2")
    result = invoke(create_args(emu.url, csv_manifest(write, disks), report, *FAST_RETRIES, *short, *extra))
    assert result.exit_code == 0, result.output
    return emu, report, disks


def test_create_hold_writes_the_key_in_the_create_request(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """create --hold REASON: every snapshot carries the hold and the marker; one request per row, no more."""
    emu, report, _ = created(emulator_thread, write, tmp_path, 3, 901, "--hold", "INC-7")
    state = emu.state()
    assert sum(requests_of(state, CREATE).values()) == 3
    assert not any("metadata" in route for route in state["requests"])
    run_id = header(report)["run_id"]
    made = {r["snapshot_id"] for r in last_per_row(report).values()}
    snaps = {s["id"]: s for s in state["snapshots"]}
    assert {i: snaps[i]["metadata"] for i in made} == {i: {MARKER: run_id, HOLD: "INC-7"} for i in made}
    assert header(report)["shape"]["hold"] == "INC-7"


def test_create_hold_and_the_reserved_key_are_checked(write: Callable[..., Path], tmp_path: Path) -> None:
    """An empty --hold, and --metadata or a manifest setting the hold key, are refused before sending."""
    manifest = csv_manifest(write, volume_ids(1, seed=902))
    report = tmp_path / "r.jsonl"
    url = "http://127.0.0.1:9"
    result = invoke(create_args(url, manifest, report, "--hold", " "))
    assert result.exit_code == 2
    assert "--hold needs a REASON" in result.output
    result = invoke(create_args(url, manifest, report, "--metadata", f"{HOLD}=x"))
    assert result.exit_code == 2
    assert "reserved for holds" in result.output
    disk = volume_ids(1, seed=903)[0]
    held_row = write("held.csv", f"volume_id,metadata.{HOLD}\n{disk},x\n")
    result = invoke(create_args(url, held_row, report, "--dry-run"))
    assert result.exit_code == 1
    (row,) = records(report)
    assert (row["outcome"], row["error_code"]) == ("invalid", "RESERVED_METADATA_KEY")


def test_hold_plans_then_applies_and_release_removes(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """hold REPORT: a plan sends nothing; --apply adds the key (the marker stays); release removes it."""
    emu, report, _ = created(emulator_thread, write, tmp_path, 3, 904)
    made = {r["row"]: r["snapshot_id"] for r in last_per_row(report).values()}
    plan = tmp_path / "hold.jsonl"
    result = command(emu, "hold", str(report), "--reason", "CHG-1", "--rows", "1-2", report=plan)
    assert result.exit_code == 0, result.output
    assert {(r["snapshot_id"], r["outcome"], r["rule"]) for r in records(plan)} == {
        (made[1], "planned", "hold: CHG-1"),
        (made[2], "planned", "hold: CHG-1"),
    }
    assert ADD not in emu.state()["requests"]
    result = command(
        emu, "hold", str(report), "--reason", "CHG-1", "--rows", "1-2", "--apply", "--resume", report=plan
    )
    assert result.exit_code == 0, result.output
    assert {(r["snapshot_id"], r["outcome"]) for r in records(plan)[2:]} == {
        (made[1], "held"),
        (made[2], "held"),
    }
    snaps = live(emu)
    assert snaps[made[1]]["metadata"][HOLD] == "CHG-1"
    assert MARKER in snaps[made[1]]["metadata"]
    assert HOLD not in snaps[made[3]]["metadata"]
    assert sum(requests_of(emu.state(), ADD).values()) == 2
    again = tmp_path / "hold-again.jsonl"  # already held: nothing is sent
    result = command(emu, "hold", str(report), "--reason", "CHG-1", "--rows", "1", "--apply", report=again)
    assert result.exit_code == 0, result.output
    assert [r["outcome"] for r in records(again)] == ["held"]
    assert sum(requests_of(emu.state(), ADD).values()) == 2
    released = tmp_path / "release.jsonl"
    result = command(
        emu, "release", "--snapshot", made[1], "--project-id", PROJECT, "--apply", report=released
    )
    assert result.exit_code == 0, result.output
    assert [(r["outcome"], r["rule"]) for r in records(released)] == [("released", "hold: CHG-1")]
    assert HOLD not in live(emu)[made[1]]["metadata"]
    assert MARKER in live(emu)[made[1]]["metadata"]
    assert sum(requests_of(emu.state(), REMOVE).values()) == 1
    for finished in (plan, again, released):  # summary of each finished report exits as its run did
        told = invoke(["summary", str(finished), "--json"])
        assert (told.exit_code, orjson.loads(told.stdout)["exit_code"]) == (0, 0), told.output


def test_a_hold_cut_short_is_finished_by_the_command_summary_prints(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A hold --apply killed before its end line (its report cut there): summary says unfinished and
    prints a command with the run's --endpoint (the header records where it sent its requests; it did
    not, so the command failed with exit 2, found by hostile11b), which run as printed ends the run."""
    emu, report, _ = created(emulator_thread, write, tmp_path, 2, 918)
    held = tmp_path / "hold.jsonl"
    result = command(emu, "hold", str(report), "--reason", "CHG-2", "--rows", "1", "--apply", report=held)
    assert result.exit_code == 0, result.output
    kept = held.read_bytes().splitlines(keepends=True)
    assert orjson.loads(kept[-1])["outcome"] == "ended"
    held.write_bytes(b"".join(kept[:-1]))  # as a kill -9 after its last record leaves it
    told = invoke(["summary", str(held)])
    assert told.exit_code == 1, told.output
    said = told.stdout.split("finish it with `", 1)[1].split("`", 1)[0]
    assert f"--endpoint {emu.url}" in said
    finished = invoke(said.split()[1:])
    assert finished.exit_code == 0, finished.output
    assert invoke(["summary", str(held)]).exit_code == 0


@pytest.mark.no_cover
def test_a_hold_killed_after_its_request_is_named_and_finished_once(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Each hold request is journaled (a sending line) before it leaves. Killed after the request (its
    report cut after that line): summary names the hold sent with no record, exit 1, and its command
    applies; run as printed, it finds the snapshot held and sends nothing more. Before, the report held
    only its header, and summary's command was a plan (found by hostile11c)."""
    emu, report, _ = created(emulator_thread, write, tmp_path, 1, 919)
    held = tmp_path / "hold.jsonl"
    result = command(emu, "hold", str(report), "--reason", "CHG-3", "--apply", report=held)
    assert result.exit_code == 0, result.output
    head, sending, *_ = held.read_bytes().splitlines(keepends=True)
    line = orjson.loads(sending)
    assert (line["outcome"], line["rule"]) == ("sending", "hold: CHG-3")
    held.write_bytes(head + sending)  # as a kill -9 between the request and its record leaves it
    told = invoke(["summary", str(held)])
    assert told.exit_code == 1, told.output
    assert f"1 hold was sent and has no record (snapshot {line['snapshot_id']})" in told.stdout
    said = told.stdout.split("finish it with `", 1)[1].split("`", 1)[0]
    assert " --apply --resume " in said
    sent = sum(requests_of(emu.state(), ADD).values())
    finished = invoke(said.split()[1:])
    assert finished.exit_code == 0, finished.output
    assert sum(requests_of(emu.state(), ADD).values()) == sent  # already held: nothing sent again
    assert invoke(["summary", str(held)]).exit_code == 0


def test_hold_refuses_a_snapshot_not_the_tools(emulator_thread: Callable[..., Any], tmp_path: Path) -> None:
    """hold --snapshot: an unmarked or backup-made snapshot is refused (exit 1) and nothing is sent for it."""
    disk = volume_ids(1, seed=905)[0]
    mine, by_hand = seeded(disk, 1), seeded(disk, 2, run=None, name="by-hand")
    backup = seeded(disk, 3, name="autobk_snapshot_1")
    emu = start(emulator_thread, [disk], [mine, by_hand, backup])
    report = tmp_path / "hold.jsonl"
    args = ["--reason", "INC-2", "--project-id", PROJECT, "--apply"]
    for snapshot in (mine, by_hand, backup):
        args += ["--snapshot", snapshot.id]
    result = command(emu, "hold", *args, report=report)
    assert result.exit_code == 1, result.output
    outcomes = {r["snapshot_id"]: (r["outcome"], r["error_code"]) for r in records(report)}
    assert outcomes == {
        mine.id: ("held", None),
        by_hand.id: ("refused", "NOT_OWNED"),
        backup.id: ("refused", "BACKUP_SNAPSHOT"),
    }
    assert sum(requests_of(emu.state(), ADD).values()) == 1
    assert HOLD not in live(emu)[by_hand.id]["metadata"]


@pytest.mark.no_cover
def test_hold_from_a_report_refuses_another_runs_snapshot(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """hold REPORT: a row whose recorded snapshot is not the run's is refused (the ownership judgement)."""
    _, report, disks = created(emulator_thread, write, tmp_path, 2, 906)
    stranger = seeded(disks[0], 5, run="another-run")
    emu = start(emulator_thread, disks, [stranger])
    lines = report.read_text().splitlines()
    first = last_per_row(report)[1]["snapshot_id"]
    report.write_text("\n".join(line.replace(first, stranger.id) for line in lines) + "\n")
    plan = tmp_path / "hold.jsonl"
    result = command(emu, "hold", str(report), "--reason", "X", "--rows", "1", report=plan)
    assert result.exit_code == 1, result.output
    assert [(r["outcome"], r["error_code"]) for r in records(plan)] == [("refused", "NOT_THIS_RUN")]


@pytest.mark.no_cover
def test_a_report_whose_run_id_has_non_ascii_digits_is_not_read(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A report edited by hand so its run id holds Arabic-Indic digits was read, and hold refused each row
    NOT_THIS_RUN; a run id is ASCII (the one pattern), so the report is exit 2 naming file:line."""
    emu, report, _ = created(emulator_thread, write, tmp_path, 2, 907)
    run_id = header(report)["run_id"]
    edited = run_id.translate(
        str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669")
    )
    report.write_text(report.read_text(encoding="utf-8").replace(run_id, edited), encoding="utf-8")
    plan = tmp_path / "hold.jsonl"
    result = command(emu, "hold", str(report), "--reason", "X", report=plan)
    assert result.exit_code == 2, result.output
    assert f"{report}:1: not a run header of evs-snapshot: run_id " in result.stderr
    assert not plan.exists() or records(plan) == []
    assert emu.state()["requests"].get(ADD) is None
    summary = invoke(["summary", str(report)])
    assert summary.exit_code == 2, summary.output
    assert f"{report}:1: not a run header of evs-snapshot" in summary.stderr


@pytest.mark.parametrize(
    "stamp",
    ["20261399T999999Z", "20260230T250000Z", "00000000T000000Z"],
    ids=["month-13", "february-30-hour-25", "year-0"],
)
def test_a_report_whose_run_id_is_not_a_real_time_is_not_read(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path, stamp: str
) -> None:
    """A run id of the right shape whose start time is no UTC date-time (month 13, 30 February, year 0)
    was read: summary exited 0 and hold refused each row NOT_THIS_RUN. The tool never writes one, so the
    report is exit 2 naming file:1, for every reader and for create --resume alike."""
    emu, report, disks = created(emulator_thread, write, tmp_path, 2, 908)
    run_id = header(report)["run_id"]
    edited = stamp + run_id[16:]
    report.write_text(report.read_text(encoding="utf-8").replace(run_id, edited), encoding="utf-8")
    before = report.read_bytes()
    plan = tmp_path / "hold.jsonl"
    refusal = f"{report}:1: not a run header of evs-snapshot: run_id {edited!r} is not a run id of the tool"
    result = command(emu, "hold", str(report), "--reason", "X", report=plan)
    assert result.exit_code == 2, result.output
    assert refusal in result.stderr
    assert not plan.exists() or records(plan) == []
    assert emu.state()["requests"].get(ADD) is None
    summary = invoke(["summary", str(report)])
    assert summary.exit_code == 2, summary.output
    assert refusal in summary.stderr
    sent = sum(requests_of(emu.state(), CREATE).values())
    resumed = invoke(create_args(emu.url, csv_manifest(write, disks), report, "--resume", *FAST_RETRIES))
    assert resumed.exit_code == 2, resumed.output
    assert refusal in resumed.stderr
    assert report.read_bytes() == before
    assert sum(requests_of(emu.state(), CREATE).values()) == sent


def test_prune_keeps_a_held_snapshot(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """prune --keep-last 1 --apply: the held old snapshot stays, kept with rule hold: REASON."""
    disk = volume_ids(1, seed=907)[0]
    held = seeded(disk, 5, hold="baseline CHG-9")
    others = [seeded(disk, d) for d in (1, 2, 3)]
    emu = start(emulator_thread, [disk], [held, *others])
    report = tmp_path / "prune.jsonl"
    manifest = csv_manifest(write, [disk])
    result = prune(emu, manifest, report, "--keep-last", "1", "--apply", "--verbose")
    assert result.exit_code == 0, result.output
    outcomes = {r["snapshot_id"]: (r["outcome"], r["rule"]) for r in records(report)}
    assert outcomes[held.id] == ("kept", "hold: baseline CHG-9")
    assert {outcomes[s.id][0] for s in others[1:]} == {"deleted"}
    assert set(live(emu)) == {held.id, others[0].id}


def test_cleanup_blocks_held_unless_include_held(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """cleanup: a held snapshot of the run is blocked with HELD (exit 1); --include-held deletes it."""
    emu, report, _ = created(emulator_thread, write, tmp_path, 2, 908)
    made = {r["row"]: r["snapshot_id"] for r in last_per_row(report).values()}
    result = command(
        emu, "hold", str(report), "--reason", "keep", "--rows", "1", "--apply", report=tmp_path / "h.jsonl"
    )
    assert result.exit_code == 0, result.output
    first = tmp_path / "cleanup.jsonl"
    result = cleanup(emu, report, first, "--apply")
    assert result.exit_code == 1, result.output
    outcomes = {r["snapshot_id"]: (r["outcome"], r["error_code"]) for r in records(first)}
    assert outcomes == {made[1]: ("blocked", "HELD"), made[2]: ("deleted", None)}
    assert made[1] in live(emu)
    second = tmp_path / "cleanup2.jsonl"
    result = cleanup(emu, report, second, "--apply", "--include-held")
    assert result.exit_code == 0, result.output
    assert {(r["snapshot_id"], r["outcome"]) for r in records(second)} == {
        (made[1], "deleted"),
        (made[2], "deleted"),
    }
    assert made[1] not in live(emu)


def test_prune_keeps_a_snapshot_held_after_its_listing(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--hold-at-delete 1: the others are held when the first DELETE arrives, after prune listed them;
    prune reads each again before its DELETE: one deleted, the rest kept (hold: REASON), not sent."""
    disk = volume_ids(1, seed=911)[0]
    olds = [seeded(disk, d) for d in (1, 2, 3, 4)]
    emu = start(emulator_thread, [disk], olds, hold_at_delete=1)
    report = tmp_path / "prune.jsonl"
    result = prune(
        emu, csv_manifest(write, [disk]), report, "--keep-last", "1", "--apply", "--concurrency", "1"
    )
    assert result.exit_code == 0, result.output
    ended = {r["snapshot_id"]: (r["outcome"], r["rule"]) for r in records(report)}
    deleted = [key for key, (outcome, _) in ended.items() if outcome == "deleted"]
    assert len(deleted) == 1
    assert sorted(ended.values()) == [("deleted", "keep-last 1"), *[("kept", "hold: emulator")] * 2]
    assert set(live(emu)) == {s.id for s in olds} - set(deleted)
    assert sum(requests_of(emu.state(), DELETE).values()) == 1
    sending = [line["snapshot_id"] for line in journal(report)]
    assert sending == deleted  # a snapshot kept at its last look has no sending line


@pytest.mark.no_cover
def test_cleanup_blocks_a_snapshot_held_after_its_listing(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--hold-at-delete 1: cleanup reads each snapshot again before its DELETE; those held meanwhile are
    blocked HELD (exit 1) and stay; --include-held then deletes them."""
    emu, report, _ = created(emulator_thread, write, tmp_path, 3, 912, hold_at_delete=1)
    first = tmp_path / "cleanup.jsonl"
    result = cleanup(emu, report, first, "--apply", "--concurrency", "1")
    assert result.exit_code == 1, result.output
    ended = {r["snapshot_id"]: (r["outcome"], r["error_code"]) for r in records(first)}
    assert sorted(ended.values()) == [("blocked", "HELD"), ("blocked", "HELD"), ("deleted", None)]
    held = {key for key, (outcome, _) in ended.items() if outcome == "blocked"}
    assert set(live(emu)) == held
    assert sum(requests_of(emu.state(), DELETE).values()) == 1
    second = tmp_path / "cleanup2.jsonl"
    result = cleanup(emu, report, second, "--apply", "--include-held")
    assert result.exit_code == 0, result.output
    assert {(r["snapshot_id"], r["outcome"]) for r in records(second)} >= {(key, "deleted") for key in held}
    assert not live(emu)


def test_hold_and_release_usage(tmp_path: Path) -> None:
    """A REPORT or --snapshot, not both, not neither; --rows only with a REPORT; hold needs --reason."""
    url = ["--endpoint", "http://127.0.0.1:9", "--project-id", PROJECT]
    assert invoke(["hold", "--reason", "x", *url]).exit_code == 2
    report = tmp_path / "c.jsonl"
    report.write_text("")
    assert invoke(["hold", str(report), "--snapshot", "a", "--reason", "x", *url]).exit_code == 2
    result = invoke(["release", "--snapshot", "a", "--rows", "1", *url])
    assert result.exit_code == 2
    assert "--rows and --volume choose rows of a REPORT" in result.output
    assert invoke(["hold", "--snapshot", "a", *url]).exit_code == 2


def test_held_snapshots_count_toward_the_slots_and_the_warning_says_so(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """prune plan: 5 kept by --keep-last and 2 old held fill the 7 slots; the warning names the held."""
    disk = volume_ids(1, seed=909)[0]
    kept = [seeded(disk, d) for d in (1, 2, 3, 4, 5)]
    held = [seeded(disk, d, hold="INC-3") for d in (8, 9)]
    emu = start(emulator_thread, [disk], [*kept, *held])
    report = tmp_path / "prune.jsonl"
    result = prune(emu, csv_manifest(write, [disk]), report, "--keep-last", "5", "--verbose")
    assert result.exit_code == 0, result.output
    assert f"disk {disk}: the rules keep 7 of 7 slots (2 of them held): tonight's create" in result.output
    rules = {r["snapshot_id"]: r["rule"] for r in records(report)}
    assert {rules[s.id] for s in held} == {"hold: INC-3"}
    assert {r["outcome"] for r in records(report)} == {"kept"}


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_create_resume_refuses_another_hold(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """The create report's header records --hold: a --resume with another REASON (or none) is refused."""
    emu, report, _ = created(emulator_thread, write, tmp_path, 1, 910, "--hold", "INC-8")
    manifest = tmp_path / "m.csv"
    for other in (["--hold", "INC-9"], []):
        result = invoke(create_args(emu.url, manifest, report, "--resume", *FAST_RETRIES, *other))
        assert result.exit_code == 2, result.output
        assert "--resume" in result.output


def test_hold_refuses_a_report_with_nothing_in_the_cloud(write: Callable[..., Path], tmp_path: Path) -> None:
    """hold REPORT of a create --dry-run: exit 2, the message names hold, nothing is sent."""
    report = tmp_path / "dry.jsonl"
    url = "http://127.0.0.1:9"
    result = invoke(create_args(url, csv_manifest(write, volume_ids(1, seed=914)), report, "--dry-run"))
    assert result.exit_code == 0, result.output
    result = invoke(
        ["hold", str(report), "--reason", "x", "--endpoint", url, "--report", str(tmp_path / "h.jsonl")]
    )
    assert result.exit_code == 2, result.output
    assert "nothing to hold" in result.output


@pytest.mark.parametrize("command", ["hold", "release"])
def test_hold_of_a_group_run_is_refused_before_anything_is_sent(command: str, tmp_path: Path) -> None:
    """A --consistency server run's snapshots are group members: their hold is the group's tag, set at
    create; hold and release of such a report exit 2 saying so, nothing sent. Before, each row was
    refused NOT_THIS_RUN "made by no run of this tool" (found by hostile11)."""
    source = create_report(tmp_path / "create.jsonl", [{}])
    lines = source.read_bytes().splitlines(keepends=True)
    head = orjson.loads(lines[0])
    head["shape"] = {"consistency": "server"}
    source.write_bytes(orjson.dumps(head) + b"\n" + b"".join(lines[1:]))
    args = [command, str(source), "--endpoint", "http://127.0.0.1:9", "--report", str(tmp_path / "h.jsonl")]
    result = invoke([*args, *(["--reason", "x"] if command == "hold" else [])])
    assert result.exit_code == 2, result.output
    assert "is a --consistency server run" in result.stderr
    assert f"{command} cannot change a group's tags; nothing was sent" in result.stderr
    assert not (tmp_path / "h.jsonl").exists()


def test_hold_refused_by_the_api_is_rejected(emulator_thread: Callable[..., Any], tmp_path: Path) -> None:
    """A metadata call the API refuses (--deny evs:snapshots:update: 403) is rejected with its code (exit 1)."""
    disk = volume_ids(1, seed=915)[0]
    mine = seeded(disk, 1)
    emu = start(emulator_thread, [disk], [mine], deny=("evs:snapshots:update",))
    report = tmp_path / "hold.jsonl"
    args = ["--snapshot", mine.id, "--reason", "INC-4", "--project-id", PROJECT, "--apply"]
    result = command(emu, "hold", *args, report=report)
    assert result.exit_code == 1, result.output
    [record] = records(report)
    assert (record["outcome"], record["http_status"], record["error_code"]) == ("rejected", 403, "EVS.5403")
    assert HOLD not in live(emu)[mine.id]["metadata"]


def test_hold_choices_that_name_nothing_are_usage_errors(tmp_path: Path) -> None:
    """--snapshot without a project, --rows past the run, --volume of no row, rows naming no snapshot, and
    the create report as the hold's own report: each exit 2 before anything is sent."""
    url = ["--endpoint", CLOSED_PORT]
    source = create_report(tmp_path / "c.jsonl", [{}, {"outcome": "failed", "snapshot_id": None}], total=3)
    own = ["--report", str(tmp_path / "h.jsonl")]
    cases = [
        (
            ["hold", "--snapshot", SNAPS[0], "--reason", "x", *url],
            "--snapshot needs --project-id or --region",
        ),
        (["hold", str(source), "--rows", "4", "--reason", "x", *url, *own], "beyond the 3 rows of the run"),
        (["hold", str(source), "--volume", VOLUMES[5], "--reason", "x", *url, *own], "no row of"),
        (["release", str(source), "--rows", "3", *url, *own], "the rows chosen name no snapshot"),
        (["release", str(source), *url, "--report", str(source)], "give a --report other than the create"),
    ]
    for args, message in cases:
        result = invoke(args, {"OS_REGION_NAME": ""})
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, args
        assert "Traceback" not in result.output


def test_hold_of_part_of_a_run_notes_what_it_leaves_out(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """A row without a snapshot is noted; rows with no record make the whole-report hold exit 1 (their
    snapshots are unknown); --volume of the one recorded disk is complete (exit 0)."""
    emu = emulator_thread(**world(2))
    source = create_report(tmp_path / "c.jsonl", [{}, {"outcome": "failed", "snapshot_id": None}], total=3)
    plan = tmp_path / "h.jsonl"
    result = command(emu, "hold", str(source), "--reason", "INC-5", report=plan)
    assert result.exit_code == 1, result.output
    assert "1 chosen rows have no snapshot (their create did not succeed): nothing to hold" in result.output
    assert f"1 of 3 rows of run {RUN} have no record (rows 3)" in result.output
    assert [(r["snapshot_id"], r["outcome"]) for r in records(plan)] == [(SNAPS[0], "planned")]
    one = tmp_path / "h1.jsonl"
    result = command(emu, "hold", str(source), "--reason", "INC-5", "--volume", VOLUMES[0], report=one)
    assert result.exit_code == 0, result.output
    assert "have no record" not in result.output
    assert [(r["snapshot_id"], r["outcome"]) for r in records(one)] == [(SNAPS[0], "planned")]
    assert ADD not in emu.state()["requests"]


def test_hold_resume_does_not_look_at_a_held_snapshot_again(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """--resume of an applied hold: a snapshot already ``held`` in the report is not read or sent again; a
    snapshot that is gone is ``rejected`` (404, exit 1)."""
    emu = emulator_thread(**world(1))
    report = tmp_path / "h.jsonl"
    gone = SNAPS[1]
    args = [
        "--snapshot",
        SNAPS[0],
        "--snapshot",
        gone,
        "--reason",
        "INC-6",
        "--project-id",
        PROJECT,
        "--apply",
    ]
    result = command(emu, "hold", *args, report=report)
    assert result.exit_code == 1, result.output
    outcomes = {r["snapshot_id"]: (r["outcome"], r.get("http_status")) for r in records(report)}
    assert outcomes == {SNAPS[0]: ("held", 200), gone: ("rejected", 404)}
    shown = sum(requests_of(emu.state(), SHOW).values())
    result = command(emu, "hold", *args, "--resume", report=report)
    assert result.exit_code == 1, result.output
    assert sum(requests_of(emu.state(), SHOW).values()) == shown + 1  # the gone one only
    assert sum(requests_of(emu.state(), ADD).values()) == 1


def test_hold_with_refused_credentials_writes_no_record(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """A wrong secret key closes the route: exit 3, no record (a --resume looks at the snapshot again)."""
    emu = emulator_thread(**world(1))
    report = tmp_path / "h.jsonl"
    args = ["--snapshot", SNAPS[0], "--reason", "x", "--project-id", PROJECT, "--apply"]
    result = invoke(
        ["hold", *args, "--endpoint", emu.url, "--report", str(report), *ACTION_RETRIES], base=WRONG
    )
    assert result.exit_code == 3, result.output
    assert records(report) == []
    assert ADD not in emu.state()["requests"]


def test_hold_with_a_lock_file_held_elsewhere_exits_75(tmp_path: Path) -> None:
    """--lock-file held by another holder: exit 75 before anything is sent."""
    given = tmp_path / "maintenance.lock"
    args = ["--snapshot", SNAPS[0], "--reason", "x", "--project-id", PROJECT, "--lock-file", str(given)]
    with RunLock(given, "test"):
        result = invoke(["hold", *args, "--endpoint", CLOSED_PORT, "--report", str(tmp_path / "h.jsonl")])
    assert result.exit_code == 75, result.output
    assert str(given) in result.output


@pytest.mark.no_cover
def test_hold_when_every_read_fails_is_failed(emulator_thread: Callable[..., Any], tmp_path: Path) -> None:
    """The snapshot cannot be read (5xx until the retries are spent): ``failed`` (exit 1), nothing changed."""
    emu = emulator_thread(fault_5xx=1.0, **world(1))
    report = tmp_path / "h.jsonl"
    args = ["--snapshot", SNAPS[0], "--reason", "x", "--project-id", PROJECT, "--apply"]
    result = command(emu, "hold", *args, report=report)
    assert result.exit_code == 1, result.output
    [record] = records(report)
    assert record["outcome"] == "failed"
    assert record["error_message"]
    assert ADD not in emu.state()["requests"]


def metadata_answers(change: Handler) -> dict[str, Handler]:
    """A stand-in EVS: SNAPS[0] is RUN's snapshot of VOLUMES[0], held; its metadata calls answer ``change``."""
    body = {"id": SNAPS[0], "volume_id": VOLUMES[0], "status": "available", "name": "pre-maint-0"}
    body["metadata"] = {MARKER: RUN, HOLD: "INC-1"}
    base = f"/v2/{PROJECT}/snapshots/{SNAPS[0]}/metadata"
    return {
        f"GET /v2/{PROJECT}/cloudsnapshots/{SNAPS[0]}": answering(200, {"snapshot": body}),
        f"POST {base}": change,
        f"DELETE {base}/{HOLD}": change,
    }


@pytest.mark.parametrize(
    ("verb", "change", "outcome", "status", "said"),
    [
        (
            "release",
            answering(404, {"error": {"code": "EVS.5404", "message": "no such key"}}),
            "released",
            404,
            "no hold to remove (404 EVS.5404)",
        ),
        ("hold", answering(503, {"error": {"code": "EVS.5503", "message": "busy"}}), "failed", 503, "busy"),
        ("hold", hang_up, "failed", None, ""),
    ],
)
async def test_a_metadata_change_that_does_not_go_through(
    tmp_path: Path, verb: str, change: Handler, outcome: str, status: int | None, said: str
) -> None:
    """release whose hold is already gone (404) is ``released``; 5xx or no answer until the retries are
    spent is ``failed`` with the last answer (exit 1), after every attempt."""
    report = tmp_path / "h.jsonl"
    args = [verb, "--snapshot", SNAPS[0], "--project-id", PROJECT, "--apply", "--report", str(report)]
    args += ["--reason", "INC-2"] if verb == "hold" else []
    async with stand_in(metadata_answers(change)) as (url, seen):
        args += ["--endpoint", url, *ACTION_RETRIES]
        result = await anyio.to_thread.run_sync(functools.partial(invoke, args))
    assert result.exit_code == (0 if outcome == "released" else 1), result.output
    [record] = records(report)
    assert (record["outcome"], record.get("http_status")) == (outcome, status)
    assert said in (record.get("error_message") or "")
    sends = sum(count for key, count in seen.items() if "metadata" in key)
    assert sends == (1 if outcome == "released" else 3)
