"""--progress: the line on stderr (done/total, ok/not ok, rate, ETA, settling), cleared at the end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.progress import Progress
from orchestrator.tally import Tally
from tests.helpers import LIST_ROUTE, PROJECT, csv_manifest, invoke, last_per_row, requests_of, volume_ids


def test_progress_line_shows_counts_retries_and_settling() -> None:
    """The progress line: done/total, ok/not ok, rate, ETA, and what is going on (settling rows)."""
    tally = Tally()
    tally.outcomes.update({"accepted": 3, "failed": 1})

    class Settling:
        settling = 2

    progress = Progress(tally, 10, stream=None, runner=Settling())  # type: ignore[arg-type]
    line = progress.line()
    assert line.startswith("4/10 rows  ok 3  not ok 1")
    assert "ETA" in line
    assert "settling 2" in line


def test_progress_on_a_run(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--progress draws the line on stderr (at the start, then every second) and clears it at the end."""
    emu = emulator_thread(any_volume=True, latency_ms=20)
    report = tmp_path / "r.jsonl"
    args = [
        "create",
        str(csv_manifest(write, volume_ids(30, seed=123))),
        "--endpoint",
        emu.url,
        "--project-id",
        PROJECT,
        "--report",
        str(report),
        "--progress",
        "--concurrency",
        "4",
    ]
    result = invoke(args)
    assert result.exit_code == 0
    assert "rows/s" in result.stderr
    assert "\r\x1b[2K" in result.stderr
    assert len(last_per_row(report)) == 30
    # Every row was sent once and answered 202: no snapshot can be doubled, so the sweep lists nothing.
    assert requests_of(emu.state(), LIST_ROUTE)["200"] == 0
