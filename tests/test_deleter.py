"""One deleter: the sweep (``delete_snapshot``), prune and cleanup (``Deleter``) handle each DELETE answer
the same way, through the one loop (``deleter.delete``)."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.actions import Action, ActionRecord
from orchestrator.deleter import (
    EARLIER_DELETE,
    WRONG_STATE_PAUSE,
    Deleter,
    Deletion,
    Ended,
    Job,
    delete,
    delete_snapshot,
    look_again,
)
from orchestrator.emulator import SeedSnapshot
from orchestrator.errors import ReportUnwritable, RunAborted
from orchestrator.lastlook import UNCHECKED
from orchestrator.ownership import BACKUP_SNAPSHOT, NOT_THIS_RUN
from orchestrator.report import ReportWriter
from orchestrator.retention import kept_held
from orchestrator.retry import RetryPolicy
from tests.helpers import CLOSED_PORT, DELETE, MARKER, hits, planned, routed, volume_ids

QUICK = RetryPolicy(max_attempts=2, initial_wait=0.01, max_wait=0.02)
(DISK,) = volume_ids(1, seed=1047)
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


def seeded(status: str) -> SeedSnapshot:
    return SeedSnapshot(
        id=str(uuid.uuid5(uuid.NAMESPACE_OID, f"deleter/{status}")), volume_id=DISK, status=status
    )


@pytest.mark.anyio
async def test_the_sweep_and_the_deleter_end_each_answer_alike(emulator: Callable[..., Any]) -> None:
    """Seeded twice (each deleter its own copy): 202, EVS.1047 on a deleting or a stuck snapshot, a final
    5xx, and 404 end as done for both or as not done for both, with the same code."""
    missing = str(uuid.uuid4())
    snapshots = tuple(seeded(status) for status in CASES)
    for_sweep, for_deleter = await emulator(snapshots=snapshots), await emulator(snapshots=snapshots)
    swept: dict[str, tuple[bool, str | None]] = {}
    async with routed(for_sweep.url) as route:
        for snapshot in (*snapshots, missing):
            snapshot_id = snapshot if isinstance(snapshot, str) else snapshot.id
            swept[snapshot_id] = await delete_snapshot(route, snapshot_id, QUICK, patience=0)
    written: dict[str, ActionRecord] = {}
    async with routed(for_deleter.url) as route:
        deleter = Deleter(
            policy=QUICK,
            concurrency=2,
            wait_timeout=None,
            write=lambda record: written.__setitem__(str(record.snapshot_id), record),
            stopping=lambda: False,
            on_hold=kept_held,
        )
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
async def test_a_wrong_state_is_waited_out_only_with_patience(emulator: Callable[..., Any]) -> None:
    """EVS.1047 on a snapshot still creating: without patience one DELETE and a refusal naming the state;
    with patience the DELETE is sent again until the patience is spent."""
    young = seeded("creating")
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
    target = seeded("available")
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
    snapshot = seeded("available")
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
            deleter = Deleter(
                policy=QUICK,
                concurrency=2,
                wait_timeout=None,
                write=lambda record: None,
                stopping=lambda: False,
                on_hold=kept_held,
                journal=journal,
            )
            with pytest.raises(BaseExceptionGroup) as stopped:
                await deleter.run([Job(route, planned(snapshot.id))])
            assert stopped.value.subgroup(ReportUnwritable) is not None
            assert journaled == []
            assert hits(running, DELETE) == {}
            writer.fd = real  # the disk has room again
            written: list[ActionRecord] = []
            deleter = Deleter(
                policy=QUICK,
                concurrency=2,
                wait_timeout=None,
                write=written.append,
                stopping=lambda: False,
                on_hold=kept_held,
                journal=journal,
            )
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
    there = seeded("available")
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
        deleter = Deleter(
            policy=QUICK,
            concurrency=2,
            wait_timeout=None,
            write=lambda record: written.__setitem__(record.key, record),
            stopping=lambda: False,
            on_hold=kept_held,
        )
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
    target = seeded("available")
    running = await emulator(snapshots=(target,), fault_5xx=1.0)
    written: list[ActionRecord] = []
    journaled: list[ActionRecord] = []
    async with routed(running.url) as route:
        deleter = Deleter(
            policy=QUICK,
            concurrency=2,
            wait_timeout=None,
            write=written.append,
            stopping=lambda: False,
            on_hold=kept_held,
            journal=journaled.append,
        )
        await deleter.run([Job(route, planned(target.id))])
    assert [(r.outcome, r.error_code) for r in written] == [(Action.FAILED, UNCHECKED)]
    assert journaled == []
    assert hits(running, DELETE) == {}
