"""HTTP routes of proof of usefulness: receipts, committees, attestations, finalization,
reputation, and the admin's agents and stakes."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Header, Path, Response, status

from tally.api.deps import access, caller, created_or_existing
from tally.auth import Principal, Role
from tally.errors import Forbidden
from tally.pou import service
from tally.pou.models import (
    DID_PATTERN,
    AgentIn,
    AgentOut,
    AttestationIn,
    AttestationOut,
    CommitteeOut,
    FinalizeOut,
    PouHealthOut,
    ReceiptIn,
    ReceiptOut,
    ReputationOut,
    SlashIn,
    StakeChangeOut,
    StakeLockIn,
)

router = APIRouter(tags=["proof of usefulness"])

DidPath = Annotated[str, Path(min_length=8, max_length=256, pattern=DID_PATTERN)]
DidHeader = Annotated[
    str,
    Header(
        alias="X-AINP-DID",
        min_length=8,
        max_length=256,
        pattern=DID_PATTERN,
        description="The attester's DID. A user token speaks only for its own subject; a "
        "service token may name any DID (the signature proves it when required).",
    ),
]


@router.post(
    "/api/receipts",
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": ReceiptOut, "description": "The negotiation's receipt existed"}},
    **access(Role.SERVICE),
)
def post_receipt(body: ReceiptIn, response: Response) -> ReceiptOut:
    receipt, created = service.create_receipt(body)
    created_or_existing(response, created)
    return receipt


@router.get("/api/receipts/{task_id}", **access(Role.USER))
def get_receipt(task_id: UUID) -> ReceiptOut:
    return service.get_receipt(task_id)


@router.get("/api/receipts/{task_id}/committee", **access(Role.PUBLIC))
def get_committee(task_id: UUID) -> CommitteeOut:
    return service.committee(task_id)


@router.post(
    "/api/receipts/{task_id}/attestations",
    status_code=status.HTTP_201_CREATED,
    **access(Role.USER),
)
def post_attestation(
    task_id: UUID,
    body: AttestationIn,
    did: DidHeader,
    principal: Principal = caller(Role.USER),
) -> AttestationOut:
    if did != principal.subject and not principal.has(Role.SERVICE):
        raise Forbidden(
            "Only a service may name another attester; a member's token attests as itself"
        )
    return service.attest(task_id, did, body, delegated=did != principal.subject)


@router.post("/api/receipts/{task_id}/finalize", **access(Role.USER))
def post_finalize(task_id: UUID) -> FinalizeOut:
    return service.finalize(task_id)


@router.get("/api/reputation/{agent_did}", **access(Role.PUBLIC))
def get_reputation(agent_did: DidPath) -> ReputationOut:
    return service.reputation(agent_did)


@router.get("/api/pou/health", **access(Role.PUBLIC))
def get_pou_health() -> PouHealthOut:
    return service.health()


@router.post(
    "/api/admin/agents",
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": AgentOut, "description": "The agent existed and was updated"}},
    **access(Role.ADMIN),
)
def post_agent(body: AgentIn, response: Response) -> AgentOut:
    agent, created = service.register_agent(body)
    created_or_existing(response, created)
    return agent


@router.post("/api/admin/agents/{agent_did}/stake", **access(Role.ADMIN))
def post_stake(agent_did: DidPath, body: StakeLockIn) -> StakeChangeOut:
    return service.lock_stake(agent_did, body)


@router.post("/api/admin/agents/{agent_did}/slash", **access(Role.ADMIN))
def post_slash(agent_did: DidPath, body: SlashIn) -> StakeChangeOut:
    return service.slash(agent_did, body)
