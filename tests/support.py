"""Helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"
TEST_JWT_SECRET = "test-secret-" + "x" * 40


def load_event(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return data


def verification_body(
    wallet: str | None = "0xabc0000000000000000000000000000000000001",
    *,
    session_id: str | None = None,
    approved: bool = True,
    rarity: float | None = 50,
    quality: float = 0.6,
    subject: str = "bird song",
    grade: str = "C",
    verified: bool = False,
    samples: int = 10,
    content_hash: str | None = None,
) -> dict[str, Any]:
    results: dict[str, Any] = {
        "approved": approved,
        "qualityScore": quality,
        "subject": subject,
        "specificityGrade": grade,
        "verifiedClaims": verified,
        "contentHash": content_hash or uuid.uuid4().hex,
    }
    if rarity is not None:
        results["rarityScore"] = rarity
    metadata: dict[str, Any] = {"title": f"{subject} set", "sampleCount": samples}
    if wallet is not None:
        metadata["walletAddress"] = wallet
    return {
        "sessionId": session_id or str(uuid.uuid4()),
        "status": "completed",
        "metadata": metadata,
        "results": results,
    }


def token(subject: str = "tester", *roles: str, ttl_s: int = 600, **overrides: Any) -> str:
    """A bearer token signed with the test key (roles: user, service, admin)."""
    import time

    import jwt

    now = int(time.time())
    claims = {
        "sub": subject,
        "iss": "tally-local",
        "aud": "tally",
        "iat": now,
        "exp": now + ttl_s,
        "scope": " ".join(f"tally/{r}" for r in roles),
        **overrides,
    }
    return jwt.encode(claims, overrides.pop("key", TEST_JWT_SECRET), algorithm="HS256")


def auth(subject: str = "tester", *roles: str, **overrides: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(subject, *roles, **overrides)}"}


def assert_ledger_matches_totals(db: Any) -> None:
    """Every user's total is the sum of their ledger entries (REFERENCE.md's reconciliation)."""
    mismatches = db.execute(
        """
        SELECT u.wallet_address, u.total_points, COALESCE(sum(l.points), 0) AS ledger
        FROM users u LEFT JOIN points_ledger l USING (wallet_address)
        GROUP BY u.wallet_address, u.total_points
        HAVING u.total_points <> COALESCE(sum(l.points), 0)
        """
    ).fetchall()
    assert mismatches == []


def run_concurrently(job: Any, times: int = 2) -> list[Any]:
    """Start `job` in `times` threads at once (each with its own connection), return results."""
    import threading

    from tally.db.connection import close_connection

    results: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(times)

    def run() -> None:
        try:
            barrier.wait()
            results.append(job())
        except BaseException as exc:  # reported to the caller below
            errors.append(exc)
        finally:
            close_connection()

    threads = [threading.Thread(target=run) for _ in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [], errors
    return results
