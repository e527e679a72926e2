"""Frozen records that flow through a run (request, report record, summary) and their JSON forms.

No I/O here: readers and writers live in ``manifest.py`` and ``report.py``.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

# A run id, as ``RunIdentity.new`` writes it (the shape: ASCII digits only); ``is_run_id`` is the check.
_RUN_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}")
RUN_STAMP = "%Y%m%dT%H%M%SZ"  # the start time a run id begins with, UTC


def is_run_id(value: str) -> bool:
    """``value`` is a run id the tool could have written: the shape, and a start time that is a real UTC
    date-time (not month 13, 30 February or year 0)."""
    if _RUN_ID.fullmatch(value) is None:
        return False
    try:
        datetime.strptime(value[:16], RUN_STAMP)
    except ValueError:
        return False
    return True


class Outcome(enum.StrEnum):
    """What became of one manifest row; the last record of a row holds its current outcome."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    INVALID = "invalid"
    FAILED = "failed"
    PLANNED = "planned"
    AVAILABLE = "available"
    SNAPSHOT_ERROR = "snapshot_error"
    WAIT_TIMEOUT = "wait_timeout"
    DUPLICATE_DELETED = "duplicate_deleted"
    DUPLICATE_FOUND = "duplicate_found"
    SENDING = "sending"


SUCCESSFUL = frozenset({Outcome.ACCEPTED, Outcome.AVAILABLE})
# Side records never change the row's state: what the duplicate sweep did about a row, and ``sending``,
# written just before each create request leaves (so a resume knows when a row was last sent).
SIDE = frozenset({Outcome.DUPLICATE_DELETED, Outcome.DUPLICATE_FOUND, Outcome.SENDING})


def _seconds(value: object) -> float:
    """A header's duration: a non-negative number, else 0 (unknown)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 10**9:
        return float(value)
    return 0.0


def utc_iso(moment: datetime) -> str:
    """Render a UTC instant as ISO 8601 with milliseconds and a ``Z``."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    second = _second(moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)
    # Not ``isoformat``: it formats through C's printf, several times the instructions of this.
    return second + _MILLIS[moment.microsecond // 1000]  # two per record: the second is rendered once


@functools.lru_cache(maxsize=4)
def _second(year: int, month: int, day: int, hour: int, minute: int, second: int) -> str:
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"


def utc_now() -> datetime:
    return datetime.now(UTC)


def utc_iso_now() -> str:
    """Now, as ``utc_iso(utc_now())`` renders it, without a datetime (a run's row takes three)."""
    second, nanos = divmod(time.time_ns(), 1_000_000_000)
    return _epoch_second(second) + _MILLIS[nanos // 1_000_000]


# A timestamp's tail, ``.mmmZ``, for each millisecond: a ``:03d`` format spec costs an int's
# ``__format__`` call and a longer f-string (about 3,500 instructions a timestamp, three a row), the
# table one index.
_DIGITS = "0123456789"
_MILLIS = [f".{hundreds}{tens}{ones}Z" for hundreds in _DIGITS for tens in _DIGITS for ones in _DIGITS]


@functools.lru_cache(maxsize=4)
def _epoch_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


class SnapshotRequest(NamedTuple):
    """One validated manifest row: exactly what will be sent for it (a named tuple, not a frozen
    dataclass: one is made a row, and a tuple is made in C; build it by keyword)."""

    row: int
    line: int
    volume_id: str
    project_id: str | None
    region: str | None
    name: str
    description: str | None
    force: bool
    metadata: Mapping[str, str]

    def body(self, marker: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The create-snapshot request body, in the field order the official SDK sends.

        ``marker`` (the run's identity) is added to the row's metadata.
        """
        snapshot: dict[str, Any] = {"volume_id": self.volume_id, "force": self.force}
        if self.metadata or marker:
            snapshot["metadata"] = {**self.metadata, **(marker or {})}
        if self.description is not None:
            snapshot["description"] = self.description
        snapshot["name"] = self.name
        return {"snapshot": snapshot}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """One line of the JSON-lines report."""

    run_id: str
    row: int
    volume_id: str | None
    project_id: str | None
    region: str | None
    name: str | None
    outcome: Outcome
    http_status: int | None = None
    snapshot_id: str | None = None
    snapshot_status: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    request_id: str | None = None
    attempts: int = 0
    reconciled: bool = False
    started_at: str
    finished_at: str
    elapsed_ms: int
    # ``create --consistency server``: the v5 snapshot group the row's snapshot (``snapshot_id``, the
    # group's member on the row's disk) belongs to; ``None`` for a snapshot made alone.
    snapshot_group_id: str | None = None

    def to_json(self) -> bytes:
        """The record as one JSON line, newline included (``record_line``)."""
        return record_line(
            self.run_id,
            self.row,
            self.volume_id,
            self.project_id,
            self.region,
            self.name,
            self.outcome,
            self.http_status,
            self.snapshot_id,
            self.snapshot_status,
            self.error_code,
            self.error_message,
            self.request_id,
            self.attempts,
            self.reconciled,
            self.started_at,
            self.finished_at,
            self.elapsed_ms,
            self.snapshot_group_id,
        )

    @staticmethod
    def sending_line(request: SnapshotRequest, *, run_id: str, attempts: int, at: str) -> bytes:
        """The ``sending`` journal line of a create about to leave at ``at``: the bytes ``to_json`` gives
        that record, without building it (one per attempt; nothing reads it back in this process).
        ``sending_now`` gives it from a row's ``record_head``, for a create leaving now."""
        head = record_head(
            run_id, request.row, request.volume_id, request.project_id, request.region, request.name
        )
        if _PLAIN_TEXT(at):  # a timestamp (``utc_iso``): the constant tail with its values put in
            stamp = at.encode()
            return head + _SENDING_TAIL % (attempts, stamp, stamp)
        return record_tail(
            head, Outcome.SENDING, None, None, None, None, None, None, attempts, False, at, at, 0
        )

    @classmethod
    def from_dict(cls, data: object) -> Record:
        """A record from a parsed report line; raises ``ValueError`` when it is not one."""
        if not isinstance(data, dict):
            raise ValueError("a report line must be a JSON object")  # noqa: TRY004 - callers catch ValueError
        values = checked_fields(data, _RECORD_TYPES)
        try:
            values["outcome"] = Outcome(values["outcome"])
            return cls(**values)
        except KeyError as exc:
            raise ValueError(f"no {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from exc

    @property
    def succeeded(self) -> bool:
        return self.outcome in SUCCESSFUL

    @property
    def side(self) -> bool:
        """True for a sweep's record about a row, which leaves the row's state as it was."""
        return self.outcome in SIDE


def record_line(
    run_id: str,
    row: int,
    volume_id: str | None,
    project_id: str | None,
    region: str | None,
    name: str | None,
    outcome: Outcome,
    http_status: int | None,
    snapshot_id: str | None,
    snapshot_status: str | None,
    error_code: str | None,
    error_message: str | None,
    request_id: str | None,
    attempts: int,
    reconciled: bool,
    started_at: str,
    finished_at: str,
    elapsed_ms: int,
    snapshot_group_id: str | None = None,
) -> bytes:
    """A ``Record`` as one JSON line, newline included, without building one (the one place the line
    is written, as ``record_head`` and ``record_tail``): its fields in their order, as ``orjson.dumps``
    writes the dataclass (a dict is serialised about twice as fast as a slotted dataclass, and this
    runs once a row), without ``snapshot_group_id`` when it is ``None`` (records of snapshots made
    alone read as before the field existed)."""
    return record_tail(
        record_head(run_id, row, volume_id, project_id, region, name),
        outcome,
        http_status,
        snapshot_id,
        snapshot_status,
        error_code,
        error_message,
        request_id,
        attempts,
        reconciled,
        started_at,
        finished_at,
        elapsed_ms,
        snapshot_group_id,
    )


def record_head(
    run_id: str, row: int, volume_id: str | None, project_id: str | None, region: str | None, name: str | None
) -> bytes:
    """A record line's first six fields, the row's identity, up to the comma after them
    (``{"run_id":...,"name":...,``): a row's journal lines and its record serialise it once."""
    identity = {
        "run_id": run_id,
        "row": row,
        "volume_id": volume_id,
        "project_id": project_id,
        "region": region,
        "name": name,
    }
    return orjson.dumps(identity)[:-1] + b","


def record_tail(
    head: bytes,
    outcome: Outcome,
    http_status: int | None,
    snapshot_id: str | None,
    snapshot_status: str | None,
    error_code: str | None,
    error_message: str | None,
    request_id: str | None,
    attempts: int,
    reconciled: bool,
    started_at: str,
    finished_at: str,
    elapsed_ms: int,
    snapshot_group_id: str | None = None,
) -> bytes:
    """The line ``record_line`` gives, from the row's ``record_head`` and the other fields (orjson
    writes no whitespace: the head and the tail's object without its ``{`` join into the same bytes)."""
    fields = {
        "outcome": outcome,
        "http_status": http_status,
        "snapshot_id": snapshot_id,
        "snapshot_status": snapshot_status,
        "error_code": error_code,
        "error_message": error_message,
        "request_id": request_id,
        "attempts": attempts,
        "reconciled": reconciled,
        "started_at": started_at,
        "finished_at": finished_at,
        "elapsed_ms": elapsed_ms,
    }
    if snapshot_group_id is not None:
        fields["snapshot_group_id"] = snapshot_group_id
    return head + orjson.dumps(fields, option=orjson.OPT_APPEND_NEWLINE)[1:]


# A ``sending`` line's tail as ``record_tail`` writes it, its attempts and time (twice) to put in: the
# rest is constant. Text that JSON writes as it is (a ``utc_iso`` timestamp) goes in as it is.
_SENDING_TAIL = (
    record_tail(b"", Outcome.SENDING, None, None, None, None, None, None, 987654321, False, "@", "@", 0)
    .replace(b"987654321", b"%d")
    .replace(b'"@"', b'"%s"')
)
_PLAIN_TEXT = re.compile(r"[0-9A-Za-z:.+\-]*").fullmatch


def sending_now(head: bytes, attempts: int) -> bytes:
    """``Record.sending_line`` of a create leaving now, after the row's ``record_head``: the time is
    ``utc_iso_now``'s, plain text, which goes in as it is without the check (a regex) a given time needs."""
    stamp = utc_iso_now().encode()
    return head + _SENDING_TAIL % (attempts, stamp, stamp)


def planned(run_id: str, request: SnapshotRequest) -> Record:
    """A dry run's record of a valid row: what would be sent, and that nothing was."""
    now = utc_iso(utc_now())
    return Record(
        run_id=run_id,
        row=request.row,
        volume_id=request.volume_id,
        project_id=request.project_id,
        region=request.region,
        name=request.name,
        outcome=Outcome.PLANNED,
        started_at=now,
        finished_at=now,
        elapsed_ms=0,
    )


def field_types(record_type: type) -> dict[str, tuple[type, ...]]:
    """The JSON types each field of a frozen record accepts, from its annotation (``str | None``, ...)."""
    known: dict[str, type] = {"str": str, "int": int, "bool": bool, "None": type(None), "Action": str}
    known["Outcome"] = str
    table = {}
    for field in dataclasses.fields(record_type):
        names = [part.strip() for part in str(field.type).split("|")]
        table[field.name] = tuple(known[name] for name in names)
    return table


def checked_fields(data: Mapping[str, Any], types: Mapping[str, tuple[type, ...]]) -> dict[str, Any]:
    """The known fields of a parsed line, each checked against its type (``ValueError`` naming it).

    A ``bool`` is not taken for an ``int`` (JSON ``true`` is not a row number), nor a float for either.
    """
    values = {}
    for key, value in data.items():
        allowed = types.get(key)
        if allowed is None:
            continue
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            expected = " or ".join("null" if kind is type(None) else kind.__name__ for kind in allowed)
            raise ValueError(f"{key} must be {expected}, not {value!r}"[:200])
        values[key] = value
    return values


_RECORD_TYPES = field_types(Record)


ABSENT_SHAPE = {"consistency": "disk"}  # what a shape key a run leaves out means


def shape_difference(old: Mapping[str, str], new: Mapping[str, str], whose: str) -> str | None:
    """The first option of a run's shape that differs between ``whose`` (``old``) and a resume of it
    (``new``), as a sentence; ``None`` when they are the same. A key left out reads as its default."""
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            shown = [
                repr(shape[key]) if key in shape else repr(ABSENT_SHAPE.get(key, "not given"))
                for shape in (new, old)
            ]
            return f"{key} is {shown[0]}; {whose} used {shown[1]}"
    return None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class RunHeader:
    """The first line of a report: the run, and the manifest and options its names came from.

    ``--resume`` refuses a manifest or options that differ; ``summary`` and ``wait`` read ``rows``.
    """

    run_id: str
    command: str
    manifest: str
    rows: int
    digest: str
    shape: Mapping[str, str]
    started_at: str
    # A run against ``--emulator`` (its snapshots live in a process that is gone) and a ``--dry-run``
    # (nothing was sent): later commands refuse to act on either against the real cloud.
    emulator: bool = False
    dry_run: bool = False
    # Each create attempt is journalled (a ``sending`` record) before it leaves: a resume sends a row
    # with no ``sending`` record at once. Reports written before the journal existed lack the flag.
    journal: bool = False
    # Each run of an action report (prune, cleanup, rollback, hold, release) writes an ``ended`` line
    # when its work came to its end: ``summary`` reads a report whose last run has none as unfinished.
    # Reports written before the end line existed lack the flag, and read as before.
    ends: bool = False
    # Seconds after a create left within which its snapshot may still appear (--timeout + --settle):
    # cleanup waits that long after the last send whose answer the report does not hold.
    window: float = 0.0
    # Where the run sent its requests, as its options said (``Connection.recorded``: never a credential),
    # so that ``summary --format markdown`` can write the follow-up commands with them.
    connection: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # An action report's first run applied (``--apply``: true) or planned (false). An ``--apply`` resuming
    # a plan writes an ``applying`` line first; a plan resuming a report a run applied to writes no end line.
    # ``None``: not recorded (a create report, or an action report written before the field).
    apply: bool | None = None

    def to_json(self) -> bytes:
        data: dict[str, Any] = {"type": "run", **dataclasses.asdict(self)}
        for flag in ("emulator", "dry_run", "journal", "ends", "window", "connection"):
            if not data[flag]:
                del data[flag]  # headers of ordinary runs read as before
        if self.apply is None:
            del data["apply"]
        return orjson.dumps(data, option=orjson.OPT_APPEND_NEWLINE)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunHeader:
        rows, run_id = data.get("rows"), data.get("run_id")
        if not isinstance(run_id, str) or not run_id:
            raise ValueError("not a run header: no run_id")
        if not is_run_id(run_id):  # ASCII digits and a real time, as create writes it
            raise ValueError(
                f"not a run header of evs-snapshot: run_id {run_id!r} is not a run id of the tool "
                "(a real UTC time YYYYMMDDTHHMMSSZ, - and six lower-case hex digits): the report was edited, "
                "or is not one of this tool"
            )
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
            raise ValueError(f"not a run header: rows must be a whole number of 0 or more, not {rows!r}")
        try:
            return cls(
                run_id=run_id,
                command=str(data.get("command", "create")),
                manifest=str(data.get("manifest", "")),
                rows=rows,
                digest=str(data.get("digest", "")),
                shape={str(k): str(v) for k, v in dict(data.get("shape") or {}).items()},
                started_at=str(data.get("started_at", "")),
                emulator=data.get("emulator") is True,
                dry_run=data.get("dry_run") is True,
                journal=data.get("journal") is True,
                ends=data.get("ends") is True,
                window=_seconds(data.get("window")),
                connection={str(k): str(v) for k, v in dict(data.get("connection") or {}).items()},
                apply=data["apply"] if isinstance(data.get("apply"), bool) else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a run header: {exc}") from exc

    def manifest_file(self) -> str | None:
        """The file the run read its manifest from, as the header names it (a create run: the path it was
        given, relative to where it ran), or ``None`` (standard input, or not recorded)."""
        return None if self.manifest in ("", "<stdin>", "-") else self.manifest

    def nothing_in_the_cloud(self) -> str | None:
        """Why no snapshot of this run can exist in a real cloud (``None``: the run sent its requests there).

        ``wait``, ``cleanup`` and ``rollback`` refuse such a report (exit 2) instead of asking the cloud.
        """
        if self.dry_run:
            return f"is the report of a --dry-run: nothing was sent, so run {self.run_id} made no snapshot"
        if self.emulator:
            return (
                f"was made with --emulator: the snapshots of run {self.run_id} lived in an in-process "
                "emulator that ended with that run, not in a cloud this command could reach"
            )
        return None

    def first_difference(self, other: RunHeader) -> str | None:
        """What differs between this report's run and the one about to resume it (``None``: same)."""
        if self.rows != other.rows:
            return f"the manifest has {other.rows} rows; the report's had {self.rows}"
        if self.digest != other.digest:
            return f"the manifest's content differs ({other.digest[:19]}... vs {self.digest[:19]}...)"
        return shape_difference(self.shape, other.shape, "the report's run")


RESOURCE_NOT_FOUND = frozenset({"EVS.5404"})  # the code a snapshot or disk that does not exist answers
NO_SUCH_API = frozenset({"APIGW.0101", "APIG.0101"})  # the gateway's 404: an API missing in the region
# The code of a row the per-disk limit or the project's quota refuses (create) or would refuse
# (validate --online: ``preflight``); here, in the base, so the dry run's tally reads it without api/.
LIMIT_REACHED = "SNAPSHOT_LIMIT_REACHED"
# A request that may have arrived and whose effect could not be seen (create, group create, rollback).
UNCONFIRMED = "UNCONFIRMED"


class Answer(NamedTuple):
    """An HTTP answer: status, parsed JSON body (or ``None``), and the headers we use (a named tuple:
    one is made a request; build it by keyword).

    ``sent_with`` is the token the request carried, so that a 401 renews only a token not yet renewed.
    Neither token is shown in its ``repr``.
    """

    status: int
    body: Any
    request_id: str | None
    retry_after: str | None = None
    subject_token: str | None = None
    sent_with: str | None = None
    date: str | None = None  # the server's ``Date`` header

    def __repr__(self) -> str:
        return (
            f"Answer(status={self.status!r}, body={self.body!r}, request_id={self.request_id!r}, "
            f"retry_after={self.retry_after!r})"
        )

    @property
    def ok(self) -> bool:
        return self.status < 400

    @property
    def gone(self) -> bool:
        """A 404 that the resource itself gave (``EVS.5404``, or the Cinder ``itemNotFound`` body).

        Any other 404 (the gateway's ``APIGW.0101``: an API missing in the region, a wrong path)
        says nothing of the resource: it is never taken for "already gone".
        """
        if self.status != 404:
            return False
        body = self.body
        return (isinstance(body, dict) and "itemNotFound" in body) or self.error()[0] in RESOURCE_NOT_FOUND

    def error(self) -> tuple[str, str | None]:
        """``(error_code, error_message)`` from whichever body shape came back, as the SDK reads it."""
        found = _find_error(self.body)
        if found is None:
            return str(self.status), None
        code, message = found
        return str(code), (None if message is None else str(message))


def _find_error(body: object) -> tuple[object, object] | None:
    if not isinstance(body, dict):
        return None
    for code_key, message_key in (
        ("error_code", "error_msg"),
        ("errorCode", "errorMsg"),
        ("code", "message"),
    ):
        if code_key in body and body[code_key] is not None:
            return body[code_key], body.get(message_key)
    for value in body.values():
        found = _find_error(value)
        if found is not None:
            return found
    return None
