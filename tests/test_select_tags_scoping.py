"""``select --tag`` does not depend on the tag search's enterprise-project scoping: tags are matched on
the volume list (``all_granted_eps``), and cross-checked with the tag search; when they disagree the
run stops with exit 3 and writes no manifest (issue 20)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from click.testing import Result

from orchestrator.emulator import EmulatorThread, SeedVolume
from tests.helpers import PROJECT, cli_args, invoke, volume_ids

DEFAULT_EP, OTHER_EP, UNTAGGED = volume_ids(3, seed=2005)
DISKS = (
    SeedVolume(volume_id=DEFAULT_EP, tags={"env": "prod"}),
    SeedVolume(volume_id=OTHER_EP, tags={"env": "prod"}, enterprise_project_id="ep-5a6b7c8d"),
    SeedVolume(volume_id=UNTAGGED, tags={"env": "dev"}, enterprise_project_id="ep-5a6b7c8d"),
)


def select(emu: EmulatorThread, out: Path) -> Result:
    return invoke(cli_args("select", "--tag", "env=prod", endpoint=emu.url, project_id=PROJECT, output=out))


def test_a_scoped_tag_search_stops_select_instead_of_leaving_disks_out(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """--tags-default-ep-only: the tag search misses the disk of another enterprise project; select
    exits 3, names that disk and writes nothing (it used to write a manifest without it, exit 0)."""
    emu = emulator_thread(volumes=DISKS, tags_default_ep_only=True)
    out = tmp_path / "m.csv"
    result = select(emu, out)
    assert result.exit_code == 3, result.output + result.stderr
    told = result.stderr
    assert "TAGS_DISAGREE" in told
    assert OTHER_EP in told
    assert "enterprise project" in told
    assert "Traceback" not in told
    assert not out.exists()


def test_an_unscoped_tag_search_agrees(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """Without the switch both agree: the manifest holds both tagged disks, whatever their enterprise project."""
    emu = emulator_thread(volumes=DISKS)
    out = tmp_path / "m.csv"
    result = select(emu, out)
    assert result.exit_code == 0, result.output + result.stderr
    rows = out.read_text().splitlines()[1:]
    assert {row.split(",", 1)[0] for row in rows} == {DEFAULT_EP, OTHER_EP}
