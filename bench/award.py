"""Award sweep throughput: how fast tally.points.service.award_pending drains its queue.

The queue is filled in bulk with SQL (the verifier's API is not what is measured here), then the
real sweep awards it one transaction per award, exactly as the scheduled Lambda would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg

from bench.db import PlanTiming
from bench.stats import Summary, log

Conn = psycopg.Connection[dict[str, Any]]

# Share of sessions whose subject comes from the long tail rather than the popular list, so the
# subject rarity multipliers span every tier as in real traffic.
LONG_TAIL_SHARE = 0.3
LONG_TAIL_SUBJECTS = 5000


@dataclass
class SweepRun:
    """What one sweep (sequential, or several threads at once) did and how long it took."""

    sessions: int
    threads: int
    seconds: float = 0.0
    awarded: int = 0
    skipped: int = 0
    held: int = 0
    failed: int = 0
    per_thread: list[int] = field(default_factory=list)
    award_seconds: list[float] = field(default_factory=list)
    batches: list[tuple[float, int]] = field(default_factory=list)  # (seconds, settled)

    @property
    def rate(self) -> float:
        return self.awarded / self.seconds if self.seconds else 0.0

    @property
    def per_award(self) -> Summary:
        return Summary.of(self.award_seconds)

    def batch_rates(self) -> tuple[float, float]:
        """Awards/s over the first and the last tenth of the batches: does the sweep slow down?"""
        tenth = max(1, len(self.batches) // 10)
        return _rate(self.batches[:tenth]), _rate(self.batches[-tenth:])


def _rate(batches: list[tuple[float, int]]) -> float:
    seconds = sum(s for s, _ in batches)
    return sum(n for _, n in batches) / seconds if seconds else 0.0


@dataclass
class AwardReport:
    batch_size: int
    sequential: SweepRun
    concurrent: SweepRun
    checks: dict[str, bool]
    totals: dict[str, int]
    claim_plan: str  # as text, on the drained queue
    claim_before_vacuum: PlanTiming
    claim_after_vacuum: PlanTiming


def insert_pending(conn: Conn, count: int, wallets: int, tag: str) -> None:
    """Queue `count` approved, completed sessions spread over `wallets` wallets.

    Generated server-side with generate_series: 100k rows take seconds, not minutes. The
    content hashes embed `tag` so a second batch never trips the duplicate-content check.
    """
    from tally.local.seed import GRADES, SUBJECTS

    conn.execute(
        """
        INSERT INTO verification_sessions
            (id, status, wallet_address, initial_data, results, points_status, completed_at)
        SELECT gen_random_uuid(), 'completed', wallet,
               jsonb_build_object('metadata', jsonb_build_object(
                   'walletAddress', wallet, 'title', initcap(subject) || ' recordings',
                   'sampleCount', sample_count)),
               jsonb_build_object(
                   'approved', true,
                   'rarityScore', round((20 + random() * 80)::numeric, 1),
                   'qualityScore', round((0.35 + random() * 0.65)::numeric, 3),
                   'subject', subject,
                   'specificityGrade', grade,
                   'verifiedClaims', random() < 0.3,
                   'contentHash', md5(%(tag)s || ':' || g)),
               NULL, now()
        FROM (
            SELECT g,
                   '0x' || md5('bench-wallet:' || w) || left(md5('bench-wallet2:' || w), 8)
                       AS wallet,
                   CASE WHEN random() < %(tail)s
                        THEN 'field recording ' || floor(random() * %(tail_n)s)::int
                        ELSE (%(subjects)s::text[])[1 + floor(random() * %(n_subjects)s)::int]
                   END AS subject,
                   CASE WHEN random() < 0.9
                        THEN (ARRAY[1, 5, 20, 50, 120, 300])[1 + floor(random() * 6)::int]
                        ELSE 1000
                   END AS sample_count,
                   (%(grades)s::text[])[1 + floor(random() * %(n_grades)s)::int] AS grade
            FROM (
                SELECT g, floor(random() * %(wallets)s)::int AS w
                FROM generate_series(1, %(count)s) AS g
            ) AS picks
        ) AS s
        """,
        {
            "count": count,
            "wallets": wallets,
            "tag": tag,
            "grades": GRADES,
            "n_grades": len(GRADES),
            "subjects": SUBJECTS,
            "n_subjects": len(SUBJECTS),
            "tail": LONG_TAIL_SHARE,
            "tail_n": LONG_TAIL_SUBJECTS,
        },
    )
    conn.execute("ANALYZE verification_sessions")


@contextmanager
def timed_awards(samples: list[float]) -> Iterator[None]:
    """Time every single award by wrapping the sweep's per-award step.

    award_pending looks service._award_next up on each iteration, so the wrapper sees every
    claim-and-settle transaction (commit included); the final empty claim is not counted.
    """
    from tally.points import service

    original = service._award_next

    def timed(*args: Any, **kwargs: Any) -> bool:
        started = time.perf_counter()
        more = original(*args, **kwargs)
        if more:
            samples.append(time.perf_counter() - started)  # list.append is atomic
        return more

    service._award_next = timed
    try:
        yield
    finally:
        service._award_next = original


def drain(run: SweepRun, batch_size: int, progress_every: int = 0) -> int:
    """Call award_pending until the queue is empty, as successive scheduled runs would.

    Returns how many sessions this caller settled.
    """
    from tally.observability import metrics
    from tally.points.service import award_pending

    settled_here = 0
    next_report = progress_every
    while True:
        started = time.perf_counter()
        result = award_pending(batch_size=batch_size)
        elapsed = time.perf_counter() - started
        # Lambda's log_metrics flushes after each invocation; without it they pile up in memory.
        metrics.clear_metrics()
        settled = result.awarded + result.skipped + result.held + result.failed
        run.awarded += result.awarded
        run.skipped += result.skipped
        run.held += result.held
        run.failed += result.failed
        if settled == 0:
            return settled_here
        run.batches.append((elapsed, settled))
        settled_here += settled
        if progress_every and settled_here >= next_report:
            log(f"  {settled_here:,} settled, last batch {settled / elapsed:,.0f} awards/s")
            next_report += progress_every


def sequential_sweep(count: int, batch_size: int) -> SweepRun:
    run = SweepRun(sessions=count, threads=1)
    started = time.perf_counter()
    with timed_awards(run.award_seconds):
        run.per_thread.append(drain(run, batch_size, progress_every=max(count // 10, 1)))
    run.seconds = time.perf_counter() - started
    return run


def concurrent_sweep(count: int, batch_size: int, threads: int = 2) -> SweepRun:
    """Several sweeps at once, each on its own connection (get_connection is thread-local),
    as overlapping scheduled invocations would be."""
    from tally.db.connection import close_connection

    run = SweepRun(sessions=count, threads=threads)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        part = SweepRun(sessions=0, threads=1)
        try:
            settled = drain(part, batch_size)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            return
        finally:
            close_connection()
        with lock:
            run.awarded += part.awarded
            run.skipped += part.skipped
            run.held += part.held
            run.failed += part.failed
            run.batches.extend(part.batches)
            run.per_thread.append(settled)

    workers = [threading.Thread(target=worker, name=f"sweep-{i}") for i in range(threads)]
    started = time.perf_counter()
    with timed_awards(run.award_seconds):
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
    run.seconds = time.perf_counter() - started
    if errors:
        raise errors[0]
    return run


def check_consistency(conn: Conn, expected_awards: int) -> tuple[dict[str, bool], dict[str, int]]:
    """The invariants the sweep promises, checked on the rows it wrote."""
    one = _scalar_query(conn)
    totals = {
        "ledger_points": one("SELECT COALESCE(sum(points), 0) FROM points_ledger"),
        "user_points": one("SELECT COALESCE(sum(total_points), 0) FROM users"),
        "awarded_sessions": one(
            "SELECT count(*) FROM verification_sessions WHERE points_status = 'awarded'"
        ),
        "submissions": one("SELECT count(*) FROM user_submissions"),
        "ledger_dataset_entries": one(
            "SELECT count(*) FROM points_ledger WHERE source_kind = 'dataset_submission'"
        ),
        "users": one("SELECT count(*) FROM users"),
        "still_queued": one(
            "SELECT count(*) FROM verification_sessions "
            "WHERE points_status IS NULL OR points_status = 'failed'"
        ),
        "dataset_counter": one("SELECT value FROM platform_counters WHERE name = 'datasets'"),
    }
    sessions_paid_twice = one(
        "SELECT count(*) FROM (SELECT source_id FROM points_ledger "
        "WHERE source_kind = 'dataset_submission' GROUP BY source_id HAVING count(*) > 1) AS d"
    )
    users_off = one(
        "SELECT count(*) FROM (SELECT u.wallet_address FROM users u "
        "LEFT JOIN points_ledger l USING (wallet_address) GROUP BY u.wallet_address, "
        "u.total_points HAVING u.total_points <> COALESCE(sum(l.points), 0)) AS m"
    )
    distinct_numbers = one("SELECT count(DISTINCT dataset_number) FROM user_submissions")
    board_off = one(
        "SELECT count(*) FROM (SELECT wallet_address, sum(points) AS s FROM points_ledger "
        "GROUP BY wallet_address) AS l FULL JOIN (SELECT wallet_address, points FROM board_scores "
        "WHERE board = 'all') AS b USING (wallet_address) WHERE l.s IS DISTINCT FROM b.points"
    )
    histogram_off = one(
        "SELECT count(*) FROM (SELECT points, count(*) AS n FROM board_scores "
        "WHERE board = 'all' GROUP BY points) AS b FULL JOIN (SELECT points, users "
        "FROM board_score_counts WHERE board = 'all' AND users <> 0) AS c USING (points) "
        "WHERE b.n IS DISTINCT FROM c.users"
    )
    checks = {
        "ledger sum == sum of users.total_points": totals["ledger_points"] == totals["user_points"],
        "every user's total == their ledger entries": users_off == 0,
        "no session in the ledger twice": sessions_paid_twice == 0,
        "one submission per awarded session": totals["submissions"]
        == totals["awarded_sessions"]
        == totals["ledger_dataset_entries"],
        "every queued session awarded": totals["awarded_sessions"] == expected_awards
        and totals["still_queued"] == 0,
        "all-time board == ledger, per user": board_off == 0,
        "score histogram == board": histogram_off == 0,
        "dataset numbers 1..N, no gap or repeat": distinct_numbers
        == totals["dataset_counter"]
        == totals["submissions"],
    }
    return checks, totals


def _scalar_query(conn: Conn) -> Callable[[str], int]:
    def one(sql: str) -> int:
        row = conn.execute(sql).fetchone()
        assert row is not None
        return int(next(iter(row.values())))

    return one


def claim_plans(conn: Conn) -> tuple[str, PlanTiming, PlanTiming]:
    """The sweep's own claim query on the drained queue, then again after a VACUUM.

    Every award leaves a dead entry in the partial queue index until vacuum removes it, and a
    claim walks past those: the difference shows what a long sweep pays for them.
    """
    from bench.db import explain_text, plan_timing, repository_sql
    from tally.points.repository import PointsRepository

    sql, params = repository_sql(PointsRepository, lambda repo: repo.claim_next_award())
    text = explain_text(conn, sql, params)
    before = plan_timing(conn, sql, params)
    conn.execute("VACUUM verification_sessions")
    return text, before, plan_timing(conn, sql, params)


def run(database_url: str, *, pending: int, concurrent: int, batch_size: int) -> AwardReport:
    """Fill the queue, drain it with one sweep, then a second batch with two sweeps at once."""
    from bench.db import connect

    wallets = max(pending // 3, 1)
    with connect(database_url) as conn:
        log(f"award: queueing {pending:,} sessions over {wallets:,} wallets")
        insert_pending(conn, pending, wallets, tag="sequential")
        log(f"award: sequential sweep, batch_size={batch_size}")
        sequential = sequential_sweep(pending, batch_size)
        log(
            f"award: {sequential.awarded:,} in {sequential.seconds:.1f}s = {sequential.rate:,.0f}/s"
        )

        log(f"award: queueing {concurrent:,} more sessions for two concurrent sweeps")
        insert_pending(conn, concurrent, wallets, tag="concurrent")
        parallel = concurrent_sweep(concurrent, batch_size, threads=2)
        log(f"award: {parallel.awarded:,} in {parallel.seconds:.1f}s = {parallel.rate:,.0f}/s")

        checks, totals = check_consistency(conn, expected_awards=pending + concurrent)
        plans = claim_plans(conn)
    for name, ok in checks.items():
        log(f"award: check {'ok  ' if ok else 'FAIL'} {name}")
    return AwardReport(batch_size, sequential, parallel, checks, totals, *plans)
