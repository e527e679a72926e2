"""The docs a newcomer reads: the README's size, links and tour, the generated option tables, the error codes."""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from orchestrator.cli import main
from tests.helpers import NO_CREDENTIALS, invoke, last_per_row

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# All-caps words joined by underscores: the shape of the tool's own error codes (the API's have a dot).
CODE_SHAPE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
# Environment variables the tool reads: the same shape, but not error codes.
ENV_PREFIXES = ("HUAWEICLOUD_", "OS_", "XDG_", "EVS_SNAPSHOT_")
# A figure that goes stale: a measured time ("150 s of CPU", "23 ms of start-up"), a count of
# instructions ("0.45 M instructions") or of the suite's tests ("1,503 tests"). A timeout, an option's
# default or an example's output ("took 25 ms or more", "--settle 60s", "TLS 38 ms") is none of these.
MEASURED = re.compile(
    r"\d[\d.,]*(?:-[\d.,]+)?\s*(?:s|ms|seconds)\s+of\s+(?:CPU|wall|(?:every\s+)?start-up)"
    r"|\d[\d.,]*(?:-[\d.,]+)?\s*[MG]\s+instructions"
    r"|\d{1,3}(?:,\d{3})+\s+tests\b"
)


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def _links(page: Path) -> Iterator[tuple[str, str]]:
    """Each relative link of a page as (file part, anchor part); web links and code blocks left out."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        yield path, anchor


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {_slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def _commands() -> list[str]:
    return main.list_commands(click.Context(main, info_name="evs-snapshot"))


def test_option_tables_are_generated_from_the_code(capsys: pytest.CaptureFixture[str]) -> None:
    """`docs/generate.py --check` finds every option table as `make docs` would write it, and nothing stale
    (its ``main``, loaded from the file, in this process: the script's own start-up is no part of it)."""
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    code = generate.main(["--check"])
    assert code == 0, f"docs are out of date; run `make docs`:\n{capsys.readouterr().err}"


def test_readme_is_a_front_page() -> None:
    """The README stays under 200 lines and keeps the two set-up commands exactly."""
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert (
        "make demo   # creates .venv, installs, runs samples/volumes.csv against the embedded emulator, "
        "shows the report\n"
        "make test   # creates .venv if needed, runs ruff, mypy --strict and pytest\n"
    ) in text


def test_every_command_has_a_page_linked_from_the_readme() -> None:
    """Each command the CLI group lists has docs/commands/<command>.md, and the README links to it."""
    linked = {path for path, _ in _links(README)}
    for name in _commands():
        assert (DOCS / "commands" / f"{name}.md").is_file(), name
        assert f"docs/commands/{name}.md" in linked, name
    for needed in ("docs/guarantees.md", "docs/runbook.md", "docs/emulator.md", "benchmarks/results.md"):
        assert needed in linked, needed


@pytest.mark.parametrize("page", _pages(), ids=lambda page: page.relative_to(ROOT).as_posix())
def test_performance_figures_live_only_in_the_benchmark_results(page: Path) -> None:
    """The README and docs/ hold no measured time, instruction count or test count: those live in
    benchmarks/results.md, which says when and how each was measured (issue 19)."""
    found = [match.group(0) for match in MEASURED.finditer(page.read_text(encoding="utf-8"))]
    assert not found, f"{page.relative_to(ROOT)}: move {found} to benchmarks/results.md"


def test_the_layout_names_every_module() -> None:
    """development.md's layout names each module of ``orchestrator/`` and ``orchestrator/api/``, and
    each command of ``commands/``."""
    text = (DOCS / "development.md").read_text(encoding="utf-8")
    layout = text.split("\norchestrator/\n", 1)[1].split("```", 1)[0]
    package = ROOT / "orchestrator"
    modules = [path.name for folder in (package, package / "api") for path in sorted(folder.glob("*.py"))]
    missing = [name for name in modules if not re.search(rf"(?<![\w.]){re.escape(name)}\b", layout)]
    commands = [path.stem for path in sorted((package / "commands").glob("*.py")) if path.stem != "__init__"]
    missing += [f"commands/{name}" for name in commands if not re.search(rf"\b{name}\b", layout)]
    assert missing == []


@pytest.mark.parametrize("page", _pages(), ids=lambda page: page.relative_to(ROOT).as_posix())
def test_links_resolve(page: Path) -> None:
    """Every relative link of the README and of docs/ names a file that exists, and an anchor it has."""
    for path, anchor in _links(page):
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.relative_to(ROOT)}: {path} does not exist"
        if anchor and target.suffix == ".md":
            assert anchor in _anchors(target), (
                f"{page.relative_to(ROOT)}: no #{anchor} in {path or page.name}"
            )


def _written_codes() -> set[str]:
    """String constants of the code-shape in the tool's own modules (the emulator's are the API's)."""
    codes: set[str] = set()
    package = ROOT / "orchestrator"
    for module in package.rglob("*.py"):
        if "emulator" in module.relative_to(package).parts:
            continue
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and CODE_SHAPE.fullmatch(node.value)
                and not node.value.startswith(ENV_PREFIXES)
            ):
                codes.add(node.value)
    return codes


@pytest.mark.no_cover  # it runs no code of the package, only the tracer (development.md)
def test_every_error_code_the_tool_writes_is_listed() -> None:
    """docs/guarantees.md's "Error codes" section names every error code the tool's modules spell out."""
    text = (DOCS / "guarantees.md").read_text(encoding="utf-8")
    section = text.split("## Error codes", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", section))
    written = _written_codes()
    assert {"INVALID_VOLUME_ID", "DEADLINE_EXCEEDED", "SNAPSHOT_BUSY"} <= written  # the scan sees codes
    assert written <= listed, f"not in docs/guarantees.md's Error codes: {sorted(written - listed)}"


def _tour() -> list[str]:
    """The command lines of the README tour's runbook rehearsal."""
    text = README.read_text(encoding="utf-8")
    after = text.split("**2. The runbook, rehearsed.**", 1)[1]
    block = after.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_readme_tour_rehearsal_runs_as_written(
    emulator_thread: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's rehearsal against the emulator: validate, create --wait, rollback plan and --apply,
    cleanup --apply; each snapshot made is rolled back to and then deleted."""
    emu = emulator_thread(any_volume=True, creating_seconds=0.0, rollback_seconds=0.0)
    shutil.copytree(ROOT / "samples", tmp_path / "samples")
    monkeypatch.chdir(tmp_path)
    env = dict(NO_CREDENTIALS)
    codes: list[int] = []
    warned: list[bool] = []
    for line in _tour():
        words = shlex.split(line, comments=True)
        if words[0] == "export":
            env.update(word.split("=", 1) for word in words[1:])
            continue
        assert words[0] == "evs-snapshot", line
        if words[1] == "emulator":
            assert "--any-volume" in words  # this test's emulator is started as the line asks
            continue
        args: list[str] = []
        for word in words[1:]:
            args += env["E"].replace("http://127.0.0.1:8080", emu.url).split() if word == "$E" else [word]
        if args[0] in ("create", "rollback"):
            args += ["--poll-interval", "0.05"]  # the test's waits are short; the rehearsal's are not
        result = invoke(args, base=env)
        assert result.exit_code in (0, 1), f"{line}\n{result.output}"
        codes.append(result.exit_code)
        warned.append("unknown column 'emulator_status' is ignored" in result.stderr)
    assert codes[0] == 1  # validate: rows 6 and 7 break a rule, as the comment says
    assert warned[:2] == [True, True]  # validate and create, as the text under the tour says
    created = last_per_row(tmp_path / "r.jsonl")
    made = {row: record for row, record in created.items() if record["outcome"] == "available"}
    assert len(made) == 5
    rolled = last_per_row(tmp_path / "b.jsonl")
    assert {row for row, record in rolled.items() if record["outcome"] == "rolled_back"} == set(made)
    ids = {record["snapshot_id"] for record in made.values()}
    assert ids
    assert not ids & {snapshot["id"] for snapshot in emu.state()["snapshots"]}


def test_the_cron_lines_pass_the_status_of_a_run_that_timeout_stopped() -> None:
    """Each `timeout` in the README's and the runbook's cron lines (and the docs' advice) sends SIGTERM
    with --preserve-status, so the shell sees the run's own 143, not timeout's 124."""
    runbook = (DOCS / "runbook.md").read_text(encoding="utf-8")
    cron = [text.split("```cron\n", 1)[1].split("```", 1)[0] for text in (README.read_text("utf-8"), runbook)]
    advice = [
        line for path in _pages() for line in path.read_text("utf-8").splitlines() if "`timeout " in line
    ]
    uses = [
        use
        for text in [*cron, *advice]
        for use in re.findall(r"(?<![\w-])timeout [^`]*?(?=\.venv|`|$)", text)
    ]
    assert len(uses) >= 3, uses  # the README's and the runbook's cron lines, operations.md's advice
    for use in uses:
        assert re.match(r"timeout --preserve-status -s TERM\b", use), use
