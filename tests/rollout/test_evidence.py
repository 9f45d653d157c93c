"""The gates' evidence and the decision rule on simulated windows (many runs at once): rollback of a bad canary,
promotion only once every gate is shown within its margin (never for want of a regression), and holds."""

from __future__ import annotations

import numpy as np
import pytest

from services.rollout.decision import HOLD, PASS, ROLLBACK, TIMEOUT, verdict
from services.rollout.evidence import Evidence, Side, SideWindow, plan_gates
from services.rollout.spec import RolloutSpec

RUNS = 1000


def _spec(**gates: object) -> RolloutSpec:
    return RolloutSpec.model_validate({
        "alias": "chat", "stable": "v1", "canary": "v2", "steps": [10, 100], "alpha": 0.01, "min_samples": 50,
        "min_step_seconds": 20, "max_step_seconds": 600,
        "gates": gates or {"error_rate": {"max_ratio": 1.25, "margin": 0.03}},
    })


def _window(rng: np.random.Generator, n: np.ndarray, error_rate: float, score: float | None = None) -> SideWindow:
    zero = np.zeros(n.shape)
    errors = rng.binomial(n.astype(int), error_rate).astype(float)
    fb_n, fb_sum, fb_sumsq = zero, zero, zero
    if score is not None:  # every request graded; scores 0/1 with the given mean
        fb_n = n
        fb_sum = rng.binomial(n.astype(int), score).astype(float)
        fb_sumsq = fb_sum
    return SideWindow(requests=n, errors=errors, flagged=zero, slow={}, timed={}, feedback_n=fb_n,
                      feedback_sum=fb_sum, feedback_sumsq=fb_sumsq, priced=zero, cost_sum=zero, cost_sumsq=zero,
                      drift=np.full(n.shape, np.nan))


def _run(spec: RolloutSpec, canary_rate: float, stable_rate: float, seconds: int, *, weight: float = 0.1,
         canary_score: float | None = None, stable_score: float | None = None, seed: int = 0,
         ) -> tuple[np.ndarray, np.ndarray]:
    """(first non-hold verdict, its second) per run; the rule applied after every 1-second window."""
    rng = np.random.default_rng(seed)
    ev = Evidence(plan_gates(spec), spec.alpha, shape=(RUNS,))
    code = np.full(RUNS, HOLD)
    when = np.full(RUNS, -1)
    for t in range(seconds):
        total = rng.poisson(50, RUNS)
        n_c = rng.binomial(total, weight).astype(float)
        c = _window(rng, n_c, canary_rate, canary_score)
        s = _window(rng, total - n_c, stable_rate, stable_score)
        ev.add_bad("canary", c, weight)
        ev.add_bad("stable", s, weight)
        ev.add_step("canary", c, float(t))
        ev.add_step("stable", s, float(t))
        now = verdict(spec, ev.evaluate(), ev.requests["canary"], ev.requests["stable"], np.full(RUNS, t + 1.0))
        new = (code == HOLD) & (now != HOLD)
        code[new], when[new] = now[new], t + 1
    return code, when


def test_a_canary_worse_than_its_margin_is_almost_never_promoted() -> None:
    """Error rate 1% + 3.5 points against a margin of 3 points (and no rate ratio big enough to roll back fast)."""
    spec = _spec(error_rate={"max_ratio": 50.0, "margin": 0.03})
    code, _ = _run(spec, 0.045, 0.01, 300, weight=0.5)
    assert (code == PASS).mean() <= 0.01 + 0.01  # alpha, plus simulation noise at 1000 runs


def test_a_healthy_canary_is_promoted_once_shown_within_margin_not_before_min_time() -> None:
    code, when = _run(_spec(), 0.01, 0.01, 300)
    assert (code == ROLLBACK).mean() <= 0.01  # alpha
    assert (code == PASS).mean() > 0.9
    assert when[code == PASS].min() >= 20  # min_step_seconds


def test_a_bad_canary_is_rolled_back_and_never_promoted() -> None:
    code, when = _run(_spec(), 0.10, 0.01, 120)
    assert (code == ROLLBACK).mean() > 0.99 and (code == PASS).sum() == 0
    assert np.median(when[code == ROLLBACK]) <= 25


def test_feedback_drop_rolls_back_and_equal_feedback_promotes() -> None:
    spec = _spec(feedback_score_delta={"threshold": 0.1})
    code, _ = _run(spec, 0.01, 0.01, 120, weight=0.2, canary_score=0.6, stable_score=0.9)
    assert (code == ROLLBACK).mean() > 0.99
    code, _ = _run(spec, 0.01, 0.01, 200, weight=0.2, canary_score=0.9, stable_score=0.9)
    assert (code == PASS).mean() > 0.9 and (code == ROLLBACK).sum() <= RUNS * 0.01


def test_no_canary_traffic_holds_until_max_step_seconds() -> None:
    spec = _spec()
    code, when = _run(spec, 0.01, 0.01, 620, weight=0.0)
    assert (code == TIMEOUT).all() and (when == 600).all()


def test_older_spec_fields_map_to_the_sequential_gates() -> None:
    spec = RolloutSpec.model_validate({
        "alias": "chat", "stable": "v1", "canary": "v2", "analysis_interval_seconds": 30, "failure_threshold": 2,
        "gates": {"error_rate": {"comparison": "difference", "threshold": 0.02, "severe_threshold": 0.2},
                  "safety_finding_rate": {"comparison": "ratio", "threshold": 2.0},
                  "p95_latency_ratio": {"threshold": 1.5}, "feedback_score_delta": {"threshold": 0.1},
                  "cost_per_request_ratio": {"threshold": 1.3}, "drift_share": {"threshold": 0.5}},
    })
    plans = {p.name: p for p in plan_gates(spec)}
    assert (plans["error_rate"].tolerance, plans["error_rate"].margin) == (1.5, 0.02)
    assert (plans["safety_finding_rate"].tolerance, plans["safety_finding_rate"].margin) == (2.0, 0.02)
    assert plans["p95_latency_ratio"].kind == "count" and plans["p95_latency_ratio"].source == "slow"
    assert plans["p95_latency_ratio"].tolerance == 1.5
    assert plans["cost_per_request_ratio"].margin == 1.3 and plans["drift_share"].kind == "drift"
    assert Evidence(list(plans.values()), 0.01).tested == 5
    with pytest.raises(ValueError, match="max_ratio and margin"):
        RolloutSpec.model_validate({"alias": "a", "stable": "v1", "canary": "v2", "gates": {"error_rate": {}}})


def _lagging_run(canary_rate: float, stable_rate: float, seconds: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Routed 50/50, but the canary completes a third of stable's requests (a slow canary's backlog): the rule's
    first rollback second per run (-1: none) and whether the rate-ratio e-process alone had reached its boundary."""
    spec = _spec(error_rate={"max_ratio": 1.0, "margin": 0.03})
    rng = np.random.default_rng(seed)
    ev = Evidence(plan_gates(spec), spec.alpha, shape=(RUNS,))
    when = np.full(RUNS, -1)
    for t in range(seconds):
        n_s = rng.poisson(6, RUNS).astype(float)
        n_c = rng.poisson(2, RUNS).astype(float)
        c, s = _window(rng, n_c, canary_rate), _window(rng, n_s, stable_rate)
        sides: tuple[tuple[Side, SideWindow], ...] = (("canary", c), ("stable", s))
        for side, w in sides:
            ev.add_bad(side, w, 0.5)
            ev.add_step(side, w, float(t))
        (gate,) = ev.evaluate()
        when[(when < 0) & gate.rollback] = t + 1
    (gate,) = ev.evaluate()
    return when, gate.log_e >= gate.log_e_threshold


def test_a_canary_whose_completions_lag_its_routed_share_is_still_rolled_back() -> None:
    # canary 60% bad, stable 20%: per routed request the canary is 3x worse, but with a third of stable's
    # completions its share of the bad events (2*0.6 / (2*0.6 + 6*0.2) = 50%) is what the weight predicts under H0
    when, e_process = _lagging_run(0.6, 0.2, 120)
    assert np.mean(e_process) < 0.05  # the e-process alone almost never sees it
    assert np.mean(when > 0) > 0.95 and np.median(when[when > 0]) <= 60  # the confidence sequences do


def test_equal_rates_with_lagging_completions_are_not_rolled_back() -> None:
    when, _ = _lagging_run(0.3, 0.3, 300, seed=1)
    assert np.mean(when > 0) <= 0.01
