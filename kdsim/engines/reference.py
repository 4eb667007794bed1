"""The reference engine: plain, readable numpy, vectorised across trajectories.

It is the ground truth the fast engines are tested against, and it runs the problem's
own public protocol (``batch_grad``, ``teacher_terms``, ``suboptimality``), not the kernel
spec. One step for every trajectory at once:

    B_t      = minibatch(seed, stream, t, sampling)        (kdsim.rng)
    (a, c)   = the plan's coefficients of epoch ⌊t/K⌋       (kdsim.schedules)
    g        = ∇f_B(x) − a·T_B + c·T                        (kdsim.estimators)
    w_{t+1}  = μ w_t + g                                    (momentum μ; w = g when μ = 0)
    x_{t+1}  = x_t − γ w_{t+1}

Trajectories are ordered λ-major: row k·S + s is (λ_k, seed s).
"""
from __future__ import annotations

import time

import numpy as np

from ..estimators import direction
from ..kernelspec import block_bytes
from ..plan import DIVERGENCE_LIMIT, RECORDS, resolve_dtype
from ..rng import EpochBatches
from .driver import Timer

NAME = "numpy"
TAKES = "problem"


def prepare(problem, plan, dtype=None):
    """A runner of the plan on the problem's own numpy code (float64 only)."""
    if resolve_dtype(dtype, plan).name != "float64":
        raise ValueError("dtype='float32' needs a compiled engine (backend='numba'); "
                         "the numpy reference engine is float64 only")
    return _Runner(problem, plan)


class _Runner:
    kernel = "reference"
    dtype = "float64"

    def __init__(self, problem, plan):
        self.problem, self.plan = problem, plan
        self.timers = {"kernel": Timer()}
        est = plan.estimator
        self.table = plan.coefficient_table                                       # (L, E, 2)
        self.x_star = problem.canonical(problem.solution())
        self.theta_c = problem.canonical_teacher(plan.theta)
        self.weights = plan.full_weights                                          # None: 1/n
        self.terms = (problem.teacher_terms(plan.theta, est.teacher_term, plan.teacher_l2, self.weights)
                      if est.uses_teacher else None)
        L, R, dim, b = plan.n_lams, plan.n_records, problem.dim, plan.batch_size
        # records, flags, stream keys; the iterate with the (T, dim) temporaries of a step and of the
        # records (about ten; SVRG's snapshot pair adds four); the minibatch indices and (b, dim) gathers
        self.bytes_per_seed = L * (3 * R * 8 + 8 + 4 * 8 + dim * 8 * (14 if est.snapshot else 10)
                                   + (dim * 8 if plan.momentum else 0) + b * 8 * (2 + 3 * dim)
                                   + (problem.n * 8 if plan.sampling != "iid" else 0))
        self.fixed_bytes = block_bytes(problem.record_row_bytes(), L * plan.n_seeds)   # f − f* in row blocks

    def run_chunk(self, s0, s1):
        t0 = time.perf_counter()
        out = self._run(self.plan.seed_range(s0, s1))
        self.timers["kernel"].run_s += time.perf_counter() - t0
        return out, None

    def run_trajectories(self, seeds):
        raise AssertionError("the reference engine has no fallback path")

    def _run(self, plan):
        problem, est = self.problem, plan.estimator
        L, S, dim = plan.n_lams, plan.n_seeds, problem.dim
        T = L * S
        E, K = self.table.shape[1], plan.steps_per_epoch
        batches = EpochBatches(plan.seed, plan.streams.ravel(), problem.n, plan.batch_size, plan.sampling,
                               plan.drop_last)
        X = np.tile(plan.x0, (T, 1))
        W = np.zeros_like(X) if plan.momentum else None
        diverged_step = np.full(T, -1, dtype=np.int64)
        R = plan.n_records
        out = {name: np.full((T, R), np.nan) for name in RECORDS}
        iterates = np.full((T, R, dim), np.nan) if plan.keep_iterates else None
        snap = snap_full = None
        rec = 0

        def record(r, t, alive):
            Xa = X[alive]
            with np.errstate(over="ignore", invalid="ignore"):
                C = problem.canonical(Xa)
                vals = {"dist2_opt": np.sum((C - self.x_star) ** 2, axis=1),
                        "subopt": problem.suboptimality(Xa),
                        "dist2_teacher": np.sum((C - self.theta_c) ** 2, axis=1)}
            # an iterate whose loss overflows (e.g. Poisson's exp) has left the finite range too
            bad = ~np.all([np.isfinite(v) for v in vals.values()], axis=0)
            rows = np.flatnonzero(alive)
            for name, v in vals.items():
                out[name][rows[~bad], r] = v[~bad]
            if iterates is not None:
                iterates[rows[~bad], r] = Xa[~bad]
            if bad.any():
                diverged_step[rows[bad]] = t
                alive[rows[bad]] = False
                X[rows[bad]] = np.nan

        alive = np.ones(T, dtype=bool)
        for t in range(plan.steps + 1):
            if rec < R and plan.record_steps[rec] == t:
                if alive.any():
                    record(rec, t, alive)
                rec += 1
            if t == plan.steps:
                break
            idx = batches.batch(t)
            coef = self.table[:, min(t // K, E - 1)]
            a = np.repeat(coef[:, 0], S)[:, None]
            c = np.repeat(coef[:, 1], S)[:, None]
            all_alive = alive.all()
            rows = slice(None) if all_alive else alive
            Xa, ia = X[rows], idx[rows]
            with np.errstate(over="ignore", invalid="ignore"):
                G = problem.batch_grad(Xa, ia)
                if est.snapshot:
                    if t == 0 or (t >= plan.snapshot_start and (t - plan.snapshot_start) % plan.svrg_period == 0):
                        snap = X.copy()
                        snap_full = np.full_like(X, np.nan)
                        snap_full[rows] = (problem.batch_full_grad(snap[rows]) if self.weights is None else
                                           np.stack([self.weights @ problem.sample_grads(y) for y in snap[rows]]))
                    TB, TF = problem.batch_grad(snap[rows], ia), snap_full[rows]
                elif est.uses_teacher:
                    TB = problem.batch_teacher_grad(Xa, self.terms, ia)
                    TF = problem.full_teacher_grad(Xa, self.terms) if est.corrected else None
                else:
                    TB = TF = None
                if plan.temperature != 1.0:             # the literal tempered KD loss's gradient, per trajectory
                    D = np.stack([problem.kd_grad(x, plan.theta, float(aj), ij, plan.temperature)
                                  for x, aj, ij in zip(Xa, a[rows][:, 0], ia)]) - a[rows] * self.terms.ridge
                else:
                    D = direction(G, TB, TF, a[rows], c[rows])
                if W is not None:
                    D = W[rows] = plan.momentum * W[rows] + D
                X[rows] = Xa - plan.step * D
                norm2 = np.einsum("td,td->t", X[rows], X[rows])
            bad = ~(norm2 <= DIVERGENCE_LIMIT)  # catches NaN and inf too
            if bad.any():
                where = np.flatnonzero(alive)[bad] if not all_alive else np.flatnonzero(bad)
                diverged_step[where] = t + 1
                alive[where] = False
                X[where] = np.nan
        shape = (L, S, R)
        res = {
            **{k: v.reshape(shape) for k, v in out.items()},
            "diverged_step": diverged_step.reshape(L, S),
            "x_final": X.reshape(L, S, dim),
        }
        if iterates is not None:
            res["iterates"] = iterates.reshape(L, S, R, dim)
        return res
