"""`tally seed`: realistic demo data, exactly as the real award sweep would have left it.

Awarding through `tally.points.service.award_pending` manages a few hundred awards a second,
so this replays the sweep's rules in Python instead and bulk-loads the outcome with COPY:

1. Wallets are generated deterministically from `random_seed`: each joins at some point of the
   last ~120 days (more of them recently) and completes 1-5 approved datasets over the
   following days. A heap merges them into one stream ordered by (completed_at, id), the order
   in which the sweep claims sessions, so only the wallets active at the moment are in memory.
2. Each dataset is settled as `tally.points.service._settle` would settle it at its
   completed_at: the quality gate (skipped, 0 points), the daily cap (held, with an
   anti-abuse flag), the contributor number on a wallet's first award, the first bulk per
   (wallet, subject), the subject's prior dataset count, the platform-wide dataset number and
   `tally.points.calculator.calculate_points` with the settings' PointsRules. An award over
   the per-award ceiling fails as in the sweep (nothing counted, retried later by the job).
   Achievements are evaluated after every award with `unlocked_achievements` over the same
   stats `PointsRepository.user_stats` computes, not once at the end, because the sweep never
   takes one back: a wallet whose average quality drops below 80 keeps Quality Master, and an
   achievement bonus only counts towards point achievements from the wallet's next award on.
3. Rows are streamed to PostgreSQL in chunks with COPY on a worker thread (so the server
   ingests one chunk while Python computes the next): verification_sessions as they settle,
   and a wallet's user row, submissions, ledger entries and achievements once its last dataset
   has settled (the foreign keys need the user first). The ledger's own trigger keeps the
   leaderboards (board_scores and their histograms, season and week boards included) in step,
   one COPY at a time. subject_rarity_cache and platform_counters get their final values at
   the end.
4. `pending` more approved sessions, completed in the last hour by random seeded wallets, are
   left with points_status NULL for the running award job.

Everything happens in one transaction: a failure or Ctrl-C leaves nothing half-written. The
platform's dataset counter is locked for its duration, which serialises the seed with any award
sweep exactly as two sweeps serialise with each other (a sweep started meanwhile waits, or hits
its statement timeout and retries the award later).

Seeding a database that already holds data appends new wallets: numbering continues from the
current counters and subject counts, as the sweep would have continued. Only an empty database
makes the data a function of `random_seed` alone; otherwise the stream is also keyed by the
number of existing sessions, so seeding twice adds different wallets rather than colliding.
Content hashes are a bijection of the (unique) session ids, so they never trip the
duplicate-content check.

What differs from running the sweep: timestamps. Every award is dated at its session's
completed_at (the sweep would write now()), which gives leaderboards, seasons and activity a
history; the daily cap and "active days" are therefore counted per historical day. And as a
wallet's ledger entries arrive in one statement, the score histogram has no rows for the
intermediate scores the sweep would have passed through (it leaves those at 0 users).

Cost: about 50 us of Python per dataset and 25 us of PostgreSQL per row written (~4 rows per
dataset), overlapped on two cores, so PostgreSQL sets the pace: 100k wallets (~1.2M rows) take
about 45 s, a million (~3M datasets, ~12M rows) several minutes, in well under 1 GB of memory.
"""

from __future__ import annotations

import functools
import heapq
import json
import math
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from tqdm import tqdm

from tally.db.connection import get_connection
from tally.points.achievements import UserStats, unlocked_achievements
from tally.points.calculator import Grade, PointsInput, calculate_points, subject_rarity
from tally.points.service import SOURCE_ACHIEVEMENT, SOURCE_DATASET
from tally.points.tiers import tier_for
from tally.settings import PointsRules, Settings, get_settings

SUBJECTS = [
    "bird song",
    "rainforest ambience",
    "urban traffic",
    "ocean waves",
    "thunderstorm",
    "violin",
    "tabla",
    "whale calls",
    "frog chorus",
    "market crowd",
    "train station",
    "wind turbine",
    "church bells",
    "bee hive",
    "glacier melt",
    "desert wind",
    "cicadas",
    "footsteps on snow",
    "typewriter",
    "vinyl crackle",
    "didgeridoo",
    "mbira",
    "shakuhachi",
    "heartbeat",
    "machine shop",
    "kitchen",
    "playground",
]
GRADES: list[Grade] = ["A", "B", "B", "C", "C", "C", "D", "F"]
SAMPLE_COUNTS = (1, 5, 20, 50, 120, 300)

HISTORY_DAYS = 120
PENDING_WINDOW_US = 3_600_000_000  # pending sessions completed in the last hour
SECOND_US = 1_000_000
DAY_US = 86_400 * SECOND_US
MEAN_GAP_US = 3 * DAY_US  # between a wallet's datasets
LOW_QUALITY_SHARE = 0.04  # of datasets after a wallet's first, below the default minimum
CHUNK_SESSIONS = 20_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NULL = "\\N"

SESSION_COLUMNS = (
    "id, status, wallet_address, initial_data, results, points_awarded, points_breakdown, "
    "quality_multiplier, total_multiplier, points_status, points_attempts, points_error, "
    "points_next_attempt_at, points_calculated_at, created_at, updated_at, completed_at"
)
SUBMISSION_COLUMNS = (
    "wallet_address, session_id, title, subject, sample_count, rarity_score, quality_score, "
    "specificity_grade, verified, content_hash, is_first_bulk, is_rare, dataset_number, "
    "points_earned, quality_multiplier, bulk_multiplier, subject_rarity_multiplier, "
    "specificity_multiplier, verification_multiplier, early_contributor_multiplier, "
    "total_multiplier, points_breakdown, rule_version, submitted_at"
)
LEDGER_COLUMNS = (
    "wallet_address, points, source_kind, source_id, rule_version, metadata, created_at"
)
USER_COLUMNS = (
    "wallet_address, total_points, total_submissions, tier, contributor_number, "
    "first_submission_at, last_submission_at, points_updated_at, created_at, updated_at"
)
ACHIEVEMENT_COLUMNS = "wallet_address, achievement_key, achievement_name, description, unlocked_at"
FLAG_COLUMNS = "wallet_address, session_id, reason, details, created_at"

# COPY order within a chunk: referenced tables first.
_TABLES = (
    ("verification_sessions", SESSION_COLUMNS),
    ("anti_abuse_flags", FLAG_COLUMNS),
    ("users", USER_COLUMNS),
    ("user_submissions", SUBMISSION_COLUMNS),
    ("points_ledger", LEDGER_COLUMNS),
    ("user_achievements", ACHIEVEMENT_COLUMNS),
)


def _text(value: str) -> str:
    """A value for COPY's text format."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return (
            value.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    return value


def _json(value: Any) -> str:
    return _text(json.dumps(value))


@functools.cache
def _day_text(day: int) -> str:
    return (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")


_TIMES_OF_DAY = [
    f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(DAY_US // SECOND_US)
]


def _ts(us: int) -> str:
    """A timestamptz for COPY from microseconds since the epoch (UTC)."""
    day, rest = divmod(us, DAY_US)
    seconds, micro = divmod(rest, SECOND_US)
    return f"{_day_text(day)} {_TIMES_OF_DAY[seconds]}.{micro:06d}+00"


def _bool(value: bool) -> str:
    return "t" if value else "f"


@functools.cache
def _subject_texts(subject: str) -> tuple[str, str, str, str]:
    """(title, title as JSON, subject as JSON, ledger metadata), ready for COPY."""
    title = f"{subject.title()} recordings"
    return (
        _text(title),
        _text(json.dumps(title)),
        _text(json.dumps(subject)),
        _json({"subject": subject}),
    )


_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID_V4 = (0x4000 << 64) | (0x8000 << 48)  # what uuid.UUID(int=..., version=4) sets


class _Dataset:
    """One approved verification session as the verifier would have posted it."""

    __slots__ = (
        "completed_us",
        "content_hash",
        "created_us",
        "grade",
        "key",
        "quality",
        "quality_milli",
        "rarity",
        "sample_count",
        "session_id",
        "subject",
        "verified",
        "wallet",
    )

    def __init__(self, rng: random.Random, wallet: str, completed_us: int, first: bool) -> None:
        # The session id as PostgreSQL orders uuids (bytewise, i.e. as this integer).
        self.key = key = (rng.getrandbits(128) & _UUID_CLEAR) | _UUID_V4
        h = f"{key:032x}"
        self.session_id = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        # A bijection of the session id, so unique wherever the session id is.
        mixed = (key * 0x9E3779B97F4A7C15F39CC0605CEDC835) & ((1 << 128) - 1)
        self.content_hash = f"{mixed ^ 0x5851F42D4C957F2D14057B7EF767814F:032x}"
        self.wallet = wallet
        self.completed_us = completed_us
        # rng.random() scaled rather than randint/choice: the same uniform picks, but faster.
        r = rng.random
        self.created_us = completed_us - (30 + int(r() * 1771)) * SECOND_US  # 30 s to 30 min
        self.subject = SUBJECTS[int(r() * len(SUBJECTS))]
        self.sample_count = SAMPLE_COUNTS[int(r() * len(SAMPLE_COUNTS))] if r() < 0.9 else 1000
        self.rarity = (200 + int(r() * 801)) / 10  # 20.0 to 100.0
        # A wallet's first dataset always passes the default quality gate, so (with the
        # default rules) every seeded wallet becomes a user; a few later ones fall below it.
        if not first and r() < LOW_QUALITY_SHARE:
            self.quality_milli = 50 + int(r() * 250)  # 0.050 to 0.299
        else:
            self.quality_milli = 350 + int(r() * 651)  # 0.350 to 1.000
        self.quality = self.quality_milli / 1000
        self.grade = GRADES[int(r() * len(GRADES))]
        self.verified = r() < 0.3

    def session_row(self, tail: str) -> str:
        """A verification_sessions line: what the verifier posted, then `tail` (the award
        bookkeeping from points_awarded to updated_at), then completed_at."""
        _, title_json, subject_json, _ = _subject_texts(self.subject)
        initial_data = (
            f'{{"metadata": {{"walletAddress": "{self.wallet}", "title": {title_json}, '
            f'"sampleCount": {self.sample_count}}}}}'
        )
        results = (
            f'{{"approved": true, "rarityScore": {self.rarity!r}, '
            f'"qualityScore": {self.quality!r}, "subject": {subject_json}, '
            f'"specificityGrade": "{self.grade}", '
            f'"verifiedClaims": {"true" if self.verified else "false"}, '
            f'"contentHash": "{self.content_hash}"}}'
        )
        return (
            f"{self.session_id}\tcompleted\t{self.wallet}\t{initial_data}\t{results}\t{tail}\t"
            f"{_ts(self.completed_us)}\n"
        )


@dataclass(slots=True)
class _Wallet:
    """What the sweep would read back about one wallet; kept while it has datasets to come."""

    address: str
    remaining: int
    contributor_number: int | None = None
    total_points: int = 0
    submissions: int = 0
    tier: str = "Contributor"
    rare: int = 0
    quality_milli_sum: int = 0
    bulk_subjects: set[str] = field(default_factory=set)
    subjects: set[str] = field(default_factory=set)
    grade_a: int = 0
    verified: int = 0
    days: set[int] = field(default_factory=set)
    day: int = -1
    day_count: int = 0
    achieved: set[str] = field(default_factory=set)
    first_us: int = 0
    last_us: int = 0
    points_us: int | None = None
    # Rows that need the user row to exist first.
    submission_rows: list[str] = field(default_factory=list)
    ledger_rows: list[str] = field(default_factory=list)
    achievement_rows: list[str] = field(default_factory=list)

    def stats(self) -> UserStats:
        """PointsRepository.user_stats, from the running totals instead of SQL."""
        return UserStats(
            total_points=self.total_points,
            tier=self.tier,
            submissions=self.submissions,
            rare_submissions=self.rare,
            # avg(quality_score) * 100 over numeric(5,4) values, which are exact thousandths.
            average_score=self.quality_milli_sum / (self.submissions * 10),
            first_bulks=len(self.bulk_subjects),
            distinct_subjects=len(self.subjects),
            grade_a_submissions=self.grade_a,
            verified_submissions=self.verified,
            active_days=len(self.days),
            contributor_number=self.contributor_number,
        )


@dataclass
class _Totals:
    wallets: int = 0
    users: int = 0
    sessions: int = 0
    awarded: int = 0
    skipped: int = 0
    held: int = 0
    failed: int = 0
    points: int = 0
    achievements: int = 0
    pending: int = 0


class _CopyWriter:
    """COPYs chunks on a worker thread, so PostgreSQL ingests one while Python builds the next.

    The thread is the only user of the connection until close(); the caller's transaction
    stays open around it.
    """

    def __init__(self, conn: Any, bar: tqdm[Any]) -> None:
        self._conn = conn
        self._bar = bar
        self._queue: queue.Queue[dict[str, list[str]] | None] = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="tally-seed-copy", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            chunk = self._queue.get()
            if chunk is None:
                return
            if self.error is not None:
                continue
            try:
                with self._conn.cursor() as cur:
                    for table, columns in _TABLES:
                        lines = chunk.get(table)
                        if not lines:
                            continue
                        with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                            for start in range(0, len(lines), 2000):
                                copy.write("".join(lines[start : start + 2000]))
                        self._bar.update(len(lines))
            except BaseException as exc:
                self.error = exc

    def submit(self, chunk: dict[str, list[str]] | None) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self._queue.put(chunk, timeout=0.2)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        self.submit(None)
        self._thread.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        """Stop after the chunk in flight, dropping the rest (the transaction rolls back)."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(None)
        self._thread.join()


class _Seeder:
    """The award sweep's rules, replayed over a stream of datasets in (completed_at, id) order."""

    def __init__(
        self,
        settings: Settings,
        *,
        datasets: int,
        contributors: int,
        subject_counts: dict[str, int],
    ) -> None:
        self.settings = settings
        self.rules: PointsRules = settings.points
        self.datasets = datasets
        self.contributors = contributors
        self.subject_counts = subject_counts
        self.subject_updated: dict[str, int] = {}
        self.totals = _Totals()
        self.chunk: dict[str, list[str]] = {table: [] for table, _ in _TABLES}
        self._rule_version = _text(self.rules.rule_version)

    # -- settling one dataset (tally.points.service._settle) -----------------------------------

    def settle(self, ds: _Dataset, wallet: _Wallet) -> None:
        rules = self.rules
        self.totals.sessions += 1
        award_us = ds.completed_us  # awarded the moment it completed
        at = _ts(award_us)
        created = _ts(ds.created_us)
        sessions = self.chunk["verification_sessions"]
        quality = ds.quality
        if quality < rules.min_quality_score:
            sessions.append(
                ds.session_row(
                    f"0\t{_NULL}\t{_NULL}\t{_NULL}\tskipped\t0\tquality_below_minimum\t{_NULL}\t"
                    f"{at}\t{created}\t{at}"
                )
            )
            self.totals.skipped += 1
            return

        day = award_us // DAY_US
        today = wallet.day_count if wallet.day == day else 0
        if today >= rules.daily_submission_cap:
            details = {"submissions_today": today, "cap": rules.daily_submission_cap}
            self.chunk["anti_abuse_flags"].append(
                f"{ds.wallet}\t{ds.session_id}\tdaily_cap_exceeded\t{_json(details)}\t{at}\n"
            )
            sessions.append(
                ds.session_row(
                    f"{_NULL}\t{_NULL}\t{_NULL}\t{_NULL}\theld\t0\tdaily_cap_exceeded\t{_NULL}\t"
                    f"{at}\t{created}\t{at}"
                )
            )
            self.totals.held += 1
            return

        contributor_number = wallet.contributor_number or self.contributors + 1
        subject = ds.subject
        is_first_bulk = (
            ds.sample_count >= rules.bulk_sample_threshold and subject not in wallet.bulk_subjects
        )
        subject_before = self.subject_counts.get(subject, 0)
        dataset_number = self.datasets + 1
        breakdown = calculate_points(
            PointsInput(
                rarity_score=ds.rarity,
                quality_score=quality,
                specificity_grade=ds.grade,
                verified=ds.verified,
                is_first_bulk=is_first_bulk,
                subject_dataset_count=subject_before,
                dataset_number=dataset_number,
            ),
            rule_version=rules.rule_version,
            min_quality_score=rules.min_quality_score,
            early_contributor_datasets=rules.early_contributor_datasets,
        )
        points = breakdown.points
        if points > rules.max_points_per_award:
            # The sweep raises and rolls the award back: nothing is counted, and
            # PointsRepository.mark_session_failed schedules a retry (which fails again).
            error = _text(f"ValueError: Award of {points} exceeds the per-award ceiling"[:1000])
            retry_s = min(self.settings.award_retry_base_s, self.settings.award_retry_max_s)
            sessions.append(
                ds.session_row(
                    f"{_NULL}\t{_NULL}\t{_NULL}\t{_NULL}\tfailed\t1\t{error}\t"
                    f"{_ts(award_us + retry_s * SECOND_US)}\t{_NULL}\t{created}\t{at}"
                )
            )
            self.totals.failed += 1
            return

        # The award stands: take the numbers it was calculated with.
        if wallet.contributor_number is None:
            wallet.contributor_number = contributor_number
            self.contributors = contributor_number
            wallet.first_us = award_us
        if is_first_bulk:
            wallet.bulk_subjects.add(subject)
        self.subject_counts[subject] = subject_before + 1
        self.subject_updated[subject] = award_us
        self.datasets = dataset_number

        is_rare = breakdown.subject_rarity_multiplier >= rules.rare_subject_multiplier
        breakdown_json = _text(breakdown.model_dump_json())
        title, _, _, ledger_metadata = _subject_texts(subject)
        quality_multiplier = repr(breakdown.quality_multiplier)
        total_multiplier = repr(breakdown.total_multiplier)
        wallet.submission_rows.append(
            f"{ds.wallet}\t{ds.session_id}\t{title}\t{_text(subject)}\t{ds.sample_count}\t"
            f"{ds.rarity!r}\t{quality!r}\t{ds.grade}\t{_bool(ds.verified)}\t{ds.content_hash}\t"
            f"{_bool(is_first_bulk)}\t{_bool(is_rare)}\t{dataset_number}\t{points}\t"
            f"{quality_multiplier}\t{breakdown.bulk_multiplier!r}\t"
            f"{breakdown.subject_rarity_multiplier!r}\t{breakdown.specificity_multiplier!r}\t"
            f"{breakdown.verification_multiplier!r}\t{breakdown.early_contributor_multiplier!r}\t"
            f"{total_multiplier}\t{breakdown_json}\t{self._rule_version}\t{at}\n"
        )
        wallet.ledger_rows.append(
            f"{ds.wallet}\t{points}\t{SOURCE_DATASET}\t{ds.session_id}\t{self._rule_version}\t"
            f"{ledger_metadata}\t{at}\n"
        )

        # PointsRepository.add_to_user, then what user_stats would read back.
        wallet.total_points += points
        wallet.submissions += 1
        wallet.last_us = award_us
        if points != 0:
            wallet.points_us = award_us
        wallet.rare += is_rare
        wallet.quality_milli_sum += ds.quality_milli
        wallet.subjects.add(subject)
        wallet.grade_a += ds.grade == "A"
        wallet.verified += ds.verified
        wallet.days.add(day)
        if wallet.day == day:
            wallet.day_count += 1
        else:
            wallet.day, wallet.day_count = day, 1

        self._unlock_achievements(wallet, at, award_us)
        wallet.tier = tier_for(wallet.total_points)
        sessions.append(
            ds.session_row(
                f"{points}\t{breakdown_json}\t{quality_multiplier}\t{total_multiplier}\t"
                f"awarded\t0\t{_NULL}\t{_NULL}\t{at}\t{created}\t{at}"
            )
        )
        self.totals.awarded += 1
        self.totals.points += points

    def _unlock_achievements(self, wallet: _Wallet, at: str, award_us: int) -> None:
        """tally.points.service._unlock_achievements: new ones only, bonuses after the check."""
        rules = self.rules
        unlocked = unlocked_achievements(wallet.stats(), rules.early_adopter_contributors)
        bonus_total = 0
        for achievement in unlocked:
            if achievement.key in wallet.achieved:
                continue
            wallet.achieved.add(achievement.key)
            self.totals.achievements += 1
            wallet.achievement_rows.append(
                f"{wallet.address}\t{_text(achievement.key)}\t{_text(achievement.name)}\t"
                f"{_text(achievement.description)}\t{at}\n"
            )
            bonus = rules.achievement_bonus_points.get(achievement.key, 0)
            if bonus > 0:
                wallet.ledger_rows.append(
                    f"{wallet.address}\t{bonus}\t{SOURCE_ACHIEVEMENT}\t"
                    f"{_text(f'{wallet.address}:{achievement.key}')}\t{self._rule_version}\t"
                    f"{_json({'achievement': achievement.name})}\t{at}\n"
                )
                bonus_total += bonus
        if bonus_total:
            wallet.total_points += bonus_total
            wallet.points_us = award_us

    def pending_session(self, ds: _Dataset) -> None:
        """An approved session the award job has not seen yet (points_status NULL)."""
        self.chunk["verification_sessions"].append(
            ds.session_row(
                f"{_NULL}\t{_NULL}\t{_NULL}\t{_NULL}\t{_NULL}\t0\t{_NULL}\t{_NULL}\t{_NULL}\t"
                f"{_ts(ds.created_us)}\t{_ts(ds.completed_us)}"
            )
        )
        self.totals.pending += 1

    def finish_wallet(self, wallet: _Wallet) -> None:
        """The wallet has no datasets to come: its user row and everything that needs it."""
        if wallet.contributor_number is None:
            return  # never awarded: the sweep would not have created a user either
        self.totals.users += 1
        points_at = _ts(wallet.points_us) if wallet.points_us is not None else _NULL
        first, last = _ts(wallet.first_us), _ts(wallet.last_us)
        self.chunk["users"].append(
            f"{wallet.address}\t{wallet.total_points}\t{wallet.submissions}\t{wallet.tier}\t"
            f"{wallet.contributor_number}\t{first}\t{last}\t{points_at}\t{first}\t{last}\n"
        )
        self.chunk["user_submissions"].extend(wallet.submission_rows)
        self.chunk["points_ledger"].extend(wallet.ledger_rows)
        self.chunk["user_achievements"].extend(wallet.achievement_rows)

    def take_chunk(self) -> dict[str, list[str]]:
        chunk, self.chunk = self.chunk, {table: [] for table, _ in _TABLES}
        return chunk


def _stream(
    rng: random.Random,
    users: int,
    start_us: int,
    end_us: int,
    seeder: _Seeder,
    writer: _CopyWriter,
    picks: set[int],
    bar: tqdm[Any],
) -> dict[int, str]:
    """Generate the wallets in joining order and settle their datasets in claim order.

    Wallet j joins at a time that never decreases with j and its datasets come at or after it,
    so everything earlier than the next wallet's join time is final and can be settled.
    """
    heap: list[tuple[int, int, _Dataset, _Wallet]] = []
    span_us = end_us - start_us
    picked: dict[int, str] = {}

    def settle_until(limit_us: int | None) -> None:
        while heap and (limit_us is None or heap[0][0] < limit_us):
            _, _, ds, wallet = heapq.heappop(heap)
            seeder.settle(ds, wallet)
            wallet.remaining -= 1
            if wallet.remaining == 0:
                seeder.finish_wallet(wallet)
            if len(seeder.chunk["verification_sessions"]) >= CHUNK_SESSIONS:
                writer.submit(seeder.take_chunk())

    for j in range(users):
        address = f"0x{rng.getrandbits(160):040x}"
        if j in picks:
            picked[j] = address
        # More wallets join recently: join times spread like sqrt over the history.
        join_us = start_us + int(span_us * math.sqrt((j + rng.random()) / users))
        settle_until(join_us)
        count = rng.randint(1, 5)
        wallet = _Wallet(address=address, remaining=count)
        completed_us = join_us
        for i in range(count):
            if i:
                step = SECOND_US * 60 + int(rng.expovariate(1 / MEAN_GAP_US))
                if completed_us + step > end_us:
                    step = int((end_us - completed_us) * rng.random())
                completed_us += step
            ds = _Dataset(rng, address, completed_us, i == 0)
            heapq.heappush(heap, (completed_us, ds.key, ds, wallet))
        seeder.totals.wallets += 1
        bar.update(1)
    settle_until(None)
    return picked


def seed(
    *,
    users: int = 1000,
    pending: int = 25,
    random_seed: int = 42,
    now: datetime | None = None,
) -> dict[str, int]:
    """Create `users` wallets with 1-5 approved datasets each, settled exactly as the award
    sweep would have settled them in completed_at order, and leave `pending` approved sessions
    for the running award job to pick up. In a database that already holds data the new
    wallets are appended (see the module docstring). Returns the summary it prints."""
    if users < 0 or pending < 0:
        raise ValueError("users and pending must not be negative")
    started = time.perf_counter()
    now_us = ((now or datetime.now(UTC)) - _EPOCH) // timedelta(microseconds=1)
    conn = get_connection()
    with conn.transaction():
        seeder = _load(conn, users, pending, random_seed, end_us=now_us - PENDING_WINDOW_US)
        with tqdm(total=1, desc="counters", unit="step") as bar:
            _finish(conn, seeder)
            bar.update(1)
    # Committed. Give the planner the new sizes now rather than when autovacuum gets to it.
    with tqdm(total=1, desc="analyze", unit="step") as bar:
        conn.execute(
            "ANALYZE users, verification_sessions, user_submissions, points_ledger, "
            "user_achievements, subject_rarity_cache, board_scores, board_score_counts, "
            "board_bucket_counts"
        )
        bar.update(1)
    totals = seeder.totals
    summary = {
        "wallets": totals.wallets,
        "users": totals.users,
        "sessions": totals.sessions,
        "awarded": totals.awarded,
        "skipped": totals.skipped,
        "held": totals.held,
        "failed": totals.failed,
        "points": totals.points,
        "achievements": totals.achievements,
        "pending": totals.pending,
    }
    print(
        f"Seeded {totals.users:,} users ({totals.wallets:,} wallets): {totals.sessions:,} "
        f"sessions, {totals.awarded:,} awarded ({totals.points:,} points), "
        f"{totals.skipped:,} skipped, {totals.held:,} held, {totals.failed:,} failed, "
        f"{totals.achievements:,} achievements; {totals.pending:,} pending for the award job; "
        f"datasets {seeder.datasets:,}, contributors {seeder.contributors:,}; "
        f"{time.perf_counter() - started:.1f}s"
    )
    return summary


def _load(conn: Any, users: int, pending: int, random_seed: int, *, end_us: int) -> _Seeder:
    """Generate, settle and COPY everything, inside the caller's transaction."""
    conn.execute("SET LOCAL statement_timeout = 0")
    # The sweep takes this lock first for every award: holding it serialises us with it.
    counters = {
        r["name"]: int(r["value"])
        for r in conn.execute(
            "SELECT name, value FROM platform_counters "
            "WHERE name IN ('datasets', 'contributors') ORDER BY name FOR UPDATE"
        ).fetchall()
    }
    row = conn.execute("SELECT count(*) AS n FROM verification_sessions").fetchone()
    existing_sessions = int(row["n"]) if row else 0
    subject_counts = {
        r["subject"]: int(r["dataset_count"])
        for r in conn.execute("SELECT subject, dataset_count FROM subject_rarity_cache")
    }
    stream_key: int | str = (
        random_seed if existing_sessions == 0 else f"{random_seed}:{existing_sessions}"
    )
    rng = random.Random(stream_key)
    pick_rng = random.Random(f"{stream_key}:pending")
    picks = [pick_rng.randrange(users) for _ in range(pending)] if users else []

    # Every row COPYed into user_submissions, points_ledger and user_achievements runs a
    # foreign-key check against users / verification_sessions, planned once per backend from
    # the statistics of the moment. A users table last vacuumed or analysed while empty gets
    # those checks planned as sequential scans, which turns the load quadratic; the unique
    # indexes are always the right plan here.
    conn.execute("SET LOCAL enable_seqscan = off")
    seeder = _Seeder(
        get_settings(),
        datasets=counters.get("datasets", 0),
        contributors=counters.get("contributors", 0),
        subject_counts=subject_counts,
    )
    with (
        tqdm(total=users, desc="settle", unit="wallet", position=0) as bar,
        tqdm(desc="copy", unit="row", position=1) as copy_bar,
    ):
        writer = _CopyWriter(conn, copy_bar)
        try:
            start_us = end_us - HISTORY_DAYS * DAY_US
            picked = _stream(rng, users, start_us, end_us, seeder, writer, set(picks), bar)
            # Approved sessions for the running award job, completed after all the rest.
            times = sorted(end_us + 1 + int(rng.random() * (PENDING_WINDOW_US - 1)) for _ in picks)
            for pick, completed_us in tqdm(
                list(zip(picks, times, strict=True)), desc="pending", unit="session"
            ):
                seeder.pending_session(_Dataset(rng, picked[pick], completed_us, True))
            writer.submit(seeder.take_chunk())
            writer.close()
        except BaseException:
            writer.abort()
            raise
    return seeder


def _finish(conn: Any, seeder: _Seeder) -> None:
    """Final subject counts (tier as bump_subject sets it) and platform counters."""
    rows = []
    for subject, last_us in seeder.subject_updated.items():
        count = seeder.subject_counts[subject]
        tier, multiplier = subject_rarity(count)
        rows.append((subject, count, tier, multiplier, _EPOCH + timedelta(microseconds=last_us)))
    if rows:
        with conn.cursor() as cur:
            cur.executemany(
                """
                INSERT INTO subject_rarity_cache
                    (subject, dataset_count, rarity_tier, rarity_multiplier, last_updated)
                VALUES (%s, %s, %s, %s, %s)
                ON CONFLICT (subject) DO UPDATE
                    SET dataset_count = EXCLUDED.dataset_count,
                        rarity_tier = EXCLUDED.rarity_tier,
                        rarity_multiplier = EXCLUDED.rarity_multiplier,
                        last_updated = GREATEST(subject_rarity_cache.last_updated,
                                                EXCLUDED.last_updated)
                """,
                rows,
            )
    conn.execute(
        "UPDATE platform_counters SET value = %s WHERE name = 'datasets'", (seeder.datasets,)
    )
    conn.execute(
        "UPDATE platform_counters SET value = %s WHERE name = 'contributors'",
        (seeder.contributors,),
    )


def ensure_demo_season(now: datetime | None = None) -> str | None:
    """A season over the seeded history (and a month ahead), unless seasons exist already."""
    from tally.leaderboards import service as leaderboards
    from tally.leaderboards.models import SeasonIn

    if leaderboards.list_seasons():
        return None
    now = now or datetime.now(UTC)
    start = (now - timedelta(days=HISTORY_DAYS + 7)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    start -= timedelta(days=start.weekday())
    slug = f"demo-{now:%Y}"
    leaderboards.create_season(
        SeasonIn(
            slug=slug,
            name=f"Demo season {now:%Y}",
            starts_at=start,
            ends_at=now + timedelta(days=30),
        )
    )
    print(f"Created season {slug} (boards rebuilt from the ledger)")
    return slug


def has_data() -> bool:
    row = get_connection().execute("SELECT EXISTS (SELECT 1 FROM users) AS any").fetchone()
    return bool(row and row["any"])


COMMUNITY_ZONES = [
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Asia/Kolkata",
    "America/Los_Angeles",
]
COMMUNITY_PLACES = [
    "Brooklyn, New York, USA",
    "Austin, Texas, USA",
    "Berlin, Germany",
    "Pune, Maharashtra, India",
    "Lisbon, Portugal",
    "Oakland, California, USA",
]


def seed_community(
    *, days: int = 14, taps_per_user: int = 12, random_seed: int = 42, now: datetime | None = None
) -> dict[str, int]:
    """Profiles for every wallet, and `days` of taps between them (people mostly tap the same
    few neighbours, a few people tap a lot), then the nightly rollup, so the community
    endpoints have something to show. Re-running adds nothing (client ids are fixed)."""
    from tally.community.etl import run_nightly

    end = now or datetime.now(UTC)
    conn = get_connection()
    with conn.transaction():
        conn.execute("SET LOCAL statement_timeout = 0")  # 100k users: 1.2M taps in one insert
        conn.execute("SELECT setseed(%s)", (((random_seed % 1000) / 1000.0),))
        conn.execute(
            """
            INSERT INTO profiles (address, display_name, location, timezone)
            SELECT u.wallet_address, 'Member ' || u.id,
                   (%(places)s::text[])[1 + u.id %% cardinality(%(places)s::text[])],
                   (%(zones)s::text[])[1 + u.id %% cardinality(%(zones)s::text[])]
            FROM users u
            ON CONFLICT (address) DO NOTHING
            """,
            {"places": COMMUNITY_PLACES, "zones": COMMUNITY_ZONES},
        )
        row = conn.execute(
            """
            WITH people AS (
                SELECT wallet_address, (row_number() OVER (ORDER BY id) - 1)::int AS i,
                       count(*) OVER ()::int AS n
                FROM users
            ), draws AS (
                SELECT g, (SELECT max(n) FROM people) AS n,
                       floor(power(random(), 2) * (SELECT max(n) FROM people))::int AS a,
                       1 + floor(random() * 12)::int AS step,
                       %(end)s::timestamptz - random() * %(days)s * interval '1 day' AS at
                FROM generate_series(1, %(taps)s) AS g
            ), added AS (
                INSERT INTO taps (client_tap_id, id1, id2, time, received_at)
                SELECT 'seed-' || %(seed)s || '-' || d.g, pa.wallet_address, pb.wallet_address,
                       d.at, least(d.at + random() * interval '2 minutes', %(end)s)
                FROM draws d
                JOIN people pa ON pa.i = d.a
                JOIN people pb ON pb.i = (d.a + d.step) %% d.n
                WHERE d.n > 1 AND pa.i <> pb.i
                ON CONFLICT (client_tap_id) DO NOTHING
                RETURNING 1
            )
            SELECT count(*) AS n FROM added
            """,
            {
                "end": end,
                "days": days,
                "taps": taps_per_user * max(_count_users(conn), 0),
                "seed": random_seed,
            },
        ).fetchone()
    added = int(row["n"]) if row else 0
    # Committed above, so nothing is in flight: roll up to this instant, not to now minus the lag.
    result = run_nightly(horizon=datetime.now(UTC))
    print(f"Seeded {added:,} taps over {days} days; community rollups: {len(result.stages)} stages")
    return {"taps": added}


def _count_users(conn: Any) -> int:
    row = conn.execute("SELECT count(*) AS n FROM users").fetchone()
    return int(row["n"]) if row else 0


# The sample events' proof-of-usefulness cast: fixed keys, so the DIDs and signatures in
# events/ stay valid. Seeds 1 and 2 are the agent and its client, 10-15 stake to audit.
POU_SAMPLE_TASK = UUID("7b1e4c2a-5d3f-4e8a-9c6b-2f0a1d3e5c7b")
POU_AGENT_SEED, POU_CLIENT_SEED = 1, 2
POU_AUDITOR_SEEDS = range(10, 16)


def pou_identity(seed_number: int) -> tuple[Any, str]:
    """The sample cast's key and did:key for a seed number."""
    from tally.pou.identity import new_identity

    return new_identity(seed_number.to_bytes(32, "big"))


def seed_pou() -> dict[str, int]:
    """Sample agents with stakes, and the sample events' receipt with three signed audits (so
    a client's ACCEPTED, or a finalize, completes it). Re-running adds nothing."""
    from tally.pou import service
    from tally.pou.identity import attestation_payload, sign
    from tally.pou.models import AgentIn, AttestationIn, ReceiptIn, StakeLockIn

    _, agent = pou_identity(POU_AGENT_SEED)
    _, client = pou_identity(POU_CLIENT_SEED)
    for did in (agent, client):
        service.register_agent(AgentIn(did=did))
    for number in POU_AUDITOR_SEEDS:
        _, did = pou_identity(number)
        service.register_agent(AgentIn(did=did))
        service.lock_stake(did, StakeLockIn(amount_atomic=100, reference="seed"))
    receipt, _ = service.create_receipt(
        ReceiptIn(
            task_id=POU_SAMPLE_TASK,
            intent_id="intent-sample-1",
            negotiation_id="negotiation-sample-1",
            agent_did=agent,
            client_did=client,
            intent_type="summarize",
            inputs_ref="ipfs://bafy-sample-inputs",
            outputs_ref="ipfs://bafy-sample-outputs",
            metrics={"latency_ms": 1800},
            payment_request_id="payreq-sample-1",
            amount_atomic=250_000,
        )
    )
    given = {(a.by_did, a.type) for a in service.get_receipt(receipt.id).attestations}
    seeds = {pou_identity(n)[1]: n for n in POU_AUDITOR_SEEDS}
    for did in receipt.committee[:3]:
        if (did, "AUDIT_PASS") in given:
            continue
        key, _ = pou_identity(seeds[did])
        payload = attestation_payload(str(receipt.id), did, "AUDIT_PASS", 0.9, 0.95, None)
        body = AttestationIn(
            type="AUDIT_PASS", score=0.9, confidence=0.95, signature=sign(key, payload)
        )
        service.attest(receipt.id, did, body)
    return {"agents": 2 + len(POU_AUDITOR_SEEDS), "receipts": 1}
