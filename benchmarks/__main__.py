"""``make bench``: run the scenarios, print the tables, and write them to benchmarks/results.md.

``python -m benchmarks [SCENARIO ...]`` runs only the named ones (overhead, null, latency, ratecap, memory,
waiting, startup, profile, killresume, deleting, resume); each table then replaces its own section in
results.md.
Sections marked ``<!-- note: NAME -->`` (measurements made by hand, say of an older commit) are kept.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import (
    deleting,
    killresume,
    latency,
    memory,
    overhead,
    profile,
    ratecap,
    resume,
    startup,
    waiting,
)

SCENARIOS: dict[str, Callable[[], str]] = {
    "overhead": overhead.run,
    "null": overhead.run_null,
    "latency": latency.run,
    "ratecap": ratecap.run,
    "memory": memory.run,
    "waiting": waiting.run,
    "startup": startup.run,
    "profile": profile.run,
    "killresume": killresume.run,
    "deleting": deleting.run,
    "resume": resume.run,
}
RESULTS = Path(__file__).with_name("results.md")


def machine() -> str:
    python = platform.python_version()
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {python}, {platform.system()} {platform.release()}"


def main(argv: list[str]) -> None:
    chosen = argv or list(SCENARIOS)
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
    sections: dict[str, str] = {}
    notes: list[str] = []
    if RESULTS.exists():
        for block in re.split(r"\n(?=<!-- (?:scenario|note): )", RESULTS.read_text(encoding="utf-8")):
            found = re.match(r"<!-- scenario: (\w+) -->", block)
            if found:
                sections[found.group(1)] = block.strip()
            elif block.startswith("<!-- note: "):
                notes.append(block.strip())
    for name in chosen:
        started = datetime.now(UTC)
        section = SCENARIOS[name]()
        note = f"_{started:%Y-%m-%d %H:%M} UTC on {machine()}_"
        sections[name] = f"<!-- scenario: {name} -->\n{section}\n\n{note}"
        print(section + "\n", flush=True)
        ordered = [sections[name] for name in SCENARIOS if name in sections] + notes
        text = "# Benchmark results (`make bench`)\n\n" + "\n\n".join(ordered) + "\n"
        RESULTS.write_text(text, encoding="utf-8")  # after each scenario, so a failure keeps the others


if __name__ == "__main__":
    main(sys.argv[1:])
