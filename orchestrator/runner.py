"""The bulk run: manifest rows in, one report record per row out, through a fixed pool of workers.

A producer feeds valid rows into a bounded memory stream (so reading never runs far ahead of
sending); ``concurrency`` workers each take a row, send its request, and write its record. Rows
that fail are records, not exceptions; only run-fatal errors escape and cancel the task group.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from datetime import datetime

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from orchestrator.client import Answer
from orchestrator.errors import CredentialsRefused, TransportError
from orchestrator.iam import PasswordAuth, ProjectLookupFailed
from orchestrator.models import Outcome, Record, SnapshotRequest, utc_iso, utc_now
from orchestrator.report import ReportWriter, Tally
from orchestrator.routing import Route, Router

THROTTLING_CODES = frozenset({"APIGW.0308", "APIG.0308"})


def is_throttled(answer: Answer) -> bool:
    return answer.status == 429 or answer.error()[0] in THROTTLING_CODES


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RunPlan:
    """What the runner needs besides rows: identity, pool size, and whether to send at all."""

    run_id: str
    concurrency: int
    dry_run: bool = False


class Runner:
    """Runs one plan: ``router`` gives each row its endpoint and project; ``writer`` takes records."""

    def __init__(
        self,
        plan: RunPlan,
        *,
        router: Router | None,
        writer: ReportWriter,
        tally: Tally,
    ) -> None:
        self.plan = plan
        self.router = router
        self.writer = writer
        self.tally = tally

    def emit(self, record: Record) -> None:
        self.writer.write(record)
        self.tally.add(record)

    async def run(self, items: Iterable[SnapshotRequest | Record]) -> None:
        """Send every valid row and record every row; returns when all records are written."""
        send, receive = anyio.create_memory_object_stream[SnapshotRequest](self.plan.concurrency)
        async with anyio.create_task_group() as group:
            async with receive:
                for _ in range(self.plan.concurrency):
                    group.start_soon(self._worker, receive.clone())
            group.start_soon(self._produce, items, send)

    async def _produce(
        self, items: Iterable[SnapshotRequest | Record], send: ObjectSendStream[SnapshotRequest]
    ) -> None:
        async with send:
            for item in items:
                if isinstance(item, Record):
                    self.emit(item)
                elif self.plan.dry_run:
                    self.emit(self._record(item, Outcome.PLANNED, utc_now(), time.monotonic()))
                else:
                    await send.send(item)
                await anyio.lowlevel.checkpoint()

    async def _worker(self, receive: ObjectReceiveStream[SnapshotRequest]) -> None:
        async with receive:
            async for request in receive:
                self.emit(await self.process(request))

    async def process(self, request: SnapshotRequest) -> Record:
        """Send one row's create request and turn whatever happens into its record."""
        if self.router is None:
            raise RuntimeError("a dry run sends nothing")
        started, clock = utc_now(), time.monotonic()
        try:
            route = await self.router.route_for(request)
        except (ProjectLookupFailed, CredentialsRefused) as exc:
            return self._record(
                request, Outcome.FAILED, started, clock, attempts=0, error=(exc.code, exc.message)
            )
        except TransportError as exc:
            return self._record(
                request, Outcome.FAILED, started, clock, attempts=0, error=(exc.code, str(exc))
            )
        request = dataclasses.replace(request, project_id=route.project_id)
        if route.refused is not None:
            return self._not_sent(request, route, started, clock)
        try:
            answer, attempts = await self._send(request, route)
        except CredentialsRefused as exc:
            self.router.refused = exc
            return self._record(
                request, Outcome.FAILED, started, clock, attempts=0, error=(exc.code, exc.message)
            )
        except TransportError as exc:
            return self._record(request, Outcome.FAILED, started, clock, error=(exc.code, str(exc)))
        if route.refused is not None and answer.status in (401, 403):
            code, message = answer.error()
            return self._record(
                request,
                Outcome.FAILED,
                started,
                clock,
                answer=answer,
                attempts=attempts,
                error=(code, message),
            )
        return self._from_answer(request, answer, started, clock, attempts=attempts)

    async def _send(self, request: SnapshotRequest, route: Route) -> tuple[Answer, int]:
        """One create request; after a 401 with renewable credentials, one more with a new token.

        A 401 comes from the gateway before EVS sees the request, so sending again cannot double.
        """
        answer = await route.client.create_snapshot(request, route.project_id)
        attempts = 1
        auth = route.client.auth
        if answer.status == 401 and isinstance(auth, PasswordAuth):
            auth.forget(route.project_id, answer.sent_with)
            answer = await route.client.create_snapshot(request, route.project_id)
            attempts += 1
        route.observe(answer)
        return answer, attempts

    def _not_sent(self, request: SnapshotRequest, route: Route, started: datetime, clock: float) -> Record:
        refused = route.refused
        assert refused is not None  # noqa: S101 - checked by the caller
        message = f"not sent: {route.name} refused the credentials ({refused.message})"
        return self._record(
            request, Outcome.FAILED, started, clock, attempts=0, error=(refused.code, message)
        )

    def _from_answer(
        self, request: SnapshotRequest, answer: Answer, started: datetime, clock: float, *, attempts: int
    ) -> Record:
        if answer.status == 202:
            snapshot = answer.body.get("snapshot") if isinstance(answer.body, dict) else None
            snapshot = snapshot if isinstance(snapshot, dict) else {}
            return self._record(
                request,
                Outcome.ACCEPTED,
                started,
                clock,
                answer=answer,
                attempts=attempts,
                snapshot_id=snapshot.get("id"),
                snapshot_status=snapshot.get("status"),
            )
        code, message = answer.error()
        final = 400 <= answer.status < 500 and not is_throttled(answer)
        return self._record(
            request,
            Outcome.REJECTED if final else Outcome.FAILED,
            started,
            clock,
            answer=answer,
            attempts=attempts,
            error=(code, message),
        )

    def _record(
        self,
        request: SnapshotRequest,
        outcome: Outcome,
        started: datetime,
        clock: float,
        *,
        answer: Answer | None = None,
        attempts: int = 1,
        snapshot_id: str | None = None,
        snapshot_status: str | None = None,
        error: tuple[str, str | None] | None = None,
    ) -> Record:
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
            snapshot_id=snapshot_id,
            snapshot_status=snapshot_status,
            error_code=None if error is None else error[0],
            error_message=None if error is None else error[1],
            attempts=attempts if outcome is not Outcome.PLANNED else 0,
            started_at=utc_iso(started),
            finished_at=utc_iso(utc_now()),
            elapsed_ms=round((time.monotonic() - clock) * 1000),
        )
