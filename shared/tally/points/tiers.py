"""Tiers by total points (REFERENCE.md)."""

from __future__ import annotations

# (minimum total points, tier), highest first.
TIERS: tuple[tuple[int, str], ...] = (
    (100_000, "Legend"),
    (50_000, "Diamond"),
    (25_000, "Platinum"),
    (10_000, "Gold"),
    (5_000, "Silver"),
    (1_000, "Bronze"),
    (0, "Contributor"),
)
TIER_NAMES = tuple(name for _, name in reversed(TIERS))


def tier_for(total_points: int) -> str:
    for minimum, name in TIERS:
        if total_points >= minimum:
            return name
    return "Contributor"
