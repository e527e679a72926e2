"""Scenario 2: latency-bound. 3,000 rows, 100 ms emulator latency, concurrency 100; ideal = rows x latency / concurrency."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.common import create, emulator, manifest, spread, summary_of, table

ROWS, LATENCY_MS, CONCURRENCY = 3000, 100, 100


def run(repeats: int = 3) -> str:
    ideal = ROWS * LATENCY_MS / 1000 / CONCURRENCY
    runs, walls = [], []
    with emulator("--latency-ms", str(LATENCY_MS)) as emu, tempfile.TemporaryDirectory() as folder:
        for repeat in range(repeats):
            report = Path(folder) / f"r{repeat}.jsonl"
            measured = create(
                emu.url, manifest(ROWS, 50_000_000 + repeat * ROWS), report, "--concurrency", str(CONCURRENCY)
            )
            if measured.returncode != 0:
                raise SystemExit(f"latency run exited {measured.returncode}")
            runs.append(summary_of(report)["elapsed_s"])
            walls.append(measured.seconds)
    return (
        f"### 2. Latency-bound: {ROWS:,} rows, {LATENCY_MS} ms latency, concurrency {CONCURRENCY} "
        f"(ideal {ideal:.1f} s; target within 1.1x)\n\n"
        + table(
            ["measure", "seconds, median (min-max)", "vs ideal"],
            [
                [
                    "the run (sending and recording)",
                    spread(runs, 2),
                    f"{sorted(runs)[len(runs) // 2] / ideal:.3f}",
                ],
                [
                    "whole process (start-up and manifest check included)",
                    spread(walls, 2),
                    f"{sorted(walls)[len(walls) // 2] / ideal:.3f}",
                ],
            ],
        )
    )
