"""Where the bench runs: the server DATABASE_URL names, or a throwaway embedded PostgreSQL.

Every scenario gets a fresh, migrated database of its own, so the figures never depend on what
an earlier run (or a developer's local data) left behind, and the database is dropped after.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

# Settings the figures depend on; the report lists them next to the machine.
REPORTED_SETTINGS = ("shared_buffers", "work_mem", "synchronous_commit", "fsync", "jit")


@dataclass(frozen=True)
class Server:
    """A PostgreSQL server the bench may create and drop databases on."""

    url: str
    embedded: bool


def open_server() -> Server:
    """DATABASE_URL's server when set, else an embedded one deleted when the process exits."""
    given = os.environ.get("DATABASE_URL")
    if given:
        return Server(url=given, embedded=False)
    from tally.local.embedded import start

    data_dir = Path(tempfile.gettempdir()) / f"tally-bench-pg-{uuid.uuid4().hex[:8]}"
    return Server(url=start(data_dir, database="postgres", cleanup="delete"), embedded=True)


def connect(url: str) -> psycopg.Connection[dict[str, Any]]:
    """A separate autocommit connection for seeding and inspecting, outside tally's own."""
    return psycopg.connect(url, autocommit=True, row_factory=dict_row)


def server_facts(server: Server) -> dict[str, str]:
    """The PostgreSQL version and the settings that matter for the figures."""
    with connect(server.url) as conn:
        facts = {"server_version": _show(conn, "server_version")}
        facts.update({name: _show(conn, name) for name in REPORTED_SETTINGS})
    return facts


def _show(conn: psycopg.Connection[dict[str, Any]], name: str) -> str:
    row = conn.execute(f"SHOW {name}").fetchone()
    assert row is not None
    return str(next(iter(row.values())))


@contextmanager
def fresh_database(server: Server, label: str) -> Iterator[str]:
    """Create and migrate a new database, point tally's services at it, drop it afterwards."""
    from tally.db.connection import close_connection, get_connection
    from tally.db.migrate import migrate
    from tally.settings import reset_settings

    name = f"tally_bench_{label}_{uuid.uuid4().hex[:8]}"
    with connect(server.url) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(server.url)
    info["dbname"] = name
    url = psycopg.conninfo.make_conninfo("", **info)
    # tally reads DATABASE_URL through its cached settings: both must change together.
    os.environ["DATABASE_URL"] = url
    reset_settings()
    close_connection()
    try:
        migrate(get_connection())
        yield url
    finally:
        close_connection()
        with connect(server.url) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class _Sent(Exception):
    """Raised by _SqlRecorder with the first statement a repository method sends."""


class _SqlRecorder:
    """Stands in for a connection: stops the repository method at its first statement."""

    def execute(self, sql: str, params: Any = None) -> None:
        raise _Sent(sql, params)


def repository_sql(repository: type[Any], call: Callable[[Any], Any]) -> tuple[str, Any]:
    """The first statement (SQL, parameters) that call(repository(conn)) sends, unexecuted.

    The bench EXPLAINs exactly what the service runs instead of a copy that could drift.
    """
    try:
        call(repository(_SqlRecorder()))
    except _Sent as sent:
        return sent.args[0], sent.args[1]
    raise AssertionError("the repository method sent no SQL")


# EXPLAIN runs per query; the median is reported.
EXPLAIN_RUNS = 5


@dataclass(frozen=True)
class PlanTiming:
    """What EXPLAIN (ANALYZE, BUFFERS) says about one query: the database's side of a call."""

    execution_ms: float
    buffers: int
    plan: str
    rows_scanned: int


def explain(conn: psycopg.Connection[dict[str, Any]], sql: str, params: Any = None) -> Any:
    """EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) as JSON, in a transaction so locking reads work.

    TIMING OFF: timing every row would inflate a 500k-row count by more than half; the total
    execution time is still measured.
    """
    with conn.transaction():
        row = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, FORMAT JSON) " + sql, params
        ).fetchone()
    assert row is not None
    return next(iter(row.values()))[0]


def explain_text(conn: psycopg.Connection[dict[str, Any]], sql: str, params: Any = None) -> str:
    """The same EXPLAIN as text, to quote a plan in the report."""
    with conn.transaction():
        rows = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, COSTS OFF) " + sql, params
        ).fetchall()
    return "\n".join(str(next(iter(r.values()))) for r in rows)


def plan_timing(
    conn: psycopg.Connection[dict[str, Any]], sql: str, params: Any = None
) -> PlanTiming:
    """Median execution time over a few EXPLAIN ANALYZE runs, and the plan's shape."""
    runs = [explain(conn, sql, params) for _ in range(EXPLAIN_RUNS)]
    plan = runs[-1]["Plan"]
    return PlanTiming(
        execution_ms=statistics.median(r["Execution Time"] for r in runs),
        buffers=int(plan.get("Shared Hit Blocks", 0)) + int(plan.get("Shared Read Blocks", 0)),
        plan=_describe(plan),
        rows_scanned=_leaf_rows(plan),
    )


def _describe(plan: dict[str, Any]) -> str:
    """'Aggregate > Index Only Scan (idx_users_total_points)': the chain of plan nodes."""
    parts = []
    node: dict[str, Any] | None = plan
    while node is not None:
        name = node["Node Type"]
        if node.get("Partial Mode", "Simple") != "Simple":
            name = f"{node['Partial Mode']} {name}"
        if node.get("Parallel Aware"):
            name = f"Parallel {name}"
        if "Index Name" in node:
            name += f" ({node['Index Name']})"
        parts.append(name)
        children = node.get("Plans") or []
        node = children[0] if children else None
    return " > ".join(parts)


def _leaf_rows(plan: dict[str, Any]) -> int:
    """Rows the innermost scan produced plus those its filter threw away, i.e. rows read."""
    node = plan
    while node.get("Plans"):
        node = node["Plans"][0]
    loops = int(node.get("Actual Loops", 1))
    produced = float(node.get("Actual Rows", 0)) * loops
    removed = float(node.get("Rows Removed by Filter", 0)) * loops
    return round(produced + removed)
