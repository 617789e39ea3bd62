"""The nightly community ETL and its backfill.

Nightly: every stage moves from its watermark to a horizon (now minus a lag, and never past a
write transaction still open), a chunk of received time per transaction, so a long backlog or a
statement timeout costs one chunk, never the run. Backfill: rebuild the rollups of a date range
from the taps, a few days per transaction, continuing in a fresh invocation when time runs out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit

from tally.community.dispatch import start_backfill
from tally.community.models import BackfillOut, CommunityEtlInput, EtlResult, StageResult
from tally.community.repository import EtlRepository
from tally.db.connection import transaction
from tally.errors import InvalidInput, NotFound
from tally.observability import dimensioned_metrics, metrics
from tally.points.tiers import TIERS
from tally.settings import Settings, get_settings

logger = Logger(child=True)

EDGE_WINDOW = timedelta(days=90)
QUEST_RULE_VERSION = "community-v1"
# A running backfill whose request has not moved for this long lost its invocation.
BACKFILL_STALE = timedelta(minutes=20)
HORIZON_WARNING = timedelta(minutes=5)
RemainingMs = Callable[[], int]


@dataclass(frozen=True)
class Stage:
    name: str
    after: tuple[str, ...] = ()  # stages whose rows this one reads
    source: str = "taps"  # what its watermark follows: taps.received_at or profiles.updated_at


STAGES = (
    Stage("edges"),
    Stage("days"),
    Stage("streaks", after=("days",)),
    Stage("weeks"),
    Stage("leaderboard", after=("weeks", "streaks")),
    Stage("quests", after=("weeks",)),
    Stage("surges"),
    Stage("locations", source="profiles"),
)


def rezone(horizon: datetime) -> StageResult | None:
    """Users who moved to another zone get all their days, weeks and streaks recomputed in the
    new one (and the weeks they left or entered re-ranked) before anything else runs, so no
    rollup mixes their two zones. None when another run holds the lock."""
    started = time.perf_counter()
    result = StageResult(stage="zones")
    with transaction() as conn:
        repo = EtlRepository(conn)
        if not repo.try_lock():
            return None
        users = repo.rezoned_users()
        if users:
            repo.configure(
                get_settings().community_stage_timeout_ms, get_settings().community_work_mem_mb
            )
            at = repo.watermarks().get("streaks") or horizon
            before = repo.first_week_of(users)
            counts = repo.rebuild_users(users, at)
            after = repo.first_week_of(users)
            latest = repo.latest_week()
            firsts = [week for week in (before, after) if week is not None]
            if firsts and latest is not None:
                p1 = min(firsts)
                repo.leaderboard(p1, max(p1, latest))
                repo.quests(p1, max(p1, latest), QUEST_RULE_VERSION, list(TIERS))
            result.keys, result.written, result.chunks = len(users), counts["written"], 1
            result.detail["users"] = len(users)
    if users:
        _record(result, started, "zones")
    return result


def _hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _run_stage(
    name: str, repo: EtlRepository, lo: datetime, hi: datetime, mark: dict[str, Any]
) -> tuple[dict[str, int], datetime | None]:
    """One chunk of one stage; returns its counts and, for edges, the new window start."""
    settings = get_settings()
    skew = timedelta(seconds=settings.tap_future_skew_s)
    if name == "edges":
        w1 = hi - EDGE_WINDOW
        return repo.edges(lo, hi, mark["window_start"], w1), w1
    if name in ("days", "weeks"):
        return repo.activity(name == "weeks", lo, hi, skew), None
    if name == "streaks":
        return repo.streaks(lo, hi, skew), None
    if name in ("leaderboard", "quests"):
        weeks = repo.touched_weeks(lo, hi, skew)
        if weeks is None:
            return {"keys": 0, "written": 0}, None
        if name == "leaderboard":
            return repo.leaderboard(*weeks), None
        return repo.quests(*weeks, QUEST_RULE_VERSION, list(TIERS)), None
    if name == "surges":
        first = repo.first_tap_time(lo, hi)
        h1 = _hour(min(first, lo) if first is not None else lo)
        h2 = _hour(hi)
        if h1 >= h2:
            return {"keys": 0, "written": 0}, None
        return repo.surges(h1, h2, settings.surge_factor, settings.surge_min_taps), None
    if name == "locations":
        return repo.locations(lo, hi), None
    raise ValueError(f"unknown stage {name}")


@dataclass
class _Step:
    counts: dict[str, int]
    upto: datetime | None
    done: bool


def _step(stage: Stage, horizon: datetime, settings: Settings) -> _Step | None:
    """One transaction: lock, read the watermark, apply one chunk, move the watermark."""
    with transaction() as conn:
        repo = EtlRepository(conn)
        if not repo.try_lock():
            return None
        repo.configure(settings.community_stage_timeout_ms, settings.community_work_mem_mb)
        mark = repo.watermark(stage.name)
        bound = horizon
        if stage.after:
            marks = repo.watermarks()
            for upstream in stage.after:
                upstream_mark = marks[upstream]
                if upstream_mark is None:
                    return _Step({}, mark["received_upto"], True)
                bound = min(bound, upstream_mark)
        lo = mark["received_upto"]
        if lo is None:
            lo = repo.next_arrival(None, stage.source)
            if lo is None:  # nothing has ever arrived: start from here
                repo.advance(stage.name, bound, 0)
                return _Step({}, bound, True)
        if lo >= bound:
            return _Step({}, lo, True)
        # A chunk of received time, stretched over a quiet stretch to the next arrival.
        arrival = repo.next_arrival(lo, stage.source)
        step = timedelta(hours=settings.community_chunk_hours)
        chunk_hi = bound if arrival is None else min(bound, max(lo + step, arrival + step))
        counts, window_start = _run_stage(stage.name, repo, lo, chunk_hi, mark)
        repo.advance(stage.name, chunk_hi, counts.get("written", 0), window_start)
        return _Step(counts, chunk_hi, chunk_hi >= bound)


def _out_of_time(remaining_ms: RemainingMs | None, settings: Settings) -> bool:
    if remaining_ms is None:
        return False
    needed = settings.community_stage_timeout_ms + settings.job_safety_margin_ms
    return remaining_ms() < needed


def _record(result: StageResult, started: float | None, mode: str) -> None:
    """Log and measure a finished stage (timed from `started`, or already timed)."""
    if started is not None:
        result.seconds = time.perf_counter() - started
    result.seconds = round(result.seconds, 3)
    logger.info("Community ETL stage finished", extra={"mode": mode, **result.model_dump()})
    dimensioned_metrics(
        "stage",
        result.stage,
        {
            "CommunityEtlRowsWritten": (MetricUnit.Count, result.written),
            "CommunityEtlRowsExamined": (MetricUnit.Count, result.keys),
            "CommunityEtlStageSeconds": (MetricUnit.Seconds, result.seconds),
        },
    )


def run_nightly(
    remaining_ms: RemainingMs | None = None, horizon: datetime | None = None
) -> EtlResult:
    """Bring every stage up to the horizon. Safe to run twice at once (the second waits for
    nothing: it finds the lock taken and stops) and to run again (it finds nothing to do)."""
    settings = get_settings()
    if horizon is None:
        lag = timedelta(seconds=settings.community_etl_lag_s)
        with transaction() as conn:
            horizon = EtlRepository(conn).horizon(lag)
        held_back = datetime.now(UTC) - lag - horizon
        if held_back > HORIZON_WARNING:
            # A write transaction open this long holds every stage back (see pg_stat_activity).
            logger.warning(
                "Community ETL horizon held back by an open transaction",
                extra={"horizon": horizon, "held_back_s": held_back.total_seconds()},
            )
    result = EtlResult(mode="nightly", horizon=horizon)
    zones = rezone(horizon)
    if zones is None:
        logger.info("Community ETL already running elsewhere", extra={"stage": "zones"})
        return result.model_copy(update={"ran": False, "complete": False})
    result.stages.append(zones)
    for stage in STAGES:
        stage_result = StageResult(stage=stage.name)
        started = time.perf_counter()
        while True:
            if _out_of_time(remaining_ms, settings):
                result.complete = False
                break
            step = _step(stage, horizon, settings)
            if step is None:
                logger.info("Community ETL already running elsewhere", extra={"stage": stage.name})
                result.ran = False
                result.complete = False
                return result
            if step.counts:
                stage_result.chunks += 1
                stage_result.keys += step.counts.get("keys", 0)
                stage_result.written += step.counts.get("written", 0)
                for key, value in step.counts.items():
                    if key not in ("keys", "written"):
                        stage_result.detail[key] = stage_result.detail.get(key, 0) + value
            stage_result.received_upto = step.upto
            if step.done:
                break
        _record(stage_result, started, "nightly")
        result.stages.append(stage_result)
        if not result.complete:
            break
    metrics.add_metric(name="CommunityEtlRuns", unit="Count", value=1)
    if not result.complete:
        logger.warning("Community ETL stopped before its deadline", extra={"horizon": horizon})
    else:
        resume_waiting_backfills()
    return result


# -- backfill ----------------------------------------------------------------------------------


def request_backfill(from_day: date, to_day: date, requested_by: str | None) -> BackfillOut:
    settings = get_settings()
    if (to_day - from_day).days + 1 > settings.community_backfill_max_days:
        raise InvalidInput(
            f"A backfill covers at most {settings.community_backfill_max_days} days",
            code="range_too_long",
        )
    with transaction() as conn:
        row = EtlRepository(conn).create_backfill(uuid4(), from_day, to_day, requested_by)
    logger.info("Community backfill requested", extra={"backfill": str(row["id"])})
    return BackfillOut.model_validate(row)


def get_backfill(backfill_id: UUID) -> BackfillOut:
    with transaction() as conn:
        row = EtlRepository(conn).backfill(backfill_id)
    if row is None:
        raise NotFound(f"No backfill {backfill_id}")
    return BackfillOut.model_validate(row)


def _locked_step(fn: Callable[[EtlRepository], dict[str, int]]) -> dict[str, int] | None:
    settings = get_settings()
    with transaction() as conn:
        repo = EtlRepository(conn)
        if not repo.try_lock():
            return None
        repo.configure(settings.community_stage_timeout_ms, settings.community_work_mem_mb)
        return fn(repo)


def run_backfill(backfill_id: UUID, remaining_ms: RemainingMs | None = None) -> EtlResult:
    """Work through a backfill request: days and weeks a chunk at a time (progress kept in the
    request), then edges, streaks, the weekly boards, quests and surges over the whole range.
    Every step recomputes absolute values, so resuming after an interruption is safe."""
    settings = get_settings()
    result = EtlResult(mode="backfill", backfill_id=backfill_id)
    with transaction() as conn:
        repo = EtlRepository(conn)
        request = repo.backfill(backfill_id, lock=True)
        if request is None:
            raise NotFound(f"No backfill {backfill_id}")
        if request["status"] == "done":
            return result
        repo.update_backfill(backfill_id, status="running", error=None)
        horizon = repo.horizon(timedelta(seconds=settings.community_etl_lag_s))
        marks = repo.watermarks()
    result.horizon = horizon
    zones = rezone(horizon)
    if zones is None:
        return _requeue(backfill_id, result)
    result.stages.append(zones)
    first, last = request["from_day"], request["to_day"]
    try:
        return _backfill(
            backfill_id, first, last, request["next_day"], marks, horizon, result, remaining_ms
        )
    except Exception as exc:
        with transaction() as conn:
            EtlRepository(conn).update_backfill(backfill_id, status="failed", error=str(exc)[:500])
        logger.exception("Community backfill failed", extra={"backfill": str(backfill_id)})
        raise


def _backfill(
    backfill_id: UUID,
    first: date,
    last: date,
    next_day: date,
    marks: dict[str, datetime | None],
    horizon: datetime,
    result: EtlResult,
    remaining_ms: RemainingMs | None,
) -> EtlResult:
    settings = get_settings()
    chunk = timedelta(days=settings.community_backfill_chunk_days)
    stages = {name: StageResult(stage=name) for name in ("days", "weeks")}
    while next_day <= last:
        if _out_of_time(remaining_ms, settings):
            result.complete = False
            result.stages.extend(stages.values())
            return result
        c1, c2 = next_day, min(last, next_day + chunk - timedelta(days=1))
        # Each week once: the chunk holding its Monday does it (the first chunk also takes the
        # week it starts in). A week is computed from the taps, not from the day rows.
        w1 = _monday(c1) if c1 == first else _monday(c1 + timedelta(days=6))
        w2 = _monday(c2)

        def chunk_step(
            repo: EtlRepository, c1: date = c1, c2: date = c2, w1: date = w1, w2: date = w2
        ) -> dict[str, int]:
            for name, (p1, p2) in (("days", (c1, c2)), ("weeks", (w1, w2))):
                if p1 > p2:
                    continue
                began = time.perf_counter()
                counts = repo.rebuild_activity(name == "weeks", p1, p2)
                stages[name].seconds += time.perf_counter() - began
                stages[name].chunks += 1
                stages[name].keys += counts["keys"]
                stages[name].written += counts["written"]
            repo.update_backfill(backfill_id, next_day=c2 + timedelta(days=1))
            return {}

        if _locked_step(chunk_step) is None:
            return _requeue(backfill_id, result)
        next_day = c2 + timedelta(days=1)
    for stage_result in stages.values():
        _record(stage_result, None, "backfill")
        result.stages.append(stage_result)

    surge_upto = marks.get("surges") or horizon
    streak_at = marks.get("streaks") or horizon
    t1 = datetime.combine(first, datetime.min.time(), UTC) - timedelta(days=1)
    t2 = datetime.combine(last, datetime.min.time(), UTC) + timedelta(days=2)
    h2 = min(_hour(surge_upto), _hour(t2 + timedelta(hours=168)))
    finishing: list[tuple[str, Callable[[EtlRepository], dict[str, int]]]] = [
        ("edges", lambda repo: repo.rebuild_edges(t1, t2)),
        ("streaks", lambda repo: repo.rebuild_streaks(first, last, streak_at)),
        ("leaderboard", lambda repo: _weeks_from(repo, first, repo.leaderboard)),
        (
            "quests",
            lambda repo: _weeks_from(
                repo, first, lambda p1, p2: repo.quests(p1, p2, QUEST_RULE_VERSION, list(TIERS))
            ),
        ),
        (
            "surges",
            lambda repo: (
                repo.surges(t1, h2, settings.surge_factor, settings.surge_min_taps)
                if t1 < h2
                else {"keys": 0, "written": 0}
            ),
        ),
    ]
    for name, fn in finishing:
        if _out_of_time(remaining_ms, settings):
            result.complete = False
            return result
        stage_started = time.perf_counter()
        counts = _locked_step(fn)
        if counts is None:
            return _requeue(backfill_id, result)
        stage_result = StageResult(
            stage=name, keys=counts.get("keys", 0), written=counts.get("written", 0), chunks=1
        )
        _record(stage_result, stage_started, "backfill")
        result.stages.append(stage_result)
    with transaction() as conn:
        EtlRepository(conn).update_backfill(backfill_id, status="done")
    logger.info("Community backfill finished", extra={"backfill": str(backfill_id)})
    return result


def _requeue(backfill_id: UUID, result: EtlResult) -> EtlResult:
    """Another run holds the lock: wait in the queue; the nightly run starts waiting backfills
    when it is done."""
    with transaction() as conn:
        EtlRepository(conn).update_backfill(backfill_id, status="queued")
    logger.info("Backfill waits for the running ETL", extra={"backfill": str(backfill_id)})
    result.ran = result.complete = False
    return result


def resume_waiting_backfills() -> list[UUID]:
    """Start every backfill nobody is working on (queued behind a run, or orphaned by a
    failed hand-off or a dead invocation)."""
    with transaction() as conn:
        waiting = EtlRepository(conn).waiting_backfills(BACKFILL_STALE)
    for backfill_id in waiting:
        start_backfill(backfill_id)
    if waiting:
        logger.info("Resumed waiting backfills", extra={"backfills": [str(b) for b in waiting]})
    return waiting


def _weeks_from(
    repo: EtlRepository, first: date, fn: Callable[[date, date], dict[str, int]]
) -> dict[str, int]:
    latest = repo.latest_week()
    if latest is None or latest < _monday(first):
        return {"keys": 0, "written": 0}
    return fn(_monday(first), latest)


def backfill_now(from_day: date, to_day: date, requested_by: str | None = None) -> EtlResult:
    """Request and run a backfill in this process (the `tally` command, the handler's event)."""
    request = request_backfill(from_day, to_day, requested_by)
    return run_backfill(request.id)


def run(params: CommunityEtlInput, remaining_ms: RemainingMs | None = None) -> EtlResult:
    """The ETL function's one entry: the nightly run, or a backfill (new, or continued in a
    fresh invocation when the last one ran short of time)."""
    if params.mode == "nightly":
        return run_nightly(remaining_ms)
    if params.backfill_id is None:
        assert params.from_day is not None and params.to_day is not None
        params = params.model_copy(
            update={"backfill_id": request_backfill(params.from_day, params.to_day, None).id}
        )
    assert params.backfill_id is not None
    result = run_backfill(params.backfill_id, remaining_ms)
    if result.ran and not result.complete:
        how = start_backfill(params.backfill_id)
        logger.info("Backfill continues", extra={"backfill": str(params.backfill_id), "how": how})
    return result


def rebuild_all(horizon: datetime | None = None, requested_by: str | None = None) -> EtlResult:
    """Derive every rollup from all the taps: a first install over existing history, or after
    a change to the rules. Stages that never ran start at the horizon, and a backfill of every
    day with taps does the work, a chunk of days per transaction."""
    settings = get_settings()
    with transaction() as conn:
        repo = EtlRepository(conn)
        if not repo.try_lock():
            return EtlResult(mode="backfill", ran=False, complete=False)
        if horizon is None:
            horizon = repo.horizon(timedelta(seconds=settings.community_etl_lag_s))
        repo.start_watermarks(horizon, horizon - EDGE_WINDOW)
        span = repo.tap_days()
    if span is None:
        return EtlResult(mode="backfill", horizon=horizon)
    first, last = span
    return backfill_now(
        first - timedelta(days=1), last + timedelta(days=1), requested_by or "rebuild"
    )
