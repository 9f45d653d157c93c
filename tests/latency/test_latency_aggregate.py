"""Per-minute latency aggregates: counts, errors by kind, hour rollups equal to the whole hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from schemas.completions import Completion, CompletionError
from streams.latency import LatencyAggregate, LatencySummary, minute_of

HOUR = datetime(2026, 11, 24, 20, 0, tzinfo=UTC)


def _completion(rng: np.random.Generator, deployment: str = "dep-a") -> Completion:
    roll = rng.random()
    if roll < 0.05:
        return Completion(
            request_id="r", tenant="t", deployment_id=deployment, finish_reason="error",
            total_ms=float(rng.uniform(1, 20)),
            error=CompletionError(kind="overloaded", message="busy"),
        )
    if roll < 0.08:
        return Completion(request_id="r", tenant="t", deployment_id=deployment, finish_reason="deadline",
                          total_ms=30_000.0, ttft_ms=float(rng.uniform(100, 900)))
    ttft = float(rng.lognormal(5.0, 0.5))
    return Completion(request_id="r", tenant="t", deployment_id=deployment, finish_reason="stop",
                      ttft_ms=ttft, total_ms=ttft + float(rng.lognormal(7.0, 0.6)))


def test_minute_of_floors_to_utc_minute() -> None:
    assert minute_of(datetime(2026, 11, 24, 20, 5, 59, 999, tzinfo=UTC)) == datetime(2026, 11, 24, 20, 5, tzinfo=UTC)
    with pytest.raises(ValueError):
        minute_of(datetime(2026, 11, 24, 20, 5))


def test_minutes_roll_up_into_hour_exactly() -> None:
    rng = np.random.default_rng(11)
    minutes: list[LatencyAggregate] = []
    whole = LatencyAggregate("dep-a", HOUR, window_seconds=3600)
    all_total: list[float] = []
    for i in range(60):
        agg = LatencyAggregate("dep-a", HOUR + timedelta(minutes=i))
        for _ in range(int(rng.integers(0, 80))):
            c = _completion(rng)
            agg.add(c)
            whole.add(c)
            all_total.append(c.total_ms)
        # Round trip through the emitted event, as a downstream consumer would.
        summary = LatencySummary.model_validate_json(agg.summary().model_dump_json())
        minutes.append(LatencyAggregate.from_summary(summary))
    hour = LatencyAggregate.rollup(minutes, HOUR, 3600)
    drop = {"ttft_sketch", "total_sketch"}  # sketch sums may differ in the last float bit
    assert hour.summary().model_dump(exclude=drop) == whole.summary().model_dump(exclude=drop)
    assert hour.total == whole.total and hour.ttft == whole.ttft
    assert hour.count == len(all_total)
    s = hour.summary()
    assert s.error_count == sum(s.errors_by_kind.values()) > 0
    assert set(s.errors_by_kind) == {"overloaded", "deadline_exceeded"}
    exact = float(np.quantile(all_total, 0.99, method="lower"))
    assert s.total_ms.p99 == pytest.approx(exact, rel=0.01)


def test_errors_without_ttft_and_wrong_deployment() -> None:
    agg = LatencyAggregate("dep-a", HOUR)
    agg.add(Completion(request_id="r", tenant="t", deployment_id="dep-a", finish_reason="error",
                       error=CompletionError(kind="prompt_too_long", message="x"), total_ms=2.0))
    s = agg.summary()
    assert s.count == 1 and s.errors_by_kind == {"prompt_too_long": 1}
    assert s.ttft_ms.p50 is None and s.total_ms.p50 == 2.0
    with pytest.raises(ValueError):
        agg.add(Completion(request_id="r", tenant="t", deployment_id="dep-b", finish_reason="stop"))


def test_rollup_rejects_minutes_outside_window() -> None:
    late = LatencyAggregate("dep-a", HOUR + timedelta(hours=1))
    with pytest.raises(ValueError):
        LatencyAggregate.rollup([late], HOUR, 3600)
