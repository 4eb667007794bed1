"""The one memory model of a run: what it holds for the whole run, what one seed costs in a chunk.

A run of L KD weights × S seeds is split into chunks of seeds (``plan_chunks``), planned
before anything proportional to the seeds is allocated. ``output_bytes`` is what the
driver holds for the whole run (full records, or only divergence flags and running
moments with ``reduce``); an engine states its working bytes per seed and its fixed
bytes (data on the device, …). The sweep dry run uses the same functions.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from . import _validate as V

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


#: what a run that does not fit can change
ADVICE_FULL = "Raise memory_budget, record less often, or pass reduce=True (mean and variance only)"
ADVICE_REDUCED = "Raise memory_budget or run fewer seeds per call (each (λ, seed) keeps an 8-byte divergence step)"


def plan_chunks(n_seeds, bytes_per_seed, *, fixed_bytes=0, budget=None, chunk_seeds=None, advice=ADVICE_FULL):
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
            f"per seed in flight; memory_budget is {budget} bytes. {advice}")
    return ChunkPlan(n_seeds, int(chunk), bytes_per_seed, fixed_bytes, budget)


def chunk_bytes(n_lams, n_records, dim, itemsize, *, saved_iterates=False, n_quantities=3):
    """Working bytes per seed of one chunk: the kernel's records, flags, final and saved iterates."""
    per_traj = n_quantities * n_records * 8 + 8 + dim * (itemsize + 8) + 4 * 8    # + stream numbers and keys
    if saved_iterates:
        per_traj += n_records * dim * 8
    return int(n_lams * per_traj)


def output_parts(n_lams, n_seeds, n_records, dim, *, reduce=False, n_quantities=3):
    """What the driver holds for the whole run, in bytes: {"records", "flags", "final_iterates"}.

    Full records: (λ, seed, record) float64 per quantity, divergence steps, final iterates;
    ``reduce``: the divergence steps and three running moments per (λ, record) and quantity.
    """
    flags = n_lams * n_seeds * 8
    if reduce:
        return {"records": 3 * n_quantities * n_lams * n_records * 8, "flags": flags, "final_iterates": 0}
    return {"records": n_quantities * n_lams * n_seeds * n_records * 8, "flags": flags,
            "final_iterates": n_lams * n_seeds * dim * 8}


def output_bytes(n_lams, n_seeds, n_records, dim, *, reduce=False, n_quantities=3):
    """Bytes the driver holds for the whole run (the sum of ``output_parts``)."""
    return int(sum(output_parts(n_lams, n_seeds, n_records, dim, reduce=reduce, n_quantities=n_quantities).values()))
