"""A marker with an empty value is not the tool's: ``evs_snapshot_run`` = "" owns nothing, for prune,
cleanup or rollback."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from orchestrator.api import evs
from orchestrator.api.views import Snapshot
from orchestrator.emulator import SeedSnapshot, SeedVolume
from orchestrator.ownership import Ownership
from tests.helpers import (
    DELETE,
    ROLLBACK,
    SNAPS,
    VOLUMES,
    cleanup,
    create_report,
    csv_manifest,
    live,
    prune,
    records,
    requests_of,
    rollback,
    snap,
    start,
    volume_ids,
)


def test_a_blank_marker_is_no_marker() -> None:
    """ "" and "  " in evs_snapshot_run: not marked, no source run, not owned; a run id still is."""
    for value in ("", "  "):
        blank = {"name": "x", "metadata": {evs.RUN_MARKER_KEY: value}}
        assert not Snapshot.parse(blank).marked()
        assert not Snapshot.parse(blank).marked(value)
        assert Snapshot.parse(blank).marker is None
        assert not Ownership().owns(Snapshot.parse(blank))
    assert Snapshot.parse({"metadata": {evs.RUN_MARKER_KEY: "run-1"}}).marked("run-1")


def test_prune_never_deletes_a_snapshot_whose_marker_is_empty(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--keep-last 1 --apply: the old owned snapshots go; older ones marked "" stay, with no record."""
    (disk,) = volume_ids(1, seed=971)
    owned = [snap(disk, d) for d in (1, 2, 3)]
    blank = [dataclasses.replace(snap(disk, d), metadata={evs.RUN_MARKER_KEY: ""}) for d in (10, 11)]
    emu = start(emulator_thread, [disk], owned + blank)
    report = tmp_path / "prune.jsonl"
    result = prune(emu, csv_manifest(write, [disk]), report, "--keep-last", "1", "--apply")
    assert result.exit_code == 0, result.output
    assert {r["snapshot_id"] for r in records(report)} == {s.id for s in owned[1:]}
    assert {s.id for s in blank} <= set(live(emu))


def empty_run_report(path: Path, snapshot_id: str, volume_id: str) -> Path:
    """A create report whose run id is "" and whose one row names ``snapshot_id``."""
    source = create_report(path, [{}], run_id="")
    lines = [orjson.loads(line) for line in source.read_bytes().splitlines()]
    lines[1].update(snapshot_id=snapshot_id, volume_id=volume_id)
    source.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return source


def test_cleanup_and_rollback_refuse_a_snapshot_whose_marker_is_empty(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """A report of run "" naming a snapshot marked "": cleanup refuses it (deletes nothing), rollback
    refuses it (sends nothing, exit 1); a reader that refuses the report itself (exit 2) also will do."""
    seeded = SeedSnapshot(
        id=SNAPS[0], volume_id=VOLUMES[0], name="pre-maint-0", metadata={evs.RUN_MARKER_KEY: ""}
    )
    emu = emulator_thread(volumes=(SeedVolume(volume_id=VOLUMES[0]),), snapshots=(seeded,))
    source = empty_run_report(tmp_path / "create.jsonl", SNAPS[0], VOLUMES[0])
    cleaned = cleanup(emu, source, tmp_path / "cleanup.jsonl", "--apply")
    assert cleaned.exit_code in (0, 1, 2), cleaned.output  # 2: a report reader that refuses run ""
    if cleaned.exit_code != 2:
        assert [r["outcome"] for r in records(tmp_path / "cleanup.jsonl")] == ["refused"]
    assert DELETE not in emu.state()["requests"]
    rolled = rollback(emu, source, tmp_path / "rollback.jsonl", "--apply")
    assert rolled.exit_code != 0, rolled.output
    assert not requests_of(emu.state(), ROLLBACK)
    assert SNAPS[0] in live(emu)
