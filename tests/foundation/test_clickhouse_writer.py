"""The ClickHouse writer on the real server: poison rows are isolated and returned, everything else is written;
an unreachable server or a missing table is retried, never turned into rejected rows; refused statements raise."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from services.core.clickhouse.client import connect
from services.core.clickhouse.writer import (
    ClickHouseWriter,
    Failure,
    InsertResult,
    RejectedRow,
    StatementRejected,
    WriterStopped,
    classify,
)
from services.core.settings import Settings
from services.infra.process import free_port

T = TypeVar("T")
COLUMNS = ["id", "text", "small", "at"]


def _table(settings: Settings, unique: str, extra: str = "") -> str:
    name = f"writer_{unique}"
    connect(settings).command(
        f"CREATE TABLE {name} (id UInt32, text String, small UInt8, at DateTime64(3, 'UTC'){extra}) "
        "ENGINE = ReplacingMergeTree ORDER BY id"
    )
    return name


def _rows(n: int) -> list[list[Any]]:
    now = datetime.now(UTC)
    return [[i, f"row {i}", i % 200, now] for i in range(n)]


def _stored_ids(settings: Settings, table: str) -> list[int]:
    return [r[0] for r in connect(settings).query(f"SELECT id FROM {table} FINAL ORDER BY id").result_rows]


def _run(coro: Coroutine[Any, Any, T], timeout_s: float = 120) -> T:
    """Run with a deadline: a writer that retries a rejected row forever fails the test instead of hanging it."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout=timeout_s)

    return asyncio.run(bounded())


def test_one_poison_row_among_1000_is_rejected_and_999_are_stored(local_stack: Settings, unique: str) -> None:
    table = _table(local_stack, unique)
    rows = _rows(1000)
    rows[637][1] = "bad \udc80 text"  # a lone surrogate: "surrogates not allowed"
    writer = ClickHouseWriter(local_stack)
    result = _run(writer.insert(table, rows, COLUMNS))
    assert result.written == 999
    assert [r.index for r in result.rejected] == [637]
    assert "surrogates not allowed" in result.rejected[0].reason
    assert _stored_ids(local_stack, table) == [i for i in range(1000) if i != 637]
    assert writer.failures == 0, "a rejection is never retried as it is"
    assert 0 < writer.split_inserts <= 2 * 10 + 2


def test_every_kind_of_poison_is_isolated(local_stack: Settings, unique: str) -> None:
    table = _table(local_stack, unique)
    rows = _rows(300)
    poison = {
        0: (2, 300),  # out of UInt8's range
        1: (2, -1),  # negative into an unsigned column
        99: (1, None),  # None in a non-Nullable String
        100: (0, "not a number"),
        250: (3, "not a time"),
        299: (1, "\ud800"),
    }
    for index, (column, value) in poison.items():
        rows[index][column] = value
    result = _run(ClickHouseWriter(local_stack).insert(table, rows, COLUMNS))
    assert [r.index for r in result.rejected] == sorted(poison)
    assert result.written == 300 - len(poison)
    assert all(r.reason for r in result.rejected)
    assert _stored_ids(local_stack, table) == [i for i in range(300) if i not in poison]


def test_rows_the_server_refuses_are_isolated_with_its_message(local_stack: Settings, unique: str) -> None:
    table = _table(local_stack, unique, extra=", CONSTRAINT short CHECK length(text) < 50")
    rows = _rows(64)
    rows[5][1] = rows[40][1] = "x" * 80
    result = _run(ClickHouseWriter(local_stack).insert(table, rows, COLUMNS))
    assert [r.index for r in result.rejected] == [5, 40]
    assert "VIOLATED_CONSTRAINT" in result.rejected[0].reason or "short" in result.rejected[0].reason
    assert len(_stored_ids(local_stack, table)) == 62


def test_clean_and_empty_inserts() -> None:
    assert InsertResult(written=3).ok and not InsertResult(written=0, rejected=[RejectedRow(0, "x")]).ok
    assert _run(ClickHouseWriter(Settings()).insert("never_touched", [], COLUMNS)) == InsertResult(written=0)


def _in_thread(make: Callable[[], Coroutine[Any, Any, T]]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def main() -> None:
        try:
            out["result"] = asyncio.run(make())
        except BaseException as exc:  # noqa: BLE001 - inspected by the test
            out["error"] = exc

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    return thread, out


def _wait_until(check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_a_missing_table_blocks_until_it_exists_then_writes_everything(local_stack: Settings, unique: str) -> None:
    table = f"writer_late_{unique}"
    writer = ClickHouseWriter(local_stack, retry_initial_s=0.05, retry_max_s=0.2)
    thread, out = _in_thread(lambda: writer.insert(table, _rows(50), COLUMNS))
    _wait_until(lambda: writer.failures >= 2, timeout_s=30)
    assert thread.is_alive() and not out, "a missing table is retried, not rejected row by row"
    assert _table(local_stack, f"late_{unique}") == table
    thread.join(timeout=30)
    assert out.get("result") == InsertResult(written=50), out
    assert len(_stored_ids(local_stack, table)) == 50


def test_an_unreachable_server_is_retried_until_stopped(local_stack: Settings) -> None:
    nowhere = local_stack.model_copy(update={"clickhouse_url": f"http://127.0.0.1:{free_port()}"})

    async def go() -> None:
        writer = ClickHouseWriter(nowhere, retry_initial_s=0.05, retry_max_s=0.1)
        task = asyncio.create_task(writer.insert("anything", _rows(3), COLUMNS))
        while writer.failures < 3:
            assert not task.done(), "an unreachable server must be retried"
            await asyncio.sleep(0.02)
        writer.stop.set()
        with pytest.raises(WriterStopped):
            await asyncio.wait_for(task, timeout=10)

    _run(go())


def test_a_refused_statement_raises_with_the_server_message(local_stack: Settings) -> None:
    writer = ClickHouseWriter(local_stack)
    with pytest.raises(StatementRejected, match="Syntax error") as info:
        _run(writer.command("SELEC 1"))
    assert "62" in info.value.reason and writer.failures == 0
    assert _run(writer.query("SELECT 1 + 1")) == [(2,)]


def test_classification() -> None:
    assert classify(OperationalError("connection refused")) is Failure.TRANSIENT
    assert classify(ConnectionResetError()) is Failure.TRANSIENT
    assert classify(DatabaseError("HTTP driver received HTTP status 503")) is Failure.TRANSIENT
    assert classify(DatabaseError("Code: 241. MEMORY_LIMIT_EXCEEDED", code=241)) is Failure.TRANSIENT
    assert classify(DatabaseError("Code: 60. UNKNOWN_TABLE", code=60)) is Failure.BLOCKED
    assert classify(DatabaseError("Code: 469. VIOLATED_CONSTRAINT", code=469)) is Failure.REJECTED
    assert classify(UnicodeEncodeError("utf-8", "\udc80", 0, 1, "surrogates not allowed")) is Failure.REJECTED
