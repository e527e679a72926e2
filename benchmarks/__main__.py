"""``make bench``: run every scenario, print the tables, and write them to benchmarks/results.md."""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import memory


def machine() -> str:
    python = platform.python_version()
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {python}, {platform.system()}"


def main(argv: list[str]) -> None:
    scenarios = {"memory": memory.run}
    chosen = argv or list(scenarios)
    parts = [f"# Benchmark results\n\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}\n"]
    for name in chosen:
        section = scenarios[name]()
        print(section + "\n", flush=True)
        parts.append(section)
    Path(__file__).with_name("results.md").write_text("\n\n".join(parts) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
