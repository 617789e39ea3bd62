"""SQL shared by every set-based source of points (quests, finalized useful work)."""

from __future__ import annotations

from typing import Any

from tally.points.tiers import TIERS

# CTEs that add a statement's new ledger rows to users' totals and tiers in the same statement,
# so the ledger and the totals never disagree. Follows a CTE `paid (wallet_address, points)` of
# rows the statement inserted into points_ledger; takes %(mins)s and %(names)s (tier_params()).
CREDIT_PAID = """
per_user AS (
    SELECT wallet_address, sum(points)::bigint AS delta FROM paid GROUP BY wallet_address
),
credited AS (
    INSERT INTO users AS u (wallet_address, total_points, tier, points_updated_at)
    SELECT wallet_address, delta,
           (SELECT t.name FROM unnest(%(mins)s::bigint[], %(names)s::text[]) AS t(minimum, name)
            WHERE t.minimum <= delta ORDER BY t.minimum DESC LIMIT 1),
           now()
    FROM per_user
    ORDER BY wallet_address
    ON CONFLICT (wallet_address) DO UPDATE
    SET total_points = u.total_points + EXCLUDED.total_points,
        tier = (SELECT t.name FROM unnest(%(mins)s::bigint[], %(names)s::text[])
                    AS t(minimum, name)
                WHERE t.minimum <= u.total_points + EXCLUDED.total_points
                ORDER BY t.minimum DESC LIMIT 1),
        points_updated_at = now(), updated_at = now()
    RETURNING 1
)"""


def tier_params() -> dict[str, Any]:
    return {"mins": [m for m, _ in TIERS], "names": [n for _, n in TIERS]}
