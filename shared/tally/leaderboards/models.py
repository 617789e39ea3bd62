"""Boundary models of the leaderboards."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from tally.validation import text

SeasonSlug = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
]
MAX_SEASON_DAYS = 400
FIRST_YEAR, LAST_YEAR = 2000, 2100


def _check_instant(value: datetime | None, field: str) -> None:
    if value is None:
        return
    if value.tzinfo is None:
        raise ValueError(f"{field} needs a time zone (UTC is fine: ...Z)")
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise ValueError(f"{field} must fall between {FIRST_YEAR} and {LAST_YEAR}")


class SeasonIn(BaseModel):
    """POST /api/v1/leaderboard/seasons (admin)."""

    model_config = ConfigDict(extra="forbid")

    slug: SeasonSlug
    name: text(200, min_length=1)  # type: ignore[valid-type]
    starts_at: datetime
    ends_at: datetime

    @model_validator(mode="after")
    def _range(self) -> SeasonIn:
        for field in ("starts_at", "ends_at"):
            _check_instant(getattr(self, field), field)
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if (self.ends_at - self.starts_at).days > MAX_SEASON_DAYS:
            raise ValueError(f"a season lasts at most {MAX_SEASON_DAYS} days")
        self.starts_at = self.starts_at.astimezone(UTC)
        self.ends_at = self.ends_at.astimezone(UTC)
        return self


class SeasonUpdate(BaseModel):
    """PATCH /api/v1/leaderboard/seasons/{season}: any of name, starts_at, ends_at."""

    model_config = ConfigDict(extra="forbid")

    name: text(200, min_length=1) | None = None  # type: ignore[valid-type]
    starts_at: datetime | None = None
    ends_at: datetime | None = None

    @model_validator(mode="after")
    def _instants(self) -> SeasonUpdate:
        _check_instant(self.starts_at, "starts_at")
        _check_instant(self.ends_at, "ends_at")
        return self


class SeasonOut(BaseModel):
    slug: str
    name: str
    starts_at: datetime
    ends_at: datetime
    status: Literal["upcoming", "active", "ended", "closed"]
    weeks: int
    closed_at: datetime | None


class BoardEntry(BaseModel):
    rank: int
    is_tied: bool
    wallet_address: str
    points: int
    submissions: int
    tier: str


class BoardPage(BaseModel):
    board: str
    season: str | None = None
    week: int | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    closed: bool = False
    tiebreak: str
    items: list[BoardEntry]
    next_cursor: str | None


class AroundMe(BaseModel):
    board: str
    tiebreak: str
    user: BoardEntry
    above: list[BoardEntry]
    below: list[BoardEntry]


class WeekPoints(BaseModel):
    week_start: datetime
    week: int | None = None
    points: int


class UserStats(BaseModel):
    user_id: str
    season: str | None
    total_points: int
    rank: int | None
    is_tied: bool
    tier: str
    best_week: WeekPoints | None
    worst_week: WeekPoints | None
    current_streak_weeks: int
    longest_streak_weeks: int
    weekly_history: list[WeekPoints]


class JobResult(BaseModel):
    """What one leaderboard job run did."""

    model_config = ConfigDict(extra="allow")

    ran: bool = True
    rows: int = 0
    detail: dict[str, Any] = Field(default_factory=dict)


class SnapshotInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    date: datetime | None = Field(None, description="UTC day to snapshot; default today")


class AirdropInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    period: Annotated[str, StringConstraints(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")] | None = None


class PeriodCloseInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
