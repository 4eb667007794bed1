"""Benchmarks of the issue "Fast engines": kdsim's numba engine against plain numpy and JAX.

    python benchmarks/run.py [--quick] [--workloads W1,W3] [--out benchmarks/results]

Workloads W1–W5 (``benchmarks.workloads``; W5 is the 64-32-10 ReLU MLP on digits).

For each workload (``benchmarks.workloads``) and dtype it times, best of several runs:

* ``kdsim numba``          the engine at full size (numba's compile time excluded and
                           reported apart; records and set-up included);
* ``kdsim numba, records at start/end only`` (W1, W2) the same run recording only at steps
                           0 and T: a diagnostic that separates the steps from the records
                           (its flops count its own two records);
* ``kdsim numba, 1 BLAS thread`` (W5) the same run under ``threadpool_limits(1)``: kdsim
                           evaluates an MLP's records after the kernel with numpy (a forward
                           pass of every sample per record, small matrix products); on
                           OpenBLAS's 2 threads they become several times slower when another
                           tenant keeps a core busy; a diagnostic that separates that from the
                           kernel;
* ``kdsim numba ls_traj``  (W1) kdsim's per-trajectory least-squares kernel, forced by
                           turning common random numbers off (each (λ, seed) its own stream;
                           measured at the plain numba baseline's size);
* ``numpy baseline``       ``benchmarks.baseline_numpy`` (same minibatch indices as kdsim);
* ``JAX jit(vmap(scan))``  ``benchmarks.baseline_jax`` (indices precomputed by kdsim.rng;
                           compile time excluded and reported apart);
* ``plain numba``          ``benchmarks.baseline_numba``: one trajectory per prange iteration,
                           written the obvious way (DESIGN.md's "plain" kernel);
* ``kdsim reference``      the numpy reference engine, for context (float64, reduced size);
* ``kdsim numba, reshuffle`` (``--sampling``, on ``--sampling-workloads``, default W1 and W3)
                           the kdsim row under another sampling scheme of ``kdsim.simulate``
                           (``reshuffle``, ``shuffle_once``), timed alternating with
                           ``kdsim numba, iid (alternating)``, the same i.i.d. run, so that their
                           ratio compares the same stretches of the shared machine; for W1/W2
                           also the records-at-start/end-only pair (the steps alone). With
                           ``--momentum μ`` (default 0.9; 0 skips it) the W1 group also has
                           ``kdsim numba, momentum μ`` (heavy ball, i.i.d., step γ(1 − μ) so
                           that the effective step γ/(1 − μ) is the workload's). The report's
                           "Sampling schemes" table gives each ratio, the extra time per step of
                           one index stream, and the draw loop alone (``rng_cost``) under each
                           scheme against the kdsim step.

Baselines too slow for this machine at full size run at the reduced "measured at" size
of ``benchmarks.workloads`` and are scaled per trajectory-step to the full size. The same
run measures the machine's fp64/fp32 peak (numpy GEMM) and a STREAM-like copy bandwidth,
prints a Markdown report and writes ``<out>/benchmarks[-quick].csv`` (one row per
measurement), ``<out>/benchmarks[-quick].json`` (machine, peaks, compile times, flop counts,
limits, rows) and ``<out>/benchmarks[-quick].md`` (the printed report). ``--quick`` runs
every workload at a reduced size: about 20 s on the idle 2-core machine (the sampling and
momentum rows of W1 and W3 add a few seconds), under two minutes at load 5–7, plus about a
minute of numba compilation the first time (empty cache).
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
KDSIM_BLAS1 = "kdsim numba, 1 BLAS thread"
NUMPY = "numpy baseline"
JAX = "JAX jit(vmap(scan))"
PLAIN = "plain numba (prange/trajectory)"
REFERENCE = "kdsim reference (numpy)"
ALTERNATING = "iid (alternating)"
#: workloads that get the sampling-scheme rows by default (the issue's W1 and W3), and momentum's
SAMPLING_WORKLOADS = ("W1", "W3")
MOMENTUM_WORKLOADS = ("W1",)
#: workloads whose kdsim run is also timed on one BLAS thread (MLPs: records in numpy after the kernel)
BLAS1_WORKLOADS = ("W5",)

CSV_FIELDS = ["workload", "dtype", "implementation", "lams", "seeds", "steps", "measured_seeds",
              "measured_steps", "scaled", "runs", "best_s", "times_s", "full_size_s", "traj_steps_per_s",
              "useful_gflops", "pct_peak", "kdsim_speedup", "compile_s", "kernel_s", "records_s",
              "indices_s", "diverged", "load1", "sampling", "momentum", "note"]


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


def _kdsim_extra(t):
    e = t.extra
    other = e["total_s"] - e["compile_s"] - e["run_s"] - e.get("records_s", 0.0)
    note = f"kernel {e['kernel']} {e['run_s']:.3g} s"
    if e["kernel"] == "layered_traj":
        note += f"; records after the kernel {e.get('records_s', 0.0):.3g} s"
    note += f"; set-up and other records {other:.3g} s"
    return {"compile_s": e["compile_s"], "kernel_s": e["run_s"], "diverged": e["diverged"], "note": note,
            "kernel": e["kernel"]}


def measure_kdsim(w, size, dtype, repeats, budget, crn=True, record_every=None, blas_threads=None):
    plan = w.plan(size.seeds, size.steps, dtype, common_random_numbers=crn, record_every=record_every)
    p = w.problem()
    t = _best_of(lambda: harness.kdsim_run(p, plan, dtype, blas_threads), repeats, budget)
    return t, _kdsim_extra(t)


def measure_kdsim_alternating(w, size, dtype, repeats, budget, variants):
    """kdsim rows whose runs alternate (``harness.best_of_interleaved``), so that their ratios
    compare the same stretches of time. ``variants``: {label: {"sampling", "momentum",
    "record_every"} (any subset)}; returns {label: (Timing, extra)}, extra with those keys."""
    p = w.problem()
    fns = {}
    for label, v in variants.items():
        plan = w.plan(size.seeds, size.steps, dtype, record_every=v.get("record_every"),
                      sampling=v.get("sampling", "iid"), momentum=v.get("momentum", 0.0),
                      step_scale=v.get("step_scale", 1.0))
        fns[label] = (lambda plan=plan: harness.kdsim_run(p, plan, dtype))
    ts = harness.best_of_interleaved(fns, repeats, budget * len(fns), min_time_s=MIN_SAMPLE_S)
    return {label: (t, {**_kdsim_extra(t), "sampling": variants[label].get("sampling", "iid"),
                        "momentum": variants[label].get("momentum", 0.0),
                        "record_every": variants[label].get("record_every")})
            for label, t in ts.items()}


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


_DRAWS = None


def _draw_loop():
    """The compiled draw loop of ``rng_cost`` (compiled once per process)."""
    global _DRAWS
    if _DRAWS is None:
        from numba import njit

        from kdsim.engines._kernels_ls import NO_EPOCH, SEED_BLOCK, _index1, _index1s
        from kdsim.rng import batch_into_nb

        @njit
        def draws(keys, steps, n, b, code, K):
            G = SEED_BLOCK
            idx = np.empty((G, b), dtype=np.int64)
            taken = np.zeros(n, dtype=np.bool_)
            perm = np.empty((G, n if code != 0 else 0), dtype=np.int64)
            acc = 0
            for s0 in range(0, keys.shape[0], G):
                gn = min(G, keys.shape[0] - s0)
                perm_epoch = np.full(G, -1, dtype=np.int64)          # batch_into_nb's cache: the epoch
                perm_start = np.full(G, NO_EPOCH, dtype=np.int64)    # _index1s's: the epoch's first step
                for t in range(steps):
                    for g in range(gn):
                        if b == 1 and code == 0:                           # as the affine kernel: inline
                            acc += _index1(keys[s0 + g], t, n)
                        elif b == 1:
                            k = t - perm_start[g]
                            acc += perm[g, k] if 0 <= k < n else _index1s(keys[s0 + g], t, n, code, perm,
                                                                            perm_start, g)
                        else:
                            nb = batch_into_nb(keys[s0 + g], t, n, b, code, K, perm, perm_epoch, g, idx[g], taken)
                            acc += idx[g, nb - 1]
            return acc

        _DRAWS = draws
    return _DRAWS


def rng_cost(batch, n, seeds=4096, steps=100, sampling="iid", K=None):
    """Seconds per stream-step of the minibatch draws of kdsim's kernels (one thread).

    The kernels hold a key per stream and derive each step's minibatch from it, the seeds of
    a block of ``SEED_BLOCK`` in turn at each step: for batch 1 as the affine kernel draws them
    (i.i.d.: one hash, ``_index1``; otherwise a load from the slot's cached permutation, rebuilt
    by ``_kernels_ls._index1s`` at each new epoch of n steps), and ``kdsim.rng.batch_into_nb``
    otherwise, as the layered kernel calls it (i.i.d.: Floyd's algorithm; otherwise a slice of
    the permutation, ``K`` steps per epoch; the least-squares kernels write the same draw out
    inline, so there it is an upper bound). This times that loop; under a
    permutation scheme ``steps`` should span several epochs so that the rebuilds are
    amortised as in a run.
    """
    from kdsim.rng import SAMPLING_CODES
    code = SAMPLING_CODES[sampling]
    K = K or -(-n // batch)
    draws = _draw_loop()
    keys = np.arange(1, seeds + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    draws(keys[:2], 2, n, batch, code, K)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        draws(keys, steps, n, batch, code, K)
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


def _streams(row, w):
    """Index streams stepped per step of a run: one per seed in the affine least-squares kernel
    (one (u, v) pair serves the λ grid), one per (λ, seed) trajectory otherwise."""
    return row["measured_seeds"] * (1 if row.get("kernel") == "ls_affine" else w.n_lams)


def sampling_summary(rows, groups, rng_schemes, threads):
    """The ratios of the alternating rows (each against its i.i.d. twin) and the draw loop's share."""
    by = {(r["workload"], r["dtype"], r["implementation"]): r for r in rows}
    pairs = []
    for name, dtype, base, others in groups:
        w = WORKLOADS[name]
        r0 = by[(name, dtype, base)]
        for label in others:
            r1 = by[(name, dtype, label)]
            per = threads * 1e9 / (_streams(r0, w) * r0["measured_steps"])
            pairs.append({
                "workload": name, "dtype": dtype, "implementation": label, "baseline": base,
                "records": "start/end" if KDSIM_STEPS in label or w.record_every is None
                else f"every {w.record_every}",
                "sampling": r1["sampling"], "momentum": r1["momentum"],
                "iid_traj_steps_per_s": r0["traj_steps_per_s"], "traj_steps_per_s": r1["traj_steps_per_s"],
                "time_ratio": r1["best_s"] / r0["best_s"], "kernel_ratio": r1["kernel_s"] / r0["kernel_s"],
                "iid_ns_per_stream_step": r0["best_s"] * per,
                "extra_ns_per_stream_step": (r1["best_s"] - r0["best_s"]) * per,
                "runs": (r0["runs"], r1["runs"]), "load1": (r0["load1"], r1["load1"]),
                "diverged": (r0["diverged"], r1["diverged"]),
            })
    draws = []
    for name, v in rng_schemes.items():
        w = WORKLOADS[name]
        cost = v["s_per_stream_step"]
        for dtype in w.dtypes:
            # the step the draws are part of: the steps-only i.i.d. row where there is one (W1, W2),
            # else the i.i.d. row; its kernel time per stream-step and thread
            ref = (by.get((name, dtype, f"{KDSIM_STEPS}, {ALTERNATING}"))
                   or by.get((name, dtype, f"{KDSIM}, {ALTERNATING}")))
            if ref is None:
                continue
            step_ns = ref["kernel_s"] * threads * 1e9 / (_streams(ref, w) * ref["measured_steps"])
            for sch, c in cost.items():
                if sch == "iid":
                    continue
                extra = (c - cost["iid"]) * 1e9
                draws.append({"workload": name, "dtype": dtype, "sampling": sch, "n": v["n"], "batch": v["batch"],
                              "K": v["K"], "iid_draw_ns": cost["iid"] * 1e9, "draw_ns": c * 1e9,
                              "extra_ns": extra, "step_ns": step_ns, "step_row": ref["implementation"],
                              "share_of_step": extra / step_ns})
    return {"pairs": pairs, "draws": draws, "threads": threads}


def sampling_markdown(sm):
    """The report's "Sampling schemes" section (``sampling_summary``)."""
    lines = ["Sampling schemes and momentum: each row against the i.i.d. run timed alternating with it "
             "(`harness.best_of_interleaved`; time ratio > 1: slower than i.i.d.; the extra time per "
             "step of one index stream, per thread: a stream is a seed in the affine least-squares kernel, "
             "which serves the λ grid with one draw, a (λ, seed) trajectory otherwise):", "",
             "| W | dtype | row | i.i.d. traj-steps/s | row traj-steps/s | time ratio | kernel ratio "
             "| i.i.d. ns per stream-step | extra ns per stream-step | runs (i.i.d., row) | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in sm["pairs"]:
        lines.append(f"| {p['workload']} | {p['dtype']} | {p['implementation']} | {fmt(p['iid_traj_steps_per_s'])} "
                     f"| {fmt(p['traj_steps_per_s'])} | {p['time_ratio']:.3f} | {p['kernel_ratio']:.3f} "
                     f"| {p['iid_ns_per_stream_step']:.1f} | {p['extra_ns_per_stream_step']:+.1f} "
                     f"| {p['runs'][0]}, {p['runs'][1]} | {p['load1'][0]:.2f}, {p['load1'][1]:.2f} |")
    div = [p for p in sm["pairs"] if any(p["diverged"])]
    if div:
        lines += ["", "Diverged trajectories (i.i.d., row): " + "; ".join(
            f"{p['workload']} {p['dtype']} {p['implementation']}: {p['diverged'][0]}, {p['diverged'][1]}" for p in div)
            + " (a row that stops early is not comparable)."]
    if sm["draws"]:
        lines += ["", "The draw loop alone (`run.rng_cost`: the kernels' index code for a block of seeds, one "
                  "thread, over at least two epochs, best of 3 × 3 alternating) against the kdsim step it is "
                  "part of (kernel time per stream-step and thread of the i.i.d. row named). Isolated, the draws "
                  "have no floating-point work to overlap with, so this bounds their share from above; the "
                  "alternating rows above are the measurement:", "",
                  "| W | dtype | scheme | n, b, steps/epoch | i.i.d. draw (ns) | scheme draw (ns) | extra (ns) "
                  "| kdsim step (ns) | extra / kdsim step | step row |", "|---|---|---|---|---|---|---|---|---|---|"]
        for d in sm["draws"]:
            lines.append(f"| {d['workload']} | {d['dtype']} | {d['sampling']} | {d['n']:,}, {d['batch']}, {d['K']:,} "
                         f"| {d['iid_draw_ns']:.2f} | {d['draw_ns']:.2f} | {d['extra_ns']:+.2f} | {d['step_ns']:.1f} "
                         f"| {100 * d['share_of_step']:.1f}% | {d['step_row']} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="every workload at a reduced size (< 2 minutes)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated subset of W1,W2,W3,W4,W5")
    ap.add_argument("--out", default=os.path.join(harness.REPO, "benchmarks", "results"),
                    help="directory for the CSV and JSON files")
    ap.add_argument("--repeats", type=int, default=None, help="runs per measurement, best kept "
                    "(default 3, quick 2)")
    ap.add_argument("--budget", type=float, default=None, help="stop repeating a measurement after this "
                    "many seconds of runs, once 2 runs are done (default 150, quick 20)")
    ap.add_argument("--gemm-n", type=int, default=None, help="matrix size of the peak GEMM (default 4096, "
                    "quick 2048)")
    ap.add_argument("--no-jax", action="store_true", help="skip the JAX baseline")
    ap.add_argument("--sampling", default="reshuffle", help="comma-separated sampling schemes of kdsim.simulate "
                    "timed beside i.i.d. on --sampling-workloads (reshuffle, shuffle_once; 'none' skips them; "
                    "default reshuffle)")
    ap.add_argument("--sampling-workloads", default=",".join(SAMPLING_WORKLOADS),
                    help="workloads that get the sampling rows (default W1,W3, the issue's)")
    ap.add_argument("--momentum", type=float, default=0.9, help="heavy-ball momentum of the extra W1 row, timed "
                    "beside i.i.d. (default 0.9; 0 skips the row)")
    ap.add_argument("--no-cold-compile", action="store_true", help="skip the cold numba compile "
                    "(always skipped with --quick)")
    args = ap.parse_args(argv)

    names = [s.strip().upper() for s in args.workloads.split(",") if s.strip()]
    bad = [s for s in names if s not in WORKLOADS]
    if bad:
        ap.error(f"unknown workloads {bad}; valid: {','.join(WORKLOADS)}")
    from kdsim.rng import SAMPLINGS
    schemes = [] if args.sampling.strip().lower() == "none" else \
        [x.strip().lower() for x in args.sampling.split(",") if x.strip()]
    bad = [x for x in schemes if x not in SAMPLINGS or x == "iid"]
    if bad:
        ap.error(f"unknown --sampling {bad}; valid: {','.join(x for x in SAMPLINGS if x != 'iid')} or none")
    samp_names = [x.strip().upper() for x in args.sampling_workloads.split(",") if x.strip()]
    bad = [x for x in samp_names if x not in WORKLOADS]
    if bad:
        ap.error(f"unknown --sampling-workloads {bad}; valid: {','.join(WORKLOADS)}")
    if not 0.0 <= args.momentum < 1.0:
        ap.error(f"--momentum must satisfy 0 <= momentum < 1; got {args.momentum}")
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
    rng_schemes = {}
    groups = []                # (workload, dtype, i.i.d. label, [other labels]) of the alternating rows
    for name in names:
        w = WORKLOADS[name]
        full = w.size(quick)
        p = w.problem()
        w.teacher()                                      # solve outside every timed region
        rng[name] = rng_cost(w.batch, p.n)
        with_schemes = name in samp_names and bool(schemes)
        # the cheap least-squares rows alternate at least 5 times each outside --quick, so that a
        # ratio is not the best of 3 runs taken in one slow stretch of the shared machine
        alt_repeats = repeats if quick or name not in ("W1", "W2") else max(repeats, 5)
        with_momentum = name in MOMENTUM_WORKLOADS and name in samp_names and args.momentum > 0
        if with_schemes:
            # the draws alone over two epochs (at least 2,000 steps), per scheme, alternating
            # with i.i.d. a few times so that both sample the same stretches of the machine
            K = w.steps_per_epoch()
            steps = max(2000, 2 * K)
            seeds = max(64, 4_000_000 // (steps * w.batch)) // 8 * 8
            if quick:
                seeds = max(8, seeds // 8) // 8 * 8
            cost = {sch: float("inf") for sch in ["iid", *schemes]}
            for _ in range(3):
                for sch in cost:
                    cost[sch] = min(cost[sch], rng_cost(w.batch, p.n, seeds, steps, sch, K))
            rng_schemes[name] = {"s_per_stream_step": cost, "seeds": seeds, "steps": steps, "K": K,
                                 "n": p.n, "batch": w.batch}
            log(f"{name}: draw loop alone, ns per stream-step: "
                f"{ {k: round(v * 1e9, 2) for k, v in cost.items()} }")
        for dtype in w.dtypes:
            meas = []
            log(f"{name} {dtype}: {KDSIM} at {full}")
            meas.append((KDSIM, full, *measure_kdsim(w, full, dtype, repeats, budget)))
            if name in BLAS1_WORKLOADS:
                log(f"{name} {dtype}: {KDSIM_BLAS1} at {full}")
                meas.append((KDSIM_BLAS1, full, *measure_kdsim(w, full, dtype, repeats, budget, blas_threads=1)))
            if name in ("W1", "W2"):
                log(f"{name} {dtype}: {KDSIM_STEPS} at {full}")
                meas.append((KDSIM_STEPS, full, *measure_kdsim(w, full, dtype, repeats, budget,
                                                              record_every=full.steps)))
            if with_schemes or with_momentum:
                variants = {f"{KDSIM}, {ALTERNATING}": {}}
                variants.update({f"{KDSIM}, {sch}": {"sampling": sch} for sch in schemes if with_schemes})
                if with_momentum:
                    # step γ(1 − μ): heavy ball's effective step γ/(1 − μ) is then the workload's γ
                    # (at γ itself W1 diverges with μ = 0.9)
                    variants[f"{KDSIM}, momentum {args.momentum:g}"] = {"momentum": args.momentum,
                                                                         "step_scale": 1.0 - args.momentum}
                log(f"{name} {dtype}: {', '.join(variants)} at {full}, alternating")
                res = measure_kdsim_alternating(w, full, dtype, alt_repeats, budget, variants)
                meas += [(label, full, *res[label]) for label in variants]
                groups.append((name, dtype, f"{KDSIM}, {ALTERNATING}", list(variants)[1:]))
                if with_schemes and name in ("W1", "W2"):
                    variants = {f"{KDSIM_STEPS}, {ALTERNATING}": {"record_every": full.steps}}
                    variants.update({f"{KDSIM_STEPS}, {sch}": {"record_every": full.steps, "sampling": sch}
                                     for sch in schemes})
                    log(f"{name} {dtype}: {', '.join(variants)} at {full}, alternating")
                    res = measure_kdsim_alternating(w, full, dtype, alt_repeats, budget, variants)
                    meas += [(label, full, *res[label]) for label in variants]
                    groups.append((name, dtype, f"{KDSIM_STEPS}, {ALTERNATING}", list(variants)[1:]))
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
                every = size.steps if impl == KDSIM_STEPS else extra.get("record_every")
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
                    "load1": t.load, "sampling": extra.get("sampling", "iid"),
                    "momentum": extra.get("momentum", 0.0), "note": extra.get("note", ""),
                    "kernel": extra.get("kernel"),
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
        wr = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
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
    sampling = sampling_summary(rows, groups, rng_schemes, info["numba_threads"] or 1)
    if sampling["pairs"]:
        lines += ["", sampling_markdown(sampling)]
    lines += ["", f"Compile times (s): numba warm start in this process {json.dumps(_round(compile_info))}; "
              "JAX per workload in the compile_s column of the CSV.",
              f"Total benchmark time: {time.perf_counter() - t_start:.0f} s; load at the end: {harness.load()}."]
    report = "\n".join(lines)
    print(report)
    with open(os.path.join(args.out, stem + ".json"), "w") as fh:
        json.dump({"machine": info, "peak_start": peak_start, "peak_end": peak_end, "peak_autodetected": peak_auto,
                   "peak": peak,
                   "copy_bandwidth": bw, "compile": compile_info, "flops": flops, "limits": limits,
                   "rng_s_per_seed_step": rng, "sampling": sampling, "rows": rows, "quick": quick}, fh, indent=1,
                  default=_json)
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
