"""Installing it as a user would: the built wheel in a fresh virtual environment outside the repository,
the samples shipped inside it, ``--version``, and the shell completion script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from click.testing import CliRunner

from orchestrator import __version__
from orchestrator.cli import main
from tests.helpers import AKSK_ENV, invoke, records

REPO = Path(__file__).resolve().parent.parent


def test_version_names_python_and_aiohttp() -> None:
    """--version prints the tool's version, Python's and aiohttp's, and exits 0."""
    from importlib.metadata import version

    result = invoke(["--version"])
    assert result.exit_code == 0
    python = ".".join(str(part) for part in sys.version_info[:3])
    assert result.output == (
        f"evs-snapshot, version {__version__} (Python {python}, aiohttp {version('aiohttp')})\n"
    )


def test_bash_completion_script_is_produced() -> None:
    """click's completion line for bash (``_EVS_SNAPSHOT_COMPLETE=bash_source``) prints the bash script."""
    result = CliRunner().invoke(
        main, [], prog_name="evs-snapshot", env={"_EVS_SNAPSHOT_COMPLETE": "bash_source"}
    )
    assert result.exit_code == 0, result.output
    assert "_evs_snapshot_completion() {" in result.output
    assert "complete -o nosort -F _evs_snapshot_completion evs-snapshot" in result.output


def _run(
    args: list[str | Path], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: PLW1510 - each caller checks the exit code it expects
        [str(arg) for arg in args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_wheel_installs_and_runs_outside_the_repository(tmp_path: Path) -> None:
    """The wheel, built and installed into a fresh venv outside the repository, carries the samples and runs."""
    wheels = tmp_path / "wheels"
    # Built by the project's build backend itself (hatchling, a test dependency already installed, so
    # nothing is downloaded): the wheel `pip wheel` makes, byte for byte the same files, without pip's
    # start-up and its hook processes (0.94 -> 0.23 s of CPU).
    built = _run([sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", wheels], cwd=REPO)
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("evs_snapshot_orchestrator-*.whl")

    venv = tmp_path / "user-venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    user_site = Path(
        _run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=tmp_path
        ).stdout.strip()
    )
    # The dependencies come from this venv's site-packages (appended after the new venv's own, and
    # without its .pth files, so the repository's editable install stays invisible): fast and offline.
    (user_site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")
    installed = _run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel],
        cwd=tmp_path,
    )
    assert installed.returncode == 0, installed.stderr
    script = venv / "bin" / "evs-snapshot"

    where = _run([python, "-c", "import orchestrator; print(orchestrator.__file__)"], cwd=tmp_path)
    package = Path(where.stdout.strip()).parent
    assert package.is_relative_to(user_site), where.stdout + where.stderr

    version = _run([script, "--version"], cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith(f"evs-snapshot, version {__version__} (Python ")
    assert ", aiohttp " in version.stdout

    shipped = sorted(path.name for path in (package / "samples").iterdir())
    assert shipped == sorted(path.name for path in (REPO / "samples").iterdir())
    manifest = tmp_path / "volumes.csv"
    shutil.copyfile(package / "samples" / "volumes.csv", manifest)
    report = tmp_path / "demo.jsonl"
    created = _run([script, "create", manifest, "--emulator", "--report", report], cwd=tmp_path, env=AKSK_ENV)
    assert created.returncode == 1, created.stderr  # the sample has rows meant to fail
    assert "Traceback" not in created.stderr
    outcomes = {record["outcome"] for record in records(report)}
    assert "accepted" in outcomes
    assert outcomes <= {"accepted", "rejected", "invalid"}

    helped = _run([script, "emulator", "--help"], cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "--volumes FILE" in helped.stdout

    completion = _run([script], cwd=tmp_path, env={"_EVS_SNAPSHOT_COMPLETE": "bash_source"})
    assert completion.returncode == 0, completion.stderr
    assert "complete -o nosort -F _evs_snapshot_completion evs-snapshot" in completion.stdout
