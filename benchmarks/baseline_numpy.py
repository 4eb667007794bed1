"""Baseline (a): plain numpy, vectorised across trajectories, one step for all of them at once.

Every (λ, seed) trajectory is a row of X (L, S, dim); a step gathers its minibatch
rows of the data, computes the control-variate gradient g = ∇f_B(x) − a·T_B + c·T
(see ``benchmarks.common``) with ``einsum``/``matmul`` and updates all rows. The
minibatches are kdsim's: ``kdsim.rng.minibatch_indices`` for every step, computed
inside the timed loop (kdsim's kernels draw theirs inside too). Under common random
numbers each seed's minibatch rows are gathered once and broadcast over the λ grid
(the only use the baseline makes of common random numbers; no affine-in-λ form).
Iterate arithmetic in float64 or float32; records in float64 from the iterate.
MLPs (``kdsim.MLP``): a forward pass of the minibatch layer by layer (biases, hidden
activation), the combined output residual r_i(x) − a·rt_i, and back-propagation through
the student's layers (σ'(z) from the saved activations; ReLU: 1 where h > 0); records
from a forward pass of every sample.

``run(problem, plan, dtype)`` returns the arrays of kdsim's engines (``dist2_opt``,
``subopt``, ``dist2_teacher`` (L, S, R), ``diverged_step`` (L, S), ``x_final``
(L, S, dim)) plus ``timing``: ``total_s``, ``indices_s`` (minibatch generation),
``records_s`` and ``steps_s`` (the rest).
"""
from __future__ import annotations

import time

import numpy as np

from .common import RECORDS, prepare, minibatches

#: rows of X whose softmax/deep-linear loss over all samples is evaluated at once
_RECORD_BLOCK = 128
#: the same for MLPs (a row's hidden activations on all samples are n·h numbers)
_MLP_RECORD_BLOCK = 16


def activation(kind, Z):
    """σ(Z) of an MLP's hidden layer: "relu", "sigmoid" (the overflow-free form), "tanh" or "identity"."""
    if kind == "relu":
        return np.maximum(Z, 0.0)
    if kind == "sigmoid":
        E = np.exp(-np.abs(Z))
        return np.where(Z >= 0, 1.0 / (1.0 + E), E / (1.0 + E))
    if kind == "tanh":
        return np.tanh(Z)
    return Z


def activation_d1(kind, H):
    """σ'(z) from the activation H = σ(z) (ReLU: 1 where h > 0, else 0)."""
    if kind == "relu":
        return (H > 0).astype(H.dtype)
    if kind == "sigmoid":
        return H * (1.0 - H)
    if kind == "tanh":
        return 1.0 - H * H
    return np.ones_like(H)


class _Model:
    """One family's step and records on X (L, S, dim) in the working dtype."""

    def __init__(self, spec):
        self.spec = s = spec
        wd = np.dtype(spec.dtype)
        self.wd = wd
        c = np.ascontiguousarray
        self.A = c(spec.A, dtype=wd)
        self.Y = c(spec.targets, dtype=wd)
        self.rt = c(spec.rt, dtype=wd)
        self.Gt = c(spec.Gt, dtype=wd)
        self.ridge = c(spec.ridge, dtype=wd)
        self.gam = wd.type(spec.step)
        self.alpha = wd.type(spec.l2)
        self.inv_b = wd.type(1.0 / spec.batch)
        self.a = spec.a.astype(wd)[:, None, None]           # (L, 1, 1)
        self.c = spec.c.astype(wd)[:, None, None]
        self.has_teacher = bool(np.any(spec.rt != 0.0)) and bool(np.any(spec.a != 0.0))
        self.has_full = bool(np.any(spec.c != 0.0))
        self.has_ridge = bool(np.any(spec.ridge != 0.0))
        self.offs = spec.offsets
        self.tfull = c((spec.Gt.ravel() + spec.ridge), dtype=wd) if spec.depth == 1 else None

    # -- step ------------------------------------------------------------------
    def layers(self, X):
        s = self.spec
        return [X[..., self.offs[k]:self.offs[k + 1]].reshape(X.shape[:-1] + (s.layers[k + 1], s.layers[k]))
                for k in range(s.depth)]

    def residual(self, Z, idx):
        """(1/b)·(∂g/∂z − a·rt) of every sample: (L, S, b, d_out)."""
        if self.spec.loss == "squared":
            R = Z - self.Y[idx]
        else:
            E = np.exp(Z - Z.max(axis=-1, keepdims=True))
            R = E / E.sum(axis=-1, keepdims=True) - self.Y[idx]
        if self.has_teacher:
            R = R - self.a[..., None] * self.rt[idx]
        return R * self.inv_b

    def step(self, X, idx):
        """X − γ g for every trajectory; idx (S, b) (broadcast over λ) or (L, S, b)."""
        s = self.spec
        Ab = self.A[idx]                                      # (S, b, d_in) or (L, S, b, d_in)
        if s.kind == "least_squares":
            z = np.einsum("...bd,...d->...b", Ab, X)[..., None]       # (L, S, b, 1)
            R = self.residual(z, idx)[..., 0]
            G = np.einsum("...bd,...b->...d", Ab, R)
        elif s.kind == "mlp":
            G = self.mlp_grad(X, Ab, idx)
        elif s.depth == 1:                                    # softmax regression
            W = X.reshape(X.shape[:-1] + (s.layers[1], s.layers[0]))
            Z = np.matmul(Ab, np.swapaxes(W, -1, -2))                 # (L, S, b, K)
            R = self.residual(Z, idx)
            G = np.matmul(np.swapaxes(R, -1, -2), Ab).reshape(X.shape)
        else:
            G = self.deep_grad(X, Ab, idx)
        if self.has_full and s.depth == 1:
            G = G + self.c * self.tfull
        if self.alpha != 0:
            G = G + self.alpha * X
        if self.has_ridge:
            G = G + ((-self.a) if s.depth == 1 else (self.c - self.a)) * self.ridge
        return X - self.gam * G

    def deep_grad(self, X, Ab, idx):
        """J(x)ᵀ[(1/b) Σ_i (r_i − a·rt_i) a_iᵀ + c·Gt] by back-propagation, (L, S, dim)."""
        s = self.spec
        Ws = self.layers(X)
        hs = [Ab]
        for W in Ws:
            hs.append(np.matmul(hs[-1], np.swapaxes(W, -1, -2)))
        delta = self.residual(hs[-1], idx)                    # (L, S, b, d_out)
        blocks = [None] * s.depth
        for k in range(s.depth - 1, -1, -1):
            blocks[k] = np.matmul(np.swapaxes(delta, -1, -2), hs[k])
            if k > 0:
                delta = np.matmul(delta, Ws[k])
        if self.has_full:
            # c·J(x)ᵀ Gt: block k is (W_L⋯W_{k+1})ᵀ (c Gt) (W_{k−1}⋯W_1)ᵀ
            Q = [None]
            for k in range(s.depth - 1):
                Q.append(Ws[k] if Q[-1] is None else np.matmul(Ws[k], Q[-1]))
            V = self.c[..., None] * self.Gt                    # (L, 1, d_out, d_in)
            for k in range(s.depth - 1, -1, -1):
                blocks[k] = blocks[k] + (V if Q[k] is None else np.matmul(V, np.swapaxes(Q[k], -1, -2)))
                if k > 0:
                    V = np.matmul(np.swapaxes(Ws[k], -1, -2), V)
        lead = X.shape[:-1]
        return np.concatenate([np.broadcast_to(B, lead + B.shape[-2:]).reshape(lead + (-1,)) for B in blocks],
                              axis=-1)

    def mlp_layers(self, X):
        """(Ws, bs) of rows X: Ws[k] (…, d_{k+1}, d_k), bs[k] (…, d_{k+1}) or None (views of X)."""
        s = self.spec
        Ws = self.layers(X)
        if not s.biases:
            return Ws, [None] * s.depth
        bo = s.bias_offsets
        return Ws, [X[..., bo[k]:bo[k + 1]] for k in range(s.depth)]

    def mlp_grad(self, X, Ab, idx):
        """(1/b) Σ_i J_i(x)ᵀ(r_i(x) − a·rt_i) of an MLP by back-propagation, (L, S, dim)."""
        s = self.spec
        Ws, bs = self.mlp_layers(X)
        hs = [Ab]
        for k in range(s.depth):
            Z = np.matmul(hs[-1], np.swapaxes(Ws[k], -1, -2))
            if bs[k] is not None:
                Z = Z + bs[k][..., None, :]
            hs.append(activation(s.activation, Z) if k < s.depth - 1 else Z)
        delta = self.residual(hs[-1], idx)                    # (L, S, b, d_out)
        blocks, bias_blocks = [None] * s.depth, [None] * s.depth
        for k in range(s.depth - 1, -1, -1):
            blocks[k] = np.matmul(np.swapaxes(delta, -1, -2), hs[k])
            bias_blocks[k] = delta.sum(axis=-2)
            if k > 0:
                delta = np.matmul(delta, Ws[k]) * activation_d1(s.activation, hs[k])
        lead = X.shape[:-1]
        parts = [np.broadcast_to(B, lead + B.shape[-2:]).reshape(lead + (-1,)) for B in blocks]
        if s.biases:
            parts += [np.broadcast_to(B, lead + B.shape[-1:]) for B in bias_blocks]
        return np.concatenate(parts, axis=-1)

    def mlp_outputs(self, X):
        """The outputs z_i of rows X (T, dim) float64 on every sample: (T, n, d_out)."""
        s = self.spec
        Ws, bs = self.mlp_layers(X)
        H = s.A
        for k in range(s.depth):
            Z = np.matmul(H, np.swapaxes(Ws[k], -1, -2))
            if bs[k] is not None:
                Z = Z + bs[k][:, None, :]
            H = activation(s.activation, Z) if k < s.depth - 1 else Z
        return H

    def mlp_records(self, X):
        """dist2_opt, subopt, dist2_teacher of MLP rows X (T, dim) float64, _MLP_RECORD_BLOCK rows at a time."""
        s = self.spec
        out = [np.empty(X.shape[0]) for _ in range(3)]
        for r0 in range(0, X.shape[0], _MLP_RECORD_BLOCK):
            Xb = X[r0:r0 + _MLP_RECORD_BLOCK]
            Z = self.mlp_outputs(Xb)                                    # (rows, n, d_out)
            C = Z.reshape(Xb.shape[0], -1) / np.sqrt(s.n) if s.function_space else Xb
            E = C - s.xstar_c
            W = C - s.theta_c
            if s.loss == "squared":
                R = Z - s.targets
                loss = 0.5 * np.einsum("tnk,tnk->t", R, R) / s.n
            else:
                zmax = Z.max(axis=2, keepdims=True)
                lse = zmax[..., 0] + np.log(np.exp(Z - zmax).sum(axis=2))
                loss = (lse.sum(axis=1) - np.einsum("tnk,nk->t", Z, s.targets)) / s.n
            out[0][r0:r0 + len(Xb)] = np.einsum("td,td->t", E, E)
            out[1][r0:r0 + len(Xb)] = loss + 0.5 * s.l2 * np.einsum("td,td->t", Xb, Xb) - s.f_star
            out[2][r0:r0 + len(Xb)] = np.einsum("td,td->t", W, W)
        return tuple(out)

    # -- records (float64) -------------------------------------------------------
    def canonical(self, X):
        s = self.spec
        if s.kind == "least_squares":
            return X
        if s.kind == "softmax":
            W = X.reshape(X.shape[0], s.layers[1], s.layers[0])
            return (W - W.mean(axis=1, keepdims=True)).reshape(X.shape)
        M = None
        for W in self.layers(X):
            M = W if M is None else np.matmul(W, M)
        return M.reshape(X.shape[0], -1)

    def records(self, X):
        """dist2_opt, subopt, dist2_teacher of the rows of X (T, dim) float64."""
        s = self.spec
        if s.kind == "mlp":
            return self.mlp_records(X)
        C = self.canonical(X)
        E = C - s.xstar_c
        d1 = np.einsum("td,td->t", E, E)
        W = C - s.theta_c
        d3 = np.einsum("td,td->t", W, W)
        if s.kind == "least_squares":
            FE = E @ s.F.T
            sub = 0.5 * (np.einsum("tm,tm->t", FE, FE) + s.l2 * d1)
            return d1, sub, d3
        d_out, d_in = s.layers[-1], s.layers[0]
        sub = np.empty(X.shape[0])
        M = C if s.kind == "deep_linear" else X
        for r0 in range(0, X.shape[0], _RECORD_BLOCK):
            Mb = M[r0:r0 + _RECORD_BLOCK].reshape(-1, d_in)              # (rows·d_out, d_in)
            Z = (Mb @ s.A.T).reshape(-1, d_out, s.n)                     # (rows, d_out, n)
            if s.loss == "squared":
                R = Z - s.targets.T
                loss = 0.5 * np.einsum("tkn,tkn->t", R, R) / s.n
            else:
                zmax = Z.max(axis=1, keepdims=True)
                lse = zmax[:, 0] + np.log(np.exp(Z - zmax).sum(axis=1))
                loss = (lse.sum(axis=1) - np.einsum("tkn,nk->t", Z, s.targets)) / s.n
            Xb = X[r0:r0 + _RECORD_BLOCK]
            sub[r0:r0 + _RECORD_BLOCK] = loss + 0.5 * s.l2 * np.einsum("td,td->t", Xb, Xb) - s.f_star
        return d1, sub, d3


def run(problem, plan, dtype="float64"):
    """Run a validated plan (``kdsim.simulate.make_plan``); the arrays of kdsim's engines + timing."""
    t_start = time.perf_counter()
    spec = prepare(problem, plan, dtype)
    model = _Model(spec)
    L, S, R, dim = spec.n_lams, spec.n_seeds, len(spec.record_steps), spec.dim
    X = np.broadcast_to(spec.x0.astype(model.wd), (L, S, dim)).copy()
    div = np.full((L, S), -1, dtype=np.int64)
    out = {name: np.full((L, S, R), np.nan) for name in RECORDS}
    limit = spec.limit
    t_idx = t_rec = 0.0
    rec = 0
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        for t in range(spec.steps + 1):
            if rec < R and spec.record_steps[rec] == t:
                t0 = time.perf_counter()
                vals = model.records(X.reshape(L * S, dim).astype(np.float64))
                for name, v in zip(RECORDS, vals):
                    out[name][:, :, rec] = v.reshape(L, S)
                t_rec += time.perf_counter() - t0
                rec += 1
            if t == spec.steps:
                break
            t0 = time.perf_counter()
            idx = minibatches(spec, t)
            t_idx += time.perf_counter() - t0
            X = model.step(X, idx)
            nx = np.einsum("lsd,lsd->ls", X, X)
            bad = ~(nx <= limit)
            if bad.any():
                new = bad & (div < 0)
                div[new] = t + 1
                X[bad] = np.nan
    for name in RECORDS:           # records at or after the divergence step are NaN, as in kdsim
        after = (div[:, :, None] >= 0) & (spec.record_steps[None, None, :] >= div[:, :, None])
        out[name][after] = np.nan
    total = time.perf_counter() - t_start
    x_final = X.astype(np.float64)
    return {**out, "diverged_step": div, "x_final": x_final,
            "timing": {"total_s": total, "indices_s": t_idx, "records_s": t_rec,
                       "steps_s": total - t_idx - t_rec}}
