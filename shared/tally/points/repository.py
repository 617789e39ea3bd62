"""SQL of the points system. The only module of it that talks to PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from tally.points.achievements import Achievement, UserStats

Row = dict[str, Any]


class PointsRepository:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    # -- verification sessions ------------------------------------------------------------

    def get_session(self, session_id: UUID) -> Row | None:
        return self.conn.execute(
            "SELECT * FROM verification_sessions WHERE id = %s", (session_id,)
        ).fetchone()

    def insert_session(
        self,
        *,
        session_id: UUID,
        status: str,
        wallet_address: str | None,
        initial_data: dict[str, Any],
        results: dict[str, Any] | None,
        points_status: str | None,
        completed_at: datetime | None,
    ) -> Row | None:
        """Insert a session; returns None when that id exists already."""
        return self.conn.execute(
            """
            INSERT INTO verification_sessions
                (id, status, wallet_address, initial_data, results, points_status, completed_at)
            VALUES (%s, %s, %s, %s, %s, %s, COALESCE(%s, now()))
            ON CONFLICT (id) DO NOTHING
            RETURNING *
            """,
            (
                session_id,
                status,
                wallet_address,
                Jsonb(initial_data),
                Jsonb(results) if results is not None else None,
                points_status,
                completed_at,
            ),
        ).fetchone()

    def has_same_content(
        self, session_id: UUID, initial_data: dict[str, Any], results: dict[str, Any] | None
    ) -> bool:
        """jsonb equality, so numbers compare as numbers (1e300 == 1000...0)."""
        row = self.conn.execute(
            "SELECT 1 FROM verification_sessions WHERE id = %s AND initial_data = %s "
            "AND results IS NOT DISTINCT FROM %s",
            (session_id, Jsonb(initial_data), Jsonb(results) if results is not None else None),
        ).fetchone()
        return row is not None

    def replace_unsettled_session(
        self,
        session_id: UUID,
        *,
        status: str,
        wallet_address: str | None,
        initial_data: dict[str, Any],
        results: dict[str, Any] | None,
        points_status: str | None,
        completed_at: datetime | None,
    ) -> Row | None:
        """New results for a session that earned nothing yet (waiting, failed or skipped)."""
        return self.conn.execute(
            """
            UPDATE verification_sessions
            SET status = %s, wallet_address = %s, initial_data = %s, results = %s,
                points_status = %s, points_attempts = 0, points_error = NULL,
                points_next_attempt_at = NULL, points_awarded = NULL, points_breakdown = NULL,
                completed_at = COALESCE(%s, now()), updated_at = now()
            WHERE id = %s AND (points_status IS NULL OR points_status IN ('failed', 'skipped'))
            RETURNING *
            """,
            (
                status,
                wallet_address,
                Jsonb(initial_data),
                Jsonb(results) if results is not None else None,
                points_status,
                completed_at,
                session_id,
            ),
        ).fetchone()

    def claim_next_award(self) -> Row | None:
        """Lock the next session waiting for points; concurrent sweeps skip each other's."""
        return self.conn.execute(
            """
            SELECT id, wallet_address, initial_data, results, points_attempts
            FROM verification_sessions
            WHERE status = 'completed'
              AND (points_status IS NULL
                   OR (points_status = 'failed' AND points_next_attempt_at <= now()))
            ORDER BY points_next_attempt_at NULLS FIRST, completed_at, id
            LIMIT 1
            FOR UPDATE SKIP LOCKED
            """
        ).fetchone()

    def mark_session(
        self,
        session_id: UUID,
        *,
        points_status: str,
        error: str | None = None,
        points_awarded: int | None = None,
    ) -> None:
        self.conn.execute(
            """
            UPDATE verification_sessions
            SET points_status = %s, points_error = %s,
                points_awarded = COALESCE(%s, points_awarded),
                points_calculated_at = now(), updated_at = now()
            WHERE id = %s
            """,
            (points_status, error, points_awarded, session_id),
        )

    def mark_session_failed(
        self,
        session_id: UUID,
        *,
        error: str,
        base_delay_s: int,
        max_delay_s: int,
        max_attempts: int,
    ) -> tuple[int, bool]:
        """Record a failed attempt with exponential back-off: (attempts, given up). After
        max_attempts no retry is scheduled; new results from the verifier requeue it."""
        row = self.conn.execute(
            """
            UPDATE verification_sessions
            SET points_status = 'failed',
                points_attempts = points_attempts + 1,
                points_error = left(%s, 1000),
                points_next_attempt_at = CASE WHEN points_attempts + 1 >= %s THEN NULL
                    ELSE now() + make_interval(
                        secs => least(%s::float8 * power(2, points_attempts), %s::float8))
                    END,
                updated_at = now()
            WHERE id = %s AND points_status IS DISTINCT FROM 'awarded'
            RETURNING points_attempts, points_next_attempt_at IS NULL AS gave_up
            """,
            (error, max_attempts, base_delay_s, max_delay_s, session_id),
        ).fetchone()
        return (int(row["points_attempts"]), bool(row["gave_up"])) if row else (0, False)

    def mark_session_awarded(
        self, session_id: UUID, *, points: int, breakdown: dict[str, Any]
    ) -> None:
        self.conn.execute(
            """
            UPDATE verification_sessions
            SET points_status = 'awarded', points_awarded = %s, points_breakdown = %s,
                quality_multiplier = %s, total_multiplier = %s, points_error = NULL,
                points_next_attempt_at = NULL, points_calculated_at = now(), updated_at = now()
            WHERE id = %s
            """,
            (
                points,
                Jsonb(breakdown),
                breakdown["quality_multiplier"],
                breakdown["total_multiplier"],
                session_id,
            ),
        )

    def requeue_session(self, session_id: UUID) -> None:
        self.conn.execute(
            """
            UPDATE verification_sessions
            SET points_status = NULL, points_error = NULL, points_next_attempt_at = NULL,
                updated_at = now()
            WHERE id = %s AND points_status = 'held'
            """,
            (session_id,),
        )

    # -- counters and subject rarity -------------------------------------------------------

    def lock_dataset_counter(self) -> int:
        """Serialise awards: the platform-wide dataset order must be exact."""
        row = self.conn.execute(
            "SELECT value FROM platform_counters WHERE name = 'datasets' FOR UPDATE"
        ).fetchone()
        assert row is not None, "platform_counters is seeded by migration 0001"
        return int(row["value"])

    def next_counter(self, name: str) -> int:
        row = self.conn.execute(
            "UPDATE platform_counters SET value = value + 1 WHERE name = %s RETURNING value",
            (name,),
        ).fetchone()
        assert row is not None
        return int(row["value"])

    def bump_subject(self, subject: str, tier_for_count: list[tuple[int, str, float]]) -> int:
        """Count one more dataset for the subject; returns how many it had before."""
        row = self.conn.execute(
            """
            INSERT INTO subject_rarity_cache
                (subject, dataset_count, rarity_tier, rarity_multiplier)
            VALUES (%s, 1, '', 0)
            ON CONFLICT (subject) DO UPDATE
                SET dataset_count = subject_rarity_cache.dataset_count + 1, last_updated = now()
            RETURNING dataset_count
            """,
            (subject,),
        ).fetchone()
        assert row is not None
        count = int(row["dataset_count"])
        tier, multiplier = next(
            (name, mult) for minimum, name, mult in tier_for_count if count >= minimum
        )
        self.conn.execute(
            "UPDATE subject_rarity_cache SET rarity_tier = %s, rarity_multiplier = %s "
            "WHERE subject = %s",
            (tier, multiplier, subject),
        )
        return count - 1

    # -- anti-abuse ------------------------------------------------------------------------

    def has_cleared_flag(self, session_id: UUID) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM anti_abuse_flags WHERE session_id = %s AND status = 'cleared' LIMIT 1",
            (session_id,),
        ).fetchone()
        return row is not None

    def content_already_awarded(self, content_hash: str) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM user_submissions WHERE content_hash = %s LIMIT 1", (content_hash,)
        ).fetchone()
        return row is not None

    def submissions_since(self, wallet_address: str, since: datetime) -> int:
        row = self.conn.execute(
            "SELECT count(*) AS n FROM user_submissions "
            "WHERE wallet_address = %s AND submitted_at >= %s",
            (wallet_address, since),
        ).fetchone()
        return int(row["n"]) if row else 0

    def add_flag(
        self, *, wallet_address: str, session_id: UUID, reason: str, details: dict[str, Any]
    ) -> None:
        self.conn.execute(
            """
            INSERT INTO anti_abuse_flags (wallet_address, session_id, reason, details)
            VALUES (%s, %s, %s, %s)
            ON CONFLICT (session_id, reason) DO NOTHING
            """,
            (wallet_address, session_id, reason, Jsonb(details)),
        )

    def list_flags(self, *, status: str | None, after_id: int, limit: int) -> list[Row]:
        return self.conn.execute(
            """
            SELECT * FROM anti_abuse_flags
            WHERE (%(status)s::text IS NULL OR status = %(status)s) AND id > %(after)s
            ORDER BY id LIMIT %(limit)s
            """,
            {"status": status, "after": after_id, "limit": limit},
        ).fetchall()

    def lock_flag(self, flag_id: int) -> Row | None:
        return self.conn.execute(
            "SELECT * FROM anti_abuse_flags WHERE id = %s FOR UPDATE", (flag_id,)
        ).fetchone()

    def review_flag(self, flag_id: int, *, status: str, reviewer: str) -> Row | None:
        return self.conn.execute(
            """
            UPDATE anti_abuse_flags
            SET status = %s, reviewed_at = now(), reviewed_by = %s
            WHERE id = %s RETURNING *
            """,
            (status, reviewer, flag_id),
        ).fetchone()

    def open_flags_for_session(self, session_id: UUID) -> int:
        row = self.conn.execute(
            "SELECT count(*) AS n FROM anti_abuse_flags WHERE session_id = %s AND status = 'open'",
            (session_id,),
        ).fetchone()
        return int(row["n"]) if row else 0

    # -- users, submissions and the ledger -------------------------------------------------

    def lock_user(self, wallet_address: str) -> Row:
        self.conn.execute(
            "INSERT INTO users (wallet_address) VALUES (%s) "
            "ON CONFLICT (wallet_address) DO NOTHING",
            (wallet_address,),
        )
        row = self.conn.execute(
            "SELECT * FROM users WHERE wallet_address = %s FOR UPDATE", (wallet_address,)
        ).fetchone()
        assert row is not None
        return row

    def set_contributor_number(self, wallet_address: str, number: int) -> None:
        self.conn.execute(
            "UPDATE users SET contributor_number = %s WHERE wallet_address = %s",
            (number, wallet_address),
        )

    def has_first_bulk(self, wallet_address: str, subject: str | None) -> bool:
        row = self.conn.execute(
            """
            SELECT 1 FROM user_submissions
            WHERE wallet_address = %s AND subject IS NOT DISTINCT FROM %s AND is_first_bulk
            LIMIT 1
            """,
            (wallet_address, subject),
        ).fetchone()
        return row is not None

    def insert_submission(self, values: dict[str, Any]) -> None:
        values = {**values, "points_breakdown": Jsonb(values["points_breakdown"])}
        columns = ", ".join(values)
        placeholders = ", ".join(f"%({k})s" for k in values)
        self.conn.execute(
            f"INSERT INTO user_submissions ({columns}) VALUES ({placeholders})",
            values,
        )

    def append_ledger(
        self,
        *,
        wallet_address: str,
        points: int,
        source_kind: str,
        source_id: str,
        rule_version: str,
        metadata: dict[str, Any],
    ) -> bool:
        """Append one entry; False when that source was already credited (idempotency)."""
        row = self.conn.execute(
            """
            INSERT INTO points_ledger
                (wallet_address, points, source_kind, source_id, rule_version, metadata)
            VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT ON CONSTRAINT uq_points_ledger_source DO NOTHING
            RETURNING id
            """,
            (wallet_address, points, source_kind, source_id, rule_version, Jsonb(metadata)),
        ).fetchone()
        return row is not None

    def add_to_user(
        self, wallet_address: str, *, points: int, submissions: int, at: datetime | None
    ) -> int:
        row = self.conn.execute(
            """
            UPDATE users
            SET total_points = total_points + %(points)s,
                total_submissions = total_submissions + %(subs)s,
                first_submission_at = COALESCE(first_submission_at, %(at)s),
                last_submission_at = GREATEST(last_submission_at, %(at)s),
                points_updated_at = CASE WHEN %(points)s <> 0 THEN now()
                                         ELSE points_updated_at END,
                updated_at = now()
            WHERE wallet_address = %(wallet)s
            RETURNING total_points
            """,
            {"points": points, "subs": submissions, "at": at, "wallet": wallet_address},
        ).fetchone()
        assert row is not None
        return int(row["total_points"])

    def set_tier(self, wallet_address: str, tier: str) -> None:
        self.conn.execute(
            "UPDATE users SET tier = %s WHERE wallet_address = %s AND tier <> %s",
            (tier, wallet_address, tier),
        )

    def user_stats(self, wallet_address: str, rare_multiplier: float) -> UserStats:
        row = self.conn.execute(
            """
            SELECT u.total_points, u.tier, u.contributor_number,
                   count(s.id) AS submissions,
                   count(s.id) FILTER (WHERE s.subject_rarity_multiplier >= %(rare)s)
                       AS rare_submissions,
                   COALESCE(avg(s.quality_score) * 100, 0)::float8 AS average_score,
                   count(s.id) FILTER (WHERE s.is_first_bulk) AS first_bulks,
                   count(DISTINCT s.subject) AS distinct_subjects,
                   count(s.id) FILTER (WHERE s.specificity_grade = 'A') AS grade_a_submissions,
                   count(s.id) FILTER (WHERE s.verified) AS verified_submissions,
                   count(DISTINCT (s.submitted_at AT TIME ZONE 'UTC')::date) AS active_days
            FROM users u
            LEFT JOIN user_submissions s ON s.wallet_address = u.wallet_address
            WHERE u.wallet_address = %(wallet)s
            GROUP BY u.id
            """,
            {"wallet": wallet_address, "rare": rare_multiplier},
        ).fetchone()
        assert row is not None
        return UserStats.model_validate(row)

    def unlock_achievements(
        self, wallet_address: str, achievements: list[Achievement]
    ) -> list[str]:
        """Insert the achievements not yet held; returns the keys newly unlocked."""
        if not achievements:
            return []
        rows = self.conn.execute(
            """
            INSERT INTO user_achievements (wallet_address, achievement_key, achievement_name,
                                           description)
            SELECT %s, k, n, d FROM unnest(%s::text[], %s::text[], %s::text[]) AS a(k, n, d)
            ON CONFLICT ON CONSTRAINT uq_user_achievements DO NOTHING
            RETURNING achievement_key
            """,
            (
                wallet_address,
                [a.key for a in achievements],
                [a.name for a in achievements],
                [a.description for a in achievements],
            ),
        ).fetchall()
        return [r["achievement_key"] for r in rows]

    # -- reads for the API ------------------------------------------------------------------

    def get_user(self, wallet_address: str) -> Row | None:
        return self.conn.execute(
            "SELECT * FROM users WHERE wallet_address = %s", (wallet_address,)
        ).fetchone()

    def recent_submissions(self, wallet_address: str, limit: int) -> list[Row]:
        return self.conn.execute(
            """
            SELECT session_id, title, subject, points_earned, points_breakdown, submitted_at
            FROM user_submissions WHERE wallet_address = %s
            ORDER BY submitted_at DESC, id DESC LIMIT %s
            """,
            (wallet_address, limit),
        ).fetchall()

    def achievements(self, wallet_address: str) -> list[Row]:
        return self.conn.execute(
            """
            SELECT achievement_key AS key, achievement_name AS name, description, unlocked_at
            FROM user_achievements WHERE wallet_address = %s ORDER BY unlocked_at, id
            """,
            (wallet_address,),
        ).fetchall()


class RecomputeRepository:
    """SQL of a rule-version recompute: read every award's inputs, write adjustments."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def try_lock(self, key: int) -> bool:
        row = self.conn.execute("SELECT pg_try_advisory_xact_lock(%s) AS ok", (key,)).fetchone()
        return bool(row and row["ok"])

    def changes_already_under(self, rule_version: str) -> bool:
        """Would a staged change contradict what this same rule version already paid? Then
        the rules changed without a new version."""
        row = self.conn.execute(
            """
            SELECT EXISTS (
                SELECT 1 FROM recompute_changes c JOIN points_ledger l
                  ON (l.source_kind = 'dataset_submission' AND l.source_id = c.session_id::text)
                  OR (l.source_kind = 'rule_adjustment'
                      AND l.metadata->>'session_id' = c.session_id::text)
                WHERE l.rule_version = %s
            ) AS clash
            """,
            (rule_version,),
        ).fetchone()
        return bool(row and row["clash"])

    def hold_awards(self) -> None:
        """The award sweep takes this row first: holding it keeps awards out until commit."""
        self.conn.execute("SELECT value FROM platform_counters WHERE name = 'datasets' FOR UPDATE")

    def award_inputs(self) -> Iterator[Row]:
        """Every award's inputs as it was computed, and what it is worth in the ledger now."""
        with self.conn.cursor(name="recompute_inputs") as cursor:
            cursor.itersize = 5000
            cursor.execute(
                """
                SELECT s.session_id, s.wallet_address, s.rarity_score::float8 AS rarity_score,
                       s.quality_score::float8 AS quality_score, s.specificity_grade, s.verified,
                       s.is_first_bulk, s.dataset_number,
                       CASE WHEN s.subject IS NULL THEN 0 ELSE
                           count(*) OVER (PARTITION BY s.subject ORDER BY s.dataset_number
                                          ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                       END AS subject_before,
                       s.points_earned + COALESCE(a.points, 0) AS current_points
                FROM user_submissions s
                LEFT JOIN (
                    SELECT metadata->>'session_id' AS session_id, sum(points)::bigint AS points
                    FROM points_ledger WHERE source_kind = 'rule_adjustment' GROUP BY 1
                ) a ON a.session_id = s.session_id::text
                ORDER BY s.dataset_number
                """
            )
            yield from cursor

    def stage_changes(self, changes: list[tuple[UUID, str, int, int]]) -> None:
        """(session, wallet, current, new) into a transaction-local table."""
        if not changes:
            self.conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS recompute_changes (session_id uuid PRIMARY KEY, "
                "wallet_address text NOT NULL, current_points bigint NOT NULL, "
                "new_points bigint NOT NULL) ON COMMIT DROP"
            )
            return
        self.conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS recompute_changes (session_id uuid PRIMARY KEY, "
            "wallet_address text NOT NULL, current_points bigint NOT NULL, "
            "new_points bigint NOT NULL) ON COMMIT DROP"
        )
        with (
            self.conn.cursor() as cursor,
            cursor.copy(
                "COPY recompute_changes (session_id, wallet_address, current_points, new_points) "
                "FROM STDIN"
            ) as copy,
        ):
            for change in changes:
                copy.write_row(change)

    def summarize_changes(self, sample: int) -> tuple[Row, list[Row]]:
        totals = self.conn.execute(
            """
            SELECT count(*) AS sessions, COALESCE(sum(new_points - current_points), 0)::bigint
                       AS delta, count(DISTINCT wallet_address) AS wallets
            FROM recompute_changes
            """
        ).fetchone()
        assert totals is not None
        biggest = self.conn.execute(
            """
            SELECT wallet_address, sum(new_points - current_points)::bigint AS delta
            FROM recompute_changes GROUP BY wallet_address
            ORDER BY abs(sum(new_points - current_points)) DESC, wallet_address LIMIT %s
            """,
            (sample,),
        ).fetchall()
        return totals, biggest

    def apply_changes(self, rule_version: str, tiers: list[tuple[int, str]]) -> int:
        """Adjustments as new ledger entries (history stays), then totals and tiers, set-based.
        One entry per session and rule version, so a repeat adds nothing."""
        minimums = [m for m, _ in tiers]
        names = [n for _, n in tiers]
        row = self.conn.execute(
            """
            WITH added AS (
                INSERT INTO points_ledger
                    (wallet_address, points, source_kind, source_id, rule_version, metadata)
                SELECT wallet_address, new_points - current_points, 'rule_adjustment',
                       session_id::text || '@' || %(version)s, %(version)s,
                       jsonb_build_object('session_id', session_id::text,
                                          'previous', current_points, 'new', new_points)
                FROM recompute_changes ORDER BY session_id
                ON CONFLICT ON CONSTRAINT uq_points_ledger_source DO NOTHING
                RETURNING wallet_address, points
            ), per_user AS (
                SELECT wallet_address, sum(points)::bigint AS delta FROM added GROUP BY 1
            ), updated AS (
                UPDATE users u
                SET total_points = u.total_points + p.delta, updated_at = now(),
                    points_updated_at = now(),
                    tier = (SELECT t.name FROM unnest(%(mins)s::bigint[], %(names)s::text[])
                                AS t(minimum, name)
                            WHERE t.minimum <= u.total_points + p.delta
                            ORDER BY t.minimum DESC LIMIT 1)
                FROM per_user p WHERE u.wallet_address = p.wallet_address
                RETURNING 1
            )
            SELECT count(*) AS n FROM added
            """,
            {"version": rule_version, "mins": minimums, "names": names},
        ).fetchone()
        return int(row["n"]) if row else 0
