"""Whose a snapshot is, judged once (``ownership``): the tool's, a run's, a row's; one code per reason."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.api import evs
from orchestrator.api.views import Snapshot
from orchestrator.errors import UsageError
from orchestrator.ownership import (
    BACKUP_SNAPSHOT,
    NOT_THIS_RUN,
    OTHER_VOLUME,
    Ownership,
    check_name_prefix,
    of_run,
    refusal,
)

DISK = "0e3b7a8e-3f55-4a8a-9f0e-7c2d1d7b1a01"
OTHER = "0e3b7a8e-3f55-4a8a-9f0e-7c2d1d7b1a02"


def snap(name: str | None = "pre-maint", marker: str | None = "run-1", volume_id: str = DISK) -> Snapshot:
    data: dict[str, Any] = {"id": "s-1", "name": name, "volume_id": volume_id.upper()}
    if marker is not None:
        data["metadata"] = {evs.RUN_MARKER_KEY: marker}
    return Snapshot.parse(data)


@pytest.mark.parametrize(
    ("snapshot", "named", "code"),
    [
        (snap(name="autobk_snapshot_1"), True, BACKUP_SNAPSHOT),
        (snap(name="manualbk_snapshot_1", marker="run-1"), True, BACKUP_SNAPSHOT),
        (snap(marker=None), True, NOT_THIS_RUN),
        (snap(marker=""), True, NOT_THIS_RUN),
        (snap(marker="run-2"), True, NOT_THIS_RUN),
        (snap(volume_id=OTHER), True, OTHER_VOLUME),
        (snap(), False, OTHER_VOLUME),
        (snap(), True, None),
    ],
)
def test_each_reason_has_one_code(snapshot: Snapshot, named: bool, code: str | None) -> None:
    """Backup-made, another run's (or none), another disk's: one code each, checked in that order."""
    found = refusal(snapshot, run_id="run-1", volume_id=DISK, named=named)
    assert (None if found is None else found.code) == code
    if found is not None:
        assert snapshot.id in found.message


def test_the_refusal_names_whose_and_which_disk() -> None:
    """The message says whose marker the snapshot carries, and which disk it is of."""
    other_run = refusal(snap(marker="run-2"), run_id="run-1", volume_id=DISK)
    assert other_run is not None
    assert "run run-2" in other_run.message
    unmarked = refusal(snap(marker=None), run_id="run-1", volume_id=DISK)
    assert unmarked is not None
    assert "no run of this tool" in unmarked.message
    elsewhere = refusal(snap(volume_id=OTHER), run_id="run-1", volume_id=DISK.upper())
    assert elsewhere is not None
    assert OTHER in elsewhere.message
    assert refusal(snap(), run_id="run-1", volume_id=DISK.upper()) is None  # disk ids compare lower case


def test_of_run_is_the_marker_and_never_a_backup() -> None:
    """A run's snapshot carries its marker; a backup-made one that copied the marker is not the run's."""
    assert of_run(snap(), "run-1")
    assert not of_run(snap(), "run-2")
    assert not of_run(snap(marker=None), "run-1")
    assert not of_run(snap(name="autobk_snapshot_x"), "run-1")


def test_the_tool_owns_marked_or_prefixed_never_backups() -> None:
    """Any run's well-formed marker owns; a name prefix owns only when given; a backup name never does."""
    assert Ownership().owns(snap(marker="20261207T010203Z-0a1b2c"))
    fullwidth = "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in "20261207T010203Z") + "-0a1b2c"
    assert not Ownership().owns(snap(marker=fullwidth))  # digits of another script: not a run id
    assert not Ownership().owns(snap(marker="20261207T010203Z-0a1b2c\n"))
    assert not Ownership().owns(snap(marker=None))
    assert Ownership("pre-").owns(snap(marker=None))
    assert not Ownership("pre-").owns(snap(name="other", marker=None))
    assert not Ownership("autobk").owns(snap(name="autobk_snapshot_1"))
    assert not Ownership().owns(snap(name="manualbk_snapshot_1"))


@pytest.mark.parametrize("prefix", ["", "  ", "autobk_snapshot_", "manualbk_snapshot_x"])
def test_a_name_prefix_that_would_own_too_much_is_refused(prefix: str) -> None:
    """--name-prefix: empty owns everything, a backup prefix names backups: both exit 2."""
    with pytest.raises(UsageError):
        check_name_prefix(prefix)
    assert check_name_prefix(None) is None
    assert check_name_prefix("autobk") == "autobk"
