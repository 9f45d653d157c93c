"""How long one Evidently drift check takes per window size (to pick the agent's check cadence).

``python bench/drift_check.py`` builds synthetic feature frames of 200/1000/5000 rows per window
and times :func:`run_drift_check` (Evidently only; text encoding is excluded and timed separately
by the caller's encoder choice). Both regimes are timed at every size by moving ``large_window``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd
from pydantic import BaseModel

from streams.drift.check import run_drift_check
from streams.drift.features import DEFAULT_EMBEDDING_COLUMNS, feature_columns


class CheckTiming(BaseModel):
    """Median and max wall time of one check at one window size and regime."""

    rows: int
    regime: str
    median_s: float
    max_s: float
    repeats: int


def synthetic_features(rows: int, seed: int, scale: float = 1.0) -> pd.DataFrame:
    """A features frame shaped like the monitor's (random values, realistic marginals)."""
    rng = np.random.default_rng(seed)
    numerical, _ = feature_columns(DEFAULT_EMBEDDING_COLUMNS)
    frame = pd.DataFrame({c: rng.normal(0.0, 0.3, rows) for c in numerical if c.startswith("emb_")})
    frame["prompt_tokens"] = np.round(rng.lognormal(5.0, 0.5, rows))
    frame["completion_tokens"] = np.round(rng.lognormal(4.0, 0.5, rows) * scale)
    frame["ttft_ms"] = rng.lognormal(5.0, 0.4, rows) * scale
    frame["total_ms"] = frame["ttft_ms"] + frame["completion_tokens"] * rng.lognormal(3.0, 0.2, rows) * scale
    frame["output_chars"] = frame["completion_tokens"] * rng.uniform(3.0, 6.0, rows)
    frame["non_ascii_share"] = rng.beta(0.5, 20.0, rows)
    frame["finish_reason"] = rng.choice(["stop", "length", "error"], rows, p=[0.9, 0.08, 0.02])
    return frame


def time_checks(sizes: tuple[int, ...] = (200, 1000, 5000), repeats: int = 3) -> list[CheckTiming]:
    """Time run_drift_check for each size in both regimes (after one warm-up run)."""
    numerical, categorical = feature_columns(DEFAULT_EMBEDDING_COLUMNS)
    warm = synthetic_features(100, 0)
    run_drift_check(warm, warm, numerical, categorical)
    results: list[CheckTiming] = []
    for rows in sizes:
        reference, current = synthetic_features(rows, 1), synthetic_features(rows, 2, scale=1.5)
        for regime, large_window in (("small", rows), ("large", rows - 1)):
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                report = run_drift_check(reference, current, numerical, categorical, large_window=large_window)
                times.append(time.perf_counter() - started)
                assert report.regime == regime
            results.append(
                CheckTiming(rows=rows, regime=regime, median_s=statistics.median(times), max_s=max(times), repeats=repeats)
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000, 5000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for timing in time_checks(tuple(args.sizes), args.repeats):
        print(f"{timing.rows:>6} rows/window  {timing.regime:<5}  median {timing.median_s:.3f} s  max {timing.max_s:.3f} s")


if __name__ == "__main__":
    main()
