"""The community routes over HTTP: tap batches, profiles, the four endpoints and backfills."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest

from tally.community import etl
from tests.support import auth

SERVICE = auth("tap-relay", "service")
BACKEND = auth("community-page", "user", "service")  # a backend acting for users
ADMIN = auth("ops@example.com", "admin")
NOW = datetime.now(UTC)


def me(user: str) -> dict[str, str]:
    return auth(user, "user")


def tap(cid: str, id1: str, id2: str, at: datetime) -> dict[str, str]:
    return {"client_tap_id": cid, "id1": id1, "id2": id2, "time": at.isoformat()}


def post(client: httpx.Client, taps: list[dict[str, str]]) -> httpx.Response:
    return client.post("/api/community/taps", json={"taps": taps}, headers=SERVICE)


def count_taps(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) AS n FROM taps").fetchone()
    return int(row["n"]) if row else 0


def run_etl() -> None:
    etl.run_nightly(horizon=datetime.now(UTC) + timedelta(seconds=1))


# -- taps ------------------------------------------------------------------------------------------


def test_a_batch_is_stored_once(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    batch = [tap(f"c{i}", "alice", f"friend{i}", NOW - timedelta(minutes=i)) for i in range(3)]
    first = post(client, batch)
    assert first.status_code == 201 and first.json() == {"accepted": 3, "duplicates": 0}
    again = post(client, batch)
    assert again.status_code == 200 and again.json() == {"accepted": 0, "duplicates": 3}
    assert count_taps(db) == 3


@pytest.mark.parametrize(
    ("taps", "code"),
    [
        ([tap("x", "alice", "alice", NOW)], "invalid_input"),
        ([tap("x", "alice", "bob", NOW + timedelta(hours=1))], "tap_time_out_of_range"),
        ([tap("x", "alice", "bob", NOW - timedelta(days=400))], "tap_time_out_of_range"),
        (
            [{"client_tap_id": "x", "id1": "alice", "id2": "bob", "time": "2026-11-20T10:00:00"}],
            "invalid_input",
        ),
        (
            [{"client_tap_id": "x", "id1": "al ice", "id2": "bob", "time": NOW.isoformat()}],
            "invalid_input",
        ),
        ([], "invalid_input"),
        ([tap(f"c{i}", "alice", "bob", NOW) for i in range(1001)], "batch_too_large"),
    ],
)
def test_bad_batches_are_refused_whole(
    client: httpx.Client, db: psycopg.Connection[Any], taps: list[dict[str, str]], code: str
) -> None:
    good = tap("good", "carol", "dave", NOW)
    response = post(client, [good, *taps] if taps else [])
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code
    assert count_taps(db) == 0


def test_a_client_id_reused_for_another_tap_is_a_conflict(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    assert post(client, [tap("c1", "alice", "bob", NOW)]).status_code == 201
    clash = post(client, [tap("c2", "alice", "carol", NOW), tap("c1", "alice", "dave", NOW)])
    assert clash.status_code == 409
    assert clash.json()["code"] == "client_tap_id_reused"
    assert clash.json()["client_tap_ids"] == ["c1"]
    assert count_taps(db) == 1  # c2 was not stored either
    inside = post(client, [tap("c3", "alice", "bob", NOW), tap("c3", "alice", "eve", NOW)])
    assert inside.status_code == 409 and count_taps(db) == 1


def test_only_services_post_taps(client: httpx.Client) -> None:
    body = {"taps": [tap("c1", "alice", "bob", NOW)]}
    assert client.post("/api/community/taps", json=body).status_code == 401
    assert client.post("/api/community/taps", json=body, headers=me("alice")).status_code == 403


# -- profiles ----------------------------------------------------------------------------------


def test_profiles(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    """Users edit their own profile; a backend acting for users holds both scopes."""
    body = {
        "display_name": "Alice",
        "location": "Brooklyn, New York, USA",
        "timezone": "America/New_York",
        "attributes": {"likes": ["birds"]},
    }
    put = client.put("/api/profiles/alice", json=body, headers=me("alice"))
    assert put.status_code == 200, put.text
    got = client.get("/api/profiles/alice", headers=me("alice")).json()
    assert got["timezone"] == "America/New_York" and got["attributes"] == {"likes": ["birds"]}
    assert client.put("/api/profiles/bob", json=body, headers=BACKEND).status_code == 200
    other = client.put("/api/profiles/bob", json=body, headers=me("alice"))
    assert other.status_code == 403
    assert client.put("/api/profiles/bob", json=body, headers=SERVICE).status_code == 403
    for bad in (
        {"timezone": "Mars/Olympus"},
        {"timezone": "localtime"},
        {"timezone": "posix/Europe/Berlin"},
        {"display_name": "A\u0000"},
        {"extra": 1},
        {"attributes": {"x": "y" * 3000}},
    ):
        response = client.put("/api/profiles/alice", json=body | bad, headers=me("alice"))
        assert response.status_code == 422, (bad, response.text)
    assert client.get("/api/profiles/alice", headers=me("alice")).json() == got
    missing = client.get("/api/profiles/nobody", headers=BACKEND)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_the_database_refuses_a_zone_it_does_not_know(db: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        db.execute("INSERT INTO profiles (address, timezone) VALUES ('x', 'Mars/Olympus')")


def test_a_client_id_reused_by_a_concurrent_batch_is_a_conflict(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    """The second batch waits for the first to commit, then must see the clash."""
    import threading

    from psycopg.rows import dict_row

    from tally.community.repository import TapRepository

    first = psycopg.connect(database_url, row_factory=dict_row)
    second = psycopg.connect(database_url, row_factory=dict_row)
    TapRepository(first).insert_taps([("c1", "alice", "bob", NOW)])
    out: dict[str, Any] = {}

    def other() -> None:
        out["result"] = TapRepository(second).insert_taps([("c1", "alice", "carol", NOW)])
        second.rollback()

    thread = threading.Thread(target=other)
    thread.start()
    time.sleep(0.3)
    first.commit()
    thread.join(10)
    first.close()
    second.close()
    assert out["result"] == (0, ["c1"])


# -- the four endpoints ------------------------------------------------------------------------


def test_an_empty_community_gets_real_empty_answers(client: httpx.Client) -> None:
    headers = me("alice")
    weekly = client.get("/api/community/weekly", headers=headers)
    assert weekly.status_code == 200, weekly.text
    body = weekly.json()
    assert body["me"]["taps"] == 0 and body["leaderboard"] == [] and body["people_to_meet"] == []
    assert body["meta"]["tz_used"] == "UTC" and body["meta"]["as_of"] is None
    quests = client.get("/api/community/quests", headers=headers).json()
    assert [(q["slug"], q["progress"], q["target"], q["unit"]) for q in quests["quests"]] == [
        ("weekly-25-taps", 0, 25, "taps")
    ]
    radar = client.get("/api/community/radar?hours=6", headers=headers).json()
    assert len(radar["buckets"]) == 6 and all(b["taps"] == 0 for b in radar["buckets"])
    assert radar["top_participants"] == []
    health = client.get("/api/community/health", headers=headers).json()
    assert health["connections"] == []


@pytest.fixture
def community(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    """alice and bob are friends with carol and dave; erin knows carol and dave too."""
    for name, where in [
        ("alice", "Brooklyn, NY, USA"),
        ("erin", "Brooklyn, NY, USA"),
        ("frank", "Austin, TX, USA"),
    ]:
        body = {"display_name": name.title(), "location": where, "timezone": "America/New_York"}
        assert client.put(f"/api/profiles/{name}", json=body, headers=BACKEND).is_success
    pairs = [
        ("alice", "carol"),
        ("alice", "dave"),
        ("alice", "carol"),
        ("erin", "carol"),
        ("erin", "dave"),
        ("frank", "carol"),
        ("frank", "dave"),
        ("bob", "carol"),
    ]
    start = NOW - timedelta(hours=3)
    taps = [tap(f"c{i}", a, b, start + timedelta(minutes=i)) for i, (a, b) in enumerate(pairs)]
    assert post(client, taps).status_code == 201
    run_etl()


def test_weekly(client: httpx.Client, community: None) -> None:
    response = client.get("/api/community/weekly?debug=1", headers=me("alice"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["meta"]["tz_used"] == "America/New_York"  # alice's own zone
    assert body["me"]["taps"] == 3 and body["me"]["distinct_counterparts"] == 2
    assert body["me"]["current_streak"] >= 1
    local = NOW.astimezone(ZoneInfo("America/New_York")).date()
    assert body["me"]["week_start"] == (local - timedelta(days=local.weekday())).isoformat()
    # erin and frank share carol and dave with alice; erin also lives in Brooklyn. bob shares
    # one mutual only.
    people = body["people_to_meet"]
    assert [p["user_id"] for p in people] == ["erin", "frank"]
    assert people[0]["mutuals"] == 2 and people[0]["proximity"] == 1.0
    assert people[1]["proximity"] == 0.5
    assert people[0]["score"] == pytest.approx(0.7 + 0.2 * people[0]["recency"] + 0.1, abs=1e-3)
    assert body["leaderboard"] and body["leaderboard"][0]["rank"] == 1
    debug = body["meta"]["debug"]
    assert debug["candidates_considered"] == 2 and debug["weights"]["mutuals"] == 0.7
    assert "week_start" in debug and "week_end" in debug
    # tz changes how times are shown, never which week: weeks are kept in alice's own zone.
    for tz in ("Europe/Berlin", "Pacific/Kiritimati", "Pacific/Pago_Pago"):
        other = client.get(f"/api/community/weekly?tz={tz}", headers=me("alice")).json()
        assert other["meta"]["tz_used"] == tz and other["meta"]["debug"] is None
        assert other["me"] == body["me"] and other["leaderboard"] == body["leaderboard"]


def test_quests_radar_and_health(client: httpx.Client, community: None) -> None:
    quests = client.get("/api/community/quests?debug=1", headers=me("alice")).json()
    assert quests["quests"][0]["progress"] == 3 and quests["quests"][0]["completed"] is False
    assert quests["meta"]["debug"]["user_zone"] == "America/New_York"

    radar = client.get("/api/community/radar?hours=6&tz=Asia/Kolkata&debug=1", headers=me("x"))
    assert radar.status_code == 200, radar.text
    body = radar.json()
    assert body["meta"]["tz_used"] == "Asia/Kolkata"
    assert sum(b["taps"] for b in body["buckets"]) == 8 == body["meta"]["debug"]["taps"]
    assert all(b["start"].endswith("+05:30") for b in body["buckets"])
    assert body["buckets"][-1]["start"] <= NOW.astimezone(ZoneInfo("Asia/Kolkata")).isoformat()
    assert body["top_participants"][0] == {"user_id": "carol", "display_name": None, "taps": 5}

    health = client.get("/api/community/health?debug=1", headers=me("alice")).json()
    connections = health["connections"]
    assert [c["user_id"] for c in connections] == ["carol", "dave"]
    assert connections[0]["taps_90d"] == 2 and connections[0]["health"] == "healthy"
    assert connections[1]["health"] == "fading"
    assert connections[0]["strength"] > connections[1]["strength"]
    assert health["meta"]["debug"]["connections_considered"] == 2


def test_reading_someone_else_needs_a_service_or_admin(
    client: httpx.Client, community: None
) -> None:
    denied = client.get("/api/community/health?user_id=carol", headers=me("alice"))
    assert denied.status_code == 403 and denied.json()["code"] == "forbidden"
    allowed = client.get("/api/community/health?user_id=carol", headers=BACKEND)
    assert allowed.status_code == 200 and len(allowed.json()["connections"]) == 4
    assert client.get("/api/community/weekly").status_code == 401


@pytest.mark.parametrize(
    "query",
    [
        "tz=Mars/Olympus",
        "tz=localtime",
        "tz=Factory",
        "tz=" + "x" * 65,
        "hours=0",
        "hours=169",
        "debug=maybe",
        "top=0",
    ],
)
def test_bad_queries_are_422(client: httpx.Client, query: str) -> None:
    response = client.get(f"/api/community/radar?{query}", headers=me("alice"))
    assert response.status_code == 422, response.text
    assert response.json()["code"] in {"invalid_tz", "invalid_input"}


# -- backfill --------------------------------------------------------------------------------


def test_admin_backfill_rebuilds_a_range(
    client: httpx.Client, db: psycopg.Connection[Any], community: None
) -> None:
    expected = db.execute("SELECT * FROM user_day_activity ORDER BY user_id, day").fetchall()
    db.execute("TRUNCATE user_day_activity")
    day = NOW.date()
    body = {"from_day": (day - timedelta(days=2)).isoformat(), "to_day": day.isoformat()}
    assert (
        client.post("/api/admin/community/backfill", json=body, headers=SERVICE).status_code == 403
    )
    started = client.post("/api/admin/community/backfill", json=body, headers=ADMIN)
    assert started.status_code == 202, started.text
    backfill_id = started.json()["id"]
    deadline = time.monotonic() + 60
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = client.get(f"/api/admin/community/backfill/{backfill_id}", headers=ADMIN).json()
        if state["status"] in ("done", "failed"):
            break
        time.sleep(0.05)
    assert state["status"] == "done" and state["requested_by"] == "ops@example.com"
    rebuilt = db.execute("SELECT * FROM user_day_activity ORDER BY user_id, day").fetchall()
    strip = [{k: v for k, v in r.items() if k != "last_updated_at"} for r in rebuilt]
    assert strip == [{k: v for k, v in r.items() if k != "last_updated_at"} for r in expected]


@pytest.mark.parametrize(
    "body",
    [
        {"from_day": "2026-11-10", "to_day": "2026-11-01"},
        {"from_day": "1900-01-01", "to_day": "2026-11-01"},
        {"from_day": "2026-11-01"},
        {"from_day": "2026-11-01", "to_day": "2026-11-02", "extra": 1},
    ],
)
def test_bad_backfills_are_422(
    client: httpx.Client, db: psycopg.Connection[Any], body: dict[str, Any]
) -> None:
    response = client.post("/api/admin/community/backfill", json=body, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert db.execute("SELECT count(*) AS n FROM community_backfills").fetchone() == {"n": 0}
    unknown = client.get(
        "/api/admin/community/backfill/00000000-0000-0000-0000-000000000000", headers=ADMIN
    )
    assert unknown.status_code == 404


def test_a_backfill_that_cannot_be_handed_over_waits_for_the_nightly_run(
    client: httpx.Client, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tally.community import routes

    def unreachable(backfill_id: Any) -> str:
        raise ConnectionError("lambda endpoint unreachable")

    monkeypatch.setattr(routes, "start_backfill", unreachable)
    body = {"from_day": "2026-11-01", "to_day": "2026-11-02"}
    response = client.post("/api/admin/community/backfill", json=body, headers=ADMIN)
    assert response.status_code == 202 and response.json()["status"] == "queued"
    started: list[Any] = []
    monkeypatch.setattr(etl, "start_backfill", started.append)
    run_etl()
    assert [str(b) for b in started] == [response.json()["id"]]


def test_one_radar_window_serves_every_caller_for_a_while(
    client: httpx.Client, community: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The radar is the same for everyone: an environment computes a window once per
    COMMUNITY_RADAR_CACHE_SECONDS, whoever asks and in whatever zone."""
    from tally.settings import reset_settings

    monkeypatch.setenv("COMMUNITY_RADAR_CACHE_SECONDS", "60")
    reset_settings()

    def total(user: str, tz: str = "UTC") -> int:
        body = client.get(f"/api/community/radar?hours=6&tz={tz}", headers=me(user)).json()
        return sum(b["taps"] for b in body["buckets"])

    assert total("alice") == 8
    late = tap("late-1", "erin", "frank", NOW - timedelta(minutes=5))
    assert post(client, [late]).status_code == 201
    assert total("bob") == 8  # the window computed for alice, reused
    assert total("bob", "Europe/Berlin") == 8  # same UTC hours, same window
    monkeypatch.setenv("COMMUNITY_RADAR_CACHE_SECONDS", "0")
    reset_settings()
    assert total("bob") == 9  # computed again, with the new tap
