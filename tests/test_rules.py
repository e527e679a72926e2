"""Row rules: each broken field becomes an invalid record with its error code; templates; duplicates."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.config import RowDefaults, RunIdentity
from orchestrator.duplicates import BloomFilter, SeenKeys, duplicate_candidates
from orchestrator.errors import UsageError
from orchestrator.manifest import Format, ManifestSource, RawRow, read_rows
from orchestrator.models import Outcome, Record, SnapshotRequest
from orchestrator.rules import (
    RUN_MARKER_KEY,
    RowValidator,
    _per_row_format,
    check_metadata_option_keys,
    check_template,
    render,
)
from tests.helpers import CORE_IDS, OFFLINE, PROJECT, cli_args, invoke, records, volume_ids

IDS = volume_ids(4)
IDENTITY = RunIdentity(run_id="abc123", started=datetime(2026, 11, 27, 3, 4, 5, tzinfo=UTC))
DEFAULTS = RowDefaults(project_id=PROJECT, region="cn-north-4", metadata={"team": "ops"})


def validate(
    fields: dict[str, Any] | None, *, from_csv: bool = False, defaults: RowDefaults = DEFAULTS
) -> SnapshotRequest | Record:
    raw = RawRow(1, 2, fields, from_csv)
    _, candidates = duplicate_candidates([raw], defaults)
    return RowValidator(defaults=defaults, identity=IDENTITY, candidates=candidates).validate(raw)


def test_valid_row_uses_defaults_and_template() -> None:
    """A bare row gets the default name template, force, region, project and metadata."""
    request = validate({"volume_id": IDS[0].upper() + "  "})
    assert isinstance(request, SnapshotRequest)
    assert request.volume_id == IDS[0]
    assert request.name == f"pre-maint-20261127-{IDS[0]}"
    assert (request.project_id, request.region, request.force) == (PROJECT, "cn-north-4", False)
    assert request.metadata == {"team": "ops"}
    assert request.body() == {
        "snapshot": {"volume_id": IDS[0], "force": False, "metadata": {"team": "ops"}, "name": request.name}
    }


def test_row_values_override_defaults() -> None:
    """Row fields win; CSV booleans and metadata (JSON column and metadata.KEY) are parsed."""
    request = validate(
        {
            "volume_id": IDS[0],
            "name": "mine",
            "description": "why",
            "force": "Yes",
            "metadata": '{"team": "db", "a": "1"}',
            "metadata.b": "2",
            "project_id": "f" * 32,
            "region": "ap-southeast-1",
        },
        from_csv=True,
    )
    assert isinstance(request, SnapshotRequest)
    assert (request.name, request.description, request.force) == ("mine", "why", True)
    assert request.metadata == {"team": "db", "a": "1", "b": "2"}
    assert (request.project_id, request.region) == ("f" * 32, "ap-southeast-1")


RULES: list[tuple[dict[str, Any] | None, bool, str]] = [
    (None, False, "MALFORMED_ROW"),
    ({"name": "x"}, False, "MISSING_VOLUME_ID"),
    ({"volume_id": "abc"}, False, "INVALID_VOLUME_ID"),
    ({"volume_id": 12}, False, "INVALID_VOLUME_ID"),
    ({"volume_id": IDS[0], "name": "n" * 65}, False, "NAME_TOO_LONG"),
    ({"volume_id": IDS[0], "name": "autobk_snapshot_1"}, False, "RESERVED_NAME_PREFIX"),
    ({"volume_id": IDS[0], "name": ""}, False, "INVALID_NAME"),
    ({"volume_id": IDS[0], "name": 5}, False, "INVALID_NAME"),
    ({"volume_id": IDS[0], "description": "d" * 86}, False, "DESCRIPTION_TOO_LONG"),
    ({"volume_id": IDS[0], "description": 5}, False, "INVALID_DESCRIPTION"),
    ({"volume_id": " \t"}, True, "MISSING_VOLUME_ID"),
    ({"volume_id": IDS[0], "force": "maybe"}, True, "INVALID_FORCE"),
    ({"volume_id": IDS[0], "force": "true"}, False, "INVALID_FORCE"),
    ({"volume_id": IDS[0], "metadata": "{not json"}, True, "INVALID_METADATA"),
    ({"volume_id": IDS[0], "metadata": {"a": {"b": "c"}}}, False, "INVALID_METADATA"),
    ({"volume_id": IDS[0], "metadata": ["a"]}, False, "INVALID_METADATA"),
    ({"volume_id": IDS[0], "metadata": {"k" * 256: "v"}}, False, "METADATA_KEY_TOO_LONG"),
    ({"volume_id": IDS[0], "metadata": {"k": "v" * 256}}, False, "METADATA_VALUE_TOO_LONG"),
    ({"volume_id": IDS[0], "metadata": {"__system__x": "v"}}, False, "RESERVED_METADATA_KEY"),
    ({"volume_id": IDS[0], "project_id": "ABC"}, False, "INVALID_PROJECT_ID"),
    ({"volume_id": IDS[0], "region": "north"}, False, "INVALID_REGION"),
    ({"volume_id": IDS[0], "region": "cn-north-\uff14"}, False, "INVALID_REGION"),  # a fullwidth digit
    ({"volume_id": IDS[0], "name": "a\x00b"}, False, "INVALID_NAME"),
    ({"volume_id": IDS[0], "name": " \t "}, False, "INVALID_NAME"),
    ({"volume_id": IDS[0], "metadata": {RUN_MARKER_KEY: "x"}}, False, "RESERVED_METADATA_KEY"),
    ({"volume_id": IDS[0], "metadata": '{"evs_snapshot_run": "x"}'}, True, "RESERVED_METADATA_KEY"),
    ({"volume_id": IDS[0], "metadata.evs_snapshot_run": "x"}, True, "RESERVED_METADATA_KEY"),
    ({"volume_id": IDS[0], "metadata": {" EVS_Snapshot_Run": "x"}}, False, "RESERVED_METADATA_KEY"),
]


@pytest.mark.parametrize(
    ("fields", "from_csv", "code"), RULES, ids=[rule[2] + str(i) for i, rule in enumerate(RULES)]
)
def test_rule_breaks_give_invalid_records(fields: dict[str, Any] | None, from_csv: bool, code: str) -> None:
    """Each broken rule gives an invalid record with its code and a message naming row and line."""
    record = validate(fields, from_csv=from_csv)
    assert isinstance(record, Record)
    assert record.outcome is Outcome.INVALID
    assert record.error_code == code
    assert record.error_message is not None
    assert record.error_message.startswith("row 1 (line 2)")
    assert record.attempts == 0


def test_missing_project_and_region() -> None:
    """A row without a project is looked up by region; with neither it is invalid; no region needs an endpoint."""
    request = validate({"volume_id": IDS[0]}, defaults=RowDefaults(region="cn-north-4"))
    assert isinstance(request, SnapshotRequest)
    assert request.project_id is None
    raw = RawRow(1, 2, {"volume_id": IDS[0]}, False)
    validator = RowValidator(
        defaults=RowDefaults(), identity=IDENTITY, candidates=set(), region_required=False
    )
    record = validator.validate(raw)
    assert isinstance(record, Record)
    assert record.error_code == "MISSING_PROJECT_ID"
    record = validate({"volume_id": IDS[0]}, defaults=RowDefaults(project_id=PROJECT))
    assert isinstance(record, Record)
    assert record.error_code == "MISSING_REGION"


def test_dotted_placeholder_is_a_column_lookup() -> None:
    """{metadata.owner} names a CSV column; rendering looks names up, it never evaluates attributes."""
    defaults = RowDefaults(
        project_id=PROJECT, region="cn-north-4", name_template="{metadata.owner}-{volume_id.__class__}"
    )
    check_template(defaults.name_template)
    record = validate({"volume_id": IDS[0], "metadata.owner": "dba"}, from_csv=True, defaults=defaults)
    assert isinstance(record, Record)
    assert record.error_code == "TEMPLATE_ERROR"
    assert "{volume_id.__class__}" in (record.error_message or "")


def test_template_placeholders() -> None:
    """Templates render run values and manifest columns; a missing column makes the row invalid."""
    defaults = RowDefaults(
        project_id=PROJECT, region="cn-north-4", name_template="{team}-{row}-{run_id}-{datetime}"
    )
    request = validate({"volume_id": IDS[0], "team": "db"}, defaults=defaults)
    assert isinstance(request, SnapshotRequest)
    assert request.name == "db-1-abc123-20261127T030405Z"
    record = validate({"volume_id": IDS[0]}, defaults=defaults)
    assert isinstance(record, Record)
    assert record.error_code == "TEMPLATE_ERROR"
    long_defaults = RowDefaults(
        project_id=PROJECT, region="cn-north-4", name_template="x" * 30 + "{volume_id}"
    )
    record = validate({"volume_id": IDS[0]}, defaults=long_defaults)
    assert isinstance(record, Record)
    assert record.error_code == "NAME_TOO_LONG"


@pytest.mark.parametrize("template", ["{volume_id[0]}", "{row!r}", "{0}", "{volume_id:>80}", "{", "{}"])
def test_unsafe_templates_are_usage_errors(template: str) -> None:
    """Indexing, conversions, format specs, positional and broken braces are refused before the run."""
    with pytest.raises(UsageError):
        check_template(template)


def test_duplicates_second_and_later_rows() -> None:
    """The first row of a volume (per project) goes; later ones are DUPLICATE_VOLUME, naming the first."""
    raws = [
        RawRow(1, 2, {"volume_id": IDS[0]}, False),
        RawRow(2, 3, {"volume_id": IDS[1]}, False),
        RawRow(3, 4, {"volume_id": IDS[0].upper()}, False),
        RawRow(4, 5, {"volume_id": IDS[0], "project_id": "f" * 32}, False),
        RawRow(5, 6, {"volume_id": f" {IDS[0]} "}, False),
    ]
    count, candidates = duplicate_candidates(raws, DEFAULTS)
    assert count == 5
    results = list(
        RowValidator(defaults=DEFAULTS, identity=IDENTITY, candidates=candidates).validate_all(raws)
    )
    kinds = [r.error_code if isinstance(r, Record) else "ok" for r in results]
    assert kinds == ["ok", "ok", "DUPLICATE_VOLUME", "ok", "DUPLICATE_VOLUME"]
    duplicate = results[2]
    assert isinstance(duplicate, Record)
    assert duplicate.error_message is not None
    assert "row 1" in duplicate.error_message


def test_a_repeated_value_that_is_no_uuid_is_invalid_not_a_duplicate() -> None:
    """The first pass keys a volume_id cell without checking it is a UUID: a repeated value that is
    none may be a candidate, but its rows stay INVALID_VOLUME_ID (or MISSING_VOLUME_ID), never
    DUPLICATE_VOLUME, and a repeated UUID beside them is still one."""
    raws = [
        RawRow(1, 2, {"volume_id": "not-a-uuid"}, True),
        RawRow(2, 3, {"volume_id": " NOT-A-UUID "}, True),
        RawRow(3, 4, {"volume_id": IDS[0]}, True),
        RawRow(4, 5, {"volume_id": " "}, True),
        RawRow(5, 6, {"volume_id": " "}, True),
        RawRow(6, 7, {"volume_id": IDS[0]}, True),
    ]
    count, candidates = duplicate_candidates(raws, DEFAULTS)
    assert count == 6
    results = list(
        RowValidator(defaults=DEFAULTS, identity=IDENTITY, candidates=candidates).validate_all(raws)
    )
    kinds = [r.error_code if isinstance(r, Record) else "ok" for r in results]
    assert kinds == [
        "INVALID_VOLUME_ID",
        "INVALID_VOLUME_ID",
        "ok",
        "MISSING_VOLUME_ID",
        "MISSING_VOLUME_ID",
        "DUPLICATE_VOLUME",
    ]


def test_bloom_filter_has_no_false_negatives() -> None:
    """Every key added before is reported as possibly present; fresh keys mostly are not."""
    bloom = BloomFilter(bits=1 << 16, hashes=4)
    keys = [f"key-{n}".encode() for n in range(2000)]
    assert not any(bloom.add(key) for key in keys[:1000])
    assert all(bloom.add(key) for key in keys[:1000])
    false_positives = sum(bloom.add(key) for key in keys[1000:])
    assert false_positives < 100
    assert all(key in bloom for key in keys)
    with pytest.raises(ValueError, match="1 to 10 hashes"):
        BloomFilter(hashes=11)


def test_seen_keys_are_exact_up_to_the_limit_then_a_bloom_filter_that_forgets_none() -> None:
    """SeenKeys: a set (no false positive) up to its limit; past it a Bloom filter holds every key seen."""
    seen = SeenKeys(limit=3)
    keys = [f"key-{n}".encode() for n in range(1000)]
    assert [seen.add(key) for key in keys[:3]] == [False, False, False]
    assert seen.add(keys[0])  # seen before: exactly
    assert seen.bloom is None
    assert not seen.add(keys[3])  # the fourth distinct key: the Bloom filter takes over
    assert seen.exact is None
    assert seen.bloom is not None
    assert all(seen.add(key) for key in keys[:4])  # every key from before the switch is still known
    assert sum(seen.add(key) for key in keys[4:]) < 10  # fresh ones mostly are not


NAMES: list[tuple[str, str]] = [
    ("nul\x00", "has the control character \\x00 (U+0000) at position 4"),
    ("esc\x1b[2J", "has the control character \\x1b (U+001B) at position 4"),
    ("bell\x07", "has the control character \\x07 (U+0007) at position 5"),
    ("two\nlines", "has the control character \\x0a (U+000A) at position 4"),
    ("del\x7f", "has the control character \\x7f (U+007F) at position 4"),
    ("abc\u202etxt.exe", "has the control character \\u202e (U+202E) at position 4"),
    ("zero\u200bwidth", "has the control character \\u200b (U+200B) at position 5"),
    ("line\u2028sep", "has the control character \\u2028 (U+2028) at position 5"),
    ("   ", "name '   ' is only whitespace"),
    ("\u3000\u00a0", "name '\\u3000\\xa0' is only whitespace"),
]


@pytest.mark.parametrize(("name", "words"), NAMES, ids=[repr(n[0]) for n in NAMES])
@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_names_with_control_characters_or_only_whitespace(name: str, words: str) -> None:
    """Such names are INVALID_NAME; the message names row, line and the character escaped, never raw."""
    record = validate({"volume_id": IDS[0], "name": name})
    assert isinstance(record, Record)
    assert record.error_code == "INVALID_NAME"
    assert record.error_message is not None
    assert record.error_message.startswith("row 1 (line 2): name ")
    assert words in record.error_message
    assert record.error_message.isprintable()
    assert record.name is None or record.name.isprintable()


def test_printable_unicode_names_are_fine() -> None:
    """Letters of any script, emoji and inner spaces are not control characters."""
    request = validate({"volume_id": IDS[0], "name": "sauvegarde é 備份 😀 x"})
    assert isinstance(request, SnapshotRequest)


def test_invalid_record_escapes_control_characters() -> None:
    """The invalid record keeps the rejected name with its control characters written as escapes."""
    record = validate({"volume_id": IDS[0], "name": "a\u202eb\x1b"})
    assert isinstance(record, Record)
    assert record.name == "a\\u202eb\\x1b"


def test_rendered_names_obey_the_name_rules() -> None:
    """A name rendered from --name-template is refused like a given one, and the message says so."""
    defaults = RowDefaults(project_id=PROJECT, region="cn-north-4", name_template="{team}")
    record = validate({"volume_id": IDS[0], "team": "db\x1b[31m"}, defaults=defaults)
    assert isinstance(record, Record)
    assert record.error_code == "INVALID_NAME"
    assert record.error_message == (
        "row 1 (line 2): name rendered from --name-template 'db\\x1b[31m' has the control character "
        "\\x1b (U+001B) at position 3"
    )
    record = validate({"volume_id": IDS[0], "team": "  "}, defaults=defaults)
    assert isinstance(record, Record)
    assert record.error_code == "INVALID_NAME"
    assert "only whitespace" in (record.error_message or "")
    prefixed = RowDefaults(project_id=PROJECT, region="cn-north-4", name_template="autobk_{team}")
    record = validate({"volume_id": IDS[0], "team": "snapshot_1"}, defaults=prefixed)
    assert isinstance(record, Record)
    assert record.error_code == "RESERVED_NAME_PREFIX"


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("snap\x1b-{volume_id}", "control character \\x1b (U+001B)"),
        ("snap-\u202e{volume_id}", "control character \\u202e (U+202E)"),
        ("autobk_snapshot_{volume_id}", "reserved for backups"),
        ("x" * 65 + "{row}", "longer than 64 characters"),
        ("  ", "blank name"),
    ],
)
def test_templates_that_can_never_give_a_valid_name(template: str, words: str) -> None:
    """Templates whose fixed text breaks the name rules are refused before the run, the text escaped."""
    with pytest.raises(UsageError) as raised:
        check_template(template)
    assert words in str(raised.value)
    assert str(raised.value).isprintable()


def test_select_columns_work_in_templates(write: Callable[..., Path]) -> None:
    """{server_id} and the other informational columns from select render from a real manifest."""
    path = write("m.csv", f"Volume_ID,Server_ID,size\n{IDS[0]},srv-1,40\n")
    defaults = RowDefaults(project_id=PROJECT, region="cn-north-4", name_template="{server_id}-{size}-{row}")
    warnings: list[str] = []
    [raw] = read_rows(ManifestSource(str(path), Format.CSV), warn=warnings.append)
    request = RowValidator(defaults=defaults, identity=IDENTITY, candidates=set()).validate(raw)
    assert isinstance(request, SnapshotRequest)
    assert request.name == "srv-1-40-1"
    assert warnings == []


def test_conflicting_json_keys_make_the_row_invalid(write: Callable[..., Path]) -> None:
    """Two keys of one JSON row naming the same field make that row DUPLICATE_FIELD, naming both keys."""
    path = write("m.jsonl", f'{{"volume_id": "{IDS[0]}", "Name": "a", "name": "b"}}\n')
    [raw] = read_rows(ManifestSource(str(path), Format.JSONL))
    record = RowValidator(defaults=DEFAULTS, identity=IDENTITY, candidates=set()).validate(raw)
    assert isinstance(record, Record)
    assert record.error_code == "DUPLICATE_FIELD"
    assert record.error_message == "row 1 (line 1): the keys 'Name' and 'name' both name 'name'"
    assert record.volume_id == IDS[0]


def test_a_metadata_key_given_as_a_column_and_in_the_object_makes_the_row_invalid(
    write: Callable[..., Path],
) -> None:
    """``{"metadata": {"owner": "a"}, "metadata.owner": "b"}``: neither value is taken silently (the
    row is DUPLICATE_FIELD); another key beside the object is merged as before."""
    rows = (
        f'{{"volume_id": "{IDS[0]}", "metadata": {{"owner": "a"}}, "metadata.owner": "b"}}\n'
        f'{{"volume_id": "{IDS[1]}", "metadata": {{"owner": "a"}}, "metadata.team": "b"}}\n'
    )
    path = write("m.jsonl", rows)
    validator = RowValidator(defaults=DEFAULTS, identity=IDENTITY, candidates=set())
    twice, merged = (validator.validate(raw) for raw in read_rows(ManifestSource(str(path), Format.JSONL)))
    assert isinstance(twice, Record)
    assert twice.error_code == "DUPLICATE_FIELD"
    assert (
        twice.error_message
        == "row 1 (line 1): metadata key 'owner' is given twice (metadata and metadata.owner)"
    )
    assert isinstance(merged, SnapshotRequest)
    assert merged.metadata == {"owner": "a", "team": "b"}


@pytest.mark.parametrize(
    ("metadata", "words"),
    [
        ({"evs_snapshot_run": "x"}, "reserved for the run marker"),
        ({"team": "ops", "Evs_Snapshot_Run ": "x"}, "reserved for the run marker"),
        ({"__system__encrypted": "1"}, "reserved by the cloud"),
    ],
)
def test_metadata_options_cannot_set_reserved_keys(metadata: dict[str, str], words: str) -> None:
    """--metadata setting the run marker or a __system__ key is a usage error (exit 2)."""
    with pytest.raises(UsageError) as raised:
        check_metadata_option_keys(metadata)
    assert words in str(raised.value)
    assert raised.value.exit_code == 2
    check_metadata_option_keys({"team": "ops", "evs_snapshot_runner": "x"})
    assert RUN_MARKER_KEY == "evs_snapshot_run"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
field_names = st.sampled_from(
    ["volume_id", "name", "description", "force", "metadata", "project_id", "region", "metadata.k", "team"]
)


@given(
    fields=st.dictionaries(field_names, json_values | st.sampled_from(IDS), max_size=8),
    from_csv=st.booleans(),
    template=st.sampled_from(["{team}", "{volume_id}-{name}", "pre-{metadata.k}"]),
)
def test_any_row_gives_a_request_or_an_invalid_record(
    fields: dict[str, Any], from_csv: bool, template: str
) -> None:
    """Whatever a row holds, validation returns a request or an invalid record and never raises."""
    defaults = RowDefaults(project_id=PROJECT, region="cn-north-4", name_template=template)
    result = validate(fields, from_csv=from_csv, defaults=defaults)
    if isinstance(result, Record):
        assert result.outcome is Outcome.INVALID
        assert (result.error_message or "").isprintable()
    else:
        assert 1 <= len(result.name) <= 64


def test_template_with_text_after_its_last_placeholder_keeps_that_text(
    write: Callable[..., Path], tmp_path: Path
) -> None:
    """``x-{volume_id}-end``: the fixed text after the last placeholder is checked and kept in the name."""
    manifest = write("m.csv", f"volume_id\n{CORE_IDS[0]}\n")
    report = tmp_path / "r.jsonl"
    result = invoke(
        cli_args(
            "create", manifest, report=report, dry_run=True, name_template="x-{volume_id}-end", **OFFLINE
        )
    )
    assert result.exit_code == 0, result.output
    [planned] = records(report)
    assert planned["name"] == f"x-{CORE_IDS[0]}-end"


def test_json_force_is_a_json_boolean(write: Callable[..., Path], tmp_path: Path) -> None:
    """In JSON, ``"force": true`` is taken as is; the text ``"yes"`` (a boolean in CSV) is INVALID_FORCE."""
    rows = [{"volume_id": CORE_IDS[0], "force": True}, {"volume_id": CORE_IDS[1], "force": "yes"}]
    manifest = write("m.json", orjson.dumps(rows))
    report = tmp_path / "r.jsonl"
    result = invoke(cli_args("create", manifest, report=report, dry_run=True, **OFFLINE))
    assert result.exit_code == 1, result.output
    got = {r["row"]: (r["outcome"], r["error_code"]) for r in records(report)}
    assert got == {1: ("planned", None), 2: ("invalid", "INVALID_FORCE")}


def test_each_row_is_checked_though_its_project_and_region_were_seen_well_formed() -> None:
    """The validator checks a project id or region once and remembers it: a later row that gives a bad
    one is still invalid, and a string seen as a good project id is not taken for a good region."""
    validator = RowValidator(defaults=RowDefaults(), identity=IDENTITY, candidates=set())
    rows = [
        {"volume_id": IDS[0], "project_id": PROJECT, "region": "cn-north-4"},
        {"volume_id": IDS[1], "project_id": PROJECT.upper(), "region": "cn-north-4"},
        {"volume_id": IDS[2], "project_id": PROJECT, "region": PROJECT},
        {"volume_id": IDS[3], "project_id": "cn-north-4", "region": "cn-north-4"},
    ]
    results = [validator.validate(RawRow(row, row + 1, fields, False)) for row, fields in enumerate(rows, 1)]
    assert isinstance(results[0], SnapshotRequest)
    codes = [result.error_code for result in results[1:] if isinstance(result, Record)]
    assert codes == ["INVALID_PROJECT_ID", "INVALID_REGION", "INVALID_PROJECT_ID"]


def test_only_the_columns_a_template_names_are_rendered_from_the_row() -> None:
    """Name and --metadata templates see the row's columns they name (and the built-in values)."""
    defaults = RowDefaults(
        project_id=PROJECT,
        region="cn-north-4",
        name_template="{env}-{row}-{volume_id}",
        metadata={"owner": "{team}", "fixed": "x"},
    )
    request = validate(
        {"volume_id": IDS[0], "env": "prod", "team": "db", "other": "ignored"}, defaults=defaults
    )
    assert isinstance(request, SnapshotRequest)
    assert request.name == f"prod-1-{IDS[0]}"
    assert request.metadata == {"owner": "db", "fixed": "x"}


def test_the_well_formed_values_remembered_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past WELL_FORMED_KEPT distinct project ids, the others are checked every time, and still pass."""
    monkeypatch.setattr("orchestrator.rules.WELL_FORMED_KEPT", 1)
    validator = RowValidator(defaults=RowDefaults(region="cn-north-4"), identity=IDENTITY, candidates=set())
    projects = [PROJECT, "f" * 32, "f" * 32]
    results = [
        validator.validate(RawRow(row, row + 1, {"volume_id": IDS[row], "project_id": project}, False))
        for row, project in enumerate(projects)
    ]
    assert all(isinstance(result, SnapshotRequest) for result in results)
    assert validator.good_projects == {PROJECT}


def test_a_template_the_options_did_not_check_fails_as_before() -> None:
    """A validator built with a broken name template (the options refuse one) raises when it renders."""
    validator = RowValidator(
        defaults=RowDefaults(project_id=PROJECT, region="cn-north-4", name_template="{volume_id"),
        identity=IDENTITY,
        candidates=set(),
    )
    assert validator.columns is None
    with pytest.raises(ValueError, match="expected '}'"):
        validator.validate(RawRow(1, 2, {"volume_id": IDS[0]}, False))


@pytest.mark.parametrize(
    ("template", "quick"),
    [
        ("pre-maint-{date}-{volume_id}", True),
        ("{run_id}/{datetime}/{row}-{{literal}}-{volume_id}", True),
        ("plain", True),
        ("{server_id}-{volume_id}", False),
        ("{tag:Env}-{volume_id}", False),
        ("{volume_id", False),
    ],
)
def test_a_name_template_of_run_values_renders_once_per_row_as_render_does(
    template: str, quick: bool
) -> None:
    """The validator's format string for the usual template gives each row what ``render`` gives it;
    a template naming a column (or not parsing) is left to ``render_name``."""
    run = {"run_id": "20261207T010203Z-ab{c}d", "date": "20261207", "datetime": "20261207T010203Z"}
    fmt = _per_row_format(template, run)
    assert (fmt is not None) is quick
    if fmt is not None:
        values = {**run, "volume_id": "0f1e2d3c-4b5a-4678-9abc-def012345678", "row": 7}
        assert fmt.format(volume_id=values["volume_id"], row=7) == render(template, values)
