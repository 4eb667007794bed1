"""The kernel spec says exactly what the problems compute: gradients, teacher terms and records."""
import numpy as np
import pytest

import kdsim
from kdsim import kernelspec as KS
from kdsim.estimators import ESTIMATORS


def _families():
    r = np.random.default_rng(0)
    A = r.standard_normal((25, 4))
    return {
        "least_squares": kdsim.LeastSquares(A, r.standard_normal(25), l2=0.1),
        "softmax": kdsim.SoftmaxRegression(A, np.arange(25) % 3, 3, bias=True, l2=0.1),
        "logistic": kdsim.LogisticRegression(A, (np.arange(25) % 2).astype(float), l2=0.1),
        "poisson": kdsim.PoissonRegression(0.3 * A, (np.arange(25) % 3).astype(float), l2=0.1),
        "deep_linear": kdsim.DeepLinear(A, r.standard_normal((25, 2)), hidden=(3,), l2=0.1),
        "deep_linear_softmax": kdsim.DeepLinear(A, np.arange(25) % 3, hidden=(3,), loss="softmax", l2=0.1),
    }


FAMILIES = _families()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_spec_gradient_is_the_problems(name):
    # the data gradient written from the spec (link, layers, J(x)ᵀ(r aᵀ)) equals the problem's own
    p = FAMILIES[name]
    spec = p.kernel_spec(p.solution(), ESTIMATORS["sgd"])
    x = p.solution() + 0.3 * np.random.default_rng(1).standard_normal(p.dim)
    idx = np.array([3, 7, 11, 20])
    Ws = KS.layer_views(x, spec.shapes, spec.offsets)
    P, Q = KS.chain(Ws)
    R = KS.link_apply(spec.link, np, spec.A[idx] @ Q[-1].T) - spec.Y[idx]          # (b, d_out)
    G = R.T @ spec.A[idx] / len(idx)                                                # map-space gradient
    blocks = [(G if P[k] is None else P[k].T @ G) @ (np.eye(spec.d_in) if Q[k] is None else Q[k].T)
              for k in range(spec.depth)]
    grad = np.concatenate([blk.ravel() for blk in blocks]) + spec.l2 * x
    np.testing.assert_allclose(grad, p.grad(x, idx), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("estimator", ["sgd", "kd", "kd_loss", "corrected", "svrg"])
def test_spec_teacher_terms_are_the_problems(name, estimator):
    p = FAMILIES[name]
    est = ESTIMATORS[estimator]
    theta = p.solution() + 0.2
    spec = p.kernel_spec(theta, est)
    if not est.uses_teacher:
        assert not spec.teacher_residuals.any() and not spec.teacher_map.any() and not spec.teacher_ridge.any()
        return
    terms = p.teacher_terms(theta, est.teacher_term)
    np.testing.assert_allclose(spec.teacher_ridge, terms.ridge, rtol=0, atol=0)
    if spec.depth == 1:                      # parameter space: T = vec(mean map) + ridge
        np.testing.assert_allclose(spec.teacher_full, terms.full, rtol=1e-12, atol=1e-15)
        idx = np.array([0, 5, 9])
        TB = (spec.teacher_residuals[idx].T @ spec.A[idx]).ravel() / 3 + spec.teacher_ridge
        np.testing.assert_allclose(TB, p.batch_teacher_grad(theta[None], terms, idx[None])[0], rtol=1e-12)
    else:
        np.testing.assert_allclose(spec.teacher_map, terms.full_map, rtol=1e-12)
        with pytest.raises(ValueError, match="one-layer"):
            spec.teacher_full


@pytest.mark.parametrize("name", list(FAMILIES))
def test_record_values_are_the_problems(name):
    p = FAMILIES[name]
    theta = p.solution() + 0.2
    spec = p.kernel_spec(theta, ESTIMATORS["kd"])
    r = np.random.default_rng(2)
    X = p.solution() + np.concatenate([s * r.standard_normal((3, p.dim)) for s in (1e-8, 0.1, 2.0)])
    d2o, sub, d2t = KS.record_values(spec.record_refs(np), X, np, spec.record_row_bytes)
    C = p.canonical(X)
    np.testing.assert_allclose(d2o, ((C - p.canonical(p.solution())) ** 2).sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(d2t, ((C - p.canonical_teacher(theta)) ** 2).sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(sub, p.suboptimality(X), rtol=1e-12, atol=1e-300)
    # row blocks of two rows: the same formula; a BLAS product over fewer rows may round an ulp apart
    tiny_blocks = KS.in_row_blocks(lambda Xb: KS.suboptimality(spec.record_refs(np), Xb, np), X,
                                   KS.ROW_BLOCK_BYTES // 2)
    np.testing.assert_allclose(tiny_blocks, sub, rtol=8 * np.finfo(float).eps, atol=1e-300)


@pytest.mark.parametrize("name", ["softmax", "least_squares"])
def test_saved_records_evaluate_a_shared_start_once(name, monkeypatch):
    # every trajectory saves the same start x0: its records are evaluated once and given to all of them;
    # the values are those of evaluating every row, diverged trajectories are NaN after their step, and a
    # start that differs between trajectories is evaluated row by row
    p = FAMILIES[name]
    spec = p.kernel_spec(p.solution() + 0.2, ESTIMATORS["kd"])
    refs = spec.record_refs(np)
    r = np.random.default_rng(4)
    L, S, R = 2, 3, 3
    saved = p.solution() + 0.3 * r.standard_normal((L, S, R, p.dim))
    saved[:, :, 0] = p.solution() + 0.5
    div = np.full((L, S), -1)
    div[1, 2] = 7                                          # diverged at step 7: NaN from the record at 10
    rec_steps = np.array([0, 10, 20])
    rows = []
    real = KS.record_values
    monkeypatch.setattr(KS, "record_values", lambda refs_, X, *a, **k: rows.append(len(X)) or real(refs_, X, *a, **k))
    got = KS.saved_records(refs, saved, div, rec_steps, 1000)
    assert sum(rows) == 1 + L * S * (R - 1) - 2            # the start once, the diverged trajectory's two left out
    want = real(refs, saved.reshape(-1, p.dim))
    for g, w in zip(got, want):
        w = w.reshape(L, S, R).copy()
        w[1, 2, 1:] = np.nan
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-300)
    saved[0, 1, 0] += 1e-3                                 # starts that differ: every row
    rows.clear()
    KS.saved_records(refs, saved, div, rec_steps, 1000)
    assert sum(rows) == L * S * R - 2


def test_spec_is_frozen_and_validated():
    p = FAMILIES["least_squares"]
    spec = p.kernel_spec(p.solution(), ESTIMATORS["kd"])
    with pytest.raises(ValueError):
        spec.A[0, 0] = 1.0                                   # read-only arrays
    with pytest.raises(AttributeError):
        spec.l2 = 2.0                                        # frozen
    with pytest.raises(ValueError, match="link must be one of"):
        KS.KernelSpec("least_squares", "tanh", spec.A, spec.Y, spec.shapes, 0.0, spec.teacher_residuals,
                      spec.teacher_map, spec.teacher_ridge, spec.x_star, spec.theta)


def test_a_subclass_inherits_no_spec():
    class Scaled(kdsim.LeastSquares):
        """A subclass may change the math."""

    base = FAMILIES["least_squares"]
    sub = Scaled(base.A, base.b)
    assert base.exports_kernel_spec() and not sub.exports_kernel_spec()
    with pytest.raises(NotImplementedError, match="Scaled exports no kernel spec"):
        sub.kernel_spec(sub.solution(), ESTIMATORS["kd"])


def test_affine_shift_of_corrected_kd():
    p = FAMILIES["least_squares"]
    theta = p.solution() + 0.4
    spec = p.kernel_spec(theta, ESTIMATORS["corrected"])
    terms = p.teacher_terms(theta, "f")
    np.testing.assert_allclose(spec.affine_shift(True), terms.ridge - terms.full, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(spec.affine_shift(False), terms.ridge)


def test_affine_records_are_the_records_of_u_plus_lambda_v_even_under_cancellation():
    """The affine form's records (quadratics in λ of the pairs (u, v), ``affine_record_values``) equal the
    problem's own records of x = u + λv, also where x is so close to x* that the quadratic cancels (there
    the rule evaluates directly; the quadratic alone loses every digit, checked below)."""
    p = FAMILIES["least_squares"]
    theta = p.solution() + 0.3
    spec = p.kernel_spec(theta, ESTIMATORS["kd"])
    F, alpha = spec.record_factor()
    refs = spec.record_refs(np)
    r = np.random.default_rng(3)
    V = r.standard_normal((6, 4))
    lams = np.array([0.0, 0.5, 2.0])
    U = spec.x_star - 2.0 * V + r.standard_normal((6, 4))
    U[:3] = spec.x_star - 2.0 * V[:3] + 1e-9 * r.standard_normal((3, 4))        # x(2) within 1e-9 of x*
    tol = 2.0 * (4 + 3) * np.finfo(float).eps / 1e-12
    got = KS.affine_record_values(np, U, V, lams, spec.x_star, spec.theta, F, alpha, tol)
    for k, a in enumerate(lams):
        want = KS.record_values(refs, U + a * V)
        for g, w in zip(got, want):
            # rows 0-2 at λ = 2: e ~ 1e-9 carries the inputs' rounding, eps·|u|/1e-9 ~ 1e-7 relative
            np.testing.assert_allclose(g[k, :3], w[:3], rtol=1e-5 if a == 2.0 else 1e-10, atol=0)
            np.testing.assert_allclose(g[k, 3:], w[3:], rtol=1e-10, atol=0)
    direct = (U[:3] + 2.0 * V[:3] - spec.x_star) ** 2
    sums = KS.affine_sums(np, U[:3], V[:3], spec.x_star, spec.theta, F)[0]
    quadratic = sums[0] + 2.0 * (2.0 * sums[1] + 2.0 * sums[2])
    assert np.max(np.abs(quadratic / direct.sum(axis=1) - 1.0)) > 1e-3      # what the rule protects against
    coef = KS.affine_coefficients(np, KS.affine_sums(np, U, V, spec.x_star, spec.theta, F)[0], alpha)
    for k, a in enumerate(lams[:2]):
        for q in range(3):
            np.testing.assert_allclose(coef[3:, q] @ [1.0, a, a * a], got[q][k, 3:], rtol=1e-9)
