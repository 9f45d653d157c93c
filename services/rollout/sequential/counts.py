"""The rate-ratio e-process of a count gate (errors, safety findings, slow requests): canary vs stable.

Conditioning on the bad events removes the unknown traffic and the unknown common rate. When the router sends
each request to the canary with probability pi and a request is bad with probability p_c (canary) or p_s
(stable), each bad event is the canary's with probability

    theta(pi, rho) = pi * rho / (pi * rho + 1 - pi),   rho = p_c / p_s.

H0 "the canary's rate is at most ``max_ratio`` (r0) times stable's" is rho <= r0, i.e. theta <= theta0 =
theta(pi, r0). The e-process is a mixture, over a grid of alternatives rho_k > r0 with prior weights w_k, of
the likelihood ratios of the events' sides:

    E_t = sum_k w_k prod_{bad events i <= t} (theta(pi_i, rho_k) / theta(pi_i, r0))^{canary_i}
                                             ((1 - theta(pi_i, rho_k)) / (1 - theta(pi_i, r0)))^{1 - canary_i}.

Each factor has expectation <= 1 under H0 (theta_k > theta0 >= theta), so every component, and the mixture,
is a nonnegative supermartingale starting at 1, and by Ville's inequality P(sup_t E_t >= 1/alpha) <= alpha:
rejecting when E_t reaches 1/alpha is valid however often it is checked. The weight pi may change between
windows (each window uses its own; the alternative is fixed in rho, not theta), since each factor only needs
pi to be fixed before its event's side is drawn.

Each bad event contributes on its own, so a window's canary fragment and stable fragment each add their own
term, and a fragment published again is replaced by subtracting its earlier term. The two sides of one window
must both be in before the e-value is read (a canary term alone over-states it): the caller seals windows.

References: M. Lindon and A. Malek, "Anytime-valid inference for multinomial count data" (arXiv 2011.03567);
M. Lindon, C. Sanden, V. Shirikian, "Rapid regression detection in software deployments through sequential
testing" (KDD 2022, arXiv 2205.14762); J. Ville (1939) for the maximal inequality.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

DEFAULT_MULTIPLIERS: tuple[float, ...] = (1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0)
"""Alternatives rho_k = max_ratio * m_k: from a modest regression to a canary with many times the bad events."""


def theta(canary_weight: ArrayLike, ratio: ArrayLike) -> NDArray[np.float64]:
    """The probability that a bad event is the canary's, at canary weight pi and rate ratio rho."""
    pi = np.asarray(canary_weight, dtype=float)
    rho = np.asarray(ratio, dtype=float)
    return np.asarray(pi * rho / (pi * rho + 1.0 - pi), dtype=float)


class RateRatioTest:
    """The mixture e-process for H0: canary rate <= ``max_ratio`` x stable rate. Stateless: callers keep sums."""

    def __init__(self, max_ratio: float, multipliers: tuple[float, ...] = DEFAULT_MULTIPLIERS,
                 weights: tuple[float, ...] | None = None) -> None:
        if max_ratio <= 0:
            raise ValueError(f"max_ratio must be > 0, got {max_ratio}")
        if any(m <= 1.0 for m in multipliers):
            raise ValueError("every alternative must lie above max_ratio (multipliers > 1)")
        w = np.full(len(multipliers), 1.0 / len(multipliers)) if weights is None else np.asarray(weights, float)
        if w.shape != (len(multipliers),) or np.any(w <= 0) or not np.isclose(w.sum(), 1.0):
            raise ValueError("weights must be positive, one per multiplier, and sum to 1")
        self.max_ratio = float(max_ratio)
        self.ratios = self.max_ratio * np.asarray(multipliers, dtype=float)
        self.log_weights = np.log(w)

    @property
    def size(self) -> int:
        """Number of alternatives (the last axis of :meth:`log_lr`)."""
        return len(self.ratios)

    def log_lr(self, canary_bad: ArrayLike, stable_bad: ArrayLike, canary_weight: ArrayLike) -> NDArray[np.float64]:
        """Log likelihood ratio of each alternative for a window's bad events, shape ``(..., size)``.

        A weight of 0 or 1 (or NaN, unknown) carries no information about the ratio: the term is 0.
        """
        pi = np.asarray(canary_weight, dtype=float)[..., None]
        informative = (pi > 0.0) & (pi < 1.0)
        pi = np.where(informative, pi, 0.5)
        t0 = theta(pi, self.max_ratio)
        tk = theta(pi, self.ratios)
        xc = np.asarray(canary_bad, dtype=float)[..., None]
        xs = np.asarray(stable_bad, dtype=float)[..., None]
        out = xc * (np.log(tk) - np.log(t0)) + xs * (np.log1p(-tk) - np.log1p(-t0))
        return np.where(informative, out, 0.0)

    def log_e(self, log_lr_sum: ArrayLike) -> NDArray[np.float64]:
        """log E_t from the summed log likelihood ratios (``(..., size)`` -> ``(...)``)."""
        z = np.asarray(log_lr_sum, dtype=float) + self.log_weights
        top = np.max(z, axis=-1)
        return np.asarray(top + np.log(np.sum(np.exp(z - top[..., None]), axis=-1)), dtype=float)
