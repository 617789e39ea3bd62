"""Migrations and the per-environment connection, against a real PostgreSQL."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tally.db import connection
from tally.db.migrate import Migration, MigrationError, load_migrations, migrate
from tally.settings import Settings


@pytest.fixture
def scratch_db(database_url: str) -> Iterator[str]:
    """An empty database of its own, for tests that migrate from nothing."""
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    name = f"tally_scratch_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield psycopg.conninfo.make_conninfo(**{**info, "dbname": name})
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_migrations_apply_in_order_once(scratch_db: str) -> None:
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        applied = migrate(conn)
        assert applied == [m.name for m in load_migrations()]
        assert migrate(conn) == []
        rows = conn.execute("SELECT version, checksum FROM schema_migrations ORDER BY 1").fetchall()
    assert [r[0] for r in rows] == [m.version for m in load_migrations()]
    assert [r[1] for r in rows] == [m.checksum for m in load_migrations()]


def test_edited_migration_is_an_error(scratch_db: str) -> None:
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        migrate(conn, [Migration(1, "0001_a.sql", "CREATE TABLE a (x int);")])
        with pytest.raises(MigrationError, match="edited after it was applied"):
            migrate(conn, [Migration(1, "0001_a.sql", "CREATE TABLE a (x bigint);")])


def test_failed_migration_leaves_nothing_behind(scratch_db: str) -> None:
    broken = [
        Migration(1, "0001_a.sql", "CREATE TABLE a (x int);"),
        Migration(2, "0002_b.sql", "CREATE TABLE b (x int); SELECT 1/0;"),
    ]
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            migrate(conn, broken)
        tables = {
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        assert "a" in tables and "b" not in tables
        assert [r[0] for r in conn.execute("SELECT version FROM schema_migrations")] == [1]


def test_two_runners_at_once_apply_each_migration_once(scratch_db: str) -> None:
    slow = [
        Migration(1, "0001_slow.sql", "SELECT pg_sleep(0.3); CREATE TABLE slow (x int);"),
        Migration(2, "0002_next.sql", "CREATE TABLE next_one (x int);"),
    ]
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(scratch_db, autocommit=True) as conn:
                results.append(migrate(conn, slow))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results, key=len) == [[], ["0001_slow.sql", "0002_next.sql"]]


def test_connection_is_reused_and_reopened_after_a_drop(db: psycopg.Connection[Any]) -> None:
    first = connection.get_connection()
    assert connection.get_connection() is first
    db.execute("SELECT pg_terminate_backend(%s)", (first.info.backend_pid,))
    with pytest.raises(psycopg.OperationalError):
        first.execute("SELECT 1")
    second = connection.get_connection()
    assert second is not first
    assert second.execute("SELECT 1 AS one").fetchone() == {"one": 1}


def test_connection_left_in_a_transaction_is_rolled_back(db: psycopg.Connection[Any]) -> None:
    conn = connection.get_connection()
    conn.execute("BEGIN")
    conn.execute("INSERT INTO platform_counters (name, value) VALUES ('leftover', 1)")
    again = connection.get_connection()
    assert again is conn
    assert db.execute(
        "SELECT count(*) AS n FROM platform_counters WHERE name = 'leftover'"
    ).fetchone() == {"n": 0}


def test_credentials_from_secrets_manager(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In AWS the connection comes from the RDS-style secret, read through Powertools."""
    from moto import mock_aws

    monkeypatch.delenv("DATABASE_URL")
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    secret = {
        "host": info.get("host", "localhost"),
        "port": int(info.get("port") or 5432),
        "username": info.get("user", "postgres"),
        "password": info.get("password", ""),
        "dbname": info["dbname"],
    }
    with mock_aws():
        import boto3

        arn = boto3.client("secretsmanager", region_name="us-east-1").create_secret(
            Name="tally/db", SecretString=json.dumps(secret)
        )["ARN"]
        settings = Settings.model_validate({"DB_SECRET_ARN": arn})
        assert settings.database_url is None
        conn = connection.connect(settings)
    with conn:
        row = conn.execute("SELECT current_database() AS db").fetchone()
    assert row == {"db": info["dbname"]}


def test_no_database_configured_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(RuntimeError, match="DATABASE_URL or DB_SECRET_ARN"):
        connection.connect(Settings.model_validate({}))
