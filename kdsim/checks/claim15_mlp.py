"""Claim 15 (THEORY.md §8): non-linear students — where the KD identity and the variance-reduction picture break.

Networks: the 8×8 digits (64 standardised pixels, 10 classes) with a one-hidden-layer ReLU and a
one-hidden-layer sigmoid network, 64-32-10 (``kdsim.MLP``, biases, softmax loss, ridge α). x̂ =
``MLP.solution()`` (for ReLU an approximate local minimiser: its minima sit on activation kinks).
Minibatches b = 10 without replacement; KD weight λ; γ = 0.05. For a network the literal KD
gradient KD_B = ``kd_grad`` − λαθ back-propagates the teacher's output residuals r_B(θ) through the
*student's* Jacobian; the control variate of §2–§6 is CV_B = ∇f_B(x) − λ∇f_B(θ)
(``kdsim.theory.alignment``). To first order in δ = x − θ (τ = 1),

    KD_B − CV_B = −λ N_B(θ) δ + O(‖δ‖²),   N_B = H_B − GN_B (``MLP.hvp_rows(part="residual")``),

the part of the minibatch Hessian that the Gauss–Newton matrix misses. So KD_B → CV_B as x → θ
when λ < 1 (CV_B → (1 − λ)∇f_B(θ) ≠ 0), but not when λ = 1 (both are O(‖δ‖): the cosine tends to
that of (GN_B + αI)δ with (H_B + αI)δ, below 1); and for ReLU N_B is not the whole story near θ:
the Jacobian jumps across the kinks that x̂ sits on.

(a) Finite differences (central, steps h and 2h, along seeded unit directions v at x = x̂ + 5 %
    of ‖x̂‖ in a seeded direction, on 50 samples): ⟨∇f, v⟩, ⟨kd_grad, v⟩ at τ = 1 and τ = 2 and
    H v. Tolerance derived per comparison: 4 × (the truncation estimate |D(2h) − D(h)|/3 + the
    rounding bound 16ε·max(1, |value|)/h). ReLU: every hidden pre-activation is kept farther than
    4h·|∂z/∂v| from 0 (a new direction is drawn otherwise), so no kink lies inside a stencil.
(b) Cosine of KD_B with CV_B at x = θ + r‖θ‖u (θ = x̂ the teacher, u a seeded unit direction),
    r ∈ {0.01, 0.03, 0.1, 0.3, 1}, λ ∈ {0.5, 1}, mean over Monte Carlo minibatches with a 99 %
    Student-t interval (quantiles in the notes). Rows: pre-registered, λ = 0.5 and r ≤ 0.03 (within
    3 % of the teacher): mean cosine ≥ 0.98 (lower limit); the identity fails measurably: upper
    limit ≤ 1 − 1e-3 at λ = 0.5, r = 0.3 and at λ = 1, r = 0.01 (at r = 1 the cosine rises again,
    0.990–0.998, as the student's own gradient dominates both; reported); sigmoid, r ≤ 0.03: 1 − cosine ≈
    the first-order prediction 1 − cos(CV_B − λN_Bδ, CV_B) (same minibatches) within 10 % of it (the
    O(‖δ‖²) remainder: measured below 2 %); ReLU, λ = 1, r = 0.01: 1 − cosine ≥ 2 × that
    prediction (the kinks; measured about 20×). The other (r, λ) are reported. Linear control: softmax
    regression on the same digits (64 px + bias, same α, θ = its x*, x at r = 0.1, λ = 0.5): the
    largest |1 − cos| ≤ 1e-10 (the identity of §2).
(c) Noise reduction at x̂ (exact expectations over b-subsets, ``alignment.noise_reduction``), two
    teachers: θ_near = x̂ + 0.03‖x̂‖u and a trained imperfect teacher θ_ES (``teachers.early_stopped``:
    SGD from ``default_x0``, b = 10, γ = 0.05, 10 epochs). Rows: the control variate's factor at
    λ̂ equals 1 − ρ² (1e-10, an identity); a Monte Carlo E‖KD_B(x̂)‖² at λ = 0.5 (N minibatches,
    Student-t interval) ≈ the exact value; θ_near, sigmoid: KD's factor at λ = 0.5 ≈ the control
    variate's within 5 % (ReLU, reported: the kinks of x̂ separate them, 9 % at full size);
    θ_ES: ρ²_KD ≥ ρ² (KD's own best factor 1 − ρ²_KD is at most the linear picture's
    1 − ρ²: pulled back by the student's Jacobian, the teacher's term correlates better with the
    student's gradient). KD's factor at λ̂ and both λ̂ are reported.
(d) Plateaus (per-seed mean over the last half of the records, 99 % t-interval across seeds), teacher
    θ_ES, λ = 0.5, i.i.d. and reshuffled (``sampling="reshuffle"``) minibatches, on the reference
    engine. SGD starts at x̂; KD — the literal KD loss, estimator "kd_loss": a teacher trained from
    another start is not in the student's parameter coordinates, so the teacher's weight decay of
    "kd" would pull the student towards θ's parameters — starts at its own fixed point x̃, a local
    minimiser of ``kd_loss`` found by L-BFGS from x̂, so both plateaus are stationary from the start.
    First order (claim 11's γσ²/4 for the objective whose gradient is the mean field): SGD's
    training loss f plateaus at f(x̂) + γσ²(x̂)/4; KD's objective F̃ = kd_loss at F̃(x̃) + γσ̃²/4 with
    σ̃² = E‖KD_B(x̃)‖² (F̃ at the recorded iterates). (KD's *training loss* is not its objective: its
    plateau is f(x̃) plus a noise part that is not γσ̃²/4 — measured 0.4–1 of it — and is reported.)
    Rows (i.i.d.): both ≈ their first-order values within ±50 % of the noise part; the linear picture
    — KD as SGD on f(x) − λ⟨∇ℓ(θ), x⟩ with parameter-space noise, training-loss plateau
    f(x_λ) + γσ²_λ/4 — misses KD's training-loss plateau by more than its own ±50 % noise allowance;
    where KD's bias f(x̃) − f(x̂) exceeds 1.5 × the two noise parts, KD's training-loss plateau lies
    above SGD's (intervals apart; i.i.d. and reshuffled). Reshuffled: SGD's and KD's training-loss
    plateaus at most their i.i.d. ones (upper vs lower limit; §5.2: RR noise is O(γ²)). The cosine
    along the KD run (the authors' logged quantity, ``alignment.alignment_along``) is reported in
    the notes.

Sizes. Full: all 1,797 images, α = 1e-3, 2,000 minibatches per cosine, 20,000 for the Monte Carlo
row, (d) 64 seeds × 30 epochs (5,400 steps). Quick: the first 360 images, α = 1e-2, 400 minibatches,
4,000 for the Monte Carlo row, (d) 16 seeds × 20 epochs (720 steps). The (d) runs use ``backend``
(default numba: the MLP layered kernels, trajectory-equal to the reference engine).
"""
from __future__ import annotations

import numpy as np
import scipy.optimize

from .. import datasets, stats, teachers
from ..problems.mlp import MLP
from ..problems.softmax import SoftmaxRegression
from ..rng import minibatch_indices
from ..theory import alignment
from ..theory.sampling import batch_sq_norm
from .base import CheckResult, Timer, check_seeds, make_row, simulate
from .claim04_ls_dynamics import mean_half_width, t_quantile

CLAIM, NAME = 15, "mlp"

GAMMA, BATCH, LAM = 0.05, 10, 0.5
HIDDEN = (32,)
ACTIVATIONS = ("relu", "sigmoid")
R_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)
ALIGN_LAMS = (0.5, 1.0)
NEAR, FAR = (0.01, 0.03), (0.3,)
COS_FLOOR = 0.98                 # pre-registered: mean cosine near the teacher at λ = 0.5
IDENTITY_GAP = 1e-3              # where the identity must fail: cosine ≤ 1 − 1e-3
FIRST_ORDER_RTOL = 0.1           # sigmoid: 1 − cos vs its first-order prediction
KINK_FACTOR = 2.0                # ReLU, λ = 1, r = 0.01: 1 − cos ≥ 2 × the first-order prediction
LINEAR_TOL = 1e-10
NEAR_TEACHER_R = 0.03
NEAR_FACTOR_RTOL = 0.05
NOISE_RTOL = 0.5                 # first-order plateau noise terms (as claim 11)
FD_SAMPLES, FD_H, FD_DIRECTIONS, FD_OFFSET = 50, 1e-5, 3, 0.05
TEACHER_EPOCHS = 10
DIRECTION_SEED, MC_SEED, ALIGN_SEED, TEACHER_SEED = 15, 1515, 151, 3
FULL = {"n": None, "l2": 1e-3, "n_batches": 2000, "mc_batches": 20000, "seeds": 64, "epochs": 30}
QUICK = {"n": 360, "l2": 1e-2, "n_batches": 400, "mc_batches": 4000, "seeds": 16, "epochs": 20}

#: the fewest seeds the check accepts, and why
MIN_SEEDS = 2
MIN_SEEDS_REASON = "the plateaus' Student-t intervals across seeds need two"


def networks(n=None, l2=1e-3):
    """[(label, MLP)]: 64-32-10 ReLU and sigmoid networks on the standardised digits (first n images)."""
    ds = datasets.load_digits(standardize=True)
    A, y = (ds.A, ds.y) if n is None else (ds.A[:n], ds.y[:n])
    return [(f"{act} {ds.A.shape[1]}-{'-'.join(map(str, HIDDEN))}-{ds.n_classes}",
             MLP(A, y, hidden=HIDDEN, activation=act, loss="softmax", l2=l2, n_classes=ds.n_classes))
            for act in ACTIVATIONS]


class _Clock:
    """Wall time of the parts of the check (reported in the notes)."""

    def __init__(self):
        import time
        self._now = time.perf_counter
        self._t = self._now()
        self.laps = {}

    def lap(self, name):
        t = self._now()
        self.laps[name] = t - self._t
        self._t = t


def unit_direction(dim, seed):
    """A seeded unit vector of R^dim."""
    u = np.random.default_rng(seed).standard_normal(dim)
    return u / np.linalg.norm(u)


def check(quick=False, seeds=None, backend="numba", level=0.99):
    """Run claim 15; returns a CheckResult (see the module docstring). ``seeds`` sets the seeds of (d)."""
    check_seeds(seeds, MIN_SEEDS, MIN_SEEDS_REASON)
    from threadpoolctl import threadpool_limits

    res = CheckResult(CLAIM, NAME, __doc__.strip().splitlines()[0])
    cfg = dict(QUICK if quick else FULL)
    if seeds is not None:
        cfg["seeds"] = int(seeds)
    with Timer(res), threadpool_limits(limits=1, user_api="blas"):      # small matrices: one BLAS thread
        nets = networks(cfg["n"], cfg["l2"])
        scatter = []
        clock = _Clock()
        for label, p in nets:
            xh = p.solution()
            info = p.solve_info
            clock.lap(f"{p.activation}: solve")
            tag = f"digits n={p.n}, {label}, α={p.l2:g}, b={BATCH}"
            res.notes.append(f"{label}: x̂ by {info['method']}, ‖∇f(x̂)‖ = {info['grad_norm']:.2e}, "
                             f"{info['near_kinks']} hidden pre-activations near a kink, f(x̂) = {p.f_star:.5f}")
            _part_a(res, tag, p, xh)
            clock.lap(f"{p.activation}: (a)")
            scatter += _part_b(res, tag, p, xh, cfg, level)
            clock.lap(f"{p.activation}: (b)")
            theta_es = teachers.early_stopped(p, TEACHER_EPOCHS * p.n // BATCH, GAMMA, batch_size=BATCH,
                                              seed=TEACHER_SEED).theta
            _part_c(res, tag, p, xh, theta_es, cfg, level)
            clock.lap(f"{p.activation}: (c)")
            _part_d(res, tag, p, xh, theta_es, cfg, level, backend)
            clock.lap(f"{p.activation}: (d)")
        _linear_control(res, cfg)
        clock.lap("linear control")
        res.notes.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in clock.laps.items()))
        import pandas as pd
        res.figures.append({"kind": "scatter", "name": "claim15_mlp_cosines", "data": pd.DataFrame(scatter),
                            "title": "Claim 15: mean cosine of the KD gradient with ∇f_B(x) − λ∇f_B(θ) against its "
                                     "first-order prediction (x = θ + r‖θ‖u)",
                            "xlabel": "first-order prediction (residual curvature N_B)",
                            "ylabel": "measured mean cosine", "log": False})
    return res


# ------------------------------------------------------------------------------------ (a)
def _kink_free_directions(p, x, idx, h, count, seed):
    """Seeded unit directions along which no hidden pre-activation of the samples idx crosses 0 within 4h."""
    Ws, bs = p._unpack(x)
    Zs, _ = p._forward(Ws, bs, p.A[idx])
    out, rng = [], np.random.default_rng(seed)
    for _ in range(50 * count):
        v = rng.standard_normal(p.dim)
        v /= np.linalg.norm(v)
        if p.activation == "relu":
            Vs, cs = p._unpack(v)
            dZ = p._forward(Vs, cs, p.A[idx])[0][0]          # ∂z_1/∂v of the first layer (one hidden layer)
            if np.any(np.abs(Zs[0]) <= 4 * h * np.abs(dZ) + 1e-300):
                continue
        out.append(v)
        if len(out) == count:
            return out
    raise RuntimeError("no kink-free finite-difference direction found")


def _part_a(res, tag, p, xh):
    x = xh + FD_OFFSET * np.linalg.norm(xh) * unit_direction(p.dim, DIRECTION_SEED + 1)
    theta = xh
    idx = np.arange(min(FD_SAMPLES, p.n))
    dirs = _kink_free_directions(p, x, idx, FD_H, FD_DIRECTIONS, DIRECTION_SEED + 2)
    err_rows = {}
    h = FD_H
    for name, f, g in (
            ("⟨∇f_B, v⟩ vs d/dt f_B(x + tv)", lambda z: p.loss(z, idx), lambda z: p.grad(z, idx)),
            ("⟨kd_grad, v⟩ vs d/dt kd_loss, τ = 1", lambda z: p.kd_loss(z, theta, LAM, idx),
             lambda z: p.kd_grad(z, theta, LAM, idx)),
            ("⟨kd_grad, v⟩ vs d/dt kd_loss, τ = 2", lambda z: p.kd_loss(z, theta, LAM, idx, 2.0),
             lambda z: p.kd_grad(z, theta, LAM, idx, 2.0))):
        d1s, d2s, ex, sc = [], [], [], []
        for v in dirs:
            d1s.append((f(x + h * v) - f(x - h * v)) / (2 * h))
            d2s.append((f(x + 2 * h * v) - f(x - 2 * h * v)) / (4 * h))
            ex.append(float(g(x) @ v))
            sc.append(abs(f(x)))
        err_rows[name] = (np.array(d1s), np.array(d2s), np.array(ex), max(1.0, max(sc)))
    # Hessian-vector products: central differences of the closed-form gradient
    d1s, d2s, ex, sc = [], [], [], []
    for v in dirs:
        d1s.append((p.grad(x + h * v, idx) - p.grad(x - h * v, idx)) / (2 * h))
        d2s.append((p.grad(x + 2 * h * v, idx) - p.grad(x - 2 * h * v, idx)) / (4 * h))
        ex.append(p.hvp(x, v, idx))
        sc.append(float(np.abs(p.grad(x, idx)).max()))
    err_rows["H_B v vs d/dt ∇f_B(x + tv)"] = (np.array(d1s), np.array(d2s), np.array(ex), max(1.0, max(sc)))
    for name, (d1, d2, exact, scale) in err_rows.items():
        tol = 4.0 * (float(np.max(np.abs(d2 - d1))) / 3.0 + 16 * np.finfo(float).eps * scale / h)
        err = float(np.max(np.abs(d1 - exact)))
        res.rows.append(make_row(CLAIM, f"{tag}, {len(idx)} samples, λ={LAM:g}", f"(a) finite differences: {name} "
                                 f"(largest error over {len(dirs)} directions; tolerance derived)", err, tol, "≤"))


# ------------------------------------------------------------------------------------ (b)
def _first_order(p, theta, x, lam, idx):
    """Per-minibatch first-order predicted cosines: cos(CV_B − λN_B(θ)δ, CV_B), δ = x − θ."""
    N = p.hvp_rows(theta, x - theta, part="residual")
    CV = p.sample_grads(x) - lam * p.sample_grads(theta)
    return alignment._cosines(alignment.batch_means(CV - lam * N, idx), alignment.batch_means(CV, idx))[0]


def _part_b(res, tag, p, theta, cfg, level):
    u = unit_direction(p.dim, DIRECTION_SEED)
    tn = float(np.linalg.norm(theta))
    smooth = p.activation != "relu"
    scatter = []
    summary = []
    for lam in ALIGN_LAMS:
        for r in R_GRID:
            x = theta + r * tn * u
            a = alignment.gradient_alignment(p, x, theta, lam, BATCH, n_batches=cfg["n_batches"], seed=ALIGN_SEED,
                                             level=level)
            m, lo, hi = a.cosine_mean
            pred = _first_order(p, theta, x, lam, a.batches)
            pm = float(np.nanmean(pred))
            q = a.cosine_quantiles
            summary.append(f"λ={lam:g} r={r:g}: {m:.4f} [{lo:.4f}, {hi:.4f}] (q5 {q[0]:.4f}, median {q[2]:.4f}; "
                           f"first order {pm:.4f}; ‖KD_B‖/‖CV_B‖ {a.norm_ratio_mean[0]:.3f}; full batch "
                           f"{a.full_cosine:.4f})")
            scatter.append({"instance": tag, "group": f"{p.activation}, λ = {lam:g}", "marker": f"r = {r:g}",
                            "theoretical": pm, "empirical": m, "ci_low": lo, "ci_high": hi})
            itag = f"{tag}, λ={lam:g}, r={r:g}, {a.n_batches} minibatches"
            if lam == 0.5 and r in NEAR:
                res.rows.append(make_row(CLAIM, itag, f"(b) mean cosine(KD_B, ∇f_B(x) − λ∇f_B(θ)) ≥ {COS_FLOOR:g} "
                                         "within 3 % of the teacher (pre-registered)", m, COS_FLOOR, "≥",
                                         ci_low=lo, ci_high=hi))
            if (lam == 0.5 and r in FAR) or (lam == 1.0 and r == NEAR[0]):
                res.rows.append(make_row(CLAIM, itag, f"(b) mean cosine ≤ 1 − {IDENTITY_GAP:g}: the identity of §2 "
                                         "fails measurably", m, 1.0 - IDENTITY_GAP, "≤", ci_low=lo, ci_high=hi))
            if smooth and r in NEAR:
                res.rows.append(make_row(CLAIM, itag, "(b) 1 − mean cosine vs first order 1 − cos(CV_B − λN_Bδ, CV_B) "
                                         f"(tolerance {FIRST_ORDER_RTOL:.0%} of it)", 1.0 - m, 1.0 - pm, "≈",
                                         tolerance=FIRST_ORDER_RTOL * (1.0 - pm), ci_low=1.0 - hi, ci_high=1.0 - lo))
            if not smooth and lam == 1.0 and r == NEAR[0]:
                res.rows.append(make_row(CLAIM, itag, f"(b) 1 − mean cosine ≥ {KINK_FACTOR:g} × first order "
                                         "1 − cos(CV_B − λN_Bδ, CV_B): the Jacobian jumps at the kinks of x̂",
                                         1.0 - m, KINK_FACTOR * (1.0 - pm), "≥", ci_low=1.0 - hi, ci_high=1.0 - lo))
    res.notes.append(f"{tag}: cosine(KD_B, CV_B) at x = θ + r‖θ‖u, mean [99% CI]: " + "; ".join(summary))
    return scatter


def _linear_control(res, cfg):
    ds = datasets.load_digits(standardize=True, bias=True)
    A, y = (ds.A, ds.y) if cfg["n"] is None else (ds.A[:cfg["n"]], ds.y[:cfg["n"]])
    p = SoftmaxRegression(A, y, ds.n_classes, bias=False, l2=cfg["l2"])
    theta = p.solution()
    x = theta + 0.1 * np.linalg.norm(theta) * unit_direction(p.dim, DIRECTION_SEED)
    a = alignment.gradient_alignment(p, x, theta, LAM, BATCH, n_batches=cfg["n_batches"], seed=ALIGN_SEED)
    worst = float(np.nanmax(np.abs(1.0 - a.cosines)))
    res.rows.append(make_row(CLAIM, f"digits n={p.n} softmax regression (linear), α={p.l2:g}, θ = x*, r=0.1, "
                             f"λ={LAM:g}, {a.n_batches} minibatches",
                             "(b) linear control: max |1 − cosine(KD_B, CV_B)| (the identity of §2)", worst,
                             LINEAR_TOL, "≤"))


# ------------------------------------------------------------------------------------ (c)
def _part_c(res, tag, p, xh, theta_es, cfg, level):
    near = xh + NEAR_TEACHER_R * np.linalg.norm(xh) * unit_direction(p.dim, DIRECTION_SEED + 3)
    q = t_quantile(level, 2 * len(ACTIVATIONS), cfg["mc_batches"])
    for tname, theta in ((f"θ_near (r={NEAR_TEACHER_R:g})", near),
                         (f"θ_ES (SGD {TEACHER_EPOCHS} epochs from default_x0)", theta_es)):
        nr = alignment.noise_reduction(p, xh, theta, batch_size=BATCH)
        ctag = (f"{tag}, x̂, {tname}, ‖θ − x̂‖/‖x̂‖ = {np.linalg.norm(theta - xh) / np.linalg.norm(xh):.3g}")
        lin = nr.linear_prediction
        res.rows.append(make_row(CLAIM, ctag, f"(c) control variate's factor at λ̂ = {nr.lam_hat:.4g} vs 1 − ρ² "
                                 "(identity)", nr.factor(nr.lam_hat, "cv"), lin, "≈",
                                 tolerance=LINEAR_TOL * max(1.0, lin)))
        kd_half = nr.factor(LAM, "kd")
        res.notes.append(f"{ctag}: ρ = {nr.rho:.4f}, λ̂ = {nr.lam_hat:.4g}, 1 − ρ² = {lin:.4g}; KD: ρ_KD = "
                         f"{nr.rho_kd:.4f}, λ̂_KD = {nr.lam_hat_kd:.4g}, 1 − ρ_KD² = {1 - nr.rho_kd ** 2:.4g}, KD "
                         f"factor at λ̂ = {nr.factor(nr.lam_hat, 'kd'):.4g}; at λ = {LAM:g}: KD {kd_half:.4g}, "
                         f"control variate {nr.factor(LAM, 'cv'):.4g}")
        if theta is near:
            cv_half = nr.factor(LAM, "cv")
            if p.activation != "relu":        # ReLU: the kinks of x̂ make KD differ even here (reported)
                res.rows.append(make_row(CLAIM, ctag, f"(c) KD's noise factor at λ = {LAM:g} vs the control "
                                         f"variate's (tolerance {NEAR_FACTOR_RTOL:.0%})", kd_half, cv_half, "≈",
                                         tolerance=NEAR_FACTOR_RTOL * cv_half))
            # Monte Carlo of the exact KD second moment at λ = 0.5
            rows = alignment.kd_rows(p, xh, theta, LAM) - LAM * p.l2 * theta
            idx = minibatch_indices(MC_SEED, np.arange(cfg["mc_batches"], dtype=np.uint64), 0, p.n, BATCH)
            vb = alignment.batch_means(rows, idx)
            m, h, _ = mean_half_width(np.einsum("ij,ij->i", vb, vb), q)
            exact = kd_half * nr.sigma2
            res.rows.append(make_row(CLAIM, ctag, f"(c) Monte Carlo E‖KD_B(x̂)‖² at λ = {LAM:g} "
                                     f"({cfg['mc_batches']} minibatches) vs the exact ω(b) expectation", float(m),
                                     exact, "≈", tolerance=float(h) + 1e-12 * exact, ci_low=m - h, ci_high=m + h))
        else:
            res.rows.append(make_row(CLAIM, ctag, f"(c) ρ²_KD − ρ² ≥ 0: KD's best factor 1 − ρ²_KD = "
                                     f"{1 - nr.rho_kd ** 2:.4g} ≤ the linear picture's 1 − ρ² = {lin:.4g}",
                                     nr.rho_kd ** 2 - nr.rho ** 2, 0.0, "≥"))


# ------------------------------------------------------------------------------------ (d)
def _lbfgs(fun, x0, maxiter=1000):
    out = scipy.optimize.minimize(fun, x0, jac=True, method="L-BFGS-B",
                                  options={"maxiter": maxiter, "maxcor": 30, "ftol": 0.0, "gtol": 1e-12})
    return out.x


def kd_fixed_point(p, theta, lam, x0):
    """x̃: a local minimiser of kd_loss(·; θ, λ) (ridge on the student) by L-BFGS from x0."""
    return _lbfgs(lambda z: (p.kd_loss(z, theta, lam), p.kd_grad(z, theta, lam)), x0)


def linear_picture_point(p, theta, lam, x0):
    """x_λ of the linear picture: a local minimiser of f(x) − λ⟨∇ℓ(θ), x⟩ (∇f(x_λ) = λ∇ℓ(θ)) from x0."""
    g = p.data_grad(theta)
    return _lbfgs(lambda z: (p.loss(z) - lam * float(g @ z), p.grad(z) - lam * g), x0)


def _part_d(res, tag, p, xh, theta, cfg, level, backend):
    S, epochs = cfg["seeds"], cfg["epochs"]
    data_rows = p.sample_grads(theta) - p.l2 * theta                                # ∇ℓ_i(θ)
    sgd_noise = GAMMA * batch_sq_norm(p.sample_grads(xh), BATCH) / 4.0
    x_tilde = kd_fixed_point(p, theta, LAM, xh)
    kd_noise = GAMMA * batch_sq_norm(alignment.kd_rows(p, x_tilde, theta, LAM), BATCH) / 4.0
    x_lin = linear_picture_point(p, theta, LAM, xh)
    lin_noise = GAMMA * batch_sq_norm(p.sample_grads(x_lin) - LAM * data_rows, BATCH) / 4.0
    f_hat, f_tilde, f_lin = p.f_star, p.loss(x_tilde), p.loss(x_lin)
    res.notes.append(f"{tag}: (d) x̃ (kd_loss, λ={LAM:g}): ‖∇‖ = {np.linalg.norm(p.kd_grad(x_tilde, theta, LAM)):.2e}, "
                     f"‖x̃ − x̂‖/‖x̂‖ = {np.linalg.norm(x_tilde - xh) / np.linalg.norm(xh):.3g}, f(x̃) = {f_tilde:.5f}; "
                     f"linear picture x_λ: f(x_λ) = {f_lin:.5f}; noise parts γσ²/4: SGD {sgd_noise:.3g}, KD "
                     f"{kd_noise:.3g}, linear picture {lin_noise:.3g}")
    plateaus, runs, kd_iid = {}, {}, None
    for sampling in ("iid", "reshuffle"):
        for est, x0 in (("sgd", xh), ("kd_loss", x_tilde)):
            out = simulate(p, theta, [0.0 if est == "sgd" else LAM], GAMMA, seeds=S, batch_size=BATCH, estimator=est,
                           x0=x0, epochs=epochs, record_every_epoch=1, sampling=sampling, backend=backend,
                           keep_iterates=(est == "kd_loss" and sampling == "iid"))
            for line in out.divergence_summary():
                res.notes.append(f"{tag} {est} {sampling}: {line}")
            f = out.subopt[0] + f_hat
            plateaus[(est, sampling)] = stats.plateau(out.steps, f, level=level)
            runs[(est, sampling)] = (out.steps, f)
            if out.iterates is not None:
                kd_iid = out
    dtag = f"{tag}, θ_ES, λ={LAM:g}, γ={GAMMA:g}, {S} seeds, {epochs} epochs"
    ps, pk = plateaus[("sgd", "iid")], plateaus[("kd_loss", "iid")]
    F_tilde = p.kd_loss(x_tilde, theta, LAM)
    F = np.full(kd_iid.iterates.shape[1:3], np.nan)                      # KD's own objective at the iterates
    for s_, r_ in np.ndindex(*F.shape):
        x = kd_iid.iterates[0, s_, r_]
        if np.all(np.isfinite(x)):
            F[s_, r_] = p.kd_loss(x, theta, LAM)
    pF = stats.plateau(kd_iid.steps, F, level=level)
    first_sgd, first_lin = f_hat + sgd_noise, f_lin + lin_noise
    res.rows.append(make_row(CLAIM, dtag + ", i.i.d.", "(d) SGD plateau E f(x_t) vs f(x̂) + γσ²(x̂)/4 (±50 % of the "
                             "noise part)", ps.mean, first_sgd, "≈", tolerance=NOISE_RTOL * sgd_noise,
                             ci_low=ps.ci_low, ci_high=ps.ci_high))
    res.rows.append(make_row(CLAIM, dtag + ", i.i.d.", "(d) KD's objective: plateau E kd_loss(x_t) vs kd_loss(x̃) + "
                             "γσ̃²/4 (±50 % of the noise part)", pF.mean, F_tilde + kd_noise, "≈",
                             tolerance=NOISE_RTOL * kd_noise, ci_low=pF.ci_low, ci_high=pF.ci_high))
    res.rows.append(make_row(CLAIM, dtag + ", i.i.d.", f"(d) |KD's training-loss plateau − the linear picture's "
                             f"f(x_λ) + γσ²_λ/4 = {first_lin:.5f}| ≥ its ±50 % noise allowance",
                             abs(pk.mean - first_lin), NOISE_RTOL * lin_noise, "≥"))
    # the order of the training-loss plateaus, where KD's bias f(x̃) − f(x̂) is clear of both noise parts
    bias = f_tilde - f_hat
    for sampling in ("iid", "reshuffle"):
        a, b = plateaus[("kd_loss", sampling)], plateaus[("sgd", sampling)]
        if bias > (1 + NOISE_RTOL) * (sgd_noise + kd_noise):
            res.rows.append(make_row(CLAIM, f"{dtag}, {sampling}", f"(d) KD's training-loss plateau ≥ SGD's (KD lower "
                                     f"limit vs SGD upper limit): KD's bias f(x̃) − f(x̂) = {bias:.3g} exceeds the "
                                     "noise parts", a.mean, b.ci_high, "≥", ci_low=a.ci_low, ci_high=a.ci_high))
        elif -bias > (1 + NOISE_RTOL) * (sgd_noise + kd_noise):
            res.rows.append(make_row(CLAIM, f"{dtag}, {sampling}", "(d) KD's training-loss plateau ≤ SGD's (KD upper "
                                     f"limit vs SGD lower limit): f(x̃) − f(x̂) = {bias:.3g}", a.mean, b.ci_low, "≤",
                                     ci_low=a.ci_low, ci_high=a.ci_high))
        else:
            res.notes.append(f"{dtag}, {sampling}: KD's bias f(x̃) − f(x̂) = {bias:.3g} is within the noise parts; "
                             "the order of the plateaus is reported, not judged")
    for est, name in (("sgd", "SGD"), ("kd_loss", "KD")):
        rr, iid = plateaus[(est, "reshuffle")], plateaus[(est, "iid")]
        res.rows.append(make_row(CLAIM, dtag, f"(d) {name} plateau, reshuffled ≤ i.i.d. (upper vs lower limit)",
                                 rr.mean, iid.ci_low, "≤", ci_low=rr.ci_low, ci_high=rr.ci_high))
    res.notes.append(f"{dtag}: plateaus E f(x_t) [99% CI]: " + "; ".join(
        f"{est} {sampling} {pl.mean:.5f} [{pl.ci_low:.5f}, {pl.ci_high:.5f}]" for (est, sampling), pl in plateaus.items())
        + f"; KD's objective kd_loss: plateau {pF.mean:.5f} [{pF.ci_low:.5f}, {pF.ci_high:.5f}] at kd_loss(x̃) = "
        f"{F_tilde:.5f}; first order: SGD {first_sgd:.5f}, KD's objective {F_tilde + kd_noise:.5f}, linear picture "
        f"{first_lin:.5f}")
    path = alignment.alignment_along(p, theta, kd_iid.iterates[:, :min(4, S), ::max(1, epochs // 5)],
                                     lams=[LAM], steps=kd_iid.steps[::max(1, epochs // 5)], batch_size=BATCH,
                                     n_batches=4, seed=ALIGN_SEED, level=level)
    res.notes.append(f"{dtag}: cosine(KD_B, CV_B) along the i.i.d. KD run (4 seeds × 4 minibatches per record), "
                     "step: mean [99% CI]: " + ", ".join(
                         f"{int(s)}: {m:.4f} [{lo:.4f}, {hi:.4f}]" for s, m, lo, hi in
                         zip(path.steps, path.mean[0], path.ci_low[0], path.ci_high[0])))
    _curves(res, dtag, runs, level)


def _curves(res, dtag, runs, level):
    """The training-loss curves E f(x_t) of the four runs of (d) (for the convergence plot)."""
    import pandas as pd
    frames = []
    for (est, sampling), (steps, f) in runs.items():
        m, lo, hi, _ = stats.mean_ci(f, axis=0, level=level)
        frames.append(pd.DataFrame({"instance": dtag, "method": f"{'SGD' if est == 'sgd' else 'KD'} {sampling}",
                                    "kind": "mc", "step": steps, "quantity": "f(x_t)", "mean": m, "ci_low": lo,
                                    "ci_high": hi}))
    out = pd.concat(frames, ignore_index=True)
    out.attrs.update(title="Claim 15: training loss of SGD (from x̂) and KD (kd_loss, from its fixed point x̃) with "
                           "a trained imperfect teacher, i.i.d. and reshuffled minibatches")
    res.curves.append(out)
