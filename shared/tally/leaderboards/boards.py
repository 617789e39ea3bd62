"""Board keys and orderings: which rows a board holds and how they are ranked."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

ALL_TIME = "all"


def season_board(slug: str) -> str:
    return f"season:{slug}"


def week_board(slug: str, week: int) -> str:
    return f"season:{slug}:w{week}"


def iso_week_board(year: int, week: int) -> str:
    return f"week:{year:04d}-W{week:02d}"


class Tiebreak(StrEnum):
    """How users with equal points are ordered. `none` is competition ranking (1, 2, 2, 4)."""

    NONE = "none"
    EARLIEST = "earliest"  # who reached the score first ranks higher
    SUBMISSIONS = "submissions"  # more submissions ranks higher


@dataclass(frozen=True)
class WeekSpan:
    number: int
    starts_at: datetime
    ends_at: datetime


def season_weeks(starts_at: datetime, ends_at: datetime) -> list[WeekSpan]:
    """The ISO weeks (Monday 00:00 UTC) that meet the season, clipped to it; week 1 first."""
    start = starts_at.astimezone(UTC)
    monday = (start - timedelta(days=start.weekday())).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    weeks = []
    number = 1
    while monday < ends_at:
        following = monday + timedelta(days=7)
        weeks.append(WeekSpan(number, max(monday, starts_at), min(following, ends_at)))
        monday = following
        number += 1
    return weeks
