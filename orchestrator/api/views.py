"""Typed views of EVS answers: a snapshot, a snapshot group, a job and a disk, parsed once, where the
answer arrives.

No module outside ``api/`` reads a raw answer dict. A view keeps only the fields the tool uses
(a listed snapshot is about 3 KB of JSON; its view is a few short strings), each with one spelling
of "missing": ``volume_id`` is lower case and ``""`` when absent (never ``"none"``); ``name``,
``status`` and ``created_at`` are ``None`` when absent or not text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from orchestrator.defaults import HOLD_KEY, RUN_MARKER_KEY

# Names the backup service gives its snapshots: never the tool's, never deleted or used (evs-api.md 8.2).
BACKUP_PREFIXES = ("autobk_snapshot_", "manualbk_snapshot_")


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def marker_in(metadata: object) -> str | None:
    """The run id an ``evs_snapshot_run`` key holds; ``None`` when absent, not a string, or blank: an
    empty marker is not the tool's (the tool never writes one)."""
    value = metadata.get(RUN_MARKER_KEY) if isinstance(metadata, Mapping) else None
    return value if isinstance(value, str) and value.strip() else None


def hold_in(metadata: object) -> str | None:
    """The reason an ``evs_snapshot_hold`` key holds; ``None`` when absent. Any value holds, even a
    blank one or one that is not a string (shown as text): a hold errs on the side of keeping."""
    if not isinstance(metadata, Mapping) or HOLD_KEY not in metadata:
        return None
    value = metadata[HOLD_KEY]
    return value if isinstance(value, str) else str(value)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """One snapshot as a list or show answer gives it."""

    id: str
    volume_id: str = ""
    name: str | None = None
    status: str | None = None
    created_at: str | None = None  # as EVS wrote it (no zone): the report keeps it verbatim
    marker: str | None = None  # the run id of its ``evs_snapshot_run`` metadata key
    hold: str | None = None  # the reason of its ``evs_snapshot_hold`` metadata key: held when not None
    snapshot_group_id: str | None = None  # the v5 snapshot group it is a member of (v5 answers say)

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Snapshot:
        get = data.get
        metadata = get("metadata")
        return cls(
            id=str(get("id") or ""),
            volume_id=str(get("volume_id") or "").lower(),
            name=_text(get("name")),
            status=_text(get("status")),
            created_at=_text(get("created_at")),
            marker=None if metadata is None else marker_in(metadata),
            hold=None if metadata is None else hold_in(metadata),
            snapshot_group_id=_text(get("snapshot_group_id")) or None,
        )

    @classmethod
    def from_body(cls, body: object) -> Snapshot | None:
        """The snapshot a create or show answer holds (``{"snapshot": {...}}``), or ``None``."""
        inner = body.get("snapshot") if isinstance(body, Mapping) else None
        return cls.parse(inner) if isinstance(inner, Mapping) else None

    @classmethod
    def listed(cls, body: object) -> list[Snapshot]:
        """The snapshots a list answer holds (``{"snapshots": [...]}``); none when it holds no list."""
        items = body.get("snapshots") if isinstance(body, Mapping) else None
        return [cls.parse(i) for i in items if isinstance(i, dict)] if isinstance(items, list) else []

    @property
    def is_backup(self) -> bool:
        """Made by a backup service (CBR): never the tool's, whatever it carries."""
        return (self.name or "").startswith(BACKUP_PREFIXES)

    @property
    def counts_toward_limit(self) -> bool:
        """Counted by the per-disk limit (evs-api.md 9): made by hand, not by a backup, and not deleting."""
        return not self.is_backup and self.status != "deleting"

    @property
    def held(self) -> bool:
        """Carries a hold (``create --hold``, ``hold``): ``prune`` keeps it, ``cleanup`` blocks it."""
        return self.hold is not None

    def marked(self, run_id: str | None = None) -> bool:
        """Carries the tool's marker (of ``run_id``, when given)."""
        return self.marker is not None and (run_id is None or self.marker == run_id)

    @property
    def created(self) -> datetime | None:
        """``created_at`` as a UTC instant (EVS writes it without a zone), or ``None`` when unreadable:
        not ISO 8601, or (with an offset of its own) an instant outside the calendar in UTC."""
        if not self.created_at:
            return None
        try:
            moment = datetime.fromisoformat(self.created_at.replace("Z", "+00:00"))
            return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        except (ValueError, OverflowError):  # OverflowError: 0001-01-01T00:00+05:00 is before year 1 in UTC
            return None


def metadata_in(body: object) -> Mapping[str, object] | None:
    """The metadata of the snapshot a show answer holds, keys and values as the answer wrote them
    (``doctor --live`` checks they came back exactly; a view keeps only the tool's keys); ``{}`` when it
    has none, ``None`` when the answer holds no snapshot."""
    inner = body.get("snapshot") if isinstance(body, Mapping) else None
    if not isinstance(inner, Mapping):
        return None
    metadata = inner.get("metadata")
    return metadata if isinstance(metadata, Mapping) else {}


def created_snapshot(body: object) -> tuple[str | None, str | None]:
    """The id and status of the snapshot a create answer holds: ``Snapshot.from_body``'s ``id or None``
    and ``status`` (``(None, None)`` where it gives ``None``), without building the view (once a row)."""
    inner = body.get("snapshot") if type(body) is dict else None
    if type(inner) is not dict:  # not as orjson parses an answer: the view says
        snapshot = Snapshot.from_body(body)
        return (None, None) if snapshot is None else (snapshot.id or None, snapshot.status)
    get = inner.get
    return str(get("id") or "") or None, _text(get("status"))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class SnapshotGroup:
    """One v5 snapshot group (crash-consistent set) as a list or show answer gives it; the run's
    marker is its ``evs_snapshot_run`` tag (a group has tags, not metadata)."""

    id: str
    server_id: str = ""
    name: str | None = None
    status: str | None = None
    created_at: str | None = None
    marker: str | None = None
    hold: str | None = None

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> SnapshotGroup:
        return cls(
            id=str(data.get("id") or ""),
            server_id=str(data.get("server_id") or ""),
            name=_text(data.get("name")),
            status=_text(data.get("status")),
            created_at=_text(data.get("created_at")),
            marker=marker_in(data.get("tags")),
            hold=hold_in(data.get("tags")),
        )

    @classmethod
    def from_body(cls, body: object) -> SnapshotGroup | None:
        """The group a show answer holds (``{"snapshot_group": {...}}``), or ``None``."""
        inner = body.get("snapshot_group") if isinstance(body, Mapping) else None
        return cls.parse(inner) if isinstance(inner, Mapping) else None

    @classmethod
    def created(cls, body: object, *, server_id: str) -> SnapshotGroup:
        """The group a create answer names (``{"snapshot_group_id": ...}``); its id is ``""`` when the
        answer names none."""
        group_id = body.get("snapshot_group_id") if isinstance(body, Mapping) else None
        return cls(id=str(group_id or ""), server_id=server_id)

    def marked(self, run_id: str | None = None) -> bool:
        """Carries the tool's marker tag (of ``run_id``, when given)."""
        return self.marker is not None and (run_id is None or self.marker == run_id)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Job:
    """An asynchronous job's state (``GET /v1/{project_id}/jobs/{job_id}``): ``INIT``, ``RUNNING``,
    ``SUCCESS`` or ``FAIL`` (with its ``fail_reason``)."""

    id: str
    status: str | None = None
    fail_reason: str | None = None

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Job:
        return cls(
            id=str(data.get("job_id") or ""),
            status=_text(data.get("status")),
            fail_reason=_text(data.get("fail_reason")),
        )

    @property
    def done(self) -> bool:
        return self.status in ("SUCCESS", "FAIL")


@dataclasses.dataclass(frozen=True, slots=True, eq=False, repr=False)
class Attachment:
    """Where a disk is attached: the server, and the device name on it."""

    server_id: str
    device: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Volume:
    """One disk as a list, show or tag-filter answer gives it."""

    id: str
    name: str | None = None
    status: str | None = None
    size: int | None = None
    bootable: bool = False
    availability_zone: str | None = None
    updated_at: str | None = None
    attachments: tuple[Attachment, ...] = ()
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Volume:
        attachments = data.get("attachments")
        attached = tuple(
            Attachment(str(item["server_id"]), _text(item.get("device")))
            for item in (attachments if isinstance(attachments, list) else [])
            if isinstance(item, dict) and item.get("server_id")
        )
        size = data.get("size")
        metadata = data.get("metadata")
        tags = data.get("tags")
        return cls(
            id=str(data.get("id") or "").lower(),
            name=_text(data.get("name")),
            status=_text(data.get("status")),
            size=size if isinstance(size, int) and not isinstance(size, bool) else None,
            bootable=str(data.get("bootable")).lower() == "true",
            availability_zone=_text(data.get("availability_zone")),
            updated_at=_text(data.get("updated_at")),
            attachments=attached,
            metadata={str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {},
            tags={str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {},
        )

    @classmethod
    def from_body(cls, body: object) -> Volume | None:
        """The disk a show answer holds (``{"volume": {...}}``), or ``None``."""
        inner = body.get("volume") if isinstance(body, Mapping) else None
        return cls.parse(inner) if isinstance(inner, Mapping) else None

    @property
    def servers(self) -> list[str]:
        """The servers it is attached to (none when the answer has no attachments)."""
        return [attachment.server_id for attachment in self.attachments]
