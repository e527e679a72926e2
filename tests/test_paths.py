"""Branches of the one request path, each made to happen deterministically (issue 10's list)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from yarl import URL

from orchestrator.api import evs
from orchestrator.api.routes import Router, connect
from orchestrator.config import Connection, Endpoints, Limits
from orchestrator.emulator import ManualClock, SeedSnapshot
from orchestrator.emulator.settings import (
    DEFAULT_DOMAIN,
    DEFAULT_PASSWORD,
    DEFAULT_USER,
)
from orchestrator.models import Outcome, Record
from orchestrator.progress import Progress
from orchestrator.report import ReportWriter
from orchestrator.retry import Verdict
from orchestrator.runner import Runner, RunPlan, _Attempt
from orchestrator.tally import Tally
from orchestrator.waiter import Waiter, WaitPlan
from tests.helpers import (
    AKSK,
    LIST_ROUTE,
    PROJECT,
    csv_manifest,
    invoke,
    last_per_row,
    requests_of,
    snapshot_request,
    volume_ids,
)

PASSWORD_ENV = {
    "OS_USERNAME": DEFAULT_USER,
    "OS_PASSWORD": DEFAULT_PASSWORD,
    "OS_USER_DOMAIN_NAME": DEFAULT_DOMAIN,
}


@contextlib.asynccontextmanager
async def router_for(url: str, environ: dict[str, str], **limits: Any) -> AsyncIterator[Router]:
    connection = Connection(
        endpoints=Endpoints(evs=URL(url), iam=URL(url)), limits=Limits(**limits), environ=environ
    )
    async with contextlib.AsyncExitStack() as stack:
        yield await connect(stack, connection)


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


@pytest.mark.parametrize("answer", [401, 400])
async def test_an_expired_token_is_renewed_and_the_request_resent(
    clocked: Callable[..., Any], clock: ManualClock, answer: int
) -> None:
    """The gateway says the token expired (401, or 400 Common.0013): one IAM renewal, one resend, 200."""
    emu = await clocked(any_volume=True, token_ttl=600, expired_token_answer=answer)
    async with router_for(emu.url, PASSWORD_ENV) as router:
        route = router.route_at(None, "0123456789abcdef0123456789abcdef")
        first = await route.send(evs.show_volume(route.project_id, volume_ids(1)[0]))
        assert first.verdict is Verdict.SUCCESS
        clock.advance(601)  # the emulator's token expired; the client's clock still says fresh
        again = await route.send(evs.show_volume(route.project_id, volume_ids(1)[0]))
        assert again.verdict is Verdict.SUCCESS
        assert route.closed is None
        assert route.counts["checks"] == 3  # the first, the refused one, the resend
    assert emu.world.requests["POST /v3/auth/tokens"]["201"] == 2
    assert emu.world.requests["GET /v2/{project_id}/cloudvolumes/{volume_id}"][str(answer)] == 1


async def test_a_lookup_that_gets_no_answer_is_unknown_not_absent(tmp_path: Path) -> None:
    """A lookup whose connection fails answers None (unknown), never False (surely absent)."""
    async with router_for("http://127.0.0.1:9", AKSK, timeout=2.0) as router:
        route = router.route_at(None, PROJECT)
        with ReportWriter(str(tmp_path / "r.jsonl")) as writer:
            runner = Runner(RunPlan(run_id="r", concurrency=1), router=router, writer=writer, tally=Tally())
            request = snapshot_request(volume_ids(1)[0])
            state = _Attempt()
            assert await runner._look_up(request, route, state) is None
            assert state.lookups == 1


@contextlib.asynccontextmanager
async def fake_iam(handler: Callable[[web.Request], Any]) -> AsyncIterator[str]:
    """A real IAM stand-in on a loopback port, for answers the emulator does not give (5xx, two projects)."""
    app = web.Application()
    app.router.add_get("/v3/projects", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (503, {"error_msg": "busy", "error_code": "IAM.0500"}, "IAM_503"),
        (
            200,
            {"projects": [{"id": "a" * 32, "name": "cn-north-4"}, {"id": "b" * 32, "name": "cn-north-4"}]},
            "PROJECT_AMBIGUOUS",
        ),
    ],
)
async def test_iam_5xx_or_two_projects_fail_the_rows_that_needed_the_lookup(
    emulator: Callable[..., Any], status: int, body: dict[str, Any], code: str
) -> None:
    """The project lookup answers 5xx or names two projects: those rows cannot be routed (no EVS request)."""

    async def handler(_request: web.Request) -> web.Response:
        return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")

    emu = await emulator(any_volume=True)
    async with fake_iam(handler) as iam_url:
        connection = Connection(endpoints=Endpoints(evs=URL(emu.url), iam=URL(iam_url)), environ=AKSK)
        async with contextlib.AsyncExitStack() as stack:
            router = await connect(stack, connection)
            with pytest.raises(Exception) as caught:  # noqa: PT011 - one of two of our classes, checked below
                await router.route_for(None, "cn-north-4")
    assert getattr(caught.value, "code", None) == code
    assert emu.world.requests == {}


def test_validate_online_with_refused_credentials_stops_at_once(
    emulator_thread: Callable[..., Any], write: Callable[..., Path]
) -> None:
    """A wrong secret: at most 2 GETs reach the gateway, one error and the count line, exit 3."""
    ids = volume_ids(100, seed=121)
    emu = emulator_thread(any_volume=True, latency_ms=10)
    result = invoke(
        [
            "validate",
            str(csv_manifest(write, ids)),
            "--online",
            "--endpoint",
            emu.url,
            "--project-id",
            PROJECT,
        ],
        env={"HUAWEICLOUD_SDK_SK": "wrong"},
    )
    assert result.exit_code == 3
    gets = requests_of(emu.state(), "GET /v2/{project_id}/cloudvolumes/{volume_id}")
    assert sum(gets.values()) <= 2
    assert result.stdout.count("\n") <= 12  # no line per row
    assert "credentials refused" in result.stderr


def test_validate_online_against_a_dead_endpoint_stops(write: Callable[..., Path]) -> None:
    """Transport errors on every check: the endpoint is closed after 3 tries, exit 3, no line per row."""
    ids = volume_ids(50, seed=122)
    result = invoke(
        [
            "validate",
            str(csv_manifest(write, ids)),
            "--online",
            "--endpoint",
            "http://127.0.0.1:9",
            "--project-id",
            PROJECT,
            "--backoff-initial",
            "0.01",
            "--backoff-max",
            "0.05",
        ]
    )
    assert result.exit_code == 3
    assert "ENDPOINT_UNREACHABLE" in result.stderr
    assert result.stdout.count("\n") <= 12


def test_progress_line_shows_counts_retries_and_settling() -> None:
    """The progress line: done/total, ok/not ok, rate, ETA, and what is going on (settling rows)."""
    tally = Tally()
    tally.outcomes.update({"accepted": 3, "failed": 1})

    class Settling:
        settling = 2

    progress = Progress(tally, 10, stream=None, runner=Settling())  # type: ignore[arg-type]
    line = progress.line()
    assert line.startswith("4/10 rows  ok 3  not ok 1")
    assert "ETA" in line
    assert "settling 2" in line


def test_progress_on_a_run(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--progress draws the line on stderr and clears it at the end."""
    emu = emulator_thread(any_volume=True, latency_ms=100)
    report = tmp_path / "r.jsonl"
    args = [
        "create",
        str(csv_manifest(write, volume_ids(30, seed=123))),
        "--endpoint",
        emu.url,
        "--project-id",
        PROJECT,
        "--report",
        str(report),
        "--progress",
        "--concurrency",
        "4",
    ]
    result = invoke(args)
    assert result.exit_code == 0
    assert "rows/s" in result.stderr
    assert "\r\x1b[2K" in result.stderr
    assert len(last_per_row(report)) == 30
    # Every row was sent once and answered 202: no snapshot can be doubled, so the sweep lists nothing.
    assert requests_of(emu.state(), LIST_ROUTE)["200"] == 0


def test_create_warns_before_sending_when_the_quota_is_short(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """5 rows, 3 snapshots left in the quota: a warning before the first create; 2 rows SNAPSHOT_LIMIT_REACHED."""
    emu = emulator_thread(any_volume=True, snapshot_quota=3)
    report = tmp_path / "r.jsonl"
    args = [
        "create",
        str(csv_manifest(write, volume_ids(5, seed=124))),
        "--endpoint",
        emu.url,
        "--project-id",
        PROJECT,
        "--report",
        str(report),
        "--concurrency",
        "1",
    ]
    result = invoke(args)
    assert result.exit_code == 1
    assert "only 3 snapshots left" in result.stderr
    final = last_per_row(report)
    refused = [r for r in final.values() if r["outcome"] == "rejected"]
    assert [r["error_code"] for r in refused] == ["SNAPSHOT_LIMIT_REACHED"] * 2
    assert all("prune" in r["error_message"] for r in refused)
