"""What ``create`` was told about its freeze hooks (``HookPlan``: the options, their checks, the servers
a per-server hook runs for) and what every hook of a run is told (``HookContext``).

Running the hooks is ``hooks.Hooks``' (subprocesses, timeouts, the gate); the plan is apart so that
the options and a dry run, which run no hook, do not load that machinery (``benchmarks startup``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from orchestrator import defaults
from orchestrator.errors import UsageError
from orchestrator.servers import ServerRows, rows_by_server
from orchestrator.signals import in_thread

if TYPE_CHECKING:
    from orchestrator.manifest import RawRow

PLACEHOLDER = "{server_id}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HookPlan:
    """``--pre-hook``, ``--post-hook``, ``--hook-per-server`` and ``--hook-timeout``."""

    pre: str | None = None
    post: str | None = None
    per_server: bool = False
    timeout: float = defaults.HOOK_TIMEOUT

    def __bool__(self) -> bool:
        return self.pre is not None or self.post is not None

    async def servers(self, rows: Callable[[], Iterable[RawRow]]) -> ServerRows | None:
        """With ``--hook-per-server``: the manifest's rows by server, read in a worker thread; a row that
        names no server raises ``UsageError`` (exit 2, before anything is sent)."""
        if not self.per_server:
            return None
        servers = await in_thread(lambda: rows_by_server(rows()))
        servers.require("--hook-per-server")
        return servers

    def check(self) -> None:
        """Refuse options that cannot work together (exit 2, before anything is sent)."""
        for option, command in (("--pre-hook", self.pre), ("--post-hook", self.post)):
            if command is not None and not command.strip():
                raise UsageError(f"{option} is empty; give a shell command")
            if command is not None and PLACEHOLDER in command and not self.per_server:
                raise UsageError(f"{option} names {PLACEHOLDER}: add --hook-per-server (one run per server)")
        if self.per_server and not self:
            raise UsageError("--hook-per-server needs --pre-hook or --post-hook")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HookContext:
    """What every hook of a run is told: the run id, the manifest path and the report path."""

    run_id: str
    manifest: str
    report: str

    @classmethod
    def of(cls, run_id: str, *, manifest: str, report: str) -> HookContext:
        """The paths made absolute (``-``, standard input or output, stays)."""
        return cls(
            run_id=run_id,
            manifest=manifest if manifest == "-" else os.path.abspath(manifest),
            report=report if report == "-" else os.path.abspath(report),
        )
