"""prune's calendar rules (--keep-hourly ... --keep-yearly, restic's meaning) and --tz.

The rules are checked against an independent reading of the issue's definition over generated
histories ("for each rule, keep the newest snapshot of each of the last N periods that hold an
available snapshot"), then end to end against the emulator: the records name the periods that kept a
snapshot, the header names the zone, the plan warns when a disk's slots are full, and 40 nights of the
runbook's cron with --keep-daily 4 --keep-weekly 2 --keep-monthly 1 never hit the limit.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.api.views import Snapshot
from orchestrator.emulator import SeedSnapshot, SeedVolume
from orchestrator.emulator.clock import EVS_TIME_FORMAT, ManualClock, evs_time
from orchestrator.retention import Rules, Zone, named_zone, offsets
from tests.helpers import (
    FAST_RETRIES,
    MARKER,
    PROJECT,
    create_args,
    csv_manifest,
    header,
    invoke,
    last_per_row,
    records,
    run_id_of,
    run_process,
    volume_ids,
)

FAST = ["--max-attempts", "3", "--backoff-initial", "0.01", "--backoff-max", "0.05"]
KINDS = ("hourly", "daily", "weekly", "monthly", "yearly")
BERLIN = "Europe/Berlin"


# --- the independent reading --------------------------------------------------------------------
def period_of(kind: str, moment: datetime, zone: ZoneInfo) -> tuple[tuple[int, ...], str]:
    """The period (a sortable key, and its label) a UTC instant falls in, in ``zone``'s wall time."""
    wall = datetime.fromtimestamp(moment.timestamp(), zone)
    keys = {
        "hourly": ((wall.year, wall.month, wall.day, wall.hour), wall.strftime("%Y-%m-%dT%H")),
        "daily": ((wall.year, wall.month, wall.day), wall.strftime("%Y-%m-%d")),
        "weekly": (tuple(wall.isocalendar())[:2], wall.strftime("%G-W%V")),
        "monthly": ((wall.year, wall.month), wall.strftime("%Y-%m")),
        "yearly": ((wall.year,), wall.strftime("%Y")),
    }
    key, label = keys[kind]
    return key, f"{kind} {label}"


def expected_calendar(
    history: list[tuple[str, datetime, str]], counts: dict[str, int], zone: ZoneInfo
) -> dict[str, set[str]]:
    """Per snapshot id, the calendar periods that keep it: group the available snapshots by period,
    take the newest of each group, and keep the N groups whose newest is newest."""
    kept: dict[str, set[str]] = defaultdict(set)
    available = [(when, ident) for ident, when, status in history if status == "available"]
    for kind, n in counts.items():
        groups: dict[tuple[int, ...], list[tuple[datetime, str]]] = defaultdict(list)
        labels: dict[tuple[int, ...], str] = {}
        for when, ident in available:
            key, labels[key] = period_of(kind, when, zone)
            groups[key].append((when, ident))
        newest = sorted(((max(group), key) for key, group in groups.items()), reverse=True)
        for (_, ident), key in newest[:n]:
            kept[ident].add(labels[key])
    return kept


def view(ident: str, moment: datetime, status: str) -> Snapshot:
    return Snapshot(
        id=ident, volume_id="v", status=status, created_at=moment.strftime(EVS_TIME_FORMAT), marker="run"
    )


# Around both 2026 DST changes of Europe/Berlin (and of New York, a fortnight apart from them),
# a year end and a month end: irregular gaps from minutes to weeks, several snapshots in one period.
BASES = [
    datetime(2026, 3, 28, 20, tzinfo=UTC),
    datetime(2026, 10, 24, 20, tzinfo=UTC),
    datetime(2026, 12, 27, tzinfo=UTC),
    datetime(2026, 11, 1, 3, tzinfo=UTC),
]
GAPS = st.one_of(
    st.integers(0, 90),  # minutes: several in one hour, or the same instant
    st.integers(30, 60 * 30),  # across hours and the DST change
    st.integers(60 * 24, 60 * 24 * 40),  # days to weeks: gaps in the history
)
HISTORIES = st.tuples(
    st.sampled_from(BASES),
    st.lists(
        st.tuples(GAPS, st.sampled_from(["available"] * 4 + ["error", "creating"])),
        min_size=0,
        max_size=40,
    ),
)
COUNTS = st.dictionaries(st.sampled_from(KINDS), st.integers(0, 6), min_size=1)
ZONES = st.sampled_from([BERLIN, "America/New_York", "UTC", "Australia/Lord_Howe", "Asia/Kolkata"])


@given(
    HISTORIES, COUNTS, ZONES, st.none() | st.integers(0, 3), st.none() | st.integers(1, 900), st.booleans()
)
@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_calendar_rules_match_an_independent_reading(
    generated: tuple[datetime, list[tuple[int, str]]],
    counts: dict[str, int],
    zone_name: str,
    keep_last: int | None,
    within_days: int | None,
    allow_none: bool,
) -> None:
    """Rules.judge keeps exactly the snapshots the independent reading names, each with its periods."""
    base, steps = generated
    history: list[tuple[str, datetime, str]] = []
    moment = base
    for index, (minutes, status) in enumerate(steps):
        moment += timedelta(minutes=minutes)
        history.append((f"s{index:03d}", moment, status))
    zone = ZoneInfo(zone_name)
    rules = Rules(
        keep_last=keep_last,
        keep_within=None if within_days is None else within_days * 86400.0,
        allow_none=allow_none,
        zone=named_zone(zone_name),
        **{f"keep_{k}": n for k, n in counts.items()},
    )
    now = base + timedelta(days=400)
    verdicts = rules.judge([view(i, m, s) for i, m, s in history], now)

    calendar = expected_calendar(history, counts, zone)
    ranked = sorted(history, key=lambda item: (item[1], item[0]), reverse=True)
    created = {i: m for i, m, _ in history}
    newest_available = next((i for i, _, s in ranked if s == "available"), None)
    assert [s.id for s, _ in verdicts] == [i for i, _, _ in ranked]
    for position, (snapshot, reasons) in enumerate(verdicts):
        assert {r for r in reasons if r.split()[0] in KINDS} == calendar.get(snapshot.id, set()), snapshot
        by_last = keep_last is not None and position < keep_last
        assert (f"keep-last {keep_last}" in reasons) == by_last
        by_within = within_days is not None and now - created[snapshot.id] < timedelta(days=within_days)
        assert (f"keep-within {within_days}d" in reasons) == by_within
        by_newest = snapshot.id == newest_available and not allow_none
        assert ("newest available" in reasons) == by_newest
        assert bool(reasons) == (bool(calendar.get(snapshot.id)) or by_last or by_within or by_newest)
        assert len(reasons) == len(set(reasons))


def test_dst_changes_count_wall_clock_periods() -> None:
    """Europe/Berlin: the hour repeated at the October change is one hourly period; the hour skipped in
    March is none; days, weeks and months change at local midnight, not at UTC's."""
    berlin = named_zone(BERLIN)
    snaps = [
        view("oct-cest", datetime(2026, 10, 25, 0, 30, tzinfo=UTC), "available"),  # 02:30 CEST
        view("oct-cet", datetime(2026, 10, 25, 1, 30, tzinfo=UTC), "available"),  # 02:30 CET, again
        view("mar-cet", datetime(2026, 3, 29, 0, 30, tzinfo=UTC), "available"),  # 01:30 CET
        view("mar-cest", datetime(2026, 3, 29, 1, 30, tzinfo=UTC), "available"),  # 03:30 CEST
    ]
    now = datetime(2027, 1, 1, tzinfo=UTC)
    hourly = dict(Rules(keep_hourly=10, allow_none=True, zone=berlin).judge(snaps, now))
    assert {s.id: r for s, r in hourly.items()} == {
        "oct-cet": ["hourly 2026-10-25T02"],
        "oct-cest": [],
        "mar-cest": ["hourly 2026-03-29T03"],
        "mar-cet": ["hourly 2026-03-29T01"],
    }
    # 2026-11-30 23:30 UTC is already Tuesday 1 December in Berlin: another day, ISO week and month.
    late = view("late", datetime(2026, 11, 30, 23, 30, tzinfo=UTC), "available")
    early = view("early", datetime(2026, 11, 30, 22, 30, tzinfo=UTC), "available")
    rules = {"keep_daily": 5, "keep_weekly": 5, "keep_monthly": 5, "keep_yearly": 5, "allow_none": True}
    in_berlin = {s.id: r for s, r in Rules(zone=berlin, **rules).judge([late, early], now)}
    assert in_berlin == {
        "late": ["daily 2026-12-01", "weekly 2026-W49", "monthly 2026-12", "yearly 2026"],
        "early": ["daily 2026-11-30", "monthly 2026-11"],
    }
    in_utc = {s.id: r for s, r in Rules(zone=Zone("UTC", UTC), **rules).judge([late, early], now)}
    assert in_utc == {
        "late": ["daily 2026-11-30", "weekly 2026-W49", "monthly 2026-11", "yearly 2026"],
        "early": [],
    }


def test_iso_weeks_and_years_at_a_year_end() -> None:
    """31 December 2026 is a Thursday of ISO week 2026-W53; 1 January 2027 is in that week too."""
    snaps = [
        view("d31", datetime(2026, 12, 31, 12, tzinfo=UTC), "available"),
        view("j01", datetime(2027, 1, 1, 12, tzinfo=UTC), "available"),
        view("j04", datetime(2027, 1, 4, 12, tzinfo=UTC), "available"),
    ]
    rules = Rules(keep_weekly=3, keep_yearly=3, allow_none=True, zone=Zone("UTC", UTC))
    judged = {s.id: r for s, r in rules.judge(snaps, datetime(2027, 2, 1, tzinfo=UTC))}
    assert judged == {
        "j04": ["weekly 2027-W01", "yearly 2027"],
        "j01": ["weekly 2026-W53"],
        "d31": ["yearly 2026"],
    }


def test_a_time_the_zone_cannot_place_is_kept_as_unreadable() -> None:
    """A created_at the zone cannot place (9999-12-31T23:30 in Tokyo, 0001-01-01 in New York, an offset
    before year 1 in UTC) has no period and is kept ``created_at unreadable``; the rest is judged as ever."""
    edges = {
        "Asia/Tokyo": ("9999-12-31T23:30:00.000000", "9999-12-31T23:00:00+08:00"),
        "America/New_York": ("0001-01-01T00:00:00.000000", "0001-01-01T04:00:00Z"),
        "UTC": ("0001-01-01T00:00:00+05:00", "0001-01-01T03:00:00+03:30"),
    }
    now = datetime(2027, 1, 1, tzinfo=UTC)
    for zone, times in edges.items():
        odd = [
            Snapshot(id=f"odd{i}", volume_id="v", status="available", created_at=t, marker="run")
            for i, t in enumerate(times)
        ]
        dated = [view(f"d{day}", datetime(2026, 12, day, 12, tzinfo=UTC), "available") for day in (1, 2)]
        rules = Rules(keep_daily=1, allow_none=True, zone=named_zone(zone))
        judged = {s.id: r for s, r in rules.judge([*odd, *dated], now)}
        assert judged == {
            "odd0": ["created_at unreadable"],
            "odd1": ["created_at unreadable"],
            "d2": ["daily 2026-12-02"],
            "d1": [],
        }, zone


def test_an_unnamed_local_time_is_named_by_its_offsets() -> None:
    """The C library's local time without a database name is named by abbreviations and offsets, so
    zones an hour apart, or one with DST and one without, never share a name."""
    assert offsets(("CET", "CEST"), (-3600, -7200), daylight=True) == "CET UTC+01:00, CEST UTC+02:00"
    assert offsets(("CET", "CET"), (-3600, -3600), daylight=False) == "CET UTC+01:00"
    assert offsets(("UTC", "UTC"), (10800, 10800), daylight=False) == "UTC UTC-03:00"
    assert offsets(("NST", "NDT"), (12600, 9000), daylight=True) == "NST UTC-03:30, NDT UTC-02:30"


# --- end to end ------------------------------------------------------------------------------------
def seeded(
    volume: str, moment: datetime, *, status: str = "available", run: str | None = "run-old"
) -> SeedSnapshot:
    return SeedSnapshot(
        id=str(uuid.uuid5(uuid.NAMESPACE_OID, f"{volume}/{moment.isoformat()}/{status}/{run}")),
        volume_id=volume,
        name=f"nightly-{moment:%Y%m%d%H%M}",
        status=status,
        created_at=evs_time(moment),
        metadata={MARKER: run_id_of(run)} if run else {},
    )


def start(
    emulator_thread: Callable[..., Any], volumes: list[str], snapshots: list[SeedSnapshot], **knobs: Any
) -> Any:
    knobs.setdefault("deleting_seconds", 0.0)
    return emulator_thread(
        volumes=tuple(SeedVolume(volume_id=v) for v in volumes), snapshots=tuple(snapshots), **knobs
    )


def prune(emu: Any, manifest: Path, report: Path, *extra: str, env: dict[str, str] | None = None) -> Any:
    args = ["prune", str(manifest), "--endpoint", emu.url, "--project-id", PROJECT, "--report", str(report)]
    return invoke([*args, *FAST, *extra], env)


def live(emu: Any) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in emu.state()["snapshots"] if s["status"] != "deleting"}


def test_plan_names_the_periods_and_the_zone(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--keep-daily 2 --keep-weekly 2 --tz Europe/Berlin --verbose: each kept record names its periods
    (Berlin's days), each planned one the rules; an error snapshot fills no day; the header has the zone."""
    (disk,) = volume_ids(1, seed=211)
    times = [
        datetime(2026, 11, 20, 12, tzinfo=UTC),  # Friday of W47
        datetime(2026, 11, 26, 10, tzinfo=UTC),  # Thursday of W48
        datetime(2026, 11, 27, 22, 30, tzinfo=UTC),  # Friday 23:30 in Berlin
        datetime(2026, 11, 27, 23, 30, tzinfo=UTC),  # already Saturday 28 in Berlin
        datetime(2026, 11, 28, 12, tzinfo=UTC),  # Saturday again: the day's newest
    ]
    owned = [seeded(disk, t) for t in times]
    failed = seeded(disk, datetime(2026, 11, 29, 12, tzinfo=UTC), status="error")  # fills no Sunday
    foreign = seeded(disk, datetime(2026, 11, 10, tzinfo=UTC), run=None)
    emu = start(emulator_thread, [disk], [*owned, failed, foreign])
    manifest = csv_manifest(write, [disk])
    report = tmp_path / "plan.jsonl"
    rules = ["--keep-daily", "2", "--keep-weekly", "2", "--tz", BERLIN]
    result = prune(emu, manifest, report, *rules, "--verbose")
    assert result.exit_code == 0, result.output
    by_id = {r["snapshot_id"]: r for r in records(report)}
    kept = {i: r["rule"] for i, r in by_id.items() if r["outcome"] == "kept"}
    assert kept == {
        owned[4].id: "daily 2026-11-28, weekly 2026-W48, newest available",
        owned[2].id: "daily 2026-11-27",
        owned[0].id: "weekly 2026-W47",
    }
    planned = {i: r["rule"] for i, r in by_id.items() if r["outcome"] == "planned"}
    assert planned == {s.id: "keep-daily 2 and keep-weekly 2" for s in (owned[1], owned[3], failed)}
    shape = header(report)["shape"]
    assert (shape["keep_daily"], shape["keep_weekly"], shape["tz"]) == ("2", "2", BERLIN)
    assert "keep_monthly" not in shape
    assert len(live(emu)) == 7  # a plan deletes nothing

    # A resume with another zone (given, or the machine's) or another rule is refused.
    for other in (["--tz", "UTC"], [], ["--tz", BERLIN, "--keep-monthly", "1"]):
        refused = prune(emu, manifest, report, *rules[:4], *other, "--resume", env={"TZ": "Asia/Tokyo"})
        assert refused.exit_code == 2, (other, refused.output)
        assert "--resume: " in refused.output
    applied = prune(emu, manifest, report, *rules, "--apply", "--resume")
    assert applied.exit_code == 0, applied.output
    assert set(live(emu)) == {*kept, foreign.id}


def test_local_zone_by_default(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Without --tz the machine's zone (TZ here) counts the days, and the header names it."""
    (disk,) = volume_ids(1, seed=212)
    owned = [seeded(disk, datetime(2026, 11, 27, h, 30, tzinfo=UTC)) for h in (12, 22, 23)]
    emu = start(emulator_thread, [disk], owned)
    report = tmp_path / "tokyo.jsonl"
    result = prune(emu, csv_manifest(write, [disk]), report, "--keep-daily", "5", env={"TZ": "Asia/Tokyo"})
    assert result.exit_code == 0, result.output
    assert header(report)["shape"]["tz"] == "Asia/Tokyo"
    # In Tokyo 12:30 UTC is 21:30 on the 27th; 22:30 and 23:30 UTC are the 28th: one of them goes.
    assert [(r["snapshot_id"], r["outcome"]) for r in records(report)] == [(owned[1].id, "planned")]


def test_a_posix_tz_string_is_recorded_and_another_refused_on_resume(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """TZ=UTC+3 (a POSIX rule, 3 h west of UTC, no database name) counts the days (a real process) and
    is recorded as that string: a --resume under TZ=UTC-9, whose days differ, is refused (exit 2)."""
    (disk,) = volume_ids(1, seed=217)
    times = [
        datetime(2026, 11, 26, 20, tzinfo=UTC),
        *(datetime(2026, 11, 27, h, tzinfo=UTC) for h in (1, 22)),
    ]
    owned = [seeded(disk, t) for t in times]
    emu = start(emulator_thread, [disk], owned)
    manifest = csv_manifest(write, [disk])
    report = tmp_path / "posix.jsonl"
    args = ["prune", str(manifest), "--endpoint", emu.url, "--project-id", PROJECT, "--report", str(report)]
    with run_process([*args, *FAST, "--keep-daily", "2", "--allow-none", "--verbose"], {"TZ": "UTC+3"}) as p:
        assert p.wait() == 0, p.communicate()
    assert header(report)["shape"]["tz"] == "local (TZ=UTC+3)"
    assert {r["snapshot_id"]: r["rule"] for r in records(report)} == {
        owned[2].id: "daily 2026-11-27",  # 19:00 on the 27th three hours west of UTC
        owned[1].id: "daily 2026-11-26",  # 22:00 on the 26th
        owned[0].id: "keep-daily 2",
    }
    resume = ["--keep-daily", "2", "--allow-none", "--resume"]
    refused = prune(emu, manifest, report, *resume, env={"TZ": "UTC-9"})
    assert refused.exit_code == 2, refused.output
    assert "--resume: " in refused.output
    same = prune(emu, manifest, report, *resume, env={"TZ": "UTC+3"})
    assert same.exit_code == 0, same.output


def test_a_date_the_zone_cannot_place_is_kept_and_the_run_goes_on(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--keep-daily 1 --tz Asia/Tokyo --apply with a created_at of 9999-12-31T23:30 (past the calendar's
    end in Tokyo): exit 0, that snapshot kept (``created_at unreadable``), the rules applied to the rest."""
    (disk,) = volume_ids(1, seed=216)
    edge = dataclasses.replace(
        seeded(disk, datetime(2026, 1, 1, tzinfo=UTC)), created_at="9999-12-31T23:30:00"
    )
    newer, older = (seeded(disk, datetime(2026, 12, day, 10, tzinfo=UTC)) for day in (2, 1))
    emu = start(emulator_thread, [disk], [edge, newer, older])
    report = tmp_path / "edge.jsonl"
    args = ["--keep-daily", "1", "--tz", "Asia/Tokyo", "--allow-none", "--verbose", "--apply", "--no-wait"]
    result = prune(emu, csv_manifest(write, [disk]), report, *args)
    assert result.exit_code == 0, result.output
    outcomes = {r["snapshot_id"]: (r["outcome"], r["rule"]) for r in records(report)}
    assert outcomes == {
        edge.id: ("kept", "created_at unreadable"),
        newer.id: ("kept", "daily 2026-12-02"),
        older.id: ("deleted", "keep-daily 1"),
    }
    assert set(live(emu)) == {edge.id, newer.id}


def test_rules_filling_the_slots_warn(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A disk whose kept snapshots (with others that hold a slot) fill its 7 slots gets a warning naming
    it and the count; a disk with room gets none; the exit code stays 0."""
    full, roomy, shared = volume_ids(3, seed=213)
    day = datetime(2026, 11, 1, 3, tzinfo=UTC)
    snaps = [seeded(full, day + timedelta(days=d)) for d in range(7)]
    snaps += [seeded(roomy, day + timedelta(days=d)) for d in range(5)]
    snaps += [seeded(shared, day + timedelta(days=d)) for d in range(5)]
    snaps += [seeded(shared, day + timedelta(days=d, hours=1), run=None) for d in range(2)]  # by hand
    snaps.append(dataclasses.replace(seeded(shared, day, run=None), name="autobk_snapshot_vbs_1"))  # no slot
    emu = start(emulator_thread, [full, roomy, shared], snaps)
    manifest = csv_manifest(write, [full, roomy, shared])
    report = tmp_path / "warn.jsonl"
    result = prune(emu, manifest, report, "--keep-daily", "7", "--tz", "UTC")
    assert result.exit_code == 0, result.output
    assert f"disk {full}: the rules keep 7 of 7 slots: tonight's create will be refused" in result.output
    assert f"disk {shared}: the rules keep 7 of 7 slots (2 of them not the tool's)" in result.output
    assert f"disk {roomy}:" not in result.output
    assert records(report) == []
    # --keep-daily 6 leaves full a slot; shared's hand-made snapshots still fill its own
    quieter = prune(emu, manifest, tmp_path / "quieter.jsonl", "--keep-daily", "6", "--tz", "UTC")
    assert quieter.exit_code == 0, quieter.output
    assert f"disk {full}:" not in quieter.output
    assert f"disk {shared}: the rules keep 7 of 7 slots (2 of them not the tool's)" in quieter.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--keep-daily", "2", "--tz", "Mars/Olympus"], "--tz: 'Mars/Olympus' is not a zone"),
        (["--tz", "UTC"], "prune needs a retention rule"),
        (["--keep-weekly", "-1"], "--keep-weekly"),
    ],
)
def test_usage_errors(args: list[str], message: str, write: Callable[..., Path], tmp_path: Path) -> None:
    """A zone the database lacks, no rule at all, a negative count: exit 2, nothing sent."""
    manifest = csv_manifest(write, volume_ids(1, seed=214))
    argv = ["prune", str(manifest), "--endpoint", "http://127.0.0.1:9", "--project-id", PROJECT]
    result = invoke([*argv, "--report", str(tmp_path / "r.jsonl"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


NIGHTS = 40


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_forty_nights_of_calendar_retention(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """40 nights of the cron (prune --keep-daily 4 --keep-weekly 2 --keep-monthly 1 --apply, then
    create), the emulator's clock a day further each night, and one hold in the middle: no create is
    refused, and after the last night the snapshots left are exactly those the rules name, plus the
    last night's, plus the held one. The emulator deletes at once, so prune --no-wait: waiting for the
    404s would only add the deleter's first poll (0.2 s) to each night."""
    disks = volume_ids(2, seed=215)
    clock = ManualClock()
    emu = start(emulator_thread, disks, [], clock=clock, creating_seconds=0.0)
    manifest = csv_manifest(write, disks)
    rules = ["--keep-daily", "4", "--keep-weekly", "2", "--keep-monthly", "1", "--tz", BERLIN]
    created: dict[str, list[tuple[str, datetime, str]]] = defaultdict(list)
    for night in range(1, NIGHTS + 1):
        pruned = tmp_path / f"prune-{night}.jsonl"
        result = prune(emu, manifest, pruned, *rules, "--apply", "--no-wait")
        assert result.exit_code == 0, (night, result.output)
        assert "slots" not in result.output, night
        assert {r["outcome"] for r in records(pruned)} <= {"deleted"}
        made = tmp_path / f"night-{night}.jsonl"
        result = invoke(create_args(emu.url, manifest, made, *FAST_RETRIES))
        assert result.exit_code == 0, (night, result.output)
        assert {r["outcome"] for r in last_per_row(made).values()} == {"accepted"}
        if night == NIGHTS // 2:  # the pre-change baseline of one disk is held
            held = last_per_row(made)[1]
            hold = ["hold", str(made), "--rows", "1", "--reason", "baseline", "--apply", *FAST]
            result = invoke([*hold, "--endpoint", emu.url, "--report", str(tmp_path / "hold.jsonl")])
            assert result.exit_code == 0, result.output
        for row in last_per_row(made).values():
            snapshot = live(emu)[row["snapshot_id"]]
            when = datetime.strptime(snapshot["created_at"], EVS_TIME_FORMAT).replace(tzinfo=UTC)
            created[row["volume_id"]].append((snapshot["id"], when, "available"))
        counts = Counter(s["volume_id"] for s in live(emu).values())
        # Room left for the next night before its prune; the held disk's hold takes one more slot.
        assert counts[disks[1]] < 7, (night, counts)
        assert counts[disks[0]] < (8 if night >= NIGHTS // 2 else 7), (night, counts)
        clock.advance(86400)
    for disk in disks:
        *before, (last_id, _, _) = created[disk]
        named = expected_calendar(before, {"daily": 4, "weekly": 2, "monthly": 1}, ZoneInfo(BERLIN))
        left = {s["id"] for s in live(emu).values() if s["volume_id"] == disk}
        kept = {held["snapshot_id"]} if disk == held["volume_id"] else set()
        assert left == {*named, last_id, *kept}, disk
        assert held["snapshot_id"] not in named  # the rules alone would have deleted it
