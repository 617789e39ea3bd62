"""HTTP routes of the points system. Thin: validate, call the service, shape the answer."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request, Response, status

from tally.api.caching import conditional_response
from tally.api.deps import access, caller, created_or_existing
from tally.auth import Principal, Role
from tally.leaderboards.boards import ALL_TIME
from tally.leaderboards.service import board_version
from tally.points import service
from tally.points.models import (
    AbuseFlagOut,
    AchievementOut,
    FlagReview,
    LeaderboardPage,
    UserProfile,
    VerificationIn,
    VerificationOut,
)
from tally.points.recompute import RecomputeReport, RecomputeRequest, recompute
from tally.settings import get_settings

Wallet = Annotated[str, Path(min_length=3, max_length=128, pattern=r"^[A-Za-z0-9_:.\-]+$")]

leaderboard_router = APIRouter(tags=["points"])
verification_router = APIRouter(tags=["verifications"])
admin_router = APIRouter(tags=["admin"])


@leaderboard_router.get("/api/leaderboard", response_model=LeaderboardPage, **access(Role.PUBLIC))
def get_leaderboard(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(max_length=800)] = None,
) -> Response:
    return conditional_response(
        request,
        ALL_TIME,
        board_version,
        lambda: service.leaderboard(min(limit, get_settings().leaderboard_page_max), cursor),
    )


@leaderboard_router.get("/api/users/{wallet}", **access(Role.PUBLIC))
def get_user(wallet: Wallet) -> UserProfile:
    return service.user_profile(wallet)


@leaderboard_router.get("/api/users/{wallet}/achievements", **access(Role.PUBLIC))
def get_user_achievements(wallet: Wallet) -> list[AchievementOut]:
    return service.user_achievements(wallet)


@leaderboard_router.get("/api/me", **access(Role.USER))
def get_me(principal: Principal = caller(Role.USER)) -> UserProfile:
    return service.user_profile(principal.subject)


@verification_router.post(
    "/api/verifications",
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": VerificationOut, "description": "The session was already known"}},
    **access(Role.SERVICE),
)
def post_verification(body: VerificationIn, response: Response) -> VerificationOut:
    session, created = service.record_verification(body)
    created_or_existing(response, created)
    return session


@verification_router.get("/api/verifications/{session_id}", **access(Role.SERVICE))
def get_verification(session_id: UUID) -> VerificationOut:
    return service.get_verification(session_id)


@admin_router.get("/api/admin/flags", **access(Role.ADMIN))
def get_flags(
    flag_status: Annotated[
        Literal["open", "cleared", "rejected"] | None, Query(alias="status")
    ] = "open",
    cursor: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[AbuseFlagOut]:
    return service.list_flags(flag_status, cursor, limit)


@admin_router.post("/api/admin/flags/{flag_id}/review", **access(Role.ADMIN))
def post_flag_review(
    flag_id: Annotated[int, Path(ge=1)],
    review: FlagReview,
    principal: Principal = caller(Role.ADMIN),
) -> AbuseFlagOut:
    return service.review_flag(flag_id, review, reviewer=principal.subject)


@admin_router.post("/api/admin/points/recompute", **access(Role.ADMIN))
def post_recompute(body: RecomputeRequest) -> RecomputeReport:
    """Dry run by default: the diff of every award under today's rules."""
    return recompute(apply=body.apply)
