"""The JSON-lines report: a durable append-only writer, a tolerant reader, and the one resume book.

Each record is written with one ``write`` of a whole line straight to the file descriptor (no
buffer to lose); the file is fsynced at least once a second while records arrive, and at close.
The first line of a report is its run header (``models.RunHeader``); readers skip it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import stat
import sys
import time
from array import array
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

import orjson

from orchestrator.config import RunIdentity, file_in_the_way
from orchestrator.errors import ReportExistsError, ReportUnwritable, ResumeMismatch, UsageError
from orchestrator.models import SUCCESSFUL, Outcome, Record, RunHeader, utc_iso, utc_now

_T = TypeVar("_T")
_N = TypeVar("_N", int, float)
_K = TypeVar("_K")
_O = TypeVar("_O")
_K_contra = TypeVar("_K_contra", contravariant=True)
_O_co = TypeVar("_O_co", covariant=True)

if TYPE_CHECKING:
    from orchestrator.config import RowDefaults, RunIdentity

FSYNC_INTERVAL = 1.0
# Rows in these states are not sent again on --resume (they are waited for, or left to the operator).
FINISHED = SUCCESSFUL | {Outcome.WAIT_TIMEOUT, Outcome.SNAPSHOT_ERROR}


class ReportWriter:
    """Appends records to a report file (or standard output when the path is ``-``)."""

    def __init__(self, path: str, *, resume: bool = False, command: str = "create") -> None:
        self.path = path
        self.command = command  # whose run it is: the advice when a write fails (``stopped_advice``)
        self._last_sync = time.monotonic()
        self.written = 0
        self.run_id: str | None = None
        if path == "-":
            self.fd = sys.stdout.fileno()
            self._owned = False
            return
        target = Path(path)
        check_report_path(target)
        if not resume:
            refuse_existing(target)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            blocker = file_in_the_way(target)
            why = exc.strerror if blocker is None else f"{blocker} is a file, not a directory"
            raise UsageError(f"cannot write the report {path}: {why}") from None
        self._owned = True
        self._cut_torn_tail()

    @property
    def resumable(self) -> bool:
        """A report in a file can be resumed (standard output cannot: no journal is kept there)."""
        return self.path != "-"

    @property
    def empty(self) -> bool:
        return not self._owned or os.fstat(self.fd).st_size == 0

    def _cut_torn_tail(self) -> None:
        """Drop a last line a killed writer left half-written, so the next record starts on its own line."""
        size = os.fstat(self.fd).st_size
        if size == 0 or os.pread(self.fd, 1, size - 1) == b"\n":
            return
        keep = size
        while keep > 0:
            start = max(0, keep - 65536)
            newline = os.pread(self.fd, keep - start, start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            keep = start
        os.ftruncate(self.fd, keep)

    def write_header(self, header: RunHeader) -> None:
        self.run_id = header.run_id
        self._write(header.to_json())

    def write_line(self, line: bytes) -> None:
        """Append one whole JSON line already serialised (an action report's record, a journal line)."""
        self._write(line)
        self.written += 1

    def write(self, record: Record) -> None:
        """Append one record as one whole line; raises ``ReportUnwritable`` when it cannot."""
        self.write_record(record.to_json())

    def write_record(self, line: bytes) -> None:
        """Append one record already serialised (``models.record_line``: a run's usual row)."""
        self._write(line)
        self.written += 1

    def _write(self, line: bytes) -> None:
        try:
            written = os.write(self.fd, line)  # the whole line, but for a short write
            if written < len(line):
                data = memoryview(line)[written:]
                while data:
                    data = data[os.write(self.fd, data) :]
        except OSError as exc:
            self._fail(exc)
        now = time.monotonic()
        if now - self._last_sync >= FSYNC_INTERVAL:
            self.sync()
            self._last_sync = now

    def _fail(self, exc: OSError) -> None:
        where = "standard output" if self.path == "-" else f"the report {self.path}"
        if exc.errno == errno.EPIPE:
            why = "the reader of standard output went away (broken pipe)"
        else:
            why = exc.strerror or type(exc).__name__
        if self._owned:
            self._cut_torn_tail()  # a partial line must not stay in the report
        advice = stopped_advice(self.command, resumable=self._owned, run_id=self.run_id)
        lines = f"{self.written} line{'' if self.written == 1 else 's'}"  # records and journal lines
        raise ReportUnwritable(
            f"cannot write {where}: {why}; the run stopped after {lines}. {advice}"
        ) from None

    def sync(self) -> None:
        if self._owned:
            try:
                os.fsync(self.fd)
            except OSError as exc:
                self._fail(exc)

    def close(self) -> None:
        if self._owned:
            self._owned = False
            with contextlib.suppress(OSError):  # already reported by the write that failed
                os.fsync(self.fd)
            os.close(self.fd)

    def __enter__(self) -> ReportWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stopped_advice(command: str, *, resumable: bool, run_id: str | None = None) -> str:
    """The end of the error that stops ``command``'s run on a report it cannot write: how to go on
    (``--resume``, and what it does about the requests in flight), or, for a report on standard
    output, what may have been done that no record names."""
    if command == "wait":  # no --resume: the report's records are read again
        return "Fix it and run the same wait again"
    if command == "create":
        resumed = "rows in flight are looked up before anything is resent"
        unnamed = "rows in flight may have made a snapshot"
    elif command in ("prune", "cleanup"):
        resumed = (
            "each snapshot whose DELETE was sent without a record is looked up before anything is sent again"
        )
        unnamed = "DELETEs in flight may have deleted a snapshot"
    else:  # rollback, hold, release
        resumed = "what the report does not settle is looked at again before anything is sent"
        unnamed = "requests in flight may have changed a snapshot"
    if resumable:
        return f"Fix it and run again with --resume ({resumed})"
    marker = f" (metadata evs_snapshot_run={run_id})" if run_id else ""
    return (
        f"A report on standard output cannot be resumed: {unnamed}{marker} that no record names; "
        "next time write the report to a file (--report PATH)"
    )


def refuse_existing(path: Path) -> None:
    """A new run never writes into a report that already holds records (exit 2)."""
    check_report_path(path)
    if path.exists() and path.stat().st_size > 0:
        raise ReportExistsError(
            f"the report {path} already holds records; pass --resume to continue that run, "
            "or choose another --report path"
        )


def same_file(one: Path, other: Path) -> bool:
    """Both paths name one file: the same inode (a hard link, a symlink), or the same path once resolved
    (one of them does not exist yet). The one identity test of a report, a side file or a lock file
    against a file the command reads."""
    try:
        return os.path.samefile(one, other)
    except OSError:
        return one.resolve() == other.resolve()


def header_path(path: str) -> str:
    """How a run header names the file a run read (a manifest, a create report): an absolute path when it
    is a file, so that a later command run from elsewhere finds it (and the command printed to finish the
    run works anywhere); otherwise as given (``<stdin>``)."""
    return str(Path(path).resolve()) if os.path.isfile(path) else path


def writes_to(report: str, other: Path) -> bool:
    """A command's ``--report`` is ``other``: by ``same_file``, or for ``-`` (standard output) by the file
    standard output was sent to (``--report - >> create.jsonl``)."""
    if report != "-":
        return same_file(Path(report), other)
    try:
        out, there = os.fstat(1), os.stat(other)
    except OSError:
        return False
    return (out.st_dev, out.st_ino) == (there.st_dev, there.st_ino)


def check_report_path(path: Path) -> None:
    """A report is a regular file (or will be): not a directory, a device or a pipe."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        blocker = file_in_the_way(path)
        if blocker is not None:
            raise UsageError(
                f"cannot use the report {path}: {blocker} is a file, not a directory; give another path"
            ) from None
        if isinstance(exc, FileNotFoundError):
            return
        raise UsageError(f"cannot use the report {path}: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise UsageError(f"the report {path} is a directory; give a file path such as {path}/run.jsonl")
    if not stat.S_ISREG(mode):
        raise UsageError(
            f"the report {path} is not a regular file (a device or a pipe); give a file path, "
            "or - for standard output"
        )


def report_lines(path: Path) -> Iterator[tuple[int, bytes, object]]:
    """Every whole, parsed line of a report, its run header first; a torn last line is skipped.

    The rules every reader relies on are checked here, once: the first line is the run header, there
    is exactly one, and every record belongs to its run. A file that breaks one (two reports joined,
    a record of another run) is a usage error naming ``file:line`` and both run ids.
    """
    check_report_path(path)
    header: RunHeader | None = None
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if not line.endswith(b"\n"):
                return  # the writer died mid-line (every line it writes ends so): the row is redone on resume
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise UsageError(f"{path}:{number}: not a report record ({exc})") from None
            is_header = isinstance(data, dict) and data.get("type") == "run"
            if header is None:
                if not is_header:
                    raise UsageError(
                        f"{path}:{number}: a report starts with its run header (a line with "
                        '"type": "run"); this file does not: it is not a report of evs-snapshot, or was cut '
                        "at the start"
                    )
                header = _parse_header(path, number, data)
            elif is_header:
                other = data.get("run_id") if isinstance(data, dict) else None
                raise UsageError(
                    f"{path}:{number}: a second run header (run {other}) after run {header.run_id}'s: "
                    "the file holds two runs (reports joined together?); give each run's report on its own"
                )
            elif isinstance(data, dict) and data.get("run_id", header.run_id) != header.run_id:
                raise UsageError(
                    f"{path}:{number}: a record of run {data.get('run_id')} in the report of run "
                    f"{header.run_id}: the file holds two runs; give each run's report on its own"
                )
            yield number, line, data


def _parse_header(path: Path, number: int, data: object) -> RunHeader:
    if not isinstance(data, dict):
        raise UsageError(f"{path}:{number}: not a run header")
    try:
        return RunHeader.from_dict(data)
    except ValueError as exc:
        raise UsageError(f"{path}:{number}: {exc}") from None


def torn_tail(path: Path) -> int | None:
    """The line number of a last line a killed writer left half-written, or ``None``."""
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return None
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return None
        handle.seek(0)
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b"")) + 1


def read_header(path: Path) -> RunHeader | None:
    """The run header of a report, or ``None`` when the report is empty."""
    for number, _, data in report_lines(path):
        return _parse_header(path, number, data)
    return None


def read_records(path: Path) -> Iterator[Record]:
    """Every whole record of a create report, in file order (the header is skipped).

    Each record's ``row`` is checked against the header's ``rows``: a row outside 1..rows is a usage
    error naming ``file:line``, so no reader sizes anything by a number it has not checked.
    """
    return read_typed(path, Record.from_dict, "a report record", rows_checked=True)


def read_typed(
    path: Path, parse: Callable[[Any], _T], what: str, *, rows_checked: bool = False
) -> Iterator[_T]:
    """Every whole record of a report as ``parse`` reads it (header skipped; a torn last line
    skipped); a whole line ``parse`` refuses is a usage error naming ``file:line``."""
    rows: int | None = None
    for number, _, data in report_lines(path):
        if rows is None:
            rows = _parse_header(path, number, data).rows
            continue
        try:
            record = parse(data)
        except ValueError as exc:
            raise UsageError(f"{path}:{number}: not {what} ({exc})") from None
        row = getattr(record, "row", None)
        if rows_checked and isinstance(row, int) and not 1 <= row <= rows:
            raise UsageError(
                f"{path}:{number}: row {row} is outside the run's manifest (rows 1 to {rows}, as its "
                "header says); the report was edited or damaged"
            )
        yield record


class RowSlots(Generic[_N]):
    """A value per row number: a flat array while the rows read are dense, a dict once a row lies far
    beyond them. Memory follows the records read, never a row count a file claims (a header may say
    a trillion rows over forty lines)."""

    SPREAD = 16  # a row more than this many times the records read (plus a margin) goes sparse

    def __init__(self, typecode: str, default: _N) -> None:
        self._flat: array[Any] = array(typecode)
        self._default: _N = default
        self._sparse: dict[int, _N] | None = None
        self._count = 0

    def __setitem__(self, row: int, value: _N) -> None:
        self._count += 1
        flat = self._flat
        if row == len(flat) and self._sparse is None:  # the usual case: the next row, in order
            flat.append(value)  # (never the one that goes sparse: a dense array's end is within SPREAD)
            return
        if self._sparse is None and row >= len(flat) and row > self.SPREAD * self._count + 65536:
            self._sparse = {index: item for index, item in enumerate(flat) if item != self._default}
        if self._sparse is not None:
            self._sparse[row] = value
            return
        if row > len(flat):
            flat.extend(array(flat.typecode, [self._default]) * (row + 1 - len(flat)))
        flat[row] = value

    def __getitem__(self, row: int) -> _N:
        if self._sparse is not None:
            return self._sparse.get(row, self._default)
        if row < len(self._flat):
            value: _N = self._flat[row]
            return value
        return self._default


class Outcomes(Protocol[_K_contra, _O_co]):
    """The last outcome of each key a resume book holds (a ``dict``, or a create report's rows)."""

    def get(self, key: _K_contra, /) -> _O_co | None: ...

    def __getitem__(self, key: _K_contra, /) -> _O_co: ...


class RowOutcomes:
    """A create report's last outcome per row, one byte a row (0: no record; else 1 + its index)."""

    OUTCOMES: ClassVar[list[Outcome]] = list(Outcome)

    def __init__(self) -> None:
        self.states: RowSlots[int] = RowSlots("B", 0)

    def set(self, row: int, outcome: Outcome) -> None:
        self.states[row] = self.OUTCOMES.index(outcome) + 1

    def get(self, row: int, /) -> Outcome | None:
        state = self.states[row]
        return self.OUTCOMES[state - 1] if state else None

    def __getitem__(self, row: int, /) -> Outcome:
        outcome = self.get(row)
        if outcome is None:
            raise KeyError(row)
        return outcome


@dataclasses.dataclass(slots=True, kw_only=True, eq=False, repr=False)
class Journal:
    """What a create report tells of its sends: the wall-clock time of each row's last ``sending``
    record (one float per row, 0 when none), and whether an earlier process may have left two
    snapshots of a row (``doubted``: a row sent twice, or ``failed`` after it was sent, or a report
    without a journal to tell)."""

    header: RunHeader
    sent: RowSlots[float]
    doubted: bool
    offset: float  # wall clock -> this process's monotonic clock
    since: float  # without a journal, the previous process died at or after its last write


class ResumeBook(Generic[_K, _O]):
    """What an earlier run of this report did: the last outcome of each key; ``final`` outcomes need
    nothing more on ``--resume``.

    One class for both record types: a create run's book is keyed by row (flat memory: one byte and,
    in its ``journal``, one float per row; ``load``); an action run's by its records' ``key``, the
    snapshot id or ``row:N`` (``keyed``).

    A create row that is not finished is uncertain when some create of it may have reached EVS: it was
    sent (a ``sending`` record) and no answer proved it refused. Such a row is looked up until
    ``--settle`` has passed since its last send (plus the request ``--timeout``) before it may be sent
    again. A row never sent is sent at once. A report written before the journal existed (no
    ``journal`` flag in its header) cannot tell: every row without a success is uncertain from the
    report's last write.
    """

    def __init__(self, last: Outcomes[_K, _O], final: frozenset[_O], journal: Journal | None = None) -> None:
        self.last = last
        self.final = final
        self.journal = journal

    @classmethod
    def keyed(cls, last: dict[_K, _O], final: frozenset[_O]) -> ResumeBook[_K, _O]:
        return cls(last, final)

    @classmethod
    def load(cls, path: Path) -> ResumeBook[int, Outcome] | None:
        """Read a create report; ``None`` when it does not exist or is empty."""
        if not path.exists():
            return None
        header = read_header(path)
        if header is None:
            return None
        states = RowOutcomes()
        sent: RowSlots[float] = RowSlots("d", 0.0)
        sending, failed = Outcome.SENDING, Outcome.FAILED
        doubted = not header.journal
        for record in read_records(path):
            if record.outcome is sending:
                doubted = doubted or sent[record.row] > 0  # sent twice: two snapshots are possible
                sent[record.row] = epoch(record.started_at)
            elif not record.side:
                states.set(record.row, record.outcome)
                doubted = doubted or (record.outcome is failed and sent[record.row] > 0)
        offset = time.monotonic() - time.time()
        journal = Journal(
            header=header, sent=sent, doubted=doubted, offset=offset, since=path.stat().st_mtime + offset
        )
        return ResumeBook(states, FINISHED, journal)

    def outcome(self, key: _K) -> _O | None:
        return self.last.get(key)

    def finished(self, key: _K) -> bool:
        """True when the key needs nothing more: a create row succeeded or its snapshot exists (waited
        for); an action's snapshot was deleted, kept or refused, or its row rolled back."""
        outcome = self.last.get(key)
        return outcome is not None and outcome in self.final

    # --- a create report's journal ---------------------------------------------------------------
    def _journal(self) -> Journal:
        if self.journal is None:
            raise TypeError("only a create report's book has a journal")
        return self.journal

    @property
    def header(self) -> RunHeader:
        return self._journal().header

    @property
    def run_id(self) -> str:
        return self._journal().header.run_id

    @property
    def doubted(self) -> bool:
        return self._journal().doubted

    def uncertain_since(self: ResumeBook[int, Outcome], row: int) -> float | None:
        """When (monotonic) a create of the row was last sent, if one may have acted; ``None``: surely not."""
        journal = self._journal()
        outcome = self.last.get(row)
        if outcome is not None and outcome is not Outcome.FAILED:
            return None
        if not journal.header.journal:
            return journal.since
        last_send = journal.sent[row]
        return last_send + journal.offset if last_send else None


def epoch(stamp: str) -> float:
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return time.time()  # unreadable: as if sent just now (the longest wait, the safe side)


def final_records(path: Path) -> Iterator[Record]:
    """The last record of each row, in file order of those records (two passes, 8 bytes per row read)."""
    last: RowSlots[int] = RowSlots("q", -1)
    for index, record in enumerate(read_records(path)):
        if not record.side:
            last[record.row] = index
    for index, record in enumerate(read_records(path)):
        if not record.side and last[record.row] == index:
            yield record


def name_shape(row_defaults: RowDefaults) -> dict[str, str]:
    """The options that shape names, metadata and where rows go: a resume with others would misidentify rows.

    ``metadata`` holds the ``--metadata`` values as given, templates unrendered (``{tag:env}``), so a
    resume with another template is refused. ``--force`` and ``--description`` may change between a
    run and its resume (say, to force the rows that were refused as in-use).
    """
    shape = {
        "name_template": row_defaults.name_template,
        "metadata": orjson.dumps(dict(row_defaults.metadata), option=orjson.OPT_SORT_KEYS).decode(),
        "project_id": row_defaults.project_id or "",
        "region": row_defaults.region or "",
    }
    if row_defaults.hold is not None:  # only when given: reports of runs without one read as before
        shape["hold"] = row_defaults.hold
    return shape


def resume_identity(
    report: str, resume: bool, *, total: int, digest: str, display: str, shape: dict[str, str]
) -> tuple[ResumeBook[int, Outcome] | None, RunIdentity]:
    """The resume book and run identity of a create run; refuses a resume of another manifest (exit 2)."""

    book = ResumeBook.load(Path(report)) if resume else None
    if book is None:
        return None, RunIdentity.new(utc_now())
    identity = RunIdentity.resumed(book.run_id)
    if book.header.command != "create":
        raise ResumeMismatch(
            f"{report} is a {book.header.command} report, not a create report; nothing was sent"
        )
    if book.header.dry_run:
        raise ResumeMismatch(
            f"{report} holds a --dry-run's plan, not a run: nothing of it was sent, so there is nothing to "
            "resume. Start the run with a new --report; nothing was sent"
        )
    current = RunHeader(
        run_id=identity.run_id,
        command="create",
        manifest=display,
        rows=total,
        digest=digest,
        shape=shape,
        started_at=utc_iso(identity.started),
    )
    difference = book.header.first_difference(current)
    if difference is not None:
        raise ResumeMismatch(
            f"--resume: {difference}. A resumed run must use the same manifest and naming options as "
            f"{report}; nothing was sent"
        )
    return book, identity
