"""The incremental day as community jobs are usually written, to measure Tally's SQL against.

Both jobs do what Tally's edges, days and streaks stages do for the taps received in [lo, hi)
and must leave the same rows (the bench compares them): edge_strength with taps_90d, first and
last tap; user_day_activity with taps, distinct counterparts, new connections and second-degree
reach for every (user, local day) the taps touch, including the days of the people who met a
tapper that day (their reach changes) and the day a pair's first tap used to fall on when a late
tap comes before it; streak_length and user_streaks. Each stage is one transaction.

- batch Python: a few large reads, the work in dicts, `executemany` upserts.
- per-row: one statement per tap for the edges, per (user, day) for the activity, a few per
  user for the streaks: the loop naive jobs are built around.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import tuple_row

from bench.stats import log

Conn = psycopg.Connection[dict[str, Any]]
Pair = tuple[str, str]

EDGE_WINDOW = timedelta(days=90)
# Two moments in one local day are less than this apart (days of 23 to 25 hours).
DAY_SLACK = timedelta(hours=26)
# Every local day touched lies within this of some touched tap: the batch job reads all taps
# in [first touched tap - CONTEXT, last touched tap + CONTEXT).
CONTEXT = timedelta(days=3)
FULL_SCAN = date.min
PROGRESS_EVERY = 50_000


def edge_window(lo: datetime, hi: datetime) -> tuple[datetime, datetime]:
    """Starts of the 90-day window before and after the run: taps in [w0, w1) leave it."""
    return lo - EDGE_WINDOW, hi - EDGE_WINDOW


def strength(taps: int, last: datetime, at: datetime) -> float:
    """tap_strength() of the schema, in Python."""
    days = max((at - last).total_seconds(), 0) / 86400.0
    return 0.6 * math.log(1 + taps) + 0.4 * math.exp(-days / 21.0)


@dataclass
class NaiveRun:
    name: str
    seconds: dict[str, float] = field(default_factory=dict)  # edges, days, streaks
    keys: dict[str, int] = field(default_factory=dict)  # pairs, (user, day)s, users
    queries: int = 0
    rows_read: int = 0

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


@contextmanager
def _stage(run: NaiveRun, name: str, conn: Conn) -> Iterator[None]:
    started = time.perf_counter()
    with conn.transaction():
        yield
    run.seconds[name] = time.perf_counter() - started
    log(f"community: {run.name}: {name} in {run.seconds[name]:.1f}s")


class Zones:
    """Users' zones, local days and the UTC bounds of a local day."""

    def __init__(self, names: dict[str, str] | None = None) -> None:
        self.names: dict[str, str] = names if names is not None else {}
        self._zones: dict[str, ZoneInfo] = {}
        self._windows: dict[tuple[date, str], tuple[datetime, datetime]] = {}

    def zone(self, name: str) -> ZoneInfo:
        tz = self._zones.get(name)
        if tz is None:
            tz = self._zones[name] = ZoneInfo(name)
        return tz

    def name(self, user: str) -> str:
        return self.names.get(user, "UTC")

    def day(self, moment: datetime, user: str) -> date:
        return moment.astimezone(self.zone(self.name(user))).date()

    def window(self, day: date, user: str) -> tuple[datetime, datetime]:
        name = self.name(user)
        key = (day, name)
        bounds = self._windows.get(key)
        if bounds is None:
            tz = self.zone(name)
            bounds = self._windows[key] = (
                datetime.combine(day, clock(), tz).astimezone(UTC),
                datetime.combine(day + timedelta(days=1), clock(), tz).astimezone(UTC),
            )
        return bounds


# -- shared SQL ----------------------------------------------------------------------------------

ENTERING = """
SELECT id1, id2, user_a, user_b, time FROM taps WHERE received_at >= %s AND received_at < %s
"""
LEAVING = """
SELECT user_a, user_b FROM taps WHERE time >= %s AND time < %s AND received_at < %s
"""
UPSERT_EDGE = """
INSERT INTO edge_strength AS es
    (user_a, user_b, taps_90d, first_tap_at, last_tap_at, strength, last_updated_at)
VALUES (%s, %s, %s, %s, %s, %s, now())
ON CONFLICT (user_a, user_b) DO UPDATE
SET taps_90d = EXCLUDED.taps_90d, first_tap_at = EXCLUDED.first_tap_at,
    last_tap_at = EXCLUDED.last_tap_at, strength = EXCLUDED.strength,
    last_updated_at = EXCLUDED.last_updated_at
"""
UPSERT_DAY = """
INSERT INTO user_day_activity AS a
    (user_id, day, taps, distinct_counterparts, new_connections, second_degree_reach,
     last_updated_at)
VALUES (%s, %s, %s, %s, %s, %s, now())
ON CONFLICT (user_id, day) DO UPDATE
SET taps = EXCLUDED.taps, distinct_counterparts = EXCLUDED.distinct_counterparts,
    new_connections = EXCLUDED.new_connections,
    second_degree_reach = EXCLUDED.second_degree_reach, last_updated_at = EXCLUDED.last_updated_at
"""
RELABEL = "UPDATE user_day_activity SET streak_length = %s WHERE user_id = %s AND day = %s"
UPSERT_STREAK = """
INSERT INTO user_streaks AS us
    (user_id, current_streak, longest_streak, last_active_day, timezone, last_updated_at)
VALUES (%s, %s, %s, %s, %s, now())
ON CONFLICT (user_id) DO UPDATE
SET current_streak = EXCLUDED.current_streak, longest_streak = EXCLUDED.longest_streak,
    last_active_day = EXCLUDED.last_active_day, timezone = EXCLUDED.timezone,
    last_updated_at = EXCLUDED.last_updated_at
"""
EXPIRE = """
UPDATE user_streaks SET current_streak = 0, last_updated_at = now()
WHERE current_streak > 0 AND last_active_day < (%s::timestamptz AT TIME ZONE timezone)::date - 1
"""


def _pair(u: str, v: str) -> Pair:
    return (u, v) if u < v else (v, u)


def _scan_from(old: tuple[int, int, date | None] | None, min_day: date) -> date:
    """Where a user's run of days must be rescanned from (Tally's rule): the start of the run
    they were on when the new days cannot join an older run, else all their days."""
    if old is None or old[2] is None:
        return FULL_SCAN
    current, last = old[0], old[2]
    if current > 0 and min_day >= last - timedelta(days=current - 1):
        return last - timedelta(days=current - 1)
    if current == 0 and min_day > last + timedelta(days=1):
        return min_day
    return FULL_SCAN


@dataclass
class _Streak:
    relabel: list[tuple[int, str, date]]
    row: tuple[str, int, int, date, str]


def _streak(
    user: str,
    days: Iterable[tuple[date, int]],
    old: tuple[int, int, date | None] | None,
    scan_from: date,
    zones: Zones,
    at: datetime,
) -> _Streak | None:
    """Runs of consecutive days from scan_from on: the rows to relabel and the user's streak."""
    relabel = []
    previous: date | None = None
    run = longest = 0
    for day, stored in days:
        run = run + 1 if previous is not None and day == previous + timedelta(days=1) else 1
        longest = max(longest, run)
        if stored != run:
            relabel.append((run, user, day))
        previous = day
    if previous is None:
        return None
    name = zones.name(user)
    today = at.astimezone(zones.zone(name)).date()
    current = run if previous >= today - timedelta(days=1) else 0
    if scan_from != FULL_SCAN and old is not None:
        longest = max(longest, old[1])
    return _Streak(relabel, (user, current, longest, previous, name))


# -- batch Python --------------------------------------------------------------------------------


def batch_day(conn: Conn, lo: datetime, hi: datetime) -> NaiveRun:
    run = NaiveRun("batch Python")
    cur = conn.cursor(row_factory=tuple_row)
    w0, w1 = edge_window(lo, hi)

    def read(sql: str, params: Any) -> list[tuple[Any, ...]]:
        rows = cur.execute(sql, params).fetchall()
        run.queries += 1
        run.rows_read += len(rows)
        return rows

    # Edges: entering taps add, leaving taps subtract; absolute values upserted.
    with _stage(run, "edges", conn):
        entering = read(ENTERING, (lo, hi))
        leaving = read(LEAVING, (w0, w1, lo))
        plus: Counter[Pair] = Counter()
        first: dict[Pair, datetime] = {}
        last: dict[Pair, datetime] = {}
        for _, _, a, b, t in entering:
            p = (a, b)
            if t >= w1:
                plus[p] += 1
            if p not in first or t < first[p]:
                first[p] = t
            if p not in last or t > last[p]:
                last[p] = t
        minus = Counter((a, b) for a, b in leaving)
        pairs = set(first) | set(minus)
        old = {
            (r[0], r[1]): r[2:]
            for r in read(
                "SELECT e.user_a, e.user_b, e.taps_90d, e.first_tap_at, e.last_tap_at "
                "FROM edge_strength e JOIN unnest(%s::text[], %s::text[]) AS p(user_a, user_b) "
                "USING (user_a, user_b)",
                ([p[0] for p in pairs], [p[1] for p in pairs]),
            )
        }
        rows = []
        moved: list[tuple[Pair, datetime]] = []
        for p in pairs:
            o = old.get(p)
            n = (o[0] if o else 0) + plus[p] - minus[p]
            f = min(x for x in (o[1] if o else None, first.get(p)) if x is not None)
            la = max(x for x in (o[2] if o else None, last.get(p)) if x is not None)
            rows.append((p[0], p[1], n, f, la, strength(n, la, hi)))
            if o is not None and p in first and first[p] < o[1]:
                moved.append((p, o[1]))
        cur.executemany(UPSERT_EDGE, rows)
        run.queries += 1
        run.keys["edges"] = len(rows)

    touched = [(t[0], t[4]) for t in entering] + [(t[1], t[4]) for t in entering]
    touched += [(p[0], f) for p, f in moved] + [(p[1], f) for p, f in moved]
    zones = Zones()

    with _stage(run, "days", conn):
        zones.names.update(
            (r[0], r[1])
            for r in read("SELECT address, timezone FROM profiles WHERE timezone <> 'UTC'", None)
        )
        _batch_days(run, read, cur, touched, zones)

    with _stage(run, "streaks", conn):
        min_day: dict[str, date] = {}
        for u, t in touched:
            d = zones.day(t, u)
            if u not in min_day or d < min_day[u]:
                min_day[u] = d
        users = list(min_day)
        olds = {
            r[0]: (r[1], r[2], r[3])
            for r in read(
                "SELECT user_id, current_streak, longest_streak, last_active_day "
                "FROM user_streaks WHERE user_id = ANY(%s)",
                (users,),
            )
        }
        since = {u: _scan_from(olds.get(u), min_day[u]) for u in users}
        by_user: dict[str, list[tuple[date, int]]] = defaultdict(list)
        for u, d, s in read(
            "SELECT d.user_id, d.day, d.streak_length FROM user_day_activity d "
            "JOIN unnest(%s::text[], %s::date[]) AS p(user_id, since) "
            "ON d.user_id = p.user_id AND d.day >= p.since ORDER BY d.user_id, d.day",
            (users, [since[u] for u in users]),
        ):
            by_user[u].append((d, s))
        relabel: list[tuple[int, str, date]] = []
        streaks = []
        for u in users:
            result = _streak(u, by_user.get(u, []), olds.get(u), since[u], zones, hi)
            if result is not None:
                relabel += result.relabel
                streaks.append(result.row)
        cur.executemany(RELABEL, relabel)
        cur.executemany(UPSERT_STREAK, streaks)
        cur.execute(EXPIRE, (hi,))
        run.queries += 3
        run.keys["streaks"] = len(streaks)
    return run


def _batch_days(
    run: NaiveRun,
    read: Any,
    cur: psycopg.Cursor[tuple[Any, ...]],
    touched: list[tuple[str, datetime]],
    zones: Zones,
) -> None:
    """Every touched (user, local day) recomputed from all taps around the touched ones."""
    if not touched:
        return
    own = {(u, zones.day(t, u)) for u, t in touched}
    start = min(t for _, t in touched) - CONTEXT
    end = max(t for _, t in touched) + CONTEXT
    sides: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    first_seen: dict[Pair, datetime] = {}
    for id1, id2, t in read(
        "SELECT id1, id2, time FROM taps WHERE time >= %s AND time < %s ORDER BY time",
        (start, end),
    ):
        sides[id1].append((t, id2))
        sides[id2].append((t, id1))
        p = _pair(id1, id2)
        if p not in first_seen:
            first_seen[p] = t
    times = {u: [t for t, _ in lst] for u, lst in sides.items()}

    def around(u: str, lo: datetime, hi: datetime, inclusive: bool) -> list[tuple[datetime, str]]:
        ts = times.get(u)
        if ts is None:
            return []
        i = bisect_left(ts, lo) if inclusive else bisect_right(ts, lo)
        return sides[u][i : bisect_left(ts, hi)]

    # The people who met a touched user that same local day (of theirs): their reach changes.
    keys = set(own)
    for u, t in set(touched):
        for t2, x in around(u, t - DAY_SLACK, t + DAY_SLACK, inclusive=False):
            dx = zones.day(t2, x)
            if dx == zones.day(t, x):
                keys.add((x, dx))

    computed = []
    unknown: set[Pair] = set()
    for u, d in keys:
        s, e = zones.window(d, u)
        direct = around(u, s, e, inclusive=True)
        if not direct:
            continue
        met = {x for _, x in direct}
        reach: set[str] = set()
        maybe_new = []
        for m in met:
            p = _pair(u, m)
            if first_seen[p] >= s:  # no earlier tap in what was read: ask edge_strength
                maybe_new.append(p)
                unknown.add(p)
            reach.update(y for _, y in around(m, s, e, inclusive=True))
        reach -= met
        reach.discard(u)
        computed.append((u, d, s, len(direct), len(met), len(reach), maybe_new))
    # edge_strength was brought up to date first: first_tap_at is the pair's first tap ever.
    firsts = {
        (r[0], r[1]): r[2]
        for r in read(
            "SELECT e.user_a, e.user_b, e.first_tap_at FROM edge_strength e "
            "JOIN unnest(%s::text[], %s::text[]) AS p(user_a, user_b) USING (user_a, user_b)",
            ([p[0] for p in unknown], [p[1] for p in unknown]),
        )
    }
    rows = [
        (u, d, n, distinct, sum(1 for p in maybe_new if firsts[p] >= s), reach)
        for u, d, s, n, distinct, reach, maybe_new in computed
    ]
    cur.executemany(UPSERT_DAY, rows)
    run.queries += 1
    run.keys["days"] = len(rows)


# -- per row -------------------------------------------------------------------------------------

PER_TAP_EDGE = """
WITH old AS (SELECT first_tap_at FROM edge_strength WHERE user_a = %(a)s AND user_b = %(b)s),
up AS (
    INSERT INTO edge_strength AS es
        (user_a, user_b, taps_90d, first_tap_at, last_tap_at, strength, last_updated_at)
    VALUES (%(a)s, %(b)s, %(plus)s, %(t)s, %(t)s, tap_strength(%(plus)s, %(t)s, %(hi)s), now())
    ON CONFLICT (user_a, user_b) DO UPDATE
    SET taps_90d = es.taps_90d + EXCLUDED.taps_90d,
        first_tap_at = least(es.first_tap_at, EXCLUDED.first_tap_at),
        last_tap_at = greatest(es.last_tap_at, EXCLUDED.last_tap_at),
        strength = tap_strength(es.taps_90d + EXCLUDED.taps_90d,
                                greatest(es.last_tap_at, EXCLUDED.last_tap_at), %(hi)s),
        last_updated_at = now()
    RETURNING 1
)
SELECT (SELECT first_tap_at FROM old) AS old_first, (SELECT count(*) FROM up) AS n
"""
PER_TAP_LEAVE = """
UPDATE edge_strength
SET taps_90d = taps_90d - 1, strength = tap_strength(taps_90d - 1, last_tap_at, %s),
    last_updated_at = now()
WHERE user_a = %s AND user_b = %s
"""
NEIGHBOURS = """
SELECT other_id, time FROM tap_sides WHERE user_id = %s AND time > %s AND time < %s
"""
PER_KEY_DAY = """
WITH direct AS (
    SELECT other_id, time FROM tap_sides
    WHERE user_id = %(u)s AND time >= %(s)s AND time < %(e)s
),
met AS (SELECT DISTINCT other_id FROM direct),
fresh AS (
    SELECT count(*)::int AS n FROM met m
    WHERE NOT EXISTS (SELECT 1 FROM taps x
                      WHERE x.user_a = least(%(u)s, m.other_id)
                        AND x.user_b = greatest(%(u)s, m.other_id) AND x.time < %(s)s)
),
reach AS (
    SELECT count(DISTINCT s2.other_id)::int AS n
    FROM met m
    JOIN tap_sides s2 ON s2.user_id = m.other_id AND s2.time >= %(s)s AND s2.time < %(e)s
    WHERE s2.other_id <> %(u)s AND s2.other_id NOT IN (SELECT other_id FROM met)
)
INSERT INTO user_day_activity AS a
    (user_id, day, taps, distinct_counterparts, new_connections, second_degree_reach,
     last_updated_at)
SELECT %(u)s, %(d)s, count(*)::int, count(DISTINCT other_id)::int,
       (SELECT n FROM fresh), (SELECT n FROM reach), now()
FROM direct HAVING count(*) > 0
ON CONFLICT (user_id, day) DO UPDATE
SET taps = EXCLUDED.taps, distinct_counterparts = EXCLUDED.distinct_counterparts,
    new_connections = EXCLUDED.new_connections,
    second_degree_reach = EXCLUDED.second_degree_reach, last_updated_at = EXCLUDED.last_updated_at
"""


def per_row_day(conn: Conn, lo: datetime, hi: datetime) -> NaiveRun:
    run = NaiveRun("per-row")
    cur = conn.cursor(row_factory=tuple_row)
    w0, w1 = edge_window(lo, hi)
    zones = Zones()
    known: set[str] = set()

    def q(sql: str, params: Any) -> psycopg.Cursor[tuple[Any, ...]]:
        run.queries += 1
        return cur.execute(sql, params)

    def zone_of(user: str) -> None:
        """One query per user the first time it is seen."""
        if user not in known:
            row = q("SELECT timezone FROM profiles WHERE address = %s", (user,)).fetchone()
            known.add(user)
            if row is not None and row[0] != "UTC":
                zones.names[user] = row[0]

    with _stage(run, "edges", conn):
        entering = q(ENTERING, (lo, hi)).fetchall()
        before: dict[Pair, datetime | None] = {}
        earliest: dict[Pair, datetime] = {}
        for i, (_, _, a, b, t) in enumerate(entering, 1):
            row = q(
                PER_TAP_EDGE, {"a": a, "b": b, "t": t, "plus": int(t >= w1), "hi": hi}
            ).fetchone()
            assert row is not None
            p = (a, b)
            if p not in before:
                before[p] = row[0]
            if p not in earliest or t < earliest[p]:
                earliest[p] = t
            if i % PROGRESS_EVERY == 0:
                log(f"community: per-row: {i:,} of {len(entering):,} taps")
        leaving = q(LEAVING, (w0, w1, lo)).fetchall()
        for a, b in leaving:
            q(PER_TAP_LEAVE, (hi, a, b))
        run.keys["edges"] = len(set(before) | set(leaving))
    moved = [(p, f) for p, f in before.items() if f is not None and earliest[p] < f]

    touched = [(t[0], t[4]) for t in entering] + [(t[1], t[4]) for t in entering]
    touched += [(p[0], f) for p, f in moved] + [(p[1], f) for p, f in moved]

    with _stage(run, "days", conn):
        keys = set()
        for u, t in touched:
            zone_of(u)
            keys.add((u, zones.day(t, u)))
        for i, (u, t) in enumerate(set(touched), 1):
            for x, t2 in q(NEIGHBOURS, (u, t - DAY_SLACK, t + DAY_SLACK)).fetchall():
                zone_of(x)
                dx = zones.day(t2, x)
                if dx == zones.day(t, x):
                    keys.add((x, dx))
            if i % PROGRESS_EVERY == 0:
                log(f"community: per-row: neighbours of {i:,} touched taps")
        for i, (u, d) in enumerate(keys, 1):
            s, e = zones.window(d, u)
            q(PER_KEY_DAY, {"u": u, "d": d, "s": s, "e": e})
            if i % PROGRESS_EVERY == 0:
                log(f"community: per-row: {i:,} of {len(keys):,} user days")
        run.keys["days"] = len(keys)

    with _stage(run, "streaks", conn):
        min_day: dict[str, date] = {}
        for u, t in touched:
            d = zones.day(t, u)
            if u not in min_day or d < min_day[u]:
                min_day[u] = d
        for u, first_day in min_day.items():
            row = q(
                "SELECT current_streak, longest_streak, last_active_day FROM user_streaks "
                "WHERE user_id = %s",
                (u,),
            ).fetchone()
            old = (row[0], row[1], row[2]) if row else None
            since = _scan_from(old, first_day)
            days = q(
                "SELECT day, streak_length FROM user_day_activity "
                "WHERE user_id = %s AND day >= %s ORDER BY day",
                (u, since),
            ).fetchall()
            result = _streak(u, [(d, s) for d, s in days], old, since, zones, hi)
            if result is None:
                continue
            for args in result.relabel:
                q(RELABEL, args)
            q(UPSERT_STREAK, result.row)
        live = q(
            "SELECT user_id, timezone, last_active_day FROM user_streaks WHERE current_streak > 0",
            None,
        ).fetchall()
        for u, name, last_day in live:
            if last_day < hi.astimezone(zones.zone(name)).date() - timedelta(days=1):
                q(
                    "UPDATE user_streaks SET current_streak = 0, last_updated_at = now() "
                    "WHERE user_id = %s",
                    (u,),
                )
        run.keys["streaks"] = len(min_day)
    return run
