"""``evs-snapshot select`` against the emulator: each selector, the output formats, paging, no match."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestrator.emulator import EmulatorThread, SeedVolume
from orchestrator.manifest import ManifestSource, read_rows
from tests.helpers import DB, DISKS, IDS, NO_CREDENTIALS, PROJECT, WEB, cli_args, invoke, records, requests_of

HEADER = [
    "volume_id",
    "server_id",
    "device",
    "bootable",
    "volume_name",
    "size",
    "availability_zone",
    "status",
]
DETAIL = "GET /v2/{project_id}/cloudvolumes/detail"
BY_TAGS = "POST /v2/{project_id}/cloudvolumes/resource_instances/action"


def select(emu: EmulatorThread, *selectors: str, **flags: object) -> Any:
    return invoke([*cli_args("select", endpoint=emu.url, project_id=PROJECT, **flags), *selectors])


def csv_rows(text: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames is not None
    return list(reader)


@pytest.mark.parametrize(
    ("selectors", "expected"),
    [
        (["--server", WEB], {0, 1}),
        (["--server", WEB, "--server", DB], {0, 1, 2, 3}),
        (["--server", WEB, "--exclude-boot"], {1}),
        (["--server", WEB, "--server", DB, "--only-boot"], {0, 2}),
        (["--tag", "env=prod"], {0, 1, 2, 4}),
        (["--tag", "env=prod", "--tag", "role=web"], {0, 1}),
        (["--tag", "env=prod", "--tag", "env=staging", "--tag", "role=db"], {2, 3}),
        (["--tag", "team=ops", "--status", "available"], {4}),
        (["--metadata", "tier=web"], {0, 1}),
        (["--metadata", "tier=web", "--metadata", "ticket=CHG-42"], {1}),
        (["--availability-zone", "cn-north-4b"], {2, 3}),
        (["--status", "error"], {5}),
        (["--name", "db-data"], {3}),
        (["--exclude-boot", "--status", "in-use"], {1, 3}),
        (["--tag", "role=db", "--server", DB, "--exclude-boot"], {3}),
    ],
)
def test_each_selector(
    emulator_thread: Callable[..., EmulatorThread], selectors: list[str], expected: set[int]
) -> None:
    """Every selector, alone and ANDed with others, picks exactly the disks that match."""
    emu = emulator_thread(volumes=DISKS)
    result = select(emu, *selectors)
    assert result.exit_code == 0, result.stderr
    assert {row["volume_id"] for row in csv_rows(result.stdout)} == {IDS[i] for i in expected}


def test_csv_columns_and_one_request(emulator_thread: Callable[..., EmulatorThread]) -> None:
    """CSV by default: volume_id then the informational columns, no force column; one list request."""
    emu = emulator_thread(volumes=DISKS)
    result = select(emu, "--server", DB)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == ",".join(HEADER)
    assert csv_rows(result.stdout) == [
        {
            "volume_id": IDS[2],
            "server_id": DB,
            "device": "/dev/vda",
            "bootable": "true",
            "volume_name": "db-system",
            "size": "40",
            "availability_zone": "cn-north-4b",
            "status": "in-use",
        },
        {
            "volume_id": IDS[3],
            "server_id": DB,
            "device": "/dev/vdb",
            "bootable": "false",
            "volume_name": "db-data",
            "size": "40",
            "availability_zone": "cn-north-4b",
            "status": "in-use",
        },
    ]
    assert "select: 2 disks matched" in result.stderr
    assert requests_of(emu.state(), DETAIL) == {"200": 1}


def test_force_only_with_the_flag(emulator_thread: Callable[..., EmulatorThread], tmp_path: Path) -> None:
    """--force adds force=true for attached disks (false for detached ones); JSON by the -o extension."""
    emu = emulator_thread(volumes=DISKS)
    out = tmp_path / "m.json"
    result = select(emu, "--tag", "team=ops", "--tag", "env=prod", output=out)
    assert result.exit_code == 0, result.stderr
    assert "force" not in orjson.loads(out.read_bytes())[0]
    result = select(emu, "--tag", "env=prod", output=out, force=True, overwrite=True)
    assert result.exit_code == 0, result.stderr
    rows = {row["volume_id"]: row for row in orjson.loads(out.read_bytes())}
    assert {volume: row["force"] for volume, row in rows.items()} == {
        IDS[0]: True,
        IDS[1]: True,
        IDS[2]: True,
        IDS[4]: False,
    }
    assert rows[IDS[4]]["server_id"] is None
    assert rows[IDS[0]]["size"] == 40
    assert requests_of(emu.state(), BY_TAGS) == {"200": 2}


def test_jsonl_format(emulator_thread: Callable[..., EmulatorThread]) -> None:
    """--format jsonl writes one object per line with the same columns."""
    emu = emulator_thread(volumes=DISKS)
    result = select(emu, "--name", "scratch", format="jsonl")
    assert result.exit_code == 0, result.stderr
    (row,) = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert list(row) == HEADER
    assert (row["volume_id"], row["volume_name"], row["status"]) == (IDS[4], "scratch", "available")


def test_no_match_exits_1_and_writes_nothing(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """No disk matched: exit 1 with "no disk matched", and no (empty) manifest is written."""
    emu = emulator_thread(volumes=DISKS)
    out = tmp_path / "m.csv"
    result = select(emu, "--tag", "env=prod", "--tag", "role=nothing", output=out)
    assert result.exit_code == 1
    assert "no disk matched" in result.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_pages_1000_at_a_time(emulator_thread: Callable[..., EmulatorThread]) -> None:
    """2,500 disks cost 3 list pages; --tag lists them again (3 pages: tags are matched on the list)
    and cross-checks 1,001 tagged disks with 2 tag pages."""
    many = tuple(
        SeedVolume(
            volume_id=str(uuid.UUID(int=0xB0000 + index, version=4)),
            tags={"batch": "big"} if index <= 1000 else {},
        )
        for index in range(2500)
    )
    emu = emulator_thread(volumes=many)
    result = select(emu, "--status", "available")
    assert result.exit_code == 0, result.stderr
    assert len(csv_rows(result.stdout)) == 2500
    result = select(emu, "--tag", "batch=big")
    assert result.exit_code == 0, result.stderr
    assert len(csv_rows(result.stdout)) == 1001
    state = emu.state()
    assert requests_of(state, DETAIL) == {"200": 6}
    assert requests_of(state, BY_TAGS) == {"200": 2}


def test_project_looked_up_by_region(emulator_thread: Callable[..., EmulatorThread]) -> None:
    """Without --project-id, the project is looked up from IAM by --region, as create does."""
    emu = emulator_thread(volumes=DISKS)
    result = invoke(
        cli_args("select", "--name", "scratch", endpoint=emu.url, iam_endpoint=emu.url, region="cn-north-4")
    )
    assert result.exit_code == 0, result.stderr
    assert [row["volume_id"] for row in csv_rows(result.stdout)] == [IDS[4]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "at least one selector"),
        (["--only-boot", "--exclude-boot"], "exclude each other"),
        (["--tag", "env"], "KEY=VALUE"),
        (["--status", "available", "--project-id", "nothex"], "32 lower-case hex"),
        (["--server", ""], "--server"),
        (["--server", "", "--status", "available"], "--server"),
        (["--server", "not-a-uuid"], "not a server id"),
        (["--server", WEB, "--server", "  "], "--server"),
        (["--tag", "=x"], "--tag"),
        (["--tag", ""], "--tag"),
        (["--metadata", "=x"], "--metadata"),
        (["--status", ""], "--status"),
        (["--tag", "env=prod", "--name", " "], "--name"),
        (["--tag", "env=prod", "--availability-zone", ""], "--availability-zone"),
    ],
)
def test_usage_errors(emulator_thread: Callable[..., EmulatorThread], args: list[str], message: str) -> None:
    """Bad selectors exit 2 before anything is sent."""
    emu = emulator_thread(volumes=DISKS)
    result = invoke(["select", "--endpoint", emu.url, *args], env={"HUAWEICLOUD_SDK_PROJECT_ID": PROJECT})
    assert result.exit_code == 2
    assert message in result.stderr
    assert emu.state()["requests"] == {}


def test_refused_credentials_exit_3(emulator_thread: Callable[..., EmulatorThread], tmp_path: Path) -> None:
    """Refused credentials end the listing with exit 3 and no manifest."""
    emu = emulator_thread(volumes=DISKS)
    out = tmp_path / "m.csv"
    result = invoke(
        cli_args("select", "--status", "available", endpoint=emu.url, project_id=PROJECT, output=out),
        base={**NO_CREDENTIALS, "OS_AUTH_TOKEN": "not-a-valid-token"},
    )
    assert result.exit_code == 3
    assert not out.exists()
    assert sum(requests_of(emu.state(), DETAIL).values()) == 1


def test_server_ids_are_read_case_insensitively(emulator_thread: Callable[..., EmulatorThread]) -> None:
    """--server given in upper case with spaces is the same server: its two disks are selected."""
    emu = emulator_thread(volumes=DISKS)
    result = select(emu, "--server", f" {WEB.upper()} ")
    assert result.exit_code == 0, result.stderr
    assert {row["volume_id"] for row in csv_rows(result.stdout)} == {IDS[0], IDS[1]}


FORMULAS = ('=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)", "'=quoted", "\tTAB", "a\rCR", "\rCR")


def test_csv_cells_are_spreadsheet_text_and_read_back(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """CSV cells starting with = + - @ ' tab CR get a leading apostrophe; our reader gives the names back."""
    disks = tuple(
        SeedVolume(volume_id=str(uuid.UUID(int=0xE000 + index, version=4)), name=name, tags={"batch": "f"})
        for index, name in enumerate(FORMULAS)
    )
    expected = {disk.volume_id: disk.name for disk in disks}
    emu = emulator_thread(volumes=disks)
    out = tmp_path / "m.csv"
    result = select(emu, "--tag", "batch=f", output=out)
    assert result.exit_code == 0, result.stderr
    with out.open(newline="") as handle:
        written = {row["volume_id"]: row["volume_name"] for row in csv.DictReader(handle)}
    assert written == {
        volume: name if name.startswith("a") else "'" + name for volume, name in expected.items()
    }
    source = ManifestSource.of(str(out), None)
    read = {raw.fields["volume_id"]: raw.fields["volume_name"] for raw in read_rows(source) if raw.fields}
    assert read == expected
    report = tmp_path / "plan.jsonl"
    args = cli_args("create", out, endpoint=emu.url, project_id=PROJECT, report=report, dry_run=True)
    invoke([*args, "--name-template", "n{volume_name}"])
    planned = {r["volume_id"]: r["name"] for r in records(report) if r["outcome"] == "planned"}
    assert planned == {volume: "n" + name for volume, name in expected.items() if name.isprintable()}


def test_output_file_is_not_overwritten_without_the_flag(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """-o naming an existing file exits 2 before listing and leaves it alone; --overwrite replaces it."""
    emu = emulator_thread(volumes=DISKS)
    out = tmp_path / "m.csv"
    out.write_text("keep me\n")
    result = select(emu, "--name", "scratch", output=out)
    assert result.exit_code == 2
    assert "--overwrite" in result.stderr
    assert out.read_text() == "keep me\n"
    assert emu.state()["requests"] == {}
    result = select(emu, "--name", "scratch", output=out, overwrite=True)
    assert result.exit_code == 0, result.stderr
    assert [row["volume_id"] for row in csv_rows(out.read_text())] == [IDS[4]]


def test_output_under_a_file_names_that_file(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """-o somefile/m.csv: exit 2 before listing, saying that somefile is a file, not a directory."""
    emu = emulator_thread(volumes=DISKS)
    blocker = tmp_path / "somefile"
    blocker.write_text("")
    result = select(emu, "--name", "scratch", output=blocker / "sub" / "m.csv")
    assert result.exit_code == 2
    assert f"{blocker} is a file, not a directory" in result.stderr
    assert emu.state()["requests"] == {}


@pytest.mark.parametrize(
    ("selectors", "expected"),
    [
        (["--tag", "env=prod", "--server", DISKS[0].server_id], {0, 1}),
        (["--tag", "env=prod", "--metadata", "tier=web"], {0, 1}),
    ],
)
def test_select_checks_other_selectors_on_tagged_disks(
    emulator_thread: Callable[..., Any], selectors: list[str], expected: set[int]
) -> None:
    """With --tag the disks come from the volume list (per --server), cross-checked with the tags API,
    which knows nothing of --server or --metadata: each tagged disk is checked against them, so a
    tagged disk on another server, or without the metadata, is left out."""
    emu = emulator_thread(volumes=DISKS)
    result = select(emu, *selectors)
    assert result.exit_code == 0, result.stderr
    chosen = {line.split(",", 1)[0] for line in result.stdout.splitlines()[1:]}
    assert chosen == {IDS[i] for i in expected}
    assert set(emu.state()["requests"]) == {
        "GET /v2/{project_id}/cloudvolumes/detail",
        "POST /v2/{project_id}/cloudvolumes/resource_instances/action",
    }


def test_select_needs_a_project_or_a_region(emulator_thread: Callable[..., Any]) -> None:
    """select with neither --project-id nor --region (nor their environment variables): exit 2, nothing
    sent."""
    emu = emulator_thread(volumes=DISKS)
    result = invoke(cli_args("select", "--status", "available", endpoint=emu.url))
    assert result.exit_code == 2
    assert "select needs --project-id, or --region to look the project up by" in result.stderr
    assert emu.state()["requests"] == {}


def test_select_allows_at_most_ten_tag_keys(emulator_thread: Callable[..., Any]) -> None:
    """Eleven --tag keys are more than the tags API takes: exit 2 before anything is sent; ten pass."""
    emu = emulator_thread(volumes=DISKS)
    ten = [item for n in range(10) for item in ("--tag", f"k{n}=v")]
    over = invoke([*cli_args("select", endpoint=emu.url, project_id=PROJECT), *ten, "--tag", "k10=v"])
    assert over.exit_code == 2
    assert "at most 10 tag keys (the API's limit)" in over.stderr
    assert emu.state()["requests"] == {}
    fits = select(emu, *ten)
    assert fits.exit_code == 1  # sent, and no disk carries those tags
    assert "no disk matched" in fits.stderr
