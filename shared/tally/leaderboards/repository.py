"""SQL of the leaderboards. Boards live in board_scores; ranks come from the score histogram."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from tally.leaderboards.boards import ALL_TIME, Tiebreak, WeekSpan, season_board, week_board

Row = dict[str, Any]


@dataclass(frozen=True)
class Ordering:
    """SQL fragments of one board ordering; `key` is the secondary column, if any.

    `after` and `before` are lists of branches, each a condition the index can bound on its
    own (a tie group, then the scores beyond it): OR-ing them would leave everything but the
    points column to a filter, and a big tie group would be walked row by row.
    """

    key: str | None
    order: str
    reverse: str
    after: tuple[str, ...]  # rows after the position (points, key, wallet)
    before: tuple[str, ...]  # rows before it
    better: str | None  # same points, strictly better secondary key
    same: str | None  # same points, same secondary key


ORDERINGS: dict[Tiebreak, Ordering] = {
    Tiebreak.NONE: Ordering(
        key=None,
        order="b.points DESC, b.wallet_address",
        reverse="b.points ASC, b.wallet_address DESC",
        after=("b.points = %(p)s AND b.wallet_address > %(w)s", "b.points < %(p)s"),
        before=("b.points = %(p)s AND b.wallet_address < %(w)s", "b.points > %(p)s"),
        better=None,
        same=None,
    ),
    Tiebreak.EARLIEST: Ordering(
        key="reached_at",
        order="b.points DESC, b.reached_at, b.wallet_address",
        reverse="b.points ASC, b.reached_at DESC, b.wallet_address DESC",
        after=(
            "b.points = %(p)s AND (b.reached_at, b.wallet_address) > (%(k)s, %(w)s)",
            "b.points < %(p)s",
        ),
        before=(
            "b.points = %(p)s AND (b.reached_at, b.wallet_address) < (%(k)s, %(w)s)",
            "b.points > %(p)s",
        ),
        better="b.reached_at < %(k)s",
        same="b.reached_at = %(k)s",
    ),
    Tiebreak.SUBMISSIONS: Ordering(
        key="submissions",
        order="b.points DESC, b.submissions DESC, b.wallet_address",
        reverse="b.points ASC, b.submissions ASC, b.wallet_address DESC",
        after=(
            "b.points = %(p)s AND b.submissions = %(k)s AND b.wallet_address > %(w)s",
            "b.points = %(p)s AND b.submissions < %(k)s",
            "b.points < %(p)s",
        ),
        before=(
            "b.points = %(p)s AND b.submissions = %(k)s AND b.wallet_address < %(w)s",
            "b.points = %(p)s AND b.submissions > %(k)s",
            "b.points > %(p)s",
        ),
        better="b.submissions > %(k)s",
        same="b.submissions = %(k)s",
    ),
}

_ENTRY_COLUMNS = (
    "b.wallet_address, b.points, b.submissions, b.reached_at, "
    "COALESCE(u.tier, 'Contributor') AS tier"
)


class LeaderboardRepository:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    # -- ranks -------------------------------------------------------------------------------

    def rank_and_ties(
        self, board: str, tiebreak: Tiebreak, points: int, key: Any
    ) -> tuple[int, int]:
        """(competition rank, users sharing the position) of a score on a board, exact."""
        ordering = ORDERINGS[tiebreak]
        if ordering.better is None:
            row = self.conn.execute(
                """
                SELECT board_rank(%(b)s, %(p)s) AS rank,
                       COALESCE((SELECT users FROM board_score_counts
                                 WHERE board = %(b)s AND points = %(p)s), 0) AS ties
                """,
                {"b": board, "p": points},
            ).fetchone()
        else:
            row = self.conn.execute(
                f"""
                SELECT board_rank(%(b)s, %(p)s)
                       + (SELECT count(*) FROM board_scores b
                          WHERE b.board = %(b)s AND b.points = %(p)s AND {ordering.better}) AS rank,
                       (SELECT count(*) FROM board_scores b
                        WHERE b.board = %(b)s AND b.points = %(p)s AND {ordering.same}) AS ties
                """,
                {"b": board, "p": points, "k": key},
            ).fetchone()
        assert row is not None
        return int(row["rank"]), int(row["ties"])

    def version(self) -> int:
        """Changes whenever any board changes: the newest ledger entry."""
        row = self.conn.execute("SELECT COALESCE(max(id), 0) AS v FROM points_ledger").fetchone()
        return int(row["v"]) if row else 0

    # -- rows --------------------------------------------------------------------------------

    def entry(self, board: str, wallet: str) -> Row | None:
        return self.conn.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM board_scores b "
            "LEFT JOIN users u USING (wallet_address) "
            "WHERE b.board = %s AND b.wallet_address = %s",
            (board, wallet),
        ).fetchone()

    def page(
        self,
        board: str,
        tiebreak: Tiebreak,
        *,
        limit: int,
        after: tuple[int, Any, str] | None = None,
        before: tuple[int, Any, str] | None = None,
    ) -> list[Row]:
        """Rows in board order after a position (or, reversed, the ones just before it)."""
        ordering = ORDERINGS[tiebreak]
        params: dict[str, Any] = {"board": board, "limit": limit}
        select = (
            f"SELECT {_ENTRY_COLUMNS} FROM board_scores b "
            "LEFT JOIN users u USING (wallet_address) WHERE b.board = %(board)s"
        )
        position = after or before
        if position is None:
            query = f"{select} ORDER BY {ordering.order} LIMIT %(limit)s"
        else:
            params.update(p=position[0], k=position[1], w=position[2])
            order = ordering.order if after else ordering.reverse
            branches = ordering.after if after else ordering.before
            union = " UNION ALL ".join(
                f"({select} AND {branch} ORDER BY {order} LIMIT %(limit)s)" for branch in branches
            )
            query = f"SELECT * FROM ({union}) AS b ORDER BY {order} LIMIT %(limit)s"
        rows = self.conn.execute(query, params).fetchall()
        return rows[::-1] if before else rows

    def stream(self, board: str, tiebreak: Tiebreak, batch: int = 5000) -> Iterator[Row]:
        """The whole board in order with ranks, through a server-side cursor."""
        ordering = ORDERINGS[tiebreak]
        rank_order = "b.points DESC" + (
            f", b.{ordering.key}{' DESC' if tiebreak is Tiebreak.SUBMISSIONS else ''}"
            if ordering.key
            else ""
        )
        query = (
            f"SELECT rank() OVER (ORDER BY {rank_order}) AS rank, "
            f"count(*) OVER (PARTITION BY b.points"
            f"{', b.' + ordering.key if ordering.key else ''}) > 1 AS is_tied, "
            f"{_ENTRY_COLUMNS} FROM board_scores b LEFT JOIN users u USING (wallet_address) "
            f"WHERE b.board = %s ORDER BY {ordering.order}"
        )
        with self.conn.transaction(), self.conn.cursor(name="board_export") as cursor:
            cursor.itersize = batch
            cursor.execute(query, (board,))
            yield from cursor

    # -- seasons and periods -----------------------------------------------------------------

    def seasons(self) -> list[Row]:
        return self.conn.execute(
            """
            SELECT s.*, (SELECT count(*) FROM leaderboard_periods p
                         WHERE p.season_id = s.id AND p.kind = 'week') AS weeks
            FROM seasons s ORDER BY s.starts_at, s.slug
            """
        ).fetchall()

    def season(self, slug: str, *, lock: bool = False) -> Row | None:
        return self.conn.execute(
            """
            SELECT s.*, (SELECT count(*) FROM leaderboard_periods p
                         WHERE p.season_id = s.id AND p.kind = 'week') AS weeks
            FROM seasons s WHERE s.slug = %s
            """
            + (" FOR UPDATE OF s" if lock else ""),
            (slug,),
        ).fetchone()

    def period(self, board: str) -> Row | None:
        return self.conn.execute(
            "SELECT * FROM leaderboard_periods WHERE board = %s", (board,)
        ).fetchone()

    def insert_season(
        self, slug: str, name: str, starts_at: datetime, ends_at: datetime
    ) -> Row | None:
        return self.conn.execute(
            """
            INSERT INTO seasons (slug, name, starts_at, ends_at) VALUES (%s, %s, %s, %s)
            ON CONFLICT (slug) DO NOTHING RETURNING *
            """,
            (slug, name, starts_at, ends_at),
        ).fetchone()

    def update_season(
        self, season_id: int, name: str, starts_at: datetime, ends_at: datetime
    ) -> None:
        self.conn.execute(
            "UPDATE seasons SET name = %s, starts_at = %s, ends_at = %s, updated_at = now() "
            "WHERE id = %s",
            (name, starts_at, ends_at, season_id),
        )

    def lock_ledger_for_rebuild(self) -> None:
        """Wait for in-flight awards and hold new ones until this transaction commits, so a
        rebuilt board misses no ledger entry."""
        self.conn.execute("LOCK TABLE points_ledger IN SHARE MODE")

    def replace_periods(
        self,
        season_id: int,
        slug: str,
        starts_at: datetime,
        ends_at: datetime,
        weeks: list[WeekSpan],
    ) -> list[str]:
        """Recreate a season's periods and rebuild their boards from the ledger."""
        old = [
            r["board"]
            for r in self.conn.execute(
                "DELETE FROM leaderboard_periods WHERE season_id = %s RETURNING board",
                (season_id,),
            ).fetchall()
        ]
        boards = [season_board(slug)] + [week_board(slug, w.number) for w in weeks]
        self._clear_boards(sorted(set(old) | set(boards)))
        with self.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO leaderboard_periods (board, kind, season_id, week_number, "
                "starts_at, ends_at) VALUES (%s, %s, %s, %s, %s, %s)",
                [(season_board(slug), "season", season_id, None, starts_at, ends_at)]
                + [
                    (
                        week_board(slug, w.number),
                        "week",
                        season_id,
                        w.number,
                        w.starts_at,
                        w.ends_at,
                    )
                    for w in weeks
                ],
            )
        self._rebuild(boards)
        return boards

    def reshape_open_periods(
        self, season_id: int, slug: str, ends_at: datetime, weeks: list[WeekSpan]
    ) -> None:
        """A started season's new end: drop or add future weeks, move the open ones' ends.
        Closed weeks and everything already counted stay as they are."""
        self.conn.execute(
            "UPDATE leaderboard_periods SET ends_at = %s WHERE season_id = %s AND kind = 'season'",
            (ends_at, season_id),
        )
        dropped = [
            r["board"]
            for r in self.conn.execute(
                "DELETE FROM leaderboard_periods WHERE season_id = %s AND kind = 'week' "
                "AND week_number > %s AND closed_at IS NULL RETURNING board",
                (season_id, len(weeks)),
            ).fetchall()
        ]
        if dropped:
            self._clear_boards(dropped)
        with self.conn.cursor() as cur:
            cur.executemany(
                """
                INSERT INTO leaderboard_periods
                    (board, kind, season_id, week_number, starts_at, ends_at)
                VALUES (%s, 'week', %s, %s, %s, %s)
                ON CONFLICT (board) DO UPDATE SET ends_at = EXCLUDED.ends_at
                WHERE leaderboard_periods.closed_at IS NULL
                """,
                [
                    (week_board(slug, w.number), season_id, w.number, w.starts_at, w.ends_at)
                    for w in weeks
                ],
            )

    def _clear_boards(self, boards: list[str]) -> None:
        for table in ("board_scores", "board_score_counts", "board_bucket_counts"):
            self.conn.execute(
                sql.SQL("DELETE FROM {} WHERE board = ANY(%s)").format(sql.Identifier(table)),
                (boards,),
            )

    def _rebuild(self, boards: list[str]) -> None:
        """Boards from the ledger, set-based: scores, then both histogram levels."""
        self.conn.execute(
            """
            INSERT INTO board_scores (board, wallet_address, points, submissions, reached_at)
            SELECT p.board, l.wallet_address, sum(l.points)::bigint,
                   count(*) FILTER (WHERE l.source_kind = 'dataset_submission'),
                   max(l.created_at)
            FROM leaderboard_periods p
            JOIN points_ledger l ON l.created_at >= p.starts_at AND l.created_at < p.ends_at
            WHERE p.board = ANY(%s)
            GROUP BY p.board, l.wallet_address
            """,
            (boards,),
        )
        self.conn.execute(
            """
            INSERT INTO board_score_counts (board, points, users)
            SELECT board, points, count(*) FROM board_scores WHERE board = ANY(%s)
            GROUP BY board, points
            """,
            (boards,),
        )
        self.conn.execute(
            """
            INSERT INTO board_bucket_counts (board, bucket, users)
            SELECT board, points >> 10, count(*) FROM board_scores WHERE board = ANY(%s)
            GROUP BY board, points >> 10
            """,
            (boards,),
        )

    def close_due_periods(self, grace: timedelta) -> list[str]:
        rows = self.conn.execute(
            """
            UPDATE leaderboard_periods SET closed_at = now()
            WHERE closed_at IS NULL AND ends_at <= now() - %s
            RETURNING board
            """,
            (grace,),
        ).fetchall()
        self.conn.execute(
            "UPDATE seasons SET closed_at = now(), updated_at = now() "
            "WHERE closed_at IS NULL AND ends_at <= now() - %s",
            (grace,),
        )
        return sorted(r["board"] for r in rows)

    # -- user stats --------------------------------------------------------------------------

    def season_weeks_of(self, season_id: int, wallet: str) -> list[Row]:
        return self.conn.execute(
            """
            SELECT p.week_number AS week, p.starts_at AS week_start,
                   COALESCE(b.points, 0) AS points, b.points IS NOT NULL AS active
            FROM leaderboard_periods p
            LEFT JOIN board_scores b ON b.board = p.board AND b.wallet_address = %s
            WHERE p.season_id = %s AND p.kind = 'week' AND p.starts_at <= now()
            ORDER BY p.week_number
            """,
            (wallet, season_id),
        ).fetchall()

    def ledger_weeks_of(self, wallet: str) -> list[Row]:
        return self.conn.execute(
            """
            SELECT date_trunc('week', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                       AS week_start,
                   sum(points)::bigint AS points
            FROM points_ledger WHERE wallet_address = %s
            GROUP BY 1 ORDER BY 1
            """,
            (wallet,),
        ).fetchall()

    def tier_of(self, wallet: str) -> str | None:
        row = self.conn.execute(
            "SELECT tier FROM users WHERE wallet_address = %s", (wallet,)
        ).fetchone()
        return row["tier"] if row else None

    # -- jobs --------------------------------------------------------------------------------

    def try_job_lock(self, key: int) -> bool:
        row = self.conn.execute("SELECT pg_try_advisory_xact_lock(%s) AS ok", (key,)).fetchone()
        return bool(row and row["ok"])

    def write_snapshot(self, day: datetime) -> int:
        cursor = self.conn.execute(
            """
            INSERT INTO leaderboard_snapshot
                (snapshot_date, wallet_address, rank, total_points, total_submissions, tier)
            SELECT %s::date, wallet_address,
                   rank() OVER (ORDER BY total_points DESC), total_points, total_submissions, tier
            FROM users
            ON CONFLICT (snapshot_date, wallet_address) DO UPDATE
                SET rank = EXCLUDED.rank, total_points = EXCLUDED.total_points,
                    total_submissions = EXCLUDED.total_submissions, tier = EXCLUDED.tier
            """,
            (day,),
        )
        return cursor.rowcount

    def prune_empty_counts(self) -> int:
        removed = 0
        for table in ("board_score_counts", "board_bucket_counts"):
            removed += self.conn.execute(
                sql.SQL("DELETE FROM {} WHERE users = 0").format(sql.Identifier(table))
            ).rowcount
        return removed

    def write_airdrop(self, period: str, period_end: datetime, weights: dict[str, float]) -> int:
        """Eligibility per REFERENCE.md: each component normalised by its maximum across
        eligible users (anyone with points by the period's end); allocation = share of scores."""
        # A re-run replaces the period whole: nobody keeps a share they no longer qualify for.
        self.conn.execute("DELETE FROM airdrop_eligibility WHERE period = %s", (period,))
        cursor = self.conn.execute(
            """
            WITH points AS (
                SELECT wallet_address, sum(points)::float8 AS points
                FROM points_ledger WHERE created_at < %(end)s
                GROUP BY wallet_address HAVING sum(points) > 0
            ), base AS (
                SELECT p.wallet_address, p.points,
                       count(DISTINCT s.subject)::float8 AS diversity,
                       (count(s.id) FILTER (WHERE s.is_first_bulk))::float8 AS first_bulks,
                       COALESCE((count(s.id) FILTER (WHERE s.is_rare))::float8
                                / NULLIF(count(s.id), 0), 0) AS rare_focus,
                       count(DISTINCT (s.submitted_at AT TIME ZONE 'UTC')::date)::float8
                           AS consistency
                FROM points p
                LEFT JOIN user_submissions s
                       ON s.wallet_address = p.wallet_address AND s.submitted_at < %(end)s
                GROUP BY p.wallet_address, p.points
            ), scored AS (
                SELECT wallet_address,
                       %(w_points)s * COALESCE(points / NULLIF(max(points) OVER (), 0), 0)
                     + %(w_diversity)s * COALESCE(diversity / NULLIF(max(diversity) OVER (), 0), 0)
                     + %(w_bulk)s * COALESCE(first_bulks / NULLIF(max(first_bulks) OVER (), 0), 0)
                     + %(w_rare)s * COALESCE(rare_focus / NULLIF(max(rare_focus) OVER (), 0), 0)
                     + %(w_consistency)s
                       * COALESCE(consistency / NULLIF(max(consistency) OVER (), 0), 0) AS score,
                       jsonb_build_object('points', points, 'diversity', diversity,
                                          'first_bulks', first_bulks, 'rare_focus', rare_focus,
                                          'consistency', consistency) AS components
                FROM base
            )
            INSERT INTO airdrop_eligibility
                (wallet_address, period, eligibility_score, allocation_percentage, components)
            SELECT wallet_address, %(period)s, score,
                   COALESCE(score / NULLIF(sum(score) OVER (), 0) * 100, 0), components
            FROM scored
            ON CONFLICT (wallet_address, period) DO UPDATE
                SET eligibility_score = EXCLUDED.eligibility_score,
                    allocation_percentage = EXCLUDED.allocation_percentage,
                    components = EXCLUDED.components, calculated_at = now()
            """,
            {"end": period_end, "period": period, **{f"w_{k}": v for k, v in weights.items()}},
        )
        return cursor.rowcount


__all__ = ["ALL_TIME", "ORDERINGS", "LeaderboardRepository", "Ordering"]
