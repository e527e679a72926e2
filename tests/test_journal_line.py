"""The ``sending`` journal line, written before each create leaves, is the record ``sending`` would be."""

from __future__ import annotations

from orchestrator.models import Outcome, Record
from tests.helpers import snapshot_request


def test_the_journal_line_is_the_sending_records_json() -> None:
    """Built without a Record, the line holds the same bytes (fields, order, nulls) as one."""
    request = snapshot_request(
        "0f1e2d3c-4b5a-4678-9abc-def012345678", 7, name="nightly-7", region="cn-north-4"
    )
    at = "2026-12-07T03:04:05.678Z"
    record = Record(
        run_id="01JEXAMPLE0000000000000000",
        row=request.row,
        volume_id=request.volume_id,
        project_id=request.project_id,
        region=request.region,
        name=request.name,
        outcome=Outcome.SENDING,
        attempts=3,
        started_at=at,
        finished_at=at,
        elapsed_ms=0,
    )
    line = Record.sending_line(request, run_id="01JEXAMPLE0000000000000000", attempts=3, at=at)
    assert line == record.to_json()
    assert Record.from_json(line) == record
