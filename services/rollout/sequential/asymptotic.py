"""The asymptotic confidence sequence for a mean with no known bound (cost per request), from n, sum, sum of squares.

Waudby-Smith, Arbour, Sinha, Kennedy and Ramdas show that the Gaussian-mixture boundary (Robbins) applied to a
sample mean with the sample standard deviation plugged in,

    mean_t +- sigma_hat_t * sqrt( 2 (t rho^2 + 1) / (t^2 rho^2) * log( sqrt(t rho^2 + 1) / alpha ) ),

covers the mean at every t at once with probability tending to >= 1 - alpha (an asymptotic confidence
sequence; it needs only finite variance, no bound). rho tunes where the sequence is tightest:
rho^2 = (-2 log alpha + log(-2 log alpha + 1)) / t_star makes it tightest near t_star values. The sequence is
two-sided at alpha, so each one-sided bound used alone is conservative.

Because it is asymptotic, the caller requires a minimum number of values per side before acting on it.

Reference: I. Waudby-Smith, D. Arbour, R. Sinha, E. H. Kennedy, A. Ramdas, "Time-uniform central limit theory
and asymptotic confidence sequences" (arXiv 2103.06476, Annals of Statistics 2024), the Lindeberg-type
AsympCS and its tuning of rho.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

Array = NDArray[np.float64]
DEFAULT_T_STAR = 500.0


def rho_squared(alpha: float, t_star: float = DEFAULT_T_STAR) -> float:
    """The mixture variance that makes the boundary tightest near ``t_star`` values."""
    two_log = -2.0 * np.log(alpha)
    return float((two_log + np.log(two_log + 1.0)) / t_star)


def half_width(n: ArrayLike, s1: ArrayLike, s2: ArrayLike, alpha: float, t_star: float = DEFAULT_T_STAR) -> Array:
    """The half-width of the sequence around the mean (inf without at least two values)."""
    n = np.asarray(n, dtype=float)
    s1 = np.asarray(s1, dtype=float)
    s2 = np.asarray(s2, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = s1 / n
        var = np.maximum(s2 / n - mean * mean, 0.0) * n / np.maximum(n - 1.0, 1.0)
        r2 = rho_squared(alpha, t_star)
        width = np.sqrt(var) * np.sqrt(2.0 * (n * r2 + 1.0) / (n * n * r2) * np.log(np.sqrt(n * r2 + 1.0) / alpha))
    return np.where(n >= 2, width, np.inf)


def bounds(n: ArrayLike, s1: ArrayLike, s2: ArrayLike, alpha: float, t_star: float = DEFAULT_T_STAR) -> tuple[Array, Array]:
    """(lower, upper) bounds of the mean at level ``alpha`` (-inf/inf without at least two values)."""
    n = np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(n > 0, np.asarray(s1, dtype=float) / np.maximum(n, 1.0), 0.0)
    w = half_width(n, s1, s2, alpha, t_star)
    return mean - w, mean + w
