"""The GPU engine (backend "cupy", kdsim.engines.cupy_gpu).

Default set (no GPU needed):
* CuPy's absence is reported with an ImportError naming ``pip install kdsim[gpu]``,
  ``available()`` is False then, and importing kdsim never imports CuPy;
* ``cupy_gpu.run`` runs end to end against a strict stand-in for CuPy ("fakecupy":
  numpy underneath, but its arrays refuse to mix with host numpy arrays, as CuPy's do,
  and results must come back through ``asnumpy``), so the host/device discipline of the
  engine is tested on the CPU.

Tests marked ``gpu`` need CuPy and a usable CUDA device; they skip cleanly otherwise.
Tolerances as in test_engine_batched.py (rtol 1e-10 plus 1e-12 of the trajectory's
largest value in float64). On a GPU, chunked and unchunked runs may reduce in another
order (cuBLAS picks kernels by shape), so they are compared to 1e-12 relative, not bit
for bit.
"""
import importlib.util
import subprocess
import sys
import types

import numpy as np
import pytest

import kdsim
from kdsim import rng
from kdsim.engines import batched, cupy_gpu, reference
from kdsim.estimators import ESTIMATORS
from kdsim.problems import synthetic as syn
from kdsim.problems.deep_linear import DeepLinear
from kdsim.simulate import make_plan

from engine_helpers import assert_records_close, ls_problem  # noqa: E402
from engine_helpers import coefficients_of, last_timing, run_arrays  # noqa: E402,F401

ESTS = list(ESTIMATORS)


# --------------------------------------------------------------------------- absence
@pytest.fixture
def no_cupy(monkeypatch):
    """A process in which ``import cupy`` fails."""
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setattr(cupy_gpu, "_CHECKED", [])


def test_missing_cupy_is_reported_clearly(no_cupy):
    assert cupy_gpu.available() is False
    ok, reason = cupy_gpu.gpu_status()
    assert not ok and "pip install kdsim[gpu]" in reason
    p = ls_problem()
    plan = make_plan(p, p.solution(), [0.5], 0.05, 5, 2)
    for call in (cupy_gpu.import_cupy, cupy_gpu.require, lambda: run_arrays(cupy_gpu, p, plan), cupy_gpu.device_budget):
        with pytest.raises(ImportError, match=r"pip install kdsim\[gpu\]"):
            call()
    # the problem support check needs no CuPy
    assert cupy_gpu.supports(p)


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed here")
def test_this_environment_reports_absence():
    assert not cupy_gpu.available()
    with pytest.raises(ImportError, match=r"pip install kdsim\[gpu\]"):
        cupy_gpu.require()


def test_importing_kdsim_does_not_import_cupy():
    code = ("import sys, kdsim, kdsim.engines.cupy_gpu, kdsim.engines.batched; "
            "print('cupy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- strict stand-in
class DeviceArray(np.ndarray):
    """numpy memory that, like a CuPy array, refuses to meet a host ndarray in an operation."""

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        _check_device(inputs + (out or ()))
        if out is not None:
            kwargs["out"] = tuple(_host(o) for o in out)
        return _device(getattr(ufunc, method)(*(_host(x) for x in inputs), **kwargs))

    def __array_function__(self, func, types_, args, kwargs):
        _check_device(list(args) + list(kwargs.values()))
        return _device(func(*_unwrap(args), **_unwrap(kwargs)))


def _check_device(items):
    for x in items:
        if isinstance(x, (list, tuple)):
            _check_device(x)
        elif isinstance(x, np.ndarray) and not isinstance(x, DeviceArray) and x.ndim > 0:
            raise TypeError(f"host numpy array of shape {x.shape} mixed with device arrays")


def _host(x):
    return x.view(np.ndarray) if isinstance(x, DeviceArray) else x


def _unwrap(x):
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return _host(x)


def _device(x):
    if isinstance(x, np.ndarray) and not isinstance(x, DeviceArray):
        return x.view(DeviceArray)
    if isinstance(x, tuple):
        return tuple(_device(v) for v in x)
    return x


class FakeCupy(types.ModuleType):
    """The parts of the CuPy API the engine uses, on numpy memory with DeviceArray semantics."""

    def __init__(self, devices=1, free=2**30):
        super().__init__("cupy")
        self.transfers_to_host = 0
        self.cuda = types.SimpleNamespace(
            runtime=types.SimpleNamespace(getDeviceCount=lambda: devices),
            Device=lambda: types.SimpleNamespace(mem_info=(free, 2 * free)))

    def asarray(self, a, dtype=None):
        return np.array(_host(a), dtype=dtype).view(DeviceArray)

    def asnumpy(self, a):
        assert isinstance(a, DeviceArray), "asnumpy of a host array"
        self.transfers_to_host += 1
        return np.array(a.view(np.ndarray))

    def __getattr__(self, name):
        attr = getattr(np, name)
        if callable(attr) and not isinstance(attr, type):
            def wrapped(*args, **kwargs):
                _check_device(list(args) + list(kwargs.values()))
                return _device(attr(*_unwrap(args), **_unwrap(kwargs)))
            return wrapped
        return attr


@pytest.fixture
def fakecupy(monkeypatch):
    fake = FakeCupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(cupy_gpu, "_CHECKED", [])
    return fake


def test_stand_in_is_strict(fakecupy):
    a = fakecupy.arange(3.0)
    with pytest.raises(TypeError, match="host numpy array"):
        a + np.ones(3)
    assert isinstance(fakecupy.matmul(a[None], a[:, None]), DeviceArray)


@pytest.mark.parametrize("estimator,crn", [("kd", True), ("sgd", True), ("corrected", False), ("svrg", True)])
def test_stand_in_least_squares(fakecupy, estimator, crn):
    assert cupy_gpu.available()
    p = ls_problem(0.1)
    theta = p.solution() + 0.3
    plan = make_plan(p, theta, [0.0, 0.5, 1.0, 1e30], 0.6, 200, 4, batch_size=2, estimator=estimator,
                     record_every=20, common_random_numbers=crn, svrg_period=5)
    got = run_arrays(cupy_gpu, p, plan)
    timing = last_timing()
    assert timing["array_module"] == "cupy" and timing["chunks"] == 1
    # the five result arrays (+ the affine path's unsafe-seed flags) and nothing else
    assert fakecupy.transfers_to_host == (6 if timing["kernel"] == "affine" else 5)
    assert_records_close(got, run_arrays(reference, p, plan))
    assert all(isinstance(v, np.ndarray) and not isinstance(v, DeviceArray) for v in got.values())


def test_stand_in_affine_fallback_and_chunks(fakecupy):
    p = ls_problem()
    theta = p.solution() + np.array([0.3, -0.1, 0.2])
    plan = make_plan(p, theta, [0.0, 1.0, 5.0], 1.6, 300, 24, batch_size=1, record_every=10, seed=3)
    want = run_arrays(batched, p, plan)
    got = run_arrays(cupy_gpu, p, plan, chunk_seeds=10)
    assert last_timing()["chunks"] == 3 and last_timing()["fallback_seeds"] > 0
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-13, atol=0)
    coeffs = coefficients_of(batched, p, plan, xp=fakecupy)
    np.testing.assert_array_equal(coeffs["diverged_step"], want["diverged_step"])


def _family(name, n):
    if name == "softmax":
        return syn.softmax(n=n, d=2, n_classes=3, l2=0.1, bias=True, seed=1)
    if name == "logistic":
        return syn.logistic(n=n, d=3, l2=0.1, seed=1)
    if name == "poisson":
        return syn.poisson(n=n, d=3, l2=0.05, seed=1)
    if name == "deep_linear":
        dl = syn.deep_linear(n=n, d_in=3, d_out=2, hidden=(3, 2), seed=1)
        return DeepLinear(dl.A, dl.Y, hidden=(3, 2), l2=0.05)
    A = np.random.default_rng(3).standard_normal((n, 3))
    return DeepLinear(A, np.arange(n) % 3, hidden=(2,), loss="softmax", l2=0.1)


FAMILIES = ["softmax", "logistic", "poisson", "deep_linear", "deep_linear_softmax"]


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("estimator", ["corrected", "svrg"])
def test_stand_in_other_families(fakecupy, name, estimator):
    p = _family(name, 15)
    theta = p.solution() + 0.2
    for b in (3, p.n):
        plan = make_plan(p, theta, [0.0, 0.5, 1.0], 0.05, 100, 3, batch_size=b, estimator=estimator,
                         record_every=20, svrg_period=6)
        assert_records_close(run_arrays(cupy_gpu, p, plan), run_arrays(reference, p, plan))
    f32 = run_arrays(cupy_gpu, p, plan, dtype="float32")
    assert_records_close(f32, run_arrays(reference, p, plan), rtol=2e-4, scale_tol=1e-5, x_rtol=2e-4)


def test_stand_in_index_stream(fakecupy):
    streams = np.arange(50, dtype=np.uint64) + np.uint64(2**33)
    for n, b in ((97, 1), (97, 5), (97, 40), (97, 97), (1, 1)):
        got = rng.minibatch_indices(17, streams, 123, n, b, xp=fakecupy)
        np.testing.assert_array_equal(fakecupy.asnumpy(got), kdsim.rng.minibatch_indices(17, streams, 123, n, b))


def test_no_usable_device_is_reported(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", FakeCupy(devices=0))
    monkeypatch.setattr(cupy_gpu, "_CHECKED", [])
    assert not cupy_gpu.available()
    p = ls_problem()
    with pytest.raises(RuntimeError, match="no CUDA device"):
        run_arrays(cupy_gpu, p, make_plan(p, p.solution(), [0.5], 0.05, 5, 2))


# --------------------------------------------------------------------------- real GPU
gpu = pytest.mark.skipif(not cupy_gpu.available(), reason="needs CuPy and a usable CUDA device")


@pytest.mark.gpu
@gpu
def test_gpu_index_stream_equals_kdsim_rng():
    import cupy
    r = np.random.default_rng(0)
    streams = np.concatenate([np.arange(2000, dtype=np.uint64), kdsim.rng.stream_ids(100, 3, False).ravel()])
    for _ in range(30):
        n = int(r.integers(1, 2000))
        b = int(r.integers(1, min(n, 80) + 1))
        seed, step = int(r.integers(0, 2**62)), int(r.integers(0, 2**40))
        got = cupy.asnumpy(rng.minibatch_indices(seed, streams, step, n, b, xp=cupy))
        np.testing.assert_array_equal(got, kdsim.rng.minibatch_indices(seed, streams, step, n, b))


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("estimator", ESTS)
@pytest.mark.parametrize("crn", [True, False])
def test_gpu_least_squares_matches_reference(estimator, crn):
    p = syn.least_squares(n=50, d=6, cond=10, seed=1, l2=0.05)
    theta = p.solution() + 0.2
    for b in (1, 4, 50):
        plan = make_plan(p, theta, [0.0, 0.4, 1.0], 0.2, 300, 16, batch_size=b, estimator=estimator,
                         record_every=25, common_random_numbers=crn, svrg_period=7)
        assert_records_close(run_arrays(cupy_gpu, p, plan), run_arrays(reference, p, plan))


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("estimator", ESTS)
def test_gpu_other_families_match_reference(name, estimator):
    p = _family(name, 40)
    theta = p.solution() + 0.2
    for b in (1, 5, p.n):
        plan = make_plan(p, theta, [0.0, 0.5, 1.0], 0.05, 150, 8, batch_size=b, estimator=estimator,
                         record_every=15, svrg_period=6)
        assert_records_close(run_arrays(cupy_gpu, p, plan), run_arrays(reference, p, plan))


@pytest.mark.gpu
@gpu
def test_gpu_divergence_float32_and_chunks():
    p = ls_problem()
    theta = p.solution() + np.array([0.3, -0.1, 0.2])
    plan = make_plan(p, theta, [0.0, 1.0, 5.0, 1e30], 1.6, 300, 40, batch_size=1, record_every=10, seed=3)
    got = run_arrays(cupy_gpu, p, plan)
    assert_records_close(got, run_arrays(reference, p, plan))
    chunked = run_arrays(cupy_gpu, p, plan, chunk_seeds=7)
    for k in got:
        np.testing.assert_allclose(chunked[k], got[k], rtol=1e-12, atol=0)
    plan = make_plan(p, theta, [0.0, 0.5, 1.0], 0.05, 400, 64, batch_size=3, record_every=40)
    for path in ("affine", "trajectory"):
        assert_records_close(run_arrays(cupy_gpu, p, plan, dtype="float32", path=path), run_arrays(reference, p, plan),
                             rtol=2e-4, scale_tol=1e-5, x_rtol=2e-4)


@pytest.mark.gpu
@gpu
def test_gpu_throughput_report(capsys):
    # W1-like least squares (n = 1000, d = 50, 5 λ, b = 1): prints trajectory-steps per second.
    p = syn.least_squares(n=1000, d=50, cond=10, seed=0)
    theta = p.solution() + 0.1
    for seeds in (4096, 65536):
        plan = make_plan(p, theta, [0.0, 0.25, 0.5, 0.75, 1.0], 0.05, 200, seeds, record_every=20)
        run_arrays(cupy_gpu, p, plan)                      # warm-up (kernel compilation, memory pool)
        run_arrays(cupy_gpu, p, plan)
        t = last_timing()
        with capsys.disabled():
            print(f"\ncupy W1 seeds={seeds}: {t['throughput']:.3g} trajectory-steps/s ({t['run_s']:.2f} s)")
        assert np.isfinite(t["throughput"]) and t["fallback_seeds"] == 0
