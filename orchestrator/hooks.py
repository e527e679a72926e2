"""Freeze hooks around ``create``'s requests: ``--pre-hook`` before a run's (or a server's) first create
is sent, ``--post-hook`` as soon as its creates are answered, whatever ended them.

An EVS snapshot's point in time is its create request, so a freeze (``fsfreeze -f``, a database's
backup mode) needs to last only until the creates are answered: the post-hook runs then, before the
end-of-run sweep and before ``--wait``. The rules:

- a hook runs through ``/bin/sh -c``, in a session of its own (a Ctrl-C at the terminal does not reach
  it), with no standard input; what it prints goes to stderr, each line behind ``pre-hook:`` or
  ``post-hook:`` (and the server), never into the report;
- once per run, or once per server with ``--hook-per-server`` (``servers.rows_by_server``; ``{server_id}``
  in the command is replaced by the server id, shell-quoted). A server's pre-hook runs when its first
  row is about to be sent, so a server with nothing left to send (``--resume``) is never frozen;
- its environment is the tool's, minus every credential variable (``CREDENTIAL_VARIABLES``) and the
  notification URLs, plus ``EVS_SNAPSHOT_*`` variables naming the run (``hook_environment``);
- a hook that runs past ``--hook-timeout`` has its process group killed;
- a pre-hook that fails (or times out, or cannot start) stops its rows: each ends ``failed`` with
  ``PRE_HOOK_FAILED``, never sent;
- the post-hook runs whenever its pre-hook ran (or there is none and a row was about to be sent): after
  success, failure, a signal (inside the drain, before the run ends) or ``--deadline``; a signal kills a
  pre-hook still running, never a post-hook. It is told the outcome (``EVS_SNAPSHOT_OUTCOME``);
- a post-hook that fails makes the run's exit code 1; every failed hook is named in the summary.

``Hooks`` is the runner's ``Gate``: the runner tells it which rows it queues and finishes, and asks it
before sending a row. ``Frame.freezing`` makes one and counts its failures in the summary. What create
was told (``HookPlan``) is in ``hookplan``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shlex
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from orchestrator.config import CREDENTIAL_VARIABLES
from orchestrator.console import Console
from orchestrator.hookplan import PLACEHOLDER, HookPlan
from orchestrator.models import SUCCESSFUL, Record
from orchestrator.servers import ServerRows, rows_by_server
from orchestrator.signals import in_thread

if TYPE_CHECKING:
    from orchestrator.manifest import RawRow

# Besides the credentials: URLs that may carry a token of their own.
PRIVATE_VARIABLES = (*CREDENTIAL_VARIABLES, "EVS_SNAPSHOT_PING_URL", "EVS_SNAPSHOT_WEBHOOK")
LINE_MAX = 4096  # characters of one output line shown; a longer line is cut into pieces
OUTPUT_GRACE = 1.0  # seconds the output is still read after the hook's shell ended (background children)
NAMED_FAILURES = 10  # failed hooks named one per line in the summary


async def hook_servers(plan: HookPlan, rows: Callable[[], Iterable[RawRow]]) -> ServerRows | None:
    """With ``--hook-per-server``: the manifest's rows by server, read in a worker thread; a row that
    names no server raises ``UsageError`` (exit 2, before anything is sent)."""
    if not plan.per_server:
        return None
    servers = await in_thread(lambda: rows_by_server(rows()))
    servers.require("--hook-per-server")
    return servers


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
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


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class HookResult:
    """One run of a hook: ``status`` is ``ok``, ``failed`` (exit code not 0), ``timeout``, ``stopped``
    (a pre-hook killed by a signal's drain, or by the end of the rows: a ``--deadline``) or ``unstarted``
    (the shell could not start)."""

    hook: str
    server_id: str | None
    command: str
    status: str
    exit_code: int | None = None
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def describe(self, timeout: float) -> str:
        """What became of it, to follow "the pre-hook" or "the post-hook"."""
        if self.status == "timeout":
            return f"timed out after {timeout:g}s (its process group was killed)"
        if self.status == "stopped":
            return "was stopped: the rows were done with, or a signal came (its process group was killed)"
        if self.status == "unstarted":
            return f"could not start: {self.error}"
        code = self.exit_code or 0
        if code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return "exited 0" if code == 0 else f"failed with exit {code}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "hook": self.hook,
            "server_id": self.server_id,
            "command": self.command,
            "status": self.status,
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 3),
        }


def hook_environment(environ: Mapping[str, str], variables: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without a secret, plus ``variables``."""
    kept = {name: value for name, value in environ.items() if name not in PRIVATE_VARIABLES}
    return {**kept, **variables}


async def run_hook(
    command: str,
    *,
    hook: str,
    server: str | None,
    env: Mapping[str, str],
    limit: float,
    console: Console,
) -> HookResult:
    """Run ``command`` through the shell in a session of its own, its output relayed to ``console``
    behind ``pre-hook:`` or ``post-hook:`` (``hook``) and ``server``; kill its process group after
    ``limit`` seconds, or when cancelled."""
    started = time.monotonic()

    def result(status: str, code: int | None = None, error: str | None = None) -> HookResult:
        seconds = time.monotonic() - started
        return HookResult(
            hook=hook,
            server_id=server,
            command=command,
            status=status,
            exit_code=code,
            seconds=seconds,
            error=error,
        )

    try:
        with anyio.CancelScope(shield=True):  # a kill asked for while it starts waits for the process
            process = await anyio.open_process(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
    except (OSError, ValueError) as exc:  # no shell (fork refused, ...), a NUL in the command
        return result("unstarted", error=str(exc))
    async with process:
        try:
            async with anyio.create_task_group() as group:
                relayed = anyio.Event()
                group.start_soon(_relay, process, hook, server, console, relayed)
                with anyio.move_on_after(limit) as scope:
                    await process.wait()
                if scope.cancelled_caught:
                    _kill_group(process)
                    await process.wait()
                with anyio.move_on_after(OUTPUT_GRACE):
                    await relayed.wait()
                group.cancel_scope.cancel()
        finally:
            if process.returncode is None:  # cancelled: a signal's drain stopped it
                _kill_group(process)
                with anyio.CancelScope(shield=True):
                    await process.wait()
    if scope.cancelled_caught:
        return result("timeout", process.returncode)
    code = process.returncode
    return result("ok" if code == 0 else "failed", code)


def _kill_group(process: anyio.abc.Process) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group has ended already
        os.killpg(process.pid, signal.SIGKILL)


async def _relay(
    process: anyio.abc.Process, hook: str, server: str | None, console: Console, relayed: anyio.Event
) -> None:
    """Each line the hook prints, to ``console`` behind its name; sets ``relayed`` at the end."""
    assert process.stdout is not None  # noqa: S101 - opened with stdout=PIPE
    label = f"{hook}-hook" if server is None else f"{hook}-hook {server}"
    fields: dict[str, Any] = {"hook": hook, **({"server_id": server} if server else {})}
    pending = ""

    def say(text: str) -> None:
        console.event("hook_output", f"{label}: {text}", **fields, line=text)

    try:
        async for chunk in process.stdout:
            pending += chunk.decode("utf-8", errors="replace")
            *whole, pending = pending.split("\n")
            for line in whole:
                say(line.rstrip("\r")[:LINE_MAX])
            while len(pending) > LINE_MAX:
                say(pending[:LINE_MAX])
                pending = pending[LINE_MAX:]
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):  # pragma: no cover - a pipe torn down
        pass
    if pending:
        say(pending.rstrip("\r"))
    relayed.set()


@dataclasses.dataclass(slots=True, eq=False, repr=False)
class _Freeze:
    """One freeze: the run's, or one server's; ``last_row`` is the last manifest row it covers."""

    server: str | None
    last_row: float
    pending: int = 0  # rows queued for sending and not yet done
    started: bool = False  # a row was about to be sent: the pre-hook started (or there is none)
    thawing: bool = False  # its post-hook has started
    refusal: str | None = None  # why its rows are not sent (the pre-hook failed)
    failed: int = 0  # its rows that ended without success
    unrecorded: int = 0  # its rows left without a record (a signal's drain)
    scope: anyio.CancelScope | None = None  # around the pre-hook, while it runs
    ready: anyio.Event = dataclasses.field(default_factory=anyio.Event)  # the pre-hook has ended


class Hooks:
    """One run's hooks, and the gate its rows pass (``runner.Gate``); use ``async with hooks.frozen()``
    around the acting: leaving it runs every post-hook still owed, shielded from cancellation."""

    def __init__(
        self,
        plan: HookPlan,
        *,
        context: HookContext,
        console: Console,
        signals: list[int],
        servers: ServerRows | None = None,
        deadline: float | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.plan = plan
        self.context = context
        self.console = console
        self.signals = signals  # the run's, as the drain receives them
        self.servers = servers
        self.deadline = deadline
        self.environ = os.environ if environ is None else environ
        self.results: list[HookResult] = []
        self._run = _Freeze(None, math.inf)
        self._freezes: dict[str, _Freeze] = {}
        self._open: list[_Freeze] = []  # started and not thawing
        self._position = 0.0  # the last row the runner passed
        self._stopped = False
        self._group: anyio.abc.TaskGroup | None = None

    # --- the gate ----------------------------------------------------------------------------------
    def _freeze_of(self, row: int) -> _Freeze:
        if self.servers is None:
            return self._run
        server = self.servers.server_of[row]
        freeze = self._freezes.get(server)
        if freeze is None:
            freeze = self._freezes[server] = _Freeze(server, self.servers.last_row(server))
        return freeze

    def passed(self, row: int, *, queued: bool) -> None:
        """The runner has taken manifest row ``row`` (``queued``: for sending)."""
        self._position = row
        if queued:
            self._freeze_of(row).pending += 1
        if self.servers is not None:
            for freeze in list(self._open):
                self._thaw_if_answered(freeze)

    def closed(self) -> None:
        """The runner has taken every row."""
        self._position = math.inf
        for freeze in list(self._open):
            self._thaw_if_answered(freeze)

    async def enter(self, row: int) -> str | None:
        """Before row ``row`` is sent: start its freeze if needed and wait for the pre-hook; ``None``
        when the row may be sent, else why not."""
        freeze = self._freeze_of(row)
        if not freeze.started:
            if self._stopped:
                return "the run is stopping"
            assert self._group is not None  # noqa: S101 - the runner runs inside frozen()
            freeze.started = True
            # Made now, so that a kill asked for before the task runs is not lost.
            freeze.scope = anyio.CancelScope() if self.plan.pre is not None else None
            self._open.append(freeze)
            self._group.start_soon(self._freeze, freeze)
        await freeze.ready.wait()
        return freeze.refusal

    def done(self, row: int, record: Record | None) -> None:
        """Row ``row`` ended: with ``record``, or without one (the run is stopping)."""
        freeze = self._freeze_of(row)
        freeze.pending -= 1
        if record is None:
            freeze.unrecorded += 1
        elif record.outcome not in SUCCESSFUL:
            freeze.failed += 1
        self._thaw_if_answered(freeze)

    def stop(self) -> None:
        """A signal's drain: start no pre-hook, and kill those still running (their post-hooks run)."""
        self._stopped = True
        self._kill_pre_hooks()

    def _kill_pre_hooks(self) -> None:
        for freeze in (self._run, *self._freezes.values()):
            if freeze.scope is not None:
                freeze.scope.cancel()

    # --- running the hooks -------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def frozen(self) -> AsyncIterator[Hooks]:
        """Around the acting: on the way out, pre-hooks still running are killed (no row waits for them)
        and every post-hook still owed runs, whatever ended the acting."""
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                try:
                    yield self
                finally:
                    self._kill_pre_hooks()  # no row waits for them any more
        finally:
            with anyio.CancelScope(shield=True):
                async with anyio.create_task_group() as thaws:
                    for freeze in list(self._open):
                        self._open.remove(freeze)
                        freeze.thawing = True
                        thaws.start_soon(self._thaw, freeze)

    def _thaw_if_answered(self, freeze: _Freeze) -> None:
        """Start ``freeze``'s post-hook once its rows are answered and no row of it can come any more
        (a pre-hook still running then, when the rows stopped waiting for it, is killed first)."""
        if freeze.thawing or not freeze.started or freeze.pending or freeze.last_row > self._position:
            return
        assert self._group is not None  # noqa: S101 - started freezes imply a running frozen()
        if freeze.scope is not None:
            freeze.scope.cancel()
        self._open.remove(freeze)
        freeze.thawing = True
        self._group.start_soon(self._thaw, freeze)

    async def _freeze(self, freeze: _Freeze) -> None:
        try:
            if self.plan.pre is None or freeze.scope is None:
                return
            result: HookResult | None = None
            with freeze.scope:
                if not freeze.scope.cancel_called:  # killed before it started: it never starts
                    result = await self._run_hook("pre", self.plan.pre, freeze, {})
            freeze.scope = None
            if result is None:
                result = HookResult(
                    hook="pre", server_id=freeze.server, command=self.plan.pre, status="stopped"
                )
                self._note(result)
            if not result.ok:
                freeze.refusal = f"not sent: the pre-hook {result.describe(self.plan.timeout)}"
        finally:
            freeze.ready.set()

    async def _thaw(self, freeze: _Freeze) -> None:
        with anyio.CancelScope(shield=True):
            await freeze.ready.wait()
            if self.plan.post is None:
                return
            outcome, code = self._outcome(freeze)
            variables = {"EVS_SNAPSHOT_OUTCOME": outcome, "EVS_SNAPSHOT_EXIT_CODE": str(code)}
            await self._run_hook("post", self.plan.post, freeze, variables)

    def _outcome(self, freeze: _Freeze) -> tuple[str, int]:
        """What the post-hook is told: ``ok``, ``failed``, ``interrupted`` or ``deadline``, and the exit
        code the creates point to (the sweep and ``--wait`` come later)."""
        if self.signals:
            return "interrupted", 128 + self.signals[0]
        troubled = freeze.refusal is not None or freeze.failed or freeze.unrecorded or freeze.pending
        if troubled and self.deadline is not None and time.monotonic() >= self.deadline:
            return "deadline", 1
        return ("failed", 1) if troubled else ("ok", 0)

    async def _run_hook(
        self, hook: str, command: str, freeze: _Freeze, variables: dict[str, str]
    ) -> HookResult:
        server = freeze.server
        if server is not None:
            command = command.replace(PLACEHOLDER, shlex.quote(server))
        env = hook_environment(
            self.environ,
            {
                "EVS_SNAPSHOT_HOOK": hook,
                "EVS_SNAPSHOT_RUN_ID": self.context.run_id,
                "EVS_SNAPSHOT_MANIFEST": self.context.manifest,
                "EVS_SNAPSHOT_REPORT": self.context.report,
                **({"EVS_SNAPSHOT_SERVER_ID": server} if server is not None else {}),
                **variables,
            },
        )
        result = await run_hook(
            command, hook=hook, server=server, env=env, limit=self.plan.timeout, console=self.console
        )
        self._note(result)
        return result

    def _note(self, result: HookResult) -> None:
        self.results.append(result)
        where = "" if result.server_id is None else f" (server {result.server_id})"
        said = f"the {result.hook}-hook{where} {result.describe(self.plan.timeout)} in {result.seconds:.2f}s"
        fields: dict[str, Any] = {
            "hook": result.hook,
            "status": result.status,
            "exit_code": result.exit_code,
        }
        if result.ok:
            self.console.event("hook", said, **fields)
        else:
            self.console.error(f"{said}: {result.command}", **fields)

    # --- what the summary says ---------------------------------------------------------------------
    @property
    def exit_code(self) -> int:
        """1 when a post-hook failed (a failed pre-hook's rows make it 1 through their records)."""
        return int(any(not result.ok for result in self.results if result.hook == "post"))

    def notes(self) -> list[str]:
        """Lines of the summary: the hooks run, and each failed one (the first ``NAMED_FAILURES``)."""
        if not self.results:
            return []
        ran = {hook: sum(1 for r in self.results if r.hook == hook) for hook in ("pre", "post")}
        failed = [result for result in self.results if not result.ok]
        lines = [f"hooks: {ran['pre']} pre-hook and {ran['post']} post-hook runs, {len(failed)} failed"]
        for result in failed[:NAMED_FAILURES]:
            where = "" if result.server_id is None else f" of server {result.server_id}"
            effect = "its rows were not sent" if result.hook == "pre" else "exit code 1"
            said = result.describe(self.plan.timeout)
            lines.append(f"  {result.hook}-hook{where} {said} ({effect}): {result.command}")
        if len(failed) > NAMED_FAILURES:
            lines.append(f"  ... {len(failed) - NAMED_FAILURES} more (see --summary-json)")
        return lines

    def summary(self) -> dict[str, Any]:
        """The ``hooks`` field of ``--summary-json``: counts, and every failed run."""
        return {
            "pre_hooks": sum(1 for result in self.results if result.hook == "pre"),
            "post_hooks": sum(1 for result in self.results if result.hook == "post"),
            "failed": [result.to_dict() for result in self.results if not result.ok],
        }
