"""Boundary models of community activity: tap batches, profiles, the ETL's input and output,
and the four community endpoints."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from tally.validation import check_json_value, text

UserId = Annotated[
    str, StringConstraints(min_length=3, max_length=128, pattern=r"^[A-Za-z0-9_:.\-]+$")
]
ClientTapId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_:.\-]+$")
]
_ZONES: frozenset[str] | None = None
# Names in the zone database that are not places: the server's own zone, and aliases of others.
NOT_PLACES = frozenset({"localtime", "posixrules", "Factory"})


def check_zone(name: str) -> str:
    """An IANA zone name PostgreSQL and Python both know ("UTC", "America/New_York")."""
    global _ZONES
    if _ZONES is None:
        _ZONES = frozenset(
            zone
            for zone in available_timezones()
            if zone not in NOT_PLACES and not zone.startswith(("posix/", "right/"))
        ) | {"UTC"}
    if name not in _ZONES:
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. America/New_York)")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{name!r} is not an IANA time zone") from exc
    return name


Zone = Annotated[str, StringConstraints(max_length=64), AfterValidator(check_zone)]


# -- input ---------------------------------------------------------------------------------------


class TapIn(BaseModel):
    """One interaction between two users. client_tap_id makes a resend harmless."""

    model_config = ConfigDict(extra="forbid")

    client_tap_id: ClientTapId
    id1: UserId
    id2: UserId
    time: datetime

    @model_validator(mode="after")
    def _check(self) -> TapIn:
        if self.id1 == self.id2:
            raise ValueError("a tap needs two different users (id1 == id2)")
        if self.time.tzinfo is None:
            raise ValueError("time needs a time zone (UTC is fine: ...Z)")
        return self


class TapBatchIn(BaseModel):
    """POST /api/community/taps (service)."""

    model_config = ConfigDict(extra="forbid")

    # TAP_BATCH_MAX (service) sets the working limit; this is its ceiling.
    taps: list[TapIn] = Field(min_length=1, max_length=10_000)


class TapBatchOut(BaseModel):
    accepted: int = Field(description="Taps stored by this request.")
    duplicates: int = Field(description="Taps already stored under the same client_tap_id.")


class ProfileIn(BaseModel):
    """PUT /api/community/profiles/{address} (service)."""

    model_config = ConfigDict(extra="forbid")

    display_name: text(100) | None = None  # type: ignore[valid-type]
    location: text(200) | None = None  # type: ignore[valid-type]
    timezone: Zone = "UTC"
    attributes: dict[str, Any] = Field(default_factory=dict)
    opt_in: bool = True

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_json_value(value, where="attributes")
        return value


class ProfileOut(BaseModel):
    address: str
    display_name: str | None
    location: str | None
    timezone: str
    attributes: dict[str, Any]
    opt_in: bool
    updated_at: datetime


# -- the ETL -------------------------------------------------------------------------------------


class CommunityEtlInput(BaseModel):
    """The ETL function's event: the nightly schedule's Input, or a backfill."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["nightly", "backfill"] = "nightly"
    backfill_id: UUID | None = None
    from_day: date | None = None
    to_day: date | None = None

    @model_validator(mode="after")
    def _check(self) -> CommunityEtlInput:
        if self.mode == "backfill" and self.backfill_id is None:
            if self.from_day is None or self.to_day is None:
                raise ValueError("a backfill needs backfill_id, or from_day and to_day")
            if self.to_day < self.from_day:
                raise ValueError("to_day is before from_day")
        return self


class StageResult(BaseModel):
    stage: str
    keys: int = Field(0, description="Rows the stage looked at (users, days, pairs, hours).")
    written: int = Field(0, description="Rows it inserted, changed or removed.")
    chunks: int = 0
    received_upto: datetime | None = None
    seconds: float = 0.0
    detail: dict[str, Any] = Field(default_factory=dict)


class EtlResult(BaseModel):
    mode: Literal["nightly", "backfill"]
    ran: bool = True
    complete: bool = Field(True, description="False when it stopped early to beat its deadline.")
    horizon: datetime | None = None
    stages: list[StageResult] = Field(default_factory=list)
    backfill_id: UUID | None = None


class BackfillIn(BaseModel):
    """POST /api/admin/community/backfill (admin): rebuild the rollups of a date range."""

    model_config = ConfigDict(extra="forbid")

    from_day: date
    to_day: date

    @model_validator(mode="after")
    def _check(self) -> BackfillIn:
        if self.to_day < self.from_day:
            raise ValueError("to_day is before from_day")
        if not (self.from_day.year >= 2000 and self.to_day.year <= 2100):
            raise ValueError("days must fall between 2000 and 2100")
        return self


class BackfillOut(BaseModel):
    id: UUID
    from_day: date
    to_day: date
    next_day: date
    status: Literal["queued", "running", "done", "failed"]
    requested_by: str | None
    error: str | None
    requested_at: datetime
    updated_at: datetime
    finished_at: datetime | None


# -- the community endpoints ---------------------------------------------------------------------


class Meta(BaseModel):
    tz_used: str
    generated_at: datetime
    as_of: datetime | None = Field(
        None, description="Rollups include taps received before this instant."
    )
    debug: dict[str, Any] | None = None


class WeekStats(BaseModel):
    week_start: date
    taps: int = 0
    distinct_counterparts: int = 0
    new_connections: int = 0
    second_degree_reach: int = 0
    active_days: int = 0
    current_streak: int = 0
    longest_streak: int = 0


class WeeklyBoardEntry(BaseModel):
    rank: int
    user_id: str
    display_name: str | None
    new_connections: int
    second_degree_growth: int
    streak_days: int


class PersonToMeet(BaseModel):
    user_id: str
    display_name: str | None
    score: float
    mutuals: int
    recency: float
    proximity: float


class WeeklyOut(BaseModel):
    user_id: str
    me: WeekStats
    leaderboard: list[WeeklyBoardEntry]
    people_to_meet: list[PersonToMeet]
    meta: Meta


class QuestProgress(BaseModel):
    slug: str
    title: str
    description: str
    unit: str
    target: int
    progress: int
    completed: bool
    completed_at: datetime | None
    reward_points: int
    period_start: date


class QuestsOut(BaseModel):
    user_id: str
    quests: list[QuestProgress]
    meta: Meta


class RadarBucket(BaseModel):
    start: datetime = Field(description="The hour's start, in tz_used.")
    taps: int
    unique_users: int
    surge_multiplier: float | None = None


class Participant(BaseModel):
    user_id: str
    display_name: str | None
    taps: int


class RadarOut(BaseModel):
    hours: int
    buckets: list[RadarBucket]
    top_participants: list[Participant]
    meta: Meta


class Connection(BaseModel):
    user_id: str
    display_name: str | None
    strength: float
    taps_90d: int
    last_tap_at: datetime
    days_since_last_tap: float
    health: Literal["thriving", "healthy", "fading", "dormant"]


class HealthOut(BaseModel):
    user_id: str
    connections: list[Connection]
    meta: Meta
