"""The locks: one per manifest (by file identity, or by digest for standard input), one per create run
(by run id), one per report being written; a second taker exits 75 naming the holder and sends nothing;
lock files are removed by their holder, safely, so they do not pile up.

A "holder" here is a real evs-snapshot process pointed at an endpoint that accepts connections and never
answers: once its first request arrives, it holds every lock it takes, until the test kills it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestrator.emulator import EmulatorThread
from orchestrator.entry import exit_code_of
from orchestrator.errors import LockHeld, Unwritable, UsageError
from orchestrator.lock import Lock, RunLock, holding, lock_dir, manifest_lock, run_lock
from tests.helpers import (
    ACTION_RETRIES,
    API_IDS,
    FAST_RETRIES,
    PROJECT,
    Launched,
    cli_args,
    create_args,
    csv_manifest,
    invoke,
    lines,
    lock_files,
    records,
    run_main,
    run_process,
    snapshots_per_volume,
    volume_ids,
)

HANG = ("--timeout", "120", "--max-attempts", "1")  # the holder's one request waits until it is killed


@contextlib.contextmanager
def silent_endpoint() -> Iterator[tuple[str, threading.Event]]:
    """An endpoint that accepts connections and never answers; the event is set at the first one."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)
    reached, stop = threading.Event(), threading.Event()
    accepted: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(server.accept()[0])
                reached.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", reached
    finally:
        stop.set()
        thread.join(timeout=10)
        for connection in accepted:
            connection.close()
        server.close()


@contextlib.contextmanager
def holder(
    args: Callable[[str], list[str]], stdin: bytes = b"", spool: Path | None = None
) -> Iterator[Launched]:
    """A real evs-snapshot process (``args(endpoint)``) that has taken its locks and waits on its first
    request; killed when the block ends. A manifest on standard input is copied to a file in ``spool``
    (its TMPDIR), unlinked at once: the kill leaves nothing there."""
    with silent_endpoint() as (url, reached):
        env = None if spool is None else {"TMPDIR": str(spool)}
        process = run_process([*args(url), *HANG], env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        assert process.stdin is not None
        assert process.stderr is not None
        try:
            process.stdin.write(stdin)
            process.stdin.close()
            while not reached.wait(0.05):
                if process.poll() is not None:
                    raise AssertionError(
                        f"the holder ended ({process.returncode}): {process.stderr.read()!r}"
                    )
            yield process
        finally:
            process.kill()
            process.wait(timeout=30)
            stderr = process.stderr.read()
            process.stderr.close()
    assert b"Traceback" not in stderr


def made_run(
    emu: EmulatorThread, write: Callable[..., Path], tmp_path: Path, count: int = 3
) -> tuple[Path, Path]:
    """A finished create run of ``count`` disks on the emulator: its manifest and report."""
    manifest = csv_manifest(write, volume_ids(count, seed=1801))
    report = tmp_path / "create.jsonl"
    result = invoke(create_args(emu.url, manifest, report, *FAST_RETRIES))
    assert result.exit_code == 0, result.stderr
    return manifest, report


def refused(result: Any, holder_pid: int | None = None, command: str = "") -> None:
    """Exit 75, one clear message naming the holder; no traceback."""
    assert result.exit_code == 75, result.output
    assert "another evs-snapshot run holds" in result.stderr
    assert "nothing was done" in result.stderr
    if holder_pid is not None:
        assert f"process {holder_pid} (evs-snapshot {command}" in result.stderr, result.stderr
    assert "Traceback" not in result.output


# --- case 5: a manifest is one file, whatever its name ------------------------------------------------
def test_a_link_of_the_manifest_shares_its_lock(
    emulator_thread: Callable[..., EmulatorThread], write: Callable[..., Path], tmp_path: Path
) -> None:
    """While a create of a manifest runs, a create of a symlink or of a hard link of it exits 75 and sends
    nothing, so no disk gets two snapshots."""
    emu = emulator_thread(any_volume=True)
    manifest = csv_manifest(write, volume_ids(30, seed=1805))
    symlink, hard_link = tmp_path / "symlink.csv", tmp_path / "hard-link.csv"
    symlink.symlink_to(manifest)
    os.link(manifest, hard_link)
    first = lambda url: create_args(url, manifest, tmp_path / "first.jsonl")  # noqa: E731
    with holder(first) as process:
        for other in (symlink, hard_link):
            second = invoke(create_args(emu.url, other, tmp_path / f"{other.stem}.jsonl", *FAST_RETRIES))
            refused(second, process.pid, "create")
    assert emu.state()["requests"] == {}
    assert snapshots_per_volume(emu.state()) == {}


def test_a_manifest_from_stdin_locks_on_its_digest(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """create - of the same rows while one runs exits 75; other rows on standard input go ahead."""
    emu = emulator_thread(any_volume=True)
    rows = b"volume_id\n" + b"".join(f"{i}\n".encode() for i in volume_ids(3, seed=1806))
    other = b"volume_id\n" + b"".join(f"{i}\n".encode() for i in volume_ids(2, seed=1807))
    first = lambda url: create_args(url, Path("-"), tmp_path / "first.jsonl", format="csv")  # noqa: E731
    with holder(first, stdin=rows, spool=tmp_path) as process:
        same = invoke(create_args(emu.url, Path("-"), tmp_path / "same.jsonl", format="csv"), input=rows)
        refused(same, process.pid, "create")
        assert emu.state()["requests"] == {}
        args = create_args(emu.url, Path("-"), tmp_path / "other.jsonl", *FAST_RETRIES, format="csv")
        assert invoke(args, input=other).exit_code == 0
    assert sum(snapshots_per_volume(emu.state()).values()) == 2
    assert list(tmp_path.glob("evs-snapshot-stdin-*")) == []  # the killed holder left no copy of its input


def test_the_same_rows_from_a_file_and_from_stdin_exclude_each_other(
    emulator_thread: Callable[..., EmulatorThread], write: Callable[..., Path], tmp_path: Path
) -> None:
    """While a create of a file runs, create - of the same content (or of a copy of the file) exits 75."""
    emu = emulator_thread(any_volume=True)
    ids = volume_ids(3, seed=1812)
    manifest = csv_manifest(write, ids)
    copy = write("copy.csv", manifest.read_text())
    first = lambda url: create_args(url, manifest, tmp_path / "first.jsonl")  # noqa: E731
    with holder(first) as process:
        piped = invoke(
            create_args(emu.url, Path("-"), tmp_path / "piped.jsonl", format="csv"),
            input=manifest.read_bytes(),
        )
        refused(piped, process.pid, "create")
        refused(invoke(create_args(emu.url, copy, tmp_path / "copy.jsonl")), process.pid, "create")
    assert emu.state()["requests"] == {}


# --- case 8: one run, one command at a time -----------------------------------------------------------
@pytest.mark.no_cover
def test_cleanup_and_rollback_of_one_run_exclude_each_other(
    emulator_thread: Callable[..., EmulatorThread], write: Callable[..., Path], tmp_path: Path
) -> None:
    """While rollback --apply of a create report runs, cleanup --apply of it exits 75, naming the
    rollback, and deletes nothing (the other way round: test_every_command_on_a_run_takes_its_lock)."""
    emu = emulator_thread(any_volume=True)
    _, report = made_run(emu, write, tmp_path)
    before = emu.state()

    def args(url: str, name: str) -> list[str]:
        return cli_args(name, report, endpoint=url, report=tmp_path / f"{name}.jsonl", apply=True)

    with holder(lambda url: args(url, "rollback")) as process:
        refused(invoke(args(emu.url, "cleanup")), process.pid, "rollback")
    assert emu.state()["requests"] == before["requests"]
    assert [s["id"] for s in emu.state()["snapshots"]] == [s["id"] for s in before["snapshots"]]


def test_create_and_prune_of_one_manifest_share_its_lock(
    emulator_thread: Callable[..., EmulatorThread], write: Callable[..., Path], tmp_path: Path
) -> None:
    """While prune of a manifest runs, create of it exits 75 and sends nothing; and prune exits 75 on the
    manifest's lock while create holds it."""
    emu = emulator_thread(any_volume=True)
    manifest = csv_manifest(write, volume_ids(3, seed=1808))

    def args(url: str, name: str) -> list[str]:
        flags = {"keep_last": 1, "apply": True} if name == "prune" else {}
        report = tmp_path / f"{name}.jsonl"
        return cli_args(name, manifest, endpoint=url, project_id=PROJECT, report=report, **flags)

    with holder(lambda url: args(url, "prune")) as process:
        refused(invoke(args(emu.url, "create")), process.pid, "prune")
    with RunLock(manifest_lock(str(manifest)), "create"):
        refused(invoke(args(emu.url, "prune")), os.getpid(), "create")
    assert emu.state()["requests"] == {}


def test_a_second_create_with_the_same_report_exits_75_not_2(
    emulator_thread: Callable[..., EmulatorThread], write: Callable[..., Path], tmp_path: Path
) -> None:
    """While create --resume finishes a report, a create with the same --report (no --resume) exits 75
    (try again later), not 2 (report exists), so a cron wrapper retries instead of paging."""
    emu = emulator_thread(any_volume=True)
    manifest, report = made_run(emu, write, tmp_path)
    report.write_bytes(report.read_bytes().splitlines(keepends=True)[0])  # interrupted: the header only
    first = lambda url: create_args(url, manifest, report, resume=True)  # noqa: E731
    with holder(first) as process:
        again = invoke(create_args(emu.url, manifest, report, *FAST_RETRIES))
        refused(again, process.pid, "create --resume")
        other = invoke(create_args(emu.url, csv_manifest(write, volume_ids(1, seed=1809), "o.csv"), report))
        refused(other, process.pid, "create --resume")
    assert records(report) == []  # the header and the holder's journal of its sends only
    after = invoke(create_args(emu.url, manifest, report, *FAST_RETRIES))  # nobody holds it: "exists", 2
    assert after.exit_code == 2, after.output
    assert "already holds records" in after.stderr


# --- every command on a run takes the run's lock --------------------------------------------------------
def test_every_command_on_a_run_takes_its_lock(
    emulator_thread: Callable[..., EmulatorThread],
    write: Callable[..., Path],
    tmp_path: Path,
    lock_dir_of_the_test: Path,
) -> None:
    """While the run's lock is held, create --resume, wait, cleanup and rollback (plan or --apply) of that
    run exit 75 and send nothing, also through a copy of its report (the lock is the run id's)."""
    emu = emulator_thread(any_volume=True)
    manifest, report = made_run(emu, write, tmp_path)
    copy = tmp_path / "copy.jsonl"
    shutil.copy(report, copy)
    before = emu.state()["requests"]
    url = emu.url
    commands = {
        "create --resume": create_args(url, manifest, report, resume=True),
        "wait": cli_args("wait", report, endpoint=url),
        "cleanup": cli_args("cleanup", copy, endpoint=url, report=tmp_path / "c.jsonl", apply=True),
        "rollback": cli_args("rollback", copy, endpoint=url, report=tmp_path / "r.jsonl", apply=True),
        "rollback plan": cli_args("rollback", report, endpoint=url, report=tmp_path / "plan.jsonl"),
    }
    lock = run_lock(report)
    assert lock.path.parent == lock_dir_of_the_test
    with RunLock(lock, "test"):
        for name, args in commands.items():
            result = invoke(args)
            assert result.exit_code == 75, (name, result.output)
            assert f"the lock of run {lines(report)[0]['run_id']}" in result.stderr
            assert f"process {os.getpid()} (evs-snapshot test" in result.stderr
    assert emu.state()["requests"] == before
    assert not (tmp_path / "c.jsonl").exists()
    assert not (tmp_path / "r.jsonl").exists()
    assert not (tmp_path / "plan.jsonl").exists()


# --- lock files ---------------------------------------------------------------------------------------
@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_lock_files_do_not_pile_up(
    emulator_thread: Callable[..., EmulatorThread],
    write: Callable[..., Path],
    tmp_path: Path,
    lock_dir_of_the_test: Path,
) -> None:
    """After create, wait, cleanup, rollback and prune have run, the lock directory is empty again; a
    lock file a killed holder left behind is taken over and removed."""
    emu = emulator_thread(any_volume=True, creating_seconds=0.0, deleting_seconds=0.0)
    manifest, report = made_run(emu, write, tmp_path)
    url = emu.url
    stale = run_lock(report)
    stale.path.write_text("999999999 2026-12-07T00:00:00Z evs-snapshot create\n")  # a kill -9 leaves this
    for args in (
        cli_args("wait", report, endpoint=url, poll_interval="0.05"),
        cli_args("rollback", report, endpoint=url, report=tmp_path / "r.jsonl"),
        cli_args("cleanup", report, endpoint=url, report=tmp_path / "c.jsonl", apply=True),
        cli_args(
            "prune", manifest, endpoint=url, project_id=PROJECT, report=tmp_path / "p.jsonl", keep_last=1
        ),
    ):
        result = invoke(args)
        assert result.exit_code in (0, 1), (args, result.output)
        assert sorted(path.name for path in lock_dir_of_the_test.iterdir()) == []
    assert {r["outcome"] for r in records(tmp_path / "c.jsonl")} == {"deleted"}


def test_a_given_lock_file_is_kept(tmp_path: Path) -> None:
    """--lock-file is locked and unlocked but never removed (other tools may flock it too); a lock of the
    lock directory is removed by its holder."""
    given = tmp_path / "maintenance.lock"
    with RunLock(given, "create"):
        assert given.read_text().split()[-2:] == ["evs-snapshot", "create"]
    assert given.read_bytes() == b""
    ours = Lock(tmp_path / "locks" / "run-x.lock", "the lock of run x")
    with holding([ours], "wait"):
        assert ours.path.exists()
    assert not ours.path.exists()


def test_removing_lock_files_keeps_the_exclusion(tmp_path: Path) -> None:
    """Threads taking and releasing one lock (each release removes its file) are never inside together:
    a taker that opened the file its holder then removed locks the new file instead."""
    lock = Lock(tmp_path / "locks" / "run-race.lock", "the lock of run race")
    inside, overlaps, entries = [0], [0], [0]
    guard = threading.Lock()

    def contend() -> None:
        for _ in range(300):
            try:
                with RunLock(lock, "test"):
                    with guard:
                        inside[0] += 1
                        overlaps[0] += inside[0] > 1
                        entries[0] += 1
                    os.sched_yield()
                    with guard:
                        inside[0] -= 1
            except LockHeld:
                os.sched_yield()

    threads = [threading.Thread(target=contend) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert overlaps[0] == 0
    assert entries[0] > 0
    assert not lock.path.exists()


def test_lock_file_of_a_run_id_is_a_safe_name() -> None:
    """A run id read from a report names a file in the lock directory, never a path out of it."""
    assert run_lock("20261207T003133Z-a1b2c3", {"EVS_SNAPSHOT_LOCK_DIR": "/nonexistent"}).path.name == (
        "run-20261207T003133Z-a1b2c3.lock"
    )
    odd = run_lock("../../etc/x", {"EVS_SNAPSHOT_LOCK_DIR": "/c"}).path
    assert odd.parent == Path("/c")
    assert odd.name.startswith("run-")
    assert "/" not in odd.name


def test_cron_and_a_login_shell_share_one_lock_directory(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """The lock directory is the user's, whatever the environment: XDG_RUNTIME_DIR (a login session
    has one, cron has not), XDG_CACHE_HOME (set by some dotfiles) and HOME (sudo) change nothing. Before,
    a cron run and an ssh run of one manifest each had their own directory and both ran (found by
    hostile11, and with XDG_CACHE_HOME by hostile11b). A lock held makes a run with other such
    variables exit 75, nothing sent."""
    home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    other = {"XDG_RUNTIME_DIR": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path), "HOME": str(tmp_path)}
    assert lock_dir({}) == lock_dir(other) == home / ".cache" / "evs-snapshot" / "locks"
    emu = emulator_thread(any_volume=True)
    manifest = csv_manifest(write, API_IDS[:1])
    lock = manifest_lock(str(manifest)).path  # in the test's EVS_SNAPSHOT_LOCK_DIR (conftest)
    with RunLock(lock):
        result = invoke(create_args(emu.url, manifest, tmp_path / "r.jsonl"), env=other)
    assert result.exit_code == 75, result.output
    assert str(lock) in result.stderr
    assert emu.state()["requests"] == {}


@pytest.mark.no_cover
def test_create_stdin_manifest_leaves_no_lock_file(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """create - (rows from standard input): the run works, and the lock files it took (the manifest's,
    by digest; the report's; the run's) are gone when it ends."""
    ids = volume_ids(3, seed=701)
    emu = emulator_thread(any_volume=True)
    manifest = b"".join(orjson.dumps({"volume_id": i}) + b"\n" for i in ids)
    report = tmp_path / "r.jsonl"
    args = create_args(emu.url, Path("-"), report, *FAST_RETRIES, format="jsonl")
    result = invoke(args, env={"EVS_SNAPSHOT_LOCK_DIR": str(tmp_path / "locks")}, input=manifest)
    assert result.exit_code == 0, result.stderr
    assert lines(report)[0]["manifest"] == "<stdin>"
    assert sorted((r["row"], r["volume_id"], r["outcome"]) for r in records(report)) == [
        (n, i, "accepted") for n, i in enumerate(ids, start=1)
    ]
    assert lock_files(tmp_path / "locks") == []


def test_create_report_to_stdout_takes_no_report_lock(
    emulator_thread: Callable[..., Any],
    write: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """create --report -: the header and records go to standard output; no lock file is left behind."""
    ids = volume_ids(2, seed=705)
    emu = emulator_thread(any_volume=True)
    manifest = csv_manifest(write, ids)
    monkeypatch.setenv("EVS_SNAPSHOT_LOCK_DIR", str(tmp_path / "locks"))
    code = run_main(create_args(emu.url, manifest, Path("-"), *FAST_RETRIES), monkeypatch)
    out, err = capfd.readouterr()
    assert code == 0, err
    shown = [orjson.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert shown[0]["type"] == "run"
    assert sorted((r["volume_id"], r["outcome"]) for r in shown[1:]) == sorted((i, "accepted") for i in ids)
    assert lock_files(tmp_path / "locks") == []


@pytest.mark.no_cover
def test_create_lock_file_is_held_beside_the_manifests_own_lock(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--lock-file: held by another run, exit 75 with nothing sent; the manifest's own lock held by
    another (a run by hand without --lock-file), exit 75 too: it was taken instead of it, and both runs
    snapshotted every disk (found by hostile11c); both free, the run goes, and the lock file stays."""
    emu = emulator_thread(any_volume=True)
    manifest = csv_manifest(write, volume_ids(2, seed=703))
    lock, cache = tmp_path / "maintenance.lock", tmp_path / "cache"
    cache.mkdir()
    env = {"EVS_SNAPSHOT_LOCK_DIR": str(cache)}
    with RunLock(lock):
        held = invoke(create_args(emu.url, manifest, tmp_path / "held.jsonl", lock_file=lock), env=env)
    assert held.exit_code == 75
    assert f"another evs-snapshot run holds {lock}" in held.stderr
    assert emu.state()["requests"] == {}
    report = tmp_path / "r.jsonl"
    with RunLock(manifest_lock(str(manifest), env), "create"):
        by_hand = invoke(create_args(emu.url, manifest, report, *FAST_RETRIES, lock_file=lock), env=env)
    assert by_hand.exit_code == 75, by_hand.stderr
    assert "another evs-snapshot run holds the lock of manifest" in by_hand.stderr
    assert emu.state()["requests"] == {}
    assert not report.exists()
    free = invoke(create_args(emu.url, manifest, report, *FAST_RETRIES, lock_file=lock), env=env)
    assert free.exit_code == 0, free.stderr
    assert {r["outcome"] for r in records(report)} == {"accepted"}
    assert lock.exists()
    assert lock_files(cache) == []


def test_a_lock_file_that_is_a_users_file_is_locked_never_written(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--lock-file naming the manifest (or any file with content of its own) is flocked, and its content
    stays: it was emptied and given a holder line, so a manifest or a create report pointed at by
    mistake was lost (found by hostile11b). Naming the report to be written is exit 2. An empty lock
    file still names its holder while held, and is empty again after."""
    emu = emulator_thread(any_volume=True)
    manifest = csv_manifest(write, volume_ids(2, seed=706))
    kept = manifest.read_bytes()
    report = tmp_path / "r.jsonl"
    result = invoke(create_args(emu.url, manifest, report, *FAST_RETRIES, lock_file=manifest))
    assert result.exit_code == 0, result.stderr
    assert manifest.read_bytes() == kept
    with RunLock(manifest):  # held by another: 75, and the content is still the manifest's
        held = invoke(create_args(emu.url, manifest, tmp_path / "held.jsonl", lock_file=manifest))
    assert held.exit_code == 75, held.stderr
    assert manifest.read_bytes() == kept
    secret = tmp_path / "credentials"  # its content is never shown as a holder (hostile11c)
    secret.write_text("[basic]\nak = AKNEVERSHOWN\nsk = SKNEVERSHOWN\n", encoding="utf-8")
    with RunLock(secret):
        held = invoke(create_args(emu.url, manifest, tmp_path / "held.jsonl", lock_file=secret))
    assert held.exit_code == 75, held.stderr
    assert f"another process holds {secret} (its flock; the file names no evs-snapshot run)" in held.stderr
    assert "NEVERSHOWN" not in held.output
    # A file that only starts like a holder line is the user's too: neither written nor shown (hostile11d).
    secret.write_text("4711 2026-12-01 evs-snapshot wrapper\nDB_PASSWORD=NEVERSHOWN\n", encoding="utf-8")
    kept = secret.read_bytes()
    assert invoke(create_args(emu.url, manifest, tmp_path / "w.jsonl", lock_file=secret)).exit_code == 0
    assert secret.read_bytes() == kept
    with RunLock(secret):
        held = invoke(create_args(emu.url, manifest, tmp_path / "held2.jsonl", lock_file=secret))
    assert held.exit_code == 75, held.stderr
    assert "NEVERSHOWN" not in held.output
    result = invoke(create_args(emu.url, manifest, tmp_path / "new.jsonl", lock_file=tmp_path / "new.jsonl"))
    assert result.exit_code == 2, result.stderr
    assert "is the report: choose another path" in result.stderr
    assert not (tmp_path / "new.jsonl").exists()
    out = tmp_path / "out.jsonl"  # --report - with standard output sent to the --lock-file: the same file
    with out.open("wb") as sent_there:
        args = create_args(emu.url, manifest, "-", lock_file=out)
        process = run_process(args, stdout=sent_there.fileno())
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2, stderr
    assert b"is the report: choose another path" in stderr
    assert out.read_bytes() == b""
    empty = tmp_path / "empty.lock"
    with RunLock(empty, "create"):
        assert b" evs-snapshot create" in empty.read_bytes()
    assert empty.read_bytes() == b""


@pytest.mark.parametrize(
    ("where", "said"),
    [
        pytest.param("cache-under-a-file", "cannot create the lock directory", id="lock-directory"),
        pytest.param("lock-file-in-proc", "cannot open the lock file", id="lock-file"),
        pytest.param("lock-file-a-device", "is not a regular file", id="lock-file-device"),
        pytest.param("lock-file-dash", "--lock-file - is not a regular file", id="lock-file-dash"),
        pytest.param("relative-lock-dir", "is not an absolute path (a ~ is not expanded", id="relative"),
    ],
)
def test_a_lock_that_cannot_be_made_is_a_usage_error(tmp_path: Path, where: str, said: str) -> None:
    """A lock directory under a file, or a relative one (each folder a run starts in would be its own;
    it was, found by hostile11c), a --lock-file that cannot be created (in /proc) or is a device (exit
    70 before): exit 2, named, before anything is sent."""
    plain = tmp_path / "plain"
    plain.write_text("x")
    args = ["hold", "--snapshot", API_IDS[0], "--reason", "x", "--project-id", PROJECT]
    args += ["--endpoint", "http://127.0.0.1:1", "--report", str(tmp_path / "h.jsonl")]
    if where == "cache-under-a-file":
        result = invoke(args, {"EVS_SNAPSHOT_LOCK_DIR": str(plain / "locks")})
    elif where == "relative-lock-dir":
        result = invoke(args, {"EVS_SNAPSHOT_LOCK_DIR": "~/.cache/evs-snapshot/locks"})
    elif where == "lock-file-a-device":
        result = invoke([*args, "--lock-file", os.devnull])
    elif where == "lock-file-dash":  # it made a file named - (found by hostile11c)
        result = invoke([*args, "--lock-file", "-"])
    else:
        result = invoke([*args, "--lock-file", "/proc/evs-snapshot-test.lock"])
    assert result.exit_code == 2, result.output
    assert said in result.stderr
    if where == "cache-under-a-file":
        assert "EVS_SNAPSHOT_LOCK_DIR names another, one every run of this user can write" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("number", "kind", "code"),
    [(errno.ENOSPC, Unwritable, 3), (errno.EDQUOT, Unwritable, 3), (errno.EACCES, UsageError, 2)],
)
def test_a_lock_file_that_cannot_be_made_for_want_of_room_exits_3(
    tmp_path: Path, number: int, kind: type[Exception], code: int
) -> None:
    """No room for a lock file or its folder (a full disk under the lock directory, a quota): exit 3 and
    the same advice as a lock file that cannot be written; a path the user may not write: exit 2."""
    lock = RunLock(tmp_path / "locks" / "x.lock", "create")
    failed = lock._failed(OSError(number, os.strerror(number)), "cannot open the lock file x")
    assert isinstance(failed, kind)
    assert exit_code_of(failed) == code
    assert str(failed).startswith(f"cannot open the lock file x: {os.strerror(number)}")
    assert ("Free space in" in str(failed)) is (code == 3)


@pytest.mark.parametrize("how", ["mode-0444-in-a-read-only-folder", "a-running-program"])
def test_a_lock_file_that_may_only_be_read_is_locked_never_written(tmp_path: Path, how: str) -> None:
    """A --lock-file this user may read but not write (mode 0444 in a folder it may not write; for root,
    which writes through modes, a program being run: ETXTBSY) is flocked through a read-only descriptor:
    it was exit 2 "cannot open the lock file", though flock needs no write. Its content stays, and a
    holder of it makes the run exit 75."""
    folder = tmp_path / "shared"
    folder.mkdir()
    running: subprocess.Popen[bytes] | None = None
    if how == "a-running-program":
        lock = folder / "sleep"
        shutil.copy(shutil.which("sleep") or "/bin/sleep", lock)
        running = subprocess.Popen([str(lock), "60"])
    else:
        lock = folder / "maintenance.lock"
        lock.write_text("owned by the maintenance team\n", encoding="utf-8")
        lock.chmod(0o444)
        folder.chmod(0o555)
    kept = lock.read_bytes()
    args = ["hold", "--snapshot", API_IDS[0], "--reason", "x", "--project-id", PROJECT]
    args += ["--endpoint", "http://127.0.0.1:1", "--lock-file", str(lock), *ACTION_RETRIES]
    try:
        result = invoke([*args, "--report", str(tmp_path / "h.jsonl")])
        assert result.exit_code == 3, result.stderr  # past the locks: the endpoint is unreachable
        assert "cannot open the lock file" not in result.stderr
        with RunLock(lock, "create"):
            held = invoke([*args, "--report", str(tmp_path / "held.jsonl")])
        assert held.exit_code == 75, held.stderr
        assert f"another process holds {lock} (its flock" in held.stderr
        assert lock.read_bytes() == kept
    finally:
        folder.chmod(0o755)
        if running is not None:
            running.kill()
            running.wait()
