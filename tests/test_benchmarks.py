"""Smoke tests of the benchmarks (benchmarks/): tiny sizes only.

The baselines must run the same trajectories as kdsim: same minibatch indices
(kdsim.rng), same estimator, same guard, same records. They are compared with kdsim's
reference engine (float64) and numba engine (float32) on small runs. Tolerances: the
implementations differ only in the order of floating-point operations (numba's
fast-math reassociation, BLAS blocking), over at most 40 steps of a contraction, so
float64 records agree to ~1e-14 relative (asserted at 1e-9) and float32 ones to
~1e-6 relative (asserted at 1e-4); softmax and deep-linear f(x) − f* are compared
with an absolute term of 1e-12·f* because the baselines evaluate the direct
difference f(x) − f* (kdsim a cancellation-free form).
"""
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import kdsim  # noqa: E402
from engine_helpers import run_arrays  # noqa: E402
from kdsim import teachers  # noqa: E402
from kdsim.engines import reference  # noqa: E402
from kdsim.problems import synthetic  # noqa: E402
from kdsim.rng import minibatch_indices  # noqa: E402
from kdsim.simulate import make_plan  # noqa: E402

from benchmarks import baseline_jax, baseline_numpy, common, harness  # noqa: E402
from benchmarks.workloads import WORKLOADS  # noqa: E402

RECORDS = ("dist2_opt", "subopt", "dist2_teacher")


def assert_same_run(got, want, rtol=1e-9, sub_atol=0.0):
    np.testing.assert_array_equal(got["diverged_step"], want["diverged_step"])
    for name in RECORDS:
        atol = sub_atol if name == "subopt" else 0.0
        np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=atol, equal_nan=True, err_msg=name)
    np.testing.assert_allclose(got["x_final"], want["x_final"], rtol=rtol, atol=rtol * 1e-3, equal_nan=True)


def _ls():
    p = synthetic.least_squares(n=40, d=4, seed=2, l2=0.05)
    return p, teachers.at_distance(p, 1.0).theta


def _softmax():
    p = synthetic.softmax(n=50, d=3, n_classes=3, l2=0.1, seed=1)
    return p, teachers.at_distance(p, 1.0).theta


def _deep():
    p = synthetic.deep_linear(n=40, d_in=3, d_out=3, hidden=(3, 3), seed=1)
    p = kdsim.problems.deep_linear.DeepLinear(p.A, p.Y, hidden=(3, 3), init_scale=0.5)
    return p, teachers.at_distance(p, 1.0).theta


def _mlp(activation="relu", loss="softmax", bias=True):
    """A tiny one-hidden-layer MLP (4 → 5 → 3) and a same-architecture teacher near its x*."""
    r = np.random.default_rng(4)
    A = r.standard_normal((30, 4))
    y = np.arange(30) % 3 if loss == "softmax" else r.standard_normal((30, 2))
    p = kdsim.MLP(A, y, hidden=(5,), activation=activation, loss=loss, bias=bias, l2=0.05)
    return p, p.solution() + 0.2 * np.random.default_rng(1).standard_normal(p.dim)


def _mlp_tanh_squared():
    return _mlp("tanh", "squared", bias=False)


CASES = {
    "ls-kd": (_ls, "kd", 0.05, 2),
    "ls-corrected": (_ls, "corrected", 0.05, 1),
    "softmax-kd_loss": (_softmax, "kd_loss", 0.2, 4),
    "softmax-corrected": (_softmax, "corrected", 0.2, 4),
    "deep-kd": (_deep, "kd", 0.02, 3),
    "deep-sgd": (_deep, "sgd", 0.02, 3),
    "mlp-kd": (_mlp, "kd", 0.1, 3),
    "mlp-kd_loss": (_mlp_tanh_squared, "kd_loss", 0.1, 3),
}


def _plan(case, crn=True, steps=40, step=None):
    make, est, gam, b = CASES[case]
    p, theta = make()
    plan = make_plan(p, theta, [0.0, 0.5, 1.0], step or gam, steps, 5, b, est, 10, seed=7,
                     common_random_numbers=crn)
    return p, plan


def _tol(p):
    return 1e-12 * max(1.0, abs(p.f_star))


# ------------------------------------------------------------------- numpy baseline
@pytest.mark.parametrize("case", list(CASES))
def test_numpy_baseline_matches_reference_engine(case):
    p, plan = _plan(case)
    assert_same_run(baseline_numpy.run(p, plan), run_arrays(reference, p, plan), sub_atol=_tol(p))


def test_numpy_baseline_without_common_random_numbers():
    p, plan = _plan("softmax-kd_loss", crn=False)
    assert not np.all(plan.streams == plan.streams[0])
    assert_same_run(baseline_numpy.run(p, plan), run_arrays(reference, p, plan), sub_atol=_tol(p))


def test_numpy_baseline_float32_matches_numba_engine():
    from kdsim.engines import numba_cpu
    p, plan = _plan("ls-kd")
    want = run_arrays(numba_cpu, p, plan, dtype="float32")
    got = baseline_numpy.run(p, plan, "float32")
    assert got["x_final"].dtype == np.float64
    assert_same_run(got, want, rtol=1e-4)


def test_numpy_baseline_divergence_matches_reference():
    p, plan = _plan("ls-kd", step=20.0, steps=60)         # far beyond 2/L: every trajectory diverges
    want = run_arrays(reference, p, plan)
    assert np.all(want["diverged_step"] > 0)
    assert_same_run(baseline_numpy.run(p, plan), want)


def test_numpy_baseline_uses_kdsim_index_stream(monkeypatch):
    """Every step's minibatches are kdsim.rng.minibatch_indices of the plan's streams."""
    p, plan = _plan("ls-kd")
    seen = []
    real = common.minibatches

    def spy(spec, t):
        idx = real(spec, t)
        seen.append((t, idx.copy()))
        return idx

    monkeypatch.setattr(baseline_numpy, "minibatches", spy)
    baseline_numpy.run(p, plan)
    assert [t for t, _ in seen] == list(range(plan.steps))
    for t, idx in seen[:5]:
        np.testing.assert_array_equal(idx, minibatch_indices(plan.seed, plan.streams[0], t, p.n, plan.batch_size))


def test_prepare_rejects_svrg():
    p, theta = _ls()
    plan = make_plan(p, theta, [1.0], 0.05, 5, 2, 2, "svrg", 5)
    with pytest.raises(ValueError, match="svrg"):
        common.prepare(p, plan)


def test_prepare_rejects_corrected_kd_on_mlps():
    p, theta = _mlp()
    plan = make_plan(p, theta, [1.0], 0.05, 5, 2, 2, "corrected", 5)
    with pytest.raises(ValueError, match="corrected"):
        common.prepare(p, plan)


# --------------------------------------------------------------------- JAX baseline
needs_jax = pytest.mark.skipif(not baseline_jax.available(), reason="JAX not installed (extra 'bench')")


@needs_jax
@pytest.mark.parametrize("case", ["ls-kd", "softmax-corrected", "deep-kd", "mlp-kd", "mlp-kd_loss"])
def test_jax_baseline_matches_reference_engine(case):
    p, plan = _plan(case)
    got = baseline_jax.run(p, plan)
    assert got["timing"]["compile_s"] > 0 and got["timing"]["run_s"] > 0
    assert_same_run(got, run_arrays(reference, p, plan), sub_atol=_tol(p))


@needs_jax
def test_jax_baseline_float32_and_uneven_records():
    from kdsim.engines import numba_cpu
    make, est, gam, b = CASES["ls-kd"]
    p, theta = make()
    plan = make_plan(p, theta, [0.0, 1.0], gam, 23, 4, b, est, 10, seed=3, dtype="float32")
    assert list(plan.record_steps) == [0, 10, 20, 23]
    assert_same_run(baseline_jax.run(p, plan, "float32"), run_arrays(numba_cpu, p, plan, dtype="float32"), rtol=1e-4)


@needs_jax
def test_jax_baseline_without_common_random_numbers():
    p, plan = _plan("ls-corrected", crn=False)
    assert_same_run(baseline_jax.run(p, plan), run_arrays(reference, p, plan))


@needs_jax
def test_jax_indices_are_kdsim_rng():
    p, plan = _plan("softmax-kd_loss")
    idx = common.all_minibatches(common.prepare(p, plan))
    assert idx.shape == (plan.n_seeds, plan.steps, plan.batch_size)
    for t in (0, 1, plan.steps - 1):
        np.testing.assert_array_equal(idx[:, t], minibatch_indices(plan.seed, plan.streams[0], t, p.n,
                                                                   plan.batch_size))


def test_jax_absence_is_reported_cleanly(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)          # import jax now raises ImportError
    assert baseline_jax.available() is False
    assert baseline_jax.versions() is None
    p, plan = _plan("ls-kd")
    with pytest.raises(ImportError, match="pip install"):
        baseline_jax.build(p, plan)


# -------------------------------------------------------------- plain numba baseline
def test_plain_numba_baseline_one_layer_matches_reference():
    from benchmarks import baseline_numba
    for case in ("ls-corrected", "softmax-kd_loss"):
        p, plan = _plan(case)
        assert_same_run(baseline_numba.run(p, plan), run_arrays(reference, p, plan), sub_atol=_tol(p))


@pytest.mark.slow
def test_plain_numba_baseline_mlp_matches_reference():
    """W5's kernel (about 14 s to compile with an empty numba cache, hence slow): ReLU with biases and
    softmax, and tanh without biases and squared loss."""
    from benchmarks import baseline_numba
    for case in ("mlp-kd", "mlp-kd_loss"):
        p, plan = _plan(case)
        assert_same_run(baseline_numba.run(p, plan), run_arrays(reference, p, plan), sub_atol=_tol(p))


@pytest.mark.slow
def test_plain_numba_baseline_deep_matches_reference():
    from benchmarks import baseline_numba
    p, plan = _plan("deep-kd")
    assert_same_run(baseline_numba.run(p, plan), run_arrays(reference, p, plan), sub_atol=_tol(p))


# ------------------------------------------------------------- workloads and harness
def test_workloads_are_the_issue_sizes():
    w1, w2, w3, w4, w5 = (WORKLOADS[k] for k in ("W1", "W2", "W3", "W4", "W5"))
    assert (w1.problem().n, w1.problem().dim, w1.seeds, w1.n_lams, w1.steps, w1.batch, w1.record_every) == \
        (1000, 50, 4096, 5, 2000, 1, 10)
    assert w1.dtypes == ("float64", "float32") and w2.dtypes == ("float64", "float32")
    assert (w2.problem().dim, w2.seeds, w2.steps) == (500, 1024, 1000)
    p3 = w3.problem()
    assert p3.A.shape == (1797, 65) and p3.n_classes == 10 and p3.l2 == 1e-2 and np.all(p3.A[:, -1] == 1)
    assert (w3.seeds, w3.n_lams, w3.steps, w3.batch) == (1024, 3, 2000, 10)
    p4 = w4.problem()
    assert p4.dims == (32, 32, 32, 32) and p4.loss_type == "squared"
    assert (w4.seeds, w4.steps, w4.batch) == (1024, 2000, 8)
    p5 = w5.problem()                                      # no solve: the MLP only
    assert p5.dims == (64, 32, 10) and p5.activation == "relu" and p5.bias and p5.loss_type == "softmax"
    assert p5.A.shape == (1797, 64) and p5.l2 == 1e-3 and p5.dim == 2410
    assert (w5.seeds, w5.n_lams, w5.steps, w5.batch, w5.estimator, w5.step_size()) == (1024, 3, 2000, 10, "kd", 0.05)
    for w in WORKLOADS.values():
        for size in [w.quick, *w.baseline.values()]:
            assert size.seeds <= w.seeds and size.steps <= w.steps


def test_flop_convention_least_squares():
    d = 50
    # per sample: aᵀx (2d), residual − b_i − a·rθ_i (3), accumulate a_i r_i (2d); update 2d
    assert common.step_flops((d, 1), 1, "squared", True, False, False) == 4 * d + 3 + 2 * d
    assert common.record_flops("least_squares", (d, 1), 1000, 0.0) == 6 * d + d * (d + 1) + 2 * d
    w = WORKLOADS["W1"]
    s, r = w.flop_terms()
    assert (s, r) == (303, 2950)
    assert w.useful_flops(2, 20) == 5 * 2 * (20 * 303 + 3 * 2950)


def test_flop_convention_mlp():
    # W5, 64 → 32 → 10 with biases and ReLU, b = 10, per sample: forward 2(64·32 + 32·10) = 4,736 + 42 bias
    # adds + 32 ReLUs; softmax residual 50 + teacher 20; weight gradients 4,736 + bias gradients 42; the
    # hidden delta 2·32·10 = 640 + 32 ReLU derivatives: 10,330. Per step + (2 + 2)·dim, dim = 2,410.
    assert common.step_flops((64, 32, 10), 10, "softmax", True, False, True, activation=True, biases=True) == \
        10 * 10330 + 4 * 2410
    # one record: the forward pass of the 1,797 samples (4,810) and the loss (50) per sample, the ridge
    # (2·dim) and the two distances (3 per coordinate each): over x, or over the n·K outputs
    fwd = 4736 + 42 + 32 + 50
    assert common.record_flops("mlp", (64, 32, 10), 1797, 1e-3, biases=True, activation=True) == \
        6 * 2410 + 1797 * fwd + 2 * 2410
    assert common.record_flops("mlp", (64, 32, 10), 1797, 1e-3, biases=True, activation=True,
                               function_space=True) == 6 * 17970 + 1797 * fwd + 2 * 2410
    # without biases and activation the MLP's step is the deep linear count
    assert common.step_flops((4, 3, 2), 5, "squared", False, False, True, activation=False, biases=False) == \
        common.step_flops((4, 3, 2), 5, "squared", False, False, True)


def test_harness_measurements_are_positive():
    peak = harness.gemm_peak(n=64, repeats=1)
    assert peak["float64"]["gflops"] > 0 and peak["float32"]["gflops"] > 0
    assert harness.copy_bandwidth(mib=1, repeats=1)["gbs"] > 0
    calls = iter([3.0, 1.0, 2.0])
    t = harness.best_of(lambda: (next(calls), {}), repeats=3)
    assert t.best_s == 1.0 and t.times == [3.0, 1.0, 2.0]
    assert len(harness.load()) == 3
    info = harness.machine()
    assert info["logical_cores"] >= 1 and info["numpy"] == np.__version__


@pytest.mark.skipif(__import__("shutil").which("nm") is None, reason="needs binutils' nm")
def test_profile_names_numba_symbols_and_writes_a_perf_map_of_compiled_code(tmp_path):
    """benchmarks/perf_profile.py: numba's mangled names read back as dotted paths, and the perf map lists a
    function compiled in this process at the address numba runs it from."""
    import numba
    from benchmarks import perf_profile as profile
    name = "_ZN5kdsim7engines16_kernels_layered24_softmax_layer_residualsB3v74B100c8tJTIeFIjx"
    assert profile.short_name(name) == "kdsim.engines._kernels_layered._softmax_layer_residuals"
    assert profile.short_name("gc_collect_main") == "gc_collect_main"

    @numba.njit
    def triple_plus_one(v):
        return 3 * v + 1

    assert triple_plus_one(2) == 7
    n = profile.write_perf_map(str(tmp_path / "perf.map"))
    cres = next(iter(triple_plus_one.overloads.values()))
    address = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
    rows = [ln.split() for ln in (tmp_path / "perf.map").read_text().splitlines()]
    assert n == len(rows) and [f"{address:x}", cres.fndesc.llvm_func_name] in [[r[0], r[2]] for r in rows]
