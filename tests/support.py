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
