"""A manifest's rows grouped by server: the ``server_id`` column that ``select`` writes.

``rows_by_server`` is the one grouping, shared by every mode that works server by server
(``create --hook-per-server`` runs its hooks once per server it returns). It keeps row numbers, not
rows: a manifest is read again to send them. Server ids are compared as the API writes them (lower
case, surrounding spaces trimmed); a row that is not an object is left out (it is invalid anyway).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from orchestrator.duplicates import UUID_RE
from orchestrator.errors import UsageError
from orchestrator.manifest import RawRow

NAMED_ROWS = 20  # rows without a server named in an error, at most


@dataclasses.dataclass(frozen=True, slots=True, eq=False, repr=False)
class ServerRows:
    """Each server's rows (1-based row numbers, in manifest order), and the rows that name no server."""

    rows: dict[str, list[int]]
    server_of: dict[int, str]
    without: int = 0  # rows with no server_id (missing, null or empty)
    first_without: tuple[int, ...] = ()  # the first NAMED_ROWS of them
    malformed: int = 0  # rows whose server_id is not a UUID
    first_malformed: tuple[int, ...] = ()

    def last_row(self, server: str) -> int:
        """The server's last row in the manifest."""
        return self.rows[server][-1]

    def require(self, mode: str) -> None:
        """Raise ``UsageError`` (exit 2, before anything is sent) when a row names no server: ``mode``
        (an option) works server by server."""
        require_servers(mode, self.first_without, self.without)
        refuse_malformed(mode, self.first_malformed, self.malformed)


def require_servers(mode: str, first_without: tuple[int, ...], without: int) -> None:
    """Exit 2 (``UsageError``) when ``without`` rows, the first of them ``first_without``, name no server."""
    if not without:
        return
    named = ", ".join(map(str, first_without))
    more = "" if without <= len(first_without) else f", ... ({without} in all)"
    raise UsageError(
        f"{mode} works server by server, and rows {named}{more} have no server_id (the column "
        "`evs-snapshot select` writes; empty for a disk attached to no server): give them one, or "
        "run them as a manifest of their own without it"
    )


def refuse_malformed(mode: str, first: tuple[int, ...], count: int) -> None:
    """Exit 2 when ``count`` rows, the first of them ``first``, give a server_id that is not a UUID: a
    server's id reaches a hook's shell command ({server_id}) and the group API, so it must be one."""
    if not count:
        return
    named = ", ".join(map(str, first))
    more = "" if count <= len(first) else f", ... ({count} in all)"
    raise UsageError(
        f"{mode} works server by server, and rows {named}{more} have a server_id that is not a server's id "
        "(a UUID, as `evs-snapshot select` writes it): fix the column"
    )


def well_formed(server: str) -> bool:
    """A server id as the API gives it: a UUID (``server_id`` has lower-cased and trimmed it)."""
    return UUID_RE.match(server) is not None


def server_id(fields: dict[str, object]) -> str | None:
    """A row's server id as the API writes it, or ``None`` when the row names none."""
    value = fields.get("server_id")
    if value is None:
        return None
    text = str(value).strip().lower()
    return text or None


def rows_by_server(rows: Iterable[RawRow]) -> ServerRows:
    """Group ``rows`` by their ``server_id`` column (one pass; the rows are not kept)."""
    grouped: dict[str, list[int]] = {}
    server_of: dict[int, str] = {}
    without: list[int] = []
    malformed: list[int] = []
    for raw in rows:
        if raw.fields is None:
            continue
        server = server_id(raw.fields)
        if server is None or not well_formed(server):
            (without if server is None else malformed).append(raw.row)
            continue
        grouped.setdefault(server, []).append(raw.row)
        server_of[raw.row] = server
    return ServerRows(
        grouped,
        server_of,
        len(without),
        tuple(without[:NAMED_ROWS]),
        len(malformed),
        tuple(malformed[:NAMED_ROWS]),
    )
