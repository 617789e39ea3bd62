"""The points formula (REFERENCE.md): rarity x quality x bulk x subject x specificity x
verification x early, rounded to an integer. Pure: no I/O, so it can be property-tested."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Grade = Literal["A", "B", "C", "D", "F"]

SPECIFICITY_MULTIPLIERS: dict[str, float] = {"A": 1.3, "B": 1.2, "C": 1.1, "D": 1.05, "F": 1.0}

# (minimum datasets already recorded for the subject, tier name, multiplier), rarest first.
SUBJECT_RARITY_TIERS: tuple[tuple[int, str, float], ...] = (
    (25, "Oversaturated", 0.5),
    (11, "Common", 1.0),
    (6, "Medium", 2.0),
    (3, "High", 3.0),
    (0, "Critical", 5.0),
)

QUALITY_MULTIPLIER_RANGE = (1.0, 1.5)
BULK_MULTIPLIER = 2.0
VERIFICATION_MULTIPLIER = 1.2
EARLY_CONTRIBUTOR_MULTIPLIER = 1.5


class PointsInput(BaseModel):
    """Everything the formula depends on, resolved by the award service beforehand."""

    model_config = ConfigDict(frozen=True)

    rarity_score: float = Field(ge=0, le=100)
    quality_score: float = Field(ge=0, le=1)
    specificity_grade: Grade = "F"
    verified: bool = False
    is_first_bulk: bool = False
    subject_dataset_count: int = Field(0, ge=0, description="Datasets the subject had before.")
    dataset_number: int = Field(ge=1, description="This dataset's position on the platform.")


class PointsBreakdown(BaseModel):
    model_config = ConfigDict(frozen=True)

    points: int
    base_points: float
    quality_multiplier: float
    bulk_multiplier: float
    subject_rarity_multiplier: float
    subject_rarity_tier: str
    specificity_multiplier: float
    verification_multiplier: float
    early_contributor_multiplier: float
    total_multiplier: float
    gated: bool = False
    gate_reason: str | None = None
    rule_version: str


def round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def quality_multiplier(quality_score: float) -> float:
    low, high = QUALITY_MULTIPLIER_RANGE
    return round(low + (high - low) * min(max(quality_score, 0.0), 1.0), 3)


def subject_rarity(subject_dataset_count: int) -> tuple[str, float]:
    for minimum, tier, multiplier in SUBJECT_RARITY_TIERS:
        if subject_dataset_count >= minimum:
            return tier, multiplier
    raise AssertionError("unreachable: the last tier starts at 0")


def calculate_points(
    data: PointsInput,
    *,
    rule_version: str,
    min_quality_score: float,
    early_contributor_datasets: int,
) -> PointsBreakdown:
    tier, subject_multiplier = subject_rarity(data.subject_dataset_count)
    multipliers = {
        "quality_multiplier": quality_multiplier(data.quality_score),
        "bulk_multiplier": BULK_MULTIPLIER if data.is_first_bulk else 1.0,
        "subject_rarity_multiplier": subject_multiplier,
        "specificity_multiplier": SPECIFICITY_MULTIPLIERS[data.specificity_grade],
        "verification_multiplier": VERIFICATION_MULTIPLIER if data.verified else 1.0,
        "early_contributor_multiplier": (
            EARLY_CONTRIBUTOR_MULTIPLIER
            if data.dataset_number <= early_contributor_datasets
            else 1.0
        ),
    }
    total = math.prod(multipliers.values())
    gated = data.quality_score < min_quality_score
    points = 0 if gated else round_half_up(data.rarity_score * total)
    return PointsBreakdown(
        points=points,
        base_points=data.rarity_score,
        subject_rarity_tier=tier,
        total_multiplier=round(total, 6),
        gated=gated,
        gate_reason="quality_below_minimum" if gated else None,
        rule_version=rule_version,
        **multipliers,
    )
