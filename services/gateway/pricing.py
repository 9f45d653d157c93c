"""The cost of an answer, for the ``x-llmops-cost`` response header.

The price table is the stream worker's (one implementation): ``llmops gateway`` hands in a :class:`Pricer` built
from it. A cache hit costs 0; a model without a price reads ``unpriced`` (never a silent zero). The stream worker
still prices every completion for ClickHouse; this header is the same figure, at answer time.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from schemas.completions import Completion

Pricer = Callable[[Completion], tuple[Decimal, str] | None]
"""completion -> (cost, currency), or None when its model has no price."""


def cost_headers(pricer: Pricer | None, completion: Completion) -> dict[str, str]:
    if pricer is None:
        return {}
    if completion.cached:
        return {"x-llmops-cost": "0"}
    priced = pricer(completion)
    if priced is None:
        return {"x-llmops-cost": "unpriced"}
    cost, currency = priced
    return {"x-llmops-cost": f"{cost.normalize():f}", "x-llmops-cost-currency": currency}
