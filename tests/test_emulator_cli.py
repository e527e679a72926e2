"""`evs-snapshot emulator` as a command: its seed files (--volumes, --snapshots) and their errors,
help text for every option, and the new options wired through to a served emulator."""

from __future__ import annotations

import asyncio
import os
import signal
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import click
import orjson
import pytest
from click.testing import CliRunner
from yarl import URL

import orchestrator.emulator as emulator_package
from orchestrator.cli import main
from orchestrator.commands.emulator import command
from orchestrator.emulator import (
    EmulatorSettings,
    EmulatorThread,
    SeedSnapshot,
    SeedVolume,
    fetch_state,
    read_snapshots,
    read_volumes,
    serve_forever,
    serving,
)
from orchestrator.errors import UsageError
from tests.helpers import API_IDS, PROJECT, TOKEN, emulator_as_commanded, installed, invoke, volume_ids

IDS = volume_ids(4, seed=5)
SNAP_IDS = volume_ids(4, seed=6)


def test_read_volumes_csv_with_every_column(write: Callable[..., Path]) -> None:
    """CSV volumes take name, server_id, device, bootable, AZ, a JSON metadata column and k=v;k2=v2 tags;
    a disk with a server and no status is in-use."""
    path = write(
        "v.csv",
        "volume_id,status,size,name,server_id,device,bootable,availability_zone,metadata,tags\n"
        f'{IDS[0].upper()},,100,web,srv-1,/dev/vda,true,cn-north-4b,"{{""role"": ""system""}}",env=prod;app=web\n'
        f"{IDS[1]},error,,,,,false,,,\n",
    )
    first, second = read_volumes(path)
    assert first == SeedVolume(
        volume_id=IDS[0],
        status="in-use",
        size=100,
        name="web",
        server_id="srv-1",
        device="/dev/vda",
        bootable=True,
        availability_zone="cn-north-4b",
        metadata={"role": "system"},
        tags={"env": "prod", "app": "web"},
    )
    assert second == SeedVolume(volume_id=IDS[1], status="error")


def test_read_volumes_json(write: Callable[..., Path]) -> None:
    """JSON volumes: an array or {"volumes": [...]}, with tags as an object and bootable as a boolean."""
    items = [
        {
            "volume_id": IDS[0],
            "server_id": "srv-1",
            "bootable": True,
            "tags": {"env": "prod"},
            "metadata": {"a": "b"},
        },
        {"volume_id": IDS[1], "status": "available", "size": 20},
    ]
    for content in (items, {"volumes": items}):
        first, second = read_volumes(write("v.json", orjson.dumps(content)))
        assert (first.status, first.bootable, first.tags, first.metadata) == (
            "in-use",
            True,
            {"env": "prod"},
            {"a": "b"},
        )
        assert (second.status, second.size, second.server_id) == ("available", 20, None)


def test_read_snapshots_csv_and_json(write: Callable[..., Path]) -> None:
    """Seeded snapshots of any age, marked or not, backup-made names included; EVS or ISO-with-Z times."""
    csv_path = write(
        "s.csv",
        "id,volume_id,name,status,created_at,metadata,project_id\n"
        f'{SNAP_IDS[0]},{IDS[0]},old-run,available,2019-03-01T02:03:04.500000,"{{""evs_snapshot_run"": ""r0""}}",\n'
        f"{SNAP_IDS[1]},{IDS[0]},autobk_snapshot_vbs_x,error,2026-11-01T00:00:00Z,,{'f' * 32}\n",
    )
    first, second = read_snapshots(csv_path)
    assert first == SeedSnapshot(
        id=SNAP_IDS[0],
        volume_id=IDS[0],
        name="old-run",
        status="available",
        created_at="2019-03-01T02:03:04.500000",
        metadata={"evs_snapshot_run": "r0"},
    )
    assert (second.name, second.status, second.created_at, second.project_id, second.metadata) == (
        "autobk_snapshot_vbs_x",
        "error",
        "2026-11-01T00:00:00.000000",
        "f" * 32,
        {},
    )
    items = [{"id": SNAP_IDS[2], "volume_id": IDS[1], "created_at": "2026-01-02T03:04:05.123456+08:00"}]
    for content in (items, {"snapshots": items}):
        [only] = read_snapshots(write("s.json", orjson.dumps(content)))
        assert (only.status, only.created_at, only.name) == ("available", "2026-01-01T19:04:05.123456", None)


BAD_VOLUMES = [
    (b"\x00\x01\x02binary", "binary"),
    ("volume_id\ncaf\xe9\n".encode("latin-1"), "not UTF-8"),
    (b"volume_id,status\nx,sideways\n", "needs a volume_id and a known status"),
    (b"volume_id,size\nx,big\n", "size must be a whole number"),
    (b'volume_id,metadata\nx,"{not json"\n', "metadata must be a JSON object"),
    (b'volume_id,metadata\nx,"{""a"": 1}"\n', "metadata must be a JSON object of strings"),
    (b"volume_id,bootable\nx,maybe\n", "bootable must be true or false"),
    (b"volume_id,tags\nx,=v\n", "tags must be k=v;k2=v2"),
    (b'[{"volume_id": "x"', "not valid JSON"),
    (b'{"volumes": 3}', "expected an array of volume objects"),
    (b"volume_id,status\nx,available\nX,in-use\n", "volume id x appears twice"),
]
BAD_SNAPSHOTS = [
    (b"\x89PNG\r\n\x1a\n\x00\x00", "binary"),
    (b"id,volume_id\n\xff\xfe,x\n", "not UTF-8"),
    (b"id,volume_id\n,x\n", "needs an id and a volume_id"),
    (b"id,volume_id,status\ns1,x,melting\n", "unknown snapshot status"),
    (b"id,volume_id,created_at\ns1,x,yesterday\n", "created_at must be"),
    (b"id,volume_id,created_at\ns1,x,9999-12-31T23:00:00-05:00\n", "is out of range in UTC"),
    (
        b'[{"id": "s1", "volume_id": "x", "created_at": "0001-01-01T00:00:00+05:00"}]',
        "is out of range in UTC",
    ),
    (b"id,volume_id\ns1,x\ns1,y\n", "appears twice"),
    (b'[{"id": "s1", "volume_id": "x", "metadata": ["a"]}]', "metadata must be a JSON object of strings"),
    (b'[{"id": "s1", "volume_id": "x", "name": {"a": 1}}]', "name must be a string"),
    (b'{"snapshots": [1, 2]}', "expected an array of snapshot objects"),
]


@pytest.mark.parametrize(
    ("option", "content", "message"),
    [("--volumes", c, m) for c, m in BAD_VOLUMES] + [("--snapshots", c, m) for c, m in BAD_SNAPSHOTS],
)
def test_bad_seed_files_are_one_line_errors(
    write: Callable[..., Path], option: str, content: bytes, message: str
) -> None:
    """A binary, non-UTF-8 or malformed seed file ends the command with exit 2 and one message line."""
    path = write("seed.json" if content.lstrip()[:1] in (b"[", b"{") else "seed.csv", content)
    result = CliRunner().invoke(main, ["emulator", option, str(path)], catch_exceptions=False)
    assert result.exit_code == 2
    assert message in result.stderr
    assert str(path) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("read", "content", "message"),
    [
        (
            read_volumes,
            b'volume_id,status\n"x,available\ny,available\n',
            ":2: not valid CSV",
        ),  # unclosed quote
        (
            read_volumes,
            b"volume_id,status\nx,available,extra\n",
            ":2: this row has 3 cells, the header 2 columns",
        ),
        (read_volumes, b"this is not a list of disks\n", ":1: the header has no volume_id column"),
        (read_volumes, b"", "the volumes file is empty"),
        (
            read_volumes,
            b"volume_id,status,volume_id\nx,available,y\n",
            ":1: the header names 'volume_id' twice",
        ),
        (read_snapshots, b'id,volume_id\ns1,"x\n', ":2: not valid CSV"),
        (read_snapshots, b"garbage\n", ":1: the header has no id and no volume_id column"),
        (read_snapshots, b"\n \n", "the snapshots file is empty"),
        (read_snapshots, b"id,volume_id\n\ns1,x\ns1,y\n", "entry 2: snapshot id s1 appears twice (line 4)"),
    ],
)
def test_a_seed_file_read_as_what_it_is_not_is_an_error_at_its_line(
    write: Callable[..., Path], read: Callable[[Path], tuple[Any, ...]], content: bytes, message: str
) -> None:
    """A CSV seed file with a quote never closed, a row wider than its header, a header without the
    columns an entry needs, or nothing at all is one error line naming file:line: never one odd disk,
    or none (test_bad_seed_files_are_one_line_errors: such a UsageError is exit 2, one line)."""
    path = write("seed.csv", content)
    with pytest.raises(UsageError) as raised:
        read(path)
    assert f"{path}{message}" in str(raised.value) or f"{path}: {message}" in str(raised.value)
    assert len(str(raised.value).splitlines()) == 1


def test_missing_seed_file_is_a_usage_error(tmp_path: Path) -> None:
    """An unreadable seed file is a UsageError naming the file."""
    with pytest.raises(UsageError, match="cannot read the snapshots file"):
        read_snapshots(tmp_path / "absent.csv")


def test_every_option_has_help() -> None:
    """Each option of `evs-snapshot emulator` explains itself in --help."""
    options = [param for param in command.params if isinstance(param, click.Option)]
    assert len(options) >= 35
    assert [o.name for o in options if not o.help] == []
    result = CliRunner().invoke(main, ["emulator", "--help"])
    assert result.exit_code == 0
    for flag in (
        "--fault-late-commit",
        "--late-commit-seconds",
        "--ak-lock-after",
        "--ak-lock-seconds",
        "--expired-token-answer",
        "--iam-deny-list-projects",
        "--snapshots",
        "--snapshot-quota",
        "--rollback-seconds",
        "--fault-rollback-error",
        "--fault-list",
    ):
        assert flag in result.output


def get(url: str, path: str) -> tuple[int, Any]:
    request = urllib.request.Request(f"{url}{path}", headers={"X-Auth-Token": TOKEN})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback http
            return answer.status, orjson.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


def test_command_wires_the_new_options(write: Callable[..., Path]) -> None:
    """The served emulator honours --snapshots, --volumes columns, --snapshot-quota,
    --iam-deny-list-projects and --fault-list given on the command line."""
    volumes = write("v.csv", f"volume_id,server_id,tags\n{IDS[0]},srv-9,env=prod\n")
    snapshots = write(
        "s.json",
        orjson.dumps(
            {
                "snapshots": [
                    {
                        "id": SNAP_IDS[0],
                        "volume_id": IDS[0],
                        "name": "nightly",
                        "created_at": "2020-05-06T07:08:09.000001",
                        "metadata": {"evs_snapshot_run": "run-1"},
                    }
                ]
            }
        ),
    )
    args = [
        *("--port", "0", "--token", TOKEN, "--volumes", str(volumes), "--snapshots", str(snapshots)),
        *("--snapshot-quota", "5", "--iam-deny-list-projects", "--fault-list", "1"),
    ]
    with emulator_as_commanded(args) as served:
        url = served.url
        _, state = get(url, "/_emulator/state")
        assert state["snapshots"] == [
            {
                "id": SNAP_IDS[0],
                "volume_id": IDS[0],
                "project_id": PROJECT,
                "name": "nightly",
                "status": "available",
                "created_at": "2020-05-06T07:08:09.000001",
                "metadata": {"evs_snapshot_run": "run-1"},
            }
        ]
        [volume] = state["volumes"]
        assert (volume["status"], volume["attachments"][0]["server_id"]) == ("in-use", "srv-9")
        assert state["rollbacks"] == []
        status, quota = get(url, f"/v2/{PROJECT}/os-quota-sets/{PROJECT}?usage=True")
        assert (
            status,
            quota["quota_set"]["snapshots"]["limit"],
            quota["quota_set"]["snapshots"]["in_use"],
        ) == (
            200,
            5,
            1,
        )
        assert get(url, "/v3/projects")[0] == 403
        assert get(url, "/v3/auth/projects")[0] == 200
        assert get(url, f"/v2/{PROJECT}/cloudsnapshots/detail")[0] == 503
        assert get(url, f"/v2/{PROJECT}/cloudsnapshots/{SNAP_IDS[0]}")[0] == 200


async def test_serve_forever_stops_on_sigterm(capsys: pytest.CaptureFixture[str]) -> None:
    """The emulator command's loop: prints its address, serves, and stops cleanly on SIGTERM."""
    loop = asyncio.get_running_loop()
    printed = ""
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(serve_forever, EmulatorSettings(token=TOKEN))
            with anyio.fail_after(5):
                while "listening on" not in printed:
                    await anyio.sleep(0.005)
                    printed += capsys.readouterr().out
            url = printed.split("listening on ", 1)[1].split()[0]
            state = await anyio.to_thread.run_sync(fetch_state, url)
            assert state["snapshots"] == []
            assert installed(signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)  # serve_forever leaves its handlers (it ends the process)
    assert "EVS emulator stopped" in capsys.readouterr().err


def test_an_emulator_thread_that_cannot_listen_says_so(emulator_thread: Callable[..., Any]) -> None:
    """An emulator thread on a port already taken raises 'the emulator did not start', caused by the OSError."""
    taken = URL(emulator_thread().url).port
    assert taken is not None
    with pytest.raises(RuntimeError, match="the emulator did not start") as caught:
        EmulatorThread(EmulatorSettings(port=taken)).start()
    assert isinstance(caught.value.__cause__, OSError)


def test_the_emulator_command_on_a_port_already_taken_exits_2(emulator_thread: Callable[..., Any]) -> None:
    """``evs-snapshot emulator --port P`` with P taken: one line naming the address, exit 2."""
    taken = URL(emulator_thread().url).port
    result = CliRunner().invoke(main, ["emulator", "--port", str(taken)])
    assert result.exit_code == 2, result.output
    assert f"cannot listen on 127.0.0.1:{taken}" in result.stderr
    assert "Traceback" not in result.output


def test_the_emulator_package_names_only_what_it_has() -> None:
    """The emulator package exports serving; an unknown name is an AttributeError naming it."""
    assert emulator_package.serving is serving
    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"):
        _ = emulator_package.nothing_here


def test_a_seed_file_with_a_negative_size_is_refused(write: Callable[..., Path]) -> None:
    """emulator --volumes with a negative size: exit 2 naming the file and entry; nothing listens."""
    path = write("v.csv", f"volume_id,size\n{API_IDS[0]},-5\n")
    result = invoke(["emulator", "--volumes", str(path)])
    assert result.exit_code == 2, result.output
    assert f"{path}: entry 1: size must not be negative" in result.stderr
    assert "listening" not in result.output


def test_stopping_an_emulator_thread_that_never_started_does_nothing() -> None:
    """stop() before start() returns at once (it used to fail joining a thread never started)."""
    thread = EmulatorThread(EmulatorSettings())
    thread.stop()
    with thread:  # and the same object still starts and stops normally
        assert thread.state()["snapshots"] == []


@pytest.mark.parametrize("value", ["1.5", "-0.1"])
def test_emulator_fault_probabilities_are_between_0_and_1(value: str) -> None:
    """emulator --fault-5xx outside [0, 1] is refused (exit 2) before anything starts."""
    result = invoke(["emulator", "--port", "0", "--fault-5xx", value])
    assert result.exit_code == 2
    assert "must be between 0 and 1" in result.stderr
