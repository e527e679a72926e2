"""Scenario 4: peak RSS of ``create --dry-run`` as the manifest grows, and of a real 200,000-row run.

The dry runs read CSV manifests of 10,000 and 1,000,000 rows and a minified (one-line) JSON array of
500,000 rows, which a line-by-line reader would hold whole. ``python -m benchmarks.memory CASE ...``
runs only the named dry-run cases (``jsonl-1m`` exists for that use only) and prints their table.
"""

from __future__ import annotations

import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson

from benchmarks.common import WORK, create, dry_run, emulator, manifest, run_measured, spread, table

REAL_ROWS = 200_000
BASELINE = "csv-10k"


def minified_json(rows: int) -> Path:
    """A JSON array of ``rows`` volumes on a single line (cached under benchmarks/.work)."""
    return _json_manifest(rows, WORK / f"manifest-{rows}-minified.json", b"[", b",", b"]")


def json_lines(rows: int) -> Path:
    """A JSON Lines manifest of ``rows`` volumes (cached under benchmarks/.work)."""
    return _json_manifest(rows, WORK / f"manifest-{rows}.jsonl", b"", b"\n", b"\n")


def _json_manifest(rows: int, path: Path, start: bytes, between: bytes, end: bytes) -> Path:
    if not path.exists():
        WORK.mkdir(exist_ok=True)
        with path.open("wb") as handle:
            handle.write(start)
            for index in range(rows):
                volume_id = str(uuid.UUID(int=index + 1, version=4))
                handle.write(
                    (between if index else b"")
                    + orjson.dumps({"volume_id": volume_id, "description": f"bench row {index}"})
                )
            handle.write(end)
    return path


# name: (table label, manifest maker, rows); the sizes match the CSV ones of the other scenarios
DRY_CASES: dict[str, tuple[str, Callable[[], Path], int]] = {
    "csv-10k": ("create --dry-run, 10,000 rows", lambda: manifest(10_000), 10_000),
    "csv-1m": ("create --dry-run, 1,000,000 rows", lambda: manifest(1_000_000), 1_000_000),
    "json-minified-500k": (
        "create --dry-run, 500,000 rows, minified one-line JSON",
        lambda: minified_json(500_000),
        500_000,
    ),
}
EXTRA_CASES: dict[str, tuple[str, Callable[[], Path], int]] = {
    "jsonl-1m": ("create --dry-run, 1,000,000 rows, JSON Lines", lambda: json_lines(1_000_000), 1_000_000),
}


def dry_rows(names: list[str], repeats: int) -> tuple[list[list[str]], float | None]:
    """One table row per named dry-run case (peak RSS, ratio to the 10,000-row CSV run, wall time),
    and the baseline peak when it was measured."""
    rows = []
    baseline = None
    for name in names:
        label, make, size = {**DRY_CASES, **EXTRA_CASES}[name]
        path = make()
        peaks, seconds = [], []
        for _ in range(repeats if size <= 100_000 else 1):
            with tempfile.TemporaryDirectory() as folder:
                measured = run_measured(dry_run(path, folder))
            if measured.returncode != 0:
                raise SystemExit(f"dry run {name} exited {measured.returncode}: {measured.stderr[-500:]!r}")
            peaks.append(measured.peak_rss_mb)
            seconds.append(measured.seconds)
        peak = sorted(peaks)[len(peaks) // 2]
        if name == BASELINE:
            baseline = peak
        ratio = f"{peak / baseline:.2f}" if baseline else "n/a"
        rows.append([label, spread(peaks), ratio, spread(seconds, 1)])
    return rows, baseline


def run(repeats: int = 3) -> str:
    rows, baseline = dry_rows(list(DRY_CASES), repeats)
    with emulator() as emu, tempfile.TemporaryDirectory() as folder:
        measured = create(
            emu.url, manifest(REAL_ROWS, 70_000_000), Path(folder) / "r.jsonl", "--concurrency", "32"
        )
    if measured.returncode != 0:
        raise SystemExit(f"the {REAL_ROWS}-row run exited {measured.returncode}")
    rows.append(
        [
            f"create against the emulator, {REAL_ROWS:,} rows",
            f"{measured.peak_rss_mb:.1f}",
            f"{measured.peak_rss_mb / (baseline or 1):.2f}",
            f"{measured.seconds:.1f}",
        ]
    )
    return _section(rows)


def _section(rows: list[list[str]]) -> str:
    return (
        "### 4. Memory (targets: under 120 MB at every size; 1,000,000 dry-run rows within 1.3x of 10,000)\n\n"
        + table(["run", "peak RSS MB, median (min-max)", "vs 10,000-row dry run", "wall seconds"], rows)
    )


if __name__ == "__main__":
    chosen = sys.argv[1:] or list(DRY_CASES)
    unknown = [name for name in chosen if name not in {**DRY_CASES, **EXTRA_CASES}]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; choose from {[*DRY_CASES, *EXTRA_CASES]}")
    print(_section(dry_rows(chosen, 3)[0]))
