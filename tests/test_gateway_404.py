"""A 404 means "gone" only when the resource itself says so (EVS.5404, or the Cinder itemNotFound
body); a gateway 404 (APIGW.0101: an API missing in the region) closes the route: exit 3, and
nothing is recorded as deleted (issue 20)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.deleter import delete
from orchestrator.emulator import EmulatorThread, SeedVolume
from orchestrator.errors import RouteClosed
from orchestrator.models import Answer
from orchestrator.retry import RetryPolicy
from tests.helpers import (
    DELETE,
    PROJECT,
    SHOW,
    cli_args,
    csv_manifest,
    hits,
    invoke,
    records,
    requests_of,
    routed,
    snap,
    volume_ids,
)

DISK = volume_ids(1, seed=2001)[0]


@pytest.mark.parametrize(
    ("body", "gone"),
    [
        ({"error": {"code": "EVS.5404", "message": "Resource could not be found."}}, True),
        ({"itemNotFound": {"message": "Snapshot could not be found.", "code": 404}}, True),
        ({"error_code": "APIGW.0101", "error_msg": "The API does not exist"}, False),
        (None, False),
        ({"message": "<html>Not Found</html>"}, False),
    ],
)
def test_only_the_resources_own_404_is_gone(body: object, gone: bool) -> None:
    assert Answer(status=404, body=body, request_id=None).gone is gone
    assert not Answer(status=400, body={"error": {"code": "EVS.5404"}}, request_id=None).gone


@pytest.mark.no_cover
def test_a_gateway_404_on_delete_closes_the_route_and_records_nothing_deleted(
    emulator_thread: Callable[..., EmulatorThread], write: Callable[..., Path], tmp_path: Path
) -> None:
    """prune --keep-last 1: the old snapshot's requests are answered by the gateway (APIGW.0101), the
    GET of its last look before the DELETE first: the run stops with exit 3, names the code, records no
    deletion, sends no DELETE, and the snapshot is still there."""
    newest, old = snap(DISK, 1), snap(DISK, 5)
    emu = emulator_thread(
        volumes=(SeedVolume(volume_id=DISK),),
        snapshots=(newest, old),
        gateway_404=(old.id,),
        deleting_seconds=0.05,
    )
    report = tmp_path / "prune.jsonl"
    manifest = csv_manifest(write, [DISK])
    result = invoke(
        [
            *cli_args("prune", manifest, endpoint=emu.url, project_id=PROJECT, report=report),
            *("--keep-last", "1", "--apply", "--max-attempts", "3", "--backoff-initial", "0.01"),
        ]
    )
    assert result.exit_code == 3, result.output + result.stderr
    assert "APIGW.0101" in result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert not [r for r in records(report) if r["outcome"] == "deleted"]
    assert requests_of(emu.state(), SHOW) == {"404": 1}
    assert DELETE not in emu.state()["requests"]
    assert {s["id"]: s["status"] for s in emu.state()["snapshots"]} == {
        newest.id: "available",
        old.id: "available",
    }


@pytest.mark.anyio
async def test_a_gateway_404_on_the_delete_itself_closes_the_route(emulator: Callable[..., Any]) -> None:
    """The one DELETE loop (``deleter.delete``) meets the gateway's 404: ``RouteClosed`` naming
    APIGW.0101, one DELETE sent, and the snapshot is still there (never read as gone)."""
    old = snap(DISK, 5)
    running = await emulator(snapshots=(old,), gateway_404=(old.id,))
    async with routed(running.url) as route:
        with pytest.raises(RouteClosed) as closed:
            await delete(route, old.id, RetryPolicy(max_attempts=3, initial_wait=0.01, max_wait=0.02))
    assert closed.value.code == "APIGW.0101"
    assert hits(running, DELETE) == {"404": 1}
    assert [s.id for s, _ in running.world.live_snapshots()] == [old.id]
