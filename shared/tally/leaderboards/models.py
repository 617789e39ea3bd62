"""Boundary models of the leaderboards."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

SeasonSlug = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
]
MAX_SEASON_DAYS = 400


class SeasonIn(BaseModel):
    """POST /api/v1/leaderboard/seasons (admin)."""

    model_config = ConfigDict(extra="forbid")

    slug: SeasonSlug
    name: str = Field(min_length=1, max_length=200)
    starts_at: datetime
    ends_at: datetime

    @model_validator(mode="after")
    def _range(self) -> SeasonIn:
        for field in ("starts_at", "ends_at"):
            if getattr(self, field).tzinfo is None:
                raise ValueError(f"{field} needs a time zone (UTC is fine: ...Z)")
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if (self.ends_at - self.starts_at).days > MAX_SEASON_DAYS:
            raise ValueError(f"a season lasts at most {MAX_SEASON_DAYS} days")
        self.starts_at = self.starts_at.astimezone(UTC)
        self.ends_at = self.ends_at.astimezone(UTC)
        return self


class SeasonUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    starts_at: datetime | None = None
    ends_at: datetime | None = None


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
