"""``summary REPORT --format markdown``: a block to paste into a change ticket.

It holds the run id and its times, the counts per outcome, a table of the snapshots made (a create
report) or acted on (prune, cleanup, rollback), capped at ``TABLE_MAX`` lines plus a count, the rows to
retry and why, and the exact follow-up commands for this report with the options the run used that
the report knows (``--project-id``, ``--region``; never credentials: they come from the environment).

The report is read in one more streaming pass; only the first ``TABLE_MAX`` lines of each table are kept.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Iterator
from pathlib import Path

from orchestrator.actions import ActionRecord, final_actions
from orchestrator.models import Outcome, Record, RunHeader
from orchestrator.report import final_records
from orchestrator.tally import NEXT_STEP, Tally, finish_command, rejected_step, where_to

TABLE_MAX = 200


def cell(value: object) -> str:
    """A table cell: ``-`` for nothing, pipes escaped, one line."""
    if value is None or value == "":
        return "-"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(head: list[str], lines: Iterable[list[object]], total: int, what: str) -> list[str]:
    """A Markdown table of at most ``TABLE_MAX`` lines, and how many more the report holds."""
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    shown = 0
    for line in lines:
        if shown == TABLE_MAX:
            break
        out.append("| " + " | ".join(cell(value) for value in line) + " |")
        shown += 1
    if total > shown:
        out.append(f"\n... and {total - shown} more {what} (see the report)")
    return out


def follow_ups(report: Path, header: RunHeader | None, tally: Tally) -> list[str]:
    """The commands that act on this report next, with the options of the run the report knows: where it
    sent its requests (``--endpoint``, ``--iam-endpoint``, ``--ca-bundle``, ``--auth``, ``--region``), and
    for ``cleanup`` its ``--project-id`` (records name their own project; cleanup also searches the run's
    projects by it). A create run with rows to send again (``tally.resume_next``) is resumed first.
    Credentials are never among them: they come from the environment, as for the run."""
    shape = {} if header is None else header.shape
    where = where_to(header)
    project = f" --project-id {shlex.quote(shape['project_id'])}" if shape.get("project_id") else ""
    quoted = shlex.quote(str(report.resolve()))
    if header is None or header.command == "create":
        named = header is not None and header.manifest not in ("", "<stdin>")
        manifest = shlex.quote(header.manifest) if header is not None and named else "MANIFEST"
        resume = f"evs-snapshot create {manifest} --resume --report {quoted}{where}{project}"
        return [
            *([f"{resume}  # and the run's other options"] if tally.resume_next else []),
            f"evs-snapshot wait {quoted}{where}",
            f"evs-snapshot rollback {quoted} --apply{where}",
            f"evs-snapshot cleanup {quoted} --apply{where}{project}",
        ]
    # finish what the run planned or left: the same command, applied, resuming this report; an unfinished
    # run's is the one its unfinished line names (a plan when its records do not tell)
    return [tally.finish or finish_command(report, header)]


def _last(records: Iterable[Record | ActionRecord]) -> str:
    """When the last record of the run was written."""
    return max((record.finished_at for record in records if record.finished_at), default="")


def markdown(report: Path, header: RunHeader | None, tally: Tally, exit_code: int) -> str:
    """The change-ticket block of ``report`` (its ``tally`` already counted)."""
    command = "create" if header is None else header.command
    run_id = "unknown" if header is None else header.run_id
    finals: Iterator[Record | ActionRecord]
    finals = final_records(report) if command == "create" else final_actions(report)
    last = _last(finals)
    out = [f"### evs-snapshot {command}: run `{run_id}`", ""]
    out.append(f"- report: `{report}`")
    if header is not None and header.manifest:
        rows = f" ({header.rows} rows)" if command == "create" else ""
        out.append(f"- {'manifest' if command == 'create' else 'source'}: `{header.manifest}`{rows}")
    out.append(f"- started: {header.started_at if header is not None and header.started_at else '-'}")
    out.append(f"- last record: {last or '-'}")
    out.append(f"- exit code: {exit_code}")
    nothing = None if header is None else header.nothing_in_the_cloud()
    if nothing is not None:
        out.append(f"- note: this report {nothing}; wait, rollback and cleanup refuse it")
    out += [f"- note: {note}" for note in tally.notes]
    out += ["", "#### Outcomes", "", "| outcome | count |", "|---|---:|"]
    out += [f"| {outcome} | {count} |" for outcome, count in sorted(tally.outcomes.items())]
    if tally.missing:
        out.append(f"| (no record) | {tally.missing} |")
    out.append("")
    if command == "create":
        out += _create_tables(report, tally)
    else:
        out += _action_tables(report, tally)
    out += ["", "#### Follow-up commands", "", "```sh", *follow_ups(report, header, tally), "```", ""]
    return "\n".join(out)


def _create_tables(report: Path, tally: Tally) -> list[str]:
    made = sum(1 for record in final_records(report) if record.snapshot_id)
    out = [f"#### Snapshots made ({made})", ""]
    out += table(
        ["row", "disk", "snapshot id", "name", "status"],
        (
            [r.row, r.volume_id, r.snapshot_id, r.name, r.snapshot_status or r.outcome.value]
            for r in final_records(report)
            if r.snapshot_id
        ),
        made,
        "snapshots",
    )
    retry = sum(tally.to_act_count.values())
    out += ["", f"#### Rows to retry ({retry + tally.missing})", ""]
    if tally.missing:
        out += [tally.missing_line(), *([""] if retry else [])]
    if retry:
        out += table(
            ["row", "disk", "outcome", "error", "why, and the next step"],
            (
                [r.row, r.volume_id, r.outcome.value, r.error_code, _why(r)]
                for r in final_records(report)
                if r.outcome in NEXT_STEP
            ),
            retry,
            "rows",
        )
    elif not tally.missing:
        out.append("none")
    return out


def _why(record: Record) -> str:
    step = (
        rejected_step(record.error_code, record.error_message)
        if record.outcome is Outcome.REJECTED
        else NEXT_STEP[record.outcome]
    )
    message = (record.error_message or "").strip()
    return f"{message[:160]}: {step}" if message else step


def _action_tables(report: Path, tally: Tally) -> list[str]:
    total = tally.rows
    out = [f"#### Acted on ({total})", ""]
    out += table(
        ["key", "disk", "snapshot id", "name", "outcome"],
        (
            [a.key, a.volume_id, a.snapshot_id, a.snapshot_name, a.outcome.value]
            for a in final_actions(report)
        ),
        total,
        "records",
    )
    failing = tally.failing
    out += ["", f"#### To look at again ({failing})", ""]
    if failing:
        out += table(
            ["key", "outcome", "error", "message"],
            (
                [a.key, a.outcome.value, a.error_code, (a.error_message or "")[:160]]
                for a in final_actions(report)
                if not tally.counting.fine(a.outcome.value, a.error_code)
            ),
            failing,
            "records",
        )
    else:
        out.append("none")
    return out
