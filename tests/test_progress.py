"""--progress: the line on stderr (done/total, ok/not ok, rate, ETA, settling), cleared at the end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator import progress
from orchestrator.progress import Progress
from orchestrator.tally import Tally
from tests.helpers import (
    CREATE_ROUTE,
    LIST_ROUTE,
    PROJECT,
    csv_manifest,
    invoke,
    last_per_row,
    requests_of,
    volume_ids,
)


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


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
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


def test_a_row_whose_answer_was_lost_is_settling_never_a_retry(
    emulator_thread: Callable[..., Any],
    write: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A create whose answer was lost is looked up, not sent again: from the moment it left the
    connection to its record, every frame shows it in flight or settling, never as a retry."""
    monkeypatch.setattr(progress, "INTERVAL", 0)  # a frame at each turn of the loop (the tool's: 0.5 s)
    emu = emulator_thread(any_volume=True, fault_drop_after=1.0, seed=7)  # committed, answer lost
    report = tmp_path / "r.jsonl"
    args = [
        *("create", str(csv_manifest(write, volume_ids(1, seed=124))), "--endpoint", emu.url),
        *("--project-id", PROJECT, "--report", str(report), "--progress"),
        *("--settle", "0.2"),
    ]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert last_per_row(report)[1]["outcome"] == "accepted"
    assert requests_of(emu.state(), CREATE_ROUTE) == {"dropped": 1}  # sent once, found by its lookup
    frames = [frame for frame in result.stderr.split("\r\x1b[2K") if "rows/s" in frame]
    assert any("settling 1" in frame for frame in frames), frames
    assert not any("retries" in frame for frame in frames), frames
