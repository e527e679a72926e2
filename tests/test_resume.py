"""Resuming an interrupted create: exactly once across kills, by the journal of sends and one listing."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestrator.emulator import ManualClock
from orchestrator.errors import UsageError
from orchestrator.models import Outcome
from orchestrator.report import ResumeBook
from tests.helpers import (
    CREATE_ROUTE,
    FAST_RETRIES,
    LIST_ROUTE,
    LeapingClock,
    create_args,
    csv_manifest,
    header,
    in_flight,
    invoke,
    journal,
    kill_when,
    last_per_row,
    records,
    report_record,
    requests_of,
    run_main,
    run_process,
    snapshots_per_volume,
    volume_ids,
)

FAULTS = {
    "fault_5xx": 0.05,
    "fault_drop_before": 0.05,
    "fault_drop_after": 0.05,
    "fault_late_commit": 0.1,
    "late_commit_seconds": 0.3,  # shorter than --settle: a careful client never doubles a row
    "latency_ms": 40,
    "jitter_ms": 20,
}
QUICK = ("--settle", "0.8s", "--timeout", "1", "--backoff-initial", "0.05", "--backoff-max", "0.3")
QUICK += ("--max-attempts", "12")
# QUICK with a window (--settle + --timeout) of 1.1 s, not 1.8 s: a resumed row sent before a kill
# is looked up that long after its send. --settle stays twice the late commit of FAULTS.
KILLED = ("--settle", "0.6s", "--timeout", "0.5", "--backoff-initial", "0.05", "--backoff-max", "0.3")
KILLED += ("--max-attempts", "12")
# For runs without late commits: the window only decides how long a row in doubt after a 5xx waits.
BRISK = ("--settle", "0.1s", "--timeout", "1", "--backoff-initial", "0.02", "--backoff-max", "0.1")
BRISK += ("--max-attempts", "12")


def summary_of(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(path.read_bytes())
    return data


def records_in(data: bytes) -> list[dict[str, Any]]:
    """The row records (no header, no journal) among the whole lines of report bytes."""
    found = []
    for line in data.splitlines():
        if line.endswith(b"}") and b'"type":"run"' not in line and b'"outcome":"sending"' not in line:
            found.append(orjson.loads(line))
    return found


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_a_row_in_flight_at_a_kill_is_looked_up_from_its_last_send_not_resent(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path, clock: ManualClock
) -> None:
    """Case 1 of issue 18: a drop, then a 504 whose snapshot commits late, SIGKILL right after the 504;
    the commit lands while the resume looks: the resume finds it and sends no third create."""
    emu = emulator_thread(
        clock=clock,
        any_volume=True,
        fault_drop_before=0.5,
        fault_late_commit=0.5,
        late_commit_seconds=1,
        seed=40,
    )
    (disk,) = volume_ids(1, seed=1801)
    manifest = csv_manifest(write, [disk])
    report = tmp_path / "r.jsonl"
    args = create_args(emu.url, manifest, report, "--timeout", "1", "--backoff-initial", "0.1")
    # After the drop, the row is looked up for --settle before it is sent again (and answered 504); the
    # kill must come within the second window. The resume's window is longer than its start-up.
    process = run_process([*args, "--settle", "1s"])
    kill_when(report, process, lambda _: bool(requests_of(emu.state(), CREATE_ROUTE)["504"]))
    assert requests_of(emu.state(), CREATE_ROUTE) == {"dropped": 1, "504": 1}
    assert records(report) == []  # only the header ...
    assert len(journal(report)) == 2  # ... and the journal of the two sends

    # The late commit lands (the emulator's clock moves on) as soon as the resume first reads the list.
    reads = sum(requests_of(emu.state(), LIST_ROUTE).values())
    done = threading.Event()

    def commit_on_first_read() -> None:
        while not done.wait(0.005):
            if sum(requests_of(emu.state(), LIST_ROUTE).values()) > reads:
                clock.advance(5)
                return

    watcher = threading.Thread(target=commit_on_first_read, daemon=True)
    watcher.start()
    try:
        resumed = invoke([*args, "--settle", "3s", "--resume"])
    finally:
        done.set()
        watcher.join()
    assert resumed.exit_code == 0, resumed.output
    assert requests_of(emu.state(), CREATE_ROUTE) == {"dropped": 1, "504": 1}  # no third create
    assert snapshots_per_volume(emu.state(), header(report)["run_id"]) == {disk: 1}
    (row,) = last_per_row(report).values()
    assert (row["outcome"], row["reconciled"]) == ("accepted", True)


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
@pytest.mark.parametrize("seed", [3, 11, 29])
def test_kills_at_random_moments_then_resume_leave_one_snapshot_per_disk(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path, seed: int
) -> None:
    """Property: under late commits, drops and 5xx, SIGKILL at a random moment (after N records, or
    while a random row's create is out), then --resume: every disk ends with exactly one snapshot of the run."""
    chooser = random.Random(seed)
    ids = volume_ids(40, seed=1800 + seed)
    clock = LeapingClock()
    emu = emulator_thread(clock=clock, any_volume=True, seed=seed, **FAULTS)
    manifest = csv_manifest(write, ids)
    report = tmp_path / "r.jsonl"
    args = create_args(emu.url, manifest, report, *KILLED, concurrency=6)
    process = run_process(args)
    if chooser.random() < 0.5:
        count = chooser.randint(1, 30)
        kill_when(report, process, lambda data: len([1 for _ in records_in(data)]) >= count)
    else:
        target = chooser.randint(2, 25)
        kill_when(report, process, lambda data: target in in_flight(data))  # between a send and its answer
    resumed = invoke([*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    clock.leap(FAULTS["late_commit_seconds"])  # every commit still due has landed
    state = emu.state()
    assert snapshots_per_volume(state, header(report)["run_id"]) == dict.fromkeys(ids, 1)
    assert {r["outcome"] for r in last_per_row(report).values()} == {"accepted"}
    assert sorted(last_per_row(report)) == list(range(1, 41))


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_a_resume_lists_the_run_once_and_looks_up_only_rows_in_their_window(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Case 6: rows never sent are sent at once; in-flight rows are found by one listing of the
    project, with no per-row lookups once their window has passed."""
    ids = volume_ids(120, seed=1806)
    emu = emulator_thread(any_volume=True, latency_ms=30)
    manifest = csv_manifest(write, ids)
    report = tmp_path / "r.jsonl"
    summary = tmp_path / "s.json"
    # --settle 0.2s: no create is in doubt but those in flight at the kill, which the test waits out.
    args = create_args(
        emu.url, manifest, report, *QUICK, "--settle", "0.2s", "--summary-json", str(summary), concurrency=8
    )
    process = run_process(args)
    kill_when(report, process, lambda data: len(records_in(data)) >= 40 and bool(in_flight(data)))
    sent = {r["row"] for r in journal(report)}
    unrecorded = 120 - len(last_per_row(report))
    assert unrecorded > len(sent - set(last_per_row(report)))  # most rows left were never sent
    time.sleep(0.2 + 1.0 + 0.2)  # the window of the rows in flight (--settle 0.2s + --timeout 1) runs out
    before = emu.state()
    made = snapshots_per_volume(before, header(report)["run_id"])
    assert set(made) <= {ids[row - 1] for row in sent}  # a create killed in flight may not have committed
    resumed = invoke([*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    phases = summary_of(summary)["phases"]
    assert phases["create"]["requests"].get("lookups", 0) == 0
    assert phases["create"]["requests"]["lists"] == 1  # 120 snapshots: one page
    creates = requests_of(emu.state(), CREATE_ROUTE)["202"] - requests_of(before, CREATE_ROUTE)["202"]
    assert creates == 120 - len(made)  # one create for each disk without a snapshot, none for the others
    assert snapshots_per_volume(emu.state(), header(report)["run_id"]) == dict.fromkeys(ids, 1)
    assert requests_of(emu.state(), LIST_ROUTE)["200"] >= 1


def test_dry_run_never_writes_into_a_report_a_resume_reads(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Case 7: --resume --dry-run is refused (exit 2, report untouched); a dry run's report cannot be resumed."""
    emu = emulator_thread(any_volume=True)
    ids = volume_ids(10, seed=1807)
    manifest = csv_manifest(write, ids)
    report = tmp_path / "r.jsonl"
    args = create_args(emu.url, manifest, report, *QUICK)
    killed = run_process([*args, "--concurrency", "1"])
    kill_when(report, killed, lambda data: len(records_in(data)) >= 2)
    before = report.read_bytes()
    refused = invoke([*args, "--resume", "--dry-run"])
    assert refused.exit_code == 2, refused.output
    assert "--dry-run does not mix with --resume" in refused.output
    assert report.read_bytes() == before
    resumed = invoke([*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert snapshots_per_volume(emu.state(), header(report)["run_id"]) == dict.fromkeys(ids, 1)
    # The killed process may have left a create the emulator committed but could not answer: count
    # what was sent before the plan, not a fixed number of 202s.
    sent = requests_of(emu.state(), CREATE_ROUTE)

    plan = tmp_path / "plan.jsonl"
    assert invoke(create_args(emu.url, manifest, plan, dry_run=True)).exit_code == 0
    assert header(plan)["dry_run"] is True
    again = invoke([*create_args(emu.url, manifest, plan), "--resume"])
    assert again.exit_code == 2, again.output
    assert "holds a --dry-run's plan, not a run" in again.output
    assert requests_of(emu.state(), CREATE_ROUTE) == sent  # neither the plan nor the refusal sent a create


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_the_journal_costs_one_line_per_attempt_and_no_line_on_standard_output(
    emulator_thread: Callable[..., Any],
    write: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """One ``sending`` record per create request, each before its row's record; none when the report is stdout."""
    emu = emulator_thread(any_volume=True, seed=5, fault_5xx=0.3)
    ids = volume_ids(20, seed=1808)
    manifest = csv_manifest(write, ids)
    report = tmp_path / "r.jsonl"
    assert invoke(create_args(emu.url, manifest, report, *BRISK)).exit_code == 0
    sends = journal(report)
    assert len(sends) == sum(requests_of(emu.state(), CREATE_ROUTE).values())
    assert len(sends) > 20  # some rows were sent twice (after a 500 or 503)
    order = [
        (item.get("outcome"), item.get("row")) for item in map(orjson.loads, report.read_bytes().splitlines())
    ]
    for row in range(1, 21):
        first_send = order.index(("sending", row))
        assert all(
            place > first_send for place, item in enumerate(order) if item[1] == row and item[0] != "sending"
        )
    assert header(report)["journal"] is True
    capfd.readouterr()
    piped = create_args(emu.url, csv_manifest(write, volume_ids(3, seed=1809), "p.csv"), Path("-"), *BRISK)
    code = run_main(piped, monkeypatch)
    out, err = capfd.readouterr()
    assert code == 0, err
    assert out.count("\n") == 4
    assert "sending" not in out


def test_the_closing_summary_agrees_with_summary_after_the_sweep_reconciles_rows(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Rows that failed and that the sweep then found created are neither counted nor listed to retry twice."""
    emu = emulator_thread(
        any_volume=True, seed=7, fault_late_commit=0.5, late_commit_seconds=0.15, latency_ms=15
    )
    ids = volume_ids(12, seed=1810)
    report = tmp_path / "r.jsonl"
    args = create_args(emu.url, csv_manifest(write, ids), report, "--settle", "0.05s", "--max-attempts", "1")
    result = invoke([*args, "--concurrency", "1"])
    assert sum(1 for r in records(report) if r["reconciled"]) > 0, result.output  # the sweep reconciled some
    closing = [line for line in result.stderr.splitlines() if " rows: " in line or "rows to retry" in line]
    printed = invoke(["summary", str(report)])
    again = [line for line in printed.stdout.splitlines() if " rows: " in line or "rows to retry" in line]
    assert closing == again
    assert result.exit_code == printed.exit_code


@pytest.mark.no_cover
def test_a_settle_window_under_ten_seconds_is_warned_about(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--settle under 10 s warns that late commits may double; the default does not."""
    emu = emulator_thread(any_volume=True)
    manifest = csv_manifest(write, volume_ids(1, seed=1811))
    short = invoke(create_args(emu.url, manifest, tmp_path / "a.jsonl", "--settle", "9s"))
    assert short.exit_code == 0
    assert "--settle 9s is under 10s: a create the gateway answered 504 may commit later" in short.stderr
    default = invoke(create_args(emu.url, manifest, tmp_path / "b.jsonl"))
    assert default.exit_code == 0
    assert "is under 10s" not in default.stderr


def test_resume_book_of_missing_empty_or_headerless_reports(tmp_path: Path) -> None:
    """No file, or an empty one: no resume book; records without a run header first: a usage error at line 1."""
    assert ResumeBook.load(tmp_path / "missing.jsonl") is None
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert ResumeBook.load(empty) is None
    headerless = tmp_path / "old.jsonl"
    headerless.write_bytes(
        report_record(2, Outcome.FAILED).to_json() + report_record(1, Outcome.DUPLICATE_DELETED).to_json()
    )
    with pytest.raises(UsageError, match=r"old.jsonl:1: a report starts with its run header"):
        ResumeBook.load(headerless)


def test_create_resume_refuses_a_report_without_header(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """create --resume on a report with records but no run header: exit 2, nothing sent."""
    emu = emulator_thread(any_volume=True)
    manifest = csv_manifest(write, volume_ids(2, seed=921))
    report = tmp_path / "old.jsonl"
    report.write_bytes(report_record(1).to_json())
    result = invoke(create_args(emu.url, manifest, report, *FAST_RETRIES, "--resume"))
    assert result.exit_code == 2, result.output
    assert "old.jsonl:1: a report starts with its run header" in result.output
    assert emu.state()["requests"] == {}


def test_resume_of_a_report_of_another_command_is_refused(write: Callable[..., Path], tmp_path: Path) -> None:
    """create --resume of a prune report: exit 2 naming the command, nothing sent, the report untouched."""
    report = tmp_path / "prune.jsonl"
    line = {"type": "run", "run_id": "20261127T035432Z-abc123", "command": "prune", "manifest": "m.csv"}
    line |= {"rows": 1, "digest": "sha256:00", "shape": {}, "started_at": "2026-11-27T03:54:32.000Z"}
    report.write_bytes(orjson.dumps(line) + b"\n")
    before = report.read_bytes()
    manifest = csv_manifest(write, volume_ids(1, seed=1207))
    result = invoke(create_args("http://127.0.0.1:1", manifest, report, "--resume"))
    assert result.exit_code == 2, result.output
    assert f"{report} is a prune report, not a create report; nothing was sent" in result.stderr
    assert report.read_bytes() == before
