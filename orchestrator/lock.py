"""Run locks: an exclusive ``flock``, so two commands that would act on the same disks cannot overlap.

Three kinds of lock live in a per-user lock directory, ``.cache/evs-snapshot/locks`` in the user's
home as the password database names it (``EVS_SNAPSHOT_LOCK_DIR`` replaces it): the same for a cron
job, a login shell, ``sudo -u`` and a service of the user, whatever their environment says.
``XDG_RUNTIME_DIR`` (only a login session has one), ``XDG_CACHE_HOME`` (set by some dotfiles) or
``HOME`` would give two processes of one user two directories, and two runs of one manifest at once:

- **a manifest's**, taken by ``create`` and ``prune``: named after the file's identity (device and
  inode, symlinks resolved), so a symlink or a hard link of the manifest is the same manifest. A
  manifest read from standard input is locked by its digest. ``--lock-file`` is held beside it. (A manifest
  rewritten by renaming a new file over it is a new file: a run of it does not wait for one of the old.)
- **a run's**, named after a create run's id: ``create`` (the new run, or the run ``--resume``
  continues), ``wait``, ``cleanup`` and ``rollback`` of that run all take it, so no two of them act on
  one run at once (a copy of the report names the same run).
- **a report's**, named after the resolved path of the report a command is about to write, so that
  two commands never append to one file (a new report has no run id to lock yet).

A second taker gets ``LockHeld`` (exit 75) naming the holder: its process id, command and start
time, which the holder writes into the lock file. A lock file of the lock directory is removed when
its holder releases it, so lock files do not pile up (at most one per manifest, run and report being
written, and only while a command holds it; a killed holder leaves its file, which the next taker
reuses and removes). The holder unlinks the file while it still holds the ``flock``, and a taker
checks, once it holds a ``flock``, that the path still names the file it locked (else it locks the
new file): a taker that opened the file just before the unlink cannot believe it holds the lock. A
``--lock-file`` is never removed: other tools may ``flock`` it too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import os
import pwd
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from orchestrator.errors import LockHeld, ManifestError, Unwritable, UsageError
from orchestrator.models import utc_iso, utc_now
from orchestrator.report import read_header, read_records

_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})  # no room for a lock file: exit 3, as a report
_READ_ONLY = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ETXTBSY})  # may be read, not written
ATTEMPTS = 100  # a lock file removed under a taker this often in a row means something else is wrong
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
# What ``RunLock._name_holder`` writes, and nothing else: the whole file is that one line (a file of the
# user's that only starts like it is neither written nor shown).
_HOLDER_LINE = re.compile(
    rb"[0-9]{1,10} [0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{8,12}Z evs-snapshot( [a-z -]{0,40})?\n"
)


@dataclasses.dataclass(frozen=True, slots=True, eq=False, repr=False)
class Lock:
    """A lock file and what it locks (for the message); ``remove``: delete the file on release."""

    path: Path
    what: str
    remove: bool = True


def lock_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The user's lock directory (the module docstring): ``EVS_SNAPSHOT_LOCK_DIR``, else one under the
    home the password database gives the user (never an XDG variable, nor ``HOME``)."""
    given = environ.get("EVS_SNAPSHOT_LOCK_DIR", "").strip()
    if given:
        if not given.startswith("/"):  # each folder a run starts in would be its own lock directory
            raise UsageError(
                f"EVS_SNAPSHOT_LOCK_DIR={given!r} is not an absolute path (a ~ is not expanded there): give "
                "/path/to/locks, the same for every run of this user; nothing was sent"
            )
        return Path(given)
    try:
        home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:  # a uid with no entry (a container's): the one home there is
        home = Path.home()
    return home / ".cache" / "evs-snapshot" / "locks"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def manifest_locks(path: str, digest: str, lock_file: Path | None) -> list[Lock]:
    """The locks a run of a manifest takes (``create`` and ``prune`` the same): the file's (or, from
    standard input, its content's) and its content's, and ``--lock-file`` beside them, never instead:
    a cron job's --lock-file must keep a run of the same manifest by hand out (it did not)."""
    locks = [manifest_lock(path, digest=digest)]
    if path != "-":
        locks.append(content_lock(digest))  # the same rows from a copy or from standard input
    return locks if lock_file is None else [given_lock(lock_file), *locks]


def manifest_lock(path: str, environ: Mapping[str, str] = os.environ, *, digest: str = "") -> Lock:
    """A manifest's own lock: for standard input (``-``) its ``digest``; else the file's device and inode
    (every name of the file shares it)."""
    if path == "-":
        return content_lock(digest, environ)
    try:
        identity = os.stat(path)  # follows symlinks
    except OSError as exc:
        raise ManifestError(path, None, f"cannot open the manifest: {exc.strerror}") from None
    name = f"manifest-dev{identity.st_dev:x}-ino{identity.st_ino:x}.lock"
    return Lock(lock_dir(environ) / name, f"the lock of manifest {path}")


def content_lock(digest: str, environ: Mapping[str, str] = os.environ) -> Lock:
    """The lock of a manifest's content (its SHA-256): two manifests with the same rows name the same
    disks, whether a file, its copy or standard input; taken beside the file's own lock."""
    return Lock(lock_dir(environ) / f"content-{_digest(digest)}.lock", "the lock of this manifest's content")


def scope_lock(scope: str, environ: Mapping[str, str] = os.environ) -> Lock:
    """The lock of a scope named by a string, not a file (``prune --all-volumes`` of a project)."""
    return Lock(lock_dir(environ) / f"scope-{_digest(scope)}.lock", f"the lock of {scope}")


def report_lock(path: str, environ: Mapping[str, str] = os.environ) -> Lock:
    """The lock of a report a command writes: its resolved path (it may not exist yet)."""
    resolved = str(Path(path).resolve())
    name = f"report-{Path(path).name[:40]}-{_digest(resolved)}.lock"
    return Lock(lock_dir(environ) / name, f"the lock of report {path}")


def run_lock(run: str | Path, environ: Mapping[str, str] = os.environ) -> Lock:
    """The lock of one create run, given its run id or its create report (whose header names the run)."""
    run_id = run if isinstance(run, str) else run_id_of(run)
    name = run_id if _SAFE_NAME.fullmatch(run_id) else _digest(run_id)
    return Lock(lock_dir(environ) / f"run-{name}.lock", f"the lock of run {run_id}")


def run_locks(run: str | Path, lock_file: Path | None = None) -> list[Lock]:
    """What a command acting on a create run holds: the run's lock (by run id or create report), and
    any ``--lock-file`` besides (it never replaces the run's lock)."""
    return [run_lock(run), *([given_lock(lock_file)] if lock_file is not None else [])]


def run_id_of(report: Path) -> str:
    """The run a create report belongs to: its header's run id, else its first record's (exit 2: none)."""

    header = read_header(report)
    if header is not None:
        return header.run_id
    for record in read_records(report):
        return record.run_id
    raise UsageError(f"{report}: the report names no run (no header, no record)")


def given_lock(path: Path) -> Lock:
    """A ``--lock-file``: locked like the others, never removed."""
    return Lock(path, str(path), remove=False)


class Held:
    """The locks a command holds; ``take`` adds more (a lock already held is not taken twice)."""

    def __init__(self, stack: contextlib.ExitStack, command: str) -> None:
        self._stack = stack
        self._command = command
        self._paths: set[Path] = set()

    def take(self, *locks: Lock) -> None:
        for lock in sorted(locks, key=lambda lock: lock.path):
            if lock.path not in self._paths:
                self._stack.enter_context(RunLock(lock, self._command))
                self._paths.add(lock.path)


@contextlib.contextmanager
def holding(locks: Iterable[Lock], command: str) -> Iterator[Held]:
    """Hold every lock (deduplicated, in a fixed order) for the block; ``command`` names the holder."""
    with contextlib.ExitStack() as stack:
        held = Held(stack, command)
        held.take(*locks)
        yield held


class RunLock:
    """An exclusive ``flock`` on a lock file; a second taker gets ``LockHeld`` naming the holder."""

    def __init__(self, lock: Lock | Path, command: str = "") -> None:
        self.lock = lock if isinstance(lock, Lock) else given_lock(lock)
        self.path = self.lock.path
        self.command = command
        self.fd: int | None = None
        self._named = False  # this process wrote its holder line into the file (and empties it at the end)

    def __enter__(self) -> RunLock:
        if not self.lock.remove and (
            str(self.path) == "-" or (self.path.exists() and not self.path.is_file())
        ):
            raise UsageError(f"--lock-file {self.path} is not a regular file (a device, a pipe, a folder, -)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise self._failed(
                exc,
                f"cannot create the lock directory {self.path.parent} (EVS_SNAPSHOT_LOCK_DIR names another, "
                "one every run of this user can write)",
            ) from None
        for _ in range(ATTEMPTS):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                head = os.pread(fd, 200, 0)
                os.close(fd)
                what = f"{self.lock.what} ({self.path})" if self.lock.remove else self.lock.what
                # Only a holder line is read out: a --lock-file of the user's holds their own content
                # (a credentials file, say), which no message may show.
                who = (
                    f"another evs-snapshot run holds {what}: {_holder(head.decode(errors='replace').strip())}"
                    if _HOLDER_LINE.fullmatch(head)
                    else f"another process holds {what} (its flock; the file names no evs-snapshot run)"
                )
                raise LockHeld(f"{who}; nothing was done (exit 75: try again when it has finished)") from None
            if not self.lock.remove or self._still_named(fd):
                self.fd = fd
                self._name_holder(fd)
                return self
            os.close(fd)  # its holder removed it between our open and our flock: lock the new file
        raise LockHeld(f"{self.path} kept being removed while it was being locked; nothing was done")

    def _name_holder(self, fd: int) -> None:
        """Write this process into the lock file it holds; a full disk releases it and stops the command.
        A ``--lock-file`` that holds anything but a holder line (a file of the user's: a report, a
        manifest, a file other tools read), or that was opened read-only, is only locked, never written:
        its content stays."""
        head = os.pread(fd, 200, 0)
        if not self.lock.remove and (
            fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
            or (head and not _HOLDER_LINE.fullmatch(head))
        ):
            return
        self._named = True
        os.ftruncate(fd, 0)
        line = f"{os.getpid()} {utc_iso(utc_now())} evs-snapshot {self.command}\n".encode()
        try:
            os.pwrite(fd, line, 0)
        except OSError as exc:
            self.__exit__()
            raise self._failed(exc, f"cannot write the lock file {self.path}", full=True) from None

    def _failed(self, exc: OSError, what: str, *, full: bool = False) -> Exception:
        """The error of a lock file or folder that cannot be made: a full disk (or a file-size limit)
        stops the command as an unwritable report does (exit 3); anything else is the path's (exit 2)."""
        if full or exc.errno in _FULL:
            return Unwritable(
                f"{what}: {exc.strerror}; nothing was sent. Free space in {self.path.parent} (or lift the "
                "file-size limit, ulimit -f) and run the command again"
            )
        return UsageError(f"{what}: {exc.strerror}")

    def _open(self) -> int:
        """The lock file, opened to be written; a ``--lock-file`` this user may only read (mode 0444, a
        read-only folder or file system, a program being run) is opened read-only: ``flock`` needs no
        more, and such a file is never written."""
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if not self.lock.remove and exc.errno in _READ_ONLY:
                with contextlib.suppress(OSError):
                    return os.open(self.path, os.O_RDONLY)
            raise self._failed(exc, f"cannot open the lock file {self.path}") from None

    def _still_named(self, fd: int) -> bool:
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            return False
        opened = os.fstat(fd)
        return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)

    def __exit__(self, *exc: object) -> None:
        if self.fd is None:
            return
        if self.lock.remove:
            with contextlib.suppress(OSError):
                os.unlink(self.path)  # while the flock is held: see the module docstring
        # Emptied even once unlinked: ext4 takes about 6 ms to close an unlinked file that still holds
        # data, and a create takes four locks (benchmarks startup); an empty one closes in microseconds.
        if self._named:
            os.ftruncate(self.fd, 0)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


def _holder(text: str) -> str:
    """How the lock file's content names its holder: ``process 123 (evs-snapshot wait, since ...)``."""
    pid, _, rest = text.partition(" ")
    if not pid:
        return "process unknown"
    since, _, command = rest.partition(" ")
    return f"process {pid}" + (f" ({command.strip()}, since {since})" if command else "")
