"""The array-module engine (kdsim.engines.batched) with xp = numpy against the reference engine.

The GPU path (backend "cupy") is this engine with xp = cupy, so these tests check its
logic on the CPU: the index stream, every estimator on every supported problem, the
affine form of least squares, divergence, chunking and float32.

Tolerances. In float64 the engines evaluate the same arithmetic in a different order
(combined residuals, batched products, and for least squares under common random
numbers the affine form x_t(λ) = u_t + λ v_t of docs/theory.md §5.1), so records agree to
rounding: |Δ| ≤ 1e-10·|r| + 1e-12·s, with s the largest value of that record over the
trajectory. The absolute part covers records that converge to 0 (‖x_t − θ‖² at λ = 1
with kd, whose noise-free dynamics contract onto θ): there both engines sit at the
rounding floor ε·s and differ by O(1) relative. Final iterates: rtol 1e-10, atol 1e-12.
In float32 each step rounds the iterate to ε₃₂ ≈ 6e-8 relative; the contracting
dynamics keep that from growing, and records agree with float64 within
|Δ| ≤ 2e-4·|r| + 1e-5·s (measured ≤ 7e-5 relative on these instances).
"""
import numpy as np
import pytest

import kdsim
from kdsim import rng
from kdsim import memory
from kdsim.engines import batched, driver, reference
from kdsim.estimators import ESTIMATORS
from kdsim.problems import synthetic as syn
from kdsim.problems.deep_linear import DeepLinear
from kdsim.results import RECORDS, SimResult
from kdsim.simulate import make_plan

from engine_helpers import assert_records_close, ls_problem, ls_reference_cases  # noqa: E402
from engine_helpers import coefficients_of, last_timing, run_arrays  # noqa: E402,F401

ESTS = list(ESTIMATORS)


NONLINEAR = ["softmax", "logistic", "poisson", "deep_linear", "deep_linear_softmax", "deep_linear_map"]


@pytest.fixture(scope="module")
def families():
    """Tiny instances of every family besides least squares, each with an imperfect teacher.

    Deep linear: squared loss with a ridge and two hidden layers; softmax loss with a ridge;
    and the softmax net with an end-to-end map teacher (any architecture).
    """
    r = np.random.default_rng(2)
    dl = syn.deep_linear(n=15, d_in=3, d_out=2, hidden=(3, 2), seed=1)
    out = {
        "softmax": syn.softmax(n=15, d=2, n_classes=3, l2=0.1, bias=True, seed=1),
        "logistic": syn.logistic(n=15, d=3, l2=0.1, seed=1),
        "poisson": syn.poisson(n=15, d=3, l2=0.0, seed=1),
        "deep_linear": DeepLinear(dl.A, dl.Y, hidden=(3, 2), l2=0.05),
        "deep_linear_softmax": DeepLinear(r.standard_normal((15, 3)), np.arange(15) % 3, hidden=(2,),
                                          loss="softmax", l2=0.1),
    }
    res = {name: (p, p.solution() + 0.2 * r.standard_normal(p.dim)) for name, p in out.items()}
    p = out["deep_linear_softmax"]
    res["deep_linear_map"] = (p, p.solution_map() + 0.2 * r.standard_normal((p.d_out, p.d_in)))
    return res


# --------------------------------------------------------------------------- index stream
def test_minibatch_membership_tests_agree():
    # the array-module Floyd draw (kdsim.rng, used by this engine on numpy and CuPy) has two
    # membership tests, a comparison with the earlier picks and a scratch array: same picks
    r = np.random.default_rng(0)
    cases = [(0, 0, 10, 1), (2**63 - 1, 12345, 1000, 7), (5, 3, 5, 5), (9, 2**40, 97, 96), (1, 1, 1, 1),
             (7, 0, 2, 1), (3, 999, 64, 64), (11, 5, 1000, 1000), (4, 8, 300, 33), (4, 8, 300, 299),
             (6, 2, 120, 40), (8, 1, 33, 32)]
    cases += [(int(r.integers(0, 2**62)), int(r.integers(0, 2**40)), int(n), int(r.integers(1, n + 1)))
              for n in r.integers(1, 300, size=40)]
    streams = np.concatenate([np.arange(60, dtype=np.uint64), rng.stream_ids(30, 3, False).ravel()])
    for seed, step, n, b in cases:
        want = rng.minibatch_indices_nb(seed, streams, step, n, b)          # the numba twin
        np.testing.assert_array_equal(rng.minibatch_indices(seed, streams, step, n, b), want,
                                      err_msg=str((seed, step, n, b)))
        skeys = rng.stream_keys(seed, streams)
        by_compare = rng.minibatch_from_keys(skeys, step, n, b)
        taken = np.zeros((len(streams), n), dtype=bool)
        by_scratch = rng.minibatch_from_keys(skeys, step, n, b, taken=taken)
        np.testing.assert_array_equal(by_compare, want)
        np.testing.assert_array_equal(by_scratch, want)
        assert not taken.any()          # the scratch is left clean for the next step


# --------------------------------------------------------------------------- least squares
@pytest.mark.parametrize("estimator", ESTS)
@pytest.mark.parametrize("b", [1, 3, 12])
@pytest.mark.parametrize("crn", [True, False])
def test_least_squares_matches_reference(estimator, b, crn):
    for p, plan in ls_reference_cases(estimator, b, crn):
        want = run_arrays(reference, p, plan)
        got = run_arrays(batched, p, plan)
        assert_records_close(got, want)
        assert last_timing()["kernel"] == ("affine" if crn and estimator != "svrg" else "trajectory")


def test_affine_form_equals_per_trajectory_path_and_coefficients():
    p = ls_problem(0.1)
    theta = p.solution() + np.array([0.5, -0.2, 0.1])
    lams = [0.0, 0.3, 0.7, 1.0, 1.5]
    for est in ("kd", "kd_loss", "corrected", "sgd"):
        plan = make_plan(p, theta, lams, 0.05, 400, 4, batch_size=2, estimator=est, record_every=40)
        aff = run_arrays(batched, p, plan, path="affine")
        per = run_arrays(batched, p, plan, path="trajectory")
        assert_records_close(aff, per)
        coeffs = coefficients_of(batched, p, plan)
        np.testing.assert_array_equal(coeffs["diverged_step"], aff["diverged_step"])
        lam = np.asarray(lams)[:, None, None]
        for name in RECORDS:
            c = coeffs[name]                                               # (S, R, 3)
            assert c.shape == (4, plan.record_steps.size, 3)
            curve = c[None, ..., 0] + lam * c[None, ..., 1] + lam**2 * c[None, ..., 2]
            np.testing.assert_allclose(curve, aff[name], rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="affine"):
        run_arrays(batched, p, make_plan(p, theta, lams, 0.05, 10, 2, estimator="svrg"), path="affine")


def test_claim2_machine_precision_survives_affine_form():
    # θ = x*, λ = 1: noise-free linear convergence to x*. Records evaluated from the vectors
    # e = (u − x*) + λv reach the rounding floor (~1e-31) as the reference does; the
    # quadratic's coefficients, O(1) each, cancel to ±1e-19 there (even negative).
    p = ls_problem()
    plan = make_plan(p, p.solution(), [0.0, 1.0], 0.1, 6000, 4, record_every=1500)
    got = run_arrays(batched, p, plan)
    assert last_timing()["kernel"] == "affine"
    assert got["dist2_opt"][1, :, -1].max() < 1e-26
    assert got["subopt"][1, :, -1].max() < 1e-26
    assert got["dist2_opt"][0, :, -1].min() > 1e-6
    want = run_arrays(reference, p, plan)
    assert want["dist2_opt"][1, :, -1].max() < 1e-26
    assert_records_close(got, want)
    c = coefficients_of(batched, p, plan)["dist2_opt"][:, -1]
    assert np.abs(c.sum(axis=1)).max() > 1e-22


def test_least_squares_full_batch_larger_instance():
    p = syn.least_squares(n=60, d=8, cond=20, seed=4, l2=0.01)
    theta = p.solution() + 0.1
    for est, crn in (("kd", True), ("corrected", False), ("svrg", True)):
        plan = make_plan(p, theta, [0.2, 0.9], 0.3, 120, 3, batch_size=60, estimator=est, record_every=30,
                         common_random_numbers=crn, svrg_period=10)
        assert_records_close(run_arrays(batched, p, plan), run_arrays(reference, p, plan))


# --------------------------------------------------------------------------- softmax, GLMs, deep linear
@pytest.mark.parametrize("name", NONLINEAR)
@pytest.mark.parametrize("estimator", ESTS)
def test_other_families_match_reference(families, name, estimator):
    p, theta = families[name]
    x0 = p.default_x0() + 0.1 * np.random.default_rng(4).standard_normal(p.dim)
    for b, crn in ((1, True), (3, True), (3, False), (p.n, True)):
        plan = make_plan(p, theta, [0.0, 0.5, 1.0], 0.05, 200, 2, batch_size=b, estimator=estimator,
                         record_every=20, seed=9, x0=x0, svrg_period=6, common_random_numbers=crn)
        want = run_arrays(reference, p, plan)
        got = run_arrays(batched, p, plan)
        assert_records_close(got, want)
        assert last_timing()["kernel"] == "trajectory"


def test_device_records_match_problems(families):
    # the device versions of canonical coordinates and f − f*, including their large-deviation branches
    for name, (p, theta) in families.items():
        plan = make_plan(p, theta, [0.5], 0.05, 2, 1)
        eng = driver.prepare(p, plan, batched)
        r = np.random.default_rng(7)
        xs = p.solution()
        X = xs + np.concatenate([s * r.standard_normal((4, p.dim)) for s in (1e-9, 1e-4, 0.3, 3.0)])
        d2o, sub, d2t = eng._record_values(X)
        C = p.canonical(X)
        np.testing.assert_allclose(sub, p.suboptimality(X), rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(d2o, ((C - p.canonical(xs)) ** 2).sum(axis=1), rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(d2t, ((C - p.canonical_teacher(theta)) ** 2).sum(axis=1), rtol=1e-10,
                                   atol=1e-15)


# --------------------------------------------------------------------------- divergence
def test_divergence_per_trajectory_affine_and_fallback():
    # γ = 1.6 with b = 1 is beyond the stable range: seeds diverge at different steps, and
    # λ = 1e30 at once. Some seeds leave the affine form's range while a λ of them is
    # alive; they are rerun per trajectory. Everything equals the reference.
    p = ls_problem()
    theta = p.solution() + np.array([0.3, -0.1, 0.2])
    plan = make_plan(p, theta, [0.0, 1.0, 5.0, 1e30], 1.6, 300, 40, batch_size=1, record_every=10, seed=3)
    want = run_arrays(reference, p, plan)
    got = run_arrays(batched, p, plan)
    timing = last_timing()
    assert timing["kernel"] == "affine" and timing["fallback_seeds"] > 0
    assert_records_close(got, want)
    div = got["diverged_step"]
    assert 0 < (div[0] >= 0).sum() < 40 and (div[3] >= 0).sum() >= 39
    res = SimResult(lams=plan.lams, steps=plan.record_steps, **got)
    for name in RECORDS:
        mean = res.mean(name)
        alive = ~res.diverged
        assert np.all(np.isfinite(mean[alive.any(axis=1)]))
        np.testing.assert_allclose(mean[0], got[name][0][alive[0]].mean(axis=0), rtol=1e-13)
    for k in range(4):
        for s in np.flatnonzero(div[k] >= 0):
            later = plan.record_steps >= div[k, s]
            assert np.all(np.isnan(got["dist2_opt"][k, s, later]))
            assert np.all(np.isfinite(got["dist2_opt"][k, s, ~later]))
            assert np.all(np.isnan(got["x_final"][k, s]))


def test_affine_fallback_equals_per_trajectory_path():
    # x0 = θ = x*, γ = 3 (unstable): λ = 1 starts exactly at its noise-free fixed point x*,
    # while u and v blow up from the first step. When λ = 0 (= u) diverges, λ = 1 is still
    # alive and x = u + v carries no digits, so every seed is rerun per trajectory. (There,
    # λ = 1 grows from rounding errors of size ε and diverges about 60 steps after λ = 0;
    # its divergence step depends on those rounding errors, so the reference, which
    # rounds differently, gives other steps for λ = 1 — the test compares paths.)
    p = ls_problem()
    xs = p.solution()
    plan = make_plan(p, xs, [0.0, 1.0], 3.0, 300, 6, batch_size=1, record_every=10, x0=xs)
    got = run_arrays(batched, p, plan)
    assert last_timing()["fallback_seeds"] == 6
    per = run_arrays(batched, p, plan, path="trajectory")
    for k in got:
        np.testing.assert_array_equal(got[k], per[k])
    assert np.all(got["diverged_step"][0] >= 0)
    assert np.all(got["diverged_step"][1] > got["diverged_step"][0])


@pytest.mark.parametrize("crn", [True, False])
def test_divergence_per_trajectory_path(crn):
    p = ls_problem(0.1)
    theta = p.solution() + 0.3
    plan = make_plan(p, theta, [0.0, 1.0, 3.0], 1.1, 300, 30, batch_size=2, estimator="svrg",
                     record_every=10, seed=3, common_random_numbers=crn, svrg_period=5)
    want = run_arrays(reference, p, plan)
    got = run_arrays(batched, p, plan)
    assert_records_close(got, want)
    n_div = (got["diverged_step"] >= 0).sum(axis=1)
    assert n_div[0] == 0 and n_div[2] > 0


def test_poisson_overflow_divergence():
    # Poisson's exp overflows: the guard (non-finite ‖x‖²) and the records agree with the reference.
    p = syn.poisson(n=15, d=3, l2=0.0, seed=1)
    theta = p.solution() + 0.2
    plan = make_plan(p, theta, [0.0, 1.0], 4.0, 60, 12, batch_size=1, record_every=3, estimator="kd",
                     x0=p.solution() + 1.0)
    want = run_arrays(reference, p, plan)
    got = run_arrays(batched, p, plan)
    assert (want["diverged_step"] >= 0).any()
    assert_records_close(got, want)


# --------------------------------------------------------------------------- float32
@pytest.mark.parametrize("path", ["affine", "trajectory"])
def test_float32_close_to_float64_least_squares(path):
    p = ls_problem(0.1)
    plan = make_plan(p, p.solution() + 0.2, [0.0, 0.5, 1.0], 0.05, 400, 3, batch_size=3, estimator="kd",
                     record_every=40)
    f64 = run_arrays(batched, p, plan, path=path)
    f32 = run_arrays(batched, p, plan, dtype="float32", path=path)
    assert last_timing()["dtype"] == "float32"
    assert_records_close(f32, f64, rtol=2e-4, scale_tol=1e-5, x_rtol=2e-4)
    assert f32["x_final"].dtype == np.float64


@pytest.mark.parametrize("name", NONLINEAR[:5])
def test_float32_close_to_float64_other_families(families, name):
    p, theta = families[name]
    plan = make_plan(p, theta, [0.0, 0.5, 1.0], 0.05, 200, 3, batch_size=3, estimator="corrected",
                     record_every=40, common_random_numbers=False)
    assert_records_close(run_arrays(batched, p, plan, dtype=np.float32), run_arrays(batched, p, plan),
                         rtol=2e-4, scale_tol=1e-5, x_rtol=2e-4)


def test_dtype_validation_and_unsupported_problem():
    p = ls_problem()
    plan = make_plan(p, p.solution(), [0.5], 0.05, 20, 2)
    with pytest.raises(ValueError, match="dtype"):
        run_arrays(batched, p, plan, dtype="float16")
    with pytest.raises(ValueError, match="path"):
        run_arrays(batched, p, plan, path="fast")
    class Ridge(kdsim.LeastSquares):
        """A subclass may change the math: the engine runs exact classes only."""

    sub = Ridge(p.A, p.b)
    assert p.exports_kernel_spec() and not sub.exports_kernel_spec()
    with pytest.raises(NotImplementedError, match="Ridge"):
        run_arrays(batched, sub, make_plan(sub, sub.solution(), [0.5], 0.01, 2, 1))


# --------------------------------------------------------------------------- memory
#: Chunking contract of this engine: every number kdsim computes itself is independent of the chunk
#: size, but its products over a whole chunk are BLAS calls (numpy's matmul / einsum), whose kernel
#: and blocking may depend on the chunk's row count (OpenBLAS picks small-matrix kernels on AVX-512
#: CPUs). Such a product may round differently by an ulp; the trajectories then agree to a few ulp,
#: and divergence steps exactly. 64 ulp leaves room for the rounding to compound over 60 steps.
CHUNK_RTOL = 64 * np.finfo(np.float64).eps


@pytest.mark.parametrize("case", ["ls_affine", "ls_traj", "softmax_svrg", "deep_linear_svrg"])
def test_chunked_equals_unchunked(case, families):
    if case.endswith("svrg"):
        p, theta = families[case[:-5]]
        kw = dict(estimator="svrg", batch_size=4, svrg_period=5)
    else:
        p = ls_problem(0.1)
        theta = p.solution() + 0.3
        kw = dict(estimator="kd", batch_size=2, common_random_numbers=case == "ls_affine")
    plan = make_plan(p, theta, [0.0, 0.5, 1.0], 0.1, 60, 23, record_every=6, seed=2, **kw)
    whole = run_arrays(batched, p, plan)
    assert last_timing()["chunks"] == 1
    eng = driver.prepare(p, plan, batched)
    fixed = eng.fixed_bytes + memory.output_bytes(3, 23, plan.n_records, p.dim)
    budget = fixed + 5 * driver.bytes_per_seed(eng, plan)              # room for 5 seeds a chunk
    parts = run_arrays(batched, p, plan, memory_budget=budget)
    timing = last_timing()
    assert timing["chunks"] == 5 and timing["chunk_seeds"] == 5
    forced = run_arrays(batched, p, plan, chunk_seeds=7)
    assert last_timing()["chunks"] == 4
    for got in (parts, forced):
        assert_records_close(got, whole, rtol=CHUNK_RTOL, scale_tol=CHUNK_RTOL, x_rtol=CHUNK_RTOL)
    with pytest.raises(MemoryError, match="memory_budget"):
        run_arrays(batched, p, plan, memory_budget=fixed // 2)
