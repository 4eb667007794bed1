"""The constants of docs/theory.md §3, computed exactly wherever a formula exists.

``constants(problem, theta, batch_size)`` returns a frozen ``Constants`` with

* μ, L, L_max, the per-sample L_i, the expected smoothness 𝓛(b) and ω(b);
* the noise at the optimum σ²_* = E‖∇f_B(x*)‖² and the KD noise
  σ²_*(λ, θ) = E‖∇f_B(x*) − λ∇f_B(θ)‖² = c0 − 2λ c1 + λ² c2, with
  c0 = σ²_*, c1 = E⟨∇f_B(x*), ∇f_B(θ)⟩, c2 = E‖∇f_B(θ)‖² (method ``sigma2_kd``);
* the correlation ρ = c1 / sqrt(c0 c2), the teacher bias ‖∇f(θ)‖ and the distance
  ‖θ − x*‖ (in the problem's canonical coordinates);
* ``provenance``: how each value was obtained — "exact", "local at x*", "bound"
  or "path estimate" — and ``notes`` in words.

Sampling expectations are the exact finite-sum ω(b) formulas of
``kdsim.theory.sampling`` (never Monte Carlo); "exact" for them means exact
given x* (which problems compute to high accuracy).

How μ and L are obtained
------------------------
* Least squares: μ = λ_min(H), L = λ_max(H), H = (1/n)AᵀA + αI; L_i = ‖a_i‖² + α. Exact.
* Other problems (softmax, GLMs, deep linear) have no global constants worth the
  name; μ and L are the extreme *non-trivial* eigenvalues of ∇²f(x*) ("local at
  x*"). Without a ridge, directions along which f is invariant (softmax: adding
  one vector to every row; deep linear: the rescaling symmetries) make ∇²f(x*)
  singular; those are excluded: exactly, through ``problem.invariant_directions``
  when the problem offers it, else as the eigenvalues at or below 1e-9·λ_max.
  With a ridge (α > 0) the full Hessian is used. The per-sample L_i are
  λ_max(∇²f_i(x*)) (local) and, when the problem has them,
  ``problem.sample_smoothness()`` is kept beside them as ``L_i_bound`` (marked
  with the problem's ``smoothness_kind``, "bound" for softmax's ½‖a_i‖²).
* ``mu_path`` and ``pl_path`` give the empirical values along observed
  iterates ("path estimate").

Teacher gradients
-----------------
For a teacher θ in the student's parameter space the teacher rows are
∇f_i(θ) (``teacher_term="f"``, the distillation gradient of f analysed in §3–§6)
or ∇ℓ_i(θ) (``teacher_term="data"``, the literal KD loss of estimator
"kd_loss"). A deep-linear teacher given as an end-to-end map Θ̄ has no
parameter-space gradient at θ; its rows are then the function-space gradients
pulled back by the student's Jacobian at x*, J(x*)ᵀ∇g_i(Θ̄) — the teacher term
the KD estimator applies at x* (a note says so).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import _validate as V
from ..problems.base import Problem
from ..problems.least_squares import LeastSquares
from .sampling import batch_inner, omega

#: relative threshold below which a Hessian eigenvalue counts as a trivial (invariant) direction
TRIVIAL_EIG_RTOL = 1e-9

PROVENANCE_KINDS = ("exact", "local at x*", "bound", "path estimate")


def _safe_ratio(num, den):
    """num / den, NaN when den is 0 (no warning)."""
    return float(num / den) if den != 0 else float("nan")


@dataclass(frozen=True, eq=False)
class Constants:
    """Constants of docs/theory.md §3 for one (problem, teacher, batch size); see the module docstring."""

    n: int
    dim: int
    batch_size: int
    mu: float
    L: float
    L_max: float
    L_i: np.ndarray = field(repr=False)
    L_i_bound: np.ndarray | None = field(repr=False)
    L_max_bound: float | None
    expected_smoothness: float
    omega: float
    sigma2_star: float                 # c0 = E‖∇f_B(x*)‖²
    cross_star_teacher: float          # c1 = E⟨∇f_B(x*), ∇f_B(θ)⟩
    teacher_second_moment: float       # c2 = E‖∇f_B(θ)‖²
    rho: float
    teacher_bias: float                # ‖∇f(θ)‖ (teacher term's full-data mean)
    teacher_distance: float            # ‖θ − x*‖ in canonical coordinates
    teacher_term: str
    trivial_directions: int            # Hessian directions excluded from μ (0 for least squares)
    provenance: dict
    notes: tuple = ()
    x_star: np.ndarray = field(default=None, repr=False)
    theta: np.ndarray = field(default=None, repr=False)
    problem: Problem = field(default=None, repr=False)

    # ------------------------------------------------------------ KD noise
    @property
    def kd_noise_coefficients(self):
        """(c0, c1, c2) with σ²_*(λ, θ) = c0 − 2λ c1 + λ² c2."""
        return self.sigma2_star, self.cross_star_teacher, self.teacher_second_moment

    def sigma2_kd(self, lam):
        """σ²_*(λ, θ) = E‖∇f_B(x*) − λ∇f_B(θ)‖² at any λ (scalar or array)."""
        lam = np.asarray(lam, dtype=np.float64)
        if not np.all(np.isfinite(lam)):
            raise ValueError("lam must be finite")
        c0, c1, c2 = self.kd_noise_coefficients
        out = c0 - 2.0 * lam * c1 + lam * lam * c2
        return float(out) if out.ndim == 0 else out

    @property
    def condition_number(self):
        return _safe_ratio(self.L, self.mu)

    def expected_smoothness_at(self, batch_size):
        """𝓛(b') for another batch size with this instance's L and L_max."""
        return expected_smoothness(self.n, batch_size, self.L, self.L_max)

    def summary(self):
        """Plain dict of the scalar constants with their provenance (for tables)."""
        keys = ("n", "dim", "batch_size", "mu", "L", "L_max", "L_max_bound", "expected_smoothness",
                "omega", "sigma2_star", "cross_star_teacher", "teacher_second_moment", "rho",
                "teacher_bias", "teacher_distance", "trivial_directions")
        return {k: getattr(self, k) for k in keys} | {"provenance": dict(self.provenance)}


def expected_smoothness(n, batch_size, L, L_max):
    """𝓛(b) = n(b−1)/(b(n−1)) · L + (n−b)/(b(n−1)) · L_max (b-minibatches without replacement)."""
    n = V.int_in_range("n", n, 1)
    b = V.int_in_range("batch_size", batch_size, 1, n)
    L = V.nonnegative_float("L", L)
    L_max = V.nonnegative_float("L_max", L_max)
    if L_max < L * (1 - 1e-12):
        raise ValueError(f"L_max must be >= L (the largest per-sample constant bounds the mean's); "
                         f"got L = {L}, L_max = {L_max}")
    if n == 1:
        return float(L)
    return n * (b - 1) / (b * (n - 1)) * float(L) + (n - b) / (b * (n - 1)) * float(L_max)


# ----------------------------------------------------------------- helpers
def _linear_canonical_projector(problem):
    """P (dim, dim) when ``problem.canonical`` is an orthogonal linear projection of R^dim, else None.

    Softmax's class centring is one (its null space holds the invariant directions);
    least squares and the GLMs give P = I; the deep-linear end-to-end map is not linear.
    """
    d = problem.dim
    eye = np.eye(d)
    try:
        C = np.asarray(problem.canonical(eye), dtype=np.float64)
    except (ValueError, TypeError):
        return None
    if C.shape != (d, d):
        return None
    v = np.random.default_rng(0).standard_normal((2, d))
    lin = np.asarray(problem.canonical(v), dtype=np.float64)
    scale = max(1.0, float(np.abs(C).max()))
    if lin.shape != (2, d) or not np.allclose(lin, v @ C, rtol=1e-10, atol=1e-12 * scale):
        return None
    if not (np.allclose(C, C.T, atol=1e-12 * scale) and np.allclose(C @ C, C, atol=1e-10 * scale)):
        return None
    return 0.5 * (C + C.T)


def _trivial_basis(problem, x, H=None):
    """Orthonormal basis (k, dim) of the directions excluded from μ at x (k may be 0).

    * least squares: none (μ = λ_min(H) exactly);
    * ``problem.invariant_directions(x)`` when the problem offers it;
    * a canonical map that is an orthogonal linear projection P (softmax): the null space of
      P when l2 = 0, none when l2 > 0 (the ridge makes f strongly convex along it);
    * otherwise (GLMs: P = I, deep linear: nonlinear canonical map): the numerically-null
      eigenvectors of ∇²f(x) (eigenvalue ≤ 1e-9·max|eigenvalue|); for deep linear networks
      they are the hidden-layer symmetries, which a ridge does not remove (orthogonal ones).
    """
    none = np.zeros((0, problem.dim))
    if isinstance(problem, LeastSquares):
        return none
    hook = getattr(problem, "invariant_directions", None)
    if callable(hook):
        B = np.atleast_2d(np.asarray(hook(x), dtype=np.float64))
        if B.size == 0:
            return none
        q, r = np.linalg.qr(B.T)
        keep = np.abs(np.diag(r)) > 1e-12 * max(1.0, np.abs(np.diag(r)).max())
        return q[:, keep].T
    P = _linear_canonical_projector(problem)
    if P is not None:
        if problem.l2 > 0 and problem.l2_mask is None:
            return none
        w, U = np.linalg.eigh(np.eye(problem.dim) - P)
        U = U[:, w > 0.5]
        if problem.l2 > 0:          # l2_bias=False: the flat directions the ridge leaves free
            wr, V_ = np.linalg.eigh(U.T @ (problem.l2_mask[:, None] * U))
            U = U @ V_[:, wr < 0.5]
        return U.T
    if H is None:
        H = problem.hessian(x)
    w, U = np.linalg.eigh(0.5 * (H + H.T))
    scale = max(abs(w[-1]), abs(w[0]))
    null = w <= TRIVIAL_EIG_RTOL * scale
    return U[:, null].T


def _restricted_spectrum(H, basis):
    """Eigenvalues of H on the orthogonal complement of span(basis rows)."""
    H = 0.5 * (H + H.T)
    if basis.shape[0] == 0:
        return np.linalg.eigvalsh(H)
    # orthonormal basis of the complement
    q, _ = np.linalg.qr(np.concatenate([basis.T, np.eye(H.shape[0])], axis=1))
    comp = q[:, basis.shape[0]:H.shape[0]]
    return np.linalg.eigvalsh(comp.T @ H @ comp)


def teacher_rows(problem, theta, x_star, teacher_term="f", teacher_space="auto"):
    """Per-sample teacher gradients (n, dim), their mean, and a note (or "").

    ``teacher_space``: "parameter" uses ∇f_i(θ) (or ∇ℓ_i(θ)) at a teacher in the
    student's parameter space; "pullback" uses the problem's teacher term at x*
    (for a deep-linear end-to-end teacher, J(x*)ᵀ∇g_i(Θ̄)); "auto" picks
    "parameter" when θ is a parameter vector and "pullback" otherwise.
    """
    V.choice("teacher_term", teacher_term, ("f", "data"))
    V.choice("teacher_space", teacher_space, ("auto", "parameter", "pullback"))
    raw = np.asarray(theta, dtype=np.float64)
    is_param = raw.shape == (problem.dim,)
    if teacher_space == "auto":
        teacher_space = "parameter" if is_param else "pullback"
    if teacher_space == "parameter":
        if not is_param:
            raise ValueError(f"teacher_space='parameter' needs a teacher vector of length {problem.dim} "
                             f"(the student's parameters); got shape {raw.shape}")
        th = problem.check_teacher(raw)
        rows = problem.sample_grads(th)
        if teacher_term == "data":
            rows = rows - problem.ridge_term(problem.l2, th)
        return rows, rows.mean(axis=0), _parameter_teacher_note(problem)
    th = problem.check_teacher(raw)
    terms = problem.teacher_terms(th, teacher_term)
    n = problem.n
    X = np.tile(np.asarray(x_star, dtype=np.float64), (n, 1))
    rows = np.asarray(problem.batch_teacher_grad(X, terms, np.arange(n)[:, None]), dtype=np.float64)
    full = np.broadcast_to(problem.full_teacher_grad(X[:1], terms), (1, problem.dim))[0].copy()
    note = ("teacher rows are the problem's teacher term evaluated at x* (for a deep-linear "
            "end-to-end teacher: function-space gradients pulled back by J(x*)ᵀ), not ∇f_i(θ)")
    return rows, full, note


def _parameter_teacher_note(problem):
    """A note when parameter-space ∇f_i(θ) differs from the engines' KD teacher term (deep linear)."""
    if callable(getattr(problem, "pullback", None)):
        return ("teacher rows are the parameter-space ∇f_i(θ) of docs/theory.md §3; the engines' KD teacher "
                "term for this problem is J(x)ᵀ∇g_i(Θ̄), pulled back at the student "
                "(teacher_space='pullback' evaluates that at x*)")
    return ""


# --------------------------------------------------------------- the builder
def constants(problem, theta, batch_size=1, teacher_term="f", teacher_space="auto"):
    """Constants of docs/theory.md §3 for ``problem``, teacher ``theta`` and minibatch size ``batch_size``.

    Parameters
    ----------
    problem : Problem
        A kdsim problem.
    theta : array_like
        The teacher (student parameters; deep linear: also an end-to-end map).
    batch_size : int, default 1
        b in [1, n]; minibatches are drawn without replacement.
    teacher_term : {"f", "data"}, default "f"
        ∇f_i(θ) (the distillation gradient) or ∇ℓ_i(θ) (estimator "kd_loss").
    teacher_space : {"auto", "parameter", "pullback"}, default "auto"
        See ``teacher_rows``.

    Returns
    -------
    Constants
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be a kdsim problem; got {type(problem).__name__}")
    n = problem.n
    b = V.int_in_range("batch_size", batch_size, 1, n)
    x_star = problem.solution()
    om = omega(n, b)
    notes = []
    prov = {}

    H = problem.hessian(x_star)
    is_ls = isinstance(problem, LeastSquares)
    basis = _trivial_basis(problem, x_star, H)
    spec = _restricted_spectrum(H, basis)
    mu, L = float(spec[0]), float(spec[-1])
    if is_ls:
        if abs(mu) <= 1e-12 * max(L, 1.0):    # rank-deficient H: λ_min is 0 up to rounding
            mu = 0.0
        L_i = problem.sample_smoothness()
        L_i_bound = L_i.copy()
        prov.update(mu="exact", L="exact", L_i="exact", L_max="exact", L_i_bound="exact")
    else:
        L_i = np.asarray(problem.local_sample_smoothness(x_star), dtype=np.float64)
        prov.update(mu="local at x*", L="local at x*", L_i="local at x*", L_max="local at x*")
        try:
            L_i_bound = np.asarray(problem.sample_smoothness(), dtype=np.float64)
            prov["L_i_bound"] = getattr(problem, "smoothness_kind", "bound")
        except ValueError:
            L_i_bound = None
            prov["L_i_bound"] = "unavailable (no global per-sample constant)"
        if basis.shape[0]:
            notes.append(f"μ and L exclude {basis.shape[0]} invariant direction(s) of ∇²f(x*)")
        else:
            notes.append("μ and L from the full Hessian at x*")
    L_max = float(np.max(L_i))
    L_max_bound = float(np.max(L_i_bound)) if L_i_bound is not None else None
    Lcal = expected_smoothness(n, b, L, L_max)
    prov["expected_smoothness"] = "exact" if is_ls else "local at x*"

    # sampling expectations: exact finite sums
    G_star = problem.sample_grads(x_star)
    T_rows, T_full, note = teacher_rows(problem, theta, x_star, teacher_term, teacher_space)
    if note:
        notes.append(note)
    c0 = batch_inner(G_star, G_star, b)
    c1 = batch_inner(G_star, T_rows, b)
    c2 = batch_inner(T_rows, T_rows, b)
    rho = _safe_ratio(c1, np.sqrt(c0 * c2))
    for k in ("sigma2_star", "cross_star_teacher", "teacher_second_moment", "sigma2_kd", "rho", "teacher_bias"):
        prov[k] = "exact"
    raw = np.asarray(theta, dtype=np.float64)
    th = problem.check_teacher(raw)
    dist = float(np.linalg.norm(np.ravel(problem.canonical_teacher(th)) - np.ravel(problem.canonical(x_star))))
    prov["teacher_distance"] = "exact"
    return Constants(
        n=n, dim=problem.dim, batch_size=b, mu=mu, L=L, L_max=L_max, L_i=L_i, L_i_bound=L_i_bound,
        L_max_bound=L_max_bound, expected_smoothness=Lcal, omega=om, sigma2_star=c0,
        cross_star_teacher=c1, teacher_second_moment=c2, rho=rho,
        teacher_bias=float(np.linalg.norm(T_full)), teacher_distance=dist, teacher_term=teacher_term,
        trivial_directions=int(basis.shape[0]), provenance=prov, notes=tuple(notes),
        x_star=x_star, theta=th, problem=problem,
    )


# ------------------------------------------------------------ path estimators
def _iterates(problem, iterates):
    X = V.as_float_array("iterates", iterates)
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2 or X.shape[1] != problem.dim:
        raise ValueError(f"iterates must be an (N, {problem.dim}) array of parameter vectors; got shape {X.shape}")
    return X


def mu_path(problem, iterates, per_iterate=False, min_dist2=1e-24):
    """Empirical strong quasi-convexity constant along iterates (docs/theory.md §3, "path estimate").

    μ_path = min_t 2 (f* − f(x_t) − ⟨∇f(x_t), x* − x_t⟩) / ‖x_t − x*‖²,
    computed as 2(⟨∇f(x_t), x_t − x*⟩ − (f(x_t) − f*)) / ‖x_t − x*‖² with the
    problem's cancellation-free f(x_t) − f*. Differences x_t − x* exclude the
    invariant directions excluded from μ (softmax without ridge). Iterates closer to
    x* than sqrt(min_dist2)·max(1, ‖x*‖) are skipped (0/0). Returns the minimum
    (``per_iterate=True``: the per-iterate values, NaN where skipped).
    """
    X = _iterates(problem, iterates)
    x_star = problem.solution()
    basis = _trivial_basis(problem, x_star)
    D = X - x_star
    if basis.shape[0]:
        D = D - (D @ basis.T) @ basis
    d2 = np.einsum("td,td->t", D, D)
    G = problem.batch_full_grad(X)
    sub = problem.suboptimality(X)
    num = 2.0 * (np.einsum("td,td->t", G, D) - sub)
    ok = d2 > min_dist2 * max(1.0, float(x_star @ x_star))
    vals = np.full(X.shape[0], np.nan)
    vals[ok] = num[ok] / d2[ok]
    if per_iterate:
        return vals
    if not ok.any():
        raise ValueError("every iterate coincides with x*; μ_path is undefined")
    return float(np.min(vals[ok]))


def pl_path(problem, iterates, per_iterate=False, min_subopt=1e-300):
    """Empirical PL constant along iterates: min_t ‖∇f(x_t)‖² / (2 (f(x_t) − f*)) ("path estimate").

    Iterates with f(x_t) − f* ≤ ``min_subopt`` are skipped. Returns the minimum
    (``per_iterate=True``: the per-iterate values, NaN where skipped).
    """
    X = _iterates(problem, iterates)
    G = problem.batch_full_grad(X)
    sub = problem.suboptimality(X)
    ok = sub > min_subopt
    vals = np.full(X.shape[0], np.nan)
    vals[ok] = np.einsum("td,td->t", G[ok], G[ok]) / (2.0 * sub[ok])
    if per_iterate:
        return vals
    if not ok.any():
        raise ValueError("every iterate has f(x_t) = f*; the PL ratio is undefined")
    return float(np.min(vals[ok]))
