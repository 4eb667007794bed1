"""Helpers shared by the engine test modules (numba, array-module, CuPy stand-in).

Tolerances are the callers' (each module's docstring says why its own are what they are).
"""
import numpy as np

import kdsim
from kdsim.results import RECORDS
from kdsim.simulate import make_plan


def assert_records_close(got, want, rtol=1e-10, scale_tol=1e-12, x_rtol=1e-10):
    """Records equal up to rtol·|r| + scale_tol·(largest value of the trajectory); same NaNs;
    equal divergence steps; final iterates within ``x_rtol`` (None: not compared)."""
    for name in RECORDS:
        g, w = got[name], want[name]
        assert g.shape == w.shape and g.dtype == np.float64, name
        assert np.array_equal(np.isnan(g), np.isnan(w)), name
        scale = np.nanmax(np.abs(w), axis=-1, keepdims=True, initial=0.0)
        ok = np.isnan(w) | (np.abs(g - w) <= rtol * np.abs(w) + scale_tol * scale)
        assert ok.all(), (name, np.nanmax(np.abs(g - w) / (np.abs(w) + 1e-300)))
    np.testing.assert_array_equal(got["diverged_step"], want["diverged_step"])
    if x_rtol is not None:
        np.testing.assert_allclose(got["x_final"], want["x_final"], rtol=x_rtol, atol=1e-12)


def ls_problem(l2=0.0):
    """A tiny least-squares instance (n = 12, d = 3) with noise."""
    r = np.random.default_rng(1)
    A = r.standard_normal((12, 3))
    b = A @ r.standard_normal(3) + 0.5 * r.standard_normal(12)
    return kdsim.LeastSquares(A, b, l2=l2)


def ls_reference_cases(estimator, b, crn):
    """(problem, plan) pairs every engine is compared with the reference on: the tiny instance
    without and with a ridge, an imperfect teacher, a random start, three λ, 300 steps."""
    for l2 in (0.0, 0.1):
        p = ls_problem(l2)
        r = np.random.default_rng(3)
        theta = p.solution() + 0.3 * r.standard_normal(p.dim)
        x0 = r.standard_normal(p.dim)
        yield p, make_plan(p, theta, [0.0, 0.4, 1.0], 0.05, 300, 3, batch_size=b, estimator=estimator,
                           record_every=25, seed=5, x0=x0, common_random_numbers=crn, svrg_period=7)


_LAST = {}


def run_arrays(engine, problem, plan, growth_limit=None, **options):
    """The record arrays of one run through the driver (its timing kept for ``last_timing``).

    The driver's growth rule is off by default here: these tests compare the engines' own
    guards step for step (tests/test_divergence.py tests the rule on every engine)."""
    from kdsim.engines import driver
    out = driver.run(problem, plan, engine, growth_limit=growth_limit, **options)
    _LAST["timing"] = out.timing
    return out.arrays


def last_timing():
    """Timing of the latest ``run_arrays`` / ``coefficients_of`` call of this test process."""
    return dict(_LAST["timing"])


def coefficients_of(engine, problem, plan, **options):
    """Per-seed λ-quadratics of the records (``driver.coefficients``)."""
    from kdsim.engines import driver
    out = driver.coefficients(problem, plan, engine, **options)
    _LAST["timing"] = out.timing
    return out.arrays
