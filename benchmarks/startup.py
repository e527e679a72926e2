"""Scenario 6: start-up. Wall time of ``evs-snapshot --help`` and of ``create --dry-run`` on one row
(target < 0.2 s), and the CPU of a process that connects: ``create`` of 3 rows against the emulator,
the kind of process the test suite starts about 60 times.

The CPU time of the same processes is shown too: on a shared machine the wall time also counts the
waits for a core, the CPU time only the process's own work. Instructions, the same under any load:
``valgrind --tool=callgrind --callgrind-out-file=/dev/null python -m orchestrator ...`` (its
``Collected`` total); results.md's start-up notes give them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import WORK, cli, create, dry_run, emulator, manifest, run_measured, spread, table

REPEATS = 10
CONNECTING_ROWS = 3


def run() -> str:
    WORK.mkdir(exist_ok=True)
    one = WORK / "one-row.csv"
    one.write_text("volume_id\n6d1a4e3c-2b7f-4c39-9f5e-0a1b2c3d4e5f\n", encoding="utf-8")
    rows = []
    commands: tuple[tuple[str, Callable[[str], list[str]]], ...] = (
        ("evs-snapshot --help", lambda _folder: cli("--help")),
        (
            "create --dry-run, one row",
            lambda folder: dry_run(one, folder),
        ),
    )
    for label, make in commands:
        seconds, cpu = [], []
        for _ in range(REPEATS):
            with tempfile.TemporaryDirectory() as folder:
                measured = run_measured(make(folder))
            if measured.returncode != 0:
                raise SystemExit(f"{label} exited {measured.returncode}")
            seconds.append(measured.seconds)
            cpu.append(measured.cpu_seconds)
        rows.append([label, spread(seconds, 3), spread(cpu, 3)])
    rows.append(_connecting())
    return "### 6. Start-up (target: under 0.2 s)\n\n" + table(
        ["command", f"wall seconds over {REPEATS} runs, median (min-max)", "CPU seconds, median (min-max)"],
        rows,
    )


def _connecting() -> list[str]:
    """``create`` of 3 rows (AK/SK) against ``evs-snapshot emulator --any-volume``, new disks each run;
    its wall time includes the end-of-run settle on the emulator's clock, its CPU only the process."""
    seconds, cpu = [], []
    with emulator() as server:
        for run in range(REPEATS):
            with tempfile.TemporaryDirectory() as folder:
                rows = manifest(CONNECTING_ROWS, 96_000_000 + run * CONNECTING_ROWS)
                measured = create(server.url, rows, Path(folder) / "r.jsonl")
            if measured.returncode != 0:
                raise SystemExit(f"create of {CONNECTING_ROWS} rows exited {measured.returncode}")
            seconds.append(measured.seconds)
            cpu.append(measured.cpu_seconds)
    return [f"create of {CONNECTING_ROWS} rows against the emulator", spread(seconds, 3), spread(cpu, 3)]
