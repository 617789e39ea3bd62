"""Proof-of-usefulness rules: receipts and committees, who may attest what, quorum
finalization with reputation and points, stakes, and the hourly usefulness aggregator."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from aws_lambda_powertools import Logger

from tally import ratelimit
from tally.db.connection import DataError, read_snapshot, transaction
from tally.errors import Conflict, Forbidden, InvalidInput, NotFound
from tally.observability import metrics
from tally.pou import identity
from tally.pou.models import (
    AgentIn,
    AgentOut,
    AggregatorOutcome,
    AttestationIn,
    AttestationOut,
    CommitteeMemberOut,
    CommitteeOut,
    Dimensions,
    FinalizeOut,
    FinalizerOutcome,
    PouHealthOut,
    ReceiptIn,
    ReceiptOut,
    ReputationOut,
    SlashIn,
    StakeChangeOut,
    StakeLockIn,
    StakeOut,
)
from tally.pou.repository import AGGREGATOR_LOCK, PouRepository, Row
from tally.settings import Settings, get_settings

logger = Logger(child=True)

POU_RULE_VERSION = "pou-v1"
ATTESTATION_SCOPE = "pou_attestations"
# Types anyone on the receipt but its agent may give (client or committee).
OPEN_TYPES = ("SAFETY_PASS", "QUALITY_HIGH", "EFFICIENCY_HIGH")
# What a resent settlement must repeat to count as the same one.
RECEIPT_FACTS = (
    "intent_id",
    "agent_did",
    "client_did",
    "intent_type",
    "inputs_ref",
    "outputs_ref",
    "metrics",
    "payment_request_id",
    "amount_atomic",
    "k",
    "m",
)


def _key_of(did: str) -> bytes | None:
    try:
        return identity.public_key_of(did)
    except identity.IdentityError as exc:
        raise InvalidInput(f"{did} is not a usable DID: {exc}", code="INVALID_DID") from exc


def _receipt_out(row: Row, attestations: list[Row] | None = None) -> ReceiptOut:
    members = len(row["committee"])
    return ReceiptOut.model_validate(
        {
            **row,
            "committee_short": members < row["m"],
            "quorum_reachable": members + 1 >= row["k"],
            "attestations": [AttestationOut.model_validate(a) for a in attestations or []],
        }
    )


# -- receipts ----------------------------------------------------------------------------------


def create_receipt(body: ReceiptIn) -> tuple[ReceiptOut, bool]:
    """A settled task becomes a pending receipt with its committee chosen now. A resent
    settlement (same negotiation, same facts) returns the receipt it made: (receipt, created)."""
    settings = get_settings()
    k = body.k if body.k is not None else settings.pou_k
    m = body.m if body.m is not None else settings.pou_m
    if k > m + 1:
        raise InvalidInput(
            f"k={k} can never be reached by a client and a committee of {m}",
            code="QUORUM_UNREACHABLE",
            k=k,
            m=m,
        )
    parties = [
        (body.agent_did, _key_of(body.agent_did)),
        (body.client_did, _key_of(body.client_did)),
    ]
    values = body.model_dump(exclude={"k", "m", "task_id"}) | {
        "id": body.task_id or uuid4(),
        "k": k,
        "m": m,
    }
    with transaction() as conn:
        repo = PouRepository(conn)
        repo.ensure_agents(parties)
        row = repo.create_receipt(values, settings.pou_committee_min_stake)
        created = row is not None
        if row is None:
            row = repo.receipt(values["id"], by_negotiation=body.negotiation_id)
            if row is None:
                raise Conflict(
                    f"Task id {values['id']} belongs to another negotiation",
                    code="TASK_ID_CONFLICT",
                )
            if any(row[f] != values[f] for f in RECEIPT_FACTS) or (
                body.task_id is not None and row["id"] != body.task_id
            ):
                raise Conflict(
                    "This negotiation already has a receipt with other facts",
                    code="NEGOTIATION_CONFLICT",
                    task_id=str(row["id"]),
                )
    receipt = _receipt_out(row)
    if created:
        metrics.add_metric(name="PouReceiptsCreated", unit="Count", value=1)
        if receipt.committee_short:
            metrics.add_metric(name="PouCommitteeShort", unit="Count", value=1)
            logger.warning(
                "Receipt committee is short",
                extra={
                    "task_id": str(receipt.id),
                    "committee_size": len(receipt.committee),
                    "m": m,
                    "k": k,
                    "quorum_reachable": receipt.quorum_reachable,
                },
            )
    return receipt, created


def get_receipt(task_id: UUID) -> ReceiptOut:
    with read_snapshot() as conn:
        repo = PouRepository(conn)
        row = repo.receipt(task_id)
        if row is None:
            raise NotFound(f"No receipt {task_id}")
        return _receipt_out(row, repo.attestations(task_id))


def committee(task_id: UUID) -> CommitteeOut:
    with read_snapshot() as conn:
        repo = PouRepository(conn)
        row = repo.receipt(task_id)
        if row is None:
            raise NotFound(f"No receipt {task_id}")
        trust = repo.committee_trust(row["committee"])
        audited = {a["by_did"] for a in repo.attestations(task_id) if a["type"] == "AUDIT_PASS"}
    receipt = _receipt_out(row)
    return CommitteeOut(
        task_id=task_id,
        committee=receipt.committee,
        members=[
            CommitteeMemberOut(
                did=did, position=i + 1, trust=trust.get(did, 0.0), attested=did in audited
            )
            for i, did in enumerate(receipt.committee)
        ],
        k=receipt.k,
        m=receipt.m,
        committee_short=receipt.committee_short,
        quorum_reachable=receipt.quorum_reachable,
    )


# -- attestations ------------------------------------------------------------------------------


def _not_pending(receipt: Row, why: str = "") -> Conflict:
    return Conflict(
        f"The receipt is {receipt['status']}{why}",
        code="RECEIPT_NOT_PENDING",
        receipt_status=receipt["status"],
    )


def _unauthorized(detail: str) -> Forbidden:
    return Forbidden(detail, code="UNAUTHORIZED_ATTESTATION")


def _check_role(receipt: Row, by_did: str, type_: str) -> None:
    if by_did == receipt["agent_did"]:
        raise _unauthorized("An agent cannot attest its own task")
    if type_ == "ACCEPTED" and by_did != receipt["client_did"]:
        raise _unauthorized("Only the receipt's client can submit ACCEPTED")
    if type_ == "AUDIT_PASS" and by_did not in receipt["committee"]:
        raise _unauthorized("Only committee members can submit AUDIT_PASS")
    if (
        type_ in OPEN_TYPES
        and by_did != receipt["client_did"]
        and by_did not in receipt["committee"]
    ):
        raise _unauthorized(f"Only the client or committee members can submit {type_}")


def _check_signature(
    task_id: UUID, by_did: str, body: AttestationIn, key: bytes | None, required: bool
) -> None:
    if body.signature is None:
        if required:
            raise Forbidden(
                "This attestation must be signed by the attester's key (signatures are "
                "required, or the caller is a backend naming the attester)",
                code="SIGNATURE_REQUIRED",
            )
        return
    if key is None:
        raise Forbidden(f"No public key is known for {by_did}", code="INVALID_SIGNATURE")
    try:
        signature = identity.decode_signature(body.signature)
    except identity.IdentityError as exc:
        raise Forbidden(f"The signature is malformed: {exc}", code="INVALID_SIGNATURE") from exc
    payload = identity.attestation_payload(
        str(task_id), by_did, body.type, body.score, body.confidence, body.evidence_ref
    )
    if not identity.verify(key, signature, payload):
        raise Forbidden(
            "The signature does not verify against the attester's key "
            "(it covers the canonical JSON of task_id, by_did, type, score, confidence, "
            "evidence_ref)",
            code="INVALID_SIGNATURE",
        )


def attest(
    task_id: UUID, by_did: str, body: AttestationIn, *, delegated: bool = False
) -> AttestationOut:
    """One attestation by one party of the receipt, checked in this order: rate limit, the
    receipt, the attester, its role, its signature, one per (task, attester, type).

    `delegated`: a backend names the attester (the token is not the DID's own), so only the
    DID's signature proves the DID said it: required then, whatever POU_REQUIRE_SIGNATURES."""
    settings = get_settings()
    ratelimit.enforce(
        ATTESTATION_SCOPE, by_did, settings.pou_attestations_per_hour, timedelta(hours=1)
    )
    with transaction() as conn:
        repo = PouRepository(conn)
        # Held until commit: no finalizer closes the receipt under this attestation, and
        # attestations of one receipt queue, so the quorum trigger sees each of them.
        receipt = repo.receipt(task_id, hold=True)
        if receipt is None:
            raise NotFound(f"No receipt {task_id}")
        if receipt["status"] != "pending":
            raise _not_pending(receipt, "; attestations are closed")
        attester = repo.agent(by_did)
        if attester is None:
            raise _unauthorized(f"{by_did} is neither the client nor on the committee")
        if attester["status"] != "active":
            raise Forbidden(f"{by_did} is suspended", code="AGENT_SUSPENDED")
        _check_role(receipt, by_did, body.type)
        key = attester["public_key"] or _key_of(by_did)
        _check_signature(task_id, by_did, body, key, settings.pou_require_signatures or delegated)
        row = repo.add_attestation(task_id, by_did, body.model_dump())
        if row is None:
            raise Conflict(
                f"{by_did} has already submitted {body.type} for this task",
                code="DUPLICATE_ATTESTATION",
            )
    metrics.add_metric(name="PouAttestations", unit="Count", value=1)
    return AttestationOut.model_validate(row)


# -- finalization ------------------------------------------------------------------------------


def _settle(repo: PouRepository, finalized: list[Row], settings: Settings) -> int:
    """Reputation and points for receipts just finalized, in their transaction."""
    ids = [r["id"] for r in finalized]
    repo.update_reputation(
        ids,
        [r["agent_did"] for r in finalized],
        settings.pou_reputation_alpha,
        settings.pou_latency_norm_ms,
    )
    if settings.pou_points_per_task <= 0:
        return 0
    paid = repo.pay_finalized(ids, settings.pou_points_per_task, POU_RULE_VERSION)
    return int(paid["points"])


def finalize(task_id: UUID) -> FinalizeOut:
    """Finalize one receipt now, if its quorum is in (the finalizer would within a minute)."""
    settings = get_settings()
    with transaction() as conn:
        repo = PouRepository(conn)
        receipt = repo.receipt(task_id)
        if receipt is None:
            raise NotFound(f"No receipt {task_id}")
        if receipt["status"] == "pending":
            done = repo.finalize(1, task_id)
            if done:
                _settle(repo, done, settings)
                _log_finalized(done)
                metrics.add_metric(name="PouReceiptsFinalized", unit="Count", value=1)
                return FinalizeOut(task_id=task_id, finalized_at=done[0]["finalized_at"])
            receipt = repo.receipt(task_id)  # another finalizer may have just done it
            assert receipt is not None
        if receipt["status"] == "finalized":
            return FinalizeOut(task_id=task_id, finalized_at=receipt["finalized_at"])
        if receipt["status"] != "pending":
            raise _not_pending(receipt)
        have = repo.quorum_have(task_id)
    raise Conflict(
        f"QUORUM_NOT_MET: needed {receipt['k']}, have {have}",
        code="QUORUM_NOT_MET",
        needed=receipt["k"],
        have=have,
    )


def _log_finalized(rows: list[Row]) -> None:
    for row in rows:
        logger.info(
            "[PoU Finalizer] Finalized task receipt",
            extra={"task_id": str(row["id"]), "agent_did": row["agent_did"]},
        )


def _finalize_one_by_one(settings: Settings, outcome: FinalizerOutcome) -> list[Row]:
    with read_snapshot() as conn:
        candidates = PouRepository(conn).quorate_ids(settings.pou_finalizer_batch)
    done: list[Row] = []
    for task_id in candidates:
        try:
            with transaction() as conn:
                repo = PouRepository(conn)
                rows = repo.finalize(1, task_id)
                if rows:
                    outcome.points_awarded += _settle(repo, rows, settings)
            done += rows
        except DataError:
            with transaction() as conn:
                PouRepository(conn).mark_failed(task_id)
            outcome.failed += 1
            logger.exception(
                "[PoU Finalizer] Receipt cannot be finalized; marked failed",
                extra={"task_id": str(task_id)},
            )
    return done


def run_finalizer(remaining_ms: Callable[[], int] | None = None) -> FinalizerOutcome:
    """Finalize every pending receipt whose quorum is in, batch by batch (one transaction
    each), until none is left or the deadline nears. Concurrent runs split the work."""
    settings = get_settings()
    metrics.add_metric(name="PouFinalizerRuns", unit="Count", value=1)  # the heartbeat
    if not settings.pou_finalizer_enabled:
        logger.info("[PoU Finalizer] Disabled (POU_FINALIZER_ENABLED=false)")
        return FinalizerOutcome(ran=False, reason="disabled")
    with read_snapshot() as conn:
        repo = PouRepository(conn)
        summary = repo.pending_summary(timedelta(hours=1))
        outcome = FinalizerOutcome(
            pending=summary["pending"],
            short_committees=summary["short_committees"],
            pending_over_1h=summary["pending_over"],
        )
    logger.info(f"[PoU Finalizer] Checking {outcome.pending} pending receipts")
    while True:
        if remaining_ms is not None and remaining_ms() < settings.job_safety_margin_ms:
            outcome.stopped_early = True
            break
        try:
            with transaction() as conn:
                repo = PouRepository(conn)
                done = repo.finalize(settings.pou_finalizer_batch)
                if done:
                    outcome.points_awarded += _settle(repo, done, settings)
        except DataError:
            # A value the batch cannot process: take the quorate receipts one by one, so a
            # bad one fails alone instead of holding back every run.
            done = _finalize_one_by_one(settings, outcome)
        outcome.batches += 1
        outcome.finalized += len(done)
        _log_finalized(done)
        if not done:  # a short batch may only mean another finalizer holds the rest
            break
    if outcome.short_committees:
        logger.warning(
            "[PoU Finalizer] Pending receipts with a short committee",
            extra={"short_committees": outcome.short_committees},
        )
    metrics.add_metric(name="PouPendingReceipts", unit="Count", value=outcome.pending)
    metrics.add_metric(name="PouReceiptsFinalized", unit="Count", value=outcome.finalized)
    metrics.add_metric(name="PouShortCommittees", unit="Count", value=outcome.short_committees)
    metrics.add_metric(name="PouPendingOverOneHour", unit="Count", value=outcome.pending_over_1h)
    metrics.add_metric(name="PouReceiptsFailed", unit="Count", value=outcome.failed)
    metrics.add_metric(name="PouPointsAwarded", unit="Count", value=outcome.points_awarded)
    logger.info("[PoU Finalizer] Run finished", extra=outcome.model_dump())
    return outcome


# -- reputation, agents and stakes -------------------------------------------------------------


def _stake_out(row: Row, settings: Settings) -> StakeOut:
    return StakeOut.model_validate(
        {
            **row,
            "committee_eligible": int(row["amount_locked"]) >= settings.pou_committee_min_stake,
        }
    )


def reputation(did: str) -> ReputationOut:
    settings = get_settings()
    with read_snapshot() as conn:
        repo = PouRepository(conn)
        row = repo.reputation(did)
        if row is None:
            raise NotFound(f"No agent {did}", code="UNKNOWN_AGENT")
        stake = repo.stake(did)
    alpha = settings.pou_reputation_alpha
    return ReputationOut(
        agent_id=row["agent_id"],
        status=row["status"],
        dimensions=Dimensions.model_validate(row),
        trust=row["trust"],
        evidence=1 - (1 - alpha) ** int(row["finalized_tasks"]),
        finalized_tasks=row["finalized_tasks"],
        usefulness_score=row["usefulness_score"],
        credits_atomic=int(row["credits_atomic"]),
        stake=_stake_out(stake, settings),
        updated_at=row["updated_at"],
    )


def _agent_out(row: Row) -> AgentOut:
    key = row["public_key"]
    return AgentOut.model_validate(
        {**row, "public_key": base64.urlsafe_b64encode(key).decode().rstrip("=") if key else None}
    )


def register_agent(body: AgentIn) -> tuple[AgentOut, bool]:
    """Register (or update the status or wallet of) an agent. Keys never change: a new key is
    a new DID."""
    derived = _key_of(body.did)
    given = None
    if body.public_key is not None:
        padded = body.public_key + "=" * (-len(body.public_key) % 4)
        try:
            given = base64.b64decode(padded, altchars=b"-_", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput("public_key is not base64url", code="INVALID_KEY") from exc
        if len(given) != 32:
            raise InvalidInput("An Ed25519 public key is 32 bytes", code="INVALID_KEY")
        if derived is not None and given != derived:
            raise InvalidInput("public_key is not the DID's own key", code="KEY_MISMATCH")
    key = given or derived
    with transaction() as conn:
        repo = PouRepository(conn)
        existing = repo.agent(body.did, lock=True)
        if existing and key and existing["public_key"] and bytes(existing["public_key"]) != key:
            raise Conflict("This DID is registered with another key", code="KEY_CONFLICT")
        row = repo.register_agent(body.did, key, body.status, body.wallet_address)
        if existing and existing["status"] != "active" and body.status == "active":
            repo.mark_quorate_for(body.did)
    logger.info("Agent registered", extra={"did": body.did, "status": body.status})
    return _agent_out(row), existing is None


def _require_agent(repo: PouRepository, did: str) -> None:
    if repo.agent(did, lock=True) is None:
        raise NotFound(f"No agent {did}", code="UNKNOWN_AGENT")


def _same_event(
    repo: PouRepository, did: str, kind: str, reference: str, amount: int, detail: object
) -> None:
    """A reference already applied: fine when the retry asks for the same thing."""
    event = repo.stake_event(did, kind, reference)
    assert event is not None
    stored = event["locked_until"] if kind == "lock" else event["reason"]
    if int(event["amount_atomic"]) != amount or stored != detail:
        raise Conflict(
            f"Reference {reference!r} was already used for a different {kind}",
            code="REFERENCE_CONFLICT",
        )


def lock_stake(did: str, body: StakeLockIn) -> StakeChangeOut:
    settings = get_settings()
    with transaction() as conn:
        repo = PouRepository(conn)
        _require_agent(repo, did)
        applied = repo.record_stake_event(
            did, "lock", body.amount_atomic, body.reference, locked_until=body.locked_until
        )
        if not applied:
            _same_event(repo, did, "lock", body.reference, body.amount_atomic, body.locked_until)
        else:
            repo.lock_stake(did, body.amount_atomic, body.locked_until)
        stake, dims = repo.stake(did), repo.dimensions(did)
    logger.info("Stake locked", extra={"did": did, "applied": applied, "ref": body.reference})
    return StakeChangeOut(
        applied=applied, stake=_stake_out(stake, settings), reputation=Dimensions(**dims)
    )


def slash(did: str, body: SlashIn) -> StakeChangeOut:
    """Take part of an agent's stake and multiply its reputation by POU_SLASH_FACTOR, once per
    admin reference."""
    settings = get_settings()
    with transaction() as conn:
        repo = PouRepository(conn)
        _require_agent(repo, did)
        if body.task_id is not None:
            receipt = repo.receipt(body.task_id)
            if receipt is None or did not in (receipt["agent_did"], *receipt["committee"]):
                raise InvalidInput(
                    "task_id must be a receipt this agent worked or audited", code="INVALID_TASK"
                )
        applied = repo.record_stake_event(
            did,
            "slash",
            body.amount_atomic,
            body.reference,
            reason=body.reason,
            task_id=body.task_id,
        )
        if not applied:
            _same_event(repo, did, "slash", body.reference, body.amount_atomic, body.reason)
        if applied and not repo.slash(did, body.amount_atomic, settings.pou_slash_factor):
            raise Conflict(
                f"{did} has less than {body.amount_atomic} locked",
                code="INSUFFICIENT_STAKE",
                amount_locked=str(repo.stake(did)["amount_locked"]),
            )
        stake, dims = repo.stake(did), repo.dimensions(did)
    if applied:
        metrics.add_metric(name="PouSlashes", unit="Count", value=1)
        logger.warning(
            "Agent slashed",
            extra={"did": did, "amount": str(body.amount_atomic), "reason": body.reason},
        )
    return StakeChangeOut(
        applied=applied, stake=_stake_out(stake, settings), reputation=Dimensions(**dims)
    )


def health() -> PouHealthOut:
    with read_snapshot() as conn:
        return PouHealthOut.model_validate(PouRepository(conn).health())


# -- the hourly aggregator ---------------------------------------------------------------------


def _hour(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def aggregate_usefulness(now: datetime | None = None) -> AggregatorOutcome:
    """Per-agent usefulness over the trailing window; with the reward pool on, every settled
    hour's pool split among the agents whose work was finalized in it (each hour once)."""
    settings = get_settings()
    if not settings.usefulness_aggregator_enabled:
        logger.info("[UsefulnessAggregator] Disabled (USEFULNESS_AGGREGATOR_ENABLED=false)")
        return AggregatorOutcome(ran=False)
    now = now or datetime.now(UTC)
    with transaction() as conn:
        repo = PouRepository(conn)
        if not repo.try_lock(AGGREGATOR_LOCK):
            logger.info("[UsefulnessAggregator] Another run holds the lock")
            return AggregatorOutcome(ran=False)
        outcome = AggregatorOutcome(
            agents_scored=repo.score_agents(timedelta(days=settings.usefulness_window_days))
        )
        if settings.usefulness_reward_pool_enabled:
            last = _hour(now - timedelta(seconds=settings.usefulness_hour_lag_s)) - timedelta(
                hours=1
            )
            first = _hour(now) - timedelta(hours=settings.usefulness_reward_catchup_hours)
            settled = repo.last_settled_hour()
            if settled is not None:
                first = max(first, settled + timedelta(hours=1))
            if first <= last:
                row = repo.settle_hours(first, last, settings.usefulness_reward_pool_hourly)
                outcome.hours_settled = int(row["hours"])
                outcome.credits_written = int(row["credits"])
                outcome.distributed_atomic = int(row["distributed"])
    logger.info(
        f"[UsefulnessAggregator] Updated {outcome.agents_scored} usefulness scores",
        extra=outcome.model_dump(mode="json"),
    )
    metrics.add_metric(name="UsefulnessAgentsScored", unit="Count", value=outcome.agents_scored)
    metrics.add_metric(name="UsefulnessHoursSettled", unit="Count", value=outcome.hours_settled)
    return outcome
