"""ClickHouse migrations: numbered SQL files applied in order, each recorded once.

Files are ``NNNN_description.sql`` in ``services/core/clickhouse/migrations/`` (package data; ``LLMOPS_MIGRATIONS_DIR``
overrides the directory). Statements are separated by a ``;`` at the end
of a line. Two placeholders are filled from the settings: ``{database}`` and ``{raw_ttl_days}``.
Applied migrations are recorded (with a checksum) in ``<database>.schema_migrations``; running again
applies only new files, and a recorded file whose content changed is an error (write a new migration
instead). A failing statement stops the run with the file name and the server's message. After the files,
``migrate`` sets up read-only analyst access (:mod:`services.core.clickhouse.access`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from clickhouse_connect.driver.exceptions import ClickHouseError

from services.core.clickhouse.access import apply_analyst_access
from services.core.clickhouse.client import connect
from services.core.settings import Settings

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """A migration could not be applied; the message names the file and quotes the server."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self, settings: Settings) -> list[str]:
        text = self.sql.replace("{database}", settings.clickhouse_database).replace(
            "{raw_ttl_days}", str(settings.raw_ttl_days)
        )
        lines = [ln for ln in text.splitlines() if not ln.strip().startswith("--")]
        parts = re.split(r";\s*$", "\n".join(lines), flags=re.MULTILINE)
        return [p.strip() for p in parts if p.strip()]


def discover(directory: Path) -> list[Migration]:
    """The migration files of a directory, in order. Bad names and duplicate numbers are errors."""
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist")
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_description.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{path.name}: number {version:04d} is used twice")
        found[version] = Migration(version, match.group(2), path, path.read_text())
    return [found[v] for v in sorted(found)]


@dataclass(frozen=True)
class MigrationStatus:
    migration: Migration
    applied: bool


def _ensure_bookkeeping(settings: Settings) -> None:
    client = connect(settings, database=None)
    db = settings.clickhouse_database
    client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations ("
        " version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)"
        ") ENGINE = MergeTree ORDER BY version"
    )


def _applied(settings: Settings) -> dict[int, str]:
    client = connect(settings)
    rows = client.query("SELECT version, checksum FROM schema_migrations ORDER BY version").result_rows
    return {int(v): str(c) for v, c in rows}


def status(settings: Settings) -> list[MigrationStatus]:
    _ensure_bookkeeping(settings)
    applied = _applied(settings)
    return [MigrationStatus(m, m.version in applied) for m in discover(settings.migrations_path())]


def migrate(settings: Settings) -> list[Migration]:
    """Apply every migration not applied yet, in order; returns those applied now."""
    migrations = discover(settings.migrations_path())
    _ensure_bookkeeping(settings)
    applied = _applied(settings)
    for m in migrations:
        if m.version in applied and applied[m.version] != m.checksum:
            raise MigrationError(
                f"{m.path.name} was changed after it was applied (checksum differs); add a new migration instead"
            )
    client = connect(settings)
    done = []
    for m in migrations:
        if m.version in applied:
            continue
        for i, statement in enumerate(m.statements(settings), start=1):
            try:
                client.command(statement)
            except ClickHouseError as exc:
                raise MigrationError(f"{m.path.name}, statement {i}: {exc}") from exc
        client.insert("schema_migrations", [[m.version, m.name, m.checksum]], column_names=["version", "name", "checksum"])
        done.append(m)
    apply_analyst_access(settings, client)  # the read-only analyst role and the declared analysts (access.py)
    return done
