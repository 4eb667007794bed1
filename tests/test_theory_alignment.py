"""kdsim.theory.alignment: cosines of the literal KD gradient with ∇f_B(x) − λ∇f_B(θ) (the identity of
docs/theory.md §2 makes them exactly 1 for the linear models), exact and Monte Carlo minibatch means,
noise-reduction factors (exact ω(b) expectations, checked against enumeration of every minibatch) and
the measurement along recorded iterates.

Tolerances: identities and enumerations are rounding (1e-12 relative); a Monte Carlo mean must hold
the exact one inside its 99 % interval (fixed seeds: deterministic).
"""
import itertools

import numpy as np
import pytest

import kdsim
from kdsim.problems import SoftmaxRegression, synthetic
from kdsim.problems.mlp import MLP
from kdsim.theory import alignment as al


def softmax_problem(l2=0.0, n=24, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, 3))
    return SoftmaxRegression(A, rng.permutation(np.arange(n) % 3), 3, l2=l2)


def mlp(activation="sigmoid", n=14, l2=0.1, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, 4))
    return MLP(A, rng.permutation(np.arange(n) % 3), hidden=(5,), activation=activation, l2=l2)


def brute(p, x, theta, lam, b, tau=1.0, wd=None):
    """Per-subset cosines and the two second moments, by direct calls on every b-subset."""
    wd = p.l2 if wd is None else wd
    cos, kd2, cv2, g2 = [], [], [], []
    for B in itertools.combinations(range(p.n), b):
        B = np.array(B)
        kd = p.kd_grad(x, theta, lam, B, tau) - lam * wd * theta
        cv = p.grad(x, B) - lam * p.grad(theta, B)
        cos.append(kd @ cv / (np.linalg.norm(kd) * np.linalg.norm(cv)))
        kd2.append(kd @ kd)
        cv2.append(cv @ cv)
        g = p.grad(x, B)
        g2.append(g @ g)
    return np.array(cos), np.mean(kd2), np.mean(cv2), np.mean(g2)


# ------------------------------------------------------------------------------ the identity
@pytest.mark.parametrize("make", [
    lambda: synthetic.least_squares(20, 4, seed=1),
    lambda: synthetic.least_squares(20, 4, seed=1, l2=0.3),
    lambda: softmax_problem(0.0),
    lambda: softmax_problem(0.2),
], ids=["least-squares", "least-squares-ridge", "softmax", "softmax-ridge"])
def test_cosine_is_one_for_the_linear_models_at_tau_one(make):
    p = make()
    rng = np.random.default_rng(3)
    x, theta = rng.standard_normal((2, p.dim))
    for b in (1, 3):
        a = al.gradient_alignment(p, x, theta, 0.7, batch_size=b)
        assert np.nanmax(np.abs(a.cosines - 1.0)) <= 1e-12
        assert np.nanmax(np.abs(a.norm_ratios - 1.0)) <= 1e-11
        assert a.cosine_mean == pytest.approx((1.0, 1.0, 1.0), abs=1e-12)
        assert a.full_cosine == pytest.approx(1.0, abs=1e-12)
    if p.l2 > 0:
        # the literal KD loss with the ridge on the student only is off by λαθ
        a = al.gradient_alignment(p, x, theta, 0.7, batch_size=3, teacher_term="data")
        assert np.nanmin(a.cosines) < 1.0 - 1e-6


def test_the_identity_fails_at_another_temperature_and_for_networks():
    p = softmax_problem(0.0)
    rng = np.random.default_rng(3)
    x, theta = rng.standard_normal((2, p.dim))
    assert al.gradient_alignment(p, x, theta, 0.7, 3, temperature=2.0).cosine_mean[2] < 0.999
    q = mlp()
    x = q.default_x0() + 0.5 * rng.standard_normal(q.dim)
    a = al.gradient_alignment(q, x, x + 0.3 * rng.standard_normal(q.dim), 0.7, 3)
    assert a.cosine_mean[2] < 1.0 - 1e-6


# ------------------------------------------------------------------------------ exact and Monte Carlo means
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_exact_enumeration_matches_direct_calls_on_every_minibatch(tau):
    p = mlp(n=9)
    rng = np.random.default_rng(5)
    x = p.default_x0() + 0.4 * rng.standard_normal(p.dim)
    theta = x + 0.3 * rng.standard_normal(p.dim)
    a = al.gradient_alignment(p, x, theta, 0.6, batch_size=3, temperature=tau)
    assert a.exact and a.n_batches == 84
    cos, *_ = brute(p, x, theta, 0.6, 3, tau)
    np.testing.assert_allclose(a.cosines, cos, rtol=1e-12, atol=1e-13)
    m, lo, hi = a.cosine_mean
    assert m == pytest.approx(cos.mean(), rel=1e-12) and lo == hi == m
    np.testing.assert_allclose(a.cosine_quantiles, np.quantile(cos, a.quantile_levels), rtol=1e-12)
    assert a.summary()["cosine_mean"] == m
    assert a.relative_distance == pytest.approx(np.linalg.norm(x - theta) / np.linalg.norm(theta))


def test_monte_carlo_interval_covers_the_exact_mean_and_batches_can_be_given():
    p = mlp(n=12)
    rng = np.random.default_rng(6)
    x = p.default_x0() + 0.4 * rng.standard_normal(p.dim)
    theta = x + 0.5 * rng.standard_normal(p.dim)
    exact = al.gradient_alignment(p, x, theta, 0.8, batch_size=2)
    mc = al.gradient_alignment(p, x, theta, 0.8, batch_size=2, exact_limit=0, n_batches=3000, seed=2)
    assert exact.exact and not mc.exact and mc.n_batches == 3000
    m, lo, hi = mc.cosine_mean
    assert lo < exact.cosine_mean[0] < hi and hi - lo < 0.1
    given = al.gradient_alignment(p, x, theta, 0.8, batches=exact.batches[:5])
    np.testing.assert_array_equal(given.cosines, exact.cosines[:5])


# ------------------------------------------------------------------------------ noise reduction
@pytest.mark.parametrize("make", [lambda: softmax_problem(0.1), lambda: mlp("relu"), lambda: mlp("tanh")],
                         ids=["softmax", "relu-mlp", "tanh-mlp"])
def test_noise_factors_are_exact_expectations_over_every_minibatch(make):
    p = make()
    rng = np.random.default_rng(8)
    x = p.default_x0() + 0.5 * rng.standard_normal(p.dim) if isinstance(p, MLP) else rng.standard_normal(p.dim)
    theta = x + 0.4 * rng.standard_normal(p.dim)
    b, lam = 3, 0.55
    nr = al.noise_reduction(p, x, theta, lam=lam, batch_size=b)
    _, kd2, cv2, g2 = brute(p, x, theta, lam, b)
    assert nr.sigma2 == pytest.approx(g2, rel=1e-12)
    assert nr.kd_factor == pytest.approx(kd2 / g2, rel=1e-11)
    assert nr.cv_factor == pytest.approx(cv2 / g2, rel=1e-11)
    # at λ̂ the control variate's factor is 1 − ρ² (an identity)
    assert nr.factor(nr.lam_hat, "cv") == pytest.approx(nr.linear_prediction, rel=1e-12, abs=1e-14)
    assert nr.factor(nr.lam_hat_kd, "kd") == pytest.approx(1 - nr.rho_kd ** 2, rel=1e-12, abs=1e-14)
    assert al.noise_reduction(p, x, theta, batch_size=b).lam == pytest.approx(nr.lam_hat)
    if not isinstance(p, MLP):
        assert nr.kd_factor == pytest.approx(nr.cv_factor, rel=1e-12)   # linear: KD is the control variate


def test_noise_reduction_agrees_with_theory_constants_at_x_star():
    p = softmax_problem(0.1)
    theta = p.solution() + 0.2
    c = kdsim.theory.constants(p, theta, batch_size=4)
    nr = al.noise_reduction(p, p.solution(), theta, batch_size=4)
    assert nr.rho == pytest.approx(c.rho, rel=1e-12)
    assert nr.lam_hat == pytest.approx(kdsim.theory.lambda_hat(c), rel=1e-12)
    assert nr.sigma2 == pytest.approx(c.sigma2_star, rel=1e-12)


# ------------------------------------------------------------------------------ along iterates
def test_alignment_along_simulated_iterates():
    p = mlp("relu", n=16)
    theta = p.default_x0() + 0.3
    res = kdsim.simulate(p, theta, [0.3, 0.9], 0.05, 20, 3, batch_size=4, record_every=10, keep_iterates=True)
    path = al.alignment_along(p, theta, res, batch_size=4, n_batches=5)
    assert path.mean.shape == (2, 3) and path.quantiles.shape == (2, 3, len(al.QUANTILES))
    assert path.cosines.shape == (2, 3, 3, 5)
    assert np.all(path.ci_low <= path.mean) and np.all(path.mean <= path.ci_high)
    np.testing.assert_array_equal(path.steps, res.steps)
    # the same numbers from the raw array, and by direct calls for one entry
    again = al.alignment_along(p, theta, res.iterates, lams=res.lams, steps=res.steps, batch_size=4, n_batches=5)
    np.testing.assert_array_equal(again.cosines, path.cosines)
    x = res.iterates[1, 2, 1]
    B = kdsim.rng.minibatch_indices(0, np.arange(5, dtype=np.uint64), (1 * 3 + 2) * 3 + 1, p.n, 4)[0]
    kd = p.distillation_grad(x, theta, 0.9, B)
    cv = p.control_variate_grad(x, theta, 0.9, B)
    assert path.cosines[1, 1, 2, 0] == pytest.approx(kd @ cv / np.linalg.norm(kd) / np.linalg.norm(cv), rel=1e-12)
    records = path.records()
    assert len(records) == 6 and {"lam", "step", "cosine_mean", "ci_low", "relative_distance"} <= set(records[0])


def test_alignment_along_is_one_for_a_linear_model_and_skips_nan_iterates():
    p = synthetic.least_squares(20, 3, seed=2)
    theta = p.solution() + 0.5
    X = np.random.default_rng(0).standard_normal((2, 4, 3))
    X[1, 2] = np.nan
    path = al.alignment_along(p, theta, X, lams=[0.6], batch_size=2, n_batches=3)
    assert np.nanmax(np.abs(path.cosines - 1.0)) <= 1e-12
    assert np.isnan(path.cosines[0, 2, 1]).all() and np.isfinite(path.mean).all()


def test_bad_input():
    p = softmax_problem(0.0)
    x = np.zeros(p.dim)
    with pytest.raises(ValueError, match="theta must be a teacher in the student's parameter space"):
        al.gradient_alignment(p, x, np.zeros(3), 0.5)
    dl = kdsim.DeepLinear(np.ones((4, 2)), np.ones((4, 1)), hidden=(2,))
    with pytest.raises(ValueError, match="theta must be a teacher in the student's parameter space"):
        al.noise_reduction(dl, np.zeros(dl.dim), np.zeros((1, 2)))
    with pytest.raises(TypeError, match="problem must be a kdsim problem"):
        al.gradient_alignment("nope", x, x, 0.5)
    with pytest.raises(ValueError, match="unknown teacher_term"):
        al.gradient_alignment(p, x, x, 0.5, teacher_term="g")
    with pytest.raises(ValueError, match="quantiles"):
        al.gradient_alignment(p, x, x, 0.5, quantiles=(1.5,))
    with pytest.raises(ValueError, match="batches must be an"):
        al.gradient_alignment(p, x, x, 0.5, batches=np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="holds no iterates"):
        al.alignment_along(p, x, kdsim.simulate(p, x, [0.5], 0.1, 2, 1))
    with pytest.raises(TypeError, match="lams is needed"):
        al.alignment_along(p, x, np.zeros((2, p.dim)))
    with pytest.raises(ValueError, match="iterates must have shape"):
        al.alignment_along(p, x, np.zeros((2, 3)), lams=[0.5])
