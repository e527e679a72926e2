"""The demo mode of ``create --emulator``: an in-process emulator seeded from the manifest itself.

``create`` imports this module only for ``--emulator``, so a run without it loads no emulator.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from yarl import URL

from orchestrator.duplicates import volume_key
from orchestrator.emulator import EmulatorSettings, SeedVolume, serving
from orchestrator.emulator.settings import DEFAULT_AK, DEFAULT_PROJECT_ID, DEFAULT_SK, VOLUME_STATUSES
from orchestrator.errors import ManifestError
from orchestrator.manifest import RawRow

if TYPE_CHECKING:
    from orchestrator.config import Connection, RowDefaults

EMULATOR_STATUS_COLUMN = "emulator_status"


def demo_defaults(defaults: RowDefaults) -> RowDefaults:
    """The row defaults of a demo run: the emulator's project and region unless the options say."""

    return dataclasses.replace(
        defaults, project_id=defaults.project_id or DEFAULT_PROJECT_ID, region=defaults.region or "cn-north-4"
    )


def emulator_status(raw: RawRow, display: str) -> str:
    """The disk state a row's ``emulator_status`` asks for (default ``available``); one the emulator
    does not know is a manifest error (exit 2) naming ``file:line`` and the states it knows."""

    value = (raw.fields or {}).get(EMULATOR_STATUS_COLUMN)
    status = ("" if value is None else str(value).strip()) or "available"
    if status not in VOLUME_STATUSES and status != "missing":
        known = ", ".join([*sorted(VOLUME_STATUSES), "missing"])
        raise ManifestError(
            display,
            raw.line,
            f"{EMULATOR_STATUS_COLUMN} {status!r} is not a disk state",
            f"use one of: {known}",
        )
    return status


@contextlib.asynccontextmanager
async def with_emulator(
    defaults: RowDefaults, connection: Connection, rows: Iterator[RawRow], *, display: str
) -> AsyncIterator[tuple[RowDefaults, Connection]]:
    """Start an in-process emulator seeded with the manifest's volumes; the run's defaults and
    connection, pointed at it.

    A manifest column ``emulator_status`` (``available``, ``in-use``, ``error``, ... or ``missing``)
    sets each disk's state, so a demo or rehearsal can show every outcome.
    """
    row_defaults = demo_defaults(defaults)
    project, region = str(row_defaults.project_id), str(row_defaults.region)
    seeds: dict[str, SeedVolume] = {}
    for raw in rows:
        key = volume_key(raw.fields, defaults) if raw.fields is not None else None
        status = emulator_status(raw, display)
        if key is not None and status != "missing":
            volume_id = key.decode().split("/")[0]
            seeds[volume_id] = SeedVolume(volume_id=volume_id, status=status)
    emulator_settings = EmulatorSettings(
        volumes=tuple(seeds.values()), project_id=project, region=region, creating_seconds=2.0
    )
    async with serving(emulator_settings) as running:
        yield (
            dataclasses.replace(defaults, project_id=project, region=region),
            dataclasses.replace(
                connection,
                endpoints=dataclasses.replace(
                    connection.endpoints, evs=URL(running.url), iam=URL(running.url)
                ),
                auth_kind="aksk",
                token_file=None,
                environ={"HUAWEICLOUD_SDK_AK": DEFAULT_AK, "HUAWEICLOUD_SDK_SK": DEFAULT_SK},
            ),
        )
