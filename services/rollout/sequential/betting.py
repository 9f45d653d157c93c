"""Confidence sequences for a mean in [0, 1] by betting, from each window's count, sum and sum of squares.

For a candidate mean m, a gambler who stakes b_i on "X_i < m" holds the capital K-_t(m) = prod_i (1 + b_i (m -
X_i)); with b_i fixed before X_i is seen (predictable), b_i >= 0 and the capital never negative, K-_t(m) is a
nonnegative supermartingale when the true mean is >= m, so by Ville's inequality it reaches 1/alpha with
probability <= alpha, and every m where it did is excluded: an upper confidence sequence, valid at every t at
once. Staking on "X_i > m" (K+) gives the lower one. (Waudby-Smith & Ramdas.)

Windows carry only n, sum x and sum x^2 per side, not each value, so one stake b_j is fixed before window j for
all its values, and Fan et al.'s inequality, log(1 + k y) >= k y - psi(k) y^2 for y >= -1, k in [0, 1), psi(k) =
-log(1 - k) - k >= 0, written for u = k y, bounds the log-capital from below by a quadratic in m from the sums:

    log(1 + u) >= u - g(k) u^2  for u >= -k,   g(k) = psi(k) / k^2   (1/2 as k -> 0)
    log K-_t(m) >= Q-(m) = sum_j [b_j (n_j m - s1_j) - g_j b_j^2 (s2_j - 2 m s1_j + n_j m^2)]
    log K+_t(m) >= Q+(m) = sum_j [b_j (s1_j - n_j m) - g_j b_j^2 (s2_j - 2 m s1_j + n_j m^2)]

valid where every u = b_j (m - x) >= -k_j, i.e. m >= 1 - k_j / b_j (for Q-; Q+: m <= k_j / b_j): each window's
``k_j`` (fixed with its stake) trades that range, a floor (ceiling) on the m the bound may exclude, against the
tightness of the quadratic. exp(Q) is below the capital there, and K- rises with m (K+ falls), so the upper
bound is the smallest m at or above the floor with Q-(m) >= log(1/alpha), and every m above it is excluded
too (the lower bound likewise). Seven running sums per direction (:class:`BettingSums`); a window published
again is replaced by subtracting its terms with the stakes it was given.

Stakes (:func:`stakes`): the predictable plug-in of Waudby-Smith & Ramdas, b = d / sigma_hat^2 with d =
sqrt(2 log(1/alpha) sigma_hat^2 / t), the stake that is best against a mean d away, from the regularised
variance of the values before the window and t = max(values seen + 1, ``horizon``). With t the count so far the
stakes shrink like 1/sqrt(t) and the bound at n values is about (1 + ln n)/2 times the best fixed stake's; a
``horizon`` (values expected by the time a decision is wanted, estimated from the past) keeps the stake near-
optimal until then. Under Fan's quadratic the best stake against a mean d away is d / (2 g(k) (d^2 + var)), so the
Gaussian stake is shrunk by g(k) > 1/2 (else high-variance data, e.g. feedback spread over [0, 1], would lose
capital at the very distance the sequence is tuned for). For ``binary`` values the upper bound's stake is the
Bernoulli-optimal d / (m (1 - m)) at m = mean + d (a rare event's skew makes the Gaussian stake over-bet; Fan's
inequality is exact there). The floor (ceiling) is the current mean - (+) 3 x its current confidence width, and
none before 20 values. Any predictable choice is valid: these only change how tight the bounds are.

References: I. Waudby-Smith and A. Ramdas, "Estimating means of bounded random variables by betting"
(arXiv 2010.09686, JRSS-B 2024), the predictable plug-in (PrPl) bets; X. Fan, I. Grama, Q. Liu, "Exponential
inequalities for martingales with applications" (EJP 2015) for the inequality; J. Ville (1939).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

Array = NDArray[np.float64]
MAX_STAKE = 10.0
KAPPA_MAX = 0.8
"""Largest k of Fan's inequality (g(k) grows quickly towards k = 1)."""
SPREAD = 3.0
"""Floor (ceiling) of the excluded means: the current mean - (+) SPREAD x its current confidence width."""
INFORMED = 20
"""Values seen before a window may have a floor (ceiling): earlier stakes stay below KAPPA_MAX and need none."""
DEFAULT_HORIZON = 200.0


def psi(k: ArrayLike) -> Array:
    """-log(1 - k) - k: Fan's quadratic coefficient at y scale (0 at k = 0)."""
    x = np.asarray(k, dtype=float)
    return np.asarray(-np.log1p(-x) - x, dtype=float)


def fan_g(k: ArrayLike) -> Array:
    """psi(k) / k^2, the coefficient of u^2 (its limit 1/2 at k = 0)."""
    x = np.asarray(k, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = psi(x) / (x * x)
    return np.where(x > 1e-6, g, 0.5 + x / 3.0)


@dataclass
class Stakes:
    """The stakes fixed before one window: b and k per direction (up: on X > m, the lower bound; down: X < m)."""

    b_up: Array
    k_up: Array
    b_down: Array
    k_down: Array


def stakes(n: ArrayLike, s1: ArrayLike, s2: ArrayLike, alpha: float, *, horizon: ArrayLike = DEFAULT_HORIZON,
           binary: bool = False) -> Stakes:
    """The stakes for the next window, from the values before it (n, sum, sum of squares, all in [0, 1])."""
    n = np.asarray(n, dtype=float)
    s1 = np.asarray(s1, dtype=float)
    s2 = np.asarray(s2, dtype=float)
    centred = np.maximum(s2 - np.divide(s1 * s1, n, out=np.zeros_like(n), where=n > 0), 0.0)
    var = (0.25 + centred) / (n + 1.0)
    mean = (0.5 + s1) / (n + 1.0)
    t = np.maximum(n + 1.0, np.asarray(horizon, dtype=float))
    d = np.sqrt(2.0 * np.log(1.0 / alpha) * var / t)
    b_up = np.minimum(d / var, MAX_STAKE)
    if binary:
        m = np.clip(mean + d, 1e-6, 1.0 - 1e-6)
        b_down = np.minimum(d / (m * (1.0 - m)), MAX_STAKE)
    else:
        b_down = b_up
    # Floor and ceiling from the current uncertainty (not the horizon's), and none before INFORMED values: each
    # window's floor stays for the whole step, so a stake sized on a guess must not exclude the truth later.
    width = np.sqrt(2.0 * np.log(1.0 / alpha) * var / (n + 1.0))
    informed = n >= INFORMED
    b_up = np.where(informed, b_up, np.minimum(b_up, KAPPA_MAX))
    b_down = np.where(informed, b_down, np.minimum(b_down, KAPPA_MAX))
    floor = np.where(informed, np.clip(mean - SPREAD * width, 0.0, 1.0), 0.0)
    ceiling = np.where(informed, np.clip(mean + SPREAD * width, 0.0, 1.0), 1.0)
    # The capital must stay positive down to the floor (up to the ceiling): b (1 - floor) <= k <= KAPPA_MAX.
    b_down = np.minimum(b_down, KAPPA_MAX / np.maximum(1.0 - floor, 1e-9))
    b_up = np.minimum(b_up, KAPPA_MAX / np.maximum(ceiling, 1e-9))
    # Against a mean d away, Fan's quadratic b y - g(k) b^2 y^2 is largest at b = d / (2 g(k) (d^2 + var)): with
    # g(k) > 1/2 (a large stake's k) the Gaussian stake d / var over-bets. (A binary upper bound keeps its
    # Bernoulli-optimal stake: there Fan's inequality is exact at y in {-1, 0}.)
    def fan_optimal(b: Array, span: Array) -> Array:
        g = fan_g(np.clip(b * span, 1e-9, KAPPA_MAX))
        return np.asarray(np.minimum(b, d / (2.0 * g * (d * d + var))), dtype=float)

    b_up = fan_optimal(b_up, ceiling)
    if not binary:
        b_down = fan_optimal(b_down, 1.0 - floor)
    k_down = np.clip(b_down * (1.0 - floor), 1e-9, KAPPA_MAX)
    k_up = np.clip(b_up * ceiling, 1e-9, KAPPA_MAX)
    return Stakes(b_up, k_up, b_down, k_down)


@dataclass
class BettingSums:
    """Running sums of one side's values in [0, 1] and of the stakes' terms; arrays of one common shape."""

    n: Array
    s1: Array
    s2: Array
    lin_up: Array
    """sum b s1 - G s2 (G = g(k) b^2): with the next two, Q+(m) = lin_up - m mid_up - m^2 quad_up"""
    mid_up: Array
    """sum b n - 2 G s1"""
    quad_up: Array
    """sum G n"""
    lin_down: Array
    """sum -b s1 - G s2: Q-(m) = lin_down + m mid_down - m^2 quad_down"""
    mid_down: Array
    """sum b n + 2 G s1"""
    quad_down: Array
    """sum G n"""
    ceiling: Array
    """The lower bound never exceeds it (min over windows of k_up / b_up)."""
    floor: Array
    """The upper bound never goes below it (max over windows of 1 - k_down / b_down)."""

    @classmethod
    def zeros(cls, shape: tuple[int, ...] = ()) -> BettingSums:
        def z() -> Array:
            return np.zeros(shape)

        return cls(n=z(), s1=z(), s2=z(), lin_up=z(), mid_up=z(), quad_up=z(), lin_down=z(), mid_down=z(),
                   quad_down=z(), ceiling=np.ones(shape), floor=z())

    def next_stakes(self, alpha: float, *, horizon: ArrayLike = DEFAULT_HORIZON, binary: bool = False) -> Stakes:
        return stakes(self.n, self.s1, self.s2, alpha, horizon=horizon, binary=binary)

    def add(self, st: Stakes, n: ArrayLike, s1: ArrayLike, s2: ArrayLike, sign: float = 1.0) -> None:
        """Add (sign=+1) or remove (sign=-1) a window's values, with the stakes fixed before the window."""
        n, s1, s2 = (sign * np.asarray(v, dtype=float) for v in (n, s1, s2))
        g_up = fan_g(st.k_up) * st.b_up ** 2
        g_down = fan_g(st.k_down) * st.b_down ** 2
        self.n = self.n + n
        self.s1 = self.s1 + s1
        self.s2 = self.s2 + s2
        self.lin_up = self.lin_up + st.b_up * s1 - g_up * s2
        self.mid_up = self.mid_up + st.b_up * n - 2.0 * g_up * s1
        self.quad_up = self.quad_up + g_up * n
        self.lin_down = self.lin_down - st.b_down * s1 - g_down * s2
        self.mid_down = self.mid_down + st.b_down * n + 2.0 * g_down * s1
        self.quad_down = self.quad_down + g_down * n
        if sign > 0:
            with np.errstate(divide="ignore", invalid="ignore"):
                self.ceiling = np.minimum(self.ceiling, np.where(st.b_up > 0, st.k_up / st.b_up, 1.0))
                self.floor = np.maximum(self.floor, np.where(st.b_down > 0, 1.0 - st.k_down / st.b_down, 0.0))

    def mean(self) -> Array:
        """The observed mean (NaN without values)."""
        return np.asarray(np.divide(self.s1, self.n, out=np.full(np.shape(self.n), np.nan), where=self.n > 0), dtype=float)

    def lower(self, alpha: float) -> Array:
        """The lower confidence bound at level ``alpha`` (0 when nothing is excluded)."""
        level = np.log(1.0 / alpha)
        # Q+(m) >= level  <=>  quad m^2 + mid m + (level - lin) <= 0: between the roots r1 <= r2
        lo, hi = _roots(self.quad_up, self.mid_up, level - self.lin_up)
        best = np.minimum(hi, self.ceiling)
        return np.clip(np.where(best >= lo, best, 0.0), 0.0, 1.0)

    def upper(self, alpha: float) -> Array:
        """The upper confidence bound at level ``alpha`` (1 when nothing is excluded)."""
        level = np.log(1.0 / alpha)
        # Q-(m) >= level  <=>  quad m^2 - mid m + (level - lin) <= 0
        lo, hi = _roots(self.quad_down, -self.mid_down, level - self.lin_down)
        best = np.maximum(lo, self.floor)
        return np.clip(np.where(best <= hi, best, 1.0), 0.0, 1.0)


def _roots(a: Array, b: Array, c: Array) -> tuple[Array, Array]:
    """The interval where a m^2 + b m + c <= 0 (a >= 0); (inf, -inf) when empty."""
    disc = b * b - 4.0 * a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        sq = np.sqrt(np.maximum(disc, 0.0))
        quad_lo = (-b - sq) / (2.0 * a)
        quad_hi = (-b + sq) / (2.0 * a)
        lin = -c / b  # a == 0: b m + c <= 0
    empty = disc < 0
    is_quad = a > 1e-12
    # a == 0: b m + c <= 0 is m <= -c/b (b > 0), m >= -c/b (b < 0), everything or nothing (b == 0)
    flat = c <= 0
    lo_lin = np.where(b > 0, -np.inf, np.where(b < 0, lin, np.where(flat, -np.inf, np.inf)))
    hi_lin = np.where(b > 0, lin, np.where(b < 0, np.inf, np.where(flat, np.inf, -np.inf)))
    lo = np.where(is_quad, np.where(empty, np.inf, quad_lo), lo_lin)
    hi = np.where(is_quad, np.where(empty, -np.inf, quad_hi), hi_lin)
    return np.nan_to_num(lo, nan=np.inf), np.nan_to_num(hi, nan=-np.inf)
