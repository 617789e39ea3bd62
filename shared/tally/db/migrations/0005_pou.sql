-- Proof of usefulness (seed 004): task receipts, a committee per receipt, attestations, k-of-m
-- quorum finalization, seven-dimension reputation and stakes. The guide's four tables carry
-- exactly its columns and recommended indexes, so its monitoring queries run unchanged; the
-- other tables are what the guide lists as "future" and Tally builds now (agent keys, stake
-- events, usefulness scores and the hourly reward pool, per-identity rate limits).

-- Every party to a receipt is an agent: its DID, the Ed25519 key its signatures verify against
-- (derived from a did:key, or registered by an admin) and whether it may act.
CREATE TABLE agents (
    did             text PRIMARY KEY
                    CHECK (length(did) <= 256 AND did ~ '^did:[a-z0-9]+:[A-Za-z0-9._:%-]+$'),
    public_key      bytea CHECK (public_key IS NULL OR length(public_key) = 32),
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    -- where points for finalized work go (the DID itself when no wallet is linked)
    wallet_address  text,
    registered_by   text NOT NULL CHECK (registered_by IN ('admin', 'receipt')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE task_receipts (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    intent_id           text NOT NULL,
    -- one settled negotiation, one receipt: a resent settlement finds the receipt it made
    negotiation_id      text NOT NULL UNIQUE,
    agent_did           text NOT NULL REFERENCES agents (did),
    client_did          text NOT NULL REFERENCES agents (did),
    intent_type         text NOT NULL,
    inputs_ref          text,
    outputs_ref         text,
    metrics             jsonb NOT NULL DEFAULT '{}'::jsonb,
    payment_request_id  text,
    amount_atomic       numeric(78, 0) NOT NULL DEFAULT 0 CHECK (amount_atomic >= 0),
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'finalized', 'disputed', 'failed')),
    -- in selection order: trust at selection descending, ties by md5(task id || did)
    committee           text[] NOT NULL DEFAULT '{}',
    k                   integer NOT NULL CHECK (k >= 1),
    m                   integer NOT NULL CHECK (m >= 0),
    finalized_at        timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (agent_did <> client_did),
    CHECK ((status = 'finalized') = (finalized_at IS NOT NULL))
);
-- The guide's production indexes.
CREATE INDEX idx_task_receipts_status ON task_receipts (status, created_at DESC);
CREATE INDEX idx_task_receipts_committee ON task_receipts USING GIN (committee);
-- An agent's history (reputation endpoint) and the finalized work of an hour (aggregator).
CREATE INDEX idx_task_receipts_agent ON task_receipts (agent_did, created_at);
CREATE INDEX idx_task_receipts_finalized ON task_receipts (finalized_at)
    WHERE status = 'finalized';

CREATE TABLE task_attestations (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    task_id       uuid NOT NULL REFERENCES task_receipts (id),
    by_did        text NOT NULL REFERENCES agents (did),
    type          text NOT NULL CHECK (type IN
                  ('ACCEPTED', 'AUDIT_PASS', 'SAFETY_PASS', 'QUALITY_HIGH', 'EFFICIENCY_HIGH')),
    score         double precision NOT NULL CHECK (score >= 0 AND score <= 1),
    confidence    double precision NOT NULL CHECK (confidence >= 0 AND confidence <= 1),
    evidence_ref  text,
    -- base64url Ed25519 signature over the attestation's canonical JSON (RFC 8785)
    signature     text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_task_attestations_one_per_type UNIQUE (task_id, by_did, type)
);
CREATE INDEX idx_task_attestations_task_id ON task_attestations (task_id);
CREATE INDEX idx_task_attestations_created ON task_attestations (created_at);

-- Every agent has a row from registration on, so the finalizer only ever updates (in agent
-- order, under row locks: concurrent finalizers compose their EWMA steps, never lose one).
CREATE TABLE agent_reputation (
    agent_id    text PRIMARY KEY REFERENCES agents (did),
    q           double precision NOT NULL DEFAULT 0.5 CHECK (q >= 0 AND q <= 1),
    t           double precision NOT NULL DEFAULT 0.5 CHECK (t >= 0 AND t <= 1),
    r           double precision NOT NULL DEFAULT 0.5 CHECK (r >= 0 AND r <= 1),
    s           double precision NOT NULL DEFAULT 0.5 CHECK (s >= 0 AND s <= 1),
    v           double precision NOT NULL DEFAULT 0.5 CHECK (v >= 0 AND v <= 1),
    i           double precision NOT NULL DEFAULT 0.5 CHECK (i >= 0 AND i <= 1),
    e           double precision NOT NULL DEFAULT 0.5 CHECK (e >= 0 AND e <= 1),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_agent_reputation_did ON agent_reputation (agent_id);

CREATE TABLE agent_stakes (
    agent_id       text PRIMARY KEY REFERENCES agents (did),
    amount_locked  numeric(78, 0) NOT NULL DEFAULT 0 CHECK (amount_locked >= 0),
    slashed_total  numeric(78, 0) NOT NULL DEFAULT 0 CHECK (slashed_total >= 0),
    locked_until   timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_agent_stakes_updated ON agent_stakes (updated_at);

-- Every lock and slash, once per admin reference: a retried request never slashes twice.
CREATE TABLE agent_stake_events (
    id             bigserial PRIMARY KEY,
    agent_id       text NOT NULL REFERENCES agents (did),
    kind           text NOT NULL CHECK (kind IN ('lock', 'slash')),
    amount_atomic  numeric(78, 0) NOT NULL CHECK (amount_atomic > 0),
    reference      text NOT NULL,
    reason         text,
    task_id        uuid REFERENCES task_receipts (id),
    locked_until   timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_agent_stake_events_reference UNIQUE (agent_id, kind, reference)
);

-- The hourly aggregator's per-agent usefulness over its trailing window.
CREATE TABLE agent_usefulness (
    agent_id          text PRIMARY KEY REFERENCES agents (did),
    usefulness_score  double precision NOT NULL CHECK (usefulness_score >= 0),
    tasks_finalized   integer NOT NULL CHECK (tasks_finalized >= 0),
    mean_usefulness   double precision,
    window_days       integer NOT NULL,
    computed_at       timestamptz NOT NULL DEFAULT now()
);

-- The hourly reward pool: one row per settled hour (settled once), its split per agent in
-- atomic units that always add up to the pool when anyone did useful work that hour.
CREATE TABLE usefulness_reward_hours (
    hour_start          timestamptz PRIMARY KEY,
    pool_atomic         numeric(78, 0) NOT NULL CHECK (pool_atomic >= 0),
    distributed_atomic  numeric(78, 0) NOT NULL CHECK (distributed_atomic >= 0),
    agents              integer NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (distributed_atomic <= pool_atomic)
);
CREATE TABLE usefulness_credits (
    hour_start     timestamptz NOT NULL,
    agent_id       text NOT NULL REFERENCES agents (did),
    amount_atomic  numeric(78, 0) NOT NULL CHECK (amount_atomic >= 0),
    weight         double precision NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (hour_start, agent_id)
);
CREATE INDEX idx_usefulness_credits_agent ON usefulness_credits (agent_id);

-- Fixed-window request counters per (scope, identity): one row each, reset when the window
-- moves on, so the table stays the size of the set of callers.
CREATE TABLE rate_limit_hits (
    scope         text NOT NULL,
    identity      text NOT NULL,
    window_start  timestamptz NOT NULL,
    hits          integer NOT NULL CHECK (hits >= 0),
    PRIMARY KEY (scope, identity)
);

-- Derived trust: one weighted mean of the seven dimensions (weights add up to 1).
CREATE FUNCTION pou_trust(q float8, t float8, r float8, s float8, v float8, i float8, e float8)
RETURNS float8 LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 0.25 * q + 0.10 * t + 0.20 * r + 0.15 * s + 0.15 * v + 0.10 * i + 0.05 * e
$$;
