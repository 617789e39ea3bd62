"""The twenty achievements (REFERENCE.md), each a rule over a user's aggregate stats."""

from __future__ import annotations

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
    early_adopter: int = 0  # derived from contributor_number and the configured limit


@dataclass(frozen=True)
class Achievement:
    key: str
    name: str
    description: str
    stat: str  # a UserStats field
    threshold: float
    strictly_above: bool = False

    def unlocked(self, stats: UserStats) -> bool:
        value = getattr(stats, self.stat)
        return bool(value > self.threshold if self.strictly_above else value >= self.threshold)


def _a(
    key: str, name: str, description: str, stat: str, threshold: float, strictly_above: bool = False
) -> Achievement:
    return Achievement(key, name, description, stat, threshold, strictly_above)


ACHIEVEMENTS: tuple[Achievement, ...] = (
    _a("first_blood", "First Blood", "Submitted a first dataset", "submissions", 1),
    _a("bulk_pioneer", "Bulk Pioneer", "First bulk submission of 100+ samples", "first_bulks", 1),
    _a("rare_hunter_1", "Rare Hunter I", "10 datasets in rare subjects", "rare_submissions", 10),
    _a("rare_hunter_2", "Rare Hunter II", "50 datasets in rare subjects", "rare_submissions", 50),
    _a(
        "quality_master",
        "Quality Master",
        "Average quality score above 80",
        "average_score",
        80,
        strictly_above=True,
    ),
    _a(
        "quality_legend",
        "Quality Legend",
        "Average quality score above 90",
        "average_score",
        90,
        strictly_above=True,
    ),
    _a("diamond_hands", "Diamond Hands", "Reached the Diamond tier", "total_points", 50_000),
    _a("legend_status", "Legend Status", "Reached the Legend tier", "total_points", 100_000),
    _a(
        "early_adopter",
        "Early Adopter",
        "Among the platform's first contributors",
        "early_adopter",
        1,
    ),
    _a("diversity_king", "Diversity King", "Datasets in 20+ subjects", "distinct_subjects", 20),
    _a("perfectionist", "Perfectionist", "5 grade-A submissions", "grade_a_submissions", 5),
    _a("bulk_master", "Bulk Master", "5+ first bulk submissions", "first_bulks", 5),
    _a("content_creator", "Content Creator", "10 submissions", "submissions", 10),
    _a("prolific_creator", "Prolific Creator", "50 submissions", "submissions", 50),
    _a("master_creator", "Master Creator", "100 submissions", "submissions", 100),
    _a("point_collector", "Point Collector", "10,000 points", "total_points", 10_000),
    _a("point_magnate", "Point Magnate", "50,000 points", "total_points", 50_000),
    _a("point_emperor", "Point Emperor", "100,000 points", "total_points", 100_000),
    _a(
        "verified_contributor",
        "Verified Contributor",
        "5 verified submissions",
        "verified_submissions",
        5,
    ),
    _a(
        "consistent_contributor",
        "Consistent Contributor",
        "30+ days with activity",
        "active_days",
        30,
    ),
)
ACHIEVEMENTS_BY_KEY = {a.key: a for a in ACHIEVEMENTS}


def unlocked_achievements(stats: UserStats, early_adopter_limit: int) -> list[Achievement]:
    number = stats.contributor_number
    early = int(number is not None and number <= early_adopter_limit)
    stats = stats.model_copy(update={"early_adopter": early})
    return [a for a in ACHIEVEMENTS if a.unlocked(stats)]
