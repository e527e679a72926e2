"""What later commands read from a create report: its run, the last record of each row that was
sent, the rows with no record, and the disks of the manifest the run read.

A create killed mid-run leaves a report that tells less than the cloud holds: rows in flight have no
record, and the last line may be cut short. These readers say so rather than trust the report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.errors import UsageError
from orchestrator.manifest import ManifestSource, manifest_digest
from orchestrator.models import Outcome, Record, RunHeader
from orchestrator.report import check_report_path, epoch, final_records, read_header, read_records, torn_tail
from orchestrator.selection import read_targets
from orchestrator.tally import first_without_record

if TYPE_CHECKING:
    from orchestrator.selection import Target

# A report without its run's window (written before it was recorded): the defaults' --settle + --timeout.
DEFAULT_WINDOW = 90.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class CreateRun:
    """A create report as cleanup reads it."""

    run_id: str
    header: RunHeader
    sent: list[Record]  # the last record of each row that was sent (not ``invalid`` or ``planned``)
    recorded: frozenset[int]  # rows with a record, whatever its outcome
    # When (epoch seconds) the last create left whose answer the report does not hold for sure (a row
    # in flight at a kill, or ``failed``), and how many such rows: their snapshots may still appear.
    last_doubtful_send: float | None = None
    doubtful_rows: int = 0

    def quiet_at(self) -> float | None:
        """When (epoch seconds) no snapshot of the run can appear any more, if that is still ahead."""
        if self.last_doubtful_send is None:
            return None
        window = self.header.window or DEFAULT_WINDOW
        return self.last_doubtful_send + window

    def unrecorded(self) -> tuple[int, str]:
        """How many of the header's rows have no record, and the first of them as ``summary`` names them
        (``rows 3, 4``), or ``(0, "")``."""
        total = self.header.rows
        missing = total - sum(1 for row in self.recorded if 1 <= row <= total)
        named = first_without_record(total, self.recorded.__contains__)
        more = "" if len(named) >= missing else ", ..."
        return missing, (f"rows {', '.join(map(str, named))}{more}" if missing else "")


def check_create_run(report: Path, header: RunHeader, command: str, verb: str) -> None:
    """What ``wait``, ``cleanup`` and ``rollback`` ask of the report they act on (exit 2 otherwise): a
    create run's, whose requests went to a cloud (not a ``--dry-run``, not ``--emulator``)."""
    if header.command != "create":
        raise UsageError(
            f"{report} is a {header.command} report: {command} reads the report of a create run "
            f"(a {header.command} run confirms its own requests before it ends)"
        )
    why = header.nothing_in_the_cloud()
    if why is not None:
        raise UsageError(f"{report} {why}; there is nothing to {verb}, and nothing was sent")


def run_of(
    report: Path, warn: Callable[[str], None], *, command: str = "cleanup", verb: str = "clean up"
) -> CreateRun:
    """Read a create report for ``command`` (``cleanup``; ``hold``, ``release``): its run, the last
    record of each sent row, the rows with a record.

    A torn last line is warned about (``file:line``) and skipped. The report reader refuses a file
    of two runs (exit 2, naming both run ids) and rows outside the header's.
    """
    check_report_path(report)
    if not report.is_file():
        raise UsageError(f"{report}: no such report")
    header = read_header(report)
    if header is None:
        raise UsageError(f"{report}: the report holds no records; nothing to {verb}")
    check_create_run(report, header, command, verb)
    torn = torn_tail(report)
    if torn is not None:
        warn(f"{report}:{torn}: the last line is cut short (its writer was killed mid-line); skipped")
    rows = list(final_records(report))
    unsent = (Outcome.INVALID, Outcome.PLANNED)
    doubtful: dict[int, float] = {}  # row -> its last send, while no answer for sure follows it
    for record in read_records(report):
        if record.outcome is Outcome.SENDING:
            doubtful[record.row] = epoch(record.started_at)
        elif not record.side and record.outcome is not Outcome.FAILED:
            doubtful.pop(record.row, None)
    return CreateRun(
        run_id=header.run_id,
        header=header,
        sent=[r for r in rows if r.volume_id and r.outcome not in unsent],
        recorded=frozenset(r.row for r in rows),
        last_doubtful_send=max(doubtful.values(), default=None),
        doubtful_rows=len(doubtful),
    )


def manifest_disks(
    header: RunHeader, *, project_id: str | None, region: str | None
) -> tuple[list[Target] | None, str]:
    """The disks the run's manifest names, when the file the header names is there and unchanged
    (its digest is the header's); otherwise ``None`` and why not."""

    named = header.manifest_file()
    if named is None:
        return None, "the run read its manifest from standard input"
    try:
        source = ManifestSource.of(named, None)
        if manifest_digest(source) != header.digest:
            return None, f"the manifest {header.manifest} changed since the run (its digest differs)"
        targets, _ = read_targets(source, project_id=project_id, region=region, warn=lambda _: None)
    except UsageError as exc:  # ManifestError included: missing, unreadable
        return None, f"the run's manifest cannot be read ({exc})"
    return targets, ""
