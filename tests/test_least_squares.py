"""Least squares: closed-form gradients, KD identity, solution, bad input."""
import numpy as np
import pytest

import kdsim
from engine_helpers import run_arrays  # noqa: E402


def fd_grad(fun, x, h=1e-6):
    """Central finite differences (error O(h²) ≈ 1e-12 plus rounding ≈ 1e-10 relative)."""
    g = np.empty_like(x)
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = h
        g[j] = (fun(x + e) - fun(x - e)) / (2 * h)
    return g


@pytest.fixture(params=[0.0, 0.3])
def problem(request):
    rng = np.random.default_rng(2)
    A = rng.standard_normal((30, 5))
    return kdsim.LeastSquares(A, A @ rng.standard_normal(5) + rng.standard_normal(30), l2=request.param)


def test_gradients_match_finite_differences(problem):
    rng = np.random.default_rng(3)
    x, theta, idx = rng.standard_normal(5), rng.standard_normal(5), np.array([0, 4, 7])
    for i in (None, idx):
        np.testing.assert_allclose(problem.grad(x, i), fd_grad(lambda z: problem.loss(z, i), x), rtol=1e-7, atol=1e-8)
        np.testing.assert_allclose(problem.kd_grad(x, theta, 0.6, i),
                                   fd_grad(lambda z: problem.kd_loss(z, theta, 0.6, i), x), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(problem.hessian(x), np.array([fd_grad(lambda z: problem.grad(z)[k], x)
                                                             for k in range(5)]), rtol=1e-6, atol=1e-7)


def test_kd_identity(problem):
    # kd_grad = ∇f_B(x) − λ∇ℓ_B(θ) (ridge on the student only); without a ridge = ∇f_B(x) − λ∇f_B(θ).
    rng = np.random.default_rng(4)
    x, theta, idx = rng.standard_normal(5), rng.standard_normal(5), np.array([1, 2, 3, 9])
    for lam in (0.0, 0.3, 1.0, 1.7):
        kd = problem.kd_grad(x, theta, lam, idx)
        want = problem.grad(x, idx) - lam * problem.data_grad(theta, idx)
        assert np.linalg.norm(kd - want) <= 1e-12 * np.linalg.norm(kd)
        gap = problem.distillation_grad(x, theta, lam, idx) - kd
        np.testing.assert_allclose(gap, -lam * problem.l2 * theta, atol=1e-12)


def test_sample_grads_and_batch_primitives(problem):
    rng = np.random.default_rng(5)
    X, idx = rng.standard_normal((4, 5)), rng.integers(0, 30, size=(4, 3))
    rows = problem.sample_grads(X[0], idx[0])
    np.testing.assert_allclose(rows.mean(axis=0), problem.grad(X[0], idx[0]), rtol=1e-13)
    for t in range(4):
        np.testing.assert_allclose(problem.batch_grad(X, idx)[t], problem.grad(X[t], idx[t]), rtol=1e-12)
        np.testing.assert_allclose(problem.batch_full_grad(X)[t], problem.grad(X[t]), rtol=1e-12)
        assert problem.batch_loss(X)[t] == pytest.approx(problem.loss(X[t]), rel=1e-13)
        assert problem.suboptimality(X)[t] == pytest.approx(problem.loss(X[t]) - problem.f_star, rel=1e-9)


def test_solution_and_exact_suboptimality(problem):
    xs = problem.solution()
    assert np.linalg.norm(problem.grad(xs)) < 1e-12
    e = np.full(5, 1e-11)
    H = problem.hessian(xs)
    assert problem.suboptimality(xs + e)[0] == pytest.approx(0.5 * e @ H @ e, rel=1e-12)


def test_gram_factor_is_cached_triangular_and_exact(problem, monkeypatch):
    # FᵀF = AᵀA/n to rounding, F upper triangular and read-only, and the engines' set-up takes it
    # from the problem: two numba runs and a batched run factor A once (np.linalg.qr counted).
    F = problem.gram_factor()
    A = problem.A
    np.testing.assert_allclose(F.T @ F, A.T @ A / problem.n, rtol=1e-13, atol=1e-14)
    assert np.array_equal(F, np.triu(F)) and not F.flags.writeable
    assert problem.gram_factor() is F
    rng = np.random.default_rng(7)
    x, xs = rng.standard_normal(5), problem.solution()
    e = x - xs
    want = problem.loss(x) - problem.f_star
    np.testing.assert_allclose(0.5 * (np.sum((F @ e) ** 2) + problem.l2 * e @ e), want, rtol=1e-10)

    from kdsim.engines import batched, numba_cpu
    from kdsim.simulate import make_plan
    fresh = kdsim.LeastSquares(A, problem.b, l2=problem.l2)
    calls = []
    qr = np.linalg.qr
    monkeypatch.setattr(np.linalg, "qr", lambda *a, **k: calls.append(1) or qr(*a, **k))
    plan = make_plan(fresh, xs, [0.0, 1.0], 0.01, 20, 2, record_every=10)
    run_arrays(numba_cpu, fresh, plan)
    run_arrays(numba_cpu, fresh, plan)
    run_arrays(batched, fresh, plan)
    assert len(calls) == 1


def test_smoothness(problem):
    L = problem.sample_smoothness()
    np.testing.assert_allclose(L, np.sum(problem.A ** 2, axis=1) + problem.l2)
    for i in (0, 5):
        assert np.linalg.eigvalsh(problem.hessian(np.zeros(5), np.array([i])))[-1] == pytest.approx(L[i])


@pytest.mark.parametrize("args,exc,match", [
    ((np.zeros(3), np.zeros(3)), ValueError, "A"),
    ((np.zeros((3, 2)), np.zeros(4)), ValueError, "b"),
    ((np.full((3, 2), np.nan), np.zeros(3)), ValueError, "A"),
    ((np.zeros((3, 2)), np.array([0, np.inf, 1.0])), ValueError, "b"),
    ((np.zeros((3, 2)), np.zeros(3), -1.0), ValueError, "l2"),
    ((np.zeros((3, 2)), "abc"), TypeError, "b"),
])
def test_constructor_rejects_bad_input(args, exc, match):
    with pytest.raises(exc, match=match):
        kdsim.LeastSquares(*args)


def test_methods_reject_bad_input(problem):
    with pytest.raises(ValueError, match="x"):
        problem.grad(np.zeros(4))
    with pytest.raises(ValueError, match="idx"):
        problem.grad(np.zeros(5), np.array([0, 30]))
    with pytest.raises(ValueError, match="theta"):
        problem.kd_grad(np.zeros(5), np.zeros(6), 0.5)
    with pytest.raises(ValueError, match="lam"):
        problem.kd_grad(np.zeros(5), np.zeros(5), float("nan"))
    with pytest.raises(ValueError, match="temperature"):
        problem.kd_loss(np.zeros(5), np.zeros(5), 0.5, temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        problem.kd_grad(np.zeros(5), np.zeros(5), 0.5, temperature=2.0)


def test_fingerprint_stable_and_data_sensitive(problem):
    before = problem.fingerprint()
    _ = problem.f_star, problem.solution()          # cached values must not enter the key
    assert problem.fingerprint() == before
    other = kdsim.LeastSquares(problem.A, problem.b + 1e-9, l2=problem.l2)
    assert other.fingerprint() != before
