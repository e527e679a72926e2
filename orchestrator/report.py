"""The JSON-lines report: a durable append-only writer, a tolerant reader, and the running tally.

Each record is written with one ``write`` of a whole line straight to the file descriptor (no
buffer to lose); the file is fsynced at least once a second while records arrive, and at close.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from orchestrator.errors import ReportExistsError, UsageError
from orchestrator.models import Record, Summary

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
            self.fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise UsageError(f"cannot write the report {path}: {exc.strerror}") from None
        self._owned = True

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


class Tally:
    """Counts outcomes and error codes as records are written, without keeping the records."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()
        self.requests = 0
        self.started = time.monotonic()

    def add(self, record: Record) -> None:
        self.outcomes[record.outcome.value] += 1
        self.requests += record.attempts
        if record.error_code is not None and not record.succeeded:
            self.codes[record.error_code] += 1

    @property
    def done(self) -> int:
        return sum(self.outcomes.values())

    def summary(self) -> Summary:
        return Summary(
            rows=self.done,
            outcomes=dict(self.outcomes),
            error_codes=dict(self.codes.most_common()),
            requests=self.requests,
            elapsed_s=time.monotonic() - self.started,
        )
