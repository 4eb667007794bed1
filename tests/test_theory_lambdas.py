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


# ---------------------------------------------------------------- lambda_variants: every variant in one call
def tiny_ls(scale=1.0):
    """n = 6 (every permutation can be enumerated), d = 2, noisy labels."""
    return make_ls(n=6, d=2, seed=3, scale=scale)


def test_lambda_variants_collects_every_variant_with_its_source():
    p = tiny_ls()
    theta = teacher_at(p, 0.3)
    v = th.lambda_variants(p, theta, 0.1, 2)
    assert v.names == ("lambda_hat", "lambda_star_t1", "lambda_star_t2", "lambda_star_published", "lambda_opt",
                       "lambda_opt_epoch")
    c = th.constants(p, theta, 2)
    assert v.as_pairs() == {**th.all_lambdas(c, 0.1), "lambda_opt": (th.lambda_opt(p, theta, 0.1, 2), "exact"),
                            "lambda_opt_epoch": (v["lambda_opt_epoch"].value, "exact (enumeration)")}
    assert all(np.isfinite(x) for x in v.values().values())
    assert v.batch_size == 2 and v.step == 0.1 and len(v.records()) == 6 and "λ_opt (RR" in repr(v)
    assert {r["source"] for r in v.records()} == {"derived", "as published", "exact", "exact (enumeration)"}
    with pytest.raises(KeyError, match="lambda_opt_epoch"):
        v["nope"]


def test_lambda_opt_is_the_argmin_of_the_exact_stationary_error():
    p = make_ls()
    theta = teacher_at(p, 0.2)
    for g, b in ((0.02, 1), (0.05, 3)):
        lam = th.lambda_variants(p, theta, g, b)["lambda_opt"].value
        grid = np.linspace(0, 1, 20001)
        err = [th.stationary_error_from(x, 0.04, th.mse_sgd(p, g, b)) for x in (lam - 1e-4, lam, lam + 1e-4)]
        assert err[1] < min(err[0], err[2])
        # the stationary error from the exact recursion (not the closed form) at three λ: a parabola, argmin λ_opt
        vals = [th.exact_moments(p, theta, x, g, 1, b).stationary_dist2_opt for x in (0.0, 0.5, 1.0)]
        q2 = 2 * (vals[0] - 2 * vals[1] + vals[2])
        q1 = -3 * vals[0] + 4 * vals[1] - vals[2]
        assert -q1 / (2 * q2) == pytest.approx(lam, rel=1e-8)
        assert grid[np.argmin(grid ** 2 * 0.04 + (1 - grid) ** 2 * th.mse_sgd(p, g, b))] == pytest.approx(lam, abs=1e-4)


@pytest.mark.parametrize("sampling", ["reshuffle", "shuffle_once"])
def test_rr_optimum_is_the_argmin_of_the_enumerated_epoch_end_error(sampling):
    # lambda_opt_epoch = (M − c)/(M + D² − 2c) against the argmin of the exact quadratic E‖x_T(λ) − x*‖²
    # (all permutations enumerated, from x*: the transient −λP_tδ has decayed after the default epochs)
    from kdsim.theory import schemes
    p = tiny_ls()
    theta = teacher_at(p, 0.3)
    for g in (0.05, 0.15):
        v = th.lambda_variants(p, theta, g, 1, sampling=sampling)["lambda_opt_epoch"]
        E = th.lambdas.rr_epochs(g, th.constants(p, theta).mu, p.n)
        ex = schemes.exact_epoch_moments(p, theta, 0.0, g, E, 1, sampling=sampling, x0=p.solution())
        assert v.value == pytest.approx(ex.lambda_opt_exact[-1], rel=1e-8, abs=1e-10)
        assert v.source == "exact (enumeration)" and sampling in v.note
        # and it is not the i.i.d. optimum (§5.2: M and c differ under reshuffling)
        assert abs(v.value / th.lambda_opt(p, theta, g, 1) - 1) > 0.1


def test_rr_optimum_from_given_moments_and_where_it_is_not_available():
    p = make_ls()                                                      # n = 30 > 7: no enumeration
    theta = teacher_at(p, 0.3)
    v = th.lambda_variants(p, theta, 0.05)
    assert np.isnan(v["lambda_opt_epoch"].value) and v["lambda_opt_epoch"].source == "not applicable"
    assert "rr_moments" in v["lambda_opt_epoch"].note
    M, c = 2e-3, 4e-4
    D2 = float(np.sum((theta - p.solution()) ** 2))
    w = th.lambda_variants(p, theta, 0.05, rr_moments=(M, c))["lambda_opt_epoch"]
    assert w.source == "Monte Carlo" and w.value == pytest.approx((M - c) / (M + D2 - 2 * c), rel=1e-14)
    sm = softmax_problem()
    s = th.lambda_variants(sm, teacher_at(sm, 0.3), 0.05, 4)
    assert np.isnan(s["lambda_opt"].value) and s["lambda_opt"].source == "not applicable"
    assert np.isnan(s["lambda_opt_epoch"].value)
    assert np.isfinite([s[k].value for k in ("lambda_hat", "lambda_star_t1", "lambda_star_t2",
                                             "lambda_star_published")]).all()
    # an unstable step (γ·L_max ≈ 2.4): neither optimum can be had, and each says why
    big = th.lambda_variants(tiny_ls(), teacher_at(tiny_ls(), 0.3), 0.2)
    assert np.isnan(big["lambda_opt"].value) and "stable" in big["lambda_opt"].note
    assert np.isnan(big["lambda_opt_epoch"].value) and "settled" in big["lambda_opt_epoch"].note


def test_every_variant_but_the_published_one_is_scale_invariant():
    # a_i → s a_i, b_i → s b_i at γ/s²: the same iterates (every gradient × s², x* unchanged), hence the
    # same optimum; λ̂, λ*_T1, λ*_T2, λ_opt and the RR optimum must not move, λ*_published must follow its law
    s, g = 2.0, 0.1
    p1, ps = tiny_ls(), tiny_ls(scale=s)
    theta = teacher_at(p1, 0.3)
    v1, vs = th.lambda_variants(p1, theta, g), th.lambda_variants(ps, theta, g / s ** 2)
    for name in ("lambda_hat", "lambda_star_t1", "lambda_star_t2", "lambda_opt", "lambda_opt_epoch"):
        assert vs[name].value == pytest.approx(v1[name].value, rel=1e-8), name
    c = th.constants(p1, theta)
    law = c.cross_star_teacher / (c.teacher_second_moment + s ** 2 * c.teacher_bias ** 2 / g)
    assert vs["lambda_star_published"].value == pytest.approx(law, rel=1e-10)
    assert abs(vs["lambda_star_published"].value / v1["lambda_star_published"].value - 1) > 0.2
    # the dynamics are the same: identical records on common random numbers
    r1 = kdsim.simulate(p1, theta, [0.0, 0.6], g, 200, 3, backend="numpy", record_every=20)
    rs = kdsim.simulate(ps, theta, [0.0, 0.6], g / s ** 2, 200, 3, backend="numpy", record_every=20)
    np.testing.assert_allclose(rs.dist2_opt, r1.dist2_opt, rtol=1e-9, atol=1e-14)


# ---------------------------------------------------------------- the table beside the empirical optimum
def test_variants_table_puts_every_variant_beside_the_empirical_optimum():
    p = tiny_ls()
    theta = teacher_at(p, 0.05)                         # λ_opt ≈ 0.57, λ*_T1 ≈ 0.24: some inside, some not
    curve = kdsim.lambda_curve(p, theta, [0.0, 0.1, 0.2, 0.3, 0.5, 1.0], 0.1, 3000, 200, at="plateau",
                               backend="numpy", x0=p.solution())
    tab = curve.variants_table()
    assert list(tab["name"]) == list(curve.variants.names)
    e = curve.empirical
    for r in tab.itertuples():
        assert r.lambda_emp == e.lam and (r.ci_low, r.ci_high) == (e.ci_low, e.ci_high)
        assert r.error == pytest.approx(r.value - e.lam, abs=1e-15)
        assert r.in_ci == (e.ci_low <= r.value <= e.ci_high)
        assert r.gap == pytest.approx(max(e.ci_low - r.value, r.value - e.ci_high, 0.0), abs=1e-15)
        assert (r.gap == 0.0) == r.in_ci
    # i.i.d. from x*: the plateau's optimum is the exact λ_opt (docs/theory.md §5)
    row = tab.set_index("name").loc["lambda_opt"]
    assert row["in_ci"] and row["source"] == "exact"
    assert not tab["in_ci"].all() and tab["gap"].max() > 0.1          # λ*_T1 misses, and the table says by how much
    # the table without ``variants`` falls back on ``theory`` (five rows)
    import dataclasses
    assert len(dataclasses.replace(curve, variants=None).variants_table()) == 5


def test_rr_moments_from_run_match_the_iterates_and_feed_the_rr_optimum():
    from kdsim.api import rr_moments_from_run
    p = make_ls(n=12, d=2, seed=2)                     # n = 12: no enumeration, the run's own moments
    theta = teacher_at(p, 0.3)
    xs = p.solution()
    curve = kdsim.lambda_curve(p, theta, [0.0, 0.05, 0.1, 0.2, 1.0], 0.1, 1200, 100, at="plateau", backend="numpy",
                               sampling="reshuffle", x0=xs, record_every=12, keep_iterates=True)
    it = curve.result.iterates[0]                       # λ = 0: (seed, record, d)
    tail = curve.result.steps >= curve.result.steps[-1] / 2
    z = it[:, tail] - xs
    M = np.mean(np.sum(z ** 2, axis=2).mean(axis=1))
    c = np.mean((z @ (theta - xs)).mean(axis=1))
    got = rr_moments_from_run(curve.result, p, theta, at="plateau")
    assert got == pytest.approx((M, c), rel=1e-9)
    v = curve.variants["lambda_opt_epoch"]
    assert v.source == "Monte Carlo"
    D2 = float(np.sum((theta - xs) ** 2))
    assert v.value == pytest.approx((M - c) / (M + D2 - 2 * c), rel=1e-8)
    # path identity (§5.2): from x* the epoch-end optimum matches the empirical one within its interval
    assert curve.variants_table().set_index("name").loc["lambda_opt_epoch", "in_ci"]
    # and the figure draws it beside the others
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ax = curve.plot()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(lab.startswith("λ_opt (RR, epoch ends) = ") for lab in labels), labels
    plt.close(ax.figure)
