"""Leaderboards at 1M users and 10M ledger entries, side by side with a Redis sorted set.

The ledger is loaded with INSERT ... SELECT generate_series in large chunks, so the ledger's
statement-level trigger maintains every board (all-time, ISO week, season, season week) and their
score histograms set-based, exactly as it does for awards. A season covering the whole period is
created first, as an admin would before the awards come in. Then the same reads and writes are
timed through tally.leaderboards.service and against a private redis-server holding the same
totals in sorted sets (skipped with a note when no redis-server is installed).
"""

from __future__ import annotations

import csv
import functools
import io
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench.db import PlanTiming
from bench.stats import Summary, log, time_calls

Conn = psycopg.Connection[dict[str, Any]]

SEASON = "bench"
PERIOD_DAYS = 70  # ledger entries fall in the last 10 weeks
SEASON_DAYS_BEFORE = 71  # the season starts before the first entry and is still running
SEASON_DAYS_AFTER = 14
# Points per ledger entry: floor(exp(random() * ENTRY_SPREAD)), 1 .. ~3,000, median ~55.
ENTRY_SPREAD = 8
# After everyone's first entry, who earns: user floor(users * random()^ACTIVITY_SKEW): a few very
# active users, a long tail of occasional ones, as on a real incentive board.
ACTIVITY_SKEW = 2
LOAD_SOURCE = "bench_load"
WALLET_SQL = "'0x' || md5('bench-user:' || {g}) || left(md5('bench-user2:' || {g}), 8)"
REDIS_ALL, REDIS_SEASON, REDIS_WEEK = "lb:all", "lb:season", "lb:week"


@dataclass(frozen=True)
class Reps:
    page: int
    rank: int
    write: int
    redis: int
    awards: int


FULL_REPS = Reps(page=500, rank=1000, write=2000, redis=2000, awards=1000)
QUICK_REPS = Reps(page=100, rank=200, write=200, redis=300, awards=100)


@dataclass
class Row:
    """One operation measured on both sides."""

    name: str
    tally_call: str
    tally: Summary
    redis_call: str
    redis: Summary | None = None
    db: PlanTiming | None = None  # the main statement's database time, when there is one


@dataclass
class Load:
    users: int
    ledger: int
    ledger_target: int
    chunks: list[tuple[int, float]] = field(default_factory=list)  # (rows, seconds)
    users_seconds: float = 0.0
    season_seconds: float = 0.0
    ledger_seconds: float = 0.0
    totals_seconds: float = 0.0
    vacuum_seconds: float = 0.0
    stopped_early: bool = False


@dataclass
class Export:
    rows: int
    seconds: float
    megabytes: float
    rss_before_mb: float
    rss_peak_mb: float
    maxrss_before_mb: float
    maxrss_after_mb: float
    redis_seconds: float | None = None
    redis_megabytes: float | None = None


@dataclass
class BoardsReport:
    load: Load
    weeks: int
    week_board: str
    week_users: int
    season_week_board: str
    board_rows: dict[str, int]
    sizes: dict[str, int]
    distinct_all: int
    buckets_all: int
    max_all: int
    rows: list[Row]
    rank_sql: dict[str, PlanTiming]
    rank_points: dict[str, int]
    naive: dict[str, PlanTiming]
    trigger_ms: list[float]
    insert_ms: list[float]
    write_plan: str
    award: Summary | None
    award_rate: float | None
    export: Export
    checks: dict[str, bool]
    redis_version: str | None
    redis_note: str
    redis_load_seconds: float | None
    redis_memory: int | None
    slow_plans: dict[str, str]


# -- Redis ---------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[tuple[Any, str] | str]:
    """A private redis-server on a free local port, stopped afterwards: (client, version), or
    a note saying why there is none."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield "no `redis-server` on PATH: the Redis columns are empty"
        return
    try:
        import redis
    except ImportError:
        yield "the `redis` Python client is not installed (`pip install redis`)"
        return
    port = _free_port()
    proc = subprocess.Popen(  # noqa: S603 - the redis-server found on PATH, fixed arguments
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        version = str(client.info("server")["redis_version"])
        log(f"boards: redis-server {version} on 127.0.0.1:{port} (pid {proc.pid})")
        yield client, version
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=30)
        log("boards: redis-server stopped")


def redis_load(r: Any, key: str, rows: Iterator[tuple[str, int]], chunk: int = 10_000) -> int:
    """ZADD in pipelined chunks of `chunk` members."""
    count = 0
    batch: dict[str, int] = {}
    pipe = r.pipeline(transaction=False)
    for wallet, points in rows:
        batch[wallet] = points
        count += 1
        if len(batch) == chunk:
            pipe.zadd(key, batch)
            batch = {}
            if count % (chunk * 10) == 0:
                pipe.execute()
    if batch:
        pipe.zadd(key, batch)
    pipe.execute()
    return count


def _board_rows(conn: Conn, board: str) -> Iterator[tuple[str, int]]:
    with conn.transaction(), conn.cursor(name="redis_load") as cur:
        cur.itersize = 50_000
        cur.execute("SELECT wallet_address, points FROM board_scores WHERE board = %s", (board,))
        for row in cur:
            yield row["wallet_address"], int(row["points"])


# -- load ----------------------------------------------------------------------------------------


def insert_users(conn: Conn, users: int) -> None:
    conn.execute(
        f"INSERT INTO users (wallet_address) SELECT {WALLET_SQL.format(g='g')} "
        "FROM generate_series(1, %s) AS g",
        (users,),
    )


def create_season() -> None:
    from tally.leaderboards.models import SeasonIn
    from tally.leaderboards.service import create_season as create

    now = datetime.now(UTC).replace(microsecond=0)
    create(
        SeasonIn(
            slug=SEASON,
            name="Bench season",
            starts_at=now - timedelta(days=SEASON_DAYS_BEFORE),
            ends_at=now + timedelta(days=SEASON_DAYS_AFTER),
        )
    )


def insert_ledger_chunk(conn: Conn, first: int, last: int, users: int) -> None:
    """Ledger entries first..last in one statement: the trigger applies them as one set.

    Entry g <= users is user g's first entry (everyone is on the board); later entries go to
    skewed users. created_at is spread uniformly over the last PERIOD_DAYS.
    """
    wallet = WALLET_SQL.format(g="u")
    conn.execute(
        f"""
        INSERT INTO points_ledger
            (wallet_address, points, source_kind, source_id, rule_version, created_at)
        SELECT {wallet}, floor(exp(random() * %(spread)s))::bigint, %(source)s, g::text,
               'bench', now() - random() * %(days)s * interval '1 day'
        FROM (
            SELECT g, CASE WHEN g <= %(users)s THEN g
                           ELSE 1 + floor(%(users)s * power(random(), %(skew)s))::bigint END AS u
            FROM generate_series(%(first)s, %(last)s) AS g
        ) AS s
        """,
        {
            "spread": ENTRY_SPREAD,
            "source": LOAD_SOURCE,
            "days": PERIOD_DAYS,
            "users": users,
            "skew": ACTIVITY_SKEW,
            "first": first,
            "last": last,
        },
    )


def sync_user_totals(conn: Conn) -> None:
    """users.total_points (and tier) from the ledger, so the points routes' invariant holds."""
    from tally.points.tiers import TIERS

    conn.execute(
        """
        UPDATE users u
        SET total_points = l.points,
            tier = (SELECT t.name FROM unnest(%(mins)s::bigint[], %(names)s::text[]) AS t(min, name)
                    WHERE l.points >= t.min ORDER BY t.min DESC LIMIT 1)
        FROM (SELECT wallet_address, sum(points)::bigint AS points
              FROM points_ledger GROUP BY wallet_address) AS l
        WHERE u.wallet_address = l.wallet_address
        """,
        {"mins": [m for m, _ in TIERS], "names": [n for _, n in TIERS]},
    )


def load(conn: Conn, users: int, ledger: int, chunk: int, budget: float | None) -> Load:
    result = Load(users=users, ledger=0, ledger_target=ledger)
    started = time.perf_counter()
    insert_users(conn, users)
    result.users_seconds = time.perf_counter() - started
    log(f"boards: {users:,} users in {result.users_seconds:.1f}s")

    started = time.perf_counter()
    create_season()
    result.season_seconds = time.perf_counter() - started

    ledger_started = time.perf_counter()
    first = 1
    while first <= ledger:
        last = min(first + chunk - 1, ledger)
        started = time.perf_counter()
        insert_ledger_chunk(conn, first, last, users)
        seconds = time.perf_counter() - started
        result.chunks.append((last - first + 1, seconds))
        result.ledger = last
        log(
            f"boards: ledger {last:,}/{ledger:,}: chunk of {last - first + 1:,} in "
            f"{seconds:.1f}s ({(last - first + 1) / seconds:,.0f} rows/s)"
        )
        first = last + 1
        spent = time.perf_counter() - ledger_started
        if budget is not None and first <= ledger and spent + seconds > budget:
            result.stopped_early = True
            log(f"boards: load budget of {budget:.0f}s reached, stopping at {last:,} entries")
            break
    result.ledger_seconds = time.perf_counter() - ledger_started

    started = time.perf_counter()
    sync_user_totals(conn)
    result.totals_seconds = time.perf_counter() - started
    log(f"boards: users.total_points synced in {result.totals_seconds:.1f}s")
    started = time.perf_counter()
    conn.execute("VACUUM (ANALYZE) board_score_counts, board_bucket_counts, leaderboard_periods")
    conn.execute("ANALYZE users, points_ledger, board_scores")
    result.vacuum_seconds = time.perf_counter() - started
    return result


# -- checks --------------------------------------------------------------------------------------


def checks(conn: Conn, boards: list[str]) -> dict[str, bool]:
    def none(sql: str, params: Any = None) -> bool:
        return conn.execute(sql, params).fetchone() is None

    result = {
        "users.total_points == ledger sum, per user": none(
            """
            SELECT 1 FROM users u FULL JOIN (SELECT wallet_address, sum(points) AS p
                FROM points_ledger GROUP BY 1) l USING (wallet_address)
            WHERE u.total_points IS DISTINCT FROM COALESCE(l.p, 0) LIMIT 1
            """
        ),
        "all-time board == users.total_points, per user": none(
            """
            SELECT 1 FROM users u FULL JOIN (SELECT * FROM board_scores WHERE board = 'all') b
                USING (wallet_address)
            WHERE b.points IS DISTINCT FROM u.total_points LIMIT 1
            """
        ),
    }
    for board in boards:
        result[f"`{board}`: score and bucket histograms == board"] = none(
            """
            WITH s AS (SELECT points, count(*) AS n FROM board_scores WHERE board = %(b)s
                       GROUP BY points),
                 c AS (SELECT points, users AS n FROM board_score_counts
                       WHERE board = %(b)s AND users <> 0),
                 bs AS (SELECT points >> 10 AS bucket, sum(n) AS n FROM s GROUP BY 1),
                 bc AS (SELECT bucket, users AS n FROM board_bucket_counts
                        WHERE board = %(b)s AND users <> 0)
            SELECT 1 FROM s FULL JOIN c USING (points) WHERE s.n IS DISTINCT FROM c.n
            UNION ALL
            SELECT 1 FROM bs FULL JOIN bc USING (bucket) WHERE bs.n IS DISTINCT FROM bc.n
            LIMIT 1
            """,
            {"b": board},
        )
    return result


# -- measurements --------------------------------------------------------------------------------


def _scalar(conn: Conn, sql: str, params: Any = None) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return next(iter(row.values()))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _maxrss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _summary(call: Callable[[int], Any], reps: int) -> Summary:
    return Summary.of(time_calls(call, reps))


def measure_rank_sql(
    conn: Conn, wallets: dict[str, str]
) -> tuple[dict[str, PlanTiming], dict[str, int]]:
    """DB time of the rank statement rank_of sends, and of bare board_rank(), per position."""
    from bench.db import plan_timing, repository_sql
    from tally.leaderboards.repository import LeaderboardRepository

    plans: dict[str, PlanTiming] = {}
    points: dict[str, int] = {}
    for label, wallet in wallets.items():
        p = int(
            _scalar(
                conn,
                "SELECT points FROM board_scores WHERE board = 'all' AND wallet_address = %s",
                (wallet,),
            )
        )
        points[label] = p
        sql, params = repository_sql(
            LeaderboardRepository,
            functools.partial(_rank_call, points=p),
        )
        plans[f"{label}: `rank_and_ties` (rank + ties)"] = plan_timing(conn, sql, params)
        plans[f"{label}: `SELECT board_rank('all', p)`"] = plan_timing(
            conn, "SELECT board_rank('all', %s)", (p,)
        )
    return plans, points


def _rank_call(repo: Any, points: int) -> Any:
    from tally.leaderboards.boards import ALL_TIME, Tiebreak

    return repo.rank_and_ties(ALL_TIME, Tiebreak.NONE, points, None)


def measure_naive(conn: Conn, wallet: str, points: int) -> dict[str, PlanTiming]:
    from bench.db import plan_timing

    return {
        "`count(*)` over the board's index": plan_timing(
            conn,
            "SELECT count(*) + 1 FROM board_scores WHERE board = 'all' AND points > %s",
            (points,),
        ),
        "`count(*)` over users": plan_timing(
            conn, "SELECT count(*) + 1 FROM users WHERE total_points > %s", (points,)
        ),
        "window function `rank() OVER`": plan_timing(
            conn,
            "SELECT r FROM (SELECT wallet_address, rank() OVER (ORDER BY points DESC) AS r "
            "FROM board_scores WHERE board = 'all') s WHERE wallet_address = %s",
            (wallet,),
        ),
    }


def measure_write(
    conn: Conn, wallets: list[str], reps: int
) -> tuple[Summary, list[float], list[float], str]:
    """One ledger entry through the trigger per transaction (committed), as an award writes it;
    then EXPLAIN ANALYZE of the same insert (rolled back) for the trigger's own time."""
    sql = (
        "INSERT INTO points_ledger (wallet_address, points, source_kind, source_id, rule_version) "
        "VALUES (%s, %s, 'bench_write', %s, 'bench')"
    )
    rng = random.Random(11)
    counter = iter(range(10**9))

    def one(_: int) -> None:
        wallet, points = rng.choice(wallets), rng.randint(1, 300)
        with conn.transaction():
            conn.execute(sql, (wallet, points, str(next(counter))))
            conn.execute(
                "UPDATE users SET total_points = total_points + %s WHERE wallet_address = %s",
                (points, wallet),
            )

    summary = _summary(one, reps)
    trigger, total = [], []
    for i in range(20):
        with conn.transaction():
            row = conn.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + sql,
                (rng.choice(wallets), rng.randint(1, 300), f"x{i}"),
            ).fetchone()
            assert row is not None
            doc = next(iter(row.values()))[0]
            for t in doc.get("Triggers", []):
                if t["Trigger Name"] == "trg_points_ledger_boards":
                    trigger.append(float(t["Time"]))
            total.append(float(doc["Execution Time"]))
            raise psycopg.Rollback()
    with conn.transaction():
        text_rows = conn.execute(
            "EXPLAIN (ANALYZE, COSTS OFF) " + sql, (wallets[0], 1, "y")
        ).fetchall()
        plan = "\n".join(str(next(iter(r.values()))) for r in text_rows)
        raise psycopg.Rollback()
    return summary, trigger, total, plan


def measure_awards(conn: Conn, count: int) -> tuple[Summary, float]:
    """The whole award path (claim, score, ledger entry, user total, boards) for `count`
    queued sessions, through tally.points.service.award_pending."""
    from bench import award

    award.insert_pending(conn, count, max(count // 2, 1), "boards")
    run = award.sequential_sweep(count, 100)
    return run.per_award, run.rate


def measure_export(conn: Conn, r: Any | None) -> Export:
    from tally.leaderboards.service import export_rows

    rss_before = _rss_mb()
    maxrss_before = _maxrss_mb()
    peak = rss_before
    started = time.perf_counter()
    stream, _ = export_rows(SEASON, None, "csv")
    size = 0
    for chunks, chunk in enumerate(stream, 1):
        size += len(chunk)
        if chunks % 50 == 0:
            peak = max(peak, _rss_mb())
    seconds = time.perf_counter() - started
    peak = max(peak, _rss_mb())
    rows = int(
        _scalar(conn, "SELECT count(*) FROM board_scores WHERE board = %s", (f"season:{SEASON}",))
    )
    result = Export(
        rows=rows,
        seconds=seconds,
        megabytes=size / 2**20,
        rss_before_mb=rss_before,
        rss_peak_mb=peak,
        maxrss_before_mb=maxrss_before,
        maxrss_after_mb=_maxrss_mb(),
    )
    if r is not None:
        started = time.perf_counter()
        result.redis_megabytes = redis_export(r, REDIS_SEASON) / 2**20
        result.redis_seconds = time.perf_counter() - started
    return result


def redis_export(r: Any, key: str, chunk: int = 10_000) -> int:
    """The sorted set as CSV with competition ranks, ZREVRANGE in chunks of `chunk`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["rank", "is_tied", "wallet_address", "points"])
    size = 0
    start = 0
    rank = 0
    previous: float | None = None
    while True:
        rows = r.zrevrange(key, start, start + chunk - 1, withscores=True)
        if not rows:
            break
        for index, (member, score) in enumerate(rows, start + 1):
            if score != previous:
                rank, previous = index, score
            writer.writerow([rank, "", member.decode(), int(score)])
        size += len(buffer.getvalue().encode())
        buffer.seek(0)
        buffer.truncate()
        start += chunk
    return size


def run(
    database_url: str,
    *,
    users: int,
    ledger: int,
    chunk: int,
    reps: Reps,
    budget: float | None,
) -> BoardsReport:
    from bench.db import connect, explain_text, plan_timing, repository_sql
    from tally.leaderboards import service
    from tally.leaderboards.boards import Tiebreak
    from tally.leaderboards.repository import LeaderboardRepository

    with redis_server() as redis_state, connect(database_url) as conn:
        r: Any = None
        redis_version: str | None = None
        if not isinstance(redis_state, str):
            r, redis_version = redis_state
        redis_note = redis_state if isinstance(redis_state, str) else ""

        log(f"boards: loading {users:,} users and {ledger:,} ledger entries")
        loaded = load(conn, users, ledger, chunk, budget)

        season_board = f"season:{SEASON}"
        week = conn.execute(
            "SELECT board, sum(users)::bigint AS n FROM board_bucket_counts "
            "WHERE board LIKE 'week:%%' GROUP BY board ORDER BY n DESC, board DESC LIMIT 1"
        ).fetchone()
        assert week is not None
        week_board, week_users = week["board"], int(week["n"])
        iso_year, iso_week = int(week_board[5:9]), int(week_board[11:13])
        monday = datetime.fromisocalendar(iso_year, iso_week, 1).replace(tzinfo=UTC)
        season_week = int(
            _scalar(
                conn,
                "SELECT week_number FROM leaderboard_periods WHERE kind = 'week' "
                "AND starts_at <= %s AND ends_at > %s",
                (monday, monday),
            )
        )
        season_week_board = f"season:{SEASON}:w{season_week}"
        weeks = int(_scalar(conn, "SELECT count(*) FROM leaderboard_periods WHERE kind = 'week'"))
        board_rows = {
            row["board"]: int(row["n"])
            for row in conn.execute(
                "SELECT board, sum(users)::bigint AS n FROM board_bucket_counts "
                "GROUP BY board ORDER BY board"
            ).fetchall()
        }
        sizes = {
            name: int(_scalar(conn, "SELECT pg_total_relation_size(%s)", (name,)))
            for name in (
                "points_ledger",
                "board_scores",
                "board_score_counts",
                "board_bucket_counts",
            )
        }
        distinct_all = int(
            _scalar(conn, "SELECT count(*) FROM board_score_counts WHERE board = 'all'")
        )
        buckets_all = int(
            _scalar(conn, "SELECT count(*) FROM board_bucket_counts WHERE board = 'all'")
        )
        max_all = int(
            _scalar(conn, "SELECT max(points) FROM board_score_counts WHERE board = 'all'")
        )

        redis_load_seconds = None
        redis_memory = None
        if r is not None:
            started = time.perf_counter()
            n = redis_load(r, REDIS_ALL, _board_rows(conn, "all"))
            redis_load(r, REDIS_SEASON, _board_rows(conn, season_board))
            redis_load(r, REDIS_WEEK, _board_rows(conn, week_board))
            redis_load_seconds = time.perf_counter() - started
            redis_memory = int(r.info("memory")["used_memory"])
            log(f"boards: redis loaded ({n:,} all-time members) in {redis_load_seconds:.1f}s")

        # Who to ask about: random users, and the user at the middle of the board.
        rng = random.Random(7)
        ids = rng.sample(range(1, users + 1), min(reps.rank + 10, users))
        wallets = [
            row["wallet_address"]
            for row in conn.execute(
                "SELECT wallet_address FROM users WHERE id = ANY(%s)", (ids,)
            ).fetchall()
        ]
        rng.shuffle(wallets)
        middle_row = max(users // 2, 1)
        middle = conn.execute(
            "SELECT wallet_address, points FROM board_scores WHERE board = 'all' "
            "ORDER BY points DESC, wallet_address OFFSET %s LIMIT 1",
            (middle_row - 1,),
        ).fetchone()
        top = conn.execute(
            "SELECT wallet_address FROM board_scores WHERE board = 'all' "
            "ORDER BY points DESC, wallet_address OFFSET 99 LIMIT 1"
        ).fetchone()
        bottom = conn.execute(
            "SELECT wallet_address FROM board_scores WHERE board = 'all' "
            "ORDER BY points, wallet_address DESC LIMIT 1"
        ).fetchone()
        assert middle and top and bottom
        deep_cursor = service.encode_cursor(
            {"points": middle["points"], "wallet_address": middle["wallet_address"]},
            Tiebreak.NONE,
        )

        rows: list[Row] = []

        def pick(i: int) -> str:
            return wallets[i % len(wallets)]

        def add(
            name: str,
            tally_call: str,
            call: Callable[[int], Any],
            n: int,
            redis_call: str,
            redis_fn: Callable[[int], Any] | None,
            db: PlanTiming | None = None,
        ) -> None:
            log(f"boards: {name}")
            tally = _summary(call, n)
            rs = _summary(redis_fn, reps.redis) if (r is not None and redis_fn) else None
            rows.append(Row(name, tally_call, tally, redis_call, rs, db))

        def plan_of(call: Callable[[Any], Any]) -> PlanTiming:
            return plan_timing(conn, *repository_sql(LeaderboardRepository, call))

        add(
            "Top 100, all-time",
            "`board_page(limit=100)`",
            lambda _: service.board_page(limit=100),
            reps.page,
            "`ZREVRANGE 0 99 WITHSCORES`",
            (lambda _: r.zrevrange(REDIS_ALL, 0, 99, withscores=True)) if r else None,
            plan_of(lambda repo: repo.page("all", Tiebreak.NONE, limit=101)),
        )
        add(
            f"Deep page at row {middle_row:,}",
            "`board_page(limit=100, cursor=...)`",
            lambda _: service.board_page(limit=100, cursor=deep_cursor),
            reps.page,
            f"`ZREVRANGE {middle_row - 1} {middle_row + 98} WITHSCORES`",
            (lambda _: r.zrevrange(REDIS_ALL, middle_row - 1, middle_row + 98, withscores=True))
            if r
            else None,
            plan_of(
                lambda repo: repo.page(
                    "all",
                    Tiebreak.NONE,
                    limit=101,
                    after=(int(middle["points"]), None, middle["wallet_address"]),
                )
            ),
        )

        def redis_rank(i: int) -> Any:
            pipe = r.pipeline(transaction=False)
            pipe.zrevrank(REDIS_ALL, pick(i))
            pipe.zscore(REDIS_ALL, pick(i))
            return pipe.execute()

        rank_plans, rank_points = measure_rank_sql(
            conn,
            {
                "row 100": top["wallet_address"],
                f"row {middle_row:,}": middle["wallet_address"],
                "last row": bottom["wallet_address"],
            },
        )
        add(
            "A random user's rank",
            "`rank_of(wallet)`",
            lambda i: service.rank_of(pick(i)),
            reps.rank,
            "`ZREVRANK` + `ZSCORE` (one pipelined round trip)",
            redis_rank if r else None,
            rank_plans[f"row {middle_row:,}: `rank_and_ties` (rank + ties)"],
        )

        def redis_around(i: int) -> Any:
            rank = r.zrevrank(REDIS_ALL, pick(i))
            return r.zrevrange(REDIS_ALL, max(rank - 5, 0), rank + 5, withscores=True)

        add(
            "Around me (5 above, 5 below)",
            "`around(wallet, size=5)`",
            lambda i: service.around(pick(i), size=5),
            reps.rank,
            "`ZREVRANK`, then `ZREVRANGE r-5 r+5 WITHSCORES`",
            redis_around if r else None,
        )
        add(
            f"Week board top 100 (`{week_board}`, {week_users:,} users)",
            f"`board_page(iso_week=({iso_year}, {iso_week}), limit=100)`",
            lambda _: service.board_page(iso_week=(iso_year, iso_week), limit=100),
            reps.page,
            "`ZREVRANGE 0 99 WITHSCORES` on a per-week set",
            (lambda _: r.zrevrange(REDIS_WEEK, 0, 99, withscores=True)) if r else None,
            plan_of(lambda repo: repo.page(week_board, Tiebreak.NONE, limit=101)),
        )
        add(
            f"Season week board top 100 (`{season_week_board}`)",
            f"`board_page(season='{SEASON}', week={season_week}, limit=100)`",
            lambda _: service.board_page(season=SEASON, week=season_week, limit=100),
            reps.page,
            "same per-week set",
            (lambda _: r.zrevrange(REDIS_WEEK, 0, 99, withscores=True)) if r else None,
        )

        log("boards: naive ranks (count, window function)")
        naive = measure_naive(conn, middle["wallet_address"], int(middle["points"]))

        log(f"boards: {reps.write} single ledger inserts through the trigger")
        write, trigger_ms, insert_ms, write_plan = measure_write(conn, wallets, reps.write)

        def redis_write(i: int) -> Any:
            pipe = r.pipeline(transaction=False)
            pipe.zincrby(REDIS_ALL, 17, pick(i))
            pipe.zincrby(REDIS_WEEK, 17, pick(i))
            pipe.zincrby(REDIS_SEASON, 17, pick(i))
            return pipe.execute()

        rs_write = _summary(redis_write, reps.redis) if r is not None else None
        rows.append(
            Row(
                "An award's write: one ledger entry, committed",
                "`INSERT INTO points_ledger` (trigger: all, week, season, season week) + "
                "`UPDATE users` total, one transaction",
                write,
                "`ZINCRBY` on all-time, week and season sets (one pipelined round trip)",
                rs_write,
            )
        )

        award_summary: Summary | None = None
        award_rate: float | None = None
        if reps.awards:
            log(f"boards: {reps.awards} full awards through award_pending")
            award_summary, award_rate = measure_awards(conn, reps.awards)

        log("boards: full CSV export of the season board")
        export = measure_export(conn, r)
        log(f"boards: exported {export.rows:,} rows in {export.seconds:.1f}s")

        slow_plans = {
            "around: rows just above a deep user": explain_text(
                conn,
                *repository_sql(
                    LeaderboardRepository,
                    lambda repo: repo.page(
                        "all",
                        Tiebreak.NONE,
                        limit=5,
                        before=(int(middle["points"]), None, middle["wallet_address"]),
                    ),
                ),
            ),
        }
        log("boards: consistency checks")
        result_checks = checks(conn, ["all", season_board, week_board, season_week_board])

    return BoardsReport(
        load=loaded,
        weeks=weeks,
        week_board=week_board,
        week_users=week_users,
        season_week_board=season_week_board,
        board_rows=board_rows,
        sizes=sizes,
        distinct_all=distinct_all,
        buckets_all=buckets_all,
        max_all=max_all,
        rows=rows,
        rank_sql=rank_plans,
        rank_points=rank_points,
        naive=naive,
        trigger_ms=trigger_ms,
        insert_ms=insert_ms,
        write_plan=write_plan,
        award=award_summary,
        award_rate=award_rate,
        export=export,
        checks=result_checks,
        redis_version=redis_version,
        redis_note=redis_note,
        redis_load_seconds=redis_load_seconds,
        redis_memory=redis_memory,
        slow_plans=slow_plans,
    )
