"""Statistics across seeds: means with confidence intervals, decay rates.

Intervals are Student-t intervals on the seed axis (independent trajectories).
"""
from __future__ import annotations

import numpy as np
from scipy import stats as _st

from . import _validate as V


def mean_ci(values, axis=0, level=0.99):
    """Mean and two-sided Student-t confidence interval along ``axis``.

    NaN entries (diverged trajectories) are left out. Returns (mean, low, high, count);
    with a single value the interval collapses to the value.
    """
    level = V.positive_float("level", level, upper=1.0)
    if level >= 1.0:
        raise ValueError(f"level must satisfy 0 < level < 1; got {level}")
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
