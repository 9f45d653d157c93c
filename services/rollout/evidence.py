"""The evidence about one rollout, gate by gate: running sums of its windows, and what they show now.

Pure (no I/O) and vectorised: every number is a numpy array of one batch shape (the judge keeps shape () per
rollout; the benchmark runs many simulated seeds at once through the same code).

Gates and their statistics (services/rollout/sequential):

- **count gates** (``error_rate``, ``safety_finding_rate``, ``slow_request_rate``; ``p95_latency_ratio`` of
  older specs is the slow-request gate): roll back when the rate-ratio e-process (:mod:`.sequential.counts`)
  reaches ``2K / alpha``, or when the betting confidence sequences (:mod:`.sequential.betting`) of the two
  sides' rates show canary > max_ratio x stable (each at ``alpha / 4K``; the e-process takes its exposure from
  the routing weight, the sequences from the completed requests, so a slow canary whose completions lag its
  routed share is still caught); within margin when the sequences show canary - stable < margin. The e-process
  runs over the whole rollout (each window at its own canary weight); the confidence sequences restart with every
  step.
- **feedback** (``feedback_score_delta``, scores in [0, 1]): one betting confidence sequence per side; roll back
  when stable's lower bound - canary's upper bound > threshold, within margin when stable's upper bound -
  canary's lower bound < margin.
- **cost** (``cost_per_request_ratio``): one asymptotic confidence sequence per side
  (:mod:`.sequential.asymptotic`, cost has no bound the judge knows); roll back when canary's lower bound >
  threshold x stable's upper bound, within margin when canary's upper bound < margin x stable's lower bound;
  only from ``ASYMPTOTIC_MIN`` priced requests per side (the sequence is asymptotic).
- **drift** (``drift_share``): the drift monitor's latest share for the canary against a ceiling (no test).

Error control. Rollback: each of the K tested gates (all but drift) is tested at ``alpha / K`` (Bonferroni on
e-values and on confidence sequences; a two-sided comparison splits its level between the two sides), so a
canary no worse than every tolerance is rolled back with probability <= alpha over the whole rollout. Promotion
needs every gate within margin at once (an intersection-union test), so each gate's bounds are at ``alpha``
(split between the sides), and a canary worse than some margin is passed with probability <= alpha.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from schemas.rollout_specs import DEFAULT_SLOW_MARGIN, RateGate, RolloutSpec
from services.rollout.sequential import asymptotic
from services.rollout.sequential.betting import BettingSums, Stakes
from services.rollout.sequential.counts import RateRatioTest

Array = NDArray[np.float64]
GateKind = Literal["count", "mean", "cost", "drift"]
CountSource = Literal["errors", "flagged", "slow"]
Side = Literal["canary", "stable"]
SIDES: tuple[Side, Side] = ("canary", "stable")
ASYMPTOTIC_MIN = 30
"""Priced requests per side before the cost gate's asymptotic confidence sequences are used."""
BET_HORIZON_SECONDS = 90.0
"""The betting confidence sequences are tuned to be tightest after this long in a step (a promotion within 2 min)."""
FIRST_HORIZON = 300.0
"""Values assumed by then before a side's rate is known (its first seconds)."""


@dataclass(frozen=True)
class GatePlan:
    """One configured gate, resolved from the spec (older spec fields mapped to the sequential ones)."""

    name: str
    kind: GateKind
    tolerance: float
    """Roll back beyond it: count gates a rate ratio; feedback a score drop; cost a ratio; drift a ceiling."""
    margin: float
    """Within margin below it: count gates a rate difference; feedback a score drop; cost a ratio; drift a ceiling."""
    min_samples: int = 0
    source: CountSource | None = None
    slow_ms: float | None = None
    stable_quantile: float = 0.99
    calibration_requests: int = 200
    """Stable requests a slow threshold learnt from data is read from."""


def plan_gates(spec: RolloutSpec) -> list[GatePlan]:
    """The spec's gates, in the spec's order."""
    g = spec.gates
    out: list[GatePlan] = []

    def count(name: str, cfg: RateGate, source: CountSource) -> GatePlan:
        return GatePlan(name, "count", cfg.resolved_max_ratio(), cfg.resolved_margin(), cfg.min_samples or 0, source)

    for name in g.configured():
        if name == "error_rate" and g.error_rate:
            out.append(count(name, g.error_rate, "errors"))
        elif name == "safety_finding_rate" and g.safety_finding_rate:
            out.append(count(name, g.safety_finding_rate, "flagged"))
        elif name == "slow_request_rate" and g.slow_request_rate:
            s = g.slow_request_rate
            out.append(GatePlan(name, "count", s.max_ratio, s.margin, s.min_samples or 0, "slow", s.latency_ms,
                                s.stable_quantile, s.calibration_requests))
        elif name == "p95_latency_ratio" and g.p95_latency_ratio:
            p = g.p95_latency_ratio
            out.append(GatePlan(name, "count", p.threshold, DEFAULT_SLOW_MARGIN, p.min_samples or 0, "slow",
                                stable_quantile=0.95))
        elif name == "feedback_score_delta" and g.feedback_score_delta:
            f = g.feedback_score_delta
            out.append(GatePlan(name, "mean", f.threshold, f.resolved_margin(), f.min_samples or 0))
        elif name == "cost_per_request_ratio" and g.cost_per_request_ratio:
            c = g.cost_per_request_ratio
            out.append(GatePlan(name, "cost", c.threshold, c.resolved_margin(), max(c.min_samples or 0, ASYMPTOTIC_MIN)))
        elif name == "drift_share" and g.drift_share:
            d = g.drift_share
            out.append(GatePlan(name, "drift", d.threshold, d.threshold))
    return out


@dataclass
class SideWindow:
    """One side's numbers in one window (or fragment): arrays of the evidence's batch shape."""

    requests: Array
    errors: Array
    flagged: Array
    slow: dict[str, Array]
    """Per slow-request gate: requests slower than its threshold."""
    timed: dict[str, Array]
    """Per slow-request gate: requests whose latency counts for it (the denominator of ``slow``)."""
    feedback_n: Array
    feedback_sum: Array
    feedback_sumsq: Array
    priced: Array
    cost_sum: Array
    cost_sumsq: Array
    drift: Array
    """The drift monitor's share reported in the window (NaN: none)."""

    def bad(self, plan: GatePlan) -> tuple[Array, Array]:
        """(bad events, requests they are out of) for a count gate."""
        if plan.source == "errors":
            return self.errors, self.requests
        if plan.source == "flagged":
            return self.flagged, self.requests
        zero = np.zeros_like(self.requests)
        return self.slow.get(plan.name, zero), self.timed.get(plan.name, zero)


def _horizon(n_before: Array, elapsed_s: Array | float) -> Array:
    """Values expected BET_HORIZON_SECONDS into the step, at the rate seen so far (FIRST_HORIZON in the first seconds)."""
    elapsed = np.asarray(elapsed_s, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        projected = n_before * BET_HORIZON_SECONDS / elapsed
    return np.where((elapsed >= 5.0) & (n_before > 0), projected, FIRST_HORIZON)


@dataclass
class GateEval:
    """What one gate shows now (arrays of the batch shape)."""

    plan: GatePlan
    rollback: NDArray[np.bool_]
    within: NDArray[np.bool_]
    canary_value: Array
    stable_value: Array
    canary_n: Array
    stable_n: Array
    log_e: Array
    """log e-value of the rollback test (count gates; NaN for the others)."""
    log_e_threshold: float
    worse_low: Array
    """Lower bound of how much worse the canary is, at the rollback level (difference, drop or ratio; NaN: none)."""
    worse_high: Array
    """Upper bound of how much worse the canary is, at the promotion level, compared with the margin."""


@dataclass
class Evidence:
    """Running sums of one rollout's windows. ``add_bad`` feeds the rollout-long e-processes (sealed windows
    only); ``add_step`` feeds the step's confidence sequences and returns the bets it used (keep them to
    remove the window again with ``sign=-1``); ``new_step`` starts the next step's sequences."""

    plans: list[GatePlan]
    alpha: float
    shape: tuple[int, ...] = ()
    tests: dict[str, RateRatioTest] = field(init=False)
    log_lr: dict[str, Array] = field(init=False)
    rates: dict[tuple[str, Side], BettingSums] = field(init=False)
    feedback: dict[Side, BettingSums] = field(init=False)
    cost: dict[Side, list[Array]] = field(init=False)
    requests: dict[Side, Array] = field(init=False)
    drift: Array = field(init=False)

    def __post_init__(self) -> None:
        self.tests = {p.name: RateRatioTest(p.tolerance) for p in self.plans if p.kind == "count"}
        self.log_lr = {name: np.zeros((*self.shape, t.size)) for name, t in self.tests.items()}
        self.new_step()

    @property
    def tested(self) -> int:
        """K: gates with a rollback test (all but drift)."""
        return max(1, sum(1 for p in self.plans if p.kind != "drift"))

    @property
    def rollback_alpha(self) -> float:
        return self.alpha / self.tested

    @property
    def promote_alpha(self) -> float:
        return self.alpha

    def new_step(self) -> None:
        z = self.shape
        self.rates = {(p.name, s): BettingSums.zeros(z) for p in self.plans if p.kind == "count" for s in SIDES}
        self.feedback = {s: BettingSums.zeros(z) for s in SIDES}
        self.cost = {s: [np.zeros(z), np.zeros(z), np.zeros(z)] for s in SIDES}
        self.requests = {s: np.zeros(z) for s in SIDES}
        self.drift = np.full(z, np.nan)

    def add_bad(self, side: Side, w: SideWindow, canary_weight: Array | float, sign: float = 1.0) -> None:
        """A sealed window's bad events into the rate-ratio e-processes (at the window's canary weight)."""
        for p in self.plans:
            if p.kind != "count":
                continue
            bad, _ = w.bad(p)
            zero = np.zeros_like(bad)
            c, s = (bad, zero) if side == "canary" else (zero, bad)
            self.log_lr[p.name] = self.log_lr[p.name] + sign * self.tests[p.name].log_lr(c, s, canary_weight)

    def add_step(self, side: Side, w: SideWindow, elapsed_s: Array | float, sign: float = 1.0,
                 bets: dict[str, Stakes] | None = None) -> dict[str, Stakes]:
        """A window into the step's confidence sequences; returns the bets used (pass them back to remove it).

        ``elapsed_s``: event time from the step's start to the window's start; with the values seen before the
        window it sizes the bets for the values expected ``BET_HORIZON_SECONDS`` into the step (predictable).
        """
        used: dict[str, Stakes] = {}
        bet_alpha = self.promote_alpha / 2
        for p in self.plans:
            if p.kind == "count":
                sums = self.rates[(p.name, side)]
                bad, n = w.bad(p)
                pair = bets[p.name] if bets is not None else sums.next_stakes(bet_alpha, horizon=_horizon(sums.n, elapsed_s),
                                                                             binary=True)
                sums.add(pair, n, bad, bad, sign)
                used[p.name] = pair
        fb = self.feedback[side]
        pair = bets["feedback"] if bets is not None else fb.next_stakes(bet_alpha, horizon=_horizon(fb.n, elapsed_s))
        fb.add(pair, w.feedback_n, w.feedback_sum, w.feedback_sumsq, sign)
        used["feedback"] = pair
        n, s1, s2 = self.cost[side]
        self.cost[side] = [n + sign * w.priced, s1 + sign * w.cost_sum, s2 + sign * w.cost_sumsq]
        self.requests[side] = self.requests[side] + sign * w.requests
        if side == "canary" and sign > 0:
            self.drift = np.where(np.isnan(w.drift), self.drift, w.drift)
        return used

    def evaluate(self) -> list[GateEval]:
        """Every gate's verdict on the evidence so far."""
        return [self._evaluate(p) for p in self.plans]

    def _evaluate(self, p: GatePlan) -> GateEval:
        ar, ap = self.rollback_alpha, self.promote_alpha
        nan = np.full(self.shape, np.nan)
        if p.kind == "count":
            c, s = self.rates[(p.name, "canary")], self.rates[(p.name, "stable")]
            # Two rollback tests share the gate's level (alpha / K, half each): the rate-ratio e-process, whose
            # exposure is the routing weight, and the two sides' confidence sequences, whose exposure is the
            # completed requests themselves (a slow canary completes less than its routed share while its backlog
            # grows, which costs the e-process power exactly when latency regresses).
            a_test = ar / 2
            log_e = self.tests[p.name].log_e(self.log_lr[p.name])
            worse_low = c.lower(a_test / 2) - p.tolerance * s.upper(a_test / 2)
            worse_high = c.upper(ap / 2) - s.lower(ap / 2)
            enough = (c.n >= p.min_samples) & (s.n >= p.min_samples) & (c.n > 0) & (s.n > 0)
            rollback = (log_e >= math.log(1 / a_test)) | ((c.n > 0) & (s.n > 0) & (worse_low > 0))
            return GateEval(p, rollback, enough & (worse_high <= p.margin), c.mean(), s.mean(),
                            c.n, s.n, log_e, math.log(1 / a_test), worse_low, worse_high)
        if p.kind == "mean":
            c, s = self.feedback["canary"], self.feedback["stable"]
            worse_low = s.lower(ar / 2) - c.upper(ar / 2)
            worse_high = s.upper(ap / 2) - c.lower(ap / 2)
            enough = (c.n >= p.min_samples) & (s.n >= p.min_samples) & (c.n > 0) & (s.n > 0)
            return GateEval(p, worse_low > p.tolerance, enough & (worse_high <= p.margin), c.mean(), s.mean(),
                            c.n, s.n, nan, math.nan, worse_low, worse_high)
        if p.kind == "cost":
            (nc, c1, c2), (ns, s1, s2) = self.cost["canary"], self.cost["stable"]
            c_lo, _ = asymptotic.bounds(nc, c1, c2, ar / 2)
            _, s_hi = asymptotic.bounds(ns, s1, s2, ar / 2)
            _, c_hi = asymptotic.bounds(nc, c1, c2, ap / 2)
            s_lo, _ = asymptotic.bounds(ns, s1, s2, ap / 2)
            enough = (nc >= p.min_samples) & (ns >= p.min_samples)
            with np.errstate(divide="ignore", invalid="ignore"):
                worse_low = np.where(enough & (s_hi > 0), np.maximum(c_lo, 0.0) / s_hi, np.nan)
                worse_high = np.where(enough & (s_lo > 0), c_hi / s_lo, np.inf)
                c_mean = np.where(nc > 0, c1 / np.maximum(nc, 1), np.nan)
                s_mean = np.where(ns > 0, s1 / np.maximum(ns, 1), np.nan)
            rollback = enough & (worse_low > p.tolerance)
            return GateEval(p, rollback, enough & (worse_high <= p.margin), c_mean, s_mean, nc, ns, nan, math.nan,
                            worse_low, worse_high)
        # drift: the drift monitor's report, against a ceiling (no test)
        reported = ~np.isnan(self.drift)
        return GateEval(p, reported & (self.drift > p.tolerance), reported & (self.drift <= p.tolerance), self.drift,
                        nan, reported.astype(float), np.zeros(self.shape), nan, math.nan, self.drift, self.drift)
