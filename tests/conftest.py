"""Shared fixtures: the emulator on a loopback port (in the test's loop, or in a thread for CLI tests).

Both factories take ``clock=``: pass the ``clock`` fixture (a ``ManualClock``) and advance it to move
the emulator's time (token expiry, ``creating``, deletes, rollbacks) without sleeping.

Property tests run under a hypothesis profile: ``suite`` (the default, sized for ``make test``) or
``thorough`` (``HYPOTHESIS_PROFILE=thorough``: ten times the examples, for a change to a parser, the
signer or the rules). Neither checks wall-clock time: the deadline and the ``too_slow`` health check
measure how busy the machine is, not what the code does.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
import signal
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import coverage
import pytest
from hypothesis import HealthCheck, settings

import orchestrator

# aiohttp as the tool loads it (api/tls.py): without the two CA-loading TLS contexts it builds at import
# and no test uses, about 0.06 s of CPU in pytest and in each worker.
from orchestrator.api.tls import aiohttp
from orchestrator.emulator import (
    EmulatorSettings,
    EmulatorThread,
    ManualClock,
    RunningEmulator,
    serving,
)
from orchestrator.emulator.clock import Clock
from tests.helpers import TOKEN, Receiver, stop_launcher

# The tests' own processes get SIGINT's default action, however pytest was started: a shell without job
# control (``sh -c 'make test &'``, some CI runners) starts it with SIGINT ignored, which every process
# it starts would inherit, and the tool rightly leaves an ignored SIGINT ignored (a background run).
# A handler here (not SIG_DFL: pytest's own Ctrl-C stays a KeyboardInterrupt) resets to the default in
# each child at exec. Tests of a background run ignore SIGINT in their child themselves.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

settings.register_profile(
    "suite", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))


def pytest_configure(config: pytest.Config) -> None:
    """Under xdist the controller runs no test, yet pytest-cov traces it all along (its start-up, then
    each of the workers' reports as it arrives): once this conftest is imported (the package's
    import-time lines it ran, every worker runs too), its coverage stops. What it measured is kept and
    combined with the workers' as before."""
    if config.getoption("numprocesses", None) and not hasattr(config, "workerinput"):
        # Every module of the package imported here, traced: the workers collect untraced
        # (``pytest_collection``), and the import-time lines of a module that only a test module
        # imports are measured here instead.
        for module in pkgutil.walk_packages(orchestrator.__path__, "orchestrator."):
            importlib.import_module(module.name)
        while (running := coverage.Coverage.current()) is not None:
            running.stop()


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """``no_cover`` under xdist: pytest-cov pauses its worker's coverage, but an xdist worker may also
    hold a second one (pytest-cov starts its controller's there too; ``tests/__init__.py`` stops it),
    which the pause would resume; stop every coverage still tracing for the test, and start them again
    after it."""
    with untraced(item.get_closest_marker("no_cover") is not None):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_collection(session: pytest.Session) -> Iterator[None]:
    """An xdist worker collects untraced: importing the test modules and building 1,400 items ran
    under coverage's tracer, which costs on every line whoever's it is (about 1.4 s of CPU in each
    worker). The package's import-time lines are measured in the controller (``pytest_configure``),
    which imports every module of it; no test runs during collection."""
    with untraced(hasattr(session.config, "workerinput")):
        yield


@contextlib.contextmanager
def untraced(stop: bool) -> Iterator[None]:
    """Every coverage tracing this thread stopped for the block, and started again after it, when
    ``stop``."""
    stopped: list[coverage.Coverage] = []
    while stop and (running := coverage.Coverage.current()) is not None:
        running.stop()
        stopped.append(running)
    try:
        yield
    finally:
        for running in reversed(stopped):
            running.start()


@pytest.fixture(scope="session", autouse=True)
def launcher_ended_with_the_session() -> Iterator[None]:
    """The launcher of the tests' CLI processes (``helpers.run_process``) ends with the session, waited
    for: the CPU of the processes it started counts in the worker's own children's, as exec's would."""
    yield
    stop_launcher()


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def lock_dir_of_the_test(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test its own lock directory (``$EVS_SNAPSHOT_LOCK_DIR``): runs of fixed run ids in parallel
    tests, or in other checkouts on the machine, must not hold each other's run locks."""
    locks = tmp_path_factory.mktemp("locks")
    monkeypatch.setenv("EVS_SNAPSHOT_LOCK_DIR", str(locks))
    return locks


@pytest.fixture
def clock() -> ManualClock:
    """The emulator's time, moved by the test (``clock.advance(seconds)``) instead of sleeping."""
    return ManualClock()


@pytest.fixture
def quick_deletion_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """The deleter's first pause between two rounds of confirming its deletions is 0.2 s, and no option
    sets it: a quarter of it for tests whose emulator deletes in 0.05 s (``helpers.start``), so that
    each command that deletes does not wait out 0.2 s of nothing (use:
    ``pytestmark = pytest.mark.usefixtures("quick_deletion_polls")``)."""
    monkeypatch.setattr("orchestrator.deleter.FIRST_POLL", 0.05)


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

    def start(
        clock: Clock | None = None, tls: ssl.SSLContext | None = None, **options: Any
    ) -> EmulatorThread:
        options.setdefault("token", TOKEN)
        running = EmulatorThread(EmulatorSettings(**options), clock, tls).start()
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


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(statuses: list[int | None] | None = None) -> Receiver:
        started.append(Receiver(statuses))
        return started[-1]

    yield start
    for running in started:
        running.stop()
