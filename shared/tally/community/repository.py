"""SQL of community activity: taps and profiles in, the ETL's stages, and the endpoints' reads."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from tally.community import rollups
from tally.community.rollups import DAY, WEEK
from tally.db.connection import set_local_limits

Row = dict[str, Any]
COMMUNITY_LOCK = 7_402_115_201


class TapRepository:
    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self.conn = conn

    def insert_taps(self, taps: list[tuple[str, str, str, datetime]]) -> tuple[int, list[str]]:
        """Store new taps; returns how many were new and the client ids that were already
        stored with different content (a client bug the caller must hear about)."""
        ids = [t[0] for t in taps]
        columns = (ids, [t[1] for t in taps], [t[2] for t in taps], [t[3] for t in taps])
        incoming = """
            SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[])
                AS i(client_tap_id, id1, id2, time)
        """
        added = self.conn.execute(
            f"""
            INSERT INTO taps (client_tap_id, id1, id2, time)
            SELECT client_tap_id, id1, id2, time FROM ({incoming}) i ORDER BY client_tap_id
            ON CONFLICT (client_tap_id) DO NOTHING
            """,
            columns,
        ).rowcount
        # A statement of its own: its snapshot sees a row another batch committed meanwhile.
        conflicting = self.conn.execute(
            f"""
            SELECT i.client_tap_id FROM ({incoming}) i JOIN taps t USING (client_tap_id)
            WHERE (t.id1, t.id2, t.time) <> (i.id1, i.id2, i.time)
            ORDER BY i.client_tap_id
            """,
            columns,
        ).fetchall()
        return added, [r["client_tap_id"] for r in conflicting]

    def upsert_profile(self, address: str, fields: dict[str, Any]) -> Row:
        row = self.conn.execute(
            """
            INSERT INTO profiles AS p
                (address, display_name, location, timezone, attributes, opt_in, updated_at)
            VALUES (%(address)s, %(display_name)s, %(location)s, %(timezone)s,
                    %(attributes)s, %(opt_in)s, clock_timestamp())
            ON CONFLICT (address) DO UPDATE
            SET display_name = EXCLUDED.display_name, location = EXCLUDED.location,
                timezone = EXCLUDED.timezone, attributes = EXCLUDED.attributes,
                opt_in = EXCLUDED.opt_in, updated_at = clock_timestamp()
            RETURNING address, display_name, location, timezone, attributes, opt_in, updated_at
            """,
            {"address": address, **fields, "attributes": Jsonb(fields.get("attributes", {}))},
        ).fetchone()
        assert row is not None
        return row

    def profile(self, address: str) -> Row | None:
        return self.conn.execute(
            "SELECT address, display_name, location, timezone, attributes, opt_in, updated_at "
            "FROM profiles WHERE address = %s",
            (address,),
        ).fetchone()


class EtlRepository:
    """The nightly job's statements. Each stage runs in its own transaction, under one
    advisory lock, with its watermark row locked and moved in the same transaction."""

    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self.conn = conn

    def try_lock(self) -> bool:
        row = self.conn.execute(
            "SELECT pg_try_advisory_xact_lock(%s) AS ok", (COMMUNITY_LOCK,)
        ).fetchone()
        return bool(row and row["ok"])

    def configure(self, timeout_ms: int, work_mem_mb: int) -> None:
        set_local_limits(self.conn, timeout_ms, work_mem_mb)

    def horizon(self, lag: timedelta) -> datetime:
        """The newest instant every tap received before has committed: `lag` ago, and no later
        than the start of any write transaction still open (it may be inserting taps)."""
        row = self.conn.execute(
            """
            SELECT least(now() - %s::interval,
                         coalesce((SELECT min(xact_start) FROM pg_stat_activity
                                   WHERE backend_xid IS NOT NULL
                                     AND pid <> pg_backend_pid()), 'infinity')) AS hi
            """,
            (lag,),
        ).fetchone()
        assert row is not None
        return row["hi"]

    def watermark(self, stage: str) -> Row:
        row = self.conn.execute(
            "SELECT stage, received_upto, window_start FROM etl_watermarks WHERE stage = %s "
            "FOR UPDATE",
            (stage,),
        ).fetchone()
        assert row is not None, f"no watermark row for {stage}"
        return row

    def watermarks(self) -> dict[str, datetime | None]:
        rows = self.conn.execute("SELECT stage, received_upto FROM etl_watermarks").fetchall()
        return {r["stage"]: r["received_upto"] for r in rows}

    def advance(
        self, stage: str, upto: datetime, rows: int, window_start: datetime | None = None
    ) -> None:
        self.conn.execute(
            """
            UPDATE etl_watermarks
            SET received_upto = %s, window_start = coalesce(%s, window_start),
                last_run_at = now(), last_rows = %s
            WHERE stage = %s
            """,
            (upto, window_start, rows, stage),
        )

    def start_watermarks(self, horizon: datetime, window_start: datetime) -> None:
        """Stages that never ran begin at the horizon (a rebuild covers what came before)."""
        self.conn.execute(
            """
            UPDATE etl_watermarks
            SET received_upto = %s,
                window_start = CASE WHEN stage = 'edges' THEN %s END
            WHERE received_upto IS NULL
            """,
            (horizon, window_start),
        )

    def tap_days(self) -> tuple[date, date] | None:
        """The UTC dates of the first and last tap."""
        row = self.conn.execute(
            "SELECT (min(time) AT TIME ZONE 'UTC')::date AS first, "
            "(max(time) AT TIME ZONE 'UTC')::date AS last FROM taps"
        ).fetchone()
        if not row or row["first"] is None:
            return None
        return row["first"], row["last"]

    def next_arrival(self, after: datetime | None, source: str) -> datetime | None:
        """The first tap received (profile updated) at or after `after`; the very first when
        `after` is None."""
        column, table = (
            ("updated_at", "profiles") if source == "profiles" else ("received_at", "taps")
        )
        row = self.conn.execute(
            f"SELECT min({column}) AS t FROM {table} "
            f"WHERE %(after)s::timestamptz IS NULL OR {column} >= %(after)s",
            {"after": after},
        ).fetchone()
        return row["t"] if row else None

    def _counts(self, statement: str, params: dict[str, Any]) -> dict[str, int]:
        row = self.conn.execute(statement, params).fetchone()
        return {k: int(v) for k, v in (row or {}).items()}

    # -- stages by receipt window ---------------------------------------------------------

    def edges(
        self, lo: datetime, hi: datetime, w0: datetime | None, w1: datetime
    ) -> dict[str, int]:
        params = {"lo": lo, "hi": hi, "w0": w0 or w1, "w1": w1}
        return self._counts(rollups.EDGES_INCREMENTAL, params)

    def activity(self, weekly: bool, lo: datetime, hi: datetime, skew: timedelta) -> dict[str, int]:
        statement = rollups.activity_statement(WEEK if weekly else DAY, ranged=False)
        return self._counts(statement, {"lo": lo, "hi": hi, "skew": skew})

    def streaks(self, lo: datetime, hi: datetime, skew: timedelta) -> dict[str, int]:
        counts = self._counts(
            rollups.streaks_statement(ranged=False), {"lo": lo, "hi": hi, "skew": skew, "at": hi}
        )
        counts["expired"] = self.expire_streaks(hi)
        return counts

    def expire_streaks(self, at: datetime) -> int:
        return self.conn.execute(rollups.STREAKS_EXPIRE, {"at": at}).rowcount

    def touched_weeks(
        self, lo: datetime, hi: datetime, skew: timedelta
    ) -> tuple[date, date] | None:
        """Weeks to re-rank: from the earliest local week a window of taps can touch in any
        zone (UTC-12 is the earliest; a neighbour's week counts too) to the newest week on
        record (a late day can lengthen the streaks of later weeks)."""
        row = self.conn.execute(
            f"""
            WITH {rollups.TOUCHED_BY_RECEIPT}
            firsts AS (
                SELECT date_trunc('week', (min(time) AT TIME ZONE 'UTC')
                                          - interval '12 hours')::date AS p1
                FROM touched
            )
            SELECT p1, (SELECT max(week_start) FROM user_week_activity) AS p2 FROM firsts
            """,
            {"lo": lo, "hi": hi, "skew": skew},
        ).fetchone()
        if not row or row["p1"] is None or row["p2"] is None:
            return None
        return row["p1"], max(row["p1"], row["p2"])

    def first_tap_time(self, lo: datetime, hi: datetime) -> datetime | None:
        row = self.conn.execute(
            "SELECT min(time) AS t FROM taps WHERE received_at >= %s AND received_at < %s",
            (lo, hi),
        ).fetchone()
        return row["t"] if row else None

    def locations(self, lo: datetime, hi: datetime) -> dict[str, int]:
        return self._counts(rollups.LOCATIONS, {"lo": lo, "hi": hi})

    # -- stages over a range of periods ----------------------------------------------------

    def leaderboard(self, p1: date, p2: date) -> dict[str, int]:
        return self._counts(rollups.LEADERBOARD, {"p1": p1, "p2": p2})

    def quests(
        self, p1: date, p2: date, rule_version: str, tiers: list[tuple[int, str]]
    ) -> dict[str, int]:
        params = {
            "p1": p1,
            "p2": p2,
            "rule_version": rule_version,
            "mins": [m for m, _ in tiers],
            "names": [n for _, n in tiers],
        }
        return self._counts(rollups.QUESTS, params)

    def surges(self, h1: datetime, h2: datetime, factor: float, min_taps: int) -> dict[str, int]:
        params = {"h1": h1, "h2": h2, "factor": factor, "min_taps": min_taps}
        return self._counts(rollups.SURGES, params)

    def rebuild_edges(self, t1: datetime, t2: datetime) -> dict[str, int]:
        """Pairs with a tap in [t1, t2) counted afresh, as of the edges watermark."""
        mark = self.watermark("edges")
        if mark["received_upto"] is None:
            return {"keys": 0, "written": 0}
        params = {"t1": t1, "t2": t2, "hi": mark["received_upto"], "w": mark["window_start"]}
        return self._counts(rollups.EDGES_RANGED, params)

    def rebuild_activity(self, weekly: bool, p1: date, p2: date) -> dict[str, int]:
        statement = rollups.activity_statement(WEEK if weekly else DAY, ranged=True)
        return self._counts(statement, {"p1": p1, "p2": p2})

    def rebuild_streaks(self, p1: date, p2: date, at: datetime) -> dict[str, int]:
        counts = self._counts(
            rollups.streaks_statement(ranged=True), {"p1": p1, "p2": p2, "at": at}
        )
        counts["expired"] = self.expire_streaks(at)
        return counts

    def rezoned_users(self) -> list[str]:
        """Users whose profile zone differs from the zone their rollups were computed in."""
        rows = self.conn.execute(
            """
            SELECT s.user_id FROM user_streaks s JOIN profiles p ON p.address = s.user_id
            WHERE p.timezone <> s.timezone ORDER BY s.user_id
            """
        ).fetchall()
        return [r["user_id"] for r in rows]

    def first_week_of(self, users: list[str]) -> date | None:
        row = self.conn.execute(
            "SELECT min(week_start) AS w FROM user_week_activity WHERE user_id = ANY(%s)",
            (users,),
        ).fetchone()
        return row["w"] if row else None

    def rebuild_users(self, users: list[str], at: datetime) -> dict[str, int]:
        """Every day, week and streak of these users, afresh in their current zone."""
        params = {"users": users, "at": at}
        days = self._counts(rollups.activity_statement(DAY, users=True), params)
        weeks = self._counts(rollups.activity_statement(WEEK, users=True), params)
        streaks = self._counts(rollups.streaks_statement(users=True), params)
        return {
            "keys": days["keys"] + weeks["keys"] + streaks["keys"],
            "written": days["written"] + weeks["written"] + streaks["written"],
        }

    def latest_week(self) -> date | None:
        row = self.conn.execute("SELECT max(week_start) AS w FROM user_week_activity").fetchone()
        return row["w"] if row else None

    # -- backfill requests -----------------------------------------------------------------

    def create_backfill(
        self, backfill_id: UUID, from_day: date, to_day: date, requested_by: str | None
    ) -> Row:
        row = self.conn.execute(
            """
            INSERT INTO community_backfills (id, from_day, to_day, next_day, requested_by)
            VALUES (%s, %s, %s, %s, %s) RETURNING *
            """,
            (backfill_id, from_day, to_day, from_day, requested_by),
        ).fetchone()
        assert row is not None
        return row

    def backfill(self, backfill_id: UUID, *, lock: bool = False) -> Row | None:
        suffix = " FOR UPDATE" if lock else ""
        return self.conn.execute(
            "SELECT * FROM community_backfills WHERE id = %s" + suffix, (backfill_id,)
        ).fetchone()

    def waiting_backfills(self, stale: timedelta) -> list[UUID]:
        """Backfills nobody is working on: queued, or running without progress for `stale`
        (their invocation died)."""
        rows = self.conn.execute(
            """
            SELECT id FROM community_backfills
            WHERE status = 'queued' OR (status = 'running' AND updated_at < now() - %s)
            ORDER BY requested_at
            """,
            (stale,),
        ).fetchall()
        return [r["id"] for r in rows]

    def update_backfill(self, backfill_id: UUID, **fields: Any) -> None:
        columns = ", ".join(f"{name} = %({name})s" for name in fields)
        finished = ", finished_at = now()" if fields.get("status") in ("done", "failed") else ""
        self.conn.execute(
            f"UPDATE community_backfills SET {columns}, updated_at = now(){finished} "
            "WHERE id = %(id)s",
            {"id": backfill_id, **fields},
        )


class CommunityReadRepository:
    """The community endpoints' reads: rollups, plus taps for the live radar."""

    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self.conn = conn

    def watermark(self, stage: str) -> datetime | None:
        row = self.conn.execute(
            "SELECT received_upto FROM etl_watermarks WHERE stage = %s", (stage,)
        ).fetchone()
        return row["received_upto"] if row else None

    def user_zone(self, user_id: str) -> str:
        row = self.conn.execute("SELECT user_zone(%s) AS tz", (user_id,)).fetchone()
        return str(row["tz"]) if row else "UTC"

    def week(self, user_id: str, week_start: date) -> Row | None:
        return self.conn.execute(
            """
            SELECT w.week_start, w.taps, w.distinct_counterparts, w.new_connections,
                   w.second_degree_reach, w.active_days
            FROM user_week_activity w WHERE w.user_id = %s AND w.week_start = %s
            """,
            (user_id, week_start),
        ).fetchone()

    def streak(self, user_id: str, at: datetime) -> Row | None:
        """The stored streak, ended if a whole local day has passed since (the job may not have
        run since midnight)."""
        return self.conn.execute(
            """
            SELECT CASE WHEN last_active_day >= (%s::timestamptz AT TIME ZONE timezone)::date - 1
                        THEN current_streak ELSE 0 END AS current_streak,
                   longest_streak, last_active_day
            FROM user_streaks WHERE user_id = %s
            """,
            (at, user_id),
        ).fetchone()

    def weekly_board(self, week_start: date, limit: int) -> list[Row]:
        return self.conn.execute(
            """
            SELECT l.rank, l.user_id, p.display_name, l.new_connections,
                   l.second_degree_growth, l.streak_days
            FROM weekly_leaderboard l LEFT JOIN profiles p ON p.address = l.user_id
            WHERE l.week_start = %s ORDER BY l.rank, l.user_id LIMIT %s
            """,
            (week_start, limit),
        ).fetchall()

    def board_size(self, week_start: date) -> int:
        row = self.conn.execute(
            "SELECT count(*) AS n FROM weekly_leaderboard WHERE week_start = %s", (week_start,)
        ).fetchone()
        return int(row["n"]) if row else 0

    def people_to_meet(
        self,
        user_id: str,
        at: datetime,
        weights: tuple[float, float, float],
        min_mutuals: int,
        limit: int,
    ) -> tuple[list[Row], int]:
        """Friends of friends the user has never met, scored by mutual connections (share of the
        best candidate's), recency of the candidate's last tap with a mutual, and proximity
        (same city 1, same country 0.5). Opted-out profiles are never suggested."""
        rows = self.conn.execute(
            """
            WITH friends AS (
                SELECT other_id FROM edge_sides WHERE user_id = %(me)s AND taps_90d > 0
            ), candidates AS (
                SELECT e.other_id AS candidate, count(DISTINCT e.user_id)::int AS mutuals,
                       max(e.last_tap_at) AS last_seen
                FROM friends f JOIN edge_sides e ON e.user_id = f.other_id AND e.taps_90d > 0
                WHERE e.other_id <> %(me)s
                  AND NOT EXISTS (SELECT 1 FROM edge_strength x
                                  WHERE x.user_a = least(%(me)s, e.other_id)
                                    AND x.user_b = greatest(%(me)s, e.other_id))
                GROUP BY e.other_id
                HAVING count(DISTINCT e.user_id) >= %(min_mutuals)s
            ), scored AS (
                SELECT c.candidate, p.display_name, c.mutuals,
                       c.mutuals::float / max(c.mutuals) OVER () AS mutual_score,
                       exp(-greatest(extract(epoch FROM %(at)s::timestamptz - c.last_seen), 0)
                           / 86400.0 / 21.0) AS recency,
                       CASE WHEN lower(me.city) = lower(h.city)
                             AND lower(coalesce(me.country, ''))
                                 = lower(coalesce(h.country, ''))
                            THEN 1.0
                            WHEN lower(me.country) = lower(h.country) THEN 0.5
                            ELSE 0.0 END AS proximity
                FROM candidates c
                LEFT JOIN profiles p ON p.address = c.candidate
                LEFT JOIN home_location_struct h ON h.user_id = c.candidate
                LEFT JOIN home_location_struct me ON me.user_id = %(me)s
                WHERE coalesce(p.opt_in, true)
            )
            SELECT candidate AS user_id, display_name, mutuals, recency, proximity,
                   %(wm)s * mutual_score + %(wr)s * recency + %(wp)s * proximity AS score,
                   count(*) OVER () AS considered
            FROM scored
            ORDER BY score DESC, mutuals DESC, candidate LIMIT %(limit)s
            """,
            {
                "me": user_id,
                "at": at,
                "min_mutuals": min_mutuals,
                "limit": limit,
                "wm": weights[0],
                "wr": weights[1],
                "wp": weights[2],
            },
        ).fetchall()
        considered = int(rows[0]["considered"]) if rows else 0
        return rows, considered

    def quests(self, user_id: str, period_start: date) -> list[Row]:
        return self.conn.execute(
            """
            SELECT q.slug, q.title, q.description, q.unit, q.target, q.reward_points,
                   coalesce(up.progress, 0) AS progress, up.completed_at
            FROM quest_definitions q
            LEFT JOIN user_quest_progress up
              ON up.quest_id = q.id AND up.user_id = %s AND up.period_start = %s
            WHERE q.active ORDER BY q.id
            """,
            (user_id, period_start),
        ).fetchall()

    def radar(self, start: datetime, hours: int) -> list[Row]:
        """Hourly buckets [start + k h, start + (k+1) h), k < hours, straight from the taps,
        with the surge multiplier of any surge hour they overlap."""
        return self.conn.execute(
            """
            WITH buckets AS (
                SELECT k, %(start)s::timestamptz + k * interval '1 hour' AS b
                FROM generate_series(0, %(hours)s - 1) AS k
            ), sides AS (
                SELECT floor(extract(epoch FROM s.time - %(start)s::timestamptz) / 3600)::int AS k,
                       s.user_id
                FROM tap_sides s
                WHERE s.time >= %(start)s::timestamptz
                  AND s.time < %(start)s::timestamptz + %(hours)s * interval '1 hour'
            ), counted AS (
                SELECT k, (count(*) / 2)::int AS taps, count(DISTINCT user_id)::int AS users
                FROM sides GROUP BY k
            )
            SELECT b.b AS start, coalesce(c.taps, 0) AS taps, coalesce(c.users, 0) AS unique_users,
                   (SELECT max(w.multiplier) FROM surge_windows w
                    WHERE w.window_start < b.b + interval '1 hour' AND w.window_end > b.b)
                       AS surge_multiplier
            FROM buckets b LEFT JOIN counted c USING (k) ORDER BY b.k
            """,
            {"start": start, "hours": hours},
        ).fetchall()

    def top_participants(self, start: datetime, end: datetime, limit: int) -> list[Row]:
        return self.conn.execute(
            """
            SELECT s.user_id, p.display_name, count(*)::int AS taps
            FROM tap_sides s LEFT JOIN profiles p ON p.address = s.user_id
            WHERE s.time >= %s AND s.time < %s
            GROUP BY s.user_id, p.display_name
            ORDER BY count(*) DESC, s.user_id LIMIT %s
            """,
            (start, end, limit),
        ).fetchall()

    def strongest(self, user_id: str, at: datetime, limit: int) -> tuple[list[Row], int]:
        rows = self.conn.execute(
            """
            SELECT e.other_id AS user_id, p.display_name, e.taps_90d, e.last_tap_at,
                   tap_strength(e.taps_90d, e.last_tap_at, %(at)s) AS strength,
                   greatest(extract(epoch FROM %(at)s::timestamptz - e.last_tap_at), 0)
                       / 86400.0 AS days_since_last_tap,
                   count(*) OVER () AS considered
            FROM edge_sides e LEFT JOIN profiles p ON p.address = e.other_id
            WHERE e.user_id = %(me)s AND e.taps_90d > 0
            ORDER BY strength DESC, e.other_id LIMIT %(limit)s
            """,
            {"me": user_id, "at": at, "limit": limit},
        ).fetchall()
        considered = int(rows[0]["considered"]) if rows else 0
        return rows, considered
