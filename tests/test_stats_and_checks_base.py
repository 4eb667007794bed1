"""Confidence intervals, rate fits and the check-row logic."""
import numpy as np
import pytest
from scipy import stats as st

from kdsim import stats
from kdsim.checks.base import CheckResult, make_row


def test_mean_ci_matches_scipy_t_interval():
    x = np.random.default_rng(0).standard_normal(50)
    m, lo, hi, n = stats.mean_ci(x, level=0.95)
    want = st.t.interval(0.95, 49, loc=x.mean(), scale=st.sem(x))
    assert n == 50 and m == pytest.approx(x.mean())
    assert (lo, hi) == pytest.approx(want, rel=1e-12)


def test_mean_ci_skips_nan_and_handles_one_value():
    m, lo, hi, n = stats.mean_ci(np.array([[1.0, np.nan], [3.0, 2.0]]), axis=0)
    np.testing.assert_allclose(m, [2.0, 2.0])
    assert n.tolist() == [2, 1] and lo[1] == hi[1] == 2.0


def test_mean_ci_coverage():
    # 2000 samples of size 20 from N(0,1): the 90% interval covers 0 in 90% ± 4 SE of cases
    x = np.random.default_rng(1).standard_normal((20, 2000))
    _, lo, hi, _ = stats.mean_ci(x, axis=0, level=0.9)
    cover = np.mean((lo <= 0) & (0 <= hi))
    assert abs(cover - 0.9) < 4 * np.sqrt(0.09 / 2000)


def test_log_linear_rate():
    t = np.arange(0, 100, 10)
    assert stats.log_linear_rate(t, 3.0 * 0.97 ** t) == pytest.approx(0.97, rel=1e-12)
    v = np.r_[0.9 ** t[:5], np.full(5, 1e-40)]
    assert stats.log_linear_rate(t, v, floor=1e-30) == pytest.approx(0.9, rel=1e-12)
    with pytest.raises(ValueError, match="two"):
        stats.log_linear_rate(t, np.zeros(10))
    with pytest.raises(ValueError, match="level"):
        stats.mean_ci(np.ones(3), level=1.0)


@pytest.mark.parametrize("emp,theo,rel,tol,lo,hi,want", [
    (1.0, 1.0, "≈", 0.0, None, None, True),
    (1.0 + 1e-9, 1.0, "≈", 1e-10, None, None, False),
    (0.5, 1.0, "≤", 0.0, 0.4, 0.9, True),
    (0.5, 1.0, "≤", 0.0, 0.4, 1.1, False),      # the upper CI limit decides
    (2.0, 1.0, "≥", 0.0, 1.5, 2.5, True),
    (2.0, 1.0, "≥", 0.0, 0.9, 2.5, False),
    (float("nan"), 1.0, "≤", 0.0, None, None, False),   # NaN never passes
])
def test_make_row(emp, theo, rel, tol, lo, hi, want):
    row = make_row(1, "inst", "q", emp, theo, rel, tol, lo, hi)
    assert row["passed"] is want


def test_ratio_and_result():
    assert make_row(1, "i", "q", 2e-11, 0.0, "≤", 1e-10)["ratio"] == pytest.approx(0.2)
    assert make_row(1, "i", "q", 3.0, 2.0, "≤")["ratio"] == 1.5
    assert np.isnan(make_row(1, "i", "q", 0.25, 0.0, "≥")["ratio"])   # sign comparison: no ratio (blank)
    r = CheckResult(1, "n", "s")
    r.rows.append(make_row(1, "i", "q", 0.25, 0.0, "≥"))
    assert " nan" not in r.table() and "2.500e-01" in r.table()
    with pytest.raises(ValueError, match="relation"):
        make_row(1, "i", "q", 1.0, 1.0, "<")
    res = CheckResult(1, "x", "s", rows=[make_row(1, "i", "q", 1.0, 2.0, "≤")])
    assert res.passed and "PASS" in res.verdict()
    res.rows.append(make_row(1, "i", "q", 3.0, 2.0, "≤"))
    assert not res.passed and "1/2" in res.verdict()
    assert not CheckResult(1, "x", "s").passed   # a check with no rows cannot pass


def test_bootstrap_ci_contains_mean_and_is_reproducible():
    x = np.random.default_rng(2).exponential(size=200)
    est, lo, hi = stats.bootstrap_ci(x, level=0.95, seed=3)
    assert lo < est < hi and est == pytest.approx(x.mean())
    assert stats.bootstrap_ci(x, level=0.95, seed=3)[1] == lo
    _, tlo, thi, _ = stats.mean_ci(x, level=0.95)
    assert abs((hi - lo) / (thi - tlo) - 1) < 0.25     # agrees with the t-interval on n=200


def test_plateau_of_noisy_stationary_curves():
    rng = np.random.default_rng(4)
    steps = np.arange(0, 1000, 10)
    v = 2.0 + np.exp(-steps / 50.0)[None, :] + 0.1 * rng.standard_normal((64, steps.size))
    p = stats.plateau(steps, v)
    assert p.start_step == 500 and p.count == 64
    assert p.ci_low < 2.0 < p.ci_high and p.spread < 0.05


def test_fit_rate_recovers_geometric_decay_above_a_plateau():
    rng = np.random.default_rng(5)
    steps = np.arange(0, 2000, 10)
    per_seed = (3.0 * 0.99 ** steps + 0.01)[None, :] * rng.lognormal(0, 0.05, size=(128, 1))
    fit = stats.fit_rate(steps, per_seed)
    assert fit.ci_low <= 0.99 <= fit.ci_high and abs(fit.rate - 0.99) < 1e-3
    assert fit.window[0] == 0 and fit.window[1] < 1000 and fit.n_points >= 3


def test_quadratic_in_lambda_exact_for_least_squares():
    # docs/theory.md §5.1: with common random numbers ‖x_t(λ) − x*‖² is a quadratic in λ per seed
    import kdsim
    from kdsim.problems import synthetic
    p = synthetic.least_squares(50, 4, seed=1)
    theta = p.solution() + 0.3
    lams = np.array([0.0, 0.5, 1.0, 0.25, 0.8])
    res = kdsim.simulate(p, theta, lams, 0.05, 200, 6, record_every=200)
    c = stats.quadratic_in_lambda(lams[:3], res.dist2_opt[:3, :, -1])
    for k in (3, 4):
        pred = c[:, 0] + c[:, 1] * lams[k] + c[:, 2] * lams[k] ** 2
        np.testing.assert_allclose(pred, res.dist2_opt[k, :, -1], rtol=1e-9)
    opt = stats.lambda_opt_from_quadratics(c, n_boot=200)
    assert opt.ci_low <= opt.lam <= opt.ci_high
    with pytest.raises(ValueError, match="three distinct"):
        stats.quadratic_in_lambda([0.0, 0.0, 1.0], res.dist2_opt[:3, :, -1])


def test_lambda_opt_from_grid_finds_the_parabola_minimum():
    rng = np.random.default_rng(6)
    lams = np.linspace(0, 1, 11)
    noise = rng.standard_normal(300)                        # shared by every λ: paired seeds
    v = (lams[:, None] - 0.37) ** 2 + 1.0 + 0.05 * noise[None, :] + 0.01 * rng.standard_normal((11, 300))
    opt = stats.lambda_opt_from_grid(lams, v, n_boot=300)
    assert abs(opt.lam - 0.37) < 0.02 and opt.ci_low < 0.37 < opt.ci_high


def test_tightness():
    np.testing.assert_array_equal(stats.tightness([2.0, 1.0, 1.0], [1.0, 2.0, 0.0]), [2.0, 0.5, np.inf])


def test_reuse_simulations_serves_identical_calls_only():
    # simulate, then judge: inside reuse_simulations an identical call returns the stored run
    import collections
    import inspect

    import kdsim
    from kdsim.checks import base
    from kdsim.problems import synthetic
    p = synthetic.least_squares(30, 3, seed=0)
    theta = p.solution() + 0.2
    args = (p, theta, [0.0, 0.5], 0.05, 20)

    def sim(*a, **k):
        return base.simulate(*a, **{"record_every": 5, "backend": "numpy", **k})

    assert inspect.signature(base.simulate) == inspect.signature(kdsim.simulate)
    assert sim(*args, 3) is not sim(*args, 3)                              # outside the block: no reuse
    with base.reuse_simulations() as runs:
        first = sim(*args, 3)
        again = base.simulate(synthetic.least_squares(30, 3, seed=0), theta.copy(), (0.0, 0.5), step=0.05,
                              steps=20, seeds=3, batch_size=1, record_every=5, backend="numpy")   # spelt differently
        assert again is first and len(runs) == 1
        assert not first.dist2_opt.flags.writeable and not first.x_final.flags.writeable
        for other in (dict(seeds=4), dict(seeds=3, record_every=4), dict(seeds=3, x0=theta),
                      dict(seeds=3, estimator="corrected"), dict(seeds=3, batch_size=2)):
            assert sim(*args, **other) is not first
        assert sim(synthetic.least_squares(30, 3, seed=1), *args[1:], 3) is not first
        assert sim(p, theta, [0.0, 0.6], 0.05, 20, 3) is not first
        assert len(runs) == 8
    fresh = kdsim.simulate(*args, 3, record_every=5, backend="numpy")
    for name in ("dist2_opt", "subopt", "dist2_teacher", "x_final", "diverged_step"):
        np.testing.assert_array_equal(getattr(first, name), getattr(fresh, name))
    with base.reuse_simulations(runs, strict=True):
        assert sim(*args, 3) is first
        with pytest.raises(LookupError, match="not among the stored"):
            sim(*args, 5)
    layered = collections.ChainMap({}, runs)
    with base.reuse_simulations(layered):
        assert sim(*args, 3) is first
        sim(*args, 5)
    assert len(layered.maps[0]) == 1 and len(runs) == 8                   # new runs kept apart
