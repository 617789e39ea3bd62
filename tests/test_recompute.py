"""Recompute under a new rule version: dry-run diff, adjustments as ledger entries, once."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tally.errors import Conflict
from tally.points import service
from tally.points.models import VerificationIn
from tally.points.recompute import recompute
from tally.points.tiers import tier_for
from tally.settings import reset_settings
from tests.support import assert_ledger_matches_totals, verification_body


@pytest.fixture
def awarded(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    for i, quality in enumerate([0.35, 0.5, 0.9, 0.95]):
        body = verification_body(f"0xrc{i % 2}", quality=quality, rarity=80, subject=f"s{i}")
        service.record_verification(VerificationIn.model_validate(body))
    assert service.award_pending().awarded == 4
    return db


def rules(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_settings()


def test_same_rules_change_nothing(awarded: psycopg.Connection[Any]) -> None:
    report = recompute(apply=True)
    assert (report.sessions_checked, report.sessions_changed) == (4, 0)
    assert report.ledger_entries_written == 0 and not report.applied


def test_new_rule_version_dry_run_then_apply(
    awarded: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = awarded
    before = db.execute("SELECT count(*) AS n, sum(points) AS p FROM points_ledger").fetchone()
    rules(monkeypatch, POINTS_RULE_VERSION="v2", POINTS_MIN_QUALITY_SCORE="0.6")
    dry = recompute()
    assert (dry.sessions_changed, dry.applied) == (2, False)
    assert dry.points_delta < 0 and dry.wallets_changed == 2
    assert (
        db.execute("SELECT count(*) AS n, sum(points) AS p FROM points_ledger").fetchone() == before
    )

    applied = recompute(apply=True)
    assert applied.applied and applied.ledger_entries_written == 2
    assert applied.points_delta == dry.points_delta
    rows = db.execute(
        "SELECT source_id, rule_version, metadata FROM points_ledger "
        "WHERE source_kind = 'rule_adjustment'"
    ).fetchall()
    assert {r["rule_version"] for r in rows} == {"v2"}
    assert all(r["metadata"]["new"] == 0 for r in rows)  # gated under the new minimum
    assert_ledger_matches_totals(db)
    for user in db.execute("SELECT total_points, tier FROM users"):
        assert user["tier"] == tier_for(user["total_points"])
    # The original awards are untouched; a second apply finds nothing left to do.
    assert db.execute(
        "SELECT count(*) AS n FROM points_ledger WHERE source_kind = 'dataset_submission'"
    ).fetchone() == {"n": 4}
    again = recompute(apply=True)
    assert again.sessions_changed == 0 and again.ledger_entries_written == 0


def test_changed_rules_without_a_new_version_are_refused(
    awarded: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    rules(monkeypatch, POINTS_MIN_QUALITY_SCORE="0.6")  # still v1
    assert recompute().sessions_changed == 2  # the dry run still shows the diff
    with pytest.raises(Conflict):
        recompute(apply=True)
    count = awarded.execute(
        "SELECT count(*) AS n FROM points_ledger WHERE source_kind = 'rule_adjustment'"
    ).fetchone()
    assert count == {"n": 0}


def test_recompute_route_is_admin_only(client: Any) -> None:
    from tests.support import auth

    assert client.post("/api/admin/points/recompute", json={}).status_code == 401
    assert (
        client.post(
            "/api/admin/points/recompute", json={}, headers=auth("s", "service")
        ).status_code
        == 403
    )
    dry = client.post("/api/admin/points/recompute", json={}, headers=auth("a", "admin"))
    assert dry.status_code == 200 and dry.json()["applied"] is False
    assert (
        client.post(
            "/api/admin/points/recompute", json={"apply": "yes please"}, headers=auth("a", "admin")
        ).status_code
        == 422
    )
