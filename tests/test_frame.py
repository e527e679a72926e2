"""The one run frame: one tally and one resume book for both record types, one metrics writer with one
help text per metric, exit 3 for a closed route decided by the frame, and no command importing another."""

from __future__ import annotations

import ast
import io
import re
import signal
import types
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from orchestrator import metrics
from orchestrator.actions import FINAL, Action, ActionRecord
from orchestrator.config import Notify
from orchestrator.console import Console
from orchestrator.errors import Interrupted, ListingFailed
from orchestrator.frame import Closing, Frame, recording_aborts
from orchestrator.models import Outcome
from orchestrator.report import ResumeBook, RowOutcomes
from orchestrator.tally import Counting, Tally
from tests.helpers import ClosedRouter

COMMANDS = Path(__file__).resolve().parent.parent / "orchestrator" / "commands"


def action(outcome: Action, key: str = "snap-1", **fields: Any) -> ActionRecord:
    stamp = "2026-01-01T00:00:00Z"
    return ActionRecord(
        run_id="r", command="prune", key=key, outcome=outcome, started_at=stamp, finished_at=stamp, **fields
    )


def test_one_tally_counts_action_records() -> None:
    """An action run's records are counted by the same Tally: a planned record naming a blocker fails."""
    tally = Tally(counting=Counting.records("prune"))
    tally.add(action(Action.DELETED))
    assert tally.exit_code == 0
    tally.add(action(Action.PLANNED, "snap-2", error_code="SNAPSHOT_BUSY"))
    assert tally.exit_code == 1
    assert tally.render().splitlines()[:2] == [
        "prune: 2 records: 1 deleted, 1 planned",
        "errors: SNAPSHOT_BUSY x1",
    ]
    data = tally.to_dict()
    assert list(data) == ["outcomes", "error_codes", "notes", "requests_by_kind", "elapsed_s", "exit_code"]
    assert data["error_codes"] == [{"code": "SNAPSHOT_BUSY", "rows": 1}]


def test_an_action_run_with_nothing_to_do_succeeds_and_an_empty_create_run_does_not() -> None:
    """Nothing to prune is exit 0; a create run that counted no row is exit 1."""
    assert Tally(counting=Counting.records("cleanup")).exit_code == 0
    assert Tally().exit_code == 1


def test_one_resume_book_for_both_record_types(tmp_path: Path) -> None:
    """The action book is the create book's class: final outcomes are skipped, others looked at again."""
    book = ResumeBook.keyed({"a": Action.DELETED, "b": Action.FAILED}, FINAL)
    assert book.finished("a")
    assert not book.finished("b")
    assert not book.finished("c")
    assert book.outcome("b") is Action.FAILED
    assert ResumeBook.load(tmp_path / "none.jsonl") is None


def write_tally(path: Path, tally: Tally, *, command: str, exit_code: int) -> None:
    """What the frame writes to ``--metrics-file`` for a run's tally (``Frame`` and ``write_side_files``)."""
    families = metrics.tally_families(tally, command=command, throttled=0, also=Counter())
    metrics.write_families(path, families, command=command, exit_code=exit_code)


def test_one_help_text_per_metric(tmp_path: Path) -> None:
    """create, prune and audit write one file; each metric keeps one HELP line, whoever wrote it."""
    path = tmp_path / "evs.prom"
    write_tally(path, Tally(), command="create", exit_code=0)
    write_tally(path, Tally(counting=Counting.records("prune")), command="prune", exit_code=1)
    audited = metrics.audit_families(volumes=3, missing=1, groups_incomplete=0)
    metrics.write_families(path, audited, command="audit", exit_code=1)
    text = path.read_text()
    helps = re.findall(r"^# HELP (\S+) (.*)$", text, flags=re.MULTILINE)
    names = [name for name, _ in helps]
    assert len(names) == len(set(names)), text
    assert "evs_snapshot_last_success_timestamp_seconds" in names
    assert 'evs_snapshot_exit_code{command="prune"} 1\n' in text
    assert 'evs_snapshot_exit_code{command="create"} 0\n' in text
    assert 'evs_snapshot_audit_volumes_missing{command="audit"} 1\n' in text


async def test_a_closed_route_is_exit_3_in_the_frame(tmp_path: Path) -> None:
    """The frame, not the command, turns a closed route into exit 3, in the exit code and the metrics."""
    stderr = io.StringIO()
    closing = Closing(metrics_file=tmp_path / "m.prom", summary_json=tmp_path / "s.json")
    frame = Frame(command="prune", console=Console(stderr), report=str(tmp_path / "r.jsonl"), closing=closing)
    async with frame:
        frame.open_actions(source="m.csv", shape={}, resume=False, apply=True, nothing="nothing was deleted")
        frame.router = ClosedRouter()  # type: ignore[assignment]
        frame.write(action(Action.DELETED))
    assert frame.exit_code == 3
    assert "credentials refused by the endpoint" in stderr.getvalue()
    assert 'evs_snapshot_exit_code{command="prune"} 3' in (tmp_path / "m.prom").read_text()
    summary = orjson.loads((tmp_path / "s.json").read_bytes())
    assert summary["command"] == "prune"
    assert summary["exit_code"] == 3
    assert summary["outcomes"] == {"deleted": 1}
    assert summary["requests_by_kind"] == {"deletes": 1}


async def test_an_aborted_run_still_writes_exit_3(tmp_path: Path) -> None:
    """A RunAborted (a listing refused) leaves exit code 3 in the metrics, so the alert fires."""
    closing = Closing(metrics_file=tmp_path / "m.prom")
    with pytest.raises(ListingFailed):
        async with Frame(command="cleanup", console=Console(io.StringIO()), report="-", closing=closing):
            raise ListingFailed("cannot list the snapshots")
    assert 'evs_snapshot_exit_code{command="cleanup"} 3' in (tmp_path / "m.prom").read_text()


def test_create_rows_are_counted_as_before() -> None:
    """A create run's rows keep their own summary: N rows, then the rows of the manifest with a record."""
    tally = Tally(manifest_rows=2)
    tally.add_previous(Outcome.ACCEPTED, 1)
    assert tally.render().splitlines()[0] == "1 rows: 1 accepted (1 of 2 rows have a record)"
    assert tally.exit_code == 1  # row 2 has no record


def _code_literals(path: Path) -> list[str]:
    """The strings a module writes as code: its string constants and the literal parts of its f-strings,
    docstrings left out."""
    tree = ast.parse(path.read_text())
    documented = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, documented) and node.body and isinstance(node.body[0], ast.Expr)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def _uses_metric_prefix(path: Path) -> bool:
    """The module builds a metric's name from ``metrics.PREFIX`` (imported, or read off the module)."""
    tree = ast.parse(path.read_text())
    return any(
        (
            isinstance(node, ast.ImportFrom)
            and node.module == "orchestrator.metrics"
            and any(alias.name == "PREFIX" for alias in node.names)
        )
        or (isinstance(node, ast.Attribute) and node.attr == "PREFIX")
        for node in ast.walk(tree)
    )


def test_a_metric_and_the_limit_code_are_written_in_one_place() -> None:
    """Every metric's name and help text is in metrics.py (audit's too), and SNAPSHOT_LIMIT_REACHED is
    written once (models.LIMIT_REACHED): the runner, the tally and preflight import it."""
    package = COMMANDS.parent
    modules = sorted(package.rglob("*.py"))
    texts = {path: path.read_text() for path in modules}  # parsed only where the name is spelled out
    limit = [
        path.name
        for path in modules
        if "SNAPSHOT_LIMIT_REACHED" in texts[path] and "SNAPSHOT_LIMIT_REACHED" in _code_literals(path)
    ]
    assert limit == ["models.py"]
    naming = [
        str(path.relative_to(package))
        for path in modules
        if "PREFIX" in texts[path] and _uses_metric_prefix(path)
    ]
    assert naming == []


async def test_an_abort_inside_a_task_group_still_writes_exit_3(tmp_path: Path) -> None:
    """A RunAborted wrapped in a task group's exception group is found, and exit 3 written."""

    async def refused() -> None:
        raise ListingFailed("cannot list the snapshots")

    closing = Closing(metrics_file=tmp_path / "m.prom")
    frame = Frame(command="prune", console=Console(io.StringIO()), report="-", closing=closing)
    with pytest.raises(BaseExceptionGroup):
        async with frame, anyio.create_task_group() as group:
            group.start_soon(refused)
    assert 'evs_snapshot_exit_code{command="prune"} 3' in (tmp_path / "m.prom").read_text()


def test_another_error_writes_no_side_file(tmp_path: Path) -> None:
    """An error that is not an abort (a usage error, a bug) leaves the side files alone."""
    closing = Closing(metrics_file=tmp_path / "m.prom")
    with pytest.raises(ValueError, match="a bug"), recording_aborts(closing, "audit", Console(io.StringIO())):
        raise ValueError("a bug")
    assert not (tmp_path / "m.prom").exists()


async def test_a_side_file_that_cannot_be_written_is_said_and_changes_nothing(tmp_path: Path) -> None:
    """--summary-json under a file: the error is printed, the exit code stays the run's."""
    (tmp_path / "file").write_text("")
    stderr = io.StringIO()
    closing = Closing(summary_json=tmp_path / "file" / "s.json")
    async with Frame(command="cleanup", console=Console(stderr), report="-", closing=closing) as frame:
        pass
    assert frame.exit_code == 0
    assert "--summary-json: cannot write" in stderr.getvalue()


async def test_a_signal_stops_after_the_summary(tmp_path: Path) -> None:
    """A signal received in a drain phase raises Interrupted (143) once the summary is printed."""
    stderr = io.StringIO()
    with pytest.raises(Interrupted) as stopped:
        async with Frame(command="cleanup", console=Console(stderr), report="-") as frame:
            frame.signals.append(signal.SIGTERM)
    assert stopped.value.exit_code == 143
    assert "cleanup: 0 records: nothing to do" in stderr.getvalue()


async def test_a_drained_run_says_its_signal_in_the_side_files(tmp_path: Path) -> None:
    """A run that drained after SIGTERM exits 143, and --summary-json and --metrics-file say 143 too
    (they said 0: a prune stopped among its deletions counted as a success, last success moved)."""
    closing = Closing(metrics_file=tmp_path / "m.prom", summary_json=tmp_path / "s.json")
    with pytest.raises(Interrupted) as stopped:
        async with Frame(
            command="prune", console=Console(io.StringIO()), report="-", closing=closing
        ) as frame:
            frame.signals.append(signal.SIGTERM)
    assert stopped.value.exit_code == 143
    text = (tmp_path / "m.prom").read_text()
    assert 'evs_snapshot_exit_code{command="prune"} 143' in text
    assert metrics.LAST_SUCCESS not in text
    assert orjson.loads((tmp_path / "s.json").read_bytes())["exit_code"] == 143


def test_a_create_reports_rows_are_looked_up_one_by_one() -> None:
    """The create book's rows answer get and [] like a dict; a row without a record has no outcome."""
    rows = RowOutcomes()
    rows.set(3, Outcome.ACCEPTED)
    assert rows[3] is Outcome.ACCEPTED
    assert rows.get(2) is None
    with pytest.raises(KeyError):
        rows[2]


def test_without_a_loop_the_frame_ends_as_with_one(tmp_path: Path) -> None:
    """``with frame`` (a dry run, no event loop): the same summary, side files and exit code, a signal
    raising Interrupted after the summary, and an abort still writing exit code 3."""
    stderr = io.StringIO()
    closing = Closing(metrics_file=tmp_path / "m.prom", summary_json=tmp_path / "s.json")
    with Frame(
        command="prune", console=Console(stderr), report=str(tmp_path / "r.jsonl"), closing=closing
    ) as frame:
        frame.open_actions(source="m.csv", shape={}, resume=False, apply=True, nothing="nothing was deleted")
        frame.write(action(Action.DELETED))
    assert frame.exit_code == 0
    assert orjson.loads((tmp_path / "s.json").read_bytes())["outcomes"] == {"deleted": 1}
    written = [orjson.loads(line) for line in (tmp_path / "r.jsonl").read_bytes().splitlines()]
    assert [line.get("outcome") for line in written] == [None, "deleted", "ended"]  # header, record, end
    stopping = Frame(command="cleanup", console=Console(stderr), report="-")
    with pytest.raises(Interrupted) as stopped, stopping:
        stopping.signals.append(signal.SIGTERM)
    assert stopped.value.exit_code == 143
    assert "cleanup: 0 records: nothing to do" in stderr.getvalue()
    aborted = Frame(command="cleanup", console=Console(stderr), report="-", closing=closing)
    with pytest.raises(ListingFailed), aborted:
        raise ListingFailed("cannot list the snapshots")
    assert 'evs_snapshot_exit_code{command="cleanup"} 3' in (tmp_path / "m.prom").read_text()


@types.coroutine
def _suspend() -> Any:
    yield


async def _pausing_exit(*_exc: object) -> None:
    await _suspend()


def test_without_a_loop_the_frame_refuses_what_needs_one() -> None:
    """A frame that notifies, or that holds an asynchronous context, cannot be left without a loop."""
    notify = Closing(notify=Notify(ping_url="http://127.0.0.1:1/ping"))
    notifying = Frame(command="create", console=Console(io.StringIO()), report="-", closing=notify)
    with pytest.raises(RuntimeError, match="event loop"), notifying:
        pass
    frame = Frame(command="create", console=Console(io.StringIO()), report="-")
    with pytest.raises(RuntimeError, match="without an event loop"), frame:
        frame._stack.push_async_exit(_pausing_exit)  # what ``frame.enter`` would leave there
