"""HTTP routes of community activity (the guide's /api/community paths)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from aws_lambda_powertools import Logger
from fastapi import APIRouter, Path, Query, Response, status

from tally.api.deps import access, acting_for, caller
from tally.auth import Principal, Role
from tally.community import etl, service
from tally.community.dispatch import start_backfill
from tally.community.models import (
    BackfillIn,
    BackfillOut,
    HealthOut,
    ProfileIn,
    ProfileOut,
    QuestsOut,
    RadarOut,
    TapBatchIn,
    TapBatchOut,
    WeeklyOut,
    check_zone,
)
from tally.errors import InvalidInput

Address = Annotated[str, Path(min_length=3, max_length=128, pattern=r"^[A-Za-z0-9_:.\-]+$")]
UserParam = Annotated[
    str | None, Query(min_length=3, max_length=128, pattern=r"^[A-Za-z0-9_:.\-]+$")
]
TzParam = Annotated[str | None, Query(max_length=64, description="IANA zone, e.g. Europe/Berlin")]
Debug = Annotated[bool, Query(description="1 adds the boundaries and counts used")]

router = APIRouter(tags=["community"])
logger = Logger(child=True)


def _zone(tz: str | None) -> str | None:
    if tz is None:
        return None
    try:
        return check_zone(tz)
    except ValueError as exc:
        raise InvalidInput(str(exc), code="invalid_tz") from exc


@router.post("/api/community/taps", **access(Role.SERVICE))
def post_taps(body: TapBatchIn, response: Response) -> TapBatchOut:
    result = service.record_taps(body)
    response.status_code = status.HTTP_201_CREATED if result.accepted else status.HTTP_200_OK
    return result


@router.put("/api/profiles/{address}", **access(Role.USER))
def put_profile(
    address: Address, body: ProfileIn, principal: Principal = caller(Role.USER)
) -> ProfileOut:
    return service.put_profile(acting_for(principal, address), body)


@router.get("/api/profiles/{address}", **access(Role.USER))
def get_profile(address: Address, principal: Principal = caller(Role.USER)) -> ProfileOut:
    return service.get_profile(acting_for(principal, address))


@router.get("/api/community/weekly", **access(Role.USER))
def get_weekly(
    tz: TzParam = None,
    debug: Debug = False,
    user_id: UserParam = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    principal: Principal = caller(Role.USER),
) -> WeeklyOut:
    return service.weekly(acting_for(principal, user_id), _zone(tz), limit, debug)


@router.get("/api/community/quests", **access(Role.USER))
def get_quests(
    tz: TzParam = None,
    debug: Debug = False,
    user_id: UserParam = None,
    principal: Principal = caller(Role.USER),
) -> QuestsOut:
    return service.quests(acting_for(principal, user_id), _zone(tz), debug)


@router.get("/api/community/radar", **access(Role.USER))
def get_radar(
    tz: TzParam = None,
    debug: Debug = False,
    hours: Annotated[int, Query(ge=1, le=168)] = 24,
    top: Annotated[int, Query(ge=1, le=50)] = 10,
) -> RadarOut:
    return service.radar(_zone(tz) or "UTC", hours, top, debug)


@router.get("/api/community/health", **access(Role.USER))
def get_health(
    tz: TzParam = None,
    debug: Debug = False,
    user_id: UserParam = None,
    limit: Annotated[int, Query(ge=1, le=50)] = 15,
    principal: Principal = caller(Role.USER),
) -> HealthOut:
    return service.health(acting_for(principal, user_id), _zone(tz), limit, debug)


@router.post(
    "/api/admin/community/backfill", status_code=status.HTTP_202_ACCEPTED, **access(Role.ADMIN)
)
def post_backfill(body: BackfillIn, principal: Principal = caller(Role.ADMIN)) -> BackfillOut:
    request = etl.request_backfill(body.from_day, body.to_day, principal.subject)
    try:
        start_backfill(request.id)
    except Exception:  # queued: the next nightly run starts it
        logger.exception("Could not hand the backfill over", extra={"backfill": str(request.id)})
    return request


@router.get("/api/admin/community/backfill/{backfill_id}", **access(Role.ADMIN))
def get_backfill(backfill_id: UUID) -> BackfillOut:
    return etl.get_backfill(backfill_id)
