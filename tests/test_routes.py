"""The one request path (``Route.send``): refusals and unreachable endpoints close routes, paging, proxies, lost answers."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
import pytest
from aiohttp import web
from yarl import URL

from orchestrator.api import evs, tls
from orchestrator.api.routes import connect
from orchestrator.api.safe import fetch_json, snapshot_pages
from orchestrator.api.session import Caller
from orchestrator.config import Connection, Endpoints
from orchestrator.emulator import ManualClock, SeedSnapshot
from orchestrator.errors import ListingFailed, RouteClosed, TransportError
from orchestrator.models import Answer
from orchestrator.report import ReportWriter
from orchestrator.retry import Verdict
from orchestrator.runner import Runner, RunPlan, _Attempt
from orchestrator.tally import Tally
from tests.helpers import (
    AKSK,
    API_IDS,
    CLOSED_PORT,
    PROJECT,
    QUICK,
    SHOW,
    TOKEN_ENV,
    call,
    create_args,
    csv_manifest,
    hits,
    invoke,
    records,
    routed,
    router_for,
    run_process,
    snapshot_request,
    stand_in,
    token_request,
    volume_ids,
)

OTHER_PROJECT = "fedcba9876543210fedcba9876543210"


async def test_an_unreachable_endpoint_closes_every_project_on_it() -> None:
    """Routes of two projects share their endpoint: connect failures on one close the other, unsent."""
    connection = Connection(endpoints=Endpoints(evs=URL(CLOSED_PORT)), environ=AKSK)
    async with contextlib.AsyncExitStack() as stack:
        router = await connect(stack, connection)
        first = router.route_at(None, PROJECT)
        second = router.route_at(None, OTHER_PROJECT)
        for _ in range(3):
            with pytest.raises(TransportError):
                await first.send(evs.show_volume(PROJECT, API_IDS[0]))
        with pytest.raises(RouteClosed) as caught:
            await second.send(evs.show_volume(OTHER_PROJECT, API_IDS[0]))
    assert caught.value.code == "ENDPOINT_UNREACHABLE"
    assert sum(second.counts.values()) == 0
    assert [closure.code for closure in router.closures()] == ["ENDPOINT_UNREACHABLE"]


async def test_a_403_before_anything_succeeded_closes_the_route(emulator: Callable[..., Any]) -> None:
    """The first answer on a route is a 403: the route closes; the next call is refused unsent."""
    emu = await emulator(any_volume=True)
    request = snapshot_request(API_IDS[0], metadata={"__system__encrypted": "1"})
    async with routed(emu.url) as route:
        with pytest.raises(RouteClosed) as refused:
            await route.send(evs.create_snapshot(PROJECT, request, "run-1"))
        assert refused.value.answer is not None
        assert refused.value.answer.status == 403
        with pytest.raises(RouteClosed, match=r"credentials refused: .* answered 403 EVS\.5403"):
            await route.send(evs.show_volume(PROJECT, API_IDS[0]))
    assert hits(emu, "POST /v2/{project_id}/cloudsnapshots") == {"403": 1}
    assert hits(emu, "GET /v2/{project_id}/cloudvolumes/{volume_id}") == {}


async def test_concurrent_refusals_keep_the_first_closure(
    clocked: Callable[..., Any], clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    """A fixed token expires while two requests are in flight on a proven route: both are refused, and
    the route keeps one closure."""
    emu = await clocked(token_ttl=60.0, any_volume=True)
    status, _, headers = await call(http, emu, "POST", "/v3/auth/tokens", body=token_request(), auth=False)
    assert status == 201
    environ = {"OS_AUTH_TOKEN": headers["X-Subject-Token"], "HUAWEICLOUD_SDK_PROJECT_ID": PROJECT}
    async with routed(emu.url, environ) as route:
        assert (await route.send(evs.show_volume(PROJECT, API_IDS[0]))).verdict is Verdict.SUCCESS
        clock.advance(61)
        replies: list[Any] = []

        async def one(volume_id: str) -> None:
            try:
                await route.send(evs.show_volume(PROJECT, volume_id))
            except RouteClosed as exc:
                replies.append(exc.answer.status if exc.answer is not None else None)

        async with anyio.create_task_group() as group:
            group.start_soon(one, API_IDS[1])
            group.start_soon(one, API_IDS[2])
        first = route.closure
        assert first is not None
        assert replies == [401, 401]  # each one refused, with its answer
        with pytest.raises(RouteClosed):
            route.check_open()
    assert first.message.startswith("credentials refused:")
    assert hits(emu, "GET /v2/{project_id}/cloudvolumes/{volume_id}") == {"200": 1, "401": 2}


@pytest.mark.no_cover
async def test_snapshot_pages_follow_the_count_past_one_page(emulator: Callable[..., Any]) -> None:
    """1001 snapshots: two pages (1000 and 1), two list requests."""
    seeded = tuple(
        SeedSnapshot(id=snapshot_id, volume_id=API_IDS[0])
        for snapshot_id in volume_ids(evs.PAGE + 1, seed=77)
    )
    emu = await emulator(snapshots=seeded)
    async with routed(emu.url) as route:
        pages = [page async for page in snapshot_pages(route, QUICK)]
    assert [len(page) for page in pages] == [evs.PAGE, 1]
    assert {item.id for page in pages for item in page} == {seed.id for seed in seeded}
    assert hits(emu, "GET /v2/{project_id}/cloudsnapshots/detail") == {"200": 2}


def test_create_goes_through_the_environment_proxy(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """HTTP_PROXY names the emulator; the endpoint itself does not listen: the run succeeds through it."""
    emu = emulator_thread(any_volume=True)
    report = tmp_path / "r.jsonl"
    proxy = {"HTTP_PROXY": emu.url, "http_proxy": emu.url, "NO_PROXY": "", "no_proxy": ""}
    args = create_args(CLOSED_PORT, csv_manifest(write, API_IDS[:1]), report, "--settle", "0.5")
    result = invoke(args, env=proxy, base=TOKEN_ENV)
    assert result.exit_code == 0, result.output
    assert [record["outcome"] for record in records(report)] == ["accepted"]
    assert [snapshot["volume_id"] for snapshot in emu.state()["snapshots"]] == [API_IDS[0]]


@contextlib.asynccontextmanager
async def raw_server(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    """A bare TCP server on loopback that answers with ``handler`` (for answers no HTTP server would
    send); yields its port."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_truncated_answer_is_a_transport_error() -> None:
    """An answer cut short (fewer bytes than its Content-Length): a TransportError that may have arrived."""

    async def truncating(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()
        writer.close()

    async with raw_server(truncating) as port, aiohttp.ClientSession() as session:
        caller = Caller(session, URL(f"http://127.0.0.1:{port}"), timeout=5)
        with pytest.raises(TransportError) as caught:
            await caller.call("GET", "/v3/projects", auth=None)
    assert str(caught.value).startswith("ClientPayloadError: ")
    assert caught.value.may_have_arrived
    assert caught.value.code == "CONNECTION_ERROR"


async def test_tls_is_built_only_for_https_and_verifies() -> None:
    """A plain-http endpoint builds no TLS context (aiohttp's own hold no CA: nothing relies on them);
    an https one gets a verifying context with the system CAs, and TLS to a plain-http port fails."""

    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    tls.context.cache_clear()
    async with raw_server(plain) as port, aiohttp.ClientSession() as session:
        http = Caller(session, URL(f"http://127.0.0.1:{port}"), timeout=5)
        assert (await http.call("GET", "/v3/projects", auth=None)).status == 400
        assert http.tls is True
        assert tls.context.cache_info().currsize == 0
        https = Caller(session, URL(f"https://127.0.0.1:{port}"), timeout=5)
        with pytest.raises(TransportError) as caught:
            await https.call("GET", "/v3/projects", auth=None)
    assert caught.value.code == "TLS_ERROR"
    assert isinstance(https.tls, ssl.SSLContext)
    assert https.tls.verify_mode is ssl.CERT_REQUIRED
    assert https.tls.check_hostname
    assert https.tls.cert_store_stats()["x509_ca"] > 0  # the system CAs
    assert https.tls is tls.context(None)  # built once a process


def test_an_https_run_trusts_its_ca_bundle_and_nothing_less(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Real processes against the emulator over TLS, with a certificate no system CA signed: with
    ``--ca-bundle`` the run proves the credentials and creates every row; without it the run stops
    before any create (exit 3, a TLS error, no traceback). The process imports aiohttp only through
    ``api/tls.py`` (aiohttp's own contexts left without CAs), so this is the path a user's run takes."""
    openssl = shutil.which("openssl")
    assert openssl is not None
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    emu = emulator_thread(tls=served, any_volume=True)
    assert emu.url.startswith("https://127.0.0.1:")
    ids = volume_ids(3, seed=141)
    other = volume_ids(2, seed=142)
    # the two runs side by side (their disks, manifests and reports apart): one start-up waited for, not two
    trusted = run_process(
        create_args(emu.url, csv_manifest(write, ids), tmp_path / "ok.jsonl", ca_bundle=cert)
    )
    untrusted = run_process(create_args(emu.url, csv_manifest(write, other, "n.csv"), tmp_path / "no.jsonl"))
    _, err = trusted.communicate(timeout=60)
    assert trusted.returncode == 0, err.decode()
    assert sorted(
        r["volume_id"] for r in records(tmp_path / "ok.jsonl") if r["outcome"] == "accepted"
    ) == sorted(ids)
    _, err = untrusted.communicate(timeout=60)
    text = err.decode()
    assert untrusted.returncode == 3, text
    assert "Traceback" not in text
    assert "certificate" in text.lower()
    client = ssl.create_default_context(cafile=str(cert))
    with urllib.request.urlopen(f"{emu.url}/_emulator/state", context=client, timeout=30) as answer:  # noqa: S310
        state = orjson.loads(answer.read())
    made = {snapshot["volume_id"] for snapshot in state["snapshots"]}
    assert made == set(ids)  # the untrusted run sent no create


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("<html>Bad Gateway</html>", ("502", None)),
        (None, ("502", None)),
        ({"detail": {"reason": "busy"}, "retry": 3}, ("502", None)),
        (
            {"detail": {"reason": "busy"}, "error": {"code": "APIG.0202", "message": "gone"}},
            ("APIG.0202", "gone"),
        ),
        ({"outer": {"inner": {"errorCode": "X.1", "errorMsg": None}}}, ("X.1", None)),
    ],
)
def test_error_of_an_answer_searches_nested_bodies_and_falls_back_to_the_status(
    body: Any, expected: tuple[str, str | None]
) -> None:
    """The error code comes from the first error-shaped object, however deep; none at all: the status."""
    assert Answer(status=502, body=body, request_id=None).error() == expected


@pytest.mark.anyio
async def test_a_final_answer_is_not_retried(emulator: Callable[..., Any]) -> None:
    """A GET answered 404 (final) without missing_ok raises ListingFailed after one request, naming it."""
    emu = await emulator()
    missing = str(uuid.uuid4())
    async with routed(emu.url) as route:
        with pytest.raises(ListingFailed, match=r"failed \(404 "):
            await fetch_json(route, evs.show_snapshot(PROJECT, missing), QUICK)
    assert hits(emu, SHOW) == {"404": 1}


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


async def test_an_answer_that_is_not_json_is_kept_as_its_text() -> None:
    """A gateway's HTML error page: no crash; the answer keeps its status and (the start of) its text,
    and a 502 stays uncertain (the gateway may have passed the request on)."""
    page = b"<html><body>502 Bad Gateway</body></html>"

    async def html(_request: web.Request) -> web.Response:
        return web.Response(status=502, body=page, content_type="text/html")

    routes = {f"GET /v2/{PROJECT}/cloudsnapshots/{API_IDS[0]}": html}
    async with stand_in(routes) as (url, seen), routed(url) as route:
        reply = await route.send(evs.show_snapshot(PROJECT, API_IDS[0]))
    assert reply.verdict is Verdict.UNCERTAIN
    assert (reply.answer.status, reply.answer.body) == (502, {"message": page.decode()})
    assert sum(seen.values()) == 1


async def test_a_429_that_names_the_limit_caps_the_routes_rate(clocked: Callable[..., Any]) -> None:
    """The gateway's 429 says "limit:5,time:1 second": the route's limiter keeps under 5 a second
    from then on (its ceiling), as it would under --max-rps."""
    emu = await clocked(any_volume=True, rate_limit=5, burst=1)
    async with routed(emu.url) as route:
        first = await route.send(evs.show_volume(PROJECT, API_IDS[0]))
        second = await route.send(evs.show_volume(PROJECT, API_IDS[0]))
    assert (first.answer.status, second.answer.status) == (200, 429)  # any_volume: every disk exists
    assert second.verdict is Verdict.RETRY
    assert route.limiter.ceiling == pytest.approx(5 * route.limiter.TOLD_SHARE)
    assert route.limiter.rate is not None
    assert route.limiter.rate <= route.limiter.ceiling
