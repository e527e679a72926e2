"""Which disks ``select`` writes: its selectors, the disk listing they match, and the manifest row each
disk becomes.

The disks always come from the volume list (every enterprise project the caller may see), once per
``--server``, with the other selectors as query filters; every selector is checked again on each disk,
so a filter the service applies loosely (or ignores) cannot widen the selection. ``--tag`` is matched
on each disk's ``tags`` and cross-checked with the tag search, which has no enterprise-project field.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from orchestrator.api.safe import list_all_volumes, volumes_by_tags
from orchestrator.errors import RunAborted
from orchestrator.manifest import TAG_PREFIX, spreadsheet_text

if TYPE_CHECKING:
    from orchestrator.api.routes import Route
    from orchestrator.api.views import Volume
    from orchestrator.retry import RetryPolicy

COLUMNS = (
    "volume_id",
    "server_id",
    "device",
    "bootable",
    "volume_name",
    "size",
    "availability_zone",
    "status",
)
MAX_TAG_KEYS = 10  # evs-api.md 8.5


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Selector:
    """What a disk must match (every given selector, ANDed)."""

    servers: tuple[str, ...] = ()
    tags: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    availability_zone: str | None = None
    status: str | None = None
    name: str | None = None
    boot: bool | None = None  # True: only boot disks; False: no boot disks; None: both

    @property
    def empty(self) -> bool:
        return not (
            self.servers or self.tags or self.metadata or self.availability_zone or self.status or self.name
        ) and (self.boot is None)

    def query(self) -> list[tuple[str, str]]:
        """The list filters the service applies (every selector is also checked on each disk)."""

        query = [
            (key, value)
            for key, value in (
                ("availability_zone", self.availability_zone),
                ("status", self.status),
                ("name", self.name),
            )
            if value is not None
        ]
        if self.metadata:
            query.append(("metadata", orjson.dumps(dict(self.metadata)).decode()))
        return query

    def matches(self, volume: Volume, *, tags: bool = True) -> bool:
        """True when the disk matches every selector (``tags=False``: every one but ``--tag``)."""
        if self.servers and not set(self.servers) & {server.lower() for server in volume.servers}:
            return False
        if tags and not self.tagged(volume):
            return False
        metadata = volume.metadata
        if any(key not in metadata or metadata[key] != value for key, value in self.metadata.items()):
            return False
        wanted = (
            (volume.availability_zone, self.availability_zone),
            (volume.status, self.status),
            (volume.name, self.name),
        )
        if any(value is not None and found != value for found, value in wanted):
            return False
        return self.boot is None or volume.bootable == self.boot

    def tagged(self, volume: Volume) -> bool:
        """The disk's tags (a map in the volume list's answer) match every ``--tag``."""
        tags = volume.tags
        return all(key in tags and (not values or tags[key] in values) for key, values in self.tags.items())


def manifest_row(
    volume: Volume, selector: Selector, *, force: bool, with_tags: bool = False
) -> dict[str, Any]:
    """One manifest row: ``volume_id`` and the informational columns (and ``force`` with ``--force``,
    ``tag:KEY`` for each of the disk's tags with ``--with-tags``).

    A disk attached to several servers is shown with a selected server's attachment when there is one.
    """
    attachments = volume.attachments
    chosen = next((a for a in attachments if a.server_id.lower() in selector.servers), None)
    chosen = chosen or (attachments[0] if attachments else None)
    row: dict[str, Any] = {
        "volume_id": volume.id,
        "server_id": None if chosen is None else chosen.server_id,
        "device": None if chosen is None else chosen.device,
        "bootable": "true" if volume.bootable else "false",
        "volume_name": volume.name or None,
        "size": volume.size,
        "availability_zone": volume.availability_zone,
        "status": volume.status,
    }
    if force:
        row["force"] = bool(attachments) or volume.status == "in-use"
    if with_tags:
        row.update((TAG_PREFIX + key, value) for key, value in volume.tags.items())
    return row


def manifest_columns(rows: Iterable[Mapping[str, Any]], *, force: bool, with_tags: bool) -> tuple[str, ...]:
    """The manifest's columns: ``COLUMNS``, ``force`` with ``--force``, then with ``--with-tags`` one
    ``tag:KEY`` column per tag key any selected disk has, sorted by key."""

    tags = {column for row in rows for column in row if column.startswith(TAG_PREFIX)} if with_tags else set()
    return (*COLUMNS, *(("force",) if force else ()), *sorted(tags))


async def find_volumes(route: Route, selector: Selector, policy: RetryPolicy) -> list[Volume]:
    """Every disk of the route's project that matches, each once, in listing order.

    The disks always come from the volume list (every enterprise project the caller may see), and
    ``--tag`` is matched on each disk's ``tags``. The tag search has no enterprise-project field
    (evs-api.md 10): it is asked too, and when the two disagree the run stops (exit 3) rather than
    write a manifest that may leave disks out.
    """

    if selector.servers:
        candidates = []
        for server in selector.servers:
            candidates += await list_all_volumes(route, policy, [("server_id", server), *selector.query()])
    else:
        candidates = await list_all_volumes(route, policy, selector.query())
    found: dict[str, Volume] = {}
    for volume in candidates:
        if volume.id and volume.id not in found and selector.matches(volume):
            found[volume.id] = volume
    if selector.tags:
        listed = {volume.id: volume for volume in candidates if volume.id}
        searched = {
            volume.id
            for volume in await volumes_by_tags(route, selector.tags, policy)
            if volume.id and selector.matches(listed.get(volume.id, volume), tags=False)
        }
        _cross_check(found.keys(), searched)
    return list(found.values())


def _cross_check(listed: Iterable[str], searched: set[str]) -> None:
    """Stop (exit 3) when the volume list's tag matches and the tag search's differ."""

    listed = set(listed)
    if listed == searched:
        return
    only_listed, only_searched = sorted(listed - searched), sorted(searched - listed)
    told = []
    if only_listed:
        told.append(
            f"{len(only_listed)} disk(s) carry the tags in the volume list but the tag search left them out "
            f"({', '.join(only_listed[:5])}): the tag search may see only some enterprise projects"
        )
    if only_searched:
        told.append(
            f"{len(only_searched)} disk(s) found by the tag search do not carry the tags in the volume list "
            f"({', '.join(only_searched[:5])})"
        )
    raise RunAborted(
        "TAGS_DISAGREE: the volume list and the tag search disagree: "
        + "; ".join(told)
        + "; no manifest was written (select by --server, --metadata or --name, or check the tags)"
    )


def write_manifest(
    rows: Iterable[Mapping[str, Any]], stream: TextIO, fmt: str, columns: tuple[str, ...]
) -> None:
    """The rows as CSV, JSON or JSON Lines; a column a row lacks is an empty cell (``null`` in JSON)."""

    if fmt == "csv":
        writer = csv.writer(stream, lineterminator="\n")
        # Python 3.11 leaves a CR unquoted when lines end in LF, which would split the row: quote that row.
        quoted = csv.writer(stream, lineterminator="\n", quoting=csv.QUOTE_ALL)
        writer.writerow(columns)
        for row in rows:
            cells = [_cell(row.get(column)) for column in columns]
            has_cr = any(isinstance(cell, str) and "\r" in cell for cell in cells)
            (quoted if has_cr else writer).writerow(cells)
        return
    lines = [orjson.dumps({column: row.get(column) for column in columns}).decode() for row in rows]
    if fmt == "jsonl":
        stream.write("".join(f"{line}\n" for line in lines))
    else:
        stream.write("[\n" + ",\n".join(lines) + "\n]\n")


def _cell(value: object) -> object:
    """A CSV cell; text a spreadsheet would run as a formula gets a leading apostrophe."""

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return spreadsheet_text(value)
    return "" if value is None else value
