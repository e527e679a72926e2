"""Backup-made snapshots (``autobk_snapshot_*``, ``manualbk_snapshot_*``) belong to the backup service:
the tool never sends a DELETE or a rollback for one, even when it carries a run's marker (the emulator
refuses both, as the docs say the service does). Checked for prune, cleanup, rollback and the sweep."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestrator.emulator import EmulatorThread, SeedSnapshot, SeedVolume
from orchestrator.emulator.clock import evs_time
from tests.helpers import DELETE, PROJECT, ROLLBACK, cli_args, csv_manifest, invoke, records, volume_ids

RUN = "20261201T010203Z-b0b1b2"
DISK = volume_ids(1, seed=2007)[0]
NAMED = str(uuid.uuid5(uuid.NAMESPACE_OID, "backup-named"))
BACKUPS = {
    str(uuid.uuid5(uuid.NAMESPACE_OID, f"backup-{name}")): name
    for name in ("autobk_snapshot_vbs_1a2b", "manualbk_snapshot_csbs_3c4d")
}
FAST = ("--max-attempts", "3", "--backoff-initial", "0.01", "--backoff-max", "0.05")


def sent(emu: EmulatorThread) -> dict[str, Any]:
    requests = emu.state()["requests"]
    return {route: requests[route] for route in (DELETE, ROLLBACK) if route in requests}


def world(emulator_thread: Callable[..., EmulatorThread], *, named: bool = True) -> EmulatorThread:
    """The disk holds two backup-made snapshots carrying the run's marker (old ones), and the run's own."""
    marker = {"evs_snapshot_run": RUN}
    old = evs_time(datetime.now(UTC) - timedelta(days=30))
    backups = tuple(
        SeedSnapshot(id=snapshot_id, volume_id=DISK, name=name, created_at=old, metadata=marker)
        for snapshot_id, name in BACKUPS.items()
    )
    own = (
        SeedSnapshot(
            id=NAMED,
            volume_id=DISK,
            name="pre-maint-1",
            created_at=evs_time(datetime.now(UTC) - timedelta(days=1)),
            metadata=marker,
        ),
    )
    return emulator_thread(
        volumes=(SeedVolume(volume_id=DISK),),
        snapshots=(*backups, *(own if named else ())),
        deleting_seconds=0.05,
    )


def journalled_report(path: Path, snapshot_id: str, *, sent_twice: bool = False) -> Path:
    """A journalled create report (unlike ``helpers.create_report``): one row, its ``sending`` line (two
    when ``sent_twice``) and its record, accepted as ``snapshot_id``."""
    header = {
        "type": "run",
        "run_id": RUN,
        "command": "create",
        "manifest": "m.csv",
        "rows": 1,
        "digest": "sha256:00",
        "shape": {},
        "started_at": "2026-12-01T01:02:03.000Z",
        "journal": True,
        "window": 1.0,
    }
    base = {
        "run_id": RUN,
        "row": 1,
        "volume_id": DISK,
        "project_id": PROJECT,
        "region": None,
        "name": "pre-maint-1",
        "started_at": "2026-12-01T01:02:04.000Z",
        "finished_at": "2026-12-01T01:02:04.100Z",
        "elapsed_ms": 100,
    }
    sending = {**base, "outcome": "sending", "attempts": 1}
    accepted = {**base, "outcome": "accepted", "http_status": 202, "snapshot_id": snapshot_id, "attempts": 2}
    lines = [header, sending, *([sending] if sent_twice else []), accepted]
    path.write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in lines))
    return path


def test_prune_never_deletes_a_backup_made_snapshot(
    emulator_thread: Callable[..., EmulatorThread], write: Callable[..., Path], tmp_path: Path
) -> None:
    emu = world(emulator_thread)
    report = tmp_path / "prune.jsonl"
    args = cli_args("prune", csv_manifest(write, [DISK]), endpoint=emu.url, project_id=PROJECT, report=report)
    result = invoke([*args, "--keep-within", "1h", "--allow-none", "--apply", *FAST])
    assert result.exit_code == 0, result.output + result.stderr
    assert {r["snapshot_id"] for r in records(report) if r["outcome"] == "deleted"} == {NAMED}
    assert sent(emu) == {DELETE: {"202": 1}}


def test_cleanup_never_deletes_a_backup_made_snapshot(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """The create report names a backup-made snapshot for its row: cleanup refuses it (BACKUP_SNAPSHOT);
    the run's marker on the others does not make them the run's either."""
    emu = world(emulator_thread, named=False)
    backup = next(iter(BACKUPS))
    source = journalled_report(tmp_path / "create.jsonl", backup)
    report = tmp_path / "cleanup.jsonl"
    result = invoke(
        [*cli_args("cleanup", source, endpoint=emu.url, project_id=PROJECT, report=report), "--apply", *FAST]
    )
    assert result.exit_code in (0, 1), result.output + result.stderr
    assert "BACKUP_SNAPSHOT" in {r.get("error_code") for r in records(report)}
    assert not [r for r in records(report) if r["outcome"] == "deleted"]
    assert sent(emu) == {}


@pytest.mark.no_cover
def test_rollback_never_uses_a_backup_made_snapshot(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    emu = world(emulator_thread, named=False)
    source = journalled_report(tmp_path / "create.jsonl", next(iter(BACKUPS)))
    report = tmp_path / "rollback.jsonl"
    result = invoke([*cli_args("rollback", source, endpoint=emu.url, report=report), "--apply", *FAST])
    assert result.exit_code == 1, result.output + result.stderr
    assert [(r["outcome"], r["error_code"]) for r in records(report)] == [("refused", "BACKUP_SNAPSHOT")]
    assert sent(emu) == {}


def test_the_sweep_never_deletes_a_backup_made_snapshot(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """A row sent twice (so its disk is looked up) whose disk holds backup-made snapshots with the run's
    marker: they are not the run's second snapshot; nothing is deleted."""
    emu = world(emulator_thread)
    source = journalled_report(tmp_path / "create.jsonl", NAMED, sent_twice=True)
    result = invoke(["wait", str(source), "--endpoint", emu.url, "--poll-interval", "0.1"])
    assert result.exit_code == 0, result.output + result.stderr
    assert not [r for r in records(source) if r["outcome"].startswith("duplicate")]
    assert sent(emu) == {}
