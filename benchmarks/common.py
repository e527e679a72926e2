"""Helpers shared by benchmark scenarios: manifests, child processes with peak RSS, tables."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

WORK = Path(__file__).parent / ".work"
PROJECT = "0123456789abcdef0123456789abcdef"


def manifest(rows: int) -> Path:
    """A CSV manifest of ``rows`` distinct volumes (cached under benchmarks/.work)."""
    WORK.mkdir(exist_ok=True)
    path = WORK / f"manifest-{rows}.csv"
    if not path.exists():
        with path.open("w", encoding="utf-8") as handle:
            handle.write("volume_id,description\n")
            for index in range(rows):
                handle.write(f"{uuid.UUID(int=index + 1, version=4)},bench row {index}\n")
    return path


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_rss_mb: float
    cpu_seconds: float
    returncode: int


def run_measured(args: Sequence[str], env: dict[str, str] | None = None) -> Measured:
    """Run one child process; return its wall time, peak RSS and CPU time (from wait4)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        list(args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})}
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return Measured(elapsed, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, process.returncode)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", *args]


def median_spread(values: Sequence[float]) -> str:
    """``median (min-max)`` of repeated runs."""
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
