"""Scenario 1: client overhead. 5,000 rows, no emulator latency, concurrency 32, AK/SK on every request.

Contenders, interleaved in each repeat: evs-snapshot (whole CLI process, report written, quota
pre-flight and end-of-run phases included), the official SDK's sync client in a ThreadPoolExecutor(32), its EvsAsyncClient, and
a bare aiohttp loop (signing, no report). Each is a process of its own, and each run gets a fresh
emulator process, so every run finds the same empty project (every row is answered 202 once, so
the sweep has nothing to list). rows/s and CPU come from the whole process (start-up included,
for every contender alike).

Scenario 1b (``python -m benchmarks null``): the same job against ``benchmarks.nullserver``, a
server that answers 202 at once and costs next to nothing, so the client's own cost sets the pace;
evs-snapshot against the bare loop only.

``python -m benchmarks.overhead [--null] [--tree PATH ...] [--repeats N]`` prints the table without
writing results.md; each ``--tree`` adds an evs-snapshot from another checkout (say ``git worktree
add /tmp/old 475e429``), run against this checkout's emulator and interleaved with the others.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.common import Emulator, emulator, manifest, median, null_server, run_measured, spread, table
from benchmarks.common import create as create_run

ROWS = 5000
CONCURRENCY = 32
KINDS = {
    "bare aiohttp loop": "bare",
    "official SDK, sync + ThreadPoolExecutor(32)": "sdk-sync",
    "official SDK, EvsAsyncClient": "sdk-async",
}


def run(repeats: int = 3, trees: Sequence[Path | None] = (None,)) -> str:
    """Scenario 1's table, against the emulator."""
    return (
        f"### 1. Client overhead: {ROWS:,} rows, no added latency, concurrency {CONCURRENCY}, AK/SK signing\n\n"
        "Targets: evs-snapshot at least 5x the SDK's rows/s, and at least 0.8x the bare loop's. "
        "Each run has a fresh emulator; evs-snapshot's run includes its pre-flight quota check and its "
        "end-of-run phases (no sweep listing: every row is answered 202 once).\n\n"
        + measure(repeats, trees, KINDS, emulator)
    )


def run_null(repeats: int = 5, trees: Sequence[Path | None] = (None,)) -> str:
    """Scenario 1b's table: against a server that costs nothing, evs-snapshot and the bare loop."""
    return (
        f"### 1b. Client overhead against a server that costs nothing: {ROWS:,} rows, concurrency "
        f"{CONCURRENCY}, AK/SK signing\n\n"
        "Target: evs-snapshot at least 0.85x the bare loop's rows/s (pairs of one repeat). The server "
        "(`benchmarks.nullserver`, raw asyncio) answers each create 202 and the quota check 200 at "
        "once, a fresh process per run; both clients are whole processes, start-up included.\n\n"
        + measure(repeats, trees, {"bare aiohttp loop": "bare"}, null_server)
    )


def measure(
    repeats: int,
    trees: Sequence[Path | None],
    kinds: dict[str, str],
    server: Callable[[], contextlib.AbstractContextManager[Emulator]],
) -> str:
    """The table of one server, every contender's runs interleaved in each repeat.

    ``trees`` are the checkouts whose evs-snapshot runs (``None``: this one); ratios are the first's.
    """
    ours = [_ours(tree) for tree in trees]
    contenders = [*ours, *kinds]
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(repeats):
            for index, name in enumerate(contenders):
                offset = (repeat * len(contenders) + index + 1) * 1_000_000
                with server() as emu:
                    before = emu.cpu()
                    if name in kinds:
                        measured = run_measured(
                            [
                                sys.executable,
                                "-m",
                                "benchmarks.contenders",
                                kinds[name],
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
                    else:
                        report = Path(folder) / f"r{repeat}-{index}.jsonl"
                        measured = create_run(
                            emu.url,
                            manifest(ROWS, offset),
                            report,
                            "--concurrency",
                            str(CONCURRENCY),
                            tree=trees[ours.index(name)],
                        )
                    emulator_share = (emu.cpu() - before) / measured.seconds * 100
                if measured.returncode != 0:
                    raise SystemExit(f"{name} failed: {measured.stderr.decode()[-500:]}")
                results[name].append(
                    (ROWS / measured.seconds, measured.cpu_seconds / ROWS * 1e6, emulator_share)
                )
    reference = results[ours[0]]
    rows = []
    for name in contenders:
        runs = results[name]
        ratio = [o[0] / r[0] for o, r in zip(reference, runs, strict=True)]
        rows.append(
            [
                name,
                spread([r[0] for r in runs], 0),
                spread([r[1] for r in runs], 0),
                f"{median([r[2] for r in runs]):.0f}%",
                "1.00" if name == ours[0] else f"{median(ratio):.2f}",
            ]
        )
    return table(
        [
            "contender",
            "rows/s, median (min-max)",
            "client CPU us/row",
            "server CPU (of one core)",
            f"{ours[0]} rows/s / this (pairwise median)",
        ],
        rows,
    )


def _ours(tree: Path | None) -> str:
    return "evs-snapshot" if tree is None else f"evs-snapshot ({tree})"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead")
    parser.add_argument(
        "--tree",
        type=Path,
        action="append",
        help="run evs-snapshot from this checkout (repeatable; ratios are taken for the first)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--null", action="store_true", help="scenario 1b: against benchmarks.nullserver")
    args = parser.parse_args(sys.argv[1:])
    trees = [tree.resolve() for tree in args.tree] if args.tree else [None]
    print((run_null if args.null else run)(args.repeats, trees))
