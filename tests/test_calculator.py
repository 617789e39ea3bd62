"""The points formula: hand-computed cases and hypothesis properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tally.points.achievements import ACHIEVEMENTS, UserStats, unlocked_achievements
from tally.points.calculator import (
    SPECIFICITY_MULTIPLIERS,
    PointsInput,
    calculate_points,
    quality_multiplier,
    subject_rarity,
)
from tally.points.tiers import tier_for

RULES = {"rule_version": "v1", "min_quality_score": 0.3, "early_contributor_datasets": 100}

inputs = st.builds(
    PointsInput,
    rarity_score=st.floats(0, 100, allow_nan=False),
    quality_score=st.floats(0, 1, allow_nan=False),
    specificity_grade=st.sampled_from(list(SPECIFICITY_MULTIPLIERS)),
    verified=st.booleans(),
    is_first_bulk=st.booleans(),
    subject_dataset_count=st.integers(0, 1000),
    dataset_number=st.integers(1, 10_000),
)


def test_hand_computed_award() -> None:
    # 85 rarity, quality 0.8 -> 1.4, first bulk 2.0, subject new -> 5.0, grade A 1.3,
    # verified 1.2, dataset #1 -> 1.5: 85 * 1.4 * 2 * 5 * 1.3 * 1.2 * 1.5 = 2784.6 -> 2785
    b = calculate_points(
        PointsInput(
            rarity_score=85,
            quality_score=0.8,
            specificity_grade="A",
            verified=True,
            is_first_bulk=True,
            subject_dataset_count=0,
            dataset_number=1,
        ),
        **RULES,
    )
    assert b.quality_multiplier == 1.4
    assert (b.bulk_multiplier, b.subject_rarity_multiplier) == (2.0, 5.0)
    assert (b.specificity_multiplier, b.verification_multiplier) == (1.3, 1.2)
    assert b.early_contributor_multiplier == 1.5
    assert b.points == 2785


def test_plain_award_after_early_window() -> None:
    b = calculate_points(
        PointsInput(
            rarity_score=50,
            quality_score=0.6,
            specificity_grade="F",
            subject_dataset_count=30,
            dataset_number=101,
        ),
        **RULES,
    )
    # 50 * 1.3 * 1 * 0.5 * 1 * 1 * 1 = 32.5 -> 33 (half up)
    assert b.subject_rarity_tier == "Oversaturated"
    assert b.points == 33


def test_quality_gate() -> None:
    b = calculate_points(
        PointsInput(rarity_score=90, quality_score=0.29, dataset_number=5), **RULES
    )
    assert b.points == 0 and b.gated and b.gate_reason == "quality_below_minimum"


@pytest.mark.parametrize(
    ("count", "tier", "mult"),
    [
        (0, "Critical", 5.0),
        (2, "Critical", 5.0),
        (3, "High", 3.0),
        (6, "Medium", 2.0),
        (11, "Common", 1.0),
        (24, "Common", 1.0),
        (25, "Oversaturated", 0.5),
    ],
)
def test_subject_rarity_tiers(count: int, tier: str, mult: float) -> None:
    assert subject_rarity(count) == (tier, mult)


@pytest.mark.parametrize(
    ("points", "tier"),
    [
        (0, "Contributor"),
        (999, "Contributor"),
        (1000, "Bronze"),
        (4999, "Bronze"),
        (5000, "Silver"),
        (10_000, "Gold"),
        (25_000, "Platinum"),
        (49_999, "Platinum"),
        (50_000, "Diamond"),
        (99_999, "Diamond"),
        (100_000, "Legend"),
        (10**9, "Legend"),
    ],
)
def test_tiers(points: int, tier: str) -> None:
    assert tier_for(points) == tier


@given(inputs)
def test_multipliers_stay_in_their_ranges(data: PointsInput) -> None:
    b = calculate_points(data, **RULES)
    assert 1.0 <= b.quality_multiplier <= 1.5
    assert 1.0 <= b.bulk_multiplier <= 2.0
    assert 0.5 <= b.subject_rarity_multiplier <= 5.0
    assert 1.0 <= b.specificity_multiplier <= 1.3
    assert 1.0 <= b.verification_multiplier <= 1.2
    assert 1.0 <= b.early_contributor_multiplier <= 1.5
    assert 0 <= b.points <= math.ceil(100 * 1.5 * 2.0 * 5.0 * 1.3 * 1.2 * 1.5)


@given(inputs)
def test_breakdown_reproduces_the_total(data: PointsInput) -> None:
    b = calculate_points(data, **RULES)
    product = (
        b.quality_multiplier
        * b.bulk_multiplier
        * b.subject_rarity_multiplier
        * b.specificity_multiplier
        * b.verification_multiplier
        * b.early_contributor_multiplier
    )
    assert math.isclose(product, b.total_multiplier, rel_tol=1e-6)
    expected = 0 if b.gated else math.floor(b.base_points * product + 0.5)
    assert b.points == expected


def _with(data: PointsInput, **changes: object) -> PointsInput:
    return data.model_copy(update=changes)


@given(inputs, st.floats(0, 100, allow_nan=False))
def test_monotonic_in_rarity(data: PointsInput, other: float) -> None:
    low, high = sorted([data.rarity_score, other])
    assert (
        calculate_points(_with(data, rarity_score=low), **RULES).points
        <= calculate_points(_with(data, rarity_score=high), **RULES).points
    )


@given(inputs, st.floats(0.3, 1, allow_nan=False))
def test_monotonic_in_quality_above_the_gate(data: PointsInput, other: float) -> None:
    data = _with(data, quality_score=max(data.quality_score, 0.3))
    low, high = sorted([data.quality_score, other])
    assert (
        calculate_points(_with(data, quality_score=low), **RULES).points
        <= calculate_points(_with(data, quality_score=high), **RULES).points
    )


@given(inputs)
def test_each_flag_multiplier_never_lowers_points(data: PointsInput) -> None:
    for field in ("is_first_bulk", "verified"):
        off = calculate_points(_with(data, **{field: False}), **RULES).points
        on = calculate_points(_with(data, **{field: True}), **RULES).points
        assert off <= on


@given(inputs, st.integers(0, 1000))
def test_rarer_subjects_never_earn_less(data: PointsInput, other: int) -> None:
    few, many = sorted([data.subject_dataset_count, other])
    assert (
        calculate_points(_with(data, subject_dataset_count=many), **RULES).points
        <= calculate_points(_with(data, subject_dataset_count=few), **RULES).points
    )


@given(inputs)
def test_better_grades_never_earn_less(data: PointsInput) -> None:
    points = [
        calculate_points(_with(data, specificity_grade=g), **RULES).points
        for g in ("F", "D", "C", "B", "A")
    ]
    assert points == sorted(points)


@given(inputs, st.integers(1, 10_000))
def test_earlier_datasets_never_earn_less(data: PointsInput, other: int) -> None:
    early, late = sorted([data.dataset_number, other])
    assert (
        calculate_points(_with(data, dataset_number=late), **RULES).points
        <= calculate_points(_with(data, dataset_number=early), **RULES).points
    )


def test_quality_multiplier_is_linear() -> None:
    assert quality_multiplier(0) == 1.0
    assert quality_multiplier(0.5) == 1.25
    assert quality_multiplier(1) == 1.5


def _stats(**overrides: object) -> UserStats:
    base: dict[str, object] = {
        "total_points": 0,
        "tier": "Contributor",
        "submissions": 0,
        "rare_submissions": 0,
        "average_score": 0.0,
        "first_bulks": 0,
        "distinct_subjects": 0,
        "grade_a_submissions": 0,
        "verified_submissions": 0,
        "active_days": 0,
        "contributor_number": None,
    }
    return UserStats.model_validate(base | overrides)


@pytest.mark.parametrize(
    ("stats", "expected"),
    [
        ({}, set()),
        ({"submissions": 1, "average_score": 80.0}, {"first_blood"}),
        ({"submissions": 1, "average_score": 80.5}, {"first_blood", "quality_master"}),
        (
            {"submissions": 10, "average_score": 95.0},
            {"first_blood", "content_creator", "quality_master", "quality_legend"},
        ),
        ({"contributor_number": 100}, {"early_adopter"}),
        ({"contributor_number": 101}, set()),
        ({"total_points": 50_000}, {"diamond_hands", "point_collector", "point_magnate"}),
        (
            {
                "first_bulks": 5,
                "rare_submissions": 10,
                "distinct_subjects": 20,
                "grade_a_submissions": 5,
                "verified_submissions": 5,
                "active_days": 30,
            },
            {
                "bulk_pioneer",
                "bulk_master",
                "rare_hunter_1",
                "diversity_king",
                "perfectionist",
                "verified_contributor",
                "consistent_contributor",
            },
        ),
    ],
)
def test_achievement_thresholds(stats: dict[str, object], expected: set[str]) -> None:
    unlocked = {a.key for a in unlocked_achievements(_stats(**stats), early_adopter_limit=100)}
    assert unlocked == expected


def test_there_are_twenty_achievements() -> None:
    assert len(ACHIEVEMENTS) == 20
    assert len({a.key for a in ACHIEVEMENTS}) == 20
