"""One PostgreSQL connection per Lambda execution environment, reused and reopened on failure."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import psycopg
from aws_lambda_powertools import Logger
from psycopg.rows import dict_row

from tally.settings import Settings, get_settings

logger = Logger(child=True)

# A value PostgreSQL refused to store or compare (out of range, bad encoding): the API maps it
# to a 422 as a safety net behind the boundary models.
DataError = psycopg.errors.DataError

# Lambda runs one invocation at a time per environment, but FastAPI runs sync routes on worker
# threads that end with each invocation: the connection lives in the process there. Locally
# (`tally dev`, tests) each thread stands for an environment of its own.
_process = SimpleNamespace()
_threads = threading.local()


def _slot() -> Any:
    return _process if get_settings().aws_lambda_function_name else _threads


def connection_lost(exc: BaseException) -> bool:
    """The connection or the server failed, not the work (class 08, an administrator or crash
    shutdown, or no SQLSTATE at all): stop, and let the next invocation, on a new connection,
    redo what was rolled back. Timeouts, deadlocks and the like are the work's own errors."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")


def _secret_conninfo(settings: Settings) -> dict[str, Any]:
    from aws_lambda_powertools.utilities import parameters

    secret = parameters.get_secret(
        settings.db_secret_arn or "", transform="json", max_age=settings.secret_max_age_s
    )
    assert isinstance(secret, dict)
    return {
        "host": settings.db_host_override or secret["host"],
        "port": int(secret.get("port", 5432)),
        "user": secret["username"],
        "password": secret["password"],
        "dbname": settings.db_name_override or secret.get("dbname", "tally"),
    }


def connect(settings: Settings | None = None) -> psycopg.Connection[dict[str, Any]]:
    """Open a new autocommit connection; callers open transactions explicitly."""
    settings = settings or get_settings()
    common: dict[str, Any] = {
        "autocommit": True,
        "row_factory": dict_row,
        "connect_timeout": settings.db_connect_timeout_s,
        "application_name": f"tally-{settings.stage}",
        # A connection dropped silently (NAT, failover) fails in seconds, not at the deadline.
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "tcp_user_timeout": 10_000,
    }
    if settings.database_url is not None:
        conn = psycopg.connect(settings.database_url.get_secret_value(), **common)
    elif settings.db_secret_arn:
        conn = psycopg.connect(**_secret_conninfo(settings), **common)
    else:
        raise RuntimeError("No database configured: set DATABASE_URL or DB_SECRET_ARN")
    # Session settings as statements, not startup options: RDS Proxy refuses those. UTC
    # sessions: day and week boundaries never depend on the server's zone.
    conn.execute(f"SET statement_timeout = {int(settings.db_statement_timeout_ms)}")
    conn.execute("SET TimeZone = 'UTC'")
    return conn


def get_connection() -> psycopg.Connection[dict[str, Any]]:
    """The execution environment's connection, reopened when the last one broke or closed."""
    slot = _slot()
    if getattr(slot, "depth", 0):
        raise RuntimeError("A transaction is already open on this connection; nest nothing")
    conn: psycopg.Connection[dict[str, Any]] | None = getattr(slot, "conn", None)
    now = time.time()  # wall time: a frozen Lambda environment's monotonic clock may stop
    idle_s = now - getattr(slot, "used_at", now)
    slot.used_at = now
    if conn is not None and not conn.closed and not conn.broken:
        idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        if idle and (idle_s < get_settings().db_ping_after_idle_s or _alive(conn)):
            return conn
        if not idle:
            # A previous invocation died inside a transaction: discard its work.
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
                return conn
    if conn is not None:
        logger.warning("Reopening database connection", extra={"broken": conn.broken})
        with contextlib.suppress(psycopg.Error):
            conn.close()
    conn = connect()
    slot.conn = conn
    return conn


def _alive(conn: psycopg.Connection[dict[str, Any]]) -> bool:
    """After a quiet spell the server (or RDS Proxy) may have dropped the connection: one
    round trip finds out before an invocation's work depends on it."""
    try:
        conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def set_local_limits(
    conn: psycopg.Connection[dict[str, Any]], timeout_ms: int, work_mem_mb: int
) -> None:
    """A long batch transaction's own statement timeout and work_mem (its sorts and hashes
    stay in memory), undone at its end."""
    conn.execute(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
    conn.execute(f"SET LOCAL work_mem = '{int(work_mem_mb)}MB'")


def close_connection() -> None:
    slot = _slot()
    conn = getattr(slot, "conn", None)
    if conn is not None:
        conn.close()
        slot.conn = None


@contextmanager
def _open(read_only: bool) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    conn = get_connection()
    slot = _slot()
    slot.depth = 1
    try:
        with conn.transaction():
            if read_only:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield conn
    finally:
        slot.depth = 0


@contextmanager
def transaction() -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A transaction on the environment's connection; rolled back on any exception."""
    with _open(read_only=False) as conn:
        yield conn


@contextmanager
def read_snapshot() -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A read-only transaction that sees one snapshot, so every query of a response agrees
    (a page and the ranks around it, a user and their rank)."""
    with _open(read_only=True) as conn:
        yield conn
