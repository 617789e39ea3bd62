-- ISO week boards for everyone (not only inside seasons), award retries that give up, and the
-- index the first leaderboard used but board_scores replaced.

DROP INDEX idx_users_points_wallet;

-- 'week:<IYYY>-W<IW>': every ledger entry also counts on the ISO week (UTC) it was written in.
CREATE OR REPLACE FUNCTION board_scores_apply_ledger() RETURNS trigger LANGUAGE plpgsql AS $$
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

INSERT INTO board_scores (board, wallet_address, points, submissions, reached_at)
SELECT 'week:' || to_char(created_at AT TIME ZONE 'UTC', 'IYYY-"W"IW'), wallet_address,
       sum(points)::bigint, count(*) FILTER (WHERE source_kind = 'dataset_submission'),
       max(created_at)
FROM points_ledger GROUP BY 1, wallet_address;
INSERT INTO board_score_counts (board, points, users)
SELECT board, points, count(*) FROM board_scores WHERE board LIKE 'week:%' GROUP BY 1, 2;
INSERT INTO board_bucket_counts (board, bucket, users)
SELECT board, points >> 10, count(*) FROM board_scores WHERE board LIKE 'week:%' GROUP BY 1, 2;
