"""Per-key rate limits (requests and tokens per minute) and daily budgets.

* Requests per minute: a sliding 60-second window of this instance's admissions per key.
* Tokens per minute and the day's cost: read from the cost stream's rows in ClickHouse (``cost_completions``,
  joined to ``gateway_requests`` by request id, so every gateway instance's traffic counts), every
  ``usage_reload_s``. Between two reads, tokens of answers this instance returned count at once: the tokens
  charged are the larger of the two (the ClickHouse figure includes them once it caught up; never both).

A refused request gets 429 with ``Retry-After``: when the window frees enough room, or the next UTC midnight
for a spent budget.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from clickhouse_connect.driver.client import Client

from services.core.clickhouse.client import connect
from services.core.settings import Settings
from services.gateway.keys import ApiKey

log = logging.getLogger(__name__)
WINDOW_S = 60.0

USAGE_SQL = """
SELECT g.key_id,
       sumIf(k.prompt_tokens + k.completion_tokens, k.occurred_at >= now64(3) - INTERVAL 60 SECOND) AS tokens_minute,
       sumIf(ifNull(k.cost, 0), k.occurred_at >= toStartOfDay(now64(3))) AS cost_today
FROM (SELECT key_id, tenant_id, request_id FROM gateway_requests FINAL
      WHERE occurred_at >= toStartOfDay(now64(3)) - INTERVAL 2 MINUTE) AS g
INNER JOIN (SELECT tenant_id, request_id, occurred_at, prompt_tokens, completion_tokens, cost FROM cost_completions FINAL
            WHERE occurred_at >= toStartOfDay(now64(3)) - INTERVAL 2 MINUTE) AS k
    ON g.tenant_id = k.tenant_id AND g.request_id = k.request_id
GROUP BY g.key_id
"""


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused now, and when to retry."""

    message: str
    retry_after_s: int
    code: str = "rate_limit_exceeded"


@dataclass
class _KeyWindow:
    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)

    def trim(self, now: float) -> None:
        while self.requests and self.requests[0] <= now - WINDOW_S:
            self.requests.popleft()
        while self.tokens and self.tokens[0][0] <= now - WINDOW_S:
            self.tokens.popleft()


@dataclass(frozen=True)
class Usage:
    tokens_minute: int = 0
    cost_today: Decimal = Decimal(0)


class Limiter:
    """Admission control for API keys."""

    def __init__(self, settings: Settings, *, reload_s: float = 5.0) -> None:
        self.settings = settings
        self.reload_s = reload_s
        self.usage: dict[str, Usage] = {}
        self._windows: dict[str, _KeyWindow] = {}
        self._client: Client | None = None

    def _window(self, key_id: str, now: float) -> _KeyWindow:
        window = self._windows.setdefault(key_id, _KeyWindow())
        window.trim(now)
        return window

    def local_tokens(self, key_id: str) -> int:
        return sum(t for _, t in self._window(key_id, time.monotonic()).tokens)

    def admit(self, key: ApiKey) -> Refusal | None:
        """None (and the request is counted) when the key may send a request now, else why not."""
        now = time.monotonic()
        window = self._window(key.key_id, now)
        usage = self.usage.get(key.key_id, Usage())
        if key.daily_budget is not None and usage.cost_today >= key.daily_budget:
            midnight = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
            spent, budget = usage.cost_today.normalize(), key.daily_budget.normalize()
            return Refusal(
                f"API key {key.key_id} spent its daily budget ({spent:f} of {budget:f}); it resets at 00:00 UTC",
                max(1, math.ceil((midnight - datetime.now(UTC)).total_seconds())),
                code="insufficient_quota",
            )
        if key.requests_per_minute and len(window.requests) >= key.requests_per_minute:
            wait = window.requests[0] + WINDOW_S - now
            return Refusal(f"API key {key.key_id} is limited to {key.requests_per_minute} requests per minute",
                           max(1, math.ceil(wait)))
        tokens = max(usage.tokens_minute, sum(t for _, t in window.tokens))
        if key.tokens_per_minute and tokens >= key.tokens_per_minute:
            wait = window.tokens[0][0] + WINDOW_S - now if window.tokens else WINDOW_S
            return Refusal(f"API key {key.key_id} is limited to {key.tokens_per_minute} tokens per minute "
                           f"({tokens} used in the last minute)", max(1, math.ceil(wait)))
        window.requests.append(now)
        return None

    def add_tokens(self, key_id: str, tokens: int) -> None:
        """Tokens of an answer this instance returned (counted at once, before the cost stream has them)."""
        if tokens > 0:
            now = time.monotonic()
            self._window(key_id, now).tokens.append((now, tokens))

    def read_usage(self) -> dict[str, Usage]:
        if self._client is None:
            self._client = connect(self.settings)
        try:
            rows = self._client.query(USAGE_SQL).result_rows
        except Exception:
            self._client = None  # reconnect next time
            raise
        return {key_id: Usage(int(tokens), Decimal(str(cost))) for key_id, tokens, cost in rows}

    async def run(self) -> None:
        while True:
            try:
                self.usage = await asyncio.to_thread(self.read_usage)
            except Exception as exc:  # noqa: BLE001 - keep the last figures; the next read retries
                log.warning("reading per-key usage from ClickHouse failed: %s", exc)
            await asyncio.sleep(self.reload_s)
