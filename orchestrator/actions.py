"""The records of ``prune``, ``cleanup``, ``rollback``, ``hold`` and ``release``: what became of each
snapshot (or row).

Each of these commands acts on snapshots (or rows) one by one and writes one JSON line per thing it
acted on, in the report style of ``create``: the first line is a run header, then ``ActionRecord``
lines; the last record of a key (a snapshot id, or a row) is its current state. ``--resume`` skips
keys whose last record is ``FINAL`` and looks again at the others before acting.

The run around them (locks, report, resume book, signals, tally, summary, exit code) is the one run
frame of every command, ``orchestrator.frame``.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import orjson

from orchestrator.models import checked_fields, field_types, utc_iso, utc_now
from orchestrator.report import read_typed


class Action(enum.StrEnum):
    """What became of one snapshot (prune, cleanup, hold, release) or row (rollback)."""

    PLANNED = "planned"  # no --apply: what would be done
    KEPT = "kept"  # a retention rule keeps it (prune --verbose records)
    DELETED = "deleted"
    ROLLED_BACK = "rolled_back"
    BLOCKED = "blocked"  # a precondition failed; nothing was sent (e.g. VOLUME_ATTACHED)
    REFUSED = "refused"  # not the tool's own, or not this run's: left alone
    REJECTED = "rejected"  # the API refused it (4xx)
    FAILED = "failed"  # gave up after retries, or could not be confirmed
    ROLLBACK_FAILED = "rollback_failed"  # the disk ended error_rollbacking
    HELD = "held"  # hold: the snapshot carries the hold now
    RELEASED = "released"  # release: the snapshot carries no hold now
    # written (and on disk) before a request that changes the cloud leaves: a rollback's POST (with the
    # disk's updated_at as looked at), a DELETE of prune and cleanup (with the fields of the record it
    # will end in); never a key's last record (``final_actions`` and the resume book skip it): --resume
    # reads it (``outcomes_and_sends``: ``Frame.sent``) and settles a send no end record followed
    SENDING = "sending"
    # the frame's last line of a run whose work came to its end (no signal, no closed route, no error):
    # no key's record (``final_actions``, the resume book and the tally skip it); ``summary`` reads a
    # report whose last run has none as unfinished (``last_run``), when its header says runs write one
    ENDED = "ended"
    # the first line of a run that applies (--apply) resuming a report whose first run planned (its
    # header: ``"apply": false``): no key's record; ``last_run`` reads the run as applying from it on
    APPLYING = "applying"


FINAL = frozenset(
    {Action.DELETED, Action.ROLLED_BACK, Action.REFUSED, Action.KEPT, Action.HELD, Action.RELEASED}
)
SUCCESS = frozenset({Action.PLANNED, Action.KEPT, Action.DELETED, Action.ROLLED_BACK})
# A rollback succeeds only where it rolled back (or, planning, would): a refused row is not restored.
ROLLBACK_SUCCESS = frozenset({Action.PLANNED, Action.ROLLED_BACK})


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
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
    # prune: the rules that condemned it ("keep-last 6") or kept it ("daily ...", "hold: REASON");
    # hold, release: the hold set or removed ("hold: REASON")
    rule: str | None = None
    source_run: str | None = None  # the run id of the snapshot's marker
    http_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    request_id: str | None = None
    attempts: int = 0
    started_at: str
    finished_at: str
    elapsed_ms: int = 0
    snapshot_group_id: str | None = None  # the v5 snapshot group the snapshot is a member of
    disk_updated_at: str | None = None  # a rollback's ``sending`` line: the disk's updated_at before it

    def ending(self, outcome: Action, code: str | None = None, message: str | None = None) -> ActionRecord:
        """This record with ``outcome`` and its error (``code``, ``message``), or none."""
        return dataclasses.replace(self, outcome=outcome, error_code=code, error_message=message)

    def to_json(self) -> bytes:
        """One JSON line; without ``snapshot_group_id`` and ``disk_updated_at`` when they are ``None``
        (reports read as before the fields existed, as ``Record.to_json`` does)."""
        line = orjson.dumps(self, option=orjson.OPT_APPEND_NEWLINE)
        if line.endswith(_NO_DISK):
            line = line[: -len(_NO_DISK)] + b"}\n"
            if self.snapshot_group_id is None and line.endswith(_NO_GROUP):
                return line[: -len(_NO_GROUP)] + b"}\n"
        return line

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
_NO_GROUP = b',"snapshot_group_id":null}\n'
_NO_DISK = b',"disk_updated_at":null}\n'


def now_iso() -> str:
    return utc_iso(utc_now())


def read_actions(path: Path) -> Iterator[ActionRecord]:
    """Every whole record of an action report (header skipped; a torn last line skipped)."""
    return read_typed(path, ActionRecord.from_dict, "a record of this report")


def final_actions(path: Path) -> Iterator[ActionRecord]:
    """The last record of each key, in file order of those records (two passes; ``sending`` and ``ended``
    lines are not records of an outcome)."""
    last: dict[str, int] = {}
    for index, record in enumerate(read_actions(path)):
        if record.outcome not in JOURNAL:
            last[record.key] = index
    for index, record in enumerate(read_actions(path)):
        if last.get(record.key) == index:
            yield record


def outcomes_and_sends(path: Path) -> tuple[dict[str, Action], dict[str, ActionRecord]]:
    """An action report's last outcome of each key, and the requests sent and never seen to end: the
    ``sending`` line of each such send, by key (a later send's line replaces an earlier one's). A
    rollback's line holds the disk's updated_at before it; a deletion's (prune, cleanup) the fields of
    the record it will end in. Only a record of the request's end settles a send (``rolled_back``,
    ``rollback_failed``; ``deleted``): a plan, a blocker (the disk attached again since, say), a
    refusal or a failure to confirm leaves it in doubt."""
    last: dict[str, Action] = {}
    sent: dict[str, ActionRecord] = {}
    sending = Action.SENDING
    for record in read_actions(path):
        if record.outcome is sending:
            sent[record.key] = record
            continue
        if record.outcome in _MARKS:
            continue
        last[record.key] = record.outcome
        if record.outcome in _ENDS:
            sent.pop(record.key, None)
    return last, sent


_MARKS = frozenset({Action.ENDED, Action.APPLYING})  # a run's lines, not a request's
JOURNAL = frozenset({Action.SENDING, *_MARKS})  # lines of an action report that are no key's outcome
# a request's end: its send is settled (a rollback's two ends; a deletion's one, gone; a hold's change)
_ENDS = frozenset({Action.ROLLED_BACK, Action.ROLLBACK_FAILED, Action.DELETED, Action.HELD, Action.RELEASED})


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class LastRun:
    """How the last run of an action report ended, as its lines tell: ``ended`` when its end line
    follows the last record (a run that came to its end writes one); else the lines written since the
    last end line (``written``: its records and its ``sending`` lines, each request's as it left, every
    one a line of the file), and whether the last of them that tells shows a plan
    (a ``planned`` record: ``True``) or acting (``deleted``, ``sending``, ...: ``False``); ``None``: none
    tells. ``applied``: some run of the report applied (an ``applying`` or a ``sending`` line: only a
    run that applies writes either; with the header's ``apply``, that tells for sure). ``seconds``: how
    long the last run took, from its end line (when it opened the report to when it ended); ``None``
    when it has none, or its stamps do not read."""

    ended: bool
    written: int = 0
    plan: bool | None = None
    applied: bool = False
    seconds: float | None = None


_PLANS = frozenset({Action.PLANNED})
_UNTELLING = frozenset({Action.KEPT, Action.BLOCKED, Action.REFUSED})  # written by a plan and an --apply


def last_run(path: Path) -> LastRun:
    """Whether the last run of an action report came to its end (one pass; see ``LastRun``)."""
    ended, written, plan, applied, seconds = False, 0, None, False, None
    for record in read_actions(path):
        outcome = record.outcome
        if outcome is Action.ENDED:
            ended, written, plan = True, 0, None
            seconds = _between(record.started_at, record.finished_at)
            continue
        ended, seconds = False, None
        if outcome is Action.APPLYING:  # the run's mark, not a line of its work
            applied = True
            continue
        written += 1
        applied = applied or outcome is Action.SENDING
        if outcome in _PLANS:
            plan = True
        elif outcome not in _UNTELLING:
            plan = False
    return LastRun(ended=ended, written=written, plan=plan, applied=applied, seconds=seconds)


def _between(started: str, finished: str) -> float | None:
    """Seconds from one stamp of a line to the other; ``None`` when either does not read."""
    try:
        seconds = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    except (TypeError, ValueError):  # naive and aware stamps cannot be subtracted: TypeError
        return None
    return seconds if seconds >= 0 else None
