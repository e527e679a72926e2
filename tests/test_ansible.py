"""deploy/ansible/pre-maintenance.yml run by ``ansible-playbook`` against the emulator (connection local):
the success path (select, validate, create --wait, cleanup) and the rescue path (detach, rollback).

One ``ansible-playbook`` process runs both (the playbook imported twice, each with its own variables):
its start-up and each task's module process cost CPU, the emulator's disks are the same for both."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from orchestrator.emulator import EmulatorThread, SeedVolume
from tests.helpers import AKSK_ENV, header, last_per_row

PLAYBOOK = Path(__file__).resolve().parent.parent / "deploy" / "ansible" / "pre-maintenance.yml"
WEB, DB, OTHER = (f"7c3e0000-0000-4000-8000-0000000000{index:02d}" for index in (1, 2, 3))
IDS = [f"7d1a0000-0000-4000-8000-0000000000{index:02d}" for index in range(1, 6)]
DISKS = (
    SeedVolume(volume_id=IDS[0], server_id=WEB, device="/dev/vda", bootable=True),
    SeedVolume(volume_id=IDS[1], server_id=WEB, device="/dev/vdb"),
    SeedVolume(volume_id=IDS[2], server_id=DB, device="/dev/vda", bootable=True),
    SeedVolume(volume_id=IDS[3], server_id=OTHER, device="/dev/vda"),  # a server outside the group
    SeedVolume(volume_id=IDS[4]),
)
MAINTAINED = IDS[:3]
INVENTORY = f"""[maintenance]
web1 ecs_server_id={WEB}
db1 ecs_server_id={DB}

[elsewhere]
other1 ecs_server_id={OTHER}
"""
# The detach is a lookup, run by ansible itself: a `command` task would start one more module process.
DETACH = """- name: Detach the disks (the emulator's stand-in for the compute API)
  ansible.builtin.debug:
    msg: "{{ lookup('ansible.builtin.pipe', detach_command) }}"
"""
DETACH_SCRIPT = (
    "import sys, http.client, urllib.parse\n"
    "url = urllib.parse.urlsplit(sys.argv[1])\n"
    "for volume in sys.argv[2].split(','):\n"
    "    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)\n"
    "    connection.request('POST', f'/_emulator/volumes/{volume}/detach', b'{}', {'Content-Type': 'application/json'})\n"
    "    assert connection.getresponse().status == 200\n"
    "    print(volume, 'detached')\n"
)
SUCCESS, RESCUE = "good", "bad"


def playbook_of_both(folder: Path, url: str) -> Path:
    """A playbook that imports the one under test twice: the success path, then the rescue path (a
    failed play ends the run, so it comes last). Each has its own files under ``folder``."""
    detach = folder / "detach.yml"
    detach.write_text(DETACH, encoding="utf-8")
    rescue = {
        "rehearse_failure": True,
        "evs_detach_tasks": str(detach),
        "detach_command": shlex.join(
            [sys.executable, "-I", "-S", "-c", DETACH_SCRIPT, url, ",".join(MAINTAINED)]
        ),
    }
    plays = []
    for path, extra in ((SUCCESS, {}), (RESCUE, rescue)):
        (folder / path / "reports").mkdir(parents=True)
        variables = {"change_id": "chg-1042", "evs_workdir": str(folder / path / "reports"), **extra}
        plays.append({"import_playbook": str(PLAYBOOK), "vars": variables})
    both = folder / "both.yml"
    both.write_bytes(orjson.dumps(plays))  # JSON is YAML
    return both


def start_playbook(folder: Path, url: str) -> subprocess.Popen[str]:
    """``ansible-playbook`` on both paths of the playbook, its files under ``folder``, the endpoint the
    emulator."""
    folder.mkdir(exist_ok=True)
    (folder / "inventory.ini").write_text(INVENTORY, encoding="utf-8")
    (folder / "runtime").mkdir()
    variables = {
        "evs_snapshot": str(Path(sys.executable).parent / "evs-snapshot"),
        "ansible_python_interpreter": sys.executable,
    }
    env = {
        **os.environ,
        **AKSK_ENV,
        "HUAWEICLOUD_SDK_REGION_EVS_CN_NORTH_4": url,  # the endpoint: the SDK's per-region variable
        "HUAWEICLOUD_SDK_IAM_ENDPOINT": url,
        "EVS_SNAPSHOT_LOCK_DIR": str(folder / "locks"),  # the two paths run one after the other
        "ANSIBLE_HOME": str(folder / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(folder / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_PIPELINING": "1",  # one process per task instead of four
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_ENABLED": "ini",  # the inventory's one format, not every plugin in turn
        "PYTHONWARNINGS": "ignore",
    }
    playbook = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    assert playbook is not None
    return subprocess.Popen(
        [
            playbook,
            "-i",
            "inventory.ini",
            str(playbook_of_both(folder, url)),
            "-e",
            orjson.dumps(variables).decode(),
        ],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_snapshots(state: dict[str, Any], run_id: str) -> Counter[str]:
    return Counter(
        snapshot["volume_id"]
        for snapshot in state["snapshots"]
        if snapshot["metadata"].get("evs_snapshot_run") == run_id and snapshot["status"] != "deleting"
    )


def test_playbook_success_and_rescue_paths(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """Success: the group's disks get one snapshot each, deleted after the maintenance. Rescue: they are
    detached and rolled back to that snapshot, which is kept, and the play fails."""
    emu = emulator_thread(
        volumes=DISKS, creating_seconds=0, rollback_seconds=0, deleting_seconds=0, token=None
    )
    run = start_playbook(tmp_path, emu.url)
    out, _ = run.communicate(timeout=100)
    assert run.returncode == 2, out  # ansible-playbook: a task failed (the rescue path's play)
    _, good_out, bad_out = out.split("PLAY [EVS snapshots around a maintenance window]")
    state = emu.state()

    assert "fatal:" not in good_out, good_out  # the success path's play: no task failed
    reports = tmp_path / SUCCESS / "reports"
    created = last_per_row(reports / "chg-1042.jsonl")
    assert sorted(record["volume_id"] for record in created.values()) == MAINTAINED
    assert {record["outcome"] for record in created.values()} == {"available"}
    good_run = header(reports / "chg-1042.jsonl")["run_id"]
    assert run_snapshots(state, good_run) == Counter()  # cleaned up
    assert state["requests"]["DELETE /v2/{project_id}/cloudsnapshots/{snapshot_id}"] == {"202": 3}
    assert "Roll every disk back" not in good_out

    assert "rehearsal: the maintenance failed" in bad_out
    assert "its disks were rolled back" in bad_out
    reports = tmp_path / RESCUE / "reports"
    run_id = header(reports / "chg-1042.jsonl")["run_id"]
    assert run_id != good_run
    kept = {
        snapshot["id"]: snapshot["volume_id"]
        for snapshot in state["snapshots"]
        if snapshot["metadata"].get("evs_snapshot_run") == run_id
    }
    assert sorted(kept.values()) == MAINTAINED  # kept: no cleanup after a failed maintenance
    # Every rollback is of this run's snapshots: the success path rolled nothing back.
    assert sorted((r["snapshot_id"], r["volume_id"]) for r in state["rollbacks"]) == sorted(kept.items())
    rolled = last_per_row(reports / "chg-1042-rollback.jsonl")
    assert {record["outcome"] for record in rolled.values()} == {"rolled_back"}
    assert "Delete this window's snapshots" not in bad_out
