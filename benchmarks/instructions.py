"""Instructions a create runs per row, counted by valgrind: ``python -m benchmarks.instructions [--tree PATH ...]``.

``benchmarks.bytecodes`` counts Python bytecodes, where a call into C counts as one: it misses what a
C function costs (a ``datetime.isoformat`` formats through C's printf, about 5,000 instructions). This
counts every user-space instruction of the client process instead (``valgrind --tool=callgrind``, its
``Collected`` total), once with ``--rows`` rows and once with one, against ``benchmarks.nullserver``:
the difference over ``rows - 1`` is the instructions a row costs, the same under any load. The kernel's
work (the sockets, the report's writes) is not counted. The bare aiohttp loop is counted the same way.

About a minute a contender at 300 rows (valgrind slows a run 50-fold). Needs ``valgrind`` on PATH.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import AKSK_ENV, PROJECT, manifest, null_server


def instructions(rows: int, tree: Path | None) -> int:
    """The user-space instructions of one run of ``rows`` rows (``tree``: a checkout; ``None``: the bare loop)."""
    with null_server() as server, tempfile.TemporaryDirectory() as folder:
        root = tree or Path(__file__).parent.parent
        if tree is None:
            module = ["benchmarks.contenders", "bare", "--url", server.url, "--rows", str(rows)]
        else:
            report = str(Path(folder) / "r.jsonl")
            rows_file = str(manifest(rows, 97_000_000))
            module = ["orchestrator", "create", rows_file, "--endpoint", server.url, "--project-id", PROJECT]
            module += ["--report", report]
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-m", *module],
            env={**os.environ, **AKSK_ENV, "PYTHONPATH": str(root)},
            cwd=root,
            capture_output=True,
            check=False,
        )
    found = re.search(rb"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{module[0]} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return int(found.group(1))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions")
    parser.add_argument(
        "--tree", type=Path, action="append", help="a checkout (repeatable); default: this one"
    )
    parser.add_argument("--rows", type=int, default=300)
    args = parser.parse_args(argv)
    trees = [tree.resolve() for tree in args.tree] if args.tree else [Path(__file__).parent.parent.resolve()]
    contenders: list[tuple[str, Path | None]] = [(str(tree), tree) for tree in trees]
    for name, tree in [*contenders, ("bare aiohttp loop", None)]:
        many, one = instructions(args.rows, tree), instructions(1, tree)
        print(f"{name}: {(many - one) / (args.rows - 1):,.0f} instructions per row ({one:,} for one row)")


if __name__ == "__main__":
    main(sys.argv[1:])
