"""Replaying awards under a new rule version (REFERENCE.md): a dry-run diff first, then the
differences as new ledger entries. History is never rewritten."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aws_lambda_powertools import Logger
from pydantic import BaseModel, ConfigDict

from tally.db.connection import transaction
from tally.errors import Conflict
from tally.observability import metrics
from tally.points import calculator
from tally.points.repository import RecomputeRepository
from tally.points.tiers import TIERS
from tally.settings import Settings, get_settings

logger = Logger(child=True)

RECOMPUTE_LOCK = 7_402_115_201
CHUNK = 10_000


class RecomputeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    apply: bool = False


class WalletDelta(BaseModel):
    wallet_address: str
    delta: int


class RecomputeReport(BaseModel):
    rule_version: str
    applied: bool
    sessions_checked: int
    sessions_changed: int
    wallets_changed: int
    points_delta: int
    ledger_entries_written: int
    biggest_changes: list[WalletDelta]


def recompute(*, apply: bool = False, settings: Settings | None = None) -> RecomputeReport:
    """Recompute every award with today's rules; write adjustments only when `apply`."""
    settings = settings or get_settings()
    rules = settings.points
    with transaction() as conn:
        repo = RecomputeRepository(conn)
        if not repo.try_lock(RECOMPUTE_LOCK):
            raise Conflict("A recompute is already running")
        if apply:
            repo.hold_awards()
        checked = 0
        pending: list[tuple[UUID, str, int, int]] = []
        repo.stage_changes([])
        for row in repo.award_inputs():
            checked += 1
            new_points = _replay(row, settings)
            if new_points != row["current_points"]:
                pending.append(
                    (row["session_id"], row["wallet_address"], row["current_points"], new_points)
                )
            if len(pending) >= CHUNK:
                repo.stage_changes(pending)
                pending.clear()
        repo.stage_changes(pending)
        totals, biggest = repo.summarize_changes(10)
        written = 0
        if apply and totals["sessions"]:
            if repo.changes_already_under(rules.rule_version):
                raise Conflict(
                    f"Rule version {rules.rule_version} already paid some of these awards "
                    "differently; set POINTS_RULE_VERSION to a new version for changed rules",
                    rule_version=rules.rule_version,
                )
            written = repo.apply_changes(rules.rule_version, list(TIERS))
    report = RecomputeReport(
        rule_version=rules.rule_version,
        applied=apply and written > 0,
        sessions_checked=checked,
        sessions_changed=int(totals["sessions"]),
        wallets_changed=int(totals["wallets"]),
        points_delta=int(totals["delta"]),
        ledger_entries_written=written,
        biggest_changes=[WalletDelta.model_validate(b) for b in biggest],
    )
    metrics.add_metric(name="RecomputeAdjustments", unit="Count", value=written)
    logger.info("Recompute finished", extra=report.model_dump(exclude={"biggest_changes"}))
    return report


def _replay(row: dict[str, Any], settings: Settings) -> int:
    rules = settings.points
    return calculator.calculate_points(
        calculator.PointsInput(
            rarity_score=row["rarity_score"],
            quality_score=row["quality_score"],
            specificity_grade=row["specificity_grade"] or "F",
            verified=row["verified"],
            is_first_bulk=row["is_first_bulk"],
            subject_dataset_count=row["subject_before"],
            dataset_number=row["dataset_number"],
        ),
        rule_version=rules.rule_version,
        min_quality_score=rules.min_quality_score,
        early_contributor_datasets=rules.early_contributor_datasets,
    ).points
