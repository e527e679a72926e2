"""Streaming manifest reader: CSV, JSON (array or ``{"volumes": [...]}``) and JSON Lines.

It yields ``RawRow`` values one at a time and keeps no rows in memory: CSV and JSON Lines are read
line by line, JSON in fixed-size chunks of incrementally decoded text, so a minified one-line file
costs no more memory than a pretty one. A problem with the file as a whole raises ``ManifestError``
naming ``file:line``; field rules live in ``rules.py``.

Column names (CSV header cells and JSON object keys) are read by ``column_name``:

- known names (the row fields and the informational columns ``select`` writes) ignore case and
  surrounding spaces, and are stored in lower case (`` Volume_ID `` is ``volume_id``);
- ``metadata.KEY`` and ``tag:KEY``: the prefix ignores case, the KEY keeps its own case
  (``Metadata.Owner`` is ``metadata.Owner``, ``TAG:Env`` is ``tag:Env``), because metadata and tag keys
  are case-sensitive in the cloud;
- any other column keeps its own spelling, trimmed: that is how a ``{column}`` placeholder names it.

In CSV a cell that starts with an apostrophe and then ``=``, ``+``, ``-``, ``@``, a tab, a carriage
return or another apostrophe is read without the first apostrophe: that is how ``select`` (and a
spreadsheet) keeps such text from being run as a formula.

Two header cells with the same name after this are a file error; two keys of one JSON object with the
same name, or one key given twice (in the row or an object it holds), make that row invalid
(``RawRow.problem``). JSON is streamed by ``jsonstream.py``, where
nesting deeper than ``MAX_DEPTH`` levels is a file error.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import enum
import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

import orjson

from orchestrator.errors import ManifestError, UsageError
from orchestrator.jsonstream import (
    BOM,
    MAX_DEPTH,
    JsonScanner,
    decoded_chunks,
    manifest_elements,
    nesting_error,
    too_deep,
)
from orchestrator.signals import STOP_EVERY, blocking, stop_point

MAX_LINE_BYTES = 1 << 22
WARN_LIMIT = 10
MAX_TRACKED_COLUMNS = 50_000
METADATA_PREFIX = "metadata."
TAG_PREFIX = "tag:"  # the columns of a disk's tags that ``select --with-tags`` writes
FIELDS = frozenset({"volume_id", "name", "description", "force", "metadata", "project_id", "region"})
INFO_COLUMNS = frozenset(
    {"server_id", "device", "bootable", "volume_name", "size", "availability_zone", "status"}
)
KNOWN_COLUMNS = FIELDS | INFO_COLUMNS
# A CSV cell starting with one of these is a formula to a spreadsheet (OWASP "CSV injection"): select
# writes such a cell behind an apostrophe, which spreadsheets show as text and this reader removes.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# ...and a cell that starts with an apostrophe gets one more, so that every value reads back as it was.
GUARDED_STARTS = (*FORMULA_STARTS, "'")
# Where a JSON key's colon can be: right after the key's closing quote, or after a blank.
_KEY_COLONS = ('":', " :", "\t:", "\n:", "\r:")
_is_object = functools.partial(type.__instancecheck__, dict)  # isinstance(item, dict), called from C


class Format(enum.StrEnum):
    CSV = "csv"
    JSON = "json"
    JSONL = "jsonl"


EXTENSIONS = {
    ".csv": Format.CSV,
    ".json": Format.JSON,
    ".jsonl": Format.JSONL,
    ".ndjson": Format.JSONL,
}


class RawRow(NamedTuple):
    """One manifest row as read: its 1-based position, the line it starts on, and its fields.

    ``fields`` is ``None`` when the row is not an object (a JSON scalar, or a CSV row with more cells
    than the header); ``from_csv`` tells that values are text to be parsed (``force``, ``metadata``).
    ``problem`` says why fields that were read cannot be trusted (two keys naming one field).
    A named tuple, not a frozen dataclass: each pass makes one a row, and a tuple is made in C.
    """

    row: int
    line: int
    fields: dict[str, Any] | None
    from_csv: bool
    problem: str | None = None


# The columns that make a row's identity (``duplicates.key_of``): all the first pass reads of a row.
KEY_COLUMNS = ("volume_id", "project_id", "region")
KeyCells = tuple[Any, Any, Any] | None


@dataclasses.dataclass(frozen=True, slots=True, eq=False, repr=False)
class ManifestSource:
    """Where a manifest is and how to read it; ``path`` is ``-`` for standard input."""

    path: str
    format: Format
    stdin: bool = False  # a copy of standard input (``spooled``): named ``<stdin>`` in messages

    @property
    def shown(self) -> str:
        """How messages name the manifest: its path, or ``<stdin>``."""
        return "<stdin>" if self.path == "-" or self.stdin else self.path

    @classmethod
    def of(cls, path: str, forced: str | None) -> ManifestSource:
        if forced is not None:
            return cls(path, Format(forced))
        if path == "-":
            raise UsageError("reading the manifest from standard input needs --format csv|json|jsonl")
        found = EXTENSIONS.get(Path(path).suffix.lower())
        if found is None:
            raise UsageError(
                f"{path}: cannot tell the manifest format from its extension; "
                "use .csv, .json, .jsonl or .ndjson, or give --format"
            )
        return cls(path, found)


@contextlib.contextmanager
def spooled(source: ManifestSource) -> Iterator[ManifestSource]:
    """A source that can be read twice: standard input is copied to a temporary file first.

    Only this process reads the copy, so where a file can be opened by its descriptor (Linux's
    ``/proc/self/fd``) its name is unlinked as soon as it is made and the readers open it that way: a
    killed run leaves no copy in ``$TMPDIR``. Elsewhere the named copy is removed when the block ends.
    """
    if source.path != "-":
        yield source
        return
    if sys.stdin is None:  # started with descriptor 0 closed (``<&-``)
        raise ManifestError(
            source.shown,
            None,
            "standard input is closed: pass the manifest as a file, or give it on standard input",
        )

    try:
        fd, name = tempfile.mkstemp(prefix="evs-snapshot-stdin-", suffix=f".{source.format}")
    except OSError as exc:
        raise _uncopied(source, exc) from None
    by_descriptor = f"/proc/self/fd/{fd}"
    named = not os.path.exists(by_descriptor)
    try:
        if not named:
            os.unlink(name)
        try:
            with (
                open(fd, "wb", closefd=False) as copy,
                blocking(),
            ):  # a signal stops a stalled producer's copy
                shutil.copyfileobj(sys.stdin.buffer, copy)
        except OSError as exc:  # no room in TMPDIR (ENOSPC), a file size limit (EFBIG), a quota
            raise _uncopied(source, exc) from None
        yield ManifestSource(name if named else by_descriptor, source.format, stdin=True)
    finally:
        os.close(fd)
        if named:
            with contextlib.suppress(OSError):
                os.unlink(name)


def _uncopied(source: ManifestSource, exc: OSError) -> ManifestError:
    """Standard input could not be copied to its spool file: say where, and what to do."""
    return ManifestError(
        source.shown,
        None,
        f"cannot copy standard input to a file in TMPDIR ({tempfile.gettempdir()}): {exc.strerror or exc}",
        "set TMPDIR to a folder with room, or pass the manifest as a file",
    )


def manifest_digest(source: ManifestSource, *, display: str | None = None) -> str:
    """``sha256:<hex>`` over the manifest file's raw bytes, read in chunks.

    For standard input pass the source ``spooled`` yields (the copy); ``-`` itself cannot be read twice.
    """
    if source.path == "-":
        raise ValueError("standard input must be spooled before its digest is taken")
    try:
        with open(source.path, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256")
    except OSError as exc:
        raise ManifestError(
            display or source.shown, None, f"cannot open the manifest: {exc.strerror}"
        ) from None
    return f"sha256:{digest.hexdigest()}"


def column_name(raw: str) -> str:
    """The name a column or key is known by (see the module docstring)."""
    name = raw.strip()
    lower = name.lower()
    if lower in KNOWN_COLUMNS:
        return lower
    for prefix in (METADATA_PREFIX, TAG_PREFIX):
        if lower.startswith(prefix):
            return prefix + name[len(prefix) :]
    return name


def read_rows(
    source: ManifestSource,
    *,
    display: str | None = None,
    warn: Callable[[str], None] | None = None,
    also_known: frozenset[str] = frozenset(),
) -> Iterator[RawRow]:
    """Yield every row of the manifest in order; raise ``ManifestError`` for a bad file.

    ``warn`` gets one message for each of the first ``WARN_LIMIT`` unknown column names and then one
    with the count of the others; ``also_known`` names columns not to warn about.
    """

    name = display or source.shown
    columns = _ColumnWarnings(name, warn, also_known)
    try:
        handle = open(source.path, "rb")  # noqa: SIM115 - closed by the with below, after the generator ends
    except OSError as exc:
        raise ManifestError(name, None, f"cannot open the manifest: {exc.strerror}") from None
    with handle:
        rows: Iterator[RawRow]
        if source.format is Format.JSON:
            elements = manifest_elements(JsonScanner(decoded_chunks(handle, name), name))
            rows = (_json_row(row, *element, columns) for row, element in enumerate(elements, start=1))
        elif source.format is Format.JSONL:
            rows = _jsonl_rows(_decoded_lines(handle, name), name, columns)
        else:
            rows = _csv_rows(_decoded_lines(handle, name), name, columns)
        count = 0
        for count, row in enumerate(rows, start=1):
            if count % STOP_EVERY == 0:
                stop_point()  # a pass in a worker thread ends soon after a signal cancelled the command
            yield row
        columns.finish()
        if count == 0:
            raise _no_rows(name)


def read_keys(
    source: ManifestSource,
    *,
    display: str | None = None,
    warn: Callable[[str], None] | None = None,
    also_known: frozenset[str] = frozenset(),
) -> Iterator[KeyCells]:
    """Each row's ``KEY_COLUMNS`` cells, in order: what ``read_rows``'s row has under those names
    (``None`` for a column it leaves out), or ``None`` for a row that is not an object. The first pass
    reads these alone; the file's errors and warnings are ``read_rows``'s, at the same ``file:line``.

    A CSV manifest's cells are read without making each row's fields (a blank volume_id cell is given
    as ``""``, no UUID either way); JSON's rows are ``read_rows``'s.
    """
    if source.format is not Format.CSV:
        return row_keys(read_rows(source, display=display, warn=warn, also_known=also_known))
    return _csv_keys(
        source, display or source.shown, _ColumnWarnings(display or source.shown, warn, also_known)
    )


def row_keys(rows: Iterable[RawRow]) -> Iterator[KeyCells]:
    """``read_keys``'s view of rows already read."""
    for raw in rows:
        fields = raw.fields
        yield (
            None
            if fields is None
            else (fields.get("volume_id"), fields.get("project_id"), fields.get("region"))
        )


def _no_rows(name: str) -> ManifestError:
    return ManifestError(name, None, "the manifest has no rows", "add at least one volume")


def _decoded_lines(handle: IO[bytes], name: str) -> Iterator[str]:
    """The manifest's lines as text, in order (a reader counts them: the first is line 1)."""
    read = functools.partial(handle.readline, MAX_LINE_BYTES + 1)
    number, raw = 1, read()
    if raw.startswith(BOM):
        raw = raw[3:]
    while raw:
        if len(raw) > MAX_LINE_BYTES:
            raise ManifestError(
                name, number, f"this line is longer than {MAX_LINE_BYTES:,} bytes", "one row per line"
            )
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ManifestError(
                name, number, "this line is not valid UTF-8", "save the manifest as UTF-8"
            ) from None
        number, raw = number + 1, read()


def spreadsheet_text(cell: str) -> str:
    """A CSV cell as written for people who open it in a spreadsheet: text, never a formula."""
    return "'" + cell if cell.startswith(GUARDED_STARTS) else cell


def _read_cell(cell: str) -> str:
    """The value of a CSV cell: ``spreadsheet_text``'s apostrophe is removed."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(GUARDED_STARTS) else cell


def _shown(text: str) -> str:
    """A name for a message: quoted, control characters escaped, cut at 64 characters."""
    return repr(text if len(text) <= 64 else text[:64] + "...")


class _ColumnWarnings:
    """Warns about unknown column names: the first ``WARN_LIMIT`` one by one, the rest as one count."""

    def __init__(self, name: str, warn: Callable[[str], None] | None, also_known: frozenset[str]) -> None:
        self.name = name
        self.warn = warn
        self.known = frozenset(column_name(column) for column in also_known)
        self.seen: set[str] = set()
        self.unlisted = 0
        self.saturated = False  # more distinct names than we keep count of

    def check(self, keys: Iterable[str]) -> None:
        if self.warn is None:
            return
        for key in keys:
            if (
                key in KNOWN_COLUMNS
                or key in self.seen
                or key in self.known
                or key.startswith((METADATA_PREFIX, TAG_PREFIX))
            ):
                continue
            if len(self.seen) >= MAX_TRACKED_COLUMNS:
                self.saturated = True
                continue
            self.seen.add(key)
            if len(self.seen) <= WARN_LIMIT:
                self.warn(
                    f"{self.name}: unknown column {_shown(key)} is ignored "
                    "(it can still be used in --name-template)"
                )
            else:
                self.unlisted += 1

    def finish(self) -> None:
        """Say how many unknown columns were not named, once."""
        if self.warn is not None and self.unlisted:
            count = f"more than {self.unlisted:,}" if self.saturated else f"{self.unlisted:,}"
            plural = "s are" if self.saturated or self.unlisted > 1 else " is"
            self.warn(f"{self.name}: {count} more unknown column{plural} ignored (not named one by one)")
        self.unlisted = 0


def _checked_header(header: list[str], name: str, line: int) -> list[str]:
    """The header's column names; the same name twice is a file error."""
    columns = [column_name(cell) for cell in header]
    first: dict[str, int] = {}
    for index, column in enumerate(columns):
        if column in first:
            earlier = first[column]
            raise ManifestError(
                name,
                line,
                f"the header has the column {_shown(column)} twice: {_shown(header[earlier].strip())} "
                f"in column {earlier + 1} and {_shown(header[index].strip())} in column {index + 1}",
                "rename or remove one of them",
            )
        if column:  # several unnamed columns (trailing commas) are only ignored
            first[column] = index
    if "volume_id" not in first:
        shown = ", ".join(_shown(column) for column in columns[:WARN_LIMIT])
        more = f" and {len(columns) - WARN_LIMIT:,} more" if len(columns) > WARN_LIMIT else ""
        raise ManifestError(name, line, "the header has no volume_id column", f"columns found: {shown}{more}")
    return columns


def _csv_header(reader: Any, name: str, columns_seen: _ColumnWarnings) -> list[str]:
    """The column names of a CSV manifest's first row that is not blank (its unknown names warned of)."""
    header = next(reader, None)
    while header is not None and not any(map(str.strip, header)):
        header = next(reader, None)
    if header is None:
        raise ManifestError(name, None, "the manifest is empty", "add a header row with volume_id")
    columns = _checked_header(header, name, reader.line_num)
    columns_seen.check(columns)
    columns_seen.finish()
    return columns


def csv_columns(source: ManifestSource, display: str | None = None) -> list[str]:
    """The column names of a CSV manifest's header (read again; ``read_rows`` has checked it)."""
    name = display or source.shown
    with open(source.path, "rb") as handle:
        reader = csv.reader(_decoded_lines(handle, name), strict=True)
        try:
            return _csv_header(reader, name, _ColumnWarnings(name, None, frozenset()))
        except csv.Error as exc:
            raise _csv_error(name, reader, exc) from None


def _csv_error(name: str, reader: Any, exc: csv.Error) -> ManifestError:
    return ManifestError(name, reader.line_num, f"CSV syntax error: {exc}", "check the quoting on this line")


def _key_cell(cell: str) -> str | None:
    """A CSV cell as ``_csv_rows`` puts it in a row's fields (``None``: left out, being blank)."""
    if not cell.strip():
        return None
    return _read_cell(cell) if cell[0] == "'" else cell


def _csv_keys(source: ManifestSource, name: str, columns_seen: _ColumnWarnings) -> Iterator[KeyCells]:
    """``read_keys`` of a CSV manifest: ``read_rows``'s rows, errors and order, with only the key cells.

    The volume_id cell is given even when blank (``""``, where ``_csv_rows`` leaves it out): a blank
    one is no UUID either way.
    """
    try:
        handle = open(source.path, "rb")  # noqa: SIM115 - closed by the with below, after the generator ends
    except OSError as exc:
        raise ManifestError(name, None, f"cannot open the manifest: {exc.strerror}") from None
    with handle:
        reader = csv.reader(_decoded_lines(handle, name), strict=True)
        row = 0
        try:
            columns = _csv_header(reader, name, columns_seen)
            width = len(columns)
            volume, project, region = (
                columns.index(column) if column in columns else width for column in KEY_COLUMNS
            )
            for cells in reader:
                if not any(map(str.strip, cells)):
                    continue
                row += 1
                if row % STOP_EVERY == 0:
                    stop_point()  # a pass in a worker thread ends soon after a signal cancelled the command
                count = len(cells)
                if count > width:
                    yield None
                    continue
                cell = cells[volume] if volume < count else ""
                if cell[:1] == "'":
                    cell = _read_cell(cell)
                if project == region == width:  # the usual manifest: no project_id, no region column
                    yield (cell, None, None)
                else:
                    yield (
                        cell,
                        _key_cell(cells[project]) if project < count else None,
                        _key_cell(cells[region]) if region < count else None,
                    )
        except csv.Error as exc:
            raise _csv_error(name, reader, exc) from None
        if row == 0:
            raise _no_rows(name)


def _csv_rows(lines: Iterator[str], name: str, columns_seen: _ColumnWarnings) -> Iterator[RawRow]:
    reader = csv.reader(lines, strict=True)  # its line_num: the number of the last line it read
    try:
        columns = _csv_header(reader, name, columns_seen)
        every_named = all(columns)
        row = 0
        start = reader.line_num + 1
        for cells in reader:
            line, start = start, reader.line_num + 1
            filled = every_named and cells and all(map(str.strip, cells))  # every cell (the usual row)
            if not filled and not any(map(str.strip, cells)):
                continue
            row += 1
            if len(cells) > len(columns):
                yield RawRow(row, line, None, from_csv=True)
                continue
            if filled and "'" not in "".join(cells):
                # The usual row (every cell filled, no apostrophe): the comprehension's dict, made in C.
                fields = dict(zip(columns, cells))  # noqa: B905 - fewer cells than columns: the rest are absent
            else:
                fields = {
                    column: _read_cell(cell) if cell[0] == "'" else cell
                    for column, cell in zip(columns, cells)  # noqa: B905 - as above
                    if column and cell.strip()
                }
            yield tuple.__new__(RawRow, (row, line, fields, True, None))  # made in C: no __new__ frame
    except csv.Error as exc:
        raise _csv_error(name, reader, exc) from None


def _jsonl_rows(lines: Iterator[str], name: str, columns: _ColumnWarnings) -> Iterator[RawRow]:
    row = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        start = len(line) - len(line.lstrip())
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            if too_deep(line, start) is not None:
                raise nesting_error(name, number) from None
            raise ManifestError(
                name, number, f"not valid JSON: {exc}", "each line must be one JSON object"
            ) from None
        if line.count("[") + line.count("{") > MAX_DEPTH and too_deep(line, start) is not None:
            raise nesting_error(name, number)
        row += 1
        yield _json_row(row, number, value, line, columns)


def _json_row(row: int, line: int, value: object, text: str, columns: _ColumnWarnings) -> RawRow:
    """A decoded JSON element (``text``) as a row; anything but an object is kept as a malformed row."""
    if not isinstance(value, dict):
        return RawRow(row, line, None, from_csv=False)
    # orjson keeps the last of a key given twice: a row with more colons than keys is checked.
    problem = _repeated_key(text, value) if text.count(":") > len(value) else None
    if KNOWN_COLUMNS.issuperset(value) or all(column_name(key) == key for key in value):
        columns.check(value)
        return tuple.__new__(RawRow, (row, line, value, False, problem))  # made in C: no __new__ frame
    fields: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, item in value.items():
        canonical = column_name(key)
        if canonical in spelled:
            problem = problem or (
                f"the keys {_shown(spelled[canonical])} and {_shown(key)} both name {_shown(canonical)}"
            )
            continue
        spelled[canonical] = key
        fields[canonical] = item
    columns.check(fields)
    return RawRow(row, line, fields, from_csv=False, problem=problem)


def _repeated_key(text: str, value: dict[str, Any]) -> str | None:
    """Why the JSON object ``text`` (``value`` as orjson read it) cannot be trusted: a key given twice,
    in it or in an object it holds, of which orjson keeps the last silently. A key is followed by a
    colon, right after its closing quote or a blank: only an object with more such colons than it and
    the objects among its values have keys is parsed again (by the standard library), to name the key."""
    colons = sum(map(text.count, _KEY_COLONS))
    if colons <= len(value) + sum(map(len, filter(_is_object, value.values()))):
        return None
    repeated: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> None:
        counts = Counter(key for key, _ in items)
        repeated.extend(key for key, _ in items if counts[key] > 1)

    json.loads(text, object_pairs_hook=pairs)
    return f"the key {_shown(repeated[0])} is given twice" if repeated else None
