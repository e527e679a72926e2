"""Hostile conditions while a run is under way (issue 12): the report cannot be written, the reader of
standard output goes away, a second signal, refused credentials, and honest counts of requests and time.

Real processes where the process's own fate matters (a file-size limit, a broken pipe, signals).
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import os
import py_compile
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestrator import progress
from orchestrator.emulator import ManualClock, SeedVolume
from orchestrator.errors import ReportUnwritable
from orchestrator.report import ReportWriter
from tests.helpers import (
    AKSK_ENV,
    API_IDS,
    CREATE_ROUTE,
    DELETE,
    EDGE_RUN,
    FAST_RETRIES,
    LIST_ROUTE,
    PROJECT,
    RUN,
    TWO_ROWS_HEADER,
    Launched,
    cli_args,
    create_args,
    csv_manifest,
    edge_header,
    edge_record,
    invoke,
    last_per_row,
    lines,
    once_seen,
    records,
    requests_of,
    run_process,
    snapshots_per_volume,
    volume_ids,
)

SAMPLE = Path(__file__).parent.parent / "samples" / "volumes.csv"
FSIZE_LIMIT = 4096  # bytes: the run header and a few records


def total_requests(state: dict[str, Any]) -> int:
    return sum(sum(statuses.values()) for statuses in state["requests"].values())


def whole_lines(report: Path) -> None:
    """Every line of the report is a whole JSON object ending in a newline."""
    data = report.read_bytes()
    assert data.endswith(b"\n"), data[-200:]
    for line in data.splitlines():
        orjson.loads(line)


def own_project(write: Callable[..., Path], ids: list[str], name: str = "m.csv") -> Path:
    """A manifest whose rows name their project (so create sends no quota check before the rows)."""
    return write(name, "volume_id,project_id\n" + "".join(f"{vid},{PROJECT}\n" for vid in ids))


def rows_args(url: str, manifest: Path, report: Path, *extra: str) -> list[str]:
    """A create command whose first request is a row's create (no --project-id, so no quota check)."""
    return [*cli_args("create", manifest, endpoint=url, report=report), *extra]


def with_file_size_limit(limit: int, args: list[str]) -> subprocess.Popen[bytes]:
    """The CLI as a process whose files may not grow past ``limit`` bytes (``ulimit -f``).

    The limit is set by a small Python launcher that then ``exec``s the CLI, rather than by
    ``preexec_fn``, which is unsafe in a process that runs threads (the emulator's). The CLI runs
    with ``-B``: under the limit, Python would install a cut-short ``.pyc`` of a module it compiles
    (a short write it does not check), and every later import of that module fails.
    """
    launcher = (
        "import os, resource, sys; "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1]))); "
        "os.execv(sys.executable, [sys.executable, '-B', '-m', 'orchestrator', *sys.argv[2:]])"
    )
    return subprocess.Popen(
        [sys.executable, "-c", launcher, str(limit), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **AKSK_ENV},
    )


def finished(process: subprocess.Popen[bytes] | Launched, limit: float = 10.0) -> bytes:
    """The stderr of a process that must end within ``limit`` seconds (killed and shown otherwise)."""
    try:
        return process.communicate(timeout=limit)[1]
    except subprocess.TimeoutExpired:
        process.kill()
        stderr = process.communicate()[1]
        raise AssertionError(f"still running after {limit}s; stderr: {stderr.decode()}") from None


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """``ulimit -f`` for this process, for the ``with`` body only (Python ignores SIGXFSZ: writes fail
    EFBIG), and no bytecode written meanwhile (a module first imported in the body would leave a
    cut-short ``.pyc``; see ``with_file_size_limit``)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    writes = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        sys.dont_write_bytecode = writes


@pytest.mark.no_cover
def test_file_size_limit_stops_the_run_cleanly_and_resume_finishes(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """``ulimit -f``: exit 3 with one line, no torn record; --resume then gives one snapshot per row."""
    ids = volume_ids(40, seed=130)
    emu = emulator_thread(any_volume=True, latency_ms=10)
    report = tmp_path / "r.jsonl"
    args = create_args(emu.url, csv_manifest(write, ids), report, "--concurrency", "4", "--settle", "0.5")
    with with_file_size_limit(FSIZE_LIMIT, args) as process:
        _, stderr = process.communicate(timeout=30)
    text = stderr.decode()
    assert process.returncode == 3, text
    assert "Traceback" not in text
    assert "ExceptionGroup" not in text
    errors = [line for line in text.splitlines() if line.startswith("evs-snapshot: error:")]
    assert len(errors) == 1, text
    assert "cannot write the report" in errors[0]
    assert "File too large" in errors[0]
    assert "--resume" in errors[0]
    whole_lines(report)
    first = records(report)
    assert 0 < len(first) < 40
    assert report.stat().st_size <= FSIZE_LIMIT
    sent = sum(emu.state()["requests"][CREATE_ROUTE].values())
    assert sent < 40, "the run must stop sending once no outcome can be recorded"

    result = invoke([*args, "--resume"])
    assert result.exit_code == 0, result.output
    final = last_per_row(report)
    assert sorted(final) == list(range(1, 41))
    assert {record["outcome"] for record in final.values()} == {"accepted"}
    assert {record["run_id"] for record in records(report)} == {first[0]["run_id"]}
    assert snapshots_per_volume(emu.state()) == dict.fromkeys(ids, 1)


def test_report_to_a_closed_pipe_stops_cleanly(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """``--report - | head -1``: exit 3, one line saying the reader went away, no BrokenPipeError."""
    ids = volume_ids(40, seed=131)
    emu = emulator_thread(any_volume=True, latency_ms=50)
    args = create_args(emu.url, csv_manifest(write, ids), Path("-"), "--concurrency", "4", "--settle", "0.5")
    bash = shutil.which("bash")
    assert bash is not None
    pipeline = 'set -o pipefail; "$@" | head -1'
    with subprocess.Popen(
        [bash, "-c", pipeline, "bash", sys.executable, "-m", "orchestrator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **AKSK_ENV},
    ) as process:
        stdout, stderr = process.communicate(timeout=30)
    text = stderr.decode()
    assert process.returncode == 3, text
    assert "Traceback" not in text
    assert "BrokenPipeError" not in text
    [first] = stdout.splitlines()
    assert orjson.loads(first)["type"] == "run"
    errors = [line for line in text.splitlines() if line.startswith("evs-snapshot: error:")]
    assert len(errors) == 1, text
    assert "broken pipe" in errors[0]
    assert "cannot be resumed" in errors[0]  # --resume needs a report file; it says what to do instead
    assert f"evs_snapshot_run={orjson.loads(first)['run_id']}" in errors[0]
    assert sum(emu.state()["requests"][CREATE_ROUTE].values()) < 40


def test_resume_after_a_closed_pipe_is_refused_for_standard_output(
    write: Callable[..., Path],
) -> None:
    """``--resume --report -`` has nothing to read: exit 2, one line."""
    manifest = csv_manifest(write, volume_ids(1, seed=132))
    result = invoke(cli_args("create", manifest, report="-", resume=True, dry_run=True, project_id=PROJECT))
    assert result.exit_code == 2, result.output
    assert "--resume needs a --report file" in result.output


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_second_sigint_says_it_stopped_at_once(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """SIGINT, then SIGINT again during the drain: exit 130 at once, with a line saying so."""
    ids = volume_ids(20, seed=133)
    emu = emulator_thread(any_volume=True, latency_ms=1000)
    report = tmp_path / "r.jsonl"
    args = rows_args(emu.url, own_project(write, ids), report, "--concurrency", "4", "--settle", "0.5")
    with run_process(args) as process:
        stop = time.monotonic() + 20
        while emu.state()["max_in_flight"] == 0 and time.monotonic() < stop:
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        time.sleep(0.3)
        assert process.poll() is None, "the first SIGINT drains rows in flight (1 s each)"
        process.send_signal(signal.SIGINT)
        stderr = finished(process)
        # It did not wait for the rows in flight: their requests (1 s each) are still being answered.
        still_out = emu.state()["in_flight"]
    text = stderr.decode()
    assert process.returncode == 130, text
    assert still_out > 0, "the second SIGINT waited for the requests in flight"
    assert "Traceback" not in text
    assert "SIGINT: taking no new rows" in text
    [second] = [line for line in text.splitlines() if "second SIGINT" in line]
    assert "stopping now" in second
    assert "--resume" in second
    whole_lines(report)
    summary = invoke(["summary", str(report)])
    assert summary.exit_code == 1, summary.output
    done = len(records(report))
    assert f"({done} of 20 rows have a record)" in summary.stdout
    assert f"{20 - done} of 20 rows have no record" in summary.stdout
    assert "run the same create command with --resume" in summary.stdout


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_sigint_before_the_rows_says_so(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """SIGINT during start-up checks (the quota GET): exit 130 with one line, not silently."""
    # The GET is answered 0.5 s after it arrives (SIGINT goes within 20 ms of it); the emulator's stop
    # waits for that answer, so a longer latency only costs time.
    emu = emulator_thread(any_volume=True, latency_ms=500)
    report = tmp_path / "r.jsonl"
    args = create_args(emu.url, csv_manifest(write, volume_ids(3, seed=144)), report, "--settle", "0.5")
    with run_process(args) as process:
        stop = time.monotonic() + 20
        while emu.state()["max_in_flight"] == 0 and time.monotonic() < stop:
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        stderr = finished(process)
    text = stderr.decode()
    assert process.returncode == 130, text
    assert "Traceback" not in text
    [line] = [line for line in text.splitlines() if line.startswith("evs-snapshot: error:")]
    assert "stopped by SIGINT" in line
    assert "run the same command again" in line
    assert CREATE_ROUTE not in emu.state()["requests"]


@pytest.mark.no_cover
def test_create_wait_reports_the_whole_run(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """``create --wait``: the summary counts every request of create, sweep and wait, and the run's time."""
    ids = volume_ids(5, seed=134)
    emu = emulator_thread(any_volume=True, creating_seconds=0.4)
    report, side = tmp_path / "r.jsonl", tmp_path / "s.json"
    args = create_args(
        emu.url,
        csv_manifest(write, ids),
        report,
        "--settle",
        "0.5",
        "--wait",
        "--poll-interval",
        "0.1",
        "--summary-json",
        str(side),
    )
    started = time.monotonic()
    result = invoke(args)
    wall = time.monotonic() - started
    assert result.exit_code == 0, result.output
    summary = orjson.loads(side.read_bytes())
    assert list(summary["phases"]) == ["create", "sweep", "wait"]
    by_phase = {name: sum(phase["requests"].values()) for name, phase in summary["phases"].items()}
    sent = total_requests(emu.state())
    assert summary["requests"] == sum(by_phase.values()) == sent
    assert by_phase["create"] >= 5
    assert by_phase["wait"] >= 1
    assert summary["outcomes"] == {"available": 5}
    phase_time = sum(phase["seconds"] for phase in summary["phases"].values())
    assert summary["phases"]["wait"]["seconds"] >= 0.3
    assert phase_time - 0.1 <= summary["elapsed_s"] <= wall + 0.05
    match = re.search(
        r"^(\d+) requests \(.*\) in ([0-9.]+)s .*phases: create .*sweep .*wait ", result.stderr, re.M
    )
    assert match is not None, result.stderr
    assert int(match.group(1)) == sent
    assert float(match.group(2)) >= phase_time - 0.1


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_wait_reports_its_own_requests_and_time(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path, clock: ManualClock
) -> None:
    """``wait`` prints the requests it sent over its own time, not the create's."""
    ids = volume_ids(5, seed=135)
    emu = emulator_thread(clock=clock, any_volume=True)  # its clock stands still: creating until moved
    report, side = tmp_path / "r.jsonl", tmp_path / "s.json"
    assert invoke(create_args(emu.url, csv_manifest(write, ids), report, "--settle", "0.5")).exit_code == 0
    after_create = total_requests(emu.state())
    listed = requests_of(emu.state(), LIST_ROUTE).total()

    def three_rounds(state: dict[str, Any]) -> bool:
        """The wait's own listing (its sweep) and its first three rounds (at 0, 0.1 and 0.25 s) have
        seen the snapshots creating: once they end, the fourth (0.475 s) finds them available, so the
        wait lasts more than 0.3 s."""
        return requests_of(state, LIST_ROUTE).total() >= listed + 4

    with once_seen(emu, three_rounds, lambda: clock.advance(emu.settings.creating_seconds)) as acted:
        started = time.monotonic()
        result = invoke(cli_args("wait", report, endpoint=emu.url, poll_interval=0.1, summary_json=side))
        wall = time.monotonic() - started
    assert acted == [True]
    assert result.exit_code == 0, result.output
    summary = orjson.loads(side.read_bytes())
    sent = total_requests(emu.state()) - after_create
    assert "create" not in summary["phases"]
    assert summary["requests"] == sent
    assert summary["elapsed_s"] <= wall + 0.05
    assert summary["outcomes"] == {"available": 5}
    match = re.search(r"^(\d+) requests \(.*\) in ([0-9.]+)s \(([0-9.]+) requests/s\)", result.stderr, re.M)
    assert match is not None, result.stderr
    assert int(match.group(1)) == sent
    assert float(match.group(3)) <= sent / 0.3  # the wait lasted at least 0.3 s (snapshots still creating)
    rounds = [line for line in result.stderr.splitlines() if line.startswith("poll round:")]
    assert rounds
    assert not any(re.search(r"\b1 requests\b", line) for line in rounds), rounds
    assert any(line.startswith("poll round: 1 request,") for line in rounds), rounds


@pytest.mark.no_cover
def test_create_and_wait_keep_separate_metrics_series(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """One --metrics-file for create and wait: each command's series survives the other's write."""
    ids = volume_ids(3, seed=136)
    emu = emulator_thread(any_volume=True, creating_seconds=0.2)
    report, metrics = tmp_path / "r.jsonl", tmp_path / "m.prom"
    args = create_args(
        emu.url, csv_manifest(write, ids), report, "--settle", "0.5", "--metrics-file", str(metrics)
    )
    assert invoke(args).exit_code == 0
    result = invoke(cli_args("wait", report, endpoint=emu.url, poll_interval=0.1, metrics_file=metrics))
    assert result.exit_code == 0, result.output
    text = metrics.read_text()
    assert 'evs_snapshot_rows{command="create",outcome="accepted"} 3' in text
    assert 'evs_snapshot_rows{command="wait",outcome="available"} 3' in text
    for family in ("evs_snapshot_run_duration_seconds", "evs_snapshot_exit_code", "evs_snapshot_requests"):
        assert f'{family}{{command="create"}}' in text
        assert f'{family}{{command="wait"}}' in text
    type_lines = Counter(line.split()[2] for line in text.splitlines() if line.startswith("# TYPE "))
    assert all(count == 1 for count in type_lines.values()), type_lines  # one family, many series
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(samples) == len(set(samples))


def test_create_elapsed_time_covers_its_phases_in_a_real_process(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """In a fresh process the run's time (summary, metrics) is at least the sum of its phases."""
    emu = emulator_thread(any_volume=True)
    report, side, metrics = tmp_path / "r.jsonl", tmp_path / "s.json", tmp_path / "m.prom"
    args = create_args(
        emu.url,
        csv_manifest(write, volume_ids(3, seed=139)),
        report,
        "--settle",
        "0.5",
        "--summary-json",
        str(side),
        "--metrics-file",
        str(metrics),
    )
    with run_process(args) as process:
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    summary = orjson.loads(side.read_bytes())
    phase_time = sum(phase["seconds"] for phase in summary["phases"].values())
    assert summary["elapsed_s"] >= phase_time - 0.01, summary
    duration = re.search(
        r'^evs_snapshot_run_duration_seconds\{command="create"\} ([0-9.]+)$', metrics.read_text(), re.M
    )
    assert duration is not None
    assert float(duration.group(1)) >= phase_time - 0.01


def _frames(stderr: str) -> list[str]:
    """The progress lines a run drew on stderr (each redraw starts with a carriage return)."""
    return [frame.removeprefix("\x1b[2K") for frame in stderr.split("\r") if "rows  ok" in frame]


def test_progress_says_a_silent_endpoint_has_not_answered(write: Callable[..., Path], tmp_path: Path) -> None:
    """Against an endpoint that accepts connections and never answers, progress says so (not just 0/10)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        args = rows_args(url, own_project(write, volume_ids(10, seed=140)), tmp_path / "r.jsonl")
        result = invoke([*args, "--progress", "--timeout", "0.4", "--deadline", "1s", "--settle", "0.5"])
    assert result.exit_code in (1, 3), result.output
    assert "Traceback" not in result.output
    frames = _frames(result.stderr)
    assert len(frames) >= 2, result.stderr
    assert all("no answer yet" in frame for frame in frames if not frame.startswith("10/10")), frames
    assert any("in flight 1" in frame or "settling" in frame for frame in frames[1:]), frames
    assert not any("retries" in frame for frame in frames), frames  # every row sent once at most


def test_progress_shows_requests_in_flight_and_throttling(
    emulator_thread: Callable[..., Any],
    write: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Slow answers show as requests in flight (not retries); 429s show as throttled."""
    monkeypatch.setattr(progress, "INTERVAL", 0.05)  # a frame every 50 ms (the tool's: every 0.5 s)
    slow = emulator_thread(any_volume=True, latency_ms=150)  # three frames of each answer
    args = rows_args(slow.url, own_project(write, volume_ids(2, seed=141)), tmp_path / "slow.jsonl")
    result = invoke([*args, "--progress", "--settle", "0.5"])
    assert result.exit_code == 0, result.output
    frames = _frames(result.stderr)
    assert any("in flight" in frame for frame in frames), frames
    assert not any("retries" in frame for frame in frames), frames

    # Its 429s name half its rate: paced at that, the rows sent again are not throttled again (paced at
    # the very limit, one that came a little early was, and the tool went back to its first estimate).
    throttled = emulator_thread(any_volume=True, rate_limit=40, told_limit=20, burst=1)
    args = rows_args(
        throttled.url, own_project(write, volume_ids(6, seed=142), "t.csv"), tmp_path / "t.jsonl"
    )
    result = invoke([*args, "--progress", *FAST_RETRIES])
    assert result.exit_code == 0, result.output
    assert any("throttled" in frame for frame in _frames(result.stderr)), result.stderr


@pytest.mark.no_cover
def test_rows_queued_behind_the_credentials_proof_go_out_together(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Once the first request has proven the credentials, the rows that waited for it are sent in parallel."""
    emu = emulator_thread(any_volume=True, latency_ms=100)
    args = rows_args(emu.url, own_project(write, volume_ids(6, seed=143)), tmp_path / "r.jsonl")
    assert invoke([*args, "--settle", "0.5"]).exit_code == 0
    assert emu.state()["max_in_flight"] > 1


def test_refused_credentials_stop_validate_online_within_two_requests(
    emulator_thread: Callable[..., Any], write: Callable[..., Path]
) -> None:
    """validate --online with a wrong secret key: at most 2 GETs, exit 3, one line naming the cause."""
    emu = emulator_thread(any_volume=True)
    manifest = csv_manifest(write, volume_ids(60, seed=137))
    args = cli_args("validate", manifest, online=True, endpoint=emu.url, project_id=PROJECT)
    result = invoke(args, {"HUAWEICLOUD_SDK_SK": "wrong-secret-key"})
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    assert "wrong-secret-key" not in result.output
    requests = emu.state()["requests"]
    assert all(route.startswith("GET ") for route in requests)
    assert sum(sum(statuses.values()) for statuses in requests.values()) <= 2
    assert "credentials refused" in result.stderr


@pytest.mark.no_cover
def test_refused_credentials_give_validate_one_error_and_a_count(
    emulator_thread: Callable[..., Any], write: Callable[..., Path]
) -> None:
    """validate --online refused: one error line, no per-row refusal lines, and the count line."""
    emu = emulator_thread(any_volume=True)
    manifest = csv_manifest(write, volume_ids(60, seed=138))
    args = cli_args("validate", manifest, online=True, endpoint=emu.url, project_id=PROJECT)
    result = invoke(args, {"HUAWEICLOUD_SDK_SK": "wrong-secret-key"})
    assert result.exit_code == 3, result.output
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, result.stderr
    assert not any(line.startswith("APIGW.0301: row ") for line in result.stdout.splitlines()), result.stdout
    assert result.stdout.splitlines()[-1].startswith("60 rows: "), result.stdout


def _sample_emulator(emulator_thread: Callable[..., Any]) -> Any:
    """An emulator holding the sample's disks in the states its ``emulator_status`` column gives."""
    volumes = []
    for line in SAMPLE.read_text().splitlines()[1:]:
        cells = line.split(",")
        if cells[-1] != "missing" and len(cells[0]) == 36:
            volumes.append(SeedVolume(volume_id=cells[0], status=cells[-1]))
    return emulator_thread(volumes=tuple(volumes), project_id=PROJECT)


@pytest.mark.no_cover
def test_readme_force_then_resume_example_works_on_the_sample(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """The README's advice: rerun with --force and --resume; the in-use disk (row 4) is then snapshotted."""
    emu = _sample_emulator(emulator_thread)
    report = tmp_path / "r.jsonl"
    args = [*create_args(emu.url, SAMPLE, report, "--settle", "0.5"), "--region", "cn-north-4"]
    first = invoke(args)
    assert first.exit_code == 1, first.output
    assert last_per_row(report)[4]["error_code"] == "EVS.5400"
    invoke([*args, "--resume", "--force"])
    assert last_per_row(report)[4]["outcome"] == "accepted"


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_emulator_demo_can_be_resumed(tmp_path: Path) -> None:
    """``create samples/volumes.csv --emulator`` then the same with ``--resume``: accepted rows are kept."""
    report = tmp_path / "r.jsonl"
    args = ["create", str(SAMPLE), "--emulator", "--report", str(report), "--settle", "0.5"]
    assert invoke(args).exit_code == 1
    result = invoke([*args, "--resume"])
    assert result.exit_code == 1, result.output
    assert len(lines(report)) > 8


def test_report_on_a_full_standard_output_says_why_and_names_the_marker() -> None:
    """--report - onto a full device: ReportUnwritable gives the OS's reason (not a broken pipe)."""
    with open("/dev/full", "w") as full, contextlib.redirect_stdout(full):
        writer = ReportWriter("-")
        with pytest.raises(ReportUnwritable) as caught:
            writer.write_header(edge_header(1))
        writer.close()
    message = str(caught.value)
    assert "cannot write standard output: No space left on device" in message
    assert f"(metadata evs_snapshot_run={EDGE_RUN})" in message
    assert "broken pipe" not in message


def test_report_file_that_cannot_grow_keeps_only_whole_records(tmp_path: Path) -> None:
    """A report file at its size limit: the record is refused (File too large), no torn line stays,
    and the message says to --resume."""
    path = tmp_path / "r.jsonl"
    first = edge_record(1).to_json()
    with ReportWriter(str(path)) as writer:
        writer.write(edge_record(1))
        with file_size_limit(len(first) + 10), pytest.raises(ReportUnwritable) as caught:
            writer.write(edge_record(2))
    message = str(caught.value)
    assert f"cannot write the report {path}: {os.strerror(errno.EFBIG)}" in message
    assert "the run stopped after 1 line. " in message
    assert "--resume" in message
    assert path.read_bytes() == first


@pytest.mark.parametrize("command", ["prune", "cleanup"])
def test_a_report_that_cannot_grow_ends_with_the_advice_of_the_command_that_stopped(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path, command: str
) -> None:
    """prune or cleanup stopped by a report that cannot grow: the one error line tells what its own
    --resume does (deletions in flight), never create's 'rows in flight' sentence; nothing is sent."""
    emu = emulator_thread(any_volume=True)
    report = tmp_path / "r.jsonl"
    if command == "prune":
        args = cli_args("prune", csv_manifest(write, volume_ids(1, seed=134)), keep_last=1, apply=True)
    else:
        source = tmp_path / "create.jsonl"
        source.write_bytes(TWO_ROWS_HEADER.to_json())
        args = cli_args("cleanup", source, apply=True)
    args += ["--endpoint", emu.url, "--project-id", PROJECT, "--report", str(report)]
    with file_size_limit(200):  # room for a lock's holder line, not for the report's header
        result = invoke(args)
    assert result.exit_code == 3, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("evs-snapshot: error:")]
    assert len(errors) == 1, result.stderr
    assert f"cannot write the report {report}: {os.strerror(errno.EFBIG)}" in errors[0]
    assert errors[0].endswith(
        "Fix it and run again with --resume (each snapshot whose DELETE was sent without a record is "
        "looked up before anything is sent again)"
    ), errors[0]
    assert DELETE not in emu.state()["requests"]


@pytest.mark.parametrize("command", ["create", "hold"])
def test_a_lock_directory_that_cannot_grow_stops_before_anything_is_sent(
    emulator_thread: Callable[..., Any],
    write: Callable[..., Path],
    tmp_path: Path,
    lock_dir_of_the_test: Path,
    command: str,
) -> None:
    """No room for a lock file's holder line (``ulimit -f 0``): exit 3 as for a report that cannot be
    written, one line naming the lock directory, nothing sent, no lock file and no report left."""
    emu = emulator_thread(any_volume=True)
    report = tmp_path / "r.jsonl"
    if command == "create":
        args = create_args(emu.url, csv_manifest(write, volume_ids(2, seed=133)), report)
    else:
        args = cli_args("hold", snapshot=API_IDS[0], reason="x", project_id=PROJECT, endpoint=emu.url)
        args += ["--report", str(report)]
    with file_size_limit(0):
        result = invoke(args)
    assert result.exit_code == 3, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("evs-snapshot: error:")]
    assert len(errors) == 1, result.stderr
    assert f"cannot write the lock file {lock_dir_of_the_test}/" in errors[0]
    assert f"{os.strerror(errno.EFBIG)}; nothing was sent. Free space in {lock_dir_of_the_test} " in errors[0]
    assert "internal error" not in result.stderr
    assert emu.state()["requests"] == {}
    assert list(lock_dir_of_the_test.iterdir()) == []
    assert not report.exists()


def test_stdout_report_whose_reader_left_stops_with_the_run_marker() -> None:
    """--report - with the reader gone: ReportUnwritable says 'broken pipe' and names the run's marker."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    with open(write_end, "w") as stdout, contextlib.redirect_stdout(stdout):
        writer = ReportWriter("-")
        assert writer.empty
        with pytest.raises(ReportUnwritable) as caught:
            writer.write_header(TWO_ROWS_HEADER)
        writer.sync()  # nothing to sync on a stream it does not own
        writer.close()
    message = str(caught.value)
    assert "cannot write standard output: the reader of standard output went away (broken pipe)" in message
    assert f"(metadata evs_snapshot_run={RUN})" in message
    assert "the run stopped after 0 lines. " in message


def test_a_cut_short_bytecode_file_is_an_internal_error_not_a_signal(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A module's ``.pyc`` cut short (what a write under ``ulimit -f`` leaves) makes its import raise
    EOFError, which click turns into an abort: exit 70 naming the fault, not "stopped by SIGINT"."""
    copy = tmp_path / "tree"
    shutil.copytree(
        Path(__file__).parent.parent / "orchestrator",
        copy / "orchestrator",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    source = copy / "orchestrator" / "creating.py"
    compiled = Path(importlib.util.cache_from_source(str(source)))
    py_compile.compile(str(source), cfile=str(compiled), doraise=True)
    compiled.write_bytes(compiled.read_bytes()[:40])  # the header whole, the code cut short
    emu = emulator_thread(any_volume=True)
    args = create_args(emu.url, csv_manifest(write, volume_ids(1, seed=150)), tmp_path / "r.jsonl")
    process = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        env={**os.environ, **AKSK_ENV, "PYTHONPATH": str(copy)},
        cwd=copy,  # -m puts the working folder first on the path
        timeout=60,
        check=False,
    )
    text = process.stderr.decode()
    assert process.returncode == 70, text
    assert "internal error: EOFError" in text
    assert "SIGINT" not in text
    assert "Traceback" not in text
