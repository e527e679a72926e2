"""Row rules: each broken field becomes an invalid record with its error code; templates; duplicates."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from orchestrator.config import RowDefaults, RunIdentity
from orchestrator.duplicates import BloomFilter, duplicate_candidates
from orchestrator.errors import UsageError
from orchestrator.manifest import RawRow
from orchestrator.models import Outcome, Record, SnapshotRequest
from orchestrator.rules import RowValidator, check_template
from tests.conftest import PROJECT, volume_ids

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


def test_bloom_filter_has_no_false_negatives() -> None:
    """Every key added before is reported as possibly present; fresh keys mostly are not."""
    bloom = BloomFilter(bits=1 << 16, hashes=4)
    keys = [f"key-{n}".encode() for n in range(2000)]
    assert not any(bloom.add(key) for key in keys[:1000])
    assert all(bloom.add(key) for key in keys[:1000])
    false_positives = sum(bloom.add(key) for key in keys[1000:])
    assert false_positives < 100
