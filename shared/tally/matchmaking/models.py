"""Boundary models of matchmaking."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from tally.validation import text


class MatchJobInput(BaseModel):
    """The jobs' schedule Input: nothing to say yet (the bands are configuration)."""

    model_config = ConfigDict(extra="forbid")


class JobOutcome(BaseModel):
    job: str
    ran: bool = True
    detail: dict[str, Any] = Field(default_factory=dict)
    queue_depth: int = 0
    active_voting: int = 0
    stuck_proposals: int = 0


class ProposalOut(BaseModel):
    id: UUID
    user_a_address: str
    user_b_address: str
    compatibility_score: float
    reasons: list[Any]
    status: str
    yes_votes: int
    no_votes: int
    voters_target: int
    voting_started_at: datetime | None
    voting_expires_at: datetime | None
    finalized_at: datetime | None
    finalized_by: str | None


class NextMatchOut(BaseModel):
    voter: str
    proposal: ProposalOut
    how: Literal["assigned", "assigned_now", "opened_now"] = Field(
        description="Already assigned; assigned to a proposal in voting now; or a queued pair "
        "was opened for voting now."
    )


class VoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vote: Literal["yes", "no"]


class VoteOut(BaseModel):
    proposal: ProposalOut
    conversation_id: UUID | None = None


class BlockIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: text(500, min_length=1)  # type: ignore[valid-type]


class ConversationOut(BaseModel):
    id: UUID
    proposal_id: UUID
    created_at: datetime
    with_address: str
    with_display_name: str | None
    compatibility_score: float
    reasons: list[Any]


class ConversationPage(BaseModel):
    items: list[ConversationOut]
    next_cursor: str | None


class HealthOut(BaseModel):
    system_status: Literal["HEALTHY", "UNHEALTHY"]
    queue_depth: int
    active_voting: int
    stuck_proposals: int
    bands: dict[str, int]
    metrics: dict[str, int]
    last_metrics_at: datetime | None
