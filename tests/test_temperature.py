"""Tempered KD in the engines: the literal tempered KD loss's gradient, τ² weighting (docs/theory.md §2)."""
import sys
from pathlib import Path

import numpy as np
import pytest

import kdsim
from kdsim import rng
from kdsim.engines import batched, numba_cpu, reference
from kdsim.simulate import make_plan

sys.path.insert(0, str(Path(__file__).parent))
from engine_helpers import assert_records_close, run_arrays  # noqa: E402


def _softmax(bias=True):
    r = np.random.default_rng(0)
    p = kdsim.SoftmaxRegression(r.standard_normal((12, 3)), np.arange(12) % 3, 3, l2=0.1, bias=bias)
    return p, p.solution() + 0.3 * r.standard_normal(p.dim), r.standard_normal(p.dim)


def _deep():
    r = np.random.default_rng(1)
    p = kdsim.DeepLinear(r.standard_normal((12, 3)), np.arange(12) % 3, hidden=(4,), loss="softmax", l2=0.1)
    return p, p.solution() + 0.1 * r.standard_normal(p.dim), p.solution() + 0.3 * r.standard_normal(p.dim)


def _fd_grad(f, x, h=1e-6):
    e = np.eye(len(x))
    return np.array([(f(x + h * e[i]) - f(x - h * e[i])) / (2 * h) for i in range(len(x))])


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("estimator", ["kd_loss", "kd"])
@pytest.mark.parametrize("tau", [0.5, 2.0, 4.0])
@pytest.mark.parametrize("make", [_softmax, _deep])
def test_one_step_follows_the_finite_difference_gradient_of_the_tempered_kd_loss(backend, estimator, tau, make):
    p, theta, x0 = make()
    gamma, lam = 1e-3, 0.6
    res = kdsim.simulate(p, theta, [lam], gamma, 1, 1, batch_size=4, estimator=estimator, temperature=tau,
                         x0=x0, backend=backend, seed=3)
    g = (x0 - res.x_final[0, 0]) / gamma
    idx = rng.minibatch(3, [0], 0, p.n, 4)[0]
    fd = _fd_grad(lambda x: p.kd_loss(x, theta, lam, idx, temperature=tau), x0)
    if estimator == "kd":                          # the teacher's weight decay αθ (teacher_l2 = α)
        fd = fd - lam * p.l2 * theta
    # central differences with h = 1e-6: truncation ~h² (about 1e-12), rounding ~eps·|f|/h (the loss is up
    # to λτ² ≈ 10 here); the simulated step adds eps·|x|/γ. Bound: 1e-7 relative + 100·eps·|f|/h.
    f0 = abs(p.kd_loss(x0, theta, lam, idx, temperature=tau))
    assert np.max(np.abs(g - fd)) <= 1e-7 * np.max(np.abs(fd)) + 100 * np.finfo(float).eps * max(1.0, f0) / 1e-6


@pytest.mark.parametrize("make", [_softmax, _deep])
@pytest.mark.parametrize("estimator", ["kd", "kd_loss"])
def test_engines_agree_with_temperature(make, estimator):
    p, theta, _ = make()
    plan = make_plan(p, theta, [0.0, 0.5, 0.9], 0.05, 40, 3, batch_size=5, estimator=estimator, record_every=5,
                     temperature=3.0, sampling="reshuffle", momentum=0.2, lam_schedule="decay:0.9")
    ref = run_arrays(reference, p, plan)
    assert_records_close(run_arrays(numba_cpu, p, plan), ref, rtol=1e-9)
    assert_records_close(run_arrays(batched, p, plan), ref, rtol=1e-9)


def test_temperature_one_is_the_untempered_run_and_other_tau_differ():
    p, theta, x0 = _softmax()
    base = kdsim.simulate(p, theta, [0.7], 0.05, 30, 2, batch_size=3, estimator="kd_loss", x0=x0)
    one = kdsim.simulate(p, theta, [0.7], 0.05, 30, 2, batch_size=3, estimator="kd_loss", x0=x0, temperature=1.0)
    two = kdsim.simulate(p, theta, [0.7], 0.05, 30, 2, batch_size=3, estimator="kd_loss", x0=x0, temperature=2.0)
    assert np.array_equal(base.x_final, one.x_final)
    assert not np.allclose(base.x_final, two.x_final, rtol=1e-3)
    assert two.config["temperature"] == 2.0 and "temperature" not in base.config


@pytest.mark.parametrize("kw,match", [
    ({"temperature": 0.0}, "temperature"), ({"temperature": -1.0}, "temperature"),
    ({"temperature": 2.0, "estimator": "corrected"}, "temperature"),
    ({"temperature": 2.0, "estimator": "sgd"}, "temperature"),
])
def test_temperature_bad_input(kw, match):
    p, theta, _ = _softmax()
    with pytest.raises(ValueError, match=match):
        kdsim.simulate(p, theta, 0.5, 0.05, 10, 2, **kw)


def test_temperature_needs_a_softmax():
    p = kdsim.LeastSquares(np.eye(3), np.ones(3))
    with pytest.raises(ValueError, match="softmax"):
        kdsim.simulate(p, p.solution(), 0.5, 0.05, 10, 2, temperature=2.0)
