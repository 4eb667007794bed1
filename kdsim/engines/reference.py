"""The reference engine: plain, readable numpy, vectorised across trajectories.

It is the ground truth the fast engines are tested against. One step for every
trajectory at once:

    B_t      = minibatch_indices(seed, stream, t)          (kdsim.rng)
    g        = ∇f_B(x) − a·T_B + c·T                        (kdsim.estimators)
    x_{t+1}  = x_t − γ g

Trajectories are ordered λ-major: row k·S + s is (λ_k, seed s).
"""
from __future__ import annotations

import numpy as np

from ..estimators import direction
from ..rng import minibatch_indices

#: squared norm beyond which an iterate counts as diverged
DIVERGENCE_LIMIT = 1e100


def run(problem, plan):
    """Run the trajectories of a validated plan (see ``kdsim.simulate``); return record arrays."""
    L, S, dim = len(plan.lams), plan.n_seeds, problem.dim
    T = L * S
    est = plan.estimator
    coef = np.array([est.coefficients(lam) for lam in plan.lams])      # (L, 2)
    a = np.repeat(coef[:, 0], S)[:, None]
    c = np.repeat(coef[:, 1], S)[:, None]
    streams = plan.streams.ravel()

    x_star = problem.canonical(problem.solution())
    theta_c = problem.canonical_teacher(plan.theta)
    terms = problem.teacher_terms(plan.theta, est.teacher_term) if est.uses_teacher else None

    X = np.tile(plan.x0, (T, 1))
    diverged_step = np.full(T, -1, dtype=np.int64)
    R = len(plan.record_steps)
    out = {name: np.full((T, R), np.nan) for name in ("dist2_opt", "subopt", "dist2_teacher")}
    snap = snap_full = None
    rec = 0

    def record(r, t, alive):
        Xa = X[alive]
        with np.errstate(over="ignore", invalid="ignore"):
            C = problem.canonical(Xa)
            vals = {"dist2_opt": np.sum((C - x_star) ** 2, axis=1),
                    "dist2_teacher": np.sum((C - theta_c) ** 2, axis=1),
                    "subopt": problem.suboptimality(Xa)}
        # an iterate whose loss overflows (e.g. Poisson's exp) has left the finite range too
        bad = ~np.all([np.isfinite(v) for v in vals.values()], axis=0)
        rows = np.flatnonzero(alive)
        for name, v in vals.items():
            out[name][rows[~bad], r] = v[~bad]
        if bad.any():
            diverged_step[rows[bad]] = t
            alive[rows[bad]] = False
            X[rows[bad]] = np.nan

    alive = np.ones(T, dtype=bool)
    for t in range(plan.steps + 1):
        if rec < R and plan.record_steps[rec] == t:
            record(rec, t, alive)
            rec += 1
        if t == plan.steps:
            break
        idx = minibatch_indices(plan.seed, streams, t, problem.n, plan.batch_size)
        all_alive = alive.all()
        rows = slice(None) if all_alive else alive
        Xa, ia = X[rows], idx[rows]
        with np.errstate(over="ignore", invalid="ignore"):
            G = problem.batch_grad(Xa, ia)
            if est.snapshot:
                if t % plan.svrg_period == 0:
                    snap = X.copy()
                    snap_full = np.full_like(X, np.nan)
                    snap_full[rows] = problem.batch_full_grad(snap[rows])
                TB, TF = problem.batch_grad(snap[rows], ia), snap_full[rows]
            elif est.uses_teacher:
                TB = problem.batch_teacher_grad(Xa, terms, ia)
                TF = problem.full_teacher_grad(Xa, terms) if est.corrected else None
            else:
                TB = TF = None
            X[rows] = Xa - plan.step * direction(G, TB, TF, a[rows], c[rows])
            norm2 = np.einsum("td,td->t", X[rows], X[rows])
        bad = ~(norm2 <= DIVERGENCE_LIMIT)  # catches NaN and inf too
        if bad.any():
            where = np.flatnonzero(alive)[bad] if not all_alive else np.flatnonzero(bad)
            diverged_step[where] = t + 1
            alive[where] = False
            X[where] = np.nan
    shape = (L, S, R)
    return {
        **{k: v.reshape(shape) for k, v in out.items()},
        "diverged_step": diverged_step.reshape(L, S),
        "x_final": X.reshape(L, S, dim),
    }
