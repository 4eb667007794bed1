"""The reference engine against a literal per-trajectory loop, and its bookkeeping."""
import numpy as np
import pytest

import functools

import kdsim
from kdsim.estimators import ESTIMATORS, get_estimator
from kdsim.rng import minibatch_indices, stream_ids

# this module tests the reference engine itself
simulate = functools.partial(kdsim.simulate, backend="numpy")


def naive_trajectory(problem, theta, lam, step, steps, seed, stream, b, estimator, x0, period):
    """One trajectory written directly from docs/theory.md §2 with the public gradients."""
    x = x0.copy()
    snap = None
    for t in range(steps):
        idx = minibatch_indices(seed, np.array([stream]), t, problem.n, b)[0]
        g = problem.grad(x, idx)
        if estimator == "kd":
            g = g - lam * problem.grad(theta, idx)
        elif estimator == "kd_loss":
            g = g - lam * problem.data_grad(theta, idx)
        elif estimator == "corrected":
            g = g - lam * (problem.grad(theta, idx) - problem.grad(theta))
        elif estimator == "svrg":
            if t % period == 0:
                snap = x.copy()
            g = g - lam * (problem.grad(snap, idx) - problem.grad(snap))
        x = x - step * g
    return x


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
@pytest.mark.parametrize("b", [1, 3])
@pytest.mark.parametrize("l2", [0.0, 0.1])
def test_matches_naive_loop(ls_problem, estimator, b, l2):
    p = kdsim.LeastSquares(ls_problem.A, ls_problem.b, l2=l2)
    rng = np.random.default_rng(0)
    theta = p.solution() + 0.3 * rng.standard_normal(p.dim)
    x0 = rng.standard_normal(p.dim)
    lams, steps, seeds = [0.3, 1.0], 37, 3
    res = simulate(p, theta, lams, 0.05, steps, seeds, batch_size=b, estimator=estimator,
                         record_every=10, seed=4, x0=x0, svrg_period=7)
    for k, lam in enumerate(lams):
        for s in range(seeds):
            want = naive_trajectory(p, theta, lam, 0.05, steps, 4, s, b, estimator, x0, 7)
            np.testing.assert_allclose(res.x_final[k, s], want, rtol=1e-12, atol=1e-13)
            assert res.dist2_opt[k, s, -1] == pytest.approx(np.sum((want - p.solution()) ** 2), rel=1e-10)
            assert res.dist2_teacher[k, s, -1] == pytest.approx(np.sum((want - theta) ** 2), rel=1e-10)
            assert res.subopt[k, s, -1] == pytest.approx(p.loss(want) - p.f_star, rel=1e-7, abs=1e-14)


def test_common_random_numbers_share_streams(ls_problem):
    # With CRN, the sgd estimator gives the same trajectory for every λ; without, they differ.
    p, theta = ls_problem, ls_problem.solution()
    crn = simulate(p, theta, [0.0, 0.5], 0.05, 30, 2, estimator="sgd")
    assert np.array_equal(crn.x_final[0], crn.x_final[1])
    own = simulate(p, theta, [0.0, 0.5], 0.05, 30, 2, estimator="sgd", common_random_numbers=False)
    assert not np.allclose(own.x_final[0], own.x_final[1])
    np.testing.assert_array_equal(stream_ids(2, 2, False)[0], [1 << 32, (1 << 32) + 1])


def test_least_squares_iterates_affine_in_lambda(ls_problem):
    # docs/theory.md §5.1: under common random numbers x_t(λ) = u_t + λ v_t exactly.
    p = ls_problem
    theta = p.solution() + np.array([0.5, -0.2, 0.1, 0.3])
    for est in ("kd", "corrected"):
        res = simulate(p, theta, [0.0, 0.4, 1.0], 0.03, 100, 3, estimator=est)
        u, v = res.x_final[0], res.x_final[2] - res.x_final[0]
        np.testing.assert_allclose(res.x_final[1], u + 0.4 * v, rtol=1e-12, atol=1e-14)


def test_record_axis_and_frame(ls_problem):
    res = simulate(ls_problem, ls_problem.solution(), [0.0, 1.0], 0.05, 25, 3, record_every=10)
    np.testing.assert_array_equal(res.steps, [0, 10, 20, 25])
    assert res.dist2_opt.shape == (2, 3, 4)
    frame = res.to_frame()
    assert len(frame) == 2 * 3 * 4 and not frame.isna().any().any()
    assert set(frame.columns) >= {"lam", "seed", "step", "dist2_opt", "subopt", "dist2_teacher", "diverged"}
    assert res.config["estimator"] == "kd" and len(res.config_hash) == 16


def test_same_configuration_same_numbers(ls_problem):
    a = simulate(ls_problem, np.zeros(4), [0.5], 0.05, 50, 4, batch_size=2, seed=3)
    b = simulate(ls_problem, np.zeros(4), [0.5], 0.05, 50, 4, batch_size=2, seed=3)
    assert np.array_equal(a.dist2_opt, b.dist2_opt) and a.config_hash == b.config_hash
    c = simulate(ls_problem, np.zeros(4), [0.5], 0.05, 50, 4, batch_size=2, seed=4)
    assert not np.array_equal(a.dist2_opt, c.dist2_opt)


def test_divergence_detected_and_reported(ls_problem):
    p = ls_problem
    L_max = p.sample_smoothness().max()
    res = simulate(p, p.solution(), [0.0, 1.0], 12.0 / L_max, 2000, 4, estimator="kd")
    assert res.diverged.all()
    assert np.all(res.diverged_step > 0)
    frame = res.to_frame()
    assert not frame[["dist2_opt", "subopt", "dist2_teacher"]].isna().any().any()
    assert frame.diverged.all()
    summary = res.divergence_summary()               # the stability limit, then one line per λ
    assert len(summary) == 3 and "stability limit" in summary[0] and "diverged" in summary[1]
    assert np.all(np.isnan(res.mean("dist2_opt")[:, -1]))   # every seed diverged: no mean


def test_partial_divergence_mean_excludes_diverged(ls_problem):
    # a large teacher-term weight makes only the λ = 50 trajectories blow up
    p = ls_problem
    res = simulate(p, p.solution() + 1.0, [0.0, 1e300], 0.01, 20, 3)
    assert not res.diverged[0].any() and res.diverged[1].all()
    assert np.all(np.isfinite(res.mean("dist2_opt")[0]))


def test_claim2_least_squares_linear_convergence_to_optimum(ls_problem):
    # docs/theory.md §8 claim 2: θ = x*, λ = 1: noise-free linear convergence to x*; SGD plateaus.
    p = ls_problem
    res = simulate(p, p.solution(), [0.0, 1.0], 0.05, 3000, 8, record_every=100)
    kd = res.dist2_opt[1]
    assert kd[:, -1].max() < 1e-20
    # linear convergence: every 100-step block shrinks the error by a factor < 0.1 until
    # rounding (‖x*‖² · 1e-32) is reached
    above = kd[:, :-1] > 1e-26
    ratios = kd[:, 1:] / kd[:, :-1]
    assert above[:, :5].all() and np.all(ratios[above] < 0.1)
    sgd = res.mean("dist2_opt")[0]
    assert sgd[-1] > 1e-4 and abs(sgd[-1] / sgd[-2] - 1) < 1.0   # a plateau, not convergence


def test_claim3_least_squares_converges_to_teacher(ls_problem):
    # docs/theory.md §8 claim 3: λ = 1, any teacher: x_t → θ with zero stationary spread.
    p = ls_problem
    theta = p.solution() + np.array([1.0, -2.0, 0.5, 0.0])
    for b in (1, 5):
        res = simulate(p, theta, [1.0], 0.05, 3000, 8, batch_size=b, record_every=3000)
        assert res.dist2_teacher[0, :, -1].max() < 1e-20
        assert res.x_final[0].std(axis=0).max() < 1e-10


def test_estimator_registry():
    assert get_estimator("kd").coefficients(0.3) == (0.3, 0.0)
    assert get_estimator("corrected").coefficients(0.3) == (0.3, 0.3)
    assert get_estimator("sgd").coefficients(0.3) == (0.0, 0.0)
    assert get_estimator("kd").biased and not get_estimator("corrected").biased
    with pytest.raises(ValueError, match="estimator"):
        get_estimator("adam")


@pytest.mark.parametrize("kw,exc,match", [
    ({"step": -0.1}, ValueError, "step"),
    ({"step": 0.0}, ValueError, "step"),
    ({"step": float("nan")}, ValueError, "step"),
    ({"steps": 0}, ValueError, "steps"),
    ({"seeds": 0}, ValueError, "seeds"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"batch_size": 41}, ValueError, "batch_size"),
    ({"estimator": "adam"}, ValueError, "estimator"),
    ({"backend": "tpu"}, ValueError, "backend"),
    ({"lams": [0.5, float("inf")]}, ValueError, "lams"),
    ({"lams": []}, ValueError, "lams"),
    ({"theta": np.zeros(3)}, ValueError, "theta"),
    ({"theta": np.full(4, np.nan)}, ValueError, "theta"),
    ({"x0": np.zeros(5)}, ValueError, "x0"),
    ({"record_every": 0}, ValueError, "record_every"),
    ({"seed": -1}, ValueError, "seed"),
    ({"steps": 2.5}, TypeError, "steps"),
    ({"common_random_numbers": "yes"}, TypeError, "common_random_numbers"),
])
def test_simulate_rejects_bad_input(ls_problem, kw, exc, match):
    args = dict(theta=np.zeros(4), lams=[0.5], step=0.1, steps=10, seeds=2) | kw
    with pytest.raises(exc, match=match):
        simulate(ls_problem, **args)


def test_simulate_rejects_non_problem():
    with pytest.raises(TypeError, match="problem"):
        simulate("least squares", np.zeros(2), [0.5], 0.1, 10, 2)
