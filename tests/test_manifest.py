"""The streaming manifest reader: formats, encodings, whole-file errors with file:line, and rows."""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import manifest as manifest_module
from orchestrator.config import RowDefaults
from orchestrator.duplicates import key_of
from orchestrator.errors import ManifestError, UsageError
from orchestrator.jsonstream import MAX_DEPTH, JsonScanner, decoded_chunks, manifest_elements
from orchestrator.manifest import (
    Format,
    ManifestSource,
    RawRow,
    manifest_digest,
    read_keys,
    read_rows,
    row_keys,
    spooled,
)
from orchestrator.signals import STOP_EVERY
from tests.helpers import CORE_IDS, OFFLINE, cli_args, invoke, records, validated_and_planned, volume_ids

IDS = volume_ids(3)
DEEP_1K = b"[" * 1000 + b"]" * 1000
DEEP_100K = b"[" * 100_000 + b"]" * 100_000


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
    ("json volumes twice", "m.json", b'{"volumes": [],\n "Volumes": [{}]}', 2, '"volumes" twice'),
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
    ("json 1,000 deep", "m.json", b"[" + DEEP_1K + b"]", 1, "nesting deeper than 32 levels"),
    (
        "json 100,000 deep",
        "m.json",
        b'[\n{"volume_id": "a"},\n' + DEEP_100K + b"\n]",
        3,
        "nesting deeper than 32 levels",
    ),
    ("json 2,000,000 open brackets", "m.json", b"[" * 2_000_000, 1, "nesting deeper than 32 levels"),
    (
        "json deep metadata",
        "m.json",
        b'[{"volume_id": "a",\n "metadata": ' + DEEP_1K + b"}]",
        2,
        "nesting deeper than 32 levels",
    ),
    (
        "json deep beside volumes",
        "m.json",
        b'{"x":\n' + DEEP_100K + b', "volumes": []}',
        2,
        "nesting deeper than 32 levels",
    ),
    (
        "jsonl 1,000 deep",
        "m.jsonl",
        b'{"volume_id": "a"}\n' + DEEP_1K + b"\n",
        2,
        "nesting deeper than 32 levels",
    ),
    (
        "jsonl 100,000 deep",
        "m.jsonl",
        b'{"volume_id": "a"}\n' + DEEP_100K + b"\n",
        2,
        "nesting deeper than 32 levels",
    ),
    (
        "jsonl 33 deep",
        "m.jsonl",
        b'{"metadata": ' + b"[" * 32 + b"]" * 32 + b"}\n",
        1,
        "nesting deeper than 32 levels",
    ),
    (
        "json value too long",
        "m.json",
        b'[{"description": "' + b"x" * 1_100_000 + b'"}]',
        1,
        "longer than 1,048,576 characters",
    ),
    ("json value expected", "m.json", b'[\n{"volume_id": "a"},\n,]', 3, "expected a value, found ','"),
    (
        "json bad utf-8 after the first chunk",
        "m.json",
        b"[\n" + b'{"volume_id": "a"},\n' * 5000 + b'{"name": "\xff"}]',
        5002,
        "not valid UTF-8",
    ),
    (
        "jsonl line too long",
        "m.jsonl",
        b'{"volume_id": "a"}\n{"name": "' + b"x" * (1 << 22) + b'"}\n',
        2,
        "longer than 4,194,304 bytes",
    ),
    (
        "csv duplicate column",
        "m.csv",
        b"volume_id,volume_id\na,b\n",
        1,
        "the header has the column 'volume_id' twice: 'volume_id' in column 1 and 'volume_id' in column 2",
    ),
    (
        "csv duplicate after case and spaces",
        "m.csv",
        b"\n\nvolume_id,Name, name \na,b,c\n",
        3,
        "the header has the column 'name' twice: 'Name' in column 2 and 'name' in column 3",
    ),
    (
        "csv duplicate metadata column",
        "m.csv",
        b"volume_id,metadata.Owner,METADATA.Owner\na,b,c\n",
        1,
        "the column 'metadata.Owner' twice",
    ),
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


def test_header_names_ignore_case_and_spaces(write: Callable[..., Path]) -> None:
    """Known headers match whatever their case and spaces; metadata.KEY keeps the key's case; others keep theirs."""
    path = write("m.csv", f" Volume_ID ,NAME,Metadata.Owner, Team ,Server_ID\n{IDS[0]},n,dba,db,s-1\n")
    warnings: list[str] = []
    [row] = rows_of(path, warn=warnings.append)
    assert row.fields == {
        "volume_id": IDS[0],
        "name": "n",
        "metadata.Owner": "dba",
        "Team": "db",
        "server_id": "s-1",
    }
    assert warnings == [f"{path}: unknown column 'Team' is ignored (it can still be used in --name-template)"]


def test_json_keys_ignore_case_and_conflicts_mark_the_row(write: Callable[..., Path]) -> None:
    """JSON keys match known fields like headers do; two keys naming one field leave a problem on the row."""
    rows = [
        {"Volume_ID": IDS[0], " Name ": "n", "METADATA.Owner": "dba"},
        {"volume_id": IDS[1], "Name": "a", "name": "b"},
    ]
    for fmt, content in (
        ("json", orjson.dumps({"Volumes": rows})),
        ("jsonl", b"\n".join(orjson.dumps(r) for r in rows)),
    ):
        first, second = rows_of(write(f"m.{fmt}", content))
        assert first.fields == {"volume_id": IDS[0], "name": "n", "metadata.Owner": "dba"}
        assert first.problem is None
        assert second.problem == "the keys 'Name' and 'name' both name 'name'"


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_a_key_given_twice_marks_its_row_alone(write: Callable[..., Path], tmp_path: Path, fmt: str) -> None:
    """A JSON row giving one key twice (orjson keeps the last), in the row or in its metadata, with or
    without blanks before the colon, is invalid ``DUPLICATE_FIELD`` in validate and create alike; colons
    in values (a time, a URL, one after a blank) and a metadata object mark no row."""
    ids = volume_ids(4, seed=48)
    rows = [
        f'{{"volume_id":"{ids[0]}","volume_id":"{ids[1]}"}}',
        f'{{"volume_id": "{ids[1]}", "metadata": {{"k" : "1",\t"k"\t: "2"}}}}',
        f'{{"volume_id": "{ids[2]}", "description": "at 12:00 : see http://x", "x": [1, {{"y": 2}}]}}',
        f'{{"volume_id": "{ids[3]}", "metadata": {{"a": "b"}}}}',
    ]
    manifest = write(f"m.{fmt}", "[" + ",\n".join(rows) + "]" if fmt == "json" else "\n".join(rows))
    assert [row.problem for row in rows_of(manifest)] == [
        "the key 'volume_id' is given twice",
        "the key 'k' is given twice",
        None,
        None,
    ]
    checked, planned = validated_and_planned(manifest, tmp_path / "r.jsonl", **OFFLINE)
    assert checked == (1, "4 rows: 2 would be sent, 2 with problems (DUPLICATE_FIELD x2)")
    assert planned == (
        1,
        {
            1: ("invalid", "DUPLICATE_FIELD"),
            2: ("invalid", "DUPLICATE_FIELD"),
            3: ("planned", None),
            4: ("planned", None),
        },
    )


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_unknown_column_warnings_are_capped(write: Callable[..., Path]) -> None:
    """20,000 unknown columns give 10 named warnings and one line counting the other 19,990."""
    header = ",".join(["volume_id", *(f"extra{n}" for n in range(20_000))])
    path = write("m.csv", f"{header}\n{IDS[0]}\n")
    warnings: list[str] = []
    rows_of(path, warn=warnings.append)
    assert len(warnings) == 11
    assert (
        warnings[9] == f"{path}: unknown column 'extra9' is ignored (it can still be used in --name-template)"
    )
    assert warnings[10] == f"{path}: 19,990 more unknown columns are ignored (not named one by one)"


def test_json_warnings_are_capped_across_rows(write: Callable[..., Path]) -> None:
    """Unknown keys first seen in later JSON rows count toward the same cap; the count comes at the end."""
    rows = [{"volume_id": IDS[0], f"k{n}": "v", "k0": "v"} for n in range(11)]
    warnings: list[str] = []
    rows_of(write("m.json", orjson.dumps(rows)), warn=warnings.append)
    assert [w.split(": ", 1)[1] for w in warnings[-2:]] == [
        "unknown column 'k9' is ignored (it can still be used in --name-template)",
        "1 more unknown column is ignored (not named one by one)",
    ]
    assert len(warnings) == 11


def test_select_columns_are_known(write: Callable[..., Path]) -> None:
    """The informational columns that select writes are never warned about and are kept for templates."""
    info = ["server_id", "device", "bootable", "volume_name", "size", "availability_zone", "status"]
    path = write("m.csv", ",".join(["volume_id", *info]) + f"\n{IDS[0]}," + ",".join(info) + "\n")
    warnings: list[str] = []
    [row] = rows_of(path, warn=warnings.append)
    assert warnings == []
    assert row.fields is not None
    assert row.fields["server_id"] == "server_id"


def test_nesting_up_to_the_limit_reads(write: Callable[..., Path]) -> None:
    """A value nested exactly MAX_DEPTH levels reads; the limit is about depth, not bracket count."""
    deep = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    many = "[" + ",".join(["[]"] * 5000) + "]"
    for fmt in ("json", "jsonl"):
        content = f'{{"volume_id": "{IDS[0]}", "x": {deep}, "y": {many}}}'
        path = write(f"m.{fmt}", f"[{content}]" if fmt == "json" else content)
        [row] = rows_of(path)
        assert row.fields is not None
        assert len(row.fields["y"]) == 5000


@pytest.mark.parametrize("size", [1, 2, 3, 5, 64, 1 << 16])
def test_chunk_edges_keep_text_and_lines(tmp_path: Path, size: int) -> None:
    """Characters and numbers cut by a read, a BOM and CRLF read the same at any chunk size."""
    items = [{"volume_id": IDS[n % 3], "name": "é€😀" * n, "n": 10**n} for n in range(12)]
    text = "[\r\n" + ",\r\n".join(orjson.dumps(item).decode() for item in items) + "\r\n]\r\n"
    path = tmp_path / "m.json"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    with path.open("rb") as handle:
        scanner = JsonScanner(decoded_chunks(handle, str(path), size=size), str(path))
        got = list(manifest_elements(scanner))
    assert got == [(n + 2, item, orjson.dumps(item).decode()) for n, item in enumerate(items)]


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_json_window_stays_bounded(tmp_path: Path) -> None:
    """Reading a one-line JSON array keeps at most about two chunks of text, not the whole line."""
    path = tmp_path / "m.json"
    path.write_bytes(orjson.dumps([{"volume_id": IDS[n % 3], "description": "d" * 40} for n in range(5000)]))
    assert path.stat().st_size > 400_000
    with path.open("rb") as handle:
        scanner = JsonScanner(decoded_chunks(handle, str(path), size=4096), str(path))
        assert sum(1 for _ in manifest_elements(scanner)) == 5000
    assert scanner.high_water <= 2 * 4096


# The reader measured alone, in a process of its own: tracemalloc counts every thread's allocations, and
# a test worker has others (xdist's, which takes the next tests while this one runs: 1.67 MB once).
PEAK_OF_READING = """
import sys, tracemalloc
from orchestrator.manifest import Format, ManifestSource, read_rows
small, path = sys.argv[1:]
assert sum(1 for _ in read_rows(ManifestSource(small, Format.JSON))) > 0  # its imports: not counted
tracemalloc.start()
count = sum(1 for _ in read_rows(ManifestSource(path, Format.JSON)))
print(count, tracemalloc.get_traced_memory()[1])
"""


def test_minified_json_reads_in_bounded_memory(tmp_path: Path) -> None:
    """The reader's peak allocation on a 4 MB one-line JSON manifest stays far below the file's size."""
    path = tmp_path / "m.json"
    # 8,000 rows of 500-character descriptions: the reader's cost is per row, the file's size per byte.
    path.write_bytes(
        orjson.dumps([{"volume_id": IDS[n % 3], "description": "d" * 500} for n in range(8_000)])
    )
    assert path.stat().st_size > 4_000_000
    # A small file first, long enough to reach the reader's first stop point (which imports anyio's
    # thread helpers): what the reader imports on its first use is not counted (without a bytecode
    # cache, compiling a module allocates more than reading the 4 MB does).
    small = tmp_path / "small.json"
    small.write_bytes(orjson.dumps([{"volume_id": IDS[n % 3]} for n in range(STOP_EVERY + 1)]))
    measured = subprocess.run(
        [sys.executable, "-c", PEAK_OF_READING, str(small), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    count, peak = map(int, measured.stdout.split())
    assert count == 8_000
    assert peak < 1_000_000


def test_manifest_digest(tmp_path: Path) -> None:
    """The digest is sha256 over the raw bytes: a copy has the same one, a one-byte change another."""
    content = b"\xef\xbb\xbfvolume_id\r\n" + "\n".join(IDS).encode() * 50_000
    original = tmp_path / "a.csv"
    original.write_bytes(content)
    copy = tmp_path / "copy.csv"
    shutil.copyfile(original, copy)
    changed = tmp_path / "changed.csv"
    changed.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))
    digest = manifest_digest(ManifestSource(str(original), Format.CSV))
    assert digest == "sha256:" + hashlib.sha256(content).hexdigest()
    assert manifest_digest(ManifestSource(str(copy), Format.CSV)) == digest
    assert manifest_digest(ManifestSource(str(changed), Format.CSV)) != digest
    with pytest.raises(ManifestError, match="cannot open"):
        manifest_digest(ManifestSource(str(tmp_path / "nope.csv"), Format.CSV))
    with pytest.raises(ValueError, match="spooled"):
        manifest_digest(ManifestSource("-", Format.CSV))


def test_digest_of_standard_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """Standard input, once spooled, has the digest of the bytes that came in."""
    content = f"volume_id\n{IDS[0]}\n".encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(content)))
    with spooled(ManifestSource("-", Format.CSV)) as source:
        digest = manifest_digest(source)
    assert digest == "sha256:" + hashlib.sha256(content).hexdigest()


hostile = st.one_of(
    st.binary(max_size=200),
    st.text(alphabet='[]{}",:\\ \n\r0123.eE-+tfnul\x00\x1b\u202eé', max_size=200).map(str.encode),
    st.lists(st.sampled_from([b"[", b"{", b'"a":', b"]", b"}", b",", b'"', b"1"]), max_size=3000).map(
        b"".join
    ),
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(content=hostile, fmt=st.sampled_from(["csv", "json", "jsonl"]))
def test_hostile_input_raises_only_manifest_error(tmp_path: Path, content: bytes, fmt: str) -> None:
    """Whatever the bytes, reading gives rows or a ManifestError naming the file, never another error."""
    path = tmp_path / f"h.{fmt}"
    path.write_bytes(content)
    outcome: list[RawRow] | ManifestError
    try:
        outcome = list(read_rows(ManifestSource(str(path), Format(fmt)), warn=lambda _: None))
    except ManifestError as exc:
        outcome = exc
    assert str(outcome).startswith(str(path)) if isinstance(outcome, ManifestError) else outcome


cell = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)
row_strategy = st.fixed_dictionaries(
    {"volume_id": st.sampled_from(volume_ids(50)), "name": cell, "description": cell}
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    rows=st.lists(row_strategy, min_size=1, max_size=30),
    fmt=st.sampled_from(["csv", "json", "jsonl"]),
    crlf=st.booleans(),
)
@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
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


def test_manifest_on_standard_input_is_read_with_the_given_format() -> None:
    """``-`` with --format csv: standard input is spooled and read as CSV (both rows checked)."""
    data = f"volume_id\n{CORE_IDS[0]}\n{CORE_IDS[1]}\n".encode()
    result = invoke(cli_args("validate", "-", format="csv", **OFFLINE), input=data)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "2 rows: 2 would be sent, 0 with problems"


def test_more_unknown_columns_than_are_tracked_are_counted_as_more_than(
    write: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``MAX_TRACKED_COLUMNS`` (50,000) distinct unknown columns the count line says "more than": the
    rest are not tracked. The limit is lowered to 500 here (the same code past it, a hundredth of the
    columns to read)."""
    assert manifest_module.MAX_TRACKED_COLUMNS == 50_000
    monkeypatch.setattr(manifest_module, "MAX_TRACKED_COLUMNS", 500)
    columns = 501
    manifest = write(
        "wide.csv",
        "volume_id," + ",".join(f"c{i}" for i in range(columns)) + f"\n{CORE_IDS[0]}" + "," * columns + "\n",
    )
    result = invoke(cli_args("validate", manifest, **OFFLINE))
    assert result.exit_code == 0, result.output
    warnings = result.stderr.splitlines()
    assert len(warnings) == 11, warnings[:15]
    assert "more than 490 more unknown columns are ignored" in warnings[10]


def test_csv_row_with_more_cells_than_the_header_is_malformed(
    write: Callable[..., Path], tmp_path: Path
) -> None:
    """A CSV row with a cell past the header's last column is invalid (MALFORMED_ROW); the others go on."""
    manifest = write("m.csv", f"volume_id,name\n{CORE_IDS[0]},a,stray\n{CORE_IDS[1]},b\n")
    report = tmp_path / "r.jsonl"
    result = invoke(cli_args("create", manifest, report=report, dry_run=True, **OFFLINE))
    assert result.exit_code == 1, result.output
    got = {r["row"]: (r["outcome"], r["error_code"]) for r in records(report)}
    assert got == {1: ("invalid", "MALFORMED_ROW"), 2: ("planned", None)}


def test_json_number_at_the_very_end_is_read_before_the_missing_bracket_is_named(
    write: Callable[..., Path],
) -> None:
    """A JSON array cut right after a number: the rows before it are read, and the error names the end."""
    manifest = write("cut.json", orjson.dumps([{"volume_id": CORE_IDS[0]}])[:-1] + b", 12345")
    rows: list[RawRow] = []
    with pytest.raises(ManifestError) as caught:
        rows.extend(rows_of(manifest))
    assert (caught.value.line, caught.value.problem) == (
        1,
        "JSON syntax error: expected ',' or ']', found the end of the file",
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{ }", 'the JSON object has no "volumes" array'),
        (b'{"volumes": [], 7 : []}', "JSON syntax error: object keys must be strings"),
        (b'{\n  ["volumes"]: []}', "JSON syntax error: object keys must be strings"),
    ],
)
def test_json_object_without_volumes_or_with_a_number_as_key(
    write: Callable[..., Path], content: bytes, problem: str
) -> None:
    """An empty JSON object has no volumes array; a key that is not a string is a syntax error."""
    manifest = write("obj.json", content)
    with pytest.raises(ManifestError) as caught:
        rows_of(manifest)
    assert caught.value.problem == problem


def _keys(path: Path, read: Callable[..., Any], defaults: Any) -> tuple[list[bytes | None], list[str]]:
    """Each row's duplicate key (``duplicates.key_of``) as the first pass reads it, and the warnings."""
    warnings: list[str] = []
    cells = read(ManifestSource(str(path), Format.CSV), warn=warnings.append)
    return [None if row is None else key_of(*row, defaults) for row in cells], warnings


def _first_pass_keys(path: Path, defaults: Any) -> tuple[list[bytes | None], list[str]]:
    return _keys(path, read_keys, defaults)


def _row_keys(path: Path, defaults: Any) -> tuple[list[bytes | None], list[str]]:
    return _keys(path, lambda source, warn: row_keys(read_rows(source, warn=warn)), defaults)


@pytest.mark.parametrize("defaults", [RowDefaults(project_id="p" * 32), RowDefaults(region="cn-north-4")])
@pytest.mark.parametrize(
    "content",
    [
        # the usual manifest, long enough to pass a stop point (every STOP_EVERY rows)
        "volume_id,description\n" + "".join(f"{i},d\n" for i in volume_ids(STOP_EVERY + 2)),
        # blank, short, long and apostrophe rows; a volume behind an apostrophe and a tab
        f"Volume_ID,extra,,name\n{IDS[0]},x\n\n , ,\n{IDS[1]},a,b,c,d\n'\t{IDS[2]},x\n'{IDS[0]}\n ,y\n",
        # project and region columns: blank, apostrophes, missing cells, a row naming the project
        f"region,volume_id,project_id\ncn-north-1,{IDS[0]}\n ,{IDS[0]},\n'-r,{IDS[1]},'-p\n"
        f",{IDS[1]}, {'f' * 32} \n'@x,{IDS[2]}, \ncn-north-4\n,{IDS[2].upper()},\n",
    ],
    ids=["usual", "odd rows", "project and region"],
)
def test_the_first_pass_reads_the_keys_the_rows_have(
    write: Callable[..., Path], content: str, defaults: RowDefaults
) -> None:
    """The first pass (``read_keys``) gives every CSV row the duplicate key its fields give, in order,
    and warns of the same columns."""
    path = write("m.csv", content)
    keys, warnings = _first_pass_keys(path, defaults)
    assert (keys, warnings) == _row_keys(path, defaults)
    assert len(keys) > 2
    assert any(key is not None for key in keys)


@pytest.mark.parametrize(
    ("case", "name", "content", "line", "words"),
    [case for case in BAD_FILES if case[1] == "m.csv"],
    ids=[c[0] for c in BAD_FILES if c[1] == "m.csv"],
)
def test_the_first_pass_raises_the_file_errors_of_the_rows(
    write: Callable[..., Path], case: str, name: str, content: bytes, line: int | None, words: str
) -> None:
    """A CSV file that cannot be read as a whole stops the first pass with ``read_rows``'s error."""
    path = write(name, content)
    with pytest.raises(ManifestError) as first:
        _first_pass_keys(path, RowDefaults())
    with pytest.raises(ManifestError) as rows:
        rows_of(path)
    assert (str(first.value), first.value.line) == (str(rows.value), rows.value.line), case
    with pytest.raises(ManifestError, match="cannot open"):
        _first_pass_keys(path.with_name("gone.csv"), RowDefaults())


def test_the_first_pass_of_json_reads_the_rows(write: Callable[..., Path]) -> None:
    """JSON and JSON Lines rows reach the first pass through ``read_rows``: not objects are ``None``."""
    path = write("m.jsonl", f'{{"volume_id": "{IDS[0]}", "project_id": "{"a" * 32}"}}\n[1]\n')
    assert list(read_keys(ManifestSource(str(path), Format.JSONL))) == [(IDS[0], "a" * 32, None), None]


def test_a_csv_header_read_again_names_its_columns_or_its_error(tmp_path: Path) -> None:
    """``csv_columns`` (the template check's look at a CSV header when no row had a wanted column): the
    header's names as ``read_rows`` takes them, or a file error at its line when it cannot be read."""
    path = tmp_path / "m.csv"
    path.write_text(" Volume_ID ,tag:Env\n", encoding="utf-8")
    assert manifest_module.csv_columns(ManifestSource(str(path), Format.CSV)) == ["volume_id", "tag:Env"]
    path.write_text('volume_id,"tag:env\n', encoding="utf-8")
    with pytest.raises(ManifestError, match="CSV syntax error"):
        manifest_module.csv_columns(ManifestSource(str(path), Format.CSV), "shown.csv")
