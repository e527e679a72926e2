"""The run lock: an exclusive ``flock``, so two runs that would act on the same disks cannot overlap."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from orchestrator.errors import LockHeld, UsageError


def lock_path(report: str, lock_file: Path | None) -> Path | None:
    """The lock of a report: ``--lock-file``, else the report path + ``.lock`` (none for standard output)."""
    return lock_file or (None if report == "-" else Path(report + ".lock"))


class ReportLock:
    """An exclusive ``flock`` on the lock file, so two runs on one report cannot overlap."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> ReportLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(f"cannot open the lock file {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise LockHeld(
                f"another evs-snapshot run holds {self.path}; nothing was done (exit 75: try again later)"
            ) from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
