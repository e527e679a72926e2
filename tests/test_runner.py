"""The create runner on its rough paths: stopping with rows queued, throttled or settling, deadlines, refusals."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from orchestrator.api import evs
from orchestrator.emulator import EmulatorThread, ManualClock, RunningEmulator
from orchestrator.models import SnapshotRequest
from orchestrator.progress import Progress
from orchestrator.report import ReportWriter
from orchestrator.retry import RetryPolicy
from orchestrator.runner import Runner, RunPlan, Unconfirmed, _Attempt, settle
from orchestrator.tally import Tally
from orchestrator.throttle import SendWindow
from tests.helpers import (
    AKSK,
    CORE_IDS,
    CREATE_ROUTE,
    EDGE_RUN,
    LIST_ROUTE,
    PROJECT,
    cli_args,
    hits,
    invoke,
    records,
    router_for,
    snapshot_request,
    until,
    volume_ids,
)

WRONG_SK = {"HUAWEICLOUD_SDK_SK": "not-the-secret-key-000000000000000000000"}


VOLUMES_TO_SNAPSHOT = volume_ids(16, seed=0xED6F)


def row_request(row: int) -> SnapshotRequest:
    return snapshot_request(VOLUMES_TO_SNAPSHOT[row], row, name=f"n{row}")


class StopsTheRun(ReportWriter):
    """A report writer that stops its runner once the first record is written."""

    runner: Runner | None = None

    def write_record(self, line: bytes) -> None:  # every record's line passes here
        super().write_record(line)
        if self.runner is not None:
            self.runner.stop()


@contextlib.asynccontextmanager
async def throttled_runner(
    emulator: Callable[..., Any],
    clock: ManualClock,
    tmp_path: Path,
    plan: RunPlan,
    deadline_in: float | None = None,
) -> AsyncIterator[tuple[RunningEmulator, Runner]]:
    """A runner whose every create is answered 429: the emulator's one token is spent, its clock stands.
    ``deadline_in`` seconds from the end of this set-up (not from before it) set the plan's deadline.
    The 429s name the rate, 20 a second, and the client paces at it (at 1 a second, a stop could wait a
    second for the next slot)."""
    emu = await emulator(clock=clock, any_volume=True, rate_limit=20.0, burst=1)
    async with router_for(emu.url, AKSK) as router:
        route = await router.route_for(PROJECT, None)
        assert (await route.send(evs.show_volume(PROJECT, CORE_IDS[0]))).answer.status == 200
        if deadline_in is not None:
            plan = dataclasses.replace(plan, deadline=time.monotonic() + deadline_in)
        with ReportWriter(str(tmp_path / "r.jsonl")) as writer:
            yield emu, Runner(plan, router=router, writer=writer, tally=Tally())


async def test_rows_still_queued_when_the_run_stops_get_no_record(
    emulator: Callable[..., Any], tmp_path: Path
) -> None:
    """Stopped after the first record: queued rows are dropped unsent and no more rows are read."""
    emu = await emulator(any_volume=True)
    path = tmp_path / "r.jsonl"
    tally = Tally()
    read: list[int] = []

    def rows() -> Iterator[SnapshotRequest]:
        for row in range(1, 11):
            read.append(row)
            yield row_request(row)

    async with router_for(emu.url, AKSK) as router:
        writer = StopsTheRun(str(path))
        with writer:
            runner = Runner(
                RunPlan(run_id=EDGE_RUN, concurrency=1), router=router, writer=writer, tally=tally
            )
            writer.runner = runner
            await runner.run(rows())
    assert [r["row"] for r in records(path)] == [1]
    assert hits(emu, CREATE_ROUTE) == Counter({"202": 1})
    assert dict(tally.outcomes) == {"accepted": 1}
    assert len(read) < 10  # reading the manifest stopped too (it runs only a small buffer ahead)


async def test_a_throttled_row_is_not_sent_again_once_the_run_stops(
    emulator: Callable[..., Any], clock: ManualClock, tmp_path: Path
) -> None:
    """A row being retried after 429s when the run stops: no more sends, and no record (left for --resume)."""
    plan = RunPlan(
        run_id=EDGE_RUN, concurrency=1, policy=RetryPolicy(max_attempts=100, initial_wait=0.02, max_wait=0.02)
    )
    async with throttled_runner(emulator, clock, tmp_path, plan) as (emu, runner):
        async with anyio.create_task_group() as group:
            group.start_soon(runner.run, [row_request(1)])
            await until(lambda: hits(emu, CREATE_ROUTE)["429"] >= 1)
            runner.stop()
            at_stop = hits(emu, CREATE_ROUTE).total()
        sent = hits(emu, CREATE_ROUTE)
        assert runner.tally.rows == 0
    assert set(sent) == {"429"}
    assert sent.total() <= at_stop + 1  # at most the one already on its way
    assert records(tmp_path / "r.jsonl") == []
    assert emu.world.snapshots == {}


async def test_the_deadline_ends_a_throttled_row_that_would_wait_long(
    emulator: Callable[..., Any], clock: ManualClock, tmp_path: Path
) -> None:
    """Throttled, with backoffs of up to 30 s and a deadline 0.4 s away (its create, answered 429 in
    the test's own loop, well before it): the wait is cut at the deadline and the row (never accepted)
    ends DEADLINE_EXCEEDED."""
    plan = RunPlan(
        run_id=EDGE_RUN,
        concurrency=1,
        policy=RetryPolicy(max_attempts=100, initial_wait=30.0, max_wait=30.0),
    )
    async with throttled_runner(emulator, clock, tmp_path, plan, deadline_in=0.4) as (emu, runner):
        with anyio.fail_after(5):
            await runner.run([row_request(1)])
    [row] = records(tmp_path / "r.jsonl")
    assert (row["outcome"], row["error_code"], row["http_status"]) == ("failed", "DEADLINE_EXCEEDED", 429)
    assert row["attempts"] >= 1
    assert set(hits(emu, CREATE_ROUTE)) == {"429"}


async def test_a_row_being_looked_up_stops_with_the_run_and_progress_shows_the_lookups(
    emulator: Callable[..., Any], clock: ManualClock, tmp_path: Path
) -> None:
    """A 504 (the snapshot comes later): the row is looked up; stopping leaves it without a record, and
    the progress line counts the lookups."""
    emu = await emulator(clock=clock, any_volume=True, fault_late_commit=1.0, latency_ms=30)
    path = tmp_path / "r.jsonl"
    async with router_for(emu.url, AKSK) as router:
        with ReportWriter(str(path)) as writer:
            runner = Runner(
                RunPlan(run_id=EDGE_RUN, concurrency=1, settle=30.0),
                router=router,
                writer=writer,
                tally=Tally(),
            )
            async with anyio.create_task_group() as group:
                group.start_soon(runner.run, [row_request(1)])
                await until(lambda: hits(emu, CREATE_ROUTE)["504"] == 1)
                runner.stop()
        line = Progress(runner.tally, 1, io.StringIO(), router=router, runner=runner).line()
    assert records(path) == []
    assert hits(emu, CREATE_ROUTE) == Counter({"504": 1})
    lookups = hits(emu, LIST_ROUTE)["200"]
    assert lookups >= 1
    assert line.startswith("0/1 rows")
    assert "sent 1" in line
    assert f"lookups {lookups}" in line


async def test_a_route_refused_while_a_row_settles_leaves_the_row_unconfirmed(
    emulator: Callable[..., Any], clock: ManualClock, tmp_path: Path
) -> None:
    """After a 504 the token expires: the lookups are refused, the route closes, and the row (maybe
    created) is UNCONFIRMED for --resume, not 'not sent'."""
    emu = await emulator(clock=clock, any_volume=True, fault_late_commit=1.0, latency_ms=30)
    token, _, _ = emu.world.issue_token()
    path = tmp_path / "r.jsonl"
    async with router_for(emu.url, {"OS_AUTH_TOKEN": token}) as router:
        with ReportWriter(str(path)) as writer:
            runner = Runner(
                RunPlan(run_id=EDGE_RUN, concurrency=1, settle=0.2),
                router=router,
                writer=writer,
                tally=Tally(),
            )
            async with anyio.create_task_group() as group:
                group.start_soon(runner.run, [row_request(1)])
                await until(lambda: hits(emu, CREATE_ROUTE)["504"] == 1)
                clock.advance(emu.world.settings.token_ttl + 1)
        closures = router.closures()
    [row] = records(path)
    assert (row["outcome"], row["error_code"]) == ("failed", "UNCONFIRMED")
    assert "stopped sending (APIGW.0301)" in row["error_message"]
    assert "--resume looks again" in row["error_message"]
    assert hits(emu, LIST_ROUTE) == Counter({"401": 1})
    assert [c.code for c in closures] == ["APIGW.0301"]
    assert "credentials refused" in closures[0].message


def test_a_create_refused_outright_fails_its_row_and_the_rest_are_not_sent(
    emulator_thread: Callable[..., EmulatorThread], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Rows naming their project (no quota check first) and a wrong secret: the first create is refused
    (401), its row fails with that answer, the others are not sent; exit 3."""
    emu = emulator_thread(any_volume=True)
    manifest = write("m.csv", "volume_id,project_id\n" + "".join(f"{v},{PROJECT}\n" for v in CORE_IDS[:3]))
    report = tmp_path / "r.jsonl"
    result = invoke(
        cli_args("create", manifest, endpoint=emu.url, report=report, concurrency=1), env=WRONG_SK
    )
    assert result.exit_code == 3, result.output
    got = {r["row"]: r for r in records(report)}
    assert (got[1]["outcome"], got[1]["http_status"], got[1]["error_code"]) == ("failed", 401, "APIGW.0301")
    assert got[1]["attempts"] == 1
    assert all(got[row]["outcome"] == "failed" and got[row]["http_status"] is None for row in (2, 3))
    assert all(got[row]["error_message"].startswith("not sent: ") for row in (2, 3))
    assert sum(emu.state()["requests"][CREATE_ROUTE].values()) == 1
    assert WRONG_SK["HUAWEICLOUD_SDK_SK"] not in result.output


async def test_a_row_whose_first_attempt_comes_after_the_stop_is_left_unsent(
    emulator: Callable[..., Any], tmp_path: Path
) -> None:
    """A row taken just as the run stops gets no record and no request: --resume sends it."""
    emu = await emulator(any_volume=True)
    async with router_for(emu.url, AKSK) as router:
        await router.route_for(PROJECT, None)  # known: the row's first attempt starts at once
        with ReportWriter(str(tmp_path / "r.jsonl")) as writer:
            runner = Runner(
                RunPlan(run_id=EDGE_RUN, concurrency=1), router=router, writer=writer, tally=Tally()
            )
            runner.stop()
            await runner._row(snapshot_request(CORE_IDS[0], 1), _Attempt(), settling=False)
            assert writer.written == 0
    assert hits(emu, CREATE_ROUTE) == {}


async def test_a_request_the_send_window_holds_back_can_be_cancelled_and_spends_a_wake_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker cancelled while the send window holds its request back (the run's deadline, a signal)
    leaves no one waiting: an answer's wake that comes first is spent on it, and a wake after it lets
    the next request out at once. A period's end for a request already woken does nothing."""
    # No period ends in this test, and the window never opens: a loaded machine can take the second
    # that opens it between the first request and the held-back ones (seen at six workers under load).
    monkeypatch.setattr(SendWindow, "PERIOD", 3600.0)
    monkeypatch.setattr(SendWindow, "OPEN_AFTER", 3600.0)
    window = SendWindow(100)
    entered = [await window.enter() for _ in range(SendWindow.FIRST)]
    async with anyio.create_task_group() as group:
        group.start_soon(window.enter)
        group.start_soon(window.enter)
        await anyio.wait_all_tasks_blocked()
        assert window.out == SendWindow.FIRST  # both held back
        group.cancel_scope.cancel()
        window.leave(entered.pop())  # its wake goes to the first held back, already cancelled: spent
    assert window.out == SendWindow.FIRST - 1
    with anyio.fail_after(5):
        await window.enter()  # the slot that answer freed: at once, no one ahead
    assert window.out == SendWindow.FIRST
    window.leave(entered.pop())  # no one waits: the wake finds nobody
    woken = asyncio.get_running_loop().create_future()
    woken.set_result(None)
    window._expire(woken)  # a timer that fires after the wake: nothing to do
    assert window.out == SendWindow.FIRST - 1


async def test_settling_gives_up_on_lookups_that_fail_in_a_row_not_in_all() -> None:
    """A lookup that answers (absent) starts the count of failures again: failures that alternate with
    answers run to the end of the window (then the row may be sent again), three in a row end it."""
    plan = RunPlan(run_id="r", concurrency=1, policy=RetryPolicy(max_attempts=1), settle=0.3)
    assert plan.policy.max_lookups == 3
    looked: list[bool | None] = []

    async def pause(_seconds: float) -> None:  # no sleep: the window's end comes from ``since``
        await anyio.lowlevel.checkpoint()

    def scripted(values: Iterator[bool | None]) -> Callable[[], Any]:
        async def look_up() -> bool | None:
            looked.append(value := next(values))
            return value

        return look_up

    alternating = itertools.chain([None, False] * 4, itertools.repeat(False))
    ends = time.monotonic() - plan.settle + 0.05  # the window ends 50 ms from now
    found = await settle(scripted(alternating), since=ends, plan=plan, stopping=lambda: False, pause=pause)
    assert found is None  # the window ended with the snapshot absent: not unconfirmed
    assert looked[:8].count(None) == 4
    failing = iter([False, None, None, None])
    with pytest.raises(Unconfirmed):
        await settle(
            scripted(failing), since=time.monotonic(), plan=plan, stopping=lambda: False, pause=pause
        )
