"""A DDSketch-style mergeable quantile sketch for latencies (ms), serializable into events.

Values > 0 fall into log-spaced buckets ``i = ceil(log_gamma(x))`` with
``gamma = (1 + alpha) / (1 - alpha)``; a bucket's representative value ``2 gamma^i / (gamma + 1)``
is within relative error ``alpha`` of every value in it. Values <= ``min_value`` are counted in a
zero bucket (reported as 0). Merging adds bucket counts, so the merge of per-minute sketches is
*identical* to the sketch of all their values: minutes roll up into hours exactly, as ClickHouse
quantile states do. The quantile at ``q`` is the bucket holding the value of rank
``floor(q * (count - 1))`` (numpy's ``method="lower"``), so it is within ``alpha`` of that value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_ALPHA = 0.01
DEFAULT_MIN_VALUE = 1e-6


class SketchState(BaseModel):
    """The compact, JSON-safe form of a sketch: parallel arrays of bucket keys and counts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(gt=0.0, lt=1.0)
    min_value: float = Field(gt=0.0)
    count: int = Field(ge=0)
    zero_count: int = Field(ge=0)
    sum: float
    min: float | None
    max: float | None
    keys: list[int]
    counts: list[int]

    @model_validator(mode="after")
    def _consistent(self) -> SketchState:
        if len(self.keys) != len(self.counts):
            raise ValueError("keys and counts differ in length")
        if any(c <= 0 for c in self.counts):
            raise ValueError("bucket counts must be positive")
        if self.zero_count + sum(self.counts) != self.count:
            raise ValueError("count does not equal the sum of bucket counts")
        return self


class DDSketch:
    """Log-bucketed histogram with relative accuracy ``alpha`` on quantiles."""

    def __init__(self, alpha: float = DEFAULT_ALPHA, min_value: float = DEFAULT_MIN_VALUE) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError("alpha must be in (0, 1)")
        if min_value <= 0.0:
            raise ValueError("min_value must be positive")
        self.alpha = alpha
        self.min_value = min_value
        self.gamma = (1.0 + alpha) / (1.0 - alpha)
        self._log_gamma = math.log(self.gamma)
        self.bins: dict[int, int] = {}
        self.zero_count = 0
        self.count = 0
        self.sum = 0.0
        self.min: float | None = None
        self.max: float | None = None

    def _key(self, value: float) -> int:
        return math.ceil(math.log(value) / self._log_gamma)

    def _value(self, key: int) -> float:
        return 2.0 * self.gamma**key / (self.gamma + 1.0)

    def add(self, value: float, weight: int = 1) -> None:
        """Record ``value`` (a non-negative finite number) ``weight`` times."""
        if not math.isfinite(value) or value < 0.0:
            raise ValueError(f"latency must be finite and non-negative, got {value!r}")
        if weight <= 0:
            raise ValueError("weight must be positive")
        if value <= self.min_value:
            self.zero_count += weight
        else:
            key = self._key(value)
            self.bins[key] = self.bins.get(key, 0) + weight
        self.count += weight
        self.sum += value * weight
        self.min = value if self.min is None else min(self.min, value)
        self.max = value if self.max is None else max(self.max, value)

    def extend(self, values: Iterable[float]) -> None:
        """Record every value."""
        for value in values:
            self.add(value)

    def merge(self, other: DDSketch) -> None:
        """Add ``other``'s counts into this sketch (same ``alpha`` and ``min_value`` required)."""
        if other.alpha != self.alpha or other.min_value != self.min_value:
            raise ValueError("cannot merge sketches with different alpha or min_value")
        for key, count in other.bins.items():
            self.bins[key] = self.bins.get(key, 0) + count
        self.zero_count += other.zero_count
        self.count += other.count
        self.sum += other.sum
        if other.min is not None:
            self.min = other.min if self.min is None else min(self.min, other.min)
        if other.max is not None:
            self.max = other.max if self.max is None else max(self.max, other.max)

    @classmethod
    def merged(cls, sketches: Iterable[DDSketch]) -> DDSketch:
        """A new sketch holding the union of ``sketches`` (which must be non-empty)."""
        items = list(sketches)
        if not items:
            raise ValueError("nothing to merge")
        result = cls(items[0].alpha, items[0].min_value)
        for sketch in items:
            result.merge(sketch)
        return result

    def quantile(self, q: float) -> float | None:
        """Estimate of the value of rank ``floor(q * (count - 1))``; None when empty."""
        if not 0.0 <= q <= 1.0:
            raise ValueError("q must be in [0, 1]")
        if self.count == 0:
            return None
        rank = math.floor(q * (self.count - 1))
        if rank < self.zero_count:
            return 0.0
        seen = self.zero_count
        for key in sorted(self.bins):
            seen += self.bins[key]
            if seen > rank:
                estimate = self._value(key)
                # Never report outside the observed range (exact at the extremes).
                assert self.min is not None and self.max is not None
                return min(max(estimate, self.min), self.max)
        raise AssertionError("bucket counts do not add up to count")  # pragma: no cover

    def to_state(self) -> SketchState:
        """Compact serializable form (for events)."""
        keys = sorted(self.bins)
        return SketchState(
            alpha=self.alpha,
            min_value=self.min_value,
            count=self.count,
            zero_count=self.zero_count,
            sum=self.sum,
            min=self.min,
            max=self.max,
            keys=keys,
            counts=[self.bins[k] for k in keys],
        )

    @classmethod
    def from_state(cls, state: SketchState | dict[str, object]) -> DDSketch:
        """Rebuild a sketch from :meth:`to_state` output (model or plain dict)."""
        if not isinstance(state, SketchState):
            state = SketchState.model_validate(state)
        sketch = cls(state.alpha, state.min_value)
        sketch.bins = dict(zip(state.keys, state.counts, strict=True))
        sketch.zero_count = state.zero_count
        sketch.count = state.count
        sketch.sum = state.sum
        sketch.min = state.min
        sketch.max = state.max
        return sketch

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DDSketch):
            return NotImplemented
        return (
            self.alpha == other.alpha
            and self.min_value == other.min_value
            and self.bins == other.bins
            and self.zero_count == other.zero_count
            and self.count == other.count
            and self.min == other.min
            and self.max == other.max
            and math.isclose(self.sum, other.sum, rel_tol=1e-9, abs_tol=1e-9)
        )

    __hash__ = None  # type: ignore[assignment]
