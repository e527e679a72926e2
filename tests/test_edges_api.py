"""Edges of the client, the CLI boundary and the emulator: IAM that fails or refuses, routes that close
under concurrency, proxies, truncated answers, signals, locks, metrics and the emulator's own refusals."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import click
import orjson
import pytest
from aiohttp import web
from click.testing import CliRunner
from yarl import URL

import orchestrator.emulator as emulator_package
from orchestrator import metrics
from orchestrator.api import evs, signing
from orchestrator.api.credentials import OutgoingRequest, host_header
from orchestrator.api.iam import IamClient, PasswordAuth
from orchestrator.api.routes import connect
from orchestrator.api.safe import remaining_quota, snapshot_pages
from orchestrator.api.session import Caller
from orchestrator.cli import Main
from orchestrator.config import Connection, Endpoints
from orchestrator.console import Console
from orchestrator.emulator import (
    EmulatorSettings,
    EmulatorThread,
    ManualClock,
    SeedSnapshot,
    SeedVolume,
    fetch_state,
    serve_forever,
    serving,
)
from orchestrator.emulator.settings import (
    DEFAULT_AK,
    DEFAULT_DOMAIN,
    DEFAULT_PASSWORD,
    DEFAULT_SK,
    DEFAULT_USER,
)
from orchestrator.errors import (
    CredentialsRefused,
    ProjectLookupFailed,
    RouteClosed,
    TransportError,
    UsageError,
)
from orchestrator.lock import RunLock, manifest_lock
from orchestrator.retry import Verdict
from orchestrator.signals import cancel_on_signal, drain_on_signal
from orchestrator.tally import Tally
from tests.helpers import (
    AKSK,
    CLOSED_PORT,
    PROJECT,
    QUICK,
    TOKEN,
    TOKEN_ENV,
    WRONG,
    call,
    create_args,
    csv_manifest,
    hits,
    invoke,
    records,
    routed,
    snapshot_request,
    volume_ids,
)

OTHER_PROJECT = "fedcba9876543210fedcba9876543210"
REGION = "cn-north-4"
IDS = volume_ids(3, seed=4242)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def answering(status: int, body: object) -> Handler:
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")

    return handler


@contextlib.asynccontextmanager
async def stand_in(routes: dict[str, Handler]) -> AsyncIterator[tuple[str, Counter[str]]]:
    """A real server on a loopback port for answers the emulator never gives; counts each route's hits."""
    seen: Counter[str] = Counter()
    app = web.Application()
    for key, handler in routes.items():
        method, path = key.split(" ", 1)

        async def counted(
            request: web.Request, key: str = key, handler: Handler = handler
        ) -> web.StreamResponse:
            seen[key] += 1
            return await handler(request)

        app.router.add_route(method, path, counted)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", seen
    finally:
        await runner.cleanup()


def password_auth(
    session: aiohttp.ClientSession, url: str, clock: Callable[[], float]
) -> tuple[PasswordAuth, IamClient]:
    iam = IamClient(Caller(session, URL(url), timeout=5))
    auth = PasswordAuth(
        user=DEFAULT_USER, password=DEFAULT_PASSWORD, domain=DEFAULT_DOMAIN, iam=iam, clock=clock
    )
    return auth, iam


# --- IAM: password tokens and project lookups --------------------------------------------------------
async def test_a_password_token_outlives_an_unreachable_iam() -> None:
    """Due for renewal while IAM is unreachable: the old token is used until it expires, then the error."""
    now = [0.0]
    async with aiohttp.ClientSession() as session:
        async with serving(EmulatorSettings(token_ttl=100.0)) as emu:  # renewed at 75 s, expires at 100 s
            auth, iam = password_auth(session, emu.url, lambda: now[0])
            first = await auth.token_for(PROJECT)
            # A 401 for a token this one already replaced: the current token is kept, IAM not asked.
            assert auth.forget(PROJECT, "an-older-token") is True
            assert await auth.token_for(PROJECT) == first
            assert iam.requests == 1
        now[0] = 80.0
        assert await auth.token_for(PROJECT) == first  # IAM is gone; the token still works
        assert iam.requests == 2
        now[0] = 100.5
        with pytest.raises(TransportError):
            await auth.token_for(PROJECT)
    assert auth.refused is None


async def test_a_password_token_needs_a_project_scope(emulator: Callable[..., Any]) -> None:
    """A request without a project cannot carry a project-scoped token: a ValueError, IAM not asked."""
    emu = await emulator()
    async with aiohttp.ClientSession() as session:
        auth, iam = password_auth(session, emu.url, lambda: 0.0)
        request = OutgoingRequest(method="GET", url=URL(emu.url), headers={}, body=b"", project_id=None)
        with pytest.raises(ValueError, match="scoped to a project"):
            await auth.authorize(request)
    assert "X-Auth-Token" not in request.headers
    assert iam.requests == 0
    assert emu.world.requests == {}


async def test_iam_answering_5xx_to_a_token_request_is_a_transport_error() -> None:
    """IAM answers 503 to the password token request: a TransportError (retryable), not a refusal."""
    busy = answering(503, {"error_msg": "busy", "error_code": "IAM.0500"})
    async with stand_in({"POST /v3/auth/tokens": busy}) as (url, seen), aiohttp.ClientSession() as session:
        auth, iam = password_auth(session, url, lambda: 0.0)
        with pytest.raises(TransportError) as caught:
            await auth.token_for(PROJECT)
    assert caught.value.code == "IAM_503"
    assert auth.refused is None
    assert iam.requests == 1
    assert seen == {"POST /v3/auth/tokens": 1}


async def test_both_project_lookups_forbidden(emulator: Callable[..., Any]) -> None:
    """403 from GET /v3/projects and from GET /v3/auth/projects: PROJECT_LOOKUP_FORBIDDEN, not a refusal."""
    denied = answering(403, {"error": {"code": 403, "message": "Policy doesn't allow it."}})
    emu = await emulator(any_volume=True)
    routes = {"GET /v3/projects": denied, "GET /v3/auth/projects": denied}
    async with stand_in(routes) as (iam_url, seen), contextlib.AsyncExitStack() as stack:
        connection = Connection(endpoints=Endpoints(evs=URL(emu.url), iam=URL(iam_url)), environ=AKSK)
        router = await connect(stack, connection)
        with pytest.raises(ProjectLookupFailed) as caught:
            await router.route_for(None, REGION)
        assert router.closures() == []
    assert caught.value.code == "PROJECT_LOOKUP_FORBIDDEN"
    assert "give project_id in the row or --project-id" in caught.value.message
    assert seen == {"GET /v3/projects": 1, "GET /v3/auth/projects": 1}
    assert emu.world.requests == {}


async def test_a_project_lookup_with_wrong_keys_is_a_refusal(emulator: Callable[..., Any]) -> None:
    """Wrong AK/SK: IAM answers the project lookup 401, which closes the run (kept, asked once)."""
    emu = await emulator(any_volume=True)
    connection = Connection(endpoints=Endpoints(evs=URL(emu.url), iam=URL(emu.url)), environ=WRONG)
    async with contextlib.AsyncExitStack() as stack:
        router = await connect(stack, connection)
        for _ in range(2):
            with pytest.raises(CredentialsRefused, match="IAM \\(project lookup\\) answered 401"):
                await router.route_for(None, REGION)
        [closure] = router.closures()
    assert closure.code == "APIGW.0301"
    assert hits(emu, "GET /v3/projects") == {"401": 1}
    assert router.counts() == {"iam": 1}


# --- routes ------------------------------------------------------------------------------------------
async def test_a_row_with_neither_project_nor_region_cannot_be_routed(emulator: Callable[..., Any]) -> None:
    """A row with neither project nor region: a UsageError naming the region, no route made, nothing sent."""
    emu = await emulator()
    connection = Connection(endpoints=Endpoints(evs=URL(emu.url)), environ=AKSK)
    async with contextlib.AsyncExitStack() as stack:
        router = await connect(stack, connection)
        with pytest.raises(UsageError, match="needs a region"):
            await router.route_for(None, None)
    assert router.routes == {}
    assert emu.world.requests == {}


async def test_an_unreachable_endpoint_closes_every_project_on_it() -> None:
    """Routes of two projects share their endpoint: connect failures on one close the other, unsent."""
    connection = Connection(endpoints=Endpoints(evs=URL(CLOSED_PORT)), environ=AKSK)
    async with contextlib.AsyncExitStack() as stack:
        router = await connect(stack, connection)
        first = router.route_at(None, PROJECT)
        second = router.route_at(None, OTHER_PROJECT)
        for _ in range(3):
            with pytest.raises(TransportError):
                await first.send(evs.show_volume(PROJECT, IDS[0]))
        with pytest.raises(RouteClosed) as caught:
            await second.send(evs.show_volume(OTHER_PROJECT, IDS[0]))
    assert caught.value.code == "ENDPOINT_UNREACHABLE"
    assert sum(second.counts.values()) == 0
    assert [closure.code for closure in router.closures()] == ["ENDPOINT_UNREACHABLE"]


async def test_a_403_before_anything_succeeded_closes_the_route(emulator: Callable[..., Any]) -> None:
    """The first answer on a route is a 403: the route closes; the next call is refused unsent."""
    emu = await emulator(any_volume=True)
    request = snapshot_request(IDS[0], metadata={"__system__encrypted": "1"})
    async with routed(emu.url) as route:
        with pytest.raises(RouteClosed) as refused:
            await route.send(evs.create_snapshot(PROJECT, request, "run-1"))
        assert refused.value.answer is not None
        assert refused.value.answer.status == 403
        with pytest.raises(RouteClosed, match=r"credentials refused: .* answered 403 EVS\.5403"):
            await route.send(evs.show_volume(PROJECT, IDS[0]))
    assert hits(emu, "POST /v2/{project_id}/cloudsnapshots") == {"403": 1}
    assert hits(emu, "GET /v2/{project_id}/cloudvolumes/{volume_id}") == {}


async def test_concurrent_refusals_keep_the_first_closure(
    clocked: Callable[..., Any], clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    """A fixed token expires while two requests are in flight on a proven route: both are refused, and
    the route keeps one closure."""
    emu = await clocked(token_ttl=60.0, any_volume=True)
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": DEFAULT_USER,
                        "password": DEFAULT_PASSWORD,
                        "domain": {"name": DEFAULT_DOMAIN},
                    }
                },
            },
            "scope": {"project": {"id": PROJECT}},
        }
    }
    status, _, headers = await call(http, emu, "POST", "/v3/auth/tokens", body=body, auth=False)
    assert status == 201
    environ = {"OS_AUTH_TOKEN": headers["X-Subject-Token"], "HUAWEICLOUD_SDK_PROJECT_ID": PROJECT}
    async with routed(emu.url, environ) as route:
        assert (await route.send(evs.show_volume(PROJECT, IDS[0]))).verdict is Verdict.SUCCESS
        clock.advance(61)
        replies: list[Any] = []

        async def one(volume_id: str) -> None:
            try:
                await route.send(evs.show_volume(PROJECT, volume_id))
            except RouteClosed as exc:
                replies.append(exc.answer.status if exc.answer is not None else None)

        async with anyio.create_task_group() as group:
            group.start_soon(one, IDS[1])
            group.start_soon(one, IDS[2])
        first = route.closure
        assert first is not None
        assert replies == [401, 401]  # each one refused, with its answer
        with pytest.raises(RouteClosed):
            route.check_open()
    assert first.message.startswith("credentials refused:")
    assert hits(emu, "GET /v2/{project_id}/cloudvolumes/{volume_id}") == {"200": 1, "401": 2}


# --- safe calls --------------------------------------------------------------------------------------
async def test_snapshot_pages_follow_the_count_past_one_page(emulator: Callable[..., Any]) -> None:
    """1001 snapshots: two pages (1000 and 1), two list requests."""
    seeded = tuple(
        SeedSnapshot(id=snapshot_id, volume_id=IDS[0]) for snapshot_id in volume_ids(evs.PAGE + 1, seed=77)
    )
    emu = await emulator(snapshots=seeded)
    async with routed(emu.url) as route:
        pages = [page async for page in snapshot_pages(route, QUICK)]
    assert [len(page) for page in pages] == [evs.PAGE, 1]
    assert {item.id for page in pages for item in page} == {seed.id for seed in seeded}
    assert hits(emu, "GET /v2/{project_id}/cloudsnapshots/detail") == {"200": 2}


async def test_a_quota_without_usage_figures_is_unknown() -> None:
    """A service that answers the quota as a bare number (no usage): the quota is unknown (None)."""
    bare = answering(200, {"quota_set": {"id": PROJECT, "snapshots": 10}})
    quota = {f"GET /v2/{PROJECT}/os-quota-sets/{PROJECT}": bare}
    async with stand_in(quota) as (url, seen), routed(url) as route:
        assert await remaining_quota(route, QUICK) is None
    assert sum(seen.values()) == 1


# --- the HTTP session --------------------------------------------------------------------------------
def test_create_goes_through_the_environment_proxy(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """HTTP_PROXY names the emulator; the endpoint itself does not listen: the run succeeds through it."""
    emu = emulator_thread(any_volume=True)
    report = tmp_path / "r.jsonl"
    proxy = {"HTTP_PROXY": emu.url, "http_proxy": emu.url, "NO_PROXY": "", "no_proxy": ""}
    args = create_args(CLOSED_PORT, csv_manifest(write, IDS[:1]), report, "--settle", "0.5")
    result = invoke(args, env=proxy, base=TOKEN_ENV)
    assert result.exit_code == 0, result.output
    assert [record["outcome"] for record in records(report)] == ["accepted"]
    assert [snapshot["volume_id"] for snapshot in emu.state()["snapshots"]] == [IDS[0]]


async def test_a_truncated_answer_is_a_transport_error() -> None:
    """An answer cut short (fewer bytes than its Content-Length): a TransportError that may have arrived."""

    async def truncating(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(truncating, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session:
            caller = Caller(session, URL(f"http://127.0.0.1:{port}"), timeout=5)
            with pytest.raises(TransportError) as caught:
                await caller.call("GET", "/v3/projects", auth=None)
    finally:
        server.close()
        await server.wait_closed()
    assert str(caught.value).startswith("ClientPayloadError: ")
    assert caught.value.may_have_arrived
    assert caught.value.code == "CONNECTION_ERROR"


# --- the CLI's error boundary ------------------------------------------------------------------------
class Boundary(Main):
    """The real error boundary (``Main.main``) around commands that fail in ways no real command does."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.commands)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self.commands.get(cmd_name)


@click.group(cls=Boundary)
def boundary() -> None:
    """Test commands."""


@boundary.command("crash")
@click.option("--debug", is_flag=True)
def crash(debug: bool) -> None:
    raise RuntimeError("a bug")


@boundary.command("interrupted")
def interrupted() -> None:
    raise BaseExceptionGroup("workers", [KeyboardInterrupt()])


@boundary.command("unreadable")
@click.option("--log-format", default="human")
def unreadable(log_format: str) -> None:
    raise click.FileError("rows.csv", hint="gone")


@pytest.mark.parametrize(
    ("args", "env", "traceback"),
    [
        pytest.param(["crash"], {}, False, id="plain"),
        pytest.param(["crash", "--debug"], {}, True, id="debug-flag"),
        pytest.param(["crash"], {"EVS_SNAPSHOT_DEBUG": "1"}, True, id="debug-env"),
    ],
)
def test_an_unexpected_error_is_an_internal_error(
    args: list[str], env: dict[str, str], traceback: bool
) -> None:
    """A bug: exit 70 and one line naming it; the traceback only with --debug or EVS_SNAPSHOT_DEBUG=1."""
    result = CliRunner().invoke(boundary, args, env={"EVS_SNAPSHOT_DEBUG": "", **env})
    assert result.exit_code == 70, result.output
    assert "evs-snapshot: error: internal error: RuntimeError: a bug; run with --debug" in result.stderr
    assert ("Traceback (most recent call last)" in result.stderr) is traceback


def test_an_interrupt_inside_a_task_group_exits_130() -> None:
    """A KeyboardInterrupt raised inside a task group: exit 130 'stopped by SIGINT', not an internal error."""
    result = CliRunner().invoke(boundary, ["interrupted"])
    assert result.exit_code == 130, result.output
    assert "stopped by SIGINT" in result.stderr
    assert "internal error" not in result.stderr


def test_a_click_error_that_is_not_a_usage_error_under_log_format_json() -> None:
    """A click error with no usage context: one JSON line, no 'usage:' hint."""
    result = CliRunner().invoke(boundary, ["unreadable", "--log-format", "json"])
    assert result.exit_code == 1, result.output
    [line] = result.stderr.splitlines()
    event = orjson.loads(line)
    assert (event["level"], event["exit_code"]) == ("error", 1)
    assert "rows.csv" in event["message"]
    assert "usage:" not in event["message"]


def test_an_unknown_command_is_a_usage_error() -> None:
    """The real group knows only its commands: another name is a usage error (exit 2)."""
    result = invoke(["snapshot-everything"])
    assert result.exit_code == 2, result.output
    assert "No such command 'snapshot-everything'" in result.stderr


# --- options, endpoints and locks --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(["--timeout", "0.01"], "0.01 is below the minimum 0.1", id="below"),
        pytest.param(["--max-rps", "1e6"], "1e6 is above the maximum 100000", id="above"),
    ],
)
def test_numbers_outside_their_range_are_usage_errors(
    extra: list[str], message: str, write: Callable[..., Path], tmp_path: Path
) -> None:
    """A number outside its option's range is a usage error (exit 2) naming it; no report is written."""
    report = tmp_path / "r.jsonl"
    result = invoke(create_args(CLOSED_PORT, csv_manifest(write, IDS[:1]), report, *extra, "--dry-run"))
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert not report.exists()


def test_localhost_counts_as_loopback_for_plain_http(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--endpoint http://localhost:PORT is allowed (plain http to loopback) and reaches the emulator."""
    emu = emulator_thread(any_volume=True)
    url = emu.url.replace("127.0.0.1", "localhost")
    report = tmp_path / "r.jsonl"
    result = invoke(create_args(url, csv_manifest(write, IDS[:1]), report, "--settle", "0.5"))
    assert result.exit_code == 0, result.output
    assert [record["outcome"] for record in records(report)] == ["accepted"]
    assert len(emu.state()["snapshots"]) == 1


def test_wait_without_endpoint_or_region_is_a_usage_error(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A report made with --endpoint holds no region: wait without --endpoint says what to pass, sends nothing."""
    emu = emulator_thread(any_volume=True)
    report = tmp_path / "r.jsonl"
    assert (
        invoke(create_args(emu.url, csv_manifest(write, IDS[:1]), report, "--settle", "0.5")).exit_code == 0
    )
    before = emu.state()["requests"]
    result = invoke(["wait", str(report), "--poll-interval", "0.05"])
    assert result.exit_code == 2, result.output
    assert "a row has no region and no --endpoint was given" in result.stderr
    assert emu.state()["requests"] == before


def test_locks_live_in_xdg_runtime_dir(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """With XDG_RUNTIME_DIR set, the manifest's lock is there: held by another, the run exits 75 unsent."""
    emu = emulator_thread(any_volume=True)
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    manifest = csv_manifest(write, IDS[:1])
    lock = manifest_lock(str(manifest), {"XDG_RUNTIME_DIR": str(runtime)}).path
    assert lock.parent == runtime / "evs-snapshot"
    with RunLock(lock):
        result = invoke(
            create_args(emu.url, manifest, tmp_path / "r.jsonl"), env={"XDG_RUNTIME_DIR": str(runtime)}
        )
    assert result.exit_code == 75, result.output
    assert str(lock) in result.stderr
    assert emu.state()["requests"] == {}


# --- metrics -----------------------------------------------------------------------------------------
def test_metrics_keep_another_commands_families(tmp_path: Path) -> None:
    """create writes its duplicates (and no last success: it failed); wait's write keeps them whole."""
    path = tmp_path / "m.prom"
    created = Tally()
    created.duplicates["duplicate_deleted"] = 2
    metrics.write(path, created, command="create", exit_code=1, throttled=0)
    text = path.read_text()
    assert 'evs_snapshot_duplicates{command="create",outcome="duplicate_deleted"} 2' in text
    assert metrics.LAST_SUCCESS not in text
    metrics.write(path, Tally(), command="wait", exit_code=0, throttled=0)
    text = path.read_text()
    assert text.count("# TYPE evs_snapshot_duplicates gauge") == 1
    assert 'evs_snapshot_duplicates{command="create",outcome="duplicate_deleted"} 2' in text
    assert 'evs_snapshot_duplicates{command="wait"' not in text
    assert metrics.previous_success(text, "wait") is not None
    assert metrics.previous_success(text, "create") is None


# --- signals (sent to this process; the handlers are the code's own) -------------------------------
def installed(signum: int) -> bool:
    return signal.getsignal(signum) not in (signal.SIG_DFL, signal.SIG_IGN, None)


async def test_a_first_signal_starts_the_drain() -> None:
    """SIGTERM once: noted, new rows stopped, the work scope given the grace period, the operator told."""
    received: list[int] = []
    stopped = anyio.Event()
    out = io.StringIO()
    work = anyio.CancelScope()
    async with anyio.create_task_group() as group:
        drain = functools.partial(
            drain_on_signal,
            stop=stopped.set,
            scope=work,
            grace=7.0,
            received=received,
            console=Console(out),
            sync=lambda: None,
        )
        group.start_soon(drain)
        await anyio.wait_all_tasks_blocked()
        assert installed(signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        with anyio.fail_after(5):
            await stopped.wait()
        group.cancel_scope.cancel()
    assert received == [signal.SIGTERM]
    assert work.deadline - anyio.current_time() == pytest.approx(7.0, abs=1.0)
    assert "SIGTERM: taking no new rows; rows in flight get up to 7s to finish" in out.getvalue()


async def test_a_signal_cancels_a_wait() -> None:
    """SIGTERM during a wait under cancel_on_signal cancels the scope and records the signal."""
    received: list[int] = []
    async with anyio.create_task_group() as group:
        group.start_soon(cancel_on_signal, group.cancel_scope, received)
        await anyio.wait_all_tasks_blocked()
        assert installed(signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        await anyio.sleep(5)  # cancelled by the signal long before
    assert group.cancel_scope.cancel_called
    assert received == [signal.SIGTERM]


# --- the emulator ------------------------------------------------------------------------------------
async def test_serve_forever_stops_on_sigterm(capsys: pytest.CaptureFixture[str]) -> None:
    """The emulator command's loop: prints its address, serves, and stops cleanly on SIGTERM."""
    loop = asyncio.get_running_loop()
    printed = ""
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(serve_forever, EmulatorSettings(token=TOKEN))
            with anyio.fail_after(5):
                while "listening on" not in printed:
                    await anyio.sleep(0.005)
                    printed += capsys.readouterr().out
            url = printed.split("listening on ", 1)[1].split()[0]
            state = await anyio.to_thread.run_sync(fetch_state, url)
            assert state["snapshots"] == []
            assert installed(signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)  # serve_forever leaves its handlers (it ends the process)
    assert "EVS emulator stopped" in capsys.readouterr().err


def test_an_emulator_thread_that_cannot_listen_says_so(emulator_thread: Callable[..., Any]) -> None:
    """An emulator thread on a port already taken raises 'the emulator did not start', caused by the OSError."""
    taken = URL(emulator_thread().url).port
    assert taken is not None
    with pytest.raises(RuntimeError, match="the emulator did not start") as caught:
        EmulatorThread(EmulatorSettings(port=taken)).start()
    assert isinstance(caught.value.__cause__, OSError)


def test_the_emulator_package_names_only_what_it_has() -> None:
    """The emulator package exports serving; an unknown name is an AttributeError naming it."""
    assert emulator_package.serving is serving
    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"):
        _ = emulator_package.nothing_here


class DerivedSigner:
    """``V11-HMAC-SHA256`` (derived key) signatures, which the official SDK can send; the tool never does."""

    def __init__(self, region: str) -> None:
        self.region = region

    async def authorize(self, request: OutgoingRequest) -> None:
        headers = request.headers
        headers["X-Sdk-Date"] = signing.sdk_date()
        headers["Host"] = host_header(request.url)
        headers["Authorization"] = signing.authorization(
            ak=DEFAULT_AK,
            sk=DEFAULT_SK,
            method=request.method,
            path=request.url.raw_path,
            query=signing.parse_query(request.url.raw_query_string),
            headers=headers,
            body=request.body,
            derived=(self.region, "evs"),
        )

    def forget(self, project_id: str, stale: str | None) -> bool:
        return False


class MalformedSigner(DerivedSigner):
    async def authorize(self, request: OutgoingRequest) -> None:
        request.headers["Authorization"] = f"{signing.ALGORITHM} Access{DEFAULT_AK}"


async def test_gateway_signatures(emulator: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    """Derived-key signatures are verified (for the served region only); a malformed header is a 401."""
    emu = await emulator()
    path = f"/v2/{PROJECT}/cloudsnapshots/detail"
    status, body, _ = await call(http, emu, "GET", path, auth=DerivedSigner(REGION))
    assert (status, body["count"]) == (200, 0)
    status, body, _ = await call(http, emu, "GET", path, auth=DerivedSigner("cn-south-1"))
    assert (status, body["error_msg"]) == (
        401,
        "Incorrect IAM authentication information: verify aksk signature fail",
    )
    status, body, _ = await call(http, emu, "GET", path, auth=MalformedSigner(REGION))
    assert (status, body["error_msg"]) == (
        401,
        "Incorrect IAM authentication information: verify aksk signature fail",
    )
    assert signing.parse_authorization(f"{signing.ALGORITHM} Access=a, SignedHeaders") is None
    assert hits(emu, "GET /v2/{project_id}/cloudsnapshots/detail") == {"200": 1, "401": 2}


async def test_iam_refuses_a_token_request_without_the_password_method(
    emulator: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    """The emulator's IAM refuses a token request without the password method, or with a malformed scope."""
    emu = await emulator()
    identity = {
        "methods": ["token"],
        "password": {
            "user": {"name": DEFAULT_USER, "password": DEFAULT_PASSWORD, "domain": {"name": DEFAULT_DOMAIN}}
        },
    }
    for auth in (
        {"identity": identity, "scope": {"project": {"id": PROJECT}}},
        {"identity": {**identity, "methods": ["password"]}, "scope": {"project": PROJECT}},
    ):
        status, body, headers = await call(
            http, emu, "POST", "/v3/auth/tokens", body={"auth": auth}, auth=False
        )
        assert (status, body["error_code"]) == (400, "IAM.0011"), body
        assert "X-Subject-Token" not in headers
    assert emu.world.tokens == {}


async def test_emulator_refuses_malformed_queries_and_bodies(
    emulator: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    """A negative offset, a rollback name out of bounds, a bad `matches` filter, detaching an unknown disk."""
    snapshot = SeedSnapshot(id=volume_ids(1, seed=78)[0], volume_id=IDS[0])
    emu = await emulator(volumes=(), any_volume=False, snapshots=(snapshot,))
    status, body, _ = await call(
        http, emu, "GET", f"/v2/{PROJECT}/cloudsnapshots/detail", query=[("offset", "-1")]
    )
    assert (status, body["error"]) == (400, {"code": "EVS.5400", "message": "offset param must be positive."})
    for name in ("", "x" * 300, 7):
        status, body, _ = await call(
            http,
            emu,
            "POST",
            f"/v2/{PROJECT}/cloudsnapshots/{snapshot.id}/rollback",
            body={"rollback": {"volume_id": IDS[0], "name": name}},
        )
        assert (status, body["error"]["code"]) == (400, "EVS.5400"), body
        assert "name must be 1 to" in body["error"]["message"]
    assert emu.world.rollbacks == []
    action = f"/v2/{PROJECT}/cloudvolumes/resource_instances/action"
    for matches, message in (
        ("resource_name", "matches must be a list"),
        (["resource_name"], "each match needs a key and a value"),
        ([{"key": "resource_name", "value": 3}], "each match needs a key and a value"),
    ):
        status, body, _ = await call(http, emu, "POST", action, body={"action": "count", "matches": matches})
        assert (status, body["error"]["code"]) == (400, "EVS.5400"), body
        assert message in body["error"]["message"]
    status, body, _ = await call(http, emu, "POST", f"/_emulator/volumes/{IDS[1]}/detach", auth=False)
    assert status == 404


async def test_emulator_name_match_skips_other_keys(
    emulator: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    """`matches` items with another key are passed over; the resource_name item after them filters."""
    emu = await emulator(
        volumes=(SeedVolume(volume_id=IDS[0], name="web-1"), SeedVolume(volume_id=IDS[1], name="db-1"))
    )
    action = f"/v2/{PROJECT}/cloudvolumes/resource_instances/action"
    other = {"key": "resource_id", "value": IDS[1]}
    status, body, _ = await call(http, emu, "POST", action, body={"action": "count", "matches": [other]})
    assert (status, body) == (200, {"total_count": 2})
    named = [other, {"key": "resource_name", "value": "web"}]
    status, body, _ = await call(http, emu, "POST", action, body={"action": "filter", "matches": named})
    assert status == 200
    assert [item["resource_id"] for item in body["resources"]] == [IDS[0]]


def test_a_seed_file_with_a_negative_size_is_refused(write: Callable[..., Path]) -> None:
    """emulator --volumes with a negative size: exit 2 naming the file and entry; nothing listens."""
    path = write("v.csv", f"volume_id,size\n{IDS[0]},-5\n")
    result = invoke(["emulator", "--volumes", str(path)])
    assert result.exit_code == 2, result.output
    assert f"{path}: entry 1: size must not be negative" in result.stderr
    assert "listening" not in result.output


def test_stopping_an_emulator_thread_that_never_started_does_nothing() -> None:
    """stop() before start() returns at once (it used to fail joining a thread never started)."""
    thread = EmulatorThread(EmulatorSettings())
    thread.stop()
    with thread:  # and the same object still starts and stops normally
        assert thread.state()["snapshots"] == []
