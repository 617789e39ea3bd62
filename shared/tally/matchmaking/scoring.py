"""Compatibility scorers: pluggable (MATCH_SCORER=module:Class), each a score in [0, 1] with the
reasons a voter sees."""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Member:
    """What a scorer may use: the profile's attributes and parsed home location."""

    address: str
    attributes: dict[str, Any] = field(default_factory=dict)
    city: str | None = None
    region: str | None = None
    country: str | None = None


@dataclass(frozen=True)
class Match:
    score: float
    reasons: list[str]


class Scorer(Protocol):
    name: str

    def score(self, a: Member, b: Member) -> Match: ...


def pair_of(x: str, y: str) -> tuple[str, str, str]:
    """(user_a, user_b, pair_hash): the two addresses sorted, and a hash of them."""
    a, b = sorted((x, y))
    return a, b, hashlib.sha256(f"{a}|{b}".encode()).hexdigest()


def _words(value: Any) -> set[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return set()
    return {str(v).strip().lower() for v in value if str(v).strip()}


class SharedInterestsScorer:
    """0.6 x overlap of `interests` (Jaccard), 0.15 x overlap of `looking_for`, 0.25 for the
    same city (0.1 for the same country)."""

    name = "shared-interests-v1"

    def score(self, a: Member, b: Member) -> Match:
        reasons: list[str] = []
        interests_a = _words(a.attributes.get("interests"))
        interests_b = _words(b.attributes.get("interests"))
        shared = interests_a & interests_b
        union = interests_a | interests_b
        score = 0.6 * (len(shared) / len(union) if union else 0.0)
        if shared:
            listed = ", ".join(sorted(shared)[:3])
            reasons.append(f"{len(shared)} shared interest{'s' * (len(shared) > 1)}: {listed}")
        goals_a = _words(a.attributes.get("looking_for"))
        goals_b = _words(b.attributes.get("looking_for"))
        goals = goals_a & goals_b
        if goals_a | goals_b:
            score += 0.15 * len(goals) / len(goals_a | goals_b)
        if goals:
            reasons.append("both looking for " + ", ".join(sorted(goals)[:2]))
        same_country = bool(a.country and b.country and a.country.lower() == b.country.lower())
        if (
            a.city
            and b.city
            and a.city.lower() == b.city.lower()
            and (same_country or not (a.country and b.country))
        ):
            score += 0.25
            reasons.append(f"both in {a.city}")
        elif same_country:
            score += 0.1
            reasons.append(f"both in {a.country}")
        return Match(score=round(min(score, 1.0), 6), reasons=reasons)


def load_scorer(path: str) -> Scorer:
    """`module:Class`, instantiated without arguments."""
    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"MATCH_SCORER must look like module:Class, not {path!r}")
    scorer = getattr(importlib.import_module(module_name), class_name)()
    if not hasattr(scorer, "score") or not hasattr(scorer, "name"):
        raise ValueError(f"{path} has no name and score()")
    return scorer
