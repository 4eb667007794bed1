"""numba kernels for records that the problems' numpy code evaluates too slowly at scale.

``softmax_subopt`` is the compiled twin of ``SoftmaxRegression.suboptimality`` (same
formula, same branches; tests check they agree to rounding). The numpy form builds
(T, n, K) arrays and makes some 40 passes over them; this one streams each sample's K
logit changes through registers, about 10× faster per record.
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
    dlt = np.empty(K)
    for t in range(lo, hi):
        lin = 0.0
        sq = 0.0
        for p in range(dim):
            e[p] = X[t, p] - xstar[p]
            lin += e[p] * g[p]
            sq += e[p] * e[p]
        total = 0.0
        for i in range(n):
            c = 0.0
            for k in range(K):
                base = np.uint64(k * dp)
                s = 0.0
                for q in range(np.uint64(dp)):
                    s += e[base + q] * A[i, q]
                dlt[k] = s
                c += P[i, k] * s
            big = False
            for k in range(K):
                dlt[k] -= c
                if abs(dlt[k]) > 1.0:
                    big = True
            if not big:
                w = 0.0
                for k in range(K):
                    tk = dlt[k]
                    h = h_coef[H - 1]
                    for j in range(H - 2, -1, -1):
                        h = h * tk + h_coef[j]
                    w += P[i, k] * (h * tk * tk)
                total += math.log1p(w)
            else:
                m = logP[i, 0] + dlt[0]
                for k in range(1, K):
                    if logP[i, k] + dlt[k] > m:
                        m = logP[i, k] + dlt[k]
                s = 0.0
                for k in range(K):
                    s += math.exp(logP[i, k] + dlt[k] - m)
                total += m + math.log(s)
        out[t] = total / n + lin + 0.5 * l2 * sq
