"""Deep linear networks: chain-rule gradients, exact HVP, function-space KD (docs/theory.md §2),
teacher terms for the engines, end-to-end distances, solution, short runs, bad input.

Tolerances. Central differences with step h = 1e-5 have truncation error h²/6·|f'''| ≈ 1e-10
(third derivatives are O(10) on these instances) and rounding error ≈ 1e-16·|f|/h ≈ 1e-11, so
an absolute 1e-7 (relative 1e-6) leaves a margin of 100×. Closed forms compared with
independent closed forms (Kronecker-product Jacobians, per-sample loops) differ only by
rounding: 1e-12 relative.
"""
import numpy as np
import pytest

import kdsim
from kdsim.problems.deep_linear import DeepLinear, DeepLinearTeacherTerms

H_FD = 1e-5

# (loss, hidden) with d_in = 4, d_out = 3: depths 1, 2, 3; wider, narrower (bottleneck) widths
CONFIGS = [
    ("squared", ()),
    ("squared", (5,)),
    ("squared", (2,)),
    ("squared", (5, 3)),
    ("softmax", ()),
    ("softmax", (4,)),
    ("softmax", (5, 2, 4)),
]
CONFIG_IDS = [f"{loss}-{'x'.join(map(str, h)) or 'linear'}" for loss, h in CONFIGS]


def make(loss, hidden, l2=0.0, n=24, d_in=4, d_out=3, seed=0, **kw):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d_in))
    if loss == "squared":
        Y = A @ rng.standard_normal((d_in, d_out)) + 0.3 * rng.standard_normal((n, d_out))
    else:
        Y = rng.permutation(np.arange(n) % d_out)      # every class present, not separable
    return DeepLinear(A, Y, hidden=hidden, loss=loss, l2=l2, **kw)


def fd_grad(fun, x, h=H_FD):
    g = np.empty_like(x)
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = h
        g[j] = (fun(x + e) - fun(x - e)) / (2 * h)
    return g


# ---------------------------------------------------------- independent constructions
def layers(p, x):
    """The layer matrices, unpacked independently of the class (row-major, W_1 first)."""
    out, o = [], 0
    for r, c in p.shapes:
        out.append(x[o:o + r * c].reshape(r, c))
        o += r * c
    assert o == p.dim
    return out


def e2e(p, x):
    M = np.eye(p.d_in)
    for W in layers(p, x):
        M = W @ M
    return M


def jacobian(p, x):
    """J(x) of x ↦ vec(W(x)) (row-major vec), built from vec(P V Q) = (P ⊗ Qᵀ) vec(V)."""
    Ws = layers(p, x)
    blocks = []
    for k in range(len(Ws)):
        P = np.eye(p.d_out)
        for W in reversed(Ws[k + 1:]):
            P = P @ W
        Q = np.eye(p.d_in)
        for W in Ws[:k]:
            Q = W @ Q
        blocks.append(np.kron(P, Q.T))
    return np.concatenate(blocks, axis=1)


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def map_grad(p, M, idx=None):
    """∇g_B(M) by a per-sample loop."""
    idx = np.arange(p.n) if idx is None else idx
    G = np.zeros((p.d_out, p.d_in))
    for i in idx:
        a = p.A[i]
        if p.loss_type == "squared":
            r = M @ a - p.Y[i]
        else:
            r = softmax(M @ a) - np.eye(p.d_out)[p.Y[i]]
        G += np.outer(r, a)
    return G / len(idx)


def mixed_map_grad(p, M, Tm, lam, idx=None, tau=1.0):
    """End-to-end gradient of the mean KD loss, from its definition, per sample."""
    idx = np.arange(p.n) if idx is None else idx
    G = np.zeros((p.d_out, p.d_in))
    for i in idx:
        a = p.A[i]
        z, zt = M @ a, Tm @ a
        if p.loss_type == "squared":
            r = (1 - lam) * (z - p.Y[i]) + lam * (z - zt)
        else:
            e = np.eye(p.d_out)[p.Y[i]]
            r = (1 - lam) * (softmax(z) - e) + lam * tau * (softmax(z / tau) - softmax(zt / tau))
        G += np.outer(r, a)
    return G / len(idx)


def random_point(p, rng, scale=0.7):
    return scale * rng.standard_normal(p.dim)


# ------------------------------------------------------------------ derivatives
@pytest.mark.parametrize("loss,hidden", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("l2", [0.0, 0.2])
def test_grad_matches_finite_differences(loss, hidden, l2):
    p = make(loss, hidden, l2)
    rng = np.random.default_rng(1)
    x = random_point(p, rng)
    for idx in (None, np.array([0, 3, 7, 11])):
        g = p.grad(x, idx)
        np.testing.assert_allclose(g, fd_grad(lambda z: p.loss(z, idx), x), rtol=1e-6, atol=1e-7)
    rows = p.sample_grads(x, np.array([2, 5]))
    np.testing.assert_allclose(rows.mean(axis=0), p.grad(x, np.array([2, 5])), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(p.data_grad(x), p.grad(x) - l2 * x, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("loss,hidden", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("teacher", ["vector", "map"])
def test_kd_grad_matches_finite_differences(loss, hidden, teacher):
    p = make(loss, hidden, l2=0.1)
    rng = np.random.default_rng(2)
    x = random_point(p, rng)
    theta = random_point(p, rng) if teacher == "vector" else rng.standard_normal((p.d_out, p.d_in))
    taus = (1.0, 2.5) if loss == "softmax" else (1.0,)
    for tau in taus:
        for idx in (None, np.array([1, 4, 9])):
            kd = p.kd_grad(x, theta, 0.6, idx, temperature=tau)
            fd = fd_grad(lambda z: p.kd_loss(z, theta, 0.6, idx, temperature=tau), x)
            np.testing.assert_allclose(kd, fd, rtol=1e-6, atol=1e-7)
    # λ = 0: the KD loss is the loss
    assert p.kd_loss(x, theta, 0.0) == pytest.approx(p.loss(x), rel=1e-14)
    np.testing.assert_allclose(p.kd_grad(x, theta, 0.0), p.grad(x), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("loss,hidden", CONFIGS, ids=CONFIG_IDS)
def test_hvp_and_hessian(loss, hidden):
    p = make(loss, hidden, l2=0.05)
    rng = np.random.default_rng(3)
    x = random_point(p, rng)
    idx = np.array([0, 2, 6, 13])
    for i in (None, idx):
        for _ in range(3):
            v = rng.standard_normal(p.dim)
            fd = (p.grad(x + H_FD * v, i) - p.grad(x - H_FD * v, i)) / (2 * H_FD)
            np.testing.assert_allclose(p.hvp(x, v, i), fd, rtol=1e-6, atol=1e-7)
        H = p.hessian(x, i)
        # the raw product-rule HVP matrix is symmetric only if it is right
        H_raw = np.array([p.hvp(x, e, i) for e in np.eye(p.dim)]).T
        assert np.max(np.abs(H_raw - H_raw.T)) <= 1e-12 * np.max(np.abs(H_raw))
        np.testing.assert_allclose(H, 0.5 * (H_raw + H_raw.T), rtol=1e-13, atol=1e-14 * np.abs(H).max())
        v = rng.standard_normal(p.dim)
        np.testing.assert_allclose(H @ v, p.hvp(x, v, i), rtol=1e-12, atol=1e-12 * np.abs(H).max())
    H_fd = np.array([fd_grad(lambda z: p.grad(z)[k], x) for k in range(p.dim)])
    np.testing.assert_allclose(p.hessian(x), H_fd, rtol=1e-6, atol=1e-7)
    # the full-data Hessian is the mean of the per-sample ones
    per = sum(p.hessian(x, np.array([j])) for j in range(p.n)) / p.n
    np.testing.assert_allclose(per, p.hessian(x), rtol=1e-12, atol=1e-13)


# ----------------------------------------------------------- function-space KD (§2)
@pytest.mark.parametrize("loss,hidden", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("teacher", ["vector", "map"])
def test_kd_grad_is_the_pulled_back_function_space_gradient(loss, hidden, teacher):
    p = make(loss, hidden)
    rng = np.random.default_rng(4)
    x = random_point(p, rng)
    theta = random_point(p, rng) if teacher == "vector" else rng.standard_normal((p.d_out, p.d_in))
    Tm = e2e(p, theta) if teacher == "vector" else theta
    J = jacobian(p, x)
    taus = (1.0, 2.0) if loss == "softmax" else (1.0,)
    for tau in taus:
        for lam in (0.3, 1.0):
            for idx in (None, np.array([3, 8, 17, 20])):
                want = J.T @ mixed_map_grad(p, e2e(p, x), Tm, lam, idx, tau).ravel()
                got = p.kd_grad(x, theta, lam, idx, temperature=tau)
                assert np.linalg.norm(got - want) <= 1e-12 * max(1.0, np.linalg.norm(want))
    # at τ = 1 the bracket is ∇g_B(W(x)) − λ∇g_B(Θ̄)  (docs/theory.md §2, exact)
    want = J.T @ (map_grad(p, e2e(p, x)) - 0.4 * map_grad(p, Tm)).ravel()
    assert np.linalg.norm(p.kd_grad(x, theta, 0.4) - want) <= 1e-12 * np.linalg.norm(want)
    assert np.linalg.norm(p.grad(x) - J.T @ map_grad(p, e2e(p, x)).ravel()) <= 1e-12 * np.linalg.norm(p.grad(x))
    if loss == "softmax":
        # and at τ ≠ 1 that identity fails (by far more than rounding)
        gap = p.kd_grad(x, theta, 0.4, temperature=2.0) - want
        assert np.linalg.norm(gap) >= 1e-3 * np.linalg.norm(want)


@pytest.mark.parametrize("loss,hidden", [("squared", (5, 3)), ("softmax", (4,)), ("squared", (2,))])
def test_parameter_space_gap(loss, hidden):
    """KD-grad − (∇f_B(x) − λ∇f_B(θ)) = λ(J(θ) − J(x))ᵀ∇g_B(Θ̄): 0 at x = θ, O(‖x − θ‖)."""
    p = make(loss, hidden)
    rng = np.random.default_rng(5)
    theta, v = random_point(p, rng), rng.standard_normal(p.dim)
    v /= np.linalg.norm(v)
    lam = 0.7
    Tm = e2e(p, theta)
    for idx in (None, np.array([0, 5, 9])):
        def gap(x):
            return p.kd_grad(x, theta, lam, idx) - (p.grad(x, idx) - lam * p.grad(theta, idx))

        assert np.linalg.norm(gap(theta)) <= 1e-12
        x = theta + 0.3 * v
        exact = lam * (jacobian(p, theta) - jacobian(p, x)).T @ map_grad(p, Tm, idx).ravel()
        assert np.linalg.norm(gap(x) - exact) <= 1e-12 * max(1.0, np.linalg.norm(exact))
        eps = np.array([1e-1, 1e-2, 1e-3, 1e-4])
        norms = np.array([np.linalg.norm(gap(theta + e * v)) for e in eps])
        slope = np.polyfit(np.log(eps), np.log(norms), 1)[0]
        assert abs(slope - 1.0) <= 0.1, slope


def test_distillation_grad_ridge_cancels_in_the_gap():
    # with a ridge, distillation_grad = kd_grad − λαθ, and then the gap to ∇f_B(x) − λ∇f_B(θ)
    # is again exactly λ(J(θ) − J(x))ᵀ∇g_B(Θ̄)
    p = make("softmax", (4,), l2=0.3)
    rng = np.random.default_rng(6)
    x, theta, idx, lam = random_point(p, rng), random_point(p, rng), np.array([2, 3, 19]), 0.8
    d = p.distillation_grad(x, theta, lam, idx)
    np.testing.assert_allclose(d, p.kd_grad(x, theta, lam, idx) - lam * 0.3 * theta, rtol=1e-13, atol=1e-15)
    exact = lam * (jacobian(p, theta) - jacobian(p, x)).T @ map_grad(p, e2e(p, theta), idx).ravel()
    gap = d - (p.grad(x, idx) - lam * p.grad(theta, idx))
    assert np.linalg.norm(gap - exact) <= 1e-12 * np.linalg.norm(exact)
    # an end-to-end teacher carries no parameter-space ridge
    Tm = rng.standard_normal((p.d_out, p.d_in))
    np.testing.assert_array_equal(p.distillation_grad(x, Tm, lam, idx), p.kd_grad(x, Tm, lam, idx))


# ------------------------------------------------------------------ engine primitives
@pytest.mark.parametrize("loss,hidden", CONFIGS, ids=CONFIG_IDS)
def test_batch_methods_agree_with_per_trajectory_methods(loss, hidden):
    p = make(loss, hidden, l2=0.2)
    rng = np.random.default_rng(7)
    X = 0.7 * rng.standard_normal((5, p.dim))
    idx = rng.integers(0, p.n, size=(5, 3))
    G, F, Lo, S = p.batch_grad(X, idx), p.batch_full_grad(X), p.batch_loss(X), p.suboptimality(X)
    for t in range(5):
        np.testing.assert_allclose(G[t], p.grad(X[t], idx[t]), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(F[t], p.grad(X[t]), rtol=1e-12, atol=1e-14)
        assert Lo[t] == pytest.approx(p.loss(X[t]), rel=1e-13)
        assert S[t] == pytest.approx(p.loss(X[t]) - p.f_star, rel=1e-9, abs=1e-12)
        assert S[t] > 0
    np.testing.assert_allclose(p.canonical(X), np.array([e2e(p, x).ravel() for x in X]), rtol=1e-13)


@pytest.mark.parametrize("loss,hidden", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("teacher", ["vector", "map"])
@pytest.mark.parametrize("term", ["f", "data"])
def test_teacher_terms_equal_the_kd_term(loss, hidden, teacher, term):
    l2, lam = 0.3, 0.6
    p = make(loss, hidden, l2=l2)
    rng = np.random.default_rng(8)
    theta = random_point(p, rng) if teacher == "vector" else rng.standard_normal((p.d_out, p.d_in))
    Tm = e2e(p, theta) if teacher == "vector" else theta
    terms = p.teacher_terms(theta, term)
    assert isinstance(terms, DeepLinearTeacherTerms)
    ridge = l2 * theta if (term == "f" and teacher == "vector") else np.zeros(p.dim)
    np.testing.assert_array_equal(terms.ridge, ridge)
    X = 0.7 * rng.standard_normal((4, p.dim))
    idx = rng.integers(0, p.n, size=(4, 5))
    TB, TF = p.batch_teacher_grad(X, terms, idx), p.full_teacher_grad(X, terms)
    assert TB.shape == TF.shape == (4, p.dim)
    G = p.batch_grad(X, idx)
    for t in range(4):
        J = jacobian(p, X[t])
        np.testing.assert_allclose(TB[t], J.T @ map_grad(p, Tm, idx[t]).ravel() + ridge, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(TF[t], J.T @ map_grad(p, Tm).ravel() + ridge, rtol=1e-12, atol=1e-13)
        # the engine's "kd"/"kd_loss" direction is the exact KD-loss gradient (up to the ridge term)
        kd = G[t] - lam * TB[t]
        if term == "data":
            np.testing.assert_allclose(kd, p.kd_grad(X[t], theta, lam, idx[t]), rtol=1e-12, atol=1e-13)
        else:
            np.testing.assert_allclose(kd, p.distillation_grad(X[t], theta, lam, idx[t]), rtol=1e-12, atol=1e-13)
        # full-data term: ∇f(x) − kd_grad(x, θ, 1) = J(x)ᵀ∇g(Θ̄)
        np.testing.assert_allclose(TF[t] - ridge, p.grad(X[t]) - p.kd_grad(X[t], theta, 1.0), rtol=1e-11, atol=1e-13)
    # corrected KD is unbiased: the b = 1 minibatch terms average to the full term
    Xr = np.repeat(X[:1], p.n, axis=0)
    np.testing.assert_allclose(p.batch_teacher_grad(Xr, terms, np.arange(p.n)[:, None]).mean(axis=0), TF[0],
                               rtol=1e-12, atol=1e-13)


def test_canonical_and_end_to_end():
    assert kdsim.DeepLinear is DeepLinear and "DeepLinear" in kdsim.__all__
    p = make("squared", (5, 3))
    rng = np.random.default_rng(9)
    x = random_point(p, rng)
    np.testing.assert_allclose(p.end_to_end(x), e2e(p, x), rtol=1e-14)
    np.testing.assert_allclose(p.canonical(x), e2e(p, x).ravel(), rtol=1e-14)
    Tm = rng.standard_normal((p.d_out, p.d_in))
    np.testing.assert_array_equal(p.end_to_end(Tm), Tm)
    np.testing.assert_array_equal(p.canonical_teacher(Tm), Tm.ravel())
    np.testing.assert_allclose(p.canonical_teacher(x), e2e(p, x).ravel(), rtol=1e-14)
    # the factorisation is not identifiable: W_2 R⁻¹, R W_1 gives another x with the same map
    Ws = layers(p, x)
    R = np.eye(5) + 0.3 * rng.standard_normal((5, 5))
    y = np.concatenate([(R @ Ws[0]).ravel(), (Ws[1] @ np.linalg.inv(R)).ravel(), Ws[2].ravel()])
    assert np.linalg.norm(y - x) > 0.1
    np.testing.assert_allclose(p.canonical(y), p.canonical(x), rtol=1e-12, atol=1e-13)
    assert p.loss(y) == pytest.approx(p.loss(x), rel=1e-12)
    # pullback is J(x)ᵀ
    G = rng.standard_normal((p.d_out, p.d_in))
    np.testing.assert_allclose(p.pullback(x, G), jacobian(p, x).T @ G.ravel(), rtol=1e-12, atol=1e-14)


def test_default_x0_is_small_balanced_and_deterministic():
    for hidden in ((), (5,), (2,), (5, 2, 4)):
        p = make("squared", hidden, init_scale=0.05, init_seed=3)
        x0 = p.default_x0()
        np.testing.assert_array_equal(x0, make("squared", hidden, init_scale=0.05, init_seed=3).default_x0())
        assert np.linalg.norm(x0 - make("squared", hidden, init_scale=0.05, init_seed=4).default_x0()) > 1e-3
        Ws = layers(p, x0)
        r = min(p.dims)
        for W in Ws:
            s = np.linalg.svd(W, compute_uv=False)
            np.testing.assert_allclose(s[:r], 0.05, rtol=1e-12)
            assert np.all(s[r:] <= 1e-14)
        for W, Wn in zip(Ws[:-1], Ws[1:]):
            np.testing.assert_allclose(Wn.T @ Wn, W @ W.T, atol=1e-15)


# ------------------------------------------------------------------ solution
@pytest.mark.parametrize("hidden", [(), (3,), (6,), (5, 4), (3, 7, 4)])
def test_squared_full_rank_solution(hidden):
    p = make("squared", hidden)
    xs = p.solution()
    assert np.linalg.norm(p.grad(xs)) <= 1e-10
    assert p.solve_info["grad_norm"] <= 1e-10
    M_ls = np.linalg.lstsq(p.A, p.Y, rcond=None)[0].T
    np.testing.assert_allclose(p.solution_map(), M_ls, rtol=1e-10, atol=1e-12)
    Ws = layers(p, xs)
    for W, Wn in zip(Ws[:-1], Ws[1:]):      # balanced factorisation
        np.testing.assert_allclose(Wn.T @ Wn, W @ W.T, atol=1e-12)
    # exact suboptimality ½ tr(E Σ_xx Eᵀ) in the end-to-end error
    rng = np.random.default_rng(10)
    for scale in (1e-9, 0.5):
        x = xs + scale * rng.standard_normal(p.dim)
        E = e2e(p, x) - M_ls
        want = 0.5 * np.mean(np.sum((p.A @ E.T) ** 2, axis=1))
        assert p.suboptimality(x)[0] == pytest.approx(want, rel=1e-8)
    assert p.suboptimality(xs)[0] <= 1e-28


def test_squared_bottleneck_solution_is_reduced_rank_regression():
    p = make("squared", (2,), d_in=5, d_out=4, n=40)
    xs = p.solution()
    assert np.linalg.norm(p.grad(xs)) <= 1e-10
    # independent Eckart–Young in the Σ_xx metric: whiten, truncate, unwhiten
    Sxx = p.A.T @ p.A / p.n
    w, U = np.linalg.eigh(Sxx)
    S, S_inv = (U * np.sqrt(w)) @ U.T, (U / np.sqrt(w)) @ U.T
    M_ls = np.linalg.lstsq(p.A, p.Y, rcond=None)[0].T
    Ul, s, Vt = np.linalg.svd(M_ls @ S)
    M_star = (Ul[:, :2] * s[:2]) @ Vt[:2] @ S_inv
    np.testing.assert_allclose(p.solution_map(), M_star, rtol=1e-9, atol=1e-11)
    assert np.linalg.matrix_rank(p.solution_map(), tol=1e-10) == 2
    # no rank-2 map does better; the exact suboptimality matches f − f*
    rng = np.random.default_rng(11)
    X = xs + 0.3 * rng.standard_normal((6, p.dim))
    S_ = p.suboptimality(X)
    assert np.all(S_ > 0)
    np.testing.assert_allclose(S_, p.batch_loss(X) - p.f_star, rtol=1e-9)


@pytest.mark.parametrize("loss,hidden,l2", [
    ("softmax", (), 0.0), ("softmax", (4,), 0.0), ("softmax", (2,), 0.0), ("softmax", (5, 3), 0.1),
    ("squared", (5,), 0.1), ("squared", (2,), 0.1), ("squared", (3, 6, 4), 0.05), ("softmax", (), 0.1),
])
def test_other_solutions_reach_a_local_minimum(loss, hidden, l2):
    p = make(loss, hidden, l2)
    xs = p.solution()
    gn = np.linalg.norm(p.grad(xs))
    assert gn <= 1e-10 and p.solve_info["grad_norm"] == pytest.approx(gn, rel=1e-12, abs=1e-16)
    w = np.linalg.eigvalsh(p.hessian(xs))
    assert w[0] >= -1e-8 * w[-1]                     # second-order condition
    rng = np.random.default_rng(12)
    for _ in range(5):
        assert p.loss(xs + 1e-3 * rng.standard_normal(p.dim)) >= p.f_star
    np.testing.assert_allclose(p.solution_map(), e2e(p, xs), rtol=1e-14)


def test_separable_softmax_without_ridge_raises():
    rng = np.random.default_rng(13)
    A = rng.standard_normal((20, 2))
    p = DeepLinear(A, (A[:, 0] > 0).astype(int), hidden=(3,), loss="softmax")
    with pytest.raises(ValueError, match="separable"):
        p.solution()
    q = DeepLinear(A, (A[:, 0] > 0).astype(int), hidden=(3,), loss="softmax", l2=0.01)
    assert np.linalg.norm(q.grad(q.solution())) <= 1e-10


def test_balanced_factorisation():
    p = make("squared", (5, 3))
    rng = np.random.default_rng(14)
    M = rng.standard_normal((3, 4))
    x = p.balanced_factorisation(M)
    np.testing.assert_allclose(e2e(p, x), M, rtol=1e-12, atol=1e-13)
    s = np.linalg.svd(M, compute_uv=False)
    for W in layers(p, x):
        np.testing.assert_allclose(np.linalg.svd(W, compute_uv=False)[:3], s ** (1 / 3), rtol=1e-12)
    with pytest.raises(ValueError, match="M must have rank"):
        make("squared", (2,)).balanced_factorisation(M)


# ------------------------------------------------------------------ short runs
@pytest.mark.parametrize("hidden", [(), (4,), (4, 3)])
def test_kd_with_optimal_end_to_end_teacher_converges_to_optimum(hidden):
    p = make("squared", hidden, n=20, d_in=3, d_out=2, init_scale=0.1)
    res = kdsim.simulate(p, p.solution_map(), 1.0, step=0.1, steps=800, seeds=1, batch_size=p.n,
                         estimator="kd", record_every=100)
    assert res.dist2_opt[0, 0, 0] > 1.0
    assert res.dist2_opt[0, 0, -1] <= 1e-20
    assert res.subopt[0, 0, -1] <= 1e-20


@pytest.mark.parametrize("hidden", [(4,), (4, 3)])
def test_kd_with_same_architecture_teacher_converges_to_teacher(hidden):
    # saddle-to-saddle dynamics: the weaker teacher mode is learnt after a plateau whose
    # length grows as the start shrinks, so this run starts at scale 0.5
    p = make("squared", hidden, n=20, d_in=3, d_out=2, init_scale=0.5)
    rng = np.random.default_rng(15)
    theta = p.balanced_factorisation(np.array([[1.0, 0.3, -0.2], [0.1, -0.8, 0.4]])) \
        + 0.1 * rng.standard_normal(p.dim)
    res = kdsim.simulate(p, theta, 1.0, step=0.1, steps=2000, seeds=1, batch_size=p.n,
                         estimator="kd", record_every=500)
    assert res.dist2_teacher[0, 0, 0] > 0.1
    assert res.dist2_teacher[0, 0, -1] <= 1e-20
    # with a ridge centred at λθ ("kd", same-architecture θ), θ itself is a fixed point
    q = make("squared", hidden, l2=0.2, n=20, d_in=3, d_out=2)
    res = kdsim.simulate(q, theta, 1.0, step=0.1, steps=200, seeds=1, batch_size=3,
                         estimator="kd", record_every=200, x0=theta)
    assert np.linalg.norm(res.x_final[0, 0] - theta) <= 1e-12
    assert np.all(res.dist2_teacher[0, 0] <= 1e-24)


# ------------------------------------------------------------------ bad input
def _A():
    return np.random.default_rng(0).standard_normal((6, 3))


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(A=np.zeros(6), Y=np.zeros((6, 2))), ValueError, "^A"),
    (dict(A=np.full((6, 3), np.nan), Y=np.zeros((6, 2))), ValueError, "^A"),
    (dict(Y=np.zeros((5, 2))), ValueError, "^Y"),
    (dict(Y=np.zeros(6)), ValueError, "^Y"),
    (dict(Y=np.full((6, 2), np.inf)), ValueError, "^Y"),
    (dict(hidden=(0,)), ValueError, "^hidden"),
    (dict(hidden=(3, -1)), ValueError, "^hidden"),
    (dict(hidden=(2.5,)), ValueError, "^hidden"),
    (dict(hidden=(True,)), ValueError, "^hidden"),
    (dict(hidden=3), TypeError, "^hidden"),
    (dict(hidden="3"), TypeError, "^hidden"),
    (dict(loss="hinge"), ValueError, "^unknown loss"),
    (dict(l2=-1.0), ValueError, "^l2"),
    (dict(init_scale=0.0), ValueError, "^init_scale"),
    (dict(init_seed=-1), ValueError, "^init_seed"),
    (dict(n_classes=3), ValueError, "^n_classes"),
    (dict(loss="softmax", Y=np.array([0, 1, 2, 0, 1, -1])), ValueError, "^Y"),
    (dict(loss="softmax", Y=np.array([0, 1, 2, 0, 1, 1.5])), ValueError, "^Y"),
    (dict(loss="softmax", Y=np.array([0, 1, 2, 0, 1, np.nan])), ValueError, "^Y"),
    (dict(loss="softmax", Y=np.zeros((6, 2), dtype=int)), ValueError, "^Y"),
    (dict(loss="softmax", Y=np.array(list("abcabc"))), TypeError, "^Y"),
    (dict(loss="softmax", Y=np.zeros(6, dtype=int)), ValueError, "^Y"),
    (dict(loss="softmax", Y=np.array([0, 1, 2, 0, 1, 2]), n_classes=2), ValueError, "^n_classes"),
])
def test_bad_constructor_arguments(kwargs, exc, match):
    args = dict(A=_A(), Y=np.zeros((6, 2)))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        DeepLinear(**args)


def test_bad_call_arguments():
    p = DeepLinear(_A(), np.ones((6, 2)), hidden=(4,))
    x = np.zeros(p.dim)
    for theta in (np.zeros(p.dim + 1), np.zeros((3, 2)), np.zeros((2, 3, 1)), np.full((2, 3), np.nan)):
        with pytest.raises(ValueError, match="^theta "):
            p.kd_grad(x, theta, 0.5)
        with pytest.raises(ValueError, match="^theta "):
            p.teacher_terms(theta)
        with pytest.raises(ValueError, match="^theta "):
            kdsim.simulate(p, theta, 0.5, 0.1, 2, 1)
    with pytest.raises(ValueError, match="^x "):
        p.grad(np.zeros(p.dim - 1))
    with pytest.raises(ValueError, match="^x "):
        p.end_to_end(np.zeros(4))
    with pytest.raises(ValueError, match="^x "):
        p.canonical(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="^v "):
        p.hvp(x, np.zeros(3))
    with pytest.raises(ValueError, match="^G "):
        p.pullback(x, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="^temperature "):
        p.kd_grad(x, np.zeros((2, 3)), 0.5, temperature=2.0)
    with pytest.raises(ValueError, match="^temperature "):
        p.kd_loss(x, np.zeros((2, 3)), 0.5, temperature=2.0)
    with pytest.raises(ValueError, match="^unknown term"):
        p.teacher_terms(x, term="both")
    with pytest.raises(ValueError, match="^lam "):
        p.distillation_grad(x, x, np.nan)
    with pytest.raises(ValueError, match="^M "):
        p.balanced_factorisation(np.zeros((3, 2)))
