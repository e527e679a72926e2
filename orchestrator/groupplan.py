"""What ``create --consistency server`` sends, decided before the first create: each server's rows
(``plan_servers``), the refusals of servers no group can take, and a group's tags.

Rows are grouped by the ``server_id`` column ``select`` writes; a row without one, more than 64 disks,
or two availability zones for one server stop the run with exit 2 before anything is sent. The zones
come from the manifest's ``availability_zone`` column; a server with a row that lacks it is asked once
for its disks (``GET cloudvolumes/detail?server_id=``, ``check_zones``) before the first create.

The group API takes tags, not metadata: a group's tags are the run's marker, plus the metadata keys
every row of the server agrees on that are valid tags (keys up to 36 characters, values up to 43;
letters, digits, ``_``, ``.``, ``-``); the others are left out, with a warning.
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from orchestrator.api.groups import groups_offered
from orchestrator.api.safe import list_all_volumes
from orchestrator.defaults import RUN_MARKER_KEY
from orchestrator.errors import UsageError
from orchestrator.servers import NAMED_ROWS, refuse_malformed, require_servers, server_id, well_formed

if TYPE_CHECKING:
    from orchestrator.api.routes import Router
    from orchestrator.config import RowDefaults
    from orchestrator.manifest import RawRow
    from orchestrator.models import SnapshotRequest
    from orchestrator.retry import RetryPolicy

GROUP_DISKS_MAX = 64
BUSY = "EVS.2409"  # a snapshot of a member disk is being created: send again later
TAG_KEY_MAX, TAG_VALUE_MAX = 36, 43
# ``\w`` takes in the CJK ideographs (U+4E00-U+9FFF) a tag may hold: the same match for every code
# point as spelling the range out, which made compiling it 9 M instructions of a connecting create's
# start-up (``benchmarks startup``).
TAG_TEXT = re.compile(r"^[\w.\-]*$")
GONE = frozenset({"deleting", "deleted", "error_deleting"})  # a group on its way out


@dataclasses.dataclass(slots=True, eq=False, repr=False)
class Server:
    """One server's rows (by manifest position) and the zones the manifest gives them."""

    rows: list[int] = dataclasses.field(default_factory=list)
    zones: set[str] = dataclasses.field(default_factory=set)
    unzoned: bool = False  # a row without availability_zone: the disk list is asked
    project_id: str | None = None  # where its first row goes (the row's, else --project-id)
    region: str | None = None


def plan_servers(rows: Iterable[RawRow], row_defaults: RowDefaults) -> dict[str, Server]:
    """Each server's rows, read before anything is sent; raises ``UsageError`` (exit 2) for rows
    without ``server_id``, and for a server with more than 64 disks or disks in two zones."""
    servers: defaultdict[str, Server] = defaultdict(Server)
    missing: list[int] = []
    malformed: list[int] = []
    for raw in rows:
        fields = raw.fields or {}
        server = server_id(fields)  # the one reading of the column (servers.rows_by_server's)
        if server is None or not well_formed(server):
            (missing if server is None else malformed).append(raw.row)
            continue
        entry = servers[server]
        if not entry.rows:
            entry.project_id = _cell(fields.get("project_id")) or row_defaults.project_id
            entry.region = _cell(fields.get("region")) or row_defaults.region
        entry.rows.append(raw.row)
        zone = _cell(fields.get("availability_zone"))
        if zone is None:
            entry.unzoned = True
        else:
            entry.zones.add(zone)
    require_servers("--consistency server", tuple(missing[:NAMED_ROWS]), len(missing))
    refuse_malformed("--consistency server", tuple(malformed[:NAMED_ROWS]), len(malformed))
    for server, entry in servers.items():
        refuse_server(server, len(entry.rows), entry.zones)
    return dict(servers)


def refuse_server(server: str, disks: int, zones: set[str]) -> None:
    """Exit 2 for a server no snapshot group can take (evs-api.md 8.7: 64 disks of one zone)."""
    if disks > GROUP_DISKS_MAX:
        raise UsageError(
            f"server {server} has {disks} rows; a snapshot group holds at most {GROUP_DISKS_MAX} disks: "
            "split its rows or use --consistency disk"
        )
    if len(zones) > 1:
        raise UsageError(
            f"server {server} has disks in {len(zones)} availability zones ({', '.join(sorted(zones))}); "
            "a snapshot group takes the disks of one zone: use --consistency disk for this server"
        )


async def check_zones(router: Router, servers: dict[str, Server], policy: RetryPolicy) -> None:
    """For each server with a row that lacks ``availability_zone``: one disk list by ``server_id``
    learns the zones (exit 2 when they are two)."""
    for server, entry in servers.items():
        if not entry.unzoned:
            continue
        route = await router.route_for(entry.project_id, entry.region)
        disks = await list_all_volumes(route, policy, [("server_id", server)])
        zones = entry.zones | {disk.availability_zone for disk in disks if disk.availability_zone}
        refuse_server(server, len(entry.rows), zones)


def _cell(value: object) -> str | None:
    text = value.strip() if isinstance(value, str) else None
    return text or None


def group_tags(
    run_id: str, requests: list[SnapshotRequest], warn: Callable[[str], None] | None
) -> dict[str, str]:
    """The marker, and the metadata every row of the server agrees on that are valid tags."""
    common = dict(requests[0].metadata)
    for request in requests[1:]:
        common = {k: v for k, v in common.items() if request.metadata.get(k) == v}
    tags = {RUN_MARKER_KEY: run_id}
    left_out = []
    for key, value in common.items():
        if valid_tag(key, value):
            tags[key] = value
        else:
            left_out.append(key)
    if left_out and warn is not None:
        warn(
            "metadata keys left out of the snapshot group's tags (not valid tags): "
            + ", ".join(sorted(left_out))
        )
    return tags


def valid_tag(key: str, value: str) -> bool:
    """A group tag: key 1 to 36 characters, value up to 43, letters, digits, ``_``, ``.``, ``-``."""
    return (
        0 < len(key) <= TAG_KEY_MAX
        and len(value) <= TAG_VALUE_MAX
        and bool(TAG_TEXT.match(key))
        and bool(TAG_TEXT.match(value))
    )


async def check_groups_offered(router: Router, servers: dict[str, Server], policy: RetryPolicy) -> None:
    """Exit 2 when a region the rows go to answers the group list with the gateway's 404: it has no
    snapshot groups (the run then uses ``--consistency disk`` with hooks)."""
    for project, region in sorted({(e.project_id, e.region) for e in servers.values()}, key=str):
        route = await router.route_for(project, region)
        if not await groups_offered(route, policy):
            raise UsageError(
                f"{route.name} has no snapshot groups (the v5 group list answers 404 APIGW.0101): use "
                "--consistency disk, with --pre-hook/--post-hook to freeze the file systems around the "
                "creates"
            )
