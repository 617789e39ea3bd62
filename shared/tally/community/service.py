"""Community rules: taking in taps and profiles, and the four community endpoints."""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aws_lambda_powertools import Logger

from tally.community.models import (
    Connection,
    HealthOut,
    Meta,
    Participant,
    PersonToMeet,
    ProfileIn,
    ProfileOut,
    QuestProgress,
    QuestsOut,
    RadarBucket,
    RadarOut,
    TapBatchIn,
    TapBatchOut,
    WeeklyBoardEntry,
    WeeklyOut,
    WeekStats,
)
from tally.community.repository import CommunityReadRepository, TapRepository
from tally.db.connection import read_snapshot, transaction
from tally.errors import Conflict, InvalidInput, NotFound
from tally.observability import metrics
from tally.settings import get_settings

logger = Logger(child=True)

# REFERENCE.md: people to meet weigh mutual connections 0.7, recency 0.2, proximity 0.1, and
# need at least two mutuals.
MEET_WEIGHTS = (0.7, 0.2, 0.1)
MEET_MIN_MUTUALS = 2
MEET_LIMIT = 3
# Health buckets by current strength (0.6*ln(1+taps) + 0.4*recency): one tap today is ~0.82,
# five taps this week ~1.4, ten recent taps ~1.8.
HEALTH_BUCKETS = ((1.5, "thriving"), (1.0, "healthy"), (0.5, "fading"))


def _now() -> datetime:
    return datetime.now(UTC)


# -- input ---------------------------------------------------------------------------------------


def record_taps(batch: TapBatchIn, now: datetime | None = None) -> TapBatchOut:
    """Store a batch whole or not at all: bad times are a 422, a client id reused for another
    tap a 409; a resent tap is counted as a duplicate and changes nothing."""
    settings = get_settings()
    if len(batch.taps) > settings.tap_batch_max:
        raise InvalidInput(
            f"A batch holds at most {settings.tap_batch_max} taps", code="batch_too_large"
        )
    now = now or _now()
    latest = now + timedelta(seconds=settings.tap_future_skew_s)
    earliest = now - timedelta(days=settings.tap_max_age_days)
    errors = [
        {"index": i, "client_tap_id": tap.client_tap_id, "time": tap.time.isoformat()}
        for i, tap in enumerate(batch.taps)
        if not earliest <= tap.time <= latest
    ]
    if errors:
        raise InvalidInput(
            f"Tap times must fall between {settings.tap_max_age_days} days ago and "
            f"{settings.tap_future_skew_s} seconds ahead of the server clock",
            code="tap_time_out_of_range",
            taps=errors[:50],
        )
    seen: dict[str, tuple[str, str, datetime]] = {}
    for tap in batch.taps:
        content = (tap.id1, tap.id2, tap.time)
        if seen.setdefault(tap.client_tap_id, content) != content:
            raise Conflict(
                f"client_tap_id {tap.client_tap_id} is used twice in the batch for different taps",
                code="client_tap_id_reused",
            )
    unique = [(cid, *content) for cid, content in seen.items()]
    with transaction() as conn:
        added, conflicting = TapRepository(conn).insert_taps(unique)
        if conflicting:
            raise Conflict(
                "Some client_tap_ids are already stored for different taps; nothing was stored",
                code="client_tap_id_reused",
                client_tap_ids=conflicting[:50],
            )
    duplicates = len(batch.taps) - added
    metrics.add_metric(name="TapsAccepted", unit="Count", value=added)
    if duplicates:
        metrics.add_metric(name="TapsDuplicate", unit="Count", value=duplicates)
    return TapBatchOut(accepted=added, duplicates=duplicates)


def put_profile(address: str, body: ProfileIn) -> ProfileOut:
    with transaction() as conn:
        row = TapRepository(conn).upsert_profile(address, body.model_dump())
    return ProfileOut.model_validate(row)


def get_profile(address: str) -> ProfileOut:
    with read_snapshot() as conn:
        row = TapRepository(conn).profile(address)
    if row is None:
        raise NotFound(f"No profile for {address}")
    return ProfileOut.model_validate(row)


# -- the community endpoints ---------------------------------------------------------------------


def _zone(repo: CommunityReadRepository, user_id: str, tz: str | None) -> str:
    return tz or repo.user_zone(user_id)


def _week_start(now: datetime, tz: str) -> date:
    today = now.astimezone(ZoneInfo(tz)).date()
    return today - timedelta(days=today.weekday())


def _meta(tz: str, now: datetime, as_of: datetime | None, debug: dict[str, Any] | None) -> Meta:
    return Meta(tz_used=tz, generated_at=now.astimezone(ZoneInfo(tz)), as_of=as_of, debug=debug)


def _local(moment: datetime | None, tz: str) -> datetime | None:
    return moment.astimezone(ZoneInfo(tz)) if moment is not None else None


def weekly(
    user_id: str, tz: str | None, board_limit: int, debug: bool, now: datetime | None = None
) -> WeeklyOut:
    """My week, the week's board and up to three people to meet."""
    now = now or _now()
    with read_snapshot() as conn:
        repo = CommunityReadRepository(conn)
        # Weeks are kept in the user's own zone; tz only changes how times are shown.
        own_zone = repo.user_zone(user_id)
        zone = tz or own_zone
        week_start = _week_start(now, own_zone)
        row = repo.week(user_id, week_start)
        streak = repo.streak(user_id, now)
        board = repo.weekly_board(week_start, board_limit)
        people, considered = repo.people_to_meet(
            user_id, now, MEET_WEIGHTS, MEET_MIN_MUTUALS, MEET_LIMIT
        )
        as_of = repo.watermark("leaderboard")
        board_size = repo.board_size(week_start) if debug else 0
    me = WeekStats.model_validate({"week_start": week_start} | (dict(row) if row else {}))
    if streak:
        me.current_streak = streak["current_streak"]
        me.longest_streak = streak["longest_streak"]
    start = datetime.combine(week_start, datetime.min.time(), ZoneInfo(own_zone))
    end = datetime.combine(week_start + timedelta(days=7), datetime.min.time(), ZoneInfo(own_zone))
    info = (
        {
            "week_start": start.astimezone(ZoneInfo(zone)).isoformat(),
            "week_end": end.astimezone(ZoneInfo(zone)).isoformat(),
            "user_zone": own_zone,
            "board_entries": board_size,
            "candidates_considered": considered,
            "weights": {
                "mutuals": MEET_WEIGHTS[0],
                "recency": MEET_WEIGHTS[1],
                "proximity": MEET_WEIGHTS[2],
            },
            "min_mutuals": MEET_MIN_MUTUALS,
        }
        if debug
        else None
    )
    return WeeklyOut(
        user_id=user_id,
        me=me,
        leaderboard=[WeeklyBoardEntry.model_validate(r) for r in board],
        people_to_meet=[
            PersonToMeet(
                user_id=p["user_id"],
                display_name=p["display_name"],
                score=round(float(p["score"]), 4),
                mutuals=p["mutuals"],
                recency=round(float(p["recency"]), 4),
                proximity=float(p["proximity"]),
            )
            for p in people
        ],
        meta=_meta(zone, now, as_of, info),
    )


def quests(user_id: str, tz: str | None, debug: bool, now: datetime | None = None) -> QuestsOut:
    now = now or _now()
    with read_snapshot() as conn:
        repo = CommunityReadRepository(conn)
        # Progress is kept per week of the user's own zone.
        own_zone = repo.user_zone(user_id)
        zone = tz or own_zone
        period = _week_start(now, own_zone)
        rows = repo.quests(user_id, period)
        as_of = repo.watermark("quests")
    items = [
        QuestProgress(
            slug=r["slug"],
            title=r["title"],
            description=r["description"],
            unit=r["unit"],
            target=r["target"],
            progress=r["progress"],
            completed=r["completed_at"] is not None,
            completed_at=_local(r["completed_at"], zone),
            reward_points=r["reward_points"],
            period_start=period,
        )
        for r in rows
    ]
    start = datetime.combine(period, datetime.min.time(), ZoneInfo(own_zone))
    end = datetime.combine(period + timedelta(days=7), datetime.min.time(), ZoneInfo(own_zone))
    info = (
        {
            "period_start": start.astimezone(ZoneInfo(zone)).isoformat(),
            "period_end": end.astimezone(ZoneInfo(zone)).isoformat(),
            "user_zone": own_zone,
            "active_quests": len(rows),
        }
        if debug
        else None
    )
    return QuestsOut(user_id=user_id, quests=items, meta=_meta(zone, now, as_of, info))


_radar_lock = threading.Lock()
_radar_memo: dict[tuple[datetime, int, int], tuple[float, Any]] = {}


def _radar_window(start: datetime, end: datetime, hours: int, top: int) -> Any:
    """The community's hours from the taps, shared by every caller asking for the same window
    within COMMUNITY_RADAR_CACHE_SECONDS (a week of taps is seconds of work; the answer is the
    same for everyone, whatever their zone)."""
    ttl = get_settings().community_radar_cache_s
    key = (start, hours, top)
    now = time.monotonic()
    with _radar_lock:
        hit = _radar_memo.get(key)
    if hit is not None and now - hit[0] < ttl:
        return hit[1]
    with read_snapshot() as conn:
        repo = CommunityReadRepository(conn)
        value = (
            repo.radar(start, hours),
            repo.top_participants(start, end, top),
            repo.watermark("surges"),
        )
    if ttl > 0:
        with _radar_lock:
            for stale in [k for k, (at, _) in _radar_memo.items() if now - at >= ttl]:
                del _radar_memo[stale]
            _radar_memo[key] = (now, value)
    return value


def radar(tz: str, hours: int, top: int, debug: bool, now: datetime | None = None) -> RadarOut:
    """The last `hours` local clock hours (the current one included), live from the taps."""
    now = now or _now()
    zone = ZoneInfo(tz)
    local_hour = now.astimezone(zone).replace(minute=0, second=0, microsecond=0)
    # Count back in real hours from the current local hour's start (DST-safe).
    current = local_hour.astimezone(UTC)
    start = current - timedelta(hours=hours - 1)
    end = current + timedelta(hours=1)
    buckets, people, as_of = _radar_window(start, end, hours, top)
    info = (
        {
            "from": start.astimezone(zone).isoformat(),
            "to": end.astimezone(zone).isoformat(),
            "taps": sum(b["taps"] for b in buckets),
            "surge_hours": sum(1 for b in buckets if b["surge_multiplier"] is not None),
        }
        if debug
        else None
    )
    return RadarOut(
        hours=hours,
        buckets=[
            RadarBucket(
                start=b["start"].astimezone(zone),
                taps=b["taps"],
                unique_users=b["unique_users"],
                surge_multiplier=float(b["surge_multiplier"])
                if b["surge_multiplier"] is not None
                else None,
            )
            for b in buckets
        ],
        top_participants=[Participant.model_validate(p) for p in people],
        meta=_meta(tz, now, as_of, info),
    )


def _health(strength: float) -> str:
    return next((name for floor, name in HEALTH_BUCKETS if strength >= floor), "dormant")


def health(
    user_id: str, tz: str | None, limit: int, debug: bool, now: datetime | None = None
) -> HealthOut:
    """My strongest connections over the last 90 days, strength as of now."""
    now = now or _now()
    with read_snapshot() as conn:
        repo = CommunityReadRepository(conn)
        zone = _zone(repo, user_id, tz)
        rows, considered = repo.strongest(user_id, now, limit)
        as_of = repo.watermark("edges")
    window = (as_of - timedelta(days=90), as_of) if as_of else None
    info = (
        {
            "window_start": window[0].astimezone(ZoneInfo(zone)).isoformat() if window else None,
            "window_end": window[1].astimezone(ZoneInfo(zone)).isoformat() if window else None,
            "connections_considered": considered,
            "buckets": {name: floor for floor, name in HEALTH_BUCKETS},
        }
        if debug
        else None
    )
    return HealthOut(
        user_id=user_id,
        connections=[
            Connection(
                user_id=r["user_id"],
                display_name=r["display_name"],
                strength=round(float(r["strength"]), 4),
                taps_90d=r["taps_90d"],
                last_tap_at=r["last_tap_at"].astimezone(ZoneInfo(zone)),
                days_since_last_tap=round(float(r["days_since_last_tap"]), 3),
                health=_health(float(r["strength"])),
            )
            for r in rows
        ],
        meta=_meta(zone, now, as_of, info),
    )
