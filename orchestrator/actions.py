"""What ``prune``, ``cleanup`` and ``rollback`` share: their report records, resume book and run frame.

Each of these commands acts on snapshots (or rows) one by one and writes one JSON line per thing it
acted on, in the report style of ``create``: the first line is a run header, then ``ActionRecord``
lines; the last record of a key (a snapshot id, or a row) is its current state. ``--resume`` skips
keys whose last record is final and looks again at the others before acting.

``action_run`` is the frame: the lock, the report writer (with its header), the resume book, the
signal that drains, the tally and the end-of-run summary with its exit code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from orchestrator.console import Console
from orchestrator.errors import UsageError
from orchestrator.models import RunHeader, checked_fields, field_types, utc_iso, utc_now

if TYPE_CHECKING:
    from orchestrator.lock import Lock


class Action(enum.StrEnum):
    """What became of one snapshot (prune, cleanup) or row (rollback)."""

    PLANNED = "planned"  # no --apply: what would be done
    KEPT = "kept"  # a retention rule keeps it (prune --verbose records)
    DELETED = "deleted"
    ROLLED_BACK = "rolled_back"
    BLOCKED = "blocked"  # a precondition failed; nothing was sent (e.g. VOLUME_ATTACHED)
    REFUSED = "refused"  # not the tool's own, or not this run's: left alone
    REJECTED = "rejected"  # the API refused it (4xx)
    FAILED = "failed"  # gave up after retries, or could not be confirmed
    ROLLBACK_FAILED = "rollback_failed"  # the disk ended error_rollbacking


FINAL = frozenset({Action.DELETED, Action.ROLLED_BACK, Action.REFUSED, Action.KEPT})
SUCCESS = frozenset({Action.PLANNED, Action.KEPT, Action.DELETED, Action.ROLLED_BACK})


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ActionRecord:
    """One line of a prune, cleanup or rollback report."""

    run_id: str
    command: str
    key: str  # what --resume recognises: the snapshot id (prune, cleanup) or "row:N" (rollback)
    outcome: Action
    row: int | None = None
    volume_id: str | None = None
    project_id: str | None = None
    region: str | None = None
    snapshot_id: str | None = None
    snapshot_name: str | None = None
    created_at: str | None = None
    rule: str | None = None  # prune: the rule that condemned it (e.g. "keep-last 6")
    source_run: str | None = None  # the run id of the snapshot's marker
    http_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    request_id: str | None = None
    attempts: int = 0
    started_at: str
    finished_at: str
    elapsed_ms: int = 0

    def to_json(self) -> bytes:
        return orjson.dumps(self, option=orjson.OPT_APPEND_NEWLINE)

    @classmethod
    def from_dict(cls, data: object) -> ActionRecord:
        if not isinstance(data, dict):
            raise ValueError("a report line must be a JSON object")  # noqa: TRY004 - callers catch ValueError
        values = checked_fields(data, _TYPES)
        try:
            values["outcome"] = Action(values["outcome"])
            return cls(**values)
        except KeyError as exc:
            raise ValueError(f"no {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from exc


_TYPES = field_types(ActionRecord)


def now_iso() -> str:
    return utc_iso(utc_now())


def read_actions(path: Path) -> Iterator[ActionRecord]:
    """Every whole record of an action report (header skipped; a torn last line skipped)."""
    from orchestrator.report import read_typed  # noqa: PLC0415

    return read_typed(path, ActionRecord.from_dict, "a record of this report")


class ActionBook:
    """The last outcome of each key an earlier run of this report recorded (for ``--resume``)."""

    def __init__(self, last: dict[str, Action]) -> None:
        self.last = last

    @classmethod
    def load(cls, path: Path) -> ActionBook:
        last: dict[str, Action] = {}
        if path.exists():
            for record in read_actions(path):
                last[record.key] = record.outcome
        return cls(last)

    def finished(self, key: str) -> bool:
        """True when the key needs nothing more (deleted, rolled back, refused or kept)."""
        outcome = self.last.get(key)
        return outcome is not None and outcome in FINAL


class ActionTally:
    """Counts of an action run: outcomes, error codes, notes; ``success`` says which outcomes are fine.

    A ``planned`` record that names a blocker (an ``error_code``) is not fine: the plan would not do it.
    """

    def __init__(self, success: frozenset[Action] = SUCCESS | {Action.REFUSED}) -> None:
        self.success = success
        self.outcomes: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()
        self.failing = 0
        self.started = time.monotonic()
        self.notes: list[str] = []

    def add(self, record: ActionRecord) -> None:
        self.outcomes[record.outcome.value] += 1
        fine = record.outcome in self.success and not (record.outcome is Action.PLANNED and record.error_code)
        if not fine:
            self.failing += 1
            if record.error_code:
                self.codes[record.error_code] += 1

    @property
    def exit_code(self) -> int:
        return 1 if self.failing else 0

    def render(self, command: str) -> str:
        parts = ", ".join(f"{count} {outcome}" for outcome, count in sorted(self.outcomes.items()))
        lines = [f"{command}: {sum(self.outcomes.values())} records: {parts or 'nothing to do'}"]
        if self.codes:
            lines.append("errors: " + ", ".join(f"{code} x{n}" for code, n in self.codes.most_common(5)))
        lines += self.notes
        lines.append(f"elapsed {time.monotonic() - self.started:.2f}s")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcomes": dict(sorted(self.outcomes.items())),
            "error_codes": [{"code": code, "rows": n} for code, n in self.codes.most_common()],
            "notes": self.notes,
            "elapsed_s": round(time.monotonic() - self.started, 3),
            "exit_code": self.exit_code,
        }


@dataclasses.dataclass(slots=True)
class ActionRun:
    """What an action command works with inside ``action_run``."""

    run_id: str
    command: str
    report: str
    book: ActionBook
    tally: ActionTally
    console: Console
    write: Callable[[ActionRecord], None]
    stopping: Callable[[], bool]
    draining: Callable[[], contextlib.AbstractContextManager[None]]
    """The drain phase, entered around the acting itself (deletions, rollbacks): there a signal stops
    new work and gives work in flight the grace period; elsewhere (listings, checks) it stops at once."""


@contextlib.asynccontextmanager
async def action_run(
    *,
    command: str,
    report: str,
    source: str,
    shape: dict[str, str],
    resume: bool,
    locks: Sequence[Lock] = (),
    console: Console,
    success: frozenset[Action] = SUCCESS | {Action.REFUSED},
    grace: float = 10.0,
    drain: str | None = None,
    nothing: str = "nothing was done",
) -> AsyncIterator[ActionRun]:
    """Lock, open the report (header first), load the resume book; on a signal, stop taking new work.

    ``locks`` (the run's or the manifest's, and any ``--lock-file``) are held with the report's own.

    The caller acts and writes records through ``ActionRun.write``, inside ``ActionRun.draining()``
    where work in flight must end (``grace`` seconds at most; ``drain`` says what the first signal
    does there); when the block ends, the summary is printed. The exit code is the caller's to compute
    (``ActionRun.tally.exit_code``, or 3 when a route closed); a signal in the drain phase raises
    ``Interrupted`` after the summary; anywhere else it stops the command at once.
    """
    from orchestrator.errors import Interrupted  # noqa: PLC0415
    from orchestrator.lock import holding, report_lock  # noqa: PLC0415
    from orchestrator.report import ReportWriter, check_report_path, read_header  # noqa: PLC0415
    from orchestrator.signals import draining  # noqa: PLC0415

    if resume and report == "-":
        raise UsageError("--resume needs a --report file to read, not standard output")
    if report != "-":
        check_report_path(Path(report))
        locks = [*locks, report_lock(report)]
    with holding(locks, command):
        existing = resume and report != "-" and os.path.exists(report)  # noqa: ASYNC240 - one stat
        header = read_header(Path(report)) if existing else None
        if header is not None and header.command != command:
            raise UsageError(f"{report} is a {header.command} report, not a {command} report")
        if header is not None:
            for key in sorted(set(header.shape) | set(shape)):
                if header.shape.get(key) != shape.get(key):
                    from orchestrator.errors import ResumeMismatch  # noqa: PLC0415

                    raise ResumeMismatch(
                        f"--resume: {key} is {shape.get(key)!r}; {report}'s run used "
                        f"{header.shape.get(key)!r}. Resume with the same options, or start a new "
                        f"report; {nothing}"
                    )
        from orchestrator.config import RunIdentity  # noqa: PLC0415

        run_id = header.run_id if header is not None else RunIdentity.new(utc_now()).run_id
        book = ActionBook.load(Path(report)) if resume and report != "-" else ActionBook({})
        tally = ActionTally(success)
        signals: list[int] = []
        with ReportWriter(report, resume=resume) as writer:
            if writer.empty:
                writer.write_header(
                    RunHeader(
                        run_id=run_id,
                        command=command,
                        manifest=source,
                        rows=0,
                        digest="",
                        shape=shape,
                        started_at=now_iso(),
                    )
                )

            def write(record: ActionRecord) -> None:
                writer.write_line(record.to_json())
                tally.add(record)

            stopped: list[bool] = []

            def drain_phase() -> contextlib.AbstractContextManager[None]:
                return draining(
                    stop=lambda: stopped.append(True),
                    grace=grace,
                    received=signals,
                    console=console,
                    sync=writer.sync,
                    what=drain,
                    left="work in flight has no record; --resume looks at it again before acting",
                )

            run = ActionRun(
                run_id=run_id,
                command=command,
                report=report,
                book=book,
                tally=tally,
                console=console,
                write=write,
                stopping=lambda: bool(stopped),
                draining=drain_phase,
            )
            yield run
        where = "standard output" if report == "-" else report
        console.event("summary", f"{tally.render(command)}\nreport: {where}", report=where, **tally.to_dict())
        if signals:
            raise Interrupted(signals[0])
