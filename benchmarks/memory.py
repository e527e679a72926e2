"""Scenario 4: peak RSS of the evs-snapshot process as the work grows (target: flat, under 120 MB).

Each case is compared with the same command over 10,000 rows (its baseline):
- ``create --dry-run`` on CSV manifests of 10,000 and 1,000,000 rows, and on a minified (one-line)
  JSON array of 500,000 rows, which a line-by-line reader would hold whole;
- ``create`` with refused credentials (a wrong secret key against the emulator) over 10,000 and
  300,000 rows: the route closes after one request and every row gets a ``failed`` record (exit 3);
- ``validate --online`` over 10,000 and 100,000 rows (an emulator with ``--any-volume``);
- a real ``create`` of 200,000 rows against the emulator (compared with the 10,000-row dry run).

``python -m benchmarks.memory CASE ...`` runs only the named cases (``jsonl-1m`` exists for that use
only) and prints their table; the baseline of a case is run too when it is not named.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson

from benchmarks.common import (
    AKSK_ENV,
    PROJECT,
    WORK,
    Measured,
    cli,
    create,
    dry_run,
    emulator,
    manifest,
    run_measured,
    spread,
    table,
)

WRONG_SK = {"HUAWEICLOUD_SDK_SK": "not-the-emulator-secret-key-000000000000"}


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


def _dry(make: Callable[[], Path]) -> Callable[[Path], Measured]:
    return lambda folder: run_measured(dry_run(make(), str(folder)))


def _refused(rows: int) -> Callable[[Path], Measured]:
    """``create`` with a wrong secret key: one request is refused, then no row is sent."""

    def go(folder: Path) -> Measured:
        with emulator() as emu:
            return create(emu.url, manifest(rows, 60_000_000), folder / "r.jsonl", env=WRONG_SK)

    return go


def _validate_online(rows: int) -> Callable[[Path], Measured]:
    def go(folder: Path) -> Measured:
        with emulator() as emu:
            command = cli("validate", str(manifest(rows, 50_000_000)), "--online", "--endpoint", emu.url)
            return run_measured([*command, "--project-id", PROJECT], env=AKSK_ENV)

    return go


def _real(rows: int) -> Callable[[Path], Measured]:
    def go(folder: Path) -> Measured:
        with emulator() as emu:
            return create(emu.url, manifest(rows, 70_000_000), folder / "r.jsonl", "--concurrency", "32")

    return go


@dataclasses.dataclass(frozen=True, slots=True)
class Case:
    label: str
    rows: int
    run: Callable[[Path], Measured]
    baseline: str  # the case this one is compared with (itself for a baseline)
    exit_code: int = 0


CASES: dict[str, Case] = {
    "csv-10k": Case("create --dry-run, 10,000 rows", 10_000, _dry(lambda: manifest(10_000)), "csv-10k"),
    "csv-1m": Case(
        "create --dry-run, 1,000,000 rows", 1_000_000, _dry(lambda: manifest(1_000_000)), "csv-10k"
    ),
    "json-minified-500k": Case(
        "create --dry-run, 500,000 rows, minified one-line JSON",
        500_000,
        _dry(lambda: minified_json(500_000)),
        "csv-10k",
    ),
    "refused-10k": Case(
        "create, refused credentials (wrong SK), 10,000 rows", 10_000, _refused(10_000), "refused-10k", 3
    ),
    "refused-300k": Case(
        "create, refused credentials (wrong SK), 300,000 rows",
        300_000,
        _refused(300_000),
        "refused-10k",
        3,
    ),
    "validate-online-10k": Case(
        "validate --online, 10,000 rows", 10_000, _validate_online(10_000), "validate-online-10k"
    ),
    "validate-online-100k": Case(
        "validate --online, 100,000 rows",
        100_000,
        _validate_online(100_000),
        "validate-online-10k",
    ),
    "real-200k": Case("create against the emulator, 200,000 rows", 200_000, _real(200_000), "csv-10k"),
}
EXTRA_CASES: dict[str, Case] = {
    "jsonl-1m": Case(
        "create --dry-run, 1,000,000 rows, JSON Lines",
        1_000_000,
        _dry(lambda: json_lines(1_000_000)),
        "csv-10k",
    ),
}


def measure(names: list[str], repeats: int) -> list[list[str]]:
    """One table row per named case: peak RSS, its ratio to the case's baseline, wall time.

    Cases of 10,000 rows run ``repeats`` times (the median peak counts), larger ones once.
    """
    every = {**CASES, **EXTRA_CASES}
    wanted = list(dict.fromkeys(name for chosen in names for name in (every[chosen].baseline, chosen)))
    peaks: dict[str, float] = {}
    rows = []
    for name in wanted:
        case = every[name]
        runs = []
        for _ in range(repeats if case.rows <= 10_000 else 1):
            with tempfile.TemporaryDirectory() as folder:
                measured = case.run(Path(folder))
            if measured.returncode != case.exit_code:
                raise SystemExit(
                    f"{name} exited {measured.returncode} (expected {case.exit_code}): "
                    f"{measured.stderr[-500:]!r}"
                )
            runs.append(measured)
        peak_values = [run.peak_rss_mb for run in runs]
        peaks[name] = sorted(peak_values)[len(peak_values) // 2]
        base = every[case.baseline]
        rows.append(
            [
                case.label,
                spread(peak_values),
                "1.00 (baseline)" if name == case.baseline else f"{peaks[name] / peaks[case.baseline]:.2f}",
                base.label if name != case.baseline else "",
                spread([run.seconds for run in runs], 1),
            ]
        )
    return rows


def run(repeats: int = 3) -> str:
    return _section(measure(list(CASES), repeats))


def _section(rows: list[list[str]]) -> str:
    return (
        "### 4. Memory (targets: under 120 MB in every case; each large case within 1.3x of its "
        "10,000-row baseline)\n\n"
        "Peak RSS of the evs-snapshot process (`wait4`'s `ru_maxrss`).\n\n"
        + table(
            ["run", "peak RSS MB, median (min-max)", "vs baseline", "baseline", "wall seconds"],
            rows,
        )
    )


if __name__ == "__main__":
    chosen = sys.argv[1:] or list(CASES)
    unknown = [name for name in chosen if name not in {**CASES, **EXTRA_CASES}]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; choose from {[*CASES, *EXTRA_CASES]}")
    print(_section(measure(chosen, 3)))
