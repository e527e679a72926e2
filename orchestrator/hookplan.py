"""What ``create`` was told about its freeze hooks (``HookPlan``: the options and their checks).

Running the hooks is ``hooks``' (the servers a per-server hook runs for, subprocesses, timeouts, the
gate); the plan is apart so that the options and a dry run, which run no hook, do not load that
machinery (``benchmarks startup``).
"""

from __future__ import annotations

import dataclasses

from orchestrator import defaults
from orchestrator.errors import UsageError

PLACEHOLDER = "{server_id}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class HookPlan:
    """``--pre-hook``, ``--post-hook``, ``--hook-per-server`` and ``--hook-timeout``."""

    pre: str | None = None
    post: str | None = None
    per_server: bool = False
    timeout: float = defaults.HOOK_TIMEOUT

    def __bool__(self) -> bool:
        return self.pre is not None or self.post is not None

    def check(self) -> None:
        """Refuse options that cannot work together (exit 2, before anything is sent)."""
        for option, command in (("--pre-hook", self.pre), ("--post-hook", self.post)):
            if command is not None and not command.strip():
                raise UsageError(f"{option} is empty; give a shell command")
            if command is not None and PLACEHOLDER in command and not self.per_server:
                raise UsageError(f"{option} names {PLACEHOLDER}: add --hook-per-server (one run per server)")
        if self.per_server and not self:
            raise UsageError("--hook-per-server needs --pre-hook or --post-hook")
