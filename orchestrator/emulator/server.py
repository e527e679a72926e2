"""Running the emulator: in the current event loop, in a background thread, or as the CLI command."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import sys
import threading
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from orchestrator.emulator.app import WORLD, build_app
from orchestrator.emulator.clock import Clock
from orchestrator.emulator.settings import EmulatorSettings
from orchestrator.emulator.state import World


class RunningEmulator:
    """A started emulator: where it listens and its world (read it only from the loop that serves it)."""

    def __init__(self, url: str, world: World) -> None:
        self.url = url
        self.world = world


@contextlib.asynccontextmanager
async def serving(
    settings: EmulatorSettings, clock: Clock | None = None, tls: ssl.SSLContext | None = None
) -> AsyncIterator[RunningEmulator]:
    """Serve the emulator in the running event loop for the duration of the block.

    ``clock`` (monotonic seconds, e.g. a ``ManualClock``) drives the emulator's time; handlers are
    never cancelled when a client goes away, so a request the client gave up on is still carried out.
    ``tls`` (a server context, for tests of https) serves it over TLS, at an ``https://`` URL.
    """
    app = build_app(settings, clock)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, handler_cancellation=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, backlog=1024, ssl_context=tls)
        await site.start()
        host, port = runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        scheme = "http" if tls is None else "https"
        yield RunningEmulator(f"{scheme}://{shown}:{port}", app[WORLD])
    finally:
        await runner.cleanup()


async def serve_forever(settings: EmulatorSettings) -> None:
    """The ``evs-snapshot emulator`` command: print the address line, serve until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with serving(settings) as emulator:
        print(f"EVS emulator listening on {emulator.url}", flush=True)
        await stop.wait()
    print("EVS emulator stopped", file=sys.stderr, flush=True)


class EmulatorThread:
    """The emulator on its own event loop in a daemon thread, for synchronous callers (CLI tests)."""

    def __init__(
        self, settings: EmulatorSettings, clock: Clock | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.tls = tls
        self.url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="evs-emulator", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced to the starting thread by start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serving(self.settings, self.clock, self.tls) as emulator:
            self.url = emulator.url
            self._ready.set()
            await self._stop.wait()

    def start(self) -> EmulatorThread:
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._error is not None:
            raise RuntimeError("the emulator did not start") from self._error
        return self

    def stop(self) -> None:
        """Stop the server and wait for its thread (nothing to do when it never started)."""
        if self._loop is None or self._stop is None:
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def state(self) -> dict[str, Any]:
        """``GET /_emulator/state`` over HTTP, as any client would see it."""
        return fetch_state(self.url)

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def fetch_state(url: str) -> dict[str, Any]:
    """Read an emulator's ``/_emulator/state`` (loopback only; no authentication)."""
    with urllib.request.urlopen(f"{url}/_emulator/state", timeout=30) as answer:  # noqa: S310 - loopback http
        state: dict[str, Any] = orjson.loads(answer.read())
    return state
