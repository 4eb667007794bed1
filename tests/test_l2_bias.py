"""``l2_bias=False``: the ridge (α/2)‖Dx‖² leaves the bias out (D zeroes the bias coordinates).

Checked numerically: gradients and Hessians by central differences, x* stationary, the exact
least-squares recursion against the expectation over every index sequence (to 1e-12), and
every engine's trajectories against the reference engine's (same index stream) for every
estimator, sampling scheme and momentum; the default (``l2_bias=True``) keeps every earlier
number and cache key.
"""
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

import kdsim
import kdsim.theory as th
from kdsim.engines import batched, numba_cpu, reference
from kdsim.problems import MLP, LeastSquares, LogisticRegression, PoissonRegression, SoftmaxRegression
from kdsim.simulate import make_plan

sys.path.insert(0, str(Path(__file__).parent))
from engine_helpers import assert_records_close, run_arrays  # noqa: E402

H_FD = 1e-6


def fd_grad(fun, x, h=H_FD):
    e = np.eye(len(x))
    return np.array([(fun(x + h * e[i]) - fun(x - h * e[i])) / (2 * h) for i in range(len(x))])


def data(n=20, d=3, seed=0):
    r = np.random.default_rng(seed)
    A = r.standard_normal((n, d))
    return r, A


def problems(l2_bias=False):
    """One problem of every family with a bias, ridge α > 0, the bias left out (or not)."""
    r, A = data()
    n = A.shape[0]
    b = A @ r.standard_normal(3) + 1.5 + 0.3 * r.standard_normal(n)
    y_cls = np.arange(n) % 3
    y_bin = (A[:, 0] + 0.5 * r.standard_normal(n) > 0).astype(float)
    y_cnt = r.poisson(np.exp(0.3 * A[:, 1] + 0.5)).astype(float)
    return {
        "least_squares": LeastSquares(np.hstack([A, np.ones((n, 1))]), b, l2=0.2, l2_bias=l2_bias),
        "softmax": SoftmaxRegression(A, y_cls, 3, bias=True, l2=0.1, l2_bias=l2_bias),
        "logistic": LogisticRegression(A, y_bin, l2=0.1, bias=True, l2_bias=l2_bias),
        "poisson": PoissonRegression(A, y_cnt, l2=0.1, bias=True, l2_bias=l2_bias),
    }


FAMILIES = ("least_squares", "softmax", "logistic", "poisson")


# ------------------------------------------------------------------ the problem
@pytest.mark.parametrize("family", FAMILIES)
def test_ridge_leaves_exactly_the_bias_out(family):
    p, q = problems(False)[family], problems(True)[family]
    x = np.random.default_rng(4).standard_normal(p.dim)
    bias = p.bias_coordinates()
    mask = np.ones(p.dim)
    mask[bias] = 0.0
    assert len(bias) == (3 if family == "softmax" else 1)
    np.testing.assert_array_equal(p.l2_mask, mask)
    assert q.l2_mask is None and q.l2_weights == q.l2
    # f = ℓ + (α/2)‖Dx‖²: the loss, its gradient and Hessian differ from the full ridge by the bias terms only
    assert p.loss(x) == pytest.approx(q.loss(x) - 0.5 * q.l2 * float(np.sum(x[bias] ** 2)), rel=1e-13)
    np.testing.assert_allclose(p.grad(x), q.grad(x) - q.l2 * (1 - mask) * x, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(p.grad(x), fd_grad(p.loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(p.hessian(x), q.hessian(x) - q.l2 * np.diag(1 - mask), rtol=1e-13, atol=1e-15)
    idx = np.array([1, 4, 7])
    np.testing.assert_allclose(p.sample_grads(x, idx).mean(axis=0), p.grad(x, idx), rtol=1e-13, atol=1e-15)
    theta = x + 0.3
    np.testing.assert_allclose(p.kd_grad(x, theta, 0.4, idx), fd_grad(lambda z: p.kd_loss(z, theta, 0.4, idx), x),
                               rtol=1e-6, atol=1e-8)
    # the teacher's weight decay covers the same coordinates as the student's
    np.testing.assert_allclose(p.teacher_terms(theta).ridge, p.l2 * mask * theta, rtol=0, atol=0)
    np.testing.assert_allclose(p.teacher_terms(theta, teacher_l2=0.3).ridge, 0.3 * mask * theta, rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_solution_is_stationary_and_suboptimality_is_its_gap(family):
    p = problems(False)[family]
    xs = p.solution()
    assert np.abs(p.grad(xs)).max() < 1e-9
    X = xs + 0.05 * np.random.default_rng(2).standard_normal((4, p.dim))
    direct = np.array([p.loss(x) for x in X]) - p.loss(xs)
    np.testing.assert_allclose(p.suboptimality(X), direct, rtol=1e-7, atol=1e-12)


def test_least_squares_smoothness_is_exact_with_the_mask():
    p = problems(False)["least_squares"]
    want = [np.linalg.eigvalsh(np.outer(a, a) + p.ridge_hessian())[-1] for a in p.A]
    np.testing.assert_allclose(p.sample_smoothness(), want, rtol=1e-12)
    assert np.all(p.sample_smoothness() <= np.einsum("ij,ij->i", p.A, p.A) + p.l2 + 1e-12)


def test_mlp_leaves_every_layer_bias_out():
    r, A = data(n=12, d=3, seed=5)
    y = np.arange(12) % 2
    p = MLP(A, y, hidden=(4,), activation="tanh", l2=0.1, l2_bias=False)
    q = MLP(A, y, hidden=(4,), activation="tanh", l2=0.1)
    assert len(p.bias_coordinates()) == 4 + 2
    x = r.standard_normal(p.dim)
    _, bs = p._unpack(x)
    assert p.loss(x) == pytest.approx(q.loss(x) - 0.05 * sum(float(b @ b) for b in bs), rel=1e-13)
    np.testing.assert_allclose(p.grad(x), fd_grad(p.loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(p.hvp(x, np.eye(p.dim)[0]), p.hessian(x)[:, 0], rtol=1e-10, atol=1e-12)


def test_clear_errors_and_default_keeps_keys():
    r, A = data()
    with pytest.raises(ValueError, match="l2_bias=False needs a bias"):
        LeastSquares(A, A[:, 0], l2=0.1, l2_bias=False)             # no column of ones
    with pytest.raises(ValueError, match="l2_bias=False needs a bias"):
        SoftmaxRegression(A, np.arange(20) % 3, 3, bias=False, l2=0.1, l2_bias=False)
    with pytest.raises(TypeError, match="l2_bias must be True or False"):
        LeastSquares(A, A[:, 0], l2=0.1, l2_bias="no")
    on, off = problems(True)["least_squares"], problems(False)["least_squares"]
    assert on.fingerprint() != off.fingerprint()
    assert "l2_bias=False" in repr(off) and "l2_bias" not in repr(on)
    # a default problem's fingerprint is the one written before l2_bias existed
    base = LeastSquares(on.A, on.b, l2=0.2)
    assert base.fingerprint() == on.fingerprint()
    ds = kdsim.datasets.load_diabetes(standardize=True, bias=True)      # the data's own column of ones
    np.testing.assert_array_equal(LeastSquares(ds.A, ds.y, l2=0.1, l2_bias=False).bias_coordinates(), [10])


# --------------------------------------------------------- exact least squares
@pytest.mark.parametrize("estimator", ["kd", "kd_loss", "corrected"])
@pytest.mark.parametrize("b", [1, 2])
def test_exact_moments_equal_expectation_over_all_index_sequences(estimator, b):
    r = np.random.default_rng(3)
    A = np.hstack([r.standard_normal((3, 1)), np.ones((3, 1))])
    p = LeastSquares(A, A @ [0.7, 1.2] + 0.6 * r.standard_normal(3), l2=0.3, l2_bias=False)
    theta = p.solution() + np.array([0.5, -0.6])
    x0 = np.array([1.5, -0.5])
    lam, step, steps = 0.6, 0.15, 4
    xs = p.solution()
    seqs = list(itertools.product(itertools.combinations(range(p.n), b), repeat=steps))
    acc = np.zeros((steps + 1, 3))
    for seq in seqs:
        x = x0.copy()
        for t in range(steps + 1):
            acc[t] += [np.sum((x - xs) ** 2), p.loss(x) - p.f_star, np.sum((x - theta) ** 2)]
            if t < steps:
                idx = np.array(seq[t])
                g = p.grad(x, idx)
                if estimator == "kd":
                    g = g - lam * p.grad(theta, idx)
                elif estimator == "kd_loss":
                    g = g - lam * p.data_grad(theta, idx)
                else:
                    g = g - lam * (p.grad(theta, idx) - p.grad(theta))
                x = x - step * g
    acc /= len(seqs)
    em = th.exact_moments(p, theta, lam, step, steps, batch_size=b, estimator=estimator, x0=x0)
    for k, name in enumerate(("dist2_opt", "subopt", "dist2_teacher")):
        np.testing.assert_allclose(em.record(name), acc[:, k], rtol=1e-12, atol=1e-12)


def test_stationary_solve_equals_the_long_recursion():
    p = problems(False)["least_squares"]
    theta = p.solution() + 0.4
    step = 0.5 * th.largest_stable_step(p, 2)
    for lam in (0.0, 0.5):
        em = th.exact_moments(p, theta, lam, step, 4000, batch_size=2, estimator="kd", record_every=4000)
        assert em.record("dist2_opt")[-1] == pytest.approx(em.stationary_dist2_opt, rel=1e-9)
    D2 = float(np.sum((theta - p.solution()) ** 2))
    mse = th.mse_sgd(p, step, 2)
    assert th.stationary_error(p, theta, 0.5, step, 2) == pytest.approx(0.25 * D2 + 0.25 * mse, rel=1e-14)


# ----------------------------------------------------------------- engines
SETUPS = [dict(), dict(sampling="reshuffle"), dict(sampling="shuffle_once", momentum=0.5)]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("estimator", ["sgd", "kd", "kd_loss", "corrected", "svrg"])
def test_every_engine_reproduces_the_reference_trajectories(family, estimator):
    p = problems(False)[family]
    theta = p.solution() + 0.3 * np.random.default_rng(6).standard_normal(p.dim)
    for setup in SETUPS:
        plan = make_plan(p, theta, [0.0, 0.5, 1.0], 0.05, 120, 3, batch_size=2, estimator=estimator,
                         record_every=20, seed=5, svrg_period=7, **setup)
        want = run_arrays(reference, p, plan)
        assert np.isfinite(want["subopt"]).all()
        for engine in (numba_cpu, batched):
            assert_records_close(run_arrays(engine, p, plan), want, rtol=1e-9, scale_tol=1e-11, x_rtol=1e-9)


def test_the_affine_form_needs_a_full_ridge():
    p = problems(False)["least_squares"]
    plan = make_plan(p, p.solution(), [0.0, 0.5], 0.05, 10, 2)
    for engine in (numba_cpu, batched):
        with pytest.raises(ValueError, match="l2_bias=True"):
            run_arrays(engine, p, plan, path="affine")


def test_leaving_the_bias_out_changes_the_plateau_it_should():
    """KD's plateau differs (the bias is free); the default problem's results are unchanged."""
    on, off = problems(True)["least_squares"], problems(False)["least_squares"]
    runs = [kdsim.simulate(p, p.solution() + 0.2, [0.5], 0.05, 300, 8, seed=1, backend="numba") for p in (on, off)]
    assert not np.allclose(runs[0].record("subopt"), runs[1].record("subopt"))
    assert runs[1].record("subopt").min() >= 0.0


def test_constants_exclude_only_the_free_flat_direction_of_softmax():
    """Softmax's flat directions 1vᵀ are penalised by the ridge except v on the bias: μ excludes just
    that one direction (the full ridge excludes none)."""
    p, q = problems(False)["softmax"], problems(True)["softmax"]
    theta = p.solution() + 0.1
    c, cq = th.constants(p, theta), th.constants(q, theta)
    assert c.trivial_directions == 1 and cq.trivial_directions == 0
    w = np.linalg.eigvalsh(p.hessian(p.solution()))
    assert abs(w[0]) < 1e-12 and c.mu == pytest.approx(w[1], rel=1e-10)
    assert cq.mu == pytest.approx(np.linalg.eigvalsh(q.hessian(q.solution()))[0], rel=1e-10)
