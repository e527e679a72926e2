"""The quota pre-flight is the request that proves the credentials: the creates fan out right after it.

Until one request on a route got through, requests on it go one at a time; with ``--project-id`` the
quota GET is that request, so no create is sent alone to prove the credentials again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers import (
    CREATE_ROUTE,
    QUOTA_ROUTE,
    create_args,
    csv_manifest,
    invoke,
    journal,
    lines,
    requests_of,
    volume_ids,
)


def test_the_creates_go_out_together_once_the_quota_check_answered(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """One quota GET, then all six creates leave before the first of them is answered (300 ms each)."""
    emu = emulator_thread(any_volume=True, latency_ms=300)
    report = tmp_path / "r.jsonl"
    manifest = csv_manifest(write, volume_ids(6, seed=190))
    result = invoke(create_args(emu.url, manifest, report, "--concurrency", "8"))
    assert result.exit_code == 0, result.output
    state = emu.state()
    assert requests_of(state, QUOTA_ROUTE) == {"200": 1}
    assert requests_of(state, CREATE_ROUTE) == {"202": 6}
    order = [line.get("outcome") for line in lines(report)[1:]]
    assert len(journal(report)) == 6
    assert order[:6] == ["sending"] * 6, order  # every create left before the first answer came
