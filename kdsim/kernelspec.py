"""The kernel spec: what an engine needs to know of a problem, and the formulas engines share.

Every problem family kdsim runs is one layered structure (docs/theory.md §2): parameters
x = (W_1, …, W_L) flattened row-major, logits z_i = W_L⋯W_1 a_i, an output residual
r_i = link(z_i) − y_i, and per-sample data gradients J(x)ᵀ(r_i a_iᵀ). A problem exports a
``KernelSpec`` of that structure (``Problem.kernel_spec``): the data, the link, the layer
shapes, the ridge, the teacher's per-sample quantities for one estimator, and the
references of the records. Engines read the spec and import no problem class.

The link and record formulas are written here once against an array module ``xp``
(numpy or CuPy); the problems' own ``suboptimality`` calls them with numpy, and the
numba records kernel (``engines._kernels_records``) is tested equal to them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: link name -> residual code of the numba layered kernels
LINK_CODES = {"identity": 0, "softmax": 1, "logistic": 2, "exp": 3}
#: hidden-layer activation -> code of the numba layered kernels (MLPs; "identity": linear layers)
ACTIVATION_CODES = {"identity": 0, "relu": 1, "sigmoid": 2, "tanh": 3}
#: Taylor coefficients 1/(j + 2)! of h(t) = e^t − 1 − t = t² Σ_j t^j/(j + 2)!
H_COEF = np.array([1.0 / math.factorial(j + 2) for j in range(19)])


# ----------------------------------------------------------------- the spec
@dataclass(frozen=True, eq=False)
class KernelSpec:
    """A frozen description of one problem and teacher for the engines (arrays float64, read-only).

    ``family``: "least_squares", "softmax", "logistic", "poisson" or "deep_linear";
    ``link``: a key of ``LINK_CODES``; ``A`` (n, d_in) inputs, ``Y`` (n, d_out) targets
    (one-hot for softmax losses); ``shapes``: the layer shapes (rows, cols), layer k mapping
    cols → rows; ``l2``: the ridge α; ``l2_mask``: None (the ridge on every coordinate) or the
    (dim,) 0/1 mask of the coordinates it covers (``l2_bias=False`` leaves the bias out).
    Teacher (for the estimator the spec was made for; zeros when it has no teacher):
    ``teacher_residuals`` r^θ_i (n, d_out), ``teacher_map`` (1/n) Σ r^θ_i a_iᵀ (d_out, d_in),
    ``teacher_ridge`` (dim,): αθ for the distillation gradient of f, 0 for the data loss.
    Records: ``x_star`` and ``theta`` in canonical coordinates; ``refs`` the family's
    constants of the cancellation-free f − f* (see ``suboptimality``) and ``record_row_bytes``,
    the bytes of its temporaries per row (it runs in row blocks).
    Tempered KD (softmax links, ``temperature`` τ ≠ 1): ``teacher_probs`` (n, d_out) are the
    teacher's tempered probabilities softmax(z^θ_i/τ), and the output residual of the literal
    KD loss is (1 − a)(softmax(z) − y) + a·τ·(softmax(z/τ) − softmax(z^θ/τ)) (``tempered_residual``).
    MLPs (family "mlp"): ``activation`` of the hidden layers (a key of ``ACTIVATION_CODES``) and
    ``biases`` (every layer has one, stored after the weights: ``bias_offsets``); the output layer is
    linear, the link acts on it. The teacher enters through its output residuals only (the literal
    KD loss); ``teacher_map`` is unused (zeros) and the full teacher term is a full-data
    back-propagation at the student.
    """

    family: str
    link: str
    A: np.ndarray
    Y: np.ndarray
    shapes: tuple
    l2: float
    teacher_residuals: np.ndarray
    teacher_map: np.ndarray
    teacher_ridge: np.ndarray
    x_star: np.ndarray
    theta: np.ndarray
    refs: dict = field(default_factory=dict)
    record_row_bytes: int = 0
    temperature: float = 1.0
    teacher_probs: np.ndarray | None = None
    l2_mask: np.ndarray | None = None
    activation: str = "identity"
    biases: bool = False

    def __post_init__(self):
        if self.link not in LINK_CODES:
            raise ValueError(f"link must be one of {', '.join(LINK_CODES)}; got {self.link!r}")
        if self.activation not in ACTIVATION_CODES:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATION_CODES)}; got {self.activation!r}")
        for name in ("A", "Y", "teacher_residuals", "teacher_map", "teacher_ridge", "x_star", "theta",
                     "teacher_probs", "l2_mask"):
            if getattr(self, name) is None:
                continue
            arr = np.array(getattr(self, name), dtype=np.float64)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    @property
    def n(self):
        return self.A.shape[0]

    @property
    def l2_weights(self):
        """The ridge per coordinate: α, or α·``l2_mask`` ((dim,) array)."""
        return self.l2 if self.l2_mask is None else self.l2 * self.l2_mask

    def ridge_vector(self):
        """The ridge per coordinate as a (dim,) array (α everywhere without a mask): the kernels' form."""
        return np.broadcast_to(np.asarray(self.l2_weights, dtype=np.float64), (self.dim,)).copy()

    def record_factor(self):
        """(F, a) with ½(‖Fe‖² + a‖e‖²) = f(x) − f* on least squares (e = x − x*): the Gram factor and α,
        or, with a ridge mask, a square factor of AᵀA/n + α·diag(mask) and a = 0."""
        F = self.refs["F"]
        if self.l2_mask is None:
            return np.array(F), float(self.l2)
        rows = np.sqrt(self.l2) * np.diag(self.l2_mask)[self.l2_mask > 0]
        return np.linalg.qr(np.vstack([F, rows]), mode="r"), 0.0

    @property
    def d_in(self):
        return self.shapes[0][1]

    @property
    def d_out(self):
        return self.shapes[-1][0]

    @property
    def depth(self):
        return len(self.shapes)

    @property
    def dims(self):
        """Widths (d_in, h_1, …, d_out)."""
        return (self.shapes[0][1],) + tuple(r for r, _ in self.shapes)

    @property
    def offsets(self):
        """Start of each layer in the flat parameter vector, and the end (dim)."""
        return _offsets(self.shapes)

    @property
    def bias_offsets(self):
        """Start of each layer's bias in the flat parameter vector, and the end (dim); None without biases."""
        if not self.biases:
            return None
        w = self.offsets[-1]
        return tuple(int(w + v) for v in np.concatenate([[0], np.cumsum([r for r, _ in self.shapes])]))

    @property
    def dim(self):
        return self.bias_offsets[-1] if self.biases else self.offsets[-1]

    @property
    def activation_code(self):
        return ACTIVATION_CODES[self.activation]

    @property
    def linear_layers(self):
        """True when z = W_L⋯W_1 a (no activation, no bias): the end-to-end map exists."""
        return self.activation == "identity" and not self.biases

    @property
    def link_code(self):
        return LINK_CODES[self.link]

    @property
    def teacher_full(self):
        """The teacher's full-data term in parameter space for one layer: vec(teacher_map) + ridge."""
        if self.depth != 1:
            raise ValueError("teacher_full is a parameter-space vector only for one-layer families; "
                             "deep nets pull teacher_map back through the student's layers")
        return self.teacher_map.ravel() + self.teacher_ridge

    def affine_shift(self, corrected):
        """κ of v's recursion in the affine form x_t(λ) = u_t + λ v_t (docs/theory.md §5.1):

            v_{t+1} = v_t − γ((H_B + αI) v_t − (1/b) Σ_{i∈B} a_i r^θ_i − κ),

        κ = the teacher's ridge term, minus its full-data term T for corrected KD.
        """
        return self.teacher_ridge - self.teacher_full if corrected else self.teacher_ridge.copy()

    def record_refs(self, xp=np):
        """The record references as arrays of module ``xp`` (float64): x_star, theta, A, Y and ``refs``."""
        def dev(v):
            return None if v is None else (xp.asarray(v) if isinstance(v, np.ndarray) else v)
        return RecordRefs(self.family, self.link, self.shapes, self.l2, dev(self.A), dev(self.Y),
                          dev(self.x_star), dev(self.theta), {k: dev(v) for k, v in self.refs.items()},
                          dev(self.l2_weights) if self.l2_mask is not None else self.l2, self.activation, self.biases)


@dataclass(frozen=True, eq=False)
class RecordRefs:
    """What the records need, on one array module (``KernelSpec.record_refs``)."""

    family: str
    link: str
    shapes: tuple
    l2: float
    A: object
    Y: object
    x_star: object
    theta: object
    refs: dict
    l2_weights: object = None       # α, or α·mask as an array of the module (records' ridge term)
    activation: str = "identity"
    biases: bool = False

    def __post_init__(self):
        if self.l2_weights is None:
            object.__setattr__(self, "l2_weights", self.l2)


# ----------------------------------------------------------------- links
def expit(xp, z):
    """σ(z) = 1/(1 + e^{−z}) without overflow."""
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def link_apply(link, xp, Z):
    """Mean prediction link(Z) of logits Z (…, K): the residual is link(Z) − target."""
    if link == "identity":
        return Z
    if link == "softmax":
        E = xp.exp(Z - Z.max(axis=-1, keepdims=True))
        return E / E.sum(axis=-1, keepdims=True)
    if link == "logistic":
        return expit(xp, Z)
    if link == "exp":
        return xp.exp(Z)
    raise ValueError(f"link must be one of {', '.join(LINK_CODES)}; got {link!r}")


# ----------------------------------------------------------------- layers
def softmax_rows(xp, Z):
    """softmax over the last axis, shifted by the row maximum."""
    E = xp.exp(Z - Z.max(axis=-1, keepdims=True))
    return E / E.sum(axis=-1, keepdims=True)


def tempered_residual(xp, Z, Y, Q, a, tau):
    """Output residual of the literal tempered KD loss: (1 − a)(softmax(z) − y) + a·τ·(softmax(z/τ) − q).

    ``Q``: the teacher's tempered probabilities; ``a`` broadcasts against the rows. The τ² weight of the
    distillation term and the 1/τ of its chain rule leave the factor τ (docs/theory.md §2).
    """
    return (1.0 - a) * (softmax_rows(xp, Z) - Y) + (a * tau) * (softmax_rows(xp, Z / tau) - Q)


def layer_views(X, shapes, offsets):
    """Layer matrices of rows X (…, dim): [(…, r, c)] (views of X where possible)."""
    lead = X.shape[:-1]
    return [X[..., o:o + r * c].reshape(lead + (r, c)) for (r, c), o in zip(shapes, offsets[:-1])]


def chain(Ws, suffix=True):
    """Prefix products Q[k] = W_{k−1}⋯W_0 (Q[0] None: the identity; Q[L] the end-to-end map) and
    suffix products P[k] = W_{L−1}⋯W_{k+1} (P[L−1] None) of layers Ws[0..L−1] (any array module)."""
    depth = len(Ws)
    Q = [None] * (depth + 1)
    for k in range(depth):
        Q[k + 1] = Ws[k] if Q[k] is None else Ws[k] @ Q[k]
    P = [None] * depth
    if suffix:
        for k in range(depth - 1, 0, -1):
            P[k - 1] = Ws[k] if P[k] is None else P[k] @ Ws[k]
    return P, Q


def end_to_end(X, shapes, offsets):
    """End-to-end maps W_L⋯W_1 of rows X (…, dim): (…, d_out, d_in)."""
    return chain(layer_views(X, shapes, offsets), suffix=False)[1][-1]


# ----------------------------------------------------------------- f − f* pieces
def expm1_minus_id(xp, t):
    """h(t) = e^t − 1 − t without cancellation (relative accuracy ~1e-16 for every t).

    |t| ≤ 1: t² Σ_j t^j/(j+2)! by Horner (truncation below 1e-18 relative);
    |t| > 1: expm1(t) − t, where the subtraction loses at most a factor 2.
    """
    small = xp.abs(t) <= 1.0
    ts = xp.where(small, t, 0.0)
    out = xp.full_like(ts, H_COEF[-1])
    for c in H_COEF[-2::-1]:               # Horner
        out = out * ts + c
    out = out * ts * ts
    tl = xp.where(small, 0.0, t)
    return xp.where(small, out, xp.expm1(tl) - tl)


def _lse_last(xp, Z):
    m = Z.max(axis=-1, keepdims=True)
    return (m + xp.log(xp.exp(Z - m).sum(axis=-1, keepdims=True)))[..., 0]


def ridge_quadratic(E, alpha):
    """α‖e‖² per row of E, or Σ_p α_p e_p² when ``alpha`` is a per-coordinate array (a ridge mask)."""
    if getattr(alpha, "ndim", 0) == 0:
        return alpha * (E * E).sum(axis=1)
    return (E * E) @ alpha


def least_squares_subopt(xp, E, F, alpha):
    """½(‖F e‖² + α‖e‖²) per row of E = X − x* (FᵀF = AᵀA/n): ½ eᵀ(H + αI)e without cancellation
    (α per coordinate with a ridge mask: ``ridge_quadratic``)."""
    FE = E @ F.T
    return 0.5 * ((FE * FE).sum(axis=1) + ridge_quadratic(E, alpha))


def softmax_gap(xp, Delta, p_star, logp_star):
    """D_i = lse(z*_i + δ_i) − lse(z*_i) − p*_iᵀδ_i ≥ 0 of logit changes Delta (n, T, K).

    With c_i = p*_iᵀδ_i, D_i = log1p(Σ_k p*_k h(δ_k − c_i)) (every term ≥ 0); where
    max|δ − c| > 1 the stable log-sum-exp of log p* + δ − c instead. Returns (T, n).
    """
    p = p_star[:, None, :]                                                   # (n, 1, K)
    Dc = Delta - (Delta * p).sum(axis=-1, keepdims=True)
    big = xp.abs(Dc).max(axis=-1) > 1.0
    w = (p * expm1_minus_id(xp, xp.where(big[..., None], 0.0, Dc))).sum(axis=-1)
    return xp.where(big, _lse_last(xp, logp_star[:, None, :] + Dc), xp.log1p(w)).T


def softmax_subopt(xp, E, A, n_classes, p_star, logp_star, g_star, alpha):
    """f(x) − f* of softmax regression per row of E = X − x* (T, K·d'):

        f(x) − f* = mean_i D_i + ∇f(x*)ᵀe + ½α‖e‖²,

    D_i from ``softmax_gap`` of the logit changes δ_i = E a_i (computed from e, not as a
    difference of logits); ∇f(x*) is evaluated in extended precision by the problem.
    """
    T = E.shape[0]
    d = E.shape[1] // n_classes
    Delta = (A @ E.reshape(T * n_classes, d).T).reshape(A.shape[0], T, n_classes)
    D = softmax_gap(xp, Delta, p_star, logp_star)
    return D.mean(axis=1) + E @ g_star + 0.5 * ridge_quadratic(E, alpha)


def logistic_refs(z_star):
    """Constants of the logistic Bregman divergence at z* = A x*: σ(z*), σ(−z*), log σ(z*), log σ(−z*)."""
    return {"s": expit(np, z_star), "sb": expit(np, -z_star),
            "log_s": -np.logaddexp(0.0, -z_star), "log_sb": -np.logaddexp(0.0, z_star)}


def logistic_bregman(xp, delta, s, sb, log_s, log_sb):
    """B_ψ(z* + δ, z*) of ψ(z) = log(1 + e^z): the two-class softmax form.

    With u = (−sδ, s̄δ), B = log1p(s̄ h(u_0) + s h(u_1)) (non-negative terms); where
    max|u| > 1, logaddexp(log s̄ + u_0, log s + u_1).
    """
    u0, u1 = -s * delta, sb * delta
    big = xp.maximum(xp.abs(u0), xp.abs(u1)) > 1.0
    small = xp.log1p(sb * expm1_minus_id(xp, xp.where(big, 0.0, u0))
                     + s * expm1_minus_id(xp, xp.where(big, 0.0, u1)))
    return xp.where(big, xp.logaddexp(log_sb + u0, log_s + u1), small)


def poisson_refs(z_star):
    """Constants of the Poisson Bregman divergence at z*: z* and e^{z*}."""
    return {"zs": np.asarray(z_star, dtype=np.float64), "ez": np.exp(z_star)}


def poisson_bregman(xp, delta, zs, ez):
    """B_ψ(z* + δ, z*) of ψ = exp: e^{z*} h(δ) for |δ| ≤ 1, e^{z*+δ} − e^{z*}(1 + δ) beyond."""
    big = xp.abs(delta) > 1.0
    small = ez * expm1_minus_id(xp, xp.where(big, 0.0, delta))
    return xp.where(big, xp.exp(zs + xp.where(big, delta, 0.0)) - ez * (1.0 + delta), small)


def glm_subopt(xp, E, A, link, g_star, alpha, refs):
    """f(x) − f* of a canonical GLM per row of E = X − x*:

        mean_i B_ψ(z*_i + δ_i, z*_i) + ∇f(x*)ᵀe + ½α‖e‖²,   δ = A e.
    """
    delta = E @ A.T                                                          # (T, n)
    if link == "logistic":
        D = logistic_bregman(xp, delta, refs["s"], refs["sb"], refs["log_s"], refs["log_sb"])
    else:
        D = poisson_bregman(xp, delta, refs["zs"], refs["ez"])
    return D.mean(axis=1) + E @ g_star + 0.5 * ridge_quadratic(E, alpha)


def deep_squared_subopt(xp, M, X, M_star, Rc_T, G_star, alpha, x_star_sq):
    """f(x) − f* of a deep linear net with squared loss from its end-to-end maps M (T, d_out, d_in):

        ⟨∇g(M*), E⟩ + ½‖E Rcᵀ‖² + ½α(‖x‖² − ‖x*‖²),   E = M − M*,  Σ_xx = RcᵀRc

    (G_star None when ∇g(M*) = 0: full-rank widths and no ridge).
    """
    E = M - M_star
    ER = E @ Rc_T
    out = 0.5 * (ER * ER).sum(axis=(1, 2))
    if G_star is not None:
        out = out + (E * G_star).sum(axis=(1, 2))
    if alpha > 0:
        out = out + 0.5 * alpha * ((X * X).sum(axis=1) - x_star_sq)
    return out


def deep_softmax_subopt(xp, M, X, A, Y, alpha, f_star):
    """f(x) − f* of a deep linear net with softmax loss: mean_i (lse(z_i) − z_iᵀy_i) + ½α‖x‖² − f*."""
    T, K, d = M.shape
    Z = (A @ M.reshape(T * K, d).T).reshape(A.shape[0], T, K)
    zy = (Z * Y[:, None, :]).sum(axis=-1)
    return (_lse_last(xp, Z) - zy).mean(axis=0) + 0.5 * alpha * (X * X).sum(axis=1) - f_star


# ----------------------------------------------------------------- records
def canonical(refs, X, xp=np):
    """Rows X (T, dim) in the coordinates distances are measured in (float64)."""
    if refs.family == "deep_linear":
        return end_to_end(X, refs.shapes, _offsets(refs.shapes)).reshape(X.shape[0], -1)
    if refs.family == "mlp":                     # the function on the training data, scaled by 1/√n
        Z = mlp_outputs(xp, X, refs.A, refs.shapes, refs.activation, refs.biases)
        return Z.reshape(X.shape[0], -1) / math.sqrt(refs.A.shape[0])
    if refs.family == "softmax":
        K = refs.shapes[0][0]
        W = X.reshape(X.shape[:-1] + (K, -1))
        return (W - W.mean(axis=-2, keepdims=True)).reshape(X.shape)
    return X


def suboptimality(refs, X, xp=np):
    """f(x) − f* of rows X (T, dim), float64, without cancellation (one formula per family; an MLP's is
    the plain difference f(x) − f*: its f* is a local minimum's, and no Bregman form applies)."""
    r = refs.refs
    if refs.family == "mlp":
        return _mlp_subopt(xp, refs, X, mlp_outputs(xp, X, refs.A, refs.shapes, refs.activation, refs.biases))
    if refs.family == "deep_linear":
        M = end_to_end(X, refs.shapes, _offsets(refs.shapes))
        if refs.link == "identity":
            return deep_squared_subopt(xp, M, X, r["M_star"], r["Rc_T"], r.get("G_star"), refs.l2, r["x_star_sq"])
        return deep_softmax_subopt(xp, M, X, refs.A, refs.Y, refs.l2, r["f_star"])
    E = X - r["x_star_raw"]
    if refs.family == "least_squares":
        return least_squares_subopt(xp, E, r["F"], refs.l2_weights)
    if refs.family == "softmax":
        return softmax_subopt(xp, E, refs.A, refs.shapes[0][0], r["p_star"], r["logp_star"], r["g_star"],
                              refs.l2_weights)
    return glm_subopt(xp, E, refs.A, refs.link, r["g_star"], refs.l2_weights, r)


#: bytes of temporaries one block of rows of ``suboptimality`` may take (its (n, K) logit blocks)
ROW_BLOCK_BYTES = 1 << 26


def rows_per_block(row_bytes):
    """Rows whose temporaries (``row_bytes`` each) fit ``ROW_BLOCK_BYTES`` (at least one)."""
    return max(1, ROW_BLOCK_BYTES // max(1, int(row_bytes)))


def in_row_blocks(fn, X, row_bytes, xp=np):
    """fn over rows of X in blocks whose temporaries (``row_bytes`` per row) fit ``ROW_BLOCK_BYTES``."""
    block = rows_per_block(row_bytes)
    if X.shape[0] <= block:
        return fn(X)
    return xp.concatenate([fn(X[r0:r0 + block]) for r0 in range(0, X.shape[0], block)])


def block_bytes(row_bytes, rows):
    """Temporaries of ``in_row_blocks`` over at most ``rows`` rows: one block, or all rows if fewer."""
    return int(min(rows_per_block(row_bytes), max(1, rows)) * row_bytes)


def _mlp_subopt(xp, refs, X, Z):
    """f(x) − f* of an MLP from its outputs Z (T, n, d_out) on the training data."""
    if refs.link == "identity":
        data = 0.5 * ((Z - refs.Y[None]) ** 2).sum(axis=-1).mean(axis=-1)
    else:
        data = (_lse_last(xp, Z) - (Z * refs.Y[None]).sum(axis=-1)).mean(axis=-1)
    return data + 0.5 * ridge_quadratic(X, refs.l2_weights) - refs.refs["f_star"]


def _mlp_record_values(refs, X, xp):
    """An MLP's three records from one forward pass of every sample (its distances and f − f* both need it)."""
    Z = mlp_outputs(xp, X, refs.A, refs.shapes, refs.activation, refs.biases)                # (T, n, d_out)
    C = Z.reshape(X.shape[0], -1) / math.sqrt(refs.A.shape[0])
    return (((C - refs.x_star) ** 2).sum(axis=1), _mlp_subopt(xp, refs, X, Z), ((C - refs.theta) ** 2).sum(axis=1))


def record_values(refs, X, xp=np, row_bytes=0, subopt=None):
    """(dist2_opt, subopt, dist2_teacher) of rows X (T, dim), float64; f − f* in row blocks
    (``row_bytes``: its temporaries per row, ``KernelSpec.record_row_bytes``). ``subopt`` replaces
    ``suboptimality`` for a compiled twin of it."""
    if refs.family == "mlp" and subopt is None:
        block = rows_per_block(row_bytes)
        parts = [_mlp_record_values(refs, X[r0:r0 + block], xp) for r0 in range(0, max(1, X.shape[0]), block)]
        return tuple(xp.concatenate([p[k] for p in parts]) for k in range(3))
    C = canonical(refs, X, xp)
    d2o = ((C - refs.x_star) ** 2).sum(axis=1)
    d2t = ((C - refs.theta) ** 2).sum(axis=1)
    subopt = subopt or (lambda Xb: suboptimality(refs, Xb, xp))
    return d2o, in_row_blocks(subopt, X, row_bytes, xp), d2t


# ----------------------------------------------------------------- MLPs
def activation(xp, kind, Z):
    """σ(Z) of a hidden layer: "relu", "sigmoid", "tanh" or "identity"."""
    if kind == "relu":
        return xp.maximum(Z, 0.0)
    if kind == "sigmoid":
        return expit(xp, Z)
    if kind == "tanh":
        return xp.tanh(Z)
    return Z


def activation_d1(xp, kind, H):
    """σ'(z) from the activation H = σ(z) (ReLU: 1 where h > 0, i.e. z > 0, else 0)."""
    if kind == "relu":
        return (H > 0.0).astype(H.dtype)
    if kind == "sigmoid":
        return H * (1.0 - H)
    if kind == "tanh":
        return 1.0 - H * H
    return xp.ones_like(H)


def mlp_layers(X, shapes, biases):
    """(Ws, bs) of parameter rows X (..., dim): Ws[l] (..., h_l, h_{l−1}), bs[l] (..., h_l) or None (views)."""
    lead = X.shape[:-1]
    offs = _offsets(shapes)
    Ws = [X[..., o:o + r * c].reshape(lead + (r, c)) for (r, c), o in zip(shapes, offs[:-1])]
    if not biases:
        return Ws, [None] * len(shapes)
    bo = offs[-1] + np.concatenate([[0], np.cumsum([r for r, _ in shapes])])
    return Ws, [X[..., int(o):int(o) + r] for (r, _), o in zip(shapes, bo[:-1])]


def mlp_forward(xp, Ws, bs, Ain, kind):
    """Layer inputs Us (Us[0] = Ain, then σ of each hidden layer) and the outputs z (linear last layer).
    Ws[l] (..., h_l, h_{l−1}); Ain (..., b, d_in) or (b, d_in), broadcast against the weights."""
    U, Us = Ain, [Ain]
    L = len(Ws)
    for k in range(L):
        Z = U @ xp.swapaxes(Ws[k], -1, -2)
        if bs[k] is not None:
            Z = Z + bs[k][..., None, :]
        if k == L - 1:
            return Us, Z
        U = activation(xp, kind, Z)
        Us.append(U)


def mlp_backward(xp, Ws, Us, D, kind, biases):
    """Σ over samples of J_i(x)ᵀ D_i for output deltas D (..., b, d_out): (gWs, gbs) per layer."""
    L = len(Ws)
    gWs, gbs = [None] * L, [None] * L
    for k in range(L - 1, -1, -1):
        gWs[k] = xp.swapaxes(D, -1, -2) @ Us[k]
        gbs[k] = D.sum(axis=-2) if biases else None
        if k > 0:
            D = (D @ Ws[k]) * activation_d1(xp, kind, Us[k])
    return gWs, gbs


def mlp_pack(xp, gWs, gbs, lead):
    """The flat parameter rows (lead + (dim,)) of per-layer blocks (``mlp_layers``' layout)."""
    parts = [g.reshape(lead + (g.shape[-2] * g.shape[-1],)) for g in gWs]
    if gbs[0] is not None:
        parts += list(gbs)
    return xp.concatenate(parts, axis=-1)


def mlp_outputs(xp, X, A, shapes, kind, biases):
    """The outputs z_i of parameter rows X (T, dim) on every row of A: (T, n, d_out)."""
    Ws, bs = mlp_layers(X, shapes, biases)
    return mlp_forward(xp, Ws, bs, A, kind)[1]


def affine_sums(xp, U, V, x_star, theta, F):
    """The sums of the least-squares records' quadratics in λ at the pairs (u, v): rows U, V (N, d), float64.

    With e = u − x*, w = u − θ: (‖e‖², ⟨e,v⟩, ‖v‖², ‖w‖², ⟨w,v⟩, ‖Fe‖², ⟨Fe,Fv⟩, ‖Fv‖²) stacked (8, N), and Fe,
    Fv (N, m) (docs/theory.md §5.1: x(λ) = u + λv, so every record is a quadratic in λ).
    """
    E = U - x_star
    W = U - theta
    FE = E @ F.T
    FV = V @ F.T
    sums = xp.stack([(E * E).sum(axis=1), (E * V).sum(axis=1), (V * V).sum(axis=1), (W * W).sum(axis=1),
                     (W * V).sum(axis=1), (FE * FE).sum(axis=1), (FE * FV).sum(axis=1), (FV * FV).sum(axis=1)])
    return sums, E, W, FE, FV


def affine_coefficients(xp, sums, alpha):
    """(N, 3, 3): rows dist2_opt, subopt, dist2_teacher of c0 + c1·λ + c2·λ² from ``affine_sums``."""
    e0, e1, e2, w0, w1, q0, q1, q2 = sums
    rows = [(e0, 2.0 * e1, e2), (0.5 * (q0 + alpha * e0), q1 + alpha * e1, 0.5 * (q2 + alpha * e2)),
            (w0, 2.0 * w1, e2)]
    return xp.stack([xp.stack(r, axis=-1) for r in rows], axis=1)


def affine_record_values(xp, U, V, acoef, x_star, theta, F, alpha, quad_tol):
    """(dist2_opt, subopt, dist2_teacher), each (L, N), of x = u + a_k·v for the pairs U, V (N, d) float64.

    Each record is evaluated from its quadratic in a; where that evaluation may have lost more than its
    share to cancellation (the value below ``quad_tol`` times the sum of the terms' magnitudes, the
    rule of the numba kernel ``_kernels_ls._records_block``) it is evaluated directly from e + a·v
    instead, so records near x* keep their digits.
    """
    sums, E, W, FE, FV = affine_sums(xp, U, V, x_star, theta, F)
    e0, e1, e2, w0, w1, q0, q1, q2 = sums
    out = [xp.empty((len(acoef), U.shape[0])) for _ in range(3)]
    for k, a in enumerate(float(v) for v in acoef):
        s1 = e0 + a * (2.0 * e1 + a * e2)
        s2 = w0 + a * (2.0 * w1 + a * e2)
        s3 = q0 + a * (2.0 * q1 + a * q2)
        ok = ((s1 >= quad_tol * (e0 + abs(2.0 * a * e1) + a * a * e2))
              & (s2 >= quad_tol * (w0 + abs(2.0 * a * w1) + a * a * e2))
              & (s3 >= quad_tol * (q0 + abs(2.0 * a * q1) + a * a * q2)))
        redo = xp.flatnonzero(~ok)
        if int(redo.shape[0]):
            Va = a * V[redo]
            s1[redo] = ((E[redo] + Va) ** 2).sum(axis=1)
            s2[redo] = ((W[redo] + Va) ** 2).sum(axis=1)
            s3[redo] = ((FE[redo] + a * FV[redo]) ** 2).sum(axis=1)
        out[0][k], out[1][k], out[2][k] = s1, 0.5 * (s3 + alpha * s1), s2
    return tuple(out)


def saved_records(refs, saved, div, rec_steps, row_block, xp=np, subopt=None):
    """(dist2_opt, subopt, dist2_teacher), each ``div.shape + (R,)``, of iterates ``saved`` (…, R, dim) saved at
    the record steps ``rec_steps`` (an array of ``xp``): NaN where the trajectory had diverged (``div`` its
    step, −1 if never), evaluated ``row_block`` saved iterates at a time without copying all of them; a start
    (step 0) that every trajectory shares is evaluated once."""
    R, dim = saved.shape[-2], saved.shape[-1]
    valid = (div[..., None] < 0) | (rec_steps < div[..., None])
    flat = saved.reshape(-1, dim)
    out = [xp.full(valid.size, np.nan) for _ in range(3)]
    if R > 0 and flat.shape[0] > R and int(rec_steps[0]) == 0:
        # every trajectory saved the same start (one x0): its records are evaluated once
        start = saved.reshape(-1, R, dim)[:, 0]
        if bool(xp.all(start == start[:1])):
            for o, v in zip(out, record_values(refs, start[:1], xp, subopt=subopt)):
                o[::R] = v[0]
            valid[..., 0] = False
    valid = valid.ravel()
    for b0 in range(0, flat.shape[0], row_block):
        keep = b0 + xp.flatnonzero(valid[b0:b0 + row_block])
        if int(keep.shape[0]) == 0:
            continue
        for o, v in zip(out, record_values(refs, flat[keep], xp, subopt=subopt)):
            o[keep] = v
    return tuple(v.reshape(div.shape + (saved.shape[-2],)) for v in out)


def _offsets(shapes):
    return tuple(int(v) for v in np.concatenate([[0], np.cumsum([r * c for r, c in shapes])]))
