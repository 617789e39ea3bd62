"""The reconciliation job: silent when the ledger and everything derived from it agree, loud
(and precise) when they do not."""

from __future__ import annotations

from typing import Any

import psycopg

from tally.local import template
from tally.local.invoke import invoke
from tally.points import service
from tally.points.models import VerificationIn
from tally.points.reconciliation import reconcile
from tests.support import verification_body


def award(wallet: str, n: int = 2) -> None:
    for _ in range(n):
        service.record_verification(VerificationIn.model_validate(verification_body(wallet)))
    service.award_pending()


def test_agreeing_ledger_passes(db: psycopg.Connection[Any]) -> None:
    award("0xabc0000000000000000000000000000000000001")
    award("0xabc0000000000000000000000000000000000002", 1)
    result = invoke(template.load(), "ReconciliationFunction", {})
    assert result["ok"] and result["mismatches"] == 0
    assert result["ledger_entries"] >= 3 and result["users"] == 2
    assert {c["check"] for c in result["checks"]} == {
        "users_total_points",
        "board_all",
        "board_weeks",
        "users_tier",
    }


def test_every_kind_of_difference_is_reported(db: psycopg.Connection[Any]) -> None:
    wallets = [f"0xabc00000000000000000000000000000000000{i:02d}" for i in range(1, 4)]
    for wallet in wallets:
        award(wallet, 1)
    db.execute(
        "UPDATE users SET total_points = total_points + 7 WHERE wallet_address = %s", (wallets[0],)
    )
    db.execute(
        "UPDATE board_scores SET points = points - 1 WHERE board = 'all' AND wallet_address = %s",
        (wallets[1],),
    )
    db.execute(
        "UPDATE board_scores SET points = 0 WHERE board LIKE 'week:%%' AND wallet_address = %s",
        (wallets[2],),
    )
    db.execute("UPDATE users SET tier = 'Legend' WHERE wallet_address = %s", (wallets[2],))
    result = reconcile()
    assert not result.ok and result.mismatches == 4
    found = {c.check: c for c in result.checks}
    assert found["users_total_points"].samples[0]["key"] == wallets[0]
    assert found["board_all"].samples[0]["key"] == wallets[1]
    assert found["board_weeks"].samples[0]["key"].endswith(wallets[2])
    assert found["users_tier"].samples == [
        {"key": wallets[2], "derived": "Legend", "expected": "Contributor"}
    ]
    # A ledger entry that nothing derived from it reflects (written with the board trigger off)
    # is a difference in the totals and on the board.
    db.execute("ALTER TABLE points_ledger DISABLE TRIGGER trg_points_ledger_boards")
    try:
        db.execute("INSERT INTO users (wallet_address) VALUES ('0xghost') ON CONFLICT DO NOTHING")
        db.execute(
            "INSERT INTO points_ledger (wallet_address, points, source_kind, source_id, "
            "rule_version) VALUES ('0xghost', 5, 'test', 'ghost-1', 'v1')"
        )
    finally:
        db.execute("ALTER TABLE points_ledger ENABLE TRIGGER trg_points_ledger_boards")
    again = {c.check: c.mismatches for c in reconcile().checks}
    assert again["users_total_points"] == 2 and again["board_all"] == 2
