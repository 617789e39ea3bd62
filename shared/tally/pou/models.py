"""Boundary models of proof of usefulness."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from tally.points.models import WalletAddress
from tally.validation import check_json_value, text

DID_PATTERN = r"^did:[a-z0-9]+:[A-Za-z0-9._:%\-]+$"
Did = Annotated[str, Field(min_length=8, max_length=256, pattern=DID_PATTERN)]
AttestationType = Literal[
    "ACCEPTED", "AUDIT_PASS", "SAFETY_PASS", "QUALITY_HIGH", "EFFICIENCY_HIGH"
]
ReceiptStatus = Literal["pending", "finalized", "disputed", "failed"]
MAX_ATOMIC = 10**78 - 1


def _atomic(value: Any) -> Any:
    """Atomic amounts arrive as integers or digit strings (JSON numbers lose precision)."""
    if isinstance(value, bool):
        raise ValueError("an amount is not a boolean")
    if isinstance(value, str):
        if not value.isdigit() or len(value) > 78:
            raise ValueError("an amount is a string of at most 78 digits")
        return int(value)
    if isinstance(value, float):
        raise ValueError("an amount is a whole number of atomic units (send a string)")
    return value


# Written as a string: amounts can exceed what a JSON number holds exactly.
Atomic = Annotated[
    int,
    BeforeValidator(_atomic),
    Field(ge=0, le=MAX_ATOMIC),
    PlainSerializer(str, return_type=str, when_used="json"),
]
PositiveAtomic = Annotated[
    int,
    BeforeValidator(_atomic),
    Field(ge=1, le=MAX_ATOMIC),
    PlainSerializer(str, return_type=str, when_used="json"),
]
# Strict: "0.5" or true would be stored as 0.5 or 1 and then fail the signature check.
Unit = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False, strict=True)]
MAX_LATENCY_MS = 10**12


class PouJobInput(BaseModel):
    """The PoU jobs' schedule Input: nothing to say (the rules are configuration)."""

    model_config = ConfigDict(extra="forbid")


class ReceiptIn(BaseModel):
    """A settled negotiation, as the broker reports it."""

    model_config = ConfigDict(extra="forbid")

    task_id: UUID | None = Field(
        None, description="The broker's id for the task; generated when absent."
    )
    intent_id: text(200, min_length=1)  # type: ignore[valid-type]
    negotiation_id: text(200, min_length=1)  # type: ignore[valid-type]
    agent_did: Did
    client_did: Did
    intent_type: text(100, min_length=1)  # type: ignore[valid-type]
    inputs_ref: text(2048) | None = None  # type: ignore[valid-type]
    outputs_ref: text(2048) | None = None  # type: ignore[valid-type]
    metrics: dict[str, Any] = Field(
        default_factory=dict,
        description="Measurements of the work; `latency_ms` (>= 0) feeds timeliness.",
    )
    payment_request_id: text(200) | None = None  # type: ignore[valid-type]
    amount_atomic: Atomic = 0
    k: int | None = Field(None, ge=1, le=51, description="Quorum for this receipt (POU_K).")
    m: int | None = Field(None, ge=0, le=50, description="Committee size (POU_M).")

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_json_value(value, where="metrics")
        latency = value.get("latency_ms")
        if latency is not None and (
            isinstance(latency, bool)
            or not isinstance(latency, int | float)
            or not 0 <= latency <= MAX_LATENCY_MS
        ):
            raise ValueError(
                f"metrics.latency_ms is a number of milliseconds from 0 to {MAX_LATENCY_MS}"
            )
        return value

    @model_validator(mode="after")
    def _parties(self) -> ReceiptIn:
        if self.agent_did == self.client_did:
            raise ValueError("the agent and the client are different parties")
        return self


class AttestationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: AttestationType
    score: Unit
    confidence: Unit
    evidence_ref: text(2048) | None = None  # type: ignore[valid-type]
    signature: text(200) | None = Field(  # type: ignore[valid-type]
        None,
        description="base64url Ed25519 signature by the attester's key over the canonical "
        "JSON (RFC 8785) of {task_id, by_did, type, score, confidence, evidence_ref}.",
    )


class AttestationOut(BaseModel):
    id: UUID
    task_id: UUID
    by_did: str
    type: str
    score: float
    confidence: float
    evidence_ref: str | None
    signature: str | None
    created_at: datetime


class ReceiptOut(BaseModel):
    id: UUID
    intent_id: str
    negotiation_id: str
    agent_did: str
    client_did: str
    intent_type: str
    inputs_ref: str | None
    outputs_ref: str | None
    metrics: dict[str, Any]
    payment_request_id: str | None
    amount_atomic: Atomic
    status: ReceiptStatus
    committee: list[str]
    k: int
    m: int
    finalized_at: datetime | None
    created_at: datetime
    committee_short: bool = Field(description="Fewer committee members than m.")
    quorum_reachable: bool = Field(
        description="The client and the committee together can reach k (else it cannot finalize)."
    )
    attestations: list[AttestationOut] = Field(default_factory=list)


class CommitteeMemberOut(BaseModel):
    did: str
    position: int
    trust: float
    attested: bool = Field(description="This member's AUDIT_PASS is in.")


class CommitteeOut(BaseModel):
    task_id: UUID
    committee: list[str]
    members: list[CommitteeMemberOut]
    k: int
    m: int
    committee_short: bool
    quorum_reachable: bool
    selection: str = (
        "the m most trusted active agents with at least POU_COMMITTEE_MIN_STAKE locked, other "
        "than the receipt's agent and client: trust descending, ties by md5(task_id || did)"
    )


class FinalizeOut(BaseModel):
    ok: bool = True
    status: Literal["finalized"] = "finalized"
    task_id: UUID
    finalized_at: datetime


class Dimensions(BaseModel):
    q: float = Field(description="quality")
    t: float = Field(description="timeliness")
    r: float = Field(description="reliability")
    s: float = Field(description="safety")
    v: float = Field(description="truthfulness")
    i: float = Field(description="impact")
    e: float = Field(description="efficiency")


class StakeOut(BaseModel):
    agent_id: str
    amount_locked: Atomic
    slashed_total: Atomic
    locked_until: datetime | None
    committee_eligible: bool
    updated_at: datetime | None


class ReputationOut(BaseModel):
    agent_id: str
    status: str
    dimensions: Dimensions
    trust: float = Field(description="Weighted mean of the seven dimensions.")
    evidence: float = Field(
        description="How much of trust is observed rather than the 0.5 prior: 1 - (1-alpha)^n."
    )
    finalized_tasks: int
    usefulness_score: float
    credits_atomic: Atomic
    stake: StakeOut
    updated_at: datetime


class AgentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    did: Did
    public_key: text(100) | None = Field(  # type: ignore[valid-type]
        None,
        description="base64url Ed25519 public key; derived from the DID for did:key agents.",
    )
    status: Literal["active", "suspended"] = "active"
    wallet_address: WalletAddress | None = Field(
        None, description="Where points for finalized work go (the DID's own row if absent)."
    )


class AgentOut(BaseModel):
    did: str
    public_key: str | None
    status: str
    wallet_address: str | None
    registered_by: str
    created_at: datetime
    updated_at: datetime


class StakeLockIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_atomic: PositiveAtomic
    locked_until: datetime | None = None
    reference: text(200, min_length=1) = Field(  # type: ignore[valid-type]
        description="The admin's idempotency key: a retried request with it changes nothing."
    )


class SlashIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_atomic: PositiveAtomic
    reason: text(500, min_length=1)  # type: ignore[valid-type]
    task_id: UUID | None = None
    reference: text(200, min_length=1)  # type: ignore[valid-type]


class StakeChangeOut(BaseModel):
    applied: bool = Field(description="False when this reference was already applied.")
    stake: StakeOut
    reputation: Dimensions


class FinalizerOutcome(BaseModel):
    job: str = "pou_finalizer"
    ran: bool = True
    reason: str | None = None
    pending: int = 0
    finalized: int = 0
    batches: int = 0
    points_awarded: int = 0
    short_committees: int = 0
    pending_over_1h: int = 0
    failed: int = 0
    stopped_early: bool = False


class AggregatorOutcome(BaseModel):
    job: str = "usefulness_aggregator"
    ran: bool = True
    agents_scored: int = 0
    hours_settled: int = 0
    credits_written: int = 0
    distributed_atomic: Atomic = 0


class PouHealthOut(BaseModel):
    """The guide's monitoring queries, plus the backlog it says to alert on."""

    receipts_last_hour: int
    attestations_last_hour: int
    finalized_last_hour: int
    reputation_updates_last_hour: int
    pending: int
    pending_over_1h: int
    short_committees: int
