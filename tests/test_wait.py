"""wait / create --wait: final states match the emulator row by row, within the N/1000 request bound."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
import pytest
from yarl import URL

from orchestrator.api import evs
from orchestrator.api.credentials import AkSkAuth
from orchestrator.api.routes import Router, connect
from orchestrator.config import Connection, Endpoints, WaitPlan
from orchestrator.emulator import ManualClock, RunningEmulator, SeedSnapshot
from orchestrator.emulator.settings import (
    DEFAULT_AK,
    DEFAULT_DOMAIN,
    DEFAULT_PASSWORD,
    DEFAULT_SK,
    DEFAULT_USER,
)
from orchestrator.errors import RouteClosed
from orchestrator.models import Outcome, Record, RunHeader
from orchestrator.report import ReportWriter, read_records
from orchestrator.tally import Tally
from orchestrator.waiter import Waiter
from tests.helpers import (
    AKSK,
    API_IDS,
    CLOSED_PORT,
    LIST,
    LIST_ROUTE,
    PROJECT,
    RUN,
    SHOW,
    VOLUMES,
    WRONG,
    call,
    cli_args,
    create_args,
    csv_manifest,
    edge_record,
    hits,
    invoke,
    last_per_row,
    records,
    router_for,
    server_errors,
    snapshot_request,
    until,
    volume_ids,
)

AKSK_NO_TOKEN = {"OS_AUTH_TOKEN": "", **AKSK}


def manifest(write: Callable[..., Path], ids: list[str]) -> Path:
    return write("m.csv", "volume_id\n" + "".join(f"{i}\n" for i in ids))


# More than one page of snapshots (1,000 a page); listed newest first, so SEEDED[0] is on page 2.
SEEDED = tuple(
    SeedSnapshot(id=snapshot_id, volume_id=volume_id, name=f"s{index}")
    for index, (snapshot_id, volume_id) in enumerate(
        zip(volume_ids(1001, seed=0xED72), volume_ids(1001, seed=0xED73), strict=True)
    )
)


SHOW_ROUTE = "GET /v2/{project_id}/cloudsnapshots/{snapshot_id}"


async def wait_throttled(
    emulator: Callable[..., Any], clock: ManualClock, tmp_path: Path, pending: list[int]
) -> tuple[RunningEmulator, dict[str, str]]:
    """Wait for the SEEDED snapshots ``pending`` names when only the first request of all gets through
    (the emulator's one token, its clock standing still); returns the emulator and the outcomes.

    The 429s name a limit of 20 a second: the client paces its next request 50 ms on, and after a
    second 429 at the first estimate (about 1 a second); the wait's timeout (50 ms) ends it before a
    round waits for that (a 1 a second limit, or a longer timeout, cost a second of pacing)."""
    emu = await emulator(clock=clock, rate_limit=20.0, burst=1, snapshots=SEEDED)
    tally = Tally()
    async with router_for(emu.url, AKSK) as router:
        with ReportWriter(str(tmp_path / "w.jsonl")) as writer:
            waiter = Waiter(WaitPlan(timeout=0.05, interval=0.05), router=router, writer=writer, tally=tally)
            waiter.load(
                [
                    edge_record(row, snapshot_id=SEEDED[index].id, snapshot_status="creating")
                    for row, index in enumerate(pending, start=1)
                ]
            )
            with anyio.fail_after(5):
                await waiter.run()
    return emu, {r["snapshot_id"]: r["outcome"] for r in records(tmp_path / "w.jsonl")}


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


def record(row: int, volume_id: str, snapshot_id: str) -> Record:
    return Record(
        run_id="r",
        row=row,
        volume_id=volume_id,
        project_id=PROJECT,
        region=None,
        name=None,
        outcome=Outcome.ACCEPTED,
        snapshot_id=snapshot_id,
        started_at="2026-11-27T00:00:00.000Z",
        finished_at="2026-11-27T00:00:00.000Z",
        elapsed_ms=0,
    )


def test_create_wait_matches_emulator_state(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """create --wait: each row's final record is the emulator's final status of its snapshot."""
    ids = volume_ids(40, seed=61)
    emu = emulator_thread(any_volume=True, creating_seconds=0.3, fault_snapshot_error=0.25, seed=61)
    report = tmp_path / "r.jsonl"
    result = invoke(
        [
            "create",
            str(manifest(write, ids)),
            "--endpoint",
            emu.url,
            "--project-id",
            PROJECT,
            "--report",
            str(report),
            "--wait",
            "--poll-interval",
            "0.05",  # rounds at 0.05, 0.125, 0.24, 0.41 s: creating (0.3 s) ends within 5 rounds
        ]
    )
    assert result.exit_code == 1, result.output  # some snapshots end in error
    final = last_per_row(report)
    state = {s["id"]: s["status"] for s in emu.state()["snapshots"]}
    assert sorted(final) == list(range(1, 41))
    for record in final.values():
        expected = "available" if state[record["snapshot_id"]] == "available" else "snapshot_error"
        assert record["outcome"] == expected
        assert record["snapshot_status"] == state[record["snapshot_id"]]
    outcomes = Counter(r["outcome"] for r in final.values())
    assert outcomes["snapshot_error"] > 0
    assert outcomes["available"] > 0
    lists = sum(emu.state()["requests"]["GET /v2/{project_id}/cloudsnapshots/detail"].values())
    assert lists <= 12  # one page per round: 40 pending is far below 1000
    assert "GET /v2/{project_id}/cloudsnapshots/{snapshot_id}" not in emu.state()["requests"]


def test_wait_command_timeout_and_vanished(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path, clock: ManualClock
) -> None:
    """wait: a deleted snapshot is SNAPSHOT_NOT_FOUND; ones still creating at the timeout are wait_timeout."""
    ids = volume_ids(4, seed=62)
    fast = emulator_thread(clock=clock, any_volume=True, creating_seconds=0.0)
    report = tmp_path / "r.jsonl"
    args = ["--endpoint", fast.url, "--project-id", PROJECT, "--report", str(report)]
    assert invoke(["create", str(manifest(write, ids)), *args]).exit_code == 0
    doomed = last_per_row(report)[1]["snapshot_id"]

    async def delete() -> None:
        async with aiohttp.ClientSession() as http:
            path = f"/v2/{PROJECT}/cloudsnapshots/{doomed}"
            status, _, _ = await call(http, fast, "DELETE", path, auth=AkSkAuth(DEFAULT_AK, DEFAULT_SK))
            assert status == 202

    anyio.run(delete)
    clock.advance(fast.settings.deleting_seconds)  # the deletion is over: the snapshot is gone
    result = invoke(["wait", str(report), "--endpoint", fast.url, "--poll-interval", "0.1"])
    assert result.exit_code == 1, result.output
    final = last_per_row(report)
    assert (final[1]["outcome"], final[1]["error_code"]) == ("snapshot_error", "SNAPSHOT_NOT_FOUND")
    assert {final[n]["outcome"] for n in (2, 3, 4)} == {"available"}
    slow = emulator_thread(any_volume=True, creating_seconds=60)
    report2 = tmp_path / "r2.jsonl"
    args2 = ["--endpoint", slow.url, "--project-id", PROJECT, "--report", str(report2)]
    assert invoke(["create", str(manifest(write, volume_ids(3, seed=63))), *args2]).exit_code == 0
    result = invoke(
        ["wait", str(report2), "--endpoint", slow.url, "--wait-timeout", "0.2s", "--poll-interval", "0.05"]
    )
    assert result.exit_code == 1
    assert {(r["outcome"], r["snapshot_status"]) for r in last_per_row(report2).values()} == {
        ("wait_timeout", "creating")
    }


@pytest.mark.no_cover
def test_wait_outlives_token_lifetime(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A wait longer than the IAM token's lifetime keeps working: tokens are renewed."""
    ids = volume_ids(10, seed=64)
    # Tokens of 1 s (the shortest lifetime the tool accepts) are renewed with a quarter left, so a third
    # token needs more than 1.5 s of requests. Polls at 0.1 s (growing by half: rounds at 0.81 and
    # 1.32 s) ask for the second one within 0.1 s of its renewal and the third at the 2.08 s round, the
    # first after creating (2 s) ends.
    emu = emulator_thread(any_volume=True, creating_seconds=2.0, token_ttl=1.0)
    report = tmp_path / "r.jsonl"
    env = {
        "HUAWEICLOUD_SDK_AK": "",
        "OS_USERNAME": DEFAULT_USER,
        "OS_PASSWORD": DEFAULT_PASSWORD,
        "OS_USER_DOMAIN_NAME": DEFAULT_DOMAIN,
    }
    result = invoke(
        [
            "create",
            str(manifest(write, ids)),
            "--endpoint",
            emu.url,
            "--iam-endpoint",
            emu.url,
            "--project-id",
            PROJECT,
            "--report",
            str(report),
            "--wait",
            "--poll-interval",
            "0.1",
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert {r["outcome"] for r in last_per_row(report).values()} == {"available"}
    assert emu.state()["requests"]["POST /v3/auth/tokens"]["201"] >= 3


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
async def test_poll_round_costs_about_n_over_1000(
    emulator: Callable[..., Any], clock: ManualClock, tmp_path: Path
) -> None:
    """2,500 pending snapshots in one project cost 3 list requests a round (pages of 1000), not 2,500."""
    emu = await emulator(clock=clock, any_volume=True, creating_seconds=1.5, seed=65)
    ids = volume_ids(2500, seed=65)
    # The snapshots are made in the emulator's world directly (2,500 signed POSTs would be most of the
    # test's cost); the waiter under test still polls them over HTTP.
    created: list[Record] = []
    for row, volume_id in enumerate(ids, start=1):
        volume = emu.world.volume(volume_id)
        assert volume is not None
        snapshot = emu.world.create_snapshot(volume=volume, name=f"n{row}", description=None, metadata={})
        created.append(
            Record(
                run_id="r",
                row=row,
                volume_id=volume_id,
                project_id=PROJECT,
                region=None,
                name=f"n{row}",
                outcome=Outcome.ACCEPTED,
                snapshot_id=snapshot.id,
                snapshot_status="creating",
                attempts=1,
                started_at="2026-11-27T00:00:00.000Z",
                finished_at="2026-11-27T00:00:00.000Z",
                elapsed_ms=1,
            )
        )
    connection = Connection(endpoints=Endpoints(evs=URL(emu.url)), environ=AKSK_NO_TOKEN)
    async with contextlib.AsyncExitStack() as stack:
        router = await connect(stack, connection)
        tally = Tally()
        with ReportWriter(str(tmp_path / "r.jsonl")) as writer:
            # The emulator's clock stands still through the first round (all 2,500 pending), then
            # moves past creating: the next round finds every snapshot available.
            waiter = Waiter(
                WaitPlan(timeout=30, interval=0.05),
                router=router,
                writer=writer,
                tally=tally,
                on_round=lambda _requests, _waiting: clock.advance(1.5),
            )
            waiter.load(created)
            await waiter.run()
    assert tally.outcomes == {"available": 2500}
    assert waiter.round_requests[0] == math.ceil(2500 / 1000)  # the round that found all 2,500 pending
    assert waiter.round_requests
    assert max(waiter.round_requests) <= math.ceil(2500 / 1000)


def action_report(path: Path, command: str) -> Path:
    """A prune, cleanup or rollback report: its run header and one record."""
    head = {
        "type": "run",
        "run_id": "20261127T035432Z-abc123",
        "command": command,
        "manifest": "m.csv",
        "rows": 0,
        "digest": "",
        "shape": {},
        "started_at": "2026-11-27T03:54:32.000Z",
    }
    line = {
        "run_id": "20261127T035432Z-abc123",
        "command": command,
        "key": "row:1" if command == "rollback" else "s1",
        "outcome": "planned",
        "row": 1 if command == "rollback" else None,
        "started_at": "2026-11-27T03:54:32.100Z",
        "finished_at": "2026-11-27T03:54:32.200Z",
    }
    path.write_bytes(orjson.dumps(head) + b"\n" + orjson.dumps(line) + b"\n")
    return path


@pytest.mark.parametrize("command", ["prune", "cleanup", "rollback"])
def test_wait_says_what_kind_of_report_it_was_given(
    command: str, emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """wait of a prune, cleanup or rollback report names the kind (exit 2) and sends nothing."""
    emu = emulator_thread(any_volume=True)
    report = action_report(tmp_path / f"{command}.jsonl", command)
    result = invoke(["wait", str(report), "--endpoint", emu.url])
    assert result.exit_code == 2, result.output
    assert f"{report} is a {command} report: wait reads the report of a create run" in result.stderr
    assert emu.state()["requests"] == {}


@pytest.mark.no_cover
def test_wait_counts_rows_without_a_record_against_the_header(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A create report cut to 1 of 3 records: wait settles that row, names rows 2 and 3, exits 1."""
    emu = emulator_thread(any_volume=True, creating_seconds=0.0)
    report = tmp_path / "r.jsonl"
    args = ["--endpoint", emu.url, "--project-id", PROJECT, "--report", str(report)]
    assert invoke(["create", str(manifest(write, volume_ids(3, seed=66))), *args]).exit_code == 0
    lines = report.read_bytes().splitlines(keepends=True)
    first = next(n for n, line in enumerate(lines) if n and b'"outcome":"sending"' not in line)
    report.write_bytes(b"".join(lines[: first + 1]))  # as a kill leaves it: the journal, one row record
    result = invoke(["wait", str(report), "--endpoint", emu.url, "--poll-interval", "0.1"])
    assert result.exit_code == 1, result.output
    assert "2 of 3 rows have no record (rows 2, 3)" in result.stderr
    assert "run the same create command with --resume" in result.stderr
    assert {row: r["outcome"] for row, r in last_per_row(report).items()} == {1: "available"}


def unsent_report(kind: str, write: Callable[..., Path], tmp_path: Path, url: str) -> Path:
    """A create report of a --dry-run (against the emulator at ``url``) or of --emulator (in-process)."""
    report = tmp_path / f"{kind}.jsonl"
    if kind == "dry-run":
        args = ["--endpoint", url, "--project-id", PROJECT, "--dry-run"]
        source = manifest(write, volume_ids(2, seed=67))
    else:
        args = ["--emulator"]
        source = Path(__file__).parent.parent / "samples" / "volumes.csv"
    invoke(["create", str(source), "--report", str(report), *args])
    assert orjson.loads(report.read_bytes().splitlines()[0])[kind.replace("-", "_")] is True
    return report


@pytest.mark.parametrize("kind", ["dry-run", "emulator"])
@pytest.mark.parametrize("command", ["wait", "cleanup", "rollback"])
def test_reports_of_dry_runs_and_of_the_demo_emulator_are_refused(
    kind: str, command: str, emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """wait, cleanup and rollback of a --dry-run or --emulator report: exit 2 with the reason, no request."""
    emu = emulator_thread(any_volume=True)
    report = unsent_report(kind, write, tmp_path, emu.url)
    before = emu.state()["requests"]
    extra = [] if command == "wait" else ["--report", str(tmp_path / "out.jsonl"), "--apply"]
    result = invoke([command, str(report), "--endpoint", emu.url, *extra])
    assert result.exit_code == 2, result.output
    reason = "nothing was sent" if kind == "dry-run" else "in-process emulator that ended with that run"
    assert reason in result.stderr
    assert "Traceback" not in result.output
    assert emu.state()["requests"] == before
    assert not (tmp_path / "out.jsonl").exists()


def test_wait_without_endpoint_or_region_is_a_usage_error(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A report made with --endpoint holds no region: wait without --endpoint says what to pass, sends nothing."""
    emu = emulator_thread(any_volume=True)
    report = tmp_path / "r.jsonl"
    assert (
        invoke(create_args(emu.url, csv_manifest(write, API_IDS[:1]), report, "--settle", "0.5")).exit_code
        == 0
    )
    before = emu.state()["requests"]
    result = invoke(["wait", str(report), "--poll-interval", "0.05"])
    assert result.exit_code == 2, result.output
    assert "a row has no region and no --endpoint was given" in result.stderr
    assert emu.state()["requests"] == before


def test_create_wait_needs_a_report_file(
    emulator_thread: Callable[..., Any], write: Callable[..., Path]
) -> None:
    """create --wait --report -: exit 2 before anything is sent (--wait reads the report back)."""
    emu = emulator_thread(any_volume=True)
    manifest = csv_manifest(write, volume_ids(1, seed=702))
    result = invoke(create_args(emu.url, manifest, Path("-"), wait=True))
    assert result.exit_code == 2
    assert "--wait reads the report back, so it needs a --report file" in result.stderr
    assert emu.state()["requests"] == {}


def test_wait_for_a_missing_report_is_a_usage_error(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """wait on a report that does not exist: exit 2 naming it, nothing sent."""
    emu = emulator_thread()
    missing = tmp_path / "missing.jsonl"
    result = invoke(cli_args("wait", missing, endpoint=emu.url))
    assert result.exit_code == 2
    assert f"{missing}: no such report" in result.stderr
    assert emu.state()["requests"] == {}


async def test_a_throttled_second_page_settles_the_rows_of_the_first(
    emulator: Callable[..., Any], clock: ManualClock, tmp_path: Path
) -> None:
    """101 rows in a project of 1,001 snapshots, read page by page: the second page is throttled, so the
    100 rows on the first settle and the one on the second ends wait_timeout."""
    emu, outcomes = await wait_throttled(emulator, clock, tmp_path, list(range(101)))
    assert outcomes == {
        SEEDED[0].id: "wait_timeout",
        **{SEEDED[index].id: "available" for index in range(1, 101)},
    }
    assert hits(emu, LIST_ROUTE)["200"] == 1
    assert hits(emu, LIST_ROUTE)["429"] >= 1


async def test_a_throttled_query_by_id_falls_back_to_a_look_at_the_snapshot(
    emulator: Callable[..., Any], clock: ManualClock, tmp_path: Path
) -> None:
    """One row in a project of 1,001 snapshots is asked for by id; that query is throttled, so the
    snapshot is looked at by GET (throttled too) and the row ends wait_timeout, its status unknown."""
    emu, outcomes = await wait_throttled(emulator, clock, tmp_path, [500])
    assert outcomes == {SEEDED[500].id: "wait_timeout"}
    assert hits(emu, LIST_ROUTE)["200"] == 1
    assert hits(emu, SHOW_ROUTE)["429"] >= 1
    assert "200" not in hits(emu, SHOW_ROUTE)


async def test_a_snapshot_deleted_between_pages_shifts_a_row_off_them_and_a_get_finds_it(
    emulator: Callable[..., Any], clock: ManualClock, tmp_path: Path
) -> None:
    """Someone deletes a listed snapshot between the two pages: the second page comes back empty, so the
    row that moved to the first page is looked at by GET, and found available."""
    emu = await emulator(clock=clock, latency_ms=30, snapshots=SEEDED)

    async def delete_one_already_listed() -> None:
        await until(lambda: hits(emu, LIST_ROUTE)["200"] == 1)
        emu.world.delete_snapshot(emu.world.snapshots[SEEDED[1000].id])
        clock.advance(emu.world.settings.deleting_seconds)

    tally = Tally()
    async with router_for(emu.url, AKSK) as router:
        with ReportWriter(str(tmp_path / "w.jsonl")) as writer:
            waiter = Waiter(WaitPlan(timeout=5.0, interval=0.05), router=router, writer=writer, tally=tally)
            waiter.load([edge_record(row, snapshot_id=SEEDED[row - 1].id) for row in range(1, 102)])
            async with anyio.create_task_group() as group:
                group.start_soon(delete_one_already_listed)
                await waiter.run()
    assert dict(tally.outcomes) == {"available": 101}
    assert waiter.round_requests == [3]  # two pages and one GET: one round
    assert hits(emu, LIST_ROUTE) == Counter({"200": 2})
    assert hits(emu, SHOW_ROUTE) == Counter({"200": 1})


async def test_a_look_at_a_snapshot_refused_for_the_credentials_stops_the_wait(
    emulator: Callable[..., Any], clock: ManualClock, tmp_path: Path
) -> None:
    """The query by id is throttled and the token expires before the GET that stands in for it: the
    401 closes the route and the wait stops (RouteClosed, exit 3), the row left as it was."""
    # The 429 names 20 a second: the GET is paced 50 ms after it, long after the token expired (the
    # expiry waits 5 ms at most for the 429, in this loop).
    emu = await emulator(clock=clock, latency_ms=30, rate_limit=20.0, burst=1, snapshots=SEEDED)
    token, _, _ = emu.world.issue_token()

    async def expire_the_token() -> None:
        await until(lambda: hits(emu, LIST_ROUTE)["429"] == 1)
        clock.advance(emu.world.settings.token_ttl + 1)

    path = tmp_path / "w.jsonl"
    async with router_for(emu.url, {"OS_AUTH_TOKEN": token}) as router:
        with ReportWriter(str(path)) as writer:
            waiter = Waiter(WaitPlan(timeout=5.0, interval=0.05), router=router, writer=writer, tally=Tally())
            waiter.load([edge_record(1, snapshot_id=SEEDED[500].id)])
            with pytest.RaisesGroup(pytest.RaisesExc(RouteClosed, match="APIGW.0301: credentials refused: ")):
                async with anyio.create_task_group() as group:
                    group.start_soon(expire_the_token)
                    await waiter.run()
    assert records(path) == []
    assert hits(emu, SHOW_ROUTE) == Counter({"401": 1})


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
        emu.url, rows, tmp_path, WaitPlan(timeout=20, interval=0.01, max_interval=0.02)
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
    assert server_errors(answers) > 0
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


async def test_wait_asks_by_id_in_a_large_project(
    clocked: Callable[..., Any], clock: ManualClock, tmp_path: Path
) -> None:
    """2,500 snapshots in the project, 3 pending: each round is the first page plus one by-id query."""
    volumes = volume_ids(2503, seed=120)
    seeded = tuple(
        SeedSnapshot(id=f"5eed0000-0000-4000-8000-{index:012d}", volume_id=volume, name=f"s{index}")
        for index, volume in enumerate(volumes[:2500])
    )
    emu = await clocked(any_volume=True, snapshots=seeded, creating_seconds=1.0)
    pending = []
    async with router_for(emu.url, AKSK) as router:
        route = router.route_at(None, PROJECT)
        for row, volume in enumerate(volumes[2500:], start=1):
            request = snapshot_request(volume, row, line=row, name=f"n{row}")
            reply = await route.send(evs.create_snapshot(PROJECT, request, "run"))
            pending.append(record(row, volume, reply.answer.body["snapshot"]["id"]))
        clock.advance(2.0)
        tally = Tally()
        with ReportWriter(str(tmp_path / "r.jsonl")) as writer:
            waiter = Waiter(WaitPlan(timeout=5, interval=0.05), router=router, writer=writer, tally=tally)
            waiter.load(pending)
            await waiter.run()
    assert tally.outcomes == Counter({"available": 3})
    assert waiter.round_requests == [2]
    assert "GET /v2/{project_id}/cloudsnapshots/{snapshot_id}" not in emu.world.requests
