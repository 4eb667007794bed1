"""Profile kdsim's numba kernel on one workload with Linux perf, JIT-compiled functions named.

    NUMBA_CACHE_DIR=$(mktemp -d) NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        perf record -e cpu-clock -F 4000 -o perf.data python benchmarks/perf_profile.py W3 --runs 30
    python benchmarks/perf_profile.py --report perf.data

The first command runs the workload at 64 seeds × 2,000 steps ``--runs`` times on the numba engine,
after one small run that compiles or loads the kernels, and prints ns per trajectory-step. At the end it
writes ``/tmp/perf-<pid>.map``, the file perf reads to name code that is not in an ELF file: the
address and size of every function in every numba library loaded in the process, read with ``nm`` from
the library's object code. numba keeps that object code only for what it compiles in the process, not
for what it loads from its on-disk cache, hence the fresh ``NUMBA_CACHE_DIR`` (a minute of compilation
for the layered kernel; the samples taken while compiling are Python's and drop out of the report).
The second command shares the samples that fall in JIT-compiled functions among them (their share of
the kernel's time, the rest of the process left out).
"""
from __future__ import annotations

import argparse
import gc
import os
import re
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):                      # run as a script: make the repo importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(workload, runs, seeds=64, steps=2000):
    from benchmarks.workloads import WORKLOADS
    from kdsim.engines import driver, numba_cpu
    w = WORKLOADS[workload]
    p = w.problem()
    driver.run(p, w.plan(seeds, 200), numba_cpu)          # compile or load, outside the measurement
    plan = w.plan(seeds, steps)
    t0 = time.perf_counter()
    for _ in range(runs):
        driver.run(p, plan, numba_cpu)
    per = (time.perf_counter() - t0) / runs / (seeds * len(w.lams) * steps)
    print(f"{workload}: {per * 1e9:.0f} ns per trajectory-step ({runs} runs of {seeds} seeds × {steps} steps)")


def write_perf_map(path):
    """Every function of every numba library with object code in this process, as perf's JIT map."""
    from numba.core.registry import CPUDispatcher
    lines = []
    for obj in gc.get_objects():
        if not isinstance(obj, CPUDispatcher):
            continue
        for cres in obj.overloads.values():
            lib = cres.library
            try:
                data = lib._get_compiled_object()
            except RuntimeError:                            # loaded from the cache: no object code kept
                continue
            with tempfile.NamedTemporaryFile(suffix=".o") as f:
                f.write(data)
                f.flush()
                out = subprocess.run(["nm", "-S", "--defined-only", f.name], capture_output=True, text=True).stdout
            syms = {}
            for ln in out.splitlines():
                parts = ln.split()
                if len(parts) == 4 and parts[2] in ("t", "T"):
                    syms[parts[3]] = (int(parts[0], 16), int(parts[1], 16))
            main = cres.fndesc.llvm_func_name
            if main not in syms:
                continue
            base = lib.get_pointer_to_function(main) - syms[main][0]
            lines += [f"{base + off:x} {size:x} {name}" for name, (off, size) in syms.items()]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return len(lines)


def short_name(symbol):
    """``_softmax_layer_residuals`` from numba's mangled ``_ZN5kdsim7engines16_kernels_layered24_softmax…``."""
    if not symbol.startswith("_ZN"):
        return symbol
    parts, rest = [], symbol[3:]
    while True:
        m = re.match(r"(\d+)", rest)
        if not m:
            break
        k = int(m.group(1))
        rest = rest[len(m.group(1)):]
        parts.append(rest[:k])
        rest = rest[k:]
    return ".".join(parts) or symbol


def report(data):
    out = subprocess.run(["perf", "report", "-i", data, "--sort", "sym", "--stdio"], capture_output=True,
                         text=True).stdout
    rows = []
    for ln in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+\[\.\]\s+(_ZN\S+)", ln)
        if m:
            rows.append((float(m.group(1)), short_name(m.group(2))))
    total = sum(p for p, _ in rows)
    if not rows:
        print("no samples in JIT-compiled functions: was the perf map written (a fresh NUMBA_CACHE_DIR)?")
        return
    print(f"JIT-compiled functions: {total:.1f}% of the samples; their shares:")
    shares = {}
    for p, name in rows:
        shares[name] = shares.get(name, 0.0) + p
    for name, p in sorted(shares.items(), key=lambda kv: -kv[1]):
        if p / total >= 0.001:
            print(f"{100 * p / total:6.1f}%  {name}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workload", nargs="?", default="W3")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--report", metavar="PERF_DATA", help="summarise a perf.data recorded with this script")
    args = ap.parse_args(argv)
    if args.report:
        report(args.report)
        return
    run(args.workload, args.runs)
    n = write_perf_map(f"/tmp/perf-{os.getpid()}.map")
    print(f"perf map: {n} functions in /tmp/perf-{os.getpid()}.map")


if __name__ == "__main__":
    main()
