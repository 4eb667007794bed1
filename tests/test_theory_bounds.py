"""docs/theory.md §4: T1, T1', T2 and the classic SGD bound against the exact least-squares curves.

For each random instance, teacher and λ, every bound is evaluated at γ inside its condition
and compared with the exact expectation of §5 (no Monte Carlo) at every record and at
stationarity; the tightness ratio bound / exact is computed and must be ≥ 1. A companion
test shrinks the neighbourhood terms and checks that the comparison then fails, so the
comparison can fail.
"""
import dataclasses

import numpy as np
import pytest

import kdsim
import kdsim.theory as th
from kdsim.theory.bounds import NotApplicableError

#: relative slack for rounding (the bound and the exact value are computed differently)
RTOL = 1e-12
#: absolute floor, relative to the initial term: a perfect teacher at λ = 1 drives both sides to
#: rounding level (∇f(x*) ≈ 1e-16 gives squared quantities near 1e-32)
ATOL_REL = 1e-26
BUILDERS = {"T1": th.t1, "T1'": th.t1_prime, "T2": th.t2}


def make_ls(n, d, seed):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d)) * (1 + rng.random(d))
    b = A @ rng.standard_normal(d) + 0.7 * rng.standard_normal(n)
    return kdsim.LeastSquares(A, b)


def run_grid(instances, fracs, steps=300, every=10):
    """Evaluate every bound against the exact curves; return {bound: [(curve ratios, stationary ratio)]}."""
    out = {}
    for seed, (n, d, b) in enumerate(instances):
        p = make_ls(n, d, seed)
        rng = np.random.default_rng(100 + seed)
        x0 = p.solution() + rng.standard_normal(d)
        for dist in (0.0, 0.5):
            u = rng.standard_normal(d)
            theta = p.solution() + dist * u / np.linalg.norm(u)
            c = th.constants(p, theta, b)
            cases = [(name, lam) for name in BUILDERS for lam in (0.0, 0.5, 1.0)] + [("SGD", 0.0)]
            for name, lam in cases:
                for frac in fracs:
                    if name == "SGD":
                        gmax = th.sgd_bound(c, 1.0, x0).gamma_max
                        B = th.sgd_bound(c, frac * gmax, x0)
                        est = "sgd"
                    else:
                        gmax = BUILDERS[name](c, 1.0, lam, x0).gamma_max
                        B = BUILDERS[name](c, frac * gmax, lam, x0)
                        est = "kd"
                    assert B.applicable and B.source == "derived"
                    em = th.exact_moments(p, theta, lam, B.gamma, steps, batch_size=b, record_every=every,
                                          x0=x0, estimator=est)
                    exact = em.record(B.record)
                    stat = getattr(em, "stationary_" + B.record)
                    out.setdefault(name, []).append((B, em.steps, exact, stat))
    return out


def assert_bounds_hold(results):
    report = {}
    for name, rows in results.items():
        curve_r, stat_r = [], []
        for B, t, exact, stat in rows:
            bound = B.curve(t)
            atol = ATOL_REL * max(1.0, B.initial)
            assert np.all(bound >= exact * (1 - RTOL) - atol), f"{name} violated: {B}"
            assert B.neighbourhood >= stat * (1 - RTOL) - atol, f"{name} neighbourhood below the stationary value"
            pos = exact[1:] > 1e-20
            curve_r.append((bound[1:][pos] / exact[1:][pos]).min())
            if stat > 1e-20:
                stat_r.append(B.neighbourhood / stat)
        report[name] = (min(curve_r), float(np.median(stat_r)), min(stat_r), max(stat_r))
        assert report[name][0] >= 1 - RTOL
    for name, (cmin, smed, smin, smax) in report.items():
        print(f"{name}: min bound/exact over t>0 = {cmin:.4f}; stationary bound/exact median {smed:.2f} "
              f"(range {smin:.2f}–{smax:.2f})")
    return report


DEFAULT_INSTANCES = [(20, 3, 1), (40, 5, 4), (25, 3, 5)]


@pytest.fixture(scope="module")
def grid():
    return run_grid(DEFAULT_INSTANCES, fracs=(1.0,))


def test_bounds_hold_against_exact_curves(grid):
    report = assert_bounds_hold(grid)
    assert set(report) == {"T1", "T1'", "T2", "SGD"}


@pytest.mark.slow
def test_bounds_hold_on_a_larger_grid():
    inst = [(20, 3, 1), (40, 5, 4), (30, 4, 2), (25, 3, 5), (60, 8, 1), (60, 8, 12), (15, 2, 15)]
    assert_bounds_hold(run_grid(inst, fracs=(0.1, 0.5, 1.0), steps=1000, every=20))


def test_shrunken_neighbourhoods_are_caught(grid):
    # Companion: with every neighbourhood term × 0.01 each bound fails somewhere on the grid.
    for name, rows in grid.items():
        failed = False
        for B, t, exact, stat in rows:
            terms = {k: 0.01 * v for k, v in B.neighbourhood_terms.items()}
            small = dataclasses.replace(B, neighbourhood=sum(terms.values()), neighbourhood_terms=terms)
            failed |= bool(np.any(small.curve(t) < exact * (1 - RTOL))) or small.neighbourhood < stat * (1 - RTOL)
        assert failed, f"{name}: a neighbourhood 100× too small went unnoticed"


def test_not_applicable_outside_the_condition():
    p = make_ls(20, 3, 0)
    theta = p.solution() + 0.3
    c = th.constants(p, theta, 2)
    for name, make in BUILDERS.items():
        gmax = make(c, 1.0, 0.5).gamma_max
        ok = make(c, gmax, 0.5)                                   # the boundary itself is inside
        assert ok.applicable and ok.status.startswith("applicable")
        B = make(c, 1.01 * gmax, 0.5)
        assert not B.applicable
        assert B.status == f"not applicable: γ = {1.01 * gmax:.6g} > γ_max = {gmax:.6g}"
        with pytest.raises(NotApplicableError, match="γ_max"):
            B.curve(np.arange(5))
    assert th.t1(c, 1.0, 0.5).gamma_max == pytest.approx(1 / (2 * c.expected_smoothness))
    assert th.t1_prime(c, 1.0, 0.5).gamma_max == pytest.approx(1 / (2 * c.L_max))
    assert th.t2(c, 1.0, 0.5).gamma_max == pytest.approx(c.mu / (4 * c.L * c.expected_smoothness))
    assert th.sgd_bound(c, 1.0).gamma_max == pytest.approx(1 / (2 * c.expected_smoothness))


def test_no_strong_convexity_means_not_applicable():
    rng = np.random.default_rng(0)
    p = kdsim.LeastSquares(rng.standard_normal((3, 5)), rng.standard_normal(3))   # d > n
    c = th.constants(p, p.solution(), 1)
    assert c.mu == 0.0
    B = th.t1(c, 1e-6, 0.5)
    assert not B.applicable and "μ" in B.status
    with pytest.raises(NotApplicableError):
        B.curve([0, 1])


def test_bound_terms_and_quantities():
    p = make_ls(30, 4, 3)
    theta = p.solution() + 0.2
    c = th.constants(p, theta, 3)
    g, lam = 0.5 * th.t2(c, 1.0, 0.4).gamma_max, 0.4
    b1, b1p, b2 = th.t1(c, g, lam), th.t1_prime(c, g, lam), th.t2(c, g, lam)
    assert b1.neighbourhood_terms["noise"] == pytest.approx(4 * g / c.mu * c.sigma2_kd(lam), rel=1e-14)
    assert b1.neighbourhood_terms["bias"] == pytest.approx(4 * lam ** 2 / c.mu ** 2 * c.teacher_bias ** 2, rel=1e-14)
    assert b2.neighbourhood_terms["noise"] == pytest.approx(2 * c.L * g / c.mu * c.sigma2_kd(lam), rel=1e-14)
    assert b2.neighbourhood_terms["bias"] == pytest.approx(lam ** 2 / c.mu * c.teacher_bias ** 2, rel=1e-14)
    assert (b1.quantity, b1p.quantity, b2.quantity) == ("E‖x_t − x*‖²", "E‖x_t − x_λ‖²", "E[f(x_t) − f*]")
    assert b1.curve(0) == pytest.approx(np.sum(p.solution() ** 2) + b1.neighbourhood)     # x0 = 0
    # T1' corollary: ‖x_λ − x*‖ ≤ λ‖∇f(θ)‖/μ, and λ = 1 gives x_1 = θ with zero noise
    assert b1p.extra["shift"] <= b1p.extra["shift_bound"] * (1 + 1e-12)
    one = th.t1_prime(c, g, 1.0)
    np.testing.assert_array_equal(one.extra["x_lambda"], theta)
    assert one.neighbourhood == 0.0
    perfect = th.constants(p, p.solution(), 3)
    np.testing.assert_allclose(th.t1_prime(perfect, g, 1.0).extra["x_lambda"], p.solution())
    assert th.t1_prime(perfect, g, 1.0).neighbourhood < 1e-25


def test_x_lambda_on_softmax_solves_the_shifted_stationarity_condition():
    from kdsim.problems import SoftmaxRegression
    rng = np.random.default_rng(0)
    p = SoftmaxRegression(rng.standard_normal((50, 3)), rng.integers(0, 3, 50), 3, bias=True, l2=0.05)
    theta = p.solution() + 0.3 * rng.standard_normal(p.dim)
    c = th.constants(p, theta, 5)
    for lam in (0.3, 1.0):
        B = th.t1_prime(c, 0.5 / c.L_max, lam)
        xl = B.extra["x_lambda"]
        np.testing.assert_allclose(p.grad(xl), lam * p.grad(theta), atol=1e-11)
        assert B.extra["shift"] <= B.extra["shift_bound"] * (1 + 1e-12)
        assert B.constants_used["mu"] == "local at x*"
    np.testing.assert_allclose(th.t1_prime(c, 0.5 / c.L_max, 1.0).extra["x_lambda"], theta, atol=1e-10)


def test_bounds_with_the_data_teacher_term_hold_for_kd_loss():
    # Literal KD loss with a ridge on the student only: teacher rows ∇ℓ_i(θ) (docs/theory.md §2).
    rng = np.random.default_rng(4)
    A = rng.standard_normal((30, 3))
    p = kdsim.LeastSquares(A, A @ rng.standard_normal(3) + 0.7 * rng.standard_normal(30), l2=0.4)
    theta = p.solution() + 0.3 * rng.standard_normal(3)
    x0 = p.solution() + rng.standard_normal(3)
    c = th.constants(p, theta, 2, teacher_term="data")
    assert c.teacher_bias == pytest.approx(np.linalg.norm(p.data_grad(theta)), rel=1e-12)
    for name, make in BUILDERS.items():
        B = make(c, make(c, 1.0, 0.7, x0).gamma_max, 0.7, x0)
        em = th.exact_moments(p, theta, 0.7, B.gamma, 400, batch_size=2, record_every=10, x0=x0,
                              estimator="kd_loss")
        assert np.all(B.curve(em.steps) >= em.record(B.record) * (1 - RTOL)), name
        assert B.neighbourhood >= getattr(em, "stationary_" + B.record), name
        if name == "T1'":
            np.testing.assert_allclose(B.extra["x_lambda"], em.centre, rtol=1e-12, atol=1e-14)
