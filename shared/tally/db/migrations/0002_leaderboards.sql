-- Leaderboards (seed 003 and the leaderboard API of seed 000): every board is derived from the
-- points ledger by a statement-level trigger, and keeps a two-level score histogram so that an
-- exact, live rank costs two small index range sums instead of a count over the board.

CREATE TABLE seasons (
    id          bigserial PRIMARY KEY,
    slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name        text NOT NULL,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    closed_at   timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);

-- Every time-bound board: a season, and each ISO week (Monday to Monday, UTC) of a season,
-- clipped to the season so that a season's total is the sum of its weeks.
CREATE TABLE leaderboard_periods (
    board        text PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('season', 'week')),
    season_id    bigint NOT NULL REFERENCES seasons (id) ON DELETE CASCADE,
    week_number  integer CHECK ((kind = 'week') = (week_number IS NOT NULL)),
    starts_at    timestamptz NOT NULL,
    ends_at      timestamptz NOT NULL,
    closed_at    timestamptz,
    CHECK (ends_at > starts_at)
);
CREATE INDEX idx_leaderboard_periods_open
    ON leaderboard_periods (starts_at, ends_at) WHERE closed_at IS NULL;
CREATE UNIQUE INDEX uq_leaderboard_periods_week
    ON leaderboard_periods (season_id, week_number) WHERE kind = 'week';

-- One row per (board, user): 'all' for all time, 'week:<IYYY>-W<IW>', 'season:<slug>',
-- 'season:<slug>:w<N>'.
CREATE TABLE board_scores (
    board           text NOT NULL,
    wallet_address  text NOT NULL,
    points          bigint NOT NULL DEFAULT 0,
    submissions     integer NOT NULL DEFAULT 0,
    reached_at      timestamptz NOT NULL,
    PRIMARY KEY (board, wallet_address)
);
CREATE INDEX idx_board_scores_rank ON board_scores (board, points DESC, wallet_address);
CREATE INDEX idx_board_scores_earliest
    ON board_scores (board, points DESC, reached_at, wallet_address);
CREATE INDEX idx_board_scores_submissions
    ON board_scores (board, points DESC, submissions DESC, wallet_address);

-- How many users hold each score, and each 1024-point bucket of scores.
CREATE TABLE board_score_counts (
    board   text NOT NULL,
    points  bigint NOT NULL,
    users   bigint NOT NULL,
    PRIMARY KEY (board, points)
);
CREATE TABLE board_bucket_counts (
    board   text NOT NULL,
    bucket  bigint NOT NULL,
    users   bigint NOT NULL,
    PRIMARY KEY (board, bucket)
);

-- Apply a batch of new ledger entries, set-based, to every board they count on: all time, the
-- ISO week (UTC) they were written in ('week:<IYYY>-W<IW>') and every open season period.
CREATE FUNCTION board_scores_apply_ledger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH entry_boards AS (
        SELECT 'all'::text AS board, n.wallet_address, n.points, n.source_kind, n.created_at
        FROM new_entries n
        UNION ALL
        SELECT 'week:' || to_char(n.created_at AT TIME ZONE 'UTC', 'IYYY-"W"IW'),
               n.wallet_address, n.points, n.source_kind, n.created_at
        FROM new_entries n
        UNION ALL
        SELECT p.board, n.wallet_address, n.points, n.source_kind, n.created_at
        FROM new_entries n
        JOIN leaderboard_periods p
          ON n.created_at >= p.starts_at AND n.created_at < p.ends_at AND p.closed_at IS NULL
    ), deltas AS (
        SELECT board, wallet_address, sum(points)::bigint AS points,
               count(*) FILTER (WHERE source_kind = 'dataset_submission') AS submissions,
               max(created_at) AS at
        FROM entry_boards
        GROUP BY board, wallet_address
    ), applied AS (
        INSERT INTO board_scores AS s (board, wallet_address, points, submissions, reached_at)
        SELECT board, wallet_address, points, submissions, at FROM deltas
        ORDER BY board, wallet_address
        ON CONFLICT (board, wallet_address) DO UPDATE
            SET points = s.points + EXCLUDED.points,
                submissions = s.submissions + EXCLUDED.submissions,
                reached_at = CASE WHEN EXCLUDED.points <> 0 THEN EXCLUDED.reached_at
                                  ELSE s.reached_at END
        RETURNING s.board, s.wallet_address, s.points AS new_points, (s.xmax::text = '0') AS inserted
    ), moves AS (
        SELECT a.board, a.new_points, a.inserted, d.points AS delta
        FROM applied a JOIN deltas d USING (board, wallet_address)
    ), changes AS (
        SELECT board, new_points - delta AS points, -1 AS users
        FROM moves WHERE NOT inserted AND delta <> 0
        UNION ALL
        SELECT board, new_points, 1 FROM moves WHERE inserted OR delta <> 0
    ), per_score AS (
        SELECT board, points, sum(users)::bigint AS users FROM changes
        GROUP BY board, points HAVING sum(users) <> 0
    ), scores AS (
        INSERT INTO board_score_counts AS c (board, points, users)
        SELECT board, points, users FROM per_score ORDER BY board, points
        ON CONFLICT (board, points) DO UPDATE SET users = c.users + EXCLUDED.users
    )
    INSERT INTO board_bucket_counts AS b (board, bucket, users)
    SELECT board, points >> 10, sum(users) FROM per_score
    GROUP BY board, points >> 10 HAVING sum(users) <> 0
    ORDER BY 1, 2
    ON CONFLICT (board, bucket) DO UPDATE SET users = b.users + EXCLUDED.users;
    RETURN NULL;
END $$;

CREATE TRIGGER trg_points_ledger_boards
    AFTER INSERT ON points_ledger
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION board_scores_apply_ledger();

-- The all-time and ISO week boards of a database that already has a ledger.
INSERT INTO board_scores (board, wallet_address, points, submissions, reached_at)
SELECT board, wallet_address, sum(points)::bigint,
       count(*) FILTER (WHERE source_kind = 'dataset_submission'), max(created_at)
FROM points_ledger,
     LATERAL (VALUES ('all'), ('week:' || to_char(created_at AT TIME ZONE 'UTC', 'IYYY-"W"IW')))
         AS b(board)
GROUP BY board, wallet_address;
INSERT INTO board_score_counts (board, points, users)
SELECT board, points, count(*) FROM board_scores GROUP BY board, points;
INSERT INTO board_bucket_counts (board, bucket, users)
SELECT board, points >> 10, count(*) FROM board_scores GROUP BY board, points >> 10;

-- Rank by points at the top of a board: 1 + users in higher buckets + users with a higher
-- score in the same bucket. Both sums read at most ~1024 small index entries.
CREATE FUNCTION board_rank(p_board text, p_points bigint) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT 1
        + COALESCE((SELECT sum(users) FROM board_bucket_counts
                    WHERE board = p_board AND bucket > (p_points >> 10)), 0)
        + COALESCE((SELECT sum(users) FROM board_score_counts
                    WHERE board = p_board AND points > p_points
                      AND points < (((p_points >> 10) + 1) << 10)), 0)
$$;

-- The guide's seasonal leaderboards also want a daily snapshot and a per-day lookup by date.
CREATE INDEX idx_leaderboard_snapshot_rank ON leaderboard_snapshot (snapshot_date, rank);
CREATE INDEX idx_airdrop_eligibility_period ON airdrop_eligibility (period, allocation_percentage DESC);
