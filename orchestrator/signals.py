"""Stopping on SIGINT/SIGTERM: a graceful drain first, then, on a second signal, at once."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import anyio

from orchestrator.console import Console


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
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if received:
                console.error(
                    f"second {name}: stopping now; rows in flight have no record and are looked up "
                    "by --resume before anything is sent again",
                    signal=name,
                )
                sync()
                os._exit(128 + signum)
            received.append(signum)
            console.event(
                "stopping",
                f"{name}: taking no new rows; rows in flight get up to {grace:g}s to finish "
                f"(send {name} again to stop at once)",
                signal=name,
            )
            stop()
            scope.deadline = anyio.current_time() + grace


async def cancel_on_signal(scope: anyio.CancelScope, received: list[int]) -> None:
    """Cancel ``scope`` at the first SIGINT/SIGTERM and note which one (for waits: nothing is in flight)."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            received.append(signum)
            scope.cancel()
            return
