"""Lines written without building a Record: the ``sending`` journal line, written before each create
leaves, and an accepted row's record, hold the bytes the Record would give."""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path

import orjson
import pytest

from orchestrator.api.views import Snapshot, created_snapshot
from orchestrator.models import Answer, Outcome, Record, record_head, sending_now, utc_iso_now
from orchestrator.report import ReportWriter
from orchestrator.runner import Runner, RunPlan, _Attempt
from orchestrator.tally import Tally
from tests.helpers import snapshot_request


@pytest.mark.parametrize("at", ["2026-12-07T03:04:05.678Z", 'not "a" time\\', "späť\n", ""])
@pytest.mark.parametrize("attempts", [3, 12])
def test_the_journal_line_is_the_sending_records_json(at: str, attempts: int) -> None:
    """Built without a Record, the line holds the same bytes (fields, order, nulls) as one: the usual
    time (a ``utc_iso`` timestamp) put in a constant tail, any other text (which JSON may escape) too."""
    request = snapshot_request(
        "0f1e2d3c-4b5a-4678-9abc-def012345678", 7, name="nightly-7", region="cn-north-4"
    )
    record = Record(
        run_id="01JEXAMPLE0000000000000000",
        row=request.row,
        volume_id=request.volume_id,
        project_id=request.project_id,
        region=request.region,
        name=request.name,
        outcome=Outcome.SENDING,
        attempts=attempts,
        started_at=at,
        finished_at=at,
        elapsed_ms=0,
    )
    line = Record.sending_line(request, run_id="01JEXAMPLE0000000000000000", attempts=attempts, at=at)
    assert line == record.to_json()
    assert Record.from_dict(orjson.loads(line)) == record


@pytest.mark.parametrize("attempts", [1, 12])
def test_the_journal_line_of_a_create_leaving_now_is_its_sending_line(attempts: int) -> None:
    """``sending_now`` (the runner's, from the row's head) gives the line ``sending_line`` gives at the
    time it put in, a time of now."""
    request = snapshot_request("0f1e2d3c-4b5a-4678-9abc-def012345678", 7, name="nightly-7")
    run_id = "01JEXAMPLE0000000000000000"
    head = record_head(
        run_id, request.row, request.volume_id, request.project_id, request.region, request.name
    )
    before = utc_iso_now()
    line = sending_now(head, attempts)
    record = Record.from_dict(orjson.loads(line))
    assert before <= record.started_at == record.finished_at <= utc_iso_now()
    assert record.outcome is Outcome.SENDING
    assert line == Record.sending_line(request, run_id=run_id, attempts=attempts, at=record.started_at)


def test_an_accepted_row_is_written_as_its_record(tmp_path: Path) -> None:
    """The usual row's record, written and counted without a Record (``Runner._accepted``), holds the
    bytes and counts the Record the runner builds otherwise (with a gate, or for any other end) gives."""
    request = snapshot_request("0f1e2d3c-4b5a-4678-9abc-def012345678", 7, name="nightly-7", region="r-1")
    body = {"snapshot": {"id": "snap-1", "status": "creating", "volume_id": request.volume_id}}
    answer = Answer(status=202, body=body, request_id="req-1")
    state = _Attempt()
    state.attempts, state.answer = 2, answer  # as _send_once leaves it
    lines, tallies = [], []
    for written in (True, False):
        path = tmp_path / f"{written}.jsonl"
        tally = Tally()
        with ReportWriter(str(path)) as writer:
            runner = Runner(
                RunPlan(run_id="01JEXAMPLE", concurrency=1), router=None, writer=writer, tally=tally
            )
            if written:
                runner._accepted(request, state, answer)
            else:
                runner.emit(
                    runner._record(request, Outcome.ACCEPTED, state, snapshot=Snapshot.from_body(body))
                )
        lines.append(path.read_bytes())
        tallies.append(tally)
    fast, built = (Record.from_dict(orjson.loads(line)) for line in lines)
    assert lines[0] == fast.to_json()  # the fields in their order, no snapshot_group_id
    assert dataclasses.replace(fast, finished_at="", elapsed_ms=0) == dataclasses.replace(
        built, finished_at="", elapsed_ms=0
    )
    assert fast.snapshot_id == "snap-1"
    assert fast.snapshot_status == "creating"
    assert fast.attempts == 2
    assert tallies[0].outcomes == tallies[1].outcomes
    assert tallies[0].attempts == tallies[1].attempts
    assert [row for _, row, _ in tallies[0].slowest] == [row for _, row, _ in tallies[1].slowest] == [7]


@pytest.mark.parametrize(
    "body",
    [
        {"snapshot": {"id": "s", "status": "creating"}},
        {"snapshot": {"id": None, "status": 3}},
        {"snapshot": {}},
        {"snapshot": "text"},
        {"other": {}},
        None,
        "text",
        types.MappingProxyType({"snapshot": types.MappingProxyType({"id": "s", "status": "available"})}),
        types.MappingProxyType({"snapshot": {"id": "", "status": None}}),
    ],
)
def test_a_create_answers_snapshot_id_and_status_read_as_the_view_reads_them(body: object) -> None:
    """``created_snapshot`` is ``Snapshot.from_body``'s id (``None`` when empty) and status."""
    snapshot = Snapshot.from_body(body)
    expected = (None, None) if snapshot is None else (snapshot.id or None, snapshot.status)
    assert created_snapshot(body) == expected


def test_a_rows_journal_line_and_record_share_its_serialised_identity(tmp_path: Path) -> None:
    """The row's identity is serialised once (``record_head``) for its journal lines and its record:
    each line holds the bytes its Record gives, escapes and a group's field included."""
    request = snapshot_request("0f1e2d3c-4b5a-4678-9abc-def012345678", 9, name='n\u00e9 "q" \\', region="r-1")
    answer = Answer(status=202, body={"snapshot": {"id": "snap-9", "status": "creating"}}, request_id="q")
    state = _Attempt()
    path = tmp_path / "r.jsonl"
    with ReportWriter(str(path)) as writer:
        runner = Runner(
            RunPlan(run_id="01JEXAMPLE", concurrency=1), router=None, writer=writer, tally=Tally()
        )
        for attempts in (1, 2):
            state.attempts = attempts
            runner._journal(request, state)
        assert state.head is not None
        runner._accepted(request, state, answer)
    lines = path.read_bytes().splitlines(keepends=True)
    records = [Record.from_dict(orjson.loads(line)) for line in lines]
    assert [line == record.to_json() for line, record in zip(lines, records, strict=True)] == [True] * 3
    assert [record.outcome for record in records] == [Outcome.SENDING, Outcome.SENDING, Outcome.ACCEPTED]
    assert [record.attempts for record in records] == [1, 2, 2]
    assert {record.name for record in records} == {'n\u00e9 "q" \\'}
    grouped = dataclasses.replace(records[2], snapshot_group_id="g-1")
    assert Record.from_dict(orjson.loads(grouped.to_json())) == grouped
