"""Teacher constructors: exact distances, provenance, compression."""
import numpy as np
import pytest

from kdsim import teachers
from kdsim.problems import synthetic


@pytest.fixture
def ls():
    return synthetic.least_squares(60, 6, cond=5.0, seed=3)


def test_optimum(ls):
    t = teachers.optimum(ls)
    assert t.kind == "optimum" and t.distance_to_optimum(ls) == 0.0


@pytest.mark.parametrize("r", [0.0, 0.1, 2.5])
def test_at_distance_exact_and_seeded(ls, r):
    t = teachers.at_distance(ls, r, seed=7)
    assert t.distance_to_optimum(ls) == pytest.approx(r, rel=1e-12, abs=1e-15)
    assert np.array_equal(t.theta, teachers.at_distance(ls, r, seed=7).theta)
    assert t.provenance == {"r": r, "seed": 7} and "at_distance" in t.describe()


def test_early_stopped_moves_towards_optimum(ls):
    far = teachers.early_stopped(ls, 5, 0.05, seed=1).distance_to_optimum(ls)
    near = teachers.early_stopped(ls, 500, 0.05, seed=1).distance_to_optimum(ls)
    assert near < far < np.linalg.norm(ls.solution())


def test_early_stopped_diverging_step_is_an_error(ls):
    with pytest.raises(ValueError, match="step"):
        teachers.early_stopped(ls, 2000, 50.0)


def test_top_k_and_quantized(ls):
    theta = ls.solution()
    t = teachers.top_k(ls, theta, 2)
    assert np.count_nonzero(t.theta) == 2
    keep = np.argsort(-np.abs(theta))[:2]
    np.testing.assert_array_equal(t.theta[keep], theta[keep])
    q = teachers.quantized(ls, theta, 3)
    assert len(np.unique(q.theta)) <= 8
    step = (theta.max() - theta.min()) / 7
    assert np.max(np.abs(q.theta - theta)) <= step / 2 + 1e-12
    assert teachers.quantized(ls, theta, 30).distance_to_optimum(ls) < 1e-8


@pytest.mark.parametrize("call,match", [
    (lambda p: teachers.at_distance(p, -1.0), "r"),
    (lambda p: teachers.top_k(p, p.solution(), 7), "k"),
    (lambda p: teachers.quantized(p, p.solution(), 0), "bits"),
    (lambda p: teachers.top_k(p, np.zeros(3), 1), "theta"),
    (lambda p: teachers.rank_truncated(p, 1), "DeepLinear"),
])
def test_bad_input(ls, call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(ls)


def test_not_a_problem():
    with pytest.raises(TypeError, match="problem"):
        teachers.optimum(np.zeros(3))


def test_deep_linear_teachers():
    p = synthetic.deep_linear(80, 4, 3, hidden=(4,), seed=1)
    t = teachers.rank_truncated(p, 1)
    assert np.linalg.matrix_rank(t.theta) == 1
    s = np.linalg.svd(p.solution_map(), compute_uv=False)
    # Eckart–Young: the Frobenius distance of the best rank-1 map is the tail of the spectrum
    assert t.distance_to_optimum(p) == pytest.approx(np.sqrt(np.sum(s[1:] ** 2)), rel=1e-12)
    narrow = teachers.other_architecture(p, (2,))
    assert narrow.theta.shape == (3, 4) and np.linalg.matrix_rank(narrow.theta) == 2
    assert teachers.other_architecture(p, (6, 5)).distance_to_optimum(p) < 1e-8
    r = teachers.at_distance(p, 0.5, seed=0)
    assert r.theta.shape == (3, 4) and r.distance_to_optimum(p) == pytest.approx(0.5, rel=1e-12)
    es = teachers.early_stopped(p, 20, 0.05)
    assert es.theta.shape == (p.dim,) and es.distance_to_optimum(p) > 0
