"""Benchmarks of the issue "Fast engines": kdsim's numba engine against plain numpy and JAX.

    python benchmarks/run.py [--quick] [--workloads W1,W3] [--out benchmarks/results]

For each workload (``benchmarks.workloads``) and dtype it times, best of several runs:

* ``kdsim numba``          the engine at full size (numba's compile time excluded and
                           reported apart; records and set-up included);
* ``kdsim numba, records at start/end only`` (W1, W2) the same run recording only at steps
                           0 and T: a diagnostic that separates the steps from the records
                           (its flops count its own two records);
* ``kdsim numba ls_traj``  (W1) kdsim's per-trajectory least-squares kernel, forced by
                           turning common random numbers off (each (λ, seed) its own stream;
                           measured at the plain numba baseline's size);
* ``numpy baseline``       ``benchmarks.baseline_numpy`` (same minibatch indices as kdsim);
* ``JAX jit(vmap(scan))``  ``benchmarks.baseline_jax`` (indices precomputed by kdsim.rng;
                           compile time excluded and reported apart);
* ``plain numba``          ``benchmarks.baseline_numba``: one trajectory per prange iteration,
                           written the obvious way (DESIGN.md's "plain" kernel);
* ``kdsim reference``      the numpy reference engine, for context (float64, reduced size).

Baselines too slow for this machine at full size run at the reduced "measured at" size
of ``benchmarks.workloads`` and are scaled per trajectory-step to the full size. The same
run measures the machine's fp64/fp32 peak (numpy GEMM) and a STREAM-like copy bandwidth,
prints a Markdown report and writes ``<out>/benchmarks[-quick].csv`` (one row per
measurement), ``<out>/benchmarks[-quick].json`` (machine, peaks, compile times, flop counts,
limits, rows) and ``<out>/benchmarks[-quick].md`` (the printed report). ``--quick`` runs
every workload at a reduced size: about 20 s on the idle 2-core machine, under two minutes at
load 5–7, plus about a minute of numba compilation the first time (empty cache).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

if __package__ in (None, ""):                      # run as a script: make the repo importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks import baseline_jax, baseline_numba, baseline_numpy, harness  # noqa: E402
from benchmarks.common import all_minibatches, prepare  # noqa: E402
from benchmarks.workloads import WORKLOADS, Size  # noqa: E402

KDSIM = "kdsim numba"
KDSIM_TRAJ = "kdsim numba ls_traj (CRN off)"
KDSIM_STEPS = "kdsim numba, records at start/end only"
NUMPY = "numpy baseline"
JAX = "JAX jit(vmap(scan))"
PLAIN = "plain numba (prange/trajectory)"
REFERENCE = "kdsim reference (numpy)"

CSV_FIELDS = ["workload", "dtype", "implementation", "lams", "seeds", "steps", "measured_seeds",
              "measured_steps", "scaled", "runs", "best_s", "times_s", "full_size_s", "traj_steps_per_s",
              "useful_gflops", "pct_peak", "kdsim_speedup", "compile_s", "kernel_s", "records_s",
              "indices_s", "diverged", "load1", "note"]


_T0 = time.perf_counter()


def log(msg):
    print(f"[{time.perf_counter() - _T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- measurements
#: every row keeps repeating until this many seconds of runs (set by ``main``: 2 s, quick 0.3 s)
MIN_SAMPLE_S = 2.0


def _best_of(fn, repeats, budget):
    """``harness.best_of`` with the run's sampling rule: at least ``repeats`` runs and
    ``MIN_SAMPLE_S`` seconds of runs (at most 25), and no more once ``budget`` is spent."""
    return harness.best_of(fn, repeats, budget, min_time_s=MIN_SAMPLE_S)


def measure_kdsim(w, size, dtype, repeats, budget, crn=True, record_every=None):
    plan = w.plan(size.seeds, size.steps, dtype, common_random_numbers=crn, record_every=record_every)
    p = w.problem()
    t = _best_of(lambda: harness.kdsim_run(p, plan, dtype), repeats, budget)
    e = t.extra
    other = e["total_s"] - e["compile_s"] - e["run_s"] - e.get("records_s", 0.0)
    note = f"kernel {e['kernel']} {e['run_s']:.3g} s"
    if e["kernel"] == "layered_traj":
        note += f"; records after the kernel {e.get('records_s', 0.0):.3g} s"
    note += f"; set-up and other records {other:.3g} s"
    return t, {"compile_s": e["compile_s"], "kernel_s": e["run_s"], "diverged": e["diverged"], "note": note}


def measure_numpy(w, size, dtype, repeats, budget):
    plan = w.plan(size.seeds, size.steps, dtype)
    p = w.problem()

    def once():
        out = baseline_numpy.run(p, plan, dtype)
        tm = out["timing"]
        return tm["total_s"], {**tm, "diverged": int(np.sum(out["diverged_step"] >= 0))}

    t = _best_of(once, repeats, budget)
    e = t.extra
    return t, {"records_s": e["records_s"], "indices_s": e["indices_s"], "diverged": e["diverged"]}


def measure_plain_numba(w, size, dtype, repeats, budget):
    plan = w.plan(size.seeds, size.steps, dtype)
    p = w.problem()
    # compile (or load from numba's cache) on a one-seed copy of the plan, timed apart
    first = baseline_numba.run(p, plan.seed_range(0, 1), dtype)

    def once():
        out = baseline_numba.run(p, plan, dtype)
        return out["timing"]["run_s"], {"diverged": int(np.sum(out["diverged_step"] >= 0))}

    t = _best_of(once, repeats, budget)
    return t, {"compile_s": first["timing"]["compile_s"], "diverged": t.extra["diverged"]}


def measure_jax(w, size, dtype, repeats, budget, index_cache):
    plan = w.plan(size.seeds, size.steps, dtype)
    p = w.problem()
    key = (w.name, size)
    if key not in index_cache:                     # the same indices serve both dtypes
        t0 = time.perf_counter()
        idx = all_minibatches(prepare(p, plan, dtype))
        index_cache[key] = (idx, time.perf_counter() - t0)
    idx, idx_s = index_cache[key]
    compiled = baseline_jax.build(p, plan, dtype, indices=idx)

    def once():
        out = compiled.run()
        return out["timing"]["run_s"], {"diverged": int(np.sum(out["diverged_step"] >= 0))}

    t = _best_of(once, repeats, budget)
    return t, {"compile_s": compiled.compile_s, "indices_s": idx_s, "diverged": t.extra["diverged"],
               "note": "indices precomputed by kdsim.rng (excluded)"}


def measure_reference(w, size, repeats, budget):
    from kdsim.engines import driver, reference
    plan = w.plan(size.seeds, size.steps, "float64")
    p = w.problem()

    def once():
        t0 = time.perf_counter()
        out = driver.run(p, plan, reference).arrays
        return time.perf_counter() - t0, {"diverged": int(np.sum(out["diverged_step"] >= 0))}

    t = _best_of(once, repeats, budget)
    return t, {"diverged": t.extra["diverged"]}


def rng_cost(batch, n, seeds=4096, steps=100):
    """Seconds per seed-step of the minibatch draws of kdsim's kernels (one thread).

    The kernels hold a key per stream and derive each step's minibatch from it:
    ``_kernels_ls._index1`` for batch 1 (one draw), ``kdsim.rng.minibatch_into_nb``
    (Floyd's algorithm) otherwise. This times exactly that loop.
    """
    from numba import njit

    from kdsim.engines._kernels_ls import _index1
    from kdsim.rng import minibatch_into_nb, step_key_nb

    @njit
    def draws(keys, steps, n, b):
        idx = np.empty(b, dtype=np.int64)
        taken = np.zeros(n, dtype=np.bool_)
        acc = 0
        for s in range(keys.shape[0]):
            for t in range(steps):
                if b == 1:
                    acc += _index1(keys[s], t, n)
                else:
                    minibatch_into_nb(step_key_nb(keys[s], t), n, b, idx, taken)
                    acc += idx[0]
        return acc

    keys = np.arange(1, seeds + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    draws(keys[:2], 2, n, batch)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        draws(keys, steps, n, batch)
        best = min(best, (time.perf_counter() - t0) / (seeds * steps))
    return best


def bytes_per_traj_step(w, dtype):
    """Estimated bytes kdsim's kernel moves from beyond the core's L2 per trajectory-step.

    A model, not a measurement; it bounds throughput by the measured copy bandwidth where
    the data do not fit in L2 (W2's A and F, the layered workloads' data rows). For W1
    (A is 400 KB, F 10 KB) most of it stays in L2 and the bound is loose.

    Least squares (affine kernel, one (u, v) pair per seed serving the L λ): the sampled
    row of A per seed-step (d·w bytes; A is n·d·w, beyond L2 at d = 500) and, at each
    record, the triangular factor F (d(d+1)/2 · 8 bytes, float64) read once per block of
    ``SEED_BLOCK`` seeds, amortised over the record interval; divided by L. Layered kernels (one trajectory at
    a time): per sample the rows of A, of the targets and of the teacher residuals
    ((d_in + 2 d_out)·w bytes); the trajectory's own x and g (2·dim·w) stay in L1/L2.
    """
    p = w.problem()
    wb = np.dtype(dtype).itemsize
    if w.name in ("W1", "W2"):
        d = p.dim
        from kdsim.engines._kernels_ls import SEED_BLOCK
        per_seed_step = d * wb + (d * (d + 1) // 2) * 8 / SEED_BLOCK / w.record_every
        return per_seed_step / w.n_lams
    spec = prepare(p, w.plan(2, 2))
    return w.batch * (spec.layers[0] + 2 * spec.layers[-1]) * wb


# ---------------------------------------------------------------------- report
def fmt(x, digits=3):
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "—"
    if isinstance(x, (int, np.integer)):
        return f"{x:,}"
    if x == 0:
        return "0"
    if abs(x) >= 1e6:
        return f"{x / 1e6:,.2f} M"
    if abs(x) >= 1e3:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def markdown_table(rows):
    head = ("| W | dtype | implementation | measured at (seeds × λ × steps) | time at full size (s) "
            "| traj-steps/s | useful GFLOP/s | % of peak | kdsim × faster | load (1 min) |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        at = f"{r['measured_seeds']:,} × {r['lams']} × {r['measured_steps']:,}"
        if r["scaled"]:
            at += " (scaled)"
        lines.append(f"| {r['workload']} | {r['dtype']} | {r['implementation']} | {at} | {fmt(r['full_size_s'])} "
                     f"| {fmt(r['traj_steps_per_s'])} | {fmt(r['useful_gflops'])} | {fmt(r['pct_peak'], 2)} "
                     f"| {fmt(r['kdsim_speedup'])} | {r['load1']:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="every workload at a reduced size (< 2 minutes)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated subset of W1,W2,W3,W4")
    ap.add_argument("--out", default=os.path.join(harness.REPO, "benchmarks", "results"),
                    help="directory for the CSV and JSON files")
    ap.add_argument("--repeats", type=int, default=None, help="runs per measurement, best kept "
                    "(default 3, quick 2)")
    ap.add_argument("--budget", type=float, default=None, help="stop repeating a measurement after this "
                    "many seconds of runs, once 2 runs are done (default 150, quick 20)")
    ap.add_argument("--gemm-n", type=int, default=None, help="matrix size of the peak GEMM (default 4096, "
                    "quick 2048)")
    ap.add_argument("--no-jax", action="store_true", help="skip the JAX baseline")
    ap.add_argument("--no-cold-compile", action="store_true", help="skip the cold numba compile "
                    "(always skipped with --quick)")
    args = ap.parse_args(argv)

    names = [s.strip().upper() for s in args.workloads.split(",") if s.strip()]
    bad = [s for s in names if s not in WORKLOADS]
    if bad:
        ap.error(f"unknown workloads {bad}; valid: {','.join(WORKLOADS)}")
    quick = args.quick
    repeats = args.repeats or (2 if quick else 3)
    budget = args.budget or (20.0 if quick else 150.0)
    gemm_n = args.gemm_n or (2048 if quick else 4096)
    global MIN_SAMPLE_S
    MIN_SAMPLE_S = 0.3 if quick else 2.0
    use_jax = baseline_jax.available() and not args.no_jax
    t_start = time.perf_counter()

    info = harness.machine()
    info["openblas_coretype"] = os.environ.get("OPENBLAS_CORETYPE", "auto-detected")
    log(f"machine: {info}")
    log(f"load at start: {harness.load()}")
    peak_start = harness.gemm_peak(gemm_n)
    peak_auto = harness.gemm_peak_autodetected(gemm_n) if "OPENBLAS_CORETYPE" in os.environ else None
    if peak_auto is not None:
        log(f"GEMM peak with OpenBLAS's own kernel choice ({peak_auto['architecture']}, "
            f"OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} unset): {peak_auto}")
    bw = harness.copy_bandwidth(64 if quick else 256)
    log(f"GEMM peak (start): {peak_start}; copy bandwidth: {bw}")

    compile_info = {"numba_warm_start_s": harness.numba_warm_start()}
    if not quick and not args.no_cold_compile:
        log("numba cold compile (fresh cache directory, subprocess) ...")
        compile_info["numba_cold_s"] = harness.numba_cold_compile()
    log(f"compile: {compile_info}")

    rows = []
    index_cache = {}
    rng = {}
    for name in names:
        w = WORKLOADS[name]
        full = w.size(quick)
        p = w.problem()
        w.teacher()                                      # solve outside every timed region
        rng[name] = rng_cost(w.batch, p.n)
        for dtype in w.dtypes:
            meas = []
            log(f"{name} {dtype}: {KDSIM} at {full}")
            meas.append((KDSIM, full, *measure_kdsim(w, full, dtype, repeats, budget)))
            if name in ("W1", "W2"):
                log(f"{name} {dtype}: {KDSIM_STEPS} at {full}")
                meas.append((KDSIM_STEPS, full, *measure_kdsim(w, full, dtype, repeats, budget,
                                                              record_every=full.steps)))
            if name == "W1":
                size = full if quick else w.baseline["numba"]
                log(f"{name} {dtype}: {KDSIM_TRAJ} at {size}")
                meas.append((KDSIM_TRAJ, size, *measure_kdsim(w, size, dtype, repeats, budget, crn=False)))
            size = full if quick else w.baseline["numpy"]
            log(f"{name} {dtype}: {NUMPY} at {size}")
            meas.append((NUMPY, size, *measure_numpy(w, size, dtype, repeats, budget)))
            size = full if quick else w.baseline["numba"]
            log(f"{name} {dtype}: {PLAIN} at {size}")
            meas.append((PLAIN, size, *measure_plain_numba(w, size, dtype, repeats, budget)))
            if use_jax:
                size = full if quick else w.baseline["jax"]
                log(f"{name} {dtype}: {JAX} at {size}")
                meas.append((JAX, size, *measure_jax(w, size, dtype, repeats, budget, index_cache)))
            if dtype == "float64":
                ref = w.baseline["reference"]
                size = Size(min(ref.seeds, full.seeds), min(ref.steps, full.steps)) if quick else ref
                log(f"{name} {dtype}: {REFERENCE} at {size}")
                meas.append((REFERENCE, size, *measure_reference(w, size, repeats, budget)))
            full_ts = w.n_lams * full.seeds * full.steps
            kd_full = None
            for impl, size, t, extra in meas:
                ts = w.n_lams * size.seeds * size.steps
                thr = ts / t.best_s
                full_s = full_ts / thr
                if impl == KDSIM:
                    kd_full = full_s
                every = size.steps if impl == KDSIM_STEPS else None
                gfl = w.useful_flops(size.seeds, size.steps, every) / t.best_s / 1e9
                rows.append({
                    "workload": name, "dtype": dtype, "implementation": impl, "lams": w.n_lams,
                    "seeds": full.seeds, "steps": full.steps, "measured_seeds": size.seeds,
                    "measured_steps": size.steps, "scaled": size != full, "runs": len(t.times),
                    "best_s": t.best_s, "times_s": ";".join(f"{x:.4g}" for x in t.times), "full_size_s": full_s,
                    "traj_steps_per_s": thr, "useful_gflops": gfl, "pct_peak": None,
                    "kdsim_speedup": full_s / kd_full, "compile_s": extra.get("compile_s"),
                    "kernel_s": extra.get("kernel_s"), "records_s": extra.get("records_s"),
                    "indices_s": extra.get("indices_s"), "diverged": extra.get("diverged"),
                    "load1": t.load, "note": extra.get("note", ""),
                })
                log(f"  {impl}: best {t.best_s:.3f} s of {[round(x, 3) for x in t.times]}, "
                    f"{thr:,.0f} traj-steps/s, {gfl:.3g} GFLOP/s, load {t.load}")

    peak_end = harness.gemm_peak(gemm_n)
    peak = {dt: max(peak_start[dt]["gflops"], peak_end[dt]["gflops"],
                    peak_auto[dt]["gflops"] if peak_auto else 0.0) for dt in ("float64", "float32")}
    for r in rows:
        r["pct_peak"] = 100.0 * r["useful_gflops"] / peak[r["dtype"]]

    # ------------------------------------------------------------------ report
    os.makedirs(args.out, exist_ok=True)
    stem = "benchmarks-quick" if quick else "benchmarks"
    csv_path = os.path.join(args.out, stem + ".csv")
    with open(csv_path, "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        wr.writeheader()
        for r in rows:
            wr.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})

    flops = {}
    limits = {}
    for name in names:
        w = WORKLOADS[name]
        s, rf = w.flop_terms()
        full = w.size(quick)
        per_ts = w.useful_flops(full.seeds, full.steps) / (w.n_lams * full.seeds * full.steps)
        flops[name] = {"step": s, "record": rf, "records": w.n_records(full.steps), "per_traj_step": per_ts}
        for dtype in w.dtypes:
            kd = next(r for r in rows if r["workload"] == name and r["dtype"] == dtype and r["implementation"] == KDSIM)
            by = bytes_per_traj_step(w, dtype)
            mem_lim = bw["gbs"] * 1e9 / by
            fl_lim = peak[dtype] * 1e9 / per_ts
            seed_steps_per_s = kd["traj_steps_per_s"] / w.n_lams if name in ("W1", "W2") else kd["traj_steps_per_s"]
            threads = info["numba_threads"] or 1
            limits[f"{name}/{dtype}"] = {
                "bytes_per_traj_step": by, "bandwidth_limit": mem_lim, "flop_limit": fl_lim,
                "kdsim": kd["traj_steps_per_s"], "pct_of_bandwidth_limit": 100 * kd["traj_steps_per_s"] / mem_lim,
                "pct_of_flop_limit": 100 * kd["traj_steps_per_s"] / fl_lim,
                "rng_share": rng[name] * seed_steps_per_s / threads,
            }

    lines = [f"# kdsim benchmarks{' (quick)' if quick else ''}", ""]
    lines.append(f"Machine: {info['cpu']}, {info['logical_cores']} logical cores, {info['memory_gib']} GiB; "
                 f"numpy {info['numpy']}, numba {info['numba']} ({info['numba_threads']} threads), "
                 f"jax {info['jax'] or 'absent (JAX rows skipped)'}; BLAS {info['blas']}; GPU: none.")
    lines.append(f"Peak (numpy {gemm_n}² GEMM, best of 3 at the start and 3 at the end"
                 + (f", and 3 with OpenBLAS's own kernel choice, {peak_auto['architecture']}, "
                    f"{peak_auto['float64']['gflops']:.1f}/{peak_auto['float32']['gflops']:.1f}" if peak_auto else "")
                 + "): fp64 "
                 f"{peak['float64']:.1f} GFLOP/s, fp32 {peak['float32']:.1f} GFLOP/s "
                 f"(start {peak_start['float64']['gflops']:.1f}/{peak_start['float32']['gflops']:.1f} at load "
                 f"{peak_start['float64']['load']}, end {peak_end['float64']['gflops']:.1f}/"
                 f"{peak_end['float32']['gflops']:.1f} at load {peak_end['float64']['load']}). "
                 f"Copy bandwidth ({bw['mib']} MiB np.copyto, best of 5): {bw['gbs']:.1f} GB/s at load {bw['load']}.")
    lines += ["", markdown_table(rows), ""]
    lines.append("Useful flops of the math (convention in benchmarks/common.py; per (λ, seed) trajectory):")
    lines.append("")
    lines.append("| W | step | record | records per trajectory | per trajectory-step, records amortised |")
    lines.append("|---|---|---|---|---|")
    for name, f in flops.items():
        lines.append(f"| {name} | {f['step']:,} | {f['record']:,} | {f['records']} | {f['per_traj_step']:,.0f} |")
    lines += ["", "Limits of kdsim's kernels (estimated bytes beyond L2 per trajectory-step vs the measured copy "
              "bandwidth; flops vs the measured GEMM peak; RNG = share of kdsim's thread time spent drawing "
              "minibatches, from the numba generator's measured cost):", "",
              "| W/dtype | bytes/traj-step | bandwidth limit (traj-steps/s) | flop limit (traj-steps/s) "
              "| kdsim | % of bandwidth limit | % of flop limit | RNG share |", "|---|---|---|---|---|---|---|---|"]
    for key, v in limits.items():
        lines.append(f"| {key} | {v['bytes_per_traj_step']:,.0f} | {fmt(v['bandwidth_limit'])} | "
                     f"{fmt(v['flop_limit'])} | {fmt(v['kdsim'])} | {v['pct_of_bandwidth_limit']:.2g} | "
                     f"{v['pct_of_flop_limit']:.2g} | {100 * v['rng_share']:.2g}% |")
    lines += ["", f"Compile times (s): numba warm start in this process {json.dumps(_round(compile_info))}; "
              "JAX per workload in the compile_s column of the CSV.",
              f"Total benchmark time: {time.perf_counter() - t_start:.0f} s; load at the end: {harness.load()}."]
    report = "\n".join(lines)
    print(report)
    with open(os.path.join(args.out, stem + ".json"), "w") as fh:
        json.dump({"machine": info, "peak_start": peak_start, "peak_end": peak_end, "peak_autodetected": peak_auto,
                   "peak": peak,
                   "copy_bandwidth": bw, "compile": compile_info, "flops": flops, "limits": limits,
                   "rng_s_per_seed_step": rng, "rows": rows, "quick": quick}, fh, indent=1, default=_json)
    with open(os.path.join(args.out, stem + ".md"), "w") as fh:
        fh.write(report + "\n")
    log(f"wrote {csv_path}")
    return rows


def _round(d):
    if isinstance(d, dict):
        return {k: _round(v) for k, v in d.items()}
    return round(d, 3) if isinstance(d, float) else d


def _json(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Size):
        return {"seeds": o.seeds, "steps": o.steps}
    raise TypeError(type(o))


if __name__ == "__main__":
    main()
