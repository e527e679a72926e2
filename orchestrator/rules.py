"""Row rules: a ``RawRow`` becomes a ``SnapshotRequest`` to send, or an ``invalid`` report record.

Also the name template, and the metadata keys the tool reserves: the run marker (``RUN_MARKER_KEY``)
and the hold (``HOLD_KEY``, set by ``create --hold REASON``), which neither a manifest nor ``--metadata``
may set. ``first_pass`` reads the manifest before anything is sent; duplicate detection's keys and
Bloom filter live in ``duplicates.py``.

Names (given, or rendered from the template) are 1 to 64 characters, not only whitespace, without
the backup prefix, and without control or format characters (Unicode categories Cc, Cf, Cs, Zl, Zp:
NUL, ESC, newline, U+202E ...), which messages and records show escaped, never raw.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import re
import string
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

import orjson

from orchestrator.config import PROJECT_RE, REGION_RE, RowDefaults, RunIdentity
from orchestrator.defaults import HOLD_KEY, RUN_MARKER_KEY
from orchestrator.duplicates import duplicate_candidates, key_candidates, volume_id_of, volume_key
from orchestrator.errors import UsageError
from orchestrator.manifest import (
    KNOWN_COLUMNS,
    METADATA_PREFIX,
    TAG_PREFIX,
    Format,
    ManifestSource,
    RawRow,
    csv_columns,
    read_keys,
    read_rows,
)
from orchestrator.models import Outcome, Record, SnapshotRequest, utc_iso

NAME_MAX = 64
DESCRIPTION_MAX = 85
METADATA_KEY_MAX = 255
METADATA_VALUE_MAX = 255
RESERVED_NAME_PREFIX = "autobk_snapshot_"
RESERVED_METADATA_PREFIX = "__system__"
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
WELL_FORMED_KEPT = 4096
BUILTIN_PLACEHOLDERS = frozenset({"volume_id", "row", "run_id", "date", "datetime"})
PLACEHOLDER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
# {tag:KEY}: a tag key (letters, digits, spaces and _ . : = + - @ /) as select --with-tags names its column
_METADATA_COLUMN = operator.methodcaller("startswith", METADATA_PREFIX)  # a row's keys are strings
TAG_KEY_RE = re.compile(r"[\w.:=+\-@/]+(?: [\w.:=+\-@/]+)*")


class RowProblem(Exception):
    """A row breaks a rule; carries the report's error code and a message naming row and field."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@functools.lru_cache(maxsize=64)
def _parsed(template: str) -> tuple[tuple[str, str | None, str | None, str | None], ...]:
    """The template's pieces, parsed once per run rather than once per row."""
    return tuple(string.Formatter().parse(template))


@functools.lru_cache(maxsize=64)
def _pieces(template: str) -> tuple[tuple[str, str | None], ...]:
    """The template as (fixed text, column or ``None``) pairs; ``{tag:KEY}`` names the column ``tag:KEY``."""
    return tuple(
        (literal, None if field is None else TAG_PREFIX + spec if field == "tag" and spec else field)
        for literal, field, spec, _ in _parsed(template)
    )


def _checked(template: str, option: str) -> tuple[tuple[str, str | None, str | None, str | None], ...]:
    """The template's pieces; a template that could do more than substitute columns is a usage error.

    A placeholder is a plain name (a manifest column or a built-in value), or ``{tag:KEY}``: never
    attribute access, indexing, a conversion or a format spec.
    """
    try:
        parsed = _parsed(template)
    except ValueError as exc:
        raise UsageError(f"{option} {template!r}: {exc}") from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        plain = bool(field) and PLACEHOLDER_RE.fullmatch(field) is not None and not conversion
        tag = field == "tag" and TAG_KEY_RE.fullmatch(spec or "") is not None
        if not plain or (spec and not tag):
            raise UsageError(
                f"{option} {template!r}: placeholder {{{field}}} must be a plain name such as "
                "{volume_id}, {row}, {run_id}, {date}, {datetime}, a manifest column or {tag:KEY}"
            )
    return parsed


def check_template(template: str) -> None:
    """Refuse name templates that could do more than substitute names, or never give a valid name."""
    parsed = _checked(template, "--name-template")
    literal = "".join(piece for piece, _, _, _ in parsed)
    index = unsafe_character(literal)
    if index is not None:
        raise UsageError(
            f"--name-template {template!r}: names cannot hold the control character "
            f"{_described(literal[index])}"
        )
    if len(literal) > NAME_MAX:
        raise UsageError(
            f"--name-template {template!r}: its fixed text alone is longer than {NAME_MAX} characters"
        )
    if not literal.strip() and all(field is None for _, field, _, _ in parsed):
        raise UsageError(f"--name-template {template!r}: gives every snapshot a blank name")
    if parsed and parsed[0][0].startswith(RESERVED_NAME_PREFIX):
        raise UsageError(f"--name-template {template!r}: {RESERVED_NAME_PREFIX} is reserved for backups")


def check_metadata_templates(metadata: Mapping[str, str]) -> None:
    """Refuse ``--metadata KEY=TEMPLATE`` values that could do more than substitute columns."""
    for key, template in metadata.items():
        _checked(template, f"--metadata {key}")


def template_columns(template: str) -> list[str]:
    """The manifest columns a template names, in order (the built-in values left out)."""
    return [
        column for _, column in _pieces(template) if column is not None and column not in BUILTIN_PLACEHOLDERS
    ]


def first_pass(
    source: ManifestSource,
    defaults: RowDefaults,
    *,
    display: str,
    warn: Callable[[str], None] | None,
    also_known: frozenset[str] = frozenset(),
) -> tuple[int, set[bytes]]:
    """The pass over the whole manifest before anything is sent: its rows counted, the keys that may be
    duplicated (``duplicates``), its file errors and unknown columns (``warn``), and ``columns_checked``.
    Only the key columns are read unless a template (``--name-template``, ``--metadata``) names a column."""
    wanted = {
        column: f"--metadata {key}={template}"
        for key, template in defaults.metadata.items()
        for column in template_columns(template)
    }
    for column in template_columns(defaults.name_template):
        wanted.setdefault(column, f"--name-template {defaults.name_template}")
    if not wanted:  # no template names a column (the usual case)
        return key_candidates(read_keys(source, display=display, warn=warn, also_known=also_known), defaults)
    rows = read_rows(source, display=display, warn=warn, also_known=also_known)
    header = (lambda: csv_columns(source, display)) if source.format is Format.CSV else list
    return duplicate_candidates(columns_checked(rows, wanted, header), defaults)


def columns_checked(
    rows: Iterable[RawRow], wanted: dict[str, str], header: Callable[[], list[str]] = list
) -> Iterator[RawRow]:
    """The rows, passed through; once they are all read, a column that a template (``--name-template``,
    ``--metadata``) names (``wanted``: each with its option) and the manifest does not have is a usage
    error (exit 2): the first pass raises it, before anything is sent.

    The manifest has a column when a row's fields hold the key (a JSON key even with an empty value, a
    CSV cell that is not blank: a blank one leaves the key out), or when its CSV ``header`` names it
    (read only when some wanted column is left): a column blank in every row is then each row's
    ``TEMPLATE_ERROR`` (the name) or a key left out (metadata), as JSON rows holding it empty are.
    """
    folded = {column.casefold(): column for column in wanted}
    written_so: dict[str, str] = {}  # a wanted column's name as the manifest writes it, in another case

    def seen(keys: Iterable[str]) -> None:
        for column in [column for column in wanted if column in keys]:
            del wanted[column]
        for key in keys if wanted else ():
            column = folded.get(key.casefold(), "")
            if column in wanted:
                written_so.setdefault(column, key)

    for raw in rows:
        if wanted and raw.fields is not None:
            seen(raw.fields)
        yield raw
    if wanted:
        seen(header())
    if wanted:
        column, option = next(iter(wanted.items()))
        hint = (
            f" (it has {written_so[column]!r}: a column the manifest does not know keeps its case, "
            f"and a placeholder names it as written: {{{written_so[column]}}})"
            if column in written_so
            else f" (a placeholder reads the rows' own {column} column; "
            f"--{column.replace('_', '-')} does not fill it: write its value in the template)"
            if column in ("region", "project_id")
            else " (select --with-tags writes a tag:KEY column for each tag)"
            if column.startswith(TAG_PREFIX)
            else f" ({{{builtin}}} is a plain value, and a placeholder cannot read its attributes: "
            f"write {{{builtin}}})"
            if (builtin := column.partition(".")[0]) in BUILTIN_PLACEHOLDERS
            else ""
        )
        raise UsageError(
            f"{option}: no row of the manifest has the column {column!r}{hint}; nothing was sent"
        )


def check_metadata_option_keys(metadata: Mapping[str, str]) -> None:
    """Refuse ``--metadata`` options that set the run marker, the hold or a ``__system__`` key (a usage
    error)."""
    for key in metadata:
        if _is_run_marker(key):
            raise UsageError(
                f"--metadata {key!r}: the key {RUN_MARKER_KEY} is reserved for the run marker that "
                "evs-snapshot puts on every snapshot it creates"
            )
        if _is_hold(key):
            raise UsageError(
                f"--metadata {key!r}: the key {HOLD_KEY} is reserved for holds; use --hold REASON"
            )
        if key.startswith(RESERVED_METADATA_PREFIX):
            raise UsageError(
                f"--metadata {key!r}: keys starting with {RESERVED_METADATA_PREFIX} are reserved by the cloud"
            )


def check_hold_reason(reason: str | None, option: str = "--hold") -> str | None:
    """``--hold REASON``: 1 to 255 characters, not only whitespace, no control characters (exit 2)."""
    if reason is None:
        return None
    if not reason.strip():
        raise UsageError(f"{option} needs a REASON (an incident, a change ticket): it must not be empty")
    if len(reason) > METADATA_VALUE_MAX:
        raise UsageError(f"{option}: the REASON has {len(reason)} characters, at most {METADATA_VALUE_MAX}")
    index = unsafe_character(reason)
    if index is not None:
        raise UsageError(
            f"{option}: the REASON has the control character {_described(reason[index])} "
            f"at position {index + 1}"
        )
    return reason


def unsafe_character(text: str) -> int | None:
    """The index of the first control or format character in ``text`` (see the module docstring)."""
    if text.isprintable():  # printable text holds none of them: the common case, checked in C
        return None
    for index, char in enumerate(text):
        if unicodedata.category(char) in UNSAFE_CATEGORIES:
            return index
    return None


def render(template: str, values: Mapping[str, object]) -> str | None:
    """The template with each placeholder replaced; ``None`` when one has no value (absent or empty)."""
    out = []
    for literal, column in _pieces(template):
        out.append(literal)
        if column is not None:
            value = values.get(column)
            if value is None or value == "":
                return None
            out.append(str(value))
    return "".join(out)


def render_name(template: str, values: Mapping[str, object]) -> str:
    """The template with each placeholder replaced; a placeholder without a value is a ``RowProblem``."""
    name = render(template, values)
    if name is None:
        missing = next(
            column
            for _, column in _pieces(template)
            if column is not None and values.get(column) in (None, "")
        )
        raise RowProblem(
            "TEMPLATE_ERROR", f"--name-template needs {{{missing}}}, which this row does not have"
        )
    return name


@dataclasses.dataclass(slots=True, eq=False, repr=False)
class RowValidator:
    """Second pass: turns rows into requests or ``invalid`` records, catching duplicates exactly."""

    defaults: RowDefaults
    identity: RunIdentity
    candidates: set[bytes]
    region_required: bool = True
    first_rows: dict[bytes, int] = dataclasses.field(default_factory=dict)
    templated: bool = dataclasses.field(init=False)  # some --metadata value is rendered (has a brace)
    # The manifest columns the templates name (``None``: every column), copied into a row's values.
    columns: tuple[str, ...] | None = dataclasses.field(init=False)
    # Project ids and regions found well-formed (most rows repeat the same few): checked once each.
    good_projects: set[str] = dataclasses.field(init=False, default_factory=set)
    good_regions: set[str] = dataclasses.field(init=False, default_factory=set)
    # The name template as a format string of ``{volume_id}`` and ``{row}`` alone, the run's values
    # (date, run id) put in once: ``None`` when it names a column (rendered by ``render_name``).
    quick_name: str | None = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.quick_name = _per_row_format(
            self.defaults.name_template,
            {"run_id": self.identity.run_id, "date": self.identity.day, "datetime": self.identity.stamp},
        )
        self.templated = any("{" in value or "}" in value for value in self.defaults.metadata.values())
        templates = [self.defaults.name_template, *self.defaults.metadata.values()]
        try:
            self.columns = tuple(dict.fromkeys(c for t in templates for c in template_columns(t)))
        except ValueError:  # a template the options did not check: render says what is wrong with it
            self.columns = None

    def validate_all(self, rows: Iterable[RawRow]) -> Iterator[SnapshotRequest | Record]:
        return map(self.validate, rows)  # no generator frame of its own a row

    def validate(self, raw: RawRow) -> SnapshotRequest | Record:
        try:
            fields = _fields_of(raw)
            if self.candidates:  # no key the first pass saw twice (the usual case): no row is a duplicate
                self._check_duplicate(raw, fields)
            return self._request(raw, fields)
        except RowProblem as problem:
            return self.invalid(raw, problem)

    def invalid(self, raw: RawRow, problem: RowProblem) -> Record:
        fields = raw.fields or {}
        now = utc_iso(datetime.now(self.identity.started.tzinfo))

        def text(key: str) -> str | None:
            value = fields.get(key)
            return _escaped(value.strip()) if isinstance(value, str) else None

        return Record(
            run_id=self.identity.run_id,
            row=raw.row,
            volume_id=text("volume_id"),
            project_id=text("project_id") or self.defaults.project_id,
            region=text("region") or self.defaults.region,
            name=text("name"),
            outcome=Outcome.INVALID,
            error_code=problem.code,
            error_message=problem.message,
            started_at=now,
            finished_at=now,
            elapsed_ms=0,
        )

    def _check_duplicate(self, raw: RawRow, fields: Mapping[str, Any]) -> None:
        key = volume_key(fields, self.defaults)
        if key is None or key not in self.candidates:
            return
        first = self.first_rows.setdefault(key, raw.row)
        if first != raw.row:
            raise RowProblem(
                "DUPLICATE_VOLUME",
                f"row {raw.row} (line {raw.line}): volume_id {key.decode().split('/')[0]} is already "
                f"in row {first} for the same project",
            )

    def _request(self, raw: RawRow, fields: Mapping[str, Any]) -> SnapshotRequest:
        volume_id = _volume_id(fields.get("volume_id"), raw)
        # A column the row leaves out (the usual case) is read without a call to ``_optional_text``.
        get = fields.get
        project_id = (
            get("project_id") is not None and _optional_text(fields, "project_id", raw, "INVALID_PROJECT_ID")
        ) or self.defaults.project_id
        if project_id is not None and project_id not in self.good_projects:
            if not PROJECT_RE.match(project_id):
                raise RowProblem(
                    "INVALID_PROJECT_ID",
                    f"{_where(raw)}: project_id {project_id!r} is not 32 lower-case hex characters",
                )
            _remember(self.good_projects, project_id)
        region = (
            get("region") is not None and _optional_text(fields, "region", raw, "INVALID_REGION")
        ) or self.defaults.region
        if region is not None and region not in self.good_regions:
            if not REGION_RE.match(region):
                raise RowProblem(
                    "INVALID_REGION", f"{_where(raw)}: region {region!r} is not a region id like cn-north-4"
                )
            _remember(self.good_regions, region)
        if project_id is None and region is None:
            raise RowProblem(
                "MISSING_PROJECT_ID",
                f"{_where(raw)}: no project_id in the row, no --project-id, and no region to look it up by",
            )
        if region is None and self.region_required:
            raise RowProblem(
                "MISSING_REGION", f"{_where(raw)}: no region in the row and no --region or --endpoint"
            )
        description = get("description")
        if description is None:
            description = self.defaults.description
        elif not isinstance(description, str):
            description = _optional_text(fields, "description", raw, "INVALID_DESCRIPTION")
        if description is not None and len(description) > DESCRIPTION_MAX:
            raise RowProblem(
                "DESCRIPTION_TOO_LONG",
                f"{_where(raw)}: description has {len(description)} characters, at most {DESCRIPTION_MAX}",
            )
        force = get("force")
        if force is not None:
            force = _force(force, raw.from_csv, raw)
        if self.templated:
            values = self._values(fields, volume_id, raw.row)
            metadata = self._metadata(values)
        else:  # no --metadata template (the usual run): ``_metadata``'s copy, without its call
            values, metadata = None, dict(self.defaults.metadata)
        row_metadata = _metadata(fields, raw.from_csv, raw)
        if row_metadata:
            metadata.update(row_metadata)
        if metadata:
            _check_metadata(metadata, raw)
        if self.defaults.hold is not None:  # create --hold: in the create request itself
            metadata[HOLD_KEY] = self.defaults.hold
        name = (
            None if get("name") is None else _optional_text(fields, "name", raw, "INVALID_NAME", strip=False)
        )
        rendered = name is None
        if name is None:
            if self.quick_name is not None:
                name = self.quick_name.format(volume_id=volume_id, row=raw.row)
            else:
                values = values if values is not None else self._values(fields, volume_id, raw.row)
                name = render_name(self.defaults.name_template, values)
        if not (
            name.isprintable()  # what ``unsafe_character`` checks first
            and len(name) <= NAME_MAX
            and not name.startswith(RESERVED_NAME_PREFIX)
            and name.strip()
        ):  # the usual name passes these in C; any other is checked (and named) by ``_check_name``
            _check_name(name, raw, rendered=rendered)
        # Made in C (one a row: no __new__ frame), its fields in order: row, line, volume_id,
        # project_id, region, name, description, force, metadata.
        return tuple.__new__(
            SnapshotRequest,
            (
                raw.row,
                raw.line,
                volume_id,
                project_id,
                region,
                name,
                description,
                force if force is not None else self.defaults.force,
                metadata,
            ),
        )

    def _metadata(self, values: Mapping[str, object]) -> dict[str, str]:
        """``--metadata`` with its templates rendered; a placeholder with an empty cell leaves its key out."""
        rendered = ((key, render(template, values)) for key, template in self.defaults.metadata.items())
        return {key: value for key, value in rendered if value is not None}

    def _values(self, fields: Mapping[str, Any], volume_id: str, row: int) -> dict[str, object]:
        """What placeholders name: the row's columns (those the templates name) and the built-in values."""
        columns = self.columns
        values: dict[str, object] = {
            key: value
            for key, value in (fields.items() if columns is None else ((c, fields.get(c)) for c in columns))
            if isinstance(value, str | int | float | bool)
        }
        values.update(
            volume_id=volume_id,
            row=row,
            run_id=self.identity.run_id,
            date=self.identity.day,
            datetime=self.identity.stamp,
        )
        return values


def _per_row_format(template: str, run: Mapping[str, str]) -> str | None:
    """``template`` as a ``str.format`` string of ``{volume_id}`` and ``{row}`` alone, with the run's
    values (``run``) in place: it gives what ``render`` gives a row; ``None`` when the template names
    anything else (a manifest column), or is not one the options would pass."""
    try:
        pieces = _pieces(template)
    except ValueError:
        return None
    out = []
    for literal, column in pieces:
        out.append(literal.replace("{", "{{").replace("}", "}}"))
        if column is None:
            continue
        if run.get(column):
            out.append(run[column].replace("{", "{{").replace("}", "}}"))
        elif column in ("volume_id", "row"):
            out.append(f"{{{column}}}")
        else:
            return None
    return "".join(out)


def _where(raw: RawRow) -> str:
    """How a message names a row (made only when the row breaks a rule)."""
    return f"row {raw.row} (line {raw.line})"


def _remember(known: set[str], value: str) -> None:
    if len(known) < WELL_FORMED_KEPT:  # memory stays flat whatever the manifest holds
        known.add(value)


def _fields_of(raw: RawRow) -> dict[str, Any]:
    if raw.fields is None:
        what = "more cells than the header has columns" if raw.from_csv else "not a JSON object"
        raise RowProblem("MALFORMED_ROW", f"row {raw.row} (line {raw.line}): {what}")
    if raw.problem is not None:
        raise RowProblem("DUPLICATE_FIELD", f"row {raw.row} (line {raw.line}): {raw.problem}")
    return raw.fields


def _volume_id(value: object, raw: RawRow) -> str:
    volume = volume_id_of(value)
    if volume is not None:
        return volume
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RowProblem("MISSING_VOLUME_ID", f"{_where(raw)}: volume_id is missing")
    raise RowProblem(
        "INVALID_VOLUME_ID", f"{_where(raw)}: volume_id {value!r} is not a UUID (8-4-4-4-12 hex)"
    )


def _optional_text(fields: Mapping[str, Any], key: str, raw: RawRow, code: str, *, strip: bool = True) -> str:
    """An optional column's text; called only when the row has the column (its value is not ``None``);
    ``code`` when it is not a string (a JSON manifest)."""
    value = fields[key]
    if not isinstance(value, str):
        raise RowProblem(code, f"{_where(raw)}: {key} must be a string, not {type(value).__name__}")
    return value.strip() if strip else value


def _force(value: object, from_csv: bool, raw: RawRow) -> bool:
    """A present ``force`` cell or value as a boolean."""
    if isinstance(value, bool):
        return value
    if from_csv and isinstance(value, str) and value.strip().lower() in BOOLEANS:
        return BOOLEANS[value.strip().lower()]
    allowed = "true/false/yes/no/1/0" if from_csv else "a JSON boolean"
    raise RowProblem("INVALID_FORCE", f"{_where(raw)}: force {value!r} must be {allowed}")


def _metadata(fields: Mapping[str, Any], from_csv: bool, raw: RawRow) -> dict[str, Any]:
    value = fields.get("metadata")
    # The usual row: no metadata, every key a known column (one set check in C: a ``startswith`` a key
    # costs three times as much), or at least none a ``metadata.`` column.
    if value is None and (KNOWN_COLUMNS.issuperset(fields) or not any(map(_METADATA_COLUMN, fields))):
        return {}
    if from_csv and isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise RowProblem("INVALID_METADATA", f"{_where(raw)}: metadata is not a JSON object") from None
    if value is not None and not isinstance(value, dict):
        raise RowProblem("INVALID_METADATA", f"{_where(raw)}: metadata must be an object of string to string")
    metadata = dict(value or {})
    for key, item in fields.items():
        if isinstance(key, str) and key.startswith("metadata.") and key != "metadata.":
            name = key.removeprefix("metadata.")
            if value and name in value:  # the same key in the metadata object and as a column
                raise RowProblem(
                    "DUPLICATE_FIELD",
                    f"{_where(raw)}: metadata key {name!r} is given twice (metadata and {key})",
                )
            metadata[name] = item
    return metadata


def _check_metadata(metadata: Mapping[str, Any], raw: RawRow) -> None:
    for key, value in metadata.items():
        if _is_run_marker(key):
            raise RowProblem(
                "RESERVED_METADATA_KEY",
                f"{_where(raw)}: metadata key {key!r} is reserved for the run marker that evs-snapshot "
                "puts on its snapshots",
            )
        if _is_hold(key):
            raise RowProblem(
                "RESERVED_METADATA_KEY",
                f"{_where(raw)}: metadata key {key!r} is reserved for holds: use create --hold REASON",
            )
        if not isinstance(value, str):
            raise RowProblem(
                "INVALID_METADATA",
                f"{_where(raw)}: metadata {key!r} must be a string, not {type(value).__name__}",
            )
        if not 1 <= len(key) <= METADATA_KEY_MAX:
            raise RowProblem(
                "METADATA_KEY_TOO_LONG",
                f"{_where(raw)}: metadata key {key[:40]!r}... must be 1 to {METADATA_KEY_MAX} characters",
            )
        if len(value) > METADATA_VALUE_MAX:
            raise RowProblem(
                "METADATA_VALUE_TOO_LONG",
                f"{_where(raw)}: metadata {key!r} is longer than {METADATA_VALUE_MAX} characters",
            )
        if key.startswith(RESERVED_METADATA_PREFIX):
            raise RowProblem(
                "RESERVED_METADATA_KEY",
                f"{_where(raw)}: metadata key {key!r} starts with {RESERVED_METADATA_PREFIX}",
            )


def _check_name(name: str, raw: RawRow, *, rendered: bool = False) -> None:
    what = "name rendered from --name-template" if rendered else "name"
    if not name:
        raise RowProblem("INVALID_NAME", f"{_where(raw)}: {what} is empty")
    index = unsafe_character(name)
    if index is not None:
        raise RowProblem(
            "INVALID_NAME",
            f"{_where(raw)}: {what} {_shown(name)} has the control character {_described(name[index])} "
            f"at position {index + 1}",
        )
    if not name.strip():
        raise RowProblem("INVALID_NAME", f"{_where(raw)}: {what} {_shown(name)} is only whitespace")
    if len(name) > NAME_MAX:
        raise RowProblem(
            "NAME_TOO_LONG",
            f"{_where(raw)}: {what} {name[:20]!r}... has {len(name)} characters, at most {NAME_MAX}",
        )
    if name.startswith(RESERVED_NAME_PREFIX):
        raise RowProblem(
            "RESERVED_NAME_PREFIX",
            f"{_where(raw)}: {what} {name!r} starts with {RESERVED_NAME_PREFIX}, reserved for backups",
        )


def _is_run_marker(key: str) -> bool:
    """Near spellings count too: an operator reading metadata could not tell them from the marker."""
    return key.strip().lower() == RUN_MARKER_KEY


def _is_hold(key: str) -> bool:
    """Near spellings count too, as for the marker."""
    return key.strip().lower() == HOLD_KEY


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _described(char: str) -> str:
    """A control character for a message: ``\\x1b (U+001B)``."""
    return f"{_escape(char)} (U+{ord(char):04X})"


def _escaped(text: str) -> str:
    """``text`` with its control and format characters written as escapes, for a report record."""
    if unsafe_character(text) is None:
        return text
    return "".join(_escape(c) if unicodedata.category(c) in UNSAFE_CATEGORIES else c for c in text)


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")
