"""Per-identity request limits kept in PostgreSQL, so every Lambda environment shares them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg

from tally.db.connection import transaction
from tally.errors import TallyError


class RateLimited(TallyError):
    status = 429
    code = "RATE_LIMITED"
    title = "Too many requests"


class RateLimitRepository:
    def __init__(self, conn: psycopg.Connection[dict[str, Any]]) -> None:
        self.conn = conn

    def hit(self, scope: str, identity: str, window: timedelta) -> tuple[int, datetime]:
        """Count one request in the identity's current fixed window: (hits so far, when the
        window ends). The row resets itself when a new window starts."""
        row = self.conn.execute(
            """
            INSERT INTO rate_limit_hits AS h (scope, identity, window_start, hits)
            VALUES (%(scope)s, %(identity)s,
                    to_timestamp(floor(extract(epoch FROM now()) / %(seconds)s) * %(seconds)s),
                    1)
            ON CONFLICT (scope, identity) DO UPDATE
            SET hits = CASE WHEN EXCLUDED.window_start > h.window_start THEN 1
                            ELSE h.hits + 1 END,  -- a late request counts in the newer window
                window_start = greatest(h.window_start, EXCLUDED.window_start)
            RETURNING hits, window_start + %(window)s AS resets_at
            """,
            {
                "scope": scope,
                "identity": identity,
                "seconds": int(window.total_seconds()),
                "window": window,
            },
        ).fetchone()
        assert row is not None
        return int(row["hits"]), row["resets_at"]


def enforce(scope: str, identity: str, limit: int, window: timedelta) -> None:
    """Count the request (in its own transaction: refused and failed attempts count too) and
    refuse it with 429 beyond `limit` per window."""
    with transaction() as conn:
        hits, resets_at = RateLimitRepository(conn).hit(scope, identity, window)
    if hits > limit:
        retry_after = max(1, int((resets_at - datetime.now(resets_at.tzinfo)).total_seconds()))
        raise RateLimited(
            f"At most {limit} requests per {int(window.total_seconds())} s for {scope}",
            limit=limit,
            retry_after=retry_after,
            headers={"Retry-After": str(retry_after)},
        )
