"""Holds: create --hold, hold and release, and what prune and cleanup do with a held snapshot."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.emulator import SeedSnapshot
from tests.helpers import (
    ACTION_RETRIES,
    FAST_RETRIES,
    MARKER,
    PROJECT,
    cleanup,
    create_args,
    csv_manifest,
    header,
    invoke,
    last_per_row,
    live,
    prune,
    records,
    requests_of,
    snap,
    start,
    volume_ids,
)

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
) -> tuple[Any, Path, list[str]]:
    disks = volume_ids(count, seed=seed)
    emu = start(emulator_thread, disks, [], creating_seconds=0.0)
    report = tmp_path / "create.jsonl"
    short = ("--settle", "0.1s", "--timeout", "0.2")
    result = invoke(create_args(emu.url, csv_manifest(write, disks), report, *FAST_RETRIES, *short, *extra))
    assert result.exit_code == 0, result.output
    time.sleep(0.3)
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
