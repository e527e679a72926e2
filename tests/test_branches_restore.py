"""rollback on the blockers and failures the main tests leave out: missing snapshot or disk, wrong states,
checks that cannot be made, throttled or lost rollbacks, rollbacks that never end, refused credentials."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.actions import Action
from orchestrator.emulator import EmulatorThread, ManualClock, SeedSnapshot, SeedVolume
from orchestrator.models import Outcome, Record
from orchestrator.restore import RestorePlan, plan_row
from orchestrator.retry import RetryPolicy
from orchestrator.waiter import WaitPlan
from tests.helpers import (
    CLOSED_PORT,
    PROJECT,
    ROLLBACK,
    RUN,
    SNAPS,
    VOLUMES,
    WRONG,
    by_row,
    create_report,
    invoke,
    marker,
    records,
    requests_of,
    rollback,
    rollbacks_per_snapshot,
    routed,
    world,
)


def test_plan_names_each_missing_or_unready_piece(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """Planning names the blocker of each row: snapshot or disk gone, snapshot or disk not available,
    a row that only timed out waiting (with the hint to run wait first)."""
    volumes = (
        SeedVolume(volume_id=VOLUMES[0]),
        SeedVolume(volume_id=VOLUMES[2]),
        SeedVolume(volume_id=VOLUMES[3], status="extending"),
        SeedVolume(volume_id=VOLUMES[4]),
    )
    snapshots = (
        SeedSnapshot(id=SNAPS[1], volume_id=VOLUMES[1], name="pre-maint-1", metadata=marker()),
        SeedSnapshot(
            id=SNAPS[2], volume_id=VOLUMES[2], name="pre-maint-2", metadata=marker(), status="error"
        ),
        SeedSnapshot(id=SNAPS[3], volume_id=VOLUMES[3], name="pre-maint-3", metadata=marker()),
        SeedSnapshot(id=SNAPS[4], volume_id=VOLUMES[4], name="pre-maint-4", metadata=marker()),
    )
    emu = emulator_thread(volumes=volumes, snapshots=snapshots)
    rows: list[dict[str, Any]] = [{}, {}, {}, {}, {"outcome": "wait_timeout"}]
    source = create_report(tmp_path / "create.jsonl", rows)
    report = tmp_path / "plan.jsonl"
    result = rollback(emu, source, report)
    assert result.exit_code == 1, result.stderr
    final = by_row(report)
    assert {row: (r["outcome"], r["error_code"]) for row, r in final.items()} == {
        1: ("planned", "SNAPSHOT_NOT_FOUND"),
        2: ("planned", "VOLUME_NOT_FOUND"),
        3: ("planned", "SNAPSHOT_NOT_AVAILABLE"),
        4: ("planned", "VOLUME_NOT_AVAILABLE"),
        5: ("planned", "NO_USABLE_SNAPSHOT"),
    }
    assert final[3]["error_message"] == f"snapshot {SNAPS[2]} is error, not available"
    assert final[4]["error_message"] == f"disk {VOLUMES[3]} is extending, not available"
    assert "run `evs-snapshot wait` on the create report first" in final[5]["error_message"]
    assert ROLLBACK not in emu.state()["requests"]


@pytest.mark.parametrize("apply", [False, True])
def test_checks_that_cannot_be_made_are_check_failed(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path, apply: bool
) -> None:
    """Every GET answered 5xx: the row is CHECK_FAILED (planned, or failed with --apply); nothing is sent."""
    emu = emulator_thread(fault_5xx=1.0, **world(1))
    source = create_report(tmp_path / "create.jsonl", [{}])
    report = tmp_path / "r.jsonl"
    result = rollback(emu, source, report, "--max-attempts", "1", apply=apply)
    assert result.exit_code == 1, result.stderr
    (record,) = records(report)
    assert (record["outcome"], record["error_code"]) == ("failed" if apply else "planned", "CHECK_FAILED")
    assert ROLLBACK not in emu.state()["requests"]


def test_throttled_rollback_gives_up_after_its_attempts(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path, clock: ManualClock
) -> None:
    """A rollback throttled on every attempt fails after --max-attempts, saying --resume looks first."""
    emu = emulator_thread(clock=clock, rate_limit=1.0, burst=2, **world(1))  # the two checks, then 429s
    source = create_report(tmp_path / "create.jsonl", [{}])
    report = tmp_path / "r.jsonl"
    result = rollback(emu, source, report, "--max-attempts", "2", apply=True)
    assert result.exit_code == 1, result.stderr
    (record,) = records(report)
    assert (record["outcome"], record["http_status"], record["attempts"]) == ("failed", 429, 2)
    assert record["error_message"].startswith("gave up after 2 attempts")
    assert "--resume looks at the disk" in record["error_message"]
    assert requests_of(emu.state(), ROLLBACK) == {"429": 2}
    assert emu.state()["rollbacks"] == []


@pytest.mark.parametrize(
    ("seed", "outcome", "rollbacks"),
    [
        (40, "rolled_back", 1),  # the gateway lost the answer (502) of a rollback EVS carried out
        (30, "failed", 0),  # 503: EVS did not act, and no attempt is left; the disk stays available
    ],
)
def test_last_attempt_lost_is_judged_by_the_disk(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path, seed: int, outcome: str, rollbacks: int
) -> None:
    """With one attempt, a 5xx answer is judged by the disk: rollbacking means done, available means failed.

    One row, seeded faults: the emulator's draws come in a fixed order, so each seed is one case.
    """
    emu = emulator_thread(rollback_seconds=0.2, fault_5xx=0.15, seed=seed, **world(1))
    source = create_report(tmp_path / "create.jsonl", [{}])
    report = tmp_path / "r.jsonl"
    result = rollback(emu, source, report, "--max-attempts", "1", "--settle", "0.3", apply=True)
    (record,) = records(report)
    assert (record["outcome"], record["attempts"]) == (outcome, 1), record
    assert record["http_status"] >= 500
    assert result.exit_code == (0 if outcome == "rolled_back" else 1)
    if outcome == "failed":
        assert record["error_message"].startswith("gave up after 1 attempts")
    assert sum(requests_of(emu.state(), ROLLBACK).values()) == 1
    assert len(emu.state()["rollbacks"]) == rollbacks


def test_accepted_rollback_whose_end_cannot_be_seen_is_unconfirmed(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """202, then the disk cannot be looked at: failed UNCONFIRMED (attempts 1, status 202), never resent.

    GETs get three tries each even with --max-attempts 1: this seed makes one of them fail three times.
    """
    emu = emulator_thread(rollback_seconds=0.2, fault_5xx=0.25, seed=21, **world(1))
    source = create_report(tmp_path / "create.jsonl", [{}])
    report = tmp_path / "r.jsonl"
    result = rollback(emu, source, report, "--max-attempts", "1", "--settle", "0.3", apply=True)
    assert result.exit_code == 1
    (record,) = records(report)
    assert (record["outcome"], record["error_code"]) == ("failed", "UNCONFIRMED")
    assert (record["attempts"], record["http_status"]) == (1, 202)
    assert record["error_message"].endswith("--resume looks at it before anything is sent again")
    assert requests_of(emu.state(), ROLLBACK) == {"202": 1}


def test_unconfirmed_after_a_lost_answer_still_counts_the_request(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """A rollback answered 502 whose disk then cannot be looked at is UNCONFIRMED with attempts 1 and its 502.

    GETs get three tries each: a larger fault share and this seed make one of them fail three times.
    """
    emu = emulator_thread(rollback_seconds=0.2, fault_5xx=0.4, seed=40, **world(1))
    source = create_report(tmp_path / "create.jsonl", [{}])
    report = tmp_path / "r.jsonl"
    rollback(emu, source, report, "--max-attempts", "1", "--settle", "0.3", apply=True)
    assert requests_of(emu.state(), ROLLBACK) == {"502": 1}
    assert len(emu.state()["rollbacks"]) == 1  # EVS carried it out
    (record,) = records(report)
    assert (record["outcome"], record["error_code"]) == ("failed", "UNCONFIRMED")
    assert (record["attempts"], record["http_status"]) == (1, 502)


def test_a_rollback_that_never_ends_times_out(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path, clock: ManualClock
) -> None:
    """A disk still rollbacking at --wait-timeout: failed ROLLBACK_TIMEOUT, sent once, --resume waits again."""
    emu = emulator_thread(clock=clock, **world(1))  # the clock never moves: the rollback never ends
    source = create_report(tmp_path / "create.jsonl", [{}])
    report = tmp_path / "r.jsonl"
    result = rollback(emu, source, report, "--wait-timeout", "0.4s", apply=True)
    assert result.exit_code == 1, result.stderr
    (record,) = records(report)
    assert (record["outcome"], record["error_code"]) == ("failed", "ROLLBACK_TIMEOUT")
    assert f"disk {VOLUMES[0]} is still rollbacking" in record["error_message"]
    assert requests_of(emu.state(), ROLLBACK) == {"202": 1}
    assert rollbacks_per_snapshot(emu.state()) == {SNAPS[0]: 1}


def test_refused_credentials_stop_the_rollback_run(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """Refused credentials: the first row fails with the refusal, later rows are not started, exit 3."""
    emu = emulator_thread(**world(3))
    source = create_report(tmp_path / "create.jsonl", [{}, {}, {}])
    report = tmp_path / "r.jsonl"
    args = ["rollback", str(source), "--endpoint", emu.url, "--report", str(report), "--apply"]
    result = invoke([*args, "--concurrency", "1"], env=WRONG)
    assert result.exit_code == 3, result.stderr
    assert "credentials refused" in result.stderr
    assert [(r["row"], r["outcome"]) for r in records(report)] == [(1, "failed")]
    assert ROLLBACK not in emu.state()["requests"]


def test_source_reports_that_choose_nothing_are_usage_errors(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """A create report with no records, or --rows and --volume that pick no common row: exit 2, nothing sent."""
    emu = emulator_thread(**world(2))
    header_only = tmp_path / "empty.jsonl"
    header_only.write_bytes(create_report(tmp_path / "full.jsonl", [{}, {}]).read_bytes().splitlines(True)[0])
    empty = rollback(emu, header_only, tmp_path / "a.jsonl")
    assert empty.exit_code == 2
    assert "holds no records of a create run" in empty.stderr
    apart = rollback(emu, tmp_path / "full.jsonl", tmp_path / "b.jsonl", rows="1", volume=VOLUMES[1])
    assert apart.exit_code == 2
    assert "--rows and --volume together choose no row" in apart.stderr
    assert emu.state()["requests"] == {}


@pytest.mark.anyio
async def test_plan_row_without_a_snapshot_sends_nothing() -> None:
    """plan_row on a row whose create failed names NO_USABLE_SNAPSHOT without a request (no server needed)."""
    row = Record(
        run_id=RUN,
        row=1,
        volume_id=VOLUMES[0],
        project_id=PROJECT,
        region=None,
        name="n",
        outcome=Outcome.REJECTED,
        started_at="2026-11-27T03:54:32.100Z",
        finished_at="2026-11-27T03:54:32.200Z",
        elapsed_ms=1,
    )
    plan = RestorePlan(source_run=RUN, policy=RetryPolicy(max_attempts=1), settle=0.1, wait=WaitPlan())
    async with routed(CLOSED_PORT) as route:
        finding = await plan_row(route, row, plan)
        assert sum(route.counts.values()) == 0
    assert (finding.outcome, finding.code) == (Action.PLANNED, "NO_USABLE_SNAPSHOT")
    assert finding.message is not None
    assert "is rejected: no snapshot to restore from" in finding.message
