"""Benchmark: how fast the judge rolls back a bad canary, and how often it rolls back or promotes a healthy one.

One command: ``python bench/rollback.py [--seeds 200] [--weights 10 5]``. For each scenario, canary weight
and seed it simulates every request at ``--rate`` requests/s for ``--duration`` seconds (the router's random
split at the canary weight; latency, errors, safety findings, feedback and cost drawn per request from each
side's distribution), aggregates them into 1-second windows per side (counts, slow requests, feedback and cost
sums and sums of squares, as ``DeploymentWindow`` carries them), and runs the judge's real statistics and
decision rule (services.rollout.evidence and services.rollout.decision.verdict) after every window, all seeds
at once. The same simulated requests, in 10-second windows, go through the interval-based judge this project
had before (bench/interval_judge.py: 30-second intervals, fixed-horizon tests, 2 failed intervals to roll back),
so the two are compared on the same seeds.

Reported per scenario: how many seeds rolled back, promoted or stayed undecided, and the median and 95th
percentile of the event time from the window of the canary's first request to the decision. Healthy canaries:
the false rollbacks with a 95% (Clopper-Pearson) interval, and the promotion times; plus a 'monitor only' run
in which nothing is promoted and the rollback tests watch the healthy canary for the whole duration, which is
what an anytime-valid test must survive (the old judge's repeated fixed-horizon tests do not).

What is simulated and what is not: the traffic is (no model, no pipeline). Stable: lognormal latency (median
400 ms, sigma 0.35), 1% errors, no safety findings, feedback on half the requests (Beta, mean 0.9), cost from
Poisson(60) tokens. The drift monitor is not simulated: the canary's drift share is reported (as 0, no drift)
once it has served ``--drift-after`` completions, and every as many after; that is when the drift gate can pass.
The pipeline (window publication, judge and router reaction) adds its own delay to the times here; the
end-to-end bench (bench/rollback_e2e.py) measures that.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import interval_judge as old

from schemas.aggregates import latency_bucket, latency_bucket_upper
from services.rollout.decision import HOLD, PASS, ROLLBACK, TIMEOUT, verdict
from services.rollout.evidence import Evidence, SideWindow, plan_gates
from services.rollout.spec import RolloutSpec

PRICE_PER_TOKEN = 2e-6
FEEDBACK_SHARE = 0.5
SCORE_CONCENTRATION = 10.0


@dataclass(frozen=True)
class Behaviour:
    """Per-request distributions of one deployment."""

    latency_median_ms: float = 400.0
    latency_sigma: float = 0.35
    tail_share: float = 0.0
    tail_factor: float = 1.0
    error_rate: float = 0.01
    pii_rate: float = 0.0
    score_mean: float = 0.9
    tokens_mean: float = 60.0


STABLE = Behaviour()
SCENARIOS: dict[str, tuple[Behaviour, str]] = {
    "healthy": (Behaviour(), ""),
    "latency x3": (Behaviour(latency_median_ms=1200.0), "median <= 3 s, p95 <= 10 s"),
    "PII in 30% of answers": (Behaviour(pii_rate=0.30), "median <= 5 s, p95 <= 10 s"),
    "errors 10% vs 1%": (Behaviour(error_rate=0.10), "median <= 15 s"),
    "tail: 20% of requests 4x slower": (Behaviour(tail_share=0.2, tail_factor=4.0), "median <= 10 s"),
    "feedback 0.9 -> 0.7": (Behaviour(score_mean=0.7), "report"),
    "cost x2": (Behaviour(tokens_mean=120.0), "report"),
}


def slow_threshold_ms(b: Behaviour, quantile: float = 0.95) -> float:
    """The slow threshold the judge fixes from stable's recent latency: the bucket bound at its p95."""
    p = b.latency_median_ms * math.exp(b.latency_sigma * stats.norm.ppf(quantile))
    return latency_bucket_upper(latency_bucket(p))


def new_spec(weight_pct: float, slow_ms: float) -> RolloutSpec:
    return RolloutSpec.model_validate({
        "alias": "chat", "stable": "stable", "canary": "canary", "steps": [weight_pct, 100], "alpha": 0.01,
        "min_samples": 100, "min_step_seconds": 30, "max_step_seconds": 1800,
        "gates": {
            "error_rate": {"max_ratio": 1.0, "margin": 0.03},
            "safety_finding_rate": {"max_ratio": 1.0, "margin": 0.02},
            "slow_request_rate": {"max_ratio": 1.25, "margin": 0.03, "latency_ms": slow_ms},
            "feedback_score_delta": {"threshold": 0.1},
            "cost_per_request_ratio": {"threshold": 1.3},
            "drift_share": {"threshold": 0.5},
        },
    })


@dataclass
class Traffic:
    """Per-second, per-side sums of one scenario's simulated requests, for every seed: arrays (seeds, 2, seconds),
    side 0 the canary and 1 stable; plus each request's latency, for the old judge's samples."""

    requests: np.ndarray
    errors: np.ndarray
    flagged: np.ndarray
    slow: np.ndarray
    feedback_n: np.ndarray
    feedback_sum: np.ndarray
    feedback_sumsq: np.ndarray
    cost_sum: np.ndarray
    cost_sumsq: np.ndarray
    latency: np.ndarray
    offsets: np.ndarray
    """offsets[s, side, t]: index of the first request of (s, side, t) in ``latency`` (shape (seeds, 2, T + 1))."""
    drift: np.ndarray
    """The canary's drift report per second (NaN: none)."""


def simulate(canary: Behaviour, weight: float, seeds: int, seconds: int, rate: float, slow_ms: float,
             drift_after: int, seed: int) -> Traffic:
    rng = np.random.default_rng(seed)
    total = rng.poisson(rate, size=(seeds, seconds))
    n_c = rng.binomial(total, weight)
    counts = np.stack([n_c, total - n_c], axis=1)  # (S, 2, T)
    flat = counts.ravel()
    segment = np.repeat(np.arange(flat.size), flat)
    side = (segment // seconds) % 2
    pick = [canary, STABLE]

    def per_side(attr: str) -> np.ndarray:
        return np.where(side == 0, getattr(canary, attr), getattr(STABLE, attr))

    latency = rng.lognormal(np.log(per_side("latency_median_ms")), per_side("latency_sigma"))
    latency *= np.where(rng.random(latency.size) < per_side("tail_share"), per_side("tail_factor"), 1.0)
    slow = np.bincount(segment, weights=latency > slow_ms, minlength=flat.size).reshape(counts.shape)

    def side_rate(attr: str) -> np.ndarray:
        return np.array([getattr(b, attr) for b in pick])[None, :, None]

    errors = rng.binomial(counts, side_rate("error_rate"))
    flagged = rng.binomial(counts, side_rate("pii_rate"))
    has_fb = rng.random(latency.size) < FEEDBACK_SHARE
    mean = per_side("score_mean")
    score = rng.beta(mean * SCORE_CONCENTRATION, (1 - mean) * SCORE_CONCENTRATION)
    fb = [np.bincount(segment, weights=has_fb * score ** k, minlength=flat.size).reshape(counts.shape) for k in (0, 1, 2)]
    cost = rng.poisson(per_side("tokens_mean")) * PRICE_PER_TOKEN
    cost_sum = np.bincount(segment, weights=cost, minlength=flat.size).reshape(counts.shape)
    cost_sumsq = np.bincount(segment, weights=cost * cost, minlength=flat.size).reshape(counts.shape)
    offsets = np.concatenate([[0], np.cumsum(flat)])
    block = (np.arange(seeds)[:, None, None] * 2 + np.arange(2)[None, :, None]) * seconds
    starts = offsets[block + np.arange(seconds + 1)[None, None, :]]
    cum_canary = np.cumsum(n_c, axis=1)
    reports = np.diff(cum_canary // drift_after, axis=1, prepend=0) > 0
    drift = np.where(reports, 0.0, np.nan)
    return Traffic(counts.astype(float), errors.astype(float), flagged.astype(float), slow, fb[0], fb[1], fb[2],
                   cost_sum, cost_sumsq, latency, starts, drift)


def side_window(tr: Traffic, side: int, t: int) -> SideWindow:
    n = tr.requests[:, side, t]
    drift = tr.drift[:, t] if side == 0 else np.full(n.shape, np.nan)
    return SideWindow(requests=n, errors=tr.errors[:, side, t], flagged=tr.flagged[:, side, t],
                      slow={"slow_request_rate": tr.slow[:, side, t]}, timed={"slow_request_rate": n},
                      feedback_n=tr.feedback_n[:, side, t], feedback_sum=tr.feedback_sum[:, side, t],
                      feedback_sumsq=tr.feedback_sumsq[:, side, t], priced=n, cost_sum=tr.cost_sum[:, side, t],
                      cost_sumsq=tr.cost_sumsq[:, side, t], drift=drift)


def first_request(tr: Traffic) -> np.ndarray:
    """The second of each seed's first canary request."""
    has = tr.requests[:, 0, :] > 0
    return np.where(has.any(axis=1), has.argmax(axis=1), 0)


def run_new(spec: RolloutSpec, tr: Traffic, weight: float, promote: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(verdict code, event seconds) per seed: the sequential judge after every 1-second window."""
    seeds, _, seconds = tr.requests.shape
    ev = Evidence(plan_gates(spec), spec.alpha, shape=(seeds,))
    code = np.full(seeds, HOLD)
    when = np.full(seeds, np.nan)
    for t in range(seconds):
        canary, stable = side_window(tr, 0, t), side_window(tr, 1, t)
        ev.add_bad("canary", canary, weight)
        ev.add_bad("stable", stable, weight)
        ev.add_step("canary", canary, float(t))
        ev.add_step("stable", stable, float(t))
        now = verdict(spec, ev.evaluate(), ev.requests["canary"], ev.requests["stable"], np.full(seeds, t + 1.0))
        if not promote:
            now = np.where(now == ROLLBACK, ROLLBACK, HOLD)
        new = (code == HOLD) & (now != HOLD)
        code[new] = now[new]
        when[new] = t + 1.0
        if not (code == HOLD).any():
            break
    return code, when - first_request(tr)


def run_old(spec: old.OldSpec, tr: Traffic, promote: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(verdict code, event seconds) per seed: the interval judge at the end of every interval."""
    seeds, _, seconds = tr.requests.shape
    per, win = spec.interval_s, spec.window_s
    intervals = seconds // per

    def by_interval(x: np.ndarray) -> np.ndarray:
        return x[:, :, :intervals * per].reshape(seeds, 2, intervals, per).sum(axis=3)

    windows = tr.requests[:, :, :intervals * per].reshape(seeds, 2, intervals, per // win, win).sum(axis=4)
    window_cost = tr.cost_sum[:, :, :intervals * per].reshape(seeds, 2, intervals, per // win, win).sum(axis=4)
    with np.errstate(divide="ignore", invalid="ignore"):
        window_cost = np.where(windows > 0, window_cost / windows, np.nan)
    reported = np.cumsum(~np.isnan(tr.drift), axis=1)[:, per - 1::per][:, :intervals] > 0
    iv = old.Intervals(by_interval(tr.requests), by_interval(tr.errors), by_interval(tr.flagged),
                       by_interval(tr.feedback_n), by_interval(tr.feedback_sum), by_interval(tr.cost_sum), window_cost,
                       reported)
    # every request's (seed, interval) and side, in the order of tr.latency: (seed, side, second)
    counts = tr.requests.astype(np.int64).ravel()
    cell = np.repeat(np.arange(counts.size), counts)
    second = cell % seconds
    seed = cell // (2 * seconds)
    keep = second < intervals * per
    key = seed[keep] * intervals + second[keep] // per
    canary = ((cell // seconds) % 2 == 0)[keep]
    p, p95_c, p95_s = old.latency_tests(tr.latency[keep], key, canary, seeds * intervals)
    gates = old.outcomes(spec, iv, p.reshape(seeds, intervals), p95_c.reshape(seeds, intervals),
                         p95_s.reshape(seeds, intervals))
    enough = (iv.requests[:, 0] >= spec.min_samples) & (iv.requests[:, 1] >= spec.min_samples)
    action, at = old.decide(spec, gates, enough, promote)
    code = np.select([action == 1, action == 2], [ROLLBACK, PASS], HOLD)
    when = np.where(at >= 0, (at + 1.0) * per, np.nan) - first_request(tr)
    return code, when


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def summary(code: np.ndarray, when: np.ndarray, target: int) -> tuple[str, str, str, str, str]:
    n = code.size
    hit = code == target
    times = when[hit]
    med = f"{np.median(times):.0f}" if times.size else "-"
    p95 = f"{np.percentile(times, 95):.0f}" if times.size else "-"
    rolled = int(((code == ROLLBACK) | (code == TIMEOUT)).sum())
    return f"{rolled}/{n}", f"{int((code == PASS).sum())}/{n}", f"{int((code == HOLD).sum())}/{n}", med, p95


def stack(traffics: list[Traffic]) -> Traffic:
    """Many scenarios' seeds as one batch for the new judge (its per-second sums only; no latencies)."""
    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(t, name) for t in traffics])

    fields = ("requests", "errors", "flagged", "slow", "feedback_n", "feedback_sum", "feedback_sumsq", "cost_sum",
              "cost_sumsq")
    return Traffic(*(cat(f) for f in fields), np.zeros(0), np.zeros((0, 2, 1), dtype=np.int64), cat("drift"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second, both deployments together")
    parser.add_argument("--weights", type=float, nargs="+", default=[10.0, 5.0], help="canary weights, percent")
    parser.add_argument("--healthy-duration", type=int, default=600, help="seconds simulated per healthy run")
    parser.add_argument("--bad-duration", type=int, default=180, help="seconds simulated per bad-canary run")
    parser.add_argument("--drift-after", type=int, default=200,
                        help="canary completions per drift report (the drift monitor's window; 500 today)")
    parser.add_argument("--slow-quantile", type=float, default=0.99, help="stable's latency quantile for 'slow'")
    parser.add_argument("--no-old", action="store_true", help="skip the interval-based judge")
    parser.add_argument("--seed", type=int, default=20260301)
    args = parser.parse_args()

    slow_ms = slow_threshold_ms(STABLE, args.slow_quantile)
    old_spec = old.OldSpec()
    began = time.monotonic()
    print(f"{args.rate:.0f} req/s, {args.seeds} seeds per scenario, healthy runs {args.healthy_duration} s, bad "
          f"runs {args.bad_duration} s; alpha 0.01; slow = above {slow_ms:.0f} ms (the bucket bound at stable's "
          f"p{args.slow_quantile * 100:g}); a drift report every {args.drift_after} canary completions")
    print("new: the sequential judge after every 1-second window; old: the interval judge, 30-second intervals "
          f"of 10-second windows, alpha {old_spec.alpha}, {old_spec.failure_threshold} failed intervals to roll back")
    for pct in args.weights:
        weight = pct / 100.0
        spec = new_spec(pct, slow_ms)
        traffic = {name: simulate(b, weight, args.seeds,
                                  args.healthy_duration if name == "healthy" else args.bad_duration, args.rate,
                                  slow_ms, args.drift_after, args.seed + 1000 * i + int(pct * 10))
                   for i, (name, (b, _)) in enumerate(SCENARIOS.items())}
        bad = [n for n in SCENARIOS if n != "healthy"]
        new: dict[str, tuple[np.ndarray, np.ndarray]] = {"healthy": run_new(spec, traffic["healthy"], weight)}
        code, when = run_new(spec, stack([traffic[n] for n in bad]), weight)
        for i, n in enumerate(bad):
            new[n] = code[i * args.seeds:(i + 1) * args.seeds], when[i * args.seeds:(i + 1) * args.seeds]
        monitor = {"new": run_new(spec, traffic["healthy"], weight, promote=False)}
        olds: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if not args.no_old:
            olds = {n: run_old(old_spec, traffic[n]) for n in SCENARIOS}
            monitor["old"] = run_old(old_spec, traffic["healthy"], promote=False)

        print(f"\n## canary at {pct:g}% (steps {spec.steps}); times: event seconds from the window of the canary's "
              "first request to the decision")
        head = f"{'scenario':<33} {'judge':<5} {'rolled back':>11} {'promoted':>9} {'undecided':>9} {'median s':>8} " \
               f"{'p95 s':>6}  target"
        print(head)
        print("-" * len(head))
        for name, (_, target) in SCENARIOS.items():
            wanted = PASS if name == "healthy" else ROLLBACK
            medians = {}
            for label, (code, when) in [("new", new[name])] + ([("old", olds[name])] if olds else []):
                rolled, promoted, undecided, med, p95 = summary(code, when, wanted)
                medians[label] = med
                note = target if label == "new" else ""
                if name == "healthy":
                    k = int(((code == ROLLBACK) | (code == TIMEOUT)).sum())
                    lo, hi = clopper_pearson(k, code.size)
                    note = (f"false rollbacks {k}/{code.size} = {100 * k / code.size:.1f}% [95% CI {100 * lo:.1f}-"
                            f"{100 * hi:.1f}%]" + ("; target: promoted within 120 s" if label == "new" else ""))
                print(f"{name:<33} {label:<5} {rolled:>11} {promoted:>9} {undecided:>9} {med:>8} {p95:>6}  {note}")
            if len(medians) == 2 and "-" not in medians.values():
                print(f"{'':<39}new median / old median = {float(medians['new']) / float(medians['old']):.2f}")
            if name == "healthy":
                for label, (code, _) in monitor.items():
                    k = int((code == ROLLBACK).sum())
                    lo, hi = clopper_pearson(k, code.size)
                    print(f"{'  monitor only (no promotion)':<33} {label:<5} {k:>7}/{code.size} false rollbacks in "
                          f"{args.healthy_duration} s = {100 * k / code.size:.1f}% [95% CI {100 * lo:.1f}-{100 * hi:.1f}%]")
    print(f"\nran in {time.monotonic() - began:.0f} s (on a shared machine: timings of the run itself are indicative)")


if __name__ == "__main__":
    main()
