"""``rollback --retry-failed``: a row whose last record is ``rollback_failed`` (its disk left
``error_rollbacking``) is rolled back again with ``--apply --resume --retry-failed``; without the
flag it stays blocked and nothing is sent, as before (the API allows a rollback from that state)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from orchestrator.emulator import EmulatorThread, SeedSnapshot, SeedVolume
from tests.helpers import PROJECT, cli_args, invoke, records, requests_of

RUN = "20261127T035432Z-abc123"
VOLUME = str(uuid.UUID(int=0xE001, version=4))
SNAP = str(uuid.UUID(int=0xE101, version=4))
ROLLBACK = "POST /v2/{project_id}/cloudsnapshots/{snapshot_id}/rollback"
FAST = ("--max-attempts", "6", "--backoff-initial", "0.05", "--backoff-max", "0.3", "--settle", "0.5")
FAST_WAIT = ("--poll-interval", "0.05", "--wait-timeout", "20s")


def create_report(path: Path) -> Path:
    header = {
        "type": "run",
        "run_id": RUN,
        "command": "create",
        "manifest": "m.csv",
        "rows": 1,
        "digest": "sha256:00",
        "shape": {},
        "started_at": "2026-11-27T03:54:32.000Z",
    }
    record = {
        "run_id": RUN,
        "row": 1,
        "volume_id": VOLUME,
        "project_id": PROJECT,
        "region": None,
        "name": "pre-maint-0",
        "outcome": "accepted",
        "http_status": 202,
        "snapshot_id": SNAP,
        "attempts": 1,
        "started_at": "2026-11-27T03:54:33.000Z",
        "finished_at": "2026-11-27T03:54:33.100Z",
        "elapsed_ms": 100,
    }
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in (header, record)))
    return path


def world(emulator_thread: Callable[..., EmulatorThread], **knobs: Any) -> EmulatorThread:
    return emulator_thread(
        volumes=(SeedVolume(volume_id=VOLUME, status=knobs.pop("disk", "available")),),
        snapshots=(
            SeedSnapshot(id=SNAP, volume_id=VOLUME, name="pre-maint-0", metadata={"evs_snapshot_run": RUN}),
        ),
        rollback_seconds=0.2,
        **knobs,
    )


def rollback(emu: EmulatorThread, source: Path, report: Path, *extra: str) -> Any:
    return invoke([*cli_args("rollback", source, endpoint=emu.url, report=report), *FAST, *FAST_WAIT, *extra])


def test_without_retry_failed_the_row_stays_blocked(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """rollback_failed, then --apply --resume: the disk in error_rollbacking blocks the row (the message
    names --retry-failed) and nothing is sent, as before."""
    source = create_report(tmp_path / "create.jsonl")
    report = tmp_path / "rollback.jsonl"
    failing = world(emulator_thread, fault_rollback_error=1.0)
    first = rollback(failing, source, report, "--apply")
    assert first.exit_code == 1, first.output + first.stderr
    assert [r["outcome"] for r in records(report)] == ["rollback_failed"]

    # the same cloud, later: the disk is error_rollbacking, the snapshot available, rollbacks work again
    cloud = world(emulator_thread, disk="error_rollbacking")
    blocked = rollback(cloud, source, report, "--apply", "--resume")
    assert blocked.exit_code == 1, blocked.output + blocked.stderr
    last = records(report)[-1]
    assert (last["outcome"], last["error_code"]) == ("blocked", "VOLUME_NOT_AVAILABLE")
    assert "--retry-failed" in last["error_message"]
    assert ROLLBACK not in cloud.state()["requests"]


def test_retry_failed_rolls_back_a_disk_left_error_rollbacking(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """rollback_failed, then --apply --resume --retry-failed: one rollback sent, the row rolled_back."""
    source = create_report(tmp_path / "create.jsonl")
    report = tmp_path / "rollback.jsonl"
    failing = world(emulator_thread, fault_rollback_error=1.0)
    assert rollback(failing, source, report, "--apply").exit_code == 1
    cloud = world(emulator_thread, disk="error_rollbacking")
    result = rollback(cloud, source, report, "--apply", "--resume", "--retry-failed")
    assert result.exit_code == 0, result.output + result.stderr
    assert [r["outcome"] for r in records(report)] == ["rollback_failed", "rolled_back"]
    state = cloud.state()
    assert requests_of(state, ROLLBACK) == {"202": 1}
    assert state["volumes"][0]["status"] == "available"


def test_retry_failed_that_fails_again_is_rollback_failed(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    source = create_report(tmp_path / "create.jsonl")
    report = tmp_path / "rollback.jsonl"
    failing = world(emulator_thread, fault_rollback_error=1.0)
    assert rollback(failing, source, report, "--apply").exit_code == 1
    still = world(emulator_thread, disk="error_rollbacking", fault_rollback_error=1.0)
    result = rollback(still, source, report, "--apply", "--resume", "--retry-failed")
    assert result.exit_code == 1
    assert [r["outcome"] for r in records(report)] == ["rollback_failed", "rollback_failed"]
    assert requests_of(still.state(), ROLLBACK) == {"202": 1}
