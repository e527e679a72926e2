"""Scenario 1: client overhead. 5,000 rows, no emulator latency, concurrency 32, AK/SK on every request.

Contenders, interleaved in each repeat against the same emulator process: evs-snapshot (whole CLI
process, report written), the official SDK's sync client in a ThreadPoolExecutor(32), its
EvsAsyncClient, and a bare aiohttp loop (signing, no report). Each is a process of its own; rows/s
and CPU come from the whole process (start-up included, for every contender alike).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from benchmarks.common import create as create_run
from benchmarks.common import emulator, manifest, median, run_measured, spread, table

ROWS = 5000
CONCURRENCY = 32
CONTENDERS = (
    "evs-snapshot",
    "bare aiohttp loop",
    "official SDK, sync + ThreadPoolExecutor(32)",
    "official SDK, EvsAsyncClient",
)


def run(repeats: int = 3) -> str:
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in CONTENDERS}
    with emulator() as emu, tempfile.TemporaryDirectory() as folder:
        for repeat in range(repeats):
            for index, name in enumerate(CONTENDERS):
                offset = (repeat * len(CONTENDERS) + index + 1) * 1_000_000
                before = emu.cpu()
                if name == "evs-snapshot":
                    report = Path(folder) / f"r{repeat}.jsonl"
                    measured = create_run(
                        emu.url, manifest(ROWS, offset), report, "--concurrency", str(CONCURRENCY)
                    )
                else:
                    kind = {"bare aiohttp loop": "bare"}.get(
                        name, "sdk-sync" if "sync" in name else "sdk-async"
                    )
                    measured = run_measured(
                        [
                            sys.executable,
                            "-m",
                            "benchmarks.contenders",
                            kind,
                            "--url",
                            emu.url,
                            "--rows",
                            str(ROWS),
                            "--offset",
                            str(offset),
                            "--concurrency",
                            str(CONCURRENCY),
                        ]
                    )
                if measured.returncode != 0:
                    raise SystemExit(f"{name} failed: {measured.stderr.decode()[-500:]}")
                emulator_share = (emu.cpu() - before) / measured.seconds * 100
                results[name].append(
                    (ROWS / measured.seconds, measured.cpu_seconds / ROWS * 1e6, emulator_share)
                )
    ours = results["evs-snapshot"]
    rows = []
    for name in CONTENDERS:
        runs = results[name]
        ratio = [o[0] / r[0] for o, r in zip(ours, runs, strict=True)]
        rows.append(
            [
                name,
                spread([r[0] for r in runs], 0),
                spread([r[1] for r in runs], 0),
                f"{median([r[2] for r in runs]):.0f}%",
                "1.00" if name == "evs-snapshot" else f"{median(ratio):.2f}",
            ]
        )
    return (
        f"### 1. Client overhead: {ROWS:,} rows, no added latency, concurrency {CONCURRENCY}, AK/SK signing\n\n"
        "Targets: evs-snapshot at least 5x the SDK's rows/s, and at least 0.8x the bare loop's.\n\n"
        + table(
            [
                "contender",
                "rows/s, median (min-max)",
                "client CPU us/row",
                "emulator CPU (of one core)",
                "evs-snapshot rows/s / this (pairwise median)",
            ],
            rows,
        )
    )
