"""Matchmaking by vote: the guide's five tests, automated, plus voting rules, over real
PostgreSQL and (for the API) real HTTP."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import psycopg
import pytest

from tally.matchmaking import service
from tally.matchmaking.scoring import Member, SharedInterestsScorer, pair_of
from tally.settings import reset_settings
from tests.support import auth, run_concurrently

INTERESTS = ["birdsong", "hiking", "field recording", "moths", "rivers", "owls", "frogs"]
CITIES = ["Berlin", "Lisbon", "Pune", "Austin"]

# The guide's Test 5, verbatim.
DUPLICATES = """
SELECT pair_hash, COUNT(*) as count
FROM (
  SELECT pair_hash FROM match_proposals WHERE status NOT IN ('rejected', 'expired')
  UNION ALL
  SELECT pair_hash FROM match_generation_queue WHERE consumed_at IS NULL
) combined
GROUP BY pair_hash
HAVING COUNT(*) > 1
"""
QUEUE_DEPTH = "SELECT COUNT(*) FROM match_generation_queue WHERE consumed_at IS NULL"
ACTIVE_VOTING = "SELECT COUNT(*) FROM match_proposals WHERE status = 'voting'"


def members(db: psycopg.Connection[Any], count: int) -> list[str]:
    addresses = [f"0xm{i:04d}" for i in range(count)]
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO profiles (address, display_name, attributes) VALUES (%s, %s, %s)",
            [
                (
                    a,
                    f"Member {i}",
                    psycopg.types.json.Jsonb(
                        {"interests": [INTERESTS[i % 7], INTERESTS[(i * 3) % 7]]}
                    ),
                )
                for i, a in enumerate(addresses)
            ],
        )
        cur.executemany(
            "INSERT INTO home_location_struct (user_id, raw_location, city, country) "
            "VALUES (%s, %s, %s, 'X')",
            [(a, CITIES[i % 4], CITIES[i % 4]) for i, a in enumerate(addresses)],
        )
    return addresses


def count(db: psycopg.Connection[Any], query: str) -> int:
    row = db.execute(query).fetchone()
    assert row is not None
    return int(next(iter(row.values())))


def expire_all(db: psycopg.Connection[Any]) -> None:
    db.execute(
        "UPDATE match_proposals SET voting_expires_at = now() - interval '1 second' "
        "WHERE status = 'voting'"
    )


def voting(db: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return db.execute("SELECT * FROM match_proposals WHERE status = 'voting'").fetchall()


def assigned_voters(db: psycopg.Connection[Any], proposal_id: Any) -> list[str]:
    rows = db.execute(
        "SELECT voter_address FROM voter_assignments WHERE proposal_id = %s", (proposal_id,)
    ).fetchall()
    return [r["voter_address"] for r in rows]


# -- scoring -----------------------------------------------------------------------------------


def test_the_default_scorer_explains_itself() -> None:
    scorer = SharedInterestsScorer()
    a = Member(
        "a", {"interests": ["Owls", "moths"], "looking_for": ["walks"]}, "Berlin", None, "DE"
    )
    b = Member("b", {"interests": ["owls", "rivers"], "looking_for": "walks"}, "berlin", None, "DE")
    match = scorer.score(a, b)
    assert match.score == pytest.approx(0.6 / 3 + 0.15 + 0.25)
    assert match.reasons == ["1 shared interest: owls", "both looking for walks", "both in Berlin"]
    assert scorer.score(a, Member("c")).score == 0.0
    assert pair_of("b", "a") == pair_of("a", "b") and pair_of("a", "b")[:2] == ("a", "b")


# -- the guide's five tests --------------------------------------------------------------------


def test_1_the_queue_stays_within_its_band(db: psycopg.Connection[Any]) -> None:
    members(db, 40)
    for _ in range(6):
        service.generate_matches()
        depth = count(db, QUEUE_DEPTH)
        assert 50 <= depth <= 75, depth
        service.create_proposals()  # consumes some: the next run refills
        assert count(db, QUEUE_DEPTH) >= 50 - 12
        expire_all(db)
        service.expire_proposals()
    queued = db.execute(
        "SELECT compatibility_score FROM match_generation_queue WHERE consumed_at IS NULL "
        "ORDER BY id"
    ).fetchall()
    assert all(0 <= r["compatibility_score"] <= 1 for r in queued)
    metrics = db.execute("SELECT * FROM system_metrics ORDER BY recorded_at DESC LIMIT 10")
    assert {r["job"] for r in metrics.fetchall()} >= {"match_generator", "proposal_creator"}


def test_2_proposals_in_voting_stay_within_their_band(db: psycopg.Connection[Any]) -> None:
    members(db, 40)
    service.generate_matches()
    service.create_proposals()
    assert count(db, ACTIVE_VOTING) == 12
    for proposal in voting(db):
        voters = assigned_voters(db, proposal["id"])
        assert len(voters) == 10 == len(set(voters))
        assert proposal["user_a_address"] not in voters
        assert proposal["user_b_address"] not in voters
        assert proposal["voting_expires_at"] > proposal["voting_started_at"]
    # Load is even: 120 assignments over 40 members, about 3 each (a member is never a voter
    # on their own pair, which can leave one a little behind).
    load = Counter(r["voter_address"] for r in db.execute("SELECT * FROM voter_assignments"))
    assert sum(load.values()) == 120 and len(load) == 40
    assert max(load.values()) - min(load.values()) <= 2
    service.create_proposals()  # 12 >= 10: nothing to do
    assert count(db, ACTIVE_VOTING) == 12
    db.execute(
        "UPDATE match_proposals SET status = 'rejected', finalized_at = now() "
        "WHERE id IN (SELECT id FROM match_proposals WHERE status = 'voting' LIMIT 3)"
    )
    service.create_proposals()  # 9 < 10: back to 12
    assert count(db, ACTIVE_VOTING) == 12


def test_3_a_voter_votes_twenty_times_and_always_has_a_next_match(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    """The community votes too, and the jobs run every minute, as in a live system: one member
    voting twenty times in a row always gets a next match, and the bands hold."""
    addresses = members(db, 30)
    service.generate_matches()
    service.create_proposals()
    voter = addresses[0]
    seen = set()
    for i in range(20):
        nxt = client.get("/api/matches/next", headers=auth(voter, "user"))
        assert nxt.status_code == 200, (i, nxt.text)
        proposal = nxt.json()["proposal"]
        assert proposal["id"] not in seen
        assert voter not in (proposal["user_a_address"], proposal["user_b_address"])
        seen.add(proposal["id"])
        cast = client.post(
            f"/api/proposals/{proposal['id']}/votes",
            json={"vote": "yes" if i % 2 else "no"},
            headers=auth(voter, "user"),
        )
        assert cast.status_code == 200, (i, cast.text)
        if i % 4 == 3:  # a minute passes: others decide what the voter voted on; jobs run
            decided_by_voter = [p for p in voting(db) if str(p["id"]) in seen]
            for open_one in decided_by_voter:
                others = [v for v in assigned_voters(db, open_one["id"]) if v != voter]
                for other in others[: 5 - open_one["yes_votes"]]:
                    service.vote(open_one["id"], other, "yes")
            service.expire_proposals()
            service.generate_matches()
            service.create_proposals()
        assert count(db, ACTIVE_VOTING) <= 12
    assert db.execute(DUPLICATES).fetchall() == []


def test_only_members_get_matches(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    addresses = members(db, 30)
    service.generate_matches()
    service.create_proposals()
    stranger = client.get("/api/matches/next", headers=auth("0xnobody", "user"))
    assert stranger.status_code == 403 and stranger.json()["code"] == "not_a_member"
    db.execute("UPDATE profiles SET opt_in = false WHERE address = %s", (addresses[1],))
    opted_out = client.get("/api/matches/next", headers=auth(addresses[1], "user"))
    assert opted_out.status_code == 403


def test_next_never_pushes_voting_past_its_band(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    addresses = members(db, 30)
    service.generate_matches()
    service.create_proposals()
    for voter in addresses[:6]:
        for _ in range(14):
            nxt = client.get("/api/matches/next", headers=auth(voter, "user"))
            if nxt.status_code == 404:
                break
            assert nxt.status_code == 200
            client.post(
                f"/api/proposals/{nxt.json()['proposal']['id']}/votes",
                json={"vote": "no"},
                headers=auth(voter, "user"),
            )
    assert count(db, ACTIVE_VOTING) <= 12


def test_4_an_expired_proposal_is_finalized_by_the_next_run(db: psycopg.Connection[Any]) -> None:
    members(db, 30)
    service.generate_matches()
    service.create_proposals()
    first, second, third = voting(db)[:3]
    db.execute(
        "UPDATE match_proposals SET yes_votes = 2, no_votes = 1 WHERE id = %s", (first["id"],)
    )
    db.execute(
        "UPDATE match_proposals SET yes_votes = 1, no_votes = 1 WHERE id = %s", (second["id"],)
    )
    db.execute(
        "UPDATE match_proposals SET voting_expires_at = now() - interval '1 second' "
        "WHERE id = ANY(%s)",
        ([first["id"], second["id"], third["id"]],),
    )
    outcome = service.expire_proposals()
    assert outcome.detail == {"approved": 1, "rejected": 2, "conversations": 1}
    status = {
        r["id"]: r["status"]
        for r in db.execute("SELECT id, status FROM match_proposals WHERE finalized_at IS NOT NULL")
    }
    assert status == {first["id"]: "approved", second["id"]: "rejected", third["id"]: "rejected"}
    talk = db.execute("SELECT * FROM conversations").fetchall()
    assert [t["proposal_id"] for t in talk] == [first["id"]]
    # Their unvoted seats are closed: nobody is left waiting on a decided proposal.
    seats = db.execute(
        "SELECT count(*) AS n FROM voter_assignments WHERE proposal_id = ANY(%s) "
        "AND voted_at IS NULL AND closed_at IS NULL",
        ([first["id"], second["id"], third["id"]],),
    ).fetchone()
    assert seats == {"n": 0}
    # The rejected pairs are free again; the approved one is not.
    claims = {r["pair_hash"] for r in db.execute("SELECT pair_hash FROM match_pair_claims")}
    assert first["pair_hash"] in claims and second["pair_hash"] not in claims
    assert service.expire_proposals().detail == {"approved": 0, "rejected": 0, "conversations": 0}


def test_5_no_duplicates_with_two_of_every_job_at_once(db: psycopg.Connection[Any]) -> None:
    members(db, 14)  # 91 possible pairs: the generators compete for the same ones
    finalized_so_far = 0
    for _ in range(3):
        run_concurrently(service.generate_matches)
        run_concurrently(service.create_proposals)
        assert db.execute(DUPLICATES).fetchall() == []
        assert count(db, QUEUE_DEPTH) <= 75
        assert count(db, ACTIVE_VOTING) <= 12
        expire_all(db)
        db.execute(  # some pairs win their vote
            "UPDATE match_proposals SET yes_votes = 1 WHERE status = 'voting' "
            "AND id IN (SELECT id FROM match_proposals WHERE status = 'voting' LIMIT 4)"
        )
        due = count(db, ACTIVE_VOTING)
        results = run_concurrently(service.expire_proposals)
        finalized = sum(r.detail.get("approved", 0) + r.detail.get("rejected", 0) for r in results)
        total = count(db, "SELECT count(*) FROM match_proposals WHERE finalized_by = 'expiry'")
        assert finalized == due == total - finalized_so_far  # each exactly once
        finalized_so_far = total
    assert count(db, "SELECT count(*) FROM conversations") == count(
        db, "SELECT count(*) FROM match_proposals WHERE status = 'approved'"
    )
    service.generate_matches()
    service.create_proposals()
    with pytest.raises(psycopg.errors.UniqueViolation):
        live = db.execute(
            "SELECT * FROM match_proposals WHERE status NOT IN ('rejected', 'expired') LIMIT 1"
        ).fetchone()
        assert live is not None
        db.execute(
            "INSERT INTO match_proposals (user_a_address, user_b_address, pair_hash, "
            "compatibility_score, voters_target) VALUES (%s, %s, %s, 0.5, 10)",
            (live["user_a_address"], live["user_b_address"], live["pair_hash"]),
        )


def test_without_the_locks_the_database_still_refuses_duplicates(
    db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The advisory locks keep the bands; the claims and SKIP LOCKED keep the data right even
    when three of every job run at once without them."""
    from tally.matchmaking.repository import MatchRepository

    monkeypatch.setattr(MatchRepository, "try_lock", lambda self, key: True)
    members(db, 14)
    for _ in range(2):
        run_concurrently(service.generate_matches, times=3)
        run_concurrently(service.create_proposals, times=3)
        assert db.execute(DUPLICATES).fetchall() == []
        expire_all(db)
        due = count(db, ACTIVE_VOTING)
        results = run_concurrently(service.expire_proposals, times=3)
        assert sum(r.detail["approved"] + r.detail["rejected"] for r in results) == due
        assert count(db, ACTIVE_VOTING) == 0


# -- votes -------------------------------------------------------------------------------------


@pytest.fixture
def proposal(db: psycopg.Connection[Any]) -> dict[str, Any]:
    members(db, 30)
    service.generate_matches()
    service.create_proposals()
    return voting(db)[0]


def vote(client: httpx.Client, proposal_id: Any, voter: str, choice: str) -> httpx.Response:
    return client.post(
        f"/api/proposals/{proposal_id}/votes", json={"vote": choice}, headers=auth(voter, "user")
    )


def test_only_assigned_voters_vote_and_only_once(
    client: httpx.Client, db: psycopg.Connection[Any], proposal: dict[str, Any]
) -> None:
    voters = assigned_voters(db, proposal["id"])
    stranger = next(
        a
        for a in (f"0xm{i:04d}" for i in range(30))
        if a not in voters and a not in (proposal["user_a_address"], proposal["user_b_address"])
    )
    denied = vote(client, proposal["id"], stranger, "yes")
    assert denied.status_code == 403 and denied.json()["code"] == "not_assigned"
    member = vote(client, proposal["id"], proposal["user_a_address"], "yes")
    assert member.status_code == 403
    first = vote(client, proposal["id"], voters[0], "yes")
    assert first.status_code == 200 and first.json()["proposal"]["yes_votes"] == 1
    again = vote(client, proposal["id"], voters[0], "no")
    assert again.status_code == 409 and again.json()["code"] == "already_voted"
    bad = client.post(
        f"/api/proposals/{proposal['id']}/votes",
        json={"vote": "maybe"},
        headers=auth(voters[1], "user"),
    )
    assert bad.status_code == 422
    unknown = vote(client, "00000000-0000-0000-0000-000000000000", voters[1], "yes")
    assert unknown.status_code == 404
    assert count(db, "SELECT count(*) FROM match_votes") == 1


def test_five_yes_votes_approve_at_once_and_open_the_conversation(
    client: httpx.Client, db: psycopg.Connection[Any], proposal: dict[str, Any]
) -> None:
    voters = assigned_voters(db, proposal["id"])
    for voter in voters[:4]:
        assert vote(client, proposal["id"], voter, "yes").json()["proposal"]["status"] == "voting"
    fifth = vote(client, proposal["id"], voters[4], "yes").json()
    assert fifth["proposal"]["status"] == "approved"
    open_seats = db.execute(
        "SELECT voter_address FROM voter_assignments WHERE proposal_id = %s "
        "AND voted_at IS NULL AND closed_at IS NULL",
        (proposal["id"],),
    ).fetchall()
    assert open_seats == []
    assert fifth["proposal"]["finalized_by"] == "threshold"
    assert fifth["conversation_id"] is not None
    late = vote(client, proposal["id"], voters[5], "no")
    assert late.status_code == 409 and late.json()["code"] == "voting_closed"
    a = proposal["user_a_address"]
    talks = client.get("/api/conversations", headers=auth(a, "user")).json()
    assert [t["id"] for t in talks["items"]] == [fifth["conversation_id"]]
    assert talks["items"][0]["with_address"] == proposal["user_b_address"]
    other = client.get(f"/api/conversations?address={a}", headers=auth(voters[0], "user"))
    assert other.status_code == 403


def test_five_no_votes_reject_and_release_the_pair(
    client: httpx.Client, db: psycopg.Connection[Any], proposal: dict[str, Any]
) -> None:
    for voter in assigned_voters(db, proposal["id"])[:5]:
        last = vote(client, proposal["id"], voter, "no")
    assert last.json()["proposal"]["status"] == "rejected"
    claim = db.execute(
        "SELECT 1 FROM match_pair_claims WHERE pair_hash = %s", (proposal["pair_hash"],)
    ).fetchone()
    assert claim is None
    assert count(db, "SELECT count(*) FROM conversations") == 0


def test_admin_blocks_a_proposal(
    client: httpx.Client, db: psycopg.Connection[Any], proposal: dict[str, Any]
) -> None:
    path = f"/api/admin/proposals/{proposal['id']}/block"
    body = {"reason": "reported by a member"}
    assert client.post(path, json=body, headers=auth("u", "user")).status_code == 403
    blocked = client.post(path, json=body, headers=auth("ops", "admin"))
    assert blocked.status_code == 200 and blocked.json()["status"] == "blocked"
    again = client.post(path, json=body, headers=auth("ops", "admin"))
    assert again.status_code == 409
    assert client.post(path, json={}, headers=auth("ops", "admin")).status_code == 422
    voter = assigned_voters(db, proposal["id"])[0]
    assert vote(client, proposal["id"], voter, "yes").status_code == 409


def test_health_and_the_guides_queries(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    empty = client.get("/api/system/health").json()
    assert empty["system_status"] == "UNHEALTHY" and empty["queue_depth"] == 0
    members(db, 40)
    service.generate_matches()
    service.create_proposals()
    service.generate_matches()
    body = client.get("/api/system/health").json()
    assert body["system_status"] == "HEALTHY", body
    assert body["active_voting"] == 12 and body["queue_depth"] >= 50
    assert body["metrics"]["total_voters_assigned"] == 120
    assert body["last_metrics_at"] is not None
    # The guide's verification queries run unchanged.
    assert count(db, QUEUE_DEPTH) >= 50
    assert count(db, ACTIVE_VOTING) == 12
    assert count(db, "SELECT COUNT(*) FROM voter_assignments") == 120
    assert (
        len(
            db.execute("SELECT * FROM system_metrics ORDER BY recorded_at DESC LIMIT 10").fetchall()
        )
        == 3
    )
    expire_all(db)
    db.execute("UPDATE match_proposals SET voting_expires_at = now() - interval '6 minutes'")
    stuck = client.get("/api/system/health").json()
    assert stuck["system_status"] == "UNHEALTHY" and stuck["stuck_proposals"] == 12


def test_no_matches_available_only_when_everything_is_empty(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    members(db, 1)
    response = client.get("/api/matches/next", headers=auth("0xm0000", "user"))
    assert response.status_code == 404 and response.json()["code"] == "no_matches_available"


def test_presets_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    from tally.settings import get_settings, match_bands

    monkeypatch.setenv("MATCH_PRESET", "medium")
    reset_settings()
    assert match_bands(get_settings()) == (200, 300, 50, 60)
    monkeypatch.setenv("MATCH_PRESET", "large")
    monkeypatch.setenv("MATCH_ACTIVE_TARGET", "250")
    reset_settings()
    assert match_bands(get_settings()) == (1000, 1500, 200, 250)
    reset_settings()
