"""The rollout state machine, decided after every window from the gates' evidence. Pure (no I/O).

    start (step 1: weights {stable: 1 - s1, canary: s1})
      -> after every window, in this order:
         a gate shows the canary worse than its tolerance (e-value >= K/alpha, or bounds)  -> rollback
         the step lasted min_step_seconds, has min_samples requests per side, and every gate
           shows the canary within its margin                                              -> step_up, or promote
                                                                                              after the last step
                                                                                              below 100%
         the step lasted max_step_seconds                                                  -> rollback (timeout)
         otherwise                                                                         -> hold (and say why)
    promote: weights {canary: 1.0}; rollback and abort: weights {stable: 1.0, canary: 0.0}, step 0.

:func:`verdict` is the rule itself, on arrays (the benchmark applies it to many simulated seeds at once);
:func:`decide` applies it to one rollout and writes the event, with reasons that name each gate, both sides'
values, the e-value and its boundary or the confidence bounds, n per side and the time since the step began.

Steps are 1-based in ``RolloutEvent.step`` (0 means no canary traffic: before the first step or after a
rollback). A step begins at the event time of the event that entered it (the rollout's start, or the
step_up's ``occurred_at``). :func:`apply` rebuilds the progress from the events on ``llm.rollouts``, so a
restarted judge resumes where it was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from schemas.rollouts import GateResult, GateStatus, RolloutAction, RolloutEvent
from services.rollout.evidence import GateEval
from services.rollout.spec import RolloutSpec

Status = Literal["active", "promoted", "rolled_back", "aborted"]
TERMINAL: dict[str, Status] = {"promote": "promoted", "rollback": "rolled_back", "abort": "aborted"}
HOLD, ROLLBACK, PASS, TIMEOUT = 0, 1, 2, 3
"""Verdict codes."""


@dataclass(frozen=True)
class Progress:
    """Where one rollout stands."""

    rollout_id: str
    step: int
    step_started_at: datetime | None = None
    status: Status = "active"


@dataclass(frozen=True)
class Decision:
    event: RolloutEvent
    progress: Progress
    verdict: int


def verdict(spec: RolloutSpec, evals: list[GateEval], canary_n: NDArray[np.float64], stable_n: NDArray[np.float64],
            elapsed: NDArray[np.float64]) -> NDArray[np.int_]:
    """HOLD, ROLLBACK, PASS (step up or promote) or TIMEOUT, element-wise over the evidence's batch shape."""
    shape = np.shape(elapsed)
    rollback = np.zeros(shape, dtype=bool)
    within = np.ones(shape, dtype=bool)
    for e in evals:
        rollback |= e.rollback
        within &= e.within
    ready = (elapsed >= spec.min_step_seconds) & (canary_n >= spec.min_samples) & (stable_n >= spec.min_samples)
    timeout = elapsed >= (math.inf if spec.max_step_seconds is None else spec.max_step_seconds)
    return np.select([rollback, ready & within, timeout], [ROLLBACK, PASS, TIMEOUT], HOLD)


def fmt(x: float | None) -> str:
    """A number for humans: 3 significant digits."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.3g}"


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x * 100:.3g}%"


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def gate_status(e: GateEval) -> GateStatus:
    if bool(e.rollback):
        return "rollback"
    if bool(e.within):
        return "within_margin"
    if e.plan.kind == "drift":
        return "pending" if float(e.canary_n) > 0 else "no_data"
    return "pending" if float(e.canary_n) > 0 and float(e.stable_n) > 0 else "no_data"


def gate_text(e: GateEval) -> str:
    """One gate's state in words: both sides' values, the e-value or bounds, n per side."""
    p = e.plan
    c, s = float(e.canary_value), float(e.stable_value)
    nc, ns = int(e.canary_n), int(e.stable_n)
    hi, lo = float(e.worse_high), float(e.worse_low)
    if p.kind == "count":
        what = f"slow (>{p.slow_ms:.0f} ms) share" if p.source == "slow" and p.slow_ms else "rate"
        ev = math.exp(min(float(e.log_e), 700.0))
        excess = f"; canary - {fmt(p.tolerance)}x stable >= {fmt(lo)} (rollback above 0)" if math.isfinite(lo) else ""
        return (f"{p.name}: {what} canary {_pct(c)} (n={nc}) vs stable {_pct(s)} (n={ns}); "
                f"e-value {fmt(ev)} (rollback at {fmt(math.exp(e.log_e_threshold))}, H0 canary <= {fmt(p.tolerance)}x "
                f"stable){excess}; canary - stable <= {fmt(hi)} (margin {fmt(p.margin)})")
    if p.kind == "mean":
        return (f"{p.name}: mean score canary {fmt(c)} (n={nc}) vs stable {fmt(s)} (n={ns}); stable - canary in "
                f"[{fmt(lo)}, {fmt(hi)}] (rollback above {fmt(p.tolerance)}, margin {fmt(p.margin)})")
    if p.kind == "cost":
        return (f"{p.name}: cost per request canary {fmt(c)} (n={nc}) vs stable {fmt(s)} (n={ns}) USD; canary / "
                f"stable in [{fmt(lo)}, {fmt(hi)}] (rollback above {fmt(p.tolerance)}, margin {fmt(p.margin)})")
    if math.isnan(c):
        return f"{p.name}: no drift report for the canary in this step yet (ceiling {fmt(p.tolerance)})"
    return f"{p.name}: canary drift share {fmt(c)} (ceiling {fmt(p.tolerance)}; the drift monitor's output, no test)"


def gate_result(e: GateEval) -> GateResult:
    p = e.plan
    c, s = float(e.canary_value), float(e.stable_value)
    if p.kind == "count":
        observed = c / s if s > 0 else None
    elif p.kind == "mean":
        observed = s - c
    elif p.kind == "cost":
        observed = c / s if s > 0 else None
    else:
        observed = c
    log_e = float(e.log_e)
    return GateResult(
        gate=p.name, passed=not bool(e.rollback), observed=_finite(observed) if observed is not None else None,
        threshold=p.tolerance, canary_samples=int(e.canary_n), stable_samples=int(e.stable_n),
        detail=gate_text(e)[:2000], status=gate_status(e), canary_value=_finite(c), stable_value=_finite(s),
        e_value=math.exp(min(log_e, 700.0)) if math.isfinite(log_e) else None,
        e_threshold=float(f"{math.exp(e.log_e_threshold):.9g}") if math.isfinite(e.log_e_threshold) else None,
        worse_low=_finite(float(e.worse_low)), worse_high=_finite(float(e.worse_high)), margin=p.margin,
    )


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


def decide(spec: RolloutSpec, progress: Progress, evals: list[GateEval], canary_n: int, stable_n: int,
           elapsed_s: float, at: datetime | None = None) -> Decision:
    """The decision for one active rollout after a window; ``elapsed_s`` is the event time since the step began,
    ``at`` the decision's event time (where a step_up's next step begins)."""
    if progress.status != "active":
        raise ValueError(f"rollout {progress.rollout_id} is {progress.status}; nothing to decide")
    code = int(verdict(spec, evals, np.asarray(float(canary_n)), np.asarray(float(stable_n)), np.asarray(elapsed_s)))
    where = (f"{elapsed_s:.0f}s into step {progress.step} ({fmt(spec.steps[progress.step - 1])}%), "
             f"canary n={canary_n}, stable n={stable_n}")
    results = [gate_result(e) for e in evals]

    def event(action: RolloutAction, step: int, weights: dict[str, float], reason: str) -> RolloutEvent:
        return RolloutEvent(alias=spec.alias, rollout_id=progress.rollout_id, stable_deployment=spec.stable,
                            canary_deployment=spec.canary, action=action, step=step, weights=weights,
                            reason=reason[:20_000], gates=results, step_seconds=max(elapsed_s, 0.0),
                            canary_requests=max(canary_n, 0), stable_requests=max(stable_n, 0))

    back = {spec.stable: 1.0, spec.canary: 0.0}
    if code == ROLLBACK:
        failing = "; ".join(gate_text(e) for e in evals if bool(e.rollback))
        return Decision(event("rollback", 0, back, f"rollback: {failing}; {where}"),
                        replace(progress, status="rolled_back"), code)
    if code == TIMEOUT:
        missing = "; ".join(gate_text(e) for e in evals if not bool(e.within)) or "every gate within margin"
        return Decision(event("rollback", 0, back,
                              f"rollback: step not passed within max_step_seconds={fmt(spec.max_step_seconds)}; "
                              f"not shown within margin: {missing}; {where}"),
                        replace(progress, status="rolled_back"), code)
    if code == PASS:
        shown = "; ".join(gate_text(e) for e in evals)
        # Stepping up to 100% would leave stable nothing to compare against: passing the step before it promotes.
        if progress.step < len(spec.steps) and spec.steps[progress.step] < 100:
            nxt = progress.step + 1
            reason = (f"step_up: every gate within margin; canary {fmt(spec.steps[progress.step - 1])}% -> "
                      f"{fmt(spec.steps[nxt - 1])}%; {where}; {shown}")
            return Decision(event("step_up", nxt, spec.weights(nxt), reason),
                            replace(progress, step=nxt, step_started_at=at), code)
        reason = (f"promote: every gate within margin at {fmt(spec.steps[progress.step - 1])}%, the last step "
                  f"analysed; {spec.canary} takes all traffic; {where}; {shown}")
        return Decision(event("promote", progress.step, {spec.canary: 1.0}, reason),
                        replace(progress, status="promoted"), code)
    return Decision(event("hold", progress.step, spec.weights(progress.step), hold_reason(spec, evals, canary_n,
                                                                                          stable_n, elapsed_s, where)),
                    progress, code)


def hold_reason(spec: RolloutSpec, evals: list[GateEval], canary_n: int, stable_n: int, elapsed_s: float,
                where: str) -> str:
    """Why a step holds: no traffic (every e-value is 1), too few samples or too little time, gates pending."""
    parts: list[str] = []
    if canary_n == 0:
        parts.append("no canary traffic in this step (nothing to judge: every e-value is 1)")
    elif stable_n == 0:
        parts.append("no stable traffic in this step (nothing to compare with)")
    if elapsed_s < spec.min_step_seconds:
        parts.append(f"min_step_seconds={fmt(spec.min_step_seconds)} not reached")
    short = [f"{side} {n} < min_samples {spec.min_samples}" for side, n in (("canary", canary_n), ("stable", stable_n))
             if 0 < n < spec.min_samples]
    parts += short
    pending = [gate_text(e) for e in evals if not bool(e.within)]
    if pending:
        parts.append("not yet shown within margin: " + "; ".join(pending))
    return f"hold: {'; '.join(parts) or 'waiting'}; {where}"


def apply(progress: Progress | None, event: RolloutEvent, occurred_at: datetime) -> Progress | None:
    """The progress after an event read from ``llm.rollouts`` (``occurred_at``: its envelope's event time)."""
    if event.action == "start":
        return Progress(event.rollout_id, event.step, step_started_at=occurred_at)
    if progress is None or progress.rollout_id != event.rollout_id:
        # An event of a rollout whose start we never saw (compacted away): resume from the event itself.
        started = None if event.step_seconds is None else occurred_at.__class__.fromtimestamp(
            occurred_at.timestamp() - event.step_seconds, tz=occurred_at.tzinfo)
        progress = Progress(event.rollout_id, max(event.step, 1), step_started_at=started)
    if event.action in TERMINAL:
        return replace(progress, status=TERMINAL[event.action])
    if event.action == "step_up":
        return replace(progress, step=event.step, step_started_at=occurred_at)
    return progress  # hold
