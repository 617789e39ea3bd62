"""Test fixtures: a real PostgreSQL (embedded, or DATABASE_URL's server) for every test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support import TEST_JWT_SECRET

# Set before any tally module reads its settings.
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Tally")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "tally")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def _server_url(folder: Path) -> str:
    given = os.environ.get("TALLY_TEST_SERVER_URL") or os.environ.get("DATABASE_URL")
    if given:
        return given
    from tally.local.embedded import start

    return start(folder / "pgdata", database="postgres", cleanup="delete")


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh database for this test session on a throwaway (or the given) server."""
    server_url = _server_url(tmp_path_factory.mktemp("pg"))
    os.environ["TALLY_TEST_SERVER_URL"] = server_url
    name = f"tally_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(server_url)
    info["dbname"] = name
    url = psycopg.conninfo.make_conninfo(**info)
    os.environ["DATABASE_URL"] = url
    os.environ["TALLY_JWT_SECRET"] = TEST_JWT_SECRET
    os.environ["TALLY_AUTH_MODE"] = "local"
    # Tests add taps and look at once: no radar window reused across them (its own test).
    os.environ["COMMUNITY_RADAR_CACHE_SECONDS"] = "0"
    from tally.settings import reset_settings

    reset_settings()
    from tally.db.connection import get_connection
    from tally.db.migrate import migrate

    migrate(get_connection())
    yield url
    from tally.db.connection import close_connection

    close_connection()
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _truncate(conn: psycopg.Connection[Any]) -> None:
    tables = [
        r["tablename"]
        for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename NOT IN ('schema_migrations', 'platform_counters', 'etl_watermarks', "
            "'quest_definitions')"
        ).fetchall()
    ]
    if tables:
        conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    conn.execute("UPDATE platform_counters SET value = 0")
    # Rows the migrations seed: put them back as a fresh install has them.
    conn.execute(
        "UPDATE etl_watermarks SET received_upto = NULL, window_start = NULL, "
        "last_run_at = NULL, last_rows = 0"
    )
    conn.execute("DELETE FROM quest_definitions WHERE slug <> 'weekly-25-taps'")
    conn.execute(
        "UPDATE quest_definitions SET title = 'Weekly goal', description = 'Tap 25 times this "
        "week', unit = 'taps', target = 25, period = 'week', reward_points = 100, active = true"
    )


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """An empty schema and a separate connection to inspect it with."""
    from tally.settings import reset_settings

    reset_settings()
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        _truncate(conn)
        yield conn
    reset_settings()


@pytest.fixture(scope="session")
def api_url(database_url: str) -> Iterator[str]:
    """`tally dev`'s app, served over real HTTP on a loopback port for the session."""
    import socket
    import threading

    import uvicorn

    from tally.local import template
    from tally.local.runtime import build_local_app

    app = build_local_app(template.load())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        thread.join(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def client(api_url: str, db: Any) -> Iterator[Any]:
    import httpx

    with httpx.Client(base_url=api_url, timeout=10) as http:
        yield http


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """How many generated cases the API fuzzer ran (issue 7 asks for the count)."""
    import sys

    module = sys.modules.get("tests.test_fuzz")
    summary = module.fuzz_summary() if module else None
    if summary:
        terminalreporter.write_line(summary)
