"""Never lose or double a snapshot: chaos, kills and resume, signals, the lock, deadlines, throttling."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.emulator import SeedVolume
from orchestrator.throttle import SendWindow
from tests.helpers import (
    FAST_RETRIES,
    csv_manifest,
    invoke,
    journal,
    last_per_row,
    records,
    run_process,
    seeds,
    volume_ids,
    wait_for_records,
)
from tests.helpers import create_args as args_for

CHAOS = {
    "fault_5xx": 0.08,
    "fault_drop_before": 0.05,
    "fault_drop_after": 0.1,  # tens of rows: each fault still happens (asserted)
    # The burst is half the send window's first width (SendWindow.FIRST, 16 at once): the first fan-out
    # meets 429s however slow the machine. The limit named, the route is paced just under it; a 429
    # then (a loaded machine sends in clumps) cuts the rate to just under what got through. With 150/s
    # and a burst of 4 every run under load took 7-8 s (a clump of 5 was enough); with 75/s and 8, 2-3 s.
    "rate_limit": 75,
    "burst": 8,
    "latency_ms": 5,
    "jitter_ms": 5,
}


# --settle 0.2: no late commits here, so a dropped create's snapshot is there at its first lookup or never.
CHAOS_RETRIES = (*FAST_RETRIES, "--settle", "0.2")
# A resumed row in flight is looked up until --settle + --timeout after its send (3.5 s with FAST_RETRIES).
RESUME_RETRIES = (*FAST_RETRIES, "--settle", "0.3", "--timeout", "1")


def assert_exactly_one_snapshot_each(state: dict[str, Any], ids: list[str]) -> None:
    counts = Counter(snapshot["volume_id"] for snapshot in state["snapshots"])
    assert counts == dict.fromkeys(ids, 1), {k: v for k, v in counts.items() if v != 1}


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_chaos_run_creates_exactly_one_snapshot_per_volume(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """5xx, drops before and after recording, a tight rate limit and latency: one snapshot each, all accepted."""
    ids = volume_ids(80, seed=41)
    emu = emulator_thread(any_volume=True, seed=41, **CHAOS)
    report = tmp_path / "r.jsonl"
    # 16 at once (the send window) outrun the burst of 8 however slow the machine: some 429s always happen.
    result = invoke(
        args_for(emu.url, csv_manifest(write, ids), report, "--concurrency", "32", *CHAOS_RETRIES)
    )
    assert result.exit_code == 0, result.output
    final = last_per_row(report)
    assert sorted(final) == list(range(1, 81))
    assert {r["outcome"] for r in final.values()} == {"accepted"}
    assert len(records(report)) == 80
    state = emu.state()
    assert_exactly_one_snapshot_each(state, ids)
    by_volume = {s["volume_id"]: s["id"] for s in state["snapshots"]}
    assert all(by_volume[r["volume_id"]] == r["snapshot_id"] for r in final.values())
    reconciled = [r for r in final.values() if r["reconciled"]]
    assert reconciled, "drop-after faults must have been reconciled by lookup"
    creates = state["requests"]["POST /v2/{project_id}/cloudsnapshots"]
    assert creates.get("429", 0) > 0
    assert creates.get("dropped", 0) > 0


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_sigkill_then_resume_finishes_without_duplicates(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A chaos run killed with SIGKILL at a random moment, then --resume: every row once, no doubles."""
    ids = volume_ids(50, seed=42)
    emu = emulator_thread(any_volume=True, seed=42, **{**CHAOS, "latency_ms": 25})
    manifest = csv_manifest(write, ids)
    report = tmp_path / "r.jsonl"
    args = args_for(emu.url, manifest, report, "--concurrency", "12", *RESUME_RETRIES)
    with run_process(args) as process:
        wait_for_records(report, random.Random(42).randint(8, 40), process)
        process.kill()
        process.wait(timeout=10)
    before = records(report)
    assert 0 < len(before) < 50
    result = invoke([*args, "--resume"])
    assert result.exit_code == 0, result.output
    final = last_per_row(report)
    assert sorted(final) == list(range(1, 51))
    assert {r["outcome"] for r in final.values()} == {"accepted"}
    assert {r["run_id"] for r in records(report)} == {before[0]["run_id"]}
    assert_exactly_one_snapshot_each(emu.state(), ids)
    done_before = {r["row"] for r in before if r["outcome"] == "accepted"}
    assert all(Counter(r["row"] for r in records(report))[row] == 1 for row in done_before)


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_sigterm_drains_exits_143_and_resume_completes(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """SIGTERM: in-flight rows finish and are recorded, exit 143, summary printed; --resume finishes."""
    ids = volume_ids(60, seed=43)
    emu = emulator_thread(any_volume=True, latency_ms=60)
    manifest = csv_manifest(write, ids)
    report = tmp_path / "r.jsonl"
    args = args_for(emu.url, manifest, report, "--concurrency", "4", "--settle", "0.5")
    with run_process(args) as process:
        wait_for_records(report, 15, process)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 143, stderr
    assert b"stopped by SIGTERM" in stderr
    assert b"rows:" in stderr
    first = records(report)
    whole = len(first) + len(journal(report)) + 1  # records, the journal of sends, the run header
    assert whole == report.read_bytes().count(b"\n")  # every line whole
    assert len({r["row"] for r in first}) == len(first) < 60
    assert all(r["outcome"] == "accepted" for r in first)
    assert len(emu.state()["snapshots"]) == len(first)  # in-flight rows were drained and recorded
    result = invoke([*args, "--resume", "--concurrency", "16"])  # not part of the run's shape
    assert result.exit_code == 0, result.output
    assert sorted(last_per_row(report)) == list(range(1, 61))
    assert_exactly_one_snapshot_each(emu.state(), ids)


@pytest.mark.no_cover
def test_second_run_on_same_report_exits_75(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """While one run holds the report's lock, a second exits 75 at once and changes nothing."""
    ids = volume_ids(24, seed=44)
    emu = emulator_thread(any_volume=True, latency_ms=60)  # 0.7 s of creates after the first two
    report = tmp_path / "r.jsonl"
    args = args_for(emu.url, csv_manifest(write, ids), report, "--concurrency", "2")
    with run_process(args) as process:
        wait_for_records(report, 2, process)
        # Stopped, the first holds its locks and cannot end nor let go, however long the second takes:
        # a second that waited for them would never return.
        process.send_signal(signal.SIGSTOP)
        try:
            second = invoke([*args, "--resume"])
            assert process.poll() is None  # at once: while the first still runs, not after it let go
        finally:
            process.send_signal(signal.SIGCONT)
        assert second.exit_code == 75, second.output
        assert "another evs-snapshot run holds" in second.stderr
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
    got = records(report)
    assert len(got) == 24
    assert len({r["run_id"] for r in got}) == 1
    assert_exactly_one_snapshot_each(emu.state(), ids)


def test_resume_skips_finished_rows_and_retries_the_rest(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Accepted rows are not sent again; rejected and failed rows are; names and run_id stay the same."""
    ids = volume_ids(6, seed=45)
    emu = emulator_thread(volumes=(*seeds(ids[:4]), SeedVolume(volume_id=ids[4], status="in-use")))
    manifest = csv_manifest(write, ids)
    report = tmp_path / "r.jsonl"
    args = args_for(emu.url, manifest, report, "--name-template", "{run_id}-{row}", "--max-attempts", "1")
    assert invoke(args).exit_code == 1
    first = last_per_row(report)
    assert [first[n]["outcome"] for n in range(1, 7)] == ["accepted"] * 4 + ["rejected", "rejected"]
    posts_before = sum(emu.state()["requests"]["POST /v2/{project_id}/cloudsnapshots"].values())
    result = invoke([*args, "--resume", "--force"])  # the operator now allows the in-use disk
    assert result.exit_code == 1, result.output  # row 6 still does not exist
    final = last_per_row(report)
    assert final[5]["outcome"] == "accepted"
    assert final[5]["name"] == first[5]["name"]
    assert final[6]["error_code"] == "EVS.5404"
    assert {r["run_id"] for r in records(report)} == {first[1]["run_id"]}
    posts_after = sum(emu.state()["requests"]["POST /v2/{project_id}/cloudsnapshots"].values())
    assert posts_after - posts_before == 2  # only rows 5 and 6 were sent again
    assert "6 rows: 5 accepted, 1 rejected" in result.stderr


def test_resume_after_torn_last_line(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A report whose last line was cut mid-write resumes: that row is looked up, not doubled."""
    ids = volume_ids(10, seed=46)
    emu = emulator_thread(any_volume=True)
    manifest = csv_manifest(write, ids)
    report = tmp_path / "r.jsonl"
    args = args_for(emu.url, manifest, report, "--concurrency", "1")
    assert invoke(args).exit_code == 0
    data = report.read_bytes()
    report.write_bytes(data[: len(data) - 40])  # the last record loses its end and newline
    result = invoke([*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert_exactly_one_snapshot_each(emu.state(), ids)
    final = last_per_row(report)
    assert sorted(final) == list(range(1, 11))
    assert sum(1 for r in final.values() if r["reconciled"]) == 1


def test_deadline_fails_rows_not_sent(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Past --deadline, rows not yet sent end failed with DEADLINE_EXCEEDED; every row has a record."""
    ids = volume_ids(40, seed=47)
    # 100 ms (was 200): the credential proof and the quota check, then a create, end 0.3 s into the
    # second; a loaded machine once had no create answered by the deadline.
    emu = emulator_thread(any_volume=True, latency_ms=100)
    report = tmp_path / "r.jsonl"
    result = invoke(
        args_for(emu.url, csv_manifest(write, ids), report, "--concurrency", "2", "--deadline", "1s")
    )
    assert result.exit_code == 1
    final = last_per_row(report)
    assert sorted(final) == list(range(1, 41))
    late = [r for r in final.values() if r["outcome"] == "failed"]
    assert late
    # Issue 11: requests in flight at the deadline are cancelled; their rows are UNCONFIRMED (the
    # service may still act), and rows never sent are DEADLINE_EXCEEDED with no attempt.
    assert {r["error_code"] for r in late} <= {"DEADLINE_EXCEEDED", "UNCONFIRMED"}
    never_sent = [r for r in late if r["error_code"] == "DEADLINE_EXCEEDED"]
    assert never_sent
    assert all(r["attempts"] == 0 for r in never_sent)
    in_flight = {r["volume_id"] for r in late if r["error_code"] == "UNCONFIRMED"}
    assert len(in_flight) <= 2  # --concurrency 2
    accepted = {r["volume_id"] for r in final.values() if r["outcome"] == "accepted"}
    assert accepted
    assert accepted <= {s["volume_id"] for s in emu.state()["snapshots"]} <= accepted | in_flight


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_unknown_rate_limit_is_learned(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Against a limit the tool is not told (neither --max-rps nor the 429's message names it), it slows
    itself: nothing fails and few attempts are throttled.

    The gateway's own burst (a second's worth, as its default): the first estimate is then near the
    limit. With a burst of 10 the run took 7 s climbing from an estimate of 9/s (the climb from a low
    estimate is test_throttle's); a limiter that did not slow down has half its creates throttled."""
    ids = volume_ids(120, seed=48)
    emu = emulator_thread(any_volume=True, rate_limit=60, burst=60, told_limit=0)
    report = tmp_path / "r.jsonl"
    result = invoke(args_for(emu.url, csv_manifest(write, ids), report, "--concurrency", "16", *FAST_RETRIES))
    assert result.exit_code == 0, result.output
    creates = emu.state()["requests"]["POST /v2/{project_id}/cloudsnapshots"]
    assert creates["202"] == 120
    assert creates.get("429", 0) < 0.25 * sum(creates.values()), creates


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_a_burst_it_is_not_told_throttles_at_most_the_first_send_window(
    emulator_thread: Callable[..., Any],
    write: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """32 workers against a limit of 100/s with a burst of 40, not told by --max-rps: the slow start
    lets at most SendWindow.FIRST requests out at once before the first 429, so at most that many are
    throttled (without it, the request of every worker out when the burst ran out was: about 30 here;
    on a machine too loaded to outrun the limit, none is). The 2 ms latency keeps requests out long
    enough for the emulator to count them; the window's times are stretched so that no pause of a
    loaded machine widens or opens it (counts only, no timing)."""
    for stretched in ("PERIOD", "SLOW", "OPEN_AFTER"):
        monkeypatch.setattr(SendWindow, stretched, 60.0)
    ids = volume_ids(80, seed=51)
    emu = emulator_thread(any_volume=True, rate_limit=100, burst=40, latency_ms=2)
    report = tmp_path / "r.jsonl"
    result = invoke(args_for(emu.url, csv_manifest(write, ids), report, "--concurrency", "32", *FAST_RETRIES))
    assert result.exit_code == 0, result.output
    state = emu.state()
    creates = state["requests"]["POST /v2/{project_id}/cloudsnapshots"]
    assert creates["202"] == 80
    assert creates.get("429", 0) <= SendWindow.FIRST, creates
    assert state["max_in_flight"] <= SendWindow.FIRST  # then paced: a request or two out at a time
    assert state["max_in_flight"] <= SendWindow.FIRST


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
# A burst of 10 stays: 16 creates at once outrun it however slow the machine (a 429 is asserted). The
# first estimate is then about 9/s, and a wrong limit sends the route back to it: told-four-times
# takes 6 s climbing back (a burst of 60 would take 1.5 s, but a loaded machine may then meet no 429).
@pytest.mark.parametrize("told", [60, 240], ids=["told-the-limit", "told-four-times-the-limit"])
def test_a_limit_the_429_names_is_taken_and_a_wrong_one_still_meets_the_cuts(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path, told: int
) -> None:
    """The 429's message names a limit ("limit:N,time:1 second"): the tool goes straight to just under
    it. A message that names another policy's (higher) limit costs some 429s but nothing fails."""
    ids = volume_ids(120, seed=50)
    emu = emulator_thread(any_volume=True, rate_limit=60, burst=10, told_limit=told)
    report = tmp_path / "r.jsonl"
    result = invoke(args_for(emu.url, csv_manifest(write, ids), report, "--concurrency", "16", *FAST_RETRIES))
    assert result.exit_code == 0, result.output
    creates = emu.state()["requests"]["POST /v2/{project_id}/cloudsnapshots"]
    assert creates["202"] == 120
    assert 0 < creates["429"] < 0.25 * sum(creates.values()), creates


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_max_rps_below_the_limit_is_never_throttled(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """With --max-rps under the service limit, no request is throttled and starts are paced."""
    ids = volume_ids(30, seed=49)
    # burst 10 (was 5): the emulator shares its process with the CLI under test; a 250 ms stall of
    # both under a loaded CI machine must not turn evenly paced arrivals into a throttled burst.
    emu = emulator_thread(any_volume=True, rate_limit=50, burst=10)
    report = tmp_path / "r.jsonl"
    started = time.monotonic()
    result = invoke(
        args_for(emu.url, csv_manifest(write, ids), report, "--concurrency", "16", "--max-rps", "40")
    )
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert emu.state()["requests"]["POST /v2/{project_id}/cloudsnapshots"] == {"202": 30}
    assert elapsed >= 29 / 40  # a lower bound: pacing can only make it slower, never faster


@pytest.mark.no_cover
def test_retry_after_is_honoured(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A throttled row is sent again only after the 429's Retry-After, and is then accepted.

    16 creates at once against a burst of 12 (one taken by the set-up) and 8 a second: 5 are
    throttled, each told "Retry-After: 1", by when the bucket holds 8 again. Each row has 2 attempts
    and no backoff to speak of, and the limiter's own pause (its first estimate is about 11/s) is too
    short for a token: a row sent again before its Retry-After is throttled again, and fails."""
    ids = volume_ids(16, seed=50)
    emu = emulator_thread(any_volume=True, rate_limit=8, burst=12, retry_after=True, told_limit=0)
    report = tmp_path / "r.jsonl"
    quick = ("--max-attempts", "2", "--backoff-initial", "0.001", "--backoff-max", "0.001")
    result = invoke(args_for(emu.url, csv_manifest(write, ids), report, "--concurrency", "16", *quick))
    assert result.exit_code == 0, result.output
    assert {r["outcome"] for r in records(report)} == {"accepted"}
    throttled = emu.state()["requests"]["POST /v2/{project_id}/cloudsnapshots"].get("429", 0)
    assert throttled > 0
    assert sum(r["attempts"] - 1 for r in last_per_row(report).values()) == throttled
