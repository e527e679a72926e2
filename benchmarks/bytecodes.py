"""Python bytecodes a create runs per row, counted exactly: ``python -m benchmarks.bytecodes [--tree PATH ...]``.

On a busy machine seconds (even CPU seconds) of two checkouts differ by more than the change being
measured. This counts instead: the client runs against ``benchmarks.nullserver`` under an opcode
tracer (``sys.settrace`` with ``f_trace_opcodes``, every thread), once with ``--rows`` rows and once
with one; the difference over ``rows - 1`` is the bytecodes a row costs, the same on every run and
under any load (C code, such as orjson, hashing and the socket calls, counts as the one call that
enters it). The bare aiohttp loop (``benchmarks.contenders bare``) is counted the same way.

Prints the bytecodes per row of each contender, then the modules and functions of the first tree
that run the most per row. About a minute a contender at 500 rows (the tracer slows a run 30-fold).
"""

from __future__ import annotations

import argparse
import collections
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import AKSK_ENV, PROJECT, manifest, null_server

Counts = dict[tuple[str, int, str], int]

TRACER = """
import collections, pickle, runpy, sys, threading
out, module, args = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.argv = [module, *args]
counts = collections.Counter()
def tracer(frame, event, arg):
    frame.f_trace_opcodes = True
    key = (frame.f_code.co_filename, frame.f_code.co_firstlineno, frame.f_code.co_name)
    def local(frame, event, arg):
        if event == "opcode":
            counts[key] += 1
        return local
    return local
threading.settrace(tracer)
sys.settrace(tracer)
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit:
    pass
finally:
    sys.settrace(None)
    threading.settrace(None)
    with open(out, "wb") as handle:
        pickle.dump(dict(counts), handle)
"""


def count(rows: int, tree: Path | None, folder: Path) -> Counts:
    """The bytecodes of one run of ``rows`` rows (``tree``: a checkout's evs-snapshot; ``None``: the bare loop)."""
    out = folder / "counts.pkl"
    root = tree or Path(__file__).parent.parent
    with null_server() as server:
        if tree is None:
            module = ["benchmarks.contenders", "bare", "--url", server.url, "--rows", str(rows)]
        else:
            report = folder / f"r-{rows}.jsonl"
            report.unlink(missing_ok=True)
            module = [
                "orchestrator",
                "create",
                str(manifest(rows, 97_000_000)),
                "--endpoint",
                server.url,
                "--project-id",
                PROJECT,
                "--report",
                str(report),
            ]
        done = subprocess.run(
            [sys.executable, "-c", TRACER, str(out), *module],
            env={**os.environ, **AKSK_ENV, "PYTHONPATH": str(root)},
            cwd=root,
            capture_output=True,
            check=False,
        )
    if done.returncode != 0:
        raise SystemExit(f"{module[0]} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    counts: Counts = pickle.loads(out.read_bytes())  # noqa: S301 - written just now by our own child
    return counts


def per_row(rows: int, tree: Path | None) -> dict[tuple[str, int, str], float]:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        many, one = count(rows, tree, folder), count(1, tree, folder)
    return {key: (many.get(key, 0) - one.get(key, 0)) / (rows - 1) for key in many.keys() | one.keys()}


def short(filename: str) -> str:
    for anchor in ("site-packages/", "/orchestrator/", "lib/python3.11/"):
        if anchor in filename:
            rest = filename.rsplit(anchor, maxsplit=1)[-1]
            return "orchestrator/" + rest if anchor == "/orchestrator/" else rest
    return filename


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bytecodes")
    parser.add_argument(
        "--tree", type=Path, action="append", help="a checkout (repeatable); default: this one"
    )
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    trees = [tree.resolve() for tree in args.tree] if args.tree else [Path(__file__).parent.parent.resolve()]
    results = {str(tree): per_row(args.rows, tree) for tree in trees}
    results["bare aiohttp loop"] = per_row(args.rows, None)
    for name, counts in results.items():
        print(f"{name}: {sum(counts.values()):,.0f} bytecodes per row")
    first = results[str(trees[0])]
    modules: collections.defaultdict[str, float] = collections.defaultdict(float)
    for (filename, _, _), value in first.items():
        modules[short(filename)] += value
    print(f"\n{trees[0]}, by module:")
    for module, value in sorted(modules.items(), key=lambda item: -item[1])[: args.top]:
        print(f"  {value:8.0f}  {module}")
    print("by function:")
    for (filename, line, function), value in sorted(first.items(), key=lambda item: -item[1])[: args.top]:
        print(f"  {value:8.1f}  {short(filename)}:{line} {function}")


if __name__ == "__main__":
    main(sys.argv[1:])
