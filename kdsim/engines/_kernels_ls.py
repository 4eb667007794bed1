"""numba kernels for least squares (THEORY §5.1 affine form and per-trajectory form).

Conventions shared by every kernel module of the numba engine:

* module-level ``@njit(cache=True, nogil=True)`` functions over a range lo .. hi of
  trajectories (the engine runs ranges on a thread pool; each writes only its own
  rows), arrays in and arrays out, no closures, no np.random;
* iterate arithmetic in the working dtype (float32 or float64) of the data arrays;
  the scalars ``gam``, ``alpha``, ``limit`` and ``zero`` are passed in that dtype so
  nothing is silently promoted;
* records are evaluated in float64 from the iterate (cast), so float32 runs only
  differ by the iterate's own rounding;
* the divergence guard of the reference engine: after a step, ``not (‖x‖² <= limit)``
  (true for NaN and inf) marks the trajectory diverged at step t + 1 and freezes it
  (its later records stay NaN). ``limit`` is 1e100 in float64 and the largest float32
  in float32 (1e100 is not representable there);
* ``fastmath`` is the flag subset ``FASTMATH`` (no ``nnan``/``ninf``), so the guard is
  never optimised away (tests check that it fires);
* the minibatch of (seed, stream, step) comes from ``kdsim.rng``'s numba twin.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..rng import minibatch_into_nb, step_key_nb

#: LLVM fast-math flags used by every kernel: reassociation (vectorised reductions),
#: contraction (FMA), reciprocal and no-signed-zero; never nnan/ninf.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _tri_matvec(F, e, out):
    """out = F @ e for an upper-trapezoidal F (rows r use columns p >= r), float64."""
    m, d = F.shape
    for r in range(m):
        acc = 0.0
        for p in range(r, d):
            acc += F[r, p] * e[p]
        out[r] = acc


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _ls_affine_one(s, A, bvec, rth, ridge, tfull, alpha, gam, inv_b, x0, acoef, acw, use_v, corrected,
                   rec_steps, steps, stream_keys, b, xstar, theta_c, F, alpha64, limit, zero, out_d,
                   out_s, out_t, div, ufin, vfin, unsafe, coeffs):
    """Body of ``ls_affine`` for one seed (serial, nogil; the engine runs ranges on threads)."""
    n, d = A.shape
    L = acoef.shape[0]
    S = stream_keys.shape[0]
    R = rec_steps.shape[0]
    m = F.shape[0]
    want_coeffs = coeffs.shape[0] > 0
    u = x0.copy()
    v = np.zeros_like(x0)
    gu = np.empty_like(x0)
    gv = np.empty_like(x0)
    ru = np.empty(b, dtype=x0.dtype)
    rv = np.empty(b, dtype=x0.dtype)
    idx = np.empty(b, dtype=np.int64)
    taken = np.zeros(n, dtype=np.bool_)
    eu = np.empty(d)
    et = np.empty(d)
    vv = np.empty(d)
    fu = np.empty(m)
    fv = np.empty(m)
    alive = np.ones(L, dtype=np.bool_)
    n_alive = L
    key0 = stream_keys[s]
    rec = 0
    for t in range(steps + 1):
        if rec < R and rec_steps[rec] == t:
            for p in range(d):
                eu[p] = np.float64(u[p]) - xstar[p]
                et[p] = np.float64(u[p]) - theta_c[p]
                vv[p] = np.float64(v[p])
            _tri_matvec(F, eu, fu)
            if use_v:
                _tri_matvec(F, vv, fv)
            for k in range(L):
                if not alive[k]:
                    continue
                a = acoef[k]
                s1 = 0.0
                s2 = 0.0
                s3 = 0.0
                if use_v and a != 0.0:
                    for p in range(d):
                        e = eu[p] + a * vv[p]
                        w = et[p] + a * vv[p]
                        s1 += e * e
                        s2 += w * w
                    for r in range(m):
                        z = fu[r] + a * fv[r]
                        s3 += z * z
                else:
                    for p in range(d):
                        s1 += eu[p] * eu[p]
                        s2 += et[p] * et[p]
                    for r in range(m):
                        s3 += fu[r] * fu[r]
                out_d[k, s, rec] = s1
                out_t[k, s, rec] = s2
                out_s[k, s, rec] = 0.5 * (s3 + alpha64 * s1)
            if want_coeffs:
                c = coeffs[s, rec]
                c[0, 0] = 0.0; c[0, 1] = 0.0; c[0, 2] = 0.0
                c[1, 0] = 0.0; c[1, 1] = 0.0; c[1, 2] = 0.0
                c[2, 0] = 0.0; c[2, 1] = 0.0; c[2, 2] = 0.0
                for p in range(d):
                    c[0, 0] += eu[p] * eu[p]
                    c[2, 0] += et[p] * et[p]
                    if use_v:
                        c[0, 1] += 2.0 * eu[p] * vv[p]
                        c[0, 2] += vv[p] * vv[p]
                        c[2, 1] += 2.0 * et[p] * vv[p]
                c[2, 2] = c[0, 2]
                q0 = 0.0
                q1 = 0.0
                q2 = 0.0
                for r in range(m):
                    q0 += fu[r] * fu[r]
                    if use_v:
                        q1 += 2.0 * fu[r] * fv[r]
                        q2 += fv[r] * fv[r]
                c[1, 0] = 0.5 * (q0 + alpha64 * c[0, 0])
                c[1, 1] = 0.5 * (q1 + alpha64 * c[0, 1])
                c[1, 2] = 0.5 * (q2 + alpha64 * c[0, 2])
            rec += 1
        if t == steps:
            break
        minibatch_into_nb(step_key_nb(key0, t), n, b, idx, taken)
        for j in range(b):
            i = idx[j]
            acc = zero
            for p in range(d):
                acc += A[i, p] * u[p]
            ru[j] = acc - bvec[i]
            if use_v:
                acc = zero
                for p in range(d):
                    acc += A[i, p] * v[p]
                rv[j] = acc - rth[i]
        nu = zero
        nuv = zero
        nv = zero
        if b == 1:
            i = idx[0]
            r0 = ru[0]
            r1 = rv[0]
            for p in range(d):
                un = u[p] - gam * (A[i, p] * r0 + alpha * u[p])
                u[p] = un
                nu += un * un
            if use_v:
                if corrected:
                    for p in range(d):
                        vn = v[p] - gam * (A[i, p] * r1 + alpha * v[p] - ridge[p] + tfull[p])
                        v[p] = vn
                        nv += vn * vn
                        nuv += u[p] * vn
                else:
                    for p in range(d):
                        vn = v[p] - gam * (A[i, p] * r1 + alpha * v[p] - ridge[p])
                        v[p] = vn
                        nv += vn * vn
                        nuv += u[p] * vn
        else:
            for p in range(d):
                gu[p] = zero
                gv[p] = zero
            for j in range(b):
                i = idx[j]
                r0 = ru[j]
                for p in range(d):
                    gu[p] += A[i, p] * r0
                if use_v:
                    r1 = rv[j]
                    for p in range(d):
                        gv[p] += A[i, p] * r1
            for p in range(d):
                un = u[p] - gam * (gu[p] * inv_b + alpha * u[p])
                u[p] = un
                nu += un * un
            if use_v:
                if corrected:
                    for p in range(d):
                        vn = v[p] - gam * (gv[p] * inv_b + alpha * v[p] - ridge[p] + tfull[p])
                        v[p] = vn
                        nv += vn * vn
                        nuv += u[p] * vn
                else:
                    for p in range(d):
                        vn = v[p] - gam * (gv[p] * inv_b + alpha * v[p] - ridge[p])
                        v[p] = vn
                        nv += vn * vn
                        nuv += u[p] * vn
        bad_seed = False
        for k in range(L):
            if not alive[k]:
                continue
            a = acw[k]
            if use_v and a != 0.0:
                q = nu + 2.0 * a * nuv + a * a * nv
                big = not (nu <= limit and a * a * nv <= limit)
            else:
                q = nu
                big = False
            if not (q <= limit):
                alive[k] = False
                n_alive -= 1
                div[k, s] = t + 1
            elif big:
                bad_seed = True
        if bad_seed:
            unsafe[s] = True
            break
        if n_alive == 0:
            break
    for p in range(d):
        ufin[s, p] = u[p]
        vfin[s, p] = v[p]


@njit(cache=True, nogil=True)
def ls_affine(lo, hi, A, bvec, rth, ridge, tfull, alpha, gam, inv_b, x0, acoef, acw, use_v, corrected,
              rec_steps, steps, stream_keys, b, xstar, theta_c, F, alpha64, limit, zero,
              out_d, out_s, out_t, div, ufin, vfin, unsafe, coeffs):
    """Seeds lo .. hi−1, one (u, v) pair each; λ_k is x_t = u_t + a_k v_t (THEORY §5.1).

    u_{t+1} = u_t − γ(H_B u_t − q_B + α u_t)
    v_{t+1} = v_t − γ(H_B v_t + α v_t − T_B [+ T])   (T_B = (1/b)Σ a_i rth_i + ridge)

    Records (float64, cancellation-free): for each alive λ_k the vector
    e = (u − x*) + a_k v is formed and ‖e‖², ½(‖F e‖² + α‖e‖²) and ‖(u − θ) + a_k v‖²
    summed directly (F = R/√n from a QR of A, so ½‖F e‖² = ½ eᵀHe). ``coeffs[s, r]``
    (when its first axis is not empty) receives the three coefficients (c0, c1, c2)
    of each record as a quadratic c0 + c1·a + c2·a² (rows: dist2_opt, subopt,
    dist2_teacher).

    Divergence of λ_k after a step: not (‖u‖² + 2a⟨u,v⟩ + a²‖v‖² <= limit). A seed
    where an alive λ has ‖u‖² or a²‖v‖² beyond the limit (the affine form would lose
    every digit to cancellation) is flagged in ``unsafe`` and left for the
    per-trajectory kernel.
    """
    for s in range(lo, hi):
        _ls_affine_one(s, A, bvec, rth, ridge, tfull, alpha, gam, inv_b, x0, acoef, acw, use_v, corrected,
                       rec_steps, steps, stream_keys, b, xstar, theta_c, F, alpha64, limit, zero, out_d,
                       out_s, out_t, div, ufin, vfin, unsafe, coeffs)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _ls_traj_one(j0, A, bvec, rth, ridge, tfull, alpha, gam, inv_b, inv_n, x0, acoef, ccoef, snapshot,
                 period, rec_steps, steps, stream_keys, b, xstar, theta_c, F, alpha64, limit, zero, out_d,
                 out_s, out_t, div, xfin):
    """Body of ``ls_traj`` for one trajectory (serial, nogil; the engine runs ranges on threads)."""
    n, d = A.shape
    T = stream_keys.shape[0]
    R = rec_steps.shape[0]
    m = F.shape[0]
    x = x0.copy()
    g = np.empty_like(x0)
    y = np.empty_like(x0)
    gy = np.empty_like(x0)
    res = np.empty(b, dtype=x0.dtype)
    idx = np.empty(b, dtype=np.int64)
    taken = np.zeros(n, dtype=np.bool_)
    e = np.empty(d)
    fe = np.empty(m)
    a = acoef[j0]
    c = ccoef[j0]
    key0 = stream_keys[j0]
    rec = 0
    dead = False
    for t in range(steps + 1):
        if rec < R and rec_steps[rec] == t:
            s1 = 0.0
            s2 = 0.0
            for p in range(d):
                xp = np.float64(x[p])
                e[p] = xp - xstar[p]
                s1 += e[p] * e[p]
                w = xp - theta_c[p]
                s2 += w * w
            _tri_matvec(F, e, fe)
            s3 = 0.0
            for r in range(m):
                s3 += fe[r] * fe[r]
            out_d[j0, rec] = s1
            out_t[j0, rec] = s2
            out_s[j0, rec] = 0.5 * (s3 + alpha64 * s1)
            rec += 1
        if t == steps:
            break
        if snapshot and t % period == 0:
            for p in range(d):
                y[p] = x[p]
                gy[p] = zero
            for i in range(n):
                acc = zero
                for p in range(d):
                    acc += A[i, p] * y[p]
                acc -= bvec[i]
                for p in range(d):
                    gy[p] += A[i, p] * acc
            for p in range(d):
                gy[p] = gy[p] * inv_n + alpha * y[p]
        minibatch_into_nb(step_key_nb(key0, t), n, b, idx, taken)
        for jj in range(b):
            i = idx[jj]
            acc = zero
            for p in range(d):
                acc += A[i, p] * x[p]
            if snapshot:
                accy = zero
                for p in range(d):
                    accy += A[i, p] * y[p]
                res[jj] = (acc - bvec[i]) - a * (accy - bvec[i])
            else:
                res[jj] = (acc - bvec[i]) - a * rth[i]
        for p in range(d):
            g[p] = zero
        for jj in range(b):
            i = idx[jj]
            r0 = res[jj]
            for p in range(d):
                g[p] += A[i, p] * r0
        nx = zero
        if snapshot:
            for p in range(d):
                xn = x[p] - gam * (g[p] * inv_b + alpha * (x[p] - a * y[p]) + c * gy[p])
                x[p] = xn
                nx += xn * xn
        else:
            for p in range(d):
                xn = x[p] - gam * (g[p] * inv_b + alpha * x[p] - a * ridge[p] + c * tfull[p])
                x[p] = xn
                nx += xn * xn
        if not (nx <= limit):
            div[j0] = t + 1
            dead = True
            break
    for p in range(d):
        xfin[j0, p] = np.nan if dead else x[p]


@njit(cache=True, nogil=True)
def ls_traj(lo, hi, A, bvec, rth, ridge, tfull, alpha, gam, inv_b, inv_n, x0, acoef, ccoef, snapshot, period,
            rec_steps, steps, stream_keys, b, xstar, theta_c, F, alpha64, limit, zero,
            out_d, out_s, out_t, div, xfin):
    """Trajectories lo .. hi−1 (any estimator, any stream layout), one after the other.

    Row j of the trajectory arrays (``acoef``, ``ccoef``, ``stream_keys``, outputs) is
    one (λ, seed) pair. Teacher estimators use the combined residual
    (a_iᵀx − b_i) − a·rth_i, so the minibatch gradient is one product:
    g = (1/b) Σ a_i r_i + αx − a·ridge + c·T. SVRG (``snapshot``) refreshes the
    anchor y and its full gradient ∇f(y) every ``period`` steps and uses
    r_i = (a_iᵀx − b_i) − a(a_iᵀy − b_i), g = (1/b) Σ a_i r_i + α(x − a y) + c ∇f(y).
    """
    for j0 in range(lo, hi):
        _ls_traj_one(j0, A, bvec, rth, ridge, tfull, alpha, gam, inv_b, inv_n, x0, acoef, ccoef, snapshot,
                     period, rec_steps, steps, stream_keys, b, xstar, theta_c, F, alpha64, limit, zero,
                     out_d, out_s, out_t, div, xfin)
