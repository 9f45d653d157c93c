"""Cost of completions: token prices in force at a time, and per-tenant daily budgets."""

from streams.cost.budget import BudgetTracker, DailyBudgets
from streams.cost.prices import Cost, ModelPrice, PriceTable, UnknownModelPrice

__all__ = ["BudgetTracker", "Cost", "DailyBudgets", "ModelPrice", "PriceTable", "UnknownModelPrice"]
