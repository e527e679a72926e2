"""``doctor --live VOLUME_ID``: one snapshot made and deleted on a scratch disk, proving what reading
alone cannot.

1. create a snapshot with the run marker and a probe metadata key, through the normal create path
   (``runner.Runner``: journal, settle, lookups; a create report the ``cleanup`` command reads);
2. GET it, and check that the metadata came back exactly (key case and value);
3. find it in the list by ``volume_id``, with and without ``all_granted_eps``;
4. with ``rollback``, roll the (detached) disk back to it, as ``rollback --apply`` does
   (``restore.start_row``, then ``restore.poll`` until it ends), except that it is sent once: an answer
   that may have been lost is settled by watching the disk (``RestorePlan.resend``), never by sending
   again;
5. delete it (``deleter.delete``), and check that the GET then answers 404 ``EVS.5404``.

If the round trip stops halfway (a failure, a signal), ``cleanup_hint`` is the ``cleanup`` command that
removes what it made; the caller prints it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from orchestrator.actions import Action
from orchestrator.api import evs
from orchestrator.api.probe import exchange, said, shown, without_every_ep
from orchestrator.api.views import Snapshot, Volume, metadata_in
from orchestrator.config import RunIdentity, WaitPlan
from orchestrator.defaults import RUN_MARKER_KEY, SETTLE
from orchestrator.deleter import Ended, delete
from orchestrator.doctor import Doctor
from orchestrator.errors import ListingFailed
from orchestrator.findings import Check, Result
from orchestrator.manifest import ManifestSource, manifest_digest
from orchestrator.models import Outcome, RunHeader, SnapshotRequest, utc_iso, utc_now
from orchestrator.preflight import SNAPSHOTTABLE
from orchestrator.report import ReportWriter, final_records
from orchestrator.restore import Finding, RestorePlan, poll, start_row
from orchestrator.retry import polling
from orchestrator.runner import Runner, RunPlan
from orchestrator.tally import Tally

if TYPE_CHECKING:
    from orchestrator.api.routes import Route
    from orchestrator.models import Answer, Record

PROBE_KEY = "Evs_Snapshot_Doctor_Probe"  # mixed case: a service that rewrites keys shows it
PROBE_VALUE = "Round-Trip Value/1"
POLL_FIRST = 0.2
POLL_MAX = 3.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class LiveSettings:
    volume_id: str
    report: Path  # the create report of the probe (``cleanup REPORT --apply`` removes what it made)
    rollback: bool = False
    patience: float = 300.0  # seconds a state change (available, gone) may take


class Live:
    """The round trip on one disk; ``made`` holds the snapshot once created, ``removed`` once gone."""

    def __init__(self, doctor: Doctor, settings: LiveSettings) -> None:
        self.doctor = doctor
        self.settings = settings
        self.made: str | None = None
        self.record: Record | None = None  # the create report's record of the probe
        self.sent = False  # a create left: a snapshot may exist
        self.removed = False
        self.run_id = ""

    @property
    def project_id(self) -> str:
        return self.doctor.project_id or ""

    def add(
        self, name: str, result: Result, meaning: str, fix: str = "", *sent: str, proves: tuple[int, ...] = ()
    ) -> bool:
        self.doctor.add(
            Check(name=f"live: {name}", result=result, meaning=meaning, fix=fix, sent=sent, proves=proves)
        )
        return result is not Result.FAIL

    def cleanup_hint(self, argv: list[str]) -> str | None:
        """The command that removes what the round trip made, while something may be left."""
        if not self.sent or self.removed:
            return None
        return " ".join(["evs-snapshot", "cleanup", str(self.settings.report), "--apply", *argv])

    async def run(self) -> None:
        """Every step in order; a failed step skips the rest (its check says why), except the delete:
        whatever failed after the create, the snapshot it made is deleted."""
        route = self.doctor.fresh_route()
        volume = await self._volume(route)
        if volume is None or not await self._create(volume):
            return
        if await self._read_back(route):
            await self._listed(route)
            if self.settings.rollback:
                await self._rollback(route)
        await self._delete(route)

    async def _volume(self, route: Route) -> Volume | None:
        call = evs.show_volume(self.project_id, self.settings.volume_id)
        answer = await exchange(route, call, self.doctor.policy)
        volume = Volume.from_body(answer.body) if answer.ok else None
        if volume is None:
            self.add(
                "disk",
                Result.FAIL,
                f"disk {self.settings.volume_id} cannot be read ({said(answer)})",
                "name a scratch disk of this project (and grant evs:volumes:get)",
                shown(call),
            )
            return None
        status = str(volume.status)
        if status not in SNAPSHOTTABLE or (self.settings.rollback and status != "available"):
            need = (
                "available (detached) for --live-rollback"
                if self.settings.rollback
                else "available or in-use"
            )
            self.add(
                "disk",
                Result.FAIL,
                f"disk {self.settings.volume_id} is {status}; it must be {need}",
                "",
                shown(call),
            )
            return None
        self.add("disk", Result.PASS, f"disk {self.settings.volume_id} is {status}", "", shown(call))
        return volume

    async def _create(self, volume: Volume) -> bool:
        """The normal create path: a one-row run of ``runner.Runner`` writing a create report."""

        report = self.settings.report
        manifest = report.with_name(report.stem + ".manifest.csv")
        identity = RunIdentity.new(utc_now())
        self.run_id = identity.run_id
        request = SnapshotRequest(
            row=1,
            line=2,
            volume_id=self.settings.volume_id,
            project_id=self.project_id,
            region=self.doctor.region,
            name=f"evs-snapshot-doctor-{identity.stamp}",
            description="evs-snapshot doctor --live probe (deleted at once)",
            force=volume.status == "in-use",
            metadata={PROBE_KEY: PROBE_VALUE},
        )
        connection = self.doctor.connection
        policy = self.doctor.policy
        with ReportWriter(str(report)) as writer:
            manifest.write_text(f"volume_id\n{self.settings.volume_id}\n", encoding="utf-8")
            source = ManifestSource.of(str(manifest), None)
            writer.write_header(
                RunHeader(
                    run_id=identity.run_id,
                    command="create",
                    manifest=str(manifest),
                    rows=1,
                    digest=manifest_digest(source, display=str(manifest)),
                    shape={},
                    started_at=utc_iso(identity.started),
                    journal=True,
                    window=60.0 + connection.limits.timeout,
                )
            )
            plan = RunPlan(
                run_id=identity.run_id, concurrency=1, policy=policy, timeout=connection.limits.timeout
            )
            runner = Runner(plan, router=self.doctor.router, writer=writer, tally=Tally(manifest_rows=1))
            self.sent = True
            await runner.run([request])
        records = list(final_records(report))
        record = records[-1] if records else None
        sent = shown(evs.create_snapshot(self.project_id, request, identity.run_id))
        if record is None or record.outcome is not Outcome.ACCEPTED or not record.snapshot_id:
            what = (
                "no record"
                if record is None
                else f"{record.outcome}: {record.error_code} {record.error_message}"
            )
            self.add(
                "create",
                Result.FAIL,
                f"the create did not succeed ({what})",
                "see the answer; a 403 needs evs:snapshots:create",
                sent,
                proves=(9,),
            )
            return False
        self.made = record.snapshot_id
        self.record = record
        self.add(
            "create",
            Result.PASS,
            f"snapshot {self.made} made through the create path (run {identity.run_id}, report {report})",
            "",
            sent,
            proves=(9,),
        )
        return True

    async def _show(self, route: Route) -> Answer:
        assert self.made is not None  # noqa: S101
        return await exchange(
            route, evs.show_snapshot(self.project_id, self.made, kind=evs.Kind.CHECK), self.doctor.policy
        )

    async def _until(self, route: Route, done: Callable[[Answer], bool]) -> Answer:
        """GET the snapshot until ``done(answer)``, for at most the settings' patience."""
        async for _ in self._polls():
            answer = await self._show(route)
            if done(answer):
                break
        return answer

    def _polls(self) -> polling:
        """Looks every ``POLL_FIRST`` seconds, doubling up to ``POLL_MAX``, for the settings' patience."""
        return polling(first=POLL_FIRST, factor=2.0, cap=POLL_MAX, timeout=self.settings.patience)

    async def _read_back(self, route: Route) -> bool:
        """GET it until it is available; its metadata must be exactly what was sent."""
        answer = await self._until(route, lambda a: not a.ok or _status(a) in ("available", "error"))
        sent = shown(evs.show_snapshot(self.project_id, self.made or ""))
        metadata = metadata_in(answer.body) if answer.ok else None
        if metadata is None:
            return self.add("read back", Result.FAIL, f"the GET answered {said(answer)}", "", sent)
        wanted = {RUN_MARKER_KEY: self.run_id, PROBE_KEY: PROBE_VALUE}
        changed = {key: value for key, value in wanted.items() if metadata.get(key) != value}
        if changed:
            got = {
                key: value
                for key, value in metadata.items()
                if str(key).lower() in {k.lower() for k in wanted}
            }
            self.add(
                "metadata",
                Result.FAIL,
                f"the marker did not survive: sent {wanted}, the GET gave back {got or metadata}; the tool "
                "finds its snapshots by this metadata (resume, sweep, cleanup, prune), so they would be "
                "missed or sent twice",
                "do not use the tool against this service until metadata comes back as written",
                sent,
            )
            return False
        self.add(
            "metadata",
            Result.PASS,
            f"the marker and the probe key came back exactly (key case and value); status {_status(answer)}",
            "",
            sent,
        )
        if _status(answer) != "available":
            return self.add(
                "read back", Result.FAIL, f"the snapshot is {_status(answer)}, not available", "", sent
            )
        return True

    async def _listed(self, route: Route) -> None:
        """Found in the list by ``volume_id``, with ``all_granted_eps`` (what lookups send) and without."""
        query = [("volume_id", self.settings.volume_id), ("limit", str(evs.PAGE))]
        call = evs.list_snapshots(self.project_id, query, kind=evs.Kind.LOOKUP)
        found = {}
        for label, each in (("with all_granted_eps", call), ("without", without_every_ep(call))):
            answer = await exchange(route, each, self.doctor.policy)
            listed = Snapshot.listed(answer.body) if answer.ok else []
            found[label] = any(item.id == self.made and item.marked(self.run_id) for item in listed)
        sent = shown(call) + "?volume_id=..."
        if not found["with all_granted_eps"]:
            self.add(
                "lookup",
                Result.FAIL,
                "the list by volume_id with all_granted_eps does not show the snapshot (with its marker): "
                "a lookup after an uncertain create would read 'absent' and send the row again",
                "report it; do not rely on lookups in this region",
                sent,
                proves=(1, 3),
            )
            return
        without = (
            "also without it"
            if found["without"]
            else "not without it (the disk is outside the default enterprise project; the tool "
            "always sends all_granted_eps)"
        )
        self.add(
            "lookup",
            Result.PASS,
            f"the list by volume_id shows it with all_granted_eps, {without}",
            "",
            sent,
            proves=(1, 3),
        )

    async def _rollback(self, route: Route) -> bool:
        """The product's rollback of the probe's row (checks, one send, the watch to its end)."""
        assert self.made is not None  # noqa: S101
        assert self.record is not None  # noqa: S101
        plan = RestorePlan(
            source_run=self.run_id,
            policy=self.doctor.policy,
            settle=SETTLE,
            wait=WaitPlan(timeout=self.settings.patience, interval=POLL_FIRST, max_interval=POLL_MAX),
            resend=False,
        )
        ended = await start_row(route, self.record, plan)
        while not isinstance(ended, Finding):  # a Watch: looked at when due, until it ends
            watch = ended
            await anyio.sleep(max(0.0, watch.due - anyio.current_time()))
            ended = await poll(route, self.record, plan, watch) or watch
        call = evs.rollback_snapshot(self.project_id, self.made, self.settings.volume_id)
        sent = (shown(call), shown(evs.show_volume(self.project_id, self.settings.volume_id)))
        status = ended.http_status
        if ended.outcome is Action.ROLLED_BACK:
            meaning = "the disk was rolled back to the snapshot and is available"
            if status is None or not 200 <= status < 300:  # taken, its answer lost (5xx, no answer)
                meaning = (
                    f"the rollback's answer was lost ({status or 'no answer'}) and the rollback was seen on "
                    f"the disk: not sent again; {meaning}"
                )
            return self.add("rollback", Result.PASS, meaning, "", *sent, proves=(6,))
        fix = {
            Action.REJECTED: "grant evs:snapshots:rollback; the disk must be detached (available)",
            Action.ROLLBACK_FAILED: "look at the disk in the console; rollback --retry-failed sends again "
            "from error_rollbacking",
        }.get(ended.outcome, "look at the disk in the console before it is rolled back again")
        if ended.outcome is Action.REJECTED:
            meaning = f"the rollback answered {status} {ended.code}: {ended.message or 'no message'}"
        elif ended.code == "ROLLBACK_TIMEOUT":  # (its message names --resume, which is the command's)
            meaning = f"the disk is still rollbacking after {self.settings.patience:g}s"
        else:  # blocked, failed, ended error_rollbacking, lost and unseen
            meaning = ended.message or f"the rollback {ended.outcome.value} ({ended.code})"
        return self.add("rollback", Result.FAIL, meaning, fix, *sent, proves=(6,))

    async def _delete(self, route: Route) -> None:
        """Delete it through the one DELETE loop; the GET must then answer 404 with the resource's code."""

        assert self.made is not None  # noqa: S101
        call = evs.delete_snapshot(self.project_id, self.made)
        deletion = await delete(
            route, self.made, self.doctor.policy, patience=min(60.0, self.settings.patience)
        )
        if deletion.ended is not Ended.DONE:
            fix = "grant evs:snapshots:delete (create's sweep needs it to remove a double)"
            if deletion.state is not None:  # EVS.1047, wrong state: not a permission
                fix = (
                    f"the snapshot is {deletion.state}, which the service does not delete from: remove it "
                    "once it is available again (the cleanup command below)"
                )
            self.add(
                "delete",
                Result.FAIL,
                f"the delete did not succeed ({deletion.why})",
                fix,
                shown(call),
                proves=(9,),
            )
            return
        answer = await self._until(route, lambda a: a.status == 404)
        sent = (shown(call), shown(evs.show_snapshot(self.project_id, self.made)))
        if answer.status != 404:
            self.add(
                "delete",
                Result.FAIL,
                f"still there after {self.settings.patience:g}s: {said(answer)}",
                "",
                *sent,
            )
            return
        self.removed = True
        code = answer.error()[0]
        if not answer.gone:  # the resource's own 404 (EVS.5404, or Cinder's itemNotFound)
            self.add(
                "gone",
                Result.FAIL,
                f"deleted, but the GET's 404 carries {said(answer)}, not EVS.5404: the tool cannot tell "
                "'gone' from a gateway 404 here",
                "report it: the tool takes a 404 as gone only with the resource's code",
                *sent,
                proves=(4,),
            )
            return
        self.add("gone", Result.PASS, f"deleted; the GET then answers 404 {code}", "", *sent, proves=(4,))


def _status(answer: Answer) -> str | None:
    snapshot = Snapshot.from_body(answer.body)
    return None if snapshot is None else str(snapshot.status)


def live_failed(error: BaseException) -> str:
    """A round trip's unexpected end, in one line (``ListingFailed`` and the like)."""
    if isinstance(error, ListingFailed):
        return str(error)
    return f"{type(error).__name__}: {error}"
