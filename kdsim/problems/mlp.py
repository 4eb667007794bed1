"""Multi-layer perceptrons (non-linear students) with closed-form back-propagation.

f(x) = (1/n) Σ_i ℓ(z_i(x), y_i) + (α/2)‖x‖²,  z_i(x) = W_L σ(⋯ σ(W_1 a_i + b_1) ⋯) + b_L,

ℓ the squared error ½‖z − y‖² or the softmax cross-entropy −log softmax(z)_y. Everything is
numpy and closed form (no autodiff): the gradient is back-propagation, the Hessian-vector
product is its forward-over-reverse derivative (Pearlmutter's R-operator), and the KD
gradient is the back-propagated output-space KD residual. See ``MLP`` for the conventions,
and docs/theory.md §2 and §8 (claim 15) for why the KD identity of the linear models fails here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.optimize

from .. import _validate as V
from .. import kernelspec as KS
from .base import Problem
from .deep_linear import DeepLinear, _T, _labels, _softmax
from .deep_linear import _widths as _sequence_of_widths

ACTIVATIONS = ("relu", "sigmoid", "tanh", "identity")
LOSSES = ("softmax", "squared")

#: arrays built inside batched methods are kept below about this many float64 entries
_CHUNK_ELEMENTS = 1 << 22
#: the exact-Hessian Newton polish of ``solution`` runs only up to this many parameters
NEWTON_MAX_DIM = 4000
#: default L-BFGS iteration budgets of ``solution`` (smooth activations; ReLU, whose minima sit on kinks)
SMOOTH_MAXITER, RELU_MAXITER = 20000, 3000


@dataclass(frozen=True)
class MLPTeacherTerms:
    """Teacher quantities of an MLP that do not depend on the student (the engines' teacher term).

    The literal KD loss sees the teacher only through its outputs on each sample, so its gradient
    is the student's back-propagation of the output-space residual r_i(θ) (docs/theory.md §2):

    * ``theta``      the teacher's parameters (dim,);
    * ``residuals``  r_i(θ) = ∂ℓ/∂z at the teacher's outputs z_i(θ), (n, d_out): z_i(θ) − y_i
      (squared loss) or softmax(z_i(θ)) − e_{y_i} (softmax);
    * ``ridge``      w·θ, the teacher's weight decay (``Problem.teacher_weight_decay``), (dim,);
    * ``weights``    per-sample weights of the full-data term (None: 1/n);
    * ``term``       "f" or "data".

    The teacher term of a trajectory at x is J_B(x)ᵀ r_B(θ) + w·θ, J_i(x) the Jacobian of the
    student's outputs z_i(x) (``MLP.batch_teacher_grad`` / ``full_teacher_grad``).
    """

    theta: np.ndarray
    residuals: np.ndarray
    ridge: np.ndarray
    weights: np.ndarray | None
    term: str


def _widths(hidden):
    """Validate hidden widths: a non-empty sequence of positive integers (``deep_linear``'s rule, and one more)."""
    out = _sequence_of_widths(hidden)
    if not out:
        raise ValueError("hidden must name at least one hidden width, e.g. hidden=(32,): an MLP without "
                         "hidden layers is a linear model (use LeastSquares, SoftmaxRegression or DeepLinear)")
    return out


def _act(kind, Z):
    """σ(Z) (``kernelspec.activation``: the engines' definition)."""
    return KS.activation(np, kind, Z)


def _act_d1(kind, Z, H):
    """σ'(z) from the activation H = σ(Z) (``kernelspec.activation_d1``; ReLU: 1 for z > 0, else 0)."""
    return KS.activation_d1(np, kind, H)


def _act_d2(kind, Z, H):
    """σ''(z) (ReLU and identity: 0, almost everywhere)."""
    if kind == "sigmoid":
        return H * (1.0 - H) * (1.0 - 2.0 * H)
    if kind == "tanh":
        return -2.0 * H * (1.0 - H * H)
    return np.zeros_like(Z)


class MLP(Problem):
    """A fully connected network x = (W_1, b_1, …, W_L, b_L) on inputs A (n, d_in).

    Architecture. Widths d_in → h_1 → … → h_{L−1} → d_out (``hidden`` = (h_1, …), at least one);
    layer l computes z_l = W_l u_{l−1} + b_l with u_0 = a_i and u_l = σ(z_l) for l < L; the output
    z_i(x) = z_L has no activation (logits for ``loss="softmax"``). ``activation``: "relu"
    (σ'(0) = 0, the convention of torch), "sigmoid", "tanh" or "identity" (``None`` is accepted
    for "identity": a deep linear network; with ``bias=False`` it is ``DeepLinear`` exactly, same
    layout, same numbers). ``bias=False`` drops every b_l.

    Losses (per sample, on the output z = z_i(x)):

    * ``loss="softmax"`` (default): ℓ = −log softmax(z)_{y_i}, y integer labels (n,) in [0, K),
      d_out = K = ``n_classes`` (default max(y) + 1);
    * ``loss="squared"``: ℓ = ½‖z − y_i‖², Y real (n, d_out) (a 1-d y is one output).

    f(x) = (1/n) Σ_i ℓ_i(x) + (α/2)‖x‖², α = ``l2`` on every parameter, biases included (torch's
    ``weight_decay`` on every parameter does the same); ``l2_bias=False`` leaves the biases out
    (a parameter group without weight decay).

    Parameter layout. One flat float64 vector: the weight matrices W_1, …, W_L, each flattened
    row-major (W_l has shape (h_l, h_{l−1}): row j holds the weights into unit j), then the biases
    b_1, …, b_L (dim = Σ h_l·h_{l−1} + Σ h_l). ``layers(x)`` unpacks it, ``pack(Ws, bs)`` packs it;
    the weight block is laid out as ``DeepLinear``'s parameter vector.

    Derivatives (all closed form, float64): ``grad``/``sample_grads`` by back-propagation;
    ``hvp`` and ``hessian`` by the R-operator (forward-mode derivative of back-propagation),
    exact — for ReLU the Hessian of the piecewise-smooth f on the current activation pattern
    (σ'' = 0 almost everywhere; f is not twice differentiable where a pre-activation is 0, and
    its gradient jumps there). ``hessian`` applies the HVP to the unit vectors (dim HVPs).

    KD with a teacher θ given either as a same-architecture parameter vector (length ``dim``) or by its
    outputs z_i(θ) on the n training samples, an (n, d_out) array, which is how a teacher of any other
    architecture (a wider or deeper MLP, a linear model) enters: ``kdsim.teachers.from_model``.
    The KD loss is (1−λ)·ℓ(z_i(x), y_i) + λ·ℓ(z_i(x), teacher's prediction) — softmax: the tempered,
    τ²-weighted cross-entropy to softmax(z_i(θ)/τ); squared: ½‖z_i(x) − z_i(θ)‖² — so the teacher
    enters only through its outputs z_i(θ), and

        kd_grad = ∇f_B(x) − λ J_B(x)ᵀ r_B(θ)     (τ = 1; J_B(x)ᵀ r_B = (1/b) Σ_{i∈B} J_i(x)ᵀ r_i)

    with J_i(x) = ∂z_i/∂x the *student's* Jacobian and r_i(θ) the teacher's output residual. The
    control variate of docs/theory.md §2–§6 is ∇f_B(x) − λ∇f_B(θ) = ∇f_B(x) − λ[J_B(θ)ᵀ r_B(θ) + αθ]:
    the teacher's residuals pulled back by the *teacher's* Jacobian. For the linear models J does
    not depend on x and the two agree; for a network they differ by λ(J_B(θ) − J_B(x))ᵀ r_B(θ),
    which vanishes at x = θ and grows with ‖x − θ‖ (claim 15 measures it:
    ``kdsim.theory.alignment``). Estimators, as for ``DeepLinear`` (function space, the teacher
    term T_B(x) = J_B(x)ᵀ r_B(θ) + w·θ pulled back at the student, ``batch_teacher_grad``):

    * ``kd``:        ∇f_B(x) − λ[J_B(x)ᵀ r_B(θ) + αθ], the literal KD-loss gradient with the
      teacher's weight decay (the ridge centred at λθ of docs/theory.md §2; the authors'
      ``--teacher_wd``); ``distillation_grad`` returns it;
    * ``kd_loss``:   ∇f_B(x) − λ J_B(x)ᵀ r_B(θ), the gradient of ``kd_loss`` (ridge on the student
      only); ``kd_grad`` returns it;
    * ``corrected``: kd + λ[J(x)ᵀ r(θ) + αθ] (the full-data term pulled back at the same x), so
      E g = ∇f(x): unbiased. It costs one full-data back-propagation per step;
    * ``svrg``:      parameter space, ∇f_B(x) − λ(∇f_B(y) − ∇f(y)) with the snapshot y;
    * ``sgd``.

    A same-architecture θ allows all five (``teacher_l2`` = w replaces α in the teacher term); a teacher
    given by its outputs allows "sgd", "kd_loss", "svrg", and "kd"/"corrected" with ``teacher_l2=0``
    (w·θ needs parameters; a clear error otherwise). The
    teacher's weight decay w·θ is a parameter-space term: for a teacher trained from another start
    (other hidden-unit order, another basin) it pulls the student towards θ's *parameters*, which
    say nothing about θ's function (measured: with an independently trained teacher, the fixed point
    of "kd" that L-BFGS finds from the student's own minimum is θ itself); use
    "kd_loss" (w = 0) there, as claim 15 does.
    Temperature τ ≠ 1 (softmax only; estimators "kd" and "kd_loss") follows the gradient of the
    tempered loss. The parameter-space control variate ∇f_B(x) − λ∇f_B(θ), which the simulation
    engines do not run for an MLP, is ``control_variate_grad``.

    Solution. A network's f has no global minimiser that kdsim could certify (it is non-convex,
    and hidden-unit permutations give equivalent minima). ``solution`` is a *local* minimiser from
    the seeded initialisation ``default_x0``, computed once and cached, deterministic for a given
    ``init_seed``; ``solve_info`` says how it was found:

    * smooth activations (sigmoid, tanh, identity): L-BFGS to ‖∇f‖ ≤ ``solve_tol`` (default 1e-8;
      ``solve_maxiter`` iterations, default 20,000), then, when that is not reached and
      dim ≤ 4000, Newton steps on the exact Hessian; a solve that does not reach ``solve_tol`` raises;
    * ReLU: f is only piecewise smooth, and its local minima typically lie *on* kinks (some
      pre-activations exactly 0 at the minimum, measured: dozens of sample–unit pairs on the
      digits), where f has no gradient and no point has a small ‖∇f‖ (L-BFGS zigzags along the
      kinks at ‖∇f‖ ≈ 1e-3). ``solution`` is then the point L-BFGS reaches in ``solve_maxiter``
      iterations (default 3,000) — an *approximate* local minimiser, ``solve_info["stationary"]``
      False, with ‖∇f‖ and the number of pre-activations near a kink (``near_kinks``) reported.

    Softmax without a ridge (α = 0) is refused: a network that separates the data has no finite
    minimiser. "x*", f*, ‖x_t − x*‖² and f(x_t) − f* in the engines' records refer to this local
    minimiser; a run that leaves the basin can even reach f(x_t) < f*. Distances are between functions
    on the training data, ‖x − x'‖² := (1/n) Σ_i ‖z_i(x) − z_i(x')‖² (``canonical``): hidden units can be
    permuted, so parameter distances say little, and a teacher given by its outputs has no parameters.

    ``default_x0`` draws W_l ~ N(0, s²·g/h_{l−1}) (g = 2 for ReLU, He's; 1 otherwise, LeCun's;
    s = ``init_scale``) and zero biases, from ``numpy.random.default_rng(init_seed)``.

    Smoothness. There is no global per-sample smoothness constant (a ReLU network's gradient
    jumps, and the curvature of sigmoid/tanh networks grows with the weights):
    ``sample_smoothness`` raises ValueError, as the base class does; ``local_sample_smoothness``
    uses dense per-sample Hessians (small networks only).

    Engines. An MLP exports a kernel spec (family "mlp": the layer shapes, the activation, the
    biases, the teacher's output residuals), so every engine runs it — the numpy reference, the numba
    layered kernels (``backend="auto"`` picks them) and the array-module engine — with every estimator,
    sampling scheme, momentum and temperature, trajectory-equal to the reference. The engines see the
    teacher only through its outputs, as the KD loss does. The matrices are small: on a busy machine one BLAS thread is much faster than several
    (``threadpoolctl.threadpool_limits(1)``; ``solution`` and claim 15 use it).
    """

    name = "mlp"
    spec_family = "mlp"

    def __init__(self, A, y, hidden=(32,), activation="relu", loss="softmax", bias=True, l2=0.0,
                 l2_bias=True, init_scale=1.0, init_seed=0, n_classes=None, solve_tol=1e-8, solve_maxiter=None):
        activation = "identity" if activation is None else activation
        activation = V.choice("activation", activation, ACTIVATIONS)
        loss = V.choice("loss", loss, LOSSES)
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be True or False; got {bias!r}")
        A = V.as_float_array("A", A, ndim=2)
        n, d_in = A.shape
        if loss == "squared":
            if n_classes is not None:
                raise ValueError(f"n_classes applies only to loss='softmax'; got n_classes={n_classes!r}")
            Y = V.as_float_array("y", y)
            if Y.ndim == 1:
                Y = Y[:, None]
            if Y.ndim != 2 or Y.shape[0] != n:
                raise ValueError(f"y must have one row per row of A ({n}) for loss='squared': shape ({n},) or "
                                 f"({n}, d_out); got shape {np.shape(y)}")
            d_out, K, targets = Y.shape[1], None, Y
        else:
            try:
                Y, K = _labels(y, n, n_classes)
            except (TypeError, ValueError) as exc:
                raise type(exc)(str(exc).replace("Y must", "y must").replace("Y labels", "y labels")) from None
            d_out, targets = K, np.eye(K)[Y]
        hidden = _widths(hidden)
        init_scale = V.positive_float("init_scale", init_scale)
        init_seed = V.int_in_range("init_seed", init_seed, 0, 2**63 - 1)
        solve_tol = V.positive_float("solve_tol", solve_tol)
        solve_maxiter = ((RELU_MAXITER if activation == "relu" else SMOOTH_MAXITER) if solve_maxiter is None
                         else V.int_in_range("solve_maxiter", solve_maxiter, 1))
        dims = (d_in, *hidden, d_out)
        shapes = tuple((dims[k + 1], dims[k]) for k in range(len(dims) - 1))
        w_sizes = [r * c for r, c in shapes]
        b_sizes = [r for r, _ in shapes] if bias else []
        super().__init__(n, sum(w_sizes) + sum(b_sizes), l2, l2_bias)
        self.A, self.Y = A, Y
        self.hidden, self.activation, self.loss_type, self.bias = hidden, activation, loss, bool(bias)
        self.n_classes = K
        self.dims, self.shapes, self.depth = dims, shapes, len(shapes)
        self.d_in, self.d_out = d_in, d_out
        self.init_scale, self.init_seed = init_scale, init_seed
        self.solve_tol, self.solve_maxiter = solve_tol, solve_maxiter
        self._targets = targets
        self._w_offsets = np.concatenate([[0], np.cumsum(w_sizes)]).astype(int)
        self._b_offsets = (self._w_offsets[-1] + np.concatenate([[0], np.cumsum(b_sizes)])).astype(int) if bias else None
        self._solve_info = None
        self._exclude_bias_from_ridge()

    def bias_coordinates(self):
        """The coordinates of every layer's bias b_l (none with ``bias=False``)."""
        if self._b_offsets is None:
            return np.zeros(0, dtype=np.int64)
        return np.arange(self._b_offsets[0], self._b_offsets[-1])

    def __repr__(self):
        classes = f", classes={self.n_classes}" if self.n_classes is not None else ""
        widths = "→".join(str(w) for w in self.dims)
        return (f"{type(self).__name__}(n={self.n}, widths={widths}, activation={self.activation!r}, "
                f"loss={self.loss_type!r}{classes}, bias={self.bias}, l2={self.l2:g}{self._l2_bias_text()})")

    # ------------------------------------------------------------- layout
    def _unpack(self, X):
        """(Ws, bs) of x (dim,) or X (..., dim): Ws[l] (..., h_l, h_{l−1}), bs[l] (..., h_l) or None
        (``kernelspec.mlp_layers``: the engines' layout)."""
        return KS.mlp_layers(X, self.shapes, self.bias)

    def _pack(self, gWs, gbs, lead):
        parts = [np.broadcast_to(g, lead + g.shape[-2:]).reshape(lead + (g.shape[-2] * g.shape[-1],)) for g in gWs]
        if self.bias:
            parts += [np.broadcast_to(g, lead + g.shape[-1:]) for g in gbs]
        return np.concatenate(parts, axis=-1)

    def layers(self, x):
        """The layers of a parameter vector: ([W_1, …, W_L], [b_1, …, b_L]) (copies; biases None without bias)."""
        x = self._x(x)
        Ws, bs = self._unpack(x)
        return [W.copy() for W in Ws], [None if b is None else b.copy() for b in bs]

    def pack(self, Ws, bs=None):
        """The flat parameter vector of layers ``Ws`` (W_l of shape (h_l, h_{l−1})) and biases ``bs``."""
        if len(Ws) != self.depth:
            raise ValueError(f"Ws must hold {self.depth} weight matrices; got {len(Ws)}")
        Ws = [V.as_float_array(f"Ws[{k}]", W, shape=s) for k, (W, s) in enumerate(zip(Ws, self.shapes))]
        if self.bias:
            if bs is None or len(bs) != self.depth:
                raise ValueError(f"bs must hold {self.depth} bias vectors (bias=True)")
            bs = [V.as_float_array(f"bs[{k}]", b, shape=(s[0],)) for k, (b, s) in enumerate(zip(bs, self.shapes))]
        elif bs is not None and any(b is not None for b in bs):
            raise ValueError("bs must be None for a network without biases (bias=False)")
        return self._pack(Ws, bs, ())

    # ------------------------------------------------------------- forward / backward
    def _forward(self, Ws, bs, Ain):
        """Pre-activations Zs and layer inputs Us (Us[0] = Ain) for every layer; Zs[-1] the outputs.

        Ws[l] (..., h_l, h_{l−1}); Ain (..., b, d_in) or (b, d_in) (broadcast against the weights).
        """
        Us, Zs = [Ain], []
        U = Ain
        for k in range(self.depth):
            Z = U @ _T(Ws[k])
            if bs[k] is not None:
                Z = Z + bs[k][..., None, :]
            Zs.append(Z)
            if k < self.depth - 1:
                U = _act(self.activation, Z)
                Us.append(U)
        return Zs, Us

    def _backward(self, Ws, Zs, Us, D):
        """Σ over samples of J_i(x)ᵀ D_i: back-propagate output deltas D (..., b, d_out) (weights included).

        Returns (gWs, gbs) with gWs[l] (..., h_l, h_{l−1}).
        """
        return KS.mlp_backward(np, Ws, Us, D, self.activation, self.bias)

    def _backward_rows(self, Ws, Zs, Us, D):
        """Per-sample J_i(x)ᵀ D_i for one x: D (b, d_out) -> rows (b, dim)."""
        L = self.depth
        gWs, gbs = [None] * L, [None] * L
        for k in range(L - 1, -1, -1):
            gWs[k] = D[:, :, None] * Us[k][:, None, :]
            gbs[k] = D if self.bias else None
            if k > 0:
                D = (D @ Ws[k]) * _act_d1(self.activation, Zs[k - 1], Us[k])
        return self._pack(gWs, gbs, (D.shape[0],))

    # ∂ℓ/∂z and ℓ of the outputs: the same output losses as DeepLinear's (they read only ``loss_type``)
    _residual = DeepLinear._outputs_residual
    _losses_from_outputs = DeepLinear._sample_losses_from_logits

    def _outputs(self, x, idx):
        Ws, bs = self._unpack(x)
        return self._forward(Ws, bs, self.A[idx])[0][-1]

    def _teacher(self, theta):
        """A teacher: the student's parameters (dim,), or the outputs z_i of any model on the n training
        samples, (n, d_out) (logits for softmax): a wider or deeper MLP, a linear model
        (``kdsim.teachers.from_model``). The KD loss sees a teacher only through its outputs."""
        arr = V.as_float_array("theta", theta)
        if arr.ndim == 2:
            if arr.shape != (self.n, self.d_out):
                raise ValueError(f"theta given as outputs must have shape (n, d_out) = ({self.n}, {self.d_out}) "
                                 f"(one row per training sample); got {arr.shape}")
            return arr
        return V.as_vector("theta", arr, self.dim)

    def canonical(self, x):
        """Distances between networks are measured between their functions on the training data: the outputs
        z_i(x) stacked and scaled by 1/√n, so ‖canonical(x) − canonical(x')‖² = (1/n) Σ_i ‖z_i(x) − z_i(x')‖²
        (hidden units can be permuted, so parameter distances say little). (dim,) → (n·d_out,),
        (T, dim) → (T, n·d_out)."""
        X = np.asarray(x, dtype=np.float64)
        if X.ndim not in (1, 2) or X.shape[-1] != self.dim:
            raise ValueError(f"x must have shape ({self.dim},) or (T, {self.dim}); got {X.shape}")
        Z = KS.mlp_outputs(np, np.atleast_2d(X), self.A, self.shapes, self.activation, self.bias)
        C = Z.reshape(Z.shape[0], -1) / np.sqrt(self.n)
        return C[0] if X.ndim == 1 else C

    def canonical_teacher(self, theta):
        """The teacher's outputs on the training data, flattened and scaled by 1/√n (``canonical``)."""
        theta = self._teacher(theta)
        return theta.ravel() / np.sqrt(self.n) if theta.ndim == 2 else self.canonical(theta)

    def outputs(self, x, idx=None):
        """The network's outputs z_i(x) (logits for softmax), one row per sample of idx, (b, d_out)."""
        return self._outputs(self._x(x), self._idx(idx))

    def _chunks(self, T, per_row):
        size = max(1, _CHUNK_ELEMENTS // max(1, per_row))
        return [slice(s, min(T, s + size)) for s in range(0, T, size)]

    def _per_sample_width(self):
        return 3 * sum(self.dims) + self.d_out

    # ------------------------------------------------------------- data loss and gradients
    def _losses(self, x, idx):
        return self._losses_from_outputs(self._outputs(x, idx), self._targets[idx])

    def _sample_grads(self, x, idx):
        Ws, bs = self._unpack(x)
        Zs, Us = self._forward(Ws, bs, self.A[idx])
        return self._backward_rows(Ws, Zs, Us, self._residual(Zs[-1], self._targets[idx]))

    def _data_loss_grad(self, x):
        """(ℓ(x), ∇ℓ(x)) over the full data in one forward and one backward pass."""
        Ws, bs = self._unpack(x)
        Zs, Us = self._forward(Ws, bs, self.A)
        loss = float(self._losses_from_outputs(Zs[-1], self._targets).mean())
        gWs, gbs = self._backward(Ws, Zs, Us, self._residual(Zs[-1], self._targets) / self.n)
        return loss, self._pack(gWs, gbs, ())

    def grad(self, x, idx=None):
        """∇f_B(x) (ridge included), by back-propagation of the batch mean (no per-sample rows)."""
        x = self._x(x)
        idx = self._idx(idx)
        Ws, bs = self._unpack(x)
        Zs, Us = self._forward(Ws, bs, self.A[idx])
        gWs, gbs = self._backward(Ws, Zs, Us, self._residual(Zs[-1], self._targets[idx]) / len(idx))
        return self._pack(gWs, gbs, ()) + self.ridge_term(self.l2, x)

    def data_grad(self, x, idx=None):
        """∇ℓ_B(x): the data-loss gradient without the ridge."""
        x = self._x(x)
        return self.grad(x, idx) - self.ridge_term(self.l2, x)

    # ------------------------------------------------------------- KD
    def supports_temperature(self):
        return self.loss_type == "softmax"

    _check_temperature = DeepLinear._check_temperature
    _kd_output_losses = DeepLinear._kd_output_losses

    def tempered_teacher_probs(self, theta, temperature):
        if self.loss_type == "squared":
            return super().tempered_teacher_probs(theta, temperature)
        theta = self._teacher(theta)
        return _softmax(self._teacher_outputs(theta, np.arange(self.n)) / self._temperature(temperature))

    def _kd_residual(self, Z, Zt, targets, lam, temperature):
        """∂/∂z of the per-sample KD loss at student outputs Z and teacher outputs Zt."""
        if self.loss_type == "squared":
            return (Z - targets) - lam * (Zt - targets)          # (1−λ)(z − y) + λ(z − z_θ)
        t = temperature
        if t == 1.0:
            return _softmax(Z) - targets - lam * (_softmax(Zt) - targets)
        return (1 - lam) * (_softmax(Z) - targets) + lam * t * (_softmax(Z / t) - _softmax(Zt / t))

    def _kd_losses(self, x, theta, lam, idx, temperature):
        self._check_temperature(temperature)
        return self._kd_output_losses(self._outputs(x, idx), self._teacher_outputs(theta, idx), self._targets[idx], lam,
                                      temperature)

    def _kd_grad(self, x, theta, lam, idx, temperature):
        self._check_temperature(temperature)
        Ws, bs = self._unpack(x)
        Zs, Us = self._forward(Ws, bs, self.A[idx])
        D = self._kd_residual(Zs[-1], self._teacher_outputs(theta, idx), self._targets[idx], lam, temperature)
        gWs, gbs = self._backward(Ws, Zs, Us, D / len(idx))
        return self._pack(gWs, gbs, ())

    def sample_kd_grads(self, x, theta, lam, idx=None, temperature=1.0):
        """Per-sample gradients of ``kd_loss`` (ridge on the student included), one row per sample, (b, dim).

        Their mean over a minibatch is ``kd_grad`` on it (``kdsim.theory.alignment`` uses the rows).
        """
        x = self._x(x)
        theta = self._teacher(theta)
        lam = V.finite_float("lam", lam)
        t = self._temperature(temperature)
        self._check_temperature(t)
        idx = self._idx(idx)
        Ws, bs = self._unpack(x)
        Zs, Us = self._forward(Ws, bs, self.A[idx])
        D = self._kd_residual(Zs[-1], self._teacher_outputs(theta, idx), self._targets[idx], lam, t)
        return self._backward_rows(Ws, Zs, Us, D) + self.ridge_term(self.l2, x)

    def _teacher_outputs(self, theta, idx):
        """z_i(θ) of the samples idx: a forward pass of a same-architecture θ, or rows of given outputs."""
        return theta[idx] if theta.ndim == 2 else self._outputs(theta, idx)

    def _parameter_teacher(self, theta, what):
        """θ as the student's parameters, or a clear error for a teacher given by its outputs."""
        if theta.ndim == 2:
            raise ValueError(f"{what} needs θ in the student's parameter space (a vector of length {self.dim}); "
                             "this teacher is given by its outputs (n, d_out): use estimator 'kd_loss', or "
                             "teacher_l2=0 with 'kd'/'corrected' (the teacher's weight decay w·θ needs parameters)")
        return theta

    def distillation_grad(self, x, theta, lam, idx=None):
        """Estimator "kd" for an MLP: the literal KD-loss gradient with the teacher's weight decay,

        ∇f_B(x) − λ[J_B(x)ᵀ r_B(θ) + αθ] = ``kd_grad`` − λαθ (τ = 1), as for ``DeepLinear``. The
        parameter-space control variate ∇f_B(x) − λ∇f_B(θ) is ``control_variate_grad``; the two
        differ by λ(J_B(θ) − J_B(x))ᵀ r_B(θ) (docs/theory.md §2, claim 15).
        """
        theta = self._parameter_teacher(self._teacher(theta), "estimator 'kd' (its term λαθ)")
        lam = V.finite_float("lam", lam)
        return self.kd_grad(x, theta, lam, idx) - lam * self.ridge_term(self.l2, theta)

    def control_variate_grad(self, x, theta, lam, idx=None):
        """The parameter-space control variate ∇f_B(x) − λ∇f_B(θ) of docs/theory.md §2–§6.

        For an MLP it is *not* the gradient of any KD loss and no estimator of the engines runs it;
        ``kdsim.theory.alignment`` compares it with the KD gradient.
        """
        theta = self._parameter_teacher(self._teacher(theta), "the control variate ∇f_B(x) − λ∇f_B(θ)")
        lam = V.finite_float("lam", lam)
        return self.grad(x, idx) - lam * self.grad(theta, idx)

    # ------------------------------------------------------------- second order
    def _hvp(self, x, Vd, idx, rows=False, part="full"):
        """Exact data-loss Hessian (a.e. for ReLU) applied to the rows of Vd (k, dim) -> (k, dim).

        R-operator: with Rz_l = V_l u_{l−1} + W_l Ru_{l−1} + c_l, Ru_l = σ'(z_l)·Rz_l forward, the output
        RD_L = ∇²_zℓ[Rz_L] (squared: Rz; softmax: p⊙Rz − p(pᵀRz)) and backward
        R∇W_l = RD_l u_{l−1}ᵀ + D_l Ru_{l−1}ᵀ, R∇b_l = RD_l,
        RD_{l−1} = σ'(z_{l−1})⊙(W_lᵀRD_l + V_lᵀD_l) + σ''(z_{l−1})⊙Rz_{l−1}⊙(W_lᵀD_l).

        ``part="gauss_newton"`` keeps only J_iᵀ∇²_zℓ J_i v (D = 0 in the backward pass); ``"residual"``
        only Σ_k r_ik ∇²z_ik v (RD_L = 0). ``rows=True`` (one direction, k = 1): per-sample rows (b, dim)
        instead of their mean.
        """
        act = self.activation
        Ws, bs = self._unpack(x)
        Vs, cs = self._unpack(Vd)
        Ab = self.A[idx]
        b = len(idx)
        Zs, Us = self._forward(Ws, bs, Ab)
        RZs, RUs = [], [None]
        RU = None
        for k in range(self.depth):
            RZ = Us[k] @ _T(Vs[k])                                    # (k, b, h_k)
            if RU is not None:
                RZ = RZ + RU @ _T(Ws[k])
            if cs[k] is not None:
                RZ = RZ + cs[k][:, None, :]
            RZs.append(RZ)
            if k < self.depth - 1:
                RU = _act_d1(act, Zs[k], Us[k + 1]) * RZ
                RUs.append(RU)
        Zout = Zs[-1]
        if self.loss_type == "squared":
            D, RD = Zout - self._targets[idx], RZs[-1]
        else:
            p = _softmax(Zout)
            D = p - self._targets[idx]
            RD = p * RZs[-1] - p * np.sum(p * RZs[-1], axis=-1, keepdims=True)
        if part == "gauss_newton":
            D = np.zeros_like(D)
        elif part == "residual":
            RD = np.zeros_like(RD)
        if rows:
            RD, RUs = RD[0], [None if u is None else u[0] for u in RUs]
            RZs, Vs = [z[0] for z in RZs], [v[0] for v in Vs]
        else:
            D, RD = D / b, RD / b
        L = self.depth
        gWs, gbs = [None] * L, [None] * L
        for k in range(L - 1, -1, -1):
            if rows:
                g = RD[:, :, None] * Us[k][:, None, :]
                if RUs[k] is not None:
                    g = g + D[:, :, None] * RUs[k][:, None, :]
                gbs[k] = RD if self.bias else None
            else:
                g = _T(RD) @ Us[k]
                if RUs[k] is not None:
                    g = g + _T(D) @ RUs[k]
                gbs[k] = RD.sum(axis=-2) if self.bias else None
            gWs[k] = g
            if k > 0:
                G = D @ Ws[k]                                          # (b, h_{k−1})
                RG = RD @ Ws[k] + D @ Vs[k]                            # (k, b, h_{k−1}), or (b, h_{k−1}) for rows
                d1 = _act_d1(act, Zs[k - 1], Us[k])
                RD = RG * d1 + G * _act_d2(act, Zs[k - 1], Us[k]) * RZs[k - 1]
                D = G * d1
        return self._pack(gWs, gbs, (b,) if rows else (Vd.shape[0],))

    def hvp_rows(self, x, v, idx=None, part="full"):
        """Per-sample data-loss Hessian-vector products ∇²ℓ_i(x) v, one row per sample of idx, (b, dim).

        ``part``: "full" (exact, closed form; for ReLU on the current activation pattern), "gauss_newton"
        (J_i(x)ᵀ ∇²_zℓ J_i(x) v, the part that survives in the linear models) or "residual"
        (Σ_k r_ik(x) ∇²z_ik(x) v = full − Gauss–Newton: the curvature of the network map weighted by
        the output residuals). At a teacher θ the residual part gives the first-order gap between the
        KD gradient and the control variate: KD_B(x) − CV_B(x) = −λ N_B(θ)·(x − θ) + O(‖x − θ‖²), with
        N_B(θ) the mean over B of the residual part at θ (τ = 1; docs/theory.md §8, claim 15). No ridge
        (add α·v for ∇²f_i).
        """
        x = self._x(x)
        v = V.as_vector("v", v, self.dim)
        V.choice("part", part, ("full", "gauss_newton", "residual"))
        return self._hvp(x, v[None, :], self._idx(idx), rows=True, part=part)

    def hvp(self, x, v, idx=None):
        """∇²f_B(x) v (ridge included): exact closed form (R-operator; for ReLU on the current activation pattern)."""
        x = self._x(x)
        v = V.as_vector("v", v, self.dim)
        return self._hvp(x, v[None, :], self._idx(idx))[0] + self.ridge_term(self.l2, v)

    def _hessian(self, x, idx):
        """Exact data-loss Hessian: the closed-form HVP on the unit vectors (symmetrised)."""
        per_dir = len(idx) * 4 * sum(self.dims) + self.dim
        eye = np.eye(self.dim)
        H = np.concatenate([self._hvp(x, eye[s], idx) for s in self._chunks(self.dim, per_dir)], axis=0)
        return 0.5 * (H + H.T)

    def sample_smoothness(self):
        """No global per-sample constant exists for a network: raises ValueError (see the class docstring)."""
        raise ValueError(f"{self.name} has no global per-sample smoothness constant (a ReLU network's gradient "
                         "jumps across activation boundaries; sigmoid/tanh curvature grows with the weights); "
                         "use local_sample_smoothness(x) (dense per-sample Hessians, small networks only)")

    # ------------------------------------------------------------- batched primitives (engines)
    def _batch_grad(self, X, idx):
        Ws, bs = self._unpack(X)
        Zs, Us = self._forward(Ws, bs, self.A[idx])
        gWs, gbs = self._backward(Ws, Zs, Us, self._residual(Zs[-1], self._targets[idx]) / idx.shape[1])
        return self._pack(gWs, gbs, X.shape[:-1])

    def _batch_full_grad(self, X):
        out = np.empty_like(X)
        for s in self._chunks(X.shape[0], self.n * self._per_sample_width()):
            Ws, bs = self._unpack(X[s])
            Zs, Us = self._forward(Ws, bs, self.A)
            gWs, gbs = self._backward(Ws, Zs, Us, self._residual(Zs[-1], self._targets) / self.n)
            out[s] = self._pack(gWs, gbs, (X[s].shape[0],))
        return out

    def _batch_loss(self, X):
        out = np.empty(X.shape[0])
        for s in self._chunks(X.shape[0], self.n * self._per_sample_width()):
            Ws, bs = self._unpack(X[s])
            Z = self._forward(Ws, bs, self.A)[0][-1]
            out[s] = self._losses_from_outputs(Z, self._targets).mean(axis=-1)
        return out

    def record_row_bytes(self):
        return 8 * (2 * self.dim + self.n * self._per_sample_width())

    def suboptimality(self, X):
        """f(x) − f* per trajectory, (T,): f* of the local minimiser ``solution`` (may be < 0 elsewhere)."""
        return self.batch_loss(np.atleast_2d(np.asarray(X, dtype=np.float64))) - self.f_star

    # ------------------------------------------------------------- teacher terms (engines)
    def teacher_terms(self, theta, term="f", teacher_l2=None, weights=None):
        """Teacher quantities for the engines (``MLPTeacherTerms``): the teacher's output residuals
        r_i(θ) (n, d_out), its weight decay w·θ (``term="f"``: w = α, "data": 0, or ``teacher_l2``)
        and the full-term weights."""
        wd = self.teacher_weight_decay(term, teacher_l2)
        theta = self._teacher(theta)
        R = self._residual(self._teacher_outputs(theta, np.arange(self.n)), self._targets)
        w = None if weights is None else np.asarray(weights, dtype=np.float64)
        if theta.ndim == 2:
            if wd != 0.0:
                self._parameter_teacher(theta, f"the teacher's weight decay w·θ (w = {wd:g}, term {term!r})")
            return MLPTeacherTerms(theta, R, np.zeros(self.dim), w, term)
        return MLPTeacherTerms(theta, R, self.ridge_term(wd, theta), w, term)

    def batch_teacher_grad(self, X, terms, idx):
        """J_B(x)ᵀ r_B(θ) + w·θ for each trajectory (the student's back-propagation of the teacher's
        residuals): X (T, dim), idx (T, b) -> (T, dim)."""
        Ws, bs = self._unpack(X)
        Zs, Us = self._forward(Ws, bs, self.A[idx])
        gWs, gbs = self._backward(Ws, Zs, Us, terms.residuals[idx] / idx.shape[1])
        return self._pack(gWs, gbs, X.shape[:-1]) + terms.ridge

    def full_teacher_grad(self, X, terms):
        """J(x)ᵀ r(θ) + w·θ over the full data (weights ``terms.weights``, default 1/n) per trajectory, (T, dim)."""
        D = terms.residuals / self.n if terms.weights is None else terms.residuals * terms.weights[:, None]
        out = np.empty_like(X)
        for s in self._chunks(X.shape[0], self.n * self._per_sample_width()):
            Ws, bs = self._unpack(X[s])
            Zs, Us = self._forward(Ws, bs, self.A)
            gWs, gbs = self._backward(Ws, Zs, Us, D)
            out[s] = self._pack(gWs, gbs, (X[s].shape[0],))
        return out + terms.ridge

    # ------------------------------------------------------------- kernel spec (compiled engines)
    def _spec_structure(self):
        return ("identity" if self.loss_type == "squared" else "softmax"), self._targets, self.shapes

    def _spec_layers(self):
        return {"activation": self.activation, "biases": self.bias}

    def _spec_teacher(self, theta, term, teacher_l2=None, weights=None):
        """The teacher's output residuals r_i(θ), no map (the full term is a back-propagation at x), w·θ."""
        terms = self.teacher_terms(theta, term, teacher_l2, weights)
        return terms.residuals, np.zeros((self.d_out, self.d_in)), terms.ridge

    def _spec_refs(self):
        return {"f_star": float(self.f_star)}

    # ------------------------------------------------------------- held-out split
    def heldout_names(self):
        """("test_loss",) and, for softmax, "test_accuracy"; () without a test split."""
        if self.test is None:
            return ()
        return ("test_loss", "test_accuracy") if self.loss_type == "softmax" else ("test_loss",)

    def heldout_records(self, X):
        """Held-out records of iterates X (N, dim): test data loss (no ridge) and, for softmax, accuracy."""
        test = self.test
        if test is None:
            raise ValueError("this problem carries no test split (use problem.with_test(test))")
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        out = {name: np.full(len(X), np.nan) for name in self.heldout_names()}
        ok = np.flatnonzero(np.isfinite(X).all(axis=1))
        for s in test._chunks(len(ok), test.n * test._per_sample_width()):
            rows = ok[s]
            Ws, bs = test._unpack(X[rows])
            with np.errstate(over="ignore", invalid="ignore"):
                Z = test._forward(Ws, bs, test.A)[0][-1]                       # (rows, n_test, d_out)
                out["test_loss"][rows] = test._losses_from_outputs(Z, test._targets).mean(axis=-1)
                if "test_accuracy" in out:
                    out["test_accuracy"][rows] = (Z.argmax(axis=-1) == test.Y[None, :]).mean(axis=-1)
        return out

    # ------------------------------------------------------------- start and solution
    def default_x0(self):
        """Seeded random start: W_l ~ N(0, s²·g/h_{l−1}) (g = 2 for ReLU, else 1; s = ``init_scale``), b_l = 0."""
        rng = np.random.default_rng(self.init_seed)
        gain = 2.0 if self.activation == "relu" else 1.0
        Ws = [rng.standard_normal((r, c)) * (self.init_scale * np.sqrt(gain / c)) for r, c in self.shapes]
        bs = [np.zeros(r) for r, _ in self.shapes] if self.bias else None
        return self._pack(Ws, bs, ())

    def _newton(self, x, maxiter=20):
        """Newton steps on the exact Hessian (pseudo-inverse of |eigenvalues|) with backtracking on f or ‖∇f‖."""
        f = self.loss(x)
        g = self.grad(x)
        gn = float(np.linalg.norm(g))
        steps = 0
        while steps < maxiter and gn > self.solve_tol:
            w, U = np.linalg.eigh(self.hessian(x))
            wa = np.abs(w)
            keep = wa > 1e-10 * wa.max()
            step = -U[:, keep] @ ((U[:, keep].T @ g) / wa[keep])
            t, accepted = 1.0, False
            while t >= 1e-10:
                xn = x + t * step
                fn, gn_new = self.loss(xn), float(np.linalg.norm(self.grad(xn)))
                if np.isfinite(fn) and (fn < f or (fn <= f + 1e-13 * abs(f) and gn_new < gn)):
                    accepted = True
                    break
                t *= 0.5
            if not accepted:
                break
            steps += 1
            x, f, g, gn = xn, fn, self.grad(xn), gn_new
        return x, steps

    def _kink_count(self, x, rtol=1e-4):
        """Hidden pre-activations (over samples and units) within rtol·rms of 0: ReLU's kinks near x."""
        Ws, bs = self._unpack(x)
        Zs, _ = self._forward(Ws, bs, self.A)
        Z = np.concatenate([z.ravel() for z in Zs[:-1]])
        return int(np.sum(np.abs(Z) <= rtol * np.sqrt(np.mean(Z * Z))))

    def _solve(self):
        if self.loss_type == "softmax" and self.l2 == 0.0:
            raise ValueError("an MLP with loss='softmax' and l2=0 has no finite minimiser when it separates the "
                             "data (the loss falls to 0 as the weights grow); pass l2 > 0 for solution()")
        from threadpoolctl import threadpool_limits

        def fun(z):
            loss, g = self._data_loss_grad(z)
            return loss + self._ridge_value(z), g + self.ridge_term(self.l2, z)

        smooth = self.activation != "relu"
        with threadpool_limits(limits=1, user_api="blas"):      # small matrices: one BLAS thread is fastest
            res = scipy.optimize.minimize(fun, self.default_x0(), jac=True, method="L-BFGS-B",
                                          options={"maxiter": self.solve_maxiter, "maxcor": 30, "ftol": 0.0,
                                                   "gtol": self.solve_tol / np.sqrt(self.dim), "maxls": 50})
            x = res.x
            iters, newton = int(res.nit), 0
            gn = float(np.linalg.norm(fun(x)[1]))
            method = f"L-BFGS from default_x0 (init_seed={self.init_seed})"
            if smooth and gn > self.solve_tol and self.dim <= NEWTON_MAX_DIM:
                x, newton = self._newton(x)
                gn = float(np.linalg.norm(self.grad(x)))
                method += ", then Newton on the exact Hessian"
            kinks = 0 if smooth else self._kink_count(x)
        stationary = gn <= self.solve_tol
        self._solve_info = {"method": method + (" (a local minimiser)" if stationary else
                                                " (an approximate local minimiser of the piecewise-smooth f)"),
                            "grad_norm": gn, "stationary": stationary, "iterations": iters,
                            "newton_steps": newton, "near_kinks": kinks, "lbfgs_message": str(res.message)}
        if not np.all(np.isfinite(x)):
            raise RuntimeError(f"MLP solve diverged ({method}; {res.message})")
        if smooth and not stationary:
            raise RuntimeError(f"MLP solve stopped at ‖∇f‖ = {gn:.3g} > solve_tol = {self.solve_tol:g} "
                               f"({method}; {res.message}); raise solve_maxiter or solve_tol, or try another "
                               "init_seed")
        return x

    @property
    def solve_info(self):
        """How ``solution`` was obtained: method, ‖∇f(x*)‖ reached, iterations (solves if needed)."""
        self._solution  # noqa: B018 - triggers the solve
        return dict(self._solve_info)
