"""Softmax regression and the canonical GLMs (logistic, Poisson): every test checks a number.

Tolerances (float64):
* central finite differences with step h = 1e-6: truncation h²·|f'''|/6 ≈ 1e-13 and rounding
  ≈ eps·|f|/h ≈ 1e-10 on these O(1) instances, so rtol 1e-6 (relative to max(1, ‖g‖∞)) has
  a margin of 1e3 and still catches any wrong term (O(1) errors);
* algebraic identities (KD identity, batch vs per-trajectory methods): 1e-10 / 1e-12 relative
  (a few roundings of O(1) sums);
* suboptimality at a gap of ~1e-20: relative error 1e-6 against 60-digit decimal arithmetic.
"""
from decimal import Decimal, localcontext

import numpy as np
import pytest

import kdsim
from kdsim.kernelspec import expm1_minus_id

H_FD = 1e-6
RTOL_FD = 1e-6


# ----------------------------------------------------------------------------- instances

def softmax_problem(seed=0, n=20, d=3, K=3, bias=False, l2=0.0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, d))
    y = rng.integers(0, K, n)            # random labels: not separable for n ≫ K·d
    return kdsim.SoftmaxRegression(A, y, K, bias=bias, l2=l2)


def logistic_problem(seed=0, n=30, d=3, bias=False, l2=0.0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, d))
    w = 0.7 * rng.normal(size=d)
    y = (rng.random(n) < 1 / (1 + np.exp(-A @ w))).astype(float)
    return kdsim.LogisticRegression(A, y, l2=l2, bias=bias)


def poisson_problem(seed=0, n=30, d=3, bias=False, l2=0.0):
    rng = np.random.default_rng(seed)
    A = 0.7 * rng.normal(size=(n, d))
    y = rng.poisson(np.exp(A @ (0.5 * rng.normal(size=d)))).astype(float)
    return kdsim.PoissonRegression(A, y, l2=l2, bias=bias)


FACTORIES = {"softmax": softmax_problem, "logistic": logistic_problem, "poisson": poisson_problem}
CASES = [(kind, bias, l2) for kind in FACTORIES for bias in (False, True) for l2 in (0.0, 0.3)]
IDS = [f"{k}-bias{int(b)}-l2={a}" for k, b, a in CASES]


@pytest.fixture(params=CASES, ids=IDS)
def problem(request):
    kind, bias, l2 = request.param
    return FACTORIES[kind](seed=len(kind) + 2 * bias + int(10 * l2), bias=bias, l2=l2)


def point(problem, seed, scale=0.5):
    return scale * np.random.default_rng(seed).normal(size=problem.dim)


def fd_grad(fun, x, h=H_FD):
    g = np.empty_like(x)
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = h
        g[j] = (fun(x + e) - fun(x - e)) / (2 * h)
    return g


def assert_fd(fd, exact):
    scale = max(1.0, np.abs(exact).max())
    assert np.abs(fd - exact).max() <= RTOL_FD * scale, np.abs(fd - exact).max()


# ----------------------------------------------------------------------------- derivatives

def test_grad_matches_finite_differences(problem):
    x = point(problem, 1)
    idx = np.array([0, 3, 4, 7, 7])                      # a minibatch (with a repeat)
    assert_fd(fd_grad(problem.loss, x), problem.grad(x))
    assert_fd(fd_grad(lambda v: problem.loss(v, idx), x), problem.grad(x, idx))
    assert_fd(fd_grad(problem.data_loss, x), problem.data_grad(x))


def _check_kd_grad_fd(problem, tau):
    x, theta = point(problem, 2), point(problem, 3)
    for idx in (None, np.array([1, 2, 5, 11])):
        fd = fd_grad(lambda v: problem.kd_loss(v, theta, 0.7, idx, temperature=tau), x)
        assert_fd(fd, problem.kd_grad(x, theta, 0.7, idx, temperature=tau))


def test_kd_grad_matches_finite_differences(problem):
    _check_kd_grad_fd(problem, 1.0)


@pytest.mark.parametrize("tau", [0.5, 2.0])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("l2", [0.0, 0.3])
def test_softmax_kd_grad_matches_finite_differences_at_temperature(tau, bias, l2):
    """The τ²-weighted soft cross-entropy and its closed-form gradient (GLMs reject τ ≠ 1, tested below)."""
    _check_kd_grad_fd(softmax_problem(seed=3, bias=bias, l2=l2), tau)


def test_hessian_matches_finite_differences_of_grad(problem):
    x = point(problem, 4)
    H = problem.hessian(x)
    assert np.abs(H - H.T).max() <= 1e-14 * max(1.0, np.abs(H).max())
    fd = np.column_stack([(problem.grad(x + H_FD * e) - problem.grad(x - H_FD * e)) / (2 * H_FD)
                          for e in np.eye(problem.dim)])
    assert_fd(fd, H)
    idx = np.array([2, 6])
    fdb = np.column_stack([(problem.grad(x + H_FD * e, idx) - problem.grad(x - H_FD * e, idx)) / (2 * H_FD)
                           for e in np.eye(problem.dim)])
    assert_fd(fdb, problem.hessian(x, idx))


def test_kd_gradient_identity(problem):
    """kd_grad(x, θ, λ) = ∇f_B(x) − λ∇ℓ_B(θ) (= ∇f_B(x) − λ∇f_B(θ) without ridge), τ = 1."""
    x, theta = point(problem, 5), point(problem, 6)
    for lam in (0.3, 1.0, 1.7):
        for idx in (None, np.array([0, 4, 9])):
            kd = problem.kd_grad(x, theta, lam, idx)
            ref = problem.grad(x, idx) - lam * problem.data_grad(theta, idx)
            assert np.linalg.norm(kd - ref) <= 1e-10 * np.linalg.norm(ref)
            if problem.l2 == 0.0:
                ref0 = problem.grad(x, idx) - lam * problem.grad(theta, idx)
                assert np.linalg.norm(kd - ref0) <= 1e-10 * np.linalg.norm(ref0)
            else:   # the ridge makes the literal KD loss and the distillation gradient differ by λαθ
                dist = problem.distillation_grad(x, theta, lam, idx)
                assert np.allclose(kd - dist, lam * problem.l2 * theta, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bias", [False, True])
def test_softmax_identity_fails_at_temperature_two(bias):
    p = softmax_problem(seed=7, bias=bias)
    x, theta = point(p, 8, 1.0), point(p, 9, 1.0)
    kd = p.kd_grad(x, theta, 0.7, temperature=2.0)
    ref = p.grad(x) - 0.7 * p.grad(theta)
    assert np.linalg.norm(kd - ref) > 1e-3 * np.linalg.norm(ref)
    kd1 = p.kd_grad(x, theta, 0.7, temperature=1.0)
    assert np.linalg.norm(kd1 - ref) <= 1e-10 * np.linalg.norm(ref)


def test_kd_loss_reduces_to_loss_at_zero_weight(problem):
    x, theta = point(problem, 10), point(problem, 11)
    assert problem.kd_loss(x, theta, 0.0) == pytest.approx(problem.loss(x), rel=1e-13)
    if problem.name == "softmax":
        assert problem.kd_loss(x, theta, 0.0, temperature=3.0) == pytest.approx(problem.loss(x), rel=1e-13)


# ----------------------------------------------------------------------------- batched forms

def test_sample_grads_average_to_grad(problem):
    x = point(problem, 12)
    rows = problem.sample_grads(x)
    assert rows.shape == (problem.n, problem.dim)
    assert np.allclose(rows.mean(axis=0), problem.grad(x), rtol=1e-12, atol=1e-14)


def test_batch_methods_match_per_trajectory_methods(problem):
    T, b = 5, 4
    rng = np.random.default_rng(13)
    X = 0.5 * rng.normal(size=(T, problem.dim))
    idx = np.stack([rng.choice(problem.n, b, replace=False) for _ in range(T)])
    G = problem.batch_grad(X, idx)
    F = problem.batch_full_grad(X)
    Lo = problem.batch_loss(X)
    for t in range(T):
        assert np.allclose(G[t], problem.grad(X[t], idx[t]), rtol=1e-12, atol=1e-14)
        assert np.allclose(F[t], problem.grad(X[t]), rtol=1e-12, atol=1e-14)
        assert Lo[t] == pytest.approx(problem.loss(X[t]), rel=1e-12)
    terms = problem.teacher_terms(X[0], "f")
    TB = problem.batch_teacher_grad(X, terms, idx)
    for t in range(T):
        assert np.allclose(TB[t], problem.grad(X[0], idx[t]), rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- invariance

@pytest.mark.parametrize("bias", [False, True])
def test_softmax_canonical_invariance(bias):
    p = softmax_problem(seed=14, bias=bias)
    x = point(p, 15, 1.0)
    v = np.random.default_rng(16).normal(size=p.n_features)
    shifted = (p.weights(x) + v[None, :]).ravel()            # add v to every row of X
    assert p.loss(shifted) == pytest.approx(p.loss(x), rel=1e-13)
    assert np.allclose(p.grad(shifted), p.grad(x), atol=1e-14)
    assert np.allclose(p.canonical(shifted), p.canonical(x), atol=1e-14)
    C = p.canonical(np.stack([x, shifted]))                   # (T, dim) form
    assert np.allclose(C[0], C[1], atol=1e-14)
    assert np.abs(p.weights(C[0]).sum(axis=0)).max() <= 1e-14   # centred columns
    assert np.allclose(p.canonical(C[0]), C[0], atol=1e-15)     # idempotent
    assert p.loss(C[0]) == pytest.approx(p.loss(x), rel=1e-13)
    # with a ridge the centred representative has the smaller loss
    q = softmax_problem(seed=14, bias=bias, l2=0.3)
    assert q.loss(q.canonical(x)) < q.loss(x)


# ----------------------------------------------------------------------------- optimum, constants

def test_solution_is_stationary(problem):
    xs = problem.solution()
    assert np.linalg.norm(problem.grad(xs)) <= 1e-10
    if problem.name == "softmax":
        assert np.allclose(problem.canonical(xs), xs, atol=1e-15)
    # a minimum, not just a stationary point: nearby points are worse
    for s in range(3):
        assert problem.loss(xs + point(problem, 20 + s, 1e-3)) > problem.f_star


def test_local_smoothness(problem):
    for x in (np.zeros(problem.dim), point(problem, 17), point(problem, 18, 2.0), problem.solution()):
        loc = problem.local_sample_smoothness(x)
        dense = np.array([np.linalg.eigvalsh(problem.hessian(x, [i]))[-1] for i in range(problem.n)])
        assert np.allclose(loc, dense, rtol=1e-10, atol=1e-12)
        if problem.name == "poisson":
            with pytest.raises(ValueError, match="local_sample_smoothness"):
                problem.sample_smoothness()
        else:
            assert problem.smoothness_kind == "bound"
            assert np.all(loc <= problem.sample_smoothness() * (1 + 1e-12))


def test_smoothness_bound_is_attained():
    """The ½‖a‖² (softmax) and ¼‖a‖² (logistic) bounds are tight where they should be."""
    p = softmax_problem(seed=19, n=4, d=2, K=3)
    # logits (t, t, −∞) for every sample: p = (½, ½, 0) makes λ_max(diag p − ppᵀ) = ½
    A = p.A
    W = np.zeros((3, 2))
    W[2] = -60 * np.sign(A.mean(axis=0))
    loc = p.local_sample_smoothness(W.ravel())
    mask = (A @ W[2]) < -30
    assert mask.any()
    assert np.allclose(loc[mask], p.sample_smoothness()[mask], rtol=1e-10)
    q = logistic_problem(seed=19)
    assert np.allclose(q.local_sample_smoothness(np.zeros(q.dim)), q.sample_smoothness(), rtol=1e-14)


def test_suboptimality_moderate_gaps(problem):
    X = problem.solution() + np.stack([point(problem, 30 + s, sc) for s, sc in enumerate((0.01, 0.3, 1.0, 3.0))])
    sub = problem.suboptimality(X)
    naive = np.array([problem.loss(x) for x in X]) - problem.f_star
    assert np.all(sub > 0)
    assert np.allclose(sub, naive, rtol=1e-9, atol=1e-15)
    assert problem.suboptimality(X[1]).shape == (1,)


def _dec(v):
    return Decimal(float(v))


def decimal_loss_and_grad(problem, x):
    """f(x) and ∇f(x) in 60-digit decimal arithmetic, from the definitions (independent code)."""
    with localcontext() as ctx:
        ctx.prec = 60
        n, l2 = problem.n, _dec(problem.l2)
        xs = [_dec(v) for v in x]
        A = [[_dec(v) for v in row] for row in problem.A]
        total = Decimal(0)
        grad = [Decimal(0)] * problem.dim
        if problem.name == "softmax":
            K, d = problem.n_classes, problem.n_features
            for i in range(n):
                z = [sum(xs[k * d + j] * A[i][j] for j in range(d)) for k in range(K)]
                ez = [zk.exp() for zk in z]
                s = sum(ez)
                yi = int(problem.y[i])
                total += s.ln() - z[yi]
                for k in range(K):
                    r = ez[k] / s - (1 if k == yi else 0)
                    for j in range(d):
                        grad[k * d + j] += r * A[i][j]
        else:
            for i in range(n):
                z = sum(xs[j] * A[i][j] for j in range(problem.dim))
                yi = _dec(problem.y[i])
                if problem.name == "logistic":
                    psi, dpsi = (1 + z.exp()).ln(), 1 / (1 + (-z).exp())
                else:
                    psi = dpsi = z.exp()
                total += psi - yi * z
                for j in range(problem.dim):
                    grad[j] += (dpsi - yi) * A[i][j]
        f = total / n + l2 / 2 * sum(v * v for v in xs)
        g = [gj / n + l2 * xj for gj, xj in zip(grad, xs)]
        return f, g


@pytest.mark.parametrize("kind", ["softmax", "logistic", "poisson"])
@pytest.mark.parametrize("l2", [0.0, 0.3])
def test_suboptimality_accurate_at_tiny_gap(kind, l2):
    p = FACTORIES[kind](seed=21, n=20, bias=True, l2=l2)
    xs = p.solution()
    u = np.random.default_rng(22).normal(size=p.dim)
    H = p.hessian(xs)
    e_raw = u * np.sqrt(2e-20 / (u @ H @ u))             # ½ eᵀHe = 1e-20
    x = xs + e_raw
    e = x - xs                                            # exact (Sterbenz), what the gap is made of
    f_x, _ = decimal_loss_and_grad(p, x)
    f_s, g_s = decimal_loss_and_grad(p, xs)
    with localcontext() as ctx:
        ctx.prec = 60
        truth = float(f_x - f_s)
        first_order = float(sum(gj * _dec(ej) for gj, ej in zip(g_s, e)))
    model = 0.5 * e @ H @ e + first_order                 # ½eᵀ∇²f(x*)e + ∇f(x*)ᵀe (‖∇f(x*)‖ ≠ 0 in floats)
    assert 0.5e-20 < truth < 2e-20
    assert abs(model - truth) <= 1e-6 * truth             # the quadratic model is the truth here
    sub = p.suboptimality(x)[0]
    assert abs(sub - truth) <= 1e-6 * truth
    assert abs((p.loss(x) - p.f_star) - truth) > 1e-3 * truth   # the naive difference cannot do this


def test_expm1_minus_identity_is_accurate():
    t = np.array([-30.0, -2.0, -1.0, -0.7, -1e-3, -1e-9, 0.0, 1e-12, 1e-5, 0.3, 0.999, 1.0, 1.5, 20.0])
    with localcontext() as ctx:
        ctx.prec = 50
        ref = np.array([float(_dec(v).exp() - 1 - _dec(v)) for v in t])
    got = expm1_minus_id(np, t)
    assert np.all(np.abs(got - ref) <= 4e-16 * np.abs(ref))


# ----------------------------------------------------------------------------- no finite optimum

def test_separable_data_raise_without_ridge():
    rng = np.random.default_rng(23)
    A = rng.normal(size=(15, 3))
    y2 = (A[:, 0] + 0.5 * A[:, 1] > 0).astype(int)
    for make in (lambda l2: kdsim.SoftmaxRegression(A, y2, 2, l2=l2),
                 lambda l2: kdsim.SoftmaxRegression(A, np.argmax(A, axis=1), 3, bias=True, l2=l2),
                 lambda l2: kdsim.LogisticRegression(A, y2.astype(float), l2=l2)):
        with pytest.raises(ValueError, match="no finite optimum.*l2 > 0"):
            make(0.0).solution()
        ridge = make(1e-2)
        assert np.linalg.norm(ridge.grad(ridge.solution())) <= 1e-10
    # the certificates themselves, both ways: strict separation by a point, and the linear program
    assert kdsim.LogisticRegression(A, y2.astype(float))._separates(np.array([1.0, 0.5, 0.0]))
    assert kdsim.SoftmaxRegression(A, y2, 2)._separates(np.array([-1.0, -0.5, 0.0, 1.0, 0.5, 0.0]))
    assert not kdsim.LogisticRegression(A, y2.astype(float))._separates(np.array([1.0, -0.5, 0.0]))
    assert not kdsim.PoissonRegression(A, np.ones(15))._separates(-np.ones(3))
    assert kdsim.SoftmaxRegression(A, y2, 2)._separable()
    assert kdsim.LogisticRegression(A, y2.astype(float))._unbounded()
    assert not softmax_problem(seed=1, bias=True)._separable()
    assert not logistic_problem(seed=1, bias=True)._unbounded()
    assert not poisson_problem(seed=1, bias=True)._unbounded()
    assert kdsim.PoissonRegression(A, np.zeros(15), bias=True)._unbounded()
    # Poisson: all-zero counts push every rate to 0 (no finite optimum) without a ridge
    with pytest.raises(ValueError, match="no finite optimum"):
        kdsim.PoissonRegression(A, np.zeros(15), bias=True).solution()
    q = kdsim.PoissonRegression(A, np.zeros(15), bias=True, l2=0.1)
    assert np.linalg.norm(q.grad(q.solution())) <= 1e-10


def test_newton_does_not_report_a_false_optimum(monkeypatch):
    """Newton's method on separable data drives ‖∇f‖ below 1e-10 at a large ‖x‖; with the
    separability certificate switched off, its own next-step test must still refuse."""
    rng = np.random.default_rng(23)
    A = rng.normal(size=(15, 3))
    y2 = (A[:, 0] + 0.5 * A[:, 1] > 0).astype(int)
    soft, logi = kdsim.SoftmaxRegression(A, y2, 2), kdsim.LogisticRegression(A, y2.astype(float))
    for cls in (kdsim.SoftmaxRegression, kdsim.LogisticRegression):
        monkeypatch.setattr(cls, "_separates", lambda self, x: False)
    monkeypatch.setattr(kdsim.SoftmaxRegression, "_separable", lambda self: False)
    monkeypatch.setattr(kdsim.LogisticRegression, "_unbounded", lambda self: False)
    for p in (soft, logi):
        with pytest.raises(ValueError, match="next step still has length.*no finite optimum.*l2 > 0"):
            p.solution()


# ----------------------------------------------------------------------------- bad input

def test_bad_input_softmax():
    rng = np.random.default_rng(24)
    A, y = rng.normal(size=(6, 2)), np.array([0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match="A"):
        kdsim.SoftmaxRegression(A[:, 0], y, 3)
    bad = A.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="A must be finite"):
        kdsim.SoftmaxRegression(bad, y, 3)
    with pytest.raises(ValueError, match="y must have one label per row"):
        kdsim.SoftmaxRegression(A, y[:5], 3)
    with pytest.raises(ValueError, match=r"y labels must lie in \[0, 3\)"):
        kdsim.SoftmaxRegression(A, y + 1, 3)
    with pytest.raises(ValueError, match=r"y labels must lie in \[0, 3\)"):
        kdsim.SoftmaxRegression(A, y - 1, 3)
    with pytest.raises(ValueError, match="y must hold integer"):
        kdsim.SoftmaxRegression(A, y + 0.5, 3)
    with pytest.raises(ValueError, match="y must be finite"):
        kdsim.SoftmaxRegression(A, np.where(y == 0, np.nan, y), 3)
    with pytest.raises(ValueError, match="n_classes must satisfy n_classes >= 2"):
        kdsim.SoftmaxRegression(A, np.zeros(6, dtype=int), 1)
    with pytest.raises(TypeError, match="n_classes"):
        kdsim.SoftmaxRegression(A, y, 3.0)
    with pytest.raises(TypeError, match="bias"):
        kdsim.SoftmaxRegression(A, y, 3, bias="yes")
    with pytest.raises(ValueError, match="l2"):
        kdsim.SoftmaxRegression(A, y, 3, l2=-1.0)
    p = kdsim.SoftmaxRegression(A, y, 3, bias=True)
    assert p.dim == 9
    x = np.zeros(p.dim)
    for tau in (0.0, -1.0, np.inf):
        with pytest.raises(ValueError, match="temperature"):
            p.kd_loss(x, x, 0.5, temperature=tau)
        with pytest.raises(ValueError, match="temperature"):
            p.kd_grad(x, x, 0.5, temperature=tau)
    with pytest.raises(ValueError, match="x must be a vector of length 9"):
        p.grad(np.zeros(6))
    with pytest.raises(ValueError, match="theta"):
        p.kd_grad(x, np.zeros(8), 0.5)
    with pytest.raises(ValueError, match="x must have shape"):
        p.canonical(np.zeros((2, 8)))
    with pytest.raises(ValueError, match="X must have shape"):
        p.suboptimality(np.zeros(8))


def test_bad_input_glm():
    rng = np.random.default_rng(25)
    A = rng.normal(size=(6, 2))
    yb = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    with pytest.raises(ValueError, match=r"y must hold binary labels in \{0, 1\}"):
        kdsim.LogisticRegression(A, yb * 2)
    with pytest.raises(ValueError, match="y must be finite"):
        kdsim.LogisticRegression(A, np.where(yb == 0, np.nan, yb))
    with pytest.raises(ValueError, match="y must have one entry per row"):
        kdsim.LogisticRegression(A, yb[:4])
    with pytest.raises(ValueError, match="A must be a 2-d array"):
        kdsim.LogisticRegression(A.ravel(), yb)
    with pytest.raises(ValueError, match="y must hold counts >= 0"):
        kdsim.PoissonRegression(A, yb - 0.5)
    bad = A.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="A must be finite"):
        kdsim.PoissonRegression(bad, yb)
    for p in (kdsim.LogisticRegression(A, yb), kdsim.PoissonRegression(A, 3 * yb, bias=True)):
        x = np.zeros(p.dim)
        with pytest.raises(ValueError, match="temperature must be 1"):
            p.kd_grad(x, x, 0.5, temperature=2.0)
        with pytest.raises(ValueError, match="temperature must be 1"):
            p.kd_loss(x, x, 0.5, temperature=0.5)
        with pytest.raises(ValueError, match="temperature"):
            p.kd_loss(x, x, 0.5, temperature=-1.0)
        with pytest.raises(ValueError, match="lam"):
            p.kd_grad(x, x, np.nan)
        with pytest.raises(ValueError, match="idx"):
            p.grad(x, [0, 6])


# ----------------------------------------------------------------------------- reference engine

def _ridge_softmax():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(30, 3))
    return kdsim.SoftmaxRegression(A, rng.integers(0, 3, 30), 3, bias=True, l2=0.1)


def test_engine_kd_with_optimal_teacher_converges_to_optimum():
    """docs/theory.md §8 claim 2: θ = x*, λ = 1 reaches x* to machine precision; SGD plateaus."""
    p = _ridge_softmax()
    xs = p.solution()
    kd = kdsim.simulate(p, xs, [1.0], 0.3, 400, seeds=4, batch_size=5, estimator="kd", record_every=100)
    sgd = kdsim.simulate(p, xs, [0.0], 0.3, 400, seeds=4, batch_size=5, estimator="kd", record_every=100)
    assert not kd.diverged.any() and not sgd.diverged.any()
    assert np.all(kd.dist2_opt[0, :, -1] < 1e-20)
    assert np.all(kd.subopt[0, :, -1] < 1e-20)
    assert np.all(kd.dist2_opt[0, :, 0] > 0.1)            # it started far away
    assert np.all(sgd.dist2_opt[0, :, -1] > 1e-4)         # SGD's noise floor


def test_engine_kd_full_weight_converges_to_teacher():
    """docs/theory.md §8 claim 3: λ = 1, estimator "kd", ridge: the fixed point solves ∇f(x) = ∇f(θ), i.e. x = θ."""
    p = _ridge_softmax()
    theta = 0.3 * np.random.default_rng(5).normal(size=p.dim)   # not centred, not optimal
    res = kdsim.simulate(p, theta, [1.0], 0.3, 500, seeds=4, batch_size=5, estimator="kd", record_every=100)
    final = res.dist2_teacher[0, :, -1]
    assert not res.diverged.any()
    assert np.all(final < 1e-20)
    assert np.ptp(final) < 1e-20                                 # no spread across seeds
    C = p.canonical(res.x_final[0])
    assert np.abs(C - C[0]).max() < 1e-11
    assert np.all(res.dist2_opt[0, :, -1] > 1e-3)                # θ ≠ x*: it went to θ, not to x*
