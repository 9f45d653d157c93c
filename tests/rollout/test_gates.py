"""Gate statistics: a significant breach fails, the same distribution passes, small counts are insufficient."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from services.rollout.gates import SideStats, evaluate, two_proportion_p, weighted_quantile
from services.rollout.spec import RolloutSpec
from tests.rollout.windows import at, window

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _spec(**gates: dict) -> RolloutSpec:
    return RolloutSpec(alias="chat", stable="s", canary="c", min_samples=100, gates=gates)


def _side(dep: str, n_windows: int = 3, **kw: object) -> SideStats:
    return SideStats.from_windows([window(dep, at(T0, 10 * i), seed=i + (100 if dep == "c" else 0), **kw)  # type: ignore[arg-type]
                                   for i in range(n_windows)])


def _one(spec: RolloutSpec, canary: SideStats, stable: SideStats):  # type: ignore[no-untyped-def]
    [outcome] = evaluate(spec, canary, stable)
    return outcome


def test_error_rate_significant_breach_fails_with_test_and_sizes() -> None:
    spec = _spec(error_rate={"threshold": 0.02})
    o = _one(spec, _side("c", error_rate=0.10), _side("s", error_rate=0.01))
    assert o.status == "fail" and not o.result.passed
    assert o.result.observed == pytest.approx(0.09)
    assert (o.result.canary_samples, o.result.stable_samples) == (1500, 1500)
    assert o.test == "two-proportion z" and o.p_value is not None and o.p_value < 1e-9
    assert "p=" in o.result.detail and "150/1500" in o.result.detail


def test_error_rate_same_rate_passes_and_ratio_comparison() -> None:
    o = _one(_spec(error_rate={"threshold": 0.02}), _side("c", error_rate=0.01), _side("s", error_rate=0.01))
    assert o.status == "pass" and o.result.passed and o.result.observed == pytest.approx(0.0)
    ratio = _one(_spec(error_rate={"comparison": "ratio", "threshold": 2.0}), _side("c", error_rate=0.1), _side("s", error_rate=0.01))
    assert ratio.status == "fail" and ratio.result.observed == pytest.approx(10.0)


def test_breach_at_small_counts_is_not_significant_and_inconclusive() -> None:
    # 2/100 vs 0/100 breaches a 1-point threshold but Fisher's exact test cannot tell it from noise.
    spec = RolloutSpec(alias="chat", stable="s", canary="c", min_samples=100, gates={"error_rate": {"threshold": 0.01}})
    canary = SideStats.from_windows([window("c", T0, requests=100, error_rate=0.02)])
    stable = SideStats.from_windows([window("s", T0, requests=100, error_rate=0.0)])
    o = _one(spec, canary, stable)
    assert o.result.observed == pytest.approx(0.02) and o.result.observed > 0.01
    assert o.test == "Fisher exact" and o.p_value > 0.05
    assert o.status == "inconclusive" and not o.result.passed and "not significant" in o.result.detail


def test_below_min_samples_is_insufficient_not_pass_or_fail() -> None:
    spec = _spec(error_rate={"threshold": 0.02}, p95_latency_ratio={"threshold": 1.5})
    canary = SideStats.from_windows([window("c", T0, requests=40, error_rate=0.5, latency_scale=5)])
    for o in evaluate(spec, canary, _side("s")):
        assert o.status == "insufficient" and not o.result.passed
        assert o.result.detail.startswith("insufficient data: canary")
        assert "< min 100" in o.result.detail


def test_latency_x3_fails_with_mann_whitney_same_distribution_passes() -> None:
    spec = _spec(p95_latency_ratio={"threshold": 1.5})
    bad = _one(spec, _side("c", latency_scale=3.0), _side("s"))
    assert bad.status == "fail" and bad.result.observed == pytest.approx(3.0, rel=0.15)
    assert bad.test == "Mann-Whitney" and bad.p_value < 1e-9
    same = _one(spec, _side("c"), _side("s"))
    assert same.status == "pass" and same.result.observed == pytest.approx(1.0, abs=0.15)


def test_latency_gate_does_not_flap_on_noise_over_many_seeds() -> None:
    spec = RolloutSpec(alias="chat", stable="s", canary="c", min_samples=20, gates={"p95_latency_ratio": {"threshold": 1.2}})
    fails = 0
    for seed in range(200):
        c = SideStats.from_windows([window("c", T0, requests=30, seed=1000 + seed)])
        s = SideStats.from_windows([window("s", T0, requests=30, seed=5000 + seed)])
        fails += _one(spec, c, s).status == "fail"
    assert fails <= 10  # at most ~alpha of the intervals, though the p95 ratio of 30 samples often exceeds 1.2


def test_safety_rate_and_feedback_and_cost_and_drift() -> None:
    spec = _spec(
        safety_finding_rate={"threshold": 0.01}, feedback_score_delta={"threshold": 0.1, "min_samples": 30},
        cost_per_request_ratio={"threshold": 1.3}, drift_share={"threshold": 0.5},
    )
    canary = _side("c", flagged=60, feedback=(200, 0.5), cost_per_request=0.002, drift_share=0.7)
    stable = _side("s", flagged=5, feedback=(200, 0.8), cost_per_request=0.001, drift_share=0.1)
    by = {o.gate: o for o in evaluate(spec, canary, stable)}
    assert by["safety_finding_rate"].status == "fail" and by["safety_finding_rate"].result.observed == pytest.approx(0.11, abs=1e-9)
    assert by["feedback_score_delta"].status == "fail" and by["feedback_score_delta"].result.observed == pytest.approx(0.3)
    assert "Bhatia-Davis" in by["feedback_score_delta"].result.detail
    assert by["cost_per_request_ratio"].status == "fail" and by["cost_per_request_ratio"].result.observed == pytest.approx(2.0)
    assert by["drift_share"].status == "fail" and by["drift_share"].result.observed == 0.7

    healthy = {o.gate: o for o in evaluate(spec, _side("c", feedback=(200, 0.78), drift_share=0.2), _side("s", feedback=(200, 0.8)))}
    assert all(o.status == "pass" for o in healthy.values()), healthy
    few_feedback = {o.gate: o for o in evaluate(spec, _side("c", feedback=(5, 0.0)), _side("s", feedback=(200, 0.8)))}
    assert few_feedback["feedback_score_delta"].status == "insufficient"
    assert few_feedback["drift_share"].status == "insufficient"  # never reported


def test_feedback_small_drop_at_small_counts_not_significant() -> None:
    spec = _spec(feedback_score_delta={"threshold": 0.1, "min_samples": 30})
    o = _one(spec, _side("c", n_windows=1, feedback=(30, 0.6)), _side("s", n_windows=1, feedback=(30, 0.75)))
    assert o.result.observed == pytest.approx(0.15) and o.status == "inconclusive" and o.p_value > 0.05


def test_two_proportion_and_weighted_quantile_helpers() -> None:
    p_big, test = two_proportion_p(100, 1000, 10, 1000)
    assert test == "two-proportion z" and p_big < 1e-12
    p_none, _ = two_proportion_p(10, 1000, 10, 1000)
    assert p_none == pytest.approx(0.5)
    values = list(np.arange(1.0, 101.0))
    assert weighted_quantile(values, [1.0] * 100, 0.95) == 95.0
    # a heavy window (weight 9) dominates: the p95 of {1 x9 weight, 100 x1 weight} is 100 only above 90%
    assert weighted_quantile([1.0, 100.0], [9.0, 1.0], 0.85) == 1.0
    assert weighted_quantile([1.0, 100.0], [9.0, 1.0], 0.95) == 100.0
