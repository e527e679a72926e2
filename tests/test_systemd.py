"""deploy/systemd: the units pass ``systemd-analyze verify``, and each ``ExecStart=`` line, run as systemd
would run it (specifiers expanded), works against the emulator: only the endpoint, the credentials
file and the paths of the directories systemd makes are substituted."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.emulator import EmulatorThread, SeedSnapshot, SeedVolume
from orchestrator.emulator.settings import DEFAULT_AK, DEFAULT_SK
from tests.helpers import NO_CREDENTIALS, records, snapshots_per_volume

UNITS = Path(__file__).resolve().parent.parent / "deploy" / "systemd"
INSTALLED = "/usr/local/bin/evs-snapshot"
VOLUMES = [f"5e1f0000-0000-4000-8000-00000000000{index}" for index in range(1, 4)]
OLD_RUN = "20260101T013000Z-0a0b0c"


def unit(name: str) -> list[tuple[str, str]]:
    """A unit file's ``Key=value`` lines, in order (keys repeat: ``ExecStart=``, ``Environment=``)."""
    out = []
    for line in (UNITS / name).read_text(encoding="utf-8").splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.append((key, value))
    return out


def expand(value: str, dirs: dict[str, Path]) -> str:
    """systemd's specifiers (``%S``, ``%E``, ``%d``, ``%%``) and ``$$``, with the test's directories."""
    known = {"S": str(dirs["state"]), "E": str(dirs["config"]), "d": str(dirs["credentials"]), "%": "%"}
    return re.sub(r"%(.)", lambda match: known[match.group(1)], value).replace("$$", "$")


def test_units_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify`` finds nothing wrong in the four units (the binary's path substituted)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    script = shutil.which("evs-snapshot", path=str(Path(sys.executable).parent))
    assert script is not None
    for path in UNITS.glob("evs-snapshot-*"):
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8").replace(INSTALLED, script))
    names = sorted(str(path) for path in tmp_path.glob("evs-snapshot-*"))
    assert len(names) == 4
    checked = subprocess.run(
        [analyze, "verify", *names], capture_output=True, text=True, timeout=60, check=False
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr == ""


def test_timers_are_persistent_and_spread() -> None:
    """Both timers catch up a missed run (``Persistent=true``) and spread their start."""
    for name in ("evs-snapshot-nightly.timer", "evs-snapshot-audit.timer"):
        keys = dict(unit(name))
        assert keys["Persistent"] == "true"
        assert keys["RandomizedDelaySec"]


def run_unit(name: str, dirs: dict[str, Path], url: str) -> list[int]:
    """Run a service's ``ExecStart=`` lines in order as systemd would (a ``-`` line's failure is ignored);
    the exit codes."""
    lines = unit(name)
    keys = dict(lines)
    assert keys["Type"] == "oneshot"
    assert keys["ProtectSystem"] == "strict"
    assert keys["LoadCredential"] == "aksk:/etc/evs-snapshot/credentials"
    env = {**os.environ, **NO_CREDENTIALS}
    env.pop("EVS_SNAPSHOT_LOCK_DIR", None)  # the unit sets it: the locks go to its state directory
    for key, value in lines:
        if key == "Environment":
            variable, _, setting = expand(value, dirs).partition("=")
            env[variable] = setting
        if key == "StateDirectory":
            for directory in value.split():
                (dirs["state"] / directory).mkdir(parents=True, exist_ok=True)
    # The endpoint: the SDK's per-region variable and the IAM endpoint, both the emulator.
    env["HUAWEICLOUD_SDK_REGION_EVS_CN_NORTH_4"] = url
    env["HUAWEICLOUD_SDK_IAM_ENDPOINT"] = url
    codes = []
    for key, value in lines:
        if key != "ExecStart":
            continue
        ignore = value.startswith("-")
        argv = shlex.split(expand(value.removeprefix("-"), dirs))
        ours = f"{shlex.quote(sys.executable)} -m orchestrator"
        argv = [arg.replace(INSTALLED, ours) for arg in argv]
        if argv[0] == ours:
            argv = [sys.executable, "-m", "orchestrator", *argv[1:]]
        done = subprocess.run(
            argv,
            cwd=expand(keys["WorkingDirectory"], dirs),
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert b"Traceback" not in done.stderr, done.stderr
        codes.append(done.returncode)
        if done.returncode != 0 and not ignore:
            break
    return codes


def test_exec_start_lines_run_against_the_emulator(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """The nightly unit prunes to 6 of the tool's snapshots per disk and makes the 7th; the audit then passes."""
    old = [
        SeedSnapshot(
            id=f"0d0e0000-0000-4000-8000-0000000000{day:02d}",
            volume_id=VOLUMES[0],
            created_at=f"2026-01-{day:02d}T01:30:00.000000",
            metadata={"evs_snapshot_run": OLD_RUN},
        )
        for day in range(1, 8)
    ]
    emu = emulator_thread(
        volumes=tuple(SeedVolume(volume_id=volume) for volume in VOLUMES),
        snapshots=tuple(old),
        creating_seconds=0,
        token=None,
    )
    dirs = {name: tmp_path / name for name in ("state", "config", "credentials")}
    for path in dirs.values():
        path.mkdir()
    (dirs["config"] / "evs-snapshot").mkdir()
    (dirs["config"] / "evs-snapshot" / "volumes.csv").write_text("volume_id\n" + "\n".join(VOLUMES) + "\n")
    (dirs["credentials"] / "aksk").write_text(f"[basic]\nak = {DEFAULT_AK}\nsk = {DEFAULT_SK}\n")

    assert run_unit("evs-snapshot-nightly.service", dirs, emu.url) == [0, 0]
    home = dirs["state"] / "evs-snapshot"
    (pruned,) = (home / "reports").glob("prune-*.jsonl")
    (nightly,) = (home / "reports").glob("nightly-*.jsonl")
    assert [record["snapshot_id"] for record in records(pruned) if record["outcome"] == "deleted"] == [
        old[0].id
    ]
    assert {record["outcome"] for record in records(nightly)} >= {"available"}
    run_id = records(nightly)[0]["run_id"]
    state = emu.state()
    assert snapshots_per_volume(state, run_id) == dict.fromkeys(VOLUMES, 1)
    assert snapshots_per_volume(state)[VOLUMES[0]] == 7
    # The locks lived where a run by hand as the unit's user takes them: its home is the StateDirectory.
    assert (home / ".cache" / "evs-snapshot" / "locks").is_dir()
    users = (UNITS / "evs-snapshot.sysusers.conf").read_text().splitlines()
    assert [line.split()[-1] for line in users if line.startswith("u evs-snapshot ")] == [
        "/var/lib/evs-snapshot"
    ]

    assert run_unit("evs-snapshot-audit.service", dirs, emu.url) == [0]
    metrics = (home / "metrics" / "evs_snapshot.prom").read_text()
    for command in ("prune", "create", "audit"):
        assert f'evs_snapshot_exit_code{{command="{command}"}} 0' in metrics
