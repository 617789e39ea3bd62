"""Leaderboard reads at scale: pages and ranks with a million users on the board.

Users are inserted directly with SQL (awarding a million users through the sweep would take
hours and measure the sweep again); their points follow a long-tailed distribution, so most
users sit at low scores in large tie groups, as on a real incentive board.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from bench.stats import Summary, log, time_calls

Conn = psycopg.Connection[dict[str, Any]]

# total_points = floor(exp(random() * SPREAD)): 1 .. ~163k points, median ~400, ~6% of users
# on exactly 1 point.
SPREAD = 12
EXPLAIN_RUNS = 5

# The service's keyset page with the redundant bound `total_points <= p` added, which lets the
# scan start at the cursor. Measured next to the service's query to show what the bound buys.
BOUNDED_PAGE_SQL = """
    SELECT wallet_address, total_points, tier, total_submissions FROM users
    WHERE total_points <= %(p)s
      AND (total_points < %(p)s OR (total_points = %(p)s AND wallet_address > %(w)s))
    ORDER BY total_points DESC, wallet_address
    LIMIT 101
"""


@dataclass(frozen=True)
class Repetitions:
    top_page: int
    deep_page: int
    profile: int
    bottom_profile: int


FULL_REPS = Repetitions(top_page=1000, deep_page=200, profile=500, bottom_profile=200)
QUICK_REPS = Repetitions(top_page=100, deep_page=30, profile=100, bottom_profile=30)


@dataclass(frozen=True)
class Position:
    """A user picked at a given rank, with the size of their tie group."""

    label: str
    row: int  # place on the board, ties broken by wallet as the pages do
    rank: int  # competition rank: shared by the whole tie group
    wallet: str
    points: int
    tied: int


@dataclass(frozen=True)
class PlanTiming:
    """What EXPLAIN (ANALYZE, BUFFERS) says about one query: the database's side of a call."""

    execution_ms: float
    buffers: int
    plan: str
    rows_scanned: int


@dataclass(frozen=True)
class RankProbe:
    position: Position
    above: PlanTiming
    equal: PlanTiming


@dataclass
class LeaderboardReport:
    users: int
    seed_seconds: float
    distinct_scores: int
    latencies: dict[str, Summary]
    probes: list[RankProbe]
    page_plans: dict[str, PlanTiming]


def insert_users(conn: Conn, count: int) -> None:
    """Bulk-insert `count` users with long-tailed points and the tier those points give."""
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
    # VACUUM as well as ANALYZE: it sets the visibility map, as autovacuum soon would on a
    # live board, so index-only scans are measured in their steady state, not a fresh load's.
    conn.execute("VACUUM (ANALYZE) users")


def position_at(conn: Conn, label: str, row_number: int) -> Position:
    """The user at row `row_number` of the board (1-based), and how many share their score."""
    row = conn.execute(
        "SELECT wallet_address, total_points FROM users "
        "ORDER BY total_points DESC, wallet_address OFFSET %s LIMIT 1",
        (row_number - 1,),
    ).fetchone()
    assert row is not None
    points = int(row["total_points"])
    tied = conn.execute("SELECT count(*) AS n FROM users WHERE total_points = %s", (points,))
    above = conn.execute("SELECT count(*) AS n FROM users WHERE total_points > %s", (points,))
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


def plan_timing(conn: Conn, sql: str, params: Any) -> PlanTiming:
    """Median execution time over a few EXPLAIN ANALYZE runs, and the plan's shape."""
    from bench.db import explain

    runs = [explain(conn, sql, params) for _ in range(EXPLAIN_RUNS)]
    plan = runs[-1]["Plan"]
    return PlanTiming(
        execution_ms=statistics.median(r["Execution Time"] for r in runs),
        buffers=int(plan.get("Shared Hit Blocks", 0)) + int(plan.get("Shared Read Blocks", 0)),
        plan=_describe(plan),
        rows_scanned=_leaf_rows(plan),
    )


def _describe(plan: dict[str, Any]) -> str:
    """'Aggregate > Index Only Scan (idx_users_total_points)': the chain of plan nodes."""
    parts = []
    node: dict[str, Any] | None = plan
    while node is not None:
        name = node["Node Type"]
        if "Index Name" in node:
            name += f" ({node['Index Name']})"
        parts.append(name)
        children = node.get("Plans") or []
        node = children[0] if children else None
    return " > ".join(parts)


def _leaf_rows(plan: dict[str, Any]) -> int:
    """Rows the innermost scan produced plus those its filter threw away, i.e. rows read."""
    node = plan
    while node.get("Plans"):
        node = node["Plans"][0]
    loops = int(node.get("Actual Loops", 1))
    produced = float(node.get("Actual Rows", 0)) * loops
    removed = float(node.get("Rows Removed by Filter", 0)) * loops
    return round(produced + removed)


def probe_rank(conn: Conn, position: Position) -> RankProbe:
    """The database time of the two counts user_rank runs for this user."""
    from bench.db import repository_sql

    above = repository_sql(lambda repo: repo.count_above(position.points))
    equal = repository_sql(lambda repo: repo.count_equal(position.points))
    return RankProbe(position, plan_timing(conn, *above), plan_timing(conn, *equal))


def page_plans(conn: Conn, deep: Position) -> dict[str, PlanTiming]:
    """The page queries themselves, top and deep, as the service sends them."""
    from bench.db import repository_sql

    top = repository_sql(
        lambda repo: repo.leaderboard_page(limit=101, after_points=None, after_wallet=None)
    )
    after = repository_sql(
        lambda repo: repo.leaderboard_page(
            limit=101, after_points=deep.points, after_wallet=deep.wallet
        )
    )
    return {
        "top page": plan_timing(conn, *top),
        "deep page": plan_timing(conn, *after),
        "deep page, bounded (not in the service)": plan_timing(
            conn, BOUNDED_PAGE_SQL, {"p": deep.points, "w": deep.wallet}
        ),
    }


def measure_calls(
    conn: Conn, users: int, deep: Position, bottom: Position, reps: Repetitions
) -> dict[str, Summary]:
    """Wall time of the service calls the API makes, round trips and models included."""
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
    deep_cursor = service.encode_cursor(deep.points, deep.wallet)

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
        log(f"leaderboard: inserting {users:,} users")
        started = time.perf_counter()
        insert_users(conn, users)
        seed_seconds = time.perf_counter() - started
        log(f"leaderboard: inserted and vacuumed in {seed_seconds:.1f}s")
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
