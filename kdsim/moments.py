"""Running moments merged chunk by chunk: what reduced results and the chunked driver share."""
from __future__ import annotations

import numpy as np


class RunningMoments:
    """Count, mean and M2 per cell, merged chunk by chunk (Chan, Golub & LeVeque).

    ``add(values, keep)``: ``values`` (L, S, R), ``keep`` (L, S) selects the seeds
    that enter (the non-diverged ones); cells are (λ, record) and the count is per λ.
    Merging is exact in exact arithmetic; in floating point it agrees with a
    one-pass numpy mean/variance of all seeds to rounding.
    """

    def __init__(self, n_lams, n_records):
        self.count = np.zeros(n_lams, dtype=np.int64)
        self.mean = np.zeros((n_lams, n_records))
        self.m2 = np.zeros((n_lams, n_records))

    def add(self, values, keep, *, consume=False):
        """Merge one chunk; ``consume=True`` lets it overwrite ``values`` (float64) instead of copying.

        ``values`` and ``keep`` may be arrays of another array module (CuPy): the chunk's count, mean and
        M2 are computed there and only those (L, R) arrays come to the host to be merged.
        """
        nb, mean_b, m2_b = chunk_moments(values, keep, consume=consume)
        na = self.count
        n = na + nb
        safe_n = np.maximum(n, 1)[:, None]
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (nb[:, None] / safe_n)
        self.m2 = self.m2 + m2_b + delta * delta * (na[:, None] * nb[:, None] / safe_n)
        self.count = n

    def result(self):
        """(mean, var, count): var with ddof = 1; NaN where the count is too small."""
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(self.count[:, None] > 0, self.mean, np.nan)
            var = np.where(self.count[:, None] > 1, self.m2 / np.maximum(self.count - 1, 1)[:, None], np.nan)
        return mean, var, self.count.copy()


def array_module(a):
    """numpy, or the module of a non-numpy array (CuPy) without importing it."""
    if isinstance(a, np.ndarray):
        return np
    import importlib
    return importlib.import_module(type(a).__module__.split(".")[0])


def to_host(a):
    """A numpy array of ``a`` (a CuPy array is copied from the device)."""
    return a if isinstance(a, np.ndarray) else (a.get() if hasattr(a, "get") else np.asarray(a))


def chunk_moments(values, keep, *, consume=False):
    """(count (L,), mean (L, R), M2 (L, R)) on the host of ``values`` (L, S, R) over the seeds ``keep`` (L, S),
    computed in the array module of ``values``."""
    xp = array_module(values)
    values = xp.asarray(values, dtype=xp.float64)
    keep = xp.asarray(keep, dtype=bool)
    nb = keep.sum(axis=1)
    dev = values if consume else values.copy()
    drop = ~keep[:, :, None]
    xp.copyto(dev, 0.0, where=drop)
    with np.errstate(invalid="ignore", divide="ignore"):
        total = dev.sum(axis=1)
        mean_b = xp.where(nb[:, None] > 0, total / xp.maximum(nb, 1)[:, None], 0.0)
    dev -= mean_b[:, None, :]
    xp.copyto(dev, 0.0, where=drop)
    m2_b = xp.einsum("lsr,lsr->lr", dev, dev)
    return to_host(nb).astype(np.int64), to_host(mean_b), to_host(m2_b)
