"""numba kernels for records that the array-module formulas evaluate too slowly at scale.

``softmax_subopt`` is the compiled twin of ``kdsim.kernelspec.softmax_subopt`` (same formula,
same branches; tests check they agree to rounding). The array form builds (n, T, K) arrays and
passes over them many times; this one forms each trajectory's logit changes as one small
matrix product and evaluates the rest with samples in the lanes of explicit vectors (``_simd``).
Timings: benchmarks/RESULTS.md.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._kernels_layered import _gemm_nn
from ._kernels_ls import FASTMATH
from ._simd import (LANES, _aligned_empty, _borrow, _vabs, _vadd, _vdiv, _vexp, _vfma, _vload, _vlog, _vmax, _vmul,
                    _vnonneg, _vsplat, _vstore, _vsub, _vsum, _vwhere_gt, _vzero, _vzero_beyond1,
                    aligned_zeros)


#: terms of the series log1p(w) = 2·atanh(s) = 2 Σ_j s^(2j+1)/(2j+1), s = w/(2 + w): on the Taylor branch
#: of ``softmax_subopt`` w = Σ_k p*_k h(d_k) d_k² <= e − 2, so s² < 0.07 and 16 terms leave < 1e-18
_ATANH_COEFS = tuple(1.0 / (2 * j + 1) for j in range(16))


@njit(cache=True, nogil=True, inline="always", fastmath=FASTMATH)
def _vlog1p_taylor_branch(w):
    """log1p(w) per lane for 0 <= w <= e − 2 (within 2 ulp): the atanh series, vectorised (no libm call)."""
    s = _vdiv(w, _vadd(_vsplat(2.0), w))
    s2 = _vmul(s, s)
    q = _vsplat(_ATANH_COEFS[15])
    for j in range(14, -1, -1):
        q = _vfma(q, s2, _vsplat(_ATANH_COEFS[j]))
    return _vmul(_vadd(s, s), q)


def subopt_inputs(A, P, logP):
    """The layouts ``softmax_subopt`` reads: Aᵀ (d', n_pad), p*ᵀ and log p*ᵀ (K, n_pad), samples zero-padded
    to whole vectors (a padded sample has δ = 0 and p* = 0, so it adds 0)."""
    n, dp = A.shape
    K = P.shape[1]
    n_pad = -(-n // LANES) * LANES
    AT = aligned_zeros((dp, n_pad), np.float64)          # rows on cache lines: no vector load split in two
    AT[:, :n] = A.T
    PT = aligned_zeros((K, n_pad), np.float64)
    PT[:, :n] = P.T
    logPT = aligned_zeros((K, n_pad), np.float64)
    logPT[:, :n] = logP.T
    return AT, PT, logPT


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def softmax_subopt(lo, hi, X, xstar, AT, PT, logPT, n, g, l2, h_coef, out):
    """out[t] = f(X[t]) − f* for rows lo .. hi−1 of X, without catastrophic cancellation.

    With e = x − x*, δ_ik = (E a_i)_k, c_i = Σ_k p*_ik δ_ik and d_ik = δ_ik − c_i:
    D_i = log1p(Σ_k p*_ik h(d_ik)) with h(t) = e^t − 1 − t (Taylor series ``h_coef`` by
    Horner for |t| <= 1), or, where max_k |d_ik| > 1, the stable log-sum-exp of
    log p*_ik + d_ik; then f(x) − f* = mean_i D_i + ∇f(x*)ᵀe + ½α‖e‖²
    (``SoftmaxRegression.suboptimality``). ``AT``, ``PT``, ``logPT`` from ``subopt_inputs``
    (n samples, padded), ``g`` = ∇f(x*) (dim,).

    Per trajectory: Δ = E·Aᵀ (K × n_pad) as one register-blocked product (``_gemm_nn``); then
    LANES samples at a time in the lanes of explicit vectors, the Taylor branch for all of them
    (the series of every class by Horner, log1p by its atanh series) and the log-sum-exp branch
    per sample where it applies.
    """
    dp, n_pad = AT.shape
    K = PT.shape[0]
    dim = X.shape[1]
    H = h_coef.shape[0]
    e = np.empty(dim)
    no_rows = np.empty(0, dtype=np.int64)               # Aᵀ's rows are read in order
    zs = _aligned_empty(1, K * LANES, AT)[0]            # a chunk's log p*_k + d_k, class by class
    Dl = _aligned_empty(K, n_pad, AT)
    for t in range(lo, hi):
        lin = 0.0
        sq = 0.0
        for p in range(dim):
            e[p] = X[t, p] - xstar[p]
            lin += e[p] * g[p]
            sq += e[p] * e[p]
        # Δ in column blocks of 4 vectors, every class of a block before the next: the block of Aᵀ
        # (d' × 32 samples) then stays in L1 for the 5 pairs of classes instead of coming from L2 five times
        for q0 in range(0, n_pad, 4 * LANES):
            _gemm_nn(_borrow(Dl), q0, n_pad, _borrow(e), 0, dp, 1, _borrow(AT), q0, n_pad, K, dp,
                     min(4 * LANES, n_pad - q0), False, _borrow(no_rows), 0, False)
        total = _vzero(AT)
        for i0 in range(0, n_pad, LANES):
            c = _vzero(AT)
            for k in range(K):
                c = _vfma(_vload(PT, k * n_pad + i0), _vload(Dl, k * n_pad + i0), c)
            big = _vzero(AT)
            w = _vzero(AT)
            m = _vsplat(-np.inf)
            for k in range(K):
                d = _vsub(_vload(Dl, k * n_pad + i0), c)
                big = _vmax(big, _vabs(d))
                z = _vadd(_vload(logPT, k * n_pad + i0), d)
                _vstore(zs, k * LANES, z)
                m = _vmax(m, z)
                d = _vzero_beyond1(d)
                h = _vsplat(h_coef[H - 1])
                for j in range(H - 2, -1, -1):
                    h = _vfma(h, d, _vsplat(h_coef[j]))
                w = _vfma(_vload(PT, k * n_pad + i0), _vmul(h, _vmul(d, d)), w)
            D = _vlog1p_taylor_branch(w)
            if _vsum(_vnonneg(_vsub(big, _vsplat(1.0)))) > 0.0:
                # the log-sum-exp branch of some sample of the chunk: lse = m + log Σ_k e^(log p*_k + d_k − m)
                # from the stored log p*_k + d_k that gave m: recomputed, they came out a few ulps of |d| away
                # from m, and at |d| ~ 1e18 every term then underflowed
                sm = _vzero(AT)
                for k in range(K):
                    sm = _vadd(sm, _vexp(_vsub(_vload(zs, k * LANES), m)))
                D = _vwhere_gt(big, _vsplat(1.0), _vadd(m, _vlog(sm)), D)
            total = _vadd(total, D)                      # padded samples add D = 0 (δ = 0: the Taylor branch)
        out[t] = _vsum(total) / n + lin + 0.5 * l2 * sq


def _forget_stale_cache():
    from . import _kernels_layered, _kernels_ls, _simd
    from ._numba_cache import forget_if_stale
    forget_if_stale(softmax_subopt.py_func, [_kernels_ls.__file__, _kernels_layered.__file__, _simd.__file__])


_forget_stale_cache()
