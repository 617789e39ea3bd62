-- Points system (seed 000): the guide's tables and columns, plus the points ledger that is the
-- source of truth for every point awarded (REFERENCE.md, "One spine").

CREATE TABLE users (
    id                  bigserial PRIMARY KEY,
    wallet_address      text NOT NULL UNIQUE,
    total_points        bigint NOT NULL DEFAULT 0 CHECK (total_points >= 0),
    total_submissions   integer NOT NULL DEFAULT 0 CHECK (total_submissions >= 0),
    tier                text NOT NULL DEFAULT 'Contributor',
    contributor_number  integer UNIQUE,
    first_submission_at timestamptz,
    last_submission_at  timestamptz,
    points_updated_at   timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_users_total_points ON users (total_points DESC);

CREATE TABLE verification_sessions (
    id                      uuid PRIMARY KEY,
    status                  text NOT NULL DEFAULT 'completed'
                            CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    wallet_address          text,
    initial_data            jsonb NOT NULL DEFAULT '{}'::jsonb,
    results                 jsonb,
    points_awarded          integer,
    points_breakdown        jsonb,
    quality_multiplier      numeric(6, 3),
    total_multiplier        numeric(12, 4),
    -- Award bookkeeping: NULL = not yet considered; see tally.points.service.
    points_status           text CHECK (points_status IN
                            ('awarded', 'skipped', 'held', 'failed', 'rejected')),
    points_attempts         integer NOT NULL DEFAULT 0,
    points_error            text,
    points_next_attempt_at  timestamptz,
    points_calculated_at    timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    completed_at            timestamptz
);
CREATE INDEX idx_verification_sessions_wallet ON verification_sessions (wallet_address);
-- The award sweep's work queue: approved, completed sessions still waiting for points.
CREATE INDEX idx_verification_sessions_award_queue
    ON verification_sessions (points_next_attempt_at NULLS FIRST, completed_at, id)
    WHERE status = 'completed' AND (points_status IS NULL OR points_status = 'failed');

CREATE TABLE user_submissions (
    id                            bigserial PRIMARY KEY,
    wallet_address                text NOT NULL REFERENCES users (wallet_address),
    session_id                    uuid NOT NULL UNIQUE REFERENCES verification_sessions (id),
    title                         text,
    subject                       text,
    sample_count                  integer NOT NULL DEFAULT 0,
    rarity_score                  numeric(6, 2) NOT NULL,
    quality_score                 numeric(5, 4) NOT NULL,
    specificity_grade             text,
    verified                      boolean NOT NULL DEFAULT false,
    content_hash                  text,
    is_first_bulk                 boolean NOT NULL DEFAULT false,
    is_rare                       boolean NOT NULL DEFAULT false,
    dataset_number                bigint NOT NULL,
    points_earned                 integer NOT NULL CHECK (points_earned >= 0),
    quality_multiplier            numeric(6, 3) NOT NULL,
    bulk_multiplier               numeric(6, 3) NOT NULL,
    subject_rarity_multiplier     numeric(6, 3) NOT NULL,
    specificity_multiplier        numeric(6, 3) NOT NULL,
    verification_multiplier       numeric(6, 3) NOT NULL,
    early_contributor_multiplier  numeric(6, 3) NOT NULL,
    total_multiplier              numeric(12, 4) NOT NULL,
    points_breakdown              jsonb NOT NULL,
    rule_version                  text NOT NULL,
    submitted_at                  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_user_submissions_wallet ON user_submissions (wallet_address);
CREATE INDEX idx_user_submissions_points ON user_submissions (points_earned DESC);
CREATE INDEX idx_user_submissions_wallet_subject ON user_submissions (wallet_address, subject);
CREATE INDEX idx_user_submissions_content_hash ON user_submissions (content_hash);
CREATE INDEX idx_user_submissions_submitted_at ON user_submissions (submitted_at);

-- Append-only: every point anyone ever got, once per (source_kind, source_id).
CREATE TABLE points_ledger (
    id              bigserial PRIMARY KEY,
    wallet_address  text NOT NULL REFERENCES users (wallet_address),
    points          bigint NOT NULL,
    source_kind     text NOT NULL,
    source_id       text NOT NULL,
    rule_version    text NOT NULL,
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_points_ledger_source UNIQUE (source_kind, source_id)
);
CREATE INDEX idx_points_ledger_wallet ON points_ledger (wallet_address, created_at);
CREATE INDEX idx_points_ledger_created_at ON points_ledger (created_at);

CREATE FUNCTION points_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'points_ledger is append-only: % is not allowed', TG_OP;
END $$;
CREATE TRIGGER trg_points_ledger_append_only
    BEFORE UPDATE OR DELETE ON points_ledger
    FOR EACH ROW EXECUTE FUNCTION points_ledger_append_only();

CREATE TABLE user_achievements (
    id                bigserial PRIMARY KEY,
    wallet_address    text NOT NULL REFERENCES users (wallet_address),
    achievement_key   text NOT NULL,
    achievement_name  text NOT NULL,
    description       text NOT NULL,
    unlocked_at       timestamptz NOT NULL DEFAULT now(),
    metadata          jsonb NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT uq_user_achievements UNIQUE (wallet_address, achievement_key)
);

CREATE TABLE leaderboard_snapshot (
    id                 bigserial PRIMARY KEY,
    snapshot_date      date NOT NULL,
    wallet_address     text NOT NULL,
    rank               integer NOT NULL,
    total_points       bigint NOT NULL,
    total_submissions  integer NOT NULL,
    tier               text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_leaderboard_snapshot UNIQUE (snapshot_date, wallet_address)
);

CREATE TABLE airdrop_eligibility (
    id                     bigserial PRIMARY KEY,
    wallet_address         text NOT NULL,
    period                 text NOT NULL,
    eligibility_score      numeric(12, 6) NOT NULL,
    allocation_percentage  numeric(12, 8) NOT NULL,
    components             jsonb NOT NULL DEFAULT '{}'::jsonb,
    calculated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_airdrop_eligibility UNIQUE (wallet_address, period)
);

CREATE TABLE subject_rarity_cache (
    subject            text PRIMARY KEY,
    dataset_count      integer NOT NULL DEFAULT 0,
    rarity_tier        text NOT NULL,
    rarity_multiplier  numeric(6, 3) NOT NULL,
    last_updated       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE anti_abuse_flags (
    id              bigserial PRIMARY KEY,
    wallet_address  text NOT NULL,
    session_id      uuid REFERENCES verification_sessions (id),
    reason          text NOT NULL,
    details         jsonb NOT NULL DEFAULT '{}'::jsonb,
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'cleared', 'rejected')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    reviewed_at     timestamptz,
    reviewed_by     text,
    CONSTRAINT uq_anti_abuse_flags_session_reason UNIQUE (session_id, reason)
);
CREATE INDEX idx_anti_abuse_flags_open ON anti_abuse_flags (created_at) WHERE status = 'open';
CREATE INDEX idx_anti_abuse_flags_wallet ON anti_abuse_flags (wallet_address);

-- Monotonic counters taken under a row lock, so "the first 100 datasets" is exact even with two
-- award sweeps running at once.
CREATE TABLE platform_counters (
    name   text PRIMARY KEY,
    value  bigint NOT NULL DEFAULT 0
);
INSERT INTO platform_counters (name, value) VALUES ('datasets', 0), ('contributors', 0);
