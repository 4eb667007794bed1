"""docs/theory.md §6: the optimal KD weights and the partial variance reduction factor."""
import numpy as np
import pytest

import kdsim
import kdsim.theory as th
from kdsim.problems import SoftmaxRegression


def make_ls(n=30, d=4, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d))
    b = A @ rng.standard_normal(d) + 0.7 * rng.standard_normal(n)
    return kdsim.LeastSquares(scale * A, scale * b)


def softmax_problem():
    rng = np.random.default_rng(0)
    return SoftmaxRegression(rng.standard_normal((40, 3)), rng.integers(0, 3, 40), 3, bias=True, l2=0.05)


def teacher_at(p, dist, seed=1):
    u = np.random.default_rng(seed).standard_normal(p.dim)
    return p.solution() + dist * u / np.linalg.norm(u)


@pytest.mark.parametrize("make", [make_ls, softmax_problem])
@pytest.mark.parametrize("b", [1, 3])
def test_noise_at_lambda_hat_is_one_minus_rho_squared(make, b):
    p = make()
    for dist in (0.05, 0.5, 2.0):
        c = th.constants(p, teacher_at(p, dist), b)
        lh = th.lambda_hat(c)
        assert c.sigma2_kd(lh) == pytest.approx((1 - c.rho ** 2) * c.sigma2_star, rel=1e-12)
        assert 0 < 1 - c.rho ** 2 < 1                                   # partial reduction
        grid = np.linspace(lh - 1, lh + 1, 2001)
        assert c.sigma2_kd(grid).min() >= c.sigma2_kd(lh) * (1 - 1e-14)  # λ̂ is the argmin


def test_rho_squared_falls_as_the_teacher_worsens():
    p = make_ls()
    r2 = [th.constants(p, teacher_at(p, dist), 1).rho ** 2 for dist in (0.0, 0.1, 0.3, 1.0, 3.0)]
    assert r2[0] == pytest.approx(1.0, abs=1e-14)                      # full reduction at θ = x*
    assert all(a > b for a, b in zip(r2, r2[1:]))


def test_every_lambda_star_is_one_at_the_perfect_teacher():
    p = make_ls()
    c = th.constants(p, p.solution(), 2)
    g = 0.01
    for value, source in th.all_lambdas(c, g).values():
        assert value == pytest.approx(1.0, abs=1e-12)
    assert th.lambda_opt(p, p.solution(), g, 2) == 1.0


def test_lambda_star_falls_as_the_teacher_moves_away():
    p = make_ls()
    g, b = 0.02, 1
    dists = (0.01, 0.05, 0.2, 0.5, 1.5)
    rows = []
    for dist in dists:
        theta = teacher_at(p, dist)
        c = th.constants(p, theta, b)
        rows.append([th.lambda_star_t1(c, g), th.lambda_star_t2(c, g), th.lambda_star_published(c, g),
                     th.lambda_opt(p, theta, g, b)])
    rows = np.array(rows)
    assert np.all(np.diff(rows, axis=0) < 0), rows
    assert np.all((rows > 0) & (rows < 1))


def test_lambda_star_t1_is_the_argmin_of_the_t1_neighbourhood_and_vanishes_like_gamma():
    p = make_ls()
    c = th.constants(p, teacher_at(p, 0.4), 2)
    for g in (1e-1, 1e-2):
        lams = np.linspace(-0.5, 1.5, 4001)
        n1 = [th.t1(c, g, lam).neighbourhood for lam in lams]
        n2 = [th.t2(c, g, lam).neighbourhood for lam in lams]
        assert abs(lams[int(np.argmin(n1))] - th.lambda_star_t1(c, g)) <= lams[1] - lams[0]
        assert abs(lams[int(np.argmin(n2))] - th.lambda_star_t2(c, g)) <= lams[1] - lams[0]
    # λ*_T1 / γ → c1 μ / ‖∇f(θ)‖² as γ → 0
    limit = c.cross_star_teacher * c.mu / c.teacher_bias ** 2
    assert th.lambda_star_t1(c, 1e-7) / 1e-7 == pytest.approx(limit, rel=1e-5)
    assert th.lambda_star_t2(c, 1e-7) / 1e-7 == pytest.approx(2 * c.L * c.cross_star_teacher / c.teacher_bias ** 2,
                                                              rel=1e-5)


def test_published_formula_depends_on_the_data_scale_and_the_derived_ones_do_not():
    # Rescaling a_i, b_i by s with γ → γ/s² leaves the optimisation unchanged (same iterates).
    s = 3.0
    p1, ps = make_ls(), make_ls(scale=s)
    theta = teacher_at(p1, 0.4)
    c1, cs = th.constants(p1, theta, 1), th.constants(ps, theta, 1)
    g = 0.01
    assert th.lambda_star_t1(cs, g / s ** 2) == pytest.approx(th.lambda_star_t1(c1, g), rel=1e-10)
    assert th.lambda_star_t2(cs, g / s ** 2) == pytest.approx(th.lambda_star_t2(c1, g), rel=1e-10)
    assert th.lambda_hat(cs) == pytest.approx(th.lambda_hat(c1), rel=1e-10)
    assert th.lambda_opt(ps, theta, g / s ** 2, 1) == pytest.approx(th.lambda_opt(p1, theta, g, 1), rel=1e-8)
    pub1, pubs = th.lambda_star_published(c1, g), th.lambda_star_published(cs, g / s ** 2)
    assert abs(pubs / pub1 - 1) > 0.5                                    # not scale-invariant
    # exactly: B²/γ picks up s⁶ against s⁴ for the other terms
    k = c1.teacher_bias ** 2 / g
    assert pubs == pytest.approx(c1.cross_star_teacher / (c1.teacher_second_moment + s ** 2 * k), rel=1e-10)


def test_sources_are_tagged():
    assert th.lambda_hat.source == "derived"
    assert th.lambda_star_t1.source == "derived" and th.lambda_star_t2.source == "derived"
    assert th.lambda_opt.source == "derived"
    assert th.lambda_star_published.source == "as published"
    c = th.constants(make_ls(), make_ls().solution() + 0.1, 1)
    assert {k: v[1] for k, v in th.all_lambdas(c, 0.01).items()} == {
        "lambda_hat": "derived", "lambda_star_t1": "derived", "lambda_star_t2": "derived",
        "lambda_star_published": "as published"}
