"""The chaos test, sized for CI: every fault at once, a SIGKILL and a resume, then a second same-day run.

Tens of rows (it had 90) and fault shares high enough that each fault still happens (asserted below).
The 429's message names the limit (75/s), so the route goes straight to just under it. The burst of 8
is half the send window's first width (16 requests at once): the first fan-out meets 429s however
slow the machine. A 429 while the route is paced under the named limit (a loaded machine sends in
clumps, and a stalled one sees little get through) cuts the rate to just under what got through: with
a burst of 2 a run took 8-12 s against 7-8 s with 8 (load 7); a clump must now be 8 requests. The emulator's clock jumps over its own delays between two commands
(``LeapingClock``) instead of sleeping them out. A kill and a resume at full size:
``benchmarks/killresume.py``."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    CREATE_ROUTE,
    LeapingClock,
    create_args,
    csv_manifest,
    header,
    in_flight,
    invoke,
    kill_when,
    last_per_row,
    requests_of,
    run_process,
    snapshots_per_volume,
    volume_ids,
)

CHAOS = {
    "fault_5xx": 0.12,
    "fault_drop_before": 0.08,
    "fault_drop_after": 0.08,
    "fault_late_commit": 0.12,
    "late_commit_seconds": 0.5,  # longer than --settle below: some rows are doubled, then swept
    "rate_limit": 75,
    "burst": 8,  # half the first fan-out (SendWindow.FIRST): some 429s always happen
    "latency_ms": 5,
    "jitter_ms": 5,
    "creating_seconds": 0.2,
    "deleting_seconds": 0.1,
}
RETRIES = ("--max-attempts", "12", "--backoff-initial", "0.05", "--backoff-max", "0.5", "--settle", "0.3")
RETRIES += ("--timeout", "1")  # a resumed row in flight is looked up for --settle after its send plus this


def one_per_accepted_row(state: dict[str, Any], report: Path) -> None:
    """Exactly one live snapshot with the report's run marker per accepted row, none for any other row."""
    run_id = str(header(report)["run_id"])
    final = last_per_row(report)
    accepted = {r["volume_id"] for r in final.values() if r["outcome"] in ("accepted", "available")}
    live = {**state, "snapshots": [s for s in state["snapshots"] if s["status"] != "deleting"]}
    counts = snapshots_per_volume(live, run_id)
    assert counts == dict.fromkeys(accepted, 1), {v: n for v, n in counts.items() if n != 1}


def settle_and_sweep(url: str, report: Path, clock: LeapingClock) -> None:
    """Let the last late commits land (the emulator's clock jumps past them and their ``creating``),
    then `wait` sweeps them and waits for every snapshot; then the deletions it sent end."""
    clock.leap(CHAOS["late_commit_seconds"] + CHAOS["creating_seconds"] + 0.1)
    result = invoke(["wait", str(report), "--endpoint", url, "--poll-interval", "0.1", *RETRIES[:6]])
    assert result.exit_code == 0, result.output
    clock.leap(CHAOS["deleting_seconds"] + 0.1)


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_chaos_with_a_kill_a_resume_and_a_second_run(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Late commits, 5xx, drops, throttling, SIGKILL + --resume, a second same-day run: one snapshot per row per run."""
    ids = volume_ids(40, seed=131)
    clock = LeapingClock()
    emu = emulator_thread(clock=clock, any_volume=True, seed=131, **CHAOS)
    manifest = csv_manifest(write, ids)
    first = tmp_path / "first.jsonl"
    args = create_args(emu.url, manifest, first, *RETRIES, concurrency=32)
    # SIGKILL between a send and its answer: once a random row's create is out (journalled, unanswered).
    target = random.Random(131).randint(8, 30)
    kill_when(first, run_process(args), lambda data: target in in_flight(data))
    result = invoke([*args, "--resume"])
    assert result.exit_code == 0, result.output
    settle_and_sweep(emu.url, first, clock)
    assert {r["outcome"] for r in last_per_row(first).values()} == {"available"}
    second = tmp_path / "second.jsonl"
    result = invoke(create_args(emu.url, manifest, second, *RETRIES, concurrency=32))
    assert result.exit_code == 0, result.output
    settle_and_sweep(emu.url, second, clock)
    state = emu.state()
    one_per_accepted_row(state, first)
    one_per_accepted_row(state, second)
    assert header(first)["run_id"] != header(second)["run_id"]
    creates = requests_of(state, CREATE_ROUTE)
    for fault in ("504", "dropped", "429"):
        assert creates[fault] > 0, (fault, creates)  # each fault really happened
    assert any(r["reconciled"] for r in last_per_row(first).values())
