"""The leaderboard routes over HTTP: caching, exports, admin and errors."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from tally.api.caching import versions
from tally.leaderboards import service
from tests.support import auth
from tests.test_leaderboards import credit

ADMIN = auth("admin@example.com", "admin")
P = "/api/v1/leaderboard"
NOW = datetime.now(UTC)
START = (NOW - timedelta(days=NOW.weekday(), weeks=1)).replace(
    hour=0, minute=0, second=0, microsecond=0
)


@pytest.fixture
def season(client: httpx.Client, db: psycopg.Connection[Any]) -> str:
    versions.clear()
    body = {
        "slug": "live",
        "name": "Live season",
        "starts_at": START.isoformat(),
        "ends_at": (START + timedelta(weeks=4)).isoformat(),
    }
    created = client.post(f"{P}/seasons", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "active" and created.json()["weeks"] == 4
    for i, points in enumerate([50, 40, 40, 10]):
        credit(db, f"0xapi{i}", points)
    return "live"


def test_season_admin_needs_the_admin_scope(client: httpx.Client) -> None:
    body = {
        "slug": "x1",
        "name": "X",
        "starts_at": "2026-01-01T00:00:00Z",
        "ends_at": "2026-02-01T00:00:00Z",
    }
    assert client.post(f"{P}/seasons", json=body).status_code == 401
    assert client.post(f"{P}/seasons", json=body, headers=auth("u", "user")).status_code == 403
    bad = client.post(
        f"{P}/seasons", json={**body, "ends_at": "2025-01-01T00:00:00Z"}, headers=ADMIN
    )
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_input"
    assert client.get(f"{P}/seasons").json() == []


def test_boards_pages_and_around_me(client: httpx.Client, season: str) -> None:
    page = client.get(f"{P}/season/{season}", params={"limit": 2}).json()
    assert [(e["wallet_address"], e["rank"], e["is_tied"]) for e in page["items"]] == [
        ("0xapi0", 1, False),
        ("0xapi1", 2, True),
    ]
    rest = client.get(
        f"{P}/season/{season}", params={"limit": 2, "cursor": page["next_cursor"]}
    ).json()
    assert [(e["wallet_address"], e["rank"]) for e in rest["items"]] == [
        ("0xapi2", 2),
        ("0xapi3", 4),
    ]
    assert rest["next_cursor"] is None
    week = (NOW - START).days // 7 + 1
    weekly = client.get(f"{P}/week/{season}/{week}").json()
    assert len(weekly["items"]) == 4 and weekly["week"] == week
    around = client.get(f"{P}/season/{season}/around/0xapi2", params={"size": 1}).json()
    assert [e["wallet_address"] for e in around["above"]] == ["0xapi1"]
    assert around["user"]["rank"] == 2
    assert [e["wallet_address"] for e in around["below"]] == ["0xapi3"]
    everyone = client.get(f"{P}/all/around/0xapi0").json()
    assert everyone["user"]["rank"] == 1 and len(everyone["below"]) == 3
    stats = client.get(f"{P}/user/0xapi3/stats", params={"season": season}).json()
    assert stats["rank"] == 4 and stats["total_points"] == 10
    seasons = client.get(f"{P}/seasons").json()
    assert seasons[0]["slug"] == season and seasons[0]["starts_at"].startswith(
        START.date().isoformat()
    )


def test_repeat_with_matching_etag_is_304_without_a_query(
    client: httpx.Client, season: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = client.get(f"{P}/season/{season}")
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert "max-age=" in first.headers["cache-control"]

    def no_database(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the database was queried")

    monkeypatch.setattr(service, "transaction", no_database)
    repeat = client.get(f"{P}/season/{season}", headers={"If-None-Match": etag})
    assert repeat.status_code == 304 and repeat.content == b""
    assert repeat.headers["etag"] == etag
    monkeypatch.undo()
    # Another query string is another representation.
    other = client.get(f"{P}/season/{season}", params={"limit": 3}, headers={"If-None-Match": etag})
    assert other.status_code == 200


def test_etag_changes_when_the_board_changes(
    client: httpx.Client, season: str, db: psycopg.Connection[Any]
) -> None:
    etag = client.get(f"{P}/season/{season}").headers["etag"]
    credit(db, "0xapi3", 100)
    versions.clear()  # as after the freshness window
    changed = client.get(f"{P}/season/{season}", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert changed.json()["items"][0]["wallet_address"] == "0xapi3"


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_export_over_http(client: httpx.Client, season: str, fmt: str) -> None:
    response = client.get(f"{P}/export/{season}", params={"format": fmt})
    assert response.status_code == 200
    assert response.headers["content-disposition"] == (
        f'attachment; filename="leaderboard-{season}.{fmt}"'
    )
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert [r["wallet_address"] for r in rows] == ["0xapi0", "0xapi1", "0xapi2", "0xapi3"]
    else:
        assert [r["rank"] for r in response.json()["items"]] == [1, 2, 2, 4]
    week = client.get(f"{P}/export/{season}/week/1", params={"format": fmt})
    assert week.headers["content-disposition"].endswith(f'-week-1.{fmt}"')


def test_errors_are_problems(client: httpx.Client, season: str) -> None:
    assert client.get(f"{P}/season/nope").json()["code"] == "not_found"
    assert client.get(f"{P}/week/{season}/40").status_code == 404
    assert client.get(f"{P}/week/{season}/0").status_code == 422
    assert client.get(f"{P}/season/{season}", params={"cursor": "junk"}).status_code == 422
    assert client.get(f"{P}/season/{season}", params={"tiebreak": "coin"}).status_code == 422
    assert client.get(f"{P}/export/{season}", params={"format": "xml"}).status_code == 422
    assert client.get(f"{P}/season/{season}/around/0xnobody").status_code == 404
    assert client.get(f"{P}/season/BAD").status_code == 422


def test_season_edit_changes_the_etag(client: httpx.Client, season: str) -> None:
    etag = client.get(f"{P}/season/{season}").headers["etag"]
    renamed = client.patch(f"{P}/seasons/{season}", json={"name": "Renamed"}, headers=ADMIN)
    assert renamed.status_code == 200 and renamed.json()["name"] == "Renamed"
    again = client.get(f"{P}/season/{season}", headers={"If-None-Match": etag})
    assert again.status_code == 200 and again.headers["etag"] != etag


@pytest.mark.parametrize(
    "body",
    [
        {"ends_at": "2027-01-01T00:00:00"},  # no time zone
        {"ends_at": "9999-12-25T00:00:00Z"},
        {"starts_at": "0001-01-01T00:00:00+05:00"},
        {"name": "bad\u0000name"},
        {"name": ""},
        {"unknown": 1},
        {"ends_at": "not a date"},
    ],
)
def test_bad_season_edits_are_422(client: httpx.Client, season: str, body: dict[str, Any]) -> None:
    response = client.patch(f"{P}/seasons/{season}", json=body, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_input"


def test_season_edit_conflicts(client: httpx.Client, season: str) -> None:
    backwards = client.patch(
        f"{P}/seasons/{season}",
        json={"ends_at": (START - timedelta(days=1)).isoformat()},
        headers=ADMIN,
    )
    assert backwards.status_code in (409, 422)
    moved = client.patch(
        f"{P}/seasons/{season}",
        json={"starts_at": (START + timedelta(days=1)).isoformat()},
        headers=ADMIN,
    )
    assert moved.status_code == 409
    assert client.patch(f"{P}/seasons/nope", json={"name": "x"}, headers=ADMIN).status_code == 404


def test_hostile_query_values_are_4xx(client: httpx.Client, season: str) -> None:
    import base64
    import json as jsonlib

    assert client.get(f"{P}/user/0xapi0/stats", params={"season": "\x00"}).status_code == 422
    nul_cursor = base64.urlsafe_b64encode(
        jsonlib.dumps(["none", 10, None, "a\x00b"]).encode()
    ).decode()
    assert client.get(f"{P}/season/{season}", params={"cursor": nul_cursor}).status_code == 422
    huge = base64.urlsafe_b64encode(jsonlib.dumps(["none", 10**30, None, "w"]).encode()).decode()
    assert client.get(f"{P}/season/{season}", params={"cursor": huge}).status_code == 422
    assert client.get(f"{P}/iso-week/2025/53").status_code == 404
    assert client.get(f"{P}/iso-week/1999/1").status_code == 422
    assert client.get("/api/me", headers=auth("a\x00b", "user")).status_code == 401


def test_export_in_aws_goes_through_s3(
    client: httpx.Client, season: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto import mock_aws

    from tally.settings import reset_settings

    monkeypatch.setenv("EXPORT_BUCKET", "tally-exports-http")
    reset_settings()
    try:
        with mock_aws():  # S3 only; the board comes from PostgreSQL
            import boto3

            s3 = boto3.client("s3", region_name="us-east-1")
            s3.create_bucket(Bucket="tally-exports-http")
            first = client.get(
                f"{P}/export/{season}", params={"format": "csv"}, follow_redirects=False
            )
            second = client.get(
                f"{P}/export/{season}", params={"format": "csv"}, follow_redirects=False
            )
            keys = [o["Key"] for o in s3.list_objects_v2(Bucket="tally-exports-http")["Contents"]]
    finally:
        monkeypatch.delenv("EXPORT_BUCKET")
        reset_settings()
    assert first.status_code == 303 and second.status_code == 303
    assert "tally-exports-http" in first.headers["location"]
    assert len(keys) == 1 and keys[0].endswith(f"leaderboard-{season}.csv")
