"""Per-tenant daily budgets: the cost agent adds each completion's cost and alerts once on crossing.

Days are UTC calendar days chosen by the caller (from the event time). ``add`` returns True exactly
once per (tenant, day): on the call where the running total first reaches or exceeds the budget.
Tenants without a budget (and no default) are tracked but never cross.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from streams.cost.prices import Cost, _to_decimal


class DailyBudgets(BaseModel):
    """Budget per tenant per UTC day, in the price table's currency."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: Decimal | None = Field(default=None, description="Budget for tenants not listed; None = unlimited.")
    tenants: dict[str, Decimal] = Field(default_factory=dict)

    @field_validator("default", mode="before")
    @classmethod
    def _default_decimal(cls, value: Any) -> Decimal | None:
        return None if value is None else _to_decimal(value)

    @field_validator("tenants", mode="before")
    @classmethod
    def _tenant_decimals(cls, value: Any) -> dict[str, Decimal]:
        if not isinstance(value, dict):
            raise ValueError("tenants must be a mapping of tenant -> budget")
        return {str(tenant): _to_decimal(budget) for tenant, budget in value.items()}

    @classmethod
    def load(cls, path: Path | str) -> DailyBudgets:
        """Read a YAML file: ``{default: "10.00", tenants: {acme: "50.00"}}``."""
        with Path(path).open(encoding="utf-8") as handle:
            raw = yaml.safe_load(handle) or {}
        return cls.model_validate(raw)

    def budget_for(self, tenant: str) -> Decimal | None:
        """The tenant's daily budget, or None when unlimited."""
        return self.tenants.get(tenant, self.default)


class BudgetTracker:
    """Running spend per (tenant, UTC day) against :class:`DailyBudgets`."""

    def __init__(self, budgets: DailyBudgets | dict[str, Any]) -> None:
        self.budgets = budgets if isinstance(budgets, DailyBudgets) else DailyBudgets.model_validate(budgets)
        self._totals: dict[tuple[str, date], Decimal] = {}
        self._crossed: set[tuple[str, date]] = set()

    @classmethod
    def from_file(cls, path: Path | str) -> BudgetTracker:
        """A tracker with budgets read from a YAML file."""
        return cls(DailyBudgets.load(path))

    def add(self, tenant: str, day: date, cost: Cost | Decimal) -> bool:
        """Add ``cost`` to the tenant's day; True only on the call where the total first crosses."""
        amount = cost.total if isinstance(cost, Cost) else cost
        if amount < 0:
            raise ValueError("cost must be non-negative")
        key = (tenant, day)
        total = self._totals.get(key, Decimal(0)) + amount
        self._totals[key] = total
        budget = self.budgets.budget_for(tenant)
        if budget is None or key in self._crossed or total < budget:
            return False
        self._crossed.add(key)
        return True

    def total(self, tenant: str, day: date) -> Decimal:
        """Spend recorded so far for the tenant's day."""
        return self._totals.get((tenant, day), Decimal(0))

    def crossed(self, tenant: str, day: date) -> bool:
        """Whether the tenant's day has crossed its budget."""
        return (tenant, day) in self._crossed

    def forget_before(self, day: date) -> int:
        """Drop state for days before ``day`` (bounded memory); returns how many entries were dropped."""
        old = [key for key in self._totals if key[1] < day]
        for key in old:
            del self._totals[key]
            self._crossed.discard(key)
        return len(old)
