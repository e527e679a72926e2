"""deploy/ansible/pre-maintenance.yml run by ``ansible-playbook`` against the emulator (connection local):
the success path (select, validate, create --wait, cleanup) and the rescue path (detach, rollback)."""

from __future__ import annotations

import os
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
DETACH = """- name: Detach the disks (the emulator's stand-in for the compute API; one task, as ansible is slow)
  ansible.builtin.command:
    argv: ["{{ ansible_python_interpreter }}", "-c", "{{ detach_script }}", "{{ emulator_url }}", "{{ detach_ids | join(',') }}"]
"""
DETACH_SCRIPT = (
    "import sys, urllib.request\n"
    "for volume in sys.argv[2].split(','):\n"
    "    url = f'{sys.argv[1]}/_emulator/volumes/{volume}/detach'\n"
    "    request = urllib.request.Request(url, data=b'{}', method='POST', headers={'Content-Type': 'application/json'})\n"
    "    urllib.request.urlopen(request, timeout=10).close()\n"
)


def start_playbook(folder: Path, url: str, **extra: Any) -> subprocess.Popen[str]:
    """``ansible-playbook`` on the playbook, its files under ``folder``, the endpoint the emulator."""
    folder.mkdir()
    (folder / "inventory.ini").write_text(INVENTORY, encoding="utf-8")
    (folder / "reports").mkdir()
    (folder / "runtime").mkdir()
    variables = {
        "change_id": "chg-1042",
        "evs_workdir": str(folder / "reports"),
        "evs_snapshot": str(Path(sys.executable).parent / "evs-snapshot"),
        "ansible_python_interpreter": sys.executable,
        **extra,
    }
    env = {
        **os.environ,
        **AKSK_ENV,
        "HUAWEICLOUD_SDK_REGION_EVS_CN_NORTH_4": url,  # the endpoint: the SDK's per-region variable
        "HUAWEICLOUD_SDK_IAM_ENDPOINT": url,
        # Each run its own lock directory: the two runs' manifests have the same content (one lock).
        "XDG_RUNTIME_DIR": str(folder / "runtime"),
        "ANSIBLE_HOME": str(folder / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(folder / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_PIPELINING": "1",  # one process per task instead of four
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "PYTHONWARNINGS": "ignore",
    }
    playbook = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    assert playbook is not None
    return subprocess.Popen(
        [playbook, "-i", "inventory.ini", str(PLAYBOOK), "-e", orjson.dumps(variables).decode()],
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
    fast = {"creating_seconds": 0, "rollback_seconds": 0, "deleting_seconds": 0, "token": None}
    good_emu = emulator_thread(volumes=DISKS, **fast)
    bad_emu = emulator_thread(volumes=DISKS, **fast)
    # Both runs at once: ansible's start-up dominates, and the two paths share nothing.
    good = start_playbook(tmp_path / "good", good_emu.url)
    detach = tmp_path / "detach.yml"
    detach.write_text(DETACH, encoding="utf-8")
    bad = start_playbook(
        tmp_path / "bad",
        bad_emu.url,
        rehearse_failure=True,
        evs_detach_tasks=str(detach),
        emulator_url=bad_emu.url,
        detach_ids=MAINTAINED,
        detach_script=DETACH_SCRIPT,
    )
    good_out, _ = good.communicate(timeout=100)
    bad_out, _ = bad.communicate(timeout=100)

    assert good.returncode == 0, good_out
    reports = tmp_path / "good" / "reports"
    created = last_per_row(reports / "chg-1042.jsonl")
    assert sorted(record["volume_id"] for record in created.values()) == MAINTAINED
    assert {record["outcome"] for record in created.values()} == {"available"}
    run_id = header(reports / "chg-1042.jsonl")["run_id"]
    state = good_emu.state()
    assert run_snapshots(state, run_id) == Counter()  # cleaned up
    assert state["requests"]["DELETE /v2/{project_id}/cloudsnapshots/{snapshot_id}"] == {"202": 3}
    assert state["rollbacks"] == []
    assert "Roll every disk back" not in good_out

    assert bad.returncode == 2, bad_out  # ansible-playbook: a task failed
    assert "rehearsal: the maintenance failed" in bad_out
    assert "its disks were rolled back" in bad_out
    reports = tmp_path / "bad" / "reports"
    run_id = header(reports / "chg-1042.jsonl")["run_id"]
    state = bad_emu.state()
    kept = {
        snapshot["id"]: snapshot["volume_id"]
        for snapshot in state["snapshots"]
        if snapshot["metadata"].get("evs_snapshot_run") == run_id
    }
    assert sorted(kept.values()) == MAINTAINED  # kept: no cleanup after a failed maintenance
    assert sorted((r["snapshot_id"], r["volume_id"]) for r in state["rollbacks"]) == sorted(kept.items())
    rolled = last_per_row(reports / "chg-1042-rollback.jsonl")
    assert {record["outcome"] for record in rolled.values()} == {"rolled_back"}
    assert "Delete this window's snapshots" not in bad_out
