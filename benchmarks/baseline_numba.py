"""Baseline (c): a plain numba kernel, one trajectory per ``prange`` iteration.

DESIGN.md's CPU target compares kdsim with "a plain one-thread-per-trajectory numba
kernel"; this is that kernel, written the obvious way and nothing more: the iterate
as 2-D weight matrices, the minibatch handled as small matrices (its logits, then its
residuals, then one gradient pass), every (λ, seed) trajectory independent (no
affine-in-λ form, no interleaving of seeds), ``numba.prange`` over trajectories,
records evaluated inside the loop with the formulas of ``benchmarks.common``. The
minibatches are kdsim's, drawn in the kernel with ``kdsim.rng``'s numba twins
(``step_key_nb``, ``minibatch_into_nb``); the fast-math flags are kdsim's (no
nnan/ninf, so the divergence guard stays).

Families: one-layer models (least squares, softmax regression), deep linear
networks whose layers are all square of one width (W4) and MLPs with one hidden layer
(W5: W_1, b_1, W_2, b_2 as 2-D/1-D arrays, the hidden activation by code, biases
optional); other shapes raise ``NotImplementedError``. ``run(problem, plan, dtype)`` returns the arrays of kdsim's
engines plus ``timing`` (``compile_s`` of the first call in the process, ``run_s``).
"""
from __future__ import annotations

import time

import numpy as np
from numba import njit, prange

from kdsim.rng import minibatch_into_nb, splitmix64, step_key_nb

from .common import RECORDS, prepare

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


@njit(cache=True, fastmath=FASTMATH)
def _residual_rows(Z, Y, rt, idx, a, use_teacher, softmax, inv_b):
    """Z (b, m) logits -> (1/b)(∂g/∂z − a·rt) in place."""
    b, m = Z.shape
    for j in range(b):
        i = idx[j]
        if softmax:
            zmax = Z[j, 0]
            for k in range(1, m):
                if Z[j, k] > zmax:
                    zmax = Z[j, k]
            s = Z[j, 0] - Z[j, 0]
            for k in range(m):
                e = np.exp(Z[j, k] - zmax)
                Z[j, k] = e
                s += e
            for k in range(m):
                Z[j, k] = Z[j, k] / s - Y[i, k]
        else:
            for k in range(m):
                Z[j, k] = Z[j, k] - Y[i, k]
        if use_teacher:
            for k in range(m):
                Z[j, k] -= a * rt[i, k]
        for k in range(m):
            Z[j, k] *= inv_b


@njit(cache=True, inline="always")
def _act(act, z):
    """σ(z): 0 identity, 1 ReLU, 2 sigmoid, 3 tanh."""
    if act == 1:
        return z if z > 0 else z - z
    if act == 2:
        if z >= 0:
            return 1.0 / (1.0 + np.exp(-z))
        e = np.exp(z)
        return e / (1.0 + e)
    if act == 3:
        return np.tanh(z)
    return z


@njit(cache=True, inline="always")
def _act_d1(act, h):
    """σ'(z) from h = σ(z) (ReLU: 1 where h > 0)."""
    if act == 1:
        return h - h + 1 if h > 0 else h - h
    if act == 2:
        return h * (1 - h)
    if act == 3:
        return 1 - h * h
    return h - h + 1


@njit(cache=True, fastmath=FASTMATH)
def _loss(W, A, Y, softmax):
    """Mean data loss over all samples of an end-to-end map W (m, d) (float64)."""
    n, d = A.shape
    m = W.shape[0]
    z = np.empty(m)
    tot = 0.0
    for i in range(n):
        for k in range(m):
            acc = 0.0
            for q in range(d):
                acc += W[k, q] * A[i, q]
            z[k] = acc
        if softmax:
            zmax = z[0]
            for k in range(1, m):
                if z[k] > zmax:
                    zmax = z[k]
            s = 0.0
            zy = 0.0
            for k in range(m):
                s += np.exp(z[k] - zmax)
                zy += z[k] * Y[i, k]
            tot += zmax + np.log(s) - zy
        else:
            for k in range(m):
                r = z[k] - Y[i, k]
                tot += 0.5 * r * r
    return tot / n


@njit(cache=True, fastmath=FASTMATH)
def _records(M, x2, kind, softmax, xstar, theta, F, A64, Y64, alpha, f_star, out):
    """dist2_opt, subopt, dist2_teacher of an end-to-end map M (m, d) float64 into out[0:3].

    kind 0 least squares (F form), 1 softmax (class-centred distances), 2 deep linear.
    ``x2`` is ‖x‖² of the parameters (for the ridge)."""
    m, d = M.shape
    C = M.copy()
    if kind == 1:
        for q in range(d):
            mu = 0.0
            for k in range(m):
                mu += M[k, q]
            mu /= m
            for k in range(m):
                C[k, q] = M[k, q] - mu
    d1 = 0.0
    d3 = 0.0
    for k in range(m):
        for q in range(d):
            e = C[k, q] - xstar[k * d + q]
            w = C[k, q] - theta[k * d + q]
            d1 += e * e
            d3 += w * w
    if kind == 0:
        s3 = 0.0
        for r in range(F.shape[0]):
            acc = 0.0
            for q in range(r, d):
                acc += F[r, q] * (C[0, q] - xstar[q])
            s3 += acc * acc
        sub = 0.5 * (s3 + alpha * d1)
    else:
        sub = _loss(M, A64, Y64, softmax) + 0.5 * alpha * x2 - f_star
    out[0] = d1
    out[1] = sub
    out[2] = d3


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def one_layer(A, Y, rt, ridge, tfull, alpha, gam, inv_b, x0, acoef, ccoef, keys, b, steps, rec_steps,
              softmax, use_teacher, limit, kind, xstar, theta, F, A64, Y64, alpha64, f_star, out, div, xfin):
    """One-layer models: x is W (m, d) (least squares m = 1); trajectory j per prange iteration."""
    n, d = A.shape
    m = x0.shape[0]
    T = keys.shape[0]
    R = rec_steps.shape[0]
    for j in prange(T):
        W = x0.copy()
        G = np.empty_like(x0)
        Z = np.empty((b, m), dtype=x0.dtype)
        idx = np.empty(b, dtype=np.int64)
        taken = np.zeros(n, dtype=np.bool_)
        M64 = np.empty((m, d))
        a = acoef[j]
        c = ccoef[j]
        rec = 0
        for t in range(steps + 1):
            if rec < R and rec_steps[rec] == t:
                x2 = 0.0
                for k in range(m):
                    for q in range(d):
                        M64[k, q] = W[k, q]
                        x2 += M64[k, q] * M64[k, q]
                _records(M64, x2, kind, softmax, xstar, theta, F, A64, Y64, alpha64, f_star, out[j, rec])
                rec += 1
            if t == steps:
                break
            minibatch_into_nb(step_key_nb(keys[j], t), n, b, idx, taken)
            for jj in range(b):
                i = idx[jj]
                for k in range(m):
                    acc = W[k, 0] - W[k, 0]
                    for q in range(d):
                        acc += W[k, q] * A[i, q]
                    Z[jj, k] = acc
            _residual_rows(Z, Y, rt, idx, a, use_teacher, softmax, inv_b)
            for k in range(m):
                for q in range(d):
                    G[k, q] = c * tfull[k, q] + alpha * W[k, q] - a * ridge[k, q]
            for jj in range(b):
                i = idx[jj]
                for k in range(m):
                    zk = Z[jj, k]
                    for q in range(d):
                        G[k, q] += zk * A[i, q]
            nx = W[0, 0] - W[0, 0]
            for k in range(m):
                for q in range(d):
                    w = W[k, q] - gam * G[k, q]
                    W[k, q] = w
                    nx += w * w
            if not (nx <= limit):
                div[j] = t + 1
                for k in range(m):
                    for q in range(d):
                        W[k, q] = np.nan
                break
        for k in range(m):
            for q in range(d):
                xfin[j, k * d + q] = W[k, q]


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def deep_square(A, Y, rt, Gt, ridge, alpha, gam, inv_b, x0, acoef, ccoef, keys, b, steps, rec_steps,
                softmax, use_teacher, limit, xstar, theta, A64, Y64, alpha64, f_star, out, div, xfin):
    """Deep linear nets with D square layers of width h (x0 is (D, h, h)); one trajectory per iteration."""
    n = A.shape[0]
    D, h, _ = x0.shape
    T = keys.shape[0]
    R = rec_steps.shape[0]
    F0 = np.zeros((0, 0))
    for j in prange(T):
        W = x0.copy()
        G = np.empty_like(x0)
        H = np.empty((D + 1, b, h), dtype=x0.dtype)      # activations h_0 .. h_D of the minibatch
        Dl = np.empty((b, h), dtype=x0.dtype)
        Dn = np.empty((b, h), dtype=x0.dtype)
        Q = np.empty((D, h, h), dtype=x0.dtype)
        V = np.empty((h, h), dtype=x0.dtype)
        Vn = np.empty((h, h), dtype=x0.dtype)
        idx = np.empty(b, dtype=np.int64)
        taken = np.zeros(n, dtype=np.bool_)
        M = np.empty((h, h))
        Mn = np.empty((h, h))
        a = acoef[j]
        c = ccoef[j]
        rec = 0
        for t in range(steps + 1):
            if rec < R and rec_steps[rec] == t:
                x2 = 0.0
                for r in range(h):
                    for q in range(h):
                        M[r, q] = W[0, r, q]
                for l in range(D):
                    for r in range(h):
                        for q in range(h):
                            x2 += np.float64(W[l, r, q]) * np.float64(W[l, r, q])
                for l in range(1, D):
                    for r in range(h):
                        for q in range(h):
                            acc = 0.0
                            for s in range(h):
                                acc += W[l, r, s] * M[s, q]
                            Mn[r, q] = acc
                    M[:, :] = Mn
                _records(M, x2, 2, softmax, xstar, theta, F0, A64, Y64, alpha64, f_star, out[j, rec])
                rec += 1
            if t == steps:
                break
            minibatch_into_nb(step_key_nb(keys[j], t), n, b, idx, taken)
            for jj in range(b):
                for q in range(h):
                    H[0, jj, q] = A[idx[jj], q]
            for l in range(D):
                for jj in range(b):
                    for r in range(h):
                        acc = W[l, r, 0] - W[l, r, 0]
                        for q in range(h):
                            acc += W[l, r, q] * H[l, jj, q]
                        H[l + 1, jj, r] = acc
            for jj in range(b):
                for r in range(h):
                    Dl[jj, r] = H[D, jj, r]
            _residual_rows(Dl, Y, rt, idx, a, use_teacher, softmax, inv_b)
            for l in range(D - 1, -1, -1):
                for r in range(h):
                    for q in range(h):
                        G[l, r, q] = alpha * W[l, r, q] + (c - a) * ridge[l * h * h + r * h + q]
                for jj in range(b):
                    for r in range(h):
                        dr = Dl[jj, r]
                        for q in range(h):
                            G[l, r, q] += dr * H[l, jj, q]
                if l > 0:
                    for jj in range(b):
                        for q in range(h):
                            Dn[jj, q] = W[l, 0, q] - W[l, 0, q]
                        for r in range(h):
                            dr = Dl[jj, r]
                            for q in range(h):
                                Dn[jj, q] += dr * W[l, r, q]
                    Dl[:, :] = Dn
            if c != 0:
                # c·J(x)ᵀGt: block l = (W_D⋯W_{l+1})ᵀ (c Gt) (W_{l−1}⋯W_1)ᵀ
                for r in range(h):
                    for q in range(h):
                        Q[0, r, q] = 1.0 if r == q else 0.0
                for l in range(1, D):
                    for r in range(h):
                        for q in range(h):
                            acc = W[0, 0, 0] - W[0, 0, 0]
                            for s in range(h):
                                acc += W[l - 1, r, s] * Q[l - 1, s, q]
                            Q[l, r, q] = acc
                for r in range(h):
                    for q in range(h):
                        V[r, q] = c * Gt[r, q]
                for l in range(D - 1, -1, -1):
                    for r in range(h):
                        for q in range(h):
                            acc = W[0, 0, 0] - W[0, 0, 0]
                            for s in range(h):
                                acc += V[r, s] * Q[l, q, s]
                            G[l, r, q] += acc
                    if l > 0:
                        for r in range(h):
                            for q in range(h):
                                acc = W[0, 0, 0] - W[0, 0, 0]
                                for s in range(h):
                                    acc += W[l, s, r] * V[s, q]
                                Vn[r, q] = acc
                        V[:, :] = Vn
            nx = W[0, 0, 0] - W[0, 0, 0]
            for l in range(D):
                for r in range(h):
                    for q in range(h):
                        w = W[l, r, q] - gam * G[l, r, q]
                        W[l, r, q] = w
                        nx += w * w
            if not (nx <= limit):
                div[j] = t + 1
                for l in range(D):
                    for r in range(h):
                        for q in range(h):
                            W[l, r, q] = np.nan
                break
        for l in range(D):
            for r in range(h):
                for q in range(h):
                    xfin[j, l * h * h + r * h + q] = W[l, r, q]

@njit(cache=True, fastmath=FASTMATH)
def _mlp_records(W1, b1, W2, b2, x2, act, softmax, function_space, xstar, theta, A64, Y64, alpha, f_star, out):
    """dist2_opt, subopt, dist2_teacher of a one-hidden-layer MLP (float64 copies) into out[0:3].

    Distances between parameters (x = W_1, W_2, b_1, b_2 flattened) or, with ``function_space``,
    between the outputs on every sample stacked and scaled by 1/√n; ``x2`` is ‖x‖²."""
    n, d = A64.shape
    h = W1.shape[0]
    m = W2.shape[0]
    u = np.empty(h)
    z = np.empty(m)
    rn = 1.0 / np.sqrt(n)
    tot = 0.0
    d1 = 0.0
    d3 = 0.0
    for i in range(n):
        for r in range(h):
            acc = b1[r]
            for q in range(d):
                acc += W1[r, q] * A64[i, q]
            u[r] = _act(act, acc)
        for k in range(m):
            acc = b2[k]
            for r in range(h):
                acc += W2[k, r] * u[r]
            z[k] = acc
        if function_space:
            for k in range(m):
                e = z[k] * rn - xstar[i * m + k]
                w = z[k] * rn - theta[i * m + k]
                d1 += e * e
                d3 += w * w
        if softmax:
            zmax = z[0]
            for k in range(1, m):
                if z[k] > zmax:
                    zmax = z[k]
            s = 0.0
            zy = 0.0
            for k in range(m):
                s += np.exp(z[k] - zmax)
                zy += z[k] * Y64[i, k]
            tot += zmax + np.log(s) - zy
        else:
            for k in range(m):
                r2 = z[k] - Y64[i, k]
                tot += 0.5 * r2 * r2
    if not function_space:
        p = 0
        for blk in (W1.ravel(), W2.ravel(), b1, b2):
            for q in range(blk.shape[0]):
                if p >= xstar.shape[0]:                  # no biases: b1, b2 are zeros outside x
                    break
                e = blk[q] - xstar[p]
                w = blk[q] - theta[p]
                d1 += e * e
                d3 += w * w
                p += 1
    out[0] = d1
    out[1] = tot / n + 0.5 * alpha * x2 - f_star
    out[2] = d3


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def mlp_one_hidden(A, Y, rt, ridge, alpha, gam, inv_b, x0, acoef, ccoef, keys, b, steps, rec_steps, softmax,
                   use_teacher, limit, h, act, has_bias, function_space, xstar, theta, A64, Y64, alpha64, f_star, out,
                   div, xfin):
    """MLPs d → h → m (one hidden layer, activation ``act``, biases when ``has_bias``); x = W_1 (h, d),
    W_2 (m, h), then b_1, b_2 (kdsim's layout). One trajectory per prange iteration. ``ccoef`` is
    unused (no corrected KD for MLPs: ``common.prepare`` refuses it)."""
    n, d = A.shape
    m = Y.shape[1]
    o2 = h * d
    ob = o2 + m * h
    T = keys.shape[0]
    R = rec_steps.shape[0]
    dim = x0.shape[0]
    for j in prange(T):
        W1 = x0[:o2].reshape(h, d).copy()
        W2 = x0[o2:ob].reshape(m, h).copy()
        b1 = np.zeros(h, dtype=x0.dtype)
        b2 = np.zeros(m, dtype=x0.dtype)
        if has_bias:
            b1[:] = x0[ob:ob + h]
            b2[:] = x0[ob + h:ob + h + m]
        R1 = ridge[:o2].reshape(h, d)
        R2 = ridge[o2:ob].reshape(m, h)
        Rb1 = np.zeros(h, dtype=x0.dtype)
        Rb2 = np.zeros(m, dtype=x0.dtype)
        if has_bias:
            Rb1[:] = ridge[ob:ob + h]
            Rb2[:] = ridge[ob + h:ob + h + m]
        G1 = np.empty_like(W1)
        G2 = np.empty_like(W2)
        Gb1 = np.empty_like(b1)
        Gb2 = np.empty_like(b2)
        U = np.empty((b, h), dtype=x0.dtype)             # hidden activations of the minibatch
        Z = np.empty((b, m), dtype=x0.dtype)             # logits, then the scaled residuals
        idx = np.empty(b, dtype=np.int64)
        taken = np.zeros(n, dtype=np.bool_)
        a = acoef[j]
        rec = 0
        for t in range(steps + 1):
            if rec < R and rec_steps[rec] == t:
                x2 = 0.0
                for blk in (W1.ravel(), W2.ravel(), b1, b2):
                    for q in range(blk.shape[0]):
                        x2 += np.float64(blk[q]) * np.float64(blk[q])
                _mlp_records(W1.astype(np.float64), b1.astype(np.float64), W2.astype(np.float64),
                             b2.astype(np.float64), x2, act, softmax, function_space, xstar, theta, A64, Y64,
                             alpha64, f_star, out[j, rec])
                rec += 1
            if t == steps:
                break
            minibatch_into_nb(step_key_nb(keys[j], t), n, b, idx, taken)
            for jj in range(b):
                i = idx[jj]
                for r in range(h):
                    acc = b1[r]
                    for q in range(d):
                        acc += W1[r, q] * A[i, q]
                    U[jj, r] = _act(act, acc)
                for k in range(m):
                    acc = b2[k]
                    for r in range(h):
                        acc += W2[k, r] * U[jj, r]
                    Z[jj, k] = acc
            _residual_rows(Z, Y, rt, idx, a, use_teacher, softmax, inv_b)
            for r in range(h):
                Gb1[r] = alpha * b1[r] - a * Rb1[r]
                for q in range(d):
                    G1[r, q] = alpha * W1[r, q] - a * R1[r, q]
            for k in range(m):
                Gb2[k] = alpha * b2[k] - a * Rb2[k]
                for r in range(h):
                    G2[k, r] = alpha * W2[k, r] - a * R2[k, r]
            for jj in range(b):
                i = idx[jj]
                for k in range(m):
                    zk = Z[jj, k]
                    Gb2[k] += zk
                    for r in range(h):
                        G2[k, r] += zk * U[jj, r]
                for r in range(h):
                    dl = Z[jj, 0] - Z[jj, 0]
                    for k in range(m):
                        dl += Z[jj, k] * W2[k, r]
                    dl *= _act_d1(act, U[jj, r])
                    Gb1[r] += dl
                    for q in range(d):
                        G1[r, q] += dl * A[i, q]
            nx = W1[0, 0] - W1[0, 0]
            for r in range(h):
                for q in range(d):
                    w = W1[r, q] - gam * G1[r, q]
                    W1[r, q] = w
                    nx += w * w
            for k in range(m):
                for r in range(h):
                    w = W2[k, r] - gam * G2[k, r]
                    W2[k, r] = w
                    nx += w * w
            if has_bias:
                for r in range(h):
                    w = b1[r] - gam * Gb1[r]
                    b1[r] = w
                    nx += w * w
                for k in range(m):
                    w = b2[k] - gam * Gb2[k]
                    b2[k] = w
                    nx += w * w
            if not (nx <= limit):
                div[j] = t + 1
                W1[:, :] = np.nan
                W2[:, :] = np.nan
                b1[:] = np.nan
                b2[:] = np.nan
                break
        p = 0
        for blk in (W1.ravel(), W2.ravel(), b1, b2):
            for q in range(blk.shape[0]):
                if p < dim:
                    xfin[j, p] = blk[q]
                p += 1


def _inputs(problem, plan, dtype):
    spec = prepare(problem, plan, dtype)
    wd = np.dtype(dtype)
    L, S = spec.n_lams, spec.n_seeds
    keys = splitmix64(splitmix64(np.uint64(spec.seed)) ^ spec.streams.ravel())       # λ-major
    c = np.ascontiguousarray
    with np.errstate(over="ignore"):
        acoef = np.repeat(spec.a, S).astype(wd)
        ccoef = np.repeat(spec.c, S).astype(wd)
    use_teacher = bool(np.any(spec.rt != 0.0)) and bool(np.any(spec.a != 0.0))
    common = dict(A=c(spec.A, dtype=wd), Y=c(spec.targets, dtype=wd), rt=c(spec.rt, dtype=wd),
                  alpha=wd.type(spec.l2), gam=wd.type(spec.step), inv_b=wd.type(1.0 / spec.batch),
                  acoef=acoef, ccoef=ccoef, keys=keys, b=spec.batch, steps=spec.steps,
                  rec_steps=spec.record_steps, softmax=spec.loss == "softmax", use_teacher=use_teacher,
                  limit=wd.type(spec.limit), xstar=spec.xstar_c, theta=spec.theta_c, A64=c(spec.A),
                  Y64=c(spec.targets), alpha64=spec.l2, f_star=spec.f_star)
    T = L * S
    R = len(spec.record_steps)
    bufs = dict(out=np.full((T, R, 3), np.nan), div=np.full(T, -1, dtype=np.int64),
                xfin=np.empty((T, spec.dim), dtype=wd))
    if spec.kind == "mlp":
        if spec.depth != 2:
            raise NotImplementedError(f"the plain numba baseline handles MLPs with one hidden layer; got widths "
                                      f"{spec.layers}")
        from kdsim.kernelspec import ACTIVATION_CODES     # the codes only: 0 identity, 1 relu, 2 sigmoid, 3 tanh
        args = dict(common, ridge=c(spec.ridge, dtype=wd), x0=c(spec.x0, dtype=wd), h=spec.layers[1],
                    act=ACTIVATION_CODES[spec.activation], has_bias=spec.biases,
                    function_space=spec.function_space, **bufs)
        return spec, mlp_one_hidden, args
    if spec.depth == 1:
        m, d = spec.layers[1], spec.layers[0]
        kind = 0 if spec.kind == "least_squares" else 1
        args = dict(common, ridge=c(spec.ridge.reshape(m, d), dtype=wd),
                    tfull=c((spec.Gt.ravel() + spec.ridge).reshape(m, d), dtype=wd),
                    x0=c(spec.x0.reshape(m, d), dtype=wd), kind=kind,
                    F=spec.F if spec.F.size else np.zeros((0, 0)), **bufs)
        return spec, one_layer, args
    widths = set(spec.layers)
    if len(widths) != 1:
        raise NotImplementedError(f"the plain numba baseline handles deep linear nets whose layers are all "
                                  f"square of one width; got widths {spec.layers}")
    h, D = spec.layers[0], spec.depth
    args = dict(common, Gt=c(spec.Gt, dtype=wd), ridge=c(spec.ridge, dtype=wd),
                x0=c(spec.x0.reshape(D, h, h), dtype=wd), **bufs)
    return spec, deep_square, args


_COMPILED = set()


def run(problem, plan, dtype="float64"):
    """Run a validated plan; the arrays of kdsim's engines plus ``timing`` (compile_s, run_s)."""
    spec, kernel, args = _inputs(problem, plan, dtype)
    key = (kernel.__name__, dtype, args["softmax"])
    compile_s = 0.0
    if key not in _COMPILED:                       # compile (or load from cache) on a zero-trajectory call
        t0 = time.perf_counter()
        empty = dict(args, acoef=args["acoef"][:0], ccoef=args["ccoef"][:0], keys=args["keys"][:0],
                     out=args["out"][:0], div=args["div"][:0], xfin=args["xfin"][:0])
        kernel(**empty)
        compile_s = time.perf_counter() - t0
        _COMPILED.add(key)
    t0 = time.perf_counter()
    kernel(**args)
    run_s = time.perf_counter() - t0
    L, S, R = spec.n_lams, spec.n_seeds, len(spec.record_steps)
    out = args["out"].reshape(L, S, R, 3)
    res = {name: out[..., q].copy() for q, name in enumerate(RECORDS)}
    div = args["div"].reshape(L, S)
    for name in RECORDS:
        after = (div[:, :, None] >= 0) & (spec.record_steps[None, None, :] >= div[:, :, None])
        res[name][after] = np.nan
    return {**res, "diverged_step": div, "x_final": args["xfin"].astype(np.float64).reshape(L, S, spec.dim),
            "timing": {"compile_s": compile_s, "run_s": run_s}}
