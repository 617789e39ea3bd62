"""Faults: the database connection dies mid-invocation or while idle, a job runs out of Lambda
time, and every scheduled job runs twice at once; the invariants hold throughout."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tally.db.connection import close_connection
from tally.local import template
from tally.local.context import FakeLambdaContext
from tally.local.runtime import load_module
from tally.points import service as points
from tally.points.models import VerificationIn
from tally.points.reconciliation import reconcile
from tally.settings import reset_settings
from tests.support import assert_ledger_matches_totals, verification_body

TEMPLATE = template.load()


@pytest.fixture
def kill_switch(db: psycopg.Connection[Any]) -> Iterator[Any]:
    """`arm(table, after)`: the backend that writes the `after`-th row into `table` kills its
    own connection in the middle of that statement (a real termination, not a mock)."""
    armed: list[str] = []

    def arm(table: str, after: int) -> None:
        db.execute("DROP SEQUENCE IF EXISTS fault_rows")
        db.execute("CREATE SEQUENCE fault_rows")
        db.execute(
            f"""
            CREATE OR REPLACE FUNCTION fault_kill() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF nextval('fault_rows') = {after} THEN
                    PERFORM pg_terminate_backend(pg_backend_pid());
                END IF;
                RETURN NEW;
            END $$
            """
        )
        db.execute(
            f"CREATE TRIGGER fault_kill AFTER INSERT OR UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION fault_kill()"
        )
        armed.append(table)

    yield arm
    for table in armed:
        db.execute(f"DROP TRIGGER IF EXISTS fault_kill ON {table}")
    db.execute("DROP FUNCTION IF EXISTS fault_kill()")
    db.execute("DROP SEQUENCE IF EXISTS fault_rows")


def handler(logical_id: str) -> Any:
    fn = TEMPLATE.functions[logical_id]
    return getattr(load_module(fn), fn.handler_name)


def run(logical_id: str, event: dict[str, Any] | None = None, timeout_s: int | None = None) -> Any:
    fn = TEMPLATE.functions[logical_id]
    context = FakeLambdaContext(function_name=logical_id, timeout_s=timeout_s or fn.timeout_s)
    return handler(logical_id)(event or {}, context)


def submit(count: int) -> None:
    for i in range(count):
        wallet = f"0xabc00000000000000000000000000000000000{i % 7:02d}"
        points.record_verification(VerificationIn.model_validate(verification_body(wallet)))


# -- the connection dies -----------------------------------------------------------------------


def test_award_sweep_survives_its_connection_dying_midway(
    db: psycopg.Connection[Any], kill_switch: Any
) -> None:
    submit(12)
    kill_switch("points_ledger", 5)  # the fifth award's ledger insert kills the connection
    with pytest.raises(psycopg.OperationalError):
        run("AwardPointsFunction", {})
    done = db.execute("SELECT count(*) AS n FROM points_ledger").fetchone()
    assert done is not None and 0 < done["n"] < 12 + 12  # some work committed, not all
    assert_ledger_matches_totals(db)  # and nothing half-written
    result = run("AwardPointsFunction", {})  # the next invocation reconnects and finishes
    assert result["failed"] == 0
    per_session = db.execute(
        "SELECT count(*) AS n, count(DISTINCT source_id) AS sessions FROM points_ledger "
        "WHERE source_kind = 'dataset_submission'"
    ).fetchone()
    assert per_session == {"n": 12, "sessions": 12}
    assert db.execute(
        "SELECT count(*) AS n FROM verification_sessions WHERE points_status <> 'awarded'"
    ).fetchone() == {"n": 0}
    assert reconcile().ok


def test_finalizer_survives_its_connection_dying_midway(
    db: psycopg.Connection[Any], kill_switch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_pou import make_agent, quorate_receipts, register

    monkeypatch.setenv("POU_FINALIZER_BATCH", "3")
    monkeypatch.setenv("POU_POINTS_PER_TASK", "10")
    reset_settings()
    cast = {"agent": make_agent(1), "client": make_agent(2)}
    cast["auditors"] = [make_agent(10 + i) for i in range(5)]
    register([cast["agent"], cast["client"]], stake=0)
    register(cast["auditors"])
    quorate_receipts(db, cast, 9)
    kill_switch("agent_reputation", 2)  # the second batch's reputation update
    with pytest.raises(psycopg.OperationalError):
        run("PouFinalizerFunction", {})
    finalized = db.execute(
        "SELECT count(*) AS n FROM task_receipts WHERE status = 'finalized'"
    ).fetchone()
    assert finalized == {"n": 3}  # the first batch, whole; the second rolled back whole
    outcome = run("PouFinalizerFunction", {})
    assert outcome["finalized"] == 6
    rep = db.execute(
        "SELECT r FROM agent_reputation WHERE agent_id = %s", (cast["agent"].did,)
    ).fetchone()
    assert rep is not None and rep["r"] == pytest.approx(1 + (0.5 - 1) * 0.8**9)  # 9 steps
    assert db.execute(
        "SELECT count(*) AS n FROM points_ledger WHERE source_kind = 'pou'"
    ).fetchone() == {"n": 9}
    assert reconcile().ok


def test_an_idle_connection_dropped_by_the_server_is_replaced_before_use(
    db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_PING_AFTER_IDLE_SECONDS", "0")
    reset_settings()
    close_connection()
    submit(1)  # opens this environment's connection
    pid = db.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'tally-local' "
        "AND datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchall()
    assert pid, "the environment's connection is not visible"
    for row in pid:
        db.execute("SELECT pg_terminate_backend(%s)", (row["pid"],))
    result = run("AwardPointsFunction", {})  # no error: the dead connection is noticed first
    assert result["awarded"] == 1


# -- the deadline ------------------------------------------------------------------------------


def test_jobs_stop_before_the_deadline_and_the_next_run_resumes(
    db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A context with less time left than the safety margin: each long job stops at its first
    safe point, reports it, and a run with time finishes the work."""
    from tests.test_pou import make_agent, quorate_receipts, register

    submit(3)
    cast = {"agent": make_agent(1), "client": make_agent(2)}
    cast["auditors"] = [make_agent(10 + i) for i in range(5)]
    register([cast["agent"], cast["client"]], stake=0)
    register(cast["auditors"])
    quorate_receipts(db, cast, 2)
    monkeypatch.setenv("JOB_SAFETY_MARGIN_MS", "600000")  # every context is "nearly out"
    reset_settings()
    award = run("AwardPointsFunction", {})
    assert award["stopped_early"] and award["awarded"] == 0
    finalizer = run("PouFinalizerFunction", {})
    assert finalizer["stopped_early"] and finalizer["finalized"] == 0
    monkeypatch.setenv("JOB_SAFETY_MARGIN_MS", "1000")
    reset_settings()
    assert run("AwardPointsFunction", {})["awarded"] == 3
    assert run("PouFinalizerFunction", {})["finalized"] == 2


class CountdownContext(FakeLambdaContext):
    """A context whose remaining time runs out after a few checks: the deadline arrives in the
    middle of the work, not before it."""

    def __init__(self, checks_with_time: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.left = checks_with_time

    def get_remaining_time_in_millis(self) -> int:
        self.left -= 1
        return 60_000 if self.left >= 0 else 1_000


def test_a_deadline_midway_stops_at_a_safe_point_and_the_next_run_resumes(
    db: psycopg.Connection[Any],
) -> None:
    submit(8)
    context = CountdownContext(3, function_name="AwardPointsFunction", timeout_s=120)
    first = handler("AwardPointsFunction")({}, context)
    assert first["stopped_early"] and first["awarded"] == 3
    rest = run("AwardPointsFunction", {})
    assert rest["awarded"] == 5 and not rest["stopped_early"]
    assert db.execute(
        "SELECT count(DISTINCT source_id) AS n, count(*) AS rows FROM points_ledger "
        "WHERE source_kind = 'dataset_submission'"
    ).fetchone() == {"n": 8, "rows": 8}


def test_a_statement_timeout_is_the_awards_failure_not_a_lost_connection(
    db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a lost connection stops the sweep; an award whose statement times out is marked
    failed (retried with back-off) and the others go on."""
    slow = "0xabc0000000000000000000000000000000000000"
    submit(3)  # wallets ...00, ...01, ...02
    db.execute(
        f"""
        CREATE FUNCTION slow_award() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.wallet_address = '{slow}' THEN PERFORM pg_sleep(2); END IF;
            RETURN NEW;
        END $$
        """
    )
    db.execute(
        "CREATE TRIGGER slow_award BEFORE INSERT ON points_ledger "
        "FOR EACH ROW EXECUTE FUNCTION slow_award()"
    )
    monkeypatch.setenv("DB_STATEMENT_TIMEOUT_MS", "500")
    reset_settings()
    close_connection()
    try:
        result = run("AwardPointsFunction", {})
    finally:
        db.execute("DROP TRIGGER slow_award ON points_ledger")
        db.execute("DROP FUNCTION slow_award()")
        close_connection()
    assert (result["failed"], result["awarded"]) == (1, 2)
    row = db.execute(
        "SELECT points_status, points_attempts FROM verification_sessions "
        "WHERE wallet_address = %s",
        (slow,),
    ).fetchone()
    assert row is not None and row["points_status"] == "failed" and row["points_attempts"] == 1


def test_api_functions_keep_one_connection_across_invocations_in_lambda(
    db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastAPI runs sync routes on worker threads that end with each Lambda invocation: the
    connection must live in the process there, not in a thread."""
    from tally.db import connection
    from tally.local.invoke import invoke
    from tests.support import load_event

    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "tally-points-api")
    monkeypatch.setenv("TALLY_AUTH_MODE", "apigw")
    reset_settings()
    try:
        pids = set()
        for _ in range(3):
            result = invoke(TEMPLATE, "PointsApiFunction", load_event("points_api_get_user.json"))
            assert result["statusCode"] == 404  # no such user yet: still a database read
            pids.add(connection.get_connection().info.backend_pid)
        assert len(pids) == 1
    finally:
        close_connection()


# -- every job twice at once -------------------------------------------------------------------


def test_every_scheduled_job_twice_at_once_keeps_the_invariants(
    db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_handlers import seed_from_events
    from tests.test_pou import make_agent, quorate_receipts, register

    monkeypatch.setenv("TAP_MAX_AGE_DAYS", "3650")
    monkeypatch.setenv("POU_POINTS_PER_TASK", "10")
    monkeypatch.setenv("USEFULNESS_REWARD_POOL_ENABLED", "true")
    reset_settings()
    seed_from_events()
    submit(10)
    cast = {"agent": make_agent(1), "client": make_agent(2)}
    cast["auditors"] = [make_agent(10 + i) for i in range(6)]
    register([cast["agent"], cast["client"]], stake=0)
    register(cast["auditors"])
    quorate_receipts(db, cast, 8)
    db.execute(
        "UPDATE match_proposals SET voting_expires_at = now() - interval '1 second' "
        "WHERE status = 'voting'"
    )
    jobs = [
        (fn.logical_id, schedule.input)
        for fn in TEMPLATE.functions.values()
        for schedule in fn.schedules
    ]
    assert {j for j, _ in jobs} >= {
        "AwardPointsFunction",
        "PouFinalizerFunction",
        "UsefulnessAggregatorFunction",
        "MatchGeneratorFunction",
        "ProposalCreatorFunction",
        "ExpiryHandlerFunction",
        "CommunityEtlFunction",
        "ReconciliationFunction",
    }
    errors: list[BaseException] = []

    def twice(logical_id: str, event: dict[str, Any]) -> None:
        barrier = threading.Barrier(2)

        def once() -> None:
            try:
                barrier.wait()
                run(logical_id, dict(event))
            except BaseException as exc:  # reported below
                errors.append(exc)
            finally:
                close_connection()

        threads = [threading.Thread(target=once) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    for logical_id, event in jobs:
        twice(logical_id, event)
    assert errors == []
    # Points: one award per session, one ledger entry per source, totals and boards agree.
    assert reconcile().ok
    assert_ledger_matches_totals(db)
    duplicates = db.execute(
        "SELECT source_kind, source_id FROM points_ledger GROUP BY 1, 2 HAVING count(*) > 1"
    ).fetchall()
    assert duplicates == []
    # Matchmaking: the guide's duplicate query; a proposal closed once, one conversation each.
    from tests.test_matchmaking import DUPLICATES  # the guide's Test 5 query

    pairs = db.execute(DUPLICATES).fetchall()
    assert pairs == []
    assert (
        db.execute(
            "SELECT count(*) AS n FROM conversations GROUP BY proposal_id HAVING count(*) > 1"
        ).fetchall()
        == []
    )
    # Proof of usefulness: each receipt finalized once, its EWMA step applied once (8 here and
    # the sample events' receipt, which has the same agent).
    assert db.execute(
        "SELECT count(*) AS n FROM task_receipts WHERE status = 'finalized' AND agent_did = %s",
        (cast["agent"].did,),
    ).fetchone() == {"n": 9}
    rep = db.execute(
        "SELECT r FROM agent_reputation WHERE agent_id = %s", (cast["agent"].did,)
    ).fetchone()
    assert rep is not None and rep["r"] == pytest.approx(1 + (0.5 - 1) * 0.8**9)
    hours = db.execute(
        "SELECT hour_start FROM usefulness_reward_hours GROUP BY 1 HAVING count(*) > 1"
    ).fetchall()
    assert hours == []
