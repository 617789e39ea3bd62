"""Leaderboards against real PostgreSQL: ranking properties, periods, stats, jobs, exports."""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tally.leaderboards import service
from tally.leaderboards.boards import Tiebreak, season_weeks
from tally.leaderboards.models import SeasonIn, SeasonUpdate
from tests.conftest import _truncate
from tests.support import run_concurrently

Conn = psycopg.Connection[dict[str, Any]]
T0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday

_source = iter(range(10**9))


def credit(
    db: Conn, wallet: str, points: int, at: datetime | None = None, kind: str = "test"
) -> None:
    """A ledger entry, as any subsystem that gives points writes one."""
    db.execute("INSERT INTO users (wallet_address) VALUES (%s) ON CONFLICT DO NOTHING", (wallet,))
    db.execute(
        "INSERT INTO points_ledger (wallet_address, points, source_kind, source_id, "
        "rule_version, created_at) VALUES (%s, %s, %s, %s, 'v1', COALESCE(%s, now()))",
        (wallet, points, kind, str(next(_source)), at),
    )


def whole_board(**kwargs: Any) -> list[Any]:
    items: list[Any] = []
    cursor = None
    while True:
        page, _ = service.board_page(cursor=cursor, **kwargs)
        items.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return items


def competition_ranks(totals: dict[str, int]) -> dict[str, int]:
    return {w: 1 + sum(1 for v in totals.values() if v > p) for w, p in totals.items()}


def make_season(slug: str = "s1", start: datetime = T0, days: int = 21) -> None:
    service.create_season(
        SeasonIn(
            slug=slug, name=slug.upper(), starts_at=start, ends_at=start + timedelta(days=days)
        )
    )


# -- ranking properties ----------------------------------------------------------------------

entries = st.lists(
    st.tuples(st.integers(0, 11), st.sampled_from([1, 5, 10, 500, 1024, 2000, 5000])),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entries=entries, page_size=st.integers(1, 7), size=st.integers(1, 4))
def test_ranking_properties(
    db: Conn, entries: list[tuple[int, int]], page_size: int, size: int
) -> None:
    _truncate(db)
    totals: dict[str, int] = defaultdict(int)
    for who, points in entries:
        wallet = f"0xw{who:03d}"
        credit(db, wallet, points)
        totals[wallet] += points
    board = whole_board(limit=page_size)
    expected = competition_ranks(totals)
    # A permutation of the users, ordered by points, ranked 1, 2, 2, 4 ...
    assert sorted(e.wallet_address for e in board) == sorted(totals)
    assert [e.points for e in board] == sorted(totals.values(), reverse=True)
    assert {e.wallet_address: e.rank for e in board} == expected
    for before, after in itertools.pairwise(board):
        if before.points == after.points:
            assert before.rank == after.rank and before.is_tied and after.is_tied
        else:
            # The next distinct rank skips past everyone tied above it.
            assert after.rank == 1 + sum(1 for v in totals.values() if v > after.points)
    assert all(e.is_tied == (list(totals.values()).count(e.points) > 1) for e in board)
    # Around-me is a window of the full board.
    for index, me in enumerate(board):
        window, _ = service.around(me.wallet_address, size=size)
        lo = max(0, index - size)
        assert [*window.above, window.user, *window.below] == board[lo : index + size + 1]
        assert service.rank_of(me.wallet_address) == (me.rank, me.is_tied)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    offsets=st.lists(
        st.tuples(st.integers(0, 5), st.integers(-3 * 86400, 30 * 86400), st.integers(1, 300)),
        min_size=1,
        max_size=30,
    ),
    start_shift=st.integers(0, 6 * 86400),
    days=st.integers(1, 24),
)
def test_season_totals_equal_the_sum_of_their_weeks(
    db: Conn, offsets: list[tuple[int, int, int]], start_shift: int, days: int
) -> None:
    _truncate(db)
    start = T0 + timedelta(seconds=start_shift)
    end = start + timedelta(days=days)
    make_season("prop", start, days)
    in_season: dict[str, int] = defaultdict(int)
    for who, offset, points in offsets:
        at = start + timedelta(seconds=offset)
        credit(db, f"0xp{who}", points, at)
        if start <= at < end:
            in_season[f"0xp{who}"] += points
    season = {e.wallet_address: e.points for e in whole_board(season="prop", limit=50)}
    assert season == dict(in_season)
    weeks: dict[str, int] = defaultdict(int)
    for week in season_weeks(start, end):
        for e in whole_board(season="prop", week=week.number, limit=50):
            weeks[e.wallet_address] += e.points
    assert dict(weeks) == season


@pytest.mark.parametrize("mode", [Tiebreak.EARLIEST, Tiebreak.SUBMISSIONS])
def test_secondary_keys_break_ties(db: Conn, mode: Tiebreak) -> None:
    credit(db, "0xfirst", 100, T0, kind="dataset_submission")
    credit(db, "0xsecond", 60, T0 + timedelta(hours=1), kind="dataset_submission")
    credit(db, "0xsecond", 40, T0 + timedelta(hours=2), kind="dataset_submission")
    credit(db, "0xthird", 100, T0 + timedelta(hours=3))
    credit(db, "0xlast", 10, T0)
    board = whole_board(limit=2, tiebreak=mode.value)
    order = [e.wallet_address for e in board]
    if mode is Tiebreak.EARLIEST:
        assert order == ["0xfirst", "0xsecond", "0xthird", "0xlast"]
    else:
        assert order == ["0xsecond", "0xfirst", "0xthird", "0xlast"]
    assert [e.rank for e in board] == [1, 2, 3, 4]
    assert not any(e.is_tied for e in board)
    window, _ = service.around(order[1], size=1, tiebreak=mode.value)
    assert [e.wallet_address for e in (*window.above, window.user, *window.below)] == order[:3]
    assert window.user.rank == 2


def test_cursor_from_another_ordering_is_refused(db: Conn) -> None:
    from tally.errors import InvalidInput

    for i in range(3):
        credit(db, f"0xc{i}", 10 * i)
    page, _ = service.board_page(limit=1)
    assert page.next_cursor
    with pytest.raises(InvalidInput):
        service.board_page(limit=1, cursor=page.next_cursor, tiebreak="earliest")


# -- periods ---------------------------------------------------------------------------------


def test_weeks_are_iso_weeks_clipped_to_the_season() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)  # a Thursday
    weeks = season_weeks(start, datetime(2026, 1, 20, tzinfo=UTC))
    assert [
        (w.number, w.starts_at.date().isoformat(), w.ends_at.date().isoformat()) for w in weeks
    ] == [
        (1, "2026-01-01", "2026-01-05"),
        (2, "2026-01-05", "2026-01-12"),
        (3, "2026-01-12", "2026-01-19"),
        (4, "2026-01-19", "2026-01-20"),
    ]


def test_period_boundaries_are_utc_and_half_open(db: Conn) -> None:
    make_season("edge", T0, 14)
    credit(db, "0xbefore", 1, T0 - timedelta(microseconds=1))
    credit(db, "0xstart", 2, T0)
    credit(db, "0xsunday", 3, T0 + timedelta(days=7) - timedelta(microseconds=1))
    credit(db, "0xmonday", 4, T0 + timedelta(days=7))
    credit(db, "0xend", 5, T0 + timedelta(days=14))
    # The same instant written with another offset is the same moment in UTC.
    credit(db, "0xoffset", 6, datetime.fromisoformat("2026-03-08T23:30:00-05:00"))
    season = {e.wallet_address for e in whole_board(season="edge")}
    week1 = {e.wallet_address for e in whole_board(season="edge", week=1)}
    week2 = {e.wallet_address for e in whole_board(season="edge", week=2)}
    assert season == {"0xstart", "0xsunday", "0xmonday", "0xoffset"}
    assert week1 == {"0xstart", "0xsunday"}
    assert week2 == {"0xmonday", "0xoffset"}  # 2026-03-09 04:30 UTC is in week 2


def test_season_created_later_is_rebuilt_from_the_ledger(db: Conn) -> None:
    from tally.errors import Conflict

    credit(db, "0xold", 70, T0 + timedelta(days=1))
    credit(db, "0xold", 30, T0 + timedelta(days=8))
    make_season("late", T0, 14)
    assert [(e.wallet_address, e.points) for e in whole_board(season="late")] == [("0xold", 100)]
    assert whole_board(season="late", week=2)[0].points == 30
    _, before = service.board_page(season="late")
    # History is fixed: a started season cannot move its start or end in the past.
    with pytest.raises(Conflict):
        service.update_season("late", SeasonUpdate(ends_at=T0 + timedelta(days=7)))
    with pytest.raises(Conflict):
        service.update_season("late", SeasonUpdate(starts_at=T0 + timedelta(days=1)))
    renamed = service.update_season("late", SeasonUpdate(name="Renamed"))
    assert renamed.name == "Renamed" and renamed.weeks == 2
    page, after = service.board_page(season="late")
    assert page.items[0].points == 100
    assert after != before  # an edit changes the ETag's version


def test_future_season_can_move_and_is_rebuilt(db: Conn) -> None:
    start = datetime.now(UTC) + timedelta(days=10)
    make_season("soon", start, 14)
    moved = service.update_season(
        "soon",
        SeasonUpdate(starts_at=start + timedelta(days=7), ends_at=start + timedelta(days=35)),
    )
    assert moved.weeks == len(season_weeks(start + timedelta(days=7), start + timedelta(days=35)))
    from tally.errors import InvalidInput

    with pytest.raises(InvalidInput):
        service.update_season("soon", SeasonUpdate(ends_at=start))


def test_extending_a_started_season_keeps_its_closed_weeks(db: Conn) -> None:
    now = datetime.now(UTC)
    start = (now - timedelta(days=now.weekday() + 14)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    make_season("run", start, 21)  # weeks 1 and 2 are over, week 3 is this week
    credit(db, "0xa", 10, start + timedelta(days=1))
    service.close_periods()
    credit(db, "0xlate", 99, start + timedelta(days=2))  # back-dated into closed week 1
    week1 = service.board_page(season="run", week=1)[0]
    assert week1.closed and [e.wallet_address for e in week1.items] == ["0xa"]
    extended = service.update_season("run", SeasonUpdate(ends_at=start + timedelta(days=35)))
    assert extended.weeks == 5
    again = service.board_page(season="run", week=1)[0]
    assert again.closed and [e.wallet_address for e in again.items] == ["0xa"]
    assert not service.board_page(season="run", week=5)[0].closed
    shortened = service.update_season("run", SeasonUpdate(ends_at=start + timedelta(days=22)))
    assert shortened.weeks == 4
    from tally.errors import NotFound

    with pytest.raises(NotFound):
        service.board_page(season="run", week=5)


def test_iso_week_boards_need_no_season(db: Conn) -> None:
    credit(db, "0xiso", 5, datetime(2026, 3, 4, tzinfo=UTC))  # 2026-W10
    credit(db, "0xiso", 7, datetime(2026, 3, 9, tzinfo=UTC))  # 2026-W11
    page, version = service.board_page(iso_week=(2026, 10))
    assert [(e.wallet_address, e.points) for e in page.items] == [("0xiso", 5)]
    assert page.closed and version.startswith("closed")
    from tally.errors import NotFound

    with pytest.raises(NotFound):
        service.board_page(iso_week=(2026, 54))


def test_closed_period_is_frozen_and_readable(db: Conn) -> None:
    past = datetime.now(UTC) - timedelta(days=30)
    make_season("past", past, 7)
    credit(db, "0xa", 10, past + timedelta(days=1))
    result = service.close_periods()
    assert result.ran and "season:past" in result.detail["closed"]
    assert service.close_periods().rows == 0  # a second run has nothing to do
    # A late entry dated inside the closed season does not move its frozen board.
    credit(db, "0xb", 99, past + timedelta(days=2))
    page, version = service.board_page(season="past")
    assert page.closed and [(e.wallet_address, e.points) for e in page.items] == [("0xa", 10)]
    assert version.startswith("closed")
    from tally.errors import Conflict

    with pytest.raises(Conflict):
        service.update_season("past", SeasonUpdate(name="renamed"))


def test_season_admin_validation(db: Conn) -> None:
    from pydantic import ValidationError

    from tally.errors import Conflict

    make_season("dup")
    with pytest.raises(Conflict):
        make_season("dup")
    with pytest.raises(ValidationError):
        SeasonIn(slug="x", name="x", starts_at=T0, ends_at=T0)
    with pytest.raises(ValidationError):
        SeasonIn(slug="Bad Slug", name="x", starts_at=T0, ends_at=T0 + timedelta(days=1))
    with pytest.raises(ValidationError):
        SeasonIn(
            slug="naive", name="x", starts_at=datetime(2026, 1, 1), ends_at=datetime(2026, 2, 1)
        )
    listed = service.list_seasons()
    assert [(s.slug, s.weeks) for s in listed] == [("dup", 3)]


# -- stats -----------------------------------------------------------------------------------


def test_streaks() -> None:
    assert service.streaks([]) == (0, 0)
    assert service.streaks([True, True, False, True]) == (1, 2)
    assert service.streaks([True, True, True, False]) == (3, 3)  # this week not over yet
    assert service.streaks([True, False, False]) == (0, 1)


def test_user_stats_over_a_season(db: Conn) -> None:
    make_season("st", T0, 28)
    credit(db, "0xme", 50, T0 + timedelta(days=1))
    credit(db, "0xme", 10, T0 + timedelta(days=8))
    credit(db, "0xme", 30, T0 + timedelta(days=22))
    credit(db, "0xrival", 200, T0 + timedelta(days=2))
    stats = service.user_stats("0xme", "st")
    assert (stats.total_points, stats.rank, stats.is_tied) == (90, 2, False)
    assert [w.points for w in stats.weekly_history] == [50, 10, 0, 30]
    assert stats.best_week is not None and stats.best_week.week == 1
    assert stats.worst_week is not None and stats.worst_week.week == 2
    assert (stats.current_streak_weeks, stats.longest_streak_weeks) == (1, 2)
    all_time = service.user_stats("0xme")
    assert all_time.total_points == 90 and all_time.rank == 2
    assert all_time.longest_streak_weeks == 2
    from tally.errors import NotFound

    with pytest.raises(NotFound):
        service.user_stats("0xnobody")


# -- exports ---------------------------------------------------------------------------------


def _read(chunks: Any) -> str:
    return b"".join(chunks).decode()


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_export_round_trips(db: Conn, fmt: str) -> None:
    make_season("ex", T0, 14)
    for i in range(2500):
        credit(db, f"0xe{i:05d}", (i * 37) % 400, T0 + timedelta(hours=i % 300))
    board = whole_board(season="ex", limit=1000)
    text = _read(service.export_rows("ex", None, fmt)[0])
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        parsed = [
            (int(r["rank"]), r["is_tied"] == "True", r["wallet_address"], int(r["points"]))
            for r in rows
        ]
    else:
        doc = json.loads(text)
        assert doc["board"] == "season:ex"
        parsed = [(r["rank"], r["is_tied"], r["wallet_address"], r["points"]) for r in doc["items"]]
    assert parsed == [(e.rank, e.is_tied, e.wallet_address, e.points) for e in board]
    assert service.export_filename("ex", 3, "csv") == "leaderboard-ex-week-3.csv"


def test_export_to_s3_streams_and_links(db: Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto import mock_aws

    from tally.leaderboards import exports
    from tally.settings import reset_settings

    make_season("s3", T0, 7)
    credit(db, "0xs3", 5, T0)
    monkeypatch.setenv("EXPORT_BUCKET", "tally-exports-test")
    reset_settings()
    with mock_aws():  # moto only stands in for S3; the board comes from PostgreSQL
        import boto3

        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="tally-exports-test")
        stream, version = service.export_rows("s3", None, "csv")
        url = exports.publish(stream, "leaderboard-s3.csv", "text/csv", version=version)
        # The same board version again reuses the uploaded file.
        again, same = service.export_rows("s3", None, "csv")
        assert same == version
        exports.publish(again, "leaderboard-s3.csv", "text/csv", version=same)
        (obj,) = s3.list_objects_v2(Bucket="tally-exports-test")["Contents"]
        got = s3.get_object(Bucket="tally-exports-test", Key=obj["Key"])
    assert obj["Key"].endswith("/leaderboard-s3.csv")
    assert "Signature" in url
    assert got["ContentDisposition"] == 'attachment; filename="leaderboard-s3.csv"'
    assert got["Body"].read().decode().splitlines()[1].startswith("1,False,0xs3,5")


# -- jobs ------------------------------------------------------------------------------------


def test_a_second_snapshot_run_waits_its_turn(db: Conn) -> None:
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (service.SNAPSHOT_LOCK,))
        assert service.snapshot().ran is False
    assert service.snapshot().ran is True


def test_periods_close_only_after_the_grace(db: Conn) -> None:
    make_season("fresh", datetime.now(UTC) + timedelta(days=1), 3)
    periods = db.execute("SELECT count(*) AS n FROM leaderboard_periods").fetchone()
    db.execute(
        "UPDATE leaderboard_periods SET ends_at = now() - interval '1 minute', "
        "starts_at = now() - interval '1 day'"
    )
    assert service.close_periods().rows == 0  # ended, but an award may still be committing
    db.execute("UPDATE leaderboard_periods SET ends_at = now() - interval '10 minutes'")
    assert service.close_periods().rows == periods["n"]


def test_weekly_stats_do_not_depend_on_the_server_time_zone(db: Conn, database_url: str) -> None:
    from tally.db.connection import close_connection

    name = db.info.dbname
    db.execute(f"ALTER DATABASE \"{name}\" SET timezone TO 'America/New_York'")
    close_connection()
    try:
        # Weekly activity straddling the clocks moving (8 March 2026 in New York).
        for week in range(6):
            credit(db, "0xtz", 10, T0 - timedelta(weeks=3) + timedelta(weeks=week, hours=1))
        stats = service.user_stats("0xtz")
        history = [w.points for w in stats.weekly_history[:6]]
        assert history == [10] * 6
        assert stats.longest_streak_weeks >= 6
    finally:
        db.execute(f'ALTER DATABASE "{name}" RESET timezone')
        close_connection()


def test_snapshot_is_idempotent_and_single_flight(db: Conn) -> None:
    for i, points in enumerate([30, 20, 20, 10]):
        credit(db, f"0xsnap{i}", points)
        db.execute(
            "UPDATE users SET total_points = total_points + %s WHERE wallet_address = %s",
            (points, f"0xsnap{i}"),
        )
    day = datetime(2026, 11, 20, tzinfo=UTC)
    assert service.snapshot(day).rows == 4
    assert service.snapshot(day).rows == 4
    rows = db.execute(
        "SELECT wallet_address, rank FROM leaderboard_snapshot ORDER BY rank, wallet_address"
    ).fetchall()
    assert [(r["wallet_address"], r["rank"]) for r in rows] == [
        ("0xsnap0", 1),
        ("0xsnap1", 2),
        ("0xsnap2", 2),
        ("0xsnap3", 4),
    ]
    results = run_concurrently(lambda: service.snapshot(day))
    assert sorted(r.ran for r in results) in ([False, True], [True, True])
    assert db.execute("SELECT count(*) AS n FROM leaderboard_snapshot").fetchone() == {"n": 4}


def test_airdrop_weights_and_allocation(db: Conn) -> None:
    # Two users: one has every maximum, the other half the points and nothing else.
    credit(db, "0xbig", 1000, datetime(2026, 10, 5, tzinfo=UTC))
    credit(db, "0xsmall", 500, datetime(2026, 10, 6, tzinfo=UTC))
    credit(db, "0xlate", 900, datetime(2026, 11, 2, tzinfo=UTC))  # after the period
    db.execute(
        "INSERT INTO verification_sessions (id) VALUES ('00000000-0000-0000-0000-000000000001')"
    )
    db.execute(
        """INSERT INTO user_submissions (wallet_address, session_id, subject, rarity_score,
           quality_score, is_first_bulk, is_rare, dataset_number, points_earned,
           quality_multiplier, bulk_multiplier, subject_rarity_multiplier,
           specificity_multiplier, verification_multiplier, early_contributor_multiplier,
           total_multiplier, points_breakdown, rule_version, submitted_at)
           VALUES ('0xbig', '00000000-0000-0000-0000-000000000001', 'birds', 50, 0.5, true,
           true, 1, 1000, 1, 2, 5, 1, 1, 1, 10, '{}', 'v1', '2026-10-05')"""
    )
    credit(db, "0xgone", 50, datetime(2026, 10, 7, tzinfo=UTC))
    assert service.airdrop_eligibility("2026-10").rows == 3
    credit(db, "0xgone", -50, datetime(2026, 10, 8, tzinfo=UTC))  # an adjustment
    again = service.airdrop_eligibility("2026-10")
    assert again.rows == 2
    rows = {
        r["wallet_address"]: r
        for r in db.execute("SELECT * FROM airdrop_eligibility WHERE period = '2026-10'")
    }
    assert set(rows) == {"0xbig", "0xsmall"}
    assert float(rows["0xbig"]["eligibility_score"]) == pytest.approx(1.0)
    assert float(rows["0xsmall"]["eligibility_score"]) == pytest.approx(0.25)
    assert float(rows["0xbig"]["allocation_percentage"]) == pytest.approx(80.0)
    assert float(rows["0xsmall"]["allocation_percentage"]) == pytest.approx(20.0)
    assert service.previous_month(datetime(2026, 1, 15, tzinfo=UTC)) == "2025-12"
