"""Analyst access on a real (local) ClickHouse server started with declared analysts: a read-only analyst cannot
INSERT, ALTER or DROP; a tenant-scoped one sees only its tenants' rows, also through views, and no other table;
the server and the analysts accept loopback connections only. The SQL used on servers with SQL access
management is parsed by the same engine (EXPLAIN AST), and both ways find the same tenant tables."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
import yaml
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from schemas import Feedback, make_event
from services.core.clickhouse import raw_tables
from services.core.clickhouse.access import (
    AccessError,
    access_statements,
    apply_analyst_access,
    has_sql_access_management,
    load_analysts,
    tenant_scope_from_migrations,
    tenant_scope_on_server,
)
from services.core.clickhouse.client import connect
from services.core.clickhouse.migrations import migrate
from services.core.settings import Settings
from services.infra.clickhouse_server import LocalClickHouse
from services.infra.process import free_port

PASSWORDS = {"analyst": "read-only please", "acme_analyst": "acme only"}


def _sha(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A local ClickHouse of its own, started with two analysts declared, migrated, with two tenants' rows."""
    home = tmp_path_factory.mktemp("access")
    analysts = home / "analysts.yaml"
    analysts.write_text(yaml.safe_dump({"analysts": [
        {"name": "analyst", "password_sha256_hex": _sha(PASSWORDS["analyst"])},
        {"name": "acme_analyst", "password_sha256_hex": _sha(PASSWORDS["acme_analyst"]), "tenants": ["acme"]},
    ]}))
    settings = Settings(data_dir=home, clickhouse_http_port=free_port(), clickhouse_tcp_port=free_port(),
                        clickhouse_database="llmops_access", clickhouse_analysts_file=analysts)
    clickhouse = LocalClickHouse(settings)
    clickhouse.start()
    try:
        migrate(settings)
        rows = [raw_tables.feedback_row(make_event(Feedback(request_id=f"r-{tenant}-{i}", score=0.5), source="t",
                                                   tenant_id=tenant), raw_tables.SourcePosition("t", 0, i))
                for i, tenant in enumerate(["acme", "acme", "globex"])]
        connect(settings).insert("raw_feedback", rows, column_names=raw_tables.FEEDBACK_COLUMNS)
        yield settings
    finally:
        clickhouse.stop()


def _as(settings: Settings, user: str, password: str | None = None, host: str = "127.0.0.1") -> Client:
    return clickhouse_connect.get_client(host=host, port=settings.clickhouse_http_port, username=user,
                                         password=PASSWORDS[user] if password is None else password,
                                         database=settings.clickhouse_database, connect_timeout=3)


def _refused(client: Client, sql: str, **kw: Any) -> str:
    with pytest.raises(DatabaseError) as info:
        client.command(sql, **kw)
    return str(info.value)


def test_the_analyst_reads_everything_and_cannot_write_or_drop(server: Settings) -> None:
    analyst = _as(server, "analyst")
    assert analyst.query("SELECT tenant_id, count() FROM raw_feedback GROUP BY tenant_id ORDER BY tenant_id").result_rows \
        == [("acme", 2), ("globex", 1)]
    assert analyst.query("SELECT count() FROM schema_migrations").result_rows[0][0] > 0
    db = server.clickhouse_database
    assert "ACCESS_DENIED" in _refused(analyst, f"INSERT INTO {db}.raw_feedback (tenant_id) VALUES ('x')")
    assert "ACCESS_DENIED" in _refused(analyst, f"DROP TABLE {db}.raw_feedback")
    assert "ACCESS_DENIED" in _refused(analyst, f"ALTER TABLE {db}.raw_feedback DELETE WHERE 1")
    assert "ACCESS_DENIED" in _refused(analyst, f"CREATE TABLE {db}.mine (a UInt8) ENGINE = Memory")
    assert "readonly" in _refused(analyst, "SET readonly = 0").lower()
    assert connect(server).query("SELECT count() FROM raw_feedback").result_rows[0][0] == 3  # nothing changed


def test_a_tenant_scoped_analyst_sees_only_its_tenant(server: Settings) -> None:
    acme = _as(server, "acme_analyst")
    assert acme.query("SELECT DISTINCT tenant_id FROM raw_feedback").result_rows == [("acme",)]
    assert acme.query("SELECT count() FROM raw_feedback").result_rows[0][0] == 2
    # Through a view over the table, and with filters it would like to widen: still only acme.
    assert acme.query("SELECT count() FROM raw_feedback WHERE tenant_id = 'globex'").result_rows[0][0] == 0
    widened = acme.query("SELECT count() FROM raw_feedback", settings={"additional_table_filters": {"raw_feedback": "1"}})
    assert widened.result_rows[0][0] == 2
    assert {r[0] for r in acme.query("SELECT tenant_id FROM v_cost_by_tenant_day").result_rows} <= {"acme"}
    assert acme.query("SELECT count() FROM (SELECT * FROM v_feedback_minute)").result_rows  # a view without tenant_id
    # Tables without tenant rows are not shared with it at all; and it cannot write either.
    assert "ACCESS_DENIED" in _refused(acme, "SELECT count() FROM schema_migrations")
    assert "ACCESS_DENIED" in _refused(acme, f"DROP TABLE {server.clickhouse_database}.raw_feedback")


def test_wrong_passwords_and_other_interfaces_are_refused(server: Settings) -> None:
    with pytest.raises(DatabaseError, match=r"AUTHENTICATION_FAILED|Authentication failed"):
        _as(server, "analyst", password="guess")
    outside = _outside_address()
    if outside is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    with pytest.raises(OperationalError):  # the server listens on 127.0.0.1 only
        _as(server, "analyst", host=outside)
    users_xml = (server.data_dir / "clickhouse" / "users.xml").read_text()
    assert users_xml.count("<networks><ip>127.0.0.1</ip><ip>::1</ip></networks>") == 3  # default and both analysts


def _outside_address() -> str | None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the outgoing interface
        address = str(probe.getsockname()[0])
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


def test_migrate_checks_the_local_analysts_and_both_ways_agree_on_tenant_tables(server: Settings) -> None:
    client = connect(server)
    assert not has_sql_access_management(client)  # chdb's engine runs in clickhouse-local mode
    report = apply_analyst_access(server, client)
    assert not report.sql and report.analysts == ["analyst", "acme_analyst"]
    on_server = tenant_scope_on_server(client, server.clickhouse_database)
    assert tenant_scope_from_migrations(server) == on_server
    assert {"raw_requests", "raw_completions", "raw_feedback", "dead_letters"} - set(on_server.tables) == {"dead_letters"}
    assert "schema_migrations" not in on_server.readable and "rollout_decisions" not in on_server.readable
    assert {"v_cost_by_tenant_day", "v_feedback_minute"} <= set(on_server.views)


def test_the_sql_for_servers_with_access_management_parses(server: Settings) -> None:
    client = connect(server)
    statements = access_statements(server, load_analysts(server), tenant_scope_on_server(client, server.clickhouse_database))
    assert statements[:2] == [
        "CREATE ROLE IF NOT EXISTS llmops_access_analyst", "GRANT SELECT ON llmops_access.* TO llmops_access_analyst",
    ]
    assert any("CREATE ROW POLICY OR REPLACE acme_analyst_tenants ON llmops_access.raw_feedback" in s and
               "tenant_id IN ('acme')" in s for s in statements)
    for statement in statements:  # the engine's own parser; executing needs a server with writable access storage
        assert client.query(f"EXPLAIN AST {statement}").result_rows, statement


def test_a_declared_analyst_missing_from_the_server_is_reported(server: Settings, tmp_path: Path) -> None:
    more = tmp_path / "analysts.yaml"
    more.write_text(yaml.safe_dump({"analysts": [{"name": "late_analyst", "password_sha256_hex": _sha("x")}]}))
    later = server.model_copy(update={"clickhouse_analysts_file": more})
    with pytest.raises(AccessError, match=r"late_analyst.*restart the local stack"):
        apply_analyst_access(later, connect(later))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"analysts": [{"name": "x; DROP", "password_sha256_hex": _sha("x")}]}))
    with pytest.raises(AccessError, match=r"bad\.yaml"):
        load_analysts(server.model_copy(update={"clickhouse_analysts_file": bad}))
