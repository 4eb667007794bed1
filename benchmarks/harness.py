"""Shared benchmark harness: the machine, its load, its measured peak and bandwidth, timing.

* ``machine()``        CPU model (/proc/cpuinfo), cores, memory, library versions, BLAS threads;
* ``load()``           ``os.getloadavg()`` (1, 5, 15 min; includes this process's own threads);
* ``gemm_peak()``      the machine's fp64/fp32 peak as numpy measures it in this run: a large
  square BLAS matrix product (4096² by default), best of 3, 2n³ flops;
* ``copy_bandwidth()`` a STREAM-like copy (``np.copyto`` of a 256 MiB array, best of 5),
  counted as 2 × size bytes (read + write, STREAM's convention: no write-allocate);
* ``best_of()``        run a callable several times, keep the fastest, record the load;
* ``best_of_interleaved()`` the same for several callables whose runs alternate (for ratios);
* ``kdsim_run()``      one run of kdsim's numba engine, with its timing (optionally on a limited
  number of BLAS threads);
* ``numba_cold_compile()`` compile time of kdsim's kernels with an empty numba cache (a subprocess).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load():
    """The load averages (1, 5, 15 minutes)."""
    return tuple(round(v, 2) for v in os.getloadavg())


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            info = fh.read()
    except OSError:
        return platform.processor() or "unknown"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 "unknown")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    simd = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f") if f in flags]
    return f"{model} ({', '.join(simd)})"


def blas_info():
    """The BLAS libraries loaded (numpy's first, then e.g. scipy's) and their thread counts."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {"blas": "unknown (threadpoolctl not installed)", "blas_threads": None}
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    pools.sort(key=lambda p: "numpy" not in p.get("filepath", ""))
    if not pools:
        return {"blas": "none found", "blas_threads": None}
    names = []
    for p in pools:
        owner = next((lib for lib in ("numpy", "scipy") if f"{lib}.libs" in p.get("filepath", "")), "other")
        names.append(f"{owner}: {p.get('internal_api')} {p.get('version')} ({p.get('architecture')}, "
                     f"{p.get('num_threads')} threads)")
    return {"blas": "; ".join(names), "blas_threads": pools[0].get("num_threads")}


def machine():
    """A description of the machine and the software versions."""
    import numba
    import scipy

    import kdsim
    from . import baseline_jax
    mem = None
    try:
        with open("/proc/meminfo") as fh:
            kb = int(next(line for line in fh if line.startswith("MemTotal")).split()[1])
            mem = round(kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    jaxv = baseline_jax.versions()
    return {
        "cpu": _cpu_model(), "logical_cores": os.cpu_count(),
        "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": mem, "python": platform.python_version(), "numpy": np.__version__,
        "scipy": scipy.__version__, "numba": numba.__version__,
        "numba_threads": int(numba.config.NUMBA_NUM_THREADS), "kdsim": kdsim.__version__,
        "jax": None if jaxv is None else f"{jaxv['jax']} (jaxlib {jaxv['jaxlib']}, {jaxv['backend']})",
        **blas_info(), "gpu": "none in this session",
    }


def gemm_peak(n=4096, repeats=3):
    """Best-of-``repeats`` GFLOP/s of an n×n×n numpy matrix product, fp64 and fp32, with the load."""
    rng = np.random.default_rng(0)
    out = {}
    for dtype in ("float64", "float32"):
        a = rng.standard_normal((n, n)).astype(dtype)
        b = rng.standard_normal((n, n)).astype(dtype)
        c = np.empty((n, n), dtype=dtype)
        np.matmul(a[:256, :256], b[:256, :256])            # load the BLAS kernels
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            np.matmul(a, b, out=c)
            best = min(best, time.perf_counter() - t0)
        out[dtype] = {"gflops": 2.0 * n**3 / best / 1e9, "n": n, "best_s": best, "load": load()[0]}
    return out


_PEAK_SCRIPT = r"""
import json, sys
from threadpoolctl import threadpool_info
from benchmarks import harness
out = harness.gemm_peak(int(sys.argv[1]))
out["architecture"] = next((p.get("architecture") for p in threadpool_info() if p.get("user_api") == "blas"), None)
print(json.dumps(out))
"""


def gemm_peak_autodetected(n=4096, timeout=600):
    """``gemm_peak`` in a fresh interpreter without ``OPENBLAS_CORETYPE``, so that OpenBLAS
    picks its kernels for the CPU it detects; with ``"architecture"``, the kernels it chose.

    The environment may pin older kernels (the benchmark machine sets ``Haswell``, AVX2,
    on a CPU with AVX-512: 111 against 187 GFLOP/s fp64); the machine's peak is the faster.
    """
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(n)], capture_output=True, text=True, env=env,
                         timeout=timeout, cwd=REPO)
    if res.returncode != 0:
        raise RuntimeError(f"GEMM peak with auto-detected kernels failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def copy_bandwidth(mib=256, repeats=5):
    """Best-of-``repeats`` STREAM-like copy bandwidth (GB/s, 2 × size bytes per copy)."""
    a = np.ones(mib * 2**20 // 8)
    b = np.empty_like(a)
    np.copyto(b, a)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return {"gbs": 2.0 * a.nbytes / best / 1e9, "mib": mib, "best_s": best, "load": load()[0]}


@dataclass
class Timing:
    """Best of several runs: ``best_s`` (seconds), the load at the end of the best run, all times."""

    best_s: float
    load: float
    times: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)   # what the best run's callable returned (a dict)


def best_of(fn, repeats=3, budget_s=None, min_repeats=2, min_time_s=None, max_repeats=25):
    """Call ``fn()`` at least ``repeats`` times and keep the fastest.

    ``fn`` returns ``(seconds, extra_dict)`` (the time it measured itself, so that set-up
    can be excluded). After ``min_repeats`` runs, stop once ``budget_s`` seconds of runs
    have been spent. With ``min_time_s``, a fast ``fn`` runs more than ``repeats`` times,
    until ``min_time_s`` seconds of runs (at most ``max_repeats`` runs): every row then
    samples the shared machine for a comparable time, instead of a 0.2 s row taking its best
    of three from 0.6 s and a 5 s row from 15 s. The load recorded is the 1-minute load
    average right after the best run.
    """
    best = None
    times = []
    spent = 0.0
    k = 0
    while True:
        secs, extra = fn()
        ld = load()[0]
        times.append(secs)
        spent += secs
        k += 1
        if best is None or secs < best.best_s:
            best = Timing(secs, ld, times, extra)
        if budget_s is not None and k >= min_repeats and spent >= budget_s:
            break
        if k >= max(1, repeats) and (min_time_s is None or spent >= min_time_s or k >= max_repeats):
            break
    best.times = times
    return best


def best_of_interleaved(fns, repeats=3, budget_s=None, min_repeats=2, min_time_s=None, max_repeats=25):
    """``best_of`` for several callables whose times are to be compared: their runs alternate.

    ``fns`` maps a name to a callable as ``best_of`` takes. Each round calls, in turn (the order
    reversed every other round, A B B A …), every callable that still needs runs: at least
    ``repeats`` and, with ``min_time_s``, until its own runs add up to ``min_time_s`` (at most
    ``max_repeats``). Once every callable has ``min_repeats`` runs, it stops when the runs of
    all of them add up to ``budget_s``. On a shared machine whose speed drifts over tens of
    seconds, the ratio of two rows measured this way compares them in the same stretches of
    time, which two rows timed one after the other do not. Returns ``{name: Timing}``.
    """
    names = list(fns)
    times = {k: [] for k in names}
    best = {}
    spent = 0.0

    def needs(k):
        ts = times[k]
        if len(ts) < max(1, repeats):
            return True
        return min_time_s is not None and sum(ts) < min_time_s and len(ts) < max_repeats

    rnd = 0
    while any(needs(k) for k in names):
        if budget_s is not None and spent >= budget_s and all(len(times[k]) >= min_repeats for k in names):
            break
        order = names if rnd % 2 == 0 else names[::-1]
        for k in order:
            if not needs(k):
                continue
            secs, extra = fns[k]()
            ld = load()[0]
            times[k].append(secs)
            spent += secs
            if k not in best or secs < best[k].best_s:
                best[k] = Timing(secs, ld, None, extra)
        rnd += 1
    for k in names:
        best[k].times = times[k]
    return best


def kdsim_run(problem, plan, dtype, blas_threads=None):
    """One run of kdsim's numba engine; (seconds without compilation, its timing + divergences).
    ``blas_threads``: run it under ``threadpoolctl.threadpool_limits(blas_threads)`` (a diagnostic: the
    records kdsim evaluates with numpy after the kernel then use that many BLAS threads)."""
    from kdsim.engines import driver, numba_cpu
    t0 = time.perf_counter()
    if blas_threads is None:
        res = driver.run(problem, plan, numba_cpu, dtype=dtype)
    else:
        from threadpoolctl import threadpool_limits
        with threadpool_limits(limits=blas_threads, user_api="blas"):
            res = driver.run(problem, plan, numba_cpu, dtype=dtype)
    wall = time.perf_counter() - t0
    out, timing = res.arrays, res.timing
    secs = wall - timing["compile_s"]
    return secs, {**timing, "diverged": int(np.sum(out["diverged_step"] >= 0))}


def numba_warm_start(families=("least_squares", "softmax", "deep_linear"), dtypes=("float64", "float32")):
    """``kdsim.simulate.warmup`` per family and dtype in this process (numba's on-disk cache when present)."""
    from kdsim.simulate import warmup
    out = {}
    for fam in families:
        for dt in dtypes:
            if fam != "least_squares" and dt != "float64":
                continue
            out[f"{fam}/{dt}"] = warmup(fam, dt)
    return out


_COLD_SCRIPT = r"""
import json, sys, time
from kdsim.simulate import warmup
out = {}
for fam, dt in json.loads(sys.argv[1]):
    out[fam + "/" + dt] = warmup(fam, dt)
print(json.dumps(out))
"""


def numba_cold_compile(pairs=(("least_squares", "float64"), ("least_squares", "float32"),
                              ("softmax", "float64"), ("deep_linear", "float64")), timeout=900):
    """Seconds to compile kdsim's kernels from nothing: ``warmup`` in a fresh interpreter whose
    ``NUMBA_CACHE_DIR`` is an empty temporary directory (so numba's cache cannot be used)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, NUMBA_CACHE_DIR=tmp)
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        res = subprocess.run([sys.executable, "-c", _COLD_SCRIPT, json.dumps([list(p) for p in pairs])],
                             capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
    if res.returncode != 0:
        raise RuntimeError(f"cold numba compile failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])
