"""``rollback --retry-failed``: a row whose last record is ``rollback_failed`` (its disk left
``error_rollbacking``) is rolled back again with ``--apply --resume --retry-failed``; without the
flag it stays blocked and nothing is sent, as before (the API allows a rollback from that state)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.emulator import EmulatorThread, SeedVolume
from tests.helpers import ROLLBACK, VOLUMES, create_report, records, requests_of, rollback, world


def cloud(
    emulator_thread: Callable[..., EmulatorThread], disk: str = "available", **knobs: Any
) -> EmulatorThread:
    """One disk and its run's snapshot; ``disk``: the disk's status."""
    seeded = world(1)
    seeded["volumes"] = (SeedVolume(volume_id=VOLUMES[0], status=disk),)
    return emulator_thread(rollback_seconds=0.05, **seeded, **knobs)


def failed_once(emulator_thread: Callable[..., EmulatorThread], tmp_path: Path) -> tuple[Path, Path]:
    """A rollback report whose row ended rollback_failed (the disk ended error_rollbacking)."""
    source = create_report(tmp_path / "create.jsonl", [{}])
    report = tmp_path / "rollback.jsonl"
    first = rollback(cloud(emulator_thread, fault_rollback_error=1.0), source, report, apply=True)
    assert first.exit_code == 1, first.output + first.stderr
    assert [r["outcome"] for r in records(report)] == ["rollback_failed"]
    return source, report


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_without_retry_failed_the_row_stays_blocked(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """--apply --resume: the disk in error_rollbacking blocks the row (the message names --retry-failed);
    nothing is sent, as before."""
    source, report = failed_once(emulator_thread, tmp_path)
    later = cloud(emulator_thread, disk="error_rollbacking")
    result = rollback(later, source, report, "--resume", apply=True)
    assert result.exit_code == 1, result.output + result.stderr
    last = records(report)[-1]
    assert (last["outcome"], last["error_code"]) == ("blocked", "VOLUME_NOT_AVAILABLE")
    assert "--retry-failed" in last["error_message"]
    assert ROLLBACK not in later.state()["requests"]


def test_retry_failed_rolls_back_a_disk_left_error_rollbacking(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """--apply --resume --retry-failed: one rollback sent, the row rolled_back, the disk available."""
    source, report = failed_once(emulator_thread, tmp_path)
    later = cloud(emulator_thread, disk="error_rollbacking")
    result = rollback(later, source, report, "--resume", "--retry-failed", apply=True)
    assert result.exit_code == 0, result.output + result.stderr
    assert [r["outcome"] for r in records(report)] == ["rollback_failed", "rolled_back"]
    state = later.state()
    assert requests_of(state, ROLLBACK) == {"202": 1}
    assert state["volumes"][0]["status"] == "available"


def test_retry_failed_that_fails_again_is_rollback_failed(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    source, report = failed_once(emulator_thread, tmp_path)
    still = cloud(emulator_thread, disk="error_rollbacking", fault_rollback_error=1.0)
    result = rollback(still, source, report, "--resume", "--retry-failed", apply=True)
    assert result.exit_code == 1
    assert [r["outcome"] for r in records(report)] == ["rollback_failed", "rollback_failed"]
    assert requests_of(still.state(), ROLLBACK) == {"202": 1}
