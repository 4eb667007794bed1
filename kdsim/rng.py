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

Sampling schemes (``SAMPLINGS``)
--------------------------------
* ``"iid"``: every step draws a fresh b-subset as above (the analysis of docs/theory.md §1).
* ``"reshuffle"``: random reshuffling, as a data loader with ``shuffle=True`` trains. Epoch e
  is a uniformly random permutation of 0 .. n−1 cut in order into batches of b, the last
  one partial (n − (K−1)·b samples) unless ``drop_last``.
* ``"shuffle_once"``: the permutation of epoch 0 is reused in every epoch.

An epoch has K = ``steps_per_epoch(n, b, drop_last)`` steps: ⌈n/b⌉, or ⌊n/b⌋ with
``drop_last`` (the last n mod b positions of each permutation are then unused). Step t is
batch k = t mod K of epoch e = ⌊t/K⌋. Under ``"iid"`` the same K defines the epochs that
λ schedules and epoch-based records count.

The permutation of (seed, stream, epoch) is a Fisher–Yates shuffle driven by counters, so
it too is a pure function of its key (no state between epochs):
key_e = splitmix64(stream_key ^ (2⁶³ + e)) (the top bit keeps these keys apart from the
i.i.d. step keys), and for j = n−1 down to 1, with h = splitmix64(key_e + (n − j)·GOLDEN),
swap positions j and r = ((h >> 32)·(j + 1)) >> 32 of 0 .. n−1. Every permutation has
probability within n·(n/2³²) of 1/n! relative. Engines rebuild it once per epoch (O(n),
or O(b) per step) and keep it per trajectory (n integers).
"""
from __future__ import annotations

import numpy as np

from ._validate import choice, int_in_range

_GOLDEN_INT = 0x9E3779B97F4A7C15
_M1_INT = 0xBF58476D1CE4E5B9
_M2_INT = 0x94D049BB133111EB
GOLDEN = np.uint64(_GOLDEN_INT)
_MASK64 = (1 << 64) - 1
_M1 = np.uint64(_M1_INT)
_M2 = np.uint64(_M2_INT)
_S30, _S27, _S31, _S32 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32)
STREAM_LAMBDA_SHIFT = 32  # stream = seed_index + (lam_index + 1) << 32 without common random numbers
#: Floyd's membership test compares with the earlier picks up to this batch size, else uses an (T, n) scratch
FLOYD_COMPARE_MAX = 32
#: sampling schemes, and the integer code the kernels receive
SAMPLINGS = ("iid", "reshuffle", "shuffle_once")
SAMPLING_CODES = {name: code for code, name in enumerate(SAMPLINGS)}
EPOCH_TAG = np.uint64(1 << 63)


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


def splitmix64_u64(z):
    """``splitmix64`` of one uint64, written once for the compiled kernels: numba compiles it for the
    CPU (``splitmix64_nb``), numba-cuda as a device function (``engines._kernels_cuda``)."""
    z = np.uint64(z) + np.uint64(_GOLDEN_INT)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1_INT)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2_INT)
    return z ^ (z >> np.uint64(31))


def uniform_below_u64(h, m):
    """``uniform_below`` of one uint64, ((h >> 32) · m) >> 32, compiled for both as ``splitmix64_u64``."""
    return ((np.uint64(h) >> np.uint64(32)) * np.uint64(m)) >> np.uint64(32)


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


def steps_per_epoch(n, batch_size, drop_last=False):
    """Steps K of one epoch: ⌈n/b⌉, or ⌊n/b⌋ with ``drop_last`` (module docstring)."""
    n = int_in_range("n", n, 1)
    b = int_in_range("batch_size", batch_size, 1, n)
    return n // b if drop_last else -(-n // b)


def batch_mean_weights(n, batch_size, drop_last=False):
    """Per-sample weights w (n,) with Σ_i w_i ∇f_i = the mean over a data loader's batches of their means.

    The batches are 0 .. n−1 in order cut into batches of b (the last one partial, or dropped with
    ``drop_last``): w_i = 1/(K·|B(i)|). When b divides n this is 1/n (the exact full gradient);
    otherwise the partial batch's samples weigh more, which is why the authors' "full gradient"
    (a pass over a data loader averaging batch means) is inexact. Σ_i w_i = 1.
    """
    K = steps_per_epoch(n, batch_size, drop_last)
    w = np.zeros(n)
    for k in range(K):
        lo, hi = k * batch_size, min((k + 1) * batch_size, n)
        w[lo:hi] = 1.0 / (K * (hi - lo))
    return w


def epoch_of_step(step, n, batch_size, drop_last=False):
    """(epoch e, batch k within it, batch size) of step t: t = e·K + k."""
    K = steps_per_epoch(n, batch_size, drop_last)
    e, k = divmod(int(step), K)
    return e, k, min(batch_size, n - k * batch_size)


def epoch_keys(seed, streams, epoch, xp=np):
    """Per-stream keys of one epoch's permutation: splitmix64(stream_key ^ (2⁶³ + e))."""
    skeys = stream_keys(seed, xp.atleast_1d(xp.asarray(streams, dtype=xp.uint64)), xp)
    return splitmix64(skeys ^ (EPOCH_TAG | np.uint64(epoch)), xp)


def permutations_from_keys(ekeys, n, xp=np):
    """Fisher–Yates permutations (T, n) of 0 .. n−1 for epoch keys ``ekeys`` (T,) (module docstring)."""
    T = ekeys.shape[0]
    perm = xp.empty((T, n), dtype=xp.int64)
    perm[:] = xp.arange(n, dtype=xp.int64)
    rows = xp.arange(T)
    with np.errstate(over="ignore"):
        for j in range(n - 1, 0, -1):
            h = splitmix64(ekeys + np.uint64(((n - j) * _GOLDEN_INT) & _MASK64), xp)
            r = (((h >> _S32) * np.uint64(j + 1)) >> _S32).astype(xp.int64)
            held = perm[rows, r]
            perm[rows, r] = perm[:, j]
            perm[:, j] = held
    return perm


def epoch_permutation(seed, streams, epoch, n, sampling="reshuffle", xp=np):
    """The permutation (len(streams), n) that ``sampling`` uses in ``epoch`` (shuffle-once: epoch 0's)."""
    n = int_in_range("n", n, 1)
    sampling = choice("sampling", sampling, SAMPLINGS[1:])
    epoch = int_in_range("epoch", epoch, 0)
    return permutations_from_keys(epoch_keys(seed, streams, 0 if sampling == "shuffle_once" else epoch, xp), n, xp)


def minibatch(seed, streams, step, n, batch_size, sampling="iid", drop_last=False, xp=np):
    """Indices of one step's minibatch for every stream under any sampling scheme, (len(streams), b_t).

    b_t = batch_size except for the partial last batch of an epoch (``epoch_of_step``).
    The same integers as every engine draws, so external code can be driven by kdsim's
    stream: stream s of seed ``seed`` is trajectory s of ``simulate(..., seed=seed)``
    (with common random numbers, every λ of that seed).
    """
    sampling = choice("sampling", sampling, SAMPLINGS)
    step = int_in_range("step", step, 0)
    if sampling == "iid":
        return minibatch_indices(seed, streams, step, n, batch_size, xp)
    e, k, nb = epoch_of_step(step, n, batch_size, drop_last)
    perm = epoch_permutation(seed, streams, e, n, sampling, xp)
    return xp.ascontiguousarray(perm[:, k * batch_size:k * batch_size + nb])


class EpochBatches:
    """Minibatches of many streams step by step under one scheme, rebuilding permutations once per epoch.

    ``batch(t)`` gives the (T, b_t) indices of step t (steps taken in any order; a new
    epoch rebuilds the (T, n) permutations). The engines' numpy and array-module paths use it.
    """

    def __init__(self, seed, streams, n, batch_size, sampling="iid", drop_last=False, xp=np, taken=None):
        self.xp, self.n, self.b = xp, n, batch_size
        self.code = SAMPLING_CODES[choice("sampling", sampling, SAMPLINGS)]
        self.K = steps_per_epoch(n, batch_size, drop_last)
        self.skeys = stream_keys(seed, xp.atleast_1d(xp.asarray(streams, dtype=xp.uint64)), xp)
        self.taken = taken
        self._epoch, self._perm = None, None

    def batch(self, t):
        if self.code == 0:
            return minibatch_from_keys(self.skeys, t, self.n, self.b, self.xp, self.taken)
        e, k = divmod(int(t), self.K)
        e = 0 if self.code == 2 else e
        if e != self._epoch:
            self._perm = permutations_from_keys(splitmix64(self.skeys ^ (EPOCH_TAG | np.uint64(e)), self.xp),
                                                self.n, self.xp)
            self._epoch = e
        lo = k * self.b
        return self._perm[:, lo:min(lo + self.b, self.n)]

    def rows(self, keep):
        """The same stream set restricted to the rows ``keep`` (a boolean or index array)."""
        out = EpochBatches.__new__(EpochBatches)
        out.__dict__.update(self.__dict__)
        out.skeys = self.skeys[keep]
        out._perm = None if self._perm is None else self._perm[keep]
        return out


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
    splitmix64_nb = _njit(cache=True)(splitmix64_u64)
    uniform_below_nb = _njit(cache=True)(uniform_below_u64)

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
            h = splitmix64_nb(np.uint64(key) + np.uint64(j + 1) * np.uint64(_GOLDEN_INT))
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

    _EPOCH_TAG_INT = 1 << 63

    @_njit(cache=True)
    def epoch_key_nb(stream_key, epoch):
        """Key of one epoch's permutation: splitmix64(stream_key ^ (2⁶³ + e)) (equals ``epoch_keys``)."""
        return splitmix64_nb(np.uint64(stream_key) ^ (np.uint64(_EPOCH_TAG_INT) | np.uint64(epoch)))

    @_njit(cache=True)
    def permutation_into_nb(ekey, n, perm):
        """Fisher–Yates permutation of 0 .. n−1 for epoch key ``ekey`` into ``perm[:n]`` (twin of
        ``permutations_from_keys``)."""
        for j in range(n):
            perm[j] = j
        for j in range(n - 1, 0, -1):
            h = splitmix64_nb(np.uint64(ekey) + np.uint64(n - j) * np.uint64(_GOLDEN_INT))
            r = np.int64(uniform_below_nb(h, np.uint64(j + 1)))
            held = perm[r]
            perm[r] = perm[j]
            perm[j] = held

    @_njit(cache=True)
    def epoch_batch_nb(stream_key, t, n, code, K, perm, perm_epoch, slot):
        """Make ``perm[slot]`` the permutation of step t's epoch (rebuilt only when the epoch changed;
        ``perm_epoch[slot]`` is −1 at first) and return t's batch number k within the epoch.

        ``code`` 1 reshuffle, 2 shuffle-once (epoch 0's permutation in every epoch); ``K`` steps per epoch.
        """
        e = t // K
        k = t - e * K
        if code == 2:
            e = 0
        if perm_epoch[slot] != e:
            permutation_into_nb(epoch_key_nb(stream_key, e), n, perm[slot])
            perm_epoch[slot] = e
        return k

    @_njit(cache=True)
    def batch_into_nb(stream_key, t, n, b, code, K, perm, perm_epoch, slot, out, taken):
        """Step t's minibatch of one trajectory into ``out``; returns its size b_t.

        ``code``: 0 i.i.d. (Floyd, ``minibatch_into_nb``), 1 reshuffle, 2 shuffle-once;
        ``K`` steps per epoch. ``perm[slot]`` (n integers) and ``perm_epoch[slot]`` (−1 at
        first) cache the trajectory's current permutation: a new epoch rebuilds it.
        """
        if code == 0:
            minibatch_into_nb(step_key_nb(stream_key, t), n, b, out, taken)
            return b
        lo = epoch_batch_nb(stream_key, t, n, code, K, perm, perm_epoch, slot) * b
        nb = min(b, n - lo)
        for j in range(nb):
            out[j] = perm[slot, lo + j]
        return nb

    @_njit(cache=True)
    def minibatch_nb(seed, streams, step, n, b, code, K):
        """numba twin of ``minibatch`` (no validation); a (len(streams), b_t) array."""
        t = streams.shape[0]
        e = step // K
        nb = b if code == 0 else min(b, n - (step - e * K) * b)
        out = np.empty((t, nb), dtype=np.int64)
        perm = np.empty((1, n), dtype=np.int64)
        perm_epoch = np.full(1, -1, dtype=np.int64)
        taken = np.zeros(n, dtype=np.bool_)
        sk = seed_key_nb(seed)
        for i in range(t):
            perm_epoch[0] = -1
            batch_into_nb(stream_key_nb(sk, streams[i]), step, n, b, code, K, perm, perm_epoch, 0, out[i], taken)
        return out
