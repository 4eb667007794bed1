"""The GPU benchmark: one command, one GPU, every number from the same run.

    python benchmarks/gpu.py [--quick] [--budget-s 12] [--deadline-s 330] [--out benchmarks/results]

Measures on the current CUDA device (CuPy, numba-cuda and JAX as preinstalled; no network):

* the ceilings: fp64 and fp32 GEMM (CuPy ``matmul``, n = 8192) and the copy bandwidth
  (device-to-device, 2 × size bytes per copy);
* W1 and W2 (least squares, d = 50 and 500) at 65,536 seeds, W3 (digits softmax, b = 10) and W5
  (the digits 64-32-10 ReLU MLP) at their workload sizes (``benchmarks.workloads``), for
  kdsim's CUDA engine (``backend="cuda"``: on W1/W2 its affine form, on W3/W5 a warp per trajectory;
  and its per-trajectory kernel with one thread per trajectory beside it), JAX ``jit(vmap(lax.scan))``
  on the GPU (``benchmarks.baseline_jax``) and the array-module engine on CuPy
  (``kdsim.engines.cupy_gpu``); trajectory-steps/s, useful
  GFLOP/s (the workloads' flop convention) and their fraction of the GEMM ceiling of the dtype;
* W1's agreement with the exact recursion (``kdsim.theory.exact_moments``): |MC − exact| / SE of
  E‖x_T − x*‖² at the last record, for every λ and implementation.

Each measurement first runs a small size (compilation and warm-up, excluded), then the full size
when the small run predicts it fits ``--budget-s``; otherwise the largest seed count that does
("measured at" in the table; rates are per trajectory-step, so they compare across sizes). Past
``--deadline-s`` the remaining measurements are listed as skipped, so the whole run stays under
6 minutes on one H100 whatever the engines' speed. It writes ``<out>/gpu-<device>.json`` (device,
ceilings, rows) and ``<out>/gpu-<device>.md`` (the printed report).

``--simulate`` (with ``NUMBA_ENABLE_CUDASIM=1`` set before the start) runs the same code paths on the
CPU at tiny sizes without CuPy or a GPU (no ceilings, no CuPy rows): the test suite uses it to keep
the script working where no GPU is lent.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

if __package__ in (None, ""):                      # run as a script: make the repo importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks.workloads import WORKLOADS  # noqa: E402

#: seeds of W1/W2 on the GPU (the issue's size); W3/W5 keep their workload sizes
GPU_SEEDS = {"W1": 65536, "W2": 65536}
#: kdsim's per-trajectory CUDA kernel with one thread per trajectory, beside the engine's own choice
#: ("kdsim cuda": the affine form on W1/W2, a warp per trajectory on W3/W5)
PER_TRAJECTORY = "kdsim cuda, one thread per trajectory"
#: tiny sizes of --simulate (seeds, steps)
SIM_SIZE = (4, 20)


def log(msg):
    print(msg, flush=True)


# ------------------------------------------------------------------ device and ceilings
def device_info(simulate):
    if simulate:
        return {"name": "numba-cuda simulator (CPU)", "slug": "simulator"}
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    free, total = cupy.cuda.Device().mem_info
    return {"name": name, "slug": re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"),
            "memory_gib": round(total / 2**30, 1), "compute_capability": cupy.cuda.Device().compute_capability,
            "cupy": cupy.__version__}


def ceilings(n=8192, mib=1024, repeats=5):
    """GEMM GFLOP/s (fp64, fp32) and copy GB/s of the device, best of ``repeats``."""
    import cupy
    out = {}
    for dtype in ("float64", "float32"):
        a = cupy.random.standard_normal((n, n)).astype(dtype)
        b = cupy.random.standard_normal((n, n)).astype(dtype)
        c = a @ b
        cupy.cuda.runtime.deviceSynchronize()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            cupy.matmul(a, b, out=c)
            cupy.cuda.runtime.deviceSynchronize()
            best = min(best, time.perf_counter() - t0)
        out[f"gemm_{dtype}_gflops"] = 2.0 * n**3 / best / 1e9
        del a, b, c
    x = cupy.ones(mib * 2**20 // 8)
    y = cupy.empty_like(x)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        cupy.copyto(y, x)
        cupy.cuda.runtime.deviceSynchronize()
        best = min(best, time.perf_counter() - t0)
    out["copy_gbs"] = 2.0 * x.nbytes / best / 1e9
    return out


# ------------------------------------------------------------------ implementations
def _run_kdsim(w, seeds, steps, dtype, backend, **options):
    import kdsim
    plan = w.plan(seeds, steps, dtype=dtype)
    t0 = time.perf_counter()
    out = kdsim.engines.run(w.problem(), plan, backend=backend, **options)
    return time.perf_counter() - t0, out.arrays, plan


def _run_jax(w, seeds, steps, dtype):
    from benchmarks import baseline_jax
    plan = w.plan(seeds, steps, dtype=dtype)
    compiled = baseline_jax.build(w.problem(), plan, dtype)
    res = compiled.run()
    return res["timing"]["run_s"], res, plan


def implementations(simulate):
    from kdsim.engines import cuda_gpu
    out = {"kdsim cuda": lambda w, s, t, d: _run_kdsim(w, s, t, d, "cuda")}
    try:                                              # second: the ratios need it before any deadline
        from benchmarks import baseline_jax
        if baseline_jax.available():
            out["JAX jit(vmap(scan))"] = _run_jax
    except ImportError:
        pass
    if not simulate:
        from kdsim.engines import cupy_gpu
        out["array-module on CuPy"] = lambda w, s, t, d: _run_kdsim(w, s, t, d, cupy_gpu)
    out[PER_TRAJECTORY] = lambda w, s, t, d: _run_kdsim(w, s, t, d, "cuda", path="trajectory", lanes=1)
    assert cuda_gpu.available(), cuda_gpu.gpu_status()[1]
    return out


def measure(fn, w, seeds, steps, dtype, budget_s, simulate):
    """(seconds, arrays, plan, seeds measured): a warm-up at a small size, then the largest size that fits."""
    small = min(seeds, 64 if not simulate else SIM_SIZE[0])
    s_small, _, _ = fn(w, small, steps, dtype)                  # compilation and warm-up
    s_small, _, _ = fn(w, small, steps, dtype)
    per_seed = s_small / small
    target = seeds if per_seed * seeds <= budget_s else max(small, int(budget_s / per_seed) // 64 * 64)
    sec, arrays, plan = fn(w, target, steps, dtype)
    return sec, arrays, plan, target


def exact_agreement(w, arrays, plan):
    """max over λ of |MC − exact| / SE of E‖x_T − x*‖² at the last record (W1: exact recursion of §5)."""
    from kdsim import theory
    p = w.problem()
    d2 = arrays["dist2_opt"][:, :, -1]                                      # (L, S)
    worst = 0.0
    for k, lam in enumerate(plan.lams):
        em = theory.exact_moments(p, plan.theta, lam, plan.step, plan.steps, batch_size=plan.batch_size,
                                  estimator=plan.estimator.name, record_every=plan.steps, x0=plan.x0)
        v = d2[k][np.isfinite(d2[k])]
        se = v.std(ddof=1) / np.sqrt(len(v))
        worst = max(worst, abs(v.mean() - em.record("dist2_opt")[-1]) / se)
    return worst


# ------------------------------------------------------------------ main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tenth of the seeds and steps")
    ap.add_argument("--budget-s", type=float, default=12.0, help="seconds per measurement at most (default 12)")
    ap.add_argument("--deadline-s", type=float, default=330.0, help="skip what would start after this (default 330)")
    ap.add_argument("--workloads", default="W1,W2,W3,W5")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    ap.add_argument("--simulate", action="store_true", help="numba-cuda's simulator, tiny sizes (tests)")
    args = ap.parse_args(argv)
    if args.simulate and os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        ap.error("--simulate needs NUMBA_ENABLE_CUDASIM=1 in the environment before the start")
    t_start = time.perf_counter()
    dev = device_info(args.simulate)
    log(f"device: {dev['name']}")
    ceil = {} if args.simulate else ceilings()
    if ceil:
        log("ceilings: " + ", ".join(f"{k} {v:.0f}" for k, v in ceil.items()))
    impls = implementations(args.simulate)
    rows = []
    for name in args.workloads.split(","):
        w = WORKLOADS[name]
        seeds = GPU_SEEDS.get(name, w.seeds)
        steps = w.steps
        if args.quick:
            seeds, steps = max(64, seeds // 10), max(20, steps // 10)
        if args.simulate:
            seeds, steps = SIM_SIZE
        for dtype in w.dtypes:
            for label, fn in impls.items():
                if time.perf_counter() - t_start > args.deadline_s:
                    rows.append({"workload": name, "dtype": dtype, "implementation": label,
                                 "error": f"skipped: past the {args.deadline_s:.0f} s deadline"})
                    continue
                try:
                    sec, arrays, plan, measured = measure(fn, w, seeds, steps, dtype, args.budget_s, args.simulate)
                except Exception as exc:  # noqa: BLE001 - one failing implementation is a row, not the end
                    rows.append({"workload": name, "dtype": dtype, "implementation": label,
                                 "error": f"{type(exc).__name__}: {exc}"[:300]})
                    log(f"{name} {dtype} {label}: FAILED {type(exc).__name__}: {exc}")
                    continue
                traj_steps = w.n_lams * measured * steps
                flops = w.useful_flops(measured, steps)
                row = {"workload": name, "dtype": dtype, "implementation": label, "seeds": seeds,
                       "measured_seeds": measured, "steps": steps, "seconds": sec,
                       "msteps_per_s": traj_steps / sec / 1e6, "gflops": flops / sec / 1e9}
                gemm = ceil.get(f"gemm_{dtype}_gflops")
                if gemm:
                    row["fraction_of_gemm"] = row["gflops"] / gemm
                if name == "W1":
                    row["max_z_vs_exact"] = exact_agreement(w, arrays, plan)
                rows.append(row)
                log(f"{name} {dtype} {label}: {row['msteps_per_s']:.1f} M steps/s, {row['gflops']:.1f} GFLOP/s"
                    + (f", |z| ≤ {row['max_z_vs_exact']:.2f} vs exact" if "max_z_vs_exact" in row else ""))
    for r in rows:                                    # ratios against JAX on the same device, same run
        jax = next((q for q in rows if q["workload"] == r["workload"] and q["dtype"] == r["dtype"]
                    and q["implementation"].startswith("JAX") and "msteps_per_s" in q), None)
        if jax and "msteps_per_s" in r:
            r["vs_jax"] = r["msteps_per_s"] / jax["msteps_per_s"]
    report = {"device": dev, "ceilings": ceil, "rows": rows, "quick": args.quick, "simulate": args.simulate,
              "wall_s": time.perf_counter() - t_start}
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"gpu-{dev['slug']}")
    with open(stem + ".json", "w") as fh:
        json.dump(report, fh, indent=1, default=float)
    md = markdown(report)
    with open(stem + ".md", "w") as fh:
        fh.write(md)
    log(md)
    return 0


def markdown(report):
    lines = [f"# GPU benchmark on {report['device']['name']}", ""]
    if report["ceilings"]:
        c = report["ceilings"]
        lines += [f"Ceilings: fp64 GEMM {c['gemm_float64_gflops']:.0f} GFLOP/s, fp32 GEMM "
                  f"{c['gemm_float32_gflops']:.0f} GFLOP/s, copy {c['copy_gbs']:.0f} GB/s.", ""]
    lines += ["| workload | dtype | implementation | seeds (measured) | M traj-steps/s | GFLOP/s | of GEMM | × JAX "
              "| max z vs exact |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        if "error" in r:
            lines.append(f"| {r['workload']} | {r['dtype']} | {r['implementation']} | failed: {r['error']} |||||")
            continue
        f = lambda k, fmt: format(r[k], fmt) if k in r else ""  # noqa: E731
        lines.append(f"| {r['workload']} | {r['dtype']} | {r['implementation']} | {r['seeds']} ({r['measured_seeds']}) "
                     f"| {r['msteps_per_s']:.1f} | {r['gflops']:.1f} | {f('fraction_of_gemm', '.1%')} "
                     f"| {f('vs_jax', '.2f')} | {f('max_z_vs_exact', '.2f')} |")
    lines += ["", f"Wall time {report['wall_s']:.0f} s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
