"""Matchmaking at 100k profiles: the generator refilling the queue, the proposal creator opening
proposals with voters, and `next` / vote latency with 10k open assignments.

Profiles (with interests and a home city) are generated in SQL. The jobs and the voter calls run
through tally's services, one transaction each, exactly as the Lambda handlers call them.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.db import Server, connect
from bench.report import write_block
from bench.stats import Summary, log, time_calls

START = "<!-- bench:matchmaking:start -->"
END = "<!-- bench:matchmaking:end -->"
INTERESTS = [
    "birdsong", "hiking", "field recording", "moths", "rivers", "owls", "frogs", "bats",
    "mosses", "tide pools", "bees", "lichens", "night walks", "whales", "forests", "dunes",
]  # fmt: skip
CITIES = ["Berlin", "Lisbon", "Pune", "Austin", "Accra", "Osaka", "Lima", "Oslo"]
RUNS = 7


@dataclass
class MatchReport:
    profiles: int
    open_assignments: int
    voting: int
    generator: Summary
    generated: int
    creator: Summary
    opened: int
    voters_each: int
    next_assigned: Summary
    next_on_the_spot: Summary
    vote: Summary
    load_seconds: float


def load_profiles(url: str, profiles: int) -> float:
    started = time.perf_counter()
    with connect(url) as conn:
        conn.execute(
            """
            INSERT INTO profiles (address, display_name, attributes)
            SELECT '0xp' || lpad(g::text, 8, '0'), 'Member ' || g,
                   jsonb_build_object('interests', jsonb_build_array(
                       (%(i)s::text[])[1 + (g * 7) %% 16], (%(i)s::text[])[1 + (g * 13) %% 16],
                       (%(i)s::text[])[1 + (g * 31) %% 16]))
            FROM generate_series(1, %(n)s) AS g
            """,
            {"i": INTERESTS, "n": profiles},
        )
        conn.execute(
            """
            INSERT INTO home_location_struct (user_id, raw_location, city, country)
            SELECT address, c, c, 'X' FROM (
                SELECT address, (%(c)s::text[])[1 + (hashtext(address) & 7)] AS c
                FROM profiles) p
            """,
            {"c": CITIES},
        )
        conn.execute("VACUUM ANALYZE profiles, home_location_struct")
    return time.perf_counter() - started


def open_assignments(url: str, proposals: int, voters: int) -> None:
    """`proposals` pairs in voting with `voters` random voters each (10k open assignments)."""
    with connect(url) as conn:
        conn.execute(
            """
            WITH pairs AS (
                SELECT g, '0xp' || lpad((2 * g)::text, 8, '0') AS a,
                       '0xp' || lpad((2 * g + 1)::text, 8, '0') AS b
                FROM generate_series(1, %(n)s) AS g
            ), claims AS (
                INSERT INTO match_pair_claims (pair_hash)
                SELECT encode(sha256(convert_to(a || '|' || b, 'UTF8')), 'hex') FROM pairs
            )
            INSERT INTO match_proposals
                (user_a_address, user_b_address, pair_hash, compatibility_score, status,
                 voters_target, voting_started_at, voting_expires_at)
            SELECT a, b, encode(sha256(convert_to(a || '|' || b, 'UTF8')), 'hex'), 0.5,
                   'voting', %(v)s, now(), now() + interval '1 day'
            FROM pairs
            """,
            {"n": proposals, "v": voters},
        )
        conn.execute(
            """
            INSERT INTO voter_assignments (proposal_id, voter_address)
            SELECT DISTINCT p.id,
                   '0xp' || lpad((50000 + abs(hashtext(p.id::text || k)) %% 50000)::text, 8, '0')
            FROM match_proposals p, generate_series(1, %s) AS k
            WHERE p.status = 'voting'
            ON CONFLICT DO NOTHING
            """,
            (voters,),
        )
        conn.execute("VACUUM ANALYZE match_proposals, voter_assignments, match_pair_claims")


def run(url: str, profiles: int) -> MatchReport:
    from tally.matchmaking import service
    from tally.settings import get_settings, reset_settings

    reset_settings()
    settings = get_settings()
    log(f"matchmaking: {profiles:,} profiles")
    load_seconds = load_profiles(url, profiles)

    def empty_queue() -> None:
        with connect(url) as conn:
            conn.execute("DELETE FROM match_generation_queue")
            conn.execute("DELETE FROM match_pair_claims")

    generator_times, generated = [], 0
    for _ in range(RUNS):
        empty_queue()
        started = time.perf_counter()
        outcome = service.generate_matches()
        generator_times.append(time.perf_counter() - started)
        generated = outcome.detail["added"]
    log(f"matchmaking: generator refilled {generated} in {min(generator_times):.3f}s (best)")

    creator_times, opened = [], 0
    for _ in range(RUNS):
        with connect(url) as conn:
            conn.execute(
                "UPDATE match_proposals SET status = 'rejected', finalized_at = now() "
                "WHERE status = 'voting'"
            )
        service.generate_matches()
        started = time.perf_counter()
        outcome = service.create_proposals()
        creator_times.append(time.perf_counter() - started)
        opened = outcome.detail["opened"]
    log(f"matchmaking: creator opened {opened} in {min(creator_times):.3f}s (best)")

    proposals = 1000
    open_assignments(url, proposals, settings.match_voters_per_proposal)
    with connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) AS n FROM voter_assignments WHERE voted_at IS NULL"
        ).fetchone()
        open_count = int(row["n"]) if row else 0
        voting = conn.execute(
            "SELECT count(*) AS n FROM match_proposals WHERE status = 'voting'"
        ).fetchone()
        voters = [
            r["voter_address"]
            for r in conn.execute(
                "SELECT DISTINCT voter_address FROM voter_assignments WHERE voted_at IS NULL "
                "ORDER BY voter_address LIMIT 400"
            ).fetchall()
        ]
    log(f"matchmaking: {open_count:,} open assignments on {voting['n'] if voting else 0} proposals")

    # Each voter asks for their next match once (the warm-up takes the first ten voters), then
    # votes on it once.
    nexts: list[Any] = []

    def next_assigned(i: int) -> None:
        nexts.append(service.next_match(voters[len(nexts) % len(voters)]))

    assigned = time_calls(next_assigned, 200, warmup=10)

    def cast(i: int) -> None:
        got = nexts.pop()
        service.vote(got.proposal.id, got.voter, "yes" if i % 2 else "no")

    votes = time_calls(cast, 200, warmup=10)
    fresh = [f"0xp{n:08d}" for n in range(20_000, 20_220)]

    def on_the_spot(i: int) -> None:
        service.next_match(fresh[i])

    spot = time_calls(on_the_spot, 200, warmup=10)
    return MatchReport(
        profiles=profiles,
        open_assignments=open_count,
        voting=int(voting["n"]) if voting else 0,
        generator=Summary.of(generator_times),
        generated=generated,
        creator=Summary.of(creator_times),
        opened=opened,
        voters_each=settings.match_voters_per_proposal,
        next_assigned=Summary.of(assigned),
        next_on_the_spot=Summary.of(spot),
        vote=Summary.of(votes),
        load_seconds=load_seconds,
    )


def _row(name: str, s: Summary) -> str:
    return f"| {name} | {s.n} | {s.p50:.1f} | {s.p95:.1f} | {s.p99:.1f} | {s.max:.1f} |"


def render(rep: MatchReport, facts: dict[str, str], embedded: bool, seconds: float) -> str:
    settings_line = ", ".join(f"{k} {v}" for k, v in facts.items() if k != "server_version")
    return "\n\n".join(
        [
            "## Matchmaking: how these figures were taken",
            f"Generated by `python -m bench --suite matchmaking` on "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC} ({os.cpu_count()} CPU cores, "
            f"{platform.platform()}, Python {platform.python_version()}; PostgreSQL "
            f"{facts.get('server_version', '?')}, {'embedded' if embedded else 'given'}, "
            f"{settings_line}); {seconds:.0f} s in all. {rep.profiles:,} profiles with three "
            f"interests each and a home city (loaded in {rep.load_seconds:.1f} s). Every call "
            "goes through tally's services, one transaction each, as the handlers make them; "
            "times are wall time in the bench process, milliseconds.",
            "| Job or call | n | p50 ms | p95 ms | p99 ms | max ms |\n"
            "|---|---:|---:|---:|---:|---:|\n"
            + "\n".join(
                [
                    _row(
                        f"Generator: refill an empty queue with {rep.generated} pairs",
                        rep.generator,
                    ),
                    _row(
                        f"Proposal creator: open {rep.opened} proposals, "
                        f"{rep.voters_each} voters each",
                        rep.creator,
                    ),
                    _row("`next`: the voter's assigned proposal", rep.next_assigned),
                    _row("`next`: assigned on the spot (voter with none)", rep.next_on_the_spot),
                    _row("vote (counted; thresholds checked)", rep.vote),
                ]
            ),
            f"`next` and vote were measured with {rep.open_assignments:,} open assignments on "
            f"{rep.voting:,} proposals in voting. The generator never reads every profile: it "
            "draws a random sample in the database (`MATCH_CANDIDATE_SAMPLE`, 400) and scores "
            "its pairs in Python, keeping the best; the creator deals voters from the "
            "least-loaded members (one scan of profiles and open assignments).",
        ]
    )


def write(path: Path, block: str) -> None:
    write_block(path, block, START, END)


def run_suite(server: Server, facts: dict[str, str], out: Path, profiles: int) -> bool:
    from bench.db import fresh_database
    from bench.stats import quiet_stdout

    started = time.perf_counter()
    with quiet_stdout(), fresh_database(server, "matchmaking") as url:
        rep = run(url, profiles)
    write(out, render(rep, facts, server.embedded, time.perf_counter() - started))
    log(f"wrote {out}")
    return rep.generated > 0 and rep.opened > 0
