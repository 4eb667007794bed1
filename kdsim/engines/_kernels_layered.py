"""numba kernels for layered models: softmax regression, canonical GLMs and deep linear nets.

All three are one structure: parameters x = (W_1, …, W_L) flattened row-major and
concatenated (softmax: one K×d' layer; GLM: one 1×d layer; deep linear: L layers),
logits z = W_L⋯W_1 a_i, and an output residual r_i = ∂g_i/∂z:

=====  =====================  ==================
code   loss                   r_i
=====  =====================  ==================
0      squared (deep linear)  z − y_i
1      softmax CE             softmax(z) − e_{y_i}
2      logistic               σ(z) − y_i
3      Poisson                e^z − y_i
=====  =====================  ==================

The data gradient of sample i is J(x)ᵀ(r_i a_iᵀ), computed by back-propagation.
The teacher term of every estimator is function-space: T_B = J(x)ᵀ((1/b)Σ rθ_i a_iᵀ)
+ ridge, T = J(x)ᵀ Ḡθ + ridge, with the teacher residuals rθ_i (n, d_out) and their
mean map Ḡθ = (1/n)Σ rθ_i a_iᵀ precomputed once (for one layer J(x) = I, so these
are the parameter-space teacher gradients of softmax and GLMs exactly). A step
back-propagates the combined residuals r_i(x) − a·rθ_i of its minibatch:

    g = J(x)ᵀ[(1/b)Σ_i (r_i(x) − a rθ_i) a_iᵀ + c Ḡθ] + αx + (c − a)·ridge.

SVRG back-propagates r_i(x) through x and −a·r_i(y) through the snapshot y and adds
α(x − a y) + c ∇f(y), with ∇f(y) = J(y)ᵀ(1/n)Σ r_i(y) a_iᵀ + αy refreshed every
``period`` steps (for one layer through the minibatch functions below, for deep nets
through the end-to-end map ``_prefix`` and ``_pullback_add``).

The minibatch is handled as small matrices, layer by layer (``_forward_batch``,
``_residuals``, ``_backward_batch``), ``SAMPLE_BLOCK`` samples at a time: each pass
over a row of W_k serves several samples, so the sums are independent chains and the
gradient is loaded and stored once per group of samples, not once per sample; and the
calls are per block of samples, not per sample (each call with array arguments costs
reference-count updates).

Records are not evaluated here: the kernel saves the iterate (float64) at every
record step and the engine computes the problem's canonical distances and its
cancellation-free ``suboptimality`` with the problem's own numpy code, exactly as
the reference engine does; memory for the saved iterates is bounded by chunking.
Conventions (dtype, guard, fastmath, unsigned offsets in inner loops) are those of
``_kernels_ls``.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..rng import batch_into_nb
from . import _activations
from ._kernels_ls import FASTMATH, _heavy_ball

#: samples taken through the layers together; the minibatch scratch of a trajectory is
#: O(SAMPLE_BLOCK · Σ widths) whatever the batch size (full-batch runs included)
SAMPLE_BLOCK = 32


_activate = njit(cache=True, nogil=True, inline="always")(_activations.activate)
_activation_d1 = njit(cache=True, nogil=True, inline="always")(_activations.activation_d1)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _forward_batch(x, dims, offs, A, idx, j0, nb, H, hoff, zero, act, boffs):
    """Activations of the samples idx[j0:j0 + nb]: row j of H holds h_0 = a_{idx[j0 + j]}, h_{k+1} = W_k h_k
    (MLPs: h_{k+1} = σ(W_k h_k + b_k) below the output layer, W_L h_L + b_L at it; ``act`` the activation
    code, ``boffs`` the bias offsets, empty without biases).

    Layer by layer, each pass takes two rows of W_k against two samples: four independent
    sums share their loads (a sample-by-sample dot product is one dependent chain).
    """
    L = dims.shape[0] - 1
    for j in range(nb):
        i = idx[j0 + j]
        for c in range(np.uint64(dims[0])):
            H[j, c] = A[i, c]                      # hoff[0] = 0
    for k in range(L):
        rows, cols = dims[k + 1], np.uint64(dims[k])
        hi, ho = np.uint64(hoff[k]), hoff[k + 1]
        for r in range(0, rows, 2):
            r1 = min(r + 1, rows - 1)              # an odd last row is computed twice
            b0 = np.uint64(offs[k] + r * dims[k])
            b1 = np.uint64(offs[k] + r1 * dims[k])
            for j in range(0, nb, 2):
                j1 = min(j + 1, nb - 1)
                a00 = zero
                a01 = zero
                a10 = zero
                a11 = zero
                for c in range(cols):
                    w0 = x[b0 + c]
                    w1 = x[b1 + c]
                    h0 = H[j, hi + c]
                    h1 = H[j1, hi + c]
                    a00 += w0 * h0
                    a01 += w0 * h1
                    a10 += w1 * h0
                    a11 += w1 * h1
                if boffs.shape[0] > 0:
                    c0 = x[boffs[k] + r]
                    c1 = x[boffs[k] + r1]
                    a00 += c0
                    a01 += c0
                    a10 += c1
                    a11 += c1
                if act != 0 and k < L - 1:
                    a00 = _activate(act, a00)
                    a01 = _activate(act, a01)
                    a10 = _activate(act, a10)
                    a11 = _activate(act, a11)
                H[j, ho + r] = a00
                H[j1, ho + r] = a01
                H[j, ho + r1] = a10
                H[j1, ho + r1] = a11


@njit(cache=True, nogil=True, inline="always")
def _logit_max(H, j, z0, m):
    """max_o H[j, z0 + o] over the m logits of row j (the shift of a stable softmax)."""
    zmax = H[j, z0]
    for o in range(1, m):
        if H[j, z0 + o] > zmax:
            zmax = H[j, z0 + o]
    return zmax


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _residuals(code, H, zoff, m, Y, idx, j0, nb, D, zero):
    """D[j, :m] = ∂g/∂z of sample idx[j0 + j] at its logits H[j, zoff:zoff + m] (see the module table)."""
    z0 = np.uint64(zoff)
    for j in range(nb):
        i = idx[j0 + j]
        if code == 0:
            for o in range(m):
                D[j, o] = H[j, z0 + o] - Y[i, o]
        elif code == 1:
            zmax = _logit_max(H, j, z0, m)
            s = zero
            for o in range(m):
                e = np.exp(H[j, z0 + o] - zmax)
                D[j, o] = e
                s += e
            for o in range(m):
                D[j, o] = D[j, o] / s - Y[i, o]
        elif code == 2:
            for o in range(m):
                z = H[j, z0 + o]
                if z >= 0:
                    sig = 1.0 / (1.0 + np.exp(-z))
                else:
                    e = np.exp(z)
                    sig = e / (1.0 + e)
                D[j, o] = sig - Y[i, o]
        else:
            for o in range(m):
                D[j, o] = np.exp(H[j, z0 + o]) - Y[i, o]


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _backward_batch(x, dims, offs, H, hoff, D, Dn, nb, grad, scale, zero, act, boffs):
    """grad += scale · Σ_j J(x)ᵀ(δ_j h_{j,0}ᵀ) for the output residuals δ_j = D[j, :d_out] (MLPs: the
    biases' gradients Σ_j δ_j, and δ ← (W_kᵀδ) ⊙ σ'(z) from the saved activations).

    Overwrites D and Dn. Row r of layer k's gradient gains δ_j[r]·h_j for four samples per
    pass (then two, then one for the rest), and δ ← W_kᵀδ takes two rows of W_k per pass:
    the gradient is loaded and stored once per four samples instead of once per sample.
    """
    L = dims.shape[0] - 1
    for j in range(nb):
        for o in range(dims[L]):
            D[j, o] = scale * D[j, o]
    cur = D
    nxt = Dn
    for k in range(L - 1, -1, -1):
        rows, cols = dims[k + 1], np.uint64(dims[k])
        hi = np.uint64(hoff[k])
        if boffs.shape[0] > 0:
            for r in range(rows):
                s = zero
                for j in range(nb):
                    s += cur[j, r]
                grad[boffs[k] + r] += s
        for r in range(rows):
            base = np.uint64(offs[k] + r * dims[k])
            j = 0
            while j + 3 < nb:
                d0 = cur[j, r]
                d1 = cur[j + 1, r]
                d2 = cur[j + 2, r]
                d3 = cur[j + 3, r]
                for c in range(cols):
                    grad[base + c] += (d0 * H[j, hi + c] + d1 * H[j + 1, hi + c]) + (d2 * H[j + 2, hi + c]
                                                                                    + d3 * H[j + 3, hi + c])
                j += 4
            if j + 1 < nb:
                d0 = cur[j, r]
                d1 = cur[j + 1, r]
                for c in range(cols):
                    grad[base + c] += d0 * H[j, hi + c] + d1 * H[j + 1, hi + c]
                j += 2
            if j < nb:
                d0 = cur[j, r]
                for c in range(cols):
                    grad[base + c] += d0 * H[j, hi + c]
        if k > 0:
            for j in range(nb):
                for c in range(cols):
                    nxt[j, c] = zero
                for r in range(0, rows - 1, 2):
                    b0 = np.uint64(offs[k] + r * dims[k])
                    b1 = b0 + cols
                    d0 = cur[j, r]
                    d1 = cur[j, r + 1]
                    for c in range(cols):
                        nxt[j, c] += x[b0 + c] * d0 + x[b1 + c] * d1
                if rows % 2 == 1:
                    b0 = np.uint64(offs[k] + (rows - 1) * dims[k])
                    d0 = cur[j, rows - 1]
                    for c in range(cols):
                        nxt[j, c] += x[b0 + c] * d0
                if act != 0:
                    for c in range(cols):
                        nxt[j, c] *= _activation_d1(act, H[j, hi + c])
            cur, nxt = nxt, cur


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _prefix(x, dims, offs, qbuf, qoff):
    """Q_0 = I, Q_{k+1} = W_k Q_k (dims[k] × d_in, row-major at qoff[k]); Q_L is W(x)."""
    L = dims.shape[0] - 1
    d_in = dims[0]
    q0 = qoff[0]
    for r in range(d_in):
        for c in range(d_in):
            qbuf[q0 + r * d_in + c] = 1.0 if r == c else 0.0
    for k in range(L):
        rows, inner = dims[k + 1], dims[k]
        o, qi, qo = offs[k], qoff[k], qoff[k + 1]
        for r in range(rows):
            xr = np.uint64(o + r * inner)
            for c in range(d_in):
                acc = qbuf[qi] - qbuf[qi]
                qc = np.uint64(qi + c)
                for s in range(np.uint64(inner)):
                    acc += x[xr + s] * qbuf[qc + s * np.uint64(d_in)]
                qbuf[qo + r * d_in + c] = acc


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _pullback_add(x, dims, offs, G, coef, qbuf, qoff, vbuf, grad):
    """grad += coef · J(x)ᵀG for an end-to-end direction G (d_out × d_in); needs _prefix first.

    Block k is P_kᵀ G Q_kᵀ with P_k = W_{L−1}⋯W_{k+1}: V_{L−1} = G, V_{k−1} = W_kᵀ V_k.
    """
    L = dims.shape[0] - 1
    d_in = dims[0]
    half = vbuf.shape[0] // 2
    cur = 0
    m = dims[L]
    for r in range(m):
        for c in range(d_in):
            vbuf[r * d_in + c] = coef * G[r, c]
    for k in range(L - 1, -1, -1):
        rows, cols = dims[k + 1], dims[k]
        o, qk = offs[k], qoff[k]
        for r in range(rows):
            vr = np.uint64(cur + r * d_in)
            for c in range(cols):
                acc = vbuf[cur] - vbuf[cur]
                qc = np.uint64(qk + c * d_in)
                for s in range(np.uint64(d_in)):
                    acc += vbuf[vr + s] * qbuf[qc + s]
                grad[o + r * cols + c] += acc
        if k > 0:
            nxt = half - cur
            for c in range(cols):
                for s in range(d_in):
                    acc = vbuf[cur] - vbuf[cur]
                    xc = np.uint64(o + c)
                    vs = np.uint64(cur + s)
                    for r in range(np.uint64(rows)):
                        acc += x[xc + r * np.uint64(cols)] * vbuf[vs + r * np.uint64(d_in)]
                    vbuf[nxt + c * d_in + s] = acc
            cur = nxt


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _layered_traj_one(j0, A, Y, rt, Gt, ridge, dims, offs, code, alpha, gam, inv_bs, inv_n, x0, acoef,
                      ccoef, use_teacher, snapshot, period, snap_start, nfw, rec_steps, steps, stream_keys, b, scode,
                      K, mom, tau, Qt, act, boffs, limit, zero, saved, div, xfin):
    """Body of ``layered_traj`` for one trajectory (serial, nogil; the engine runs ranges on threads)."""
    n = A.shape[0]
    dim = x0.shape[0]
    L = dims.shape[0] - 1
    d_in, d_out = dims[0], dims[L]
    T = stream_keys.shape[0]
    R = rec_steps.shape[0]
    hoff = np.zeros(L + 2, dtype=np.int64)
    qoff = np.zeros(L + 2, dtype=np.int64)
    wmax = 0
    for k in range(L + 1):
        hoff[k + 1] = hoff[k] + dims[k]
        qoff[k + 1] = qoff[k] + dims[k] * d_in
        if dims[k] > wmax:
            wmax = dims[k]
    E = acoef.shape[1]
    x = x0.copy()
    g = np.empty_like(x0)
    y = x0.copy()
    gy = np.zeros_like(x0)
    vel = np.zeros_like(x0)
    perm = np.empty((1, n if scode != 0 else 0), dtype=np.int64)
    perm_epoch = np.full(1, -1, dtype=np.int64)
    # minibatch scratch for at most SAMPLE_BLOCK samples at a time (residual widths dims[1:])
    wout = 0
    for k in range(1, L + 1):
        wout = max(wout, dims[k])
    linear = act == 0 and boffs.shape[0] == 0            # the end-to-end map W_L⋯W_1 exists
    full_pass = snapshot or (use_teacher and not linear)  # full-data back-propagations (MLP's corrected KD)
    rows_x = min(b, SAMPLE_BLOCK)
    rows_y = SAMPLE_BLOCK if full_pass else 0
    Hx = np.empty((rows_x, hoff[L + 1]), dtype=x0.dtype)
    D = np.empty((rows_x, wout), dtype=x0.dtype)
    Hy = np.empty((rows_y, hoff[L + 1]), dtype=x0.dtype)
    Dy = np.empty((rows_y, wout), dtype=x0.dtype)
    Dn = np.empty((max(rows_x, rows_y) if L > 1 else 0, wout), dtype=x0.dtype)
    rows_all = np.arange(n if full_pass else 0)            # full-data terms visit every sample
    qbuf = np.empty(qoff[L + 1], dtype=x0.dtype)
    vbuf = np.empty(2 * wmax * d_in, dtype=x0.dtype)
    Gy = np.empty((d_out, d_in), dtype=x0.dtype)
    idx = np.empty(b, dtype=np.int64)
    taken = np.zeros(n, dtype=np.bool_)
    key0 = stream_keys[j0]
    rec = 0
    dead = False
    for t in range(steps + 1):
        if rec < R and rec_steps[rec] == t:
            for p in range(dim):
                saved[j0, rec, p] = x[p]
            rec += 1
        if t == steps:
            break
        ep = min(t // K, E - 1)
        a = acoef[j0, ep]
        c = ccoef[j0, ep]
        if snapshot and (t == 0 or (t >= snap_start and (t - snap_start) % period == 0)):
            for p in range(dim):
                y[p] = x[p]
                gy[p] = zero
            for o in range(d_out):
                for q in range(d_in):
                    Gy[o, q] = zero
            # ∇f(y) over all n samples, SAMPLE_BLOCK at a time
            for s0 in range(0, n, SAMPLE_BLOCK):
                nb = min(SAMPLE_BLOCK, n - s0)
                if L == 1 or not linear:
                    _forward_batch(y, dims, offs, A, rows_all, s0, nb, Hy, hoff, zero, act, boffs)
                    _residuals(code, Hy, hoff[L], d_out, Y, rows_all, s0, nb, Dy, zero)
                    if nfw.shape[0] > 0:                 # full gradient weights n·w_i (batch means)
                        for jj in range(nb):
                            for o in range(d_out):
                                Dy[jj, o] *= nfw[s0 + jj]
                    _backward_batch(y, dims, offs, Hy, hoff, Dy, Dn, nb, gy, inv_n, zero, act, boffs)
                else:
                    if s0 == 0:
                        _prefix(y, dims, offs, qbuf, qoff)
                    for jj in range(nb):                 # logits W(y)a_i from the end-to-end map
                        for o in range(d_out):
                            acc = zero
                            qo = np.uint64(qoff[L] + o * d_in)
                            for q in range(np.uint64(d_in)):
                                acc += qbuf[qo + q] * A[s0 + jj, q]
                            Hy[jj, o] = acc
                    _residuals(code, Hy, 0, d_out, Y, rows_all, s0, nb, Dy, zero)
                    for jj in range(nb):
                        wj = nfw[s0 + jj] if nfw.shape[0] > 0 else 1.0
                        for o in range(d_out):
                            ro = Dy[jj, o] * inv_n * wj
                            for q in range(d_in):
                                Gy[o, q] += ro * A[s0 + jj, q]
            if L > 1 and linear:
                _pullback_add(y, dims, offs, Gy, gam / gam, qbuf, qoff, vbuf, gy)
            for p in range(dim):
                gy[p] += alpha[p] * y[p]
        bt = batch_into_nb(key0, t, n, b, scode, K, perm, perm_epoch, 0, idx, taken)
        inv_b = inv_bs[bt]
        for p in range(dim):
            g[p] = zero
        # the minibatch as small matrices, layer by layer (activations Hx, residuals D),
        # SAMPLE_BLOCK samples at a time
        for jb in range(0, bt, SAMPLE_BLOCK):
            nb = min(SAMPLE_BLOCK, bt - jb)
            _forward_batch(x, dims, offs, A, idx, jb, nb, Hx, hoff, zero, act, boffs)
            _residuals(code, Hx, hoff[L], d_out, Y, idx, jb, nb, D, zero)
            if use_teacher and tau != 1:
                # literal tempered KD loss (softmax): (1 − a)(p − y) + a·τ·(softmax(z/τ) − q_i)
                z0 = np.uint64(hoff[L])
                for jj in range(nb):
                    i = idx[jb + jj]
                    zmax = _logit_max(Hx, jj, z0, d_out)
                    s = zero
                    for o in range(d_out):
                        s += np.exp((Hx[jj, z0 + o] - zmax) / tau)
                    for o in range(d_out):
                        pt = np.exp((Hx[jj, z0 + o] - zmax) / tau) / s
                        D[jj, o] = (1 - a) * D[jj, o] + a * tau * (pt - Qt[i, o])
            elif use_teacher:
                for jj in range(nb):
                    i = idx[jb + jj]
                    for o in range(d_out):
                        D[jj, o] -= a * rt[i, o]
            if snapshot:
                _forward_batch(y, dims, offs, A, idx, jb, nb, Hy, hoff, zero, act, boffs)
                _residuals(code, Hy, hoff[L], d_out, Y, idx, jb, nb, Dy, zero)
                if L == 1:
                    for jj in range(nb):
                        for o in range(d_out):
                            D[jj, o] -= a * Dy[jj, o]
                else:
                    _backward_batch(y, dims, offs, Hy, hoff, Dy, Dn, nb, g, -a, zero, act, boffs)
            _backward_batch(x, dims, offs, Hx, hoff, D, Dn, nb, g, gam / gam, zero, act, boffs)
        if snapshot:
            for p in range(dim):
                g[p] = g[p] * inv_b + alpha[p] * (x[p] - a * y[p]) + c * gy[p]
        else:
            if use_teacher and c != 0:
                for p in range(dim):
                    g[p] *= inv_b
                if L == 1 and linear:
                    for o in range(d_out):
                        for q in range(d_in):
                            g[o * d_in + q] += c * Gt[o, q]
                elif not linear:                         # c·(1/n)Σ_i J_i(x)ᵀ rθ_i, back-propagated at x
                    for s0 in range(0, n, SAMPLE_BLOCK):
                        nb = min(SAMPLE_BLOCK, n - s0)
                        _forward_batch(x, dims, offs, A, rows_all, s0, nb, Hy, hoff, zero, act, boffs)
                        for jj in range(nb):
                            wj = nfw[s0 + jj] if nfw.shape[0] > 0 else 1.0
                            for o in range(d_out):
                                Dy[jj, o] = rt[s0 + jj, o] * wj
                        _backward_batch(x, dims, offs, Hy, hoff, Dy, Dn, nb, g, c * inv_n, zero, act, boffs)
                else:
                    _prefix(x, dims, offs, qbuf, qoff)
                    _pullback_add(x, dims, offs, Gt, c, qbuf, qoff, vbuf, g)
                for p in range(dim):
                    g[p] = g[p] + alpha[p] * x[p] + (c - a) * ridge[p]
            else:
                for p in range(dim):
                    g[p] = g[p] * inv_b + alpha[p] * x[p] - a * ridge[p]
        nx = _heavy_ball(x, g, vel, gam, mom, zero)
        if not (nx <= limit):
            div[j0] = t + 1
            dead = True
            break
    for p in range(dim):
        xfin[j0, p] = np.nan if dead else x[p]


@njit(cache=True, nogil=True)
def layered_traj(lo, hi, A, Y, rt, Gt, ridge, dims, offs, code, alpha, gam, inv_bs, inv_n, x0, acoef, ccoef,
                 use_teacher, snapshot, period, snap_start, nfw, rec_steps, steps, stream_keys, b, scode, K, mom,
                 tau, Qt, act, boffs, limit, zero, saved, div, xfin):
    """Trajectories lo .. hi−1, one after the other; saves the iterate at every record step.

    ``A`` (n, d_in) inputs, ``Y`` (n, d_out) targets (one-hot for softmax), ``rt``
    (n, d_out) teacher residuals, ``Gt`` (d_out, d_in) their mean map, ``ridge``
    (dim,) the teacher's ridge term, ``alpha`` (dim,) the ridge α per coordinate; ``dims`` the layer widths (d_in, …, d_out) and
    ``offs`` the layer offsets in x. ``saved`` (T, R, dim) float64 receives x at the
    record steps while the trajectory is alive (NaN stays after divergence). ``acoef``,
    ``ccoef`` (T, E) are the coefficients per epoch; minibatches follow sampling ``scode``
    with ``K`` steps per epoch (``kdsim.rng``), 1/b_t from ``inv_bs``; the step is heavy ball
    with momentum ``mom``; SVRG snapshots at step 0 and every ``period`` steps from ``snap_start``
    (its full gradient with per-sample weights n·w_i ``nfw`` when not empty).
    ``tau`` ≠ 1 (softmax): the teacher estimators take the literal tempered KD loss's residual with
    the teacher's tempered probabilities ``Qt`` (n, d_out) (``kernelspec.tempered_residual``).
    MLPs: hidden activation ``act`` (``kernelspec.ACTIVATION_CODES``) and bias offsets ``boffs`` (empty:
    no biases); their teacher term is J_B(x)ᵀ r_B(θ) and corrected KD's full term c·(1/n)Σ_i J_i(x)ᵀ r_i(θ)
    a full-data back-propagation at x per step (no end-to-end map); SVRG's ∇f(y) likewise.
    """
    for j0 in range(lo, hi):
        _layered_traj_one(j0, A, Y, rt, Gt, ridge, dims, offs, code, alpha, gam, inv_bs, inv_n, x0, acoef,
                          ccoef, use_teacher, snapshot, period, snap_start, nfw, rec_steps, steps, stream_keys, b,
                          scode, K, mom, tau, Qt, act, boffs, limit, zero, saved, div, xfin)


def _forget_stale_cache():
    from .. import rng
    from . import _kernels_ls
    from ._numba_cache import forget_if_stale
    forget_if_stale(layered_traj.py_func, [_kernels_ls.__file__, rng.__file__, _activations.__file__])


_forget_stale_cache()
