"""numba kernels for least squares (docs/theory.md §5.1 affine form and per-trajectory form).

Conventions shared by every kernel module of the numba engine:

* module-level ``@njit(cache=True, nogil=True)`` functions over a range lo .. hi of
  trajectories (the engine runs ranges on a thread pool; each writes only its own
  rows), arrays in and arrays out, no closures, no np.random;
* iterate arithmetic in the working dtype (float32 or float64) of the data arrays;
  the scalars ``gam``, ``limit`` and ``zero`` and the per-trajectory kernels' ridge
  ``alpha`` (a (dim,) array: α per coordinate, 0 on a bias left out of the ridge) are
  passed in that dtype so nothing is silently promoted;
* records are evaluated in float64 from the iterate (cast), so float32 runs only
  differ by the iterate's own rounding;
* the divergence guard of the reference engine: after a step, ``not (‖x‖² <= limit)``
  (true for NaN and inf) marks the trajectory diverged at step t + 1 and freezes it
  (its later records stay NaN). ``limit`` is 1e100 in float64 and the largest float32
  in float32 (1e100 is not representable there);
* ``fastmath`` is the flag subset ``FASTMATH`` (no ``nnan``/``ninf``), so the guard is
  never optimised away (tests check that it fires);
* the minibatch of (seed, stream, step) is ``kdsim.rng``'s stream; the least-squares kernels
  write its draw out in their step loops (Floyd's sampling, the epoch's permutation) instead of
  calling ``rng.batch_into_nb``: there a call taking arrays cost reference-count updates and
  argument passing worth more than a step's arithmetic at d = 50 (the engine tests compare
  every sampling scheme with the reference, trajectory by trajectory);
* hot loops index with ``range`` variables from 0, or with unsigned offsets: numba
  gives a signed index it cannot prove non-negative wraparound code, which stops LLVM
  from vectorising the loop; and they take no array views (``A[i]``), whose
  reference counting costs atomic operations in the loop.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..rng import _GOLDEN_INT as _G_INT
from ..rng import epoch_key_nb, permutation_into_nb, splitmix64_nb, step_key_nb, uniform_below_nb
from ._simd import (LANES, _aligned_empty, _borrow, _vabs, _vadd, _vbcast, _vf64, _vfma, _vhsum8, _vload, _vload_n,
                    _vmul, _vnonneg, _vsplat, _vstore, _vsub, _vtranspose8, _vwhere_gt, _vzero, wide_vectors)

#: LLVM fast-math flags used by every kernel: reassociation (vectorised reductions),
#: contraction (FMA), approximate functions and no-signed-zero; never nnan/ninf, and never
#: arcp: with it a loop's vectorised copy may multiply by a hoisted reciprocal where its scalar
#: copy divides, and which copy runs depends on the runtime alias checks, i.e. on where the
#: arrays were allocated — the same run then differs in the last bit from one call to the next.
FASTMATH = {"nsz", "contract", "afn", "reassoc"}


#: seeds stepped together by ``ls_affine``; a compile-time constant, so loops over the
#: seeds of a block unroll. 8 keeps a block's (u, v) pairs and their F-products in L1.
SEED_BLOCK = 8

#: ``ls_affine`` evaluates a record from its quadratic in λ when the worst-case rounding
#: bound of that evaluation is below this relative error; otherwise directly (see
#: ``_records_block``).
QUAD_RECORD_RTOL = 1e-12


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _tri_matvec(F, e, out):
    """out = F @ e for an upper-trapezoidal F (rows r use columns p >= r), float64.

    The column index is unsigned: numba gives a signed index it cannot prove
    non-negative (such as p in range(r, d)) wraparound code, which blocks vectorisation.
    """
    m, d = F.shape
    for r in range(m):
        r0 = np.uint64(r)
        acc = 0.0
        for pp in range(np.uint64(d - r)):
            acc += F[r, r0 + pp] * e[r0 + pp]
        out[r] = acc


#: rows r of F·w in one explicit vector of ``_tri_pairs``; Fᵀ is padded to a multiple of it
TILE_LANES = LANES
# the seed slots of a block are the lanes of the records' per-seed sums (one _vhsum8 per sum)
assert SEED_BLOCK == LANES == 8


#: rows of W in one tile of ``_tri_pairs``: 8 where there are 32 vector registers (AVX-512); 4 with 16
#: (AVX2, where an 8-lane vector takes two registers and 8 rows would spill accumulators to the stack)
TILE_ROWS = 8 if wide_vectors() else 4


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _tri_pairs(Ft, W, FW, Q, q0):
    """FW[q, r] = Σ_{p>=r} F[r, p] W[q, p] for the 2·SEED_BLOCK rows q of W, and per seed slot g (rows
    2g = u − x* and 2g + 1 = v) the vectors over g of ‖F e_g‖², ⟨F e_g, F v_g⟩ and ‖F v_g‖² (lane g).

    Ft = Fᵀ (d × mp, ``lane_factor``) is zero below F's diagonal and in its padding columns, so a
    chunk of rows r0 .. r0 + 7 needs only p >= r0. A tile is ``TILE_ROWS`` rows of W × 8 lanes of r: per
    p one vector load of Ft[p, r0:r0+8] and a fused multiply-add per row with a broadcast entry of W, no
    horizontal sums and no loop remainders. Each seed's sums of products accumulate per lane in
    rows q0 .. q0 + 3·SEED_BLOCK − 1 of ``Q`` (scratch, LANES wide) and are reduced at the end.
    """
    d, mp = Ft.shape
    dw = W.shape[1]
    G = SEED_BLOCK
    for q in range(3 * G):
        _vstore(Q, (q0 + q) * LANES, _vzero(Q))
    for r0 in range(0, mp, LANES):
        p0 = min(r0, d)
        for h in range(0, 2 * G, TILE_ROWS):
            a0 = _vzero(FW)
            a1 = a0
            a2 = a0
            a3 = a0
            a4 = a0
            a5 = a0
            a6 = a0
            a7 = a0
            for p in range(p0, d):
                f = _vload(Ft, p * mp + r0)
                w = h * dw + p
                a0 = _vfma(_vbcast(W, w), f, a0)
                a1 = _vfma(_vbcast(W, w + dw), f, a1)
                a2 = _vfma(_vbcast(W, w + 2 * dw), f, a2)
                a3 = _vfma(_vbcast(W, w + 3 * dw), f, a3)
                if TILE_ROWS == 8:
                    a4 = _vfma(_vbcast(W, w + 4 * dw), f, a4)
                    a5 = _vfma(_vbcast(W, w + 5 * dw), f, a5)
                    a6 = _vfma(_vbcast(W, w + 6 * dw), f, a6)
                    a7 = _vfma(_vbcast(W, w + 7 * dw), f, a7)
            o = h * mp + r0
            g = h // 2
            _vstore(FW, o, a0)
            _vstore(FW, o + mp, a1)
            _vstore(FW, o + 2 * mp, a2)
            _vstore(FW, o + 3 * mp, a3)
            _accumulate_pair(Q, q0 + g, a0, a1)
            _accumulate_pair(Q, q0 + g + 1, a2, a3)
            if TILE_ROWS == 8:
                _vstore(FW, o + 4 * mp, a4)
                _vstore(FW, o + 5 * mp, a5)
                _vstore(FW, o + 6 * mp, a6)
                _vstore(FW, o + 7 * mp, a7)
                _accumulate_pair(Q, q0 + g + 2, a4, a5)
                _accumulate_pair(Q, q0 + g + 3, a6, a7)
    return (_sum_rows(Q, q0), _sum_rows(Q, q0 + G), _sum_rows(Q, q0 + 2 * G))


@njit(cache=True, nogil=True, inline="always")
def _accumulate_pair(Q, q, e, v):
    """Rows q, q + SEED_BLOCK and q + 2·SEED_BLOCK of Q (LANES wide) += e·e, e·v, v·v."""
    i0 = q * LANES
    i1 = i0 + SEED_BLOCK * LANES
    i2 = i1 + SEED_BLOCK * LANES
    _vstore(Q, i0, _vfma(e, e, _vload(Q, i0)))
    _vstore(Q, i1, _vfma(e, v, _vload(Q, i1)))
    _vstore(Q, i2, _vfma(v, v, _vload(Q, i2)))


@njit(cache=True, nogil=True, inline="always")
def _sum_rows(Q, q):
    """The vector of the lane sums of rows q .. q + 7 of Q (LANES wide)."""
    return _vhsum8(_vload(Q, q * LANES), _vload(Q, (q + 1) * LANES), _vload(Q, (q + 2) * LANES),
                   _vload(Q, (q + 3) * LANES), _vload(Q, (q + 4) * LANES), _vload(Q, (q + 5) * LANES),
                   _vload(Q, (q + 6) * LANES), _vload(Q, (q + 7) * LANES))


def lane_factor(F):
    """Ft for ``_tri_pairs``: the transpose of the upper-trapezoidal F (m × d), zero below
    F's diagonal and in the columns padding m to a multiple of ``TILE_LANES``."""
    m, d = F.shape
    mp = -(-m // TILE_LANES) * TILE_LANES
    Ft = np.zeros((d, mp))
    Ft[:, :m] = np.triu(F).T
    return Ft


@njit(cache=True, nogil=True, inline="always")
def _index1(key0, t, n):
    """The index of a batch-1 step: ``minibatch_into_nb`` with b = 1 is one draw."""
    if n == 1:
        return 0
    h = splitmix64_nb(step_key_nb(key0, t) + np.uint64(_G_INT))
    return np.int64(uniform_below_nb(h, np.uint64(n)))


#: ``perm_start`` of a slot whose permutation was never built
NO_EPOCH = -(1 << 62)


@njit(cache=True, nogil=True)
def _index1s(key0, t, n, code, perm, perm_start, g):
    """The index of a batch-1 step under sampling ``code`` (an epoch is n steps).

    Slot g caches its epoch's permutation and the epoch's first step ``perm_start[g]``
    (``NO_EPOCH`` at first); the kernels look a step inside the cached epoch up themselves
    (``perm[g, t − perm_start[g]]``: one subtraction and one load, no call) and call this
    only at an epoch's first step, or for i.i.d. sampling. The same indices as
    ``kdsim.rng.batch_into_nb`` at b = 1.
    """
    if code == 0:
        return _index1(key0, t, n)
    k = t - perm_start[g]
    if k < 0 or k >= n:
        e = t // n
        if code == 1 or perm_start[g] == NO_EPOCH:      # shuffle-once builds epoch 0's only once
            permutation_into_nb(epoch_key_nb(key0, e if code == 1 else 0), n, perm[g])
        perm_start[g] = e * n
        k = t - e * n
    return perm[g, k]


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _records_block(s0, rec, gn, active, alive, U, V, use_v, acoef, xstar, theta_c, Ft, alpha64, quad_tol,
                   W, FW, part, out_d, out_s, out_t, coeffs, usave, vsave):
    """Records at record ``rec`` of the block's active seeds (float64).

    One pass per seed writes e = u − x* and v into W (rows 2g, 2g + 1) and sums ‖u − x*‖²,
    ⟨u − x*, v⟩, ‖v‖², ‖u − θ‖², ⟨u − θ, v⟩ in explicit vectors; F·(u − x*) and F·v of all seeds
    come from one lane-tiled triangular product (``_tri_pairs``, ``Ft`` from ``lane_factor``),
    which also sums their squares and products. The sums are reduced into vectors over the
    block's seed slots (lane g; ``part`` is scratch of 8·SEED_BLOCK rows × LANES), and every
    record is a quadratic in a = λ, evaluated for all slots at once. A λ whose quadratic may
    have lost more than ``QUAD_RECORD_RTOL`` to cancellation (its value below ``quad_tol`` times
    the sum of its terms' magnitudes; ``quad_tol`` = 2(max(d, m) + 3)·eps / rtol bounds the
    rounding of the sums) is evaluated directly from e = (u − x*) + a·v instead, so records
    near x* keep every digit.
    """
    d = xstar.shape[0]
    dp = U.shape[1]
    dw = W.shape[1]
    mp = Ft.shape[1]
    L = acoef.shape[0]
    G = SEED_BLOCK
    if usave.shape[0] > 0:                  # keep_iterates: (u, v) of the block's seeds at this record
        for g in range(gn):
            for p in range(d):
                usave[s0 + g, rec, p] = U[g, p]
                vsave[s0 + g, rec, p] = V[g, p]
    for g in range(G):
        se0 = _vzero(W)
        se1 = se0
        se2 = se0
        sw0 = se0
        sw1 = se0
        for p in range(0, d, LANES):
            n = d - p
            u = _vf64(_vload_n(U, g * dp + p, n))
            v = _vf64(_vload_n(V, g * dp + p, n))
            e = _vsub(u, _vload_n(xstar, p, n))
            w = _vsub(u, _vload_n(theta_c, p, n))
            _vstore(W, 2 * g * dw + p, e)
            _vstore(W, (2 * g + 1) * dw + p, v)
            se0 = _vfma(e, e, se0)
            se1 = _vfma(e, v, se1)
            se2 = _vfma(v, v, se2)
            sw0 = _vfma(w, w, sw0)
            sw1 = _vfma(w, v, sw1)
        _vstore(part, g * LANES, se0)
        _vstore(part, (G + g) * LANES, se1)
        _vstore(part, (2 * G + g) * LANES, se2)
        _vstore(part, (3 * G + g) * LANES, sw0)
        _vstore(part, (4 * G + g) * LANES, sw1)
    q0v, q1v, q2v = _tri_pairs(Ft, W, FW, part, 5 * G)
    e0v = _sum_rows(part, 0)
    e1v = _sum_rows(part, G)
    e2v = _sum_rows(part, 2 * G)
    w0v = _sum_rows(part, 3 * G)
    w1v = _sum_rows(part, 4 * G)
    if not use_v:
        e1v = _vzero(W)
        e2v = e1v
        w1v = e1v
        q1v = e1v
        q2v = e1v
    e1v = _vadd(e1v, e1v)                   # the linear coefficients 2⟨·,·⟩
    w1v = _vadd(w1v, w1v)
    q1v = _vadd(q1v, q1v)
    ae1 = _vabs(e1v)
    aw1 = _vabs(w1v)
    aq1 = _vabs(q1v)
    tol = _vsplat(np.float64(quad_tol))
    for k in range(L):
        a = np.float64(acoef[k])
        if a == 0.0:
            # λ = 0: the constant terms alone, exactly (whatever v holds)
            s1 = e0v
            s2 = w0v
            s3 = q0v
            ok = _vsplat(1.0)
        else:
            av = _vsplat(a)
            aa = _vsplat(abs(a))
            a2 = _vsplat(a * a)
            # the three records of every seed slot (lane g) and their cancellation margins
            s1 = _vfma(av, _vfma(av, e2v, e1v), e0v)
            s2 = _vfma(av, _vfma(av, e2v, w1v), w0v)
            s3 = _vfma(av, _vfma(av, q2v, q1v), q0v)
            m1 = _vsub(s1, _vmul(tol, _vfma(a2, e2v, _vfma(aa, ae1, e0v))))
            m2 = _vsub(s2, _vmul(tol, _vfma(a2, e2v, _vfma(aa, aw1, w0v))))
            m3 = _vsub(s3, _vmul(tol, _vfma(a2, q2v, _vfma(aa, aq1, q0v))))
            ok = _vmul(_vnonneg(m1), _vmul(_vnonneg(m2), _vnonneg(m3)))
        _vstore(part, 0, s1)
        _vstore(part, LANES, s2)
        _vstore(part, 2 * LANES, _vmul(_vsplat(0.5), _vfma(_vsplat(np.float64(alpha64)), s1, s3)))
        _vstore(part, 3 * LANES, ok)
        for g in range(gn):
            s = s0 + g
            if not (active[g] and alive[g, k]):
                out_d[k, s, rec] = np.nan
                out_t[k, s, rec] = np.nan
                out_s[k, s, rec] = np.nan
            elif part[3, g] != 0.0:
                out_d[k, s, rec] = part[0, g]
                out_t[k, s, rec] = part[1, g]
                out_s[k, s, rec] = part[2, g]
            else:
                # the quadratic may have lost digits to cancellation: directly from e = (u − x*) + a·v
                r1 = 0.0
                r2 = 0.0
                for p in range(d):
                    up = np.float64(U[g, p])
                    ap = a * np.float64(V[g, p])
                    e = (up - xstar[p]) + ap
                    w = (up - theta_c[p]) + ap
                    r1 += e * e
                    r2 += w * w
                r3 = 0.0
                for r in range(mp):
                    z = FW[2 * g, r] + a * FW[2 * g + 1, r]
                    r3 += z * z
                out_d[k, s, rec] = r1
                out_t[k, s, rec] = r2
                out_s[k, s, rec] = 0.5 * (r3 + alpha64 * r1)
    if coeffs.shape[0] > 0:
        # rows of part: e0, 2e1, e2, w0, 2w1, q0, 2q1, q2 of every seed slot
        _vstore(part, 0, e0v)
        _vstore(part, LANES, e1v)
        _vstore(part, 2 * LANES, e2v)
        _vstore(part, 3 * LANES, w0v)
        _vstore(part, 4 * LANES, w1v)
        _vstore(part, 5 * LANES, q0v)
        _vstore(part, 6 * LANES, q1v)
        _vstore(part, 7 * LANES, q2v)
        for g in range(gn):
            if not active[g]:
                continue
            c = coeffs[s0 + g, rec]
            c[0, 0] = part[0, g]
            c[0, 1] = part[1, g]
            c[0, 2] = part[2, g]
            c[1, 0] = 0.5 * (part[5, g] + alpha64 * part[0, g])
            c[1, 1] = 0.5 * (part[6, g] + alpha64 * part[1, g])
            c[1, 2] = 0.5 * (part[7, g] + alpha64 * part[2, g])
            c[2, 0] = part[3, g]
            c[2, 1] = part[4, g]
            c[2, 2] = part[2, g]


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _exact_guard(g, s, t, U, V, use_v, acw, alive, n_alive, limit, div, unsafe):
    """Exact divergence test of seed slot g after step t (only when the cheap bound fails).

    For each alive λ_k: diverged at t + 1 when not (‖u‖² + 2a⟨u,v⟩ + a²‖v‖² <= limit).
    A seed with an alive λ whose ‖u‖² or a²‖v‖² passed the limit is flagged in
    ``unsafe`` (the affine form would lose every digit) and stops.
    Returns (‖u‖, ‖v‖, whether the seed goes on).
    """
    nu = 0.0
    nv = 0.0
    nuv = 0.0
    for p in range(U.shape[1]):
        up = np.float64(U[g, p])
        vp = np.float64(V[g, p])
        nu += up * up
        nv += vp * vp
        nuv += up * vp
    bad_seed = False
    for k in range(acw.shape[0]):
        if not alive[g, k]:
            continue
        a = np.float64(acw[k])
        if use_v and a != 0.0:
            q = nu + 2.0 * a * nuv + a * a * nv
            big = not (nu <= limit and a * a * nv <= limit)
        else:
            q = nu
            big = False
        if not (q <= limit):
            alive[g, k] = False
            n_alive[g] -= 1
            div[k, s] = t + 1
        elif big:
            bad_seed = True
    if bad_seed:
        unsafe[s] = True
        return np.sqrt(nu), np.sqrt(nv), False
    return np.sqrt(nu), np.sqrt(nv), n_alive[g] > 0


@njit(cache=True, nogil=True, inline="always", fastmath=FASTMATH)
def _within(ubu, ubv, amax, half_limit):
    """True when the triangle-inequality bound ‖u‖ + max|a|·‖v‖ cannot reach the limit."""
    bound = ubu + amax * ubv
    return bound * bound <= half_limit


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _after_guard(g, s, t, U, V, use_v, acw, alive, n_alive, limit, div, unsafe, ubu, ubv, amax):
    """The exact divergence test of seed slot g after step t; resets its bounds. Returns whether it goes on."""
    nu, nv, goes_on = _exact_guard(g, s, t, U, V, use_v, acw, alive, n_alive, limit, div, unsafe)
    ubu[g] = nu
    ubv[g] = nv
    if goes_on:
        am = 0.0
        for k in range(acw.shape[0]):
            if alive[g, k] and use_v and abs(np.float64(acw[k])) > am:
                am = abs(np.float64(acw[k]))
        amax[g] = am
    return goes_on


@njit(cache=True, nogil=True)
def _fill_permutation(key0, e, n, perm, g):
    """perm[g] ← epoch e's permutation of seed key ``key0`` (``rng.permutation_into_nb``), once per epoch."""
    permutation_into_nb(epoch_key_nb(key0, e), n, perm[g])


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _block_state(gn, x0, xstar, acw, use_v, mp):
    """A block's iterates (u = x0, v = 0), liveness and guard bounds, and its record buffers
    (W, F·W and the scratch of per-seed sums of ``_records_block``)."""
    G = SEED_BLOCK
    L = acw.shape[0]
    dp = x0.shape[0]
    U = _aligned_empty(G, dp, x0)          # on cache lines: no vector load straddles two
    V = _aligned_empty(G, dp, x0)
    U[:, :] = 0
    V[:, :] = 0
    alive = np.ones((G, L), dtype=np.bool_)
    n_alive = np.full(G, L, dtype=np.int64)
    active = np.zeros(G, dtype=np.bool_)
    ubu = np.zeros(G)
    ubv = np.zeros(G)
    amax = np.zeros(G)
    a_abs = 0.0
    for k in range(L):
        if use_v and abs(np.float64(acw[k])) > a_abs:
            a_abs = abs(np.float64(acw[k]))
    x0_norm = 0.0
    for p in range(dp):
        x0_norm += np.float64(x0[p]) * np.float64(x0[p])
    x0_norm = np.sqrt(x0_norm)
    for g in range(gn):
        active[g] = True
        amax[g] = a_abs
        ubu[g] = x0_norm
        for p in range(dp):
            U[g, p] = x0[p]
    dw = -(-xstar.shape[0] // LANES) * LANES
    W = _aligned_empty(2 * G, dw, xstar)
    FW = _aligned_empty(2 * G, mp, xstar)
    part = _aligned_empty(8 * G, LANES, xstar)
    W[:, :] = 0.0
    FW[:, :] = 0.0
    part[:, :] = 0.0
    return U, V, alive, n_alive, active, ubu, ubv, amax, W, FW, part


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _block_finish(s0, gn, rec, R, L, U, V, d, out_d, out_s, out_t, ufin, vfin):
    """NaN records after every seed of the block stopped; the final (u, v)."""
    for r in range(rec, R):
        for k in range(L):
            for g in range(gn):
                out_d[k, s0 + g, r] = np.nan
                out_t[k, s0 + g, r] = np.nan
                out_s[k, s0 + g, r] = np.nan
    for g in range(gn):
        for p in range(d):
            ufin[s0 + g, p] = U[g, p]
            vfin[s0 + g, p] = V[g, p]


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _ls_affine_block1(s0, gn, A, bvec, rth, agcv, anorm, gcv, gcv_norm, plain, c1, gam_b, x0, acoef, acw, use_v,
                      rec_steps, steps, stream_keys, code, xstar, theta_c, Ft, alpha64, quad_tol, limit, zero,
                      out_d, out_s, out_t, div, ufin, vfin, unsafe, coeffs, usave, vsave):
    """Seeds s0 .. s0 + gn − 1 of ``ls_affine`` at batch size 1, their steps taken in pairs.

    A pair (steps t, t + 1 with rows i0, i1) is one pass for a_0ᵀu, a_1ᵀu, a_0ᵀv, a_1ᵀv and
    a_0ᵀa_1 and one pass for both updates: the second residual is
    a_1ᵀu_{t+1} = c1·a_1ᵀu_t − r_0·a_0ᵀa_1 (for v plus a_1ᵀ(γc) = ``agcv``), and
    u_{t+2} = c1²u_t − c1·r_0·a_0 − r_1·a_1, so u and v are read twice per pair instead of
    four times. A pair never straddles a record step. Steps run one at a time instead (the
    same draws) before a record or the end when one step is left, and for a seed whose
    triangle-inequality bound could reach the limit within the pair, so the exact guard
    sees every iterate it has to. A pair's residuals and bounds are computed for the whole
    block at once, the seed slots as vector lanes. The step code is written inline: a helper
    taking arrays would cost reference-count updates per call.
    """
    n, dp = A.shape
    d = xstar.shape[0]
    L = acoef.shape[0]
    R = rec_steps.shape[0]
    U, V, alive, n_alive, active, ubu, ubv, amax, W, FW, part = _block_state(gn, x0, xstar, acw, use_v, Ft.shape[1])
    perm = np.empty((SEED_BLOCK, n if code != 0 else 0), dtype=np.int64)
    perm_start = np.full(SEED_BLOCK, NO_EPOCH, dtype=np.int64)
    rows = np.zeros((SEED_BLOCK, 2), dtype=np.int64)          # a pair's two rows of A per seed slot
    dots = _aligned_empty(SEED_BLOCK, LANES, U)               # its five dot products per seed slot
    # a pair's scalars with the seed slots as lanes: b_i0, rth_i0, b_i1, rth_i1, agcv_i1; ‖a_i0‖, ‖a_i1‖;
    # the residuals r_u0, r_u1, r_v0, r_v1; and 1 where the pair needs no exact guard
    at_rows = _aligned_empty(5, LANES, U)
    at_norms = _aligned_empty(2, LANES, ubu)
    resid = _aligned_empty(4, LANES, U)
    no_guard = _aligned_empty(1, LANES, ubu)
    dots[:, :] = 0                      # an idle slot's lanes hold finite numbers
    at_rows[:, :] = 0
    at_norms[:, :] = 0
    half_limit = 0.5 * limit
    c1_abs = abs(np.float64(c1))
    c1v = _vsplat(c1)
    c2v = _vsplat(c1 * c1)
    n_active = gn
    rec = np.int64(0)                   # not literals: callees compile once, for int64
    t = np.int64(0)
    while True:
        if rec < R and rec_steps[rec] == t:
            # borrowed views: a call with array arguments costs two atomic reference-count updates per array
            _records_block(s0, rec, gn, _borrow(active), _borrow(alive), _borrow(U), _borrow(V), use_v,
                           _borrow(acoef), _borrow(xstar), _borrow(theta_c), _borrow(Ft), alpha64, quad_tol,
                           _borrow(W), _borrow(FW), _borrow(part), _borrow(out_d), _borrow(out_s), _borrow(out_t),
                           _borrow(coeffs), _borrow(usave), _borrow(vsave))
            rec += 1
        if t >= steps or n_active == 0:
            break
        stop = min(rec_steps[rec], steps) if rec < R and rec_steps[rec] > t else steps
        pair = stop - t >= 2
        if pair:
            # the pair's rows and dot products of every seed first, each seed's update after: the seeds'
            # independent chains (draw, loads, sums) then overlap instead of waiting on one another
            for g in range(gn):
                if not active[g]:
                    continue
                key0 = stream_keys[s0 + g]
                # the indices inline: a call that takes the permutation arrays (even one inlined by numba)
                # costs reference-count updates per step, which were a third of this loop's time
                if code == 0:
                    i0 = _index1(key0, t, n)
                    i1 = _index1(key0, t + 1, n)
                else:
                    k0 = t - perm_start[g]
                    i0 = perm[g, k0] if 0 <= k0 < n else _index1s(key0, t, n, code, perm, perm_start, g)
                    k0 = t + 1 - perm_start[g]
                    i1 = perm[g, k0] if 0 <= k0 < n else _index1s(key0, t + 1, n, code, perm, perm_start, g)
                rows[g, 0] = i0
                rows[g, 1] = i1
                at_rows[0, g] = bvec[i0]
                at_rows[1, g] = rth[i0]
                at_rows[2, g] = bvec[i1]
                at_rows[3, g] = rth[i1]
                at_rows[4, g] = agcv[i1]
                at_norms[0, g] = anorm[i0]
                at_norms[1, g] = anorm[i1]
            for g in range(gn):
                if not active[g]:
                    _vstore(dots, g * LANES, _vzero(U))
                    continue
                # five dot products over whole vectors (dp is a multiple of LANES), one horizontal sum
                z = _vzero(U)
                su0 = z
                su1 = z
                sv0 = z
                sv1 = z
                sk = z
                o0 = rows[g, 0] * dp
                o1 = rows[g, 1] * dp
                og = g * dp
                for p in range(0, dp, LANES):
                    x0v = _vload(A, o0 + p)
                    x1v = _vload(A, o1 + p)
                    uv = _vload(U, og + p)
                    su0 = _vfma(x0v, uv, su0)
                    su1 = _vfma(x1v, uv, su1)
                    sk = _vfma(x0v, x1v, sk)
                    if use_v:
                        vv = _vload(V, og + p)
                        sv0 = _vfma(x0v, vv, sv0)
                        sv1 = _vfma(x1v, vv, sv1)
                _vstore(dots, g * LANES, _vhsum8(su0, su1, sv0, sv1, sk, z, z, z))
            # the residuals and the bounds of every seed slot at once, as lanes: the scalar chain
            # (dots → residuals → bounds → test) of one seed no longer delays the next seed's update
            dcol = _vtranspose8(_vload(dots, 0), _vload(dots, LANES), _vload(dots, 2 * LANES),
                                _vload(dots, 3 * LANES), _vload(dots, 4 * LANES), _vload(dots, 5 * LANES),
                                _vload(dots, 6 * LANES), _vload(dots, 7 * LANES))
            gbv = _vsplat(gam_b)
            ru0 = _vmul(gbv, _vsub(dcol[0], _vload(at_rows, 0)))
            rv0 = _vmul(gbv, _vsub(dcol[2], _vload(at_rows, LANES)))
            ru1 = _vmul(gbv, _vsub(_vsub(_vmul(c1v, dcol[1]), _vmul(ru0, dcol[4])), _vload(at_rows, 2 * LANES)))
            rv1 = _vmul(gbv, _vsub(_vadd(_vsub(_vmul(c1v, dcol[3]), _vmul(rv0, dcol[4])),
                                         _vload(at_rows, 4 * LANES)), _vload(at_rows, 3 * LANES)))
            _vstore(resid, 0, ru0)
            _vstore(resid, LANES, ru1)
            _vstore(resid, 2 * LANES, rv0)
            _vstore(resid, 3 * LANES, rv1)
            # ‖u‖, ‖v‖ bounds after each step of the pair (float64), as in the steps taken one at a time
            cab = _vsplat(c1_abs)
            gnv = _vsplat(gcv_norm)
            n0 = _vload(at_norms, 0)
            n1 = _vload(at_norms, LANES)
            ubu0 = _vload(ubu, 0)
            ubv0 = _vload(ubv, 0)
            ub1u = _vadd(_vmul(cab, ubu0), _vmul(_vabs(_vf64(ru0)), n0))
            ub1v = _vadd(_vadd(_vmul(cab, ubv0), _vmul(_vabs(_vf64(rv0)), n0)), gnv)
            ub2u = _vadd(_vmul(cab, ub1u), _vmul(_vabs(_vf64(ru1)), n1))
            ub2v = _vadd(_vadd(_vmul(cab, ub1v), _vmul(_vabs(_vf64(rv1)), n1)), gnv)
            am = _vload(amax, 0)
            hl = _vsplat(half_limit)
            bd1 = _vadd(ub1u, _vmul(am, ub1v))
            bd2 = _vadd(ub2u, _vmul(am, ub2v))
            # (‖u‖ + max|a|·‖v‖)² <= limit/2 after both steps (``_within``); NaN fails
            ok = _vmul(_vnonneg(_vsub(hl, _vmul(bd1, bd1))), _vnonneg(_vsub(hl, _vmul(bd2, bd2))))
            _vstore(no_guard, 0, ok)
            half = _vsplat(0.5)
            _vstore(ubu, 0, _vwhere_gt(ok, half, ub2u, ubu0))
            _vstore(ubv, 0, _vwhere_gt(ok, half, ub2v, ubv0))
        for g in range(gn):
            if not active[g]:
                continue
            key0 = stream_keys[s0 + g]
            singles = 1
            if pair:
                if no_guard[0, g] != 0.0:
                    o0 = rows[g, 0] * dp
                    o1 = rows[g, 1] * dp
                    og = g * dp
                    ru0 = resid[0, g]
                    ru1 = resid[1, g]
                    rv0 = resid[2, g]
                    rv1 = resid[3, g]
                    r0u = _vsplat(ru0)
                    r1u = _vsplat(ru1)
                    r0v = _vsplat(rv0)
                    r1v = _vsplat(rv1)
                    cu0 = _vsplat(c1 * ru0)
                    cv0 = _vsplat(c1 * rv0)
                    # one loop per case, no branch inside (LLVM does not unswitch these); with c1 = 1
                    # the general u update is the plain one exactly
                    if use_v and plain:
                        for p in range(0, dp, LANES):
                            x0v = _vload(A, o0 + p)
                            x1v = _vload(A, o1 + p)
                            _vstore(U, og + p, _vsub(_vload(U, og + p), _vfma(r0u, x0v, _vmul(r1u, x1v))))
                            _vstore(V, og + p, _vsub(_vload(V, og + p), _vfma(r0v, x0v, _vmul(r1v, x1v))))
                    elif use_v:
                        for p in range(0, dp, LANES):
                            x0v = _vload(A, o0 + p)
                            x1v = _vload(A, o1 + p)
                            gv = _vload(gcv, p)              # γc enters both steps: c1·γc + γc
                            _vstore(U, og + p, _vsub(_vmul(c2v, _vload(U, og + p)), _vfma(cu0, x0v, _vmul(r1u, x1v))))
                            _vstore(V, og + p, _vadd(_vsub(_vmul(c2v, _vload(V, og + p)),
                                                           _vfma(cv0, x0v, _vmul(r1v, x1v))), _vfma(c1v, gv, gv)))
                    else:
                        for p in range(0, dp, LANES):
                            _vstore(U, og + p, _vsub(_vmul(c2v, _vload(U, og + p)),
                                                     _vfma(cu0, _vload(A, o0 + p), _vmul(r1u, _vload(A, o1 + p)))))
                    continue
                singles = 2
            for tt in range(t, t + singles):
                if code == 0:
                    i = _index1(key0, tt, n)
                else:
                    k0 = tt - perm_start[g]
                    i = perm[g, k0] if 0 <= k0 < n else _index1s(key0, tt, n, code, perm, perm_start, g)
                au = zero
                av = zero
                if use_v:
                    for p in range(dp):
                        au += A[i, p] * U[g, p]
                        av += A[i, p] * V[g, p]
                else:
                    for p in range(dp):
                        au += A[i, p] * U[g, p]
                r0 = gam_b * (au - bvec[i])
                r1 = gam_b * (av - rth[i])
                if use_v and plain:
                    for p in range(dp):
                        U[g, p] -= r0 * A[i, p]
                        V[g, p] -= r1 * A[i, p]
                elif use_v:
                    for p in range(dp):
                        U[g, p] = c1 * U[g, p] - r0 * A[i, p]
                        V[g, p] = c1 * V[g, p] - r1 * A[i, p] + gcv[p]
                else:
                    for p in range(dp):
                        U[g, p] = c1 * U[g, p] - r0 * A[i, p]
                ubu[g] = c1_abs * ubu[g] + abs(np.float64(r0)) * anorm[i]
                ubv[g] = c1_abs * ubv[g] + abs(np.float64(r1)) * anorm[i] + gcv_norm
                if not _within(ubu[g], ubv[g], amax[g], half_limit):
                    if not _after_guard(g, s0 + g, tt, U, V, use_v, acw, alive, n_alive, limit, div, unsafe,
                                        ubu, ubv, amax):
                        active[g] = False
                        n_active -= 1
                        break
        t += 2 if pair else 1
    _block_finish(s0, gn, rec, R, L, U, V, d, out_d, out_s, out_t, ufin, vfin)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _ls_affine_block(s0, gn, A, bvec, rth, anorm, gcv, gcv_norm, plain, c1, gam_bs, gam_alpha, scales, x0, acoef,
                     acw, use_v, rec_steps, steps, stream_keys, b, code, K, mom, xstar, theta_c, Ft, alpha64,
                     quad_tol, limit, zero, out_d, out_s, out_t, div, ufin, vfin, unsafe, coeffs, usave, vsave):
    """Seeds s0 .. s0 + gn − 1 (gn <= SEED_BLOCK) of ``ls_affine`` at any batch size, stepped together.

    Any sampling scheme (``code``, ``K``: ``kdsim.rng``; a partial batch scales by γ/b_t from
    ``gam_bs``), a per-epoch λ scale s_e (``scales``: the teacher forcing of v is s_e times
    its constant-λ value) and heavy-ball momentum ``mom`` (velocities of u and v, each linear
    in the state, so x(λ) = u + λv still holds; the guard's triangle-inequality bound runs through
    the velocities).
    """
    n, dp = A.shape
    d = xstar.shape[0]
    L = acoef.shape[0]
    R = rec_steps.shape[0]
    E = scales.shape[0]
    G = SEED_BLOCK
    U, V, alive, n_alive, active, ubu, ubv, amax, W, FW, part = _block_state(gn, x0, xstar, acw, use_v, Ft.shape[1])
    RU = np.zeros((G, b), dtype=x0.dtype)
    RV = np.zeros((G, b), dtype=x0.dtype)
    IDX = np.zeros((G, b), dtype=np.int64)
    NB = np.full(G, b, dtype=np.int64)
    WU = np.zeros((G if mom != 0 else 0, dp), dtype=x0.dtype)
    WV = np.zeros((G if mom != 0 else 0, dp), dtype=x0.dtype)
    GU = np.zeros(dp if mom != 0 else 0, dtype=x0.dtype)
    GV = np.zeros(dp if mom != 0 else 0, dtype=x0.dtype)
    wbu = np.zeros(G)                      # bounds on the velocities' norms
    wbv = np.zeros(G)
    mom_abs = abs(np.float64(mom))
    ga_abs = abs(np.float64(gam_alpha))
    perm = np.empty((G, n if code != 0 else 0), dtype=np.int64)
    perm_epoch = np.full(G, -1, dtype=np.int64)
    taken = np.zeros(n, dtype=np.bool_)
    half_limit = 0.5 * limit
    c1_abs = abs(np.float64(c1))
    n_active = gn
    rec = np.int64(0)                   # not the literal 0: callees compile once, for int64
    for t in range(steps + 1):
        if rec < R and rec_steps[rec] == t:
            # borrowed views: a call with array arguments costs two atomic reference-count updates per array
            _records_block(s0, rec, gn, _borrow(active), _borrow(alive), _borrow(U), _borrow(V), use_v,
                           _borrow(acoef), _borrow(xstar), _borrow(theta_c), _borrow(Ft), alpha64, quad_tol,
                           _borrow(W), _borrow(FW), _borrow(part), _borrow(out_d), _borrow(out_s), _borrow(out_t),
                           _borrow(coeffs), _borrow(usave), _borrow(vsave))
            rec += 1
        if t == steps or n_active == 0:
            break
        sc = scales[min(t // K, E - 1)]
        # step t's minibatch and residuals of every seed of the block (rng.batch_into_nb's stream, written
        # out here: a call taking arrays, even one numba inlines, costs reference counts per step), then
        # every update: the seeds' independent passes overlap in the CPU
        for g in range(gn):
            if not active[g]:
                continue
            key0 = stream_keys[s0 + g]
            if code == 0:
                nb = b
                if b == n:
                    for q in range(n):
                        IDX[g, q] = q
                else:                           # Floyd's sampling (rng.minibatch_into_nb)
                    skey = step_key_nb(key0, t)
                    for q in range(b):
                        c = n - b + q
                        h = splitmix64_nb(skey + np.uint64(q + 1) * np.uint64(_G_INT))
                        r = np.int64(uniform_below_nb(h, np.uint64(c + 1)))
                        pick = c if taken[r] else r
                        taken[pick] = True
                        IDX[g, q] = pick
                    for q in range(b):
                        taken[IDX[g, q]] = False
            else:                               # the epoch's permutation (rng.epoch_batch_nb)
                e = t // K
                lo = (t - e * K) * b
                if code == 2:
                    e = 0
                if perm_epoch[g] != e:
                    _fill_permutation(key0, e, n, perm, g)
                    perm_epoch[g] = e
                nb = min(b, n - lo)
                for q in range(nb):
                    IDX[g, q] = perm[g, lo + q]
            NB[g] = nb
            gam_b = gam_bs[nb]
            for q in range(nb):                 # (γ/b_t)(a_iᵀu − b_i), (γ/b_t)(a_iᵀv − s·rth_i)
                i = IDX[g, q]
                au = zero
                av = zero
                if use_v:
                    for p in range(dp):
                        au += A[i, p] * U[g, p]
                        av += A[i, p] * V[g, p]
                else:
                    for p in range(dp):
                        au += A[i, p] * U[g, p]
                RU[g, q] = gam_b * (au - bvec[i])
                RV[g, q] = gam_b * (av - sc * rth[i])
        for g in range(gn):
            if not active[g]:
                continue
            nb = NB[g]
            su = 0.0
            sv = 0.0
            if mom != 0:
                # γg_u = γα·u + Σ r_j a_j, γg_v = γα·v + Σ r'_j a_j − s·γc; w ← μw + γg; u ← u − w
                for p in range(dp):
                    GU[p] = gam_alpha * U[g, p]
                    GV[p] = gam_alpha * V[g, p] - sc * gcv[p]
                for jj in range(nb):
                    i = IDX[g, jj]
                    r0 = RU[g, jj]
                    r1 = RV[g, jj]
                    for p in range(dp):
                        GU[p] += r0 * A[i, p]
                        GV[p] += r1 * A[i, p]
                    su += abs(np.float64(r0)) * anorm[i]
                    sv += abs(np.float64(r1)) * anorm[i]
                for p in range(dp):
                    wu = mom * WU[g, p] + GU[p]
                    wv = mom * WV[g, p] + GV[p]
                    WU[g, p] = wu
                    WV[g, p] = wv
                    U[g, p] -= wu
                    V[g, p] -= wv
                # through the velocities: ‖w_{t+1}‖ <= μ‖w_t‖ + |γα|‖u_t‖ + Σ_j |r_j| ‖a_j‖ (for v plus
                # |s|·γ‖c‖), ‖u_{t+1}‖ <= ‖u_t‖ + ‖w_{t+1}‖
                wbu[g] = mom_abs * wbu[g] + ga_abs * ubu[g] + su
                wbv[g] = mom_abs * wbv[g] + ga_abs * ubv[g] + sv + abs(np.float64(sc)) * gcv_norm
                ubu[g] += wbu[g]
                ubv[g] += wbv[g]
            else:
                for jj in range(nb):
                    i = IDX[g, jj]
                    r0 = RU[g, jj]
                    r1 = RV[g, jj]
                    if jj > 0 or plain:
                        if use_v:
                            for p in range(dp):
                                U[g, p] -= r0 * A[i, p]
                                V[g, p] -= r1 * A[i, p]
                        else:
                            for p in range(dp):
                                U[g, p] -= r0 * A[i, p]
                    else:
                        for p in range(dp):
                            U[g, p] = c1 * U[g, p] - r0 * A[i, p]
                            V[g, p] = c1 * V[g, p] - r1 * A[i, p] + sc * gcv[p]
                    na = anorm[i]
                    su += abs(np.float64(r0)) * na
                    sv += abs(np.float64(r1)) * na
                # ‖u_{t+1}‖ <= |c1|‖u_t‖ + Σ_j |γ r_j/b| ‖a_j‖ (same for v, plus γ‖c‖)
                ubu[g] = c1_abs * ubu[g] + su
                ubv[g] = c1_abs * ubv[g] + sv + abs(np.float64(sc)) * gcv_norm
            # triangle inequality: the exact test runs only when the bound could reach the limit (with
            # a factor 2 to spare for rounding), so the divergence step is exact at O(1) cost per step
            if not _within(ubu[g], ubv[g], amax[g], half_limit):
                if not _after_guard(g, s0 + g, t, U, V, use_v, acw, alive, n_alive, limit, div, unsafe, ubu,
                                    ubv, amax):
                    active[g] = False
                    n_active -= 1
    _block_finish(s0, gn, rec, R, L, U, V, d, out_d, out_s, out_t, ufin, vfin)


@njit(cache=True, nogil=True)
def ls_affine(lo, hi, A, bvec, rth, agcv, anorm, gcv, gcv_norm, plain, c1, gam_bs, gam_alpha, scales, x0, acoef,
              acw, use_v, rec_steps, steps, stream_keys, b, code, K, mom, xstar, theta_c, Ft, alpha64, quad_tol, limit,
              zero, out_d, out_s, out_t, div, ufin, vfin, unsafe, coeffs, usave, vsave):
    """Seeds lo .. hi−1, one (u, v) pair each; λ_k is x_t = u_t + a_k v_t (docs/theory.md §5.1).

    u_{t+1} = c1·u_t − (γ/b_t) Σ_{i∈B} a_i (a_iᵀu_t − b_i)
    v_{t+1} = c1·v_t − (γ/b_t) Σ_{i∈B} a_i (a_iᵀv_t − s_e·rth_i) + s_e·γ·c
    with c1 = 1 − γα, c = ridge (− T for corrected KD) and s_e the epoch's λ scale
    (``scales``, all 1 for a constant λ); ``plain`` says α = 0 and c = 0. With momentum μ
    (``mom``) the steps of u and v pass through heavy-ball velocities; every map stays
    linear in the state and affine in λ. ``A``, ``x0`` and ``gcv`` (= γ·c) are zero-padded to
    ``dp`` >= d columns (the padding stays exactly 0) so the vector loops have no scalar tail;
    ``xstar``, ``theta_c`` have the true d, and ``Ft`` is ``lane_factor(F)``. Minibatches follow
    sampling ``code`` with ``K`` steps per epoch (``kdsim.rng``); γ/b_t comes from ``gam_bs``.

    Seeds run in blocks of ``SEED_BLOCK`` sharing the step clock, and the records of a
    block come from one lane-tiled product with F (see ``_records_block``). At batch
    size 1 without momentum or a λ schedule a seed takes its steps in pairs, each pair one
    pass of dot products and one of updates (``_ls_affine_block1``; ``agcv`` = a_iᵀ(γc)
    corrects the second residual); otherwise each step updates every seed of the block and
    then draws the next minibatches and residuals (``_ls_affine_block``). Every record entry of the block's seeds is written (NaN after a λ or the
    seed stopped), so the outputs may start uninitialised. ``coeffs[s, r]`` (when its
    first axis is not empty) receives the three coefficients (c0, c1, c2) of each
    record as a quadratic c0 + c1·a + c2·a² (rows: dist2_opt, subopt, dist2_teacher).
    ``usave``, ``vsave`` (S, R, d), when not empty, receive (u, v) at every record step.

    Divergence of λ_k after a step: not (‖u‖² + 2a⟨u,v⟩ + a²‖v‖² <= limit), tested
    exactly whenever a running triangle-inequality bound on ‖u‖ + max|a|·‖v‖ cannot
    exclude it (``anorm`` = ‖a_i‖), and every step with momentum. A seed where an alive λ has ‖u‖² or a²‖v‖²
    beyond the limit is flagged in ``unsafe`` and left for the per-trajectory kernel.
    """
    for s0 in range(lo, hi, SEED_BLOCK):
        gn = min(SEED_BLOCK, hi - s0)
        if b == 1 and mom == 0 and scales.shape[0] == 1:
            _ls_affine_block1(s0, gn, A, bvec, rth, agcv, anorm, gcv, gcv_norm, plain, c1, gam_bs[1], x0, acoef,
                              acw, use_v, rec_steps, steps, stream_keys, code, xstar, theta_c, Ft, alpha64, quad_tol,
                              limit, zero, out_d, out_s, out_t, div, ufin, vfin, unsafe, coeffs, usave, vsave)
        else:
            _ls_affine_block(s0, gn, A, bvec, rth, anorm, gcv, gcv_norm, plain, c1, gam_bs, gam_alpha, scales, x0,
                             acoef, acw, use_v, rec_steps, steps, stream_keys, b, code, K, mom, xstar, theta_c, Ft,
                             alpha64, quad_tol, limit, zero, out_d, out_s, out_t, div, ufin, vfin, unsafe, coeffs,
                             usave, vsave)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _heavy_ball(x, g, w, gam, mom, zero):
    """x ← x − γ·w with w ← μ·w + g (torch's momentum, dampening 0; plain SGD when μ = 0); returns ‖x‖²."""
    nx = zero
    if mom == 0:
        for p in range(x.shape[0]):
            xn = x[p] - gam * g[p]
            x[p] = xn
            nx += xn * xn
    else:
        for p in range(x.shape[0]):
            wp = mom * w[p] + g[p]
            w[p] = wp
            xn = x[p] - gam * wp
            x[p] = xn
            nx += xn * xn
    return nx


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _ls_traj_one(j0, A, bvec, rth, ridge, tfull, alpha, gam, inv_bs, inv_n, x0, acoef, ccoef, snapshot,
                 period, snap_start, nfw, rec_steps, steps, stream_keys, b, code, K, mom, xstar, theta_c, F, alpha64,
                 limit, zero, out_d, out_s, out_t, div, xfin, saved):
    """Body of ``ls_traj`` for one trajectory (serial, nogil; the engine runs ranges on threads)."""
    n, d = A.shape
    T = stream_keys.shape[0]
    R = rec_steps.shape[0]
    E = acoef.shape[1]
    m = F.shape[0]
    x = x0.copy()
    g = np.empty_like(x0)
    y = x0.copy()
    gy = np.zeros_like(x0)
    vel = np.zeros_like(x0)
    res = np.empty(b, dtype=x0.dtype)
    idx = np.empty(b, dtype=np.int64)
    taken = np.zeros(n, dtype=np.bool_)
    perm = np.empty((1, n if code != 0 else 0), dtype=np.int64)
    perm_epoch = np.full(1, -1, dtype=np.int64)
    e = np.empty(d)
    fe = np.empty(m)
    key0 = stream_keys[j0]
    rec = np.int64(0)                   # not the literal 0: callees compile once, for int64
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
            if saved.shape[0] > 0:
                for p in range(d):
                    saved[j0, rec, p] = x[p]
            rec += 1
        if t == steps:
            break
        ep = min(t // K, E - 1)
        a = acoef[j0, ep]
        c = ccoef[j0, ep]
        if snapshot and (t == 0 or (t >= snap_start and (t - snap_start) % period == 0)):
            for p in range(d):
                y[p] = x[p]
                gy[p] = zero
            for i in range(n):
                acc = zero
                for p in range(d):
                    acc += A[i, p] * y[p]
                acc -= bvec[i]
                if nfw.shape[0] > 0:                   # full gradient weights n·w_i (batch means)
                    acc *= nfw[i]
                for p in range(d):
                    gy[p] += A[i, p] * acc
            for p in range(d):
                gy[p] = gy[p] * inv_n + alpha[p] * y[p]
        # step t's minibatch (rng.batch_into_nb's stream, written out as in _ls_affine_block: the call
        # cost more than the step's arithmetic at small d)
        if code == 0:
            nb = b
            if b == n:
                for q in range(n):
                    idx[q] = q
            else:
                skey = step_key_nb(key0, t)
                for q in range(b):
                    cq = n - b + q
                    h = splitmix64_nb(skey + np.uint64(q + 1) * np.uint64(_G_INT))
                    r = np.int64(uniform_below_nb(h, np.uint64(cq + 1)))
                    pick = cq if taken[r] else r
                    taken[pick] = True
                    idx[q] = pick
                for q in range(b):
                    taken[idx[q]] = False
        else:
            pe = t // K
            lo = (t - pe * K) * b
            if code == 2:
                pe = 0
            if perm_epoch[0] != pe:
                _fill_permutation(key0, pe, n, perm, 0)
                perm_epoch[0] = pe
            nb = min(b, n - lo)
            for q in range(nb):
                idx[q] = perm[0, lo + q]
        inv_b = inv_bs[nb]
        for jj in range(nb):
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
        for jj in range(nb):
            i = idx[jj]
            r0 = res[jj]
            for p in range(d):
                g[p] += A[i, p] * r0
        if snapshot:
            for p in range(d):
                g[p] = g[p] * inv_b + alpha[p] * (x[p] - a * y[p]) + c * gy[p]
        else:
            for p in range(d):
                g[p] = g[p] * inv_b + alpha[p] * x[p] - a * ridge[p] + c * tfull[p]
        nx = _heavy_ball(x, g, vel, gam, mom, zero)
        if not (nx <= limit):
            div[j0] = t + 1
            dead = True
            break
    for p in range(d):
        xfin[j0, p] = np.nan if dead else x[p]


@njit(cache=True, nogil=True)
def ls_traj(lo, hi, A, bvec, rth, ridge, tfull, alpha, gam, inv_bs, inv_n, x0, acoef, ccoef, snapshot, period,
            snap_start, nfw, rec_steps, steps, stream_keys, b, code, K, mom, xstar, theta_c, F, alpha64, limit, zero,
            out_d, out_s, out_t, div, xfin, saved):
    """Trajectories lo .. hi−1 (any estimator, any stream layout), one after the other.

    Row j of the trajectory arrays (``acoef``, ``ccoef`` (T, E): the coefficients per
    epoch, ``stream_keys``, outputs) is one (λ, seed) pair. Teacher estimators use the
    combined residual (a_iᵀx − b_i) − a·rth_i, so the minibatch gradient is one product:
    g = (1/b_t) Σ a_i r_i + αx − a·ridge + c·T (``alpha`` (d,): α per coordinate). SVRG (``snapshot``) takes the anchor y and
    its full gradient ∇f(y) (per-sample weights n·w_i ``nfw`` when not empty) at step 0 and every
    ``period`` steps from ``snap_start`` and uses
    r_i = (a_iᵀx − b_i) − a(a_iᵀy − b_i), g = (1/b_t) Σ a_i r_i + α(x − a y) + c ∇f(y).
    Minibatches follow sampling ``code`` with ``K`` steps per epoch (``kdsim.rng``); the
    step is heavy ball with momentum ``mom`` (``_heavy_ball``). ``saved`` (T, R, d), when not
    empty, receives the iterate at every record step (``keep_iterates``).
    """
    for j0 in range(lo, hi):
        _ls_traj_one(j0, A, bvec, rth, ridge, tfull, alpha, gam, inv_bs, inv_n, x0, acoef, ccoef, snapshot,
                     period, snap_start, nfw, rec_steps, steps, stream_keys, b, code, K, mom, xstar, theta_c, F,
                     alpha64, limit, zero, out_d, out_s, out_t, div, xfin, saved)


def _forget_stale_cache():
    from .. import rng
    from . import _simd
    from ._numba_cache import forget_if_stale
    forget_if_stale(ls_traj.py_func, [rng.__file__, _simd.__file__])


_forget_stale_cache()
