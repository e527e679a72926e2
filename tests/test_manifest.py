"""The streaming manifest reader: formats, encodings, whole-file errors with file:line, and rows."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import ManifestError, UsageError
from orchestrator.manifest import Format, ManifestSource, RawRow, read_rows
from tests.conftest import volume_ids

IDS = volume_ids(3)


def rows_of(path: Path, fmt: str | None = None, warn: Callable[[str], None] | None = None) -> list[RawRow]:
    return list(read_rows(ManifestSource.of(str(path), fmt), warn=warn))


def test_csv_rows_with_line_numbers(write: Callable[..., Path]) -> None:
    """CSV rows carry their 1-based row and starting line; blank lines and empty cells are skipped."""
    path = write("m.csv", f'volume_id,name\n{IDS[0]},a\n\n{IDS[1]},\n"{IDS[2]}","multi\nline"\n')
    rows = rows_of(path)
    assert [(r.row, r.line) for r in rows] == [(1, 2), (2, 4), (3, 5)]
    assert rows[0].fields == {"volume_id": IDS[0], "name": "a"}
    assert rows[1].fields == {"volume_id": IDS[1]}
    assert rows[2].fields == {"volume_id": IDS[2], "name": "multi\nline"}
    assert all(r.from_csv for r in rows)


def test_bom_and_crlf(write: Callable[..., Path]) -> None:
    """A UTF-8 BOM and CRLF line ends read like plain LF UTF-8."""
    path = write("m.csv", b"\xef\xbb\xbfvolume_id,name\r\n" + f"{IDS[0]},a\r\n{IDS[1]},b\r\n".encode())
    rows = rows_of(path)
    assert [r.fields for r in rows] == [
        {"volume_id": IDS[0], "name": "a"},
        {"volume_id": IDS[1], "name": "b"},
    ]


def test_json_array_and_volumes_object(write: Callable[..., Path]) -> None:
    """JSON reads as an array of objects or an object with a volumes array, keeping line numbers."""
    array = write(
        "a.json", "[\n" + ",\n".join(orjson.dumps({"volume_id": i}).decode() for i in IDS) + "\n]\n"
    )
    wrapped = write(
        "b.json",
        '{"comment": {"x": [1, 2]},\n "volumes": [\n'
        + ",\n".join(f'  {{"volume_id": "{i}"}}' for i in IDS)
        + "\n]}",
    )
    assert [(r.row, r.line, r.fields) for r in rows_of(array)] == [
        (n + 1, n + 2, {"volume_id": i}) for n, i in enumerate(IDS)
    ]
    assert [(r.line, r.fields) for r in rows_of(wrapped)] == [
        (n + 3, {"volume_id": i}) for n, i in enumerate(IDS)
    ]


def test_jsonl_and_non_object_rows(write: Callable[..., Path]) -> None:
    """JSON Lines skips blank lines; a row that is not an object is kept as a malformed row."""
    path = write("m.jsonl", f'{{"volume_id": "{IDS[0]}"}}\n\n[1, 2]\n{{"volume_id": "{IDS[1]}"}}\n')
    rows = rows_of(path)
    assert [(r.row, r.line) for r in rows] == [(1, 1), (2, 3), (3, 4)]
    assert rows[1].fields is None


def test_large_json_element_spanning_chunks(write: Callable[..., Path]) -> None:
    """Elements larger than the read window and numbers cut at a chunk edge parse whole."""
    big = "x" * 100_000
    items = [{"volume_id": IDS[0], "description": big}, {"volume_id": IDS[1], "n": 12345678901234567890}]
    path = write("m.json", orjson.dumps(items).decode())
    rows = rows_of(path)
    assert rows[0].fields == items[0]
    assert rows[1].fields == items[1]


def test_unknown_columns_warn_once(write: Callable[..., Path]) -> None:
    """Each unknown column name is warned about once; metadata.KEY columns are known."""
    path = write(
        "m.jsonl",
        f'{{"volume_id": "{IDS[0]}", "team": "a", "metadata.k": "v"}}\n{{"volume_id": "{IDS[1]}", "team": "b"}}\n',
    )
    warnings: list[str] = []
    rows_of(path, warn=warnings.append)
    assert len(warnings) == 1
    assert "'team'" in warnings[0]


BAD_FILES: list[tuple[str, str, bytes, int | None, str]] = [
    ("empty csv", "m.csv", b"", None, "empty"),
    ("header only", "m.csv", b"volume_id,name\n", None, "no rows"),
    ("no volume_id column", "m.csv", b"volume,name\nx,y\n", 1, "no volume_id column"),
    ("bad utf-8", "m.csv", b"volume_id\n" + IDS[0].encode() + b"\n\xff\xfe\n", 3, "not valid UTF-8"),
    ("csv quote error", "m.csv", b'volume_id,name\n"abc,"x"y\n', 2, "CSV syntax error"),
    ("empty json", "m.json", b"  \n", None, "empty"),
    ("json scalar", "m.json", b'"volumes"', 1, "array of objects"),
    ("json object without volumes", "m.json", b'{"rows": []}', 1, 'no "volumes" array'),
    ("json volumes not a list", "m.json", b'{"volumes": {"a": 1}}', 1, "must be an array"),
    (
        "json trailing comma",
        "m.json",
        b'[\n{"volume_id": "a"},\n{"volume_id": "b",}\n]',
        3,
        "JSON syntax error",
    ),
    (
        "json missing comma",
        "m.json",
        b'[\n{"volume_id": "a"}\n{"volume_id": "b"}\n]',
        3,
        "expected ',' or ']'",
    ),
    ("json truncated", "m.json", b'[\n{"volume_id": "a"},\n{"volume_id": "b"', 3, "JSON syntax error"),
    ("json extra data", "m.json", b'[{"volume_id": "a"}]\n[]', 2, "extra data"),
    ("empty json array", "m.json", b"[]", None, "no rows"),
    ("jsonl syntax error", "m.jsonl", b'{"volume_id": "a"}\n{oops}\n', 2, "not valid JSON"),
]


@pytest.mark.parametrize(
    ("case", "name", "content", "line", "words"), BAD_FILES, ids=[c[0] for c in BAD_FILES]
)
def test_bad_files(
    write: Callable[..., Path], case: str, name: str, content: bytes, line: int | None, words: str
) -> None:
    """A file that cannot be read as a whole raises ManifestError naming file:line and the problem."""
    path = write(name, content)
    with pytest.raises(ManifestError) as raised:
        rows_of(path)
    assert raised.value.line == line, case
    assert words in str(raised.value)
    assert str(raised.value).startswith(f"{path}:{line}" if line is not None else str(path))


def test_missing_file_and_unknown_extension(tmp_path: Path) -> None:
    """A missing file and an extension we cannot map are usage errors, not tracebacks."""
    with pytest.raises(ManifestError, match="cannot open"):
        rows_of(tmp_path / "nope.csv")
    with pytest.raises(UsageError, match="--format"):
        ManifestSource.of(str(tmp_path / "m.txt"), None)
    with pytest.raises(UsageError, match="standard input"):
        ManifestSource.of("-", None)
    assert ManifestSource.of("x.NDJSON", None).format is Format.JSONL


cell = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)
row_strategy = st.fixed_dictionaries(
    {"volume_id": st.sampled_from(volume_ids(50)), "name": cell, "description": cell}
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(row_strategy, min_size=1, max_size=30),
    fmt=st.sampled_from(["csv", "json", "jsonl"]),
    crlf=st.booleans(),
)
def test_reader_round_trips_generated_rows(
    tmp_path: Path, rows: list[dict[str, Any]], fmt: str, crlf: bool
) -> None:
    """Whatever rows we write in any format, the reader gives back the same values in order."""
    path = tmp_path / f"gen.{fmt}"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(
            buffer, fieldnames=["volume_id", "name", "description"], lineterminator="\r\n" if crlf else "\n"
        )
        writer.writeheader()
        writer.writerows(rows)
        path.write_text(buffer.getvalue(), encoding="utf-8", newline="")
        expected = [{k: v for k, v in row.items() if v.strip()} for row in rows]
    elif fmt == "json":
        path.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
        expected = rows
    else:
        path.write_bytes(b"".join(orjson.dumps(row) + (b"\r\n" if crlf else b"\n") for row in rows))
        expected = rows
    got = [r.fields for r in read_rows(ManifestSource(str(path), Format(fmt)))]
    assert got == expected
