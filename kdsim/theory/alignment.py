"""Gradient alignment: how far the literal KD gradient is from the control variate of §2–§6.

For the linear models of docs/theory.md §2 the literal KD-loss gradient *is*
∇f_B(x) − λ∇f_B(θ) (τ = 1). For a network it is not (claim 15): the teacher's output residuals
are pulled back by the student's Jacobian, not the teacher's. This module measures the gap for
any problem with ``kd_grad`` and ``sample_grads`` and a teacher in the student's parameter space.

Per minibatch B (drawn without replacement), at weight λ and temperature τ:

* KD_B = ``kd_grad``(x, θ, λ, B, τ) − λwθ, the literal KD-loss gradient with the teacher's weight
  decay w (``teacher_term="f"``: w = α, what estimator "kd" runs for networks; "data": w = 0, the
  gradient of ``kd_loss``; or ``teacher_l2``);
* CV_B = ∇f_B(x) − λ∇f_B(θ), the parameter-space control variate the theory analyses;
* cos_B = ⟨KD_B, CV_B⟩ / (‖KD_B‖‖CV_B‖) and the norm ratio ‖KD_B‖ / ‖CV_B‖ (NaN where a norm is 0).

Both are exactly 1 for least squares, softmax at τ = 1 and the canonical GLMs with
``teacher_term="f"`` (and with "data" when α = 0), the identity of §2.

``gradient_alignment`` gives the per-minibatch values at one x with their mean (exact over every
b-subset when there are at most ``exact_limit`` of them, else a Monte Carlo mean over
``n_batches`` i.i.d. minibatches with a Student-t interval) and quantiles.
``alignment_along`` does the same at iterates recorded by ``simulate(..., keep_iterates=True)``
(``SimResult.iterates``, (λ, seed, record, dim)): per λ and record step, the mean over seeds with
a t-interval across seeds and quantiles over all minibatches — the quantity the authors log
during training. ``noise_reduction`` gives the noise-reduction factors at a point x̂:

    E‖∇f_B(x̂) − λ∇f_B(θ)‖² / E‖∇f_B(x̂)‖²   (control variate)  and  E‖KD_B(x̂)‖² / E‖∇f_B(x̂)‖²  (KD),

both exact finite-sum expectations over uniform b-subsets (the ω(b) identity of §1,
``kdsim.theory.sampling``: no Monte Carlo is needed), beside the linear prediction 1 − ρ² at λ̂
(§3, §6, computed from the per-sample gradients at x̂ as ``kdsim.theory.constants`` does at x*).
Since the KD gradient is affine in λ (the KD loss is), KD_B = ∇f_B(x) − λT^KD_B with per-sample
teacher rows T^KD_i = ∇f_i(x) − KD_i(λ = 1), and its factor is a quadratic in λ as well.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as _st

from .. import _validate as V
from ..problems.base import Problem
from ..rng import minibatch_indices
from .sampling import batch_inner

#: default quantile levels reported with every mean
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: enumerate every b-subset when there are at most this many (else Monte Carlo)
EXACT_LIMIT = 5000


# ----------------------------------------------------------------------------- helpers
def _problem(problem):
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be a kdsim problem; got {type(problem).__name__}")
    return problem


def _parameter_teacher(problem, theta):
    arr = np.asarray(theta, dtype=np.float64) if not isinstance(theta, np.ndarray) else theta
    if arr.shape != (problem.dim,):
        raise ValueError(f"theta must be a teacher in the student's parameter space, a vector of length "
                         f"{problem.dim} (∇f_B(θ) needs it); got shape {np.shape(theta)}")
    return problem.check_teacher(arr)


def _quantiles(quantiles):
    q = np.atleast_1d(np.asarray(quantiles, dtype=np.float64))
    if q.ndim != 1 or q.size == 0 or not np.all((q >= 0) & (q <= 1)):
        raise ValueError(f"quantiles must be a non-empty sequence of levels in [0, 1]; got {quantiles!r}")
    return tuple(float(v) for v in q)


def _level(level):
    level = V.positive_float("level", level, upper=1.0)
    if level >= 1.0:
        raise ValueError(f"level must satisfy 0 < level < 1; got {level}")
    return level


def _t_interval(values, level):
    """(mean, low, high, count) of the finite values: Student-t interval (collapses for < 2 values)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, math.nan, 0
    m = float(v.mean())
    if v.size < 2:
        return m, m, m, 1
    half = float(_st.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return m, m - half, m + half, int(v.size)


def _cosines(U, W):
    """Row-wise cosine and norm ratio ‖U‖/‖W‖ of (m, dim) arrays (NaN where a norm is 0)."""
    nu = np.linalg.norm(U, axis=-1)
    nw = np.linalg.norm(W, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.einsum("...d,...d->...", U, W) / (nu * nw)
        ratio = nu / nw
    bad = (nu == 0) | (nw == 0)
    cos = np.where(bad, np.nan, np.clip(cos, -1.0, 1.0))
    return cos, np.where(bad, np.nan, ratio)


def batch_means(rows, batches):
    """Minibatch means of per-sample rows: rows (n, dim), batches (m, b) -> (m, dim).

    A sparse averaging matrix, so that nothing of size m·b·dim is built.
    """
    import scipy.sparse

    idx = np.asarray(batches)
    m, b = idx.shape
    M = scipy.sparse.csr_matrix((np.full(m * b, 1.0 / b), idx.ravel(), np.arange(0, m * b + 1, b)),
                                shape=(m, rows.shape[0]))
    return np.asarray(M @ rows)


def _teacher_decay(problem, theta, teacher_term, teacher_l2):
    return problem.teacher_weight_decay(teacher_term, teacher_l2) * theta


def kd_rows(problem, x, theta, lam, temperature=1.0):
    """Per-sample literal KD-loss gradients KD_i(λ) of ``kd_loss`` (student ridge included), (n, dim).

    Uses the problem's ``sample_kd_grads`` when it has one (``MLP``), else ``kd_grad`` on each sample.
    The mean of the rows over a minibatch is ``kd_grad`` on it (the KD loss is a per-sample mean).
    """
    hook = getattr(problem, "sample_kd_grads", None)
    if callable(hook):
        return np.asarray(hook(x, theta, lam, None, temperature), dtype=np.float64)
    return np.stack([problem.kd_grad(x, theta, lam, np.array([i]), temperature) for i in range(problem.n)])


def _rows(problem, x, theta, temperature, teacher_term, teacher_l2):
    """(G, T_kd, T_cv): per-sample ∇f_i(x), KD teacher rows ∇f_i(x) − KD_i(1) + wθ, and ∇f_i(θ)."""
    G = problem.sample_grads(x)
    T_kd = G - kd_rows(problem, x, theta, 1.0, temperature) + _teacher_decay(problem, theta, teacher_term, teacher_l2)
    T_cv = problem.sample_grads(theta)
    return G, T_kd, T_cv


def _batches(n, batch_size, batches, n_batches, seed, exact_limit):
    """(index array (m, b), exact) of the minibatches to evaluate."""
    if batches is not None:
        idx = np.asarray(batches)
        if idx.ndim != 2 or idx.shape[0] == 0 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"batches must be an (m, b) integer array of sample indices; got shape {idx.shape}")
        if idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"batches entries must lie in [0, {n}); got range [{idx.min()}, {idx.max()}]")
        return idx.astype(np.int64), False
    b = V.int_in_range("batch_size", batch_size, 1, n)
    exact_limit = V.int_in_range("exact_limit", exact_limit, 0)
    if math.comb(n, b) <= exact_limit:
        return np.array(list(itertools.combinations(range(n), b)), dtype=np.int64).reshape(-1, b), True
    m = V.int_in_range("n_batches", n_batches, 2)
    seed = V.int_in_range("seed", seed, 0, 2**63 - 1)
    return minibatch_indices(seed, np.arange(m, dtype=np.uint64), 0, n, b), False


# ----------------------------------------------------------------------------- one point
@dataclass(frozen=True, eq=False)
class Alignment:
    """Cosines and norm ratios between KD_B and CV_B at one point (module docstring).

    ``cosines`` and ``norm_ratios`` hold one value per minibatch (``batches``, (m, b)); ``exact``
    says that every b-subset was enumerated, so the means are exact expectations (their interval
    collapses); otherwise the minibatches are i.i.d. draws (``kdsim.rng``, seed ``seed``) and the
    interval is a Student-t interval at ``level``. ``full_cosine`` and ``full_norm_ratio`` use the
    full data (B = all n samples). ``distance`` = ‖x − θ‖, ``relative_distance`` = ‖x − θ‖/‖θ‖.
    """

    lam: float
    batch_size: int
    temperature: float
    teacher_term: str
    exact: bool
    batches: np.ndarray = field(repr=False)
    cosines: np.ndarray = field(repr=False)
    norm_ratios: np.ndarray = field(repr=False)
    full_cosine: float
    full_norm_ratio: float
    distance: float
    relative_distance: float
    quantile_levels: tuple = QUANTILES
    level: float = 0.99
    seed: int = 0

    def _stat(self, values):
        if self.exact:
            v = values[np.isfinite(values)]
            m = float(v.mean()) if v.size else math.nan
            return m, m, m, int(v.size)
        return _t_interval(values, self.level)

    @property
    def n_batches(self):
        return int(self.cosines.shape[0])

    @property
    def cosine_mean(self):
        """(mean, ci_low, ci_high) of the cosine over minibatches."""
        return self._stat(self.cosines)[:3]

    @property
    def norm_ratio_mean(self):
        """(mean, ci_low, ci_high) of ‖KD_B‖/‖CV_B‖ over minibatches."""
        return self._stat(self.norm_ratios)[:3]

    @property
    def cosine_quantiles(self):
        """Quantiles of the per-minibatch cosines at ``quantile_levels``."""
        return np.nanquantile(self.cosines, self.quantile_levels)

    @property
    def norm_ratio_quantiles(self):
        return np.nanquantile(self.norm_ratios, self.quantile_levels)

    def summary(self):
        """Plain dict of the scalars (for tables)."""
        c, cl, ch = self.cosine_mean
        r, rl, rh = self.norm_ratio_mean
        out = {"lam": self.lam, "batch_size": self.batch_size, "temperature": self.temperature,
               "relative_distance": self.relative_distance, "distance": self.distance, "n_batches": self.n_batches,
               "exact": self.exact, "cosine_mean": c, "cosine_ci_low": cl, "cosine_ci_high": ch,
               "norm_ratio_mean": r, "norm_ratio_ci_low": rl, "norm_ratio_ci_high": rh,
               "full_cosine": self.full_cosine, "full_norm_ratio": self.full_norm_ratio}
        for q, v in zip(self.quantile_levels, self.cosine_quantiles):
            out[f"cosine_q{q:g}"] = float(v)
        return out


def gradient_alignment(problem, x, theta, lam, batch_size=1, *, batches=None, n_batches=2000, seed=0,
                       temperature=1.0, teacher_term="f", teacher_l2=None, quantiles=QUANTILES, level=0.99,
                       exact_limit=EXACT_LIMIT):
    """Cosine and norm ratio between the literal KD gradient KD_B and ∇f_B(x) − λ∇f_B(θ) at x.

    Parameters
    ----------
    problem : Problem
        Any kdsim problem with ``kd_grad`` and ``sample_grads`` (least squares, softmax, GLMs, deep
        linear, ``MLP``).
    x, theta : array_like
        The student and a teacher in its parameter space (dim,).
    lam : float
        KD weight λ.
    batch_size : int, default 1
        b; minibatches are uniform b-subsets (without replacement).
    batches : array_like, optional
        (m, b) sample indices to use instead of drawn ones.
    n_batches : int, default 2000
        Monte Carlo minibatches when the b-subsets are more than ``exact_limit``.
    seed : int, default 0
        Seed of the minibatch stream (``kdsim.rng.minibatch_indices``).
    temperature : float, default 1
        τ of the literal KD loss (softmax losses).
    teacher_term : {"f", "data"}, default "f"
        The teacher's weight decay in KD_B: α ("f") or 0 ("data"); ``teacher_l2`` overrides it.
    quantiles : sequence of float
        Quantile levels reported.
    level : float, default 0.99
        Confidence level of the Monte Carlo interval.
    exact_limit : int, default 5000
        Enumerate every b-subset when C(n, b) is at most this.

    Returns
    -------
    Alignment
    """
    p = _problem(problem)
    x = V.as_vector("x", x, p.dim)
    theta = _parameter_teacher(p, theta)
    lam = V.finite_float("lam", lam)
    temperature = V.positive_float("temperature", temperature)
    V.choice("teacher_term", teacher_term, ("f", "data"))
    q = _quantiles(quantiles)
    level = _level(level)
    idx, exact = _batches(p.n, batch_size, batches, n_batches, seed, exact_limit)
    G, T_kd, T_cv = _rows(p, x, theta, temperature, teacher_term, teacher_l2)
    KD = G - lam * T_kd
    CV = G - lam * T_cv
    cos, ratio = _cosines(batch_means(KD, idx), batch_means(CV, idx))
    fcos, fratio = _cosines(KD.mean(axis=0), CV.mean(axis=0))
    dist = float(np.linalg.norm(x - theta))
    tn = float(np.linalg.norm(theta))
    return Alignment(lam=lam, batch_size=int(idx.shape[1]), temperature=temperature, teacher_term=teacher_term,
                     exact=exact, batches=idx, cosines=cos, norm_ratios=ratio, full_cosine=float(fcos),
                     full_norm_ratio=float(fratio), distance=dist,
                     relative_distance=dist / tn if tn > 0 else math.inf,
                     quantile_levels=q, level=level, seed=int(seed))


# ----------------------------------------------------------------------------- noise reduction
@dataclass(frozen=True, eq=False)
class NoiseReduction:
    """Noise-reduction factors at x̂ (module docstring); every expectation is exact over b-subsets.

    ``sigma2`` = E‖∇f_B(x̂)‖²; control variate: ``cross`` = E⟨∇f_B(x̂), ∇f_B(θ)⟩,
    ``teacher_second_moment`` = E‖∇f_B(θ)‖², ρ = cross/√(σ²·E‖∇f_B(θ)‖²), λ̂ = cross/E‖∇f_B(θ)‖²
    (§3, §6 with x̂ in place of x*); KD: the same with the KD teacher rows T^KD_i (``cross_kd``,
    ``teacher_second_moment_kd``, ``rho_kd``, ``lam_hat_kd``). ``lam`` is the weight of
    ``cv_factor`` and ``kd_factor`` (default λ̂), and ``linear_prediction`` = 1 − ρ², which
    equals ``cv_factor`` at λ = λ̂ (an identity).
    """

    lam: float
    batch_size: int
    temperature: float
    sigma2: float
    cross: float
    teacher_second_moment: float
    cross_kd: float
    teacher_second_moment_kd: float
    rho: float
    lam_hat: float
    rho_kd: float
    lam_hat_kd: float
    teacher_bias: float          # ‖∇f(θ)‖
    teacher_bias_kd: float       # ‖mean of T^KD_i‖

    def factor(self, lam, kind="kd"):
        """E‖g_B(λ)‖² / E‖∇f_B(x̂)‖² for g = KD ("kd") or the control variate ("cv"), at any λ."""
        V.choice("kind", kind, ("kd", "cv"))
        lam = np.asarray(lam, dtype=np.float64)
        c1, c2 = (self.cross_kd, self.teacher_second_moment_kd) if kind == "kd" else \
                 (self.cross, self.teacher_second_moment)
        out = (self.sigma2 - 2.0 * lam * c1 + lam * lam * c2) / self.sigma2
        return float(out) if out.ndim == 0 else out

    @property
    def cv_factor(self):
        return self.factor(self.lam, "cv")

    @property
    def kd_factor(self):
        return self.factor(self.lam, "kd")

    @property
    def linear_prediction(self):
        """1 − ρ²: the control variate's factor at λ̂ (docs/theory.md §6)."""
        return 1.0 - self.rho ** 2

    def summary(self):
        keys = ("lam", "batch_size", "temperature", "sigma2", "rho", "lam_hat", "rho_kd", "lam_hat_kd",
                "teacher_bias", "teacher_bias_kd")
        return {k: getattr(self, k) for k in keys} | {"cv_factor": self.cv_factor, "kd_factor": self.kd_factor,
                                                      "linear_prediction": self.linear_prediction}


def _ratio(num, den):
    return float(num / den) if den != 0 else math.nan


def noise_reduction(problem, x, theta, lam=None, batch_size=1, temperature=1.0, teacher_term="f", teacher_l2=None):
    """Noise-reduction factors of KD and of the control variate at x̂ = ``x`` (a ``NoiseReduction``).

    ``lam`` defaults to λ̂ = E⟨∇f_B(x̂), ∇f_B(θ)⟩ / E‖∇f_B(θ)‖². All expectations are exact over
    uniform b-subsets (``kdsim.theory.sampling.batch_inner``).
    """
    p = _problem(problem)
    x = V.as_vector("x", x, p.dim)
    theta = _parameter_teacher(p, theta)
    b = V.int_in_range("batch_size", batch_size, 1, p.n)
    temperature = V.positive_float("temperature", temperature)
    V.choice("teacher_term", teacher_term, ("f", "data"))
    G, T_kd, T_cv = _rows(p, x, theta, temperature, teacher_term, teacher_l2)
    c0 = batch_inner(G, G, b)
    c1, c2 = batch_inner(G, T_cv, b), batch_inner(T_cv, T_cv, b)
    k1, k2 = batch_inner(G, T_kd, b), batch_inner(T_kd, T_kd, b)
    lam_hat = _ratio(c1, c2)
    lam = lam_hat if lam is None else V.finite_float("lam", lam)
    return NoiseReduction(lam=float(lam), batch_size=b, temperature=temperature, sigma2=c0, cross=c1,
                          teacher_second_moment=c2, cross_kd=k1, teacher_second_moment_kd=k2,
                          rho=_ratio(c1, np.sqrt(c0 * c2)), lam_hat=lam_hat, rho_kd=_ratio(k1, np.sqrt(c0 * k2)),
                          lam_hat_kd=_ratio(k1, k2), teacher_bias=float(np.linalg.norm(T_cv.mean(axis=0))),
                          teacher_bias_kd=float(np.linalg.norm(T_kd.mean(axis=0))))


# ----------------------------------------------------------------------------- along iterates
@dataclass(frozen=True, eq=False)
class AlignmentPath:
    """Alignment at recorded iterates, per λ and record step (``alignment_along``).

    ``cosines`` and ``norm_ratios`` are (λ, record, seed, minibatch) (NaN for a diverged or
    missing iterate). ``mean``, ``ci_low``, ``ci_high`` (λ, record): the mean cosine over seeds
    and minibatches, with a Student-t interval across seeds (each seed's minibatch average is one
    observation; across minibatches when there is a single seed); ``quantiles`` (λ, record, q)
    over every minibatch; ``norm_ratio_mean`` likewise; ``relative_distance`` (λ, record, seed)
    = ‖x_t − θ‖/‖θ‖.
    """

    lams: np.ndarray
    steps: np.ndarray
    cosines: np.ndarray = field(repr=False)
    norm_ratios: np.ndarray = field(repr=False)
    relative_distance: np.ndarray = field(repr=False)
    mean: np.ndarray = field(repr=False)
    ci_low: np.ndarray = field(repr=False)
    ci_high: np.ndarray = field(repr=False)
    quantiles: np.ndarray = field(repr=False)
    norm_ratio_mean: np.ndarray = field(repr=False)
    quantile_levels: tuple = QUANTILES
    level: float = 0.99

    def records(self):
        """Long table as a list of dicts, one per (λ, record step) (``pandas.DataFrame(path.records())``)."""
        rows = []
        for i, lam in enumerate(self.lams):
            for r, step in enumerate(self.steps):
                row = {"lam": float(lam), "step": int(step),
                       "relative_distance": float(np.nanmean(self.relative_distance[i, r]))
                       if np.isfinite(self.relative_distance[i, r]).any() else math.nan,
                       "cosine_mean": self.mean[i, r], "ci_low": self.ci_low[i, r], "ci_high": self.ci_high[i, r],
                       "norm_ratio_mean": self.norm_ratio_mean[i, r]}
                row.update({f"cosine_q{q:g}": self.quantiles[i, r, k] for k, q in enumerate(self.quantile_levels)})
                rows.append(row)
        return rows


def _iterates(problem, iterates, lams, steps):
    """(X (L, S, R, dim), lams (L,), steps (R,)) from a SimResult or an array."""
    if hasattr(iterates, "iterates") and hasattr(iterates, "lams"):
        res = iterates
        if res.iterates is None:
            raise ValueError("the SimResult holds no iterates: run simulate(..., keep_iterates=True)")
        X = np.asarray(res.iterates, dtype=np.float64)
        lams = np.asarray(res.lams, dtype=np.float64) if lams is None else V.lambda_grid(lams)
        steps = np.asarray(res.steps) if steps is None else np.asarray(steps)
    else:
        X = np.asarray(iterates, dtype=np.float64)
        if X.ndim < 2 or X.ndim > 4 or X.shape[-1] != problem.dim:
            raise ValueError(f"iterates must have shape (record, {problem.dim}), (seed, record, {problem.dim}) or "
                             f"(λ, seed, record, {problem.dim}); got {X.shape}")
        X = X.reshape((1,) * (4 - X.ndim) + X.shape)
        if lams is None:
            raise TypeError("lams is needed with an array of iterates (one KD weight per leading row)")
        lams = V.lambda_grid(lams)
        steps = np.arange(X.shape[2]) if steps is None else np.asarray(steps)
    if X.ndim != 4 or X.shape[-1] != problem.dim:
        raise ValueError(f"iterates must be (λ, seed, record, {problem.dim}); got {X.shape}")
    if lams.shape[0] != X.shape[0]:
        raise ValueError(f"lams has {lams.shape[0]} values; the iterates have {X.shape[0]} λ rows")
    if steps.shape != (X.shape[2],):
        raise ValueError(f"steps must have one entry per record ({X.shape[2]}); got shape {steps.shape}")
    return X, lams, steps


def alignment_along(problem, theta, iterates, lams=None, steps=None, batch_size=1, n_batches=8, seed=0,
                    temperature=1.0, teacher_term="f", teacher_l2=None, quantiles=QUANTILES, level=0.99):
    """Alignment of KD_B with ∇f_B(x_t) − λ∇f_B(θ) at recorded iterates (an ``AlignmentPath``).

    ``iterates``: a ``SimResult`` of ``simulate(..., keep_iterates=True)`` (its ``iterates``, ``lams``
    and ``steps`` are used), or an array (λ, seed, record, dim) — also (seed, record, dim) or
    (record, dim) for one λ — with ``lams`` (and optionally ``steps``). At every iterate,
    ``n_batches`` fresh minibatches of size ``batch_size`` are drawn (``kdsim.rng``, seed ``seed``;
    not the ones the run used) and KD_B, CV_B are evaluated on each (three gradient calls per
    minibatch, no per-sample rows). Diverged (NaN) iterates are skipped.
    """
    p = _problem(problem)
    theta = _parameter_teacher(p, theta)
    X, lams, steps = _iterates(p, iterates, lams, steps)
    b = V.int_in_range("batch_size", batch_size, 1, p.n)
    m = V.int_in_range("n_batches", n_batches, 1)
    seed = V.int_in_range("seed", seed, 0, 2**63 - 1)
    temperature = V.positive_float("temperature", temperature)
    V.choice("teacher_term", teacher_term, ("f", "data"))
    qs = _quantiles(quantiles)
    level = _level(level)
    decay = _teacher_decay(p, theta, teacher_term, teacher_l2)
    L, S, R, _ = X.shape
    cos = np.full((L, R, S, m), np.nan)
    ratio = np.full((L, R, S, m), np.nan)
    tn = float(np.linalg.norm(theta))
    with np.errstate(invalid="ignore"):
        reldist = np.transpose(np.linalg.norm(X - theta, axis=-1), (0, 2, 1)) / (tn if tn > 0 else np.nan)
    streams = np.arange(m, dtype=np.uint64)
    for i, lam in enumerate(lams):
        for s in range(S):
            for r in range(R):
                x = X[i, s, r]
                if not np.all(np.isfinite(x)):
                    continue
                idx = minibatch_indices(seed, streams, (i * S + s) * R + r, p.n, b)
                KD = np.stack([p.kd_grad(x, theta, lam, B, temperature) for B in idx]) - lam * decay
                CV = np.stack([p.grad(x, B) - lam * p.grad(theta, B) for B in idx])
                cos[i, r, s], ratio[i, r, s] = _cosines(KD, CV)
    mean = np.full((L, R), np.nan)
    lo, hi, rmean = mean.copy(), mean.copy(), mean.copy()
    quant = np.full((L, R, len(qs)), np.nan)
    for i in range(L):
        for r in range(R):
            c = cos[i, r]
            if not np.isfinite(c).any():
                continue
            with np.errstate(invalid="ignore"), _quiet():
                per_seed = np.nanmean(c, axis=1) if S > 1 else c[0]
            mean[i, r], lo[i, r], hi[i, r], _ = _t_interval(per_seed, level)
            quant[i, r] = np.nanquantile(c, qs)
            rmean[i, r] = float(np.nanmean(ratio[i, r]))
    return AlignmentPath(lams=np.asarray(lams), steps=np.asarray(steps), cosines=cos, norm_ratios=ratio,
                         relative_distance=reldist, mean=mean, ci_low=lo, ci_high=hi, quantiles=quant,
                         norm_ratio_mean=rmean, quantile_levels=qs, level=level)


class _quiet:
    """Silence numpy's 'Mean of empty slice' RuntimeWarning for seeds without a finite value."""

    def __enter__(self):
        import warnings
        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)
