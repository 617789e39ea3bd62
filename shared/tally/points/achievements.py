"""The twenty achievements (REFERENCE.md), each a rule over a user's aggregate stats."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel


class UserStats(BaseModel):
    """One row of aggregates per wallet, computed in SQL by the points repository."""

    total_points: int
    tier: str
    submissions: int
    rare_submissions: int
    average_score: float  # mean quality score, 0-100
    first_bulks: int
    distinct_subjects: int
    grade_a_submissions: int
    verified_submissions: int
    active_days: int
    contributor_number: int | None


@dataclass(frozen=True)
class Achievement:
    key: str
    name: str
    description: str
    unlocked: Callable[[UserStats, int], bool]  # (stats, early adopter limit)


ACHIEVEMENTS: tuple[Achievement, ...] = (
    Achievement(
        "first_blood", "First Blood", "Submitted a first dataset", lambda s, _: s.submissions >= 1
    ),
    Achievement(
        "bulk_pioneer",
        "Bulk Pioneer",
        "First bulk submission of 100+ samples",
        lambda s, _: s.first_bulks >= 1,
    ),
    Achievement(
        "rare_hunter_1",
        "Rare Hunter I",
        "10 datasets in rare subjects",
        lambda s, _: s.rare_submissions >= 10,
    ),
    Achievement(
        "rare_hunter_2",
        "Rare Hunter II",
        "50 datasets in rare subjects",
        lambda s, _: s.rare_submissions >= 50,
    ),
    Achievement(
        "quality_master",
        "Quality Master",
        "Average quality score above 80",
        lambda s, _: s.submissions >= 1 and s.average_score > 80,
    ),
    Achievement(
        "quality_legend",
        "Quality Legend",
        "Average quality score above 90",
        lambda s, _: s.submissions >= 1 and s.average_score > 90,
    ),
    Achievement(
        "diamond_hands",
        "Diamond Hands",
        "Reached the Diamond tier",
        lambda s, _: s.total_points >= 50_000,
    ),
    Achievement(
        "legend_status",
        "Legend Status",
        "Reached the Legend tier",
        lambda s, _: s.total_points >= 100_000,
    ),
    Achievement(
        "early_adopter",
        "Early Adopter",
        "Among the platform's first contributors",
        lambda s, limit: s.contributor_number is not None and s.contributor_number <= limit,
    ),
    Achievement(
        "diversity_king",
        "Diversity King",
        "Datasets in 20+ subjects",
        lambda s, _: s.distinct_subjects >= 20,
    ),
    Achievement(
        "perfectionist",
        "Perfectionist",
        "5 grade-A submissions",
        lambda s, _: s.grade_a_submissions >= 5,
    ),
    Achievement(
        "bulk_master", "Bulk Master", "5+ first bulk submissions", lambda s, _: s.first_bulks >= 5
    ),
    Achievement(
        "content_creator", "Content Creator", "10 submissions", lambda s, _: s.submissions >= 10
    ),
    Achievement(
        "prolific_creator", "Prolific Creator", "50 submissions", lambda s, _: s.submissions >= 50
    ),
    Achievement(
        "master_creator", "Master Creator", "100 submissions", lambda s, _: s.submissions >= 100
    ),
    Achievement(
        "point_collector", "Point Collector", "10,000 points", lambda s, _: s.total_points >= 10_000
    ),
    Achievement(
        "point_magnate", "Point Magnate", "50,000 points", lambda s, _: s.total_points >= 50_000
    ),
    Achievement(
        "point_emperor", "Point Emperor", "100,000 points", lambda s, _: s.total_points >= 100_000
    ),
    Achievement(
        "verified_contributor",
        "Verified Contributor",
        "5 verified submissions",
        lambda s, _: s.verified_submissions >= 5,
    ),
    Achievement(
        "consistent_contributor",
        "Consistent Contributor",
        "30+ days with activity",
        lambda s, _: s.active_days >= 30,
    ),
)
ACHIEVEMENTS_BY_KEY = {a.key: a for a in ACHIEVEMENTS}


def unlocked_achievements(stats: UserStats, early_adopter_limit: int) -> list[Achievement]:
    return [a for a in ACHIEVEMENTS if a.unlocked(stats, early_adopter_limit)]
