"""A local stand-in for the EVS snapshot API and the IAM calls the tool makes (aiohttp.web)."""

from __future__ import annotations

from orchestrator.emulator.app import build_app
from orchestrator.emulator.server import (
    EmulatorThread,
    RunningEmulator,
    emulator_thread,
    fetch_state,
    serve_forever,
    serving,
)
from orchestrator.emulator.settings import EmulatorSettings, SeedVolume, read_volumes

__all__ = [
    "EmulatorSettings",
    "EmulatorThread",
    "RunningEmulator",
    "SeedVolume",
    "build_app",
    "emulator_thread",
    "fetch_state",
    "read_volumes",
    "serve_forever",
    "serving",
]
