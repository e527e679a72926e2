"""Rollbacks whose answer is lost: the emulator's --fault-rollback-drop-before/--fault-rollback-drop-after,
and the rollback client after them (the disk is looked at before any resend; one rollback per disk); and
a rollback sent again on purpose: ``--retry-failed`` (at the end).

The emulator's clock is a ``ManualClock`` that stands still until the client has seen the rollback, so
no rollback can end unseen, whatever the machine's speed. The in-loop cases act on the emulator's world
between two requests: its 30 ms latency is the window, six times the 5 ms poll of ``until``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
import pytest
from click.testing import CliRunner

from orchestrator.actions import Action
from orchestrator.api.routes import Route
from orchestrator.cli import main
from orchestrator.config import WaitPlan
from orchestrator.emulator import EmulatorThread, ManualClock, RunningEmulator, SeedSnapshot, SeedVolume
from orchestrator.errors import RouteClosed
from orchestrator.models import Record
from orchestrator.restore import Finding, RestorePlan, Sent, start_row
from orchestrator.retry import RetryPolicy
from orchestrator.rollback_watch import Watcher
from tests.helpers import (
    AKSK,
    OTHER_RUN,
    PROJECT,
    ROLLBACK,
    RUN,
    SERVER,
    SNAPS,
    TOKEN,
    VOLUME_GET,
    VOLUMES,
    call,
    create_report,
    emulator_as_commanded,
    hits,
    marker,
    records,
    requests_of,
    rollback,
    rollbacks_per_snapshot,
    routed,
    router_for,
    server_errors,
    source_row,
    until,
    world,
)

ROLLBACK_PATH = f"/v2/{PROJECT}/cloudsnapshots/{SNAPS[0]}/rollback"
LATENCY_MS = 30  # the window in which the in-loop cases act on the world (see the module docstring)
# The throttled cases hold the clock still: the bucket never refills, so any rate throttles; the 429
# names it as the limit and the client paces at it, so a high one keeps the pace between tries short.
THROTTLED_RPS = 20.0


@contextlib.contextmanager
def rollbacks_end_once_seen(emu: EmulatorThread, clock: ManualClock) -> Iterator[None]:
    """The emulator's clock stands until the disk has been answered twice since a rollback started (so the
    client has seen it ``rollbacking``); then it moves a minute on and the rollback ends."""
    done = threading.Event()

    def release() -> None:
        answered_at_start: int | None = None
        while not done.wait(0.01):
            state = emu.state()
            answered = requests_of(state, VOLUME_GET)["200"]
            if answered_at_start is None:
                if state["rollbacks"]:
                    answered_at_start = answered
            elif answered >= answered_at_start + 2:
                clock.advance(60)
                return

    thread = threading.Thread(target=release, name="release-rollbacks", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=10)


# --- the emulator's switches -------------------------------------------------------------------
VOLUME_LIST = "GET /v2/{project_id}/cloudvolumes/detail"


def requests_note(stderr: str) -> dict[str, int]:
    """The rollback summary's ``N requests (2 checks, 1 lookups, ...) in ...`` line, by kind."""
    (kinds,) = re.findall(r"^\d+ requests \(([^)]*)\) in ", stderr, re.MULTILINE)
    return {kind: int(count) for count, kind in re.findall(r"(\d+) (\w+)", kinds)}


def restore_plan(settle: float = 5.0) -> RestorePlan:
    return RestorePlan(
        source_run=RUN,
        policy=RetryPolicy(max_attempts=50, initial_wait=0.01, max_wait=0.02),
        settle=settle,
        wait=WaitPlan(timeout=5.0, interval=0.02),
    )


async def restored(route: Route, row: Record, plan: RestorePlan) -> Finding:
    """One row as ``rollback --apply`` takes it: checked and sent (``start_row``), then watched to its
    end (the ``Watcher``)."""
    watch = await start_row(route, row, plan)
    if isinstance(watch, Finding):
        return watch
    found: list[Finding] = []
    watcher = Watcher(plan, concurrency=1, done=lambda _row, finding: found.append(finding))
    watcher.add(route, row, watch)
    watcher.close()
    await watcher.run()
    (finding,) = found
    return finding


async def restoring(route: Route, plan: RestorePlan, meanwhile: Callable[[], Any] | None = None) -> Finding:
    """Row 1 ``restored``; ``meanwhile`` (awaited) runs beside it, in the same loop."""
    found: list[Finding] = []

    async def restore() -> None:
        found.append(await restored(route, source_row(), plan))

    async with anyio.create_task_group() as group:
        group.start_soon(restore)
        if meanwhile is not None:
            await meanwhile()
    return found[0]


@pytest.mark.parametrize(
    ("knob", "status", "rollbacks"),
    [
        ("fault_rollback_drop_before", "available", []),
        ("fault_rollback_drop_after", "rollbacking", [SNAPS[0]]),
    ],
)
async def test_rollback_drop_switches_lose_the_answer_before_or_after_evs_acts(
    emulator: Callable[..., Any],
    clock: ManualClock,
    http: aiohttp.ClientSession,
    knob: str,
    status: str,
    rollbacks: list[str],
) -> None:
    """Drop-before: no rollback, disk and snapshot stay available; drop-after: the rollback is recorded
    and both are rollbacking. Either way the connection closes unanswered and is counted ``dropped``;
    creates and refused rollbacks are answered as usual."""
    emu: RunningEmulator = await emulator(clock=clock, **world(2), **{knob: 1.0})
    created, _, _ = await call(
        http, emu, "POST", f"/v2/{PROJECT}/cloudsnapshots", body={"snapshot": {"volume_id": VOLUMES[1]}}
    )
    assert created == 202
    refused, _, _ = await call(http, emu, "POST", ROLLBACK_PATH, body={"rollback": {"volume_id": VOLUMES[1]}})
    assert refused == 400
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call(http, emu, "POST", ROLLBACK_PATH, body={"rollback": {"volume_id": VOLUMES[0]}})
    async with http.get(f"{emu.url}/_emulator/state") as response:
        state = orjson.loads(await response.read())
    assert [item["snapshot_id"] for item in state["rollbacks"]] == rollbacks
    assert {v["volume_id"]: v["status"] for v in state["volumes"]}[VOLUMES[0]] == status
    assert {s["id"]: s["status"] for s in state["snapshots"]}[SNAPS[0]] == status
    assert state["requests"][ROLLBACK] == {"400": 1, "dropped": 1}
    assert state["requests"]["POST /v2/{project_id}/cloudsnapshots"] == {"202": 1}


def test_rollback_drop_flags_have_help_and_take_a_share() -> None:
    """Both flags are in the emulator's --help, and a share outside 0..1 is a usage error (exit 2)."""
    runner = CliRunner()
    shown = runner.invoke(main, ["emulator", "--help"])
    assert shown.exit_code == 0
    assert "--fault-rollback-drop-before" in shown.output
    assert "--fault-rollback-drop-after" in shown.output
    for flag in ("--fault-rollback-drop-before", "--fault-rollback-drop-after"):
        refused = runner.invoke(main, ["emulator", flag, "1.5"])
        assert refused.exit_code == 2
        assert "must be between 0 and 1" in refused.output


def test_rollback_drop_flags_reach_the_served_emulator(write: Callable[..., Path]) -> None:
    """The command wires both flags: with --seed 1, drop-before 0.5 drops the first rollback (the draw is
    0.13) and lets the second through (0.85), which drop-after 1 then drops once EVS started it."""
    volumes = write("v.csv", f"volume_id\n{VOLUMES[0]}\n")
    snapshots = write("s.json", orjson.dumps([{"id": SNAPS[0], "volume_id": VOLUMES[0], "name": "s"}]))
    args = [
        *("--port", "0", "--token", TOKEN, "--volumes", str(volumes), "--snapshots", str(snapshots)),
        *("--seed", "1", "--fault-rollback-drop-before", "0.5", "--fault-rollback-drop-after", "1"),
        *("--rollback-seconds", "600"),
    ]
    with emulator_as_commanded(args) as served:
        states = []
        for _ in range(2):
            request = urllib.request.Request(  # noqa: S310 - the loopback emulator
                f"{served.url}{ROLLBACK_PATH}",
                data=orjson.dumps({"rollback": {"volume_id": VOLUMES[0]}}),
                headers={"Content-Type": "application/json", "X-Auth-Token": TOKEN},
                method="POST",
            )
            with pytest.raises((urllib.error.URLError, ConnectionError)):
                urllib.request.urlopen(request, timeout=10)  # noqa: S310 - the loopback emulator
            states.append(served.state())
    assert [len(state["rollbacks"]) for state in states] == [0, 1]
    assert [state["volumes"][0]["status"] for state in states] == ["available", "rollbacking"]
    assert states[1]["requests"][ROLLBACK] == {"dropped": 2}


# --- the rollback command after a lost answer -----------------------------------------------------
@pytest.mark.no_cover
def test_rollback_dropped_after_evs_acted_is_seen_and_never_resent(
    emulator_thread: Callable[..., EmulatorThread], clock: ManualClock, tmp_path: Path
) -> None:
    """Drop-after: the disk is looked up, found rollbacking, and waited for; the rollback is not resent
    and the row is rolled_back after one attempt, with no error left on it."""
    emu = emulator_thread(clock=clock, fault_rollback_drop_after=1.0, **world(1))
    source = create_report(tmp_path / "create.jsonl", [{}])
    report = tmp_path / "apply.jsonl"
    with rollbacks_end_once_seen(emu, clock):
        result = rollback(emu, source, report, "--wait-timeout", "10s", apply=True)
    assert result.exit_code == 0, result.stderr
    (record,) = records(report)
    assert (record["outcome"], record["attempts"], record["http_status"]) == ("rolled_back", 1, None)
    assert (record["error_code"], record["error_message"]) == (None, None)
    state = emu.state()
    assert requests_of(state, ROLLBACK) == {"dropped": 1}
    assert rollbacks_per_snapshot(state) == {SNAPS[0]: 1}
    note = requests_note(result.stderr)
    # Pre-send checks of snapshot and disk; after the lost answer one lookup of the snapshot, which is
    # rollbacking (a snapshot rolls back onto its own disk only); one rollback.
    assert (note["checks"], note["lookups"], note["rollbacks"]) == (2, 1, 1)


def test_rollback_dropped_before_evs_acted_is_checked_again_and_sent_once_more(
    emulator_thread: Callable[..., EmulatorThread], clock: ManualClock, tmp_path: Path
) -> None:
    """Drop-before (seed 1, share 0.5: the first rollback is dropped, the second is not): the disk stays
    available through --settle, every pre-send check runs again (4 checks), the rollback is sent once
    more and answered 202; one rollback happened."""
    emu = emulator_thread(clock=clock, fault_rollback_drop_before=0.5, seed=1, **world(1))
    source = create_report(tmp_path / "create.jsonl", [{}])
    report = tmp_path / "apply.jsonl"
    with rollbacks_end_once_seen(emu, clock):
        result = rollback(emu, source, report, "--settle", "0.1", "--wait-timeout", "10s", apply=True)
    assert result.exit_code == 0, result.stderr
    (record,) = records(report)
    assert (record["outcome"], record["attempts"], record["http_status"]) == ("rolled_back", 2, 202)
    state = emu.state()
    assert requests_of(state, ROLLBACK) == {"dropped": 1, "202": 1}
    assert rollbacks_per_snapshot(state) == {SNAPS[0]: 1}
    note = requests_note(result.stderr)
    assert (note["checks"], note["rollbacks"]) == (4, 2)
    assert note["lookups"] >= 1


# --- one row restored between two requests (in-loop emulator) ---------------------------------------------
def start_rollback(emu: RunningEmulator, snapshot_id: str = SNAPS[0]) -> None:
    """EVS starts a rollback of disk 0 from ``snapshot_id`` (a lost request acted on late, or another
    client); the disk must still be available, and no rollback may have happened yet."""
    evs = emu.world
    assert evs.rollbacks == []
    volume = evs.volume(VOLUMES[0])
    assert volume is not None
    assert volume.status == "available"
    evs.rollback(evs.snapshots[snapshot_id], volume, None)


async def end_rollbacks_after(emu: RunningEmulator, clock: ManualClock, disk_answers: int) -> None:
    """Once the disk has been answered ``disk_answers`` times, move the clock on: rollbacks end."""
    await until(lambda: hits(emu, VOLUME_GET)["200"] >= disk_answers)
    clock.advance(60)


async def test_disk_attached_after_a_lost_rollback_blocks_the_resend(
    emulator: Callable[..., Any], clock: ManualClock
) -> None:
    """The rollback is dropped before EVS acts, then the disk is attached: the new look finds it
    attached, the row is blocked (VOLUME_ATTACHED, attempts 1) and nothing is sent again."""
    emu = await emulator(clock=clock, latency_ms=LATENCY_MS, fault_rollback_drop_before=1.0, **world(1))

    async def attach_after_the_drop() -> None:
        await until(lambda: hits(emu, ROLLBACK)["dropped"] >= 1)
        emu.world.attach(emu.world.volumes[VOLUMES[0]], SERVER, None)

    async with routed(emu.url) as route:
        finding = await restoring(route, restore_plan(settle=1.0), attach_after_the_drop)
        counts = dict(route.counts)
    assert (finding.outcome, finding.code, finding.attempts) == (Action.BLOCKED, "VOLUME_ATTACHED", 1)
    assert finding.message is not None
    assert SERVER in finding.message
    assert counts["checks"] == 4  # snapshot and disk, before the first send and again after the drop
    assert hits(emu, ROLLBACK) == {"dropped": 1}
    assert emu.world.rollbacks == []


async def test_rollback_under_way_at_the_new_look_is_waited_for_not_resent(
    emulator: Callable[..., Any], clock: ManualClock
) -> None:
    """Dropped before EVS acts, the disk still available at the lookup (--settle 0), then EVS starts the
    rollback: the new look finds disk and snapshot rollbacking, so the row waits for it and is rolled_back
    after one attempt; nothing is sent again."""
    emu = await emulator(clock=clock, latency_ms=LATENCY_MS, fault_rollback_drop_before=1.0, **world(1))

    async def late_rollback() -> None:
        await until(lambda: hits(emu, VOLUME_GET)["200"] >= 2)  # the first look, then the lookup
        start_rollback(emu)
        await end_rollbacks_after(emu, clock, 4)  # the new look and the first poll saw it

    async with routed(emu.url) as route:
        finding = await restoring(route, restore_plan(settle=0.0), late_rollback)
        counts = dict(route.counts)
    assert (finding.outcome, finding.code, finding.attempts) == (Action.ROLLED_BACK, None, 1)
    # Two looks (snapshot and disk each); one lookup round after the drop (the snapshot, then the disk).
    assert (counts["checks"], counts["lookups"], counts["rollbacks"]) == (4, 2, 1)
    assert hits(emu, ROLLBACK) == {"dropped": 1}
    assert [item["snapshot_id"] for item in emu.world.rollbacks] == [SNAPS[0]]


async def test_refusal_after_a_doubtful_attempt_is_judged_by_the_disk(
    emulator: Callable[..., Any], clock: ManualClock
) -> None:
    """Dropped before EVS acts, looked at again and resent; EVS acts on the lost first request just before
    the resend, which is refused 400 (the snapshot is rollbacking): the disk shows the rollback, so the
    row is rolled_back (attempts 2, last status 400, no error code) and one rollback happened."""
    emu = await emulator(clock=clock, latency_ms=LATENCY_MS, fault_rollback_drop_before=1.0, **world(1))

    async def late_rollback() -> None:
        await until(lambda: hits(emu, VOLUME_GET)["200"] >= 3)  # first look, lookup, new look
        start_rollback(emu)
        await end_rollbacks_after(emu, clock, 5)  # the lookup after the 400 and the first poll saw it

    async with routed(emu.url) as route:
        finding = await restoring(route, restore_plan(settle=0.0), late_rollback)
        counts = dict(route.counts)
    assert (finding.outcome, finding.code, finding.message) == (Action.ROLLED_BACK, None, None)
    assert (finding.attempts, finding.http_status) == (2, 400)
    assert (counts["checks"], counts["rollbacks"]) == (4, 2)
    assert hits(emu, ROLLBACK) == {"dropped": 1, "400": 1}
    assert [item["snapshot_id"] for item in emu.world.rollbacks] == [SNAPS[0]]


async def test_another_snapshots_rollback_is_not_taken_for_the_lost_one(
    emulator: Callable[..., Any], clock: ManualClock
) -> None:
    """The row's rollback is dropped before EVS acts; meanwhile the disk is rolled back from another
    snapshot (another run's). The row must not be recorded rolled_back: its snapshot was never used
    (it is ``available`` while the disk is ``rollbacking``, the very sign ``look`` reads)."""
    snapshots = (
        SeedSnapshot(id=SNAPS[0], volume_id=VOLUMES[0], name="pre-maint-0", metadata=marker()),
        SeedSnapshot(id=SNAPS[1], volume_id=VOLUMES[0], name="pre-upgrade", metadata=marker(OTHER_RUN)),
    )
    emu = await emulator(
        clock=clock,
        latency_ms=LATENCY_MS,
        fault_rollback_drop_before=1.0,
        volumes=(SeedVolume(volume_id=VOLUMES[0]),),
        snapshots=snapshots,
    )

    async def other_rollback() -> None:
        await until(lambda: hits(emu, ROLLBACK)["dropped"] >= 1)
        start_rollback(emu, SNAPS[1])
        await end_rollbacks_after(emu, clock, 3)

    async with routed(emu.url) as route:
        finding = await restoring(route, restore_plan(settle=0.0), other_rollback)
    assert [item["snapshot_id"] for item in emu.world.rollbacks] == [SNAPS[1]]
    assert finding.outcome is not Action.ROLLED_BACK, finding


@pytest.mark.no_cover
def test_status_reads_are_retried_even_with_one_attempt(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """--max-attempts 1 bounds the rollback POSTs, not the GETs that watch the disk: a 5xx on a status
    read is retried (three tries, as create's lookups), so the row ends rolled_back, not UNCONFIRMED."""
    emu = emulator_thread(rollback_seconds=0.2, fault_5xx=0.25, seed=1, **world(1))
    source = create_report(tmp_path / "create.jsonl", [{}])
    report = tmp_path / "apply.jsonl"
    result = rollback(emu, source, report, "--max-attempts", "1", "--settle", "0.3", apply=True)
    assert result.exit_code == 0, result.stderr
    (record,) = records(report)
    assert (record["outcome"], record["attempts"], record["http_status"]) == ("rolled_back", 1, 202)
    state = emu.state()
    assert requests_of(state, ROLLBACK) == {"202": 1}
    snapshot_reads = requests_of(state, "GET /v2/{project_id}/cloudsnapshots/{snapshot_id}")
    reads = requests_of(state, VOLUME_GET) + snapshot_reads
    # a read answered 5xx, and yet not UNCONFIRMED: it was retried. Seed 1 puts a 5xx among the first
    # four reads (a rollback over before the first poll, on a loaded machine, leaves only those: the
    # look and one poll) and never three in a row on one read, for rollbacks of 0 to 0.5 s.
    assert server_errors(reads) >= 1


async def test_a_rollback_that_ends_right_after_the_first_read_is_not_sent_again(
    emulator: Callable[..., Any], clock: ManualClock
) -> None:
    """The answer is lost after EVS started the rollback, and the rollback ends just after the first
    read that follows: that read is of the snapshot (``rollbacking``: taken), so nothing is sent again.
    Reading the disk first and the snapshot second would find the snapshot already back to available."""
    emu = await emulator(clock=clock, latency_ms=LATENCY_MS, fault_rollback_drop_after=1.0, **world(1))
    snapshot_get = "GET /v2/{project_id}/cloudsnapshots/{snapshot_id}"

    def reads() -> int:
        return hits(emu, snapshot_get)["200"] + hits(emu, VOLUME_GET)["200"]

    async def end_after_the_first_read() -> None:
        await until(lambda: hits(emu, ROLLBACK)["dropped"] >= 1)
        before = reads()
        await until(lambda: reads() > before)
        clock.advance(60)  # the rollback is over

    async with routed(emu.url) as route:
        finding = await restoring(route, restore_plan(settle=0.5), end_after_the_first_read)
    assert (finding.outcome, finding.attempts) == (Action.ROLLED_BACK, 1)
    assert hits(emu, ROLLBACK) == {"dropped": 1}
    assert [item["snapshot_id"] for item in emu.world.rollbacks] == [SNAPS[0]]


async def test_a_lost_rollback_that_already_failed_is_judged_by_the_disk(
    emulator: Callable[..., Any], clock: ManualClock
) -> None:
    """The answer is lost after EVS started the rollback, which fails before the first read: the
    snapshot is available again, the disk error_rollbacking. That is this request's failed rollback
    (nothing else rolled the disk back): rollback_failed, and nothing is sent again."""
    emu = await emulator(
        clock=clock,
        latency_ms=LATENCY_MS,
        fault_rollback_drop_after=1.0,
        fault_rollback_error=1.0,
        **world(1),
    )

    async def fail_before_the_first_read() -> None:
        await until(lambda: hits(emu, ROLLBACK)["dropped"] >= 1)
        clock.advance(60)  # the rollback is over: the disk ends error_rollbacking

    async with routed(emu.url) as route:
        finding = await restoring(route, restore_plan(settle=0.5), fail_before_the_first_read)
    assert (finding.outcome, finding.code, finding.attempts) == (
        Action.ROLLBACK_FAILED,
        "VOLUME_ERROR_ROLLBACKING",
        1,
    )
    assert hits(emu, ROLLBACK) == {"dropped": 1}


def test_summary_of_an_action_report_says_what_it_reads(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """summary reads a rollback report as the rollback counted it (issue 22), no record-parse error."""
    emu = emulator_thread(**world(1))
    source = create_report(tmp_path / "create.jsonl", [{}])
    report = tmp_path / "plan.jsonl"
    assert rollback(emu, source, report).exit_code == 0  # a plan: the report exists, nothing is sent
    result = CliRunner().invoke(main, ["summary", str(report)])
    assert result.exit_code == 0
    assert result.stdout.startswith("rollback: 1 records: 1 planned")


async def test_a_disk_deleted_during_its_rollback_fails_the_row(
    emulator: Callable[..., Any], clock: ManualClock
) -> None:
    """The disk disappears while it rolls back (the clock stands still): VOLUME_NOT_FOUND, failed."""
    emu = await emulator(clock=clock, **world(1))

    async def delete_the_disk() -> None:
        await until(lambda: hits(emu, ROLLBACK)["202"] == 1)
        del emu.world.volumes[VOLUMES[0]]

    async with router_for(emu.url, AKSK) as router:
        route = await router.route_for(PROJECT, None)
        finding = await restoring(route, restore_plan(), delete_the_disk)
    assert (finding.outcome, finding.code) == (Action.FAILED, "VOLUME_NOT_FOUND")
    assert finding.message == f"disk {VOLUMES[0]} disappeared during the rollback"


async def test_a_disk_available_right_after_the_rollback_counts_once_settle_has_passed(
    emulator: Callable[..., Any], clock: ManualClock
) -> None:
    """A rollback over before the first poll (never seen rollbacking): the disk is polled until settle
    has passed, then the row is rolled back."""
    emu = await emulator(clock=clock, rollback_seconds=0.0, **world(1))
    async with router_for(emu.url, AKSK) as router:
        route = await router.route_for(PROJECT, None)
        finding = await restoring(route, restore_plan(settle=0.1))
        polls = route.counts["polls"]
    assert (finding.outcome, finding.code, finding.http_status) == (Action.ROLLED_BACK, None, 202)
    assert polls >= 2
    assert [r["snapshot_id"] for r in emu.world.rollbacks] == [SNAPS[0]]


async def test_a_rollback_refused_once_the_disk_was_attached_is_rejected(
    emulator: Callable[..., Any], clock: ManualClock
) -> None:
    """Throttled (the clock stands, the bucket is empty) until the disk is attached: the rollback is
    answered 400 and the row rejected with the service's reason; nothing rolls back."""
    emu = await emulator(clock=clock, rate_limit=THROTTLED_RPS, burst=2, **world(1))

    async def attach_the_disk() -> None:
        await until(lambda: hits(emu, ROLLBACK)["429"] >= 1)
        emu.world.attach(emu.world.volumes[VOLUMES[0]], SERVER, None)
        clock.advance(10)  # the bucket fills again

    async with router_for(emu.url, AKSK) as router:
        route = await router.route_for(PROJECT, None)
        finding = await restoring(route, restore_plan(), attach_the_disk)
    assert (finding.outcome, finding.code, finding.http_status) == (Action.REJECTED, "EVS.5400", 400)
    assert finding.message is not None
    assert "current status is: in-use" in finding.message
    assert finding.attempts >= 2
    assert hits(emu, ROLLBACK)["400"] == 1
    assert emu.world.rollbacks == []


async def test_a_rollback_refused_for_the_credentials_stops_the_run(
    emulator: Callable[..., Any], clock: ManualClock
) -> None:
    """The token expires while the rollback is throttled: the 401 closes the route (RouteClosed, exit 3)."""
    emu = await emulator(clock=clock, rate_limit=THROTTLED_RPS, burst=2, **world(1))
    token, _, _ = emu.world.issue_token()

    async def expire_the_token() -> None:
        await until(lambda: hits(emu, ROLLBACK)["429"] >= 1)
        clock.advance(emu.world.settings.token_ttl + 1)

    async with router_for(emu.url, {"OS_AUTH_TOKEN": token}) as router:
        route = await router.route_for(PROJECT, None)
        with pytest.RaisesGroup(pytest.RaisesExc(RouteClosed, match="APIGW.0301: credentials refused: ")):
            await restoring(route, restore_plan(), expire_the_token)
    assert hits(emu, ROLLBACK)["401"] == 1
    assert emu.world.rollbacks == []


def test_throttled_rollback_gives_up_after_its_attempts(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path, clock: ManualClock
) -> None:
    """A rollback throttled on every attempt fails after --max-attempts, saying --resume looks first."""
    emu = emulator_thread(
        clock=clock, rate_limit=THROTTLED_RPS, burst=2, **world(1)
    )  # the two checks, then 429s
    source = create_report(tmp_path / "create.jsonl", [{}])
    report = tmp_path / "r.jsonl"
    result = rollback(emu, source, report, "--max-attempts", "2", apply=True)
    assert result.exit_code == 1, result.stderr
    (record,) = records(report)
    assert (record["outcome"], record["http_status"], record["attempts"]) == ("failed", 429, 2)
    assert record["error_message"].startswith("gave up after 2 attempts")
    assert "--resume looks at the disk" in record["error_message"]
    assert requests_of(emu.state(), ROLLBACK) == {"429": 2}
    assert emu.state()["rollbacks"] == []


@pytest.mark.parametrize(
    ("seed", "outcome", "rollbacks"),
    [
        (40, "rolled_back", 1),  # the gateway lost the answer (502) of a rollback EVS carried out
        (30, "failed", 0),  # 503: EVS did not act, and no attempt is left; the disk stays available
    ],
)
def test_last_attempt_lost_is_judged_by_the_disk(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path, seed: int, outcome: str, rollbacks: int
) -> None:
    """With one attempt, a 5xx answer is judged by the disk: rollbacking means done, available means failed.

    One row, seeded faults: the emulator's draws come in a fixed order, so each seed is one case.
    """
    emu = emulator_thread(rollback_seconds=0.2, fault_5xx=0.15, seed=seed, **world(1))
    source = create_report(tmp_path / "create.jsonl", [{}])
    report = tmp_path / "r.jsonl"
    result = rollback(emu, source, report, "--max-attempts", "1", "--settle", "0.3", apply=True)
    (record,) = records(report)
    assert (record["outcome"], record["attempts"]) == (outcome, 1), record
    assert record["http_status"] >= 500
    assert result.exit_code == (0 if outcome == "rolled_back" else 1)
    if outcome == "failed":
        assert record["error_message"].startswith("gave up after 1 attempts")
    assert sum(requests_of(emu.state(), ROLLBACK).values()) == 1
    assert len(emu.state()["rollbacks"]) == rollbacks


def test_accepted_rollback_whose_end_cannot_be_seen_is_unconfirmed(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """202, then the disk cannot be looked at: failed UNCONFIRMED (attempts 1, status 202), never resent.

    GETs get three tries each even with --max-attempts 1: this seed makes one of them fail three times.
    """
    emu = emulator_thread(rollback_seconds=0.2, fault_5xx=0.25, seed=21, **world(1))
    source = create_report(tmp_path / "create.jsonl", [{}])
    report = tmp_path / "r.jsonl"
    result = rollback(emu, source, report, "--max-attempts", "1", "--settle", "0.3", apply=True)
    assert result.exit_code == 1
    (record,) = records(report)
    assert (record["outcome"], record["error_code"]) == ("failed", "UNCONFIRMED")
    assert (record["attempts"], record["http_status"]) == (1, 202)
    assert record["error_message"].endswith("--resume looks at it before anything is sent again")
    assert requests_of(emu.state(), ROLLBACK) == {"202": 1}


def test_unconfirmed_after_a_lost_answer_still_counts_the_request(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """A rollback answered 502 whose disk then cannot be looked at is UNCONFIRMED with attempts 1 and its 502.

    GETs get three tries each: a larger fault share and this seed make one of them fail three times.
    """
    emu = emulator_thread(rollback_seconds=0.2, fault_5xx=0.4, seed=40, **world(1))
    source = create_report(tmp_path / "create.jsonl", [{}])
    report = tmp_path / "r.jsonl"
    rollback(emu, source, report, "--max-attempts", "1", "--settle", "0.3", apply=True)
    assert requests_of(emu.state(), ROLLBACK) == {"502": 1}
    assert len(emu.state()["rollbacks"]) == 1  # EVS carried it out
    (record,) = records(report)
    assert (record["outcome"], record["error_code"]) == ("failed", "UNCONFIRMED")
    assert (record["attempts"], record["http_status"]) == (1, 502)


def test_a_rollback_that_never_ends_times_out(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path, clock: ManualClock
) -> None:
    """A disk still rollbacking at --wait-timeout: failed ROLLBACK_TIMEOUT, sent once, --resume waits again."""
    emu = emulator_thread(clock=clock, **world(1))  # the clock never moves: the rollback never ends
    source = create_report(tmp_path / "create.jsonl", [{}])
    report = tmp_path / "r.jsonl"
    result = rollback(emu, source, report, "--wait-timeout", "0.4s", apply=True)
    assert result.exit_code == 1, result.stderr
    (record,) = records(report)
    assert (record["outcome"], record["error_code"]) == ("failed", "ROLLBACK_TIMEOUT")
    assert f"disk {VOLUMES[0]} is still rollbacking" in record["error_message"]
    assert requests_of(emu.state(), ROLLBACK) == {"202": 1}
    assert rollbacks_per_snapshot(emu.state()) == {SNAPS[0]: 1}


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_a_rollback_that_ends_before_the_first_poll_is_recorded_at_that_poll(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """Rollbacks over before the first poll (the disk available again, its updated_at moved): each row
    is rolled_back after one poll of its disk and snapshot, not after polling out the settle window."""
    rows = 6
    emu = emulator_thread(rollback_seconds=0.0, latency_ms=30, **world(rows))
    source = create_report(tmp_path / "create.jsonl", [{} for _ in range(rows)])
    report = tmp_path / "rollback.jsonl"
    result = rollback(emu, source, report, "--apply", "--settle", "5s", "--concurrency", "4")
    assert result.exit_code == 0, result.output
    assert {r["outcome"] for r in records(report)} == {"rolled_back"}
    assert len(records(report)) == rows
    assert rollbacks_per_snapshot(emu.state()) == {SNAPS[i]: 1 for i in range(rows)}
    assert requests_note(result.output)["polls"] == 2 * rows  # one look at the disk, one at the snapshot
    assert 1 < emu.state()["max_in_flight"] <= 4


def test_many_rollbacks_under_way_are_watched_by_listing_the_disks(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """40 rollbacks under way, limit 4: after each disk's first look, they are watched by listing the
    disks (1000 a page), not by a GET of each disk a round; requests in flight stay within the limit."""
    rows, clock = 40, ManualClock()
    volumes = tuple(SeedVolume(volume_id=str(uuid.UUID(int=0xE000 + i, version=4))) for i in range(rows))
    snapshots = tuple(
        SeedSnapshot(id=str(uuid.UUID(int=0xF000 + i, version=4)), volume_id=v.volume_id, metadata=marker())
        for i, v in enumerate(volumes)
    )
    emu = emulator_thread(
        clock=clock, rollback_seconds=10.0, latency_ms=5, volumes=volumes, snapshots=snapshots
    )
    lines = [{"volume_id": v.volume_id, "snapshot_id": s.id} for v, s in zip(volumes, snapshots, strict=True)]
    source = create_report(tmp_path / "create.jsonl", [{"index": 0, **line} for line in lines])
    done = threading.Event()

    def release() -> None:
        """Once every rollback runs and the disks were listed 3 times, the clock moves past their end."""
        while not done.wait(0.01):
            state = emu.state()
            if len(state["rollbacks"]) == rows and sum(requests_of(state, VOLUME_LIST).values()) >= 3:
                clock.advance(10.0)
                return

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    try:
        result = rollback(emu, source, tmp_path / "rollback.jsonl", "--apply", "--concurrency", "4")
    finally:
        done.set()
        thread.join(timeout=10)
    assert result.exit_code == 0, result.output
    assert {r["outcome"] for r in records(tmp_path / "rollback.jsonl")} == {"rolled_back"}
    state = emu.state()
    assert sum(requests_of(state, VOLUME_LIST).values()) >= 3
    # a look and a first poll each, and a few more before the rows fall due together: not one a round
    assert sum(requests_of(state, VOLUME_GET).values()) <= 3 * rows
    assert 1 < state["max_in_flight"] <= 4


# --- a resumed rollback whose sent rollback ends between the resume's reads ---------------------------
SNAPSHOT_GET = "GET /v2/{project_id}/cloudsnapshots/{snapshot_id}"
MEMBER_LIST = "GET /v5/{project_id}/snapshots/detail"
MEMBER_ROLLBACK = "POST /v5/{project_id}/snapshots/{snapshot_id}/rollback"


async def journaled_row(emu: RunningEmulator, http: aiohttp.ClientSession, group: bool) -> Record:
    """Row 1 of the create run: its own snapshot of disk 0, or (``group``) its member of a group of the
    run (``create --consistency server``); the disk is detached, as a rollback needs."""
    row = source_row()
    if group:
        made = {"server_id": SERVER, "volume_ids": [VOLUMES[0]], "name": "g", "tags": marker()}
        body = {"snapshot_group": made}
        status, made, _ = await call(http, emu, "POST", f"/v5/{PROJECT}/snapshot-groups", body=body)
        assert status == 202, made
        group_id = made["snapshot_group_id"]
        query = [("snapshot_group_id", group_id)]
        status, listed, _ = await call(http, emu, "GET", f"/v5/{PROJECT}/snapshots/detail", query=query)
        (member,) = listed["snapshots"]
        row = dataclasses.replace(row, snapshot_id=member["id"], snapshot_group_id=group_id)
    emu.world.detach(emu.world.volumes[VOLUMES[0]])
    emu.world.requests.clear()  # the resume's reads are counted from here
    return row


async def resumed_beside(
    url: str, row: Record, plan: RestorePlan, meanwhile: Callable[[], Awaitable[None]], found: list[Finding]
) -> Finding:
    """The row resumed (``restored``) while ``meanwhile`` moves the emulator on; its one finding,
    appended to ``found`` (which ``meanwhile`` may watch)."""
    async with routed(url) as route:

        async def resume() -> None:
            found.append(await restored(route, row, plan))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(resume)
            await meanwhile()
    (finding,) = found
    return finding


async def killed_run(
    emulator: Callable[..., Any], clock: ManualClock, http: aiohttp.ClientSession, group: bool
) -> tuple[Any, Record, str | None, Any]:
    """One disk (a server's, in a group when ``group``) and the row whose rollback a killed run sent: the
    emulator, the row, the disk's updated_at its ``sending`` line holds, and the row's snapshot."""
    own = () if group else (SeedSnapshot(id=SNAPS[0], volume_id=VOLUMES[0], metadata=marker()),)
    emu = await emulator(
        clock=clock,
        latency_ms=LATENCY_MS,
        creating_seconds=0,
        rollback_seconds=60,
        volumes=(SeedVolume(volume_id=VOLUMES[0], server_id=SERVER),),
        snapshots=own,
    )
    row = await journaled_row(emu, http, group)
    volume = emu.world.volume(VOLUMES[0])
    assert volume is not None
    before = volume.updated_at or volume.created_at  # as the killed run's sending line holds it
    snapshot = emu.world.snapshots[str(row.snapshot_id)]
    return emu, row, before, snapshot


@pytest.mark.parametrize("group", [False, True], ids=["disk", "group"])
@pytest.mark.parametrize(
    ("arrives", "disk_reads", "snapshot_reads"),
    [
        (0, 1, 0),  # under way at the first look; over before the snapshot is read (a send, today)
        (0, 1, 1),  # under way at the disk and snapshot; over before the disk is read again (a block)
        (1, 0, 1),  # the killed run's request arrives after the first read; over after the snapshot's
        (1, 0, 0),  # arrives after the first read and is over before anything else is read
    ],
    ids=["ends-after-disk", "ends-after-snapshot", "late-ends-after-snapshot", "late-ends-at-once"],
)
async def test_a_resumed_rollback_that_ends_between_two_reads_is_never_sent_again(
    emulator: Callable[..., Any],
    clock: ManualClock,
    http: aiohttp.ClientSession,
    group: bool,
    arrives: int,
    disk_reads: int,
    snapshot_reads: int,
) -> None:
    """A killed run sent the row's rollback (its ``sending`` line holds the disk's updated_at before
    it); the resume reads the disk and the snapshot while that rollback starts or ends between two of
    the reads. Any read showing it (rollbacking, or the disk changed since the line) means it ran: the
    row is rolled_back, watched to its end, never sent again and never blocked SNAPSHOT_NOT_AVAILABLE.
    Before, a fresh read became the baseline (a second rollback) or the two reads disagreed (blocked)."""
    emu, row, before, snapshot = await killed_run(emulator, clock, http, group)
    clock.advance(1)  # the rollback moves the disk's updated_at on

    def reads() -> tuple[int, int]:
        disk = hits(emu, VOLUME_GET)["200"]
        return disk, hits(emu, SNAPSHOT_GET)["200"] + hits(emu, MEMBER_LIST)["200"]

    async def meanwhile() -> None:
        if arrives:
            await until(lambda: reads()[0] >= arrives)
            emu.world.rollback(snapshot, emu.world.volumes[VOLUMES[0]], None)
        start = reads()
        await until(lambda: reads()[0] - start[0] >= disk_reads and reads()[1] - start[1] >= snapshot_reads)
        clock.advance(60)  # the rollback is over

    if not arrives:
        emu.world.rollback(snapshot, emu.world.volumes[VOLUMES[0]], None)
    plan = dataclasses.replace(restore_plan(settle=0.5), sent={1: Sent(before)})  # an old line
    finding = await resumed_beside(emu.url, row, plan, meanwhile, [])
    assert (finding.outcome, finding.code) == (Action.ROLLED_BACK, None), finding
    assert hits(emu, ROLLBACK) == hits(emu, MEMBER_ROLLBACK) == {}
    assert [item["snapshot_id"] for item in emu.world.rollbacks] == [row.snapshot_id]


@pytest.mark.parametrize("group", [False, True], ids=["disk", "group"])
@pytest.mark.parametrize("arrives", [True, False], ids=["arrives-late", "never-arrives"])
async def test_a_resumed_rollback_in_flight_at_the_kill_is_waited_out_before_it_is_sent(
    emulator: Callable[..., Any], clock: ManualClock, http: aiohttp.ClientSession, group: bool, arrives: bool
) -> None:
    """The killed run's ``sending`` line is younger than --timeout + --settle and the disk is unchanged:
    its request may still be on its way. The resume watches the disk until that window has passed: a
    rollback that shows up in it (the killed run's POST arriving after the resume's reads) is that
    request, watched to its end and never sent again; after the window, still unchanged, it is sent.
    Before, the resume sent at once and the late request rolled the disk back a second time."""
    emu, row, before, snapshot = await killed_run(emulator, clock, http, group)
    clock.advance(1)  # a rollback moves the disk's updated_at on
    # arrives: a window far longer than the test (it ends with the rollback it sees); else a short one
    window = 30.0 if arrives else 0.2
    in_flight = Sent(before, quiet=anyio.current_time() + window)
    plan = dataclasses.replace(restore_plan(settle=0.5), sent={1: in_flight})
    found: list[Finding] = []

    def reads() -> int:
        return hits(emu, VOLUME_GET)["200"]

    async def meanwhile() -> None:
        if arrives:  # the killed run's POST lands after the resume's reads (the disk's twice: all of look)
            await until(lambda: reads() >= 2)
            emu.world.rollback(snapshot, emu.world.volumes[VOLUMES[0]], None)
        await until(lambda: bool(emu.world.rollbacks or found))
        seen = reads()
        await until(lambda: reads() >= seen + 1 or bool(found))  # the resume saw it under way
        clock.advance(60)  # the rollback is over

    finding = await resumed_beside(emu.url, row, plan, meanwhile, found)
    assert (finding.outcome, finding.code) == (Action.ROLLED_BACK, None), finding
    posts = hits(emu, ROLLBACK) + hits(emu, MEMBER_ROLLBACK)
    assert posts == ({} if arrives else {"202": 1}), posts
    assert [item["snapshot_id"] for item in emu.world.rollbacks] == [row.snapshot_id]


# --- rollback --retry-failed ---------------------------------------------------------------------------
# A row whose last record is ``rollback_failed`` (its disk left ``error_rollbacking``) is rolled back
# again with ``--apply --resume --retry-failed``; without the flag it stays blocked and nothing is sent,
# as before (the API allows a rollback from that state).


def cloud(
    emulator_thread: Callable[..., EmulatorThread], disk: str = "available", **knobs: Any
) -> EmulatorThread:
    """One disk and its run's snapshot; ``disk``: the disk's status."""
    seeded = world(1)
    seeded["volumes"] = (SeedVolume(volume_id=VOLUMES[0], status=disk),)
    return emulator_thread(rollback_seconds=0.05, **seeded, **knobs)


def failed_once(emulator_thread: Callable[..., EmulatorThread], tmp_path: Path) -> tuple[Path, Path]:
    """A rollback report whose row ended rollback_failed (the disk ended error_rollbacking)."""
    source = create_report(tmp_path / "create.jsonl", [{}])
    report = tmp_path / "rollback.jsonl"
    first = rollback(cloud(emulator_thread, fault_rollback_error=1.0), source, report, apply=True)
    assert first.exit_code == 1, first.output + first.stderr
    assert [r["outcome"] for r in records(report)] == ["rollback_failed"]
    return source, report


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_without_retry_failed_the_row_stays_blocked(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """--apply --resume: the disk in error_rollbacking blocks the row (the message names --retry-failed);
    nothing is sent, as before."""
    source, report = failed_once(emulator_thread, tmp_path)
    later = cloud(emulator_thread, disk="error_rollbacking")
    result = rollback(later, source, report, "--resume", apply=True)
    assert result.exit_code == 1, result.output + result.stderr
    last = records(report)[-1]
    assert (last["outcome"], last["error_code"]) == ("blocked", "VOLUME_NOT_AVAILABLE")
    assert "--retry-failed" in last["error_message"]
    assert ROLLBACK not in later.state()["requests"]


@pytest.mark.no_cover
def test_retry_failed_rolls_back_a_disk_left_error_rollbacking(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """--apply --resume --retry-failed: one rollback sent, the row rolled_back, the disk available."""
    source, report = failed_once(emulator_thread, tmp_path)
    later = cloud(emulator_thread, disk="error_rollbacking")
    result = rollback(later, source, report, "--resume", "--retry-failed", apply=True)
    assert result.exit_code == 0, result.output + result.stderr
    assert [r["outcome"] for r in records(report)] == ["rollback_failed", "rolled_back"]
    state = later.state()
    assert requests_of(state, ROLLBACK) == {"202": 1}
    assert state["volumes"][0]["status"] == "available"


def test_retry_failed_that_fails_again_is_rollback_failed(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    source, report = failed_once(emulator_thread, tmp_path)
    still = cloud(emulator_thread, disk="error_rollbacking", fault_rollback_error=1.0)
    result = rollback(still, source, report, "--resume", "--retry-failed", apply=True)
    assert result.exit_code == 1
    assert [r["outcome"] for r in records(report)] == ["rollback_failed", "rollback_failed"]
    assert requests_of(still.state(), ROLLBACK) == {"202": 1}
