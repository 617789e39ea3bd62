"""SQL of the nightly community ETL: one set-based statement per stage.

Every stage recomputes the rows it touches from the taps themselves (absolute values, upserted
with `ON CONFLICT DO UPDATE ... WHERE IS DISTINCT FROM`), so a stage run twice, or re-run after a
timeout rolled it back, writes the same rows. Which rows are touched comes either from a window
of received taps (the nightly run, from a watermark) or from a date range (a backfill).

Periods are a user's local days and ISO weeks (Monday), in the user's profile zone.
"""

from __future__ import annotations

from dataclasses import dataclass

from tally.points.ledger_sql import CREDIT_PAID

# -- which taps a run looks at ----------------------------------------------------------------

# Taps received in [lo, hi), plus, for pairs whose first tap ever moved earlier because a late
# tap arrived, that old first tap: the day it fell on no longer holds a new connection. Only a
# tap whose time is before lo + skew can be earlier than a tap received before lo.
TOUCHED_BY_RECEIPT = """
batch AS (
    SELECT t.id1, t.id2, t.user_a, t.user_b, t.time FROM taps t
    WHERE t.received_at >= %(lo)s AND t.received_at < %(hi)s
),
moved AS (
    SELECT b.user_a, b.user_b, o.first_time AS time
    FROM (SELECT user_a, user_b, min(time) AS first_new FROM batch
          WHERE time < %(lo)s::timestamptz + %(skew)s::interval
          GROUP BY user_a, user_b) b
    CROSS JOIN LATERAL (
        SELECT min(x.time) AS first_time FROM taps x
        WHERE x.user_a = b.user_a AND x.user_b = b.user_b AND x.received_at < %(lo)s
    ) o
    WHERE o.first_time > b.first_new
),
touched AS (
    SELECT id1 AS user_id, time FROM batch
    UNION ALL SELECT id2, time FROM batch
    UNION ALL SELECT user_a, time FROM moved
    UNION ALL SELECT user_b, time FROM moved
),
"""


@dataclass(frozen=True)
class Period:
    """A kind of local period: how to name the one holding a moment, and how long it is."""

    table: str
    column: str
    trunc: str  # SQL of the period start (a date) holding {t} for a user in zone {z}
    length: str  # SQL interval
    unit: str  # date_trunc unit of the period in UTC ('day', 'week')

    def of(self, moment: str, zone: str) -> str:
        return self.trunc.format(t=moment, z=zone)


DAY = Period(
    table="user_day_activity",
    column="day",
    trunc="(({t}) AT TIME ZONE {z})::date",
    length="interval '1 day'",
    unit="day",
)
WEEK = Period(
    table="user_week_activity",
    column="week_start",
    trunc="date_trunc('week', ({t}) AT TIME ZONE {z})::date",
    length="interval '7 days'",
    unit="week",
)

ZONE = "coalesce(z.timezone, 'UTC')"


def local_start(day: str, zone: str) -> str:
    """SQL of the first instant of a local date. `day::timestamp AT TIME ZONE zone` alone takes
    the later of two midnights where clocks fall back across midnight (Atlantic/Azores); one
    hour before midnight is never ambiguous there, and an hour after it is the first one."""
    return (
        f"least(({day})::timestamp AT TIME ZONE {zone}, "
        f"((({day})::timestamp - interval '1 hour') AT TIME ZONE {zone}) + interval '1 hour')"
    )


def touched_keys(period: Period) -> str:
    """(user, period) pairs a window of received taps changes: the periods of both ends of each
    tap, and the periods of everyone who met one of its ends in the same local period (their
    second-degree reach counts the new tap)."""
    return f"""
{TOUCHED_BY_RECEIPT}
own AS (
    SELECT DISTINCT t.user_id, {period.of("t.time", ZONE)} AS period, {ZONE} AS tz
    FROM touched t LEFT JOIN profiles z ON z.address = t.user_id
),
-- One index range per user and UTC {period.unit} of new taps, not one per tap: every local
-- {period.unit} holding one of them, in any zone (UTC-12 to UTC+14), lies inside it.
spans AS (
    SELECT user_id, min(time) AS t0, max(time) AS t1,
           (date_trunc('{period.unit}', (min(time) AT TIME ZONE 'UTC') - interval '12 hours')
                AT TIME ZONE 'UTC') - interval '14 hours' AS lo,
           ((date_trunc('{period.unit}', (max(time) AT TIME ZONE 'UTC') + interval '14 hours')
                + {period.length}) AT TIME ZONE 'UTC') + interval '12 hours' AS hi
    FROM touched
    GROUP BY user_id, date_trunc('{period.unit}', time)
),
neighbours AS (
    SELECT DISTINCT s.other_id AS user_id, {period.of("s.time", ZONE)} AS period, {ZONE} AS tz
    FROM spans t
    JOIN tap_sides s ON s.user_id = t.user_id AND s.time >= t.lo AND s.time < t.hi
    LEFT JOIN profiles z ON z.address = s.other_id
    WHERE {period.of("s.time", ZONE)}
          BETWEEN {period.of("t.t0", ZONE)} AND {period.of("t.t1", ZONE)}
),
keys AS (SELECT * FROM own UNION SELECT * FROM neighbours),
"""


def ranged_keys(period: Period) -> str:
    """Every (user, period) with a tap, for periods starting in [%(p1)s, %(p2)s]."""
    return f"""
keys AS (
    SELECT DISTINCT s.user_id, {period.of("s.time", ZONE)} AS period, {ZONE} AS tz
    FROM tap_sides s LEFT JOIN profiles z ON z.address = s.user_id
    WHERE s.time >= %(p1)s::date - interval '1 day'
      AND s.time < %(p2)s::date + {period.length} + interval '1 day'
      AND {period.of("s.time", ZONE)} BETWEEN %(p1)s::date AND %(p2)s::date
),
"""


def user_keys(period: Period) -> str:
    """Every (user, period) of the users in %(users)s (their zone changed)."""
    return f"""
keys AS (
    SELECT DISTINCT s.user_id, {period.of("s.time", ZONE)} AS period, {ZONE} AS tz
    FROM tap_sides s LEFT JOIN profiles z ON z.address = s.user_id
    WHERE s.user_id = ANY(%(users)s::text[])
),
"""


def activity_statement(period: Period, *, ranged: bool = False, users: bool = False) -> str:
    """Recompute the activity rows of the keys. A rebuild of a range (or of some users) also
    drops the rows of that range (those users) that no longer have taps: a user moved to
    another zone."""
    if users:
        keys = user_keys(period)
        scope = "a.user_id = ANY(%(users)s::text[])"
    elif ranged:
        keys = ranged_keys(period)
        scope = f"a.{period.column} BETWEEN %(p1)s::date AND %(p2)s::date"
    else:
        keys = touched_keys(period)
        scope = ""
    week_columns = ", active_days" if period is WEEK else ""
    week_values = ", st.active_days" if period is WEEK else ""
    week_changed = ", a.active_days" if period is WEEK else ""
    week_set = ", active_days = EXCLUDED.active_days" if period is WEEK else ""
    prune = (
        f"""
, pruned AS (
    DELETE FROM {period.table} a
    WHERE {scope}
      AND NOT EXISTS (SELECT 1 FROM keys k
                      WHERE k.user_id = a.user_id AND k.period = a.{period.column})
    RETURNING 1
)"""
        if scope
        else ""
    )
    return f"""
WITH {keys}
win AS (
    SELECT user_id, period, tz,
           {local_start("period", "tz")} AS s,
           {local_start(f"period + {period.length}", "tz")} AS e
    FROM keys
),
direct AS (
    SELECT w.user_id, w.period, w.tz, w.s, w.e, s.other_id, s.time
    FROM win w JOIN tap_sides s ON s.user_id = w.user_id AND s.time >= w.s AND s.time < w.e
),
met AS (
    SELECT DISTINCT user_id, period, other_id, s, e FROM direct
),
stats AS (
    SELECT user_id, period, count(*)::int AS taps,
           count(DISTINCT other_id)::int AS distinct_counterparts,
           count(DISTINCT (time AT TIME ZONE tz)::date)::int AS active_days
    FROM direct GROUP BY user_id, period
),
firsts AS (  -- one index probe per pair met (LIMIT 1 keeps it a probe, never a hash of taps)
    SELECT m.user_id, m.period, count(*)::int AS new_connections
    FROM met m
    LEFT JOIN LATERAL (
        SELECT 1 AS seen FROM taps x
        WHERE x.user_a = least(m.user_id, m.other_id)
          AND x.user_b = greatest(m.user_id, m.other_id) AND x.time < m.s
        LIMIT 1
    ) earlier ON true
    WHERE earlier.seen IS NULL
    GROUP BY m.user_id, m.period
),
second AS (
    SELECT m.user_id, m.period, count(DISTINCT s2.other_id)::int AS reach
    FROM met m
    JOIN tap_sides s2 ON s2.user_id = m.other_id AND s2.time >= m.s AND s2.time < m.e
    WHERE s2.other_id <> m.user_id
      AND NOT EXISTS (SELECT 1 FROM met m2 WHERE m2.user_id = m.user_id
                      AND m2.period = m.period AND m2.other_id = s2.other_id)
    GROUP BY m.user_id, m.period
),
written AS (
    INSERT INTO {period.table} AS a
        (user_id, {period.column}, taps, distinct_counterparts, new_connections,
         second_degree_reach{week_columns}, last_updated_at)
    SELECT st.user_id, st.period, st.taps, st.distinct_counterparts,
           coalesce(f.new_connections, 0), coalesce(sc.reach, 0){week_values}, now()
    FROM stats st
    LEFT JOIN firsts f USING (user_id, period)
    LEFT JOIN second sc USING (user_id, period)
    ON CONFLICT (user_id, {period.column}) DO UPDATE
    SET taps = EXCLUDED.taps, distinct_counterparts = EXCLUDED.distinct_counterparts,
        new_connections = EXCLUDED.new_connections,
        second_degree_reach = EXCLUDED.second_degree_reach{week_set},
        last_updated_at = EXCLUDED.last_updated_at
    WHERE (a.taps, a.distinct_counterparts, a.new_connections, a.second_degree_reach
           {week_changed})
          IS DISTINCT FROM
          (EXCLUDED.taps, EXCLUDED.distinct_counterparts, EXCLUDED.new_connections,
           EXCLUDED.second_degree_reach{week_changed.replace("a.", "EXCLUDED.")})
    RETURNING 1
){prune}
SELECT (SELECT count(*) FROM keys) AS keys, (SELECT count(*) FROM written) AS written
"""


# -- edges --------------------------------------------------------------------------------------

# The window moves from [w0, hi0) to [w1, hi): taps received in [lo, hi) enter when their time is
# inside the new window; taps received before lo leave when their time fell in [w0, w1). The
# cost follows the taps entering and leaving, not the pairs in the window.
EDGES_INCREMENTAL = """
WITH entering AS (
    SELECT user_a, user_b, count(*) FILTER (WHERE time >= %(w1)s)::int AS plus,
           min(time) AS first_time, max(time) AS last_time
    FROM taps WHERE received_at >= %(lo)s AND received_at < %(hi)s
    GROUP BY user_a, user_b
),
leaving AS (
    SELECT user_a, user_b, count(*)::int AS minus
    FROM taps WHERE time >= %(w0)s AND time < %(w1)s AND received_at < %(lo)s
    GROUP BY user_a, user_b
),
delta AS (
    SELECT user_a, user_b, coalesce(e.plus, 0) AS plus,
           coalesce(e.plus, 0) - coalesce(l.minus, 0) AS change, e.first_time, e.last_time
    FROM entering e FULL JOIN leaving l USING (user_a, user_b)
),
known AS (
    UPDATE edge_strength es
    SET taps_90d = es.taps_90d + d.change,
        first_tap_at = least(es.first_tap_at, coalesce(d.first_time, es.first_tap_at)),
        last_tap_at = greatest(es.last_tap_at, coalesce(d.last_time, es.last_tap_at)),
        strength = tap_strength(es.taps_90d + d.change,
                                greatest(es.last_tap_at, coalesce(d.last_time, es.last_tap_at)),
                                %(hi)s),
        last_updated_at = now()
    FROM delta d
    WHERE es.user_a = d.user_a AND es.user_b = d.user_b
    RETURNING 1
),
-- A pair seen for the first time has nothing leaving the window: its count is what entered.
met AS (
    INSERT INTO edge_strength
        (user_a, user_b, taps_90d, first_tap_at, last_tap_at, strength, last_updated_at)
    SELECT d.user_a, d.user_b, d.plus, d.first_time, d.last_time,
           tap_strength(d.plus, d.last_time, %(hi)s), now()
    FROM delta d
    WHERE d.first_time IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM edge_strength es
                      WHERE es.user_a = d.user_a AND es.user_b = d.user_b)
    RETURNING 1
)
SELECT (SELECT count(*) FROM met) + (SELECT count(*) FROM known) AS written
"""

# A rebuild: every pair with a tap in [%(t1)s, %(t2)s), counted afresh over the window the
# watermark describes (taps received before it, with time from its window start).
EDGES_RANGED = """
WITH pairs AS (
    SELECT DISTINCT user_a, user_b FROM taps WHERE time >= %(t1)s AND time < %(t2)s
),
counted AS (
    SELECT t.user_a, t.user_b, count(*) FILTER (WHERE t.time >= %(w)s)::int AS taps_90d,
           min(t.time) AS first_time, max(t.time) AS last_time
    FROM pairs p JOIN taps t ON t.user_a = p.user_a AND t.user_b = p.user_b
    WHERE t.received_at < %(hi)s
    GROUP BY t.user_a, t.user_b
),
written AS (
    INSERT INTO edge_strength AS es
        (user_a, user_b, taps_90d, first_tap_at, last_tap_at, strength, last_updated_at)
    SELECT user_a, user_b, taps_90d, first_time, last_time,
           tap_strength(taps_90d, last_time, %(hi)s), now()
    FROM counted
    ON CONFLICT (user_a, user_b) DO UPDATE
    SET taps_90d = EXCLUDED.taps_90d, first_tap_at = EXCLUDED.first_tap_at,
        last_tap_at = EXCLUDED.last_tap_at, strength = EXCLUDED.strength,
        last_updated_at = EXCLUDED.last_updated_at
    WHERE (es.taps_90d, es.first_tap_at, es.last_tap_at)
          IS DISTINCT FROM (EXCLUDED.taps_90d, EXCLUDED.first_tap_at, EXCLUDED.last_tap_at)
    RETURNING 1
)
SELECT (SELECT count(*) FROM counted) AS keys, (SELECT count(*) FROM written) AS written
"""


# -- streaks ------------------------------------------------------------------------------------

STREAK_USERS_BY_RECEIPT = f"""
{TOUCHED_BY_RECEIPT}
touched_users AS (
    SELECT t.user_id, {ZONE} AS tz, min({DAY.of("t.time", ZONE)}) AS min_day, false AS full_scan
    FROM touched t LEFT JOIN profiles z ON z.address = t.user_id
    GROUP BY t.user_id, z.timezone
),
"""

STREAK_USERS_RANGED = f"""
touched_users AS (
    SELECT DISTINCT s.user_id, {ZONE} AS tz, NULL::date AS min_day, true AS full_scan
    FROM tap_sides s LEFT JOIN profiles z ON z.address = s.user_id
    WHERE s.time >= %(p1)s::date - interval '1 day' AND s.time < %(p2)s::date + interval '2 days'
),
"""


STREAK_USERS_LISTED = f"""
touched_users AS (
    SELECT DISTINCT s.user_id, {ZONE} AS tz, NULL::date AS min_day, true AS full_scan
    FROM tap_sides s LEFT JOIN profiles z ON z.address = s.user_id
    WHERE s.user_id = ANY(%(users)s::text[])
),
"""


def streaks_statement(*, ranged: bool = False, users: bool = False) -> str:
    """Runs of consecutive active days. A user's days are scanned from the start of the run
    they were on, when the new days cannot join an older run; otherwise (a late tap filling an
    old gap, a rebuild) all of them. Days only ever become active, so runs only grow and the
    stored longest run is still a lower bound for a partial scan."""
    if users:
        chosen = STREAK_USERS_LISTED
    else:
        chosen = STREAK_USERS_RANGED if ranged else STREAK_USERS_BY_RECEIPT
    return f"""
WITH {chosen}
plan AS (
    SELECT u.user_id, u.tz, st.longest_streak AS old_longest,
           CASE
             WHEN u.full_scan OR st.user_id IS NULL THEN '-infinity'::date
             WHEN st.current_streak > 0
                  AND u.min_day >= st.last_active_day - st.current_streak + 1
               THEN st.last_active_day - st.current_streak + 1
             WHEN st.current_streak = 0 AND u.min_day > st.last_active_day + 1 THEN u.min_day
             ELSE '-infinity'::date
           END AS scan_from
    FROM touched_users u LEFT JOIN user_streaks st USING (user_id)
),
scan AS (
    SELECT d.user_id, d.day, d.streak_length,
           d.day - (row_number() OVER (PARTITION BY d.user_id ORDER BY d.day))::int AS island
    FROM plan p JOIN user_day_activity d ON d.user_id = p.user_id AND d.day >= p.scan_from
),
runs AS (
    SELECT user_id, day, streak_length,
           (row_number() OVER (PARTITION BY user_id, island ORDER BY day))::int AS run_length
    FROM scan
),
relabelled AS (
    UPDATE user_day_activity d SET streak_length = r.run_length
    FROM runs r
    WHERE d.user_id = r.user_id AND d.day = r.day AND d.streak_length <> r.run_length
    RETURNING 1
),
summary AS (
    SELECT user_id, max(day) AS last_day, max(run_length) AS longest,
           (array_agg(run_length ORDER BY day DESC))[1] AS last_run
    FROM runs GROUP BY user_id
),
written AS (
    INSERT INTO user_streaks AS us
        (user_id, current_streak, longest_streak, last_active_day, timezone, last_updated_at)
    SELECT s.user_id,
           CASE WHEN s.last_day >= (%(at)s::timestamptz AT TIME ZONE p.tz)::date - 1
                THEN s.last_run ELSE 0 END,
           CASE WHEN p.scan_from = '-infinity'::date THEN s.longest
                ELSE greatest(s.longest, coalesce(p.old_longest, 0)) END,
           s.last_day, p.tz, now()
    FROM summary s JOIN plan p USING (user_id)
    ON CONFLICT (user_id) DO UPDATE
    SET current_streak = EXCLUDED.current_streak, longest_streak = EXCLUDED.longest_streak,
        last_active_day = EXCLUDED.last_active_day, timezone = EXCLUDED.timezone,
        last_updated_at = EXCLUDED.last_updated_at
    WHERE (us.current_streak, us.longest_streak, us.last_active_day, us.timezone)
          IS DISTINCT FROM (EXCLUDED.current_streak, EXCLUDED.longest_streak,
                            EXCLUDED.last_active_day, EXCLUDED.timezone)
    RETURNING 1
)
SELECT (SELECT count(*) FROM plan) AS keys,
       (SELECT count(*) FROM written) + (SELECT count(*) FROM relabelled) AS written
"""


# A streak ends once a whole local day has passed without activity.
STREAKS_EXPIRE = """
UPDATE user_streaks SET current_streak = 0, last_updated_at = now()
WHERE current_streak > 0
  AND last_active_day < (%(at)s::timestamptz AT TIME ZONE timezone)::date - 1
"""


# -- weekly leaderboard, quests ----------------------------------------------------------------

# Weeks [%(p1)s, %(p2)s] ranked whole: new first-degree connections, then second-degree growth
# (the week's second-degree reach), then the streak the week ended on; ties share a rank.
LEADERBOARD = """
WITH entries AS (
    SELECT w.week_start, w.user_id, w.new_connections,
           w.second_degree_reach AS second_degree_growth,
           coalesce(last_day.streak_length, 0) AS streak_days
    FROM user_week_activity w
    LEFT JOIN LATERAL (
        SELECT d.streak_length FROM user_day_activity d
        WHERE d.user_id = w.user_id AND d.day >= w.week_start AND d.day < w.week_start + 7
        ORDER BY d.day DESC LIMIT 1
    ) last_day ON true
    WHERE w.week_start BETWEEN %(p1)s AND %(p2)s
),
ranked AS (
    SELECT e.*, (rank() OVER (PARTITION BY week_start ORDER BY new_connections DESC,
                              second_degree_growth DESC, streak_days DESC))::int AS rank
    FROM entries e
),
pruned AS (
    DELETE FROM weekly_leaderboard l
    WHERE l.week_start BETWEEN %(p1)s AND %(p2)s
      AND NOT EXISTS (SELECT 1 FROM entries e
                      WHERE e.week_start = l.week_start AND e.user_id = l.user_id)
    RETURNING 1
),
written AS (
    INSERT INTO weekly_leaderboard AS l
        (week_start, user_id, new_connections, second_degree_growth, streak_days, rank,
         last_updated_at)
    SELECT week_start, user_id, new_connections, second_degree_growth, streak_days, rank, now()
    FROM ranked
    ON CONFLICT (week_start, user_id) DO UPDATE
    SET new_connections = EXCLUDED.new_connections,
        second_degree_growth = EXCLUDED.second_degree_growth,
        streak_days = EXCLUDED.streak_days, rank = EXCLUDED.rank,
        last_updated_at = EXCLUDED.last_updated_at
    WHERE (l.new_connections, l.second_degree_growth, l.streak_days, l.rank)
          IS DISTINCT FROM (EXCLUDED.new_connections, EXCLUDED.second_degree_growth,
                            EXCLUDED.streak_days, EXCLUDED.rank)
    RETURNING 1
)
SELECT (SELECT count(*) FROM entries) AS keys,
       (SELECT count(*) FROM written) + (SELECT count(*) FROM pruned) AS written
"""

# Progress of every active weekly quest for weeks [%(p1)s, %(p2)s]. A completed quest's reward
# is one ledger entry ('quest', '<quest id>:<user>:<week>'), so it is paid once however often
# this runs, and the user's total and tier move in the same statement.
QUESTS = f"""
WITH progress AS (
    SELECT w.user_id, q.id AS quest_id, q.slug, w.week_start AS period_start, q.target,
           q.reward_points,
           CASE q.unit WHEN 'taps' THEN w.taps
                       WHEN 'distinct_counterparts' THEN w.distinct_counterparts
                       WHEN 'new_connections' THEN w.new_connections
                       ELSE w.active_days END AS progress
    FROM user_week_activity w CROSS JOIN quest_definitions q
    WHERE q.active AND q.period = 'week' AND w.week_start BETWEEN %(p1)s AND %(p2)s
),
written AS (
    INSERT INTO user_quest_progress AS up
        (user_id, quest_id, period_start, progress, target, completed_at, last_updated_at)
    SELECT user_id, quest_id, period_start, progress, target,
           CASE WHEN progress >= target THEN now() END, now()
    FROM progress
    ON CONFLICT (user_id, quest_id, period_start) DO UPDATE
    SET progress = EXCLUDED.progress, target = EXCLUDED.target,
        completed_at = coalesce(up.completed_at, EXCLUDED.completed_at),
        last_updated_at = EXCLUDED.last_updated_at
    WHERE (up.progress, up.target) IS DISTINCT FROM (EXCLUDED.progress, EXCLUDED.target)
       OR (up.completed_at IS NULL AND EXCLUDED.completed_at IS NOT NULL)
    RETURNING 1
),
pruned AS (  -- weeks a user no longer has (they moved zone); a paid reward stays in the ledger
    DELETE FROM user_quest_progress up
    WHERE up.period_start BETWEEN %(p1)s AND %(p2)s
      AND NOT EXISTS (SELECT 1 FROM user_week_activity w
                      WHERE w.user_id = up.user_id AND w.week_start = up.period_start)
    RETURNING 1
),
paid AS (
    INSERT INTO points_ledger
        (wallet_address, points, source_kind, source_id, rule_version, metadata)
    SELECT user_id, reward_points, 'quest',
           quest_id::text || ':' || user_id || ':' || period_start::text, %(rule_version)s,
           jsonb_build_object('quest', slug, 'period_start', period_start,
                              'progress', progress, 'target', target)
    FROM progress
    WHERE progress >= target AND reward_points > 0
    ORDER BY user_id, quest_id, period_start
    ON CONFLICT ON CONSTRAINT uq_points_ledger_source DO NOTHING
    RETURNING wallet_address, points
),
{CREDIT_PAID}
SELECT (SELECT count(*) FROM progress) AS keys,
       (SELECT count(*) FROM written) + (SELECT count(*) FROM pruned) AS written,
       (SELECT count(*) FROM paid) AS completions,
       (SELECT coalesce(sum(points), 0) FROM paid)::bigint AS points
"""


# -- surges, locations --------------------------------------------------------------------------

# UTC hours in [%(h1)s, %(h2)s) with at least min_taps taps and at least factor times the
# trailing week's hourly average.
SURGES = """
WITH hours AS (
    SELECT generate_series(%(h1)s::timestamptz - interval '168 hours',
                           %(h2)s::timestamptz - interval '1 hour', interval '1 hour') AS h
),
counts AS (
    SELECT date_trunc('hour', time) AS h, count(*)::int AS taps FROM taps
    WHERE time >= %(h1)s::timestamptz - interval '168 hours' AND time < %(h2)s
    GROUP BY 1
),
series AS (
    SELECT hours.h, coalesce(c.taps, 0) AS taps,
           coalesce(sum(coalesce(c.taps, 0)) OVER (ORDER BY hours.h
                    ROWS BETWEEN 168 PRECEDING AND 1 PRECEDING), 0) / 168.0 AS baseline
    FROM hours LEFT JOIN counts c USING (h)
),
surging AS (
    SELECT h, taps, baseline FROM series
    WHERE h >= %(h1)s AND taps >= %(min_taps)s AND taps >= %(factor)s * baseline
),
people AS (
    SELECT g.h, count(DISTINCT s.user_id)::int AS users
    FROM surging g JOIN tap_sides s ON s.time >= g.h AND s.time < g.h + interval '1 hour'
    GROUP BY g.h
),
pruned AS (
    DELETE FROM surge_windows w
    WHERE w.window_start >= %(h1)s AND w.window_start < %(h2)s
      AND NOT EXISTS (SELECT 1 FROM surging g WHERE g.h = w.window_start)
    RETURNING 1
),
written AS (
    INSERT INTO surge_windows AS w
        (window_start, window_end, taps, unique_users, baseline, multiplier, last_updated_at)
    SELECT g.h, g.h + interval '1 hour', g.taps, p.users, round(g.baseline::numeric, 4),
           round((g.taps / greatest(g.baseline, 1.0))::numeric, 2), now()
    FROM surging g JOIN people p USING (h)
    ON CONFLICT (window_start) DO UPDATE
    SET taps = EXCLUDED.taps, unique_users = EXCLUDED.unique_users,
        baseline = EXCLUDED.baseline, multiplier = EXCLUDED.multiplier,
        last_updated_at = EXCLUDED.last_updated_at
    WHERE (w.taps, w.unique_users, w.baseline, w.multiplier)
          IS DISTINCT FROM (EXCLUDED.taps, EXCLUDED.unique_users, EXCLUDED.baseline,
                            EXCLUDED.multiplier)
    RETURNING 1
)
SELECT (SELECT count(*) FROM surging) AS keys,
       (SELECT count(*) FROM written) + (SELECT count(*) FROM pruned) AS written
"""

# "City", "City, Country", "City, Region, Country" (more parts: the middle ones are dropped).
LOCATIONS = """
WITH changed AS (
    SELECT address, nullif(btrim(location), '') AS location FROM profiles
    WHERE updated_at >= %(lo)s AND updated_at < %(hi)s
),
parsed AS (
    SELECT c.address, c.location, p.parts, cardinality(p.parts) AS n
    FROM changed c
    CROSS JOIN LATERAL (
        SELECT coalesce(array_agg(btrim(x) ORDER BY i) FILTER (WHERE btrim(x) <> ''),
                        '{}'::text[]) AS parts
        FROM unnest(string_to_array(c.location, ',')) WITH ORDINALITY AS u(x, i)
    ) p
    WHERE c.location IS NOT NULL
),
removed AS (
    DELETE FROM home_location_struct h USING changed c
    WHERE h.user_id = c.address AND c.location IS NULL
    RETURNING 1
),
written AS (
    INSERT INTO home_location_struct AS h
        (user_id, raw_location, city, region, country, last_updated_at)
    SELECT address, location, parts[1], CASE WHEN n >= 3 THEN parts[2] END,
           CASE WHEN n >= 2 THEN parts[n] END, now()
    FROM parsed
    ON CONFLICT (user_id) DO UPDATE
    SET raw_location = EXCLUDED.raw_location, city = EXCLUDED.city, region = EXCLUDED.region,
        country = EXCLUDED.country, last_updated_at = EXCLUDED.last_updated_at
    WHERE (h.raw_location, h.city, h.region, h.country)
          IS DISTINCT FROM (EXCLUDED.raw_location, EXCLUDED.city, EXCLUDED.region,
                            EXCLUDED.country)
    RETURNING 1
)
SELECT (SELECT count(*) FROM changed) AS keys,
       (SELECT count(*) FROM written) + (SELECT count(*) FROM removed) AS written
"""
