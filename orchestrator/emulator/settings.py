"""The emulator's knobs (one frozen value; every default is the spec's) and the records it is seeded with.

Reading the seed files (``--volumes``, ``--snapshots``) lives in ``orchestrator.emulator.seedfiles``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from orchestrator.defaults import SNAPSHOTS_PER_DISK

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
        "error_restoring",
        "error_rollbacking",
        "rollbacking",
        "backing-up",
        "downloading",
        "uploading",
        "retyping",
        "awaiting-transfer",
        "restoring-backup",
    }
)
SNAPSHOT_STATUSES = frozenset(
    {"creating", "available", "error", "deleting", "error_deleting", "rollbacking", "backing-up"}
)


# Lists without ``enterprise_project_id`` show only the default enterprise project's resources (as the
# cloud may: evs-api.md section 9); ``all_granted_eps`` shows every one.
DEFAULT_ENTERPRISE_PROJECT = "0"
ALL_ENTERPRISE_PROJECTS = "all_granted_eps"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SeedVolume:
    """A disk the emulator knows: its id (lower case), status, size in GB and descriptive fields.

    ``server_id`` (with ``device``, ``/dev/vdb`` by default) makes one attachment, and an attached disk
    left ``available`` is ``in-use``; an ``in-use`` disk without ``server_id`` gets a made-up server.
    ``availability_zone`` defaults to the region + ``a``; ``enterprise_project_id`` to the default one.
    """

    volume_id: str
    status: str = "available"
    size: int = 40
    name: str = ""
    server_id: str | None = None
    device: str | None = None
    bootable: bool = False
    availability_zone: str | None = None
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)
    enterprise_project_id: str = DEFAULT_ENTERPRISE_PROJECT


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SeedSnapshot:
    """A snapshot that exists when the emulator starts; it keeps its seeded status until acted on.

    ``created_at`` is in EVS form (``YYYY-MM-DDTHH:MM:SS.ffffff``, UTC) or ``None`` for the start time;
    ``project_id`` ``None`` means the served project; ``size`` ``None`` takes the disk's size.
    """

    id: str
    volume_id: str
    name: str | None = None
    status: str = "available"
    created_at: str | None = None
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    project_id: str | None = None
    description: str | None = None
    size: int | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EmulatorSettings:
    """Everything the emulator can be told; see the "Emulator" table of the spec."""

    host: str = "127.0.0.1"
    port: int = 0
    region: str = "cn-north-4"
    project_id: str = DEFAULT_PROJECT_ID
    volumes: tuple[SeedVolume, ...] = ()
    snapshots: tuple[SeedSnapshot, ...] = ()
    any_volume: bool = False
    ak: str = DEFAULT_AK
    sk: str = DEFAULT_SK
    user: str = DEFAULT_USER
    password: str = DEFAULT_PASSWORD
    domain: str = DEFAULT_DOMAIN
    token: str | None = None
    token_ttl: float = 86400.0
    expired_token_answer: int = 401
    ak_lock_after: int = 0
    ak_lock_seconds: float = 300.0
    iam_deny_list_projects: bool = False
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    rate_limit: float | None = None
    burst: int | None = None
    retry_after: bool = False
    creating_seconds: float = 2.0
    deleting_seconds: float = 0.5
    rollback_seconds: float = 2.0
    late_commit_seconds: float = 3.0
    snapshot_quota: int | None = None
    max_snapshots_per_volume: int = SNAPSHOTS_PER_DISK
    fault_5xx: float = 0.0
    fault_drop_before: float = 0.0
    fault_drop_after: float = 0.0
    fault_snapshot_error: float = 0.0
    fault_late_commit: float = 0.0
    fault_list: float = 0.0
    fault_rollback_error: float = 0.0
    fault_rollback_drop_before: float = 0.0
    fault_rollback_drop_after: float = 0.0
    fault_delete_drop_after: float = 0.0
    seed: int = 0
