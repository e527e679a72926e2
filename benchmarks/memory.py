"""Scenario 4: peak RSS of ``create --dry-run`` as the manifest grows, and of a real 200,000-row run."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.common import create, dry_run, emulator, manifest, run_measured, spread, table

DRY_SIZES = (10_000, 1_000_000)
REAL_ROWS = 200_000


def run(repeats: int = 3) -> str:
    rows = []
    baseline = None
    for size in DRY_SIZES:
        peaks, seconds = [], []
        for _ in range(repeats if size <= 100_000 else 1):
            with tempfile.TemporaryDirectory() as folder:
                measured = run_measured(dry_run(manifest(size), folder))
            if measured.returncode != 0:
                raise SystemExit(f"dry run of {size} rows exited {measured.returncode}")
            peaks.append(measured.peak_rss_mb)
            seconds.append(measured.seconds)
        peak = sorted(peaks)[len(peaks) // 2]
        baseline = baseline or peak
        rows.append(
            [f"create --dry-run, {size:,} rows", spread(peaks), f"{peak / baseline:.2f}", spread(seconds, 1)]
        )
    with emulator() as emu, tempfile.TemporaryDirectory() as folder:
        measured = create(
            emu.url, manifest(REAL_ROWS, 70_000_000), Path(folder) / "r.jsonl", "--concurrency", "32"
        )
    if measured.returncode != 0:
        raise SystemExit(f"the {REAL_ROWS}-row run exited {measured.returncode}")
    rows.append(
        [
            f"create against the emulator, {REAL_ROWS:,} rows",
            f"{measured.peak_rss_mb:.1f}",
            f"{measured.peak_rss_mb / (baseline or 1):.2f}",
            f"{measured.seconds:.1f}",
        ]
    )
    return (
        "### 4. Memory (targets: under 120 MB at every size; 1,000,000 dry-run rows within 1.3x of 10,000)\n\n"
        + table(["run", "peak RSS MB, median (min-max)", "vs 10,000-row dry run", "wall seconds"], rows)
    )
