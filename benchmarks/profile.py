"""Where scenario 1's CPU goes: ``python -m benchmarks.profile [--tree PATH] [--rows N] [--top N]``.

Each run gets a fresh emulator process (so the end-of-run sweep lists only the run's own snapshots,
one list request per 1000), and the client is a whole ``create`` process, AK/SK, concurrency 32:

- CPU per row: the process's user+system CPU over ``--rows`` rows, and the marginal cost of a row,
  ``(CPU(N rows) - CPU(1 row)) / (N - 1)``, which leaves start-up and the manifest check's fixed
  cost out (the median of ``--repeats`` runs of each);
- one more run under cProfile: the functions with the most own time, and own time by package.

``--tree`` runs another checkout's code (``git worktree add /tmp/old 475e429``, then
``--tree /tmp/old``) with this interpreter, so two commits can be compared on the same machine.
"""

from __future__ import annotations

import argparse
import pstats
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.common import Measured, create, emulator, manifest, spread, summary_of, table

CONCURRENCY = 32


def measure(
    rows: int, offset: int, tree: Path | None, prefix: tuple[str, ...] = ()
) -> tuple[Measured, dict[str, Any]]:
    with emulator(tree=tree) as emu, tempfile.TemporaryDirectory() as folder:
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
    if filename.startswith("~") or filename.startswith("<"):
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


def profile(rows: int, tree: Path | None, top: int) -> str:
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "create.prof"
        measure(rows, 95_000_000, tree, ("-m", "cProfile", "-o", str(output)))
        stats = pstats.Stats(str(output))
    raw = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values())
    by_own = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)[:top]
    functions = [
        [
            f"`{Path(filename).name}:{line} {name}`",
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
        f"Under cProfile ({total / rows * 1e6:.0f} us/row of profiled time; cProfile inflates it):\n\n"
        + table(["function (most own time)", "own us/row", "cumulative us/row", "calls/row"], functions)
        + "\n\n"
        + table(["where", "own us/row", "share"], grouped)
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
    args = parser.parse_args(argv)
    trees: list[Path | None] = [tree.resolve() for tree in args.tree] if args.tree else [None]
    rows = args.rows
    results: dict[Path | None, list[tuple[float, float, float]]] = {tree: [] for tree in trees}
    requests: dict[str, int] = {}
    for repeat in range(args.repeats):
        for index, tree in enumerate(trees):
            offset = 90_000_000 + (repeat * len(trees) + index) * 1_000_000
            measured, summary = measure(rows, offset, tree)
            requests = summary.get("requests_by_kind") or {"all": summary.get("requests", 0)}
            single = measure(1, offset + 500_000, tree)[0].cpu_seconds
            results[tree].append((measured.cpu_seconds, single, measured.seconds))
    print(f"{rows} rows, concurrency {CONCURRENCY}, AK/SK, median of {args.repeats} (requests: {requests})\n")
    lines = []
    for tree, runs in results.items():
        marginal = [(full - single) / (rows - 1) * 1e6 for full, single, _ in runs]
        lines.append(
            [
                str(tree or "this checkout"),
                spread([run[0] / rows * 1e6 for run in runs], 0),
                spread([run[1] for run in runs], 2),
                spread(marginal, 0),
                spread([rows / run[2] for run in runs], 0),
            ]
        )
    print(
        table(
            [
                "code",
                "whole process CPU us/row",
                "1-row run CPU s",
                "marginal CPU us/row",
                "rows/s (median (min-max))",
            ], lines
        )
    )
    if not args.no_profile:
        print("\n" + profile(rows, trees[0], args.top))


if __name__ == "__main__":
    main(sys.argv[1:])
