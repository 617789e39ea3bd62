-- Community activity (seed 001): raw taps between users, and the nine tables the nightly ETL
-- keeps under the guide's names, so its health-check queries run unchanged.

-- Who the ids in taps are: a display name, a free-text location and an IANA time zone (the
-- zone decides where each of the user's days and weeks begins).
CREATE TABLE profiles (
    address       text PRIMARY KEY,
    display_name  text,
    location      text,
    timezone      text NOT NULL DEFAULT 'UTC',
    attributes    jsonb NOT NULL DEFAULT '{}'::jsonb,
    opt_in        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX idx_profiles_updated_at ON profiles (updated_at);

-- A zone this server cannot use would stop every rollup that touches the user: refuse it here
-- (22023, a client error) rather than at 2 a.m.
CREATE FUNCTION profiles_check_timezone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM now() AT TIME ZONE NEW.timezone;
    RETURN NEW;
END $$;
CREATE TRIGGER trg_profiles_check_timezone
    BEFORE INSERT OR UPDATE OF timezone ON profiles
    FOR EACH ROW EXECUTE FUNCTION profiles_check_timezone();

-- One row when two users interact. client_tap_id makes a resent batch harmless; received_at
-- (the clock when the row was written) is what the nightly job's watermark follows, so a tap
-- that arrives late for an old day is still rolled up.
CREATE TABLE taps (
    id             bigserial PRIMARY KEY,
    client_tap_id  text NOT NULL UNIQUE,
    id1            text NOT NULL,
    id2            text NOT NULL,
    user_a         text GENERATED ALWAYS AS (LEAST(id1, id2)) STORED,
    user_b         text GENERATED ALWAYS AS (GREATEST(id1, id2)) STORED,
    time           timestamptz NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (id1 <> id2)
);
CREATE INDEX idx_taps_time ON taps (time);
CREATE INDEX idx_taps_received_at ON taps (received_at);
CREATE INDEX idx_taps_pair_time ON taps (user_a, user_b, time);
CREATE INDEX idx_taps_id1_time ON taps (id1, time) INCLUDE (id2);
CREATE INDEX idx_taps_id2_time ON taps (id2, time) INCLUDE (id1);

-- Each tap seen from both ends: "user_id met other_id at time". Joins on user_id and a time
-- range become two index range scans.
CREATE VIEW tap_sides AS
    SELECT id1 AS user_id, id2 AS other_id, time FROM taps
    UNION ALL
    SELECT id2 AS user_id, id1 AS other_id, time FROM taps;

-- The guide's formula: 0.6*ln(1+taps) + 0.4*exp(-days_since_last_tap/21).
CREATE FUNCTION tap_strength(taps integer, last_tap_at timestamptz, at timestamptz)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 0.6 * ln(1 + taps)
         + 0.4 * exp(-greatest(extract(epoch FROM at - last_tap_at), 0) / 86400.0 / 21.0)
$$;

-- A user's zone, UTC for strangers.
CREATE FUNCTION user_zone(address text) RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce((SELECT p.timezone FROM profiles p WHERE p.address = $1), 'UTC')
$$;

-- Pairs (user_a < user_b) over a rolling 90 days. taps_90d counts taps with time inside the
-- window that ends at the job's watermark; it is kept incrementally from the taps entering and
-- leaving the window. `strength` is exact as of last_updated_at; the recency term decays every
-- day for every pair, so reads compute tap_strength(taps_90d, last_tap_at, now()) instead of
-- the job rewriting every pair every night. A pair's row outlives its window (taps_90d = 0),
-- remembering first_tap_at.
CREATE TABLE edge_strength (
    user_a           text NOT NULL,
    user_b           text NOT NULL,
    taps_90d         integer NOT NULL DEFAULT 0 CHECK (taps_90d >= 0),
    first_tap_at     timestamptz NOT NULL,
    last_tap_at      timestamptz NOT NULL,
    strength         double precision NOT NULL,
    last_updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_a, user_b),
    CHECK (user_a < user_b)
);
CREATE INDEX idx_edge_strength_user_b ON edge_strength (user_b, user_a) WHERE taps_90d > 0;
CREATE INDEX idx_edge_strength_user_a ON edge_strength (user_a, user_b) WHERE taps_90d > 0;

-- Each pair seen from both ends: "user_id's connection to other_id".
CREATE VIEW edge_sides AS
    SELECT user_a AS user_id, user_b AS other_id, taps_90d, first_tap_at, last_tap_at
    FROM edge_strength
    UNION ALL
    SELECT user_b AS user_id, user_a AS other_id, taps_90d, first_tap_at, last_tap_at
    FROM edge_strength;

-- Days and ISO weeks (Monday) in each user's own zone. second_degree_reach: distinct people
-- the user's counterparts met in the same day (week) whom the user did not meet in it.
-- streak_length: the run of consecutive active days that ends on this day.
CREATE TABLE user_day_activity (
    user_id               text NOT NULL,
    day                   date NOT NULL,
    taps                  integer NOT NULL,
    distinct_counterparts integer NOT NULL,
    new_connections       integer NOT NULL,
    second_degree_reach   integer NOT NULL,
    streak_length         integer NOT NULL DEFAULT 1,
    last_updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, day)
);
CREATE INDEX idx_user_day_activity_day ON user_day_activity (day);

CREATE TABLE user_week_activity (
    user_id               text NOT NULL,
    week_start            date NOT NULL,
    taps                  integer NOT NULL,
    distinct_counterparts integer NOT NULL,
    new_connections       integer NOT NULL,
    second_degree_reach   integer NOT NULL,
    active_days           integer NOT NULL,
    last_updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, week_start)
);
CREATE INDEX idx_user_week_activity_week ON user_week_activity (week_start);

-- current_streak is 0 once a whole local day has passed without activity.
CREATE TABLE user_streaks (
    user_id          text PRIMARY KEY,
    current_streak   integer NOT NULL,
    longest_streak   integer NOT NULL,
    last_active_day  date,
    timezone         text NOT NULL,
    last_updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_user_streaks_live ON user_streaks (last_active_day) WHERE current_streak > 0;

CREATE TABLE weekly_leaderboard (
    week_start            date NOT NULL,
    user_id               text NOT NULL,
    new_connections       integer NOT NULL,
    second_degree_growth  integer NOT NULL,
    streak_days           integer NOT NULL,
    rank                  integer NOT NULL,
    last_updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (week_start, user_id)
);
CREATE INDEX idx_weekly_leaderboard_rank ON weekly_leaderboard (week_start, rank, user_id);

CREATE TABLE quest_definitions (
    id             bigserial PRIMARY KEY,
    slug           text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    title          text NOT NULL,
    description    text NOT NULL DEFAULT '',
    unit           text NOT NULL CHECK (unit IN
                   ('taps', 'distinct_counterparts', 'new_connections', 'active_days')),
    target         integer NOT NULL CHECK (target > 0),
    period         text NOT NULL DEFAULT 'week' CHECK (period IN ('week')),
    reward_points  integer NOT NULL DEFAULT 0 CHECK (reward_points >= 0),
    active         boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
INSERT INTO quest_definitions (slug, title, description, unit, target, reward_points)
VALUES ('weekly-25-taps', 'Weekly goal', 'Tap 25 times this week', 'taps', 25, 100);

-- One row per user, quest and period; completed_at is set once, when progress first reaches
-- the target, and the quest's reward is a ledger entry ('quest', '<quest>:<user>:<period>').
CREATE TABLE user_quest_progress (
    user_id          text NOT NULL,
    quest_id         bigint NOT NULL REFERENCES quest_definitions (id),
    period_start     date NOT NULL,
    progress         integer NOT NULL,
    target           integer NOT NULL,
    completed_at     timestamptz,
    last_updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, quest_id, period_start)
);
CREATE INDEX idx_user_quest_progress_period ON user_quest_progress (quest_id, period_start);

-- UTC hours whose taps are well above the trailing week's hourly average.
CREATE TABLE surge_windows (
    window_start     timestamptz PRIMARY KEY,
    window_end       timestamptz NOT NULL,
    taps             integer NOT NULL,
    unique_users     integer NOT NULL,
    baseline         double precision NOT NULL,
    multiplier       double precision NOT NULL,
    last_updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE home_location_struct (
    user_id          text PRIMARY KEY,
    raw_location     text NOT NULL,
    city             text,
    region           text,
    country          text,
    last_updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_home_location_struct_place ON home_location_struct (country, region, city);

-- Where each ETL stage got to: it has applied every tap received before received_upto (or,
-- for locations, every profile updated before it; NULL: nothing yet). edges also records the
-- start of the 90-day window its counts describe.
CREATE TABLE etl_watermarks (
    stage          text PRIMARY KEY,
    received_upto  timestamptz,
    window_start   timestamptz,
    last_run_at    timestamptz,
    last_rows      bigint NOT NULL DEFAULT 0
);
INSERT INTO etl_watermarks (stage)
VALUES ('edges'), ('days'), ('weeks'), ('streaks'), ('leaderboard'), ('quests'), ('surges'),
       ('locations');

-- Rebuilds of a date range asked for through the admin route; the ETL function works through
-- them a chunk of days at a time, so a long range survives a Lambda's time limit.
CREATE TABLE community_backfills (
    id            uuid PRIMARY KEY,
    from_day      date NOT NULL,
    to_day        date NOT NULL,
    next_day      date NOT NULL,
    status        text NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'running', 'done', 'failed')),
    requested_by  text,
    error         text,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    CHECK (to_day >= from_day)
);
