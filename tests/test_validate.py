"""``validate`` offline: the same row rules as ``create --dry-run`` with the same options."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.helpers import PROJECT, cli_args, csv_manifest, invoke, validated_and_planned, volume_ids


def test_offline_validate_with_an_endpoint_needs_no_region(
    write: Callable[..., Path], tmp_path: Path
) -> None:
    """Rows without a region pass offline ``validate --endpoint`` as they pass ``create --dry-run
    --endpoint`` (every row goes to the endpoint); without --endpoint or --region they are MISSING_REGION."""
    manifest = csv_manifest(write, volume_ids(2, seed=901))
    where = {"endpoint": "http://127.0.0.1:1", "project_id": PROJECT}
    checked, planned = validated_and_planned(manifest, tmp_path / "r.jsonl", **where)
    assert checked == (0, "2 rows: 2 would be sent, 0 with problems")
    assert planned == (0, {1: ("planned", None), 2: ("planned", None)})
    regionless = invoke(cli_args("validate", manifest, project_id=PROJECT))
    assert regionless.exit_code == 1, regionless.output
    assert (
        regionless.stdout.splitlines()[-1] == "2 rows: 0 would be sent, 2 with problems (MISSING_REGION x2)"
    )
