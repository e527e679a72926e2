"""How a command runs its one async job, and the exit code an error that ended it means.

A command module calls ``run`` with its job; ``cli.Main.main`` (the one error boundary) asks
``errors.first_error`` which error a failed job ended with (the CLI does not import this module, so
``--help`` loads no anyio). Neither imports a command nor the CLI, so the commands and the CLI that
names them do not import each other.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Awaitable, Callable

import anyio

from orchestrator.console import Console
from orchestrator.errors import INTERNAL_ERROR, EvsSnapshotError, first_error
from orchestrator.signals import guarded, guarded_now, received


def exit_code_of(exc: BaseException) -> int:
    """The exit code a command that ended with ``exc`` exits with (``cli.Main.main`` maps it so): our
    error's own code, 128 + the signal for a cancellation by a signal, else ``INTERNAL_ERROR``."""

    error = first_error(exc)
    if isinstance(error, EvsSnapshotError):
        return error.exit_code
    signals = received()
    if signals:
        return 128 + signals[0]
    if isinstance(error, KeyboardInterrupt):
        return 130
    return INTERNAL_ERROR


def reason_of(exc: BaseException) -> str:
    """Why a command that ended with ``exc`` stopped, in the words its side files and notifications give:
    our error's message, ``stopped by SIGTERM`` for a cancellation by a signal, else the internal error
    (as ``cli.Main.main`` says it, without its advice)."""
    error = first_error(exc)
    if isinstance(error, EvsSnapshotError):
        return str(error)
    code = exit_code_of(exc)
    if code != INTERNAL_ERROR:
        return f"stopped by {signal.Signals(code - 128).name}"
    return f"internal error: {type(error).__name__}: {error}"


def run(entry: Callable[[], Awaitable[int]], *, console: Console | None = None) -> int:
    """Run one async entry point and return its exit code (errors go to ``cli.Main.main``).

    The command runs under one receiver of SIGINT/SIGTERM (``signals.guarded``): a signal outside a
    drain phase cancels the command at once and it exits 130/143; ``console`` says a second signal.
    """

    said = console or Console(sys.stderr)
    return anyio.run(guarded, entry, said)


def run_now(entry: Callable[[], int], *, console: Console | None = None) -> int:
    """``run`` for a job that never waits: no event loop (create's dry run, ``benchmarks startup``)."""

    return guarded_now(entry, console or Console(sys.stderr))
