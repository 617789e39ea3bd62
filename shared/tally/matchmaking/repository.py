"""SQL of matchmaking: the queue, proposals, voters, votes, conversations and metrics."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

Row = dict[str, Any]
GENERATOR_LOCK = 7_402_115_301
CREATOR_LOCK = 7_402_115_302
EXPIRY_LOCK = 7_402_115_303

# The guide's health check and key metrics, verbatim but for the configured bands.
HEALTH = """
SELECT
  CASE
    WHEN queue_depth >= %(queue_low)s
      AND active_voting >= %(active_low)s
      AND stuck_proposals = 0
    THEN 'HEALTHY'
    ELSE 'UNHEALTHY'
  END as system_status,
  queue_depth,
  active_voting,
  stuck_proposals
FROM (
  SELECT
    (SELECT COUNT(*) FROM match_generation_queue WHERE consumed_at IS NULL) as queue_depth,
    (SELECT COUNT(*) FROM match_proposals WHERE status = 'voting') as active_voting,
    (SELECT COUNT(*) FROM match_proposals
     WHERE status = 'voting'
     AND voting_expires_at < NOW() - %(stuck)s::interval) as stuck_proposals
) metrics
"""
KEY_METRICS = """
SELECT
  (SELECT COUNT(*) FROM match_generation_queue WHERE consumed_at IS NULL) as queue_depth,
  (SELECT COUNT(*) FROM match_proposals WHERE status = 'voting') as active_voting,
  (SELECT COUNT(*) FROM match_proposals WHERE status = 'approved') as total_approved,
  (SELECT COUNT(*) FROM match_proposals WHERE status = 'rejected') as total_rejected,
  (SELECT COUNT(*) FROM voter_assignments) as total_voters_assigned,
  (SELECT COUNT(*) FROM match_votes) as total_votes_cast
"""
PROPOSAL_COLUMNS = (
    "p.id, p.user_a_address, p.user_b_address, p.compatibility_score, p.reasons, p.status, "
    "p.yes_votes, p.no_votes, p.voters_target, p.created_at, p.voting_started_at, "
    "p.voting_expires_at, p.finalized_at, p.finalized_by"
)


class MatchRepository:
    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self.conn = conn

    def try_lock(self, key: int) -> bool:
        row = self.conn.execute("SELECT pg_try_advisory_xact_lock(%s) AS ok", (key,)).fetchone()
        return bool(row and row["ok"])

    # -- state ---------------------------------------------------------------------------------

    def health(self, queue_low: int, active_low: int, stuck: timedelta) -> Row:
        row = self.conn.execute(
            HEALTH, {"queue_low": queue_low, "active_low": active_low, "stuck": stuck}
        ).fetchone()
        assert row is not None
        return row

    def key_metrics(self) -> Row:
        row = self.conn.execute(KEY_METRICS).fetchone()
        assert row is not None
        return row

    def last_metrics_at(self) -> datetime | None:
        row = self.conn.execute("SELECT max(recorded_at) AS at FROM system_metrics").fetchone()
        return row["at"] if row else None

    def record_metrics(
        self, job: str, health: Row, votes_cast: int, details: dict[str, Any]
    ) -> None:
        self.conn.execute(
            """
            INSERT INTO system_metrics
                (job, queue_depth, active_voting, stuck_proposals, votes_cast, details)
            VALUES (%s, %s, %s, %s, %s, %s)
            """,
            (
                job,
                health["queue_depth"],
                health["active_voting"],
                health["stuck_proposals"],
                votes_cast,
                Jsonb(details),
            ),
        )

    # -- the generator ---------------------------------------------------------------------

    def queue_depth(self) -> int:
        row = self.conn.execute(
            "SELECT count(*) AS n FROM match_generation_queue WHERE consumed_at IS NULL"
        ).fetchone()
        return int(row["n"]) if row else 0

    def sample_members(self, size: int) -> list[Row]:
        """A random sample of opted-in members, drawn in the database (never every profile)."""
        return self.conn.execute(
            """
            SELECT p.address, p.attributes, h.city, h.region, h.country
            FROM profiles p LEFT JOIN home_location_struct h ON h.user_id = p.address
            WHERE p.opt_in
            ORDER BY random() LIMIT %s
            """,
            (size,),
        ).fetchall()

    def enqueue(
        self,
        candidates: list[tuple[str, str, str, float, list[str]]],
        need: int,
        scorer: str,
        cooldown: timedelta,
    ) -> int:
        """Queue up to `need` candidates, best first, skipping pairs already queued or live and
        pairs rejected within the cooldown. The claim makes a duplicate impossible."""
        if not candidates or need <= 0:
            return 0
        row = self.conn.execute(
            """
            WITH c AS (
                SELECT * FROM unnest(%(a)s::text[], %(b)s::text[], %(h)s::text[],
                                     %(s)s::float8[], %(r)s::jsonb[])
                    WITH ORDINALITY AS c(a, b, h, score, reasons, ord)
            ), fresh AS (
                SELECT c.* FROM c
                WHERE NOT EXISTS (SELECT 1 FROM match_pair_claims k WHERE k.pair_hash = c.h)
                  AND NOT EXISTS (SELECT 1 FROM match_proposals p
                                  WHERE p.pair_hash = c.h AND p.status = 'rejected'
                                    AND p.finalized_at > now() - %(cooldown)s::interval)
                ORDER BY c.ord LIMIT %(need)s
            ), claimed AS (
                INSERT INTO match_pair_claims (pair_hash)
                SELECT h FROM fresh ORDER BY ord
                ON CONFLICT (pair_hash) DO NOTHING
                RETURNING pair_hash
            ), queued AS (
                INSERT INTO match_generation_queue
                    (user_a_address, user_b_address, pair_hash, compatibility_score, reasons,
                     scorer)
                SELECT f.a, f.b, f.h, f.score, f.reasons, %(scorer)s
                FROM fresh f JOIN claimed k ON k.pair_hash = f.h
                ORDER BY f.ord
                RETURNING 1
            )
            SELECT count(*) AS n FROM queued
            """,
            {
                "a": [c[0] for c in candidates],
                "b": [c[1] for c in candidates],
                "h": [c[2] for c in candidates],
                "s": [c[3] for c in candidates],
                "r": [Jsonb(c[4]) for c in candidates],
                "need": need,
                "scorer": scorer,
                "cooldown": cooldown,
            },
        ).fetchone()
        return int(row["n"]) if row else 0

    # -- proposals -------------------------------------------------------------------------

    def active_voting(self) -> int:
        row = self.conn.execute(
            "SELECT count(*) AS n FROM match_proposals WHERE status = 'voting'"
        ).fetchone()
        return int(row["n"]) if row else 0

    def open_from_queue(
        self, count: int, voters_target: int, window: timedelta, avoid: str | None = None
    ) -> list[Row]:
        """Turn the best queued pairs into proposals in voting (skipping rows another
        transaction holds, and pairs that include `avoid`)."""
        return self.conn.execute(
            """
            WITH best AS (
                SELECT id FROM match_generation_queue
                WHERE consumed_at IS NULL
                  AND (%(avoid)s::text IS NULL
                       OR %(avoid)s::text NOT IN (user_a_address, user_b_address))
                  AND NOT EXISTS (SELECT 1 FROM profiles m  -- someone opted out since
                                  WHERE m.address IN (user_a_address, user_b_address)
                                    AND NOT m.opt_in)
                ORDER BY compatibility_score DESC, id
                LIMIT %(count)s
                FOR UPDATE SKIP LOCKED
            ), consumed AS (
                UPDATE match_generation_queue q SET consumed_at = now()
                FROM best WHERE q.id = best.id
                RETURNING q.*
            )
            INSERT INTO match_proposals AS p
                (queue_id, user_a_address, user_b_address, pair_hash, compatibility_score,
                 reasons, status, voters_target, voting_started_at, voting_expires_at)
            SELECT id, user_a_address, user_b_address, pair_hash, compatibility_score, reasons,
                   'voting', %(voters)s, now(), now() + %(window)s::interval
            FROM consumed ORDER BY compatibility_score DESC, id
            RETURNING """
            + PROPOSAL_COLUMNS,
            {"count": count, "voters": voters_target, "window": window, "avoid": avoid},
        ).fetchall()

    def least_loaded_voters(self, size: int) -> list[str]:
        """Opted-in members with the fewest open assignments on proposals in voting; random
        among equals."""
        rows = self.conn.execute(
            """
            WITH load AS (
                SELECT a.voter_address, count(*) AS open
                FROM voter_assignments a
                JOIN match_proposals p ON p.id = a.proposal_id AND p.status = 'voting'
                WHERE a.voted_at IS NULL AND a.closed_at IS NULL
                GROUP BY a.voter_address
            )
            SELECT p.address FROM profiles p LEFT JOIN load l ON l.voter_address = p.address
            WHERE p.opt_in
            ORDER BY coalesce(l.open, 0), random()
            LIMIT %s
            """,
            (size,),
        ).fetchall()
        return [r["address"] for r in rows]

    def assign(self, pairs: list[tuple[UUID, str]]) -> int:
        if not pairs:
            return 0
        return self.conn.execute(
            """
            INSERT INTO voter_assignments (proposal_id, voter_address)
            SELECT * FROM unnest(%s::uuid[], %s::text[])
            ON CONFLICT (proposal_id, voter_address) DO NOTHING
            """,
            ([p for p, _ in pairs], [v for _, v in pairs]),
        ).rowcount

    # -- expiry ----------------------------------------------------------------------------

    def finalize_expired(self) -> Row:
        """Every proposal whose window has passed, exactly once: more yes than no approves
        (and opens the conversation), otherwise it is rejected (and the pair released)."""
        row = self.conn.execute(
            """
            WITH due AS (
                SELECT id FROM match_proposals
                WHERE status = 'voting' AND voting_expires_at <= now()
                ORDER BY voting_expires_at
                FOR UPDATE SKIP LOCKED
            ), closed AS (
                UPDATE match_proposals p
                SET status = CASE WHEN p.yes_votes > p.no_votes THEN 'approved'
                                  ELSE 'rejected' END,
                    finalized_at = now(), finalized_by = 'expiry'
                FROM due WHERE p.id = due.id AND p.status = 'voting'
                RETURNING p.id, p.status, p.pair_hash, p.user_a_address, p.user_b_address
            ), talks AS (
                INSERT INTO conversations (proposal_id, user_a_address, user_b_address)
                SELECT id, user_a_address, user_b_address FROM closed WHERE status = 'approved'
                ON CONFLICT (proposal_id) DO NOTHING
                RETURNING 1
            ), released AS (
                DELETE FROM match_pair_claims k USING closed c
                WHERE k.pair_hash = c.pair_hash AND c.status = 'rejected'
                RETURNING 1
            ), seats AS (
                UPDATE voter_assignments a SET closed_at = now()
                FROM closed c
                WHERE a.proposal_id = c.id AND a.voted_at IS NULL AND a.closed_at IS NULL
                RETURNING 1
            )
            SELECT count(*) FILTER (WHERE status = 'approved') AS approved,
                   count(*) FILTER (WHERE status = 'rejected') AS rejected,
                   (SELECT count(*) FROM talks) AS conversations
            FROM closed
            """
        ).fetchone()
        assert row is not None
        return row

    # -- voters ----------------------------------------------------------------------------

    def next_assigned(self, voter: str) -> Row | None:
        return self.conn.execute(
            "SELECT "
            + PROPOSAL_COLUMNS
            + """
            FROM voter_assignments a JOIN match_proposals p ON p.id = a.proposal_id
            WHERE a.voter_address = %s AND a.voted_at IS NULL AND a.closed_at IS NULL
              AND p.status = 'voting' AND p.voting_expires_at > now()
            ORDER BY p.voting_expires_at, p.id LIMIT 1
            """,
            (voter,),
        ).fetchone()

    def assign_on_the_spot(self, voter: str, margin: timedelta) -> UUID | None:
        """A proposal in voting the voter is not part of and not yet assigned to, the one with
        the fewest voters first."""
        row = self.conn.execute(
            """
            WITH pick AS (
                SELECT p.id FROM match_proposals p
                WHERE p.status = 'voting' AND p.voting_expires_at > now() + %(margin)s::interval
                  AND %(voter)s NOT IN (p.user_a_address, p.user_b_address)
                  AND NOT EXISTS (SELECT 1 FROM voter_assignments a
                                  WHERE a.proposal_id = p.id AND a.voter_address = %(voter)s)
                ORDER BY (SELECT count(*) FROM voter_assignments a WHERE a.proposal_id = p.id),
                         p.voting_expires_at DESC
                LIMIT 1
                FOR UPDATE SKIP LOCKED
            )
            INSERT INTO voter_assignments (proposal_id, voter_address)
            SELECT id, %(voter)s FROM pick
            ON CONFLICT (proposal_id, voter_address) DO NOTHING
            RETURNING proposal_id
            """,
            {"voter": voter, "margin": margin},
        ).fetchone()
        return row["proposal_id"] if row else None

    def proposal(self, proposal_id: UUID, *, lock: bool = False) -> Row | None:
        """The proposal, and whether it takes votes now (by the database's clock, the one the
        expiry handler goes by)."""
        suffix = " FOR UPDATE" if lock else ""
        return self.conn.execute(
            "SELECT "
            + PROPOSAL_COLUMNS
            + ", p.pair_hash, (p.status = 'voting' AND p.voting_expires_at > now()) AS open "
            "FROM match_proposals p WHERE p.id = %s" + suffix,
            (proposal_id,),
        ).fetchone()

    def is_member(self, address: str) -> bool:
        """Voters are members: a profile that has not opted out."""
        row = self.conn.execute(
            "SELECT 1 AS ok FROM profiles WHERE address = %s AND opt_in", (address,)
        ).fetchone()
        return row is not None

    def is_assigned(self, proposal_id: UUID, voter: str) -> bool:
        row = self.conn.execute(
            "SELECT 1 AS ok FROM voter_assignments WHERE proposal_id = %s AND voter_address = %s",
            (proposal_id, voter),
        ).fetchone()
        return row is not None

    def cast_vote(self, proposal_id: UUID, voter: str, vote: str) -> bool:
        """The vote, once: False when this voter already voted on it."""
        row = self.conn.execute(
            """
            WITH cast_vote AS (
                INSERT INTO match_votes (proposal_id, voter_address, vote)
                VALUES (%(p)s, %(v)s, %(vote)s)
                ON CONFLICT (proposal_id, voter_address) DO NOTHING
                RETURNING vote
            ), marked AS (
                UPDATE voter_assignments SET voted_at = now()
                WHERE proposal_id = %(p)s AND voter_address = %(v)s
                  AND EXISTS (SELECT 1 FROM cast_vote)
                RETURNING 1
            ), counted AS (
                UPDATE match_proposals
                SET yes_votes = yes_votes + (SELECT count(*) FROM cast_vote WHERE vote = 'yes'),
                    no_votes = no_votes + (SELECT count(*) FROM cast_vote WHERE vote = 'no')
                WHERE id = %(p)s AND EXISTS (SELECT 1 FROM cast_vote)
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM cast_vote) AS cast
            """,
            {"p": proposal_id, "v": voter, "vote": vote},
        ).fetchone()
        return bool(row and row["cast"])

    def close(self, proposal_id: UUID, status: str, by: str, reason: str | None = None) -> Row:
        """Finalize one proposal (its row is locked by the caller): approve opens the
        conversation, reject releases the pair, block keeps it out for good."""
        row = self.conn.execute(
            """
            WITH closed AS (
                UPDATE match_proposals
                SET status = %(status)s, finalized_at = now(), finalized_by = %(by)s,
                    blocked_reason = %(reason)s
                WHERE id = %(p)s
                RETURNING id, status, pair_hash, user_a_address, user_b_address
            ), talks AS (
                INSERT INTO conversations (proposal_id, user_a_address, user_b_address)
                SELECT id, user_a_address, user_b_address FROM closed WHERE status = 'approved'
                ON CONFLICT (proposal_id) DO NOTHING
                RETURNING id
            ), released AS (
                DELETE FROM match_pair_claims k USING closed c
                WHERE k.pair_hash = c.pair_hash AND c.status = 'rejected'
                RETURNING 1
            ), seats AS (
                UPDATE voter_assignments a SET closed_at = now()
                FROM closed c
                WHERE a.proposal_id = c.id AND a.voted_at IS NULL AND a.closed_at IS NULL
                RETURNING 1
            )
            SELECT (SELECT id FROM talks) AS conversation_id
            """,
            {"p": proposal_id, "status": status, "by": by, "reason": reason},
        ).fetchone()
        assert row is not None
        return row

    def conversations(
        self, address: str, limit: int, before: tuple[datetime, UUID] | None
    ) -> list[Row]:
        return self.conn.execute(
            """
            SELECT c.id, c.proposal_id, c.created_at,
                   CASE WHEN c.user_a_address = %(me)s THEN c.user_b_address
                        ELSE c.user_a_address END AS with_address,
                   pr.display_name AS with_display_name, p.compatibility_score, p.reasons
            FROM conversations c
            JOIN match_proposals p ON p.id = c.proposal_id
            LEFT JOIN profiles pr ON pr.address =
                CASE WHEN c.user_a_address = %(me)s THEN c.user_b_address
                     ELSE c.user_a_address END
            WHERE (c.user_a_address = %(me)s OR c.user_b_address = %(me)s)
              AND (%(at)s::timestamptz IS NULL OR (c.created_at, c.id) < (%(at)s, %(id)s))
            ORDER BY c.created_at DESC, c.id DESC
            LIMIT %(limit)s
            """,
            {
                "me": address,
                "limit": limit,
                "at": before[0] if before else None,
                "id": before[1] if before else None,
            },
        ).fetchall()
