"""Every sample event in events/ invokes its real handler, as `tally invoke` does."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tally.community import etl
from tally.community import service as community
from tally.community.models import ProfileIn, TapBatchIn
from tally.leaderboards import service as leaderboards
from tally.leaderboards.models import SeasonIn
from tally.local import template as template_mod
from tally.local.invoke import invoke
from tally.local.seed import seed_pou
from tally.matchmaking import service as matchmaking
from tally.points import service
from tally.points.models import VerificationIn
from tally.settings import reset_settings
from tests.support import EVENTS, load_event

TEMPLATE = template_mod.load()
EVENT_FILES = sorted(p.name for p in EVENTS.glob("*.json"))


def function_for(event_name: str) -> str:
    matches = [
        fn
        for fn in TEMPLATE.functions.values()
        if event_name.startswith(fn.code_uri.name + "_") or event_name == fn.code_uri.name + ".json"
    ]
    assert len(matches) == 1, f"{event_name} belongs to no single function"
    return matches[0].logical_id


@pytest.fixture
def apigw_auth(monkeypatch: pytest.MonkeyPatch, db: Any) -> Iterator[None]:
    """Invoked like Lambda behind API Gateway: the authorizer's claims are in the event."""
    monkeypatch.setenv("TALLY_AUTH_MODE", "apigw")
    # The sample taps carry fixed dates; let them stay acceptable for years.
    monkeypatch.setenv("TAP_MAX_AGE_DAYS", "3650")
    reset_settings()
    yield
    reset_settings()


@pytest.fixture
def cfn_endpoint() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback stand-in for CloudFormation's pre-signed response URL."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/response", received
    server.shutdown()


def seed_from_events(event_name: str = "") -> None:
    """The wallet, session and season the sample events refer to, as in production."""
    post = load_event("verification_api_post_verification.json")
    service.record_verification(VerificationIn.model_validate_json(post["body"]))
    service.award_pending()
    season_event = "leaderboard_api_post_season.json"
    if event_name != season_event:
        body = json.loads(load_event(season_event)["body"])
        leaderboards.create_season(SeasonIn.model_validate(body))
    taps = TapBatchIn.model_validate_json(load_event("community_api_post_taps.json")["body"])
    community.record_taps(taps)
    etl.run_nightly(horizon=datetime.now(UTC) + timedelta(seconds=1))
    # Members to match and vote: the sample events' voter and a few others.
    for i in range(1, 16):
        address = f"0x5eed{i:036x}"
        community.put_profile(address, ProfileIn(attributes={"interests": ["birdsong"]}))
    matchmaking.generate_matches()
    matchmaking.create_proposals()
    seed_sample_proposal()
    seed_pou()


SAMPLE_PROPOSAL = "3c6f2a9e-8d41-4b7a-9f0e-5a1d2c3b4e5f"  # the id in the vote and block events


def seed_sample_proposal() -> None:
    """A proposal in voting with the sample events' voter assigned, as the creator leaves it."""
    from tally.db.connection import transaction

    with transaction() as conn:
        conn.execute(
            "INSERT INTO match_pair_claims (pair_hash) VALUES ('sample-pair') "
            "ON CONFLICT DO NOTHING"
        )
        conn.execute(
            "INSERT INTO match_proposals (id, user_a_address, user_b_address, pair_hash, "
            "compatibility_score, status, voters_target, voting_started_at, voting_expires_at) "
            "VALUES (%s, '0xsample-a', '0xsample-b', 'sample-pair', 0.8, 'voting', 10, now(), "
            "now() + interval '10 minutes')",
            (SAMPLE_PROPOSAL,),
        )
        conn.execute(
            "INSERT INTO voter_assignments (proposal_id, voter_address) VALUES (%s, %s)",
            (SAMPLE_PROPOSAL, "0x5eed000000000000000000000000000000000001"),
        )


def wait_for_backfills(conn: psycopg.Connection[Any], timeout_s: float = 60) -> None:
    """A backfill started by the admin route runs beside the request (a thread locally)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT count(*) AS n FROM community_backfills WHERE status IN ('queued', 'running')"
        ).fetchone()
        if row and row["n"] == 0:
            return
        time.sleep(0.05)
    raise AssertionError("backfill did not finish")


@pytest.mark.parametrize("event_name", EVENT_FILES)
def test_event_invokes_its_function(
    event_name: str,
    apigw_auth: None,
    db: psycopg.Connection[Any],
    cfn_endpoint: tuple[str, list[dict[str, Any]]],
) -> None:
    seed_from_events(event_name)
    event = load_event(event_name)
    url, received = cfn_endpoint
    if "ResponseURL" in event:
        event["ResponseURL"] = url
    result = invoke(TEMPLATE, function_for(event_name), event)
    if "statusCode" in result:
        assert result["statusCode"] < 400, result.get("body")
        if result["headers"].get("content-type", "").startswith("text/csv"):
            assert result["body"].startswith("rank,is_tied,wallet_address")
        else:
            json.loads(result["body"])
    if "ResponseURL" in event:
        assert received and received[0]["Status"] == "SUCCESS", received
    wait_for_backfills(db)
    done = db.execute("SELECT count(*) AS n FROM community_backfills WHERE status <> 'done'")
    assert done.fetchone() == {"n": 0}


def test_every_function_has_a_sample_event() -> None:
    covered = {function_for(name) for name in EVENT_FILES}
    assert covered == set(TEMPLATE.functions)


def test_award_handler_emits_business_metrics(
    apigw_auth: None, capsys: pytest.CaptureFixture[str]
) -> None:
    post = load_event("verification_api_post_verification.json")
    service.record_verification(VerificationIn.model_validate_json(post["body"]))
    result = invoke(TEMPLATE, "AwardPointsFunction", load_event("award_points.json"))
    assert result["awarded"] == 1
    emf = [
        json.loads(line)
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("{") and '"_aws"' in line
    ]
    names = {
        m["Name"] for blob in emf for d in blob["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]
    }
    assert {"PointsAwarded", "AwardFailures"} <= names
    awarded = next(blob for blob in emf if "PointsAwarded" in blob)
    assert awarded["PointsAwarded"] == 1.0 or awarded["PointsAwarded"] == [1.0]


def test_award_handler_rejects_bad_schedule_input(apigw_auth: None) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        invoke(TEMPLATE, "AwardPointsFunction", {"batch_size": -1})
    with pytest.raises(ValidationError):
        invoke(TEMPLATE, "AwardPointsFunction", {"unknown": 1})


def test_api_handler_refuses_events_without_verified_claims(apigw_auth: None) -> None:
    event = load_event("verification_api_post_verification.json")
    del event["requestContext"]["authorizer"]
    result = invoke(TEMPLATE, "VerificationApiFunction", event)
    assert result["statusCode"] == 401
    event = load_event("verification_api_post_verification.json")
    event["requestContext"]["authorizer"]["jwt"]["claims"]["scope"] = "tally/user"
    assert invoke(TEMPLATE, "VerificationApiFunction", event)["statusCode"] == 403


def test_migration_failure_is_reported_to_cloudformation(
    apigw_auth: None,
    cfn_endpoint: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tally.db.deploy as deploy

    def broken() -> list[str]:
        raise psycopg.OperationalError("could not connect")

    monkeypatch.setattr(deploy, "run_migrations", broken)
    url, received = cfn_endpoint
    event = load_event("migrate_custom_resource_create.json") | {"ResponseURL": url}
    result = invoke(TEMPLATE, "MigrateFunction", event)
    assert result["Status"] == "FAILED"
    assert received[0]["Status"] == "FAILED"
    assert "could not connect" in received[0]["Reason"]
    assert received[0]["PhysicalResourceId"] == deploy.PHYSICAL_ID


def test_stack_delete_does_not_migrate(
    apigw_auth: None,
    cfn_endpoint: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tally.db.deploy as deploy

    calls: list[int] = []
    monkeypatch.setattr(deploy, "run_migrations", lambda: calls.append(1) or [])
    url, received = cfn_endpoint
    event = load_event("migrate_custom_resource_create.json") | {
        "ResponseURL": url,
        "RequestType": "Delete",
        "PhysicalResourceId": deploy.PHYSICAL_ID,
    }
    invoke(TEMPLATE, "MigrateFunction", event)
    assert calls == [] and received[0]["Status"] == "SUCCESS"


def test_events_are_valid_json_objects() -> None:
    for path in Path(EVENTS).glob("*.json"):
        assert isinstance(json.loads(path.read_text()), dict), path
