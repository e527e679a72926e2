"""Commands on paths the end-to-end tests leave out: cleanup's refusals and busy snapshots, validate
--online checks that cannot be made, and the group's own --version."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator import __version__
from orchestrator.emulator import EmulatorThread, SeedSnapshot, SeedVolume
from tests.helpers import (
    PROJECT,
    SNAPS,
    VOLUMES,
    cli_args,
    create_report,
    csv_manifest,
    invoke,
    marker,
    records,
    volume_ids,
)

DELETE = "DELETE /v2/{project_id}/cloudsnapshots/{snapshot_id}"


def test_cleanup_refuses_backups_blocks_busy_and_takes_up_deleting(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """cleanup --apply: a backup-named snapshot is refused, a busy one blocked, one already deleting is
    recorded deleted without a DELETE; exit 1 for the blocked row."""
    volumes = tuple(SeedVolume(volume_id=VOLUMES[i]) for i in range(3))
    snapshots = (
        SeedSnapshot(id=SNAPS[0], volume_id=VOLUMES[0], name="autobk_snapshot_vbs_1", metadata=marker()),
        SeedSnapshot(
            id=SNAPS[1], volume_id=VOLUMES[1], name="pre-maint-1", metadata=marker(), status="backing-up"
        ),
        SeedSnapshot(
            id=SNAPS[2], volume_id=VOLUMES[2], name="pre-maint-2", metadata=marker(), status="deleting"
        ),
    )
    emu = emulator_thread(volumes=volumes, snapshots=snapshots)
    source = create_report(tmp_path / "create.jsonl", [{}, {}, {}])
    report = tmp_path / "cleanup.jsonl"
    result = invoke(
        [
            *cli_args("cleanup", source, endpoint=emu.url, report=report, apply=True, no_wait=True),
            *("--max-attempts", "2", "--backoff-initial", "0.01"),
        ]
    )
    assert result.exit_code == 1, result.output
    outcomes = {r["snapshot_id"]: (r["outcome"], r["error_code"]) for r in records(report)}
    assert outcomes == {
        SNAPS[0]: ("refused", "BACKUP_SNAPSHOT"),
        SNAPS[1]: ("blocked", "SNAPSHOT_BUSY"),
        SNAPS[2]: ("deleted", None),
    }
    assert DELETE not in emu.state()["requests"]


def test_cleanup_needs_a_create_report_with_records(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """cleanup of a missing report, or of an empty one: exit 2, nothing sent."""
    emu = emulator_thread()
    missing = invoke(cli_args("cleanup", tmp_path / "missing.jsonl", endpoint=emu.url))
    assert missing.exit_code == 2
    assert "no such report" in missing.output
    blank = tmp_path / "empty.jsonl"
    blank.write_bytes(b"")
    empty = invoke(cli_args("cleanup", blank, endpoint=emu.url, report=tmp_path / "r.jsonl"))
    assert empty.exit_code == 2
    assert "the report holds no records; nothing to clean up" in empty.output
    assert emu.state()["requests"] == {}


def test_validate_online_checks_that_cannot_be_made(
    emulator_thread: Callable[..., Any], write: Callable[..., Path]
) -> None:
    """validate --online: failing snapshot listings (CHECK_FAILED) and an unknown region
    (PROJECT_NOT_FOUND) are problems of the rows, exit 1: not a crash and not a pass."""
    ids = volume_ids(2, seed=931)
    emu = emulator_thread(any_volume=True, fault_list=1.0)
    manifest = csv_manifest(write, ids)
    args = cli_args("validate", manifest, online=True, endpoint=emu.url, project_id=PROJECT)
    failing = invoke([*args, "--max-attempts", "1", "--backoff-initial", "0.01"])
    assert failing.exit_code == 1, failing.output
    assert "CHECK_FAILED" in failing.output
    region = cli_args("validate", manifest, online=True, endpoint=emu.url, iam_endpoint=emu.url)
    lookup = invoke([*region, "--region", "ap-southeast-9", "--max-attempts", "1"])
    assert lookup.exit_code == 1, lookup.output
    assert "IAM lists no project named ap-southeast-9" in lookup.output
    assert "2 with problems (PROJECT_NOT_FOUND x2)" in lookup.output


def test_version_option_prints_and_exits_0() -> None:
    """--version prints the program name and version and exits 0."""
    result = invoke(["--version"])
    assert result.exit_code == 0
    assert f"evs-snapshot, version {__version__}" in result.output
