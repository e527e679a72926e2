"""Stopping on SIGINT/SIGTERM: one receiver for the whole command, and phases that change what it does.

``guarded`` runs a command (``entry.run`` calls it) with the one receiver of SIGINT and SIGTERM. What the
first signal does depends on the phase the command is in:

- no phase (start-up, the manifest pass, the credential proof, the quota pre-flight, listings and
  checks): the command's scope is cancelled at once, so nothing more is sent, and the command ends
  with ``Interrupted`` (exit 130/143);
- a drain phase (``drain_on_signal``, ``draining``: create's rows, prune's and cleanup's deletions,
  rollbacks): no new work is taken, work in flight gets a grace period, then the phase is cancelled;
  the command prints its summary and raises ``Interrupted`` itself;
- a cancel phase (``cancel_on_signal``: waits and audit, where nothing is in flight that must end):
  the phase is cancelled at once and the command prints its summary.

A second signal ends the process at once in every phase, after saying so, fsyncing the report and
writing its exit code to the side files (``stopping_now``; a drained run that wrote them: their code).
A signal that ends the command before its run wrote its side files (after the options are read: at
start-up, in the manifest pass, in a listing or check) writes 130/143 to them (``stopped_early``), so
``--summary-json`` and ``--metrics-file`` never keep the previous run's code.
Once a run has finished (``run_finished``: every record written, the summary printed, the side files
written with its exit code) a signal changes nothing: the process ends with that exit code, after the
end notifications (a second signal: at once).
A signal the process inherited as ignored (SIGINT in a background job of a script, as POSIX shells
start them) stays ignored: ``kill -TERM`` stops such a run.

Synchronous passes (a manifest read) run in a worker thread (``in_thread``), where ``stop_point``
(called every ``STOP_EVERY`` rows by the manifest reader) ends them soon after the command's scope
was cancelled, while the event loop stays free to receive signals.

A job that never waits (create's dry run) runs without an event loop (``guarded_now``): the same
receiver is a signal handler, and "cancel at once" raises where the job is.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

import anyio
import anyio.to_thread

from orchestrator.console import Console
from orchestrator.errors import STOPPED_ADVICE, Interrupted

if TYPE_CHECKING:
    import anyio.abc

T = TypeVar("T")
SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOP_EVERY = 1024  # rows between two looks at the command's cancellation in a synchronous pass


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Phase:
    """What the first signal does in a phase, and what a second one leaves behind (said as it exits)."""

    first: Callable[[int], None]
    left: str = "nothing more is sent"
    sync: Callable[[], None] = lambda: None


class Guard:
    """The command's receiver: the signals it received and the phases it is in (the last one acts)."""

    def __init__(self, console: Console, cancel: Callable[[], None] | None = None) -> None:
        self.console = console
        self.cancel = cancel  # what a signal outside every phase does (cancels the command's scope)
        self.received: list[int] = []
        self.phases: list[Phase] = []
        self.finished: int | None = None  # the exit code of a run that has finished (``run_finished``)
        self.said: int | None = None  # the exit code the side files of a run drained after a signal say
        self.last_words: Callable[[int], None] | None = (
            None  # before a second signal's exit (``stopping_now``)
        )
        # a signal inherited as ignored stays ignored (POSIX: a script's background job ignores SIGINT)
        self.signals = tuple(signum for signum in SIGNALS if signal.getsignal(signum) is not signal.SIG_IGN)

    @contextlib.contextmanager
    def entered(self, phase: Phase) -> Iterator[None]:
        self.phases.append(phase)
        try:
            yield
        finally:
            self.phases.remove(phase)

    def deliver(self, signum: int) -> None:
        name = signal.Signals(signum).name
        phase = self.phases[-1] if self.phases else None
        if self.finished is not None:  # the run's summary and side files already say how it ended
            self.console.event(
                "stopping", f"{name}: the run had finished; it exits {self.finished}, as it said", signal=name
            )
            if self.received:
                os._exit(self.finished)
            self.received.append(signum)
            return
        if self.received:
            left = phase.left if phase is not None else "nothing more is sent"
            code = 128 + signum if self.said is None else self.said
            said = "" if self.said is None else f"; it exits {code}, as it said"
            self.console.error(f"second {name}: stopping now; {left}{said}", signal=name)
            if phase is not None:
                phase.sync()
            if self.said is None:  # the side files say this exit, not the last run's
                (self.last_words or stopped_early)(code)
            os._exit(code)
        self.received.append(signum)
        if phase is not None:
            phase.first(signum)
        elif self.cancel is not None:
            self.cancel()

    async def receive(self, *, task_status: anyio.abc.TaskStatus[None] | None = None) -> None:
        """Receive every signal until cancelled (``task_status`` is set once the handlers are in place).

        Its default is ``None``, not ``anyio.TASK_STATUS_IGNORED``: that attribute, read where this
        class is defined, would import anyio's task machinery into a dry run (``benchmarks startup``)."""
        if threading.current_thread() is not threading.main_thread():  # signals go to the main thread only
            if task_status is not None:
                task_status.started()
            await anyio.sleep_forever()
        with anyio.open_signal_receiver(*self.signals) as signals:
            if task_status is not None:
                task_status.started()
            async for signum in signals:
                self.deliver(signum)


_CURRENT: contextvars.ContextVar[Guard | None] = contextvars.ContextVar("evs_snapshot_guard", default=None)

# What a signal that ends the command before its run has written its side files writes there: set once
# their paths are known (``frame.record_early_stops``, as the options are read), until the command ends.
_early_words: Callable[[int], None] | None = None


def on_early_stop(words: Callable[[int], None] | None) -> None:
    """``words(code)`` writes ``code`` to the command's side files when a signal ends it before its run
    said how it ended (``None``: the command has ended, or has none)."""
    global _early_words  # noqa: PLW0603 - one command a process; the CLI resets it as the command ends
    _early_words = words


def stopped_early(code: int) -> None:
    """A signal ends the command with ``code`` before its run wrote its side files: they say ``code``
    (``__main__``'s start-up receiver, and ``guarded`` below), once."""
    words = _early_words
    on_early_stop(None)
    if words is not None:
        words(code)


def _unsaid(guard: Guard, error: Exception | None) -> None:
    """A command stopped by a signal whose run did not write its side files with that (a signal outside
    every phase, before or inside the run frame; audit's cancelled listing): they say 128+N now."""
    if guard.finished is not None or guard.said is not None:
        return
    if isinstance(error, Interrupted):
        stopped_early(error.exit_code)
    elif error is None and guard.received:
        stopped_early(128 + guard.received[0])


async def guarded(entry: Callable[[], Awaitable[int]], console: Console) -> int:
    """Run ``entry`` under the command's receiver; a signal that cancelled it raises ``Interrupted``."""
    try:
        return await _guarded(entry, console)
    finally:
        on_early_stop(None)


async def _guarded(entry: Callable[[], Awaitable[int]], console: Console) -> int:
    scope = anyio.CancelScope()
    guard = Guard(console, scope.cancel)
    token = _CURRENT.set(guard)
    code = 0
    error: Exception | None = None
    try:
        async with anyio.create_task_group() as group:
            await group.start(guard.receive)
            try:
                with scope:
                    code = await entry()
            except Exception as exc:  # raised below, outside the task group: not wrapped in a group
                error = exc
            group.cancel_scope.cancel()
    finally:
        _CURRENT.reset(token)
    _unsaid(guard, error)
    if error is not None:
        raise error
    if guard.finished is not None:
        return guard.finished
    if guard.received:
        raise Interrupted(guard.received[0], STOPPED_ADVICE)
    return code


class _Cancelled(BaseException):
    """Raised by the receiver of ``guarded_now`` where the job is: a signal outside every phase."""


def guarded_now(entry: Callable[[], int], console: Console) -> int:
    """``guarded`` for a job that never waits, without an event loop (create's dry run: no asyncio to
    import, ``benchmarks startup``): the receiver is a signal handler; outside every phase a signal
    stops the job where it is, and the command ends with ``Interrupted`` as under ``guarded``."""

    def cancel() -> None:
        raise _Cancelled

    guard = Guard(console, cancel)
    saved = {signum: signal.getsignal(signum) for signum in guard.signals}
    token = _CURRENT.set(guard)
    code = 0
    error: Exception | None = None
    try:
        for signum in guard.signals:
            signal.signal(signum, lambda signum, _frame: guard.deliver(signum))
        code = entry()
    except _Cancelled:
        pass
    except Interrupted as exc:
        error = exc
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        _CURRENT.reset(token)
    _unsaid(guard, error)
    on_early_stop(None)
    if error is not None:
        raise error
    if guard.finished is not None:
        return guard.finished
    if guard.received:
        raise Interrupted(guard.received[0], STOPPED_ADVICE)
    return code


def run_finished(code: int) -> None:
    """The running command's run has finished with exit ``code`` (its summary printed, its side files
    about to say ``code``): a signal from now on leaves it so. A run drained after a signal is stopping:
    it calls this once its side files say ``code`` (130/143), and a second signal then exits with it."""
    guard = _CURRENT.get()
    if guard is None:
        return
    if guard.received:
        guard.said = code
    else:
        guard.finished = code


def stopping_now(last_words: Callable[[int], None]) -> None:
    """What the running command does before a second signal ends it at once with an exit code (the
    frame: writes that code to the side files, which would otherwise still say the last run's)."""
    guard = _CURRENT.get()
    if guard is not None:
        guard.last_words = last_words


def received() -> list[int]:
    """The signals the running command received (empty outside ``guarded``)."""
    guard = _CURRENT.get()
    return [] if guard is None else list(guard.received)


async def _in_phase(phase: Phase, console: Console) -> None:
    """Stay in ``phase`` until cancelled (with a receiver of its own when no command guard runs)."""
    guard = _CURRENT.get()
    if guard is not None:
        with guard.entered(phase):
            await anyio.sleep_forever()
    local = Guard(console)
    with local.entered(phase):
        await local.receive()


def _drain_phase(
    *,
    stop: Callable[[], None],
    scope: anyio.CancelScope | None,
    grace: float,
    received: list[int],
    console: Console,
    sync: Callable[[], None],
    what: str,
    left: str,
) -> Phase:
    def first(signum: int) -> None:
        name = signal.Signals(signum).name
        received.append(signum)
        console.event("stopping", f"{name}: {what} (send {name} again to stop at once)", signal=name)
        stop()
        if scope is not None:  # None: nothing in flight (rows written without a loop)
            scope.deadline = min(scope.deadline, anyio.current_time() + grace)

    return Phase(first=first, left=left, sync=sync)


ROWS_LEFT = "rows in flight have no record and are looked up by --resume before anything is sent again"


async def drain_on_signal(
    *,
    stop: Callable[[], None],
    scope: anyio.CancelScope,
    grace: float,
    received: list[int],
    console: Console,
    sync: Callable[[], None],
) -> None:
    """First signal: take no new rows and give rows in flight ``grace`` seconds. Second: exit now."""
    phase = _rows_phase(stop=stop, scope=scope, grace=grace, received=received, console=console, sync=sync)
    await _in_phase(phase, console)


@contextlib.contextmanager
def draining_rows(
    *,
    stop: Callable[[], None],
    grace: float,
    received: list[int],
    console: Console,
    sync: Callable[[], None],
) -> Iterator[None]:
    """``drain_on_signal`` around rows written without a loop (``guarded_now``): the first signal calls
    ``stop``; nothing is in flight, so nothing waits for the grace period."""
    phase = _rows_phase(stop=stop, scope=None, grace=grace, received=received, console=console, sync=sync)
    guard = _CURRENT.get()
    with guard.entered(phase) if guard is not None else contextlib.nullcontext():
        yield


def _rows_phase(
    *,
    stop: Callable[[], None],
    scope: anyio.CancelScope | None,
    grace: float,
    received: list[int],
    console: Console,
    sync: Callable[[], None],
) -> Phase:
    what = f"taking no new rows; rows in flight get up to {grace:g}s to finish"
    return _drain_phase(
        stop=stop,
        scope=scope,
        grace=grace,
        received=received,
        console=console,
        sync=sync,
        what=what,
        left=ROWS_LEFT,
    )


@contextlib.contextmanager
def draining(
    *,
    stop: Callable[[], None],
    grace: float,
    received: list[int],
    console: Console,
    sync: Callable[[], None],
    what: str | None = None,
    left: str = ROWS_LEFT,
) -> Iterator[None]:
    """The drain phase around a block: the first signal calls ``stop`` and gives the block ``grace``
    seconds, then cancels it; ``what`` is said when the signal arrives (``received`` notes it)."""
    guard = _CURRENT.get()
    with anyio.CancelScope() as scope:
        phase = _drain_phase(
            stop=stop,
            scope=scope,
            grace=grace,
            received=received,
            console=console,
            sync=sync,
            what=what or f"taking no new work; work in flight gets up to {grace:g}s to finish",
            left=left,
        )
        with guard.entered(phase) if guard is not None else contextlib.nullcontext():
            yield


async def cancel_on_signal(scope: anyio.CancelScope, received: list[int]) -> None:
    """Cancel ``scope`` at the first SIGINT/SIGTERM and note which one (for waits: nothing is in flight)."""

    def first(signum: int) -> None:
        received.append(signum)
        scope.cancel()

    await _in_phase(Phase(first=first), Console(sys.stderr))


@contextlib.contextmanager
def blocking() -> Iterator[None]:
    """Around a read that may block the event loop's thread (standard input from a stalled producer):
    a signal raises ``Interrupted`` there and then, instead of waiting for the loop that cannot run."""

    def stop(signum: int, _frame: object) -> None:
        raise Interrupted(signum, STOPPED_ADVICE)

    if threading.current_thread() is not threading.main_thread():  # signals go to the main thread only
        yield
        return
    saved = {signum: signal.getsignal(signum) for signum in SIGNALS}
    try:
        for signum, handler in saved.items():
            if handler is not signal.SIG_IGN:
                signal.signal(signum, stop)
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def stop_point() -> None:
    """In a worker thread of ``in_thread``: raise the command's cancellation, if it was cancelled."""
    with contextlib.suppress(RuntimeError):  # not in a worker thread: the event loop's checkpoints do it
        import anyio.from_thread  # noqa: PLC0415 - 13 ms of start-up (results.md, session 13)

        anyio.from_thread.check_cancelled()


async def in_thread(work: Callable[[], T]) -> T:
    """Run a synchronous pass in a worker thread, so that signals are received while it runs; the pass
    calls ``stop_point`` now and then, and ends soon after the command is cancelled."""
    return await anyio.to_thread.run_sync(work)
