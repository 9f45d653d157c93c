"""The judge's anytime-valid statistics, checked by simulation: false alarms and miscoverage stay below alpha when
the statistic is looked at after every window, and a real regression is found."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from services.rollout.sequential import asymptotic
from services.rollout.sequential.betting import BettingSums, fan_g
from services.rollout.sequential.counts import RateRatioTest

RUNS = 2000


def _binomial_ceiling(alpha: float, runs: int = RUNS) -> float:
    """The largest false-alarm share that is still consistent (at 99.9%) with a true rate of alpha."""
    return float(stats.binom.ppf(0.999, runs, alpha)) / runs


def _events(rng: np.random.Generator, windows: int, canary_rate: float, stable_rate: float,
            weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(canary bad, stable bad) per run and window, 50 req/s routed at each window's canary weight."""
    total = rng.poisson(50, size=(RUNS, windows))
    n_c = rng.binomial(total, weights)
    return rng.binomial(n_c, canary_rate), rng.binomial(total - n_c, stable_rate)


def test_rate_ratio_false_alarms_stay_below_alpha_at_the_null_boundary() -> None:
    """The canary's rate is exactly max_ratio x stable's; the canary weight changes by steps; checked every window."""
    rng = np.random.default_rng(1)
    alpha, r0 = 0.05, 1.5
    weights = np.repeat([0.05, 0.1, 0.25, 0.5], 75)[None, :]
    xc, xs = _events(rng, weights.shape[1], 0.03 * r0, 0.03, weights)
    test = RateRatioTest(r0)
    log_e = test.log_e(np.cumsum(test.log_lr(xc, xs, weights), axis=1))
    false_alarms = float((log_e.max(axis=1) >= math.log(1 / alpha)).mean())
    assert false_alarms <= _binomial_ceiling(alpha)
    assert np.all(log_e[:, 0] <= math.log(1 / alpha) + 5)  # sanity: starts near 0


def test_rate_ratio_below_the_tolerance_almost_never_alarms() -> None:
    rng = np.random.default_rng(2)
    xc, xs = _events(rng, 300, 0.01, 0.01, np.full((1, 300), 0.1))
    test = RateRatioTest(1.25)
    log_e = test.log_e(np.cumsum(test.log_lr(xc, xs, 0.1), axis=1))
    assert float((log_e.max(axis=1) >= math.log(100)).mean()) <= _binomial_ceiling(0.01)


def test_rate_ratio_finds_ten_times_the_errors_within_seconds() -> None:
    rng = np.random.default_rng(3)
    xc, xs = _events(rng, 120, 0.10, 0.01, np.full((1, 120), 0.1))
    test = RateRatioTest(1.25)
    log_e = test.log_e(np.cumsum(test.log_lr(xc, xs, 0.1), axis=1))
    crossed = log_e >= math.log(5 / 0.01)
    assert crossed[:, -1].mean() > 0.99
    assert np.median(crossed.argmax(axis=1) + 1) <= 20


def test_rate_ratio_terms_of_a_fragment_can_be_replaced() -> None:
    test = RateRatioTest(1.5)
    first = test.log_lr(3, 0, 0.1)
    again = test.log_lr(5, 0, 0.1)
    stable = test.log_lr(0, 7, 0.1)
    total = first + stable - first + again
    assert np.allclose(total, test.log_lr(5, 7, 0.1))
    assert np.allclose(test.log_lr(4, 2, 0.0), 0.0) and np.allclose(test.log_lr(4, 2, float("nan")), 0.0)
    with pytest.raises(ValueError, match="above max_ratio"):
        RateRatioTest(1.5, multipliers=(0.5, 2.0))


def _bernoulli(rng: np.random.Generator, p: float, rate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = rng.poisson(rate, RUNS).astype(float)
    k = rng.binomial(n.astype(int), p).astype(float)
    return n, k, k


def _beta(rng: np.random.Generator, mean: float, rate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = rng.poisson(rate, RUNS)
    width = max(int(n.max()), 1)
    values = rng.beta(mean * 10, (1 - mean) * 10, size=(RUNS, width))
    present = np.arange(width)[None, :] < n[:, None]
    return n.astype(float), (values * present).sum(axis=1), (values * values * present).sum(axis=1)


@pytest.mark.parametrize(("kind", "mean", "rate", "binary"), [
    ("bernoulli", 0.01, 5.0, True), ("bernoulli", 0.05, 45.0, True), ("beta", 0.7, 2.5, False),
    ("beta", 0.9, 22.0, False),
])
def test_betting_bounds_cover_the_mean_at_every_window(kind: str, mean: float, rate: float, binary: bool) -> None:
    rng = np.random.default_rng(4)
    alpha = 0.05
    sums = BettingSums.zeros((RUNS,))
    missed_low = np.zeros(RUNS, dtype=bool)
    missed_high = np.zeros(RUNS, dtype=bool)
    for j in range(200):
        n, s1, s2 = _bernoulli(rng, mean, rate) if kind == "bernoulli" else _beta(rng, mean, rate)
        horizon = np.where((j >= 5) & (sums.n > 0), sums.n * 90 / max(j, 1), 300.0)
        sums.add(sums.next_stakes(alpha, horizon=horizon, binary=binary), n, s1, s2)
        missed_low |= sums.lower(alpha) > mean
        missed_high |= sums.upper(alpha) < mean
    assert missed_low.mean() <= _binomial_ceiling(alpha) and missed_high.mean() <= _binomial_ceiling(alpha)
    width = np.median(sums.upper(alpha) - sums.lower(alpha))
    assert width < 0.2  # and the bounds do narrow


def test_betting_quadratic_is_below_the_exact_log_capital() -> None:
    """Fan's inequality: the quadratic from the window sums never exceeds the log of the capital itself."""
    rng = np.random.default_rng(5)
    sums = BettingSums.zeros()
    values: list[tuple[np.ndarray, float, float, float, float]] = []  # values, b_up, b_down, k_up, k_down
    for _ in range(30):
        x = rng.beta(7, 3, size=rng.integers(1, 6))
        st = sums.next_stakes(0.01, horizon=60.0)
        sums.add(st, x.size, x.sum(), (x * x).sum())
        values.append((x, float(st.b_up), float(st.b_down), float(st.k_up), float(st.k_down)))
    for m in np.linspace(0.05, 0.95, 19):
        if m <= float(sums.ceiling):  # where Fan's inequality holds for every window's stake
            log_up = sum(np.log1p(b_up * (x - m)).sum() for x, b_up, _, _, _ in values)
            assert float(sums.lin_up - m * sums.mid_up - m * m * sums.quad_up) <= log_up + 1e-9
        if m >= float(sums.floor):
            log_down = sum(np.log1p(b_down * (m - x)).sum() for x, _, b_down, _, _ in values)
            assert float(sums.lin_down + m * sums.mid_down - m * m * sums.quad_down) <= log_down + 1e-9
    assert float(fan_g(1e-9)) == pytest.approx(0.5, abs=1e-6)


def test_betting_window_replaced_gives_the_same_sums() -> None:
    a, b = BettingSums.zeros(), BettingSums.zeros()
    st = a.next_stakes(0.01)
    a.add(st, 10, 3, 3)
    a.add(st, 10, 3, 3, sign=-1.0)
    a.add(st, 12, 4, 4)
    b.add(st, 12, 4, 4)
    for field in ("n", "s1", "s2", "lin_up", "mid_up", "quad_up", "lin_down", "mid_down", "quad_down"):
        assert float(getattr(a, field)) == pytest.approx(float(getattr(b, field)))


def test_asymptotic_sequence_covers_a_skewed_mean() -> None:
    """Cost-like data (lognormal): coverage at every window from 30 values on, at a realistic level."""
    rng = np.random.default_rng(6)
    alpha, mu = 0.05, math.exp(0.5 * 0.5**2) * 1e-4
    n = s1 = s2 = np.zeros(RUNS)
    missed = np.zeros(RUNS, dtype=bool)
    for _ in range(120):
        k = rng.poisson(5, RUNS)
        width = max(int(k.max()), 1)
        x = rng.lognormal(math.log(1e-4), 0.5, size=(RUNS, width)) * (np.arange(width)[None, :] < k[:, None])
        n, s1, s2 = n + k, s1 + x.sum(axis=1), s2 + (x * x).sum(axis=1)
        lo, hi = asymptotic.bounds(n, s1, s2, alpha)
        missed |= (n >= 30) & ((lo > mu) | (hi < mu))
    assert missed.mean() <= _binomial_ceiling(alpha)
    lo, hi = asymptotic.bounds(np.array([1.0]), np.array([1.0]), np.array([1.0]), alpha)
    assert lo[0] == -np.inf and hi[0] == np.inf
