"""The emulator's in-memory world: volumes, snapshots, issued tokens, throttling buckets, counters.

Snapshot statuses are computed from the clock when read (``creating`` until its time is up, then
``available`` or ``error``), so no timer tasks exist. Times come from an injected monotonic clock.
"""

from __future__ import annotations

import dataclasses
import random
import re
import secrets
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from orchestrator.emulator.settings import EmulatorSettings, SeedVolume

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
Clock = Callable[[], float]


def evs_time(moment: datetime) -> str:
    """EVS timestamps: UTC, microseconds, no ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


@dataclasses.dataclass(slots=True)
class Snapshot:
    id: str
    volume_id: str
    project_id: str
    name: str | None
    description: str | None
    metadata: dict[str, str]
    size: int
    created_at: str
    created_mono: float
    final_status: str
    updated_at: str | None = None
    deleted_mono: float | None = None


@dataclasses.dataclass(slots=True)
class IssuedToken:
    project_id: str
    expires_mono: float


@dataclasses.dataclass(slots=True)
class TokenBucket:
    """A classic token bucket: ``rate`` tokens a second, at most ``burst`` saved up."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait_time(self) -> float:
        return max(0.0, (1.0 - self.tokens) / self.rate)


class World:
    """All mutable emulator state for one served project and region."""

    def __init__(self, settings: EmulatorSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.random = random.Random(settings.seed)
        self.volumes: dict[str, SeedVolume] = {v.volume_id: v for v in settings.volumes}
        self.snapshots: dict[str, Snapshot] = {}
        self.by_volume: defaultdict[str, list[str]] = defaultdict(list)
        self.tokens: dict[str, IssuedToken] = {}
        self.buckets: dict[str, TokenBucket] = {}
        self.requests: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.in_flight = 0
        self.max_in_flight = 0

    # --- volumes -------------------------------------------------------------------------
    def volume(self, volume_id: str) -> SeedVolume | None:
        key = volume_id.lower()
        found = self.volumes.get(key)
        if found is None and self.settings.any_volume and UUID_RE.match(volume_id):
            found = self.volumes[key] = SeedVolume(volume_id=key)
        return found

    # --- snapshots -----------------------------------------------------------------------
    def status_of(self, snap: Snapshot) -> str | None:
        """Current status, or ``None`` once a deleted snapshot is gone."""
        now = self.clock()
        if snap.deleted_mono is not None:
            return "deleting" if now - snap.deleted_mono < self.settings.deleting_seconds else None
        if now - snap.created_mono < self.settings.creating_seconds:
            return "creating"
        return snap.final_status

    def live_snapshots(self) -> Iterator[tuple[Snapshot, str]]:
        """Every snapshot that still exists with its status, newest first; purges vanished ones."""
        gone = []
        for snap in reversed(self.snapshots.values()):
            status = self.status_of(snap)
            if status is None:
                gone.append(snap)
            else:
                yield snap, status
        for snap in gone:
            self._forget(snap)

    def find(self, snapshot_id: str) -> tuple[Snapshot, str] | None:
        snap = self.snapshots.get(snapshot_id)
        if snap is None:
            return None
        status = self.status_of(snap)
        if status is None:
            self._forget(snap)
            return None
        return snap, status

    def snapshot_count(self, volume_id: str) -> int:
        return sum(1 for sid in self.by_volume.get(volume_id, ()) if self.find(sid) is not None)

    def create_snapshot(
        self,
        *,
        volume: SeedVolume,
        name: str | None,
        description: str | None,
        metadata: dict[str, str],
    ) -> Snapshot:
        now = datetime.now(UTC)
        failed = self.chance(self.settings.fault_snapshot_error)
        snap = Snapshot(
            id=str(uuid.UUID(int=self.random.getrandbits(128), version=4)),
            volume_id=volume.volume_id,
            project_id=self.settings.project_id,
            name=name,
            description=description,
            metadata=metadata,
            size=volume.size,
            created_at=evs_time(now),
            updated_at=evs_time(now),
            created_mono=self.clock(),
            final_status="error" if failed else "available",
        )
        self.snapshots[snap.id] = snap
        self.by_volume[volume.volume_id].append(snap.id)
        return snap

    def delete_snapshot(self, snap: Snapshot) -> None:
        snap.deleted_mono = self.clock()

    def _forget(self, snap: Snapshot) -> None:
        self.snapshots.pop(snap.id, None)
        ids = self.by_volume.get(snap.volume_id)
        if ids and snap.id in ids:
            ids.remove(snap.id)

    # --- tokens --------------------------------------------------------------------------
    def issue_token(self) -> tuple[str, datetime]:
        token = "MII" + secrets.token_urlsafe(48)
        self.tokens[token] = IssuedToken(
            project_id=self.settings.project_id,
            expires_mono=self.clock() + self.settings.token_ttl,
        )
        return token, datetime.now(UTC) + timedelta(seconds=self.settings.token_ttl)

    def token_project(self, token: str) -> str | bool | None:
        """The project of a valid token; ``False`` when it expired; ``None`` when unknown."""
        if self.settings.token is not None and secrets.compare_digest(token, self.settings.token):
            return self.settings.project_id
        issued = self.tokens.get(token)
        if issued is None:
            return None
        if self.clock() >= issued.expires_mono:
            return False
        return issued.project_id

    # --- faults and throttling -------------------------------------------------------------
    def chance(self, probability: float) -> bool:
        return probability > 0 and self.random.random() < probability

    def throttle(self, tenant: str) -> float | None:
        """``None`` when the request may pass, else seconds until the bucket has a token again."""
        rate = self.settings.rate_limit
        if rate is None:
            return None
        now = self.clock()
        bucket = self.buckets.get(tenant)
        if bucket is None:
            burst = float(self.settings.burst or max(1, round(rate)))
            bucket = self.buckets[tenant] = TokenBucket(rate, burst, burst, now)
        return None if bucket.take(now) else bucket.wait_time()

    def state(self) -> dict[str, object]:
        """The ``GET /_emulator/state`` document."""
        return {
            "volumes": [
                {"volume_id": v.volume_id, "status": v.status, "size": v.size} for v in self.volumes.values()
            ],
            "snapshots": [
                {
                    "id": snap.id,
                    "volume_id": snap.volume_id,
                    "project_id": snap.project_id,
                    "name": snap.name,
                    "status": status,
                    "created_at": snap.created_at,
                }
                for snap, status in reversed(list(self.live_snapshots()))
            ],
            "requests": {route: dict(counts) for route, counts in sorted(self.requests.items())},
            "max_in_flight": self.max_in_flight,
        }
