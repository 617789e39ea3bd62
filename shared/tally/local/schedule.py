"""EventBridge Scheduler expressions (rate, cron, at) evaluated locally, minute resolution."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

_RATE = re.compile(r"^rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)$")
_CRON = re.compile(r"^cron\((.+)\)$")
_AT = re.compile(r"^at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)$")
_UNIT_S = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {
    m: i
    for i, m in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], 1
    )
}
_DAYS = {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"], 1)}


class ScheduleError(ValueError):
    pass


def _field(text: str, low: int, high: int, names: dict[str, int] | None = None) -> set[int]:
    if text in ("*", "?"):
        return set(range(low, high + 1))
    values: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            step = int(step_text)
        if part in ("*", ""):
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = _value(a, names), _value(b, names)
        else:
            start = _value(part, names)
            end = high if "/" in text else start
        if not (low <= start <= high and low <= end <= high):
            raise ScheduleError(f"{text!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return values


def _value(text: str, names: dict[str, int] | None) -> int:
    if names and text.upper() in names:
        return names[text.upper()]
    if not text.isdigit():
        raise ScheduleError(f"Unsupported cron value {text!r} (L, W and # are not supported)")
    return int(text)


@dataclass(frozen=True)
class Cron:
    minutes: set[int]
    hours: set[int]
    days: set[int]
    months: set[int]
    weekdays: set[int]  # 1 = Sunday, as in AWS
    years: set[int]
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, body: str) -> Cron:
        parts = body.split()
        if len(parts) != 6:
            raise ScheduleError("AWS cron has six fields: min hour day month weekday year")
        minute, hour, dom, month, dow, year = parts
        if (dom == "?") == (dow == "?"):
            raise ScheduleError("Exactly one of day-of-month and day-of-week must be '?'")
        return cls(
            _field(minute, 0, 59),
            _field(hour, 0, 23),
            _field(dom, 1, 31),
            _field(month, 1, 12, _MONTHS),
            _field(dow, 1, 7, _DAYS),
            _field(year, 1970, 2199),
            dom in ("*", "?"),
            dow in ("*", "?"),
        )

    def matches_day(self, day: date) -> bool:
        weekday = (day.isoweekday() % 7) + 1  # Monday=2 ... Sunday=1
        return (
            day.year in self.years
            and day.month in self.months
            and (self.any_day or day.day in self.days)
            and (self.any_weekday or weekday in self.weekdays)
        )


def next_fire(expression: str, timezone: str, after: datetime, started: datetime) -> datetime:
    """The first fire time strictly after `after` (both aware datetimes, returned in UTC)."""
    if match := _RATE.match(expression):
        interval = timedelta(seconds=int(match.group(1)) * _UNIT_S[match.group(2).rstrip("s")])
        if interval <= timedelta(0):
            raise ScheduleError("A rate must be positive")
        periods = int((after - started) / interval) + 1
        return started + periods * interval
    zone = ZoneInfo(timezone)
    if match := _AT.match(expression):
        at = datetime.fromisoformat(match.group(1)).replace(tzinfo=zone).astimezone(UTC)
        return at if at > after else datetime.max.replace(tzinfo=UTC)
    if match := _CRON.match(expression):
        cron = Cron.parse(match.group(1))
        local_after = after.astimezone(zone)
        day = local_after.date()
        for _ in range(366 * 8):
            if cron.matches_day(day):
                for hour in sorted(cron.hours):
                    for minute in sorted(cron.minutes):
                        candidate = datetime(
                            day.year, day.month, day.day, hour, minute, tzinfo=zone
                        ).astimezone(UTC)
                        if candidate > after:
                            return candidate
            day += timedelta(days=1)
        return datetime.max.replace(tzinfo=UTC)
    raise ScheduleError(f"Unsupported schedule expression {expression!r}")
