"""Real ClickHouse: migrations are idempotent and strict; the raw tables never double count a redelivery."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from schemas import Completion, DeadLetter, Feedback, make_event
from services.core.clickhouse import raw_tables
from services.core.clickhouse.client import connect
from services.core.clickhouse.migrations import MigrationError, discover, migrate, status
from services.core.settings import Settings
from tests.foundation.samples import sample_payloads


def _tables(settings: Settings) -> list[tuple[str, str]]:
    rows = connect(settings).query(
        "SELECT name, create_table_query FROM system.tables WHERE database = %(db)s ORDER BY name",
        parameters={"db": settings.clickhouse_database},
    )
    return [tuple(r) for r in rows.result_rows]


def test_migrations_applied_twice_change_nothing(local_stack: Settings) -> None:
    before = _tables(local_stack)
    assert {"raw_requests", "raw_completions", "raw_feedback", "dead_letters", "schema_migrations"} <= {
        t for t, _ in before
    }
    assert migrate(local_stack) == []
    assert _tables(local_stack) == before
    recorded = connect(local_stack).query("SELECT count() FROM schema_migrations").result_rows[0][0]
    assert recorded == len(discover(local_stack.migrations_path()))
    assert all(s.applied for s in status(local_stack))


def test_raw_tables_have_the_configured_ttl(local_stack: Settings) -> None:
    ddl = dict(_tables(local_stack))["raw_completions"]
    assert f"toIntervalDay({local_stack.raw_ttl_days})" in ddl
    assert "ORDER BY (tenant_id, toDate(occurred_at), request_id)" in ddl


def _isolated(settings: Settings, tmp_path: Path, db: str) -> Settings:
    return settings.model_copy(update={"migrations_dir": tmp_path, "clickhouse_database": db})


def test_failed_migration_stops_with_file_and_server_message(local_stack: Settings, tmp_path: Path, unique: str) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE IF NOT EXISTS {database}.ok (a UInt8) ENGINE = MergeTree ORDER BY a;\n")
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE {database}.broken (a UInt8) ENGINE = NoSuchEngine;\n")
    (tmp_path / "0003_later.sql").write_text("CREATE TABLE {database}.later (a UInt8) ENGINE = MergeTree ORDER BY a;\n")
    settings = _isolated(local_stack, tmp_path, f"mig_{unique}")
    with pytest.raises(MigrationError, match=r"0002_broken\.sql, statement 1: .*NoSuchEngine"):
        migrate(settings)
    assert [s.applied for s in status(settings)] == [True, False, False]
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE {database}.broken (a UInt8) ENGINE = MergeTree ORDER BY a;\n")
    assert [m.name for m in migrate(settings)] == ["broken", "later"]


def test_changed_applied_migration_is_refused(local_stack: Settings, tmp_path: Path, unique: str) -> None:
    (tmp_path / "0001_t.sql").write_text("CREATE TABLE IF NOT EXISTS {database}.t (a UInt8) ENGINE = MergeTree ORDER BY a;\n")
    settings = _isolated(local_stack, tmp_path, f"mig_{unique}")
    migrate(settings)
    (tmp_path / "0001_t.sql").write_text("CREATE TABLE IF NOT EXISTS {database}.t (a UInt16) ENGINE = MergeTree ORDER BY a;\n")
    with pytest.raises(MigrationError, match=r"0001_t\.sql was changed after it was applied"):
        migrate(settings)


def test_bad_migration_names_are_refused(tmp_path: Path) -> None:
    (tmp_path / "1_x.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_description"):
        discover(tmp_path)


def _count(settings: Settings, table: str, request_id: str) -> int:
    count: int = connect(settings).query(
        f"SELECT count() FROM {table} FINAL WHERE request_id = %(r)s", parameters={"r": request_id}
    ).result_rows[0][0]
    return count


def test_redelivered_raw_events_do_not_double_count(local_stack: Settings, unique: str) -> None:
    client = connect(local_stack)
    request = sample_payloads()[0].model_copy(update={"request_id": f"dup-{unique}"})
    req_event = make_event(request, source="t", tenant_id="acme")
    pos = raw_tables.SourcePosition("llm.requests", 0, 5)
    for _ in range(3):  # the same event delivered three times, in separate inserts
        client.insert("raw_requests", [raw_tables.request_row(req_event, pos)], column_names=raw_tables.REQUEST_COLUMNS)
    assert _count(local_stack, "raw_requests", f"dup-{unique}") == 1

    # A completion regenerated after a replica restart: new event id, same request id -> one row, latest wins.
    for i, text in enumerate(["first try", "second try"]):
        comp = Completion(request_id=f"dup-{unique}", tenant="acme", deployment_id="d", text=text,
                          finish_reason="stop", completion_tokens=2)
        ev = make_event(comp, source="t", tenant_id="acme")
        client.insert("raw_completions", [raw_tables.completion_row(ev, raw_tables.SourcePosition("llm.completions", 1, i))],
                      column_names=raw_tables.COMPLETION_COLUMNS)
    rows = client.query(
        "SELECT text, sum(completion_tokens) OVER () FROM raw_completions FINAL WHERE request_id = %(r)s",
        parameters={"r": f"dup-{unique}"},
    ).result_rows
    assert rows == [("second try", 2)]

    # Two different feedback events on one request both count; a redelivery of either does not.
    fb = [make_event(Feedback(request_id=f"dup-{unique}", score=s), source="t", tenant_id="acme") for s in (0.2, 0.8)]
    for ev in (*fb, fb[0]):
        client.insert("raw_feedback", [raw_tables.feedback_row(ev, raw_tables.SourcePosition("llm.feedback", 0, 1))],
                      column_names=raw_tables.FEEDBACK_COLUMNS)
    assert _count(local_stack, "raw_feedback", f"dup-{unique}") == 2


def test_dead_letters_keep_the_original_as_redacted_text_once(local_stack: Settings, unique: str) -> None:
    client = connect(local_stack)
    value = b"\xff\x00raw mail@example.com"
    letter = DeadLetter.from_bytes(topic=f"t.{unique}", partition=1, offset=42, error_kind="not_json",
                                   error="value is not UTF-8 JSON (from mail@example.com)", value=value, key=b"k1",
                                   consumer="sink")
    for _ in range(2):
        client.insert("dead_letters", [raw_tables.dead_letter_row(letter, lambda t: t.replace("mail@example.com", "[R]"))],
                      column_names=raw_tables.DEAD_LETTER_COLUMNS)
    rows = client.query(
        "SELECT original, original_key, error_kind, error, original_size, original_sha256 FROM dead_letters FINAL "
        "WHERE src_topic = %(t)s", parameters={"t": f"t.{unique}"},
    ).result_rows
    # the reason is redacted too: a server's or a validator's message may quote the value it refused
    assert rows == [("\ufffd\x00raw [R]", "k1", "not_json", "value is not UTF-8 JSON (from [R])", len(value),
                     hashlib.sha256(value).hexdigest())]


def test_redaction_applies_to_text_columns(local_stack: Settings, unique: str) -> None:
    comp = Completion(request_id=f"red-{unique}", tenant="acme", deployment_id="d", text="mail me at a@b.example",
                      prompt_text="my mail is a@b.example", finish_reason="stop")
    row = raw_tables.completion_row(make_event(comp, source="t", tenant_id="acme"),
                                    raw_tables.SourcePosition("x", 0, 0), redact=lambda s: s.replace("a@b.example", "[REDACTED]"))
    assert "a@b.example" not in str(row)
