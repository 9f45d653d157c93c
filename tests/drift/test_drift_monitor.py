"""DriftMonitor + Evidently: shifted windows flagged, same-distribution windows not, method by window size."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from schemas.completions import Completion, CompletionError
from streams.drift import (
    DriftMonitor,
    HashingEncoder,
    InsufficientData,
    choose_methods,
    features_frame,
    run_drift_check,
)

WORDS = [
    "the", "model", "answer", "request", "cost", "token", "latency", "user", "data", "system", "question", "result",
    "value", "stream", "window", "report", "table", "query", "error", "retry", "cache", "price", "budget", "tenant", "deploy",
]
ACCENTED = ["café", "naïve", "über", "résumé", "日本", "данные"]
ENCODER = HashingEncoder(dim=16)
SHIFTED = ["completion_tokens", "total_ms", "ttft_ms", "output_chars"]


def make_completions(
    n: int, seed: int, length_scale: float = 1.0, latency_scale: float = 1.0, streamed: bool = True
) -> list[Completion]:
    """Synthetic traffic of one deployment; scales shift completion length and latency."""
    rng = np.random.default_rng(seed)
    out: list[Completion] = []
    for i in range(n):
        if rng.random() < 0.02:
            out.append(Completion(
                request_id=f"r{i}", tenant="t", deployment_id="dep", finish_reason="error",
                prompt_tokens=int(rng.lognormal(5.0, 0.5)), total_ms=float(rng.uniform(1, 10)),
                error=CompletionError(kind="overloaded", message="busy"),
            ))
            continue
        tokens = max(1, int(rng.lognormal(4.0, 0.5) * length_scale))
        n_words = max(1, int(tokens * 0.75))
        words = [str(ACCENTED[rng.integers(len(ACCENTED))]) if rng.random() < 0.03 else str(WORDS[rng.integers(len(WORDS))])
                 for _ in range(n_words)]
        ttft = float(rng.lognormal(5.0, 0.4)) * latency_scale
        out.append(Completion(
            request_id=f"r{i}", tenant="t", deployment_id="dep",
            finish_reason="length" if rng.random() < 0.08 else "stop",
            text=" ".join(words), prompt_tokens=int(rng.lognormal(5.0, 0.5)), completion_tokens=tokens,
            ttft_ms=ttft if streamed else None,
            total_ms=ttft + tokens * float(rng.lognormal(3.0, 0.2)) * latency_scale,
        ))
    return out


def _monitor_check(ref: list[Completion], cur: list[Completion]) -> DriftMonitor:
    monitor = DriftMonitor(ENCODER, reference_size=len(ref), current_size=len(cur))
    for c in ref + cur:
        monitor.add(c)
    return monitor


def test_method_selection_by_window_size() -> None:
    assert choose_methods(1000, 5000) == ("small", "ks", "chisquare")
    assert choose_methods(1001, 1001) == ("large", "wasserstein", "jensenshannon")
    assert choose_methods(200, 200, large_window=100) == ("large", "wasserstein", "jensenshannon")


@pytest.mark.parametrize(
    ("size", "regime", "num_method", "cat_method"),
    [(300, "small", "ks", "chisquare"), (1200, "large", "wasserstein", "jensenshannon")],
)
def test_shifted_window_drifts_and_same_distribution_does_not(
    size: int, regime: str, num_method: str, cat_method: str
) -> None:
    reference = make_completions(size, seed=1)
    same = _monitor_check(reference, make_completions(size, seed=2)).check()
    shifted = _monitor_check(reference, make_completions(size, seed=3, length_scale=3.0, latency_scale=3.0)).check()

    for report in (same, shifted):
        assert report.regime == regime
        assert report.reference_size == report.current_size == size
        assert report.encoder == ENCODER.name
        assert {f.method for name, f in report.per_feature.items() if name != "finish_reason"} == {num_method}
        assert report.per_feature["finish_reason"].method == cat_method
        assert len(report.per_feature) == 11 and report.skipped == []
        # Evidently's dataset-level share agrees with its per-column verdicts.
        assert report.drift_share == pytest.approx(np.mean([f.drifted for f in report.per_feature.values()]))

    assert shifted.dataset_drifted
    assert all(shifted.per_feature[name].drifted for name in SHIFTED)
    assert not shifted.per_feature["prompt_tokens"].drifted  # prompts were not shifted
    assert not same.dataset_drifted
    assert not any(same.per_feature[name].drifted for name in SHIFTED)
    if regime == "small":  # p-values: shifted tiny, unshifted not
        assert shifted.per_feature["total_ms"].score < 1e-6 < 0.05 < same.per_feature["total_ms"].score
    else:  # distances: shifted large, unshifted below the 0.1 threshold
        assert shifted.per_feature["total_ms"].score > 0.5 > 0.1 > same.per_feature["total_ms"].score


def test_current_window_slides() -> None:
    monitor = DriftMonitor(ENCODER, reference_size=200, current_size=200)
    for c in make_completions(200, seed=1) + make_completions(200, seed=4, length_scale=3.0, latency_scale=3.0):
        monitor.add(c)
    assert monitor.check().dataset_drifted
    for c in make_completions(200, seed=5):  # pushes every shifted row out of the window
        monitor.add(c)
    assert monitor.sizes() == (200, 200)
    assert not monitor.check().dataset_drifted


def test_pinned_reference_and_insufficient_data() -> None:
    monitor = DriftMonitor(ENCODER, reference_size=500, current_size=150)
    with pytest.raises(InsufficientData):
        monitor.check()
    monitor.pin_reference(features_frame(make_completions(400, seed=1), ENCODER))
    assert monitor.reference_ready
    monitor.add(make_completions(1, seed=9)[0])
    with pytest.raises(InsufficientData):  # current window below min_rows
        monitor.check()
    for c in make_completions(150, seed=6, latency_scale=3.0, length_scale=3.0):
        monitor.add(c)
    report = monitor.check()
    assert (report.reference_size, report.current_size) == (400, 150)
    assert report.dataset_drifted
    with pytest.raises(ValueError):
        monitor.pin_reference(pd.DataFrame({"total_ms": [1.0]}))


def test_feature_without_values_is_skipped() -> None:
    ref = features_frame(make_completions(100, seed=1), ENCODER)
    cur = features_frame(make_completions(100, seed=2, streamed=False), ENCODER)
    assert cur["ttft_ms"].isna().all() and not math.isnan(ref["ttft_ms"].iloc[0])
    numerical = [c for c in ref.columns if c != "finish_reason"]
    report = run_drift_check(ref, cur, numerical, ["finish_reason"])
    assert report.skipped == ["ttft_ms"]
    assert "ttft_ms" not in report.per_feature and len(report.per_feature) == 10


def test_check_in_a_thread_while_adding() -> None:
    monitor = DriftMonitor(ENCODER, reference_size=150, current_size=150)
    for c in make_completions(300, seed=1):
        monitor.add(c)
    more = make_completions(400, seed=12)
    with ThreadPoolExecutor(max_workers=1) as pool:  # as the agent does: check off the event loop
        pending = [pool.submit(monitor.check) for _ in range(2)]
        for c in more:
            monitor.add(c)
        reports = [p.result(timeout=60) for p in pending]
    assert all(r.reference_size == 150 and r.current_size == 150 for r in reports)
    assert monitor.seen == 700 and monitor.sizes() == (150, 150)
