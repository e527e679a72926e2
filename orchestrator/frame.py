"""The run frame: what every command that writes a report (``create``, ``wait``, ``prune``, ``cleanup``,
``rollback``, ``hold``, ``release``) does around its own work, in this order:

1. **the locks** (``lock.holding``), taken first: a second run of the same manifest, run or report
   exits 75 before anything is read or sent (``Frame.lock``);
2. **the report**: its writer, its run header (written when the file is new) and the resume book
   (``Frame.open_report`` for a create report, ``Frame.open_actions`` for the others);
3. **signals**: outside a drain phase a signal stops the command at once; inside one
   (``Frame.draining``, or ``signals.drain_on_signal`` around create's rows) it stops new work and gives
   work in flight a grace period; the frame keeps what was received (``Frame.signals``). create's freeze
   hooks (``Frame.freezing``) sit inside its drain: a signal kills a pre-hook still running, and every
   post-hook owed runs before the drain ends, whatever ended the rows;
4. **the tally** (``tally.Tally``): every record written through ``Frame.write`` is counted;
5. **the end**: the summary on stderr (naming each hook that failed), ``--summary-json``,
   ``--metrics-file`` (``metrics``) and the exit code (1 when a post-hook failed). A route closed
   anywhere (credentials refused, wrong project, endpoint gone) makes it 3 here, never in a command;
   a run stopped by ``RunAborted`` still writes exit code 3 to the side files, so an alert on
   ``evs_snapshot_exit_code`` fires; a signal raises ``Interrupted`` after the summary;
6. **notifications** (``--ping-url``, ``--webhook``: ``api.notify``): the start ping goes out in the
   background when the frame is entered; the end ping and the webhooks go out last, after the report
   is closed and synced and the summary printed, whatever ended the run (exit 0, 1, 2, 3, 75, 130/143,
   70); best effort, they change nothing else.

A command does its own work inside ``async with Frame(...) as frame:`` and returns ``frame.exit_code``.
create's dry run, which waits for nothing, enters it without an event loop (``with frame:``): all
the same but the notifications, which it cannot have.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import orjson

from orchestrator import metrics
from orchestrator.actions import FINAL, Action, ActionRecord, last_run, now_iso, outcomes_and_sends
from orchestrator.config import RunIdentity, file_in_the_way
from orchestrator.console import Console
from orchestrator.defaults import GRACE
from orchestrator.entry import exit_code_of, reason_of
from orchestrator.errors import (
    Interrupted,
    ReportUnwritable,
    ResumeMismatch,
    RunAborted,
    UsageError,
)
from orchestrator.hookplan import HookPlan
from orchestrator.lock import Held, Lock, holding, report_lock
from orchestrator.models import RUN_STAMP, Record, RunHeader, shape_difference, utc_now
from orchestrator.report import (
    ReportWriter,
    ResumeBook,
    check_report_path,
    header_path,
    read_header,
    same_file,
    writes_to,
)
from orchestrator.signals import draining, on_early_stop, received, run_finished, stopping_now
from orchestrator.tally import Counting, Tally

if TYPE_CHECKING:
    import anyio.abc

    from orchestrator.api.notify import Notifier
    from orchestrator.api.routes import Router
    from orchestrator.config import Connection, Notify
    from orchestrator.hooks import Hooks
    from orchestrator.retry import RetryPolicy
    from orchestrator.servers import ServerRows

T = TypeVar("T")

RESUME_ADVICE = "run again with --resume to finish the job"


# --- where the summary and the metrics go ------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Closing:
    """Where a run's summary and metrics go besides stderr, and whom it notifies."""

    summary_json: Path | None = None
    metrics_file: Path | None = None
    notify: Notify | None = None

    def check(self) -> None:
        """Refuse side files that could not be written, before anything is sent (exit 2)."""
        for option, path in (("--summary-json", self.summary_json), ("--metrics-file", self.metrics_file)):
            if path is not None:
                check_writable(path, option)

    def apart(self, *, report: str = "", reads: Iterable[str] = ()) -> None:
        """The side files are replaced whole at the end: neither may name the report, a file the run reads
        (``reads``: a manifest or a create report; ``--token-file``, ``--ca-bundle``), or the other (exit
        2, before anything is sent)."""
        sides = (("--summary-json", self.summary_json), ("--metrics-file", self.metrics_file))
        files = [(option, path) for option, path in sides if path is not None]
        kept = [("the report", report), *(("what this run reads", read) for read in reads)]
        kept += [(option, str(path)) for option, path in files[:1]]
        for option, path in files:
            for what, other in kept:
                if other not in ("", "-") and option not in what and same_file(path, Path(other)):
                    raise UsageError(
                        f"{option} {path} is {what}: the end of the run would replace it; choose another path"
                    )


def check_writable(path: Path, option: str) -> None:
    """Prove that ``path`` can be written atomically (a temporary file beside it, then removed)."""
    if str(path) == "-":
        raise UsageError(
            f"{option} -: give a file path (- is not standard output here: it would be a file named -)"
        )
    blocker = file_in_the_way(path)
    if blocker is not None:
        raise UsageError(
            f"{option} {path}: cannot write there ({blocker} is a file, not a directory); choose another path"
        )
    if path.is_dir():
        raise UsageError(f"{option} {path} is a directory; give a file path")
    if path.exists() and not path.is_file():
        # Renaming over a device (/dev/null) would replace it, and reading one (/dev/zero) never ends.
        raise UsageError(f"{option} {path} is not a regular file (a device or a pipe); give a file path")
    probe = path.with_name(f".{path.name}.{os.urandom(4).hex()}.probe")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(
            f"{option} {path}: cannot write there ({exc.strerror}); choose another path"
        ) from None


def run_reads(create_report: str) -> tuple[str, ...]:
    """A create report and the manifest its header names (as ``createrun.manifest_disks`` reads it: a
    relative path from here), or ``()`` when there is no such report."""
    if not create_report or not os.path.isfile(create_report):
        return ()
    header = read_header(Path(create_report))
    named = None if header is None or header.command != "create" else header.manifest_file()
    return (create_report,) if named is None else (create_report, named)


def default_report(command: str, path: str | None) -> str:
    """``--report``, or the default path of an action command's report."""
    return path or f"reports/evs-snapshot-{command}-{utc_now().strftime(RUN_STAMP)}.jsonl"


def write_side_files(
    closing: Closing | None,
    *,
    command: str,
    summary: dict[str, Any],
    families: list[metrics.Family],
    exit_code: int,
    console: Console,
) -> None:
    """``--summary-json`` and ``--metrics-file`` (this command's series; other commands' are kept).
    Failing to write one is reported, but changes neither what the run did nor its exit code."""
    if closing is None:
        return
    writes: list[tuple[str, Path, Callable[[Path], None]]] = []
    if closing.summary_json is not None:
        data = orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
        writes.append(
            ("--summary-json", closing.summary_json, lambda path: metrics.write_atomically(path, data))
        )
    if closing.metrics_file is not None:
        writes.append(
            (
                "--metrics-file",
                closing.metrics_file,
                lambda path: metrics.write_families(path, families, command=command, exit_code=exit_code),
            )
        )
    for option, path, write in writes:
        try:
            write(path)
        except OSError as exc:
            console.error(f"{option}: cannot write {exc.filename or path}: {exc.strerror}")


def record_abort(
    closing: Closing | None, command: str, console: Console, error: BaseException | str, code: int = 3
) -> None:
    """A run stopped with exit 3 (a listing failed or was refused), or at once by a second signal (130,
    143), writes that exit code to the side files, without the counts of a summary."""
    summary = {"command": command, "exit_code": code, "error": str(error)}
    write_side_files(closing, command=command, summary=summary, families=[], exit_code=code, console=console)


def record_early_stops(closing: Closing, command: str) -> Callable[[], None]:
    """From now until the returned function is called (the command ended), a signal that ends ``command``
    before its run wrote its side files (at start-up, in the manifest pass, in a listing) writes its exit
    code, 130/143, to them (``signals.stopped_early``): they never keep the previous run's."""
    if closing.summary_json is None and closing.metrics_file is None:
        return lambda: None

    def words(code: int) -> None:
        name = signal.Signals(code - 128).name
        record_abort(closing, command, Console(sys.stderr), f"stopped by {name}", code)

    on_early_stop(words)
    return lambda: on_early_stop(None)


def _aborted(exc: BaseException | None) -> BaseException | None:
    """The first ``RunAborted`` that ``exc`` is or holds (a task group wraps what its tasks raise)."""
    if isinstance(exc, RunAborted):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _aborted(inner)
            if found is not None:
                return found
    return None


@contextlib.contextmanager
def recording_aborts(closing: Closing | None, command: str, console: Console) -> Iterator[None]:
    """For a command without a report (``audit``): a ``RunAborted`` still writes exit code 3."""
    try:
        yield
    except BaseException as exc:
        aborted = _aborted(exc)
        if aborted is not None:
            record_abort(closing, command, console, aborted)
        raise


def _at_once(step: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (an exit stack holding only synchronous contexts) to its end."""
    try:
        step.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    step.close()
    raise RuntimeError("an asynchronous context in a frame entered without an event loop")


# --- the frame ---------------------------------------------------------------------------------
class Frame:
    """One run of a command that writes a report, from its locks to its exit code.

    What a command sets besides writing records: ``at_least`` (its own verdict, 0 or 1, when its
    records do not say it all), ``tally.notes`` and ``tally.failing``, ``summary`` (more fields for
    ``--summary-json``) and ``also`` (outcomes counted without a record, for the metrics).
    """

    def __init__(
        self,
        *,
        command: str,
        console: Console,
        report: str,
        closing: Closing | None = None,
        tally: Tally | None = None,
        grace: float = GRACE,
        drain: str | None = None,
        advice: str = RESUME_ADVICE,
        reads: str = "",
        create_report: str = "",
    ) -> None:
        """``reads``: the file the run reads (its manifest), which the side files must not name, as they
        must not name the report (exit 2, before anything is sent). ``create_report``: the create report
        the run acts on (wait's own report; the REPORT of cleanup, rollback, hold, release): it is read,
        and so is the manifest its header names, which a ``create --resume`` of that run reads again."""
        self.command = command
        self.console = console
        self.report = report
        self.closing = closing
        if closing is not None:
            closing.apart(report=report, reads=(reads, *run_reads(create_report)))
        self.tally = tally if tally is not None else Tally(counting=Counting.records(command))
        self.grace = grace
        self.drain = drain
        self.advice = advice
        self.run_id = ""
        self.book: ResumeBook[str, Action] = ResumeBook.keyed({}, FINAL)
        # requests an earlier run sent (rollbacks, deletions) and never saw end: their sending lines, by key
        self.sent: dict[str, ActionRecord] = {}
        self.writer: ReportWriter | None = None
        self.router: Router | None = None
        self.held: Held | None = None
        self.signals: list[int] = []
        self.hooks: Hooks | None = None
        self.at_least = 0
        self.summary: dict[str, Any] = {}
        self.also: Counter[str] = Counter()
        self.exit_code = 0
        self._stopped = False
        self._stack = contextlib.AsyncExitStack()
        self._ended: tuple[str, dict[str, Any]] | None = None  # the summary as text and as JSON
        self._notifier: Notifier | None = None
        self._pinging: anyio.abc.TaskGroup | None = None
        self._began = ""  # when an action report was opened (its end line's started_at); "": no end line

    async def __aenter__(self) -> Frame:
        stopping_now(self._stopped_at_once)
        await self._stack.__aenter__()
        notify = None if self.closing is None else self.closing.notify
        if notify:
            from orchestrator.api.notify import Notifier  # noqa: PLC0415 - aiohttp loads only when sending

            self._notifier = Notifier(notify, self.console)
            start = self._notifier.start_messages(self.command)
            if start:  # in the background: a slow receiver does not hold the run up
                self._pinging = anyio.create_task_group()
                await self._pinging.__aenter__()
                self._pinging.start_soon(self._notifier.send, start)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        ended, interrupted = exc, None
        try:
            self._end_line(exc)
            await self._stack.__aexit__(kind, exc, traceback)
            interrupted = self._closed(exc)
            ended = interrupted or exc
        except BaseException as raised:
            ended = raised
            raise
        finally:
            if ended is not None:
                self._record_abort(ended)
            await self._notify_end(ended)
        if interrupted is not None:
            raise interrupted

    def __enter__(self) -> Frame:
        """The frame without an event loop, for a job that waits for nothing (create's dry run): no
        notifications, and nothing asynchronous entered (``connect``, ``enter``)."""
        if self.closing is not None and self.closing.notify:
            raise RuntimeError("a frame that notifies runs in an event loop: async with")
        stopping_now(self._stopped_at_once)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        ended, interrupted = exc, None
        try:
            self._end_line(exc)
            _at_once(self._stack.__aexit__(kind, exc, traceback))
            interrupted = self._closed(exc)
            ended = interrupted or exc
        except BaseException as raised:
            ended = raised
            raise
        finally:
            if ended is not None:
                self._record_abort(ended)
        if interrupted is not None:
            raise interrupted

    def _closed(self, exc: BaseException | None) -> Interrupted | None:
        """After the report closed and the locks went: the end of a run that raised nothing (summary, side
        files, exit code); a signal received makes it ``Interrupted``."""
        if exc is not None:
            return None
        self.exit_code = self._finish()
        return Interrupted(self.signals[0], self.advice) if self.signals else None

    def _end_line(self, exc: BaseException | None) -> None:
        """An action report's last line, written before it closes when the command's work came to its end:
        nothing raised, no signal came (drained or not), no route closed. ``summary`` reads a report whose
        last run has none as unfinished. A report that cannot take it is said; the run's exit stays."""
        if not self._began or self.writer is None or exc is not None or self.signals or received():
            return
        if self.router is not None and self.router.closures():
            return
        line = ActionRecord(
            run_id=self.run_id,
            command=self.command,
            key="",
            outcome=Action.ENDED,
            started_at=self._began,
            finished_at=now_iso(),
        )
        try:
            self.writer.write_line(line.to_json())
        except ReportUnwritable as error:
            self.console.error(f"{error} (every record is whole: `summary` reads the run as unfinished)")

    def _record_abort(self, exc: BaseException) -> None:
        aborted = _aborted(exc)
        if aborted is not None:
            record_abort(self.closing, self.command, self.console, aborted)

    def _stopped_at_once(self, code: int) -> None:
        """A second signal ends the process at once with ``code``: the side files say so."""
        record_abort(self.closing, self.command, self.console, "stopped at once by a second signal", code)

    # 1. the locks
    def lock(self, locks: Iterable[Lock], holder: str | None = None) -> Held:
        """Hold ``locks`` until the run ends (more can be taken later through the returned ``Held``)."""
        locks = list(locks)
        for given in (lock for lock in locks if not lock.remove):
            if writes_to(self.report, given.path):
                raise UsageError(f"--lock-file {given.path} is the report: choose another path")
        if self.held is None:
            self.held = self._stack.enter_context(holding(locks, holder or self.command))
        else:
            self.held.take(*locks)
        return self.held

    # 2. the report and the resume book
    def open_report(self, header: RunHeader | None, *, resume: bool) -> ReportWriter:
        """Open the report for appending (``resume``: it may exist); write ``header`` when it is new."""
        writer = self._stack.enter_context(ReportWriter(self.report, resume=resume, command=self.command))
        if writer.empty and header is not None:
            writer.write_header(header)
        if header is not None:
            self.run_id = header.run_id
        self.writer = writer
        return writer

    def open_actions(
        self,
        *,
        source: str,
        shape: dict[str, str],
        resume: bool,
        apply: bool,
        nothing: str,
        connection: Connection | None = None,
    ) -> None:
        """The report of ``prune``, ``cleanup``, ``rollback``, ``hold`` or ``release``: its lock, a header
        naming ``source``, ``shape`` (a resume with other options is refused, saying ``nothing`` was
        done), whether the run applies (``apply``) and where the requests go (``connection``, never a
        credential), and the book. An ``--apply`` resuming a plan's report (plan, review, apply) first
        writes an ``applying`` line, so that ``summary`` knows the run applied; a plan resuming a report
        that a run applied to writes no end line: only an ``--apply`` that ends finishes it."""
        report = self.report
        if resume and report == "-":
            raise UsageError("--resume needs a --report file to read, not standard output")
        if report != "-":
            check_report_path(Path(report))
            self.lock([report_lock(report)])
        existing = resume and report != "-" and os.path.exists(report)
        header = read_header(Path(report)) if existing else None
        if header is not None and header.command != self.command:
            raise UsageError(f"{report} is a {header.command} report, not a {self.command} report")
        if header is not None:
            differs = shape_difference(header.shape, shape, f"{report}'s run")
            if differs is not None:
                raise ResumeMismatch(
                    f"--resume: {differs}. Resume with the same options, or start a new report; {nothing}"
                )
        applied = existing and header is not None and (header.apply or last_run(Path(report)).applied)
        if existing:
            last, self.sent = outcomes_and_sends(Path(report))
            self.book = ResumeBook.keyed(last, FINAL)
        run_id = header.run_id if header is not None else RunIdentity.new(utc_now()).run_id
        self.open_report(
            RunHeader(
                run_id=run_id,
                command=self.command,
                manifest=header_path(source),
                rows=0,
                digest="",
                shape=shape,
                started_at=now_iso(),
                connection={} if connection is None else connection.recorded(),
                ends=report != "-",
                apply=apply,
            ),
            resume=resume,
        )
        self._began = "" if report == "-" else now_iso()  # standard output is not resumed: no end line
        if applied and not apply:  # its planned records would read as done what an --apply left undone
            self._began = ""
            self.tally.notes.append(
                f"a run applied to this report: this plan does not finish it; {self.command} --apply "
                "--resume with it does"
            )
        if apply and header is not None and not header.apply:
            self.journal(
                ActionRecord(
                    run_id=run_id,
                    command=self.command,
                    key="",
                    outcome=Action.APPLYING,
                    started_at=self._began,
                    finished_at=self._began,
                )
            )

    async def connect(self, connection: Connection, policy: RetryPolicy | None = None) -> Router:
        """The run's router (its session closes with the frame); its closed routes make exit 3."""
        from orchestrator.api.routes import connect  # noqa: PLC0415 - aiohttp loads only when sending

        if self.closing is not None:
            self.closing.apart(reads=connection.files())
        self.router = await connect(self._stack, connection, policy)
        return self.router

    async def enter(self, context: contextlib.AbstractAsyncContextManager[T]) -> T:
        """Keep an async context open until the run ends (the demo's emulator)."""
        return await self._stack.enter_async_context(context)

    # 3. signals and drain
    def stopping(self) -> bool:
        """True once a signal asked the drain phase to take no new work."""
        return self._stopped

    def draining(self) -> contextlib.AbstractContextManager[None]:
        """The drain phase, entered around the acting itself (deletions, rollbacks): there a signal stops
        new work and gives work in flight the grace period; elsewhere (listings, checks) it stops at once."""

        def stop() -> None:
            self._stopped = True

        return draining(
            stop=stop,
            grace=self.grace,
            received=self.signals,
            console=self.console,
            sync=self.sync,
            what=self.drain,
            left="work in flight has no record; --resume looks at it again before acting",
        )

    def sync(self) -> None:
        if self.writer is not None:
            self.writer.sync()

    @contextlib.asynccontextmanager
    async def freezing(
        self,
        plan: HookPlan,
        *,
        manifest: str,
        servers: ServerRows | None = None,
        deadline: float | None = None,
    ) -> AsyncIterator[Hooks | None]:
        """create's freeze hooks (``hooks.Hooks``, ``None`` when ``plan`` has none), entered inside the
        drain around the rows of ``manifest`` (the report is open): leaving runs every post-hook owed, and
        the end of the run names the hooks that failed (a failed post-hook makes the exit code 1). A row
        is let through the gate just before it is sent, so a dry run runs no hook."""
        if not plan:
            yield None
            return
        # subprocesses and anyio's process machinery: 57 M instructions a dry run does not pay
        # (results.md, session 13's function-level imports)
        from orchestrator.hooks import HookContext, Hooks  # noqa: PLC0415 - see above

        self.hooks = Hooks(
            plan,
            context=HookContext.of(self.run_id, manifest=manifest, report=self.report),
            console=self.console,
            signals=self.signals,
            servers=servers,
            deadline=deadline,
        )
        async with self.hooks.frozen() as hooks:
            yield hooks

    # 4. the tally
    def write(self, record: Record | ActionRecord) -> None:
        """Append ``record`` to the report and count it."""
        assert self.writer is not None  # noqa: S101 - a record is written only after the report opened
        self.writer.write_line(record.to_json())
        self.tally.add(record)

    def journal(self, record: ActionRecord) -> None:
        """Append a line that is no key's outcome (``sending``, before a rollback or a DELETE leaves):
        written (on disk, not buffered), not counted; raises ``ReportUnwritable`` when it cannot be."""
        assert self.writer is not None  # noqa: S101 - a record is written only after the report opened
        self.writer.write_line(record.to_json())

    # 6. notifications
    async def _notify_end(self, ended: BaseException | None) -> None:
        """The end ping and the webhooks (the start ping, if still in flight, is dropped first); they are
        sent even when the run was cancelled by a signal, within their budget."""
        if self._notifier is None:
            return

        code = self.exit_code if ended is None else exit_code_of(ended)
        where = "standard output" if self.report == "-" else self.report
        if self._ended is not None:
            text, summary = self._ended
        else:  # the run stopped before its summary: what it counted, and why it stopped
            why = "" if ended is None else reason_of(ended)
            text = f"{self.tally.render()}\nreport: {where}\nexit {code}" + (f": {why}" if why else "")
            summary = {"command": self.command, "exit_code": code, **({"error": why} if why else {})}
        messages = self._notifier.end_messages(
            command=self.command, run_id=self.run_id, exit_code=code, text=text, summary=summary, report=where
        )
        if self._pinging is not None:
            self._pinging.cancel_scope.cancel()
            # A run cancelled by a signal is cancelled here too: the end ping goes out all the same.
            with contextlib.suppress(anyio.get_cancelled_exc_class()):
                await self._pinging.__aexit__(None, None, None)
        with anyio.CancelScope(shield=True):
            await self._notifier.send(messages)

    # 5. the end
    def _finish(self) -> int:
        """Print the summary, name closed routes, write the side files; the exit code."""
        tally, console = self.tally, self.console
        where = "standard output" if self.report == "-" else self.report
        if self.router is not None and not tally.counting.rows:  # a create run's come with its phases
            tally.sent(self.router.counts())
        if self.hooks is not None:
            tally.notes += self.hooks.notes()
            self.summary["hooks"] = self.hooks.summary()
            self.at_least = max(self.at_least, self.hooks.exit_code)
        data = tally.to_dict()
        text = f"{tally.render()}\nreport: {where}"
        console.event("summary", text, report=where, **data)
        closures = [] if self.router is None else self.router.closures()
        for closure in closures:
            console.error(closure.message, code=closure.code)
        if closures:
            console.error("stopped sending where noted above; fix the cause and run again with --resume")
            code = RunAborted.exit_code
        else:
            code = max(tally.exit_code, self.at_least)
        if self.signals:  # drained after a signal: the process exits 130/143, and the side files say so
            code = 128 + self.signals[0]
        summary = {**({"command": self.command} if not tally.counting.rows else {}), **data}
        families = metrics.tally_families(
            tally,
            command=self.command,
            throttled=0 if self.router is None else self.router.throttled,
            also=self.also,
        )
        summary = {**summary, "exit_code": code, **self.summary}
        if not self.signals:  # a signal from now on cannot change what the side files say
            run_finished(code)
        write_side_files(
            self.closing,
            command=self.command,
            summary=summary,
            families=families,
            exit_code=code,
            console=console,
        )
        if self.signals:  # drained: a second signal from now on exits with what the side files say
            run_finished(code)
        self._ended = (text, summary)
        return code
