"""Leaderboard rules: boards, exact live ranks, around-me, stats, exports, periods and jobs."""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger
from pydantic import ValidationError

from tally.db.connection import connect, read_snapshot, transaction
from tally.errors import Conflict, InvalidInput, NotFound
from tally.leaderboards.boards import (
    ALL_TIME,
    Tiebreak,
    iso_week_board,
    season_board,
    season_weeks,
    week_board,
)
from tally.leaderboards.models import (
    AroundMe,
    BoardEntry,
    BoardPage,
    JobResult,
    SeasonIn,
    SeasonOut,
    SeasonUpdate,
    UserStats,
    WeekPoints,
)
from tally.leaderboards.repository import ORDERINGS, LeaderboardRepository, Row
from tally.observability import metrics
from tally.settings import get_settings

logger = Logger(child=True)

SNAPSHOT_LOCK = 7_402_115_101
AIRDROP_LOCK = 7_402_115_102
CLOSE_LOCK = 7_402_115_103
# A period closes this long after its end: an award whose transaction began just before the end
# (its ledger entry is dated then) has committed by now.
CLOSE_GRACE = timedelta(minutes=5)
AIRDROP_WEIGHTS = {
    "points": 0.50,
    "diversity": 0.20,
    "bulk": 0.15,
    "rare": 0.10,
    "consistency": 0.05,
}


# -- boards ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Board:
    """A resolved board: its key, its period if it has one, and what its version depends on."""

    key: str
    season: str | None = None
    week: int | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    closed_at: datetime | None = None
    edited_at: datetime | None = None  # the season's last edit: its boards may have changed

    @property
    def closed(self) -> bool:
        return self.closed_at is not None


def resolve_board(
    repo: LeaderboardRepository,
    season: str | None = None,
    week: int | None = None,
    iso_week: tuple[int, int] | None = None,
) -> Board:
    if iso_week is not None:
        year, number = iso_week
        try:
            starts = datetime.fromisocalendar(year, number, 1).replace(tzinfo=UTC)
        except ValueError as exc:
            raise NotFound(f"{year} has no ISO week {number}") from exc
        ends = starts + timedelta(days=7)
        closed = ends if datetime.now(UTC) >= ends + CLOSE_GRACE else None
        return Board(
            iso_week_board(year, number),
            week=number,
            starts_at=starts,
            ends_at=ends,
            closed_at=closed,
        )
    if season is None:
        return Board(ALL_TIME)
    season_row = repo.season(season)
    if season_row is None:
        raise NotFound(f"No season {season}")
    key = season_board(season) if week is None else week_board(season, week)
    period = repo.period(key)
    if period is None:
        raise NotFound(f"Season {season} has no week {week}")
    return Board(
        key,
        season,
        week,
        period["starts_at"],
        period["ends_at"],
        period["closed_at"],
        season_row["updated_at"],
    )


def _tiebreak(value: str | None) -> Tiebreak:
    return Tiebreak(value or get_settings().leaderboard_tiebreak)


def _key_value(row: Row, tiebreak: Tiebreak) -> Any:
    key = ORDERINGS[tiebreak].key
    return row[key] if key else None


def encode_cursor(row: Row, tiebreak: Tiebreak) -> str:
    key = _key_value(row, tiebreak)
    if isinstance(key, datetime):
        key = key.isoformat()
    raw = json.dumps([tiebreak.value, row["points"], key, row["wallet_address"]])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, tiebreak: Tiebreak) -> tuple[int, Any, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        mode, points, key, wallet = json.loads(raw)
        if mode != tiebreak.value or not isinstance(points, int) or not isinstance(wallet, str):
            raise ValueError
        if "\x00" in wallet or len(wallet) > 128 or not -(2**62) < points < 2**62:
            raise ValueError
        if tiebreak is Tiebreak.EARLIEST:
            key = datetime.fromisoformat(key)
        elif tiebreak is Tiebreak.SUBMISSIONS and not isinstance(key, int):
            raise ValueError
        return points, key, wallet
    except (ValueError, TypeError, binascii.Error, json.JSONDecodeError) as exc:
        raise InvalidInput("The cursor is not one this API returned", field="cursor") from exc


def _group(row: Row, tiebreak: Tiebreak) -> tuple[Any, ...]:
    return (row["points"], _key_value(row, tiebreak))


def rank_window(
    repo: LeaderboardRepository,
    board: str,
    tiebreak: Tiebreak,
    rows: list[Row],
    *,
    more_after: bool,
) -> list[BoardEntry]:
    """Competition ranks for a contiguous run of a board.

    Only the edges need the database: the first row's rank and how many share it (some may sit
    before the window), and how many share the last position when the board goes on past the
    window. Everyone strictly between two positions in the window is in the window.
    """
    if not rows:
        return []
    first, last = rows[0], rows[-1]
    first_rank, first_ties = repo.rank_and_ties(
        board, tiebreak, first["points"], _key_value(first, tiebreak)
    )
    groups: dict[tuple[Any, ...], int] = {}
    for row in rows:
        groups[_group(row, tiebreak)] = groups.get(_group(row, tiebreak), 0) + 1
    in_window_first = groups[_group(first, tiebreak)]
    ties = dict(groups)
    ties[_group(first, tiebreak)] = first_ties
    if more_after and _group(last, tiebreak) != _group(first, tiebreak):
        ties[_group(last, tiebreak)] = repo.rank_and_ties(
            board, tiebreak, last["points"], _key_value(last, tiebreak)
        )[1]
    entries = []
    rank = first_rank
    for index, row in enumerate(rows):
        if index and _group(row, tiebreak) != _group(rows[index - 1], tiebreak):
            rank = first_rank + first_ties + index - in_window_first
        entries.append(
            BoardEntry(
                rank=rank,
                is_tied=ties[_group(row, tiebreak)] > 1,
                wallet_address=row["wallet_address"],
                points=row["points"],
                submissions=row["submissions"],
                tier=row["tier"],
            )
        )
    return entries


def _version(repo: LeaderboardRepository, board: Board) -> str:
    """Closed boards never change again; open ones change with the ledger and season edits."""
    if board.closed_at is not None:
        return f"closed-{board.closed_at.timestamp()}"
    edited = board.edited_at.timestamp() if board.edited_at else 0
    return f"v{repo.version()}-{edited}"


def board_version(
    season: str | None = None, week: int | None = None, iso_week: tuple[int, int] | None = None
) -> str:
    """What a cached copy of the board must match to still be current."""
    with read_snapshot() as conn:
        repo = LeaderboardRepository(conn)
        return _version(repo, resolve_board(repo, season, week, iso_week))


def board_page(
    *,
    season: str | None = None,
    week: int | None = None,
    iso_week: tuple[int, int] | None = None,
    limit: int = 50,
    cursor: str | None = None,
    tiebreak: str | None = None,
) -> tuple[BoardPage, str]:
    """A page of a board, and the board version it was read at."""
    mode = _tiebreak(tiebreak)
    after = decode_cursor(cursor, mode) if cursor else None
    with read_snapshot() as conn:
        repo = LeaderboardRepository(conn)
        board = resolve_board(repo, season, week, iso_week)
        rows = repo.page(board.key, mode, limit=limit + 1, after=after)
        more = len(rows) > limit
        rows = rows[:limit]
        items = rank_window(repo, board.key, mode, rows, more_after=more)
        version = _version(repo, board)
    page = BoardPage(
        board=board.key,
        season=board.season,
        week=board.week,
        starts_at=board.starts_at,
        ends_at=board.ends_at,
        closed=board.closed,
        tiebreak=mode.value,
        items=items,
        next_cursor=encode_cursor(rows[-1], mode) if more else None,
    )
    return page, version


def around(
    wallet: str,
    *,
    season: str | None = None,
    week: int | None = None,
    iso_week: tuple[int, int] | None = None,
    size: int = 5,
    tiebreak: str | None = None,
) -> tuple[AroundMe, str]:
    """The user and up to `size` users just above and just below, ranked like the board."""
    mode = _tiebreak(tiebreak)
    with read_snapshot() as conn:
        repo = LeaderboardRepository(conn)
        board = resolve_board(repo, season, week, iso_week)
        me = repo.entry(board.key, wallet)
        if me is None:
            raise NotFound(f"{wallet} is not on board {board.key}")
        position = (me["points"], _key_value(me, mode), me["wallet_address"])
        above = repo.page(board.key, mode, limit=size, before=position)
        below = repo.page(board.key, mode, limit=size + 1, after=position)
        more = len(below) > size
        below = below[:size]
        entries = rank_window(repo, board.key, mode, [*above, me, *below], more_after=more)
        version = _version(repo, board)
    result = AroundMe(
        board=board.key,
        tiebreak=mode.value,
        user=entries[len(above)],
        above=entries[: len(above)],
        below=entries[len(above) + 1 :],
    )
    return result, version


def rank_of(
    wallet: str, board: str = ALL_TIME, tiebreak: str | None = None
) -> tuple[int, bool] | None:
    """The exact, live rank of a user on a board (None when not on it)."""
    with read_snapshot() as conn:
        return rank_on(LeaderboardRepository(conn), board, wallet, tiebreak)


def rank_on(
    repo: LeaderboardRepository, board: str, wallet: str, tiebreak: str | None = None
) -> tuple[int, bool] | None:
    """The exact, live rank of a user on a board under the configured ordering (None when the
    user is not on it), inside the caller's transaction."""
    mode = _tiebreak(tiebreak)
    me = repo.entry(board, wallet)
    if me is None:
        return None
    rank, ties = repo.rank_and_ties(board, mode, me["points"], _key_value(me, mode))
    return rank, ties > 1


# -- seasons -------------------------------------------------------------------------------------


def _season_out(row: Row) -> SeasonOut:
    now = datetime.now(UTC)
    if row["closed_at"]:
        status = "closed"
    elif now < row["starts_at"]:
        status = "upcoming"
    elif now < row["ends_at"]:
        status = "active"
    else:
        status = "ended"
    return SeasonOut(
        slug=row["slug"],
        name=row["name"],
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        status=status,
        weeks=row["weeks"],
        closed_at=row["closed_at"],
    )


def list_seasons() -> list[SeasonOut]:
    with transaction() as conn:
        return [_season_out(r) for r in LeaderboardRepository(conn).seasons()]


def create_season(body: SeasonIn) -> SeasonOut:
    """A season and its weeks, with boards rebuilt from whatever the ledger already holds."""
    with transaction() as conn:
        repo = LeaderboardRepository(conn)
        repo.lock_ledger_for_rebuild()
        row = repo.insert_season(body.slug, body.name, body.starts_at, body.ends_at)
        if row is None:
            raise Conflict(f"Season {body.slug} exists already", slug=body.slug)
        weeks = season_weeks(body.starts_at, body.ends_at)
        repo.replace_periods(row["id"], body.slug, body.starts_at, body.ends_at, weeks)
        created = repo.season(body.slug)
    assert created is not None
    logger.info("Season created", extra={"season": body.slug, "weeks": len(weeks)})
    return _season_out(created)


def update_season(slug: str, body: SeasonUpdate) -> SeasonOut:
    """Rename a season, or move its dates while nothing of it is history yet.

    Before a season starts its dates may change freely. Once it has started its start is
    fixed and its end may only move to a time still ahead, so no entry already counted changes
    board and closed weeks stay exactly as they were frozen.
    """
    now = datetime.now(UTC)
    with transaction() as conn:
        repo = LeaderboardRepository(conn)
        row = repo.season(slug, lock=True)
        if row is None:
            raise NotFound(f"No season {slug}")
        if row["closed_at"] is not None:
            raise Conflict(f"Season {slug} is closed; its boards are frozen")
        try:
            merged = SeasonIn(
                slug=slug,
                name=body.name or row["name"],
                starts_at=body.starts_at or row["starts_at"],
                ends_at=body.ends_at or row["ends_at"],
            )
        except ValidationError as exc:
            raise InvalidInput(_first_error(exc)) from None
        moved = (merged.starts_at, merged.ends_at) != (row["starts_at"], row["ends_at"])
        started = row["starts_at"] <= now
        if moved and started:
            if merged.starts_at != row["starts_at"]:
                raise Conflict(f"Season {slug} has started; its start can no longer move")
            if merged.ends_at <= now:
                raise Conflict("A started season can only end at a time still ahead")
        repo.update_season(row["id"], merged.name, merged.starts_at, merged.ends_at)
        if moved and not started:
            repo.lock_ledger_for_rebuild()
            repo.replace_periods(
                row["id"],
                slug,
                merged.starts_at,
                merged.ends_at,
                season_weeks(merged.starts_at, merged.ends_at),
            )
        elif moved:
            repo.reshape_open_periods(
                row["id"], slug, merged.ends_at, season_weeks(merged.starts_at, merged.ends_at)
            )
        updated = repo.season(slug)
    assert updated is not None
    logger.info("Season updated", extra={"season": slug, "moved": moved})
    return _season_out(updated)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return str(error.get("msg", "invalid season")).removeprefix("Value error, ")


# -- user stats ----------------------------------------------------------------------------------


def user_stats(wallet: str, season: str | None = None) -> UserStats:
    with read_snapshot() as conn:
        repo = LeaderboardRepository(conn)
        board = resolve_board(repo, season, None)
        tier = repo.tier_of(wallet)
        me = repo.entry(board.key, wallet)
        if tier is None and me is None:
            raise NotFound(f"No user {wallet}")
        rank, tied = rank_on(repo, board.key, wallet) or (None, False)
        if season is not None:
            season_row = repo.season(season)
            assert season_row is not None
            rows = repo.season_weeks_of(season_row["id"], wallet)
            weeks = [
                WeekPoints(week=r["week"], week_start=r["week_start"], points=r["points"])
                for r in rows
            ]
            active = [r["active"] for r in rows]
        else:
            weeks, active = _fill_weeks(repo.ledger_weeks_of(wallet))
    current, longest = streaks(active)
    played = [w for w, on in zip(weeks, active, strict=True) if on]
    return UserStats(
        user_id=wallet,
        season=season,
        total_points=me["points"] if me else 0,
        rank=rank,
        is_tied=tied,
        tier=tier or "Contributor",
        best_week=max(played, key=lambda w: w.points, default=None),
        worst_week=min(played, key=lambda w: w.points, default=None),
        current_streak_weeks=current,
        longest_streak_weeks=longest,
        weekly_history=weeks,
    )


def _fill_weeks(rows: list[Row]) -> tuple[list[WeekPoints], list[bool]]:
    """Weekly points from the first active week to this week, inactive weeks as zero."""
    if not rows:
        return [], []
    by_week = {r["week_start"]: r["points"] for r in rows}
    now = datetime.now(UTC)
    this_week = (now - timedelta(days=now.weekday())).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    weeks, active = [], []
    cursor = rows[0]["week_start"]
    while cursor <= this_week:
        weeks.append(WeekPoints(week_start=cursor, points=by_week.get(cursor, 0)))
        active.append(cursor in by_week)
        cursor += timedelta(days=7)
    return weeks, active


def streaks(active: list[bool]) -> tuple[int, int]:
    """(current, longest) runs of active weeks. The current run may end last week: this week
    is not over yet."""
    longest = run = 0
    for on in active:
        run = run + 1 if on else 0
        longest = max(longest, run)
    current = 0
    trailing = list(active)
    if trailing and not trailing[-1]:
        trailing.pop()
    for on in reversed(trailing):
        if not on:
            break
        current += 1
    return current, longest


# -- export --------------------------------------------------------------------------------------


def export_filename(season: str, week: int | None, fmt: str) -> str:
    suffix = f"-week-{week}" if week is not None else ""
    return f"leaderboard-{season}{suffix}.{fmt}"


def export_rows(
    season: str, week: int | None, fmt: str, tiebreak: str | None = None
) -> tuple[Iterator[bytes], str]:
    """The whole board as CSV or JSON, streamed in chunks from a server-side cursor, and the
    board version (exports of an unchanged board can be reused)."""
    mode = _tiebreak(tiebreak)
    with read_snapshot() as conn:
        repo = LeaderboardRepository(conn)
        board = resolve_board(repo, season, week)
        version = _version(repo, board)
    return _export_stream(board.key, mode, fmt), f"{version}-{mode.value}"


def _export_stream(board: str, mode: Tiebreak, fmt: str) -> Iterator[bytes]:
    columns = ["rank", "is_tied", "wallet_address", "points", "submissions", "tier"]
    conn = connect()  # its own connection: a stream outlives the request's turn on the shared one
    try:
        rows = LeaderboardRepository(conn).stream(board, mode)
        if fmt == "csv":
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(columns)
            for count, row in enumerate(rows, 1):
                writer.writerow([row[c] for c in columns])
                if count % 1000 == 0:
                    yield buffer.getvalue().encode()
                    buffer.seek(0)
                    buffer.truncate()
            yield buffer.getvalue().encode()
        else:
            yield b'{"board": ' + json.dumps(board).encode() + b', "items": ['
            chunk: list[str] = []
            for count, row in enumerate(rows):
                chunk.append(("," if count else "") + json.dumps({c: row[c] for c in columns}))
                if len(chunk) == 1000:
                    yield "".join(chunk).encode()
                    chunk.clear()
            yield ("".join(chunk) + "]}").encode()
    finally:
        conn.close()


# -- jobs ----------------------------------------------------------------------------------------


def snapshot(day: datetime | None = None) -> JobResult:
    """The guide's daily leaderboard_snapshot (idempotent: one row per day and user)."""
    day = (day or datetime.now(UTC)).astimezone(UTC)
    with transaction() as conn:
        repo = LeaderboardRepository(conn)
        if not repo.try_job_lock(SNAPSHOT_LOCK):
            logger.info("Snapshot already running elsewhere; skipped")
            return JobResult(ran=False)
        rows = repo.write_snapshot(day)
        pruned = repo.prune_empty_counts()
    metrics.add_metric(name="LeaderboardSnapshotRows", unit="Count", value=rows)
    logger.info(
        "Leaderboard snapshot written",
        extra={"snapshot_date": day.date().isoformat(), "rows": rows},
    )
    return JobResult(rows=rows, detail={"date": day.date().isoformat(), "pruned": pruned})


def close_periods() -> JobResult:
    """Freeze every season and week whose end has passed; closed boards stay readable."""
    with transaction() as conn:
        repo = LeaderboardRepository(conn)
        if not repo.try_job_lock(CLOSE_LOCK):
            return JobResult(ran=False)
        closed = repo.close_due_periods(CLOSE_GRACE)
    if closed:
        logger.info("Closed leaderboard periods", extra={"boards": closed})
    metrics.add_metric(name="LeaderboardPeriodsClosed", unit="Count", value=len(closed))
    return JobResult(rows=len(closed), detail={"closed": closed})


def previous_month(now: datetime | None = None) -> str:
    now = (now or datetime.now(UTC)).astimezone(UTC)
    first = now.replace(day=1)
    return (first - timedelta(days=1)).strftime("%Y-%m")


def airdrop_eligibility(period: str | None = None) -> JobResult:
    """Monthly eligibility with REFERENCE.md's weights, for the month that just ended."""
    period = period or previous_month()
    year, month = (int(p) for p in period.split("-"))
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    with transaction() as conn:
        repo = LeaderboardRepository(conn)
        if not repo.try_job_lock(AIRDROP_LOCK):
            return JobResult(ran=False)
        rows = repo.write_airdrop(period, end, AIRDROP_WEIGHTS)
    metrics.add_metric(name="AirdropEligibleUsers", unit="Count", value=rows)
    logger.info("Airdrop eligibility calculated", extra={"period": period, "users": rows})
    return JobResult(rows=rows, detail={"period": period})
