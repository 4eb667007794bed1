"""The numba CPU engine against the reference engine, trajectory by trajectory.

Tolerances. In float64 the two engines evaluate the same arithmetic in a different
order (and least squares under common random numbers through the affine form of
docs/theory.md §5.1), so records agree to rounding: |Δ| ≤ 1e-9·|r| + 1e-12·s, with s the
largest value of that record over the trajectory (the absolute part covers records
that converge to 0, e.g. ‖x_t − θ‖² at λ = 1, where only the rounding floor
ε·s remains). In float32 the iterate itself carries ε₃₂ ≈ 1.2e-7 relative error
per step; the contracting dynamics keep it from growing, and records agree with
float64 to |Δ| ≤ 2e-3·|r| + 1e-4·s (deep linear: 1e-2·|r| + 1e-3·s, its flat
rotation directions do not contract).
"""
import dataclasses

import numpy as np
import pytest

pytest.importorskip("numba")

import kdsim  # noqa: E402
from kdsim import rng  # noqa: E402
from kdsim.engines import BACKENDS, get_engine, numba_cpu, reference  # noqa: E402
from kdsim.engines import driver  # noqa: E402
from kdsim import memory as memplan  # noqa: E402
from kdsim.moments import RunningMoments  # noqa: E402
from kdsim.plan import guard_limit  # noqa: E402
from kdsim.simulate import warmup  # noqa: E402
from kdsim.engines._kernels_ls import FASTMATH  # noqa: E402
from kdsim.estimators import ESTIMATORS  # noqa: E402
from kdsim.results import RECORDS, SimResult  # noqa: E402
from kdsim.simulate import make_plan  # noqa: E402

from engine_helpers import assert_records_close as _records_close, ls_problem, ls_reference_cases  # noqa: E402
from engine_helpers import coefficients_of, last_timing, run_arrays  # noqa: E402,F401

ESTS = list(ESTIMATORS)


def assert_records_close(got, want, rtol=1e-9, scale_tol=1e-12):
    """The shared record comparison at this module's tolerances (final iterates compared apart)."""
    _records_close(got, want, rtol=rtol, scale_tol=scale_tol, x_rtol=None)


def layered_problems():
    """Tiny instances of every non-least-squares family, with a teacher for each."""
    from kdsim.problems import synthetic as syn
    from kdsim.problems.deep_linear import DeepLinear
    r = np.random.default_rng(2)
    out = {
        "softmax": syn.softmax(n=15, d=2, n_classes=3, l2=0.1, bias=True, seed=1),
        "logistic": syn.logistic(n=15, d=3, l2=0.1, seed=1),
        "poisson": syn.poisson(n=15, d=3, l2=0.0, seed=1),
        "deep_linear": syn.deep_linear(n=15, d_in=3, d_out=2, hidden=(3, 2), seed=1),
    }
    out["deep_linear"] = DeepLinear(out["deep_linear"].A, out["deep_linear"].Y, hidden=(3, 2), l2=0.05)
    A = r.standard_normal((15, 3))
    out["deep_linear_softmax"] = DeepLinear(A, np.arange(15) % 3, hidden=(2,), loss="softmax", l2=0.1)
    teachers = {}
    for name, p in out.items():
        teachers[name] = p.solution() + 0.2 * r.standard_normal(p.dim)
    # an end-to-end map teacher (any architecture) for the deep linear softmax net
    p = out["deep_linear_softmax"]
    teachers["deep_linear_softmax"] = p.solution_map() + 0.2 * r.standard_normal((p.d_out, p.d_in))
    return out, teachers


@pytest.fixture(scope="module")
def layered():
    return layered_problems()


# --------------------------------------------------------------------------- rng twin
def test_rng_twin_equals_numpy():
    r = np.random.default_rng(0)
    cases = [(0, 0, 10, 1), (2**63 - 1, 12345, 1000, 7), (5, 3, 5, 5), (9, 2**40, 97, 96), (1, 1, 1, 1),
             (7, 0, 2, 1), (3, 999, 64, 64), (11, 5, 1000, 1000)]
    cases += [(int(r.integers(0, 2**62)), int(r.integers(0, 2**40)), int(n), int(r.integers(1, n + 1)))
              for n in r.integers(1, 300, size=40)]
    streams = np.concatenate([np.arange(60, dtype=np.uint64), rng.stream_ids(30, 3, False).ravel()])
    for seed, step, n, b in cases:
        want = rng.minibatch_indices(seed, streams, step, n, b)
        got = rng.minibatch_indices_nb(seed, streams, step, n, b)
        np.testing.assert_array_equal(got, want, err_msg=str((seed, step, n, b)))


def test_rng_twin_scalar_parts():
    z = np.array([0, 1, 2**63, 2**64 - 1, 0x9E3779B97F4A7C15], dtype=np.uint64)
    assert [int(rng.splitmix64_nb(v)) for v in z] == [int(v) for v in rng.splitmix64(z)]
    key = rng.step_keys(42, np.array([7], dtype=np.uint64), 99)[0]
    assert int(rng.step_key_nb(rng.stream_key_nb(rng.seed_key_nb(42), np.uint64(7)), 99)) == int(key)


# ------------------------------------------------------------------ least squares
@pytest.mark.parametrize("estimator", ESTS)
@pytest.mark.parametrize("b", [1, 3, 12])
@pytest.mark.parametrize("crn", [True, False])
def test_least_squares_matches_reference(estimator, b, crn):
    for p, plan in ls_reference_cases(estimator, b, crn):
        want = run_arrays(reference, p, plan)
        got = run_arrays(numba_cpu, p, plan)
        assert_records_close(got, want)
        np.testing.assert_allclose(got["x_final"], want["x_final"], rtol=1e-9, atol=1e-12)
        kernel = last_timing()["kernel"]
        assert kernel == ("ls_affine" if crn and estimator != "svrg" else "ls_traj")


@pytest.mark.parametrize("b,l2", [(1, 0.0), (1, 0.1), (2, 0.1)])
def test_affine_form_equals_per_trajectory_kernel_and_coefficients(b, l2):
    # at b = 1 the affine kernel takes steps in pairs (second residual through a_0ᵀa_1) and
    # single steps before a record 39 steps apart; with and without a ridge (c1 = 1 − γα, γc)
    p = ls_problem(l2)
    theta = p.solution() + np.array([0.5, -0.2, 0.1])
    lams = [0.0, 0.3, 0.7, 1.0, 1.5]
    for est in ("kd", "kd_loss", "corrected", "sgd"):
        plan = make_plan(p, theta, lams, 0.05, 400, 4, batch_size=b, estimator=est, record_every=39)
        runner = driver.prepare(p, plan, numba_cpu)
        assert runner.affine
        aff = runner.run_chunk(0, 4)[0]
        runner.affine = False
        per = runner.run_chunk(0, 4)[0]
        assert_records_close(aff, per, rtol=1e-11)
        coeffs = coefficients_of(numba_cpu, p, plan)
        lam = np.asarray(lams)[:, None, None] if est != "sgd" else np.zeros((len(lams), 1, 1))
        for name in RECORDS:
            c = coeffs[name]                                               # (S, R, 3)
            curve = c[None, ..., 0] + lam * c[None, ..., 1] + lam**2 * c[None, ..., 2]
            np.testing.assert_allclose(curve, aff[name], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("steps,record_every", [(1, 1), (2, 2), (3, 3), (3, 1), (5, 2)])
def test_affine_pairs_at_the_smallest_step_counts(steps, record_every):
    # batch 1: a lone step, one pair, a pair and a lone step, records at every step; and a
    # one-sample problem, where both rows of a pair are the same (a_0ᵀa_1 = ‖a‖²)
    one = kdsim.LeastSquares(np.array([[1.0, -2.0, 0.5]]), np.array([0.3]), l2=0.1)
    for p in (ls_problem(0.1), one):
        theta = np.array([0.4, -0.1, 0.2])
        plan = make_plan(p, theta, [0.0, 0.6, 1.0], 0.05, steps, 3, estimator="kd",
                         record_every=record_every)
        runner = driver.prepare(p, plan, numba_cpu)
        aff = runner.run_chunk(0, 3)[0]
        runner.affine = False
        per = runner.run_chunk(0, 3)[0]
        assert_records_close(aff, per, rtol=1e-11)
        np.testing.assert_allclose(aff["x_final"], per["x_final"], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("n,d", [(40, 21), (10, 19)])
def test_affine_records_with_several_lane_chunks_match_reference(n, d):
    # d > 16: the records' triangular product spans several 8-lane chunks of F, with a
    # partial last chunk; n < d gives an upper-trapezoidal F (m = n rows) with a ridge
    r = np.random.default_rng(n + d)
    A = r.standard_normal((n, d))
    p = kdsim.LeastSquares(A, A @ r.standard_normal(d) + 0.3 * r.standard_normal(n), l2=0.05)
    assert p.gram_factor().shape == (min(n, d), d)
    theta = p.solution() + 0.3 * r.standard_normal(d)
    for b in (1, 3):
        plan = make_plan(p, theta, [0.0, 0.4, 1.0], 0.02, 200, 11, batch_size=b, estimator="kd",
                         record_every=7)
        got = run_arrays(numba_cpu, p, plan)
        assert last_timing()["kernel"] == "ls_affine"
        assert_records_close(got, run_arrays(reference, p, plan))


def test_claim2_machine_precision_survives_affine_form():
    # θ = x*, λ = 1: noise-free linear convergence to x*; the affine records must reach the
    # rounding floor as the reference does (no cancellation from the quadratic's coefficients).
    p = ls_problem()
    plan = make_plan(p, p.solution(), [0.0, 1.0], 0.1, 10000, 4, record_every=1000)
    got = run_arrays(numba_cpu, p, plan)
    assert last_timing()["kernel"] == "ls_affine"
    assert got["dist2_opt"][1, :, -1].max() < 1e-26
    assert got["dist2_opt"][0, :, -1].min() > 1e-6


# ------------------------------------------------------ softmax, GLMs, deep linear
@pytest.mark.parametrize("name", ["softmax", "logistic", "poisson", "deep_linear", "deep_linear_softmax"])
@pytest.mark.parametrize("estimator", ESTS)
def test_layered_families_match_reference(layered, name, estimator):
    problems, teachers = layered
    p, theta = problems[name], teachers[name]
    x0 = p.default_x0() + 0.1 * np.random.default_rng(4).standard_normal(p.dim)
    for b in (1, 3, 4, p.n):              # n = 15: b = 4 leaves a partial last snapshot block
        plan = make_plan(p, theta, [0.0, 0.5, 1.0], 0.05, 200, 2, batch_size=b, estimator=estimator,
                         record_every=20, seed=9, x0=x0, svrg_period=6)
        want = run_arrays(reference, p, plan)
        got = run_arrays(numba_cpu, p, plan)
        assert_records_close(got, want)
        np.testing.assert_allclose(got["x_final"], want["x_final"], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("estimator", ["kd", "svrg"])
def test_layered_minibatch_larger_than_sample_block(estimator):
    # batches (and SVRG's full gradient) go through the layers SAMPLE_BLOCK samples at a time:
    # b = n = 70 and b = 33 take two and three blocks, the last partial
    from kdsim.engines._kernels_layered import SAMPLE_BLOCK
    from kdsim.problems import synthetic as syn
    from kdsim.problems.deep_linear import DeepLinear
    r = np.random.default_rng(5)
    soft = syn.softmax(n=70, d=3, n_classes=3, l2=0.1, bias=True, seed=2)
    deep = DeepLinear(r.standard_normal((70, 3)), r.standard_normal((70, 2)), hidden=(3,), l2=0.05)
    for p in (soft, deep):
        theta = p.solution() + 0.2 * r.standard_normal(p.dim)
        for b in (33, p.n):
            assert b > SAMPLE_BLOCK
            plan = make_plan(p, theta, [0.0, 1.0], 0.05, 60, 2, batch_size=b, estimator=estimator,
                             record_every=20, svrg_period=7)
            want = run_arrays(reference, p, plan)
            got = run_arrays(numba_cpu, p, plan)
            assert_records_close(got, want)
            np.testing.assert_allclose(got["x_final"], want["x_final"], rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------- float32
def _float32_case(p, theta, crn, rtol, scale_tol, b=3, record_every=40):
    plan = make_plan(p, theta, [0.0, 0.5, 1.0], 0.05, 400, 3, batch_size=b, estimator="kd",
                     record_every=record_every, common_random_numbers=crn)
    f64 = run_arrays(numba_cpu, p, plan)
    f32 = run_arrays(numba_cpu, p, plan, dtype="float32")
    assert last_timing()["dtype"] == "float32"
    assert_records_close(f32, f64, rtol=rtol, scale_tol=scale_tol)
    assert f32["x_final"].dtype == np.float64


@pytest.mark.parametrize("crn", [True, False])
@pytest.mark.parametrize("b", [1, 3])
def test_float32_close_to_float64_least_squares(crn, b):
    # b = 1 with common random numbers: the paired steps in float32 (odd record interval)
    p = ls_problem(0.1)
    _float32_case(p, p.solution() + 0.2, crn, 2e-3, 1e-4, b=b, record_every=39)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["softmax", "logistic", "poisson", "deep_linear"])
def test_float32_close_to_float64_layered(layered, name):
    problems, teachers = layered
    tol = (1e-2, 1e-3) if name.startswith("deep") else (2e-3, 1e-4)
    _float32_case(problems[name], teachers[name], False, *tol)


def test_dtype_from_plan_field_and_validation():
    p = ls_problem()
    plan = make_plan(p, p.solution(), [0.5], 0.05, 20, 2)
    run_arrays(numba_cpu, p, dataclasses.replace(plan, dtype="float32"))
    assert last_timing()["dtype"] == "float32"
    run_arrays(numba_cpu, p, plan)
    assert last_timing()["dtype"] == "float64"
    run_arrays(numba_cpu, p, plan, dtype="float32")                # the option overrides the plan
    assert last_timing()["dtype"] == "float32"
    with pytest.raises(ValueError, match="dtype"):
        run_arrays(numba_cpu, p, plan, dtype="float16")


# ---------------------------------------------------------------------- divergence
@pytest.mark.parametrize("dtype,big", [("float64", 1e300), ("float32", 1e30)])
def test_divergence_per_trajectory(dtype, big, layered):
    # λ = big makes only those trajectories blow up (‖x‖² beyond 1e100, or beyond the
    # float32 range); λ = 0 stays finite. fastmath must not remove the guard.
    problems, teachers = layered
    cases = [(ls_problem(), None, True), (ls_problem(), None, False),
             (problems["softmax"], teachers["softmax"], False)]
    for p, theta, crn in cases:
        theta = p.solution() + 1.0 if theta is None else theta
        plan = make_plan(p, theta, [0.0, big], 0.01, 30, 3, common_random_numbers=crn)
        got = run_arrays(numba_cpu, p, plan, dtype=dtype)
        assert not (got["diverged_step"][0] >= 0).any()
        assert (got["diverged_step"][1] > 0).all()
        assert np.isnan(got["x_final"][1]).all() and np.isfinite(got["x_final"][0]).all()
        res = SimResult(lams=plan.lams, steps=plan.record_steps, **got)
        for name in RECORDS:
            assert np.all(np.isfinite(res.mean(name)[0]))
        if dtype == "float64":
            want = run_arrays(reference, p, plan)
            np.testing.assert_array_equal(got["diverged_step"], want["diverged_step"])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_divergence_from_step_size_matches_reference(dtype):
    p = ls_problem()
    step = 12.0 / p.sample_smoothness().max()
    for crn in (True, False):
        plan = make_plan(p, p.solution(), [0.0, 1.0], step, 2000, 4, estimator="kd",
                         common_random_numbers=crn, record_every=50)
        got = run_arrays(numba_cpu, p, plan, dtype=dtype)
        assert (got["diverged_step"] > 0).all()
        if dtype == "float64":
            np.testing.assert_array_equal(got["diverged_step"], run_arrays(reference, p, plan)["diverged_step"])
        else:   # float32 overflows ‖x‖² (≈3.4e38) before 1e100: it is flagged no later
            assert (got["diverged_step"] <= run_arrays(reference, p, plan)["diverged_step"]).all()


@pytest.mark.parametrize("b,l2,estimator,factor", [(1, 0.0, "kd", 6.0), (1, 0.1, "corrected", 8.0),
                                                    (3, 0.0, "kd_loss", 4.0), (2, 0.1, "sgd", 6.0)])
def test_affine_divergence_at_many_steps_matches_reference(b, l2, estimator, factor):
    # a step a little beyond stability: trajectories cross the limit slowly, each seed and λ
    # at its own step, long after the first; the affine kernel tests exactly only when its
    # running norm bound could reach the limit, so the steps must equal the reference's.
    p = ls_problem(l2)
    step = factor * b / p.sample_smoothness().max()
    plan = make_plan(p, p.solution() + 0.5, [0.0, 0.7, 3.0], step, 4000, 6, batch_size=b,
                     estimator=estimator, record_every=100)
    got = run_arrays(numba_cpu, p, plan)
    assert last_timing()["kernel"] == "ls_affine"
    want = run_arrays(reference, p, plan)
    assert (want["diverged_step"] > 50).all() and len(np.unique(want["diverged_step"])) > 3
    assert_records_close(got, want)


def test_affine_records_quadratic_and_direct_paths_agree():
    # records come from their quadratic in λ unless cancellation could cost more than
    # QUAD_RECORD_RTOL; then directly. Near x* (λ = 1, θ = x*) the direct path is taken and the
    # records keep digits the quadratic would lose; far from it both equal the reference.
    from kdsim.engines import _kernels_ls as K
    assert 0 < K.QUAD_RECORD_RTOL <= 1e-12
    p = ls_problem()
    plan = make_plan(p, p.solution(), [0.0, 0.999, 1.0], 0.1, 10000, 5, record_every=1000)
    got = run_arrays(numba_cpu, p, plan)
    want = run_arrays(reference, p, plan)
    assert_records_close(got, want, rtol=1e-9, scale_tol=1e-15)
    coeffs = coefficients_of(numba_cpu, p, plan)["dist2_opt"][:, -1]          # (S, 3)
    quad = coeffs[:, 0] + coeffs[:, 1] + coeffs[:, 2]                            # λ = 1
    assert got["dist2_opt"][2, :, -1].max() < 1e-26 < np.abs(quad).max()


@pytest.mark.parametrize("m,d", [(1, 1), (3, 5), (8, 8), (9, 9), (16, 50), (50, 50), (17, 40), (61, 61)])
def test_lane_tiled_triangular_product_matches_numpy(m, d):
    # the records' F·(u − x*) and F·v: _tri_pairs on lane_factor(F) against numpy, for
    # upper-trapezoidal F (m <= d) of any size, including sizes that are not multiples of
    # the 8 lanes and entries below the diagonal that must be ignored (lane_factor zeroes them);
    # and each seed's ‖F e‖², ⟨F e, F v⟩, ‖F v‖² (rows 2g, 2g + 1 of W) in lane g
    from kdsim.engines import _kernels_ls as K
    rng_ = np.random.default_rng(m * 100 + d)
    F = rng_.standard_normal((m, d))                   # strict lower part is garbage on purpose
    G = K.SEED_BLOCK
    dw = -(-d // K.LANES) * K.LANES
    W = np.zeros((2 * G, dw))
    W[:, :d] = rng_.standard_normal((2 * G, d))
    Ft = K.lane_factor(F)
    assert Ft.shape == (d, -(-m // K.TILE_LANES) * K.TILE_LANES)
    out = np.full((W.shape[0], Ft.shape[1]), np.nan)
    Q = np.full((8 * G, K.LANES), np.nan)
    got = _tri_pairs_sums(Ft, W, out, Q)
    want = W[:, :d] @ np.triu(F).T
    np.testing.assert_allclose(out[:, :m], want, rtol=1e-13, atol=1e-13 * np.abs(want).max())
    assert (out[:, m:] == 0).all()
    fe, fv = want[0::2], want[1::2]
    sums = np.stack([(fe * fe).sum(1), (fe * fv).sum(1), (fv * fv).sum(1)])
    np.testing.assert_allclose(got, sums, rtol=1e-12, atol=1e-12 * np.abs(sums).max())


def test_records_block_against_numpy_with_an_infinite_v_at_lambda_zero():
    # one block's records against their definitions for every seed slot and λ (d = 11: a partial vector;
    # 6 active slots of 8); λ = 0 stays exact in a slot whose v overflowed after its other λ died
    from kdsim.engines import _kernels_ls as K
    r = np.random.default_rng(5)
    d, G, gn = 11, K.SEED_BLOCK, 6
    dp = -(-d // K.LANES) * K.LANES
    F = np.triu(r.standard_normal((d, d)))
    xstar, theta = r.standard_normal(d), r.standard_normal(d)
    acoef = np.array([0.0, 0.5, -1.5])
    U = np.zeros((G, dp))
    V = np.zeros((G, dp))
    U[:, :d] = xstar + r.standard_normal((G, d))
    V[:, :d] = r.standard_normal((G, d))
    V[2, :d] = np.inf
    alive = np.ones((G, 3), dtype=np.bool_)
    alive[2, 1:] = False
    active = np.zeros(G, dtype=np.bool_)
    active[:gn] = True
    alpha = 0.3
    W = np.zeros((2 * G, dp))
    Ft = K.lane_factor(F)
    FW = np.zeros((2 * G, Ft.shape[1]))
    part = np.zeros((8 * G, K.LANES))
    S, R = gn + 2, 3
    outs = [np.full((3, S, R), -1.0) for _ in range(3)]
    none = np.zeros((0, 0, 0))
    K._records_block(1, 2, gn, active, alive, U, V, True, acoef, xstar, theta, Ft, alpha, 1e-3, W, FW, part,
                     *outs, np.zeros((0, 0, 3, 3)), none, none)
    out_d, out_s, out_t = outs
    for g in range(gn):
        for k, a in enumerate(acoef):
            if not alive[g, k]:
                assert np.isnan(out_d[k, 1 + g, 2]) and np.isnan(out_s[k, 1 + g, 2])
                continue
            x = U[g, :d] + (a * V[g, :d] if a != 0 else 0.0)
            e = x - xstar
            want = (e @ e, 0.5 * (np.sum((F @ e) ** 2) + alpha * (e @ e)), (x - theta) @ (x - theta))
            np.testing.assert_allclose([out_d[k, 1 + g, 2], out_s[k, 1 + g, 2], out_t[k, 1 + g, 2]], want,
                                       rtol=1e-12)
    assert (out_d[:, 1 + gn:, :] == -1.0).all() and (out_d[:, :, [0, 1]] == -1.0).all()   # nothing else written


def _tri_pairs_sums(Ft, W, out, Q):
    """``_tri_pairs``'s three vectors of per-seed sums, as a (3, LANES) array."""
    from numba import njit

    from kdsim.engines._kernels_ls import SEED_BLOCK, _tri_pairs
    from kdsim.engines._simd import LANES, _vstore

    @njit
    def run(Ft, W, out, Q, res):
        s0, s1, s2 = _tri_pairs(Ft, W, out, Q, 5 * SEED_BLOCK)
        _vstore(res, 0, s0)
        _vstore(res, LANES, s1)
        _vstore(res, 2 * LANES, s2)
    res = np.empty((3, LANES))
    run(Ft, W, out, Q, res)
    return res


def test_fastmath_keeps_nan_and_inf_semantics():
    assert not FASTMATH & {"nnan", "ninf", "fast"}
    assert guard_limit("float64") == 1e100
    assert guard_limit("float32") == np.finfo(np.float32).max


# ------------------------------------------------------------------------ chunks
def test_chunked_equals_unchunked_exactly(layered):
    problems, teachers = layered
    p = ls_problem()
    cases = [(p, p.solution() + 0.3, True), (p, p.solution() + 0.3, False),
             (problems["softmax"], teachers["softmax"], True)]
    for prob, theta, crn in cases:
        plan = make_plan(prob, theta, [0.0, 0.5, 1.0], 0.05, 100, 7, batch_size=2, record_every=10,
                         common_random_numbers=crn)
        whole = run_arrays(numba_cpu, prob, plan)
        assert last_timing()["chunks"] == 1
        parts = run_arrays(numba_cpu, prob, plan, chunk_seeds=3)
        assert last_timing()["chunks"] == 3
        for k in whole:
            np.testing.assert_array_equal(parts[k], whole[k])
        # a memory budget that only fits two seeds per chunk gives the same numbers too
        runner = driver.prepare(prob, plan, numba_cpu)
        fixed = runner.fixed_bytes + memplan.output_bytes(3, 7, len(plan.record_steps), prob.dim)
        small = run_arrays(numba_cpu, prob, plan, memory_budget=fixed + 2 * driver.bytes_per_seed(runner, plan))
        assert last_timing()["chunk_seeds"] == 2
        for k in whole:
            np.testing.assert_array_equal(small[k], whole[k])


def test_plan_chunks_and_budget_errors():
    cp = memplan.plan_chunks(10, 100, fixed_bytes=50, budget=50 + 300)
    assert cp.chunk_seeds == 3 and cp.chunks == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert cp.peak_bytes <= 350
    with pytest.raises(MemoryError, match="memory_budget"):
        memplan.plan_chunks(10, 100, fixed_bytes=50, budget=120)
    assert memplan.plan_chunks(10, 100, budget=10**9, chunk_seeds=4).chunks[-1] == (8, 10)
    assert memplan.available_memory() > 0 and memplan.default_budget(0.1) > 0


def test_reduced_mode_matches_full_run():
    p = ls_problem()
    plan = make_plan(p, p.solution() + 0.3, [0.0, 0.5, 1e300], 0.05, 60, 11, record_every=10)
    full = run_arrays(numba_cpu, p, plan)
    red = run_arrays(numba_cpu, p, plan, reduce=True, chunk_seeds=4)
    assert last_timing()["chunks"] == 3
    res = SimResult(lams=plan.lams, steps=plan.record_steps, **full)
    alive = ~res.diverged
    np.testing.assert_array_equal(red["count"], alive.sum(axis=1))
    np.testing.assert_array_equal(red["diverged_step"], full["diverged_step"])
    for name in RECORDS:
        np.testing.assert_allclose(red["mean"][name], res.mean(name), rtol=1e-12)
        for k in range(2):
            want = np.var(full[name][k][alive[k]], axis=0, ddof=1)
            np.testing.assert_allclose(red["var"][name][k], want, rtol=1e-10, atol=1e-12 * want.max())
        assert np.isnan(red["mean"][name][2]).all() and np.isnan(red["var"][name][2]).all()


def test_running_moments_merge_is_exact():
    r = np.random.default_rng(0)
    vals = r.standard_normal((2, 50, 4)) * 1e3 + 1e6
    keep = r.random((2, 50)) < 0.8
    m = RunningMoments(2, 4)
    for s0 in range(0, 50, 7):
        m.add(vals[:, s0:s0 + 7], keep[:, s0:s0 + 7])
    mean, var, count = m.result()
    for k in range(2):
        np.testing.assert_allclose(mean[k], vals[k][keep[k]].mean(axis=0), rtol=1e-14)
        np.testing.assert_allclose(var[k], vals[k][keep[k]].var(axis=0, ddof=1), rtol=1e-9)
    np.testing.assert_array_equal(count, keep.sum(axis=1))


# ------------------------------------------------------------- registry and timing
def test_backend_registry_and_simulate():
    assert "numba" in BACKENDS and "auto" in BACKENDS
    assert get_engine("numba") is numba_cpu
    p = ls_problem()
    assert get_engine("auto", p) is numba_cpu
    with pytest.raises(ValueError, match="backend"):
        get_engine("tpu")
    a = kdsim.simulate(p, p.solution() + 0.2, [0.0, 0.5], 0.05, 50, 3, backend="numba", record_every=10)
    b = kdsim.simulate(p, p.solution() + 0.2, [0.0, 0.5], 0.05, 50, 3, backend="numpy", record_every=10)
    assert a.config["backend"] == "numba"
    np.testing.assert_allclose(a.dist2_opt, b.dist2_opt, rtol=1e-10)
    plan = make_plan(p, p.solution(), [0.5], 0.05, 10, 2)
    assert kdsim.engines.run(p, plan, "auto").timing["kernel"] == "ls_affine"
    assert a.timing["kernel"] == "ls_affine" and b.timing["engine"] == "numpy"


def test_unsupported_problem_raises_and_auto_falls_back():
    class Shifted(kdsim.LeastSquares):
        name = "shifted"
    p0 = ls_problem()
    p = Shifted(p0.A, p0.b)
    plan = make_plan(p, p.solution(), [0.5], 0.05, 10, 2)
    with pytest.raises(NotImplementedError, match="backend='numpy'"):
        run_arrays(numba_cpu, p, plan)
    with pytest.raises(NotImplementedError, match="backend='numpy'"):
        get_engine("numba", p)
    assert get_engine("auto", p) is reference
    out = kdsim.engines.run(p, plan, "auto").arrays
    np.testing.assert_array_equal(out["dist2_opt"], run_arrays(reference, p, plan)["dist2_opt"])


def test_timing_separates_compilation():
    p = ls_problem()
    plan = make_plan(p, p.solution(), [0.5, 1.0], 0.05, 100, 4)
    run_arrays(numba_cpu, p, plan)
    run_arrays(numba_cpu, p, plan)
    t = last_timing()
    assert t["compile_s"] >= 0 and t["run_s"] > 0 and t["total_s"] >= t["run_s"]
    assert t["compile_s"] < 0.5            # second call: nothing left to compile
    assert t["trajectory_steps"] == 2 * 4 * 100 and t["throughput"] > 0
    assert warmup("least_squares") >= 0
    with pytest.raises(ValueError, match="family"):
        warmup("svm")


@pytest.mark.parametrize("crn", [False, True])
def test_threads_give_identical_numbers(crn):
    # with common random numbers the affine kernel steps seeds in blocks of SEED_BLOCK;
    # 37 seeds split over 3 threads leave partial blocks, which must not change a number
    p = ls_problem()
    plan = make_plan(p, p.solution() + 0.1, [0.0, 1.0], 0.05, 80, 37, common_random_numbers=crn)
    try:
        numba_cpu.set_threads(1)
        one = run_arrays(numba_cpu, p, plan)
        numba_cpu.set_threads(3)
        three = run_arrays(numba_cpu, p, plan)
    finally:
        numba_cpu.set_threads(None)
    for k in one:
        np.testing.assert_array_equal(one[k], three[k])
    singles = [run_arrays(numba_cpu, p, plan.seed_range(s, s + 1))
               for s in (0, 8, 36)]
    for j, s in enumerate((0, 8, 36)):
        for k in one:
            np.testing.assert_array_equal(singles[j][k], one[k][:, s:s + 1])


@pytest.mark.parametrize("k", [8, 9, 10, 12, 13, 16, 17])
def test_softmax_kernel_on_many_classes_matches_reference(k):
    # the residual paths by class count: one vector (<= 8), two samples per pass with their last classes
    # packed into one exp (9 .. 12) or not (13 .. 16), the general path (17); the forward's blocks of
    # 5 rows (10 classes) and of 4; odd batches (a pass repeats its last sample) and a teacher term
    from kdsim.problems import synthetic as syn
    p = syn.softmax(n=40, d=3, n_classes=k, l2=0.1, bias=True, seed=k)
    theta = p.solution() + 0.3 * np.random.default_rng(k).standard_normal(p.dim)
    for b in (1, 3, 10):
        plan = make_plan(p, theta, [0.0, 0.5, 1.0], 0.2, 30, 3, batch_size=b, record_every=10, seed=1)
        got = run_arrays(numba_cpu, p, plan)
        want = run_arrays(reference, p, plan)
        assert_records_close(got, want)
        np.testing.assert_allclose(got["x_final"], want["x_final"], rtol=1e-9, atol=1e-12)



@pytest.mark.parametrize("hidden", [pytest.param((8,), marks=pytest.mark.slow), (3, 32),
                                    pytest.param((6,), marks=pytest.mark.slow)])
def test_ten_class_deep_linear_softmax_matches_reference(hidden):
    # a deep linear softmax net on ten classes: the last hidden width whole vectors (8) takes the output layer
    # and the residuals in one pass, after the hidden layers (batches of 8 and 16: the lanes path of the forward
    # stops one layer short), 6 the layer-by-layer path; SVRG and corrected KD add the snapshot's and the
    # teacher's full passes
    from kdsim.problems.deep_linear import DeepLinear
    r = np.random.default_rng(6)
    p = DeepLinear(r.standard_normal((40, 5)), np.arange(40) % 10, hidden=hidden, loss="softmax", l2=0.1)
    theta = p.solution_map() + 0.2 * r.standard_normal((p.d_out, p.d_in))
    for estimator in ("kd", "svrg", "corrected"):
        for b in (3, 8, 16):
            plan = make_plan(p, theta, [0.0, 0.5, 1.0], 0.1, 40, 2, batch_size=b, estimator=estimator,
                             record_every=10, seed=2, svrg_period=5)
            got = run_arrays(numba_cpu, p, plan)
            want = run_arrays(reference, p, plan)
            assert_records_close(got, want)
            np.testing.assert_allclose(got["x_final"], want["x_final"], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("l2, momentum", [(0.1, 0.0), (0.0, 0.0), (0.1, 0.5)])
def test_ten_class_softmax_steps_as_its_gradient_forms_matches_reference(l2, momentum):
    # ten classes on 30 features (+ bias, 32 padded): the output layer's gradient steps x block by block
    # (5 classes × 3 vectors, then the last vector), each copy of the step: ridge and uniform α (the teacher's
    # ridge term with l2 > 0), no α and no ridge (l2 = 0), momentum; b = 32 is one whole block of samples
    from kdsim.problems.softmax import SoftmaxRegression
    r = np.random.default_rng(4)
    p = SoftmaxRegression(r.standard_normal((300, 30)), r.integers(0, 10, 300), 10, bias=True, l2=l2)  # (not separable)
    theta = p.solution() + 0.3 * r.standard_normal(p.dim)
    for b in (3, 32):
        plan = make_plan(p, theta, [0.0, 0.5, 1.0], 0.05, 40, 2, batch_size=b, record_every=10, seed=3,
                         momentum=momentum)
        got = run_arrays(numba_cpu, p, plan)
        want = run_arrays(reference, p, plan)
        assert_records_close(got, want)
        np.testing.assert_allclose(got["x_final"], want["x_final"], rtol=1e-9, atol=1e-12)

def lanewise(fn, x):
    """fn (a vector function of ``_simd``'s vectors) applied to x, LANES elements at a time (x padded with 1s)."""
    from numba import njit

    from kdsim.engines._simd import LANES, _vload, _vstore

    @njit
    def run(x, out):
        for i in range(0, x.shape[0], LANES):
            _vstore(out, i, fn(_vload(x, i)))
    n = len(x)
    x = np.concatenate([x, np.ones(-n % LANES)])
    out = np.empty_like(x)
    run(x, out)
    return out[:n]


def test_vector_exp_within_one_ulp_of_numpy():
    # the kernels' vectorised exp (softmax residuals, records): within one ulp of np.exp over the float64
    # range, 0 below the smallest normal result, inf above the largest, NaN kept
    from kdsim.engines._simd import _vexp
    r = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-708.0, 709.0, 40000), r.uniform(-5.0, 5.0, 40000), r.uniform(-0.35, 0.35, 40000),
                        [-1000.0, -709.0, 710.0, 1000.0, np.nan, 0.0, -0.0, 1e-300]])
    out = lanewise(_vexp, x)
    with np.errstate(over="ignore"):
        want = np.exp(x)
    normal = (want >= np.finfo(float).tiny) & np.isfinite(want)
    assert (np.abs(out[normal] - want[normal]) <= np.spacing(want[normal])).all()
    assert (out[want < np.finfo(float).tiny] == 0.0).all()
    assert np.isinf(out[np.isinf(want)]).all() and np.isnan(out[np.isnan(x)]).all()


def test_vector_log1p_of_the_taylor_branch_within_two_ulp():
    # softmax records' log1p(w) on their Taylor branch (0 <= w <= e − 2), vectorised as 2·atanh(w/(2 + w)):
    # against numpy's log1p in ulps over the range, tiny w (records near x*) and the end point included
    from kdsim.engines._kernels_records import _vlog1p_taylor_branch
    w = np.concatenate([np.linspace(0.0, np.e - 2.0, 4000), np.geomspace(1e-300, 1e-3, 4000)])
    out = lanewise(_vlog1p_taylor_branch, w)
    want = np.log1p(w)
    ulps = np.abs(out - want) / np.spacing(np.maximum(want, np.finfo(float).tiny))
    assert out[0] == 0.0 and ulps.max() <= 2.0, ulps.max()


def test_vector_log_within_two_ulp_of_numpy():
    # the vectorised log of softmax records' log-sum-exp branch: within two ulp of np.log over the positive
    # normal numbers (the branch's sums lie in [1, K]; 1, 2, √2 and powers of 2 at the reduction's seams),
    # and its stated values outside: log 0 = −inf, log inf = inf, NaN for negative numbers and NaN
    from kdsim.engines._simd import _vlog
    r = np.random.default_rng(0)
    x = np.concatenate([np.linspace(1.0, 10.0, 8000), np.geomspace(np.finfo(float).tiny, 1e308, 8000),
                        r.uniform(0.5, 2.0, 8000), np.nextafter(np.sqrt(2.0), [0.0, 3.0]),
                        [1.0, 2.0, 0.5, 2.0 ** -1000]])
    out = lanewise(_vlog, x)
    want = np.log(x)
    ulps = np.abs(out - want) / np.spacing(np.maximum(np.abs(want), np.finfo(float).tiny))
    assert ulps.max() <= 2.0, ulps.max()
    got = lanewise(_vlog, np.array([0.0, np.inf, -1.0, np.nan, -np.inf, 1.0]))
    assert got[0] == -np.inf and got[1] == np.inf and np.isnan(got[2:5]).all() and got[5] == 0.0


def test_softmax_subopt_kernel_equals_problem_formula():
    # the compiled records of softmax regression are the twin of SoftmaxRegression.suboptimality:
    # both branches (max |δ − c| <= 1: log1p of the Taylor form; > 1: log-sum-exp, also at |δ| ~ 1e18, where
    # the log-sum-exp's largest term must be exactly 1) and the point x* itself, where the value is 0 up to
    # rounding and both must stay >= -1e-15
    from kdsim.problems import synthetic as syn
    from kdsim.kernelspec import H_COEF as _H_COEF
    from kdsim.engines._kernels_records import softmax_subopt, subopt_inputs
    # (samples go in vectors of 8: n a multiple of it and not; classes even and odd)
    for n, k in ((41, 4), (40, 3)):
        p = syn.softmax(n=n, d=4, n_classes=k, l2=0.1, bias=True, seed=3)
        xs = p.solution()
        r = np.random.default_rng(0)
        X = np.vstack([xs, xs + 1e-9 * r.standard_normal((3, p.dim)), xs + 0.05 * r.standard_normal((4, p.dim)),
                       xs + 3.0 * r.standard_normal((4, p.dim)), xs + 1e18 * r.standard_normal((2, p.dim))])
        P, logP, g = p._at_optimum
        got = np.empty(len(X))
        softmax_subopt(0, len(X), X, xs, *subopt_inputs(p.A, P, logP), n, g, p.l2, _H_COEF, got)
        want = p.suboptimality(X)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-16)
        assert got.min() >= -1e-15 and abs(got[0]) < 1e-15
    # and the engine's records use it: numba and reference records of a run agree
    plan = make_plan(p, xs + 0.3, [0.0, 1.0], 0.1, 50, 3, record_every=10)
    fast = run_arrays(numba_cpu, p, plan)
    assert last_timing()["records_s"] > 0
    assert_records_close(fast, run_arrays(reference, p, plan))


def test_layered_kernel_writes_every_saved_iterate(monkeypatch):
    # the layered kernel's saved iterates start uninitialised: it writes each one, x while the trajectory
    # is alive and NaN at the record steps after its divergence. Fill the buffer with a sentinel first: a
    # softmax run that diverges midway (γα = 5: the ridge term alone grows x fourfold a step) keeps its
    # iterates, which must equal the reference engine's
    from kdsim.problems import synthetic as syn
    sentinel = 12345.678
    real_empty = np.empty

    def filled(shape, *a, **k):
        out = real_empty(shape, *a, **k)
        if isinstance(shape, tuple) and len(shape) == 3 and out.dtype.kind == "f":
            out.fill(sentinel)
        return out
    monkeypatch.setattr(numba_cpu.np, "empty", filled)
    p = syn.softmax(n=40, d=3, n_classes=4, l2=0.1, bias=True, seed=2)
    plan = make_plan(p, p.solution() + 0.5, [0.0, 0.5], 50.0, 150, 3, batch_size=4, record_every=10, seed=1,
                     keep_iterates=True)
    got = run_arrays(numba_cpu, p, plan)
    monkeypatch.setattr(numba_cpu.np, "empty", real_empty)
    want = run_arrays(reference, p, plan)
    assert ((want["diverged_step"] > 20) & (want["diverged_step"] < 140)).all()
    np.testing.assert_array_equal(got["diverged_step"], want["diverged_step"])
    assert not (got["iterates"] == sentinel).any() and np.isnan(got["iterates"][..., -1, :]).all()
    np.testing.assert_allclose(got["iterates"], want["iterates"], rtol=1e-9, atol=1e-12)


def test_affine_kernel_writes_every_record_entry(monkeypatch):
    # ls_affine's record buffers start uninitialised: the kernel must write every entry (a
    # value, or NaN once a λ or the whole seed stopped). Fill them with a sentinel first and
    # check that none survives: normal runs, a λ that diverges mid-run, every λ diverging
    # (the block stops early) and seeds left to the per-trajectory kernel.
    sentinel = 12345.678
    orig = numba_cpu._LeastSquaresRunner._affine_buffers

    def filled(self, ns, want_coeffs):
        bufs = orig(self, ns, want_coeffs)
        for o in bufs[0]:
            o.fill(sentinel)
        return bufs

    monkeypatch.setattr(numba_cpu._LeastSquaresRunner, "_affine_buffers", filled)
    p = ls_problem()
    big_step = 8.0 / p.sample_smoothness().max()
    cases = [([0.0, 0.5, 1.0], 0.05), ([0.0, 0.7, 3.0], big_step), ([1e60, 2e60], 0.05), ([0.5, 1e60], 0.05)]
    for lams, step in cases:
        plan = make_plan(p, p.solution() + 0.5, lams, step, 3000, 11, record_every=100)
        got = run_arrays(numba_cpu, p, plan)
        for name in RECORDS:
            assert not np.any(got[name] == sentinel), (lams, name)
        assert_records_close(got, run_arrays(reference, p, plan))


_OTHER_TARGET = """
import sys, numpy as np, kdsim
from kdsim.problems import MLP, synthetic
from kdsim.simulate import make_plan
from kdsim.engines import driver, numba_cpu, reference
r = np.random.default_rng(0)
# (ten classes on 16 inputs and 16-wide linear layers: the blocks of sums narrower without AVX-512 run)
for p in (synthetic.softmax(n=30, d=9, n_classes=5, l2=0.1),
          synthetic.softmax(n=40, d=16, n_classes=10, l2=0.1),
          kdsim.DeepLinear(r.standard_normal((30, 5)), r.standard_normal((30, 3)), hidden=(4,), l2=0.1),
          kdsim.DeepLinear(r.standard_normal((40, 16)), r.standard_normal((40, 16)), hidden=(16, 16), l2=0.1),
          MLP(r.standard_normal((30, 9)), np.arange(30) % 3, hidden=(6,), activation="relu", l2=0.1)):
    theta = p.default_x0() + 0.1 if isinstance(p, (kdsim.DeepLinear, MLP)) else p.solution() + 0.2
    plan = make_plan(p, theta, [0.0, 0.5], 0.05, 30, 3, batch_size=8, record_every=10, seed=1, x0=p.default_x0())
    got = driver.run(p, plan, numba_cpu, growth_limit=None).arrays
    want = driver.run(p, plan, reference, growth_limit=None).arrays
    np.testing.assert_allclose(got["x_final"], want["x_final"], rtol=1e-9, atol=1e-12)
# least squares in the affine form: its records come from explicit vectors too (d = 11: a partial vector)
p = synthetic.least_squares(n=40, d=11, l2=0.1)
for b in (1, 4):
    plan = make_plan(p, p.solution() + 0.2, [0.0, 0.5, 1.0], 0.05, 40, 9, batch_size=b, record_every=5, seed=1)
    got = driver.run(p, plan, numba_cpu, growth_limit=None).arrays
    want = driver.run(p, plan, reference, growth_limit=None).arrays
    for name in ("dist2_opt", "subopt", "dist2_teacher"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-14)
print("ok")
"""


@pytest.mark.slow                  # about a minute per target: the kernels compile from scratch for it
@pytest.mark.parametrize("cpu", ["haswell", "x86-64"])
def test_layered_kernel_on_cpus_without_avx512(cpu, tmp_path):
    """The explicit 8-lane vectors (layered kernel, least-squares records) lower to narrower registers
    where AVX-512 is missing, and the layered kernel takes narrower blocks of sums there
    (``_kernels_layered.WIDE`` false): compiled for an AVX2 machine and for generic x86-64 (numba's target
    override, fresh cache), the kernels still match the reference."""
    import os
    import subprocess
    import sys
    env = {**os.environ, "NUMBA_CPU_NAME": cpu, "NUMBA_CPU_FEATURES": "", "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", _OTHER_TARGET], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout[-2000:] + out.stderr[-3000:]


# ------------------------------------------------------------- the intercept as a bias
def _intercept_problems():
    """Problems whose last input is an intercept column and whose other inputs are whole vectors of the kernel
    (d = LANES and 2·LANES features + the ones column): the runner gives the column's weights to the kernel
    as the layer's bias."""
    from kdsim.engines._simd import LANES
    from kdsim.problems.glm import LogisticRegression, PoissonRegression
    from kdsim.problems.softmax import SoftmaxRegression
    r = np.random.default_rng(11)
    A = r.standard_normal((60, 2 * LANES))
    return {
        "softmax10": SoftmaxRegression(A, r.integers(0, 10, 60), 10, bias=True, l2=0.1),
        "softmax3_l2_bias_off": SoftmaxRegression(A[:, :LANES], r.integers(0, 3, 60), 3, bias=True, l2=0.1,
                                                  l2_bias=False),
        "logistic": LogisticRegression(A[:, :LANES], (r.random(60) < 0.4).astype(float), l2=0.1, bias=True),
        "poisson": PoissonRegression(0.3 * A[:, :LANES], r.poisson(1.0, 60).astype(float), l2=0.05, bias=True),
    }


@pytest.mark.parametrize("name", ["softmax10", "softmax3_l2_bias_off", "logistic", "poisson"])
def test_intercept_column_runs_as_the_layer_bias_and_matches_reference(name):
    # the fold is taken (its layout checked), and every path that reads the bias agrees with the reference:
    # the fused step (kd, b = 3 and 24), the teacher's full term through Gt's bias column (corrected), the
    # snapshot's full gradient (svrg), momentum, reshuffled epochs, α not uniform (l2_bias=False)
    p = _intercept_problems()[name]
    theta = p.solution() + 0.3 * np.random.default_rng(12).standard_normal(p.dim)
    cases = [("kd", 3, 0.0, "iid"), ("kd", 24, 0.5, "reshuffle"), ("corrected", 5, 0.0, "iid"),
             ("svrg", 4, 0.0, "iid")]
    for estimator, b, momentum, sampling in cases:
        plan = make_plan(p, theta, [0.0, 0.5, 1.0], 0.05, 30, 2, batch_size=b, estimator=estimator,
                         record_every=10, seed=4, svrg_period=6, momentum=momentum, sampling=sampling)
        runner = driver.prepare(p, plan, numba_cpu)
        assert runner.fold
        d0 = p.A.shape[1]
        assert runner.A.shape[1] == d0 - 1 and np.array_equal(runner.A[:, :], p.A[:, :-1])
        m = runner.dims[1]
        assert list(runner.boffs) == [m * (d0 - 1), m * d0]
        # the kernel's x is a permutation of the problem's: its bias block holds the intercept weights
        x = np.arange(p.dim, dtype=float)
        xk = np.empty(p.dim)
        xk[runner.keep] = x
        np.testing.assert_array_equal(xk[runner.boffs[0]:], x.reshape(m, d0)[:, -1])
        got = run_arrays(numba_cpu, p, plan)
        want = run_arrays(reference, p, plan)
        assert_records_close(got, want)
        np.testing.assert_allclose(got["x_final"], want["x_final"], rtol=1e-9, atol=1e-12)


def test_intercept_fold_needs_a_column_of_ones_and_one_layer():
    # a last column that is not all ones, inputs that are not whole vectors, or several layers: no fold
    from kdsim.engines._simd import LANES
    from kdsim.problems.deep_linear import DeepLinear
    from kdsim.problems.softmax import SoftmaxRegression
    r = np.random.default_rng(13)
    A = np.hstack([r.standard_normal((40, LANES)), np.ones((40, 1))])
    y = r.integers(0, 10, 40)
    B = A.copy()
    B[7, -1] = 1.5
    almost = SoftmaxRegression(B, y, 10, l2=0.1)
    ragged = SoftmaxRegression(A[:, :LANES - 1].copy(), y, 10, bias=True, l2=0.1)
    deep = DeepLinear(A, y, hidden=(8,), loss="softmax", l2=0.1)
    for p in (almost, ragged, deep):
        theta = p.solution() + 0.2 * r.standard_normal(p.dim)
        plan = make_plan(p, theta, [0.0, 1.0], 0.05, 20, 2, batch_size=4, record_every=10)
        assert not driver.prepare(p, plan, numba_cpu).fold
        got = run_arrays(numba_cpu, p, plan)
        want = run_arrays(reference, p, plan)
        assert_records_close(got, want)


def test_intercept_fold_with_the_tempered_kd_loss_matches_reference():
    # the tempered loss keeps the logits stored (layer by layer, the bias added in the forward pass)
    p = _intercept_problems()["softmax10"]
    theta = p.solution() + 0.3 * np.random.default_rng(14).standard_normal(p.dim)
    plan = make_plan(p, theta, [0.0, 0.5, 1.0], 0.05, 30, 2, batch_size=6, estimator="kd_loss", record_every=10,
                     temperature=2.0)
    assert driver.prepare(p, plan, numba_cpu).fold
    got = run_arrays(numba_cpu, p, plan)
    want = run_arrays(reference, p, plan)
    assert_records_close(got, want)
    np.testing.assert_allclose(got["x_final"], want["x_final"], rtol=1e-9, atol=1e-12)


def test_vector_exp_safe_bounds_per_dtype():
    # |z| <= 700 (float64) or 80 (float32) in every lane, NaN failing: the softmax's unshifted branch
    from numba import njit

    from kdsim.engines._simd import EXP_SAFE, LANES, _vexp_safe, _vload

    @njit
    def safe(x):
        return _vexp_safe(_vload(x, 0))
    for dt, bits in ((np.float64, 64), (np.float32, 32)):
        c = EXP_SAFE[bits]
        base = np.linspace(-c, c, LANES).astype(dt)
        assert safe(base)
        for bad in (np.nextafter(dt(c), dt(np.inf)), -np.nextafter(dt(c), dt(np.inf)), np.nan):
            for lane in (0, LANES - 1):
                x = base.copy()
                x[lane] = bad
                assert not safe(x)
    # the bound's promise: LANES·2 exps of magnitude c, their sum and its reciprocal are normal numbers
    for dt, bits in ((np.float64, 64), (np.float32, 32)):
        c = EXP_SAFE[bits]
        with np.errstate(all="raise"):
            big = dt(2 * LANES) * np.exp(dt(c))
            assert np.isfinite(big) and dt(1) / big >= np.finfo(dt).tiny and np.exp(dt(-c)) >= np.finfo(dt).tiny


@pytest.mark.parametrize("scale", [1.0, 400.0])
def test_ten_class_softmax_large_logits_take_the_shifted_branch_and_match_reference(scale):
    # logits beyond ±700 (inputs × 400 from a start far from 0) take the softmax's shift by the max; both
    # branches agree with the reference's stable softmax
    from kdsim.engines._simd import LANES
    from kdsim.problems.softmax import SoftmaxRegression
    r = np.random.default_rng(15)
    p = SoftmaxRegression(scale * r.standard_normal((50, 2 * LANES)), r.integers(0, 10, 50), 10, bias=True, l2=0.1)
    theta = p.solution() + 0.3 * r.standard_normal(p.dim)
    x0 = 0.5 * r.standard_normal(p.dim)
    z = p.A @ x0.reshape(10, -1).T
    assert (np.abs(z).max() > 700) == (scale > 1)
    plan = make_plan(p, theta, [0.0, 0.5, 1.0], 1e-6, 20, 2, batch_size=4, record_every=10, x0=x0)
    got = run_arrays(numba_cpu, p, plan)
    want = run_arrays(reference, p, plan)
    assert_records_close(got, want)
    np.testing.assert_allclose(got["x_final"], want["x_final"], rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_intercept_fold_in_float32_close_to_float64():
    # float32 takes the same fold and the softmax's float32 bound (|z| <= 80 unshifted); slow: the layered
    # kernel's float32 compile
    p = _intercept_problems()["softmax10"]
    _float32_case(p, p.solution() + 0.2, False, 2e-3, 1e-4)
