"""numba-cuda kernels of the CUDA engine (``cuda_gpu``): a thread or a warp per trajectory (``layered_traj``),
and for least squares in the affine form one thread per seed (``ls_affine_kernel``, at the end of this module).

The structure is the numba CPU layered kernel's (``_kernels_layered``), which covers every family
of the kernel spec — least squares (one 1×d layer, identity link), softmax, the GLMs, deep linear
nets and MLPs (activations, biases) — with the same index stream (``kdsim.rng``'s counter-based
keys: Floyd's sampling for i.i.d. minibatches, a Fisher–Yates permutation per epoch for
reshuffling). Differences that keep a GPU busy:

* every per-trajectory array is indexed with the trajectory last, ``(…, T)``, and no thread allocates.
  With a thread per trajectory it is stored so: the threads of a warp read and write neighbouring words
  (coalesced). Few trajectories leave a GPU mostly empty that way (W3's 3,072 threads on an H100 that
  holds 270,336), so there a block of one warp runs each trajectory, its 32 lanes sharing the loops of
  a step (the (row, sample) pairs of a layer, the weights of the gradient, the coordinates of the
  update; ``lanes_per_trajectory``), and the engine stores the arrays trajectory by trajectory, so that
  the lanes' words neighbour each other;
* the full-data terms of deep nets (corrected KD's J(x)ᵀ r(θ) and SVRG's ∇f(y)) are full-data
  back-propagations at the point (for a linear net equal to the CPU kernel's end-to-end pull-back);
* the iterate is saved at the record steps (record-major, ``(R, dim, T)``); the engine evaluates the
  records from it on the device with ``kdsim.kernelspec`` (the problems' own formulas).

CUDA has no ``np.exp`` or uint64/int64 promotion rules of numpy: ``math.exp``, and every operand of
the random number generator is cast to uint64 explicitly. The simulator (``NUMBA_ENABLE_CUDASIM=1``)
runs these kernels on the CPU; the tests compare them with the reference engine there.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import cuda

from .. import rng
from . import _activations

_G = rng.GOLDEN
_EPOCH_TAG = rng.EPOCH_TAG

#: samples taken through the layers together (the scratch of a trajectory is O(SAMPLE_BLOCK · Σ widths))
SAMPLE_BLOCK = 16
#: threads per block at most (``threads_per_block`` takes fewer where that would leave SMs idle)
THREADS = 128
#: the narrowest block: one warp (and the lanes of a trajectory in the warp-per-trajectory shape)
WARP = 32
#: threads one multiprocessor holds at once (A100, H100, H200)
RESIDENT_THREADS = 2048


def threads_per_block(n_threads, sm_count):
    """Threads per block for a launch of ``n_threads`` (one per trajectory or per seed): ``THREADS`` when
    that gives every one of the ``sm_count`` multiprocessors a block, else halved, down to one warp, while
    the blocks are fewer than the multiprocessors. A thread's work does not depend on its block, so narrower
    blocks only spread the same threads over more multiprocessors: W3's 3,072 trajectories occupy 24 of an
    H100's 132 in blocks of 128, and 96 in blocks of 32."""
    if n_threads < 1 or sm_count < 1:
        raise ValueError(f"n_threads and sm_count must be >= 1, got {n_threads} and {sm_count}")
    t = THREADS
    while t > WARP and -(-n_threads // t) < sm_count:
        t //= 2
    return t


def lanes_per_trajectory(n_traj, sm_count):
    """Threads per trajectory of ``layered_traj``: a warp (``WARP``) when one thread per trajectory would
    leave the device mostly empty — fewer trajectories than the threads its multiprocessors hold
    (W3's and W5's 3,072 against an H100's 132 × 2,048) — else one."""
    if n_traj < 1 or sm_count < 1:
        raise ValueError(f"n_traj and sm_count must be >= 1, got {n_traj} and {sm_count}")
    return WARP if n_traj < sm_count * RESIDENT_THREADS else 1


# ------------------------------------------------------------------ index stream (kdsim.rng's integers)
# the hash and the bounded draw: the CPU kernels' source (``kdsim.rng``), compiled as device functions
_splitmix64 = cuda.jit(device=True, inline=True)(rng.splitmix64_u64)
_uniform_below = cuda.jit(device=True, inline=True)(rng.uniform_below_u64)


@cuda.jit(device=True)
def _minibatch_into(key, n, b, idx, taken, j):
    """Floyd's sampling of b of n (``rng.minibatch_into_nb``) into idx[:b, j]; taken[:, j] all False."""
    if b == n:
        for q in range(n):
            idx[q, j] = q
        return
    for q in range(b):
        c = n - b + q
        h = _splitmix64(np.uint64(key) + np.uint64(q + 1) * _G)
        r = np.int64(_uniform_below(h, np.uint64(c + 1)))
        pick = c if taken[r, j] else r
        taken[pick, j] = True
        idx[q, j] = pick
    for q in range(b):
        taken[idx[q, j], j] = False


@cuda.jit(device=True)
def _permutation_into(ekey, n, perm, j):
    """Fisher–Yates permutation of 0 .. n−1 (``rng.permutation_into_nb``) into perm[:, j]."""
    for q in range(n):
        perm[q, j] = q
    for q in range(n - 1, 0, -1):
        h = _splitmix64(np.uint64(ekey) + np.uint64(n - q) * _G)
        r = np.int64(_uniform_below(h, np.uint64(q + 1)))
        held = perm[r, j]
        perm[r, j] = perm[q, j]
        perm[q, j] = held


@cuda.jit(device=True, inline=True)
def _batch_size(t, n, b, code, K):
    """The size of step t's minibatch: b, or the rest of the epoch at its last step (``_batch_into``)."""
    if code == 0:
        return b
    return min(b, n - (t - (t // K) * K) * b)


@cuda.jit(device=True)
def _batch_into(stream_key, t, n, b, code, K, perm, perm_epoch, idx, taken, j):
    """Step t's minibatch of trajectory j into idx[:, j] (``rng.batch_into_nb``); returns its size."""
    nb = _batch_size(t, n, b, code, K)
    if code == 0:
        _minibatch_into(_splitmix64(np.uint64(stream_key) ^ np.uint64(t)), n, b, idx, taken, j)
        return nb
    e = t // K
    if code == 2:
        e = 0
    if perm_epoch[j] != e:
        _permutation_into(_splitmix64(np.uint64(stream_key) ^ (_EPOCH_TAG | np.uint64(e))), n, perm, j)
        perm_epoch[j] = e
    lo = (t - (t // K) * K) * b
    for q in range(nb):
        idx[q, j] = perm[lo + q, j]
    return nb


# ------------------------------------------------------------------ layers
# Every helper below is run by the W lanes of trajectory j together (W = 1: one thread; W = WARP: the
# block's warp): lane ℓ takes the items ℓ, ℓ + W, … of each loop, and on return every lane sees every
# lane's writes (a barrier; with W = 1 a thread is alone, and a barrier would also wait for the block's
# other trajectories; written inline, because the simulator makes every device-function call costly). An item does its arithmetic in the one-thread order, so both shapes compute the
# same numbers.
_activate = cuda.jit(device=True, inline=True)(_activations.activate)
_activation_d1 = cuda.jit(device=True, inline=True)(_activations.activation_d1)


@cuda.jit(device=True, inline=True)
def _logit_max(H, z0, m, s, j):
    """max_o H[z0 + o, s, j] over the m logits of sample s (the shift of a stable softmax)."""
    zmax = H[z0, s, j]
    for o in range(1, m):
        if H[z0 + o, s, j] > zmax:
            zmax = H[z0 + o, s, j]
    return zmax


@cuda.jit(device=True)
def _forward(x, dims, offs, boffs, act, A, rows, r0, nb, H, hoff, j, lane, W):
    """H[hoff[k] + c, s, j]: layer k's input of sample rows[r0 + s, j] (h_0 = a_i; h_{k+1} = σ(W_k h_k + b_k),
    linear at the output layer); ``rows`` (…, T) or, with ``r0 < 0``, the samples −r0 − 1 + s themselves.
    Items: (sample, input) pairs, then each layer's (row, sample) pairs."""
    L = dims.shape[0] - 1
    d0 = dims[0]
    for q in range(lane, nb * d0, W):
        s = q // d0
        c = q - s * d0
        i = (-r0 - 1 + s) if r0 < 0 else rows[r0 + s, j]
        H[c, s, j] = A[i, c]
    if W > 1:
        cuda.syncthreads()
    for k in range(L):
        rws, cols = dims[k + 1], dims[k]
        hi, ho = hoff[k], hoff[k + 1]
        for q in range(lane, rws * nb, W):
            r = q // nb
            s = q - r * nb
            base = offs[k] + r * cols
            acc = x[boffs[k] + r, j] if boffs.shape[0] > 0 else x[0, j] - x[0, j]
            for c in range(cols):
                acc += x[base + c, j] * H[hi + c, s, j]
            if act != 0 and k < L - 1:
                acc = _activate(act, acc)
            H[ho + r, s, j] = acc
        if W > 1:
            cuda.syncthreads()


@cuda.jit(device=True)
def _residuals(code, H, zoff, m, Y, rows, r0, nb, D, j, lane, W):
    """D[o, s, j] = ∂g/∂z of sample s at its logits H[zoff + o, s, j] (``_kernels_layered._residuals``).
    Items: samples (a softmax normalises over its classes)."""
    for s in range(lane, nb, W):
        i = (-r0 - 1 + s) if r0 < 0 else rows[r0 + s, j]
        if code == 0:
            for o in range(m):
                D[o, s, j] = H[zoff + o, s, j] - Y[i, o]
        elif code == 1:
            zmax = _logit_max(H, zoff, m, s, j)
            tot = zmax - zmax
            for o in range(m):
                e = math.exp(H[zoff + o, s, j] - zmax)
                D[o, s, j] = e
                tot += e
            for o in range(m):
                D[o, s, j] = D[o, s, j] / tot - Y[i, o]
        elif code == 2:
            for o in range(m):
                z = H[zoff + o, s, j]
                if z >= 0:
                    sig = 1.0 / (1.0 + math.exp(-z))
                else:
                    e = math.exp(z)
                    sig = e / (1.0 + e)
                D[o, s, j] = sig - Y[i, o]
        else:
            for o in range(m):
                D[o, s, j] = math.exp(H[zoff + o, s, j]) - Y[i, o]
    if W > 1:
        cuda.syncthreads()


@cuda.jit(device=True)
def _backward(x, dims, offs, boffs, act, H, hoff, D, Dn, nb, grad, scale, j, lane, W):
    """grad[:, j] += scale · Σ_s J_s(x)ᵀ δ_s for the output deltas δ_s = D[:d_out, s, j] (overwrites D, Dn).
    Items: each layer's weights (a weight sums over the samples in order) and rows, then the (sample,
    input) pairs of the delta sent down."""
    L = dims.shape[0] - 1
    m = dims[L]
    for q in range(lane, nb * m, W):
        s = q // m
        o = q - s * m
        D[o, s, j] = scale * D[o, s, j]
    if W > 1:
        cuda.syncthreads()
    flip = False
    for k in range(L - 1, -1, -1):
        rws, cols = dims[k + 1], dims[k]
        hi = hoff[k]
        for q in range(lane, rws * cols, W):
            r = q // cols
            c = q - r * cols
            g = grad[offs[k] + q, j]
            for s in range(nb):
                g += (Dn[r, s, j] if flip else D[r, s, j]) * H[hi + c, s, j]
            grad[offs[k] + q, j] = g
        if boffs.shape[0] > 0:
            for r in range(lane, rws, W):
                tot = grad[0, j] - grad[0, j]
                for s in range(nb):
                    tot += Dn[r, s, j] if flip else D[r, s, j]
                grad[boffs[k] + r, j] += tot
        if k > 0:
            for q in range(lane, nb * cols, W):
                s = q // cols
                c = q - s * cols
                acc = grad[0, j] - grad[0, j]
                for r in range(rws):
                    d = Dn[r, s, j] if flip else D[r, s, j]
                    acc += x[offs[k] + r * cols + c, j] * d
                if act != 0:
                    acc *= _activation_d1(act, H[hi + c, s, j])
                if flip:
                    D[c, s, j] = acc
                else:
                    Dn[c, s, j] = acc
            flip = not flip
        if W > 1:
            cuda.syncthreads()


@cuda.jit(device=True)
def _full_pass(x, dims, offs, boffs, act, code, A, Y, R, nfw, n, IDX, H, hoff, D, Dn, grad, scale, j, lane, W):
    """grad[:, j] += scale · Σ_i w_i J_i(x)ᵀ r_i over every sample: r_i the residual of x itself (``R`` with
    no rows) or the given rows R[i] (the teacher's), weights n·w_i ``nfw`` (empty: 1)."""
    L = dims.shape[0] - 1
    d_out = dims[L]
    for s0 in range(0, n, SAMPLE_BLOCK):
        nb = min(SAMPLE_BLOCK, n - s0)
        _forward(x, dims, offs, boffs, act, A, IDX, -s0 - 1, nb, H, hoff, j, lane, W)
        if R.shape[0] == 0:
            _residuals(code, H, hoff[L], d_out, Y, IDX, -s0 - 1, nb, D, j, lane, W)
        for q in range(lane, nb * d_out, W):
            s = q // d_out
            o = q - s * d_out
            if R.shape[0] > 0:
                D[o, s, j] = R[s0 + s, o]
            if nfw.shape[0] > 0:
                D[o, s, j] *= nfw[s0 + s]
        if W > 1:
            cuda.syncthreads()
        _backward(x, dims, offs, boffs, act, H, hoff, D, Dn, nb, grad, scale, j, lane, W)


# ------------------------------------------------------------------ the trajectory kernel
@cuda.jit
def layered_traj(A, Y, rt, Gt, ridge, alpha, dims, offs, boffs, act, code, gam, inv_bs, inv_n, x0, acoef, ccoef,
                 use_teacher, snapshot, period, snap_start, nfw, rec_steps, steps, stream_keys, b, scode, K, mom,
                 tau, Qt, limit, W, X, G, Ys, GY, VEL, H, D, Dn, IDX, TAKEN, PERM, PEPOCH, NRM, saved, div, xfin):
    """Every step of ``_kernels_layered.layered_traj`` (same arguments, same order of terms) for trajectory
    j, run by W lanes: W = 1, a thread per trajectory (j its global index); W = ``WARP``, a block of one
    warp per trajectory (j the block's index), the lanes sharing each step's loops (the helpers above). The
    per-trajectory arrays (…, T) are passed in as scratch (module docstring); ``NRM`` (W, T) takes the
    lanes' parts of ‖x‖²."""
    j = (cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x) // W
    lane = cuda.threadIdx.x % W
    T = stream_keys.shape[0]
    if j >= T:
        return
    n = A.shape[0]
    dim = x0.shape[0]
    L = dims.shape[0] - 1
    d_in, d_out = dims[0], dims[L]
    R = rec_steps.shape[0]
    E = acoef.shape[1]
    hoff = cuda.local.array(16, np.int64)
    hoff[0] = 0
    for k in range(L + 1):
        hoff[k + 1] = hoff[k] + dims[k]
    one_layer = L == 1 and act == 0 and boffs.shape[0] == 0
    empty = rt[:0]
    for p in range(lane, dim, W):
        X[p, j] = x0[p]
        VEL[p, j] = x0[p] - x0[p]
    if lane == 0:
        PEPOCH[j] = -1
    key = stream_keys[j]
    rec = 0
    dead = False
    for t in range(steps + 1):
        if rec < R and rec_steps[rec] == t:
            for p in range(lane, dim, W):
                saved[rec, p, j] = X[p, j]
            rec += 1
        if t == steps:
            break
        ep = min(t // K, E - 1)
        a = acoef[j, ep]
        c = ccoef[j, ep]
        if snapshot and (t == 0 or (t >= snap_start and (t - snap_start) % period == 0)):
            for p in range(lane, dim, W):
                Ys[p, j] = X[p, j]
                GY[p, j] = X[p, j] - X[p, j]
            if W > 1:
                cuda.syncthreads()
            _full_pass(Ys, dims, offs, boffs, act, code, A, Y, empty, nfw, n, IDX, H, hoff, D, Dn, GY, inv_n, j,
                       lane, W)
            for p in range(lane, dim, W):
                GY[p, j] += alpha[p] * Ys[p, j]
        if lane == 0:                           # the draw is sequential; the others only need its size
            _batch_into(key, t, n, b, scode, K, PERM, PEPOCH, IDX, TAKEN, j)
        bt = _batch_size(t, n, b, scode, K)
        inv_b = inv_bs[bt]
        for p in range(lane, dim, W):
            G[p, j] = X[p, j] - X[p, j]
        if W > 1:
            cuda.syncthreads()
        for j0 in range(0, bt, SAMPLE_BLOCK):
            nb = min(SAMPLE_BLOCK, bt - j0)
            _forward(X, dims, offs, boffs, act, A, IDX, j0, nb, H, hoff, j, lane, W)
            _residuals(code, H, hoff[L], d_out, Y, IDX, j0, nb, D, j, lane, W)
            if use_teacher and tau != 1:
                z0 = hoff[L]
                for s in range(lane, nb, W):
                    i = IDX[j0 + s, j]
                    zmax = _logit_max(H, z0, d_out, s, j)
                    tot = zmax - zmax
                    for o in range(d_out):
                        tot += math.exp((H[z0 + o, s, j] - zmax) / tau)
                    for o in range(d_out):
                        pt = math.exp((H[z0 + o, s, j] - zmax) / tau) / tot
                        D[o, s, j] = (1 - a) * D[o, s, j] + a * tau * (pt - Qt[i, o])
            elif use_teacher:
                for q in range(lane, nb * d_out, W):
                    s = q // d_out
                    o = q - s * d_out
                    D[o, s, j] -= a * rt[IDX[j0 + s, j], o]
            if W > 1:
                cuda.syncthreads()
            _backward(X, dims, offs, boffs, act, H, hoff, D, Dn, nb, G, gam / gam, j, lane, W)
            if snapshot:                        # −a·J_B(y)ᵀ r_B(y), through the snapshot
                _forward(Ys, dims, offs, boffs, act, A, IDX, j0, nb, H, hoff, j, lane, W)
                _residuals(code, H, hoff[L], d_out, Y, IDX, j0, nb, D, j, lane, W)
                _backward(Ys, dims, offs, boffs, act, H, hoff, D, Dn, nb, G, -a, j, lane, W)
        if snapshot:
            for p in range(lane, dim, W):
                G[p, j] = G[p, j] * inv_b + alpha[p] * (X[p, j] - a * Ys[p, j]) + c * GY[p, j]
        elif use_teacher and c != 0:
            for p in range(lane, dim, W):
                G[p, j] *= inv_b
            if one_layer:                       # the weights p = o·d_in + q of the one layer (p's own lane)
                for p in range(lane, d_out * d_in, W):
                    o = p // d_in
                    G[p, j] += c * Gt[o, p - o * d_in]
            else:                               # c·Σ_i w_i J_i(x)ᵀ rθ_i, back-propagated at x
                if W > 1:
                    cuda.syncthreads()
                _full_pass(X, dims, offs, boffs, act, code, A, Y, rt, nfw, n, IDX, H, hoff, D, Dn, G, c * inv_n, j,
                           lane, W)
            for p in range(lane, dim, W):
                G[p, j] = G[p, j] + alpha[p] * X[p, j] + (c - a) * ridge[p]
        else:
            for p in range(lane, dim, W):
                G[p, j] = G[p, j] * inv_b + alpha[p] * X[p, j] - a * ridge[p]
        nx = X[0, j] - X[0, j]
        for p in range(lane, dim, W):           # heavy ball: w ← μw + g, x ← x − γw (μ = 0: SGD)
            w = mom * VEL[p, j] + G[p, j]
            VEL[p, j] = w
            xn = X[p, j] - gam * w
            X[p, j] = xn
            nx += xn * xn
        if W > 1:                               # every lane sums the parts in one order: one decision
            NRM[lane, j] = nx
            if W > 1:
                cuda.syncthreads()
            nx = NRM[0, j]
            for q in range(1, W):
                nx += NRM[q, j]
            if W > 1:
                cuda.syncthreads()
        if not (nx <= limit):
            if lane == 0:
                div[j] = t + 1
            dead = True
            break
    for p in range(lane, dim, W):
        xfin[p, j] = X[p, j] if not dead else math.nan


# ------------------------------------------------------------------ least squares, affine in λ
_LS_AFFINE = {}


def ls_affine_kernel(d, dtype, momentum, use_v):
    """The affine-in-λ least-squares kernel for dimension ``d``, dtype, momentum on/off and ``use_v`` (an
    estimator with a teacher term: v is stepped), compiled once each.

    One thread per seed; its (u, v) pair serves every λ of the grid: x_t(λ) = u_t + a·v_t
    (docs/theory.md §5.1; the recursion of ``_kernels_ls.ls_affine``). ``d`` is a compile-time
    constant, so the loops over coordinates have a fixed trip count and u, v (and the velocities
    with momentum) can live in registers; ``use_v`` is a constant too, so that each kernel has one code
    path through its step (a second unrolled path beside the first made ptxas spill the pair). The
    iterate pair is saved at the record steps (record-major, ``(R, d, S)``); the records are their
    quadratics in λ, evaluated afterwards on the device (``kernelspec.affine_record_values``).
    """
    key = (int(d), np.dtype(dtype).name, bool(momentum), bool(use_v))
    if key not in _LS_AFFINE:
        _LS_AFFINE[key] = _make_ls_affine(int(d), numba.from_dtype(np.dtype(dtype)), bool(momentum), bool(use_v))
    return _LS_AFFINE[key]


def _make_ls_affine(DP, WD, MOM, USE_V):
    DM = DP if MOM else 1

    @cuda.jit
    def ls_affine(A, bvec, rth, gcv, anorm, gcv_norm, c1, gam_bs, gam_alpha, scales, x0, acw, plain,
                  rec_steps, steps, stream_keys, b, scode, K, mom, limit, IDX, RU, RV, TAKEN, PERM, PEPOCH, ALIVE,
                  usave, vsave, div, unsafe, ufin, vfin):
        """Seed j = the thread's index: u ← c1·u − (γ/b_t)Σ_B a_i(a_iᵀu − b_i),
        v ← c1·v − (γ/b_t)Σ_B a_i(a_iᵀv − s_e·rth_i) + s_e·γc (``gcv`` = γc; heavy ball through velocities
        with momentum), the minibatch of ``_batch_into``. Divergence of λ_k after a step: not
        (‖u + a_k v‖² <= limit), tested exactly when the running triangle-inequality bound on
        ‖u‖ + max|a|·‖v‖ could reach the limit; a seed whose alive λ has ‖u‖² or a²‖v‖² beyond it is
        flagged ``unsafe`` (left for the per-trajectory kernel) and stops."""
        j = cuda.grid(1)
        S = stream_keys.shape[0]
        if j >= S:
            return
        n = A.shape[0]
        L = acw.shape[0]
        R = rec_steps.shape[0]
        E = scales.shape[0]
        u = cuda.local.array(DP, WD)
        v = cuda.local.array(DP, WD)
        wu = cuda.local.array(DM, WD)
        wv = cuda.local.array(DM, WD)
        zero = x0[0] - x0[0]
        nrm = 0.0
        for p in range(DP):
            u[p] = x0[p]
            v[p] = zero
            nrm += np.float64(x0[p]) * np.float64(x0[p])
        if MOM:
            for p in range(DP):
                wu[p] = zero
                wv[p] = zero
        ubu = math.sqrt(nrm)
        ubv = 0.0
        wbu = 0.0
        wbv = 0.0
        amax = 0.0
        for k in range(L):
            ALIVE[k, j] = True
            if USE_V and abs(np.float64(acw[k])) > amax:
                amax = abs(np.float64(acw[k]))
        n_alive = L
        PEPOCH[j] = -1
        key = stream_keys[j]
        half_limit = 0.5 * np.float64(limit)
        c1_abs = abs(np.float64(c1))
        mom_abs = abs(np.float64(mom))
        ga_abs = abs(np.float64(gam_alpha))
        rec = 0
        for t in range(steps + 1):
            if rec < R and rec_steps[rec] == t:
                for p in range(DP):
                    usave[rec, p, j] = u[p]
                    vsave[rec, p, j] = v[p]
                rec += 1
            if t == steps:
                break
            sc = scales[min(t // K, E - 1)]
            nb = _batch_into(key, t, n, b, scode, K, PERM, PEPOCH, IDX, TAKEN, j)
            gam_b = gam_bs[nb]
            su = 0.0
            sv = 0.0
            for q in range(nb):                 # every residual at the current (u, v) first
                i = IDX[q, j]
                au = zero
                av = zero
                for p in range(DP):
                    au += A[i, p] * u[p]
                    if USE_V:
                        av += A[i, p] * v[p]
                r0 = gam_b * (au - bvec[i])
                RU[q, j] = r0
                su += abs(np.float64(r0)) * anorm[i]
                if USE_V:                       # (else v stays 0 and its bound is not used: amax = 0)
                    r1 = gam_b * (av - sc * rth[i])
                    RV[q, j] = r1
                    sv += abs(np.float64(r1)) * anorm[i]
            if MOM:                             # w ← μw + γg, x ← x − w; coordinate loops innermost (unrolled)
                for p in range(DP):
                    wu[p] = mom * wu[p] + gam_alpha * u[p]
                    wv[p] = mom * wv[p] + (gam_alpha * v[p] - sc * gcv[p])
                for q in range(nb):
                    i = IDX[q, j]
                    r0 = RU[q, j]
                    r1 = RV[q, j]
                    for p in range(DP):
                        wu[p] += r0 * A[i, p]
                        wv[p] += r1 * A[i, p]
                for p in range(DP):
                    u[p] -= wu[p]
                    if USE_V:
                        v[p] -= wv[p]
                wbu = mom_abs * wbu + ga_abs * ubu + su
                wbv = mom_abs * wbv + ga_abs * ubv + sv + abs(np.float64(sc)) * gcv_norm
                ubu += wbu
                ubv += wbv
            else:
                if not plain:                   # the shrink and the shift once, then every sample the same way
                    for p in range(DP):
                        u[p] = c1 * u[p]
                        if USE_V:
                            v[p] = c1 * v[p] + sc * gcv[p]
                for q in range(nb):
                    i = IDX[q, j]
                    r0 = RU[q, j]
                    r1 = RV[q, j]
                    for p in range(DP):
                        u[p] -= r0 * A[i, p]
                        if USE_V:
                            v[p] -= r1 * A[i, p]
                ubu = c1_abs * ubu + su
                ubv = c1_abs * ubv + sv + abs(np.float64(sc)) * gcv_norm
            bound = ubu + amax * ubv
            if not (bound * bound <= half_limit):       # the exact test, only when the bound cannot exclude it
                nu = 0.0
                nv = 0.0
                nuv = 0.0
                for p in range(DP):
                    up = np.float64(u[p])
                    vp = np.float64(v[p])
                    nu += up * up
                    nv += vp * vp
                    nuv += up * vp
                bad = False
                amax = 0.0
                for k in range(L):
                    if not ALIVE[k, j]:
                        continue
                    a = np.float64(acw[k])
                    big = False
                    q2 = nu
                    if USE_V and a != 0.0:
                        q2 = nu + 2.0 * a * nuv + a * a * nv
                        big = not (nu <= limit and a * a * nv <= limit)
                    if not (q2 <= limit):
                        ALIVE[k, j] = False
                        n_alive -= 1
                        div[k, j] = t + 1
                    elif big:
                        bad = True
                    elif USE_V and abs(a) > amax:
                        amax = abs(a)
                ubu = math.sqrt(nu)
                ubv = math.sqrt(nv)
                if bad:
                    unsafe[j] = True
                    break
                if n_alive == 0:
                    break
        for p in range(DP):
            ufin[p, j] = u[p]
            vfin[p, j] = v[p]

    return ls_affine
