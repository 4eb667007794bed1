"""numba kernels for records that the array-module formulas evaluate too slowly at scale.

``softmax_subopt`` is the compiled twin of ``kdsim.kernelspec.softmax_subopt`` (same formula,
same branches; tests check they agree to rounding). The array form builds (n, T, K) arrays and
passes over them many times; this one streams the logit changes of two samples and two classes
at a time through registers (four independent sums). Timings: benchmarks/RESULTS.md.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._kernels_ls import FASTMATH


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def softmax_subopt(lo, hi, X, xstar, A, P, logP, g, l2, h_coef, out):
    """out[t] = f(X[t]) − f* for rows lo .. hi−1 of X, without catastrophic cancellation.

    With e = x − x*, δ_ik = (E a_i)_k, c_i = Σ_k p*_ik δ_ik and d_ik = δ_ik − c_i:
    D_i = log1p(Σ_k p*_ik h(d_ik)) with h(t) = e^t − 1 − t (Taylor series ``h_coef`` by
    Horner for |t| <= 1), or, where max_k |d_ik| > 1, the stable log-sum-exp of
    log p*_ik + d_ik; then f(x) − f* = mean_i D_i + ∇f(x*)ᵀe + ½α‖e‖²
    (``SoftmaxRegression.suboptimality``). ``P``/``logP`` are p* and log p* (n, K),
    ``g`` = ∇f(x*) (dim,), ``A`` (n, d').
    """
    n, dp = A.shape
    K = P.shape[1]
    dim = X.shape[1]
    H = h_coef.shape[0]
    e = np.empty(dim)
    dlt = np.empty((2, K))
    for t in range(lo, hi):
        lin = 0.0
        sq = 0.0
        for p in range(dim):
            e[p] = X[t, p] - xstar[p]
            lin += e[p] * g[p]
            sq += e[p] * e[p]
        total = 0.0
        for i0 in range(0, n, 2):
            # δ of two samples and two classes per pass: four independent sums share the loads
            i1 = min(i0 + 1, n - 1)                # an odd last sample is computed twice
            for k0 in range(0, K, 2):
                k1 = min(k0 + 1, K - 1)
                b0 = np.uint64(k0 * dp)
                b1 = np.uint64(k1 * dp)
                s00 = 0.0
                s01 = 0.0
                s10 = 0.0
                s11 = 0.0
                for q in range(np.uint64(dp)):
                    e0 = e[b0 + q]
                    e1 = e[b1 + q]
                    a0 = A[i0, q]
                    a1 = A[i1, q]
                    s00 += e0 * a0
                    s01 += e0 * a1
                    s10 += e1 * a0
                    s11 += e1 * a1
                dlt[0, k0] = s00
                dlt[1, k0] = s01
                dlt[0, k1] = s10
                dlt[1, k1] = s11
            for jj in range(2 if i1 > i0 else 1):
                i = i0 + jj
                c = 0.0
                for k in range(K):
                    c += P[i, k] * dlt[jj, k]
                big = False
                for k in range(K):
                    dlt[jj, k] -= c
                    if abs(dlt[jj, k]) > 1.0:
                        big = True
                if not big:
                    w = 0.0
                    for k in range(K):
                        tk = dlt[jj, k]
                        h = h_coef[H - 1]
                        for j in range(H - 2, -1, -1):
                            h = h * tk + h_coef[j]
                        w += P[i, k] * (h * tk * tk)
                    total += math.log1p(w)
                else:
                    m = logP[i, 0] + dlt[jj, 0]
                    for k in range(1, K):
                        if logP[i, k] + dlt[jj, k] > m:
                            m = logP[i, k] + dlt[jj, k]
                    s = 0.0
                    for k in range(K):
                        s += math.exp(logP[i, k] + dlt[jj, k] - m)
                    total += m + math.log(s)
        out[t] = total / n + lin + 0.5 * l2 * sq


def _forget_stale_cache():
    from . import _kernels_ls
    from ._numba_cache import forget_if_stale
    forget_if_stale(softmax_subopt.py_func, [_kernels_ls.__file__])


_forget_stale_cache()
