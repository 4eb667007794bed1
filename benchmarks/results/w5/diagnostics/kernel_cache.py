import sys, time, importlib
import os; sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), *[".."] * 4))); sys.path.insert(0, "/tmp/proto")
import numpy as np
from benchmarks.workloads import WORKLOADS
from kdsim.engines import numba_cpu
from kdsim.estimators import ESTIMATORS
w = WORKLOADS["W5"]; p = w.problem(); th = w.teacher()
seeds = 2
plan = w.plan(seeds, 2000)
spec = p.kernel_spec(th, plan.estimator)
r = numba_cpu.prepare(spec, plan, "float64")
keys = np.ascontiguousarray(r.keys_of(np.arange(seeds)).ravel())
a, c = r.traj_coefs(seeds)
T = len(keys)
def args():
    saved = np.full((T, r.R, r.dim), np.nan)
    return r._args(keys, a, c, saved, np.full(T, -1, dtype=np.int64), np.empty((T, r.dim)))
mods = sys.argv[1:] or ["kl0"]
res = {}
for m in mods:
    K = importlib.import_module(m)
    K.layered_traj(0, 1, *args())
for rep in range(5):
    for m in mods:
        K = importlib.import_module(m)
        ar = args()
        t0 = time.perf_counter(); K.layered_traj(0, T, *ar); dt = time.perf_counter() - t0
        res[m] = min(res.get(m, 9e9), dt)
        if rep == 0:
            print(m, "x_final checksum", float(np.sum(ar[-1])))
for m, v in res.items():
    print(f"{m}: {v / (T * 2000) * 1e9:,.0f} ns per trajectory-step")
