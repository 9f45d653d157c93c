"""Every ClickHouse query of the Grafana dashboards runs against the real ClickHouse after traffic went through the
stream worker, with Grafana's macros substituted; the quality/cost/safety panels show that traffic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.core.clickhouse.client import connect
from services.core.settings import Settings
from tests.observability.dashboards import CLICKHOUSE, clickhouse_sql, queries
from tests.observability.traffic import Traffic

MUST_SHOW_TRAFFIC = {
    "Cost per tenant per day", "Cost by model and prompt version", "Tokens and cost by tenant and model",
    "Mean feedback score by deployment and prompt version", "Share of negative feedback by deployment",
    "Latency p95 and error rate by deployment", "Drift share by deployment", "Safety findings by category",
    "Top safety findings",
}


def test_every_clickhouse_query_of_the_dashboards_runs(local_stack: Settings, traffic: Traffic) -> None:
    client = connect(local_stack)
    now = datetime.now(UTC)
    ran = {}
    for query in queries():
        if query.datasource != CLICKHOUSE:
            continue
        sql = clickhouse_sql(query.text, now - timedelta(hours=1), now + timedelta(minutes=5))
        try:
            result = client.query(sql)
        except Exception as exc:  # noqa: BLE001 - report which panel's query failed
            pytest.fail(f"{query.dashboard} / {query.panel} ({query.ref}): {exc}\n{sql}")
        ran[(query.dashboard, query.panel, query.ref)] = result
    assert {d for d, _, _ in ran} == {"LLM quality, cost and safety", "Rollouts"}
    shown = {panel for (_, panel, _), result in ran.items() if result.result_rows}
    assert shown >= MUST_SHOW_TRAFFIC, MUST_SHOW_TRAFFIC - shown
    cost = ran[("LLM quality, cost and safety", "Cost per tenant per day", "A")]
    assert traffic.tenant in {row[1] for row in cost.result_rows}
    table = ran[("LLM quality, cost and safety", "Tokens and cost by tenant and model", "A")]
    mine = [dict(zip(table.column_names, r, strict=True)) for r in table.result_rows if r[0] == traffic.tenant]
    assert sum(r["requests"] for r in mine) == 120 and {r["prompt_version"] for r in mine} == {"2", "3"}


def test_a_broken_query_fails(local_stack: Settings, tmp_path: Path) -> None:
    """The check has teeth: an unknown macro and an unknown column both fail."""
    now = datetime.now(UTC)
    with pytest.raises(AssertionError, match="unsupported Grafana macro"):
        clickhouse_sql("SELECT 1 WHERE $__timeFilterX(t)", now, now)
    with pytest.raises(Exception, match=r"(?i)unknown|missing"):
        sql = clickhouse_sql("SELECT no_such_column FROM agg_cost_minute WHERE $__timeFilter(minute)", now, now)
        connect(local_stack).query(sql)
