"""Where the bench runs: the server DATABASE_URL names, or a throwaway embedded PostgreSQL.

Every scenario gets a fresh, migrated database of its own, so the figures never depend on what
an earlier run (or a developer's local data) left behind, and the database is dropped after.
"""

from __future__ import annotations

import os
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
    url = psycopg.conninfo.make_conninfo(**info)
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


class _SqlRecorder:
    """Stands in for a connection to learn what SQL a repository method sends, unexecuted."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def execute(self, sql: str, params: Any = None) -> _SqlRecorder:
        self.sent.append((sql, params))
        return self

    def fetchone(self) -> None:
        return None

    def fetchall(self) -> list[Any]:
        return []


def repository_sql(call: Callable[[Any], Any]) -> tuple[str, Any]:
    """The first statement (SQL, parameters) that call(PointsRepository) sends.

    The bench EXPLAINs exactly what the service runs instead of a copy that could drift.
    """
    from tally.points.repository import PointsRepository

    recorder = _SqlRecorder()
    call(PointsRepository(recorder))  # type: ignore[arg-type]
    return recorder.sent[0]


def explain(conn: psycopg.Connection[dict[str, Any]], sql: str, params: Any = None) -> Any:
    """EXPLAIN (ANALYZE, BUFFERS) as JSON; in a transaction so locking reads are allowed."""
    with conn.transaction():
        row = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params).fetchone()
    assert row is not None
    return next(iter(row.values()))[0]
