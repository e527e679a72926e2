"""A signature refused as expired (401 APIGW.0303) says, on every command, that the local clock is off,
by how much (the local clock against the answer's Date header), and names the 15-minute limit."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from orchestrator.api import signing
from orchestrator.api.iam import refusal
from orchestrator.emulator import EmulatorThread, SeedVolume
from orchestrator.models import Answer
from tests.helpers import PROJECT, cli_args, csv_manifest, invoke, volume_ids

DISK = volume_ids(1, seed=2002)[0]
EXPIRED = {
    "error_code": "APIGW.0303",
    "error_msg": "Incorrect IAM authentication information: signature expired",
}


def test_the_advice_tells_the_offset_and_the_limit() -> None:
    now = datetime(2026, 12, 7, 4, 0, 0, tzinfo=UTC)
    gateway = format_datetime(now - timedelta(seconds=1234), usegmt=True)
    said = signing.clock_advice("APIGW.0303", gateway, now=now.timestamp())
    assert "the local clock is off: it is 1234 s (20.6 min) ahead of the gateway's" in said
    assert "15 minutes" in said
    behind = signing.clock_advice(
        "APIGW.0303", format_datetime(now + timedelta(hours=1), usegmt=True), now=now.timestamp()
    )
    assert "3600 s (60.0 min) behind" in behind
    assert "15 minutes" in signing.clock_advice("APIGW.0303", None)  # no Date header: no number
    assert signing.clock_advice("APIGW.0301", gateway) == ""  # another refusal: nothing of the clock


def test_an_iam_refusal_tells_the_clock_too() -> None:
    gateway = format_datetime(datetime.now(UTC) + timedelta(minutes=30), usegmt=True)
    answer = Answer(status=401, body=EXPIRED, request_id=None, date=gateway)
    code, message = refusal(answer, "IAM (project lookup)")
    assert code == "APIGW.0303"
    assert "the local clock is off" in message
    assert "behind" in message


def offset_in(text: str) -> int:
    found = re.search(r"it is (\d+) s \(", text)
    assert found is not None, text
    return int(found.group(1))


@pytest.mark.parametrize(
    "command",
    [
        ["select", "--status", "available"],
        ["prune", "MANIFEST", "--keep-last", "1"],
        ["audit", "MANIFEST", "--max-age", "1d"],
        ["create", "MANIFEST", "--dry-run"][:2],
    ],
)
def test_every_command_says_the_clock_is_off(
    emulator_thread: Callable[..., EmulatorThread],
    write: Callable[..., Path],
    tmp_path: Path,
    command: list[str],
) -> None:
    """The gateway's clock 20 minutes ahead: the command exits 3 and says the local clock is about
    1200 s behind, and that the limit is 15 minutes; no traceback."""
    emu = emulator_thread(clock_offset=20 * 60, volumes=(SeedVolume(volume_id=DISK),))
    manifest = csv_manifest(write, [DISK])
    args = [str(manifest) if part == "MANIFEST" else part for part in command]
    extra: dict[str, object] = {"report": tmp_path / "r.jsonl"} if args[0] in ("prune", "create") else {}
    if args[0] == "select":
        extra = {"output": tmp_path / "selected.csv"}
    result = invoke(cli_args(*args, endpoint=emu.url, project_id=PROJECT, **extra))
    told = result.output + result.stderr
    assert result.exit_code == 3, told
    assert "Traceback" not in told
    assert "the local clock is off" in told
    assert "behind the gateway's" in told
    assert abs(offset_in(told) - 1200) <= 5
    assert "15 minutes" in told
