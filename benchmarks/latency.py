"""Scenario 2: latency-bound. 3,000 rows, 100 ms latency, concurrency 100; ideal = rows x latency / concurrency.

Measured against two servers that hold each answer 100 ms: the emulator, and the null server
(``benchmarks.nullserver --latency-ms``). The emulator spends about half a millisecond of CPU on a
request, which at 1,000 requests a second queues answers on two cores whatever the client does;
the null server spends almost none, so there only the client stands between a run and the ideal.
Each run gets a fresh server; every row is answered 202 once, so the end-of-run sweep lists nothing.
The floor is the bare signed aiohttp loop (``benchmarks.contenders bare``) against the same server,
run in pairs with evs-snapshot: what the server and the machine allow a client that does nothing
else. The server's CPU per request is read from /proc for both.
``python -m benchmarks.latency [--tree PATH]`` prints the table for another checkout's evs-snapshot.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import orjson

from benchmarks.common import (
    Emulator,
    create,
    emulator,
    manifest,
    null_server,
    run_measured,
    spread,
    summary_of,
    table,
)

ROWS, LATENCY_MS, CONCURRENCY = 3000, 100, 100
TARGET = 1.15  # the whole process, against the ideal


SERVERS: dict[str, Callable[..., contextlib.AbstractContextManager[Emulator]]] = {
    "the emulator": emulator,
    "the null server": null_server,
}


def pairs(
    serve: Callable[..., contextlib.AbstractContextManager[Emulator]], repeats: int, tree: Path | None
) -> dict[str, list[float]]:
    """``repeats`` pairs against fresh servers of one kind: the bare loop, then evs-snapshot."""
    got: dict[str, list[float]] = {
        key: []
        for key in ("runs", "walls", "creates", "sweeps", "bare_work", "bare_walls", "bare_us", "evs_us")
    }
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(repeats):
            with serve("--latency-ms", str(LATENCY_MS)) as server:
                before = server.cpu()
                bare = run_measured(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.contenders",
                        "bare",
                        "--url",
                        server.url,
                        "--rows",
                        str(ROWS),
                        "--offset",
                        str(55_000_000 + repeat * ROWS),
                        "--concurrency",
                        str(CONCURRENCY),
                    ],
                    cwd=Path(__file__).parent.parent,
                )
                got["bare_us"].append((server.cpu() - before) / ROWS * 1e6)
            if bare.returncode != 0:
                raise SystemExit(f"bare loop exited {bare.returncode}: {bare.stderr.decode()[-400:]}")
            got["bare_work"].append(float(orjson.loads(bare.stdout)["seconds"]))
            got["bare_walls"].append(bare.seconds)
            report = Path(folder) / f"r{repeat}.jsonl"
            with serve("--latency-ms", str(LATENCY_MS)) as server:
                before = server.cpu()
                measured = create(
                    server.url,
                    manifest(ROWS, 50_000_000 + repeat * ROWS),
                    report,
                    "--concurrency",
                    str(CONCURRENCY),
                    tree=tree,
                )
                got["evs_us"].append((server.cpu() - before) / (ROWS + 1) * 1e6)
            if measured.returncode != 0:
                raise SystemExit(f"latency run exited {measured.returncode}")
            summary = summary_of(report)
            got["runs"].append(summary["elapsed_s"])
            got["walls"].append(measured.seconds)
            phases = summary.get("phases") or {}
            got["creates"].append(float((phases.get("create") or {}).get("seconds", 0.0)))
            got["sweeps"].append(float((phases.get("sweep") or {}).get("seconds", 0.0)))
    return got


def run(repeats: int = 5, tree: Path | None = None) -> str:
    ideal = ROWS * LATENCY_MS / 1000 / CONCURRENCY

    def versus(values: list[float]) -> str:
        return f"{sorted(values)[len(values) // 2] / ideal:.3f}"

    rows, notes = [], []
    for name, serve in SERVERS.items():
        got = pairs(serve, repeats, tree)
        rows += [
            [f"{name}: the run (sending and recording)", spread(got["runs"], 2), versus(got["runs"])],
            [f"{name}: of which the create phase", spread(got["creates"], 2), versus(got["creates"])],
            [f"{name}: of which the end-of-run sweep", spread(got["sweeps"], 2), ""],
            [
                f"{name}: **whole process** (start-up and manifest check included)",
                spread(got["walls"], 2),
                versus(got["walls"]),
            ],
            [
                f"{name}: the floor, bare signed aiohttp loop, its sending",
                spread(got["bare_work"], 2),
                versus(got["bare_work"]),
            ],
            [
                f"{name}: the floor, bare signed aiohttp loop, whole process",
                spread(got["bare_walls"], 2),
                versus(got["bare_walls"]),
            ],
        ]
        notes.append(
            f"{name}'s CPU per request: {spread(got['evs_us'], 0)} us under evs-snapshot, "
            f"{spread(got['bare_us'], 0)} us under the bare loop"
        )
    load = os.getloadavg()
    return (
        f"### 2. Latency-bound: {ROWS:,} rows, {LATENCY_MS} ms latency, concurrency {CONCURRENCY} "
        f"(ideal {ideal:.1f} s; target: the whole process within {TARGET}x)\n\n"
        + table(["measure", "seconds, median (min-max)", "vs ideal"], rows)
        + f"\n\n{repeats} pairs against each server (the bare loop, then evs-snapshot, each against a fresh "
        "server process holding every answer the latency): the emulator (`--latency-ms`), and the null server "
        "(`benchmarks.nullserver --latency-ms`, raw asyncio, a timer per answer), which costs the machine "
        "almost nothing, so the client's own cost is what stands between it and the ideal; "
        + "; ".join(notes)
        + f"; load average at the end {load[0]:.1f} (1 min), {load[1]:.1f} (5 min)."
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency")
    parser.add_argument("--tree", type=Path, default=None, help="run evs-snapshot from this checkout")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(sys.argv[1:])
    print(run(args.repeats, tree=None if args.tree is None else args.tree.resolve()))
