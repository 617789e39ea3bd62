"""The award sweep against real rows: awards, skips, holds, retries, concurrency, crashes."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tally.points import service
from tally.points.models import FlagReview, VerificationIn
from tally.points.repository import PointsRepository
from tests.support import assert_ledger_matches_totals, run_concurrently, verification_body

WALLET = "0xabc0000000000000000000000000000000000001"


def record(**kwargs: Any) -> str:
    body = VerificationIn.model_validate(verification_body(**kwargs))
    service.record_verification(body)
    return str(body.session_id)


def session(db: psycopg.Connection[Any], session_id: str) -> dict[str, Any]:
    row = db.execute("SELECT * FROM verification_sessions WHERE id = %s", (session_id,)).fetchone()
    assert row is not None
    return row


def test_award_writes_everything_in_one_go(
    db: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    sid = record(wallet=WALLET, rarity=85, quality=0.8, grade="A", verified=True, samples=120)
    result = service.award_pending()
    assert (result.awarded, result.failed, result.held) == (1, 0, 0)
    assert result.points == 2785  # see test_calculator.test_hand_computed_award

    row = session(db, sid)
    assert row["points_awarded"] == 2785 and row["points_status"] == "awarded"
    assert row["points_breakdown"]["bulk_multiplier"] == 2.0
    assert float(row["quality_multiplier"]) == 1.4
    user = db.execute("SELECT * FROM users WHERE wallet_address = %s", (WALLET,)).fetchone()
    assert user is not None
    assert (user["total_points"], user["total_submissions"], user["tier"]) == (2785, 1, "Bronze")
    sub = db.execute("SELECT * FROM user_submissions").fetchone()
    assert sub is not None and sub["points_earned"] == 2785 and sub["is_first_bulk"]
    ledger = db.execute("SELECT * FROM points_ledger").fetchall()
    assert [(e["source_kind"], e["source_id"], e["points"]) for e in ledger] == [
        ("dataset_submission", sid, 2785)
    ]
    keys = {r["achievement_key"] for r in db.execute("SELECT * FROM user_achievements")}
    assert {"first_blood", "bulk_pioneer", "early_adopter"} <= keys
    assert f"Successfully awarded 2785 points to wallet {WALLET}" in caplog.messages


def test_second_run_changes_nothing(db: psycopg.Connection[Any]) -> None:
    record(wallet=WALLET)
    assert service.award_pending().awarded == 1
    before = db.execute("SELECT count(*) AS n, sum(points) AS p FROM points_ledger").fetchone()
    again = service.award_pending()
    assert (again.awarded, again.skipped, again.failed) == (0, 0, 0)
    assert (
        db.execute("SELECT count(*) AS n, sum(points) AS p FROM points_ledger").fetchone() == before
    )


def test_no_wallet_is_skipped_with_the_guides_log_line(
    db: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    sid = record(wallet=None)
    result = service.award_pending()
    assert result.skipped == 1 and result.awarded == 0
    assert session(db, sid)["points_status"] == "skipped"
    assert "No wallet address - skipping points" in caplog.messages


def test_missing_rarity_fails_and_is_retried_later(
    db: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    sid = record(wallet=WALLET, rarity=None)
    result = service.award_pending()
    assert result.failed == 1
    row = session(db, sid)
    assert row["points_status"] == "failed" and row["points_attempts"] == 1
    assert row["points_next_attempt_at"] is not None
    out = caplog.messages
    assert "Missing rarityScore from analysis" in out
    assert "Points calculation failed - flagging for retry" in out
    # Not due yet: the next sweep leaves it alone.
    assert service.award_pending().failed == 0
    # Once due, it is tried again (and fails again, with a longer back-off).
    db.execute("UPDATE verification_sessions SET points_next_attempt_at = now() - interval '1s'")
    assert service.award_pending().failed == 1
    assert session(db, sid)["points_attempts"] == 2


def test_below_minimum_quality_earns_nothing(db: psycopg.Connection[Any]) -> None:
    sid = record(wallet=WALLET, quality=0.1)
    assert service.award_pending().skipped == 1
    row = session(db, sid)
    assert (row["points_status"], row["points_awarded"]) == ("skipped", 0)
    assert db.execute("SELECT count(*) AS n FROM points_ledger").fetchone() == {"n": 0}


def test_unapproved_sessions_never_enter_the_queue(db: psycopg.Connection[Any]) -> None:
    sid = record(wallet=WALLET, approved=False)
    assert session(db, sid)["points_status"] == "skipped"
    result = service.award_pending()
    assert (result.awarded, result.skipped) == (0, 0)


def test_multipliers_follow_platform_history(db: psycopg.Connection[Any]) -> None:
    settings_env = {"POINTS_EARLY_CONTRIBUTOR_DATASETS": "2"}
    import os

    os.environ.update(settings_env)
    from tally.settings import reset_settings

    reset_settings()
    try:
        first = record(wallet=WALLET, samples=150, subject="whale calls")
        second = record(wallet=WALLET, samples=150, subject="whale calls")
        third = record(wallet="0xother0001", samples=150, subject="whale calls")
        fourth = record(wallet="0xother0001", samples=5, subject="whale calls")
        assert service.award_pending().awarded == 4
    finally:
        del os.environ["POINTS_EARLY_CONTRIBUTOR_DATASETS"]
        reset_settings()
    b = [session(db, s)["points_breakdown"] for s in (first, second, third, fourth)]
    assert [x["early_contributor_multiplier"] for x in b] == [1.5, 1.5, 1.0, 1.0]
    assert [x["bulk_multiplier"] for x in b] == [2.0, 1.0, 2.0, 1.0]
    assert [x["subject_rarity_multiplier"] for x in b] == [5.0, 5.0, 5.0, 3.0]
    cache = db.execute("SELECT * FROM subject_rarity_cache").fetchone()
    assert cache is not None and cache["dataset_count"] == 4 and cache["rarity_tier"] == "High"


def test_duplicate_content_is_held_then_cleared(db: psycopg.Connection[Any]) -> None:
    record(wallet=WALLET, content_hash="samehash")
    dup = record(wallet="0xcopycat001", content_hash="samehash")
    result = service.award_pending()
    assert (result.awarded, result.held) == (1, 1)
    assert session(db, dup)["points_status"] == "held"
    flag = db.execute("SELECT * FROM anti_abuse_flags").fetchone()
    assert flag is not None and flag["reason"] == "duplicate_content" and flag["status"] == "open"
    # Held is not lost: the sweep does not touch it, and clearing the flag releases it.
    assert service.award_pending().awarded == 0
    service.review_flag(flag["id"], FlagReview(decision="clear"), reviewer="admin")
    assert service.award_pending().awarded == 1
    assert session(db, dup)["points_status"] == "awarded"
    assert_ledger_matches_totals(db)


def test_rejected_flag_never_pays(db: psycopg.Connection[Any]) -> None:
    record(wallet=WALLET, content_hash="h1")
    dup = record(wallet=WALLET, content_hash="h1")
    service.award_pending()
    flag = db.execute("SELECT id FROM anti_abuse_flags").fetchone()
    assert flag is not None
    service.review_flag(flag["id"], FlagReview(decision="reject"), reviewer="admin")
    assert service.award_pending().awarded == 0
    assert session(db, dup)["points_status"] == "rejected"
    from tally.errors import Conflict

    with pytest.raises(Conflict):
        service.review_flag(flag["id"], FlagReview(decision="clear"), reviewer="admin")


def test_daily_cap_holds_the_excess(db: psycopg.Connection[Any]) -> None:
    import os

    from tally.settings import reset_settings

    os.environ["POINTS_DAILY_SUBMISSION_CAP"] = "2"
    reset_settings()
    try:
        for _ in range(3):
            record(wallet=WALLET)
        result = service.award_pending()
    finally:
        del os.environ["POINTS_DAILY_SUBMISSION_CAP"]
        reset_settings()
    assert (result.awarded, result.held) == (2, 1)
    flag = db.execute("SELECT reason, details FROM anti_abuse_flags").fetchone()
    assert flag == {"reason": "daily_cap_exceeded", "details": {"submissions_today": 2, "cap": 2}}


def test_two_concurrent_sweeps_award_each_session_once(db: psycopg.Connection[Any]) -> None:
    wallets = [f"0xconc{i:04d}" for i in range(8)]
    for i in range(120):
        record(wallet=wallets[i % len(wallets)], subject=f"s{i % 13}")
    results = run_concurrently(lambda: service.award_pending(batch_size=1000))
    assert sum(r.awarded for r in results) == 120
    assert all(r.awarded > 0 for r in results), "both sweeps should have done some of the work"
    counts = db.execute(
        "SELECT count(*) AS n, count(DISTINCT source_id) AS d FROM points_ledger"
    ).fetchone()
    assert counts == {"n": 120, "d": 120}
    numbers = [
        r["dataset_number"]
        for r in db.execute("SELECT dataset_number FROM user_submissions ORDER BY dataset_number")
    ]
    assert numbers == list(range(1, 121))
    assert_ledger_matches_totals(db)


def test_a_crash_midway_writes_nothing_and_the_next_run_awards(
    db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = record(wallet=WALLET)
    original = PointsRepository.add_to_user

    def crash(self: PointsRepository, *args: Any, **kwargs: Any) -> int:
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(PointsRepository, "add_to_user", crash)
    # A lost connection is not the award's fault: the sweep stops (the invocation fails) and
    # the award is not counted as a failed attempt.
    with pytest.raises(psycopg.OperationalError):
        service.award_pending()
    for table in ("points_ledger", "user_submissions", "user_achievements"):
        assert db.execute(f"SELECT count(*) AS n FROM {table}").fetchone() == {"n": 0}
    assert db.execute("SELECT value FROM platform_counters WHERE name = 'datasets'").fetchone() == {
        "value": 0
    }
    assert session(db, sid)["points_status"] != "failed"

    monkeypatch.setattr(PointsRepository, "add_to_user", original)
    assert service.award_pending().awarded == 1  # at once: no back-off
    assert db.execute("SELECT count(*) AS n FROM points_ledger").fetchone() == {"n": 1}
    assert session(db, sid)["points_status"] == "awarded"
    assert_ledger_matches_totals(db)


def test_connection_killed_midway_loses_nothing(db: psycopg.Connection[Any]) -> None:
    """Terminate the sweep's backend from another connection while it holds an award."""
    sid = record(wallet=WALLET)
    original = PointsRepository.insert_submission

    def kill_then_insert(self: PointsRepository, values: dict[str, Any]) -> None:
        pid = self.conn.info.backend_pid
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        original(self, values)

    PointsRepository.insert_submission = kill_then_insert  # type: ignore[method-assign]
    try:
        # The invocation fails cleanly, its award rolled back whole.
        with pytest.raises(psycopg.OperationalError):
            service.award_pending()
    finally:
        PointsRepository.insert_submission = original  # type: ignore[method-assign]
    assert db.execute("SELECT count(*) AS n FROM points_ledger").fetchone() == {"n": 0}
    assert session(db, sid)["points_status"] != "failed"
    # The next invocation reconnects and completes the work, once.
    assert service.award_pending().awarded == 1
    assert service.award_pending().awarded == 0
    assert db.execute("SELECT count(*) AS n FROM points_ledger").fetchone() == {"n": 1}


def test_deadline_stops_the_sweep_at_a_safe_point(db: psycopg.Connection[Any]) -> None:
    for _ in range(5):
        record(wallet=WALLET)
    budget = iter([60_000, 60_000, 0])
    result = service.award_pending(remaining_ms=lambda: next(budget, 0))
    assert result.stopped_early and result.awarded == 2
    assert service.award_pending().awarded == 3


def test_guide_monitoring_queries_run_unchanged(db: psycopg.Connection[Any]) -> None:
    record(wallet=WALLET)
    service.award_pending()
    guide_queries = [
        """SELECT DATE(submitted_at), COUNT(*), SUM(points_earned)
           FROM user_submissions
           GROUP BY DATE(submitted_at)
           ORDER BY DATE(submitted_at) DESC;""",
        """SELECT COUNT(*) FROM verification_sessions
           WHERE status = 'completed'
           AND (results->>'approved')::boolean = true
           AND wallet_address IS NOT NULL
           AND (points_awarded IS NULL OR points_awarded = 0);""",
        """SELECT id, wallet_address, results->>'rarityScore'
           FROM verification_sessions
           WHERE status = 'completed'
           AND (results->>'approved')::boolean = true
           AND (points_awarded IS NULL OR points_awarded = 0);""",
        "SELECT * FROM users ORDER BY total_points DESC LIMIT 100;",
        "SELECT status, results->>'approved' FROM verification_sessions;",
        "SELECT initial_data->'metadata'->>'walletAddress' FROM verification_sessions;",
    ]
    for sql in guide_queries:
        db.execute(sql).fetchall()
    assert db.execute(guide_queries[1]).fetchone() == {"count": 0}


def test_achievement_bonus_goes_through_the_ledger(db: psycopg.Connection[Any]) -> None:
    import os

    from tally.settings import reset_settings

    os.environ["POINTS_ACHIEVEMENT_BONUS_POINTS"] = '{"first_blood": 50}'
    reset_settings()
    try:
        record(wallet=WALLET)
        record(wallet=WALLET)
        service.award_pending()
    finally:
        del os.environ["POINTS_ACHIEVEMENT_BONUS_POINTS"]
        reset_settings()
    bonus = db.execute(
        "SELECT points, source_id FROM points_ledger WHERE source_kind = 'achievement'"
    ).fetchall()
    assert bonus == [{"points": 50, "source_id": f"{WALLET}:first_blood"}]
    assert_ledger_matches_totals(db)
