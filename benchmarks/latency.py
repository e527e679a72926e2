"""Scenario 2: latency-bound. 3,000 rows, 100 ms emulator latency, concurrency 100; ideal = rows x latency / concurrency.

Each run gets a fresh emulator; every row is answered 202 once, so the end-of-run sweep lists nothing.
``python -m benchmarks.latency [--tree PATH]`` prints the table for another checkout's evs-snapshot.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchmarks.common import create, emulator, manifest, spread, summary_of, table

ROWS, LATENCY_MS, CONCURRENCY = 3000, 100, 100


def run(repeats: int = 3, tree: Path | None = None) -> str:
    ideal = ROWS * LATENCY_MS / 1000 / CONCURRENCY
    runs, walls, creates, sweeps = [], [], [], []
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(repeats):
            report = Path(folder) / f"r{repeat}.jsonl"
            with emulator("--latency-ms", str(LATENCY_MS)) as emu:
                measured = create(
                    emu.url,
                    manifest(ROWS, 50_000_000 + repeat * ROWS),
                    report,
                    "--concurrency",
                    str(CONCURRENCY),
                    tree=tree,
                )
            if measured.returncode != 0:
                raise SystemExit(f"latency run exited {measured.returncode}")
            summary = summary_of(report)
            runs.append(summary["elapsed_s"])
            walls.append(measured.seconds)
            phases = summary.get("phases") or {}
            creates.append(float((phases.get("create") or {}).get("seconds", 0.0)))
            sweeps.append(float((phases.get("sweep") or {}).get("seconds", 0.0)))
    rows = [
        ["the run (sending and recording)", spread(runs, 2), f"{sorted(runs)[len(runs) // 2] / ideal:.3f}"],
        [
            "of which the create phase",
            spread(creates, 2),
            f"{sorted(creates)[len(creates) // 2] / ideal:.3f}",
        ],
        ["of which the end-of-run sweep", spread(sweeps, 2), ""],
        [
            "whole process (start-up and manifest check included)",
            spread(walls, 2),
            f"{sorted(walls)[len(walls) // 2] / ideal:.3f}",
        ],
    ]
    return (
        f"### 2. Latency-bound: {ROWS:,} rows, {LATENCY_MS} ms latency, concurrency {CONCURRENCY} "
        f"(ideal {ideal:.1f} s; target within 1.1x)\n\n"
        + table(["measure", "seconds, median (min-max)", "vs ideal"], rows)
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency")
    parser.add_argument("--tree", type=Path, default=None, help="run evs-snapshot from this checkout")
    args = parser.parse_args(sys.argv[1:])
    print(run(tree=None if args.tree is None else args.tree.resolve()))
