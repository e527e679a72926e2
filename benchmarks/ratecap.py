"""Scenario 3: rate-capped. 3,000 rows against an emulator limit of 100 requests/s; the tool told or not."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.common import create, emulator, manifest, spread, summary_of, table

ROWS, LIMIT = 3000, 100


def run(repeats: int = 2) -> str:
    ideal = ROWS / LIMIT
    rows = []
    for label, extra, target in (
        ("limit not told", (), 1.15),
        (f"--max-rps {LIMIT}", ("--max-rps", str(LIMIT)), 1.05),
    ):
        runs, walls, throttled, failed = [], [], [], []
        for repeat in range(repeats):
            with emulator("--rate-limit", str(LIMIT)) as emu, tempfile.TemporaryDirectory() as folder:
                report = Path(folder) / "r.jsonl"
                measured = create(emu.url, manifest(ROWS, 60_000_000 + repeat * ROWS), report, *extra)
                creates = emu.state()["requests"]["POST /v2/{project_id}/cloudsnapshots"]
                summary = summary_of(report)
            runs.append(summary["elapsed_s"])
            walls.append(measured.seconds)
            failed.append(summary["outcomes"].get("failed", 0))
            throttled.append(100 * creates.get("429", 0) / sum(creates.values()))
        middle = sorted(runs)[len(runs) // 2]
        rows.append(
            [
                label,
                spread(runs, 2),
                f"{middle / ideal:.3f} (target {target})",
                spread(walls, 2),
                str(max(failed)),
                spread(throttled, 2),
            ]
        )
    return (
        f"### 3. Rate-capped: {ROWS:,} rows, emulator limit {LIMIT} requests/s (ideal {ideal:.0f} s)\n\n"
        "Targets: zero failed, under 5% of attempts throttled.\n\n"
        + table(
            [
                "variant",
                "run seconds",
                "vs ideal",
                "whole process seconds",
                "failed rows (max)",
                "throttled % of attempts",
            ],
            rows,
        )
    )
