"""Divergence is caught at the stability threshold, decided once (in the driver) for every engine.

Least squares has an exact mean-square stability limit γ_c (``theory.largest_stable_step``).
Above it, E‖x_t − x*‖² grows geometrically: ``simulate`` warns before the run and names γ_c,
the result's ``divergence_summary`` names it, and the driver flags every trajectory whose
‖x_t − x*‖² passes ``GROWTH_LIMIT`` times its scale (or whose records stop being finite) at
that record, identically on every engine. Below the limit nothing is flagged.
"""
import warnings

import numpy as np
import pytest

import kdsim
from kdsim import theory
from kdsim.engines import batched, driver, run
from kdsim.plan import make_plan
from kdsim.problems import synthetic

BACKENDS = ("numpy", "numba")


@pytest.fixture(scope="module")
def ls():
    p = synthetic.least_squares(n=200, d=10, cond=10.0, seed=0)
    return p, kdsim.teachers.at_distance(p, 0.5, seed=1).theta, theory.largest_stable_step(p, 1)


def _runs(p, th, step, steps=3000, seeds=64):
    out = {}
    for backend in BACKENDS:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out[backend] = kdsim.simulate(p, th, [0.0, 0.5, 1.0], step, steps, seeds, record_every=30,
                                          backend=backend)
        out[backend].warned = [w for w in caught if issubclass(w.category, kdsim.StabilityWarning)]
    plan = make_plan(p, th, [0.0, 0.5, 1.0], step, steps, seeds, record_every=30)
    out["array"] = run(p, plan, batched).arrays
    return out


@pytest.mark.parametrize("factor,min_flagged", [(1.1, 10), (1.3, 192)])
def test_above_the_limit_warns_names_it_and_flags_the_same_steps(ls, factor, min_flagged):
    p, th, gc = ls
    out = _runs(p, th, factor * gc)
    for backend in BACKENDS:
        res = out[backend]
        assert len(res.warned) == 1
        msg = str(res.warned[0].message)
        assert f"{gc:.6g}" in msg and f"{factor:.3g}×" in msg
        assert res.stability["limit"] == pytest.approx(gc) and res.stability["ratio"] == pytest.approx(factor)
        summary = res.divergence_summary()
        assert summary[0] == msg and len(summary) > 1
        assert np.all(np.isfinite(res.dist2_opt[~np.isnan(res.dist2_opt)]))
        assert np.nanmax(res.dist2_opt) < 1e15                  # flagged long before the 1e84 of an unguarded run
    flagged = out["numpy"].diverged_step
    assert (flagged >= 0).sum() >= min_flagged
    np.testing.assert_array_equal(out["numba"].diverged_step, flagged)
    np.testing.assert_array_equal(out["array"]["diverged_step"], flagged)


def test_below_the_limit_nothing_is_flagged_or_warned(ls):
    p, th, gc = ls
    out = _runs(p, th, 0.99 * gc, steps=1500, seeds=32)
    for backend in BACKENDS:
        assert out[backend].warned == [] and not out[backend].diverged.any()
        assert out[backend].divergence_summary() == []
    assert not (out["array"]["diverged_step"] >= 0).any()


def test_step_stability_cheap_bound_and_cache(ls):
    p, _, gc = ls
    small = theory.step_stability(p, 0.1 * gc)
    assert small["limit"] is None                     # below 2/𝓛(b): stable without the bisection
    big = theory.step_stability(p, 1.2 * gc)
    assert big["limit"] == pytest.approx(gc) and big["ratio"] == pytest.approx(1.2)
    assert theory.step_stability(p, 1.2 * gc, estimator="svrg") == {}
    assert theory.step_stability(synthetic.poisson(n=50, d=3, l2=0.01), 1.0) == {}


def _poisson_overflow_runs(engines):
    # e^z overflows in the records before ‖x‖² reaches the guard: a non-finite record is divergence
    p = synthetic.poisson(n=200, d=5, l2=0.01)
    th = kdsim.teachers.at_distance(p, 0.3, seed=1).theta
    res = {}
    for backend, dtype in engines:
        r = kdsim.simulate(p, th, [0.0, 0.5, 1.0], 6.6396, 200, 8, backend=backend, dtype=dtype)
        frame = r.to_frame()
        assert np.isfinite(frame[["dist2_opt", "subopt", "dist2_teacher"]].to_numpy()).all()
        res[backend + dtype] = r.diverged_step
    return p, th, res


def test_poisson_overflow_is_divergence_on_every_engine():
    p, th, res = _poisson_overflow_runs((("numpy", "float64"), ("numba", "float64")))
    assert (res["numpyfloat64"] >= 0).any()
    np.testing.assert_array_equal(res["numbafloat64"], res["numpyfloat64"])
    plan = make_plan(p, th, [0.0, 0.5, 1.0], 6.6396, 200, 8)
    np.testing.assert_array_equal(run(p, plan, batched).arrays["diverged_step"], res["numpyfloat64"])


@pytest.mark.slow
def test_poisson_overflow_is_divergence_in_float32():
    # slow: the layered kernel's float32 compile (about a minute); the float64 test above is the fast one
    _, _, res = _poisson_overflow_runs((("numpy", "float64"), ("numba", "float32")))
    assert (res["numpyfloat64"] >= 0).any()
    assert (res["numbafloat32"] >= 0).any()


def test_growth_rule_on_records():
    # the rule alone: growth past GROWTH_LIMIT × scale, a non-finite record, an earlier guard step
    p = synthetic.least_squares(n=20, d=2, seed=0)
    plan = make_plan(p, p.solution(), [0.5], 0.01, 4, 4, record_every=1)
    rule = driver.Divergence(p, plan)
    scale = max(rule.scale, 1.0)                                        # dist2_teacher below is 1
    d2o = np.full((1, 4, 5), scale)
    d2o[0, 0, 2] = 0.5 * driver.GROWTH_LIMIT * scale                    # large, but within the limit
    d2o[0, 0, 3] = 2 * driver.GROWTH_LIMIT * scale                      # grows past it: diverged at record 3
    sub = np.ones((1, 4, 5))
    sub[0, 1, 2] = np.inf                                               # overflow: diverged at record 2
    res = {"dist2_opt": d2o, "subopt": sub, "dist2_teacher": np.ones((1, 4, 5)),
           "diverged_step": np.array([[-1, -1, 1, -1]]), "x_final": np.zeros((1, 4, 2))}
    res["dist2_opt"][0, 2, 1:] = np.nan                                 # the guard fired at step 1
    rule.apply(res)
    np.testing.assert_array_equal(res["diverged_step"], [[3, 2, 1, -1]])
    assert np.isnan(res["dist2_opt"][0, 0, 3:]).all() and np.isfinite(res["dist2_opt"][0, 0, :3]).all()
    assert np.isnan(res["subopt"][0, 1, 2:]).all() and np.isnan(res["x_final"][0, :3]).all()
    assert np.isfinite(res["x_final"][0, 3]).all()


def test_reduced_frame_has_no_nan_rows_when_every_seed_of_a_lambda_diverges():
    p = synthetic.least_squares(n=50, d=3, seed=0)
    th = p.solution() + 0.3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kdsim.StabilityWarning)
        red = kdsim.simulate(p, th, [0.0, 1e200], 0.05, 30, 6, record_every=10, reduce=True)
    assert red.count.tolist() == [6, 0]                       # λ = 1e200 diverges on every seed
    frame = red.to_frame()
    assert set(frame["lam"]) == {0.0} and not frame[[c for c in frame if c.endswith("_mean")]].isna().any().any()
    assert any("6 of 6" in line for line in red.divergence_summary())


def test_simulate_warns_with_the_count_and_the_limit_after_a_run_that_diverged(ls):
    p, th, gc = ls
    with pytest.warns(kdsim.DivergenceWarning, match=r"of 192 trajectories diverged .* largest mean-square stable "
                                                      rf"step is {gc:.6g}"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", kdsim.StabilityWarning)
            kdsim.simulate(p, th, [0.0, 0.5, 1.0], 1.3 * gc, 3000, 64, record_every=30)
    with warnings.catch_warnings():
        warnings.simplefilter("error", kdsim.DivergenceWarning)       # a stable run says nothing
        kdsim.simulate(p, th, [0.0, 0.5], 0.5 * gc, 200, 8, record_every=20)


def test_stable_runs_with_no_natural_scale_or_a_large_teacher_offset_are_not_flagged():
    # x0 = x* = θ = 0: every distance starts at 0, the noise floor is the only scale; and KD at a
    # huge λ settles at λ²D² from x*: both are bounded, stable runs
    r = np.random.default_rng(0)
    A = r.standard_normal((40, 3))
    b = r.standard_normal(40)
    b -= A @ np.linalg.lstsq(A, b, rcond=None)[0]                    # Aᵀb = 0: x* = 0
    p = kdsim.LeastSquares(A, b)
    zero = np.zeros(3)
    res = kdsim.simulate(p, zero, [0.0, 1.0], 0.01, 2000, 16, record_every=100, x0=zero)
    assert not res.diverged.any() and np.nanmax(res.dist2_opt) > 0
    q = synthetic.least_squares(n=60, d=3, seed=1)
    res = kdsim.simulate(q, q.solution() + 0.5, [0.0, 3000.0], 0.02, 2000, 6, record_every=100)
    assert not res.diverged.any()
