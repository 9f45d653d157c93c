"""The rollout state machine: one decision per analysis interval, from the gates' outcomes. Pure (no I/O).

    start (step 1: weights {stable: 1 - s1, canary: s1})
      -> every interval, in this order:
         traffic below min_samples on either side -> hold ("insufficient traffic: canary N < min M");
             the interval carries no evidence, so the count of consecutive failures is unchanged
         a gate fails with its severe_threshold breached -> rollback at once
         a gate fails -> consecutive failures + 1; rollback when it reaches failure_threshold, else hold
         a gate lacks data (e.g. too little feedback) -> hold (failures unchanged)
         every gate passes -> failures reset; step_up to the next step, or promote after the last step
    promote: weights {canary: 1.0}; rollback and abort: weights {stable: 1.0, canary: 0.0}, step 0.

Steps are 1-based in ``RolloutEvent.step`` (0 means no canary traffic: before the first step or after a rollback).
:func:`replay` rebuilds the progress from the events on ``llm.rollouts`` with the same rules, so a restarted
judge resumes where it was.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from schemas.rollouts import GateResult, RolloutEvent
from services.rollout.gates import INCONCLUSIVE, GateOutcome, SideStats, evaluate, fmt, fmt_p
from services.rollout.spec import RolloutSpec

Status = Literal["active", "promoted", "rolled_back", "aborted"]
INSUFFICIENT = "insufficient data"
TERMINAL: dict[str, Status] = {"promote": "promoted", "rollback": "rolled_back", "abort": "aborted"}


@dataclass(frozen=True)
class Progress:
    """Where one rollout stands between intervals."""

    rollout_id: str
    step: int
    consecutive_failures: int = 0
    status: Status = "active"


@dataclass(frozen=True)
class Decision:
    event: RolloutEvent
    progress: Progress
    outcomes: list[GateOutcome]


def is_failure(gate: GateResult) -> bool:
    """A gate that failed on sufficient data (an insufficient or inconclusive gate is not a failure)."""
    return not gate.passed and not gate.detail.startswith((INSUFFICIENT, INCONCLUSIVE))


def start_event(spec: RolloutSpec, rollout_id: str, reason: str = "") -> RolloutEvent:
    share = spec.canary_share(1)
    return RolloutEvent(
        alias=spec.alias, rollout_id=rollout_id, stable_deployment=spec.stable, canary_deployment=spec.canary,
        action="start", step=1, weights=spec.weights(1),
        reason=reason or f"start: canary {spec.canary} at {fmt(share * 100)}% (steps {', '.join(fmt(s) for s in spec.steps)}%)",
    )


def abort_event(current: RolloutEvent, reason: str) -> RolloutEvent:
    """Weights back to stable for the rollout in ``current``."""
    weights = {current.stable_deployment: 1.0}
    if current.canary_deployment:
        weights[current.canary_deployment] = 0.0
    return current.model_copy(update={"action": "abort", "step": 0, "weights": weights, "reason": reason, "gates": []})


def _failure_text(o: GateOutcome, severe_threshold: float | None = None) -> str:
    """'gate observed > threshold (canary n=, stable n=; test p=)'."""
    r = o.result
    threshold = f"severe {fmt(severe_threshold)}" if severe_threshold is not None else fmt(r.threshold)
    observed = fmt(r.observed) if r.observed is not None else "unbounded (stable 0)"
    p = f" p={fmt_p(o.p_value)}" if o.p_value is not None else ""
    return f"{r.gate} {observed} > {threshold} (canary n={r.canary_samples}, stable n={r.stable_samples}; {o.test}{p})"


def _traffic_shortfall(spec: RolloutSpec, canary: SideStats, stable: SideStats) -> str | None:
    short = []
    if canary.requests < spec.min_samples:
        short.append(f"canary {canary.requests} < min {spec.min_samples}")
    if stable.requests < spec.min_samples:
        short.append(f"stable {stable.requests} < min {spec.min_samples}")
    return ", ".join(short) or None


def decide(spec: RolloutSpec, progress: Progress, canary: SideStats, stable: SideStats) -> Decision:
    """The decision for one closed interval of an active rollout."""
    if progress.status != "active":
        raise ValueError(f"rollout {progress.rollout_id} is {progress.status}; nothing to decide")
    outcomes = evaluate(spec, canary, stable)

    def event(action: str, step: int, weights: dict[str, float], reason: str, outs: list[GateOutcome]) -> RolloutEvent:
        return RolloutEvent(alias=spec.alias, rollout_id=progress.rollout_id, stable_deployment=spec.stable,
                            canary_deployment=spec.canary, action=action, step=step, weights=weights,  # type: ignore[arg-type]
                            reason=reason, gates=[o.result for o in outs])

    current = spec.weights(progress.step)
    rollback_weights = {spec.stable: 1.0, spec.canary: 0.0}

    shortfall = _traffic_shortfall(spec, canary, stable)
    if shortfall:
        held = [o if o.status == "insufficient" else GateOutcome(
            o.result.model_copy(update={"passed": False, "detail": f"{INSUFFICIENT}: interval traffic below min ({shortfall}); "
                                        + o.result.detail}), "insufficient") for o in outcomes]
        reason = f"hold: insufficient traffic: {shortfall}"
        return Decision(event("hold", progress.step, current, reason, held), progress, held)

    failed = [o for o in outcomes if o.status == "fail"]
    severe = [o for o in failed if o.severe]
    if severe:
        text = "; ".join(_failure_text(o, getattr(spec.gates, o.gate).severe_threshold) for o in severe)
        after = replace(progress, consecutive_failures=progress.consecutive_failures + 1, status="rolled_back")
        return Decision(event("rollback", 0, rollback_weights, f"rollback (severe breach, at once): {text}", outcomes),
                        after, outcomes)
    if failed:
        count = progress.consecutive_failures + 1
        text = "; ".join(_failure_text(o) for o in failed)
        if count >= spec.failure_threshold:
            after = replace(progress, consecutive_failures=count, status="rolled_back")
            plural = "interval" if count == 1 else "consecutive intervals"
            return Decision(event("rollback", 0, rollback_weights, f"rollback: {text} for {count} {plural}", outcomes),
                            after, outcomes)
        after = replace(progress, consecutive_failures=count)
        reason = f"hold: {text}; failed interval {count} of {spec.failure_threshold} before rollback"
        return Decision(event("hold", progress.step, current, reason, outcomes), after, outcomes)

    lacking = [o for o in outcomes if o.status == "insufficient"]
    unsure = [o for o in outcomes if o.status == INCONCLUSIVE]
    if lacking or unsure:
        parts = [f"{o.gate} {o.result.detail}" for o in lacking]
        parts += [f"{_failure_text(o)} but not significant" for o in unsure]
        # An interval with enough traffic that did not fail ends a run of failures; lacking data does not.
        after = replace(progress, consecutive_failures=0) if unsure and not lacking else progress
        return Decision(event("hold", progress.step, current, "hold: " + "; ".join(parts), outcomes), after, outcomes)

    passed = (f"all {len(outcomes)} gates passed (canary n={canary.requests}, stable n={stable.requests})")
    # Stepping up to 100% would leave stable nothing to compare against: passing the step before it promotes.
    if progress.step < len(spec.steps) and spec.steps[progress.step] < 100:
        nxt = progress.step + 1
        after = replace(progress, step=nxt, consecutive_failures=0)
        reason = (f"step_up: {passed}; canary {fmt(spec.steps[progress.step - 1])}% -> {fmt(spec.steps[nxt - 1])}%")
        return Decision(event("step_up", nxt, spec.weights(nxt), reason, outcomes), after, outcomes)
    after = replace(progress, consecutive_failures=0, status="promoted")
    reason = (f"promote: {passed} at {fmt(spec.steps[progress.step - 1])}%, the last step analysed; "
              f"{spec.canary} takes all traffic")
    return Decision(event("promote", progress.step, {spec.canary: 1.0}, reason, outcomes), after, outcomes)


def apply(progress: Progress | None, event: RolloutEvent) -> Progress | None:
    """The progress after an event read from ``llm.rollouts`` (the same rules as :func:`decide`)."""
    if event.action == "start":
        return Progress(event.rollout_id, event.step)
    if progress is None or progress.rollout_id != event.rollout_id:
        # An event of a rollout whose start we never saw (compacted away): resume from the event itself.
        progress = Progress(event.rollout_id, max(event.step, 1))
    if event.action in TERMINAL:
        return replace(progress, status=TERMINAL[event.action])
    if event.action == "step_up":
        return replace(progress, step=event.step, consecutive_failures=0)
    # hold
    if any(is_failure(g) for g in event.gates):
        return replace(progress, step=max(event.step, 1), consecutive_failures=progress.consecutive_failures + 1)
    inconclusive = any(g.detail.startswith(INCONCLUSIVE) for g in event.gates)
    lacking = any(g.detail.startswith(INSUFFICIENT) for g in event.gates)
    if inconclusive and not lacking:
        return replace(progress, step=max(event.step, 1), consecutive_failures=0)
    return replace(progress, step=max(event.step, 1))
