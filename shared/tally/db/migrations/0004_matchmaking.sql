-- Matchmaking decided by community vote (seed 002): a generation queue of scored pairs,
-- proposals in voting with assigned voters, votes, conversations for approved pairs, and the
-- jobs' metrics. Column names are the guide's, so its health, duplicate and metrics queries run
-- unchanged. Members are the profiles of 0003 (address = wallet address).

-- A pair is queued or in a live proposal at most once at a time, across both tables: the row
-- here is taken when the pair is queued and given back when its proposal is rejected or expires
-- (an approved or blocked pair keeps it: it is never proposed again).
CREATE TABLE match_pair_claims (
    pair_hash   text PRIMARY KEY,
    claimed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE match_generation_queue (
    id                   bigserial PRIMARY KEY,
    user_a_address       text NOT NULL,
    user_b_address       text NOT NULL,
    pair_hash            text NOT NULL,
    compatibility_score  double precision NOT NULL
                         CHECK (compatibility_score >= 0 AND compatibility_score <= 1),
    reasons              jsonb NOT NULL DEFAULT '[]'::jsonb,
    scorer               text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    consumed_at          timestamptz,
    CHECK (user_a_address < user_b_address)
);
CREATE UNIQUE INDEX uq_match_generation_queue_pending
    ON match_generation_queue (pair_hash) WHERE consumed_at IS NULL;
CREATE INDEX idx_match_generation_queue_best
    ON match_generation_queue (compatibility_score DESC, id) WHERE consumed_at IS NULL;

CREATE TABLE match_proposals (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    queue_id             bigint UNIQUE REFERENCES match_generation_queue (id),
    user_a_address       text NOT NULL,
    user_b_address       text NOT NULL,
    pair_hash            text NOT NULL,
    compatibility_score  double precision NOT NULL,
    reasons              jsonb NOT NULL DEFAULT '[]'::jsonb,
    status               text NOT NULL DEFAULT 'proposed' CHECK (status IN
                         ('proposed', 'voting', 'approved', 'rejected', 'expired', 'blocked')),
    yes_votes            integer NOT NULL DEFAULT 0 CHECK (yes_votes >= 0),
    no_votes             integer NOT NULL DEFAULT 0 CHECK (no_votes >= 0),
    voters_target        integer NOT NULL CHECK (voters_target > 0),
    created_at           timestamptz NOT NULL DEFAULT now(),
    voting_started_at    timestamptz,
    voting_expires_at    timestamptz,
    finalized_at         timestamptz,
    finalized_by         text CHECK (finalized_by IN ('threshold', 'expiry', 'admin')),
    blocked_reason       text,
    CHECK (user_a_address < user_b_address),
    CHECK ((status IN ('proposed', 'voting')) = (finalized_at IS NULL))
);
-- The database makes a second live proposal for a pair impossible.
CREATE UNIQUE INDEX uq_match_proposals_live_pair
    ON match_proposals (pair_hash) WHERE status NOT IN ('rejected', 'expired');
CREATE INDEX idx_match_proposals_voting
    ON match_proposals (voting_expires_at) WHERE status = 'voting';
CREATE INDEX idx_match_proposals_pair_history ON match_proposals (pair_hash, finalized_at);

CREATE TABLE voter_assignments (
    id             bigserial PRIMARY KEY,
    proposal_id    uuid NOT NULL REFERENCES match_proposals (id),
    voter_address  text NOT NULL,
    assigned_at    timestamptz NOT NULL DEFAULT now(),
    voted_at       timestamptz,
    -- set when the proposal is decided before this voter voted: the seat is gone
    closed_at      timestamptz,
    UNIQUE (proposal_id, voter_address)
);
-- Open seats only: the index stays the size of the work in progress, not of the history.
CREATE INDEX idx_voter_assignments_open
    ON voter_assignments (voter_address, assigned_at)
    WHERE voted_at IS NULL AND closed_at IS NULL;

CREATE TABLE match_votes (
    id             bigserial PRIMARY KEY,
    proposal_id    uuid NOT NULL REFERENCES match_proposals (id),
    voter_address  text NOT NULL,
    vote           text NOT NULL CHECK (vote IN ('yes', 'no')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (proposal_id, voter_address)
);

CREATE TABLE conversations (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    proposal_id     uuid NOT NULL UNIQUE REFERENCES match_proposals (id),
    user_a_address  text NOT NULL,
    user_b_address  text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_conversations_user_a ON conversations (user_a_address, created_at);
CREATE INDEX idx_conversations_user_b ON conversations (user_b_address, created_at);

-- One row per job run: what the system looked like when it finished.
CREATE TABLE system_metrics (
    id               bigserial PRIMARY KEY,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    job              text NOT NULL,
    queue_depth      integer NOT NULL,
    active_voting    integer NOT NULL,
    stuck_proposals  integer NOT NULL,
    votes_cast       bigint NOT NULL,
    details          jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX idx_system_metrics_recorded_at ON system_metrics (recorded_at DESC);
