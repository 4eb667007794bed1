"""The authors' "full gradient" as a mean of batch means (full_grad="batch_means")."""
import sys
from pathlib import Path

import numpy as np
import pytest

import kdsim
from kdsim.engines import batched, numba_cpu, reference
from kdsim.rng import batch_mean_weights
from kdsim.simulate import make_plan

sys.path.insert(0, str(Path(__file__).parent))
from engine_helpers import assert_records_close, ls_problem, run_arrays  # noqa: E402


@pytest.mark.parametrize("n,b,drop_last", [(12, 5, False), (12, 5, True), (10, 5, False), (7, 1, False), (9, 9, False)])
def test_weights_are_the_mean_of_batch_means(n, b, drop_last):
    w = batch_mean_weights(n, b, drop_last)
    assert abs(w.sum() - 1.0) < 1e-15
    g = np.random.default_rng(0).standard_normal((n, 3))
    K = n // b if drop_last else -(-n // b)
    batches = [g[k * b:min((k + 1) * b, n)] for k in range(K)]
    np.testing.assert_allclose(w @ g, np.mean([B.mean(axis=0) for B in batches], axis=0), rtol=1e-14)
    if n % b == 0:
        np.testing.assert_array_equal(w, np.full(n, 1.0 / n))


def _cases():
    r = np.random.default_rng(0)
    p = ls_problem(0.1)
    sp = kdsim.SoftmaxRegression(r.standard_normal((12, 3)), np.arange(12) % 3, 3, l2=0.1)
    dl = kdsim.DeepLinear(r.standard_normal((12, 3)), r.standard_normal((12, 2)), hidden=(2,), l2=0.1)
    return [(p, p.solution() + 0.3), (sp, sp.solution() + 0.2), (dl, dl.solution() + 0.1)]


@pytest.mark.parametrize("case", range(3))
@pytest.mark.parametrize("estimator", ["corrected", "svrg"])
def test_engines_agree_with_batch_mean_full_gradients(case, estimator):
    p, theta = _cases()[case]
    plan = make_plan(p, theta, [0.0, 0.5, 1.0], 0.05, 60, 3, batch_size=5, estimator=estimator, record_every=10,
                     full_grad="batch_means", sampling="reshuffle")
    ref = run_arrays(reference, p, plan)
    assert_records_close(run_arrays(numba_cpu, p, plan), ref, rtol=1e-9)
    assert_records_close(run_arrays(batched, p, plan), ref, rtol=1e-9)
    exact = run_arrays(reference, p, make_plan(p, theta, [0.0, 0.5, 1.0], 0.05, 60, 3, batch_size=5,
                                               estimator=estimator, record_every=10, sampling="reshuffle"))
    # n = 12, b = 5: the partial batch's samples weigh 1/6 instead of 1/12, so the runs differ
    assert np.nanmax(np.abs(exact["dist2_opt"][1:] - ref["dist2_opt"][1:])) > 1e-6


def test_batch_means_are_exact_when_the_batch_divides_n():
    p = ls_problem(0.1)
    theta = p.solution() + 0.3
    a = kdsim.simulate(p, theta, [0.5], 0.05, 40, 3, batch_size=4, estimator="corrected", full_grad="batch_means")
    b = kdsim.simulate(p, theta, [0.5], 0.05, 40, 3, batch_size=4, estimator="corrected")
    np.testing.assert_allclose(a.x_final, b.x_final, rtol=1e-13)
    assert a.config["full_grad"] == "batch_means" and "full_grad" not in b.config


@pytest.mark.parametrize("kw", [{"full_grad": "mean"}, {"full_grad": "batch_means", "estimator": "kd"}])
def test_full_grad_bad_input(kw):
    p = ls_problem()
    with pytest.raises(ValueError, match="full_grad"):
        kdsim.simulate(p, p.solution(), 0.5, 0.05, 10, 2, **kw)
