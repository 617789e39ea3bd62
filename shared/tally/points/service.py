"""The rules of the points system: recording verifications, the award sweep, reads."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from aws_lambda_powertools import Logger

from tally.db.connection import connection_lost, read_snapshot, transaction
from tally.errors import Conflict, NotFound
from tally.leaderboards.boards import ALL_TIME, Tiebreak
from tally.leaderboards.repository import LeaderboardRepository
from tally.leaderboards.service import board_page, rank_on
from tally.observability import metrics
from tally.points import calculator
from tally.points.achievements import ACHIEVEMENTS_BY_KEY, unlocked_achievements
from tally.points.models import (
    AbuseFlagOut,
    AchievementOut,
    AwardRunResult,
    FlagReview,
    LeaderboardEntry,
    LeaderboardPage,
    SubmissionOut,
    UserProfile,
    VerificationIn,
    VerificationOut,
)
from tally.points.repository import PointsRepository, Row
from tally.points.tiers import tier_for
from tally.settings import Settings, get_settings

logger = Logger(child=True)

SOURCE_DATASET = "dataset_submission"
SOURCE_ACHIEVEMENT = "achievement"


class _Hold(Exception):
    """The award is held for review; the transaction still commits the flag."""


# -- recording verification results ----------------------------------------------------------


def record_verification(body: VerificationIn) -> tuple[VerificationOut, bool]:
    """Store a verifier's result; returns (session, created). Same id + same body is a no-op."""
    initial_data = {"metadata": body.metadata.model_dump(by_alias=True, exclude_none=True)}
    results = body.results.model_dump(by_alias=True, exclude_none=True) if body.results else None
    approved = bool(body.results and body.results.approved)
    # Only approved, completed sessions enter the award queue; others are settled at once.
    points_status = None if body.status == "completed" and approved else "skipped"
    with transaction() as conn:
        repo = PointsRepository(conn)
        row = repo.insert_session(
            session_id=body.session_id,
            status=body.status,
            wallet_address=body.metadata.wallet_address,
            initial_data=initial_data,
            results=results,
            points_status=points_status,
            completed_at=body.completed_at,
        )
        if row is not None:
            return _session_out(row), True
        if repo.has_same_content(body.session_id, initial_data, results):
            existing = repo.get_session(body.session_id)
            assert existing is not None
            return _session_out(existing), False
        # The verifier re-ran its analysis: take the new results while nothing was paid.
        replaced = repo.replace_unsettled_session(
            body.session_id,
            status=body.status,
            wallet_address=body.metadata.wallet_address,
            initial_data=initial_data,
            results=results,
            points_status=points_status,
            completed_at=body.completed_at,
        )
    if replaced is None:
        raise Conflict(
            f"Verification session {body.session_id} was already recorded with other content "
            "and its points are settled",
            session_id=str(body.session_id),
        )
    logger.info("Verification results replaced", extra={"session_id": str(body.session_id)})
    return _session_out(replaced), False


def get_verification(session_id: UUID) -> VerificationOut:
    with transaction() as conn:
        row = PointsRepository(conn).get_session(session_id)
    if row is None:
        raise NotFound(f"No verification session {session_id}")
    return _session_out(row)


def _session_out(row: Row) -> VerificationOut:
    return VerificationOut(
        session_id=row["id"],
        status=row["status"],
        wallet_address=row["wallet_address"],
        points_status=row["points_status"],
        points_awarded=row["points_awarded"],
        points_breakdown=row["points_breakdown"],
        created_at=row["created_at"],
        completed_at=row["completed_at"],
    )


# -- the award sweep ---------------------------------------------------------------------------


def award_pending(
    *,
    batch_size: int | None = None,
    remaining_ms: Callable[[], int] | None = None,
    settings: Settings | None = None,
) -> AwardRunResult:
    """Award every approved session still waiting for points, one transaction per award.

    Safe with concurrent sweeps (rows are claimed with SKIP LOCKED, the ledger is unique per
    session) and with crashes (a failed award rolls back whole and is retried with back-off).
    """
    settings = settings or get_settings()
    limit = batch_size or settings.award_batch_size
    result = AwardRunResult()
    for _ in range(limit):
        if remaining_ms is not None and remaining_ms() < settings.job_safety_margin_ms:
            result.stopped_early = True
            logger.info("Stopping award sweep before the deadline", extra=result.model_dump())
            break
        if not _award_next(settings, result):
            break
    metrics.add_metric(name="PointsAwarded", unit="Count", value=result.awarded)
    metrics.add_metric(name="PointsAwardedTotal", unit="Count", value=result.points)
    metrics.add_metric(name="AwardFailures", unit="Count", value=result.failed)
    metrics.add_metric(name="AwardsHeld", unit="Count", value=result.held)
    logger.info("Award sweep finished", extra=result.model_dump())
    return result


def _award_next(settings: Settings, result: AwardRunResult) -> bool:
    """Claim and settle one session; False when the queue is empty."""
    session_id: UUID | None = None
    try:
        with transaction() as conn:
            repo = PointsRepository(conn)
            session = repo.claim_next_award()
            if session is None:
                return False
            session_id = session["id"]
            try:
                outcome = _settle(repo, session, settings)
            except _Hold:
                result.held += 1
                return True
    except Exception as exc:
        if session_id is None or connection_lost(exc):
            # A lost connection is not the award's fault: it rolled back, and the next sweep
            # (a new invocation, a new connection) takes it at once.
            raise
        result.failed += 1
        logger.exception(
            "Points calculation failed - flagging for retry", extra={"session_id": str(session_id)}
        )
        with transaction() as conn:
            attempts, gave_up = PointsRepository(conn).mark_session_failed(
                session_id,
                error=f"{type(exc).__name__}: {exc}",
                base_delay_s=settings.award_retry_base_s,
                max_delay_s=settings.award_retry_max_s,
                max_attempts=settings.award_max_attempts,
            )
        if gave_up:
            metrics.add_metric(name="AwardsAbandoned", unit="Count", value=1)
            logger.error(
                "Giving up on award until the verifier sends new results",
                extra={"session_id": str(session_id), "attempts": attempts},
            )
        return True
    if outcome is None:
        result.skipped += 1
    else:
        wallet, points = outcome
        result.awarded += 1
        result.points += points
        logger.info(
            f"Successfully awarded {points} points to wallet {wallet}",
            extra={"session_id": str(session_id), "wallet_address": wallet, "points": points},
        )
    return True


def _settle(repo: PointsRepository, session: Row, settings: Settings) -> tuple[str, int] | None:
    """Everything one award writes, inside the caller's transaction.

    Returns (wallet, points) when awarded, None when skipped; raises _Hold when flagged.
    """
    rules = settings.points
    session_id: UUID = session["id"]
    metadata = (session["initial_data"] or {}).get("metadata", {})
    results: dict[str, Any] = session["results"] or {}
    wallet = session["wallet_address"] or metadata.get("walletAddress")
    if not wallet:
        logger.info("No wallet address - skipping points", extra={"session_id": str(session_id)})
        repo.mark_session(session_id, points_status="skipped", error="no_wallet_address")
        return None
    if results.get("rarityScore") is None:
        logger.error("Missing rarityScore from analysis", extra={"session_id": str(session_id)})
        raise ValueError("Missing rarityScore from analysis")
    quality = float(results.get("qualityScore") or 0.0)
    if quality < rules.min_quality_score:
        logger.info(
            "Quality below minimum - no points",
            extra={"session_id": str(session_id), "quality_score": quality},
        )
        repo.mark_session(
            session_id, points_status="skipped", error="quality_below_minimum", points_awarded=0
        )
        return None

    # From here on every award is serialised: counters, duplicates and caps are exact.
    datasets_before = repo.lock_dataset_counter()
    if not repo.has_cleared_flag(session_id):
        _check_abuse(repo, session_id, wallet, results, rules.daily_submission_cap)

    user = repo.lock_user(wallet)
    if user["contributor_number"] is None:
        repo.set_contributor_number(wallet, repo.next_counter("contributors"))
    subject = results.get("subject") or None
    sample_count = int(metadata.get("sampleCount") or 0)
    is_first_bulk = sample_count >= rules.bulk_sample_threshold and not repo.has_first_bulk(
        wallet, subject
    )
    subject_before = (
        repo.bump_subject(subject, list(calculator.SUBJECT_RARITY_TIERS)) if subject else 0
    )
    dataset_number = repo.next_counter("datasets")
    assert dataset_number == datasets_before + 1
    breakdown = calculator.calculate_points(
        calculator.PointsInput(
            rarity_score=float(results["rarityScore"]),
            quality_score=quality,
            specificity_grade=results.get("specificityGrade") or "F",
            verified=bool(results.get("verifiedClaims")),
            is_first_bulk=is_first_bulk,
            subject_dataset_count=subject_before,
            dataset_number=dataset_number,
        ),
        rule_version=rules.rule_version,
        min_quality_score=rules.min_quality_score,
        early_contributor_datasets=rules.early_contributor_datasets,
    )
    if breakdown.points > rules.max_points_per_award:
        raise ValueError(f"Award of {breakdown.points} exceeds the per-award ceiling")
    points = breakdown.points
    breakdown_json = breakdown.model_dump()
    submitted_at = datetime.now(UTC)
    repo.insert_submission(
        {
            "wallet_address": wallet,
            "session_id": session_id,
            "title": metadata.get("title"),
            "subject": subject,
            "sample_count": sample_count,
            "rarity_score": results["rarityScore"],
            "quality_score": quality,
            "specificity_grade": results.get("specificityGrade"),
            "verified": bool(results.get("verifiedClaims")),
            "content_hash": results.get("contentHash"),
            "is_first_bulk": is_first_bulk,
            "is_rare": breakdown.subject_rarity_multiplier >= rules.rare_subject_multiplier,
            "dataset_number": dataset_number,
            "points_earned": points,
            "quality_multiplier": breakdown.quality_multiplier,
            "bulk_multiplier": breakdown.bulk_multiplier,
            "subject_rarity_multiplier": breakdown.subject_rarity_multiplier,
            "specificity_multiplier": breakdown.specificity_multiplier,
            "verification_multiplier": breakdown.verification_multiplier,
            "early_contributor_multiplier": breakdown.early_contributor_multiplier,
            "total_multiplier": breakdown.total_multiplier,
            "points_breakdown": breakdown_json,
            "rule_version": rules.rule_version,
            "submitted_at": submitted_at,
        }
    )
    if not repo.append_ledger(
        wallet_address=wallet,
        points=points,
        source_kind=SOURCE_DATASET,
        source_id=str(session_id),
        rule_version=rules.rule_version,
        metadata={"subject": subject},
    ):
        raise Conflict(f"Session {session_id} is already in the ledger")
    total = repo.add_to_user(wallet, points=points, submissions=1, at=submitted_at)
    total = _unlock_achievements(repo, wallet, settings, total)
    repo.set_tier(wallet, tier_for(total))
    repo.mark_session_awarded(session_id, points=points, breakdown=breakdown_json)
    return wallet, points


def _check_abuse(
    repo: PointsRepository, session_id: UUID, wallet: str, results: dict[str, Any], cap: int
) -> None:
    reasons: dict[str, dict[str, Any]] = {}
    content_hash = results.get("contentHash")
    if content_hash and repo.content_already_awarded(content_hash):
        reasons["duplicate_content"] = {"content_hash": content_hash}
    day_start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    today = repo.submissions_since(wallet, day_start)
    if today >= cap:
        reasons["daily_cap_exceeded"] = {"submissions_today": today, "cap": cap}
    if not reasons:
        return
    for reason, details in reasons.items():
        repo.add_flag(wallet_address=wallet, session_id=session_id, reason=reason, details=details)
    repo.mark_session(session_id, points_status="held", error=",".join(sorted(reasons)))
    metrics.add_metric(name="AbuseFlags", unit="Count", value=len(reasons))
    logger.warning(
        "Award held for review",
        extra={"session_id": str(session_id), "wallet_address": wallet, "reasons": list(reasons)},
    )
    raise _Hold()


def _unlock_achievements(
    repo: PointsRepository, wallet: str, settings: Settings, total: int
) -> int:
    rules = settings.points
    stats = repo.user_stats(wallet, rules.rare_subject_multiplier)
    new_keys = repo.unlock_achievements(
        wallet, unlocked_achievements(stats, rules.early_adopter_contributors)
    )
    bonus_total = 0
    for key in new_keys:
        logger.info("Achievement unlocked", extra={"wallet_address": wallet, "achievement": key})
        bonus = rules.achievement_bonus_points.get(key, 0)
        if bonus > 0 and repo.append_ledger(
            wallet_address=wallet,
            points=bonus,
            source_kind=SOURCE_ACHIEVEMENT,
            source_id=f"{wallet}:{key}",
            rule_version=rules.rule_version,
            metadata={"achievement": ACHIEVEMENTS_BY_KEY[key].name},
        ):
            bonus_total += bonus
    if new_keys:
        metrics.add_metric(name="AchievementsUnlocked", unit="Count", value=len(new_keys))
    if bonus_total:
        total = repo.add_to_user(wallet, points=bonus_total, submissions=0, at=None)
    return total


# -- anti-abuse review --------------------------------------------------------------------------


def list_flags(status: str | None, cursor: int, limit: int) -> list[AbuseFlagOut]:
    with transaction() as conn:
        rows = PointsRepository(conn).list_flags(status=status, after_id=cursor, limit=limit)
    return [AbuseFlagOut.model_validate(r) for r in rows]


def review_flag(flag_id: int, review: FlagReview, reviewer: str) -> AbuseFlagOut:
    """Clear (the held award is retried without the check) or reject (it never pays)."""
    with transaction() as conn:
        repo = PointsRepository(conn)
        flag = repo.lock_flag(flag_id)
        if flag is None:
            raise NotFound(f"No anti-abuse flag {flag_id}")
        if flag["status"] != "open":
            raise Conflict(f"Flag {flag_id} was already reviewed ({flag['status']})")
        status = "cleared" if review.decision == "clear" else "rejected"
        updated = repo.review_flag(flag_id, status=status, reviewer=reviewer)
        session_id = flag["session_id"]
        if session_id is not None:
            if status == "rejected":
                repo.mark_session(session_id, points_status="rejected", error=flag["reason"])
            elif repo.open_flags_for_session(session_id) == 0:
                repo.requeue_session(session_id)
    logger.info("Anti-abuse flag reviewed", extra={"flag_id": flag_id, "decision": status})
    assert updated is not None
    return AbuseFlagOut.model_validate(updated)


# -- reads ---------------------------------------------------------------------------------------


def leaderboard(limit: int, cursor: str | None) -> tuple[LeaderboardPage, str]:
    """The all-time board (GET /api/leaderboard) from the leaderboards machinery, and the
    board version it was read at."""
    page, version = board_page(limit=limit, cursor=cursor, tiebreak=Tiebreak.NONE.value)
    result = LeaderboardPage(
        items=[
            LeaderboardEntry(
                rank=e.rank,
                is_tied=e.is_tied,
                wallet_address=e.wallet_address,
                total_points=e.points,
                tier=e.tier,
                total_submissions=e.submissions,
            )
            for e in page.items
        ],
        next_cursor=page.next_cursor,
    )
    return result, version


def user_profile(wallet: str, recent: int = 10) -> UserProfile:
    """A user's totals and rank, read in one snapshot so they always agree."""
    with read_snapshot() as conn:
        repo = PointsRepository(conn)
        user = repo.get_user(wallet)
        if user is None:
            raise NotFound(f"No user with wallet {wallet}")
        submissions = repo.recent_submissions(wallet, recent)
        rank, tied = rank_on(LeaderboardRepository(conn), ALL_TIME, wallet) or (0, False)
    return UserProfile(
        wallet_address=user["wallet_address"],
        total_points=user["total_points"],
        total_submissions=user["total_submissions"],
        tier=user["tier"],
        rank=rank,
        is_tied=tied,
        first_submission_at=user["first_submission_at"],
        last_submission_at=user["last_submission_at"],
        recent_submissions=[SubmissionOut.model_validate(s) for s in submissions],
    )


def user_achievements(wallet: str) -> list[AchievementOut]:
    with transaction() as conn:
        repo = PointsRepository(conn)
        if repo.get_user(wallet) is None:
            raise NotFound(f"No user with wallet {wallet}")
        rows = repo.achievements(wallet)
    return [AchievementOut.model_validate(r) for r in rows]
