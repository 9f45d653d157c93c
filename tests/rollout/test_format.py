"""The status table `llmops rollout status` prints: step, weights, and per gate both sides' values, the e-value and
its boundary or the confidence bounds, the margin and the status; events of the interval judge still print."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from schemas.rollout_specs import RolloutSpecRecord
from schemas.rollouts import RolloutEvent
from services.rollout.commands import RolloutStatus, format_status
from services.rollout.decision import start_event
from services.rollout.judge import JudgeState
from services.rollout.spec import RolloutSpec
from tests.rollout.windows import window

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = RolloutSpec.model_validate({
    "alias": "chat", "stable": "v1", "canary": "v2", "steps": [10, 50, 100], "min_samples": 100, "alpha": 0.01,
    "gates": {"error_rate": {"max_ratio": 1.0, "margin": 0.03}, "feedback_score_delta": {"threshold": 0.1}},
})


def _status(event: RolloutEvent, decision: RolloutEvent | None = None) -> RolloutStatus:
    return RolloutStatus(alias="chat", rollout_id="r1", action=event.action, active=event.action in ("start", "hold", "step_up"),
                         step=event.step, steps=SPEC.steps, weights=event.weights, stable="v1", canary="v2",
                         reason=event.reason, updated_at=T0, decision=decision, decided_at=T0 if decision else None)


def test_table_shows_each_gates_values_e_value_or_bounds() -> None:
    state = JudgeState()
    state.on_spec(RolloutSpecRecord(rollout_id="r1", started_at=T0, spec=SPEC))
    state.on_event(start_event(SPEC, "r1"), T0, uuid.uuid4(), "llmops.cli")
    state.load(state.runs["chat"], [])
    [hold] = state.on_window(window("v2", T0, requests=50, error_rate=0.02)) + \
        state.on_window(window("v1", T0, requests=450, feedback=(40, 0.8)))
    text = format_status([_status(hold.event, hold.event)])
    lines = text.splitlines()
    assert lines[0] == "chat  rollout r1  ACTIVE"
    assert "  step      1/3 (steps 10, 50, 100%)" in lines
    assert "  weights   v1 90%, v2 10%" in lines
    assert "1s into the step, canary n=50, stable n=450" in text
    rows = {ln.split()[0]: ln.split() for ln in lines if ln.startswith("    ") and not ln.startswith("    e =")}
    assert rows["gate"] == ["gate", "canary", "stable", "e-value", "or", "bounds", "rolls", "back", "margin", "n",
                            "canary", "n", "stable", "status"]
    assert rows["error_rate"] == ["error_rate", "0.02", "0.00889", "e=0.713", "/", "400", "1", "0.03", "50", "450",
                                  "pending"]
    assert rows["feedback_score_delta"] == ["feedback_score_delta", "n/a", "0.875", "[-0.769,", "1]", "0.1", "0.1", "0",
                                            "40", "no", "data"]


def test_no_decision_yet_old_events_and_empty() -> None:
    text = format_status([_status(start_event(SPEC, "r1"))])
    assert "gates     no decision yet" in text and "v1 90%, v2 10%" in text
    assert format_status([]) == "no rollouts"
    old = RolloutEvent.model_validate({**start_event(SPEC, "r1").model_dump(), "action": "hold", "gates": [
        {"gate": "error_rate", "passed": False, "observed": 0.09, "threshold": 0.02, "canary_samples": 500,
         "stable_samples": 500, "detail": "two-proportion z"}]})
    assert "FAIL" in format_status([_status(old, old)])
