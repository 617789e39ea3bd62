"""One PostgreSQL connection per Lambda execution environment, reused and reopened on failure."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from aws_lambda_powertools import Logger
from psycopg.rows import dict_row

from tally.settings import Settings, get_settings

logger = Logger(child=True)

# A value PostgreSQL refused to store or compare (out of range, bad encoding): the API maps it
# to a 422 as a safety net behind the boundary models.
DataError = psycopg.errors.DataError

# The connection (or the server) failed, not the work: the caller should stop and let the next
# invocation, on a new connection, redo what was rolled back.
ConnectionLost = psycopg.OperationalError

_local = threading.local()


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
    # UTC sessions: day and week boundaries never depend on the server's zone.
    options = f"-c statement_timeout={settings.db_statement_timeout_ms} -c TimeZone=UTC"
    common: dict[str, Any] = {
        "autocommit": True,
        "row_factory": dict_row,
        "connect_timeout": settings.db_connect_timeout_s,
        "options": options,
        "application_name": f"tally-{settings.stage}",
    }
    if settings.database_url is not None:
        return psycopg.connect(settings.database_url.get_secret_value(), **common)
    if settings.db_secret_arn:
        return psycopg.connect(**_secret_conninfo(settings), **common)
    raise RuntimeError("No database configured: set DATABASE_URL or DB_SECRET_ARN")


def get_connection() -> psycopg.Connection[dict[str, Any]]:
    """The execution environment's connection, reopened when the last one broke or closed.

    Thread-local so that the local runtime's worker threads each get their own, as separate
    Lambda environments would.
    """
    conn: psycopg.Connection[dict[str, Any]] | None = getattr(_local, "conn", None)
    now = time.monotonic()
    idle_s = now - getattr(_local, "used_at", now)
    _local.used_at = now
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
    _local.conn = conn
    return conn


def _alive(conn: psycopg.Connection[dict[str, Any]]) -> bool:
    """After a quiet spell the server (or RDS Proxy) may have dropped the connection: one
    round trip finds out before an invocation's work depends on it."""
    try:
        conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def close_connection() -> None:
    conn = getattr(_local, "conn", None)
    if conn is not None:
        conn.close()
        _local.conn = None


@contextmanager
def transaction() -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A transaction on the environment's connection; rolled back on any exception."""
    conn = get_connection()
    with conn.transaction():
        yield conn


@contextmanager
def read_snapshot() -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A read-only transaction that sees one snapshot, so every query of a response agrees
    (a page and the ranks around it, a user and their rank)."""
    conn = get_connection()
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield conn
