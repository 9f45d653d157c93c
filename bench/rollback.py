"""Benchmark: how fast the judge rolls back a bad canary, and how often it rolls back a healthy one.

One command: ``python bench/rollback.py [--seeds 20] [--rate 50]``. For each scenario and seed it
simulates every request at ``--rate`` requests/s (stable and canary drawn from their own distributions,
the canary's share following the rollout's steps), aggregates them into 10-second ``DeploymentWindow``
events exactly as the stream worker publishes them (counts, a bounded latency sample, findings, feedback,
cost), and runs the real gate statistics and decision code (services.rollout) interval by interval. It
reports, over the seeds, the event time from the canary's first request to the rollback decision, and the
outcome of healthy canaries (false rollbacks). Event time is what the judge decides on; the pipeline adds
its own delay on top (window length + publication grace + judge/router reaction), printed from the spec.

Not simulated: the model. A real deployment's distributions differ; this measures the judge's detection
delay and false-rollback rate on given distributions, which is what the gates and thresholds control.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas.aggregates import MAX_LATENCY_SAMPLE, DeploymentWindow  # noqa: E402
from services.rollout.decision import Progress, decide  # noqa: E402
from services.rollout.gates import SideStats  # noqa: E402
from services.rollout.spec import RolloutSpec  # noqa: E402

WINDOW_S = 10
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = RolloutSpec.model_validate({
    "alias": "chat", "stable": "stable", "canary": "canary", "steps": [10, 25, 50, 100],  # 5% gives <50 feedback per interval
    "analysis_interval_seconds": 30, "min_samples": 50, "failure_threshold": 2, "alpha": 0.05,
    "gates": {
        "error_rate": {"comparison": "difference", "threshold": 0.02, "severe_threshold": 0.2},
        "p95_latency_ratio": {"threshold": 1.5, "severe_threshold": 3.0},
        "safety_finding_rate": {"comparison": "difference", "threshold": 0.02},
        "feedback_score_delta": {"threshold": 0.1},
        "cost_per_request_ratio": {"threshold": 1.3},
    },
})


@dataclass(frozen=True)
class Behaviour:
    """Per-request distributions of one deployment."""

    latency_median_ms: float = 400.0
    error_rate: float = 0.01
    pii_rate: float = 0.01
    score_mean: float = 0.8
    tokens_mean: float = 60.0


STABLE = Behaviour()
SCENARIOS = {
    "latency x3": Behaviour(latency_median_ms=1200.0),
    "PII leak (30% of answers)": Behaviour(pii_rate=0.30),
    "error rate 10%": Behaviour(error_rate=0.10),
    "healthy": Behaviour(),
}


def simulate_window(rng: np.random.Generator, name: str, b: Behaviour, n: int, start: datetime) -> DeploymentWindow:
    latency = rng.lognormal(np.log(b.latency_median_ms), 0.35, size=n)
    errors = int((rng.random(n) < b.error_rate).sum())
    flagged = int((rng.random(n) < b.pii_rate).sum())
    scores = np.clip(rng.normal(b.score_mean, 0.15, size=n), 0, 1)
    feedback_n = int(n * 0.5)  # half the requests get feedback
    tokens = rng.poisson(b.tokens_mean, size=n)
    sample = latency if n <= MAX_LATENCY_SAMPLE else rng.choice(latency, MAX_LATENCY_SAMPLE, replace=False)
    return DeploymentWindow(
        deployment_id=name, window_start=start, window_seconds=WINDOW_S, requests=n, errors=errors,
        completion_tokens=int(tokens.sum()), latency_sample_ms=sample.tolist(), safety_findings=flagged,
        safety_flagged_requests=flagged, feedback_count=feedback_n, feedback_score_sum=float(scores[:feedback_n].sum()),
        cost_total=float(tokens.sum()) * 1e-6, priced_requests=n,
    )


def run_once(canary: Behaviour, seed: int, rate: float, max_intervals: int = 40) -> tuple[str, float]:
    """(final action, event seconds from the canary's first request to it)."""
    rng = np.random.default_rng(seed)
    progress = Progress("bench", 1)
    per_interval = int(SPEC.analysis_interval_seconds // WINDOW_S)
    for k in range(max_intervals):
        share = SPEC.canary_share(progress.step)
        c_windows, s_windows = [], []
        for j in range(per_interval):
            start = T0 + timedelta(seconds=(k * per_interval + j) * WINDOW_S)
            total = rng.poisson(rate * WINDOW_S)
            n_canary = int(rng.binomial(total, share))
            c_windows.append(simulate_window(rng, "canary", canary, n_canary, start))
            s_windows.append(simulate_window(rng, "stable", STABLE, total - n_canary, start))
        d = decide(SPEC, progress, SideStats.from_windows(c_windows), SideStats.from_windows(s_windows))
        progress = d.progress
        if d.event.action in ("rollback", "promote"):
            return d.event.action, (k + 1) * SPEC.analysis_interval_seconds
    return "undecided", max_intervals * SPEC.analysis_interval_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second, both deployments together")
    args = parser.parse_args()

    print(f"spec: steps {SPEC.steps} %, interval {SPEC.analysis_interval_seconds:.0f}s, min {SPEC.min_samples} per side, "
          f"rollback after {SPEC.failure_threshold} failed intervals (severe: at once); {args.rate:.0f} req/s; "
          f"{args.seeds} seeds per scenario")
    print(f"\n{'scenario':<28} {'rollback':>8} {'promote':>8} {'undecided':>9} {'median s':>9} {'max s':>7}")
    for name, canary in SCENARIOS.items():
        results = [run_once(canary, seed, args.rate) for seed in range(args.seeds)]
        target = "promote" if name == "healthy" else "rollback"
        times = [t for action, t in results if action == target]
        count = {a: sum(1 for r, _ in results if r == a) for a in ("rollback", "promote", "undecided")}
        med = f"{statistics.median(times):.0f}" if times else "-"
        mx = f"{max(times):.0f}" if times else "-"
        print(f"{name:<28} {count['rollback']:>8} {count['promote']:>8} {count['undecided']:>9} {med:>9} {mx:>7}")
    print("\ntimes are event seconds from the canary's first request to the decision (to 'promote' for healthy);"
          f"\nthe pipeline adds about one window ({WINDOW_S}s) + the stream worker's publication grace + <1s to the router."
          "\nfalse rollbacks = the 'rollback' column of 'healthy'.")


if __name__ == "__main__":
    main()
