"""``evs-snapshot summary REPORT``: what a report says, by the last record of each row (a create report)
or of each snapshot or row acted on (a prune, cleanup or rollback report).

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


def summary(report: Path, *, form: str, stdout: TextIO) -> int:
    """The summary of a create, prune, cleanup or rollback report as ``form`` (``text``: counts, error
    codes with examples, slowest rows and each row's next step; ``json``; ``markdown``: a change-ticket
    block); the exit code its run would have had."""
    from orchestrator.errors import UsageError  # noqa: PLC0415
    from orchestrator.report import check_report_path, read_header  # noqa: PLC0415
    from orchestrator.tally import Tally  # noqa: PLC0415

    check_report_path(report)
    if not report.is_file():
        raise UsageError(f"{report}: no such report")
    header = read_header(report)
    tally = Tally.of_report(report)
    if tally.rows == 0 and header is None:
        raise UsageError(f"{report}: the report holds no records")
    if form == "json":
        stdout.write(tally.to_json().decode())
    elif form == "markdown":
        from orchestrator.ticket import markdown  # noqa: PLC0415

        stdout.write(markdown(report, header, tally, tally.exit_code))
    else:
        stdout.write(tally.render(detailed=True) + "\n")
    return tally.exit_code


@click.command("summary")
@click.argument("report", type=click.Path(path_type=Path, dir_okay=True))
@click.option(
    "--format",
    "form",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
    help="text for people, json for programs, markdown for a change ticket.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (same as --format json).")
@options.DEBUG
def command(*, report: Path, form: str, as_json: bool) -> NoReturn:
    """Summarize a create, prune, cleanup or rollback report (last record per row): outcomes, error codes,
    next steps; --format markdown gives a change-ticket block."""

    async def entry() -> int:
        return summary(report, form="json" if as_json else form, stdout=sys.stdout)

    raise SystemExit(run(entry))
