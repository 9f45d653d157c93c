"""A ClickHouse writer for the agents: every call runs off the event loop; failures are classified, not just retried.

``insert``/``command``/``query`` run the blocking clickhouse-connect call in a worker thread
(``asyncio.to_thread``). What happens on a failure depends on its kind (:func:`classify`):

* **transient** (the server is unreachable, overloaded or timed out: a network error, an HTTP error without a
  ClickHouse code, or a code in :data:`TRANSIENT_CODES`): retried with exponential backoff (``retry_initial_s``
  doubling up to ``retry_max_s``), forever, each failure logged. The caller is blocked meanwhile, so it stops
  consuming; it never commits offsets of data that is not stored.
* **blocked** (no row of any batch can go in until an operator acts: unknown table, database or column, access
  denied, read-only; :data:`BLOCKING_CODES`): retried the same way, logged as errors. Running the missing
  migration unblocks the writer; dead-lettering every row instead would bury a deployment mistake.
* **rejected** (anything else: the data itself was refused, by the client while serializing it (a lone surrogate
  in a String, "surrogates not allowed"; a number out of the column's range; None in a non-Nullable column) or by
  the server (a constraint, a value it cannot parse, a field too large)): never retried as it is.

``insert(table, rows, columns) -> InsertResult``: a rejected batch is split in halves, recursively, down to
the rows that fail on their own; every other row is written. The result says how many rows were written and
lists the rest as ``RejectedRow(index, reason)``: ``index`` is the row's position in ``rows``, ``reason`` the
message of the client or server that refused it. The caller dead-letters those (its source records) and goes
on; the writer also logs each one, so none is lost silently. One poison row among n costs about 2·log2(n)
extra inserts. Retries and splits may write a row twice (a batch that fails mid-stream can have written some
blocks): safe because every table written this way is keyed so that a repeated insert collapses
(ReplacingMergeTree).

``command``/``query`` cannot be split: a rejected statement raises :class:`StatementRejected` at once (a bug
or bad input to report, not something to retry forever).

A stop request (the ``stop`` event) ends any retrying with :class:`WriterStopped`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, DatabaseError, OperationalError, ProgrammingError

from services.core import metrics
from services.core.clickhouse.client import connect
from services.core.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT_CODES: dict[int, str] = {
    159: "TIMEOUT_EXCEEDED", 160: "TOO_SLOW", 202: "TOO_MANY_SIMULTANEOUS_QUERIES", 203: "NO_FREE_CONNECTION",
    209: "SOCKET_TIMEOUT", 210: "NETWORK_ERROR", 236: "ABORTED", 241: "MEMORY_LIMIT_EXCEEDED",
    242: "TABLE_IS_READ_ONLY", 243: "NOT_ENOUGH_SPACE", 252: "TOO_MANY_PARTS", 279: "ALL_CONNECTION_TRIES_FAILED",
    285: "TOO_FEW_LIVE_REPLICAS", 319: "UNKNOWN_STATUS_OF_INSERT", 394: "QUERY_WAS_CANCELLED", 425: "SYSTEM_ERROR",
    439: "CANNOT_SCHEDULE_TASK", 473: "DEADLOCK_AVOIDED", 999: "KEEPER_EXCEPTION", 1000: "POCO_EXCEPTION",
}
"""Server error codes that say "not now": the same call may succeed later."""

BLOCKING_CODES: dict[int, str] = {
    16: "NO_SUCH_COLUMN_IN_TABLE", 60: "UNKNOWN_TABLE", 81: "UNKNOWN_DATABASE", 164: "READONLY",
    192: "UNKNOWN_USER", 193: "WRONG_PASSWORD", 497: "ACCESS_DENIED", 516: "AUTHENTICATION_FAILED",
}
"""Server error codes that refuse every row alike until an operator acts (migration, grants, credentials)."""

REASON_MAX_CHARS = 2_000


def _not_a_serialization_traceback(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Error serializing column")


# clickhouse-connect logs a traceback at ERROR for every row it cannot serialize, i.e. on every attempt while a batch
# is split down to its poison rows; the writer reports each rejected row itself (one warning, with the reason).
logging.getLogger("clickhouse_connect.driver.transform").addFilter(_not_a_serialization_traceback)


class Failure(StrEnum):
    """What a failed ClickHouse call means for the caller."""

    TRANSIENT = "transient"
    BLOCKED = "blocked"
    REJECTED = "rejected"


def classify(exc: BaseException) -> Failure:
    """The kind of a failure raised by a clickhouse-connect call (see the module docstring)."""
    if isinstance(exc, ClickHouseError):
        code = getattr(exc, "code", None)
        if code is not None:
            if code in TRANSIENT_CODES:
                return Failure.TRANSIENT
            if code in BLOCKING_CODES:
                return Failure.BLOCKED
            return Failure.REJECTED
        if isinstance(exc, ProgrammingError) and "Unrecognized column" in str(exc):
            return Failure.BLOCKED  # the client checked the column names against the table: a missing migration
        if isinstance(exc, OperationalError) or type(exc) is DatabaseError:
            return Failure.TRANSIENT  # connection lost/refused, timeouts, HTTP errors with no ClickHouse code
        return Failure.REJECTED  # DataError, ProgrammingError: the client refused to serialize the data
    if isinstance(exc, ConnectionError | TimeoutError):
        return Failure.TRANSIENT
    return Failure.REJECTED  # UnicodeEncodeError, ValueError, TypeError, OverflowError while serializing a row


def reason_of(exc: BaseException) -> str:
    """The client's or server's message, without the request URL, bounded."""
    text = str(exc).split(" (for url ", 1)[0].strip() or type(exc).__name__
    text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= REASON_MAX_CHARS else text[: REASON_MAX_CHARS - 3] + "..."


class WriterStopped(RuntimeError):
    """The worker is stopping while a ClickHouse call was still being retried."""


class StatementRejected(RuntimeError):
    """ClickHouse refused a command or query for a reason that retrying cannot fix; ``reason`` says why."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what}: {reason}")
        self.reason = reason


class _Rejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RejectedRow:
    """A row ClickHouse (or its client) refused on its own: its position in the inserted rows, and why."""

    index: int
    reason: str


@dataclass(frozen=True)
class InsertResult:
    """What an insert stored: ``written`` rows, and the ``rejected`` ones (by position) for the caller to dead-letter."""

    written: int
    rejected: list[RejectedRow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.rejected


class ClickHouseWriter:
    """One client (one call at a time) with classified, retrying async calls."""

    def __init__(
        self,
        settings: Settings,
        *,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 10.0,
        stop: asyncio.Event | None = None,
        name: str = "clickhouse",
    ) -> None:
        self.settings = settings
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.stop = stop or asyncio.Event()
        self.name = name
        self._client: Client | None = None
        self._lock = asyncio.Lock()
        self.failures = 0
        """Failed attempts that were retried (transient or blocked), for tests and metrics."""
        self.rejected_rows = 0
        """Rows refused so far."""
        self.split_inserts = 0
        """Extra inserts spent isolating rejected rows."""

    def _get_client(self) -> Client:
        if self._client is None:
            self._client = connect(self.settings)
        return self._client

    async def _attempt(self, what: str, fn: Callable[[Client], T]) -> T:
        """Run ``fn`` until it succeeds, retrying transient and blocked failures; a rejection raises ``_Rejected``."""
        delay = self.retry_initial_s
        while True:
            try:
                return await asyncio.to_thread(lambda: fn(self._get_client()))
            except Exception as exc:  # every failure is classified below
                kind = classify(exc)
                if kind is Failure.REJECTED:
                    raise _Rejected(reason_of(exc)) from exc
                self.failures += 1
                self._client = None  # reconnect on the next attempt
                level = logging.ERROR if kind is Failure.BLOCKED else logging.WARNING
                log.log(level, "%s: %s failed, %s (%s); retrying in %.1fs", self.name, what, kind.value,
                        reason_of(exc)[:300], delay)
            if self.stop.is_set():
                raise WriterStopped(f"{self.name}: stopped while retrying {what}")
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=delay)
            except TimeoutError:
                pass
            else:
                raise WriterStopped(f"{self.name}: stopped while retrying {what}")
            delay = min(delay * 2, self.retry_max_s)

    async def _statement(self, what: str, fn: Callable[[Client], T]) -> T:
        async with self._lock:
            try:
                return await self._attempt(what, fn)
            except _Rejected as rejected:
                raise StatementRejected(f"{self.name}: {what}", rejected.reason) from rejected.__cause__

    async def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> InsertResult:
        """Insert rows; returns once every row is either stored (acknowledged) or rejected on its own."""
        if not rows:
            return InsertResult(written=0)
        all_rows = list(rows)
        column_names = list(columns)

        def insert_slice(start: int, end: int) -> Callable[[Client], object]:
            # Batches are already large: a synchronous insert (no server-side async-insert buffering) is acknowledged
            # as soon as its part is written, instead of after the server's async flush timer.
            return lambda c: c.insert(table, all_rows[start:end], column_names=column_names, settings={"async_insert": 0})

        rejected: list[RejectedRow] = []
        pending = [(0, len(all_rows))]
        started, failures_before = time.perf_counter(), self.failures
        async with self._lock:
            while pending:
                start, end = pending.pop()
                try:
                    await self._attempt(f"insert into {table} ({end - start} rows)", insert_slice(start, end))
                except _Rejected as exc:
                    if end - start == 1:
                        rejected.append(RejectedRow(start, exc.reason))
                        log.warning("%s: row %d of %d for %s rejected: %s", self.name, start, len(all_rows), table,
                                    exc.reason[:300])
                        continue
                    middle = (start + end) // 2
                    pending += [(middle, end), (start, middle)]  # the first half is tried first
                    self.split_inserts += 2
        rejected.sort(key=lambda r: r.index)
        self.rejected_rows += len(rejected)
        metrics.record_insert(table, duration_s=time.perf_counter() - started, written=len(all_rows) - len(rejected),
                              rejected=len(rejected), retries=self.failures - failures_before)
        return InsertResult(written=len(all_rows) - len(rejected), rejected=rejected)

    async def command(self, sql: str, parameters: dict[str, Any] | None = None) -> None:
        """Run a statement (e.g. INSERT ... SELECT), retrying transient failures; :class:`StatementRejected` if refused."""
        await self._statement(sql.split("\n", 1)[0][:80], lambda c: c.command(sql, parameters=parameters))

    async def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Rows of a SELECT, retrying transient failures; :class:`StatementRejected` if refused."""
        return await self._statement(sql.split("\n", 1)[0][:80],
                                     lambda c: [tuple(r) for r in c.query(sql, parameters=parameters).result_rows])
