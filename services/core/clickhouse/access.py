"""Read-only ClickHouse access for analysts, optionally limited to some tenants' rows.

Analysts are declared in a YAML file named by ``LLMOPS_CLICKHOUSE_ANALYSTS_FILE`` (none by default)::

    analysts:
      - name: analyst                    # every tenant's rows
        password_sha256_hex: 5e884898...  # echo -n 'the password' | sha256sum
      - name: acme_analyst
        tenants: [acme]                  # only rows whose tenant_id is acme
        password_sha256_hex: ...

Every analyst can only read (SELECT; no INSERT, ALTER, DROP, no settings that write). A tenant-scoped analyst
reads only the tables and views that have a ``tenant_id`` column ("tenant tables"), and only its tenants' rows
there, also through views (ClickHouse applies row policies to the tables a view reads). Only password hashes
are configured, never passwords.

How it is applied depends on the server:

* **A ClickHouse server with SQL access management** (a ``local_directory`` or ``replicated`` user directory, as
  real servers have): ``llmops migrate`` creates the role ``<database>_analyst`` (SELECT on the database) every
  time, and each declared analyst as a user: full analysts get the role; tenant-scoped ones get SELECT on the
  tenant tables and one row policy per tenant table (``tenant_id IN (...)``), plus a permissive ``USING 1``
  policy for everyone else so that other users keep seeing every row. Statements are idempotent
  (``IF NOT EXISTS`` / ``OR REPLACE``), so migrating again applies a changed file.
* **The local server** (chdb's engine, which runs in clickhouse-local mode): it has no writable access storage
  (``CREATE ROLE`` fails with ACCESS_STORAGE_FOR_INSERTION_NOT_FOUND, and without a users.xml the default user
  may not manage access at all), and it reads ``users.xml`` once at start (``SYSTEM RELOAD USERS`` does not
  re-read it). So ``llmops infra up`` writes the declared analysts into the server's ``users.xml`` as XML users
  with the same grants and row filters, and ``migrate`` only checks they are there (a changed file needs
  ``infra down`` + ``infra up``). The tenant tables are then read from the migration files, since the tables do
  not exist yet when the server starts. The server and every user accept loopback connections only.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import yaml
from clickhouse_connect.driver.client import Client
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.core.settings import Settings

log = logging.getLogger(__name__)

TENANT_COLUMN = "tenant_id"
LOOPBACK = ("127.0.0.1", "::1")
_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class AccessError(RuntimeError):
    """The analysts file is invalid, or the server refused to set up access; the message says which and why."""


class Analyst(BaseModel):
    """One analyst user."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME, max_length=64)
    password_sha256_hex: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="SHA-256 of the password, in hex.")
    tenants: list[str] | None = Field(
        default=None, min_length=1, description="Only these tenants' rows; unset: every tenant's rows."
    )


class AnalystsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    analysts: list[Analyst] = Field(default_factory=list)


def load_analysts(settings: Settings) -> list[Analyst]:
    """The analysts declared in ``settings.clickhouse_analysts_file`` (none when unset)."""
    path = settings.clickhouse_analysts_file
    if path is None:
        return []
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        analysts = AnalystsFile.model_validate(raw).analysts
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise AccessError(f"analysts file {path}: {exc}") from None
    names = [a.name for a in analysts]
    if len(set(names)) != len(names) or "default" in names:
        raise AccessError(f"analysts file {path}: names must be unique and not 'default'")
    return analysts


def analyst_role(settings: Settings) -> str:
    return f"{settings.clickhouse_database}_analyst"


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def tenant_filter(tenants: list[str]) -> str:
    """The row condition of a tenant-scoped analyst."""
    return f"{TENANT_COLUMN} IN ({', '.join(_sql_string(t) for t in tenants)})"


# ---- which tables carry tenant rows ------------------------------------------------------------------------


@dataclass(frozen=True)
class TenantScope:
    """What a tenant-scoped analyst may read: ``tables`` with a ``tenant_id`` column (each filtered by a row
    policy) and the ``views`` (read through those policies: ClickHouse checks and filters a view's tables as the
    invoker, so a view over other tables is refused and one over tenant tables shows only the tenant's rows)."""

    tables: list[str]
    views: list[str]

    @property
    def readable(self) -> list[str]:
        return sorted(self.tables + self.views)


_CREATE = re.compile(
    r"^\s*CREATE\s+(MATERIALIZED\s+VIEW|VIEW|TABLE)\s+(?:IF\s+NOT\s+EXISTS\s+)?\{database\}\.(\w+)",
    re.IGNORECASE,
)
_TENANT_COLUMN = re.compile(rf"^\s*\(?\s*{TENANT_COLUMN}\s+[A-Z]", re.MULTILINE)


def tenant_scope_from_migrations(settings: Settings) -> TenantScope:
    """The scope as the migration files will create it (the local server starts before its tables exist)."""
    from services.core.clickhouse.migrations import discover  # the runner imports this module

    tables: set[str] = set()
    views: set[str] = set()
    for migration in discover(settings.migrations_path()):
        text = "\n".join(ln for ln in migration.sql.splitlines() if not ln.strip().startswith("--"))
        for statement in re.split(r";\s*$", text, flags=re.MULTILINE):
            match = _CREATE.match(statement)
            if match is None:
                continue
            kind, name = match.group(1).upper(), match.group(2)
            if kind == "VIEW":
                views.add(name)
            elif kind == "TABLE" and _TENANT_COLUMN.search(statement):
                tables.add(name)
    return TenantScope(sorted(tables), sorted(views))


def tenant_scope_on_server(client: Client, database: str) -> TenantScope:
    """The scope as the server has it now."""
    rows = client.query(
        "SELECT t.name, t.engine, countIf(c.name = {col:String}) > 0 FROM system.tables AS t "
        "LEFT JOIN system.columns AS c ON c.database = t.database AND c.table = t.name "
        "WHERE t.database = {db:String} GROUP BY t.name, t.engine ORDER BY t.name",
        parameters={"db": database, "col": TENANT_COLUMN},
    ).result_rows
    tables = [str(name) for name, engine, has in rows if has and engine not in ("View", "MaterializedView")]
    views = [str(name) for name, engine, _ in rows if engine == "View"]
    return TenantScope(tables, views)


# ---- servers with SQL access management --------------------------------------------------------------------


def access_statements(settings: Settings, analysts: list[Analyst], scope: TenantScope) -> list[str]:
    """The idempotent SQL that sets up the analyst role and the declared analysts."""
    db, role = settings.clickhouse_database, analyst_role(settings)
    out = [f"CREATE ROLE IF NOT EXISTS {role}", f"GRANT SELECT ON {db}.* TO {role}"]
    scoped = [a for a in analysts if a.tenants is not None]
    for a in analysts:
        out.append(f"CREATE USER IF NOT EXISTS {a.name} IDENTIFIED WITH sha256_hash BY {_sql_string(a.password_sha256_hex)}")
        out.append(f"ALTER USER {a.name} IDENTIFIED WITH sha256_hash BY {_sql_string(a.password_sha256_hex)}")
        if a.tenants is None:
            out += [f"GRANT {role} TO {a.name}", f"ALTER USER {a.name} DEFAULT ROLE {role}"]
        else:
            out += [f"GRANT SELECT ON {db}.{t} TO {a.name}" for t in scope.readable]
    for table in scope.tables:
        for a in scoped:
            assert a.tenants is not None
            out.append(f"CREATE ROW POLICY OR REPLACE {a.name}_tenants ON {db}.{table} AS PERMISSIVE FOR SELECT "
                       f"USING {tenant_filter(a.tenants)} TO {a.name}")
        if scoped:
            others = ", ".join(a.name for a in scoped)
            out.append(f"CREATE ROW POLICY OR REPLACE {db}_all_rows ON {db}.{table} AS PERMISSIVE FOR SELECT "
                       f"USING 1 TO ALL EXCEPT {others}")
    return out


def has_sql_access_management(client: Client) -> bool:
    """Whether the server can store users, roles and row policies created by SQL."""
    rows = client.query(
        "SELECT count() FROM system.user_directories WHERE type IN ('local_directory', 'replicated', 'memory')"
    ).result_rows
    return bool(rows[0][0])


@dataclass(frozen=True)
class AccessReport:
    """What :func:`apply_analyst_access` did."""

    sql: bool
    """True: set up with SQL; False: the local server, whose users.xml holds the analysts."""
    role: str | None
    analysts: list[str]


def apply_analyst_access(settings: Settings, client: Client) -> AccessReport:
    """Set up the analyst role and the declared analysts (``migrate`` calls this after the migrations)."""
    analysts = load_analysts(settings)
    if has_sql_access_management(client):
        scope = tenant_scope_on_server(client, settings.clickhouse_database)
        for statement in access_statements(settings, analysts, scope):
            try:
                client.command(statement)
            except Exception as exc:
                what = f"setting up analyst access: {statement.split(' BY ')[0]}: {exc}"
                if analysts:
                    raise AccessError(what) from exc
                # Only the role was asked for: a migrating user without ACCESS MANAGEMENT still migrates.
                log.warning("%s (the analyst role is not created; grant ACCESS MANAGEMENT to the migrating user)", what)
                return AccessReport(sql=True, role=None, analysts=[])
        return AccessReport(sql=True, role=analyst_role(settings), analysts=[a.name for a in analysts])
    existing = {str(r[0]) for r in client.query("SELECT name FROM system.users").result_rows}
    missing = [a.name for a in analysts if a.name not in existing]
    if missing:
        where = "restart the local stack (llmops infra down; llmops infra up)" if settings.uses_local_clickhouse else (
            "this server has no SQL access management: declare them in its users.xml")
        raise AccessError(f"analysts {missing} are not users of the ClickHouse server yet: {where}")
    log.info("ClickHouse has no SQL access management (the local server): analysts come from its users.xml")
    return AccessReport(sql=False, role=None, analysts=[a.name for a in analysts])


# ---- the local server: users.xml ---------------------------------------------------------------------------


def local_users_xml(settings: Settings, analysts: list[Analyst], scope: TenantScope) -> str:
    """users.xml for the local server: the default user as clickhouse-local defines it, plus the analysts."""
    db = settings.clickhouse_database
    networks = "".join(f"<ip>{ip}</ip>" for ip in LOOPBACK)
    users = [
        "    <default>\n"
        "      <password></password>\n"
        f"      <networks>{networks}</networks>\n"
        "      <profile>default</profile><quota>default</quota>\n"
        "      <named_collection_control>1</named_collection_control>\n"
        "    </default>"
    ]
    for a in analysts:
        if a.tenants is None:
            grants = f"<query>GRANT SELECT ON {db}.*</query>"
            rows = ""
        else:
            grants = "".join(f"<query>GRANT SELECT ON {db}.{t}</query>" for t in scope.readable)
            condition = escape(tenant_filter(a.tenants))
            rows = "\n      <databases><{db}>{tables}</{db}></databases>".format(
                db=db, tables="".join(f"<{t}><filter>{condition}</filter></{t}>" for t in scope.tables))
        users.append(
            f"    <{a.name}>\n"
            f"      <password_sha256_hex>{a.password_sha256_hex.lower()}</password_sha256_hex>\n"
            f"      <networks>{networks}</networks>\n"
            "      <profile>llmops_analyst</profile><quota>default</quota>\n"
            f"      <grants>{grants}</grants>{rows}\n"
            f"    </{a.name}>"
        )
    return (
        "<clickhouse>\n"
        "  <profiles>\n    <default/>\n    <llmops_analyst><readonly>2</readonly></llmops_analyst>\n  </profiles>\n"
        "  <quotas><default/></quotas>\n"
        "  <users>\n" + "\n".join(users) + "\n  </users>\n"
        "</clickhouse>\n"
    )
