"""Scenario 3: rate-capped. An emulator limit the tool is told (``--max-rps``) or not; two sizes.

3,000 rows at 100 requests/s, told or not; and a short run, 500 rows at 50 requests/s, not told,
where the gateway's burst (a second's worth at once) matters most: ideal = rows / limit.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.common import create, emulator, manifest, spread, summary_of, table

CASES = (
    # rows, limit, label, extra options, target (run seconds / ideal)
    (3000, 100, "limit not told", (), 1.15),
    (3000, 100, "--max-rps 100", ("--max-rps", "100"), 1.05),
    (500, 50, "short run, limit not told", (), 1.10),
)


def run(repeats: int = 3) -> str:
    rows = []
    for count, limit, label, extra, target in CASES:
        ideal = count / limit
        runs, walls, throttled, failed = [], [], [], []
        for repeat in range(repeats if count <= 500 else 2):
            with emulator("--rate-limit", str(limit)) as emu, tempfile.TemporaryDirectory() as folder:
                report = Path(folder) / "r.jsonl"
                offset = 60_000_000 + count * 10 + repeat * count
                measured = create(emu.url, manifest(count, offset), report, *extra)
                creates = emu.state()["requests"]["POST /v2/{project_id}/cloudsnapshots"]
                summary = summary_of(report)
            runs.append(summary["elapsed_s"])
            walls.append(measured.seconds)
            failed.append(summary["outcomes"].get("failed", 0))
            throttled.append(100 * creates.get("429", 0) / sum(creates.values()))
        middle = sorted(runs)[len(runs) // 2]
        rows.append(
            [
                f"{count:,} rows, limit {limit}/s: {label}",
                spread(runs, 2),
                f"{middle / ideal:.3f} (target {target})",
                spread(walls, 2),
                str(max(failed)),
                spread(throttled, 2),
            ]
        )
    return (
        "### 3. Rate-capped: an emulator limit (requests/s, burst one second's worth), told or not\n\n"
        "Targets: zero failed, under 5% of attempts throttled. Ideal = rows / limit (30 s; 10 s for "
        "the short run); the 3,000-row cases run twice, the short one three times.\n\n"
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
