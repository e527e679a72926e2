"""The emulator's in-memory world: volumes, snapshots, rollbacks, tokens, the AK lock, buckets, counters.

States are computed from the injected clock when read (a snapshot is ``creating`` until its time is
up, then ``available`` or ``error``; a rollback ends when its time is up), so no timer tasks exist.
A late-committed snapshot is invisible until the moment it appears.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
import secrets
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from orchestrator.defaults import HOLD_KEY
from orchestrator.emulator.clock import Clock, Timeline, evs_time
from orchestrator.emulator.settings import (
    ALL_ENTERPRISE_PROJECTS,
    DEFAULT_ENTERPRISE_PROJECT,
    EmulatorSettings,
    SeedSnapshot,
    SeedVolume,
)

__all__ = [
    "UUID_RE",
    "Attachment",
    "Clock",
    "Job",
    "Snapshot",
    "SnapshotGroup",
    "Volume",
    "World",
    "evs_time",
]

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# Snapshots the backup services make; they do not count against the per-disk limit (evs-api.md 9).
BACKUP_NAME_PREFIXES = ("autobk_snapshot_", "manualbk_snapshot_")
DEFAULT_DEVICE = "/dev/vdb"
EMULATOR_HOLD = "emulator"  # the reason ``--hold-at-delete`` holds with


@dataclasses.dataclass(slots=True)
class Attachment:
    server_id: str
    device: str
    attached_at: str


def listed_in(asked: str | None, enterprise_project_id: str) -> bool:
    """Whether a list asking for ``enterprise_project_id=asked`` shows a resource of that project."""
    if asked == ALL_ENTERPRISE_PROJECTS:
        return True
    return enterprise_project_id == (DEFAULT_ENTERPRISE_PROJECT if asked is None else asked)


@dataclasses.dataclass(slots=True)
class Volume:
    """A disk as the emulator holds it; ``status`` is settled against the clock by ``World``."""

    id: str
    status: str
    size: int
    name: str
    bootable: bool
    availability_zone: str
    metadata: dict[str, str]
    tags: dict[str, str]
    attachments: list[Attachment]
    created_at: str
    rollback_until: float | None = None
    rollback_final: str = "available"
    enterprise_project_id: str = DEFAULT_ENTERPRISE_PROJECT
    updated_at: str | None = None  # None: never changed since created_at


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
    visible_from: float
    creating_until: float
    final_status: str
    updated_at: str | None = None
    deleted_mono: float | None = None
    rollback_until: float | None = None
    enterprise_project_id: str = DEFAULT_ENTERPRISE_PROJECT  # the disk's, when it was made
    group_id: str | None = None  # the v5 snapshot group it was made in (``emulator.groups``)


@dataclasses.dataclass(slots=True)
class SnapshotGroup:
    """A group as the emulator holds it; its status is computed from the clock and its members."""

    id: str
    project_id: str
    server_id: str
    volume_ids: list[str]
    name: str
    description: str
    tags: dict[str, str]
    enterprise_project_id: str
    created_at: str
    visible_from: float
    creating_until: float
    deleted_mono: float | None = None


@dataclasses.dataclass(slots=True)
class Job:
    """An asynchronous job: a group's creation or deletion, or a member's rollback."""

    id: str
    job_type: str
    begin: float
    subject: str  # the group's id (create, delete) or the member's (rollback)


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
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.updated) * self.rate)
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
        self.timeline = Timeline(clock, datetime.now(UTC) + timedelta(seconds=settings.clock_offset))
        self.random = random.Random(settings.seed)
        self.volumes: dict[str, Volume] = {}
        for seed in settings.volumes:
            self.volumes[seed.volume_id] = self._new_volume(seed)
        self.snapshots: dict[str, Snapshot] = {}
        self.by_volume: defaultdict[str, list[str]] = defaultdict(list)
        self.demoted: dict[str, int] = {}  # snapshot id -> when --list-shift moved it to the end
        self.demotions = 0
        for seeded in sorted(settings.snapshots, key=lambda s: s.created_at or "~"):
            self._seed_snapshot(seeded)
        self.rollbacks: list[dict[str, str]] = []
        # v5 snapshot groups and jobs by id; ``emulator.groups`` reads and changes them.
        self.groups: dict[str, SnapshotGroup] = {}
        self.jobs: dict[str, Job] = {}
        self.tokens: dict[str, IssuedToken] = {}
        self.buckets: dict[str, TokenBucket] = {}
        self.ak_failures = 0
        self.iam_failed = 0  # IAM requests answered 502 under --iam-5xx-first
        self.ak_locked_until: float | None = None
        self.requests: defaultdict[str, Counter[str]] = defaultdict(Counter)
        # What a request carried that the official SDK does not send, by route (``Gateway.sdk_check``).
        self.unlike_sdk: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.in_flight = 0
        self.max_in_flight = 0
        self.deletes = 0  # DELETEs of snapshots and groups that arrived (``--hold-at-delete``)

    def now_text(self) -> str:
        """The wall time now, in EVS form (it follows the injected clock)."""
        return evs_time(self.timeline.wall())

    # --- volumes -------------------------------------------------------------------------
    def _new_volume(self, seed: SeedVolume) -> Volume:
        now = self.now_text()
        attachments = []
        server_id = seed.server_id
        if server_id is None and seed.status == "in-use":  # an in-use disk is attached to something
            server_id = str(uuid.uuid5(uuid.NAMESPACE_OID, f"server/{seed.volume_id}"))
        status = seed.status
        if server_id:
            attachments.append(Attachment(server_id, seed.device or DEFAULT_DEVICE, now))
            status = "in-use" if status == "available" else status  # attached means in use
        return Volume(
            id=seed.volume_id,
            status=status,
            size=seed.size,
            name=seed.name,
            bootable=seed.bootable,
            availability_zone=seed.availability_zone or f"{self.settings.region}a",
            metadata=dict(seed.metadata),
            tags=dict(seed.tags),
            attachments=attachments,
            created_at=now,
            enterprise_project_id=seed.enterprise_project_id,
        )

    def volume(self, volume_id: str) -> Volume | None:
        """A known disk (made on first use under ``--any-volume``), its status settled."""
        key = volume_id.lower()
        found = self.volumes.get(key)
        if found is None and self.settings.any_volume and UUID_RE.match(volume_id):
            found = self.volumes[key] = self._new_volume(SeedVolume(volume_id=key))
        return None if found is None else self._settle(found)

    def all_volumes(self) -> list[Volume]:
        return [self._settle(volume) for volume in self.volumes.values()]

    def _settle(self, volume: Volume) -> Volume:
        if volume.rollback_until is not None and self.clock() >= volume.rollback_until:
            volume.status = volume.rollback_final
            volume.updated_at = evs_time(self.timeline.wall(volume.rollback_until))
            volume.rollback_until = None
        return volume

    def attach(self, volume: Volume, server_id: str, device: str | None) -> None:
        volume.attachments = [Attachment(server_id, device or DEFAULT_DEVICE, self.now_text())]
        volume.status = "in-use"

    def detach(self, volume: Volume) -> None:
        volume.attachments = []
        volume.status = "available"

    # --- snapshots -----------------------------------------------------------------------
    def _seed_snapshot(self, seeded: SeedSnapshot) -> None:
        volume = self.volumes.get(seeded.volume_id)
        created_at = seeded.created_at or self.now_text()
        snap = Snapshot(
            id=seeded.id,
            volume_id=seeded.volume_id,
            project_id=seeded.project_id or self.settings.project_id,
            name=seeded.name,
            description=seeded.description,
            metadata=dict(seeded.metadata),
            size=seeded.size or (volume.size if volume is not None else 40),
            created_at=created_at,
            updated_at=created_at,
            visible_from=-math.inf,
            creating_until=-math.inf,
            final_status=seeded.status,
            enterprise_project_id=(
                volume.enterprise_project_id if volume is not None else DEFAULT_ENTERPRISE_PROJECT
            ),
        )
        self.snapshots[snap.id] = snap
        self.by_volume[snap.volume_id].append(snap.id)

    def status_of(self, snap: Snapshot) -> str | None:
        """Current status, or ``None`` while a late commit has not appeared or once a deletion is over."""
        now = self.clock()
        if now < snap.visible_from:
            return None
        if snap.deleted_mono is not None:
            return "deleting" if now - snap.deleted_mono < self.settings.deleting_seconds else None
        if snap.rollback_until is not None:
            if now < snap.rollback_until:
                return "rollbacking"
            snap.rollback_until = None
        if now < snap.creating_until:
            return "creating"
        return snap.final_status

    def _gone(self, snap: Snapshot) -> bool:
        return (
            snap.deleted_mono is not None
            and self.clock() - snap.deleted_mono >= self.settings.deleting_seconds
        )

    def live_snapshots(self) -> Iterator[tuple[Snapshot, str]]:
        """Every visible snapshot with its status, newest first; purges the ones that are gone."""
        gone = []
        for snap in reversed(self.snapshots.values()):
            status = self.status_of(snap)
            if status is not None:
                yield snap, status
            elif self._gone(snap):
                gone.append(snap)
        for snap in gone:
            self._forget(snap)

    def find(self, snapshot_id: str, project_id: str | None = None) -> tuple[Snapshot, str] | None:
        """A visible snapshot (of ``project_id`` when given) with its status."""
        snap = self.snapshots.get(snapshot_id)
        if snap is None or (project_id is not None and snap.project_id != project_id):
            return None
        status = self.status_of(snap)
        if status is None:
            if self._gone(snap):
                self._forget(snap)
            return None
        return snap, status

    def snapshot_count(self, volume_id: str) -> int:
        """Snapshots of a disk as the service counts them against its limit of 7 (evs-api.md 9):
        visible, not ``deleting``, and not made by a backup service."""
        count = 0
        for snapshot_id in list(self.by_volume.get(volume_id, ())):
            found = self.find(snapshot_id)
            if found is None or found[1] == "deleting":
                continue
            if not (found[0].name or "").startswith(BACKUP_NAME_PREFIXES):
                count += 1
        return count

    def project_snapshots(self, project_id: str) -> list[tuple[Snapshot, str]]:
        return [(snap, status) for snap, status in self.live_snapshots() if snap.project_id == project_id]

    def listing_order(self, snapshots: list[tuple[Snapshot, str]]) -> list[tuple[Snapshot, str]]:
        """The snapshot list's order: newest first, then the ones ``demote`` moved, in the order moved."""
        return sorted(snapshots, key=lambda item: self.demoted.get(item[0].id, 0))

    def demote(self, snapshots: list[tuple[Snapshot, str]]) -> None:
        """Move snapshots to the end of the list's order (``--list-shift``: as if re-sorted)."""
        for snap, _ in snapshots:
            self.demotions += 1
            self.demoted[snap.id] = self.demotions

    def create_snapshot(
        self,
        *,
        volume: Volume,
        name: str | None,
        description: str | None,
        metadata: dict[str, str],
        delay: float = 0.0,
        group_id: str | None = None,
    ) -> Snapshot:
        """Record a snapshot; with ``delay`` it appears (starts ``creating``) that many seconds later."""
        appears = self.clock() + delay
        created_at = evs_time(self.timeline.wall(appears))
        failed = self.chance(self.settings.fault_snapshot_error)
        snap = Snapshot(
            id=self.new_id(),
            volume_id=volume.id,
            project_id=self.settings.project_id,
            name=name,
            description=description,
            metadata=metadata,
            size=volume.size,
            created_at=created_at,
            updated_at=created_at,
            visible_from=appears,
            creating_until=appears + self.settings.creating_seconds,
            final_status="error" if failed else "available",
            enterprise_project_id=volume.enterprise_project_id,
            group_id=group_id,
        )
        self.snapshots[snap.id] = snap
        self.by_volume[volume.id].append(snap.id)
        return snap

    def new_id(self) -> str:
        """A new resource id (a UUID drawn from the seeded random source)."""
        return str(uuid.UUID(int=self.random.getrandbits(128), version=4))

    def creating_on(self, volume_id: str) -> bool:
        """Whether a snapshot of the disk is ``creating`` now (a snapshot group refuses it: ``EVS.2409``)."""
        return any(
            found is not None and found[1] == "creating"
            for found in map(self.find, list(self.by_volume.get(volume_id, ())))
        )

    def delete_snapshot(self, snap: Snapshot) -> None:
        snap.deleted_mono = self.clock()
        snap.updated_at = self.now_text()

    def delete_arrived(self, target: str) -> None:
        """Count a DELETE of snapshot or group ``target``; at the ``--hold-at-delete`` Nth, hold every other
        snapshot (not a member of ``target``) and group that is not deleting, as ``hold`` does."""
        self.deletes += 1
        if self.deletes != self.settings.hold_at_delete:
            return
        for snap, status in list(self.live_snapshots()):
            if target not in (snap.id, snap.group_id) and status != "deleting":
                snap.metadata[HOLD_KEY] = EMULATOR_HOLD
        for group in self.groups.values():
            if group.id != target and group.deleted_mono is None:
                group.tags[HOLD_KEY] = EMULATOR_HOLD

    def rollback(self, snap: Snapshot, volume: Volume, name: str | None) -> None:
        """Start a rollback: disk and snapshot are ``rollbacking`` for ``rollback_seconds``."""
        until = self.clock() + self.settings.rollback_seconds
        failed = self.chance(self.settings.fault_rollback_error)
        snap.rollback_until = until
        volume.status = "rollbacking"
        volume.updated_at = self.now_text()
        volume.rollback_until = until
        volume.rollback_final = "error_rollbacking" if failed else "available"
        if name is not None:
            volume.name = name
        self.rollbacks.append({"snapshot_id": snap.id, "volume_id": volume.id, "at": self.now_text()})

    def _forget(self, snap: Snapshot) -> None:
        self.snapshots.pop(snap.id, None)
        self.demoted.pop(snap.id, None)
        ids = self.by_volume.get(snap.volume_id)
        if ids and snap.id in ids:
            ids.remove(snap.id)

    # --- tokens and the AK lock ------------------------------------------------------------
    def issue_token(self) -> tuple[str, datetime, datetime]:
        """A new token with its issue and expiry wall times (both follow the clock)."""
        token = "MII" + secrets.token_urlsafe(48)
        now = self.clock()
        self.tokens[token] = IssuedToken(
            project_id=self.settings.project_id, expires_mono=now + self.settings.token_ttl
        )
        issued = self.timeline.wall(now).astimezone(UTC)
        return token, issued, self.timeline.wall(now + self.settings.token_ttl).astimezone(UTC)

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

    def ak_locked(self) -> bool:
        if self.ak_locked_until is None:
            return False
        if self.clock() < self.ak_locked_until:
            return True
        self.ak_locked_until = None
        self.ak_failures = 0
        self.iam_failed = 0  # IAM requests answered 502 under --iam-5xx-first
        return False

    def ak_failed(self) -> None:
        """Count a signature failure of the emulator's AK; lock it after ``ak_lock_after`` in a row."""
        limit = self.settings.ak_lock_after
        if limit <= 0:
            return
        self.ak_failures += 1
        if self.ak_failures >= limit:
            self.ak_locked_until = self.clock() + self.settings.ak_lock_seconds

    def ak_succeeded(self) -> None:
        self.ak_failures = 0
        self.iam_failed = 0  # IAM requests answered 502 under --iam-5xx-first

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

    # --- the test hook ---------------------------------------------------------------------
    def state(self) -> dict[str, object]:
        """The ``GET /_emulator/state`` document."""
        return {
            "volumes": [
                {
                    "volume_id": v.id,
                    "status": v.status,
                    "size": v.size,
                    "attachments": [attachment_json(v, a) for a in v.attachments],
                }
                for v in self.all_volumes()
            ],
            "snapshots": [
                {
                    "id": snap.id,
                    "volume_id": snap.volume_id,
                    "project_id": snap.project_id,
                    "name": snap.name,
                    "status": status,
                    "created_at": snap.created_at,
                    "metadata": snap.metadata,
                }
                for snap, status in reversed(list(self.live_snapshots()))
            ],
            "rollbacks": list(self.rollbacks),
            "requests": {route: dict(counts) for route, counts in sorted(self.requests.items())},
            "unlike_sdk": {route: dict(counts) for route, counts in sorted(self.unlike_sdk.items())},
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
        }


def attachment_json(volume: Volume, attachment: Attachment) -> dict[str, object]:
    """An attachment in the EVS shape (``id`` is the disk's, as the service answers)."""
    return {
        "server_id": attachment.server_id,
        "device": attachment.device,
        "attachment_id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"{volume.id}/{attachment.server_id}")),
        "attached_at": attachment.attached_at,
        "host_name": None,
        "volume_id": volume.id,
        "id": volume.id,
    }
