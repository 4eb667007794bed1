"""What both baselines need from a kdsim (problem, plan): plain arrays, no kdsim engine code.

``prepare(problem, plan, dtype)`` turns a problem and a validated plan
(``kdsim.simulate.make_plan``) into a ``Spec`` of float64 arrays: data, the teacher's
per-sample residuals and full-data term (they do not depend on the iterate), the
control-variate coefficients (a, c) of every λ from ``kdsim.estimators``, and the
constants of the three records kdsim returns. The baselines then implement, for every
(λ, seed) trajectory,

    x_{t+1} = x_t − γ g,   g = ∇f_B(x) − a·T_B + c·T          (kdsim.estimators)

on the minibatches ``kdsim.rng.minibatch_indices(seed, stream, t, n, b)`` (λ-major,
row k·S + s is (λ_k, seed s), the streams of ``plan.streams``), with kdsim's divergence
guard (after a step, not ‖x‖² ≤ limit marks the trajectory diverged at t + 1 and its
iterate becomes NaN) and its records at ``plan.record_steps``:

* ``dist2_opt``     ‖c(x) − c(x*)‖²,  c = the problem's canonical coordinates
  (least squares: x; softmax: class-centred weights; deep linear: the end-to-end map;
  MLP: whichever kdsim's ``MLP.canonical`` is, x itself or the outputs on the n samples
  stacked and scaled by 1/√n, ``Spec.function_space``);
* ``dist2_teacher`` ‖c(x) − c(θ)‖²;
* ``subopt``        f(x) − f*: least squares ½(‖F e‖² + α‖e‖²) with e = x − x* and
  F = R/√n from a QR of A (kdsim's form); softmax and deep linear the direct difference
  f(x) − f* with f* = ``problem.f_star`` (the plain formula; kdsim evaluates a
  cancellation-free form, equal to rounding while f − f* is not tiny; for an MLP kdsim
  too takes the plain difference, f* being a local minimum's).

Families: least squares, softmax regression and deep linear networks (squared or
softmax loss); estimators sgd, kd, kd_loss and corrected. MLPs (``kdsim.MLP``, kind
"mlp": hidden activation, biases after the weights as kdsim lays them out, the ridge on
every parameter) with estimators sgd, kd and kd_loss at temperature 1: their teacher
term is the student's back-propagation of the teacher's output residuals rt_i plus the
teacher's weight decay ``ridge`` = w·θ, so a step back-propagates r_i(x) − a·rt_i through
the student's own layers; corrected KD (a full-data back-propagation per step) raises
``ValueError``. SVRG's snapshot refresh is outside the benchmark workloads and raises
``ValueError``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdsim.problems.deep_linear import DeepLinear
from kdsim.problems.least_squares import LeastSquares
from kdsim.problems.mlp import MLP
from kdsim.problems.softmax import SoftmaxRegression

from kdsim.plan import DIVERGENCE_LIMIT, DTYPES, RECORDS, guard_limit  # noqa: F401  (kdsim's own constants)


def softmax_rows(Z):
    """Stable softmax over the last axis (numpy)."""
    E = np.exp(Z - Z.max(axis=-1, keepdims=True))
    return E / E.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Spec:
    """A (problem, plan) pair as plain float64 arrays; see the module docstring.

    ``layers``: the layer widths (d_in, …, d_out) of the parameter vector, row-major
    layers concatenated (least squares: (d, 1) with the single "layer" a row vector;
    softmax: (d', K)). ``loss``: "squared" (least squares, squared deep linear) or
    "softmax". ``targets``: b (n, 1) for least squares, y (n, d_out) or one-hot labels.
    ``rt``: the teacher's output residuals (n, d_out) (zeros without a teacher);
    ``Gt``: their mean map (1/n) Σ rt_i a_iᵀ (d_out, d_in); ``ridge``: the teacher's
    ridge term (dim,). For one layer J(x) = I and the teacher terms are T_B =
    (1/b) Σ rt_i a_iᵀ + ridge and T = Gt + ridge.
    """

    kind: str
    A: np.ndarray
    targets: np.ndarray
    rt: np.ndarray
    Gt: np.ndarray
    ridge: np.ndarray
    layers: tuple
    loss: str
    l2: float
    step: float
    batch: int
    steps: int
    record_steps: np.ndarray
    a: np.ndarray              # (L,) coefficient of the teacher's minibatch term
    c: np.ndarray              # (L,) coefficient of the teacher's full-data term
    seed: int
    streams: np.ndarray        # (L, S) uint64
    x0: np.ndarray
    xstar_c: np.ndarray        # canonical x*
    theta_c: np.ndarray        # canonical θ
    F: np.ndarray              # least squares: R/√n of a QR of A; else empty
    f_star: float
    dtype: str
    activation: str = "identity"   # MLPs: the hidden layers' activation ("relu", "sigmoid", "tanh")
    biases: bool = False           # MLPs: every layer has a bias b_k, stored after all the weights
    function_space: bool = False   # MLPs: canonical coordinates are the outputs on the n samples / √n

    @property
    def n(self):
        return self.A.shape[0]

    @property
    def dim(self):
        return self.x0.shape[0]

    @property
    def n_lams(self):
        return self.streams.shape[0]

    @property
    def n_seeds(self):
        return self.streams.shape[1]

    @property
    def crn(self):
        """Common random numbers: every λ uses its seed's stream."""
        return bool(np.all(self.streams == self.streams[0]))

    @property
    def depth(self):
        return len(self.layers) - 1

    @property
    def offsets(self):
        sizes = [self.layers[k + 1] * self.layers[k] for k in range(self.depth)]
        return np.concatenate([[0], np.cumsum(sizes)]).astype(int)

    @property
    def bias_offsets(self):
        """Start of each layer's bias in x and the end (dim), after the weights; None without biases."""
        if not self.biases:
            return None
        return (self.offsets[-1] + np.concatenate([[0], np.cumsum(self.layers[1:])])).astype(int)

    @property
    def limit(self):
        return guard_limit(self.dtype)


def prepare(problem, plan, dtype="float64"):
    """The ``Spec`` of a problem and a validated plan (iterate arithmetic in ``dtype``)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}; got {dtype!r}")
    est = plan.estimator
    if est.snapshot:
        raise ValueError(f"the baselines implement estimators sgd, kd, kd_loss and corrected; "
                         f"got {est.name!r} (SVRG's snapshot refresh is not benchmarked)")
    coef = np.array([est.coefficients(lam) for lam in plan.lams], dtype=np.float64)
    p, theta = problem, plan.theta
    common = dict(l2=float(p.l2), step=float(plan.step), batch=int(plan.batch_size),
                  steps=int(plan.steps), record_steps=np.asarray(plan.record_steps, dtype=np.int64),
                  a=coef[:, 0].copy(), c=coef[:, 1].copy(), seed=int(plan.seed),
                  streams=np.asarray(plan.streams, dtype=np.uint64), x0=np.asarray(plan.x0, dtype=np.float64),
                  xstar_c=np.asarray(p.canonical(p.solution()), dtype=np.float64),
                  theta_c=np.asarray(p.canonical_teacher(theta), dtype=np.float64), dtype=dtype)
    term_f = est.teacher_term == "f"
    if type(p) is LeastSquares:
        A = p.A
        rt = (A @ theta - p.b)[:, None] if est.uses_teacher else np.zeros((p.n, 1))
        ridge = p.l2 * theta if (est.uses_teacher and term_f) else np.zeros(p.dim)
        F = np.array(p.gram_factor())                  # FᵀF = AᵀA/n; a writeable copy (one numba signature)
        return Spec("least_squares", A, p.b[:, None], rt, rt.T @ A / p.n, ridge, (p.dim, 1), "squared",
                    F=F, f_star=float(p.f_star), **common)
    if type(p) is SoftmaxRegression:
        A = p.A
        Y = np.eye(p.n_classes)[p.y]
        if est.uses_teacher:
            rt = softmax_rows(A @ p.weights(theta).T) - Y
        else:
            rt = np.zeros_like(Y)
        ridge = p.l2 * theta if (est.uses_teacher and term_f) else np.zeros(p.dim)
        return Spec("softmax", A, Y, rt, rt.T @ A / p.n, ridge, (p.n_features, p.n_classes), "softmax",
                    F=np.zeros((0, 0)), f_star=float(p.f_star), **common)
    if type(p) is DeepLinear:
        targets = p.Y if p.loss_type == "squared" else np.eye(p.n_classes)[p.Y]
        if est.uses_teacher:
            terms = p.teacher_terms(theta, est.teacher_term)
            rt, Gt, ridge = terms.residuals, terms.full_map, terms.ridge
        else:
            rt = np.zeros_like(targets)
            Gt, ridge = np.zeros((p.d_out, p.d_in)), np.zeros(p.dim)
        return Spec("deep_linear", p.A, np.asarray(targets, dtype=np.float64), rt, Gt, ridge, tuple(p.dims),
                    p.loss_type, F=np.zeros((0, 0)), f_star=float(p.f_star), **common)
    if type(p) is MLP:
        if est.corrected or float(plan.temperature) != 1.0 or p.l2_mask is not None:
            raise ValueError(f"the baselines run MLPs with estimators sgd, kd and kd_loss at temperature 1 and the "
                             f"ridge on every parameter; got estimator {est.name!r}, temperature "
                             f"{plan.temperature:g}, l2_bias={p.l2_bias} (corrected KD's full-data "
                             f"back-propagation per step is not benchmarked)")
        targets = np.eye(p.n_classes)[p.Y] if p.loss_type == "softmax" else p.Y
        if est.uses_teacher:
            terms = p.teacher_terms(theta, est.teacher_term, plan.teacher_l2)
            rt, ridge = terms.residuals, terms.ridge
        else:
            rt, ridge = np.zeros_like(targets), np.zeros(p.dim)
        # kdsim measures an MLP's distances between parameters (x itself) or between functions (the outputs
        # z_i(x) on the n samples, stacked and scaled by 1/√n): which one, from its canonical map
        x0 = common["x0"]
        c0 = np.asarray(p.canonical(x0), dtype=np.float64)
        function_space = not (c0.shape == x0.shape and np.array_equal(c0, x0))
        if function_space and c0.shape != (p.n * p.d_out,):
            raise NotImplementedError(f"MLP canonical coordinates of shape {c0.shape}: the baselines know x itself "
                                      f"and the outputs on the n samples / √n ({p.n * p.d_out},)")
        return Spec("mlp", p.A, np.asarray(targets, dtype=np.float64), np.asarray(rt, dtype=np.float64),
                    np.zeros((p.d_out, p.d_in)), np.asarray(ridge, dtype=np.float64), tuple(p.dims), p.loss_type,
                    F=np.zeros((0, 0)), f_star=float(p.f_star), activation=p.activation, biases=p.bias,
                    function_space=function_space, **common)
    raise NotImplementedError(f"the baselines implement LeastSquares, SoftmaxRegression, DeepLinear and MLP; "
                              f"got {type(p).__name__}")


def minibatches(spec, t):
    """Indices of step t from ``kdsim.rng``: (S, b) under common random numbers, else (L, S, b)."""
    from kdsim.rng import minibatch_indices
    if spec.crn:
        return minibatch_indices(spec.seed, spec.streams[0], t, spec.n, spec.batch)
    idx = minibatch_indices(spec.seed, spec.streams.ravel(), t, spec.n, spec.batch)
    return idx.reshape(spec.n_lams, spec.n_seeds, spec.batch)


def all_minibatches(spec):
    """Every step's indices, int32: (S, steps, b) under common random numbers, else (L, S, steps, b)."""
    first = minibatches(spec, 0)
    out = np.empty(first.shape[:-1] + (spec.steps, spec.batch), dtype=np.int32)
    out[..., 0, :] = first
    for t in range(1, spec.steps):
        out[..., t, :] = minibatches(spec, t)
    return out


# ------------------------------------------------------------------------- flops
def step_flops(layers, batch, loss, has_teacher, has_full_term, has_shrink, activation=False, biases=False):
    """Useful flops of one step of one trajectory (the math, not an implementation).

    Convention: a multiply or an add is one flop (an FMA two), exp is one flop,
    operations on per-trajectory constants (γ/b, a·ridge, c·T) are hoisted and not
    counted, the divergence guard is not counted. Per sample of the minibatch: the
    forward products Σ 2 d_k d_{k+1}; the output residual (squared: 1 subtraction per
    output; softmax: max, exp, sum, divide and the label: 5 per output); the teacher's
    −a·rt_i (2 per output); the weight gradients accumulated Σ 2 d_k d_{k+1}; the
    back-propagated deltas Σ_{k≥1} 2 d_k d_{k+1}. Per step: the teacher full-data
    term pulled back (deep nets with c ≠ 0: Σ 2 d_out·d_in·(rows+cols) + adds, counted
    as the blocks' products) and the update x ← x − (γ/b)·g (2 per parameter), plus 2
    per parameter for α x or a constant ridge vector when present.

    MLPs (``activation``: hidden layers with an activation; ``biases``: every layer has
    a bias), per sample: the bias adds of the forward pass and the bias gradients
    accumulated, Σ_k d_{k+1} each; the activation of each hidden unit (1: ReLU's max) and
    its derivative's product with the back-propagated delta (1), Σ_{0<k<L} d_k each. The
    parameters (dim, for the update and the ridge) include the biases.
    """
    L = len(layers) - 1
    n_bias = sum(layers[1:]) if biases else 0
    dim = sum(layers[k] * layers[k + 1] for k in range(L)) + n_bias
    fwd = sum(2 * layers[k] * layers[k + 1] for k in range(L))
    d_out = layers[-1]
    resid = d_out * (1 if loss == "squared" else 5) + (2 * d_out if has_teacher else 0)
    back = sum(2 * layers[k] * layers[k + 1] for k in range(1, L))
    hidden = sum(layers[1:-1]) if activation else 0
    per_sample = 2 * fwd + resid + back + 2 * n_bias + 2 * hidden
    update = 2 * dim + (2 * dim if has_shrink else 0)
    full = 0
    if has_full_term:
        full = dim if L == 1 else sum(2 * layers[0] * layers[-1] * (layers[k] + layers[k + 1])
                                      for k in range(L))
    return batch * per_sample + update + full


def record_flops(kind, layers, n, l2, biases=False, activation=False, loss="softmax", function_space=False):
    """Useful flops of one record (three numbers) of one trajectory.

    dist2_opt and dist2_teacher: 3 per canonical coordinate each (difference, square,
    sum). subopt: least squares ½(‖F e‖² + α‖e‖²) with F triangular, d(d+1) + 2d (+2d
    with a ridge); softmax the loss over the n samples, 2nKd' for the logits + 5nK for
    log-sum-exp and the label + 2Kd' for the ridge; deep linear the end-to-end map
    (Σ_{k≥1} 2 d_{k+1} d_k d_in) and the loss over the n samples (2n·d_out·d_in + 3n·d_out).
    Softmax's canonical centring is 2Kd'. MLP (dim with the biases): the forward pass of
    the n samples (Σ 2 d_k d_{k+1}, the bias adds Σ_k d_{k+1} and one per hidden unit for
    the activation) and the loss (5 per output, softmax; 3, squared), plus 2·dim for the
    ridge; its distances are over dim coordinates, or with ``function_space`` over the
    n·d_out outputs (the same forward pass, counted once).
    """
    if kind == "mlp":
        L = len(layers) - 1
        n_bias = sum(layers[1:]) if biases else 0
        dim = sum(layers[k] * layers[k + 1] for k in range(L)) + n_bias
        fwd = sum(2 * layers[k] * layers[k + 1] for k in range(L)) + n_bias \
            + (sum(layers[1:-1]) if activation else 0)
        per_loss = (5 if loss == "softmax" else 3) * layers[-1]
        coords = n * layers[-1] if function_space else dim
        return 6 * coords + n * (fwd + per_loss) + (2 * dim if l2 else 0)
    if kind == "least_squares":
        d = layers[0]
        return 6 * d + d * (d + 1) + 2 * d + (2 * d if l2 else 0)
    if kind == "softmax":
        dp, K = layers
        return 2 * K * dp + 6 * K * dp + 2 * n * K * dp + 5 * n * K + 2 * K * dp
    d_in, d_out = layers[0], layers[-1]
    emap = sum(2 * layers[k + 1] * layers[k] * d_in for k in range(1, len(layers) - 1))
    dim = sum(layers[k] * layers[k + 1] for k in range(len(layers) - 1))
    return emap + 6 * d_out * d_in + 2 * n * d_out * d_in + 3 * n * d_out + (2 * dim if l2 else 0)
