"""W5 on one thread: kdsim's whole kernel, its three minibatch functions alone, and the plain kernel."""
import sys, time
sys.path.insert(0, __import__("os").path.abspath(__import__("os").path.join(__import__("os").path.dirname(__file__), *[".."] * 4)))
import numpy as np
import numba
from numba import njit
from benchmarks import harness, baseline_numba
from benchmarks.workloads import WORKLOADS
from kdsim.engines import numba_cpu
from kdsim.engines._kernels_layered import _forward_batch, _residuals, _backward_batch

w = WORKLOADS["W5"]; p = w.problem(); th = w.teacher()
numba.set_num_threads(1); numba_cpu.set_threads(1)
seeds, steps = 4, 2000
plan = w.plan(seeds, steps)
T = 3 * seeds * steps
baseline_numba.run(p, plan.seed_range(0, 1)); harness.kdsim_run(p, w.plan(2, 20), "float64")
best = {}
for rep in range(3 if len(sys.argv) < 3 else 0):
    s, e = harness.kdsim_run(p, plan, "float64")
    best["kdsim kernel"] = min(best.get("kdsim kernel", 9e9), e["run_s"])
    out = baseline_numba.run(p, plan)
    best["plain run"] = min(best.get("plain run", 9e9), out["timing"]["run_s"])
for k, v in best.items():
    print(f"{k}: {v / T * 1e9:,.0f} ns per trajectory-step (1 thread)")

x = p.default_x0().copy()
dims = np.array([64, 32, 10], dtype=np.int64); offs = np.array([0, 2048, 2368], dtype=np.int64)
boffs = np.array([2368, 2400, 2410], dtype=np.int64)
hoff = np.array([0, 64, 96, 106, 0], dtype=np.int64)
A = np.ascontiguousarray(p.A); Y = np.eye(10)[p.Y]
H = np.empty((10, 106)); D = np.empty((10, 32)); Dn = np.empty((10, 32)); g = np.zeros(p.dim)
idx = np.random.default_rng(0).choice(p.n, 10, replace=False).astype(np.int64)

@njit
def fwd(N, x, dims, offs, A, idx, H, hoff, boffs, act, code):
    for _ in range(N):
        _forward_batch(x, dims, offs, A, idx, 0, 10, H, hoff, 0.0, act, boffs)

@njit
def res(N, H, hoff, Y, idx, D, act, code):
    for _ in range(N):
        _residuals(code, H, hoff[2], 10, Y, idx, 0, 10, D, 0.0)

@njit
def bwd(N, x, dims, offs, A, H, hoff, Y, idx, D, Dn, g, boffs, act, code):
    for _ in range(N):
        _residuals(code, H, hoff[2], 10, Y, idx, 0, 10, D, 0.0)
        _backward_batch(x, dims, offs, A, idx, 0, H, hoff, D, Dn, 10, g, 1.0, 0.0, act, boffs)

N = 20000
act, code = int(sys.argv[1]) if len(sys.argv) > 1 else 1, 1
for name, f, args in [("forward (_forward_batch)", fwd, (x, dims, offs, A, idx, H, hoff, boffs, act, code)),
                      ("residuals (_residuals)", res, (H, hoff, Y, idx, D, act, code)),
                      ("residuals + backward", bwd, (x, dims, offs, A, H, hoff, Y, idx, D, Dn, g, boffs, act, code))]:
    f(2, *args)
    b = 9e9
    for _ in range(5):
        t0 = time.perf_counter(); f(N, *args); b = min(b, time.perf_counter() - t0)
    print(f"{name}: {b / N * 1e9:,.0f} ns per call (10 samples)")
print("load", harness.load())
