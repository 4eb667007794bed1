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

Families: one-layer models (least squares, softmax regression) and deep linear
networks whose layers are all square of one width (W4); other shapes raise
``NotImplementedError``. ``run(problem, plan, dtype)`` returns the arrays of kdsim's
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
