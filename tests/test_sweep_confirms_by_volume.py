"""The sweep never takes one offset-paged listing as proof that a row has a single snapshot: every
row whose create was in doubt (sent twice by the journal) is confirmed by a volume_id-filtered lookup;
the paged listing only finds candidates (issue 20). Here ``--list-shift`` makes the second page of the
project's list skip one of a doubted row's two snapshots (a late commit of its resend)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestrator.emulator import EmulatorThread, SeedSnapshot, SeedVolume
from tests.helpers import DELETE, PROJECT, invoke, records, requests_of, volume_ids

RUN = "20261201T010203Z-0f1e2d"
DISK, QUIET = volume_ids(2, seed=2006)
NAMED, LATE = (str(uuid.uuid5(uuid.NAMESPACE_OID, f"sweep-{i}")) for i in range(2))
OTHERS = 1000  # one full page of other snapshots, newer than the run's: the run's come on page 2
LOOKUP_OR_LIST = "GET /v2/{project_id}/cloudsnapshots/detail"


def line(row: int, outcome: str, volume: str, snapshot: str | None, attempts: int = 1) -> dict[str, Any]:
    return {
        "run_id": RUN,
        "row": row,
        "volume_id": volume,
        "project_id": PROJECT,
        "region": None,
        "name": f"pre-maint-{row}",
        "outcome": outcome,
        "http_status": 202 if snapshot else None,
        "snapshot_id": snapshot,
        "attempts": attempts,
        "started_at": "2026-12-01T01:02:04.000Z",
        "finished_at": "2026-12-01T01:02:04.100Z",
        "elapsed_ms": 100,
    }


def journalled_report(path: Path) -> Path:
    """A journalled create report (unlike ``helpers.create_report``). Row 1 was sent twice (the first
    answer lost, the lookup saw nothing in time) and accepted as NAMED; its first send committed late as
    LATE. Row 2 was sent once."""
    header = {
        "type": "run",
        "run_id": RUN,
        "command": "create",
        "manifest": "m.csv",
        "rows": 2,
        "digest": "sha256:00",
        "shape": {},
        "started_at": "2026-12-01T01:02:03.000Z",
        "journal": True,
        "window": 10.0,
    }
    lines = [
        header,
        line(1, "sending", DISK, None, 1),
        line(2, "sending", QUIET, None, 1),
        line(2, "accepted", QUIET, str(uuid.uuid5(uuid.NAMESPACE_OID, "sweep-quiet"))),
        line(1, "sending", DISK, None, 2),
        line(1, "accepted", DISK, NAMED, 2),
    ]
    path.write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in lines))
    return path


def world(emulator_thread: Callable[..., EmulatorThread]) -> EmulatorThread:
    marker = {"evs_snapshot_run": RUN}
    run_snapshots = (
        SeedSnapshot(
            id=NAMED,
            volume_id=DISK,
            name="pre-maint-1",
            created_at="2026-12-01T01:02:10.000000",
            metadata=marker,
        ),
        SeedSnapshot(
            id=LATE,
            volume_id=DISK,
            name="pre-maint-1",
            created_at="2026-12-01T01:02:20.000000",
            metadata=marker,
        ),
        SeedSnapshot(
            id=str(uuid.uuid5(uuid.NAMESPACE_OID, "sweep-quiet")),
            volume_id=QUIET,
            name="pre-maint-2",
            created_at="2026-12-01T01:02:05.000000",
            metadata=marker,
        ),
    )
    others = tuple(
        SeedSnapshot(
            id=str(uuid.UUID(int=0xF0000 + index, version=4)),
            volume_id=QUIET,
            name=f"other-{index}",
            created_at=f"2026-12-02T{index // 3600:02d}:{index // 60 % 60:02d}:{index % 60:02d}.000000",
        )
        for index in range(OTHERS)
    )
    return emulator_thread(
        volumes=(SeedVolume(volume_id=DISK), SeedVolume(volume_id=QUIET)),
        snapshots=(*run_snapshots, *others),
        list_shift=1,
        deleting_seconds=0.05,
    )


@pytest.mark.no_cover
def test_wait_sweep_confirms_a_doubted_row_by_its_volume(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """The listing's page 2 skips LATE (shifted past the page boundary); the lookup by volume_id finds
    it: it is deleted as a duplicate, NAMED is kept, the disk ends with one snapshot of the run."""
    emu = world(emulator_thread)
    report = journalled_report(tmp_path / "create.jsonl")
    result = invoke(["wait", str(report), "--endpoint", emu.url, "--poll-interval", "0.1"])
    assert result.exit_code == 0, result.output + result.stderr
    sides = [r for r in records(report) if r["outcome"] in ("duplicate_deleted", "duplicate_found")]
    assert [(r["row"], r["snapshot_id"], r["outcome"]) for r in sides] == [(1, LATE, "duplicate_deleted")]
    state = emu.state()
    assert requests_of(state, DELETE) == {"202": 1}
    ours = [s["id"] for s in state["snapshots"] if s["volume_id"] == DISK and s["status"] != "deleting"]
    assert ours == [NAMED]
