"""Benchmarks of kdsim's engines against plain numpy, plain numba and JAX (issue "Fast engines").

``python benchmarks/run.py [--quick] [--workloads W1,W3] [--out benchmarks/results]`` runs
them; ``benchmarks/RESULTS.md`` holds one measured table, the targets and the analysis. Modules:

* ``workloads``      W1–W4: problem, teacher, step, sizes, and the flop count of their math;
* ``harness``        machine description, load, GEMM peak, copy bandwidth, best-of-n timing;
* ``common``         a (problem, plan) as plain arrays for the baselines; the flop convention;
* ``baseline_numpy`` plain numpy vectorised across trajectories (same index stream as kdsim);
* ``baseline_numba`` a plain one-trajectory-per-prange-iteration numba kernel;
* ``baseline_jax``   jit(vmap(lax.scan)) with the indices precomputed by ``kdsim.rng``.
"""
