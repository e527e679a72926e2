"""SIGINT/SIGTERM in every phase of a command, as real processes with the default dispositions.

Outside a drain phase a signal stops the command at once (exit 130/143) and nothing more is sent: the
manifest pass, the credential proof, the quota pre-flight, the listings of validate, select and prune.
A second signal stops at once; a background run of a script (SIGINT ignored) stops on SIGTERM.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from orchestrator.console import Console
from orchestrator.emulator import EmulatorThread, ManualClock
from orchestrator.entry import run, run_now
from orchestrator.errors import Interrupted
from orchestrator.frame import Closing, Frame, record_early_stops
from orchestrator.signals import cancel_on_signal, drain_on_signal, draining_rows, received, stopped_early
from tests.helpers import (
    AKSK_ENV,
    CLOSED_PORT,
    CREATE_ROUTE,
    MANY_RETRIES,
    NO_CREDENTIALS,
    PASSWORD_ENV,
    PROJECT,
    TOKEN_ENV,
    Launched,
    Receiver,
    cli_args,
    copying_stdin,
    create_args,
    create_report,
    csv_manifest,
    installed,
    invoke,
    last_per_row,
    once_throttled,
    one_request,
    records,
    requests_of,
    run_process,
    snap,
    snapshots_per_volume,
    start,
    volume_ids,
    world,
)
from tests.helpers import until as taken_by_the_loop

ROLLBACK_ROUTE = "POST /v2/{project_id}/cloudsnapshots/{snapshot_id}/rollback"
# The emulator's latency where a signal must come while a request is out: the test signals as soon as
# it sees one in flight, and the child has this long to take the signal before the answer comes (and
# the test then waits for that answer, to count what was sent).
SIGNAL_WINDOW_MS = 700


def started(args: list[str], env: dict[str, str] | None = None, *, sigint_ignored: bool = False) -> Launched:
    """The CLI as a real process; ``sigint_ignored`` starts it as ``sh -c 'cmd &'`` does (POSIX)."""
    return run_process(args, env or AKSK_ENV, stdout=subprocess.DEVNULL, sigint_ignored=sigint_ignored)


def until(ready: Callable[[], bool], process: Launched, limit: float = 60.0) -> None:
    """Wait (bounded) until ``ready()`` while the process runs."""
    stop = time.monotonic() + limit
    while time.monotonic() < stop:
        if process.poll() is not None:
            raise AssertionError(f"the process ended first: {process.communicate()[1].decode()}")
        if ready():
            return
        time.sleep(0.01)
    raise AssertionError("never ready")


def ended(process: Launched) -> str:
    """Stderr of a process that must end by itself (a hang fails the test here)."""
    _, stderr = process.communicate(timeout=60)
    return stderr.decode()


def sent(state: dict[str, Any]) -> int:
    """Requests the emulator has answered (or seen dropped), all routes."""
    return sum(sum(counts.values()) for counts in state["requests"].values())


def answered(emu: Any) -> dict[str, Any]:
    """The emulator's state once no request is in flight (the killed client's last ones answered)."""
    stop = time.monotonic() + 30
    while (state := emu.state())["in_flight"] and time.monotonic() < stop:
        time.sleep(0.02)
    return state


def stopped_by(stderr: str, signum: int) -> None:
    name = signal.Signals(signum).name
    assert "Traceback" not in stderr
    [line] = [line for line in stderr.splitlines() if line.startswith("evs-snapshot: error:")]
    assert f"stopped by {name}" in line


def reading(process: Launched, path: Path) -> Callable[[], bool]:
    """True while the process has ``path`` open (the manifest pass is under way)."""

    def now() -> bool:
        try:
            fds = os.listdir(f"/proc/{process.pid}/fd")
        except OSError:
            return False
        for fd in fds:
            try:
                if os.readlink(f"/proc/{process.pid}/fd/{fd}") == str(path):
                    return True
            except OSError:
                continue
        return False

    return now


SNAPSHOT_LIST = "GET /v2/{project_id}/cloudsnapshots/detail"


def drain_bucket(emu: EmulatorThread) -> None:
    """Spend the one request the fixed token's tenant may make until the emulator's clock moves."""
    status, _ = one_request(emu, "GET", f"/v2/{PROJECT}/cloudsnapshots/detail")
    assert status == 200


def interrupt() -> None:
    os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see the manifest open")
@pytest.mark.parametrize(("command", "signum"), [("create", signal.SIGTERM), ("validate", signal.SIGINT)])
@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_a_signal_in_the_manifest_pass_stops_at_once(
    command: str, signum: int, emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """A signal while a large manifest is first read: exit 128+N promptly, no report, nothing sent, and
    create's side files say 128+N."""
    emu = emulator_thread(any_volume=True)
    manifest = tmp_path / "big.csv"
    manifest.write_text(
        "volume_id\n" + "".join(f"00000000-0000-4000-8000-{n:012x}\n" for n in range(150_000))
    )
    report = tmp_path / "r.jsonl"
    summary, metrics_file = stale_side_files(tmp_path)
    args = (
        [
            *create_args(emu.url, manifest, report),
            "--summary-json",
            str(summary),
            "--metrics-file",
            str(metrics_file),
        ]
        if command == "create"
        else ["validate", str(manifest), "--project-id", PROJECT, "--region", "cn-north-4"]
    )
    with started(args) as process:
        until(reading(process, manifest), process)
        process.send_signal(signum)
        stderr = ended(process)
    assert process.returncode == 128 + signum, stderr
    stopped_by(stderr, signum)
    assert not report.exists()
    assert sent(emu.state()) == 0
    if command == "create":  # the side files say 143, not the previous run's 0
        said_stopped(summary, metrics_file, 128 + signum)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see the copy open")
def test_a_signal_while_standard_input_stalls_stops_at_once(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """SIGTERM while the manifest is copied from a stalled standard input: exit 143, nothing sent."""
    emu = emulator_thread(any_volume=True)
    report = tmp_path / "r.jsonl"
    args = [*cli_args("create", "-", format="csv", endpoint=emu.url, project_id=PROJECT, report=report)]
    process = run_process(args, stdin=subprocess.PIPE, stdout=None)
    with process:
        assert process.stdin is not None
        process.stdin.write(b"volume_id\n")  # then nothing more, and the pipe stays open
        process.stdin.flush()
        until(lambda: copying_stdin(process.pid), process)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    stderr = err.decode()
    assert process.returncode == 143, stderr
    stopped_by(stderr, signal.SIGTERM)
    assert sent(emu.state()) == 0


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_a_signal_in_the_credential_proof_sends_nothing_more(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """SIGTERM while the IAM token request (the first request) is out: exit 143, no other request."""
    emu = emulator_thread(any_volume=True, latency_ms=SIGNAL_WINDOW_MS)
    report = tmp_path / "r.jsonl"
    args = create_args(
        emu.url, csv_manifest(write, volume_ids(3, seed=301)), report, "--iam-endpoint", emu.url
    )
    with started(args, PASSWORD_ENV) as process:
        until(lambda: emu.state()["in_flight"] > 0, process)
        process.send_signal(signal.SIGTERM)
        stderr = ended(process)
    assert process.returncode == 143, stderr
    stopped_by(stderr, signal.SIGTERM)
    state = answered(emu)
    assert list(state["requests"]) == ["POST /v3/auth/tokens"]
    assert sent(state) == 1
    assert not report.exists()


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_a_signal_in_the_quota_preflight_sends_nothing_more(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """SIGINT while create's quota GET is out (it also proves the AK/SK): exit 130, no create sent."""
    emu = emulator_thread(any_volume=True, latency_ms=SIGNAL_WINDOW_MS)
    report = tmp_path / "r.jsonl"
    with started(create_args(emu.url, csv_manifest(write, volume_ids(3, seed=302)), report)) as process:
        until(lambda: emu.state()["in_flight"] > 0, process)
        process.send_signal(signal.SIGINT)
        stderr = ended(process)
    assert process.returncode == 130, stderr
    stopped_by(stderr, signal.SIGINT)
    state = answered(emu)
    assert sent(state) == 1
    assert CREATE_ROUTE not in state["requests"]


@pytest.mark.parametrize("command", ["validate", "select", "prune"])
@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_a_signal_in_a_listing_sends_nothing_more(
    command: str, emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """SIGTERM while validate --online, select or prune lists: exit 143, no request after the signal."""
    ids = volume_ids(6, seed=303)
    emu = emulator_thread(any_volume=True, latency_ms=SIGNAL_WINDOW_MS)
    manifest = csv_manifest(write, ids)
    common = ["--endpoint", emu.url, "--project-id", PROJECT, "--concurrency", "2"]
    args = {
        "validate": ["validate", str(manifest), "--online", *common],
        "select": ["select", "--status", "available", "-o", str(tmp_path / "out.csv"), *common],
        "prune": [
            "prune",
            str(manifest),
            "--keep-last",
            "1",
            "--apply",
            "--report",
            str(tmp_path / "p.jsonl"),
        ],
    }[command]
    if command == "prune":
        args += common
    with started(args) as process:
        until(lambda: emu.state()["in_flight"] > 0, process)
        state = emu.state()
        before = sent(state) + state["in_flight"]
        process.send_signal(signal.SIGTERM)
        stderr = ended(process)
    assert process.returncode == 143, stderr
    stopped_by(stderr, signal.SIGTERM)
    assert sent(answered(emu)) == before  # the requests out at the signal, and no other
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_a_signal_in_a_listing_is_named_alike_in_the_side_files_the_ping_and_the_webhook(
    emulator_thread: Callable[..., Any],
    receiver: Callable[..., Receiver],
    write: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """SIGTERM while prune lists (before its summary): the webhook's summary and the fail ping say why
    the run stopped in the words --summary-json has ("stopped by SIGTERM"), not the cancelled task's."""
    hook = receiver()
    emu = emulator_thread(any_volume=True, latency_ms=SIGNAL_WINDOW_MS)
    summary = tmp_path / "s.json"
    args = [
        *cli_args("prune", csv_manifest(write, volume_ids(4, seed=304)), keep_last=1, apply=True),
        *cli_args(report=tmp_path / "p.jsonl", summary_json=summary, endpoint=emu.url, project_id=PROJECT),
        *cli_args(webhook=f"{hook.url}/h", ping_url=f"{hook.url}/p"),
    ]
    with started(args) as process:
        until(lambda: emu.state()["in_flight"] > 0, process)
        process.send_signal(signal.SIGTERM)
        stderr = ended(process)
    assert process.returncode == 143, stderr
    said = orjson.loads(summary.read_bytes())["error"]
    assert said == "stopped by SIGTERM"
    assert hook.paths() == ["/p/start", "/h", "/p/fail"] or sorted(hook.paths()) == [
        "/h",
        "/p/fail",
        "/p/start",
    ]
    [event] = [orjson.loads(body) for path, _, body in hook.requests if path == "/h"]
    assert (event["exit_code"], event["summary"]["error"]) == (143, said)
    [ping] = [body.decode() for path, _, body in hook.requests if path == "/p/fail"]
    assert ping.endswith(f"exit 143: {said}"), ping


def taken(process: Launched, signum: int) -> Callable[[], bool]:
    """True once ``signum`` sent to the process is no longer pending: its handler has run (and has
    woken the event loop), so the loop sees it before anything that happens after this."""

    def now() -> bool:
        with open(f"/proc/{process.pid}/status", encoding="ascii") as status:
            pending = [int(line.split()[1], 16) for line in status if line.startswith(("SigPnd:", "ShdPnd:"))]
        return not any(mask & (1 << (signum - 1)) for mask in pending)

    return now


@contextlib.contextmanager
def held_webhook() -> Iterator[tuple[str, threading.Event]]:
    """A --webhook URL whose receiver holds each POST unanswered (for up to 30 s, until the block ends),
    and the event set when one arrives."""
    arrived, release = threading.Event(), threading.Event()

    class Held(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            arrived.set()
            release.wait(30)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Held)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/h", arrived
    finally:
        release.set()
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs /proc to see the signal taken")
def test_a_signal_after_the_run_finished_leaves_its_exit_code(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """SIGTERM twice once the run has finished (every row's record, the summary, --metrics-file
    written), held there by a --webhook receiver that never answers: the first is taken and changes
    nothing, the second ends the process at once with 0, as the metrics file says (it exited 143).
    One signal there: ``test_a_signal_after_the_frame_ended_leaves_its_exit_code``."""
    emu = emulator_thread(any_volume=True)
    report, metrics = tmp_path / "r.jsonl", tmp_path / "m.prom"
    args = create_args(emu.url, csv_manifest(write, volume_ids(2, seed=305)), report, metrics_file=metrics)
    with held_webhook() as (hook, arrived), started([*args, "--webhook", hook]) as process:
        until(arrived.is_set, process)
        process.send_signal(signal.SIGTERM)
        until(taken(process, signal.SIGTERM), process)
        process.send_signal(signal.SIGTERM)
        stderr = ended(process)
    assert process.returncode == 0, stderr
    assert 'evs_snapshot_exit_code{command="create"} 0' in metrics.read_text()
    assert {r["outcome"] for r in records(report)} == {"accepted"}
    assert stderr.count("SIGTERM: the run had finished; it exits 0, as it said") == 2
    assert "Traceback" not in stderr


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs /proc to see the signal taken")
@pytest.mark.no_cover
def test_a_second_signal_in_the_drain_leaves_side_files_that_say_its_exit(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """SIGTERM while a create is out, then SIGTERM again while the drain waits for it: the process exits
    143 at once, and --metrics-file and --summary-json say 143 (they were not written at all, or kept
    the last run's, found by a hostile trial)."""
    emu = emulator_thread(any_volume=True, latency_ms=SIGNAL_WINDOW_MS)
    report, metrics, summary = tmp_path / "r.jsonl", tmp_path / "m.prom", tmp_path / "s.json"
    manifest = csv_manifest(write, volume_ids(4, seed=306))
    args = create_args(
        emu.url, manifest, report, "--concurrency", "1", metrics_file=metrics, summary_json=summary
    )

    def a_create_out() -> bool:  # one answered and the next out: not the pre-flight, which stops at once
        state = emu.state()
        return CREATE_ROUTE in state["requests"] and state["in_flight"] > 0

    with started(args) as process:
        until(a_create_out, process)
        process.send_signal(signal.SIGTERM)
        until(taken(process, signal.SIGTERM), process)
        process.send_signal(signal.SIGTERM)
        stderr = ended(process)
    assert process.returncode == 143, stderr
    assert "second SIGTERM: stopping now" in stderr
    assert 'evs_snapshot_exit_code{command="create"} 143' in metrics.read_text()
    assert orjson.loads(summary.read_bytes())["exit_code"] == 143
    assert "Traceback" not in stderr


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs /proc to see the signal taken")
@pytest.mark.no_cover
def test_a_second_signal_after_a_drained_run_ended_exits_as_its_side_files_say(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """SIGINT drains a create, whose side files then say 130; a SIGTERM while its --webhook is held
    unanswered ends the process at once with 130, as they say (it exited 143; found by a hostile trial)."""
    emu = emulator_thread(any_volume=True, latency_ms=SIGNAL_WINDOW_MS)
    report, metrics = tmp_path / "r.jsonl", tmp_path / "m.prom"
    manifest = csv_manifest(write, volume_ids(4, seed=307))
    args = create_args(emu.url, manifest, report, "--concurrency", "1", metrics_file=metrics)

    def a_create_out() -> bool:  # one answered and the next out: not the pre-flight, which stops at once
        state = emu.state()
        return CREATE_ROUTE in state["requests"] and state["in_flight"] > 0

    with held_webhook() as (hook, arrived), started([*args, "--webhook", hook]) as process:
        until(a_create_out, process)
        process.send_signal(signal.SIGINT)
        until(arrived.is_set, process)  # the end's webhook: the side files are written
        process.send_signal(signal.SIGTERM)
        stderr = ended(process)
    assert process.returncode == 130, stderr
    assert 'evs_snapshot_exit_code{command="create"} 130' in metrics.read_text()
    assert "second SIGTERM: stopping now; nothing more is sent; it exits 130, as it said" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("loop", [True, False])
def test_a_signal_after_the_frame_ended_leaves_its_exit_code(tmp_path: Path, loop: bool) -> None:
    """With or without an event loop, SIGTERM after the frame's end (summary and --metrics-file
    written): the command returns the frame's exit code, said on stderr; nothing raises Interrupted."""
    out = io.StringIO()
    frame = Frame(
        command="prune", console=Console(out), report="-", closing=Closing(metrics_file=tmp_path / "m.prom")
    )

    async def job() -> int:
        async with frame:
            frame.at_least = 1
        os.kill(os.getpid(), signal.SIGTERM)
        await taken_by_the_loop(lambda: bool(received()))
        return 0

    def job_now() -> int:
        with frame:
            frame.at_least = 1
        os.kill(os.getpid(), signal.SIGTERM)  # taken at once, where the job is
        return 0

    code = run(job, console=Console(out)) if loop else run_now(job_now, console=Console(out))
    assert code == 1
    assert 'evs_snapshot_exit_code{command="prune"} 1' in (tmp_path / "m.prom").read_text()
    assert "SIGTERM: the run had finished; it exits 1, as it said" in out.getvalue()


@pytest.mark.parametrize("how", ["loop", "no-loop", "raised"])
def test_a_signal_before_the_run_wrote_its_side_files_writes_its_code_there(tmp_path: Path, how: str) -> None:
    """Once the side files' paths are known (``record_early_stops``), a signal that stops the command
    outside every phase (with or without an event loop), or an ``Interrupted`` raised where the loop
    cannot run (a stalled standard input), leaves 143 in them, not the previous run's 0; a command that
    ended forgets them (a later signal writes nothing)."""
    summary, metrics_file = stale_side_files(tmp_path)
    forget = record_early_stops(Closing(summary_json=summary, metrics_file=metrics_file), "create")

    async def job() -> int:
        if how == "raised":
            raise Interrupted(signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        await taken_by_the_loop(lambda: False)
        return 0

    def job_now() -> int:
        os.kill(os.getpid(), signal.SIGTERM)  # taken at once, where the job is
        return 0

    with pytest.raises(Interrupted) as raised:
        run_now(job_now, console=Console(io.StringIO())) if how == "no-loop" else run(job)
    assert raised.value.exit_code == 143
    said_stopped(summary, metrics_file, 143)
    stale_side_files(tmp_path)
    stopped_early(130)  # the command ended: nothing is registered any more
    forget()
    assert orjson.loads(summary.read_bytes())["exit_code"] == 0


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_a_background_run_ignores_sigint_and_stops_on_sigterm(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """``create ... &`` in a script (SIGINT ignored): SIGINT changes nothing, SIGTERM drains and exits
    143, and --resume finishes the job with one snapshot per disk."""
    ids = volume_ids(40, seed=304)
    emu = emulator_thread(any_volume=True, latency_ms=100)
    manifest, report = csv_manifest(write, ids), tmp_path / "r.jsonl"
    args = create_args(emu.url, manifest, report, "--concurrency", "2", "--settle", "0.5")
    with started(args, sigint_ignored=True) as process:
        until(lambda: report.exists() and len(records(report)) >= 2, process)
        process.send_signal(signal.SIGINT)
        seen = len(records(report))
        until(lambda: len(records(report)) >= seen + 4, process)  # SIGINT ignored: the run goes on
        process.send_signal(signal.SIGTERM)
        stderr = ended(process)
    assert process.returncode == 143, stderr
    assert "SIGINT" not in stderr
    assert "SIGTERM: taking no new rows; rows in flight get up to 10s to finish" in stderr
    first = records(report)
    assert len(first) < 40
    assert len(emu.state()["snapshots"]) == len(first)  # rows in flight were drained and recorded
    result = invoke([*args, "--resume", "--concurrency", "16"])
    assert result.exit_code == 0, result.output
    assert sorted(last_per_row(report)) == list(range(1, 41))
    assert set(snapshots_per_volume(emu.state()).values()) == {1}


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_rollback_says_why_it_watches_longer_and_a_second_signal_stops_at_once(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """SIGTERM during a rollback: no new rollback is sent, the longer watch is explained; a second
    SIGTERM exits 143 at once, saying so."""
    rows = 8
    emu = emulator_thread(rollback_seconds=60, latency_ms=30, **world(rows))
    created = create_report(tmp_path / "c.jsonl", [{} for _ in range(rows)])
    args = ["rollback", str(created), "--apply", "--endpoint", emu.url, "--concurrency", "1"]
    args += ["--report", str(tmp_path / "b.jsonl"), "--poll-interval", "0.05"]
    with started(args) as process:
        until(lambda: len(emu.state()["rollbacks"]) >= 1, process)
        state = emu.state()
        out_at_the_signal = sent(state) + state["in_flight"]
        process.send_signal(signal.SIGTERM)
        # a rollback sent is watched to its end: requests go on after the signal (and the process runs)
        until(lambda: sent(emu.state()) >= out_at_the_signal + 2, process)
        state = answered(emu)  # any request out at the signal has ended
        rollbacks_sent = sum(state["requests"][ROLLBACK_ROUTE].values())
        process.send_signal(signal.SIGTERM)
        stderr = ended(process)
    assert process.returncode == 143, stderr
    assert "sending no more rollbacks; those already sent are watched to their end for up to 60s" in stderr
    assert "a disk must not be left mid-rollback" in stderr
    [second] = [line for line in stderr.splitlines() if "second SIGTERM" in line]
    assert "stopping now" in second
    # nothing sent after the signal
    assert sum(emu.state()["requests"][ROLLBACK_ROUTE].values()) == rollbacks_sent < rows


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_cli_is_imported_ends_quietly(signum: int) -> None:
    """A signal while the CLI's modules load (before the command's own receiver): 130/143, one line,
    no traceback. The child signals itself as ``main`` starts importing the CLI."""
    child = (
        "import builtins, os, signal\n"
        "real = builtins.__import__\n"
        "def hook(name, *args, **kwargs):\n"
        f"    if name == 'orchestrator.cli': os.kill(os.getpid(), {int(signum)})\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = hook\n"
        "from orchestrator.__main__ import main\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", child, "--help"], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 128 + signum, done.stderr
    name = signal.Signals(signum).name
    assert done.stderr.decode() == f"evs-snapshot: stopped by {name} while starting; nothing was sent\n"


def stale_side_files(tmp_path: Path) -> tuple[Path, Path]:
    """--summary-json and --metrics-file as a previous create run that succeeded left them."""
    summary, metrics_file = tmp_path / "s.json", tmp_path / "m.prom"
    summary.write_bytes(orjson.dumps({"command": "create", "exit_code": 0}))
    metrics_file.write_text('evs_snapshot_exit_code{command="create"} 0\n', encoding="utf-8")
    return summary, metrics_file


def said_stopped(summary: Path, metrics_file: Path, code: int) -> None:
    """The side files say the run stopped with ``code`` (not the previous run's 0)."""
    assert orjson.loads(summary.read_bytes())["exit_code"] == code
    assert f'evs_snapshot_exit_code{{command="create"}} {code}\n' in metrics_file.read_text()


def test_a_signal_after_the_options_and_before_the_run_writes_its_code_to_the_side_files(
    tmp_path: Path,
) -> None:
    """A signal once the options are read (the side files' paths are known) and before the command's
    own receiver is in place: 130/143, the start-up line, and --summary-json and --metrics-file say
    130/143, not the previous run's 0. The child signals itself as create imports its run (SIGINT takes
    the same path)."""
    signum = signal.SIGTERM
    summary, metrics_file = stale_side_files(tmp_path)
    manifest = tmp_path / "m.csv"
    manifest.write_text("volume_id\n00000000-0000-4000-8000-000000000001\n", encoding="utf-8")
    child = (
        "import builtins, os, signal\n"
        "real = builtins.__import__\n"
        "def hook(name, *args, **kwargs):\n"
        f"    if name == 'orchestrator.creating': os.kill(os.getpid(), {int(signum)})\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = hook\n"
        "from orchestrator.__main__ import main\n"
        "main()\n"
    )
    args = create_args(CLOSED_PORT, manifest, tmp_path / "r.jsonl")
    args += ["--summary-json", str(summary), "--metrics-file", str(metrics_file)]
    done = subprocess.run(
        [sys.executable, "-c", child, *args],
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, **AKSK_ENV},
    )
    assert done.returncode == 128 + signum, done.stderr
    name = signal.Signals(signum).name
    assert done.stderr.decode() == f"evs-snapshot: stopped by {name} while starting; nothing was sent\n"
    said_stopped(summary, metrics_file, 128 + signum)


async def test_a_first_signal_starts_the_drain() -> None:
    """SIGTERM once: noted, new rows stopped, the work scope given the grace period, the operator told."""
    received: list[int] = []
    stopped = anyio.Event()
    out = io.StringIO()
    work = anyio.CancelScope()
    async with anyio.create_task_group() as group:
        drain = functools.partial(
            drain_on_signal,
            stop=stopped.set,
            scope=work,
            grace=7.0,
            received=received,
            console=Console(out),
            sync=lambda: None,
        )
        group.start_soon(drain)
        await anyio.wait_all_tasks_blocked()
        assert installed(signal.SIGTERM)
        sent = anyio.current_time()
        os.kill(os.getpid(), signal.SIGTERM)
        with anyio.fail_after(5):
            await stopped.wait()
        group.cancel_scope.cancel()
    assert received == [signal.SIGTERM]
    assert sent + 7.0 <= work.deadline <= anyio.current_time() + 7.0  # the grace, from the signal's arrival
    assert "SIGTERM: taking no new rows; rows in flight get up to 7s to finish" in out.getvalue()


async def test_a_signal_cancels_a_wait() -> None:
    """SIGTERM during a wait under cancel_on_signal cancels the scope and records the signal."""
    received: list[int] = []
    async with anyio.create_task_group() as group:
        group.start_soon(cancel_on_signal, group.cancel_scope, received)
        await anyio.wait_all_tasks_blocked()
        assert installed(signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        await anyio.sleep(5)  # cancelled by the signal long before
    assert group.cancel_scope.cancel_called
    assert received == [signal.SIGTERM]


def test_audit_sigint_while_throttled_exits_130(
    emulator_thread: Callable[..., Any], clock: ManualClock, write: Callable[..., Path]
) -> None:
    """audit: SIGINT while the listing is throttled stops it at once: exit 130, no verdict printed."""
    volume = volume_ids(1, seed=722)[0]
    emu = start(emulator_thread, [volume], [snap(volume, 1)], clock=clock, rate_limit=1.0, burst=1)
    manifest = csv_manifest(write, [volume])
    drain_bucket(emu)
    args = [
        "audit",
        str(manifest),
        "--endpoint",
        emu.url,
        "--project-id",
        PROJECT,
        "--max-age",
        "1d",
        *MANY_RETRIES,
    ]
    with once_throttled(emu, interrupt) as acted:
        result = invoke(args, base=TOKEN_ENV)
    assert acted == [True]
    assert result.exit_code == 130, result.output
    assert "stopped by SIGINT; run audit again" in result.stderr
    assert "volumes:" not in result.stdout
    assert requests_of(emu.state(), SNAPSHOT_LIST)["200"] == 1  # the test's own request only


def test_wait_sigint_while_throttled_exits_130(
    emulator_thread: Callable[..., Any], clock: ManualClock, tmp_path: Path
) -> None:
    """wait: SIGINT while polling is throttled stops the wait: exit 130, nothing appended to the report."""
    emu = emulator_thread(clock=clock, rate_limit=1.0, burst=1, **world(2))
    report = create_report(tmp_path / "create.jsonl", [{}, {}])
    before = report.read_bytes()
    drain_bucket(emu)
    args = [*cli_args("wait", report, endpoint=emu.url, poll_interval="0.05"), *MANY_RETRIES]
    with once_throttled(emu, interrupt) as acted:
        result = invoke(args, base=TOKEN_ENV)
    assert acted == [True]
    assert result.exit_code == 130, result.output
    assert "stopped by SIGINT; run wait again to go on" in result.stderr
    assert report.read_bytes() == before


def test_without_a_loop_a_signal_outside_every_phase_stops_at_once() -> None:
    """A job run without an event loop (a dry run): SIGINT outside a phase stops it where it is, 130."""
    after: list[str] = []
    before = signal.getsignal(signal.SIGINT)

    def job() -> int:
        interrupt()
        after.append("went on")
        return 0

    with pytest.raises(Interrupted) as raised:
        run_now(job, console=Console(io.StringIO()))
    assert raised.value.exit_code == 130
    assert after == []
    assert signal.getsignal(signal.SIGINT) is before  # the receiver is gone with the job


def test_without_a_loop_a_first_signal_among_the_rows_stops_new_rows() -> None:
    """Without an event loop, SIGTERM among the rows: noted, no new rows, the operator told; then 143."""
    received: list[int] = []
    stops: list[bool] = []
    out = io.StringIO()
    console = Console(out)

    def job() -> int:
        with draining_rows(
            stop=lambda: stops.append(True), grace=7.0, received=received, console=console, sync=lambda: None
        ):
            os.kill(os.getpid(), signal.SIGTERM)
            assert stops == [True]  # the job goes on: the rows' loop sees ``stop`` and ends itself
        return 0

    with pytest.raises(Interrupted) as raised:
        run_now(job, console=console)
    assert raised.value.exit_code == 143
    assert received == [signal.SIGTERM]
    assert "SIGTERM: taking no new rows; rows in flight get up to 7s to finish" in out.getvalue()


def test_a_dry_run_stopped_among_its_rows_ends_whole_records_and_its_summary(
    write: Callable[..., Path],
) -> None:
    """SIGTERM while a dry run writes its rows (to a pipe the test does not read yet): it takes no new
    row, every record written is whole, the summary is printed, and it exits 143."""
    manifest = csv_manifest(write, volume_ids(3000, seed=4401))
    args = cli_args("create", manifest, dry_run=True, project_id=PROJECT, region="cn-north-4", report="-")
    process = run_process(
        args,
        NO_CREDENTIALS,
        bufsize=0,  # the test reads two lines, and ``communicate`` all the rest
    )
    with process:
        assert process.stdout is not None
        assert b'"type":"run"' in process.stdout.readline()
        assert b'"outcome":"planned"' in process.stdout.readline()  # among the rows, the pipe soon full
        process.send_signal(signal.SIGTERM)
        rest, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    written = rest.decode().splitlines()
    assert len(written) < 2999  # a 64 KiB pipe holds about 150 records: the rest were never written
    assert all(line.endswith("}") and '"outcome":"planned"' in line for line in written)
    assert "SIGTERM: taking no new rows" in stderr.decode()
    assert f"({1 + len(written)} of 3000 rows have a record)" in stderr.decode()  # the summary counts them
    stopped_by(stderr.decode(), signal.SIGTERM)
    [error] = [line for line in stderr.decode().splitlines() if line.startswith("evs-snapshot: error:")]
    assert "a dry run is not resumed" in error  # --resume would be refused with --dry-run
    assert "--resume" not in error
