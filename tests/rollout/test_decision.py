"""The decision state machine: step up to promote, rollback after N failures, hold on too little traffic."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.rollout.decision import Progress, abort_event, apply, decide, is_failure, start_event
from services.rollout.gates import SideStats
from services.rollout.spec import RolloutSpec
from tests.rollout.windows import at, window

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = RolloutSpec(
    alias="chat", stable="v1", canary="v2", steps=[5, 25, 50, 100], min_samples=100, failure_threshold=2,
    gates={"error_rate": {"threshold": 0.02, "severe_threshold": 0.3}, "p95_latency_ratio": {"threshold": 1.5}},
)


def _side(dep: str, requests: int = 500, **kw: object) -> SideStats:
    return SideStats.from_windows([window(dep, at(T0, 10 * i), requests=requests, seed=i + (50 if dep == "v2" else 0), **kw)  # type: ignore[arg-type]
                                   for i in range(2)])


def test_healthy_canary_steps_up_through_every_step_then_promotes() -> None:
    start = start_event(SPEC, "r1")
    assert start.action == "start" and start.step == 1 and start.weights == {"v1": pytest.approx(0.95), "v2": pytest.approx(0.05)}
    progress = apply(None, start)
    assert progress == Progress("r1", 1)
    seen = []
    while progress.status == "active":
        d = decide(SPEC, progress, _side("v2"), _side("v1"))
        seen.append((d.event.action, d.event.step, d.event.weights.get("v2")))
        assert apply(progress, d.event) == d.progress  # replaying the event gives the same progress
        progress = d.progress
    # The 100% step is never analysed (stable would get no traffic): passing 50% promotes.
    assert seen == [("step_up", 2, 0.25), ("step_up", 3, 0.5), ("promote", 3, 1.0)]
    assert progress.status == "promoted"
    assert all(g.passed for g in d.event.gates) and len(d.event.gates) == 2


def test_a_worse_but_not_significant_canary_holds_instead_of_stepping_up() -> None:
    # 4/100 errors vs 0/100 breaches the 2-point threshold, but Fisher's exact test gives p=0.061.
    # An interval with data that did not fail also ends a run of failures (and replaying it agrees).
    progress = Progress("r1", 1, consecutive_failures=1)
    d = decide(SPEC, progress, _side("v2", requests=50, error_rate=0.04), _side("v1", requests=50, error_rate=0.0))
    assert d.event.action == "hold" and d.progress == Progress("r1", 1, consecutive_failures=0)
    assert apply(progress, d.event) == d.progress
    assert d.event.reason == ("hold: error_rate 0.04 > 0.02 (canary n=100, stable n=100; Fisher exact p=0.061) "
                              "but not significant")
    [gate] = [g for g in d.event.gates if g.gate == "error_rate"]
    assert not gate.passed and gate.detail.startswith("inconclusive") and not is_failure(gate)
    # Two tested gates share alpha=0.05 (Bonferroni): each is tested at 0.025.
    assert "not significant at alpha=0.025" in gate.detail


def test_first_step_must_leave_stable_traffic() -> None:
    with pytest.raises(ValueError, match="first step must leave stable some traffic"):
        RolloutSpec.model_validate({**SPEC.model_dump(), "steps": [100]})


def test_rollback_after_two_consecutive_failures_with_reason() -> None:
    progress = Progress("r1", 2)
    bad_c, stable = _side("v2", latency_scale=3.1), _side("v1")
    first = decide(SPEC, progress, bad_c, stable)
    assert first.event.action == "hold" and first.event.step == 2 and first.progress.consecutive_failures == 1
    assert first.event.weights == SPEC.weights(2)
    assert "p95_latency_ratio" in first.event.reason and "failed interval 1 of 2 before rollback" in first.event.reason
    assert apply(progress, first.event) == first.progress
    second = decide(SPEC, first.progress, bad_c, stable)
    ev = second.event
    assert ev.action == "rollback" and ev.step == 0 and ev.weights == {"v1": 1.0, "v2": 0.0}
    assert second.progress.status == "rolled_back"
    # names the gate, observed value, threshold, sample sizes, the test and p-value, and the count
    assert ev.reason.startswith("rollback: p95_latency_ratio 3.")
    assert "> 1.5 (canary n=1000, stable n=1000; Mann-Whitney p=" in ev.reason
    assert ev.reason.endswith("for 2 consecutive intervals")
    [failed] = [g for g in ev.gates if not g.passed]
    assert failed.gate == "p95_latency_ratio" and failed.threshold == 1.5 and failed.observed > 2.5


def test_a_passing_interval_resets_the_failure_count() -> None:
    bad = decide(SPEC, Progress("r1", 1), _side("v2", error_rate=0.1), _side("v1"))
    assert bad.event.action == "hold" and bad.progress.consecutive_failures == 1
    assert "error_rate 0.09 > 0.02 (canary n=1000, stable n=1000; two-proportion z p=" in bad.event.reason
    good = decide(SPEC, bad.progress, _side("v2"), _side("v1"))
    assert good.event.action == "step_up" and good.progress.consecutive_failures == 0
    again = decide(SPEC, good.progress, _side("v2", error_rate=0.1), _side("v1"))
    assert again.event.action == "hold"


def test_severe_breach_rolls_back_at_once() -> None:
    d = decide(SPEC, Progress("r1", 1), _side("v2", error_rate=0.5), _side("v1"))
    assert d.event.action == "rollback" and d.progress.status == "rolled_back"
    assert d.event.reason.startswith("rollback (severe breach, at once): error_rate 0.49 > severe 0.3 (canary n=1000")


def test_insufficient_traffic_holds_and_does_not_count_as_failure() -> None:
    progress = Progress("r1", 2, consecutive_failures=1)
    d = decide(SPEC, progress, _side("v2", requests=20, error_rate=0.5), _side("v1"))
    assert d.event.action == "hold" and d.event.weights == SPEC.weights(2)
    assert d.event.reason == "hold: insufficient traffic: canary 40 < min 100"
    assert d.progress == progress
    assert all(not g.passed and g.detail.startswith("insufficient data") for g in d.event.gates)
    assert apply(progress, d.event) == progress
    both = decide(SPEC, progress, SideStats(), SideStats())
    assert both.event.reason == "hold: insufficient traffic: canary 0 < min 100, stable 0 < min 100"


def test_gate_lacking_data_holds() -> None:
    spec = RolloutSpec.model_validate({**SPEC.model_dump(), "gates": {**SPEC.gates.model_dump(exclude_none=True),
                                                                      "feedback_score_delta": {"threshold": 0.1, "min_samples": 30}}})
    d = decide(spec, Progress("r1", 1), _side("v2"), _side("v1"))
    assert d.event.action == "hold" and d.progress.consecutive_failures == 0
    assert "feedback_score_delta insufficient data: canary feedback 0 < min 30" in d.event.reason


def test_abort_and_terminal_states() -> None:
    start = start_event(SPEC, "r1")
    ab = abort_event(start, "aborted by operator")
    assert ab.action == "abort" and ab.weights == {"v1": 1.0, "v2": 0.0} and ab.step == 0 and ab.rollout_id == "r1"
    assert apply(apply(None, start), ab).status == "aborted"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="aborted"):
        decide(SPEC, Progress("r1", 1, status="aborted"), _side("v2"), _side("v1"))
    # a new start resets everything
    assert apply(Progress("r1", 3, 1, "rolled_back"), start_event(SPEC, "r2")) == Progress("r2", 1)


def test_last_step_below_100_promotes_to_all_canary() -> None:
    spec = RolloutSpec.model_validate({**SPEC.model_dump(), "steps": [10, 50]})
    d = decide(spec, Progress("r1", 2), _side("v2"), _side("v1"))
    assert d.event.action == "promote" and d.event.weights == {"v2": 1.0}
