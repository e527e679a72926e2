"""A run's tally as its records are written (every command the run frame serves), and the summary of a
whole report (``summary``): the counts that the summary, ``--summary-json``, ``--metrics-file`` and the
exit code are made from. Two things are counted beside it, for what it does not see: ``prune`` counts
its outcomes per disk too, for its per-disk notes (``retention.per_volume_notes``), and the snapshots
it keeps without a record (no ``--verbose``) go to the metrics through ``Frame.also``.

One class counts both record types of SPEC: a create run's rows (``models.Record``) and the records of
``prune``, ``cleanup`` and ``rollback`` (``actions.ActionRecord``). What differs between them is data,
a ``Counting``: which outcomes are fine, and how the summary names what it counted.

It keeps counts, not records: outcomes, error codes with one example row each, the slowest rows,
the rows to act on (capped), requests by kind and time by phase, and one byte per manifest row to
name the rows that have no record. Memory stays flat.
"""

from __future__ import annotations

import dataclasses
import heapq
import shlex
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from orchestrator.actions import (
    ROLLBACK_SUCCESS,
    SUCCESS,
    Action,
    ActionRecord,
    LastRun,
    final_actions,
    last_run,
    outcomes_and_sends,
)
from orchestrator.models import LIMIT_REACHED, SIDE, SUCCESSFUL, Outcome, Record, RunHeader
from orchestrator.report import RowSlots, final_records, read_header, read_records

SLOWEST = 5
LISTED_ROWS_MAX = 1000
OK = SUCCESSFUL | {Outcome.PLANNED}

LISTED_ROWS = 50  # row numbers shown on one line of the human summary
# What to do about a row, by its last outcome (``summary`` prints it; the README explains it).
NEXT_STEP = {
    Outcome.INVALID: "fix these rows; run them as a new manifest (a changed manifest cannot be resumed)",
    Outcome.REJECTED: "the API refused these rows; the next step depends on the error code:",
    Outcome.FAILED: "run the same create command with --resume (uncertain rows are looked up first)",
    Outcome.WAIT_TIMEOUT: "run `evs-snapshot wait REPORT` again (nothing is sent again for these rows)",
    Outcome.SNAPSHOT_ERROR: "the snapshot ended in error: remove it (cleanup), snapshot the disk anew",
}


DENIED = frozenset({"EVS.0003", "EVS.1027", "EVS.2056", "EVS.5403"})
NOT_FOUND = frozenset({"EVS.5404", "EVS.1002"})


def rejected_step(code: str | None, message: str | None) -> str:
    """The next step for a row the API refused, by its error code (and, for a disk's state, its message)."""
    text = (message or "").lower()
    if code == LIMIT_REACHED:
        return "run prune to delete old snapshots of this tool (or ask for more quota), then create --resume"
    if "current status is: in-use" in text:  # 400 EVS.5400 (or a Cinder-style 400) for an attached disk
        return (
            "the disk is attached: run create --resume with --force (a crash-consistent snapshot), "
            "or detach it first"
        )
    if "current status is" in text:
        return "the disk is neither available nor in-use: wait for it or repair it, then create --resume"
    if code in NOT_FOUND:
        return "no such disk in this project: fix these rows and run them as a new manifest"
    if code in DENIED:
        return "permission refused: grant the EVS snapshot permissions, then create --resume"
    return "fix the cause the error message names, then create --resume"


def first_without_record(total: int, recorded: Callable[[int], bool], limit: int = LISTED_ROWS) -> list[int]:
    """The first ``limit`` rows of 1..``total`` that have no record; looks at no more rows than are
    recorded, plus ``limit`` (so a header's row count is never expanded in memory)."""
    found: list[int] = []
    row = 1
    while row <= total and len(found) < limit:
        if not recorded(row):
            found.append(row)
        row += 1
    return found


def where_to(header: RunHeader | None) -> str:
    """The options that send a follow-up command where the run sent its requests (``--endpoint``,
    ``--iam-endpoint``, ``--ca-bundle``, ``--auth``: the header's ``connection``; ``--region``); never a
    credential (they come from the environment, as for the run)."""
    shape = {} if header is None else header.shape
    given = {} if header is None else header.connection
    options = "".join(
        f" --{key.replace('_', '-')} {shlex.quote(given[key])}"
        for key in ("endpoint", "iam_endpoint", "ca_bundle", "auth")
        if given.get(key)
    )
    return options + (f" --region {shlex.quote(shape['region'])}" if shape.get("region") else "")


DELETING = frozenset({"prune", "cleanup"})  # the commands whose reports journal their DELETEs
SENDS = DELETING | {"rollback", "hold", "release"}  # those that journal each request (a sending line)

# Options of an action run its report does not record: the command that finishes it names them.
UNRECORDED = {
    "prune": "--project-id",
    "cleanup": "--include-held/--project-id",
}


def finish_command(report: Path, header: RunHeader, *, apply: bool = True) -> str:
    """The command that finishes (or, planned, carries out) an action run of ``report``: the same command
    resuming it, with the options its header records (prune's rules; the rows, disks or snapshots that
    hold, release and rollback chose; where it sent its requests); ``UNRECORDED`` names those it does
    not."""
    shape, command = header.shape, header.command
    source = header.manifest if header.manifest not in ("", "<stdin>") else "SOURCE"
    words = [f"evs-snapshot {command}"]
    if command == "prune":
        words.append("--all-volumes" if source.startswith("all-volumes:") else shlex.quote(source))
        words += _prune_rules(shape)
    elif command in ("hold", "release", "rollback"):  # the rows (or disks, or snapshots) chosen
        words.append("" if source == "--snapshot" else shlex.quote(source))
        chosen = [("--snapshot", shape.get("snapshots", "")), ("--rows", shape.get("rows", ""))]
        chosen += [("--volume", shape.get("volumes", "")), ("--reason", shape.get("hold", ""))]
        for option, values in chosen:
            many = values.split(",") if option in ("--snapshot", "--volume") else [values]
            words += [f"{option} {shlex.quote(value)}" for value in many if value]
    else:
        words.append(shlex.quote(source))
    words += ["--apply"] if apply else []
    words.append(f"--resume --report {shlex.quote(str(report.resolve()))}{where_to(header)}")
    return " ".join(word for word in words if word)


RULES = (
    "keep_last",
    "keep_within",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
)


def _prune_rules(shape: Mapping[str, str]) -> list[str]:
    """prune's options as its report's header records them (a resume must repeat them)."""
    words = []
    for key in RULES:  # keep_within as seconds (``1209600.0``), which --keep-within reads as such
        if shape.get(key, "None") != "None":
            words.append(f"--{key.replace('_', '-')} {shlex.quote(shape[key])}")
    words += [f"--tz {shlex.quote(shape['tz'])}"] if shape.get("tz") else []
    words += ["--allow-none"] if shape.get("allow_none") == "True" else []
    words += [f"--name-prefix {shlex.quote(shape['name_prefix'])}"] if shape.get("name_prefix") else []
    return words


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Counting:
    """What differs between counting a create run's rows and an action run's records.

    A record is fine when its outcome is in ``success``, except a ``planned`` record that names a
    blocker (an ``error_code``): the plan would not do it. ``command`` names an action run in its
    summary ("prune: 3 records: ..."); a create run's summary counts rows of its manifest instead.
    """

    success: frozenset[str]
    command: str | None = None

    @classmethod
    def records(cls, command: str, success: frozenset[str] = SUCCESS | {Action.REFUSED}) -> Counting:
        """The records of ``prune``, ``cleanup`` or ``rollback``."""
        return cls(success=success, command=command)

    @classmethod
    def of_command(cls, command: str) -> Counting:
        """How the report of ``command`` is counted: by its run, and by ``summary`` later (one table)."""
        if command == "create":
            return ROWS
        return cls.records(command, _SUCCESS_OF.get(command, SUCCESS | {Action.REFUSED}))

    @property
    def rows(self) -> bool:
        """True for the rows of a create run (next steps, row numbers, requests by phase)."""
        return self.command is None

    def fine(self, outcome: str, error_code: str | None) -> bool:
        return outcome in self.success and not (outcome == _PLANNED and error_code)


ROWS = Counting(success=frozenset(OK))
# What succeeds, by command (prune, cleanup: SUCCESS and refused): a rollback only where it rolled back
# (or would); a hold or release where the snapshot carries (or not) the hold now, or would.
_SUCCESS_OF: dict[str, frozenset[str]] = {
    "rollback": ROLLBACK_SUCCESS,
    "hold": frozenset({Action.PLANNED, Action.HELD, Action.RELEASED}),
    "release": frozenset({Action.PLANNED, Action.HELD, Action.RELEASED}),
}
DRY_RUN_ADVICE = "a dry run is not resumed: run it again with another --report to see the whole plan"
_PLANNED = Outcome.PLANNED.value


class Tally:
    """Counts what a run (or a report) holds; ``counting`` says what a record is."""

    def __init__(
        self, *, manifest_rows: int | None = None, counting: Counting = ROWS, dry_run: bool = False
    ) -> None:
        self.manifest_rows = manifest_rows
        self.counting = counting
        self.dry_run = dry_run  # a dry run's missing rows are planned again, never resumed
        self.failing = 0  # records counted that are not fine, and what a command adds (exit 1)
        self.notes: list[str] = []  # lines a command adds to the summary
        self.outcomes: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()
        self.examples: dict[str, str] = {}
        self.slowest: list[tuple[int, int, str]] = []
        self.to_act: dict[str, list[int]] = {}
        self.to_act_count: Counter[str] = Counter()
        self.attempts = 0
        self.requests: Counter[str] = Counter()
        self.phases: dict[str, float] = {}
        self.phase_requests: dict[str, Counter[str]] = {}
        self.duplicates: Counter[str] = Counter()
        self.unfinished: list[str] = []  # run-level steps that did not complete (exit 1)
        self.finish: str | None = None  # an unfinished action report: the command that finishes its run
        self.rejected: Counter[tuple[str, str]] = Counter()  # (error code, next step) of rejected rows
        self.recorded: RowSlots[int] = RowSlots("B", 0)  # 1 at each manifest row that has a record
        self.untracked = 0  # rows counted without a number within the manifest: rows are not named then
        self.started = time.monotonic()
        # ``of_report`` of an action report: no run's clock runs; ``took`` is its last run's time as its
        # end line tells (``None``: it has none)
        self.read = False
        self.took: float | None = None

    # --- counting ------------------------------------------------------------------------
    def add_previous(self, outcome: Outcome, row: int | None = None) -> None:
        """Count a row that a previous run of this report finished (``--resume``, ``wait``)."""
        self.outcomes[outcome.value] += 1
        if not self.counting.fine(outcome.value, None):
            self.failing += 1
        self._mark(row)

    def _mark(self, row: object) -> None:
        if self.manifest_rows is None:
            return
        if not isinstance(row, int) or isinstance(row, bool) or not 1 <= row <= self.manifest_rows:
            self.untracked += 1
            return
        self.recorded[row] = 1

    def add(self, record: Record | ActionRecord) -> None:
        """Count a record written now (a row's newest state, a sweep's side record, an action's record)."""
        if isinstance(record, Record):
            if record.outcome in SIDE:
                if record.outcome is not Outcome.SENDING:  # the journal of attempts is not an outcome
                    self.duplicates[record.outcome._value_] += 1
                return
            self.add_row(
                record.outcome,
                record.row,
                record.attempts,
                record.elapsed_ms,
                record.volume_id,
                record.error_code,
                record.error_message,
            )
            return
        self._count(record.outcome._value_, record.error_code)

    def _count(self, outcome: str, error_code: str | None) -> bool:
        """Count an outcome (and its error code when it is not fine); True when it is fine."""
        self.outcomes[outcome] += 1
        fine = self.counting.fine(outcome, error_code)
        if not fine:
            self.failing += 1
            if error_code is not None:
                self.codes[error_code] += 1
        return fine

    def add_row(
        self,
        outcome: Outcome,
        row: int,
        attempts: int,
        elapsed_ms: int,
        volume_id: str | None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> None:
        """Count a create run's row record (not a side record) from its fields: what ``add`` does with a
        ``Record``, for the runner's usual row, which is written without building one."""
        # ``_value_``, the member's plain attribute: ``.value`` is a Python-level property (once a row).
        fine = self._count(outcome._value_, error_code)
        self._mark(row)
        self.attempts += attempts
        if error_code is not None and not fine:
            message = error_message or ""
            example = message if message.startswith(f"row {row} ") else f"row {row}: {message}"
            self.examples.setdefault(error_code, example)
        if outcome is Outcome.REJECTED:
            self.rejected[(error_code or "no error code", rejected_step(error_code, error_message))] += 1
        entry = (elapsed_ms, row, volume_id or "")  # typed by the report reader
        if len(self.slowest) < SLOWEST:
            heapq.heappush(self.slowest, entry)
        else:
            heapq.heappushpop(self.slowest, entry)
        if outcome in NEXT_STEP:
            self.to_act_count[outcome._value_] += 1
            rows = self.to_act.setdefault(outcome._value_, [])
            if len(rows) < LISTED_ROWS_MAX:
                rows.append(row)

    def all_succeeded(self) -> bool:
        """True when every row counted so far ended in a success."""
        return all(Outcome(outcome) in SUCCESSFUL for outcome in self.outcomes)

    def replace(self, previous: Record, record: Record) -> None:
        """A row's state changed (a sweep's reconciliation): count the new one instead of the old one,
        which leaves the error codes and the rows to retry as well, so the closing summary agrees with
        ``summary`` of the report."""
        outcome = previous.outcome.value
        self.outcomes[outcome] -= 1
        if not self.outcomes[outcome]:
            del self.outcomes[outcome]
        code = previous.error_code
        fine = self.counting.fine(outcome, code)
        if not fine:
            self.failing -= 1
        if code is not None and not fine and self.codes.get(code):
            self.codes[code] -= 1
            if not self.codes[code]:
                del self.codes[code], self.examples[code]
        if previous.outcome in NEXT_STEP and self.to_act_count.get(outcome):
            self.to_act_count[outcome] -= 1
            if not self.to_act_count[outcome]:
                del self.to_act_count[outcome]
            rows = self.to_act.get(outcome, [])
            if previous.row in rows:
                rows.remove(previous.row)
            if not rows:
                self.to_act.pop(outcome, None)
        if previous.outcome is Outcome.REJECTED:
            self.rejected[
                (
                    previous.error_code or "no error code",
                    rejected_step(previous.error_code, previous.error_message),
                )
            ] -= 1
            self.rejected = +self.rejected
        self.attempts -= previous.attempts  # the new record carries the row's attempts again
        self.add(record)

    def _marked(self, row: object) -> bool:
        return isinstance(row, int) and row > 0 and bool(self.recorded[row])

    def phase(self, name: str, seconds: float, totals: Mapping[str, int]) -> None:
        """A phase ended: its time, and the requests sent since the last phase (``totals``: so far)."""
        self.phases[name] = self.phases.get(name, 0.0) + seconds
        sent = Counter({kind: count - self.requests.get(kind, 0) for kind, count in totals.items()})
        self.phase_requests.setdefault(name, Counter()).update(+sent)
        self.requests = Counter(totals)

    def sent(self, totals: Mapping[str, int]) -> None:
        """An action run ended: the requests it sent, by kind (a create run's come with its phases)."""
        self.requests = +Counter(totals)

    def carried_over(self) -> Tally:
        """A fresh row count for the next phase (``wait``), keeping the time, requests and sweep so far."""
        tally = Tally(manifest_rows=self.manifest_rows, counting=self.counting, dry_run=self.dry_run)
        tally.started, tally.phases, tally.phase_requests = self.started, self.phases, self.phase_requests
        tally.requests, tally.duplicates, tally.unfinished = self.requests, self.duplicates, self.unfinished
        return tally

    @classmethod
    def of_report(cls, path: Path) -> Tally:
        """The summary of a report: the last record of each row (or, in a prune, cleanup or rollback
        report, of each snapshot or row acted on), plus a create report's sweep records."""
        header = read_header(path)
        if header is not None and header.command != "create":
            tally = cls(counting=Counting.of_command(header.command))
            tally.read = True
            for action in final_actions(path):
                tally.add(action)
            if header.command in SENDS:
                tally.unsettled_sends(path, header.command)
            if header.ends:
                run = last_run(path)
                tally.took = run.seconds
                tally.unended(path, header, run)
            return tally
        tally = cls(
            manifest_rows=None if header is None else header.rows,
            dry_run=header is not None and header.dry_run,
        )
        for record in final_records(path):
            tally.add(record)
        for record in read_records(path):
            if record.side:
                tally.add(record)
        return tally

    def unsettled_sends(self, path: Path, command: str = "rollback") -> None:
        """The keys of an action report whose request was sent (a ``sending`` line) and that have no
        record since but a plan's: a rollback report's rows, a prune or cleanup report's snapshots (the
        tool asked EVS to delete them). A note naming them, and exit 1 (they may have gone through;
        ``--resume --apply`` tells). A plan resumed after a killed --apply settles none of them, and
        must not hide them (a blocker or a failure after a send is counted as what it is)."""
        last, sent = outcomes_and_sends(path)
        keys = [key for key in sent if last.get(key) in (None, Action.PLANNED)]
        if command == "rollback":
            keys = [str(row) for row in sorted(int(key[4:]) for key in keys if key.startswith("row:"))]
            what, which = "rollback", "row"
            settle = "`rollback --resume --apply` with this report looks at each disk before anything is "
            settle += "sent again"
        elif command in DELETING:
            what, which = "deletion", "snapshot"
            settle = (
                f"`{command} --resume --apply` with this report records each: deleted when it is gone, "
                "else judged again"
            )
        else:  # hold, release: each snapshot is looked at again, and changed if it still needs it
            what, which = command, "snapshot"
            settle = f"`{command} --resume --apply` with this report looks at each again"
        if keys:
            shown = ", ".join(keys[:10]) + (", ..." if len(keys) > 10 else "")
            many = len(keys) != 1
            said = f"{what}s were sent and have" if many else f"{what} was sent and has"
            self.notes.append(
                f"{len(keys)} {said} no record ({which}{'s' if many else ''} {shown}): the run stopped "
                f"before {'their' if many else 'its'} end; {settle}"
            )
            self.failing += len(keys)

    def unended(self, path: Path, header: RunHeader, run: LastRun) -> None:
        """An action report whose last run did not come to its end (no ``ended`` line after its last
        record: a signal, a closed route, a crash or a kill): one line saying so and the command that
        finishes it, and exit 1 (``unfinished``)."""
        if run.ended:
            return
        wrote = (
            f"after {run.written} line{'s' if run.written != 1 else ''}" if run.written else "before acting"
        )
        # A header that records ``apply`` tells for sure whether a run applied to the report (its own, or
        # an ``applying`` line): then only an --apply finishes it (a plan since writes no end line);
        # before the field, only the last run's records may tell (``None``: they do not).
        if header.apply is None:
            applying = None if run.plan is None else not run.plan
        else:
            applying = header.apply or run.applied
        self.finish = finish_command(path, header, apply=applying is True)
        line = (
            f"unfinished: the last {header.command} run of this report stopped {wrote} (a signal, a closed "
            "route, a crash or a kill"
            + ("; or it applied, and a plan since does not finish it" if applying and run.plan else "")
            + "), so what it still had to do has no record; finish it with "
            f"`{self.finish}`"
            + (
                f" with the run's {UNRECORDED[header.command]}, if it had them"
                if header.command in UNRECORDED
                else ""
            )
            # A report older than the header's ``apply`` whose records do not tell: the command plans (it
            # changes nothing); an --apply run is finished by adding --apply.
            + (" (with --apply if the run was applying: its records do not tell)" if applying is None else "")
        )
        self.notes.append(line)
        self.unfinished.append(line)

    # --- reading -------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        return sum(self.outcomes.values())

    @property
    def done(self) -> int:
        return self.rows

    @property
    def missing(self) -> int:
        """Manifest rows with no record at all (never started), when the manifest's size is known."""
        return 0 if self.manifest_rows is None else max(0, self.manifest_rows - self.rows)

    def without_record(self) -> list[int]:
        """The first rows of the manifest without a record (empty when some rows were counted unnamed)."""
        if not self.missing or self.untracked > 0 or self.manifest_rows is None:
            return []
        return first_without_record(self.manifest_rows, self._marked)

    def missing_line(self) -> str:
        """What the summaries (text and markdown) say of the rows without a record, and what to do."""
        named = self.without_record()
        more = "" if len(named) >= self.missing else ", ..."
        shown = f" (rows {', '.join(map(str, named))}{more})" if named else ""
        return (
            f"{self.missing} of {self.manifest_rows} rows have no record{shown}: not reached, or in "
            "flight when the run stopped; "
            + (DRY_RUN_ADVICE if self.dry_run else "run the same create command with --resume")
        )

    @property
    def resume_next(self) -> bool:
        """``create --resume`` is a next step: rows without a record, or ``failed`` ones (not in a dry run,
        which is never resumed)."""
        return not self.dry_run and bool(self.missing or self.to_act_count.get(Outcome.FAILED.value))

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def exit_code(self) -> int:
        """0 when every record counted is fine and, for a create run, every row of the manifest has one
        (at least one: a dry run's ``planned`` counts), else 1."""
        counted = self.rows > 0 or not self.counting.rows  # an action run may have nothing to do
        return 0 if counted and not self.failing and not self.missing and not self.unfinished else 1

    def _of(self) -> str:
        if self.manifest_rows is None:
            return ""
        return f" ({self.rows} of {self.manifest_rows} rows have a record)"

    def render(self, *, detailed: bool = False) -> str:
        """The human summary: counts, errors, next steps; ``detailed`` adds examples and slowest rows."""
        parts = ", ".join(f"{count} {outcome}" for outcome, count in sorted(self.outcomes.items()))
        command = self.counting.command
        if command is not None:
            lines = [f"{command}: {self.rows} records: {parts or 'nothing to do'}"]
        else:
            lines = [f"{self.rows} rows: {parts or 'none'}{self._of()}"]
        if self.missing:
            lines.append(self.missing_line())
        if self.duplicates:
            found = sum(self.duplicates.values())
            removed = self.duplicates.get(Outcome.DUPLICATE_DELETED.value, 0)
            lines.append(f"duplicates: {found} found, {removed} removed (each is a record in the report)")
        if self.codes:
            if detailed:
                lines.append("errors:")
                lines += [
                    f"  {code} x{n}" + (f" (e.g. {self.examples[code]})" if code in self.examples else "")
                    for code, n in self.codes.most_common(10)
                ]
            else:
                top = ", ".join(f"{code} x{count}" for code, count in self.codes.most_common(5))
                lines.append(f"{'top errors' if command is None else 'errors'}: {top}")
        if detailed and self.slowest:
            slow = ", ".join(f"row {row} {ms} ms" for ms, row, _ in sorted(self.slowest, reverse=True))
            lines.append(f"slowest: {slow}")
        if self.to_act_count:
            count = sum(self.to_act_count.values())
            rows = sorted(row for rows in self.to_act.values() for row in rows)[:50]
            more = "" if count <= 50 else f" ... ({count} in all)"
            lines.append(f"rows to retry ({count}): {', '.join(map(str, rows))}{more}")
            for outcome, number in sorted(self.to_act_count.items()):
                lines.append(f"  {outcome} ({number}): {NEXT_STEP[Outcome(outcome)]}")
                if outcome == Outcome.REJECTED.value:
                    lines += [f"    {code} x{n}: {step}" for (code, step), n in self.rejected.most_common()]
        lines += self.notes
        if self.read:  # a report's: its requests were not counted, its last run's end line may tell
            lines += [] if self.took is None else [f"the last run took {self.took:.2f}s"]
        elif self.phases or command is not None:
            lines.append(self._timing())
        return "\n".join(lines)

    def _timing(self) -> str:
        """The run's requests by kind over its time, and (a create run's) its phases."""
        total = sum(self.requests.values())
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(self.requests.items()))
        phases = ", ".join(
            f"{name} {seconds:.2f}s/{sum(self.phase_requests.get(name, Counter()).values())} requests"
            for name, seconds in self.phases.items()
        )
        rate = total / self.elapsed if self.elapsed > 0 else 0.0
        return f"{total} requests ({kinds or 'none'}) in {self.elapsed:.2f}s ({rate:.1f} requests/s)" + (
            f"; phases: {phases}" if self.phases else ""
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of ``summary --json`` and ``--summary-json`` (one shape for both; an action run's
        is its outcomes, error codes, notes, requests by kind, time and exit code; a report's time is its
        last run's, ``null`` when its lines do not tell it)."""
        if not self.counting.rows:
            took = self.took if self.read else self.elapsed
            return {
                "outcomes": dict(sorted(self.outcomes.items())),
                "error_codes": [{"code": code, "rows": n} for code, n in self.codes.most_common()],
                "notes": self.notes,
                **({"unfinished": self.unfinished} if self.unfinished else {}),
                "requests_by_kind": dict(sorted(self.requests.items())),
                "elapsed_s": None if took is None else round(took, 3),
                "exit_code": self.exit_code,
            }
        return {
            "rows": self.rows,
            "manifest_rows": self.manifest_rows,
            "missing_rows": self.missing,
            "rows_without_record": self.without_record(),
            "outcomes": dict(sorted(self.outcomes.items())),
            "error_codes": [
                {"code": code, "rows": count, "example": self.examples[code]}
                for code, count in self.codes.most_common()
            ],
            "slowest": [
                {"row": row, "volume_id": volume, "elapsed_ms": ms}
                for ms, row, volume in sorted(self.slowest, reverse=True)
            ],
            "next_steps": [
                {
                    "outcome": outcome,
                    "rows": sorted(self.to_act[outcome]),
                    "count": count,
                    "next": NEXT_STEP[Outcome(outcome)],
                    **(
                        {
                            "by_error_code": [
                                {"code": code, "count": n, "next": step}
                                for (code, step), n in self.rejected.most_common()
                            ]
                        }
                        if outcome == Outcome.REJECTED.value
                        else {}
                    ),
                }
                for outcome, count in sorted(self.to_act_count.items())
            ],
            "rows_to_retry": sorted(row for rows in self.to_act.values() for row in rows)[:LISTED_ROWS_MAX],
            "rows_to_retry_count": sum(self.to_act_count.values()),
            "duplicates": dict(self.duplicates),
            "requests": sum(self.requests.values()) if self.requests else self.attempts,
            "requests_by_kind": dict(sorted(self.requests.items())),
            "attempts": self.attempts,
            "phases": {
                name: {"seconds": round(seconds, 3), "requests": dict(self.phase_requests.get(name, {}))}
                for name, seconds in self.phases.items()
            },
            "elapsed_s": round(self.elapsed, 3),
            "exit_code": self.exit_code,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
