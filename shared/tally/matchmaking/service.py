"""Matchmaking rules: the three jobs that keep the system fed, and the voter-facing API."""

from __future__ import annotations

import base64
import binascii
import heapq
from datetime import datetime, timedelta
from functools import cache
from itertools import combinations
from typing import Any
from uuid import UUID

from aws_lambda_powertools import Logger

from tally.db.connection import read_snapshot, transaction
from tally.errors import Conflict, Forbidden, InvalidInput, NotFound
from tally.matchmaking.models import (
    ConversationOut,
    ConversationPage,
    HealthOut,
    JobOutcome,
    NextMatchOut,
    ProposalOut,
    VoteOut,
)
from tally.matchmaking.repository import (
    CREATOR_LOCK,
    EXPIRY_LOCK,
    GENERATOR_LOCK,
    MatchRepository,
    Row,
)
from tally.matchmaking.scoring import Member, Scorer, load_scorer, pair_of
from tally.observability import metrics
from tally.settings import Settings, get_settings, match_bands

logger = Logger(child=True)

# A voter assigned on the spot gets a proposal with at least this long left to vote.
SPOT_MARGIN = timedelta(seconds=30)
# Candidate pairs kept per pair needed: room for pairs already queued, live or cooling down.
CANDIDATES_PER_NEED = 4


@cache
def scorer_for(path: str) -> Scorer:
    return load_scorer(path)


def _stuck(settings: Settings) -> timedelta:
    return timedelta(minutes=settings.match_stuck_minutes)


def _finish(repo: MatchRepository, job: str, detail: dict[str, Any]) -> JobOutcome:
    """Record what the system looks like after a job (system_metrics and EMF)."""
    settings = get_settings()
    queue_low, _, active_low, _ = match_bands(settings)
    health = repo.health(queue_low, active_low, _stuck(settings))
    votes = int(repo.key_metrics()["total_votes_cast"])
    repo.record_metrics(job, health, votes, detail)
    metrics.add_metric(name="MatchQueueDepth", unit="Count", value=health["queue_depth"])
    metrics.add_metric(name="MatchActiveVoting", unit="Count", value=health["active_voting"])
    metrics.add_metric(name="MatchStuckProposals", unit="Count", value=health["stuck_proposals"])
    metrics.add_metric(name="MatchMetricsRecorded", unit="Count", value=1)
    outcome = JobOutcome(
        job=job,
        detail=detail,
        queue_depth=health["queue_depth"],
        active_voting=health["active_voting"],
        stuck_proposals=health["stuck_proposals"],
    )
    logger.info("Matchmaking job finished", extra=outcome.model_dump())
    return outcome


# -- jobs ------------------------------------------------------------------------------------


def best_pairs(
    members: list[Member], scorer: Scorer, limit: int
) -> list[tuple[str, str, str, float, list[str]]]:
    """The `limit` best-scoring pairs of a sample, best first (ties by pair hash, so a run is
    reproducible for a given sample)."""
    scored = (
        (match.score, pair_of(x.address, y.address), match.reasons)
        for x, y in combinations(members, 2)
        if x.address != y.address
        for match in (scorer.score(x, y),)
    )
    top = heapq.nsmallest(limit, scored, key=lambda item: (-item[0], item[1][2]))
    return [(a, b, h, score, reasons) for score, (a, b, h), reasons in top]


def generate_matches() -> JobOutcome:
    """Refill the queue to its target when it is below its low-water mark, best compatibility
    first, from a random sample of members (never every profile)."""
    settings = get_settings()
    queue_low, queue_target, _, _ = match_bands(settings)
    scorer = scorer_for(settings.match_scorer)
    with transaction() as conn:
        repo = MatchRepository(conn)
        if not repo.try_lock(GENERATOR_LOCK):
            return JobOutcome(job="match_generator", ran=False)
        depth = repo.queue_depth()
        detail: dict[str, Any] = {"depth_before": depth, "added": 0}
        if depth < queue_low:
            need = queue_target - depth
            sample = [
                Member(
                    address=r["address"],
                    attributes=r["attributes"] or {},
                    city=r["city"],
                    region=r["region"],
                    country=r["country"],
                )
                for r in repo.sample_members(settings.match_candidate_sample)
            ]
            candidates = best_pairs(sample, scorer, need * CANDIDATES_PER_NEED)
            cooldown = timedelta(days=settings.match_reject_cooldown_days)
            detail |= {
                "need": need,
                "sampled": len(sample),
                "added": repo.enqueue(candidates, need, scorer.name, cooldown),
                "scorer": scorer.name,
            }
        outcome = _finish(repo, "match_generator", detail)
    metrics.add_metric(name="MatchPairsQueued", unit="Count", value=detail["added"])
    return outcome


def distribute_voters(
    proposals: list[Row], pool: list[str], per_proposal: int
) -> list[tuple[UUID, str]]:
    """Voters for new proposals. The pool comes least-loaded first (random among equals); each
    proposal takes the members given the fewest assignments in this run so far, in pool order,
    so loads never drift more than one apart. Never one of the pair, never twice on one."""
    given = dict.fromkeys(pool, 0)
    rank = {voter: i for i, voter in enumerate(pool)}
    assignments: list[tuple[UUID, str]] = []
    for proposal in proposals:
        pair = {proposal["user_a_address"], proposal["user_b_address"]}
        eligible = [voter for voter in pool if voter not in pair]
        chosen = sorted(eligible, key=lambda voter: (given[voter], rank[voter]))[:per_proposal]
        for voter in chosen:
            given[voter] += 1
        assignments += [(proposal["id"], voter) for voter in chosen]
    return assignments


def _open(repo: MatchRepository, count: int, avoid: str | None = None) -> list[Row]:
    settings = get_settings()
    per = settings.match_voters_per_proposal
    window = timedelta(minutes=settings.match_voting_minutes)
    opened = repo.open_from_queue(count, per, window, avoid=avoid)
    if opened:
        pool = repo.least_loaded_voters(len(opened) * per + 2 * len(opened))
        repo.assign(distribute_voters(opened, pool, per))
    return opened


def create_proposals() -> JobOutcome:
    """Keep the number of proposals in voting at its target when below the low-water mark."""
    settings = get_settings()
    _, _, active_low, active_target = match_bands(settings)
    with transaction() as conn:
        repo = MatchRepository(conn)
        if not repo.try_lock(CREATOR_LOCK):
            return JobOutcome(job="proposal_creator", ran=False)
        active = repo.active_voting()
        opened: list[Row] = []
        if active < active_low:
            opened = _open(repo, active_target - active)
        outcome = _finish(
            repo, "proposal_creator", {"active_before": active, "opened": len(opened)}
        )
    metrics.add_metric(name="MatchProposalsOpened", unit="Count", value=len(opened))
    return outcome


def expire_proposals() -> JobOutcome:
    """Finalize every proposal whose voting window has passed, exactly once."""
    with transaction() as conn:
        repo = MatchRepository(conn)
        if not repo.try_lock(EXPIRY_LOCK):
            return JobOutcome(job="expiry_handler", ran=False)
        closed = repo.finalize_expired()
        outcome = _finish(repo, "expiry_handler", {k: int(v) for k, v in closed.items()})
    metrics.add_metric(name="MatchProposalsApproved", unit="Count", value=closed["approved"])
    metrics.add_metric(name="MatchProposalsRejected", unit="Count", value=closed["rejected"])
    return outcome


# -- voters ----------------------------------------------------------------------------------


def next_match(voter: str) -> NextMatchOut:
    """The voter's next assigned, unvoted proposal; else one assigned now from the proposals
    still undecided (fewest voters first); else, when fewer than the target are in voting, a
    queued pair opened now (under the proposal creator's lock, so the band holds). 404 only when
    none of these has anything for this voter."""
    _, _, _, active_target = match_bands(get_settings())
    with transaction() as conn:
        repo = MatchRepository(conn)
        if not repo.is_member(voter):
            raise Forbidden(
                "Only members (a profile that has not opted out) vote", code="not_a_member"
            )
        row = repo.next_assigned(voter)
        how = "assigned"
        if row is None:
            proposal_id = repo.assign_on_the_spot(voter, SPOT_MARGIN)
            row = repo.proposal(proposal_id) if proposal_id else None
            how = "assigned_now"
        if row is None and repo.try_lock(CREATOR_LOCK) and repo.active_voting() < active_target:
            opened = _open(repo, 1, avoid=voter)
            if opened:
                repo.assign([(opened[0]["id"], voter)])
                row = opened[0]
                how = "opened_now"
    if row is None:
        metrics.add_metric(name="MatchNoneAvailable", unit="Count", value=1)
        raise NotFound("No matches are available to vote on", code="no_matches_available")
    return NextMatchOut(voter=voter, proposal=ProposalOut.model_validate(row), how=how)


def vote(proposal_id: UUID, voter: str, choice: str) -> VoteOut:
    """One vote by an assigned voter; the threshold closes the proposal in the same
    transaction (and opens the conversation on approval)."""
    settings = get_settings()
    with transaction() as conn:
        repo = MatchRepository(conn)
        proposal = repo.proposal(proposal_id, lock=True)
        if proposal is None:
            raise NotFound(f"No proposal {proposal_id}")
        if not repo.is_assigned(proposal_id, voter) or not repo.is_member(voter):
            raise Forbidden("Only voters assigned to this proposal may vote", code="not_assigned")
        if not proposal["open"]:
            raise Conflict(
                f"Voting on this proposal is closed ({proposal['status']})",
                code="voting_closed",
                proposal_status=proposal["status"],
            )
        if not repo.cast_vote(proposal_id, voter, choice):
            raise Conflict("This voter has already voted on this proposal", code="already_voted")
        counted = repo.proposal(proposal_id)
        assert counted is not None
        conversation_id = None
        if counted["yes_votes"] >= settings.match_approve_at:
            conversation_id = repo.close(proposal_id, "approved", "threshold")["conversation_id"]
        elif counted["no_votes"] >= settings.match_reject_at:
            repo.close(proposal_id, "rejected", "threshold")
        final = repo.proposal(proposal_id)
    metrics.add_metric(name="MatchVotesCast", unit="Count", value=1)
    return VoteOut(proposal=ProposalOut.model_validate(final), conversation_id=conversation_id)


def block(proposal_id: UUID, reason: str) -> ProposalOut:
    """An admin takes a proposal out of voting for good; the pair is never proposed again."""
    with transaction() as conn:
        repo = MatchRepository(conn)
        proposal = repo.proposal(proposal_id, lock=True)
        if proposal is None:
            raise NotFound(f"No proposal {proposal_id}")
        if proposal["status"] not in ("proposed", "voting"):
            raise Conflict(
                f"Only a proposal in voting can be blocked (this one is {proposal['status']})",
                code="not_blockable",
            )
        repo.close(proposal_id, "blocked", "admin", reason)
        final = repo.proposal(proposal_id)
    logger.info("Proposal blocked", extra={"proposal": str(proposal_id), "reason": reason})
    return ProposalOut.model_validate(final)


def _cursor(created_at: datetime, conversation_id: UUID) -> str:
    raw = f"{created_at.isoformat()}|{conversation_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, ident = raw.partition("|")
        return datetime.fromisoformat(at), UUID(ident)
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise InvalidInput("The cursor is not one this API issued", code="invalid_cursor") from exc


def conversations(address: str, limit: int, cursor: str | None) -> ConversationPage:
    before = _parse_cursor(cursor) if cursor else None
    with read_snapshot() as conn:
        rows = MatchRepository(conn).conversations(address, limit + 1, before)
    items = [ConversationOut.model_validate(r) for r in rows[:limit]]
    more = len(rows) > limit
    return ConversationPage(
        items=items,
        next_cursor=_cursor(items[-1].created_at, items[-1].id) if more and items else None,
    )


def health() -> HealthOut:
    """The guide's health check with the configured bands, and its key metrics."""
    settings = get_settings()
    queue_low, queue_target, active_low, active_target = match_bands(settings)
    with read_snapshot() as conn:
        repo = MatchRepository(conn)
        state = repo.health(queue_low, active_low, _stuck(settings))
        key = repo.key_metrics()
        last = repo.last_metrics_at()
    return HealthOut(
        system_status=state["system_status"],
        queue_depth=state["queue_depth"],
        active_voting=state["active_voting"],
        stuck_proposals=state["stuck_proposals"],
        bands={
            "queue_low": queue_low,
            "queue_target": queue_target,
            "active_low": active_low,
            "active_target": active_target,
        },
        metrics={k: int(v) for k, v in key.items()},
        last_metrics_at=last,
    )
