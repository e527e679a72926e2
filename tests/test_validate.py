"""``validate`` offline: the same row rules as ``create --dry-run`` with the same options."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.helpers import PROJECT, cli_args, csv_manifest, invoke, records, volume_ids


def test_offline_validate_with_an_endpoint_needs_no_region(
    write: Callable[..., Path], tmp_path: Path
) -> None:
    """Rows without a region pass offline ``validate --endpoint`` as they pass ``create --dry-run
    --endpoint`` (every row goes to the endpoint); without --endpoint or --region they are MISSING_REGION."""
    manifest = csv_manifest(write, volume_ids(2, seed=901))
    where = {"endpoint": "http://127.0.0.1:1", "project_id": PROJECT}
    checked = invoke(cli_args("validate", manifest, **where))
    assert checked.exit_code == 0, checked.output
    assert checked.stdout.splitlines()[-1] == "2 rows: 2 would be sent, 0 with problems"
    report = tmp_path / "r.jsonl"
    planned = invoke(cli_args("create", manifest, report=report, dry_run=True, **where))
    assert planned.exit_code == 0, planned.output
    assert [r["outcome"] for r in records(report)] == ["planned", "planned"]
    regionless = invoke(cli_args("validate", manifest, project_id=PROJECT))
    assert regionless.exit_code == 1, regionless.output
    assert (
        regionless.stdout.splitlines()[-1] == "2 rows: 0 would be sent, 2 with problems (MISSING_REGION x2)"
    )
