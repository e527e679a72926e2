"""The sweep's delete (``deleter.delete_snapshot``) against the emulator: 400 EVS.1047 is looked into."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from orchestrator.actions import Action, ActionRecord
from orchestrator.api.routes import Route
from orchestrator.deleter import Deleter, Ended, Job, delete, delete_snapshot
from orchestrator.emulator import ManualClock, SeedSnapshot, SeedVolume
from orchestrator.errors import RouteClosed
from orchestrator.lastlook import UNCHECKED
from orchestrator.retention import kept_held
from tests.helpers import (
    AKSK,
    CLOSED_PORT,
    DELETE,
    FAST_RETRIES,
    LIST,
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


def seeded(status: str, *, project_id: str | None = None) -> SeedSnapshot:
    (disk,) = volume_ids(1, seed=901)
    return SeedSnapshot(
        id=str(uuid.uuid5(uuid.NAMESPACE_OID, f"{status}/{project_id}")),
        volume_id=disk,
        status=status,
        project_id=project_id,
    )


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
        deleter = Deleter(
            policy=QUICK,
            concurrency=concurrency,
            wait_timeout=wait_timeout,
            write=write,
            stopping=stopping,
            on_hold=kept_held,
        )
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
    busy = seeded("backing-up")
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
    stuck = seeded("deleting")
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
    broken = seeded("error_deleting")
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
    DELETE loop: the deleter's last look would meet the 5xx first, tests/test_deleter.py)."""
    target = seeded("available")
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
    first, second = seeded("available"), seeded("error")
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
    target = seeded("available")
    emu = await emulator(snapshots=(target,))
    written = await delete_all(emu.url, lambda route: [Job(route, planned(target.id))], stopping=lambda: True)
    assert written == []
    assert not hits(emu, DELETE)


@pytest.mark.anyio
async def test_a_stop_while_confirming_records_the_accepted_deletions(emulator: Callable[..., Any]) -> None:
    """A stop during the wait: deletions already accepted are recorded deleted, 'not waited for'."""
    stuck = seeded("deleting")
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
    stuck = [seeded("deleting"), seeded("deleting", project_id=PROJECT)]
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
