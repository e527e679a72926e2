"""Run locks: an exclusive ``flock``, so two runs that would act on the same disks cannot overlap.

A run of a manifest locks the manifest itself, whatever ``--report`` each run uses: the lock's name
is derived from the manifest's resolved path and kept in a per-user runtime directory
(``$XDG_RUNTIME_DIR/evs-snapshot``, else ``~/.cache/evs-snapshot/locks``), so lock files never pile up
beside reports. Commands that append to a report (``wait``, ``create``) also lock the report the same
way. ``--lock-file`` overrides the manifest's lock. The lock file holds the holder's process id.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from orchestrator.errors import LockHeld, UsageError


def lock_dir(environ: Mapping[str, str]) -> Path:
    runtime = environ.get("XDG_RUNTIME_DIR", "").strip()
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "evs-snapshot"
    cache = environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(cache) if cache else Path.home() / ".cache") / "evs-snapshot" / "locks"


def lock_for(what: str, path: str, environ: Mapping[str, str]) -> Path:
    """The lock of a manifest or report: one file per resolved path, in the per-user lock directory."""
    resolved = str(Path(path).resolve())
    digest = hashlib.sha256(resolved.encode()).hexdigest()[:20]
    return lock_dir(environ) / f"{what}-{Path(path).name[:40]}-{digest}.lock"


@contextlib.contextmanager
def holding(paths: list[Path]) -> Iterator[None]:
    """Hold every lock in ``paths`` (deduplicated, in a fixed order) for the block."""
    with contextlib.ExitStack() as stack:
        for path in sorted(set(paths)):
            stack.enter_context(RunLock(path))
        yield


class RunLock:
    """An exclusive ``flock`` on a lock file; a second holder gets ``LockHeld`` naming the first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(f"cannot open the lock file {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            self.fd = None
            raise LockHeld(
                f"another evs-snapshot run holds {self.path} (process {holder}); nothing was done "
                "(exit 75: try again when it has finished)"
            ) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
