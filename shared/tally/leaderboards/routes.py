"""HTTP routes of the leaderboards (the guide's /api/v1/leaderboard paths)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from tally.api.caching import conditional_response, versions
from tally.api.deps import access
from tally.auth import Role
from tally.leaderboards import exports, service
from tally.leaderboards.boards import ALL_TIME, iso_week_board, season_board, week_board
from tally.leaderboards.models import (
    AroundMe,
    BoardPage,
    SeasonIn,
    SeasonOut,
    SeasonUpdate,
    UserStats,
)
from tally.settings import get_settings

Season = Annotated[str, Path(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
Week = Annotated[int, Path(ge=1, le=60)]
UserId = Annotated[str, Path(min_length=3, max_length=128, pattern=r"^[A-Za-z0-9_:.\-]+$")]
Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[str | None, Query(max_length=800)]
TiebreakParam = Annotated[Literal["none", "earliest", "submissions"] | None, Query()]
Size = Annotated[int, Query(ge=1, le=50)]
Year = Annotated[int, Path(ge=2000, le=2100)]
IsoWeek = Annotated[int, Path(ge=1, le=53)]

router = APIRouter(prefix="/api/v1/leaderboard", tags=["leaderboards"])


def _limit(limit: int) -> int:
    return min(limit, get_settings().leaderboard_page_max)


def _board_key(season: str | None, week: int | None, iso_week: tuple[int, int] | None) -> str:
    if iso_week is not None:
        return iso_week_board(*iso_week)
    if season is None:
        return ALL_TIME
    return season_board(season) if week is None else week_board(season, week)


def _page(
    request: Request,
    limit: int,
    cursor: str | None,
    tiebreak: str | None,
    *,
    season: str | None = None,
    week: int | None = None,
    iso_week: tuple[int, int] | None = None,
) -> Response:
    """A cached page of whichever board the path names."""
    return conditional_response(
        request,
        _board_key(season, week, iso_week),
        lambda: service.board_version(season, week, iso_week),
        lambda: service.board_page(
            season=season,
            week=week,
            iso_week=iso_week,
            limit=_limit(limit),
            cursor=cursor,
            tiebreak=tiebreak,
        ),
    )


def _around(
    request: Request,
    user_id: str,
    size: int,
    tiebreak: str | None,
    *,
    season: str | None = None,
    week: int | None = None,
    iso_week: tuple[int, int] | None = None,
) -> Response:
    """A cached around-me window of whichever board the path names."""
    return conditional_response(
        request,
        _board_key(season, week, iso_week),
        lambda: service.board_version(season, week, iso_week),
        lambda: service.around(
            user_id, season=season, week=week, iso_week=iso_week, size=size, tiebreak=tiebreak
        ),
    )


@router.get("/seasons", **access(Role.PUBLIC))
def get_seasons() -> list[SeasonOut]:
    return service.list_seasons()


@router.post("/seasons", status_code=201, **access(Role.ADMIN))
def post_season(body: SeasonIn) -> SeasonOut:
    return service.create_season(body)


@router.patch("/seasons/{season}", **access(Role.ADMIN))
def patch_season(season: Season, body: SeasonUpdate) -> SeasonOut:
    updated = service.update_season(season, body)
    versions.clear()  # this environment answers from the new version at once
    return updated


@router.get("/season/{season}", response_model=BoardPage, **access(Role.PUBLIC))
def get_season_board(
    request: Request,
    season: Season,
    limit: Limit = 50,
    cursor: Cursor = None,
    tiebreak: TiebreakParam = None,
) -> Response:
    return _page(request, limit, cursor, tiebreak, season=season)


@router.get("/season/{season}/around/{user_id}", response_model=AroundMe, **access(Role.PUBLIC))
def get_season_around(
    request: Request,
    season: Season,
    user_id: UserId,
    size: Size = 5,
    tiebreak: TiebreakParam = None,
) -> Response:
    return _around(request, user_id, size, tiebreak, season=season)


@router.get("/week/{season}/{week}", response_model=BoardPage, **access(Role.PUBLIC))
def get_week_board(
    request: Request,
    season: Season,
    week: Week,
    limit: Limit = 50,
    cursor: Cursor = None,
    tiebreak: TiebreakParam = None,
) -> Response:
    return _page(request, limit, cursor, tiebreak, season=season, week=week)


@router.get(
    "/week/{season}/{week}/around/{user_id}", response_model=AroundMe, **access(Role.PUBLIC)
)
def get_week_around(
    request: Request,
    season: Season,
    week: Week,
    user_id: UserId,
    size: Size = 5,
    tiebreak: TiebreakParam = None,
) -> Response:
    return _around(request, user_id, size, tiebreak, season=season, week=week)


@router.get("/all/around/{user_id}", response_model=AroundMe, **access(Role.PUBLIC))
def get_all_time_around(
    request: Request, user_id: UserId, size: Size = 5, tiebreak: TiebreakParam = None
) -> Response:
    return _around(request, user_id, size, tiebreak)


@router.get("/iso-week/{year}/{week}", response_model=BoardPage, **access(Role.PUBLIC))
def get_iso_week_board(
    request: Request,
    year: Year,
    week: IsoWeek,
    limit: Limit = 50,
    cursor: Cursor = None,
    tiebreak: TiebreakParam = None,
) -> Response:
    return _page(request, limit, cursor, tiebreak, iso_week=(year, week))


@router.get(
    "/iso-week/{year}/{week}/around/{user_id}", response_model=AroundMe, **access(Role.PUBLIC)
)
def get_iso_week_around(
    request: Request,
    year: Year,
    week: IsoWeek,
    user_id: UserId,
    size: Size = 5,
    tiebreak: TiebreakParam = None,
) -> Response:
    return _around(request, user_id, size, tiebreak, iso_week=(year, week))


@router.get("/user/{user_id}/stats", **access(Role.PUBLIC))
def get_user_stats(
    user_id: UserId,
    season: Annotated[
        str | None, Query(max_length=63, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    ] = None,
) -> UserStats:
    return service.user_stats(user_id, season)


def _export(season: str, week: int | None, fmt: str, tiebreak: str | None) -> Response:
    stream, version = service.export_rows(season, week, fmt, tiebreak)
    filename = service.export_filename(season, week, fmt)
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
    if get_settings().export_bucket:
        # Lambda responses are buffered and capped at 6 MB: large files go through S3, once
        # per board version.
        url = exports.publish(stream, filename, media, version=version)
        return RedirectResponse(url, status_code=303)
    return StreamingResponse(
        stream,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


Format = Annotated[Literal["csv", "json"], Query(alias="format")]


@router.get(
    "/export/{season}",
    **access(Role.PUBLIC),
    responses={
        200: {"content": {"text/csv": {}, "application/json": {}}},
        303: {"description": "In AWS: a pre-signed S3 link to the file"},
    },
)
def get_export(season: Season, fmt: Format = "csv", tiebreak: TiebreakParam = None) -> Response:
    return _export(season, None, fmt, tiebreak)


@router.get(
    "/export/{season}/week/{week}",
    **access(Role.PUBLIC),
    responses={
        200: {"content": {"text/csv": {}, "application/json": {}}},
        303: {"description": "In AWS: a pre-signed S3 link to the file"},
    },
)
def get_week_export(
    season: Season, week: Week, fmt: Format = "csv", tiebreak: TiebreakParam = None
) -> Response:
    return _export(season, week, fmt, tiebreak)
