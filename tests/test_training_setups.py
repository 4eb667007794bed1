"""Training setups: sampling schemes, drop_last, heavy-ball momentum, λ schedules, SVRG warm-up.

What is checked
---------------
* Every engine runs the same trajectories: the numpy reference (ground truth), the numba kernels
  (least squares' affine ``ls_affine`` and per-trajectory ``ls_traj``; the layered kernels) and the
  array-module engine (``batched``, its affine and trajectory paths), under every sampling scheme,
  batch size, momentum and schedule, for every estimator; and the reference itself follows
  ``kdsim.theory.schemes.run_path`` on the generator's batches and a hand-written SVRG loop.
* Least squares stays affine in λ under momentum, reshuffling and multiplicative schedules (the
  premise of the affine kernels), and the kernel chosen says so.
* Monte Carlo (``kdsim.simulate``) against the exact epoch-end moments of
  ``kdsim.theory.schemes.exact_epoch_moments``, and that the same test rejects a wrong exact value.
* The ``epochs=`` API, ``LambdaSchedule`` and ``coefficient_table``, and bad input.

Tolerances
----------
Engines in float64 evaluate the same arithmetic in a different order (and least squares under
common random numbers through x_t(λ) = u_t + λ v_t), so records agree to rounding:
|Δ| ≤ 1e-9·|r| + 1e-12·s, s the largest value of that record over the trajectory (the absolute part
covers records that converge to 0, e.g. ‖x_t − θ‖² of KD at λ = 1, where only the rounding floor
ε·s remains); final iterates to rtol 1e-9. These are the tolerances of tests/test_engine_numba.py:
momentum and schedules add a few operations per step, not a growth of rounding error, because the
dynamics still contract (μ = 0.5 with a small step).

float32 vs float64 (numba): each step rounds the iterate, and the momentum buffer, to
ε₃₂ ≈ 6e-8 relative. The contracting dynamics keep these errors from growing, but they do not
cancel between the two precisions, and heavy ball amplifies a perturbation of the direction by up
to 1/(1 − μ) = 2 before it decays. Records then agree within |Δ| ≤ 2e-3·|r| + 1e-4·s
(tests/test_engine_numba.py's bound; measured here: ≤ 1e-4 relative where a record is near 0, ≤ 1e-6 of
the record's scale), far above rounding and far below any change of the method.
"""
import dataclasses
import math
import sys

import numpy as np
import pytest
from scipy.stats import norm

import kdsim
from kdsim import rng
from kdsim.engines import batched, driver, reference
from kdsim.estimators import get_estimator
from kdsim.plan import make_plan
from kdsim.results import RECORDS
from kdsim.schedules import SCHEDULE_KINDS, LambdaSchedule, coefficient_table
from kdsim.theory import exact_ls, schemes

from engine_helpers import assert_records_close, last_timing, ls_problem, run_arrays

try:
    from kdsim.engines import numba_cpu
    HAVE_NUMBA = numba_cpu.available()
except ImportError:  # pragma: no cover
    numba_cpu, HAVE_NUMBA = None, False

needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="needs numba")

ESTS = ["sgd", "kd", "kd_loss", "corrected", "svrg"]
TEACHER_ESTS = ["kd", "kd_loss", "corrected", "svrg"]
SCHEDULES = [None, "decay:0.8", "increase:1.3:0.9"]
RTOL = 1e-9


def close(got, want, rtol=RTOL, scale_tol=1e-12, x_rtol=RTOL):
    assert_records_close(got, want, rtol=rtol, scale_tol=scale_tol, x_rtol=x_rtol)


def ls_case(l2, seed=3):
    """The shared tiny least-squares instance (n = 12, d = 3), an imperfect teacher, a random start."""
    p = ls_problem(l2)
    r = np.random.default_rng(seed)
    return p, p.solution() + 0.3 * r.standard_normal(p.dim), r.standard_normal(p.dim)


def all_engines(p, plan):
    """Records of the plan on every engine and path that applies: {name: arrays}, reference first.

    numba: its automatic choice, and the per-trajectory kernel when that choice is the affine one;
    batched: path "trajectory", and "affine" where the affine form applies.
    """
    out = {"reference": run_arrays(reference, p, plan)}
    if HAVE_NUMBA:
        out["numba"] = run_arrays(numba_cpu, p, plan)
        out["numba:kernel"] = last_timing()["kernel"]
        if out["numba:kernel"] == "ls_affine":
            out["numba:trajectory"] = run_arrays(numba_cpu, p, plan, path="trajectory")
            assert last_timing()["kernel"] == "ls_traj"
    out["batched:trajectory"] = run_arrays(batched, p, plan, path="trajectory")
    if affine_applies(p, plan):
        out["batched:affine"] = run_arrays(batched, p, plan, path="affine")
        assert last_timing()["kernel"] == "affine"
    return out


def affine_applies(p, plan):
    return (isinstance(p, kdsim.LeastSquares) and plan.common_random_numbers and not plan.estimator.snapshot
            and plan.lambda_scales is not None)


def assert_all_agree(p, plan, **tol):
    runs = all_engines(p, plan)
    want = runs.pop("reference")
    kernel = runs.pop("numba:kernel", None)
    for name, got in runs.items():
        try:
            close(got, want, **tol)
        except AssertionError as exc:
            raise AssertionError(f"{name} differs from the reference: {exc}") from None
    return kernel


# ------------------------------------------------------------------ least squares, every axis
@pytest.mark.parametrize("estimator", ESTS)
@pytest.mark.parametrize("sampling", rng.SAMPLINGS)
@pytest.mark.parametrize("l2", [0.0, 0.1])
def test_least_squares_engines_agree(estimator, sampling, l2):
    # the product of batch 1 / 5 (5 does not divide n = 12: a partial batch of 2 under the
    # permutation schemes), momentum 0 / 0.5 and three schedules; 125 steps end mid-epoch and the
    # records (every 13 steps) fall anywhere in an epoch. b = 1 without momentum and schedule runs the
    # affine kernel's paired steps (two draws per pass, singles before a record); a cap the schedule
    # reaches (λ = 1 > 0.9) sends numba to the per-trajectory kernel.
    p, theta, x0 = ls_case(l2)
    for b in (1, 5):
        for momentum in (0.0, 0.5):
            for schedule in SCHEDULES:
                plan = make_plan(p, theta, [0.0, 0.4, 1.0], 0.05, 125, 3, batch_size=b, estimator=estimator,
                                 record_every=13, seed=5, x0=x0, svrg_period=7, sampling=sampling,
                                 momentum=momentum, lam_schedule=schedule)
                kernel = assert_all_agree(p, plan)
                if kernel is not None:
                    capped = schedule is not None and schedule.startswith("increase")
                    want = "ls_traj" if (estimator == "svrg" or (capped and estimator != "sgd")) else "ls_affine"
                    assert kernel == want, (b, momentum, schedule)


@pytest.mark.parametrize("sampling", rng.SAMPLINGS)
def test_least_squares_drop_last_and_independent_streams(sampling):
    # drop_last (b = 5 of n = 12: K = 2, two samples unused per epoch) and λ with their own streams
    # (no common random numbers: the per-trajectory kernels), with momentum and a schedule
    p, theta, x0 = ls_case(0.1)
    for estimator in ESTS:
        for drop_last, crn in ((True, True), (False, False), (True, False)):
            plan = make_plan(p, theta, [0.0, 0.7], 0.05, 90, 3, batch_size=5, estimator=estimator,
                             record_every=10, seed=2, x0=x0, sampling=sampling, drop_last=drop_last,
                             momentum=0.5, lam_schedule="decay:0.8", common_random_numbers=crn)
            assert plan.steps_per_epoch == (2 if drop_last else 3)
            assert_all_agree(p, plan)


@needs_numba
@pytest.mark.parametrize("sampling", ["reshuffle", "shuffle_once"])
def test_many_seeds_each_keep_their_permutation(families, sampling):
    # the affine kernel steps seeds in blocks of SEED_BLOCK, each with its own cached permutation:
    # 19 seeds are two full blocks and a partial one; and the numba threads split the seeds
    from kdsim.engines._kernels_ls import SEED_BLOCK
    S = 2 * SEED_BLOCK + 3
    p, theta, x0 = ls_case(0.1)
    soft, soft_theta = families["softmax"]
    cases = [(p, theta, x0, 1, 0.0, None), (p, theta, x0, 1, 0.0, "decay:0.8"), (p, theta, x0, 5, 0.5, None),
             (soft, soft_theta, None, 4, 0.5, "decay:0.8")]
    for prob, th, start, b, mu, sched in cases:
        plan = make_plan(prob, th, [0.0, 0.6, 1.0], 0.05, 70, S, batch_size=b, record_every=9, x0=start,
                         sampling=sampling, momentum=mu, lam_schedule=sched, seed=12)
        want = run_arrays(reference, prob, plan)
        try:
            numba_cpu.set_threads(2)
            got = run_arrays(numba_cpu, prob, plan)
        finally:
            numba_cpu.set_threads(None)
        close(got, want)
        close(run_arrays(batched, prob, plan, chunk_seeds=7), want)


@pytest.mark.parametrize("estimator", ["sgd", "kd", "kd_loss", "corrected"])
@pytest.mark.parametrize("sampling", ["reshuffle", "shuffle_once"])
def test_reference_follows_theory_run_path(estimator, sampling):
    # ground truth for the ground truth: kdsim.theory.schemes.run_path (a plain numpy loop with the
    # problem's public gradients) on the generator's own batches (batch_sequence of its epoch
    # permutations) gives each trajectory's final iterate; with a ridge, momentum, a partial batch
    p, theta, x0 = ls_case(0.1)
    n, b, steps, lams = p.n, 5, 40, [0.0, 0.6, 1.3]
    K = rng.steps_per_epoch(n, b)
    plan = make_plan(p, theta, lams, 0.05, steps, 3, batch_size=b, estimator=estimator, seed=4, x0=x0,
                     sampling=sampling, momentum=0.5)
    runs = {"reference": run_arrays(reference, p, plan)}
    if HAVE_NUMBA:
        runs["numba"] = run_arrays(numba_cpu, p, plan)
    streams = plan.streams
    for s in range(plan.n_seeds):
        stream = np.asarray(streams[0, s:s + 1])
        perms = np.stack([rng.epoch_permutation(plan.seed, stream, e, n, sampling)[0]
                          for e in range(-(-steps // K))])
        batches = schemes.batch_sequence(perms, n, b, steps)
        for k, lam in enumerate(lams):
            want = schemes.run_path(p, theta, lam, 0.05, batches, x0=x0, momentum=0.5, estimator=estimator)[-1]
            for name, got in runs.items():
                np.testing.assert_allclose(got["x_final"][k, s], want, rtol=1e-11, atol=1e-13, err_msg=name)


# ----------------------------------------------------------------------------- other families
def family_problems():
    from kdsim.problems import synthetic as syn
    r = np.random.default_rng(2)
    dl = syn.deep_linear(n=15, d_in=3, d_out=2, hidden=(3, 2), seed=1)
    probs = {
        "softmax": syn.softmax(n=15, d=2, n_classes=3, l2=0.1, bias=True, seed=1),
        "logistic": syn.logistic(n=15, d=3, l2=0.1, seed=1),
        "deep_linear": kdsim.DeepLinear(dl.A, dl.Y, hidden=(3, 2), l2=0.05),
    }
    return {name: (p, p.solution() + 0.2 * r.standard_normal(p.dim)) for name, p in probs.items()}


@pytest.fixture(scope="module")
def families():
    return family_problems()


@pytest.mark.parametrize("name", ["softmax", "logistic", "deep_linear"])
@pytest.mark.parametrize("estimator", TEACHER_ESTS)
def test_other_families_engines_agree(families, name, estimator):
    # reshuffle + momentum + a schedule (decay, and an increase that reaches its cap), b = 4 of
    # n = 15 (a partial batch of 3), SVRG's period not a multiple of the epoch
    p, theta = families[name]
    x0 = p.default_x0() + 0.1 * np.random.default_rng(4).standard_normal(p.dim)
    for schedule in ("decay:0.8", "increase:1.3:0.9"):
        plan = make_plan(p, theta, [0.0, 0.5, 1.0], 0.05, 100, 2, batch_size=4, estimator=estimator,
                         record_every=9, seed=9, x0=x0, svrg_period=6, sampling="reshuffle", momentum=0.5,
                         lam_schedule=schedule)
        assert_all_agree(p, plan)
    # and shuffle-once with drop_last
    plan = make_plan(p, theta, [0.0, 1.0], 0.05, 60, 2, batch_size=4, estimator=estimator, record_every=9,
                     seed=9, x0=x0, svrg_period=6, sampling="shuffle_once", drop_last=True, momentum=0.5,
                     lam_schedule="decay:0.9")
    assert_all_agree(p, plan)


# ---------------------------------------------------------------------------------- SVRG options
def svrg_by_hand(p, step, momentum, x0, steps, period, start):
    """SVRG on least squares written out. ``steps``: (batch, (a, c)) per step. The snapshot y is taken
    at t = 0 and at t = start + j·period; the direction is ∇f_B(x) − a·∇f_B(y) + c·∇f(y)."""
    x, w = x0.copy(), np.zeros_like(x0)
    for t, (B, (a, c)) in enumerate(steps):
        if t == 0 or (t >= start and (t - start) % period == 0):
            y, gy = x.copy(), p.grad(x)
        g = p.grad(x, B) - a * p.grad(y, B) + c * gy
        w = momentum * w + g
        x = x - step * w
    return x


@pytest.mark.parametrize("warmup,correction", [(0, False), (2, True), (2, False), (5, True)])
def test_svrg_warmup_and_correction(warmup, correction):
    p, theta, x0 = ls_case(0.1)
    b, steps, lams = 5, 60, [0.0, 0.5, 1.0]
    K = rng.steps_per_epoch(p.n, b)
    plan = make_plan(p, theta, lams, 0.05, steps, 3, batch_size=b, estimator="svrg", record_every=4, seed=6,
                     x0=x0, svrg_period=4, sampling="reshuffle", momentum=0.5, lam_schedule="decay:0.8",
                     svrg_warmup=warmup, svrg_correction=correction)
    assert plan.snapshot_start == warmup * K
    assert_all_agree(p, plan)
    # against SVRG written out (refreshes at 0, then start, start + m, …; the table's (a, c) per epoch)
    table = plan.coefficient_table
    got = run_arrays(reference, p, plan)["x_final"]
    for s in range(plan.n_seeds):
        stream = np.asarray(plan.streams[0, s:s + 1])
        bs = [rng.minibatch(plan.seed, stream, t, p.n, b, "reshuffle")[0] for t in range(steps)]
        for k in range(len(lams)):
            coefs = [table[k, min(t // K, table.shape[1] - 1)] for t in range(steps)]
            want = svrg_by_hand(p, 0.05, 0.5, x0, list(zip(bs, coefs)), 4, plan.snapshot_start)
            np.testing.assert_allclose(got[k, s], want, rtol=1e-11, atol=1e-13)
    # the warm-up epochs are plain SGD on the same batches: records equal the "sgd" run's
    if warmup:
        sgd = dataclasses.replace(plan, estimator=get_estimator("sgd"), svrg_warmup=0, svrg_correction=True)
        a, w = run_arrays(reference, p, plan), run_arrays(reference, p, sgd)
        upto = np.flatnonzero(plan.record_steps <= warmup * K)
        for name in RECORDS:
            np.testing.assert_allclose(a[name][..., upto], w[name][..., upto], rtol=1e-13, atol=0)
        later = plan.record_steps > warmup * K + 1
        assert not np.allclose(a["dist2_opt"][1:, :, later], w["dist2_opt"][1:, :, later], rtol=1e-6)


def test_svrg_options_other_family(families):
    p, theta = families["softmax"]
    for warmup, correction in ((3, False), (1, True)):
        plan = make_plan(p, theta, [0.0, 0.8], 0.05, 80, 2, batch_size=4, estimator="svrg", record_every=8,
                         seed=1, svrg_period=5, sampling="reshuffle", momentum=0.5, svrg_warmup=warmup,
                         svrg_correction=correction, lam_schedule="decay:0.9")
        assert_all_agree(p, plan)


# ------------------------------------------------------------------------------------ float32
@needs_numba
@pytest.mark.parametrize("case", ["ls_affine", "ls_traj", "softmax", "deep_linear"])
def test_float32_close_to_float64(families, case):
    # tolerance: module docstring (float32 rounding of iterate and momentum buffer, contracting dynamics)
    rtol, scale_tol = 2e-3, 1e-4
    if case.startswith("ls"):
        p, theta, x0 = ls_case(0.1)
        est, sched = ("kd", "decay:0.8") if case == "ls_affine" else ("svrg", "increase:1.3:0.9")
    else:
        (p, theta), x0 = families[case], None
        est, sched = "kd", "increase:1.3:0.9"
        if case == "deep_linear":       # its flat rotation directions do not contract (test_engine_numba.py)
            rtol, scale_tol = 1e-2, 1e-3
    plan = make_plan(p, theta, [0.0, 0.5, 1.0], 0.05, 300, 3, batch_size=5, estimator=est, record_every=30,
                     x0=x0, sampling="reshuffle", momentum=0.5, lam_schedule=sched)
    f64 = run_arrays(numba_cpu, p, plan)
    kernel = last_timing()["kernel"]
    f32 = run_arrays(numba_cpu, p, plan, dtype="float32")
    assert last_timing()["dtype"] == "float32" and last_timing()["kernel"] == kernel
    if case.startswith("ls"):
        assert kernel == case
    assert_records_close(f32, f64, rtol=rtol, scale_tol=scale_tol, x_rtol=None)
    np.testing.assert_allclose(f32["x_final"], f64["x_final"], rtol=rtol, atol=scale_tol)


# ------------------------------------------------------------------------- the affine form
@needs_numba
@pytest.mark.parametrize("sampling", rng.SAMPLINGS)
@pytest.mark.parametrize("b", [1, 5])
def test_affine_form_with_momentum_equals_trajectories(sampling, b):
    p, theta, x0 = ls_case(0.1)
    lams = [0.0, 0.3, 0.7, 1.0, 1.5]
    for est in ("sgd", "kd", "kd_loss", "corrected"):
        for schedule in (None, "decay:0.7", "increase:1.02:5.0"):     # 1.5·1.02⁴⁹ < 5: never capped
            plan = make_plan(p, theta, lams, 0.05, 150, 4, batch_size=b, estimator=est, record_every=11, x0=x0,
                             sampling=sampling, momentum=0.5, lam_schedule=schedule)
            assert plan.lambda_scales is not None
            runner = driver.prepare(p, plan, numba_cpu)
            assert runner.kernel == "ls_affine"
            aff = runner.run_chunk(0, 4)[0]
            per = driver.prepare(p, plan, numba_cpu, path="trajectory").run_chunk(0, 4)[0]
            close(aff, per, rtol=1e-11, x_rtol=1e-11)
            b_aff = run_arrays(batched, p, plan, path="affine")
            b_per = run_arrays(batched, p, plan, path="trajectory")
            close(b_aff, b_per, rtol=1e-11, x_rtol=1e-11)
            close(b_aff, aff, rtol=1e-11, x_rtol=1e-11)


@pytest.mark.parametrize("estimator", ["kd", "kd_loss", "corrected"])
@pytest.mark.parametrize("schedule", [None, "decay:0.97"])
def test_final_iterates_affine_in_lambda(estimator, schedule):
    # x_t(λ) = u_t + λ v_t also under momentum, reshuffling and a multiplicative schedule: run every
    # λ as its own trajectory (the reference engine and the per-trajectory kernel, which do not use
    # the affine form) and check x(0.5) = (x(0) + x(1)) / 2 to 1e-12 relative
    p, theta, x0 = ls_case(0.1)
    plan = make_plan(p, theta, [0.0, 0.5, 1.0], 0.05, 200, 5, batch_size=5, estimator=estimator, x0=x0,
                     record_every=50, sampling="reshuffle", momentum=0.5, lam_schedule=schedule)
    finals = [run_arrays(reference, p, plan)["x_final"]]
    if HAVE_NUMBA:
        finals.append(run_arrays(numba_cpu, p, plan, path="trajectory")["x_final"])
    for x in finals:
        mid = 0.5 * (x[0] + x[2])
        scale = np.maximum(np.abs(x[0]), np.abs(x[2])).max()
        assert np.abs(x[1] - mid).max() <= 1e-12 * scale
        assert np.abs(x[2] - x[0]).max() > 1e-3 * scale          # λ matters: the check is not vacuous


@needs_numba
def test_kernel_names_follow_the_affine_premise():
    p, theta, x0 = ls_case(0.0)

    def kernel(**kw):
        args = dict(batch_size=2, estimator="kd", sampling="reshuffle", x0=x0) | kw
        lams = args.pop("lams", [0.0, 0.5, 1.0])
        steps = args.pop("steps", 60)
        plan = make_plan(p, theta, lams, 0.05, steps, 2, **args)
        return driver.prepare(p, plan, numba_cpu).kernel

    assert kernel(momentum=0.5) == "ls_affine"
    assert kernel(lam_schedule="decay:0.8") == "ls_affine"
    assert kernel(momentum=0.5, lam_schedule="decay:0.5", sampling="shuffle_once") == "ls_affine"
    # increase: affine while no λ reaches the cap (60 steps = 10 epochs: 0.05·1.3⁹ < 0.9) …
    assert kernel(lam_schedule="increase:1.3:0.9", lams=[0.0, 0.02, 0.05]) == "ls_affine"
    # … per trajectory once one does (λ = 1 is capped from the start; 0.1·1.3⁹ ≈ 1.06 > 0.9 later)
    assert kernel(lam_schedule="increase:1.3:0.9") == "ls_traj"
    assert kernel(lam_schedule="increase:1.3:0.9", lams=[0.0, 0.1]) == "ls_traj"
    assert kernel(lam_schedule="increase:1.3:0.9", lams=[0.0, 0.1], steps=30) == "ls_affine"   # 5 epochs
    assert kernel(estimator="svrg", momentum=0.5) == "ls_traj"
    assert kernel(momentum=0.5, common_random_numbers=False) == "ls_traj"


# ------------------------------------------------------------------ Monte Carlo vs enumeration
MC_SEEDS = 8000
MC_EPOCHS = 6
MC_LAMS = [0.0, 0.5, 1.0]
MC_CASES = {   # name: (sampling, momentum, batch size, drop_last, estimator)
    "reshuffle": ("reshuffle", 0.0, 1, False, "kd"),
    "shuffle_once": ("shuffle_once", 0.0, 2, False, "corrected"),
    "reshuffle_momentum": ("reshuffle", 0.5, 2, False, "kd_loss"),
    "reshuffle_drop_last": ("reshuffle", 0.0, 2, True, "kd"),
}


@pytest.fixture(scope="module")
def mc_problem():
    # n = 5, d = 2, label noise (b is not in the span of A), a ridge (kd_loss ≠ kd), a teacher
    # 0.72 away from x*, a start away from both
    r = np.random.default_rng(11)
    A = r.standard_normal((5, 2))
    b = A @ r.standard_normal(2) + 0.8 * r.standard_normal(5)
    p = kdsim.LeastSquares(A, b, l2=0.05)
    return p, p.solution() + np.array([0.6, -0.4]), np.array([1.0, -1.0])


@pytest.fixture(scope="module")
def mc_runs(mc_problem):
    p, theta, x0 = mc_problem
    L = float((p.A ** 2).sum(axis=1).max())
    out = {}
    for name, (sampling, mu, b, drop_last, est) in MC_CASES.items():
        step = (0.4 if not mu else 0.2) / L
        res = kdsim.simulate(p, theta, MC_LAMS, step, seeds=MC_SEEDS, epochs=MC_EPOCHS, record_every_epoch=1,
                             batch_size=b, estimator=est, backend="numba" if HAVE_NUMBA else "numpy",
                             sampling=sampling, drop_last=drop_last, momentum=mu, x0=x0, seed=3)
        out[name] = (res, step)
    return out


def mc_deviations(res, exact_of):
    """|MC mean − exact| / sem at every epoch end after the start, λ and record; exact_of(k, name) → array."""
    devs = []
    for k in range(len(MC_LAMS)):
        for name in RECORDS:
            m, s = res.mean(name)[k, 1:], res.sem(name)[k, 1:]
            assert np.all(s > 0)
            devs.append(np.abs(m - exact_of(k, name)[1:]) / s)
    return np.concatenate(devs)


def mc_z(res):
    # Bonferroni: every compared cell (λ × record × epoch end, the start excluded: it is exact) at
    # family-wise false-failure probability 1e-6, two-sided. 8,000 independent seeds per cell: the
    # normal approximation of the mean of a squared distance is accurate to well within the margin
    # (skewness of the mean ≈ skewness / √8000 < 0.05). Seeds fixed: deterministic.
    cells = len(MC_LAMS) * len(RECORDS) * MC_EPOCHS
    assert res.dist2_opt.shape == (len(MC_LAMS), MC_SEEDS, MC_EPOCHS + 1)
    return norm.isf(1e-6 / (2 * cells))


@pytest.mark.parametrize("case", list(MC_CASES))
def test_monte_carlo_matches_exact_epoch_moments(mc_problem, mc_runs, case):
    p, theta, x0 = mc_problem
    sampling, mu, b, drop_last, est = MC_CASES[case]
    res, step = mc_runs[case]
    K = rng.steps_per_epoch(p.n, b, drop_last)
    np.testing.assert_array_equal(res.steps, K * np.arange(MC_EPOCHS + 1))
    np.testing.assert_array_equal(res.epochs, np.arange(MC_EPOCHS + 1))
    assert not res.diverged.any()
    exact = [schemes.exact_epoch_moments(p, theta, lam, step, MC_EPOCHS, batch_size=b, sampling=sampling,
                                         drop_last=drop_last, momentum=mu, estimator=est, x0=x0)
             for lam in MC_LAMS]
    for ex in exact:
        np.testing.assert_array_equal(ex.steps, res.steps)
    z = mc_z(res)
    dev = mc_deviations(res, lambda k, name: getattr(exact[k], name))
    assert dev.max() <= z, (dev.max(), z)


@pytest.mark.parametrize("wrong", ["iid", "other_scheme"])
@pytest.mark.parametrize("case", list(MC_CASES))
def test_monte_carlo_test_rejects_wrong_exact_values(mc_problem, mc_runs, case, wrong):
    # power: the same test, at the same z, fed the exact moments of another scheme must fail — the
    # i.i.d. ones (exact_ls.exact_moments at the same steps; with momentum, the enumeration's "iid",
    # which exact_ls does not cover), or shuffle-once's for reshuffle and vice versa (measured: the
    # worst cell ≥ 18 sem away, on λ = 0's ‖x − x*‖² alone too, against z ≈ 5.6)
    p, theta, x0 = mc_problem
    sampling, mu, b, drop_last, est = MC_CASES[case]
    res, step = mc_runs[case]
    K = rng.steps_per_epoch(p.n, b, drop_last)
    if wrong == "iid" and not mu:
        bad = [exact_ls.exact_moments(p, theta, lam, step, MC_EPOCHS * K, batch_size=b, record_every=K,
                                      estimator=est, x0=x0) for lam in MC_LAMS]
    else:
        other = "iid" if wrong == "iid" else {"reshuffle": "shuffle_once", "shuffle_once": "reshuffle"}[sampling]
        bad = [schemes.exact_epoch_moments(p, theta, lam, step, MC_EPOCHS, batch_size=b, sampling=other,
                                           drop_last=drop_last, momentum=mu, estimator=est, x0=x0)
               for lam in MC_LAMS]
    for ex in bad:
        np.testing.assert_array_equal(ex.steps, res.steps)
    z = mc_z(res)
    dev = mc_deviations(res, lambda k, name: getattr(bad[k], name))
    assert dev.max() > z
    # and on plain SGD's part (λ = 0, ‖x − x*‖²) alone
    sgd = np.abs(res.mean("dist2_opt")[0, 1:] - bad[0].dist2_opt[1:]) / res.sem("dist2_opt")[0, 1:]
    assert sgd.max() > z


# ---------------------------------------------------------------------------------- epochs API
@pytest.mark.parametrize("sampling,b,drop_last", [("iid", 5, False), ("reshuffle", 5, False), ("reshuffle", 5, True),
                                                  ("shuffle_once", 1, False), ("reshuffle", 12, True)])
def test_epochs_api(sampling, b, drop_last):
    p, theta, x0 = ls_case(0.0)
    K = math.floor(p.n / b) if drop_last else math.ceil(p.n / b)
    res = kdsim.simulate(p, theta, [0.0, 0.5], 0.05, seeds=3, epochs=7, record_every_epoch=2, batch_size=b,
                         sampling=sampling, drop_last=drop_last, backend="numpy", x0=x0)
    assert res.config["steps"] == 7 * K and res.config["steps_per_epoch"] == K
    np.testing.assert_array_equal(res.steps, [0, 2 * K, 4 * K, 6 * K, 7 * K])      # epoch ends, and the last step
    np.testing.assert_array_equal(res.epochs, [0, 2, 4, 6, 7])
    assert res.config.get("sampling", "iid") == sampling
    assert ("sampling" in res.config) == (sampling != "iid")                      # defaults stay out of the hash
    assert res.config.get("drop_last", False) == drop_last
    # the same run given in steps
    same = kdsim.simulate(p, theta, [0.0, 0.5], 0.05, 7 * K, 3, batch_size=b, sampling=sampling,
                          drop_last=drop_last, backend="numpy", x0=x0, record_every=2 * K)
    np.testing.assert_array_equal(same.steps, res.steps)
    np.testing.assert_array_equal(same.dist2_opt, res.dist2_opt)
    assert same.config == res.config


def test_epochs_api_drop_last_changes_K_and_config_keys():
    p, theta, x0 = ls_case(0.0)
    a = kdsim.simulate(p, theta, 0.5, 0.05, seeds=2, epochs=3, batch_size=5, sampling="reshuffle", backend="numpy")
    d = kdsim.simulate(p, theta, 0.5, 0.05, seeds=2, epochs=3, batch_size=5, sampling="reshuffle", drop_last=True,
                       backend="numpy")
    assert (a.config["steps_per_epoch"], d.config["steps_per_epoch"]) == (3, 2)
    assert (a.config["steps"], d.config["steps"]) == (9, 6)
    assert "drop_last" not in a.config and d.config["drop_last"] is True
    assert a.config_hash != d.config_hash
    # default options add no keys; non-default ones are named
    plain = kdsim.simulate(p, theta, 0.5, 0.05, 10, 2, backend="numpy")
    for key in ("sampling", "drop_last", "momentum", "lam_schedule", "svrg_warmup", "svrg_correction"):
        assert key not in plain.config
    assert plain.config["steps_per_epoch"] == 12
    full = kdsim.simulate(p, theta, [0.0, 0.5], 0.05, 10, 2, backend="numpy", estimator="svrg", momentum=0.5,
                          lam_schedule="decay:0.8", svrg_warmup=1, svrg_correction=False, sampling="shuffle_once")
    assert full.config["momentum"] == 0.5 and full.config["lam_schedule"] == "decay:0.8"
    assert full.config["svrg_warmup"] == 1 and full.config["svrg_correction"] is False
    assert full.config["sampling"] == "shuffle_once"


def test_epochs_api_errors():
    p, theta, _ = ls_case(0.0)
    with pytest.raises(TypeError, match="steps"):
        kdsim.simulate(p, theta, 0.5, 0.05, 24, 2, epochs=2, backend="numpy")
    with pytest.raises(TypeError, match="steps or epochs"):
        kdsim.simulate(p, theta, 0.5, 0.05, seeds=2, backend="numpy")
    with pytest.raises(ValueError, match="record_every_epoch"):
        kdsim.simulate(p, theta, 0.5, 0.05, seeds=2, epochs=2, record_every_epoch=3, backend="numpy")
    with pytest.raises(ValueError, match="record_every_epoch"):
        kdsim.simulate(p, theta, 0.5, 0.05, 23, 2, record_every_epoch=2, backend="numpy")   # 24 steps > 23
    with pytest.raises(TypeError, match="record_every"):
        kdsim.simulate(p, theta, 0.5, 0.05, seeds=2, epochs=2, record_every_epoch=1, record_every=2,
                       backend="numpy")
    with pytest.raises(ValueError, match="epochs"):
        kdsim.simulate(p, theta, 0.5, 0.05, seeds=2, epochs=0, backend="numpy")
    with pytest.raises(ValueError, match="record_every_epoch"):
        kdsim.simulate(p, theta, 0.5, 0.05, seeds=2, epochs=2, record_every_epoch=0, backend="numpy")
    # record_every_epoch with steps: records every k·K steps
    res = kdsim.simulate(p, theta, 0.5, 0.05, 30, 2, record_every_epoch=1, backend="numpy")
    np.testing.assert_array_equal(res.steps, [0, 12, 24, 30])
    np.testing.assert_allclose(res.epochs, [0, 1, 2, 2.5])


# ---------------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("spec,kind,factor,cap", [
    ("constant", "constant", 1.0, 1.0), ("decay", "decay", 0.9, 1.0), ("decay:0.8", "decay", 0.8, 1.0),
    ("increase", "increase", 1.047, 1.0), ("increase:1.3", "increase", 1.3, 1.0),
    ("increase:1.3:0.9", "increase", 1.3, 0.9), ("increase:1.05:2.5", "increase", 1.05, 2.5),
])
def test_schedule_parse_round_trip(spec, kind, factor, cap):
    s = LambdaSchedule.parse(spec)
    assert (s.kind, s.factor, s.cap) == (kind, factor, cap)
    assert LambdaSchedule.parse(str(s)) == s
    assert LambdaSchedule.parse(s) is s
    assert LambdaSchedule.parse({"kind": kind, "factor": factor, "cap": cap}) == s
    assert LambdaSchedule.parse(str(s)).kind in SCHEDULE_KINDS


def test_schedule_forms_and_values():
    assert LambdaSchedule.parse(None) == LambdaSchedule() and str(LambdaSchedule()) == "constant"
    assert LambdaSchedule.parse({"kind": "decay"}) == LambdaSchedule("decay", 0.9)
    assert LambdaSchedule.parse({"kind": "increase", "factor": 2}) == LambdaSchedule("increase", 2.0, 1.0)
    assert LambdaSchedule.parse({}) == LambdaSchedule()
    assert str(LambdaSchedule.parse("increase")) == "increase:1.047:1.0"
    lams = [0.0, 0.5, 2.0]
    np.testing.assert_array_equal(LambdaSchedule().values(lams, 3), np.repeat(np.array(lams)[:, None], 3, axis=1))
    np.testing.assert_allclose(LambdaSchedule.parse("decay:0.5").values(lams, 4),
                               [[0, 0, 0, 0], [0.5, 0.25, 0.125, 0.0625], [2, 1, 0.5, 0.25]], rtol=1e-15)
    # increase with a cap: min(λ·f^e, cap); a λ above the cap is capped from epoch 0
    np.testing.assert_allclose(LambdaSchedule.parse("increase:2:1.5").values(lams, 4),
                               [[0, 0, 0, 0], [0.5, 1.0, 1.5, 1.5], [1.5, 1.5, 1.5, 1.5]], rtol=1e-15)
    np.testing.assert_allclose(LambdaSchedule.parse("increase:2:1.5").scales(4), [1, 2, 4, 8])


def test_coefficient_table_warmup_and_correction():
    svrg, kd, corr, sgd = (get_estimator(e) for e in ("svrg", "kd", "corrected", "sgd"))
    sched = LambdaSchedule.parse("decay:0.5")
    t = coefficient_table(svrg, [0.0, 1.0, 2.0], sched, 5, warmup_epochs=2)
    assert t.shape == (3, 5, 2)
    assert np.all(t[:, :2] == 0.0)                                          # warm-up: plain SGD
    np.testing.assert_allclose(t[:, 2:, 0], [[0, 0, 0], [0.25, 0.125, 0.0625], [0.5, 0.25, 0.125]])
    np.testing.assert_array_equal(t[:, :, 1], t[:, :, 0])                    # SVRG: c = a
    t = coefficient_table(svrg, [1.0, 2.0], sched, 4, correction=False)
    assert np.all(t[:, :, 1] == 0.0) and np.all(t[:, :, 0] > 0)            # no full-gradient term
    t = coefficient_table(kd, [1.0], LambdaSchedule(), 3)
    np.testing.assert_array_equal(t[0], [[1, 0]] * 3)
    t = coefficient_table(corr, [2.0], sched, 2)
    np.testing.assert_array_equal(t[0], [[2, 2], [1, 1]])
    assert np.all(coefficient_table(sgd, [3.0], sched, 3) == 0.0)
    # the plan's table: one epoch unless a schedule or a warm-up needs more
    p, theta, _ = ls_case(0.0)
    plan = make_plan(p, theta, [0.5], 0.05, 30, 1, batch_size=5, estimator="svrg", svrg_warmup=2,
                     svrg_correction=False)
    assert plan.n_epochs == 10 and plan.coefficient_table.shape == (1, 10, 2)
    assert np.all(plan.coefficient_table[:, :2] == 0) and np.all(plan.coefficient_table[:, 2:, 0] == 0.5)
    assert np.all(plan.coefficient_table[..., 1] == 0)
    assert make_plan(p, theta, [0.5], 0.05, 30, 1, batch_size=5).coefficient_table.shape == (1, 1, 2)


def test_lambda_scales():
    p, theta, _ = ls_case(0.0)

    def scales(sched, lams=(0.0, 0.5), steps=36, est="kd"):
        return make_plan(p, theta, list(lams), 0.05, steps, 1, batch_size=4, estimator=est,
                         lam_schedule=sched).lambda_scales

    np.testing.assert_array_equal(scales(None), [1.0])
    np.testing.assert_allclose(scales("decay:0.5"), 0.5 ** np.arange(12))
    assert scales("increase:1.2:0.9") is None                                  # 0.5·1.2^11 > 0.9
    np.testing.assert_allclose(scales("increase:1.2:0.9", lams=(0.0, 0.1)), 1.2 ** np.arange(12))


# ---------------------------------------------------------------------------------- bad input
def _simulate(**kw):
    p, theta, _ = ls_case(0.0)
    args = dict(problem=p, theta=theta, lams=[0.0, 0.5], step=0.05, steps=24, seeds=2, backend="numpy") | kw
    return kdsim.simulate(**args)


@pytest.mark.parametrize("kw,exc,name", [
    ({"sampling": "random"}, ValueError, "sampling"),
    ({"sampling": None}, ValueError, "sampling"),
    ({"momentum": -0.1}, ValueError, "momentum"),
    ({"momentum": 1.0}, ValueError, "momentum"),
    ({"momentum": float("nan")}, ValueError, "momentum"),
    ({"drop_last": 1}, TypeError, "drop_last"),
    ({"drop_last": True, "batch_size": 13}, ValueError, "batch_size"),
    ({"lam_schedule": "cosine"}, ValueError, "lam_schedule"),
    ({"lam_schedule": "decay:1.2"}, ValueError, "lam_schedule"),
    ({"lam_schedule": "increase:0.9"}, ValueError, "lam_schedule"),
    ({"lam_schedule": "increase:1.1:inf"}, ValueError, "lam_schedule"),
    ({"lam_schedule": "decay:0.5:2"}, ValueError, "lam_schedule"),
    ({"lam_schedule": "decay:x"}, ValueError, "lam_schedule"),
    ({"lam_schedule": {"kind": "decay", "rate": 0.5}}, ValueError, "lam_schedule"),
    ({"lam_schedule": 0.9}, TypeError, "lam_schedule"),
    # λ·f^e overflows within the run: 2^1024 = inf at epoch 1024 of 1100 (λ < 0 is not capped)
    ({"lams": [-1.0], "lam_schedule": "increase:2", "steps": None, "epochs": 1100, "batch_size": 12},
     ValueError, "lam_schedule"),
    ({"lams": [0.5, -0.5], "lam_schedule": "increase:1e200", "steps": 36}, ValueError, "lam_schedule"),
    ({"svrg_warmup": 1}, ValueError, "svrg_warmup"),
    ({"svrg_warmup": 1, "estimator": "corrected"}, ValueError, "svrg_warmup"),
    ({"svrg_correction": False}, ValueError, "svrg_correction"),
    ({"svrg_warmup": -1, "estimator": "svrg"}, ValueError, "svrg_warmup"),
    ({"svrg_correction": 0, "estimator": "svrg"}, TypeError, "svrg_correction"),
    ({"steps": None, "epochs": 2, "record_every_epoch": 3}, ValueError, "record_every_epoch"),
])
def test_bad_training_options_name_the_parameter(kw, exc, name, monkeypatch):
    # each is refused before any work: no engine runs
    def no_run(*a, **k):
        raise AssertionError("an engine ran before the arguments were checked")
    monkeypatch.setattr(sys.modules["kdsim.simulate"], "run_engine", no_run)
    with pytest.raises(exc, match=name):
        _simulate(**kw)


def test_overflowing_schedule_is_refused_by_make_plan():
    p, theta, _ = ls_case(0.0)
    with pytest.raises(ValueError, match="lam_schedule") as info:
        make_plan(p, theta, [-1.0, 0.5], 0.05, 1100, 1, batch_size=12, lam_schedule="increase:2")
    assert "epoch 1024" in str(info.value)
    # the same schedule over fewer epochs is fine (2^1023 is finite)
    make_plan(p, theta, [-1.0, 0.5], 0.05, 1024, 1, batch_size=12, lam_schedule="increase:2")


def test_increase_schedule_with_overflowing_factor_keeps_zero_and_capped_lambdas():
    s = LambdaSchedule.parse("increase:1e300")
    np.testing.assert_array_equal(s.values([0.0, 0.5], 3), [[0.0, 0.0, 0.0], [0.5, 1.0, 1.0]])
    p, theta, _ = ls_case(0.0)
    make_plan(p, theta, [0.0, 0.5], 0.05, 36, 1, lam_schedule="increase:1e300")


@pytest.mark.parametrize("sampling", ["iid", "reshuffle"])
@pytest.mark.parametrize("b", [1, 5])
def test_momentum_divergence_step_is_exact_in_the_affine_form(sampling, b):
    # a step beyond heavy ball's stability: every engine's guard fires at the same step for every λ
    p = ls_problem(0.0)
    theta = p.solution() + 0.5
    plan = make_plan(p, theta, [0.0, 0.5, 1.0], 0.9 if b == 1 else 3.0, 400, 11, batch_size=b, estimator="kd",
                     record_every=20, seed=3, sampling=sampling, momentum=0.9)
    ref = run_arrays(reference, p, plan)
    fast = run_arrays(numba_cpu, p, plan)
    assert (ref["diverged_step"] > 0).all()
    np.testing.assert_array_equal(fast["diverged_step"], ref["diverged_step"])
    assert_records_close(fast, ref, rtol=1e-9, x_rtol=None)
