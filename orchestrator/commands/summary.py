"""``evs-snapshot summary REPORT``: what a report says, by the last record of each row."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from orchestrator.errors import UsageError
from orchestrator.tally import Digest


def summary(report: Path, *, as_json: bool, stdout: TextIO) -> int:
    """``evs-snapshot summary REPORT``: counts, error codes with examples, slowest rows, rows to retry."""
    if not report.is_file():
        raise UsageError(f"{report}: no such report")
    digest = Digest.of(report)
    if digest.rows == 0:
        raise UsageError(f"{report}: the report holds no records")
    stdout.write(digest.to_json().decode() if as_json else digest.render() + "\n")
    return digest.exit_code
