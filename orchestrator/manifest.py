"""Streaming manifest reader: CSV, JSON (array or ``{"volumes": [...]}``) and JSON Lines.

It yields ``RawRow`` values one at a time and keeps no rows in memory; a problem with the file as a
whole raises ``ManifestError`` naming ``file:line``. Field rules live in ``rows.py``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import enum
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from orchestrator.errors import ManifestError, UsageError

BOM = b"\xef\xbb\xbf"
MAX_ELEMENT_CHARS = 1 << 20
CHUNK_CHARS = 1 << 16
KNOWN_COLUMNS = frozenset({"volume_id", "name", "description", "force", "metadata", "project_id", "region"})


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


@dataclasses.dataclass(frozen=True, slots=True)
class RawRow:
    """One manifest row as read: its 1-based position, the line it starts on, and its fields.

    ``fields`` is ``None`` when the row is not an object (a JSON scalar, or a CSV row with more cells
    than the header); ``from_csv`` tells that values are text to be parsed (``force``, ``metadata``).
    """

    row: int
    line: int
    fields: dict[str, Any] | None
    from_csv: bool


@dataclasses.dataclass(frozen=True, slots=True)
class ManifestSource:
    """Where a manifest is and how to read it; ``path`` is ``-`` for standard input."""

    path: str
    format: Format

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
    """A source that can be read twice: standard input is copied to a temporary file first."""
    if source.path != "-":
        yield source
        return
    with tempfile.NamedTemporaryFile(prefix="evs-snapshot-stdin-", suffix=f".{source.format}") as copy:
        shutil.copyfileobj(sys.stdin.buffer, copy)
        copy.flush()
        yield ManifestSource(copy.name, source.format)


def read_rows(
    source: ManifestSource,
    *,
    display: str | None = None,
    warn: Callable[[str], None] | None = None,
    also_known: frozenset[str] = frozenset(),
) -> Iterator[RawRow]:
    """Yield every row of the manifest in order; raise ``ManifestError`` for a bad file.

    ``warn`` gets one message per unknown column (``also_known`` names columns not to warn about).
    """
    name = display or source.path
    columns = _ColumnWarnings(name, warn, also_known)
    try:
        handle = open(source.path, "rb")  # noqa: SIM115 - closed by the with below, after the generator ends
    except OSError as exc:
        raise ManifestError(name, None, f"cannot open the manifest: {exc.strerror}") from None
    with handle:
        lines = _decoded_lines(handle, name)
        if source.format is Format.CSV:
            rows = _csv_rows(lines, name, columns)
        elif source.format is Format.JSONL:
            rows = _jsonl_rows(lines, name, columns)
        else:
            rows = _json_rows(lines, name, columns)
        count = 0
        for count, row in enumerate(rows, start=1):  # noqa: B007 - count is read after the loop
            yield row
        if count == 0:
            raise ManifestError(name, None, "the manifest has no rows", "add at least one volume")


def _decoded_lines(handle: IO[bytes], name: str) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(handle, start=1):
        chunk = raw[3:] if number == 1 and raw.startswith(BOM) else raw
        try:
            yield number, chunk.decode("utf-8")
        except UnicodeDecodeError:
            raise ManifestError(
                name, number, "this line is not valid UTF-8", "save the manifest as UTF-8"
            ) from None


class _ColumnWarnings:
    """One warning per unknown column name."""

    def __init__(self, name: str, warn: Callable[[str], None] | None, also_known: frozenset[str]) -> None:
        self.name = name
        self.warn = warn
        self.seen: set[str] = set(also_known)

    def check(self, keys: Any) -> None:
        if self.warn is None:
            return
        for key in keys:
            if key in self.seen or key in KNOWN_COLUMNS or str(key).startswith("metadata."):
                continue
            self.seen.add(key)
            self.warn(
                f"{self.name}: unknown column {key!r} is ignored (it can still be used in --name-template)"
            )


def _csv_rows(lines: Iterator[tuple[int, str]], name: str, columns_seen: _ColumnWarnings) -> Iterator[RawRow]:
    numbers: list[int] = [0]

    def text() -> Iterator[str]:
        for number, line in lines:
            numbers[0] = number
            yield line

    reader = csv.reader(text(), strict=True)
    try:
        header = next(reader, None)
        while header is not None and not any(cell.strip() for cell in header):
            header = next(reader, None)
        if header is None:
            raise ManifestError(name, None, "the manifest is empty", "add a header row with volume_id")
        columns = [cell.strip() for cell in header]
        if "volume_id" not in columns:
            raise ManifestError(
                name,
                numbers[0],
                "the header has no volume_id column",
                f"columns found: {', '.join(columns)}",
            )
        columns_seen.check(columns)
        row = 0
        start = numbers[0] + 1
        for cells in reader:
            line, start = start, numbers[0] + 1
            if not any(cell.strip() for cell in cells):
                continue
            row += 1
            if len(cells) > len(columns):
                yield RawRow(row, line, None, from_csv=True)
                continue
            fields = {column: cell for column, cell in zip(columns, cells, strict=False) if cell.strip()}
            yield RawRow(row, line, fields, from_csv=True)
    except csv.Error as exc:
        raise ManifestError(
            name, numbers[0], f"CSV syntax error: {exc}", "check the quoting on this line"
        ) from None


def _jsonl_rows(lines: Iterator[tuple[int, str]], name: str, columns: _ColumnWarnings) -> Iterator[RawRow]:
    row = 0
    for number, line in lines:
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ManifestError(
                name, number, f"not valid JSON: {exc}", "each line must be one JSON object"
            ) from None
        row += 1
        yield _json_row(row, number, value, columns)


def _json_row(row: int, line: int, value: object, columns: _ColumnWarnings) -> RawRow:
    """A decoded JSON element as a row; anything but an object is kept as a malformed row."""
    if isinstance(value, dict):
        columns.check(value)
        return RawRow(row, line, value, from_csv=False)
    return RawRow(row, line, None, from_csv=False)


class _JsonScanner:
    """Reads a JSON document piece by piece from numbered lines, keeping only a small window."""

    def __init__(self, lines: Iterator[tuple[int, str]], name: str) -> None:
        self.lines = lines
        self.name = name
        self.buffer = ""
        self.pos = 0
        self.line = 1  # line number of buffer[pos]
        self.eof = False
        self.decoder = json.JSONDecoder()

    def _fill(self) -> bool:
        """Append about one chunk of text to the window; False at the end of the file."""
        if self.eof:
            return False
        self.buffer = self.buffer[self.pos :]
        self.pos = 0
        added = 0
        for _, text in self.lines:
            self.buffer += text
            added += len(text)
            if added >= CHUNK_CHARS:
                break
        else:
            self.eof = True
        return added > 0

    def _advance(self, end: int) -> None:
        self.line += self.buffer.count("\n", self.pos, end)
        self.pos = end

    def peek(self) -> str:
        """The next non-blank character, without consuming it ("" at the end)."""
        while True:
            while self.pos < len(self.buffer) and self.buffer[self.pos] in " \t\r\n":
                self._advance(self.pos + 1)
            if self.pos < len(self.buffer):
                return self.buffer[self.pos]
            if not self._fill():
                return ""

    def expect(self, chars: str, what: str) -> str:
        char = self.peek()
        if not char or char not in chars:
            found = repr(char) if char else "the end of the file"
            raise ManifestError(self.name, self.line, f"JSON syntax error: expected {what}, found {found}")
        self._advance(self.pos + 1)
        return char

    def value(self) -> tuple[int, Any]:
        """Decode the next JSON value; returns the line it starts on and the value."""
        self.peek()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as exc:
                if len(self.buffer) - self.pos < MAX_ELEMENT_CHARS and self._fill():
                    continue
                line = self.line + self.buffer.count("\n", self.pos, exc.pos)
                raise ManifestError(self.name, line, f"JSON syntax error: {exc.msg}") from None
            if end == len(self.buffer) and not self.eof and isinstance(value, int | float):
                self._fill()  # a number may go on in the next chunk
                continue
            start = self.line
            self._advance(end)
            return start, value


def _json_rows(lines: Iterator[tuple[int, str]], name: str, columns: _ColumnWarnings) -> Iterator[RawRow]:
    scanner = _JsonScanner(lines, name)
    first = scanner.peek()
    if first == "":
        raise ManifestError(name, None, "the manifest is empty", "a JSON manifest is an array of objects")
    if first == "[":
        yield from _json_array(scanner, columns)
    elif first == "{":
        yield from _json_volumes_object(scanner, columns)
    else:
        raise ManifestError(
            name,
            scanner.line,
            "a JSON manifest must be an array of objects or an object with a volumes array",
        )
    if scanner.peek() != "":
        raise ManifestError(name, scanner.line, "JSON syntax error: extra data after the manifest")


def _json_array(scanner: _JsonScanner, columns: _ColumnWarnings) -> Iterator[RawRow]:
    scanner.expect("[", "'['")
    if scanner.peek() == "]":
        scanner.expect("]", "']'")
        return
    row = 0
    while True:
        line, value = scanner.value()
        row += 1
        yield _json_row(row, line, value, columns)
        if scanner.expect(",]", "',' or ']'") == "]":
            return


def _json_volumes_object(scanner: _JsonScanner, columns: _ColumnWarnings) -> Iterator[RawRow]:
    scanner.expect("{", "'{'")
    found = False
    if scanner.peek() == "}":
        scanner.expect("}", "'}'")
    else:
        while True:
            line, key = scanner.value()
            if not isinstance(key, str):
                raise ManifestError(scanner.name, line, "JSON syntax error: object keys must be strings")
            scanner.expect(":", "':'")
            if key == "volumes" and not found:
                if scanner.peek() != "[":
                    raise ManifestError(scanner.name, scanner.line, '"volumes" must be an array of objects')
                found = True
                yield from _json_array(scanner, columns)
            else:
                scanner.value()
            if scanner.expect(",}", "',' or '}'") == "}":
                break
    if not found:
        raise ManifestError(
            scanner.name, 1, 'the JSON object has no "volumes" array', 'use {"volumes": [...]}'
        )
