"""The nightly community ETL against hand-computed fixtures, and its guarantees: incremental
equals a full rebuild, a second run changes nothing, two runs at once do the work once."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tally.community import etl
from tally.settings import reset_settings
from tests.conftest import _truncate
from tests.support import assert_ledger_matches_totals, run_concurrently

T0 = datetime(2026, 10, 5, tzinfo=UTC)  # a Monday
ROLLUPS = {
    "edge_strength": "SELECT user_a, user_b, taps_90d, first_tap_at, last_tap_at "
    "FROM edge_strength ORDER BY 1, 2",
    "user_day_activity": "SELECT user_id, day, taps, distinct_counterparts, new_connections, "
    "second_degree_reach, streak_length FROM user_day_activity ORDER BY 1, 2",
    "user_week_activity": "SELECT user_id, week_start, taps, distinct_counterparts, "
    "new_connections, second_degree_reach, active_days FROM user_week_activity ORDER BY 1, 2",
    "user_streaks": "SELECT user_id, current_streak, longest_streak, last_active_day, timezone "
    "FROM user_streaks ORDER BY 1",
    "weekly_leaderboard": "SELECT week_start, user_id, new_connections, second_degree_growth, "
    "streak_days, rank FROM weekly_leaderboard ORDER BY 1, 2",
    "user_quest_progress": "SELECT user_id, quest_id, period_start, progress, target, "
    "completed_at IS NOT NULL AS done FROM user_quest_progress ORDER BY 1, 2, 3",
    "surge_windows": "SELECT window_start, taps, unique_users, baseline, multiplier "
    "FROM surge_windows ORDER BY 1",
}


def add_taps(
    db: psycopg.Connection[Any],
    taps: Iterable[tuple[str, str, datetime] | tuple[str, str, datetime, datetime]],
) -> None:
    """Taps as the route stores them, with a chosen arrival time (default: one minute later)."""
    rows = []
    start = db.execute("SELECT count(*) AS n FROM taps").fetchone()["n"]  # type: ignore[index]
    for i, tap in enumerate(taps):
        id1, id2, moment = tap[0], tap[1], tap[2]
        received = tap[3] if len(tap) == 4 else moment + timedelta(minutes=1)  # type: ignore[misc]
        rows.append((f"t{start + i}", id1, id2, moment, received))
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO taps (client_tap_id, id1, id2, time, received_at) "
            "VALUES (%s, %s, %s, %s, %s)",
            rows,
        )


def zone(db: psycopg.Connection[Any], address: str, tz: str, location: str | None = None) -> None:
    db.execute(
        "INSERT INTO profiles (address, timezone, location) VALUES (%s, %s, %s) "
        "ON CONFLICT (address) DO UPDATE SET timezone = EXCLUDED.timezone",
        (address, tz, location),
    )


def rollups(db: psycopg.Connection[Any]) -> dict[str, list[dict[str, Any]]]:
    return {name: db.execute(query).fetchall() for name, query in ROLLUPS.items()}


def day_row(db: psycopg.Connection[Any], user: str, day: date) -> dict[str, Any] | None:
    return db.execute(
        "SELECT taps, distinct_counterparts, new_connections, second_degree_reach, streak_length "
        "FROM user_day_activity WHERE user_id = %s AND day = %s",
        (user, day),
    ).fetchone()


def nightly(at: datetime) -> etl.EtlResult:
    return etl.run_nightly(horizon=at)


def strength(taps: int, days: float) -> float:
    return 0.6 * math.log(1 + taps) + 0.4 * math.exp(-days / 21)


# -- formulas and hand-computed rollups ---------------------------------------------------------


def test_edge_strength_is_the_guides_formula(db: psycopg.Connection[Any]) -> None:
    for taps, days in [(0, 0.0), (1, 0.0), (3, 2.5), (40, 21.0), (7, 90.0)]:
        row = db.execute(
            "SELECT tap_strength(%s, %s, %s) AS s", (taps, T0, T0 + timedelta(days=days))
        ).fetchone()
        assert row is not None
        assert row["s"] == pytest.approx(strength(taps, days), rel=1e-12)
    add_taps(
        db,
        [("a", "b", T0), ("b", "a", T0 + timedelta(hours=5)), ("a", "b", T0 + timedelta(days=2))],
    )
    horizon = T0 + timedelta(days=3)
    nightly(horizon)
    edge = db.execute("SELECT * FROM edge_strength").fetchone()
    assert edge is not None
    assert (edge["user_a"], edge["user_b"], edge["taps_90d"]) == ("a", "b", 3)
    assert edge["first_tap_at"] == T0 and edge["last_tap_at"] == T0 + timedelta(days=2)
    assert edge["strength"] == pytest.approx(strength(3, 1.0))


def test_edges_follow_a_true_rolling_90_day_window(db: psycopg.Connection[Any]) -> None:
    add_taps(db, [("a", "b", T0), ("a", "b", T0 + timedelta(days=50)), ("c", "a", T0)])
    nightly(T0 + timedelta(days=60))
    counts = {
        (r["user_a"], r["user_b"]): r["taps_90d"] for r in db.execute("SELECT * FROM edge_strength")
    }
    assert counts == {("a", "b"): 2, ("a", "c"): 1}
    # Day 95: the window starts on day 5, so the first taps have left it.
    add_taps(db, [("b", "a", T0 + timedelta(days=94))])
    nightly(T0 + timedelta(days=95))
    rows = {(r["user_a"], r["user_b"]): r for r in db.execute("SELECT * FROM edge_strength")}
    assert rows["a", "b"]["taps_90d"] == 2  # day 50 and day 94
    assert rows["a", "c"]["taps_90d"] == 0  # kept, remembering when they first met
    assert rows["a", "b"]["first_tap_at"] == T0 and rows["a", "c"]["first_tap_at"] == T0
    window = db.execute("SELECT window_start FROM etl_watermarks WHERE stage = 'edges'").fetchone()
    assert window == {"window_start": T0 + timedelta(days=5)}
    # An old pair drops out of "my connections"; a recent one is there with today's strength.
    nightly(T0 + timedelta(days=141))
    rows = {(r["user_a"], r["user_b"]): r for r in db.execute("SELECT * FROM edge_strength")}
    assert rows["a", "b"]["taps_90d"] == 1


def test_more_taps_leaving_the_window_than_entering_it(db: psycopg.Connection[Any]) -> None:
    add_taps(db, [("a", "b", T0), ("a", "b", T0 + timedelta(minutes=5))])
    nightly(T0 + timedelta(days=89))
    # Both leave the window the night a third one enters it.
    add_taps(db, [("a", "b", T0 + timedelta(days=90, hours=1))])
    nightly(T0 + timedelta(days=90, hours=2))
    edge = db.execute("SELECT taps_90d, first_tap_at FROM edge_strength").fetchone()
    assert edge == {"taps_90d": 1, "first_tap_at": T0}
    # History loaded late by SQL, long before the window: remembered, not counted.
    add_taps(db, [("b", "a", T0 - timedelta(days=200), T0 + timedelta(days=90, hours=3))])
    nightly(T0 + timedelta(days=90, hours=4))
    edge = db.execute("SELECT taps_90d, first_tap_at FROM edge_strength").fetchone()
    assert edge == {"taps_90d": 1, "first_tap_at": T0 - timedelta(days=200)}


def test_day_activity_by_hand(db: psycopg.Connection[Any]) -> None:
    d0, d1 = T0 + timedelta(hours=10), T0 + timedelta(days=1, hours=10)
    add_taps(
        db,
        [
            ("a", "b", d0),  # a and b meet on day 0
            ("a", "b", d1),  # ... and again on day 1: not a new connection
            ("a", "c", d1 + timedelta(hours=1)),
            ("a", "c", d1 + timedelta(hours=2)),
            ("b", "d", d1 + timedelta(hours=3)),
            ("c", "e", d1 + timedelta(hours=4)),
            ("e", "f", d1 + timedelta(hours=5)),  # three steps from a: not counted
        ],
    )
    nightly(T0 + timedelta(days=3))
    day1 = (T0 + timedelta(days=1)).date()
    # a met b and c (3 taps); c is new; through them a reaches d and e.
    assert day_row(db, "a", day1) == {
        "taps": 3,
        "distinct_counterparts": 2,
        "new_connections": 1,
        "second_degree_reach": 2,
        "streak_length": 2,
    }
    # b met a and d; through a it reaches c (d is b's own contact).
    assert day_row(db, "b", day1) == {
        "taps": 2,
        "distinct_counterparts": 2,
        "new_connections": 1,
        "second_degree_reach": 1,
        "streak_length": 2,
    }
    # e met c and f; through c it reaches a.
    assert day_row(db, "e", day1)["second_degree_reach"] == 1  # type: ignore[index]
    week = db.execute(
        "SELECT * FROM user_week_activity WHERE user_id = 'a' AND week_start = %s", (T0.date(),)
    ).fetchone()
    assert week is not None
    assert (week["taps"], week["distinct_counterparts"], week["new_connections"]) == (4, 2, 2)
    assert (week["active_days"], week["second_degree_reach"]) == (2, 2)
    assert week["last_updated_at"] is not None
    board = db.execute(
        "SELECT user_id, new_connections, second_degree_growth, streak_days, rank "
        "FROM weekly_leaderboard WHERE week_start = %s ORDER BY rank, user_id",
        (T0.date(),),
    ).fetchall()
    ranks = {r["user_id"]: r["rank"] for r in board}
    # a, b, c each have 2 new connections; a and b reach 2 more, c reaches 2 (b, f).
    assert board[0]["new_connections"] == 2
    assert ranks["f"] == max(ranks.values())
    assert sorted(set(ranks.values()))[0] == 1


def test_a_late_tap_moves_a_first_meeting(db: psycopg.Connection[Any]) -> None:
    d5 = T0 + timedelta(days=5, hours=12)
    add_taps(db, [("a", "b", d5)])
    nightly(T0 + timedelta(days=6))
    assert day_row(db, "a", d5.date())["new_connections"] == 1  # type: ignore[index]
    d3 = T0 + timedelta(days=3, hours=12)
    add_taps(db, [("b", "a", d3, T0 + timedelta(days=6, hours=1))])  # arrives three days late
    nightly(T0 + timedelta(days=7))
    assert day_row(db, "a", d3.date())["new_connections"] == 1  # type: ignore[index]
    assert day_row(db, "a", d5.date())["new_connections"] == 0  # type: ignore[index]
    edge = db.execute("SELECT first_tap_at, taps_90d FROM edge_strength").fetchone()
    assert edge == {"first_tap_at": d3, "taps_90d": 2}


# -- streaks, time zones and DST -------------------------------------------------------------


def streak(db: psycopg.Connection[Any], user: str) -> dict[str, Any] | None:
    return db.execute(
        "SELECT current_streak, longest_streak, last_active_day, timezone "
        "FROM user_streaks WHERE user_id = %s",
        (user,),
    ).fetchone()


def test_day_boundaries_are_in_the_users_zone(db: psycopg.Connection[Any]) -> None:
    zone(db, "ny", "America/New_York")
    # 23:30 and 00:30 New York time (EDT): two local days, one UTC day (2026-10-31).
    first = datetime(2026, 10, 31, 3, 30, tzinfo=UTC)
    add_taps(db, [("ny", "utc", first), ("ny", "utc", first + timedelta(hours=1))])
    nightly(first + timedelta(hours=3))
    days = db.execute("SELECT user_id, day FROM user_day_activity ORDER BY 1, 2").fetchall()
    assert days == [
        {"user_id": "ny", "day": date(2026, 10, 30)},
        {"user_id": "ny", "day": date(2026, 10, 31)},
        {"user_id": "utc", "day": date(2026, 10, 31)},
    ]
    assert streak(db, "ny") == {
        "current_streak": 2,
        "longest_streak": 2,
        "last_active_day": date(2026, 10, 31),
        "timezone": "America/New_York",
    }
    assert streak(db, "utc")["current_streak"] == 1  # type: ignore[index]


def test_streaks_across_the_dst_change(db: psycopg.Connection[Any]) -> None:
    """New York leaves daylight time on 2026-11-01 (a 25-hour day). A tap at 23:30 local every
    evening is a streak in New York; the same instants fall on other UTC days."""
    zone(db, "ny", "America/New_York")
    zone(db, "kol", "Asia/Kolkata")  # a half-hour offset
    evenings = [
        datetime(2026, 10, 31, 3, 30, tzinfo=UTC),  # Oct 30 23:30 EDT
        datetime(2026, 11, 1, 3, 30, tzinfo=UTC),  # Oct 31 23:30 EDT
        datetime(2026, 11, 2, 4, 30, tzinfo=UTC),  # Nov 1 23:30 EST (after the change)
        datetime(2026, 11, 3, 4, 30, tzinfo=UTC),  # Nov 2 23:30 EST
    ]
    add_taps(db, [("ny", "kol", moment) for moment in evenings])
    # 00:30 and 23:30 on Nov 1 in New York: 25 hours of one local day, still one active day.
    add_taps(db, [("ny", "x", datetime(2026, 11, 1, 4, 30, tzinfo=UTC))])
    nightly(datetime(2026, 11, 3, 12, tzinfo=UTC))
    ny_days = [
        r["day"]
        for r in db.execute("SELECT day FROM user_day_activity WHERE user_id = 'ny' ORDER BY day")
    ]
    assert ny_days == [date(2026, 10, 30), date(2026, 10, 31), date(2026, 11, 1), date(2026, 11, 2)]
    assert day_row(db, "ny", date(2026, 11, 1))["taps"] == 2  # type: ignore[index]
    assert streak(db, "ny")["current_streak"] == 4  # type: ignore[index]
    # Kolkata (UTC+5:30): the same instants are 09:00 / 10:00 on Oct 31, Nov 1, 2, 3.
    kol = streak(db, "kol")
    assert kol is not None and kol["current_streak"] == 4
    assert kol["last_active_day"] == date(2026, 11, 3)
    # A day without taps in New York ends the streak once that local day is over.
    nightly(datetime(2026, 11, 5, 6, tzinfo=UTC))  # Nov 5 01:00 EST: Nov 3 was empty
    assert streak(db, "ny") == {
        "current_streak": 0,
        "longest_streak": 4,
        "last_active_day": date(2026, 11, 2),
        "timezone": "America/New_York",
    }
    # A new run starts, and the longest run is remembered.
    add_taps(db, [("ny", "kol", datetime(2026, 11, 5, 15, tzinfo=UTC))])
    nightly(datetime(2026, 11, 5, 18, tzinfo=UTC))
    assert streak(db, "ny")["current_streak"] == 1  # type: ignore[index]
    assert streak(db, "ny")["longest_streak"] == 4  # type: ignore[index]


def test_a_repeated_local_midnight_belongs_to_the_new_day(db: psycopg.Connection[Any]) -> None:
    """Atlantic/Azores falls back from 01:00 to 00:00 on 2026-10-25: midnight happens twice."""
    zone(db, "az", "Atlantic/Azores")
    add_taps(db, [("az", "x", datetime(2026, 10, 25, 0, 30, tzinfo=UTC))])  # the first 00:30
    nightly(datetime(2026, 10, 26, tzinfo=UTC))
    assert day_row(db, "az", date(2026, 10, 25))["taps"] == 1  # type: ignore[index]
    assert day_row(db, "az", date(2026, 10, 24)) is None
    assert streak(db, "az")["last_active_day"] == date(2026, 10, 25)  # type: ignore[index]


def test_a_zone_change_recomputes_the_users_history(db: psycopg.Connection[Any]) -> None:
    zone(db, "ny", "UTC")
    evenings = [datetime(2026, 10, d, 2, 30, tzinfo=UTC) for d in (6, 7, 8)]
    add_taps(db, [("ny", "b", moment) for moment in evenings])
    nightly(datetime(2026, 10, 8, 12, tzinfo=UTC))
    assert [
        r["day"].day
        for r in db.execute("SELECT day FROM user_day_activity WHERE user_id = 'ny' ORDER BY day")
    ] == [6, 7, 8]
    zone(db, "ny", "America/New_York")
    result = nightly(datetime(2026, 10, 8, 13, tzinfo=UTC))
    assert result.stages[0].stage == "zones" and result.stages[0].keys == 1
    days = [
        r["day"].day
        for r in db.execute("SELECT day FROM user_day_activity WHERE user_id = 'ny' ORDER BY day")
    ]
    assert days == [5, 6, 7]  # 22:30 the evening before, in New York
    assert streak(db, "ny")["timezone"] == "America/New_York"  # type: ignore[index]
    incremental = rollups(db)
    db.execute(
        "TRUNCATE edge_strength, user_day_activity, user_week_activity, user_streaks, "
        "weekly_leaderboard, user_quest_progress, surge_windows"
    )
    etl.backfill_now(date(2026, 10, 1), date(2026, 10, 10))
    assert rollups(db) == incremental


def test_a_neighbours_week_in_another_zone_is_re_ranked(db: psycopg.Connection[Any]) -> None:
    zone(db, "v", "America/New_York")
    zone(db, "u", "Pacific/Auckland")
    zone(db, "w", "Pacific/Auckland")
    t1 = datetime(2026, 10, 11, 12, tzinfo=UTC)  # Sunday in New York, Monday in Auckland
    add_taps(db, [("v", "u", t1)])
    nightly(t1 + timedelta(hours=1))
    add_taps(db, [("u", "w", t1 + timedelta(hours=1), t1 + timedelta(hours=1, minutes=30))])
    nightly(t1 + timedelta(hours=3))
    growth = db.execute(
        "SELECT second_degree_growth FROM weekly_leaderboard "
        "WHERE week_start = '2026-10-05' AND user_id = 'v'"
    ).fetchone()
    assert growth == {"second_degree_growth": 1}


def test_a_late_day_joins_two_runs(db: psycopg.Connection[Any]) -> None:
    days = [0, 1, 2, 4, 5]
    add_taps(db, [("a", "b", T0 + timedelta(days=d, hours=12)) for d in days])
    nightly(T0 + timedelta(days=5, hours=13))
    assert streak(db, "a")["current_streak"] == 2  # type: ignore[index]
    assert streak(db, "a")["longest_streak"] == 3  # type: ignore[index]
    late = T0 + timedelta(days=3, hours=12)
    add_taps(db, [("a", "c", late, T0 + timedelta(days=5, hours=14))])
    nightly(T0 + timedelta(days=5, hours=15))
    assert streak(db, "a")["current_streak"] == 6  # type: ignore[index]
    assert streak(db, "a")["longest_streak"] == 6  # type: ignore[index]
    lengths = [
        r["streak_length"]
        for r in db.execute(
            "SELECT streak_length FROM user_day_activity WHERE user_id = 'a' ORDER BY day"
        )
    ]
    assert lengths == [1, 2, 3, 4, 5, 6]


# -- quests, surges, locations ---------------------------------------------------------------


def test_completing_a_quest_pays_once(db: psycopg.Connection[Any]) -> None:
    add_taps(db, [("q", f"p{i % 5}", T0 + timedelta(hours=i)) for i in range(24)])
    nightly(T0 + timedelta(days=2))
    progress = db.execute("SELECT * FROM user_quest_progress WHERE user_id = 'q'").fetchone()
    assert progress is not None
    assert (progress["progress"], progress["target"], progress["completed_at"]) == (24, 25, None)
    assert db.execute("SELECT count(*) AS n FROM points_ledger").fetchone() == {"n": 0}
    add_taps(db, [("q", "p9", T0 + timedelta(days=2, hours=1))])
    nightly(T0 + timedelta(days=3))
    entries = db.execute(
        "SELECT wallet_address, points, source_kind, source_id, rule_version, metadata "
        "FROM points_ledger"
    ).fetchall()
    assert len(entries) == 1
    entry = entries[0]
    assert (entry["wallet_address"], entry["points"], entry["source_kind"]) == ("q", 100, "quest")
    assert entry["source_id"].endswith(":q:2026-10-05")
    assert entry["metadata"]["quest"] == "weekly-25-taps"
    user = db.execute("SELECT total_points, tier FROM users WHERE wallet_address = 'q'").fetchone()
    assert user == {"total_points": 100, "tier": "Contributor"}
    # More taps, another run, a rebuild: still paid once.
    add_taps(db, [("q", "p8", T0 + timedelta(days=3, hours=1))])
    nightly(T0 + timedelta(days=4))
    etl.backfill_now(T0.date(), (T0 + timedelta(days=6)).date())
    assert db.execute("SELECT count(*) AS n FROM points_ledger").fetchone() == {"n": 1}
    assert_ledger_matches_totals(db)
    board = db.execute("SELECT points FROM board_scores WHERE board = 'all'").fetchall()
    assert board == [{"points": 100}]


def test_surge_windows(db: psycopg.Connection[Any]) -> None:
    quiet = [("a", "b", T0 + timedelta(hours=h, minutes=5)) for h in range(0, 48, 2)]
    burst_hour = T0 + timedelta(hours=50)
    burst = [(f"u{i}", f"v{i % 4}", burst_hour + timedelta(minutes=i)) for i in range(12)]
    add_taps(db, quiet + burst)
    nightly(T0 + timedelta(hours=53))
    surges = db.execute("SELECT * FROM surge_windows ORDER BY window_start").fetchall()
    assert [s["window_start"] for s in surges] == [burst_hour]
    surge = surges[0]
    assert surge["taps"] == 12 and surge["unique_users"] == 16
    assert surge["baseline"] == pytest.approx(24 / 168, abs=1e-4)
    assert surge["multiplier"] == 12.0  # taps over a baseline floored at one tap an hour
    assert surge["window_end"] == burst_hour + timedelta(hours=1)


def test_home_locations_are_parsed(db: psycopg.Connection[Any]) -> None:
    zone(db, "a", "UTC", "Brooklyn, New York, USA")
    zone(db, "b", "UTC", " Pune ,  India ")
    zone(db, "c", "UTC", "Lisbon")
    zone(db, "d", "UTC", " , ")
    etl.run_nightly(horizon=datetime.now(UTC))
    rows = db.execute(
        "SELECT user_id, city, region, country FROM home_location_struct ORDER BY 1"
    ).fetchall()
    assert rows == [
        {"user_id": "a", "city": "Brooklyn", "region": "New York", "country": "USA"},
        {"user_id": "b", "city": "Pune", "region": None, "country": "India"},
        {"user_id": "c", "city": "Lisbon", "region": None, "country": None},
        {"user_id": "d", "city": None, "region": None, "country": None},
    ]
    db.execute(
        "UPDATE profiles SET location = NULL, updated_at = clock_timestamp() WHERE address = 'a'"
    )
    etl.run_nightly(horizon=datetime.now(UTC))
    users = [r["user_id"] for r in db.execute("SELECT user_id FROM home_location_struct")]
    assert "a" not in users


# -- the job's guarantees --------------------------------------------------------------------


def test_the_guides_health_checks_run_unchanged(db: psycopg.Connection[Any]) -> None:
    add_taps(db, [("a", "b", T0)])
    nightly(T0 + timedelta(days=1))
    sizes = db.execute(
        """
        SELECT
          schemaname,
          tablename,
          pg_size_pretty(pg_total_relation_size(schemaname||'.'||tablename)) as size
        FROM pg_tables
        WHERE tablename LIKE '%gamification%' OR tablename IN ('user_day_activity', 'user_week_activity');
        """
    ).fetchall()
    assert {r["tablename"] for r in sizes} == {"user_day_activity", "user_week_activity"}
    fresh = db.execute(
        """
        SELECT
          MAX(last_updated_at) as last_update,
          COUNT(*) as record_count
        FROM user_week_activity;
        """
    ).fetchone()
    assert fresh is not None and fresh["record_count"] == 2 and fresh["last_update"] is not None


def test_running_twice_changes_nothing(db: psycopg.Connection[Any]) -> None:
    add_taps(
        db,
        [
            (f"u{i % 7}", f"u{(i * 3 + 1) % 7}", T0 + timedelta(hours=5 * i))
            for i in range(60)
            if i % 7 != (i * 3 + 1) % 7
        ],
    )
    first = nightly(T0 + timedelta(days=14))
    assert first.complete and sum(s.written for s in first.stages) > 0
    stamped = {name: db.execute(f"SELECT * FROM {name}").fetchall() for name in ROLLUPS}
    ledger = db.execute("SELECT * FROM points_ledger ORDER BY id").fetchall()
    again = nightly(T0 + timedelta(days=14))
    assert sum(s.written for s in again.stages) == 0
    assert {name: db.execute(f"SELECT * FROM {name}").fetchall() for name in ROLLUPS} == stamped
    assert db.execute("SELECT * FROM points_ledger ORDER BY id").fetchall() == ledger


def test_two_runs_at_once_do_the_work_once(db: psycopg.Connection[Any]) -> None:
    add_taps(db, [("q", f"p{i % 6}", T0 + timedelta(hours=i)) for i in range(30)])
    add_taps(db, [("r", f"p{i % 6}", T0 + timedelta(hours=i, minutes=7)) for i in range(30)])
    results = run_concurrently(lambda: nightly(T0 + timedelta(days=3)))
    assert any(r.complete for r in results)
    nightly(T0 + timedelta(days=3))  # whatever a skipped run left is finished here
    ledger = db.execute("SELECT wallet_address, points FROM points_ledger ORDER BY 1").fetchall()
    assert ledger == [
        {"wallet_address": "q", "points": 100},
        {"wallet_address": "r", "points": 100},
    ]
    assert_ledger_matches_totals(db)
    edge_total = db.execute("SELECT sum(taps_90d) AS n FROM edge_strength").fetchone()
    assert edge_total == {"n": 60}


def test_a_backfill_resumes_where_its_deadline_stopped_it(
    db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    add_taps(db, [("a", "b", T0 + timedelta(days=d, hours=9)) for d in range(20)])
    nightly(T0 + timedelta(days=21))
    expected = rollups(db)
    db.execute("TRUNCATE user_day_activity, user_week_activity, user_streaks, weekly_leaderboard")
    monkeypatch.setenv("COMMUNITY_BACKFILL_CHUNK_DAYS", "3")
    monkeypatch.setenv("COMMUNITY_STAGE_TIMEOUT_MS", "1000")
    monkeypatch.setenv("JOB_SAFETY_MARGIN_MS", "0")
    reset_settings()
    request = etl.request_backfill(T0.date(), (T0 + timedelta(days=20)).date(), "test")
    clock = iter([5000, 5000, 0])  # two chunks, then out of time

    first = etl.run_backfill(request.id, remaining_ms=lambda: next(clock, 0))
    assert first.ran and not first.complete
    state = etl.get_backfill(request.id)
    assert state.status == "running" and state.next_day == T0.date() + timedelta(days=6)
    second = etl.run_backfill(request.id)
    assert second.complete
    assert etl.get_backfill(request.id).status == "done"
    assert rollups(db) == expected


def test_a_backfill_that_finds_the_job_running_waits_for_it(
    db: psycopg.Connection[Any], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tally.community import repository

    add_taps(db, [("a", "b", T0)])
    nightly(T0 + timedelta(days=1))
    request = etl.request_backfill(T0.date(), T0.date(), "test")
    with psycopg.connect(database_url) as holder, holder.transaction():
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (repository.COMMUNITY_LOCK,))
        blocked = etl.run_backfill(request.id)
    assert not blocked.ran and etl.get_backfill(request.id).status == "queued"
    started: list[Any] = []
    monkeypatch.setattr(etl, "start_backfill", started.append)
    nightly(T0 + timedelta(days=1))  # the nightly run, once done, starts what waits
    assert started == [request.id]
    assert etl.run_backfill(request.id).complete
    assert etl.get_backfill(request.id).status == "done"


def test_a_first_install_over_history_equals_the_nightly_runs(
    db: psycopg.Connection[Any],
) -> None:
    zone(db, "a", "America/New_York")
    add_taps(
        db,
        [
            (f"u{i % 5}" if i % 3 else "a", f"u{(i * 7 + 2) % 5}", T0 + timedelta(hours=9 * i))
            for i in range(300)
            if (f"u{i % 5}" if i % 3 else "a") != f"u{(i * 7 + 2) % 5}"
        ],
    )
    end = T0 + timedelta(days=120)
    rebuilt = etl.rebuild_all(horizon=end)
    assert rebuilt.complete
    marks = db.execute("SELECT DISTINCT received_upto FROM etl_watermarks").fetchall()
    assert marks == [{"received_upto": end}]
    from_scratch = rollups(db)
    ledger = db.execute("SELECT source_id, points FROM points_ledger ORDER BY 1").fetchall()
    assert from_scratch["edge_strength"] and from_scratch["weekly_leaderboard"]
    _truncate(db)
    add_taps(
        db,
        [
            (f"u{i % 5}" if i % 3 else "a", f"u{(i * 7 + 2) % 5}", T0 + timedelta(hours=9 * i))
            for i in range(300)
            if (f"u{i % 5}" if i % 3 else "a") != f"u{(i * 7 + 2) % 5}"
        ],
    )
    zone(db, "a", "America/New_York")
    nightly(end)
    assert rollups(db) == from_scratch
    assert db.execute("SELECT source_id, points FROM points_ledger ORDER BY 1").fetchall() == ledger


def test_the_handler_hands_an_unfinished_backfill_to_a_fresh_invocation(
    db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from botocore.stub import ANY, Stubber

    add_taps(db, [("a", "b", T0 + timedelta(days=d)) for d in range(10)])
    nightly(T0 + timedelta(days=11))
    monkeypatch.setenv("COMMUNITY_ETL_FUNCTION", "tally-community-etl-test")
    reset_settings()
    client = boto3.client("lambda", region_name="us-east-1")
    stubber = Stubber(client)
    stubber.add_response(
        "invoke",
        {"StatusCode": 202},
        {"FunctionName": "tally-community-etl-test", "InvocationType": "Event", "Payload": ANY},
    )
    monkeypatch.setattr(boto3, "client", lambda *a, **k: client)
    params = etl.CommunityEtlInput(
        mode="backfill", from_day=T0.date(), to_day=T0.date() + timedelta(days=9)
    )
    with stubber:
        result = etl.run(params, remaining_ms=lambda: 0)
        stubber.assert_no_pending_responses()
    assert result.ran and not result.complete


# -- incremental equals a full rebuild -------------------------------------------------------

USERS = ["a", "b", "c", "d", "e", "f"]
ZONES = [
    "UTC",
    "America/New_York",
    "Asia/Kolkata",
    "Pacific/Auckland",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
    "Atlantic/Azores",
]
DAYS = 130  # past the 90-day window, so taps leave it

tap_strategy = st.tuples(
    st.sampled_from(USERS),
    st.sampled_from(USERS),
    st.one_of(  # minutes into the period: whole hours hit local midnights exactly
        st.integers(0, 24 * 21).map(lambda h: h * 60),
        st.integers(0, 24 * 60 * 21),
        st.integers(0, 24 * 60 * DAYS),
    ),
    st.one_of(  # arrival delay in minutes; negative: a tap time slightly in the future
        st.integers(-5, 30), st.integers(0, 60 * 24 * 5), st.sampled_from([0, 60, 1440])
    ),
).filter(lambda t: t[0] != t[1])


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    taps=st.lists(tap_strategy, min_size=1, max_size=60),
    zones=st.lists(st.sampled_from(ZONES), min_size=len(USERS), max_size=len(USERS)),
    cuts=st.lists(st.integers(1, 24 * (DAYS + 5)), min_size=1, max_size=5),
    chunk_hours=st.sampled_from([1, 6, 24, 200]),
    moves=st.lists(st.tuples(st.sampled_from(USERS), st.sampled_from(ZONES)), max_size=2),
)
def test_incremental_runs_equal_a_full_rebuild(
    db: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
    taps: list[tuple[str, str, int, int]],
    zones: list[str],
    cuts: list[int],
    chunk_hours: int,
    moves: list[tuple[str, str]],
) -> None:
    _truncate(db)
    monkeypatch.setenv("COMMUNITY_CHUNK_HOURS", str(chunk_hours))
    monkeypatch.setenv("SURGE_MIN_TAPS", "3")
    reset_settings()
    for user, tz in zip(USERS, zones, strict=True):
        zone(db, user, tz)
    add_taps(
        db,
        [
            (a, b, T0 + timedelta(minutes=m), T0 + timedelta(minutes=max(m + delay, 0)))
            for a, b, m, delay in taps
        ],
    )
    end = T0 + timedelta(days=DAYS + 6)
    for i, hours in enumerate(sorted(set(cuts))):
        if i < len(moves):  # someone moves to another zone between runs
            zone(db, *moves[i])
        nightly(T0 + timedelta(hours=hours))
    nightly(end)
    incremental = rollups(db)
    ledger = db.execute("SELECT source_id, points FROM points_ledger ORDER BY 1").fetchall()

    db.execute(
        "TRUNCATE edge_strength, user_day_activity, user_week_activity, user_streaks, "
        "weekly_leaderboard, user_quest_progress, surge_windows"
    )
    etl.backfill_now(T0.date() - timedelta(days=1), end.date())
    assert rollups(db) == incremental
    assert db.execute("SELECT source_id, points FROM points_ledger ORDER BY 1").fetchall() == ledger
    assert_ledger_matches_totals(db)


def test_the_job_reports_and_measures_every_stage(
    db: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """What the handler returns is what each stage logs; the metrics carry a stage dimension."""
    import json

    from tally.local import template
    from tally.local.invoke import invoke

    add_taps(db, [("a", "b", datetime.now(UTC) - timedelta(hours=3))])
    result = invoke(template.load(), "CommunityEtlFunction", {"mode": "nightly"})
    assert result["complete"] and result["mode"] == "nightly"
    stages = {s["stage"]: s for s in result["stages"]}
    assert set(stages) == {"zones", *(s.name for s in etl.STAGES)}
    assert stages["days"]["written"] == 2 and stages["edges"]["written"] == 1
    out = capsys.readouterr().out.splitlines()
    emf = [json.loads(line) for line in out if line.startswith("{") and '"_aws"' in line]
    written = {
        r["stage"]: r["CommunityEtlRowsWritten"] for r in emf if "CommunityEtlRowsWritten" in r
    }
    assert set(written) >= {s.name for s in etl.STAGES}
    assert written["days"] in (2.0, [2.0])
    assert any("CommunityEtlRuns" in r for r in emf)
