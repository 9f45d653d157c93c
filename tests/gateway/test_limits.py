"""Per-key tokens per minute and daily budgets, read from the cost stream's rows; the per-prompt-version analyst view."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import openai
import pytest
from openai import OpenAI

from services.core.clickhouse.client import connect
from services.core.settings import Settings
from services.gateway.keys import create_key
from tests.gateway.conftest import Gw
from tests.streams.helpers import wait_until

COST_COLUMNS = ["tenant_id", "occurred_at", "request_id", "deployment_id", "model_name", "prompt_version", "prompt_tokens",
                "completion_tokens", "cached_tokens", "priced", "cost", "currency", "src_topic", "src_partition",
                "src_offset"]


def _cost_row(tenant: str, request_id: str, cost: str, tokens: int = 10, prompt_version: str = "") -> list[object]:
    """A row as the stream worker's cost agent writes it for a completion."""
    return [tenant, datetime.now(UTC), request_id, "dep", "gpt-4o-mini", prompt_version, tokens, tokens, 0, 1,
            Decimal(cost), "USD", "llm.completions", 0, 0]


def _accepted(c: OpenAI) -> bool:
    try:
        c.models.list()
        return True
    except openai.AuthenticationError:
        return False


def _client(gw: Gw, key: str) -> OpenAI:
    c = OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=30)
    wait_until(lambda: _accepted(c), 10, "new key loaded by the gateway")
    return c


def test_daily_budget_read_from_the_cost_stream(gw: Gw, local_stack: Settings) -> None:
    _, key = create_key(local_stack, gw.tenant_a, name="budgeted", daily_budget=Decimal("0.01"))
    c = _client(gw, key)
    raw = c.chat.completions.with_raw_response.create(model="chat", messages=[{"role": "user", "content": "spend"}])
    request_id = raw.headers["x-request-id"]
    wait_until(lambda: connect(local_stack).query(
        "SELECT count() FROM gateway_requests FINAL WHERE request_id = %(r)s", parameters={"r": request_id}).result_rows[0][0],
        15, "the request recorded with its key")
    connect(local_stack).insert("cost_completions", [_cost_row(gw.tenant_a, request_id, "0.02")], column_names=COST_COLUMNS)

    def refused() -> openai.RateLimitError | None:
        try:
            c.chat.completions.create(model="chat", messages=[{"role": "user", "content": "more"}])
            return None
        except openai.RateLimitError as exc:
            return exc

    error = wait_until(refused, 20, "the budget crossed")
    assert error is not None
    assert "spent its daily budget (0.02 of 0.01)" in str(error) and error.code == "insufficient_quota"
    assert int(error.response.headers["retry-after"]) <= 86_400


def test_tokens_per_minute(gw: Gw, local_stack: Settings) -> None:
    _, key = create_key(local_stack, gw.tenant_a, name="tpm", tokens_per_minute=5)
    c = _client(gw, key)
    answer = c.chat.completions.create(model="chat", messages=[{"role": "user", "content": "count my tokens please"}])
    assert answer.usage is not None and answer.usage.total_tokens >= 5
    with pytest.raises(openai.RateLimitError, match="5 tokens per minute") as refused:
        c.chat.completions.create(model="chat", messages=[{"role": "user", "content": "again"}])
    assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60


def test_prompt_version_stats_view(local_stack: Settings, unique: str) -> None:
    tenant, prompt = f"t-{unique}", f"p-{unique}"
    client = connect(local_stack)
    columns = ["tenant_id", "occurred_at", "request_id", "event_id", "deployment_id", "prompt_id", "prompt_version",
               "finish_reason", "prompt_tokens", "completion_tokens", "error_kind"]
    now = datetime.now(UTC)
    rows = [[tenant, now, f"r{i}-{unique}", f"00000000-0000-0000-0000-{i:012d}", "dep", prompt, version, "stop", 10, 5,
             "internal" if i == 3 else ""]
            for i, version in enumerate(["1", "1", "2", "2"])]
    client.insert("raw_completions", rows, column_names=columns)
    client.insert("cost_completions", [_cost_row(tenant, f"r{i}-{unique}", "0.5") for i in range(4)], column_names=COST_COLUMNS)
    client.insert("raw_feedback", [[tenant, now, f"r{i}-{unique}", f"00000000-0000-0000-0001-{i:012d}", score]
                                   for i, score in enumerate([1.0, 0.5, 0.0, 0.0])],
                  column_names=["tenant_id", "occurred_at", "request_id", "event_id", "score"])
    stats = client.query(
        "SELECT prompt_version, completions, errors, cost, mean_feedback FROM v_prompt_version_stats "
        "WHERE prompt_id = %(p)s ORDER BY prompt_version", parameters={"p": prompt}).result_rows
    assert [(v, n, e, float(c), m) for v, n, e, c, m in stats] == [("1", 2, 0, 1.0, 0.75), ("2", 2, 1, 1.0, 0.0)]
