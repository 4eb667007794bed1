"""Statistics across seeds: means with confidence intervals, decay rates.

Intervals are Student-t intervals on the seed axis (independent trajectories).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

from . import _validate as V


def mean_ci(values, axis=0, level=0.99):
    """Mean and two-sided Student-t confidence interval along ``axis``.

    NaN entries (diverged trajectories) are left out. Returns (mean, low, high, count);
    with a single value the interval collapses to the value.
    """
    level = _level(level)
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    count = ok.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ok, v, 0.0).sum(axis=axis) / count
        dev = np.where(ok, v - np.expand_dims(mean, axis), 0.0)
        var = (dev ** 2).sum(axis=axis) / np.maximum(count - 1, 1)
        half = _st.t.ppf(0.5 + level / 2, np.maximum(count - 1, 1)) * np.sqrt(var / count)
    half = np.where(count > 1, half, 0.0)
    return mean, mean - half, mean + half, count


def t_interval(mean, var, count, level=0.99):
    """Student-t interval from moments: (low, high, sem), elementwise.

    Parameters
    ----------
    mean, var : array_like
        Sample means and variances (ddof=1) over independent seeds.
    count : array_like
        Number of seeds behind each mean (broadcast against ``mean``).
    level : float
        Two-sided confidence level in (0, 1).

    Returns
    -------
    low, high, sem : ndarray
        The interval mean ± t_{count−1} · sem with sem = sqrt(var / count). With fewer
        than two seeds there is no variance estimate: all three are NaN.
    """
    level = _level(level)
    m = np.asarray(mean, dtype=np.float64)
    v = np.asarray(var, dtype=np.float64)
    c = np.broadcast_to(np.asarray(count, dtype=np.float64), np.broadcast_shapes(m.shape, np.shape(count)))
    enough = c > 1
    with np.errstate(invalid="ignore", divide="ignore"):
        sem = np.where(enough, np.sqrt(v / np.where(enough, c, 1.0)), np.nan)
        half = _st.t.ppf(0.5 + level / 2, np.where(enough, c - 1, 1.0)) * sem
    return m - half, m + half, sem


def log_linear_rate(steps, values, floor=0.0):
    """Per-step factor ρ of a geometric decay: least-squares slope of log(values) on steps.

    Only points with values > floor enter (rounding floors are left out); at least
    two are needed. Returns exp(slope).
    """
    t = np.asarray(steps, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(v) & (v > floor)
    if keep.sum() < 2:
        raise ValueError("log_linear_rate needs at least two values above the floor")
    slope = np.polyfit(t[keep], np.log(v[keep]), 1)[0]
    return float(np.exp(slope))


def bootstrap_ci(values, statistic=np.mean, level=0.99, n_boot=1000, seed=0):
    """Percentile bootstrap interval of ``statistic`` over the seeds (axis 0 of ``values``).

    ``statistic`` maps an array with seeds on axis 0 to a scalar or array. The resampling
    generator is seeded, so the interval is reproducible. Returns (estimate, low, high).
    """
    level = _level(level)
    n_boot = V.int_in_range("n_boot", n_boot, 10)
    v = np.asarray(values, dtype=np.float64)
    if v.shape[0] < 2:
        raise ValueError(f"bootstrap_ci needs at least two seeds; got {v.shape[0]}")
    rng = np.random.default_rng(seed)
    est = np.asarray(statistic(v))
    draws = np.stack([np.asarray(statistic(v[rng.integers(0, v.shape[0], v.shape[0])])) for _ in range(n_boot)])
    lo, hi = np.quantile(draws, [0.5 - level / 2, 0.5 + level / 2], axis=0)
    return est, lo, hi


def _level(level):
    level = V.positive_float("level", level, upper=1.0)
    if level >= 1.0:
        raise ValueError(f"level must satisfy 0 < level < 1; got {level}")
    return level


@dataclass(frozen=True)
class Plateau:
    """Stationary level: per-seed tail averages and their mean with a t-interval."""

    mean: float
    ci_low: float
    ci_high: float
    spread: float          # standard deviation of the per-seed tail averages
    start_step: int        # first step of the tail
    count: int             # seeds entering (diverged ones are left out)


def plateau(steps, per_seed, tail_fraction=0.5, level=0.99):
    """Plateau of a (seed, record) array: average each seed over the last ``tail_fraction`` of steps.

    Tail averages of one seed are correlated, so the interval is taken across seeds
    (independent), not across records.
    """
    steps = np.asarray(steps)
    v = np.asarray(per_seed, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != steps.size:
        raise ValueError(f"per_seed must have shape (seeds, {steps.size}); got {v.shape}")
    frac = V.positive_float("tail_fraction", tail_fraction, upper=1.0)
    start = steps[-1] - frac * (steps[-1] - steps[0])
    tail = steps >= start
    per = v[:, tail].mean(axis=1)
    m, lo, hi, count = mean_ci(per, level=level)
    ok = np.isfinite(per)
    spread = float(per[ok].std(ddof=1)) if ok.sum() > 1 else 0.0
    return Plateau(float(m), float(lo), float(hi), spread, int(steps[tail][0]), int(count))


@dataclass(frozen=True)
class RateFit:
    """Per-step geometric factor ρ of the transient, with its bootstrap interval and window."""

    rate: float
    ci_low: float
    ci_high: float
    window: tuple          # (first step, last step) used by the fit
    n_points: int


def fit_rate(steps, per_seed, level=0.99, plateau_level=None, dominance=10.0, rel_floor=1e-24,
             n_boot=200, seed=0):
    """Fit E[v_t] ≈ C ρ^t + N over the transient of a (seed, record) array.

    The plateau N is the tail average (``plateau``) unless given. The window is chosen
    automatically and reported: it starts at the first record and stops before the
    first record whose excess over N is below ``dominance`` × N (or below ``rel_floor`` of
    the initial excess, the rounding floor). ρ is exp(slope) of log(mean − N) on the window,
    and its interval is a seeded bootstrap over seeds with the window held fixed.
    """
    steps = np.asarray(steps, dtype=np.float64)
    v = np.asarray(per_seed, dtype=np.float64)
    v = v[np.all(np.isfinite(v), axis=1)]
    if v.shape[0] < 2:
        raise ValueError("fit_rate needs at least two non-diverged seeds")
    N = plateau(steps, v).mean if plateau_level is None else float(plateau_level)
    mean = v.mean(axis=0)
    excess = mean - N
    ok = np.isfinite(excess) & (excess > dominance * max(N, 0.0)) & (excess > rel_floor * excess[0])
    stop = int(np.argmin(ok)) if not ok.all() else ok.size
    if stop < 3:
        raise ValueError("fit_rate found fewer than three transient records; record more often")
    window = slice(0, stop)

    def slope_of(sample):
        ex = sample.mean(axis=0)[window] - N
        if np.any(ex <= 0):
            return np.nan
        return np.polyfit(steps[window], np.log(ex), 1)[0]

    s = slope_of(v)
    rng = np.random.default_rng(seed)
    boots = np.array([slope_of(v[rng.integers(0, v.shape[0], v.shape[0])]) for _ in range(n_boot)])
    boots = boots[np.isfinite(boots)]
    lo, hi = np.quantile(boots, [0.5 - level / 2, 0.5 + level / 2]) if boots.size else (s, s)
    return RateFit(float(np.exp(s)), float(np.exp(lo)), float(np.exp(hi)),
                   (int(steps[0]), int(steps[stop - 1])), int(stop))


@dataclass(frozen=True)
class LambdaOptimum:
    """Empirical optimal KD weight with its interval (paired over seeds by common random numbers)."""

    lam: float
    ci_low: float
    ci_high: float
    method: str


def quadratic_in_lambda(lams, values):
    """Per-seed coefficients (c0, c1, c2) of v(λ) = c0 + c1 λ + c2 λ² from values at three λ.

    Exact for least squares under common random numbers, where x_t(λ) is affine in λ
    (docs/theory.md §5.1), so ‖x_t(λ) − x*‖² is a quadratic. ``values``: (3, seeds).
    """
    lams = np.asarray(lams, dtype=np.float64)
    if lams.shape != (3,) or len(np.unique(lams)) != 3:
        raise ValueError(f"lams must be three distinct KD weights; got {lams.tolist()}")
    V3 = np.vander(lams, 3, increasing=True)          # rows (1, λ, λ²)
    return np.linalg.solve(V3, np.asarray(values, dtype=np.float64)).T   # (seeds, 3)


def lambda_opt_from_quadratics(coefs, level=0.99, n_boot=1000, seed=0):
    """argmin over λ of the mean quadratic c0 + c1 λ + c2 λ², with a paired bootstrap interval."""
    c = np.asarray(coefs, dtype=np.float64)

    def argmin(sample):
        m = sample.mean(axis=0)
        return -m[1] / (2 * m[2]) if m[2] > 0 else np.nan

    est, lo, hi = bootstrap_ci(c, argmin, level=level, n_boot=n_boot, seed=seed)
    return LambdaOptimum(float(est), float(lo), float(hi), "quadratic in λ (exact for least squares)")


def lambda_opt_from_grid(lams, per_seed, level=0.99, n_boot=1000, seed=0):
    """Empirical argmin over a λ grid of the seed-mean of ``per_seed`` (shape (λ, seeds)).

    The minimum is refined by a parabola through the grid minimum and its neighbours.
    The interval is a bootstrap that resamples seeds jointly across λ: with common random
    numbers the λ values share each seed's noise, which narrows the interval (pairing).
    """
    lams = np.asarray(lams, dtype=np.float64)
    v = np.asarray(per_seed, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] != lams.size or lams.size < 3:
        raise ValueError(f"per_seed must have shape (λ ≥ 3, seeds); got {v.shape} for {lams.size} λ values")
    order = np.argsort(lams)
    lams, v = lams[order], v[order]

    def argmin(sample):           # sample: (seeds, λ)
        m = sample.mean(axis=0)
        k = int(np.argmin(m))
        if 0 < k < lams.size - 1:
            x, y = lams[k - 1:k + 2], m[k - 1:k + 2]
            a, b, _ = np.polyfit(x, y, 2)
            if a > 0:
                return float(np.clip(-b / (2 * a), x[0], x[-1]))
        return float(lams[k])

    est, lo, hi = bootstrap_ci(v.T, argmin, level=level, n_boot=n_boot, seed=seed)
    return LambdaOptimum(float(est), float(lo), float(hi), "grid with parabolic refinement")


def tightness(bound_values, observed):
    """Ratio bound / observed, elementwise (≥ 1 wherever the bound holds)."""
    b = np.asarray(bound_values, dtype=np.float64)
    o = np.asarray(observed, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(o > 0, b / o, np.inf)
