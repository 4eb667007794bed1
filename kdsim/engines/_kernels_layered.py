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

The minibatch is handled as small matrices, layer by layer (``_forward``,
``_output_residuals``, ``_backward_step`` or ``_backward_batch``), ``SAMPLE_BLOCK`` samples
at a time, with explicit ``LANES``-wide vectors (whole AVX-512 registers; module ``_simd``):
register-blocked products (``_gemm_nt``: rows of W_k against the samples' rows, reduced by
transposing horizontal sums; ``_gemm_nn``: result rows from broadcast entries, for the
gradient and for δ ← W_kᵀδ; ``_forward_lanes``: linear layers, one sample per lane, when the
block is whole groups of LANES samples), exponentials by ``_vexp``. A step whose minibatch is
one block and whose g has no full-data term (no SVRG, c = 0) is fused into its backward pass:
each layer's gradient block is formed and x steps on it at once (``_step_range``), ‖x‖² from
the same pass; otherwise the gradient accumulates in g and ``_heavy_ball`` steps. Softmax outputs
of ten classes (LANES < m <= LANES + 2) on whole vectors of inputs take the output layer and the
residuals in one function (``_softmax_layer_residuals``); in the fused step, a layer whose rows are a
multiple of 5 and not of 8 (ten classes) forms its gradient in registers and x steps on it at once
(``_gemm_nn_step5``, no store of g). Without AVX-512 (``WIDE`` false: 16 vector registers, each LANES-wide
vector taking two) the blocks of sums of ``_gemm_nn``, ``_forward_lanes``, ``_gemm_nn_step5`` and
``_softmax_layer_residuals`` are narrower, so that they stay in registers. The step
loop passes borrowed views of its arrays (``_borrow``): a call with array arguments would
otherwise cost two atomic reference-count updates per array. The engine may pad d_in with
zero inputs (whole vectors per row of W_1), and may give one layer's intercept column to the kernel
as its bias (then Gt has d_in + 1 columns, the bias's last); ``keep`` maps x back to the problem's
coordinates.

Records are not evaluated here: the kernel saves the iterate (float64) at every
record step and the engine computes the problem's canonical distances and its
cancellation-free ``suboptimality`` with the problem's own numpy code, exactly as
the reference engine does; memory for the saved iterates is bounded by chunking.
Conventions (dtype, guard, fastmath, unsigned offsets in inner loops) are those of
``_kernels_ls``; the explicit-vector code indexes with signed flat offsets (it does not rely
on LLVM's loop vectoriser, which the unsigned offsets are for).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..rng import batch_into_nb
from . import _activations
from ._kernels_ls import FASTMATH, _heavy_ball
from ._simd import (LANES, _aligned_empty, _alive, _borrow, _vabs, _vadd, _vbcast, _vblend_n, _vdiv, _vexp,
                    _vexp_safe, _vfma, _vhigh_to_low, _vhsum8, _vjoin_low, _vkeep_n, _vload, _vload_n, _vmax,
                    _vmax_all, _vmul, _vsplat, _vsplat_recip, _vstore, _vstore_half_n, _vstore_n, _vsub, _vsum,
                    _vtranspose8, _vzero, wide_vectors)

#: whether numba compiles for AVX-512 (32 vector registers); without it each LANES-wide vector takes two of
#: the 16 AVX2 registers, and the blocks of sums are narrower so that they do not spill
WIDE = wide_vectors()

#: samples taken through the layers together; the minibatch scratch of a trajectory is
#: O(SAMPLE_BLOCK · Σ widths) whatever the batch size (full-batch runs included)
SAMPLE_BLOCK = 32


_activate = njit(cache=True, nogil=True, inline="always")(_activations.activate)
_activation_d1 = njit(cache=True, nogil=True, inline="always")(_activations.activation_d1)




@njit(cache=True, nogil=True)
def _gemm_nt(C, c0, cs, A, a0, sa, B, b0, sb, M, N, K, rows, row0, gather):
    """C.flat[c0 + i·cs + r] = Σ_q A.flat[a0 + ρ(i)·sa + q] · B.flat[b0 + r·sb + q] for i < M, r < N, q < K,
    with ρ(i) = rows[row0 + i] when ``gather`` (a minibatch's rows of the data, read in place), else i.

    Blocks of 2 rows of A × 4 rows of B: eight independent sums over q, LANES terms at a time (the
    last vector masked), reduced together by one transposing horizontal sum. A partial block repeats
    its last row (computed twice, stored once). Where N is a multiple of 5 and not of 4 (softmax on 10
    classes) the blocks take 5 rows of B instead, so that no row is computed twice; the fifth row's
    two sums reduce on their own. The rows of B (a layer's weights) are the outer loop: each block of
    them is read from memory once.
    """
    five = N % 4 != 0 and N % 5 == 0
    rb = 5 if five else 4
    kf = K - K % LANES
    kr = K - kf
    for r in range(0, N, rb):
        pb0 = b0 + r * sb
        pb1 = b0 + min(r + 1, N - 1) * sb
        pb2 = b0 + min(r + 2, N - 1) * sb
        pb3 = b0 + min(r + 3, N - 1) * sb
        pb4 = b0 + min(r + 4, N - 1) * sb
        for i in range(0, M, 2):
            i1 = min(i + 1, M - 1)
            pa0 = a0 + (rows[row0 + i] if gather else i) * sa
            pa1 = a0 + (rows[row0 + i1] if gather else i1) * sa
            a00 = _vzero(C)
            a01 = a00
            a02 = a00
            a03 = a00
            a04 = a00
            a10 = a00
            a11 = a00
            a12 = a00
            a13 = a00
            a14 = a00
            for q in range(0, kf, LANES):
                h0 = _vload(A, pa0 + q)
                h1 = _vload(A, pa1 + q)
                w0 = _vload(B, pb0 + q)
                w1 = _vload(B, pb1 + q)
                w2 = _vload(B, pb2 + q)
                w3 = _vload(B, pb3 + q)
                a00 = _vfma(w0, h0, a00)
                a01 = _vfma(w1, h0, a01)
                a02 = _vfma(w2, h0, a02)
                a03 = _vfma(w3, h0, a03)
                a10 = _vfma(w0, h1, a10)
                a11 = _vfma(w1, h1, a11)
                a12 = _vfma(w2, h1, a12)
                a13 = _vfma(w3, h1, a13)
                if five:
                    w4 = _vload(B, pb4 + q)
                    a04 = _vfma(w4, h0, a04)
                    a14 = _vfma(w4, h1, a14)
            if kr > 0:                                      # the last, partial vector of q
                h0 = _vload_n(A, pa0 + kf, kr)
                h1 = _vload_n(A, pa1 + kf, kr)
                w0 = _vload_n(B, pb0 + kf, kr)
                w1 = _vload_n(B, pb1 + kf, kr)
                w2 = _vload_n(B, pb2 + kf, kr)
                w3 = _vload_n(B, pb3 + kf, kr)
                a00 = _vfma(w0, h0, a00)
                a01 = _vfma(w1, h0, a01)
                a02 = _vfma(w2, h0, a02)
                a03 = _vfma(w3, h0, a03)
                a10 = _vfma(w0, h1, a10)
                a11 = _vfma(w1, h1, a11)
                a12 = _vfma(w2, h1, a12)
                a13 = _vfma(w3, h1, a13)
                if five:
                    w4 = _vload_n(B, pb4 + kf, kr)
                    a04 = _vfma(w4, h0, a04)
                    a14 = _vfma(w4, h1, a14)
            s = _vhsum8(a00, a01, a02, a03, a10, a11, a12, a13)
            nr = min(4, N - r)
            _vstore_half_n(C, c0 + i1 * cs + r, s, 1, nr)
            if five:
                _vstore_n(C, c0 + i1 * cs + r + 4, _vsplat(_vsum(a14)), 1)
            _vstore_half_n(C, c0 + i * cs + r, s, 0, nr)
            if five:
                _vstore_n(C, c0 + i * cs + r + 4, _vsplat(_vsum(a04)), 1)


@njit(cache=True, nogil=True)
def _gemm_nn(C, c0, cs, A, a0, ai, ak, B, b0, sb, M, K, N, accumulate, rows, row0, gather):
    """C.flat[c0 + i·cs + q] (+)= Σ_k A.flat[a0 + i·ai + k·ak] · B.flat[b0 + ρ(k)·sb + q] for i < M, q < N,
    k < K (``accumulate``: add to C, else overwrite it), with ρ(k) = rows[row0 + k] when ``gather``, else k.

    Blocks of 2 rows × 4 vectors of q (2 × 2 without AVX-512, ``WIDE``), each A entry broadcast: eight
    independent sums, six loads per eight fused multiply-adds; the vectors of q left over (the last one
    masked) in blocks of 8 rows, or of 5 where M is a multiple of 5 and not of 8.
    A partial block repeats its last row (both copies load C before either stores the same values).
    """
    n4 = N - N % ((4 if WIDE else 2) * LANES)
    for i in range(0, M, 2):
        i1 = min(i + 1, M - 1)
        pa0 = a0 + i * ai
        pa1 = a0 + i1 * ai
        pc0 = c0 + i * cs
        pc1 = c0 + i1 * cs
        if not WIDE:
            for q in range(0, n4, 2 * LANES):
                c00 = _vload(C, pc0 + q) if accumulate else _vzero(C)
                c01 = _vload(C, pc0 + q + LANES) if accumulate else _vzero(C)
                c10 = _vload(C, pc1 + q) if accumulate else _vzero(C)
                c11 = _vload(C, pc1 + q + LANES) if accumulate else _vzero(C)
                for k in range(K):
                    s0 = _vbcast(A, pa0 + k * ak)
                    s1 = _vbcast(A, pa1 + k * ak)
                    pb = b0 + (rows[row0 + k] if gather else k) * sb + q
                    v0 = _vload(B, pb)
                    v1 = _vload(B, pb + LANES)
                    c00 = _vfma(s0, v0, c00)
                    c01 = _vfma(s0, v1, c01)
                    c10 = _vfma(s1, v0, c10)
                    c11 = _vfma(s1, v1, c11)
                _vstore(C, pc0 + q, c00)
                _vstore(C, pc0 + q + LANES, c01)
                _vstore(C, pc1 + q, c10)
                _vstore(C, pc1 + q + LANES, c11)
        else:
            for q in range(0, n4, 4 * LANES):
                if accumulate:
                    c00 = _vload(C, pc0 + q)
                    c01 = _vload(C, pc0 + q + LANES)
                    c02 = _vload(C, pc0 + q + 2 * LANES)
                    c03 = _vload(C, pc0 + q + 3 * LANES)
                    c10 = _vload(C, pc1 + q)
                    c11 = _vload(C, pc1 + q + LANES)
                    c12 = _vload(C, pc1 + q + 2 * LANES)
                    c13 = _vload(C, pc1 + q + 3 * LANES)
                else:
                    c00 = _vzero(C)
                    c01 = c00
                    c02 = c00
                    c03 = c00
                    c10 = c00
                    c11 = c00
                    c12 = c00
                    c13 = c00
                for k in range(K):
                    s0 = _vbcast(A, pa0 + k * ak)
                    s1 = _vbcast(A, pa1 + k * ak)
                    pb = b0 + (rows[row0 + k] if gather else k) * sb + q
                    v0 = _vload(B, pb)
                    v1 = _vload(B, pb + LANES)
                    v2 = _vload(B, pb + 2 * LANES)
                    v3 = _vload(B, pb + 3 * LANES)
                    c00 = _vfma(s0, v0, c00)
                    c01 = _vfma(s0, v1, c01)
                    c02 = _vfma(s0, v2, c02)
                    c03 = _vfma(s0, v3, c03)
                    c10 = _vfma(s1, v0, c10)
                    c11 = _vfma(s1, v1, c11)
                    c12 = _vfma(s1, v2, c12)
                    c13 = _vfma(s1, v3, c13)
                _vstore(C, pc0 + q, c00)
                _vstore(C, pc0 + q + LANES, c01)
                _vstore(C, pc0 + q + 2 * LANES, c02)
                _vstore(C, pc0 + q + 3 * LANES, c03)
                _vstore(C, pc1 + q, c10)
                _vstore(C, pc1 + q + LANES, c11)
                _vstore(C, pc1 + q + 2 * LANES, c12)
                _vstore(C, pc1 + q + 3 * LANES, c13)
    five = M % 8 != 0 and M % 5 == 0                    # (softmax on 10 classes: no row computed twice)
    rb = 5 if five else 8
    for q in range(n4, N, LANES):
        nq = N - q
        for i in range(0, M, rb):
            r0 = i
            r1 = min(i + 1, M - 1)
            r2 = min(i + 2, M - 1)
            r3 = min(i + 3, M - 1)
            r4 = min(i + 4, M - 1)
            r5 = min(i + 5, M - 1)
            r6 = min(i + 6, M - 1)
            r7 = min(i + 7, M - 1)
            if accumulate:
                c0_ = _vload_n(C, c0 + r0 * cs + q, nq)
                c1_ = _vload_n(C, c0 + r1 * cs + q, nq)
                c2_ = _vload_n(C, c0 + r2 * cs + q, nq)
                c3_ = _vload_n(C, c0 + r3 * cs + q, nq)
                c4_ = _vload_n(C, c0 + r4 * cs + q, nq)
                c5_ = _vload_n(C, c0 + r5 * cs + q, nq)
                c6_ = _vload_n(C, c0 + r6 * cs + q, nq)
                c7_ = _vload_n(C, c0 + r7 * cs + q, nq)
            else:
                c0_ = _vzero(C)
                c1_ = c0_
                c2_ = c0_
                c3_ = c0_
                c4_ = c0_
                c5_ = c0_
                c6_ = c0_
                c7_ = c0_
            for k in range(K):
                v = _vload_n(B, b0 + (rows[row0 + k] if gather else k) * sb + q, nq)
                pa = a0 + k * ak
                c0_ = _vfma(_vbcast(A, pa + r0 * ai), v, c0_)
                c1_ = _vfma(_vbcast(A, pa + r1 * ai), v, c1_)
                c2_ = _vfma(_vbcast(A, pa + r2 * ai), v, c2_)
                c3_ = _vfma(_vbcast(A, pa + r3 * ai), v, c3_)
                c4_ = _vfma(_vbcast(A, pa + r4 * ai), v, c4_)
                if not five:
                    c5_ = _vfma(_vbcast(A, pa + r5 * ai), v, c5_)
                    c6_ = _vfma(_vbcast(A, pa + r6 * ai), v, c6_)
                    c7_ = _vfma(_vbcast(A, pa + r7 * ai), v, c7_)
            if not five:
                _vstore_n(C, c0 + r7 * cs + q, c7_, nq)
                _vstore_n(C, c0 + r6 * cs + q, c6_, nq)
                _vstore_n(C, c0 + r5 * cs + q, c5_, nq)
            _vstore_n(C, c0 + r4 * cs + q, c4_, nq)
            _vstore_n(C, c0 + r3 * cs + q, c3_, nq)
            _vstore_n(C, c0 + r2 * cs + q, c2_, nq)
            _vstore_n(C, c0 + r1 * cs + q, c1_, nq)
            _vstore_n(C, c0 + r0 * cs + q, c0_, nq)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _forward_batch(x, dims, offs, A, idx, j0, nb, H, hoff, zero, act, boffs):
    """``_forward`` with its own scratch."""
    _forward(x, dims, offs, A, idx, j0, nb, H, hoff, zero, act, boffs, _forward_scratch(nb, H), dims.shape[0] - 1)


@njit(cache=True, nogil=True)
def _forward_scratch(rows, H):
    """The scratch of ``_forward`` for ``rows`` samples and activations H: the transposed activations of
    whole groups of LANES samples."""
    return _aligned_empty(rows // LANES, H.shape[1] * LANES, H)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _forward(x, dims, offs, A, idx, j0, nb, H, hoff, zero, act, boffs, HT, nl):
    """Activations of the samples idx[j0:j0 + nb] through the first ``nl`` layers (all: the number of
    layers; one less: the output layer is left to ``_softmax_layer_residuals``): row j of H holds
    h_{k+1} = W_k h_k in slot k + 1, from
    h_0 = a_{idx[j0 + j]} (MLPs: h_{k+1} = σ(W_k h_k + b_k) below the output layer, W_L h_L + b_L at it;
    ``act`` the activation code, ``boffs`` the bias offsets, empty without biases). Slot 0 of H stays
    unwritten: h_0 is read from A's rows in place, here and by the backward pass (a copy of the rows cost
    as much as a layer's product, its loads waiting on the cache).

    Linear layers and whole groups of LANES samples: ``_forward_lanes`` (no horizontal sums; H's slots
    ``hoff`` must then start whole vectors and hold whole vectors); otherwise each layer is one
    ``_gemm_nt`` (the samples' rows against the rows of W_k), biases and activations applied after
    it. ``HT`` (``_forward_scratch``) holds transposed activations.
    """
    L = dims.shape[0] - 1
    hw = H.shape[1]
    d0 = dims[0]
    lanes = act == 0 and boffs.shape[0] == 0 and nb % LANES == 0 and nb // LANES <= HT.shape[0]
    for k in range(1, L + 1):                      # and H's slots of whole vectors (as the kernel makes them)
        end = hoff[k + 1] if k < L else hw
        if hoff[k] % LANES != 0 or end - hoff[k] < (dims[k] + LANES - 1) // LANES * LANES:
            lanes = False
    if lanes:
        for g in range(nb // LANES):
            _forward_lanes(x, dims, offs, A, idx, j0, H, hoff, g, HT, nl)
        return
    for k in range(nl):
        rows, cols = dims[k + 1], dims[k]
        ho = hoff[k + 1]
        if k == 0:
            _gemm_nt(H, ho, hw, A, 0, d0, x, offs[k], cols, nb, rows, cols, idx, j0, True)
        else:
            _gemm_nt(H, ho, hw, H, hoff[k], hw, x, offs[k], cols, nb, rows, cols, idx, j0, False)
        hidden = act != 0 and k < L - 1
        if boffs.shape[0] > 0 or hidden:
            for j in range(nb):
                for r in range(rows):
                    v = H[j, ho + r]
                    if boffs.shape[0] > 0:
                        v += x[boffs[k] + r]
                    if hidden:
                        v = _activate(act, v)
                    H[j, ho + r] = v


@njit(cache=True, nogil=True)
def _forward_lanes(x, dims, offs, A, idx, j0, H, hoff, g, HT, nl):
    """The first ``nl`` linear layers for the LANES samples of group g (samples idx[j0 + g·LANES …], rows
    g·LANES … of H), one sample per lane: row g of HT holds each layer's input transposed (component c of
    the group's samples at LANES·(hoff[k] + c)), so h_{k+1}[r] = Σ_c W_k[r, c]·h_k[c] for all samples at once
    is LANES-wide fused multiply-adds with W_k[r, c] broadcast, no horizontal sums. Blocks of 8 rows of W_k
    (a last partial block repeats its last row; without AVX-512 two passes of 4 rows over the block's
    columns); an 8×8 transpose turns each block back into the rows of H.
    """
    L = dims.shape[0] - 1
    hw = H.shape[1]
    d0 = dims[0]
    s0 = g * LANES
    ht = HT.shape[1]
    gb = g * ht
    p = j0 + s0
    for c in range(0, d0, LANES):                  # h_0 transposed, from the rows of A
        n = d0 - c
        t = _vtranspose8(_vload_n(A, idx[p] * d0 + c, n), _vload_n(A, idx[p + 1] * d0 + c, n),
                         _vload_n(A, idx[p + 2] * d0 + c, n), _vload_n(A, idx[p + 3] * d0 + c, n),
                         _vload_n(A, idx[p + 4] * d0 + c, n), _vload_n(A, idx[p + 5] * d0 + c, n),
                         _vload_n(A, idx[p + 6] * d0 + c, n), _vload_n(A, idx[p + 7] * d0 + c, n))
        for l in range(min(LANES, n)):
            _vstore(HT, gb + (c + l) * LANES, t[l])
    for k in range(nl):
        rows, cols = dims[k + 1], dims[k]
        hi = gb + hoff[k] * LANES
        ho = hoff[k + 1]
        for r in range(0, rows, 8):
            w0 = offs[k] + r * cols
            w1 = offs[k] + min(r + 1, rows - 1) * cols
            w2 = offs[k] + min(r + 2, rows - 1) * cols
            w3 = offs[k] + min(r + 3, rows - 1) * cols
            w4 = offs[k] + min(r + 4, rows - 1) * cols
            w5 = offs[k] + min(r + 5, rows - 1) * cols
            w6 = offs[k] + min(r + 6, rows - 1) * cols
            w7 = offs[k] + min(r + 7, rows - 1) * cols
            a0 = _vzero(H)
            a1 = a0
            a2 = a0
            a3 = a0
            a4 = a0
            a5 = a0
            a6 = a0
            a7 = a0
            if WIDE:
                for c in range(cols):
                    h = _vload(HT, hi + c * LANES)
                    a0 = _vfma(_vbcast(x, w0 + c), h, a0)
                    a1 = _vfma(_vbcast(x, w1 + c), h, a1)
                    a2 = _vfma(_vbcast(x, w2 + c), h, a2)
                    a3 = _vfma(_vbcast(x, w3 + c), h, a3)
                    a4 = _vfma(_vbcast(x, w4 + c), h, a4)
                    a5 = _vfma(_vbcast(x, w5 + c), h, a5)
                    a6 = _vfma(_vbcast(x, w6 + c), h, a6)
                    a7 = _vfma(_vbcast(x, w7 + c), h, a7)
            else:                                  # (AVX2: four rows at a time, eight sums in 16 registers)
                for c in range(cols):
                    h = _vload(HT, hi + c * LANES)
                    a0 = _vfma(_vbcast(x, w0 + c), h, a0)
                    a1 = _vfma(_vbcast(x, w1 + c), h, a1)
                    a2 = _vfma(_vbcast(x, w2 + c), h, a2)
                    a3 = _vfma(_vbcast(x, w3 + c), h, a3)
                for c in range(cols):
                    h = _vload(HT, hi + c * LANES)
                    a4 = _vfma(_vbcast(x, w4 + c), h, a4)
                    a5 = _vfma(_vbcast(x, w5 + c), h, a5)
                    a6 = _vfma(_vbcast(x, w6 + c), h, a6)
                    a7 = _vfma(_vbcast(x, w7 + c), h, a7)
            if k < nl - 1:                         # the next layer's input, transposed
                ot = gb + (ho + r) * LANES
                _vstore(HT, ot, a0)
                _vstore(HT, ot + LANES, a1)
                _vstore(HT, ot + 2 * LANES, a2)
                _vstore(HT, ot + 3 * LANES, a3)
                _vstore(HT, ot + 4 * LANES, a4)
                _vstore(HT, ot + 5 * LANES, a5)
                _vstore(HT, ot + 6 * LANES, a6)
                _vstore(HT, ot + 7 * LANES, a7)
            t = _vtranspose8(a0, a1, a2, a3, a4, a5, a6, a7)
            nr = rows - r
            for l in range(LANES):
                _vstore_n(H, (s0 + l) * hw + ho + r, t[l], nr)


@njit(cache=True, nogil=True, inline="always")
def _logit_max(H, j, z0, m):
    """max_o H[j, z0 + o] over the m logits of row j (the shift of a stable softmax)."""
    zmax = H[j, z0]
    for o in range(1, m):
        if H[j, z0 + o] > zmax:
            zmax = H[j, z0 + o]
    return zmax


@njit(nogil=True, inline="always")
def _softmax_shift(z0, z1, m):
    """z − max(z) of one sample's m logits (z0, z1: classes 0 .. LANES − 1, then the rest; LANES < m <=
    2·LANES; lanes past m are ignored, they take a logit already counted)."""
    zm = _vmax_all(_vmax(z0, _vblend_n(z1, m - LANES, z0)))
    return _vsub(z0, zm), _vsub(z1, zm)


@njit(nogil=True, inline="always")
def _softmax_pair(z0, z1, y0, y1, m):
    """The softmax probabilities of two samples with LANES < m <= 2·LANES classes, from their logits (z0, z1)
    and (y0, y1) (classes 0 .. LANES − 1, then the rest; lanes past m ignored but finite): (p0, p1, q0, q1),
    lanes past m zero. Logits of magnitude at most ``_simd.EXP_SAFE`` need no shift by their max
    (``_softmax_shift``: their exps and sums are normal numbers; the check is one compare, off the exps'
    chains, where the max is a chain of shuffles before them). The two chains of exp, sum and reciprocal
    are independent."""
    if not _vexp_safe(_vmax(_vmax(_vabs(z0), _vabs(z1)), _vmax(_vabs(y0), _vabs(y1)))):
        z0, z1 = _softmax_shift(z0, z1, m)
        y0, y1 = _softmax_shift(y0, y1, m)
    e0 = _vexp(z0)
    f0 = _vexp(y0)
    if m <= LANES + LANES // 2:
        # both samples' last classes in one vector: three exps for the two samples instead of four
        t = _vexp(_vjoin_low(z1, y1))
        e1 = _vkeep_n(t, m - LANES)
        f1 = _vkeep_n(_vhigh_to_low(t), m - LANES)
    else:
        e1 = _vkeep_n(_vexp(z1), m - LANES)
        f1 = _vkeep_n(_vexp(y1), m - LANES)
    # one division per sample (a vector division per vector would cost about as much as the exps)
    sv = _vsplat_recip(_vsum(_vadd(e0, e1)))
    sw = _vsplat_recip(_vsum(_vadd(f0, f1)))
    return _vmul(e0, sv), _vmul(e1, sv), _vmul(f0, sw), _vmul(f1, sw)


@njit(nogil=True, inline="always")
def _less_targets(p0, p1, y0, y1, t0, t1, ma, teacher):
    """One sample's residual vectors p − y (classes 0 .. LANES − 1, then the rest), less a·rθ = −ma⊙t when
    ``teacher``. Values only: the callers load and store (an inlined helper taking D, Y and rt cost
    reference-count calls per pair, and the calls spill every vector register)."""
    d0 = _vsub(p0, y0)
    d1 = _vsub(p1, y1)
    if teacher:
        d0 = _vfma(ma, t0, d0)
        d1 = _vfma(ma, t1, d1)
    return d0, d1


@njit(nogil=True, inline="always")
def _fma_pair(w, h, g, u, v):
    """(u + w⊙h, v + w⊙g): one weight vector against two samples' inputs."""
    return _vfma(w, h, u), _vfma(w, g, v)


@njit(nogil=True, inline="always")
def _logits5(x, r0, r1, r2, r3, r4, H, ph, K):
    """Five rows of x (from r0 … r4) times the row of H at ph, K a whole number of vectors: five vectors of
    partial sums (the horizontal sums are the caller's)."""
    s0 = _vzero(x)
    s1, s2, s3, s4 = s0, s0, s0, s0
    for q in range(0, K, LANES):
        h = _vload(H, ph + q)
        s0 = _vfma(_vload(x, r0 + q), h, s0)
        s1 = _vfma(_vload(x, r1 + q), h, s1)
        s2 = _vfma(_vload(x, r2 + q), h, s2)
        s3 = _vfma(_vload(x, r3 + q), h, s3)
        s4 = _vfma(_vload(x, r4 + q), h, s4)
    return s0, s1, s2, s3, s4


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _softmax_layer_residuals(x, w0, K, Hin, a0, sa, gather, boff, m, Y, idx, j0, nb, D, a, rt, teacher, Z, zoff):
    """The output layer and the softmax residuals in one pass, for LANES < m <= LANES + 2 classes (ten
    classes, the common case): D[j, :m] = softmax(W h_j + b) − y_i (less a·rθ_i when ``teacher``) for the
    samples i = idx[j0 + j], W the m × K rows at x[w0:], b the m biases at x[boff:] (boff < 0: none),
    h_j row ρ(j) of Hin from a0 with stride sa (ρ(j) = idx[j0 + j] when ``gather``, else j); K a whole
    number of vectors. Z's rows from zoff (2·LANES each) receive the logits.

    First the logits, two samples × m classes at a time: 2m sums over the inputs, LANES terms at a time,
    each input vector loaded once for all m classes (``_gemm_nt``'s blocks of 2 × 5 load it twice), reduced
    by transposing horizontal sums into whole vectors and stored whole (a later load
    of them is served by store forwarding; ``_gemm_nt``'s masked stores were not). Then the softmax of each
    pair of samples (``_softmax_pair``): the pairs' chains are independent, so they overlap, where in one
    pass each waited on its own sums. Rows past m repeat the last row (computed twice, never used); an
    odd last sample is computed twice.
    """
    dw = D.shape[1]
    nv = m if dw < 2 * LANES else dw                    # lanes a store may write
    zw = Z.shape[1]
    ma = _vsplat(-a)
    p9 = w0 + min(LANES + 1, m - 1) * K                 # (m = LANES + 1: the last row again)
    for j in range(0, nb, 2):
        j1 = min(j + 1, nb - 1)
        i = idx[j0 + j]
        i1 = idx[j0 + j1]
        pa = a0 + (i if gather else j) * sa
        pb = a0 + (i1 if gather else j1) * sa
        u0 = _vzero(D)
        u1, u2, u3, u4, u5, u6, u7, u8, u9 = u0, u0, u0, u0, u0, u0, u0, u0, u0
        v0, v1, v2, v3, v4, v5, v6, v7, v8, v9 = u0, u0, u0, u0, u0, u0, u0, u0, u0, u0
        if WIDE:
            for q in range(0, K, LANES):
                h = _vload(Hin, pa + q)
                g = _vload(Hin, pb + q)
                u0, v0 = _fma_pair(_vload(x, w0 + q), h, g, u0, v0)
                u1, v1 = _fma_pair(_vload(x, w0 + K + q), h, g, u1, v1)
                u2, v2 = _fma_pair(_vload(x, w0 + 2 * K + q), h, g, u2, v2)
                u3, v3 = _fma_pair(_vload(x, w0 + 3 * K + q), h, g, u3, v3)
                u4, v4 = _fma_pair(_vload(x, w0 + 4 * K + q), h, g, u4, v4)
                u5, v5 = _fma_pair(_vload(x, w0 + 5 * K + q), h, g, u5, v5)
                u6, v6 = _fma_pair(_vload(x, w0 + 6 * K + q), h, g, u6, v6)
                u7, v7 = _fma_pair(_vload(x, w0 + 7 * K + q), h, g, u7, v7)
                u8, v8 = _fma_pair(_vload(x, w0 + 8 * K + q), h, g, u8, v8)
                u9, v9 = _fma_pair(_vload(x, p9 + q), h, g, u9, v9)
        else:                       # (AVX2: one sample × five classes per pass, the sums in 10 of 16 registers)
            u0, u1, u2, u3, u4 = _logits5(x, w0, w0 + K, w0 + 2 * K, w0 + 3 * K, w0 + 4 * K, Hin, pa, K)
            u5, u6, u7, u8, u9 = _logits5(x, w0 + 5 * K, w0 + 6 * K, w0 + 7 * K, w0 + 8 * K, p9, Hin, pa, K)
            v0, v1, v2, v3, v4 = _logits5(x, w0, w0 + K, w0 + 2 * K, w0 + 3 * K, w0 + 4 * K, Hin, pb, K)
            v5, v6, v7, v8, v9 = _logits5(x, w0 + 5 * K, w0 + 6 * K, w0 + 7 * K, w0 + 8 * K, p9, Hin, pb, K)
        z0 = _vhsum8(u0, u1, u2, u3, u4, u5, u6, u7)
        y0 = _vhsum8(v0, v1, v2, v3, v4, v5, v6, v7)
        t = _vhsum8(u8, u9, u8, u9, v8, v9, v8, v9)     # lanes 0, 1: sample j's last logits; 4, 5: sample j1's
        z1 = t
        y1 = _vhigh_to_low(t)
        if boff >= 0:
            z0 = _vadd(z0, _vload(x, boff))
            y0 = _vadd(y0, _vload(x, boff))
            z1 = _vadd(z1, _vload_n(x, boff + LANES, m - LANES))
            y1 = _vadd(y1, _vload_n(x, boff + LANES, m - LANES))
        _vstore(Z, j1 * zw + zoff, y0)
        _vstore(Z, j1 * zw + zoff + LANES, y1)
        _vstore(Z, j * zw + zoff, z0)
        _vstore(Z, j * zw + zoff + LANES, z1)
    for j in range(0, nb, 2):
        j1 = min(j + 1, nb - 1)
        pz = j * zw + zoff
        pz1 = j1 * zw + zoff
        p0, p1, q0, q1 = _softmax_pair(_vload(Z, pz), _vload(Z, pz + LANES), _vload(Z, pz1), _vload(Z, pz1 + LANES), m)
        i = idx[j0 + j]
        i1 = idx[j0 + j1]
        t0, t1, u0, u1 = ma, ma, ma, ma
        if teacher:
            t0, t1 = _vload(rt, i * m), _vload_n(rt, i * m + LANES, m - LANES)
            u0, u1 = _vload(rt, i1 * m), _vload_n(rt, i1 * m + LANES, m - LANES)
        d0, d1 = _less_targets(p0, p1, _vload(Y, i * m), _vload_n(Y, i * m + LANES, m - LANES), t0, t1, ma, teacher)
        c0, c1 = _less_targets(q0, q1, _vload(Y, i1 * m), _vload_n(Y, i1 * m + LANES, m - LANES), u0, u1, ma, teacher)
        _vstore_n(D, j1 * dw, c0, nv)
        _vstore_n(D, j1 * dw + LANES, c1, nv - LANES)
        _vstore_n(D, j * dw, d0, nv)
        _vstore_n(D, j * dw + LANES, d1, nv - LANES)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _output_residuals(code, H, zoff, m, Y, idx, j0, nb, D, zero, a, rt, teacher):
    """``_residuals``, less a·rθ_i (``rt``) when ``teacher``: the combined residuals of a step.

    Softmax with LANES < m <= 2·LANES classes: two samples per pass, whose chains of max, ``_vexp``,
    sum and divide are independent (an odd last sample is computed twice); up to LANES classes one
    sample per pass; squared loss LANES outputs at a time; otherwise ``_residuals``, then the teacher
    term. Each vector is formed in registers and stored once, whole where D's rows have room.
    """
    hw = H.shape[1]
    dw = D.shape[1]
    nv = m if dw < (m + LANES - 1) // LANES * LANES else dw       # lanes a store may write
    ma = _vsplat(-a)
    if code == 1 and LANES < m <= 2 * LANES:
        for j in range(0, nb, 2):
            j1 = min(j + 1, nb - 1)
            hj = j * hw + zoff
            hj1 = j1 * hw + zoff
            p0, p1, q0, q1 = _softmax_pair(_vload(H, hj), _vload_n(H, hj + LANES, m - LANES), _vload(H, hj1),
                                           _vload_n(H, hj1 + LANES, m - LANES), m)
            i = idx[j0 + j]
            i1 = idx[j0 + j1]
            t0, t1, u0, u1 = ma, ma, ma, ma
            if teacher:
                t0, t1 = _vload(rt, i * m), _vload_n(rt, i * m + LANES, m - LANES)
                u0, u1 = _vload(rt, i1 * m), _vload_n(rt, i1 * m + LANES, m - LANES)
            d0, d1 = _less_targets(p0, p1, _vload(Y, i * m), _vload_n(Y, i * m + LANES, m - LANES), t0, t1, ma,
                                   teacher)
            c0, c1 = _less_targets(q0, q1, _vload(Y, i1 * m), _vload_n(Y, i1 * m + LANES, m - LANES), u0, u1, ma,
                                   teacher)
            _vstore_n(D, j1 * dw, c0, nv)
            _vstore_n(D, j1 * dw + LANES, c1, nv - LANES)
            _vstore_n(D, j * dw, d0, nv)
            _vstore_n(D, j * dw + LANES, d1, nv - LANES)
        return
    if code == 1 and m <= LANES:
        for j in range(nb):
            i = idx[j0 + j]
            z = _vload_n(H, j * hw + zoff, m)
            zm = _vmax_all(_vblend_n(z, m, _vsplat(H[j, zoff])))      # lanes past m: a logit already counted
            e = _vkeep_n(_vexp(_vsub(z, zm)), m)
            d = _vsub(_vdiv(e, _vsplat(_vsum(e))), _vload_n(Y, i * m, m))
            if teacher:
                d = _vfma(ma, _vload_n(rt, i * m, m), d)
            _vstore_n(D, j * dw, d, nv)
        return
    if code == 0:
        for j in range(nb):
            i = idx[j0 + j]
            for o in range(0, m, LANES):
                d = _vsub(_vload_n(H, j * hw + zoff + o, m - o), _vload_n(Y, i * m + o, m - o))
                if teacher:
                    d = _vfma(ma, _vload_n(rt, i * m + o, m - o), d)
                _vstore_n(D, j * dw + o, d, nv - o)
        return
    _residuals(code, H, zoff, m, Y, idx, j0, nb, D, zero)
    if teacher:
        for j in range(nb):
            i = idx[j0 + j]
            for o in range(m):
                D[j, o] -= a * rt[i, o]


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _softmax_residuals(H, zoff, m, Y, idx, j0, nb, D, zero):
    """D[j, :m] = softmax(z_j) − y_i at the logits z_j = H[j, zoff:zoff + m] of sample i = idx[j0 + j],
    LANES logits at a time (``_vexp``; lanes past m are dropped before the sum)."""
    hw = H.shape[1]
    dw = D.shape[1]
    for j in range(nb):
        i = idx[j0 + j]
        zmax = _vsplat(_logit_max(H, j, zoff, m))
        hj = j * hw + zoff
        dj = j * dw
        s = zero
        for o in range(0, m, LANES):
            e = _vkeep_n(_vexp(_vsub(_vload_n(H, hj + o, m - o), zmax)), m - o)
            _vstore_n(D, dj + o, e, m - o)
            s += _vsum(e)
        sv = _vsplat(s)
        for o in range(0, m, LANES):
            _vstore_n(D, dj + o, _vsub(_vdiv(_vload_n(D, dj + o, m - o), sv), _vload_n(Y, i * m + o, m - o)), m - o)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _residuals(code, H, zoff, m, Y, idx, j0, nb, D, zero):
    """D[j, :m] = ∂g/∂z of sample idx[j0 + j] at its logits H[j, zoff:zoff + m] (see the module table)."""
    z0 = np.uint64(zoff)
    hw = H.shape[1]
    dw = D.shape[1]
    if code == 1:
        _softmax_residuals(H, zoff, m, Y, idx, j0, nb, D, zero)
        return
    for j in range(nb):
        i = idx[j0 + j]
        if code == 0:
            for o in range(m):
                D[j, o] = H[j, z0 + o] - Y[i, o]
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
def _backward_batch(x, dims, offs, A, idx, j0, H, hoff, D, Dn, nb, grad, scale, zero, act, boffs):
    """grad += scale · Σ_j J(x)ᵀ(δ_j h_{j,0}ᵀ) for the output residuals δ_j = D[j, :d_out] of the samples
    idx[j0:j0 + nb] (h_{j,0} their rows of A; H from ``_forward``; MLPs: the biases' gradients Σ_j δ_j, and
    δ ← (W_kᵀδ) ⊙ σ'(z) from the saved activations).

    Overwrites D and Dn. Layer k's gradient gains Σ_j δ_j h_jᵀ and δ ← W_kᵀδ, each one ``_gemm_nn``
    (the first reads δ transposed, the second W_k's rows).
    """
    L = dims.shape[0] - 1
    hw = H.shape[1]
    for j in range(nb):
        for o in range(dims[L]):
            D[j, o] = scale * D[j, o]
    cur = D
    nxt = Dn
    for k in range(L - 1, -1, -1):
        rows, cols = dims[k + 1], dims[k]
        hi = hoff[k]
        if boffs.shape[0] > 0:
            for r in range(rows):
                s = zero
                for j in range(nb):
                    s += cur[j, r]
                grad[boffs[k] + r] += s
        # row r of the gradient += Σ_j δ_j[r] h_j
        if k == 0:
            _gemm_nn(grad, offs[k], cols, cur, 0, 1, cur.shape[1], A, 0, cols, rows, nb, cols, True, idx, j0, True)
        else:
            _gemm_nn(grad, offs[k], cols, cur, 0, 1, cur.shape[1], H, hi, hw, rows, nb, cols, True, idx, j0, False)
        if k > 0:
            # δ_j ← W_kᵀ δ_j = Σ_r δ_j[r] (row r of W_k)
            _gemm_nn(nxt, 0, nxt.shape[1], cur, 0, cur.shape[1], 1, x, offs[k], cols, nb, rows, cols, False, idx, j0,
                     False)
            if act != 0:
                for j in range(nb):
                    for c in range(cols):
                        nxt[j, c] *= _activation_d1(act, H[j, hi + c])
            cur, nxt = nxt, cur


@njit(nogil=True, inline="always")
def _step_math(G, xv, av, rv, vv, ib, ma, mg, mu, alpha_on, ridge_on, momentum):
    """The step of one vector from its gradient sums G: g = G·inv_b + α⊙x − a·ridge, v = μ·vel + g,
    x − γv (``_heavy_ball``); (v, x_new). Values only: an inlined helper with array arguments would cost
    reference counts per call. ``alpha_on`` false: α = 0 (no α⊙x)."""
    g = _vmul(G, ib)
    if alpha_on:
        g = _vfma(av, xv, g)
    if ridge_on:
        g = _vfma(ma, rv, g)
    if momentum:
        g = _vfma(mu, vv, g)
    return g, _vfma(mg, g, xv)


@njit(cache=True, nogil=True)
def _step_range(x, g, lo, hi, inv_b, alpha, alpha_u, uniform, ridge, a, ridge_on, gam, mom, vel):
    """The step of x[lo:hi] from its gradient sums g[lo:hi] (``_step_math``; ``uniform``: α is ``alpha_u``
    and not read; ``ridge_on``: ridge is read); returns Σ x_new² over the range.

    The branches pick a copy of ``_step_range_as`` whose flags are literals (one compiled copy each): with
    the flags tested per vector inside its loop LLVM kept the tests and the loop took about twice as long."""
    momentum = mom != 0
    sc = (inv_b, alpha_u, a, gam, mom)
    if uniform and alpha_u == 0:
        return _step_range_by(x, g, alpha, ridge, vel, lo, hi, sc, True, False, ridge_on, momentum)
    if uniform:
        return _step_range_by(x, g, alpha, ridge, vel, lo, hi, sc, True, True, ridge_on, momentum)
    return _step_range_by(x, g, alpha, ridge, vel, lo, hi, sc, False, True, ridge_on, momentum)


@njit(nogil=True, inline="always")
def _step_range_by(x, g, alpha, ridge, vel, lo, hi, sc, uniform, alpha_on, ridge_on, momentum):
    """``_step_range_as`` with ``ridge_on`` and ``momentum`` made literals too (the second level of the branch).
    Inlined, it is four calls: an inlined copy of ``_step_range_as`` itself would cost numba far more
    (it copies an inlined function's IR per call site, at a cost that grows with the function's size)."""
    if ridge_on:
        if momentum:
            return _step_range_as(x, g, alpha, ridge, vel, lo, hi, sc, uniform, alpha_on, True, True)
        return _step_range_as(x, g, alpha, ridge, vel, lo, hi, sc, uniform, alpha_on, True, False)
    if momentum:
        return _step_range_as(x, g, alpha, ridge, vel, lo, hi, sc, uniform, alpha_on, False, True)
    return _step_range_as(x, g, alpha, ridge, vel, lo, hi, sc, uniform, alpha_on, False, False)


@njit(cache=True, nogil=True)
def _step_range_as(x, g, alpha, ridge, vel, lo, hi, sc, uniform, alpha_on, ridge_on, momentum):
    """``_step_range`` with its flags given (literals: each combination is compiled on its own) and its
    scalars ``sc`` = (inv_b, alpha_u, a, gam, mom). Four vectors at a time (four independent sums of
    squares), then one at a time (the last masked)."""
    ib = _vsplat(sc[0])
    au = _vsplat(sc[1])
    ma = _vsplat(-sc[2])
    mg = _vsplat(-sc[3])
    mu = _vsplat(sc[4])
    z = _vzero(x)
    s0 = z
    s1 = z
    s2 = z
    s3 = z
    h4 = lo + (hi - lo) // (4 * LANES) * (4 * LANES)
    for p in range(lo, h4, 4 * LANES):
        p1 = p + LANES
        p2 = p + 2 * LANES
        p3 = p + 3 * LANES
        x0 = _vload(x, p)
        x1 = _vload(x, p1)
        x2 = _vload(x, p2)
        x3 = _vload(x, p3)
        if uniform:
            a0 = au
            a1 = au
            a2 = au
            a3 = au
        else:
            a0 = _vload(alpha, p)
            a1 = _vload(alpha, p1)
            a2 = _vload(alpha, p2)
            a3 = _vload(alpha, p3)
        if ridge_on:
            r0 = _vload(ridge, p)
            r1 = _vload(ridge, p1)
            r2 = _vload(ridge, p2)
            r3 = _vload(ridge, p3)
        else:
            r0 = z
            r1 = z
            r2 = z
            r3 = z
        if momentum:
            v0 = _vload(vel, p)
            v1 = _vload(vel, p1)
            v2 = _vload(vel, p2)
            v3 = _vload(vel, p3)
        else:
            v0 = z
            v1 = z
            v2 = z
            v3 = z
        v0, x0 = _step_math(_vload(g, p), x0, a0, r0, v0, ib, ma, mg, mu, alpha_on, ridge_on, momentum)
        v1, x1 = _step_math(_vload(g, p1), x1, a1, r1, v1, ib, ma, mg, mu, alpha_on, ridge_on, momentum)
        v2, x2 = _step_math(_vload(g, p2), x2, a2, r2, v2, ib, ma, mg, mu, alpha_on, ridge_on, momentum)
        v3, x3 = _step_math(_vload(g, p3), x3, a3, r3, v3, ib, ma, mg, mu, alpha_on, ridge_on, momentum)
        if momentum:
            _vstore(vel, p, v0)
            _vstore(vel, p1, v1)
            _vstore(vel, p2, v2)
            _vstore(vel, p3, v3)
        _vstore(x, p, x0)
        _vstore(x, p1, x1)
        _vstore(x, p2, x2)
        _vstore(x, p3, x3)
        s0 = _vfma(x0, x0, s0)
        s1 = _vfma(x1, x1, s1)
        s2 = _vfma(x2, x2, s2)
        s3 = _vfma(x3, x3, s3)
    for p in range(h4, hi, LANES):
        n = hi - p
        xv = _vload_n(x, p, n)
        av = au if uniform else _vload_n(alpha, p, n)
        rv = _vload_n(ridge, p, n) if ridge_on else z
        vv = _vload_n(vel, p, n) if momentum else z
        v, xn = _step_math(_vload_n(g, p, n), xv, av, rv, vv, ib, ma, mg, mu, alpha_on, ridge_on, momentum)
        if momentum:
            _vstore_n(vel, p, v, n)
        _vstore_n(x, p, xn, n)
        s0 = _vfma(xn, xn, s0)
    return _vsum(_vadd(_vadd(s0, s1), _vadd(s2, s3)))


@njit(nogil=True, inline="always")
def _fma_row3(w, v0, v1, v2, c0, c1, c2):
    """(c0 + w⊙v0, c1 + w⊙v1, c2 + w⊙v2): one broadcast entry against three vectors of a row."""
    return _vfma(w, v0, c0), _vfma(w, v1, c1), _vfma(w, v2, c2)


@njit(nogil=True, inline="always")
def _fma_row2(w, v0, v1, c0, c1):
    """(c0 + w⊙v0, c1 + w⊙v1): one broadcast entry against two vectors of a row."""
    return _vfma(w, v0, c0), _vfma(w, v1, c1)


@njit(nogil=True, inline="always")
def _gemm_nn_step5_as(x, xo, A, a0, ai, ak, B, b0, sb, M, K, N, rows, row0, gather, alpha, ridge, vel, sc,
                      uniform, alpha_on, ridge_on, momentum):
    """One layer's gradient and its step together, for M a multiple of 5 (ten classes): the block G of
    ``_gemm_nn`` (C = x from xo, row stride N) is formed in registers, 5 rows × 3 vectors (the vectors left
    over 5 rows × 2, then 5 rows × 1), and x steps on it at once (``_step_math``): the gradient is never
    stored and loaded back, which halves the stores of a step. Three vectors, not four: the step's
    constants must stay in registers beside the fifteen sums; without AVX-512 (``WIDE``) 5 rows × 1
    vector throughout. The flags are ``_step_range``'s (constants where it is inlined).
    Returns Σ x_new² over the layer."""
    ib = _vsplat(sc[0])
    au = _vsplat(sc[1])
    ma = _vsplat(-sc[2])
    mg = _vsplat(-sc[3])
    mu = _vsplat(sc[4])
    n3 = N - N % (3 * LANES) if WIDE else 0         # (AVX2: 5 rows × 1 vector, the sums in 10 of 16 registers)
    s0 = _vzero(x)
    s1 = s0
    for i in range(0, M, 5):
        pa = a0 + i * ai
        pc = xo + i * N
        for q in range(0, n3, 3 * LANES):
            c00 = _vzero(x)
            c01, c02, c10, c11, c12 = c00, c00, c00, c00, c00
            c20, c21, c22, c30, c31, c32, c40, c41, c42 = c00, c00, c00, c00, c00, c00, c00, c00, c00
            for k in range(K):
                pb = b0 + (rows[row0 + k] if gather else k) * sb + q
                v0 = _vload(B, pb)
                v1 = _vload(B, pb + LANES)
                v2 = _vload(B, pb + 2 * LANES)
                pk = pa + k * ak
                c00, c01, c02 = _fma_row3(_vbcast(A, pk), v0, v1, v2, c00, c01, c02)
                c10, c11, c12 = _fma_row3(_vbcast(A, pk + ai), v0, v1, v2, c10, c11, c12)
                c20, c21, c22 = _fma_row3(_vbcast(A, pk + 2 * ai), v0, v1, v2, c20, c21, c22)
                c30, c31, c32 = _fma_row3(_vbcast(A, pk + 3 * ai), v0, v1, v2, c30, c31, c32)
                c40, c41, c42 = _fma_row3(_vbcast(A, pk + 4 * ai), v0, v1, v2, c40, c41, c42)
            blk = ((c00, c01, c02), (c10, c11, c12), (c20, c21, c22), (c30, c31, c32), (c40, c41, c42))
            for r in range(5):
                t = _vzero(x)                           # (a row's squares apart: no chain through the block)
                for v in range(3):
                    p = pc + r * N + q + v * LANES
                    xv = _vload(x, p)
                    av = au if uniform else _vload(alpha, p)
                    rv = _vload(ridge, p) if ridge_on else xv
                    wv = _vload(vel, p) if momentum else xv
                    wn, xn = _step_math(blk[r][v], xv, av, rv, wv, ib, ma, mg, mu, alpha_on, ridge_on, momentum)
                    if momentum:
                        _vstore(vel, p, wn)
                    _vstore(x, p, xn)
                    t = _vfma(xn, xn, t)
                s0 = _vadd(s0, t)
        q1 = n3
        if WIDE and N - n3 >= 2 * LANES:                # two whole vectors left: 5 rows × 2
            q1 = n3 + 2 * LANES
            d00 = _vzero(x)
            d01, d10, d11, d20, d21, d30, d31, d40, d41 = d00, d00, d00, d00, d00, d00, d00, d00, d00
            for k in range(K):
                pb = b0 + (rows[row0 + k] if gather else k) * sb + n3
                v0 = _vload(B, pb)
                v1 = _vload(B, pb + LANES)
                pk = pa + k * ak
                d00, d01 = _fma_row2(_vbcast(A, pk), v0, v1, d00, d01)
                d10, d11 = _fma_row2(_vbcast(A, pk + ai), v0, v1, d10, d11)
                d20, d21 = _fma_row2(_vbcast(A, pk + 2 * ai), v0, v1, d20, d21)
                d30, d31 = _fma_row2(_vbcast(A, pk + 3 * ai), v0, v1, d30, d31)
                d40, d41 = _fma_row2(_vbcast(A, pk + 4 * ai), v0, v1, d40, d41)
            blk2 = ((d00, d01), (d10, d11), (d20, d21), (d30, d31), (d40, d41))
            for r in range(5):
                t = _vzero(x)
                for v in range(2):
                    p = pc + r * N + n3 + v * LANES
                    xv = _vload(x, p)
                    av = au if uniform else _vload(alpha, p)
                    rv = _vload(ridge, p) if ridge_on else xv
                    wv = _vload(vel, p) if momentum else xv
                    wn, xn = _step_math(blk2[r][v], xv, av, rv, wv, ib, ma, mg, mu, alpha_on, ridge_on, momentum)
                    if momentum:
                        _vstore(vel, p, wn)
                    _vstore(x, p, xn)
                    t = _vfma(xn, xn, t)
                s0 = _vadd(s0, t)
        for q in range(q1, N, LANES):
            nq = N - q
            c0_ = _vzero(x)
            c1_, c2_, c3_, c4_ = c0_, c0_, c0_, c0_
            for k in range(K):
                v = _vload_n(B, b0 + (rows[row0 + k] if gather else k) * sb + q, nq)
                pk = pa + k * ak
                c0_ = _vfma(_vbcast(A, pk), v, c0_)
                c1_ = _vfma(_vbcast(A, pk + ai), v, c1_)
                c2_ = _vfma(_vbcast(A, pk + 2 * ai), v, c2_)
                c3_ = _vfma(_vbcast(A, pk + 3 * ai), v, c3_)
                c4_ = _vfma(_vbcast(A, pk + 4 * ai), v, c4_)
            blk1 = (c0_, c1_, c2_, c3_, c4_)
            for r in range(5):
                p = pc + r * N + q
                xv = _vload_n(x, p, nq)
                av = au if uniform else _vload_n(alpha, p, nq)
                rv = _vload_n(ridge, p, nq) if ridge_on else xv
                wv = _vload_n(vel, p, nq) if momentum else xv
                wn, xn = _step_math(blk1[r], xv, av, rv, wv, ib, ma, mg, mu, alpha_on, ridge_on, momentum)
                if momentum:
                    _vstore_n(vel, p, wn, nq)
                _vstore_n(x, p, xn, nq)
                s1 = _vfma(xn, xn, s1)                  # (lanes past nq: x's loads were zero there)
    return _vsum(_vadd(s0, s1))


@njit(cache=True, nogil=True)
def _gemm_nn_step5(x, xo, A, a0, ai, ak, B, b0, sb, M, K, N, rows, row0, gather, alpha, ridge, vel, sc, fl):
    """``_gemm_nn_step5_as`` with fl = (uniform, alpha_on, ridge_on, momentum): the two common cases, a uniform
    α without momentum, with the teacher's ridge term and without, get copies whose flags are constants
    (the step's tests per vector cost as much as the step); the others test them. The copies are inlined, not
    called: a call would pass a0, ai and b0 as values, not the constants they are here (W3 3% slower)."""
    uniform, alpha_on, ridge_on, momentum = fl
    if uniform and alpha_on and not momentum:
        if ridge_on:
            return _gemm_nn_step5_as(x, xo, A, a0, ai, ak, B, b0, sb, M, K, N, rows, row0, gather, alpha, ridge, vel,
                                     sc, True, True, True, False)
        return _gemm_nn_step5_as(x, xo, A, a0, ai, ak, B, b0, sb, M, K, N, rows, row0, gather, alpha, ridge, vel,
                                 sc, True, True, False, False)
    return _gemm_nn_step5_as(x, xo, A, a0, ai, ak, B, b0, sb, M, K, N, rows, row0, gather, alpha, ridge, vel, sc,
                             uniform, alpha_on, ridge_on, momentum)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _backward_step(x, dims, offs, A, idx, j0, H, hoff, D, Dn, g, nb, zero, act, boffs, inv_b, alpha, alpha_u,
                   uniform, ridge, a, ridge_on, gam, mom, vel):
    """The whole step from the minibatch's output residuals D (one block of samples): back-propagation as
    ``_backward_batch``, but each layer's gradient overwrites its block of g and steps that block of x
    at once (``_step_range``), while it is in cache; δ goes through W_k before W_k steps. Returns ‖x_new‖²."""
    L = dims.shape[0] - 1
    hw = H.shape[1]
    cur = D
    nxt = Dn
    nx = zero
    for k in range(L - 1, -1, -1):
        rows, cols = dims[k + 1], dims[k]
        hi = hoff[k]
        if k > 0:
            _gemm_nn(nxt, 0, nxt.shape[1], cur, 0, cur.shape[1], 1, x, offs[k], cols, nb, rows, cols, False, idx, j0,
                     False)
            if act != 0:
                for j in range(nb):
                    for c in range(cols):
                        nxt[j, c] *= _activation_d1(act, H[j, hi + c])
        if boffs.shape[0] > 0:
            # the bias steps on Σ_j δ_j, LANES rows at a time (sample order kept), as ``_step_range`` would; its
            # few vectors test the flags (a call would cost more)
            cw = cur.shape[1]
            for r in range(0, rows, LANES):
                nr = rows - r
                s = _vzero(g)
                for j in range(nb):
                    s = _vadd(s, _vload_n(cur, j * cw + r, nr))
                p = boffs[k] + r
                xv = _vload_n(x, p, nr)
                av = _vsplat(alpha_u) if uniform else _vload_n(alpha, p, nr)
                rv = _vload_n(ridge, p, nr) if ridge_on else xv
                wv = _vload_n(vel, p, nr) if mom != 0 else xv
                wn, xn = _step_math(s, xv, av, rv, wv, _vsplat(inv_b), _vsplat(-a), _vsplat(-gam), _vsplat(mom),
                                    not (uniform and alpha_u == 0), ridge_on, mom != 0)
                if mom != 0:
                    _vstore_n(vel, p, wn, nr)
                _vstore_n(x, p, xn, nr)
                nx += _vsum(_vmul(xn, xn))
        if rows % 5 == 0 and rows % 8 != 0:            # (ten classes) the gradient never stored
            fl = (uniform, not (uniform and alpha_u == 0), ridge_on, mom != 0)
            sc = (inv_b, alpha_u, a, gam, mom)
            if k == 0:
                nx += _gemm_nn_step5(x, offs[k], cur, 0, 1, cur.shape[1], A, 0, cols, rows, nb, cols, idx, j0, True,
                                     alpha, ridge, vel, sc, fl)
            else:
                nx += _gemm_nn_step5(x, offs[k], cur, 0, 1, cur.shape[1], H, hi, hw, rows, nb, cols, idx, j0, False,
                                     alpha, ridge, vel, sc, fl)
        else:
            if k == 0:
                _gemm_nn(g, offs[k], cols, cur, 0, 1, cur.shape[1], A, 0, cols, rows, nb, cols, False, idx, j0, True)
            else:
                _gemm_nn(g, offs[k], cols, cur, 0, 1, cur.shape[1], H, hi, hw, rows, nb, cols, False, idx, j0, False)
            nx += _step_range(x, g, offs[k], offs[k] + rows * cols, inv_b, alpha, alpha_u, uniform, ridge, a,
                              ridge_on, gam, mom, vel)
        cur, nxt = nxt, cur
    return nx


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


@njit(cache=True, nogil=True)
def _all_equal_at(v, at, value):
    """Whether v[at[p]] == value for every p. A flag set in a loop (``flag = True`` ... ``flag = False``)
    would be typed first as a literal, and every kernel it is passed to compiled once more for that
    literal (measured: a third of the layered kernel's compile time); a returned bool is typed bool."""
    for p in range(at.shape[0]):
        if v[at[p]] != value:
            return False
    return True


@njit(cache=True, nogil=True)
def _any_nonzero(v, n):
    """Whether v[:n] has an entry other than 0 (a returned bool: see ``_all_equal_at``)."""
    for p in range(n):
        if v[p] != 0:
            return True
    return False


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _layered_traj_one(j0, A, Y, rt, Gt, ridge, dims, offs, code, alpha, gam, inv_bs, inv_n, x0, acoef,
                      ccoef, use_teacher, snapshot, period, snap_start, nfw, rec_steps, steps, stream_keys, b, scode,
                      K, mom, tau, Qt, act, boffs, keep, limit, zero, saved, div, xfin):
    """Body of ``layered_traj`` for one trajectory (serial, nogil; the engine runs ranges on threads)."""
    n = A.shape[0]
    dim = x0.shape[0]
    L = dims.shape[0] - 1
    d_in, d_out = dims[0], dims[L]
    T = stream_keys.shape[0]
    R = rec_steps.shape[0]
    hoff_o = np.zeros(L + 2, dtype=np.int64)
    qoff_o = np.zeros(L + 2, dtype=np.int64)
    wmax = 0
    for k in range(L + 1):
        hoff_o[k + 1] = hoff_o[k] + (dims[k] + LANES - 1) // LANES * LANES   # rows of H start vectors
        qoff_o[k + 1] = qoff_o[k] + dims[k] * d_in
        if dims[k] > wmax:
            wmax = dims[k]
    E = acoef.shape[1]
    # the iterate and its companions, and the minibatch scratch below, start on cache lines
    x_o = _aligned_empty(1, dim, x0)[0]
    g_o = _aligned_empty(1, dim, x0)[0]
    y_o = _aligned_empty(1, dim, x0)[0]
    gy_o = _aligned_empty(1, dim, x0)[0]
    vel_o = _aligned_empty(1, dim, x0)[0]
    for p in range(dim):
        x_o[p] = x0[p]
        y_o[p] = x0[p]
        gy_o[p] = zero
        vel_o[p] = zero
    perm_o = np.empty((1, n if scode != 0 else 0), dtype=np.int64)
    perm_epoch_o = np.full(1, -1, dtype=np.int64)
    # minibatch scratch for at most SAMPLE_BLOCK samples at a time (residual widths dims[1:])
    wout = 0
    for k in range(1, L + 1):
        wout = max(wout, dims[k])
    # one layer whose bias is the problem's intercept column (the engine's ``fold``): Gt's last column is the
    # bias's teacher term, and z = Wa + b is still the one-layer linear map
    folded = L == 1 and boffs.shape[0] > 0 and Gt.shape[1] == d_in + 1
    linear = act == 0 and (boffs.shape[0] == 0 or folded)   # the end-to-end map W_L⋯W_1 exists
    full_pass = snapshot or (use_teacher and not linear)  # full-data back-propagations (MLP's corrected KD)
    rows_x = min(b, SAMPLE_BLOCK)
    rows_y = SAMPLE_BLOCK if full_pass else 0
    Hx_o = _aligned_empty(rows_x, hoff_o[L + 1], x0)
    HTx_o = _forward_scratch(rows_x, Hx_o)
    D_o = _aligned_empty(rows_x, (wout + LANES - 1) // LANES * LANES, x0)
    Hy_o = _aligned_empty(rows_y, hoff_o[L + 1], x0)
    HTy_o = _forward_scratch(rows_y, Hy_o)
    Dy_o = _aligned_empty(rows_y, wout, x0)
    Dn_o = _aligned_empty(max(rows_x, rows_y) if L > 1 else 0, (wout + LANES - 1) // LANES * LANES, x0)
    rows_all_o = np.arange(n if full_pass else 0)            # full-data terms visit every sample
    qbuf_o = np.empty(qoff_o[L + 1], dtype=x0.dtype)
    vbuf_o = np.empty(2 * wmax * d_in, dtype=x0.dtype)
    Gy_o = np.empty((d_out, d_in), dtype=x0.dtype)
    idx_o = np.empty(b, dtype=np.int64)
    taken_o = np.zeros(n, dtype=np.bool_)
    # the step loop works on borrowed views (``_borrow``; the arguments' owners are the caller's, the
    # allocations' the *_o kept until the end): its calls then cost no atomic reference counts
    x, g, y, gy, vel = _borrow(x_o), _borrow(g_o), _borrow(y_o), _borrow(gy_o), _borrow(vel_o)
    Hx, HTx, D, Hy, HTy = _borrow(Hx_o), _borrow(HTx_o), _borrow(D_o), _borrow(Hy_o), _borrow(HTy_o)
    Dy, Dn, Gy, qbuf, vbuf = _borrow(Dy_o), _borrow(Dn_o), _borrow(Gy_o), _borrow(qbuf_o), _borrow(vbuf_o)
    hoff, qoff, rows_all, idx, taken = _borrow(hoff_o), _borrow(qoff_o), _borrow(rows_all_o), _borrow(idx_o), \
        _borrow(taken_o)
    perm, perm_epoch = _borrow(perm_o), _borrow(perm_epoch_o)
    A, Y, rt, Gt, ridge, alpha = _borrow(A), _borrow(Y), _borrow(rt), _borrow(Gt), _borrow(ridge), _borrow(alpha)
    dims, offs, boffs, nfw, Qt = _borrow(dims), _borrow(offs), _borrow(boffs), _borrow(nfw), _borrow(Qt)
    # α one value on the problem's coordinates (x's padding is 0, so α·x is 0 there too); ridge not all 0
    alpha_u = alpha[keep[0]] if keep.shape[0] > 0 else zero
    uniform = _all_equal_at(alpha, keep, alpha_u)
    ridge_on = _any_nonzero(ridge, dim)
    # ten-class softmax outputs (LANES < d_out <= LANES + 2) on whole vectors of inputs: the output layer and
    # the residuals in one pass (the tempered KD loss needs the logits stored: not then)
    fused_out = (code == 1 and LANES < d_out <= LANES + 2 and dims[L - 1] % LANES == 0
                 and not (use_teacher and tau != 1))
    bout = boffs[L - 1] if boffs.shape[0] > 0 else -1
    nx = zero
    key0 = stream_keys[j0]
    rec = np.int64(0)                   # not the literal 0: callees compile once, for int64
    dead = False
    for t in range(steps + 1):
        if rec < R and rec_steps[rec] == t:
            for p in range(keep.shape[0]):
                saved[j0, rec, p] = x[keep[p]]
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
                    _forward(y, dims, offs, A, rows_all, s0, nb, Hy, hoff, zero, act, boffs, HTy, L)
                    _residuals(code, Hy, hoff[L], d_out, Y, rows_all, s0, nb, Dy, zero)
                    if nfw.shape[0] > 0:                 # full gradient weights n·w_i (batch means)
                        for jj in range(nb):
                            for o in range(d_out):
                                Dy[jj, o] *= nfw[s0 + jj]
                    _backward_batch(y, dims, offs, A, rows_all, s0, Hy, hoff, Dy, Dn, nb, gy, inv_n, zero, act, boffs)
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
        # one block of samples and g = ∇f_B(x) − a·T_B: x steps block by block in the backward pass
        fused = bt <= SAMPLE_BLOCK and not snapshot and not (use_teacher and c != 0)
        if not fused:
            for p in range(dim):
                g[p] = zero
        # the minibatch as small matrices, layer by layer (activations Hx, residuals D),
        # SAMPLE_BLOCK samples at a time
        for jb in range(0, bt, SAMPLE_BLOCK):
            nb = min(SAMPLE_BLOCK, bt - jb)
            if fused_out:
                if L > 1:
                    _forward(x, dims, offs, A, idx, jb, nb, Hx, hoff, zero, act, boffs, HTx, L - 1)
                    _softmax_layer_residuals(x, offs[L - 1], dims[L - 1], Hx, hoff[L - 1], hoff[L + 1], False, bout,
                                             d_out, Y, idx, jb, nb, D, a, rt, use_teacher, Hx, hoff[L])
                else:
                    _softmax_layer_residuals(x, offs[0], d_in, A, 0, d_in, True, bout, d_out, Y, idx, jb, nb, D, a,
                                             rt, use_teacher, Hx, hoff[L])
            else:
                _forward(x, dims, offs, A, idx, jb, nb, Hx, hoff, zero, act, boffs, HTx, L)
                _output_residuals(code, Hx, hoff[L], d_out, Y, idx, jb, nb, D, zero, a, rt,
                                  use_teacher and tau == 1)
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
            if snapshot:
                _forward(y, dims, offs, A, idx, jb, nb, Hy, hoff, zero, act, boffs, HTy, L)
                _residuals(code, Hy, hoff[L], d_out, Y, idx, jb, nb, Dy, zero)
                if L == 1:
                    for jj in range(nb):
                        for o in range(d_out):
                            D[jj, o] -= a * Dy[jj, o]
                else:
                    _backward_batch(y, dims, offs, A, idx, jb, Hy, hoff, Dy, Dn, nb, g, -a, zero, act, boffs)
            if fused:
                nx = _backward_step(x, dims, offs, A, idx, jb, Hx, hoff, D, Dn, g, nb, zero, act, boffs, inv_b, alpha,
                                    alpha_u, uniform, ridge, a, ridge_on, gam, mom, vel)
            else:
                _backward_batch(x, dims, offs, A, idx, jb, Hx, hoff, D, Dn, nb, g, gam / gam, zero, act, boffs)
        if not fused:                                   # g complete: the step
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
                            if folded:
                                g[boffs[0] + o] += c * Gt[o, d_in]
                    elif not linear:                         # c·(1/n)Σ_i J_i(x)ᵀ rθ_i, back-propagated at x
                        for s0 in range(0, n, SAMPLE_BLOCK):
                            nb = min(SAMPLE_BLOCK, n - s0)
                            _forward(x, dims, offs, A, rows_all, s0, nb, Hy, hoff, zero, act, boffs, HTy, L)
                            for jj in range(nb):
                                wj = nfw[s0 + jj] if nfw.shape[0] > 0 else 1.0
                                for o in range(d_out):
                                    Dy[jj, o] = rt[s0 + jj, o] * wj
                            _backward_batch(x, dims, offs, A, rows_all, s0, Hy, hoff, Dy, Dn, nb, g, c * inv_n, zero,
                                            act, boffs)
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
    for r in range(rec, R):                            # the records after a divergence
        for p in range(keep.shape[0]):
            saved[j0, r, p] = np.nan
    for p in range(keep.shape[0]):
        xfin[j0, p] = np.nan if dead else x[keep[p]]
    _alive((x_o, g_o, y_o, gy_o, vel_o, Hx_o, HTx_o, D_o, Hy_o, HTy_o, Dy_o, Dn_o, Gy_o, qbuf_o, vbuf_o, hoff_o,
            qoff_o, rows_all_o, idx_o, taken_o, perm_o, perm_epoch_o))


@njit(cache=True, nogil=True)
def layered_traj(lo, hi, A, Y, rt, Gt, ridge, dims, offs, code, alpha, gam, inv_bs, inv_n, x0, acoef, ccoef,
                 use_teacher, snapshot, period, snap_start, nfw, rec_steps, steps, stream_keys, b, scode, K, mom,
                 tau, Qt, act, boffs, keep, limit, zero, saved, div, xfin):
    """Trajectories lo .. hi−1, one after the other; saves the iterate at every record step.

    ``A`` (n, d_in) inputs, ``Y`` (n, d_out) targets (one-hot for softmax), ``rt``
    (n, d_out) teacher residuals, ``Gt`` (d_out, d_in) their mean map, ``ridge``
    (dim,) the teacher's ridge term, ``alpha`` (dim,) the ridge α per coordinate; ``dims`` the layer widths (d_in, …, d_out) and
    ``offs`` the layer offsets in x. ``saved`` (T, R, dim) float64 receives x at the
    record steps while the trajectory is alive and NaN at those after a divergence. ``acoef``,
    ``ccoef`` (T, E) are the coefficients per epoch; minibatches follow sampling ``scode``
    with ``K`` steps per epoch (``kdsim.rng``), 1/b_t from ``inv_bs``; the step is heavy ball
    with momentum ``mom``; SVRG snapshots at step 0 and every ``period`` steps from ``snap_start``
    (its full gradient with per-sample weights n·w_i ``nfw`` when not empty).
    ``tau`` ≠ 1 (softmax): the teacher estimators take the literal tempered KD loss's residual with
    the teacher's tempered probabilities ``Qt`` (n, d_out) (``kernelspec.tempered_residual``).
    MLPs: hidden activation ``act`` (``kernelspec.ACTIVATION_CODES``) and bias offsets ``boffs`` (empty:
    no biases); their teacher term is J_B(x)ᵀ r_B(θ) and corrected KD's full term c·(1/n)Σ_i J_i(x)ᵀ r_i(θ)
    a full-data back-propagation at x per step (no end-to-end map); SVRG's ∇f(y) likewise.
    ``keep`` (dim,): the coordinate of x holding each coordinate of the problem's parameters, which
    ``saved`` and ``xfin`` receive; x may hold more (the runner pads d_in with zero inputs, whose
    weights stay exactly 0: ``x0``, ``alpha``, ``ridge``, ``Gt`` and the offsets are in x's layout).
    """
    for j0 in range(lo, hi):
        _layered_traj_one(j0, A, Y, rt, Gt, ridge, dims, offs, code, alpha, gam, inv_bs, inv_n, x0, acoef,
                          ccoef, use_teacher, snapshot, period, snap_start, nfw, rec_steps, steps, stream_keys, b,
                          scode, K, mom, tau, Qt, act, boffs, keep, limit, zero, saved, div, xfin)


def _forget_stale_cache():
    from .. import rng
    from . import _kernels_ls, _simd
    from ._numba_cache import forget_if_stale
    forget_if_stale(layered_traj.py_func, [_kernels_ls.__file__, rng.__file__, _activations.__file__, _simd.__file__])


_forget_stale_cache()
