"""Notifications (``--ping-url``, ``--webhook``) against a real HTTP server on a loopback port: the
Healthchecks start/success/fail pings, the webhook's JSON, retries on 5xx, a dead URL bounded by the
settings and harmless to the exit code, and no secret in a body or a log line."""

from __future__ import annotations

import functools
import io
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import orjson
import pytest
from aiohttp import web

from orchestrator.api.notify import TRUNCATED, Message, Notifier, text_body
from orchestrator.config import Notify, redact_url
from orchestrator.console import Console
from orchestrator.emulator.server import EmulatorThread
from orchestrator.emulator.settings import DEFAULT_AK, DEFAULT_SK
from orchestrator.errors import Interrupted, ListingFailed, LockHeld
from orchestrator.frame import Closing, Frame
from tests.helpers import (
    CLOSED_PORT,
    TOKEN,
    Receiver,
    create_args,
    csv_manifest,
    hang_up,
    invoke,
    seeds,
    stand_in,
    volume_ids,
)

SECRET = "q-secret-4711"


def run_create(emu: EmulatorThread, tmp_path: Path, ids: list[str], *extra: str, **env: str) -> Any:
    manifest = csv_manifest(lambda name, text: _write(tmp_path / name, text), ids)
    return invoke(create_args(emu.url, manifest, tmp_path / "r.jsonl", *extra), env=env)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_a_run_pings_start_then_success_with_the_summary(
    emulator_thread: Callable[..., EmulatorThread], receiver: Callable[..., Receiver], tmp_path: Path
) -> None:
    """Exit 0: URL/start at the start, URL at the end (query kept), the summary as the body."""
    ids = volume_ids(2)
    emu = emulator_thread(volumes=seeds(ids))
    hc = receiver()
    result = run_create(emu, tmp_path, ids, "--ping-url", f"{hc.url}/ping/abc?rid={SECRET}")
    assert result.exit_code == 0, result.output
    assert hc.paths() == [f"/ping/abc/start?rid={SECRET}", f"/ping/abc?rid={SECRET}"]
    _, kind, body = hc.requests[1]
    assert kind.startswith("text/plain")
    assert body.startswith(b"2 rows: 2 accepted")
    assert f"report: {tmp_path / 'r.jsonl'}".encode() in body


@pytest.mark.no_cover
def test_a_failed_run_pings_fail_and_posts_each_webhook(
    emulator_thread: Callable[..., EmulatorThread], receiver: Callable[..., Receiver], tmp_path: Path
) -> None:
    """Exit 1: URL/fail; every webhook (options and EVS_SNAPSHOT_WEBHOOK) gets the JSON event."""
    ids = volume_ids(1)
    emu = emulator_thread(volumes=seeds(ids))
    hc, hook = receiver(), receiver()
    result = run_create(
        emu,
        tmp_path,
        [*ids, "not-a-uuid"],
        EVS_SNAPSHOT_PING_URL=f"{hc.url}/p",
        EVS_SNAPSHOT_WEBHOOK=f"{hook.url}/one {hook.url}/two",
    )
    assert result.exit_code == 1, result.output
    assert hc.paths() == ["/p/start", "/p/fail"]
    assert sorted(hook.paths()) == ["/one", "/two"]
    event = orjson.loads(hook.requests[0][2])
    report = tmp_path / "r.jsonl"
    run_id = orjson.loads(report.read_bytes().splitlines()[0])["run_id"]
    assert {key: event[key] for key in ("event", "command", "run_id", "exit_code", "report")} == {
        "event": "failed",
        "command": "create",
        "run_id": run_id,
        "exit_code": 1,
        "report": str(report),
    }
    assert event["summary"]["outcomes"] == {"accepted": 1, "invalid": 1}
    assert event["summary"]["exit_code"] == 1


def test_no_secret_reaches_a_body_or_the_log(
    emulator_thread: Callable[..., EmulatorThread],
    receiver: Callable[..., Receiver],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Neither the AK/SK nor a token nor the URLs' query or password reach a body or stderr."""
    # no option sets the pause between two attempts (up to 1 s, then 2 s): the run's Notify without it
    monkeypatch.setattr("orchestrator.options.Notify", functools.partial(Notify, pause=0))
    ids = volume_ids(1)
    emu = emulator_thread(volumes=seeds(ids))
    hook = receiver([500, 500, 500])
    hc = receiver()
    user_hook = hook.url.replace("http://", f"http://user:{SECRET}pw@")
    result = run_create(
        emu,
        tmp_path,
        ids,
        "--ping-url",
        f"{hc.url}/p?key={SECRET}",
        "--webhook",
        f"{user_hook}/h?token={SECRET}",
        "--max-attempts",
        "1",
    )
    assert result.exit_code == 0, result.output
    assert "webhook http://***@127.0.0.1" in result.stderr  # the failed webhook is named, masked
    assert "/h?*** not delivered: HTTP 500 (3 attempts)" in result.stderr
    everything = result.output.encode() + b"".join(body for _, _, body in hc.requests + hook.requests)
    for secret in (SECRET, DEFAULT_SK, DEFAULT_AK, TOKEN):
        assert secret.encode() not in everything


async def frame_run(notify: Notify, receiver: Receiver, at_least: int = 0) -> tuple[int, str]:
    """A frame whose work is to see the start ping arrive, with ``at_least`` as its verdict; its exit
    code and its log."""
    stream = io.StringIO()
    frame = Frame(command="prune", console=Console(stream), report="-", closing=Closing(notify=notify))
    async with frame:
        assert await anyio.to_thread.run_sync(receiver.first.wait, 10)
        frame.at_least = at_least
    return frame.exit_code, stream.getvalue()


@pytest.mark.anyio
async def test_a_5xx_is_tried_again(receiver: Callable[..., Receiver]) -> None:
    """Answers 503 and 502 are tried again; the third attempt is delivered and nothing is logged."""
    hc = receiver([200, 503, 502, 200])
    code, log = await frame_run(Notify(ping_url=f"{hc.url}/p", pause=0), hc)
    assert code == 0
    assert hc.paths() == ["/p/start", "/p", "/p", "/p"]
    assert log.count("not delivered") == 0


@pytest.mark.anyio
async def test_a_4xx_is_not_tried_again(receiver: Callable[..., Receiver]) -> None:
    """A 404 cannot change on a second try: one attempt, a warning, the exit code as it was."""
    hc, hook = receiver(), receiver([404])
    code, log = await frame_run(Notify(ping_url=f"{hc.url}/p", webhooks=(f"{hook.url}/h",), pause=0), hc, 1)
    assert code == 1
    assert hc.paths() == ["/p/start", "/p/fail"]
    assert hook.paths() == ["/h"]
    assert f"webhook {hook.url}/h not delivered: HTTP 404" in log


@pytest.mark.anyio
async def test_a_dead_url_is_bounded_by_its_settings() -> None:
    """A request that gets no answer is cut at ``timeout`` and tried again, never more than ``attempts``
    times in all; the exit code stays what the run decided. By default that bound is 3 x 10 s = 30 s.

    Bounds, not a count: the first request never gets an answer, the others are hung up on at once.
    The client's timeout of the first fires before its budget's, so it tries again (at least 2
    attempts, whatever the load); a broken attempt bound would send far more than ``attempts`` quick
    ones within the budget. The receiver counts no more than the client sent: at high load a request
    can be cut before the receiver reads it (a thread receiver missed some, and the exact count failed)."""
    assert Notify().budget == 30.0
    assert (Notify().timeout, Notify().attempts) == (10.0, 3)
    released = anyio.Event()
    first: list[bool] = []

    async def dead_then_hang_up(request: web.Request) -> web.StreamResponse:
        if first:
            return await hang_up(request)
        first.append(True)
        await released.wait()  # no answer: the client's timeout ends the attempt
        return web.Response()

    async def ok(_request: web.Request) -> web.StreamResponse:
        return web.Response()

    stream = io.StringIO()
    async with stand_in({"POST /p/start": ok, "POST /p/fail": dead_then_hang_up}) as (url, seen):
        notify = Notify(ping_url=f"{url}/p?k={SECRET}", timeout=0.2, attempts=30, pause=0)
        frame = Frame(command="prune", console=Console(stream), report="-", closing=Closing(notify=notify))
        try:
            async with frame:
                frame.at_least = 1
        finally:
            released.set()
    log = stream.getvalue()
    assert frame.exit_code == 1
    said = re.search(rf"ping {url}/p/fail\?\*\*\* not delivered: .* \(([0-9]+) attempts?\)", log)
    assert said is not None, log
    tried = int(said[1])
    assert 2 <= tried <= notify.attempts, log
    assert seen["POST /p/fail"] <= tried, log
    assert SECRET not in log


@pytest.mark.anyio
async def test_a_slow_start_ping_does_not_hold_the_run_up(receiver: Callable[..., Receiver]) -> None:
    """The start ping goes out in the background: a run that ends first drops it and sends its end."""
    slow = receiver([None, 200])
    code, log = await frame_run(Notify(ping_url=f"{slow.url}/p", timeout=20, pause=0), slow)
    assert code == 0
    assert slow.paths() == ["/p/start", "/p"]
    assert "not delivered" not in log


@pytest.mark.parametrize(
    ("url", "said"),
    [
        pytest.param("ftp://127.0.0.1/p?k=" + SECRET, "is not an http(s) URL", id="scheme"),
        pytest.param("http://example.com/p?k=" + SECRET, "plain http to a non-loopback host", id="http"),
        pytest.param("https://u:" + SECRET + "@h.example/p#x", "has a fragment", id="fragment"),
        pytest.param("u:" + SECRET + "@h.example/p?k=" + SECRET, "is not an http(s) URL", id="no-scheme"),
        pytest.param("https:/u:" + SECRET + "@h.example/p", "is not an http(s) URL", id="one-slash"),
        pytest.param("https://u:" + SECRET + "/x@h.example/p", "is not a valid URL", id="slash-in-password"),
    ],
)
def test_a_bad_url_is_a_usage_error_that_hides_its_secrets(tmp_path: Path, url: str, said: str) -> None:
    """A --ping-url that cannot be used exits 2 before anything is sent, the URL masked."""
    manifest = _write(tmp_path / "m.csv", "volume_id\n" + volume_ids(1)[0] + "\n")
    result = invoke(create_args("http://127.0.0.1:9", manifest, tmp_path / "r.jsonl", "--ping-url", url))
    assert result.exit_code == 2
    assert said in result.stderr
    assert SECRET not in result.output


def test_redact_url_masks_userinfo_query_and_fragment() -> None:
    """The one masking function: user:password, the query string and a fragment never show."""
    assert redact_url("https://u:p@h.example:8443/a/b?x=1&y=2#f") == "https://***@h.example:8443/a/b?***#***"
    assert redact_url("http://h/a") == "http://h/a"
    assert redact_url("not a url ?x") == "not a url ?***"
    assert redact_url("u:p@h.example/a?x=1") == "***@h.example/a?***"  # no scheme: still a password
    assert redact_url("https:/u:p@h.example/a") == "https:/***@h.example/a"  # one slash
    assert redact_url("https://u:p/q@h.example/a") == "https://***@h.example/a"  # a "/" in the password
    assert redact_url("https://u:p@h.example/a@b") == "https://***@b"  # an "@" in the path: masked too


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error", "code"),
    [
        pytest.param(LockHeld("another run holds the lock"), 75, id="lock-held"),
        pytest.param(ListingFailed("the listing was refused"), 3, id="aborted"),
        pytest.param(RuntimeError("a bug"), 70, id="internal"),
    ],
)
async def test_a_run_that_raises_pings_fail_with_its_exit_code(
    receiver: Callable[..., Receiver], error: Exception, code: int
) -> None:
    """Whatever ends the run, the end ping is URL/fail and the webhook carries the process's exit code."""
    hc, hook = receiver(), receiver()
    notify = Notify(ping_url=f"{hc.url}/p", webhooks=(f"{hook.url}/h",), pause=0)
    frame = Frame(
        command="cleanup", console=Console(io.StringIO()), report="-", closing=Closing(notify=notify)
    )

    async def run() -> None:
        async with frame:
            assert await anyio.to_thread.run_sync(hc.first.wait, 10)
            raise error

    with pytest.raises(type(error)):
        await run()
    assert hc.paths() == ["/p/start", "/p/fail"]
    assert str(error).encode() in hc.requests[1][2]
    event = orjson.loads(hook.requests[0][2])
    assert (event["event"], event["exit_code"], event["summary"]["exit_code"]) == ("failed", code, code)


@pytest.mark.anyio
async def test_a_signal_in_a_drain_pings_fail_after_the_summary(receiver: Callable[..., Receiver]) -> None:
    """A run that drained after SIGTERM raises Interrupted (143); its end ping is URL/fail."""
    hc = receiver()
    notify = Notify(webhooks=(f"{hc.url}/h",), pause=0)
    frame = Frame(command="prune", console=Console(io.StringIO()), report="-", closing=Closing(notify=notify))

    async def run() -> None:
        async with frame:
            frame.signals.append(signal.SIGTERM)

    with pytest.raises(Interrupted):
        await run()
    event = orjson.loads(hc.requests[0][2])
    assert (event["event"], event["exit_code"], event["summary"]["command"]) == ("failed", 143, "prune")


@pytest.mark.anyio
async def test_a_redirect_is_not_followed() -> None:
    """A receiver that answers 307 elsewhere: the body is not sent on (a redirect would take it past the
    https-or-loopback check made on the URL given), and the warning names the 3xx, once."""
    log = io.StringIO()

    async def elsewhere(request: web.Request) -> web.StreamResponse:
        return web.Response(status=307, headers={"Location": str(request.url.with_path("/other"))})

    async def ok(_request: web.Request) -> web.StreamResponse:
        return web.Response()

    async with stand_in({"POST /h": elsewhere, "POST /other": ok}) as (url, seen):
        message = Message(what="webhook", url=f"{url}/h", body=b"{}", content_type="x")
        await Notifier(Notify(pause=0), Console(log)).send([message])
    assert (seen["POST /h"], seen["POST /other"]) == (1, 0)
    assert f"webhook {url}/h not delivered: HTTP 307 (a redirect: not followed)" in log.getvalue()


@pytest.mark.anyio
async def test_a_receiver_out_of_reach_is_named_and_tried_again() -> None:
    """A closed port and a receiver that hangs up: each tried ``attempts`` times, then one warning naming
    why (cannot connect; no answer) with the URL masked."""
    log = io.StringIO()
    notify = Notify(attempts=2, pause=0)
    async with stand_in({"POST /h": hang_up}) as (url, seen):
        messages = [
            Message(what="webhook", url=f"{CLOSED_PORT}/h?k={SECRET}", body=b"{}", content_type="x"),
            Message(what="ping", url=f"{url}/h", body=b"", content_type="x"),
        ]
        await Notifier(notify, Console(log)).send(messages)
    assert seen["POST /h"] == 2
    said = log.getvalue()
    assert f"webhook {CLOSED_PORT}/h?*** not delivered: cannot connect" in said
    assert f"ping {url}/h not delivered: no answer (ServerDisconnectedError) (2 attempts)" in said
    assert SECRET not in said


def test_a_long_summary_is_cut_on_a_character_boundary() -> None:
    """A ping body past the limit is cut to it, whole characters only, and says it was cut."""
    assert text_body("short", limit=100) == b"short"
    body = text_body("é" * 200, limit=101)
    assert len(body) <= 101
    text = body.decode()  # no half character
    assert text.endswith(TRUNCATED)
    assert set(text.removesuffix(TRUNCATED)) == {"é"}
