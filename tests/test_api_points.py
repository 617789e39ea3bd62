"""The points routes over real HTTP: auth, validation, idempotency, ranks and pagination."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import psycopg
import pytest

from tally.points import service
from tests.support import auth, verification_body

SERVICE = auth("audio-verifier", "service")
ADMIN = auth("admin@example.com", "admin")
WALLET = "0xfeed000000000000000000000000000000000001"


def post_verification(client: httpx.Client, **kwargs: Any) -> httpx.Response:
    return client.post("/api/verifications", json=verification_body(**kwargs), headers=SERVICE)


def set_points(db: psycopg.Connection[Any], points: dict[str, int]) -> None:
    """Users with given totals, written through the ledger so totals stay derivable."""
    for wallet, total in points.items():
        db.execute(
            "INSERT INTO users (wallet_address, total_points, total_submissions, tier) "
            "VALUES (%s, %s, 1, 'Contributor')",
            (wallet, total),
        )
        db.execute(
            "INSERT INTO points_ledger (wallet_address, points, source_kind, source_id, "
            "rule_version) VALUES (%s, %s, 'test', %s, 'v1')",
            (wallet, total, wallet),
        )


def test_verification_to_points_to_rank(client: httpx.Client) -> None:
    body = verification_body(WALLET, rarity=85, quality=0.8, grade="A", verified=True, samples=120)
    created = client.post("/api/verifications", json=body, headers=SERVICE)
    assert created.status_code == 201, created.text
    assert created.json()["points_status"] is None
    # The same call again is a no-op that answers 200.
    again = client.post("/api/verifications", json=body, headers=SERVICE)
    assert again.status_code == 200
    service.award_pending()

    session = client.get(f"/api/verifications/{body['sessionId']}", headers=SERVICE).json()
    assert session["points_awarded"] == 2785
    assert session["points_breakdown"]["quality_multiplier"] == 1.4

    user = client.get(f"/api/users/{WALLET}")
    assert user.status_code == 200
    profile = user.json()
    assert (profile["total_points"], profile["tier"], profile["rank"]) == (2785, "Bronze", 1)
    assert profile["recent_submissions"][0]["points_earned"] == 2785

    board = client.get("/api/leaderboard").json()
    assert board["items"][0] == {
        "rank": 1,
        "is_tied": False,
        "wallet_address": WALLET,
        "total_points": 2785,
        "tier": "Bronze",
        "total_submissions": 1,
    }
    achievements = client.get(f"/api/users/{WALLET}/achievements").json()
    assert "first_blood" in {a["key"] for a in achievements}

    me = client.get("/api/me", headers=auth(WALLET, "user"))
    assert me.status_code == 200 and me.json()["wallet_address"] == WALLET


def test_same_session_id_with_other_content(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    sid = str(uuid.uuid4())
    assert post_verification(client, wallet=WALLET, session_id=sid).status_code == 201
    # Before anything is paid, the verifier may send corrected results for the session.
    corrected = post_verification(client, wallet=WALLET, session_id=sid, rarity=99)
    assert corrected.status_code == 200
    row = db.execute("SELECT results FROM verification_sessions WHERE id = %s", (sid,)).fetchone()
    assert row is not None and row["results"]["rarityScore"] == 99
    service.award_pending()
    # Once points are settled, other content under the same id is a conflict.
    clash = post_verification(client, wallet=WALLET, session_id=sid, rarity=10)
    assert clash.status_code == 409
    assert clash.headers["content-type"].startswith("application/problem+json")
    assert clash.json()["code"] == "conflict"
    assert db.execute("SELECT count(*) AS n FROM points_ledger").fetchone() == {"n": 1}


def test_identical_retry_with_huge_numbers_is_not_a_conflict(client: httpx.Client) -> None:
    body = verification_body(WALLET)
    body["results"]["extraScore"] = 1e300
    assert client.post("/api/verifications", json=body, headers=SERVICE).status_code == 201
    assert client.post("/api/verifications", json=body, headers=SERVICE).status_code == 200


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b["results"].update(rarityScore=101),
        lambda b: b["results"].update(qualityScore=-0.1),
        lambda b: b["results"].update(specificityGrade="Z"),
        lambda b: b["metadata"].update(walletAddress="bad wallet!"),
        lambda b: b["metadata"].update(sampleCount=-1),
        lambda b: b.update(sessionId="not-a-uuid"),
        lambda b: b.update(unexpected=True),
        lambda b: b["results"].update(verifiedClaims=["x" * 501]),
        lambda b: b["results"].update(verifiedClaims=True) or b["results"].pop("approved"),
        lambda b: b["metadata"].update(title="nul\u0000byte"),
        lambda b: b["results"].update(subject="\u0000"),
        lambda b: b["results"].update(extra={"deep": "a\u0000b"}),
        lambda b: b["metadata"].update(**{f"k{i}": i for i in range(60)}),
        lambda b: b["results"].update(nested={"a": {"b": {"c": {"d": {"e": {"f": {}}}}}}}),
    ],
)
def test_invalid_verification_is_a_422_problem_and_changes_nothing(
    client: httpx.Client, db: psycopg.Connection[Any], mutate: Any
) -> None:
    body = verification_body(WALLET)
    mutate(body)
    response = client.post("/api/verifications", json=body, headers=SERVICE)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert problem["code"] == "invalid_input" and problem["status"] == 422
    assert problem["errors"] and "loc" in problem["errors"][0]
    assert db.execute("SELECT count(*) AS n FROM verification_sessions").fetchone() == {"n": 0}


def test_malformed_json_is_a_422(client: httpx.Client) -> None:
    response = client.post(
        "/api/verifications",
        content=b"{not json",
        headers={**SERVICE, "content-type": "application/json"},
    )
    assert response.status_code == 422


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Basic abc"}, 401),
        ({"Authorization": "Bearer not-a-jwt"}, 401),
        (auth("x", "service", ttl_s=-10), 401),
        (auth("x", "service", aud="someone-else"), 401),
        (auth("x", "service", iss="https://evil.example.com"), 401),
        (auth("x", "service", key="wrong-key-" + "y" * 40), 401),
        (auth("x", "user"), 403),
        (auth("x", "admin"), 403),
    ],
)
def test_service_route_refuses_other_callers(
    client: httpx.Client, db: psycopg.Connection[Any], headers: dict[str, str], status: int
) -> None:
    response = client.post("/api/verifications", json=verification_body(WALLET), headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["code"] in ("unauthorized", "forbidden")
    assert db.execute("SELECT count(*) AS n FROM verification_sessions").fetchone() == {"n": 0}


def test_admin_and_user_routes_refuse_other_scopes(client: httpx.Client) -> None:
    assert client.get("/api/admin/flags", headers=SERVICE).status_code == 403
    assert client.get("/api/admin/flags", headers=auth("u", "user")).status_code == 403
    assert client.get("/api/admin/flags").status_code == 401
    assert client.get("/api/me").status_code == 401
    assert client.get("/api/me", headers=SERVICE).status_code == 403


def test_competition_ranks_and_cursor_pages(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    set_points(
        db,
        {
            f"0x{w}": p
            for w, p in {
                "a": 500,
                "b": 400,
                "c": 400,
                "d": 400,
                "e": 300,
                "f": 300,
                "g": 100,
            }.items()
        },
    )
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/leaderboard", params=params).json()
        seen.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [(e["wallet_address"][2:], e["rank"], e["is_tied"]) for e in seen] == [
        ("a", 1, False),
        ("b", 2, True),
        ("c", 2, True),
        ("d", 2, True),
        ("e", 5, True),
        ("f", 5, True),
        ("g", 7, False),
    ]
    assert client.get("/api/users/0xd").json()["rank"] == 2
    assert client.get("/api/users/0xg").json()["rank"] == 7


@pytest.mark.parametrize("cursor", ["!!!", "eyJhIjoxfQ", "W10", "WyJ4IiwxXQ"])
def test_bad_cursor_is_a_422(client: httpx.Client, cursor: str) -> None:
    response = client.get("/api/leaderboard", params={"cursor": cursor})
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_input"


def test_limits_are_validated(client: httpx.Client) -> None:
    assert client.get("/api/leaderboard", params={"limit": 0}).status_code == 422
    assert client.get("/api/leaderboard", params={"limit": "ten"}).status_code == 422


def test_unknown_user_and_route(client: httpx.Client) -> None:
    missing = client.get("/api/users/0xnobody")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert client.get("/api/users/0xnobody/achievements").status_code == 404
    assert client.get("/api/nothing-here").status_code == 404
    assert client.get(f"/api/verifications/{uuid.uuid4()}", headers=SERVICE).status_code == 404


def test_admin_reviews_a_held_award_over_http(client: httpx.Client) -> None:
    post_verification(client, wallet=WALLET, content_hash="dup")
    post_verification(client, wallet="0xsecond001", content_hash="dup")
    service.award_pending()
    flags = client.get("/api/admin/flags", headers=ADMIN).json()
    assert [f["reason"] for f in flags] == ["duplicate_content"]
    review = client.post(
        f"/api/admin/flags/{flags[0]['id']}/review", json={"decision": "clear"}, headers=ADMIN
    )
    assert review.status_code == 200
    assert review.json()["status"] == "cleared"
    assert review.json()["reviewed_by"] == "admin@example.com"
    bad = client.post(
        f"/api/admin/flags/{flags[0]['id']}/review", json={"decision": "maybe"}, headers=ADMIN
    )
    assert bad.status_code == 422
    again = client.post(
        f"/api/admin/flags/{flags[0]['id']}/review", json={"decision": "clear"}, headers=ADMIN
    )
    assert again.status_code == 409
    assert (
        client.post(
            "/api/admin/flags/999/review", json={"decision": "clear"}, headers=ADMIN
        ).status_code
        == 404
    )
    assert service.award_pending().awarded == 1
    assert client.get("/api/users/0xsecond001").json()["total_points"] > 0
