"""An action run (prune, cleanup, rollback, hold, release) that did not reach its end reads as unfinished.

The frame writes an ``ended`` line when the command's work came to its end (nothing raised, no signal,
no route closed); ``summary`` of a report whose header says so (``ends``) and whose last run has no end
line after its last record says it in one line, with the command that finishes the run, and exits 1, in
text, JSON and markdown. Reports here are written through the frame, without an event loop or a cloud.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestrator.actions import Action, ActionRecord
from orchestrator.console import Console
from orchestrator.errors import Interrupted, ListingFailed
from orchestrator.frame import Frame
from tests.helpers import ClosedRouter, invoke, lines

STAMP = "2026-12-01T00:00:00.000Z"
PRUNE_SHAPE = {
    "keep_last": "1",
    "keep_within": "None",
    "allow_none": "False",
    "name_prefix": "",
    "digest": "",
}


def acted(
    path: Path,
    command: str,
    outcomes: list[Action],
    *,
    shape: dict[str, str] | None = None,
    source: str = "m.csv",
    resume: bool = False,
    stop: str | None = None,
    first: int = 1,
    apply: bool = True,
) -> None:
    """One run of ``command`` (``apply``: with --apply) writing a record of each outcome (``sending``: a
    journal line, of the key of the next record) through the frame; ``stop``: how it did not reach its
    end (``signal``: drained after SIGTERM, ``error``: a listing refused, ``route``: a route closed),
    else it ends; keys are numbered from ``first``."""
    frame = Frame(command=command, console=Console(io.StringIO()), report=str(path))
    with contextlib.suppress(Interrupted, ListingFailed), frame:
        frame.open_actions(
            source=source, shape=shape or {}, resume=resume, apply=apply, nothing="nothing was done"
        )
        index = first
        for outcome in outcomes:
            key = f"row:{index}" if command == "rollback" else f"snap-{index}"
            index += outcome is not Action.SENDING  # a send's line and the record of its end share a key
            record = ActionRecord(
                run_id=frame.run_id,
                command=command,
                key=key,
                outcome=outcome,
                started_at=STAMP,
                finished_at=STAMP,
            )
            (frame.journal if outcome is Action.SENDING else frame.write)(record)
        if stop == "signal":
            frame.signals.append(signal.SIGTERM)
        elif stop == "route":
            frame.router = ClosedRouter()  # type: ignore[assignment]
        elif stop == "error":
            raise ListingFailed("cannot list the snapshots")


def summaries(path: Path) -> tuple[Any, dict[str, Any], Any]:
    """``summary`` of ``path`` as text, JSON (parsed) and markdown."""
    text = invoke(["summary", str(path)])
    data = invoke(["summary", str(path), "--format", "json"])
    block = invoke(["summary", str(path), "--format", "markdown"])
    assert text.exit_code == data.exit_code == block.exit_code
    return text, orjson.loads(data.stdout), block


DELETED, PLANNED, SENDING = Action.DELETED, Action.PLANNED, Action.SENDING


@pytest.mark.parametrize(
    ("command", "outcomes", "stop", "counts", "finish"),
    [
        pytest.param(
            "prune",
            [DELETED] * 5,
            "signal",
            "prune: 5 records: 5 deleted",
            "evs-snapshot prune m.csv --keep-last 1 --apply --resume --report {report}`",
            id="prune-drained",
        ),
        pytest.param(
            "cleanup",
            [DELETED, DELETED],
            "error",
            "cleanup: 2 records: 2 deleted",
            "evs-snapshot cleanup m.csv --apply --resume --report {report}` with the run's "
            "--include-held/--project-id, if it had them",
            id="cleanup-aborted",
        ),
        pytest.param(
            "cleanup",
            [DELETED],
            "route",
            "cleanup: 1 records: 1 deleted",
            "evs-snapshot cleanup m.csv --apply --resume --report {report}`",
            id="cleanup-route-closed",
        ),
        pytest.param(
            "rollback",
            [Action.ROLLED_BACK, SENDING],
            "signal",
            "rollback: 1 records: 1 rolled_back",
            "evs-snapshot rollback m.csv --rows 1-2,5 --volume a --volume b --apply --resume --report {report}`",
            id="rollback-drained",
        ),
        pytest.param(
            "rollback",
            [SENDING, Action.ROLLED_BACK] * 3,
            "signal",
            "rollback: 3 records: 3 rolled_back",
            "evs-snapshot rollback m.csv --rows 1-2,5 --volume a --volume b --apply --resume --report {report}`",
            id="rollback-drained-after-its-sends",
        ),
        pytest.param(
            "prune",
            [PLANNED, PLANNED],
            "error",
            "prune: 2 records: 2 planned",
            "evs-snapshot prune m.csv --keep-last 1 --resume --report {report}`",
            id="prune-plan-stopped",
        ),
    ],
)
def test_a_run_stopped_before_its_end_reads_unfinished(
    tmp_path: Path, command: str, outcomes: list[Action], stop: str, counts: str, finish: str
) -> None:
    """An action run drained by a signal, stopped by an error or by a closed route: its records are counted
    as before, and one more line says the run did not end and how to finish it (a plan: without --apply),
    in text, JSON and markdown; exit 1."""
    path = tmp_path / "r.jsonl"
    shapes = {"prune": PRUNE_SHAPE, "rollback": {"rows": "1-2,5", "volumes": "a,b"}}
    acted(path, command, outcomes, stop=stop, shape=shapes.get(command, {}), apply=PLANNED not in outcomes)
    assert lines(path)[-1]["outcome"] != "ended"
    text, data, block = summaries(path)
    assert text.exit_code == 1, text.output
    assert text.stdout.splitlines()[0] == counts
    written = len(outcomes)
    said = f"unfinished: the last {command} run of this report stopped after {written} line"
    assert said in text.stdout
    assert finish.format(report=path.resolve()) in text.stdout
    (line,) = data["unfinished"]
    assert line.startswith(said)
    assert line in data["notes"]
    assert data["exit_code"] == 1
    assert f"- note: {line}\n" in block.stdout
    assert "- exit code: 1\n" in block.stdout


@pytest.mark.no_cover
def test_a_run_that_ended_reads_as_before_and_a_resume_decides_again(tmp_path: Path) -> None:
    """A run that ended (exit 0 or 1) reads as before; a killed --resume of it is unfinished again, and a
    --resume that ends makes it finished."""
    path = tmp_path / "r.jsonl"
    acted(path, "prune", [DELETED, Action.FAILED], shape=PRUNE_SHAPE)
    assert lines(path)[-1]["outcome"] == "ended"
    text, data, block = summaries(path)
    assert text.exit_code == 1  # a failed deletion, as before
    assert "unfinished" not in text.stdout + block.stdout
    assert "unfinished" not in data
    acted(path, "prune", [DELETED], shape=PRUNE_SHAPE, resume=True, stop="signal", first=2)
    stopped = invoke(["summary", str(path)])
    assert stopped.exit_code == 1
    assert "unfinished: the last prune run of this report stopped after 1 line (" in stopped.stdout
    acted(path, "prune", [], shape=PRUNE_SHAPE, resume=True)
    finished = invoke(["summary", str(path)])
    assert finished.exit_code == 0, finished.output
    assert finished.stdout.splitlines()[0] == "prune: 2 records: 2 deleted"
    assert "unfinished" not in finished.stdout
    assert [line.get("outcome") for line in lines(path)].count("ended") == 2


def test_the_command_names_a_source_given_relative_by_its_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manifest given as ``m.csv`` from its folder is recorded absolute: the command summary prints
    works from any folder (run elsewhere, ``m.csv`` exited 2; found by hostile11b)."""
    (tmp_path / "m.csv").write_text("volume_id\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "r.jsonl"
    acted(path, "prune", [DELETED], shape=PRUNE_SHAPE, stop="signal")
    monkeypatch.chdir("/")
    said = invoke(["summary", str(path)]).stdout
    assert f"`evs-snapshot prune {tmp_path / 'm.csv'} --keep-last 1 --apply --resume" in said


def test_a_report_written_before_the_end_line_reads_as_before(tmp_path: Path) -> None:
    """A report whose header lacks the flag (written before end lines existed) is not judged by them:
    a run stopped after five deletions reads, as before, "5 deleted" and exit 0."""
    path = tmp_path / "r.jsonl"
    acted(path, "prune", [DELETED] * 5, shape=PRUNE_SHAPE, stop="signal")
    header, *rest = path.read_bytes().splitlines(keepends=True)
    old = orjson.loads(header)
    del old["ends"]
    path.write_bytes(orjson.dumps(old) + b"\n" + b"".join(rest))
    text, data, _ = summaries(path)
    assert text.exit_code == 0, text.output
    assert "unfinished" not in text.stdout
    assert (data["notes"], "unfinished" in data) == ([], False)


def test_a_report_on_standard_output_has_no_end_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Standard output is never resumed: its header carries no flag and no end line is written."""
    acted(Path("-"), "cleanup", [DELETED])
    out = [orjson.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    assert "ends" not in out[0]
    assert [line.get("outcome") for line in out[1:]] == ["deleted"]


def test_an_end_line_that_cannot_be_written_is_said_and_leaves_the_run_unfinished(tmp_path: Path) -> None:
    """The report fills up just as the run ends: the error is said, the run's exit stays 0, and summary
    reads the run as unfinished (its records are whole)."""
    path = tmp_path / "r.jsonl"
    stderr = io.StringIO()
    full = os.open("/dev/full", os.O_WRONLY)
    frame = Frame(command="release", console=Console(stderr), report=str(path))
    with frame:
        frame.open_actions(
            source="--snapshot", shape={"snapshots": "s-1"}, resume=False, apply=False, nothing="-"
        )
        assert frame.writer is not None
        real, frame.writer.fd = frame.writer.fd, full
    os.close(real)
    assert frame.exit_code == 0
    assert "No space left on device" in stderr.getvalue()
    assert "`summary` reads the run as unfinished" in stderr.getvalue()
    result = invoke(["summary", str(path)])
    assert result.exit_code == 1
    assert "stopped before acting" in result.stdout
    # the header says the run planned: the command plans, and nothing is left to guess
    assert f"`evs-snapshot release --snapshot s-1 --resume --report {path.resolve()}`\n" in result.stdout
    block = invoke(["summary", str(path), "--format", "markdown"]).stdout  # its follow-up plans too
    assert f"evs-snapshot release --snapshot s-1 --resume --report {path.resolve()}\n" in block
    assert "--apply --resume" not in block


@pytest.mark.parametrize("apply", [True, False])
def test_a_run_stopped_before_acting_is_finished_in_the_mode_its_header_records(
    tmp_path: Path, apply: bool
) -> None:
    """A run stopped before any record that tells: the header's ``apply`` says whether the finishing command
    applies, without a hedge; a header written before the field keeps the hedge (its records do not
    tell), and its command plans."""
    path = tmp_path / "r.jsonl"
    acted(path, "cleanup", [], stop="signal", apply=apply)
    assert lines(path)[0]["apply"] is apply
    said = invoke(["summary", str(path)]).stdout
    finish = f"`evs-snapshot cleanup m.csv{' --apply' if apply else ''} --resume --report {path.resolve()}`"
    assert (
        f"stopped before acting (a signal, a closed route, a crash or a kill), so what it still had to do has no record; finish it with {finish}"
        in said
    )
    assert "if the run was applying" not in said
    header, *rest = path.read_bytes().splitlines(keepends=True)
    old = orjson.loads(header)
    del old["apply"]
    path.write_bytes(orjson.dumps(old) + b"\n" + b"".join(rest))
    said = invoke(["summary", str(path)]).stdout
    assert (
        f"`evs-snapshot cleanup m.csv --resume --report {path.resolve()}` with the run's "
        "--include-held/--project-id, if it had them (with --apply if the run was applying: its records do "
        "not tell)"
    ) in said


def test_a_plan_resuming_a_report_a_run_applied_to_does_not_finish_it(tmp_path: Path) -> None:
    """An --apply that stopped, then a plan --resume that runs to its end: the plan writes no end line, so
    summary still reads the report unfinished (exit 1) and its command applies; an --apply --resume that
    ends finishes it. A plan resuming a plan, and an --apply resuming a plan, end as before."""
    path = tmp_path / "r.jsonl"
    acted(path, "prune", [DELETED], shape=PRUNE_SHAPE, stop="signal")
    acted(path, "prune", [PLANNED], shape=PRUNE_SHAPE, resume=True, apply=False, first=2)
    assert lines(path)[-1]["outcome"] == "planned"
    text, data, _ = summaries(path)
    assert text.exit_code == 1, text.output
    assert "a crash or a kill; or it applied, and a plan since does not finish it)" in text.stdout
    assert "--keep-last 1 --apply --resume" in text.stdout
    assert data["unfinished"]
    acted(path, "prune", [DELETED], shape=PRUNE_SHAPE, resume=True, first=2)
    assert invoke(["summary", str(path)]).exit_code == 0
    planned = tmp_path / "p.jsonl"
    acted(planned, "prune", [PLANNED], shape=PRUNE_SHAPE, apply=False)
    acted(planned, "prune", [PLANNED], shape=PRUNE_SHAPE, resume=True, apply=False)
    assert invoke(["summary", str(planned)]).exit_code == 0
    acted(planned, "prune", [], shape=PRUNE_SHAPE, resume=True, stop="signal")  # an --apply stopped at once
    assert [line.get("outcome") for line in lines(planned)[-2:]] == ["ended", "applying"]
    stopped = invoke(["summary", str(planned)])
    assert stopped.exit_code == 1, stopped.output
    assert "stopped before acting" in stopped.stdout
    assert "--keep-last 1 --apply --resume" in stopped.stdout


@pytest.mark.parametrize(
    ("command", "source", "shape", "finish"),
    [
        pytest.param(
            "hold",
            "/r/create.jsonl",
            {
                "hold": "CHG 7",
                "create_report": "/r/create.jsonl",
                "snapshots": "",
                "rows": "2-3",
                "volumes": "v1,v2",
            },
            "evs-snapshot hold /r/create.jsonl --rows 2-3 --volume v1 --volume v2 --reason 'CHG 7' --apply",
            id="hold",
        ),
        pytest.param(
            "prune",
            "all-volumes:p1",
            {
                "keep_last": "None",
                "keep_within": "1209600.0",
                "allow_none": "True",
                "keep_daily": "7",
                "tz": "Europe/Berlin",
                "name_prefix": "nightly-",
                "all_volumes": "True",
            },
            "evs-snapshot prune --all-volumes --keep-within 1209600.0 --keep-daily 7 --tz Europe/Berlin "
            "--allow-none --name-prefix nightly- --apply",
            id="prune-all-volumes",
        ),
    ],
)
def test_the_finishing_command_repeats_what_the_header_records(
    tmp_path: Path, command: str, source: str, shape: dict[str, str], finish: str
) -> None:
    """The command that finishes a run carries the options a resume must repeat, from the header."""
    path = tmp_path / "r.jsonl"
    acted(path, command, [DELETED], shape=shape, source=source, stop="signal")
    result = invoke(["summary", str(path)])
    assert result.exit_code == 1
    assert f"`{finish} --resume --report {path.resolve()}`" in result.stdout
