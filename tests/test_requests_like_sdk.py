"""Requests as the official SDK sends them (evs-api.md 10): the first page of a list has no ``offset``
(documented as "greater than 0"), and a GET or DELETE carries no ``Content-Type`` (a signed header
the SDK sends only with a body). The emulator counts what the SDK would not send (``unlike_sdk``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.emulator import EmulatorThread, SeedVolume
from tests.helpers import PROJECT, TOKEN_ENV, cli_args, csv_manifest, invoke, requests_of, snap, volume_ids

DISKS = volume_ids(2, seed=2004)


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_the_tool_sends_what_the_sdk_sends(
    emulator_thread: Callable[..., EmulatorThread], write: Callable[..., Path], tmp_path: Path
) -> None:
    """select (the disk list), create (POST with a body, GET polls), prune (the snapshot list, DELETE,
    GETs): every GET and DELETE without a Content-Type, no list page with offset=0; the signatures
    (AK/SK, which sign the headers sent) are accepted all along."""
    emu = emulator_thread(
        volumes=tuple(SeedVolume(volume_id=disk) for disk in DISKS),
        snapshots=(snap(DISKS[0], 1), snap(DISKS[0], 5)),
        creating_seconds=0.3,  # --wait polls a few times, not for 2 s
        deleting_seconds=0.05,
    )
    manifest = csv_manifest(write, [DISKS[0]])
    selected = invoke(
        cli_args(
            "select", "--status", "available", endpoint=emu.url, project_id=PROJECT, output=tmp_path / "s.csv"
        )
    )
    assert selected.exit_code == 0, selected.output + selected.stderr
    created = invoke(
        cli_args(
            "create",
            manifest,
            endpoint=emu.url,
            project_id=PROJECT,
            report=tmp_path / "c.jsonl",
            wait=True,
            poll_interval=0.1,
        )
    )
    assert created.exit_code == 0, created.output + created.stderr
    pruned = invoke(
        [
            *cli_args("prune", manifest, endpoint=emu.url, project_id=PROJECT, report=tmp_path / "p.jsonl"),
            *("--keep-last", "1", "--apply"),
        ]
    )
    assert pruned.exit_code == 0, pruned.output + pruned.stderr
    state = emu.state()
    assert requests_of(state, "DELETE /v2/{project_id}/cloudsnapshots/{snapshot_id}")["202"] == 2
    assert requests_of(state, "GET /v2/{project_id}/cloudvolumes/detail")["200"] >= 1
    assert requests_of(state, "GET /v2/{project_id}/cloudsnapshots/detail")["200"] >= 1
    assert state["unlike_sdk"] == {}
    assert not [route for route, counts in state["requests"].items() if set(counts) - {"200", "202", "404"}]


def test_a_token_request_is_sent_like_the_sdks_too(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    emu = emulator_thread(volumes=tuple(SeedVolume(volume_id=disk) for disk in DISKS))
    result = invoke(
        cli_args(
            "select", "--status", "available", endpoint=emu.url, project_id=PROJECT, output=tmp_path / "s.csv"
        ),
        TOKEN_ENV,
    )
    assert result.exit_code == 0, result.output + result.stderr
    assert emu.state()["unlike_sdk"] == {}
