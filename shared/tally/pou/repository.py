"""SQL of proof of usefulness: agents, receipts and committees, attestations, the finalizer's
set-based passes, reputation, stakes and the usefulness aggregator."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from tally.points.ledger_sql import CREDIT_PAID, tier_params

Row = dict[str, Any]
AGGREGATOR_LOCK = 7_402_115_401

REPUTATION_COLUMNS = "rep.q, rep.t, rep.r, rep.s, rep.v, rep.i, rep.e"
TRUST = "pou_trust(rep.q, rep.t, rep.r, rep.s, rep.v, rep.i, rep.e)"

# Quorum: distinct attesters among the client's ACCEPTED and the committee's AUDIT_PASS, by
# agents still active (the SQL function of migration 0006 is the one definition).
HAVE = "pou_qualifying_attesters(r.id, r.client_did, r.committee)"

# The guide's monitoring queries (1-4), verbatim but for line breaks, and the backlog it
# says to alert on.
HEALTH = """
SELECT
  (SELECT COUNT(*) FROM task_receipts WHERE created_at > NOW() - INTERVAL '1 hour')
    AS receipts_last_hour,
  (SELECT COUNT(*) FROM task_attestations WHERE created_at > NOW() - INTERVAL '1 hour')
    AS attestations_last_hour,
  (SELECT COUNT(*) FROM task_receipts
   WHERE status='finalized' AND finalized_at > NOW() - INTERVAL '1 hour')
    AS finalized_last_hour,
  (SELECT COUNT(*) FROM agent_reputation WHERE updated_at > NOW() - INTERVAL '1 hour')
    AS reputation_updates_last_hour,
  (SELECT COUNT(*) FROM task_receipts WHERE status = 'pending') AS pending,
  (SELECT COUNT(*) FROM task_receipts WHERE status = 'pending'
     AND created_at < NOW() - INTERVAL '1 hour') AS pending_over_1h,
  (SELECT COUNT(*) FROM task_receipts WHERE status = 'pending'
     AND cardinality(committee) < m) AS short_committees
"""


QUORATE = f"r.status = 'pending' AND {HAVE} >= r.k"


def _finalize_sql(*, one: bool) -> str:
    """Quorate receipts become finalized, oldest first, at most %(batch)s. A batch works from
    `task_receipts_quorate` (receipts the attestation trigger found quorate), so receipts still
    waiting for attestations cost nothing; one receipt (the API) is checked directly. Rows are
    locked where they are chosen (`FOR NO KEY UPDATE`): a batch skips receipts another
    finalizer or an attestation in progress holds, so concurrent runs split the work, while
    the API waits. Status and quorum are checked again under the lock (only for the rows
    taken), so a receipt is finalized once however many run; the rows taken leave the list in
    the same statement (one whose quorum is gone, an auditor suspended, is listed again by
    its next attestation or the auditor's reactivation)."""
    if one:
        source = "task_receipts r"
        where = f"{QUORATE} AND r.id = %(task_id)s"
        lock = "FOR NO KEY UPDATE OF r"
    else:
        source = "task_receipts_quorate q JOIN task_receipts r ON r.id = q.task_id"
        where = "r.status = 'pending'"
        lock = "FOR NO KEY UPDATE OF r SKIP LOCKED"
    return f"""
WITH locked AS (
    SELECT r.id FROM {source}
    WHERE {where}
    ORDER BY r.created_at, r.id
    LIMIT %(batch)s
    {lock}
),
finalized AS (
    UPDATE task_receipts r SET status = 'finalized', finalized_at = now()
    FROM locked l WHERE r.id = l.id AND {QUORATE}
    RETURNING r.id, r.agent_did, r.finalized_at
),
cleared AS (
    DELETE FROM task_receipts_quorate q USING locked l WHERE q.task_id = l.id
)
SELECT * FROM finalized
"""


FINALIZE_BATCH = _finalize_sql(one=False)
FINALIZE_ONE = _finalize_sql(one=True)

# What a finalized receipt says about its agent, per dimension (NULL: no observation, the
# dimension keeps its value). Latency is normalised at %(norm)s ms.
OBSERVATIONS = {
    "q": "avg(a.score) FILTER (WHERE a.type IN ('ACCEPTED', 'AUDIT_PASS', 'QUALITY_HIGH'))",
    "t": "CASE WHEN jsonb_typeof(r.metrics -> 'latency_ms') = 'number' THEN (1 - least("
    "(r.metrics ->> 'latency_ms')::numeric / %(norm)s::numeric, 1))::float8 END",
    "r": "1.0::float8",
    "s": "avg(a.score) FILTER (WHERE a.type = 'SAFETY_PASS')",
    "v": "avg(a.score) FILTER (WHERE a.type = 'AUDIT_PASS')",
    "i": "avg(a.score) FILTER (WHERE a.type = 'ACCEPTED')",
    "e": "avg(a.score) FILTER (WHERE a.type = 'EFFICIENCY_HIGH')",
}


def _reputation_sql() -> str:
    """EWMA over every receipt of the set, in order per agent: after n observations
    x1..xn, new = (1-a)^n * old + sum(a * (1-a)^(n-j) * xj), the same as n single steps."""
    dims = list(OBSERVATIONS)
    observed = ",\n        ".join(f"{expr} AS {d}" for d, expr in OBSERVATIONS.items())
    counts = ",\n        ".join(
        f"count({d}) OVER run AS j_{d}, count({d}) OVER agent AS n_{d}" for d in dims
    )
    sums = ",\n        ".join(
        f"max(n_{d}) AS n_{d}, sum(%(alpha)s * power(1 - %(alpha)s, n_{d} - j_{d}) * {d}) AS w_{d}"
        for d in dims
    )
    sets = ",\n    ".join(
        f"{d} = least(1, greatest(0, rep.{d} * power(1 - %(alpha)s, p.n_{d}) "
        f"+ coalesce(p.w_{d}, 0)))"
        for d in dims
    )
    return f"""
WITH observed AS (
    SELECT r.id, r.agent_did, r.created_at,
        {observed}
    FROM task_receipts r JOIN task_attestations a ON a.task_id = r.id
    WHERE r.id = ANY (%(ids)s)
    GROUP BY r.id
),
steps AS (
    SELECT o.*,
        {counts}
    FROM observed o
    WINDOW agent AS (PARTITION BY agent_did),
           run AS (PARTITION BY agent_did ORDER BY created_at, id ROWS UNBOUNDED PRECEDING)
),
per_agent AS (
    SELECT agent_did,
        {sums}
    FROM steps GROUP BY agent_did
)
UPDATE agent_reputation rep SET
    {sets},
    updated_at = now()
FROM per_agent p WHERE rep.agent_id = p.agent_did
"""


REPUTATION_UPDATE = _reputation_sql()

PAY_FINALIZED = f"""
WITH paid AS (
    INSERT INTO points_ledger
        (wallet_address, points, source_kind, source_id, rule_version, metadata)
    SELECT coalesce(ag.wallet_address, r.agent_did), %(points)s, 'pou', r.id::text,
           %(rule_version)s,
           jsonb_build_object('agent_did', r.agent_did, 'intent_type', r.intent_type,
                              'k', r.k, 'finalized_at', r.finalized_at)
    FROM task_receipts r JOIN agents ag ON ag.did = r.agent_did
    WHERE r.id = ANY (%(ids)s) AND r.status = 'finalized'
    ORDER BY 1, r.id
    ON CONFLICT ON CONSTRAINT uq_points_ledger_source DO NOTHING
    RETURNING wallet_address, points
),
{CREDIT_PAID}
SELECT count(*) AS entries, coalesce(sum(points), 0)::bigint AS points FROM paid
"""


def _receipt_usefulness(finalized_in: str) -> str:
    """Finalized receipts in a time range with their usefulness: the mean of score x confidence
    over their ACCEPTED and AUDIT_PASS attestations."""
    return f"""
    SELECT r.id, r.agent_did, r.finalized_at, avg(a.score * a.confidence) AS usefulness
    FROM task_receipts r JOIN task_attestations a ON a.task_id = r.id
    WHERE r.status = 'finalized' AND a.type IN ('ACCEPTED', 'AUDIT_PASS') AND {finalized_in}
    GROUP BY r.id
"""


SCORE_AGENTS = f"""
WITH work AS ({_receipt_usefulness("r.finalized_at >= now() - %(window)s::interval")}),
per_agent AS (
    SELECT agent_did, sum(usefulness) AS score, count(*)::int AS tasks, avg(usefulness) AS mean
    FROM work GROUP BY agent_did
),
scored AS (
    INSERT INTO agent_usefulness AS u
        (agent_id, usefulness_score, tasks_finalized, mean_usefulness, window_days, computed_at)
    SELECT ag.did, coalesce(p.score, 0), coalesce(p.tasks, 0), p.mean, %(window_days)s, now()
    FROM agents ag LEFT JOIN per_agent p ON p.agent_did = ag.did
    WHERE p.agent_did IS NOT NULL
       OR EXISTS (SELECT 1 FROM agent_usefulness x WHERE x.agent_id = ag.did)
    ORDER BY ag.did
    ON CONFLICT (agent_id) DO UPDATE
    SET usefulness_score = EXCLUDED.usefulness_score, tasks_finalized = EXCLUDED.tasks_finalized,
        mean_usefulness = EXCLUDED.mean_usefulness, window_days = EXCLUDED.window_days,
        computed_at = EXCLUDED.computed_at
    RETURNING 1
)
SELECT count(*) AS agents FROM scored
"""

# Hours in [%(first)s, %(last)s] not yet settled: each hour's pool split by the usefulness of the
# work finalized in it, in whole atomic units by largest remainder (ties by DID), so the credits
# of an hour with any useful work add up to the pool exactly. An hour is settled once.
SETTLE_HOURS = f"""
WITH hours AS (
    SELECT h FROM generate_series(%(first)s::timestamptz, %(last)s::timestamptz,
                                  interval '1 hour') AS h
    WHERE NOT EXISTS (SELECT 1 FROM usefulness_reward_hours x WHERE x.hour_start = h)
),
work AS ({
    _receipt_usefulness(
        "r.finalized_at >= %(first)s AND r.finalized_at < %(last)s::timestamptz + interval '1 hour'"
    )
}),
weights AS (
    SELECT date_trunc('hour', w.finalized_at) AS h, w.agent_did, sum(w.usefulness) AS weight
    FROM work w GROUP BY 1, 2 HAVING sum(w.usefulness) > 0
),
shares AS (
    SELECT wt.*, floor(%(pool)s::numeric * wt.weight::numeric
                       / sum(wt.weight::numeric) OVER (PARTITION BY wt.h)) AS base,
           %(pool)s::numeric * wt.weight::numeric
               / sum(wt.weight::numeric) OVER (PARTITION BY wt.h) AS exact
    FROM weights wt JOIN hours USING (h)
),
ranked AS (
    SELECT s.*, row_number() OVER (PARTITION BY s.h ORDER BY s.exact - s.base DESC,
                                   s.agent_did) AS place,
           %(pool)s::numeric - sum(s.base) OVER (PARTITION BY s.h) AS leftover
    FROM shares s
),
credited AS (
    INSERT INTO usefulness_credits (hour_start, agent_id, amount_atomic, weight)
    SELECT h, agent_did, base + CASE WHEN place <= leftover THEN 1 ELSE 0 END, weight
    FROM ranked
    ORDER BY h, agent_did
    ON CONFLICT (hour_start, agent_id) DO NOTHING
    RETURNING hour_start, amount_atomic
),
settled AS (
    INSERT INTO usefulness_reward_hours (hour_start, pool_atomic, distributed_atomic, agents)
    SELECT hours.h, %(pool)s,
           coalesce((SELECT sum(c.amount_atomic) FROM credited c WHERE c.hour_start = hours.h), 0),
           (SELECT count(*) FROM credited c WHERE c.hour_start = hours.h)
    FROM hours
    ON CONFLICT (hour_start) DO NOTHING
    RETURNING distributed_atomic
)
SELECT (SELECT count(*) FROM settled) AS hours,
       (SELECT count(*) FROM credited) AS credits,
       (SELECT coalesce(sum(distributed_atomic), 0) FROM settled) AS distributed
"""


class PouRepository:
    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self.conn = conn

    def try_lock(self, key: int) -> bool:
        row = self.conn.execute("SELECT pg_try_advisory_xact_lock(%s) AS ok", (key,)).fetchone()
        return bool(row and row["ok"])

    # -- agents ----------------------------------------------------------------------------

    def ensure_agents(self, agents: list[tuple[str, bytes | None]]) -> None:
        """Agents a receipt names, registered on first sight (with their reputation row)."""
        self.conn.execute(
            """
            WITH new AS (
                INSERT INTO agents (did, public_key, registered_by)
                SELECT did, key, 'receipt' FROM unnest(%s::text[], %s::bytea[]) AS x(did, key)
                ORDER BY did
                ON CONFLICT (did) DO NOTHING
                RETURNING did
            )
            INSERT INTO agent_reputation (agent_id) SELECT did FROM new
            ON CONFLICT (agent_id) DO NOTHING
            """,
            ([did for did, _ in agents], [key for _, key in agents]),
        )

    def agent(self, did: str, *, lock: bool = False) -> Row | None:
        sql = "SELECT * FROM agents WHERE did = %s" + (" FOR UPDATE" if lock else "")
        return self.conn.execute(sql, (did,)).fetchone()

    def register_agent(
        self, did: str, public_key: bytes | None, status: str, wallet: str | None
    ) -> Row:
        row = self.conn.execute(
            """
            WITH saved AS (
                INSERT INTO agents AS a (did, public_key, status, wallet_address, registered_by)
                VALUES (%(did)s, %(key)s, %(status)s, %(wallet)s, 'admin')
                ON CONFLICT (did) DO UPDATE
                SET public_key = coalesce(EXCLUDED.public_key, a.public_key),
                    status = EXCLUDED.status,
                    wallet_address = coalesce(EXCLUDED.wallet_address, a.wallet_address),
                    updated_at = now()
                RETURNING *
            ),
            reputation AS (
                INSERT INTO agent_reputation (agent_id) SELECT did FROM saved
                ON CONFLICT (agent_id) DO NOTHING
            )
            SELECT * FROM saved
            """,
            {"did": did, "key": public_key, "status": status, "wallet": wallet},
        ).fetchone()
        assert row is not None
        return row

    # -- receipts --------------------------------------------------------------------------

    def create_receipt(self, values: Row, min_stake: int) -> Row | None:
        """The receipt with its committee chosen now; None when the negotiation already has
        one (or the task id is taken)."""
        return self.conn.execute(
            f"""
            WITH candidates AS (
                SELECT ag.did, {TRUST} AS trust, md5(%(id)s::text || ag.did) AS tiebreak
                FROM agents ag
                JOIN agent_reputation rep ON rep.agent_id = ag.did
                LEFT JOIN agent_stakes st ON st.agent_id = ag.did
                WHERE ag.status = 'active'
                  AND ag.did NOT IN (%(agent_did)s, %(client_did)s)
                  AND (%(min_stake)s = 0 OR (st.amount_locked >= %(min_stake)s
                       AND (st.locked_until IS NULL OR st.locked_until > now())))
                ORDER BY trust DESC, tiebreak
                LIMIT %(m)s
            )
            INSERT INTO task_receipts (id, intent_id, negotiation_id, agent_did, client_did,
                intent_type, inputs_ref, outputs_ref, metrics, payment_request_id, amount_atomic,
                committee, k, m)
            VALUES (%(id)s, %(intent_id)s, %(negotiation_id)s, %(agent_did)s, %(client_did)s,
                %(intent_type)s, %(inputs_ref)s, %(outputs_ref)s, %(metrics)s,
                %(payment_request_id)s, %(amount_atomic)s,
                ARRAY(SELECT did FROM candidates ORDER BY trust DESC, tiebreak), %(k)s, %(m)s)
            ON CONFLICT DO NOTHING
            RETURNING *
            """,
            {**values, "metrics": Jsonb(values["metrics"]), "min_stake": min_stake},
        ).fetchone()

    def receipt(
        self, task_id: UUID, *, by_negotiation: str | None = None, hold: bool = False
    ) -> Row | None:
        """`hold` locks the receipt until commit: no finalizer closes it under an attestation,
        and attestations of one receipt queue, so each sees the others when it checks quorum."""
        if by_negotiation is not None:
            return self.conn.execute(
                "SELECT * FROM task_receipts WHERE negotiation_id = %s", (by_negotiation,)
            ).fetchone()
        lock = " FOR NO KEY UPDATE" if hold else ""
        sql = "SELECT * FROM task_receipts WHERE id = %s" + lock
        return self.conn.execute(sql, (task_id,)).fetchone()

    def attestations(self, task_id: UUID) -> list[Row]:
        return self.conn.execute(
            "SELECT * FROM task_attestations WHERE task_id = %s ORDER BY created_at, id",
            (task_id,),
        ).fetchall()

    def committee_trust(self, members: list[str]) -> dict[str, float]:
        rows = self.conn.execute(
            f"SELECT rep.agent_id, {TRUST} AS trust FROM agent_reputation rep "
            "WHERE rep.agent_id = ANY (%s)",
            (members,),
        ).fetchall()
        return {r["agent_id"]: float(r["trust"]) for r in rows}

    def quorum_have(self, task_id: UUID) -> int:
        row = self.conn.execute(
            f"SELECT {HAVE} AS have FROM task_receipts r WHERE r.id = %s", (task_id,)
        ).fetchone()
        return int(row["have"]) if row else 0

    def add_attestation(self, task_id: UUID, by_did: str, values: Row) -> Row | None:
        """The attestation, or None when this attester already gave one of this type."""
        return self.conn.execute(
            """
            INSERT INTO task_attestations
                (task_id, by_did, type, score, confidence, evidence_ref, signature)
            VALUES (%s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT ON CONSTRAINT uq_task_attestations_one_per_type DO NOTHING
            RETURNING *
            """,
            (
                task_id,
                by_did,
                values["type"],
                values["score"],
                values["confidence"],
                values["evidence_ref"],
                values["signature"],
            ),
        ).fetchone()

    # -- the finalizer ---------------------------------------------------------------------

    def pending_summary(self, stuck_after: timedelta) -> Row:
        """Pending receipts, those with a short committee, those older than `stuck_after`:
        one pass over the pending ones."""
        row = self.conn.execute(
            """
            SELECT count(*) AS pending,
                   count(*) FILTER (WHERE cardinality(committee) < m) AS short_committees,
                   count(*) FILTER (WHERE created_at < now() - %s) AS pending_over
            FROM task_receipts WHERE status = 'pending'
            """,
            (stuck_after,),
        ).fetchone()
        assert row is not None
        return row

    def quorate_ids(self, limit: int) -> list[UUID]:
        rows = self.conn.execute(
            "SELECT r.id FROM task_receipts_quorate q JOIN task_receipts r ON r.id = q.task_id "
            "WHERE r.status = 'pending' ORDER BY r.created_at, r.id LIMIT %s",
            (limit,),
        ).fetchall()
        return [r["id"] for r in rows]

    def mark_failed(self, task_id: UUID) -> None:
        self.conn.execute(
            "UPDATE task_receipts SET status = 'failed' WHERE id = %s AND status = 'pending'",
            (task_id,),
        )
        self.conn.execute("DELETE FROM task_receipts_quorate WHERE task_id = %s", (task_id,))

    def mark_quorate_for(self, did: str) -> None:
        """An agent is active again: its attestations count, so receipts it attested may be
        quorate without a new attestation."""
        self.conn.execute(
            f"""
            INSERT INTO task_receipts_quorate (task_id)
            SELECT r.id FROM task_receipts r
            WHERE (r.client_did = %(did)s OR r.committee @> ARRAY[%(did)s]) AND {QUORATE}
            ORDER BY r.id
            ON CONFLICT (task_id) DO NOTHING
            """,
            {"did": did},
        )

    def finalize(self, batch: int, task_id: UUID | None = None) -> list[Row]:
        if task_id is not None:
            return self.conn.execute(FINALIZE_ONE, {"batch": 1, "task_id": task_id}).fetchall()
        return self.conn.execute(FINALIZE_BATCH, {"batch": batch}).fetchall()

    def update_reputation(
        self, ids: list[UUID], agents: list[str], alpha: float, norm: float
    ) -> int:
        """EWMA steps for finalized receipts; reputation rows locked in agent order first, so
        concurrent finalizers queue instead of deadlocking."""
        self.conn.execute(
            "SELECT 1 FROM agent_reputation WHERE agent_id = ANY (%s) ORDER BY agent_id FOR UPDATE",
            (sorted(set(agents)),),
        )
        cur = self.conn.execute(REPUTATION_UPDATE, {"ids": ids, "alpha": alpha, "norm": norm})
        return cur.rowcount

    def pay_finalized(self, ids: list[UUID], points: int, rule_version: str) -> Row:
        row = self.conn.execute(
            PAY_FINALIZED,
            {"ids": ids, "points": points, "rule_version": rule_version, **tier_params()},
        ).fetchone()
        assert row is not None
        return row

    # -- reputation and stakes -------------------------------------------------------------

    def reputation(self, did: str) -> Row | None:
        return self.conn.execute(
            f"""
            SELECT ag.did AS agent_id, ag.status, {REPUTATION_COLUMNS}, {TRUST} AS trust,
                   rep.updated_at,
                   (SELECT count(*) FROM task_receipts tr
                    WHERE tr.agent_did = ag.did AND tr.status = 'finalized') AS finalized_tasks,
                   coalesce(u.usefulness_score, 0) AS usefulness_score,
                   (SELECT coalesce(sum(c.amount_atomic), 0) FROM usefulness_credits c
                    WHERE c.agent_id = ag.did) AS credits_atomic
            FROM agents ag
            JOIN agent_reputation rep ON rep.agent_id = ag.did
            LEFT JOIN agent_usefulness u ON u.agent_id = ag.did
            WHERE ag.did = %s
            """,
            (did,),
        ).fetchone()

    def stake(self, did: str) -> Row:
        row = self.conn.execute(
            """
            SELECT ag.did AS agent_id, coalesce(st.amount_locked, 0) AS amount_locked,
                   coalesce(st.slashed_total, 0) AS slashed_total, st.locked_until, st.updated_at
            FROM agents ag LEFT JOIN agent_stakes st ON st.agent_id = ag.did
            WHERE ag.did = %s
            """,
            (did,),
        ).fetchone()
        assert row is not None
        return row

    def record_stake_event(
        self,
        did: str,
        kind: str,
        amount: int,
        reference: str,
        *,
        reason: str | None = None,
        task_id: UUID | None = None,
        locked_until: datetime | None = None,
    ) -> bool:
        """False when this reference was already applied (the request is a retry)."""
        row = self.conn.execute(
            """
            INSERT INTO agent_stake_events
                (agent_id, kind, amount_atomic, reference, reason, task_id, locked_until)
            VALUES (%s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT ON CONSTRAINT uq_agent_stake_events_reference DO NOTHING
            RETURNING id
            """,
            (did, kind, amount, reference, reason, task_id, locked_until),
        ).fetchone()
        return row is not None

    def stake_event(self, did: str, kind: str, reference: str) -> Row | None:
        return self.conn.execute(
            "SELECT * FROM agent_stake_events WHERE agent_id = %s AND kind = %s AND reference = %s",
            (did, kind, reference),
        ).fetchone()

    def lock_stake(self, did: str, amount: int, locked_until: datetime | None) -> None:
        self.conn.execute(
            """
            INSERT INTO agent_stakes AS st (agent_id, amount_locked, locked_until)
            VALUES (%s, %s, %s)
            ON CONFLICT (agent_id) DO UPDATE
            SET amount_locked = st.amount_locked + EXCLUDED.amount_locked,
                locked_until = greatest(st.locked_until, EXCLUDED.locked_until),
                updated_at = now()
            """,
            (did, amount, locked_until),
        )

    def slash(self, did: str, amount: int, factor: float) -> bool:
        """Stake down by `amount` and every dimension times `factor`; False when the stake
        locked is smaller than the amount (nothing changes)."""
        row = self.conn.execute(
            """
            WITH cut AS (
                UPDATE agent_stakes SET amount_locked = amount_locked - %(amount)s,
                    slashed_total = slashed_total + %(amount)s, updated_at = now()
                WHERE agent_id = %(did)s AND amount_locked >= %(amount)s
                RETURNING agent_id
            ),
            scaled AS (
                UPDATE agent_reputation SET q = q * %(f)s, t = t * %(f)s, r = r * %(f)s,
                    s = s * %(f)s, v = v * %(f)s, i = i * %(f)s, e = e * %(f)s,
                    updated_at = now()
                WHERE agent_id IN (SELECT agent_id FROM cut)
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM cut) AS cut, (SELECT count(*) FROM scaled) AS scaled
            """,
            {"did": did, "amount": amount, "f": factor},
        ).fetchone()
        return bool(row and row["cut"])

    def dimensions(self, did: str) -> Row:
        row = self.conn.execute(
            f"SELECT {REPUTATION_COLUMNS} FROM agent_reputation rep WHERE rep.agent_id = %s",
            (did,),
        ).fetchone()
        assert row is not None
        return row

    # -- health and the aggregator ---------------------------------------------------------

    def health(self) -> Row:
        row = self.conn.execute(HEALTH).fetchone()
        assert row is not None
        return row

    def score_agents(self, window: timedelta) -> int:
        row = self.conn.execute(
            SCORE_AGENTS,
            {"window": window, "window_days": window.days},
        ).fetchone()
        return int(row["agents"]) if row else 0

    def last_settled_hour(self) -> datetime | None:
        row = self.conn.execute(
            "SELECT max(hour_start) AS h FROM usefulness_reward_hours"
        ).fetchone()
        return row["h"] if row else None

    def settle_hours(self, first: datetime, last: datetime, pool: int) -> Row:
        row = self.conn.execute(
            SETTLE_HOURS, {"first": first, "last": last, "pool": pool}
        ).fetchone()
        assert row is not None
        return row
