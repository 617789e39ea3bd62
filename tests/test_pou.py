"""Proof of usefulness: the guide's end-to-end flow over HTTP, every authorization rule, real
Ed25519 signatures, concurrent finalizers, short committees, stakes and the reward pool."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tally.pou import identity, service
from tally.pou.models import AgentIn, ReceiptIn, StakeLockIn
from tally.settings import reset_settings
from tests.support import assert_ledger_matches_totals, auth, run_concurrently

SERVICE = auth("broker", "user", "service")
ADMIN = auth("ops", "user", "admin")


@dataclass(frozen=True)
class Agent:
    did: str
    key: Ed25519PrivateKey


def make_agent(n: int) -> Agent:
    key, did = identity.new_identity(n.to_bytes(32, "big"))
    return Agent(did, key)


def register(agents: list[Agent], stake: int = 100) -> None:
    for agent in agents:
        service.register_agent(AgentIn(did=agent.did))
        if stake:
            service.lock_stake(
                agent.did, StakeLockIn(amount_atomic=stake, reference=f"initial-{agent.did}")
            )


def receipt_body(agent: Agent, client: Agent, **extra: Any) -> dict[str, Any]:
    return {
        "intent_id": "intent-" + uuid.uuid4().hex[:8],
        "negotiation_id": "neg-" + uuid.uuid4().hex,
        "agent_did": agent.did,
        "client_did": client.did,
        "intent_type": "summarize",
        "inputs_ref": "ipfs://inputs",
        "outputs_ref": "ipfs://outputs",
        "metrics": {"latency_ms": 1000},
        "payment_request_id": "pay-1",
        "amount_atomic": "1000000",
        **extra,
    }


def signed(
    task_id: str, by: Agent, type_: str, score: float, confidence: float, **extra: Any
) -> dict[str, Any]:
    payload = identity.attestation_payload(task_id, by.did, type_, score, confidence, None)
    return {
        "type": type_,
        "score": score,
        "confidence": confidence,
        "signature": identity.sign(by.key, payload),
        **extra,
    }


def attest(
    client: httpx.Client, task_id: str, by: Agent, body: dict[str, Any], headers: Any = None
) -> httpx.Response:
    """As the attester itself (its own user token), unless other headers are given."""
    return client.post(
        f"/api/receipts/{task_id}/attestations",
        json=body,
        headers={**(headers or auth(by.did, "user")), "X-AINP-DID": by.did},
    )


def count(db: psycopg.Connection[Any], sql: str) -> int:
    row = db.execute(sql).fetchone()
    assert row is not None
    return int(next(iter(row.values())))


@pytest.fixture
def cast(db: psycopg.Connection[Any]) -> dict[str, Any]:
    """An agent, its client and seven staked agents who may audit."""
    agent, client = make_agent(1), make_agent(2)
    auditors = [make_agent(10 + i) for i in range(7)]
    register([agent, client], stake=0)
    register(auditors)
    return {"agent": agent, "client": client, "auditors": auditors}


def new_receipt(cast: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body = ReceiptIn.model_validate(receipt_body(cast["agent"], cast["client"], **extra))
    receipt, created = service.create_receipt(body)
    assert created
    return receipt.model_dump(mode="json")


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def by_did(cast: dict[str, Any], did: str) -> Agent:
    everyone = [cast["agent"], cast["client"], *cast["auditors"]]
    return next(a for a in everyone if a.did == did)


# -- the guide's seven steps -------------------------------------------------------------------


def test_the_guides_end_to_end_flow(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    agent, buyer = make_agent(1), make_agent(2)
    auditors = [make_agent(10 + i) for i in range(6)]
    for a in [agent, buyer, *auditors]:
        r = client.post("/api/admin/agents", json={"did": a.did}, headers=ADMIN)
        assert r.status_code == 201, r.text
    for a in auditors:
        r = client.post(
            f"/api/admin/agents/{a.did}/stake",
            json={"amount_atomic": "500", "reference": "bond-1"},
            headers=ADMIN,
        )
        assert r.status_code == 200 and r.json()["stake"]["committee_eligible"], r.text
    before = client.get(f"/api/reputation/{agent.did}").json()
    assert before["dimensions"]["q"] == 0.5 and before["finalized_tasks"] == 0

    # 1. settle: the broker reports the settled negotiation
    settled = client.post("/api/receipts", json=receipt_body(agent, buyer), headers=SERVICE)
    assert settled.status_code == 201, settled.text
    task_id = settled.json()["id"]

    # 2. the receipt: pending, a committee, k=3, m=5
    receipt = client.get(f"/api/receipts/{task_id}", headers=auth("anyone", "user")).json()
    assert receipt["status"] == "pending" and (receipt["k"], receipt["m"]) == (3, 5)
    assert len(receipt["committee"]) == 5 and not receipt["committee_short"]

    # 3. the committee: five DIDs, the most trusted first (all equal here: ties by md5)
    committee = client.get(f"/api/receipts/{task_id}/committee").json()
    assert committee["committee"] == receipt["committee"]
    assert agent.did not in committee["committee"] and buyer.did not in committee["committee"]

    # 4. the client accepts
    r = attest(client, task_id, buyer, signed(task_id, buyer, "ACCEPTED", 0.95, 0.98))
    assert r.status_code == 201, r.text

    # 5. three committee members audit
    members = [next(a for a in auditors if a.did == did) for did in committee["committee"][:3]]
    for member in members:
        r = attest(client, task_id, member, signed(task_id, member, "AUDIT_PASS", 0.90, 0.95))
        assert r.status_code == 201, r.text

    # 6. finalize by hand (the finalizer would within a minute)
    done = client.post(f"/api/receipts/{task_id}/finalize", headers=auth("anyone", "user"))
    assert done.status_code == 200, done.text
    assert done.json()["ok"] is True and done.json()["status"] == "finalized"
    again = client.post(f"/api/receipts/{task_id}/finalize", headers=auth("anyone", "user"))
    assert again.status_code == 200 and again.json()["finalized_at"] == done.json()["finalized_at"]

    # 7. reputation updated: one EWMA step (alpha 0.2) from 0.5
    after = client.get(f"/api/reputation/{agent.did}").json()
    assert after["updated_at"] > before["updated_at"]
    dims = after["dimensions"]
    assert dims["q"] == pytest.approx(0.8 * 0.5 + 0.2 * (0.95 + 3 * 0.90) / 4)
    assert dims["t"] == pytest.approx(0.8 * 0.5 + 0.2 * (1 - 1000 / 5000))
    assert dims["r"] == pytest.approx(0.8 * 0.5 + 0.2 * 1.0)
    assert dims["v"] == pytest.approx(0.8 * 0.5 + 0.2 * 0.90)
    assert dims["i"] == pytest.approx(0.8 * 0.5 + 0.2 * 0.95)
    assert dims["s"] == dims["e"] == 0.5  # nothing observed: unchanged
    assert after["finalized_tasks"] == 1 and after["evidence"] == pytest.approx(0.2)
    assert after["trust"] > before["trust"]
    health = client.get("/api/pou/health").json()
    assert health["finalized_last_hour"] == 1 and health["attestations_last_hour"] == 4
    assert health["pending"] == 0


def test_finalize_without_quorum_says_what_is_missing(
    client: httpx.Client, cast: dict[str, Any]
) -> None:
    receipt = new_receipt(cast)
    task_id = receipt["id"]
    r = attest(client, task_id, cast["client"], {"type": "ACCEPTED", "score": 1, "confidence": 1})
    assert r.status_code == 201
    # An open type (QUALITY_HIGH) does not count toward quorum.
    member = by_did(cast, receipt["committee"][0])
    r = attest(client, task_id, member, {"type": "QUALITY_HIGH", "score": 1, "confidence": 1})
    assert r.status_code == 201
    r = client.post(f"/api/receipts/{task_id}/finalize", headers=auth("anyone", "user"))
    assert r.status_code == 409
    body = r.json()
    assert body["code"] == "QUORUM_NOT_MET" and (body["needed"], body["have"]) == (3, 1)
    assert "needed 3, have 1" in body["detail"]
    assert client.get(f"/api/receipts/{task_id}", headers=SERVICE).json()["status"] == "pending"


# -- who may attest what -----------------------------------------------------------------------


def test_attestation_authorization_rules(
    client: httpx.Client, db: psycopg.Connection[Any], cast: dict[str, Any]
) -> None:
    receipt = new_receipt(cast)
    task_id = receipt["id"]
    member = by_did(cast, receipt["committee"][0])
    outsider = next(a for a in cast["auditors"] if a.did not in receipt["committee"])
    ok = {"type": "AUDIT_PASS", "score": 0.8, "confidence": 0.9}

    def refused(by: Agent, body: dict[str, Any], status: int, code: str, **kw: Any) -> None:
        r = attest(client, task_id, by, body, **kw)
        assert (r.status_code, r.json().get("code")) == (status, code), r.text

    unauthorized = "UNAUTHORIZED_ATTESTATION"
    refused(member, {**ok, "type": "ACCEPTED"}, 403, unauthorized)  # ACCEPTED: the client only
    refused(outsider, ok, 403, unauthorized)  # AUDIT_PASS: the committee only
    refused(cast["client"], ok, 403, unauthorized)
    refused(cast["agent"], {**ok, "type": "QUALITY_HIGH"}, 403, unauthorized)  # own work
    refused(outsider, {**ok, "type": "SAFETY_PASS"}, 403, unauthorized)
    refused(make_agent(99), ok, 403, unauthorized)  # not an agent at all
    # A user token speaks only for its own subject.
    refused(member, ok, 403, "forbidden", headers=auth("someone-else", "user"))
    r = client.post(
        f"/api/receipts/{task_id}/attestations", json=ok, headers={"X-AINP-DID": member.did}
    )
    assert r.status_code == 401
    r = client.post(f"/api/receipts/{task_id}/attestations", json=ok, headers=SERVICE)
    assert r.status_code == 422  # no X-AINP-DID
    refused(member, {**ok, "score": 1.5}, 422, "invalid_input")
    refused(member, {**ok, "confidence": -0.1}, 422, "invalid_input")
    refused(member, {**ok, "type": "LGTM"}, 422, "invalid_input")
    r = client.post(
        f"/api/receipts/{task_id}/attestations",
        json=ok,
        headers={**SERVICE, "X-AINP-DID": "not-a-did"},
    )
    assert r.status_code == 422
    assert count(db, "SELECT count(*) FROM task_attestations") == 0  # nothing refused was kept

    # The member, with its own user token, attests once per type.
    r = attest(client, task_id, member, ok, headers=auth(member.did, "user"))
    assert r.status_code == 201, r.text
    refused(member, ok, 409, "DUPLICATE_ATTESTATION")
    r = attest(client, str(uuid.uuid4()), member, ok)
    assert r.status_code == 404

    # A suspended agent cannot attest, and does not count toward quorum.
    second = by_did(cast, receipt["committee"][1])
    service.register_agent(AgentIn(did=second.did, status="suspended"))
    refused(second, ok, 403, "AGENT_SUSPENDED")

    # Receipts are created by services only; agents and stakes by admins only.
    body = receipt_body(cast["agent"], cast["client"])
    assert client.post("/api/receipts", json=body, headers=auth("u", "user")).status_code == 403
    for path in ("/api/admin/agents", f"/api/admin/agents/{member.did}/stake"):
        assert client.post(path, json={}, headers=SERVICE).status_code == 403


def test_a_backend_naming_an_attester_must_bring_its_signature(
    client: httpx.Client, db: psycopg.Connection[Any], cast: dict[str, Any]
) -> None:
    receipt = new_receipt(cast)
    task_id = receipt["id"]
    member = by_did(cast, receipt["committee"][0])
    unsigned = {"type": "AUDIT_PASS", "score": 0.9, "confidence": 0.9}
    r = attest(client, task_id, member, unsigned, headers=SERVICE)
    assert (r.status_code, r.json()["code"]) == (403, "SIGNATURE_REQUIRED")
    r = attest(client, task_id, member, unsigned, headers=ADMIN)  # admins cannot speak for agents
    assert (r.status_code, r.json()["code"]) == (403, "forbidden")
    assert count(db, "SELECT count(*) FROM task_attestations") == 0
    r = attest(client, task_id, member, signed(task_id, member, "AUDIT_PASS", 0.9, 0.9), SERVICE)
    assert r.status_code == 201, r.text


def test_quorum_counts_only_active_qualifying_attesters(
    client: httpx.Client, cast: dict[str, Any]
) -> None:
    receipt = new_receipt(cast)
    task_id = receipt["id"]
    members = [by_did(cast, did) for did in receipt["committee"]]
    for member in members[:3]:
        assert (
            attest(client, task_id, member, signed(task_id, member, "AUDIT_PASS", 1, 1)).status_code
            == 201
        )
    service.register_agent(AgentIn(did=members[0].did, status="suspended"))
    r = client.post(f"/api/receipts/{task_id}/finalize", headers=SERVICE)
    assert (r.status_code, r.json()["have"]) == (409, 2)
    r = attest(client, task_id, cast["client"], signed(task_id, cast["client"], "ACCEPTED", 1, 1))
    assert r.status_code == 201
    assert client.post(f"/api/receipts/{task_id}/finalize", headers=SERVICE).status_code == 200
    r = attest(client, task_id, members[3], signed(task_id, members[3], "AUDIT_PASS", 1, 1))
    assert (r.status_code, r.json()["code"]) == (409, "RECEIPT_NOT_PENDING")


# -- signatures --------------------------------------------------------------------------------


def test_signatures_verify_against_the_dids_key(
    client: httpx.Client,
    db: psycopg.Connection[Any],
    cast: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receipt = new_receipt(cast)
    task_id = receipt["id"]
    member = by_did(cast, receipt["committee"][0])
    good = signed(task_id, member, "AUDIT_PASS", 0.7, 0.9)

    def code(body: dict[str, Any], by: Agent = member) -> str:
        r = attest(client, task_id, by, body)
        assert r.status_code == 403, r.text
        return str(r.json()["code"])

    assert code({**good, "score": 0.71}) == "INVALID_SIGNATURE"  # a different statement
    assert code({**good, "evidence_ref": "ipfs://x"}) == "INVALID_SIGNATURE"
    other = signed(task_id, cast["client"], "AUDIT_PASS", 0.7, 0.9)  # the client's key
    assert code({**good, "signature": other["signature"]}) == "INVALID_SIGNATURE"
    assert code({**good, "signature": "not base64!"}) == "INVALID_SIGNATURE"
    assert code({**good, "signature": "AAAA"}) == "INVALID_SIGNATURE"
    # Signed for another task: not valid here.
    elsewhere = signed(str(uuid.uuid4()), member, "AUDIT_PASS", 0.7, 0.9)
    assert code({**good, "signature": elsewhere["signature"]}) == "INVALID_SIGNATURE"

    monkeypatch.setenv("POU_REQUIRE_SIGNATURES", "true")
    reset_settings()
    unsigned = {k: v for k, v in good.items() if k != "signature"}
    assert code(unsigned) == "SIGNATURE_REQUIRED"
    assert count(db, "SELECT count(*) FROM task_attestations") == 0
    r = attest(client, task_id, member, good)
    assert r.status_code == 201, r.text
    assert r.json()["signature"] == good["signature"]

    # A DID of another method verifies against the key an admin registered for it.
    web_key = Ed25519PrivateKey.generate()
    web = Agent("did:web:auditor.example", web_key)
    public = identity.public_key_of(identity.new_identity(None)[1])  # any other key
    assert public is not None
    raw = web_key.public_key().public_bytes_raw()
    import base64

    r = client.post(
        "/api/admin/agents",
        json={"did": web.did, "public_key": base64.urlsafe_b64encode(raw).decode()},
        headers=ADMIN,
    )
    assert r.status_code == 201, r.text
    r = client.post(
        "/api/admin/agents",
        json={"did": web.did, "public_key": base64.urlsafe_b64encode(public).decode()},
        headers=ADMIN,
    )
    assert (r.status_code, r.json()["code"]) == (409, "KEY_CONFLICT")
    junk = {"did": "did:web:junk.example", "public_key": "!!!!" + "A" * 40}
    r = client.post("/api/admin/agents", json=junk, headers=ADMIN)
    assert (r.status_code, r.json()["code"]) == (422, "INVALID_KEY")
    mismatch = {"did": member.did, "public_key": base64.urlsafe_b64encode(public).decode()}
    r = client.post("/api/admin/agents", json=mismatch, headers=ADMIN)
    assert (r.status_code, r.json()["code"]) == (422, "KEY_MISMATCH")
    cast2 = {**cast, "client": web}
    task2 = new_receipt(cast2)["id"]
    r = attest(client, task2, web, signed(task2, web, "ACCEPTED", 1.0, 0.5))
    assert r.status_code == 201, r.text


def test_canonical_json_follows_rfc_8785() -> None:
    assert identity.canonical_json({"b": 1.0, "a": [0.5, None, True], "c": "é"}) == (
        '{"a":[0.5,null,true],"b":1,"c":"é"}'
    )
    assert identity.canonical_json(1e-7) == "1e-7"
    assert identity.canonical_json(0.000001) == "0.000001"
    assert identity.canonical_json(0.00001) == "0.00001"
    assert identity.canonical_json(0.1 + 0.2) == "0.30000000000000004"
    assert identity.canonical_json(1.5e-9) == "1.5e-9"
    assert identity.canonical_json(float(2**60)) == "1152921504606847000"  # as ECMAScript
    assert identity.canonical_json(1e21) == "1e+21"
    assert identity.canonical_json({"é": 1}) == '{"é":1}'
    with pytest.raises(identity.IdentityError):
        identity.canonical_json(10**400)
    key, did = identity.new_identity(bytes(32))
    assert did.startswith("did:key:z6Mk")
    assert identity.public_key_of(did) == key.public_key().public_bytes_raw()
    for bad in ("did:key:abc", "did:key:z111", "did:key:zNotBase58l0"):
        with pytest.raises(identity.IdentityError):
            identity.public_key_of(bad)


# -- rate limits ---------------------------------------------------------------------------------


def test_attestations_are_rate_limited_per_did(
    client: httpx.Client, cast: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POU_ATTESTATIONS_PER_HOUR", "3")
    reset_settings()
    receipt = new_receipt(cast)
    member = by_did(cast, receipt["committee"][0])
    types = ["AUDIT_PASS", "SAFETY_PASS", "QUALITY_HIGH", "EFFICIENCY_HIGH"]
    codes = [
        attest(client, receipt["id"], member, {"type": t, "score": 1, "confidence": 1}).status_code
        for t in types
    ]
    assert codes == [201, 201, 201, 429]
    r = attest(client, receipt["id"], member, {"type": "AUDIT_PASS", "score": 1, "confidence": 1})
    assert r.json()["code"] == "RATE_LIMITED" and int(r.headers["Retry-After"]) > 0
    # Another DID has its own budget.
    other = by_did(cast, receipt["committee"][1])
    r = attest(client, receipt["id"], other, {"type": "AUDIT_PASS", "score": 1, "confidence": 1})
    assert r.status_code == 201


# -- receipts and committees -------------------------------------------------------------------


def test_receipts_are_idempotent_per_negotiation(
    client: httpx.Client, db: psycopg.Connection[Any], cast: dict[str, Any]
) -> None:
    body = receipt_body(cast["agent"], cast["client"])
    first = client.post("/api/receipts", json=body, headers=SERVICE)
    again = client.post("/api/receipts", json=body, headers=SERVICE)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    for change in ({"amount_atomic": "5"}, {"metrics": {"latency_ms": 7}}, {"k": 2}):
        changed = client.post("/api/receipts", json={**body, **change}, headers=SERVICE)
        assert (changed.status_code, changed.json()["code"]) == (409, "NEGOTIATION_CONFLICT")
    for bad in (
        {**body, "client_did": body["agent_did"]},
        {**body, "negotiation_id": "n2", "k": 7, "m": 5},
        {**body, "negotiation_id": "n3", "amount_atomic": -1},
        {**body, "negotiation_id": "n4", "amount_atomic": 1.5},
        {**body, "negotiation_id": "n5", "metrics": {"latency_ms": -3}},
        {**body, "negotiation_id": "n5b", "metrics": {"latency_ms": 10**400}},
        {**body, "negotiation_id": "n6", "agent_did": "did:key:zzzz"},
        {**body, "negotiation_id": "n7", "intent_id": "x" * 201},
        {**body, "negotiation_id": "n8", "surprise": True},
    ):
        r = client.post("/api/receipts", json=bad, headers=SERVICE)
        assert r.status_code == 422, (bad, r.text)
    assert count(db, "SELECT count(*) FROM task_receipts") == 1
    # Big amounts survive as strings.
    big = "1" + "0" * 40
    r = client.post(
        "/api/receipts",
        json={**body, "negotiation_id": "big", "amount_atomic": big},
        headers=SERVICE,
    )
    assert r.status_code == 201 and r.json()["amount_atomic"] == big


def test_committee_is_the_most_trusted_eligible_agents(
    db: psycopg.Connection[Any], cast: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POU_COMMITTEE_MIN_STAKE", "1")
    reset_settings()
    auditors = cast["auditors"]
    # Give the auditors distinct trust; one is suspended, one has no stake.
    for i, auditor in enumerate(auditors):
        db.execute("UPDATE agent_reputation SET q = %s WHERE agent_id = %s", (0.1 * i, auditor.did))
    service.register_agent(AgentIn(did=auditors[6].did, status="suspended"))
    db.execute("UPDATE agent_stakes SET amount_locked = 0 WHERE agent_id = %s", (auditors[5].did,))
    receipt = new_receipt(cast)
    assert receipt["committee"] == [auditors[i].did for i in (4, 3, 2, 1, 0)]
    # Anyone can recompute it with the rule the committee endpoint states.
    rows = db.execute(
        """
        SELECT ag.did FROM agents ag JOIN agent_reputation rep ON rep.agent_id = ag.did
        LEFT JOIN agent_stakes st ON st.agent_id = ag.did
        WHERE ag.status = 'active' AND ag.did NOT IN (%(a)s, %(c)s)
          AND coalesce(st.amount_locked, 0) >= 1
        ORDER BY pou_trust(rep.q, rep.t, rep.r, rep.s, rep.v, rep.i, rep.e) DESC,
                 md5(%(id)s || ag.did)
        LIMIT 5
        """,
        {"a": cast["agent"].did, "c": cast["client"].did, "id": receipt["id"]},
    ).fetchall()
    assert [r["did"] for r in rows] == receipt["committee"]
    # Equal trust: ties fall by md5(task id || did), so different tasks spread the work.
    db.execute("UPDATE agent_reputation SET q = 0.5")
    db.execute("UPDATE agent_stakes SET amount_locked = 100")
    service.register_agent(AgentIn(did=auditors[6].did, status="active"))
    seats = [did for _ in range(12) for did in new_receipt(cast)["committee"]]
    assert set(seats) == {a.did for a in auditors}


def test_a_short_committee_is_reported_not_stuck_silently(
    client: httpx.Client,
    db: psycopg.Connection[Any],
    cast: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    for auditor in cast["auditors"][2:]:
        service.register_agent(AgentIn(did=auditor.did, status="suspended"))
    receipt = new_receipt(cast)
    assert len(receipt["committee"]) == 2
    assert receipt["committee_short"] and receipt["quorum_reachable"]  # 2 + the client = k
    service.register_agent(AgentIn(did=cast["auditors"][1].did, status="suspended"))
    lonely = new_receipt(cast)
    assert lonely["committee"] == [cast["auditors"][0].did]
    assert lonely["committee_short"] and not lonely["quorum_reachable"]
    assert messages(caplog).count("Receipt committee is short") == 2
    outcome = service.run_finalizer()
    assert (outcome.pending, outcome.short_committees, outcome.finalized) == (2, 2, 0)
    assert "[PoU Finalizer] Pending receipts with a short committee" in messages(caplog)
    assert client.get("/api/pou/health").json()["short_committees"] == 2
    committee = client.get(f"/api/receipts/{lonely['id']}/committee").json()
    assert committee["committee_short"] and not committee["quorum_reachable"]
    # The reachable one still finalizes with the client and its two members.
    task_id = receipt["id"]
    for did in receipt["committee"]:
        service.register_agent(AgentIn(did=did, status="active"))
        member = by_did(cast, did)
        attest(client, task_id, member, {"type": "AUDIT_PASS", "score": 1, "confidence": 1})
    attest(client, task_id, cast["client"], {"type": "ACCEPTED", "score": 1, "confidence": 1})
    assert service.run_finalizer().finalized == 1
    # A receipt asking for more than the client and committee can give is refused up front.
    r = client.post(
        "/api/receipts", json=receipt_body(cast["agent"], cast["client"], k=4, m=2), headers=SERVICE
    )
    assert (r.status_code, r.json()["code"]) == (422, "QUORUM_UNREACHABLE")


# -- the finalizer -------------------------------------------------------------------------------


def quorate_receipts(db: psycopg.Connection[Any], cast: dict[str, Any], n: int) -> list[str]:
    """n receipts of the cast's agent with the client and three auditors in, scores all 0.8."""
    ids = []
    for _ in range(n):
        receipt = new_receipt(cast)
        task_id = receipt["id"]
        ids.append(task_id)
        rows = [(task_id, cast["client"].did, "ACCEPTED")]
        rows += [(task_id, did, "AUDIT_PASS") for did in receipt["committee"][:3]]
        with db.cursor() as cur:
            cur.executemany(
                "INSERT INTO task_attestations (task_id, by_did, type, score, confidence) "
                "VALUES (%s, %s, %s, 0.8, 1)",
                rows,
            )
    return ids


def test_concurrent_finalizers_finalize_each_receipt_once(
    db: psycopg.Connection[Any], cast: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POU_FINALIZER_BATCH", "7")
    monkeypatch.setenv("POU_POINTS_PER_TASK", "25")
    reset_settings()
    ids = quorate_receipts(db, cast, 40)
    waiting = new_receipt(cast)  # no attestations: stays pending
    outcomes = run_concurrently(service.run_finalizer, 3)
    assert sum(o.finalized for o in outcomes) == 40
    finalized = db.execute(
        "SELECT id::text FROM task_receipts WHERE status = 'finalized'"
    ).fetchall()
    assert sorted(r["id"] for r in finalized) == sorted(ids)
    assert db.execute(
        "SELECT status FROM task_receipts WHERE id = %s", (waiting["id"],)
    ).fetchone() == {"status": "pending"}
    # Forty EWMA steps of the same observation, none lost or doubled.
    rep = db.execute(
        "SELECT q, r FROM agent_reputation WHERE agent_id = %s", (cast["agent"].did,)
    ).fetchone()
    assert rep is not None
    assert rep["q"] == pytest.approx(0.8 + (0.5 - 0.8) * 0.8**40)
    assert rep["r"] == pytest.approx(1 + (0.5 - 1) * 0.8**40)
    # One ledger entry per receipt, and the totals agree.
    assert count(db, "SELECT count(*) FROM points_ledger WHERE source_kind = 'pou'") == 40
    assert count(db, "SELECT total_points FROM users") == 40 * 25
    assert_ledger_matches_totals(db)
    again = service.run_finalizer()
    assert (again.finalized, again.pending) == (0, 1)


def test_ewma_steps_follow_receipt_order_within_a_batch(
    db: psycopg.Connection[Any], cast: dict[str, Any]
) -> None:
    scores = [0.2, 0.9, 0.4, 1.0]
    for score in scores:
        receipt = new_receipt(cast, metrics={})
        for did, type_ in [(cast["client"].did, "ACCEPTED")] + [
            (d, "AUDIT_PASS") for d in receipt["committee"][:3]
        ]:
            db.execute(
                "INSERT INTO task_attestations (task_id, by_did, type, score, confidence) "
                "VALUES (%s, %s, %s, %s, 1)",
                (receipt["id"], did, type_, score),
            )
    assert service.run_finalizer().finalized == 4
    expected_q = 0.5
    for score in scores:
        expected_q = 0.8 * expected_q + 0.2 * score
    rep = db.execute(
        "SELECT q, t FROM agent_reputation WHERE agent_id = %s", (cast["agent"].did,)
    ).fetchone()
    assert rep == {"q": pytest.approx(expected_q), "t": 0.5}  # no latency: t unchanged


def test_finalizer_logs_the_guides_lines_and_can_be_disabled(
    db: psycopg.Connection[Any],
    cast: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    quorate_receipts(db, cast, 2)
    caplog.clear()
    service.run_finalizer()
    assert "[PoU Finalizer] Checking 2 pending receipts" in messages(caplog)
    assert messages(caplog).count("[PoU Finalizer] Finalized task receipt") == 2
    caplog.clear()
    service.run_finalizer()
    assert "[PoU Finalizer] Checking 0 pending receipts" in messages(caplog)
    monkeypatch.setenv("POU_FINALIZER_ENABLED", "false")
    reset_settings()
    quorate_receipts(db, cast, 1)
    assert service.run_finalizer().ran is False
    assert count(db, "SELECT count(*) FROM task_receipts WHERE status = 'pending'") == 1


def test_a_receipt_the_finalizer_cannot_process_fails_alone(
    db: psycopg.Connection[Any], cast: dict[str, Any]
) -> None:
    """A value the batch statement cannot process (simulated: the database refuses one agent's
    reputation update as out of range) must not hold back every other receipt, every minute."""
    other = make_agent(3)
    register([other], stake=0)
    good = quorate_receipts(db, cast, 3)
    (bad,) = quorate_receipts(db, {**cast, "agent": other}, 1)
    db.execute(
        f"""
        CREATE FUNCTION refuse_reputation() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.agent_id = '{other.did}' THEN
                RAISE EXCEPTION 'value out of range' USING ERRCODE = '22003';
            END IF;
            RETURN NEW;
        END $$
        """
    )
    db.execute(
        "CREATE TRIGGER refuse_reputation BEFORE UPDATE ON agent_reputation "
        "FOR EACH ROW EXECUTE FUNCTION refuse_reputation()"
    )
    try:
        outcome = service.run_finalizer()
    finally:
        db.execute("DROP TRIGGER refuse_reputation ON agent_reputation")
        db.execute("DROP FUNCTION refuse_reputation()")
    assert (outcome.finalized, outcome.failed) == (3, 1)
    statuses = {
        r["id"]: r["status"]
        for r in db.execute("SELECT id::text, status FROM task_receipts").fetchall()
    }
    assert [statuses[g] for g in good] == ["finalized"] * 3 and statuses[bad] == "failed"
    assert service.run_finalizer().finalized == 0  # and it is not retried every minute


def test_finalizer_stops_before_the_deadline(
    db: psycopg.Connection[Any], cast: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POU_FINALIZER_BATCH", "2")
    reset_settings()
    quorate_receipts(db, cast, 5)
    budget = iter([60_000, 60_000, 1_000])
    outcome = service.run_finalizer(remaining_ms=lambda: next(budget))
    assert outcome.stopped_early and outcome.finalized == 4
    assert service.run_finalizer().finalized == 1


# -- stakes --------------------------------------------------------------------------------------


def test_slash_lowers_the_stake_and_reputation_once(
    client: httpx.Client,
    db: psycopg.Connection[Any],
    cast: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POU_COMMITTEE_MIN_STAKE", "1")
    reset_settings()
    auditor = cast["auditors"][0]
    path = f"/api/admin/agents/{auditor.did}/slash"
    body = {"amount_atomic": "40", "reason": "false audit", "reference": "case-7"}
    r = client.post(path, json=body, headers=ADMIN)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["applied"] and out["stake"]["amount_locked"] == "60"
    assert out["stake"]["slashed_total"] == "40"
    assert out["reputation"]["q"] == pytest.approx(0.45)
    retry = client.post(path, json=body, headers=ADMIN).json()
    assert not retry["applied"] and retry["stake"]["amount_locked"] == "60"
    assert retry["reputation"]["q"] == pytest.approx(0.45)
    reused = client.post(path, json={**body, "amount_atomic": "41"}, headers=ADMIN)
    assert (reused.status_code, reused.json()["code"]) == (409, "REFERENCE_CONFLICT")
    r = client.post(
        path, json={**body, "amount_atomic": "61", "reference": "case-8"}, headers=ADMIN
    )
    assert (r.status_code, r.json()["code"]) == (409, "INSUFFICIENT_STAKE")
    assert count(db, "SELECT count(*) FROM agent_stake_events WHERE kind = 'slash'") == 1
    r = client.post(
        path, json={**body, "reference": "case-9", "task_id": str(uuid.uuid4())}, headers=ADMIN
    )
    assert (r.status_code, r.json()["code"]) == (422, "INVALID_TASK")
    r = client.post(f"/api/admin/agents/{make_agent(77).did}/slash", json=body, headers=ADMIN)
    assert r.status_code == 404
    rep = client.get(f"/api/reputation/{auditor.did}").json()
    assert rep["stake"]["slashed_total"] == "40" and rep["dimensions"]["e"] == pytest.approx(0.45)
    # Slashed below the minimum: off the next committees.
    client.post(path, json={**body, "amount_atomic": "60", "reference": "case-10"}, headers=ADMIN)
    assert auditor.did not in new_receipt(cast)["committee"]
    assert client.get(f"/api/reputation/{make_agent(78).did}").status_code == 404


# -- the usefulness aggregator -------------------------------------------------------------------


def test_aggregator_scores_agents_and_splits_each_hours_pool_exactly_once(
    db: psycopg.Connection[Any], cast: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USEFULNESS_REWARD_POOL_ENABLED", "true")
    monkeypatch.setenv("USEFULNESS_REWARD_POOL_HOURLY", "1000000000n")  # the guide's BigInt
    reset_settings()
    other = make_agent(3)
    register([other], stake=0)
    mine = quorate_receipts(db, cast, 2)
    theirs = quorate_receipts(db, {**cast, "agent": other}, 1)
    service.run_finalizer()
    now = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
    hour = now.replace(minute=0) - timedelta(hours=1)
    # All three finished in the last complete hour; the other agent's audits scored lower.
    db.execute(
        "UPDATE task_receipts SET finalized_at = %s WHERE id = ANY(%s::uuid[])",
        (hour + timedelta(minutes=10), mine + theirs),
    )
    db.execute("UPDATE task_attestations SET score = 0.4 WHERE task_id = %s", (theirs[0],))
    results = run_concurrently(lambda: service.aggregate_usefulness(now=now), 2)
    assert sorted(r.ran for r in results) == [False, True] or all(r.ran for r in results)
    credits = {
        r["agent_id"]: int(r["amount_atomic"])
        for r in db.execute("SELECT agent_id, amount_atomic FROM usefulness_credits").fetchall()
    }
    assert sum(credits.values()) == 1_000_000_000
    # Weights 2 x 0.8 against 1 x 0.4: shares 0.8 and 0.2.
    assert credits[cast["agent"].did] == 800_000_000 and credits[other.did] == 200_000_000
    settled = db.execute("SELECT hour_start, agents FROM usefulness_reward_hours").fetchall()
    assert {r["agents"] for r in settled if r["hour_start"] == hour} == {2}
    assert len(settled) == 24  # the catch-up window, each hour settled (empty ones with 0)
    assert service.aggregate_usefulness(now=now).hours_settled == 0  # each hour once
    rep = service.reputation(cast["agent"].did)
    assert rep.credits_atomic == 800_000_000 and rep.usefulness_score == pytest.approx(1.6)
    # Pools split in whole units by largest remainder: still exactly the pool.
    monkeypatch.setenv("USEFULNESS_REWARD_POOL_HOURLY", "10")
    reset_settings()
    third = make_agent(4)
    register([third], stake=0)
    ids = quorate_receipts(db, {**cast, "agent": third}, 1) + quorate_receipts(db, cast, 1)
    service.run_finalizer()
    db.execute(
        "UPDATE task_receipts SET finalized_at = %s WHERE id = ANY(%s::uuid[])",
        (now + timedelta(minutes=10), ids),
    )
    later = now + timedelta(hours=1)
    db.execute("UPDATE task_attestations SET score = 0.3 WHERE task_id = %s", (ids[0],))
    assert service.aggregate_usefulness(now=later).hours_settled == 1
    split = db.execute(
        "SELECT sum(amount_atomic) AS total, count(*) AS n FROM usefulness_credits "
        "WHERE hour_start = %s",
        (now.replace(minute=0),),
    ).fetchone()
    assert split == {"total": 10, "n": 2}


def test_the_aggregator_can_be_switched_off(
    db: psycopg.Connection[Any], cast: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    quorate_receipts(db, cast, 1)
    service.run_finalizer()
    monkeypatch.setenv("USEFULNESS_AGGREGATOR_ENABLED", "false")
    reset_settings()
    assert service.aggregate_usefulness().ran is False
    assert count(db, "SELECT count(*) FROM agent_usefulness") == 0
    monkeypatch.setenv("USEFULNESS_AGGREGATOR_ENABLED", "true")
    reset_settings()
    assert service.aggregate_usefulness().agents_scored >= 1


def test_the_finalizer_works_from_the_quorate_list(
    client: httpx.Client, db: psycopg.Connection[Any], cast: dict[str, Any]
) -> None:
    """Receipts still waiting for attestations cost the finalizer nothing: attestations put a
    receipt on the list the moment it is quorate; finalizing takes it off."""
    waiting, ready = new_receipt(cast), new_receipt(cast)
    members = [by_did(cast, did) for did in ready["committee"][:3]]
    auditor = by_did(cast, waiting["committee"][0])
    r = attest(client, waiting["id"], auditor, {"type": "AUDIT_PASS", "score": 1, "confidence": 1})
    assert r.status_code == 201, r.text
    listed = "SELECT task_id::text AS id FROM task_receipts_quorate"
    for i, member in enumerate(members):
        assert db.execute(listed).fetchall() == []  # not quorate until the third
        r = attest(client, ready["id"], member, {"type": "AUDIT_PASS", "score": 1, "confidence": 1})
        assert r.status_code == 201, (i, r.text)
    assert db.execute(listed).fetchall() == [{"id": ready["id"]}]
    # An auditor suspended after attesting stops counting; active again, it counts again.
    service.register_agent(AgentIn(did=members[0].did, status="suspended"))
    assert service.run_finalizer().finalized == 0
    db.execute("DELETE FROM task_receipts_quorate")  # as if it had never been listed
    service.register_agent(AgentIn(did=members[0].did, status="active"))
    assert db.execute(listed).fetchall() == [{"id": ready["id"]}]
    assert service.run_finalizer().finalized == 1
    assert db.execute(listed).fetchall() == []
    assert (
        client.get(f"/api/receipts/{waiting['id']}", headers=SERVICE).json()["status"] == "pending"
    )
