"""W5 at 256 seeds × 3 λ × 2,000 steps: kdsim (default BLAS threads, and 1), plain numba and JAX, alternating."""
import sys, time
sys.path.insert(0, __import__("os").path.abspath(__import__("os").path.join(__import__("os").path.dirname(__file__), *[".."] * 4)))
import numpy as np
from benchmarks import harness, baseline_numba, baseline_jax
from benchmarks.workloads import WORKLOADS
w = WORKLOADS["W5"]
p = w.problem(); w.teacher()
seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 256
plan = w.plan(seeds, 2000)
baseline_numba.run(p, plan.seed_range(0, 1))
harness.kdsim_run(p, w.plan(2, 20), "float64")
compiled = baseline_jax.build(p, plan, "float64")
fns = {
    "kdsim numba": lambda: (lambda s, e: (s, {"kernel": e["run_s"], "records": e.get("records_s")}))(
        *harness.kdsim_run(p, plan, "float64")),
    "kdsim numba, 1 BLAS thread": lambda: (lambda s, e: (s, {"kernel": e["run_s"], "records": e.get("records_s")}))(
        *harness.kdsim_run(p, plan, "float64", 1)),
    "plain numba": lambda: (baseline_numba.run(p, plan)["timing"]["run_s"], {}),
    "JAX": lambda: (compiled.run()["timing"]["run_s"], {}),
}
print("load", harness.load(), flush=True)
ts = harness.best_of_interleaved(fns, repeats=3)
T = 3 * seeds * 2000
for k, t in ts.items():
    print(f"{k}: times {[round(x, 2) for x in t.times]}, best {t.best_s:.2f} s, {T / t.best_s:,.0f} traj-steps/s, "
          f"{ {a: round(b, 2) for a, b in t.extra.items() if b is not None} }, load {t.load}")
b = {k: t.best_s for k, t in ts.items()}
print("kdsim/JAX", round(b["JAX"] / b["kdsim numba"], 3), "kdsim 1 BLAS/JAX", round(b["JAX"] / b["kdsim numba, 1 BLAS thread"], 3),
      "kdsim/plain", round(b["plain numba"] / b["kdsim numba"], 3), "kdsim 1 BLAS/plain", round(b["plain numba"] / b["kdsim numba, 1 BLAS thread"], 3))
print("load", harness.load())
