"""Streaming JSON for manifests: the document is read in fixed-size chunks of incrementally decoded
text and its array's elements come out one at a time, each with the line it starts on.

Memory is bounded by the largest element (``MAX_ELEMENT_CHARS``) plus one chunk, however the file is
split into lines: a minified one-line manifest costs what a pretty one does. Values nested deeper than
``MAX_DEPTH`` levels are a file error (``ManifestError`` naming the line of the first bracket too
deep), whatever the parser underneath could take; the standard library's scanner raised
``RecursionError`` there.
"""

from __future__ import annotations

import codecs
import functools
import re
from collections.abc import Iterator
from typing import IO, Any

import orjson

from orchestrator.errors import ManifestError

BOM = b"\xef\xbb\xbf"
CHUNK_BYTES = 1 << 16
MAX_ELEMENT_CHARS = 1 << 20
MAX_DEPTH = 32
NESTING_HINT = "a row is a flat object; only metadata holds one object of string to string"


def decoded_chunks(handle: IO[bytes], name: str, size: int = CHUNK_BYTES) -> Iterator[str]:
    """The file as text, ``size`` bytes at a time; a character cut by a read waits for the next one."""
    pending = handle.read(len(BOM))
    if pending == BOM:
        pending = b""
    line = 1  # the line pending[0] is on
    while True:
        more = handle.read(size)
        data = pending + more
        try:
            text, used = codecs.utf_8_decode(data, "strict", not more)
        except UnicodeDecodeError as exc:
            raise ManifestError(
                name,
                line + data.count(b"\n", 0, exc.start),
                "this line is not valid UTF-8",
                "save the manifest as UTF-8",
            ) from None
        line += data.count(b"\n", 0, used)
        pending = data[used:]
        if text:
            yield text
        if not more:
            return


_STRING = r'"(?:[^"\\]++|\\.)*+"'
_ATOMS = r'[^{}\[\]"]++'


def _container(levels: int) -> str:
    """A bracketed value nested at most ``levels`` deep (brackets paired by depth; orjson checks kinds)."""
    inner = f"{_ATOMS}|{_STRING}" + (f"|{_container(levels - 1)}" if levels > 1 else "")
    return rf"[\[{{](?:{inner})*+[\]}}]"


@functools.cache
def _element() -> re.Pattern[str]:
    """One JSON value, compiled on first use; possessive quantifiers keep matching linear on any input."""
    return re.compile(rf'{_STRING}|{_container(MAX_DEPTH)}|[^{{}}\[\]",\s]++', re.DOTALL)


_TOKENS = re.compile(rf'{_STRING}|[\[\]{{}}"]', re.DOTALL)
_BLANK = re.compile(r"[ \t\r\n]*")


def too_deep(text: str, start: int) -> int | None:
    """Where the value at ``start`` first nests deeper than ``MAX_DEPTH``, if it does."""
    if text[start : start + 1] not in ("[", "{"):
        return None
    depth = 0
    for token in _TOKENS.finditer(text, start):
        char = text[token.start()]
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return token.start()
        elif char in "]}":
            depth -= 1
        elif token.end() - token.start() == 1:
            return None  # a string that is never closed
        if depth <= 0:
            return None
    return None


class JsonScanner:
    """Reads a JSON document value by value from decoded chunks, keeping only a bounded window of text.

    The window holds the unread rest of one chunk and, while an element is incomplete, the chunks
    after it, up to ``MAX_ELEMENT_CHARS``; ``high_water`` records its largest size.
    """

    def __init__(self, chunks: Iterator[str], name: str) -> None:
        self.chunks = chunks
        self.name = name
        self.buffer = ""
        self.pos = 0
        self.line = 1  # line number of buffer[pos]
        self.eof = False
        self.high_water = 0

    def _fill(self) -> bool:
        """Append one chunk of text to the window; False at the end of the file."""
        text = None if self.eof else next(self.chunks, None)
        if text is None:
            self.eof = True
            return False
        self.buffer = self.buffer[self.pos :] + text
        self.pos = 0
        self.high_water = max(self.high_water, len(self.buffer))
        return True

    def _advance(self, end: int) -> None:
        self.line += self.buffer.count("\n", self.pos, end)
        self.pos = end

    def _line_at(self, offset: int) -> int:
        return self.line + self.buffer.count("\n", self.pos, offset)

    def peek(self) -> str:
        """The next non-blank character, without consuming it ("" at the end)."""
        while True:
            if self.pos < len(self.buffer):
                char = self.buffer[self.pos]
                if char not in " \t\r\n":
                    return char
                blank = _BLANK.match(self.buffer, self.pos)
                self._advance(blank.end() if blank else self.pos)
            elif not self._fill():
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
        line, value, _ = self.element()
        return line, value

    def element(self) -> tuple[int, Any, str]:
        """``value``, and the value's text besides (where a row's repeated keys are found)."""
        found = self._text(self.peek())
        text = found.group()
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ManifestError(
                self.name, self._line_at(self.pos + exc.pos), f"JSON syntax error: {exc.msg}"
            ) from None
        start = self.line
        self._advance(found.end())
        return start, value, text

    def _text(self, first: str) -> re.Match[str]:
        """The text of the next value, reading more chunks while it is incomplete."""
        while True:
            found = _element().match(self.buffer, self.pos)
            # a string or a container ends at its closing character; a number may go on in the next chunk
            if found and (self.eof or first in ('"', "[", "{") or found.end() < len(self.buffer)):
                return found
            if len(self.buffer) - self.pos < MAX_ELEMENT_CHARS and self._fill():
                continue
            if found is None or not self.eof:
                raise self._unreadable(first, found is not None)

    def _unreadable(self, first: str, matched: bool) -> ManifestError:
        deep = too_deep(self.buffer, self.pos)
        if deep is not None:
            return nesting_error(self.name, self._line_at(deep))
        if not first or (first not in ('"', "[", "{") and not matched):
            found = repr(first) if first else "the end of the file"
            return ManifestError(self.name, self.line, f"JSON syntax error: expected a value, found {found}")
        if not self.eof:
            return ManifestError(
                self.name,
                self.line,
                f"a JSON value here is longer than {MAX_ELEMENT_CHARS:,} characters",
                "a manifest row is a small object",
            )
        return ManifestError(
            self.name,
            self.line,
            "JSON syntax error: the value starting here is not closed at the end of the file",
        )


def nesting_error(name: str, line: int) -> ManifestError:
    return ManifestError(name, line, f"nesting deeper than {MAX_DEPTH} levels", NESTING_HINT)


def manifest_elements(scanner: JsonScanner) -> Iterator[tuple[int, Any, str]]:
    """The elements of a manifest document (an array, or an object's ``volumes`` array): each one's
    line, value and text."""
    name = scanner.name
    first = scanner.peek()
    if first == "":
        raise ManifestError(name, None, "the manifest is empty", "a JSON manifest is an array of objects")
    if first == "[":
        yield from _array(scanner)
    elif first == "{":
        yield from _volumes_object(scanner)
    else:
        raise ManifestError(
            name,
            scanner.line,
            "a JSON manifest must be an array of objects or an object with a volumes array",
        )
    if scanner.peek() != "":
        raise ManifestError(name, scanner.line, "JSON syntax error: extra data after the manifest")


def _array(scanner: JsonScanner) -> Iterator[tuple[int, Any, str]]:
    scanner.expect("[", "'['")
    if scanner.peek() == "]":
        scanner.expect("]", "']'")
        return
    while True:
        yield scanner.element()
        if scanner.expect(",]", "',' or ']'") == "]":
            return


def _volumes_object(scanner: JsonScanner) -> Iterator[tuple[int, Any, str]]:
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
            if key.strip().lower() == "volumes":
                if found:
                    raise ManifestError(
                        scanner.name, line, 'the JSON object gives "volumes" twice', "give one volumes array"
                    )
                if scanner.peek() != "[":
                    raise ManifestError(scanner.name, scanner.line, '"volumes" must be an array of objects')
                found = True
                yield from _array(scanner)
            else:
                scanner.value()
            if scanner.expect(",}", "',' or '}'") == "}":
                break
    if not found:
        raise ManifestError(
            scanner.name, 1, 'the JSON object has no "volumes" array', 'use {"volumes": [...]}'
        )
