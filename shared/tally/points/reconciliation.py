"""The reconciliation check (REFERENCE.md, "One spine"): everything derived from the points
ledger must equal what the ledger says. Any difference is a bug or tampering, so the job only
reports it (metric, error log, alarm); it never "fixes" the derived rows."""

from __future__ import annotations

from typing import Any

import psycopg
from aws_lambda_powertools import Logger
from pydantic import BaseModel, ConfigDict

from tally.db.connection import read_snapshot, set_local_limits
from tally.observability import metrics
from tally.points.ledger_sql import tier_params
from tally.settings import get_settings

logger = Logger(child=True)

# One row per check: how many keys differ, and a few of them to start looking from.
CHECKS = """
WITH weekly AS (  -- the ledger read once: per wallet and ISO week (Monday, UTC)
    SELECT wallet_address, date_trunc('week', created_at AT TIME ZONE 'UTC') AS week_start,
           sum(points)::bigint AS points
    FROM points_ledger GROUP BY 1, 2
),
ledger AS (
    SELECT wallet_address, sum(points)::bigint AS points FROM weekly GROUP BY 1
),
totals AS (
    SELECT coalesce(u.wallet_address, l.wallet_address) AS key,
           coalesce(u.total_points, 0) AS derived, coalesce(l.points, 0) AS expected
    FROM users u FULL JOIN ledger l USING (wallet_address)
),
all_board AS (
    SELECT coalesce(b.wallet_address, l.wallet_address) AS key,
           coalesce(b.points, 0) AS derived, coalesce(l.points, 0) AS expected
    FROM (SELECT wallet_address, points FROM board_scores WHERE board = 'all') b
    FULL JOIN ledger l USING (wallet_address)
),
week_ledger AS (  -- a Monday's ISO week is the week of every day after it until Sunday
    SELECT 'week:' || to_char(week_start, 'IYYY-"W"IW') AS board, wallet_address, points
    FROM weekly
),
week_boards AS (
    SELECT coalesce(b.board, l.board) || ' ' || coalesce(b.wallet_address, l.wallet_address)
               AS key,
           coalesce(b.points, 0) AS derived, coalesce(l.points, 0) AS expected
    FROM (SELECT board, wallet_address, points FROM board_scores WHERE board LIKE 'week:%%') b
    FULL JOIN week_ledger l USING (board, wallet_address)
),
tiers AS (
    SELECT u.wallet_address AS key, u.tier AS derived,
           (SELECT t.name FROM unnest(%(mins)s::bigint[], %(names)s::text[]) AS t(minimum, name)
            WHERE t.minimum <= u.total_points ORDER BY t.minimum DESC LIMIT 1) AS expected
    FROM users u
),
differences AS (
    SELECT 'users_total_points' AS check_name, key, derived::text, expected::text
    FROM totals WHERE derived <> expected
    UNION ALL
    SELECT 'board_all', key, derived::text, expected::text FROM all_board
    WHERE derived <> expected
    UNION ALL
    SELECT 'board_weeks', key, derived::text, expected::text FROM week_boards
    WHERE derived <> expected
    UNION ALL
    SELECT 'users_tier', key, derived, expected FROM tiers
    WHERE derived IS DISTINCT FROM expected
),
counted AS (
    SELECT check_name, count(*)::int AS mismatches FROM differences GROUP BY 1
),
sampled AS (
    SELECT check_name,
           jsonb_agg(jsonb_build_object('key', key, 'derived', derived, 'expected', expected)
                     ORDER BY key) AS samples
    FROM (SELECT d.*, row_number() OVER (PARTITION BY check_name ORDER BY key) AS place
          FROM differences d) x
    WHERE place <= 10
    GROUP BY 1
)
SELECT c.check_name, coalesce(n.mismatches, 0) AS mismatches,
       coalesce(s.samples, '[]'::jsonb) AS samples
FROM unnest(ARRAY['users_total_points', 'board_all', 'board_weeks', 'users_tier'])
     AS c(check_name)
LEFT JOIN counted n USING (check_name)
LEFT JOIN sampled s USING (check_name)
ORDER BY c.check_name
"""
COUNTS = """
SELECT (SELECT count(*) FROM points_ledger) AS ledger_entries,
       (SELECT count(*) FROM users) AS users
"""


class ReconciliationInput(BaseModel):
    """The job's schedule Input: nothing to say."""

    model_config = ConfigDict(extra="forbid")


class CheckResult(BaseModel):
    check: str
    mismatches: int
    samples: list[dict[str, Any]]


class ReconciliationResult(BaseModel):
    ok: bool
    ledger_entries: int
    users: int
    mismatches: int
    checks: list[CheckResult]


class ReconciliationRepository:
    def __init__(self, conn: psycopg.Connection[dict[str, Any]]) -> None:
        self.conn = conn

    def checks(self, timeout_ms: int, work_mem_mb: int) -> list[dict[str, Any]]:
        set_local_limits(self.conn, timeout_ms, work_mem_mb)
        return self.conn.execute(CHECKS, tier_params()).fetchall()

    def counts(self) -> dict[str, Any]:
        row = self.conn.execute(COUNTS).fetchone()
        assert row is not None
        return row


def reconcile() -> ReconciliationResult:
    """Run every check on one snapshot, so concurrent awards cannot show up as differences."""
    settings = get_settings()
    with read_snapshot() as conn:
        repo = ReconciliationRepository(conn)
        rows = repo.checks(settings.reconciliation_timeout_ms, settings.community_work_mem_mb)
        counts = repo.counts()
    checks = [
        CheckResult(check=r["check_name"], mismatches=r["mismatches"], samples=r["samples"])
        for r in rows
    ]
    total = sum(c.mismatches for c in checks)
    result = ReconciliationResult(
        ok=total == 0,
        ledger_entries=counts["ledger_entries"],
        users=counts["users"],
        mismatches=total,
        checks=checks,
    )
    metrics.add_metric(name="LedgerMismatches", unit="Count", value=total)
    metrics.add_metric(name="ReconciliationRuns", unit="Count", value=1)
    if total:
        logger.error("Ledger reconciliation found differences", extra=result.model_dump())
    else:
        logger.info(
            "Ledger reconciliation passed",
            extra={"ledger_entries": result.ledger_entries, "users": result.users},
        )
    return result
