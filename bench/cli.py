"""`python -m bench`: measure Tally (points, leaderboards, community, matchmaking, proof of
usefulness) and write docs/performance.md."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# tally's modules read these when first imported; set them as the local runtime does.
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "tally")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Tally")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "INFO")

QUICK = {
    "users": 20_000,
    "pending": 2_000,
    "concurrent": 1_000,
    "ledger": 200_000,
    "chunk": 50_000,
    "taps": 200_000,
    "tap_users": 5_000,
    "days": 30,
    "receipts": 5_000,
    "agents": 200,
    "attests": 300,
    "load_seconds": 10,
    "load_users": 5_000,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--users", type=int, default=1_000_000, help="users on the leaderboard")
    parser.add_argument(
        "--pending", type=int, default=100_000, help="sessions drained by one award sweep"
    )
    parser.add_argument(
        "--concurrent",
        type=int,
        default=20_000,
        help="sessions drained by two award sweeps running at once",
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="award_pending batch size (settings default)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK['users']:,} users, {QUICK['pending']:,} pending",
    )
    parser.add_argument(
        "--suite",
        choices=("points", "boards", "community", "matchmaking", "pou", "load", "all"),
        default="all",
        help="points: award sweep and points leaderboard; boards: leaderboards vs Redis; "
        "community: the nightly community ETL; matchmaking: jobs and voter calls; "
        "pou: the proof-of-usefulness finalizer and attestation writes; load: mixed load on "
        "every route group of `tally dev` while its jobs run, into docs/reliability.md "
        "(not part of all)",
    )
    parser.add_argument(
        "--ledger", type=int, default=10_000_000, help="ledger entries loaded for --suite boards"
    )
    parser.add_argument(
        "--chunk",
        type=int,
        default=500_000,
        help="rows per INSERT statement (ledger entries; taps, rounded to whole days)",
    )
    parser.add_argument(
        "--taps", type=int, default=10_000_000, help="taps generated for --suite community"
    )
    parser.add_argument(
        "--tap-users", type=int, default=200_000, help="users who tap, for --suite community"
    )
    parser.add_argument(
        "--days",
        type=int,
        default=120,
        help="days the taps span, for --suite community (the last one is the incremental day)",
    )
    parser.add_argument(
        "--profiles", type=int, default=100_000, help="profiles for --suite matchmaking"
    )
    parser.add_argument(
        "--receipts",
        type=int,
        default=100_000,
        help="pending receipts per set for --suite pou (each with 3 attestations)",
    )
    parser.add_argument(
        "--agents", type=int, default=2_000, help="agents loaded for --suite pou (at least 8)"
    )
    parser.add_argument(
        "--attests",
        type=int,
        default=2_000,
        help="signed attestations timed through the service for --suite pou",
    )
    parser.add_argument(
        "--replay",
        choices=("auto", "yes", "no"),
        default="auto",
        help="also replay the community history through the nightly job (auto: up to 1M taps)",
    )
    parser.add_argument(
        "--load-budget",
        type=float,
        default=None,
        help="stop loading the ledger (at a statement boundary) after this many seconds",
    )
    parser.add_argument(
        "--load-seconds", type=float, default=60, help="measured seconds for --suite load"
    )
    parser.add_argument(
        "--load-users", type=int, default=100_000, help="users seeded for --suite load"
    )
    parser.add_argument(
        "--load-workers", type=int, default=8, help="client threads for --suite load"
    )
    parser.add_argument(
        "--load-out", type=Path, default=Path("docs/reliability.md"), help="--suite load's file"
    )
    parser.add_argument("--out", type=Path, default=Path("docs/performance.md"))
    args = parser.parse_args(argv)
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, min(getattr(args, name), value))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]

    from bench.db import open_server, server_facts
    from bench.stats import log

    server = open_server()
    facts = server_facts(server)
    log(f"PostgreSQL {facts['server_version']} ({'embedded' if server.embedded else 'given'})")
    ok = True
    if args.suite in ("points", "all"):
        ok = run_points(args, server, facts, started, load_at_start) and ok
    if args.suite in ("boards", "all"):
        ok = run_boards(args, server, facts, time.perf_counter(), os.getloadavg()) and ok
    if args.suite in ("community", "all"):
        ok = run_community(args, server, facts, time.perf_counter(), os.getloadavg()) and ok
    if args.suite in ("matchmaking", "all"):
        from bench import matchmaking

        ok = matchmaking.run_suite(server, facts, args.out, args.profiles) and ok
    if args.suite in ("pou", "all"):
        ok = run_pou(args, server, facts, time.perf_counter(), os.getloadavg()) and ok
    if args.suite == "load":
        from bench import load

        ok = (
            load.run_suite(
                server,
                facts,
                args.load_out,
                seconds=args.load_seconds,
                users=args.load_users,
                workers=args.load_workers,
                quick=args.quick,
            )
            and ok
        )
    return 0 if ok else 1


def run_points(
    args: argparse.Namespace,
    server: Any,
    facts: dict[str, str],
    started: float,
    load_at_start: float,
) -> bool:
    from bench import award, leaderboard, report
    from bench.db import fresh_database
    from bench.stats import log, quiet_stdout
    from tally.settings import get_settings

    with quiet_stdout():
        with fresh_database(server, "award") as url:
            batch_size = args.batch_size or get_settings().award_batch_size
            award_report = award.run(
                url, pending=args.pending, concurrent=args.concurrent, batch_size=batch_size
            )
        reps = leaderboard.QUICK_REPS if args.quick else leaderboard.FULL_REPS
        with fresh_database(server, "board") as url:
            board_report = leaderboard.run(url, users=args.users, reps=reps)

    info = report.RunInfo(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cpus=os.cpu_count() or 0,
        platform=platform.platform(),
        python=platform.python_version(),
        postgres=facts,
        embedded=server.embedded,
        quick=args.quick,
        users=args.users,
        pending=args.pending,
        concurrent=args.concurrent,
        bench_seconds=time.perf_counter() - started,
        load_at_start=load_at_start,
        schedule=award_job_schedule(),
    )
    report.write(args.out, report.render(info, award_report, board_report))
    log(f"wrote {args.out}")
    return all(award_report.checks.values())


def run_boards(
    args: argparse.Namespace,
    server: Any,
    facts: dict[str, str],
    started: float,
    load_at_start: tuple[float, float, float],
) -> bool:
    from bench import boards, boards_report
    from bench.db import fresh_database
    from bench.stats import log, quiet_stdout

    reps = boards.QUICK_REPS if args.quick else boards.FULL_REPS
    with quiet_stdout(), fresh_database(server, "boards") as url:
        result = boards.run(
            url,
            users=args.users,
            ledger=args.ledger,
            chunk=args.chunk,
            reps=reps,
            budget=args.load_budget,
        )
    info = suite_info(args, server, facts, started, load_at_start)
    boards_report.write(args.out, boards_report.render(info, result))
    log(f"wrote {args.out}")
    return all(result.checks.values())


def suite_info(
    args: argparse.Namespace,
    server: Any,
    facts: dict[str, str],
    started: float,
    load_at_start: tuple[float, float, float],
) -> Any:
    from bench.report import SuiteRunInfo

    return SuiteRunInfo(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cpus=os.cpu_count() or 0,
        platform=platform.platform(),
        python=platform.python_version(),
        postgres=facts,
        embedded=server.embedded,
        quick=args.quick,
        bench_seconds=time.perf_counter() - started,
        load_at_start=load_at_start,
    )


def run_community(
    args: argparse.Namespace,
    server: Any,
    facts: dict[str, str],
    started: float,
    load_at_start: tuple[float, float, float],
) -> bool:
    from bench import community, community_report
    from bench.db import fresh_database
    from bench.stats import log, quiet_stdout

    with quiet_stdout(), fresh_database(server, "community") as url:
        result = community.run(
            server,
            url,
            taps=args.taps,
            users=args.tap_users,
            days=args.days,
            chunk=args.chunk,
            replay=None if args.replay == "auto" else args.replay == "yes",
        )
    info = suite_info(args, server, facts, started, load_at_start)
    community_report.write(args.out, community_report.render(info, result))
    log(f"wrote {args.out}")
    return all(result.checks.values())


def run_pou(
    args: argparse.Namespace,
    server: Any,
    facts: dict[str, str],
    started: float,
    load_at_start: tuple[float, float, float],
) -> bool:
    from bench import pou, pou_report
    from bench.db import fresh_database
    from bench.stats import log, quiet_stdout

    with quiet_stdout(), fresh_database(server, "pou") as url:
        result = pou.run(url, agents=args.agents, receipts=args.receipts, attests=args.attests)
    info = suite_info(args, server, facts, started, load_at_start)
    pou_report.write(args.out, pou_report.render(info, result))
    log(f"wrote {args.out}")
    return all(result.checks.values())


def award_job_schedule() -> tuple[str, int, int] | None:
    """The award job's schedule, batch size and timeout as template.yaml deploys them."""
    try:
        from tally.local import template

        for function in template.load(Path.cwd()).functions.values():
            for schedule in function.schedules:
                if "batch_size" in schedule.input:
                    batch = int(schedule.input["batch_size"])
                    return schedule.expression, batch, function.timeout_s
    except Exception as exc:  # the report just leaves the sentence out
        print(f"template.yaml not read: {exc}", file=sys.stderr)
    return None
