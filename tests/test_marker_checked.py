"""The metadata marker, checked: prune owns a snapshot only when its evs_snapshot_run value is a
well-formed run id of the tool (config.RunIdentity); the marker is metadata anyone with EVS write
access can set, so a value the tool never writes owns nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator.api.views import Snapshot
from orchestrator.config import RunIdentity
from orchestrator.emulator import EmulatorThread, SeedSnapshot, SeedVolume
from orchestrator.ownership import Ownership
from tests.helpers import PROJECT, cli_args, csv_manifest, invoke, records, snap, volume_ids

DISK = volume_ids(1, seed=2003)[0]
GOOD = "20261101T000000Z-1a2b3c"


@pytest.mark.parametrize(
    ("marker", "owned"),
    [
        (GOOD, True),
        (RunIdentity.new(datetime(2026, 12, 7, 1, 2, 3, tzinfo=UTC)).run_id[:17] + "9f8e7d", True),
        ("run-1", False),
        ("x", False),
        ("20261101T000000Z-1A2B3C", False),  # the tool writes lower-case hex
        ("20261101T000000Z-1a2b3c ", False),
        ("20261101T000000Z-1a2b3c-extra", False),
        ("2026-11-01T00:00:00Z-1a2b3c", False),
        ("20261399T999999Z-1a2b3c", False),  # the shape, but no real time: the tool never writes it
        ("20260230T250000Z-1a2b3c", False),
        ("00000000T000000Z-000000", False),
    ],
)
def test_only_a_well_formed_run_id_owns(marker: str, owned: bool) -> None:
    snapshot = Snapshot.parse({"id": "s", "name": "n", "metadata": {"evs_snapshot_run": marker}})
    assert RunIdentity.well_formed(marker) is owned
    assert Ownership().owns(snapshot) is owned


def seeded(days: float, marker: str) -> SeedSnapshot:
    """A snapshot of DISK ``days`` old whose marker holds ``marker``."""
    return dataclasses.replace(snap(DISK, days), metadata={"evs_snapshot_run": marker})


@pytest.mark.no_cover
def test_prune_leaves_snapshots_whose_marker_is_not_a_run_id(
    emulator_thread: Callable[..., EmulatorThread], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Four snapshots of one disk: two carry a run id, two a value someone else set (older ones). With
    --keep-last 1, prune deletes only the older run's snapshot; the forged ones stay."""
    newest, older = seeded(1, GOOD), seeded(5, "20261001T000000Z-abcdef")
    forged = [seeded(9, "run-1"), seeded(10, "anything")]
    emu = emulator_thread(
        volumes=(SeedVolume(volume_id=DISK),), snapshots=(newest, older, *forged), deleting_seconds=0.05
    )
    report = tmp_path / "prune.jsonl"
    result = invoke(
        [
            *cli_args(
                "prune", csv_manifest(write, [DISK]), endpoint=emu.url, project_id=PROJECT, report=report
            ),
            *("--keep-last", "1", "--apply"),
        ]
    )
    assert result.exit_code == 0, result.output + result.stderr
    assert {r["snapshot_id"]: r["outcome"] for r in records(report)} == {older.id: "deleted"}
    assert {s["id"] for s in emu.state()["snapshots"]} == {newest.id, *(s.id for s in forged)}
