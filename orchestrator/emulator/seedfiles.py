"""Reading the emulator's seed files: ``--volumes FILE`` and ``--snapshots FILE`` (CSV or JSON).

A JSON file holds an array of objects, or ``{"volumes": [...]}`` / ``{"snapshots": [...]}``. A CSV file
has a header row naming at least the columns an entry needs (``volume_id``; ``id`` and ``volume_id``);
object-valued columns (``metadata``) hold a JSON object, and ``tags`` is ``k=v;k2=v2``. Every problem is
one ``UsageError`` line naming the file (and the entry, or ``file:line``): an empty, binary or non-UTF-8
file, bad JSON or CSV syntax (a quote never closed, a row with more cells than the header), a header
without a needed column, a missing id, an unknown status, a malformed value.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import orjson

from orchestrator.emulator.clock import evs_time
from orchestrator.emulator.settings import (
    DEFAULT_ENTERPRISE_PROJECT,
    SNAPSHOT_STATUSES,
    VOLUME_STATUSES,
    SeedSnapshot,
    SeedVolume,
)
from orchestrator.errors import UsageError

Item = Mapping[str | None, object]
TRUE_WORDS = frozenset({"true", "1", "yes", "y"})
FALSE_WORDS = frozenset({"false", "0", "no", "n", ""})


class EntryError(ValueError):
    """One entry of a seed file is wrong; the reader adds the file and entry number."""


def read_volumes(path: Path) -> tuple[SeedVolume, ...]:
    """The disks of a ``--volumes`` file: ``volume_id`` plus optional ``status``, ``size``, ``name``,
    ``server_id``, ``device``, ``bootable``, ``availability_zone``, ``metadata``, ``tags``,
    ``enterprise_project_id``."""
    volumes = []
    seen: set[str] = set()
    for number, (at, item) in enumerate(_items(path, "volumes", "volume", ("volume_id",)), start=1):
        volume_id = (_text(item, "volume_id") or "").lower()
        server_id = _text(item, "server_id")
        status = _text(item, "status") or ("in-use" if server_id else "available")
        if not volume_id or status not in VOLUME_STATUSES:
            raise UsageError(f"{path}: entry {number} needs a volume_id and a known status{at}")
        if volume_id in seen:  # one disk, two descriptions: neither is taken silently
            raise UsageError(f"{path}: entry {number}: volume id {volume_id} appears twice{at}")
        seen.add(volume_id)
        try:
            volumes.append(
                SeedVolume(
                    volume_id=volume_id,
                    status=status,
                    size=_whole(item, "size", 40),
                    name=_text(item, "name") or "",
                    server_id=server_id,
                    device=_text(item, "device"),
                    bootable=_flag(item, "bootable"),
                    availability_zone=_text(item, "availability_zone"),
                    metadata=_mapping(item, "metadata"),
                    tags=_tags(item),
                    enterprise_project_id=_text(item, "enterprise_project_id") or DEFAULT_ENTERPRISE_PROJECT,
                )
            )
        except EntryError as exc:
            raise UsageError(f"{path}: entry {number}: {exc}{at}") from None
    return tuple(volumes)


def read_snapshots(path: Path) -> tuple[SeedSnapshot, ...]:
    """The snapshots of a ``--snapshots`` file: ``id``, ``volume_id`` plus optional ``name``, ``status``,
    ``created_at``, ``metadata``, ``project_id``, ``description``, ``size``."""
    snapshots: list[SeedSnapshot] = []
    seen: set[str] = set()
    for number, (at, item) in enumerate(_items(path, "snapshots", "snapshot", ("id", "volume_id")), start=1):
        snapshot_id = _text(item, "id") or ""
        volume_id = (_text(item, "volume_id") or "").lower()
        status = _text(item, "status") or "available"
        if not snapshot_id or not volume_id:
            raise UsageError(f"{path}: entry {number} needs an id and a volume_id{at}")
        if status not in SNAPSHOT_STATUSES:
            raise UsageError(f"{path}: entry {number}: unknown snapshot status {status!r}{at}")
        if snapshot_id in seen:
            raise UsageError(f"{path}: entry {number}: snapshot id {snapshot_id} appears twice{at}")
        seen.add(snapshot_id)
        try:
            size = _whole(item, "size", 0) or None
            snapshots.append(
                SeedSnapshot(
                    id=snapshot_id,
                    volume_id=volume_id,
                    name=_text(item, "name"),
                    status=status,
                    created_at=_timestamp(item, "created_at"),
                    metadata=_mapping(item, "metadata"),
                    project_id=_text(item, "project_id"),
                    description=_text(item, "description"),
                    size=size,
                )
            )
        except EntryError as exc:
            raise UsageError(f"{path}: entry {number}: {exc}{at}") from None
    return tuple(snapshots)


def _items(path: Path, key: str, noun: str, needed: tuple[str, ...]) -> Iterable[tuple[str, Item]]:
    """The file's entries, each with what a message adds to name it (`` (line N)`` in CSV, else "")."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the {key} file: {exc.strerror}") from None
    if b"\x00" in data:
        raise UsageError(f"{path}: a binary file, not CSV or JSON text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None
    expected = f"expected a CSV header with {' and '.join(needed)}, or a JSON array of {noun} objects"
    if not text.strip():
        raise UsageError(f"{path}: the {key} file is empty: {expected}")
    if path.suffix.lower() == ".json" or text.lstrip()[:1] in ("[", "{"):
        try:
            loaded = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"{path}: not valid JSON: {exc}") from None
        items = loaded.get(key) if isinstance(loaded, dict) else loaded
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise UsageError(f"{path}: expected an array of {noun} objects")
        return [("", item) for item in items]
    return _csv_items(path, text, needed, expected)


def _csv_items(path: Path, text: str, needed: tuple[str, ...], expected: str) -> list[tuple[str, Item]]:
    """A CSV file's entries (blank lines skipped), each a dict of the header's columns and its cells."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)  # strict: a quote never closed fails
    start = 1  # the line the row being read starts on
    header: list[str] | None = None
    items: list[tuple[str, Item]] = []
    try:
        for cells in reader:
            line, start = start, reader.line_num + 1
            if not cells:
                continue
            if header is None:
                header = cells
                twice = sorted({column for column in header if header.count(column) > 1})
                if twice:  # one column, two cells: neither is taken silently
                    raise UsageError(f"{path}:{line}: the header names {', '.join(map(repr, twice))} twice")
                missing = [column for column in needed if column not in header]
                if missing:
                    raise UsageError(
                        f"{path}:{line}: the header has no {' and no '.join(missing)} column "
                        f"(found {', '.join(map(repr, header[:10]))}): {expected}"
                    )
            elif len(cells) > len(header):
                raise UsageError(
                    f"{path}:{line}: this row has {len(cells)} cells, the header {len(header)} columns"
                )
            else:
                items.append((f" (line {line})", dict(zip(header, cells, strict=False))))
    except csv.Error as exc:
        raise UsageError(f"{path}:{start}: not valid CSV: {exc} (check the quoting from this line)") from None
    return items


def _text(item: Item, key: str) -> str | None:
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value).strip() or None
    raise EntryError(f"{key} must be a string")


def _whole(item: Item, key: str, default: int) -> int:
    text = _text(item, key)
    if text is None:
        return default
    try:
        number = int(text)
    except ValueError:
        raise EntryError(f"{key} must be a whole number") from None
    if number < 0:
        raise EntryError(f"{key} must not be negative")
    return number


def _flag(item: Item, key: str) -> bool:
    text = (_text(item, key) or "").lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise EntryError(f"{key} must be true or false")


def _mapping(item: Item, key: str) -> dict[str, str]:
    value = item.get(key)
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise EntryError(f"{key} must be a JSON object") from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise EntryError(f"{key} must be a JSON object of strings")
    return dict(value)


def _tags(item: Item) -> dict[str, str]:
    value = item.get("tags")
    if isinstance(value, str) and not value.strip().startswith("{"):
        tags = {}
        for pair in value.split(";"):
            if not pair.strip():
                continue
            tag, _, tag_value = pair.partition("=")
            if not tag.strip():
                raise EntryError("tags must be k=v;k2=v2")
            tags[tag.strip()] = tag_value.strip()
        return tags
    return _mapping(item, "tags")


def _timestamp(item: Item, key: str) -> str | None:
    text = _text(item, key)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return evs_time(moment)
    except ValueError:
        raise EntryError(f"{key} must be YYYY-MM-DDTHH:MM:SS.ffffff (UTC) or ISO 8601") from None
    except OverflowError:  # in UTC it falls before year 1 or after year 9999
        raise EntryError(f"{key} {text!r} is out of range in UTC (years 1-9999)") from None
