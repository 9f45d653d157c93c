"""Daily budgets: crossing is reported exactly once per tenant and UTC day."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

from services.core.resources import package_path
from streams.cost import BudgetTracker, PriceTable

DAY = date(2026, 11, 24)


def test_crossing_reported_exactly_once() -> None:
    tracker = BudgetTracker({"tenants": {"acme": "1.00"}})
    results = [tracker.add("acme", DAY, Decimal("0.30")) for _ in range(6)]
    assert results == [False, False, False, True, False, False]
    assert tracker.total("acme", DAY) == Decimal("1.80")
    assert tracker.crossed("acme", DAY)


def test_reaching_the_budget_exactly_counts_as_crossing() -> None:
    tracker = BudgetTracker({"tenants": {"acme": "1.00"}})
    assert tracker.add("acme", DAY, Decimal("0.50")) is False
    assert tracker.add("acme", DAY, Decimal("0.50")) is True


def test_days_and_tenants_are_separate() -> None:
    tracker = BudgetTracker({"default": "1", "tenants": {"big": "100"}})
    assert tracker.add("small", DAY, Decimal("2")) is True
    assert tracker.add("small", date(2026, 11, 25), Decimal("0.5")) is False
    assert tracker.add("big", DAY, Decimal("2")) is False
    assert tracker.forget_before(date(2026, 11, 25)) == 2
    assert tracker.total("small", DAY) == Decimal(0)


def test_tenant_without_budget_never_crosses() -> None:
    tracker = BudgetTracker({"tenants": {"acme": "1"}})
    assert tracker.add("other", DAY, Decimal("1000")) is False
    assert tracker.total("other", DAY) == Decimal("1000")


def test_budgets_from_file_with_costs(tmp_path: Path) -> None:
    path = tmp_path / "budgets.yaml"
    path.write_text('default: "0.001"\ntenants:\n  acme: "5"\n', encoding="utf-8")
    tracker = BudgetTracker.from_file(path)
    table = PriceTable.load(package_path("streams.cost", "prices.yaml"))
    cost = table.price("gpt-4o-mini", datetime(2026, 11, 24, tzinfo=UTC), 1000, 1000)  # 0.00075
    assert tracker.add("t", DAY, cost) is False
    assert tracker.add("t", DAY, cost) is True
    assert tracker.total("t", DAY) == Decimal("0.0015")
