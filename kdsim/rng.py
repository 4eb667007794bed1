"""Counter-based minibatch indices, reproducible by every backend.

A minibatch is a pure function of (seed, stream, step): no generator state is
carried between steps, so the numpy reference engine, the numba kernels and a GPU
kernel draw the same indices from the same integers.

Construction (all arithmetic on uint64, wrapping):

* ``splitmix64(z)``: the SplitMix64 finaliser, a bijective 64-bit mixer.
* key  = splitmix64(splitmix64(splitmix64(seed) ^ stream) ^ step)
* draw j (j = 0 .. b-1) uses h_j = splitmix64(key + (j + 1) * GOLDEN).
* A uniform integer in [0, m) is ``((h >> 32) * m) >> 32`` (multiply-shift on the
  top 32 bits; each value has probability within m / 2**32 of 1/m relative).
* The minibatch is Floyd's algorithm: for j = 0 .. b-1 with c = n - b + j, draw
  r uniform in [0, c]; take r unless already taken, else take c. The picks form a
  uniformly random b-subset; column j of the output is the j-th pick, and engines
  sum per-sample terms in that column order.
"""
from __future__ import annotations

import numpy as np

from ._validate import int_in_range

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_GOLDEN_INT = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S32 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32)
STREAM_LAMBDA_SHIFT = 32  # stream = seed_index + (lam_index + 1) << 32 without common random numbers
#: Floyd's membership test compares with the earlier picks up to this batch size, else uses an (T, n) scratch
FLOYD_COMPARE_MAX = 32


def splitmix64(z, xp=np):
    """SplitMix64 finaliser on uint64 arrays of module ``xp`` (numpy or CuPy; wrapping arithmetic).

    Every operand is a uint64 array or a numpy uint64 scalar, so numpy and CuPy compute
    the same integers.
    """
    z = xp.asarray(z, dtype=xp.uint64)
    with np.errstate(over="ignore"):
        z = z + GOLDEN
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def stream_keys(seed, streams, xp=np):
    """Per-stream keys splitmix64(splitmix64(seed) ^ stream), an array of module ``xp``."""
    seed_key = splitmix64(np.array([seed], dtype=np.uint64))[0]
    return splitmix64(xp.asarray(streams, dtype=xp.uint64) ^ seed_key, xp)


def step_keys(seed, streams, step):
    """Per-stream 64-bit key of one step."""
    return splitmix64(stream_keys(seed, streams) ^ np.uint64(step))


def uniform_below(h, m):
    """Map 64-bit hashes to integers in [0, m) by multiply-shift of the top 32 bits."""
    m = np.asarray(m, dtype=np.uint64)
    return ((h >> _S32) * m) >> _S32


def stream_ids(n_seeds, n_lams, common_random_numbers=True, start=0):
    """Stream number of each (λ, seed) trajectory of seeds start .. start + n_seeds − 1, shape (n_lams, n_seeds).

    With common random numbers every λ reuses the seed's stream; otherwise each
    (λ, seed) pair gets its own stream.
    """
    return streams_of_seeds(np.arange(start, start + n_seeds, dtype=np.uint64), n_lams, common_random_numbers)


def streams_of_seeds(seeds, n_lams, common_random_numbers=True):
    """Stream numbers (n_lams, len(seeds)) of the given seed numbers (see ``stream_ids``)."""
    seeds = np.asarray(seeds, dtype=np.uint64)
    if common_random_numbers:
        return np.broadcast_to(seeds, (n_lams, len(seeds))).copy()
    lam_part = (np.arange(n_lams, dtype=np.uint64) + np.uint64(1)) << np.uint64(STREAM_LAMBDA_SHIFT)
    return lam_part[:, None] + seeds[None, :]


def minibatch_from_keys(skeys, step, n, b, xp=np, taken=None):
    """Minibatch indices (T, b) of one step for streams with keys ``skeys`` (T,), arrays of module ``xp``.

    Floyd's algorithm (module docstring). Membership is a comparison with the earlier
    picks (O(b²), no scratch) or, when ``taken`` — a boolean (T, n) array, all False —
    is given, a lookup there (reset before return). b = n gives 0 .. n−1 in order.
    """
    T = skeys.shape[0]
    if b == n:
        return xp.broadcast_to(xp.arange(n, dtype=xp.int64), (T, n))
    keys = splitmix64(skeys ^ np.uint64(step), xp)
    out = xp.empty((T, b), dtype=xp.int64)
    rows = xp.arange(T) if taken is not None else None
    with np.errstate(over="ignore"):
        for j in range(b):
            c = n - b + j
            h = splitmix64(keys + np.uint64(((j + 1) * _GOLDEN_INT) & _MASK64), xp)
            r = (((h >> _S32) * np.uint64(c + 1)) >> _S32).astype(xp.int64)
            if j == 0:
                pick = r
            elif taken is not None:
                pick = xp.where(taken[rows, r], c, r)
            else:
                pick = xp.where((out[:, :j] == r[:, None]).any(axis=1), c, r)
            if taken is not None:
                taken[rows, pick] = True
            out[:, j] = pick
    if taken is not None:
        taken[rows[:, None], out] = False
    return out


def minibatch_indices(seed, streams, step, n, batch_size, xp=np):
    """Indices of one step's minibatch for every stream, shape (len(streams), batch_size).

    Drawn without replacement (Floyd's algorithm); identical for identical
    (seed, stream, step, n, batch_size), whatever the array module.
    """
    n = int_in_range("n", n, 1)
    b = int_in_range("batch_size", batch_size, 1, n)
    skeys = stream_keys(seed, xp.atleast_1d(xp.asarray(streams, dtype=xp.uint64)), xp)
    taken = xp.zeros((skeys.shape[0], n), dtype=bool) if FLOYD_COMPARE_MAX < b < n else None
    return xp.ascontiguousarray(minibatch_from_keys(skeys, step, n, b, xp, taken))


# ----------------------------------------------------------------------------
# numba twins (same integers as the numpy functions above; tested equal)
#
# Kernels derive a per-stream key once, ``stream_key_nb(seed_key_nb(seed), stream)``,
# then per step ``step_key_nb(stream_key, step)`` and fill a minibatch with
# ``minibatch_into_nb``. numba promotes uint64 ∘ int64 to float64, so every
# operand is cast to uint64 explicitly.
try:
    from numba import njit as _njit
except ImportError:  # numba is optional at import time; the numba engine checks for it
    _njit = None

if _njit is not None:
    _G_INT = 0x9E3779B97F4A7C15
    _M1_INT = 0xBF58476D1CE4E5B9
    _M2_INT = 0x94D049BB133111EB

    @_njit(cache=True)
    def splitmix64_nb(z):
        """SplitMix64 finaliser of one uint64 (numba twin of ``splitmix64``)."""
        z = np.uint64(z) + np.uint64(_G_INT)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1_INT)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2_INT)
        return z ^ (z >> np.uint64(31))

    @_njit(cache=True)
    def seed_key_nb(seed):
        """splitmix64(seed): the part of ``step_keys`` shared by every stream."""
        return splitmix64_nb(np.uint64(seed))

    @_njit(cache=True)
    def stream_key_nb(seed_key, stream):
        """splitmix64(seed_key ^ stream): the per-stream part of ``step_keys``."""
        return splitmix64_nb(np.uint64(seed_key) ^ np.uint64(stream))

    @_njit(cache=True)
    def step_key_nb(stream_key, step):
        """Key of one step: splitmix64(stream_key ^ step) (equals ``step_keys``)."""
        return splitmix64_nb(np.uint64(stream_key) ^ np.uint64(step))

    @_njit(cache=True)
    def uniform_below_nb(h, m):
        """((h >> 32) · m) >> 32 on uint64 (twin of ``uniform_below``)."""
        return ((np.uint64(h) >> np.uint64(32)) * np.uint64(m)) >> np.uint64(32)

    @_njit(cache=True)
    def minibatch_into_nb(key, n, b, out, taken):
        """Write one minibatch (Floyd's algorithm) into ``out[:b]``.

        ``taken`` is a boolean scratch array of length n, all False on entry and
        on exit (only the picked entries are touched, so a step costs O(b)).
        ``b == n`` gives 0..n-1 in order, like ``minibatch_indices``.
        """
        if b == n:
            for j in range(n):
                out[j] = j
            return
        for j in range(b):
            c = n - b + j
            h = splitmix64_nb(np.uint64(key) + np.uint64(j + 1) * np.uint64(_G_INT))
            r = np.int64(uniform_below_nb(h, np.uint64(c + 1)))
            pick = c if taken[r] else r
            taken[pick] = True
            out[j] = pick
        for j in range(b):
            taken[out[j]] = False

    @_njit(cache=True)
    def minibatch_indices_nb(seed, streams, step, n, batch_size):
        """numba twin of ``minibatch_indices`` (no validation), shape (len(streams), b)."""
        t = streams.shape[0]
        out = np.empty((t, batch_size), dtype=np.int64)
        taken = np.zeros(n, dtype=np.bool_)
        sk = seed_key_nb(seed)
        for i in range(t):
            key = step_key_nb(stream_key_nb(sk, streams[i]), step)
            minibatch_into_nb(key, n, batch_size, out[i], taken)
        return out
