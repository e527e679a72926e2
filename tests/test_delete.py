"""Deleting against the emulator. The sweep's delete (``deleter.delete_snapshot``): 400 EVS.1047 is
looked into. One deleter: the sweep, prune and cleanup (``Deleter``) handle each DELETE answer the same
way, through the one loop (``deleter.delete``) (at the end)."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from orchestrator.actions import Action, ActionRecord
from orchestrator.api.routes import Route
from orchestrator.deleter import (
    EARLIER_DELETE,
    WRONG_STATE_PAUSE,
    Deletion,
    Ended,
    Job,
    delete,
    delete_snapshot,
    look_again,
)
from orchestrator.emulator import ManualClock, SeedSnapshot, SeedVolume
from orchestrator.errors import ReportUnwritable, RouteClosed, RunAborted
from orchestrator.lastlook import UNCHECKED
from orchestrator.ownership import BACKUP_SNAPSHOT, NOT_THIS_RUN
from orchestrator.report import ReportWriter
from tests.helpers import (
    AKSK,
    CLOSED_PORT,
    DELETE,
    DISK,
    FAST_RETRIES,
    LIST,
    MARKER,
    PROJECT,
    QUICK,
    SHOW,
    WRONG,
    api_seeded,
    create_args,
    csv_manifest,
    hits,
    invoke,
    last_per_row,
    planned,
    quick_deleter,
    records,
    requests_of,
    routed,
    router_for,
    until,
    volume_ids,
)

pytestmark = pytest.mark.usefixtures("quick_deletion_polls")

VOLUME = str(uuid.UUID(int=0xDE00, version=4))
DELETING, ROLLBACKING, AVAILABLE = (str(uuid.UUID(int=0xDE01 + index, version=4)) for index in range(3))


async def delete_all(
    url: str,
    jobs: Callable[[Route], list[Job]],
    *,
    wait_timeout: float | None = 2.0,
    stopping: Callable[[], bool] = lambda: False,
    environ: dict[str, str] | None = None,
    concurrency: int = 1,
    on_write: Callable[[ActionRecord], None] | None = None,
) -> list[ActionRecord]:
    written: list[ActionRecord] = []

    def write(record: ActionRecord) -> None:
        written.append(record)
        if on_write is not None:
            on_write(record)

    async with routed(url, environ) as route:
        deleter = quick_deleter(write, concurrency=concurrency, wait_timeout=wait_timeout, stopping=stopping)
        await deleter.run(jobs(route))
    return written


async def test_a_snapshot_already_deleting_counts_as_deleted_at_once(
    emulator: Callable[..., Any], clock: ManualClock
) -> None:
    """An earlier DELETE whose answer was lost got through: the next one is refused EVS.1047, the
    snapshot is looked at, and ``deleting`` means done (no waiting out the patience, no failure)."""
    emu = await emulator(
        clock=clock,
        volumes=(SeedVolume(volume_id=VOLUME),),
        snapshots=(
            SeedSnapshot(id=DELETING, volume_id=VOLUME, status="deleting"),
            SeedSnapshot(id=AVAILABLE, volume_id=VOLUME),
        ),
    )
    async with router_for(emu.url, AKSK) as router:
        route = router.route_at(None, emu.world.settings.project_id)
        assert await delete_snapshot(route, DELETING, QUICK, patience=600.0) == (True, None)
        assert await delete_snapshot(route, AVAILABLE, QUICK, patience=600.0) == (True, None)
    assert hits(emu, DELETE) == {"400": 1, "202": 1}
    assert hits(emu, SHOW) == {"200": 1}


async def test_a_snapshot_in_another_state_fails_with_its_status(
    emulator: Callable[..., Any], clock: ManualClock
) -> None:
    """EVS.1047 for a snapshot that is neither creating nor deleting: one look, then failed, saying why."""
    emu = await emulator(
        clock=clock,
        volumes=(SeedVolume(volume_id=VOLUME),),
        snapshots=(SeedSnapshot(id=ROLLBACKING, volume_id=VOLUME, status="rollbacking"),),
    )
    async with router_for(emu.url, AKSK) as router:
        route = router.route_at(None, emu.world.settings.project_id)
        deleted, why = await delete_snapshot(route, ROLLBACKING, QUICK, patience=600.0)
    assert not deleted
    assert why is not None
    assert why.startswith("400 EVS.1047")
    assert why.endswith("(the snapshot is rollbacking)")
    assert hits(emu, DELETE) == {"400": 1}


def test_the_sweep_counts_a_deletion_whose_answer_was_lost_as_done(
    emulator_thread: Callable[..., Any], write: Callable[..., Any], tmp_path: Path
) -> None:
    """Doubles from commits later than --settle are deleted by the sweep; every DELETE's answer is lost
    after EVS acted. The resend is refused EVS.1047 (already deleting): that is a deletion, not a failure."""
    ids = volume_ids(20, seed=106)
    emu = emulator_thread(
        any_volume=True,
        seed=106,
        fault_late_commit=0.3,
        late_commit_seconds=0.15,
        creating_seconds=0.05,
        deleting_seconds=60.0,  # still deleting when the DELETE is sent again
        fault_delete_drop_after=1.0,
        rate_limit=1000,
    )
    report = tmp_path / "r.jsonl"
    args = create_args(emu.url, csv_manifest(write, ids), report, *FAST_RETRIES)
    result = invoke([*args, "--settle", "0.025", "--max-rps", "80", "--concurrency", "2"])
    assert result.exit_code == 0, result.output
    side = [r for r in records(report) if r["outcome"].startswith("duplicate")]
    assert side, "with a settle window shorter than the backend lag, doubles must appear and be swept"
    assert {r["outcome"] for r in side} == {"duplicate_deleted"}
    deletes = requests_of(emu.state(), DELETE)
    assert deletes["dropped"] == len(side)
    assert deletes["400"] == len(side)  # each resend refused: the snapshot was deleting already
    # The snapshot each row names was kept (a commit later than the sweep itself is wait's to catch).
    kept = {r["snapshot_id"] for r in last_per_row(report).values()}
    alive = {s["id"] for s in emu.state()["snapshots"] if s["status"] != "deleting"}
    assert kept <= alive


@pytest.mark.no_cover
async def test_a_duplicate_that_finishes_creating_meanwhile_is_deleted_on_the_next_try(
    emulator: Callable[..., Any], clock: ManualClock
) -> None:
    """DELETE refused EVS.1047 while the snapshot is creating; it is available by the status read:
    the DELETE is sent again at once (not given up), and the snapshot goes."""
    emu = await emulator(
        clock=clock, creating_seconds=2.0, latency_ms=30, volumes=(SeedVolume(volume_id=VOLUME),)
    )
    snapshot = emu.world.create_snapshot(
        volume=emu.world.volumes[VOLUME], name=None, description=None, metadata={}
    )
    found: list[tuple[bool, str | None]] = []

    async def delete() -> None:
        async with router_for(emu.url, AKSK) as router:
            route = router.route_at(None, emu.world.settings.project_id)
            found.append(await delete_snapshot(route, snapshot.id, QUICK, patience=600.0))

    async with anyio.create_task_group() as group:
        group.start_soon(delete)
        await until(lambda: hits(emu, DELETE)["400"] >= 1)
        clock.advance(5)  # created: available by the time the status is read
    assert found == [(True, None)]
    assert hits(emu, DELETE) == {"400": 1, "202": 1}
    assert hits(emu, SHOW) == {"200": 1}


@pytest.mark.anyio
async def test_safe_delete_outcomes(emulator: Callable[..., Any]) -> None:
    """delete_snapshot: 404 is done; error_deleting fails at once (final); creating is retried for patience."""
    broken, young = api_seeded("error_deleting"), api_seeded("creating")
    emu = await emulator(snapshots=(broken, young))
    async with routed(emu.url) as route:
        assert await delete_snapshot(route, str(uuid.uuid4()), QUICK, patience=0) == (True, None)
        done, why = await delete_snapshot(route, broken.id, QUICK, patience=5)
        assert not done
        assert why is not None
        assert why.startswith("500 EVS.2019")
        done, why = await delete_snapshot(route, young.id, QUICK, patience=0.3)
        assert not done
        assert why is not None
        assert why.startswith("400 EVS.1047")
    assert hits(emu, DELETE)["500"] == 1
    assert hits(emu, DELETE)["400"] >= 2  # tried again while the patience lasted


@pytest.mark.anyio
async def test_safe_delete_spends_its_attempts_on_retryable_answers(emulator: Callable[..., Any]) -> None:
    """Every DELETE answered 5xx: (False, why) after exactly max_attempts requests."""
    target = api_seeded("available")
    emu = await emulator(snapshots=(target,), fault_5xx=1.0)
    async with routed(emu.url) as route:
        done, why = await delete_snapshot(route, target.id, QUICK, patience=0)
    assert not done
    assert why is not None
    assert why[:3] in {"500", "502", "503", "504"}
    assert sum(hits(emu, DELETE).values()) == QUICK.max_attempts


@pytest.mark.anyio
async def test_safe_delete_without_a_connection_fails() -> None:
    """No connection at all: (False, the transport error), not an exception."""
    async with routed(CLOSED_PORT) as route:
        done, why = await delete_snapshot(route, str(uuid.uuid4()), QUICK, patience=0)
    assert not done
    assert why


@pytest.mark.anyio
async def test_safe_delete_with_refused_credentials_closes_the_route(emulator: Callable[..., Any]) -> None:
    """A 401 on the DELETE raises RouteClosed (credentials refused) after one request."""
    emu = await emulator(snapshots=(api_seeded("available"),))
    async with routed(emu.url, WRONG) as route:
        with pytest.raises(RouteClosed, match="credentials refused"):
            await delete_snapshot(route, api_seeded("available").id, QUICK, patience=0)
        assert route.closed is not None
    assert hits(emu, DELETE) == {"401": 1}


@pytest.mark.anyio
async def test_delete_of_a_busy_snapshot_is_rejected_with_its_state(emulator: Callable[..., Any]) -> None:
    """A DELETE refused with EVS.1047 looks the snapshot up: one backing-up is rejected, naming its state
    (two GETs: its last look before the DELETE, then that lookup)."""
    busy = api_seeded("backing-up")
    emu = await emulator(snapshots=(busy,))
    written = await delete_all(emu.url, lambda route: [Job(route, planned(busy.id))])
    [record] = written
    assert (record.outcome, record.error_code, record.http_status) == (Action.REJECTED, "EVS.1047", 400)
    assert record.error_message is not None
    assert record.error_message.endswith("(the snapshot is backing-up)")
    assert hits(emu, DELETE) == {"400": 1}
    assert hits(emu, SHOW) == {"200": 2}


@pytest.mark.anyio
async def test_delete_of_a_deleting_snapshot_waits_and_times_out(emulator: Callable[..., Any]) -> None:
    """EVS.1047 on a snapshot already deleting counts as sent; one that never goes ends DELETE_WAIT_TIMEOUT."""
    stuck = api_seeded("deleting")
    emu = await emulator(snapshots=(stuck,))
    written = await delete_all(emu.url, lambda route: [Job(route, planned(stuck.id))], wait_timeout=0.4)
    [record] = written
    assert (record.outcome, record.error_code) == (Action.FAILED, "DELETE_WAIT_TIMEOUT")
    assert record.error_message == "deletion accepted (202); not gone in time"
    assert hits(emu, DELETE) == {"400": 1}
    assert hits(emu, SHOW)["200"] >= 2  # one pending: looked at by GET, and seen still deleting


@pytest.mark.anyio
async def test_error_deleting_is_rejected_then_reported_when_seen_while_waiting(
    emulator: Callable[..., Any],
) -> None:
    """DELETE of an error_deleting snapshot is rejected (500 EVS.2019, final); one found so while waiting fails."""
    broken = api_seeded("error_deleting")
    emu = await emulator(snapshots=(broken,))
    [rejected] = await delete_all(emu.url, lambda route: [Job(route, planned(broken.id))])
    assert (rejected.outcome, rejected.error_code, rejected.http_status) == (Action.REJECTED, "EVS.2019", 500)
    assert rejected.attempts == 1
    sent = dataclasses.replace(planned(broken.id), outcome=Action.DELETED)
    [waited] = await delete_all(emu.url, lambda route: [Job(route, sent, sent=True)])
    assert (waited.outcome, waited.error_code) == (Action.FAILED, "ERROR_DELETING")
    assert hits(emu, DELETE) == {"500": 1}  # the job already sent is not sent again


@pytest.mark.anyio
async def test_server_errors_spend_the_attempts(emulator: Callable[..., Any]) -> None:
    """Every DELETE answered 5xx: it fails after max_attempts requests, with the last status (the one
    DELETE loop: the deleter's last look would meet the 5xx first: below)."""
    target = api_seeded("available")
    emu = await emulator(snapshots=(target,), fault_5xx=1.0)
    async with routed(emu.url) as route:
        deletion = await delete(route, target.id, QUICK)
    assert deletion.ended is Ended.FAILED
    assert deletion.attempts == QUICK.max_attempts
    assert deletion.http_status is not None
    assert deletion.http_status >= 500
    assert sum(hits(emu, DELETE).values()) == QUICK.max_attempts


@pytest.mark.anyio
async def test_refused_credentials_fail_one_job_and_skip_the_rest(emulator: Callable[..., Any]) -> None:
    """A 401 closes the route: the job that met it (at its last look's GET) fails with the refusal, later
    jobs get no record, and no DELETE is sent."""
    first, second = api_seeded("available"), api_seeded("error")
    emu = await emulator(snapshots=(first, second))
    written = await delete_all(
        emu.url,
        lambda route: [Job(route, planned(first.id)), Job(route, planned(second.id))],
        environ=WRONG,
    )
    assert [(r.snapshot_id, r.outcome) for r in written] == [(first.id, Action.FAILED)]
    assert written[0].error_message is not None
    assert "credentials refused" in written[0].error_message
    assert sum(hits(emu, SHOW).values()) == 1
    assert DELETE not in emu.world.requests
    assert [emu.world.status_of(s) for s in emu.world.snapshots.values()] == ["available", "error"]


@pytest.mark.anyio
async def test_unreachable_endpoint_fails_the_delete() -> None:
    """No connection at all: the DELETE fails with a transport error code after its attempts; through the
    deleter, its last look's GET fails first: DELETE_UNCHECKED, nothing sent."""
    snapshot_id = str(uuid.uuid4())
    async with routed(CLOSED_PORT) as route:
        deletion = await delete(route, snapshot_id, QUICK)
    assert deletion.ended is Ended.FAILED
    assert deletion.attempts == QUICK.max_attempts
    assert deletion.http_status is None
    assert deletion.transport
    assert deletion.code
    [record] = await delete_all(CLOSED_PORT, lambda route: [Job(route, planned(snapshot_id))])
    assert (record.outcome, record.error_code, record.attempts) == (Action.FAILED, UNCHECKED, 0)


@pytest.mark.anyio
async def test_a_stop_before_the_first_job_sends_nothing(emulator: Callable[..., Any]) -> None:
    """When the run is already stopping, no DELETE is sent and no record is written (--resume redoes it)."""
    target = api_seeded("available")
    emu = await emulator(snapshots=(target,))
    written = await delete_all(emu.url, lambda route: [Job(route, planned(target.id))], stopping=lambda: True)
    assert written == []
    assert not hits(emu, DELETE)


@pytest.mark.anyio
async def test_a_stop_while_confirming_records_the_accepted_deletions(emulator: Callable[..., Any]) -> None:
    """A stop during the wait: deletions already accepted are recorded deleted, 'not waited for'."""
    stuck = api_seeded("deleting")
    emu = await emulator(snapshots=(stuck,))
    stopped: list[bool] = []
    sent = dataclasses.replace(planned(stuck.id), outcome=Action.DELETED)
    gone = planned(str(uuid.uuid4()))  # answered 404: finished at once, and the stop comes then
    written = await delete_all(
        emu.url,
        lambda route: [Job(route, sent, sent=True), Job(route, gone)],
        stopping=lambda: bool(stopped),
        on_write=lambda record: stopped.append(True),
        wait_timeout=30.0,
    )
    assert [(r.snapshot_id, r.outcome, r.http_status) for r in written] == [
        (gone.snapshot_id, Action.DELETED, 404),
        (stuck.id, Action.DELETED, None),
    ]
    assert written[1].error_message == "deletion accepted (202); not waited for: the run stopped"
    assert not hits(emu, LIST)


@pytest.mark.anyio
async def test_confirmation_that_cannot_list_is_unconfirmed(emulator: Callable[..., Any]) -> None:
    """Status checks that keep failing end an accepted deletion as DELETE_UNCONFIRMED, not as deleted:
    by listing (more pending than the in-flight limit), and by GET (as few as that)."""
    stuck = [api_seeded("deleting"), api_seeded("deleting", project_id=PROJECT)]
    emu = await emulator(snapshots=tuple(stuck), fault_list=1.0)
    sent = [dataclasses.replace(planned(s.id), outcome=Action.DELETED) for s in stuck]
    written = await delete_all(emu.url, lambda route: [Job(route, r, sent=True) for r in sent])
    assert {(r.outcome, r.error_code) for r in written} == {(Action.FAILED, "DELETE_UNCONFIRMED")}
    assert len(written) == 2
    assert all("could not be confirmed" in str(r.error_message) for r in written)
    assert hits(emu, LIST) == {"503": QUICK.max_attempts}
    assert not hits(emu, SHOW)
    emu = await emulator(snapshots=tuple(stuck), fault_5xx=1.0)
    written = await delete_all(emu.url, lambda route: [Job(route, r, sent=True) for r in sent], concurrency=2)
    assert {(r.outcome, r.error_code) for r in written} == {(Action.FAILED, "DELETE_UNCONFIRMED")}
    assert sum(hits(emu, SHOW).values()) == 2 * QUICK.max_attempts
    assert not hits(emu, LIST)


# --- one deleter: the sweep, prune and cleanup end each DELETE answer alike ---------------------------
# The state each snapshot is seeded in, and how its deletion must end for every deleter.
CASES = {
    "available": (True, Action.DELETED, None),  # 202
    "deleting": (
        True,
        Action.DELETED,
        None,
    ),  # 400 EVS.1047, then seen deleting: an earlier DELETE got through
    "rollbacking": (False, Action.REJECTED, "EVS.1047"),  # 400 EVS.1047 in a state that stays
    "error_deleting": (False, Action.REJECTED, "EVS.2019"),  # 500 with a final code
}


@pytest.mark.anyio
async def test_the_sweep_and_the_deleter_end_each_answer_alike(emulator: Callable[..., Any]) -> None:
    """Seeded twice (each deleter its own copy): 202, EVS.1047 on a deleting or a stuck snapshot, a final
    5xx, and 404 end as done for both or as not done for both, with the same code."""
    missing = str(uuid.uuid4())
    snapshots = tuple(api_seeded(status) for status in CASES)
    for_sweep, for_deleter = await emulator(snapshots=snapshots), await emulator(snapshots=snapshots)
    swept: dict[str, tuple[bool, str | None]] = {}
    async with routed(for_sweep.url) as route:
        for snapshot in (*snapshots, missing):
            snapshot_id = snapshot if isinstance(snapshot, str) else snapshot.id
            swept[snapshot_id] = await delete_snapshot(route, snapshot_id, QUICK, patience=0)
    written: dict[str, ActionRecord] = {}
    async with routed(for_deleter.url) as route:
        deleter = quick_deleter(lambda record: written.__setitem__(str(record.snapshot_id), record))
        ids = [s.id for s in snapshots] + [missing]
        await deleter.run([Job(route, planned(snapshot_id)) for snapshot_id in ids])
    assert swept[missing] == (True, None)
    assert written[missing].outcome is Action.DELETED
    assert written[missing].http_status == 404
    for snapshot in snapshots:
        done, outcome, code = CASES[snapshot.status]
        assert swept[snapshot.id][0] is done, (snapshot.status, swept[snapshot.id])
        assert (written[snapshot.id].outcome, written[snapshot.id].error_code) == (outcome, code)
        why = swept[snapshot.id][1]
        assert (why is None) is done
        if code is not None:
            assert why is not None
            assert code in why


@pytest.mark.anyio
@pytest.mark.no_cover
async def test_a_wrong_state_is_waited_out_only_with_patience(emulator: Callable[..., Any]) -> None:
    """EVS.1047 on a snapshot still creating: without patience one DELETE and a refusal naming the state;
    with patience the DELETE is sent again until the patience is spent."""
    young = api_seeded("creating")
    emu = await emulator(snapshots=(young,))
    async with routed(emu.url) as route:
        at_once = await delete(route, young.id, QUICK)
        patient = await delete(route, young.id, QUICK, patience=0.3)
    assert (at_once.ended, at_once.state, at_once.attempts) == (Ended.REJECTED, "creating", 1)
    assert at_once.why is not None
    assert at_once.why.endswith("(the snapshot is creating)")
    assert patient.ended is Ended.REJECTED
    assert patient.attempts >= 2


@pytest.mark.anyio
async def test_patience_outlasts_the_attempts_at_a_steady_pace(emulator: Callable[..., Any]) -> None:
    """Every DELETE answered 5xx: past the policy's attempts it is sent again while the patience lasts,
    each pause then at least WRONG_STATE_PAUSE, so the patience is not spun through."""
    target = api_seeded("available")
    emu = await emulator(snapshots=(target,), fault_5xx=1.0)
    patience = 0.3
    async with routed(emu.url) as route:
        deletion = await delete(route, target.id, QUICK, patience=patience)
    assert deletion.ended is Ended.FAILED
    assert (
        QUICK.max_attempts < deletion.attempts <= QUICK.max_attempts + 1 + int(patience / WRONG_STATE_PAUSE)
    )
    assert deletion.why is not None
    assert deletion.why[:3] in {"500", "502", "503", "504"}


def test_why_names_what_was_learned() -> None:
    """A deletion that did not succeed says why in one line: the answer, and the state or the failed look."""
    answer = Deletion(ended=Ended.FAILED, http_status=400, code="EVS.1047", message="wrong state")
    assert Deletion(ended=Ended.DONE).why is None
    assert answer.why == "400 EVS.1047: wrong state"
    unread = dataclasses.replace(answer, unreadable=True)
    assert unread.why == "400 EVS.1047: wrong state (and its status could not be read)"
    stuck = dataclasses.replace(answer, ended=Ended.REJECTED, state="backing-up")
    assert stuck.why == "400 EVS.1047: wrong state (the snapshot is backing-up)"
    lost = Deletion(ended=Ended.FAILED, code="CONNECTION_RESET", message="connection reset", transport=True)
    assert lost.why == "connection reset"


@pytest.mark.anyio
async def test_a_delete_whose_sending_line_cannot_be_written_is_not_sent(
    emulator: Callable[..., Any], tmp_path: Path
) -> None:
    """Each DELETE's sending line is on disk before it leaves: when the report cannot take it (a full
    disk: /dev/full), the run stops (``ReportUnwritable``: exit 3) and no DELETE is sent; a line that can be
    written is the job's record as ``sending``."""
    snapshot = api_seeded("available")
    running = await emulator(snapshots=(snapshot,))
    journaled: list[ActionRecord] = []
    writer = ReportWriter(str(tmp_path / "r.jsonl"))
    full = os.open("/dev/full", os.O_WRONLY)
    real, writer.fd = writer.fd, full

    def journal(record: ActionRecord) -> None:
        writer.write_line(record.to_json())
        journaled.append(record)

    try:
        async with routed(running.url) as route:
            deleter = quick_deleter(lambda record: None, journal=journal)
            with pytest.raises(BaseExceptionGroup) as stopped:
                await deleter.run([Job(route, planned(snapshot.id))])
            assert stopped.value.subgroup(ReportUnwritable) is not None
            assert journaled == []
            assert hits(running, DELETE) == {}
            writer.fd = real  # the disk has room again
            written: list[ActionRecord] = []
            deleter = quick_deleter(written.append, journal=journal)
            await deleter.run([Job(route, planned(snapshot.id))])
    finally:
        os.close(full)
        os.close(real)
    assert [(r.key, r.outcome) for r in journaled] == [(snapshot.id, Action.SENDING)]
    assert [(r.key, r.outcome) for r in written] == [(snapshot.id, Action.DELETED)]
    assert hits(running, DELETE) == {"202": 1}


@pytest.mark.anyio
async def test_look_again_tells_the_sends_gone_from_those_still_there(emulator: Callable[..., Any]) -> None:
    """--resume's lookup of DELETEs an earlier run sent: a snapshot gone (404) gets its deleted record (its
    sending line's fields, an earlier run's DELETE), one still there is returned to be judged; a lookup
    that cannot be answered stops the run as a listing does (the error itself, not a group)."""
    there = api_seeded("available")
    gone = str(uuid.uuid4())
    running = await emulator(snapshots=(there,))
    lines = [
        dataclasses.replace(planned(key), outcome=Action.SENDING, rule="keep-last 1")
        for key in (gone, there.id)
    ]
    async with routed(running.url) as route:
        settled, found = await look_again(route, lines, QUICK)
    assert [(r.key, r.outcome, r.http_status, r.error_message, r.rule) for r in settled] == [
        (gone, Action.DELETED, 404, EARLIER_DELETE, "keep-last 1")
    ]
    assert [snapshot.id for snapshot in found] == [there.id]
    async with routed(CLOSED_PORT) as route:
        with pytest.raises(RunAborted):
            await look_again(route, lines, QUICK)


@pytest.mark.anyio
async def test_the_last_look_refuses_a_snapshot_that_changed_hands(emulator: Callable[..., Any]) -> None:
    """Read again before its DELETE: a snapshot carrying another marker than its listing showed, or named
    as a backup's by now, is refused and no DELETE is sent."""
    listed, other = "20261101T000000Z-aaaaaa", "20261101T000000Z-bbbbbb"
    moved = SeedSnapshot(id=str(uuid.uuid4()), volume_id=DISK, metadata={MARKER: other})
    renamed = SeedSnapshot(
        id=str(uuid.uuid4()), volume_id=DISK, name="autobk_snapshot_x", metadata={MARKER: listed}
    )
    running = await emulator(snapshots=(moved, renamed))
    written: dict[str, ActionRecord] = {}
    async with routed(running.url) as route:
        deleter = quick_deleter(lambda record: written.__setitem__(record.key, record))
        jobs = [Job(route, dataclasses.replace(planned(s.id), source_run=listed)) for s in (moved, renamed)]
        await deleter.run(jobs)
    assert {key: (r.outcome, r.error_code) for key, r in written.items()} == {
        moved.id: (Action.REFUSED, NOT_THIS_RUN),
        renamed.id: (Action.REFUSED, BACKUP_SNAPSHOT),
    }
    assert f"carried run {listed}'s marker when listed" in str(written[moved.id].error_message)
    assert hits(running, DELETE) == {}


@pytest.mark.anyio
async def test_a_snapshot_that_cannot_be_read_again_is_not_deleted(emulator: Callable[..., Any]) -> None:
    """Every answer a 5xx: the last look's GET spends its retries; the job fails DELETE_UNCHECKED (its
    hold unknown), and neither a sending line nor a DELETE is sent."""
    target = api_seeded("available")
    running = await emulator(snapshots=(target,), fault_5xx=1.0)
    written: list[ActionRecord] = []
    journaled: list[ActionRecord] = []
    async with routed(running.url) as route:
        deleter = quick_deleter(written.append, journal=journaled.append)
        await deleter.run([Job(route, planned(target.id))])
    assert [(r.outcome, r.error_code) for r in written] == [(Action.FAILED, UNCHECKED)]
    assert journaled == []
    assert hits(running, DELETE) == {}
