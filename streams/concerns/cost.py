"""Cost: price every completion with the price table in force at its time; budgets per tenant per day.

A completion whose model has no price gets a ``cost_completions`` row with ``priced = 0`` and a NULL
cost (never a zero) and raises an ``unknown_model_price`` Alert (once per model and day); a completion the
gateway's cache answered (``cached``: no model ran) costs 0. Rows carry the prompt (id and version) the
completion named. Budgets are checked against ClickHouse (``sum(cost)`` of the tenant's day over
``cost_completions FINAL``) after the batch is stored, so the running total survives restarts and replays;
the ``budget`` Alert's id is ``budget:<tenant>:<day>`` and :class:`streams.concerns.alerts.AlertPublisher`
raises it once.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from schemas.alerts import Alert
from schemas.completions import Completion
from schemas.envelope import Envelope
from services.core.clickhouse.raw_tables import SourcePosition
from services.core.clickhouse.writer import ClickHouseWriter
from streams.cost import DailyBudgets, PriceTable, UnknownModelPrice

COST_COLUMNS = [
    "tenant_id", "occurred_at", "request_id", "deployment_id", "model_name", "prompt_id", "prompt_version",
    "prompt_tokens", "completion_tokens", "cached_tokens", "priced", "cost", "currency", "src_topic", "src_partition",
    "src_offset",
]


def load_budgets(path: Path | None) -> DailyBudgets:
    """Budgets from the file, or none (unlimited) when there is no file."""
    if path is None or not path.exists():
        return DailyBudgets()
    return DailyBudgets.load(path)


class Costs:
    """Rows for ``cost_completions`` and the alerts they imply."""

    def __init__(self, prices: PriceTable, budgets: DailyBudgets) -> None:
        self.prices = prices
        self.budgets = budgets

    def row(self, event: Envelope[Completion], pos: SourcePosition) -> tuple[list[Any], Alert | None]:
        """The cost row of one completion and, for an unpriced model, its alert."""
        c = event.payload
        cached = min(c.cached_tokens, c.prompt_tokens)
        alert: Alert | None = None
        try:
            cost: Decimal | None = Decimal(0) if c.cached else self.prices.total(
                c.model_name, event.occurred_at, c.prompt_tokens, c.completion_tokens, cached
            )
        except UnknownModelPrice as exc:
            cost = None
            day = event.occurred_at.date().isoformat()
            alert = Alert(
                alert_id=f"unknown_model_price:{c.model_name or '<empty>'}:{day}", kind="unknown_model_price",
                title=f"no price for model {c.model_name!r}", detail=f"{exc}; its completions are stored unpriced",
                deployment_id=c.deployment_id, observed={"prompt_tokens": c.prompt_tokens,
                                                         "completion_tokens": c.completion_tokens},
            )
        row = [
            event.tenant_id, event.occurred_at, c.request_id, c.deployment_id, c.model_name, c.prompt_id or "",
            c.prompt_version or "", c.prompt_tokens, c.completion_tokens, cached, 0 if cost is None else 1, cost,
            self.prices.currency, pos.topic, pos.partition, pos.offset,
        ]
        return row, alert

    async def budget_alerts(
        self, writer: ClickHouseWriter, tenant_days: set[tuple[str, date]]
    ) -> list[tuple[Alert, str]]:
        """(alert, tenant) for every touched (tenant, day) whose stored spend reached its budget."""
        alerts: list[tuple[Alert, str]] = []
        for tenant, day in sorted(tenant_days):
            budget = self.budgets.budget_for(tenant)
            if budget is None:
                continue
            rows = await writer.query(
                "SELECT sum(cost) FROM cost_completions FINAL WHERE tenant_id = {t:String} "
                "AND toDate(occurred_at) = {d:Date} AND priced = 1",
                {"t": tenant, "d": day},
            )
            spent = Decimal(str(rows[0][0] or 0)) if rows else Decimal(0)
            if spent >= budget:
                alerts.append((Alert(
                    alert_id=f"budget:{tenant}:{day.isoformat()}", kind="budget",
                    title=f"{tenant} crossed its daily budget for {day.isoformat()}",
                    detail=f"spent {spent} {self.prices.currency} of {budget}",
                    observed={"cost": float(spent), "budget": float(budget)},
                ), tenant))
        return alerts
