"""Bad input gets a one-line error naming the parameter and its valid range."""
import numpy as np
import pytest

import kdsim
from kdsim import theory
from kdsim.problems import synthetic


@pytest.fixture(scope="module")
def ls():
    p = synthetic.least_squares(n=30, d=3, seed=0)
    return p, p.solution() + 0.1


def test_data_too_large_for_float64_names_the_arrays():
    with pytest.raises(ValueError, match="A and b must be small enough.*rescale"):
        kdsim.LeastSquares(np.ones((5, 2)) * 1e200, np.ones(5))


def test_complex_data_are_refused_not_truncated():
    with pytest.raises(TypeError, match="A must be an array of real numbers; got complex"):
        kdsim.LeastSquares(np.ones((5, 2)) * (1 + 1j), np.ones(5))
    with pytest.raises(TypeError, match="x0 must be an array of real numbers; got complex"):
        p = synthetic.least_squares(n=10, d=2, seed=0)
        kdsim.simulate(p, p.solution(), [0.5], 0.01, 5, 2, x0=np.array([1j, 0.0]))


@pytest.mark.parametrize("L,L_max,match", [(float("nan"), 2.0, "L must be a finite number >= 0"),
                                           (-1.0, 2.0, "L must be a finite number >= 0"),
                                           (1.0, float("inf"), "L_max must be a finite number >= 0"),
                                           (3.0, 2.0, "L_max must be >= L")])
def test_expected_smoothness_checks_its_constants(L, L_max, match):
    with pytest.raises(ValueError, match=match):
        theory.expected_smoothness(10, 1, L, L_max)


@pytest.mark.parametrize("value", ["no", 1, None, np.array([True])])
def test_reduce_must_be_a_bool(ls, value):
    p, th = ls
    with pytest.raises(TypeError, match="reduce must be True or False"):
        kdsim.simulate(p, th, [0.5], 0.01, 5, 2, reduce=value)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("budget", [-1, 0, 1.5, "big"])
def test_memory_budget_is_checked_on_every_backend(ls, backend, budget):
    p, th = ls
    with pytest.raises((TypeError, ValueError), match="memory_budget"):
        kdsim.simulate(p, th, [0.5], 0.01, 5, 2, backend=backend, memory_budget=budget)
