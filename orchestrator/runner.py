"""The bulk run: manifest rows in, one report record per row out, through a fixed pool of workers.

A producer feeds valid rows into a bounded memory stream (so reading never runs far ahead of
sending); ``concurrency`` workers each take a row, send its request under the retry policy, and
write its record. Rows that fail are records, not exceptions; only run-fatal errors escape.

The create API has no idempotency key, so an attempt whose outcome is uncertain (no answer, or a
5xx) is followed by a lookup of the snapshot by volume and (deterministic) name before anything is
sent again: a snapshot found there makes the row ``accepted`` with ``reconciled: true``.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from orchestrator.errors import CredentialsRefused, ProjectLookupFailed, TransportError
from orchestrator.models import Answer, Outcome, Record, SnapshotRequest, utc_iso, utc_now
from orchestrator.report import ReportWriter, ResumeBook
from orchestrator.retry import RetryPolicy, Verdict, classify, retry_after
from orchestrator.tally import Tally

if TYPE_CHECKING:
    from orchestrator.api.routes import Route, Router

GONE_STATUSES = frozenset({"deleting", "error_deleting"})


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RunPlan:
    """What the runner needs besides rows: identity, pool size, patience, and whether to send at all."""

    run_id: str
    concurrency: int
    dry_run: bool = False
    policy: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    deadline: float | None = None  # time.monotonic() after which nothing more is sent
    seed: int | None = None


@dataclasses.dataclass(slots=True)
class _Attempt:
    """The state of one row's tries."""

    attempts: int = 0
    lookups: int = 0
    uncertain: bool = False
    answer: Answer | None = None
    error: tuple[str, str | None] | None = None


class Runner:
    """Runs one plan: ``router`` gives each row its endpoint and project; ``writer`` takes records."""

    def __init__(
        self,
        plan: RunPlan,
        *,
        router: Router | None,
        writer: ReportWriter,
        tally: Tally,
        resume: ResumeBook | None = None,
    ) -> None:
        self.plan = plan
        self.router = router
        self.writer = writer
        self.tally = tally
        self.resume = resume
        self.random = random.Random(plan.seed)
        self.stopping = False

    def emit(self, record: Record) -> None:
        self.writer.write(record)
        self.tally.add(record)

    def stop(self) -> None:
        """Take no new rows; rows being worked on finish (the caller bounds how long)."""
        self.stopping = True

    async def run(self, items: Iterable[SnapshotRequest | Record]) -> None:
        """Send every valid row and record every row; returns when all records are written."""
        send, receive = anyio.create_memory_object_stream[tuple[SnapshotRequest, bool]](
            4 * self.plan.concurrency
        )
        async with anyio.create_task_group() as group:
            async with receive:
                for _ in range(self.plan.concurrency):
                    group.start_soon(self._worker, receive.clone())
            group.start_soon(self._produce, items, send)

    async def _produce(
        self, items: Iterable[SnapshotRequest | Record], send: ObjectSendStream[tuple[SnapshotRequest, bool]]
    ) -> None:
        async with send:
            for item in items:
                if self.stopping:
                    return
                previous = None if self.resume is None else self.resume.outcome(item.row)
                if self.resume is not None and self.resume.done(item.row) and previous is not None:
                    self.tally.add_previous(previous)
                elif isinstance(item, Record):
                    self.emit(item)
                elif self.plan.dry_run:
                    self.emit(self._record(item, Outcome.PLANNED, utc_now(), time.monotonic(), _Attempt()))
                else:
                    look_first = self.resume is not None and self.resume.uncertain(item.row)
                    await send.send((item, look_first))
                    continue
                if item.row % 64 == 0:
                    await (
                        anyio.lowlevel.checkpoint()
                    )  # rows written without sending must not starve the workers

    async def _worker(self, receive: ObjectReceiveStream[tuple[SnapshotRequest, bool]]) -> None:
        async with receive:
            async for request, look_first in receive:
                if self.stopping:
                    continue  # left without a record: --resume picks it up
                record = await self.process(request, look_first=look_first)
                if record is not None:
                    self.emit(record)

    async def process(self, request: SnapshotRequest, *, look_first: bool = False) -> Record | None:
        """Create one row's snapshot under the retry policy; ``None`` when stopped before its end."""
        if self.router is None:
            raise RuntimeError("a dry run sends nothing")
        started, clock = utc_now(), time.monotonic()
        state = _Attempt(uncertain=look_first)
        try:
            route = await self.router.route_for(request)
        except (ProjectLookupFailed, CredentialsRefused) as exc:
            return self._failed(request, started, clock, state, (exc.code, exc.message))
        except TransportError as exc:
            return self._failed(request, started, clock, state, (exc.code, str(exc)))
        if request.project_id != route.project_id:
            request = dataclasses.replace(request, project_id=route.project_id)
        try:
            return await self._attempts(request, route, state, started, clock)
        except CredentialsRefused as exc:
            self.router.refused = exc
            return self._failed(request, started, clock, state, (exc.code, exc.message))
        except ProjectLookupFailed as exc:  # IAM would not scope a token to this project
            return self._failed(request, started, clock, state, (exc.code, exc.message))

    async def _attempts(
        self, request: SnapshotRequest, route: Route, state: _Attempt, started: datetime, clock: float
    ) -> Record | None:
        policy = self.plan.policy
        while True:
            if route.refused is not None:
                return self._not_sent(request, route, started, clock, state)
            if self._past_deadline():
                return self._failed(
                    request, started, clock, state, ("DEADLINE_EXCEEDED", "the run's --deadline passed")
                )
            if state.uncertain:
                found = await self._look_up(request, route, state)
                if isinstance(found, dict):
                    return self._reconciled(request, started, clock, state, found)
                if found is False:
                    state.uncertain = False  # certainly not created: safe to send
                elif state.lookups >= policy.max_lookups:
                    return self._unconfirmed(request, started, clock, state)
            wait = None  # after a lookup that could not answer: back off, then look again
            if not state.uncertain:
                if state.attempts >= policy.max_attempts:
                    return self._record(request, Outcome.FAILED, started, clock, state)
                await route.limiter.acquire()
                verdict, wait = await self._send_once(request, route, state)
                if verdict is Verdict.SUCCESS:
                    route.limiter.on_success()
                    return self._accepted(request, started, clock, state)
                if verdict is Verdict.FINAL:
                    outcome = Outcome.FAILED if route.refused is not None else Outcome.REJECTED
                    return self._record(request, outcome, started, clock, state)
            if self.stopping:
                return None
            await self._pause(
                wait if wait is not None else policy.backoff(max(1, state.attempts), self.random)
            )

    async def _send_once(
        self, request: SnapshotRequest, route: Route, state: _Attempt
    ) -> tuple[Verdict, float | None]:
        """One create request (two after a 401 with renewable credentials).

        Returns the verdict and the ``Retry-After`` seconds, if any.
        """
        state.attempts += 1
        try:
            answer = await route.client.create_snapshot(request, route.project_id)
            if answer.status == 401 and route.client.auth.forget(route.project_id, answer.sent_with):
                # A 401 comes from the gateway before EVS sees the request: sending again cannot double.
                state.attempts += 1
                answer = await route.client.create_snapshot(request, route.project_id)
        except TransportError as exc:
            state.uncertain, state.answer, state.error = exc.may_have_arrived, None, (exc.code, str(exc))
            return (Verdict.UNCERTAIN if exc.may_have_arrived else Verdict.RETRY), None
        route.observe(answer)
        state.answer = answer
        state.error = None if answer.ok else answer.error()
        verdict = classify(answer.status, None if state.error is None else state.error[0])
        if verdict is Verdict.RETRY:
            route.limiter.on_throttled()
        state.uncertain = verdict is Verdict.UNCERTAIN
        return verdict, retry_after(answer.retry_after)

    async def _look_up(
        self, request: SnapshotRequest, route: Route, state: _Attempt
    ) -> dict[str, Any] | bool | None:
        """The snapshot this row may have created.

        Returns its dict, ``False`` when it surely does not exist, ``None`` when the lookup failed.
        """
        state.lookups += 1
        await route.limiter.acquire()
        try:
            answer = await route.client.list_snapshots(
                route.project_id, [("volume_id", request.volume_id), ("name", request.name)]
            )
        except TransportError:
            return None
        route.observe(answer)
        if answer.status == 429:
            route.limiter.on_throttled()
        if answer.status != 200 or not isinstance(answer.body, dict):
            return None
        for snapshot in answer.body.get("snapshots") or []:
            if (
                isinstance(snapshot, dict)
                and snapshot.get("name") == request.name
                and str(snapshot.get("volume_id", "")).lower() == request.volume_id
                and snapshot.get("status") not in GONE_STATUSES
            ):
                return snapshot
        return False

    async def _pause(self, seconds: float) -> None:
        if self.plan.deadline is not None:
            seconds = min(seconds, max(0.0, self.plan.deadline - time.monotonic()))
        await anyio.sleep(seconds)

    def _past_deadline(self) -> bool:
        return self.plan.deadline is not None and time.monotonic() >= self.plan.deadline

    def _unconfirmed(
        self, request: SnapshotRequest, started: datetime, clock: float, state: _Attempt
    ) -> Record:
        last = state.error[0] if state.error else "none"
        message = (
            f"could not confirm whether the snapshot exists after {state.lookups} lookups "
            f"(last error: {last}); --resume looks again before sending"
        )
        return self._failed(request, started, clock, state, ("UNCONFIRMED", message))

    def _reconciled(
        self,
        request: SnapshotRequest,
        started: datetime,
        clock: float,
        state: _Attempt,
        snapshot: dict[str, Any],
    ) -> Record:
        return self._record(
            request, Outcome.ACCEPTED, started, clock, state, snapshot=snapshot, reconciled=True
        )

    def _accepted(self, request: SnapshotRequest, started: datetime, clock: float, state: _Attempt) -> Record:
        body = state.answer.body if state.answer is not None else None
        snapshot = body.get("snapshot") if isinstance(body, dict) else None
        return self._record(
            request,
            Outcome.ACCEPTED,
            started,
            clock,
            state,
            snapshot=snapshot if isinstance(snapshot, dict) else {},
        )

    def _failed(
        self,
        request: SnapshotRequest,
        started: datetime,
        clock: float,
        state: _Attempt,
        error: tuple[str, str | None],
    ) -> Record:
        state.error = error
        return self._record(request, Outcome.FAILED, started, clock, state)

    def _not_sent(
        self, request: SnapshotRequest, route: Route, started: datetime, clock: float, state: _Attempt
    ) -> Record:
        refused = route.refused
        assert refused is not None  # noqa: S101 - checked by the caller
        if state.attempts and state.answer is not None and state.answer.status in (401, 403):
            return self._record(request, Outcome.FAILED, started, clock, state)
        error = (refused.code, f"not sent: {route.name} refused the credentials ({refused.message})")
        return self._failed(request, started, clock, state, error)

    def _record(
        self,
        request: SnapshotRequest,
        outcome: Outcome,
        started: datetime,
        clock: float,
        state: _Attempt,
        *,
        snapshot: dict[str, Any] | None = None,
        reconciled: bool = False,
    ) -> Record:
        answer = state.answer
        error = None if outcome is Outcome.ACCEPTED else state.error
        return Record(
            run_id=self.plan.run_id,
            row=request.row,
            volume_id=request.volume_id,
            project_id=request.project_id,
            region=request.region,
            name=request.name,
            outcome=outcome,
            http_status=None if answer is None else answer.status,
            request_id=None if answer is None else answer.request_id,
            snapshot_id=None if snapshot is None else snapshot.get("id"),
            snapshot_status=None if snapshot is None else snapshot.get("status"),
            error_code=None if error is None else error[0],
            error_message=None if error is None else error[1],
            attempts=state.attempts,
            reconciled=reconciled,
            started_at=utc_iso(started),
            finished_at=utc_iso(utc_now()),
            elapsed_ms=round((time.monotonic() - clock) * 1000),
        )
