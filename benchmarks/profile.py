"""Where scenario 1's CPU goes: ``python -m benchmarks.profile [--tree PATH] [--rows N] [--top N]``.

Each run gets a fresh emulator process (so the end-of-run sweep lists only the run's own snapshots,
one list request per 1000), and the client is a whole ``create`` process, AK/SK, concurrency 32:

- CPU per row: the process's user+system CPU over ``--rows`` rows, and the marginal cost of a row,
  ``(CPU(N rows) - CPU(1 row)) / (N - 1)``, which leaves start-up and the manifest check's fixed
  cost out (the median of ``--repeats`` runs of each);
- one more run under cProfile: the functions with the most own time, and own time by package.

``--tree`` runs another checkout's client (``git worktree add /tmp/old 475e429``, then
``--tree /tmp/old``) with this interpreter, against this checkout's emulator, so two commits can be
compared on the same machine; repeat it to interleave the runs of several checkouts.
"""

from __future__ import annotations

import argparse
import pstats
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Measured,
    create,
    emulator,
    manifest,
    null_server,
    run_measured,
    spread,
    summary_of,
    table,
)

CONCURRENCY = 32


def measure(
    rows: int, offset: int, tree: Path | None, prefix: tuple[str, ...] = (), *, null: bool = False
) -> tuple[Measured, dict[str, Any]]:
    with null_server() if null else emulator() as emu, tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "r.jsonl"
        measured = create(
            emu.url,
            manifest(rows, offset),
            report,
            "--concurrency",
            str(CONCURRENCY),
            prefix=prefix,
            tree=tree,
        )
        if measured.returncode != 0:
            raise SystemExit(f"create exited {measured.returncode}: {measured.stderr.decode()[-600:]}")
        return measured, summary_of(report)


def package(filename: str) -> str:
    """A short name for where a profiled function lives: our module, a library, or the stdlib."""
    if filename.startswith(("~", "<")):
        return "builtins (C)"
    parts = Path(filename).parts
    for anchor in ("orchestrator", "site-packages"):
        if anchor in parts:
            index = parts.index(anchor)
            if anchor == "orchestrator":
                return "orchestrator/" + "/".join(parts[index + 1 :])
            return parts[index + 1].split(".")[0].removesuffix(".py")
    if "asyncio" in parts:
        return "asyncio"
    return "stdlib: " + Path(filename).stem


def profile(rows: int, tree: Path | None, top: int, *, null: bool = False) -> str:
    """One run under cProfile: the functions with the most own time, and own time by package."""
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "create.prof"
        measure(rows, 95_000_000, tree, ("-m", "cProfile", "-o", str(output)), null=null)
        stats = pstats.Stats(str(output))
    raw = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values())
    by_own = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)[:top]
    functions = [
        [
            f"`{package(filename)}:{line} {name}`",
            f"{own / rows * 1e6:.1f}",
            f"{cumulative / rows * 1e6:.1f}",
            f"{calls / rows:.2f}",
        ]
        for (filename, line, name), (_, calls, own, cumulative, _) in by_own
    ]
    packages: defaultdict[str, float] = defaultdict(float)
    for (filename, _, _), entry in raw.items():
        packages[package(filename)] += entry[2]
    grouped = [
        [name, f"{own / rows * 1e6:.1f}", f"{own / total * 100:.1f}%"]
        for name, own in sorted(packages.items(), key=lambda item: item[1], reverse=True)[:top]
    ]
    return (
        f"One run under cProfile ({total / rows * 1e6:.0f} us/row of profiled time: cProfile about "
        "doubles it; coroutine calls count each resumption):\n\n"
        + table(["function (most own time)", "own us/row", "cumulative us/row", "calls/row"], functions)
        + "\n\n"
        + table(["where", "own us/row", "share"], grouped)
    )


def measure_bare(rows: int, offset: int, *, null: bool = False) -> Measured:
    """The bare aiohttp loop of scenario 1 (``benchmarks.contenders bare``) as a process."""
    with null_server() if null else emulator() as emu:
        command = [sys.executable, "-m", "benchmarks.contenders", "bare", "--url", emu.url]
        measured = run_measured([*command, "--rows", str(rows), "--offset", str(offset)])
    if measured.returncode != 0:
        raise SystemExit(f"the bare loop exited {measured.returncode}: {measured.stderr.decode()[-600:]}")
    return measured


def cpu_table(
    trees: list[Path | None], rows: int, repeats: int, *, bare: bool = False, null: bool = False
) -> str:
    """CPU per row of each checkout (and of the bare loop), their runs interleaved in each repeat."""
    names: list[Path | str | None] = [*trees, *(["bare aiohttp loop"] if bare else [])]
    results: dict[Path | str | None, list[tuple[float, float, float]]] = {name: [] for name in names}
    requests: dict[str, int] = {}
    for repeat in range(repeats):
        for index, name in enumerate(names):
            offset = 90_000_000 + (repeat * len(names) + index) * 1_000_000
            if isinstance(name, str):
                measured = measure_bare(rows, offset, null=null)
                single = measure_bare(1, offset + 500_000, null=null).cpu_seconds
            else:
                measured, summary = measure(rows, offset, name, null=null)
                requests = summary.get("requests_by_kind") or {"all": summary.get("requests", 0)}
                single = measure(1, offset + 500_000, name, null=null)[0].cpu_seconds
            results[name].append((measured.cpu_seconds, single, measured.seconds))
    lines = []
    for name, runs in results.items():
        marginal = [(full - single) / (rows - 1) * 1e6 for full, single, _ in runs]
        lines.append(
            [
                str(name or "this checkout"),
                spread([run[0] / rows * 1e6 for run in runs], 0),
                spread([run[1] for run in runs], 2),
                spread(marginal, 0),
                spread([rows / run[2] for run in runs], 0),
            ]
        )
    return (
        f"{rows:,} rows, concurrency {CONCURRENCY}, AK/SK; evs-snapshot's requests: {requests}\n\n"
        + table(
            ["code", "whole process CPU us/row", "1-row run CPU s", "marginal CPU us/row", "rows/s"],
            lines,
        )
    )


def run(repeats: int = 3) -> str:
    """The scenario ``python -m benchmarks profile``: this checkout's CPU per row and its hot spots."""
    return (
        "### 7. Where the CPU of scenario 1's job goes (`python -m benchmarks.profile`)\n\n"
        "Median (min-max) of interleaved runs, each with a fresh emulator; the marginal cost leaves "
        "start-up and the manifest check's fixed cost out.\n\n"
        + cpu_table([None], 5000, repeats, bare=True)
        + "\n\n"
        + profile(5000, None, 15)
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument(
        "--tree",
        type=Path,
        action="append",
        help="a checkout to run (repeatable: the runs of each are interleaved); default: this one",
    )
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-profile", action="store_true", help="only the CPU per row")
    parser.add_argument("--bare", action="store_true", help="measure the bare aiohttp loop too")
    parser.add_argument(
        "--null", action="store_true", help="against benchmarks.nullserver instead of the emulator"
    )
    args = parser.parse_args(argv)
    trees: list[Path | None] = [tree.resolve() for tree in args.tree] if args.tree else [None]
    print(cpu_table(trees, args.rows, args.repeats, bare=args.bare, null=args.null))
    if not args.no_profile:
        print("\n" + profile(args.rows, trees[0], args.top, null=args.null))


if __name__ == "__main__":
    main(sys.argv[1:])
