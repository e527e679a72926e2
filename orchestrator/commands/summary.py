"""``evs-snapshot summary REPORT``: what a report says, by the last record of each row.

A report whose header cannot be right (none, two, or a row count that is not a whole number of 0 or
more) is refused by the report reader (exit 2, ``file:line``): its counts would be wrong.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn, TextIO

import click

from orchestrator import options
from orchestrator.entry import run


def summary(report: Path, *, as_json: bool, stdout: TextIO) -> int:
    """Counts, error codes with examples, slowest rows, and each row's next step; the exit code of create."""
    from orchestrator.errors import UsageError  # noqa: PLC0415
    from orchestrator.report import check_report_path  # noqa: PLC0415
    from orchestrator.tally import Tally  # noqa: PLC0415

    check_report_path(report)
    if not report.is_file():
        raise UsageError(f"{report}: no such report")
    tally = Tally.of_report(report)
    if tally.rows == 0 and tally.manifest_rows is None:
        raise UsageError(f"{report}: the report holds no records")
    stdout.write(tally.to_json().decode() if as_json else tally.render(detailed=True) + "\n")
    return tally.exit_code


@click.command("summary")
@click.argument("report", type=click.Path(path_type=Path, dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@options.DEBUG
def command(*, report: Path, as_json: bool) -> NoReturn:
    """Summarize a report (last record per row): outcomes, error codes, slowest rows, next steps."""

    async def entry() -> int:
        return summary(report, as_json=as_json, stdout=sys.stdout)

    raise SystemExit(run(entry))
