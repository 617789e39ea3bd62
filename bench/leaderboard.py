"""Leaderboard reads at scale: pages and ranks with a million users on the board.

Users are inserted directly with SQL (awarding a million users through the sweep would take
hours and measure the sweep again), with one ledger entry each: the ledger trigger then builds
the all-time board and its score histogram exactly as awards do. Points follow a long-tailed
distribution, so most users sit at low scores in large tie groups, as on a real incentive board.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from bench.db import PlanTiming
from bench.stats import Summary, log, time_calls

Conn = psycopg.Connection[dict[str, Any]]

# total_points = floor(exp(random() * SPREAD)): 1 .. ~163k points, median ~400, ~6% of users
# on exactly 1 point.
SPREAD = 12
WALL_RUNS = 20
SEED_SOURCE = "bench_seed"  # source_kind of the ledger entries the bench inserts

# The rank as a count over the board: what a histogram replaces, measured as the baseline.
COUNT_RANK_SQL = "SELECT count(*) AS n FROM users WHERE total_points > %s"


@dataclass(frozen=True)
class Repetitions:
    top_page: int
    deep_page: int
    profile: int
    bottom_profile: int


FULL_REPS = Repetitions(top_page=1000, deep_page=500, profile=500, bottom_profile=200)
QUICK_REPS = Repetitions(top_page=100, deep_page=50, profile=100, bottom_profile=30)


@dataclass(frozen=True)
class Position:
    """A user picked at a given place on the board, with the size of their tie group."""

    label: str
    row: int  # place on the board, ties broken by wallet as the pages do
    rank: int  # competition rank: shared by the whole tie group
    wallet: str
    points: int
    tied: int


@dataclass(frozen=True)
class RankProbe:
    """One user's rank two ways: the service's histogram query and a count over the board."""

    position: Position
    service: PlanTiming
    service_wall_ms: float
    count: PlanTiming
    count_wall_ms: float


@dataclass
class LeaderboardReport:
    users: int
    seed_seconds: float
    distinct_scores: int
    latencies: dict[str, Summary]
    probes: list[RankProbe]
    page_plans: dict[str, PlanTiming]


def insert_users(conn: Conn, count: int) -> None:
    """Bulk-insert `count` users with long-tailed points and the tier those points give,
    then credit each with one ledger entry so the trigger puts them on the board."""
    from tally.points.tiers import TIERS

    conn.execute(
        """
        INSERT INTO users (wallet_address, total_points, total_submissions, tier)
        SELECT '0x' || md5('bench-user:' || g) || left(md5('bench-user2:' || g), 8),
               points,
               greatest(1, points / 300)::int,
               (SELECT t.name FROM unnest(%(mins)s::bigint[], %(names)s::text[]) AS t(min, name)
                WHERE points >= t.min ORDER BY t.min DESC LIMIT 1)
        FROM (
            SELECT g, floor(exp(random() * %(spread)s))::bigint AS points
            FROM generate_series(1, %(count)s) AS g
        ) AS s
        """,
        {
            "count": count,
            "spread": SPREAD,
            "mins": [minimum for minimum, _ in TIERS],
            "names": [name for _, name in TIERS],
        },
    )
    # One statement, so the statement-level trigger applies all of them as one set.
    conn.execute(
        """
        INSERT INTO points_ledger (wallet_address, points, source_kind, source_id, rule_version)
        SELECT wallet_address, total_points, %s, wallet_address, 'bench' FROM users
        """,
        (SEED_SOURCE,),
    )
    # VACUUM as well as ANALYZE: it sets the visibility map, as autovacuum soon would on a
    # live board, so index-only scans are measured in their steady state, not a fresh load's.
    conn.execute(
        "VACUUM (ANALYZE) users, points_ledger, board_scores, board_score_counts, "
        "board_bucket_counts"
    )


def position_at(conn: Conn, label: str, row_number: int) -> Position:
    """The user at row `row_number` of the all-time board (1-based), and who shares the score."""
    row = conn.execute(
        "SELECT wallet_address, points FROM board_scores WHERE board = 'all' "
        "ORDER BY points DESC, wallet_address OFFSET %s LIMIT 1",
        (row_number - 1,),
    ).fetchone()
    assert row is not None
    points = int(row["points"])
    above = conn.execute(
        "SELECT count(*) AS n FROM board_scores WHERE board = 'all' AND points > %s", (points,)
    )
    tied = conn.execute(
        "SELECT count(*) AS n FROM board_scores WHERE board = 'all' AND points = %s", (points,)
    )
    return Position(
        label=label,
        row=row_number,
        rank=_n(above) + 1,
        wallet=row["wallet_address"],
        points=points,
        tied=_n(tied),
    )


def _n(cursor: Any) -> int:
    row = cursor.fetchone()
    assert row is not None
    return int(row["n"])


def probe_rank(conn: Conn, position: Position) -> RankProbe:
    """The rank query rank_of sends for this user, next to the count it replaces."""
    from bench.db import plan_timing, repository_sql
    from tally.leaderboards.boards import ALL_TIME, Tiebreak
    from tally.leaderboards.repository import LeaderboardRepository

    service_sql = repository_sql(
        LeaderboardRepository,
        lambda repo: repo.rank_and_ties(ALL_TIME, Tiebreak.NONE, position.points, None),
    )
    count_sql = (COUNT_RANK_SQL, (position.points,))
    return RankProbe(
        position,
        service=plan_timing(conn, *service_sql),
        service_wall_ms=wall_ms(conn, *service_sql),
        count=plan_timing(conn, *count_sql),
        count_wall_ms=wall_ms(conn, *count_sql),
    )


def wall_ms(conn: Conn, sql: str, params: Any) -> float:
    """Median wall time of the bare statement from Python: no EXPLAIN, no service around it."""
    timings = []
    for _ in range(WALL_RUNS):
        started = time.perf_counter()
        conn.execute(sql, params).fetchall()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


def page_plans(conn: Conn, deep: Position) -> dict[str, PlanTiming]:
    """The page query itself, top and deep, as the service sends it."""
    from bench.db import plan_timing, repository_sql
    from tally.leaderboards.boards import ALL_TIME, Tiebreak
    from tally.leaderboards.repository import LeaderboardRepository

    top = repository_sql(
        LeaderboardRepository, lambda repo: repo.page(ALL_TIME, Tiebreak.NONE, limit=101)
    )
    after = repository_sql(
        LeaderboardRepository,
        lambda repo: repo.page(
            ALL_TIME, Tiebreak.NONE, limit=101, after=(deep.points, None, deep.wallet)
        ),
    )
    return {"top page": plan_timing(conn, *top), "deep page": plan_timing(conn, *after)}


def measure_calls(
    conn: Conn, users: int, deep: Position, bottom: Position, reps: Repetitions
) -> dict[str, Summary]:
    """Wall time of the service calls the API makes, round trips and models included."""
    from tally.leaderboards.boards import Tiebreak
    from tally.leaderboards.service import encode_cursor
    from tally.points import service

    rng = random.Random(7)
    ids = rng.sample(range(1, users + 1), min(reps.profile + 10, users))
    wallets = [
        r["wallet_address"]
        for r in conn.execute(
            "SELECT wallet_address FROM users WHERE id = ANY(%s)", (ids,)
        ).fetchall()
    ]
    rng.shuffle(wallets)
    deep_cursor = encode_cursor(
        {"points": deep.points, "wallet_address": deep.wallet}, Tiebreak.NONE
    )

    calls: dict[str, tuple[Callable[[int], Any], int]] = {
        "Top 100 page: `leaderboard(100, None)`": (
            lambda _: service.leaderboard(100, None),
            reps.top_page,
        ),
        f"Deep page (cursor at row {deep.row:,}): `leaderboard(100, cursor)`": (
            lambda _: service.leaderboard(100, deep_cursor),
            reps.deep_page,
        ),
        "Rank of a random user: `user_profile(wallet)`": (
            lambda i: service.user_profile(wallets[i % len(wallets)]),
            reps.profile,
        ),
        f"Rank of a bottom user (rank {bottom.rank:,}, {bottom.tied:,} tied)": (
            lambda _: service.user_profile(bottom.wallet),
            reps.bottom_profile,
        ),
    }
    results = {}
    for name, (call, repetitions) in calls.items():
        log(f"leaderboard: {repetitions} x {name}")
        results[name] = Summary.of(time_calls(call, repetitions))
    return results


def run(database_url: str, *, users: int, reps: Repetitions) -> LeaderboardReport:
    """Fill the board, then time pages and ranks from Python and inside the database."""
    from bench.db import connect

    with connect(database_url) as conn:
        log(f"leaderboard: inserting {users:,} users and their ledger entries")
        started = time.perf_counter()
        insert_users(conn, users)
        seed_seconds = time.perf_counter() - started
        log(f"leaderboard: board built and vacuumed in {seed_seconds:.1f}s")
        distinct = _n(conn.execute("SELECT count(DISTINCT total_points) AS n FROM users"))
        positions = [
            position_at(conn, "top", min(100, users)),
            position_at(conn, "middle", max(users // 2, 1)),
            position_at(conn, "bottom", users),
        ]
        middle, bottom = positions[1], positions[2]
        latencies = measure_calls(conn, users, middle, bottom, reps)
        log("leaderboard: EXPLAIN ANALYZE of ranks and pages")
        probes = [probe_rank(conn, p) for p in positions]
        plans = page_plans(conn, middle)
    return LeaderboardReport(users, seed_seconds, distinct, latencies, probes, plans)
