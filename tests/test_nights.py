"""Eight nights of docs/runbook.md's cron (prune --keep-last 6 --apply, then create) against the per-disk limit."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    ACTION_RETRIES,
    FAST_RETRIES,
    MARKER,
    PROJECT,
    create_args,
    csv_manifest,
    invoke,
    last_per_row,
    live,
    records,
    snap,
    start,
    volume_ids,
)

NIGHTS = 8


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_eight_nights_never_hit_the_limit_nor_touch_foreign_snapshots(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Each night prune keeps 6 and create adds the 7th: every create is accepted, foreign snapshots untouched."""
    disks = volume_ids(3, seed=171)
    outside = volume_ids(1, seed=172)[0]
    seeded = [snap(disks[0], d) for d in range(1, 7)]  # already at 6 owned
    seeded += [snap(disks[1], d) for d in range(1, 10)]  # 9 owned: above the limit from an old mistake
    foreign = [
        *[
            snap(disk, 40, run=None, name="autobk_snapshot_vbs_1") for disk in disks
        ],  # backup-made: not counted
        snap(disks[2], 41, run=None, name="manualbk_snapshot_csbs_1"),
        *[snap(outside, d) for d in range(1, 8)],  # the tool's own, but its disk is not in the manifest
        snap(outside, 42, run=None, name="by-hand"),
    ]
    # The emulator deletes at once, so prune --no-wait: waiting for the 404s would only add the
    # deleter's first poll (0.2 s) to each night.
    emu = start(
        emulator_thread, [*disks, outside], seeded + foreign, creating_seconds=0.0, deleting_seconds=0.0
    )
    manifest = csv_manifest(write, disks)
    foreign_state = {s.id: live(emu)[s.id] for s in foreign}
    for night in range(1, NIGHTS + 1):
        pruned = tmp_path / f"prune-{night}.jsonl"
        prune = [
            *("prune", str(manifest), "--endpoint", emu.url, "--project-id", PROJECT),
            *("--keep-last", "6", "--apply", "--no-wait", "--report", str(pruned), *ACTION_RETRIES),
        ]
        result = invoke(prune)
        assert result.exit_code == 0, (night, result.output)
        for record in records(pruned):
            assert record["outcome"] == "deleted"
            assert record["volume_id"] in disks
            assert record["source_run"] is not None
        owned = Counter(s["volume_id"] for s in live(emu).values() if MARKER in s["metadata"])
        assert all(owned[disk] <= 6 for disk in disks), (night, owned)
        report = tmp_path / f"night-{night}.jsonl"
        result = invoke(create_args(emu.url, manifest, report, *FAST_RETRIES))
        assert result.exit_code == 0, (night, result.output)
        assert {r["outcome"] for r in last_per_row(report).values()} == {"accepted"}
        owned = Counter(s["volume_id"] for s in live(emu).values() if MARKER in s["metadata"])
        assert owned[disks[0]] == owned[disks[1]] == 7
        assert owned[disks[2]] == min(night, 7)
        assert {s.id: live(emu)[s.id] for s in foreign} == foreign_state, night
    kept_runs = {s["metadata"].get(MARKER) for s in live(emu).values() if s["volume_id"] == disks[0]}
    assert len(kept_runs - {None}) == 7  # the last seven nights' runs, one snapshot each
