"""The waiter and the sweep on their rough paths: listings that fail or are refused, unreachable
endpoints, server errors mid-wait, rows reconciled after all, and duplicates that cannot be deleted."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from orchestrator.api.routes import Router, connect
from orchestrator.config import Connection, Endpoints
from orchestrator.emulator import EmulatorThread, SeedSnapshot, SeedVolume
from orchestrator.errors import RouteClosed
from orchestrator.models import Outcome, Record, RunHeader
from orchestrator.report import ReportWriter, read_records
from orchestrator.tally import Tally
from orchestrator.waiter import Waiter, WaitPlan
from tests.helpers import (
    AKSK,
    CLOSED_PORT,
    PROJECT,
    RUN,
    SNAPS,
    VOLUMES,
    WRONG,
    create_report,
    hits,
    invoke,
    marker,
    records,
)

LIST = "GET /v2/{project_id}/cloudsnapshots/detail"
SHOW = "GET /v2/{project_id}/cloudsnapshots/{snapshot_id}"
DELETE = "DELETE /v2/{project_id}/cloudsnapshots/{snapshot_id}"


@contextlib.asynccontextmanager
async def router_at(url: str, environ: dict[str, str] | None = None) -> AsyncIterator[Router]:
    async with contextlib.AsyncExitStack() as stack:
        yield await connect(stack, Connection(endpoints=Endpoints(evs=URL(url)), environ=environ or AKSK))


def accepted(row: int, snapshot_id: str, *, started_at: str = "2026-11-27T03:54:32.100Z") -> Record:
    return Record(
        run_id=RUN,
        row=row,
        volume_id=VOLUMES[row],
        project_id=PROJECT,
        region=None,
        name=f"n{row}",
        outcome=Outcome.ACCEPTED,
        http_status=202,
        snapshot_id=snapshot_id,
        snapshot_status="creating",
        attempts=1,
        started_at=started_at,
        finished_at=started_at,
        elapsed_ms=1234,
    )


async def wait_for(
    url: str, rows: list[Record], tmp_path: Path, plan: WaitPlan, environ: dict[str, str] | None = None
) -> tuple[Tally, list[Record]]:
    tally = Tally()
    report = tmp_path / "w.jsonl"
    async with router_at(url, environ) as router:
        with ReportWriter(str(report)) as writer:
            run_id = rows[0].run_id if rows else "r"
            writer.write_header(
                RunHeader(
                    run_id=run_id,
                    command="create",
                    manifest="m.csv",
                    rows=max((row.row for row in rows), default=0),
                    digest="",
                    shape={},
                    started_at="s",
                )
            )
            waiter = Waiter(plan, router=router, writer=writer, tally=tally)
            waiter.load(rows)
            await waiter.run()
    return tally, list(read_records(report))


@pytest.mark.anyio
async def test_failing_listings_end_in_wait_timeout(emulator: Callable[..., Any], tmp_path: Path) -> None:
    """Every list answered 503: pending rows end wait_timeout with their last known status; others are counted."""
    emu = await emulator(fault_list=1.0)
    rows = [
        accepted(1, str(uuid.uuid4())),
        accepted(2, str(uuid.uuid4()), started_at="not a time"),
        dataclasses.replace(accepted(3, "x"), outcome=Outcome.REJECTED, snapshot_id=None),
    ]
    tally, written = await wait_for(emu.url, rows, tmp_path, WaitPlan(timeout=0.25, interval=0.05))
    assert [(r.row, r.outcome, r.snapshot_status) for r in written] == [
        (1, Outcome.WAIT_TIMEOUT, "creating"),
        (2, Outcome.WAIT_TIMEOUT, "creating"),
    ]
    assert written[1].elapsed_ms == 1234  # an unreadable start time keeps the elapsed time it had
    assert tally.outcomes == {"wait_timeout": 2, "rejected": 1}
    assert hits(emu, LIST)["503"] >= 2
    assert not hits(emu, SHOW)


@pytest.mark.anyio
async def test_server_errors_mid_wait_still_settle_every_row(
    emulator: Callable[..., Any], tmp_path: Path
) -> None:
    """With half the answers 5xx, each snapshot still ends as the service says: available, error or gone."""
    disk = VOLUMES[0]
    good, bad = str(uuid.uuid4()), str(uuid.uuid4())
    seeded = (
        SeedSnapshot(id=good, volume_id=disk, status="available"),
        SeedSnapshot(id=bad, volume_id=disk, status="error"),
    )
    emu = await emulator(snapshots=seeded, fault_5xx=0.5, seed=1)
    vanished = str(uuid.uuid4())
    rows = [accepted(1, good), accepted(2, bad), accepted(3, vanished)]
    tally, written = await wait_for(
        emu.url, rows, tmp_path, WaitPlan(timeout=20, interval=0.02, max_interval=0.05)
    )
    assert tally.outcomes == {"available": 1, "snapshot_error": 2}
    final = {r.row: (r.outcome, r.snapshot_status, r.error_code) for r in written}
    assert final == {
        1: (Outcome.AVAILABLE, "available", None),
        2: (Outcome.SNAPSHOT_ERROR, "error", "SNAPSHOT_ERROR"),
        3: (Outcome.SNAPSHOT_ERROR, None, "SNAPSHOT_NOT_FOUND"),
    }
    assert len(written) == 3
    answers = hits(emu, LIST) + hits(emu, SHOW)
    assert sum(n for status, n in answers.items() if status.startswith("5")) > 0
    assert hits(emu, SHOW)["404"] == 1  # gone is confirmed once, by a GET that says so


@pytest.mark.anyio
async def test_an_unreachable_endpoint_stops_the_wait(tmp_path: Path) -> None:
    """No connection: after a few attempts the endpoint is closed and the wait raises RouteClosed."""
    with pytest.raises(RouteClosed, match="cannot be reached"):
        await wait_for(
            CLOSED_PORT, [accepted(1, str(uuid.uuid4()))], tmp_path, WaitPlan(timeout=5, interval=0.01)
        )


@pytest.mark.anyio
async def test_refused_credentials_stop_the_wait(emulator: Callable[..., Any], tmp_path: Path) -> None:
    """A 401 on the first poll raises the route's closure (credentials refused) after one request."""
    emu = await emulator()
    with pytest.raises(RouteClosed, match="credentials refused"):
        await wait_for(
            emu.url, [accepted(1, str(uuid.uuid4()))], tmp_path, WaitPlan(timeout=5, interval=0.01), WRONG
        )
    assert hits(emu, LIST) == {"401": 1}


# --- the sweep, through wait ------------------------------------------------------------------------
def test_sweep_reconciles_a_row_and_reports_a_duplicate_it_cannot_delete(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """wait's sweep: a failed row whose snapshot exists gets an accepted record (reconciled); a duplicate
    still creating cannot be deleted and is reported DELETE_FAILED; a marked snapshot of a disk not in
    the report is left alone."""
    volumes = tuple(SeedVolume(volume_id=VOLUMES[i]) for i in range(3))
    snapshots = (
        SeedSnapshot(id=SNAPS[0], volume_id=VOLUMES[0], name="pre-maint-0", metadata=marker()),
        SeedSnapshot(
            id=SNAPS[3], volume_id=VOLUMES[0], name="pre-maint-0", metadata=marker(), status="creating"
        ),
        SeedSnapshot(id=SNAPS[1], volume_id=VOLUMES[1], name="pre-maint-1", metadata=marker()),
        SeedSnapshot(id=SNAPS[2], volume_id=VOLUMES[2], name="other", metadata=marker()),
    )
    emu = emulator_thread(volumes=volumes, snapshots=snapshots)
    failed = {"outcome": "failed", "snapshot_id": None, "http_status": None, "error_code": "UNCONFIRMED"}
    report = create_report(tmp_path / "create.jsonl", [{}, failed])
    result = invoke(
        ["wait", str(report), "--endpoint", emu.url, "--poll-interval", "0.05", "--wait-timeout", "5s"]
    )
    written = records(report)[2:]
    by_outcome = Counter(r["outcome"] for r in written)
    assert by_outcome == {"accepted": 1, "duplicate_found": 1, "available": 1}, written
    reconciled = next(r for r in written if r["outcome"] == "accepted")
    assert (reconciled["row"], reconciled["snapshot_id"], reconciled["reconciled"]) == (2, SNAPS[1], True)
    duplicate = next(r for r in written if r["outcome"] == "duplicate_found")
    assert (duplicate["row"], duplicate["snapshot_id"], duplicate["error_code"]) == (
        1,
        SNAPS[3],
        "DELETE_FAILED",
    )
    assert "delete failed: 400 EVS.1047" in duplicate["error_message"]
    assert "sweep: 1 extra snapshots of this run found, 0 deleted" in result.output
    assert result.exit_code == 0, result.output
    state = {s["id"]: s["status"] for s in emu.state()["snapshots"]}
    assert state[SNAPS[2]] == "available"
    assert DELETE in emu.state()["requests"]
