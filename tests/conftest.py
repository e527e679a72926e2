"""Shared fixtures: the emulator on a loopback port (in the test's loop, or in a thread for CLI tests).

Both factories take ``clock=``: pass the ``clock`` fixture (a ``ManualClock``) and advance it to move
the emulator's time (token expiry, ``creating``, deletes, rollbacks) without sleeping.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from yarl import URL

from orchestrator.api import signing
from orchestrator.api.credentials import OutgoingRequest, TokenAuth
from orchestrator.emulator import (
    EmulatorSettings,
    EmulatorThread,
    ManualClock,
    RunningEmulator,
    SeedVolume,
    serving,
)
from orchestrator.emulator.clock import Clock

PROJECT = "0123456789abcdef0123456789abcdef"
TOKEN = "test-fixed-token-0001"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def volume_ids(count: int, seed: int = 0) -> list[str]:
    """Deterministic, distinct volume ids."""
    return [str(uuid.UUID(int=(seed << 64) + index + 1, version=4)) for index in range(count)]


def seeds(ids: list[str], status: str = "available") -> tuple[SeedVolume, ...]:
    return tuple(SeedVolume(volume_id=volume_id, status=status) for volume_id in ids)


@pytest.fixture(autouse=True)
def lock_dir_of_the_test(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test its own lock directory (``$XDG_RUNTIME_DIR/evs-snapshot``): runs of fixed run ids in
    parallel tests, or in other checkouts on the machine, must not hold each other's run locks."""
    runtime = tmp_path_factory.mktemp("xdg-runtime")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    return runtime / "evs-snapshot"


@pytest.fixture
def clock() -> ManualClock:
    """The emulator's time, moved by the test (``clock.advance(seconds)``) instead of sleeping."""
    return ManualClock()


@pytest.fixture
async def emulator() -> AsyncIterator[Callable[..., Any]]:
    """A factory: ``await emulator(**settings)`` starts an emulator in the test's own event loop."""
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack:

        async def start(clock: Clock | None = None, **options: Any) -> RunningEmulator:
            options.setdefault("token", TOKEN)
            return await stack.enter_async_context(serving(EmulatorSettings(**options), clock))

        yield start


@pytest.fixture
async def clocked(emulator: Callable[..., Any], clock: ManualClock) -> Callable[..., Any]:
    """``await clocked(**settings)``: an emulator in the test's loop whose time is the ``clock`` fixture."""

    async def start(**options: Any) -> RunningEmulator:
        started: RunningEmulator = await emulator(clock=clock, **options)
        return started

    return start


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def emulator_thread() -> Iterator[Callable[..., EmulatorThread]]:
    """A factory for emulators on their own thread, for tests that drive the synchronous CLI."""
    started: list[EmulatorThread] = []

    def start(clock: Clock | None = None, **options: Any) -> EmulatorThread:
        options.setdefault("token", TOKEN)
        running = EmulatorThread(EmulatorSettings(**options), clock).start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str | bytes], Path]:
    """Write a file under the test's temporary folder and return its path."""

    def writer(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
        return path

    return writer


async def call(
    http: aiohttp.ClientSession,
    emulator: RunningEmulator | EmulatorThread,
    method: str,
    path: str,
    *,
    body: object = None,
    auth: Any = None,
    query: list[tuple[str, str]] | None = None,
    raw_body: bytes | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """One request to an emulator, authorized by ``auth`` (the fixed token by default; ``False``: none)."""
    data = raw_body if raw_body is not None else (b"" if body is None else orjson.dumps(body))
    qs = signing.canonical_query(query or [])
    url = URL(f"{emulator.url}{path}" + (f"?{qs}" if qs else ""), encoded=True)
    outgoing = OutgoingRequest(
        method=method, url=url, headers={"Content-Type": "application/json"}, body=data, project_id=PROJECT
    )
    if auth is not False:
        await (auth or TokenAuth(TOKEN)).authorize(outgoing)
    async with http.request(method, url, data=data or None, headers=outgoing.headers) as response:
        raw = await response.read()
        return (
            response.status,
            (orjson.loads(raw) if raw else None),
            {k.title(): v for k, v in response.headers.items()},
        )
