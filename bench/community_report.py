"""The community section of docs/performance.md, between the bench:community markers."""

from __future__ import annotations

from pathlib import Path

from bench.community import (
    ACTIVITY_SKEW,
    ANY_HOUR_SHARE,
    BENCH_STAGE_TIMEOUT_MS,
    EVENT_SHARE,
    FRIEND_SHARE,
    FRIENDS,
    LAMBDA_LIMIT_S,
    LATE_SHARE,
    NO_LOCATION_SHARE,
    PROFILE_SHARE,
    REPLAY_MAX_TAPS,
    ZONE_SHARE,
    ZONES,
    CommunityReport,
    Comparison,
    EtlRun,
    StageTime,
)
from bench.community_naive import NaiveRun
from bench.report import (
    SuiteRunInfo,
    _bullet,
    _duration,
    _para,
    machine_rows,
    write_block,
)
from bench.report import seconds_text as _s

START = "<!-- bench:community:start -->"
END = "<!-- bench:community:end -->"
DAY_STAGES = ("edges", "days", "streaks")


CommunityRunInfo = SuiteRunInfo


def write(path: Path, block: str) -> None:
    write_block(path, block, START, END)


def _rate(events: int, seconds: float) -> str:
    return f"{events / seconds:,.0f}" if seconds > 0 else "-"


def _x(a: float, b: float) -> str:
    """a / b as a ratio, `b` being the reference."""
    return f"{a / b:,.1f}x" if b > 0 else "-"


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB"


def _ok(ok: bool) -> str:
    return "ok" if ok else "**FAILED**"


def _run_table(info: CommunityRunInfo, rep: CommunityReport) -> str:
    ds = rep.dataset
    quick = (
        " (`--quick`: smoke-test sizes, not the figures the issue asks for)" if info.quick else ""
    )
    return "\n".join(
        [
            *machine_rows(info),
            f"| Sizes | {ds.taps:,} taps, {ds.users:,} users, {ds.days} days{quick} |",
            f"| ETL settings | chunks of {rep.chunk_hours} h of received time (nightly), "
            f"{rep.backfill_chunk_days} days (rebuild); statement timeout raised to "
            f"{rep.stage_timeout_ms / 3_600_000:.0f} h for the bench (deployed: "
            f"{rep.deployed_timeout_ms / 1000:.0f} s, checked below) |",
            f"| Bench run time | {_duration(info.bench_seconds)} |",
            f"| Load before the run | {info.load_at_start[0]:.2f} / {info.load_at_start[1]:.2f} / "
            f"{info.load_at_start[2]:.2f} (1/5/15-minute `os.getloadavg()`; PostgreSQL and the "
            "bench share the same cores) |",
        ]
    )


def _dataset(rep: CommunityReport) -> str:
    ds = rep.dataset
    rates = [rows / s for rows, s in ds.statements if s > 0]
    zones = ", ".join(f"{name} {n:,}" for name, n in ds.zones.items())
    total_taps = ds.history_taps + ds.day_taps
    lines = [
        f"{total_taps:,} taps between {ds.start:%Y-%m-%d} and {ds.end:%Y-%m-%d} (UTC): "
        f"{ds.history_taps:,} received before {ds.history_end:%Y-%m-%d %H:%M} (the history) "
        f"and {ds.day_taps:,} received on the last day, held back as the incremental day "
        f"({ds.day_late:,} of them happened on earlier days). "
        f"{ds.late_taps:,} taps ({ds.late_taps / max(total_taps, 1):.1%}) arrived more than an "
        "hour late.",
        f"{ds.active_users:,} users tapped in the history: median {ds.median_user_taps:,.0f} "
        f"taps each, the busiest {ds.busiest_user_taps:,}. {ds.pairs:,} distinct pairs "
        f"({ds.history_taps / max(ds.pairs, 1):.1f} taps per pair).",
        f"{ds.profiles:,} profiles: {zones}.",
        f"Load: {len(ds.statements)} `INSERT ... SELECT generate_series` "
        f"statement{'' if len(ds.statements) == 1 else 's'} in "
        f"{_s(ds.load_seconds)} s ({min(rates, default=0):,.0f} to {max(rates, default=0):,.0f} "
        f"taps/s), the {len(ds.indexes)} secondary indexes of `taps` ("
        + ", ".join(f"`{name}`" for name in ds.indexes)
        + f") dropped before and rebuilt after in {_s(ds.index_seconds)} s, "
        f"`VACUUM (ANALYZE)` {_s(ds.vacuum_seconds)} s. After the history runs the rollup "
        f"tables were vacuumed too ({_s(ds.rollup_vacuum_seconds)} s), as autovacuum would "
        "have over the months.",
        "On disk at the end: "
        + ", ".join(f"{name} {_mb(size)}" for name, size in ds.sizes.items())
        + ".",
    ]
    return "\n".join(_bullet(line) for line in lines)


def _stage_table(rep: CommunityReport) -> str:
    history, rebuilt = rep.history, rep.rebuild
    names = [s.stage for s in history.stages] if history else []
    names += [s.stage for s in rebuilt.stages if s.stage not in names]
    if history is None:
        lines = [
            "| Stage | Full rebuild: s | chunks | rows written |",
            "|---|---:|---:|---:|",
        ]
    else:
        lines = [
            "| Stage | Nightly from empty: s | chunks | rows written | Full rebuild: s | chunks | "
            "rows written |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
    for name in names:
        h = history.stage(name) if history else None
        r = rebuilt.stage(name)
        if not _ran(h) and not _ran(r):
            continue
        rebuilt_cells = f"{_s(r.seconds)} | {r.chunks} | {r.written:,}" if r else "- | - | -"
        if history is None:
            lines.append(f"| {name} | {rebuilt_cells} |")
            continue
        lines.append(
            f"| {name} | "
            + (f"{_s(h.seconds)} | {h.chunks} | {h.written:,}" if h else "- | - | -")
            + f" | {rebuilt_cells} |"
        )
    taps = rep.dataset.history_taps
    if history is None:
        lines.append(f"| **Total (wall)** | **{_s(rebuilt.seconds)}** | | |")
        lines.append(f"| Taps/s | {_rate(taps, rebuilt.seconds)} | | |")
    else:
        lines.append(
            f"| **Total (wall)** | **{_s(history.seconds)}** | | | **{_s(rebuilt.seconds)}** | | |"
        )
        lines.append(
            f"| Taps/s | {_rate(taps, history.seconds)} | | | {_rate(taps, rebuilt.seconds)} | | |"
        )
    return "\n".join(lines)


def _ran(stage: StageTime | None) -> bool:
    """False for a stage that had nothing to do at all (no user changed zone, say)."""
    return stage is not None and (stage.chunks > 0 or stage.seconds > 0)


def _comparisons(items: list[Comparison]) -> str:
    lines = [
        "| Table | Compared | Users (groups) | Differing | Result |",
        "|---|---|---:|---:|---|",
    ]
    for c in items:
        lines.append(
            f"| `{c.table}` | {c.left} vs {c.right} | {c.groups:,} | {c.differing:,} | "
            f"{_ok(c.ok)} |"
        )
    examples = [c for c in items if c.example]
    if examples:
        lines.append("")
        lines.append("First difference of each failing table (rows only on one side):")
        lines.append("")
        lines.append("```text")
        for c in examples:
            lines.append(f"{c.table}, {c.left} vs {c.right}:")
            lines += [f"  {e}" for e in c.example]
        lines.append("```")
    return "\n".join(lines)


def _incremental_table(rep: CommunityReport) -> str:
    inc = rep.incremental
    lines = ["| Stage | s | keys | rows written |", "|---|---:|---:|---:|"]
    for s in inc.stages:
        if _ran(s):
            keys = f"{s.keys:,}" if s.keys else "-"
            lines.append(f"| {s.stage} | {_s(s.seconds)} | {keys} | {s.written:,} |")
    lines.append(f"| **Total (wall)** | **{_s(inc.seconds)}** | | |")
    return "\n".join(lines)


def _naive_table(rep: CommunityReport) -> str:
    inc = rep.incremental
    taps = rep.dataset.day_taps
    tally_total = inc.seconds_of(*DAY_STAGES)
    rows = [
        "| Implementation | edges s | days s | streaks s | Total s | Taps/s | Statements | "
        "vs Tally |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        "| Tally: set-based SQL (`run_nightly`) | "
        + " | ".join(_s(inc.seconds_of(n)) for n in DAY_STAGES)
        + f" | **{_s(tally_total)}** | {_rate(taps, tally_total)} | one per stage | 1.0x |",
    ]
    for run in (rep.batch, rep.per_row):
        rows.append(
            f"| {_naive_label(run)} | "
            + " | ".join(_s(run.seconds.get(n, float("nan"))) for n in DAY_STAGES)
            + f" | **{_s(run.total)}** | {_rate(taps, run.total)} | {run.queries:,} | "
            f"{_x(run.total, tally_total)} |"
        )
    return "\n".join(rows)


def _naive_label(run: NaiveRun) -> str:
    if run.name.startswith("batch"):
        return "Batch Python: fetch, dicts, `executemany`"
    return "Per-row: a statement per tap, per user day, per user"


def _edge_table(rep: CommunityReport) -> str:
    e = rep.edges
    return "\n".join(
        [
            "| Edge merge for the day | Reads | s | vs Tally |",
            "|---|---|---:|---:|",
            f"| Tally: entering and leaving taps only (edges stage of `run_nightly`) | "
            f"{e.entering:,} entering + {e.leaving:,} leaving taps | **{_s(e.tally_seconds)}** "
            "| 1.0x |",
            f"| Naive incremental: recount the {e.touched_pairs:,} touched pairs over their "
            f"90 days | every tap of those pairs | **{_s(e.recount_seconds)}** | "
            f"{_x(e.recount_seconds, e.tally_seconds)} |",
            f"| Full window: `GROUP BY` over 90 days of taps, upsert every pair | "
            f"{e.window_taps:,} taps, {e.window_pairs:,} live pairs | **{_s(e.full_seconds)}** "
            f"| {_x(e.full_seconds, e.tally_seconds)} |",
        ]
    )


def _checks(rep: CommunityReport) -> str:
    return "\n".join(
        ["| Check | Result |", "|---|---|"]
        + [f"| {name} | {_ok(ok)} |" for name, ok in rep.checks.items()]
    )


def _longest(run: EtlRun) -> tuple[str, float]:
    stage = max(run.stages, key=lambda s: s.seconds / max(s.chunks, 1), default=None)
    if stage is None:
        return "-", 0.0
    return stage.stage, stage.seconds / max(stage.chunks, 1)


def _budget(rep: CommunityReport) -> str:
    inc, rebuilt = rep.incremental, rep.rebuild
    limit = rep.lambda_timeout_s or LAMBDA_LIMIT_S
    where = "the ETL function's timeout in template.yaml" if rep.lambda_timeout_s else "Lambda's"
    slowest = max(inc.stages, key=lambda s: s.seconds, default=None)
    deployed = rep.deployed_timeout_ms / 1000
    fits = inc.seconds < limit
    text = (
        f"**The 15-minute budget.** The incremental day took {_s(inc.seconds)} s in all, "
        f"{inc.seconds / limit:.1%} of the {limit} s of {where}"
        + (
            f"; its slowest stage, {slowest.stage}, {_s(slowest.seconds)} s in one statement "
            f"against the deployed statement timeout of {deployed:.0f} s"
            if slowest
            else ""
        )
        + (". It fits in one invocation" if fits else ". It does **not** fit in one invocation")
        + f" with {max(limit - inc.seconds, 0):,.0f} s to spare."
    )
    finishing = [s for s in rebuilt.stages if s.chunks == 1]
    longest = max(finishing, key=lambda s: s.seconds, default=None)
    text += (
        f" The full rebuild took {_duration(rebuilt.seconds)}: days and weeks go "
        f"{rep.backfill_chunk_days} days per transaction and a backfill resumes in a fresh "
        "invocation when time runs out, but edges, streaks, the weekly boards, quests and surges "
        "each run as one statement over the whole range"
        + (
            f" (the longest, {longest.stage}, {_s(longest.seconds)} s"
            + (
                f", over the deployed {deployed:.0f} s statement timeout"
                if longest.seconds > deployed
                else ""
            )
            + ")"
            if longest
            else ""
        )
        + "."
    )
    if rep.history is not None:
        chunk_name, per_chunk = _longest(rep.history)
        text += (
            f" Replaying the history through the nightly job costs most in {chunk_name}: "
            f"{_s(per_chunk)} s per {rep.chunk_hours}-hour chunk on average."
        )
    return _para(text)


def _history_text(rep: CommunityReport) -> str:
    rebuild = (
        f"days and weeks {rep.backfill_chunk_days} days per transaction (each week once), then "
        "edges, streaks, weekly boards, quests and surges over the whole range. Seconds per "
        "stage from the `StageResult`s; rows written counts rows inserted, changed or removed."
    )
    if rep.history is None:
        return (
            "`rebuild_all(horizon=<end of history>)`, what a first install over existing history "
            "runs: every stage starts at the horizon and a backfill of every day with taps "
            f"derives the rollups ({rep.rebuild_days[0]} to {rep.rebuild_days[1]}): "
            + rebuild
            + f" At this size the history is not also replayed through the nightly job (above "
            f"{REPLAY_MAX_TAPS:,} taps the bench skips it: a day-by-day replay of months is what "
            "the rebuild is for); smaller runs do both and compare them row for row."
        )
    return (
        f"First `run_nightly(horizon=<end of history>)` with empty watermarks: each stage walks "
        f"the history {rep.chunk_hours} hours of received time per transaction, as the job "
        "would catch up after an outage. Then the rollup tables are emptied (their rows kept "
        f"aside; the watermarks stay) and `backfill_now({rep.rebuild_days[0]}, "
        f"{rep.rebuild_days[1]})` rebuilds every local day of the history (the full rebuild): "
        + rebuild
        + " The rebuild must write exactly the rows the nightly run left:"
    )


def _plan(rep: CommunityReport) -> str:
    """The slower of the days and weeks statements, EXPLAINed on a copy (folded: it is long)."""
    return "\n".join(
        [
            _para(
                f"Where the {rep.plan_stage} stage's time goes: `EXPLAIN (ANALYZE, BUFFERS)` of "
                "the statement `EtlRepository` sends for the incremental day, run on the per-row "
                "job's copy after that job, in a transaction rolled back. "
                + (
                    "The naive jobs leave the weekly rows as they were before the day, so this "
                    "is the stage's own work."
                    if rep.plan_stage == "weeks"
                    else "The day rows there are already the day's, so it reads what the stage "
                    "reads and finds nothing to write."
                )
            ),
            "",
            "<details>",
            f"<summary>Plan of the {rep.plan_stage} statement</summary>",
            "",
            "```text",
            rep.plan,
            "```",
            "",
            "</details>",
        ]
    )


def render(info: CommunityRunInfo, rep: CommunityReport) -> str:
    ds = rep.dataset
    inc = rep.incremental
    tally_day = inc.seconds_of(*DAY_STAGES)
    weeks = inc.seconds_of("weeks")
    e = rep.edges
    parts = [
        "## Community activity: how these figures were taken",
        _para(
            f"Generated by `python -m bench --suite community` on {info.date}; a re-run "
            "replaces everything between the `bench:community` markers of this file and "
            "nothing else. Options: `--taps`, `--tap-users`, `--days`, `--quick`."
        ),
        _run_table(info, rep),
        "## Community: the data set",
        _para(
            "Taps are generated in SQL, a few days per statement and in received order, as a "
            f"live table fills. The tapper is user `floor(users * random()^{ACTIVITY_SKEW})`, "
            f"so a few users tap a lot; {FRIEND_SHARE:.0%} of taps go to one of the tapper's "
            f"{FRIENDS} fixed friends (friend `floor({FRIENDS} * random()^2)`: a best friend "
            "or two, then a tail), the rest to anyone, so pairs repeat. "
            f"{ANY_HOUR_SHARE:.0%} of taps fall at any hour, the rest between 08:00 and "
            "22:00 UTC peaking mid-afternoon; on one day a week "
            f"{EVENT_SHARE:.0%} of the day's taps fall in one hour (an event, for the surge "
            "stage). A tap is received 2 s to 10 min after it happened, "
            f"{LATE_SHARE:.0%} of them 1 hour to 3 days after. {PROFILE_SHARE:.0%} of users "
            f"have a profile, {ZONE_SHARE:.0%} of those in each of "
            + ", ".join(ZONES)
            + ", the rest UTC, with a location such as `Munich, Bavaria, Germany` or "
            f"`Accra, Ghana` ({NO_LOCATION_SHARE:.0%} none)."
        ),
        _dataset(rep),
        "## Community: the history, "
        + ("nightly from empty and " if rep.history else "")
        + "as a full rebuild",
        _para(_history_text(rep)),
        _stage_table(rep),
        _comparisons(rep.rebuild_vs_nightly) if rep.rebuild_vs_nightly else "",
        "## Community: one incremental day",
        _para(
            f"The held-back day, a {ds.history_end:%A} ({ds.day_taps:,} taps received in "
            f"[{ds.history_end:%Y-%m-%d %H:%M}, {ds.end:%Y-%m-%d %H:%M}) UTC, "
            f"{ds.day_late:,} of them for earlier days) is inserted with every index of "
            f"`taps` in place ({_s(rep.ingest_seconds)} s in one statement) and "
            f"`run_nightly(horizon={ds.end:%Y-%m-%d %H:%M})` brings every stage up to it. "
            "The day is the last of its ISO week (UTC), so the weekly rollups it recomputes "
            "hold a whole week: the most expensive night of the week for the weeks stage."
        ),
        _incremental_table(rep),
        _para(
            "The same day through two naive jobs (bench/community_naive.py), each on its own "
            "byte copy of the database as it was before the day (`CREATE DATABASE ... "
            f"TEMPLATE`, {_s(rep.clone_seconds)} s for both), each stage one transaction: "
            "edges (taps_90d, first and last tap), day activity (taps, distinct "
            "counterparts, new connections, second-degree reach of every touched user day, "
            "including the days of those who met a tapper that day) and streaks, the three "
            "stages Tally's figure adds up. The batch job reads the day's taps, the taps "
            "leaving the window and every tap from three days before the first touched tap "
            f"to three days after the last ({rep.batch.rows_read:,} rows read in all), "
            "aggregates in dicts and writes with `executemany`. The per-row job sends one "
            "statement per tap (edges), per touched tap to find the people met that day, per "
            "user day (its activity, computed and upserted in SQL), and a few per user "
            "(streaks). Both must leave exactly Tally's rows (compared below)."
        ),
        _naive_table(rep),
        _comparisons(rep.implementations_agree),
        _para(
            f"Tally's edges, days and streaks took {_s(tally_day)} s for {ds.day_taps:,} "
            f"taps, {_rate(ds.day_taps, tally_day)} taps/s; the batch job "
            f"{_x(rep.batch.total, tally_day)} that, the per-row job "
            f"{_x(rep.per_row.total, tally_day)}. The weekly activity, which the naive jobs "
            f"do not maintain, took another {_s(weeks)} s."
        ),
        "## Community: the 90-day edge window",
        _para(
            "Each night the window moves a day: Tally adds the taps received that night and "
            "subtracts those whose time just left the window, so its cost follows the taps "
            "entering and leaving, not the size of the window. The two naive merges below "
            f"ran on a copy already at the day's end, in transactions rolled back; the "
            f"window then held {e.window_taps:,} taps."
            + (
                " (With fewer than 90 days of data nothing has left the window yet, so "
                "this run does not exercise the leaving side.)"
                if e.leaving == 0
                else ""
            )
        ),
        _edge_table(rep),
        "## Community: checks and the Lambda budget",
        _checks(rep),
        _budget(rep),
        _plan(rep),
        _para(
            f"(The bench raises the stage statement timeout to "
            f"{BENCH_STAGE_TIMEOUT_MS / 3_600_000:.0f} h so that the long full runs are "
            "measured rather than cut off; the incremental day is checked against the "
            "deployed value above.)"
        ),
    ]
    return "\n\n".join(part for part in parts if part)
