"""How a command runs its one async job, and which error ended it; shared by the commands and ``cli``.

A command module calls ``run`` with its job; ``cli.Main.main`` (the one error boundary) asks
``first_error`` which error a failed job ended with. Neither imports a command nor the CLI, so the
commands and the CLI that names them do not import each other.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable

from orchestrator.console import Console
from orchestrator.errors import EvsSnapshotError

INTERNAL_ERROR = 70  # anything but our errors is a bug


def first_error(exc: BaseException) -> BaseException:
    """Our error inside (possibly nested) task-group exception groups, else the first leaf."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = [first_error(inner) for inner in exc.exceptions]
        ours = [leaf for leaf in leaves if isinstance(leaf, EvsSnapshotError)]
        return ours[0] if ours else leaves[0]
    return exc


def exit_code_of(exc: BaseException) -> int:
    """The exit code a command that ended with ``exc`` exits with (``cli.Main.main`` maps it so): our
    error's own code, 128 + the signal for a cancellation by a signal, else ``INTERNAL_ERROR``."""
    from orchestrator.signals import received  # noqa: PLC0415 - signals imports anyio

    error = first_error(exc)
    if isinstance(error, EvsSnapshotError):
        return error.exit_code
    signals = received()
    if signals:
        return 128 + signals[0]
    if isinstance(error, KeyboardInterrupt):
        return 130
    return INTERNAL_ERROR


def run(entry: Callable[[], Awaitable[int]], *, console: Console | None = None) -> int:
    """Run one async entry point and return its exit code (errors go to ``cli.Main.main``).

    The command runs under one receiver of SIGINT/SIGTERM (``signals.guarded``): a signal outside a
    drain phase cancels the command at once and it exits 130/143; ``console`` says a second signal.
    """
    import anyio  # noqa: PLC0415 - keeps --help fast

    from orchestrator.signals import guarded  # noqa: PLC0415

    said = console or Console(sys.stderr)
    return anyio.run(guarded, entry, said)
