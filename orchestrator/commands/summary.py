"""``evs-snapshot summary REPORT``: what a report says, by the last record of each row.

A report whose header cannot be right (none, two, or a row count that is not a whole number of 0 or
more) is refused (exit 2, ``file:line``): its counts would be wrong.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn, TextIO

import click
import orjson

from orchestrator import options
from orchestrator.cli import run


def summary(report: Path, *, as_json: bool, stdout: TextIO) -> int:
    """Counts, error codes with examples, slowest rows, and each row's next step; the exit code of create."""
    from orchestrator.errors import UsageError  # noqa: PLC0415
    from orchestrator.report import check_report_path  # noqa: PLC0415
    from orchestrator.tally import Tally  # noqa: PLC0415

    check_report_path(report)
    if not report.is_file():
        raise UsageError(f"{report}: no such report")
    _check_header(report)
    tally = Tally.of_report(report)
    if tally.rows == 0 and tally.manifest_rows is None:
        raise UsageError(f"{report}: the report holds no records")
    stdout.write(tally.to_json().decode() if as_json else tally.render(detailed=True) + "\n")
    return tally.exit_code


def _check_header(report: Path) -> None:
    """One run header, on the first line, whose ``rows`` is a whole number of 0 or more (exit 2)."""
    from orchestrator.errors import UsageError  # noqa: PLC0415
    from orchestrator.report import report_lines  # noqa: PLC0415

    first: tuple[int, object] | None = None
    for number, _, data in report_lines(report):
        header = isinstance(data, dict) and data.get("type") == "run"
        run = data.get("run_id") if isinstance(data, dict) else None
        if first is not None:
            if header:
                raise UsageError(
                    f"{report}:{number}: a second run header (run {run}; line {first[0]} is run {first[1]}): "
                    "summary reads the report of one run; split the file"
                )
            continue
        first = (number, run)
        if not header:
            raise UsageError(
                f"{report}:{number}: the report does not start with a run header, so how many rows its "
                "run had is unknown; summary reads reports that create wrote"
            )
        rows = data.get("rows") if isinstance(data, dict) else None
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
            raise UsageError(
                f"{report}:{number}: the run header's rows is {orjson.dumps(rows).decode()}, not a "
                "number of rows (a whole number, 0 or more)"
            )


@click.command("summary")
@click.argument("report", type=click.Path(path_type=Path, dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@options.DEBUG
def command(*, report: Path, as_json: bool) -> NoReturn:
    """Summarize a report (last record per row): outcomes, error codes, slowest rows, next steps."""

    async def entry() -> int:
        return summary(report, as_json=as_json, stdout=sys.stdout)

    raise SystemExit(run(entry))
