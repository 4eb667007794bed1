"""MLPs: closed-form back-propagation, R-operator HVPs and the function-space KD gradient
(docs/theory.md §2, claim 15), the layout, DeepLinear as the identity activation, the engines'
teacher terms, simulate on the reference engine, solution() and bad input.

Tolerances. Finite differences are central with step h = 1e-5 along unit directions; their error
is estimated per comparison from the same difference at 2h (truncation ≈ |D(2h) − D(h)|/3, it
scales like h²) plus the rounding bound 16ε·max(1, |value|)/h, and a comparison passes within 4×
that sum (``fd_tolerance``). At the random points used no hidden pre-activation lies within
4h·|∂z/∂v| of a ReLU kink (``assert_kink_free``), so every stencil sees one smooth piece. Closed
forms compared with other closed forms (per-sample rows, batched forms, DeepLinear) differ only
by rounding: 1e-12 relative.
"""
import numpy as np
import pytest

import kdsim
from kdsim.problems.mlp import ACTIVATIONS, MLP, MLPTeacherTerms

H = 1e-5
LOSSES = ("softmax", "squared")
CASES = [(act, loss) for act in ACTIVATIONS for loss in LOSSES]
CASE_IDS = [f"{a}-{loss}" for a, loss in CASES]


def make(activation="relu", loss="softmax", hidden=(5, 3), n=14, d=4, l2=0.1, bias=True, seed=0, **kw):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d))
    y = rng.permutation(np.arange(n) % 3) if loss == "softmax" else rng.standard_normal((n, 2))
    return MLP(A, y, hidden=hidden, activation=activation, loss=loss, l2=l2, bias=bias, **kw)


def point(p, seed=1, scale=0.5):
    rng = np.random.default_rng(seed)
    return p.default_x0() + scale * rng.standard_normal(p.dim)


def directions(p, count=3, seed=2):
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((count, p.dim))
    return V / np.linalg.norm(V, axis=1, keepdims=True)


def assert_kink_free(p, x, v, idx):
    """No hidden pre-activation within 4h·|∂z/∂v| of 0 (only ReLU has kinks)."""
    if p.activation != "relu":
        return
    Ws, bs = p._unpack(x)
    _, Us = p._forward(Ws, bs, p.A[idx])
    for k in range(p.depth - 1):
        z = Us[k] @ Ws[k].T + (bs[k] if bs[k] is not None else 0.0)
        # the derivative of z along v, by the R-operator's first layers (a forward difference is enough here)
        Ws2, bs2 = p._unpack(x + 1e-7 * v)
        _, Us2 = p._forward(Ws2, bs2, p.A[idx])
        z2 = Us2[k] @ Ws2[k].T + (bs2[k] if bs2[k] is not None else 0.0)
        dz = np.abs(z2 - z) / 1e-7
        assert np.all(np.abs(z) > 4 * H * dz + 1e-12), "a ReLU kink lies inside the stencil"


def fd_tolerance(value_of, h=H):
    """(central difference at h, tolerance) for a scalar or vector function t -> value(x + t v)."""
    d1 = (value_of(h) - value_of(-h)) / (2 * h)
    d2 = (value_of(2 * h) - value_of(-2 * h)) / (4 * h)
    scale = max(1.0, float(np.max(np.abs(value_of(0.0)))))
    return d1, 4.0 * (float(np.max(np.abs(d2 - d1))) / 3.0 + 16 * np.finfo(float).eps * scale / h)


# ---------------------------------------------------------------------------- derivatives
@pytest.mark.parametrize("activation,loss", CASES, ids=CASE_IDS)
def test_gradient_kd_gradient_and_hvp_match_finite_differences(activation, loss):
    p = make(activation, loss)
    x, theta = point(p, 1), point(p, 3)
    idx = np.array([0, 2, 3, 7, 11])
    taus = (1.0, 2.0) if loss == "softmax" else (1.0,)
    for v in directions(p):
        assert_kink_free(p, x, v, np.arange(p.n))
        d, tol = fd_tolerance(lambda t: p.loss(x + t * v, idx))
        assert abs(d - p.grad(x, idx) @ v) <= tol
        d, tol = fd_tolerance(lambda t: p.loss(x + t * v))
        assert abs(d - p.grad(x) @ v) <= tol
        for tau in taus:
            d, tol = fd_tolerance(lambda t: p.kd_loss(x + t * v, theta, 0.6, idx, tau))
            assert abs(d - p.kd_grad(x, theta, 0.6, idx, tau) @ v) <= tol, tau
        d, tol = fd_tolerance(lambda t: p.grad(x + t * v, idx))
        assert np.max(np.abs(d - p.hvp(x, v, idx))) <= tol
    assert tol < 1e-7                                    # the derived tolerances are tight


@pytest.mark.parametrize("activation,loss", CASES, ids=CASE_IDS)
def test_rows_batches_and_hessian_agree_with_the_means(activation, loss):
    p = make(activation, loss)
    x, theta = point(p, 1), point(p, 3)
    idx = np.array([1, 4, 5, 9])
    g = p.grad(x, idx)
    rtol = dict(rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(p.sample_grads(x, idx).mean(axis=0), g, **rtol)
    np.testing.assert_allclose(p.data_grad(x, idx) + p.l2 * x, g, **rtol)
    np.testing.assert_allclose(p.sample_kd_grads(x, theta, 0.3, idx).mean(axis=0), p.kd_grad(x, theta, 0.3, idx), **rtol)
    Hm = p.hessian(x, idx)
    np.testing.assert_allclose(Hm, Hm.T, rtol=0, atol=1e-14 * np.abs(Hm).max())
    v = directions(p, 1)[0]
    np.testing.assert_allclose(Hm @ v, p.hvp(x, v, idx), **rtol)
    full, gn, res = (p.hvp_rows(x, v, idx, part) for part in ("full", "gauss_newton", "residual"))
    np.testing.assert_allclose(full.mean(axis=0) + p.l2 * v, p.hvp(x, v, idx), **rtol)
    np.testing.assert_allclose(gn + res, full, rtol=1e-12, atol=1e-13)
    # the Gauss–Newton part is J_iᵀ ∇²_zℓ J_i v: positive semi-definite (convex losses)
    assert np.all(np.einsum("id,d->i", gn, v) >= -1e-13)
    X = np.stack([x, theta, point(p, 5)])
    I = np.stack([idx, idx[::-1], np.array([0, 1, 2, 3])])
    np.testing.assert_allclose(p.batch_grad(X, I), np.stack([p.grad(z, i) for z, i in zip(X, I)]), **rtol)
    np.testing.assert_allclose(p.batch_full_grad(X), np.stack([p.grad(z) for z in X]), **rtol)
    np.testing.assert_allclose(p.batch_loss(X), [p.loss(z) for z in X], **rtol)


def test_residual_curvature_is_the_first_order_gap_of_kd_and_the_control_variate():
    # KD_B(x) − CV_B(x) = −λ N_B(θ)(x − θ) + O(‖x − θ‖²): the gap falls like r, its remainder like r²
    p = make("sigmoid", "softmax", l2=0.05)
    theta = point(p, 1)
    u = directions(p, 1, seed=9)[0]
    idx = np.array([0, 3, 6, 8])
    lam = 0.7
    errs = []
    for r in (1e-2, 5e-3):
        x = theta + r * u
        gap = p.distillation_grad(x, theta, lam, idx) - p.control_variate_grad(x, theta, lam, idx)
        first = -lam * p.hvp_rows(theta, x - theta, idx, "residual").mean(axis=0)
        errs.append(np.linalg.norm(gap - first))
        assert np.linalg.norm(gap - first) < 0.05 * np.linalg.norm(first)
    assert errs[0] / errs[1] == pytest.approx(4.0, rel=0.1)        # second-order remainder


def test_kd_equals_the_control_variate_at_the_teacher():
    # the gap λ(J_B(θ) − J_B(x))ᵀ r_B(θ) vanishes at x = θ, for every activation
    for act in ACTIVATIONS:
        p = make(act, "softmax")
        theta = point(p, 2)
        idx = np.array([1, 2, 3])
        np.testing.assert_allclose(p.distillation_grad(theta, theta, 0.8, idx),
                                   p.control_variate_grad(theta, theta, 0.8, idx), rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------------------- KD conventions
@pytest.mark.parametrize("loss", LOSSES)
def test_kd_conventions(loss):
    p = make("tanh", loss, l2=0.2)
    x, theta = point(p, 1), point(p, 3)
    idx = np.array([0, 5, 6])
    np.testing.assert_allclose(p.kd_grad(x, theta, 0.0, idx), p.grad(x, idx), rtol=1e-13, atol=1e-14)
    # "kd" = kd_grad − λαθ; the control variate is the parameter-space ∇f_B(x) − λ∇f_B(θ)
    np.testing.assert_allclose(p.distillation_grad(x, theta, 0.4, idx),
                               p.kd_grad(x, theta, 0.4, idx) - 0.4 * 0.2 * theta, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(p.control_variate_grad(x, theta, 0.4, idx),
                               p.grad(x, idx) - 0.4 * p.grad(theta, idx), rtol=1e-13, atol=1e-14)
    # the KD gradient is affine in λ (the KD loss is)
    g0, g1, gh = (p.kd_grad(x, theta, lam, idx) for lam in (0.0, 1.0, 0.35))
    np.testing.assert_allclose(gh, g0 + 0.35 * (g1 - g0), rtol=1e-12, atol=1e-13)
    # a stationary teacher is a fixed point of "kd" for any λ: KD-grad(θ) = (1 − λ)∇f(θ)
    np.testing.assert_allclose(p.distillation_grad(theta, theta, 0.6), 0.4 * p.grad(theta), rtol=1e-12, atol=1e-13)
    assert p.supports_temperature() == (loss == "softmax")
    if loss == "squared":
        with pytest.raises(ValueError, match="temperature must be 1 for the squared loss"):
            p.kd_grad(x, theta, 0.5, temperature=2.0)
    else:
        probs = p.tempered_teacher_probs(theta, 2.0)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-14)


@pytest.mark.parametrize("term,teacher_l2,wd", [("f", None, 0.1), ("data", None, 0.0), ("data", 0.3, 0.3)])
def test_teacher_terms_pull_back_the_teacher_residuals_at_the_student(term, teacher_l2, wd):
    p = make("relu", "softmax", l2=0.1)
    theta = point(p, 3)
    terms = p.teacher_terms(theta, term, teacher_l2)
    assert isinstance(terms, MLPTeacherTerms) and terms.residuals.shape == (p.n, p.d_out)
    X = np.stack([point(p, 1), point(p, 4)])
    idx = np.array([[0, 1, 2], [3, 4, 13]])
    TB = p.batch_teacher_grad(X, terms, idx)
    for t in range(2):
        # J_B(x)ᵀ r_B(θ) = ∇f_B(x) − kd_grad(x, θ, 1)   (the τ = 1 KD gradient is affine in λ)
        want = p.grad(X[t], idx[t]) - p.kd_grad(X[t], theta, 1.0, idx[t]) + wd * theta
        np.testing.assert_allclose(TB[t], want, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(p.full_teacher_grad(X, terms)[t],
                                   p.grad(X[t]) - p.kd_grad(X[t], theta, 1.0) + wd * theta, rtol=1e-12, atol=1e-13)
    w = np.random.default_rng(0).random(p.n)
    w /= w.sum()
    weighted = p.teacher_terms(theta, term, teacher_l2, weights=w)
    rows = np.stack([p.grad(X[0], [i]) - p.kd_grad(X[0], theta, 1.0, [i]) for i in range(p.n)])
    np.testing.assert_allclose(p.full_teacher_grad(X[:1], weighted)[0], w @ rows + wd * theta, rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------------------- layout and DeepLinear
def test_layout_is_weights_row_major_then_biases():
    p = make("relu", "softmax", hidden=(5,), d=4)                      # 4 → 5 → 3
    assert p.dim == 5 * 4 + 3 * 5 + 5 + 3
    x = np.arange(p.dim, dtype=float)
    Ws, bs = p.layers(x)
    np.testing.assert_array_equal(Ws[0], np.arange(20.0).reshape(5, 4))          # row j: weights into unit j
    np.testing.assert_array_equal(Ws[1], np.arange(20.0, 35.0).reshape(3, 5))
    np.testing.assert_array_equal(bs[0], np.arange(35.0, 40.0))
    np.testing.assert_array_equal(bs[1], np.arange(40.0, 43.0))
    np.testing.assert_array_equal(p.pack(Ws, bs), x)
    nb = make("relu", "softmax", hidden=(5,), d=4, bias=False)
    assert nb.dim == 35 and nb.layers(np.zeros(35))[1] == [None, None]
    with pytest.raises(ValueError, match="bs must hold 2 bias vectors"):
        p.pack(Ws)


@pytest.mark.parametrize("loss", LOSSES)
def test_identity_activation_without_bias_is_deep_linear(loss):
    # same layout (the weight block is DeepLinear's vector), same numbers to rounding
    rng = np.random.default_rng(4)
    A = rng.standard_normal((16, 4))
    y = rng.permutation(np.arange(16) % 3) if loss == "softmax" else rng.standard_normal((16, 3))
    m = MLP(A, y, hidden=(5, 2), activation=None, loss=loss, bias=False, l2=0.2)
    d = kdsim.DeepLinear(A, y, hidden=(5, 2), loss=loss, l2=0.2)
    assert m.dim == d.dim and m.activation == "identity"
    x, theta, v = rng.standard_normal((3, m.dim))
    idx = np.array([0, 4, 9, 15])
    close = dict(rtol=1e-12, atol=1e-13)
    assert m.loss(x, idx) == pytest.approx(d.loss(x, idx), rel=1e-13)
    np.testing.assert_allclose(m.grad(x, idx), d.grad(x, idx), **close)
    np.testing.assert_allclose(m.sample_grads(x, idx), d.sample_grads(x, idx), **close)
    np.testing.assert_allclose(m.hvp(x, v, idx), d.hvp(x, v, idx), **close)
    assert m.kd_loss(x, theta, 0.4, idx) == pytest.approx(d.kd_loss(x, theta, 0.4, idx), rel=1e-13)
    np.testing.assert_allclose(m.kd_grad(x, theta, 0.4, idx), d.kd_grad(x, theta, 0.4, idx), **close)
    np.testing.assert_allclose(m.distillation_grad(x, theta, 0.4, idx), d.distillation_grad(x, theta, 0.4, idx), **close)
    if loss == "softmax":
        np.testing.assert_allclose(m.kd_grad(x, theta, 0.4, idx, 2.0), d.kd_grad(x, theta, 0.4, idx, 2.0), **close)


# ---------------------------------------------------------------------------- solution
@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_solution_is_a_stationary_point_and_deterministic(activation):
    p = make(activation, "softmax", n=30, l2=0.05)
    x = p.solution()
    info = p.solve_info
    assert info["stationary"] and info["grad_norm"] <= p.solve_tol == 1e-8
    assert np.linalg.norm(p.grad(x)) <= p.solve_tol
    # a local minimum: the Hessian is positive semi-definite there (ridge α = 0.05 > 0)
    assert np.linalg.eigvalsh(p.hessian(x))[0] > -1e-8
    again = make(activation, "softmax", n=30, l2=0.05)
    np.testing.assert_array_equal(again.solution(), x)
    other = make(activation, "softmax", n=30, l2=0.05, init_seed=1)
    assert not np.array_equal(other.solution(), x)
    assert p.f_star == pytest.approx(p.loss(x))


def test_squared_loss_solution():
    p = make("tanh", "squared", n=20, l2=0.01)
    assert np.linalg.norm(p.grad(p.solution())) <= 1e-8


def test_relu_solution_is_an_approximate_local_minimiser_reported_as_such():
    p = make("relu", "softmax", n=30, l2=0.05, solve_maxiter=500)
    x = p.solution()
    info = p.solve_info
    assert set(info) >= {"method", "grad_norm", "stationary", "near_kinks", "iterations"}
    assert info["stationary"] == (info["grad_norm"] <= p.solve_tol)
    assert info["grad_norm"] < 1e-2 * np.linalg.norm(p.grad(p.default_x0()))
    assert p.loss(x) < p.loss(p.default_x0())
    np.testing.assert_array_equal(make("relu", "softmax", n=30, l2=0.05, solve_maxiter=500).solution(), x)


def test_solution_refuses_softmax_without_ridge():
    p = make("sigmoid", "softmax", l2=0.0)
    with pytest.raises(ValueError, match="pass l2 > 0"):
        p.solution()


def test_no_global_smoothness_constant():
    p = make("sigmoid", "softmax")
    with pytest.raises(ValueError, match="no global per-sample smoothness constant"):
        p.sample_smoothness()
    x = point(p)
    L = p.local_sample_smoothness(x)
    assert L.shape == (p.n,) and np.all(np.isfinite(L))
    assert L[2] == pytest.approx(np.linalg.eigvalsh(p.hessian(x, [2]))[-1], rel=1e-10)


# ---------------------------------------------------------------------------- simulate
@pytest.mark.parametrize("estimator", ["sgd", "kd", "kd_loss", "corrected", "svrg"])
def test_simulate_runs_every_estimator_on_the_reference_engine(estimator):
    p = make("relu", "softmax", n=20, l2=0.1, solve_maxiter=300)
    theta = point(p, 3, scale=0.2)
    res = kdsim.simulate(p, theta, [0.0, 0.5], 0.05, 30, 3, batch_size=4, estimator=estimator, record_every=10,
                         backend="numpy")
    assert res.timing["engine"] == "numpy" and not res.diverged.any()
    assert res.subopt.shape == (2, 3, 4) and np.all(np.isfinite(res.subopt))


@pytest.mark.parametrize("estimator", ["kd", "kd_loss", "corrected"])
def test_reference_engine_follows_a_hand_loop_with_reshuffling_and_momentum(estimator):
    # the engine's step g = ∇f_B(x) − a·T_B(x) + c·T(x) with the teacher term pulled back at the student
    p = make("sigmoid", "softmax", n=12, l2=0.1)
    theta = point(p, 3, scale=0.3)
    lam, step, mu, b, steps = 0.6, 0.1, 0.5, 5, 9
    res = kdsim.simulate(p, theta, [lam], step, steps, 2, batch_size=b, estimator=estimator, sampling="reshuffle",
                         momentum=mu, record_every=steps, seed=4, backend="numpy")
    wd = 0.0 if estimator == "kd_loss" else p.l2
    for s in range(2):
        x, w = p.default_x0(), np.zeros(p.dim)
        for t in range(steps):
            B = kdsim.rng.minibatch(4, np.array([s], dtype=np.uint64), t, p.n, b, "reshuffle")[0]
            g = p.kd_grad(x, theta, lam, B) - lam * wd * theta
            if estimator == "corrected":
                full = p.grad(x) - p.kd_grad(x, theta, 1.0) + wd * theta       # J(x)ᵀ r(θ) + αθ
                g = g + lam * full
            w = mu * w + g
            x = x - step * w
        np.testing.assert_allclose(res.x_final[0, s], x, rtol=1e-11, atol=1e-12)


def test_corrected_kd_is_unbiased_and_kd_at_a_stationary_teacher_is_noise_free():
    p = make("tanh", "softmax", n=16, l2=0.1)
    theta = p.solution()
    # E_B of the corrected direction is ∇f(x): average over every minibatch of size 2
    import itertools
    x = point(p, 2)
    terms = p.teacher_terms(theta)
    lam = 0.7
    gs = [p.grad(x, list(B)) - lam * p.batch_teacher_grad(x[None], terms, np.array([B]))[0]
          + lam * p.full_teacher_grad(x[None], terms)[0] for B in itertools.combinations(range(p.n), 2)]
    np.testing.assert_allclose(np.mean(gs, axis=0), p.grad(x), rtol=1e-11, atol=1e-13)
    # θ = x*, λ = 1: "kd" vanishes at x = θ on every minibatch, so KD stays at θ
    res = kdsim.simulate(p, theta, [1.0], 0.1, 50, 2, batch_size=3, x0=theta, record_every=50)
    assert np.max(res.dist2_opt) < 1e-24


def test_simulate_with_temperature_held_out_split_and_backends():
    ds = kdsim.datasets.load_digits(standardize=True)
    train = MLP(ds.A[:40], ds.y[:40], hidden=(6,), activation="relu", l2=0.1, n_classes=10, solve_maxiter=200)
    test = MLP(ds.A[40:70], ds.y[40:70], hidden=(6,), activation="relu", l2=0.1, n_classes=10)
    p = train.with_test(test)
    assert p.heldout_names() == ("test_loss", "test_accuracy")
    theta = point(p, 3, scale=0.1)
    res = kdsim.simulate(p, theta, [0.5], 0.05, 20, 2, batch_size=5, estimator="kd", temperature=2.0,
                         record_every=10, keep_iterates=True, backend="auto")
    assert res.timing["engine"] == "numba"                  # auto: an MLP exports a kernel spec
    acc = res.heldout["test_accuracy"]
    assert acc.shape == (1, 2, 3) and np.all((acc >= 0) & (acc <= 1))
    X = res.iterates[0, 0]
    Z = test.outputs(X[-1])
    assert acc[0, 0, -1] == pytest.approx(np.mean(Z.argmax(axis=1) == test.Y))
    np.testing.assert_allclose(res.heldout["test_loss"][0, 0], [test.data_loss(x) for x in X], rtol=1e-12)
    ref = kdsim.simulate(p, theta, [0.5], 0.05, 20, 2, batch_size=5, estimator="kd", temperature=2.0,
                         record_every=10, backend="numpy")
    for name in ("test_loss", "test_accuracy"):
        np.testing.assert_allclose(res.heldout[name], ref.heldout[name], rtol=1e-9)
    assert p.kernel_spec(theta, kdsim.estimators.get_estimator("kd")).family == "mlp"


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs,exc,message", [
    ({"activation": "gelu"}, ValueError, "unknown activation 'gelu'"),
    ({"loss": "hinge"}, ValueError, "unknown loss 'hinge'"),
    ({"hidden": ()}, ValueError, "hidden must name at least one hidden width"),
    ({"hidden": (4, 0)}, ValueError, r"hidden\[1\] = 0"),
    ({"hidden": 4}, TypeError, "hidden must be a sequence"),
    ({"bias": 1}, TypeError, "bias must be True or False"),
    ({"init_scale": 0.0}, ValueError, "init_scale"),
    ({"l2": -1.0}, ValueError, "l2"),
    ({"solve_tol": -1.0}, ValueError, "solve_tol"),
    ({"n_classes": 2}, ValueError, "n_classes"),
])
def test_bad_constructor_arguments_name_the_parameter(kwargs, exc, message):
    rng = np.random.default_rng(0)
    A, y = rng.standard_normal((6, 3)), np.arange(6) % 3
    args = {"hidden": (4,), **kwargs}
    with pytest.raises(exc, match=message):
        MLP(A, y, **args)


def test_bad_data_and_call_arguments():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 3))
    with pytest.raises(ValueError, match="A must be a 2-d array"):
        MLP(A[0], np.arange(6) % 2)
    with pytest.raises(ValueError, match="y must be a 1-d array of 6 integer class labels"):
        MLP(A, np.arange(5) % 2)
    with pytest.raises(ValueError, match="y must have one row per row of A"):
        MLP(A, np.ones((5, 2)), loss="squared")
    with pytest.raises(ValueError, match="n_classes applies only to loss='softmax'"):
        MLP(A, np.ones(6), loss="squared", n_classes=3)
    p = MLP(A, np.arange(6) % 2, hidden=(4,), l2=0.1)
    x = p.default_x0()
    with pytest.raises(ValueError, match=f"theta must be a vector of length {p.dim}"):
        p.kd_grad(x, np.zeros(3), 0.5)
    with pytest.raises(ValueError, match=f"x must be a vector of length {p.dim}"):
        p.grad(np.zeros(3))
    with pytest.raises(ValueError, match="lam must be finite"):
        p.kd_grad(x, x, np.nan)
    with pytest.raises(ValueError, match="unknown part"):
        p.hvp_rows(x, x, part="diagonal")
    with pytest.raises(ValueError, match="temperature"):
        p.kd_grad(x, x, 0.5, temperature=0.0)


def test_repr_fingerprint_and_exports():
    p = make("relu", "softmax")
    q = make("sigmoid", "softmax")
    assert "widths=4→5→3→3" in repr(p) and "activation='relu'" in repr(p)
    assert p.fingerprint() != q.fingerprint() and p.fingerprint() == make("relu", "softmax").fingerprint()
    assert kdsim.MLP is MLP and kdsim.problems.MLP is MLP
