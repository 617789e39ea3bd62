"""HTTP routes of matchmaking: the voter's next match, votes, conversations, admin block and
the system health check."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query

from tally.api.deps import access, acting_for, caller
from tally.auth import Principal, Role
from tally.matchmaking import service
from tally.matchmaking.models import (
    BlockIn,
    ConversationPage,
    HealthOut,
    NextMatchOut,
    ProposalOut,
    VoteIn,
    VoteOut,
)

Address = Annotated[str | None, Query(min_length=3, max_length=128, pattern=r"^[A-Za-z0-9_:.\-]+$")]

router = APIRouter(tags=["matchmaking"])


@router.get("/api/matches/next", **access(Role.USER))
def get_next_match(voter: Address = None, principal: Principal = caller(Role.USER)) -> NextMatchOut:
    return service.next_match(acting_for(principal, voter))


@router.post("/api/proposals/{proposal_id}/votes", **access(Role.USER))
def post_vote(
    proposal_id: UUID,
    body: VoteIn,
    voter: Address = None,
    principal: Principal = caller(Role.USER),
) -> VoteOut:
    return service.vote(proposal_id, acting_for(principal, voter), body.vote)


@router.get("/api/conversations", **access(Role.USER))
def get_conversations(
    address: Address = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    principal: Principal = caller(Role.USER),
) -> ConversationPage:
    return service.conversations(acting_for(principal, address), limit, cursor)


@router.post("/api/admin/proposals/{proposal_id}/block", **access(Role.ADMIN))
def post_block(proposal_id: UUID, body: BlockIn) -> ProposalOut:
    return service.block(proposal_id, body.reason)


@router.get("/api/system/health", **access(Role.PUBLIC))
def get_health() -> HealthOut:
    return service.health()
