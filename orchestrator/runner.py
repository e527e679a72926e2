"""The bulk run: manifest rows in, one report record per row out, through a fixed pool of workers.

``concurrency`` workers (one task each) take the next row of the manifest whenever they are free (so
reading never runs ahead of sending), send its create request, and write its record. Rows that fail
are records, not exceptions; only run-fatal errors escape.

The create API has no idempotency key, and the cloud can act late: the gateway may answer 504 (or
the client give up) while EVS still creates the snapshot seconds later. So an attempt whose outcome
is uncertain (no answer, or a 5xx) hands its row to a settling task, and the worker takes the next
row. The settling task looks the row's snapshot up (the row's volume with this run's marker, never
the name) until it is found, or until the settle window has passed with nothing found; only then
may the row be sent again.
"""

from __future__ import annotations

import dataclasses
import enum
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Protocol, TypeVar

import anyio
from anyio.abc import TaskGroup

from orchestrator import defaults
from orchestrator.api import evs
from orchestrator.api.safe import ONE_TRY, volume_snapshots
from orchestrator.api.views import Snapshot, created_snapshot
from orchestrator.errors import ListingFailed, ProjectLookupFailed, RouteClosed, TransportError, UsageError
from orchestrator.models import (
    LIMIT_REACHED,
    UNCONFIRMED,
    Answer,
    Outcome,
    Record,
    SnapshotRequest,
    planned,
    record_head,
    record_tail,
    sending_now,
    utc_iso_now,
)
from orchestrator.report import ReportWriter, ResumeBook
from orchestrator.resume import RunIndex
from orchestrator.retry import RetryPolicy, TryAgain, Verdict, polling, retry_after, retrying
from orchestrator.tally import Tally

if TYPE_CHECKING:
    from orchestrator.api.routes import Route, Router

GONE_STATUSES = frozenset({"deleting", "error_deleting"})
T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class RunPlan:
    """What the runner needs besides rows: identity, pool size, patience, and whether to send at all."""

    run_id: str
    concurrency: int
    dry_run: bool = False
    policy: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    deadline: float | None = None  # time.monotonic() after which nothing more is sent
    settle: float = defaults.SETTLE
    timeout: float = defaults.TIMEOUT  # one request: a resumed row's window counts from its send plus this


class _Attempt:
    """The state of one row's tries. A plain class, not a dataclass (one is made a row): a row sets
    only its start; every other field reads the class's default until a try changes it."""

    attempts: int = 0
    lookups: int = 0
    uncertain_since: float | None = None  # monotonic time of the attempt that may have acted
    maybe_sent: bool = False  # some attempt may have reached EVS
    in_flight: bool = False  # a request is out (a deadline that cancels it leaves the row uncertain)
    resumed: bool = False  # an earlier process sent it: the run's listing is asked before any lookup
    sent_before: bool = False  # an earlier process sent it: sending it again puts the run in doubt
    answer: Answer | None = None
    error: tuple[str, str | None] | None = None
    head: bytes | None = None  # the row's ``models.record_head``, once its journal line made it
    lookup_error: str | None = None  # why the last lookup failed (``ListingFailed``'s message)

    def __init__(self, resumed_since: float | None = None) -> None:
        self.started = utc_iso_now()
        self.clock = time.monotonic()
        if resumed_since is not None:  # an earlier process sent it; it may have acted until then
            self.uncertain_since = resumed_since
            self.maybe_sent = self.resumed = self.sent_before = True


class Gate(Protocol):
    """What rows pass before they are sent (``hooks.Hooks``: create's freeze hooks). The runner says
    which manifest rows it has taken (``passed``: every row, ``queued`` for those it will send), that it
    took the last (``closed``), asks before a row's first request (``enter``: ``None``, or why the row is
    not sent), and says when a queued row ended (``done``: its record, or ``None`` when it was left
    without one). ``stop`` comes with the runner's."""

    def passed(self, row: int, *, queued: bool) -> None: ...

    def closed(self) -> None: ...

    async def enter(self, row: int) -> str | None: ...

    def done(self, row: int, record: Record | None) -> None: ...

    def stop(self) -> None: ...


class Stopped(Exception):
    """The run is stopping (a signal): the row is left without a record, for --resume."""


class Runner:
    """Runs one plan: ``router`` gives each row its route; ``writer`` takes records."""

    def __init__(
        self,
        plan: RunPlan,
        *,
        router: Router | None,
        writer: ReportWriter,
        tally: Tally,
        resume: ResumeBook[int, Outcome] | None = None,
        gate: Gate | None = None,
    ) -> None:
        self.plan = plan
        self.gate = gate
        self.router = router
        self.writer = writer
        self.tally = tally
        self.resume = resume
        self.random = random.Random()
        self.stopping = False
        self.settling = 0
        # True once a create may have acted twice or late (resent, answered 5xx/timeout, or cut off),
        # or when an earlier process of a resumed run may have (``ResumeBook.doubted``), or a row it
        # sent is sent again: only then can the sweep find anything.
        self.in_doubt = resume is not None and resume.doubted
        self._settlers: TaskGroup | None = None
        self._taken_all = False  # a worker found no row left to take (or the run stopped taking them)
        # Settling rows wait (mostly asleep) in tasks of their own; their number is bounded, so that a
        # run where many rows are uncertain holds the workers back instead of growing without limit.
        self._settle_slots = anyio.Semaphore(max(64, 8 * plan.concurrency))
        self.index = None if resume is None else RunIndex(plan.run_id, plan.policy)
        self._journalled = writer.resumable  # each create attempt is journalled before it leaves

    def emit(self, record: Record) -> None:
        self.writer.write(record)
        self.tally.add(record)

    def stop(self) -> None:
        """Take no new rows; rows being worked on finish (the caller bounds how long)."""
        self.stopping = True
        if self.gate is not None:
            self.gate.stop()

    async def run(self, items: Iterable[SnapshotRequest | Record]) -> None:
        """Send every valid row and record every row; returns when all records are written."""
        rows = iter(items)
        async with anyio.create_task_group() as settlers:
            self._settlers = settlers
            async with anyio.create_task_group() as group:
                for _ in range(self.plan.concurrency):
                    group.start_soon(self._worker, rows)

    async def _worker(self, rows: Iterator[SnapshotRequest | Record]) -> None:
        """One slot of the pool: take the next row of the manifest (read, validated, only when a
        slot is free: nothing runs ahead of sending) and drive it to its record, until none is left
        or the run stops. Rows that are not sent (invalid, planned, finished before) are written here."""
        gate, resume, plan = self.gate, self.resume, self.plan
        while True:
            item = None if self.stopping else next(rows, None)
            if item is None:  # the last row is taken, or the run stops taking them
                if gate is not None and not self._taken_all:
                    self._taken_all = True
                    gate.closed()  # freezes whose rows have all ended thaw
                return
            previous = None if resume is None else resume.outcome(item.row)
            if resume is not None and resume.finished(item.row) and previous is not None:
                self.tally.add_previous(previous, item.row)
            elif isinstance(item, Record):
                self.emit(item)
            elif plan.dry_run:
                self.emit(planned(plan.run_id, item))
            else:
                since = None if resume is None else resume.uncertain_since(item.row)
                if gate is not None:
                    gate.passed(item.row, queued=True)
                # A resumed row's request may have been answered this much later than it left.
                state = _Attempt(None if since is None else since + plan.timeout)
                await self._row(item, state, settling=False)
                continue
            if gate is not None:
                gate.passed(item.row, queued=False)
            if item.row % 64 == 0:
                await anyio.lowlevel.checkpoint()  # rows written without sending must not starve the others

    async def _row(self, request: SnapshotRequest, state: _Attempt, *, settling: bool) -> None:
        """Drive one row to its record, under the run's deadline."""
        record: Record | _Ended | None = None
        try:
            if self.plan.deadline is None:  # no cancel scope to enter and leave for every row
                record = await self.process(request, state, settling=settling)
            else:
                with anyio.move_on_after(self.plan.deadline - time.monotonic()) as scope:
                    record = await self.process(request, state, settling=settling)
                if scope.cancelled_caught:
                    record = self._deadline(request, state)
        except Stopped:
            if self.gate is not None:
                self.gate.done(request.row, None)
            return
        if isinstance(record, Record):
            self.emit(record)
            if self.gate is not None:
                self.gate.done(request.row, record)

    async def process(
        self, request: SnapshotRequest, state: _Attempt, *, settling: bool
    ) -> Record | _Ended | None:
        """Create one row's snapshot: its record (``_Ended.WRITTEN``: already written), or ``None`` when
        the row went to a settling task."""
        if self.router is None:
            raise UsageError("a dry run sends nothing")
        if self.gate is not None and not settling:
            refused = await self.gate.enter(request.row)
            if self.stopping:
                raise Stopped
            if refused is not None:
                return self._failed(request, state, ("PRE_HOOK_FAILED", refused))
        route = self.router.known(request.project_id, request.region)  # every row but a project's first
        if route is None:
            try:
                route = await self.router.route_for(request.project_id, request.region)
            except (ProjectLookupFailed, RouteClosed) as exc:
                return self._failed(request, state, (exc.code, exc.message))
            except TransportError as exc:
                return self._failed(request, state, (exc.code, str(exc)))
        if request.project_id != route.project_id:
            request = request._replace(project_id=route.project_id)
        try:
            # The row's create attempts, each after the lookups an uncertain one before it needs (in
            # this frame: one coroutine frame fewer a row).
            policy = self.plan.policy
            fresh = not (state.attempts or state.resumed or settling or state.uncertain_since is not None)
            if fresh and policy.max_attempts > 0:
                # The usual case, a fresh row's first attempt, sent without building the retry loop (as
                # its first attempt would be): the loop takes over, this attempt spent, only when the
                # answer asks for another try, after the pause the loop would have made.
                if self._past_deadline():
                    return self._deadline(request, state)
                if self.stopping:
                    raise Stopped
                try:
                    return await self._send_once(request, route, state)
                except TryAgain as exc:
                    if state.attempts < policy.max_attempts:
                        wait = exc.wait
                        await self._pause(
                            policy.backoff(state.attempts, self.random) if wait is None else wait
                        )
            if state.attempts < policy.max_attempts:
                # A settling task goes on where the worker stopped: the attempts left are its budget.
                budget = policy if not state.attempts else _spent(policy, state.attempts)
                tries = retrying(
                    budget,
                    pause=lambda _number, rng: policy.backoff(state.attempts, rng),
                    rng=self.random,
                    sleep=self._pause,
                    reraise=False,
                )
                async for attempt in tries:
                    with attempt:
                        ready = await self._ready(request, route, state, settling=settling)
                        if ready is not _Send.SEND:
                            return ready
                        if self.stopping:
                            raise Stopped
                        return await self._send_once(request, route, state)
            ready = await self._ready(request, route, state, settling=settling)  # the last one's lookups
            return self._record(request, Outcome.FAILED, state) if ready is _Send.SEND else ready
        except RouteClosed as exc:
            return self._closed(request, state, exc)
        except ProjectLookupFailed as exc:  # IAM would not scope a token to this project
            return self._failed(request, state, (exc.code, exc.message))
        except Unconfirmed:
            return self._unconfirmed(request, state, "lookups kept failing")

    async def _ready(
        self, request: SnapshotRequest, route: Route, state: _Attempt, *, settling: bool
    ) -> Record | _Send | None:
        """Before an attempt: a record when the row is decided (its deadline passed, or its snapshot was
        found), ``None`` when it went to a settling task, ``_Send.SEND`` when it may be sent."""
        if self._past_deadline():
            return self._deadline(request, state)
        if state.resumed:
            state.resumed = False
            found = await self._from_listing(request, route, state)
            if found is not None:
                return self._record(request, Outcome.ACCEPTED, state, snapshot=found, reconciled=True)
        if state.uncertain_since is not None:
            if not settling:
                await self._hand_to_settler(request, state)
                return None
            found = await self._settle(request, route, state)
            if found is not None:
                return self._record(request, Outcome.ACCEPTED, state, snapshot=found, reconciled=True)
        return _Send.SEND

    async def _from_listing(self, request: SnapshotRequest, route: Route, state: _Attempt) -> Snapshot | None:
        """A resumed row against its project's listing of the run: its snapshot, or ``None``.

        When the row's window had closed before the listing began, absence is proof: the row may be
        sent at once. Otherwise (or when the listing failed) it settles by lookups, as in a run.
        """
        assert self.index is not None  # noqa: S101 - a resumed row implies a resume book
        listing = await self.index.listing(route)
        if listing is None:
            return None
        found = listing.snapshot(request.volume_id)
        window = state.uncertain_since
        if found is None and window is not None and window + self.plan.settle <= listing.began:
            state.uncertain_since, state.maybe_sent = None, False
        return found

    async def _hand_to_settler(self, request: SnapshotRequest, state: _Attempt) -> None:
        assert self._settlers is not None  # noqa: S101 - set by run() before any worker starts
        self.settling += 1  # from now: a row waiting for a settling slot is settling, not a retry
        try:
            await self._settle_slots.acquire()
        except BaseException:
            self.settling -= 1
            raise

        async def settle() -> None:
            try:
                await self._row(request, state, settling=True)
            finally:
                self.settling -= 1
                self._settle_slots.release()

        self._settlers.start_soon(settle)

    async def _send_once(self, request: SnapshotRequest, route: Route, state: _Attempt) -> Record | _Ended:
        """One create request: the row's record when the answer decides it (``_Ended.WRITTEN`` when it
        is accepted and already written); raises ``TryAgain`` when it may be sent again (throttled, or
        no connection: after a pause; uncertain: after its lookups)."""
        state.attempts += 1
        if state.sent_before:
            self.in_doubt = True  # a commit of the earlier send later than its window would make two
        journal = (lambda: self._journal(request, state)) if self._journalled else None
        call = evs.create_snapshot(route.project_id, request, self.plan.run_id, before=journal)
        state.in_flight = True
        try:
            reply = await route.send(call)
        except RouteClosed as exc:
            state.in_flight = False
            if exc.answer is None:
                state.attempts -= 1  # refused before sending: nothing went out
                raise
            self.in_doubt = True  # the run ends without sending the rest: the sweep has the last word
            state.answer, state.error = exc.answer, exc.answer.error()  # this request was refused
            return self._record(request, Outcome.FAILED, state)
        except TransportError as exc:
            state.in_flight = False
            self.in_doubt = True
            state.answer, state.error = None, (exc.code, str(exc))
            if exc.may_have_arrived:
                # The window runs from now: the request may have waited for a slot before it left.
                state.maybe_sent, state.uncertain_since = True, time.monotonic()
                raise TryAgain(str(exc), wait=0.0) from None  # look it up first, no pause
            raise TryAgain(str(exc)) from None
        state.in_flight = False
        verdict = reply.verdict
        answer = reply.answer
        state.answer = answer
        state.error = None if answer.status < 400 else answer.error()  # ``answer.ok``, without the property
        if verdict is Verdict.SUCCESS:
            if self.gate is None:  # a gate takes the row's Record
                return self._accepted(request, state, answer)
            return self._record(request, Outcome.ACCEPTED, state, snapshot=Snapshot.from_body(answer.body))
        if verdict is Verdict.FINAL:
            return self._rejected(request, state)
        self.in_doubt = True  # the row is sent again or looked up: one snapshot or two?
        why = f"{answer.status} {state.error[0] if state.error else ''}"
        if verdict is Verdict.UNCERTAIN:
            state.maybe_sent, state.uncertain_since = True, time.monotonic()
            raise TryAgain(why, wait=0.0)  # look it up first, no pause
        raise TryAgain(why, wait=retry_after(answer.retry_after))

    def _accepted(self, request: SnapshotRequest, state: _Attempt, answer: Answer) -> _Ended:
        """The usual row's end, its create accepted: the record ``_record`` would give, written and
        counted from its fields (``models.record_tail`` after the row's head, ``Tally.add_row``) without
        building it."""
        snapshot_id, status = created_snapshot(answer.body)
        finished = utc_iso_now()
        elapsed = round((time.monotonic() - state.clock) * 1000)
        attempts, row = state.attempts, request.row
        head = state.head
        if head is None:  # not journalled (a report on standard output)
            head = record_head(
                self.plan.run_id, row, request.volume_id, request.project_id, request.region, request.name
            )
        self.writer.write_record(
            record_tail(
                head,
                Outcome.ACCEPTED,
                answer.status,
                snapshot_id,
                status,
                None,
                None,
                answer.request_id,
                attempts,
                False,  # reconciled
                state.started,
                finished,
                elapsed,
            )
        )
        self.tally.add_row(Outcome.ACCEPTED, row, attempts, elapsed, request.volume_id)
        return _Ended.WRITTEN

    def _journal(self, request: SnapshotRequest, state: _Attempt) -> None:
        """Record that a create of the row is leaving now (a ``sending`` side record), before it leaves."""
        head = state.head
        if head is None:  # the row's identity, serialised once for its journal lines and its record
            head = state.head = record_head(
                self.plan.run_id,
                request.row,
                request.volume_id,
                request.project_id,
                request.region,
                request.name,
            )
        self.writer.write_line(sending_now(head, state.attempts))

    async def _settle(self, request: SnapshotRequest, route: Route, state: _Attempt) -> Snapshot | None:
        """Look the row's snapshot up until found, or until the settle window has passed without it
        (``settle``); ``None``: nothing can still appear, the row may be sent again."""
        since = state.uncertain_since
        assert since is not None  # noqa: S101 - only called for an uncertain row
        found = await settle(
            lambda: self._look_up(request, route, state),
            since=since,
            plan=self.plan,
            stopping=lambda: self.stopping,
            pause=self._pause,
        )
        if found is None:
            state.uncertain_since = None  # nothing appeared in the whole window: safe to send again
        return found

    async def _look_up(
        self, request: SnapshotRequest, route: Route, state: _Attempt
    ) -> Snapshot | bool | None:
        """This run's snapshot of the row's volume, ``False`` when absent, ``None`` when unknown."""
        state.lookups += 1
        try:
            listed = await volume_snapshots(route, request.volume_id, ONE_TRY)
        except ListingFailed as exc:
            state.lookup_error = str(exc)
            return None
        for snapshot in listed:
            if (
                snapshot.marked(self.plan.run_id)
                and snapshot.volume_id == request.volume_id
                and snapshot.status not in GONE_STATUSES
            ):
                return snapshot
        return False

    async def _pause(self, seconds: float) -> None:
        if self.plan.deadline is not None:
            seconds = min(seconds, max(0.0, self.plan.deadline - time.monotonic()))
        if seconds > 0:  # no pause asked (a row in doubt goes to its lookups): no turn of the loop,
            await anyio.sleep(seconds)  # in which the row would be neither in flight nor settling

    def _past_deadline(self) -> bool:
        return self.plan.deadline is not None and time.monotonic() >= self.plan.deadline

    def _deadline(self, request: SnapshotRequest, state: _Attempt) -> Record:
        if state.maybe_sent or state.in_flight:
            return self._unconfirmed(request, state, "the run's --deadline passed")
        return self._failed(
            request, state, ("DEADLINE_EXCEEDED", "the run's --deadline passed before it was sent")
        )

    def _unconfirmed(self, request: SnapshotRequest, state: _Attempt, why: str) -> Record:
        self.in_doubt = True  # its snapshot may still appear: the sweep reconciles it
        last = state.error[0] if state.error else "none"
        if state.lookup_error is not None:
            last = f"{last}; the last lookup's: {state.lookup_error}"
        message = (
            f"{why}; could not confirm whether the snapshot exists after {state.lookups} lookups "
            f"(last error: {last}); --resume looks again before sending"
        )
        return self._failed(request, state, (UNCONFIRMED, message))

    def _closed(self, request: SnapshotRequest, state: _Attempt, exc: RouteClosed) -> Record:
        if state.maybe_sent:
            return self._unconfirmed(request, state, f"stopped sending ({exc.code})")
        return self._failed(request, state, (exc.code, f"not sent: {exc.message}"))

    def _rejected(self, request: SnapshotRequest, state: _Attempt) -> Record:
        code, message = state.error or ("", None)
        text = (message or "").lower()
        per_disk = code == "EVS.5400" and "snapshot" in text and "limit" in text
        if per_disk or code == "EVS.5413":  # the per-disk limit, or the project's quota
            limit = "the project's snapshot quota" if code == "EVS.5413" else "the per-disk snapshot limit"
            state.error = (
                LIMIT_REACHED,
                f"{message} ({limit}: run prune to delete old snapshots of this tool, then --resume)",
            )
        return self._record(request, Outcome.REJECTED, state)

    def _failed(self, request: SnapshotRequest, state: _Attempt, error: tuple[str, str | None]) -> Record:
        state.error = error
        return self._record(request, Outcome.FAILED, state)

    def _record(
        self,
        request: SnapshotRequest,
        outcome: Outcome,
        state: _Attempt,
        *,
        snapshot: Snapshot | None = None,
        reconciled: bool = False,
    ) -> Record:
        return row_record(
            self.plan.run_id,
            request,
            outcome,
            answer=state.answer,
            error=None if outcome is Outcome.ACCEPTED else state.error,
            attempts=state.attempts,
            started_at=state.started,
            clock=state.clock,
            snapshot=snapshot,
            reconciled=reconciled,
        )


def row_record(
    run_id: str,
    request: SnapshotRequest,
    outcome: Outcome,
    *,
    answer: Answer | None,
    error: tuple[str, str | None] | None,
    attempts: int,
    started_at: str,
    clock: float,
    snapshot: Snapshot | None = None,
    group_id: str | None = None,
    reconciled: bool = False,
) -> Record:
    """A row's record: its request, the last answer and error, its member snapshot (and group)."""
    return Record(
        run_id=run_id,
        row=request.row,
        volume_id=request.volume_id,
        project_id=request.project_id,
        region=request.region,
        name=request.name,
        outcome=outcome,
        http_status=None if answer is None else answer.status,
        request_id=None if answer is None else answer.request_id,
        snapshot_id=None if snapshot is None else snapshot.id or None,
        snapshot_status=None if snapshot is None else snapshot.status,
        snapshot_group_id=group_id,
        error_code=None if error is None else error[0],
        error_message=None if error is None else error[1],
        attempts=attempts,
        reconciled=reconciled,
        started_at=started_at,
        finished_at=utc_iso_now(),
        elapsed_ms=round((time.monotonic() - clock) * 1000),
    )


async def settle(
    look_up: Callable[[], Awaitable[T | bool | None]],
    *,
    since: float,
    plan: RunPlan,
    stopping: Callable[[], bool],
    pause: Callable[[float], Awaitable[None]],
) -> T | None:
    """The settling rule, for a row's snapshot and for a server's group alike: ``look_up()`` (the thing,
    ``False`` when absent, ``None`` when unknown) until it is found, or until ``plan.settle`` has passed
    since ``since`` (monotonic) with it absent: then ``None`` (nothing can still appear; it may be sent
    again). Raises ``Unconfirmed`` when ``max_lookups`` lookups in a row fail (one that answers starts
    the count again), ``Stopped`` when the run stops. Lookups run after 0.5 s, then back off up to 10 s."""
    failures = 0
    cap = min(max(1.0, plan.settle / 4), 10.0)
    async for poll in polling(first=min(0.5, plan.settle) or 0.05, factor=2.0, cap=cap, sleep=pause):
        found = await look_up()
        if found is not None and not isinstance(found, bool):
            return found
        window_left = since + plan.settle - time.monotonic()
        if found is None:
            failures += 1
            if failures >= plan.policy.max_lookups:
                raise Unconfirmed
        elif window_left <= 0:
            return None
        else:
            failures = 0
            poll.within(window_left)  # an absent one is looked at once more at the window's end
        if stopping():
            raise Stopped
    raise AssertionError("unreachable: polling without a timeout never ends")  # pragma: no cover


def _spent(policy: RetryPolicy, attempts: int) -> RetryPolicy:
    """``policy`` with ``attempts`` of its attempts already made."""
    return dataclasses.replace(policy, max_attempts=policy.max_attempts - attempts)


class _Send(enum.Enum):
    """The row may be sent (``_ready`` found nothing that decides it)."""

    SEND = "send"


class _Ended(enum.Enum):
    """The row's record is written already (``Runner._accepted``)."""

    WRITTEN = "written"


class Unconfirmed(Exception):
    """Lookups kept failing: whether the snapshot (or group) exists is unknown."""
