"""Memory planning for the fast engines: seed chunks and running moments.

A run of L KD weights × S seeds is split into chunks of seeds. Every trajectory
keeps its global stream number (``plan.streams[:, s0:s1]``), so a chunked run
draws exactly the minibatches of an unchunked one and its concatenated records
are bit-for-bit the same.

Two modes:

* full records: the (λ, seed, record) arrays are allocated once (``fixed_bytes``)
  and each chunk's working memory (kernel outputs, saved iterates) is bounded by
  the budget;
* reduced records (``reduce=True`` in ``numba_cpu.run_reduced``): only a running
  mean and variance per (λ, record) over the non-diverged seeds is kept, merged
  across chunks with Chan et al.'s parallel update of Welford's (count, mean, M2),
  so memory no longer grows with the number of seeds.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .. import _validate as V

#: fraction of the available memory a run may use when no budget is given
DEFAULT_MEMORY_FRACTION = 0.5


def available_memory():
    """Bytes of memory available to this process (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def default_budget(fraction=DEFAULT_MEMORY_FRACTION):
    """``fraction`` of the available memory, in bytes."""
    fraction = V.positive_float("fraction", fraction, upper=1.0)
    return int(available_memory() * fraction)


@dataclass(frozen=True)
class ChunkPlan:
    """How the seeds of a run are split: chunks of ``chunk_seeds`` (the last may be shorter)."""

    n_seeds: int
    chunk_seeds: int
    bytes_per_seed: int
    fixed_bytes: int
    budget: int

    @property
    def chunks(self):
        """List of (start, stop) seed ranges covering 0 .. n_seeds."""
        return [(s, min(s + self.chunk_seeds, self.n_seeds))
                for s in range(0, self.n_seeds, self.chunk_seeds)]

    @property
    def peak_bytes(self):
        """Estimated peak: fixed arrays plus one chunk's working memory."""
        return self.fixed_bytes + self.chunk_seeds * self.bytes_per_seed


def plan_chunks(n_seeds, bytes_per_seed, *, fixed_bytes=0, budget=None, chunk_seeds=None):
    """Split ``n_seeds`` into chunks whose working memory fits ``budget`` bytes.

    ``bytes_per_seed`` is the working memory one seed (all its λ) needs during a
    chunk; ``fixed_bytes`` what the run holds regardless of chunking (the full
    output arrays, the data). ``budget`` defaults to ``default_budget()``;
    ``chunk_seeds`` forces a chunk size (still checked against the budget only
    when a budget is given).
    """
    n_seeds = V.int_in_range("n_seeds", n_seeds, 1)
    bytes_per_seed = V.int_in_range("bytes_per_seed", int(bytes_per_seed), 0)
    fixed_bytes = V.int_in_range("fixed_bytes", int(fixed_bytes), 0)
    explicit_budget = budget is not None
    budget = default_budget() if budget is None else V.int_in_range("memory_budget", budget, 1)
    if chunk_seeds is not None:
        chunk = V.int_in_range("chunk_seeds", chunk_seeds, 1)
        chunk = min(chunk, n_seeds)
        if explicit_budget and fixed_bytes + chunk * bytes_per_seed > budget:
            raise MemoryError(f"chunk_seeds={chunk} needs {fixed_bytes + chunk * bytes_per_seed} bytes; "
                              f"memory_budget is {budget}")
        return ChunkPlan(n_seeds, chunk, bytes_per_seed, fixed_bytes, budget)
    room = budget - fixed_bytes
    if bytes_per_seed == 0:
        chunk = n_seeds
    else:
        chunk = min(n_seeds, room // bytes_per_seed)
    if chunk < 1:
        raise MemoryError(
            f"a run of {n_seeds} seeds needs {fixed_bytes} bytes of output plus {bytes_per_seed} bytes "
            f"per seed in flight; memory_budget is {budget} bytes. Raise memory_budget, record less "
            "often, or use run_reduced (mean and variance only)")
    return ChunkPlan(n_seeds, int(chunk), bytes_per_seed, fixed_bytes, budget)


def chunk_bytes(n_lams, n_records, dim, itemsize, *, saved_iterates=False, n_quantities=3):
    """Working bytes per seed of one chunk: the kernel's records, flags, final and saved iterates."""
    per_traj = n_quantities * n_records * 8 + 8 + dim * (itemsize + 8)
    if saved_iterates:
        per_traj += n_records * dim * 8
    return int(n_lams * per_traj)


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

    def add(self, values, keep):
        values = np.asarray(values, dtype=np.float64)
        keep = np.asarray(keep, dtype=bool)
        nb = keep.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            total = np.where(keep[:, :, None], values, 0.0).sum(axis=1)
            mean_b = np.where(nb[:, None] > 0, total / np.maximum(nb, 1)[:, None], 0.0)
            dev = np.where(keep[:, :, None], values - mean_b[:, None, :], 0.0)
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
