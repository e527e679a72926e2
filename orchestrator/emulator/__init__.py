"""A local stand-in for the EVS snapshot API and the IAM calls the tool makes (aiohttp.web).

The server parts are imported on first use, so that importing ``orchestrator.emulator.settings``
(which every CLI start does) does not load aiohttp.web; aiohttp itself is loaded first through
``orchestrator.api.tls``, without the two CA-loading TLS contexts a server never uses (about 0.07 s
of CPU in each ``create --emulator`` or ``evs-snapshot emulator`` process). ``ManualClock`` is the
test clock: pass it to ``serving``, ``EmulatorThread`` or ``build_app`` and advance it instead of
sleeping.
"""

from __future__ import annotations

import importlib
from typing import Any

from orchestrator.emulator.clock import ManualClock
from orchestrator.emulator.seedfiles import read_snapshots, read_volumes
from orchestrator.emulator.settings import EmulatorSettings, SeedSnapshot, SeedVolume

__all__ = [
    "EmulatorSettings",
    "EmulatorThread",
    "ManualClock",
    "RunningEmulator",
    "SeedSnapshot",
    "SeedVolume",
    "build_app",
    "fetch_state",
    "read_snapshots",
    "read_volumes",
    "serve_forever",
    "serving",
]

_LAZY = {
    "build_app": "orchestrator.emulator.app",
    "EmulatorThread": "orchestrator.emulator.server",
    "RunningEmulator": "orchestrator.emulator.server",
    "fetch_state": "orchestrator.emulator.server",
    "serve_forever": "orchestrator.emulator.server",
    "serving": "orchestrator.emulator.server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'orchestrator.emulator' has no attribute {name!r}")
    importlib.import_module("orchestrator.api.tls")
    return getattr(importlib.import_module(module), name)
