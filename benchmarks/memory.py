"""Scenario 4 (part): peak RSS of ``create --dry-run`` as the manifest grows; it must stay flat."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.common import PROJECT, cli, manifest, median_spread, run_measured, table

SIZES = (10_000, 100_000, 1_000_000)
REPEATS = 3


def run(sizes: tuple[int, ...] = SIZES) -> str:
    rows = []
    baseline = None
    for size in sizes:
        path = manifest(size)
        peaks, seconds = [], []
        for _ in range(REPEATS if size <= 100_000 else 1):
            with tempfile.TemporaryDirectory() as folder:
                measured = run_measured(
                    cli(
                        "create",
                        str(path),
                        "--dry-run",
                        "--project-id",
                        PROJECT,
                        "--region",
                        "cn-north-4",
                        "--report",
                        str(Path(folder) / "r.jsonl"),
                    )
                )
            if measured.returncode != 0:
                raise SystemExit(f"dry run of {size} rows exited {measured.returncode}")
            peaks.append(measured.peak_rss_mb)
            seconds.append(measured.seconds)
        peak = sorted(peaks)[len(peaks) // 2]
        baseline = baseline or peak
        rows.append(
            [
                f"{size:,}",
                median_spread(peaks),
                f"{peak / baseline:.2f}",
                median_spread(seconds),
                f"{size / sorted(seconds)[len(seconds) // 2]:,.0f}",
            ]
        )
    return "### Memory: `create --dry-run` (target: under 120 MB, 1M rows within 1.3x of 10k)\n\n" + table(
        ["rows", "peak RSS MB, median (min-max)", "vs smallest", "wall s", "rows/s"], rows
    )
