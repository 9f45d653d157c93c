"""The interval-based judge this project had before the sequential one, re-implemented for bench/rollback.py only.

Its rules, as they were (services/rollout/gates.py and decision.py before the sequential judge): once per
analysis interval (30 s of 10-second windows), each gate compares canary with stable over the interval with a
fixed-horizon one-sided test at alpha / K (K tested gates, Bonferroni): error and safety rates by a pooled
two-proportion z-test (Fisher's exact test when an expected cell is below 5), p95 latency ratio by Mann-Whitney U
(normal approximation with continuity correction) on the latencies, feedback by a z-test with a Bhatia-Davis
variance bound, cost per request by Welch's t on the per-window costs, drift share against a ceiling. A gate
fails when its observed value breaches the threshold AND its test is significant; a breach that is not
significant is inconclusive (holds, and ends a run of failures). ``failure_threshold`` consecutive failed
intervals roll back, a significant breach of a severe threshold at once; too little traffic or a gate without
data holds; every gate passing steps up, or promotes after the last step below 100%.

The gate statistics are computed for every seed and interval at once (numpy), then the per-interval rule runs
seed by seed. The product has one judge (services/rollout); this copy exists so that the benchmark can print
the old judge beside the new one on the same simulated traffic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

PASS, FAIL, SEVERE, INCONCLUSIVE, INSUFFICIENT = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class OldGate:
    threshold: float
    severe: float | None = None


@dataclass(frozen=True)
class OldSpec:
    """The old benchmark's spec (services/rollout before the sequential judge)."""

    interval_s: int = 30
    window_s: int = 10
    min_samples: int = 50
    failure_threshold: int = 2
    alpha: float = 0.05
    error_rate: OldGate = OldGate(0.02, 0.2)
    p95_latency_ratio: OldGate = OldGate(1.5, 3.0)
    safety_finding_rate: OldGate = OldGate(0.02)
    feedback_score_delta: OldGate = OldGate(0.1)
    cost_per_request_ratio: OldGate = OldGate(1.3)
    drift_share: OldGate = OldGate(0.5)

    @property
    def tested(self) -> int:
        return 5  # every gate above but drift


@dataclass
class Intervals:
    """Per (seed, interval) sums of each side: arrays (seeds, 2, intervals); side 0 the canary."""

    requests: np.ndarray
    errors: np.ndarray
    flagged: np.ndarray
    feedback_n: np.ndarray
    feedback_sum: np.ndarray
    cost: np.ndarray
    window_cost: np.ndarray
    """Cost per request of each window: (seeds, 2, intervals, windows per interval), NaN for an empty window."""
    drift_reported: np.ndarray
    """(seeds, intervals): the canary's drift share (0) was reported by the interval's end."""


def _outcome(observed: np.ndarray, p: np.ndarray, gate: OldGate, alpha: float) -> np.ndarray:
    breach = observed > gate.threshold
    significant = p < alpha
    severe = breach & significant & (gate.severe is not None) & (observed > (gate.severe or math.inf))
    return np.select([severe, breach & significant, breach], [SEVERE, FAIL, INCONCLUSIVE], PASS)


def _two_proportion_p(x_c: np.ndarray, n_c: np.ndarray, x_s: np.ndarray, n_s: np.ndarray) -> np.ndarray:
    total_x, total_n = x_c + x_s, n_c + n_s
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = total_x / total_n
        se = np.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_s))
        p = stats.norm.sf((x_c / n_c - x_s / n_s) / se)
    expected = np.minimum(np.minimum(total_x * n_c, total_x * n_s), np.minimum((total_n - total_x) * n_c,
                                                                               (total_n - total_x) * n_s)) / total_n
    for i in zip(*np.nonzero(expected < 5), strict=True):
        a, b, c, d = int(x_c[i]), int(n_c[i] - x_c[i]), int(x_s[i]), int(n_s[i] - x_s[i])
        p[i] = 1.0 if a + c == 0 else stats.fisher_exact([[a, b], [c, d]], alternative="greater")[1]
    return p


def latency_tests(latency: np.ndarray, key: np.ndarray, canary: np.ndarray, keys: int,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per key (seed x interval): (one-sided Mann-Whitney p that the canary is slower, canary p95, stable p95)."""
    order = np.lexsort((latency, key))
    k = key[order]
    first = np.searchsorted(k, np.arange(keys))
    rank = np.arange(k.size) - first[k] + 1.0
    is_c = canary[order]
    n1 = np.bincount(k[is_c], minlength=keys).astype(float)
    n2 = np.bincount(k[~is_c], minlength=keys).astype(float)
    r1 = np.bincount(k[is_c], weights=rank[is_c], minlength=keys)
    u = r1 - n1 * (n1 + 1) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (u - n1 * n2 / 2 - 0.5) / np.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
    p = np.where((n1 > 0) & (n2 > 0), stats.norm.sf(z), 1.0)
    p95 = []
    for side in (True, False):
        sel = order[canary[order] == side]
        ks = key[sel]
        start = np.searchsorted(ks, np.arange(keys))
        count = np.bincount(ks, minlength=keys)
        idx = np.clip(start + np.ceil(0.95 * count).astype(int) - 1, 0, max(sel.size - 1, 0))
        p95.append(np.where(count > 0, latency[sel][idx] if sel.size else np.nan, np.nan))
    return p, p95[0], p95[1]


def outcomes(spec: OldSpec, iv: Intervals, mw_p: np.ndarray, p95_c: np.ndarray, p95_s: np.ndarray) -> np.ndarray:
    """Every gate's outcome per seed and interval: (gates, seeds, intervals)."""
    a = spec.alpha / spec.tested
    c = {f: getattr(iv, f)[:, 0] for f in ("requests", "errors", "flagged", "feedback_n", "feedback_sum", "cost")}
    s = {f: getattr(iv, f)[:, 1] for f in ("requests", "errors", "flagged", "feedback_n", "feedback_sum", "cost")}
    enough = (c["requests"] >= spec.min_samples) & (s["requests"] >= spec.min_samples)
    out = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for gate, x in ((spec.error_rate, "errors"), (spec.safety_finding_rate, "flagged")):
            diff = c[x] / c["requests"] - s[x] / s["requests"]
            p = _two_proportion_p(c[x], c["requests"], s[x], s["requests"])
            out.append(np.where(enough, _outcome(diff, p, gate, a), INSUFFICIENT))
        ratio = p95_c / p95_s
        out.append(np.where(enough, _outcome(ratio, mw_p, spec.p95_latency_ratio, a), INSUFFICIENT))
        fb_enough = (c["feedback_n"] >= spec.min_samples) & (s["feedback_n"] >= spec.min_samples)
        m_c, m_s = c["feedback_sum"] / c["feedback_n"], s["feedback_sum"] / s["feedback_n"]
        se = np.sqrt(m_c * (1 - m_c) / c["feedback_n"] + m_s * (1 - m_s) / s["feedback_n"])
        p = np.where(se > 0, stats.norm.sf((m_s - m_c) / se), np.where(m_s > m_c, 0.0, 1.0))
        out.append(np.where(fb_enough, _outcome(m_s - m_c, p, spec.feedback_score_delta, a), INSUFFICIENT))
        out.append(np.where(iv.drift_reported, PASS, INSUFFICIENT))  # the simulated drift share is 0 (no drift)
        ratio = (c["cost"] / c["requests"]) / (s["cost"] / s["requests"])
        wc, ws = iv.window_cost[:, 0], iv.window_cost[:, 1]
        p = stats.ttest_ind(wc, ws, axis=-1, equal_var=False, alternative="greater", nan_policy="omit").pvalue
        p = np.where(np.isnan(p), 0.0, np.asarray(p))
        out.append(np.where(enough, _outcome(ratio, p, spec.cost_per_request_ratio, a), INSUFFICIENT))
    return np.stack(out)


def decide(spec: OldSpec, gate_outcomes: np.ndarray, enough: np.ndarray, promote: bool = True,
           ) -> tuple[np.ndarray, np.ndarray]:
    """(action, interval index) per seed: 1 rollback, 2 promote (the last step below 100%), 0 none; -1 when none."""
    _, seeds, intervals = gate_outcomes.shape
    action = np.zeros(seeds, dtype=int)
    at = np.full(seeds, -1)
    for i in range(seeds):
        failures = 0
        for k in range(intervals):
            if not enough[i, k]:
                continue
            o = gate_outcomes[:, i, k]
            if (o == SEVERE).any() or ((o == FAIL).any() and failures + 1 >= spec.failure_threshold):
                action[i], at[i] = 1, k
                break
            if (o == FAIL).any():
                failures += 1
            elif (o == INSUFFICIENT).any():
                continue
            elif (o == INCONCLUSIVE).any():
                failures = 0
            elif promote:
                action[i], at[i] = 2, k
                break
            else:
                failures = 0
    return action, at
