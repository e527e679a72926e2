"""``python -m orchestrator`` is the ``evs-snapshot`` command."""

from __future__ import annotations

from orchestrator.cli import main

main()
