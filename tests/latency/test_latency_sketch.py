"""DDSketch: exact merges, 1% relative accuracy against numpy, compact round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streams.latency import DDSketch

QS = (0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999)


def _sketch(values: np.ndarray) -> DDSketch:
    sketch = DDSketch(alpha=0.01)
    sketch.extend(values.tolist())
    return sketch


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(1).lognormal(mean=6.0, sigma=1.0, size=20_000),  # ms, long tail
        np.random.default_rng(2).exponential(scale=250.0, size=5_000),
        np.random.default_rng(3).pareto(1.5, size=5_000) * 30.0 + 1.0,
    ],
)
def test_quantiles_within_relative_accuracy(values: np.ndarray) -> None:
    sketch = _sketch(values)
    for q in QS:
        exact = float(np.quantile(values, q, method="lower"))
        estimate = sketch.quantile(q)
        assert estimate is not None
        assert abs(estimate - exact) <= 0.01 * exact * (1 + 1e-9), (q, estimate, exact)
    # Also close to numpy's default (interpolated) quantile on dense data.
    assert sketch.quantile(0.5) == pytest.approx(float(np.quantile(values, 0.5)), rel=0.011)


def test_merged_minutes_equal_sketch_of_all_values() -> None:
    rng = np.random.default_rng(7)
    minutes = [rng.lognormal(5.0 + i * 0.05, 0.8, size=int(rng.integers(1, 400))) for i in range(60)]
    merged = DDSketch.merged(_sketch(m) for m in minutes)
    whole = _sketch(np.concatenate(minutes))
    assert merged == whole
    assert merged.bins == whole.bins and merged.count == whole.count
    for q in QS:
        assert merged.quantile(q) == whole.quantile(q)


def test_coarse_sketch_is_actually_less_accurate() -> None:
    # Guards the accuracy test against being vacuous: with alpha=0.2 the same check must fail.
    values = np.random.default_rng(1).lognormal(6.0, 1.0, size=5_000)
    coarse = DDSketch(alpha=0.2)
    coarse.extend(values.tolist())
    errors = [
        abs(coarse.quantile(q) - float(np.quantile(values, q, method="lower"))) / float(np.quantile(values, q, method="lower"))
        for q in QS
    ]
    assert max(errors) > 0.01


def test_zero_values_and_empty() -> None:
    sketch = DDSketch()
    assert sketch.quantile(0.5) is None
    sketch.extend([0.0, 0.0, 0.0, 100.0])
    assert sketch.quantile(0.5) == 0.0
    assert sketch.quantile(1.0) == 100.0
    with pytest.raises(ValueError):
        sketch.add(-1.0)
    with pytest.raises(ValueError):
        sketch.add(float("nan"))


def test_state_round_trip_is_compact_json() -> None:
    values = np.random.default_rng(5).lognormal(6.0, 1.0, size=10_000)
    sketch = _sketch(values)
    state = sketch.to_state()
    text = json.dumps(state.model_dump(mode="json"))
    assert len(state.keys) < 1_000  # buckets, not values
    assert len(text) < 12_000
    again = DDSketch.from_state(json.loads(text))
    assert again == sketch
    assert again.quantile(0.99) == sketch.quantile(0.99)


def test_merge_rejects_different_accuracy() -> None:
    with pytest.raises(ValueError):
        DDSketch(alpha=0.01).merge(DDSketch(alpha=0.02))
