"""Community activity at 10M taps: the nightly ETL from empty, a full rebuild, one incremental
day, and the same day done the two usual naive ways (batch Python, one query per row).

The taps are generated with INSERT ... SELECT generate_series, a few days per statement in
received order (as a live table fills), with the secondary indexes of `taps` built after the
load. The taps received on the last day (a Sunday) are held back in a side table. Then:

1. `run_nightly(horizon=<end of history>)` from empty watermarks: every stage walks the history
   a 24-hour chunk of received time at a time (the "full nightly job").
2. The rollup tables are emptied (their rows kept aside, the watermarks left) and
   `backfill_now()` rebuilds every local day of the history: the full rebuild, 7-day chunks for
   days and weeks, then one statement per finishing stage. Its rows must equal the nightly's.
3. The database is cloned twice (CREATE DATABASE ... TEMPLATE, a byte copy), so the three
   implementations of the incremental day start from the same state: Tally's `run_nightly` on
   the original, bench.community_naive's batch-Python and per-row jobs on the clones. Each first
   inserts the held-back day, then brings edges, days and streaks up to date; the results are
   compared table by table.
4. The naive edge merges (recount the touched pairs over the 90-day window; recount every pair
   in the window) run on a clone in transactions that are rolled back.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from bench.community_naive import (
    NaiveRun,
    batch_day,
    edge_window,
    per_row_day,
)
from bench.db import Server, connect
from bench.stats import log

Conn = psycopg.Connection[dict[str, Any]]

# -- the data set --------------------------------------------------------------------------------

# Who taps: user floor(users * random()^ACTIVITY_SKEW), so a few users tap a lot.
ACTIVITY_SKEW = 2
# Whom: with probability FRIEND_SHARE one of the tapper's FRIENDS fixed friends (friend
# floor(FRIENDS * random()^2): a best friend or two, then a tail), else anyone: pairs repeat.
FRIENDS = 30
FRIEND_SHARE = 0.8
# When: 10% at any hour, the rest over 08:00-22:00 UTC peaking mid-afternoon (mean of three
# uniforms); on one day a week EVENT_SHARE of the day's taps fall in one hour (19:00 UTC), which
# the surge stage should flag.
ANY_HOUR_SHARE = 0.1
EVENT_SHARE = 0.1
# Received: 2 s to 10 min after the tap, or for LATE_SHARE of taps 1 h to 3 days after.
LATE_SHARE = 0.05
# Profiles: PROFILE_SHARE of users have one (the rest count as UTC); of those, 10% in each of
# these zones, the rest UTC; a location "City, Region, Country" (some "City, Country", 5% none).
PROFILE_SHARE = 0.9
ZONES = ("America/New_York", "Europe/Berlin", "Asia/Kolkata")
ZONE_SHARE = 0.1
LOCATIONS = {  # as many per zone, so that they form one rectangular SQL array
    "America/New_York": ["New York, NY, USA", "Boston, MA, USA", "Toronto, Ontario, Canada"],
    "Europe/Berlin": ["Berlin, Berlin, Germany", "Munich, Bavaria, Germany", "Vienna, Austria"],
    "Asia/Kolkata": ["Mumbai, Maharashtra, India", "Bengaluru, Karnataka, India", "Kolkata"],
    "UTC": ["London, England, UK", "Lisbon, Lisboa, Portugal", "Accra, Ghana"],
}
NO_LOCATION_SHARE = 0.05
SEED = 0.42
# Stages get a statement timeout this long in the bench (the deployed default is far shorter):
# the full runs must finish to be measured. Whether the incremental day would fit the default
# is checked separately.
BENCH_STAGE_TIMEOUT_MS = 4 * 3600 * 1000
LAMBDA_LIMIT_S = 900
PROGRESS_EVERY_S = 60.0

# Above this size the history is not replayed through the nightly job (hours on 2 cores).
REPLAY_MAX_TAPS = 1_000_000


def user_sql(expr: str, width: int) -> str:
    """The text id of user number `expr`: fixed width, so text order is number order."""
    return f"'u' || lpad(({expr})::text, {width}, '0')"


@dataclass
class Dataset:
    taps: int
    users: int
    days: int
    start: datetime  # first day of taps (UTC midnight)
    history_end: datetime  # taps received before this are the history
    end: datetime  # the held-back day is received in [history_end, end)
    history_taps: int = 0
    day_taps: int = 0
    day_late: int = 0  # held-back taps that happened before history_end
    late_taps: int = 0  # received more than an hour after they happened, whole data set
    profiles: int = 0
    zones: dict[str, int] = field(default_factory=dict)
    active_users: int = 0
    pairs: int = 0  # pairs in edge_strength after the history
    busiest_user_taps: int = 0
    median_user_taps: float = 0.0
    statements: list[tuple[int, float]] = field(default_factory=list)  # (rows, seconds)
    profile_seconds: float = 0.0
    load_seconds: float = 0.0
    index_seconds: float = 0.0
    indexes: list[str] = field(default_factory=list)
    vacuum_seconds: float = 0.0
    rollup_vacuum_seconds: float = 0.0
    sizes: dict[str, int] = field(default_factory=dict)


def _scalar(conn: Conn, sql: str, params: Any = None) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return next(iter(row.values()))


def _width(users: int) -> int:
    return max(7, len(str(users)))


def insert_profiles(conn: Conn, ds: Dataset) -> None:
    """Profiles updated at the start of the history, so the first nightly chunk parses them."""
    names = [*ZONES, "UTC"]
    zone_case = " ".join(f"WHEN z < {ZONE_SHARE * (i + 1)} THEN {i + 1}" for i in range(len(ZONES)))
    conn.execute(
        f"""
        INSERT INTO profiles (address, display_name, location, timezone, created_at, updated_at)
        SELECT {user_sql("g", _width(ds.users))}, 'Bench user ' || g,
               CASE WHEN loc >= %(no_loc)s
                    THEN (%(locations)s::text[])[zi][1 + floor(pick * %(per_zone)s)::int] END,
               (%(zones)s::text[])[zi], %(start)s, %(start)s
        FROM (
            SELECT g, random() AS has, random() AS loc, random() AS pick,
                   CASE {zone_case} ELSE {len(names)} END AS zi
            FROM (SELECT g, random() AS z FROM generate_series(0, %(users)s - 1) AS g) AS s
        ) AS p
        WHERE has < %(share)s
        """,
        {
            "no_loc": NO_LOCATION_SHARE,
            "locations": [LOCATIONS[name] for name in names],
            "per_zone": len(LOCATIONS["UTC"]),
            "zones": names,
            "start": ds.start,
            "users": ds.users,
            "share": PROFILE_SHARE,
        },
    )


TAPS_CHUNK = """
WITH gen AS (
    SELECT 'bench-' || lpad(g::text, 10, '0') AS client_tap_id,
           CASE WHEN swap < 0.5 THEN {ua} ELSE {ub} END AS id1,
           CASE WHEN swap < 0.5 THEN {ub} ELSE {ua} END AS id2,
           time,
           least(time + CASE WHEN late < %(late)s THEN interval '1 hour' * (1 + 71 * lag * lag)
                             ELSE interval '1 second' * (2 + 598 * lag * lag * lag) END,
                 %(end)s::timestamptz - interval '1 millisecond') AS received_at
    FROM (
        SELECT g, a, swap, late, lag,
               CASE WHEN pick < %(friend_share)s
                    THEN (a + 1 + ((a::bigint * 7919 + floor(%(friends)s * k * k)::bigint * 104729)
                                   %% (%(users)s - 1))::int) %% %(users)s
                    ELSE (a + 1 + floor((%(users)s - 1) * anyone)::int) %% %(users)s
               END AS b,
               %(start)s::timestamptz + day * interval '1 day' + interval '1 hour' * CASE
                   WHEN mode < %(any_hour)s THEN 24 * r1
                   WHEN day %% 7 = 5 AND mode < %(any_hour)s + %(event)s THEN 19 + r1
                   ELSE 8 + 14 * (r1 + r2 + r3) / 3 END AS time
        FROM (
            SELECT g, floor(%(users)s * power(random(), %(skew)s))::int AS a,
                   random() AS pick, random() AS k, random() AS anyone, random() AS swap,
                   %(d0)s + floor(random() * %(nd)s)::int AS day,
                   random() AS r1, random() AS r2, random() AS r3, random() AS mode,
                   random() AS lag, random() AS late
            FROM generate_series(%(g1)s::bigint, %(g2)s::bigint) AS g
        ) AS r
    ) AS p
),
held AS (
    INSERT INTO bench_held_taps SELECT * FROM gen WHERE received_at >= %(history_end)s
    RETURNING 1
)
INSERT INTO taps (client_tap_id, id1, id2, time, received_at)
SELECT client_tap_id, id1, id2, time, received_at FROM gen
WHERE received_at < %(history_end)s
ORDER BY received_at
"""


def load(conn: Conn, ds: Dataset, chunk: int) -> None:
    """Profiles, then the taps a few days per statement, secondary indexes built afterwards."""
    conn.execute("SELECT setseed(%s)", (SEED,))
    started = time.perf_counter()
    insert_profiles(conn, ds)
    ds.profile_seconds = time.perf_counter() - started
    ds.profiles = int(_scalar(conn, "SELECT count(*) FROM profiles"))
    ds.zones = {
        r["timezone"]: int(r["n"])
        for r in conn.execute(
            "SELECT timezone, count(*) AS n FROM profiles GROUP BY 1 ORDER BY 2 DESC"
        ).fetchall()
    }
    log(f"community: {ds.profiles:,} profiles in {ds.profile_seconds:.1f}s")

    conn.execute(
        "CREATE TABLE bench_held_taps (client_tap_id text, id1 text, id2 text, "
        "time timestamptz, received_at timestamptz)"
    )
    # Secondary indexes (not those of constraints) are dropped and rebuilt after the load,
    # as one would for a bulk import; their definitions come from the catalog.
    rows = conn.execute(
        """
        SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def
        FROM pg_index i
        WHERE i.indrelid = 'taps'::regclass
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
        ORDER BY 1
        """
    ).fetchall()
    for row in rows:
        conn.execute(f"DROP INDEX {row['name']}")
    ds.indexes = [row["name"] for row in rows]

    per_day = ds.taps / ds.days
    days_per_statement = max(1, round(chunk / per_day))
    ua = user_sql("a", _width(ds.users))
    ub = user_sql("b", _width(ds.users))
    statement = TAPS_CHUNK.format(ua=ua, ub=ub)
    load_started = time.perf_counter()
    d0 = 0
    while d0 < ds.days:
        d1 = min(ds.days, d0 + days_per_statement)
        g1, g2 = int(ds.taps * d0 / ds.days) + 1, int(ds.taps * d1 / ds.days)
        started = time.perf_counter()
        conn.execute(
            statement,
            {
                "late": LATE_SHARE,
                "end": ds.end,
                "friend_share": FRIEND_SHARE,
                "friends": FRIENDS,
                "users": ds.users,
                "start": ds.start,
                "any_hour": ANY_HOUR_SHARE,
                "event": EVENT_SHARE,
                "skew": ACTIVITY_SKEW,
                "d0": d0,
                "nd": d1 - d0,
                "g1": g1,
                "g2": g2,
                "history_end": ds.history_end,
            },
        )
        seconds = time.perf_counter() - started
        ds.statements.append((g2 - g1 + 1, seconds))
        log(
            f"community: taps {g2:,}/{ds.taps:,} (days {d0}-{d1 - 1}) in {seconds:.1f}s, "
            f"{(g2 - g1 + 1) / seconds:,.0f} rows/s"
        )
        d0 = d1
    ds.load_seconds = time.perf_counter() - load_started

    started = time.perf_counter()
    conn.execute("SET maintenance_work_mem = '256MB'")
    for row in rows:
        conn.execute(row["def"])
    conn.execute("RESET maintenance_work_mem")
    ds.index_seconds = time.perf_counter() - started
    log(f"community: {len(rows)} indexes on taps rebuilt in {ds.index_seconds:.1f}s")
    started = time.perf_counter()
    conn.execute("VACUUM (ANALYZE) taps")
    conn.execute("VACUUM (ANALYZE) profiles")
    conn.execute("ANALYZE bench_held_taps")
    ds.vacuum_seconds = time.perf_counter() - started

    ds.history_taps = int(_scalar(conn, "SELECT count(*) FROM taps"))
    ds.day_taps = int(_scalar(conn, "SELECT count(*) FROM bench_held_taps"))
    ds.day_late = int(
        _scalar(
            conn,
            "SELECT count(*) FROM bench_held_taps WHERE time < %s",
            (ds.history_end,),
        )
    )
    ds.late_taps = int(
        _scalar(
            conn,
            "SELECT (SELECT count(*) FROM taps WHERE received_at > time + interval '1 hour') "
            "+ (SELECT count(*) FROM bench_held_taps "
            "   WHERE received_at > time + interval '1 hour')",
        )
    )
    log(
        f"community: {ds.history_taps:,} taps of history, {ds.day_taps:,} held back "
        f"({ds.day_late:,} of them late for earlier days)"
    )


def user_stats(conn: Conn, ds: Dataset) -> None:
    """Who taps how much, from the rolled-up days (cheaper than scanning the taps again)."""
    row = conn.execute(
        """
        SELECT count(*) AS users, max(n) AS busiest,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY n) AS median
        FROM (SELECT user_id, sum(taps) AS n FROM user_day_activity GROUP BY user_id) AS u
        """
    ).fetchone()
    assert row is not None
    ds.active_users = int(row["users"])
    ds.busiest_user_taps = int(row["busiest"] or 0)
    ds.median_user_taps = float(row["median"] or 0)
    ds.pairs = int(_scalar(conn, "SELECT count(*) FROM edge_strength"))


# -- running the ETL -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StageTime:
    stage: str
    seconds: float
    chunks: int
    keys: int
    written: int


@dataclass
class EtlRun:
    label: str
    seconds: float  # wall time of the whole call
    stages: list[StageTime]
    complete: bool

    def stage(self, name: str) -> StageTime | None:
        return next((s for s in self.stages if s.stage == name), None)

    def seconds_of(self, *names: str) -> float:
        return sum(s.seconds for s in self.stages if s.stage in names)


def _etl_run(label: str, result: Any, seconds: float) -> EtlRun:
    return EtlRun(
        label=label,
        seconds=seconds,
        stages=[
            StageTime(s.stage, float(s.seconds), int(s.chunks), int(s.keys), int(s.written))
            for s in result.stages
        ],
        complete=bool(result.ran and result.complete),
    )


@contextmanager
def watermark_progress(url: str, horizon: datetime, label: str) -> Iterator[None]:
    """Log, every minute, which stage a long ETL call is in and how far it got."""
    from tally.community.etl import STAGES

    stop = threading.Event()

    def watch() -> None:
        with connect(url) as conn:
            while not stop.wait(PROGRESS_EVERY_S):
                marks = {
                    r["stage"]: r["received_upto"]
                    for r in conn.execute(
                        "SELECT stage, received_upto FROM etl_watermarks"
                    ).fetchall()
                }
                for stage in STAGES:
                    mark = marks.get(stage.name)
                    if mark is None or mark < horizon:
                        where = mark.strftime("%Y-%m-%d %H:%M") if mark else "not started"
                        log(f"community: {label}: stage {stage.name} at {where}")
                        break

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def nightly(url: str, horizon: datetime, label: str) -> EtlRun:
    from tally.community.etl import run_nightly

    started = time.perf_counter()
    with watermark_progress(url, horizon, label):
        try:
            result = run_nightly(horizon=horizon)
        except Exception as exc:
            with connect(url) as conn:
                marks = conn.execute(
                    "SELECT stage, received_upto, window_start FROM etl_watermarks ORDER BY stage"
                ).fetchall()
            log(f"community: {label} FAILED ({type(exc).__name__}: {exc}); watermarks: {marks}")
            raise
    run = _etl_run(label, result, time.perf_counter() - started)
    log(
        f"community: {label} in {run.seconds:.1f}s ({'complete' if run.complete else 'INCOMPLETE'})"
    )
    return run


def rebuild_all(horizon: datetime) -> EtlRun:
    from tally.community.etl import rebuild_all as derive_everything

    started = time.perf_counter()
    result = derive_everything(horizon=horizon, requested_by="bench")
    run = _etl_run("full rebuild", result, time.perf_counter() - started)
    log(f"community: full rebuild (rebuild_all) in {run.seconds:.1f}s")
    return run


def rebuild(from_day: date, to_day: date) -> EtlRun:
    from tally.community.etl import backfill_now

    started = time.perf_counter()
    result = backfill_now(from_day, to_day, requested_by="bench")
    run = _etl_run("full rebuild", result, time.perf_counter() - started)
    log(f"community: full rebuild {from_day}..{to_day} in {run.seconds:.1f}s")
    return run


# -- comparing rollups ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TableSpec:
    """What of a rollup table must agree between two runs: the key its rows group under for
    a per-user digest, and the columns (timestamps of the write itself left out)."""

    table: str
    group: str
    columns: tuple[str, ...]


ROLLUPS = {
    "user_day_activity": TableSpec(
        "user_day_activity",
        "user_id",
        (
            "user_id",
            "day",
            "taps",
            "distinct_counterparts",
            "new_connections",
            "second_degree_reach",
            "streak_length",
        ),
    ),
    "user_week_activity": TableSpec(
        "user_week_activity",
        "user_id",
        (
            "user_id",
            "week_start",
            "taps",
            "distinct_counterparts",
            "new_connections",
            "second_degree_reach",
            "active_days",
        ),
    ),
    "edge_strength": TableSpec(
        "edge_strength", "user_a", ("user_a", "user_b", "taps_90d", "first_tap_at", "last_tap_at")
    ),
    "user_streaks": TableSpec(
        "user_streaks",
        "user_id",
        ("user_id", "current_streak", "longest_streak", "last_active_day", "timezone"),
    ),
    "weekly_leaderboard": TableSpec(
        "weekly_leaderboard",
        "user_id",
        (
            "week_start",
            "user_id",
            "new_connections",
            "second_degree_growth",
            "streak_days",
            "rank",
        ),
    ),
    "user_quest_progress": TableSpec(
        "user_quest_progress",
        "user_id",
        ("user_id", "quest_id", "period_start", "progress", "target", "completed_at IS NOT NULL"),
    ),
    "surge_windows": TableSpec(
        "surge_windows",
        "window_start",
        ("window_start", "window_end", "taps", "unique_users", "baseline", "multiplier"),
    ),
}
# What the naive jobs maintain, and so what the three incremental runs are compared on.
DAY_TABLES = ("edge_strength", "user_day_activity", "user_streaks")


def _row_hash(spec: TableSpec) -> str:
    return f"hashtextextended(concat_ws('|', {', '.join(spec.columns)}), 0)"


def digest(conn: Conn, spec: TableSpec, source: str | None = None) -> dict[str, tuple[int, int]]:
    """{group key: (rows, sum of row hashes)}: two tables agree iff their digests do (up to
    hash collisions), and a difference names the users to look at."""
    rows = conn.execute(
        f"SELECT {spec.group}::text AS k, count(*) AS n, sum({_row_hash(spec)}) AS h "
        f"FROM {source or spec.table} GROUP BY 1"
    ).fetchall()
    return {r["k"]: (int(r["n"]), int(r["h"])) for r in rows}


@dataclass
class Comparison:
    """Two versions of the rollups: how many groups (users) differ, with an example."""

    table: str
    left: str
    right: str
    groups: int
    differing: int
    example: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.differing == 0


def _example(
    spec: TableSpec, key: str, sides: list[tuple[str, Conn, str]], limit: int = 3
) -> list[str]:
    """Rows of one differing group that are not on the other side: evidence for the report."""
    found: list[set[tuple[Any, ...]]] = []
    for _, conn, source in sides:
        rows = conn.execute(
            f"SELECT {', '.join(spec.columns)} FROM {source} WHERE {spec.group}::text = %s",
            (key,),
        ).fetchall()
        found.append({tuple(str(v) for v in r.values()) for r in rows})
    lines = []
    for (name, _, _), mine, other in (
        (sides[0], found[0], found[1]),
        (sides[1], found[1], found[0]),
    ):
        for row in sorted(mine - other)[:limit]:
            lines.append(f"{name}: ({', '.join(row)})")
    return lines


def compare(
    spec: TableSpec, left: tuple[str, Conn, str], right: tuple[str, Conn, str]
) -> Comparison:
    a = digest(left[1], spec, left[2])
    b = digest(right[1], spec, right[2])
    keys = set(a) | set(b)
    differing = sorted(k for k in keys if a.get(k) != b.get(k))
    example = _example(spec, differing[0], [left, right]) if differing else []
    return Comparison(spec.table, left[0], right[0], len(keys), len(differing), example)


def snapshot(conn: Conn, spec: TableSpec) -> str:
    name = f"bench_snap_{spec.table}"
    conn.execute(f"DROP TABLE IF EXISTS {name}")
    conn.execute(f"CREATE UNLOGGED TABLE {name} AS SELECT * FROM {spec.table}")
    return name


# -- the naive edge merges -----------------------------------------------------------------------

# What the issue calls the naive incremental merge: every pair with a tap entering or leaving
# the window, recounted over the whole 90-day window. Its cost grows with those pairs' history.
EDGES_RECOUNT_TOUCHED = """
WITH touched AS (
    SELECT DISTINCT user_a, user_b FROM taps WHERE received_at >= %(lo)s AND received_at < %(hi)s
    UNION
    SELECT DISTINCT user_a, user_b FROM taps WHERE time >= %(w0)s AND time < %(w1)s
),
counted AS (
    SELECT p.user_a, p.user_b, w.n, f.first_time, f.last_time
    FROM touched p
    CROSS JOIN LATERAL (SELECT count(*)::int AS n FROM taps t
                        WHERE t.user_a = p.user_a AND t.user_b = p.user_b
                          AND t.time >= %(w1)s AND t.received_at < %(hi)s) w
    CROSS JOIN LATERAL (SELECT min(t.time) AS first_time, max(t.time) AS last_time FROM taps t
                        WHERE t.user_a = p.user_a AND t.user_b = p.user_b
                          AND t.received_at < %(hi)s) f
)
INSERT INTO edge_strength AS es
    (user_a, user_b, taps_90d, first_tap_at, last_tap_at, strength, last_updated_at)
SELECT user_a, user_b, n, first_time, last_time, tap_strength(n, last_time, %(hi)s), now()
FROM counted
ON CONFLICT (user_a, user_b) DO UPDATE
SET taps_90d = EXCLUDED.taps_90d, first_tap_at = EXCLUDED.first_tap_at,
    last_tap_at = EXCLUDED.last_tap_at, strength = EXCLUDED.strength,
    last_updated_at = EXCLUDED.last_updated_at
"""

# The whole window rebuilt every night: a GROUP BY over 90 days of taps, every pair upserted,
# pairs that left the window zeroed.
EDGES_FULL_WINDOW = """
WITH counted AS (
    SELECT user_a, user_b, count(*)::int AS n, min(time) AS first_time, max(time) AS last_time
    FROM taps WHERE time >= %(w1)s AND received_at < %(hi)s
    GROUP BY user_a, user_b
),
upserted AS (
    INSERT INTO edge_strength AS es
        (user_a, user_b, taps_90d, first_tap_at, last_tap_at, strength, last_updated_at)
    SELECT user_a, user_b, n, first_time, last_time, tap_strength(n, last_time, %(hi)s), now()
    FROM counted
    ON CONFLICT (user_a, user_b) DO UPDATE
    SET taps_90d = EXCLUDED.taps_90d, first_tap_at = least(es.first_tap_at, EXCLUDED.first_tap_at),
        last_tap_at = greatest(es.last_tap_at, EXCLUDED.last_tap_at),
        strength = EXCLUDED.strength, last_updated_at = EXCLUDED.last_updated_at
    RETURNING 1
)
UPDATE edge_strength es SET taps_90d = 0, last_updated_at = now()
WHERE es.taps_90d > 0
  AND NOT EXISTS (SELECT 1 FROM counted c WHERE c.user_a = es.user_a AND c.user_b = es.user_b)
"""


@dataclass
class EdgeMerge:
    """Tally's entering/leaving delta against the two naive merges, on the same day."""

    tally_seconds: float
    entering: int
    leaving: int
    window_taps: int
    window_pairs: int
    touched_pairs: int
    recount_seconds: float
    full_seconds: float


def measure_edge_merges(conn: Conn, lo: datetime, hi: datetime, tally_seconds: float) -> EdgeMerge:
    """Each naive merge in a transaction that is rolled back, on a database already at `hi`."""
    w0, w1 = edge_window(lo, hi)
    params = {"lo": lo, "hi": hi, "w0": w0, "w1": w1}
    counts = conn.execute(
        """
        SELECT (SELECT count(*) FROM taps WHERE received_at >= %(lo)s AND received_at < %(hi)s)
                   AS entering,
               (SELECT count(*) FROM taps WHERE time >= %(w0)s AND time < %(w1)s
                  AND received_at < %(lo)s) AS leaving,
               (SELECT count(*) FROM taps WHERE time >= %(w1)s AND received_at < %(hi)s)
                   AS window_taps,
               (SELECT count(*) FROM edge_strength WHERE taps_90d > 0) AS window_pairs,
               (SELECT count(*) FROM (
                    SELECT user_a, user_b FROM taps
                    WHERE received_at >= %(lo)s AND received_at < %(hi)s
                    UNION
                    SELECT user_a, user_b FROM taps WHERE time >= %(w0)s AND time < %(w1)s
               ) AS p) AS touched
        """,
        params,
    ).fetchone()
    assert counts is not None
    timings = {}
    for name, sql in (("recount", EDGES_RECOUNT_TOUCHED), ("full", EDGES_FULL_WINDOW)):
        log(f"community: naive edge merge ({name}), rolled back")
        with conn.transaction():
            started = time.perf_counter()
            conn.execute(sql, params)
            timings[name] = time.perf_counter() - started
            raise psycopg.Rollback()
    return EdgeMerge(
        tally_seconds=tally_seconds,
        entering=int(counts["entering"]),
        leaving=int(counts["leaving"]),
        window_taps=int(counts["window_taps"]),
        window_pairs=int(counts["window_pairs"]),
        touched_pairs=int(counts["touched"]),
        recount_seconds=timings["recount"],
        full_seconds=timings["full"],
    )


def explain_activity(conn: Conn, weekly: bool, lo: datetime, hi: datetime, skew: timedelta) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the statement the days or weeks stage sends for [lo, hi),
    taken from EtlRepository itself, in a transaction that is rolled back."""
    from bench.db import repository_sql
    from tally.community.repository import EtlRepository

    sql, params = repository_sql(EtlRepository, lambda repo: repo.activity(weekly, lo, hi, skew))
    with conn.transaction():
        rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, params).fetchall()
        plan = "\n".join(str(next(iter(r.values()))) for r in rows)
        raise psycopg.Rollback()
    return plan


# -- databases -----------------------------------------------------------------------------------


def _dbname(url: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(url)["dbname"])


def _with_db(url: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo("", **info)


@contextmanager
def clones(server: Server, source_url: str, labels: list[str]) -> Iterator[list[str]]:
    """Byte copies of the source database (no session may be connected to it meanwhile),
    dropped afterwards."""
    from tally.db.connection import close_connection

    close_connection()
    source = _dbname(source_url)
    names = [f"{source}_{label}_{uuid.uuid4().hex[:4]}" for label in labels]
    try:
        with connect(server.url) as admin:
            for name in names:
                admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}" STRATEGY FILE_COPY')
        yield [_with_db(source_url, name) for name in names]
    finally:
        close_connection()
        with connect(server.url) as admin:
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def open_db(url: str) -> Conn:
    conn = connect(url)
    conn.execute("SET TimeZone = 'UTC'")
    return conn


INGEST = """
INSERT INTO taps (client_tap_id, id1, id2, time, received_at)
SELECT client_tap_id, id1, id2, time, received_at FROM bench_held_taps ORDER BY received_at
"""


def ingest_day(conn: Conn) -> float:
    """The held-back day into taps, with every index in place; seconds taken."""
    started = time.perf_counter()
    conn.execute(INGEST)
    return time.perf_counter() - started


# -- the suite -----------------------------------------------------------------------------------


@dataclass
class CommunityReport:
    dataset: Dataset
    history: EtlRun | None  # the nightly replay of the history (small runs only)
    rebuild: EtlRun
    rebuild_days: tuple[date, date]
    rebuild_vs_nightly: list[Comparison]
    incremental: EtlRun
    ingest_seconds: float
    batch: NaiveRun
    per_row: NaiveRun
    implementations_agree: list[Comparison]
    edges: EdgeMerge
    clone_seconds: float
    stage_timeout_ms: int  # what the bench ran with
    deployed_timeout_ms: int  # the settings default (what Lambda runs with)
    lambda_timeout_s: int | None
    chunk_hours: int
    backfill_chunk_days: int
    checks: dict[str, bool]
    plan_stage: str
    plan: str


def _deployed_timeout_ms() -> int:
    from tally.settings import Settings

    field_info = Settings.model_fields["community_stage_timeout_ms"]
    return int(field_info.default)


def lambda_timeout() -> int | None:
    """The ETL function's timeout as template.yaml deploys it."""
    from pathlib import Path

    try:
        from tally.local import template

        functions = template.load(Path.cwd()).functions
        for function in functions.values():
            if "community_etl" in str(function.code_uri):
                return int(function.timeout_s)
    except Exception as exc:  # the report falls back on the Lambda limit
        log(f"community: template.yaml not read: {exc}")
    return None


def run(
    server: Server,
    url: str,
    *,
    taps: int,
    users: int,
    days: int,
    chunk: int,
    replay: bool | None = None,
) -> CommunityReport:
    from tally.settings import get_settings, reset_settings

    if days < 2:
        raise SystemExit("--days must be at least 2: one day of history and the day held back")
    # The held-back day is a Sunday (UTC), the last day of its ISO week: the weekly rollups then
    # carry a whole week, the most expensive night for the weeks stage.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end = today - timedelta(days=today.weekday())
    ds = Dataset(
        taps=taps,
        users=users,
        days=days,
        start=end - timedelta(days=days),
        history_end=end - timedelta(days=1),
        end=end,
    )
    previous_timeout = os.environ.get("COMMUNITY_STAGE_TIMEOUT_MS")
    os.environ["COMMUNITY_STAGE_TIMEOUT_MS"] = str(BENCH_STAGE_TIMEOUT_MS)
    reset_settings()
    settings = get_settings()
    try:
        with open_db(url) as conn:
            log(f"community: generating {taps:,} taps, {users:,} users, {days} days")
            load(conn, ds, chunk)

        specs = list(ROLLUPS.values())
        from_day = (ds.start - timedelta(days=1)).date()
        to_day = ds.history_end.date()
        history: EtlRun | None = None
        rebuild_vs_nightly: list[Comparison] = []
        if replay if replay is not None else taps <= REPLAY_MAX_TAPS:
            log("community: nightly run over the history, from empty watermarks")
            history = nightly(url, ds.history_end, "nightly from empty")
            # The rebuild starts from empty rollup tables (the watermarks stay), so it writes
            # every row, and must write exactly what the nightly run left (kept aside).
            with open_db(url) as conn:
                snaps = {s.table: snapshot(conn, s) for s in specs}
                conn.execute(f"TRUNCATE {', '.join(ROLLUPS)}")
            log(f"community: full rebuild (backfill_now {from_day}..{to_day})")
            rebuilt = rebuild(from_day, to_day)
            with open_db(url) as conn:
                rebuild_vs_nightly = [
                    compare(s, ("nightly", conn, snaps[s.table]), ("rebuild", conn, s.table))
                    for s in specs
                ]
                for s in specs:
                    conn.execute(f"DROP TABLE {snaps[s.table]}")
        else:
            # A day-by-day replay of months is what the rebuild is for: a first install over
            # existing history derives everything with rebuild_all.
            log("community: full rebuild over the history (rebuild_all, first install)")
            rebuilt = rebuild_all(ds.history_end)
        with open_db(url) as conn:
            started = time.perf_counter()
            for table in [*ROLLUPS, "etl_watermarks", "community_backfills"]:
                conn.execute(f"VACUUM (ANALYZE) {table}")
            ds.rollup_vacuum_seconds = time.perf_counter() - started
            user_stats(conn, ds)

        started = time.perf_counter()
        with clones(server, url, ["batch", "rows"]) as (batch_url, rows_url):
            clone_seconds = time.perf_counter() - started
            log(f"community: two clones of the database in {clone_seconds:.1f}s")

            with open_db(url) as conn:
                ingest_seconds = ingest_day(conn)
            log(f"community: incremental day ({ds.day_taps:,} taps), Tally's run_nightly")
            incremental = nightly(url, ds.end, "incremental day")

            with open_db(batch_url) as conn:
                ingest_day(conn)
                log("community: incremental day, batch Python")
                batch = batch_day(conn, ds.history_end, ds.end)
            with open_db(rows_url) as conn:
                ingest_day(conn)
                log("community: incremental day, per-row")
                per_row = per_row_day(conn, ds.history_end, ds.end)
                slowest = max(("days", "weeks"), key=incremental.seconds_of)
                log(f"community: EXPLAIN ANALYZE of the {slowest} statement, rolled back")
                plan = explain_activity(
                    conn,
                    slowest == "weeks",
                    ds.history_end,
                    ds.end,
                    timedelta(seconds=settings.tap_future_skew_s),
                )

            log("community: comparing the three results")
            with open_db(url) as main, open_db(batch_url) as b, open_db(rows_url) as r:
                agree = []
                for name in DAY_TABLES:
                    spec = ROLLUPS[name]
                    agree.append(compare(spec, ("Tally", main, name), ("batch", b, name)))
                    agree.append(compare(spec, ("Tally", main, name), ("per-row", r, name)))
                edges = measure_edge_merges(
                    b, ds.history_end, ds.end, incremental.seconds_of("edges")
                )
        with open_db(url) as conn:
            ds.sizes = {
                name: int(_scalar(conn, "SELECT pg_total_relation_size(%s)", (name,)))
                for name in ("taps", "edge_strength", "user_day_activity", "user_week_activity")
            }
            ds.sizes["database"] = int(_scalar(conn, "SELECT pg_database_size(current_database())"))
    finally:
        if previous_timeout is None:
            os.environ.pop("COMMUNITY_STAGE_TIMEOUT_MS", None)
        else:
            os.environ["COMMUNITY_STAGE_TIMEOUT_MS"] = previous_timeout
        reset_settings()

    deployed = _deployed_timeout_ms()
    longest_incremental = max((s.seconds for s in incremental.stages), default=0.0)
    budget = lambda_timeout() or LAMBDA_LIMIT_S
    checks = {
        "full rebuild completed": rebuilt.complete,
        "incremental day completed": incremental.complete,
        "batch Python == Tally (edges, days, streaks)": all(
            c.ok for c in agree if c.right == "batch"
        ),
        "per-row == Tally (edges, days, streaks)": all(c.ok for c in agree if c.right == "per-row"),
        f"incremental day within the ETL function's {budget} s timeout": (
            incremental.seconds < budget
        ),
        f"every incremental stage within the deployed statement timeout ({deployed // 1000} s)": (
            longest_incremental * 1000 < deployed
        ),
    }
    if history is not None:  # the replay ran: it must have finished and agree with the rebuild
        checks["nightly run over the history completed"] = history.complete
        checks["full rebuild == nightly run, every rollup table"] = all(
            c.ok for c in rebuild_vs_nightly
        )
    return CommunityReport(
        dataset=ds,
        history=history,
        rebuild=rebuilt,
        rebuild_days=(from_day, to_day),
        rebuild_vs_nightly=rebuild_vs_nightly,
        incremental=incremental,
        ingest_seconds=ingest_seconds,
        batch=batch,
        per_row=per_row,
        implementations_agree=agree,
        edges=edges,
        clone_seconds=clone_seconds,
        stage_timeout_ms=BENCH_STAGE_TIMEOUT_MS,
        deployed_timeout_ms=deployed,
        lambda_timeout_s=lambda_timeout(),
        chunk_hours=settings.community_chunk_hours,
        backfill_chunk_days=settings.community_backfill_chunk_days,
        checks=checks,
        plan_stage=slowest,
        plan=plan,
    )
