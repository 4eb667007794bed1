"""The memory model holds: runs stay within their budget, and runs that cannot fit fail at once.

Peak memory is measured as the growth of the resident set (ru_maxrss) of a fresh Python
process over its size after a small warm-up run, so numba's compilation and the imports are
not counted. The bound 1.2 × budget is the contract of the memory model (kdsim/memory.py).
"""
import json
import subprocess
import sys
import time

import numpy as np
import pytest

import kdsim
from kdsim.problems import synthetic

SCRIPT = r"""
import json, resource, sys
import kdsim
from kdsim.problems import synthetic
backend, family, seeds, budget, reduce = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
if family == "ls":
    p = synthetic.least_squares(n=200, d=10, cond=10.0, seed=0)
else:
    p = synthetic.softmax(n=200, d=5, n_classes=3, l2=0.1, seed=0)
th = kdsim.teachers.at_distance(p, 0.5, seed=1).theta
kdsim.simulate(p, th, [0.0, 0.5], 0.05, 3, 4, backend=backend, reduce=reduce)      # compile, warm up
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
r = kdsim.simulate(p, th, [0.0, 0.5], 0.05, 10, seeds, record_every=1, reduce=reduce, backend=backend,
                   memory_budget=budget)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"growth": peak - base, "chunks": r.timing["chunks"]}))
"""


def _growth(backend, family, seeds, budget, reduce):
    out = subprocess.run([sys.executable, "-c", SCRIPT, backend, family, str(seeds), str(budget), str(int(reduce))],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("backend,family,seeds,budget,reduce", [
    ("numba", "ls", 600_000, 300_000_000, True),      # affine kernel, several chunks
    ("numba", "ls", 200_000, 200_000_000, False),     # full records, several chunks
    ("numpy", "ls", 60_000, 60_000_000, True),        # the reference engine streams too
    ("numba", "softmax", 20_000, 120_000_000, True),  # saved iterates and their records in blocks
])
def test_peak_memory_within_budget(backend, family, seeds, budget, reduce):
    got = _growth(backend, family, seeds, budget, reduce)
    assert got["chunks"] >= 2                          # the budget, not the seed count, sized the chunks
    assert got["growth"] <= 1.2 * budget, (got["growth"] / budget)


@pytest.fixture(scope="module")
def ls():
    p = synthetic.least_squares(n=200, d=10, cond=10.0, seed=0)
    return p, kdsim.teachers.at_distance(p, 0.5, seed=1).theta


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_a_billion_seeds_fail_fast_with_the_plan(ls, backend):
    p, th = ls
    t0 = time.perf_counter()
    with pytest.raises(MemoryError, match=r"1000000000 seeds needs \d+ bytes.*memory_budget is 4000000000"):
        kdsim.simulate(p, th, [0.0, 0.5], 0.05, 10, 10**9, reduce=True, backend=backend, memory_budget=4 * 10**9)
    assert time.perf_counter() - t0 < 1.0


def test_a_record_axis_that_cannot_fit_fails_before_it_is_allocated(ls):
    p, th = ls
    t0 = time.perf_counter()
    with pytest.raises(MemoryError, match="record_every"):
        kdsim.simulate(p, th, [0.5], 0.05, 3 * 10**9, 1, record_every=1)
    assert time.perf_counter() - t0 < 1.0


def test_reduced_equals_full_moments_on_every_backend(ls):
    p, th = ls
    for backend, budget in (("numpy", 30_000), ("numba", 60_000)):
        full = kdsim.simulate(p, th, [0.0, 0.5], 0.05, 40, 30, record_every=10, backend=backend)
        red = kdsim.simulate(p, th, [0.0, 0.5], 0.05, 40, 30, record_every=10, backend=backend, reduce=True,
                             memory_budget=budget)                   # several chunks
        assert red.timing["chunks"] > 1
        np.testing.assert_allclose(red.mean("dist2_opt"), full.mean("dist2_opt"), rtol=1e-12)
        np.testing.assert_allclose(red.var("subopt"), np.nanvar(full.subopt, axis=1, ddof=1), rtol=1e-9, atol=1e-20)
