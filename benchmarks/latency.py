"""Scenario 2: latency-bound. 3,000 rows, 100 ms emulator latency, concurrency 100; ideal = rows x latency / concurrency.

Each run gets a fresh emulator; every row is answered 202 once, so the end-of-run sweep lists nothing.
The floor is the bare signed aiohttp loop (``benchmarks.contenders bare``) against the same emulator,
run in pairs with evs-snapshot: what the emulator and the machine allow a client that does nothing
else. The emulator's CPU per request is read from /proc for both.
``python -m benchmarks.latency [--tree PATH]`` prints the table for another checkout's evs-snapshot.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import orjson

from benchmarks.common import create, emulator, manifest, run_measured, spread, summary_of, table

ROWS, LATENCY_MS, CONCURRENCY = 3000, 100, 100
TARGET = 1.15  # the whole process, against the ideal


def run(repeats: int = 5, tree: Path | None = None) -> str:
    ideal = ROWS * LATENCY_MS / 1000 / CONCURRENCY
    runs, walls, creates, sweeps, bare_work, bare_walls = [], [], [], [], [], []
    emulator_us: dict[str, list[float]] = {"bare": [], "evs": []}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(repeats):
            with emulator("--latency-ms", str(LATENCY_MS)) as emu:
                before = emu.cpu()
                bare = run_measured(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.contenders",
                        "bare",
                        "--url",
                        emu.url,
                        "--rows",
                        str(ROWS),
                        "--offset",
                        str(55_000_000 + repeat * ROWS),
                        "--concurrency",
                        str(CONCURRENCY),
                    ],
                    cwd=Path(__file__).parent.parent,
                )
                emulator_us["bare"].append((emu.cpu() - before) / ROWS * 1e6)
            if bare.returncode != 0:
                raise SystemExit(f"bare loop exited {bare.returncode}: {bare.stderr.decode()[-400:]}")
            bare_work.append(float(orjson.loads(bare.stdout)["seconds"]))
            bare_walls.append(bare.seconds)
            report = Path(folder) / f"r{repeat}.jsonl"
            with emulator("--latency-ms", str(LATENCY_MS)) as emu:
                before = emu.cpu()
                measured = create(
                    emu.url,
                    manifest(ROWS, 50_000_000 + repeat * ROWS),
                    report,
                    "--concurrency",
                    str(CONCURRENCY),
                    tree=tree,
                )
                emulator_us["evs"].append((emu.cpu() - before) / (ROWS + 1) * 1e6)
            if measured.returncode != 0:
                raise SystemExit(f"latency run exited {measured.returncode}")
            summary = summary_of(report)
            runs.append(summary["elapsed_s"])
            walls.append(measured.seconds)
            phases = summary.get("phases") or {}
            creates.append(float((phases.get("create") or {}).get("seconds", 0.0)))
            sweeps.append(float((phases.get("sweep") or {}).get("seconds", 0.0)))

    def versus(values: list[float]) -> str:
        return f"{sorted(values)[len(values) // 2] / ideal:.3f}"

    rows = [
        ["the run (sending and recording)", spread(runs, 2), versus(runs)],
        ["of which the create phase", spread(creates, 2), versus(creates)],
        ["of which the end-of-run sweep", spread(sweeps, 2), ""],
        ["whole process (start-up and manifest check included)", spread(walls, 2), versus(walls)],
        ["the floor: bare signed aiohttp loop, its sending", spread(bare_work, 2), versus(bare_work)],
        ["the floor: bare signed aiohttp loop, whole process", spread(bare_walls, 2), versus(bare_walls)],
    ]
    load = os.getloadavg()
    return (
        f"### 2. Latency-bound: {ROWS:,} rows, {LATENCY_MS} ms latency, concurrency {CONCURRENCY} "
        f"(ideal {ideal:.1f} s; target: the whole process within {TARGET}x)\n\n"
        + table(["measure", "seconds, median (min-max)", "vs ideal"], rows)
        + f"\n\n{repeats} pairs (the bare loop, then evs-snapshot, each against a fresh emulator); the "
        f"emulator's CPU per request: {spread(emulator_us['evs'], 0)} us under evs-snapshot, "
        f"{spread(emulator_us['bare'], 0)} us under the bare loop; load average at the end "
        f"{load[0]:.1f} (1 min), {load[1]:.1f} (5 min)."
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency")
    parser.add_argument("--tree", type=Path, default=None, help="run evs-snapshot from this checkout")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(sys.argv[1:])
    print(run(args.repeats, tree=None if args.tree is None else args.tree.resolve()))
