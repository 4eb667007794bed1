"""The CUDA engine (backend "cuda", kdsim.engines.cuda_gpu) against the reference engine.

The kernels are numba-cuda kernels. Without a GPU, numba-cuda's simulator runs them on the CPU, but
only when ``NUMBA_ENABLE_CUDASIM=1`` is set before numba is imported, so the tests marked ``cudasim``
run in a separate pytest process that ``test_cudasim_tests_pass_in_their_own_process`` starts (the
README's test command therefore runs them; ``pytest -m cudasim`` with the variable set runs them
directly, and on a machine with a GPU they run on the device). Every kernel path is compared with the
reference engine trajectory by trajectory (same index stream): every family of the kernel spec ×
every estimator × every sampling scheme, momentum, temperature, a ridge without the bias, float32,
kept iterates and divergence, at tiny sizes (the simulator runs each thread in Python). Tolerance:
1e-9 relative in float64 (the kernels sum in another order than the reference's BLAS products).

Default set, no GPU needed: a clear one-line error without CuPy or a device, and the kernel compiled
to PTX for a real GPU (compute capability 9.0) when numba-cuda's NVVM is installed.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kdsim
from kdsim.engines import cuda_gpu, driver, numba_cpu, reference
from kdsim.problems import MLP, synthetic
from kdsim.simulate import make_plan

sys.path.insert(0, str(Path(__file__).parent))
from engine_helpers import assert_records_close, run_arrays  # noqa: E402

HERE = Path(__file__).parent
needs_kernels = pytest.mark.skipif(not cuda_gpu.available(),
                                   reason="needs NUMBA_ENABLE_CUDASIM=1 (set before numba is imported) or a GPU")


def problems():
    r = np.random.default_rng(0)
    A = r.standard_normal((10, 3))
    return {
        "least_squares": synthetic.least_squares(n=10, d=3, seed=1, l2=0.1),
        "softmax": synthetic.softmax(n=12, d=2, n_classes=3, l2=0.1),
        "logistic": synthetic.logistic(n=10, d=3, l2=0.1),
        "poisson": synthetic.poisson(n=10, d=2, l2=0.1),
        "deep_linear": synthetic.deep_linear(n=10, d_in=3, d_out=2, hidden=(2,)),
        "deep_softmax": kdsim.DeepLinear(A, np.arange(10) % 3, hidden=(3,), loss="softmax", l2=0.1),
        "mlp": MLP(A, np.arange(10) % 3, hidden=(4,), activation="tanh", l2=0.1),
    }


def teacher_of(name, p):
    return p.default_x0() + 0.1 if name.startswith("deep") else p.solution() + 0.2


def compare(p, theta, steps=12, **kw):
    kw = {"batch_size": 3, "record_every": 4, "seed": 5, "svrg_period": 5, "x0": p.default_x0(), **kw}
    plan = make_plan(p, theta, [0.0, 0.5], 0.05, steps, 2, **kw)
    want = run_arrays(reference, p, plan)
    got = run_arrays(cuda_gpu, p, plan)
    assert_records_close(got, want, rtol=1e-9, scale_tol=1e-11, x_rtol=1e-9)
    return got, want


# ------------------------------------------------------------------ the kernels (simulator or GPU)
@pytest.mark.cudasim
@needs_kernels
@pytest.mark.parametrize("name", list(problems()))
@pytest.mark.parametrize("estimator", ["sgd", "kd", "kd_loss", "corrected", "svrg"])
def test_every_family_and_estimator_matches_the_reference(name, estimator):
    p = problems()[name]
    for sampling in ("iid", "reshuffle", "shuffle_once"):
        compare(p, teacher_of(name, p), estimator=estimator, sampling=sampling)


@pytest.mark.cudasim
@needs_kernels
@pytest.mark.parametrize("kw", [dict(momentum=0.5), dict(sampling="reshuffle", momentum=0.9, drop_last=True),
                                dict(batch_size=1), dict(batch_size=10), dict(lam_schedule="decay:0.8",
                                                                              sampling="reshuffle")])
def test_momentum_batch_sizes_and_schedules_match_the_reference(kw):
    for name in ("least_squares", "mlp"):
        p = problems()[name]
        compare(p, teacher_of(name, p), estimator="kd", **kw)


@pytest.mark.cudasim
@needs_kernels
def test_temperature_ridge_without_bias_and_teacher_outputs_match_the_reference():
    p = problems()["mlp"]
    compare(p, teacher_of("mlp", p), estimator="kd_loss", temperature=2.0)
    s = synthetic.softmax(n=12, d=2, n_classes=3, l2=0.1, l2_bias=False)
    compare(s, s.solution() + 0.2, estimator="kd", temperature=2.0)
    from kdsim import teachers
    wide = MLP(p.A, np.arange(10) % 3, hidden=(6,), activation="relu", l2=0.1)
    compare(p, teachers.from_model(p, wide, wide.default_x0()).theta, estimator="kd_loss")


@pytest.mark.cudasim
@needs_kernels
def test_float32_iterates_and_divergence():
    p = problems()["softmax"]
    theta = teacher_of("softmax", p)
    plan = make_plan(p, theta, [0.0, 0.5], 0.05, 12, 2, batch_size=3, record_every=4, seed=5, x0=p.default_x0())
    want = run_arrays(reference, p, plan)
    got = run_arrays(cuda_gpu, p, plan, dtype="float32")
    np.testing.assert_allclose(got["dist2_opt"], want["dist2_opt"], rtol=1e-4, atol=1e-6)
    res = kdsim.simulate(p, theta, [0.5], 0.05, 8, 2, batch_size=3, record_every=4, seed=5, backend="cuda",
                         keep_iterates=True)
    ref = kdsim.simulate(p, theta, [0.5], 0.05, 8, 2, batch_size=3, record_every=4, seed=5, backend="numpy",
                         keep_iterates=True)
    np.testing.assert_allclose(res.iterates, ref.iterates, rtol=1e-9, atol=1e-12)
    assert res.timing["engine"] == "cuda"
    q = problems()["least_squares"]
    plan = make_plan(q, q.solution() + 0.1, [0.0, 0.5], 10.0, 120, 2, batch_size=2, record_every=8, seed=5)
    want = run_arrays(reference, q, plan)
    assert (want["diverged_step"] >= 0).any()
    assert_records_close(run_arrays(cuda_gpu, q, plan), want, rtol=1e-9, scale_tol=1e-11, x_rtol=None)


@pytest.mark.cudasim
@needs_kernels
@pytest.mark.parametrize("estimator", ["sgd", "kd", "kd_loss", "corrected"])
def test_least_squares_affine_kernel_matches_the_reference(estimator):
    """One thread per seed, one (u, v) pair for every λ: trajectory by trajectory against the reference,
    every sampling scheme, momentum, a λ schedule and batch size 1, a start away from zero, and without
    ridge (l2 = 0: the kernel's step without the shrink, for sgd and kd also without the shift)."""
    p = problems()["least_squares"]
    no_ridge = synthetic.least_squares(n=10, d=3, seed=1, l2=0.0)
    theta = teacher_of("least_squares", p)
    for kw in (dict(sampling="iid"), dict(sampling="reshuffle"), dict(sampling="shuffle_once", momentum=0.5),
               dict(batch_size=1), dict(lam_schedule="decay:0.8", sampling="reshuffle"), dict(problem=no_ridge),
               dict(problem=no_ridge, batch_size=1, momentum=0.5)):
        p = kw.pop("problem", problems()["least_squares"])
        kw = {"batch_size": 3, "record_every": 4, "seed": 5, "x0": p.default_x0() + 0.3, **kw}
        plan = make_plan(p, theta, [0.0, 0.5, 1.5], 0.05, 12, 2, estimator=estimator, **kw)
        out = driver.run(p, plan, cuda_gpu, growth_limit=None)
        assert out.timing["kernel"] == "cuda_ls_affine"
        assert_records_close(out.arrays, run_arrays(reference, p, plan), rtol=1e-9, scale_tol=1e-11, x_rtol=1e-9)


@pytest.mark.cudasim
@needs_kernels
def test_least_squares_affine_divergence_fallback_iterates_and_coefficients():
    p = problems()["least_squares"]
    plan = make_plan(p, p.solution() + 0.1, [0.0, 0.5, 3.0], 10.0, 120, 3, batch_size=2, record_every=8, seed=5)
    want = run_arrays(reference, p, plan)
    assert (want["diverged_step"] >= 0).all()
    out = driver.run(p, plan, cuda_gpu, growth_limit=None)
    assert out.timing["kernel"] == "cuda_ls_affine" and out.timing["fallback_seeds"] > 0
    np.testing.assert_array_equal(out.arrays["diverged_step"], want["diverged_step"])
    assert_records_close(out.arrays, want, rtol=1e-9, scale_tol=1e-11, x_rtol=None)
    theta = teacher_of("least_squares", p)
    plan = make_plan(p, theta, [0.0, 0.5, 1.5], 0.05, 12, 3, batch_size=3, record_every=4, seed=5,
                     x0=p.default_x0() + 1.0, keep_iterates=True)
    got = driver.run(p, plan, cuda_gpu, growth_limit=None).arrays
    np.testing.assert_allclose(got["iterates"], run_arrays(reference, p, plan)["iterates"], rtol=1e-9, atol=1e-12)
    mine, cpu = (driver.coefficients(p, plan, e).arrays for e in (cuda_gpu, numba_cpu))
    for name in mine:
        np.testing.assert_allclose(mine[name], cpu[name], rtol=1e-10, atol=1e-13, err_msg=name)
    assert driver.run(p, plan, cuda_gpu, path="trajectory").timing["kernel"] == "cuda_layered_traj"
    with pytest.raises(ValueError, match="affine form needs"):
        driver.run(p, make_plan(p, theta, [0.5], 0.05, 4, 2, estimator="svrg"), cuda_gpu, path="affine")


@pytest.mark.cudasim
@needs_kernels
@pytest.mark.parametrize("name", ["least_squares", "softmax", "mlp"])
def test_reduce_runs_on_the_device_and_equals_the_moments_of_the_full_records(name, monkeypatch):
    """``reduce=True``: the chunk's records stay where the kernel wrote them (the driver asks for them with
    ``device=True``); divergence and the moments are computed there. Equal to the moments of the reference's
    full records, over several chunks, with diverged trajectories and (least squares) seeds the affine form
    leaves to the per-trajectory kernel."""
    p = problems()[name]
    step = 3.0 if name == "least_squares" else 0.05
    lams = [0.0, 0.5, 3.0] if name == "least_squares" else [0.0, 0.5]
    plan = make_plan(p, teacher_of(name, p), lams, step, 40, 5, batch_size=2, record_every=8, seed=5)
    asked = []
    chunk = driver._chunk
    monkeypatch.setattr(driver, "_chunk", lambda *a: asked.append(a[-1]) or chunk(*a))
    got = driver.run(p, plan, cuda_gpu, reduce=True, chunk_seeds=2).arrays
    assert asked == [True, True, True]
    full = driver.run(p, plan, reference).arrays
    keep = full["diverged_step"] < 0
    np.testing.assert_array_equal(got["diverged_step"], full["diverged_step"])
    np.testing.assert_array_equal(got["count"], keep.sum(axis=1))
    if name == "least_squares":
        assert 0 < keep.sum() < keep.size
        wild = make_plan(p, p.solution() + 0.1, [0.0, 0.5, 3.0], 10.0, 120, 3, batch_size=2, record_every=8, seed=5)
        out = driver.run(p, wild, cuda_gpu, reduce=True, chunk_seeds=2)
        assert out.timing["fallback_seeds"] > 0                   # rerun per trajectory into device arrays
        np.testing.assert_array_equal(out.arrays["diverged_step"], driver.run(p, wild, reference).arrays["diverged_step"])
    for rec in ("dist2_opt", "subopt", "dist2_teacher"):
        for k in range(len(lams)):
            v = full[rec][k][keep[k]]
            if len(v) > 1:
                np.testing.assert_allclose(got["mean"][rec][k], v.mean(axis=0), rtol=1e-9, err_msg=rec)
                np.testing.assert_allclose(got["var"][rec][k], v.var(axis=0, ddof=1), rtol=1e-8, atol=1e-300)


@pytest.mark.cudasim
@needs_kernels
def test_blocks_narrower_than_the_widest_give_the_same_trajectories(monkeypatch):
    """With many multiprocessors the launch takes blocks of one warp (``threads_per_block``); the threads
    past the last trajectory or seed return at once, so the records are those of the reference."""
    from kdsim.engines import _kernels_cuda as K
    monkeypatch.setattr(cuda_gpu, "sm_count", lambda: 10**6)
    assert K.threads_per_block(6, cuda_gpu.sm_count()) == K.WARP
    for name in ("least_squares", "softmax"):
        p = problems()[name]
        plan = make_plan(p, teacher_of(name, p), [0.0, 0.5, 1.5], 0.05, 12, 3, batch_size=3, record_every=4, seed=5,
                         x0=p.default_x0() + 0.3)
        out = driver.run(p, plan, cuda_gpu, growth_limit=None)
        assert_records_close(out.arrays, run_arrays(reference, p, plan), rtol=1e-9, scale_tol=1e-11, x_rtol=1e-9)


@pytest.mark.cudasim
@needs_kernels
@pytest.mark.parametrize("name", ["softmax", "deep_linear", "mlp"])
def test_a_thread_and_a_warp_per_trajectory_compute_the_same_trajectories(name):
    """The per-trajectory kernel run by one thread (``lanes=1``) and by lanes that share each step's loops
    against the reference, and against each other to 1e-13 (an item of a shared loop does its arithmetic in
    the one-thread order), on one layer (softmax), layers without biases (deep linear) and with biases and
    an activation (MLP): four lanes, so that each takes several items of a loop, on the estimators with
    full-data passes (corrected KD, SVRG), the teacher at a temperature, reshuffled epochs with a short last
    batch, momentum and a step size that diverges (the lanes take one decision); a whole warp, the engine's
    choice on a GPU for few trajectories, on SVRG with momentum. (The simulator runs each lane as a Python
    thread and polls them at every barrier: a warp costs seconds a step, hence the small set.)"""
    p = problems()[name]
    theta = teacher_of(name, p)
    base = {"batch_size": 3, "record_every": 2, "seed": 5, "svrg_period": 3, "x0": p.default_x0()}
    cases = [(4, dict(estimator="corrected", sampling="reshuffle", batch_size=4)),
             (4, dict(estimator="kd_loss", temperature=2.0 if name != "deep_linear" else 1.0)),
             (4 if name != "mlp" else 32, dict(estimator="svrg", momentum=0.5))]
    for lanes, kw in cases:
        plan = make_plan(p, theta, [0.0, 0.5], 0.05, 8 if lanes < 32 else 4, 1, **{**base, **kw})
        want = run_arrays(reference, p, plan)
        outs = [driver.run(p, plan, cuda_gpu, path="trajectory", lanes=w, growth_limit=None) for w in (1, lanes)]
        assert [o.timing["kernel"] for o in outs] == ["cuda_layered_traj", "cuda_layered_warp"]
        for out in outs:
            assert_records_close(out.arrays, want, rtol=1e-9, scale_tol=1e-11, x_rtol=1e-9)
        np.testing.assert_allclose(outs[1].arrays["x_final"], outs[0].arrays["x_final"], rtol=1e-13, atol=1e-15)
    plan = make_plan(p, theta, [0.0, 0.5], 1000.0, 60, 1, batch_size=2, record_every=8, seed=5, x0=p.default_x0())
    want = run_arrays(reference, p, plan)
    assert (want["diverged_step"] >= 0).all()
    out = driver.run(p, plan, cuda_gpu, path="trajectory", lanes=4, growth_limit=None)
    np.testing.assert_array_equal(out.arrays["diverged_step"], want["diverged_step"])
    assert_records_close(out.arrays, want, rtol=1e-9, scale_tol=1e-11, x_rtol=None)
    # a limit that ‖x_t‖² reaches within the run, not by a factor of 99 a step: the lanes must add up
    # their parts of ‖x‖² before they decide (one lane's part alone stays under it)
    plan = make_plan(p, theta, [0.0, 0.5], 0.05, 8, 1, **{**base, "estimator": "kd"})
    runs = [driver.prepare(p, plan, cuda_gpu, path="trajectory", lanes=w) for w in (1, 4)]
    limit = 0.9 * (runs[0].run_trajectories(np.arange(1))["x_final"] ** 2).sum(axis=-1).min()
    outs = []
    for r in runs:
        r.limit = r.wd.type(limit)
        outs.append(r.run_trajectories(np.arange(1)))
    assert (outs[0]["diverged_step"] > 0).all()
    np.testing.assert_array_equal(outs[1]["diverged_step"], outs[0]["diverged_step"])
    assert np.isnan(outs[1]["x_final"]).all()


# ------------------------------------------------------------------ default set
def test_a_warp_per_trajectory_only_where_threads_would_leave_the_device_empty():
    """A warp per trajectory while the trajectories are fewer than the threads the multiprocessors hold
    (2,048 each: 270,336 on an H100's 132), else a thread; ``lanes`` not a power of two up to 32 is an
    error."""
    from kdsim.engines._kernels_cuda import WARP, lanes_per_trajectory
    assert WARP == 32
    assert lanes_per_trajectory(3072, 132) == 32                   # W3, W5: 1,024 seeds × 3 λ
    assert lanes_per_trajectory(65536 * 5, 132) == 1               # W1's seeds × 5 λ, per trajectory
    assert lanes_per_trajectory(132 * 2048 - 1, 132) == 32 and lanes_per_trajectory(132 * 2048, 132) == 1
    with pytest.raises(ValueError, match="n_traj and sm_count"):
        lanes_per_trajectory(0, 132)
    p = problems()["softmax"]
    plan = make_plan(p, teacher_of("softmax", p), [0.5], 0.05, 4, 2)
    for bad in (3, 64, 0):
        with pytest.raises(ValueError, match="lanes must be None or a power of two from 1 to 32"):
            driver.run(p, plan, cuda_gpu, lanes=bad)
def test_threads_per_block_spreads_few_threads_over_the_multiprocessors():
    """Blocks of 128 where every multiprocessor gets one, else halved down to a warp (an H100 has 132)."""
    from kdsim.engines._kernels_cuda import threads_per_block
    assert threads_per_block(65536 * 1, 132) == 128              # W1's seeds: 512 blocks
    assert threads_per_block(132 * 128, 132) == 128
    assert threads_per_block(131 * 128, 132) == 64                # 131 blocks of 128 would leave one idle
    assert threads_per_block(10_000, 132) == 64                   # 157 blocks of 64
    assert threads_per_block(3072, 132) == 32                     # W3, W5: 96 blocks of one warp
    assert threads_per_block(1, 132) == 32 and threads_per_block(10**6, 1) == 128
    with pytest.raises(ValueError, match="n_threads and sm_count"):
        threads_per_block(0, 132)


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", reason="already in the simulator's process")
@pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None, reason="needs numba-cuda (the test extra)")
def test_cudasim_tests_pass_in_their_own_process():
    """The ``cudasim`` tests under numba-cuda's simulator, in a process that conftest.py starts when this test
    is selected (it runs beside the rest of the session); every one passes, none skips."""
    from conftest import background_cudasim
    rc, out = background_cudasim(timeout=900)
    assert rc == 0, out[-5000:]
    summary = out.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "skipped" not in summary, summary


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", reason="the simulator does not compile")
def test_missing_gpu_or_cupy_is_one_clear_error(monkeypatch):
    if cuda_gpu.available():
        pytest.skip("a usable GPU is present")
    p = problems()["least_squares"]
    for backend in ("cuda", "cupy"):
        with pytest.raises((ImportError, RuntimeError)) as err:
            kdsim.simulate(p, p.solution(), [0.5], 0.05, 5, 2, backend=backend)
        text = str(err.value)
        assert "\n" not in text and "backend 'cuda'" in text and ("pip install kdsim[gpu]" in text or "device" in text)


def _nvvm_available():
    try:
        from numba.cuda.cudadrv import nvvm
        nvvm.NVVM()
        return True
    except Exception:  # noqa: BLE001 - NVVM missing or unusable: the compile test skips
        return False


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", reason="the simulator does not compile")
def test_kernel_compiles_to_ptx_for_a_gpu():
    """The simulator runs Python; this compiles the kernels for a real device (sm_90, both dtypes), so code
    the simulator accepts but CUDA does not (allocation, numpy calls, mixed integer types) fails here, and
    the affine least-squares kernel keeps its iterate pair in registers at W1's d = 50."""
    if importlib.util.find_spec("numba_cuda") is None or not _nvvm_available():
        pytest.skip("needs numba-cuda with NVVM (pip install 'numba-cuda[cu13]')")
    code = HERE / "cuda_ptx_compile.py"
    out = subprocess.run([sys.executable, str(code)], capture_output=True, text=True, timeout=600)
    if out.returncode == 0 and out.stdout.startswith("SKIP"):
        pytest.skip("a CUDA compiler library is missing: " + out.stdout[5:].strip())
    assert out.returncode == 0 and out.stdout.count("PTX ok") == 8, out.stdout + out.stderr[-3000:]
