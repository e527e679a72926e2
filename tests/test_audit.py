"""audit: GETs only; exit 1 naming each disk without a recent available snapshot of the tool."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers import ACTION_RETRIES, PROJECT, csv_manifest, invoke, snap, start, volume_ids


def audit(emu: Any, manifest: Path, *extra: str, env: dict[str, str] | None = None) -> Any:
    return invoke(
        ["audit", str(manifest), "--endpoint", emu.url, "--project-id", PROJECT, *ACTION_RETRIES, *extra], env
    )


def test_audit_names_each_disk_without_a_recent_snapshot(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Fresh disks pass; stale, foreign-only, error-only and bare disks are listed with ages; exit 1."""
    fresh, stale, foreign, errored, bare, unlisted = volume_ids(6, seed=161)
    seeds = [
        snap(fresh, 0.5, run="run-a"),
        snap(fresh, 9, run="run-b"),
        snap(stale, 3),
        snap(foreign, 0.1, run=None, name="by-hand"),
        snap(foreign, 0.1, run=None, name="autobk_snapshot_1"),
        snap(errored, 0.2, status="error"),
        snap(errored, 5),
        snap(unlisted, 30),
    ]
    emu = start(emulator_thread, [fresh, stale, foreign, errored, bare, unlisted], seeds)
    manifest = csv_manifest(write, [fresh, stale, foreign, errored, bare])
    metrics = tmp_path / "metrics.prom"
    summary = tmp_path / "summary.json"
    args = ["--max-age", "26h", "--metrics-file", str(metrics), "--summary-json", str(summary)]
    result = audit(emu, manifest, *args)
    assert result.exit_code == 1, result.output
    lines = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("volume ")}
    assert set(lines) == {stale, foreign, errored, bare}
    assert "(3d old, created" in lines[stale]
    assert "no available snapshot of the tool" in lines[foreign]
    assert "no available snapshot of the tool" in lines[bare]
    assert "(5d old, created" in lines[errored]
    assert "newest of any state is error" in lines[errored]
    assert "5 volumes: 1 with a snapshot of the tool younger than 1d2h, 4 without" in result.stdout
    assert 'evs_snapshot_audit_volumes_missing{command="audit"} 4' in metrics.read_text()
    assert 'evs_snapshot_exit_code{command="audit"} 1' in metrics.read_text()
    data = orjson.loads(summary.read_bytes())
    assert data["volumes_missing"] == 4
    assert {item["volume_id"] for item in data["missing"]} == {stale, foreign, errored, bare}
    requests = emu.state()["requests"]
    assert all(route.startswith("GET ") for route in requests), requests
    assert sum(requests["GET /v2/{project_id}/cloudsnapshots/detail"].values()) == 1


@pytest.mark.no_cover
def test_audit_passes_and_keeps_other_commands_metrics(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Every disk fresh: exit 0 and missing 0; other commands' series in the metrics file are kept."""
    disks = volume_ids(3, seed=162)
    emu = start(emulator_thread, disks, [snap(disk, 0.2) for disk in disks])
    metrics = tmp_path / "metrics.prom"
    metrics.write_text(
        '# HELP evs_snapshot_exit_code x\n# TYPE evs_snapshot_exit_code gauge\nevs_snapshot_exit_code{command="create"} 0\n'
    )
    result = audit(emu, csv_manifest(write, disks), "--max-age", "1d", "--metrics-file", str(metrics))
    assert result.exit_code == 0, result.output
    text = metrics.read_text()
    assert 'evs_snapshot_audit_volumes_missing{command="audit"} 0' in text
    assert 'evs_snapshot_exit_code{command="create"} 0' in text
    assert 'evs_snapshot_last_success_timestamp_seconds{command="audit"}' in text
    result = audit(emu, csv_manifest(write, disks), "--max-age", "1h")
    assert result.exit_code == 1


def test_audit_listing_refused_or_failing_is_exit_3(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A refused or failing listing is never "every disk is fine": exit 3 with the cause."""
    disks = volume_ids(2, seed=163)
    emu = start(emulator_thread, disks, [snap(disk, 0.2) for disk in disks])
    manifest = csv_manifest(write, disks)
    result = audit(emu, manifest, "--max-age", "1d", env={"HUAWEICLOUD_SDK_SK": "x" * 40})
    assert result.exit_code == 3, result.output
    assert "credentials refused" in result.output
    failing = start(emulator_thread, disks, [snap(disk, 0.2) for disk in disks], fault_list=1.0)
    metrics = tmp_path / "metrics.prom"
    result = audit(failing, manifest, "--max-age", "1d", "--metrics-file", str(metrics))
    assert result.exit_code == 3, result.output
    assert "nothing was audited" in result.output
    assert 'evs_snapshot_exit_code{command="audit"} 3' in metrics.read_text()  # the alert still fires
    assert invoke(["audit", str(manifest), "--endpoint", emu.url]).exit_code == 2  # --max-age is required
