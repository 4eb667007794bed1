"""The array-module engine: every trajectory of a chunk advanced at once with array operations.

Written against an array module ``xp`` (numpy, or CuPy through ``cupy_gpu``), so the GPU
path's logic runs, and is tested, on the CPU. It reads the problem's ``KernelSpec`` and
follows the reference engine step for step (same index stream, same control-variate
direction, same divergence guard and records, docs/architecture.md).

The direction is one product with a combined output-space residual per minibatch:
g = J(x)ᵀ[(1/b) Σ_{i∈B} (r_i(x) − a·r^θ_i) a_iᵀ + c·∇g(Θ̄)] + αx + κ, with the teacher's
residuals r^θ_i from the spec (J(x) = I for one layer); SVRG back-propagates the
snapshot's residuals instead. Least squares under common random numbers runs the affine
form x_t(λ) = u_t + λ v_t (docs/theory.md §5.1): one (u, v) pair per seed serves every λ,
divergence is judged per λ from three dot products, and records are formed per λ from
e = (u − x*) + λv (no cancellation). A seed whose ‖u‖² or λ²‖v‖² leaves the range is
returned as unsafe and rerun per trajectory by the driver. Records are stored
record-major on the device and come back once per chunk.
"""
from __future__ import annotations

import time

import numpy as np

from .. import _validate as V
from .. import kernelspec as KS
from ..plan import RECORDS, guard_limit, resolve_dtype
from ..rng import FLOYD_COMPARE_MAX, EpochBatches
from .driver import Timer, affine_path

NAME = "array"
TAKES = "spec"
#: how least squares may run: "auto" (affine form where it applies), "affine", "trajectory"
PATHS = ("auto", "affine", "trajectory")
#: the affine guard trusts q(λ) > limit only when |q − limit| exceeds this fraction of its scale
AFFINE_DECISIVE = 1e-8


def _to_host(xp, arr):
    """A host numpy copy of a device array (numpy arrays pass through)."""
    return getattr(xp, "asnumpy", np.asarray)(arr)


def _rowdot(xp, a, b):
    """Σ over the last axis of a·b (einsum's fused path in numpy, a product and a sum elsewhere)."""
    if xp is np:
        return np.einsum("...d,...d->...", a, b)
    return (a * b).sum(axis=-1)


# ------------------------------------------------------------------ the engine
class _Engine:
    """Device-resident data of one run and the two chunk runners (affine, per trajectory)."""

    def __init__(self, spec, plan, xp, wd, path):
        self.spec, self.plan, self.xp, self.wd = spec, plan, xp, wd
        self.dtype = wd.name
        self.kind = spec.family
        est = plan.estimator
        self.est = est
        self.L, self.S, self.R = plan.n_lams, plan.n_seeds, plan.n_records
        self.n, self.dim, self.b = spec.n, spec.dim, plan.batch_size
        self.steps = plan.steps
        self.rec_steps = [int(t) for t in plan.record_steps]
        self.crn = plan.common_random_numbers
        self.limit = guard_limit(wd)
        self.alpha = float(spec.l2)
        self.gamma = float(plan.step)
        self.lams = np.asarray(plan.lams, dtype=np.float64)
        self.table = plan.coefficient_table                                       # (L, E, 2) per epoch
        self.epoch_steps = plan.steps_per_epoch
        self.momentum = float(plan.momentum)
        self.teacher = est.uses_teacher
        self.snapshot = est.snapshot
        self.deep = spec.depth > 1
        self.mlp = not spec.linear_layers                   # activations or biases: no end-to-end map
        affine_ok = affine_path(spec, plan, path)
        self.affine = affine_ok and (path == "affine" or (path == "auto" and (self.L > 1 or est.name == "sgd")))
        self.kernel = "affine" if self.affine else "trajectory"
        self.timing_extra = {"array_module": xp.__name__}
        self.timers = {"kernel": Timer()}
        self.floyd_taken = FLOYD_COMPARE_MAX < self.b < self.n

        # ---- problem data (host float64 → device, once): output-space residuals link(M a_i) − y_i
        self.link_kind = spec.link
        K, dfeat = spec.d_out, spec.d_in
        self.K, self.dfeat = K, dfeat
        A64 = spec.A
        ridge, rt = spec.teacher_ridge, spec.teacher_residuals
        dev = self._dev
        self.A = dev(A64, wd)
        self.Y = dev(spec.Y, wd)
        self.Rt = dev(rt, wd)
        self.tau = float(spec.temperature)
        self.nfw = None if plan.full_weights is None else dev(spec.n * plan.full_weights, wd)
        self.Qt = dev(spec.teacher_probs, wd) if spec.teacher_probs is not None else None
        self.x0 = dev(plan.x0, wd)
        self.alpha_w = None if spec.l2_mask is None else dev(spec.ridge_vector(), wd)   # α per coordinate
        self._ridge = ridge
        self._full_map = spec.teacher_map if (self.deep and self.teacher and est.corrected and not self.mlp) else None
        # an MLP's corrected KD adds c·Σ_i w_i J_i(x)ᵀ rθ_i, back-propagated at x through the full data
        weights = plan.full_weights if plan.full_weights is not None else np.full(spec.n, 1.0 / spec.n)
        self.rt_full = (dev(rt * weights[:, None], wd) if (self.mlp and self.teacher and est.corrected) else None)
        self._tfull = None if self.deep else spec.teacher_full
        self._epoch = None
        self.layer_shapes = spec.shapes
        self.layer_offsets = spec.offsets
        # records (float64)
        self.refs = spec.record_refs(xp)
        self.row_block = KS.rows_per_block(spec.record_row_bytes if self.mlp else 10 * spec.n * spec.d_out * 8)
        # (SVRG's full gradients)
        if self.affine:
            nv = 2 if self.teacher else 1
            lab = np.column_stack([spec.Y[:, 0], rt[:, 0]]) if self.teacher else spec.Y[:, :1]
            kap = np.zeros((nv, spec.dim))                                        # (κ_u, κ_v), κ_u = 0
            if self.teacher:
                kap[1] = spec.affine_shift(est.corrected)
            self.nv = nv
            self._lab, self._kap, self._scales = lab.T, kap, plan.lambda_scales   # (nv, n), (nv, dim), (E,)
            self.lam_col = dev(self.lams.reshape(self.L, 1), np.float64)

        # ---- memory
        w, f8 = wd.itemsize, 8
        L, R, n, dim = self.L, self.R, self.n, self.dim
        bb = n if self.b == n else self.b
        Lr = 1 if self.crn else L
        rec_out = L * (3 * R * f8 + f8 + dim * f8)                       # records, flags, x_final
        traj = (L * dim * (6 * w + 4 * f8)                                # state, step temporaries, record vectors
                + (Lr * bb * (dfeat + 2 * K) * w if self.b < n else 0)   # gathers
                + 4 * L * bb * K * w * (2 if self.snapshot else 1)       # logits, residuals
                + (2 * L * dim * w if self.snapshot else 0)              # snapshot and its κ
                + (Lr * n if self.floyd_taken else 0) + 3 * Lr * bb * f8 + rec_out
                + (2 * L * dim * w if self.momentum else 0)                # velocity and its copy
                + (2 * Lr * n * f8 if plan.sampling != "iid" else 0))     # the epoch's permutations
        if self.affine:
            nv = self.nv
            aff = (dim * nv * (6 * w + 4 * f8) + (bb * (dim + 2 * nv) * w if self.b < n else 0)
                   + 4 * bb * nv * w + 5 * L * dim * f8 + (n if self.floyd_taken else 0) + 3 * bb * f8
                   + rec_out + 9 * R * f8 + (2 * nv * dim * w if self.momentum else 0)
                   + (2 * n * f8 if plan.sampling != "iid" else 0))
            traj = max(traj, aff)
        if self.deep and not self.mlp:
            widest = max(max(r, c) for r, c in spec.shapes)
            traj += 6 * L * len(spec.shapes) * widest * widest * w * (2 if self.snapshot else 1)
        if self.mlp:                                                      # activations and deltas per layer
            widths = sum(spec.dims)
            traj += 4 * L * (bb * widths + 2 * dim) * w * (2 if self.snapshot else 1)
            traj += 3 * L * n * widths * w if self.rt_full is not None else 0
        if plan.keep_iterates:                                            # iterates at every record, and their copy
            traj += 2 * L * R * dim * f8
        self.bytes_per_seed = int(traj)
        self._saved = None
        self.fixed_bytes = int(A64.nbytes * (2 if wd != np.float64 else 1) + 3 * n * K * w
                               + (dim * dim * f8 if self.kind == "least_squares" else 0)
                               + KS.block_bytes(spec.record_row_bytes, L * self.S)        # records in row blocks
                               + (KS.block_bytes(10 * n * K * f8, L * self.S) if self.snapshot else 0))

    def _dev(self, arr, dtype):
        return self.xp.asarray(np.ascontiguousarray(np.asarray(arr, dtype=np.float64), dtype=dtype))

    # ------------------------------------------------------------ coefficients per epoch
    def _coefficients(self, t):
        """Set the device coefficients of step t's epoch (``Plan.coefficient_table``); once per epoch.

        ``a4`` (L, 1, 1, 1) = a; ``kappa`` (L, 1, dim) = −a·ridge + c·T (one layer) or (c − a)·ridge
        (deep: T = J(x)ᵀ∇g(Θ̄) + ridge depends on x, its map part c·∇g(Θ̄) = ``full_map_c`` joins
        the output-space gradient before the pull-back); SVRG's ``a3``, ``c3`` (L, 1, 1); the affine
        form's labels and shifts with the epoch's λ scale s_e.
        """
        e = min(t // self.epoch_steps, self.table.shape[1] - 1)
        if e == self._epoch:
            return
        self._epoch = e
        coef, wd, dev, L = self.table[:, e, :], self.wd, self._dev, self.L
        with np.errstate(over="ignore", invalid="ignore"):
            if self.deep:
                kappa = (coef[:, 1:] - coef[:, :1]) * self._ridge[None, :]
            else:
                kappa = -coef[:, :1] * self._ridge[None, :] + coef[:, 1:] * self._tfull[None, :]
            self.a4 = dev(coef[:, 0].reshape(L, 1, 1, 1), wd)
            self.kappa = dev(kappa.reshape(L, 1, self.dim), wd)
            self.full_map_c = (None if self._full_map is None
                               else dev(coef[:, 1].reshape(L, 1, 1, 1) * self._full_map[None, None], wd))
            self.a3 = dev(coef[:, 0].reshape(L, 1, 1), wd)
            self.c3 = dev(coef[:, 1].reshape(L, 1, 1), wd)
            self.c4 = dev(coef[:, 1].reshape(L, 1, 1, 1), wd)
            if self.affine:
                sc = np.ones((self.nv, 1))
                sc[1:] = self._scales[e]
                self.lab = dev(self._lab * sc, wd)
                self.kap_uv = dev(self._kap * sc, wd)

    # ------------------------------------------------------------ minibatches
    def _batches(self, streams, taken):
        """The run's minibatch stream of these streams (``kdsim.rng.EpochBatches``)."""
        return EpochBatches(self.plan.seed, streams, self.n, self.b, self.plan.sampling, self.plan.drop_last,
                            self.xp, taken)

    def _draw(self, batches, t):
        """(rows, b_t) minibatch indices of step t, or None for the full batch (b = n)."""
        if self.b == self.n:
            return None
        return batches.batch(t)

    # ------------------------------------------------------------ records
    def _chain(self, X, suffix=True):
        """Prefix and suffix products of the layers of rows X (``kdsim.kernelspec.chain``)."""
        return KS.chain(KS.layer_views(X, self.layer_shapes, self.layer_offsets), suffix)

    def _pull(self, P, Q, G):
        """J(x)ᵀ G for map-space directions G (…, K, d_in): blocks P[k]ᵀ G Q[k]ᵀ, packed to (…, dim)."""
        lead = G.shape[:-2]
        blocks = []
        for k in range(len(P)):
            g = G if P[k] is None else P[k].swapaxes(-1, -2) @ G
            g = g if Q[k] is None else g @ Q[k].swapaxes(-1, -2)
            blocks.append(g.reshape(lead + (-1,)))
        return blocks[0] if len(blocks) == 1 else self.xp.concatenate(blocks, axis=-1)

    def _record_values(self, X64):
        """(dist2_opt, subopt, dist2_teacher) of rows X64 (T, dim), float64."""
        return KS.record_values(self.refs, X64, self.xp, self.spec.record_row_bytes)

    # ------------------------------------------------------------ per trajectory
    def _full_grad(self, Yf):
        """∇f(y) (ridge included) of rows Yf (T, dim) in the working dtype, in row blocks."""
        xp = self.xp
        parts = []
        for r0 in range(0, Yf.shape[0], self.row_block):
            Yb = Yf[r0:r0 + self.row_block]
            T = Yb.shape[0]
            if self.mlp:
                Ws, bs = KS.mlp_layers(Yb, self.layer_shapes, self.spec.biases)
                Us, Z = KS.mlp_forward(xp, Ws, bs, self.A, self.spec.activation)                 # (T, n, K)
                Rs = KS.link_apply(self.link_kind, xp, Z) - self.Y
                if self.nfw is not None:
                    Rs *= self.nfw[:, None]
                G = KS.mlp_pack(xp, *KS.mlp_backward(xp, Ws, Us, Rs, self.spec.activation, self.spec.biases), (T,))
                parts.append(G / self.n + (self.alpha if self.alpha_w is None else self.alpha_w) * Yb)
                continue
            if self.deep:
                P, Q = self._chain(Yb)
                M = Q[-1]
            else:
                M = Yb.reshape(T, self.K, self.dfeat)
            Z = (self.A @ M.reshape(T * self.K, self.dfeat).T).reshape(self.n, T, self.K)
            Rs = KS.link_apply(self.link_kind, xp, Z) - self.Y[:, None, :]                            # (n, T, K)
            if self.nfw is not None:                                       # batch-mean weights n·w_i
                Rs *= self.nfw[:, None, None]
            G = (Rs.reshape(self.n, T * self.K).T @ self.A).reshape(T, self.K, self.dfeat) / self.n
            G = self._pull(P, Q, G) if self.deep else G.reshape(T, self.dim)
            parts.append(G + (self.alpha if self.alpha_w is None else self.alpha_w) * Yb)
        return parts[0] if len(parts) == 1 else xp.concatenate(parts)

    def _mlp_backprop(self, X, Ain, D):
        """Σ_i J_i(x)ᵀ D_i per trajectory for output deltas D (…, b, K), and the network's pieces."""
        xp, sh, kind, bias = self.xp, self.layer_shapes, self.spec.activation, self.spec.biases
        Ws, bs = KS.mlp_layers(X, sh, bias)
        Us, _ = KS.mlp_forward(xp, Ws, bs, Ain, kind)
        return KS.mlp_pack(xp, *KS.mlp_backward(xp, Ws, Us, D, kind, bias), X.shape[:-1])

    def _mlp_grad(self, X, Ab, Yb, Rtb, idx, snap):
        """An MLP's minibatch direction before the ridge terms: (1/b) J_B(x)ᵀ(r_B(x) − a·rθ_B) (the literal
        KD residual, tempered or not), SVRG's −(a/b) J_B(y)ᵀ r_B(y) through the snapshot, and corrected
        KD's c·Σ_i w_i J_i(x)ᵀ rθ_i through the full data (the numba kernel's order of terms)."""
        xp, wd, sh, kind, bias = self.xp, self.wd, self.layer_shapes, self.spec.activation, self.spec.biases
        L, ns, _ = X.shape
        Ain = self.A if Ab is None else Ab
        Ws, bs = KS.mlp_layers(X, sh, bias)
        Us, Z = KS.mlp_forward(xp, Ws, bs, Ain, kind)                                     # (L, ns, b, K)
        if self.Qt is not None:
            Qb = self.Qt if idx is None else self.Qt[idx]
            Rc = KS.tempered_residual(xp, Z, Yb, Qb, self.a4, wd.type(self.tau))
        else:
            Rc = KS.link_apply(self.link_kind, xp, Z)
            Rc -= Yb
            if self.teacher:
                Rc -= self.a4 * Rtb
        G = KS.mlp_pack(xp, *KS.mlp_backward(xp, Ws, Us, Rc, kind, bias), (L, ns))
        if self.snapshot:
            Wy, by = KS.mlp_layers(snap, sh, bias)
            Uy, Zy = KS.mlp_forward(xp, Wy, by, Ain, kind)
            Rs = KS.link_apply(self.link_kind, xp, Zy)
            Rs -= Yb
            Rs *= self.a4
            G -= KS.mlp_pack(xp, *KS.mlp_backward(xp, Wy, Uy, Rs, kind, bias), (L, ns))
        bt = Rc.shape[-2]
        if bt > 1:
            G /= bt
        if self.rt_full is not None:
            G += self._mlp_backprop(X, self.A, xp.broadcast_to(self.c4 * self.rt_full, (L, ns) + self.rt_full.shape))
        return G

    def _logits(self, Ab, M):
        """Z[l, s, i, :] = M[l, s] a_i for the minibatch rows (Ab (Lr, ns, b, d') or None: every row)."""
        xp = self.xp
        L, ns = M.shape[:2]
        if Ab is None:
            Z = self.A @ M.reshape(L * ns * self.K, self.dfeat).T                    # (n, L·ns·K)
            return Z.reshape(self.n, L, ns, self.K).transpose(1, 2, 0, 3)
        return xp.matmul(Ab, M.swapaxes(-1, -2))

    def _map_grad(self, Ab, Rc):
        """(1/b) Σ_i Rc[l, s, i, :] a_iᵀ, the output-map gradient (L, ns, K, d')."""
        xp = self.xp
        L, ns, b = Rc.shape[:3]
        if Ab is None:
            Rf = Rc.transpose(0, 1, 3, 2).reshape(L * ns * self.K, self.n)
            G = (Rf @ self.A).reshape(L, ns, self.K, self.dfeat)
        else:
            G = xp.matmul(Rc.swapaxes(-1, -2), Ab)
        if b > 1:
            G /= b
        return G

    def traj_chunk(self, seeds):
        """Per-trajectory run of the global seeds ``seeds`` (host int array), every λ."""
        xp, wd = self.xp, self.wd
        L, ns, dim, K, dfeat, R = self.L, len(seeds), self.dim, self.K, self.dfeat, self.R
        Lr = 1 if self.crn else L
        streams = np.ascontiguousarray(self.plan.streams_of(seeds)[:Lr]).ravel()
        taken = xp.zeros((Lr * ns, self.n), dtype=bool) if self.floyd_taken else None
        batches = self._batches(streams, taken)
        X = xp.broadcast_to(self.x0, (L, ns, dim)).copy()
        Wm = xp.zeros_like(X) if self.momentum else None
        mom = wd.type(self.momentum)
        self._epoch = None
        div = xp.full((L, ns), -1, dtype=xp.int64)
        outs = [xp.full((R, L, ns), xp.nan, dtype=xp.float64) for _ in RECORDS]     # record-major
        self._saved = xp.full((R, L, ns, dim), xp.nan) if self.plan.keep_iterates else None
        gamma = wd.type(self.gamma)
        alpha = wd.type(self.alpha) if self.alpha_w is None else self.alpha_w
        snap = full = None
        rec = 0
        for t in range(self.steps + 1):
            if rec < R and self.rec_steps[rec] == t:
                X, div = self._record_traj(X, div, outs, rec, t)
                rec += 1
            if t == self.steps:
                break
            self._coefficients(t)
            idx = self._draw(batches, t)
            if idx is None:                       # full batch: (n, …) data, plain products below
                Ab, Yb, Rtb, bt = None, self.Y, self.Rt, self.n
            else:
                bt = idx.shape[1]
                idx = idx.reshape(Lr, ns, bt)
                Ab, Yb = self.A[idx], self.Y[idx]
                Rtb = self.Rt[idx] if self.teacher else None
            start = self.plan.snapshot_start
            if self.snapshot and (t == 0 or (t >= start and (t - start) % self.plan.svrg_period == 0)):
                snap = X.copy()
                full = self._full_grad(snap.reshape(L * ns, dim)).reshape(L, ns, dim)    # ∇f(y), ridge included
                if self.deep and not self.mlp:
                    Py, Qy = self._chain(snap)
                    Msnap = Qy[-1]
                elif not self.mlp:                        # (an MLP back-propagates at y in _mlp_grad)
                    Msnap = snap.reshape(L, ns, K, dfeat)
            if self.mlp:
                G = self._mlp_grad(X, Ab, Yb, Rtb, idx, snap)
            else:
                if self.deep:
                    P, Q = self._chain(X)
                    M = Q[-1]                                                     # (L, ns, K, d_in)
                else:
                    M = X.reshape(L, ns, K, dfeat)
                # combined residual r_i(x) − a·r_i(anchor), then one product with the minibatch rows
                if self.Qt is not None:                   # literal tempered KD loss (softmax)
                    Qb = self.Qt if idx is None else self.Qt[idx]
                    Rc = KS.tempered_residual(xp, self._logits(Ab, M), Yb, Qb, self.a4, wd.type(self.tau))
                else:
                    Rc = KS.link_apply(self.link_kind, xp, self._logits(Ab, M))
                    Rc -= Yb                                                      # (L, ns, b, K)
                if self.teacher and self.Qt is None:
                    Rc -= self.a4 * Rtb
                elif self.snapshot and not self.deep:
                    Rs = KS.link_apply(self.link_kind, xp, self._logits(Ab, Msnap))
                    Rs -= Yb
                    Rs *= self.a4
                    Rc -= Rs
                Gm = self._map_grad(Ab, Rc)
                if self.deep:
                    if self.full_map_c is not None:
                        Gm += self.full_map_c                                     # c·∇g(Θ̄), pulled back at x
                    G = self._pull(P, Q, Gm)
                    if self.snapshot:                     # a·J(y)ᵀ∇g_B(W(y)), pulled back at y
                        Rs = KS.link_apply(self.link_kind, xp, self._logits(Ab, Msnap))
                        Rs -= Yb
                        Gs = self._map_grad(Ab, Rs)
                        Gs *= self.a4
                        G -= self._pull(Py, Qy, Gs)
                else:
                    G = Gm.reshape(L, ns, dim)
            if self.alpha:
                G += alpha * X
            if self.teacher:
                G += self.kappa
            elif self.snapshot:
                G += self.c3 * full - self.a3 * (alpha * snap)          # c·∇f(y) − a·αy
            if Wm is not None:
                Wm *= mom
                Wm += G
                G = Wm.copy()
            G *= gamma
            X -= G
            norm2 = _rowdot(xp, X, X)
            newly = (div < 0) & ~(norm2 <= self.limit)
            div = xp.where(newly, t + 1, div)
            X += xp.where(newly, xp.nan, 0.0).astype(wd)[..., None]          # freeze at NaN
        return self._finish(outs, div, X.astype(xp.float64))

    def _record_traj(self, X, div, outs, r, t):
        xp = self.xp
        L, ns = div.shape
        vals = self._record_values(X.reshape(L * ns, self.dim).astype(xp.float64, copy=False))
        vals = [v.reshape(L, ns) for v in vals]
        alive = div < 0
        fin = xp.isfinite(vals[0]) & xp.isfinite(vals[1]) & xp.isfinite(vals[2])
        keep = alive & fin
        for out, v in zip(outs, vals):
            out[r] = xp.where(keep, v, xp.nan)
        if self._saved is not None:
            self._saved[r] = xp.where(keep[..., None], X.astype(xp.float64), xp.nan)
        bad = alive & ~fin
        div = xp.where(bad, t, div)
        X = xp.where(bad[..., None], xp.nan, X)
        return X, div

    def _finish(self, outs, div, xfin):
        xp = self.xp
        res = {name: np.ascontiguousarray(np.moveaxis(_to_host(xp, o), 0, -1))      # (L, ns, R)
               for name, o in zip(RECORDS, outs)}
        if self._saved is not None:
            res["iterates"] = np.ascontiguousarray(np.moveaxis(_to_host(xp, self._saved), 0, 2))  # (L, ns, R, dim)
            self._saved = None
        res["diverged_step"] = _to_host(xp, div).astype(np.int64)
        res["x_final"] = _to_host(xp, xfin).astype(np.float64)
        return res

    # ------------------------------------------------------------ affine (least squares)
    def affine_chunk(self, seeds, want_coeffs=False):
        """docs/theory.md §5.1 for the global seeds ``seeds``: one (u, v) pair per seed serves every λ.

        The pair is stored as U of shape (ns, nv, dim) (nv = 2, or 1 for sgd: v ≡ 0).
        Returns (result dict, unsafe seed mask (host), coefficients (ns, R, 3, 3) or None).
        """
        xp, wd = self.xp, self.wd
        L, ns, dim, R, nv = self.L, len(seeds), self.dim, self.R, self.nv
        taken = xp.zeros((ns, self.n), dtype=bool) if self.floyd_taken else None
        batches = self._batches(np.ascontiguousarray(self.plan.streams_of(seeds)[0]), taken)
        self._epoch = None
        U = xp.zeros((ns, nv, dim), dtype=wd)
        Wm = xp.zeros_like(U) if self.momentum else None
        mom = wd.type(self.momentum)
        U[:, 0, :] = self.x0
        div = xp.full((L, ns), -1, dtype=xp.int64)
        unsafe = xp.zeros(ns, dtype=bool)
        outs = [xp.full((R, L, ns), xp.nan, dtype=xp.float64) for _ in RECORDS]     # record-major
        self._saved = xp.full((R, L, ns, dim), xp.nan) if (self.plan.keep_iterates and not want_coeffs) else None
        coeffs = xp.full((ns, R, 3, 3), xp.nan, dtype=xp.float64) if want_coeffs else None
        gamma, alpha = wd.type(self.gamma), wd.type(self.alpha)
        lam = self.lam_col                                                      # (L, 1) float64
        rec = 0
        for t in range(self.steps + 1):
            if rec < R and self.rec_steps[rec] == t:
                div = self._record_affine(U, div, unsafe, outs, coeffs, rec, t)
                rec += 1
            if t == self.steps:
                break
            self._coefficients(t)
            idx = self._draw(batches, t)
            if idx is None:                                                     # full batch: two plain products
                Z = (U.reshape(ns * nv, dim) @ self.A.T).reshape(ns, nv, self.n)
                Z -= self.lab                                                   # (nv, n)
                G = (Z.reshape(ns * nv, self.n) @ self.A).reshape(ns, nv, dim)
            else:
                Ab = self.A[idx]                                                # (ns, b, dim)
                Z = xp.matmul(U, Ab.swapaxes(-1, -2))                           # (ns, nv, b)
                Z -= self.lab[:, idx].transpose(1, 0, 2)
                G = xp.matmul(Z, Ab)                                            # (ns, nv, dim)
            bt = self.n if idx is None else idx.shape[1]
            if bt > 1:
                G /= bt
            if self.alpha:
                G += alpha * U
            if nv == 2:
                G -= self.kap_uv
            if Wm is not None:                                                  # heavy ball: linear in (u, v)
                Wm *= mom
                Wm += G
                G = Wm.copy()
            G *= gamma
            U -= G
            # guard: ‖u + λv‖² from three dot products per seed, float64
            Uc = U.astype(xp.float64, copy=False)
            uu = _rowdot(xp, Uc[:, 0], Uc[:, 0])
            if nv == 2:
                vv = _rowdot(xp, Uc[:, 1], Uc[:, 1])
                q = uu + 2.0 * lam * _rowdot(xp, Uc[:, 0], Uc[:, 1]) + lam * lam * vv    # (L, ns)
                scale = xp.maximum(uu, lam * lam * vv)
            else:
                q = xp.broadcast_to(uu, (L, ns))
                scale = q
            decisive = (xp.isfinite(q) & xp.isfinite(scale)
                        & (xp.abs(q - self.limit) > AFFINE_DECISIVE * xp.maximum(scale, self.limit)))
            alive = (div < 0) & ~unsafe
            newly = alive & decisive & (q > self.limit)
            div = xp.where(newly, t + 1, div)
            still = alive & ~newly
            unsafe = unsafe | (still & (~decisive | (scale > self.limit))).any(axis=0)
        # final iterates x(λ) = u + λv
        U64 = U.astype(xp.float64)
        u = U64[None, :, 0, :]
        if nv == 2:
            lam3 = self.lam_col[:, :, None]
            x = xp.where(lam3 == 0.0, u, u + lam3 * U64[None, :, 1, :])
        else:
            x = xp.broadcast_to(u, (L, ns, dim))
        x = xp.where((div >= 0)[..., None], xp.nan, x)
        res = self._finish(outs, div, x)
        unsafe_h = _to_host(xp, unsafe).astype(bool)
        return res, unsafe_h, (None if coeffs is None else _to_host(xp, coeffs))

    def _record_affine(self, U, div, unsafe, outs, coeffs, r, t):
        """Records of every λ from (u, v): e = (u − x*) + λv formed per λ (no cancellation)."""
        xp = self.xp
        L, ns = div.shape
        W = xp.array(U.transpose(1, 0, 2), dtype=xp.float64, order="C")          # a copy: (u, v) as (nv, ns, dim)
        et = W[0] - self.refs.theta
        W[0] -= self.refs.x_star                                                      # (u − x*, v)
        FW = (W.reshape(self.nv * ns, self.dim) @ self.refs.refs["F"].T).reshape(self.nv, ns, -1)   # one product
        eu, Fe = W[0], FW[0]
        a2 = self.alpha
        vals = [xp.empty((L, ns)) for _ in RECORDS]                            # dist2_opt, subopt, dist2_teacher
        if self.nv == 2:
            v, Fv = W[1], FW[1]
            E, FE = xp.empty_like(eu), xp.empty_like(Fe)                        # reused per λ
            for k, lam in enumerate(self.lams.tolist()):
                xp.multiply(v, lam, out=E)
                E += eu
                vals[0][k] = _rowdot(xp, E, E)
                xp.multiply(v, lam, out=E)
                E += et
                vals[2][k] = _rowdot(xp, E, E)
                xp.multiply(Fv, lam, out=FE)
                FE += Fe
                vals[1][k] = 0.5 * (_rowdot(xp, FE, FE) + a2 * vals[0][k])
        else:
            vals[0][:] = _rowdot(xp, eu, eu)
            vals[2][:] = _rowdot(xp, et, et)
            vals[1][:] = 0.5 * (_rowdot(xp, Fe, Fe) + a2 * vals[0])
        alive = (div < 0) & ~unsafe
        fin = xp.isfinite(vals[0]) & xp.isfinite(vals[1]) & xp.isfinite(vals[2])
        keep = alive & fin
        for out, val in zip(outs, vals):
            out[r] = xp.where(keep, val, xp.nan)
        if self._saved is not None:                                   # x(λ) = u + λv
            u = U[:, 0, :].astype(xp.float64)
            for k, lam in enumerate(self.lams.tolist()):
                x = u + lam * U[:, 1, :].astype(xp.float64) if (self.nv == 2 and lam != 0.0) else u
                self._saved[r, k] = xp.where(keep[k][:, None], x, xp.nan)
        div = xp.where(alive & ~fin, t, div)
        if coeffs is not None:
            ee, ff, tt = _rowdot(xp, eu, eu), _rowdot(xp, Fe, Fe), _rowdot(xp, et, et)
            if self.nv == 2:
                vv, Fvv = _rowdot(xp, v, v), _rowdot(xp, Fv, Fv)
                cols = [(ee, 2.0 * _rowdot(xp, eu, v), vv),
                        (0.5 * (ff + a2 * ee), _rowdot(xp, Fe, Fv) + a2 * _rowdot(xp, eu, v),
                         0.5 * (Fvv + a2 * vv)),
                        (tt, 2.0 * _rowdot(xp, et, v), vv)]
            else:
                z = xp.zeros(ns)
                cols = [(ee, z, z), (0.5 * (ff + a2 * ee), z, z), (tt, z, z)]
            valid = keep.any(axis=0)[:, None]
            for q, trio in enumerate(cols):
                coeffs[:, r, q, :] = xp.where(valid, xp.stack(trio, axis=1), xp.nan)
        return div

    # ------------------------------------------------------------ chunk
    def run_chunk(self, s0, s1):
        """Records of seeds s0 .. s1−1 (host arrays) and the seeds the affine form could not decide."""
        t0 = time.perf_counter()
        seeds = np.arange(s0, s1)
        if self.affine:
            res, unsafe, _ = self.affine_chunk(seeds)
        else:
            res, unsafe = self.traj_chunk(seeds), None
        self.timers["kernel"].run_s += time.perf_counter() - t0
        return res, unsafe

    def run_trajectories(self, seeds):
        t0 = time.perf_counter()
        res = self.traj_chunk(np.asarray(seeds))
        self.timers["kernel"].run_s += time.perf_counter() - t0
        return res

    def run_coefficients(self, s0, s1):
        t0 = time.perf_counter()
        res, unsafe, coeffs = self.affine_chunk(np.arange(s0, s1), want_coeffs=True)
        self.timers["kernel"].run_s += time.perf_counter() - t0
        return res["diverged_step"], unsafe, coeffs


def prepare(spec, plan, xp=np, dtype=None, path="auto"):
    """A runner of the plan on the problem's kernel spec with array module ``xp`` (numpy or CuPy).

    ``dtype``: "float64" or "float32" iterate arithmetic (default ``plan.dtype``); records are
    float64 either way. ``path``: "auto" (least squares' affine form where it applies and pays:
    common random numbers, estimator sgd/kd/kd_loss/corrected, and more than one λ or sgd), or
    force "affine" / "trajectory". Path never changes the records beyond rounding.
    """
    V.choice("path", path, PATHS)
    return _Engine(spec, plan, xp, resolve_dtype(dtype, plan), path)
