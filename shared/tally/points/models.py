"""Boundary models of the points system: what the verifier posts and what the API returns."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from tally.validation import check_json_value, text

WalletAddress = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=3, max_length=128, pattern=r"^[A-Za-z0-9_:.\-]+$"
    ),
]


class _FreeFormExtras(BaseModel):
    """Verifier payloads may carry fields of their own: kept, but bounded and storable."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, allow_inf_nan=False)

    @model_validator(mode="after")
    def _check_extras(self) -> _FreeFormExtras:
        extras = self.model_extra or {}
        if len(extras) > 50:
            raise ValueError("at most 50 extra fields")
        for key, value in extras.items():
            check_json_value(key, where="field name")
            check_json_value(value, where=key)
        return self


class VerificationMetadata(_FreeFormExtras):
    """The guide's submission metadata (walletAddress, title, sampleCount)."""

    wallet_address: WalletAddress | None = Field(None, alias="walletAddress")
    title: text(300) = ""  # type: ignore[valid-type]
    sample_count: int = Field(0, alias="sampleCount", ge=0, le=10_000_000)


class VerificationResults(_FreeFormExtras):
    """The verifier's analysis. rarityScore may be missing when the AI analysis failed."""

    approved: bool
    rarity_score: float | None = Field(None, alias="rarityScore", ge=0, le=100)
    quality_score: float | None = Field(None, alias="qualityScore", ge=0, le=1)
    subject: text(200) | None = None  # type: ignore[valid-type]
    specificity_grade: Literal["A", "B", "C", "D", "F"] | None = Field(
        None, alias="specificityGrade"
    )
    verified_claims: (
        bool
        | Annotated[list[Annotated[str, StringConstraints(max_length=500)]], Field(max_length=100)]
    ) = Field(False, alias="verifiedClaims")
    content_hash: str | None = Field(
        None, alias="contentHash", max_length=200, pattern=r"^[A-Za-z0-9:_\-]+$"
    )

    @property
    def verified(self) -> bool:
        return bool(self.verified_claims)


class VerificationIn(BaseModel):
    """POST /api/verifications. `sessionId` makes the call idempotent."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    session_id: UUID = Field(alias="sessionId")
    status: Literal["completed", "failed"] = "completed"
    metadata: VerificationMetadata
    results: VerificationResults | None = None
    completed_at: datetime | None = Field(None, alias="completedAt")


class VerificationOut(BaseModel):
    session_id: UUID
    status: str
    wallet_address: str | None
    points_status: str | None
    points_awarded: int | None
    points_breakdown: dict[str, Any] | None
    created_at: datetime
    completed_at: datetime | None


class FlagReview(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["clear", "reject"]
    note: text(1000) | None = None  # type: ignore[valid-type]


class LeaderboardEntry(BaseModel):
    rank: int
    is_tied: bool
    wallet_address: str
    total_points: int
    tier: str
    total_submissions: int


class LeaderboardPage(BaseModel):
    items: list[LeaderboardEntry]
    next_cursor: str | None


class SubmissionOut(BaseModel):
    session_id: UUID
    title: str | None
    subject: str | None
    points_earned: int
    points_breakdown: dict[str, Any]
    submitted_at: datetime


class UserProfile(BaseModel):
    wallet_address: str
    total_points: int
    total_submissions: int
    tier: str
    rank: int
    is_tied: bool
    first_submission_at: datetime | None
    last_submission_at: datetime | None
    recent_submissions: list[SubmissionOut]


class AchievementOut(BaseModel):
    key: str
    name: str
    description: str
    unlocked_at: datetime


class AbuseFlagOut(BaseModel):
    id: int
    wallet_address: str
    session_id: UUID | None
    reason: str
    details: dict[str, Any]
    status: str
    created_at: datetime
    reviewed_at: datetime | None
    reviewed_by: str | None


class AwardRunResult(BaseModel):
    """What one award sweep did; returned by the job handler."""

    awarded: int = 0
    points: int = 0
    skipped: int = 0
    held: int = 0
    failed: int = 0
    stopped_early: bool = False


class AwardPointsInput(BaseModel):
    """The award job's schedule Input (ScheduleV2 delivers it as the whole event)."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int | None = Field(None, ge=1, le=100_000)
