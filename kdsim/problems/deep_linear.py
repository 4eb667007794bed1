"""Deep linear networks: x = (W_1, …, W_L), end-to-end map W(x) = W_L ⋯ W_1.

f(x) = (1/n) Σ_i g_i(W(x)) + (α/2)‖x‖²,  g_i(M) = ½‖M a_i − y_i‖²  or  −log softmax(M a_i)_{y_i}.

Everything is closed form (no autodiff): the gradient is the chain rule
∇_{W_l} f = (W_L⋯W_{l+1})ᵀ ∇g_B(W(x)) (W_{l−1}⋯W_1)ᵀ, the Hessian-vector product
is the product rule applied to it, and the KD gradient is the function-space form
of docs/theory.md §2. See ``DeepLinear`` for the conventions.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.optimize

from .. import _validate as V
from .. import kernelspec as KS
from .base import Problem

LOSSES = ("squared", "softmax")

#: arrays built inside batched methods are kept below about this many float64 entries
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class DeepLinearTeacherTerms:
    """Teacher quantities of a deep linear problem that do not depend on the student.

    The teacher enters the KD gradient only through ∇g_i(Θ̄) = r_i a_iᵀ, so storing the
    output-space residuals r_i is enough:

    * ``theta_map``  Θ̄, the teacher's end-to-end map (d_out, d_in);
    * ``residuals``  r_i = ∂g_i/∂z at z = Θ̄ a_i, (n, d_out): Θ̄a_i − y_i (squared loss),
      softmax(Θ̄a_i) − e_{y_i} (softmax);
    * ``full_map``   ∇g(Θ̄) = (1/n) Σ_i r_i a_iᵀ, (d_out, d_in);
    * ``ridge``      α·θ for term "f" with a same-architecture teacher, else zeros (dim,);
    * ``term``       "f" or "data"; ``same_architecture`` whether θ was a parameter vector.

    The parameter-space teacher term of a trajectory at x is J(x)ᵀ(·) of these plus ``ridge``
    (``DeepLinear.batch_teacher_grad`` / ``full_teacher_grad``).
    """

    theta_map: np.ndarray
    residuals: np.ndarray
    full_map: np.ndarray
    ridge: np.ndarray
    term: str
    same_architecture: bool


def _widths(hidden):
    """Validate hidden widths: a sequence of positive integers (empty: one layer)."""
    if isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__"):
        raise TypeError("hidden must be a sequence of positive integer widths, e.g. (8,) or (8, 4), "
                        f"or () for a single layer; got {hidden!r}")
    out = []
    for k, h in enumerate(hidden):
        if isinstance(h, (bool, np.bool_)) or not isinstance(h, numbers.Integral) or int(h) < 1:
            raise ValueError(f"hidden widths must be positive integers; got hidden[{k}] = {h!r}")
        out.append(int(h))
    return tuple(out)


def _labels(Y, n, n_classes):
    """Validate integer class labels in [0, K); return (labels as int64, K)."""
    arr = np.asarray(Y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"Y must be a 1-d array of {n} integer class labels (one per row of A) "
                         f"for loss='softmax'; got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ValueError("Y must be finite integer class labels (no NaN or inf)")
        if not np.all(arr == np.round(arr)):
            raise ValueError("Y must hold integer class labels for loss='softmax'; got non-integer values")
    elif arr.dtype.kind not in "iu":
        raise TypeError(f"Y must hold integer class labels for loss='softmax'; got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0:
        raise ValueError(f"Y labels must lie in [0, n_classes); got minimum {arr.min()}")
    top = int(arr.max()) + 1
    if n_classes is None:
        K = top
        if K < 2:
            raise ValueError("Y must contain at least 2 classes for loss='softmax' "
                             "(or pass n_classes >= 2)")
    else:
        K = V.int_in_range("n_classes", n_classes, max(2, top))
    return arr, K


def _softmax(Z):
    E = np.exp(Z - Z.max(axis=-1, keepdims=True))
    return E / E.sum(axis=-1, keepdims=True)


def _logsumexp(Z):
    m = Z.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(Z - m).sum(axis=-1, keepdims=True)))[..., 0]


def _T(M):
    """Transpose of the last two axes."""
    return np.swapaxes(M, -1, -2)


def _random_orthonormal(rng, rows, cols):
    """rows × cols matrix with orthonormal columns (Haar, sign-fixed QR)."""
    G = rng.standard_normal((rows, cols))
    Q, R = np.linalg.qr(G)
    return Q * np.where(np.diag(R) < 0, -1.0, 1.0)


class DeepLinear(Problem):
    """Deep linear network x = (W_1, …, W_L) on inputs A (n, d_in).

    Layers W_1 (h_1×d_in), W_2 (h_2×h_1), …, W_L (d_out×h_{L−1}); ``hidden=()`` is a single
    layer (a linear model). The parameter vector x concatenates the row-major flattened
    W_1, …, W_L (dim = Σ sizes); the end-to-end map is W(x) = W_L⋯W_1 (d_out×d_in).

    Losses (per sample, on the end-to-end map M, z = M a_i):

    * ``loss="squared"``: g_i(M) = ½‖z − y_i‖², Y real (n, d_out);
    * ``loss="softmax"``: g_i(M) = −log softmax(z)_{y_i}, Y integer labels (n,) in [0, K),
      d_out = K = ``n_classes`` (default max(Y) + 1).

    f(x) = (1/n) Σ_i g_i(W(x)) + (α/2)‖x‖², α = ``l2`` (ridge on every weight).

    Teachers. A teacher is either a flat vector of length ``dim`` (same architecture; its
    end-to-end map is used) or an end-to-end map Θ̄ of shape (d_out, d_in) from any
    architecture. ``end_to_end`` gives the map of either.

    KD in function space (docs/theory.md §2). The KD loss is
    (1−λ)·loss(W(x)a, y) + λ·loss(W(x)a, teacher's prediction Θ̄a) (softmax: tempered,
    τ²-weighted cross-entropy to softmax(Θ̄a/τ)); its gradient is exactly
    ∇_{W_l} = (W_L⋯W_{l+1})ᵀ [∇g_B(W(x)) − λ∇g_B(Θ̄)] (W_{l−1}⋯W_1)ᵀ = J(x)ᵀ[∇g_B(W(x)) − λ∇g_B(Θ̄)]
    at τ = 1, with J(x) the Jacobian of x ↦ W(x). The identity is exact in function space,
    not in parameter space: with a same-architecture θ,
    KD-grad = ∇f_B(x) − λ∇f_B(θ) + λ(J(θ) − J(x))ᵀ∇g_B(Θ̄), a gap of O(λ‖x − θ‖).

    The control variate therefore lives in function space. The engines' teacher term is
    T_B(x) = J(x)ᵀ∇g_B(Θ̄) (``batch_teacher_grad``), pulled back by the *student's*
    Jacobian, and T(x) = J(x)ᵀ∇g(Θ̄) its full-data mean (``full_teacher_grad``). Hence:

    * ``kd``:        g = ∇f_B(x) − λ J(x)ᵀ∇g_B(Θ̄) [− λαθ], the exact KD-loss gradient
      (``distillation_grad``; the λαθ term only for a same-architecture θ and α > 0, the
      ridge centred at λθ of docs/theory.md §2);
    * ``kd_loss``:   g = ∇f_B(x) − λ J(x)ᵀ∇g_B(Θ̄), the gradient of ``kd_loss`` (``kd_grad``);
    * ``corrected``: g = kd + λ J(x)ᵀ∇g(Θ̄) = ∇f_B(x) − λ J(x)ᵀ(∇g_B(Θ̄) − ∇g(Θ̄)) [− λαθ],
      unbiased (E g = ∇f(x)) because the correction is pulled back at the same x.

    For an end-to-end teacher map the parameter-space ridge term α·θ is undefined; it is
    taken as 0 (so for α > 0 "kd" and "kd_loss" then coincide).

    Distances. The factorisation is not identifiable (W_{l+1}R⁻¹, RW_l give the same map), so
    ``canonical`` returns the flattened end-to-end map and every distance the engines record
    (‖x_t − x*‖², ‖x_t − θ‖²) is between end-to-end maps.

    Solution (``solution``; ``solution_map`` is its end-to-end map, ``solve_info`` reports
    how it was found and the gradient norm reached):

    * squared loss, α = 0: closed form. M* is the (minimum-norm) least-squares map; if some
      hidden width r is below min(d_in, d_out) (a bottleneck) it is the best rank-r map in the
      Σ_xx = AᵀA/n metric (reduced-rank regression, Eckart–Young on the fitted values AM_lsᵀ):
      M* = U_r U_rᵀ M_ls with U_r the top-r right singular vectors of A M_lsᵀ. Any factorisation
      of M* is a global minimiser of the deep problem; the balanced one is returned.
    * α = 0, no bottleneck, softmax: the convex end-to-end problem is solved by Newton's method
      (minimum-norm steps: the logits are invariant to adding one vector to every row of M);
      separable data have no finite optimum and raise. Balanced factorisation, as above.
    * one layer (hidden=()), α > 0: the convex ridge problem, closed form (squared) or Newton.
    * otherwise (α > 0 with hidden layers, or softmax with a bottleneck): the deep problem
      itself — the deep ridge is *not* a ridge on M (at a balanced point it acts like
      (αL/2)Σ_k σ_k(M)^{2/L}) — is solved by L-BFGS from the balanced factorisation of the
      end-to-end ridge solution (rank-truncated to the narrowest width), then polished by
      Newton steps on the exact Hessian (pseudo-inverse of |eigenvalues|: the orthogonal
      symmetries of the hidden layers make it singular). The deep problem is non-convex (for
      L ≥ 3 the origin is even a local minimum); the point returned is a stationary point
      with ‖∇f‖ reported in ``solve_info`` — a local minimiser reached from that start (the
      tests check the second-order condition), not a certified global one. A solve that
      does not reach ‖∇f‖ ≤ 1e-6 raises.

    Balanced factorisation of M = UΣVᵀ (rank r ≤ narrowest width): W_1 = B_1 Σ^{1/L} V_rᵀ,
    W_l = B_l Σ^{1/L} B_{l−1}ᵀ, W_L = U_r Σ^{1/L} B_{L−1}ᵀ with B_l the first r columns of the
    identity (zero padding for wider hidden layers); every layer has singular values Σ^{1/L}
    and W_{l+1}ᵀW_{l+1} = W_l W_lᵀ.

    ``default_x0`` is a small balanced random start (singular values ``init_scale`` in every
    layer, random orthonormal bases seeded by ``init_seed``), because the origin is a saddle
    point (L ≥ 2) from which gradient methods never leave.
    """

    name = "deep_linear"
    spec_family = "deep_linear"

    def __init__(self, A, Y, hidden=(), loss="squared", l2=0.0, init_scale=1e-2, init_seed=0,
                 n_classes=None):
        loss = V.choice("loss", loss, LOSSES)
        A = V.as_float_array("A", A, ndim=2)
        n, d_in = A.shape
        if loss == "squared":
            if n_classes is not None:
                raise ValueError(f"n_classes applies only to loss='softmax'; got n_classes={n_classes!r}")
            Y = V.as_float_array("Y", Y, ndim=2)
            if Y.shape[0] != n:
                raise ValueError(f"Y must have one row per row of A ({n}); got shape {Y.shape}")
            d_out = Y.shape[1]
            targets = Y
            K = None
        else:
            Y, K = _labels(Y, n, n_classes)
            d_out = K
            targets = np.eye(K)[Y]
        hidden = _widths(hidden)
        init_scale = V.positive_float("init_scale", init_scale)
        init_seed = V.int_in_range("init_seed", init_seed, 0, 2**63 - 1)
        dims = (d_in, *hidden, d_out)
        shapes = tuple((dims[k + 1], dims[k]) for k in range(len(dims) - 1))
        sizes = [r * c for r, c in shapes]
        super().__init__(n, sum(sizes), l2)
        self.A, self.Y = A, Y
        self.loss_type = loss
        self.n_classes = K
        self.hidden = hidden
        self.dims = dims
        self.shapes = shapes
        self.depth = len(shapes)
        self.d_in, self.d_out = d_in, d_out
        self.init_scale, self.init_seed = init_scale, init_seed
        self._targets = targets                       # y_i (squared) or one-hot e_{y_i} (softmax)
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self._rank = min(dims)                        # largest rank of W(x)
        self._bottleneck = bool(hidden) and min(hidden) < min(d_in, d_out)
        self._solve_info = None
        self._sq_ref = None
        if loss == "squared":
            self._Sxx = A.T @ A / n
            self._Syx = Y.T @ A / n

    def __repr__(self):
        classes = f", classes={self.n_classes}" if self.n_classes is not None else ""
        widths = "→".join(str(w) for w in self.dims)
        return (f"{type(self).__name__}(n={self.n}, widths={widths}, loss={self.loss_type!r}{classes}, "
                f"l2={self.l2:g})")

    # ------------------------------------------------------------- structure
    def _layers(self, X):
        """Layer matrices of x (dim,) -> [(r, c)] or X (T, dim) -> [(T, r, c)] (views when possible)."""
        lead = X.shape[:-1]
        return [X[..., o:o + r * c].reshape(lead + (r, c))
                for (r, c), o in zip(self.shapes, self._offsets[:-1])]

    @staticmethod
    def _pack(blocks, lead):
        return np.concatenate([np.broadcast_to(b, lead + b.shape[-2:]).reshape(lead + (b.shape[-2] * b.shape[-1],))
                               for b in blocks], axis=-1)

    def _chain(self, Ws):
        """Prefix and suffix products of the layers Ws[0..L−1] (layer k maps dims[k] -> dims[k+1]).

        Q[k] = Ws[k−1]⋯Ws[0] (the layers before k; Q[0] = None, the identity) and
        P[k] = Ws[L−1]⋯Ws[k+1] (the layers after k; P[L−1] = None); Q[L] is the end-to-end map.
        """
        return KS.chain(Ws)

    def _pull(self, P, Q, G, lead):
        """J(x)ᵀ G: the blocks (W_L⋯W_{l+1})ᵀ G (W_{l−1}⋯W_1)ᵀ, packed to (..., dim)."""
        blocks = []
        for k in range(self.depth):
            g = G if P[k] is None else _T(P[k]) @ G
            blocks.append(g if Q[k] is None else g @ _T(Q[k]))
        return self._pack(blocks, lead)

    def _map(self, X):
        """End-to-end map of x (dim,) or X (T, dim)."""
        Ws = self._layers(X)
        M = Ws[0]
        for W in Ws[1:]:
            M = W @ M
        return M

    def _outputs_residual(self, Z, targets):
        """∂g/∂z: Z − y (squared) or softmax(Z) − e_y (softmax)."""
        if self.loss_type == "squared":
            return Z - targets
        return _softmax(Z) - targets

    def _sample_losses_from_logits(self, Z, targets):
        if self.loss_type == "squared":
            R = Z - targets
            return 0.5 * np.sum(R * R, axis=-1)
        return _logsumexp(Z) - np.sum(Z * targets, axis=-1)

    def _chunks(self, T, per_row):
        size = max(1, _CHUNK_ELEMENTS // max(1, per_row))
        return [slice(s, min(T, s + size)) for s in range(0, T, size)]

    # -------------------------------------------------------------- teachers
    def _point(self, value, name):
        """A flat parameter vector (dim,) or an end-to-end map (d_out, d_in), validated."""
        arr = V.as_float_array(name, value)
        if (arr.ndim == 1 and arr.shape[0] == self.dim) or (arr.ndim == 2 and arr.shape == (self.d_out, self.d_in)):
            return arr
        raise ValueError(f"{name} must be a flat parameter vector of length {self.dim} (same architecture "
                         f"{self.dims}) or an end-to-end map of shape ({self.d_out}, {self.d_in}); "
                         f"got shape {arr.shape}")

    def _teacher(self, theta):
        """Validate a teacher: a same-architecture vector (dim,) or an end-to-end map (d_out, d_in)."""
        return self._point(theta, "theta")

    def _teacher_map(self, theta):
        return theta if theta.ndim == 2 else self._map(theta)

    def end_to_end(self, x):
        """The end-to-end map W_L⋯W_1 (d_out, d_in) of a parameter vector; a map is returned as is."""
        arr = self._point(x, "x")
        return arr.copy() if arr.ndim == 2 else self._map(arr)

    def canonical(self, x):
        """The flattened end-to-end map: (dim,) -> (d_out·d_in,), (T, dim) -> (T, d_out·d_in).

        A (d_out, d_in) end-to-end map (a teacher) is flattened as is. Distances are measured
        between end-to-end maps because the factorisation is not identifiable.
        """
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim == 1 and arr.shape[0] == self.dim:
            return self._map(arr).ravel()
        if arr.ndim == 2 and arr.shape[1] == self.dim:
            return self._map(arr).reshape(arr.shape[0], self.d_out * self.d_in)
        if arr.ndim == 2 and arr.shape == (self.d_out, self.d_in):
            return arr.ravel().copy()
        raise ValueError(f"x must have shape ({self.dim},) or (T, {self.dim}), or be an end-to-end map "
                         f"({self.d_out}, {self.d_in}); got shape {arr.shape}")

    def canonical_teacher(self, theta):
        """Flattened end-to-end map of a teacher (vector or map)."""
        theta = self._teacher(theta)
        return self._teacher_map(theta).ravel().copy()

    def pullback(self, x, G):
        """J(x)ᵀ G: an end-to-end-map direction G (d_out, d_in) pulled back to parameter space (dim,)."""
        x = self._x(x)
        G = V.as_float_array("G", G, shape=(self.d_out, self.d_in))
        P, Q = self._chain(self._layers(x))
        return self._pull(P, Q, G, ())

    # ---------------------------------------------------- data loss and gradients
    def _losses(self, x, idx):
        Z = self.A[idx] @ self._map(x).T
        return self._sample_losses_from_logits(Z, self._targets[idx])

    def _sample_grads(self, x, idx):
        Ws = self._layers(x)
        P, Q = self._chain(Ws)
        Ab = self.A[idx]
        R = self._outputs_residual(Ab @ Q[-1].T, self._targets[idx])     # (b, d_out)
        blocks = []
        for k in range(self.depth):
            H = Ab if Q[k] is None else Ab @ Q[k].T                       # activations into layer k
            D = R if P[k] is None else R @ P[k]                           # back-propagated residuals
            blocks.append((D[:, :, None] * H[:, None, :]).reshape(len(idx), -1))
        return np.concatenate(blocks, axis=1)

    def _kd_logit_residual(self, Z, Zt, targets, lam, temperature):
        """∂/∂z of the per-sample KD loss at student logits Z and teacher logits Zt."""
        if self.loss_type == "squared":
            # (1−λ)(z − y) + λ(z − z_t) = (z − y) − λ(z_t − y)
            return (Z - targets) - lam * (Zt - targets)
        t = temperature
        return ((1 - lam) * (_softmax(Z) - targets)
                + lam * t * (_softmax(Z / t) - _softmax(Zt / t)))

    def supports_temperature(self):
        return self.loss_type != "squared"

    def tempered_teacher_probs(self, theta, temperature):
        if self.loss_type == "squared":
            return super().tempered_teacher_probs(theta, temperature)
        return _softmax((self.A @ self._teacher_map(self._teacher(theta)).T) / self._temperature(temperature))

    def _check_temperature(self, temperature):
        if self.loss_type == "squared" and temperature != 1.0:
            raise ValueError("temperature must be 1 for the squared loss (no softmax to temper); "
                             f"got {temperature}")

    def _kd_losses(self, x, theta, lam, idx, temperature):
        self._check_temperature(temperature)
        Ab = self.A[idx]
        return self._kd_output_losses(Ab @ self._map(x).T, Ab @ self._teacher_map(theta).T, self._targets[idx],
                                      lam, temperature)

    def _kd_output_losses(self, Z, Zt, Yb, lam, temperature):
        """Per-sample KD loss at student outputs Z and teacher outputs Zt (targets Yb)."""
        if self.loss_type == "squared":
            return 0.5 * (1 - lam) * np.sum((Z - Yb) ** 2, axis=1) + 0.5 * lam * np.sum((Z - Zt) ** 2, axis=1)
        t = temperature
        ce_true = _logsumexp(Z) - np.sum(Z * Yb, axis=1)
        q = _softmax(Zt / t)
        log_p = Z / t - _logsumexp(Z / t)[:, None]
        return (1 - lam) * ce_true - lam * t * t * np.sum(q * log_p, axis=1)

    def _kd_grad(self, x, theta, lam, idx, temperature):
        self._check_temperature(temperature)
        Ws = self._layers(x)
        P, Q = self._chain(Ws)
        Ab = self.A[idx]
        R = self._kd_logit_residual(Ab @ Q[-1].T, Ab @ self._teacher_map(theta).T,
                                    self._targets[idx], lam, temperature)
        return self._pull(P, Q, R.T @ Ab / len(idx), ())

    def distillation_grad(self, x, theta, lam, idx=None):
        """Estimator "kd" for deep linear networks (function-space control variate):

        J(x)ᵀ[∇g_B(W(x)) − λ∇g_B(Θ̄)] + αx − λαθ, the λαθ term only for a same-architecture
        θ (0 for an end-to-end teacher map). It is ``kd_grad`` − λαθ; the parameter-space form
        ∇f_B(x) − λ∇f_B(θ) differs from it by λ(J(θ) − J(x))ᵀ∇g_B(Θ̄) (docs/theory.md §2).
        """
        theta = self._teacher(theta)
        lam = V.finite_float("lam", lam)
        g = self.kd_grad(x, theta, lam, idx)
        if theta.ndim == 1:
            g = g - lam * self.l2 * theta
        return g

    # ----------------------------------------------------------- second order
    def _hvp(self, x, Vd, idx):
        """Exact data-loss Hessian applied to the rows of Vd (k, dim) -> (k, dim).

        Product rule on J(x)ᵀ∇g_B(W(x)): with dQ, dP, dM the directional derivatives of the
        prefix/suffix products and of W(x) along V,
        H v = Σ_l [dP_lᵀ G Q_lᵀ + P_lᵀ dG Q_lᵀ + P_lᵀ G dQ_lᵀ],  dG = ∇²g_B(M)[dM]
        (squared: dM Σ_B; softmax: (1/b) Σ_i ((diag p_i − p_i p_iᵀ) dM a_i) a_iᵀ).
        """
        Ws = self._layers(x)
        Vs = self._layers(Vd)
        k_dirs = Vd.shape[0]
        L = self.depth
        Q = [np.eye(self.d_in)]
        dQ = [np.zeros((k_dirs, self.d_in, self.d_in))]
        for k in range(L):
            Q.append(Ws[k] @ Q[k])
            dQ.append(Vs[k] @ Q[k] + Ws[k] @ dQ[k])
        P = [None] * L
        dP = [None] * L
        P[L - 1] = np.eye(self.d_out)
        dP[L - 1] = np.zeros((k_dirs, self.d_out, self.d_out))
        for k in range(L - 1, 0, -1):
            P[k - 1] = P[k] @ Ws[k]
            dP[k - 1] = dP[k] @ Ws[k] + P[k] @ Vs[k]
        M, dM = Q[L], dQ[L]
        Ab = self.A[idx]
        b = len(idx)
        Z = Ab @ M.T
        R = self._outputs_residual(Z, self._targets[idx])
        G = R.T @ Ab / b
        if self.loss_type == "squared":
            dG = dM @ (Ab.T @ Ab / b)
        else:
            p = _softmax(Z)                                          # (b, K)
            dZ = Ab @ _T(dM)                                         # (k, b, K)
            dR = p * dZ - p * np.sum(p * dZ, axis=-1, keepdims=True)
            dG = _T(dR) @ Ab / b
        blocks = []
        for k in range(L):
            blocks.append(_T(dP[k]) @ G @ Q[k].T + P[k].T @ dG @ Q[k].T + P[k].T @ G @ _T(dQ[k]))
        return self._pack(blocks, (k_dirs,))

    def hvp(self, x, v, idx=None):
        """∇²f_B(x) v (ridge included), exact closed form."""
        x = self._x(x)
        v = V.as_vector("v", v, self.dim)
        return self._hvp(x, v[None, :], self._idx(idx))[0] + self.l2 * v

    def _hessian(self, x, idx):
        """Exact data-loss Hessian: the closed-form HVP on the unit vectors (symmetrised)."""
        per_dir = len(idx) * self.d_out + self.d_out * self.d_in + sum(r * c for r, c in self.shapes)
        eye = np.eye(self.dim)
        H = np.concatenate([self._hvp(x, eye[s], idx) for s in self._chunks(self.dim, per_dir)], axis=0)
        return 0.5 * (H + H.T)

    # ------------------------------------------------------- batched primitives
    def _batch_grad(self, X, idx):
        Ws = self._layers(X)
        P, Q = self._chain(Ws)
        Ab = self.A[idx]                                              # (T, b, d_in)
        R = self._outputs_residual(Ab @ _T(Q[-1]), self._targets[idx])  # (T, b, d_out)
        return self._pull(P, Q, _T(R) @ Ab / idx.shape[1], X.shape[:-1])

    def _full_map_grad(self, M):
        """∇g(M) = (1/n) Σ_i r_i a_iᵀ for M (T, d_out, d_in)."""
        if self.loss_type == "squared":
            return M @ self._Sxx - self._Syx
        out = np.empty_like(M)
        for s in self._chunks(M.shape[0], self.n * self.d_out):
            R = self._outputs_residual(self.A @ _T(M[s]), self._targets)     # (t, n, K)
            out[s] = _T(R) @ self.A / self.n
        return out

    def _batch_full_grad(self, X):
        Ws = self._layers(X)
        P, Q = self._chain(Ws)
        return self._pull(P, Q, self._full_map_grad(Q[-1]), X.shape[:-1])

    def _batch_loss(self, X):
        M = self._map(X)
        out = np.empty(X.shape[0])
        for s in self._chunks(X.shape[0], self.n * self.d_out):
            Z = self.A @ _T(M[s])                                     # (t, n, d_out)
            out[s] = self._sample_losses_from_logits(Z, self._targets).mean(axis=1)
        return out

    def suboptimality(self, X):
        """f(x) − f* per trajectory, (T,).

        Squared loss: exact expansion in the end-to-end error E = W(x) − M*,
        ℓ(x) − ℓ(x*) = ⟨∇g(M*), E⟩ + ½ tr(E Σ_xx Eᵀ) (computed as ½‖E Rᵀ‖², Σ_xx = RᵀR, so it
        is ≥ 0 and free of cancellation); with full-rank widths and α = 0, ∇g(M*) = 0 and the
        first term is dropped. The ridge adds (α/2)(‖x‖² − ‖x*‖²). Softmax: f(x) − f*.
        """
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        return KS.in_row_blocks(lambda Xb: KS.suboptimality(self._record_refs, Xb, np), X, self.record_row_bytes())

    def record_row_bytes(self):
        return 8 * (2 * self.dim + self.d_out * self.d_in + (0 if self.loss_type == "squared" else 10 * self.n * self.d_out))

    # kernel spec -------------------------------------------------------------
    def _spec_structure(self):
        return ("identity" if self.loss_type == "squared" else "softmax"), self._targets, self.shapes

    def bias_coordinates(self):
        """None: a deep linear network has no bias parameters (a ones column of A is an input)."""
        return np.zeros(0, dtype=np.int64)

    def _spec_teacher(self, theta, term, teacher_l2=None, weights=None):
        terms = self.teacher_terms(theta, term, teacher_l2, weights)
        return terms.residuals, terms.full_map, terms.ridge

    def _spec_refs(self):
        if self.loss_type != "squared":
            return {"f_star": float(self.f_star)}
        Ms, Gs, Rc = self._squared_reference
        xs = self._solution
        return {"M_star": Ms, "Rc_T": Rc.T.copy(), "G_star": Gs if (self._bottleneck or self.l2 > 0) else None,
                "x_star_sq": float(xs @ xs)}

    @property
    def _squared_reference(self):
        if self._sq_ref is None:
            Ms = self._map(self._solution)
            Gs = Ms @ self._Sxx - self._Syx
            Rc = np.linalg.qr(self.A / np.sqrt(self.n), mode="r")
            self._sq_ref = (Ms, Gs, Rc)
        return self._sq_ref

    # ------------------------------------------------------------------ teacher terms
    def teacher_terms(self, theta, term="f", teacher_l2=None, weights=None):
        """Teacher quantities for the engines (see ``DeepLinearTeacherTerms``).

        The per-sample teacher gradients ∇g_i(Θ̄) = r_i a_iᵀ are stored as r_i (n, d_out).
        ``term="f"`` adds the ridge α·θ (same-architecture θ only; 0 for a map teacher);
        ``term="data"`` never does; ``teacher_l2=w`` adds w·θ instead (same-architecture θ only).
        """
        wd = self.teacher_weight_decay(term, teacher_l2)
        theta = self._teacher(theta)
        Tm = self._teacher_map(theta)
        R = self._outputs_residual(self.A @ Tm.T, self._targets)
        same = theta.ndim == 1
        ridge = wd * theta if same else np.zeros(self.dim)
        G = R.T @ self.A / self.n if weights is None else (R * weights[:, None]).T @ self.A
        return DeepLinearTeacherTerms(Tm, R, G, ridge, term, same)

    def batch_teacher_grad(self, X, terms, idx):
        """J(x)ᵀ (1/b) Σ_{i∈B} ∇g_i(Θ̄) (+ ridge) for each trajectory: X (T, dim), idx (T, b) -> (T, dim)."""
        Ws = self._layers(X)
        P, Q = self._chain(Ws)
        GT = _T(terms.residuals[idx]) @ self.A[idx] / idx.shape[1]       # (T, d_out, d_in)
        return self._pull(P, Q, GT, X.shape[:-1]) + terms.ridge

    def full_teacher_grad(self, X, terms):
        """J(x)ᵀ ∇g(Θ̄) (+ ridge) for each trajectory, (T, dim)."""
        Ws = self._layers(X)
        P, Q = self._chain(Ws)
        return self._pull(P, Q, terms.full_map, X.shape[:-1]) + terms.ridge

    # ---------------------------------------------------------------- solution
    def _balanced(self, M, rng=None, scale=None):
        """Balanced factorisation of M (rank truncated to the narrowest width) as a flat x.

        With ``rng``, the hidden-layer bases are random orthonormal instead of identity columns.
        With ``scale``, every layer gets singular values ``scale`` instead of σ_k(M)^{1/L}.
        """
        U, s, Vt = np.linalg.svd(M, full_matrices=False)
        r = min(len(s), self._rank)
        U, s, Vt = U[:, :r], s[:r], Vt[:r]
        root = np.full(r, scale) if scale is not None else s ** (1.0 / self.depth)
        bases = [Vt.T]
        for h in self.dims[1:-1]:
            bases.append(_random_orthonormal(rng, h, r) if rng is not None else np.eye(h, r))
        bases.append(U)
        Ws = [(bases[k + 1] * root) @ bases[k].T for k in range(self.depth)]
        return np.concatenate([W.ravel() for W in Ws])

    def balanced_factorisation(self, M):
        """A balanced x with W(x) = M: every layer has singular values σ_k(M)^{1/L}.

        M must have rank at most the narrowest width (else no x has W(x) = M).
        """
        M = V.as_float_array("M", M, shape=(self.d_out, self.d_in))
        s = np.linalg.svd(M, compute_uv=False)
        if len(s) > self._rank and s[self._rank] > 1e-12 * max(s[0], np.finfo(float).tiny):
            raise ValueError(f"M must have rank <= {self._rank} (the narrowest width) to be factorised; "
                             f"singular value {self._rank + 1} is {s[self._rank]:.3g}")
        return self._balanced(M)

    def default_x0(self):
        """Small balanced random start: every layer has ``init_scale`` as its r singular values.

        Deterministic (seeded by ``init_seed``); the origin is a saddle point for L ≥ 2.
        """
        rng = np.random.default_rng(self.init_seed)
        M = _random_orthonormal(rng, self.d_out, min(self.d_out, self.d_in))
        M = M @ _random_orthonormal(rng, self.d_in, min(self.d_out, self.d_in)).T
        return self._balanced(M, rng=rng, scale=self.init_scale)

    def _least_squares_map(self):
        """Reduced-rank least-squares map (minimum norm; rank-r in the Σ_xx metric if bottlenecked)."""
        Mt, *_ = scipy.linalg.lstsq(self.A, self.Y)                      # (d_in, d_out)
        r = self._Sxx @ Mt - self._Syx.T                                 # one refinement step
        dM, *_ = scipy.linalg.lstsq(self._Sxx, r)
        M = (Mt - dM).T
        if self._bottleneck:
            _, _, Wt = np.linalg.svd(self.A @ M.T, full_matrices=False)  # fitted values (n, d_out)
            Ur = Wt[:self._rank].T
            M = Ur @ (Ur.T @ M)
        return M

    def _ridge_map(self, rho):
        """argmin_M ḡ(M) + (ρ/2)‖M‖² (the single-layer problem), with its solver info."""
        if self.loss_type == "squared":
            H = self._Sxx + rho * np.eye(self.d_in)
            M = scipy.linalg.solve(H, self._Syx.T, assume_a="pos").T
            M = M - scipy.linalg.solve(H, (M @ self._Sxx - self._Syx + rho * M).T, assume_a="pos").T
            return M
        shallow = DeepLinear(self.A, self.Y, hidden=(), loss="softmax", l2=rho, n_classes=self.n_classes)
        return shallow.solution().reshape(self.d_out, self.d_in)

    def _newton(self, x, maxiter=100):
        """Newton steps with the exact Hessian (pseudo-inverse of |eigenvalues|) and a backtracking
        search that accepts a decrease of f or of ‖∇f‖; stops at the rounding floor.

        Returns (x, number of accepted steps).
        """
        f, g = self.loss(x), self.grad(x)
        gn = np.linalg.norm(g)
        steps = stalled = 0
        while steps < maxiter and gn > 1e-14:
            w, U = np.linalg.eigh(self.hessian(x))
            wa = np.abs(w)
            keep = wa > 1e-10 * wa.max()
            step = -U[:, keep] @ ((U[:, keep].T @ g) / wa[keep])
            t, accepted = 1.0, False
            while t >= 1e-10:
                xn = x + t * step
                fn, gn_new = self.loss(xn), np.linalg.norm(self.grad(xn))
                if np.isfinite(fn) and (fn < f or (fn <= f + 1e-13 * abs(f) and gn_new < gn)):
                    accepted = True
                    break
                t *= 0.5
            if not accepted:
                break
            steps += 1
            stalled = stalled + 1 if gn_new > 0.5 * gn else 0
            x, f, g, gn = xn, fn, self.grad(xn), gn_new
            if stalled >= 3:
                break
        return x, steps

    def _solve(self):
        if self.loss_type == "squared" and self.l2 == 0.0:
            M = self._least_squares_map()
            x = self._balanced(M)
            method = ("closed form: least squares"
                      + (f", best rank-{self._rank} map in the Σ_xx metric (Eckart–Young)" if self._bottleneck else "")
                      + ", balanced factorisation")
            iters = 0
        elif self.depth == 1:
            if self.loss_type == "squared":
                x, iters, method = self._ridge_map(self.l2).ravel(), 0, "closed form: ridge"
            else:
                x, iters = self._newton(np.zeros(self.dim))
                method = "Newton on the convex single-layer problem"
                if self.l2 == 0.0 and self.data_loss(x) < 1e-8:
                    raise ValueError("the softmax data appear separable: without a ridge there is no finite "
                                     "minimiser; pass l2 > 0")
        else:
            M0 = self._ridge_map(self.l2)
            x = self._balanced(M0)
            iters = 0
            if self.l2 == 0.0 and not self._bottleneck:
                method = "Newton on the convex end-to-end problem, balanced factorisation"
            else:
                res = scipy.optimize.minimize(lambda z: (self.loss(z), self.grad(z)), x, jac=True,
                                              method="L-BFGS-B",
                                              options={"maxiter": 20000, "maxcor": 30, "gtol": 1e-12, "ftol": 0.0})
                x, iters = self._newton(res.x)
                iters += int(res.nit)
                method = ("L-BFGS on the deep problem from the balanced factorisation of the end-to-end ridge "
                          "solution, then Newton polish (a local minimiser)")
        gn = float(np.linalg.norm(self.grad(x)))
        self._solve_info = {"method": method, "grad_norm": gn, "iterations": int(iters)}
        if gn > 1e-6:
            raise RuntimeError(f"deep linear solve stopped at ‖∇f(x*)‖ = {gn:.3g} (> 1e-6); "
                               f"method: {method}")
        return x

    @property
    def solve_info(self):
        """How ``solution`` was obtained: method, ‖∇f(x*)‖ reached, iterations (solves if needed)."""
        self._solution  # noqa: B018 - triggers the solve
        return dict(self._solve_info)

    def solution_map(self):
        """The end-to-end optimum M* = W(x*), shape (d_out, d_in)."""
        return self._map(self._solution).copy()

    def with_hidden(self, hidden):
        """The same data, loss and ridge with other hidden widths (e.g. a teacher's architecture)."""
        Y = self.Y
        return DeepLinear(self.A, Y, hidden=hidden, loss=self.loss_type, l2=self.l2,
                          init_scale=self.init_scale, init_seed=self.init_seed,
                          n_classes=self.n_classes if self.loss_type == "softmax" else None)
