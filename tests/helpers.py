"""Helpers shared by the test modules: invoking the CLI, building arguments, reading reports and state."""

from __future__ import annotations

import contextlib
import http.server
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import aiohttp
import anyio
import orjson
import pytest
from aiohttp import web
from click.testing import CliRunner, Result
from yarl import URL

from orchestrator.actions import Action, ActionRecord
from orchestrator.api import signing
from orchestrator.api.credentials import OutgoingRequest, TokenAuth
from orchestrator.api.routes import Route, Router, connect
from orchestrator.cli import main
from orchestrator.commands import emulator as emulator_command
from orchestrator.config import Connection, Endpoints, Limits
from orchestrator.deleter import Deleter
from orchestrator.emulator import (
    EmulatorSettings,
    EmulatorThread,
    RunningEmulator,
    SeedSnapshot,
    SeedVolume,
)
from orchestrator.emulator.clock import evs_time
from orchestrator.emulator.settings import (
    DEFAULT_AK,
    DEFAULT_DOMAIN,
    DEFAULT_PASSWORD,
    DEFAULT_SK,
    DEFAULT_USER,
)
from orchestrator.errors import Closure
from orchestrator.models import Outcome, Record, RunHeader, SnapshotRequest
from orchestrator.retention import kept_held
from orchestrator.retry import RetryPolicy

PROJECT = "0123456789abcdef0123456789abcdef"
TOKEN = "test-fixed-token-0001"
NO_CREDENTIALS = {
    "OS_AUTH_TOKEN": "",
    "HUAWEICLOUD_SDK_AK": "",
    "HUAWEICLOUD_SDK_SK": "",
    "HUAWEICLOUD_SDK_SECURITY_TOKEN": "",
    "HUAWEICLOUD_SDK_CREDENTIALS_FILE": "/nonexistent/credentials",
    "OS_USERNAME": "",
    "OS_PASSWORD": "",
    "OS_USER_DOMAIN_NAME": "",
    "HUAWEICLOUD_SDK_PROJECT_ID": "",
    "OS_REGION_NAME": "",
}
AKSK = {
    "HUAWEICLOUD_SDK_AK": DEFAULT_AK,
    "HUAWEICLOUD_SDK_SK": DEFAULT_SK,
}  # the emulator's AK/SK pair, as the SDK's variables
AKSK_ENV = {**NO_CREDENTIALS, **AKSK}
TOKEN_ENV = {**NO_CREDENTIALS, "OS_AUTH_TOKEN": TOKEN}
PASSWORD_ENV = {  # the emulator's IAM user, as the password variables
    **NO_CREDENTIALS,
    "OS_USERNAME": DEFAULT_USER,
    "OS_PASSWORD": DEFAULT_PASSWORD,
    "OS_USER_DOMAIN_NAME": DEFAULT_DOMAIN,
}
FAST_RETRIES = (
    "--max-attempts",
    "12",
    "--backoff-initial",
    "0.05",
    "--backoff-max",
    "0.5",
    "--settle",
    "0.5",
    "--timeout",  # a resumed row in flight is looked up for --settle after its send plus this
    "3",
)
CREATE_ROUTE = "POST /v2/{project_id}/cloudsnapshots"
LIST_ROUTE = "GET /v2/{project_id}/cloudsnapshots/detail"
QUOTA_ROUTE = "GET /v2/{project_id}/os-quota-sets/{target_project_id}"


def invoke(
    args: list[str],
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    *,
    base: Mapping[str, str] = AKSK_ENV,
) -> Result:
    """Run the CLI in-process (click's runner): ``base`` credentials (AK/SK for the emulator), then ``env``."""
    runner = CliRunner()
    return runner.invoke(main, args, env={**base, **(env or {})}, input=input, catch_exceptions=False)


def cli_args(*positional: object, **flags: object) -> list[str]:
    """``cli_args("create", manifest, endpoint=url, dry_run=True)`` -> ``["create", "m.csv", "--endpoint", url, "--dry-run"]``.

    ``True`` adds a bare flag; ``False``/``None`` leave it out; a list or tuple repeats the option.
    """
    out = [str(item) for item in positional]
    for key, value in flags.items():
        option = "--" + key.replace("_", "-")
        if value is True:
            out.append(option)
        elif value is False or value is None:
            continue
        elif isinstance(value, list | tuple):
            for item in value:
                out += [option, str(item)]
        else:
            out += [option, str(value)]
    return out


def create_args(url: str, manifest: Path, report: Path, *extra: str, **flags: object) -> list[str]:
    """A create command against one emulator (endpoint and project given)."""
    return [*cli_args("create", manifest, endpoint=url, project_id=PROJECT, report=report, **flags), *extra]


def lines(path: Path) -> list[dict[str, Any]]:
    """Every whole JSON line of a report, the run header included."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.endswith(b"}")]


def records(path: Path) -> list[dict[str, Any]]:
    """Every record of a report (the run header, the journal of ``sending`` records and an action run's
    ``ended`` and ``applying`` lines left out)."""
    return [
        line
        for line in lines(path)
        if line.get("type") != "run" and line.get("outcome") not in ("sending", "ended", "applying")
    ]


def validated_and_planned(
    manifest: Path, report: Path, **options: object
) -> tuple[tuple[int, str], tuple[int, dict[int, tuple[str, str | None]]]]:
    """``validate`` and ``create --dry-run`` of one manifest with the same options, in-process:
    validate's exit code and count line, the dry run's exit code and each row's outcome and error code."""
    checked = invoke(cli_args("validate", manifest, **options))
    planned = invoke(cli_args("create", manifest, report=report, dry_run=True, **options))
    verdicts = {r["row"]: (r["outcome"], r["error_code"]) for r in records(report)}
    return (checked.exit_code, checked.stdout.splitlines()[-1]), (planned.exit_code, verdicts)


def journal(path: Path) -> list[dict[str, Any]]:
    """The ``sending`` records of a report: one per create request that left, written before it left."""
    return [line for line in lines(path) if line.get("outcome") == "sending"]


def header(path: Path) -> dict[str, Any]:
    first = lines(path)[0]
    assert first.get("type") == "run", first
    return first


SIDE_OUTCOMES = frozenset({"duplicate_deleted", "duplicate_found"})


def last_per_row(path: Path) -> dict[int, dict[str, Any]]:
    """The current state of each row: its last record (sweep side records left out)."""
    final: dict[int, dict[str, Any]] = {}
    for record in records(path):
        if record["outcome"] not in SIDE_OUTCOMES:
            final[record["row"]] = record
    return final


def csv_manifest(write: Callable[..., Path], ids: list[str], name: str = "m.csv") -> Path:
    return write(name, "volume_id\n" + "".join(f"{i}\n" for i in ids))


def requests_of(state: Mapping[str, Any], route: str) -> Counter[str]:
    """The emulator's answers to one route, by status (``dropped`` for closed connections)."""
    return Counter(state["requests"].get(route, {}))


class ClosedRouter:
    """A router whose one route a refusal closed (what ``Router.closures`` reports), after one DELETE."""

    throttled = 0

    def closures(self) -> list[Closure]:
        return [Closure("CREDENTIALS_REFUSED", "credentials refused by the endpoint")]

    def counts(self) -> Counter[str]:
        return Counter({"deletes": 1})


def answered(emu: Any) -> int:
    """Every request the emulator has seen so far, over all its routes and statuses."""
    return sum(sum(counts.values()) for counts in emu.state()["requests"].values())


def server_errors(answers: Mapping[str, int]) -> int:
    """How many of ``requests_of``'s answers were 5xx: statuses compared as numbers, so ``dropped`` (a
    closed connection, no answer) is not one, as it would be compared as a string (``"dropped" >= "500"``)."""
    return sum(count for status, count in answers.items() if status.isdigit() and int(status) >= 500)


def at_rest(emu: EmulatorThread) -> dict[str, Any]:
    """The emulator's state once it holds no request (bounded): a request is counted when its latency
    ends, so one the client gave up in flight is counted after the client has returned."""
    stop = time.monotonic() + 5
    while (state := emu.state())["in_flight"] and time.monotonic() < stop:
        time.sleep(0.01)
    return state


def snapshots_per_volume(state: Mapping[str, Any], run_id: str | None = None) -> Counter[str]:
    """How many live snapshots each volume has (of one run, when ``run_id`` is given)."""
    return Counter(
        snapshot["volume_id"]
        for snapshot in state["snapshots"]
        if run_id is None or (snapshot.get("metadata") or {}).get("evs_snapshot_run") == run_id
    )


# --- the CLI as a real process, forked from an interpreter that has already imported it -------------
#
# A test about a real process (a signal, an exit code, a lock's holder, a pipe) starts the CLI as one.
# Started by exec, each costs about 0.55 s of CPU before its first line runs: the interpreter and the
# imports (aiohttp, click, anyio and the package). The suite starts about 60 of them. So each xdist worker
# keeps one launcher process, started once by exec, that imports the package and waits; each CLI process
# is a fork of it, set up as exec would have set it up (its own pipes or /dev/null on 0-2, every other
# descriptor closed, the test's environment (its TMPDIR too), working folder and time zone, SIGINT inherited ignored or
# Python's own, SIGPIPE and SIGXFSZ ignored as Python ignores them, fresh standard streams, `sys.argv`),
# and then runs `orchestrator.__main__.main()` as `python -m orchestrator` does. It costs about 0.05 s.
# It is a real process: its own pid, signals from the kernel, its exit status (through a waiter process
# that forked it, since the test is not its parent), its pipes. What needs a fresh interpreter (the start
# itself: what it imports, a signal while it imports, `python -m`'s path, a PYTHON* variable, a file size
# limit or a shell around it) is started by exec: `subprocess` as before.

_LAUNCHER = r"""
import atexit, importlib, io, json, os, pkgutil, random, signal, socket, sys, tempfile, threading, time, traceback
import orchestrator
for found in pkgutil.walk_packages(orchestrator.__path__, "orchestrator."):
    importlib.import_module(found.name)
main = importlib.import_module("orchestrator.__main__").main


def stream(fd, mode, old, line_buffering):
    raw = io.FileIO(fd, mode, closefd=False)
    buffered = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
    return io.TextIOWrapper(buffered, encoding=old.encoding, errors=old.errors, newline="\n",
                            line_buffering=line_buffering)


def run(request, fds):
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
    os.closerange(3, 1 << 20)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    time.tzset()
    tempfile.tempdir = None  # found again from the test's TMPDIR, as a new interpreter finds it
    random.seed()
    signal.signal(signal.SIGINT, signal.SIG_IGN if request["sigint_ignored"] else signal.default_int_handler)
    sys.stdin = sys.__stdin__ = stream(0, "r", sys.__stdin__, False)
    sys.stdout = sys.__stdout__ = stream(1, "w", sys.__stdout__, os.isatty(1))
    sys.stderr = sys.__stderr__ = stream(2, "w", sys.__stderr__, True)
    sys.modules["__main__"] = sys.modules["orchestrator.__main__"]  # as `-m` makes it (click's name)
    sys.argv = [sys.modules["__main__"].__file__, *request["argv"]]
    code = 0
    try:
        main()
    except SystemExit as stop:
        if stop.code is None:
            code = 0
        elif isinstance(stop.code, int):
            code = stop.code
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    threading._shutdown()
    atexit._run_exitfuncs()
    for out in (sys.stdout, sys.stderr):
        try:
            out.flush()
        except Exception:
            code = 120
    os._exit(code)


def wait(request, fds):
    status = fds[3]
    pid = os.fork()
    if pid == 0:
        run(request, fds)
    for fd in fds[:3]:
        os.close(fd)
    os.write(status, b"%d\n" % pid)
    _, how = os.waitpid(pid, 0)
    os.write(status, b"%d\n" % os.waitstatus_to_exitcode(how))
    os._exit(0)


# Each waiter is waited for (at the latest when the worker closes the socket), and the launcher by the
# worker: the CPU of every process started here counts in the worker's children's, as exec's would.
control = socket.socket(fileno=int(sys.argv[1]))
waiters = set()
while True:
    message, fds, _, _ = socket.recv_fds(control, 1 << 20, 4)
    if not message:
        break
    waiter = os.fork()
    if waiter == 0:
        control.close()
        wait(json.loads(message), fds)
    waiters.add(waiter)
    for fd in fds:
        os.close(fd)
    waiters -= {pid for pid in waiters if os.waitpid(pid, os.WNOHANG)[0]}
for pid in waiters:
    os.waitpid(pid, 0)
"""


class _Launcher:
    """This worker's launcher process, started on first use, ended with the worker."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.environ = {key: value for key, value in os.environ.items() if key.startswith("PYTHON")}
        self.process = subprocess.Popen(  # its source on standard input: `ps` shows one short line
            [sys.executable, "-c", "import sys; exec(sys.stdin.read())", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        theirs.close()
        assert self.process.stdin is not None
        self.process.stdin.write(_LAUNCHER.encode())
        self.process.stdin.close()
        self.control = ours
        self.lock = threading.Lock()

    def close(self) -> None:
        self.control.close()  # the launcher reads the end, waits for its waiters, and exits
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a test left a process running: the launcher no longer waits
            self.process.kill()
            self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()


_launcher: _Launcher | None = None


def _the_launcher() -> _Launcher:
    global _launcher  # noqa: PLW0603 - one per worker, started on first use
    if _launcher is None or _launcher.process.poll() is not None:
        _launcher = _Launcher()
    return _launcher


def stop_launcher() -> None:
    """End this worker's launcher (conftest, as the session ends), waiting for it."""
    global _launcher  # noqa: PLW0603
    if _launcher is not None:
        _launcher.close()
        _launcher = None


class Launched:
    """A CLI process forked by the launcher, with the part of ``subprocess.Popen`` the tests use."""

    def __init__(
        self,
        args: list[str],
        *,
        env: Mapping[str, str],
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
        bufsize: int = -1,
        sigint_ignored: bool = False,
    ) -> None:
        launcher = _the_launcher()
        changed = {key for key in set(env) | set(launcher.environ) if key.startswith("PYTHON")}
        if any(env.get(key) != launcher.environ.get(key) for key in changed):
            raise ValueError("a PYTHON* variable takes a fresh interpreter: start it with subprocess")
        self.args = args
        self.returncode: int | None = None
        ends: list[int] = []  # the child's ends, closed here once sent
        theirs: list[int] = []
        files: list[IO[bytes] | None] = []
        for fd, how, reading in ((0, stdin, False), (1, stdout, True), (2, stderr, True)):
            if how == subprocess.PIPE:
                read, write = os.pipe()
                mine, child = (read, write) if reading else (write, read)
                ends.append(child)
                theirs.append(child)
                files.append(open(mine, "rb" if reading else "wb", buffering=bufsize))  # noqa: SIM115
            elif how == subprocess.DEVNULL:
                child = os.open(os.devnull, os.O_RDWR)
                ends.append(child)
                theirs.append(child)
                files.append(None)
            else:  # a descriptor of the test's (a file it opened), or None: the worker's own
                theirs.append(fd if how is None else how)
                files.append(None)
        self.stdin, self.stdout, self.stderr = files
        status, theirs_status = socket.socketpair()
        request = {"argv": args, "env": dict(env), "cwd": os.getcwd(), "sigint_ignored": sigint_ignored}
        try:
            with launcher.lock:
                socket.send_fds(launcher.control, [orjson.dumps(request)], [*theirs, theirs_status.fileno()])
        finally:
            theirs_status.close()
            for child in ends:
                os.close(child)
        self._status = status.makefile("rb", buffering=0)
        status.close()
        line = self._status.readline()
        if not line:
            raise RuntimeError(
                "the launcher did not start the process (its stderr: "
                f"{launcher.process.stderr.read() if launcher.process.poll() is not None and launcher.process.stderr else b''!r})"
            )
        self.pid = int(line)

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self._status], [], [], 0)[0]:
            self._ended()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not select.select([self._status], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self._ended()
        assert self.returncode is not None
        return self.returncode

    def _ended(self) -> None:
        line = self._status.readline()
        self.returncode = int(line) if line else -signal.SIGKILL  # the waiter itself was killed
        self._status.close()

    def communicate(self, input: bytes | None = None, timeout: float | None = None) -> tuple[bytes, bytes]:
        stop = None if timeout is None else time.monotonic() + timeout
        if self.stdin is not None:
            if input:
                with contextlib.suppress(BrokenPipeError):
                    self.stdin.write(input)
            with contextlib.suppress(BrokenPipeError):
                self.stdin.close()
        out: dict[IO[bytes], bytearray] = {
            f: bytearray() for f in (self.stdout, self.stderr) if f is not None
        }
        open_files = list(out)
        while open_files:
            left = None if stop is None else stop - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            for f in select.select(open_files, [], [], left)[0]:
                chunk = os.read(f.fileno(), 65536)
                if chunk:
                    out[f] += chunk
                else:
                    open_files.remove(f)
        self.wait(None if stop is None else max(0.0, stop - time.monotonic()))
        result = (
            bytes(out[self.stdout]) if self.stdout else b"",
            bytes(out[self.stderr]) if self.stderr else b"",
        )
        for done in (self.stdout, self.stderr):
            if done is not None:
                done.close()
        return result

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:  # not a pid the system may have given to another process since
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __enter__(self) -> Launched:
        return self

    def __exit__(self, *_: object) -> None:
        for f in (self.stdout, self.stderr):
            if f is not None:
                f.close()
        if self.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.stdin.close()
        self.wait()


def run_process(
    args: list[str],
    env: Mapping[str, str] | None = None,
    *,
    stdin: int | None = None,
    stdout: int | None = subprocess.PIPE,
    stderr: int | None = subprocess.PIPE,
    bufsize: int = -1,
    sigint_ignored: bool = False,
) -> Launched:
    """``python -m orchestrator ARGS`` as a real process (for signals, exit codes, locks and pipes), forked
    from this worker's launcher (below); AK/SK for the emulator by default. ``sigint_ignored`` starts it
    as ``sh -c 'cmd &'`` does (POSIX: a background job inherits SIGINT ignored)."""
    return Launched(
        args,
        env={**os.environ, **AKSK_ENV, **(env or {})},
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        bufsize=bufsize,
        sigint_ignored=sigint_ignored,
    )


def copying_stdin(pid: int) -> bool:
    """The CLI process ``pid`` holds its spool file open: it copies a manifest from standard input
    (``create -``). False once the process is gone."""
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):  # a descriptor closed since the listing
                if "evs-snapshot-stdin-" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                    return True
    return False


def settings_as_commanded(*args: str) -> EmulatorSettings:
    """The settings ``evs-snapshot emulator ARGS`` would serve with: the command's own parser and
    ``settings_from``."""
    with emulator_command.command.make_context("emulator", list(args)) as context:
        return emulator_command.settings_from(context.params)


def emulator_as_commanded(args: list[str]) -> EmulatorThread:
    """The emulator ``evs-snapshot emulator ARGS`` would serve, on a thread of this process (not started):
    the command's own parser and ``settings_from`` make its settings from the same command line. The
    command as a real process (its address line, SIGTERM, exit 0): test_create_cli's
    ``test_emulator_command_serves_until_sigterm``."""
    return EmulatorThread(settings_as_commanded(*args))


def wait_for_records(report: Path, count: int, process: Launched, limit: float = 30.0) -> None:
    """Wait (bounded) until the report holds ``count`` records (the journal not counted) while the process runs."""
    stop = time.monotonic() + limit
    while time.monotonic() < stop and process.poll() is None:
        data = report.read_bytes() if report.exists() else b""
        if data.count(b"\n") - data.count(b'"outcome":"sending"') >= count + 1:  # + the run header
            return
        time.sleep(0.02)
    raise AssertionError(f"report never reached {count} records (process exit {process.poll()})")


def snapshot_request(volume_id: str, row: int = 1, **changes: Any) -> SnapshotRequest:
    """A valid row as the runner receives it: ``row`` on line ``row + 1``, the test project, name ``n``."""
    fields: dict[str, Any] = {
        "row": row,
        "line": row + 1,
        "volume_id": volume_id,
        "project_id": PROJECT,
        "region": None,
        "name": "n",
        "description": None,
        "force": False,
        "metadata": {},
    }
    return SnapshotRequest(**{**fields, **changes})


def kill_when(report: Path, process: Any, ready: Callable[[bytes], bool], limit: float = 30.0) -> None:
    """SIGKILL ``process`` as soon as ``ready(report bytes)`` holds (bounded wait)."""
    stop = time.monotonic() + limit
    while time.monotonic() < stop and process.poll() is None:
        if report.exists() and ready(report.read_bytes()):
            break
        time.sleep(0.005)
    process.kill()
    process.communicate(timeout=10)  # reaps it and closes its pipes


def in_flight(data: bytes) -> set[int]:
    """Rows with a ``sending`` record and no row record after it: sent, answer not recorded."""
    open_rows: set[int] = set()
    for line in data.splitlines():
        if not line.endswith(b"}"):
            continue
        item = orjson.loads(line)
        if item.get("outcome") == "sending":
            open_rows.add(item["row"])
        elif "row" in item and item.get("outcome") not in ("duplicate_deleted", "duplicate_found"):
            open_rows.discard(item["row"])
    return open_rows


def volume_ids(count: int, seed: int = 0) -> list[str]:
    """Deterministic, distinct volume ids."""
    return [str(uuid.UUID(int=(seed << 64) + index + 1, version=4)) for index in range(count)]


def seeds(ids: list[str], status: str = "available") -> tuple[SeedVolume, ...]:
    return tuple(SeedVolume(volume_id=volume_id, status=status) for volume_id in ids)


# The disk the emulator's own tests create snapshots of, unless they name another.
EMULATOR_VOLUME = volume_ids(1)[0]


def create_body(volume_id: str = EMULATOR_VOLUME, **fields: object) -> dict[str, object]:
    """A create's JSON body: the snapshot of ``volume_id``, with ``fields``."""
    return {"snapshot": {"volume_id": volume_id, **fields}}


async def state_of(http: aiohttp.ClientSession, emu: RunningEmulator) -> dict[str, Any]:
    """The emulator's ``GET /_emulator/state`` document, read over HTTP."""
    async with http.get(f"{emu.url}/_emulator/state") as response:
        state: dict[str, Any] = orjson.loads(await response.read())
    return state


async def call(
    http: aiohttp.ClientSession,
    emulator: RunningEmulator | EmulatorThread,
    method: str,
    path: str,
    *,
    body: object = None,
    auth: Any = None,
    query: list[tuple[str, str]] | None = None,
    raw_body: bytes | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """One request to an emulator, authorized by ``auth`` (the fixed token by default; ``False``: none)."""
    data = raw_body if raw_body is not None else (b"" if body is None else orjson.dumps(body))
    qs = signing.canonical_query(query or [])
    url = URL(f"{emulator.url}{path}" + (f"?{qs}" if qs else ""), encoded=True)
    outgoing = OutgoingRequest(
        method=method, url=url, headers={"Content-Type": "application/json"}, body=data, project_id=PROJECT
    )
    if auth is not False:
        await (auth or TokenAuth(TOKEN)).authorize(outgoing)
    async with http.request(method, url, data=data or None, headers=outgoing.headers) as response:
        raw = await response.read()
        return (
            response.status,
            (orjson.loads(raw) if raw else None),
            {k.title(): v for k, v in response.headers.items()},
        )


ACTION_RETRIES = ["--max-attempts", "3", "--backoff-initial", "0.01", "--backoff-max", "0.05"]


def run_id_of(run: str) -> str:
    """A well-formed run id (as create writes it: prune owns no other) standing for a test's run name."""
    return f"20261101T000000Z-{uuid.uuid5(uuid.NAMESPACE_OID, run).hex[:6]}"


def snap(
    volume: str, days: float, *, run: str | None = "run-old", name: str | None = None, **extra: Any
) -> SeedSnapshot:
    """A seeded snapshot ``days`` old, marked by ``run`` (``None``: unmarked)."""
    tag = f"{volume}/{days}/{run}/{name}/{extra.get('status')}"
    return SeedSnapshot(
        id=str(uuid.uuid5(uuid.NAMESPACE_OID, tag)),
        volume_id=volume,
        name=name or f"pre-maint-{days}",
        created_at=ago(days),
        metadata={MARKER: run_id_of(run)} if run else {},
        **extra,
    )


def start(
    emulator_thread: Callable[..., Any], volumes: list[str], snapshots: list[SeedSnapshot], **knobs: Any
) -> Any:
    knobs.setdefault("deleting_seconds", 0.05)
    return emulator_thread(
        volumes=tuple(SeedVolume(volume_id=v) for v in volumes), snapshots=tuple(snapshots), **knobs
    )


CLOSED_PORT = "http://127.0.0.1:1"


QUICK = RetryPolicy(max_attempts=2, initial_wait=0.01, max_wait=0.02)


SHOW = "GET /v2/{project_id}/cloudsnapshots/{snapshot_id}"


WRONG = {"HUAWEICLOUD_SDK_AK": DEFAULT_AK, "HUAWEICLOUD_SDK_SK": "not-the-secret-key-000000000000000000000"}


def hits(emu: Any, route: str) -> Counter[str]:
    """The in-loop emulator's answers to one route, by status."""
    return Counter(emu.world.requests.get(route, {}))


@contextlib.asynccontextmanager
async def routed(url: str, environ: dict[str, str] | None = None) -> AsyncIterator[Route]:
    """The route of the test project on ``url``, over a real session (AK/SK by default)."""
    connection = Connection(endpoints=Endpoints(evs=URL(url)), environ=environ or AKSK)
    async with contextlib.AsyncExitStack() as stack:
        router = await connect(stack, connection)
        yield await router.route_for(PROJECT, None)


DELETE = "DELETE /v2/{project_id}/cloudsnapshots/{snapshot_id}"


LIST = "GET /v2/{project_id}/cloudsnapshots/detail"


def prune(
    emu: Any, manifest: Path | None, report: Path, *extra: str, env: dict[str, str] | None = None
) -> Any:
    head = ["prune"] if manifest is None else ["prune", str(manifest)]
    return invoke(
        [
            *head,
            "--endpoint",
            emu.url,
            "--project-id",
            PROJECT,
            "--report",
            str(report),
            *ACTION_RETRIES,
            *extra,
        ],
        env,
    )


SNAPS = [str(uuid.UUID(int=0xD000 + index, version=4)) for index in range(8)]


VOLUMES = [str(uuid.UUID(int=0xC000 + index, version=4)) for index in range(8)]


RUN = "20261127T035432Z-abc123"


def create_report(
    path: Path, rows: list[dict[str, Any]], run_id: str = RUN, *, total: int | None = None
) -> Path:
    """A create report: the run header (``total`` rows, default one per record), then one record per
    row (defaults: accepted, its own snapshot)."""
    lines = [
        {
            "type": "run",
            "run_id": run_id,
            "command": "create",
            "manifest": "m.csv",
            "rows": len(rows) if total is None else total,
            "digest": "sha256:00",
            "shape": {},
            "started_at": "2026-11-27T03:54:32.000Z",
        }
    ]
    for number, row in enumerate(rows, start=1):
        index = row.pop("index", number - 1)
        lines.append(
            {
                "run_id": run_id,
                "row": number,
                "volume_id": VOLUMES[index],
                "project_id": PROJECT,
                "region": None,
                "name": f"pre-maint-{index}",
                "outcome": "accepted",
                "http_status": 202,
                "snapshot_id": SNAPS[index],
                "snapshot_status": "creating",
                "started_at": "2026-11-27T03:54:32.100Z",
                "finished_at": "2026-11-27T03:54:32.200Z",
                "elapsed_ms": 100,
                **row,
            }
        )
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path


def marker(run: str = RUN) -> dict[str, str]:
    return {"evs_snapshot_run": run}


def rollback(emu: EmulatorThread, source: Path, report: Path | str, *extra: str, **flags: object) -> Any:
    args = cli_args("rollback", source, endpoint=emu.url, report=report, **flags)
    return invoke([*args, *FAST, *FAST_WAIT, *extra])


def world(count: int, *, attached: frozenset[int] = frozenset()) -> dict[str, Any]:
    """``count`` detached disks (those in ``attached`` on SERVER), each with its marked snapshot."""
    volumes = tuple(
        SeedVolume(volume_id=VOLUMES[i], server_id=SERVER if i in attached else None) for i in range(count)
    )
    snapshots = tuple(
        SeedSnapshot(id=SNAPS[i], volume_id=VOLUMES[i], name=f"pre-maint-{i}", metadata=marker())
        for i in range(count)
    )
    return {"volumes": volumes, "snapshots": snapshots}


ROLLBACK = "POST /v2/{project_id}/cloudsnapshots/{snapshot_id}/rollback"


def rollbacks_per_snapshot(state: dict[str, Any]) -> Counter[str]:
    return Counter(item["snapshot_id"] for item in state["rollbacks"])


MARKER = "evs_snapshot_run"


def live(emu: Any) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in emu.state()["snapshots"] if s["status"] != "deleting"}


def planned(snapshot_id: str) -> ActionRecord:
    return ActionRecord(
        run_id="r",
        command="prune",
        key=snapshot_id,
        outcome=Action.PLANNED,
        snapshot_id=snapshot_id,
        started_at="t",
        finished_at="t",
    )


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) until ``condition`` holds; the emulator runs in this loop meanwhile.

    The emulator's state has no event to wait on, so it is polled; every window a test relies on is
    the emulator's latency (30 ms) or its stopped clock, far longer than one poll.
    """
    with anyio.fail_after(5):
        while True:
            if condition():
                return
            await anyio.sleep(0.005)


SERVER = "7c3e6a52-0f1d-4b8e-9c2a-5d4f3e2b1a09"


VOLUME_GET = "GET /v2/{project_id}/cloudvolumes/{volume_id}"


OTHER_RUN = "20261120T010101Z-def456"


@contextlib.asynccontextmanager
async def router_for(url: str, environ: dict[str, str], **limits: Any) -> AsyncIterator[Router]:
    connection = Connection(
        endpoints=Endpoints(evs=URL(url), iam=URL(url)), limits=Limits(**limits), environ=environ
    )
    async with contextlib.AsyncExitStack() as stack:
        yield await connect(stack, connection)


FAST = ("--max-attempts", "12", "--backoff-initial", "0.05", "--backoff-max", "0.3", "--settle", "0.5")


FAST_WAIT = ("--poll-interval", "0.05", "--wait-timeout", "20s")


WEB, DB = "5f0c1a6e-7a52-4c1e-9a1b-0c0f4e2d8a01", "5f0c1a6e-7a52-4c1e-9a1b-0c0f4e2d8a02"
IDS = [str(uuid.UUID(int=0xA000 + index, version=4)) for index in range(6)]


DISKS = (
    SeedVolume(
        volume_id=IDS[0],
        name="web-system",
        server_id=WEB,
        device="/dev/vda",
        bootable=True,
        tags={"env": "prod", "role": "web"},
        metadata={"tier": "web"},
    ),
    SeedVolume(
        volume_id=IDS[1],
        name="web-data",
        server_id=WEB,
        device="/dev/vdb",
        tags={"env": "prod", "role": "web"},
        metadata={"tier": "web", "ticket": "CHG-42"},
    ),
    SeedVolume(
        volume_id=IDS[2],
        name="db-system",
        server_id=DB,
        device="/dev/vda",
        bootable=True,
        availability_zone="cn-north-4b",
        tags={"env": "prod", "role": "db"},
    ),
    SeedVolume(
        volume_id=IDS[3],
        name="db-data",
        server_id=DB,
        device="/dev/vdb",
        availability_zone="cn-north-4b",
        tags={"env": "staging", "role": "db"},
        metadata={"ticket": "CHG-42"},
    ),
    SeedVolume(volume_id=IDS[4], name="scratch", tags={"env": "prod", "team": "ops"}),
    SeedVolume(volume_id=IDS[5], name="broken", status="error", tags={"team": "ops"}),
)


def cleanup(emu: Any, source: Path, report: Path, *extra: str, env: dict[str, str] | None = None) -> Any:
    return invoke(
        ["cleanup", str(source), "--endpoint", emu.url, "--report", str(report), *ACTION_RETRIES, *extra], env
    )


def ago(days: float) -> str:
    return evs_time(datetime.now(UTC) - timedelta(days=days))


def source_row() -> Record:
    """Row 1 of the create run: accepted, with its marked snapshot of its own disk."""
    return Record(
        run_id=RUN,
        row=1,
        volume_id=VOLUMES[0],
        project_id=PROJECT,
        region=None,
        name="pre-maint-0",
        outcome=Outcome.ACCEPTED,
        http_status=202,
        snapshot_id=SNAPS[0],
        snapshot_status="creating",
        started_at="2026-11-27T03:54:32.100Z",
        finished_at="2026-11-27T03:54:32.200Z",
        elapsed_ms=100,
    )


class LeapingClock:
    """The emulator's time as real time plus the leaps a test makes: ``leap(s)`` moves it on at once, so
    late commits land, or ``creating``/``deleting`` ends, without the test sleeping for them; between
    leaps it runs as real time does (unlike ``ManualClock``, which stands still)."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.ahead

    def leap(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` at once (never backward)."""
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        self.ahead += seconds


class FakeTime:
    """An injected clock and sleep for pure timing logic: sleeping only moves the clock on."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


REGION = "cn-north-4"


API_IDS = volume_ids(3, seed=4242)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def answering(status: int, body: object) -> Handler:
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")

    return handler


async def hang_up(request: web.Request) -> web.StreamResponse:
    """A ``stand_in`` handler that closes the connection without an answer (a transport error)."""
    assert request.transport is not None
    request.transport.close()
    return web.Response()


@contextlib.asynccontextmanager
async def stand_in(routes: dict[str, Handler]) -> AsyncIterator[tuple[str, Counter[str]]]:
    """A real server on a loopback port for answers the emulator never gives; counts each route's hits."""
    seen: Counter[str] = Counter()
    app = web.Application()
    for key, handler in routes.items():
        method, path = key.split(" ", 1)

        async def counted(
            request: web.Request, key: str = key, handler: Handler = handler
        ) -> web.StreamResponse:
            seen[key] += 1
            return await handler(request)

        app.router.add_route(method, path, counted)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", seen
    finally:
        await runner.cleanup()


def installed(signum: int) -> bool:
    return signal.getsignal(signum) not in (signal.SIG_DFL, signal.SIG_IGN, None)


MANY_RETRIES = ("--max-attempts", "100", "--backoff-initial", "0.05", "--backoff-max", "0.1")


def lock_files(folder: Path) -> list[str]:
    """The lock files a run left in a lock directory (``$EVS_SNAPSHOT_LOCK_DIR``)."""
    return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []


def run_main(
    args: list[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str] = AKSK_ENV
) -> int | str | None:
    """The CLI in-process on the test's real standard output (a report to ``-`` writes to its descriptor,
    which click's runner does not have); returns the exit code."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        main.main(args, prog_name="evs-snapshot")
    return stopped.value.code


@contextlib.contextmanager
def once_seen(
    emu: EmulatorThread, ready: Callable[[dict[str, Any]], bool], act: Callable[[], None]
) -> Iterator[list[bool]]:
    """On a helper thread, run ``act`` as soon as ``ready(the emulator's state)`` holds, looking every
    10 ms for at most 20 s; yields a list that holds True once it acted (never after the block)."""
    acted: list[bool] = []
    done = threading.Event()

    def watch() -> None:
        limit = time.monotonic() + 20
        while not done.wait(0.01) and time.monotonic() < limit:
            if ready(emu.state()):
                if not done.is_set():
                    act()
                    acted.append(True)
                return

    watcher = threading.Thread(target=watch, name="once-seen", daemon=True)
    watcher.start()
    try:
        yield acted
    finally:
        done.set()
        watcher.join()


# The emulator's token bucket refills only as its clock moves: under a ManualClock that the test holds
# still, a drained bucket answers 429 until the test acts, so the test can act while a command is
# provably in the middle of its work (retrying the throttled request).
def once_throttled(
    emu: EmulatorThread, act: Callable[[], None], route: str | None = None
) -> contextlib.AbstractContextManager[list[bool]]:
    """``once_seen``: run ``act`` as soon as the emulator has answered 429 (to ``route``, or to any
    route)."""

    def throttled(state: dict[str, Any]) -> bool:
        return any(counts.get("429") for name, counts in state["requests"].items() if route in (None, name))

    return once_seen(emu, throttled, act)


def one_request(emu: EmulatorThread, method: str, path: str, **options: Any) -> tuple[int, dict[str, str]]:
    """One request to the emulator (the fixed token's by default): its status and headers."""

    async def send() -> tuple[int, dict[str, str]]:
        async with aiohttp.ClientSession() as http:
            status, _, headers = await call(http, emu, method, path, **options)
            return status, headers

    return anyio.run(send)


def token_request(scope: dict[str, Any] | None = None, **user: str) -> dict[str, Any]:
    """The body of a password token request (``POST /v3/auth/tokens``) for the emulator's IAM user
    (``user``: fields changed, ``password="wrong"``), scoped to ``scope`` (default: the test project)."""
    named = {"name": DEFAULT_USER, "password": DEFAULT_PASSWORD, "domain": {"name": DEFAULT_DOMAIN}, **user}
    identity = {"methods": ["password"], "password": {"user": named}}
    return {"auth": {"identity": identity, "scope": scope or {"project": {"id": PROJECT}}}}


def issued_token(emu: EmulatorThread) -> str:
    """A password token from the emulator's IAM (unlike the fixed token, it expires with the clock)."""
    status, headers = one_request(emu, "POST", "/v3/auth/tokens", body=token_request(), auth=False)
    assert status == 201
    return headers["X-Subject-Token"]


CORE_IDS = volume_ids(4, seed=0xED6E)


EDGE_RUN = "20261127T035432Z-ed9e01"


OFFLINE = {"project_id": PROJECT, "region": "cn-north-4"}


def edge_record(row: int, outcome: Outcome = Outcome.ACCEPTED, **fields: Any) -> Record:
    values: dict[str, Any] = {
        "run_id": EDGE_RUN,
        "row": row,
        "volume_id": CORE_IDS[row % len(CORE_IDS)],
        "project_id": PROJECT,
        "region": None,
        "name": f"n{row}",
        "outcome": outcome,
        "started_at": "2026-11-27T03:54:32.100Z",
        "finished_at": "2026-11-27T03:54:32.200Z",
        "elapsed_ms": 100,
        **fields,
    }
    return Record(**values)


def edge_header(rows: int) -> RunHeader:
    return RunHeader(
        run_id=EDGE_RUN,
        command="create",
        manifest="m.csv",
        rows=rows,
        digest="sha256:00",
        shape={},
        started_at="2026-11-27T03:54:32.000Z",
    )


def report_of(path: Path, items: list[Record], rows: int) -> Path:
    """A create report written by hand: the run header, then ``items`` in order."""
    path.write_bytes(edge_header(rows).to_json() + b"".join(item.to_json() for item in items))
    return path


DISK = volume_ids(1, seed=911)[0]


def api_seeded(status: str, *, project_id: str | None = None) -> SeedSnapshot:
    """A snapshot of ``DISK`` in ``status`` (of ``project_id``, when given: the emulator's own otherwise),
    its id the same on every call."""
    name = f"api/{status}" if project_id is None else f"api/{status}/{project_id}"
    return SeedSnapshot(
        id=str(uuid.uuid5(uuid.NAMESPACE_OID, name)), volume_id=DISK, status=status, project_id=project_id
    )


TWO_ROWS_HEADER = RunHeader(
    run_id=RUN,
    command="create",
    manifest="m.csv",
    rows=2,
    digest="sha256:00",
    shape={},
    started_at="2026-11-27T03:54:32.000Z",
)


def report_record(row: int, outcome: Outcome = Outcome.ACCEPTED) -> Record:
    return Record(
        run_id=RUN,
        row=row,
        volume_id=f"v{row}",
        project_id=None,
        region=None,
        name=f"n{row}",
        outcome=outcome,
        started_at="2026-11-27T03:54:32.100Z",
        finished_at="2026-11-27T03:54:32.200Z",
        elapsed_ms=1,
    )


class Receiver:
    """A loopback HTTP server that records each request and answers with the next status it is given
    (``None``: never answers, until the test ends)."""

    def __init__(self, statuses: list[int | None] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.requests: list[tuple[str, str, bytes]] = []
        self.released = threading.Event()
        self.first = threading.Event()  # set once a request arrived
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver.requests.append((self.path, self.headers.get("Content-Type", ""), body))
                receiver.first.set()
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status is None:
                    receiver.released.wait(30)
                    return
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # shutdown() waits until the serving loop next looks at its flag: every poll_interval (by default
        # 0.5 s, half a second of each test's teardown per receiver)
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def paths(self) -> list[str]:
        return [path for path, _, _ in self.requests]

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def quick_deleter(
    write: Callable[[ActionRecord], None],
    *,
    policy: RetryPolicy = QUICK,
    concurrency: int = 2,
    wait_timeout: float | None = None,
    stopping: Callable[[], bool] = lambda: False,
    journal: Callable[[ActionRecord], None] | None = None,
) -> Deleter:
    """A ``Deleter`` as prune builds it (a held snapshot kept), quick retries and no wait by default."""
    return Deleter(
        policy=policy,
        concurrency=concurrency,
        wait_timeout=wait_timeout,
        write=write,
        stopping=stopping,
        on_hold=kept_held,
        journal=journal,
    )
