"""docs/theory.md §5: exact least-squares moments, stationary error, optimal weight and stability.

The recursion is checked three ways: against brute-force expectation over all index
sequences (to 1e-12), against Monte Carlo averages of the reference engine (within z
standard errors, z from a stated false-failure probability with Bonferroni), and its
stationary solve against the long-run recursion and the closed form λ²D² + (1−λ)²MSE_SGD.
"""
import itertools

import numpy as np
import pytest
import scipy.linalg
from scipy.stats import norm

import kdsim
import kdsim.theory as th
from kdsim.theory import exact_ls


def make_ls(n, d, l2=0.0, seed=0, noise=0.7):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d))
    b = A @ rng.standard_normal(d) + noise * rng.standard_normal(n)
    return kdsim.LeastSquares(A, b, l2=l2)


def teacher(p, dist, seed=1):
    u = np.random.default_rng(seed).standard_normal(p.dim)
    return p.solution() + dist * u / np.linalg.norm(u)


def step_direction(p, x, theta, lam, idx, estimator):
    """One estimator direction written from docs/theory.md §2 with the public gradients."""
    g = p.grad(x, idx)
    if estimator == "kd":
        g = g - lam * p.grad(theta, idx)
    elif estimator == "kd_loss":
        g = g - lam * p.data_grad(theta, idx)
    elif estimator == "corrected":
        g = g - lam * (p.grad(theta, idx) - p.grad(theta))
    return g


# -------------------------------------------------------- brute force, exactly
@pytest.mark.parametrize("estimator,l2", [("sgd", 0.0), ("kd", 0.0), ("kd", 0.2), ("kd_loss", 0.2),
                                          ("corrected", 0.0), ("corrected", 0.2)])
@pytest.mark.parametrize("b", [1, 2])
def test_exact_moments_equal_expectation_over_all_index_sequences(estimator, l2, b):
    p = make_ls(3, 2, l2=l2, seed=3)
    theta = teacher(p, 0.8)
    x0 = np.array([1.5, -0.5])
    lam, step, steps = 0.6, 0.15, 4
    subsets = list(itertools.combinations(range(p.n), b))
    xs = p.solution()
    acc = np.zeros((steps + 1, 3))
    mean = np.zeros((steps + 1, p.dim))
    seqs = list(itertools.product(subsets, repeat=steps))
    for seq in seqs:
        x = x0.copy()
        for t in range(steps + 1):
            acc[t] += [np.sum((x - xs) ** 2), p.loss(x) - p.f_star, np.sum((x - theta) ** 2)]
            mean[t] += x
            if t < steps:
                x = x - step * step_direction(p, x, theta, lam, np.array(seq[t]), estimator)
    acc /= len(seqs)
    mean /= len(seqs)
    em = th.exact_moments(p, theta, lam, step, steps, batch_size=b, estimator=estimator, x0=x0)
    np.testing.assert_array_equal(em.steps, np.arange(steps + 1))
    for k, name in enumerate(("dist2_opt", "subopt", "dist2_teacher")):
        np.testing.assert_allclose(em.record(name), acc[:, k], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(em.mean_iterate, mean, rtol=1e-12, atol=1e-13)


# --------------------------------------------------------------- Monte Carlo
#: family-wise false-failure probability of each Monte Carlo test (Bonferroni over every comparison)
FALSE_FAILURE = 1e-3


@pytest.mark.parametrize("estimator,l2", [("sgd", 0.0), ("kd", 0.0), ("corrected", 0.0), ("kd_loss", 0.3)])
@pytest.mark.parametrize("b", [1, 4])
def test_exact_moments_match_reference_engine_monte_carlo(estimator, l2, b):
    p = make_ls(20, 3, l2=l2, seed=7)
    theta = teacher(p, 0.6)
    x0 = np.array([1.0, -1.0, 0.5])
    lams = [0.0, 0.5, 0.9] if estimator != "sgd" else [0.0]
    step, steps, seeds, every = 0.05, 60, 4000, 6
    res = kdsim.simulate(p, theta, lams, step, steps, seeds, batch_size=b, estimator=estimator,
                         record_every=every, backend="numpy", seed=11, x0=x0)
    names = ("dist2_opt", "subopt", "dist2_teacher")
    comparisons = len(lams) * (len(res.steps) - 1) * len(names)
    z = float(norm.ppf(1 - FALSE_FAILURE / (2 * comparisons)))
    worst = 0.0
    for k, lam in enumerate(lams):
        em = th.exact_moments(p, theta, lam, step, steps, batch_size=b, estimator=estimator,
                              record_every=every, x0=x0)
        np.testing.assert_array_equal(em.steps, res.steps)
        assert em.stable
        for name in names:
            vals = res.record(name)[k]                        # (seed, record)
            mc = vals.mean(axis=0)
            se = vals.std(axis=0, ddof=1) / np.sqrt(seeds)
            exact = em.record(name)
            assert mc[0] == pytest.approx(exact[0], rel=1e-12)   # t = 0 is deterministic
            dev = np.abs(mc[1:] - exact[1:]) / se[1:]
            worst = max(worst, float(dev.max()))
            assert np.all(dev <= z), f"{name} λ={lam}: max |MC − exact|/SE = {dev.max():.2f} > z = {z:.2f}"
    print(f"[{estimator}, b={b}] max |MC − exact|/SE = {worst:.2f} (z = {z:.2f})")


# ---------------------------------------------------------------- stationary
@pytest.mark.parametrize("l2", [0.0, 0.3])
@pytest.mark.parametrize("b", [1, 3])
def test_stationary_error_formula_matches_the_kd_recursion_solve(l2, b):
    p = make_ls(15, 4, l2=l2, seed=2)
    theta = teacher(p, 0.7)
    step = 0.5 * th.largest_stable_step(p, b)
    mse = th.mse_sgd(p, step, b)
    D2 = float(np.sum((theta - p.solution()) ** 2))
    for lam in (0.0, 0.25, 0.5, 1.0, 1.3):
        em = th.exact_moments(p, theta, lam, step, 1, batch_size=b, estimator="kd")
        want = lam ** 2 * D2 + (1 - lam) ** 2 * mse
        assert th.stationary_error(p, theta, lam, step, b) == pytest.approx(want, rel=1e-14)
        assert em.stationary_dist2_opt == pytest.approx(want, rel=1e-10)
        # the mean converges to x_λ = (1 − λ)x* + λθ
        np.testing.assert_allclose(em.stationary_mean, (1 - lam) * p.solution() + lam * theta, rtol=1e-10, atol=1e-12)


def test_long_recursion_converges_to_the_stationary_solve():
    p = make_ls(12, 3, seed=4)
    theta = teacher(p, 0.5)
    step = 0.6 * th.largest_stable_step(p, 2)
    for est in ("sgd", "kd", "corrected"):
        em = th.exact_moments(p, theta, 0.4, step, 4000, batch_size=2, estimator=est, record_every=4000)
        for name in ("dist2_opt", "subopt", "dist2_teacher"):
            assert em.record(name)[-1] == pytest.approx(getattr(em, f"stationary_{name}"), rel=1e-9)
        np.testing.assert_allclose(em.mean_iterate[-1], em.stationary_mean, rtol=1e-9, atol=1e-12)
    # corrected KD is unbiased: its mean is x*, and there is no λ²D² floor
    emc = th.exact_moments(p, theta, 1.0, step, 1, batch_size=2, estimator="corrected")
    np.testing.assert_allclose(emc.stationary_mean, p.solution(), atol=1e-12)
    assert emc.stationary_dist2_opt < th.stationary_error(p, theta, 1.0, step, 2)


def test_iterative_paths_agree_with_the_dense_ones(monkeypatch):
    p = make_ls(30, 8, l2=0.05, seed=5)
    theta = teacher(p, 0.4)
    step = 0.02
    dense = th.exact_moments(p, theta, 0.3, step, 1, batch_size=3, estimator="corrected")
    monkeypatch.setattr(exact_ls, "DENSE_MAX_DIM", 0)
    monkeypatch.setattr(exact_ls, "DENSE_EIG_MAX_DIM", 0)
    it = th.exact_moments(p, theta, 0.3, step, 1, batch_size=3, estimator="corrected")
    assert it.spectral_radius == pytest.approx(dense.spectral_radius, rel=1e-12)
    for name in ("stationary_dist2_opt", "stationary_subopt", "stationary_dist2_teacher"):
        assert getattr(it, name) == pytest.approx(getattr(dense, name), rel=1e-11)


# -------------------------------------------------------------- optimal weight
def test_lambda_opt_is_the_argmin_of_the_exact_stationary_error():
    p = make_ls(15, 3, seed=8)
    theta = teacher(p, 0.3)
    step, b = 0.05, 1

    def err(lam):
        return th.exact_moments(p, theta, lam, step, 1, batch_size=b, estimator="kd").stationary_dist2_opt

    coarse = np.linspace(0, 1, 101)
    k = int(np.argmin([err(l) for l in coarse]))
    fine = np.linspace(coarse[max(k - 1, 0)], coarse[min(k + 1, 100)], 201)
    vals = np.array([err(l) for l in fine])
    best = fine[np.argmin(vals)]
    lo = th.lambda_opt(p, theta, step, b)
    assert abs(best - lo) <= fine[1] - fine[0]
    mse, D2 = th.mse_sgd(p, step, b), float(np.sum((theta - p.solution()) ** 2))
    assert vals.min() == pytest.approx(mse * D2 / (mse + D2), rel=1e-8)
    assert vals.min() < min(err(0.0), err(1.0))                # beats both SGD and λ = 1


def test_lambda_opt_is_proportional_to_the_step_for_small_steps():
    p = make_ls(15, 3, seed=8)
    theta = teacher(p, 0.3)
    D2 = float(np.sum((theta - p.solution()) ** 2))
    # small-γ limit: MSE_SGD ≈ γ tr X with HX + XH = Q, Q = E[g_B g_Bᵀ]
    H = p.hessian(p.solution())
    G = p.sample_grads(p.solution())
    Q = G.T @ G / p.n                                         # b = 1
    X = scipy.linalg.solve_continuous_lyapunov(H, Q)
    limit = np.trace(X) / D2
    ratios = [th.lambda_opt(p, theta, g, 1) / g for g in (1e-2, 1e-3, 1e-4, 1e-5)]
    errs = [abs(r / limit - 1) for r in ratios]
    assert errs[-1] < 1e-4 and errs == sorted(errs, reverse=True)


def test_lambda_opt_is_one_for_the_perfect_teacher():
    p = make_ls(15, 3, seed=8)
    assert th.lambda_opt(p, p.solution(), 0.05, 2) == 1.0


# ------------------------------------------------------------------ stability
def test_largest_stable_step_brackets_the_spectral_radius():
    p = make_ls(10, 3, seed=9)
    H = p.hessian(p.solution())
    L = np.linalg.eigvalsh(H)[-1]
    assert th.largest_stable_step(p, p.n) == pytest.approx(2 / L, rel=1e-9)   # full batch: deterministic
    prev = 2 / L
    for b in (5, 2, 1):
        g = th.largest_stable_step(p, b)
        assert g < prev                                          # smaller batches, smaller stable steps
        assert th.spectral_radius(p, g * (1 - 1e-6), b) < 1 < th.spectral_radius(p, g * (1 + 1e-6), b)
        prev = g


def test_unstable_step_is_reported_and_stationary_values_are_nan():
    p = make_ls(10, 3, seed=9)
    theta = teacher(p, 0.5)
    g = 1.5 * th.largest_stable_step(p, 1)
    em = th.exact_moments(p, theta, 0.5, g, 200, estimator="kd", record_every=50)
    assert not em.stable and em.spectral_radius >= 1 and em.status.startswith("unstable")
    assert np.isnan(em.stationary_dist2_opt)
    assert em.dist2_opt[-1] > 1e3 * em.dist2_opt[0]               # the exact second moment grows
    with pytest.raises(ValueError, match="unstable"):
        th.mse_sgd(p, g, 1)


def test_singular_hessian_is_reported():
    p = make_ls(3, 5, seed=1)                                    # d > n: H singular
    em = th.exact_moments(p, p.solution(), 0.5, 0.01, 5)
    assert not em.stable and "singular" in em.status
    with pytest.raises(ValueError, match="singular"):
        th.largest_stable_step(p, 1)


def test_clear_errors():
    p = make_ls(10, 3)
    with pytest.raises(ValueError, match="svrg"):
        th.exact_moments(p, p.solution(), 1.0, 0.01, 5, estimator="svrg")
    with pytest.raises(ValueError, match="estimator"):
        th.exact_moments(p, p.solution(), 1.0, 0.01, 5, estimator="adam")
    with pytest.raises(ValueError, match="step"):
        th.exact_moments(p, p.solution(), 1.0, -0.01, 5)
    from kdsim.problems import LogisticRegression
    rng = np.random.default_rng(0)
    lr = LogisticRegression(rng.standard_normal((20, 2)), rng.integers(0, 2, 20), l2=0.1)
    with pytest.raises(TypeError, match="least squares"):
        th.exact_moments(lr, lr.solution(), 0.5, 0.01, 5)


def test_kd_loss_equals_kd_without_ridge_and_differs_with_one():
    p0 = make_ls(10, 3, seed=6)
    theta = teacher(p0, 0.5)
    a = th.exact_moments(p0, theta, 0.7, 0.03, 50, estimator="kd", record_every=10)
    b = th.exact_moments(p0, theta, 0.7, 0.03, 50, estimator="kd_loss", record_every=10)
    np.testing.assert_allclose(a.dist2_opt, b.dist2_opt, rtol=1e-13)
    p1 = kdsim.LeastSquares(p0.A, p0.b, l2=0.5)
    theta1 = p1.solution()                                       # even the perfect teacher
    c = th.exact_moments(p1, theta1, 0.7, 0.03, 1, estimator="kd_loss")
    # its mean fixed point x̃ solves ∇f(x̃) = λ∇ℓ(θ), which is −λαθ ≠ 0 at θ = x* (docs/theory.md §2)
    xt = c.stationary_mean
    np.testing.assert_allclose(p1.grad(xt), 0.7 * p1.data_grad(theta1), atol=1e-12)
    assert c.stationary_dist2_opt > th.exact_moments(p1, theta1, 0.7, 0.03, 1, estimator="kd").stationary_dist2_opt


@pytest.mark.parametrize("estimator,l2,b", [("kd", 0.0, 1), ("kd_loss", 0.3, 2), ("corrected", 0.1, 3)])
def test_moment_map_matrix_is_its_step_and_its_fixed_point_is_the_stationary_moments(estimator, l2, b):
    p = make_ls(7, 3, l2=l2)
    mm = th.MomentMap(p, teacher(p, 0.8), 0.6, 0.05, b, estimator)
    r = np.random.default_rng(2)
    m, B = r.standard_normal(3), r.standard_normal((3, 3))
    M = B @ B.T
    s = np.concatenate([M.ravel(), m, [1.0]])
    m1, M1 = mm.moments(mm.matrix() @ s)
    m2, M2 = mm.apply(m, M)
    np.testing.assert_allclose(m1, m2, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(M1, 0.5 * (M2 + M2.T), rtol=1e-12, atol=1e-14)
    m_inf, M_inf = mm.stationary()
    m3, M3 = mm.apply(m_inf, M_inf)
    np.testing.assert_allclose(m3, m_inf, atol=1e-12)
    np.testing.assert_allclose(M3, M_inf, rtol=1e-10, atol=1e-13)
    ref = exact_ls.exact_moments(p, teacher(p, 0.8), 0.6, 0.05, 3, batch_size=b, estimator=estimator)
    assert mm.quantities(m_inf, M_inf)[0] == pytest.approx(ref.stationary_dist2_opt, rel=1e-12)
