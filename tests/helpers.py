"""Helpers shared by the test modules: invoking the CLI, building arguments, reading reports and state."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
from click.testing import CliRunner, Result
from yarl import URL

from orchestrator.api.routes import Route, connect
from orchestrator.cli import main
from orchestrator.config import Connection, Endpoints
from orchestrator.emulator.settings import DEFAULT_AK, DEFAULT_SK
from orchestrator.models import SnapshotRequest

PROJECT = "0123456789abcdef0123456789abcdef"
TOKEN = "test-fixed-token-0001"
NO_CREDENTIALS = {
    "OS_AUTH_TOKEN": "",
    "HUAWEICLOUD_SDK_AK": "",
    "HUAWEICLOUD_SDK_SK": "",
    "HUAWEICLOUD_SDK_SECURITY_TOKEN": "",
    "HUAWEICLOUD_SDK_CREDENTIALS_FILE": "/nonexistent/credentials",
    "OS_USERNAME": "",
    "OS_PASSWORD": "",
    "OS_USER_DOMAIN_NAME": "",
    "HUAWEICLOUD_SDK_PROJECT_ID": "",
    "OS_REGION_NAME": "",
}
AKSK_ENV = {**NO_CREDENTIALS, "HUAWEICLOUD_SDK_AK": DEFAULT_AK, "HUAWEICLOUD_SDK_SK": DEFAULT_SK}
TOKEN_ENV = {**NO_CREDENTIALS, "OS_AUTH_TOKEN": TOKEN}
FAST_RETRIES = (
    "--max-attempts",
    "12",
    "--backoff-initial",
    "0.05",
    "--backoff-max",
    "0.5",
    "--settle",
    "0.5",
    "--timeout",  # a resumed row in flight is looked up for --settle after its send plus this
    "3",
)
CREATE_ROUTE = "POST /v2/{project_id}/cloudsnapshots"
LIST_ROUTE = "GET /v2/{project_id}/cloudsnapshots/detail"


def invoke(
    args: list[str],
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    *,
    base: Mapping[str, str] = AKSK_ENV,
) -> Result:
    """Run the CLI in-process (click's runner): ``base`` credentials (AK/SK for the emulator), then ``env``."""
    runner = CliRunner()
    return runner.invoke(main, args, env={**base, **(env or {})}, input=input, catch_exceptions=False)


def cli_args(*positional: object, **flags: object) -> list[str]:
    """``cli_args("create", manifest, endpoint=url, dry_run=True)`` -> ``["create", "m.csv", "--endpoint", url, "--dry-run"]``.

    ``True`` adds a bare flag; ``False``/``None`` leave it out; a list or tuple repeats the option.
    """
    out = [str(item) for item in positional]
    for key, value in flags.items():
        option = "--" + key.replace("_", "-")
        if value is True:
            out.append(option)
        elif value is False or value is None:
            continue
        elif isinstance(value, list | tuple):
            for item in value:
                out += [option, str(item)]
        else:
            out += [option, str(value)]
    return out


def create_args(url: str, manifest: Path, report: Path, *extra: str, **flags: object) -> list[str]:
    """A create command against one emulator (endpoint and project given)."""
    return [*cli_args("create", manifest, endpoint=url, project_id=PROJECT, report=report, **flags), *extra]


def lines(path: Path) -> list[dict[str, Any]]:
    """Every whole JSON line of a report, the run header included."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.endswith(b"}")]


def records(path: Path) -> list[dict[str, Any]]:
    """Every record of a report (the run header and the journal of ``sending`` records left out)."""
    return [line for line in lines(path) if line.get("type") != "run" and line.get("outcome") != "sending"]


def journal(path: Path) -> list[dict[str, Any]]:
    """The ``sending`` records of a report: one per create request that left, written before it left."""
    return [line for line in lines(path) if line.get("outcome") == "sending"]


def header(path: Path) -> dict[str, Any]:
    first = lines(path)[0]
    assert first.get("type") == "run", first
    return first


SIDE_OUTCOMES = frozenset({"duplicate_deleted", "duplicate_found"})


def last_per_row(path: Path) -> dict[int, dict[str, Any]]:
    """The current state of each row: its last record (sweep side records left out)."""
    final: dict[int, dict[str, Any]] = {}
    for record in records(path):
        if record["outcome"] not in SIDE_OUTCOMES:
            final[record["row"]] = record
    return final


def csv_manifest(write: Callable[..., Path], ids: list[str], name: str = "m.csv") -> Path:
    return write(name, "volume_id\n" + "".join(f"{i}\n" for i in ids))


def requests_of(state: Mapping[str, Any], route: str) -> Counter[str]:
    """The emulator's answers to one route, by status (``dropped`` for closed connections)."""
    return Counter(state["requests"].get(route, {}))


def snapshots_per_volume(state: Mapping[str, Any], run_id: str | None = None) -> Counter[str]:
    """How many live snapshots each volume has (of one run, when ``run_id`` is given)."""
    return Counter(
        snapshot["volume_id"]
        for snapshot in state["snapshots"]
        if run_id is None or (snapshot.get("metadata") or {}).get("evs_snapshot_run") == run_id
    )


def run_process(args: list[str], env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """The CLI as a real process (for signals and exit codes), AK/SK for the emulator by default."""
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **AKSK_ENV, **(env or {})},
    )


def wait_for_records(report: Path, count: int, process: subprocess.Popen[bytes], limit: float = 30.0) -> None:
    """Wait (bounded) until the report holds ``count`` records (the journal not counted) while the process runs."""
    stop = time.monotonic() + limit
    while time.monotonic() < stop and process.poll() is None:
        data = report.read_bytes() if report.exists() else b""
        if data.count(b"\n") - data.count(b'"outcome":"sending"') >= count + 1:  # + the run header
            return
        time.sleep(0.02)
    raise AssertionError(f"report never reached {count} records (process exit {process.poll()})")


def snapshot_request(volume_id: str, row: int = 1, **changes: Any) -> SnapshotRequest:
    """A valid row as the runner receives it: ``row`` on line ``row + 1``, the test project, name ``n``."""
    fields: dict[str, Any] = {
        "row": row,
        "line": row + 1,
        "volume_id": volume_id,
        "project_id": PROJECT,
        "region": None,
        "name": "n",
        "description": None,
        "force": False,
        "metadata": {},
    }
    return SnapshotRequest(**{**fields, **changes})


def kill_when(report: Path, process: Any, ready: Callable[[bytes], bool], limit: float = 30.0) -> None:
    """SIGKILL ``process`` as soon as ``ready(report bytes)`` holds (bounded wait)."""
    stop = time.monotonic() + limit
    while time.monotonic() < stop and process.poll() is None:
        if report.exists() and ready(report.read_bytes()):
            break
        time.sleep(0.005)
    process.kill()
    process.communicate(timeout=10)  # reaps it and closes its pipes


def in_flight(data: bytes) -> set[int]:
    """Rows with a ``sending`` record and no row record after it: sent, answer not recorded."""
    open_rows: set[int] = set()
    for line in data.splitlines():
        if not line.endswith(b"}"):
            continue
        item = orjson.loads(line)
        if item.get("outcome") == "sending":
            open_rows.add(item["row"])
        elif "row" in item and item.get("outcome") not in ("duplicate_deleted", "duplicate_found"):
            open_rows.discard(item["row"])
    return open_rows


def records_in(data: bytes) -> list[dict[str, Any]]:
    """The row records (no header, no journal) among the whole lines of report bytes."""
    found = []
    for line in data.splitlines():
        if line.endswith(b"}") and b'"type":"run"' not in line and b'"outcome":"sending"' not in line:
            found.append(orjson.loads(line))
    return found


@contextlib.asynccontextmanager
async def route_to(url: str, environ: Mapping[str, str] = AKSK_ENV) -> AsyncIterator[Route]:
    """The route of the test project on ``url``, over a real session (AK/SK by default)."""
    connection = Connection(endpoints=Endpoints(evs=URL(url)), environ=dict(environ))
    async with contextlib.AsyncExitStack() as stack:
        router = await connect(stack, connection)
        yield await router.route_for(PROJECT, None)


class FakeTime:
    """An injected clock and sleep for pure timing logic: sleeping only moves the clock on."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
