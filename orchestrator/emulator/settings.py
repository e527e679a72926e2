"""The emulator's knobs (one frozen value; every default is the spec's) and its volume seed file."""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Iterable
from pathlib import Path

import orjson

from orchestrator.errors import UsageError

DEFAULT_PROJECT_ID = "0123456789abcdef0123456789abcdef"
DEFAULT_AK = "EMULATORAK0000000000"
DEFAULT_SK = "emulator-secret-key-0000000000000000000000"
DEFAULT_USER = "operator"
DEFAULT_PASSWORD = "emulator-password"  # noqa: S105 - the emulator's published demo password
DEFAULT_DOMAIN = "emulator-domain"
VOLUME_STATUSES = frozenset(
    {
        "available",
        "in-use",
        "creating",
        "attaching",
        "detaching",
        "extending",
        "deleting",
        "error",
        "error_deleting",
        "error_extending",
        "downloading",
        "uploading",
        "restoring-backup",
    }
)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SeedVolume:
    """A disk the emulator knows: its id (lower case), status and size in GB."""

    volume_id: str
    status: str = "available"
    size: int = 40


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EmulatorSettings:
    """Everything the emulator can be told; see the "Emulator" table of the spec."""

    host: str = "127.0.0.1"
    port: int = 0
    region: str = "cn-north-4"
    project_id: str = DEFAULT_PROJECT_ID
    volumes: tuple[SeedVolume, ...] = ()
    any_volume: bool = False
    ak: str = DEFAULT_AK
    sk: str = DEFAULT_SK
    user: str = DEFAULT_USER
    password: str = DEFAULT_PASSWORD
    domain: str = DEFAULT_DOMAIN
    token: str | None = None
    token_ttl: float = 86400.0
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    rate_limit: float | None = None
    burst: int | None = None
    retry_after: bool = False
    creating_seconds: float = 2.0
    fault_5xx: float = 0.0
    fault_drop_before: float = 0.0
    fault_drop_after: float = 0.0
    fault_snapshot_error: float = 0.0
    seed: int = 0
    max_snapshots_per_volume: int = 7
    deleting_seconds: float = 0.5


def read_volumes(path: Path) -> tuple[SeedVolume, ...]:
    """Read ``volume_id,status,size`` rows from a CSV file or a JSON array (or ``{"volumes": [...]}``)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the volumes file: {exc.strerror}") from exc
    if path.suffix.lower() == ".json":
        try:
            loaded = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"{path}: not valid JSON: {exc}") from exc
        items = loaded.get("volumes") if isinstance(loaded, dict) else loaded
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise UsageError(f"{path}: expected an array of volume objects")
        return _seed(path, items)
    text = data.decode("utf-8-sig", errors="replace")
    return _seed(path, csv.DictReader(io.StringIO(text)))


def _seed(path: Path, items: Iterable[dict[str, object]]) -> tuple[SeedVolume, ...]:
    volumes = []
    for number, item in enumerate(items, start=1):
        volume_id = str(item.get("volume_id") or "").strip().lower()
        status = str(item.get("status") or "available").strip()
        if not volume_id or status not in VOLUME_STATUSES:
            raise UsageError(f"{path}: entry {number} needs a volume_id and a known status")
        try:
            size = int(str(item.get("size") or 40))
        except ValueError as exc:
            raise UsageError(f"{path}: entry {number}: size must be a whole number") from exc
        volumes.append(SeedVolume(volume_id=volume_id, status=status, size=size))
    return tuple(volumes)
