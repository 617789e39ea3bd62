"""Versioned SQL migrations: applied in order, one transaction each, checksummed, lock-guarded."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from aws_lambda_powertools import Logger

logger = Logger(child=True)

# Any constant works; it only has to be the same for every runner.
MIGRATION_LOCK_KEY = 7_402_115_001
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("tally.db.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"Duplicate migration versions: {versions}")
    return found


def migrate(conn: psycopg.Connection[Any], migrations: list[Migration] | None = None) -> list[str]:
    """Apply pending migrations; returns the names applied. Safe when two runners start at once."""
    migrations = load_migrations() if migrations is None else migrations
    applied: list[str] = []
    # A session-level advisory lock: a second runner waits, then finds nothing left to do.
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
    try:
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version     integer PRIMARY KEY,
                name        text NOT NULL,
                checksum    text NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        rows = conn.execute("SELECT version, name, checksum FROM schema_migrations").fetchall()
        done = {_row(r)[0]: _row(r) for r in rows}
        for migration in migrations:
            if migration.version in done:
                _, name, checksum = done[migration.version]
                if checksum != migration.checksum:
                    raise MigrationError(
                        f"Migration {name} was edited after it was applied "
                        f"(checksum {checksum[:12]} != {migration.checksum[:12]}); "
                        "write a new migration instead"
                    )
                continue
            with conn.transaction():
                conn.execute(migration.sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
            logger.info("Applied migration", extra={"migration": migration.name})
            applied.append(migration.name)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return applied


def _row(row: Any) -> tuple[int, str, str]:
    if isinstance(row, dict):
        return row["version"], row["name"], row["checksum"]
    return row[0], row[1], row[2]
