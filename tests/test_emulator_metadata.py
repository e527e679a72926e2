"""The emulator's snapshot metadata API: add, update and delete a key, EVS.5403 for ``__system__`` keys,
the IAM action ``--deny`` refuses, and the metadata kept as sent under ``--metadata-rewrite``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from orchestrator.emulator import RunningEmulator, SeedSnapshot
from tests.helpers import PROJECT, call, seeds, volume_ids

Start = Callable[..., Awaitable[RunningEmulator]]
VOLUME = volume_ids(1, seed=911)[0]
SNAP = volume_ids(1, seed=912)[0]
METADATA = f"/v2/{PROJECT}/snapshots/{SNAP}/metadata"
SHOW = f"/v2/{PROJECT}/cloudsnapshots/{SNAP}"
FORBIDDEN = {"error": {"code": "EVS.5403", "message": "metadata can not be operated."}}


async def start(emulator: Start, **options: Any) -> RunningEmulator:
    seeded = SeedSnapshot(
        id=SNAP, volume_id=VOLUME, metadata={"evs_snapshot_run": "r1", "__system__encrypted": "0"}
    )
    return await emulator(volumes=seeds([VOLUME]), snapshots=(seeded,), **options)


async def shown(http: aiohttp.ClientSession, emu: RunningEmulator) -> dict[str, str]:
    status, body, _ = await call(http, emu, "GET", SHOW)
    assert status == 200
    metadata: dict[str, str] = body["snapshot"]["metadata"]
    return metadata


async def test_add_update_and_delete_a_key(emulator: Start, http: aiohttp.ClientSession) -> None:
    """POST adds keys (the others stay), PUT replaces the user's keys (system keys stay), DELETE removes
    one key (200, no body; 404 when it is not there); each answer holds the whole map."""
    emu = await start(emulator)
    status, body, _ = await call(
        http, emu, "POST", METADATA, body={"metadata": {"evs_snapshot_hold": "INC-1"}}
    )
    assert status == 200
    whole = {"evs_snapshot_run": "r1", "__system__encrypted": "0", "evs_snapshot_hold": "INC-1"}
    assert body == {"metadata": whole}
    assert await shown(http, emu) == whole
    status, body, _ = await call(
        http, emu, "POST", METADATA, body={"metadata": {"evs_snapshot_hold": "INC-2"}}
    )
    assert (status, body["metadata"]["evs_snapshot_hold"]) == (200, "INC-2")
    status, _, _ = await call(http, emu, "DELETE", f"{METADATA}/evs_snapshot_hold")
    assert status == 200
    assert await shown(http, emu) == {"evs_snapshot_run": "r1", "__system__encrypted": "0"}
    status, body, _ = await call(http, emu, "DELETE", f"{METADATA}/evs_snapshot_hold")
    assert (status, body["error"]["code"]) == (404, "EVS.5404")
    status, body, _ = await call(http, emu, "PUT", METADATA, body={"metadata": {"a": "b"}})
    assert (status, body) == (200, {"metadata": {"__system__encrypted": "0", "a": "b"}})
    missing = f"/v2/{PROJECT}/snapshots/{volume_ids(1, seed=913)[0]}/metadata"
    status, body, _ = await call(http, emu, "POST", missing, body={"metadata": {"a": "b"}})
    assert (status, body["error"]["code"]) == (404, "EVS.5404")


async def test_system_keys_are_refused(emulator: Start, http: aiohttp.ClientSession) -> None:
    """A __system__ key in a POST or PUT body, or named by a DELETE, is 403 EVS.5403; nothing changes."""
    emu = await start(emulator)
    before = await shown(http, emu)
    for method in ("POST", "PUT"):
        status, body, _ = await call(http, emu, method, METADATA, body={"metadata": {"__system__x": "1"}})
        assert (status, body) == (403, FORBIDDEN)
    status, body, _ = await call(http, emu, "DELETE", f"{METADATA}/__system__encrypted")
    assert (status, body) == (403, FORBIDDEN)
    assert await shown(http, emu) == before
    status, body, _ = await call(http, emu, "POST", METADATA, body={"metadata": {"a": 1}})
    assert (status, body["error"]["code"]) == (400, "EVS.5400")


async def test_deny_update_and_lower_case_rewrite(emulator: Start, http: aiohttp.ClientSession) -> None:
    """--deny evs:snapshots:update refuses the metadata calls (403 naming it); --metadata-rewrite lower
    lower-cases keys in answers while the metadata is kept as sent."""
    emu = await start(emulator, deny=("evs:snapshots:update",))
    status, body, _ = await call(http, emu, "POST", METADATA, body={"metadata": {"k": "v"}})
    assert status == 403
    assert "evs:snapshots:update" in str(body)
    emu = await start(emulator, metadata_rewrite="lower")
    status, body, _ = await call(http, emu, "POST", METADATA, body={"metadata": {"Ticket": "CHG-1"}})
    assert (status, body["metadata"]["ticket"]) == (200, "CHG-1")
    async with http.get(f"{emu.url}/_emulator/state") as response:
        kept = orjson.loads(await response.read())["snapshots"][0]["metadata"]
    assert kept["Ticket"] == "CHG-1"
