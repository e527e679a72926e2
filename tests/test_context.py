"""Context on each snapshot: ``select --with-tags`` columns and ``create --metadata KEY={column}``."""

from __future__ import annotations

import csv
import io
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestrator.emulator import EmulatorThread, SeedVolume
from orchestrator.manifest import ManifestSource, read_rows
from tests.helpers import (
    CREATE_ROUTE,
    MARKER,
    PROJECT,
    cli_args,
    create_args,
    header,
    invoke,
    records,
    requests_of,
)

WEB, DB = "5f0c1a6e-7a52-4c1e-9a1b-0c0f4e2d8b01", "5f0c1a6e-7a52-4c1e-9a1b-0c0f4e2d8b02"
IDS = [str(uuid.UUID(int=0xC000 + index, version=4)) for index in range(4)]
DISKS = (
    SeedVolume(
        volume_id=IDS[0],
        name="web-data",
        server_id=WEB,
        device="/dev/vdb",
        tags={"env": "prod", "app": "shop", "ctx": "1"},
    ),
    SeedVolume(
        volume_id=IDS[1],
        name="db-data",
        server_id=DB,
        device="/dev/vdb",
        tags={"env": "staging", "Owner": "dba", "ctx": "1"},
    ),
    SeedVolume(volume_id=IDS[2], name="scratch", tags={"app": "shop", "ctx": "1"}),  # no env, no server
    SeedVolume(volume_id=IDS[3], name="bare", tags={"batch": "x"}),
)
INFO = ["volume_id", "server_id", "device", "bootable", "volume_name", "size", "availability_zone", "status"]
CONTEXT = ("env={tag:env}", "change=CHG-1042", "server={server_id}")


def select(emu: EmulatorThread, *args: str, **flags: object) -> Any:
    return invoke([*cli_args("select", endpoint=emu.url, project_id=PROJECT, **flags), *args])


def selected(emu: EmulatorThread, out: Path, *args: str) -> Path:
    """``select --force`` of the first three disks into ``out`` (two are attached)."""
    result = select(emu, "--tag", "ctx=1", "--force", *args, output=out)
    assert result.exit_code == 0, result.stderr
    return out


def snapshot_metadata(emu: EmulatorThread) -> dict[str, dict[str, str]]:
    """The metadata of each snapshot in the emulator, by volume, the run marker left out."""
    return {
        snapshot["volume_id"]: {k: v for k, v in snapshot["metadata"].items() if k != MARKER}
        for snapshot in emu.state()["snapshots"]
    }


def test_with_tags_adds_one_column_per_tag_key(emulator_thread: Callable[..., EmulatorThread]) -> None:
    """--with-tags: the usual columns, then tag:KEY for each key of the selected disks, sorted; empty where absent."""
    emu = emulator_thread(volumes=DISKS)
    result = select(emu, "--tag", "env=prod", "--tag", "env=staging", "--with-tags")
    assert result.exit_code == 0, result.stderr
    reader = csv.DictReader(io.StringIO(result.stdout))
    assert reader.fieldnames == [
        *INFO,
        "tag:Owner",
        "tag:app",
        "tag:ctx",
        "tag:env",
    ]  # the selected disks' keys
    rows = {row["volume_id"]: row for row in reader}
    assert {k: v for k, v in rows[IDS[0]].items() if k.startswith("tag:")} == {
        "tag:Owner": "",
        "tag:app": "shop",
        "tag:ctx": "1",
        "tag:env": "prod",
    }
    assert {k: v for k, v in rows[IDS[1]].items() if k.startswith("tag:")} == {
        "tag:Owner": "dba",
        "tag:app": "",
        "tag:ctx": "1",
        "tag:env": "staging",
    }
    plain = select(emu, "--tag", "env=prod")
    assert plain.stdout.splitlines()[0] == ",".join(INFO)  # without the flag: no tag column


def test_with_tags_in_json_with_force(emulator_thread: Callable[..., EmulatorThread]) -> None:
    """JSON Lines: tag columns after force; a tag the disk lacks is null; read back without a warning."""
    emu = emulator_thread(volumes=DISKS)
    result = select(emu, "--tag", "app=shop", "--with-tags", "--force", format="jsonl")
    assert result.exit_code == 0, result.stderr
    rows = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [list(row) for row in rows] == [[*INFO, "force", "tag:app", "tag:ctx", "tag:env"]] * 2
    by_id = {row["volume_id"]: row for row in rows}
    assert (by_id[IDS[0]]["tag:env"], by_id[IDS[2]]["tag:env"]) == ("prod", None)


def test_tag_columns_keep_the_key_case_and_are_not_warned(write: Callable[..., Path]) -> None:
    """A TAG:Key header is the column tag:Key (the prefix ignores case, the key keeps it); no warning."""
    path = write("m.csv", f"volume_id,TAG:Env,tag:team\n{IDS[0]},prod,db\n")
    warnings: list[str] = []
    rows = list(read_rows(ManifestSource.of(str(path), None), warn=warnings.append))
    assert rows[0].fields == {"volume_id": IDS[0], "tag:Env": "prod", "tag:team": "db"}
    assert warnings == []


@pytest.mark.no_cover
def test_metadata_from_columns_reaches_each_snapshot(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """--metadata env={tag:env} change=CHG-1042 server={server_id}: each snapshot carries its disk's values;
    an empty cell (no env tag, no server) leaves that key out; the header records the templates."""
    emu = emulator_thread(volumes=DISKS)
    manifest = selected(emu, tmp_path / "m.csv", "--with-tags")
    report = tmp_path / "r.jsonl"
    result = invoke(create_args(emu.url, manifest, report, metadata=CONTEXT))
    assert result.exit_code == 0, result.stderr
    assert snapshot_metadata(emu) == {
        IDS[0]: {"env": "prod", "change": "CHG-1042", "server": WEB},
        IDS[1]: {"env": "staging", "change": "CHG-1042", "server": DB},
        IDS[2]: {"change": "CHG-1042"},
    }
    shape = header(report)["shape"]
    assert orjson.loads(shape["metadata"]) == {
        "env": "{tag:env}",
        "change": "CHG-1042",
        "server": "{server_id}",
    }


@pytest.mark.no_cover
def test_templates_mix_text_and_columns_and_a_row_metadata_wins(
    emulator_thread: Callable[..., EmulatorThread], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Fixed text around placeholders, built-in values, {{ }} escapes; null leaves the key out; a row's own
    metadata still wins."""
    emu = emulator_thread(volumes=DISKS)
    rows = [
        {"volume_id": IDS[0], "tag:env": "prod"},
        {"volume_id": IDS[1], "tag:env": "staging", "metadata": {"env": "pinned"}},
        {"volume_id": IDS[2], "tag:env": None},
    ]
    manifest = write("m.jsonl", "".join(orjson.dumps(row).decode() + "\n" for row in rows))
    options = ("env={tag:env}", "where=disk-{volume_id}@{tag:env}", "brace={{row}}-{row}")
    result = invoke(create_args(emu.url, manifest, tmp_path / "r.jsonl", metadata=options, force=True))
    assert result.exit_code == 0, result.stderr
    assert snapshot_metadata(emu) == {
        IDS[0]: {"env": "prod", "where": f"disk-{IDS[0]}@prod", "brace": "{row}-1"},
        IDS[1]: {"env": "pinned", "where": f"disk-{IDS[1]}@staging", "brace": "{row}-2"},
        IDS[2]: {"brace": "{row}-3"},
    }


@pytest.mark.no_cover
def test_an_unknown_column_exits_2_before_anything_is_sent(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """A --metadata column no row has (select without --with-tags) exits 2 naming it; no report, no request."""
    emu = emulator_thread(volumes=DISKS)
    manifest = selected(emu, tmp_path / "m.csv")
    report = tmp_path / "r.jsonl"
    result = invoke(create_args(emu.url, manifest, report, metadata=CONTEXT))
    assert result.exit_code == 2
    assert "'tag:env'" in result.stderr
    assert "--with-tags" in result.stderr
    assert not report.exists() or not report.read_bytes()
    result = invoke(create_args(emu.url, manifest, report, metadata="ticket={change_ticket}", dry_run=True))
    assert result.exit_code == 2
    assert "'change_ticket'" in result.stderr
    assert requests_of(emu.state(), CREATE_ROUTE) == Counter()
    assert emu.state()["snapshots"] == []
    result = invoke(cli_args("validate", manifest, metadata="env={tag:env}"))
    assert result.exit_code == 2
    assert "'tag:env'" in result.stderr


def test_a_name_template_column_no_row_has_exits_2_before_anything_is_sent(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """--name-template naming a column no row has ({volume_id.__class__} is such a column, not an
    attribute) exits 2 naming it, as --metadata does: not a TEMPLATE_ERROR on every row."""
    emu = emulator_thread(volumes=DISKS)
    manifest = selected(emu, tmp_path / "m.csv")
    report = tmp_path / "r.jsonl"
    result = invoke(create_args(emu.url, manifest, report, name_template="{volume_id.__class__}"))
    assert result.exit_code == 2, result.stderr
    assert "--name-template" in result.stderr
    assert "'volume_id.__class__'" in result.stderr
    assert "plain value" in result.stderr
    assert not report.exists() or not report.read_bytes()
    result = invoke(create_args(emu.url, manifest, report, name_template="{tag:app}-{row}", dry_run=True))
    assert result.exit_code == 2
    assert "'tag:app'" in result.stderr
    assert "--with-tags" in result.stderr
    result = invoke(cli_args("validate", manifest, name_template="{hostname}-{row}"))
    assert result.exit_code == 2
    assert "'hostname'" in result.stderr
    cased = tmp_path / "cased.csv"
    cased.write_text(f"volume_id,Env\n{DISKS[0].volume_id},prod\n", encoding="utf-8")
    result = invoke(cli_args("validate", cased, name_template="{env}-{row}"))
    assert result.exit_code == 2
    assert "no row of the manifest has the column 'env' (it has 'Env'" in result.stderr
    assert "{Env}" in result.stderr  # what to write
    result = invoke(
        cli_args("validate", cased, name_template="{Env}-{row}", project_id=PROJECT, region="cn-north-4")
    )
    assert result.exit_code == 0, result.output + result.stderr
    result = invoke(
        cli_args("validate", cased, name_template="{region}-{row}", project_id=PROJECT, region="cn-north-4")
    )
    assert result.exit_code == 2
    assert "the rows' own region column; --region does not fill it" in result.stderr
    assert requests_of(emu.state(), CREATE_ROUTE) == Counter()
    assert emu.state()["snapshots"] == []


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("env={tag:env!r}", "plain name"),
        ("env={tag:}", "'tag'"),  # no key: the column "tag", which no row has
        ("env={volume_id:>80}", "plain name"),
        ("env={volume_id.__class__}", "'volume_id.__class__'"),
        ("env={", "Single '{'"),
        (f"{MARKER}={{tag:env}}", MARKER),
        ("__system__x={tag:env}", "__system__"),
    ],
)
def test_bad_templates_and_reserved_keys_exit_2(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path, value: str, words: str
) -> None:
    """A template that is not plain columns, or a reserved key, exits 2 with nothing sent."""
    emu = emulator_thread(volumes=DISKS)
    manifest = selected(emu, tmp_path / "m.csv", "--with-tags")
    result = invoke(create_args(emu.url, manifest, tmp_path / "r.jsonl", metadata=value))
    assert result.exit_code == 2
    assert words in result.stderr
    assert requests_of(emu.state(), CREATE_ROUTE) == Counter()


@pytest.mark.no_cover
def test_resume_refuses_another_metadata_template(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """--resume with a different --metadata template exits 2 naming metadata; the same one resumes."""
    emu = emulator_thread(volumes=DISKS)
    manifest = selected(emu, tmp_path / "m.csv", "--with-tags")
    report = tmp_path / "r.jsonl"
    assert invoke(create_args(emu.url, manifest, report, metadata=CONTEXT)).exit_code == 0
    sent = requests_of(emu.state(), CREATE_ROUTE)
    other = ("env={tag:app}", *CONTEXT[1:])
    result = invoke([*create_args(emu.url, manifest, report, metadata=other), "--resume"])
    assert result.exit_code == 2
    assert "metadata" in result.stderr
    assert "{tag:app}" in result.stderr
    assert "{tag:env}" in result.stderr
    assert requests_of(emu.state(), CREATE_ROUTE) == sent
    result = invoke([*create_args(emu.url, manifest, report, metadata=CONTEXT), "--resume"])
    assert result.exit_code == 0, result.stderr
    assert requests_of(emu.state(), CREATE_ROUTE) == sent
    assert len(records(report)) == 3


def test_name_template_takes_tag_columns_too(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """--name-template {tag:KEY} renders the tag column; a disk without the tag is TEMPLATE_ERROR as before."""
    emu = emulator_thread(volumes=DISKS)
    manifest = selected(emu, tmp_path / "m.csv", "--with-tags")
    report = tmp_path / "plan.jsonl"
    result = invoke(create_args(emu.url, manifest, report, name_template="{tag:app}-{row}", dry_run=True))
    assert result.exit_code == 1, result.stderr
    got = {r["volume_id"]: (r["outcome"], r["name"], r["error_code"]) for r in records(report)}
    assert got == {
        IDS[0]: ("planned", "shop-1", None),
        IDS[1]: ("invalid", None, "TEMPLATE_ERROR"),
        IDS[2]: ("planned", "shop-3", None),
    }
    assert "{tag:app}" in next(r["error_message"] for r in records(report) if r["error_code"])


@pytest.mark.parametrize("form", ["csv", "json"])
def test_a_tag_column_blank_in_every_row_is_a_template_error_per_row_in_both_formats(
    tmp_path: Path, form: str
) -> None:
    """A tag:KEY column the manifest has (a CSV header names it, JSON rows hold the key) whose cells are
    all blank: each row gets TEMPLATE_ERROR for the name and no such key in its metadata, in CSV as in
    JSON (CSV exited 2: a blank cell was taken for no column). A column the manifest does not have at
    all (not in the CSV header, no JSON row holds it) still exits 2 before anything is sent."""
    manifest, bare = tmp_path / f"m.{form}", tmp_path / f"bare.{form}"
    if form == "csv":
        manifest.write_text(f"volume_id,tag:env\n{IDS[0]},\n{IDS[1]}, \n", encoding="utf-8")
        bare.write_text(f"volume_id\n{IDS[0]}\n{IDS[1]}\n", encoding="utf-8")
    else:
        manifest.write_bytes(
            orjson.dumps([{"volume_id": IDS[0], "tag:env": ""}, {"volume_id": IDS[1], "tag:env": ""}])
        )
        bare.write_bytes(orjson.dumps([{"volume_id": IDS[0]}, {"volume_id": IDS[1]}]))
    where = {"project_id": PROJECT, "region": "cn-north-4", "dry_run": True}
    named = invoke(
        cli_args("create", manifest, name_template="n-{tag:env}", report=tmp_path / "n.jsonl", **where)
    )
    assert named.exit_code == 1, named.stderr
    assert [(r["row"], r["outcome"], r["error_code"]) for r in records(tmp_path / "n.jsonl")] == [
        (1, "invalid", "TEMPLATE_ERROR"),
        (2, "invalid", "TEMPLATE_ERROR"),
    ]
    tagged = invoke(
        cli_args("create", manifest, metadata="env={tag:env}", report=tmp_path / "t.jsonl", **where)
    )
    assert tagged.exit_code == 0, tagged.stderr
    assert [r["outcome"] for r in records(tmp_path / "t.jsonl")] == ["planned", "planned"]
    assert all("env" not in (r.get("metadata") or {}) for r in records(tmp_path / "t.jsonl"))
    missing = invoke(
        cli_args("create", bare, name_template="n-{tag:env}", report=tmp_path / "b.jsonl", **where)
    )
    assert missing.exit_code == 2
    assert "no row of the manifest has the column 'tag:env'" in missing.stderr
