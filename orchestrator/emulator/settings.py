"""The emulator's knobs (one frozen value; every default is the spec's) and the records it is seeded with.

Each knob ``evs-snapshot emulator`` takes is told once, in its field: name, type, default and help
(``option``); ``commands/emulator.py`` makes the click options from the fields.

Reading the seed files (``--volumes``, ``--snapshots``) lives in ``orchestrator.emulator.seedfiles``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TypeVar

from orchestrator.api import clock
from orchestrator.defaults import SNAPSHOTS_PER_DISK

T = TypeVar("T")
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

# The IAM action each EVS API needs (evs-api.md section 10); ``--deny`` takes these.
IAM_ACTIONS = (
    "evs:snapshots:create",
    "evs:snapshots:list",
    "evs:snapshots:get",
    "evs:snapshots:delete",
    "evs:snapshots:rollback",
    "evs:volumes:list",
    "evs:volumes:get",
    "evs:quotas:get",
    "evs:volumeTags:list",
)
# The gateway's clock window for AK/SK signatures (evs-api.md 3.4), seconds.
SIGNATURE_WINDOW = clock.SIGNATURE_WINDOW
YEAR = 366 * 86400.0


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


OPTION = "option"  # the metadata key of a setting's command-line option


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Option:
    """How ``evs-snapshot emulator`` takes a setting: ``--`` and its name with dashes, of its field's type.

    A number may have a ``low`` (and ``high``) bound; a ``share`` is a float between 0 and 1; ``choices``
    are the spellings the value may take; a ``file`` setting takes the path of a seed file; a secret's
    default is not shown (``show_default``). A bool is a flag. A ``repeat`` setting (a tuple) takes the
    option any number of times.
    """

    help: str
    low: float | None = None
    high: float | None = None
    share: bool = False
    choices: tuple[str, ...] = ()
    file: bool = False
    show_default: bool = True
    repeat: bool = False


def option(
    default: T,
    help: str,
    *,
    low: float | None = None,
    high: float | None = None,
    share: bool = False,
    choices: tuple[str, ...] = (),
    file: bool = False,
    show_default: bool = True,
    repeat: bool = False,
) -> T:
    """A setting with its default and its option (see ``Option``)."""
    told = Option(
        help=help,
        low=low,
        high=high,
        share=share,
        choices=choices,
        file=file,
        show_default=show_default,
        repeat=repeat,
    )
    return dataclasses.field(default=default, metadata={OPTION: told})


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EmulatorSettings:
    """Everything the emulator can be told; see the "Emulator" table of the spec.

    A field made with ``option`` is also an option of ``evs-snapshot emulator``, in this order.
    """

    host: str = option("127.0.0.1", "Address to listen on.")
    port: int = option(0, "Port to listen on; 0 picks a free port.", low=0, high=65535)
    region: str = option("cn-north-4", "The one region it serves.")
    project_id: str = option(DEFAULT_PROJECT_ID, "The one project it serves.")
    volumes: tuple[SeedVolume, ...] = option(
        (),
        "Known volumes: CSV or JSON with volume_id, status, size, name, server_id, device, bootable, "
        "availability_zone, metadata (JSON object), tags (k=v;k2=v2), enterprise_project_id.",
        file=True,
    )
    snapshots: tuple[SeedSnapshot, ...] = option(
        (),
        "Existing snapshots: CSV or JSON with id, volume_id, name, status, created_at, metadata "
        "(JSON object), project_id, description, size.",
        file=True,
    )
    any_volume: bool = option(False, "Every well-formed UUID is an available disk.")
    ak: str = option(DEFAULT_AK, "Access key it accepts.")
    sk: str = option(
        DEFAULT_SK, "Secret key it accepts (a published demo value by default).", show_default=False
    )
    user: str = option(DEFAULT_USER, "IAM user it accepts.")
    password: str = option(
        DEFAULT_PASSWORD, "IAM password it accepts (demo value by default).", show_default=False
    )
    domain: str = option(DEFAULT_DOMAIN, "IAM domain (account) name.")
    token: str | None = option(None, "A fixed token it always accepts.")
    token_ttl: float = option(86400.0, "Lifetime of issued tokens, seconds.", low=0.1)
    expired_token_answer: int = option(
        401, "How an expired token is refused: 401 APIGW.0301, or 400 Common.0013.", choices=("401", "400")
    )
    ak_lock_after: int = option(
        0, "Lock the AK after this many signature failures in a row (0: never).", low=0
    )
    ak_lock_seconds: float = option(300.0, "How long a locked AK stays locked.", low=0)
    iam_deny_list_projects: bool = option(
        False, "GET /v3/projects answers 403 (GET /v3/auth/projects still works)."
    )
    iam_5xx_first: int = option(
        0,
        "The first N IAM requests (tokens, project lookups) answer 502 APIGW.0202: IAM's gateway "
        "without its backend.",
        low=0,
    )
    latency_ms: float = option(0.0, "Added to every answer.", low=0)
    jitter_ms: float = option(0.0, "Random +/- spread around --latency-ms.", low=0)
    rate_limit: float | None = option(
        None, "Requests per second per tenant; 429 APIGW.0308 beyond it.  [default: off]", low=0.001
    )
    burst: int | None = option(None, "Bucket size.  [default: RPS]", low=1)
    retry_after: bool = option(False, "Add Retry-After to 429 answers.")
    told_limit: float | None = option(
        None,
        "The limit a 429's message names (limit:N,time:1 second); 0 names none, as a gateway that says "
        "only the policy.  [default: --rate-limit]",
        low=0,
    )
    creating_seconds: float = option(2.0, "How long a new snapshot stays creating.", low=0)
    deleting_seconds: float = 0.5
    rollback_seconds: float = option(2.0, "How long a rollback keeps disk and snapshot rollbacking.", low=0)
    late_commit_seconds: float = option(
        3.0, "How long after its 504 a late-committed snapshot appears.", low=0
    )
    snapshot_quota: int | None = option(
        None, "Project snapshot quota; creates beyond it get 413 EVS.5413.  [default: unlimited]", low=0
    )
    max_snapshots_per_volume: int = SNAPSHOTS_PER_DISK
    fault_5xx: float = option(0.0, "Share of EVS answers replaced by 500/502/503.", share=True)
    fault_drop_before: float = option(
        0.0, "Share of creates dropped before the snapshot is recorded.", share=True
    )
    fault_drop_after: float = option(
        0.0, "Share of creates dropped after the snapshot is recorded.", share=True
    )
    fault_snapshot_error: float = option(0.0, "Share of snapshots that end in error.", share=True)
    fault_late_commit: float = option(
        0.0, "Share of creates answered 504 APIG.0203 at once whose snapshot appears later.", share=True
    )
    fault_list: float = option(0.0, "Share of snapshot list answers replaced by 503 EVS.5503.", share=True)
    fault_rollback_error: float = option(
        0.0, "Share of rollbacks whose disk ends error_rollbacking.", share=True
    )
    fault_rollback_drop_before: float = option(
        0.0, "Share of rollbacks dropped before EVS acts (no rollback happens).", share=True
    )
    fault_rollback_drop_after: float = option(
        0.0, "Share of rollbacks dropped after EVS starts them (the disk goes rollbacking).", share=True
    )
    fault_delete_drop_after: float = option(
        0.0,
        "Share of snapshot deletions dropped after EVS starts them (the snapshot goes deleting).",
        share=True,
    )
    # Each switch below breaks one assumption the tool's promises rest on (issue 20; docs/emulator.md).
    clock_offset: float = option(
        0.0,
        "Its clock (and Date header) runs this many seconds off real time; AK/SK signatures more "
        "than 15 minutes from it are 401 APIGW.0303.",
        low=-YEAR,
        high=YEAR,
    )
    deny: tuple[str, ...] = option(
        (),
        "Calls needing this IAM action answer 403 EVS.5403 naming it (repeatable).",
        choices=IAM_ACTIONS,
        repeat=True,
    )
    tags_default_ep_only: bool = option(False, "The tag search finds only disks of enterprise project 0.")
    list_shift: int = option(
        0,
        "Before each snapshot list page after the first, the N snapshots before its offset move to "
        "the end of the order, so naive offset paging skips N.",
        low=0,
    )
    gateway_404: tuple[str, ...] = option(
        (),
        "Requests whose path contains this text answer 404 APIGW.0101, an API missing in the "
        "region (repeatable).",
        repeat=True,
    )
    metadata_rewrite: str = option(
        "none", "lower: snapshot metadata keys come back lower-cased.", choices=("none", "lower")
    )
    no_snapshot_groups: bool = option(
        False, "The v5 snapshot-group API answers 404 APIGW.0101 (a region without it)."
    )
    group_members_unlisted: bool = option(
        False,
        "Snapshot-group members are absent from the v2 snapshot list and show (404): only the v5 member "
        "list shows them.",
    )
    hold_at_delete: int = option(
        0,
        "When the Nth DELETE (of a snapshot or a snapshot group) arrives, every other snapshot and group "
        "not deleting is held first (evs_snapshot_hold=emulator: a snapshot's metadata, a group's tag), as "
        "a hold made after a listing; 0: never.",
        low=0,
    )
    seed: int = option(0, "Seed for every random choice.")
