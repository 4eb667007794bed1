"""docs/theory.md §1 and §3: the ω(b) identity, exact minibatch expectations and the constants.

Every sampling expectation is compared with brute-force enumeration of all b-subsets
(itertools.combinations) on tiny problems, for least squares, softmax and a deep linear net.
"""
import itertools

import numpy as np
import pytest

import kdsim
import kdsim.theory as th
from kdsim.problems import SoftmaxRegression
from kdsim.problems.deep_linear import DeepLinear
from kdsim.theory.constants import Constants
from kdsim.theory.sampling import batch_inner, batch_outer, inclusion_probabilities, omega, pair_weights


def enumerate_mean(fn, n, b):
    """Exact E over uniform b-subsets of fn(B), by enumeration."""
    combos = list(itertools.combinations(range(n), b))
    return sum(fn(np.array(B)) for B in combos) / len(combos)


def tiny_ls(n=7, d=3, l2=0.0, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d))
    return kdsim.LeastSquares(A, A @ rng.standard_normal(d) + 0.7 * rng.standard_normal(n), l2=l2)


def tiny_softmax(l2=0.1, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((8, 2))
    return SoftmaxRegression(A, np.array([0, 1, 2, 0, 1, 2, 1, 0]), 3, bias=True, l2=l2)


def tiny_deep_linear(seed=0):
    rng = np.random.default_rng(seed)
    return DeepLinear(rng.standard_normal((8, 3)), rng.standard_normal((8, 2)), hidden=(2,))


def teacher_for(p, scale=0.4, seed=1):
    rng = np.random.default_rng(seed)
    return p.solution() + scale * rng.standard_normal(p.dim)


# --------------------------------------------------------------- ω(b) identity
@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_omega_and_inclusion_probabilities_by_enumeration(n):
    for b in range(1, n + 1):
        combos = list(itertools.combinations(range(n), b))
        p1 = sum(0 in B for B in combos) / len(combos)
        p2 = sum((0 in B) and (1 in B) for B in combos) / len(combos) if n > 1 else 0.0
        assert inclusion_probabilities(n, b) == pytest.approx((p1, p2), abs=1e-15)
    assert omega(n, 1) == (1.0 if n > 1 else 0.0)
    assert omega(n, n) == 0.0


@pytest.mark.parametrize("b", [1, 2, 3])
def test_batch_moments_match_enumeration_for_arbitrary_vectors(b):
    rng = np.random.default_rng(b)
    n = 7
    U, W = rng.standard_normal((n, 4)), rng.standard_normal((n, 4)) + 1.3
    want_inner = enumerate_mean(lambda B: U[B].mean(0) @ W[B].mean(0), n, b)
    want_outer = enumerate_mean(lambda B: np.outer(U[B].mean(0), W[B].mean(0)), n, b)
    assert batch_inner(U, W, b) == pytest.approx(want_inner, rel=1e-13)
    np.testing.assert_allclose(batch_outer(U, W, b), want_outer, rtol=1e-12, atol=1e-14)
    # the pair weights give the same matrix
    wd, wa = pair_weights(n, b)
    np.testing.assert_allclose(wd * U.T @ W + wa * np.outer(U.sum(0), W.sum(0)), want_outer, rtol=1e-12, atol=1e-14)


PROBLEMS = {
    "least_squares": lambda: tiny_ls(),
    "least_squares_ridge": lambda: tiny_ls(l2=0.3),
    "softmax": lambda: tiny_softmax(),
    "deep_linear": lambda: tiny_deep_linear(),
}


@pytest.mark.parametrize("name", sorted(PROBLEMS))
@pytest.mark.parametrize("b", [1, 2, 3])
def test_constants_sampling_expectations_equal_enumeration(name, b):
    p = PROBLEMS[name]()
    theta = teacher_for(p)
    c = th.constants(p, theta, b)
    xs = p.solution()
    n = p.n

    def gB(x, B):
        return p.grad(x, B)

    sig2 = enumerate_mean(lambda B: np.sum(gB(xs, B) ** 2), n, b)
    cross = enumerate_mean(lambda B: gB(xs, B) @ gB(theta, B), n, b)
    teach = enumerate_mean(lambda B: np.sum(gB(theta, B) ** 2), n, b)
    scale = max(sig2, teach)
    assert c.sigma2_star == pytest.approx(sig2, rel=1e-12, abs=1e-14 * scale)
    assert c.cross_star_teacher == pytest.approx(cross, rel=1e-12, abs=1e-14 * scale)
    assert c.teacher_second_moment == pytest.approx(teach, rel=1e-12, abs=1e-14 * scale)
    for lam in (-0.5, 0.0, 0.3, 1.0, 1.7):
        want = enumerate_mean(lambda B: np.sum((gB(xs, B) - lam * gB(theta, B)) ** 2), n, b)
        assert c.sigma2_kd(lam) == pytest.approx(want, rel=1e-12, abs=1e-14 * scale)
    # the quoted σ²_* = ω(b) (1/n) Σ‖∇f_i(x*)‖² (∇f(x*) = 0 up to the solver's accuracy)
    G = p.sample_grads(xs)
    assert c.sigma2_star == pytest.approx(omega(n, b) * np.mean(np.sum(G * G, 1)), rel=1e-9, abs=1e-18)
    assert c.omega == omega(n, b)
    assert c.teacher_bias == pytest.approx(np.linalg.norm(p.grad(theta)), rel=1e-12)
    assert c.rho == pytest.approx(cross / np.sqrt(sig2 * teach), rel=1e-11)
    assert c.provenance["sigma2_kd"] == "exact"


def test_deep_linear_end_to_end_teacher_uses_pullback_at_x_star():
    p = tiny_deep_linear()
    Theta = np.random.default_rng(3).standard_normal((p.d_out, p.d_in))
    c = th.constants(p, Theta, 2)
    xs = p.solution()
    rows = np.array([p.pullback(xs, np.outer(p.A[i] @ Theta.T - p.Y[i], p.A[i])) for i in range(p.n)])
    want = enumerate_mean(lambda B: np.sum(rows[B].mean(0) ** 2), p.n, 2)
    assert c.teacher_second_moment == pytest.approx(want, rel=1e-12)
    assert any("pulled back" in note for note in c.notes)
    assert c.teacher_distance == pytest.approx(np.linalg.norm(Theta - p.solution_map()), rel=1e-12)


# --------------------------------------------------------------- the constants
@pytest.mark.parametrize("l2", [0.0, 0.25])
@pytest.mark.parametrize("b", [1, 3, 7])
def test_least_squares_constants_are_exact(l2, b):
    p = tiny_ls(l2=l2)
    c = th.constants(p, teacher_for(p), b)
    w = np.linalg.eigvalsh(p.A.T @ p.A / p.n + l2 * np.eye(p.dim))
    assert c.mu == pytest.approx(w[0], rel=1e-12) and c.L == pytest.approx(w[-1], rel=1e-12)
    np.testing.assert_allclose(c.L_i, np.sum(p.A ** 2, 1) + l2, rtol=1e-14)
    n = p.n
    want = n * (b - 1) / (b * (n - 1)) * c.L + (n - b) / (b * (n - 1)) * c.L_max
    assert c.expected_smoothness == pytest.approx(want, rel=1e-14)
    assert c.L <= c.expected_smoothness * (1 + 1e-14) <= c.L_max * (1 + 1e-13)
    assert all(c.provenance[k] == "exact" for k in ("mu", "L", "L_max", "expected_smoothness"))
    assert c.teacher_distance == pytest.approx(np.linalg.norm(c.theta - p.solution()), rel=1e-14)
    assert isinstance(c, Constants) and c.batch_size == b


def test_expected_smoothness_is_the_sharp_second_moment_constant_for_least_squares():
    # E‖∇f_B(x) − ∇f_B(x*)‖² ≤ 2𝓛(b)(f(x) − f*) for every x: check on random x by enumeration.
    p = tiny_ls(n=6)
    xs = p.solution()
    rng = np.random.default_rng(5)
    for b in (1, 2, 3):
        c = th.constants(p, xs, b)
        for _ in range(20):
            x = xs + rng.standard_normal(p.dim)
            lhs = enumerate_mean(lambda B: np.sum((p.grad(x, B) - p.grad(xs, B)) ** 2), p.n, b)
            assert lhs <= 2 * c.expected_smoothness * (p.loss(x) - p.f_star) * (1 + 1e-12)


def test_softmax_local_constants_exclude_invariant_directions_without_ridge():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((60, 3))
    y = rng.integers(0, 3, 60)
    p0 = SoftmaxRegression(A, y, 3, bias=True)
    c0 = th.constants(p0, teacher_for(p0), 4)
    assert c0.trivial_directions == p0.n_features          # one per feature: X → X + 1vᵀ
    w = np.linalg.eigvalsh(p0.hessian(p0.solution()))
    assert abs(w[p0.n_features - 1]) < 1e-12 and c0.mu == pytest.approx(w[p0.n_features], rel=1e-9)
    assert c0.L == pytest.approx(w[-1], rel=1e-12)
    assert c0.provenance["mu"] == "local at x*" and c0.provenance["L_i_bound"] == "bound"
    np.testing.assert_allclose(c0.L_i_bound, 0.5 * np.sum(p0.A ** 2, 1), rtol=1e-14)
    assert np.all(c0.L_i <= c0.L_i_bound * (1 + 1e-12))      # the local value sits below the bound
    # with a ridge: the full Hessian (its smallest eigenvalue is α, along the flat directions)
    p1 = SoftmaxRegression(A, y, 3, bias=True, l2=0.1)
    c1 = th.constants(p1, teacher_for(p1), 4)
    assert c1.trivial_directions == 0
    assert c1.mu == pytest.approx(np.linalg.eigvalsh(p1.hessian(p1.solution()))[0], rel=1e-12)
    assert c1.mu == pytest.approx(0.1, rel=1e-9)


def test_path_estimators_on_least_squares_equal_the_rayleigh_quotients():
    p = tiny_ls(n=20, d=4, seed=2)
    H = p.hessian(p.solution())
    w, U = np.linalg.eigh(H)
    its = p.solution() + 0.5 * U.T                        # x* + eigenvectors
    np.testing.assert_allclose(th.mu_path(p, its, per_iterate=True), w, rtol=1e-9)
    np.testing.assert_allclose(th.pl_path(p, its, per_iterate=True), w, rtol=1e-9)
    assert th.mu_path(p, its) == pytest.approx(w[0], rel=1e-9)
    rng = np.random.default_rng(0)
    rand = p.solution() + rng.standard_normal((50, p.dim))
    assert th.mu_path(p, rand) >= w[0] * (1 - 1e-9) and th.pl_path(p, rand) >= w[0] * (1 - 1e-9)
    with pytest.raises(ValueError, match="coincides with x"):
        th.mu_path(p, p.solution()[None, :])


def test_softmax_mu_path_near_the_optimum_approaches_the_local_value():
    rng = np.random.default_rng(0)
    p = SoftmaxRegression(rng.standard_normal((60, 3)), rng.integers(0, 3, 60), 3, bias=True)
    c = th.constants(p, p.solution(), 1)
    H = p.hessian(p.solution())
    w, U = np.linalg.eigh(H)
    v = U[:, p.n_features]                                  # smallest non-trivial direction
    vals = th.mu_path(p, p.solution() + np.outer([1e-2, 1e-3, 1e-4], v), per_iterate=True)
    assert vals[-1] == pytest.approx(c.mu, rel=1e-3)
    # moving along an invariant direction changes nothing
    flat = np.kron(np.ones(3), np.array([1.0, 0.0, 0.0, 0.0]))
    both = th.mu_path(p, p.solution() + 1e-3 * v + 0.7 * flat, per_iterate=True)
    assert both[0] == pytest.approx(th.mu_path(p, p.solution() + 1e-3 * v, per_iterate=True)[0], rel=1e-6)


def test_sigma2_kd_is_the_quadratic_and_rejects_non_finite():
    p = tiny_ls()
    c = th.constants(p, teacher_for(p), 2)
    lams = np.linspace(-1, 2, 7)
    c0, c1, c2 = c.kd_noise_coefficients
    np.testing.assert_allclose(c.sigma2_kd(lams), c0 - 2 * lams * c1 + lams ** 2 * c2, rtol=1e-14)
    assert c.sigma2_kd(0.0) == c.sigma2_star
    with pytest.raises(ValueError):
        c.sigma2_kd(np.nan)
    with pytest.raises(ValueError, match="batch_size"):
        th.constants(p, teacher_for(p), p.n + 1)
