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
        """Merge one chunk; ``consume=True`` lets it overwrite ``values`` (float64) instead of copying."""
        values = np.asarray(values, dtype=np.float64)
        keep = np.asarray(keep, dtype=bool)
        nb = keep.sum(axis=1)
        dev = values if consume else values.copy()
        drop = np.broadcast_to(~keep[:, :, None], dev.shape)
        dev[drop] = 0.0
        with np.errstate(invalid="ignore", divide="ignore"):
            total = dev.sum(axis=1)
            mean_b = np.where(nb[:, None] > 0, total / np.maximum(nb, 1)[:, None], 0.0)
        dev -= mean_b[:, None, :]
        dev[drop] = 0.0
        m2_b = np.einsum("lsr,lsr->lr", dev, dev)
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
