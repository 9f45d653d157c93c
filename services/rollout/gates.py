"""Gate statistics: canary vs stable over one analysis interval -> a :class:`GateOutcome` per gate.

Pure functions (no I/O). A gate FAILS only when its observed value breaches the threshold AND a one-sided
test says the canary is worse than stable at ``alpha``; a breach that is not significant passes (noise at
small counts must not flap a rollout). Too little data for a gate is neither pass nor fail: the outcome
is ``insufficient`` and the decision holds.

Tests per gate:
- ``error_rate``, ``safety_finding_rate``: two-proportion z-test (pooled), one-sided; Fisher's exact test
  instead when an expected cell count is below 5. Observed: canary - stable rate, or canary / stable.
- ``p95_latency_ratio``: canary p95 / stable p95 over the windows' latency samples (each window's sample
  weighted by its request count), significance by a one-sided Mann-Whitney U test on the samples.
- ``feedback_score_delta``: stable mean - canary mean score (scores are in [0, 1]). Only sums and counts are
  published, so the variance is bounded with the Bhatia-Davis inequality, var <= m(1 - m): a conservative
  one-sided z-test (it can only under-state significance).
- ``drift_share``: the canary's latest drift share (the output of a drift test itself) against an absolute
  ceiling; no second test.
- ``cost_per_request_ratio``: canary / stable cost per priced request; Welch's t-test (one-sided) on the
  per-window cost per request when each side has at least two priced windows, otherwise the point estimate
  alone (cost has no per-request variance in the aggregates; the detail says so).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import stats

from schemas.aggregates import DeploymentWindow
from schemas.rollouts import GateResult
from services.rollout.spec import AbsoluteGate, DeltaGate, GateName, RateGate, RatioGate, RolloutSpec

GateStatus = Literal["pass", "fail", "inconclusive", "insufficient"]
INCONCLUSIVE = "inconclusive"


@dataclass
class SideStats:
    """One side's (canary or stable) totals over an interval."""

    windows: int = 0
    requests: int = 0
    errors: int = 0
    safety_flagged: int = 0
    feedback_count: int = 0
    feedback_sum: float = 0.0
    cost_total: float = 0.0
    priced_requests: int = 0
    latency: list[float] = field(default_factory=list)
    latency_weights: list[float] = field(default_factory=list)
    window_cost_per_request: list[float] = field(default_factory=list)
    drift_share: float | None = None

    @classmethod
    def from_windows(cls, windows: Iterable[DeploymentWindow], drift_share: float | None = None) -> SideStats:
        """Totals of windows (in window order); ``drift_share`` is the latest known one if no window has one."""
        s = cls(drift_share=drift_share)
        for w in sorted(windows, key=lambda w: w.window_start):
            s.windows += 1
            s.requests += w.requests
            s.errors += w.errors
            s.safety_flagged += w.safety_flagged_requests
            s.feedback_count += w.feedback_count
            s.feedback_sum += w.feedback_score_sum
            s.cost_total += w.cost_total
            s.priced_requests += w.priced_requests
            if w.priced_requests > 0 and math.isfinite(w.cost_total):
                s.window_cost_per_request.append(w.cost_total / w.priced_requests)
            sample = [x for x in w.latency_sample_ms if math.isfinite(x)]
            if sample:
                weight = max(w.requests, len(sample)) / len(sample)
                s.latency.extend(sample)
                s.latency_weights.extend([weight] * len(sample))
            if w.drift_share is not None and math.isfinite(w.drift_share):
                s.drift_share = w.drift_share
        return s


@dataclass(frozen=True)
class GateOutcome:
    """A gate's verdict for one interval. ``result`` is what goes on the wire."""

    result: GateResult
    status: GateStatus
    severe: bool = False
    test: str = ""
    """Short name of the test that decided significance, e.g. 'Mann-Whitney'."""
    p_value: float | None = None

    @property
    def gate(self) -> str:
        return self.result.gate


def fmt(x: float | None) -> str:
    """A number for humans: 3 significant digits."""
    if x is None:
        return "n/a"
    return f"{x:.3g}"


def fmt_p(p: float) -> str:
    return f"{p:.2g}"


def two_proportion_p(x_c: int, n_c: int, x_s: int, n_s: int) -> tuple[float, str]:
    """One-sided p-value that the canary's rate exceeds stable's, and the test's name."""
    total_x, total_n = x_c + x_s, n_c + n_s
    expected = [total_x * n_c / total_n, total_x * n_s / total_n,
                (total_n - total_x) * n_c / total_n, (total_n - total_x) * n_s / total_n]
    if min(expected) < 5:
        _, p = stats.fisher_exact([[x_c, n_c - x_c], [x_s, n_s - x_s]], alternative="greater")
        return float(p), "Fisher exact"
    pooled = total_x / total_n
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_s))
    z = (x_c / n_c - x_s / n_s) / se
    return float(stats.norm.sf(z)), "two-proportion z"


def weighted_quantile(values: list[float], weights: list[float], q: float) -> float:
    """The q-quantile of values with weights (lower value at the cumulative-weight crossing)."""
    order = np.argsort(values, kind="stable")
    v = np.asarray(values, dtype=float)[order]
    cum = np.cumsum(np.asarray(weights, dtype=float)[order])
    idx = int(np.searchsorted(cum, q * cum[-1], side="left"))
    return float(v[min(idx, len(v) - 1)])


def _insufficient(gate: str, threshold: float, n_c: int, n_s: int, need: int, what: str) -> GateOutcome:
    short = [f"canary {what} {n_c} < min {need}" if n_c < need else "", f"stable {what} {n_s} < min {need}" if n_s < need else ""]
    detail = "insufficient data: " + ", ".join(x for x in short if x)
    return GateOutcome(GateResult(gate=gate, passed=False, observed=None, threshold=threshold,
                                  canary_samples=n_c, stable_samples=n_s, detail=detail), "insufficient")


def _verdict(
    gate: str, observed: float | None, threshold: float, severe_threshold: float | None, breach: bool,
    severe_breach: bool, p: float, alpha: float, n_c: int, n_s: int, detail: str, test: str,
) -> GateOutcome:
    significant = p < alpha
    failed = breach and significant
    inconclusive = breach and not significant
    if inconclusive:
        # A worse point estimate that noise could explain: neither a failure nor a pass (the judge holds).
        detail = f"{INCONCLUSIVE}: breach not significant at alpha={fmt_p(alpha)}; {detail}"
    return GateOutcome(
        GateResult(gate=gate, passed=not breach, observed=observed, threshold=threshold,
                   canary_samples=n_c, stable_samples=n_s, detail=detail),
        "fail" if failed else INCONCLUSIVE if inconclusive else "pass",
        severe=failed and severe_breach and severe_threshold is not None,
        test=test,
        p_value=p,
    )


def _breaches(observed: float, cfg: RateGate | RatioGate | DeltaGate | AbsoluteGate) -> tuple[bool, bool]:
    """(beyond the threshold, beyond the severe threshold if one is set)."""
    return observed > cfg.threshold, cfg.severe_threshold is not None and observed > cfg.severe_threshold


def _ratio(canary: float, stable: float, cfg: RateGate | RatioGate) -> tuple[float | None, bool, bool]:
    """(canary / stable, breach, severe breach); with stable at 0 the ratio is unbounded and any canary value breaches."""
    if stable <= 0:
        return None, canary > 0, canary > 0
    observed = canary / stable
    return (observed, *_breaches(observed, cfg))


def rate_gate(gate: str, cfg: RateGate, x_c: int, n_c: int, x_s: int, n_s: int, alpha: float, min_n: int) -> GateOutcome:
    """A rate (errors, flagged requests) of canary vs stable."""
    need = cfg.min_samples or min_n
    if n_c < need or n_s < need:
        return _insufficient(gate, cfg.threshold, n_c, n_s, need, "n")
    r_c, r_s = x_c / n_c, x_s / n_s
    observed: float | None
    if cfg.comparison == "difference":
        observed = r_c - r_s
        breach, severe = _breaches(observed, cfg)
    else:
        observed, breach, severe = _ratio(r_c, r_s, cfg)
    p, test = two_proportion_p(x_c, n_c, x_s, n_s)
    detail = f"{test} one-sided p={fmt_p(p)}; canary {x_c}/{n_c} = {fmt(r_c * 100)}%, stable {x_s}/{n_s} = {fmt(r_s * 100)}%"
    if cfg.comparison == "ratio" and observed is None:
        detail += "; stable rate 0, ratio unbounded"
    return _verdict(gate, observed, cfg.threshold, cfg.severe_threshold, breach, severe, p, alpha, n_c, n_s, detail, test)




def latency_gate(cfg: RatioGate, canary: SideStats, stable: SideStats, alpha: float, min_n: int) -> GateOutcome:
    gate = "p95_latency_ratio"
    n_c, n_s = len(canary.latency), len(stable.latency)
    need = cfg.min_samples or min_n
    if n_c < need or n_s < need:
        return _insufficient(gate, cfg.threshold, n_c, n_s, need, "latency samples")
    p95_c = weighted_quantile(canary.latency, canary.latency_weights, 0.95)
    p95_s = weighted_quantile(stable.latency, stable.latency_weights, 0.95)
    observed, breach, severe = _ratio(p95_c, p95_s, cfg)
    p = float(stats.mannwhitneyu(canary.latency, stable.latency, alternative="greater", method="asymptotic").pvalue)
    detail = f"Mann-Whitney U one-sided p={fmt_p(p)}; p95 canary {fmt(p95_c)} ms, stable {fmt(p95_s)} ms"
    return _verdict(gate, observed, cfg.threshold, cfg.severe_threshold, breach, severe, p, alpha, n_c, n_s, detail,
                    "Mann-Whitney")


def feedback_gate(cfg: DeltaGate, canary: SideStats, stable: SideStats, alpha: float, min_n: int) -> GateOutcome:
    gate = "feedback_score_delta"
    n_c, n_s = canary.feedback_count, stable.feedback_count
    need = cfg.min_samples or min_n
    if n_c < need or n_s < need:
        return _insufficient(gate, cfg.threshold, n_c, n_s, need, "feedback")
    m_c = min(1.0, max(0.0, canary.feedback_sum / n_c))
    m_s = min(1.0, max(0.0, stable.feedback_sum / n_s))
    observed = m_s - m_c  # positive: the canary scores worse
    se = math.sqrt(m_c * (1 - m_c) / n_c + m_s * (1 - m_s) / n_s)
    p = float(stats.norm.sf(observed / se)) if se > 0 else (0.0 if observed > 0 else 1.0)
    detail = (f"z-test (Bhatia-Davis variance bound) one-sided p={fmt_p(p)}; mean score canary {fmt(m_c)}, "
              f"stable {fmt(m_s)}")
    breach, severe = _breaches(observed, cfg)
    return _verdict(gate, observed, cfg.threshold, cfg.severe_threshold, breach, severe, p, alpha, n_c, n_s, detail,
                    "z-test")


def drift_gate(cfg: AbsoluteGate, canary: SideStats, stable: SideStats) -> GateOutcome:
    gate = "drift_share"
    share = canary.drift_share
    if share is None:
        return GateOutcome(GateResult(gate=gate, passed=False, observed=None, threshold=cfg.threshold,
                                      canary_samples=0, stable_samples=0,
                                      detail="insufficient data: no drift share reported for the canary yet"),
                           "insufficient")
    failed, severe = _breaches(share, cfg)  # a severe threshold is never below the threshold (spec validation)
    detail = f"absolute ceiling on the canary's latest drift share (a drift test's output); {fmt(share)}"
    return GateOutcome(GateResult(gate=gate, passed=not failed, observed=share, threshold=cfg.threshold,
                                  canary_samples=canary.windows, stable_samples=stable.windows, detail=detail),
                       "fail" if failed else "pass", severe=severe, test="absolute ceiling")


def cost_gate(cfg: RatioGate, canary: SideStats, stable: SideStats, alpha: float, min_n: int) -> GateOutcome:
    gate = "cost_per_request_ratio"
    n_c, n_s = canary.priced_requests, stable.priced_requests
    need = cfg.min_samples or min_n
    if n_c < need or n_s < need:
        return _insufficient(gate, cfg.threshold, n_c, n_s, need, "priced requests")
    cpr_c, cpr_s = canary.cost_total / n_c, stable.cost_total / n_s
    observed, breach, severe = _ratio(cpr_c, cpr_s, cfg)
    wc, ws = canary.window_cost_per_request, stable.window_cost_per_request
    if len(wc) >= 2 and len(ws) >= 2:
        if np.var(wc) == 0 and np.var(ws) == 0:
            p = 0.0 if np.mean(wc) > np.mean(ws) else 1.0
        else:
            p = float(stats.ttest_ind(wc, ws, equal_var=False, alternative="greater").pvalue)
        how, test = f"Welch t on per-window cost per request one-sided p={fmt_p(p)}", "Welch t"
    else:
        p = 0.0
        how, test = "point estimate only (fewer than 2 priced windows per side, no variance to test)", "point estimate"
    detail = f"{how}; cost per request canary {fmt(cpr_c)}, stable {fmt(cpr_s)} USD"
    return _verdict(gate, observed, cfg.threshold, cfg.severe_threshold, breach, severe, p, alpha, n_c, n_s, detail, test)


def evaluate(spec: RolloutSpec, canary: SideStats, stable: SideStats) -> list[GateOutcome]:
    """Every configured gate of the spec, in the spec's gate order.

    Each tested gate uses ``alpha / number of tested gates`` (Bonferroni), so ``alpha`` bounds the chance
    that a canary as good as stable fails any gate in an interval, not each gate separately.
    """
    g, m = spec.gates, spec.min_samples
    names: list[GateName] = g.configured()
    tested = [n for n in names if n != "drift_share"]  # drift is an absolute ceiling, not a test
    a = spec.alpha / max(1, len(tested))
    out: list[GateOutcome] = []
    for name in names:
        if name == "error_rate" and g.error_rate:
            out.append(rate_gate(name, g.error_rate, canary.errors, canary.requests, stable.errors, stable.requests, a, m))
        elif name == "safety_finding_rate" and g.safety_finding_rate:
            out.append(rate_gate(name, g.safety_finding_rate, canary.safety_flagged, canary.requests,
                                 stable.safety_flagged, stable.requests, a, m))
        elif name == "p95_latency_ratio" and g.p95_latency_ratio:
            out.append(latency_gate(g.p95_latency_ratio, canary, stable, a, m))
        elif name == "feedback_score_delta" and g.feedback_score_delta:
            out.append(feedback_gate(g.feedback_score_delta, canary, stable, a, m))
        elif name == "drift_share" and g.drift_share:
            out.append(drift_gate(g.drift_share, canary, stable))
        elif name == "cost_per_request_ratio" and g.cost_per_request_ratio:
            out.append(cost_gate(g.cost_per_request_ratio, canary, stable, a, m))
    return out
