"""The status table the CLI prints: step, weights, and each gate observed vs threshold with its verdict."""

from __future__ import annotations

from datetime import UTC, datetime

from services.rollout.commands import RolloutStatus, format_status
from services.rollout.decision import Progress, decide, start_event
from services.rollout.gates import SideStats
from services.rollout.spec import RolloutSpec
from tests.rollout.windows import window

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = RolloutSpec(alias="chat", stable="v1", canary="v2", steps=[5, 50, 100], min_samples=100,
                   gates={"error_rate": {"threshold": 0.02}, "feedback_score_delta": {"threshold": 0.1, "min_samples": 30},
                          "p95_latency_ratio": {"threshold": 1.5}})


def _status(event, decision=None) -> RolloutStatus:  # type: ignore[no-untyped-def]
    return RolloutStatus(alias="chat", rollout_id="r1", action=event.action, active=event.action in ("start", "hold", "step_up"),
                         step=event.step, steps=SPEC.steps, weights=event.weights, stable="v1", canary="v2",
                         reason=event.reason, updated_at=T0, decision=decision, decided_at=T0 if decision else None)


def test_table_shows_step_weights_and_each_gate() -> None:
    canary = SideStats.from_windows([window("v2", T0, error_rate=0.1)])
    stable = SideStats.from_windows([window("v1", T0, feedback=(40, 0.8))])
    hold = decide(SPEC, Progress("r1", 2), canary, stable).event
    text = format_status([_status(hold, hold)])
    lines = text.splitlines()
    assert lines[0] == "chat  rollout r1  ACTIVE"
    assert "  step      2/3 (steps 5, 50, 100%)" in lines
    assert "  weights   v1 50%, v2 50%" in lines
    rows = {ln.split()[0]: ln.split() for ln in lines if ln.startswith("    ")}
    assert rows["error_rate"][1:] == ["0.09", "0.02", "500", "500", "FAIL"]
    assert rows["feedback_score_delta"][1:] == ["n/a", "0.1", "0", "40", "n/a", "(insufficient)"]
    assert rows["p95_latency_ratio"][-1] == "pass"


def test_no_decision_yet_and_empty() -> None:
    text = format_status([_status(start_event(SPEC, "r1"))])
    assert "gates     no decision yet" in text and "v1 95%, v2 5%" in text
    assert format_status([]) == "no rollouts"
