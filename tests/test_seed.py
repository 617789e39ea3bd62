"""`tally seed`'s bulk path against a real database: it must leave exactly what the award sweep
would have left, and the sweep must carry on from it."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tally.leaderboards.models import SeasonIn
from tally.leaderboards.service import create_season
from tally.local import seed as seed_mod
from tally.local.seed import seed
from tally.points import service
from tally.points.achievements import UserStats, unlocked_achievements
from tally.points.calculator import PointsInput, calculate_points, subject_rarity
from tally.points.models import AwardRunResult, VerificationIn
from tally.points.tiers import tier_for
from tally.settings import get_settings, reset_settings
from tests.conftest import _truncate
from tests.support import assert_ledger_matches_totals

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

Conn = psycopg.Connection[Any]


def award_all() -> AwardRunResult:
    """Run the real sweep until it finds nothing to do; returns the summed result."""
    total = AwardRunResult()
    while True:
        result = service.award_pending(batch_size=500)
        done = result.awarded + result.skipped + result.held + result.failed
        if done == 0:
            return total
        for name in ("awarded", "skipped", "held", "failed", "points"):
            setattr(total, name, getattr(total, name) + getattr(result, name))


def use_rules(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_settings()


def final_stats(db: Conn) -> dict[str, UserStats]:
    """PointsRepository.user_stats for every user at once."""
    rows = db.execute(
        """
        SELECT u.wallet_address, u.total_points, u.tier, u.contributor_number,
               count(s.id) AS submissions,
               count(s.id) FILTER (WHERE s.subject_rarity_multiplier >= %(rare)s)
                   AS rare_submissions,
               COALESCE(avg(s.quality_score) * 100, 0)::float8 AS average_score,
               count(s.id) FILTER (WHERE s.is_first_bulk) AS first_bulks,
               count(DISTINCT s.subject) AS distinct_subjects,
               count(s.id) FILTER (WHERE s.specificity_grade = 'A') AS grade_a_submissions,
               count(s.id) FILTER (WHERE s.verified) AS verified_submissions,
               count(DISTINCT (s.submitted_at AT TIME ZONE 'UTC')::date) AS active_days
        FROM users u
        LEFT JOIN user_submissions s ON s.wallet_address = u.wallet_address
        GROUP BY u.id
        """,
        {"rare": get_settings().points.rare_subject_multiplier},
    ).fetchall()
    return {r.pop("wallet_address"): UserStats.model_validate(r) for r in rows}


def achievements(db: Conn) -> dict[str, set[str]]:
    held: dict[str, set[str]] = defaultdict(set)
    for r in db.execute("SELECT wallet_address, achievement_key FROM user_achievements"):
        held[r["wallet_address"]].add(r["achievement_key"])
    return dict(held)


def replayed_achievements(db: Conn) -> dict[str, set[str]]:
    """What the sweep unlocks award by award: the stats after each of a wallet's submissions
    (total points including bonuses granted at earlier awards), never taking one back."""
    rules = get_settings().points
    users = {r["wallet_address"]: r for r in db.execute("SELECT * FROM users")}
    subs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in db.execute("SELECT * FROM user_submissions ORDER BY dataset_number"):
        subs[s["wallet_address"]].append(s)
    expected: dict[str, set[str]] = {}
    for wallet, rows in subs.items():
        keys: set[str] = set()
        total, tier = 0, "Contributor"
        for n in range(1, len(rows) + 1):
            prefix = rows[:n]
            total += prefix[-1]["points_earned"]
            stats = UserStats(
                total_points=total,
                tier=tier,
                submissions=n,
                rare_submissions=sum(
                    float(s["subject_rarity_multiplier"]) >= rules.rare_subject_multiplier
                    for s in prefix
                ),
                average_score=float(sum(s["quality_score"] for s in prefix) / n * 100),
                first_bulks=sum(s["is_first_bulk"] for s in prefix),
                distinct_subjects=len({s["subject"] for s in prefix}),
                grade_a_submissions=sum(s["specificity_grade"] == "A" for s in prefix),
                verified_submissions=sum(s["verified"] for s in prefix),
                active_days=len({s["submitted_at"].astimezone(UTC).date() for s in prefix}),
                contributor_number=users[wallet]["contributor_number"],
            )
            for a in unlocked_achievements(stats, rules.early_adopter_contributors):
                if a.key not in keys:
                    keys.add(a.key)
                    total += rules.achievement_bonus_points.get(a.key, 0)
            tier = tier_for(total)
        expected[wallet] = keys
    return expected


def assert_boards_match_ledger(db: Conn) -> None:
    """board_scores (and both histogram levels) are what a rebuild from the ledger gives."""
    boards = db.execute(
        """
        SELECT 'all' AS board, wallet_address, sum(points)::bigint AS points,
               count(*) FILTER (WHERE source_kind = 'dataset_submission') AS submissions
        FROM points_ledger GROUP BY wallet_address
        UNION ALL
        SELECT 'week:' || to_char(created_at AT TIME ZONE 'UTC', 'IYYY-"W"IW'), wallet_address,
               sum(points)::bigint, count(*) FILTER (WHERE source_kind = 'dataset_submission')
        FROM points_ledger GROUP BY 1, 2
        UNION ALL
        SELECT p.board, l.wallet_address, sum(l.points)::bigint,
               count(*) FILTER (WHERE l.source_kind = 'dataset_submission')
        FROM leaderboard_periods p
        JOIN points_ledger l ON l.created_at >= p.starts_at AND l.created_at < p.ends_at
        GROUP BY p.board, l.wallet_address
        ORDER BY 1, 2
        """
    ).fetchall()
    stored = db.execute(
        "SELECT board, wallet_address, points, submissions FROM board_scores ORDER BY 1, 2"
    ).fetchall()
    assert stored == boards
    for table, key in (("board_score_counts", "points"), ("board_bucket_counts", "bucket")):
        expected = db.execute(
            f"SELECT board, {'points' if key == 'points' else 'points >> 10'} AS {key}, "
            f"count(*) AS users FROM board_scores GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        # (The trigger leaves a score's row at 0 users once everyone has moved on.)
        stored_counts = db.execute(
            f"SELECT * FROM {table} WHERE users <> 0 ORDER BY 1, 2"
        ).fetchall()
        assert stored_counts == expected, table


def assert_consistent(db: Conn) -> None:
    """Invariants that hold after any mix of bulk seeding and award sweeps."""
    rules = get_settings().points
    assert_ledger_matches_totals(db)
    users = db.execute("SELECT * FROM users ORDER BY contributor_number").fetchall()
    assert users
    assert all(u["tier"] == tier_for(u["total_points"]) for u in users)
    assert [u["contributor_number"] for u in users] == list(range(1, len(users) + 1))
    counters = {r["name"]: r["value"] for r in db.execute("SELECT * FROM platform_counters")}
    assert counters["contributors"] == len(users)

    numbers = [
        r["dataset_number"]
        for r in db.execute("SELECT dataset_number FROM user_submissions ORDER BY 1")
    ]
    assert numbers == list(range(1, len(numbers) + 1))
    assert counters["datasets"] == len(numbers)
    per_wallet = db.execute(
        """
        SELECT u.wallet_address FROM users u
        LEFT JOIN user_submissions s USING (wallet_address)
        GROUP BY u.wallet_address, u.total_submissions
        HAVING u.total_submissions <> count(s.id)
        """
    ).fetchall()
    assert per_wallet == []

    cache = {r["subject"]: r for r in db.execute("SELECT * FROM subject_rarity_cache")}
    counts = {
        r["subject"]: r["n"]
        for r in db.execute("SELECT subject, count(*) AS n FROM user_submissions GROUP BY 1")
    }
    assert {s: c["dataset_count"] for s, c in cache.items()} == counts
    for subject, row in cache.items():
        tier, multiplier = subject_rarity(row["dataset_count"])
        assert (row["rarity_tier"], float(row["rarity_multiplier"])) == (tier, multiplier), subject

    # Every awarded session: one submission and one ledger entry with its points; no others.
    awarded = db.execute(
        """
        SELECT v.id, v.points_awarded, s.points_earned,
               (SELECT count(*) FROM user_submissions x WHERE x.session_id = v.id) AS subs,
               (SELECT count(*) FROM points_ledger l WHERE l.source_kind = 'dataset_submission'
                   AND l.source_id = v.id::text) AS entries,
               (SELECT sum(l.points) FROM points_ledger l WHERE l.source_kind =
                   'dataset_submission' AND l.source_id = v.id::text) AS ledger_points
        FROM verification_sessions v LEFT JOIN user_submissions s ON s.session_id = v.id
        WHERE v.points_status = 'awarded'
        """
    ).fetchall()
    assert len(awarded) == len(numbers)
    for r in awarded:
        assert (r["subs"], r["entries"]) == (1, 1), r
        assert r["points_awarded"] == r["points_earned"] == r["ledger_points"], r
    orphans = db.execute(
        """
        SELECT count(*) AS n FROM points_ledger l
        WHERE l.source_kind = 'dataset_submission' AND NOT EXISTS (
            SELECT 1 FROM verification_sessions v
            WHERE v.id::text = l.source_id AND v.points_status = 'awarded')
        """
    ).fetchone()
    assert orphans == {"n": 0}

    # First bulk: at most one per (wallet, subject), only 100+ samples, and the earliest such.
    subs = db.execute("SELECT * FROM user_submissions ORDER BY dataset_number").fetchall()
    seen: set[tuple[str, str]] = set()
    for s in subs:
        key = (s["wallet_address"], s["subject"])
        bulk = s["sample_count"] >= rules.bulk_sample_threshold
        assert s["is_first_bulk"] == (bulk and key not in seen), s["session_id"]
        if bulk:
            seen.add(key)

    # The stored award is calculate_points of the stored inputs, in platform order.
    subject_seen: dict[str, int] = defaultdict(int)
    for s in subs:
        breakdown = calculate_points(
            PointsInput(
                rarity_score=float(s["rarity_score"]),
                quality_score=float(s["quality_score"]),
                specificity_grade=s["specificity_grade"],
                verified=s["verified"],
                is_first_bulk=s["is_first_bulk"],
                subject_dataset_count=subject_seen[s["subject"]],
                dataset_number=s["dataset_number"],
            ),
            rule_version=rules.rule_version,
            min_quality_score=rules.min_quality_score,
            early_contributor_datasets=rules.early_contributor_datasets,
        )
        subject_seen[s["subject"]] += 1
        assert s["points_earned"] == breakdown.points, s["session_id"]
        assert s["points_breakdown"] == breakdown.model_dump(), s["session_id"]
        assert s["is_rare"] == (
            breakdown.subject_rarity_multiplier >= rules.rare_subject_multiplier
        )

    # The ledger's trigger kept every board and its histogram in step with the totals.
    assert_boards_match_ledger(db)

    # Achievements: what the sweep unlocks award by award, which includes everything the
    # final stats give (it never takes one back, so it may hold more, e.g. Quality Master).
    held = achievements(db)
    assert held == replayed_achievements(db)
    for wallet, stats in final_stats(db).items():
        now_unlocked = {
            a.key for a in unlocked_achievements(stats, rules.early_adopter_contributors)
        }
        assert now_unlocked <= held.get(wallet, set()), wallet


def test_seed_leaves_what_the_sweep_would_and_the_sweep_carries_on(db: Conn) -> None:
    summary = seed(users=300, pending=20, random_seed=7, now=NOW)
    assert summary["wallets"] == 300 and summary["users"] == 300  # first datasets pass the gate
    assert summary["pending"] == 20 and summary["failed"] == summary["held"] == 0
    assert summary["skipped"] > 0, "some datasets fall below the quality gate"
    sessions = db.execute(
        "SELECT count(*) AS n, count(DISTINCT wallet_address) AS w FROM verification_sessions "
        "WHERE points_status IS NOT NULL"
    ).fetchone()
    assert sessions == {"n": summary["sessions"], "w": 300}
    assert 300 <= summary["sessions"] <= 1500
    skipped = db.execute(
        "SELECT results, points_awarded, points_error FROM verification_sessions "
        "WHERE points_status = 'skipped'"
    ).fetchall()
    assert len(skipped) == summary["skipped"]
    for s in skipped:
        assert s["results"]["qualityScore"] < get_settings().points.min_quality_score
        assert (s["points_awarded"], s["points_error"]) == (0, "quality_below_minimum")
    first_bulks = db.execute(
        "SELECT count(*) AS n FROM user_submissions WHERE is_first_bulk"
    ).fetchone()
    assert first_bulks is not None and first_bulks["n"] > 0
    history = db.execute(
        "SELECT min(submitted_at) AS lo, max(submitted_at) AS hi FROM user_submissions"
    ).fetchone()
    assert history is not None and (history["hi"] - history["lo"]).days >= 60
    assert history["hi"] <= NOW
    # Every session is a payload the verifier could have posted.
    for v in db.execute("SELECT * FROM verification_sessions"):
        body = VerificationIn.model_validate(
            {
                "sessionId": v["id"],
                "metadata": v["initial_data"]["metadata"],
                "results": v["results"],
                "completedAt": v["completed_at"],
            }
        )
        assert body.results is not None and body.results.approved
        assert body.metadata.wallet_address == v["wallet_address"]
    assert_consistent(db)
    rules = get_settings().points
    # The sweep keeps achievements its final stats no longer give (an average quality that
    # dropped below 80 later): evaluating achievements once at the end would lose them.
    final = {
        wallet: {a.key for a in unlocked_achievements(stats, rules.early_adopter_contributors)}
        for wallet, stats in final_stats(db).items()
    }
    assert any(keys - final[wallet] for wallet, keys in achievements(db).items())

    pending = db.execute(
        "SELECT wallet_address FROM verification_sessions WHERE points_status IS NULL"
    ).fetchall()
    assert len(pending) == 20
    seeded = {r["wallet_address"] for r in db.execute("SELECT wallet_address FROM users")}
    assert {p["wallet_address"] for p in pending} <= seeded

    result = award_all()
    assert (result.failed, result.held) == (0, 0)
    assert result.awarded + result.skipped == 20
    left = db.execute(
        "SELECT count(*) AS n FROM verification_sessions WHERE points_status IS NULL"
    ).fetchone()
    assert left == {"n": 0}
    assert_consistent(db)


def _dump(db: Conn) -> dict[str, list[dict[str, Any]]]:
    return {
        table: db.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
        for table, order in [
            ("verification_sessions", "id"),
            ("users", "id"),
            ("user_submissions", "id"),
            ("points_ledger", "id"),
            ("user_achievements", "id"),
            ("subject_rarity_cache", "subject"),
            ("platform_counters", "name"),
        ]
    }


def test_same_random_seed_same_data(db: Conn) -> None:
    seed(users=80, pending=5, random_seed=11, now=NOW)
    first = _dump(db)
    _truncate(db)
    seed(users=80, pending=5, random_seed=11, now=NOW)
    assert _dump(db) == first
    _truncate(db)
    seed(users=80, pending=5, random_seed=12, now=NOW)
    other = _dump(db)
    assert {r["id"] for r in other["verification_sessions"]}.isdisjoint(
        r["id"] for r in first["verification_sessions"]
    )


def _outcome(db: Conn) -> dict[str, Any]:
    """Everything an award decides, without timestamps and surrogate ids."""
    return {
        "sessions": {
            r["id"]: r
            for r in db.execute(
                "SELECT id, points_status, points_awarded, points_breakdown, quality_multiplier,"
                " total_multiplier, points_attempts, points_error FROM verification_sessions"
            )
        },
        "submissions": {
            r["session_id"]: r
            for r in db.execute(
                "SELECT * FROM user_submissions",
            )
        },
        "users": {
            r["wallet_address"]: r
            for r in db.execute(
                "SELECT wallet_address, total_points, total_submissions, tier, "
                "contributor_number FROM users"
            )
        },
        "ledger": {
            (r["source_kind"], r["source_id"]): r
            for r in db.execute(
                "SELECT wallet_address, points, source_kind, source_id, rule_version, metadata "
                "FROM points_ledger"
            )
        },
        "achievements": {
            (r["wallet_address"], r["achievement_key"]): r
            for r in db.execute(
                "SELECT wallet_address, achievement_key, achievement_name, description, metadata"
                " FROM user_achievements"
            )
        },
        "subjects": db.execute(
            "SELECT subject, dataset_count, rarity_tier, rarity_multiplier "
            "FROM subject_rarity_cache ORDER BY subject"
        ).fetchall(),
        "counters": db.execute("SELECT * FROM platform_counters ORDER BY name").fetchall(),
        "flags": db.execute("SELECT count(*) AS n FROM anti_abuse_flags").fetchone(),
        # ISO week boards follow each entry's date: historical in bulk, today in the sweep.
        "boards": db.execute(
            "SELECT board, wallet_address, points, submissions FROM board_scores "
            "WHERE board NOT LIKE 'week:%' ORDER BY 1, 2"
        ).fetchall(),
        "histogram": db.execute(
            "SELECT 'score' AS level, board, points AS value, users FROM board_score_counts "
            "WHERE users <> 0 AND board NOT LIKE 'week:%' UNION ALL "
            "SELECT 'bucket', board, bucket, users FROM board_bucket_counts "
            "WHERE users <> 0 AND board NOT LIKE 'week:%' ORDER BY 1, 2, 3"
        ).fetchall(),
    }


@pytest.mark.parametrize(
    "rules",
    [
        {},
        {
            # Few early slots, a gate some first datasets fail (wallets that never become
            # users), a ceiling some awards exceed (failed, nothing counted), and bonuses that
            # count towards point achievements from the next award on.
            "POINTS_EARLY_CONTRIBUTOR_DATASETS": "40",
            "POINTS_EARLY_ADOPTER_CONTRIBUTORS": "15",
            "POINTS_MIN_QUALITY_SCORE": "0.45",
            "POINTS_MAX_POINTS_PER_AWARD": "1500",
            "POINTS_ACHIEVEMENT_BONUS_POINTS": '{"first_blood": 9000, "bulk_pioneer": 700}',
        },
    ],
    ids=["default-rules", "edge-rules"],
)
def test_bulk_path_equals_the_real_award_sweep(
    db: Conn, monkeypatch: pytest.MonkeyPatch, rules: dict[str, str]
) -> None:
    use_rules(monkeypatch, **rules)
    summary = seed(users=60, pending=0, random_seed=3, now=NOW)
    if rules:
        assert summary["failed"] > 0 and summary["users"] < 60
    bulk = _outcome(db)
    sessions = db.execute(
        "SELECT id, status, wallet_address, initial_data, results, created_at, completed_at "
        "FROM verification_sessions ORDER BY completed_at, id"
    ).fetchall()

    _truncate(db)
    with db.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO verification_sessions
                (id, status, wallet_address, initial_data, results, created_at, completed_at)
            VALUES (%(id)s, %(status)s, %(wallet_address)s, %(initial_data)s, %(results)s,
                    %(created_at)s, %(completed_at)s)
            """,
            [
                {**s, "initial_data": Jsonb(s["initial_data"]), "results": Jsonb(s["results"])}
                for s in sessions
            ],
        )
    result = award_all()
    assert result.awarded == summary["awarded"] and result.failed == summary["failed"]
    real = _outcome(db)

    for name, value in real.items():
        if name != "submissions":
            assert value == bulk[name], name
    assert real["submissions"].keys() == bulk["submissions"].keys()
    for session_id, row in real["submissions"].items():
        theirs = bulk["submissions"][session_id]
        for column, value in row.items():
            if column not in ("id", "submitted_at"):
                assert theirs[column] == value, (session_id, column)


def test_seasons_see_the_seeded_history(db: Conn) -> None:
    """Awards are dated when they completed, so a season over the past holds them: the one
    that existed while seeding (fed by the ledger's trigger) and one created afterwards
    (rebuilt from the ledger) agree week by week."""
    span = {"starts_at": NOW - timedelta(days=50), "ends_at": NOW - timedelta(days=10)}
    create_season(SeasonIn(slug="before", name="Before", **span))
    seed(users=150, pending=0, random_seed=4, now=NOW)
    create_season(SeasonIn(slug="after", name="After", **span))
    assert_boards_match_ledger(db)
    boards: dict[tuple[str, str], set[tuple[str, int, int]]] = defaultdict(set)
    for r in db.execute("SELECT board, wallet_address, points, submissions FROM board_scores"):
        if r["board"] != "all":
            season, _, week = r["board"].removeprefix("season:").partition(":")
            boards[(season, week)].add((r["wallet_address"], r["points"], r["submissions"]))
    before = {week: v for (season, week), v in boards.items() if season == "before"}
    after = {week: v for (season, week), v in boards.items() if season == "after"}
    assert before == after and len(before) >= 6  # the season and its weeks
    assert all(before.values())


def test_seeding_again_appends_new_wallets(db: Conn) -> None:
    first = seed(users=120, pending=5, random_seed=5, now=NOW)
    wallets = {r["wallet_address"] for r in db.execute("SELECT wallet_address FROM users")}
    second = seed(users=80, pending=5, random_seed=5, now=NOW)
    users = db.execute("SELECT wallet_address, contributor_number FROM users").fetchall()
    assert len(users) == first["users"] + second["users"]
    appended = [u for u in users if u["wallet_address"] not in wallets]
    assert len(appended) == second["users"]
    assert min(u["contributor_number"] for u in appended) == first["users"] + 1
    assert_consistent(db)
    result = award_all()
    assert (result.failed, result.held, result.awarded + result.skipped) == (0, 0, 10)
    assert_consistent(db)


def test_daily_cap_holds_like_the_sweep(db: Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    use_rules(monkeypatch, POINTS_DAILY_SUBMISSION_CAP="1")
    summary = seed(users=300, pending=0, random_seed=9, now=NOW)
    assert summary["held"] > 0
    held = db.execute(
        "SELECT v.id, v.wallet_address, v.completed_at, v.points_error, f.reason, f.details "
        "FROM verification_sessions v JOIN anti_abuse_flags f ON f.session_id = v.id "
        "WHERE v.points_status = 'held'"
    ).fetchall()
    assert len(held) == summary["held"]
    for h in held:
        assert (h["points_error"], h["reason"]) == ("daily_cap_exceeded", "daily_cap_exceeded")
        assert h["details"] == {"submissions_today": 1, "cap": 1}
    # Never two awarded submissions of a wallet on one UTC day.
    twice = db.execute(
        "SELECT wallet_address FROM user_submissions "
        "GROUP BY wallet_address, (submitted_at AT TIME ZONE 'UTC')::date HAVING count(*) > 1"
    ).fetchall()
    assert twice == []
    assert_consistent(db)


def test_a_failure_leaves_nothing_behind(db: Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seed_mod, "CHUNK_SESSIONS", 50)  # several chunks are written first
    calls = 0
    settle = seed_mod._Seeder.settle

    def failing(self: Any, *args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 400:
            raise RuntimeError("boom")
        settle(self, *args)

    monkeypatch.setattr(seed_mod._Seeder, "settle", failing)
    with pytest.raises(RuntimeError, match="boom"):
        seed(users=200, pending=0, random_seed=1, now=NOW)
    monkeypatch.setattr(seed_mod._Seeder, "settle", settle)
    # And a COPY the database rejects (on the writer thread) rolls back the same way.
    tables = tuple(
        (t, "no_such_column" if t == "user_submissions" else c) for t, c in seed_mod._TABLES
    )
    monkeypatch.setattr(seed_mod, "_TABLES", tables)
    with pytest.raises(psycopg.errors.UndefinedColumn):
        seed(users=200, pending=0, random_seed=1, now=NOW)
    for table in ("verification_sessions", "users", "user_submissions", "points_ledger"):
        assert db.execute(f"SELECT count(*) AS n FROM {table}").fetchone() == {"n": 0}, table
    assert {r["value"] for r in db.execute("SELECT value FROM platform_counters")} == {0}


def test_demo_season_is_created_once(db: Any) -> None:
    from tally.leaderboards import service as leaderboards
    from tally.local.seed import ensure_demo_season, has_data

    assert not has_data()
    seed(users=30, pending=0, random_seed=5)
    assert has_data()
    slug = ensure_demo_season()
    assert slug is not None and ensure_demo_season() is None
    page, _ = leaderboards.board_page(season=slug, limit=100)
    season_total = sum(e.points for e in page.items)
    ledger = db.execute("SELECT sum(points) AS p FROM points_ledger").fetchone()
    assert season_total == ledger["p"]


def test_seed_community_gives_the_community_page_data(db: Conn) -> None:
    from tally.local.seed import seed_community

    seed(users=60, pending=0, random_seed=3, now=NOW)
    first = seed_community(days=7, taps_per_user=5, random_seed=3)
    assert first["taps"] > 200
    counts = db.execute(
        "SELECT (SELECT count(*) FROM profiles) AS profiles, "
        "(SELECT count(*) FROM user_day_activity) AS days, "
        "(SELECT count(*) FROM edge_strength) AS edges, "
        "(SELECT count(*) FROM home_location_struct) AS places"
    ).fetchone()
    assert counts is not None
    assert counts["profiles"] == 60 and counts["places"] == 60
    assert counts["days"] > 0 and counts["edges"] > 0
    assert seed_community(days=7, taps_per_user=5, random_seed=3) == {"taps": 0}
    assert_ledger_matches_totals(db)
