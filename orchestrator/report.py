"""The JSON-lines report: a durable append-only writer, a tolerant reader, and the running tally.

Each record is written with one ``write`` of a whole line straight to the file descriptor (no
buffer to lose); the file is fsynced at least once a second while records arrive, and at close.
"""

from __future__ import annotations

import os
import sys
import time
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from orchestrator.errors import ReportExistsError, UsageError
from orchestrator.models import SUCCESSFUL, Outcome, Record

FSYNC_INTERVAL = 1.0


class ReportWriter:
    """Appends records to a report file (or standard output when the path is ``-``)."""

    def __init__(self, path: str, *, resume: bool = False) -> None:
        self.path = path
        self._last_sync = time.monotonic()
        if path == "-":
            self.fd = sys.stdout.fileno()
            self._owned = False
            return
        target = Path(path)
        if not resume and target.exists() and target.stat().st_size > 0:
            raise ReportExistsError(
                f"the report {path} already holds records; pass --resume to continue that run, "
                "or choose another --report path"
            )
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise UsageError(f"cannot write the report {path}: {exc.strerror}") from None
        self._owned = True
        self._cut_torn_tail()

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

    def write(self, record: Record) -> None:
        """Append one record as one whole line."""
        data = memoryview(record.to_json())
        while data:
            written = os.write(self.fd, data)
            data = data[written:]
        now = time.monotonic()
        if now - self._last_sync >= FSYNC_INTERVAL:
            self.sync()
            self._last_sync = now

    def sync(self) -> None:
        if self._owned:
            os.fsync(self.fd)

    def close(self) -> None:
        if self._owned:
            self.sync()
            os.close(self.fd)
            self._owned = False

    def __enter__(self) -> ReportWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(path: Path) -> Iterator[Record]:
    """Every whole record of a report, in file order; a torn last line (a killed writer) is skipped."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield Record.from_json(line)
            except ValueError as exc:
                if not line.endswith(b"\n"):
                    return  # the writer died mid-line; the row is redone on resume
                raise UsageError(f"{path}:{number}: not a report record ({exc})") from None


class ResumeBook:
    """What a previous run of this report already did, one byte per row (flat memory).

    Each byte is 0 (no record: the row was in flight or not reached) or 1 + the index of the row's
    last outcome. Rows with no record and ``failed`` rows are uncertain: the snapshot may exist, so
    they are looked up before anything is sent again (one list request each, always safe).
    """

    OUTCOMES: ClassVar[list[Outcome]] = list(Outcome)

    def __init__(self, run_id: str, states: bytearray) -> None:
        self.run_id = run_id
        self.states = states

    @classmethod
    def load(cls, path: Path) -> ResumeBook | None:
        """Read a report; ``None`` when it does not exist or holds no record."""
        if not path.exists():
            return None
        run_id = None
        states = bytearray()
        for record in read_records(path):
            run_id = run_id or record.run_id
            if record.row >= len(states):
                states.extend(bytes(record.row + 1 - len(states)))
            states[record.row] = cls.OUTCOMES.index(record.outcome) + 1
        return None if run_id is None else cls(run_id, states)

    def outcome(self, row: int) -> Outcome | None:
        state = self.states[row] if row < len(self.states) else 0
        return self.OUTCOMES[state - 1] if state else None

    def done(self, row: int) -> bool:
        outcome = self.outcome(row)
        return outcome is not None and outcome in SUCCESSFUL

    def uncertain(self, row: int) -> bool:
        """True when a snapshot may exist (in flight when the last run died, or failed after sending)."""
        outcome = self.outcome(row)
        return outcome is None or outcome is Outcome.FAILED


def final_records(path: Path) -> Iterator[Record]:
    """The last record of each row, in file order of those records (two passes, 8 bytes per row)."""
    last = array("q")
    for index, record in enumerate(read_records(path)):
        if record.row >= len(last):
            last.extend([-1] * (record.row + 1 - len(last)))
        last[record.row] = index
    for index, record in enumerate(read_records(path)):
        if last[record.row] == index:
            yield record
